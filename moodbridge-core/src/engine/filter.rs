//! Filter policies in Amazon SNS's syntax for event consumers ([`FilterPolicy`]).

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Filter policies in Amazon SNS's syntax, applied to an event's JSON body (SNS's
/// `MessageBody` scope), so that a rule reads the same here as on an AWS subscription.
///
/// A policy is a JSON object. Every key must match (AND); a key's array of conditions
/// matches when any condition does (OR); a nested object matches the nested key of the
/// body; `"$or": [policy, …]` matches when any of its policies does. A condition is:
///
/// | condition | matches |
/// |---|---|
/// | `"text"`, `42`, `null` | that exact value |
/// | `{"prefix": "p"}`, `{"suffix": "s"}` | a string that starts / ends so |
/// | `{"equals-ignore-case": "x"}` | a string equal to it, case aside |
/// | `{"anything-but": v}` (a value, a list, or `{"prefix": …}`) | a present value that is not it |
/// | `{"numeric": [">=", 0, "<", 100]}` (`=`, `<`, `<=`, `>`, `>=`) | a number in the range |
/// | `{"exists": true}` / `{"exists": false}` | the key present / absent |
/// | `{"cidr": "10.0.0.0/24"}` (IPv4 or IPv6) | a string that is an IP address in the network |
///
/// When the body's value is an array, the key matches when any element does. Any other
/// operator (Amazon EventBridge's `wildcard`, for one, which SNS does not have) is
/// refused with the key it is under.
///
/// ```
/// use moodbridge_core::engine::FilterPolicy;
/// use serde_json::json;
///
/// let policy = FilterPolicy::parse(&json!({
///     "type": [{"prefix": "case."}],
///     "data": {"Priority": ["High", "Urgent"], "Amount": [{"numeric": [">", 1000]}]}
/// })).unwrap();
/// assert!(policy.matches(&json!({"type": "case.updated", "data": {"Priority": "High", "Amount": 5000}})));
/// assert!(!policy.matches(&json!({"type": "case.updated", "data": {"Priority": "Low", "Amount": 5000}})));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct FilterPolicy {
    node: Node,
}

#[derive(Debug, Clone, PartialEq)]
struct Node {
    /// Every key must match.
    keys: Vec<(String, Rule)>,
    /// At least one must match, when any.
    any_of: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq)]
enum Rule {
    /// Any of these conditions.
    Conditions(Vec<Condition>),
    /// A nested policy for an object value.
    Nested(Node),
}

#[derive(Debug, Clone, PartialEq)]
enum Condition {
    Exact(Value),
    Prefix(String),
    Suffix(String),
    IgnoreCase(String),
    AnythingBut(Vec<Value>),
    AnythingButPrefix(String),
    Numeric(Vec<(Cmp, f64)>),
    Exists(bool),
    Cidr(ipnet::IpNet),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

impl FilterPolicy {
    /// Check `policy`; a policy that is not an object, or a condition not in the table
    /// above, is an [`InvalidInput`](crate::ErrorKind::InvalidInput) error naming where.
    pub fn parse(policy: &Value) -> Result<FilterPolicy> {
        let Value::Object(map) = policy else {
            return Err(Error::invalid_input("a filter policy is a JSON object"));
        };
        Ok(FilterPolicy {
            node: node(map, "")?,
        })
    }

