//! The REST client against the sandbox: tokens by client credentials through the auth
//! crate, the instance allow-list, version choice, lazily paged queries, CRUD, and the
//! refresh-and-retry-once on an expired session.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;

use connector_salesforce::client::{ApiVersion, SalesforceClient};
use connector_salesforce::instance::InstanceAllowList;
use connector_salesforce::soql::{Soql, field};
use futures::{StreamExt, TryStreamExt};
use moodbridge_auth::oauth::{ClientAuth, OAuthClient, Provider};
use moodbridge_auth::token_manager::TokenManager;
use moodbridge_core::ErrorKind;
use salesforce_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use secrecy::SecretString;
use serde_json::{Value, json};

fn tokens_for(sb: &RunningSandbox) -> TokenManager {
    support::tokens(sb)
}

async fn connect(
    sb: &RunningSandbox,
    version: ApiVersion,
) -> moodbridge_core::Result<SalesforceClient> {
    SalesforceClient::builder(
        "salesforce:sandbox",
        tokens_for(sb),
        "sandbox",
        "integration",
    )
    .allow_instances(InstanceAllowList::default().with_loopback())
    .api_version(version)
    .connect()
    .await
}

async fn sandbox(page_size: usize) -> RunningSandbox {
    Sandbox::new(SandboxConfig {
        page_size,
        ..SandboxConfig::default()
    })
    .seed(60, 2, 11)
    .start()
    .await
    .unwrap()
}

#[tokio::test]
async fn it_picks_the_newest_allowed_version_and_says_when_a_pinned_one_is_gone() {
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::Newest { max: None })
        .await
        .unwrap();
    assert_eq!(sf.api_version(), "62.0");
    let sf = connect(&sb, ApiVersion::newest_up_to("60.0"))
        .await
        .unwrap();
    assert_eq!(sf.api_version(), "60.0");
    let err = connect(&sb, ApiVersion::Pinned("52.0".into()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("no longer offers"), "{err}");
    sb.stop().await;
}

#[tokio::test]
async fn a_token_for_an_instance_off_the_allow_list_is_never_used() {
    let sb = sandbox(2_000).await;
    // The default allow-list: Salesforce's https domains only; the sandbox is http://127.0.0.1.
    let err = SalesforceClient::builder(
        "salesforce:sandbox",
        tokens_for(&sb),
        "sandbox",
        "integration",
    )
    .connect()
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string()
            .contains("refusing to send a Salesforce token"),
        "{err}"
    );
    sb.stop().await;
}

#[tokio::test]
async fn a_query_streams_every_page_lazily() {
    let sb = sandbox(7).await;
    let sf = connect(&sb, ApiVersion::Newest { max: None })
        .await
        .unwrap();
    let q = Soql::select(["Id", "Name", "Industry"])
        .from("Account")
        .build()
        .unwrap();
    let mut stream = Box::pin(sf.query(&q));
    // Taking three records fetches one page: the stream is lazy.
    let first: Vec<Value> = stream.by_ref().take(3).try_collect().await.unwrap();
    assert_eq!(first.len(), 3);
    let used_after_one_page = sf.api_usage().unwrap().0;
    let rest: Vec<Value> = stream.try_collect().await.unwrap();
    assert_eq!(first.len() + rest.len(), 60);
    let (used, max) = sf.api_usage().unwrap();
    assert_eq!(
        used - used_after_one_page,
        8,
        "60 records in pages of 7: 9 pages, 8 after the first"
    );
    assert_eq!(max, 100_000);

    #[derive(serde::Deserialize)]
    #[allow(dead_code, reason = "read by the deserializer")]
    struct Account {
        #[serde(rename = "Id")]
        id: String,
        #[serde(rename = "Name")]
        name: String,
    }
    let typed: Vec<Account> = sf.query_as(&q).try_collect().await.unwrap();
    assert_eq!(typed.len(), 60);
    sb.stop().await;
}

