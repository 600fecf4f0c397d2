//! Data-aware scheduling: each stream a sink commits becomes an Airflow asset event, so
//! the DAGs scheduled on it start when the data has landed.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use moodbridge_core::observe::RunScope;
use moodbridge_core::{
    RecordBatch, Result, RowBatch, StreamDescriptor, SyncSink, WriteMode, WriteReport,
};
use serde_json::{Map, Value, json};

use super::AirflowClient;

/// A sink that tells Airflow about every stream it commits: after the inner sink's
/// [`commit_stream`](SyncSink::commit_stream) succeeds, an asset event on
/// `moodbridge://<name>/<stream>` with the records written and the run
/// (`moodbridge:<pipeline>:run-<id>`) in its `extra`. A DAG declares the asset to be
/// started by it:
///
/// ```python
/// @dag(schedule=[Asset("moodbridge://warehouse/Account")])
/// def refresh_reports(): ...
/// ```
///
/// A stream no DAG declares posts nothing. An event Airflow refuses is logged and the
/// commit stands (the data landed); with [`required`](Self::required) the commit's
/// result is the event's error instead.
///
/// ```no_run
/// use connector_etl::airflow::{AirflowClient, AirflowConfig, PublishAssets};
/// use moodbridge_core::testing::MemorySink;
/// # fn f(airflow: AirflowClient) {
/// let sink = PublishAssets::new(MemorySink::new(), airflow, "warehouse");
/// assert_eq!(sink.asset_uri("Account"), "moodbridge://warehouse/Account");
/// # }
/// ```
pub struct PublishAssets<S> {
    inner: S,
    airflow: AirflowClient,
    name: String,
    required: bool,
    written: Mutex<HashMap<String, u64>>,
}

impl<S> std::fmt::Debug for PublishAssets<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishAssets")
            .field("name", &self.name)
            .field("airflow", &self.airflow)
            .finish_non_exhaustive()
    }
}

impl<S: SyncSink> PublishAssets<S> {
    /// `inner`, its commits announced to `airflow` as assets under `name` (the sink's
    /// name in the URI: `moodbridge://<name>/<stream>`).
    pub fn new(inner: S, airflow: AirflowClient, name: impl Into<String>) -> Self {
        PublishAssets {
            inner,
            airflow,
            name: name.into(),
            required: false,
            written: Mutex::new(HashMap::new()),
        }
    }

    /// Fail the commit when Airflow refuses the event (the data stays committed).
    #[must_use]
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// The asset URI of `stream`.
    pub fn asset_uri(&self, stream: &str) -> String {
        format!("moodbridge://{}/{stream}", self.name)
    }

    /// The inner sink.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn count(&self, stream: &str, report: &Result<WriteReport>) {
        if let Ok(report) = report {
            let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
            *written.entry(stream.to_owned()).or_default() += report.succeeded() as u64;
        }
    }

    async fn publish(&self, stream: &str) -> Result<()> {
        let records = self
            .written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream)
            .unwrap_or(0);
        let mut extra = Map::new();
        extra.insert("stream".into(), json!(stream));
        extra.insert("records".into(), json!(records));
        if let Some(scope) = RunScope::current() {
            extra.insert("run".into(), Value::from(scope.tag()));
        }
        let uri = self.asset_uri(stream);
        match self.airflow.post_asset_event(&uri, extra).await {
            Ok(Some(event)) => {
                tracing::info!(
                    uri,
                    event = event.id,
                    records,
                    "asset event posted to Airflow"
                );
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(e) if self.required => Err(e.with_context("asset", uri)),
            Err(e) => {
                tracing::warn!(uri, error = %e, "Airflow refused the asset event; the commit stands");
                Ok(())
            }
        }
    }
}

#[async_trait]
impl<S: SyncSink> SyncSink for PublishAssets<S> {
    async fn begin_stream(&self, stream: &StreamDescriptor, mode: &WriteMode) -> Result<()> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&stream.name);
        self.inner.begin_stream(stream, mode).await
    }

    async fn write(&self, batch: &RecordBatch, mode: &WriteMode) -> Result<WriteReport> {
        let report = self.inner.write(batch, mode).await;
        self.count(&batch.stream, &report);
        report
    }

    async fn write_rows(&self, rows: &RowBatch, mode: &WriteMode) -> Result<WriteReport> {
        let report = self.inner.write_rows(rows, mode).await;
        self.count(&rows.stream, &report);
        report
    }

    async fn flush(&self, stream: &str) -> Result<()> {
        self.inner.flush(stream).await
    }

    async fn commit_stream(&self, stream: &str, mode: &WriteMode) -> Result<()> {
        self.inner.commit_stream(stream, mode).await?;
        self.publish(stream).await
    }

    async fn delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        self.inner.delete(batch, key).await
    }

    async fn soft_delete(&self, batch: &RecordBatch, key: &[String]) -> Result<WriteReport> {
        self.inner.soft_delete(batch, key).await
    }
}
