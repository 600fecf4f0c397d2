//! Subscription rules of the Service Bus sandbox: the true and false filters, correlation
//! filters, and SQL filters — the subset of Service Bus's SQL-92 filter syntax that
//! compares properties: `=`, `<>`, `!=`, `<`, `<=`, `>`, `>=`, `AND`, `OR`, `NOT`,
//! `IN (…)`, `LIKE` (with `%`, `_` and `ESCAPE`), `IS [NOT] NULL`, `EXISTS(…)`,
//! parentheses, string, number and boolean literals. Names are application properties
//! (`type`, `user.type`) or system properties (`sys.Label`, `sys.MessageId`,
//! `sys.CorrelationId`, `sys.To`, `sys.ReplyTo`, `sys.SessionId`, `sys.ContentType`).
//! Arithmetic and rule actions are not supported: a filter using them is refused when
//! the subscription is made.

use std::collections::BTreeMap;

use fe2o3_amqp_types::messaging::MessageId;
use fe2o3_amqp_types::primitives::SimpleValue;

use super::broker::AmqpMessage;

/// A correlation filter: every property given must equal the message's.
///
/// ```
/// use azure_sandbox::CorrelationFilter;
/// let filter = CorrelationFilter {
///     subject: Some("case".to_owned()),
///     properties: [("type".to_owned(), "case.closed".to_owned())].into(),
///     ..CorrelationFilter::default()
/// };
/// assert_eq!(filter.properties["type"], "case.closed");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorrelationFilter {
    /// `CorrelationId`.
    pub correlation_id: Option<String>,
    /// `MessageId`.
    pub message_id: Option<String>,
    /// `To`.
    pub to: Option<String>,
    /// `ReplyTo`.
    pub reply_to: Option<String>,
    /// `Subject` (`Label`).
    pub subject: Option<String>,
    /// `SessionId`.
    pub session_id: Option<String>,
    /// `ReplyToSessionId`.
    pub reply_to_session_id: Option<String>,
    /// `ContentType`.
    pub content_type: Option<String>,
    /// Application properties, compared as text.
    pub properties: BTreeMap<String, String>,
}

/// The filter of a subscription rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleFilter {
    /// Every message (the `$Default` rule of a new subscription).
    True,
    /// No message.
    False,
    /// A SQL filter expression.
    Sql(String),
    /// A correlation filter.
    Correlation(CorrelationFilter),
}

/// A parsed filter.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Constant(bool),
    Sql(Expr),
    Correlation(CorrelationFilter),
}

impl Compiled {
    /// Parse `filter`; a SQL filter that does not parse is refused with the reason.
    pub(crate) fn new(filter: &RuleFilter) -> Result<Compiled, String> {
        Ok(match filter {
            RuleFilter::True => Compiled::Constant(true),
            RuleFilter::False => Compiled::Constant(false),
            RuleFilter::Sql(text) => Compiled::Sql(parse(text)?),
            RuleFilter::Correlation(c) => Compiled::Correlation(c.clone()),
        })
    }

    /// Whether `message` matches.
    pub(crate) fn matches(&self, message: &AmqpMessage) -> bool {
        match self {
            Compiled::Constant(b) => *b,
            Compiled::Sql(expr) => eval(expr, message) == Some(true),
            Compiled::Correlation(c) => correlation_matches(c, message),
        }
    }
}

fn id_text(id: &MessageId) -> String {
    match id {
        MessageId::String(s) => s.clone(),
        MessageId::Ulong(n) => n.to_string(),
        MessageId::Uuid(u) => format!("{u:?}"),
        MessageId::Binary(b) => String::from_utf8_lossy(b).into_owned(),
    }
}

/// A system property by its filter name (`sys.` left off), as text.
fn system(message: &AmqpMessage, name: &str) -> Option<String> {
    let p = message.properties.as_ref()?;
    match name.to_ascii_lowercase().as_str() {
        "messageid" => p.message_id.as_ref().map(id_text),
        "correlationid" => p.correlation_id.as_ref().map(id_text),
        "to" => p.to.clone(),
        "replyto" => p.reply_to.clone(),
        "label" | "subject" => p.subject.clone(),
        "sessionid" => p.group_id.clone(),
        "replytosessionid" => p.reply_to_group_id.clone(),
        "contenttype" => p.content_type.as_ref().map(|s| s.0.clone()),
        _ => None,
    }
}

