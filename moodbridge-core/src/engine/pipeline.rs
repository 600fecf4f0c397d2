//! A pipeline: which streams to move from a source to a sink, how (mode, write mode), and
//! the mapping, sanitisation and validation of each — declared in TOML, checked at once.
//!
//! ```
//! use moodbridge_core::engine::{Pipeline, PipelineConfig};
//!
//! let config: PipelineConfig = toml::from_str(r#"
//!     name = "salesforce-to-warehouse"
//!
//!     [[streams]]
//!     name = "Contact"
//!     mapping = [{ op = "rename", from = "Email", to = "email" }]
//!     sanitize = { trim = true, lowercase = ["email"] }
//!     validate = [{ rule = "required", field = "LastName" }]
//! "#).unwrap();
//! let pipeline = Pipeline::new(config).unwrap();
//! assert_eq!(pipeline.name(), "salesforce-to-warehouse");
//! ```

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::mapping::{MapStep, Mapping};
use super::validation::{Rule, Rules, Sanitize};
use crate::catalog::{FieldDescriptor, FieldType, StreamDescriptor, SyncMode};
use crate::config::{Validate, Validator};
use crate::error::Result;
use crate::record::Record;
use crate::state::{AuditLevel, FailureStage};
use crate::sync::WriteMode;

/// What the sink does with records deleted at the source (tombstones a source reports
/// as [`SourceMessage::Deletes`](crate::SourceMessage::Deletes)).
///
/// ```
/// use moodbridge_core::engine::{DeleteMode, StreamConfig};
/// let stream: StreamConfig = toml::from_str("name = \"Case\"\ndeletes = \"soft\"").unwrap();
/// assert_eq!(stream.deletes, DeleteMode::Soft);
/// assert_eq!(StreamConfig::new("Case").deletes, DeleteMode::Ignore);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeleteMode {
    /// Leave the sink's record as it is (the default: a sink keeps what it was given).
    #[default]
    Ignore,
    /// Keep the record, marked deleted: [`DELETED`](crate::DELETED) `= true` and
    /// [`DELETED_AT`](crate::DELETED_AT) (see [`SyncSink::soft_delete`](crate::SyncSink::soft_delete)).
    Soft,
    /// Remove the record ([`SyncSink::delete`](crate::SyncSink::delete)): the sink
    /// mirrors the source exactly.
    Hard,
}

/// How one stream is moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    /// The source's stream.
    pub name: String,
    /// The sink's stream (default: the same name).
    #[serde(default)]
    pub target: Option<String>,
    /// How to read it (default: incremental when the stream supports it).
    #[serde(default)]
    pub mode: Option<SyncMode>,
    /// How to write it (default: upsert by the mapped primary key, or append when the
    /// stream has none).
    #[serde(default)]
    pub write: Option<WriteMode>,
    /// Mapping steps, in order.
    #[serde(default)]
    pub mapping: Vec<MapStep>,
    /// Cleaning of string values, after mapping.
    #[serde(default)]
    pub sanitize: Sanitize,
    /// Validation rules, after sanitising.
    #[serde(default)]
    pub validate: Vec<Rule>,
    /// Preferred records per batch (default: the source's choice).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// What the sink does with records deleted at the source (default: ignore them).
    #[serde(default)]
    pub deletes: DeleteMode,
}

impl StreamConfig {
    /// Move stream `name` with the defaults.
    pub fn new(name: impl Into<String>) -> Self {
        StreamConfig {
            name: name.into(),
            target: None,
            mode: None,
            write: None,
            mapping: Vec::new(),
            sanitize: Sanitize::default(),
            validate: Vec::new(),
            batch_size: None,
            deletes: DeleteMode::Ignore,
        }
    }
}

/// A pipeline as declared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Its name: the key of its runs, checkpoints, dead letters and lease.
    pub name: String,
    /// The id of the integration it reads from (`"salesforce:prod"`), when the pipeline
    /// is part of a host config ([`HostConfig`](crate::host::HostConfig)); a pipeline run
    /// by hand with [`SyncEngine::run`](super::SyncEngine::run) is given its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The id of the integration it writes to (`"warehouse"`); see `source`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// The streams, moved in this order.
    pub streams: Vec<StreamConfig>,
    /// What the audit log keeps of every write (default [`AuditLevel::Compact`], also
    /// written `true`): what makes a run reversible. `"full"` keeps every after-image
    /// whole as well; `"off"` (or `false`) only for loads that need no rollback.
    #[serde(default)]
    pub audit: AuditLevel,
    /// Who the audit log names as the author of the writes (default `engine`).
    #[serde(default = "engine")]
    pub actor: String,
}

fn engine() -> String {
    "engine".into()
}