#[tokio::test]
async fn records_are_created_read_updated_upserted_and_deleted() {
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::Newest { max: None })
        .await
        .unwrap();
    let id = sf
        .create("Case", &json!({"Subject": "Review NDA", "Status": "New"}))
        .await
        .unwrap();
    let case = sf
        .retrieve("Case", &id, &["Subject", "Status"])
        .await
        .unwrap();
    assert_eq!(case["Subject"], "Review NDA");
    sf.update("Case", &id, &json!({"Status": "Working"}))
        .await
        .unwrap();
    assert_eq!(
        sf.retrieve("Case", &id, &[]).await.unwrap()["Status"],
        "Working"
    );

    let (ext_id, created) = sf
        .upsert(
            "Account",
            "External_Id__c",
            "A/B 1",
            &json!({"Name": "Slash & Co"}),
        )
        .await
        .unwrap();
    assert!(created);
    let (again, created) = sf
        .upsert(
            "Account",
            "External_Id__c",
            "A/B 1",
            &json!({"Name": "Slash and Co"}),
        )
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(ext_id, again);
    let by_ext = sf
        .retrieve_by_external_id("Account", "External_Id__c", "A/B 1")
        .await
        .unwrap();
    assert_eq!(by_ext["Name"], "Slash and Co");

    sf.delete("Case", &id).await.unwrap();
    let err = sf.retrieve("Case", &id, &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let q = Soql::select(["Id", "IsDeleted"])
        .from("Case")
        .filter(field("Id").eq(id.as_str()))
        .build()
        .unwrap();
    let deleted: Vec<Value> = sf.query_all(&q).try_collect().await.unwrap();
    assert_eq!(deleted[0]["IsDeleted"], true);

    // Salesforce's errors come back mapped, naming the fields.
    let err = sf
        .create("Contact", &json!({"FirstName": "Ada"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        err.context_value("error_code"),
        Some("REQUIRED_FIELD_MISSING")
    );
    assert_eq!(err.context_value("fields"), Some("LastName"));
    // Bad input never reaches the wire.
    assert_eq!(
        sf.retrieve("Case", "../limits", &[])
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    sb.stop().await;
}

#[tokio::test]
async fn an_expired_session_is_refreshed_and_the_call_retried_once() {
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::Newest { max: None })
        .await
        .unwrap();
    assert!(sf.limits().await.is_ok());
    sb.expire_tokens(); // Salesforce answers INVALID_SESSION_ID from now on
    let limits = sf.limits().await.unwrap();
    assert!(
        limits["DailyApiRequests"]["Max"].is_number(),
        "the call went through with a new token"
    );
    sb.stop().await;
}

#[tokio::test]
async fn describe_is_cached_and_becomes_the_core_catalog() {
    use moodbridge_core::{FieldType, PlatformIntegration, SyncMode};
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::Newest { max: None })
        .await
        .unwrap();
    let global = sf.describe_global().await.unwrap();
    let names: Vec<&str> = global["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Account", "Case", "Contact", "PushTopic"]);

    let first = sf.describe("Contact").await.unwrap();
    let before = sf.api_usage().unwrap().0;
    let second = sf.describe("Contact").await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &second),
        "a 304 reuses the cached describe"
    );
    assert_eq!(
        sf.api_usage().unwrap().0,
        before + 1,
        "still one (conditional) request"
    );

    let catalog = sf.catalog(&["Account", "Contact"]).await.unwrap();
    let contact = catalog.stream("Contact").unwrap();
    assert_eq!(contact.primary_key, ["Id"]);
    assert_eq!(contact.cursor_field.as_deref(), Some("SystemModstamp"));
    assert!(contact.supports(SyncMode::Incremental));
    assert_eq!(
        contact.field_named("AccountId").unwrap().field_type,
        FieldType::Reference {
            to: vec!["Account".into()]
        }
    );
    assert!(!contact.field_named("LastName").unwrap().nullable);
    assert_eq!(
        catalog
            .stream("Account")
            .unwrap()
            .field_named("AnnualRevenue")
            .unwrap()
            .field_type,
        FieldType::Decimal { scale: 2 }
    );

    assert_eq!(sf.kind(), "salesforce");
    let health = sf.health_check().await;
    assert_eq!(
        health.status,
        moodbridge_core::HealthStatus::Up,
        "{}",
        health.detail
    );
    assert!(
        health.detail.contains("daily API requests left"),
        "{}",
        health.detail
    );
    sb.stop().await;
}

/// A client whose policy retries fast and often (for fault-injection tests).
async fn connect_patiently(sb: &RunningSandbox) -> SalesforceClient {
    SalesforceClient::builder(
        "salesforce:sandbox",
        tokens_for(sb),
        "sandbox",
        "integration",
    )
    .allow_instances(InstanceAllowList::default().with_loopback())
    .policy(patient_policy())
    .connect()
    .await
    .unwrap()
}

