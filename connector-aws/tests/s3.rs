//! S3 against moto (a real S3 API server, started per test on 127.0.0.1): the shared
//! object-store contract plus what is particular to S3 — multipart uploads aborted on
//! failure and cancellation, retries of injected faults, presigned URLs used by a plain
//! HTTP client, encryption and storage class, credentials from a CredentialStore.
//!
//! moto (5.2) stores the `x-amz-checksum-sha256` of uploads without checking it, where S3
//! checks it and answers `400 BadDigest`; the fault proxy of these tests checks it as S3
//! does, so corruption in transit is tested through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use connector_aws::s3::{Encryption, MIN_PART_SIZE, S3Credentials, S3ObjectStore};
use moodbridge_core::storage::{ObjectKey, ObjectStore, ObjectStoreExt, PresignMethod, PutOptions};
use moodbridge_core::testing::{
    ObjectStoreContract, cancel_midway, object_store_contract, object_store_round_trip,
    pattern_sha256, pattern_stream,
};
use moodbridge_core::{CredentialStore, ErrorKind, PlatformIntegration};
use secrecy::SecretString;
use support::{FaultProxy, Moto, builder_at, open_uploads, wait_no_uploads};

const PART: u64 = MIN_PART_SIZE;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_meets_the_contract() {
    let moto = Moto::start();
    let store = moto.store("contract", PART).await;
    object_store_contract(
        &store,
        "suite",
        &ObjectStoreContract {
            part_size: PART,
            list_keys: 1001,
        },
    )
    .await;
    wait_no_uploads(&store).await;
    assert_eq!(
        store.health_check().await.status,
        moodbridge_core::integration::HealthStatus::Up
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_upload_leaves_no_object_and_no_parts() {
    let moto = Moto::start();
    let store = moto.store("cancel", PART).await;
    let key = ObjectKey::new("scans/cancelled.tiff").unwrap();
    cancel_midway(&store, &key, PART).await;
    wait_no_uploads(&store).await;
    assert_eq!(
        store.head(&key).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_part_failures_are_retried() {
    let moto = Moto::start();
    let direct = moto.store("faults", PART).await;
    // The second part's first attempt gets 503 SlowDown, another part's a 500.
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Box::new(|method, path, _| {
            let first_try = |n: &str| {
                path.contains(&format!("partNumber={n}&"))
                    || path.ends_with(&format!("partNumber={n}"))
            };
            static SEEN2: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            static SEEN3: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if method == http::Method::PUT
                && first_try("2")
                && !SEEN2.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return Some((503, "SlowDown"));
            }
            if method == http::Method::PUT
                && first_try("3")
                && !SEEN3.swap(true, std::sync::atomic::Ordering::SeqCst)
            {
                return Some((500, "InternalError"));
            }
            None
        }),
    )
    .await;
    let store = builder_at(&proxy.endpoint, "faults")
        .part_size(PART)
        .build()
        .await
        .unwrap();
    let key = ObjectKey::new("retried.bin").unwrap();
    let size = 3 * PART + 17;
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
        proxy.injected.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "both faults were hit: {:?}",
        proxy.requests()
    );
    let part_puts = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT") && r.contains("partNumber="))
        .count();
    assert_eq!(part_puts, 4 + 2, "4 parts, 2 of them sent twice");
    // What landed is the whole object.
    let got = direct.get_bytes(&key).await.unwrap();
    assert_eq!(moodbridge_core::storage::sha256(&got), put.sha256);
    wait_no_uploads(&direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_part_failures_abort_the_upload() {
    let moto = Moto::start();
    let direct = moto.store("failing", PART).await;
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Box::new(|method, path, _| {
            (method == http::Method::PUT && path.contains("partNumber=2"))
                .then_some((503, "ServiceUnavailable"))
        }),
    )
    .await;
    let store = builder_at(&proxy.endpoint, "failing")
        .part_size(PART)
        .max_attempts(2)
        .build()
        .await
        .unwrap();
    let key = ObjectKey::new("never.bin").unwrap();
    let err = store
        .put(
            &key,
            pattern_stream(2 * PART + 1, 9, 1 << 20),
            PutOptions::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.status(),
        moodbridge_core::ErrorStatus::Persistent,
        "a 503 is temporary, retried by the policy until it gave up: {err}"
    );
    assert_eq!(err.operation(), Some("s3.upload_part"), "{err:?}");
    assert!(err.to_string().contains("UploadPart"), "{err}");
    assert_eq!(err.context_value("part"), Some("2"), "{err:?}");
    assert_eq!(
        proxy.injected.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "two attempts of part 2"
    );
    assert!(
        proxy
            .requests()
            .iter()
            .any(|r| r.starts_with("DELETE") && r.contains("uploadId=")),
        "the upload was aborted: {:?}",
        proxy.requests()
    );
    assert!(
        open_uploads(&direct).await.is_empty(),
        "no parts left behind"
    );
    assert_eq!(
        direct.head(&key).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_corrupted_in_transit_are_refused() {
    let moto = Moto::start();
    let direct = moto.store("corrupt", PART).await;
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Box::new(|method, path, _| {
            (method == http::Method::PUT && !path.ends_with("/corrupt")).then_some((0, ""))
        }),
    )
    .await;
    let store = builder_at(&proxy.endpoint, "corrupt")
        .part_size(PART)
        .max_attempts(1)
        .build()
        .await
        .unwrap();
    for (name, size) in [("small.pdf", 1000u64), ("large.pdf", 2 * PART + 5)] {
        let key = ObjectKey::new(name).unwrap();
        let err = store
            .put(&key, pattern_stream(size, 4, 1 << 20), PutOptions::new())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Integrity, "{name}: {err}");
        assert_eq!(
            direct.head(&key).await.unwrap_err().kind(),
            ErrorKind::NotFound,
            "nothing landed for {name}"
        );
    }
    assert!(proxy.injected.load(std::sync::atomic::Ordering::SeqCst) >= 2);
    wait_no_uploads(&direct).await;
    // Uncorrupted, the same uploads carry checksums that match.
    let clean = FaultProxy::start(&moto.endpoint, Box::new(|_, _, _| None)).await;
    let store = builder_at(&clean.endpoint, "corrupt")
        .part_size(PART)
        .build()
        .await
        .unwrap();
    for (name, size) in [("small.pdf", 1000u64), ("large.pdf", 2 * PART + 5)] {
        store
            .put(
                &ObjectKey::new(name).unwrap(),
                pattern_stream(size, 4, 1 << 20),
                PutOptions::new(),
            )
            .await
            .unwrap();
    }
    assert_eq!(
        clean.checksummed.load(std::sync::atomic::Ordering::SeqCst),
        1 + 3,
        "one PutObject and three UploadParts, each with a matching SHA-256"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_map_to_core_kinds() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Box::new(|_, path, _| {
            if path.contains("denied") {
                Some((403, "AccessDenied"))
            } else if path.contains("throttled") {
                Some((503, "SlowDown"))
            } else if path.contains("badsig") {
                Some((403, "SignatureDoesNotMatch"))
            } else {
                None
            }
        }),
    )
    .await;
    let store = builder_at(&proxy.endpoint, "kinds")
        .max_attempts(1)
        .build()
        .await
        .unwrap();
    store.create_bucket().await.unwrap();
    for (key, kind) in [
        ("denied.pdf", ErrorKind::Forbidden),
        (
            "throttled.pdf",
            ErrorKind::RateLimited { retry_after: None },
        ),
        ("badsig.pdf", ErrorKind::Auth),
    ] {
        let err = store
            .put_bytes(
                &ObjectKey::new(key).unwrap(),
                b"x".to_vec(),
                PutOptions::new(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{key}: {err}");
        assert!(
            err.to_string().contains(key),
            "the error names the key: {err}"
        );
        assert_eq!(
            err.platform(),
            Some(store.id()),
            "platform is the integration id"
        );
        assert_eq!(err.connector(), Some("s3"));
    }
    let missing_bucket = builder_at(&moto.endpoint, "no-such-bucket")
        .build()
        .await
        .unwrap();
    let err = missing_bucket
        .head(&ObjectKey::new("x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = missing_bucket
        .get_bytes(&ObjectKey::new("x").unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_work_with_a_plain_http_client() {
    let moto = Moto::start();
    let store = moto.store("presign", PART).await;
    let key = ObjectKey::new("shared/retainer agreement+v2.pdf").unwrap();
    let http = reqwest::Client::new();

    let put = store
        .presign(&key, PresignMethod::Put, Duration::from_secs(300))
        .await
        .unwrap();
    assert!(
        !format!("{put:?}").contains("Signature="),
        "Debug hides the signature: {put:?}"
    );
    let mut request = http.put(&put.url).body("uploaded without credentials");
    for (name, value) in &put.headers {
        request = request.header(name, value);
    }
    let answer = request.send().await.unwrap();
    assert!(
        answer.status().is_success(),
        "presigned PUT: {} {}",
        answer.status(),
        answer.text().await.unwrap()
    );
    assert_eq!(
        store.get_bytes(&key).await.unwrap(),
        b"uploaded without credentials"
    );

    let get = store
        .presign(&key, PresignMethod::Get, Duration::from_secs(300))
        .await
        .unwrap();
    let answer = http.get(&get.url).send().await.unwrap();
    assert!(answer.status().is_success());
    assert_eq!(
        answer.bytes().await.unwrap(),
        b"uploaded without credentials".as_slice()
    );

    let err = store
        .presign(&key, PresignMethod::Get, Duration::from_secs(8 * 24 * 3600))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_objects_are_copied_part_by_part() {
    let moto = Moto::start();
    let store = moto
        .builder("copies")
        .part_size(PART)
        .multipart_copy_threshold(PART)
        .build()
        .await
        .unwrap();
    store.create_bucket().await.unwrap();
    let from = ObjectKey::new("source scan.tiff").unwrap();
    let to = ObjectKey::new("copies/scan+copy.tiff").unwrap();
    let size = 2 * PART + 3;
    let put = store
        .put(
            &from,
            pattern_stream(size, 8, 1 << 20),
            PutOptions::new()
                .content_type("image/tiff")
                .metadata("case_id", "500A"),
        )
        .await
        .unwrap();
    store.copy(&from, &to).await.unwrap();
    let head = store
        .client()
        .head_object()
        .bucket("copies")
        .key(to.as_str())
        .part_number(1)
        .send()
        .await
        .unwrap();
    assert_eq!(head.parts_count, Some(3), "copied in three parts");
    let meta = store.head(&to).await.unwrap();
    assert_eq!(
        (meta.size, meta.content_type.as_deref()),
        (size, Some("image/tiff"))
    );
    assert_eq!(
        meta.metadata.get("case_id").map(String::as_str),
        Some("500A")
    );
    let copy = store.get_bytes(&to).await.unwrap();
    assert_eq!(moodbridge_core::storage::sha256(&copy), put.sha256);
    wait_no_uploads(&store).await;
}

#[tokio::test]
async fn invalid_settings_are_rejected_before_any_request() {
    for bucket in ["Invalid_Bucket", "ab", "bad..name"] {
        let err = builder_at("http://127.0.0.1:9", bucket)
            .build()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{bucket}: {err}");
        assert!(err.to_string().contains(bucket));
    }
    let err = builder_at("http://127.0.0.1:9", "fine")
        .part_size(1024)
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("part size"), "{err}");
    let err = builder_at("127.0.0.1:9", "fine").build().await.unwrap_err();
    assert!(err.to_string().contains("endpoint"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_and_storage_class_are_applied() {
    let moto = Moto::start();
    for (bucket, encryption, expected) in [
        ("sse-s3", Encryption::S3Managed, "AES256"),
        (
            "sse-kms",
            Encryption::Kms {
                key_id: Some("arn:aws:kms:us-east-1:123456789012:key/moodbridge-test".into()),
            },
            "aws:kms",
        ),
    ] {
        let store = moto
            .builder(bucket)
            .part_size(PART)
            .encryption(encryption.clone())
            .storage_class("STANDARD_IA")
            .build()
            .await
            .unwrap();
        store.create_bucket().await.unwrap();
        for (name, size) in [("small", 10u64), ("multipart", PART + 1)] {
            let key = ObjectKey::new(name).unwrap();
            store
                .put(&key, pattern_stream(size, 1, 1 << 20), PutOptions::new())
                .await
                .unwrap();
            let head = store
                .client()
                .head_object()
                .bucket(bucket)
                .key(name)
                .send()
                .await
                .unwrap();
            assert_eq!(
                head.server_side_encryption.as_ref().map(|s| s.as_str()),
                Some(expected),
                "{bucket}/{name}"
            );
            if let Encryption::Kms { key_id } = &encryption {
                assert_eq!(
                    head.ssekms_key_id.as_deref(),
                    key_id.as_deref(),
                    "{bucket}/{name}"
                );
            }
            assert_eq!(
                head.storage_class.as_ref().map(|s| s.as_str()),
                Some("STANDARD_IA"),
                "{bucket}/{name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_a_credential_store_and_rotate() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(&moto.endpoint, Box::new(|_, _, _| None)).await;
    let secrets = Arc::new(moodbridge_auth::store::MemoryStore::new());
    secrets
        .put(
            "aws/test/access_key_id",
            SecretString::from("AKIDFIRST".to_owned()),
        )
        .await
        .unwrap();
    secrets
        .put(
            "aws/test/secret_access_key",
            SecretString::from("first-secret".to_owned()),
        )
        .await
        .unwrap();
    let store = S3ObjectStore::builder("rotating")
        .endpoint(&proxy.endpoint)
        .path_style(true)
        .region("us-east-1")
        .credentials(S3Credentials::Store {
            store: secrets.clone(),
            prefix: "aws/test".into(),
            refresh: Duration::from_secs(1),
        })
        .build()
        .await
        .unwrap();
    store.create_bucket().await.unwrap();
    store
        .put_bytes(
            &ObjectKey::new("a").unwrap(),
            b"1".to_vec(),
            PutOptions::new(),
        )
        .await
        .unwrap();
    assert!(
        proxy
            .key_ids
            .lock()
            .unwrap()
            .iter()
            .all(|k| k == "AKIDFIRST")
    );
    secrets
        .put(
            "aws/test/access_key_id",
            SecretString::from("AKIDSECOND".to_owned()),
        )
        .await
        .unwrap();
    secrets
        .put(
            "aws/test/secret_access_key",
            SecretString::from("second-secret".to_owned()),
        )
        .await
        .unwrap();
    // The SDK refreshes credentials some time before they expire; wait past the expiry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store
        .put_bytes(
            &ObjectKey::new("b").unwrap(),
            b"2".to_vec(),
            PutOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        proxy.key_ids.lock().unwrap().last().map(String::as_str),
        Some("AKIDSECOND"),
        "rotated keys are used"
    );
    let shown = format!("{store:?}");
    assert!(!shown.contains("secret"), "{shown}");
}

/// 1 GiB streamed up (multipart, parallel parts) and down (parallel ranges) with SHA-256
/// compared end to end; MOODBRIDGE_TEST_BIG_OBJECT_MIB lowers the size for a quick run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gibibyte_round_trip() {
    let mib: u64 = std::env::var("MOODBRIDGE_TEST_BIG_OBJECT_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let moto = Moto::start();
    let store = moto.builder("big").build().await.unwrap();
    store.create_bucket().await.unwrap();
    let key = ObjectKey::new("scans/big scan.tiff").unwrap();
    object_store_round_trip(&store, &key, mib << 20, 42).await;
    store.delete(&key).await.unwrap();
    wait_no_uploads(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_meets_the_resilience_contract() {
    use moodbridge_core::observe::op;
    use moodbridge_core::testing::{FaultPlan, ResilienceCase, resilience_contract};
    let moto = Moto::start();
    let setup = moto.store("resilience", MIN_PART_SIZE).await;
    let key = ObjectKey::new("probe.txt").unwrap();
    setup
        .put_bytes(&key, b"probe".to_vec(), PutOptions::new())
        .await
        .unwrap();
    // The proxy answers 503 `ServiceUnavailable` (S3's error body) when the plan says so.
    let plan = Arc::new(FaultPlan::default());
    let rule_plan = plan.clone();
    let proxy = FaultProxy::start(
        &moto.endpoint,
        Box::new(move |_, _, _| {
            rule_plan
                .should_fail()
                .then_some((503, "ServiceUnavailable"))
        }),
    )
    .await;
    let case = ResilienceCase {
        id: "s3:contract",
        kind: "s3",
        operation: op::s3::HEAD_OBJECT,
    };
    resilience_contract(
        &case,
        plan.as_ref(),
        async |policy| {
            builder_at(&proxy.endpoint, "resilience")
                .id(case.id)
                .policy(policy)
                .build()
                .await
        },
        async |store: &S3ObjectStore| store.head(&key).await.map(drop),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_echoes_the_request_leaks_no_credential() {
    use base64::Engine as _;
    // A server that answers every request as S3 answers a signature mismatch, but also
    // repeats the request line, the Authorization header and the session token in its
    // message, raw and base64-encoded.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|req: axum::extract::Request| async move {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let token = header("x-amz-security-token");
        let echoed = format!(
            "uri {} authorization {} token {token} base64 {}",
            req.uri(),
            header("authorization"),
            base64::engine::general_purpose::STANDARD.encode(&token),
        );
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided. {echoed}</Message><CanonicalRequest>PUT\n{}\nx-amz-security-token:{token}\n</CanonicalRequest><RequestId>echo</RequestId></Error>",
            req.uri()
        );
        axum::response::Response::builder()
            .status(403)
            .header("content-type", "application/xml")
            .body(axum::body::Body::from(xml.replace('&', "&amp;")))
            .unwrap()
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
    let token = "FwoGZXIvYXdzEBYaDCANARYSESSIONTOKEN/+=";
    let store = S3ObjectStore::builder("echoes")
        .endpoint(&endpoint)
        .path_style(true)
        .region("us-east-1")
        .max_attempts(1)
        .credentials(S3Credentials::Static {
            access_key_id: "AKIDCANARY".into(),
            secret_access_key: SecretString::from(secret.to_owned()),
            session_token: Some(SecretString::from(token.to_owned())),
        })
        .build()
        .await
        .unwrap();
    let forms = |s: &str| {
        let b64 = base64::engine::general_purpose::STANDARD;
        vec![
            s.to_owned(),
            url_encoded(s),
            b64.encode(s),
            b64.encode(s).trim_end_matches('=').to_owned(),
        ]
    };
    for err in [
        store
            .put_bytes(
                &ObjectKey::new("a.pdf").unwrap(),
                b"x".to_vec(),
                PutOptions::new(),
            )
            .await
            .unwrap_err(),
        store
            .get_bytes(&ObjectKey::new("a.pdf").unwrap())
            .await
            .unwrap_err(),
        store.list_keys("").await.unwrap_err(),
    ] {
        let shown = moodbridge_core::testing::everything_shown(&err);
        if err.to_string().contains("HeadObject") {
            // A HEAD answer has no body: the status is all there is.
            assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
        } else {
            assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
            assert!(
                shown.contains("SignatureDoesNotMatch") && shown.contains("does not match"),
                "the error still says what went wrong: {shown}"
            );
        }
        for form in forms(token).into_iter().chain(forms(secret)) {
            assert!(!shown.contains(&form), "{form:?} leaked: {shown}");
        }
        assert!(
            !shown
                .replace("Signature=[redacted]", "")
                .contains("Signature="),
            "the signature leaked: {shown}"
        );
    }
    server.abort();
}

fn url_encoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
