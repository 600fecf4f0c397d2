//! The statements the sandbox runs: a small subset of Snowflake SQL, enough to exercise
//! the protocol (results of any size, slow statements, DML with binds, result reuse).
//! Anything else is refused with Snowflake's syntax error.
//!
//! | statement | what it does |
//! |---|---|
//! | `SELECT * FROM t [LIMIT n]` | the table's rows (chunked when large) |
//! | `SELECT COUNT(*) FROM t` | its row count |
//! | `SELECT n` | one row, one `FIXED` column |
//! | `SELECT SYSTEM$WAIT(n [, 'SECONDS' \| 'MILLISECONDS'])` | sleeps, then `"waited n seconds"` |
//! | `SELECT * FROM TABLE(RESULT_SCAN('<query id>'))` | a finished query's result again |
//! | `INSERT INTO t [(c, …)] VALUES (…)[, (…)]` | `?` binds (array binds too) and literals |
//! | `SELECT SYSTEM$CANCEL_QUERY('<query id>')` | cancels a running query |
//! | `USE ROLE \| WAREHOUSE \| DATABASE \| SCHEMA name` | changes the session's context |
//! | `ALTER SESSION SET name = value`, `ALTER SESSION UNSET name` | session parameters (`QUERY_TAG` …) |
//! | `SELECT CURRENT_SESSION() \| CURRENT_ROLE() \| CURRENT_WAREHOUSE() \| CURRENT_DATABASE() \| CURRENT_SCHEMA()` | the session's id and context |
//! | `SHOW GRANTS TO ROLE name` | the role's grants as configured, in `SHOW GRANTS`' columns |
//! | `CREATE [OR REPLACE] [TEMPORARY] STAGE name …` | nothing (any stage name takes files) |

use std::sync::LazyLock;
use std::time::Duration;

use regex::Regex;

/// One parsed statement.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Statement {
    SelectAll {
        table: String,
        limit: Option<usize>,
    },
    Count {
        table: String,
    },
    Literal(i64),
    Wait(Duration),
    ResultScan(String),
    CancelQuery(String),
    Insert {
        table: String,
        columns: Vec<String>,
        rows: Vec<Vec<Value>>,
    },
    /// `USE <kind> <name>`: kind is `ROLE`, `WAREHOUSE`, `DATABASE` or `SCHEMA`.
    Use {
        kind: String,
        name: String,
    },
    /// `ALTER SESSION SET name = value` (`None`: `UNSET`).
    AlterSession {
        name: String,
        value: Option<String>,
    },
    /// `SELECT CURRENT_<what>()`.
    Current(String),
    /// `SHOW GRANTS TO ROLE <role>` (upper case).
    ShowGrants(String),
    /// `CREATE [OR REPLACE] [TEMPORARY] STAGE <name> …` (stages need no creating here).
    CreateStage(String),
    /// `PUT 'file://<file>' @stage[/path] [OPTION = value …]` (the stage may be a `?`
    /// bind, as drivers send a stream's upload).
    Put {
        file: String,
        stage: String,
        options: std::collections::HashMap<String, String>,
    },
    /// `GET @stage[/path] 'file://<dir>'`.
    Get {
        stage: String,
        local: String,
    },
    /// `LIST @stage[/path]`.
    List(String),
    /// `REMOVE @stage[/path]`.
    Remove(String),
}

/// A value in an `INSERT`'s `VALUES` list.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    /// A `?` placeholder (its position among the statement's placeholders, from 0).
    Placeholder(usize),
    Literal(Option<String>),
}

/// Snowflake's error for a statement it cannot run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SqlError {
    pub code: &'static str,
    pub sql_state: &'static str,
    pub message: String,
}

impl SqlError {
    pub(crate) fn syntax(message: impl Into<String>) -> Self {
        SqlError {
            code: "001003",
            sql_state: "42000",
            message: format!("SQL compilation error:\n{}", message.into()),
        }
    }

