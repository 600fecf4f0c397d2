//! A real Apache Airflow 3 on loopback for the tests: SQLite, the LocalExecutor with
//! parallelism 2, and its api-server, scheduler and dag-processor started one by one
//! (`airflow standalone` would bind its log servers to every interface), each in a
//! process group of its own that is killed when the harness is dropped.
#![allow(dead_code, clippy::unwrap_used)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use connector_etl::airflow::{AirflowClient, AirflowConfig};
use secrecy::SecretString;

/// The admin's password in the harness's Airflow.
pub const ADMIN_PASSWORD: &str = "mb-admin-8c41f0";

/// Where the Airflow venv's programs are: `MOODBRIDGE_AIRFLOW_BIN`, else the venv
/// `scripts/test.sh` installs.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MOODBRIDGE_AIRFLOW_BIN") {
        return PathBuf::from(dir);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    PathBuf::from(format!("{home}/.cache/moodbridge/venv-airflow/bin"))
}

/// Airflow, stopped when dropped.
pub struct Airflow {
    children: Vec<Child>,
    home: tempfile::TempDir,
    pub url: String,
}

impl Drop for Airflow {
    fn drop(&mut self) {
        // Each part forks workers; its whole group goes (they take seconds to stop on
        // SIGTERM, and nothing of their state is kept).
        for child in &mut self.children {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Airflow {
    /// Airflow with the DAGs of `dags` (a folder), healthy and with every DAG parsed.
    /// Tokens expire after `token_secs`.
    pub async fn start(dags: &Path, expected: &[&str], token_secs: u32) -> Airflow {
        let bin = bin_dir();
        let airflow = bin.join("airflow");
        assert!(
            airflow.exists(),
            "{} is missing: run ./scripts/test.sh once to install Airflow",
            airflow.display()
        );
        let home = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        std::fs::write(
            home.path()
                .join("simple_auth_manager_passwords.json.generated"),
            format!("{{\"admin\":\"{ADMIN_PASSWORD}\"}}"),
        )
        .unwrap();
        let secret = uuid::Uuid::new_v4().simple().to_string();
        let env: Vec<(&str, String)> = vec![
            ("AIRFLOW_HOME", home.path().display().to_string()),
            ("AIRFLOW__CORE__DAGS_FOLDER", dags.display().to_string()),
            ("AIRFLOW__CORE__LOAD_EXAMPLES", "False".into()),
            ("AIRFLOW__CORE__EXECUTOR", "LocalExecutor".into()),
            ("AIRFLOW__CORE__PARALLELISM", "2".into()),
            ("AIRFLOW__API__HOST", "127.0.0.1".into()),
            ("AIRFLOW__API__PORT", port.to_string()),
            (
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
                format!("{url}/execution/"),
            ),
            ("AIRFLOW__API_AUTH__JWT_SECRET", secret),
            (
                "AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME",
                token_secs.to_string(),
            ),
            ("AIRFLOW__API_AUTH__JWT_LEEWAY", "0".into()),
            ("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "2".into()),
            // The DAG folder is in the repository: no bytecode beside it.
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
            ("AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC", "1".into()),
        ];
        let command = |args: &[&str], log: &str| {
            let mut c = Command::new(&airflow);
            c.args(args)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(home.path().join(log)).unwrap())
                .stderr(std::fs::File::create(home.path().join(format!("{log}.err"))).unwrap())
                .process_group(0);
            c
        };
        let migrated = command(&["db", "migrate"], "migrate.log").status().unwrap();
        assert!(migrated.success(), "airflow db migrate failed");
        let mut children = Vec::new();
        for (args, log) in [
            (
                vec![
                    "api-server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--workers",
                    "1",
                ],
                "api-server.log",
            ),
            (vec!["scheduler", "--skip-serve-logs"], "scheduler.log"),
            (vec!["dag-processor"], "dag-processor.log"),
        ] {
            let args: Vec<&str> = args.iter().map(|s| s.as_ref()).collect();
            children.push(command(&args, log).spawn().unwrap());
        }
        let harness = Airflow {
            children,
            home,
            url,
        };
        harness.wait_ready(expected).await;
        harness
    }

    /// A client logged in as the admin.
    pub fn client(&self) -> AirflowClient {
        AirflowClient::new(
            AirflowConfig::password(&self.url, "admin", SecretString::from(ADMIN_PASSWORD))
                .unwrap()
                .id("airflow:test"),
        )
        .unwrap()
    }

    /// A component's log, for a failure report.
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.home.path().join(name)).unwrap_or_default()
    }

    async fn wait_ready(&self, expected: &[&str]) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let ready = match client.health().await {
                Ok(h) if h.is_healthy() => match client.dags().await {
                    Ok(dags) => expected
                        .iter()
                        .all(|id| dags.iter().any(|d| d.dag_id == *id)),
                    Err(_) => false,
                },
                _ => false,
            };
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Airflow was not ready in 120 s; api-server: {}\ndag-processor: {}",
                self.log("api-server.log.err"),
                self.log("dag-processor.log.err")
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
