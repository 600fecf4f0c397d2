//! Running a parsed SOQL query against the sandbox's org: filter, order, offset, limit,
//! and the selected fields in Salesforce's response shape (`attributes`, parent
//! relationships as nested objects).

use std::cmp::Ordering;
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use super::org::{Fields, ObjectDef, Org};
use super::soql::{Literal, Predicate, Query, like_matches};
use crate::error::ApiError;

fn malformed(message: impl Into<String>) -> ApiError {
    ApiError::new("MALFORMED_QUERY", message)
}

fn invalid_field(object: &str, field: &str) -> ApiError {
    ApiError {
        message: format!(
            "No such column '{field}' on entity '{object}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name."
        ),
        error_code: "INVALID_FIELD".into(),
        fields: vec![field.into()],
    }
}

/// The records a query selects, in order, shaped as the REST API returns them.
pub fn run(org: &Org, q: &Query, version: &str) -> Result<Vec<Value>, ApiError> {
    let (def, rows) = select(org, q)?;
    rows.into_iter()
        .map(|r| shape(org, &def, r, &q.fields, version))
        .collect()
}

/// How many records a query selects (its filter, offset and limit; nothing shaped).
pub fn count(org: &Org, q: &Query) -> Result<usize, ApiError> {
    let mut unordered = q.clone();
    unordered.order.clear();
    Ok(select(org, &unordered)?.1.len())
}

/// A query's object and the records it selects, in order: filter, order, offset, limit,
/// with every selected and ordering field checked first.
pub fn select<'o>(org: &'o Org, q: &Query) -> Result<(ObjectDef, Vec<&'o Fields>), ApiError> {
    let def = org
        .object(&q.object)
        .ok_or_else(|| {
            ApiError::new(
                "INVALID_TYPE",
                format!("sObject type '{}' is not supported.", q.object),
            )
        })?
        .clone();
    for f in q.fields.iter().chain(q.order.iter().map(|(f, _)| f)) {
        resolve(org, &def, f, None)?;
    }
    if q.offset.is_some_and(|o| o > 2_000) {
        return Err(ApiError::new(
            "NUMBER_OUTSIDE_VALID_RANGE",
            "Maximum SOQL offset allowed is 2000",
        ));
    }
    let mut rows: Vec<&Fields> = Vec::new();
    if q.limit == Some(0) {
        return Ok((def, rows));
    }
    for r in org.rows(&def.name, q.all_rows) {
        let keep = match &q.filter {
            Some(p) => matches(org, &def, r, p)?,
            None => true,
        };
        if keep {
            rows.push(r);
        }
    }
    if !q.order.is_empty() {
        let order: Vec<String> = q.order.iter().map(|(f, _)| f.clone()).collect();
        let columns = Column::plan(&def, &order);
        let threads = worker_threads();
        if let Some(encoded) =
            SortKeys::of_rows(org, &def, &columns, &rows, &q.order, KEY_PART, threads)
        {
            rows = encoded.sorted().into_iter().map(|i| rows[i]).collect();
            return Ok((def, window(rows, q)));
        }
        // Every row's keys, borrowed, side by side in one vector (`width` per row); the
        // sort permutes row numbers, stably.
        let mut reader = RowReader::new(columns);
        let width = order.len();
        let mut keys = Vec::with_capacity(rows.len() * width);
        for r in &rows {
            reader.read(org, &def, r, &mut keys);
        }
        let mut sorted: Vec<usize> = (0..rows.len()).collect();
        sorted.sort_by(|&a, &b| {
            let (a, b) = (&keys[a * width..][..width], &keys[b * width..][..width]);
            for (i, (_, asc)) in q.order.iter().enumerate() {
                // Nulls first ascending, last descending (Salesforce's default).
                let o = cmp(&a[i], &b[i]);
                let o = if *asc { o } else { o.reverse() };
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        });
        rows = sorted.into_iter().map(|i| rows[i]).collect();
    }
    Ok((def, window(rows, q)))
}

/// The rows within the query's offset and limit.
fn window<'o>(rows: Vec<&'o Fields>, q: &Query) -> Vec<&'o Fields> {
    let offset = usize::try_from(q.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let limit = q
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    rows.into_iter().skip(offset).take(limit).collect()
}

