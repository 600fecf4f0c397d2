//! Amazon DynamoDB (feature `dynamodb`, kind `aws-dynamodb`), on the official
//! `aws-sdk-dynamodb`: tables as a [`SyncSink`] and a [`SyncSource`], and a state table
//! as a [`CursorStore`] and a [`LeaseStore`] for hosts without PostgreSQL
//! ([`DynamoStateTable`]).
//!
//! **Streams and tables.** A stream is a table: the one its [`StreamTable`] names, or
//! `<table_prefix><stream>`. The table's key (partition key, and sort key if any) is the
//! stream's primary key. With [`create_tables`](DynamoDbBuilder::create_tables), a sink
//! creates a missing table (on-demand capacity) keyed by the stream's primary key, with
//! the stream's cursor index when one is configured.
//!
//! **Writing** ([`sink`]): upserts read the stored items first (`BatchGetItem`, 100 keys
//! a call, four at a time) so each record reports `Created`, `Updated` (with the item before, for
//! rollback) or `Unchanged` (not written again), then write in `BatchWriteItem` calls of
//! 25 (four at a time), retrying the items DynamoDB leaves unprocessed with backoff;
//! what stays unprocessed fails alone as a temporary failure. With
//! [`only_newer`](StreamTable::only_newer), an upsert is a conditional `PutItem` that
//! writes only when the record's cursor is newer than the stored one — a late replay
//! never overwrites newer data. Appends are conditional puts that never touch an
//! existing item. A record DynamoDB cannot hold (no key, a wrong key type, over 400 KB)
//! fails alone before anything is sent.
//!
//! **Reading** ([`source`]): full reads scan the table (strongly consistent, a checkpoint
//! after every page); incremental reads query a global secondary index whose sort key is
//! the cursor attribute and whose partition key holds one value for every item of the
//! stream ([`StreamTable::index`]). An index is required: a scan cannot see the order of
//! writes, so a record written during it could be missed for good. Index reads are
//! eventually consistent (the index trails the table by a fraction of a second); a record
//! not yet in the index is read by the next run, since its cursor is past the checkpoint.
//!
//! ```no_run
//! use connector_aws::dynamodb::{DynamoDb, StreamTable};
//! use moodbridge_core::{ReadRequest, SyncMode, SyncSource};
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let db = DynamoDb::builder()
//!     .region("eu-west-1")
//!     .stream("Case", StreamTable::new("cases").cursor("updated_at").index("by_updated", "entity", "Case"))
//!     .build()
//!     .await?;
//! let cases = db.read(ReadRequest::new("Case", SyncMode::Incremental)).await?;
//! # drop(cases);
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType};
use moodbridge_core::config::{Validate, Validator};
use moodbridge_core::integration::{
    Capabilities, Capability, HealthReport, HealthStatus, Interfaces, PlatformIntegration,
};
use moodbridge_core::redact::Secrets;
use moodbridge_core::registry::{BuildContext, IntegrationFactory};
use moodbridge_core::state::{CursorStore, LeaseStore};
use moodbridge_core::{
    Error, ErrorKind, IntegrationConfig, Policy, PolicyConfig, Result, SyncSink, SyncSource,
};
use serde::Deserialize;

use crate::sdk::{AwsCredentialSettings, AwsCredentials};

pub mod sink;
pub mod source;
pub mod state;
pub mod value;

pub use state::DynamoStateTable;

const PLATFORM: &str = "aws-dynamodb";

/// The kind name of DynamoDB integrations.
pub const DYNAMODB_KIND: &str = "aws-dynamodb";

