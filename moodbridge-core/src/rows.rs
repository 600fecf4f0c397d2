//! Rows: records of one stream that share one set of columns, kept as text in one buffer.
//!
//! A [`RecordBatch`] holds a map per record, which suits records whose fields differ or
//! change on the way. A source whose results come as a table (a CSV result page, a
//! database cursor) can instead yield a [`RowBatch`]: the column names once, each
//! column's [`ColumnKind`], and every row's cells as text in one buffer. Nothing is
//! allocated per record: the engine maps, sanitises and validates rows as rows, and a
//! sink that binds by position (the SQLite warehouse) writes straight from the text. Any
//! sink still takes rows: [`SyncSink::write_rows`]'s default turns them into records.
//!
//! A cell's value is its text read as its column's kind ([`Cell`]); text that does not
//! read as the kind stays text, so nothing is lost.
//!
//! ```
//! use moodbridge_core::{Cell, Column, ColumnKind, RowBatch};
//!
//! let mut rows = RowBatch::new(
//!     "Contact",
//!     vec![Column::new("Id", ColumnKind::Text), Column::new("Age__c", ColumnKind::Integer)],
//! );
//! rows.push_row([Some("003A"), Some("41")]).unwrap();
//! rows.push_row([Some("003B"), None]).unwrap();
//! assert_eq!(rows.len(), 2);
//! let second = rows.row(1).unwrap();
//! assert_eq!(second.cell(0), Some(Cell::Text("003B")));
//! assert_eq!(second.cell(1), Some(Cell::Null));
//! let record = rows.row(0).unwrap().to_record();
//! assert_eq!(record.get("Age__c"), Some(&serde_json::json!(41)));
//! ```
//!
//! [`SyncSink::write_rows`]: crate::SyncSink::write_rows

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::record::{Record, RecordBatch};

/// How a column's text is read ([`Cell`]).
///
/// ```
/// use moodbridge_core::{Cell, ColumnKind};
/// assert_eq!(ColumnKind::Integer.read("42"), Cell::Integer(42));
/// assert_eq!(ColumnKind::Integer.read("n/a"), Cell::Text("n/a"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnKind {
    /// Text as it is.
    Text,
    /// `true` / `false`.
    Boolean,
    /// A 64-bit integer.
    Integer,
    /// A finite floating-point number.
    Number,
}

impl ColumnKind {
    /// `text` read as this kind; text that does not read as it stays [`Cell::Text`].
    pub fn read(self, text: &str) -> Cell<'_> {
        let read = match self {
            ColumnKind::Text => None,
            ColumnKind::Boolean => match text {
                "true" => Some(Cell::Bool(true)),
                "false" => Some(Cell::Bool(false)),
                _ => None,
            },
            ColumnKind::Integer => text.parse().ok().map(Cell::Integer),
            ColumnKind::Number => text
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Cell::Number),
        };
        read.unwrap_or(Cell::Text(text))
    }
}

/// A column of a [`RowBatch`]: its name and how its text is read.
///
/// ```
/// use moodbridge_core::{Column, ColumnKind};
/// let c = Column::new("Amount", ColumnKind::Number);
/// assert_eq!(c.name, "Amount");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The field name.
    pub name: String,
    /// How the column's text is read.
    pub kind: ColumnKind,
}

impl Column {
    /// A column named `name` of `kind`.
    pub fn new(name: impl Into<String>, kind: ColumnKind) -> Self {
        Column {
            name: name.into(),
            kind,
        }
    }
}

/// One cell's value, borrowed from its batch.
///
/// ```
/// use moodbridge_core::Cell;
/// assert_eq!(Cell::Bool(true).to_value(), serde_json::json!(true));
/// assert_eq!(Cell::Null.to_value(), serde_json::Value::Null);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Integer(i64),
    /// A finite number.
    Number(f64),
    /// Text.
    Text(&'a str),
}

impl Cell<'_> {
    /// The cell as a JSON value (what the same field holds in a [`Record`]).
    pub fn to_value(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(b),
            Cell::Integer(i) => Value::from(i),
            Cell::Number(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
            Cell::Text(s) => Value::String(s.to_owned()),
        }
    }
}

