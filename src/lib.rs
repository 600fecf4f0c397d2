//! # MoodBridge Integrations
//!
//! One SDK to connect a host application to enterprise platforms — Salesforce, AWS,
//! Azure, Snowflake, Airflow/NiFi — through one set of traits, one error model, one
//! resilience toolkit and one sync engine, linking only the platforms it enables.
//!
//! This is the umbrella crate a host adds. It re-exports [`moodbridge_core`] (the
//! contracts, errors, policies and configuration) at its root, [`moodbridge_auth`] as
//! [`auth`], and each connector behind a cargo feature named after it. [`registry()`]
//! holds the factory of every kind the build enables, and [`build()`] turns a config file
//! — integrations, pipelines naming them by id, the state store — into a running
//! [`host::Host`].
//!
//! | feature | adds |
//! |---|---|
//! | `sqlite` (default) | the embedded SQLite state store, the `sqlite-warehouse` kind and the encrypted credential store (kind `encrypted-sqlite`) |
//! | `loopback` (default) | `auth::oauth::login_with_loopback`: the OAuth login of command-line and desktop programs |
//! | `logging` (default) | `observe::logging::init()`: `RUST_LOG` filtering, vendor targets capped, secrets scrubbed from every log line |
//! | `postgres` | the PostgreSQL state store (several workers share it); with `sqlite` off, a host that links no SQLite |
//! | `salesforce` | `salesforce`: kind `salesforce` |
//! | `sandbox` | the local Salesforce sandbox server (`salesforce::sandbox`) |
//! | `aws` | `aws`: kind `s3` |
//! | `aws-sqs` | kind `sqs` (`aws::SqsQueue`) |
//! | `aws-sns` | kind `sns` (`aws::SnsTopic`) |
//! | `aws-secrets` | kind `aws-secrets-manager` (`aws::SecretsManagerStore`, a credential store) |
//! | `aws-logs` | `aws::logs::CloudWatchLogs`: a `tracing` layer shipping logs to CloudWatch Logs |
//! | `aws-dynamodb` | kind `aws-dynamodb` (`aws::DynamoDb`: tables as a source and sink; a state table of cursors and leases) |
//! | `azure` | `azure`: kind `azure-blob` |
//! | `azure-queue` | kind `azure-queue` (`azure::queue::AzureQueue`) |
//! | `azure-servicebus` | kind `azure-servicebus` (`azure::servicebus::ServiceBusQueue`) |
//! | `azure-keyvault` | kind `azure-key-vault` (`azure::KeyVaultStore`, a credential store) |
//! | `snowflake` | `snowflake::SnowflakeClient`, `snowflake::SessionPool` and `snowflake::SnowflakeSink`: Snowflake over the drivers' protocol (logins, chunked Arrow results, async, multi-statement, PUT / GET to stages, a session pool, bulk loads through staged Parquet); kind `snowflake` |
//! | `etl` | `etl::airflow::AirflowClient`: Apache Airflow 3's REST API (DAGs, runs, task instances, logs, XCom, variables, connections, asset events) and `etl::airflow::PublishAssets` (committed streams start the DAGs scheduled on them), kind `airflow`; `etl::nifi::NifiClient`: Apache NiFi 2's REST API (process groups and processors through their revisions, bulletins, provenance, flow definitions), kind `nifi` |
//! | `http` | `http` (crate `moodbridge-ops`): the operations router (health, metrics, status page) |
//! | `full` | every connector: `salesforce`, `salesforce-pubsub`, `aws`, `aws-sqs`, `aws-sns`, `aws-secrets`, `aws-logs`, `aws-dynamodb`, `azure`, `azure-queue`, `azure-servicebus`, `azure-keyvault`, `snowflake`, `etl` |
//!
//! ```
//! use moodbridge::{Policy, RetryConfig};
//!
//! let policy = Policy::builder("salesforce:prod").retry(RetryConfig::default()).build();
//! assert_eq!(policy.platform(), "salesforce:prod");
//! ```

pub use moodbridge_core::*;

/// Tokens and secrets: OAuth2 flows, the token manager, JWT validation, credential stores
/// (in-memory, environment, encrypted SQLite).
pub use moodbridge_auth as auth;