fn patient_policy() -> moodbridge_core::Policy {
    moodbridge_core::Policy::builder("salesforce:sandbox")
        .retry(moodbridge_core::RetryConfig {
            max_attempts: 12,
            initial_backoff: std::time::Duration::from_millis(1),
            max_backoff: std::time::Duration::from_millis(5),
            max_elapsed: std::time::Duration::from_secs(30),
            budget: None,
        })
        .build()
}

#[tokio::test]
async fn unavailability_rate_limits_and_dropped_connections_are_retried_to_the_exact_result() {
    use salesforce_sandbox::Faults;
    let sb = sandbox(5).await;
    let sf = connect_patiently(&sb).await;
    sb.set_faults(Faults {
        error_rate: 0.3,
        drop_rate: 0.1,
        latency: std::time::Duration::from_millis(1),
        seed: 5,
        ..Faults::default()
    });
    let q = Soql::select(["Id"]).from("Account").build().unwrap();
    let ids: Vec<Value> = sf.query(&q).try_collect().await.unwrap();
    assert_eq!(ids.len(), 60, "every page arrived despite the faults");
    let mut unique: Vec<&str> = ids.iter().map(|r| r["Id"].as_str().unwrap()).collect();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 60, "no record twice");
    assert!(
        sb.api_calls() > 12,
        "12 pages took {} calls: faults were injected and retried",
        sb.api_calls()
    );
    sb.stop().await;
}

#[tokio::test]
async fn the_daily_request_limit_is_reported_not_hammered_and_a_session_ended_midway_is_renewed() {
    use salesforce_sandbox::Faults;
    let sb = sandbox(2_000).await;
    let sf = connect_patiently(&sb).await;
    sb.set_faults(Faults {
        invalid_session_after: Some(2),
        request_limit_after: Some(4),
        ..Faults::default()
    });
    sf.limits().await.unwrap(); // call 1
    // Call 2 ends every session: it is answered INVALID_SESSION_ID, the token manager
    // fetches a new token, and the call is retried once (call 3).
    sf.limits().await.unwrap();
    assert_eq!(sb.api_calls(), 3);
    sf.limits().await.unwrap(); // call 4, the last one the allowance covers
    let err = sf.limits().await.unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }), "{err}");
    assert!(!err.is_temporary(), "the daily limit is not retried");
    assert_eq!(
        sb.api_calls(),
        5,
        "exactly one attempt at the spent allowance"
    );
    sb.stop().await;
}

#[tokio::test]
async fn collections_chunk_at_200_and_report_every_record() {
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::Newest { max: None })
        .await
        .unwrap();
    // 450 records: three requests (200, 200, 50); one invalid record fails alone.
    let records: Vec<Value> = (0..450)
        .map(|i| {
            if i == 321 {
                json!({"FirstName": "no last name"})
            } else {
                json!({"LastName": format!("Bulk {i}"), "External_Id__c": format!("C-{i}")})
            }
        })
        .collect();
    let before = sf.api_usage().map_or(0, |u| u.0);
    let created = sf.create_many("Contact", &records, false).await.unwrap();
    assert_eq!(
        sf.api_usage().unwrap().0 - before,
        3,
        "chunked at the platform's 200"
    );
    assert_eq!(created.len(), 450);
    assert_eq!(created.iter().filter(|r| r.success).count(), 449);
    assert_eq!(created[321].errors[0].status_code, "REQUIRED_FIELD_MISSING");
    assert_eq!(created[321].errors[0].fields, ["LastName"]);

    // All or none: one bad record rolls its request back.
    let batch = vec![
        json!({"LastName": "Fine"}),
        json!({"LastName": "x".repeat(300)}),
    ];
    let rolled = sf.create_many("Contact", &batch, true).await.unwrap();
    assert!(rolled.iter().all(|r| !r.success));
    assert_eq!(
        rolled[0].errors[0].status_code,
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    let q = Soql::select(["Id"])
        .from("Contact")
        .filter(field("LastName").eq("Fine"))
        .build()
        .unwrap();
    assert_eq!(
        sf.query(&q).try_collect::<Vec<_>>().await.unwrap().len(),
        0,
        "nothing of it was kept"
    );

    // Update, upsert, retrieve, delete many.
    let ids: Vec<String> = created
        .iter()
        .filter_map(|r| r.id.clone())
        .take(3)
        .collect();
    let updates: Vec<Value> = ids
        .iter()
        .map(|id| json!({"Id": id, "Title": "Partner"}))
        .collect();
    assert!(
        sf.update_many("Contact", &updates, true)
            .await
            .unwrap()
            .iter()
            .all(|r| r.success)
    );
    let upserts = vec![
        json!({"External_Id__c": "C-0", "Title": "Of Counsel"}),
        json!({"External_Id__c": "C-new", "LastName": "New"}),
    ];
    let up = sf
        .upsert_many("Contact", "External_Id__c", &upserts, false)
        .await
        .unwrap();
    assert_eq!((up[0].created, up[1].created), (Some(false), Some(true)));
    let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut wanted = id_refs.clone();
    wanted.push("003000000000000AAA");
    let got = sf
        .retrieve_many("Contact", &wanted, &["Title"])
        .await
        .unwrap();
    assert_eq!(got[1].as_ref().unwrap()["Title"], "Partner");
    assert!(got[3].is_none(), "a missing id is null, not an error");
    let deleted = sf.delete_many(&id_refs, false).await.unwrap();
    assert!(deleted.iter().all(|r| r.success));
    sb.stop().await;
}

