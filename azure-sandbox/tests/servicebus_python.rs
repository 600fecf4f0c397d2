//! Microsoft's Python Service Bus client (`azure-servicebus`, installed by
//! scripts/test.sh) runs unchanged against the Service Bus sandbox: tokens on `$cbs`,
//! sends and batches, peek-lock receives and every settlement, lock renewal and expiry,
//! dead letters, deferral, scheduling, duplicate detection and sessions, as the client
//! expects them.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::time::Duration;

use azure_sandbox::{
    CorrelationFilter, QueueOptions, RuleFilter, ServiceBus, ServiceBusConfig, TopicOptions,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_accepts_the_service_bus_sandbox() {
    let bus = ServiceBus::start(ServiceBusConfig::default())
        .await
        .unwrap();
    bus.create_queue(
        "cases",
        QueueOptions {
            lock_duration: Duration::from_secs(2),
            max_delivery_count: 3,
            ..QueueOptions::default()
        },
    );
    bus.create_queue(
        "cases-dedup",
        QueueOptions {
            duplicate_detection: Some(Duration::from_secs(600)),
            ..QueueOptions::default()
        },
    );
    bus.create_queue(
        "cases-sessions",
        QueueOptions {
            requires_session: true,
            ..QueueOptions::default()
        },
    );
    bus.create_topic("case-events", TopicOptions::default());
    let rules = [
        ("all", RuleFilter::True),
        (
            "closed",
            RuleFilter::Sql("type = 'case.closed' AND amount > 100".to_owned()),
        ),
        (
            "billing",
            RuleFilter::Correlation(CorrelationFilter {
                subject: Some("invoice".to_owned()),
                ..CorrelationFilter::default()
            }),
        ),
    ];
    for (name, filter) in rules {
        bus.create_subscription(
            "case-events",
            name,
            QueueOptions::default(),
            vec![("$Default".to_owned(), filter)],
        )
        .unwrap();
    }
    let script = moodbridge_core::testing::package_dir(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python/servicebus_client.py");
    let out = tokio::process::Command::new(moodbridge_core::testing::venv_python())
        .arg(script)
        .env("SB_CONNECTION", bus.connection_string())
        .output()
        .await
        .expect("the venv's python (run ./scripts/test.sh once to install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the Python client failed against the Service Bus sandbox:\n{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(found["received"], 4);
    // The header's delivery count: prior deliveries (the client shows 0 on the first).
    assert_eq!(found["delivery_counts"], serde_json::json!([0, 1, 2]));
    assert_eq!(
        found["dead_letter"],
        serde_json::json!(["bad json", "Invalid", "not JSON"])
    );
    assert_eq!(found["lock_lost"], true);
    assert_eq!(found["deduplicated"], serde_json::json!(["first"]));
    assert_eq!(found["sessionless_refused"], true);
    assert_eq!(
        found["next_session"],
        serde_json::json!(["A", ["A0", "A1", "A2"]])
    );
    assert_eq!(
        found["topics"],
        serde_json::json!({
            "all": ["closed big", "closed small", "invoice"],
            "closed": ["closed big"],
            "billing": ["invoice"],
        })
    );
    assert_eq!(found["wrong_key"], "refused");
    bus.stop().await;
}
