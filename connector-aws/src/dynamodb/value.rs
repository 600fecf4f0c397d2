//! DynamoDB attribute values and JSON, both ways.
//!
//! | DynamoDB | JSON |
//! |---|---|
//! | `S` | string |
//! | `N` | number — an integer when it is one, a float when 15 significant digits or fewer hold it exactly, else a string of its digits (nothing is rounded) |
//! | `BOOL`, `NULL` | `true`/`false`, `null` |
//! | `M`, `L` | object, array |
//! | `B` | base64 string |
//! | `SS`, `NS`, `BS` | array (written back as a list) |
//!
//! JSON goes back as the natural type: string → `S`, number → `N`, object → `M` and
//! so on. Key attributes follow the table's declared type: a number in an `S` key is
//! written as its text, a numeric string in an `N` key as the number.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, ScalarAttributeType};
use base64::Engine as _;
use moodbridge_core::Record;
use serde_json::{Map, Number, Value};

/// An item: attribute name → value.
pub type Item = HashMap<String, AttributeValue>;

/// The largest item DynamoDB stores (400 KB).
pub const MAX_ITEM_BYTES: usize = 400 * 1024;

/// The JSON of an attribute value.
pub fn to_json(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::N(n) => number(n),
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::M(m) => Value::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect::<Map<_, _>>(),
        ),
        AttributeValue::L(l) => Value::Array(l.iter().map(to_json).collect()),
        AttributeValue::B(b) => Value::String(base64_of(b)),
        AttributeValue::Ss(s) => Value::Array(s.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(n) => Value::Array(n.iter().map(|n| number(n)).collect()),
        AttributeValue::Bs(b) => {
            Value::Array(b.iter().map(|b| Value::String(base64_of(b))).collect())
        }
        _ => Value::Null,
    }
}

fn base64_of(blob: &Blob) -> String {
    base64::engine::general_purpose::STANDARD.encode(blob.as_ref())
}

/// An `N` as JSON without rounding: integer, exact float, or the digits as a string.
fn number(n: &str) -> Value {
    if let Ok(i) = n.parse::<i64>() {
        return Value::Number(i.into());
    }
    if let Ok(u) = n.parse::<u64>() {
        return Value::Number(u.into());
    }
    if significant_digits(n) <= 15
        && let Some(f) = n.parse::<f64>().ok().and_then(Number::from_f64)
    {
        return Value::Number(f);
    }
    Value::String(n.to_owned())
}

/// The significant digits of a decimal number's text (`"-0.00120e5"` has 2).
fn significant_digits(n: &str) -> usize {
    let mantissa = n.split(['e', 'E']).next().unwrap_or(n);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    digits.trim_start_matches('0').trim_end_matches('0').len()
}

/// The attribute value of a JSON value.
pub fn from_json(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(a) => AttributeValue::L(a.iter().map(from_json).collect()),
        Value::Object(o) => {
            AttributeValue::M(o.iter().map(|(k, v)| (k.clone(), from_json(v))).collect())
        }
    }
}

/// A record of an item.
pub fn record_of(item: &Item) -> Record {
    let mut fields = Map::new();
    for (name, value) in item {
        fields.insert(name.clone(), to_json(value));
    }
    Record::from(fields)
}