/// The top bit of a cell's end offset marks a null cell.
const NULL: u32 = 1 << 31;

/// Rows of one stream sharing one set of columns; see the [module docs](self).
///
/// ```
/// use moodbridge_core::{Column, ColumnKind, RowBatch};
/// let mut rows = RowBatch::new("Account", vec![Column::new("Name", ColumnKind::Text)]);
/// rows.push_row([Some("Acme")]).unwrap();
/// let err = rows.push_row([Some("too"), Some("many")]).unwrap_err();
/// assert!(err.to_string().contains("2 cells"));
/// assert_eq!(rows.len(), 1, "the bad row left nothing behind");
/// assert_eq!(rows.to_records().records[0].get("Name"), Some(&serde_json::json!("Acme")));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "RowsData", try_from = "RowsData")]
pub struct RowBatch {
    /// The stream (object, table) the rows belong to.
    pub stream: String,
    columns: Arc<[Column]>,
    /// No two columns share a name.
    unique_names: bool,
    /// Every cell's text, row after row.
    text: String,
    /// Per cell, row after row: where its text ends in `text`, [`NULL`] set for a null.
    ends: Vec<u32>,
}

impl RowBatch {
    /// An empty batch of `stream` with `columns`.
    pub fn new(stream: impl Into<String>, columns: impl Into<Arc<[Column]>>) -> Self {
        let columns: Arc<[Column]> = columns.into();
        let unique_names = columns
            .iter()
            .enumerate()
            .all(|(i, c)| columns[..i].iter().all(|o| o.name != c.name));
        RowBatch {
            stream: stream.into(),
            unique_names,
            columns,
            text: String::new(),
            ends: Vec::new(),
        }
    }

    /// As [`new`](Self::new), with room for `rows` rows holding `text` bytes in all.
    pub fn with_capacity(
        stream: impl Into<String>,
        columns: impl Into<Arc<[Column]>>,
        rows: usize,
        text: usize,
    ) -> Self {
        let mut batch = Self::new(stream, columns);
        batch.ends.reserve(rows.saturating_mul(batch.columns.len()));
        batch.text.reserve(text);
        batch
    }

