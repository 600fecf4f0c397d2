//! Events end to end, on loopback with no account anywhere:
//!
//! 1. A webhook receiver and a Salesforce Outbound Message listener store what they are
//!    sent in a durable event log. A local sender posts signed webhooks (signed by the
//!    Standard Webhooks reference library), a forged one, a retry, and an Outbound
//!    Message twice.
//! 2. Account changes in a local Salesforce org (the sandbox) arrive over the Pub/Sub API
//!    (gRPC, Avro) and are ingested into the same log.
//! 3. Two consumers route the events by source and type: case webhooks are written to a
//!    SQLite warehouse through a pipeline (`SinkHandler`), Account change events start an
//!    incremental sync of Accounts into the warehouse (`SyncTrigger`), Outbound Messages
//!    go to a handler of their own.
//! 4. The cases consumer is replayed: the warehouse ends the same, since writes are
//!    upserts by key.
//!
//! ```sh
//! cargo run --example events
//! ```
//!
//! The signing secret is read from `MOODBRIDGE_EVENTS_SECRET` (a `whsec_` secret) when
//! set, else a demo secret is used. It is never printed or logged.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moodbridge::engine::{
    EventConsumer, EventHandler, EventRouter, Match, Pipeline, SinkHandler, SyncEngine, SyncTrigger,
};
use moodbridge::http::webhooks::{OutboundSource, WebhookReceiver, WebhookSource};
use moodbridge::salesforce::pubsub::{PubSubClient, PubSubConfig, PubSubIngest, ReplayFrom};
use moodbridge::salesforce::sandbox::{Sandbox, SandboxConfig};
use moodbridge::salesforce::sync::SalesforceSource;
use moodbridge::sqlite::SqliteTableSink;
use moodbridge::state::{EventWriter, SqliteStateStore, StoredEvent};
use moodbridge::{Error, Result};
use secrecy::{ExposeSecret, SecretString};

