//! A typed SOQL builder. Every value is escaped by the SOQL rules and every name is
//! checked, so user input can never change a query's structure.
//!
//! ```
//! use connector_salesforce::soql::{DateLiteral, Like, Order, Soql, field};
//!
//! let q = Soql::select(["Id", "Subject", "Account.Name"])
//!     .from("Case")
//!     .filter(
//!         field("Subject").like(Like::contains("O'Brien 50%"))
//!             .and(field("CreatedDate").ge(DateLiteral::LastNDays(30)))
//!             .and(field("Status").is_in(["New", "Working"])),
//!     )
//!     .order_by("CreatedDate", Order::Desc)
//!     .limit(100)
//!     .build()
//!     .unwrap();
//! assert_eq!(
//!     q,
//!     "SELECT Id, Subject, Account.Name FROM Case WHERE Subject LIKE '%O\\'Brien 50\\%%' \
//!      AND CreatedDate >= LAST_N_DAYS:30 AND Status IN ('New', 'Working') \
//!      ORDER BY CreatedDate DESC LIMIT 100"
//! );
//! ```

pub(crate) mod check;
mod escape;
mod sosl;

pub use escape::{escape_like, escape_string, quote};
pub use sosl::{SOSL_RESERVED, SearchScope, Sosl, escape_sosl};

use std::fmt::Write as _;
use std::time::SystemTime;

use moodbridge_core::{Error, Result};

/// A value in a condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A number (finite).
    Number(f64),
    /// Text, escaped and quoted.
    String(String),
    /// A calendar date `YYYY-MM-DD`.
    Date {
        /// Year.
        year: u16,
        /// Month, 1–12.
        month: u8,
        /// Day, 1–31.
        day: u8,
    },
    /// A point in time, rendered `YYYY-MM-DDThh:mm:ssZ` (UTC), with `.sss` milliseconds
    /// when it has a fraction of a second.
    DateTime(SystemTime),
    /// A relative date such as `LAST_N_DAYS:30`.
    DateLiteral(DateLiteral),
}

impl Value {
    fn render(&self, out: &mut String) -> Result<()> {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Number(f) => {
                if !f.is_finite() {
                    return Err(
                        Error::invalid_input(format!("{f} cannot be written in SOQL"))
                            .with_hint("use a finite number"),
                    );
                }
                let _ = write!(out, "{f}");
            }
            Value::String(s) => out.push_str(&quote(s)),
            Value::Date { year, month, day } => {
                if !(1..=12).contains(month) || !(1..=31).contains(day) {
                    return Err(Error::invalid_input(format!(
                        "{year:04}-{month:02}-{day:02} is not a date"
                    )));
                }
                let _ = write!(out, "{year:04}-{month:02}-{day:02}");
            }
            Value::DateTime(t) => out.push_str(&datetime_literal(*t)?),
            Value::DateLiteral(d) => d.render(out),
        }
        Ok(())
    }
}

/// The earliest datetime Salesforce stores: 1700-01-01T00:00:00Z.
const EARLIEST_DATETIME: i64 = -8_520_336_000;
/// The latest datetime Salesforce stores: 4000-12-31T00:00:00Z.
const LATEST_DATETIME: i64 = 64_092_124_800;