    /// Append a row: one cell per column, in column order, `None` for a null. A row with
    /// another number of cells, or text past 2 GiB in one batch, is refused and leaves
    /// the batch as it was.
    pub fn push_row<'a>(&mut self, cells: impl IntoIterator<Item = Option<&'a str>>) -> Result<()> {
        let (text_before, ends_before) = (self.text.len(), self.ends.len());
        let mut count = 0;
        let mut fits = true;
        for cell in cells {
            count += 1;
            let end = match cell {
                Some(t) => {
                    self.text.push_str(t);
                    u32::try_from(self.text.len())
                        .ok()
                        .filter(|e| e & NULL == 0)
                }
                None => u32::try_from(self.text.len())
                    .ok()
                    .filter(|e| e & NULL == 0)
                    .map(|e| e | NULL),
            };
            match end {
                Some(e) => self.ends.push(e),
                None => {
                    fits = false;
                    break;
                }
            }
        }
        if count == self.columns.len() && fits {
            return Ok(());
        }
        self.text.truncate(text_before);
        self.ends.truncate(ends_before);
        if !fits {
            return Err(Error::invalid_input(format!(
                "a batch of {} holds at most 2 GiB of text",
                self.stream
            ))
            .with_hint("yield smaller batches"));
        }
        Err(Error::invalid_input(format!(
            "a row of {} has {count} cells but the batch has {} columns",
            self.stream,
            self.columns.len()
        ))
        .with_hint("give every row one cell per column, None for a null"))
    }

    /// The columns.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// The columns, shared.
    pub(crate) fn shared_columns(&self) -> &Arc<[Column]> {
        &self.columns
    }

    /// Append one cell whose text `write` appends to the batch's text (so nothing is
    /// allocated for it); `false` when the text passes 2 GiB. A caller appends whole
    /// rows, one cell per column, or drops the batch.
    pub(crate) fn push_text_cell(&mut self, write: impl FnOnce(&mut String)) -> bool {
        write(&mut self.text);
        match u32::try_from(self.text.len()) {
            Ok(end) if end & NULL == 0 => {
                self.ends.push(end);
                true
            }
            _ => false,
        }
    }

    /// Append one null cell; see [`push_text_cell`](Self::push_text_cell).
    pub(crate) fn push_null_cell(&mut self) -> bool {
        match u32::try_from(self.text.len()) {
            Ok(end) if end & NULL == 0 => {
                self.ends.push(end | NULL);
                true
            }
            _ => false,
        }
    }

    /// The position of the column named `name` (the last, should two share the name: as
    /// in a record, the later field wins).
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().rposition(|c| c.name == name)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        match self.columns.len() {
            0 => 0,
            n => self.ends.len() / n,
        }
    }

    /// `true` when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of cell text in all rows.
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Row `index`, or `None` past the end.
    pub fn row(&self, index: usize) -> Option<Row<'_>> {
        (index < self.len()).then_some(Row { batch: self, index })
    }

    /// The rows, in order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Row<'_>> + '_ {
        (0..self.len()).map(move |index| Row { batch: self, index })
    }

    /// The rows as records (a map per record), in order.
    pub fn to_records(&self) -> RecordBatch {
        RecordBatch::new(&self.stream, self.rows().map(|r| r.to_record()).collect())
    }

    /// The rows in batches of at most `size` (at least one) rows, in order.
    ///
    /// ```
    /// use moodbridge_core::{Column, ColumnKind, RowBatch};
    /// let mut rows = RowBatch::new("T", vec![Column::new("n", ColumnKind::Integer)]);
    /// for n in ["1", "2", "3"] {
    ///     rows.push_row([Some(n)]).unwrap();
    /// }
    /// let sizes: Vec<usize> = rows.into_chunks(2).iter().map(|b| b.len()).collect();
    /// assert_eq!(sizes, [2, 1]);
    /// ```
    pub fn into_chunks(self, size: usize) -> Vec<RowBatch> {
        let size = size.max(1);
        if self.len() <= size {
            return vec![self];
        }
        let step = size * self.columns.len();
        let mut out = Vec::with_capacity(self.len().div_ceil(size));
        let mut first = 0;
        while first < self.ends.len() {
            let last = (first + step).min(self.ends.len());
            let start = self.start_of(first);
            let end = offset(self.ends[last - 1]);
            // `start` came from an end offset, so it fits.
            let base = u32::try_from(start).unwrap_or(0);
            out.push(RowBatch {
                stream: self.stream.clone(),
                columns: self.columns.clone(),
                unique_names: self.unique_names,
                text: self.text[start..end].to_owned(),
                ends: self.ends[first..last].iter().map(|e| e - base).collect(),
            });
            first = last;
        }
        out
    }

    /// Where the text of cell `i` (counted over all rows) starts.
    fn start_of(&self, i: usize) -> usize {
        match i {
            0 => 0,
            i => offset(self.ends[i - 1]),
        }
    }

    fn text_of(&self, i: usize) -> Option<&str> {
        let end = self.ends[i];
        (end & NULL == 0).then(|| &self.text[self.start_of(i)..offset(end)])
    }
}

/// A [`RowBatch`] as serialized: its cells as strings or nulls, row by row (checked,
/// row by row, when read back).
#[derive(Serialize, Deserialize)]
struct RowsData {
    stream: String,
    columns: Vec<Column>,
    rows: Vec<Vec<Option<String>>>,
}

impl From<RowBatch> for RowsData {
    fn from(batch: RowBatch) -> Self {
        let rows = batch
            .rows()
            .map(|r| {
                (0..batch.columns.len())
                    .map(|c| r.text(c).map(str::to_owned))
                    .collect()
            })
            .collect();
        RowsData {
            columns: batch.columns.to_vec(),
            stream: batch.stream,
            rows,
        }
    }
}

impl TryFrom<RowsData> for RowBatch {
    type Error = Error;

    fn try_from(data: RowsData) -> Result<Self> {
        let mut batch = RowBatch::new(data.stream, data.columns);
        for row in &data.rows {
            batch.push_row(row.iter().map(Option::as_deref))?;
        }
        Ok(batch)
    }
}

