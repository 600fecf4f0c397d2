//! Event payloads: Avro binary under the schema an event names, decoded to JSON; and the
//! bitmap fields of a change event's header (`changedFields`, `nulledFields`,
//! `diffFields`) turned back into field names against the schema's field order, after
//! Salesforce's "Event Deserialization Considerations".

use apache_avro::Schema;
use apache_avro::schema::RecordSchema;
use moodbridge_core::{Error, Result};
use serde_json::Value;

/// An event schema: Avro, with the id the API names it by.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// The schema's id (its fingerprint).
    pub id: String,
    /// The schema as JSON, as served.
    pub json: String,
    schema: Schema,
}

impl EventSchema {
    /// Parse schema `json` named `id`.
    ///
    /// ```
    /// use connector_salesforce::pubsub::EventSchema;
    /// let schema = EventSchema::parse("s1", r#"{"type": "record", "name": "E", "fields": [{"name": "Id", "type": "string"}]}"#).unwrap();
    /// assert_eq!(schema.field_names(), ["Id"]);
    /// assert!(EventSchema::parse("s2", "{").is_err());
    /// ```
    pub fn parse(id: impl Into<String>, json: impl Into<String>) -> Result<EventSchema> {
        let (id, json) = (id.into(), json.into());
        let schema = Schema::parse_str(&json).map_err(|e| {
            Error::invalid_input(format!("event schema {id} is not a valid Avro schema: {e}"))
        })?;
        Ok(EventSchema { id, json, schema })
    }

    /// The Avro schema.
    pub fn avro(&self) -> &Schema {
        &self.schema
    }

    /// The names of the top-level fields, in the schema's order.
    pub fn field_names(&self) -> Vec<&str> {
        match &self.schema {
            Schema::Record(r) => r.fields.iter().map(|f| f.name.as_str()).collect(),
            _ => Vec::new(),
        }
    }

    /// Decode an Avro binary payload written with this schema to JSON. A change event's
    /// header has its bitmap fields turned into field names ([`expand_bitmap`]).
    ///
    /// # Errors
    /// A payload that does not read under the schema ([`InvalidInput`](moodbridge_core::ErrorKind::InvalidInput)).
    pub fn decode(&self, payload: &[u8]) -> Result<Value> {
        let mut reader = payload;
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&self.schema)
            .build()
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| {
                Error::invalid_input(format!(
                    "an event payload does not read under schema {}: {e}",
                    self.id
                ))
            })?;
        let mut json = Value::try_from(value).map_err(|e| {
            Error::invalid_input(format!(
                "an event payload of schema {} has no JSON form: {e}",
                self.id
            ))
        })?;
        if let Some(header) = json
            .get_mut("ChangeEventHeader")
            .and_then(Value::as_object_mut)
        {
            for key in ["changedFields", "nulledFields", "diffFields"] {
                let Some(Value::Array(bitmaps)) = header.get(key) else {
                    continue;
                };
                let bitmaps: Vec<String> = bitmaps
                    .iter()
                    .filter_map(|b| b.as_str().map(str::to_owned))
                    .collect();
                let names = expand_bitmap(self, &bitmaps)?;
                header.insert(key.to_owned(), Value::from(names));
            }
        }
        Ok(json)
    }

    /// Encode a JSON object as an Avro binary payload of this schema (what a publisher
    /// sends): every field of the schema is taken from the object by name, a field the
    /// object lacks must allow null.
    ///
    /// # Errors
    /// A value that does not fit the schema, named in the error.
    pub fn encode(&self, value: &Value) -> Result<Vec<u8>> {
        let misfit = |e: apache_avro::Error| {
            Error::invalid_input(format!("the event does not fit schema {}: {e}", self.id))
        };
        let avro = apache_avro::types::Value::try_from(value.clone())
            .and_then(|v| v.resolve(&self.schema))
            .map_err(misfit)?;
        apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|w| w.write_value_to_vec(avro))
            .map_err(misfit)
    }
}

/// The field positions set in a bitmap written as hexadecimal (`0x650004E0`): bit `i`,
/// counted from the least significant, stands for the field at position `i`.
fn positions(hex: &str) -> Result<Vec<usize>> {
    let digits = hex
        .strip_prefix("0x")
        .ok_or_else(|| Error::invalid_input(format!("bitmap {hex:?} does not start with 0x")))?;
    let mut out = Vec::new();
    for (k, c) in digits.chars().rev().enumerate() {
        let d = c
            .to_digit(16)
            .ok_or_else(|| Error::invalid_input(format!("bitmap {hex:?} is not hexadecimal")))?;
        for bit in 0..4 {
            if d >> bit & 1 == 1 {
                out.push(4 * k + bit);
            }
        }
    }
    Ok(out)
}

fn record_of(schema: &Schema) -> Option<&RecordSchema> {
    match schema {
        Schema::Record(r) => Some(r),
        // An optional compound field: a union of null (or string) and the record.
        Schema::Union(u) => u.variants().iter().find_map(|v| match v {
            Schema::Record(r) => Some(r),
            _ => None,
        }),
        _ => None,
    }
}