/// `t` as a SOQL datetime literal (UTC; milliseconds when it has a fraction of a second),
/// or `InvalidInput` when Salesforce cannot store it (before 1700-01-01T00:00:00Z or after
/// 4000-12-31T00:00:00Z, Salesforce's documented range).
fn datetime_literal(t: SystemTime) -> Result<String> {
    // Whole seconds and nanoseconds since the epoch, before it too.
    let (secs, nanos) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (i64::try_from(d.as_secs()).ok(), d.subsec_nanos()),
        Err(before) => {
            let d = before.duration();
            let whole = i64::try_from(d.as_secs()).ok().map(|s| -s);
            match d.subsec_nanos() {
                0 => (whole, 0),
                n => (whole.and_then(|s| s.checked_sub(1)), 1_000_000_000 - n),
            }
        }
    };
    let at = secs
        .filter(|s| (EARLIEST_DATETIME..=LATEST_DATETIME).contains(s))
        .filter(|s| *s < LATEST_DATETIME || nanos == 0)
        .and_then(|s| chrono::DateTime::from_timestamp(s, nanos));
    let Some(at) = at else {
        let shown = secs.map_or_else(
            || "a time beyond any calendar".to_owned(),
            |s| format!("{s} s from 1970-01-01T00:00:00Z"),
        );
        return Err(Error::invalid_input(format!(
            "{shown} cannot be written in SOQL: Salesforce stores datetimes from 1700-01-01T00:00:00Z to 4000-12-31T00:00:00Z"
        ))
        .with_hint("clamp the value to that range, or leave the condition out"));
    };
    Ok(if nanos == 0 {
        at.format("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
    })
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<i32> for Value {
    fn from(i: i32) -> Self {
        Value::Int(i64::from(i))
    }
}
impl From<f64> for Value {
    fn from(f: f64) -> Self {
        Value::Number(f)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<SystemTime> for Value {
    fn from(t: SystemTime) -> Self {
        Value::DateTime(t)
    }
}
impl From<DateLiteral> for Value {
    fn from(d: DateLiteral) -> Self {
        Value::DateLiteral(d)
    }
}

/// SOQL's relative date literals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    missing_docs,
    reason = "each variant is the SOQL literal of the same name"
)]
pub enum DateLiteral {
    Yesterday,
    Today,
    Tomorrow,
    LastWeek,
    ThisWeek,
    NextWeek,
    LastMonth,
    ThisMonth,
    NextMonth,
    Last90Days,
    Next90Days,
    LastQuarter,
    ThisQuarter,
    NextQuarter,
    LastYear,
    ThisYear,
    NextYear,
    LastNDays(u32),
    NextNDays(u32),
    NDaysAgo(u32),
    LastNWeeks(u32),
    NextNWeeks(u32),
    NWeeksAgo(u32),
    LastNMonths(u32),
    NextNMonths(u32),
    NMonthsAgo(u32),
    LastNQuarters(u32),
    NextNQuarters(u32),
    NQuartersAgo(u32),
    LastNYears(u32),
    NextNYears(u32),
    NYearsAgo(u32),
}

impl DateLiteral {
    fn render(self, out: &mut String) {
        use DateLiteral::*;
        let (name, n) = match self {
            Yesterday => ("YESTERDAY", None),
            Today => ("TODAY", None),
            Tomorrow => ("TOMORROW", None),
            LastWeek => ("LAST_WEEK", None),
            ThisWeek => ("THIS_WEEK", None),
            NextWeek => ("NEXT_WEEK", None),
            LastMonth => ("LAST_MONTH", None),
            ThisMonth => ("THIS_MONTH", None),
            NextMonth => ("NEXT_MONTH", None),
            Last90Days => ("LAST_90_DAYS", None),
            Next90Days => ("NEXT_90_DAYS", None),
            LastQuarter => ("LAST_QUARTER", None),
            ThisQuarter => ("THIS_QUARTER", None),
            NextQuarter => ("NEXT_QUARTER", None),
            LastYear => ("LAST_YEAR", None),
            ThisYear => ("THIS_YEAR", None),
            NextYear => ("NEXT_YEAR", None),
            LastNDays(n) => ("LAST_N_DAYS", Some(n)),
            NextNDays(n) => ("NEXT_N_DAYS", Some(n)),
            NDaysAgo(n) => ("N_DAYS_AGO", Some(n)),
            LastNWeeks(n) => ("LAST_N_WEEKS", Some(n)),
            NextNWeeks(n) => ("NEXT_N_WEEKS", Some(n)),
            NWeeksAgo(n) => ("N_WEEKS_AGO", Some(n)),
            LastNMonths(n) => ("LAST_N_MONTHS", Some(n)),
            NextNMonths(n) => ("NEXT_N_MONTHS", Some(n)),
            NMonthsAgo(n) => ("N_MONTHS_AGO", Some(n)),
            LastNQuarters(n) => ("LAST_N_QUARTERS", Some(n)),
            NextNQuarters(n) => ("NEXT_N_QUARTERS", Some(n)),
            NQuartersAgo(n) => ("N_QUARTERS_AGO", Some(n)),
            LastNYears(n) => ("LAST_N_YEARS", Some(n)),
            NextNYears(n) => ("NEXT_N_YEARS", Some(n)),
            NYearsAgo(n) => ("N_YEARS_AGO", Some(n)),
        };
        out.push_str(name);
        if let Some(n) = n {
            let _ = write!(out, ":{n}");
        }
    }
}

/// A `LIKE` pattern: text matched literally (its `%`, `_`, quotes and backslashes
/// escaped), placed by the constructor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Like(String);

impl Like {
    /// Values containing `text`.
    pub fn contains(text: &str) -> Like {
        Like(format!("%{}%", escape_like(text)))
    }
    /// Values starting with `text`.
    pub fn starts_with(text: &str) -> Like {
        Like(format!("{}%", escape_like(text)))
    }
    /// Values ending with `text`.
    pub fn ends_with(text: &str) -> Like {
        Like(format!("%{}", escape_like(text)))
    }
    /// Values equal to `text` (case-insensitive, as LIKE is).
    pub fn exactly(text: &str) -> Like {
        Like(escape_like(text))
    }
    /// A pattern whose `%` and `_` are wildcards (written by the program, not taken from
    /// users); quotes and backslashes are still escaped.
    pub fn wildcards(pattern: &str) -> Like {
        Like(escape_string(pattern))
    }
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A `WHERE` condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `field op value`.
    #[doc(hidden)]
    Compare(String, &'static str, Value),
    /// `field [NOT] IN (values)`.
    #[doc(hidden)]
    In(String, bool, Vec<Value>),
    /// `field LIKE 'pattern'`.
    #[doc(hidden)]
    Like(String, Like),
    /// `field INCLUDES|EXCLUDES ('a;b', 'c')` (multi-select picklists).
    #[doc(hidden)]
    Includes(String, bool, Vec<String>),
    /// All of these.
    And(Vec<Condition>),
    /// Any of these.
    Or(Vec<Condition>),
    /// Not this.
    Not(Box<Condition>),
}

impl Condition {
    /// `self AND other`.
    #[must_use]
    pub fn and(self, other: Condition) -> Condition {
        match self {
            Condition::And(mut all) => {
                all.push(other);
                Condition::And(all)
            }
            one => Condition::And(vec![one, other]),
        }
    }

    /// `self OR other`.
    #[must_use]
    pub fn or(self, other: Condition) -> Condition {
        match self {
            Condition::Or(mut any) => {
                any.push(other);
                Condition::Or(any)
            }
            one => Condition::Or(vec![one, other]),
        }
    }

    fn render(&self, out: &mut String) -> Result<()> {
        match self {
            Condition::Compare(f, op, v) => {
                check_field(f)?;
                let _ = write!(out, "{f} {op} ");
                v.render(out)?;
            }
            Condition::In(f, negated, values) => {
                check_field(f)?;
                if values.is_empty() {
                    return Err(Error::invalid_input(format!("IN list of {f} is empty"))
                        .with_hint("give at least one value, or leave the condition out"));
                }
                let _ = write!(out, "{f} {}IN (", if *negated { "NOT " } else { "" });
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.render(out)?;
                }
                out.push(')');
            }
            Condition::Like(f, Like(pattern)) => {
                check_field(f)?;
                let _ = write!(out, "{f} LIKE '{pattern}'");
            }
            Condition::Includes(f, excludes, values) => {
                check_field(f)?;
                if values.is_empty() {
                    return Err(Error::invalid_input(format!(
                        "INCLUDES list of {f} is empty"
                    )));
                }
                let _ = write!(
                    out,
                    "{f} {} (",
                    if *excludes { "EXCLUDES" } else { "INCLUDES" }
                );
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    out.push_str(&quote(v));
                }
                out.push(')');
            }
            Condition::And(all) | Condition::Or(all) => {
                let joiner = if matches!(self, Condition::And(_)) {
                    " AND "
                } else {
                    " OR "
                };
                for (i, c) in all.iter().enumerate() {
                    if i > 0 {
                        out.push_str(joiner);
                    }
                    // Parenthesise a nested group of the other kind (SOQL requires it
                    // when AND and OR are mixed).
                    let group = matches!(
                        (self, c),
                        (Condition::And(_), Condition::Or(_))
                            | (Condition::Or(_), Condition::And(_))
                    );
                    if group {
                        out.push('(');
                    }
                    c.render(out)?;
                    if group {
                        out.push(')');
                    }
                }
            }
            Condition::Not(c) => {
                out.push_str("NOT (");
                c.render(out)?;
                out.push(')');
            }
        }
        Ok(())
    }
}