fn offset(end: u32) -> usize {
    (end & !NULL) as usize
}

/// One row of a [`RowBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    batch: &'a RowBatch,
    index: usize,
}

impl<'a> Row<'a> {
    /// The columns of the row's batch.
    pub fn columns(&self) -> &'a [Column] {
        &self.batch.columns
    }

    /// The row's position in its batch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The text of column `column`: `None` for a null or past the last column.
    pub fn text(&self, column: usize) -> Option<&'a str> {
        if column >= self.batch.columns.len() {
            return None;
        }
        self.batch
            .text_of(self.index * self.batch.columns.len() + column)
    }

    /// The value of column `column`, read as its kind; `None` past the last column.
    pub fn cell(&self, column: usize) -> Option<Cell<'a>> {
        let kind = self.batch.columns.get(column)?.kind;
        Some(self.text(column).map_or(Cell::Null, |t| kind.read(t)))
    }

    /// The row's cells, in column order.
    pub fn cells(&self) -> impl ExactSizeIterator<Item = Cell<'a>> + 'a {
        let row = *self;
        (0..self.batch.columns.len()).map(move |c| row.cell(c).unwrap_or(Cell::Null))
    }

    /// Write the row as compact JSON, exactly as its [`to_record`](Self::to_record) would
    /// serialize, without building the record.
    ///
    /// ```
    /// use moodbridge_core::{Column, ColumnKind, RowBatch};
    /// let mut rows = RowBatch::new(
    ///     "T",
    ///     vec![Column::new("Id", ColumnKind::Text), Column::new("n", ColumnKind::Integer)],
    /// );
    /// rows.push_row([Some("a\"b"), Some("7")]).unwrap();
    /// let mut out = Vec::new();
    /// rows.row(0).unwrap().write_json(&mut out);
    /// assert_eq!(out, br#"{"Id":"a\"b","n":7}"#);
    /// ```
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing JSON into a Vec cannot fail.
        if !self.batch.unique_names {
            // As in a record, a repeated name keeps its first place and its last value.
            let _ = serde_json::to_writer(&mut *out, &self.to_record());
            return;
        }
        out.push(b'{');
        for (i, (column, cell)) in self.batch.columns.iter().zip(self.cells()).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, &column.name);
            out.push(b':');
            let _ = match cell {
                Cell::Null => serde_json::to_writer(&mut *out, &()),
                Cell::Bool(b) => serde_json::to_writer(&mut *out, &b),
                Cell::Integer(n) => serde_json::to_writer(&mut *out, &n),
                Cell::Number(f) => serde_json::to_writer(&mut *out, &f),
                Cell::Text(t) => serde_json::to_writer(&mut *out, t),
            };
        }
        out.push(b'}');
    }

    /// The row as a record: column name → value, nulls included.
    pub fn to_record(&self) -> Record {
        let mut fields = Map::with_capacity(self.batch.columns.len());
        for (column, cell) in self.batch.columns.iter().zip(self.cells()) {
            fields.insert(column.name.clone(), cell.to_value());
        }
        Record::from(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> RowBatch {
        let mut rows = RowBatch::new(
            "Contact",
            vec![
                Column::new("Id", ColumnKind::Text),
                Column::new("Active", ColumnKind::Boolean),
                Column::new("Age", ColumnKind::Integer),
                Column::new("Score", ColumnKind::Number),
            ],
        );
        rows.push_row([Some("a"), Some("true"), Some("41"), Some("2.5")])
            .unwrap();
        rows.push_row([Some(""), None, Some("x"), Some("inf")])
            .unwrap();
        rows.push_row([Some("ü, \"q\""), Some("false"), None, Some("3")])
            .unwrap();
        rows
    }

    #[test]
    fn cells_read_as_their_kind_and_unreadable_text_stays_text() {
        let rows = sample();
        let r0: Vec<Cell<'_>> = rows.row(0).unwrap().cells().collect();
        assert_eq!(
            r0,
            [
                Cell::Text("a"),
                Cell::Bool(true),
                Cell::Integer(41),
                Cell::Number(2.5)
            ]
        );
        let r1: Vec<Cell<'_>> = rows.row(1).unwrap().cells().collect();
        assert_eq!(
            r1,
            [
                Cell::Text(""),
                Cell::Null,
                Cell::Text("x"),
                Cell::Text("inf")
            ]
        );
        assert_eq!(rows.row(2).unwrap().text(0), Some("ü, \"q\""));
        assert_eq!(rows.row(2).unwrap().cell(2), Some(Cell::Null));
        assert!(rows.row(3).is_none());
        assert_eq!(rows.row(0).unwrap().cell(4), None);
    }

    #[test]
    fn records_hold_the_same_values() {
        let records = sample().to_records();
        assert_eq!(records.stream, "Contact");
        assert_eq!(
            Value::Object(records.records[0].fields().clone()),
            json!({"Id": "a", "Active": true, "Age": 41, "Score": 2.5})
        );
        assert_eq!(
            Value::Object(records.records[1].fields().clone()),
            json!({"Id": "", "Active": null, "Age": "x", "Score": "inf"})
        );
        assert_eq!(records.records[2].get("Score"), Some(&json!(3.0)));
    }

    #[test]
    fn chunks_keep_every_row_in_order() {
        let rows = sample();
        let whole = rows.to_records();
        for size in [0, 1, 2, 3, 10] {
            let chunks = rows.clone().into_chunks(size);
            let mut again = Vec::new();
            for c in &chunks {
                assert!(c.len() <= size.max(1));
                again.extend(c.to_records().records);
            }
            assert_eq!(again, whole.records, "chunks of {size}");
        }
    }

    #[test]
    fn a_row_of_the_wrong_width_is_refused_whole() {
        let mut rows = sample();
        let before = rows.clone();
        let err = rows.push_row([Some("b"), None]).unwrap_err();
        assert!(err.to_string().contains("2 cells"), "{err}");
        assert_eq!(rows, before);
        let err = rows
            .push_row([Some("b"), None, None, None, Some("extra")])
            .unwrap_err();
        assert!(err.to_string().contains("5 cells"), "{err}");
        assert_eq!(rows, before);
    }

    #[test]
    fn a_batch_without_columns_has_no_rows() {
        let mut rows = RowBatch::new("T", Vec::new());
        rows.push_row(std::iter::empty()).unwrap();
        assert!(rows.is_empty());
    }

    #[test]
    fn serializes_as_cells_and_back_checking_each_row() {
        let rows = sample();
        let text = serde_json::to_value(&rows).unwrap();
        assert_eq!(text["rows"][1], json!(["", null, "x", "inf"]));
        let back: RowBatch = serde_json::from_value(text).unwrap();
        assert_eq!(back, rows);
        let short = json!({"stream": "T", "columns": [{"name": "a", "kind": "text"}], "rows": [["x", "y"]]});
        let err = serde_json::from_value::<RowBatch>(short).unwrap_err();
        assert!(err.to_string().contains("2 cells"), "{err}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x726f_7773),
            ..Default::default()
        })]

        /// A row's JSON is byte for byte its record's, whatever the cells and names
        /// (repeated names included).
        #[test]
        fn a_rows_json_is_its_records(
            columns in proptest::collection::vec(("[a-c\"\\\\é]{0,3}", 0..4usize), 1..6),
            cells in proptest::collection::vec(proptest::option::of(
                proptest::prop_oneof!["true", "false", "-?[0-9]{1,20}", "-?[0-9]{0,4}\\.[0-9]{0,4}(e[+-]?[0-9]{1,3})?", "inf|NaN|1e999", ".{0,8}"]
            ), 6),
        ) {
            let kinds = [ColumnKind::Text, ColumnKind::Boolean, ColumnKind::Integer, ColumnKind::Number];
            let columns: Vec<Column> = columns.into_iter().map(|(n, k)| Column::new(n, kinds[k])).collect();
            let width = columns.len();
            let mut rows = RowBatch::new("T", columns);
            rows.push_row(cells.iter().take(width).map(Option::as_deref)).unwrap();
            let row = rows.row(0).unwrap();
            let mut out = Vec::new();
            row.write_json(&mut out);
            proptest::prop_assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&row.to_record()).unwrap()
            );
        }
    }
}