    /// Whether `body` matches the policy.
    pub fn matches(&self, body: &Value) -> bool {
        node_matches(&self.node, body)
    }
}

fn node(map: &Map<String, Value>, path: &str) -> Result<Node> {
    let mut out = Node {
        keys: Vec::new(),
        any_of: Vec::new(),
    };
    for (key, value) in map {
        let at = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if key == "$or" {
            let Value::Array(alternatives) = value else {
                return Err(bad(&at, "$or takes a list of policies"));
            };
            for (i, alternative) in alternatives.iter().enumerate() {
                let Value::Object(m) = alternative else {
                    return Err(bad(
                        &format!("{at}[{i}]"),
                        "an $or alternative is an object",
                    ));
                };
                out.any_of.push(node(m, path)?);
            }
            continue;
        }
        let rule = match value {
            Value::Object(m) => Rule::Nested(node(m, &at)?),
            Value::Array(conditions) => Rule::Conditions(
                conditions
                    .iter()
                    .map(|c| condition(c, &at))
                    .collect::<Result<_>>()?,
            ),
            _ => {
                return Err(bad(
                    &at,
                    "a key takes a list of conditions or a nested object",
                ));
            }
        };
        out.keys.push((key.clone(), rule));
    }
    Ok(out)
}

fn bad(at: &str, why: &str) -> Error {
    Error::invalid_input(format!("filter policy at {at}: {why}"))
        .with_hint("write it as an Amazon SNS filter policy (see FilterPolicy's docs)")
}

fn condition(c: &Value, at: &str) -> Result<Condition> {
    let Value::Object(m) = c else {
        return match c {
            Value::String(_) | Value::Number(_) | Value::Null | Value::Bool(_) => {
                Ok(Condition::Exact(c.clone()))
            }
            _ => Err(bad(at, "a condition is a value or an object")),
        };
    };
    let mut entries = m.iter();
    let (Some((op, arg)), None) = (entries.next(), entries.next()) else {
        return Err(bad(at, "a condition object has exactly one operator"));
    };
    let text = |what: &str| -> Result<String> {
        arg.as_str()
            .map(str::to_owned)
            .ok_or_else(|| bad(at, &format!("{what} takes a string")))
    };
    Ok(match op.as_str() {
        "prefix" => Condition::Prefix(text("prefix")?),
        "suffix" => Condition::Suffix(text("suffix")?),
        "equals-ignore-case" => Condition::IgnoreCase(text("equals-ignore-case")?),
        "exists" => Condition::Exists(
            arg.as_bool()
                .ok_or_else(|| bad(at, "exists takes true or false"))?,
        ),
        "anything-but" => match arg {
            Value::Array(values) => Condition::AnythingBut(values.clone()),
            Value::Object(inner) => match inner.get("prefix").and_then(Value::as_str) {
                Some(p) if inner.len() == 1 => Condition::AnythingButPrefix(p.to_owned()),
                _ => {
                    return Err(bad(
                        at,
                        "anything-but takes a value, a list or {\"prefix\": …}",
                    ));
                }
            },
            v => Condition::AnythingBut(vec![v.clone()]),
        },
        "cidr" => {
            let net = text("cidr")?;
            Condition::Cidr(net.parse().map_err(|_| {
                bad(
                    at,
                    &format!(
                        "{net:?} is not a network in CIDR notation (10.0.0.0/24, 2001:db8::/32)"
                    ),
                )
            })?)
        }
        "numeric" => {
            let Value::Array(parts) = arg else {
                return Err(bad(at, "numeric takes a list like [\">=\", 0, \"<\", 10]"));
            };
            let mut bounds = Vec::new();
            for pair in parts.chunks(2) {
                let [Value::String(op), Value::Number(n)] = pair else {
                    return Err(bad(at, "numeric takes operator and number pairs"));
                };
                let cmp = match op.as_str() {
                    "=" => Cmp::Eq,
                    "<" => Cmp::Lt,
                    "<=" => Cmp::Le,
                    ">" => Cmp::Gt,
                    ">=" => Cmp::Ge,
                    other => return Err(bad(at, &format!("{other:?} is not a numeric operator"))),
                };
                let n = n
                    .as_f64()
                    .ok_or_else(|| bad(at, "numeric takes finite numbers"))?;
                bounds.push((cmp, n));
            }
            if bounds.is_empty() {
                return Err(bad(at, "numeric takes at least one operator and number"));
            }
            Condition::Numeric(bounds)
        }
        other => return Err(bad(at, &format!("{other:?} is not a supported condition"))),
    })
}

fn node_matches(node: &Node, body: &Value) -> bool {
    let keys = node.keys.iter().all(|(key, rule)| {
        let value = body.get(key);
        match rule {
            Rule::Nested(inner) => value.is_some_and(|v| node_matches(inner, v)),
            Rule::Conditions(conditions) => conditions.iter().any(|c| condition_matches(c, value)),
        }
    });
    keys && (node.any_of.is_empty() || node.any_of.iter().any(|n| node_matches(n, body)))
}

fn condition_matches(c: &Condition, value: Option<&Value>) -> bool {
    match (c, value) {
        (Condition::Exists(want), v) => *want == v.is_some(),
        (_, None) => false,
        (_, Some(Value::Array(items))) => items.iter().any(|v| scalar_matches(c, v)),
        (_, Some(v)) => scalar_matches(c, v),
    }
}

fn scalar_matches(c: &Condition, v: &Value) -> bool {
    match c {
        Condition::Exact(want) => equal(want, v),
        Condition::Prefix(p) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        Condition::Suffix(p) => v.as_str().is_some_and(|s| s.ends_with(p.as_str())),
        Condition::IgnoreCase(p) => v.as_str().is_some_and(|s| s.eq_ignore_ascii_case(p)),
        Condition::AnythingBut(values) => !values.iter().any(|want| equal(want, v)),
        Condition::AnythingButPrefix(p) => v.as_str().is_some_and(|s| !s.starts_with(p.as_str())),
        Condition::Numeric(bounds) => v.as_f64().is_some_and(|n| {
            bounds.iter().all(|&(cmp, b)| match cmp {
                Cmp::Eq => n == b,
                Cmp::Lt => n < b,
                Cmp::Le => n <= b,
                Cmp::Gt => n > b,
                Cmp::Ge => n >= b,
            })
        }),
        Condition::Cidr(net) => v
            .as_str()
            .and_then(|s| s.parse::<std::net::IpAddr>().ok())
            .is_some_and(|ip| net.contains(&ip)),
        Condition::Exists(_) => true,
    }
}

/// Values equal as SNS compares them: numbers by value (`5` equals `5.0`).
fn equal(want: &Value, v: &Value) -> bool {
    match (want, v) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => want == v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The message body of Amazon SNS's "example filter policies" page.
    fn published_body() -> Value {
        json!({ "customer_interests": ["soccer", "rugby", "hockey"], "store": "example_corp",
                "event": "order_placed", "price_usd": 210.75 })
    }

    fn p(v: Value) -> FilterPolicy {
        FilterPolicy::parse(&v).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_published_example_is_accepted_and_its_variants_decided() {
        let body = published_body();
        // The page's policy that accepts the message.
        assert!(
            p(json!({
                "store": ["example_corp"],
                "event": [{"anything-but": "order_cancelled"}],
                "customer_interests": ["rugby", "football", "baseball"],
                "price_usd": [{"numeric": [">=", 100]}]
            }))
            .matches(&body)
        );
        for (policy, expected) in [
            (json!({"event": ["order_cancelled"]}), false),
            (json!({"store": [{"prefix": "example"}]}), true),
            (json!({"store": [{"suffix": "_corp"}]}), true),
            (
                json!({"store": [{"equals-ignore-case": "EXAMPLE_CORP"}]}),
                true,
            ),
            (
                json!({"price_usd": [{"numeric": [">", 0, "<=", 150]}]}),
                false,
            ),
            (json!({"price_usd": [{"numeric": ["=", 210.75]}]}), true),
            (
                json!({"customer_interests": [{"anything-but": ["rugby", "soccer", "hockey"]}]}),
                false,
            ),
            (
                json!({"customer_interests": [{"anything-but": {"prefix": "ru"}}]}),
                true,
            ),
            (json!({"coupon": [{"exists": false}]}), true),
            (json!({"coupon": [{"exists": true}]}), false),
            (json!({"coupon": [{"anything-but": "x"}]}), false),
            (
                json!({"$or": [{"store": ["other"]}, {"price_usd": [210.75]}]}),
                true,
            ),
            (
                json!({"$or": [{"store": ["other"]}, {"event": ["x"]}]}),
                false,
            ),
        ] {
            assert_eq!(p(policy.clone()).matches(&body), expected, "{policy}");
        }
    }

    #[test]
    fn addresses_match_networks_in_cidr_notation() {
        // The published example: {"source_ip": [{"cidr": "10.0.0.0/24"}]}.
        let policy = p(json!({"source_ip": [{"cidr": "10.0.0.0/24"}]}));
        for (ip, expected) in [
            (json!("10.0.0.0"), true),
            (json!("10.0.0.255"), true),
            (json!("10.0.1.0"), false),
            (json!("not an address"), false),
            (json!(["192.168.1.1", "10.0.0.7"]), true),
            (json!(10), false),
        ] {
            assert_eq!(
                policy.matches(&json!({ "source_ip": ip })),
                expected,
                "{ip}"
            );
        }
        let v6 = p(json!({"ip": [{"cidr": "2001:db8::/32"}]}));
        assert!(v6.matches(&json!({"ip": "2001:db8:1::5"})));
        assert!(!v6.matches(&json!({"ip": "2001:db9::5"})));
        assert!(!v6.matches(&json!({"ip": "10.0.0.1"})));
    }

    #[test]
    fn nested_keys_match_nested_objects() {
        let policy = p(json!({"data": {"sObject": {"type": ["Case"]}}}));
        assert!(policy.matches(&json!({"data": {"sObject": {"type": "Case", "Id": "500A"}}})));
        assert!(!policy.matches(&json!({"data": {"sObject": {"type": "Account"}}})));
        assert!(!policy.matches(&json!({"data": "flat"})));
    }

    #[test]
    fn a_policy_outside_the_syntax_is_refused_with_where() {
        for (policy, says) in [
            (json!(["x"]), "JSON object"),
            (json!({"a": "x"}), "at a:"),
            (
                json!({"a": {"b": [{"wildcard": "*.pdf"}]}}),
                "at a.b: \"wildcard\" is not a supported condition",
            ),
            (
                json!({"ip": [{"cidr": "10.0.0.300/24"}]}),
                "not a network in CIDR notation",
            ),
            (
                json!({"a": [{"numeric": ["~", 1]}]}),
                "not a numeric operator",
            ),
            (json!({"a": [{"prefix": 1}]}), "prefix takes a string"),
            (
                json!({"a": [{"prefix": "x", "suffix": "y"}]}),
                "exactly one operator",
            ),
        ] {
            let e = FilterPolicy::parse(&policy).expect_err(says);
            assert!(e.to_string().contains(says), "{says:?} not in {e}");
        }
    }
}
