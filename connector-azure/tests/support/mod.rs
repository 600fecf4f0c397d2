//! What the Azure tests and benches share: an Azurite blob service of their own on
//! 127.0.0.1 (in-memory, killed when dropped).
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
}

impl Azurite {
    pub fn start() -> Azurite {
        let bin = std::env::var("MOODBRIDGE_AZURITE_BLOB").unwrap_or_else(|_| {
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/azurite/node_modules/.bin/azurite-blob"
            )
            .to_owned()
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
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &port.to_string(),
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--disableTelemetry",
                    "--silent",
                ])
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
                    return Azurite {
                        child,
                        endpoint: format!("http://127.0.0.1:{port}/{DEV_ACCOUNT}"),
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
