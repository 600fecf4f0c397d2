//! The Pub/Sub API on the sandbox (cargo feature `pubsub`): gRPC service
//! `eventbus.v1.PubSub` on the sandbox's own port, serving the org's change events (the
//! same change log as the Streaming API) as Salesforce does: topics
//! `/data/ChangeEvents` and `/data/<Entity>ChangeEvent`, one Avro schema per entity
//! (every field of the object, optional, after the `ChangeEventHeader`; dates as epoch
//! milliseconds; `changedFields` / `nulledFields` as bitmaps over the schema's field
//! positions), replay ids as 8-byte big-endian numbers, `Subscribe` with flow control
//! (`num_requested`, at most 100 a request) and keepalives, authentication by the
//! `accesstoken` / `instanceurl` / `tenantid` headers.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use connector_salesforce::pubsub::EventSchema;
use connector_salesforce::pubsub::proto::pub_sub_server::{PubSub, PubSubServer};
use connector_salesforce::pubsub::proto::{
    CommitReplayRequest, CommitReplayResponse, ConsumerEvent, FetchRequest, FetchResponse,
    ManagedFetchRequest, ManagedFetchResponse, ProducerEvent, PublishRequest, PublishResponse,
    ReplayPreset, SchemaInfo, SchemaRequest, TopicInfo, TopicRequest,
};
use futures::{SinkExt, Stream, StreamExt};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status, Streaming};

use crate::org::ObjectDef;
use crate::state::Core;

/// The org id the sandbox's tokens belong to (the `tenantid` header).
pub(crate) const ORG_ID: &str = "00D8d0000000001EAA";
/// The most events one `FetchRequest` asks for; more are capped.
const MAX_REQUESTED: i32 = 100;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The service, over the sandbox's core.
pub(crate) struct Service {
    core: Arc<Core>,
}

/// Add the service's gRPC routes (`/eventbus.v1.PubSub/<Method>`) to `router`.
pub(crate) fn routes(router: axum::Router, core: Arc<Core>) -> axum::Router {
    router.route_service(
        "/eventbus.v1.PubSub/{*method}",
        PubSubServer::new(Service { core }),
    )
}

impl Service {
    fn authenticate<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = |name: &str| {
            request
                .metadata()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        if !self.core.token_live(header("accesstoken")) {
            return Err(Status::unauthenticated(
                "Invalid session: the access token is expired or invalid",
            ));
        }
        if header("tenantid") != ORG_ID && header("tenantid") != &ORG_ID[..15] {
            return Err(Status::permission_denied(
                "The tenant id does not match the access token's org",
            ));
        }
        Ok(())
    }

    /// What a topic carries: change events (of one entity, or `None`: every entity), or
    /// a platform event.
    fn topic(&self, name: &str) -> Result<Topic, Status> {
        let missing = || Status::not_found(format!("Topic not found: {name}"));
        if let Some(event) = name.strip_prefix("/event/") {
            return self
                .core
                .platform_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(event)
                .cloned()
                .map(Topic::Platform)
                .ok_or_else(missing);
        }
        let entity = crate::cdc::channel_entity(name).map_err(|()| missing())?;
        match entity {
            None => Ok(Topic::Changes(None)),
            Some(entity) => {
                let org = self.core.org();
                org.object(&entity)
                    .cloned()
                    .map(|o| Topic::Changes(Some(o)))
                    .ok_or_else(missing)
            }
        }
    }

    fn platform_schema_of(event: &ObjectDef) -> EventSchema {
        let fields: Vec<Value> = event
            .fields
            .iter()
            .map(|f| {
                if matches!(f.name.as_str(), "CreatedDate" | "CreatedById") {
                    // Required of every publisher.
                    json!({"name": f.name, "type": avro_type(&f.field_type)})
                } else {
                    json!({"name": f.name, "type": ["null", avro_type(&f.field_type)], "default": null})
                }
            })
            .collect();
        named_schema(
            json!({"type": "record", "name": event.name, "namespace": "com.sforce.eventbus", "fields": fields})
                .to_string(),
        )
    }

    fn schema_of(object: &ObjectDef) -> EventSchema {
        named_schema(schema_json(object))
    }

