//! Azure Queue storage as a `MessageQueue`, against Azurite's queue service (the
//! emulator Microsoft publishes, speaking the Queue REST API as `azure_storage_queue`
//! sends it): the core contract suite, poison queues, pop receipts that change under
//! updates, the service's 64 KiB limit, both encodings, messages that never expire, and
//! an `azure-queue` integration built from config whose errors never repeat its key.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::http::{RequestContent, XmlFormat};
use azure_storage_queue::models::{QueueClientPeekMessagesOptions, QueueMessage};
use connector_azure::auth::SharedKey;
use connector_azure::queue::{AzureQueue, AzureQueueBuilder, MAX_MESSAGE_BYTES, MessageEncoding};
use connector_azure::storage::AzureCredentials;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use moodbridge_core::testing::{QueueFixture, message_queue_contract};
use moodbridge_core::{CredentialStore, ErrorKind};
use secrecy::SecretString;
use support::Azurite;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A queue name no other test uses.
fn fresh(prefix: &str) -> String {
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

fn builder(azurite: &Azurite, name: &str) -> AzureQueueBuilder {
    AzureQueue::builder(name)
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::SharedKey(Azurite::key()))
        .max_poll_interval(Duration::from_millis(250))
}

struct Fixture(Azurite);

#[async_trait]
impl QueueFixture for Fixture {
    async fn queue(
        &self,
        fifo: bool,
        dead_letter_after: Option<u32>,
    ) -> Option<(Arc<dyn MessageQueue>, Option<Arc<dyn MessageQueue>>)> {
        if fifo {
            // Azure Queue storage has no ordered queues.
            return None;
        }
        let mut b = builder(&self.0, &fresh("contract"));
        if let Some(n) = dead_letter_after {
            b = b.poison_after(n);
        }
        let queue = b.create().await.unwrap();
        let poison = queue
            .poison_queue()
            .cloned()
            .map(|p| Arc::new(p) as Arc<dyn MessageQueue>);
        Some((Arc::new(queue), poison))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_queues_meet_the_message_queue_contract() {
    message_queue_contract(&Fixture(Azurite::start_queue())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_survives_its_updates_and_an_old_delivery_cannot_touch_a_new_one() {
    let azurite = Azurite::start_queue();
    let q = builder(&azurite, &fresh("receipts"))
        .create()
        .await
        .unwrap();
    q.send(&OutgoingMessage::new("case 500A")).await.unwrap();
    let first = q
        .receive(&ReceiveOptions::new(1).visibility(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    // The first delivery ran out; a second receiver has the message now.
    let second = q
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].delivery_count, 2);
    let late = q.ack(&first[0].receipt).await.unwrap_err();
    assert!(
        matches!(late.kind(), ErrorKind::InvalidInput | ErrorKind::NotFound),
        "{late}"
    );
    assert!(!late.hint().is_empty(), "{late:?}");
    // Extended twice (a new pop receipt each time), then acknowledged with the receipt
    // the receiver got.
    q.extend(&second[0].receipt, Duration::from_secs(5))
        .await
        .unwrap();
    q.extend(&second[0].receipt, Duration::from_secs(5))
        .await
        .unwrap();
    q.ack(&second[0].receipt).await.unwrap();
    assert_eq!(q.approximate_depth().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_is_the_services_and_messages_never_expire_by_default() {
    let azurite = Azurite::start_queue();
    let q = builder(&azurite, &fresh("limits")).create().await.unwrap();
    // The service's own limit, through the official client: 64 KiB of text.
    let raw = |n: usize| -> RequestContent<QueueMessage, XmlFormat> {
        QueueMessage {
            message_text: Some("x".repeat(n)),
        }
        .try_into()
        .unwrap()
    };
    q.client()
        .send_message(raw(MAX_MESSAGE_BYTES), None)
        .await
        .unwrap();
    let over = q
        .client()
        .send_message(raw(MAX_MESSAGE_BYTES + 1), None)
        .await
        .unwrap_err();
    assert_eq!(over.http_status().map(u16::from), Some(413), "{over}");
    // Ours refuses the same message before sending it, and sends the largest.
    let err = q
        .send(&OutgoingMessage::new("x".repeat(MAX_MESSAGE_BYTES + 1)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    q.send(&OutgoingMessage::new("y".repeat(MAX_MESSAGE_BYTES)))
        .await
        .unwrap();
    // The limit counts the text, not its XML escapes.
    let escaped = "<&".repeat(MAX_MESSAGE_BYTES / 2);
    q.send(&OutgoingMessage::new(escaped.clone()))
        .await
        .unwrap();
    // XML's special characters arrive as sent.
    let markup = "<case id=\"500A\">&amp; 'quoted'\r\n\tünïcode</case>";
    q.send(&OutgoingMessage::new(markup)).await.unwrap();
    let got = q
        .receive(&ReceiveOptions::new(32).wait(Duration::from_secs(3)))
        .await
        .unwrap();
    let bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    assert_eq!(bodies.len(), 4);
    assert!(bodies.contains(&markup));
    assert!(bodies.contains(&escaped.as_str()));
    assert!(bodies.contains(&"y".repeat(MAX_MESSAGE_BYTES).as_str()));
    // Sent by us: no expiry (the service's default would be 7 days). Peek shows
    // visible messages only: release them first.
    for m in &got {
        q.nack(&m.receipt, Duration::ZERO).await.unwrap();
    }
    let peeked = q
        .client()
        .peek_messages(Some(QueueClientPeekMessagesOptions {
            number_of_messages: Some(32),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .items
        .unwrap_or_default();
    assert_eq!(peeked.len(), 4);
    let mut years: Vec<i32> = peeked
        .iter()
        .map(|m| m.expiration_time.unwrap().year())
        .collect();
    years.sort_unstable();
    assert!(years[0] < 2100, "the raw message keeps the 7-day default");
    assert!(years[1..].iter().all(|y| *y >= 9999), "{years:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base64_queues_carry_any_text_and_unreadable_messages_are_poisoned_at_once() {
    let azurite = Azurite::start_queue();
    let name = fresh("encoded");
    let q = builder(&azurite, &name)
        .encoding(MessageEncoding::Base64)
        .poison_after(3)
        .create()
        .await
        .unwrap();
    let body = "line one\r\nline two\u{1}";
    q.send(&OutgoingMessage::new(body).attribute("type", "case.note"))
        .await
        .unwrap();
    // A text-mode reader of the same queue sees base64 (what Azure Functions decodes).
    let plain = builder(&azurite, &name).build().unwrap();
    let seen = plain
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0]
            .body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)),
        "{}",
        seen[0].body
    );
    plain.nack(&seen[0].receipt, Duration::ZERO).await.unwrap();
    let got = q
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(got[0].body, body);
    assert_eq!(got[0].attributes["type"], "case.note");
    q.ack(&got[0].receipt).await.unwrap();

    // Text that is not base64, on a base64 queue: moved aside at once, not delivered.
    plain
        .send(&OutgoingMessage::new("not base64 at all!"))
        .await
        .unwrap();
    let got = q
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(got.is_empty(), "{got:?}");
    let poison = builder(&azurite, &format!("{name}-poison"))
        .build()
        .unwrap();
    let dead = poison
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body, "not base64 at all!", "moved unchanged");
    poison.nack(&dead[0].receipt, Duration::ZERO).await.unwrap();

    // Redriven back, it is the same text again.
    assert_eq!(q.redrive_poison(10).await.unwrap(), 1);
    assert_eq!(poison.approximate_depth().await.unwrap(), 0);
    let back = plain
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(back[0].body, "not base64 at all!");
    assert_eq!(back[0].delivery_count, 1, "a redriven message starts again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_azure_queue_integration_is_built_from_config_and_its_errors_keep_its_key() {
    let azurite = Azurite::start_queue();
    let store = moodbridge_auth::store::MemoryStore::new();
    store
        .put(
            "azure/test/storage",
            format!(
                "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};QueueEndpoint={}",
                connector_azure::auth::DEV_ACCOUNT,
                connector_azure::auth::DEV_ACCOUNT_KEY,
                azurite.endpoint
            )
            .into(),
        )
        .await
        .unwrap();
    let toml = r#"
        [[integration]]
        id = "azure-queue:events"
        kind = "azure-queue"
        [integration.settings]
        queue = "case-events"
        connection_string = "secret:azure/test/storage"
        poison_after = 5
        create = true
        "#;
    let config = moodbridge_core::SdkConfig::from_toml(toml).unwrap();
    let mut registry = moodbridge_core::Registry::new();
    registry
        .register(Arc::new(connector_azure::queue::AzureQueueFactory))
        .unwrap();
    let built = registry
        .build_all(&config, Some(Arc::new(store)))
        .await
        .unwrap();
    let built = built.get("azure-queue:events").unwrap();
    assert_eq!(built.integration.kind(), "azure-queue");
    let queue = built
        .interfaces
        .get::<dyn MessageQueue>()
        .expect("an azure-queue integration is a MessageQueue");
    assert_eq!(queue.features().dead_letter_after, Some(5));
    queue
        .send(&OutgoingMessage::new("from config"))
        .await
        .unwrap();
    let health = built.integration.health_check().await;
    assert!(health.detail.contains("1 messages"), "{health:?}");

    // A wrong key: Auth, with a hint, and neither key anywhere.
    let wrong = "d3Jvbmcta2V5LW5ldmVyLXNob3duLTAwNDI=";
    let q = AzureQueue::builder("case-events")
        .endpoint(&azurite.endpoint)
        .credentials(AzureCredentials::SharedKey(SharedKey {
            account: connector_azure::auth::DEV_ACCOUNT.to_owned(),
            key: SecretString::from(wrong.to_owned()),
        }))
        .build()
        .unwrap();
    let err = q.send(&OutgoingMessage::new("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.hint().is_empty(), "{err:?}");
    for text in [err.to_string(), format!("{err:?}"), format!("{q:?}")] {
        assert!(!text.contains(wrong), "{text}");
        assert!(
            !text.contains(connector_azure::auth::DEV_ACCOUNT_KEY),
            "{text}"
        );
    }
    // A queue that does not exist: NotFound, with the fix.
    let missing = builder(&azurite, "no-such-queue").build().unwrap();
    let err = missing.send(&OutgoingMessage::new("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.hint().contains("create"), "{err:?}");
}

/// Fails tries by plan — before they reach the service (`503 ServerBusy`), or after it
/// handled them (`500`, or the connection lost): a per-try policy of the client's
/// pipeline. Never two faults in a row.
#[derive(Debug, Default)]
struct Faults {
    next: AtomicU32,
    before: AtomicU32,
    after: AtomicU32,
    lost: AtomicU32,
}

#[async_trait]
impl azure_core::http::policies::Policy for Faults {
    async fn send(
        &self,
        ctx: &azure_core::http::Context,
        request: &mut azure_core::http::Request,
        next: &[Arc<dyn azure_core::http::policies::Policy>],
    ) -> azure_core::http::policies::PolicyResult {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        if n < 4 {
            return next[0].send(ctx, request, &next[1..]).await;
        }
        match n % 10 {
            2 => {
                self.before.fetch_add(1, Ordering::SeqCst);
                let mut headers = azure_core::http::headers::Headers::new();
                headers.insert("x-ms-error-code", "ServerBusy");
                Ok(azure_core::http::AsyncRawResponse::from_bytes(
                    azure_core::http::StatusCode::ServiceUnavailable,
                    headers,
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>ServerBusy</Code><Message>injected</Message></Error>",
                ))
            }
            6 => {
                let _ = next[0].send(ctx, request, &next[1..]).await?;
                self.after.fetch_add(1, Ordering::SeqCst);
                let mut headers = azure_core::http::headers::Headers::new();
                headers.insert("x-ms-error-code", "InternalError");
                Ok(azure_core::http::AsyncRawResponse::from_bytes(
                    azure_core::http::StatusCode::InternalServerError,
                    headers,
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InternalError</Code><Message>injected</Message></Error>",
                ))
            }
            9 => {
                let _ = next[0].send(ctx, request, &next[1..]).await?;
                self.lost.fetch_add(1, Ordering::SeqCst);
                Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Io,
                    "connection reset by the test policy",
                ))
            }
            _ => next[0].send(ctx, request, &next[1..]).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_through_busy_answers_lost_answers_and_dropped_connections() {
    let azurite = Azurite::start_queue();
    let name = fresh("faults");
    builder(&azurite, &name).create().await.unwrap();
    let faults = Arc::new(Faults::default());
    let q = builder(&azurite, &name)
        .per_try_policy(faults.clone())
        .build()
        .unwrap();
    let total = 200;
    let messages: Vec<OutgoingMessage> = (0..total)
        .map(|i| {
            OutgoingMessage::new(format!("case {i}")).attribute("event-id", format!("evt-{i}"))
        })
        .collect();
    for chunk in messages.chunks(20) {
        for outcome in q.send_batch(chunk).await.unwrap() {
            outcome.unwrap();
        }
    }
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut quiet_since = std::time::Instant::now();
    while std::time::Instant::now() < deadline {
        let got = match q
            .receive(
                &ReceiveOptions::new(32)
                    .wait(Duration::from_millis(500))
                    .visibility(Duration::from_secs(2)),
            )
            .await
        {
            Ok(got) => got,
            Err(_) => continue,
        };
        if got.is_empty() {
            if seen.len() == total && quiet_since.elapsed() > Duration::from_secs(3) {
                break;
            }
            continue;
        }
        quiet_since = std::time::Instant::now();
        for m in &got {
            *seen.entry(m.attributes["event-id"].clone()).or_default() += 1;
        }
        // A delete whose answer was lost is retried and then finds nothing: the message
        // is gone either way.
        let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
        let _ = q.ack_batch(&receipts).await;
    }
    let missing: Vec<usize> = (0..total)
        .filter(|i| !seen.contains_key(&format!("evt-{i}")))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let lost = (faults.after.load(Ordering::SeqCst) + faults.lost.load(Ordering::SeqCst)) as usize;
    assert!(
        duplicates <= lost * 32,
        "{duplicates} duplicates for {lost} lost answers"
    );
    for (what, n) in [
        ("busy", &faults.before),
        ("lost answers", &faults.after),
        ("dropped connections", &faults.lost),
    ] {
        assert!(n.load(Ordering::SeqCst) > 0, "{what} were injected");
    }
    let direct = builder(&azurite, &name).build().unwrap();
    assert_eq!(
        direct.approximate_depth().await.unwrap(),
        0,
        "every message acknowledged"
    );
    eprintln!(
        "sent {total}, received {} ({duplicates} duplicates); injected {} busy, {} lost answers, {} dropped connections",
        seen.values().sum::<usize>(),
        faults.before.load(Ordering::SeqCst),
        faults.after.load(Ordering::SeqCst),
        faults.lost.load(Ordering::SeqCst)
    );
}
