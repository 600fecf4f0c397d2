//! Spelling SQL text: quoted identifiers and string literals.

/// A quoted identifier: the name as written, `"` doubled.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A string literal: `'` doubled, `\` doubled (Snowflake reads backslash escapes in
/// single-quoted strings).
pub(crate) fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// A name of a Snowflake object given in config: one to three parts separated by `.`,
/// each a plain identifier (letters, digits, `_`, `$`, not starting with a digit) —
/// written unquoted, so Snowflake upper-cases it as it would in a worksheet.
pub(crate) fn object_name(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
            && !p.starts_with(|c: char| c.is_ascii_digit())
    };
    (parts.len() <= 3 && parts.iter().all(plain)).then(|| name.to_ascii_uppercase())
}

/// Cell `key` of a row from [`json_rows`](crate::QueryResult::json_rows) as text: a
/// string as it is, a number or boolean as written, NULL or missing as `""`. The key is
/// tried as given, then upper- and lower-cased (`SHOW` columns are lower case, views'
/// upper case).
pub(crate) fn cell_text(row: &serde_json::Value, key: &str) -> String {
    let value = row
        .get(key)
        .or_else(|| row.get(key.to_ascii_uppercase()))
        .or_else(|| row.get(key.to_ascii_lowercase()));
    match value {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Cell `key` as a number: a JSON number, or text holding one (`SHOW` answers and
/// `NUMBER` columns come as text).
pub(crate) fn cell_number(row: &serde_json::Value, key: &str) -> Option<f64> {
    let text = cell_text(row, key);
    row.get(key)
        .and_then(serde_json::Value::as_f64)
        .or_else(|| text.trim().parse().ok())
}

/// [`object_name`], or the error naming what `name` was meant to be.
pub(crate) fn plain_name(what: &str, name: &str) -> moodbridge_core::Result<String> {
    object_name(name).ok_or_else(|| {
        moodbridge_core::Error::invalid_input(format!("{name:?} is not a plain {what} name"))
            .with_connector(crate::PLATFORM)
            .with_hint("use letters, digits, _ and $ (not starting with a digit), as name, schema.name or database.schema.name")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_literals_are_quoted() {
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
        assert_eq!(literal(r"it's a\b"), r"'it''s a\\b'");
        assert_eq!(
            object_name("db.pii.ssn_mask").as_deref(),
            Some("DB.PII.SSN_MASK")
        );
        for bad in ["", "a..b", "1x", "a;drop", "a.b.c.d", "x y"] {
            assert_eq!(object_name(bad), None, "{bad}");
        }
    }
}
