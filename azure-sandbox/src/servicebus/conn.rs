//! One client connection to the Service Bus sandbox: SASL, the connection, sessions and
//! links of AMQP 1.0, with Service Bus's own nodes on top (`$cbs` for tokens,
//! `<entity>/$management` for requests, the entities for messages).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fe2o3_amqp_types::definitions::{
    self, ErrorCondition, Handle, ReceiverSettleMode, Role, SenderSettleMode,
};
use fe2o3_amqp_types::messaging::{
    Accepted, Body, DeliveryState, Rejected, Source, Target, TargetArchetype,
    message::__private::{Deserializable, Serializable},
};
use fe2o3_amqp_types::performatives::{
    Attach, Begin, ChannelMax, Close, Detach, Disposition, End, Flow, MaxFrameSize, Open,
    Performative, Transfer,
};
use fe2o3_amqp_types::primitives::{Array, OrderedMap, Symbol};
use fe2o3_amqp_types::sasl::{SaslCode, SaslInit, SaslMechanisms, SaslOutcome};
use serde_amqp::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::broker::{AmqpMessage, Broker, SbError, Settle, normalize};
use super::mgmt;
use super::wire::{self, AMQP_FRAME, AMQP_HEADER, Frame, MAX_FRAME, SASL_FRAME, SASL_HEADER};

/// What every connection shares: the broker and the namespace's keys.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) broker: Broker,
    pub(crate) key_name: String,
    pub(crate) key: String,
    /// Numbers receiver links for session locks.
    pub(crate) next_link: std::sync::atomic::AtomicU64,
    /// Bumped to drop every open connection (a fault hook).
    pub(crate) drop_all: tokio::sync::watch::Sender<u64>,
    /// Messages still to refuse as `com.microsoft:server-busy` (a fault hook).
    pub(crate) busy: std::sync::atomic::AtomicU32,
}

/// The message format of a batch: each data section an encoded message.
const BATCH_FORMAT: u32 = 0x8001_3700;
/// The link credit this end gives a sender, topped up at half.
const CREDIT: u32 = 1000;
/// The session window this end announces, re-announced at half.
const WINDOW: u32 = 5000;

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// `$cbs`: put-token requests.
    Cbs,
    /// `<entity>/$management`: requests about `entity`.
    Management(String),
    /// An entity: messages in (our receiver) or out (our sender).
    Entity(String),
}

#[derive(Debug)]
struct Link {
    local: u32,
    /// Our side is the sender.
    sender: bool,
    kind: Kind,
    /// The target address the client gave (replies are matched on it).
    target: Option<String>,
    /// Deliveries are pre-settled (receive-and-delete).
    settled: bool,
    credit: u32,
    delivery_count: u32,
    drain: bool,
    /// The session this receiver holds, on session-enabled entities.
    session: Option<String>,
    /// This link, as session locks name their holder.
    owner: u64,
    /// A message arriving in several frames.
    partial: Option<(Transfer, Vec<u8>)>,
    /// Replies waiting for credit.
    pending: Vec<AmqpMessage>,
}

#[derive(Debug)]
struct Unsettled {
    path: String,
    token: Uuid,
}

/// A receiver attach on a session-enabled entity waiting for a session to lock.
#[derive(Debug)]
struct WaitingAttach {
    attach: Attach,
    until: Instant,
}

#[derive(Debug)]
struct Sess {
    local: u16,
    next_outgoing_id: u32,
    next_incoming_id: u32,
    /// The client's incoming window, as of its last flow.
    remote_window: u32,
    /// Transfers received since our window was last announced.
    received: u32,
    next_delivery_id: u32,
    next_handle: u32,
    links: HashMap<u32, Link>,
    unsettled: HashMap<u32, Unsettled>,
    waiting: Vec<WaitingAttach>,
}

struct Conn {
    shared: Arc<Shared>,
    id: u64,
    out: Vec<u8>,
    max_frame: usize,
    sessions: HashMap<u16, Sess>,
    next_channel: u16,
    /// Audiences (entity paths; empty: the namespace) a token was put for, with expiry.
    authorized: Vec<(String, SystemTime)>,
    idle: Option<Duration>,
    closed: bool,
}