fn simple(value: &SimpleValue) -> Val {
    match value {
        SimpleValue::String(s) => Val::Str(s.clone()),
        SimpleValue::Symbol(s) => Val::Str(s.0.clone()),
        SimpleValue::Bool(b) => Val::Bool(*b),
        SimpleValue::Long(n) => Val::Num(*n as f64),
        SimpleValue::Int(n) => Val::Num(f64::from(*n)),
        SimpleValue::Short(n) => Val::Num(f64::from(*n)),
        SimpleValue::Byte(n) => Val::Num(f64::from(*n)),
        SimpleValue::Ulong(n) => Val::Num(*n as f64),
        SimpleValue::Uint(n) => Val::Num(f64::from(*n)),
        SimpleValue::Ushort(n) => Val::Num(f64::from(*n)),
        SimpleValue::Ubyte(n) => Val::Num(f64::from(*n)),
        SimpleValue::Double(n) => Val::Num(n.into_inner()),
        SimpleValue::Float(n) => Val::Num(f64::from(n.into_inner())),
        _ => Val::Null,
    }
}

fn property(message: &AmqpMessage, name: &str) -> Val {
    if let Some(system_name) = name.strip_prefix("sys.") {
        return system(message, system_name).map_or(Val::Null, Val::Str);
    }
    let name = name.strip_prefix("user.").unwrap_or(name);
    message
        .application_properties
        .as_ref()
        .and_then(|a| a.0.get(name))
        .map_or(Val::Null, simple)
}

