//! The OpenLineage events of a [`SnowflakeSink`](crate::SnowflakeSink) stream: `START`
//! when it begins, `RUNNING` per batch (the staged file as input; the table as output
//! with its row count, and the `COPY` and `MERGE` / `INSERT` query ids), `COMPLETE` at
//! its commit. When the run's source names itself, its stream is an input of every event,
//! with the source's own jobs (`moodbridge_extract`) once it noted any. Datasets are named as OpenLineage's naming spec names Snowflake's:
//! `snowflake://<account>` and `DATABASE.SCHEMA.TABLE`.

use moodbridge_core::Result;
use moodbridge_core::lineage::{Dataset, EventType, Job, RunEvent, facet, run_id};
use moodbridge_core::observe::RunScope;
use serde_json::json;

use crate::client::SnowflakeClient;

/// The schema of the sink's own facet.
const LOAD_FACET_SCHEMA: &str =
    "https://github.com/moodbridge/moodbridge-integrations/blob/main/docs/snowflake.md#lineage";
const OUTPUT_STATISTICS_SCHEMA: &str = "https://openlineage.io/spec/facets/1-0-2/OutputStatisticsOutputDatasetFacet.json#/$defs/OutputStatisticsOutputDatasetFacet";

/// What loading one batch did.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadTrace {
    /// The staged files' common prefix.
    pub file: String,
    /// The staged files' size together.
    pub bytes: usize,
    /// How many files.
    pub files: usize,
    /// Rows in it.
    pub rows: usize,
    /// The `COPY` statement's query id.
    pub copy: Option<String>,
    /// The `MERGE` / `INSERT` that moved the rows into the table.
    pub apply: Option<String>,
    /// `false` when Snowflake (or the ledger) knew the file loaded already.
    pub loaded: bool,
}

/// A stream's job, run and datasets.
#[derive(Debug, Clone)]
pub(crate) struct StreamLineage {
    namespace: String,
    table: String,
    stage: String,
    job: Job,
    run_id: String,
    tag: Option<String>,
    /// The stream in its source, when the run's source names its namespace.
    source: Option<Dataset>,
    /// The stream's name, under which the source notes its jobs.
    stream: String,
    /// The run, whose source notes its jobs as it reads.
    scope: Option<RunScope>,
}

impl StreamLineage {
    /// The lineage of loading `table` through `stage`, in the run in scope (a run of its
    /// own outside one).
    pub(crate) async fn of(client: &SnowflakeClient, table: &str, stage: &str) -> Result<Self> {
        let rows = client
            .execute("SELECT CURRENT_DATABASE() AS D, CURRENT_SCHEMA() AS S", &[])
            .await?
            .json_rows()?;
        let part = |k: &str| {
            rows.first()
                .and_then(|r| r[k].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let (database, schema) = (part("D"), part("S"));
        let scope = RunScope::current();
        let source = scope
            .as_ref()
            .and_then(RunScope::source)
            .map(|namespace| Dataset::new(namespace, table));
        let (job, run, tag) = match &scope {
            Some(scope) => (
                format!("{}.{table}", scope.pipeline()),
                run_id(&scope.tag()),
                Some(scope.tag()),
            ),
            None => (
                format!("snowflake-sink.{table}"),
                uuid::Uuid::new_v4().to_string(),
                None,
            ),
        };
        Ok(StreamLineage {
            namespace: format!("snowflake://{}", client.account().to_ascii_lowercase()),
            table: format!("{database}.{schema}.{table}"),
            stage: format!("{database}.{schema}.{stage}"),
            job: Job::new("moodbridge", job),
            run_id: run,
            tag,
            source,
            stream: table.to_owned(),
            scope,
        })
    }

    fn event(&self, event_type: EventType) -> RunEvent {
        let mut event = RunEvent::new(event_type, self.run_id.clone(), self.job.clone());
        if let Some(tag) = &self.tag {
            event = event.run_facet(
                "moodbridge_run",
                facet(LOAD_FACET_SCHEMA, json!({ "queryTag": tag })),
            );
        }
        event
    }

    fn table(&self) -> Dataset {
        Dataset::new(&self.namespace, &self.table)
    }

    /// The event with the source's dataset among its inputs, when known, and with the
    /// source's own jobs read so far (a Salesforce Bulk API query job, say), when it
    /// noted any.
    fn with_source_input(&self, event: RunEvent) -> RunEvent {
        let Some(source) = &self.source else {
            return event;
        };
        let jobs = self
            .scope
            .as_ref()
            .map(|scope| scope.source_jobs(&self.stream))
            .unwrap_or_default();
        let source = if jobs.is_empty() {
            source.clone()
        } else {
            source.clone().facet(
                "moodbridge_extract",
                facet(LOAD_FACET_SCHEMA, json!({ "jobs": jobs })),
            )
        };
        event.input(source)
    }

    /// The stream began.
    pub(crate) fn start(&self) -> RunEvent {
        self.with_source_input(self.event(EventType::Start))
            .output(self.table())
    }

    /// A batch was loaded.
    pub(crate) fn batch(&self, trace: &LoadTrace) -> RunEvent {
        let rows = if trace.loaded { trace.rows } else { 0 };
        self.with_source_input(self.event(EventType::Running))
            .input(Dataset::new(
                &self.namespace,
                format!("@{}/{}", self.stage, trace.file),
            ))
            .output(
                self.table()
                    .output_facet(
                        "outputStatistics",
                        facet(
                            OUTPUT_STATISTICS_SCHEMA,
                            json!({"rowCount": rows, "size": trace.bytes, "fileCount": trace.files}),
                        ),
                    )
                    .facet(
                        "moodbridge_load",
                        facet(
                            LOAD_FACET_SCHEMA,
                            json!({
                                "stageFile": trace.file,
                                "copyQueryId": trace.copy,
                                "applyQueryId": trace.apply,
                                "loaded": trace.loaded,
                            }),
                        ),
                    ),
            )
    }

    /// The stream committed.
    pub(crate) fn complete(&self) -> RunEvent {
        self.with_source_input(self.event(EventType::Complete))
            .output(self.table())
    }
}
