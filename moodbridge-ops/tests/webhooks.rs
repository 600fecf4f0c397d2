//! The webhook receiver over HTTP on loopback, into a SQLite event log, with requests
//! signed by the Standard Webhooks reference library (`standardwebhooks`), not by us.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use moodbridge_core::state::{EventLog, EventWriter, SqliteStateStore};
use moodbridge_ops::webhooks::{OutboundSource, WebhookReceiver, WebhookSource};
use secrecy::SecretString;
use serde_json::{Value, json};
use standardwebhooks::Webhook;

const OLD: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const NEW: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const OTHER: &str = "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldCBhdCBhbGw=";

struct Server {
    url: String,
    log: Arc<SqliteStateStore>,
    _dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        SqliteStateStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let app = WebhookReceiver::new(EventWriter::spawn(log.clone(), 500))
        // A rotation in progress: the old and the new secret are both live.
        .source(
            WebhookSource::signed("apex", [SecretString::from(OLD), SecretString::from(NEW)])
                .unwrap()
                .partition_by("/data/Id")
                .max_body(4096),
        )
        .source(WebhookSource::bearer("legacy", SecretString::from("t0ken-legacy")).unwrap())
        .outbound(OutboundSource::new("prod", ["00DR00000000XcD"]).unwrap())
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        url,
        log,
        _dir: dir,
        task,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A request signed by the reference library with `secret` at `timestamp`.
fn signed(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &str,
) -> reqwest::RequestBuilder {
    signed_as(
        client,
        url,
        secret,
        id,
        timestamp,
        "application/json",
        None,
        body,
    )
}

/// As [`signed`], with the content type given and the timestamp header's text replaced
/// by `stamp_text` when given (the signature still covers `timestamp`).
#[allow(clippy::too_many_arguments, reason = "a test helper")]
fn signed_as(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    id: &str,
    timestamp: i64,
    content_type: &str,
    stamp_text: Option<&str>,
    body: &str,
) -> reqwest::RequestBuilder {
    let signature = Webhook::new(secret)
        .unwrap()
        .sign(id, timestamp, body.as_bytes())
        .unwrap();
    client
        .post(format!("{url}/webhooks/apex"))
        .header("content-type", content_type)
        .header("webhook-id", id)
        .header(
            "webhook-timestamp",
            stamp_text.map_or_else(|| timestamp.to_string(), str::to_owned),
        )
        .header("webhook-signature", signature)
        .body(body.to_owned())
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_are_stored_once_and_acknowledged() {
    let s = server().await;
    let client = reqwest::Client::new();
    let body = r#"{"type":"case.updated","data":{"Id":"500A","Status":"Closed"}}"#;

    let (status, reply) = answer(signed(&client, &s.url, NEW, "msg_1", now(), body)).await;
    assert_eq!(
        (status, reply),
        (200, json!({"status": "stored", "sequence": 1}))
    );
    // Signed with the old secret of the rotation: accepted too.
    let (status, reply) = answer(signed(&client, &s.url, OLD, "msg_2", now(), body)).await;
    assert_eq!(
        (status, reply),
        (200, json!({"status": "stored", "sequence": 2}))
    );
    // The sender retries msg_1: acknowledged as a duplicate, not stored again.
    let (status, reply) = answer(signed(&client, &s.url, NEW, "msg_1", now(), body)).await;
    assert_eq!(
        (status, reply),
        (200, json!({"status": "duplicate", "sequence": 1}))
    );

    let events = s.log.events_after(0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    let first = &events[0].event;
    assert_eq!(
        (
            first.source.as_str(),
            first.event_id.as_str(),
            first.event_type.as_str(),
            first.partition_key.as_deref(),
            first.body.as_str()
        ),
        ("apex", "msg_1", "case.updated", Some("500A"), body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_clear_status_and_store_nothing() {
    let s = server().await;
    let client = reqwest::Client::new();
    let body = r#"{"type":"case.updated","data":{"Id":"500A"}}"#;
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "signed with a secret the receiver does not hold",
            signed(&client, &s.url, OTHER, "m1", now(), body),
            401,
            "no signature matches",
        ),
        (
            "six minutes old",
            signed(&client, &s.url, NEW, "m2", now() - 360, body),
            401,
            "more than five minutes old",
        ),
        (
            "six minutes ahead",
            signed(&client, &s.url, NEW, "m3", now() + 360, body),
            401,
            "ahead",
        ),
        (
            "unsigned",
            client
                .post(format!("{}/webhooks/apex", s.url))
                .header("content-type", "application/json")
                .body(body),
            401,
            "webhook-id header is missing",
        ),
        (
            "the body altered after signing",
            {
                let signature = Webhook::new(NEW)
                    .unwrap()
                    .sign("m4", now(), body.as_bytes())
                    .unwrap();
                client
                    .post(format!("{}/webhooks/apex", s.url))
                    .header("content-type", "application/json")
                    .header("webhook-id", "m4")
                    .header("webhook-timestamp", now().to_string())
                    .header("webhook-signature", signature)
                    .body(body.replace("500A", "500B"))
            },
            401,
            "no signature matches",
        ),
        (
            "a timestamp that is not a number",
            signed_as(
                &client,
                &s.url,
                NEW,
                "m5",
                now(),
                "application/json",
                Some("soon"),
                body,
            ),
            400,
            "webhook-timestamp",
        ),
        (
            "a signature header given twice",
            signed(&client, &s.url, NEW, "m9", now(), body).header("webhook-signature", "v1,AAAA"),
            400,
            "given more than once",
        ),
        (
            "not JSON, though signed",
            signed(&client, &s.url, NEW, "m6", now(), "<xml/>"),
            400,
            "not JSON",
        ),
        (
            "the wrong content type",
            signed_as(&client, &s.url, NEW, "m7", now(), "text/plain", None, body),
            415,
            "application/json",
        ),
        (
            "a body over the source's limit",
            signed(
                &client,
                &s.url,
                NEW,
                "m8",
                now(),
                &format!(r#"{{"pad":"{}"}}"#, "x".repeat(5000)),
            ),
            413,
            "4096 bytes",
        ),
        (
            "an unknown source",
            client
                .post(format!("{}/webhooks/nobody", s.url))
                .header("content-type", "application/json")
                .body(body),
            404,
            "no webhook source",
        ),
        (
            "a wrong bearer token",
            client
                .post(format!("{}/webhooks/legacy", s.url))
                .header("content-type", "application/json")
                .header("authorization", "Bearer t0ken-guess")
                .header("idempotency-key", "k1")
                .body(body),
            401,
            "bearer token is wrong",
        ),
        (
            "a bearer request without an event id",
            client
                .post(format!("{}/webhooks/legacy", s.url))
                .header("content-type", "application/json")
                .header("authorization", "Bearer t0ken-legacy")
                .body(body),
            400,
            "no event id",
        ),
    ];
    for (what, request, status, says) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        let text = response.text().await.unwrap();
        assert!(text.contains(says), "{what}: {text}");
        for secret in [OLD, NEW, OTHER, "t0ken-legacy"] {
            assert!(
                !text.contains(&secret[6..]),
                "{what}: a secret in the answer"
            );
        }
    }
    assert!(
        s.log.events_after(0, 10).await.unwrap().is_empty(),
        "nothing stored"
    );

    // The bearer source, with the right token and an id, is stored.
    let (status, reply) = answer(
        client
            .post(format!("{}/webhooks/legacy", s.url))
            .header("content-type", "application/json; charset=utf-8")
            .header("authorization", "Bearer t0ken-legacy")
            .header("idempotency-key", "k1")
            .body(body),
    )
    .await;
    assert_eq!(
        (status, reply),
        (200, json!({"status": "stored", "sequence": 1}))
    );
}

/// Requests in flight together are all stored and acknowledged, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_are_all_stored() {
    let s = server().await;
    let client = reqwest::Client::new();
    let mut sends = Vec::new();
    for i in 0..200 {
        let request = signed(
            &client,
            &s.url,
            NEW,
            &format!("msg_{}", i % 150),
            now(),
            &format!(r#"{{"data":{{"Id":"{i}"}}}}"#),
        );
        sends.push(tokio::spawn(async move { answer(request).await }));
    }
    let mut stored = 0;
    let mut duplicates = 0;
    for send in sends {
        let (status, reply) = send.await.unwrap();
        assert_eq!(status, 200, "{reply}");
        match reply["status"].as_str() {
            Some("stored") => stored += 1,
            Some("duplicate") => duplicates += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((stored, duplicates), (150, 50));
    assert_eq!(s.log.last_sequence().await.unwrap(), 150);
}

/// An outbound message as Salesforce sends it (the layout of the one published in
/// "Using Salesforce outbound SOAP messages with PHP"), with `count` notifications.
fn outbound_message(org: &str, ids: &[&str]) -> String {
    let notifications: String = ids
        .iter()
        .map(|id| {
            format!(
                r#"<Notification><Id>{id}</Id><sObject xsi:type="sf:Case" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>500R0000000{id}</sf:Id><sf:Subject>Motion &amp; order</sf:Subject><sf:ClosedDate xsi:nil="true"/></sObject></Notification>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound">
<OrganizationId>{org}</OrganizationId>
<ActionId>04kR00000004CCXIA2</ActionId>
<SessionId>00DR0000000!SessionSecretValue</SessionId>
<EnterpriseUrl>https://cs2-api.salesforce.com/services/Soap/c/8.0/4e1300DR00000000XcD</EnterpriseUrl>
<PartnerUrl>https://cs2-api.salesforce.com/services/Soap/u/8.0/4e1300DR00000000XcD</PartnerUrl>
{notifications}
</notifications>
</soapenv:Body>
</soapenv:Envelope>"#
    )
}

async fn post_outbound(client: &reqwest::Client, url: &str, xml: String) -> (u16, String) {
    let response = client
        .post(format!("{url}/outbound/prod"))
        .header("content-type", "text/xml; charset=utf-8")
        .header("soapaction", "\"\"")
        .body(xml)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_messages_are_acknowledged_only_once_stored() {
    let s = server().await;
    let client = reqwest::Client::new();
    let org = "00DR00000000XcDMAU";
    let (status, body) =
        post_outbound(&client, &s.url, outbound_message(org, &["04lA", "04lB"])).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        moodbridge_ops::outbound::ACK,
        "the exact acknowledgement"
    );
    let events = s.log.events_after(0, 10).await.unwrap();
    assert_eq!(events.len(), 2);
    let e = &events[1].event;
    assert_eq!(
        (
            e.source.as_str(),
            e.event_id.as_str(),
            e.event_type.as_str(),
            e.partition_key.as_deref()
        ),
        ("prod", "04lB", "Case", Some("500R000000004lB"))
    );
    let stored: Value = serde_json::from_str(&e.body).unwrap();
    assert_eq!(
        stored,
        json!({"organizationId": org, "actionId": "04kR00000004CCXIA2",
               "sObject": {"type": "Case", "Id": "500R000000004lB",
                           "Subject": "Motion & order", "ClosedDate": null}})
    );
    assert!(
        !e.body.contains("SessionSecretValue"),
        "the session id is not kept"
    );

    // Salesforce sends it again (and a new one with it): acknowledged, only the new one
    // stored.
    let (status, body) =
        post_outbound(&client, &s.url, outbound_message(org, &["04lB", "04lC"])).await;
    assert_eq!(
        (status, body.as_str()),
        (200, moodbridge_ops::outbound::ACK)
    );
    assert_eq!(s.log.last_sequence().await.unwrap(), 3);

    // Refused, with a SOAP fault, nothing stored.
    let xxe = format!(
        "<!DOCTYPE d [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
        outbound_message(org, &["04lD"]).replacen(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            "",
            1
        )
    );
    let ids: Vec<String> = (0..101).map(|i| format!("04lX{i}")).collect();
    let many = outbound_message(org, &ids.iter().map(String::as_str).collect::<Vec<_>>());
    for (what, xml, status, says) in [
        (
            "another organization",
            outbound_message("00DR00000000ZZZ", &["04lE"]),
            403,
            "not allowed",
        ),
        ("a DTD", xxe, 400, "DTD"),
        ("101 notifications", many, 400, "more than 100"),
        ("not XML", "{}".to_owned(), 400, "SOAP"),
    ] {
        let (got, body) = post_outbound(&client, &s.url, xml).await;
        assert_eq!(got, status, "{what}: {body}");
        assert!(
            body.contains("<faultstring>") && body.contains(says),
            "{what}: {body}"
        );
        assert!(
            !body.contains("SessionSecretValue"),
            "{what}: the session id in a fault"
        );
    }
    assert_eq!(s.log.last_sequence().await.unwrap(), 3, "nothing stored");
}

/// A secret rotated in the credential store: both versions are accepted until the old
/// one is retired, then only the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_rotated_in_the_credential_store_is_honoured() {
    use moodbridge_core::credential::CredentialStore;
    let store = moodbridge_auth::store::MemoryStore::new();
    store
        .put("webhooks/apex", SecretString::from(OLD))
        .await
        .unwrap();
    let new_version = store
        .put("webhooks/apex", SecretString::from(NEW))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        SqliteStateStore::open(&dir.path().join("s.db"))
            .await
            .unwrap(),
    );
    let receiver = |source: WebhookSource| {
        WebhookReceiver::new(EventWriter::spawn(log.clone(), 10))
            .source(source)
            .router()
    };
    let both = WebhookSource::signed_from_store("apex", &store, "webhooks/apex")
        .await
        .unwrap();
    store.retire("webhooks/apex", &new_version).await.unwrap();
    let new_only = WebhookSource::signed_from_store("apex", &store, "webhooks/apex")
        .await
        .unwrap();
    let missing = WebhookSource::signed_from_store("apex", &store, "webhooks/nobody").await;
    assert!(missing.unwrap_err().to_string().contains("webhooks/nobody"));
    for (router, old_accepted) in [(receiver(both), true), (receiver(new_only), false)] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let client = reqwest::Client::new();
        let id = format!("rot-{old_accepted}");
        let (status, _) = answer(signed(&client, &url, OLD, &id, now(), "{}")).await;
        assert_eq!(
            status == 200,
            old_accepted,
            "the old secret, accepted: {old_accepted}"
        );
        let (status, _) = answer(signed(
            &client,
            &url,
            NEW,
            &format!("{id}-new"),
            now(),
            "{}",
        ))
        .await;
        assert_eq!(status, 200, "the new secret");
        task.abort();
    }
}

/// A receiver built before a rotation follows it: the new secret is accepted as soon as
/// the sender signs with it, and the old one is refused once retired and read again —
/// without building the receiver again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watching_source_follows_a_rotation_without_a_rebuild() {
    use moodbridge_core::credential::CredentialStore;
    use std::time::Duration;
    let store: Arc<dyn CredentialStore> = Arc::new(moodbridge_auth::store::MemoryStore::new());
    store
        .put("webhooks/apex", SecretString::from(OLD))
        .await
        .unwrap();
    let source = WebhookSource::signed_watching(
        "apex",
        store.clone(),
        "webhooks/apex",
        Duration::from_millis(800),
    )
    .await
    .unwrap();
    assert!(format!("{source:?}").contains("webhooks/apex"));
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        SqliteStateStore::open(&dir.path().join("s.db"))
            .await
            .unwrap(),
    );
    let router = WebhookReceiver::new(EventWriter::spawn(log.clone(), 10))
        .source(source)
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let client = reqwest::Client::new();
    let send = |secret: &'static str, id: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            answer(signed(&client, &url, secret, id, now(), "{}"))
                .await
                .0
        }
    };
    assert_eq!(send(OLD, "w-1").await, 200, "the secret of the time");
    assert_ne!(
        send(NEW, "w-2").await,
        200,
        "a secret the store does not hold"
    );

    // Rotated: the sender moves to the new secret at once; both are accepted.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let new_version = store
        .put("webhooks/apex", SecretString::from(NEW))
        .await
        .unwrap();
    assert_eq!(
        send(NEW, "w-3").await,
        200,
        "the new secret, with no rebuild"
    );
    assert_eq!(send(OLD, "w-4").await, 200, "the old one, until retired");

    // Retired: refused from the next read on.
    store.retire("webhooks/apex", &new_version).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_ne!(send(OLD, "w-5").await, 200, "a retired secret");
    assert_eq!(send(NEW, "w-6").await, 200);
    task.abort();
}
