//! The sandbox's SOQL parser: the subset the builder emits (and jsforce sends), parsed
//! into a [`Query`] the sandbox evaluates. Strings are decoded by the SOQL escape rules;
//! an unknown escape is an error, as on Salesforce (`MALFORMED_QUERY`).
//!
//! ```
//! use salesforce_sandbox::soql::{Literal, Predicate, parse};
//!
//! let q = parse("SELECT Id, Name FROM Account WHERE Name = 'O\\'Brien' LIMIT 5").unwrap();
//! assert_eq!(q.object, "Account");
//! assert_eq!(q.limit, Some(5));
//! let Some(Predicate::Compare { value: Literal::String(name), .. }) = q.filter else { panic!() };
//! assert_eq!(name, "O'Brien");
//! ```

use std::fmt;

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// `SELECT COUNT()`: only the number of matching records is wanted.
    pub count: bool,
    /// The selected fields, as written (`Account.Name` for relationships).
    pub fields: Vec<String>,
    /// The sObject.
    pub object: String,
    /// The `WHERE` clause.
    pub filter: Option<Predicate>,
    /// `ORDER BY` keys: field and ascending.
    pub order: Vec<(String, bool)>,
    /// `LIMIT`.
    pub limit: Option<u64>,
    /// `OFFSET`.
    pub offset: Option<u64>,
    /// `FOR UPDATE`.
    pub for_update: bool,
    /// `ALL ROWS`.
    pub all_rows: bool,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number, as written.
    Number(String),
    /// A decoded string.
    String(String),
    /// `YYYY-MM-DD`.
    Date(String),
    /// `YYYY-MM-DDThh:mm:ss[.sss](Z|±hh:mm)`.
    DateTime(String),
    /// A relative date (`TODAY`, `LAST_N_DAYS` with its count).
    DateLiteral(String, Option<u32>),
}

/// One element of a decoded `LIKE` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LikePart {
    /// A character matched literally (case-insensitively).
    Char(char),
    /// `_`: any one character.
    One,
    /// `%`: any run of characters.
    Any,
}

/// A `WHERE` predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Predicate {
    /// `field op value`; `op` one of `= != < <= > >=` (`<>` is read as `!=`).
    Compare {
        /// The field.
        field: String,
        /// The operator.
        op: String,
        /// The value.
        value: Literal,
    },
    /// `field [NOT] IN (values)`.
    In {
        /// The field.
        field: String,
        /// `NOT IN`.
        negated: bool,
        /// The values.
        values: Vec<Literal>,
    },
    /// `field LIKE 'pattern'`.
    Like {
        /// The field.
        field: String,
        /// The decoded pattern.
        pattern: Vec<LikePart>,
    },
    /// `field INCLUDES|EXCLUDES ('a;b', …)`.
    Includes {
        /// The field.
        field: String,
        /// `EXCLUDES`.
        excludes: bool,
        /// The values, each a `;`-separated set.
        values: Vec<String>,
    },
    /// All.
    And(Vec<Predicate>),
    /// Any.
    Or(Vec<Predicate>),
    /// Not.
    Not(Box<Predicate>),
}

/// Why a query did not parse, with the byte position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// What is wrong.
    pub message: String,
    /// Where, in bytes from the start.
    pub at: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at position {}", self.message, self.at)
    }
}

