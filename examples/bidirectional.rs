//! Two-way sync of Contacts between a Salesforce org (the embedded sandbox) and the host's
//! own contact list, keyed by an external id, with a conflict strategy.
//!
//! ```sh
//! cargo run --example bidirectional                           # the org wins conflicts
//! cargo run --example bidirectional -- --conflicts park       # or target-wins
//! ```
//!
//! The host's side here is `MemorySystem`, the SDK's in-memory `SyncSource + SyncSink`; a
//! real host puts its own database behind those two traits. Each run reads what changed
//! on both sides since the last, writes each side's changes to the other, drops its own
//! writes when they come back ("echoes"), and resolves records changed on both sides by
//! the strategy — `park` keeps both and records the conflict for a person. (The engine's
//! fourth strategy, last writer wins by a timestamp field, needs both sides to stamp
//! records from comparable clocks; the in-memory host stamps a logical counter.)

use std::sync::Arc;

use moodbridge::engine::{
    BidirectionalConfig, BidirectionalReport, ConflictPolicy, Side, SyncEngine,
};
use moodbridge::salesforce::sandbox::{Sandbox, SandboxConfig};
use moodbridge::salesforce::sync::{SalesforceSink, SalesforceSource};
use moodbridge::state::{SqliteStateStore, StateStore};
use moodbridge::testing::MemorySystem;
use moodbridge::{Error, Record, Result, StreamDescriptor};
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let conflicts = match std::env::args()
        .skip_while(|a| a != "--conflicts")
        .nth(1)
        .as_deref()
    {
        None | Some("source-wins") => ConflictPolicy::SourceWins,
        Some("target-wins") => ConflictPolicy::TargetWins,
        Some("park") => ConflictPolicy::Park,
        Some(other) => {
            return Err(
                Error::config(format!("unknown conflict strategy {other:?}"))
                    .with_hint("use source-wins, target-wins or park"),
            );
        }
    };

    // The org, with 20 contacts; the host, with 5 of its own.
    let sandbox = Sandbox::new(SandboxConfig::default()).start().await?;
    let sf = sandbox
        .client_builder("salesforce:sandbox")?
        .connect()
        .await?;
    for i in 0..20 {
        sf.create(
            "Contact",
            &json!({"LastName": format!("Org {i}"), "External_Id__c": format!("K-{i}")}),
        )
        .await?;
    }
    let host = MemorySystem::new();
    host.add_stream(
        StreamDescriptor::new("Contact")
            .primary_key(["External_Id__c"])
            .cursor("SystemModstamp"),
    );
    for i in 0..5 {
        host.edit(
            "Contact",
            Record::from_json(
                json!({"External_Id__c": format!("M-{i}"), "LastName": format!("Host {i}")}),
            )?,
        );
    }

    let dir = std::env::temp_dir().join(format!("moodbridge-bidirectional-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::config(format!("cannot create {}", dir.display())).with_source(e))?;
    let state = Arc::new(SqliteStateStore::open(&dir.join("state.db")).await?);
    let engine = SyncEngine::new(state.clone());
    let config = BidirectionalConfig {
        name: "contacts-two-way".into(),
        stream: "Contact".into(),
        key: vec!["External_Id__c".into()],
        // Fields each side manages itself: never compared, never copied across.
        ignore: [
            "Id",
            "SystemModstamp",
            "CreatedDate",
            "LastModifiedDate",
            "IsDeleted",
        ]
        .map(String::from)
        .to_vec(),
        conflicts: conflicts.clone(),
        batch_size: None,
    };
    let source = SalesforceSource::new(sf.clone(), ["Contact"]);
    let sink = SalesforceSink::new(sf.clone());
    let org = Side {
        source: &source,
        sink: &sink,
    };
    let mine = Side {
        source: &host,
        sink: &host,
    };

    let first = engine.run_bidirectional(&config, org, mine).await?;
    show("first run", &first);
    // Until it settles: our own writes come back once as echoes.
    for _ in 0..3 {
        engine.run_bidirectional(&config, org, mine).await?;
    }

    // K-1 edited on both sides; K-2 only by the host; K-3 only in Salesforce.
    let id_of = |key: &'static str| {
        let sf = sf.clone();
        async move {
            let contact = sf
                .retrieve_by_external_id("Contact", "External_Id__c", key)
                .await?;
            contact["Id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Error::internal(format!("{key} has no Id")))
        }
    };
    sf.update(
        "Contact",
        &id_of("K-1").await?,
        &json!({"LastName": "Edited in Salesforce"}),
    )
    .await?;
    sf.update(
        "Contact",
        &id_of("K-3").await?,
        &json!({"Email": "k3@org.example"}),
    )
    .await?;
    host.edit(
        "Contact",
        Record::from_json(json!({"External_Id__c": "K-1", "LastName": "Edited by the host"}))?,
    );
    host.edit(
        "Contact",
        Record::from_json(json!({"External_Id__c": "K-2", "LastName": "Host only"}))?,
    );
    let report = engine.run_bidirectional(&config, org, mine).await?;
    show("after edits", &report);

    let org_name = sf
        .retrieve_by_external_id("Contact", "External_Id__c", "K-1")
        .await?["LastName"]
        .clone();
    let host_name = host
        .get("Contact", "K-1")
        .and_then(|r| r.get("LastName").cloned())
        .unwrap_or(Value::Null);
    println!("K-1 (changed on both sides, {conflicts:?}): Salesforce {org_name}, host {host_name}");
    let parked = state.conflicts("contacts-two-way", 10).await?;
    println!("conflicts parked for a person: {}", parked.len());

    // The outcome each strategy promises.
    let expected = match conflicts {
        ConflictPolicy::SourceWins => (
            json!("Edited in Salesforce"),
            json!("Edited in Salesforce"),
            0,
        ),
        ConflictPolicy::TargetWins => (json!("Edited by the host"), json!("Edited by the host"), 0),
        ConflictPolicy::Park => (
            json!("Edited in Salesforce"),
            json!("Edited by the host"),
            1,
        ),
        ConflictPolicy::LastWriterWins { .. } => {
            return Err(Error::internal("not offered by this example"));
        }
    };
    sandbox.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    if (org_name.clone(), host_name.clone(), parked.len()) != expected
        || report.conflicts != 1
        || first.left_to_right != 20
        || first.right_to_left != 5
    {
        return Err(Error::internal(format!(
            "unexpected outcome: Salesforce {org_name}, host {host_name}, {} parked; report {report:?}",
            parked.len()
        )));
    }
    Ok(())
}

fn show(what: &str, r: &BidirectionalReport) {
    println!(
        "== {what}: Salesforce -> host {}, host -> Salesforce {}, echoes dropped {}, conflicts {} (parked {}), failed {}",
        r.left_to_right, r.right_to_left, r.echoes, r.conflicts, r.parked, r.failed
    );
}
