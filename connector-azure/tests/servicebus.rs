//! Service Bus queues on the Service Bus sandbox (azure-sandbox, whose fidelity
//! Microsoft's Python client proves): the `MessageQueue` contract, standard and with
//! sessions; dead letters with a reason, and redriven; peeking; deferred and scheduled
//! messages; a topic fanned out to subscriptions by their rules; a wrong key; messages
//! exchanged with Microsoft's Python client both ways; and dropped connections and
//! throttling with nothing lost.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_sandbox::{
    CorrelationFilter, QueueOptions, RuleFilter, ServiceBus, ServiceBusConfig, TopicOptions,
};
use connector_azure::servicebus::{ServiceBusConnectionString, ServiceBusQueue};
use moodbridge_core::ErrorKind;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use moodbridge_core::testing::{QueueFixture, message_queue_contract};

const LOCK: Duration = Duration::from_secs(5);

async fn namespace() -> ServiceBus {
    ServiceBus::start(ServiceBusConfig::default())
        .await
        .unwrap()
}

fn queue_on(bus: &ServiceBus, name: &str, options: &QueueOptions) -> ServiceBusQueue {
    bus.create_queue(name, options.clone());
    ServiceBusQueue::builder(name)
        .connection_string(ServiceBusConnectionString::parse(&bus.connection_string()).unwrap())
        .sessions(options.requires_session)
        .max_delivery_count(options.max_delivery_count)
        .lock_duration(options.lock_duration)
        .build()
        .unwrap()
}

struct Fixture {
    bus: ServiceBus,
    n: AtomicU32,
}

