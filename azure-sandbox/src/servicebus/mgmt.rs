//! Service Bus's request/response nodes: `$cbs` (claims-based security: put-token) and
//! `<entity>/$management` (lock renewal, peek, scheduling, deferred messages, settlement by
//! lock token, session locks and state).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use fe2o3_amqp_types::messaging::{
    AmqpValue, ApplicationProperties, Body, Message, Properties,
    message::__private::{Deserializable, Serializable},
};
use fe2o3_amqp_types::primitives::{Array, Binary, OrderedMap, SimpleValue, Symbol};
use hmac::{Hmac, Mac};
use serde_amqp::Value;
use sha2::Sha256;
use uuid::Uuid;

use super::broker::{AmqpMessage, SbError, Settle, timestamp};
use super::conn::Shared;

/// A reply to `request`: its correlation id, status, description and body.
fn reply(
    request: &AmqpMessage,
    code_key: &str,
    status: i32,
    description: &str,
    body: Value,
) -> AmqpMessage {
    let properties = request.properties.as_ref();
    let correlation = properties.and_then(|p| p.message_id.clone());
    let to = properties.and_then(|p| p.reply_to.clone());
    let description_key = if code_key == "status-code" {
        "status-description"
    } else {
        "statusDescription"
    };
    let mut application = OrderedMap::new();
    application.insert(code_key.to_owned(), SimpleValue::Int(status));
    application.insert(
        description_key.to_owned(),
        SimpleValue::String(description.to_owned()),
    );
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            correlation_id: correlation,
            to,
            ..Properties::default()
        }),
        application_properties: Some(ApplicationProperties(application)),
        body: Body::Value(AmqpValue(body)),
        footer: None,
    }
}

fn failure(request: &AmqpMessage, code_key: &str, error: &SbError) -> AmqpMessage {
    let mut message = reply(
        request,
        code_key,
        error.status,
        &error.description,
        Value::Null,
    );
    if let Some(application) = message.application_properties.as_mut() {
        application.0.insert(
            "errorCondition".to_owned(),
            SimpleValue::Symbol(Symbol::from(error.condition)),
        );
    }
    message
}

