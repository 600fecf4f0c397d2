//! A Service Bus namespace on loopback, speaking AMQP 1.0 as Service Bus does. See
//! [`ServiceBus`].

mod broker;
mod conn;
mod filter;
mod mgmt;
mod wire;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use broker::{Broker, EntityOptions};
use conn::Shared;
pub use filter::{CorrelationFilter, RuleFilter};

/// How a queue behaves; the defaults are Service Bus's own (one-minute locks, ten
/// deliveries, 256 KiB messages, no sessions, no duplicate detection).
///
/// ```
/// use std::time::Duration;
/// use azure_sandbox::QueueOptions;
/// let options = QueueOptions {
///     lock_duration: Duration::from_secs(5),
///     requires_session: true,
///     ..QueueOptions::default()
/// };
/// assert_eq!(options.max_delivery_count, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// How long a peek-lock delivery stays locked (`LockDuration`).
    pub lock_duration: Duration,
    /// Deliveries after which a message moves to the dead-letter sub-queue
    /// (`MaxDeliveryCount`).
    pub max_delivery_count: u32,
    /// Messages need a session id and are received through session locks
    /// (`RequiresSession`).
    pub requires_session: bool,
    /// Drop a message whose id was seen within this window
    /// (`RequiresDuplicateDetection` with `DuplicateDetectionHistoryTimeWindow`).
    pub duplicate_detection: Option<Duration>,
    /// The largest message, in bytes (256 KiB on the Standard tier).
    pub max_message_bytes: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            lock_duration: Duration::from_secs(60),
            max_delivery_count: 10,
            requires_session: false,
            duplicate_detection: None,
            max_message_bytes: 256 * 1024,
        }
    }
}

/// How a topic behaves; the defaults are Service Bus's own.
///
/// ```
/// use azure_sandbox::TopicOptions;
/// assert_eq!(TopicOptions::default().max_message_bytes, 256 * 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOptions {
    /// Drop a message whose id was seen within this window.
    pub duplicate_detection: Option<Duration>,
    /// The largest message, in bytes (256 KiB on the Standard tier).
    pub max_message_bytes: usize,
}

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            duplicate_detection: None,
            max_message_bytes: 256 * 1024,
        }
    }
}

/// The namespace's shared access key.
#[derive(Debug, Clone)]
pub struct ServiceBusConfig {
    /// The key's name (default `RootManageSharedAccessKey`).
    pub key_name: String,
    /// The key (default: a fixed sandbox key).
    pub key: String,
}

impl Default for ServiceBusConfig {
    fn default() -> Self {
        ServiceBusConfig {
            key_name: "RootManageSharedAccessKey".to_owned(),
            key: "SAS_KEY_VALUE_of_the_sandbox".to_owned(),
        }
    }
}

/// A running Service Bus namespace on `sb://127.0.0.1:<port>` (plain AMQP, as the
/// Service Bus emulator serves it); stopped by [`stop`](Self::stop) or when dropped.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use azure_sandbox::{QueueOptions, ServiceBus, ServiceBusConfig};
///
/// let bus = ServiceBus::start(ServiceBusConfig::default()).await.unwrap();
/// bus.create_queue("case-events", QueueOptions::default());
/// assert!(bus.connection_string().starts_with("Endpoint=sb://127.0.0.1:"));
/// assert!(bus.connection_string().ends_with("UseDevelopmentEmulator=true;"));
/// bus.stop().await;
/// # });
/// ```
pub struct ServiceBus {
    port: u16,
    shared: Arc<Shared>,
    tasks: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ServiceBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceBus")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// The entity path named by an address or audience (`sb://host:port/queue` → `queue`).
pub(crate) fn conn_path(address: &str) -> String {
    let rest = match address.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => address,
    };
    broker::normalize(rest)
}

