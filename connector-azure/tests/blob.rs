//! Azure Blob Storage against Azurite (the official emulator, started per test on
//! 127.0.0.1 with in-memory persistence): the shared object-store contract plus Shared
//! Key signing, connection strings, SAS URLs used by a plain HTTP client, uncommitted
//! blocks after a cancelled upload, and the container name check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use connector_azure::auth::{ConnectionString, DEV_ACCOUNT, DEV_ACCOUNT_KEY, SharedKey};
use connector_azure::blob::{AzureBlobStore, AzureCredentials};
use moodbridge_core::observe::op;
use moodbridge_core::storage::{ObjectKey, ObjectStore, ObjectStoreExt, PresignMethod, PutOptions};
use moodbridge_core::testing::{
    ObjectStoreContract, cancel_midway, object_store_contract, object_store_round_trip,
    pattern_sha256, pattern_stream,
};
use moodbridge_core::{ErrorKind, PlatformIntegration};
use secrecy::SecretString;
use support::Azurite;

mod support;

const BLOCK: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_meets_the_contract() {
    let azurite = Azurite::start();
    let store = azurite.store("contract", BLOCK).await;
    object_store_contract(
        &store,
        "suite",
        &ObjectStoreContract {
            part_size: BLOCK,
            list_keys: 1001,
        },
    )
    .await;
    assert_eq!(
        store.health_check().await.status,
        moodbridge_core::integration::HealthStatus::Up
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_string_works_and_a_wrong_key_is_an_auth_error() {
    let azurite = Azurite::start();
    let cs = ConnectionString::parse(&format!(
        "DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT};AccountKey={DEV_ACCOUNT_KEY};BlobEndpoint={}",
        azurite.endpoint
    ))
    .unwrap();
    let store = AzureBlobStore::builder("conn")
        .connection_string(&cs)
        .build()
        .unwrap();
    store.create_container().await.unwrap();
    let key = ObjectKey::new("a.txt").unwrap();
    store
        .put_bytes(&key, b"hello".to_vec(), PutOptions::new())
        .await
        .unwrap();
    assert_eq!(store.get_bytes(&key).await.unwrap(), b"hello");

    let wrong = AzureBlobStore::builder("conn")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::SharedKey(SharedKey {
            account: DEV_ACCOUNT.into(),
            key: SecretString::from("d3Jvbmcga2V5".to_owned()),
        }))
        .max_attempts(1)
        .build()
        .unwrap();
    let err = wrong.head(&key).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Auth | ErrorKind::Forbidden),
        "{err}"
    );
    assert!(!format!("{wrong:?}").contains(DEV_ACCOUNT_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_urls_work_with_a_plain_http_client() {
    let azurite = Azurite::start();
    let store = azurite.store("sas", BLOCK).await;
    let key = ObjectKey::new("shared/retainer agreement+v2.pdf").unwrap();
    let http = reqwest::Client::new();
    let put = store
        .presign(&key, PresignMethod::Put, Duration::from_secs(300))
        .await
        .unwrap();
    let mut request = http.put(&put.url).body("uploaded with a SAS");
    for (name, value) in &put.headers {
        request = request.header(name, value);
    }
    let answer = request.send().await.unwrap();
    assert!(
        answer.status().is_success(),
        "SAS PUT: {} {}",
        answer.status(),
        answer.text().await.unwrap()
    );
    assert_eq!(store.get_bytes(&key).await.unwrap(), b"uploaded with a SAS");
    let get = store
        .presign(&key, PresignMethod::Get, Duration::from_secs(300))
        .await
        .unwrap();
    let answer = http.get(&get.url).send().await.unwrap();
    assert!(answer.status().is_success(), "SAS GET: {}", answer.status());
    assert_eq!(
        answer.bytes().await.unwrap(),
        b"uploaded with a SAS".as_slice()
    );
    // A tampered signature is refused.
    let tampered = get.url.replace("sp=r", "sp=rw");
    assert!(
        !http
            .get(&tampered)
            .send()
            .await
            .unwrap()
            .status()
            .is_success()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_leaves_nothing_visible() {
    let azurite = Azurite::start();
    let store = azurite.store("cancel", BLOCK).await;
    let key = ObjectKey::new("scans/cancelled.tiff").unwrap();
    cancel_midway(&store, &key, BLOCK).await;
    assert_eq!(
        store.head(&key).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(store.list_keys("").await.unwrap().is_empty());
}

#[tokio::test]
async fn invalid_settings_are_rejected_before_any_request() {
    for name in ["Case_Docs", "ab", "a--b", "-abc"] {
        let err = AzureBlobStore::builder(name)
            .endpoint("http://127.0.0.1:9/devstoreaccount1")
            .credentials(AzureCredentials::SharedKey(Azurite::key()))
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{name}: {err}");
    }
    let err = AzureBlobStore::builder("docs")
        .endpoint("http://127.0.0.1:9/x")
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("credentials"), "{err}");
}

/// 1 GiB streamed up (staged blocks) and down (ranges) with SHA-256 compared end to
/// end; MOODBRIDGE_TEST_BIG_OBJECT_MIB lowers the size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gibibyte_round_trip() {
    let mib: u64 = std::env::var("MOODBRIDGE_TEST_BIG_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let azurite = Azurite::start();
    let store = azurite.store("big", 8 * BLOCK).await;
    let key = ObjectKey::new("scans/big scan.tiff").unwrap();
    object_store_round_trip(&store, &key, mib << 20, 42).await;
    store.delete(&key).await.unwrap();
}

/// Blob Storage checks the transactional MD5 each block carries: bytes that do not match
/// are refused. Azure answers `Md5Mismatch` (the store maps it to `ErrorKind::Integrity`);
/// Azurite 3.35 checks the same but answers `400 InvalidOperation` "Provided contentMD5
/// doesn't match.".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_a_block_whose_md5_does_not_match() {
    use azure_storage_blob::models::BlockBlobClientStageBlockOptions;
    use md5::Digest;
    let azurite = Azurite::start();
    let store = azurite.store("md5", BLOCK).await;
    let client = store
        .container_client()
        .blob_client("x")
        .block_blob_client();
    let options = BlockBlobClientStageBlockOptions {
        transactional_content_md5: Some(vec![0u8; 16]),
        ..Default::default()
    };
    let err = client
        .stage_block(
            b"block-0001",
            5,
            azure_core::http::RequestContent::from(b"hello".to_vec()),
            Some(options),
        )
        .await
        .unwrap_err();
    match err.kind() {
        azure_core::error::ErrorKind::HttpResponse {
            status, error_code, ..
        } => {
            assert_eq!(u16::from(*status), 400);
            assert!(
                matches!(
                    error_code.as_deref(),
                    Some("Md5Mismatch" | "InvalidOperation")
                ),
                "{error_code:?}"
            );
            assert!(
                err.to_string().contains("MD5")
                    || err.to_string().contains("contentMD5")
                    || error_code.as_deref() == Some("Md5Mismatch"),
                "{err}"
            );
        }
        other => panic!("expected an MD5 refusal, got {other:?}"),
    }
    // With the right MD5 the same block is accepted.
    let options = BlockBlobClientStageBlockOptions {
        transactional_content_md5: Some(md5::Md5::digest(b"hello").to_vec()),
        ..Default::default()
    };
    client
        .stage_block(
            b"block-0001",
            5,
            azure_core::http::RequestContent::from(b"hello".to_vec()),
            Some(options),
        )
        .await
        .unwrap();
}

/// Fails the first try of chosen `Put Block` requests with `503 ServerBusy` (or every try
/// when `always`), counting what it sees; a per-try policy of the client's pipeline.
#[derive(Debug, Default)]
struct BusyBlocks {
    always: bool,
    block_puts: std::sync::atomic::AtomicUsize,
    injected: std::sync::atomic::AtomicUsize,
    failed_once: std::sync::Mutex<std::collections::HashSet<String>>,
}

#[async_trait::async_trait]
impl azure_core::http::policies::Policy for BusyBlocks {
    async fn send(
        &self,
        ctx: &azure_core::http::Context,
        request: &mut azure_core::http::Request,
        next: &[std::sync::Arc<dyn azure_core::http::policies::Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        use std::sync::atomic::Ordering;
        let url = request.url().to_string();
        if url.contains("comp=block&") || url.ends_with("comp=block") {
            self.block_puts.fetch_add(1, Ordering::SeqCst);
            // Block ids are 16 hex digits and an 8-digit counter (24 bytes; the counter's
            // last 6 digits are the last 8 base64 characters): fail blocks 1 and 2.
            let id = request
                .url()
                .query_pairs()
                .find(|(k, _)| k == "blockid")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            let chosen = id.ends_with("MDAwMDAx") || id.ends_with("MDAwMDAy");
            if self.always || (chosen && self.failed_once.lock().unwrap().insert(url.clone())) {
                self.injected.fetch_add(1, Ordering::SeqCst);
                let mut headers = azure_core::http::headers::Headers::new();
                headers.insert("x-ms-error-code", "ServerBusy");
                return Ok(azure_core::http::AsyncRawResponse::from_bytes(
                    azure_core::http::StatusCode::ServiceUnavailable,
                    headers,
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code><Message>injected</Message></Error>",
                ));
            }
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_block_failures_are_retried() {
    use std::sync::atomic::Ordering;
    let azurite = Azurite::start();
    azurite.store("faults", BLOCK).await;
    let faults = std::sync::Arc::new(BusyBlocks::default());
    let store = AzureBlobStore::builder("faults")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::SharedKey(Azurite::key()))
        .block_size(BLOCK)
        .per_try_policy(faults.clone())
        .build()
        .unwrap();
    let key = ObjectKey::new("retried.bin").unwrap();
    let size = 3 * BLOCK + 17;
    let put = store
        .put(
            &key,
            pattern_stream(size, 5, 100_000),
            PutOptions::new().size(size),
        )
        .await
        .unwrap();
    assert_eq!(put.sha256, pattern_sha256(size, 5).await);
    assert_eq!(
        faults.injected.load(Ordering::SeqCst),
        2,
        "blocks 1 and 2 failed once"
    );
    assert_eq!(
        faults.block_puts.load(Ordering::SeqCst),
        4 + 2,
        "4 blocks, 2 of them sent twice"
    );
    let got = store.get_bytes(&key).await.unwrap();
    assert_eq!(moodbridge_core::storage::sha256(&got), put.sha256);

    // Failing for good: the upload fails as temporary and nothing becomes visible.
    let always = std::sync::Arc::new(BusyBlocks {
        always: true,
        ..Default::default()
    });
    let store = AzureBlobStore::builder("faults")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::SharedKey(Azurite::key()))
        .block_size(BLOCK)
        .max_attempts(2)
        .per_try_policy(always.clone())
        .build()
        .unwrap();
    let never = ObjectKey::new("never.bin").unwrap();
    let err = store
        .put(
            &never,
            pattern_stream(2 * BLOCK + 1, 6, 1 << 20),
            PutOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(!err.is_temporary(), "the policy's retries are spent: {err}");
    assert_eq!(err.context_value("attempts"), Some("2"), "{err}");
    assert_eq!(err.operation(), Some(op::azure_blob::PUT_BLOCK), "{err}");
    assert_eq!(
        err.kind(),
        ErrorKind::RateLimited { retry_after: None },
        "ServerBusy is throttling: {err}"
    );
    assert_eq!(
        store.head(&never).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

/// An account SAS made from the key authorizes a store that never sees the key; its
/// permissions are enforced by the service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_sas_authorizes_a_store_without_the_key() {
    use connector_azure::auth::account_sas;
    let azurite = Azurite::start();
    let owner = azurite.store("shared", BLOCK).await;
    let key = ObjectKey::new("docs/a.txt").unwrap();
    owner
        .put_bytes(&key, b"from the owner".to_vec(), PutOptions::new())
        .await
        .unwrap();
    let expiry = std::time::SystemTime::now() + Duration::from_secs(600);
    let read_list = account_sas(&Azurite::key(), "rl", expiry, true, "2025-11-05").unwrap();
    let reader = AzureBlobStore::builder("shared")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::Sas(read_list))
        .max_attempts(1)
        .build()
        .unwrap();
    assert_eq!(reader.get_bytes(&key).await.unwrap(), b"from the owner");
    assert_eq!(reader.list_keys("docs/").await.unwrap(), ["docs/a.txt"]);
    let err = reader
        .put_bytes(
            &ObjectKey::new("docs/b.txt").unwrap(),
            b"x".to_vec(),
            PutOptions::new(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Forbidden | ErrorKind::Auth),
        "a read-only SAS cannot write: {err}"
    );
    // Widening the permissions by hand breaks the signature.
    let forged = secrecy::ExposeSecret::expose_secret(
        &account_sas(&Azurite::key(), "rl", expiry, true, "2025-11-05").unwrap(),
    )
    .replace("sp=rl", "sp=rcwl");
    let forger = AzureBlobStore::builder("shared")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::Sas(SecretString::from(forged)))
        .max_attempts(1)
        .build()
        .unwrap();
    let err = forger.get_bytes(&key).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Forbidden | ErrorKind::Auth),
        "a forged SAS is refused: {err}"
    );
    let writer_sas = account_sas(&Azurite::key(), "rcwl", expiry, true, "2025-11-05").unwrap();
    let writer = AzureBlobStore::builder("shared")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::Sas(writer_sas))
        .build()
        .unwrap();
    writer
        .put_bytes(
            &ObjectKey::new("docs/b.txt").unwrap(),
            b"via SAS".to_vec(),
            PutOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        owner
            .get_bytes(&ObjectKey::new("docs/b.txt").unwrap())
            .await
            .unwrap(),
        b"via SAS"
    );
}

/// An Entra ID credential as Azurite's `--oauth basic` checks it: a JWT with Azure
/// Storage's audience, an Entra issuer and valid times (Azurite does not check the
/// signature, so it is signed with a throwaway HMAC key). Counts the tokens asked for.
#[derive(Debug, Default)]
struct TestEntra {
    asked: std::sync::atomic::AtomicU32,
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const OBJECT_ID: &str = "0b2f2a7e-5c1d-4c4e-9d8a-3f3c1b2a1e10";

#[async_trait::async_trait]
impl azure_core::credentials::TokenCredential for TestEntra {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<azure_core::credentials::TokenRequestOptions<'_>>,
    ) -> azure_core::Result<azure_core::credentials::AccessToken> {
        assert_eq!(scopes, ["https://storage.azure.com/.default"]);
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = serde_json::json!({
            "aud": "https://storage.azure.com",
            "iss": format!("https://sts.windows.net/{TENANT}/"),
            "iat": now - 60,
            "nbf": now - 60,
            "exp": now + 3600,
            "oid": OBJECT_ID,
            "tid": TENANT,
        });
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"azurite does not check signatures"),
        )
        .unwrap();
        Ok(azure_core::credentials::AccessToken::new(
            token,
            azure_core::time::OffsetDateTime::now_utc() + azure_core::time::Duration::hours(1),
        ))
    }
}