impl std::error::Error for ParseError {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    /// A string literal's raw body (escapes not yet decoded: LIKE decodes differently).
    Str(String),
    Num(String),
    DateTime(String),
    Date(String),
    Punct(&'static str),
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            message: message.into(),
            at: self.pos,
        })
    }

    fn tokens(mut self) -> Result<Vec<(usize, Tok)>, ParseError> {
        let mut out = Vec::new();
        let bytes = self.src.as_bytes();
        while self.pos < bytes.len() {
            let c = bytes[self.pos];
            let start = self.pos;
            if c.is_ascii_whitespace() {
                self.pos += 1;
                continue;
            }
            let tok = if c == b'\'' {
                self.pos += 1;
                let body_start = self.pos;
                loop {
                    match bytes.get(self.pos) {
                        None => return self.err("unterminated string literal"),
                        Some(b'\\') => self.pos += 2,
                        Some(b'\'') => break,
                        Some(_) => self.pos += 1,
                    }
                }
                let body = self.src[body_start..self.pos].to_owned();
                self.pos += 1;
                Tok::Str(body)
            } else if c.is_ascii_digit()
                || (c == b'-' && bytes.get(self.pos + 1).is_some_and(u8::is_ascii_digit))
            {
                let rest = &self.src[self.pos..];
                let len = rest
                    .find(|ch: char| {
                        !(ch.is_ascii_alphanumeric() || matches!(ch, '-' | ':' | '.' | '+'))
                    })
                    .unwrap_or(rest.len());
                let text = &rest[..len];
                self.pos += len;
                if text.len() >= 10 && text.as_bytes().get(4) == Some(&b'-') {
                    if text.contains('T') {
                        Tok::DateTime(text.to_owned())
                    } else {
                        Tok::Date(text.to_owned())
                    }
                } else if text.parse::<f64>().is_ok() {
                    Tok::Num(text.to_owned())
                } else {
                    return self.err(format!("{text:?} is not a number or date"));
                }
            } else if c.is_ascii_alphabetic() || c == b'_' {
                let rest = &self.src[self.pos..];
                let len = rest
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_' || ch == '.'))
                    .unwrap_or(rest.len());
                self.pos += len;
                Tok::Word(rest[..len].to_owned())
            } else {
                let two = self.src.get(self.pos..self.pos + 2);
                let p = match (two, c) {
                    (Some("<="), _) => "<=",
                    (Some(">="), _) => ">=",
                    (Some("!="), _) => "!=",
                    (Some("<>"), _) => "!=",
                    (_, b'<') => "<",
                    (_, b'>') => ">",
                    (_, b'=') => "=",
                    (_, b'(') => "(",
                    (_, b')') => ")",
                    (_, b',') => ",",
                    (_, b':') => ":",
                    _ => return self.err(format!("unexpected character {:?}", c as char)),
                };
                self.pos += if p.len() == 2 || two == Some("<>") {
                    2
                } else {
                    1
                };
                Tok::Punct(p)
            };
            out.push((start, tok));
        }
        Ok(out)
    }
}

/// Decode a string literal's body. In a LIKE pattern `\%` and `\_` are literal and bare
/// `%` `_` wildcards; elsewhere `\%` and `\_` are errors.
fn decode(body: &str, at: usize, like: bool) -> Result<Vec<LikePart>, ParseError> {
    let err = |m: String| ParseError { message: m, at };
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        let part = match c {
            '\\' => match chars.next() {
                Some('n' | 'N') => LikePart::Char('\n'),
                Some('r' | 'R') => LikePart::Char('\r'),
                Some('t' | 'T') => LikePart::Char('\t'),
                Some('b' | 'B') => LikePart::Char('\u{8}'),
                Some('f' | 'F') => LikePart::Char('\u{c}'),
                Some('"') => LikePart::Char('"'),
                Some('\'') => LikePart::Char('\''),
                Some('\\') => LikePart::Char('\\'),
                Some('%') if like => LikePart::Char('%'),
                Some('_') if like => LikePart::Char('_'),
                Some('u') => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let code = u32::from_str_radix(&hex, 16)
                        .ok()
                        .filter(|_| hex.len() == 4)
                        .and_then(char::from_u32)
                        .ok_or_else(|| err(format!("invalid escape \\u{hex}")))?;
                    LikePart::Char(code)
                }
                Some(other) => return Err(err(format!("invalid escape sequence \\{other}"))),
                None => return Err(err("a string literal ends in a backslash".into())),
            },
            '%' if like => LikePart::Any,
            '_' if like => LikePart::One,
            c => LikePart::Char(c),
        };
        out.push(part);
    }
    Ok(out)
}

fn text(parts: Vec<LikePart>) -> String {
    parts
        .into_iter()
        .map(|p| match p {
            LikePart::Char(c) => c,
            LikePart::One => '_',
            LikePart::Any => '%',
        })
        .collect()
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    i: usize,
    end: usize,
}