/// How a stream maps to a table; in config, one entry of `streams`.
///
/// ```toml
/// [integration.settings.streams.Case]
/// table = "cases"                                   # default: table_prefix + "Case"
/// cursor = "updated_at"                             # incremental reads and only_newer
/// index = "by_updated"                              # a GSI: partition key `entity`, sort key `updated_at`
/// partition = { attribute = "entity", value = "Case" }
/// only_newer = true                                 # upserts never overwrite a newer item
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamTable {
    /// The table (default: the table prefix and the stream's name).
    #[serde(default)]
    pub table: Option<String>,
    /// The attribute incremental reads resume by (an RFC 3339 time or a number that
    /// grows with every write).
    #[serde(default)]
    pub cursor: Option<String>,
    /// The global secondary index incremental reads query: its sort key is `cursor`, its
    /// partition key is `partition.attribute`.
    #[serde(default)]
    pub index: Option<String>,
    /// The index's partition key and the value every item of the stream holds in it.
    #[serde(default)]
    pub partition: Option<IndexPartition>,
    /// Upserts write a record only when its cursor is newer than the stored item's.
    #[serde(default)]
    pub only_newer: bool,
}

/// The partition of a cursor index a stream's items live in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPartition {
    /// The index's partition key attribute.
    pub attribute: String,
    /// The value (a string) every item of the stream holds in it.
    pub value: String,
}

impl StreamTable {
    /// The stream is table `table`.
    ///
    /// ```
    /// use connector_aws::dynamodb::StreamTable;
    /// let t = StreamTable::new("cases").cursor("updated_at").index("by_updated", "entity", "Case");
    /// assert_eq!(t.partition.unwrap().value, "Case");
    /// ```
    pub fn new(table: impl Into<String>) -> Self {
        StreamTable {
            table: Some(table.into()),
            ..Default::default()
        }
    }

    /// Incremental reads and [`only_newer`](Self::only_newer) go by `attribute`.
    pub fn cursor(mut self, attribute: impl Into<String>) -> Self {
        self.cursor = Some(attribute.into());
        self
    }

    /// Incremental reads query index `index`, partition `attribute` = `value`.
    pub fn index(
        mut self,
        index: impl Into<String>,
        attribute: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.index = Some(index.into());
        self.partition = Some(IndexPartition {
            attribute: attribute.into(),
            value: value.into(),
        });
        self
    }

    /// Upserts write only records newer (by the cursor) than the stored item.
    pub fn only_newer(mut self, yes: bool) -> Self {
        self.only_newer = yes;
        self
    }

    fn problems(&self, at: &str, v: &mut Validator) {
        if let Some(table) = &self.table
            && let Some(p) = table_name_problem(table)
        {
            v.problem(
                format!("{at}.table"),
                p,
                "use 3 to 255 letters, digits, _ . -",
            );
        }
        if self.index.is_some() != self.partition.is_some() {
            v.problem(
                format!("{at}.index"),
                "an index needs its partition, and a partition its index",
                "set both index and partition = { attribute, value }",
            );
        }
        if self.index.is_some() && self.cursor.is_none() {
            v.problem(
                format!("{at}.cursor"),
                "an index is set without a cursor",
                "name the cursor attribute: the index's sort key",
            );
        }
        if self.only_newer && self.cursor.is_none() {
            v.problem(
                format!("{at}.only_newer"),
                "only_newer compares cursors, and no cursor is set",
                "set cursor, or only_newer = false",
            );
        }
    }
}

fn table_name_problem(name: &str) -> Option<String> {
    if !(3..=255).contains(&name.len()) {
        return Some(format!("table name {name:?} is not 3 to 255 characters"));
    }
    name.chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
        .map(|c| format!("table name {name:?} holds {c:?}"))
}

/// Settings of an `aws-dynamodb` integration, read from its config's `settings`.
///
/// ```toml
/// [[integration]]
/// id = "dynamo"
/// kind = "aws-dynamodb"
///
/// [integration.settings]
/// region = "eu-west-1"
/// table_prefix = "moodbridge-"       # stream Matter → table moodbridge-Matter
/// create_tables = false              # a sink creates missing tables when true
/// state_table = "moodbridge-state"   # cursors and leases (DynamoStateTable)
/// # endpoint = "http://127.0.0.1:5000"
///
/// [integration.settings.streams.Case]
/// table = "cases"
/// cursor = "updated_at"
/// index = "by_updated"
/// partition = { attribute = "entity", value = "Case" }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DynamoSettings {
    /// The AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// A custom endpoint (a local emulator).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Prepended to a stream's name to make its table's, unless the stream names one.
    #[serde(default)]
    pub table_prefix: String,
    /// Whether a sink creates a missing table.
    #[serde(default)]
    pub create_tables: bool,
    /// Streams and their tables.
    #[serde(default)]
    pub streams: BTreeMap<String, StreamTable>,
    /// A table for cursors and leases (see [`DynamoStateTable`]).
    #[serde(default)]
    pub state_table: Option<String>,
    /// Where the keys come from (default: the standard AWS chain).
    #[serde(default)]
    pub credentials: AwsCredentialSettings,
}

