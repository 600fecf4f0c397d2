//! Amazon SNS topics against moto: fan-out to SQS queues with filter policies over the
//! attributes and over the body, raw and enveloped delivery; per-message refusals in a
//! batch; FIFO topic to FIFO queue, each group in order; an `sns` integration built from
//! config, and a missing topic named as such.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use connector_aws::sdk::AwsCredentials;
use connector_aws::sns::{FilterScope, SnsTopic, Subscription};
use connector_aws::sqs::SqsQueue;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions, ReceivedMessage};
use moodbridge_core::{CredentialStore, ErrorKind};
use support::Moto;

fn keys() -> AwsCredentials {
    AwsCredentials::Static {
        access_key_id: "AKIDTESTTOPIC".into(),
        secret_access_key: "sns-secret-key-never-shown-0042".to_owned().into(),
        session_token: None,
    }
}

async fn topic(moto: &Moto, name: &str) -> SnsTopic {
    SnsTopic::builder(name)
        .region("us-east-1")
        .endpoint(&moto.endpoint)
        .credentials(keys())
        .create()
        .await
        .unwrap()
}

async fn queue(moto: &Moto, name: &str) -> SqsQueue {
    SqsQueue::builder(name)
        .region("us-east-1")
        .endpoint(&moto.endpoint)
        .credentials(keys())
        .create(None)
        .await
        .unwrap()
}

/// Everything `queue` delivers until it stays empty for a second, acknowledged.
async fn drain(queue: &SqsQueue) -> Vec<ReceivedMessage> {
    let mut out = Vec::new();
    loop {
        let got = queue
            .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(1)))
            .await
            .unwrap();
        if got.is_empty() {
            return out;
        }
        for m in &got {
            queue.ack(&m.receipt).await.unwrap();
        }
        out.extend(got);
    }
}

