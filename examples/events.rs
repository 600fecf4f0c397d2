//! Events end to end, on loopback with no account anywhere: a webhook receiver and a
//! Salesforce Outbound Message listener store what they are sent in a durable event log;
//! a local sender posts signed webhooks (signed by the Standard Webhooks reference
//! library), a forged one, a retry, and an Outbound Message twice; two consumers route
//! the events by type to their handlers; then one consumer is replayed.
//!
//! ```sh
//! cargo run --example events
//! ```
//!
//! The signing secret is read from `MOODBRIDGE_EVENTS_SECRET` (a `whsec_` secret) when
//! set, else a demo secret is used. It is never printed or logged.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use moodbridge::engine::EventConsumer;
use moodbridge::http::webhooks::{OutboundSource, WebhookReceiver, WebhookSource};
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

    // Two consumers, each routing by type to its own handler.
    let handled: Arc<Mutex<Vec<String>>> = Arc::default();
    let route = |consumer: &'static str, handled: Arc<Mutex<Vec<String>>>| {
        move |event: StoredEvent| {
            let handled = handled.clone();
            async move {
                let e = &event.event;
                let line = match (consumer, e.source.as_str(), e.event_type.as_str()) {
                    ("cases", "apex", "case.updated") => format!("update case {}", partition(e)),
                    ("cases", "apex", "case.closed") => format!("close case {}", partition(e)),
                    ("accounts", "prod", "Account") => format!("sync account {}", partition(e)),
                    _ => return Ok(()), // not this consumer's
                };
                println!("  [{consumer}] #{} {line}", event.sequence);
                handled
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(line);
                Ok(())
            }
        }
    };
    let cases = EventConsumer::new("cases", state.clone(), state.clone());
    let accounts = EventConsumer::new("accounts", state.clone(), state.clone());
    println!("consumer cases:");
    let r = cases.run_once(&route("cases", handled.clone())).await?;
    println!("  position {} ({} events read)", r.position, r.handled);
    println!("consumer accounts:");
    let r = accounts
        .run_once(&route("accounts", handled.clone()))
        .await?;
    println!("  position {} ({} events read)", r.position, r.handled);

    // Replay one consumer from just after the first event; the other stays put.
    cases.replay_from(1).await?;
    println!("consumer cases, replayed from position 1:");
    cases.run_once(&route("cases", handled.clone())).await?;
    println!(
        "lag: cases {} events, accounts {} events",
        cases.lag().await?.events,
        accounts.lag().await?.events
    );
    let lines = handled
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    server.abort();
    if lines != 7 {
        return Err(Error::internal(format!(
            "expected 7 handled events (3 cases, 2 accounts, 2 replayed), got {lines}"
        )));
    }
    println!("events example finished: every event stored once, routed, and replayed");
    Ok(())
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