impl Validate for DynamoSettings {
    fn validate_into(&self, v: &mut Validator) {
        crate::sdk::validate_endpoint(
            self.endpoint.as_deref(),
            "https://dynamodb.eu-west-1.amazonaws.com",
            v,
        );
        if let Some(c) = self
            .table_prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c)))
        {
            v.problem(
                "table_prefix",
                format!("holds {c:?}, which table names cannot"),
                "use letters, digits, _ . -",
            );
        }
        if let Some(table) = &self.state_table
            && let Some(p) = table_name_problem(table)
        {
            v.problem("state_table", p, "use 3 to 255 letters, digits, _ . -");
        }
        for (stream, table) in &self.streams {
            table.problems(&format!("streams.{stream}"), v);
        }
        self.credentials.validate_into(v);
    }
}

/// The default policy: up to 4 attempts with backoff, 10 s per attempt.
pub fn default_policy_config() -> PolicyConfig {
    crate::sdk::messaging_policy_config(Duration::from_secs(10))
}

/// Settings of a [`DynamoDb`]; made by [`DynamoDb::builder`].
#[derive(Debug, Clone)]
pub struct DynamoDbBuilder {
    id: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    credentials: AwsCredentials,
    policy: Option<Policy>,
    table_prefix: String,
    create_tables: bool,
    streams: BTreeMap<String, StreamTable>,
}

impl DynamoDbBuilder {
    /// The integration id (default `aws-dynamodb:<prefix or "tables">`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The AWS region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint (a local emulator).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Where the keys come from (default: the standard AWS chain).
    pub fn credentials(mut self, credentials: AwsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Run every call through `policy`.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Prepended to a stream's name to make its table's, unless the stream names one.
    pub fn table_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.table_prefix = prefix.into();
        self
    }

    /// Whether a sink creates a missing table (default `false`).
    pub fn create_tables(mut self, yes: bool) -> Self {
        self.create_tables = yes;
        self
    }

    /// Map `stream` to `table`.
    pub fn stream(mut self, stream: impl Into<String>, table: StreamTable) -> Self {
        self.streams.insert(stream.into(), table);
        self
    }

    /// Checks the settings and makes the client (no request is made).
    ///
    /// # Errors
    /// A bad table name, prefix or stream mapping, as [`Config`](ErrorKind::Config)
    /// errors naming the fix.
    pub async fn build(self) -> Result<DynamoDb> {
        let mut v = Validator::new();
        for (stream, table) in &self.streams {
            table.problems(&format!("streams.{stream}"), &mut v);
        }
        v.finish().map_err(|e| {
            Error::config(format!("DynamoDB settings: {e}")).with_connector(PLATFORM)
        })?;
        let name = if self.table_prefix.is_empty() {
            "tables".to_owned()
        } else {
            self.table_prefix
                .trim_end_matches(['-', '_', '.'])
                .to_owned()
        };
        let parts = crate::sdk::client_parts(
            PLATFORM,
            &name,
            self.id.as_deref(),
            self.region.as_deref(),
            self.endpoint.as_deref(),
            &self.credentials,
            self.policy.as_ref(),
            default_policy_config(),
        )
        .await?;
        let client = client_of(&parts, self.endpoint.as_deref());
        Ok(DynamoDb {
            inner: Arc::new(Inner {
                id: parts.id,
                client,
                policy: parts.policy,
                secrets: parts.secrets,
                tables: Mutex::new(HashMap::new()),
                settings: self,
            }),
        })
    }
}

