//! What the Snowflake tests share: fakesnow's server on a loopback port of its own.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use connector_snowflake::SnowflakeConfig;
use secrecy::SecretString;

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
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let fakesnow = moodbridge_core::testing::venv_python().with_file_name("fakesnow");
        let child = Command::new(&fakesnow)
            .args(["-s", "--host", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{} (run ./scripts/test.sh once to install it): {e}",
                    fakesnow.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "fakesnow did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        FakeSnow {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
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
