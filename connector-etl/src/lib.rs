//! # connector-etl
//!
//! ETL around the sync engine, and the orchestrators pipelines run under.
//!
//! - [`airflow`]: a typed client of Apache Airflow 3's REST API v2 — health, DAGs
//!   (pause, unpause), runs triggered and waited on (a paused DAG reported at once), task
//!   instances, their logs and XCom, clearing, variables, connections (passwords only by
//!   reference) and asset events — and [`PublishAssets`](airflow::PublishAssets), a sink
//!   whose committed streams start the DAGs scheduled on them. Kind `airflow`
//!   ([`AirflowFactory`](airflow::AirflowFactory)).
//! - [`nifi`]: a typed client of Apache NiFi 2's REST API — the flow, processors and
//!   process groups started and stopped through their revisions, bulletins, provenance
//!   queries through their life-cycle, flow definitions down- and uploaded. Kind `nifi`
//!   ([`NifiFactory`](nifi::NifiFactory)).
//! - [`anomaly`]: a run's metric (a row count, a null or validity rate) judged against
//!   earlier runs by the modified z-score and the rate of change.
//! - [`checks`]: dataset checks evaluated on data in flight (completeness, uniqueness,
//!   validity rates, row counts, references across streams, freshness), each `fail` or
//!   `warn`, and the gate they make.
//! - [`profile`]: what each column of a stream holds, gathered in one pass over the
//!   batches as they move (kinds, formats, distinct values by HyperLogLog++, moments
//!   and t-digest quantiles, low-cardinality value counts), mergeable and serialisable;
//!   [`suggest`](profile::suggest) proposes validation rules and keeps those a
//!   held-back sample passes.
//!
//! ```no_run
//! use connector_etl::airflow::{AirflowClient, AirflowConfig};
//! use secrecy::SecretString;
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let airflow = AirflowClient::new(AirflowConfig::password(
//!     "http://127.0.0.1:8080",
//!     "admin",
//!     SecretString::from("admin"),
//! )?)?;
//! for dag in airflow.dags().await? {
//!     println!("{} paused={}", dag.dag_id, dag.is_paused);
//! }
//! # Ok(()) }
//! ```

pub mod airflow;
pub mod anomaly;
pub mod checks;
pub mod nifi;
pub mod profile;
mod rest;