/// Rows' ORDER BY keys as byte strings that sort as [`cmp`] orders the values (nulls
/// first, text case-insensitively, a descending column's bytes inverted), side by side
/// in one buffer. Sorting them compares bytes that sit together, not values scattered
/// over the org's records.
struct SortKeys {
    bytes: Vec<u8>,
    /// Where each row's key ends in `bytes`.
    ends: Vec<usize>,
    /// Each column's kind of value (none while only nulls were seen): a column mixing
    /// kinds has no encoding.
    kinds: Vec<Option<u8>>,
}

/// Threads for work a query job splits over the cores (sort keys, the CSV render): as
/// many as there are cores, at most 4.
pub(crate) fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Rows per part when the sort keys of many rows are read and encoded on several threads.
const KEY_PART: usize = 50_000;

/// How many leading bytes of a key the sort holds inline.
const INLINE_KEY: usize = 24;

impl SortKeys {
    /// The encoded ORDER BY keys of `rows` (`columns` planned from the ORDER BY fields),
    /// read and encoded in parts of at least `part_rows` rows, on up to `threads` threads;
    /// `None` when a value has no encoding (see [`SortKeys::encode`]).
    fn of_rows(
        org: &Org,
        def: &ObjectDef,
        columns: &[Column],
        rows: &[&Fields],
        order: &[(String, bool)],
        part_rows: usize,
        threads: usize,
    ) -> Option<Self> {
        let part = |rows: &[&Fields]| {
            let mut reader = RowReader::new(columns.to_vec());
            let mut keys = Vec::with_capacity(rows.len() * columns.len());
            for r in rows {
                reader.read(org, def, r, &mut keys);
            }
            SortKeys::encode(&keys, order)
        };
        let parts = threads.min(rows.len() / part_rows.max(1)).max(1);
        if parts == 1 {
            return part(rows);
        }
        let chunk = rows.len().div_ceil(parts);
        let encoded: Vec<Option<SortKeys>> = std::thread::scope(|scope| {
            let handles: Vec<_> = rows
                .chunks(chunk)
                .map(|rows| scope.spawn(move || part(rows)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        });
        let mut all: Option<SortKeys> = None;
        for keys in encoded {
            let keys = keys?;
            match &mut all {
                None => all = Some(keys),
                Some(all) => {
                    for (kind, other) in all.kinds.iter_mut().zip(&keys.kinds) {
                        match (*kind, *other) {
                            (Some(a), Some(b)) if a != b => return None,
                            (None, Some(b)) => *kind = Some(b),
                            _ => {}
                        }
                    }
                    let base = all.bytes.len();
                    all.bytes.extend_from_slice(&keys.bytes);
                    all.ends.extend(keys.ends.into_iter().map(|e| e + base));
                }
            }
        }
        all
    }

    /// The keys of rows whose `order.len()` values each sit side by side in `keys`, or
    /// `None` when a value has no encoding here (non-ASCII text, a column mixing types,
    /// arrays or objects): the caller compares the values instead.
    fn encode(keys: &[std::borrow::Cow<'_, Value>], order: &[(String, bool)]) -> Option<Self> {
        let width = order.len();
        let rows = keys.len() / width.max(1);
        let mut kinds: Vec<Option<u8>> = vec![None; width];
        let mut bytes = Vec::with_capacity(rows * 32);
        let mut ends = Vec::with_capacity(rows);
        for row in keys.chunks(width) {
            for ((value, (_, asc)), kind) in row.iter().zip(order).zip(&mut kinds) {
                let start = bytes.len();
                let this = match &**value {
                    Value::Null => {
                        bytes.push(0);
                        None
                    }
                    Value::Bool(b) => {
                        bytes.extend([1, u8::from(*b)]);
                        Some(0)
                    }
                    Value::Number(n) => {
                        // IEEE 754 bits made to sort as the numbers do (-0 as 0).
                        let f = n.as_f64()?;
                        let bits = if f == 0.0 { 0.0f64 } else { f }.to_bits();
                        let bits = if bits >> 63 == 1 {
                            !bits
                        } else {
                            bits | 1 << 63
                        };
                        bytes.push(1);
                        bytes.extend(bits.to_be_bytes());
                        Some(1)
                    }
                    Value::String(text) if text.is_ascii() => {
                        // Lowercased; a NUL escaped as 00 FF, the end marked 00 00, so a
                        // prefix sorts first and no key is a prefix of another.
                        bytes.push(1);
                        if text.as_bytes().contains(&0) {
                            for b in text.bytes() {
                                match b {
                                    0 => bytes.extend([0, 0xFF]),
                                    b => bytes.push(b.to_ascii_lowercase()),
                                }
                            }
                        } else {
                            let from = bytes.len();
                            bytes.extend_from_slice(text.as_bytes());
                            bytes[from..].make_ascii_lowercase();
                        }
                        bytes.extend([0, 0]);
                        Some(2)
                    }
                    _ => return None,
                };
                match (this, *kind) {
                    (Some(t), None) => *kind = Some(t),
                    (Some(t), Some(k)) if t != k => return None,
                    _ => {}
                }
                if !asc {
                    bytes[start..].iter_mut().for_each(|b| *b = !*b);
                }
            }
            ends.push(bytes.len());
        }
        Some(SortKeys { bytes, ends, kinds })
    }

    /// The key of row `i`.
    fn key(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Row numbers in key order; rows with equal keys keep their order.
    fn sorted(&self) -> Vec<usize> {
        let mut entries: Vec<([u8; INLINE_KEY], usize)> = (0..self.ends.len())
            .map(|i| {
                let key = self.key(i);
                let mut inline = [0u8; INLINE_KEY];
                let n = key.len().min(INLINE_KEY);
                inline[..n].copy_from_slice(&key[..n]);
                (inline, i)
            })
            .collect();
        // Zero padding cannot misorder: no row's key is a prefix of another's.
        entries.sort_by(|(a, i), (b, j)| a.cmp(b).then_with(|| self.key(*i).cmp(self.key(*j))));
        entries.into_iter().map(|(_, i)| i).collect()
    }
}

/// One selected column, resolved once for every row: a field of the record itself (by
/// its API name) or a path through parent relationships.
#[derive(Debug, Clone)]
pub enum Column {
    /// A field of the queried object.
    Own(String),
    /// `Parent.Field` (any depth).
    Path(String),
}

impl Column {
    /// The columns of `fields` on `def` (already checked by [`select`]).
    pub fn plan(def: &ObjectDef, fields: &[String]) -> Vec<Column> {
        fields
            .iter()
            .map(|f| match (f.contains('.'), def.field(f)) {
                (false, Some(d)) => Column::Own(d.name.clone()),
                _ => Column::Path(f.clone()),
            })
            .collect()
    }

    /// The column's value on `r`.
    pub fn value<'r>(
        &self,
        org: &Org,
        def: &ObjectDef,
        r: &'r Fields,
    ) -> std::borrow::Cow<'r, Value> {
        const NULL: &Value = &Value::Null;
        match self {
            Column::Own(name) => std::borrow::Cow::Borrowed(r.get(name).unwrap_or(NULL)),
            Column::Path(path) => {
                std::borrow::Cow::Owned(resolve(org, def, path, Some(r)).unwrap_or(Value::Null))
            }
        }
    }
}

/// Reads rows' columns. A row's own fields are found by walking the row once, with what
/// the rows before it taught about where each field sits (rows mostly share one layout):
/// a key compared instead of a key hashed and looked up per column.
#[derive(Debug)]
pub struct RowReader {
    columns: Vec<Column>,
    /// Per position in a row: the field name seen there last, and the column it fills
    /// (`None`: not selected).
    layout: Vec<(String, Option<usize>)>,
    /// Which columns the walk of the current row filled.
    filled: Vec<bool>,
}

impl RowReader {
    /// A reader of `columns` (from [`Column::plan`]).
    pub fn new(columns: Vec<Column>) -> Self {
        RowReader {
            filled: vec![false; columns.len()],
            columns,
            layout: Vec::new(),
        }
    }

    /// Appends the values of row `r`'s columns, in column order, to `out`.
    pub fn read<'r>(
        &mut self,
        org: &Org,
        def: &ObjectDef,
        r: &'r Fields,
        out: &mut Vec<std::borrow::Cow<'r, Value>>,
    ) {
        const NULL: &Value = &Value::Null;
        let base = out.len();
        out.extend(std::iter::repeat_n(NULL, self.columns.len()).map(std::borrow::Cow::Borrowed));
        for (i, (name, value)) in r.iter().enumerate() {
            let known = self.layout.get(i).filter(|(seen, _)| seen == name);
            let column = match known {
                Some((_, column)) => *column,
                None => {
                    let column = self
                        .columns
                        .iter()
                        .position(|c| matches!(c, Column::Own(own) if own == name));
                    let entry = (name.clone(), column);
                    match self.layout.get_mut(i) {
                        Some(slot) => *slot = entry,
                        None => self.layout.push(entry),
                    }
                    column
                }
            };
            if let Some(c) = column {
                out[base + c] = std::borrow::Cow::Borrowed(value);
                self.filled[c] = true;
            }
        }
        for (c, column) in self.columns.iter().enumerate() {
            // Not filled by the walk: a path, a field the row lacks (null), or the same
            // field selected a second time.
            if !std::mem::take(&mut self.filled[c]) {
                out[base + c] = column.value(org, def, r);
            }
        }
    }
}

/// A record as the REST API returns it: `attributes` first, then the selected fields;
/// `Parent.Field` selections become nested parent records.
fn shape(
    org: &Org,
    def: &ObjectDef,
    r: &Fields,
    fields: &[String],
    version: &str,
) -> Result<Value, ApiError> {
    let id = r.get("Id").and_then(Value::as_str).unwrap_or_default();
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": def.name, "url": format!("/services/data/v{version}/sobjects/{}/{id}", def.name)}),
    );
    for f in fields {
        match f.split_once('.') {
            None => {
                let name = def.field(f).map_or(f.as_str(), |d| d.name.as_str());
                out.insert(name.to_owned(), r.get(name).cloned().unwrap_or(Value::Null));
            }
            Some((rel, rest)) => {
                let (ref_field, parent) = parent_of(org, def, rel, r)?;
                let slot = out
                    .entry(relationship_name(&ref_field))
                    .or_insert(Value::Null);
                if let Some((parent_def, parent)) = parent {
                    if slot.is_null() {
                        let pid = parent.get("Id").and_then(Value::as_str).unwrap_or_default();
                        *slot = json!({"attributes": {"type": parent_def.name, "url": format!("/services/data/v{version}/sobjects/{}/{pid}", parent_def.name)}});
                    }
                    let nested = shape(org, &parent_def, &parent, &[rest.to_owned()], version)?;
                    if let (Value::Object(slot), Value::Object(nested)) = (slot, nested) {
                        for (k, v) in nested {
                            if k != "attributes" {
                                merge(slot, k, v);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(Value::Object(out))
}

fn merge(into: &mut Map<String, Value>, k: String, v: Value) {
    match (into.get_mut(&k), v) {
        (Some(Value::Object(existing)), Value::Object(more)) => {
            for (k2, v2) in more {
                merge(existing, k2, v2);
            }
        }
        (_, v) => {
            into.insert(k, v);
        }
    }
}

/// `AccountId` → `Account`; `Matter__c` → `Matter__r`.
pub(crate) fn relationship_name(reference_field: &str) -> String {
    if let Some(base) = reference_field.strip_suffix("__c") {
        format!("{base}__r")
    } else {
        reference_field.trim_end_matches("Id").to_owned()
    }
}

/// The reference field behind relationship `rel` of `def`, and the parent record `r`
/// points to (if any).
fn parent_of(
    org: &Org,
    def: &ObjectDef,
    rel: &str,
    r: &Fields,
) -> Result<(String, Option<(ObjectDef, Fields)>), ApiError> {
    let field = def
        .fields
        .iter()
        .find(|f| f.field_type == "reference" && relationship_name(&f.name).eq_ignore_ascii_case(rel))
        .ok_or_else(|| malformed(format!("Didn't understand relationship '{rel}' in field path. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name.")))?;
    let parent = r
        .get(&field.name)
        .and_then(Value::as_str)
        .and_then(|id| org.get_any(id))
        .and_then(|(o, p)| org.object(o).map(|d| (d.clone(), p.clone())));
    Ok((field.name.clone(), parent))
}

/// The value of field path `path` on `r` (checking the path when `r` is `None`).
fn resolve(org: &Org, def: &ObjectDef, path: &str, r: Option<&Fields>) -> Result<Value, ApiError> {
    match path.split_once('.') {
        None => {
            let f = def
                .field(path)
                .ok_or_else(|| invalid_field(&def.name, path))?;
            Ok(r.and_then(|r| r.get(&f.name))
                .cloned()
                .unwrap_or(Value::Null))
        }
        Some((rel, rest)) => {
            let empty = Fields::new();
            let (_, parent) = parent_of(org, def, rel, r.unwrap_or(&empty))?;
            match (parent, r) {
                (Some((pd, p)), Some(_)) => resolve(org, &pd, rest, Some(&p)),
                (None, Some(_)) => Ok(Value::Null),
                (_, None) => {
                    // Check the path against the parent object's definition.
                    let field = def
                        .fields
                        .iter()
                        .find(|f| relationship_name(&f.name).eq_ignore_ascii_case(rel))
                        .and_then(|f| f.reference_to.first())
                        .and_then(|o| org.object(o))
                        .ok_or_else(|| {
                            malformed(format!("Didn't understand relationship '{rel}'"))
                        })?
                        .clone();
                    resolve(org, &field, rest, None)
                }
            }
        }
    }
}

pub(crate) fn matches(
    org: &Org,
    def: &ObjectDef,
    r: &Fields,
    p: &Predicate,
) -> Result<bool, ApiError> {
    Ok(match p {
        Predicate::And(all) => {
            for q in all {
                if !matches(org, def, r, q)? {
                    return Ok(false);
                }
            }
            true
        }
        Predicate::Or(any) => {
            for q in any {
                if matches(org, def, r, q)? {
                    return Ok(true);
                }
            }
            false
        }
        Predicate::Not(q) => !matches(org, def, r, q)?,
        Predicate::Compare { field, op, value } => {
            let v = resolve(org, def, field, Some(r))?;
            compare(&v, op, value)?
        }
        Predicate::In {
            field,
            negated,
            values,
        } => {
            let v = resolve(org, def, field, Some(r))?;
            let mut hit = false;
            for lit in values {
                if compare(&v, "=", lit)? {
                    hit = true;
                    break;
                }
            }
            hit != *negated
        }
        Predicate::Like { field, pattern } => {
            let v = resolve(org, def, field, Some(r))?;
            v.as_str().is_some_and(|s| like_matches(pattern, s))
        }
        Predicate::Includes {
            field,
            excludes,
            values,
        } => {
            let v = resolve(org, def, field, Some(r))?;
            let have: Vec<&str> = v
                .as_str()
                .map(|s| s.split(';').collect())
                .unwrap_or_default();
            let any = values.iter().any(|set| {
                set.split(';')
                    .all(|x| have.iter().any(|h| h.eq_ignore_ascii_case(x)))
            });
            any != *excludes
        }
    })
}

/// A literal as a JSON value comparable with stored values.
fn literal(lit: &Literal) -> Result<Value, ApiError> {
    Ok(match lit {
        Literal::Null => Value::Null,
        Literal::Bool(b) => Value::Bool(*b),
        Literal::Number(n) => n
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| malformed(format!("bad number {n}")))?,
        Literal::String(s) => Value::String(s.clone()),
        Literal::Date(d) => Value::String(d.clone()),
        Literal::DateTime(d) => {
            // SOQL writes `Z`, `±hh:mm` (and Salesforce's answers `±hhmm`); any year
            // Salesforce stores, 1700 to 4000.
            let t = chrono::DateTime::parse_from_rfc3339(d)
                .or_else(|_| chrono::DateTime::parse_from_str(d, "%Y-%m-%dT%H:%M:%S%.f%z"))
                .map_err(|_| malformed(format!("bad datetime {d}")))?;
            Value::String(
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%S%.3f+0000")
                    .to_string(),
            )
        }
        Literal::DateLiteral(name, n) => Value::String(date_literal(name, *n)?),
    })
}

/// The start of the range a date literal names, as a datetime (comparisons in this
/// sandbox treat `field >= LAST_N_DAYS:n` as "since n days ago at midnight UTC").
fn date_literal(name: &str, n: Option<u32>) -> Result<String, ApiError> {
    let day = 86_400u64;
    let now = SystemTime::now();
    let midnight = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| Duration::from_secs(d.as_secs() / day * day))
        .unwrap_or_default();
    let at = |days_back: i64| {
        let secs = i64::try_from(midnight.as_secs()).unwrap_or(0)
            - days_back * i64::try_from(day).unwrap_or(0);
        super::org::sf_datetime(
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)),
        )
    };
    let n = i64::from(n.unwrap_or(0));
    Ok(match name {
        "TODAY" => at(0),
        "YESTERDAY" => at(1),
        "TOMORROW" => at(-1),
        "LAST_N_DAYS" | "N_DAYS_AGO" => at(n),
        "NEXT_N_DAYS" => at(-n),
        "LAST_90_DAYS" => at(90),
        "LAST_WEEK" | "THIS_WEEK" => at(7),
        "LAST_MONTH" | "THIS_MONTH" => at(30),
        "LAST_YEAR" | "THIS_YEAR" => at(365),
        _ => {
            return Err(malformed(format!(
                "date literal {name} is not supported by the sandbox"
            )));
        }
    })
}

fn compare(v: &Value, op: &str, lit: &Literal) -> Result<bool, ApiError> {
    let l = literal(lit)?;
    if l.is_null() || v.is_null() {
        return Ok(match op {
            "=" => v.is_null() && l.is_null(),
            "!=" => v.is_null() != l.is_null(),
            _ => false,
        });
    }
    let o = cmp(v, &l);
    Ok(match op {
        "=" => o == Ordering::Equal,
        "!=" => o != Ordering::Equal,
        "<" => o == Ordering::Less,
        "<=" => o != Ordering::Greater,
        ">" => o == Ordering::Greater,
        ">=" => o != Ordering::Less,
        _ => return Err(malformed(format!("unknown operator {op}"))),
    })
}

/// Salesforce compares text case-insensitively; numbers by value; dates as text in
/// their fixed format.
fn cmp(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Null, _) => Ordering::Less,
        (_, Value::Null) => Ordering::Greater,
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(Ordering::Equal),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::String(x), Value::String(y)) if x == y => Ordering::Equal,
        (Value::String(x), Value::String(y)) if x.is_ascii() && y.is_ascii() => x
            .bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(y.bytes().map(|c| c.to_ascii_lowercase())),
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use serde_json::{Value, json};

    use proptest::prelude::*;

    use super::{Column, RowReader, SortKeys, cmp};
    use crate::org::{Fields, Org, standard_objects};

    /// Rows whose fields come in different orders, lack fields, or carry extra ones read
    /// the same as looking every column up by name.
    #[test]
    fn the_row_reader_reads_any_layout_like_a_lookup_by_name() {
        let org = Org::new(standard_objects());
        let def = org.object("Account").unwrap().clone();
        let fields: Vec<String> = ["Id", "Name", "Industry", "Id", "Parent.Name"]
            .map(String::from)
            .to_vec();
        let columns = Column::plan(&def, &fields);
        let rows: Vec<Fields> = [
            json!({"Id": "001A", "Name": "Acme", "Industry": "Legal", "Phone": "1"}),
            json!({"Id": "001B", "Name": "Bolt", "Industry": "Tech", "Phone": "2"}),
            json!({"Industry": "Energy", "Id": "001C", "Name": "Cog"}),
            json!({"Name": "Dune"}),
            json!({"Phone": "5", "Fax": "6", "Id": "001E", "Name": "Elm", "Industry": null}),
            json!({"Id": "001F", "Name": "Fir", "Industry": "Legal", "Phone": "7"}),
        ]
        .into_iter()
        .map(|v| v.as_object().unwrap().clone())
        .collect();
        let mut reader = RowReader::new(columns.clone());
        let mut read = Vec::new();
        for r in &rows {
            reader.read(&org, &def, r, &mut read);
        }
        let by_name: Vec<Cow<'_, Value>> = rows
            .iter()
            .flat_map(|r| columns.iter().map(|c| c.value(&org, &def, r)))
            .collect();
        assert_eq!(read, by_name);
        assert_eq!(read[2 * 5 + 1], Cow::Borrowed(&json!("Cog")));
        assert_eq!(read[3 * 5 + 3], Cow::Borrowed(&Value::Null));
        assert_eq!(read[4 * 5 + 3], Cow::Borrowed(&json!("001E")));
    }

    /// Values of one type per column (as a field's are), with the edge cases of the
    /// encoding: nulls, case variants, NULs, prefixes, negative numbers and zeros.
    fn column() -> impl Strategy<Value = Vec<Value>> {
        let text = prop::collection::vec(
            prop::option::of(prop::sample::select(vec![
                "", "a", "A", "ab", "aB", "a\0", "a\0b", "b", "Zed", "zed ", "001A", "001a",
            ])),
            40,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|t| t.map_or(Value::Null, |t| json!(t)))
                .collect()
        });
        let number = prop::collection::vec(
            prop::option::of(prop::sample::select(vec![
                -1e300, -2.5, -1.0, -0.0, 0.0, 0.5, 1.0, 3.0, 1e300,
            ])),
            40,
        )
        .prop_map(|v| {
            v.into_iter()
                .map(|n| n.map_or(Value::Null, |n| json!(n)))
                .collect()
        });
        let integer = prop::collection::vec(prop::option::of(-3i64..3), 40).prop_map(|v| {
            v.into_iter()
                .map(|n| n.map_or(Value::Null, |n| json!(n)))
                .collect()
        });
        let boolean = prop::collection::vec(prop::option::of(any::<bool>()), 40).prop_map(|v| {
            v.into_iter()
                .map(|b| b.map_or(Value::Null, |b| json!(b)))
                .collect()
        });
        prop_oneof![text, number, integer, boolean]
    }

    proptest! {
        /// Sorting by the encoded keys gives exactly the order (stable, ties kept in
        /// place) that comparing the values gives.
        #[test]
        fn encoded_sort_keys_order_rows_as_comparing_values_does(
            columns in prop::collection::vec((column(), any::<bool>()), 1..4),
        ) {
            let rows = 40;
            let order: Vec<(String, bool)> = columns
                .iter()
                .enumerate()
                .map(|(i, (_, asc))| (format!("F{i}"), *asc))
                .collect();
            let keys: Vec<Cow<'_, Value>> = (0..rows)
                .flat_map(|r| columns.iter().map(move |(values, _)| Cow::Borrowed(&values[r])))
                .collect();
            let width = order.len();
            let mut expected: Vec<usize> = (0..rows).collect();
            expected.sort_by(|&a, &b| {
                for (i, (_, asc)) in order.iter().enumerate() {
                    let o = cmp(&keys[a * width + i], &keys[b * width + i]);
                    let o = if *asc { o } else { o.reverse() };
                    if o.is_ne() {
                        return o;
                    }
                }
                std::cmp::Ordering::Equal
            });
            let encoded = SortKeys::encode(&keys, &order).expect("encodable");
            prop_assert_eq!(encoded.sorted(), expected);
        }
    }

    #[test]
    fn keys_without_an_encoding_are_left_to_the_value_comparison() {
        let order = vec![("F".to_owned(), true)];
        for values in [
            vec![json!("é"), json!("e")],
            vec![json!("1"), json!(1)],
            vec![json!([1]), json!([2])],
        ] {
            let keys: Vec<Cow<'_, Value>> = values.iter().map(Cow::Borrowed).collect();
            assert!(SortKeys::encode(&keys, &order).is_none(), "{values:?}");
        }
    }

    /// Keys read and encoded in parts on several threads are the keys encoded in one
    /// pass; a column whose kind differs between parts has no encoding, as in one pass.
    #[test]
    fn sort_keys_encoded_in_parts_are_the_keys_encoded_whole() {
        let org = Org::new(standard_objects());
        let def = org.object("Account").unwrap().clone();
        let order = vec![
            ("AnnualRevenue".to_owned(), false),
            ("Name".to_owned(), true),
        ];
        let names: Vec<String> = order.iter().map(|(f, _)| f.clone()).collect();
        let columns = Column::plan(&def, &names);
        let whole = |rows: &[&Fields]| {
            let mut reader = RowReader::new(columns.clone());
            let mut keys = Vec::new();
            for r in rows {
                reader.read(&org, &def, r, &mut keys);
            }
            SortKeys::encode(&keys, &order).map(|k| (k.bytes.clone(), k.ends.clone(), k.sorted()))
        };
        let mut rows: Vec<Fields> = (0..23)
            .map(|i| {
                let revenue = if i % 5 == 0 {
                    Value::Null
                } else {
                    json!(i % 4)
                };
                json!({"Name": format!("Firm {}", 23 - i), "AnnualRevenue": revenue})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect();
        let refs: Vec<&Fields> = rows.iter().collect();
        let parts = SortKeys::of_rows(&org, &def, &columns, &refs, &order, 3, 3)
            .map(|k| (k.bytes.clone(), k.ends.clone(), k.sorted()));
        assert!(parts.is_some());
        assert_eq!(parts, whole(&refs));
        // Text revenues in the last part (rows 16 to 22) only: the column mixes kinds
        // across parts, while each part is of one kind.
        for row in &mut rows[16..] {
            row.insert("AnnualRevenue".into(), json!("many"));
        }
        let refs: Vec<&Fields> = rows.iter().collect();
        assert!(whole(&refs).is_none());
        assert!(SortKeys::of_rows(&org, &def, &columns, &refs, &order, 3, 3).is_none());
    }
}