    pub(crate) fn no_table(name: &str) -> Self {
        SqlError {
            code: "002003",
            sql_state: "42S02",
            message: format!(
                "SQL compilation error:\nObject '{name}' does not exist or not authorized."
            ),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        SqlError {
            code: "100038",
            sql_state: "22018",
            message: message.into(),
        }
    }
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("the pattern {pattern}: {e}"))
}

static SELECT_ALL: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?is)^select\s+\*\s+from\s+([A-Za-z_][A-Za-z0-9_$.]*)(?:\s+limit\s+(\d+))?$")
});
static COUNT: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?is)^select\s+count\s*\(\s*\*\s*\)\s+from\s+([A-Za-z_][A-Za-z0-9_$.]*)$")
});
static LITERAL: LazyLock<Regex> = LazyLock::new(|| regex(r"(?is)^select\s+(-?\d+)$"));
static WAIT: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?is)^select\s+system\$wait\s*\(\s*(\d+(?:\.\d+)?)\s*(?:,\s*'(seconds|milliseconds)'\s*)?\)$",
    )
});
static RESULT_SCAN: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?is)^select\s+\*\s+from\s+table\s*\(\s*result_scan\s*\(\s*'([^']+)'\s*\)\s*\)$")
});
static CREATE_STAGE: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?is)^create\s+(?:or\s+replace\s+)?(?:temporary\s+|temp\s+)?stage\s+(?:if\s+not\s+exists\s+)?([A-Za-z_$][A-Za-z0-9_$]*)(?:\s.*)?$",
    )
});
static SHOW_GRANTS: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?is)^show\s+grants\s+to\s+role\s+([A-Za-z_][A-Za-z0-9_$]*)$"));
static CANCEL: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?is)^select\s+system\$cancel_query\s*\(\s*'([^']+)'\s*\)$"));
static INSERT: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?is)^insert\s+into\s+([A-Za-z_][A-Za-z0-9_$.]*)\s*(?:\(([^)]*)\))?\s*values\s*(.+)$")
});

static USE: LazyLock<Regex> = LazyLock::new(|| {
    regex(r#"(?is)^use\s+(role|warehouse|database|schema)\s+"?([A-Za-z0-9_$.]+)"?$"#)
});
static ALTER_SET: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?is)^alter\s+session\s+set\s+([A-Za-z_]+)\s*=\s*(?:'([^']*)'|(\S+))$")
});
static ALTER_UNSET: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?is)^alter\s+session\s+unset\s+([A-Za-z_]+)$"));
static PUT: LazyLock<Regex> = LazyLock::new(|| {
    regex(
        r"(?is)^put\s+'?file://([^'\s]+)'?\s+'?(@[^'\s]+|\?)'?((?:\s+[A-Za-z_]+\s*=\s*'?[A-Za-z0-9_]+'?)*)\s*$",
    )
});
static OPTION: LazyLock<Regex> = LazyLock::new(|| regex(r"([A-Za-z_]+)\s*=\s*'?([A-Za-z0-9_]+)'?"));
static GET: LazyLock<Regex> =
    LazyLock::new(|| regex(r"(?is)^get\s+'?(@[^'\s]+)'?\s+'?file://([^'\s]+)'?(?:\s+.*)?$"));
static LIST: LazyLock<Regex> = LazyLock::new(|| regex(r"(?is)^(?:list|ls)\s+'?(@[^'\s]+)'?$"));
static REMOVE: LazyLock<Regex> = LazyLock::new(|| regex(r"(?is)^(?:remove|rm)\s+'?(@[^'\s]+)'?$"));
static CURRENT: LazyLock<Regex> = LazyLock::new(|| {
    regex(r"(?is)^select\s+current_(session|role|warehouse|database|schema)\s*\(\s*\)$")
});

/// The table name without a database and schema, upper case.
fn table_name(text: &str) -> String {
    text.rsplit('.').next().unwrap_or(text).to_ascii_uppercase()
}