fn correlation_matches(c: &CorrelationFilter, message: &AmqpMessage) -> bool {
    let pairs = [
        ("correlationid", &c.correlation_id),
        ("messageid", &c.message_id),
        ("to", &c.to),
        ("replyto", &c.reply_to),
        ("label", &c.subject),
        ("sessionid", &c.session_id),
        ("replytosessionid", &c.reply_to_session_id),
        ("contenttype", &c.content_type),
    ];
    pairs.iter().all(|(name, want)| {
        want.as_ref()
            .is_none_or(|w| system(message, name).as_ref() == Some(w))
    }) && c
        .properties
        .iter()
        .all(|(k, v)| match property(message, k) {
            Val::Str(s) => &s == v,
            Val::Num(n) => v.parse::<f64>().is_ok_and(|w| w == n),
            Val::Bool(b) => v.eq_ignore_ascii_case(&b.to_string()),
            Val::Null => false,
        })
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Val {
    Null,
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A filter expression.
#[derive(Debug, Clone)]
pub(crate) enum Expr {
    Literal(Val),
    Property(String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Cmp, Box<Expr>, Box<Expr>),
    IsNull(Box<Expr>, bool),
    In(Box<Expr>, Vec<Expr>, bool),
    Like(Box<Expr>, String, Option<char>, bool),
    Exists(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Str(String),
    Num(f64),
    Op(&'static str),
}

fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("a string literal is not closed".to_owned()),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        s.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push(Token::Str(s));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let n: String = chars[start..i].iter().collect();
            out.push(Token::Num(
                n.parse().map_err(|_| format!("{n} is not a number"))?,
            ));
        } else if c.is_alphabetic() || c == '_' || c == '[' {
            let mut s = String::new();
            if c == '[' {
                i += 1;
                while i < chars.len() && chars[i] != ']' {
                    s.push(chars[i]);
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
                {
                    s.push(chars[i]);
                    i += 1;
                }
            }
            out.push(Token::Word(s));
        } else {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = match two.as_str() {
                "<>" => Some("<>"),
                "!=" => Some("<>"),
                "<=" => Some("<="),
                ">=" => Some(">="),
                _ => None,
            };
            if let Some(op) = op {
                out.push(Token::Op(op));
                i += 2;
                continue;
            }
            let op = match c {
                '=' => "=",
                '<' => "<",
                '>' => ">",
                '(' => "(",
                ')' => ")",
                ',' => ",",
                other => return Err(format!("`{other}` is not supported in a SQL filter")),
            };
            out.push(Token::Op(op));
            i += 1;
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Word(w)) if w.eq_ignore_ascii_case(word)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn op(&mut self, op: &str) -> bool {
        if self.peek()
            == Some(&Token::Op(match op {
                "(" => "(",
                ")" => ")",
                "," => ",",
                _ => return false,
            }))
        {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), String> {
        if self.op(op) {
            Ok(())
        } else {
            Err(format!("expected `{op}` at token {}", self.at + 1))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("OR") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.keyword("AND") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("NOT") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, String> {
        if self.keyword("EXISTS") {
            self.expect("(")?;
            let Some(Token::Word(name)) = self.peek().cloned() else {
                return Err("EXISTS takes a property name".to_owned());
            };
            self.at += 1;
            self.expect(")")?;
            return Ok(Expr::Exists(name));
        }
        let left = self.primary()?;
        if self.keyword("IS") {
            let negated = self.keyword("NOT");
            if !self.keyword("NULL") {
                return Err("IS must be followed by NULL or NOT NULL".to_owned());
            }
            return Ok(Expr::IsNull(Box::new(left), negated));
        }
        let negated = self.keyword("NOT");
        if self.keyword("IN") {
            self.expect("(")?;
            let mut items = vec![self.primary()?];
            while self.op(",") {
                items.push(self.primary()?);
            }
            self.expect(")")?;
            return Ok(Expr::In(Box::new(left), items, negated));
        }
        if self.keyword("LIKE") {
            let Some(Token::Str(pattern)) = self.peek().cloned() else {
                return Err("LIKE takes a string pattern".to_owned());
            };
            self.at += 1;
            let escape = if self.keyword("ESCAPE") {
                match self.peek().cloned() {
                    Some(Token::Str(e)) if e.chars().count() == 1 => {
                        self.at += 1;
                        e.chars().next()
                    }
                    _ => return Err("ESCAPE takes one character".to_owned()),
                }
            } else {
                None
            };
            return Ok(Expr::Like(Box::new(left), pattern, escape, negated));
        }
        if negated {
            return Err("NOT here must be followed by IN or LIKE".to_owned());
        }
        let cmp = match self.peek() {
            Some(Token::Op("=")) => Cmp::Eq,
            Some(Token::Op("<>")) => Cmp::Ne,
            Some(Token::Op("<")) => Cmp::Lt,
            Some(Token::Op("<=")) => Cmp::Le,
            Some(Token::Op(">")) => Cmp::Gt,
            Some(Token::Op(">=")) => Cmp::Ge,
            _ => return Ok(left),
        };
        self.at += 1;
        Ok(Expr::Compare(
            cmp,
            Box::new(left),
            Box::new(self.primary()?),
        ))
    }

    fn primary(&mut self) -> Result<Expr, String> {
        match self.peek().cloned() {
            Some(Token::Op("(")) => {
                self.at += 1;
                let inner = self.or()?;
                self.expect(")")?;
                Ok(inner)
            }
            Some(Token::Str(s)) => {
                self.at += 1;
                Ok(Expr::Literal(Val::Str(s)))
            }
            Some(Token::Num(n)) => {
                self.at += 1;
                Ok(Expr::Literal(Val::Num(n)))
            }
            Some(Token::Word(w)) => {
                self.at += 1;
                Ok(match w.to_ascii_uppercase().as_str() {
                    "TRUE" => Expr::Literal(Val::Bool(true)),
                    "FALSE" => Expr::Literal(Val::Bool(false)),
                    "NULL" => Expr::Literal(Val::Null),
                    _ => Expr::Property(w),
                })
            }
            other => Err(format!("unexpected {other:?} at token {}", self.at + 1)),
        }
    }
}

/// Parse a SQL filter expression.
fn parse(text: &str) -> Result<Expr, String> {
    let mut parser = Parser {
        tokens: tokens(text)?,
        at: 0,
    };
    let expr = parser.or()?;
    if parser.at != parser.tokens.len() {
        return Err(format!(
            "unexpected {:?} at token {} (arithmetic and functions are not supported)",
            parser.tokens[parser.at],
            parser.at + 1
        ));
    }
    Ok(expr)
}

fn value(expr: &Expr, message: &AmqpMessage) -> Val {
    match expr {
        Expr::Literal(v) => v.clone(),
        Expr::Property(name) => property(message, name),
        other => match eval(other, message) {
            Some(b) => Val::Bool(b),
            None => Val::Null,
        },
    }
}

fn compare(cmp: Cmp, a: &Val, b: &Val) -> Option<bool> {
    let order = match (a, b) {
        (Val::Null, _) | (_, Val::Null) => return None,
        (Val::Num(x), Val::Num(y)) => x.partial_cmp(y)?,
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        _ => return Some(cmp == Cmp::Ne),
    };
    Some(match cmp {
        Cmp::Eq => order.is_eq(),
        Cmp::Ne => order.is_ne(),
        Cmp::Lt => order.is_lt(),
        Cmp::Le => order.is_le(),
        Cmp::Gt => order.is_gt(),
        Cmp::Ge => order.is_ge(),
    })
}

fn like(text: &[char], pattern: &[char], escape: Option<char>) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(c) if Some(*c) == escape => match pattern.get(1) {
            Some(literal) => {
                text.first() == Some(literal) && like(&text[1..], &pattern[2..], escape)
            }
            None => false,
        },
        Some('%') => (0..=text.len()).any(|skip| like(&text[skip..], &pattern[1..], escape)),
        Some('_') => !text.is_empty() && like(&text[1..], &pattern[1..], escape),
        Some(c) => text.first() == Some(c) && like(&text[1..], &pattern[1..], escape),
    }
}

/// Three-valued: `None` is unknown (a comparison with a missing property).
fn eval(expr: &Expr, message: &AmqpMessage) -> Option<bool> {
    match expr {
        Expr::Literal(Val::Bool(b)) => Some(*b),
        Expr::Literal(_) => None,
        Expr::Property(_) => match value(expr, message) {
            Val::Bool(b) => Some(b),
            _ => None,
        },
        Expr::Not(inner) => eval(inner, message).map(|b| !b),
        Expr::And(a, b) => match (eval(a, message), eval(b, message)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Or(a, b) => match (eval(a, message), eval(b, message)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::Compare(cmp, a, b) => compare(*cmp, &value(a, message), &value(b, message)),
        Expr::IsNull(inner, negated) => Some((value(inner, message) == Val::Null) != *negated),
        Expr::In(inner, items, negated) => {
            let v = value(inner, message);
            if v == Val::Null {
                return None;
            }
            let found = items
                .iter()
                .any(|i| compare(Cmp::Eq, &v, &value(i, message)) == Some(true));
            Some(found != *negated)
        }
        Expr::Like(inner, pattern, escape, negated) => match value(inner, message) {
            Val::Str(s) => {
                let text: Vec<char> = s.chars().collect();
                let pattern: Vec<char> = pattern.chars().collect();
                Some(like(&text, &pattern, *escape) != *negated)
            }
            _ => None,
        },
        Expr::Exists(name) => Some(property(message, name) != Val::Null),
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use fe2o3_amqp_types::messaging::{ApplicationProperties, Body, Message, Properties};
    use fe2o3_amqp_types::primitives::OrderedMap;

    use super::*;

    fn message(subject: &str, properties: &[(&str, SimpleValue)]) -> AmqpMessage {
        let mut map = OrderedMap::new();
        for (k, v) in properties {
            map.insert((*k).to_owned(), v.clone());
        }
        Message {
            header: None,
            delivery_annotations: None,
            message_annotations: None,
            properties: Some(Properties {
                subject: Some(subject.to_owned()),
                ..Properties::default()
            }),
            application_properties: Some(ApplicationProperties(map)),
            body: Body::Empty,
            footer: None,
        }
    }

    fn sql(text: &str, m: &AmqpMessage) -> bool {
        Compiled::new(&RuleFilter::Sql(text.to_owned()))
            .unwrap()
            .matches(m)
    }

    #[test]
    fn sql_filters_compare_properties_with_three_valued_logic() {
        let m = message(
            "case",
            &[
                ("type", SimpleValue::String("case.closed".to_owned())),
                ("amount", SimpleValue::Long(1200)),
                ("urgent", SimpleValue::Bool(true)),
            ],
        );
        assert!(sql("type = 'case.closed'", &m));
        assert!(sql("user.type = 'case.closed' AND amount > 1000", &m));
        assert!(sql("sys.Label = 'case' AND urgent = TRUE", &m));
        assert!(sql("type IN ('case.opened', 'case.closed')", &m));
        assert!(sql("type LIKE 'case.%' AND NOT type LIKE '%open%'", &m));
        assert!(sql("missing IS NULL AND EXISTS(amount)", &m));
        assert!(sql("(amount < 10 OR amount >= 1200) AND type <> 'x'", &m));
        assert!(!sql("missing = 'x'", &m), "unknown is not a match");
        assert!(!sql("NOT missing = 'x'", &m), "NOT unknown is unknown");
        assert!(sql("missing = 'x' OR amount = 1200", &m));
        assert!(sql(
            "type LIKE 'case\\_%' ESCAPE '\\' OR type = 'case.closed'",
            &m
        ));
        for bad in ["amount + 1 > 2", "type = 'open", "type IN 'a'", "IS NULL"] {
            assert!(
                Compiled::new(&RuleFilter::Sql(bad.to_owned())).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn correlation_filters_need_every_given_field() {
        let m = message(
            "case",
            &[("type", SimpleValue::String("case.closed".to_owned()))],
        );
        let filter = |subject: &str, ty: &str| {
            Compiled::new(&RuleFilter::Correlation(CorrelationFilter {
                subject: Some(subject.to_owned()),
                properties: [("type".to_owned(), ty.to_owned())].into(),
                ..CorrelationFilter::default()
            }))
            .unwrap()
        };
        assert!(filter("case", "case.closed").matches(&m));
        assert!(!filter("case", "case.opened").matches(&m));
        assert!(!filter("account", "case.closed").matches(&m));
    }
}
