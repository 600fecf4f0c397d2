//! Profiling in one pass: what each column of a stream holds, gathered batch by batch
//! while data moves, mergeable (two profiles of parts of a stream make the profile of the
//! whole), and serialisable to keep per run.
//!
//! Per column:
//! - presence: values seen, nulls, and (from the stream's record count) missing;
//! - kinds: text, integer, number, boolean, object, array;
//! - formats of text: date, date-time, email, UUID, Salesforce id, integer or decimal in
//!   text (the inferred "pattern" of a column);
//! - distinct values, estimated by HyperLogLog++ (`hyperloglogplus`, precision 14: a
//!   standard error of about 0.8 %), hashed with fixed SipHash keys so profiles from
//!   different processes merge;
//! - numbers: count, mean, variance, min and max (Welford's algorithm, merged by Chan's
//!   formula), and quantiles from a t-digest (`tdigest`);
//! - text lengths in characters, the same way;
//! - the exact count of each value while a column has at most 32 distinct ones (a
//!   low-cardinality histogram), dropped past that.
//!
//! [`suggest`] turns a profile into validation rules for the pipeline's `validate` list
//! and keeps only those that every record of a held-back sample passes.
//!
//! ```
//! use connector_etl::profile::StreamProfile;
//! use moodbridge_core::{Record, RecordBatch};
//! use serde_json::json;
//!
//! let batch = |ids: std::ops::Range<u32>| RecordBatch::new("Case", ids.map(|i| {
//!     Record::from_json(json!({"Id": format!("500{i:015}"), "Status": if i % 3 == 0 { "Closed" } else { "New" }, "Amount": i}))
//!         .unwrap()
//! }).collect());
//! let mut first = StreamProfile::new("Case");
//! first.observe_batch(&batch(0..600));
//! let mut second = StreamProfile::new("Case");
//! second.observe_batch(&batch(600..1000));
//! first.merge(&second).unwrap();
//!
//! assert_eq!(first.records(), 1000);
//! let status = first.column("Status").unwrap();
//! assert_eq!(status.top_values().unwrap(), [("New".to_owned(), 666), ("Closed".to_owned(), 334)]);
//! let amount = first.column("Amount").unwrap();
//! assert_eq!((amount.numbers().min(), amount.numbers().max()), (Some(0.0), Some(999.0)));
//! assert!((amount.numbers().mean().unwrap() - 499.5).abs() < 1e-9);
//! let ids = first.column("Id").unwrap().distinct();
//! assert!((ids - 1000.0).abs() < 20.0, "{ids}");
//! ```

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hyperloglogplus::{HyperLogLog, HyperLogLogPlus};
use moodbridge_core::config::Validator;
use moodbridge_core::engine::{Rule, Rules, ValueType};
use moodbridge_core::{Cell, Error, Record, RecordBatch, Result, RowBatch};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Distinct values kept exactly per column, at most.
pub const TOP_VALUES: usize = 32;
/// The HyperLogLog++ precision: 2^14 registers, about 0.8 % standard error.
const PRECISION: u8 = 14;
/// Values held before they are folded into a column's t-digest.
const DIGEST_BUFFER: usize = 2048;
/// Centroids of a t-digest.
const DIGEST_SIZE: usize = 100;

/// SipHash-1-3 with fixed keys: the same value hashes the same in every process, so
/// distinct-count sketches merge across runs and machines.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StableHash;

impl BuildHasher for StableHash {
    type Hasher = siphasher::sip::SipHasher13;

    fn build_hasher(&self) -> Self::Hasher {
        siphasher::sip::SipHasher13::new_with_keys(0x6d6f_6f64_6272_6964, 0x6765_2d70_726f_6669)
    }
}