/// The field names a change event header's bitmap field stands for, in order: the first
/// element (`0x…`) over the event's top-level fields, then each `N-0x…` over the fields of
/// compound field `N` (named `Parent.Child`).
///
/// ```
/// use connector_salesforce::pubsub::{EventSchema, expand_bitmap};
/// let schema = EventSchema::parse("s", r#"{"type": "record", "name": "E", "fields": [
///     {"name": "ChangeEventHeader", "type": "string"},
///     {"name": "Name", "type": ["null", {"type": "record", "name": "N", "fields": [
///         {"name": "Salutation", "type": ["null", "string"]},
///         {"name": "FirstName", "type": ["null", "string"]},
///         {"name": "LastName", "type": ["null", "string"]}]}]},
///     {"name": "Email", "type": ["null", "string"]},
///     {"name": "Phone", "type": ["null", "string"]}]}"#).unwrap();
/// let bitmaps = ["0x0C".to_owned(), "1-0x06".to_owned()];
/// assert_eq!(
///     expand_bitmap(&schema, &bitmaps).unwrap(),
///     ["Email", "Phone", "Name.FirstName", "Name.LastName"]
/// );
/// ```
///
/// # Errors
/// A bitmap that is not hexadecimal, or names a position the schema does not have.
pub fn expand_bitmap(schema: &EventSchema, bitmaps: &[String]) -> Result<Vec<String>> {
    let Some(top) = record_of(&schema.schema) else {
        return Err(Error::invalid_input(format!(
            "schema {} is not a record: it has no fields for a bitmap",
            schema.id
        )));
    };
    let out_of_range = |bitmap: &str, at: usize| {
        Error::invalid_input(format!(
            "bitmap {bitmap:?} names field {at}, which schema {} does not have",
            schema.id
        ))
        .with_hint(
            "the event was written with another schema version: fetch the schema the event names",
        )
    };
    let mut names = Vec::new();
    for bitmap in bitmaps {
        match bitmap.split_once('-') {
            None => {
                for at in positions(bitmap)? {
                    let field = top.fields.get(at).ok_or_else(|| out_of_range(bitmap, at))?;
                    names.push(field.name.clone());
                }
            }
            Some((parent, nested)) => {
                let parent_at: usize = parent.parse().map_err(|_| {
                    Error::invalid_input(format!(
                        "bitmap {bitmap:?} has no field position before '-'"
                    ))
                })?;
                let parent_field = top
                    .fields
                    .get(parent_at)
                    .ok_or_else(|| out_of_range(bitmap, parent_at))?;
                let inner = record_of(&parent_field.schema).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "bitmap {bitmap:?} names field {} as compound, but it is not a record",
                        parent_field.name
                    ))
                })?;
                for at in positions(nested)? {
                    let field = inner
                        .fields
                        .get(at)
                        .ok_or_else(|| out_of_range(bitmap, at))?;
                    names.push(format!("{}.{}", parent_field.name, field.name));
                }
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_bitmap_example_reads_right_to_left() {
        // The guide's '0x650004E0' is binary 0110 0101 | 0000 0000 | 0000 0100 | 1110 0000:
        // from the least significant bit, positions 5, 6, 7, 10, 24, 26, 29 and 30.
        assert_eq!(
            positions("0x650004E0").unwrap(),
            [5, 6, 7, 10, 24, 26, 29, 30]
        );
        assert_eq!(positions("0x10").unwrap(), [4]);
        assert_eq!(positions("0x06").unwrap(), [1, 2]);
        assert!(positions("650004E0").is_err());
        assert!(positions("0xZZ").is_err());
    }

    #[test]
    fn a_bitmap_beyond_the_schema_is_refused_with_the_fix() {
        let schema = EventSchema::parse(
            "s",
            r#"{"type": "record", "name": "E", "fields": [{"name": "A", "type": "string"}]}"#,
        )
        .unwrap();
        let err = expand_bitmap(&schema, &["0x2".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("names field 1"), "{err}");
        let err = expand_bitmap(&schema, &["0-0x1".to_owned()]).unwrap_err();
        assert!(err.to_string().contains("not a record"), "{err}");
    }

    #[test]
    fn payloads_round_trip_and_headers_come_back_with_names() {
        let schema = EventSchema::parse(
            "s",
            r#"{"type": "record", "name": "AccountChangeEvent", "fields": [
                {"name": "ChangeEventHeader", "type": {"type": "record", "name": "ChangeEventHeader", "fields": [
                    {"name": "entityName", "type": "string"},
                    {"name": "changedFields", "type": {"type": "array", "items": "string"}},
                    {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
                    {"name": "diffFields", "type": {"type": "array", "items": "string"}}]}},
                {"name": "Name", "type": ["null", "string"], "default": null},
                {"name": "Phone", "type": ["null", "string"], "default": null}]}"#,
        )
        .unwrap();
        let event = serde_json::json!({
            "ChangeEventHeader": {"entityName": "Account", "changedFields": ["0x6"],
                                  "nulledFields": ["0x4"], "diffFields": []},
            "Name": "Acme", "Phone": null
        });
        let payload = schema.encode(&event).unwrap();
        let back = schema.decode(&payload).unwrap();
        assert_eq!(back["Name"], "Acme");
        assert_eq!(back["Phone"], Value::Null);
        assert_eq!(
            back["ChangeEventHeader"]["changedFields"],
            serde_json::json!(["Name", "Phone"])
        );
        assert_eq!(
            back["ChangeEventHeader"]["nulledFields"],
            serde_json::json!(["Phone"])
        );
        assert!(schema.decode(&payload[..3]).is_err());
        let err = schema.encode(&serde_json::json!({"Name": 5})).unwrap_err();
        assert!(err.to_string().contains("does not fit schema s"), "{err}");
    }
}
