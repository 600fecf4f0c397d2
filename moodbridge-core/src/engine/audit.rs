//! What the audit log keeps of each write, by the pipeline's [`AuditLevel`].
//!
//! At [`AuditLevel::Compact`] a create keeps its key fields and the SHA-256 of its
//! after-image, an update its before-image, its changed fields and that digest; the
//! after-image itself is in the sink. Rows are hashed from their cells, never built into
//! records.

use serde_json::Value;

use super::{Body, declared_key, key_of};
use crate::record::Record;
use crate::rows::Row;
use crate::state::{AuditEntry, AuditLevel, AuditOperation, RunId, changed_fields, json_sha256};

/// What every audit entry of a batch shares.
pub(super) struct EntryHead {
    pub(super) run: RunId,
    pub(super) stream: String,
    pub(super) actor: String,
    pub(super) level: AuditLevel,
    /// The write key.
    pub(super) key_fields: Vec<String>,
}

impl EntryHead {
    /// The entry of one write.
    pub(super) fn entry(
        &self,
        operation: AuditOperation,
        image: AfterImage,
        before: Option<Record>,
    ) -> AuditEntry {
        AuditEntry {
            run: self.run,
            stream: self.stream.clone(),
            record_key: image.record_key,
            operation,
            before: before_image(before),
            after: image.after,
            after_sha256: image.after_sha256,
            actor: self.actor.clone(),
        }
    }
}

/// A written batch whose audit entries are yet to be made.
pub(super) struct PendingAudit {
    pub(super) head: EntryHead,
    /// The batch as written.
    pub(super) body: Body,
    /// Its audited writes: position in the batch, operation, before-image.
    pub(super) writes: Vec<(usize, AuditOperation, Option<Record>)>,
}

impl PendingAudit {
    /// The entries, in the order of the writes; the batch is freed.
    pub(super) fn entries(mut self) -> Vec<AuditEntry> {
        let mut scratch = Vec::with_capacity(2048);
        let head = &self.head;
        self.writes
            .into_iter()
            .map(|(index, operation, before)| {
                let image = after_image(
                    &mut self.body,
                    index,
                    head.level,
                    operation,
                    before.as_ref(),
                    &head.key_fields,
                    &mut scratch,
                );
                head.entry(operation, image, before)
            })
            .collect()
    }
}

/// What an audit entry keeps of one write besides its before-image.
pub(super) struct AfterImage {
    /// The record's key text.
    pub(super) record_key: String,
    /// The after-image, whole or in part.
    pub(super) after: Option<Value>,
    /// The whole after-image's digest, when `after` is a part.
    pub(super) after_sha256: Option<String>,
}

/// What the audit keeps of write `index` of `body` (a create, update or delete) at
/// `level`. `scratch` is reused between calls.
pub(super) fn after_image(
    body: &mut Body,
    index: usize,
    level: AuditLevel,
    operation: AuditOperation,
    before: Option<&Record>,
    key_fields: &[String],
    scratch: &mut Vec<u8>,
) -> AfterImage {
    let compact = level != AuditLevel::Full
        && matches!(operation, AuditOperation::Create | AuditOperation::Update);
    if !compact {
        let written = body.take(index);
        return AfterImage {
            record_key: key_of(&written, key_fields),
            after: (operation != AuditOperation::Delete)
                .then(|| Value::Object(written.into_fields())),
            after_sha256: None,
        };
    }
    match body {
        Body::Rows(rows) if operation == AuditOperation::Create => match rows.row(index) {
            Some(row) => create_of_row(row, key_fields, scratch),
            None => compact_of(&Record::new(), operation, before, key_fields, scratch),
        },
        Body::Rows(rows) => {
            let record = rows.row(index).map(|r| r.to_record()).unwrap_or_default();
            compact_of(&record, operation, before, key_fields, scratch)
        }
        Body::Records(records) => match records.get(index) {
            Some(record) => compact_of(record, operation, before, key_fields, scratch),
            None => compact_of(&Record::new(), operation, before, key_fields, scratch),
        },
    }
}

/// A compact create or update of a record.
fn compact_of(
    record: &Record,
    operation: AuditOperation,
    before: Option<&Record>,
    key_fields: &[String],
    scratch: &mut Vec<u8>,
) -> AfterImage {
    scratch.clear();
    // Writing a record into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *scratch, record);
    let after = if operation == AuditOperation::Create {
        Value::Object(key_record(key_fields, |f| record.get(f).cloned()).into_fields())
    } else {
        changed_fields(record.fields(), before.map(Record::fields))
    };
    AfterImage {
        record_key: key_of(record, key_fields),
        after: Some(after),
        after_sha256: Some(json_sha256(scratch)),
    }
}

