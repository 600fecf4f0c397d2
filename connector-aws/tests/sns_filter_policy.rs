//! The event consumers' filter policies (`moodbridge_core::engine::FilterPolicy`, Amazon
//! SNS's syntax over the message body) decided side by side with an independent
//! implementation: moto's SNS, driven by the AWS SDK. Each policy is a subscription of
//! an SQS queue to one topic (`FilterPolicyScope = MessageBody`, raw delivery); every
//! body is published once; what reached each queue must be exactly what our policy
//! matches.
//!
//! Where moto departs from Amazon's published behaviour the case is listed with both
//! answers, and checked to still depart, so that a moto fix shows up here.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod support;

use std::collections::BTreeSet;

use aws_sdk_sns::config::{BehaviorVersion, Credentials, Region};
use moodbridge_core::engine::FilterPolicy;
use serde_json::{Value, json};
use support::Moto;

/// Bodies: the SNS guide's example message and variants of it, each with its number.
fn bodies() -> Vec<Value> {
    let base = json!({
        "customer_interests": ["soccer", "rugby", "hockey"],
        "store": "example_corp",
        "event": "order_placed",
        "price_usd": 210.75,
        "data": {"Priority": "High", "Case": {"Status": "Open"}}
    });
    // (path, new value; None removes the key)
    let variants: [(&[&str], Option<Value>); 12] = [
        (&[], None),
        (&["event"], Some(json!("order_cancelled"))),
        (&["store"], Some(json!("other_shop"))),
        (&["price_usd"], Some(json!(99.5))),
        (&["price_usd"], Some(json!(1000))),
        (&["store"], None),
        (&["customer_interests"], Some(json!(["baseball"]))),
        (&["data", "Priority"], Some(json!("Low"))),
        (&["data", "Case", "Status"], Some(json!("Closed"))),
        (&["coupon"], Some(json!("SAVE10"))),
        (&["store"], Some(json!("example_corp_west"))),
        (&["event"], Some(json!("order_placed_again"))),
    ];
    variants
        .iter()
        .enumerate()
        .map(|(n, (path, value))| {
            let mut b = base.clone();
            if let Some((last, parents)) = path.split_last() {
                let mut at = &mut b;
                for p in parents {
                    at = &mut at[*p];
                }
                let object = at.as_object_mut().unwrap();
                match value {
                    Some(v) => object.insert((*last).to_owned(), v.clone()),
                    None => object.remove(*last),
                };
            }
            b["n"] = json!(n);
            b
        })
        .collect()
}

/// Policies on which moto and Amazon's documentation agree.
fn policies() -> Vec<Value> {
    vec![
        json!({"store": ["example_corp"]}),
        json!({"store": ["example_corp"], "event": ["order_placed"]}),
        json!({"customer_interests": ["rugby", "football"]}),
        json!({"store": [{"prefix": "example"}]}),
        json!({"store": [{"suffix": "_corp"}]}),
        json!({"store": [{"equals-ignore-case": "example_corp"}]}),
        json!({"event": [{"anything-but": "order_cancelled"}]}),
        json!({"event": [{"anything-but": ["order_cancelled", "order_placed"]}]}),
        json!({"event": [{"anything-but": {"prefix": "order_placed"}}]}),
        json!({"price_usd": [{"numeric": [">=", 100]}]}),
        json!({"price_usd": [{"numeric": [">", 100, "<=", 500]}]}),
        json!({"price_usd": [{"numeric": ["=", 210.75]}]}),
        json!({"price_usd": [210.75]}),
        json!({"coupon": [{"exists": true}]}),
        json!({"store": [{"exists": false}]}),
        json!({"data": {"Priority": ["High"]}}),
        json!({"data": {"Case": {"Status": ["Open"]}}}),
        json!({"data": {"Priority": ["High"], "Case": {"Status": [{"prefix": "Cl"}]}}}),
    ]
}

struct Sns {
    sns: aws_sdk_sns::Client,
    sqs: aws_sdk_sqs::Client,
    topic: String,
}

