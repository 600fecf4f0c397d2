//! Records and batches: the unit of data every source yields and every sink writes.
//!
//! A [`Record`] is a dynamic map of field name to JSON value, so one engine can move data
//! between platforms whose schemas it only learns at run time (from `discover()`).
//! Connectors that want static types convert with [`Record::from_serializable`] and
//! [`Record::to_typed`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

use crate::error::{Error, ErrorKind, Result};

/// One record: field name → JSON value.
///
/// ```
/// use moodbridge_core::Record;
/// use serde_json::json;
///
/// let mut case = Record::new();
/// case.set("Id", json!("500xx000001"));
/// case.set("Subject", json!("Contract review"));
/// assert_eq!(case.get("Subject"), Some(&json!("Contract review")));
/// let key = case.key(&["Id".to_owned()]).expect("has an Id");
/// assert_eq!(key.to_string(), "500xx000001");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Record {
    fields: Map<String, Value>,
}

impl Record {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// A record from a JSON object. Anything but an object is an
    /// [`ErrorKind::InvalidInput`] error.
    ///
    /// ```
    /// use moodbridge_core::Record;
    /// let r = Record::from_json(serde_json::json!({"Id": "001"})).unwrap();
    /// assert_eq!(r.len(), 1);
    /// assert!(Record::from_json(serde_json::json!([1, 2])).is_err());
    /// ```
    pub fn from_json(value: Value) -> Result<Self> {
        match value {
            Value::Object(fields) => Ok(Record { fields }),
            other => Err(Error::invalid_input(format!(
                "a record must be a JSON object, got {}",
                json_type_name(&other)
            ))),
        }
    }

    /// A record from any serializable struct.
    pub fn from_serializable<T: Serialize>(value: &T) -> Result<Self> {
        Self::from_json(serde_json::to_value(value).map_err(|e| {
            Error::invalid_input("the value could not be turned into a record").with_source(e)
        })?)
    }

    /// The record as a typed struct.
    pub fn to_typed<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&Value::Object(self.fields.clone())).map_err(|e| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("record does not match the type: {e}"),
            )
        })
    }

    /// The value of a field.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.fields.get(field)
    }

    /// Set a field, returning the previous value.
    pub fn set(&mut self, field: impl Into<String>, value: Value) -> Option<Value> {
        self.fields.insert(field.into(), value)
    }

    /// Remove a field, returning its value.
    pub fn remove(&mut self, field: &str) -> Option<Value> {
        self.fields.remove(field)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// `true` when the record has no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The fields, in insertion order of the underlying map.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The fields, mutable.
    pub fn fields_mut(&mut self) -> &mut Map<String, Value> {
        &mut self.fields
    }

    /// The record as its map of fields (no copy).
    ///
    /// ```
    /// use moodbridge_core::Record;
    /// let r = Record::from_json(serde_json::json!({"Id": "001"})).unwrap();
    /// assert_eq!(r.into_fields()["Id"], "001");
    /// ```
    pub fn into_fields(self) -> Map<String, Value> {
        self.fields
    }

    /// The record's key for the given primary-key fields, or `None` when a key field is
    /// missing or null (such a record cannot be upserted).
    pub fn key(&self, primary_key: &[String]) -> Option<RecordKey> {
        let mut parts = Vec::with_capacity(primary_key.len());
        for field in primary_key {
            match self.fields.get(field) {
                None | Some(Value::Null) => return None,
                Some(Value::String(s)) => parts.push(s.clone()),
                Some(other) => parts.push(other.to_string()),
            }
        }
        Some(RecordKey(parts))
    }
}

impl From<Map<String, Value>> for Record {
    fn from(fields: Map<String, Value>) -> Self {
        Record { fields }
    }
}

fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The primary-key value of a record: one part per key field, in key order.
///
/// Displayed as the parts joined by `|` (a single-field key displays as the value itself).
///
/// ```
/// use moodbridge_core::RecordKey;
/// let key = RecordKey::new(vec!["acme".into(), "42".into()]);
/// assert_eq!(key.to_string(), "acme|42");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordKey(Vec<String>);

impl RecordKey {
    /// A key from its parts.
    pub fn new(parts: Vec<String>) -> Self {
        RecordKey(parts)
    }

    /// The key's parts, one per primary-key field.
    pub fn parts(&self) -> &[String] {
        &self.0
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("|"))
    }
}

/// Records of one stream, read or written together.
///
/// ```
/// use moodbridge_core::{Record, RecordBatch};
/// let batch = RecordBatch::new("Account", vec![Record::new(), Record::new()]);
/// assert_eq!(batch.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordBatch {
    /// The stream (object, table) the records belong to.
    pub stream: String,
    /// The records, in source order.
    pub records: Vec<Record>,
}

impl RecordBatch {
    /// A batch of `records` of `stream`.
    pub fn new(stream: impl Into<String>, records: Vec<Record>) -> Self {
        RecordBatch {
            stream: stream.into(),
            records,
        }
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// `true` when there are no records.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_is_none_when_a_key_field_is_missing_or_null() {
        let r = Record::from_json(json!({"a": "1", "b": null})).unwrap();
        assert_eq!(r.key(&["a".into()]), Some(RecordKey::new(vec!["1".into()])));
        assert_eq!(r.key(&["a".into(), "b".into()]), None);
        assert_eq!(r.key(&["c".into()]), None);
    }

    #[test]
    fn non_string_key_parts_use_their_json_text() {
        let r = Record::from_json(json!({"n": 42, "s": "x"})).unwrap();
        assert_eq!(
            r.key(&["n".into(), "s".into()]).unwrap().to_string(),
            "42|x"
        );
    }

    #[test]
    fn record_round_trips_as_a_plain_json_object() {
        let r = Record::from_json(json!({"Id": "001", "Amount": 12.5})).unwrap();
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(text, r#"{"Id":"001","Amount":12.5}"#);
        assert_eq!(serde_json::from_str::<Record>(&text).unwrap(), r);
    }

    #[test]
    fn typed_conversion_reports_the_mismatch() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Account {
            #[serde(rename = "Name")]
            name: String,
        }
        let r = Record::from_json(json!({"Name": 3})).unwrap();
        let err = r.to_typed::<Account>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.message().contains("invalid type"), "{err}");
    }
}
