//! Escaping of SOQL string literals, by the rules of Salesforce's "Quoted String Escape
//! Sequences": `\'`, `\"`, `\\`, `\n`, `\r`, `\t`, `\f`, `\uXXXX`, and in `LIKE` patterns
//! `\%` and `\_`. Any other control character is written as `\uXXXX` (the documented
//! `\b` is avoided: the docs call it "bell", where other languages mean backspace).

/// `text` escaped for use between single quotes.
///
/// ```
/// use connector_salesforce::soql::escape_string;
/// assert_eq!(escape_string("O'Brien \\ \"Bob\"\n"), "O\\'Brien \\\\ \\\"Bob\\\"\\n");
/// ```
pub fn escape_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

/// `text` quoted and escaped: a complete SOQL string literal.
///
/// ```
/// use connector_salesforce::soql::quote;
/// assert_eq!(quote("x' OR Name != '"), "'x\\' OR Name != \\''");
/// ```
pub fn quote(text: &str) -> String {
    format!("'{}'", escape_string(text))
}

/// `text` escaped for a `LIKE` pattern that matches it literally: as
/// [`escape_string`], and `%` and `_` escaped too.
///
/// ```
/// use connector_salesforce::soql::escape_like;
/// assert_eq!(escape_like("50%_off"), "50\\%\\_off");
/// ```
pub fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '%' => out.push_str("\\%"),
            '_' => out.push_str("\\_"),
            c => push_escaped(&mut out, c),
        }
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\'' => out.push_str("\\'"),
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{0c}' => out.push_str("\\f"),
        c if c.is_control() => {
            // Every control character is in the Basic Multilingual Plane.
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        }
        c => out.push(c),
    }
}
