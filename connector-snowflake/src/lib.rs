//! # connector-snowflake
//!
//! The Snowflake connector of MoodBridge Integrations, on the protocol Snowflake's own
//! drivers speak (`/session/v1/login-request`, `/queries/v1/query-request`, results as
//! Arrow IPC in `rowsetBase64` or as a JSON `rowset`), not the SQL API: that one is
//! JSON-only and cannot PUT files to a stage.
//!
//! - [`SnowflakeClient`]: a logged-in session. [`execute`](SnowflakeClient::execute)
//!   runs one statement with positional binds ([`Bind`], array binds for many rows at
//!   once) and returns a [`QueryResult`]: the query id, the columns as Snowflake types
//!   them, and the rows as Arrow [`RecordBatch`](arrow_array::RecordBatch)es (a JSON
//!   rowset is converted to the same shape). Every request goes through the client's
//!   [`Policy`](moodbridge_core::resilience::Policy); a retried statement keeps its
//!   `requestId` and counts `retryCount`, so Snowflake runs it once.
//! - [`stream`](SnowflakeClient::stream) returns a [`ResultStream`]: the inline rows,
//!   then each chunk of a large result, downloaded ahead of the reader a few at a time
//!   (bounded memory).
//! - Sessions renew themselves with the master token (ahead of expiry and on 390112)
//!   and log in again when that is refused; a statement still running is polled to its
//!   end; [`submit`](SnowflakeClient::submit) runs one in the background and
//!   [`query_result`](SnowflakeClient::query_result) reads it back by id, from any
//!   session; [`cancel`](SnowflakeClient::cancel), a statement timeout and a dropped
//!   future cancel on the server; [`execute_multi`](SnowflakeClient::execute_multi)
//!   runs several statements in one request; [`tagged`](SnowflakeClient::tagged) sets
//!   the `QUERY_TAG` of a handle's statements.
//! - Stages: [`put_bytes`](SnowflakeClient::put_bytes) /
//!   [`put_file`](SnowflakeClient::put_file) and [`get`](SnowflakeClient::get) move
//!   files as the drivers' `PUT` and `GET` do — gzip unless already compressed, a
//!   SHA-256 digest, client-side AES encryption under the stage's master key (an
//!   internal stage), and the transfer straight to the stage's S3, GCS or Azure storage
//!   with the short-lived credentials or presigned URL Snowflake hands out. A file the
//!   stage holds with the same content is not sent again ([`PutOptions`]).
//! - [`SnowflakeSink`]: the sync engine's batches bulk-loaded — checked records into a
//!   Snappy Parquet file named by its content, `PUT`, then `COPY` into the table (a
//!   batch delivered again is skipped by Snowflake's load metadata), `MERGE` by key from
//!   a staging table, or an overwrite swapped in at the stream's commit.
//! - [`SessionPool`]: logged-in sessions pooled per context (role, warehouse, database,
//!   schema), with a lifetime, idle eviction, a heartbeat before reuse, and sessions
//!   whose state a statement changed retired instead of reused.
//! - Kind `snowflake` ([`SnowflakeFactory`], [`settings`]): the pool built from a host's
//!   config, secrets read from its credential store at every login (rotation without a
//!   restart), every request through the integration's policy.
//! - [`rows`]: results as the engine's column-shaped rows
//!   ([`RowBatch`](moodbridge_core::RowBatch)), the columns once and every cell as text,
//!   without a map per record.
//! - The warehouse features no driver has: [`evolution`] (a stream's fields against
//!   the table's columns, a safe `ALTER` plan, applied by the sink), [`timetravel`]
//!   (`AT` / `BEFORE`, `CLONE` snapshots per sync run, `UNDROP`, retention),
//!   [`warehouse`] (specs reconciled under an auto-suspend guard), [`governance`]
//!   (masking and row access policies and tags reconciled; the login role held to least
//!   privilege), [`cost`] (each run's credits from `ACCOUNT_USAGE`, budgets in the health
//!   check), and OpenLineage events per loaded batch
//!   ([`SnowflakeSink::lineage`]). Statements issued inside a sync run carry its
//!   `QUERY_TAG`.
//! - [`value`]: Snowflake's Arrow encodings decoded to JSON values — `FIXED` as
//!   decimal128 or scaled integers, `TIMESTAMP_*` as structs of epoch and fraction (and
//!   time zone) or scaled integers, `DATE` as days, `TIME`, `VARIANT` / `OBJECT` /
//!   `ARRAY` as JSON text.
//!
//! ```no_run
//! use connector_snowflake::{Bind, SnowflakeClient, SnowflakeConfig};
//! use secrecy::SecretString;
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let config = SnowflakeConfig::new("acme-prod", "MOODBRIDGE_LOADER", SecretString::from("…"))
//!     .database("CASES")
//!     .schema("PUBLIC")
//!     .warehouse("LOAD_WH");
//! let client = SnowflakeClient::login(config).await?;
//! let result = client
//!     .execute("select ID, NAME from ACCOUNT where NAME = ?", &[Bind::text("Acme")])
//!     .await?;
//! for row in result.json_rows()? {
//!     println!("{row}");
//! }
//! client.logout().await?;
//! # Ok(()) }
//! ```

mod bind;
mod bind_stage;
mod cast;
mod client;
mod column;
mod config;
pub mod cost;
mod crypt;
mod error;
pub mod evolution;
pub mod governance;
mod integration;
mod keypair;
mod lineage;
pub mod named;
mod pool;
mod result;
pub mod rows;
pub mod settings;
mod sink;
mod sql;
mod stage;
mod stream;
pub mod timetravel;
pub mod value;
pub mod warehouse;

pub use bind::Bind;
pub use client::{QueryStatus, SnowflakeClient};
pub use column::Column;
pub use config::{SnowflakeConfig, StoredCredential, default_policy_config};
pub use integration::{KIND, SnowflakeFactory, SnowflakeIntegration};
pub use keypair::token as key_pair_token;
pub use pool::{PoolSettings, PoolStatus, PooledSession, SessionKey, SessionPool};
pub use result::QueryResult;
pub use settings::SnowflakeSettings;
pub use sink::SnowflakeSink;
pub use stage::{PutOptions, PutOutcome, StagedFile, TransferStatus};
pub use stream::ResultStream;

/// The platform name in errors and metrics.
pub const PLATFORM: &str = "snowflake";