pub(crate) fn client_of(parts: &crate::sdk::ClientParts, endpoint: Option<&str>) -> Client {
    let mut config = aws_sdk_dynamodb::config::Builder::from(&parts.sdk)
        .retry_config(aws_smithy_types::retry::RetryConfig::disabled());
    if let Some(provider) = crate::sdk::remembering(&parts.sdk, &parts.secrets) {
        config = config.credentials_provider(provider);
    }
    if let Some(endpoint) = endpoint {
        config = config.endpoint_url(endpoint);
    }
    Client::from_conf(config.build())
}

/// DynamoDB tables as a sync source and sink. See the [module docs](self). Cheap to
/// clone.
#[derive(Clone)]
pub struct DynamoDb {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) id: String,
    pub(crate) client: Client,
    pub(crate) policy: Policy,
    pub(crate) secrets: Secrets,
    pub(crate) settings: DynamoDbBuilder,
    tables: Mutex<HashMap<String, Arc<TableInfo>>>,
}

impl fmt::Debug for DynamoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDb")
            .field("id", &self.inner.id)
            .field("table_prefix", &self.inner.settings.table_prefix)
            .field("streams", &self.inner.settings.streams.keys())
            .finish_non_exhaustive()
    }
}

/// What a table's description says: its key and its indexes' keys.
#[derive(Debug, Clone)]
pub(crate) struct TableInfo {
    pub(crate) name: String,
    /// Partition key, then sort key if any, with their declared types.
    pub(crate) key: Vec<(String, ScalarAttributeType)>,
    /// Index name → its key attributes (partition, then sort).
    pub(crate) indexes: HashMap<String, Vec<String>>,
}

impl TableInfo {
    pub(crate) fn key_names(&self) -> Vec<String> {
        self.key.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// The error kind of a DynamoDB error code.
pub(crate) fn service_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match code {
        Some("ResourceNotFoundException") => ErrorKind::NotFound,
        Some(
            "ConditionalCheckFailedException"
            | "TransactionConflictException"
            | "ResourceInUseException",
        ) => ErrorKind::Conflict,
        Some(
            "ValidationException"
            | "SerializationException"
            | "ItemCollectionSizeLimitExceededException",
        ) => ErrorKind::InvalidInput,
        Some(
            "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "LimitExceededException",
        ) => ErrorKind::RateLimited { retry_after: None },
        Some("AccessDeniedException") => ErrorKind::Forbidden,
        Some(
            "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "MissingAuthenticationToken"
            | "IncompleteSignature",
        ) => ErrorKind::Auth,
        Some("InternalServerError" | "ServiceUnavailable") => ErrorKind::Unavailable,
        _ => moodbridge_core::raw::kind_of_status(status),
    }
}

pub(crate) fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => {
            "check the table name, prefix and region (or set create_tables = true for a sink)"
        }
        ErrorKind::Forbidden => "the credentials lack a dynamodb: permission on this table",
        ErrorKind::Auth => "check the access key id and secret",
        ErrorKind::RateLimited { .. } => {
            "DynamoDB is throttling: raise the table's capacity, or use on-demand mode"
        }
        _ => "",
    }
}

pub(crate) const ERRORS: crate::sdk::ServiceErrors = crate::sdk::ServiceErrors {
    platform: PLATFORM,
    service: "DynamoDB",
    kind_of: service_kind,
    hint_of: hint,
};

/// A request built by an SDK builder, or an internal error.
pub(crate) fn built<T>(
    r: std::result::Result<T, aws_sdk_dynamodb::error::BuildError>,
) -> Result<T> {
    r.map_err(|e| {
        Error::internal(format!("building a DynamoDB request: {e}")).with_connector(PLATFORM)
    })
}

/// Whether `err` is DynamoDB's answer to a failed condition.
pub(crate) fn condition_failed(err: &Error) -> bool {
    err.kind() == ErrorKind::Conflict && err.message().contains("ConditionalCheckFailed")
}

