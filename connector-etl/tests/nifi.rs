//! The NiFi client against the NiFi fake (`tests/support/nifi.rs`), and the fake held to
//! nipyapi, the PyPI client generated from NiFi's own API definition, run unchanged
//! (`tests/python/nipyapi_check.py`): logins and token renewal, groups and processors,
//! run states through revisions (a stale one read again and retried), a group scheduled
//! as a whole, bulletins, provenance through its life-cycle, flow definitions downloaded
//! and uploaded, built from config, and errors without secrets.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use connector_etl::nifi::{
    BulletinQuery, NifiClient, NifiConfig, NifiFactory, ProcessorState, ProvenanceQuery,
};
use moodbridge_core::credential::CredentialStore;
use moodbridge_core::{ErrorKind, HealthStatus, Registry, SdkConfig};
use secrecy::SecretString;
use support::nifi::{FakeNifi, PASSWORD, USER};

fn client(fake: &FakeNifi) -> NifiClient {
    NifiClient::new(
        NifiConfig::password(&fake.url, USER, SecretString::from(PASSWORD))
            .unwrap()
            .id("nifi:test"),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nipyapi_runs_unchanged_against_the_fake() {
    let fake = FakeNifi::start().await;
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/nipyapi_check.py");
    let url = fake.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(moodbridge_core::testing::venv_python())
            .arg(script)
            .args([&url, USER, PASSWORD])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "nipyapi refused the fake: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "nifi=2.12.0 groups=2 processors=2 events=2 bulletins=1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_are_checked_and_tokens_renewed() {
    let fake = FakeNifi::start().await;
    let anonymous = NifiClient::new(NifiConfig::anonymous(&fake.url).unwrap()).unwrap();
    assert_eq!(anonymous.about().await.unwrap_err().kind(), ErrorKind::Auth);
    let wrong = NifiClient::new(
        NifiConfig::password(&fake.url, USER, SecretString::from("wrong-pass-81c2")).unwrap(),
    )
    .unwrap();
    let err = wrong.about().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!format!("{err} {err:?}").contains("wrong-pass-81c2"));
    assert!(err.to_string().contains("not valid"), "{err}");

    let nifi = client(&fake);
    assert_eq!(nifi.about().await.unwrap().version, "2.12.0");
    // NiFi forgot every token (a restart, an expiry): the next call logs in again.
    fake.expire_tokens();
    assert_eq!(nifi.about().await.unwrap().version, "2.12.0");
    let forged = NifiClient::new(
        NifiConfig::token(
            &fake.url,
            SecretString::from("eyJhbGciOiJQUzUxMiJ9.forged.token-1234"),
        )
        .unwrap(),
    )
    .unwrap();
    let err = forged.about().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth);
    assert!(!format!("{err} {err:?}").contains("forged.token-1234"));
    assert!(!format!("{nifi:?}").contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processors_change_state_through_their_revisions() {
    let fake = FakeNifi::start().await;
    let nifi = client(&fake);
    let root = nifi.root_group_id().await.unwrap();
    assert_eq!(root, fake.root());
    let groups = nifi.child_groups(&root).await.unwrap();
    assert_eq!(groups.len(), 1);
    let ingest = &groups[0];
    assert_eq!(
        (ingest.name.as_str(), ingest.parent_group_id.as_deref()),
        ("moodbridge-ingest", Some(root.as_str()))
    );
    assert!(nifi.processors(&root, false).await.unwrap().is_empty());
    let processors = nifi.processors(&root, true).await.unwrap();
    assert_eq!(processors.len(), 2);
    let generate = processors
        .iter()
        .find(|p| p.name == "Generate cases")
        .unwrap();
    assert_eq!(generate.state, ProcessorState::Stopped);
    assert!(generate.kind.ends_with("GenerateFlowFile"));

    let running = nifi
        .set_processor_state(&generate.id, ProcessorState::Running)
        .await
        .unwrap();
    assert_eq!(running.state, ProcessorState::Running);
    assert_eq!(running.revision.version, generate.revision.version + 1);
    assert_eq!(
        running.revision.client_id.as_deref(),
        Some(nifi.client_id())
    );
    assert_eq!(running.status.active_thread_count, 1);
    // Another user changes it between our read and our write: read again, retried.
    fake.touch(&generate.id);
    let stopped = nifi
        .set_processor_state(&generate.id, ProcessorState::Stopped)
        .await
        .unwrap();
    assert_eq!(stopped.state, ProcessorState::Stopped);
    assert_eq!(stopped.revision.version, running.revision.version + 2);
    // A disabled processor cannot start.
    nifi.set_processor_state(&generate.id, ProcessorState::Disabled)
        .await
        .unwrap();
    let err = nifi
        .set_processor_state(&generate.id, ProcessorState::Running)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(err.to_string().contains("disabled"), "{err}");
    nifi.set_processor_state(&generate.id, ProcessorState::Stopped)
        .await
        .unwrap();
    assert_eq!(
        nifi.processor("0f0e0d0c-0000-4000-8000-000000000000")
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );

    // The whole group.
    nifi.schedule_group(&ingest.id, true).await.unwrap();
    let group = nifi.process_group(&ingest.id).await.unwrap();
    assert_eq!((group.running_count, group.stopped_count), (2, 0));
    let status = nifi.controller_status().await.unwrap();
    assert_eq!((status.running_count, status.active_thread_count), (2, 2));
    nifi.schedule_group(&ingest.id, false).await.unwrap();
    nifi.wait_group_idle(&ingest.id, Duration::from_secs(5))
        .await
        .unwrap();
    let group = nifi.process_group(&ingest.id).await.unwrap();
    assert_eq!((group.running_count, group.stopped_count), (0, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulletins_provenance_and_flow_definitions() {
    let fake = FakeNifi::start().await;
    let nifi = client(&fake);
    let all = nifi.bulletins(&BulletinQuery::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].level.as_deref(), Some("WARNING"));
    let last = all[0].id;
    assert!(
        nifi.bulletins(&BulletinQuery::default().after(last))
            .await
            .unwrap()
            .is_empty()
    );
    let ingest = fake.group("moodbridge-ingest");
    let processors = nifi.processors(&ingest, false).await.unwrap();
    let log = processors.iter().find(|p| p.name == "Log cases").unwrap();
    fake.bulletin(&log.id, "ERROR", "Log cases: attribute case.id is missing");
    let new = nifi
        .bulletins(&BulletinQuery::default().after(last))
        .await
        .unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].source_name.as_deref(), Some("Log cases"));
    assert_eq!(
        nifi.bulletins(&BulletinQuery::default().source("^Generate").message("full"))
            .await
            .unwrap()
            .len(),
        1
    );

    // Provenance: nothing ran yet; then each start recorded an event.
    assert!(
        nifi.provenance(&ProvenanceQuery::new(100))
            .await
            .unwrap()
            .is_empty()
    );
    nifi.schedule_group(&ingest, true).await.unwrap();
    let events = nifi.provenance(&ProvenanceQuery::new(100)).await.unwrap();
    let mut types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["CREATE", "RECEIVE"]);
    let of_log = nifi
        .provenance(&ProvenanceQuery::new(100).component(&log.id))
        .await
        .unwrap();
    assert_eq!(of_log.len(), 1);
    assert_eq!(of_log[0].component_name.as_deref(), Some("Log cases"));
    assert!(fake.provenance_queries() == 0, "every query was deleted");

    // A flow definition downloaded, then uploaded as a new group.
    let definition = nifi.download_flow(&ingest).await.unwrap();
    assert_eq!(definition["flowContents"]["name"], "moodbridge-ingest");
    let root = nifi.root_group_id().await.unwrap();
    let copy = nifi
        .upload_flow(&root, "moodbridge-ingest (copy)", &definition)
        .await
        .unwrap();
    assert_eq!(copy.parent_group_id.as_deref(), Some(root.as_str()));
    let mut copied: Vec<String> = nifi
        .processors(&copy.id, false)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    copied.sort();
    assert_eq!(copied, ["Generate cases", "Log cases"]);
    let err = nifi
        .upload_flow(&root, "broken", &serde_json::json!({"not": "a flow"}))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_from_config_with_its_password_in_a_credential_store() {
    let fake = FakeNifi::start().await;
    let store = Arc::new(moodbridge_auth::store::MemoryStore::new());
    store
        .put("nifi/password", SecretString::from(PASSWORD))
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register(Arc::new(NifiFactory)).unwrap();
    let config = SdkConfig::from_toml(&format!(
        "[[integration]]\nid = \"nifi:test\"\nkind = \"nifi\"\n[integration.settings]\n\
         url = \"{}\"\nusername = \"{USER}\"\npassword = \"secret:nifi/password\"\n",
        fake.url
    ))
    .unwrap();
    let built = registry
        .build_one(&config.integrations[0], Some(store))
        .await
        .unwrap();
    let report = built.integration.health_check().await;
    assert_eq!(report.status, HealthStatus::Up, "{}", report.detail);
    assert!(
        report.detail.contains("NiFi 2.12.0: 0 running, 2 stopped"),
        "{}",
        report.detail
    );
    assert!(built.interfaces.get::<NifiClient>().is_some());
}
