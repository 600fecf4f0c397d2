//! SNS publish → SQS fan-out → receive + acknowledge throughput against moto, side by
//! side in the same run with boto3 (AWS's own Python SDK) on the same server: N messages
//! of 1 KiB with two attributes are published to a topic in batches of 10
//! (`PublishBatch`), delivered raw to a subscribed SQS queue, then received 10 at a time
//! and deleted in batches, by 8 workers each (tasks for us, threads for boto3), on a fresh
//! topic and queue per phase.
//!
//! Reported per phase: messages a second published, and received + acknowledged from
//! the queue; the client's CPU seconds per 1,000 messages (ours: this process's; boto3's:
//! its interpreter's). moto answers every request and does the fan-out, so wall time is
//! mostly the server's; CPU time is the client's own cost. Phases run interleaved for
//! `MOODBRIDGE_BENCH_ROUNDS` rounds (3); the median is printed.
//!
//! Run: `cargo bench -p connector-aws --features sns,sqs --bench sns_fanout` (`-- 1000`
//! for 1,000 messages; default 500: moto's fan-out slows down sharply as the queue grows,
//! and at 1,000 one round took over ten minutes). Without cargo bench's `--bench` flag it
//! makes a 200-message smoke run of both clients. Results: docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{Figures, WORKERS, batches, keys};
use connector_aws::sns::{SnsTopic, Subscription};
use connector_aws::sqs::SqsQueue;
use futures::StreamExt;
use moodbridge_core::queue::MessageQueue;
use moodbridge_core::testing::cpu_seconds_of;

async fn ours(endpoint: &str, name: &str, n: usize) -> Figures {
    let queue = SqsQueue::builder(name)
        .region("us-east-1")
        .endpoint(endpoint)
        .credentials(keys())
        .create(None)
        .await
        .unwrap();
    let topic = Arc::new(
        SnsTopic::builder(name)
            .region("us-east-1")
            .endpoint(endpoint)
            .credentials(keys())
            .create()
            .await
            .unwrap(),
    );
    queue.allow_topic(topic.arn()).await.unwrap();
    topic
        .subscribe_queue(queue.arn().unwrap(), &Subscription::raw())
        .await
        .unwrap();
    let cpu = cpu_seconds_of(std::process::id());
    let started = Instant::now();
    futures::stream::iter(batches(n))
        .map(|batch| {
            let topic = topic.clone();
            async move {
                for outcome in topic.publish_batch(&batch).await.unwrap() {
                    outcome.unwrap();
                }
            }
        })
        .buffer_unordered(WORKERS)
        .collect::<Vec<()>>()
        .await;
    let published = started.elapsed();
    let drained = common::drain(Arc::new(queue) as Arc<dyn MessageQueue>, n, "moodbridge").await;
    Figures {
        send_per_sec: n as f64 / published.as_secs_f64(),
        receive_per_sec: n as f64 / drained.as_secs_f64(),
        cpu_per_1000: (cpu_seconds_of(std::process::id()) - cpu) * 1000.0 / n as f64,
    }
}

const BOTO3: &str = r#"
import json, resource, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
import boto3
endpoint, name, n, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
sqs, sns = boto3.client("sqs", **kw), boto3.client("sns", **kw)
url = sqs.create_queue(QueueName=name)["QueueUrl"]
queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
topic = sns.create_topic(Name=name)["TopicArn"]
sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({
    "Version": "2012-10-17", "Statement": [{"Effect": "Allow",
    "Principal": {"Service": "sns.amazonaws.com"}, "Action": "sqs:SendMessage",
    "Resource": queue_arn, "Condition": {"ArnEquals": {"aws:SourceArn": topic}}}]})})
sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
              Attributes={"RawMessageDelivery": "true"})
pad = "x" * (1024 - 40)
def body(i):
    return '{"Id":"500A%08d","Status":"Working","pad":"%s"}' % (i, pad)
def publish(start):
    entries = [{"Id": str(k), "Message": body(i),
                "MessageAttributes": {
                    "type": {"DataType": "String", "StringValue": "case.updated"},
                    "event-id": {"DataType": "String", "StringValue": "evt-%d" % i}}}
               for k, i in enumerate(range(start, min(start + 10, n)))]
    out = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=entries)
    assert not out.get("Failed"), out.get("Failed")
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.monotonic()
with ThreadPoolExecutor(workers) as pool:
    list(pool.map(publish, range(0, n, 10)))
sent = time.monotonic() - t
"#;

fn main() {
    let (n, rounds) = common::size(500, 200);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let moto = support::Moto::start();
    let mut results: Vec<(&str, Vec<Figures>)> =
        vec![("moodbridge SnsTopic", Vec::new()), ("boto3", Vec::new())];
    for round in 0..rounds {
        let f = runtime.block_on(ours(&moto.endpoint, &format!("ours-{round}"), n));
        results[0].1.push(f);
        let name = format!("boto3-{round}");
        let f = common::boto3_queue(
            BOTO3,
            &[&moto.endpoint, &name, &n.to_string(), &WORKERS.to_string()],
            n,
        );
        results[1].1.push(f);
    }
    common::report(
        &format!(
            "SNS → SQS on moto, {n} messages of 1 KiB, {WORKERS} workers, median of {rounds} round(s)"
        ),
        "published msg/s",
        &results,
    );
}