/// The value of key attribute `field`, declared `kind`, from a record's JSON value; what
/// is wrong with it otherwise.
pub fn key_value(
    field: &str,
    value: Option<&Value>,
    kind: &ScalarAttributeType,
) -> Result<AttributeValue, String> {
    let value = match value {
        None | Some(Value::Null) => {
            return Err(format!("the record has no value for key attribute {field}"));
        }
        Some(v) => v,
    };
    match kind {
        ScalarAttributeType::N => match value {
            Value::Number(n) => Ok(AttributeValue::N(n.to_string())),
            Value::String(s) if s.trim().parse::<f64>().is_ok_and(f64::is_finite) => {
                Ok(AttributeValue::N(s.trim().to_owned()))
            }
            other => Err(format!(
                "key attribute {field} is a number in the table, not {other}"
            )),
        },
        ScalarAttributeType::B => match value {
            Value::String(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map(|b| AttributeValue::B(Blob::new(b)))
                .map_err(|_| {
                    format!("key attribute {field} is binary in the table: give it as base64")
                }),
            other => Err(format!(
                "key attribute {field} is binary in the table, not {other}"
            )),
        },
        _ => match value {
            Value::String(s) if s.is_empty() => Err(format!(
                "key attribute {field} is empty (DynamoDB keys cannot be)"
            )),
            Value::String(s) => Ok(AttributeValue::S(s.clone())),
            Value::Number(n) => Ok(AttributeValue::S(n.to_string())),
            Value::Bool(b) => Ok(AttributeValue::S(b.to_string())),
            other => Err(format!(
                "key attribute {field} is a string in the table, not {other}"
            )),
        },
    }
}

/// A key value as tagged JSON (`{"S": "D-0001"}`, `{"N": "5"}`, `{"B": "<base64>"}`),
/// exact for checkpoints.
pub fn tagged(value: &AttributeValue) -> Value {
    match value {
        AttributeValue::S(s) => serde_json::json!({ "S": s }),
        AttributeValue::N(n) => serde_json::json!({ "N": n }),
        AttributeValue::B(b) => serde_json::json!({ "B": base64_of(b) }),
        other => serde_json::json!({ "J": to_json(other) }),
    }
}

/// A key value from its tagged JSON.
pub fn untagged(value: &Value) -> Option<AttributeValue> {
    let (tag, inner) = value.as_object()?.iter().next()?;
    match (tag.as_str(), inner) {
        ("S", Value::String(s)) => Some(AttributeValue::S(s.clone())),
        ("N", Value::String(n)) => Some(AttributeValue::N(n.clone())),
        ("B", Value::String(b)) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .map(|b| AttributeValue::B(Blob::new(b))),
        ("J", v) => Some(from_json(v)),
        _ => None,
    }
}

/// An item (a key) as tagged JSON.
pub fn tagged_item(item: &Item) -> Value {
    Value::Object(item.iter().map(|(k, v)| (k.clone(), tagged(v))).collect())
}

/// An item (a key) from its tagged JSON.
pub fn untagged_item(value: &Value) -> Option<Item> {
    value
        .as_object()?
        .iter()
        .map(|(k, v)| untagged(v).map(|v| (k.clone(), v)))
        .collect()
}

/// The values of an item's key attributes `names` as one string, the same whatever
/// the order of `names` (for lookups within a batch, and the keys a checkpoint keeps).
pub fn key_text(item: &Item, names: &[String]) -> String {
    let mut sorted: Vec<&String> = names.iter().collect();
    sorted.sort();
    sorted
        .iter()
        .map(|n| item.get(*n).map(tagged).unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\u{1f}")
}

/// The size DynamoDB counts for an item: names plus values (strings and binaries by
/// their bytes, numbers by about one byte per two digits, containers with their
/// overhead).
pub fn item_bytes(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
}

fn value_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|v| 1 + value_bytes(v)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, v)| 1 + k.len() + value_bytes(v))
                .sum::<usize>()
        }
        AttributeValue::Ss(s) => s.iter().map(String::len).sum(),
        AttributeValue::Ns(n) => n.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        AttributeValue::Bs(b) => b.iter().map(|b| b.as_ref().len()).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_never_rounded() {
        assert_eq!(number("42"), json!(42));
        assert_eq!(number("-7"), json!(-7));
        assert_eq!(
            number("18446744073709551615"),
            json!(18446744073709551615u64)
        );
        assert_eq!(number("3.25"), json!(3.25));
        assert_eq!(number("1.5E3"), json!(1500.0));
        // 38 significant digits, DynamoDB's maximum: kept as text.
        let big = "1234567890.1234567890123456789012345678";
        assert_eq!(number(big), json!(big));
        assert_eq!(significant_digits("-0.00120e5"), 2);
    }

    #[test]
    fn json_round_trips_through_attribute_values() {
        let v = json!({"a": "x", "n": 5, "f": 2.5, "b": true, "z": null,
                       "l": [1, "two", {"three": 3}], "m": {"k": [false]}});
        assert_eq!(to_json(&from_json(&v)), v);
        let sets = AttributeValue::Ss(vec!["a".into(), "b".into()]);
        assert_eq!(to_json(&sets), json!(["a", "b"]));
        assert_eq!(
            to_json(&AttributeValue::B(Blob::new(b"hi".to_vec()))),
            json!("aGk=")
        );
    }

    #[test]
    fn key_values_follow_the_declared_type() {
        let n = ScalarAttributeType::N;
        let s = ScalarAttributeType::S;
        assert_eq!(
            key_value("Id", Some(&json!(5)), &n).unwrap(),
            AttributeValue::N("5".into())
        );
        assert_eq!(
            key_value("Id", Some(&json!("5")), &n).unwrap(),
            AttributeValue::N("5".into())
        );
        assert!(
            key_value("Id", Some(&json!("five")), &n)
                .unwrap_err()
                .contains("number")
        );
        assert_eq!(
            key_value("Id", Some(&json!(5)), &s).unwrap(),
            AttributeValue::S("5".into())
        );
        assert!(key_value("Id", None, &s).unwrap_err().contains("no value"));
        assert!(
            key_value("Id", Some(&json!("")), &s)
                .unwrap_err()
                .contains("empty")
        );
        let b = key_value("Id", Some(&json!("aGk=")), &ScalarAttributeType::B).unwrap();
        assert_eq!(untagged(&tagged(&b)), Some(b));
    }

    #[test]
    fn tagged_keys_are_exact() {
        let mut key = Item::new();
        key.insert("pk".into(), AttributeValue::S("Case".into()));
        key.insert(
            "n".into(),
            AttributeValue::N("1234567890.1234567890123456789".into()),
        );
        let back = untagged_item(&tagged_item(&key)).unwrap();
        assert_eq!(back, key);
        assert!(untagged(&json!({"S": 5})).is_none());
    }

    #[test]
    fn item_sizes_count_names_and_values() {
        let mut item = Item::new();
        item.insert("Title".into(), AttributeValue::S("x".repeat(100)));
        item.insert("n".into(), AttributeValue::N("12345".into()));
        assert_eq!(item_bytes(&item), 5 + 100 + 1 + 4);
    }
}