#[tokio::test]
async fn composite_references_batch_and_tree() {
    use connector_salesforce::client::Subrequest;
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::Newest { max: None })
        .await
        .unwrap();

    // Composite: an account, a contact referring to it, a read of it.
    let answers = sf
        .composite(
            &[
                Subrequest::post("acct", "/sobjects/Account", json!({"Name": "Composite Co"})),
                Subrequest::post(
                    "ct",
                    "/sobjects/Contact",
                    json!({"LastName": "Ref", "AccountId": "@{acct.id}"}),
                ),
                Subrequest::get("read", "/sobjects/Contact/@{ct.id}?fields=AccountId"),
            ],
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        answers.iter().map(|a| a.status).collect::<Vec<_>>(),
        [201, 201, 200]
    );
    assert_eq!(answers[2].body["AccountId"], answers[0].body["id"]);

    // All or none: the bad second subrequest rolls the first back.
    let answers = sf
        .composite(
            &[
                Subrequest::post(
                    "ok",
                    "/sobjects/Account",
                    json!({"Name": "Rolled Back Inc"}),
                ),
                Subrequest::post(
                    "bad",
                    "/sobjects/Contact",
                    json!({"FirstName": "no last name"}),
                ),
            ],
            true,
        )
        .await
        .unwrap();
    assert_eq!(answers[1].body[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(answers[0].body[0]["errorCode"], "PROCESSING_HALTED");
    let q = Soql::select(["Id"])
        .from("Account")
        .filter(field("Name").eq("Rolled Back Inc"))
        .build()
        .unwrap();
    assert!(
        sf.query(&q)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .is_empty()
    );
    let too_many: Vec<Subrequest> = (0..26)
        .map(|i| Subrequest::get(&format!("r{i}"), "/limits"))
        .collect();
    assert_eq!(
        sf.composite(&too_many, false).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    // Batch: independent results; one failure does not stop the others.
    let results = sf
        .batch(
            &[
                Subrequest::get("", "/limits"),
                Subrequest::get("", "/sobjects/Account/001000000000000AAA"),
                Subrequest::post("", "/sobjects/Account", json!({"Name": "Batch Ltd"})),
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        results.iter().map(|r| r.0).collect::<Vec<_>>(),
        [200, 404, 201]
    );

    // Tree: an account with two contacts at once, linked.
    let created = sf
        .tree(
            "Account",
            &[json!({
                "attributes": {"type": "Account", "referenceId": "a1"},
                "Name": "Tree LLP",
                "Contacts": {"records": [
                    {"attributes": {"type": "Contact", "referenceId": "c1"}, "LastName": "Leaf"},
                    {"attributes": {"type": "Contact", "referenceId": "c2"}, "LastName": "Twig"},
                ]},
            })],
        )
        .await
        .unwrap();
    assert_eq!(
        created.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
        ["a1", "c1", "c2"]
    );
    let leaf = sf
        .retrieve("Contact", &created[1].1, &["AccountId"])
        .await
        .unwrap();
    assert_eq!(leaf["AccountId"], created[0].1.as_str());
    // A tree with an invalid record creates nothing.
    let err = sf
        .tree(
            "Account",
            &[json!({"attributes": {"type": "Account", "referenceId": "x"}, "Name": "Half Tree",
                     "Contacts": {"records": [{"attributes": {"type": "Contact", "referenceId": "y"}}]}})],
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let q = Soql::select(["Id"])
        .from("Account")
        .filter(field("Name").eq("Half Tree"))
        .build()
        .unwrap();
    assert!(
        sf.query(&q)
            .try_collect::<Vec<_>>()
            .await
            .unwrap()
            .is_empty()
    );
    sb.stop().await;
}

/// An RSA key pair: the private key PEM (PKCS#8) and the public key PEM (SPKI).
fn rsa_pair() -> (String, String) {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    use base64::Engine;
    let pem = |label: &str, der: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let private = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&pair).unwrap();
    let public = AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(pair.public_key()).unwrap();
    (
        pem("PRIVATE KEY", private.as_ref()),
        pem("PUBLIC KEY", public.as_ref()),
    )
}

#[tokio::test]
async fn the_jwt_bearer_flow_connects_server_to_server_and_a_wrong_key_is_refused() {
    use moodbridge_auth::token_manager::JwtBearerSource;
    let (private, public) = rsa_pair();
    let sb = Sandbox::new(SandboxConfig {
        jwt_public_key_pem: Some(public),
        ..SandboxConfig::default()
    })
    .seed(5, 1, 1)
    .start()
    .await
    .unwrap();
    let provider = Provider {
        name: "sandbox".into(),
        issuer: sb.url().to_owned(),
        authorization_endpoint: None,
        token_endpoint: format!("{}/services/oauth2/token", sb.url())
            .parse()
            .unwrap(),
        revocation_endpoint: None,
        jwks_uri: None,
        client_auth: ClientAuth::Body,
    };
    let app = Arc::new(OAuthClient::new(provider, "sandbox-client", None).unwrap());
    let tokens = TokenManager::new();
    let source = |key: &str, subject: &str| {
        Arc::new(JwtBearerSource {
            client: app.clone(),
            subject: subject.to_owned(),
            private_key_pem: SecretString::from(key.to_owned()),
        })
    };
    tokens.register(
        "sandbox",
        "integration",
        source(&private, "integration@moodbridge.test"),
    );
    let sf = SalesforceClient::builder(
        "salesforce:sandbox",
        tokens.clone(),
        "sandbox",
        "integration",
    )
    .allow_instances(InstanceAllowList::default().with_loopback())
    .connect()
    .await
    .unwrap();
    let q = Soql::select(["Id"]).from("Account").build().unwrap();
    assert_eq!(sf.query(&q).try_collect::<Vec<_>>().await.unwrap().len(), 5);

    // Another key, or a user the app is not approved for: refused as an auth error.
    let (impostor, _) = rsa_pair();
    tokens.register(
        "sandbox",
        "impostor",
        source(&impostor, "integration@moodbridge.test"),
    );
    tokens.register(
        "sandbox",
        "stranger",
        source(&private, "stranger@elsewhere.test"),
    );
    for principal in ["impostor", "stranger"] {
        let err =
            SalesforceClient::builder("salesforce:sandbox", tokens.clone(), "sandbox", principal)
                .allow_instances(InstanceAllowList::default().with_loopback())
                .connect()
                .await
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Auth, "{principal}: {err}");
    }
    sb.stop().await;
}

#[tokio::test]
async fn the_rate_limit_is_lowered_as_the_daily_allowance_runs_out() {
    use moodbridge_core::resilience::{RateLimitConfig, RateLimiter, RateQuota};
    let sb = Sandbox::new(SandboxConfig {
        daily_api_limit: 20,
        ..SandboxConfig::default()
    })
    .start()
    .await
    .unwrap();
    let limiter = RateLimiter::new(
        "salesforce:sandbox",
        RateLimitConfig::new(RateQuota::per_second(1_000)),
    )
    .unwrap();
    let policy = moodbridge_core::Policy::builder("salesforce:sandbox")
        .rate_limiter(limiter)
        .build();
    let sf = SalesforceClient::builder(
        "salesforce:sandbox",
        tokens_for(&sb),
        "sandbox",
        "integration",
    )
    .allow_instances(InstanceAllowList::default().with_loopback())
    .policy(policy)
    .connect()
    .await
    .unwrap();
    let rate = |sf: &SalesforceClient| sf.policy().rate_limiter().unwrap().quota().rate;
    for _ in 0..15 {
        sf.limits().await.unwrap();
    }
    assert_eq!(sf.api_usage(), Some((15, 20)));
    assert_eq!(rate(&sf), 1_000, "a quarter or more left: full rate");
    sf.limits().await.unwrap(); // 4 left of 20: under a quarter
    assert_eq!(rate(&sf), 500);
    sf.limits().await.unwrap(); // 3 left
    sf.limits().await.unwrap(); // 2 left
    sf.limits().await.unwrap(); // 1 left: under a tenth
    assert_eq!(rate(&sf), 250);
    sb.stop().await;
}

#[tokio::test]
async fn sosl_finds_records_by_a_literal_term() {
    use connector_salesforce::soql::{SearchScope, Sosl};
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::Newest { max: None })
        .await
        .unwrap();
    sf.create(
        "Account",
        &json!({"Name": "Smith & Wesson (Legal) *Group*"}),
    )
    .await
    .unwrap();
    sf.create(
        "Contact",
        &json!({"LastName": "Wesson-Smith", "Email": "w@example.com"}),
    )
    .await
    .unwrap();
    let q = Sosl::find("Wesson (Legal) *Group")
        .in_scope(SearchScope::Name)
        .returning("Account", ["Id", "Name"])
        .returning("Contact", ["Id", "LastName"])
        .build()
        .unwrap();
    let found = sf.search(&q).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["attributes"]["type"], "Account");
    assert_eq!(found[0]["Name"], "Smith & Wesson (Legal) *Group*");
    let q = Sosl::find("wesson")
        .returning("Account", ["Id"])
        .returning("Contact", ["Id"])
        .build()
        .unwrap();
    assert_eq!(
        sf.search(&q).await.unwrap().len(),
        2,
        "case-insensitive, both objects"
    );
    sb.stop().await;
}