/// Count, mean, variance, min and max of numbers, in one pass, mergeable.
///
/// ```
/// use connector_etl::profile::Moments;
/// let mut a = Moments::default();
/// [2.0, 4.0, 4.0, 4.0].iter().for_each(|x| a.add(*x));
/// let mut b = Moments::default();
/// [5.0, 5.0, 7.0, 9.0].iter().for_each(|x| b.add(*x));
/// a.merge(&b);
/// assert_eq!(a.count(), 8);
/// assert_eq!(a.mean(), Some(5.0));
/// assert_eq!(a.population_std_dev(), Some(2.0));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    n: u64,
    mean: f64,
    m2: f64,
    min: Option<f64>,
    max: Option<f64>,
}

impl Moments {
    /// Count `x`.
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
        self.min = Some(self.min.map_or(x, |m| m.min(x)));
        self.max = Some(self.max.map_or(x, |m| m.max(x)));
    }

    /// Count everything `other` counted.
    pub fn merge(&mut self, other: &Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other.clone();
            return;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        self.m2 += other.m2 + delta * delta * (self.n as f64 * other.n as f64) / n as f64;
        self.mean += delta * other.n as f64 / n as f64;
        self.n = n;
        self.min = self.min.zip(other.min).map(|(a, b)| a.min(b));
        self.max = self.max.zip(other.max).map(|(a, b)| a.max(b));
    }

    /// How many.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// Their mean.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// Their population standard deviation.
    pub fn population_std_dev(&self) -> Option<f64> {
        (self.n > 0).then(|| (self.m2 / self.n as f64).sqrt())
    }

    /// The smallest.
    pub fn min(&self) -> Option<f64> {
        self.min
    }

    /// The largest.
    pub fn max(&self) -> Option<f64> {
        self.max
    }
}

/// Values of each JSON kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kinds {
    /// Strings.
    pub text: u64,
    /// Whole numbers.
    pub integer: u64,
    /// Other numbers.
    pub number: u64,
    /// Booleans.
    pub boolean: u64,
    /// Objects.
    pub object: u64,
    /// Arrays.
    pub array: u64,
}

impl Kinds {
    fn merge(&mut self, o: &Kinds) {
        self.text += o.text;
        self.integer += o.integer;
        self.number += o.number;
        self.boolean += o.boolean;
        self.object += o.object;
        self.array += o.array;
    }

    /// The one kind every value had, when they all had the same.
    pub fn only(&self) -> Option<ValueType> {
        let all = [
            (self.text, ValueType::String),
            (self.integer, ValueType::Integer),
            (self.number, ValueType::Number),
            (self.boolean, ValueType::Boolean),
            (self.object, ValueType::Object),
            (self.array, ValueType::Array),
        ];
        let present: Vec<&(u64, ValueType)> = all.iter().filter(|(n, _)| *n > 0).collect();
        match present.as_slice() {
            [(_, kind)] => Some(*kind),
            // Whole numbers among numbers are numbers.
            [(_, ValueType::Integer), (_, ValueType::Number)] => Some(ValueType::Number),
            _ => None,
        }
    }
}

/// Text values in each recognised format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formats {
    /// `YYYY-MM-DD`.
    pub date: u64,
    /// `YYYY-MM-DDThh:mm…`.
    pub datetime: u64,
    /// `local@domain.tld`.
    pub email: u64,
    /// A UUID (`8-4-4-4-12` hex digits).
    pub uuid: u64,
    /// A Salesforce record id (15 or 18 letters and digits).
    pub salesforce_id: u64,
    /// An integer written as text.
    pub integer_text: u64,
    /// A decimal number written as text.
    pub decimal_text: u64,
}

/// A recognised format of text, with the pattern a rule checks it by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `YYYY-MM-DD`.
    Date,
    /// `YYYY-MM-DDThh:mm…`.
    DateTime,
    /// An email address.
    Email,
    /// A UUID.
    Uuid,
    /// A Salesforce id.
    SalesforceId,
    /// An integer in text.
    IntegerText,
    /// A decimal in text.
    DecimalText,
}