/// `!condition` is `NOT (condition)`.
///
/// ```
/// use connector_salesforce::soql::{Soql, field};
/// let q = Soql::select(["Id"]).from("Case").filter(!field("IsClosed").eq(true)).build().unwrap();
/// assert_eq!(q, "SELECT Id FROM Case WHERE NOT (IsClosed = true)");
/// ```
impl std::ops::Not for Condition {
    type Output = Condition;

    fn not(self) -> Condition {
        Condition::Not(Box::new(self))
    }
}

/// The start of a condition on `name` (a field, or a relationship path such as
/// `Account.Owner.Name`).
pub fn field(name: &str) -> FieldRef {
    FieldRef(name.to_owned())
}

/// A field in a condition; see [`field`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRef(String);

impl FieldRef {
    fn cmp(self, op: Op, v: impl Into<Value>) -> Condition {
        Condition::Compare(self.0, op.as_str(), v.into())
    }
    /// `= v`.
    pub fn eq(self, v: impl Into<Value>) -> Condition {
        self.cmp(Op::Eq, v)
    }
    /// `!= v`.
    pub fn ne(self, v: impl Into<Value>) -> Condition {
        self.cmp(Op::Ne, v)
    }
    /// `< v`.
    pub fn lt(self, v: impl Into<Value>) -> Condition {
        self.cmp(Op::Lt, v)
    }
    /// `<= v`.
    pub fn le(self, v: impl Into<Value>) -> Condition {
        self.cmp(Op::Le, v)
    }
    /// `> v`.
    pub fn gt(self, v: impl Into<Value>) -> Condition {
        self.cmp(Op::Gt, v)
    }
    /// `>= v`.
    pub fn ge(self, v: impl Into<Value>) -> Condition {
        self.cmp(Op::Ge, v)
    }
    /// `IN (values)`.
    pub fn is_in<V: Into<Value>>(self, values: impl IntoIterator<Item = V>) -> Condition {
        Condition::In(self.0, false, values.into_iter().map(Into::into).collect())
    }
    /// `NOT IN (values)`.
    pub fn not_in<V: Into<Value>>(self, values: impl IntoIterator<Item = V>) -> Condition {
        Condition::In(self.0, true, values.into_iter().map(Into::into).collect())
    }
    /// `LIKE pattern`.
    pub fn like(self, pattern: Like) -> Condition {
        Condition::Like(self.0, pattern)
    }
    /// `INCLUDES (values)` — a multi-select picklist holding any of them (a value may
    /// itself be `'a;b'`: both).
    pub fn includes<S: Into<String>>(self, values: impl IntoIterator<Item = S>) -> Condition {
        Condition::Includes(self.0, false, values.into_iter().map(Into::into).collect())
    }
    /// `EXCLUDES (values)`.
    pub fn excludes<S: Into<String>>(self, values: impl IntoIterator<Item = S>) -> Condition {
        Condition::Includes(self.0, true, values.into_iter().map(Into::into).collect())
    }
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Ascending.
    Asc,
    /// Descending.
    Desc,
}