impl PipelineConfig {
    /// The same pipeline, reading from integration `source` and writing to `sink`.
    #[must_use]
    pub fn between(mut self, source: impl Into<String>, sink: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self.sink = Some(sink.into());
        self
    }

    /// A pipeline of `streams` with the defaults.
    pub fn new(name: impl Into<String>, streams: Vec<StreamConfig>) -> Self {
        PipelineConfig {
            name: name.into(),
            source: None,
            sink: None,
            streams,
            audit: AuditLevel::Compact,
            actor: engine(),
        }
    }
}

impl Validate for PipelineConfig {
    fn validate_into(&self, v: &mut Validator) {
        if self.name.trim().is_empty() {
            v.problem("name", "is empty", "name the pipeline");
        }
        if self.streams.is_empty() {
            v.problem("streams", "is empty", "list at least one stream to move");
        }
        for (i, s) in self.streams.iter().enumerate() {
            v.nested(format!("streams[{i}]"), |v| {
                if s.name.is_empty() {
                    v.problem("name", "is empty", "name the source stream");
                }
                if self.streams[..i].iter().any(|o| o.name == s.name) {
                    v.problem(
                        "name",
                        format!("{} is listed twice", s.name),
                        "list each stream once",
                    );
                }
                if let Some(WriteMode::Upsert { key }) = &s.write
                    && key.is_empty()
                {
                    v.problem(
                        "write.key",
                        "is empty",
                        "name the fields that identify a record",
                    );
                }
                Mapping::compile(&s.mapping, v);
                Rules::compile(&s.validate, v);
            });
        }
    }
}

/// A checked, ready pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    config: PipelineConfig,
    streams: Vec<Arc<StreamPlan>>,
}

/// One stream's prepared transform.
#[derive(Debug, Clone)]
pub(crate) struct StreamPlan {
    pub(crate) config: StreamConfig,
    pub(crate) mapping: Mapping,
    pub(crate) rules: Rules,
}

impl StreamPlan {
    pub(crate) fn target(&self) -> &str {
        self.config.target.as_deref().unwrap_or(&self.config.name)
    }

    /// `true` when the transform may change a record (so the original must be kept for a
    /// dead letter).
    pub(crate) fn rewrites(&self) -> bool {
        !self.mapping.is_empty() || self.config.sanitize != Sanitize::default()
    }

    /// A tombstone's fields renamed as the mapping renames them (its key must match the
    /// sink's); no other step applies to it.
    pub(crate) fn rename(&self, record: &mut Record) {
        for step in &self.config.mapping {
            if let MapStep::Rename { from, to } = step
                && let Some(value) = record.remove(from)
            {
                record.set(to, value);
            }
        }
    }

    /// Map, sanitise and validate `record` in place.
    pub(crate) fn transform(
        &self,
        record: &mut Record,
    ) -> std::result::Result<(), (FailureStage, String)> {
        self.mapping
            .apply(record)
            .map_err(|e| (FailureStage::Mapping, e))?;
        self.config.sanitize.apply(record);
        self.rules
            .check(record)
            .map_err(|e| (FailureStage::Validation, e))
    }

    /// The sink's view of `source`: renamed, dropped and added fields applied; named
    /// after the target.
    pub(crate) fn describe(&self, source: &StreamDescriptor) -> StreamDescriptor {
        let mut d = source.clone();
        d.name = self.target().to_owned();
        for step in &self.config.mapping {
            match step {
                MapStep::Rename { from, to } => {
                    d.fields.retain(|f| f.name != *to);
                    for f in &mut d.fields {
                        if f.name == *from {
                            f.name.clone_from(to);
                        }
                    }
                    for k in &mut d.primary_key {
                        if k == from {
                            k.clone_from(to);
                        }
                    }
                    if d.cursor_field.as_deref() == Some(from) {
                        d.cursor_field = Some(to.clone());
                    }
                }
                MapStep::Drop { field } => d.fields.retain(|f| f.name != *field),
                MapStep::Cast { field, to } => {
                    for f in d.fields.iter_mut().filter(|f| f.name == *field) {
                        f.field_type = match to {
                            super::mapping::CastType::String => FieldType::String,
                            super::mapping::CastType::Integer => FieldType::Integer,
                            super::mapping::CastType::Number => FieldType::Number,
                            super::mapping::CastType::Boolean => FieldType::Boolean,
                        };
                    }
                }
                MapStep::Default { field, value } | MapStep::Constant { field, value } => {
                    if d.field_named(field).is_none() {
                        let t = match value {
                            serde_json::Value::Bool(_) => FieldType::Boolean,
                            serde_json::Value::Number(n) if n.is_i64() => FieldType::Integer,
                            serde_json::Value::Number(_) => FieldType::Number,
                            serde_json::Value::String(_) => FieldType::String,
                            _ => FieldType::Json,
                        };
                        d.fields.push(FieldDescriptor::new(field.clone(), t));
                    }
                }
                MapStep::Computed { field, .. } => {
                    if d.field_named(field).is_none() {
                        d.fields
                            .push(FieldDescriptor::new(field.clone(), FieldType::String));
                    }
                }
            }
        }
        d
    }