    fn schema_by_id(&self, id: &str) -> Option<EventSchema> {
        let changes = {
            let org = self.core.org();
            org.objects().map(Self::schema_of).find(|s| s.id == id)
        };
        changes.or_else(|| {
            self.core
                .platform_events
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .map(Self::platform_schema_of)
                .find(|s| s.id == id)
        })
    }
}

/// What a topic carries.
enum Topic {
    /// Change events: of one entity, or (`None`) of every one.
    Changes(Option<ObjectDef>),
    /// A platform event.
    Platform(ObjectDef),
}

/// Which events of the log a subscription delivers.
#[derive(Clone)]
enum Filter {
    /// Change events of one entity, or (`None`) of every one.
    Changes(Option<String>),
    /// The platform events of a topic, written in its schema.
    Platform {
        topic: String,
        schema: Box<EventSchema>,
    },
}

impl Filter {
    fn of(name: &str, topic: &Topic) -> Filter {
        match topic {
            Topic::Changes(object) => Filter::Changes(object.as_ref().map(|o| o.name.clone())),
            Topic::Platform(event) => Filter::Platform {
                topic: name.to_owned(),
                schema: Box::new(Service::platform_schema_of(event)),
            },
        }
    }
}

/// A schema the sandbox wrote, named by its fingerprint: the first 16 bytes of the
/// SHA-256 of its JSON, base64url.
fn named_schema(json: String) -> EventSchema {
    use base64::Engine;
    let digest = Sha256::digest(json.as_bytes());
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16]);
    EventSchema::parse(id, json).expect("the sandbox writes valid schemas")
}

/// The fields of an entity's change event, after the header: every field but `Id` and
/// `IsDeleted`, in the object's order.
fn event_fields(object: &ObjectDef) -> impl Iterator<Item = &crate::org::FieldDef> {
    object
        .fields
        .iter()
        .filter(|f| f.name != "Id" && f.name != "IsDeleted")
}

fn avro_type(field_type: &str) -> &'static str {
    match field_type {
        "boolean" => "boolean",
        "int" => "int",
        "double" | "currency" | "percent" => "double",
        "datetime" | "date" => "long",
        _ => "string",
    }
}

/// An entity's change event schema, as JSON.
fn schema_json(object: &ObjectDef) -> String {
    let entity = object.name.trim_end_matches("__c");
    let name = if object.is_custom() {
        format!("{entity}__ChangeEvent")
    } else {
        format!("{entity}ChangeEvent")
    };
    let header = json!({
        "name": "ChangeEventHeader",
        "type": {
            "type": "record", "name": "ChangeEventHeader", "namespace": "com.sforce.eventbus",
            "fields": [
                {"name": "entityName", "type": "string"},
                {"name": "recordIds", "type": {"type": "array", "items": "string"}},
                {"name": "changeType", "type": {"type": "enum", "name": "ChangeType", "namespace": "com.sforce.eventbus",
                    "symbols": ["CREATE", "UPDATE", "DELETE", "UNDELETE", "GAP_CREATE", "GAP_UPDATE", "GAP_DELETE", "GAP_UNDELETE", "GAP_OVERFLOW"]}},
                {"name": "changeOrigin", "type": "string"},
                {"name": "transactionKey", "type": "string"},
                {"name": "sequenceNumber", "type": "int"},
                {"name": "commitTimestamp", "type": "long"},
                {"name": "commitNumber", "type": "long"},
                {"name": "commitUser", "type": "string"},
                {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
                {"name": "diffFields", "type": {"type": "array", "items": "string"}},
                {"name": "changedFields", "type": {"type": "array", "items": "string"}}
            ]
        }
    });
    let mut fields = vec![header];
    for f in event_fields(object) {
        fields.push(
            json!({"name": f.name, "type": ["null", avro_type(&f.field_type)], "default": null}),
        );
    }
    json!({"type": "record", "name": name, "namespace": "com.sforce.eventbus", "fields": fields})
        .to_string()
}

/// Field names as a bitmap over their positions in `object`'s event schema (the header
/// is position 0): `["0x…"]`, or `[]` for none.
fn bitmap(object: &ObjectDef, names: &[Value]) -> Vec<String> {
    let positions: Vec<usize> = names
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|n| {
            event_fields(object)
                .position(|f| f.name == n)
                .map(|p| p + 1)
        })
        .collect();
    let Some(&top) = positions.iter().max() else {
        return Vec::new();
    };
    let mut digits = vec![0u8; top / 4 + 1];
    for p in positions {
        digits[p / 4] |= 1 << (p % 4);
    }
    let hex: String = digits.iter().rev().map(|d| format!("{d:X}")).collect();
    vec![format!("0x{hex}")]
}

