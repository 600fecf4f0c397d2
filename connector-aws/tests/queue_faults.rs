//! SQS through a faulty network: a proxy in front of moto fails requests before they
//! reach the service (500), throttles them (400 `ThrottlingException`), loses the answer
//! of requests the service did handle (500 after forwarding, or the connection closed
//! after forwarding). Every message arrives; the only duplicates are the ones
//! at-least-once delivery allows (a send whose answer was lost, sent again).

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use connector_aws::sdk::AwsCredentials;
use connector_aws::sqs::SqsQueue;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use support::Moto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the proxy does with the n-th request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Forward,
    FailBefore,
    Throttle,
    FailAfter,
    CloseAfter,
}

/// Never two faults in a row: the policy's four attempts always get through.
fn fault_of(n: usize) -> Fault {
    if n < 4 {
        return Fault::Forward;
    }
    match n % 10 {
        2 => Fault::FailBefore,
        5 => Fault::Throttle,
        7 => Fault::FailAfter,
        9 => Fault::CloseAfter,
        _ => Fault::Forward,
    }
}

struct Proxy {
    endpoint: String,
    counts: Arc<[AtomicUsize; 5]>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One HTTP/1.1 request off `stream`: head and body (by Content-Length); `None` at EOF.
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

async fn respond(
    stream: &mut tokio::net::TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
) {
    let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let _ = stream.write_all(out.as_bytes()).await;
    let _ = stream.write_all(body).await;
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let counts: Arc<[AtomicUsize; 5]> = Arc::new(Default::default());
        let next = Arc::new(AtomicUsize::new(0));
        let upstream = upstream.to_owned();
        let client = reqwest::Client::new();
        let counted = counts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (client, upstream, next, counts) = (
                    client.clone(),
                    upstream.clone(),
                    next.clone(),
                    counted.clone(),
                );
                tokio::spawn(async move {
                    while let Some((head, body)) = read_request(&mut stream).await {
                        let fault = fault_of(next.fetch_add(1, Ordering::SeqCst));
                        counts[fault as usize].fetch_add(1, Ordering::SeqCst);
                        let json = |code: &str| {
                            (
                                vec![
                                    (
                                        "content-type".to_owned(),
                                        "application/x-amz-json-1.0".to_owned(),
                                    ),
                                    ("x-amzn-errortype".to_owned(), code.to_owned()),
                                ],
                                format!(
                                    r#"{{"__type":"{code}","message":"injected by the test proxy"}}"#
                                ),
                            )
                        };
                        match fault {
                            Fault::FailBefore => {
                                let (h, b) = json("InternalFailure");
                                respond(&mut stream, 500, &h, b.as_bytes()).await;
                                continue;
                            }
                            Fault::Throttle => {
                                let (h, b) = json("ThrottlingException");
                                respond(&mut stream, 400, &h, b.as_bytes()).await;
                                continue;
                            }
                            _ => {}
                        }
                        // Forward to moto.
                        let mut lines = head.lines();
                        let request_line = lines.next().unwrap_or_default().to_owned();
                        let mut parts = request_line.split(' ');
                        let method = parts.next().unwrap_or("POST").to_owned();
                        let path = parts.next().unwrap_or("/").to_owned();
                        let mut forward =
                            client.request(method.parse().unwrap(), format!("{upstream}{path}"));
                        for line in lines {
                            if let Some((name, value)) = line.split_once(':')
                                && !name.eq_ignore_ascii_case("host")
                                && !name.eq_ignore_ascii_case("content-length")
                            {
                                forward = forward.header(name.trim(), value.trim());
                            }
                        }
                        let Ok(answer) = forward.body(body).send().await else {
                            return;
                        };
                        let status = answer.status().as_u16();
                        let headers: Vec<(String, String)> = answer
                            .headers()
                            .iter()
                            .filter(|(n, _)| {
                                *n != "content-length"
                                    && *n != "transfer-encoding"
                                    && *n != "connection"
                            })
                            .map(|(n, v)| {
                                (n.to_string(), v.to_str().unwrap_or_default().to_owned())
                            })
                            .collect();
                        let bytes = answer.bytes().await.unwrap_or_default();
                        match fault {
                            Fault::FailAfter => {
                                let (h, b) = json("InternalFailure");
                                respond(&mut stream, 500, &h, b.as_bytes()).await;
                            }
                            // The service handled it; the connection drops before the answer.
                            Fault::CloseAfter => return,
                            _ => respond(&mut stream, status, &headers, &bytes).await,
                        }
                    }
                });
            }
        });
        Proxy {
            endpoint,
            counts,
            task,
        }
    }

    fn count(&self, fault: Fault) -> usize {
        self.counts[fault as usize].load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_through_5xx_throttling_and_dropped_connections() {
    let moto = Moto::start();
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
    let url = admin
        .create_queue()
        .queue_name("faults")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let proxy = Proxy::start(&moto.endpoint).await;
    let queue = SqsQueue::builder(url.clone())
        .region("us-east-1")
        .endpoint(&proxy.endpoint)
        .credentials(AwsCredentials::Static {
            access_key_id: "AKIDFAULTS".into(),
            secret_access_key: "faults-secret".to_owned().into(),
            session_token: None,
        })
        .build()
        .await
        .unwrap();

    let total = 300;
    let messages: Vec<OutgoingMessage> = (0..total)
        .map(|i| {
            OutgoingMessage::new(format!("case {i}")).attribute("event-id", format!("evt-{i}"))
        })
        .collect();
    for chunk in messages.chunks(10) {
        for outcome in queue.send_batch(chunk).await.unwrap() {
            outcome.unwrap();
        }
    }

    // Receive until every event id was seen and the queue stays empty.
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        let got = match queue
            .receive(
                &ReceiveOptions::new(10)
                    .wait(Duration::from_secs(1))
                    .visibility(Duration::from_secs(3)),
            )
            .await
        {
            Ok(got) => got,
            // A receive whose answer was lost: its messages come back after the
            // visibility timeout, so the queue is not quiet before that has passed.
            Err(_) => {
                quiet_since = Instant::now();
                continue;
            }
        };
        if got.is_empty() {
            if seen.len() == total && quiet_since.elapsed() > Duration::from_secs(4) {
                break;
            }
            continue;
        }
        quiet_since = Instant::now();
        for m in &got {
            *seen.entry(m.attributes["event-id"].clone()).or_default() += 1;
        }
        let receipts: Vec<_> = got.iter().map(|m| m.receipt.clone()).collect();
        // An ack whose answer was lost is retried; a receipt already used may then be
        // refused, which changes nothing: the message is gone.
        let _ = queue.ack_batch(&receipts).await;
    }
    let missing: Vec<usize> = (0..total)
        .filter(|i| !seen.contains_key(&format!("evt-{i}")))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let lost_answers = proxy.count(Fault::FailAfter) + proxy.count(Fault::CloseAfter);
    assert!(
        duplicates <= lost_answers * 10,
        "{duplicates} duplicates for {lost_answers} lost answers"
    );
    for fault in [
        Fault::FailBefore,
        Fault::Throttle,
        Fault::FailAfter,
        Fault::CloseAfter,
    ] {
        assert!(proxy.count(fault) > 0, "{fault:?} was injected");
    }
    let left = admin
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap();
    let attributes = left.attributes().unwrap();
    assert_eq!(
        attributes[&QueueAttributeName::ApproximateNumberOfMessages],
        "0"
    );
    assert_eq!(
        attributes[&QueueAttributeName::ApproximateNumberOfMessagesNotVisible],
        "0"
    );
    eprintln!(
        "sent {total}, received {} ({duplicates} duplicates); injected: {} failed before, {} throttled, {} failed after, {} closed after",
        seen.values().sum::<usize>(),
        proxy.count(Fault::FailBefore),
        proxy.count(Fault::Throttle),
        proxy.count(Fault::FailAfter),
        proxy.count(Fault::CloseAfter)
    );
}