fn application_text(message: &AmqpMessage, key: &str) -> Option<String> {
    match message.application_properties.as_ref()?.0.get(key)? {
        SimpleValue::String(s) => Some(s.clone()),
        SimpleValue::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

/// `$cbs`: check a put-token request's shared access signature and remember its
/// audience.
pub(crate) fn cbs(
    shared: &Shared,
    request: &AmqpMessage,
    authorized: &mut Vec<(String, SystemTime)>,
) -> AmqpMessage {
    const KEY: &str = "status-code";
    if application_text(request, "operation").as_deref() != Some("put-token") {
        return failure(
            request,
            KEY,
            &SbError::bad_request("the $cbs node only knows operation put-token"),
        );
    }
    let audience = application_text(request, "name").unwrap_or_default();
    let token = match &request.body {
        Body::Value(AmqpValue(Value::String(token))) => token.clone(),
        _ => {
            return failure(
                request,
                KEY,
                &SbError::bad_request("a put-token request carries the token as an AMQP string"),
            );
        }
    };
    match check_sas(shared, &token) {
        Ok(until) => {
            authorized.push((super::conn_path(&audience), until));
            reply(request, KEY, 202, "Accepted", Value::Null)
        }
        Err(why) => failure(
            request,
            KEY,
            &SbError {
                condition: "amqp:unauthorized-access",
                description: why,
                status: 401,
            },
        ),
    }
}

/// Check a `SharedAccessSignature sr=…&sig=…&se=…&skn=…` token: its expiry.
fn check_sas(shared: &Shared, token: &str) -> Result<SystemTime, String> {
    let fields = token
        .strip_prefix("SharedAccessSignature ")
        .ok_or("the token is not a SharedAccessSignature")?;
    let mut resource = None;
    let mut signature = None;
    let mut expiry = None;
    let mut key_name = None;
    for pair in fields.split('&') {
        match pair.split_once('=') {
            Some(("sr", v)) => resource = Some(v),
            Some(("sig", v)) => signature = Some(v),
            Some(("se", v)) => expiry = Some(v),
            Some(("skn", v)) => key_name = Some(v),
            _ => {}
        }
    }
    let (Some(resource), Some(signature), Some(expiry), Some(key_name)) =
        (resource, signature, expiry, key_name)
    else {
        return Err("the token lacks one of sr, sig, se, skn".to_owned());
    };
    if key_name != shared.key_name {
        return Err(format!(
            "InvalidSignature: the key '{key_name}' is not a key of this namespace"
        ));
    }
    let seconds: u64 = expiry.parse().map_err(|_| "se is not a number")?;
    let until = UNIX_EPOCH + Duration::from_secs(seconds);
    if until <= SystemTime::now() {
        return Err("ExpiredToken: the token has expired".to_owned());
    }
    let decoded: String = url::form_urlencoded::parse(format!("s={signature}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .next()
        .unwrap_or_default();
    let given = base64::engine::general_purpose::STANDARD
        .decode(decoded)
        .map_err(|_| "sig is not base64")?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(shared.key.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(format!("{resource}\n{expiry}").as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| "InvalidSignature: the token's signature does not match the key".to_owned())?;
    Ok(until)
}

fn body_map(request: &AmqpMessage) -> OrderedMap<Value, Value> {
    match &request.body {
        Body::Value(AmqpValue(Value::Map(map))) => map.clone(),
        _ => OrderedMap::new(),
    }
}

fn field<'a>(map: &'a OrderedMap<Value, Value>, key: &str) -> Option<&'a Value> {
    map.get(&Value::String(key.to_owned()))
        .or_else(|| map.get(&Value::Symbol(Symbol::from(key))))
}

fn values(value: Option<&Value>) -> Vec<Value> {
    match value {
        Some(Value::Array(a)) => a.0.clone(),
        Some(Value::List(l)) => l.clone(),
        Some(v) => vec![v.clone()],
        None => Vec::new(),
    }
}

fn uuids(value: Option<&Value>) -> Vec<Uuid> {
    values(value)
        .into_iter()
        .filter_map(|v| match v {
            Value::Uuid(u) => Some(Uuid::from_bytes(<[u8; 16]>::from(u))),
            Value::String(s) => Uuid::parse_str(&s).ok(),
            _ => None,
        })
        .collect()
}

fn longs(value: Option<&Value>) -> Vec<i64> {
    values(value)
        .into_iter()
        .filter_map(|v| match v {
            Value::Long(n) => Some(n),
            Value::Int(n) => Some(i64::from(n)),
            Value::Ulong(n) => i64::try_from(n).ok(),
            Value::Uint(n) => Some(i64::from(n)),
            _ => None,
        })
        .collect()
}

fn int(value: Option<&Value>) -> Option<i64> {
    longs(value).first().copied()
}

fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Symbol(s) => Some(s.0.clone()),
        _ => None,
    }
}

fn map_of(entries: Vec<(&str, Value)>) -> Value {
    let mut map = OrderedMap::new();
    for (k, v) in entries {
        map.insert(Value::String(k.to_owned()), v);
    }
    Value::Map(map)
}

fn encoded(message: &AmqpMessage) -> Value {
    Value::Binary(Binary::from(super::wire::encode(&Serializable(message))))
}

/// Application properties from a `modified` outcome's annotations (the properties an
/// abandon changes).
pub(crate) fn simple_properties(
    annotations: Option<&OrderedMap<Symbol, Value>>,
) -> Vec<(String, SimpleValue)> {
    annotations
        .map(|a| {
            a.iter()
                .filter_map(|(k, v)| {
                    let value = match v {
                        Value::String(s) => SimpleValue::String(s.clone()),
                        Value::Long(n) => SimpleValue::Long(*n),
                        Value::Int(n) => SimpleValue::Int(*n),
                        Value::Bool(b) => SimpleValue::Bool(*b),
                        Value::Double(d) => SimpleValue::Double(*d),
                        _ => return None,
                    };
                    Some((k.0.clone(), value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `<path>/$management`: one request.
pub(crate) fn request(
    shared: &Shared,
    path: &str,
    request: &AmqpMessage,
    owner: u64,
) -> AmqpMessage {
    const KEY: &str = "statusCode";
    let broker = &shared.broker;
    let operation = application_text(request, "operation").unwrap_or_default();
    let body = body_map(request);
    let outcome: Result<(i32, Value), SbError> =
        match operation.as_str() {
            "com.microsoft:renew-lock" => broker
                .renew(path, &uuids(field(&body, "lock-tokens")))
                .map(|until| {
                    let stamps = until
                        .into_iter()
                        .map(|t| Value::Timestamp(timestamp(t)))
                        .collect();
                    (
                        200,
                        map_of(vec![("expirations", Value::Array(Array(stamps)))]),
                    )
                }),
            "com.microsoft:peek-message" => {
                let from = int(field(&body, "from-sequence-number")).unwrap_or(0);
                let count = int(field(&body, "message-count")).unwrap_or(1).max(1);
                let found = broker.peek(path, from, usize::try_from(count).unwrap_or(1));
                if found.is_empty() {
                    Ok((204, Value::Null))
                } else {
                    let messages = found
                        .iter()
                        .map(|m| map_of(vec![("message", encoded(m))]))
                        .collect();
                    Ok((200, map_of(vec![("messages", Value::List(messages))])))
                }
            }
            "com.microsoft:schedule-message" => {
                let mut batch = Vec::new();
                for entry in values(field(&body, "messages")) {
                    let Value::Map(entry) = entry else { continue };
                    let Some(Value::Binary(bytes)) = field(&entry, "message") else {
                        continue;
                    };
                    match serde_amqp::from_slice::<Deserializable<AmqpMessage>>(bytes) {
                        Ok(m) => batch.push((m.0, bytes.len())),
                        Err(e) => {
                            return failure(
                                request,
                                KEY,
                                &SbError::bad_request(format!(
                                    "a scheduled message does not decode: {e}"
                                )),
                            );
                        }
                    }
                }
                broker.schedule(path, batch).map(|numbers| {
                    let numbers = numbers.into_iter().map(Value::Long).collect();
                    (
                        200,
                        map_of(vec![("sequence-numbers", Value::Array(Array(numbers)))]),
                    )
                })
            }
            "com.microsoft:cancel-scheduled-message" => broker
                .cancel_scheduled(path, &longs(field(&body, "sequence-numbers")))
                .map(|()| (200, Value::Null)),
            "com.microsoft:receive-by-sequence-number" => {
                // receiver-settle-mode 0 is receive-and-delete, 1 peek-lock.
                let delete = int(field(&body, "receiver-settle-mode")) == Some(0);
                broker
                    .receive_deferred(path, &longs(field(&body, "sequence-numbers")), delete)
                    .map(|found| {
                        let messages = found
                            .iter()
                            .map(|d| {
                                let mut entry = vec![("message", encoded(&d.message))];
                                if let Some(token) = d.lock_token {
                                    entry.push((
                                        "lock-token",
                                        Value::Uuid(serde_amqp::primitives::Uuid::from(
                                            *token.as_bytes(),
                                        )),
                                    ));
                                }
                                map_of(entry)
                            })
                            .collect();
                        (200, map_of(vec![("messages", Value::List(messages))]))
                    })
            }
            "com.microsoft:update-disposition" => {
                let how = match text(field(&body, "disposition-status")).as_deref() {
                    Some("completed") => Ok(Settle::Complete),
                    Some("abandoned") => Ok(Settle::Abandon(Vec::new())),
                    Some("defered" | "deferred") => Ok(Settle::Defer),
                    Some("suspended") => Ok(Settle::DeadLetter {
                        reason: text(field(&body, "deadletter-reason")),
                        description: text(field(&body, "deadletter-description")),
                    }),
                    other => Err(SbError::bad_request(format!(
                        "unknown disposition-status {other:?}"
                    ))),
                };
                how.and_then(|how| {
                    for token in uuids(field(&body, "lock-tokens")) {
                        broker.settle(path, token, how.clone())?;
                    }
                    Ok((200, Value::Null))
                })
            }
            "com.microsoft:renew-session-lock" => {
                let session = text(field(&body, "session-id")).unwrap_or_default();
                broker.renew_session(path, &session, owner).map(|until| {
                    (
                        200,
                        map_of(vec![("expiration", Value::Timestamp(timestamp(until)))]),
                    )
                })
            }
            "com.microsoft:get-session-state" => {
                let session = text(field(&body, "session-id")).unwrap_or_default();
                broker.session_state(path, &session, None).map(|state| {
                    let value = state.map_or(Value::Null, |s| Value::Binary(Binary::from(s)));
                    (200, map_of(vec![("session-state", value)]))
                })
            }
            "com.microsoft:set-session-state" => {
                let session = text(field(&body, "session-id")).unwrap_or_default();
                let value = match field(&body, "session-state") {
                    Some(Value::Binary(b)) => Some(b.to_vec()),
                    _ => None,
                };
                broker
                    .session_state(path, &session, Some(value))
                    .map(|_| (200, Value::Null))
            }
            other => Err(SbError {
                condition: "amqp:not-implemented",
                description: format!(
                    "The management operation '{other}' is not supported by the sandbox."
                ),
                status: 501,
            }),
        };
    match outcome {
        Ok((status, body)) => reply(
            request,
            KEY,
            status,
            if status == 204 { "No Content" } else { "OK" },
            body,
        ),
        Err(error) => failure(request, KEY, &error),
    }
}