#[async_trait]
impl QueueFixture for Fixture {
    async fn queue(
        &self,
        fifo: bool,
        dead_letter_after: Option<u32>,
    ) -> Option<(Arc<dyn MessageQueue>, Option<Arc<dyn MessageQueue>>)> {
        let name = format!("contract-{}", self.n.fetch_add(1, Ordering::Relaxed));
        let options = QueueOptions {
            lock_duration: LOCK,
            max_delivery_count: dead_letter_after.unwrap_or(10),
            requires_session: fifo,
            duplicate_detection: fifo.then_some(Duration::from_secs(600)),
            ..QueueOptions::default()
        };
        let queue = queue_on(&self.bus, &name, &options);
        let dead_letters = dead_letter_after
            .map(|_| Arc::new(queue.dead_letter_queue().unwrap()) as Arc<dyn MessageQueue>);
        Some((Arc::new(queue), dead_letters))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_bus_queues_meet_the_queue_contract_with_and_without_sessions() {
    let fixture = Fixture {
        bus: namespace().await,
        n: AtomicU32::new(0),
    };
    message_queue_contract(&fixture).await;
    fixture.bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_dead_lettered_with_its_reason_and_peeked_without_a_lock() {
    let bus = namespace().await;
    let queue = queue_on(&bus, "cases", &QueueOptions::default());
    let first = queue
        .send(&OutgoingMessage::new("kept").attribute("type", "case.closed"))
        .await
        .unwrap();
    queue.send(&OutgoingMessage::new("bad")).await.unwrap();

    let peeked = queue.peek(0, 10).await.unwrap();
    assert_eq!(
        peeked.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["kept", "bad"]
    );
    assert_eq!(peeked[0].id, first);
    assert_eq!(peeked[0].attributes["type"], "case.closed");

    let got = queue
        .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    queue.ack(&got[0].receipt).await.unwrap();
    queue
        .dead_letter(&got[1].receipt, "InvalidPayload", "not a case")
        .await
        .unwrap();
    // A settled delivery's receipt is refused, with the reason.
    let err = queue.ack(&got[1].receipt).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.hint().contains("lock"), "{err:?}");

    let dead = queue.dead_letter_queue().unwrap();
    let got = dead
        .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "bad");
    assert_eq!(got[0].attributes["DeadLetterReason"], "InvalidPayload");
    assert_eq!(
        got[0].attributes["DeadLetterErrorDescription"],
        "not a case"
    );
    dead.ack(&got[0].receipt).await.unwrap();
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_is_an_auth_error_that_does_not_show_the_key() {
    let bus = namespace().await;
    bus.create_queue("cases", QueueOptions::default());
    let wrong = bus
        .connection_string()
        .replace("SharedAccessKey=", "SharedAccessKey=not-the-key-");
    let queue = ServiceBusQueue::builder("cases")
        .connection_string(ServiceBusConnectionString::parse(&wrong).unwrap())
        .build()
        .unwrap();
    let err = queue.send(&OutgoingMessage::new("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let shown = format!("{err} {err:?} {queue:?}");
    assert!(!shown.contains("not-the-key-"), "{shown}");
    assert!(!shown.contains("SharedAccessSignature"), "{shown}");
    assert!(err.hint().contains("SharedAccessKey"), "{err:?}");

    // A queue that does not exist: NotFound, with the fix.
    let queue = ServiceBusQueue::builder("no-such-queue")
        .connection_string(ServiceBusConnectionString::parse(&bus.connection_string()).unwrap())
        .build()
        .unwrap();
    let err = queue.send(&OutgoingMessage::new("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    bus.stop().await;
}

async fn python(bus: &ServiceBus, queue: &str, mode: &str) -> serde_json::Value {
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/servicebus_interop.py");
    let out = tokio::process::Command::new(moodbridge_core::testing::venv_python())
        .arg(script)
        .arg(mode)
        .env("SB_CONNECTION", bus.connection_string())
        .env("SB_QUEUE", queue)
        .output()
        .await
        .expect("the venv's python (run ./scripts/test.sh once to install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microsofts_python_client_reads_what_we_send_and_we_read_what_it_sends() {
    let bus = namespace().await;
    let queue = queue_on(&bus, "interop", &QueueOptions::default());
    let id = queue
        .send(&OutgoingMessage::new(r#"{"Id":"500A"}"#).attribute("type", "case.closed"))
        .await
        .unwrap();
    let read = python(&bus, "interop", "read").await;
    assert_eq!(
        read,
        serde_json::json!([{"body": r#"{"Id":"500A"}"#, "id": id, "properties": {"type": "case.closed"}}])
    );

    python(&bus, "interop", "send").await;
    let got = queue
        .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(3)))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, r#"{"Id":"500B","Status":"Open"}"#);
    assert_eq!(got[0].id, "py-1");
    assert_eq!(got[0].attributes["type"], "case.opened");
    assert_eq!(got[0].delivery_count, 1);
    queue.ack(&got[0].receipt).await.unwrap();
    bus.stop().await;
}

/// Connections dropped and the namespace throttling while messages move: every message
/// arrives, and (the queue dropping duplicates by message id) none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_and_throttling_lose_nothing() {
    let bus = namespace().await;
    let lock = Duration::from_secs(2);
    let queue = queue_on(
        &bus,
        "faulty",
        &QueueOptions {
            lock_duration: lock,
            duplicate_detection: Some(Duration::from_secs(600)),
            ..QueueOptions::default()
        },
    );
    let mut sent = BTreeSet::new();
    for round in 0..10 {
        let batch: Vec<OutgoingMessage> = (0..20)
            .map(|i| {
                OutgoingMessage::new(format!("m{round}-{i}")).dedup_id(format!("id-{round}-{i}"))
            })
            .collect();
        match round % 3 {
            1 => bus.drop_connections(),
            2 => bus.throttle_next(5),
            _ => {}
        }
        let outcomes = queue.send_batch(&batch).await.unwrap();
        for (message, outcome) in batch.iter().zip(outcomes) {
            outcome.unwrap_or_else(|e| panic!("{}: {e}", message.body));
            sent.insert(message.body.clone());
        }
    }
    let mut got = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut polls = 0;
    while got.len() < sent.len() && Instant::now() < deadline {
        polls += 1;
        if polls % 4 == 0 {
            bus.drop_connections();
        }
        // A receive or an ack cut off by a drop fails; its messages come back when
        // their locks run out.
        let Ok(messages) = queue
            .receive(&ReceiveOptions::new(50).wait(Duration::from_secs(1)))
            .await
        else {
            continue;
        };
        for message in messages {
            if queue.ack(&message.receipt).await.is_ok() {
                got.insert(message.body);
            }
        }
    }
    assert_eq!(got, sent, "every message arrived");
    let left = queue
        .receive(&ReceiveOptions::new(10).wait(lock + Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(
        left.is_empty(),
        "acknowledged messages do not come back: {:?}",
        left.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_fans_out_to_its_subscriptions_by_their_rules() {
    let bus = namespace().await;
    bus.create_topic("case-events", TopicOptions::default());
    let subscription = |name: &str, filter: RuleFilter| {
        bus.create_subscription(
            "case-events",
            name,
            QueueOptions::default(),
            vec![(format!("{name}-rule"), filter)],
        )
        .unwrap();
    };
    subscription("all", RuleFilter::True);
    subscription(
        "closed",
        RuleFilter::Sql("type = 'case.closed' AND region IN ('emea', 'apac')".to_owned()),
    );
    subscription(
        "billing",
        RuleFilter::Correlation(CorrelationFilter {
            properties: [("type".to_owned(), "invoice.paid".to_owned())].into(),
            ..CorrelationFilter::default()
        }),
    );
    let connection = ServiceBusConnectionString::parse(&bus.connection_string()).unwrap();
    let entity = |path: &str| {
        ServiceBusQueue::builder(path)
            .connection_string(connection.clone())
            .build()
            .unwrap()
    };
    let topic = entity("case-events");
    let messages = [
        OutgoingMessage::new("closed emea")
            .attribute("type", "case.closed")
            .attribute("region", "emea"),
        OutgoingMessage::new("closed amer")
            .attribute("type", "case.closed")
            .attribute("region", "amer"),
        OutgoingMessage::new("paid").attribute("type", "invoice.paid"),
    ];
    for outcome in topic.send_batch(&messages).await.unwrap() {
        outcome.unwrap();
    }
    for (name, expected) in [
        ("all", vec!["closed amer", "closed emea", "paid"]),
        ("closed", vec!["closed emea"]),
        ("billing", vec!["paid"]),
    ] {
        let subscription = entity(&format!("case-events/subscriptions/{name}"));
        let got = subscription
            .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(2)))
            .await
            .unwrap();
        let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
        bodies.sort_unstable();
        assert_eq!(bodies, expected, "subscription {name}");
        for outcome in subscription
            .ack_batch(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>())
            .await
            .unwrap()
        {
            outcome.unwrap();
        }
    }
    // A topic is not received from: the error says where to receive.
    let err = topic.receive(&ReceiveOptions::new(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("subscriptions"), "{err}");
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_redriven_back_to_the_queue() {
    let bus = namespace().await;
    let queue = queue_on(
        &bus,
        "redrive",
        &QueueOptions {
            max_delivery_count: 1,
            ..QueueOptions::default()
        },
    );
    queue
        .send(&OutgoingMessage::new("poison").attribute("type", "case.closed"))
        .await
        .unwrap();
    let got = queue
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(2)))
        .await
        .unwrap();
    queue.nack(&got[0].receipt, Duration::ZERO).await.unwrap();
    assert_eq!(queue.redrive_dead_letters(10).await.unwrap(), 1);
    let back = queue
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, "poison");
    assert_eq!(
        back[0].attributes.get("type").map(String::as_str),
        Some("case.closed")
    );
    assert!(!back[0].attributes.contains_key("DeadLetterReason"));
    assert_eq!(back[0].delivery_count, 1, "a fresh message");
    queue.ack(&back[0].receipt).await.unwrap();
    bus.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_and_scheduled_messages_come_back_by_sequence_number() {
    let bus = namespace().await;
    let queue = queue_on(&bus, "later", &QueueOptions::default());
    queue
        .send(&OutgoingMessage::new("wait for the court"))
        .await
        .unwrap();
    let got = queue
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(2)))
        .await
        .unwrap();
    let sequence = queue.defer(&got[0].receipt).await.unwrap();
    let none = queue
        .receive(&ReceiveOptions::new(1).wait(Duration::from_millis(500)))
        .await
        .unwrap();
    assert!(none.is_empty(), "a deferred message is not delivered");
    let back = queue.receive_deferred(&[sequence]).await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].body, "wait for the court");
    queue.ack(&back[0].receipt).await.unwrap();
    let err = queue.receive_deferred(&[sequence]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");

    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    let kept = queue
        .schedule(&OutgoingMessage::new("hearing reminder"), at)
        .await
        .unwrap();
    let cancelled = queue
        .schedule(&OutgoingMessage::new("cancelled reminder"), at)
        .await
        .unwrap();
    assert_ne!(kept, cancelled);
    queue.cancel_scheduled(&[cancelled]).await.unwrap();
    let peeked = queue.peek(0, 10).await.unwrap();
    assert_eq!(
        peeked.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["hearing reminder"]
    );
    let early = queue
        .receive(&ReceiveOptions::new(10).wait(Duration::from_millis(800)))
        .await
        .unwrap();
    assert!(early.is_empty(), "not before its time");
    let due = queue
        .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(4)))
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["hearing reminder"]
    );
    queue.ack(&due[0].receipt).await.unwrap();
    bus.stop().await;
}
