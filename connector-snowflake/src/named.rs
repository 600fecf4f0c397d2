//! Named binds (`:name`) turned into the positional `?` binds Snowflake takes: each
//! occurrence of a name becomes a `?`, its value bound again at that position.
//!
//! The text is scanned as SQL: string literals (`'…'`, `$$…$$`), quoted identifiers,
//! comments and `::` casts are left alone, and so is a `:` right after a name, a quote
//! or a bracket — Snowflake's path into a `VARIANT` (`payload:status`). A bind is a `:`
//! at the start, or after a space, an opening parenthesis, a comma or an operator.
//!
//! ```
//! use connector_snowflake::{Bind, named};
//!
//! let (sql, binds) = named::positional(
//!     "SELECT v:status FROM CASES WHERE OWNER = :owner OR CREATOR = :owner AND NOTE <> ':owner' AND N > :min::NUMBER",
//!     &[("owner", Bind::text("005A")), ("min", Bind::fixed(3))],
//! )
//! .unwrap();
//! assert_eq!(
//!     sql,
//!     "SELECT v:status FROM CASES WHERE OWNER = ? OR CREATOR = ? AND NOTE <> ':owner' AND N > ?::NUMBER"
//! );
//! assert_eq!(binds.len(), 3);
//! ```

use moodbridge_core::{Error, Result};

use crate::PLATFORM;
use crate::bind::Bind;

/// `sql` scanned: the text with each named bind replaced by `?`, the names in order of
/// appearance (repeats included), and how many `?` binds it had already.
fn scan(sql: &str) -> (String, Vec<String>, usize) {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = String::with_capacity(sql.len());
    let mut names = Vec::new();
    let mut qmarks = 0;
    let mut i = 0;
    let ident_start = |c: char| c.is_ascii_alphabetic() || c == '_';
    let ident_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '$';
    // The end of a span opened at `from`, closed by `close` (or the end of the text).
    let span_end = |from: usize, close: &[char]| -> usize {
        let mut j = from;
        while j < chars.len() {
            if chars[j..].starts_with(close) {
                return j + close.len();
            }
            // A backslash escapes the next character inside a string literal.
            if close == ['\''] && chars[j] == '\\' {
                j += 1;
            }
            j += 1;
        }
        chars.len()
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let end = match (c, next) {
            ('\'', _) => Some(span_end(i + 1, &['\''])),
            ('"', _) => Some(span_end(i + 1, &['"'])),
            ('$', Some('$')) => Some(span_end(i + 2, &['$', '$'])),
            ('-', Some('-')) => Some(span_end(i + 2, &['\n'])),
            ('/', Some('*')) => Some(span_end(i + 2, &['*', '/'])),
            (':', Some(':')) => Some(i + 2),
            _ => None,
        };
        if let Some(end) = end {
            out.extend(&chars[i..end]);
            i = end;
            continue;
        }
        let bind_here = c == ':'
            && next.is_some_and(ident_start)
            && (i == 0 || chars[i - 1].is_whitespace() || "(,=<>+-*/|%!".contains(chars[i - 1]));
        if bind_here {
            let start = i + 1;
            let mut end = start;
            while end < chars.len() && ident_char(chars[end]) {
                end += 1;
            }
            names.push(chars[start..end].iter().collect());
            out.push('?');
            i = end;
            continue;
        }
        if c == '?' {
            qmarks += 1;
        }
        out.push(c);
        i += 1;
    }
    (out, names, qmarks)
}

/// `sql` with named binds made positional, and the values in the order the `?`s need
/// them. Names match case-insensitively.
///
/// # Errors
/// [`InvalidInput`](moodbridge_core::ErrorKind::InvalidInput): a name the text uses
/// but `binds` does not give, or one `binds` gives that the text never uses (a typo
/// either side), listed together; or `?` binds mixed with named ones.
pub fn positional(sql: &str, binds: &[(&str, Bind)]) -> Result<(String, Vec<Bind>)> {
    let (text, names, qmarks) = scan(sql);
    if qmarks > 0 {
        return Err(Error::invalid_input(format!(
            "the statement has {qmarks} ? bind(s) besides its named ones"
        ))
        .with_connector(PLATFORM)
        .with_hint("use one style of bind per statement"));
    }
    let find = |name: &str| binds.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut problems = Vec::new();
    let mut missing: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| find(n).is_none())
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        problems.push(format!("no value for :{}", missing.join(", :")));
    }
    let unused: Vec<&str> = binds
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !names.iter().any(|used| used.eq_ignore_ascii_case(n)))
        .collect();
    if !unused.is_empty() {
        problems.push(format!(
            "values for names the statement does not bind ({})",
            unused.join(", ")
        ));
    }
    if !problems.is_empty() {
        return Err(Error::invalid_input(problems.join("; "))
            .with_connector(PLATFORM)
            .with_hint(
                "give exactly the names the statement binds (a VARIANT path such as v:name is not a bind)",
            ));
    }
    let values = names
        .iter()
        .filter_map(|n| find(n).map(|(_, b)| b.clone()))
        .collect();
    Ok((text, values))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn only_binds_are_replaced() {
        let (sql, names, qmarks) = scan(
            "select $$ :a $$, ':b', \"c:d\", e:f, x::int /* :g */ -- :h\n from t where y=:i and z in (:j,:J)",
        );
        assert_eq!(
            sql,
            "select $$ :a $$, ':b', \"c:d\", e:f, x::int /* :g */ -- :h\n from t where y=? and z in (?,?)"
        );
        assert_eq!(names, ["i", "j", "J"]);
        assert_eq!(qmarks, 0);
        let (sql, ..) = scan(r"select 'it\'s :x' from t where a = :y");
        assert_eq!(sql, r"select 'it\'s :x' from t where a = ?");
    }

    #[test]
    fn every_naming_mistake_is_reported_at_once() {
        let err = positional(
            "select * from t where a = :owner and b = :since",
            &[("owner", Bind::text("x")), ("sine", Bind::fixed(1))],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no value for :since"), "{err}");
        assert!(err.contains("does not bind (sine)"), "{err}");
        let err = positional("select ? , :a", &[("a", Bind::fixed(1))]).unwrap_err();
        assert!(err.to_string().contains("1 ? bind(s)"));
    }
}
