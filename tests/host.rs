//! A host config built by kind and run: every problem reported at once, and two
//! Salesforce orgs whose errors and metrics each name their own integration id.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;

use moodbridge::auth::store::MemoryStore;
use moodbridge::host::{Host, HostConfig};
use moodbridge::salesforce::sandbox::{Faults, RunningSandbox, Sandbox, SandboxConfig};
use moodbridge::{CredentialStore, ErrorKind};
use moodbridge_core::testing::{Counters, MetricsCapture};

#[tokio::test]
async fn every_problem_of_a_config_is_reported_at_once_without_echoing_secrets() {
    let config = HostConfig::from_toml(
        r#"
        [[integration]]
        id = "salesforce:prod"
        kind = "salesforce"
        settings = { auth = { flow = "client_credentials", client_id = "x", client_secret = "hunter2-literal" } }

        [[integration]]
        id = "s3:docs"
        kind = "s4"

        [[integration]]
        id = "warehouse"
        kind = "sqlite-warehouse"
        settings = { path = "" }

        [[pipeline]]
        name = "crm"
        source = "salesforce:prd"
        sink = "warehouse"
        [[pipeline.streams]]
        name = "Account"
        "#,
    )
    .unwrap();
    let err = moodbridge::build(&config).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config);
    let text = format!("{err} {err:?}");
    for needle in [
        "integration[0].settings: ",
        "reference",
        "integration[1].kind: unknown kind \"s4\"",
        "integration[2].settings.path: is empty",
        "pipeline[0].source: names \"salesforce:prd\"",
    ] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
    assert!(!text.contains("hunter2"), "{text}");
}

fn two_org_config(a: &RunningSandbox, b: &RunningSandbox, dir: &std::path::Path) -> HostConfig {
    let org = |id: &str, url: &str| {
        format!(
            r#"
            [[integration]]
            id = "{id}"
            kind = "salesforce"
            [integration.settings]
            login_url = "{url}"
            allow_loopback = true
            auth = {{ flow = "client_credentials", client_id = "sandbox-client", client_secret = "secret:sandbox/client_secret" }}
            [integration.policy.retry]
            max_attempts = 2
            initial_backoff = "1ms"
            "#
        )
    };
    HostConfig::from_toml(&format!(
        r#"
        [state]
        backend = "sqlite"
        path = "{dir}/state.db"
        {a}
        {b}
        [[integration]]
        id = "warehouse"
        kind = "sqlite-warehouse"
        settings = {{ path = "{dir}/warehouse.db" }}

        [[pipeline]]
        name = "from-a"
        source = "salesforce:a"
        sink = "warehouse"
        [[pipeline.streams]]
        name = "Account"

        [[pipeline]]
        name = "from-b"
        source = "salesforce:b"
        sink = "warehouse"
        [[pipeline.streams]]
        name = "Account"
        target = "b_accounts"
        "#,
        dir = dir.display(),
        a = org("salesforce:a", a.url()),
        b = org("salesforce:b", b.url()),
    ))
    .unwrap()
}

/// `moodbridge_calls_total` of `platform` with `outcome`.
fn calls(seen: &Counters, platform: &str, outcome: &str) -> u64 {
    seen.sum(
        "moodbridge_calls_total",
        &[
            ("platform", platform),
            ("connector", "salesforce"),
            ("outcome", outcome),
        ],
    )
}

#[test]
fn two_orgs_errors_and_metrics_name_their_own_integration_id() {
    let capture = MetricsCapture::new();
    {
        let _installed = capture.install();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let a = Sandbox::new(SandboxConfig::default())
                .seed(5, 1, 1)
                .start()
                .await
                .unwrap();
            let b = Sandbox::new(SandboxConfig::default())
                .seed(7, 1, 2)
                .start()
                .await
                .unwrap();
            let secrets = MemoryStore::new();
            secrets
                .put("sandbox/client_secret", "sandbox-secret".to_owned().into())
                .await
                .unwrap();
            let config = two_org_config(&a, &b, dir.path());
            let host = Host::build_with(&config, &moodbridge::registry(), Some(Arc::new(secrets)))
                .await
                .unwrap();
            assert_eq!(host.run("from-a").await.unwrap().counts.written, 5);

            // Org b starts failing every API call: the run fails naming b, not a.
            b.set_faults(Faults {
                error_rate: 1.0,
                ..Faults::default()
            });
            let err = host.run("from-b").await.unwrap_err();
            assert_eq!(err.platform(), Some("salesforce:b"), "{err}");
            assert_eq!(err.connector(), Some("salesforce"), "{err:?}");
            assert!(err.to_string().starts_with("salesforce:b "), "{err}");
            a.stop().await;
            b.stop().await;
        });
    }
    let seen = capture.take();
    assert!(calls(&seen, "salesforce:a", "ok") > 0, "{seen}");
    assert_eq!(calls(&seen, "salesforce:a", "unavailable"), 0, "{seen}");
    let b_failed =
        calls(&seen, "salesforce:b", "unavailable") + calls(&seen, "salesforce:b", "rate_limited");
    assert!(b_failed > 0, "{seen}");
}