/// Split a request's SQL into statements at `;` outside quotes, dropping empty ones.
pub(crate) fn split(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => {
                out.push(std::mem::take(&mut current));
            }
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parse one statement (no `;` inside).
pub(crate) fn parse(sql: &str) -> Result<Statement, SqlError> {
    let sql = sql.trim();
    if let Some(c) = SELECT_ALL.captures(sql) {
        return Ok(Statement::SelectAll {
            table: table_name(&c[1]),
            limit: c.get(2).and_then(|m| m.as_str().parse().ok()),
        });
    }
    if let Some(c) = COUNT.captures(sql) {
        return Ok(Statement::Count {
            table: table_name(&c[1]),
        });
    }
    if let Some(c) = LITERAL.captures(sql) {
        let n = c[1]
            .parse()
            .map_err(|_| SqlError::invalid(format!("Numeric value '{}' is out of range", &c[1])))?;
        return Ok(Statement::Literal(n));
    }
    if let Some(c) = WAIT.captures(sql) {
        let amount: f64 = c[1].parse().unwrap_or_default();
        let seconds = match c.get(2).map(|m| m.as_str().to_ascii_lowercase()) {
            Some(unit) if unit == "milliseconds" => amount / 1000.0,
            _ => amount,
        };
        return Ok(Statement::Wait(Duration::from_secs_f64(seconds)));
    }
    if let Some(c) = RESULT_SCAN.captures(sql) {
        return Ok(Statement::ResultScan(c[1].to_owned()));
    }
    if let Some(c) = CANCEL.captures(sql) {
        return Ok(Statement::CancelQuery(c[1].to_owned()));
    }
    if let Some(c) = INSERT.captures(sql) {
        let columns = c
            .get(2)
            .map(|m| {
                m.as_str()
                    .split(',')
                    .map(|s| s.trim().trim_matches('"').to_ascii_uppercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Statement::Insert {
            table: table_name(&c[1]),
            columns,
            rows: values(&c[3])?,
        });
    }
    if let Some(c) = USE.captures(sql) {
        return Ok(Statement::Use {
            kind: c[1].to_ascii_uppercase(),
            name: c[2].to_ascii_uppercase(),
        });
    }
    if let Some(c) = ALTER_SET.captures(sql) {
        let value = c.get(2).or_else(|| c.get(3)).map(|m| m.as_str().to_owned());
        return Ok(Statement::AlterSession {
            name: c[1].to_ascii_uppercase(),
            value,
        });
    }
    if let Some(c) = ALTER_UNSET.captures(sql) {
        return Ok(Statement::AlterSession {
            name: c[1].to_ascii_uppercase(),
            value: None,
        });
    }
    if let Some(c) = CURRENT.captures(sql) {
        return Ok(Statement::Current(c[1].to_ascii_uppercase()));
    }
    if let Some(c) = CREATE_STAGE.captures(sql) {
        return Ok(Statement::CreateStage(c[1].to_ascii_uppercase()));
    }
    if let Some(c) = SHOW_GRANTS.captures(sql) {
        return Ok(Statement::ShowGrants(c[1].to_ascii_uppercase()));
    }
    if let Some(c) = PUT.captures(sql) {
        let options = OPTION
            .captures_iter(&c[3])
            .map(|o| (o[1].to_ascii_uppercase(), o[2].to_owned()))
            .collect();
        // `file:///a/b` is the path /a/b; `file://b` (as the drivers ask for a
        // presigned URL) the name b.
        return Ok(Statement::Put {
            file: c[1].to_owned(),
            stage: c[2].to_owned(),
            options,
        });
    }
    if let Some(c) = GET.captures(sql) {
        return Ok(Statement::Get {
            stage: c[1].to_owned(),
            local: c[2].to_owned(),
        });
    }
    if let Some(c) = LIST.captures(sql) {
        return Ok(Statement::List(c[1].to_owned()));
    }
    if let Some(c) = REMOVE.captures(sql) {
        return Ok(Statement::Remove(c[1].to_owned()));
    }
    let first = sql.split_whitespace().next().unwrap_or_default();
    Err(SqlError::syntax(format!(
        "syntax error line 1 at position 0 unexpected '{first}' (the sandbox runs SELECT * / COUNT(*) FROM a table, SELECT n, SYSTEM$WAIT, RESULT_SCAN, SYSTEM$CANCEL_QUERY, INSERT … VALUES, USE, ALTER SESSION, CURRENT_*(), SHOW GRANTS TO ROLE, PUT, GET, LIST and REMOVE)"
    )))
}

/// `(?, 'a', 1, NULL), (…)`: rows of placeholders and literals.
fn values(text: &str) -> Result<Vec<Vec<Value>>, SqlError> {
    let mut rows = Vec::new();
    let mut row: Option<Vec<Value>> = None;
    let mut placeholders = 0;
    let mut chars = text.chars().peekable();
    let bad = |what: &str| SqlError::syntax(format!("syntax error in VALUES: {what}"));
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() || c == ',' => {}
            '(' if row.is_none() => row = Some(Vec::new()),
            ')' => rows.push(row.take().ok_or_else(|| bad("unexpected ')'"))?),
            '?' => {
                row.as_mut()
                    .ok_or_else(|| bad("'?' outside a row"))?
                    .push(Value::Placeholder(placeholders));
                placeholders += 1;
            }
            '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            s.push('\'');
                        }
                        Some('\'') => break,
                        Some(c) => s.push(c),
                        None => return Err(bad("unterminated string")),
                    }
                }
                row.as_mut()
                    .ok_or_else(|| bad("a string outside a row"))?
                    .push(Value::Literal(Some(s)));
            }
            _ => {
                let mut word = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n == ',' || n == ')' || n.is_whitespace() {
                        break;
                    }
                    word.push(n);
                    chars.next();
                }
                let value = if word.eq_ignore_ascii_case("null") {
                    None
                } else {
                    Some(word)
                };
                row.as_mut()
                    .ok_or_else(|| bad("a value outside a row"))?
                    .push(Value::Literal(value));
            }
        }
    }
    if row.is_some() || rows.is_empty() {
        return Err(bad("a row is not closed"));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_parse_case_insensitively() {
        assert_eq!(
            parse("select * from sandbox.public.accounts limit 5").unwrap(),
            Statement::SelectAll {
                table: "ACCOUNTS".into(),
                limit: Some(5)
            }
        );
        assert_eq!(
            parse("SELECT SYSTEM$WAIT(250, 'MILLISECONDS')").unwrap(),
            Statement::Wait(Duration::from_millis(250))
        );
        assert_eq!(parse("select 1").unwrap(), Statement::Literal(1));
        assert_eq!(parse("drop table x").unwrap_err().code, "001003");
        assert_eq!(
            parse("alter session set QUERY_TAG = 'run 7'").unwrap(),
            Statement::AlterSession {
                name: "QUERY_TAG".into(),
                value: Some("run 7".into())
            }
        );
        assert_eq!(
            parse("use schema staging").unwrap(),
            Statement::Use {
                kind: "SCHEMA".into(),
                name: "STAGING".into()
            }
        );
        assert_eq!(
            parse("select current_session()").unwrap(),
            Statement::Current("SESSION".into())
        );
    }

    #[test]
    fn insert_values_mix_placeholders_and_literals() {
        let Statement::Insert {
            table,
            columns,
            rows,
        } = parse("insert into t (a, b) values (?, 'it''s'), (NULL, 2)").unwrap()
        else {
            panic!("not an insert")
        };
        assert_eq!(table, "T");
        assert_eq!(columns, ["A", "B"]);
        assert_eq!(
            rows,
            vec![
                vec![Value::Placeholder(0), Value::Literal(Some("it's".into()))],
                vec![Value::Literal(None), Value::Literal(Some("2".into()))],
            ]
        );
    }

    #[test]
    fn statements_split_at_semicolons_outside_quotes() {
        assert_eq!(
            split("select 1; insert into t values ('a;b');\n"),
            ["select 1", "insert into t values ('a;b')"]
        );
    }
}
