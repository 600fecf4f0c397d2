//! What the Azure tests and benches share: an Azurite blob service of their own on
//! 127.0.0.1 (in-memory, killed when dropped), over http, or over https with Entra ID
//! (OAuth) accepted.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use connector_azure::auth::{DEV_ACCOUNT, DEV_ACCOUNT_KEY, SharedKey};
use connector_azure::blob::{AzureBlobStore, AzureCredentials};
use secrecy::SecretString;

/// Azurite's blob service (npm, installed by scripts/test.sh) on a free port.
pub struct Azurite {
    child: Child,
    pub endpoint: String,
    /// With `start_https`: the self-signed certificate it serves (PEM), and the
    /// directory holding it.
    pub cert_pem: Option<Vec<u8>>,
    _tls_dir: Option<tempfile::TempDir>,
}

impl Azurite {
    pub fn start() -> Azurite {
        Self::launch("blob", None)
    }

    /// Azurite's queue service on a free port.
    pub fn start_queue() -> Azurite {
        Self::launch("queue", None)
    }

    /// Azurite on https (a throwaway self-signed certificate for 127.0.0.1, made with
    /// the `openssl` CLI) with `--oauth basic`: bearer tokens are accepted when their
    /// issuer, audience and times are right (their signature is not checked), and Get
    /// User Delegation Key works.
    pub fn start_https() -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
            .args(["-addext", "subjectAltName=IP:127.0.0.1"])
            // An end-entity certificate (webpki refuses a CA certificate as a server's).
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("the openssl CLI is needed for the https Azurite (apt-get install openssl)");
        assert!(status.success(), "openssl could not make a certificate");
        let tls = [
            "--cert".to_owned(),
            cert.to_str().unwrap().to_owned(),
            "--key".to_owned(),
            key.to_str().unwrap().to_owned(),
            "--oauth".to_owned(),
            "basic".to_owned(),
        ];
        let mut azurite = Self::launch("blob", Some(&tls));
        azurite.cert_pem = Some(std::fs::read(&cert).unwrap());
        azurite._tls_dir = Some(dir);
        azurite
    }

    fn launch(service: &str, tls: Option<&[String]>) -> Azurite {
        let bin = std::env::var(format!(
            "MOODBRIDGE_AZURITE_{}",
            service.to_ascii_uppercase()
        ))
        .unwrap_or_else(|_| {
            format!(
                "{}/tests/azurite/node_modules/.bin/azurite-{service}",
                moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR")).display()
            )
        });
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} not found: run ./scripts/test.sh (it installs Azurite with npm ci)"
        );
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new(&bin)
                .args([
                    &format!("--{service}Host"),
                    "127.0.0.1",
                    &format!("--{service}Port"),
                    &port.to_string(),
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                    "--silent",
                ])
                .args(tls.unwrap_or_default())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let scheme = if tls.is_some() { "https" } else { "http" };
                    return Azurite {
                        child,
                        endpoint: format!("{scheme}://127.0.0.1:{port}/{DEV_ACCOUNT}"),
                        cert_pem: None,
                        _tls_dir: None,
                    };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("Azurite did not start");
    }

    pub fn key() -> SharedKey {
        SharedKey {
            account: DEV_ACCOUNT.into(),
            key: SecretString::from(DEV_ACCOUNT_KEY.to_owned()),
        }
    }

    pub async fn store(&self, container: &str, block: u64) -> AzureBlobStore {
        let store = AzureBlobStore::builder(container)
            .endpoint(&self.endpoint)
            .credentials(AzureCredentials::SharedKey(Self::key()))
            .block_size(block)
            .build()
            .unwrap();
        store.create_container().await.unwrap();
        store
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
