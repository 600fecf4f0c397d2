//! What the Snowflake tests share: fakesnow's and moto's servers, each on a loopback
//! port of its own.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use connector_snowflake::SnowflakeConfig;
use secrecy::SecretString;

/// Start the test venv's `program` with `args` and a free loopback port (the last
/// argument), trying another port if it was taken meanwhile; the child and its URL.
fn serve(program: &str, args: &[&str]) -> (Child, String) {
    serve_binary(
        &moodbridge_core::testing::venv_python().with_file_name(program),
        args,
    )
}

/// [`serve`] for a binary given by its path.
fn serve_binary(binary: &std::path::Path, args: &[&str]) -> (Child, String) {
    let program = binary.display();
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(binary)
            .args(args)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} (run ./scripts/test.sh once to install it): {e}",
                    binary.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return (child, format!("http://127.0.0.1:{port}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("{program} did not start");
}

/// fakesnow's server on a free loopback port, killed when dropped.
pub struct FakeSnow {
    child: Child,
    pub url: String,
}

impl Drop for FakeSnow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl FakeSnow {
    pub fn start() -> FakeSnow {
        let (child, url) = serve("fakesnow", &["-s", "--host", "127.0.0.1", "-p"]);
        FakeSnow { child, url }
    }

    /// The `snowflake` integration `settings` (a TOML `[integration.settings]` body,
    /// without the account, user, password and URL, which are added) describe, built
    /// through a registry with the password in a credential store.
    pub async fn build(&self, settings: &str) -> moodbridge_core::registry::Built {
        use std::sync::Arc;
        let config = moodbridge_core::SdkConfig::from_toml(&format!(
            "[[integration]]\nid = \"snowflake:warehouse\"\nkind = \"snowflake\"\n\
             [integration.settings]\naccount = \"acme-test\"\nuser = \"LOADER\"\n\
             password = \"secret:snowflake/loader-password\"\nurl = \"{}\"\n{settings}",
            self.url
        ))
        .unwrap();
        let store = Arc::new(moodbridge_auth::store::MemoryStore::new());
        moodbridge_core::credential::CredentialStore::put(
            store.as_ref(),
            "snowflake/loader-password",
            SecretString::from("fakesnow-password-7e2"),
        )
        .await
        .unwrap();
        let mut registry = moodbridge_core::Registry::new();
        registry
            .register(Arc::new(connector_snowflake::SnowflakeFactory))
            .unwrap();
        registry
            .build_one(&config.integrations[0], Some(store))
            .await
            .unwrap()
    }

    /// A password login to it, database CASES, schema PUBLIC.
    pub fn config(&self) -> SnowflakeConfig {
        SnowflakeConfig::new(
            "acme-test",
            "LOADER",
            SecretString::from("fakesnow-password-7e2"),
        )
        .url(&self.url)
        .database("CASES")
        .schema("PUBLIC")
    }
}

/// A moto S3 server (PyPI `moto[server]`, in the test venv) on a free loopback port,
/// killed when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    pub fn start() -> Moto {
        let (child, endpoint) = serve("moto_server", &["-H", "127.0.0.1", "-p"]);
        Moto { child, endpoint }
    }

    /// Create `bucket` (static test keys, path style).
    pub async fn create_bucket(&self, bucket: &str) {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "test",
            ))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
            .create_bucket()
            .bucket(bucket)
            .send()
            .await
            .unwrap();
    }
}

/// Azurite's blob service (npm, installed by scripts/test.sh under connector-azure) on a
/// free loopback port, in memory, killed when dropped.
pub struct Azurite {
    child: Child,
    pub endpoint: String,
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Azurite {
    pub fn start() -> Azurite {
        let binary = std::env::var("MOODBRIDGE_AZURITE_BLOB").map_or_else(
            |_| {
                moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
                    .join("../connector-azure/tests/azurite/node_modules/.bin/azurite-blob")
            },
            std::path::PathBuf::from,
        );
        let (child, endpoint) = serve_binary(
            &binary,
            &[
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
            ],
        );
        Azurite { child, endpoint }
    }
}

/// `s3s-fs` (crates.io; `scripts/test.sh` installs 0.14.1): an S3 server keeping each
/// object as a plain file, `<root>/<bucket>/<key>`, on a free loopback port, killed when
/// dropped. A fakesnow stage over `file://<root>/<bucket>/` reads what it stores.
pub struct S3sFs {
    child: Child,
    pub endpoint: String,
    pub root: tempfile::TempDir,
}

impl Drop for S3sFs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3sFs {
    pub const KEY_ID: &'static str = "AKIDS3SFS";
    pub const SECRET: &'static str = "s3s-fs-test-secret";

    /// A server with the (empty) bucket `bucket`.
    pub fn start(bucket: &str) -> S3sFs {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join(bucket)).unwrap();
        let binary = std::env::var("MOODBRIDGE_S3S_FS").unwrap_or_else(|_| {
            format!(
                "{}/.cache/moodbridge/tools/bin/s3s-fs",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let root_arg = root.path().display().to_string();
        let (child, endpoint) = serve_binary(
            std::path::Path::new(&binary),
            &[
                "--access-key",
                Self::KEY_ID,
                "--secret-key",
                Self::SECRET,
                &root_arg,
                "--host",
                "127.0.0.1",
                "--port",
            ],
        );
        S3sFs {
            child,
            endpoint,
            root,
        }
    }
}