impl Format {
    /// The regular expression (Rust `regex`) a value of this format matches.
    pub fn regex(self) -> &'static str {
        match self {
            Format::Date => r"^\d{4}-\d{2}-\d{2}$",
            Format::DateTime => r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}",
            Format::Email => r"^[^@\s]+@[^@\s]+\.[^@\s]+$",
            Format::Uuid => {
                r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
            }
            Format::SalesforceId => r"^[a-zA-Z0-9]{15}([a-zA-Z0-9]{3})?$",
            Format::IntegerText => r"^[+-]?\d+$",
            Format::DecimalText => r"^[+-]?\d+\.\d+$",
        }
    }
}

fn digits(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(u8::is_ascii_digit)
}

/// The format of `text`, if it has one this profiler knows.
fn format_of(text: &str) -> Option<Format> {
    let b = text.as_bytes();
    let date = b.len() >= 10
        && digits(&b[0..4])
        && b[4] == b'-'
        && digits(&b[5..7])
        && b[7] == b'-'
        && digits(&b[8..10]);
    if date && b.len() == 10 {
        return Some(Format::Date);
    }
    if date && b.len() >= 16 && b[10] == b'T' && digits(&b[11..13]) && b[13] == b':' {
        return Some(Format::DateTime);
    }
    let unsigned = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    if digits(unsigned) {
        return Some(Format::IntegerText);
    }
    if let Some(dot) = unsigned.iter().position(|c| *c == b'.')
        && digits(&unsigned[..dot])
        && digits(&unsigned[dot + 1..])
    {
        return Some(Format::DecimalText);
    }
    if b.len() == 36
        && [8, 13, 18, 23].iter().all(|i| b[*i] == b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit())
    {
        return Some(Format::Uuid);
    }
    if (b.len() == 15 || b.len() == 18)
        && b.iter().all(u8::is_ascii_alphanumeric)
        && b.iter().any(u8::is_ascii_digit)
    {
        return Some(Format::SalesforceId);
    }
    if let Some(at) = text.find('@')
        && at > 0
        && !text.contains(char::is_whitespace)
        && text[at + 1..].contains('.')
        && !text[at + 1..].contains('@')
        && !text.ends_with('.')
    {
        return Some(Format::Email);
    }
    None
}

impl Formats {
    fn count(&mut self, format: Format) {
        let slot = match format {
            Format::Date => &mut self.date,
            Format::DateTime => &mut self.datetime,
            Format::Email => &mut self.email,
            Format::Uuid => &mut self.uuid,
            Format::SalesforceId => &mut self.salesforce_id,
            Format::IntegerText => &mut self.integer_text,
            Format::DecimalText => &mut self.decimal_text,
        };
        *slot += 1;
    }

    fn merge(&mut self, o: &Formats) {
        self.date += o.date;
        self.datetime += o.datetime;
        self.email += o.email;
        self.uuid += o.uuid;
        self.salesforce_id += o.salesforce_id;
        self.integer_text += o.integer_text;
        self.decimal_text += o.decimal_text;
    }

    /// The one format all of `texts` text values had.
    pub fn only(&self, texts: u64) -> Option<Format> {
        if texts == 0 {
            return None;
        }
        [
            (self.date, Format::Date),
            (self.datetime, Format::DateTime),
            (self.email, Format::Email),
            (self.uuid, Format::Uuid),
            (self.salesforce_id, Format::SalesforceId),
            (self.integer_text, Format::IntegerText),
            (self.decimal_text, Format::DecimalText),
        ]
        .into_iter()
        .find(|(n, _)| *n == texts)
        .map(|(_, f)| f)
    }
}

/// Quantiles of a column's numbers: values buffered, then folded into a t-digest.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quantiles {
    digest: tdigest::TDigest,
    pending: Vec<f64>,
}

impl Default for Quantiles {
    fn default() -> Self {
        Quantiles {
            digest: tdigest::TDigest::new_with_size(DIGEST_SIZE),
            pending: Vec::new(),
        }
    }
}

impl Quantiles {
    fn add(&mut self, x: f64) {
        self.pending.push(x);
        if self.pending.len() >= DIGEST_BUFFER {
            self.fold();
        }
    }