/// A reqwest client that trusts the https Azurite's certificate (and nothing else).
fn trusting(azurite: &Azurite) -> reqwest::Client {
    let cert = reqwest::Certificate::from_pem(azurite.cert_pem.as_ref().unwrap()).unwrap();
    reqwest::Client::builder()
        .tls_certs_only([cert])
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_id_credentials_authorize_the_store_and_sign_user_delegation_sas() {
    let azurite = Azurite::start_https();
    let http = trusting(&azurite);
    let entra = std::sync::Arc::new(TestEntra::default());
    let store = AzureBlobStore::builder("entra")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::Entra(entra.clone()))
        .http_client(std::sync::Arc::new(http.clone()))
        .block_size(BLOCK)
        .build()
        .unwrap();
    store.create_container().await.unwrap();

    // Every operation of the store on a bearer token: staged blocks, ranges, list, copy.
    let key = ObjectKey::new("cases/500A/brief.pdf").unwrap();
    let size = 2 * BLOCK + 17;
    let put = store
        .put(
            &key,
            pattern_stream(size, 5, 64 * 1024),
            PutOptions::new().size(size),
        )
        .await
        .unwrap();
    assert_eq!(put.sha256, pattern_sha256(size, 5).await);
    let body = store.get_bytes(&key).await.unwrap();
    assert_eq!(body.len() as u64, size);
    assert!(entra.asked.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // A user delegation SAS (signed with a key fetched with the token) works for a plain
    // HTTP client with no credential of its own, both ways.
    let get = store
        .presign(&key, PresignMethod::Get, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(get.url.contains("skoid=") && get.url.contains(OBJECT_ID));
    let fetched = http.get(&get.url).send().await.unwrap();
    assert_eq!(fetched.status(), 200, "{:?}", fetched.text().await);
    assert_eq!(fetched.bytes().await.unwrap().len() as u64, size);

    let upload_key = ObjectKey::new("incoming/scan.tif").unwrap();
    let put = store
        .presign(&upload_key, PresignMethod::Put, Duration::from_secs(600))
        .await
        .unwrap();
    let mut request = http.put(&put.url).body(b"scanned".to_vec());
    for (name, value) in &put.headers {
        request = request.header(name, value);
    }
    let uploaded = request.send().await.unwrap();
    assert_eq!(uploaded.status(), 201, "{:?}", uploaded.text().await);
    assert_eq!(store.get_bytes(&upload_key).await.unwrap(), b"scanned");

    // The read SAS does not write; a tampered one is refused.
    let refused = http
        .put(&get.url)
        .header("x-ms-blob-type", "BlockBlob")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let tampered = get.url.replace("sp=r", "sp=rw");
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);

    // A SAS may not outlive the 7 days a user delegation key can live.
    let err = store
        .presign(&key, PresignMethod::Get, Duration::from_secs(8 * 24 * 3600))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    // Without a token the same endpoint refuses the store.
    let anonymous = AzureBlobStore::builder("entra")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::Sas(SecretString::from(
            "sv=2025-11-05".to_owned(),
        )))
        .http_client(std::sync::Arc::new(http))
        .build()
        .unwrap();
    let err = anonymous.head(&key).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Auth | ErrorKind::Forbidden),
        "{err}"
    );
}