impl Sns {
    async fn new(endpoint: &str) -> Sns {
        let credentials = Credentials::new("test", "test", None, None, "static");
        let sns = aws_sdk_sns::Client::from_conf(
            aws_sdk_sns::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(endpoint)
                .credentials_provider(credentials.clone())
                .build(),
        );
        let sqs = aws_sdk_sqs::Client::from_conf(
            aws_sdk_sqs::Config::builder()
                .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
                .region(aws_sdk_sqs::config::Region::new("us-east-1"))
                .endpoint_url(endpoint)
                .credentials_provider(credentials)
                .build(),
        );
        let topic = sns
            .create_topic()
            .name("events")
            .send()
            .await
            .unwrap()
            .topic_arn
            .unwrap();
        Sns { sns, sqs, topic }
    }

    /// A queue subscribed with `policy` over the body; its URL.
    async fn subscribe(&self, name: &str, policy: &Value) -> String {
        let url = self
            .sqs
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let arn = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        self.sns
            .subscribe()
            .topic_arn(&self.topic)
            .protocol("sqs")
            .endpoint(arn)
            .attributes("FilterPolicy", policy.to_string())
            .attributes("FilterPolicyScope", "MessageBody")
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .unwrap_or_else(|e| panic!("moto refused {policy}: {e:?}"));
        url
    }

    async fn publish(&self, body: &Value) {
        self.sns
            .publish()
            .topic_arn(&self.topic)
            .message(body.to_string())
            .send()
            .await
            .unwrap();
    }

    /// The numbers of the bodies delivered to queue `url`.
    async fn delivered(&self, url: &str) -> BTreeSet<u64> {
        let mut out = BTreeSet::new();
        loop {
            let got = self
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .send()
                .await
                .unwrap();
            let messages = got.messages.unwrap_or_default();
            if messages.is_empty() {
                return out;
            }
            for m in messages {
                let body: Value = serde_json::from_str(m.body.as_deref().unwrap()).unwrap();
                out.insert(body["n"].as_u64().unwrap());
                self.sqs
                    .delete_message()
                    .queue_url(url)
                    .receipt_handle(m.receipt_handle.unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
}

fn ours(policy: &Value, bodies: &[Value]) -> BTreeSet<u64> {
    let policy = FilterPolicy::parse(policy).unwrap();
    bodies
        .iter()
        .filter(|b| policy.matches(b))
        .map(|b| b["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_policies_decide_as_moto_sns_does() {
    let moto = Moto::start();
    let sns = Sns::new(&moto.endpoint).await;
    let bodies = bodies();
    let policies = policies();
    // Departures of moto from Amazon's documentation: (policy, what Amazon documents,
    // which is what we do).
    let departures = [
        // "It also matches the following message body (because it contains a value that
        // isn't rugby or tennis)": moto wants every element to differ.
        json!({"customer_interests": [{"anything-but": ["rugby", "tennis"]}]}),
        // equals-ignore-case ignores case on both sides; moto lowercases only the body.
        json!({"store": [{"equals-ignore-case": "EXAMPLE_CORP"}]}),
    ];
    let mut queues = Vec::new();
    for (i, policy) in policies.iter().chain(departures.iter()).enumerate() {
        queues.push(sns.subscribe(&format!("policy-{i}"), policy).await);
    }
    for body in &bodies {
        sns.publish(body).await;
    }
    let mut compared = 0;
    for (i, policy) in policies.iter().enumerate() {
        let theirs = sns.delivered(&queues[i]).await;
        assert_eq!(
            ours(policy, &bodies),
            theirs,
            "policy {policy}: ours vs moto's"
        );
        compared += bodies.len();
    }
    println!("{compared} (policy, body) decisions agree with moto");
    // What Amazon documents for them: every body for the first (each has a value other
    // than rugby or tennis), and every body whose store is example_corp for the second.
    let all: BTreeSet<u64> = (0..bodies.len() as u64).collect();
    let documented = [
        all.clone(),
        all.iter()
            .copied()
            .filter(|n| ![2, 5, 10].contains(n))
            .collect(),
    ];
    for (k, policy) in departures.iter().enumerate() {
        let theirs = sns.delivered(&queues[policies.len() + k]).await;
        assert_eq!(ours(policy, &bodies), documented[k], "{policy}: ours");
        assert_ne!(
            theirs, documented[k],
            "moto now decides {policy} as documented: move it to policies()"
        );
    }
}