/// A compact create of a row: its JSON is written and hashed, and only its key fields
/// become values.
fn create_of_row(row: Row<'_>, key_fields: &[String], scratch: &mut Vec<u8>) -> AfterImage {
    scratch.clear();
    row.write_json(scratch);
    let digest = json_sha256(scratch);
    let value = |name: &str| {
        row.columns()
            .iter()
            .rposition(|c| c.name == name)
            .and_then(|c| row.cell(c))
            .map(|cell| cell.to_value())
    };
    let keys = key_record(key_fields, value);
    // As `key_of`: the key fields, else `Id`, else the record's content digest (the same
    // bytes `key_of` would hash).
    let record_key =
        declared_key(&keys, key_fields).unwrap_or_else(|| format!("sha256:{}", &digest[..32]));
    let after = Value::Object(keys.into_fields());
    AfterImage {
        record_key,
        after: Some(after),
        after_sha256: Some(digest),
    }
}

/// What a compact create keeps: the key fields, then `Id` unless a key field, each as
/// `value` gives it (absent ones left out).
fn key_record(key_fields: &[String], value: impl Fn(&str) -> Option<Value>) -> Record {
    let fields: serde_json::Map<String, Value> = identifying(key_fields)
        .filter_map(|f| value(f).map(|v| (f.to_owned(), v)))
        .collect();
    Record::from(fields)
}

/// The fields a compact create keeps: the key fields, then `Id` unless a key field.
fn identifying(key_fields: &[String]) -> impl Iterator<Item = &str> {
    key_fields
        .iter()
        .map(String::as_str)
        .chain((!key_fields.iter().any(|f| f == "Id")).then_some("Id"))
}

/// The before-image as the audit log keeps it.
fn before_image(before: Option<Record>) -> Option<Value> {
    before.map(|b| Value::Object(b.into_fields()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{Column, ColumnKind, RowBatch};
    use crate::state::image_sha256;
    use serde_json::json;

    fn accounts() -> RowBatch {
        let mut rows = RowBatch::new(
            "Account",
            vec![
                Column::new("Id", ColumnKind::Text),
                Column::new("Name", ColumnKind::Text),
                Column::new("Employees", ColumnKind::Integer),
                Column::new("Code", ColumnKind::Integer),
            ],
        );
        rows.push_row([Some("001A"), Some("Acme"), Some("12"), Some("7")])
            .unwrap();
        rows.push_row([None, Some("No Id"), None, None]).unwrap();
        rows
    }

    #[test]
    fn a_row_create_keeps_what_its_record_would() {
        let rows = accounts();
        for key_fields in [
            vec![],
            vec!["Code".to_owned()],
            vec!["Name".to_owned(), "Code".to_owned()],
        ] {
            for index in 0..rows.len() {
                let record = rows.row(index).unwrap().to_record();
                let mut scratch = Vec::new();
                let from_row = after_image(
                    &mut Body::Rows(rows.clone()),
                    index,
                    AuditLevel::Compact,
                    AuditOperation::Create,
                    None,
                    &key_fields,
                    &mut scratch,
                );
                let from_record = after_image(
                    &mut Body::Records(vec![record.clone()]),
                    0,
                    AuditLevel::Compact,
                    AuditOperation::Create,
                    None,
                    &key_fields,
                    &mut scratch,
                );
                assert_eq!(
                    from_row.record_key, from_record.record_key,
                    "{key_fields:?} {index}"
                );
                assert_eq!(from_row.record_key, key_of(&record, &key_fields));
                assert_eq!(from_row.after, from_record.after);
                assert_eq!(from_row.after_sha256, from_record.after_sha256);
                assert_eq!(
                    from_row.after_sha256.as_deref(),
                    Some(image_sha256(record.fields()).as_str())
                );
            }
        }
        let mut scratch = Vec::new();
        let first = after_image(
            &mut Body::Rows(accounts()),
            0,
            AuditLevel::Compact,
            AuditOperation::Create,
            None,
            &["Code".to_owned()],
            &mut scratch,
        );
        assert_eq!(first.record_key, "7");
        assert_eq!(first.after, Some(json!({"Code": 7, "Id": "001A"})));
    }

    #[test]
    fn an_update_keeps_the_changed_fields_and_full_keeps_the_image() {
        let before =
            Record::from_json(json!({"Id": "001A", "Name": "Old", "Employees": 12})).unwrap();
        let mut scratch = Vec::new();
        let update = after_image(
            &mut Body::Rows(accounts()),
            0,
            AuditLevel::Compact,
            AuditOperation::Update,
            Some(&before),
            &[],
            &mut scratch,
        );
        assert_eq!(update.after, Some(json!({"Name": "Acme", "Code": 7})));
        assert!(update.after_sha256.is_some());
        let full = after_image(
            &mut Body::Rows(accounts()),
            0,
            AuditLevel::Full,
            AuditOperation::Update,
            Some(&before),
            &[],
            &mut scratch,
        );
        assert_eq!(
            full.after,
            Some(json!({"Id": "001A", "Name": "Acme", "Employees": 12, "Code": 7}))
        );
        assert_eq!(full.after_sha256, None);
    }
}
