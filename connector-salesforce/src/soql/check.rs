//! Optional checking of a query's field names against describe results, before the query
//! costs an API call: every selected, filtered and sorted field — relationship paths
//! included — must exist on its object, with a suggestion when a name is close to one
//! that does.

use moodbridge_core::{Error, Result};
use serde_json::Value;

use super::{Condition, Soql};

/// What checking needs next, or what it found.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Every name exists.
    Valid,
    /// The describe of this object is needed to go on.
    NeedDescribe(String),
    /// Names that do not exist, one message each.
    Unknown(Vec<String>),
}

impl Condition {
    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Condition::Compare(f, _, _)
            | Condition::In(f, _, _)
            | Condition::Like(f, _)
            | Condition::Includes(f, _, _) => out.push(f),
            Condition::And(all) | Condition::Or(all) => {
                for c in all {
                    c.collect_fields(out);
                }
            }
            Condition::Not(c) => c.collect_fields(out),
        }
    }
}

impl Soql {
    /// The object after `FROM`.
    ///
    /// ```
    /// use connector_salesforce::soql::Soql;
    /// assert_eq!(Soql::select(["Id"]).from("Case").object(), "Case");
    /// ```
    pub fn object(&self) -> &str {
        &self.object
    }

    /// Every field the query names — selected, filtered, sorted — each once, in order of
    /// first appearance.
    ///
    /// ```
    /// use connector_salesforce::soql::{Order, Soql, field};
    /// let q = Soql::select(["Id", "Account.Name"])
    ///     .from("Contact")
    ///     .filter(field("LastName").eq("Ng").or(field("Id").eq("003000000000001")))
    ///     .order_by("CreatedDate", Order::Desc);
    /// assert_eq!(q.field_paths(), ["Id", "Account.Name", "LastName", "CreatedDate"]);
    /// ```
    pub fn field_paths(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.fields.iter().map(String::as_str).collect();
        if let Some(c) = &self.filter {
            c.collect_fields(&mut all);
        }
        all.extend(self.order.iter().map(|(f, _)| f.as_str()));
        let mut seen = std::collections::HashSet::new();
        all.retain(|f| seen.insert(f.to_ascii_lowercase()));
        all
    }

    /// Check every field the query names against describe results (as returned by
    /// `GET /sobjects/{object}/describe`), given by object API name. Relationship paths
    /// (`Account.Owner.Name`) are followed through the reference fields'
    /// `relationshipName` and `referenceTo`, so their parents' describes are needed too;
    /// `SalesforceClient::check_query` fetches whatever is needed.
    ///
    /// Names are compared as Salesforce does, ignoring case. Unknown names come back as
    /// one `InvalidInput` error naming each, with the closest existing name as a
    /// suggestion.
    ///
    /// ```
    /// use connector_salesforce::soql::Soql;
    /// use serde_json::json;
    ///
    /// let account = json!({"name": "Account", "fields": [
    ///     {"name": "Id", "type": "id"},
    ///     {"name": "Name", "type": "string"},
    /// ]});
    /// let describes = [("Account", &account)];
    /// let lookup = |o: &str| describes.iter().find(|(n, _)| *n == o).map(|(_, d)| *d);
    /// assert!(Soql::select(["Id", "name"]).from("Account").check_fields(lookup).is_ok());
    /// let err = Soql::select(["Id", "Nmae"]).from("Account").check_fields(lookup).unwrap_err();
    /// assert!(err.to_string().contains("did you mean Name?"), "{err}");
    /// ```
    pub fn check_fields<'a>(&self, describe: impl Fn(&str) -> Option<&'a Value>) -> Result<()> {
        match self.check_with(&describe) {
            Outcome::Valid => Ok(()),
            Outcome::NeedDescribe(object) => Err(Error::invalid_input(format!(
                "no describe of {object} was given, and the query names fields of it"
            ))
            .with_hint("pass the describe of every object the query's relationship paths reach")),
            Outcome::Unknown(problems) => Err(unknown_fields(self.object(), &problems)),
        }
    }

    /// One step of the check: valid, unknown names, or the next describe needed.
    pub(crate) fn check_with<'a>(&self, describe: &impl Fn(&str) -> Option<&'a Value>) -> Outcome {
        let Some(root) = describe(&self.object) else {
            return Outcome::NeedDescribe(self.object.clone());
        };
        let mut problems = Vec::new();
        for path in self.field_paths() {
            match check_path(root, path, describe) {
                Ok(()) => {}
                Err(PathProblem::Need(object)) => return Outcome::NeedDescribe(object),
                Err(PathProblem::Unknown(message)) => problems.push(message),
            }
        }
        if problems.is_empty() {
            Outcome::Valid
        } else {
            Outcome::Unknown(problems)
        }
    }
}

/// The error for names that do not exist.
pub(crate) fn unknown_fields(object: &str, problems: &[String]) -> Error {
    Error::invalid_input(format!(
        "the query on {object} names what does not exist: {}",
        problems.join("; ")
    ))
    .with_context("object", object)
    .with_hint(
        "use the API names describe lists (custom fields end in __c, custom relationships in __r)",
    )
}

enum PathProblem {
    Need(String),
    Unknown(String),
}