    fn fold(&mut self) {
        if !self.pending.is_empty() {
            let values = std::mem::take(&mut self.pending);
            self.digest = self.digest.merge_unsorted(values);
        }
    }

    fn merge(&mut self, other: &Quantiles) {
        self.fold();
        let mut other = other.clone();
        other.fold();
        self.digest = tdigest::TDigest::merge_digests(vec![self.digest.clone(), other.digest]);
    }

    fn quantile(&self, q: f64) -> Option<f64> {
        let mut folded = self.clone();
        folded.fold();
        if folded.digest.is_empty() {
            None
        } else {
            Some(folded.digest.estimate_quantile(q))
        }
    }
}

/// A column's exact value counts while it has few distinct values.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Top {
    counts: BTreeMap<String, u64>,
    overflow: bool,
}

impl Top {
    fn add(&mut self, value: &str) {
        if self.overflow {
            return;
        }
        if let Some(n) = self.counts.get_mut(value) {
            *n += 1;
        } else if self.counts.len() < TOP_VALUES {
            self.counts.insert(value.to_owned(), 1);
        } else {
            self.overflow = true;
            self.counts.clear();
        }
    }

    fn merge(&mut self, other: &Top) {
        if other.overflow {
            self.overflow = true;
            self.counts.clear();
            return;
        }
        for (value, n) in &other.counts {
            if self.overflow {
                return;
            }
            if let Some(mine) = self.counts.get_mut(value) {
                *mine += n;
            } else if self.counts.len() < TOP_VALUES {
                self.counts.insert(value.clone(), *n);
            } else {
                self.overflow = true;
                self.counts.clear();
            }
        }
    }
}

/// One value, however it came.
enum Seen<'a> {
    Null,
    Bool(bool),
    Integer(i64),
    Number(f64),
    Text(&'a str),
    Object,
    Array,
}

/// What one column of a stream holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ColumnProfile {
    present: u64,
    nulls: u64,
    kinds: Kinds,
    formats: Formats,
    distinct: HyperLogLogPlus<String, StableHash>,
    numbers: Moments,
    lengths: Moments,
    quantiles: Quantiles,
    top: Top,
}

impl Default for ColumnProfile {
    fn default() -> Self {
        ColumnProfile {
            present: 0,
            nulls: 0,
            kinds: Kinds::default(),
            formats: Formats::default(),
            #[allow(
                clippy::unwrap_used,
                reason = "precision 14 is within the crate's range of 4 to 18"
            )]
            distinct: HyperLogLogPlus::new(PRECISION, StableHash).unwrap(),
            numbers: Moments::default(),
            lengths: Moments::default(),
            quantiles: Quantiles::default(),
            top: Top::default(),
        }
    }
}

impl ColumnProfile {
    fn observe(&mut self, value: Seen<'_>) {
        self.present += 1;
        let number = |this: &mut Self, x: f64, text: &str| {
            this.numbers.add(x);
            this.quantiles.add(x);
            this.distinct.insert(text);
            this.top.add(text);
        };
        match value {
            Seen::Null => self.nulls += 1,
            Seen::Bool(b) => {
                self.kinds.boolean += 1;
                let text = if b { "true" } else { "false" };
                self.distinct.insert(text);
                self.top.add(text);
            }
            Seen::Integer(i) => {
                self.kinds.integer += 1;
                number(self, i as f64, &i.to_string());
            }
            Seen::Number(f) => {
                self.kinds.number += 1;
                number(self, f, &f.to_string());
            }
            Seen::Text(s) => {
                self.kinds.text += 1;
                self.lengths.add(s.chars().count() as f64);
                if let Some(format) = format_of(s) {
                    self.formats.count(format);
                }
                self.distinct.insert(s);
                self.top.add(s);
            }
            Seen::Object => self.kinds.object += 1,
            Seen::Array => self.kinds.array += 1,
        }
    }