/// `FOR UPDATE` (lock the rows; Apex only, no `ORDER BY`) or `ALL ROWS` (include
/// deleted and archived records; for `queryAll`-like reads in Apex).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `FOR UPDATE`.
    ForUpdate,
    /// `ALL ROWS`.
    AllRows,
}

/// A query being built; see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Soql {
    count: bool,
    fields: Vec<String>,
    object: String,
    filter: Option<Condition>,
    order: Vec<(String, Order)>,
    limit: Option<u32>,
    offset: Option<u32>,
    scope: Option<Scope>,
}

impl Soql {
    /// `SELECT fields`.
    pub fn select<S: Into<String>>(fields: impl IntoIterator<Item = S>) -> Soql {
        Soql {
            count: false,
            fields: fields.into_iter().map(Into::into).collect(),
            object: String::new(),
            filter: None,
            order: Vec::new(),
            limit: None,
            offset: None,
            scope: None,
        }
    }

    /// `SELECT COUNT()`: the query answers only how many records match (the REST answer's
    /// `totalSize`).
    ///
    /// ```
    /// use connector_salesforce::soql::{Soql, field};
    /// let q = Soql::count().from("Case").filter(field("IsClosed").eq(false)).build().unwrap();
    /// assert_eq!(q, "SELECT COUNT() FROM Case WHERE IsClosed = false");
    /// ```
    pub fn count() -> Soql {
        let mut q = Soql::select(Vec::<String>::new());
        q.count = true;
        q
    }

