//! What the S3 tests share: a moto server of their own on 127.0.0.1 (killed when
//! dropped), stores pointed at it, and a fault-injecting proxy.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use connector_aws::s3::{S3Builder, S3ObjectStore};
use secrecy::SecretString;

/// A moto S3 server (PyPI `moto[server]`, installed by scripts/test.sh) on a free port.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

fn moto_binary() -> String {
    if let Ok(path) = std::env::var("MOODBRIDGE_MOTO_SERVER") {
        return path;
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let venv = format!("{home}/.cache/moodbridge/venv/bin/moto_server");
    if std::path::Path::new(&venv).exists() {
        return venv;
    }
    panic!(
        "moto_server not found: run ./scripts/test.sh (it installs moto in a venv), or set MOODBRIDGE_MOTO_SERVER to its path"
    );
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Moto {
    pub fn start() -> Moto {
        let binary = moto_binary();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new(&binary)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                // moto spools every value above 5 MiB to a temporary file; held in memory
                // instead, the gibibyte tests do not depend on free disk space.
                .env("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", (4u64 << 30).to_string())
                .stdout(Stdio::null())
                .stderr(if std::env::var_os("MOODBRIDGE_MOTO_LOG").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .unwrap_or_else(|e| panic!("start {binary}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!("moto exited early ({status}); retrying on another port");
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}"),
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto did not start");
    }

    /// A store builder for `bucket` on this server (static test keys, path style).
    pub fn builder(&self, bucket: &str) -> S3Builder {
        builder_at(&self.endpoint, bucket)
    }

    /// A store on a fresh bucket, with parts of `part_size` bytes.
    pub async fn store(&self, bucket: &str, part_size: u64) -> S3ObjectStore {
        let store = self
            .builder(bucket)
            .part_size(part_size)
            .build()
            .await
            .unwrap();
        store.create_bucket().await.unwrap();
        store
    }
}

pub fn builder_at(endpoint: &str, bucket: &str) -> S3Builder {
    S3ObjectStore::builder(bucket)
        .endpoint(endpoint)
        .path_style(true)
        .region("us-east-1")
        .static_credentials(
            "AKIDMOODBRIDGETEST",
            SecretString::from("moto-accepts-any-secret".to_owned()),
        )
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy does with a request: `None` forwards it; `Some((status, code))` answers
/// with that S3 error instead, except status 0, which forwards it with one byte of its
/// body flipped.
pub type Rule = dyn Fn(&http::Method, &str, usize) -> Option<(u16, &'static str)> + Send + Sync;

/// An HTTP proxy on 127.0.0.1 in front of moto: forwards every request, except those the
/// rule answers itself (status and S3 error code). Records each request's method, path
/// and query, and the access key id of its signature.
pub struct FaultProxy {
    pub endpoint: String,
    pub seen: Arc<Mutex<Vec<String>>>,
    pub key_ids: Arc<Mutex<Vec<String>>>,
    pub injected: Arc<AtomicUsize>,
    /// Requests whose x-amz-checksum-sha256 matched their body.
    pub checksummed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// `rule(method, path_and_query, n)` where `n` counts the requests so far that match
    /// nothing else (0-based, all requests).
    pub async fn start(upstream: &str, rule: Box<Rule>) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let key_ids = Arc::new(Mutex::new(Vec::new()));
        let injected = Arc::new(AtomicUsize::new(0));
        let checksummed = Arc::new(AtomicUsize::new(0));
        let counter = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let client = reqwest::Client::new();
        let rule: Arc<Rule> = Arc::from(rule);
        let (seen2, keys2, injected2, checked2) = (
            seen.clone(),
            key_ids.clone(),
            injected.clone(),
            checksummed.clone(),
        );
        let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
            let (client, upstream, rule) = (client.clone(), upstream.clone(), rule.clone());
            let (seen, key_ids, injected, counter) = (seen2.clone(), keys2.clone(), injected2.clone(), counter.clone());
            let checksummed = checked2.clone();
            async move {
                let method = req.method().clone();
                let path = req.uri().path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
                if let Some(auth) = req.headers().get("authorization").and_then(|v| v.to_str().ok())
                    && let Some(rest) = auth.split("Credential=").nth(1)
                {
                    key_ids.lock().unwrap().push(rest.split('/').next().unwrap_or_default().to_owned());
                }
                seen.lock().unwrap().push(format!("{method} {path}"));
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let headers = req.headers().clone();
                let body = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap();
                let mut body = body;
                let verdict = rule(&method, &path, n);
                if let Some((0, _)) = verdict {
                    // Status 0: flip one byte of the body and forward it (in-transit corruption).
                    injected.fetch_add(1, Ordering::SeqCst);
                    let mut bytes = body.to_vec();
                    let middle = bytes.len() / 2;
                    if let Some(b) = bytes.get_mut(middle) {
                        *b ^= 0x01;
                    }
                    body = bytes.into();
                } else if let Some((status, code)) = verdict {
                    injected.fetch_add(1, Ordering::SeqCst);
                    let xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message><RequestId>test</RequestId></Error>");
                    return axum::response::Response::builder()
                        .status(status)
                        .header("content-type", "application/xml")
                        .body(axum::body::Body::from(xml))
                        .unwrap();
                }
                // moto (5.2) stores x-amz-checksum-* without checking it; S3 checks it and
                // answers 400 BadDigest on a mismatch. The proxy does what S3 does, so a
                // wrong checksum from the client, or bytes changed in transit, are caught.
                if let Some(claimed) = headers.get("x-amz-checksum-sha256").and_then(|v| v.to_str().ok()) {
                    use base64::Engine;
                    use sha2::Digest;
                    let actual = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body));
                    if actual != claimed {
                        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>BadDigest</Code><Message>The SHA256 you specified did not match the calculated checksum.</Message></Error>";
                        return axum::response::Response::builder()
                            .status(400)
                            .header("content-type", "application/xml")
                            .body(axum::body::Body::from(xml))
                            .unwrap();
                    }
                    checksummed.fetch_add(1, Ordering::SeqCst);
                }
                let mut forward = client.request(method, format!("{upstream}{path}"));
                for (name, value) in &headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name, value);
                    }
                }
                let answer = forward.body(body).send().await.unwrap();
                let mut response = axum::response::Response::builder().status(answer.status().as_u16());
                for (name, value) in answer.headers() {
                    if name != "transfer-encoding" && name != "content-length" {
                        response = response.header(name, value);
                    }
                }
                response.body(axum::body::Body::from(answer.bytes().await.unwrap())).unwrap()
            }
        });
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FaultProxy {
            endpoint,
            seen,
            key_ids,
            injected,
            checksummed,
            task,
        }
    }

    pub fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Multipart uploads still open in `bucket`.
pub async fn open_uploads(store: &S3ObjectStore) -> Vec<String> {
    let out = store
        .client()
        .list_multipart_uploads()
        .bucket(store.bucket())
        .send()
        .await
        .unwrap();
    out.uploads
        .unwrap_or_default()
        .into_iter()
        .filter_map(|u| u.key)
        .collect()
}

/// Waits (up to 10 s) for every multipart upload of the bucket to be aborted.
pub async fn wait_no_uploads(store: &S3ObjectStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open = open_uploads(store).await;
        if open.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "multipart uploads left behind: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