/// Salesforce (feature `salesforce`): REST, SOQL, composite, Bulk API 2.0, streaming,
/// source and sink; the local sandbox ([`salesforce::sandbox`]) with feature `sandbox`.
#[cfg(feature = "salesforce")]
pub mod salesforce {
    pub use connector_salesforce::*;

    /// The local Salesforce-compatible server (feature `sandbox`): OAuth, REST, Bulk API
    /// 2.0 and the Streaming API on loopback, for tests, examples and local development.
    #[cfg(feature = "sandbox")]
    pub use salesforce_sandbox as sandbox;
}

/// The embedded SQLite warehouse (feature `sqlite`): [`sqlite::SqliteTableSink`] and the
/// `sqlite-warehouse` kind.
#[cfg(feature = "sqlite")]
pub use connector_sqlite as sqlite;

/// The operations HTTP surface (feature `http`): an axum router with integration health,
/// Prometheus metrics and a status page ([`http::Ops`]).
#[cfg(feature = "http")]
pub use moodbridge_ops as http;

/// AWS (feature `aws`): S3 object storage ([`aws::S3ObjectStore`]); with `aws-sqs`, SQS
/// queues (`aws::SqsQueue`); with `aws-sns`, SNS topics (`aws::SnsTopic`); with
/// `aws-secrets`, Secrets Manager as a credential store (`aws::SecretsManagerStore`); with
/// `aws-dynamodb`, DynamoDB tables as a source and sink (`aws::DynamoDb`).
#[cfg(feature = "aws")]
pub use connector_aws as aws;

/// Azure (feature `azure`): Blob Storage ([`azure::AzureBlobStore`]); with
/// `azure-queue`, Queue storage (`azure::queue::AzureQueue`); with `azure-servicebus`,
/// Service Bus queues and subscriptions (`azure::servicebus::ServiceBusQueue`); with
/// `azure-keyvault`, Key Vault secrets as a credential store (`azure::KeyVaultStore`).
#[cfg(feature = "azure")]
pub use connector_azure as azure;

/// Snowflake (feature `snowflake`): [`snowflake::SnowflakeClient`] on the drivers' own
/// protocol (chunked Arrow results, async, multi-statement, PUT / GET to stages),
/// [`snowflake::SessionPool`], [`snowflake::SnowflakeSink`], and kind `snowflake`.
#[cfg(feature = "snowflake")]
pub use connector_snowflake as snowflake;

/// ETL and orchestrators (feature `etl`): [`etl::airflow::AirflowClient`], a typed client
/// of Apache Airflow 3's REST API, [`etl::airflow::PublishAssets`], and kind `airflow`;
/// [`etl::nifi::NifiClient`], a typed client of Apache NiFi 2's REST API, and kind `nifi`.
#[cfg(feature = "etl")]
pub use connector_etl as etl;