fn entity_options(options: &QueueOptions) -> EntityOptions {
    EntityOptions {
        lock_duration: options.lock_duration,
        max_delivery_count: options.max_delivery_count,
        requires_session: options.requires_session,
        duplicate_detection: options.duplicate_detection,
        max_message_bytes: options.max_message_bytes,
    }
}

impl ServiceBus {
    /// Start a namespace with no entities on a free loopback port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(config: ServiceBusConfig) -> io::Result<ServiceBus> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            broker: Broker::default(),
            key_name: config.key_name,
            key: config.key,
            next_link: AtomicU64::new(1),
            drop_all: tokio::sync::watch::channel(0).0,
            busy: std::sync::atomic::AtomicU32::new(0),
        });
        let serving = shared.clone();
        let tasks = tokio::spawn(async move {
            let ids = AtomicU64::new(1);
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { break };
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        connections.spawn(conn::serve(stream, serving.clone(), id));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(ServiceBus {
            port,
            shared,
            tasks: Some(tasks),
        })
    }

    /// Create queue `name` (and its dead-letter sub-queue, `<name>/$DeadLetterQueue`).
    pub fn create_queue(&self, name: &str, options: QueueOptions) {
        self.shared
            .broker
            .create_queue(name, entity_options(&options));
    }

    /// Create topic `name`: what is sent to it goes to its subscriptions.
    pub fn create_topic(&self, name: &str, options: TopicOptions) {
        self.shared.broker.create_topic(
            name,
            EntityOptions {
                lock_duration: Duration::from_secs(60),
                max_delivery_count: u32::MAX,
                requires_session: false,
                duplicate_detection: options.duplicate_detection,
                max_message_bytes: options.max_message_bytes,
            },
        );
    }

    /// Create subscription `name` of `topic` (received from as
    /// `<topic>/subscriptions/<name>`, dead letters in its `$DeadLetterQueue`) with
    /// `rules`: a message goes to the subscription when one rule's filter matches. Service
    /// Bus gives a new subscription the rule `$Default` with [`RuleFilter::True`]; pass it
    /// for the same.
    ///
    /// # Errors
    /// No such topic, or a SQL filter the sandbox cannot parse (with the reason).
    pub fn create_subscription(
        &self,
        topic: &str,
        name: &str,
        options: QueueOptions,
        rules: Vec<(String, RuleFilter)>,
    ) -> Result<(), String> {
        let mut compiled = Vec::with_capacity(rules.len());
        for (rule, filter) in rules {
            let parsed = filter::Compiled::new(&filter)
                .map_err(|e| format!("rule {rule:?} of subscription {name:?}: {e}"))?;
            compiled.push((rule, parsed));
        }
        self.shared
            .broker
            .create_subscription(topic, name, entity_options(&options), compiled)
    }

    /// Drop every open connection at once, as a network failure would (a fault hook:
    /// clients must connect again; locks and messages stay as they were).
    pub fn drop_connections(&self) {
        self.shared.drop_all.send_modify(|n| *n += 1);
    }

    /// Refuse the next `n` messages sent to any entity with
    /// `com.microsoft:server-busy`, as a throttled namespace does (a fault hook).
    pub fn throttle_next(&self, n: u32) {
        self.shared
            .busy
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// The port the namespace listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `sb://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("sb://127.0.0.1:{}", self.port)
    }

    /// A connection string for the namespace, as Microsoft's clients take it (with
    /// `UseDevelopmentEmulator=true`: plain AMQP on the given port).
    pub fn connection_string(&self) -> String {
        format!(
            "Endpoint={};SharedAccessKeyName={};SharedAccessKey={};UseDevelopmentEmulator=true;",
            self.endpoint(),
            self.shared.key_name,
            self.shared.key
        )
    }

    /// Stop listening and drop every connection.
    pub async fn stop(mut self) {
        if let Some(task) = self.tasks.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ServiceBus {
    fn drop(&mut self) {
        if let Some(task) = self.tasks.take() {
            task.abort();
        }
    }
}