/// A change event of the log as its entity's Avro payload: every field, unchanged ones
/// null; dates as epoch milliseconds; the header's field lists as bitmaps.
fn payload(object: &ObjectDef, message: &Value) -> Value {
    let body = &message["payload"];
    let mut header = body["ChangeEventHeader"].clone();
    for key in ["changedFields", "nulledFields", "diffFields"] {
        let names = header[key].as_array().cloned().unwrap_or_default();
        header[key] = json!(bitmap(object, &names));
    }
    let mut out = Map::new();
    out.insert("ChangeEventHeader".into(), header);
    for f in event_fields(object) {
        let value = match body.get(&f.name) {
            None | Some(Value::Null) => Value::Null,
            Some(v) if avro_type(&f.field_type) == "long" => v
                .as_str()
                .and_then(epoch_ms)
                .map_or(Value::Null, Value::from),
            Some(v) if avro_type(&f.field_type) == "string" && !v.is_string() => {
                Value::from(v.to_string())
            }
            Some(v) => v.clone(),
        };
        out.insert(f.name.clone(), value);
    }
    Value::Object(out)
}

fn epoch_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .map(|t| t.timestamp_millis())
        .ok()
        .or_else(|| {
            chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| t.and_utc().timestamp_millis())
        })
}

/// Publishing to a platform event topic: the event's definition and schema.
struct Publishing {
    topic: String,
    event: ObjectDef,
    schema: EventSchema,
}

/// The longest event id (`ProducerEvent.id`) a publisher may give.
const MAX_EVENT_ID: usize = 36;

impl Publishing {
    /// Publishing to `topic`: a platform event's (change events are the platform's).
    fn of(service: &Service, topic: &str) -> Result<Publishing, Status> {
        let Topic::Platform(event) = service.topic(topic)? else {
            return Err(Status::permission_denied(format!(
                "Publishing is not allowed on {topic}: change events are published by the platform"
            )));
        };
        Ok(Publishing {
            topic: topic.to_owned(),
            schema: Service::platform_schema_of(&event),
            event,
        })
    }

    /// Publish `events`: a result for each, in order. An event is refused for another
    /// schema than the topic's, a payload that does not read, a missing `CreatedDate` or
    /// `CreatedById`, or an id over 36 characters; an event without an id gets a UUID
    /// (a refused one's correlation key stays empty).
    fn publish(&self, core: &Core, events: Vec<ProducerEvent>) -> PublishResponse {
        use connector_salesforce::pubsub::proto::{Error, ErrorCode, PublishResult};
        let results = events
            .into_iter()
            .map(|produced| {
                let refuse = |msg: String| PublishResult {
                    replay_id: Vec::new(),
                    error: Some(Error {
                        code: ErrorCode::Publish as i32,
                        msg,
                    }),
                    correlation_key: produced.id.clone(),
                };
                if produced.id.chars().count() > MAX_EVENT_ID {
                    return refuse(format!(
                        "The event id is {} characters long: at most {MAX_EVENT_ID} are allowed",
                        produced.id.chars().count()
                    ));
                }
                if produced.schema_id != self.schema.id {
                    return refuse(format!(
                        "The event's schema {} is not the topic's ({})",
                        produced.schema_id, self.schema.id
                    ));
                }
                let fields = match self.schema.decode(&produced.payload) {
                    Ok(fields) => fields,
                    Err(e) => return refuse(format!("The payload does not read: {e}")),
                };
                for system in ["CreatedDate", "CreatedById"] {
                    if fields[system].is_null() {
                        return refuse(format!("The required field {system} is missing"));
                    }
                }
                let replay = core.org_mut().changes.record_platform_event(
                    &self.topic,
                    &self.event.name,
                    fields,
                );
                PublishResult {
                    replay_id: replay_bytes(replay),
                    error: None,
                    correlation_key: if produced.id.is_empty() {
                        uuid::Uuid::new_v4().to_string()
                    } else {
                        produced.id.clone()
                    },
                }
            })
            .collect();
        PublishResponse {
            results,
            schema_id: self.schema.id.clone(),
            rpc_id: crate::state::secret_text(),
        }
    }
}

