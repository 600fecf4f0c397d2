//! Cross-crate behaviour of the umbrella: integrations built by kind from TOML, secrets
//! resolved from references and never shown, policies from config applied, and policy
//! layers over the contracts honouring idempotency.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use moodbridge::registry::{BuildContext, IntegrationFactory};
use moodbridge::resilience::LayerExt;
use moodbridge::{
    Capabilities, CredentialStore, Error, ErrorKind, HealthReport, HealthStatus,
    PlatformIntegration, Record, RecordBatch, RecordOutcome, Result, SdkConfig, Secret,
    SecretMetadata, SecretRef, SecretVersion, SyncSink, WriteAction, WriteMode, WriteReport,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct WarehouseSettings {
    password: SecretRef,
}

/// Counts health checks, so a test can see the platform was not called.
static HEALTH_CHECKS: AtomicU32 = AtomicU32::new(0);

/// A warehouse whose writes hang once (the first attempt times out), then succeed.
struct Warehouse {
    id: String,
    password: SecretString,
    writes: AtomicU32,
}

#[async_trait]
impl PlatformIntegration for Warehouse {
    fn id(&self) -> &str {
        &self.id
    }
    fn kind(&self) -> &str {
        "warehouse"
    }
    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none())
    }
    async fn health_check(&self) -> HealthReport {
        HEALTH_CHECKS.fetch_add(1, Ordering::SeqCst);
        HealthReport::new(HealthStatus::Up, Duration::ZERO, "ok")
    }
}

#[async_trait]
impl SyncSink for Warehouse {
    async fn write(&self, batch: &RecordBatch, _mode: &WriteMode) -> Result<WriteReport> {
        if self.writes.fetch_add(1, Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(WriteReport::new(
            (0..batch.len())
                .map(|index| RecordOutcome::ok(index, WriteAction::Created))
                .collect(),
        ))
    }
}

struct WarehouseFactory;

#[async_trait]
impl IntegrationFactory for WarehouseFactory {
    fn kind(&self) -> &'static str {
        "warehouse"
    }
    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let settings: WarehouseSettings = ctx.config.settings()?;
        let password = settings
            .password
            .resolve(ctx.credentials.as_deref())
            .await?;
        Ok(Arc::new(Warehouse {
            id: ctx.config.id.clone(),
            password,
            writes: AtomicU32::new(0),
        }))
    }
}

const CONFIG: &str = r#"
[[integration]]
id = "warehouse:main"
kind = "warehouse"
settings = { password = "secret:warehouse/main/password" }

[integration.policy]
attempt_timeout = "1s"
[integration.policy.retry]
max_attempts = 3
[integration.policy.circuit_breaker]
consecutive_failures = 7
"#;

const PASSWORD: &str = "correct-horse-battery-staple";

fn registry() -> moodbridge::Registry {
    let mut registry = moodbridge::registry();
    registry.register(Arc::new(WarehouseFactory)).unwrap();
    registry
}

/// The smallest store that satisfies the contract for this test: one secret, version 1.
/// (The real stores live in moodbridge-auth and the cloud connectors.)
struct OneSecret;

#[async_trait]
impl CredentialStore for OneSecret {
    async fn get(&self, key: &str) -> Result<Secret> {
        self.get_version(key, &SecretVersion::from(1)).await
    }
    async fn get_version(&self, key: &str, version: &SecretVersion) -> Result<Secret> {
        if key == "warehouse/main/password" && *version == SecretVersion::from(1) {
            Ok(Secret::new(
                key,
                version.clone(),
                SecretString::from(PASSWORD),
            ))
        } else {
            Err(Error::not_found(format!("no secret {key} {version}")))
        }
    }
    async fn put(&self, _: &str, _: SecretString) -> Result<SecretVersion> {
        Err(Error::new(ErrorKind::Unsupported, "read-only"))
    }
    async fn delete(&self, _: &str) -> Result<()> {
        Err(Error::new(ErrorKind::Unsupported, "read-only"))
    }
    async fn list(&self, _: &str) -> Result<Vec<SecretMetadata>> {
        Ok(Vec::new())
    }
    async fn retire(&self, _: &str, _: &SecretVersion) -> Result<usize> {
        Ok(0)
    }
}

