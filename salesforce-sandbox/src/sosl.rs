//! The sandbox's SOSL: `FIND {term} [IN ALL|NAME|EMAIL|PHONE FIELDS] [RETURNING
//! Object(fields), …] [LIMIT n]`, the term decoded by SOSL's escapes and matched as a
//! case-insensitive substring of the fields in scope.

use serde_json::{Value, json};

use super::org::Org;
use crate::error::ApiError;

/// A parsed search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The decoded term.
    pub term: String,
    /// `ALL`, `NAME`, `EMAIL` or `PHONE`.
    pub scope: String,
    /// Objects and the fields to return of each.
    pub returning: Vec<(String, Vec<String>)>,
    /// `LIMIT`.
    pub limit: Option<usize>,
}

fn malformed(m: impl Into<String>) -> ApiError {
    ApiError::new("MALFORMED_SEARCH", m)
}

/// Parse a search.
pub fn parse(text: &str) -> Result<Search, ApiError> {
    let rest = text
        .trim()
        .strip_prefix("FIND")
        .ok_or_else(|| malformed("a search starts with FIND"))?
        .trim_start();
    let body = rest
        .strip_prefix('{')
        .ok_or_else(|| malformed("the search term goes in braces: FIND {term}"))?;
    let mut term = String::new();
    let mut chars = body.char_indices();
    let end = loop {
        match chars.next() {
            Some((_, '\\')) => match chars.next() {
                Some((_, c)) => term.push(c),
                None => return Err(malformed("the term ends in a backslash")),
            },
            Some((i, '}')) => break i,
            Some((_, c)) => term.push(c),
            None => return Err(malformed("unclosed search term")),
        }
    };
    let mut tail = body[end + 1..].trim();
    let mut scope = "ALL".to_owned();
    if let Some(after) = tail.strip_prefix("IN ") {
        let (word, more) = after.trim_start().split_once(' ').unwrap_or((after, ""));
        let more = more.trim_start();
        tail = more
            .strip_prefix("FIELDS")
            .ok_or_else(|| malformed("expected FIELDS"))?
            .trim();
        scope = word.to_owned();
    }
    let mut returning = Vec::new();
    let mut limit = None;
    if let Some(after) = tail.strip_prefix("RETURNING ") {
        let (list, more) = match after.find(" LIMIT ") {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        tail = more.trim();
        let mut depth = 0;
        let mut current = String::new();
        let mut items = Vec::new();
        for c in list.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        items.push(current);
        for item in items {
            let item = item.trim();
            match item.split_once('(') {
                Some((object, fields)) => returning.push((
                    object.trim().to_owned(),
                    fields
                        .trim_end_matches(')')
                        .split(',')
                        .map(|f| f.trim().to_owned())
                        .filter(|f| !f.is_empty())
                        .collect(),
                )),
                None => returning.push((item.to_owned(), vec!["Id".to_owned()])),
            }
        }
    }
    if let Some(n) = tail.strip_prefix("LIMIT ") {
        limit = Some(
            n.trim()
                .parse()
                .map_err(|_| malformed("LIMIT needs a number"))?,
        );
        tail = "";
    }
    if !tail.is_empty() {
        return Err(malformed(format!("unexpected text: {tail}")));
    }
    Ok(Search {
        term,
        scope,
        returning,
        limit,
    })
}

/// Run a search: `searchRecords` in Salesforce's shape.
pub fn run(org: &Org, search: &Search, version: &str) -> Result<Value, ApiError> {
    let needle = search.term.to_lowercase();
    let objects: Vec<(String, Vec<String>)> = if search.returning.is_empty() {
        org.objects()
            .map(|o| (o.name.clone(), vec!["Id".to_owned()]))
            .collect()
    } else {
        search.returning.clone()
    };
    let mut found = Vec::new();
    for (object, fields) in objects {
        let def = org
            .object(&object)
            .ok_or_else(|| {
                ApiError::new(
                    "INVALID_TYPE",
                    format!("sObject type '{object}' is not supported."),
                )
            })?
            .clone();
        for f in &fields {
            if def.field(f).is_none() {
                return Err(ApiError {
                    message: format!("No such column '{f}' on entity '{object}'"),
                    error_code: "INVALID_FIELD".into(),
                    fields: vec![f.clone()],
                });
            }
        }
        let searched: Vec<&str> = def
            .fields
            .iter()
            .filter(|f| match search.scope.as_str() {
                "NAME" => f.name.ends_with("Name") || f.name == "Subject",
                "EMAIL" => f.field_type == "email",
                "PHONE" => f.field_type == "phone",
                _ => matches!(
                    f.field_type.as_str(),
                    "string" | "textarea" | "email" | "phone" | "url" | "picklist"
                ),
            })
            .map(|f| f.name.as_str())
            .collect();
        for r in org.rows(&def.name, false) {
            let hit = searched.iter().any(|f| {
                r.get(*f)
                    .and_then(Value::as_str)
                    .is_some_and(|v| v.to_lowercase().contains(&needle))
            });
            if hit {
                let id = r.get("Id").and_then(Value::as_str).unwrap_or_default();
                let mut out = serde_json::Map::new();
                out.insert("attributes".into(), json!({"type": def.name, "url": format!("/services/data/v{version}/sobjects/{}/{id}", def.name)}));
                for f in &fields {
                    let name = def.field(f).map_or(f.clone(), |d| d.name.clone());
                    out.insert(name.clone(), r.get(&name).cloned().unwrap_or(Value::Null));
                }
                found.push(Value::Object(out));
            }
        }
    }
    if let Some(n) = search.limit {
        found.truncate(n);
    }
    Ok(json!({"searchRecords": found}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_salesforce::soql::{SearchScope, Sosl};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the term, the built search parses back to exactly that term.
        #[test]
        fn any_term_round_trips(term in "[^\\x00]{2,40}") {
            prop_assume!(term.trim().chars().count() >= 2);
            let q = Sosl::find(&term).in_scope(SearchScope::Name).returning("Account", ["Id", "Name"]).limit(5).build().unwrap_or_default();
            let parsed = parse(&q).map_err(|e| TestCaseError::fail(format!("{q}: {}", e.message)))?;
            prop_assert_eq!(parsed.term, term);
            prop_assert_eq!(parsed.scope, "NAME");
            prop_assert_eq!(parsed.returning, vec![("Account".to_owned(), vec!["Id".to_owned(), "Name".to_owned()])]);
            prop_assert_eq!(parsed.limit, Some(5));
        }
    }
}
