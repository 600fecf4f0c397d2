//! Amazon SQS as a `MessageQueue`, against moto (a local server speaking SQS's AWS JSON
//! protocol as aws-sdk-sqs sends it): the core contract suite on standard, FIFO and
//! dead-lettering queues; batches split by size; the redrive back from a dead-letter
//! queue; an `sqs` integration built from config, whose errors name the problem and
//! never repeat its secret key.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::QueueAttributeName;
use connector_aws::sdk::AwsCredentials;
use connector_aws::sqs::SqsQueue;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use moodbridge_core::testing::{QueueFixture, message_queue_contract};
use moodbridge_core::{CredentialStore, ErrorKind};
use support::Moto;

/// A client of moto for setting queues up.
fn admin(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .build(),
    )
}

fn keys() -> AwsCredentials {
    AwsCredentials::Static {
        access_key_id: "AKIDTESTQUEUE".into(),
        secret_access_key: "sqs-secret-key-never-shown-0042".to_owned().into(),
        session_token: None,
    }
}

async fn queue_of(endpoint: &str, url_or_name: &str) -> SqsQueue {
    SqsQueue::builder(url_or_name)
        .region("us-east-1")
        .endpoint(endpoint)
        .credentials(keys())
        .build()
        .await
        .unwrap()
}