    /// `FROM object`.
    #[must_use]
    pub fn from(mut self, object: &str) -> Soql {
        object.clone_into(&mut self.object);
        self
    }

    /// `WHERE condition` (a second call ANDs the conditions).
    #[must_use]
    pub fn filter(mut self, condition: Condition) -> Soql {
        self.filter = Some(match self.filter.take() {
            Some(existing) => existing.and(condition),
            None => condition,
        });
        self
    }

    /// `ORDER BY field direction` (calls add keys).
    #[must_use]
    pub fn order_by(mut self, field: &str, order: Order) -> Soql {
        self.order.push((field.to_owned(), order));
        self
    }

    /// `LIMIT n`.
    #[must_use]
    pub fn limit(mut self, n: u32) -> Soql {
        self.limit = Some(n);
        self
    }

    /// `OFFSET n` (Salesforce allows at most 2,000).
    #[must_use]
    pub fn offset(mut self, n: u32) -> Soql {
        self.offset = Some(n);
        self
    }

    /// `FOR UPDATE` or `ALL ROWS`.
    #[must_use]
    pub fn scope(mut self, scope: Scope) -> Soql {
        self.scope = Some(scope);
        self
    }

    /// The query text, or an `InvalidInput` error naming what is wrong (a bad name, an
    /// empty list, an offset over 2,000, `FOR UPDATE` with `ORDER BY`, a value SOQL cannot
    /// write, a statement over [`MAX_SOQL_CHARS`]).
    pub fn build(&self) -> Result<String> {
        if self.fields.is_empty() && !self.count {
            return Err(Error::invalid_input(
                "a SOQL query needs at least one field",
            ));
        }
        check_object(&self.object)?;
        let mut out = String::from("SELECT ");
        if self.count {
            out.push_str("COUNT()");
        }
        for (i, f) in self.fields.iter().enumerate() {
            check_field(f)?;
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(f);
        }
        let _ = write!(out, " FROM {}", self.object);
        if let Some(c) = &self.filter {
            out.push_str(" WHERE ");
            c.render(&mut out)?;
        }
        if !self.order.is_empty() {
            if self.scope == Some(Scope::ForUpdate) {
                return Err(
                    Error::invalid_input("FOR UPDATE cannot be combined with ORDER BY")
                        .with_hint("drop the ORDER BY, or the FOR UPDATE"),
                );
            }
            out.push_str(" ORDER BY ");
            for (i, (f, o)) in self.order.iter().enumerate() {
                check_field(f)?;
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, "{f} {}", if *o == Order::Asc { "ASC" } else { "DESC" });
            }
        }
        if let Some(n) = self.limit {
            let _ = write!(out, " LIMIT {n}");
        }
        if let Some(n) = self.offset {
            if n > 2_000 {
                return Err(Error::invalid_input(format!(
                    "OFFSET {n} is over Salesforce's maximum of 2,000"
                ))
                .with_hint(
                    "page with queryMore (nextRecordsUrl) or a WHERE on the sort key instead",
                ));
            }
            let _ = write!(out, " OFFSET {n}");
        }
        match self.scope {
            Some(Scope::ForUpdate) => out.push_str(" FOR UPDATE"),
            Some(Scope::AllRows) => out.push_str(" ALL ROWS"),
            None => {}
        }
        let length = out.chars().count();
        if length > MAX_SOQL_CHARS {
            return Err(Error::invalid_input(format!(
                "this query is {length} characters: a SOQL statement is at most {MAX_SOQL_CHARS}"
            ))
            .with_hint("split a long IN list into several queries of fewer values"));
        }
        Ok(out)
    }
}

/// Characters of one SOQL statement, at most (Salesforce's default limit).
pub const MAX_SOQL_CHARS: usize = 100_000;

