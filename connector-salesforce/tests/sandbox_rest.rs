//! The sandbox speaks Salesforce's REST API: checked here with a plain HTTP client, the
//! way any Salesforce client (ours, jsforce) talks to it.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use connector_salesforce::soql::{Soql, field};
use salesforce_sandbox::{RunningSandbox, Sandbox, SandboxConfig};
use serde_json::{Value, json};

const V: &str = "/services/data/v62.0";

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(sb: &RunningSandbox) -> Self {
        Client {
            http: reqwest::Client::new(),
            base: sb.url().to_owned(),
            token: sb.issue_token(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (
            status,
            headers,
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, v) = self.call(reqwest::Method::GET, path, None).await;
        (s, v)
    }

    async fn query(&self, soql: &str) -> (u16, Value) {
        let url = format!("{V}/query?q={}", urlencode(soql));
        self.get(&url).await
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn sandbox(config: SandboxConfig) -> RunningSandbox {
    Sandbox::new(config).seed(30, 2, 7).start().await.unwrap()
}

#[tokio::test]
async fn versions_and_the_token_endpoint() {
    let sb = sandbox(SandboxConfig::default()).await;
    let http = reqwest::Client::new();
    let versions: Value = http
        .get(format!("{}/services/data", sb.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        versions.as_array().unwrap().last().unwrap()["version"],
        "62.0"
    );

    let ok: Value = http
        .post(format!("{}/services/oauth2/token", sb.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sandbox-client"),
            ("client_secret", "sandbox-secret"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ok["instance_url"], sb.url());
    assert_eq!(ok["token_type"], "Bearer");
    let token = ok["access_token"].as_str().unwrap();
    let limits = http
        .get(format!("{}{V}/limits", sb.url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(limits.status(), 200, "the issued token works");

    let bad = http
        .post(format!("{}/services/oauth2/token", sb.url()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "sandbox-client"),
            ("client_secret", "wrong"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    let refreshed: Value = http
        .post(format!("{}/services/oauth2/token", sb.url()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", sb.issue_refresh_token().as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(refreshed["access_token"].is_string());
    sb.stop().await;
}

#[tokio::test]
async fn an_invalid_or_expired_session_gets_salesforce_error_array() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    assert_eq!(c.get(&format!("{V}/limits")).await.0, 200);
    sb.expire_tokens();
    let (status, body) = c.get(&format!("{V}/limits")).await;
    assert_eq!(status, 401);
    assert_eq!(
        body,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID", "fields": []}])
    );
    sb.stop().await;
}

#[tokio::test]
async fn query_pages_follow_next_records_url_to_the_end() {
    let sb = sandbox(SandboxConfig {
        page_size: 25,
        ..SandboxConfig::default()
    })
    .await;
    let c = Client::new(&sb);
    let (status, mut page) = c.query("SELECT Id, Name FROM Account ORDER BY Name").await;
    assert_eq!(status, 200);
    assert_eq!(page["totalSize"], 30);
    let mut names = Vec::new();
    loop {
        for r in page["records"].as_array().unwrap() {
            assert_eq!(r["attributes"]["type"], "Account");
            names.push(r["Name"].as_str().unwrap().to_owned());
        }
        if page["done"] == true {
            break;
        }
        let next = page["nextRecordsUrl"].as_str().unwrap().to_owned();
        assert!(next.starts_with(&format!("{V}/query/")), "{next}");
        page = c.get(&next).await.1;
    }
    assert_eq!(names.len(), 30);
    let mut sorted = names.clone();
    sorted.sort_by_key(|n| n.to_lowercase());
    assert_eq!(names, sorted, "ORDER BY holds across pages");
    sb.stop().await;
}

#[tokio::test]
async fn filters_built_by_our_builder_select_the_right_records() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let id = c
        .call(
            reqwest::Method::POST,
            &format!("{V}/sobjects/Account"),
            Some(json!({"Name": "O'Brien & \"Sons\" 100%"})),
        )
        .await
        .2["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let q = Soql::select(["Id", "Name"])
        .from("Account")
        .filter(field("Name").eq("O'Brien & \"Sons\" 100%"))
        .build()
        .unwrap();
    let (status, body) = c.query(&q).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totalSize"], 1);
    assert_eq!(body["records"][0]["Id"], id.as_str());

    let q = Soql::select(["Id", "LastName", "Account.Name", "Account.BillingCity"])
        .from("Contact")
        // Every seeded contact's account is another one than the account created above.
        .filter(!field("Account.Name").eq("O'Brien & \"Sons\" 100%"))
        .limit(3)
        .build()
        .unwrap();
    let (status, body) = c.query(&q).await;
    assert_eq!(status, 200, "{body}");
    let r = &body["records"][0];
    assert_eq!(r["Account"]["attributes"]["type"], "Account", "{r}");
    assert!(r["Account"]["Name"].is_string());
    sb.stop().await;
}

#[tokio::test]
async fn crud_upsert_and_query_all_see_the_platforms_stamps() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let (status, _, created) = c
        .call(
            reqwest::Method::POST,
            &format!("{V}/sobjects/Case"),
            Some(json!({"Subject": "Review NDA", "Status": "New"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(created["success"], true);
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, before) = c
        .get(&format!(
            "{V}/sobjects/Case/{id}?fields=Subject,SystemModstamp"
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(before["Subject"], "Review NDA");

    let (status, _, _) = c
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/Case/{id}"),
            Some(json!({"Status": "Working"})),
        )
        .await;
    assert_eq!(status, 204);
    let (_, after) = c.get(&format!("{V}/sobjects/Case/{id}")).await;
    assert_eq!(after["Status"], "Working");
    assert!(
        after["SystemModstamp"].as_str() > before["SystemModstamp"].as_str(),
        "the platform stamps every write"
    );

    // Errors name the problem and the field.
    let (status, _, err) = c
        .call(
            reqwest::Method::POST,
            &format!("{V}/sobjects/Contact"),
            Some(json!({"FirstName": "Ada"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(err[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(err[0]["fields"], json!(["LastName"]));

    // Upsert by external id: created, then updated.
    let path = format!("{V}/sobjects/Account/External_Id__c/EXT-1");
    let (s1, _, b1) = c
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"Name": "Ext One"})),
        )
        .await;
    let (s2, _, b2) = c
        .call(
            reqwest::Method::PATCH,
            &path,
            Some(json!({"Name": "Ext Uno"})),
        )
        .await;
    assert_eq!((s1, b1["created"].clone()), (201, json!(true)));
    assert_eq!((s2, b2["created"].clone()), (200, json!(false)));
    assert_eq!(b1["id"], b2["id"]);
    let (_, by_ext) = c.get(&path).await;
    assert_eq!(by_ext["Name"], "Ext Uno");

    // Delete is soft: query misses it, queryAll finds it with IsDeleted.
    let (status, _, _) = c
        .call(
            reqwest::Method::DELETE,
            &format!("{V}/sobjects/Case/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let q = format!("SELECT Id, IsDeleted FROM Case WHERE Id = '{id}'");
    assert_eq!(c.query(&q).await.1["totalSize"], 0);
    let (_, all) = c.get(&format!("{V}/queryAll?q={}", urlencode(&q))).await;
    assert_eq!(all["totalSize"], 1);
    assert_eq!(all["records"][0]["IsDeleted"], true);
    let (status, gone) = c.get(&format!("{V}/sobjects/Case/{id}")).await;
    assert_eq!(status, 404, "{gone}");
    sb.stop().await;
}

#[tokio::test]
async fn describe_is_cached_with_if_modified_since_and_limits_count_down() {
    let sb = sandbox(SandboxConfig {
        daily_api_limit: 5,
        ..SandboxConfig::default()
    })
    .await;
    let c = Client::new(&sb);
    let (_, global) = c.get(&format!("{V}/sobjects")).await;
    let names: Vec<&str> = global["sobjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Account", "Case", "Contact", "PushTopic"]);

    let (status, headers, describe) = c
        .call(
            reqwest::Method::GET,
            &format!("{V}/sobjects/Contact/describe"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let account_id = describe["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "AccountId")
        .unwrap();
    assert_eq!(account_id["type"], "reference");
    assert_eq!(account_id["referenceTo"], json!(["Account"]));
    assert_eq!(headers["sforce-limit-info"], "api-usage=2/5");
    let last_modified = headers["last-modified"].to_str().unwrap().to_owned();
    let again = c
        .http
        .get(format!("{}{V}/sobjects/Contact/describe", c.base))
        .bearer_auth(&c.token)
        .header("If-Modified-Since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["sforce-limit-info"], "api-usage=3/5");

    // Two more calls spend the allowance; the next is refused with the documented error.
    c.get(&format!("{V}/limits")).await;
    let (_, limits) = c.get(&format!("{V}/limits")).await;
    assert_eq!(limits["DailyApiRequests"]["Remaining"], 0);
    let (status, err) = c.get(&format!("{V}/limits")).await;
    assert_eq!(status, 403);
    assert_eq!(err[0]["errorCode"], "REQUEST_LIMIT_EXCEEDED");
    sb.stop().await;
}

#[tokio::test]
async fn malformed_queries_and_unknown_versions_are_refused_like_salesforce() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let (status, err) = c.query("SELECT Id FROM Account WHERE Name = 'a\\qb'").await;
    assert_eq!(status, 400);
    assert_eq!(err[0]["errorCode"], "MALFORMED_QUERY");
    let (status, err) = c.query("SELECT Nope FROM Account").await;
    assert_eq!(
        (status, err[0]["errorCode"].clone()),
        (400, json!("INVALID_FIELD"))
    );
    let (status, err) = c.query("SELECT Id FROM Nothing").await;
    assert_eq!(
        (status, err[0]["errorCode"].clone()),
        (400, json!("INVALID_TYPE"))
    );
    let (status, _) = c.get("/services/data/v12.0/limits").await;
    assert_eq!(status, 404);
    sb.stop().await;
}

/// Salesforce answers `/query/`, `/sobjects/Account/`, `/limits/` … as it answers the
/// paths without the slash: the same data, the same session and query errors.
#[tokio::test]
async fn paths_with_a_trailing_slash_are_the_same_resources() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let q = urlencode("SELECT Id FROM Account");
    for (with, without) in [
        (format!("{V}/query/?q={q}"), format!("{V}/query?q={q}")),
        (
            format!("{V}/queryAll/?q={q}"),
            format!("{V}/queryAll?q={q}"),
        ),
        (
            format!("{V}/sobjects/Account/describe/"),
            format!("{V}/sobjects/Account/describe"),
        ),
        (format!("{V}/sobjects/"), format!("{V}/sobjects")),
        (format!("{V}/limits/"), format!("{V}/limits")),
        (
            format!("{V}/search/?q={}", urlencode("FIND {Acme}")),
            format!("{V}/search?q={}", urlencode("FIND {Acme}")),
        ),
    ] {
        let (status, body) = c.get(&with).await;
        assert_eq!(status, 200, "{with}: {body}");
        if !with.contains("/limits") {
            assert_eq!(body, c.get(&without).await.1, "{with}");
        }
    }
    let (status, body) = c
        .get(&format!(
            "{V}/query/?q={}",
            urlencode("SELECT Nope FROM Account")
        ))
        .await;
    assert_eq!(
        (status, &body[0]["errorCode"]),
        (400, &json!("INVALID_FIELD")),
        "{body}"
    );
    let id = c.get(&format!("{V}/query?q={q}")).await.1["records"][0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = c.get(&format!("{V}/sobjects/Account/{id}/")).await;
    assert_eq!((status, &body["Id"]), (200, &json!(id)), "{body}");
    sb.expire_tokens();
    let (status, body) = c.get(&format!("{V}/query/?q={q}")).await;
    assert_eq!(
        (status, &body[0]["errorCode"]),
        (401, &json!("INVALID_SESSION_ID")),
        "{body}"
    );
    sb.stop().await;
}

/// An unknown resource is Salesforce's `NOT_FOUND` error array — after the session is
/// checked, so an expired session is told as such.
#[tokio::test]
async fn unknown_resources_are_not_found_after_authentication() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    for path in [
        format!("{V}/nothing/here"),
        format!("{V}/sobjects/Account/a/b/c"),
    ] {
        let (status, _, body) = c.call(reqwest::Method::POST, &path, Some(json!({}))).await;
        assert_eq!(
            (status, &body[0]["errorCode"]),
            (404, &json!("NOT_FOUND")),
            "{path}: {body}"
        );
    }
    sb.expire_tokens();
    let (status, body) = c.get(&format!("{V}/nothing/here")).await;
    assert_eq!(
        (status, &body[0]["errorCode"]),
        (401, &json!("INVALID_SESSION_ID")),
        "{body}"
    );
    sb.stop().await;
}

/// Setting a required field to null is refused as Salesforce refuses it; leaving it out
/// of an update is fine.
#[tokio::test]
async fn an_update_cannot_null_a_required_field() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let (status, _, created) = c
        .call(
            reqwest::Method::POST,
            &format!("{V}/sobjects/Account"),
            Some(json!({"Name": "Acme"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let path = format!("{V}/sobjects/Account/{}", created["id"].as_str().unwrap());
    let (status, _, body) = c
        .call(reqwest::Method::PATCH, &path, Some(json!({"Name": null})))
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(body[0]["fields"], json!(["Name"]));
    let (status, _, _) = c
        .call(reqwest::Method::PATCH, &path, Some(json!({"Phone": "555"})))
        .await;
    assert_eq!(status, 204);
    assert_eq!(c.get(&path).await.1["Name"], "Acme");
    sb.stop().await;
}

/// The token endpoint takes the client's credentials by HTTP Basic (RFC 6749 §2.3.1), and
/// refuses them given twice.
#[tokio::test]
async fn the_token_endpoint_accepts_basic_client_authentication() {
    let sb = sandbox(SandboxConfig::default()).await;
    let http = reqwest::Client::new();
    let url = format!("{}/services/oauth2/token", sb.url());
    let ask = |secret: &'static str, form: &'static [(&'static str, &'static str)]| {
        http.post(&url)
            .basic_auth("sandbox-client", Some(secret))
            .form(form)
            .send()
    };
    let grant: &[(&str, &str)] = &[("grant_type", "client_credentials")];
    let ok = ask("sandbox-secret", grant).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.json::<Value>().await.unwrap()["access_token"].is_string());
    let wrong = ask("wrong", grant).await.unwrap();
    assert_eq!(wrong.status(), 400);
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    let twice = ask(
        "sandbox-secret",
        &[
            ("grant_type", "client_credentials"),
            ("client_secret", "sandbox-secret"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        twice.json::<Value>().await.unwrap()["error"],
        "invalid_request"
    );
    sb.stop().await;
}

/// One response read off a kept-alive HTTP/1.1 connection: its status, or `None` when the
/// server closed the connection instead.
async fn read_response(stream: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> Option<u16> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};
    let mut status_line = String::new();
    if stream.read_line(&mut status_line).await.ok()? == 0 {
        return None;
    }
    let status = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body).await.ok()?;
    Some(status)
}

/// A POST whose body arrives after its headers, answered 404: the connection stays open
/// for the next request (a server that cannot keep it says `Connection: close`).
#[tokio::test]
async fn a_connection_outlives_a_refused_request_whose_body_came_late() {
    use tokio::io::AsyncWriteExt;
    let sb = sandbox(SandboxConfig::default()).await;
    let token = sb.issue_token();
    let addr = sb.url().trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut stream = tokio::io::BufReader::new(stream);
    let body = r#"{"Name":"late"}"#;
    stream
        .get_mut()
        .write_all(
            format!(
                "POST {V}/nothing HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stream.get_mut().write_all(body.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut stream).await, Some(404));
    stream
        .get_mut()
        .write_all(
            format!(
                "GET {V}/limits HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(
        read_response(&mut stream).await,
        Some(200),
        "the second request on the connection is answered"
    );
    sb.stop().await;
}

/// Datetimes anywhere in Salesforce's range compare in queries, before 1970 too.
#[tokio::test]
async fn datetimes_before_1970_compare_in_queries() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    for (soql, expected) in [
        (
            "SELECT Id FROM Account WHERE CreatedDate > 1800-01-01T00:00:00Z",
            30,
        ),
        (
            "SELECT Id FROM Account WHERE CreatedDate < 1969-12-31T23:59:59.500Z",
            0,
        ),
        (
            "SELECT Id FROM Account WHERE CreatedDate < 3999-01-01T00:00:00-08:00",
            30,
        ),
    ] {
        let (status, body) = c.query(soql).await;
        assert_eq!(status, 200, "{soql}: {body}");
        assert_eq!(body["totalSize"], expected, "{soql}");
    }
    sb.stop().await;
}

/// Over 16,384 bytes of URI the sandbox answers 414, as Salesforce does.
#[tokio::test]
async fn an_overlong_uri_is_refused_with_414() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let soql = format!(
        "SELECT Id FROM Account WHERE Name = '{}'",
        "x".repeat(17_000)
    );
    let (status, _) = c.query(&soql).await;
    assert_eq!(status, 414);
    sb.stop().await;
}

/// Field names are case-insensitive in Salesforce: a collections update keyed `"id"`,
/// with `"name"` for `Name`, updates the record.
#[tokio::test]
async fn field_names_are_case_insensitive_in_collections_updates() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let id = c
        .get(&format!(
            "{V}/query?q={}",
            urlencode("SELECT Id FROM Account")
        ))
        .await
        .1["records"][0]["Id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, _, body) = c
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/composite/sobjects"),
            Some(json!({"allOrNone": true, "records": [
                {"attributes": {"type": "Account"}, "id": id, "name": "Lowercase keys"}
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body[0]["success"], true, "{body}");
    let (_, record) = c.get(&format!("{V}/sobjects/Account/{id}")).await;
    assert_eq!(record["Name"], "Lowercase keys");
    sb.stop().await;
}

/// A composite subrequest with a trailing slash reaches the same resource as a direct
/// call does.
#[tokio::test]
async fn composite_subrequests_with_a_trailing_slash_are_routed() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let (status, _, body) = c
        .call(
            reqwest::Method::POST,
            &format!("{V}/composite"),
            Some(json!({"compositeRequest": [
                {"method": "GET", "url": format!("{V}/limits/"), "referenceId": "limits"}
            ]})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["compositeResponse"][0]["httpStatusCode"], 200,
        "{body}"
    );
    sb.stop().await;
}

/// Field and object names are case-insensitive in Salesforce, in writes, reads, queries
/// and upserts alike; answers spell them as the describe does.
#[tokio::test]
async fn field_and_object_names_are_case_insensitive_everywhere() {
    let sb = sandbox(SandboxConfig::default()).await;
    let c = Client::new(&sb);
    let (_, accounts) = c.query("SELECT Id FROM Account LIMIT 1").await;
    let account = accounts["records"][0]["Id"].as_str().unwrap().to_owned();

    // Create, with every name in lower case.
    let (status, _, created) = c
        .call(
            reqwest::Method::POST,
            &format!("{V}/sobjects/contact"),
            Some(json!({"lastname": "Lowercase", "accountid": account, "external_id__c": "LC-1"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();

    // Read, with a lower-case field list.
    let (status, record) = c
        .get(&format!(
            "{V}/sobjects/CONTACT/{id}?fields=lastname,accountid"
        ))
        .await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["LastName"], "Lowercase", "{record}");
    assert_eq!(record["AccountId"], account.as_str(), "{record}");
    assert!(record.get("lastname").is_none(), "{record}");

    // Query, in any case, a relationship field included.
    let (status, rows) = c
        .query(&format!(
            "select id, lastname, account.name from contact where LASTNAME = 'Lowercase' and accountid = '{account}' order by lastName"
        ))
        .await;
    assert_eq!(status, 200, "{rows}");
    assert_eq!(rows["totalSize"], 1, "{rows}");
    let row = &rows["records"][0];
    assert_eq!(row["LastName"], "Lowercase", "{row}");
    assert_eq!(row["Id"], id.as_str(), "{row}");
    assert!(row["Account"]["Name"].is_string(), "{row}");

    // Upsert by an external id named in lower case updates the same record.
    let (status, _, body) = c
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/contact/external_id__c/LC-1"),
            Some(json!({"firstname": "Ada"})),
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let (_, record) = c.get(&format!("{V}/sobjects/Contact/{id}")).await;
    assert_eq!(record["FirstName"], "Ada", "{record}");

    // Update and delete with lower-case names.
    let (status, _, body) = c
        .call(
            reqwest::Method::PATCH,
            &format!("{V}/sobjects/contact/{id}"),
            Some(json!({"LASTNAME": "Upper"})),
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, record) = c.get(&format!("{V}/sobjects/Contact/{id}")).await;
    assert_eq!(record["LastName"], "Upper", "{record}");
    let (status, _, _) = c
        .call(
            reqwest::Method::DELETE,
            &format!("{V}/sobjects/contact/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    sb.stop().await;
}