const DEMO_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const ORG: &str = "00D5e000000KQ2eEAG";

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let secret = SecretString::from(
        std::env::var("MOODBRIDGE_EVENTS_SECRET").unwrap_or_else(|_| DEMO_SECRET.to_owned()),
    );
    let dir = tempfile::tempdir()
        .map_err(|e| Error::config("cannot make a temporary directory").with_source(e))?;
    let state = Arc::new(SqliteStateStore::open(&dir.path().join("state.db")).await?);

    // The receiver: one webhook source (signed) and one Salesforce org (outbound
    // messages), both into the event log through one group-committing writer.
    let app = WebhookReceiver::new(EventWriter::spawn(state.clone(), 500))
        .source(WebhookSource::signed("apex", [secret.clone()])?.partition_by("/data/Id"))
        .outbound(OutboundSource::new("prod", [ORG])?)
        .router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| Error::config("cannot listen on 127.0.0.1").with_source(e))?;
    let base = format!(
        "http://{}",
        listener
            .local_addr()
            .map_err(|e| Error::internal("no local address").with_source(e))?
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("receiver listening on {base}");

    // The sender.
    let client = reqwest::Client::new();
    let signer = standardwebhooks::Webhook::new(secret.expose_secret())
        .map_err(|_| Error::config("MOODBRIDGE_EVENTS_SECRET is not a whsec_ secret"))?;
    let forger = standardwebhooks::Webhook::new("whsec_Zm9yZ2VkIHNlY3JldCBmb3IgdGhlIGRlbW8=")
        .map_err(|_| Error::internal("the forger's secret"))?;
    let sends = [
        (
            "msg_1",
            r#"{"type":"case.updated","data":{"Id":"500A","Status":"Working"}}"#,
            &signer,
        ),
        (
            "msg_2",
            r#"{"type":"case.closed","data":{"Id":"500A","Status":"Closed"}}"#,
            &signer,
        ),
        (
            "msg_3",
            r#"{"type":"case.updated","data":{"Id":"500B","Status":"New"}}"#,
            &signer,
        ),
        (
            "msg_1",
            r#"{"type":"case.updated","data":{"Id":"500A","Status":"Working"}}"#,
            &signer,
        ),
        (
            "msg_9",
            r#"{"type":"case.closed","data":{"Id":"500Z"}}"#,
            &forger,
        ),
    ];
    for (id, body, key) in sends {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let signature = key
            .sign(id, now, body.as_bytes())
            .map_err(|_| Error::internal("signing failed"))?;
        let response = client
            .post(format!("{base}/webhooks/apex"))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::internal("the webhook could not be sent").with_source(e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        println!("webhook {id}: {status} {text}");
    }
    let outbound = outbound_message(&["04l5e00000Gx7QzAAJ", "04l5e00000Gx7R0AAJ"]);
    for attempt in [
        "sent",
        "sent again (Salesforce retries until it sees the Ack)",
    ] {
        let response = client
            .post(format!("{base}/outbound/prod"))
            .header("content-type", "text/xml; charset=utf-8")
            .header("soapaction", "\"\"")
            .body(outbound.clone())
            .send()
            .await
            .map_err(|e| {
                Error::internal("the outbound message could not be sent").with_source(e)
            })?;
        let acked = response
            .text()
            .await
            .unwrap_or_default()
            .contains("<Ack>true</Ack>");
        println!("outbound message {attempt}: acknowledged = {acked}");
    }

    // Account changes in the org, over the Pub/Sub API into the same log.
    let sandbox = Sandbox::new(SandboxConfig::default()).start().await?;
    let org_client = sandbox
        .client_builder("salesforce:sandbox")?
        .connect()
        .await?;
    let firms = [
        "Hargreave & Cole LLP",
        "Okafor Legal",
        "Lindqvist Advokatbyrå",
    ];
    for name in firms {
        org_client
            .create("Account", &serde_json::json!({"Name": name}))
            .await?;
    }
    let pubsub = PubSubClient::connect(
        PubSubConfig::new(sandbox.url(), SANDBOX_ORG, sandbox.issue_token().into())
            .endpoint(sandbox.url()),
    )
    .await?;
    let ingest = PubSubIngest::new(
        pubsub,
        "/data/AccountChangeEvent",
        state.clone(),
        state.clone(),
    )
    .start(ReplayFrom::Earliest);
    // Caught up once the third change (replay id 3) is in the log.
    let caught_up = async {
        while ingest.position().await.ok().flatten() != Some(3u64.to_be_bytes().to_vec()) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let moved = tokio::time::timeout(Duration::from_secs(30), ingest.run_until(caught_up))
        .await
        .map_err(|_| Error::internal("the Pub/Sub ingest did not catch up in 30 s"))??;
    println!("pub/sub: {moved} Account change events ingested from /data/AccountChangeEvent");

    // The warehouse the consumers write to.
    let warehouse = Arc::new(SqliteTableSink::open(&dir.path().join("warehouse.db")).await?);
    let cases_pipeline = Arc::new(Pipeline::from_toml(CASES_PIPELINE)?);
    let accounts_pipeline = Arc::new(Pipeline::from_toml(ACCOUNTS_PIPELINE)?);
    let accounts_sync = Arc::new(SyncTrigger::new(
        SyncEngine::new(state.clone()),
        accounts_pipeline,
        Arc::new(SalesforceSource::new(org_client, ["Account"])),
        warehouse.clone(),
    ));

    // Two consumers, each routing by source and type.
    let cases_router = EventRouter::new().route(
        Match::source("apex").and_type("case.*"),
        Logged(
            "cases",
            SinkHandler::new(cases_pipeline, "Case", warehouse.clone())?.at("/data"),
        ),
    );
    let accounts_router = EventRouter::new()
        .route(
            Match::source("pubsub:*").and_type("Account"),
            Logged("accounts", accounts_sync.clone()),
        )
        .route(
            Match::source("prod").and_type("Account"),
            Logged("accounts", |_: StoredEvent| async { Ok(()) }),
        );
    let cases = EventConsumer::new("cases", state.clone(), state.clone());
    let accounts = EventConsumer::new("accounts", state.clone(), state.clone());
    println!("consumer cases:");
    let r = cases.run_once(&cases_router).await?;
    println!("  position {} ({} events read)", r.position, r.handled);
    println!("consumer accounts:");
    let r = accounts.run_once(&accounts_router).await?;
    println!(
        "  position {} ({} events read); {} incremental sync run(s) for the change events",
        r.position,
        r.handled,
        accounts_sync.runs()
    );

    // Replay one consumer from just after the first event; the other stays put.
    cases.replay_from(1).await?;
    println!("consumer cases, replayed from position 1:");
    cases.run_once(&cases_router).await?;
    println!(
        "lag: cases {} events, accounts {} events",
        cases.lag().await?.events,
        accounts.lag().await?.events
    );
    let case_rows = warehouse.rows("Case").await?;
    let account_rows = warehouse.count("Account").await?;
    println!(
        "warehouse: {} cases ({}), {account_rows} accounts",
        case_rows.len(),
        case_rows
            .iter()
            .map(|r| format!(
                "{} {}",
                r.get("Id").and_then(|v| v.as_str()).unwrap_or("?"),
                r.get("Status").and_then(|v| v.as_str()).unwrap_or("?")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    server.abort();
    sandbox.stop().await;
    let closed = case_rows.iter().any(|r| {
        r.get("Id").and_then(|v| v.as_str()) == Some("500A")
            && r.get("Status").and_then(|v| v.as_str()) == Some("Closed")
    });
    if case_rows.len() != 2 || !closed || account_rows != firms.len() as u64 {
        return Err(Error::internal(format!(
            "expected 2 cases (500A closed) and {} accounts in the warehouse, got {} and {account_rows}",
            firms.len(),
            case_rows.len()
        )));
    }
    println!(
        "events example finished: every event stored once, routed to the warehouse, and replayed"
    );
    Ok(())
}

/// The cases stream: webhook bodies' `data` objects, upserted by Id (a redelivered or
/// replayed event writes the same row).
const CASES_PIPELINE: &str = r#"
name = "case-events"
[[streams]]
name = "Case"
write = { mode = "upsert", key = ["Id"] }
validate = [{ rule = "required", field = "Id" }]
"#;

/// Accounts from the org, incremental after the first run.
const ACCOUNTS_PIPELINE: &str = r#"
name = "account-changes"
[[streams]]
name = "Account"
validate = [{ rule = "required", field = "Name" }]
"#;

/// The sandbox's org id.
const SANDBOX_ORG: &str = "00D8d0000000001EAA";

/// A handler that prints each event it is given, then hands it on.
struct Logged<H>(&'static str, H);

#[async_trait::async_trait]
impl<H: EventHandler> EventHandler for Logged<H> {
    async fn handle(&self, event: &StoredEvent) -> Result<()> {
        let e = &event.event;
        println!(
            "  [{}] #{} {} {} {}",
            self.0,
            event.sequence,
            e.source,
            e.event_type,
            partition(e)
        );
        self.1.handle(event).await
    }
}

fn partition(e: &moodbridge::state::NewEvent) -> &str {
    e.partition_key.as_deref().unwrap_or("?")
}

/// An Outbound Message as a workflow rule on Account sends it.
fn outbound_message(ids: &[&str]) -> String {
    let notifications: String = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                r#"<Notification><Id>{id}</Id><sObject xsi:type="sf:Account" xmlns:sf="urn:sobject.enterprise.soap.sforce.com"><sf:Id>0015e00000ZkM3{i}AAF</sf:Id><sf:Name>Acme Corporation {i}</sf:Name><sf:Industry>Legal</sf:Industry></sObject></Notification>"#
            )
        })
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>{ORG}</OrganizationId><ActionId>04k5e000000CaRkAAK</ActionId><SessionId xsi:nil="true"/><EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/62.0/00D5e000000KQ2e</EnterpriseUrl><PartnerUrl>https://example.my.salesforce.com/services/Soap/u/62.0/00D5e000000KQ2e</PartnerUrl>{notifications}</notifications></soapenv:Body></soapenv:Envelope>"#
    )
}