/// A [`Registry`] holding the factory of every kind this build enables:
///
/// | kind | built as | cargo feature |
/// |---|---|---|
/// | `local-objects` | `storage::local_objects::LocalObjects` (an [`ObjectStore`]) | always |
/// | `sqlite-warehouse` | `sqlite::SqliteWarehouse` (a [`SyncSink`]) | `sqlite` (default) |
/// | `memory`, `env` | credential stores ([`auth::store::kinds`]) | always |
/// | `encrypted-sqlite` | the encrypted credential store | `sqlite` (default) |
/// | `salesforce` | `salesforce::SalesforceIntegration` (source and sink) | `salesforce` |
/// | `s3` | `aws::S3ObjectStore` | `aws` |
/// | `sqs` | `aws::SqsQueue` (a `queue::MessageQueue`) | `aws-sqs` |
/// | `sns` | `aws::SnsTopic` | `aws-sns` |
/// | `aws-secrets-manager` | `aws::SecretsManagerStore` (a [`CredentialStore`]) | `aws-secrets` |
/// | `aws-dynamodb` | `aws::DynamoDb` (a [`SyncSource`] and [`SyncSink`]; with a state table, a `state::CursorStore`) | `aws-dynamodb` |
/// | `azure-blob` | `azure::AzureBlobStore` | `azure` |
/// | `azure-queue` | `azure::queue::AzureQueue` (a `queue::MessageQueue`) | `azure-queue` |
/// | `azure-servicebus` | `azure::servicebus::ServiceBusQueue` (a `queue::MessageQueue`) | `azure-servicebus` |
/// | `azure-key-vault` | `azure::KeyVaultStore` (a [`CredentialStore`]) | `azure-keyvault` |
/// | `snowflake` | `snowflake::SnowflakeIntegration` (its `snowflake::SessionPool` and its `dyn SyncSink`, a `snowflake::SnowflakeSink`, among the interfaces) | `snowflake` |
/// | `airflow` | `etl::airflow::AirflowIntegration` (its `etl::airflow::AirflowClient` among the interfaces) | `etl` |
/// | `nifi` | `etl::nifi::NifiIntegration` (its `etl::nifi::NifiClient` among the interfaces) | `etl` |
///
/// A host adds its own factories with [`Registry::register`].
///
/// ```
/// let registry = moodbridge::registry();
/// let kinds: Vec<&str> = registry.kinds().collect();
/// assert!(kinds.contains(&"local-objects"));
/// assert!(kinds.contains(&"env"));
/// ```
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    let mut add = |factory: std::sync::Arc<dyn IntegrationFactory>| {
        // Kinds are distinct constants of distinct crates: registering cannot collide.
        let _ = registry.register(factory);
    };
    add(std::sync::Arc::new(
        storage::local_objects::LocalObjectsFactory,
    ));
    #[cfg(feature = "sqlite")]
    add(std::sync::Arc::new(sqlite::SqliteWarehouseFactory));
    for store in auth::store::kinds::StoreFactory::all() {
        add(std::sync::Arc::new(store));
    }
    #[cfg(feature = "salesforce")]
    add(std::sync::Arc::new(salesforce::SalesforceFactory));
    #[cfg(feature = "aws")]
    add(std::sync::Arc::new(aws::S3Factory));
    #[cfg(feature = "aws-sqs")]
    add(std::sync::Arc::new(aws::SqsFactory));
    #[cfg(feature = "aws-sns")]
    add(std::sync::Arc::new(aws::SnsFactory));
    #[cfg(feature = "aws-secrets")]
    add(std::sync::Arc::new(aws::SecretsManagerFactory));
    #[cfg(feature = "aws-dynamodb")]
    add(std::sync::Arc::new(aws::DynamoDbFactory));
    #[cfg(feature = "azure")]
    add(std::sync::Arc::new(azure::AzureBlobFactory));
    #[cfg(feature = "azure-queue")]
    add(std::sync::Arc::new(azure::queue::AzureQueueFactory));
    #[cfg(feature = "azure-servicebus")]
    add(std::sync::Arc::new(azure::servicebus::ServiceBusFactory));
    #[cfg(feature = "azure-keyvault")]
    add(std::sync::Arc::new(azure::KeyVaultFactory));
    #[cfg(feature = "snowflake")]
    add(std::sync::Arc::new(snowflake::SnowflakeFactory));
    #[cfg(feature = "etl")]
    add(std::sync::Arc::new(etl::airflow::AirflowFactory));
    #[cfg(feature = "etl")]
    add(std::sync::Arc::new(etl::nifi::NifiFactory));
    registry
}

/// Check and build a host config file with [`registry()`]: integrations, pipelines and
/// the state store ([`host::Host::build`]).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = tempfile::tempdir().unwrap();
/// let config = moodbridge::host::HostConfig::from_toml(&format!(r#"
///     [state]
///     backend = "sqlite"
///     path = "{0}/state.db"
///
///     [[integration]]
///     id = "documents"
///     kind = "local-objects"
///     settings = {{ root = "{0}/documents" }}
/// "#, dir.path().display())).unwrap();
/// let host = moodbridge::build(&config).await.unwrap();
/// assert!(host.integrations().get_as::<dyn moodbridge::ObjectStore>("documents").is_ok());
/// # });
/// ```
pub async fn build(config: &host::HostConfig) -> Result<host::Host> {
    host::Host::build(config, &registry()).await
}

/// The Rust examples of the guides in `docs/` are compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../docs/storage.md")]
struct StorageGuide;

/// The events guide's example compiles.
#[cfg(all(doctest, feature = "http"))]
#[doc = include_str!("../docs/events.md")]
struct EventsGuide;

/// The queues guide's example compiles.
#[cfg(doctest)]
#[doc = include_str!("../docs/queues.md")]
struct QueuesGuide;

/// The README's config example builds and runs against the local sandbox.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct Readme;