fn is_name(segment: &str) -> bool {
    let mut chars = segment.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A field name or relationship path: `Name`, `Custom__c`, `Account.Owner.Name`.
fn check_field(name: &str) -> Result<()> {
    if !name.is_empty() && name.split('.').all(is_name) {
        Ok(())
    } else {
        Err(Error::invalid_input(format!("{name:?} is not a valid SOQL field name"))
            .with_hint("use API names: letters, digits and underscores, starting with a letter; relationships joined by dots"))
    }
}

fn check_object(name: &str) -> Result<()> {
    if is_name(name) {
        Ok(())
    } else {
        Err(
            Error::invalid_input(format!("{name:?} is not a valid sObject name"))
                .with_hint("use the object's API name, e.g. Account or Matter__c"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_soql_literals() {
        let q = Soql::select(["Id"])
            .from("Opportunity")
            .filter(
                field("Amount")
                    .gt(1_000)
                    .and(field("IsClosed").eq(false))
                    .and(field("CloseDate").le(Value::Date {
                        year: 2026,
                        month: 11,
                        day: 30,
                    }))
                    .and(
                        field("LastModifiedDate")
                            .ge(std::time::UNIX_EPOCH
                                + std::time::Duration::from_secs(1_763_600_000)),
                    )
                    .and(field("Probability").ne(Value::Null))
                    .and(field("Ratio__c").lt(0.5)),
            )
            .build()
            .unwrap_or_default();
        assert_eq!(
            q,
            "SELECT Id FROM Opportunity WHERE Amount > 1000 AND IsClosed = false \
             AND CloseDate <= 2026-11-30 AND LastModifiedDate >= 2025-11-20T00:53:20Z \
             AND Probability != null AND Ratio__c < 0.5"
        );
    }

    #[test]
    fn mixed_and_or_are_grouped_and_not_wraps() {
        let q = Soql::select(["Id"])
            .from("Case")
            .filter(
                field("Status")
                    .eq("New")
                    .or(field("Priority").eq("High"))
                    .and(!field("Subject").like(Like::starts_with("Re:"))),
            )
            .build()
            .unwrap_or_default();
        assert_eq!(
            q,
            "SELECT Id FROM Case WHERE (Status = 'New' OR Priority = 'High') AND NOT (Subject LIKE 'Re:%')"
        );
    }

    #[test]
    fn picklists_scope_order_limit_offset() {
        let q = Soql::select(["Id", "Owner.Name"])
            .from("Matter__c")
            .filter(field("Areas__c").includes(["Tax;Labor", "IP"]))
            .order_by("Name", Order::Asc)
            .order_by("CreatedDate", Order::Desc)
            .limit(50)
            .offset(100)
            .scope(Scope::AllRows)
            .build()
            .unwrap_or_default();
        assert_eq!(
            q,
            "SELECT Id, Owner.Name FROM Matter__c WHERE Areas__c INCLUDES ('Tax;Labor', 'IP') \
             ORDER BY Name ASC, CreatedDate DESC LIMIT 50 OFFSET 100 ALL ROWS"
        );
    }

    #[test]
    fn bad_names_and_shapes_are_refused_before_any_query_exists() {
        let refused = [
            Soql::select(["Id; DELETE"]).from("Account"),
            Soql::select(["Id"]).from("Account WHERE 1=1"),
            Soql::select(["Id"])
                .from("Account")
                .filter(field("Name) OR (Id").eq("x")),
            Soql::select(["Id"])
                .from("Account")
                .filter(field("Id").is_in(Vec::<String>::new())),
            Soql::select(["Id"]).from("Account").offset(2_001),
            Soql::select(["Id"])
                .from("Account")
                .order_by("Name", Order::Asc)
                .scope(Scope::ForUpdate),
            Soql::select(Vec::<String>::new()).from("Account"),
            Soql::select(["Id"])
                .from("Account")
                .filter(field("Amount").gt(f64::NAN)),
        ];
        for q in refused {
            let err = q.build().expect_err("must be refused");
            assert_eq!(
                err.kind(),
                moodbridge_core::ErrorKind::InvalidInput,
                "{err}"
            );
        }
    }

    #[test]
    fn date_literals_render_with_their_count() {
        let q = Soql::select(["Id"])
            .from("Case")
            .filter(
                field("CreatedDate")
                    .eq(DateLiteral::Today)
                    .or(field("ClosedDate").lt(DateLiteral::NDaysAgo(7))),
            )
            .build()
            .unwrap_or_default();
        assert!(
            q.ends_with("CreatedDate = TODAY OR ClosedDate < N_DAYS_AGO:7"),
            "{q}"
        );
    }
}