impl Parser {
    fn at(&self) -> usize {
        self.toks.get(self.i).map_or(self.end, |t| t.0)
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|t| &t.1)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            message: message.into(),
            at: self.at(),
        })
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|t| t.1.clone());
        self.i += 1;
        t
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw)) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        if self.keyword(kw) {
            Ok(())
        } else {
            self.err(format!("expected {kw}"))
        }
    }
    fn punct(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn expect_punct(&mut self, p: &str) -> Result<(), ParseError> {
        if self.punct(p) {
            Ok(())
        } else {
            self.err(format!("expected {p:?}"))
        }
    }
    fn name(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Tok::Word(w)) if !is_reserved(&w) => Ok(w),
            _ => {
                self.i -= 1;
                self.err("expected a field or object name")
            }
        }
    }
    fn integer(&mut self) -> Result<u64, ParseError> {
        match self.next() {
            Some(Tok::Num(n)) => n.parse().or_else(|_| self.err("expected a whole number")),
            _ => self.err("expected a whole number"),
        }
    }

    fn query(&mut self) -> Result<Query, ParseError> {
        self.expect_keyword("SELECT")?;
        // `SELECT COUNT() FROM …`: the number of matches only.
        let count = matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("COUNT"))
            && {
                let at = self.i;
                self.i += 1;
                let empty_parens = self.punct("(") && self.punct(")");
                if !empty_parens {
                    self.i = at;
                }
                empty_parens
            };
        let mut fields = Vec::new();
        if !count {
            fields.push(self.name()?);
            while self.punct(",") {
                fields.push(self.name()?);
            }
        }
        self.expect_keyword("FROM")?;
        let object = self.name()?;
        let filter = if self.keyword("WHERE") {
            Some(self.or()?)
        } else {
            None
        };
        let mut order = Vec::new();
        if self.keyword("ORDER") {
            self.expect_keyword("BY")?;
            loop {
                let f = self.name()?;
                let asc = if self.keyword("DESC") {
                    false
                } else {
                    self.keyword("ASC");
                    true
                };
                if self.keyword("NULLS") && !(self.keyword("FIRST") || self.keyword("LAST")) {
                    return self.err("expected FIRST or LAST");
                }
                order.push((f, asc));
                if !self.punct(",") {
                    break;
                }
            }
        }
        let limit = if self.keyword("LIMIT") {
            Some(self.integer()?)
        } else {
            None
        };
        let offset = if self.keyword("OFFSET") {
            Some(self.integer()?)
        } else {
            None
        };
        let mut q = Query {
            count,
            fields,
            object,
            filter,
            order,
            limit,
            offset,
            for_update: false,
            all_rows: false,
        };
        if self.keyword("FOR") {
            self.expect_keyword("UPDATE")?;
            q.for_update = true;
        } else if self.keyword("ALL") {
            self.expect_keyword("ROWS")?;
            q.all_rows = true;
        }
        if self.peek().is_some() {
            return self.err("unexpected text after the query");
        }
        Ok(q)
    }

    fn or(&mut self) -> Result<Predicate, ParseError> {
        let first = self.and()?;
        if !matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("OR")) {
            return Ok(first);
        }
        let mut any = vec![first];
        while self.keyword("OR") {
            any.push(self.and()?);
        }
        Ok(Predicate::Or(any))
    }

    fn and(&mut self) -> Result<Predicate, ParseError> {
        let first = self.unary()?;
        if !matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case("AND")) {
            return Ok(first);
        }
        let mut all = vec![first];
        while self.keyword("AND") {
            all.push(self.unary()?);
        }
        Ok(Predicate::And(all))
    }

    fn unary(&mut self) -> Result<Predicate, ParseError> {
        if self.keyword("NOT") {
            return Ok(Predicate::Not(Box::new(self.unary()?)));
        }
        if self.punct("(") {
            let inner = self.or()?;
            self.expect_punct(")")?;
            return Ok(inner);
        }
        let field = self.name()?;
        if self.keyword("LIKE") {
            let at = self.at();
            return match self.next() {
                Some(Tok::Str(body)) => Ok(Predicate::Like {
                    field,
                    pattern: decode(&body, at, true)?,
                }),
                _ => self.err("LIKE needs a string"),
            };
        }
        let negated = self.keyword("NOT");
        if self.keyword("IN") {
            self.expect_punct("(")?;
            let mut values = vec![self.literal()?];
            while self.punct(",") {
                values.push(self.literal()?);
            }
            self.expect_punct(")")?;
            return Ok(Predicate::In {
                field,
                negated,
                values,
            });
        }
        if negated {
            return self.err("expected IN after NOT");
        }
        let excludes = if self.keyword("INCLUDES") {
            Some(false)
        } else if self.keyword("EXCLUDES") {
            Some(true)
        } else {
            None
        };
        if let Some(excludes) = excludes {
            self.expect_punct("(")?;
            let mut values = Vec::new();
            loop {
                let at = self.at();
                match self.next() {
                    Some(Tok::Str(body)) => values.push(text(decode(&body, at, false)?)),
                    _ => return self.err("INCLUDES and EXCLUDES take strings"),
                }
                if !self.punct(",") {
                    break;
                }
            }
            self.expect_punct(")")?;
            return Ok(Predicate::Includes {
                field,
                excludes,
                values,
            });
        }
        let op = match self.next() {
            Some(Tok::Punct(p)) if matches!(p, "=" | "!=" | "<" | "<=" | ">" | ">=") => {
                p.to_owned()
            }
            _ => {
                self.i -= 1;
                return self.err("expected a comparison operator");
            }
        };
        let value = self.literal()?;
        Ok(Predicate::Compare { field, op, value })
    }

    fn literal(&mut self) -> Result<Literal, ParseError> {
        let at = self.at();
        match self.next() {
            Some(Tok::Str(body)) => Ok(Literal::String(text(decode(&body, at, false)?))),
            Some(Tok::Num(n)) => Ok(Literal::Number(n)),
            Some(Tok::Date(d)) => Ok(Literal::Date(d)),
            Some(Tok::DateTime(d)) => Ok(Literal::DateTime(d)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("null") => Ok(Literal::Null),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Literal::Bool(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Literal::Bool(false)),
            Some(Tok::Word(w))
                if w.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_') =>
            {
                let n = if self.punct(":") {
                    Some(u32::try_from(self.integer()?).or_else(|_| self.err("count too large"))?)
                } else {
                    None
                };
                Ok(Literal::DateLiteral(w, n))
            }
            _ => {
                self.i -= 1;
                self.err("expected a value")
            }
        }
    }
}

