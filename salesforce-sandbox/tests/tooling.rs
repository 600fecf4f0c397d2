//! The Tooling API's query resource for `ManagedEventSubscription`: the records a Pub/Sub
//! client looks a managed subscription up by (by developer name or by id, 15 or 18
//! characters), and Salesforce's errors for another object, an unknown column and a
//! missing session.
#![cfg(feature = "pubsub")]
#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use salesforce_sandbox::{Sandbox, SandboxConfig};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_event_subscriptions_are_found_by_name_or_id() {
    let sb = Sandbox::new(SandboxConfig::default())
        .start()
        .await
        .unwrap();
    let id = sb.define_managed_subscription("Case_Sync", "/data/CaseChangeEvent", false);
    sb.define_managed_subscription("Other", "/event/Other__e", true);
    let token = sb.issue_token();
    let http = reqwest::Client::new();
    let query = |soql: String, token: String| {
        let request = http
            .get(format!(
                "{}/services/data/v62.0/tooling/query/?q={}",
                sb.url(),
                url::form_urlencoded::byte_serialize(soql.as_bytes()).collect::<String>()
            ))
            .bearer_auth(token);
        async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let select = "SELECT Id, DeveloperName, Metadata FROM ManagedEventSubscription";
    let (status, body) = query(
        format!("{select} WHERE DeveloperName='Case_Sync' LIMIT 1"),
        token.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["size"], 1);
    let record = &body["records"][0];
    assert_eq!(record["Id"], id.as_str());
    assert_eq!(record["attributes"]["type"], "ManagedEventSubscription");
    assert_eq!(record["Metadata"]["topicName"], "/data/CaseChangeEvent");
    assert_eq!(record["Metadata"]["defaultReplay"], "LATEST");
    assert_eq!(record["Metadata"]["state"], "RUN");
    for by_id in [id.clone(), id[..15].to_owned()] {
        let (_, body) = query(format!("{select} WHERE Id='{by_id}'"), token.clone()).await;
        assert_eq!(body["size"], 1, "{by_id}: {body}");
        assert_eq!(body["records"][0]["DeveloperName"], "Case_Sync");
    }
    let (_, body) = query(
        format!("{select} WHERE DeveloperName='Nope'"),
        token.clone(),
    )
    .await;
    assert_eq!(body["size"], 0);
    let (_, body) = query(select.to_owned(), token.clone()).await;
    assert_eq!(body["size"], 2);

    let (status, body) = query("SELECT Id FROM ApexClass".into(), token.clone()).await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_TYPE", "{body}");
    let (status, body) = query(
        "SELECT Id, Secret FROM ManagedEventSubscription".into(),
        token.clone(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["errorCode"], "INVALID_FIELD", "{body}");
    let (status, body) = query(select.to_owned(), "not-a-session".into()).await;
    assert_eq!(status, 401);
    assert_eq!(body[0]["errorCode"], "INVALID_SESSION_ID", "{body}");
    sb.stop().await;
}