#[tokio::test]
async fn integrations_are_built_by_kind_with_secrets_resolved_and_never_shown() {
    let config = SdkConfig::from_toml(CONFIG).unwrap();
    let integrations = registry()
        .build_all(&config, Some(Arc::new(OneSecret)))
        .await
        .unwrap();
    let built = integrations.get("warehouse:main").unwrap();

    assert_eq!(built.integration.kind(), "warehouse");
    let breaker = built.policy.circuit_breaker().expect("breaker from config");
    assert_eq!(breaker.config().consecutive_failures, Some(7));

    let shown = format!("{config:?} {integrations:?}");
    assert!(shown.contains("secret:warehouse/main/password"));
    assert!(!shown.contains(PASSWORD), "secret leaked: {shown}");

    let health = integrations.health().await;
    assert_eq!(health[0].1.status, HealthStatus::Up);
}

#[tokio::test]
async fn a_missing_secret_fails_the_build_naming_the_variable_not_the_value() {
    let config = SdkConfig::from_toml(&CONFIG.replace(
        "secret:warehouse/main/password",
        "env:MOODBRIDGE_IT_UNSET_VARIABLE",
    ))
    .unwrap();
    let err = registry().build_all(&config, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(
        err.to_string().contains("MOODBRIDGE_IT_UNSET_VARIABLE"),
        "{err}"
    );
    assert_eq!(err.platform(), Some("warehouse:main"));
}

fn warehouse() -> Warehouse {
    Warehouse {
        id: "warehouse:main".into(),
        password: SecretString::from(PASSWORD),
        writes: AtomicU32::new(0),
    }
}

fn batch() -> RecordBatch {
    RecordBatch::new(
        "Case",
        vec![Record::from_json(serde_json::json!({"Id": "500A"})).unwrap()],
    )
}

#[tokio::test]
async fn a_secret_missing_from_the_store_fails_the_build_naming_the_key() {
    let config = SdkConfig::from_toml(&CONFIG.replace("main/password", "main/other")).unwrap();
    let err = registry()
        .build_all(&config, Some(Arc::new(OneSecret)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    assert!(err.to_string().contains("warehouse/main/other"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_layered_sink_retries_a_timed_out_upsert() {
    let config = SdkConfig::from_toml(CONFIG).unwrap();
    let policy =
        moodbridge::Policy::from_config("warehouse:main", &config.integrations[0].policy).unwrap();
    let inner = Arc::new(warehouse());
    let sink = Arc::clone(&inner).layer(policy);
    let mode = WriteMode::Upsert {
        key: vec!["Id".into()],
    };
    let report = sink.write(&batch(), &mode).await.unwrap();
    report.check_complete(1).unwrap();
    assert_eq!(inner.writes.load(Ordering::SeqCst), 2);
    assert_eq!(inner.password.expose_secret(), PASSWORD);
}

#[tokio::test(start_paused = true)]
async fn a_layered_sink_never_retries_a_timed_out_append() {
    let config = SdkConfig::from_toml(CONFIG).unwrap();
    let policy =
        moodbridge::Policy::from_config("warehouse:main", &config.integrations[0].policy).unwrap();
    let inner = Arc::new(warehouse());
    let sink = Arc::clone(&inner).layer(policy);
    let err: Error = sink.write(&batch(), &WriteMode::Append).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.operation(), Some("write"));
    assert_eq!(
        inner.writes.load(Ordering::SeqCst),
        1,
        "an append may have landed; retrying could duplicate it"
    );
}

#[tokio::test(start_paused = true)]
async fn a_layered_integration_reports_down_while_its_breaker_is_open_without_calling_it() {
    let config = SdkConfig::from_toml(CONFIG).unwrap();
    let policy =
        moodbridge::Policy::from_config("warehouse:main", &config.integrations[0].policy).unwrap();
    let integration = Arc::new(warehouse()).layer(policy.clone());
    let before = HEALTH_CHECKS.load(Ordering::SeqCst);
    policy.circuit_breaker().unwrap().force_open();
    let report = integration.health_check().await;
    assert_eq!(report.status, HealthStatus::Down);
    assert!(report.detail.contains("forced_open"), "{}", report.detail);
    assert_eq!(
        HEALTH_CHECKS.load(Ordering::SeqCst),
        before,
        "the platform was called"
    );
    policy.circuit_breaker().unwrap().reset();
    assert_eq!(integration.health_check().await.status, HealthStatus::Up);
}