impl DynamoDb {
    /// A builder (region and credentials from the AWS chain unless set).
    pub fn builder() -> DynamoDbBuilder {
        DynamoDbBuilder {
            id: None,
            region: None,
            endpoint: None,
            credentials: AwsCredentials::default(),
            policy: None,
            table_prefix: String::new(),
            create_tables: false,
            streams: BTreeMap::new(),
        }
    }

    /// The table of `stream`.
    pub fn table_of(&self, stream: &str) -> String {
        self.inner
            .settings
            .streams
            .get(stream)
            .and_then(|t| t.table.clone())
            .unwrap_or_else(|| format!("{}{stream}", self.inner.settings.table_prefix))
    }

    /// The mapping of `stream` (the default one when not configured).
    pub(crate) fn mapping(&self, stream: &str) -> StreamTable {
        self.inner
            .settings
            .streams
            .get(stream)
            .cloned()
            .unwrap_or_default()
    }

    /// One SDK call through the policy, its error mapped.
    pub(crate) async fn call<T, E, F, Fut>(
        &self,
        operation: &'static str,
        table: &str,
        idempotent: bool,
        f: F,
    ) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<
                    T,
                    aws_sdk_dynamodb::error::SdkError<
                        E,
                        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
                    >,
                >,
            >,
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        crate::sdk::call(
            &self.inner.policy,
            &self.inner.secrets,
            ERRORS,
            table,
            operation,
            idempotent,
            f,
        )
        .await
    }

    /// The description of `stream`'s table, cached.
    pub(crate) async fn table_info(&self, stream: &str) -> Result<Arc<TableInfo>> {
        if let Some(info) = self.cached(stream) {
            return Ok(info);
        }
        let table = self.table_of(stream);
        let out = self
            .call("describe_table", &table, true, || {
                self.inner.client.describe_table().table_name(&table).send()
            })
            .await?;
        let info = Arc::new(describe(&table, out.table())?);
        if let Ok(mut tables) = self.inner.tables.lock() {
            tables.insert(stream.to_owned(), info.clone());
        }
        Ok(info)
    }

    fn cached(&self, stream: &str) -> Option<Arc<TableInfo>> {
        self.inner.tables.lock().ok()?.get(stream).cloned()
    }

    /// Wait until `table` is active (a minute at most).
    pub(crate) async fn wait_active(&self, table: &str) -> Result<()> {
        for _ in 0..600 {
            let out = self
                .call("describe_table", table, true, || {
                    self.inner.client.describe_table().table_name(table).send()
                })
                .await?;
            if out
                .table()
                .and_then(|t| t.table_status())
                .is_some_and(|s| *s == aws_sdk_dynamodb::types::TableStatus::Active)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::new(
            ErrorKind::Timeout,
            format!("DynamoDB table {table} did not become active within a minute"),
        )
        .with_connector(PLATFORM))
    }

    pub(crate) fn forget(&self, stream: &str) {
        if let Ok(mut tables) = self.inner.tables.lock() {
            tables.remove(stream);
        }
    }

    /// A table for cursors and leases, on this integration's client and policy.
    pub fn state_table(&self, table: impl Into<String>) -> DynamoStateTable {
        DynamoStateTable::on(self.clone(), table.into())
    }
}