/// A response of a subscription stream: `Subscribe`'s or `ManagedSubscribe`'s.
trait Batch: Clone + Send + 'static {
    fn batch(events: Vec<ConsumerEvent>, latest: i64, pending: i32) -> Self;
}

impl Batch for FetchResponse {
    fn batch(events: Vec<ConsumerEvent>, latest: i64, pending: i32) -> Self {
        FetchResponse {
            events,
            latest_replay_id: replay_bytes(latest),
            rpc_id: crate::state::secret_text(),
            pending_num_requested: pending,
        }
    }
}

impl Batch for ManagedFetchResponse {
    fn batch(events: Vec<ConsumerEvent>, latest: i64, pending: i32) -> Self {
        ManagedFetchResponse {
            events,
            latest_replay_id: replay_bytes(latest),
            rpc_id: crate::state::secret_text(),
            pending_num_requested: pending,
            commit_response: None,
        }
    }
}

type Outbox<R> = futures::channel::mpsc::Sender<Result<R, Status>>;

/// Send `response` on the subscription, waiting while the client reads slowly; `false`
/// when the stream is gone or the sandbox stops (a stalled reader must not hold the
/// server's shutdown).
async fn deliver<R: Clone>(tx: &mut Outbox<R>, response: R, core: &Core) -> bool {
    loop {
        if core.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return false;
        }
        match tokio::time::timeout(Duration::from_millis(50), tx.send(Ok(response.clone()))).await {
            Ok(sent) => return sent.is_ok(),
            Err(_) => continue,
        }
    }
}

/// Commit `commit`'s replay id as managed subscription `id`'s position; the answer (an
/// error for a replay id the bus does not hold).
fn commit_replay(core: &Core, id: &str, commit: &CommitReplayRequest) -> ManagedFetchResponse {
    let latest = core.org().changes.latest();
    let replay = <[u8; 8]>::try_from(commit.replay_id.as_slice())
        .ok()
        .map(i64::from_be_bytes)
        .filter(|r| (0..=latest).contains(r));
    let error = match replay {
        Some(r) => {
            if let Some(m) = core
                .managed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get_mut(id)
            {
                m.committed = Some(r);
            }
            None
        }
        None => Some(connector_salesforce::pubsub::proto::Error {
            code: connector_salesforce::pubsub::proto::ErrorCode::Commit as i32,
            msg: "The replay id to commit is not one the bus holds".to_owned(),
        }),
    };
    let mut answer = ManagedFetchResponse::batch(Vec::new(), latest, 0);
    answer.commit_response = Some(CommitReplayResponse {
        commit_request_id: commit.commit_request_id.clone(),
        replay_id: commit.replay_id.clone(),
        error,
        process_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
    });
    answer
}

/// Where a subscription starts: `preset`, or after `replay_id` (checked against the
/// retention window).
fn start_of(core: &Core, preset: ReplayPreset, replay_id: &[u8]) -> Result<i64, Status> {
    let (oldest, latest) = {
        let org = core.org();
        (org.changes.oldest(), org.changes.latest())
    };
    let floor = oldest.map_or(latest, |o| o - 1);
    match preset {
        ReplayPreset::Latest => Ok(latest),
        ReplayPreset::Earliest => Ok(floor),
        ReplayPreset::Custom => {
            let id = <[u8; 8]>::try_from(replay_id)
                .map(i64::from_be_bytes)
                .map_err(|_| {
                    Status::invalid_argument("The Replay ID validation failed: not a replay id")
                })?;
            if id < floor || id > latest {
                return Err(Status::invalid_argument(format!(
                    "The Replay ID validation failed: {id} is outside the retention window"
                )));
            }
            Ok(id)
        }
    }
}

