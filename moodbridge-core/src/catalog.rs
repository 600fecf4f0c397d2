//! The catalog a source discovers: its streams, their fields, keys and sync modes.
//!
//! Modelled on the Airbyte protocol's `AirbyteCatalog`: a stream names its fields and their
//! types, its primary key (for upserts and de-duplication), its cursor field (for
//! incremental reads, e.g. Salesforce `SystemModstamp`) and the sync modes it supports.

use serde::{Deserialize, Serialize};

/// How a stream is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Read every record, every time.
    FullRefresh,
    /// Read only records changed since the last checkpoint, by the stream's cursor field.
    Incremental,
}

/// The type of a field, as far as the engine needs to know it to map and validate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum FieldType {
    /// Text.
    String,
    /// A whole number.
    Integer,
    /// A floating-point number.
    Number,
    /// An exact decimal with the given scale (digits after the point).
    Decimal {
        /// Digits after the decimal point.
        scale: u32,
    },
    /// `true` / `false`.
    Boolean,
    /// A calendar date (`YYYY-MM-DD`).
    Date,
    /// A point in time (RFC 3339).
    DateTime,
    /// A time of day.
    Time,
    /// Bytes (base64 in JSON).
    Binary,
    /// A reference (foreign key) to records of other streams.
    Reference {
        /// The streams it may point to.
        to: Vec<String>,
    },
    /// Nested JSON.
    Json,
    /// A platform type the engine does not interpret, by its platform name.
    Other {
        /// The platform's name of the type.
        name: String,
    },
}

/// A field of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDescriptor {
    /// The field's name as the platform spells it.
    pub name: String,
    /// Its type.
    #[serde(flatten)]
    pub field_type: FieldType,
    /// Whether it may be null.
    #[serde(default = "yes")]
    pub nullable: bool,
}

fn yes() -> bool {
    true
}

impl FieldDescriptor {
    /// A nullable field.
    pub fn new(name: impl Into<String>, field_type: FieldType) -> Self {
        FieldDescriptor {
            name: name.into(),
            field_type,
            nullable: true,
        }
    }

    /// The same field, not nullable.
    pub fn required(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// One stream (object, table, topic) a source can read.
///
/// ```
/// use moodbridge_core::{FieldDescriptor, FieldType, StreamDescriptor, SyncMode};
///
/// let case = StreamDescriptor::new("Case")
///     .field(FieldDescriptor::new("Id", FieldType::String).required())
///     .field(FieldDescriptor::new("SystemModstamp", FieldType::DateTime).required())
///     .primary_key(["Id"])
///     .cursor("SystemModstamp");
/// assert!(case.supports(SyncMode::Incremental));
/// assert_eq!(case.field_named("Id").map(|f| f.nullable), Some(false));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDescriptor {
    /// The stream's name (Salesforce object API name, table name …).
    pub name: String,
    /// An optional namespace (schema, database).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The fields.
    pub fields: Vec<FieldDescriptor>,
    /// The fields that identify a record; empty when the stream has no key.
    #[serde(default)]
    pub primary_key: Vec<String>,
    /// The field incremental reads order and resume by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor_field: Option<String>,
    /// The modes this stream can be read in.
    pub sync_modes: Vec<SyncMode>,
}

impl StreamDescriptor {
    /// A stream with no fields that supports full refresh only.
    pub fn new(name: impl Into<String>) -> Self {
        StreamDescriptor {
            name: name.into(),
            namespace: None,
            fields: Vec::new(),
            primary_key: Vec::new(),
            cursor_field: None,
            sync_modes: vec![SyncMode::FullRefresh],
        }
    }

    /// Add a field.
    pub fn field(mut self, field: FieldDescriptor) -> Self {
        self.fields.push(field);
        self
    }

    /// Set the primary key.
    pub fn primary_key<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.primary_key = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Set the cursor field; this also makes the stream support incremental reads.
    pub fn cursor(mut self, field: impl Into<String>) -> Self {
        self.cursor_field = Some(field.into());
        if !self.sync_modes.contains(&SyncMode::Incremental) {
            self.sync_modes.push(SyncMode::Incremental);
        }
        self
    }

    /// Whether the stream can be read in `mode`.
    pub fn supports(&self, mode: SyncMode) -> bool {
        self.sync_modes.contains(&mode)
    }

    /// The field with this name.
    pub fn field_named(&self, name: &str) -> Option<&FieldDescriptor> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Everything a source offers.
///
/// ```
/// use moodbridge_core::{Catalog, StreamDescriptor};
/// let catalog = Catalog::new(vec![StreamDescriptor::new("Account")]);
/// assert!(catalog.stream("Account").is_some());
/// assert!(catalog.stream("Lead").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// The streams.
    pub streams: Vec<StreamDescriptor>,
}

impl Catalog {
    /// A catalog of `streams`.
    pub fn new(streams: Vec<StreamDescriptor>) -> Self {
        Catalog { streams }
    }

    /// The stream with this name.
    pub fn stream(&self, name: &str) -> Option<&StreamDescriptor> {
        self.streams.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_serializes_in_a_readable_shape() {
        let catalog = Catalog::new(vec![
            StreamDescriptor::new("Case")
                .field(FieldDescriptor::new("Id", FieldType::String).required())
                .field(FieldDescriptor::new(
                    "Amount",
                    FieldType::Decimal { scale: 2 },
                ))
                .primary_key(["Id"])
                .cursor("SystemModstamp"),
        ]);
        let json = serde_json::to_value(&catalog).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"streams": [{
                "name": "Case",
                "fields": [
                    {"name": "Id", "type": "string", "nullable": false},
                    {"name": "Amount", "type": "decimal", "scale": 2, "nullable": true}
                ],
                "primary_key": ["Id"],
                "cursor_field": "SystemModstamp",
                "sync_modes": ["full_refresh", "incremental"]
            }]})
        );
        assert_eq!(serde_json::from_value::<Catalog>(json).unwrap(), catalog);
    }
}