/// A table's key and indexes from its description.
pub(crate) fn describe(
    table: &str,
    desc: Option<&aws_sdk_dynamodb::types::TableDescription>,
) -> Result<TableInfo> {
    let desc = desc.ok_or_else(|| {
        Error::new(
            ErrorKind::Protocol,
            format!("DynamoDB described table {table} without its description"),
        )
        .with_connector(PLATFORM)
    })?;
    let types: HashMap<&str, ScalarAttributeType> = desc
        .attribute_definitions()
        .iter()
        .map(|d| (d.attribute_name(), d.attribute_type().clone()))
        .collect();
    let ordered = |schema: &[aws_sdk_dynamodb::types::KeySchemaElement]| {
        let mut names: Vec<(String, bool)> = schema
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    *k.key_type() == KeyType::Range,
                )
            })
            .collect();
        names.sort_by_key(|(_, range)| *range);
        names.into_iter().map(|(n, _)| n).collect::<Vec<_>>()
    };
    let key = ordered(desc.key_schema())
        .into_iter()
        .map(|n| {
            let t = types
                .get(n.as_str())
                .cloned()
                .unwrap_or(ScalarAttributeType::S);
            (n, t)
        })
        .collect();
    let indexes = desc
        .global_secondary_indexes()
        .iter()
        .filter_map(|i| Some((i.index_name()?.to_owned(), ordered(i.key_schema()))))
        .collect();
    Ok(TableInfo {
        name: table.to_owned(),
        key,
        indexes,
    })
}

#[async_trait]
impl PlatformIntegration for DynamoDb {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        DYNAMODB_KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::none()
            .with(Capability::Read)
            .with(Capability::Write)
            .with(Capability::Incremental))
    }

    async fn health_check(&self) -> HealthReport {
        let started = std::time::Instant::now();
        let probe = self
            .call("list_tables", "(health)", true, || {
                self.inner.client.list_tables().limit(1).send()
            })
            .await;
        match probe {
            Ok(_) => HealthReport::new(HealthStatus::Up, started.elapsed(), "DynamoDB answers"),
            Err(e) => HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        }
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        let this: DynamoDb = (*self).clone();
        Interfaces::new()
            .with::<dyn SyncSource>(Arc::new(this.clone()))
            .with::<dyn SyncSink>(Arc::new(this))
    }
}

/// An `aws-dynamodb` integration with a state table: its tables, and the state table as
/// a cursor store and a lease store.
struct WithState {
    db: DynamoDb,
    state: DynamoStateTable,
}

#[async_trait]
impl PlatformIntegration for WithState {
    fn id(&self) -> &str {
        self.db.id()
    }

    fn kind(&self) -> &str {
        DYNAMODB_KIND
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        self.db.capabilities().await
    }

    async fn health_check(&self) -> HealthReport {
        self.db.health_check().await
    }

    fn interfaces(self: Arc<Self>) -> Interfaces {
        Arc::new(self.db.clone())
            .interfaces()
            .with::<dyn CursorStore>(Arc::new(self.state.clone()))
            .with::<dyn LeaseStore>(Arc::new(self.state.clone()))
            .with::<DynamoStateTable>(Arc::new(self.state.clone()))
    }
}

/// Builds `aws-dynamodb` integrations from [`DynamoSettings`] (no request is made).
#[derive(Debug, Clone, Copy, Default)]
pub struct DynamoDbFactory;

#[async_trait]
impl IntegrationFactory for DynamoDbFactory {
    fn kind(&self) -> &'static str {
        DYNAMODB_KIND
    }

    fn default_policy(&self) -> PolicyConfig {
        default_policy_config()
    }

    fn validate(&self, config: &IntegrationConfig, v: &mut Validator) {
        config.check_settings::<DynamoSettings>(v);
    }

    async fn build(&self, ctx: BuildContext) -> Result<Arc<dyn PlatformIntegration>> {
        let s: DynamoSettings = ctx.settings()?;
        let mut builder = DynamoDb::builder()
            .id(&ctx.config.id)
            .policy(ctx.policy.clone())
            .table_prefix(&s.table_prefix)
            .create_tables(s.create_tables)
            .credentials(s.credentials.resolve(&ctx).await?);
        for (stream, table) in &s.streams {
            builder = builder.stream(stream, table.clone());
        }
        if let Some(region) = &s.region {
            builder = builder.region(region);
        }
        if let Some(endpoint) = &s.endpoint {
            builder = builder.endpoint(endpoint);
        }
        let db = builder.build().await?;
        Ok(match &s.state_table {
            Some(table) => Arc::new(WithState {
                state: db.state_table(table),
                db,
            }),
            None => Arc::new(db),
        })
    }
}