/// Serve one connection until the client closes it or it breaks.
pub(crate) async fn serve(stream: TcpStream, shared: Arc<Shared>, id: u64) {
    let _ = run(stream, shared, id).await;
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

async fn run(stream: TcpStream, shared: Arc<Shared>, id: u64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let mut header = wire::read_header(&mut rd).await?;
    if header == SASL_HEADER {
        wr.write_all(&SASL_HEADER).await?;
        let mechanisms = SaslMechanisms {
            sasl_server_mechanisms: Array(vec![
                Symbol::from("ANONYMOUS"),
                Symbol::from("MSSBCBS"),
                Symbol::from("PLAIN"),
            ]),
        };
        wr.write_all(&wire::frame(0, SASL_FRAME, &wire::encode(&mechanisms), &[]))
            .await?;
        let init = wire::read_frame(&mut rd)
            .await?
            .ok_or_else(|| invalid("the connection closed during SASL"))?;
        let _: SaslInit = wire::decode_sasl(&init.body).map_err(|e| invalid(e.to_string()))?;
        let outcome = SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        };
        wr.write_all(&wire::frame(0, SASL_FRAME, &wire::encode(&outcome), &[]))
            .await?;
        header = wire::read_header(&mut rd).await?;
    }
    wr.write_all(&AMQP_HEADER).await?;
    if header != AMQP_HEADER {
        return Err(invalid("not AMQP 1.0"));
    }
    let (tx, mut rx) = mpsc::channel::<io::Result<Frame>>(64);
    let reader = tokio::spawn(async move {
        loop {
            let frame = wire::read_frame(&mut rd).await;
            let stop = !matches!(frame, Ok(Some(_)));
            let item = match frame {
                Ok(Some(f)) => Ok(f),
                Ok(None) => break,
                Err(e) => Err(e),
            };
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let mut conn = Conn {
        shared: shared.clone(),
        id,
        out: Vec::new(),
        max_frame: MAX_FRAME as usize,
        sessions: HashMap::new(),
        next_channel: 0,
        authorized: Vec::new(),
        idle: None,
        closed: false,
    };
    let mut last_write = Instant::now();
    let mut dropped = shared.drop_all.subscribe();
    let result = loop {
        let changed = shared.broker.changed.notified();
        conn.pump();
        if let Some(idle) = conn.idle
            && conn.out.is_empty()
            && last_write.elapsed() >= idle / 2
        {
            conn.out.extend(wire::frame(0, AMQP_FRAME, &[], &[]));
        }
        if !conn.out.is_empty() {
            if let Err(e) = wr.write_all(&conn.out).await {
                break Err(e);
            }
            conn.out.clear();
            last_write = Instant::now();
        }
        if conn.closed {
            break Ok(());
        }
        let wake = shared
            .broker
            .next_due()
            .and_then(|at| at.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::from_millis(500))
            .clamp(Duration::from_millis(5), Duration::from_millis(500));
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(Ok(frame)) => {
                    if let Err(e) = conn.on_frame(frame) {
                        break Err(e);
                    }
                }
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            () = changed => {}
            () = tokio::time::sleep(wake) => {}
            _ = dropped.changed() => break Err(invalid("dropped by the sandbox's fault hook")),
        }
    };
    reader.abort();
    conn.release_all();
    result
}

/// What an address (`amqps://host:port/queue`, `sb://host/queue` or `queue`) names.
fn kind_of(address: &str) -> Kind {
    let path = super::conn_path(address);
    if path == "$cbs" {
        Kind::Cbs
    } else if let Some(entity) = path.strip_suffix("$management") {
        Kind::Management(normalize(entity))
    } else {
        Kind::Entity(path)
    }
}

/// An AMQP error as Service Bus sends it: condition, description, and an info map with
/// a tracking id (clients read all three fields).
fn amqp_error(condition: &str, description: impl Into<String>) -> definitions::Error {
    let mut info = OrderedMap::new();
    info.insert(
        Symbol::from("com.microsoft:tracking-id"),
        Value::String(Uuid::new_v4().to_string()),
    );
    definitions::Error {
        condition: ErrorCondition::Custom(Symbol::from(condition)),
        description: Some(description.into()),
        info: Some(Box::new(info)),
    }
}

fn source_address(attach: &Attach) -> Option<String> {
    attach.source.as_ref().and_then(|s| s.address.clone())
}

fn target_address(attach: &Attach) -> Option<String> {
    match attach.target.as_deref() {
        Some(TargetArchetype::Target(t)) => t.address.clone(),
        _ => None,
    }
}

/// The session a receiver asks for: `None` if it asks for none, `Some(None)` for the
/// next available one.
fn session_filter(attach: &Attach) -> Option<Option<String>> {
    let filter = attach.source.as_ref()?.filter.as_ref()?;
    let value = filter.get(&Symbol::from("com.microsoft:session-filter"))?;
    Some(match value {
        Value::String(s) => Some(s.clone()),
        Value::Described(d) => match &d.value {
            Value::String(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    })
}

/// .NET ticks (100 ns since 0001-01-01), as Service Bus gives the session lock expiry.
fn dotnet_ticks(at: SystemTime) -> i64 {
    const EPOCH_TICKS: i64 = 621_355_968_000_000_000;
    let ms = super::broker::timestamp(at).milliseconds();
    EPOCH_TICKS + ms * 10_000
}

impl Conn {
    fn send(&mut self, channel: u16, performative: &Performative, payload: &[u8]) {
        self.out.extend(wire::frame(
            channel,
            AMQP_FRAME,
            &wire::encode(performative),
            payload,
        ));
    }

    fn on_frame(&mut self, frame: Frame) -> io::Result<()> {
        if frame.kind != AMQP_FRAME {
            return Err(invalid("a SASL frame after SASL"));
        }
        let (performative, payload) =
            wire::decode_amqp(frame.body).map_err(|e| invalid(e.to_string()))?;
        let Some(performative) = performative else {
            return Ok(()); // a heartbeat
        };
        let channel = frame.channel;
        match performative {
            Performative::Open(open) => {
                self.max_frame = (open.max_frame_size.0 as usize).clamp(512, MAX_FRAME as usize);
                self.idle = open
                    .idle_time_out
                    .filter(|ms| *ms > 0)
                    .map(|ms| Duration::from_millis(u64::from(ms)));
                let reply = Open {
                    container_id: "moodbridge-servicebus-sandbox".to_owned(),
                    hostname: None,
                    max_frame_size: MaxFrameSize(MAX_FRAME),
                    channel_max: ChannelMax(255),
                    idle_time_out: None,
                    outgoing_locales: None,
                    incoming_locales: None,
                    offered_capabilities: None,
                    desired_capabilities: None,
                    properties: None,
                };
                self.send(0, &Performative::Open(reply), &[]);
            }
            Performative::Begin(begin) => {
                let local = self.next_channel;
                self.next_channel += 1;
                self.sessions.insert(
                    channel,
                    Sess {
                        local,
                        next_outgoing_id: 0,
                        next_incoming_id: begin.next_outgoing_id,
                        remote_window: begin.incoming_window,
                        received: 0,
                        next_delivery_id: 0,
                        next_handle: 0,
                        links: HashMap::new(),
                        unsettled: HashMap::new(),
                        waiting: Vec::new(),
                    },
                );
                let reply = Begin {
                    remote_channel: Some(channel),
                    next_outgoing_id: 0,
                    incoming_window: WINDOW,
                    outgoing_window: WINDOW,
                    handle_max: Handle(255),
                    offered_capabilities: None,
                    desired_capabilities: None,
                    properties: None,
                };
                self.send(local, &Performative::Begin(reply), &[]);
            }
            Performative::Attach(attach) => self.on_attach(channel, attach),
            Performative::Flow(flow) => self.on_flow(channel, &flow),
            Performative::Transfer(transfer) => self.on_transfer(channel, transfer, payload),
            Performative::Disposition(disposition) => self.on_disposition(channel, &disposition),
            Performative::Detach(detach) => {
                let Some(session) = self.sessions.get_mut(&channel) else {
                    return Ok(());
                };
                let local = session.local;
                if let Some(link) = session.links.remove(&detach.handle.0) {
                    if let (Some(id), Kind::Entity(path)) = (&link.session, &link.kind) {
                        self.shared.broker.release_session(path, id, link.owner);
                    }
                    let reply = Detach {
                        handle: Handle(link.local),
                        closed: detach.closed,
                        error: None,
                    };
                    self.send(local, &Performative::Detach(reply), &[]);
                }
            }
            Performative::End(_) => {
                if let Some(session) = self.sessions.remove(&channel) {
                    self.release_links(&session);
                    self.send(session.local, &Performative::End(End { error: None }), &[]);
                }
            }
            Performative::Close(_) => {
                self.send(0, &Performative::Close(Close { error: None }), &[]);
                self.closed = true;
            }
        }
        Ok(())
    }

    fn release_links(&self, session: &Sess) {
        for link in session.links.values() {
            if let (Some(id), Kind::Entity(path)) = (&link.session, &link.kind) {
                self.shared.broker.release_session(path, id, link.owner);
            }
        }
    }

    fn release_all(&mut self) {
        let sessions: Vec<Sess> = self.sessions.drain().map(|(_, s)| s).collect();
        for session in &sessions {
            self.release_links(session);
        }
    }

    /// Whether a token covers entity `path`.
    fn allowed(&self, path: &str) -> bool {
        let now = SystemTime::now();
        self.authorized.iter().any(|(audience, until)| {
            *until > now
                && (audience.is_empty()
                    || path == audience
                    || path.starts_with(&format!("{audience}/")))
        })
    }

    fn on_attach(&mut self, channel: u16, attach: Attach) {
        // The client is the receiver: our end sends.
        let sender = attach.role == Role::Receiver;
        let address = if sender {
            source_address(&attach)
        } else {
            target_address(&attach)
        };
        let kind = kind_of(address.as_deref().unwrap_or_default());
        let refusal = match &kind {
            Kind::Cbs => None,
            Kind::Management(path) | Kind::Entity(path) => {
                if !self.allowed(path) {
                    Some(SbError {
                        condition: "amqp:unauthorized-access",
                        description: format!(
                            "Unauthorized access. 'Send' or 'Listen' claim(s) are required to perform this operation. Resource: 'sb://127.0.0.1/{path}'. Put a token for it on $cbs first."
                        ),
                        status: 401,
                    })
                } else if self.shared.broker.entity(path).is_none() {
                    Some(SbError::not_found(format!(
                        "The messaging entity 'sb://127.0.0.1/{path}' could not be found."
                    )))
                } else if matches!(kind, Kind::Entity(_))
                    && sender
                    && !self.shared.broker.receivable(path)
                {
                    Some(SbError {
                        condition: "amqp:not-allowed",
                        description: format!(
                            "Cannot receive from the topic '{path}': receive from one of its subscriptions, <topic>/subscriptions/<name>."
                        ),
                        status: 400,
                    })
                } else if matches!(kind, Kind::Entity(_))
                    && !sender
                    && !self.shared.broker.sendable(path)
                {
                    Some(SbError {
                        condition: "amqp:not-allowed",
                        description: format!(
                            "Cannot send to '{path}': send to the queue or to the subscription's topic."
                        ),
                        status: 400,
                    })
                } else {
                    None
                }
            }
        };
        if let Some(error) = refusal {
            self.refuse_attach(channel, &attach, &error);
            return;
        }
        if let (true, Kind::Entity(path)) = (sender, &kind) {
            let needs_session = self
                .shared
                .broker
                .entity(path)
                .is_some_and(|o| o.requires_session);
            if needs_session {
                let timeout = attach
                    .properties
                    .as_ref()
                    .and_then(|p| p.get(&Symbol::from("com.microsoft:timeout")))
                    .and_then(|v| match v {
                        Value::Uint(ms) => Some(u64::from(*ms)),
                        Value::Long(ms) => u64::try_from(*ms).ok(),
                        Value::Ulong(ms) => Some(*ms),
                        Value::Int(ms) => u64::try_from(*ms).ok(),
                        _ => None,
                    })
                    .unwrap_or(60_000);
                if let Some(session) = self.sessions.get_mut(&channel) {
                    session.waiting.push(WaitingAttach {
                        attach,
                        until: Instant::now() + Duration::from_millis(timeout),
                    });
                }
                return;
            }
        }
        self.complete_attach(channel, attach, kind, sender, None);
    }

    /// Answer an attach and then detach it with `error`.
    fn refuse_attach(&mut self, channel: u16, attach: &Attach, error: &SbError) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let local = session.next_handle;
        session.next_handle += 1;
        let local_channel = session.local;
        let reply = Attach {
            name: attach.name.clone(),
            handle: Handle(local),
            role: if attach.role == Role::Receiver {
                Role::Sender
            } else {
                Role::Receiver
            },
            snd_settle_mode: attach.snd_settle_mode.clone(),
            rcv_settle_mode: attach.rcv_settle_mode.clone(),
            source: None,
            target: None,
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: (attach.role == Role::Receiver).then_some(0),
            max_message_size: None,
            offered_capabilities: None,
            desired_capabilities: None,
            properties: None,
        };
        self.send(local_channel, &Performative::Attach(reply), &[]);
        let detach = Detach {
            handle: Handle(local),
            closed: true,
            error: Some(amqp_error(error.condition, error.description.clone())),
        };
        self.send(local_channel, &Performative::Detach(detach), &[]);
    }

    fn complete_attach(
        &mut self,
        channel: u16,
        attach: Attach,
        kind: Kind,
        sender: bool,
        locked: Option<(String, SystemTime, u64)>,
    ) {
        let max_message = match &kind {
            Kind::Entity(path) => self
                .shared
                .broker
                .entity(path)
                .map(|o| o.max_message_bytes as u64),
            _ => None,
        };
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let local = session.next_handle;
        session.next_handle += 1;
        let local_channel = session.local;
        let mut source = attach.source.clone();
        let mut properties = None;
        if let (Some(source), Some((id, until, _))) = (source.as_mut(), &locked) {
            let filter = source.filter.get_or_insert_with(OrderedMap::new);
            filter.insert(
                Symbol::from("com.microsoft:session-filter"),
                Value::String(id.clone()),
            );
            let mut p = OrderedMap::new();
            p.insert(
                Symbol::from("com.microsoft:locked-until-utc"),
                Value::Long(dotnet_ticks(*until)),
            );
            properties = Some(p);
        }
        let reply = Attach {
            name: attach.name.clone(),
            handle: Handle(local),
            role: if sender { Role::Sender } else { Role::Receiver },
            snd_settle_mode: attach.snd_settle_mode.clone(),
            rcv_settle_mode: if sender {
                attach.rcv_settle_mode.clone()
            } else {
                ReceiverSettleMode::First
            },
            source: source.clone().or_else(|| Some(Box::new(Source::default()))),
            target: attach
                .target
                .clone()
                .or_else(|| Some(Box::new(TargetArchetype::Target(Target::default())))),
            unsettled: None,
            incomplete_unsettled: false,
            initial_delivery_count: sender.then_some(0),
            max_message_size: max_message,
            offered_capabilities: None,
            desired_capabilities: None,
            properties,
        };
        let link = Link {
            local,
            sender,
            kind,
            target: target_address(&attach),
            settled: attach.snd_settle_mode == SenderSettleMode::Settled,
            credit: 0,
            delivery_count: attach.initial_delivery_count.unwrap_or(0),
            drain: false,
            owner: locked.as_ref().map_or(0, |(_, _, owner)| *owner),
            session: locked.map(|(id, _, _)| id),
            partial: None,
            pending: Vec::new(),
        };
        let remote = attach.handle.0;
        session.links.insert(remote, link);
        self.send(local_channel, &Performative::Attach(reply), &[]);
        if !sender {
            self.grant(channel, remote, CREDIT);
        }
    }

    /// Give the client's sender `credit` (and re-announce our session window).
    fn grant(&mut self, channel: u16, remote: u32, credit: u32) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let Some(link) = session.links.get_mut(&remote) else {
            return;
        };
        link.credit = credit;
        session.received = 0;
        let flow = Flow {
            next_incoming_id: Some(session.next_incoming_id),
            incoming_window: WINDOW,
            next_outgoing_id: session.next_outgoing_id,
            outgoing_window: WINDOW,
            handle: Some(Handle(link.local)),
            delivery_count: Some(link.delivery_count),
            link_credit: Some(credit),
            available: None,
            drain: false,
            echo: false,
            properties: None,
        };
        let local = session.local;
        self.send(local, &Performative::Flow(flow), &[]);
    }

    fn on_flow(&mut self, channel: u16, flow: &Flow) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        session.remote_window = flow
            .next_incoming_id
            .unwrap_or(0)
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(session.next_outgoing_id);
        let mut echo = flow.echo && flow.handle.is_none();
        if let Some(handle) = &flow.handle
            && let Some(link) = session.links.get_mut(&handle.0)
        {
            if link.sender {
                let their_count = flow.delivery_count.unwrap_or(link.delivery_count);
                link.credit = their_count
                    .wrapping_add(flow.link_credit.unwrap_or(0))
                    .wrapping_sub(link.delivery_count);
                link.drain = flow.drain;
            }
            echo |= flow.echo;
        }
        if echo {
            let reply = Flow {
                next_incoming_id: Some(session.next_incoming_id),
                incoming_window: WINDOW,
                next_outgoing_id: session.next_outgoing_id,
                outgoing_window: WINDOW,
                handle: None,
                delivery_count: None,
                link_credit: None,
                available: None,
                drain: false,
                echo: false,
                properties: None,
            };
            let local = session.local;
            self.send(local, &Performative::Flow(reply), &[]);
        }
    }

    fn on_transfer(&mut self, channel: u16, transfer: Transfer, payload: Bytes) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        session.next_incoming_id = session.next_incoming_id.wrapping_add(1);
        session.received += 1;
        let remote = transfer.handle.0;
        let Some(link) = session.links.get_mut(&remote) else {
            return;
        };
        let (first, mut bytes) = link
            .partial
            .take()
            .unwrap_or_else(|| (transfer.clone(), Vec::new()));
        bytes.extend_from_slice(&payload);
        if transfer.more {
            link.partial = Some((first, bytes));
            return;
        }
        if transfer.aborted {
            return;
        }
        link.delivery_count = link.delivery_count.wrapping_add(1);
        link.credit = link.credit.saturating_sub(1);
        let low_credit = link.credit < CREDIT / 2;
        let kind = link.kind.clone();
        let window_low = session.received > WINDOW / 2;
        let outcome = self.on_message(channel, &kind, &first, &bytes);
        if first.settled != Some(true)
            && let Some(delivery_id) = first.delivery_id
        {
            let state = match outcome {
                Ok(()) => DeliveryState::Accepted(Accepted {}),
                Err(e) => DeliveryState::Rejected(Rejected {
                    error: Some(amqp_error(e.condition, e.description)),
                }),
            };
            let local = self.sessions.get(&channel).map_or(0, |s| s.local);
            let disposition = Disposition {
                role: Role::Receiver,
                first: delivery_id,
                last: None,
                settled: true,
                state: Some(state),
                batchable: false,
            };
            self.send(local, &Performative::Disposition(disposition), &[]);
        }
        if low_credit || window_low {
            self.grant(channel, remote, CREDIT);
        }
    }

    /// A complete message arrived on one of our receivers.
    fn on_message(
        &mut self,
        channel: u16,
        kind: &Kind,
        transfer: &Transfer,
        bytes: &[u8],
    ) -> Result<(), SbError> {
        let message: AmqpMessage = serde_amqp::from_slice::<Deserializable<AmqpMessage>>(bytes)
            .map_err(|e| SbError::bad_request(format!("the message does not decode: {e}")))?
            .0;
        match kind {
            Kind::Entity(path) => {
                let busy = self
                    .shared
                    .busy
                    .fetch_update(
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                        |n| n.checked_sub(1),
                    )
                    .is_ok();
                if busy {
                    return Err(SbError {
                        condition: "com.microsoft:server-busy",
                        description: "The request was terminated because the entity is being throttled. Please wait 10 seconds and try again.".to_owned(),
                        status: 503,
                    });
                }
                if transfer.message_format == Some(BATCH_FORMAT) {
                    let Body::Data(sections) = &message.body else {
                        return Err(SbError::bad_request("a batch without data sections"));
                    };
                    let mut inner = Vec::new();
                    for section in sections.iter() {
                        let m = serde_amqp::from_slice::<Deserializable<AmqpMessage>>(&section.0)
                            .map_err(|e| {
                                SbError::bad_request(format!(
                                    "a message of the batch does not decode: {e}"
                                ))
                            })?
                            .0;
                        inner.push((m, section.0.len()));
                    }
                    for (m, size) in inner {
                        self.shared.broker.enqueue(path, m, size)?;
                    }
                    Ok(())
                } else {
                    self.shared
                        .broker
                        .enqueue(path, message, bytes.len())
                        .map(|_| ())
                }
            }
            Kind::Cbs => {
                let reply = mgmt::cbs(&self.shared, &message, &mut self.authorized);
                self.reply(channel, "$cbs", reply);
                Ok(())
            }
            Kind::Management(path) => {
                let node = format!("{path}/$management");
                let reply = mgmt::request(&self.shared, path, &message, self.id);
                self.reply(channel, &node, reply);
                Ok(())
            }
        }
    }

    /// Queue `reply` on the client's receiver of `node` in this session.
    fn reply(&mut self, channel: u16, node: &str, reply: AmqpMessage) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let wanted = kind_of(node);
        let reply_to = reply.properties.as_ref().and_then(|p| p.to.clone());
        let mut links: Vec<&mut Link> = session
            .links
            .values_mut()
            .filter(|l| l.sender && l.kind == wanted)
            .collect();
        let index = links
            .iter()
            .position(|l| reply_to.is_some() && l.target == reply_to)
            .unwrap_or(0);
        if let Some(link) = links.get_mut(index) {
            link.pending.push(reply);
        }
    }

    fn on_disposition(&mut self, channel: u16, disposition: &Disposition) {
        if disposition.role != Role::Receiver {
            return; // the client settling its own transfers: we settle those at once
        }
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let local = session.local;
        let last = disposition.last.unwrap_or(disposition.first);
        let mut echoes = Vec::new();
        for delivery_id in disposition.first..=last {
            let Some(unsettled) = session.unsettled.remove(&delivery_id) else {
                continue;
            };
            let (how, applied) = match &disposition.state {
                Some(DeliveryState::Accepted(_)) | None => {
                    (Settle::Complete, DeliveryState::Accepted(Accepted {}))
                }
                Some(DeliveryState::Rejected(rejected)) => {
                    let info = rejected.error.as_ref().and_then(|e| e.info.as_deref());
                    let text = |key: &str| {
                        info.and_then(|i| i.get(&Symbol::from(key)))
                            .and_then(|v| match v {
                                Value::String(s) => Some(s.clone()),
                                _ => None,
                            })
                    };
                    (
                        Settle::DeadLetter {
                            reason: text("DeadLetterReason"),
                            description: text("DeadLetterErrorDescription"),
                        },
                        DeliveryState::Rejected(Rejected { error: None }),
                    )
                }
                Some(DeliveryState::Modified(modified)) => {
                    let how = if modified.undeliverable_here == Some(true) {
                        Settle::Defer
                    } else {
                        Settle::Abandon(mgmt::simple_properties(
                            modified.message_annotations.as_ref(),
                        ))
                    };
                    (how, DeliveryState::Modified(modified.clone()))
                }
                Some(DeliveryState::Released(_)) => (
                    Settle::Release,
                    disposition
                        .state
                        .clone()
                        .unwrap_or(DeliveryState::Accepted(Accepted {})),
                ),
                Some(other) => (Settle::Release, other.clone()),
            };
            let state = match self
                .shared
                .broker
                .settle(&unsettled.path, unsettled.token, how)
            {
                Ok(()) => applied,
                Err(e) => DeliveryState::Rejected(Rejected {
                    error: Some(amqp_error(e.condition, e.description)),
                }),
            };
            if !disposition.settled {
                echoes.push(Disposition {
                    role: Role::Sender,
                    first: delivery_id,
                    last: None,
                    settled: true,
                    state: Some(state),
                    batchable: false,
                });
            }
        }
        for echo in echoes {
            self.send(local, &Performative::Disposition(echo), &[]);
        }
    }

    /// Attach waiting receivers to sessions, send replies and deliveries the links have
    /// credit for, and answer drains.
    fn pump(&mut self) {
        let channels: Vec<u16> = self.sessions.keys().copied().collect();
        for channel in channels {
            self.attach_waiting(channel);
            let handles: Vec<u32> = self
                .sessions
                .get(&channel)
                .map(|s| {
                    s.links
                        .iter()
                        .filter(|(_, l)| l.sender)
                        .map(|(h, _)| *h)
                        .collect()
                })
                .unwrap_or_default();
            for remote in handles {
                self.pump_link(channel, remote);
            }
        }
    }

    fn attach_waiting(&mut self, channel: u16) {
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        if session.waiting.is_empty() {
            return;
        }
        let waiting = std::mem::take(&mut session.waiting);
        let mut still = Vec::new();
        for w in waiting {
            let Kind::Entity(path) =
                kind_of(source_address(&w.attach).as_deref().unwrap_or_default())
            else {
                continue;
            };
            let wanted = session_filter(&w.attach).flatten();
            let link = self
                .shared
                .next_link
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self
                .shared
                .broker
                .lock_session(&path, wanted.as_deref(), self.id, link)
            {
                Ok((id, until)) => {
                    self.complete_attach(
                        channel,
                        w.attach,
                        Kind::Entity(path),
                        true,
                        Some((id, until, link)),
                    );
                }
                Err(e) if Instant::now() >= w.until || e.condition != "com.microsoft:timeout" => {
                    self.refuse_attach(channel, &w.attach, &e);
                }
                Err(_) => still.push(w),
            }
        }
        if let Some(session) = self.sessions.get_mut(&channel) {
            session.waiting.extend(still);
        }
    }

    fn pump_link(&mut self, channel: u16, remote: u32) {
        loop {
            let Some(session) = self.sessions.get_mut(&channel) else {
                return;
            };
            let Some(link) = session.links.get_mut(&remote) else {
                return;
            };
            if link.credit == 0 || session.remote_window == 0 {
                break;
            }
            let (message, token) = if !link.pending.is_empty() {
                (link.pending.remove(0), None)
            } else if let Kind::Entity(path) = &link.kind {
                if let Some(id) = &link.session
                    && !self.shared.broker.holds_session(path, id, link.owner)
                {
                    break;
                }
                match self
                    .shared
                    .broker
                    .next(path, link.session.as_deref(), link.settled)
                {
                    Some(d) => (d.message, d.lock_token.map(|t| (path.clone(), t))),
                    None => break,
                }
            } else {
                break;
            };
            self.transfer(channel, remote, &message, token);
        }
        // A drain with nothing left to send uses up the credit.
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let local = session.local;
        let (next_incoming_id, next_outgoing_id) =
            (session.next_incoming_id, session.next_outgoing_id);
        let Some(link) = session.links.get_mut(&remote) else {
            return;
        };
        if link.drain && link.credit > 0 {
            link.delivery_count = link.delivery_count.wrapping_add(link.credit);
            link.credit = 0;
            link.drain = false;
            let flow = Flow {
                next_incoming_id: Some(next_incoming_id),
                incoming_window: WINDOW,
                next_outgoing_id,
                outgoing_window: WINDOW,
                handle: Some(Handle(link.local)),
                delivery_count: Some(link.delivery_count),
                link_credit: Some(0),
                available: Some(0),
                drain: true,
                echo: false,
                properties: None,
            };
            self.send(local, &Performative::Flow(flow), &[]);
        }
    }

    /// Send `message` on our sender `remote`; `token`: the lock it is delivered under.
    fn transfer(
        &mut self,
        channel: u16,
        remote: u32,
        message: &AmqpMessage,
        token: Option<(String, Uuid)>,
    ) {
        let payload = wire::encode(&Serializable(message));
        let max_frame = self.max_frame;
        let Some(session) = self.sessions.get_mut(&channel) else {
            return;
        };
        let Some(link) = session.links.get_mut(&remote) else {
            return;
        };
        link.credit -= 1;
        link.delivery_count = link.delivery_count.wrapping_add(1);
        let settled = link.settled || token.is_none();
        let delivery_id = session.next_delivery_id;
        session.next_delivery_id = session.next_delivery_id.wrapping_add(1);
        let tag = token
            .as_ref()
            .map_or_else(|| Uuid::new_v4().to_bytes_le(), |(_, t)| t.to_bytes_le());
        if let Some((path, token)) = token.filter(|_| !settled) {
            session
                .unsettled
                .insert(delivery_id, Unsettled { path, token });
        }
        let handle = link.local;
        let local = session.local;
        // Split the payload so each frame fits the client's frame size.
        let room = max_frame.saturating_sub(256).max(256);
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[][..]]
        } else {
            payload.chunks(room).collect()
        };
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let transfer = Transfer {
                handle: Handle(handle),
                delivery_id: (i == 0).then_some(delivery_id),
                delivery_tag: (i == 0).then(|| serde_bytes::ByteBuf::from(tag.to_vec())),
                message_format: (i == 0).then_some(0),
                settled: (i == 0).then_some(settled),
                more: i + 1 < count,
                rcv_settle_mode: None,
                state: None,
                resume: false,
                aborted: false,
                batchable: false,
            };
            if let Some(session) = self.sessions.get_mut(&channel) {
                session.next_outgoing_id = session.next_outgoing_id.wrapping_add(1);
                session.remote_window = session.remote_window.saturating_sub(1);
            }
            self.send(local, &Performative::Transfer(transfer), chunk);
        }
    }
}