    fn merge(&mut self, other: &ColumnProfile) -> Result<()> {
        self.present += other.present;
        self.nulls += other.nulls;
        self.kinds.merge(&other.kinds);
        self.formats.merge(&other.formats);
        self.distinct
            .merge(&other.distinct)
            .map_err(|e| Error::internal(format!("merging distinct-value sketches: {e}")))?;
        self.numbers.merge(&other.numbers);
        self.lengths.merge(&other.lengths);
        self.quantiles.merge(&other.quantiles);
        self.top.merge(&other.top);
        Ok(())
    }

    /// Values seen (nulls included).
    pub fn present(&self) -> u64 {
        self.present
    }

    /// Nulls seen.
    pub fn nulls(&self) -> u64 {
        self.nulls
    }

    /// Values of each kind.
    pub fn kinds(&self) -> &Kinds {
        &self.kinds
    }

    /// Text values in each format.
    pub fn formats(&self) -> &Formats {
        &self.formats
    }

    /// Distinct non-null values, estimated (HyperLogLog++).
    pub fn distinct(&self) -> f64 {
        // Counting may convert the sketch's representation: count a copy.
        self.distinct.clone().count()
    }

    /// The numbers' moments.
    pub fn numbers(&self) -> &Moments {
        &self.numbers
    }

    /// Text lengths' moments, in characters.
    pub fn lengths(&self) -> &Moments {
        &self.lengths
    }

    /// The numbers' `q` quantile (0 to 1), estimated (t-digest).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        self.quantiles.quantile(q)
    }

    /// Each value with its count, most frequent first (ties by value), while the column
    /// has at most [`TOP_VALUES`] distinct values; `None` past that.
    pub fn top_values(&self) -> Option<Vec<(String, u64)>> {
        if self.top.overflow {
            return None;
        }
        let mut out: Vec<(String, u64)> = self
            .top
            .counts
            .iter()
            .map(|(v, n)| (v.clone(), *n))
            .collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Some(out)
    }
}

/// What a stream holds, column by column.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamProfile {
    stream: String,
    records: u64,
    columns: BTreeMap<String, ColumnProfile>,
}