    /// The write mode: the configured one, or upsert by the target's primary key.
    pub(crate) fn write_mode(&self, target: &StreamDescriptor) -> WriteMode {
        match &self.config.write {
            Some(mode) => mode.clone(),
            None if !target.primary_key.is_empty() => WriteMode::Upsert {
                key: target.primary_key.clone(),
            },
            None => WriteMode::Append,
        }
    }
}

impl Pipeline {
    /// Check `config` (every problem at once) and prepare it.
    pub fn new(config: PipelineConfig) -> Result<Pipeline> {
        config.validate()?;
        let streams = config
            .streams
            .iter()
            .map(|s| {
                // Already validated: compiling again cannot fail.
                let mut v = Validator::new();
                Arc::new(StreamPlan {
                    config: s.clone(),
                    mapping: Mapping::compile(&s.mapping, &mut v),
                    rules: Rules::compile(&s.validate, &mut v),
                })
            })
            .collect();
        Ok(Pipeline { config, streams })
    }

    /// Parse and check a pipeline from TOML.
    pub fn from_toml(text: &str) -> Result<Pipeline> {
        let config: PipelineConfig = toml::from_str(text)
            .map_err(|e| crate::Error::config(format!("the pipeline is not valid TOML: {e}")))?;
        Pipeline::new(config)
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Its configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    pub(crate) fn plans(&self) -> &[Arc<StreamPlan>] {
        &self.streams
    }

    /// Map, sanitise and validate one record of `stream` as a run would — to try a
    /// pipeline on sample data. A record that would become a dead letter is an
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error naming the stage
    /// and every problem.
    ///
    /// ```
    /// use moodbridge_core::engine::Pipeline;
    /// use moodbridge_core::Record;
    ///
    /// let p = Pipeline::from_toml(r#"
    ///     name = "p"
    ///     [[streams]]
    ///     name = "Contact"
    ///     validate = [{ rule = "required", field = "LastName" }]
    /// "#).unwrap();
    /// let bad = Record::from_json(serde_json::json!({"FirstName": "Ada"})).unwrap();
    /// let err = p.transform("Contact", bad).unwrap_err();
    /// assert!(err.to_string().contains("LastName is required"));
    /// ```
    pub fn transform(&self, stream: &str, mut record: Record) -> Result<Record> {
        let plan = self.plan(stream).ok_or_else(|| {
            crate::Error::invalid_input(format!("pipeline {} has no stream {stream}", self.name()))
        })?;
        plan.transform(&mut record).map_err(|(stage, reason)| {
            crate::Error::invalid_input(format!("{} failed: {reason}", stage.as_str()))
                .with_context("stream", stream)
        })?;
        Ok(record)
    }

    pub(crate) fn plan(&self, stream: &str) -> Option<&StreamPlan> {
        self.streams
            .iter()
            .find(|s| s.config.name == stream)
            .map(|s| &**s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_of_a_pipeline_is_reported_at_once() {
        let err = Pipeline::from_toml(
            r#"
            name = ""
            [[streams]]
            name = "Case"
            write = { mode = "upsert", key = [] }
            validate = [{ rule = "pattern", field = "Email", regex = "[" }]
            [[streams]]
            name = "Case"
            "#,
        )
        .unwrap_err();
        let text = err.to_string();
        for part in [
            "name: is empty",
            "streams[0].write.key: is empty",
            "streams[0].validate[0].regex",
            "streams[1].name: Case is listed twice",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
    }

    #[test]
    fn the_sink_sees_renamed_dropped_and_added_fields() {
        let plan = &Pipeline::from_toml(
            r#"
            name = "p"
            [[streams]]
            name = "Account"
            target = "accounts"
            mapping = [
              { op = "rename", from = "Id", to = "sf_id" },
              { op = "drop", field = "Secret__c" },
              { op = "constant", field = "source", value = "sf" },
            ]
            "#,
        )
        .unwrap()
        .streams[0];
        let source = StreamDescriptor::new("Account")
            .field(FieldDescriptor::new("Id", FieldType::String))
            .field(FieldDescriptor::new("Secret__c", FieldType::String))
            .primary_key(["Id"]);
        let d = plan.describe(&source);
        assert_eq!(d.name, "accounts");
        assert_eq!(d.primary_key, ["sf_id"]);
        let names: Vec<_> = d.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["sf_id", "source"]);
        assert_eq!(
            plan.write_mode(&d),
            WriteMode::Upsert {
                key: vec!["sf_id".into()]
            }
        );
    }
}
