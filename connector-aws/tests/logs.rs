//! The CloudWatch Logs layer against moto (a local server speaking CloudWatch Logs' AWS
//! JSON protocol as aws-sdk-cloudwatchlogs sends it): events logged through `tracing`
//! arrive in order as JSON with their fields and spans, in batches within the service's
//! limits, scrubbed of secrets; a full queue drops and counts instead of blocking.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::time::Duration;

use connector_aws::logs::CloudWatchLogs;
use connector_aws::sdk::AwsCredentials;
use moodbridge_core::redact::Secrets;
use support::Moto;
use tracing_subscriber::layer::SubscriberExt;

fn keys() -> AwsCredentials {
    AwsCredentials::Static {
        access_key_id: "AKIDTESTLOGS".into(),
        secret_access_key: "logs-secret-key-never-shown-0042".to_owned().into(),
        session_token: None,
    }
}

fn reader(moto: &Moto) -> aws_sdk_cloudwatchlogs::Client {
    aws_sdk_cloudwatchlogs::Client::from_conf(
        aws_sdk_cloudwatchlogs::Config::builder()
            .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatchlogs::config::Region::new("us-east-1"))
            .endpoint_url(&moto.endpoint)
            .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new(
                "test", "test", None, None, "static",
            ))
            .build(),
    )
}

/// Every message of the stream, oldest first.
async fn read_all(moto: &Moto, group: &str, stream: &str) -> Vec<String> {
    let client = reader(moto);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
            .unwrap();
        let events = page.events();
        if events.is_empty() {
            break;
        }
        out.extend(events.iter().filter_map(|e| e.message().map(str::to_owned)));
        let next = page.next_forward_token().map(str::to_owned);
        if next == token {
            break;
        }
        token = next;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_as_scrubbed_json_in_batches_within_the_limits() {
    let moto = Moto::start();
    let secrets = Secrets::new();
    secrets.remember(["host-held-value-never-shown"]);
    let (layer, shipper) = CloudWatchLogs::builder("/moodbridge/test", "worker-1")
        .region("us-east-1")
        .endpoint(&moto.endpoint)
        .credentials(keys())
        .create(true)
        .flush_every(Duration::from_secs(60))
        .secrets(secrets)
        .build()
        .await
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("sync", pipeline = "cases");
        let _inside = span.enter();
        for i in 0..25_000u32 {
            tracing::info!(n = i, case = "500A", "record written");
        }
        tracing::warn!(
            header = "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.payload.signature",
            url = "https://acct.blob.core.windows.net/c/b?sv=2024-05-04&sig=AbCdEf%2B123",
            held = "the host-held-value-never-shown here",
            "a request failed"
        );
    });
    shipper.flush().await.unwrap();
    let stats = shipper.stats();
    assert_eq!(stats.sent, 25_001, "{stats:?}");
    assert!(
        stats.batches >= 3,
        "at most 10,000 events a request: {stats:?}"
    );
    assert_eq!(stats.dropped, 0, "{stats:?}");

    let messages = read_all(&moto, "/moodbridge/test", "worker-1").await;
    assert_eq!(messages.len(), 25_001);
    let first: serde_json::Value = serde_json::from_str(&messages[0]).unwrap();
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["message"], "record written");
    assert_eq!(first["fields"]["n"], 0);
    assert_eq!(first["fields"]["case"], "500A");
    assert_eq!(first["spans"][0]["name"], "sync");
    assert_eq!(first["spans"][0]["fields"]["pipeline"], "cases");
    let ns: Vec<u64> = messages[..25_000]
        .iter()
        .map(|m| {
            serde_json::from_str::<serde_json::Value>(m).unwrap()["fields"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert!(ns.windows(2).all(|w| w[0] < w[1]), "in the order logged");
    let last = &messages[25_000];
    assert!(last.contains("a request failed"), "{last}");
    for secret in [
        "eyJhbGciOiJSUzI1NiJ9",
        "AbCdEf%2B123",
        "host-held-value-never-shown",
    ] {
        assert!(!last.contains(secret), "{secret} shipped: {last}");
    }
    assert!(last.contains("sv=2024-05-04"), "{last}");
    let stats = shipper.shutdown().await.unwrap();
    assert_eq!(stats.sent, 25_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_and_counts_and_a_failed_batch_is_retried() {
    let moto = Moto::start();
    // A stream that does not exist yet: the first flush fails and keeps its events.
    let (layer, shipper) = CloudWatchLogs::builder("/moodbridge/late", "worker-2")
        .region("us-east-1")
        .endpoint(&moto.endpoint)
        .credentials(keys())
        .capacity(100)
        .flush_every(Duration::from_secs(60))
        .build()
        .await
        .unwrap();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        for i in 0..1_000u32 {
            tracing::info!(n = i, "burst");
        }
    });
    shipper.flush().await.unwrap();
    let stats = shipper.stats();
    assert!(
        stats.dropped >= 800,
        "the queue and the channel hold 100 each: {stats:?}"
    );
    assert!(stats.failed_batches >= 1, "{stats:?}");
    assert_eq!(stats.sent, 0);
    // Once the stream exists, the kept events go out with the next flush.
    let client = reader(&moto);
    client
        .create_log_group()
        .log_group_name("/moodbridge/late")
        .send()
        .await
        .unwrap();
    client
        .create_log_stream()
        .log_group_name("/moodbridge/late")
        .log_stream_name("worker-2")
        .send()
        .await
        .unwrap();
    shipper.flush().await.unwrap();
    let stats = shipper.stats();
    assert_eq!(
        stats.sent + stats.dropped,
        1_000,
        "every event sent or counted: {stats:?}"
    );
    assert_eq!(
        read_all(&moto, "/moodbridge/late", "worker-2").await.len() as u64,
        stats.sent
    );
}