fn case(id: &str, kind: &str, priority: &str) -> OutgoingMessage {
    OutgoingMessage::new(serde_json::json!({"Id": id, "Priority": priority}).to_string())
        .attribute("type", kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_fans_out_to_queues_through_their_filter_policies() {
    let moto = Moto::start();
    let topic = topic(&moto, "case-events").await;
    let closed = queue(&moto, "closed-cases").await;
    let urgent = queue(&moto, "urgent-cases").await;
    let audit = queue(&moto, "audit").await;
    for q in [&closed, &urgent, &audit] {
        q.allow_topic(topic.arn()).await.unwrap();
    }
    topic
        .subscribe_queue(
            closed.arn().unwrap(),
            &Subscription::raw().filter(serde_json::json!({"type": ["case.closed"]})),
        )
        .await
        .unwrap();
    topic
        .subscribe_queue(
            urgent.arn().unwrap(),
            &Subscription::raw()
                .filter(serde_json::json!({"Priority": ["High"]}))
                .scope(FilterScope::MessageBody),
        )
        .await
        .unwrap();
    topic
        .subscribe_queue(audit.arn().unwrap(), &Subscription::enveloped())
        .await
        .unwrap();

    let messages = [
        case("500A", "case.closed", "Low"),
        case("500B", "case.updated", "High"),
        case("500C", "case.closed", "High"),
        case("500D", "case.updated", "Low"),
    ];
    let mut all = Vec::new();
    for round in 0..3 {
        all.extend(messages.iter().map(|m| {
            let mut m = m.clone();
            m.body = m.body.replace("500", &format!("50{round}"));
            m
        }));
    }
    let outcomes = topic.publish_batch(&all).await.unwrap();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");

    let ids = |got: &[ReceivedMessage]| {
        let mut ids: Vec<String> = got
            .iter()
            .map(|m| {
                serde_json::from_str::<serde_json::Value>(&m.body).unwrap()["Id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        ids.sort();
        ids
    };
    let got = drain(&closed).await;
    assert_eq!(
        ids(&got),
        ["500A", "500C", "501A", "501C", "502A", "502C"],
        "the attribute filter"
    );
    assert!(
        got.iter().all(|m| m.attributes["type"] == "case.closed"),
        "raw delivery keeps the attributes"
    );
    assert_eq!(
        ids(&drain(&urgent).await),
        ["500B", "500C", "501B", "501C", "502B", "502C"],
        "the body filter"
    );
    // Enveloped: SNS's JSON around every message, the topic named.
    let enveloped = drain(&audit).await;
    assert_eq!(enveloped.len(), 12);
    let envelope: serde_json::Value = serde_json::from_str(&enveloped[0].body).unwrap();
    assert_eq!(envelope["Type"], "Notification");
    assert_eq!(envelope["TopicArn"], topic.arn());
    assert!(envelope["Message"].as_str().unwrap().contains("\"Id\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sns_would_refuse_are_refused_one_by_one() {
    let moto = Moto::start();
    let topic = topic(&moto, "checks").await;
    let mut eleven = OutgoingMessage::new("too many attributes");
    for i in 0..11 {
        eleven = eleven.attribute(format!("a{i}"), "v");
    }
    let batch = [
        OutgoingMessage::new("fine"),
        OutgoingMessage::new("later").delay(Duration::from_secs(5)),
        OutgoingMessage::new("grouped").group("g"),
        eleven,
        OutgoingMessage::new("x".repeat(262_145)),
    ];
    let outcomes = topic.publish_batch(&batch).await.unwrap();
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    for (i, expected) in [(1, "delay"), (2, "FIFO"), (3, "at most 10"), (4, "bytes")] {
        let err = outcomes[i].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(expected), "message {i}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_topic_keeps_each_group_in_order() {
    let moto = Moto::start();
    let topic = topic(&moto, "orders.fifo").await;
    assert!(topic.is_fifo());
    // moto delivers SNS FIFO to an SQS FIFO queue only with content-based deduplication
    // on the queue.
    let admin = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .build(),
    );
    admin
        .create_queue()
        .queue_name("orders.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::ContentBasedDeduplication, "true")
        .send()
        .await
        .unwrap();
    let queue = SqsQueue::builder("orders.fifo")
        .region("us-east-1")
        .endpoint(&moto.endpoint)
        .credentials(keys())
        .build()
        .await
        .unwrap();
    topic
        .subscribe_queue(queue.arn().unwrap(), &Subscription::raw())
        .await
        .unwrap();
    let err = topic
        .publish(&OutgoingMessage::new("no group"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let mut messages = Vec::new();
    for i in 0..5 {
        for group in ["A", "B"] {
            messages.push(OutgoingMessage::new(format!("{group}{i}")).group(group));
        }
    }
    for outcome in topic.publish_batch(&messages).await.unwrap() {
        outcome.unwrap();
    }
    let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in drain(&queue).await {
        order
            .entry(m.group.clone().unwrap())
            .or_default()
            .push(m.body);
    }
    assert_eq!(order["A"], ["A0", "A1", "A2", "A3", "A4"]);
    assert_eq!(order["B"], ["B0", "B1", "B2", "B3", "B4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sns_integration_is_built_from_config_and_a_missing_topic_is_named() {
    let moto = Moto::start();
    topic(&moto, "case-events").await;
    let store = moodbridge_auth::store::MemoryStore::new();
    store
        .put(
            "aws/test/secret_access_key",
            "sns-config-secret-never-shown-7".to_owned().into(),
        )
        .await
        .unwrap();
    let toml = format!(
        r#"
        [[integration]]
        id = "sns:events"
        kind = "sns"
        [integration.settings]
        topic = "case-events"
        region = "us-east-1"
        endpoint = "{}"
        credentials = {{ source = "static", access_key_id = "AKIDCONFIG", secret_access_key = "secret:aws/test/secret_access_key" }}
        "#,
        moto.endpoint
    );
    let config = moodbridge_core::SdkConfig::from_toml(&toml).unwrap();
    let mut registry = moodbridge_core::Registry::new();
    registry
        .register(Arc::new(connector_aws::SnsFactory))
        .unwrap();
    let built = registry
        .build_all(&config, Some(Arc::new(store)))
        .await
        .unwrap();
    let built = built.get("sns:events").unwrap();
    assert_eq!(built.integration.kind(), "sns");
    let health = built.integration.health_check().await;
    assert!(
        health.detail.contains("subscriptions confirmed"),
        "{health:?}"
    );

    let err = SnsTopic::builder("no-such-topic")
        .region("us-east-1")
        .endpoint(&moto.endpoint)
        .credentials(keys())
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.hint().contains("topic name"), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("never-shown"), "{text}");
    }
}