fn web_server_app(sb: &RunningSandbox, secret: Option<&str>) -> OAuthClient {
    OAuthClient::new(
        support::provider(sb),
        "sandbox-client",
        secret.map(SecretString::from),
    )
    .unwrap()
}

/// Where the authorization endpoint sends the browser for `url` (no redirect followed).
async fn consent(url: &url::Url) -> (reqwest::StatusCode, Option<url::Url>) {
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = browser.get(url.clone()).send().await.unwrap();
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| l.to_str().unwrap().parse().unwrap());
    (response.status(), location)
}

fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn the_web_server_flow_with_pkce_logs_in_through_a_loopback_redirect_and_refreshes() {
    use moodbridge_auth::oauth::login_with_loopback;
    use moodbridge_auth::token_manager::RefreshSource;
    let sb = sandbox(2_000).await;
    // A public client (no secret): PKCE is what proves the exchange is ours.
    let app = Arc::new(web_server_app(&sb, None));
    // The "browser": follows the authorization endpoint's redirect to our listener.
    let tokens = login_with_loopback(
        &app,
        &["api", "refresh_token"],
        std::time::Duration::from_secs(30),
        |url| {
            let url = url.clone();
            tokio::spawn(
                async move { reqwest::get(url).await.unwrap().error_for_status().unwrap() },
            );
            Ok(())
        },
    )
    .await
    .unwrap();
    assert!(tokens.refresh_token.is_some(), "a refresh token is issued");
    assert_eq!(tokens.instance_url.as_deref(), Some(sb.url()));

    let manager = TokenManager::new();
    manager.register(
        "sandbox",
        "jane",
        Arc::new(RefreshSource {
            client: app.clone(),
        }),
    );
    manager.seed("sandbox", "jane", tokens).await.unwrap();
    let sf = SalesforceClient::builder("salesforce:sandbox", manager, "sandbox", "jane")
        .allow_instances(InstanceAllowList::default().with_loopback())
        .connect()
        .await
        .unwrap();
    let q = Soql::select(["Id"]).from("Account").build().unwrap();
    assert_eq!(
        sf.query(&q).try_collect::<Vec<_>>().await.unwrap().len(),
        60
    );
    // The session ends: the refresh token gets a new one, and the call goes through.
    sb.expire_tokens();
    assert_eq!(
        sf.query(&q).try_collect::<Vec<_>>().await.unwrap().len(),
        60
    );
    sb.stop().await;
}