fn fields(describe: &Value) -> impl Iterator<Item = &Value> {
    describe
        .get("fields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn object_name(describe: &Value) -> &str {
    describe.get("name").and_then(Value::as_str).unwrap_or("?")
}

fn check_path<'a>(
    root: &'a Value,
    path: &str,
    describe: &impl Fn(&str) -> Option<&'a Value>,
) -> std::result::Result<(), PathProblem> {
    let segments: Vec<&str> = path.split('.').collect();
    // The objects the path may be on at this step (several for a polymorphic reference).
    let mut on: Vec<&'a Value> = vec![root];
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if last {
            if on.iter().any(|d| has_field(d, segment)) {
                return Ok(());
            }
            let names = on
                .iter()
                .flat_map(|d| fields(d))
                .filter_map(|f| f.get("name")?.as_str());
            return Err(PathProblem::Unknown(format!(
                "{} has no field {segment:?}{}",
                describe_names(&on),
                suggestion(segment, names)
            )));
        }
        let mut parents: Vec<String> = Vec::new();
        for d in &on {
            for f in fields(d) {
                let rel = f.get("relationshipName").and_then(Value::as_str);
                if rel.is_some_and(|r| r.eq_ignore_ascii_case(segment)) {
                    parents.extend(
                        f.get("referenceTo")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .map(str::to_owned),
                    );
                }
            }
        }
        if parents.is_empty() {
            let names = on
                .iter()
                .flat_map(|d| fields(d))
                .filter_map(|f| f.get("relationshipName")?.as_str());
            return Err(PathProblem::Unknown(format!(
                "{} has no relationship {segment:?} (in {path}){}",
                describe_names(&on),
                suggestion(segment, names)
            )));
        }
        let mut next = Vec::with_capacity(parents.len());
        for parent in parents {
            match describe(&parent) {
                Some(d) => next.push(d),
                None => return Err(PathProblem::Need(parent)),
            }
        }
        on = next;
    }
    Ok(())
}

fn has_field(describe: &Value, name: &str) -> bool {
    fields(describe).any(|f| {
        f.get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| n.eq_ignore_ascii_case(name))
    })
}

fn describe_names(on: &[&Value]) -> String {
    let names: Vec<&str> = on.iter().map(|d| object_name(d)).collect();
    names.join(" / ")
}

/// `" (did you mean X?)"` for the closest name, when one is close enough to be a typo.
fn suggestion<'a>(wrong: &str, names: impl Iterator<Item = &'a str>) -> String {
    let wrong_lower = wrong.to_ascii_lowercase();
    let best = names
        .map(|n| {
            (
                strsim::levenshtein(&wrong_lower, &n.to_ascii_lowercase()),
                n,
            )
        })
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, name)) if d <= (wrong.len() / 3).max(2) => format!(" (did you mean {name}?)"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]

    use std::collections::HashMap;

    use serde_json::json;

    use super::*;
    use crate::soql::{Order, field};

    fn schema() -> HashMap<&'static str, Value> {
        HashMap::from([
            (
                "Contact",
                json!({"name": "Contact", "fields": [
                    {"name": "Id"}, {"name": "LastName"}, {"name": "Email"},
                    {"name": "AccountId", "relationshipName": "Account", "referenceTo": ["Account"]},
                    {"name": "WhoId", "relationshipName": "Who", "referenceTo": ["Lead", "User"]},
                    {"name": "Matter__c", "relationshipName": "Matter__r", "referenceTo": ["Matter__c"]},
                ]}),
            ),
            (
                "Account",
                json!({"name": "Account", "fields": [{"name": "Id"}, {"name": "Name"}]}),
            ),
            (
                "Lead",
                json!({"name": "Lead", "fields": [{"name": "Id"}, {"name": "Company"}]}),
            ),
            (
                "User",
                json!({"name": "User", "fields": [{"name": "Id"}, {"name": "Username"}]}),
            ),
            (
                "Matter__c",
                json!({"name": "Matter__c", "fields": [{"name": "Id"}, {"name": "Stage__c"}]}),
            ),
        ])
    }

    fn check(q: &Soql, schema: &HashMap<&'static str, Value>) -> Result<()> {
        q.check_fields(|o| schema.get(o))
    }

    #[test]
    fn known_fields_and_relationship_paths_pass_ignoring_case() {
        let s = schema();
        let q = Soql::select([
            "Id",
            "lastname",
            "Account.Name",
            "Matter__r.Stage__c",
            "Who.Company",
        ])
        .from("Contact")
        .filter(field("Email").like(crate::soql::Like::contains("@")))
        .order_by("account.name", Order::Asc);
        check(&q, &s).unwrap();
    }

    #[test]
    fn every_unknown_name_is_reported_with_a_suggestion() {
        let s = schema();
        let q = Soql::select(["Id", "LastNme", "Acount.Name", "Account.Nope"])
            .from("Contact")
            .filter(field("Emial").eq("x"))
            .order_by("Zzzzzz", Order::Asc);
        let err = check(&q, &s).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.kind(), moodbridge_core::ErrorKind::InvalidInput);
        for part in [
            "Contact has no field \"LastNme\" (did you mean LastName?)",
            "Contact has no relationship \"Acount\" (in Acount.Name) (did you mean Account?)",
            "Account has no field \"Nope\"",
            "Contact has no field \"Emial\" (did you mean Email?)",
            "Contact has no field \"Zzzzzz\" (invalid_input",
        ] {
            assert!(text.contains(part), "{part:?} missing from {text}");
        }
        assert!(!text.contains("Zzzzzz\" (did you mean"), "{text}");
    }

    #[test]
    fn a_missing_describe_is_asked_for_not_guessed() {
        let mut s = schema();
        s.remove("Lead");
        let q = Soql::select(["Who.Company"]).from("Contact");
        assert_eq!(
            q.check_with(&|o: &str| s.get(o)),
            Outcome::NeedDescribe("Lead".into())
        );
        let err = check(&q, &s).unwrap_err();
        assert!(err.to_string().contains("no describe of Lead"), "{err}");
    }
}