impl StreamProfile {
    /// An empty profile of `stream`.
    pub fn new(stream: impl Into<String>) -> Self {
        StreamProfile {
            stream: stream.into(),
            records: 0,
            columns: BTreeMap::new(),
        }
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Records seen.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Column `name`'s profile.
    pub fn column(&self, name: &str) -> Option<&ColumnProfile> {
        self.columns.get(name)
    }

    /// Every column, by name.
    pub fn columns(&self) -> impl Iterator<Item = (&str, &ColumnProfile)> {
        self.columns.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn column_mut(&mut self, name: &str) -> &mut ColumnProfile {
        if !self.columns.contains_key(name) {
            self.columns
                .insert(name.to_owned(), ColumnProfile::default());
        }
        #[allow(clippy::unwrap_used, reason = "inserted just above")]
        self.columns.get_mut(name).unwrap()
    }

    /// Count one record.
    pub fn observe(&mut self, record: &Record) {
        self.records += 1;
        for (field, value) in record.fields() {
            let seen = match value {
                Value::Null => Seen::Null,
                Value::Bool(b) => Seen::Bool(*b),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => Seen::Integer(i),
                    None => Seen::Number(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => Seen::Text(s),
                Value::Object(_) => Seen::Object,
                Value::Array(_) => Seen::Array,
            };
            self.column_mut(field).observe(seen);
        }
    }

    /// Count every record of `batch`.
    pub fn observe_batch(&mut self, batch: &RecordBatch) {
        for record in &batch.records {
            self.observe(record);
        }
    }

    /// Count every row of `rows`, read by their columns' kinds, without a record per row.
    pub fn observe_rows(&mut self, rows: &RowBatch) {
        let names: Vec<String> = rows.columns().iter().map(|c| c.name.clone()).collect();
        for name in &names {
            self.column_mut(name);
        }
        for row in rows.rows() {
            self.records += 1;
            for (name, cell) in names.iter().zip(row.cells()) {
                let seen = match cell {
                    Cell::Null => Seen::Null,
                    Cell::Bool(b) => Seen::Bool(b),
                    Cell::Integer(i) => Seen::Integer(i),
                    Cell::Number(f) => Seen::Number(f),
                    Cell::Text(s) => Seen::Text(s),
                };
                #[allow(clippy::unwrap_used, reason = "every column was added above")]
                self.columns.get_mut(name).unwrap().observe(seen);
            }
        }
    }

    /// Count everything `other` (a profile of the same stream) counted.
    ///
    /// # Errors
    /// [`InvalidInput`](moodbridge_core::ErrorKind::InvalidInput) for a profile of
    /// another stream.
    pub fn merge(&mut self, other: &StreamProfile) -> Result<()> {
        if other.stream != self.stream {
            return Err(Error::invalid_input(format!(
                "a profile of {} cannot be merged into one of {}",
                other.stream, self.stream
            )));
        }
        self.records += other.records;
        for (name, column) in &other.columns {
            self.column_mut(name).merge(column)?;
        }
        Ok(())
    }
}

/// Rules [`suggest`] proposes, those a held-back sample refuted, and the TOML to paste.
#[derive(Debug, Clone, Default)]
pub struct Suggestions {
    /// Rules every held-back record passes.
    pub rules: Vec<Rule>,
    /// Rules some held-back record breaks, with how many of how many.
    pub refuted: Vec<(Rule, String)>,
}

impl Suggestions {
    /// The kept rules as a pipeline stream's `validate` list, ready to paste.
    ///
    /// # Errors
    /// [`Internal`](moodbridge_core::ErrorKind::Internal) if a rule cannot be written as
    /// TOML.
    pub fn to_toml(&self) -> Result<String> {
        let mut out = String::from("validate = [\n");
        for rule in &self.rules {
            let value = serde_json::to_value(rule)
                .map_err(|e| Error::internal(format!("writing a rule: {e}")))?;
            let Value::Object(fields) = value else {
                return Err(Error::internal("a rule is not a table"));
            };
            let mut parts = Vec::new();
            // `rule` and `field` first, as people write them.
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort_by_key(|k| match k.as_str() {
                "rule" => 0,
                "field" => 1,
                _ => 2,
            });
            for key in keys {
                let v = &fields[key.as_str()];
                if v.is_null() {
                    continue;
                }
                let toml_value = toml::Value::try_from(v)
                    .map_err(|e| Error::internal(format!("writing a rule as TOML: {e}")))?;
                parts.push(format!("{key} = {toml_value}"));
            }
            out.push_str(&format!("  {{ {} }},\n", parts.join(", ")));
        }
        out.push(']');
        Ok(out)
    }
}

/// Validation rules a profile suggests, each checked against `held_back` (records the
/// profile did not see): only the rules every held-back record passes are kept.
///
/// - `required` for a column present and never null in every record;
/// - `type` when every value had one kind;
/// - `enum` for a column with at most `max_enum` distinct values, each seen at least
///   twice (a value seen once is more likely a typo than a member);
/// - `pattern` when every text value had one recognised format;
/// - `length` (at most the longest text seen) and `range` (the smallest and largest
///   number seen).
///
/// ```
/// use connector_etl::profile::{StreamProfile, suggest};
/// use moodbridge_core::{Record, RecordBatch};
/// use serde_json::json;
///
/// let records: Vec<Record> = (0..200)
///     .map(|i| {
///         let stage = ["Open", "Won"][i % 2];
///         Record::from_json(json!({"Email": format!("p{i}@firm.example"), "Stage": stage})).unwrap()
///     })
///     .collect();
/// let mut profile = StreamProfile::new("Lead");
/// profile.observe_batch(&RecordBatch::new("Lead", records[..150].to_vec()));
/// let suggested = suggest(&profile, &records[150..], 10);
/// let toml = suggested.to_toml().unwrap();
/// assert!(toml.contains(r#"{ rule = "enum", field = "Stage", values = ["Open", "Won"] }"#), "{toml}");
/// assert!(toml.contains(r#"rule = "pattern", field = "Email""#), "{toml}");
/// println!("{toml}");
/// ```
pub fn suggest(profile: &StreamProfile, held_back: &[Record], max_enum: usize) -> Suggestions {
    let mut candidates = Vec::new();
    for (name, column) in profile.columns() {
        let field = name.to_owned();
        if column.present == profile.records && column.nulls == 0 && profile.records > 0 {
            candidates.push(Rule::Required {
                field: field.clone(),
            });
        }
        let kind = column.kinds.only();
        if let Some(value_type) = kind {
            candidates.push(Rule::Type {
                field: field.clone(),
                value_type,
            });
        }
        if let Some(top) = column.top_values()
            && !top.is_empty()
            && top.len() <= max_enum
            && top.iter().all(|(_, n)| *n >= 2)
            && matches!(kind, Some(ValueType::String))
        {
            let mut values: Vec<Value> = top.into_iter().map(|(v, _)| Value::String(v)).collect();
            values.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            candidates.push(Rule::Enum {
                field: field.clone(),
                values,
            });
        } else if let Some(format) = column.formats.only(column.kinds.text)
            && column.kinds.text > 0
        {
            candidates.push(Rule::Pattern {
                field: field.clone(),
                regex: format.regex().to_owned(),
            });
        }
        if column.kinds.text > 0
            && let Some(max) = column.lengths.max()
        {
            candidates.push(Rule::Length {
                field: field.clone(),
                min: None,
                max: Some(max as usize),
            });
        }
        if matches!(kind, Some(ValueType::Integer | ValueType::Number)) {
            candidates.push(Rule::Range {
                field,
                min: column.numbers.min(),
                max: column.numbers.max(),
            });
        }
    }
    let mut out = Suggestions::default();
    for rule in candidates {
        let mut v = Validator::new();
        let compiled = Rules::compile(std::slice::from_ref(&rule), &mut v);
        if v.finish().is_err() {
            continue;
        }
        let broken = held_back
            .iter()
            .filter(|r| compiled.check(r).is_err())
            .count();
        if broken == 0 {
            out.rules.push(rule);
        } else {
            out.refuted.push((
                rule,
                format!("{broken} of {} held-back records break it", held_back.len()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_apart() {
        for (text, format) in [
            ("2026-12-07", Some(Format::Date)),
            ("2026-12-07T23:28:52.166Z", Some(Format::DateTime)),
            ("ada@lovelace.example", Some(Format::Email)),
            ("0f0e0d0c-0000-4000-8000-00000000000a", Some(Format::Uuid)),
            ("001R000000abcDEF", None),
            ("001R000000abcDE", Some(Format::SalesforceId)),
            ("001R000000abcDEFGH", Some(Format::SalesforceId)),
            ("-42", Some(Format::IntegerText)),
            ("3.50", Some(Format::DecimalText)),
            ("Smith & Jones LLP", None),
            ("a@b", None),
        ] {
            assert_eq!(format_of(text), format, "{text}");
            if let Some(f) = format {
                assert!(
                    regex::Regex::new(f.regex()).unwrap().is_match(text),
                    "{text}"
                );
            }
        }
    }

    #[test]
    fn moments_merge_as_if_counted_together() {
        let values: Vec<f64> = (0..1000).map(|i| f64::from(i) * 0.37 - 50.0).collect();
        let mut whole = Moments::default();
        values.iter().for_each(|x| whole.add(*x));
        let mut left = Moments::default();
        values[..333].iter().for_each(|x| left.add(*x));
        let mut right = Moments::default();
        values[333..].iter().for_each(|x| right.add(*x));
        left.merge(&right);
        assert_eq!(left.count(), whole.count());
        assert!((left.mean().unwrap() - whole.mean().unwrap()).abs() < 1e-9);
        assert!(
            (left.population_std_dev().unwrap() - whole.population_std_dev().unwrap()).abs() < 1e-9
        );
        assert_eq!((left.min(), left.max()), (whole.min(), whole.max()));
    }

    #[test]
    fn a_profile_survives_serialisation_and_merges_after() {
        let mut a = StreamProfile::new("Case");
        for i in 0..5_000 {
            a.observe(&Record::from_json(serde_json::json!({"N": i})).unwrap());
        }
        let stored = serde_json::to_string(&a).unwrap();
        let mut back: StreamProfile = serde_json::from_str(&stored).unwrap();
        let mut b = StreamProfile::new("Case");
        for i in 5_000..10_000 {
            b.observe(&Record::from_json(serde_json::json!({"N": i})).unwrap());
        }
        back.merge(&b).unwrap();
        let n = back.column("N").unwrap();
        assert_eq!(n.numbers().count(), 10_000);
        let distinct = n.distinct();
        assert!((distinct - 10_000.0).abs() / 10_000.0 < 0.02, "{distinct}");
        let median = n.quantile(0.5).unwrap();
        assert!((median - 5_000.0).abs() < 100.0, "{median}");
        assert!(n.top_values().is_none(), "past 32 distinct values");
        let err = back.merge(&StreamProfile::new("Contact")).unwrap_err();
        assert!(err.to_string().contains("Contact"));
    }
}

#[cfg(test)]
mod suggest_tests {
    use super::*;
    use serde_json::json;

    fn lead(i: usize) -> Record {
        let stage = ["Open", "Won", "Lost"][i % 3];
        Record::from_json(json!({
            "Email": format!("p{i}@firm.example"),
            "Stage": stage,
            "Score": (i % 90) + 10,
            "Note": if i.is_multiple_of(4) { json!(null) } else { json!("called") },
        }))
        .unwrap()
    }

    #[test]
    fn rules_are_suggested_checked_and_written_as_toml() {
        let records: Vec<Record> = (0..400).map(lead).collect();
        let mut profile = StreamProfile::new("Lead");
        profile.observe_batch(&RecordBatch::new("Lead", records[..300].to_vec()));
        // A held-back record with a score out of the range seen refutes the range.
        let mut held_back = records[300..].to_vec();
        held_back[0].set("Score", json!(250));
        let suggested = suggest(&profile, &held_back, 10);
        let toml = suggested.to_toml().unwrap();
        assert_eq!(
            toml,
            [
                "validate = [",
                r#"  { rule = "required", field = "Email" },"#,
                r#"  { rule = "type", field = "Email", type = "string" },"#,
                r#"  { rule = "pattern", field = "Email", regex = '^[^@\s]+@[^@\s]+\.[^@\s]+$' },"#,
                r#"  { rule = "length", field = "Email", max = 17 },"#,
                r#"  { rule = "type", field = "Note", type = "string" },"#,
                r#"  { rule = "enum", field = "Note", values = ["called"] },"#,
                r#"  { rule = "length", field = "Note", max = 6 },"#,
                r#"  { rule = "required", field = "Score" },"#,
                r#"  { rule = "type", field = "Score", type = "integer" },"#,
                r#"  { rule = "required", field = "Stage" },"#,
                r#"  { rule = "type", field = "Stage", type = "string" },"#,
                r#"  { rule = "enum", field = "Stage", values = ["Lost", "Open", "Won"] },"#,
                r#"  { rule = "length", field = "Stage", max = 4 },"#,
                "]",
            ]
            .join("\n")
        );
        assert_eq!(suggested.refuted.len(), 1, "{:?}", suggested.refuted);
        assert!(matches!(suggested.refuted[0].0, Rule::Range { .. }));
        assert_eq!(
            suggested.refuted[0].1,
            "1 of 100 held-back records break it"
        );
        // What it wrote is a valid validate list for the engine.
        let parsed: toml::Table = toml.parse().unwrap();
        let rules: Vec<Rule> = parsed["validate"].clone().try_into().unwrap();
        assert_eq!(rules, suggested.rules);
    }
}