#[tokio::test]
async fn the_web_server_flow_refuses_a_wrong_verifier_a_replayed_code_and_a_foreign_callback() {
    let sb = sandbox(2_000).await;
    let app = web_server_app(&sb, None);
    let redirect = "http://127.0.0.1:4999/callback";

    // A code exchanged with another flow's verifier is refused, and is spent.
    let (url, pending) = app.authorize_url(redirect, &["api"]).unwrap();
    let (status, location) = consent(&url).await;
    assert_eq!(status, reqwest::StatusCode::FOUND);
    let location = location.unwrap();
    assert!(location.as_str().starts_with(redirect), "{location}");
    assert_eq!(
        param(&location, "state").as_deref(),
        Some(pending.state.as_str())
    );
    let code = param(&location, "code").unwrap();
    let (_, other) = app.authorize_url(redirect, &["api"]).unwrap();
    let state = other.state.clone();
    let err = app.exchange_code(other, &code, &state).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    let state = pending.state.clone();
    let err = app
        .exchange_code(pending.clone(), &code, &state)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "a code works once: {err}");

    // The right verifier: tokens; but the same code a second time: refused.
    let (url, pending) = app.authorize_url(redirect, &["api"]).unwrap();
    let code = param(&consent(&url).await.1.unwrap(), "code").unwrap();
    let state = pending.state.clone();
    let tokens = app
        .exchange_code(pending.clone(), &code, &state)
        .await
        .unwrap();
    assert!(
        tokens.refresh_token.is_none(),
        "no refresh token without the scope"
    );
    let err = app.exchange_code(pending, &code, &state).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");

    // A callback the connected app does not list: an error page, no redirect anywhere.
    let mut foreign = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "redirect_uri" {
                "https://evil.example/cb".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    foreign.query_pairs_mut().clear().extend_pairs(pairs);
    let (status, location) = consent(&foreign).await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    assert!(location.is_none());

    // Without a code challenge (PKCE required): the error goes back to the callback.
    let mut plain = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !k.starts_with("code_challenge"))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    plain.query_pairs_mut().clear().extend_pairs(pairs);
    let location = consent(&plain).await.1.unwrap();
    assert_eq!(
        param(&location, "error").as_deref(),
        Some("invalid_request")
    );
    assert!(param(&location, "code").is_none());
    sb.stop().await;
}