fn is_reserved(w: &str) -> bool {
    const RESERVED: [&str; 16] = [
        "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "LIMIT",
        "OFFSET", "INCLUDES", "EXCLUDES", "NULL", "FOR",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w))
}

/// Parse a query; a [`ParseError`] names what is wrong and where.
pub fn parse(soql: &str) -> Result<Query, ParseError> {
    let toks = Lexer { src: soql, pos: 0 }.tokens()?;
    Parser {
        toks,
        i: 0,
        end: soql.len(),
    }
    .query()
}

/// Whether `text` matches a decoded LIKE `pattern` (case-insensitive, as Salesforce).
pub fn like_matches(pattern: &[LikePart], text: &str) -> bool {
    let t: Vec<char> = text.chars().flat_map(char::to_lowercase).collect();
    let p: Vec<LikePart> = pattern
        .iter()
        .flat_map(|part| match part {
            LikePart::Char(c) => c.to_lowercase().map(LikePart::Char).collect::<Vec<_>>(),
            other => vec![other.clone()],
        })
        .collect();
    // Iterative wildcard matching with backtracking to the last `%`.
    let (mut ti, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some(LikePart::Any) => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(LikePart::One) => {
                ti += 1;
                pi += 1;
            }
            Some(LikePart::Char(c)) if *c == t[ti] => {
                ti += 1;
                pi += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|x| *x == LikePart::Any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use connector_salesforce::soql::{Like, Soql, field};
    use proptest::prelude::*;

    fn where_of(q: &str) -> Predicate {
        parse(q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .filter
            .unwrap_or(Predicate::And(vec![]))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever the string, the built query parses and carries exactly that string
        /// back: user input cannot change the query's structure.
        #[test]
        fn any_string_round_trips_through_the_builder(s in any::<String>()) {
            let q = Soql::select(["Id"]).from("Account").filter(field("Name").eq(s.as_str())).limit(1).build().unwrap_or_default();
            let parsed = parse(&q).map_err(|e| TestCaseError::fail(format!("{q}: {e}")))?;
            prop_assert_eq!(parsed.limit, Some(1));
            prop_assert_eq!(parsed.filter, Some(Predicate::Compare {
                field: "Name".into(), op: "=".into(), value: Literal::String(s),
            }));
        }

        #[test]
        fn any_string_is_matched_literally_by_like(s in any::<String>(), pre in "[a-z]{0,3}", post in "[a-z]{0,3}") {
            let q = Soql::select(["Id"]).from("Account").filter(field("Name").like(Like::contains(&s))).build().unwrap_or_default();
            let Predicate::Like { pattern, .. } = where_of(&q) else { return Err(TestCaseError::fail("not a LIKE")) };
            let haystack = format!("{pre}{s}{post}");
            prop_assert!(like_matches(&pattern, &haystack), "{} should match {:?}", q, haystack);
            // Its wildcard characters are literal: the pattern never matches a text
            // lacking them (here: the same text with each % and _ replaced).
            if s.contains('%') || s.contains('_') {
                let other: String = s.chars().map(|c| if c == '%' || c == '_' { 'x' } else { c }).collect();
                prop_assert!(!like_matches(&pattern, &other), "{} matched {:?}", q, other);
            }
        }

        #[test]
        fn any_list_of_strings_round_trips_in_in(values in proptest::collection::vec(any::<String>(), 1..5)) {
            let q = Soql::select(["Id"]).from("Case").filter(field("Status").is_in(values.clone())).build().unwrap_or_default();
            let Predicate::In { values: parsed, negated, .. } = where_of(&q) else { return Err(TestCaseError::fail("not IN")) };
            prop_assert!(!negated);
            prop_assert_eq!(parsed, values.into_iter().map(Literal::String).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_structure_of_a_built_query_is_what_was_built() {
        let q = Soql::select(["Id", "Account.Name"])
            .from("Contact")
            .filter(
                field("LastName")
                    .eq("x")
                    .or(field("Email").like(Like::ends_with("@example.com")))
                    .and(
                        field("CreatedDate")
                            .ge(connector_salesforce::soql::DateLiteral::LastNDays(30)),
                    )
                    .and(!field("Tags__c").includes(["a;b"])),
            )
            .order_by("LastName", connector_salesforce::soql::Order::Desc)
            .limit(10)
            .offset(20)
            .build()
            .unwrap_or_default();
        let parsed = parse(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        assert_eq!(parsed.fields, ["Id", "Account.Name"]);
        assert_eq!(parsed.order, [("LastName".to_owned(), false)]);
        assert_eq!((parsed.limit, parsed.offset), (Some(10), Some(20)));
        let Some(Predicate::And(parts)) = parsed.filter else {
            panic!("{q}")
        };
        assert!(matches!(&parts[0], Predicate::Or(any) if any.len() == 2));
        assert_eq!(
            parts[1],
            Predicate::Compare {
                field: "CreatedDate".into(),
                op: ">=".into(),
                value: Literal::DateLiteral("LAST_N_DAYS".into(), Some(30)),
            }
        );
        assert!(
            matches!(&parts[2], Predicate::Not(inner) if matches!(**inner, Predicate::Includes { .. }))
        );
    }

    #[test]
    fn malformed_queries_say_what_and_where() {
        for (q, what) in [
            ("SELECT FROM Account", "expected a field"),
            (
                "SELECT Id FROM Account WHERE Name = 'a\\qb'",
                "invalid escape",
            ),
            ("SELECT Id FROM Account WHERE Name = 'open", "unterminated"),
            (
                "SELECT Id FROM Account WHERE Name LIKE 'x\\'",
                "unterminated",
            ),
            ("SELECT Id FROM Account LIMIT 5 garbage", "unexpected text"),
            (
                "SELECT Id FROM Account WHERE Name = 'a\\%'",
                "invalid escape",
            ),
        ] {
            let err = parse(q).expect_err(q);
            assert!(err.message.contains(what), "{q}: {err}");
        }
    }

    #[test]
    fn like_matching_is_case_insensitive_with_wildcards() {
        let Predicate::Like { pattern, .. } = where_of("SELECT Id FROM A WHERE N LIKE 'ab\\_c%d_'")
        else {
            panic!()
        };
        assert!(like_matches(&pattern, "AB_cXYZde"));
        assert!(!like_matches(&pattern, "abXcde"), "escaped _ is literal");
        assert!(!like_matches(&pattern, "ab_cd"));
    }
}