/// Create queue `name` with `attributes`; its URL.
async fn create(
    admin: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> String {
    let mut request = admin.create_queue().queue_name(name);
    for (k, v) in attributes {
        request = request.attributes(k.clone(), v);
    }
    request.send().await.unwrap().queue_url.unwrap()
}

async fn arn_of(admin: &aws_sdk_sqs::Client, url: &str) -> String {
    admin
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone()
}

struct Fixture {
    endpoint: String,
    admin: aws_sdk_sqs::Client,
    made: AtomicU32,
}

#[async_trait]
impl QueueFixture for Fixture {
    async fn queue(
        &self,
        fifo: bool,
        dead_letter_after: Option<u32>,
    ) -> Option<(Arc<dyn MessageQueue>, Option<Arc<dyn MessageQueue>>)> {
        let n = self.made.fetch_add(1, Ordering::SeqCst);
        let suffix = if fifo { ".fifo" } else { "" };
        let mut attributes = Vec::new();
        if fifo {
            attributes.push((QueueAttributeName::FifoQueue, "true".to_owned()));
        }
        let mut dlq: Option<Arc<dyn MessageQueue>> = None;
        if let Some(after) = dead_letter_after {
            let dlq_url = create(
                &self.admin,
                &format!("contract-{n}-dlq{suffix}"),
                &attributes,
            )
            .await;
            let arn = arn_of(&self.admin, &dlq_url).await;
            attributes.push((
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": arn, "maxReceiveCount": after})
                    .to_string(),
            ));
            dlq = Some(Arc::new(queue_of(&self.endpoint, &dlq_url).await));
        }
        let name = format!("contract-{n}{suffix}");
        create(&self.admin, &name, &attributes).await;
        // By name: the queue's URL is looked up.
        Some((Arc::new(queue_of(&self.endpoint, &name).await), dlq))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queues_meet_the_message_queue_contract() {
    let moto = Moto::start();
    let fixture = Fixture {
        endpoint: moto.endpoint.clone(),
        admin: admin(&moto.endpoint),
        made: AtomicU32::new(0),
    };
    message_queue_contract(&fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_split_by_size_and_dead_letters_are_redriven_back() {
    let moto = Moto::start();
    let builder = |name: &str| {
        SqsQueue::builder(name)
            .region("us-east-1")
            .endpoint(&moto.endpoint)
            .credentials(keys())
    };
    let dead = builder("orders-dlq").create(None).await.unwrap();
    let queue = builder("orders").create(Some((&dead, 1))).await.unwrap();
    // Creating it again with the same attributes changes nothing.
    builder("orders").create(Some((&dead, 1))).await.unwrap();
    assert_eq!(queue.dead_letter_arn(), dead.arn());
    assert_eq!(queue.features().dead_letter_after, Some(1));
    assert!(queue.dead_letter_arn().unwrap().ends_with(":orders-dlq"));
    let max = queue.features().max_body_bytes;

    // Ten messages of a fifth of the limit each: more than one request's worth.
    let big: Vec<OutgoingMessage> = (0..10)
        .map(|i| {
            OutgoingMessage::new(format!("{i:02}{}", "x".repeat(max / 5)))
                .attribute("n", i.to_string())
        })
        .collect();
    let outcomes = queue.send_batch(&big).await.unwrap();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(queue.approximate_depth().await.unwrap(), 10);

    // Each is delivered once and let go: the redrive policy moves them to the DLQ.
    let mut seen = 0;
    while seen < 10 {
        let got = queue
            .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(1)))
            .await
            .unwrap();
        for m in &got {
            queue.nack(&m.receipt, Duration::ZERO).await.unwrap();
        }
        seen += got.len();
    }
    assert!(
        queue
            .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(1)))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(dead.approximate_depth().await.unwrap(), 10);

    // Back to the source queue, attributes kept; the DLQ is empty after.
    assert_eq!(queue.redrive_from(&dead, 100).await.unwrap(), 10);
    assert_eq!(dead.approximate_depth().await.unwrap(), 0);
    let mut back = Vec::new();
    while back.len() < 10 {
        back.extend(
            queue
                .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(1)))
                .await
                .unwrap(),
        );
    }
    let mut numbers: Vec<String> = back.iter().map(|m| m.attributes["n"].clone()).collect();
    numbers.sort_by_key(|n| n.parse::<u32>().unwrap());
    assert_eq!(numbers, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    assert!(back.iter().all(|m| m.body.len() == max / 5 + 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sqs_would_refuse_are_refused_one_by_one_with_the_reason() {
    let moto = Moto::start();
    let admin = admin(&moto.endpoint);
    create(&admin, "checks", &[]).await;
    let queue = queue_of(&moto.endpoint, "checks").await;
    let mut eleven = OutgoingMessage::new("too many attributes");
    for i in 0..11 {
        eleven = eleven.attribute(format!("a{i}"), "v");
    }
    let batch = [
        OutgoingMessage::new("fine").attribute("type", "case.closed"),
        eleven,
        OutgoingMessage::new("reserved").attribute("AWS.Trace", "x"),
        OutgoingMessage::new("empty value").attribute("type", ""),
        OutgoingMessage::new("grouped").group("g"),
        OutgoingMessage::new("too late").delay(Duration::from_secs(901)),
    ];
    let outcomes = queue.send_batch(&batch).await.unwrap();
    assert!(outcomes[0].is_ok());
    for (i, expected) in [
        (1, "at most 10"),
        (2, "AWS."),
        (3, "empty"),
        (4, "FIFO"),
        (5, "delay"),
    ] {
        let err = outcomes[i].as_ref().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains(expected), "message {i}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sqs_integration_is_built_from_config_and_its_errors_keep_its_secret() {
    let moto = Moto::start();
    create(&admin(&moto.endpoint), "case-events", &[]).await;
    let store = moodbridge_auth::store::MemoryStore::new();
    store
        .put(
            "aws/test/secret_access_key",
            "sqs-config-secret-never-shown-7".to_owned().into(),
        )
        .await
        .unwrap();
    let toml = format!(
        r#"
        [[integration]]
        id = "sqs:events"
        kind = "sqs"
        [integration.settings]
        queue = "case-events"
        region = "us-east-1"
        endpoint = "{}"
        credentials = {{ source = "static", access_key_id = "AKIDCONFIG", secret_access_key = "secret:aws/test/secret_access_key" }}
        "#,
        moto.endpoint
    );
    let config = moodbridge_core::SdkConfig::from_toml(&toml).unwrap();
    let mut registry = moodbridge_core::Registry::new();
    registry
        .register(Arc::new(connector_aws::SqsFactory))
        .unwrap();
    let built = registry
        .build_all(&config, Some(Arc::new(store)))
        .await
        .unwrap();
    let built = built.get("sqs:events").unwrap();
    assert_eq!(built.integration.kind(), "sqs");
    let queue = built
        .interfaces
        .get::<dyn MessageQueue>()
        .expect("an sqs integration is a MessageQueue");
    queue
        .send(&OutgoingMessage::new("from config"))
        .await
        .unwrap();
    let health = built.integration.health_check().await;
    assert!(health.detail.contains("1 messages waiting"), "{health:?}");

    // A queue that does not exist: NotFound, with a hint, and no secret anywhere.
    let err = SqsQueue::builder("no-such-queue")
        .region("us-east-1")
        .endpoint(&moto.endpoint)
        .credentials(keys())
        .build()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert!(err.hint().contains("queue name"), "{err:?}");
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains("sqs-secret-key-never-shown"), "{text}");
    }
    let debug = format!("{:?}", keys());
    assert!(!debug.contains("never-shown"), "{debug}");
}