#[tokio::test]
async fn a_query_can_be_checked_against_describe_before_it_is_sent() {
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::newest_up_to("62.0"))
        .await
        .unwrap();
    let good = Soql::select(["Id", "lastname", "Account.Name"])
        .from("Contact")
        .filter(field("Account.Industry").ne(connector_salesforce::soql::Value::Null));
    let text = sf.check_query(&good).await.unwrap();
    assert_eq!(text, good.build().unwrap());
    assert_eq!(
        sf.query(&text).try_collect::<Vec<_>>().await.unwrap().len(),
        120
    );

    let calls = sb.api_calls();
    let bad = Soql::select(["Id", "LastNme", "Acount.Name"]).from("Contact");
    let err = sf.check_query(&bad).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    let text = err.to_string();
    assert!(
        text.contains("\"LastNme\" (did you mean LastName?)"),
        "{text}"
    );
    assert!(
        text.contains("\"Acount\" (in Acount.Name) (did you mean Account?)"),
        "{text}"
    );
    // Only describes were asked (cached: conditional), never the query itself.
    assert_eq!(
        sb.api_calls() - calls,
        1,
        "one describe of Contact, no query"
    );

    let err = sf
        .check_query(&Soql::select(["Id"]).from("Matter__c"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("no sObject \"Matter__c\""),
        "{err}"
    );
    sb.stop().await;
}

#[tokio::test]
async fn count_queries_answer_the_number_of_matches() {
    let sb = sandbox(2_000).await;
    let sf = connect(&sb, ApiVersion::newest_up_to("62.0"))
        .await
        .unwrap();
    let all = Soql::count().from("Contact").build().unwrap();
    assert_eq!(sf.count(&all).await.unwrap(), 120);
    let first = sf
        .query(
            &Soql::select(["Id"])
                .from("Contact")
                .limit(1)
                .build()
                .unwrap(),
        )
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    let one = Soql::count()
        .from("Contact")
        .filter(field("Id").eq(first[0]["Id"].as_str().unwrap()))
        .build()
        .unwrap();
    assert_eq!(sf.count(&one).await.unwrap(), 1);
    sb.stop().await;
}

/// The sandbox's fault switch as the contract's injector: `unavailable_first` answers the
/// next calls 503 `SERVER_UNAVAILABLE`; `api_calls` counts the calls since.
struct SandboxFaults<'a>(&'a RunningSandbox);

impl moodbridge_core::testing::FaultInjector for SandboxFaults<'_> {
    fn fail_next(&self, n: Option<u64>) {
        self.0.set_faults(salesforce_sandbox::Faults {
            unavailable_first: n.unwrap_or(u64::MAX),
            ..Default::default()
        });
    }

    fn heal(&self) {
        self.0.set_faults(salesforce_sandbox::Faults::default());
    }

    fn requests(&self) -> u64 {
        self.0.api_calls()
    }
}