/// Deliver the change events of `entity` (every entity for `None`) after `start`, as many
/// as `owed` allows, with keepalives, until the stream closes or the sandbox stops.
fn spawn_delivery<R: Batch>(
    core: Arc<Core>,
    filter: Filter,
    start: i64,
    owed: Arc<std::sync::atomic::AtomicI32>,
    mut tx: Outbox<R>,
) {
    let keepalive = core.config.pubsub_keepalive;
    tokio::spawn(async move {
        let mut position = start;
        let mut quiet_since = Instant::now();
        let mut schemas: std::collections::HashMap<String, EventSchema> =
            std::collections::HashMap::new();
        loop {
            let wanted = owed.load(std::sync::atomic::Ordering::SeqCst);
            let mut failed = None;
            let (events, latest) = {
                let org = core.org();
                let mut events = Vec::new();
                let mut last_seen = position;
                if wanted > 0 {
                    for e in org.changes.after(position) {
                        if events.len() as i32 >= wanted {
                            break;
                        }
                        last_seen = e.replay_id;
                        let (schema, body) = match &filter {
                            Filter::Changes(entity) => {
                                if e.topic.is_some()
                                    || entity.as_ref().is_some_and(|x| *x != e.entity)
                                {
                                    continue;
                                }
                                let Some(def) = org.object(&e.entity) else {
                                    continue;
                                };
                                // Built once per entity for the subscription's life.
                                let schema = schemas
                                    .entry(e.entity.clone())
                                    .or_insert_with(|| Service::schema_of(def))
                                    .clone();
                                (schema, payload(def, &e.message))
                            }
                            Filter::Platform { topic, schema } => {
                                if e.topic.as_deref() != Some(topic.as_str()) {
                                    continue;
                                }
                                ((**schema).clone(), e.message["payload"].clone())
                            }
                        };
                        match schema.encode(&body) {
                            Ok(bytes) => events.push(ConsumerEvent {
                                event: Some(ProducerEvent {
                                    id: format!("sandbox-{}", e.replay_id),
                                    schema_id: schema.id.clone(),
                                    payload: bytes,
                                    headers: Vec::new(),
                                }),
                                replay_id: replay_bytes(e.replay_id),
                            }),
                            Err(err) => {
                                failed = Some(Status::internal(format!(
                                    "the sandbox could not encode event {}: {err}",
                                    e.replay_id
                                )));
                                break;
                            }
                        }
                    }
                }
                (events, (last_seen, org.changes.latest()))
            };
            if let Some(status) = failed {
                let _ = tx.send(Err(status)).await;
                return;
            }
            let (last_seen, newest) = latest;
            position = last_seen;
            if !events.is_empty() {
                let sent = events.len() as i32;
                let left = owed.fetch_sub(sent, std::sync::atomic::Ordering::SeqCst) - sent;
                if !deliver(&mut tx, R::batch(events, position, left.max(0)), &core).await {
                    return;
                }
                quiet_since = Instant::now();
                continue;
            }
            if quiet_since.elapsed() >= keepalive {
                let pending = owed.load(std::sync::atomic::Ordering::SeqCst).max(0);
                let response = R::batch(Vec::new(), newest.max(position), pending);
                if !deliver(&mut tx, response, &core).await {
                    return;
                }
                quiet_since = Instant::now();
            }
            if tx.is_closed() {
                return;
            }
            if core.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = tx
                    .send(Err(Status::unavailable("The server is shutting down")))
                    .await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// The next request of a subscription's stream, or `None` once it ends, the
/// subscription's responses are gone, or the sandbox stops (dropping the request stream
/// resets it, so the connection can close).
async fn next_request<T, R>(inbound: &mut Streaming<T>, tx: &Outbox<R>, core: &Core) -> Option<T> {
    loop {
        tokio::select! {
            next = inbound.next() => return next.and_then(Result::ok),
            () = tokio::time::sleep(Duration::from_millis(50)) => {
                if tx.is_closed() || core.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return None;
                }
            }
        }
    }
}

fn replay_bytes(id: i64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

#[tonic::async_trait]
impl PubSub for Service {
    type SubscribeStream = BoxStream<FetchResponse>;
    type PublishStreamStream = BoxStream<PublishResponse>;
    type ManagedSubscribeStream = BoxStream<ManagedFetchResponse>;

    async fn get_topic(
        &self,
        request: Request<TopicRequest>,
    ) -> Result<Response<TopicInfo>, Status> {
        self.authenticate(&request)?;
        let name = request.into_inner().topic_name;
        let (can_publish, schema_id) = match self.topic(&name)? {
            Topic::Changes(object) => (false, object.map(|o| Self::schema_of(&o).id)),
            Topic::Platform(event) => (true, Some(Self::platform_schema_of(&event).id)),
        };
        Ok(Response::new(TopicInfo {
            topic_name: name,
            tenant_guid: ORG_ID.to_owned(),
            can_publish,
            can_subscribe: true,
            schema_id: schema_id.unwrap_or_default(),
            rpc_id: crate::state::secret_text(),
        }))
    }

    async fn get_schema(
        &self,
        request: Request<SchemaRequest>,
    ) -> Result<Response<SchemaInfo>, Status> {
        self.authenticate(&request)?;
        let id = request.into_inner().schema_id;
        let schema = self
            .schema_by_id(&id)
            .ok_or_else(|| Status::not_found(format!("Schema not found: {id}")))?;
        Ok(Response::new(SchemaInfo {
            schema_json: schema.json.clone(),
            schema_id: schema.id.clone(),
            rpc_id: crate::state::secret_text(),
        }))
    }

    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        self.authenticate(&request)?;
        let request = request.into_inner();
        let publishing = Publishing::of(self, &request.topic_name)?;
        Ok(Response::new(
            publishing.publish(&self.core, request.events),
        ))
    }

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        self.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<PublishResponse, Status>>(4);
        let core = self.core.clone();
        let service = Service { core: core.clone() };
        // The stream's headers go out at once; its first request names the topic.
        tokio::spawn(async move {
            let (keepalive, idle) = (
                core.config.pubsub_keepalive,
                core.config.pubsub_publish_idle,
            );
            let mut publishing: Option<Publishing> = None;
            let (mut last_publish, mut last_sent) = (Instant::now(), Instant::now());
            loop {
                let wait = keepalive
                    .saturating_sub(last_sent.elapsed())
                    .min(idle.saturating_sub(last_publish.elapsed()))
                    .min(Duration::from_millis(50));
                let next = tokio::select! {
                    next = inbound.next() => Some(next),
                    () = tokio::time::sleep(wait) => None,
                };
                if core.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    let _ = tx
                        .send(Err(Status::unavailable("The server is shutting down")))
                        .await;
                    return;
                }
                let response = match next {
                    // The client closed its side: every batch has been answered.
                    Some(None) => return,
                    Some(Some(Err(_))) => return,
                    Some(Some(Ok(request))) => {
                        let topic = &request.topic_name;
                        let current = match &publishing {
                            Some(p) if topic.is_empty() || *topic == p.topic => Ok(p),
                            Some(p) => Err(Status::invalid_argument(format!(
                                "The topic of a PublishRequest must stay {}",
                                p.topic
                            ))),
                            None if topic.is_empty() => Err(Status::invalid_argument(
                                "The first PublishRequest of a stream must name the topic",
                            )),
                            None => Publishing::of(&service, topic).map(|p| &*publishing.insert(p)),
                        };
                        let current = match current {
                            Ok(current) => current,
                            Err(status) => {
                                let _ = tx.send(Err(status)).await;
                                return;
                            }
                        };
                        if !request.events.is_empty() {
                            last_publish = Instant::now();
                        }
                        current.publish(&core, request.events)
                    }
                    None if last_publish.elapsed() >= idle => {
                        let _ = tx
                            .send(Err(Status::aborted(format!(
                                "The publish stream was closed: no events were published for {} s",
                                idle.as_secs()
                            ))))
                            .await;
                        return;
                    }
                    None if last_sent.elapsed() >= keepalive => PublishResponse {
                        results: Vec::new(),
                        schema_id: publishing
                            .as_ref()
                            .map(|p| p.schema.id.clone())
                            .unwrap_or_default(),
                        rpc_id: crate::state::secret_text(),
                    },
                    None => {
                        if tx.is_closed() {
                            return;
                        }
                        continue;
                    }
                };
                if !deliver(&mut tx, response, &core).await {
                    return;
                }
                last_sent = Instant::now();
            }
        });
        Ok(Response::new(Box::pin(rx)))
    }

    async fn managed_subscribe(
        &self,
        request: Request<Streaming<ManagedFetchRequest>>,
    ) -> Result<Response<Self::ManagedSubscribeStream>, Status> {
        self.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("The subscription sent no ManagedFetchRequest")
        })?;
        let (id, managed) = {
            let all = self
                .core
                .managed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            all.iter()
                .find(|(id, m)| {
                    (!first.subscription_id.is_empty() && **id == first.subscription_id)
                        || (!first.developer_name.is_empty() && m.name == first.developer_name)
                })
                .map(|(id, m)| (id.clone(), m.clone()))
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "Managed subscription not found: {}{}",
                        first.subscription_id, first.developer_name
                    ))
                })?
        };
        let filter = Filter::of(&managed.topic, &self.topic(&managed.topic)?);
        let start = match managed.committed {
            Some(at) => at,
            None if managed.from_earliest => start_of(&self.core, ReplayPreset::Earliest, &[])?,
            None => start_of(&self.core, ReplayPreset::Latest, &[])?,
        };
        let owed = Arc::new(std::sync::atomic::AtomicI32::new(0));
        let (tx, rx) = futures::channel::mpsc::channel::<Result<ManagedFetchResponse, Status>>(4);
        {
            let (owed, mut tx, core) = (owed.clone(), tx.clone(), self.core.clone());
            tokio::spawn(async move {
                let mut next = Some(first);
                while let Some(r) = next {
                    owed.fetch_add(
                        r.num_requested.clamp(0, MAX_REQUESTED),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                    if let Some(commit) = r.commit_replay_id_request {
                        let answer = commit_replay(&core, &id, &commit);
                        if tx.send(Ok(answer)).await.is_err() {
                            return;
                        }
                    }
                    next = next_request(&mut inbound, &tx, &core).await;
                }
            });
        }
        spawn_delivery(self.core.clone(), filter, start, owed, tx);
        Ok(Response::new(Box::pin(rx)))
    }

    async fn subscribe(
        &self,
        request: Request<Streaming<FetchRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.authenticate(&request)?;
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("The subscription sent no FetchRequest"))?;
        let topic = first.topic_name.clone();
        let filter = Filter::of(&topic, &self.topic(&topic)?);
        let preset = ReplayPreset::try_from(first.replay_preset)
            .map_err(|_| Status::invalid_argument("Unknown replay preset"))?;
        let start = start_of(&self.core, preset, &first.replay_id)?;
        let owed = Arc::new(std::sync::atomic::AtomicI32::new(
            first.num_requested.clamp(0, MAX_REQUESTED),
        ));
        let (tx, rx) = futures::channel::mpsc::channel::<Result<FetchResponse, Status>>(4);
        // Requests after the first: more events owed (a different topic ends the stream).
        {
            let (owed, mut tx, topic, core) =
                (owed.clone(), tx.clone(), topic.clone(), self.core.clone());
            tokio::spawn(async move {
                while let Some(r) = next_request(&mut inbound, &tx, &core).await {
                    if !r.topic_name.is_empty() && r.topic_name != topic {
                        let _ = tx
                            .send(Err(Status::invalid_argument(format!(
                                "The topic of a FetchRequest must stay {topic}"
                            ))))
                            .await;
                        return;
                    }
                    owed.fetch_add(
                        r.num_requested.clamp(0, MAX_REQUESTED),
                        std::sync::atomic::Ordering::SeqCst,
                    );
                }
            });
        }
        spawn_delivery(self.core.clone(), filter, start, owed, tx);
        Ok(Response::new(Box::pin(rx)))
    }
}
