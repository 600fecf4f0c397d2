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
        let mut keyed: Vec<(Vec<Value>, &Fields)> = rows
            .into_iter()
            .map(|r| {
                let keys = columns
                    .iter()
                    .map(|c| c.value(org, &def, r).into_owned())
                    .collect();
                (keys, r)
            })
            .collect();
        keyed.sort_by(|(a, _), (b, _)| {
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
        rows = keyed.into_iter().map(|(_, r)| r).collect();
    }
    let offset = usize::try_from(q.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    let limit = q
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let rows = rows.into_iter().skip(offset).take(limit).collect();
    Ok((def, rows))
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
            let t = humantime::parse_rfc3339_weak(&d.replace("+0000", "Z").replace("+00:00", "Z"))
                .or_else(|_| humantime::parse_rfc3339(d))
                .map_err(|_| malformed(format!("bad datetime {d}")))?;
            Value::String(super::org::sf_datetime(t))
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
        (Value::String(x), Value::String(y)) if x.is_ascii() && y.is_ascii() => x
            .bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(y.bytes().map(|c| c.to_ascii_lowercase())),
        (Value::String(x), Value::String(y)) => x.to_lowercase().cmp(&y.to_lowercase()),
        _ => a.to_string().cmp(&b.to_string()),
    }
}