#[tokio::test]
async fn salesforce_meets_the_resilience_contract() {
    use moodbridge_core::observe::op;
    use moodbridge_core::testing::{ResilienceCase, resilience_contract};
    let sb = sandbox(5).await;
    let case = ResilienceCase {
        id: "salesforce:contract",
        kind: "salesforce",
        operation: op::salesforce::LIMITS,
    };
    resilience_contract(
        &case,
        &SandboxFaults(&sb),
        async |policy| sb.client_builder(case.id)?.policy(policy).connect().await,
        async |sf: &SalesforceClient| sf.limits().await.map(drop),
    )
    .await;
    sb.stop().await;
}

/// Requests the client knows Salesforce refuses fail at once as `InvalidInput` naming the
/// limit and the way around it: nothing is sent and nothing retried (a patient policy
/// would otherwise retry them as outages).
#[tokio::test]
async fn requests_over_salesforces_limits_fail_at_once_naming_the_limit() {
    let sb = sandbox(2_000).await;
    let sf = connect_patiently(&sb).await;
    let before = sb.api_calls();
    // 1,000 ids: a statement well under 100,000 characters, a URI over 16,384 bytes.
    let ids: Vec<String> = (0..1_000)
        .map(|i| format!("001000000000{i:03}AAA"))
        .collect();
    let soql = Soql::select(["Id"])
        .from("Account")
        .filter(field("Id").is_in(ids.iter().map(String::as_str)))
        .build()
        .unwrap();
    let err = sf.query(&soql).try_collect::<Vec<_>>().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("16384 bytes"), "{err}");
    assert!(err.hint().contains("bulk_query"), "{}", err.hint());
    let err = sf.count(&soql).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(sb.api_calls(), before, "nothing was sent");

    // 10,000 ids: over SOQL's 100,000 characters, refused by the builder.
    let many: Vec<String> = (0..10_000).map(|i| format!("001000000{i:06}AAA")).collect();
    let err = Soql::select(["Id"])
        .from("Account")
        .filter(field("Id").is_in(many.iter().map(String::as_str)))
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("at most 100000"), "{err}");

    // 26 subrequests: over a composite request's 25.
    let subs: Vec<connector_salesforce::client::Subrequest> = (0..26)
        .map(|i| connector_salesforce::client::Subrequest::get(&format!("r{i}"), "/limits"))
        .collect();
    let err = sf.composite(&subs, false).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("at most 25"), "{err}");
    assert_eq!(sb.api_calls(), before, "nothing was sent");
    sb.stop().await;
}

/// A server echoing the request's `Authorization` header in its error (raw and base64)
/// does not carry the access token into the client's error.
#[tokio::test]
async fn a_token_echoed_by_the_server_never_reaches_an_error() {
    use axum::http::HeaderMap;
    use base64::Engine as _;
    const TOKEN: &str = "00Dx0000000echo!AQ4AQLeakMeIfYouCan.token/value";
    let app = axum::Router::new()
        .route(
            "/services/data",
            axum::routing::get(|| async {
                axum::Json(serde_json::json!([{"label": "API 62.0", "url": "/services/data/v62.0", "version": "62.0"}]))
            }),
        )
        .fallback(|headers: HeaderMap| async move {
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let b64 = base64::engine::general_purpose::STANDARD.encode(&auth);
            (
                axum::http::StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!([{
                    "message": format!("cannot use {auth} ({b64})"),
                    "errorCode": "INVALID_FIELD",
                }])),
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let sb = sandbox(2_000).await;
    let tokens = tokens_for(&sb);
    let mut seeded = moodbridge_auth::oauth::TokenSet::bearer(
        SecretString::from(TOKEN),
        Some(std::time::Duration::from_secs(3600)),
    );
    seeded.instance_url = Some(echo);
    tokens.seed("sandbox", "integration", seeded).await.unwrap();
    let sf = SalesforceClient::builder("salesforce:echo", tokens, "sandbox", "integration")
        .allow_instances(InstanceAllowList::default().with_loopback())
        .connect()
        .await
        .unwrap();
    let err = sf.limits().await.unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(
        !shown
            .contains(&base64::engine::general_purpose::STANDARD.encode(format!("Bearer {TOKEN}"))),
        "{shown}"
    );
    assert!(shown.contains("[redacted]"), "{shown}");
    server.abort();
    sb.stop().await;
}