/// Answers a try with a bare `503 Service Unavailable` (an outage in front of the
/// service: no Blob Storage error code) when the plan says so; a per-try policy of the
/// client's pipeline, so the request never reaches Azurite.
#[derive(Debug, Default)]
struct PlannedFaults(moodbridge_core::testing::FaultPlan);

#[async_trait::async_trait]
impl azure_core::http::policies::Policy for PlannedFaults {
    async fn send(
        &self,
        ctx: &azure_core::http::Context,
        request: &mut azure_core::http::Request,
        next: &[std::sync::Arc<dyn azure_core::http::policies::Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        if self.0.should_fail() {
            return Ok(azure_core::http::AsyncRawResponse::from_bytes(
                azure_core::http::StatusCode::ServiceUnavailable,
                azure_core::http::headers::Headers::new(),
                "Service Unavailable",
            ));
        }
        next[0].send(ctx, request, &next[1..]).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_blob_meets_the_resilience_contract() {
    use moodbridge_core::testing::{ResilienceCase, resilience_contract};
    let azurite = Azurite::start();
    let setup = azurite.store("resilience", BLOCK).await;
    let key = ObjectKey::new("probe.txt").unwrap();
    setup
        .put_bytes(&key, b"probe".to_vec(), PutOptions::new())
        .await
        .unwrap();
    let faults = std::sync::Arc::new(PlannedFaults::default());
    let case = ResilienceCase {
        id: "azure-blob:contract",
        kind: "azure-blob",
        operation: op::azure_blob::GET_BLOB_PROPERTIES,
    };
    resilience_contract(
        &case,
        &faults.0,
        async |policy| {
            AzureBlobStore::builder("resilience")
                .id(case.id)
                .endpoint(&azurite.endpoint)
                .credentials(AzureCredentials::SharedKey(Azurite::key()))
                .policy(policy)
                .per_try_policy(faults.clone())
                .build()
        },
        async |store: &AzureBlobStore| store.head(&key).await.map(drop),
    )
    .await;
}

/// A server answering every request as Blob Storage answers a failed authentication,
/// but repeating the request's URL (a SAS signature in its query) and `Authorization`
/// header in its message, raw and base64-encoded.
async fn echoing_server() -> (String, tokio::task::JoinHandle<()>) {
    use base64::Engine as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/devstoreaccount1", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let uri = req.uri().to_string();
        let b64 = base64::engine::general_purpose::STANDARD;
        let echoed = format!(
            "uri {uri} authorization {auth} base64 {} {}",
            b64.encode(&uri),
            b64.encode(&auth)
        );
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request. {echoed}</Message><AuthenticationErrorDetail>Signature did not match. String to sign used was GET {uri}</AuthenticationErrorDetail></Error>"
        )
        .replace('&', "&amp;");
        axum::response::Response::builder()
            .status(403)
            .header("content-type", "application/xml")
            .header("x-ms-error-code", "AuthenticationFailed")
            .body(axum::body::Body::from(xml))
            .unwrap()
    });
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (endpoint, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_echoes_the_request_leaks_no_credential() {
    use base64::Engine as _;
    let (endpoint, server) = echoing_server().await;
    let signature = "CANARYsigK7MDENGbPxRfiCY+Ab/cd=";
    let encoded_signature = "CANARYsigK7MDENGbPxRfiCY%2BAb%2Fcd%3D";
    let sas =
        format!("sv=2025-11-05&ss=b&srt=sco&sp=rl&se=2099-01-01T00:00:00Z&sig={encoded_signature}");
    let shared = SharedKey {
        account: DEV_ACCOUNT.into(),
        key: SecretString::from(DEV_ACCOUNT_KEY.to_owned()),
    };
    for credentials in [
        AzureCredentials::Sas(SecretString::from(sas.clone())),
        AzureCredentials::SharedKey(shared.clone()),
    ] {
        let store = AzureBlobStore::builder("echoes")
            .endpoint(&endpoint)
            .credentials(credentials)
            .max_attempts(1)
            .build()
            .unwrap();
        let key = ObjectKey::new("a.pdf").unwrap();
        let errors = [
            store
                .put_bytes(&key, b"x".to_vec(), PutOptions::new())
                .await
                .unwrap_err(),
            store.get_bytes(&key).await.unwrap_err(),
            store.list_keys("").await.unwrap_err(),
            store.delete(&key).await.unwrap_err(),
        ];
        for err in errors {
            assert!(
                matches!(err.kind(), ErrorKind::Auth | ErrorKind::Forbidden),
                "{err}"
            );
            let shown = moodbridge_core::testing::everything_shown(&err);
            assert!(shown.contains("AuthenticationFailed"), "{shown}");
            let b64 = base64::engine::general_purpose::STANDARD;
            for form in [
                signature.to_owned(),
                encoded_signature.to_owned(),
                b64.encode(&sas),
                DEV_ACCOUNT_KEY.to_owned(),
            ] {
                assert!(!shown.contains(&form), "{form:?} leaked: {shown}");
            }
            // What a Shared Key request carries: `SharedKey account:signature`.
            assert!(!shown.contains("SharedKey devstoreaccount1:"), "{shown}");
        }
    }
    server.abort();
}
