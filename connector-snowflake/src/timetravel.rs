//! Time travel and versions: tables read as they were (`AT` / `BEFORE`), zero-copy
//! `CLONE` snapshots taken per sync run and restored from, `UNDROP`, and the retention
//! that bounds how far back either reaches.
//!
//! The statements are built here and run through a [`SnowflakeClient`]; each builder
//! checks what it is given (a query id must be one, a name a plain identifier), so
//! nothing from config or a caller reaches the SQL text unquoted.
//!
//! ```
//! use connector_snowflake::timetravel::TimeTravel;
//!
//! let before = TimeTravel::before_statement("01b2c3d4-0000-4a5b-0000-0001a2b3c4d5").unwrap();
//! assert_eq!(
//!     before.select("Case", &["Id", "Status"]),
//!     r#"SELECT "Id", "Status" FROM "Case" BEFORE(STATEMENT => '01b2c3d4-0000-4a5b-0000-0001a2b3c4d5')"#
//! );
//! assert_eq!(
//!     TimeTravel::seconds_ago(300).clause(),
//!     "AT(OFFSET => -300)"
//! );
//! ```

use chrono::{DateTime, SecondsFormat, Utc};
use moodbridge_core::observe::RunScope;
use moodbridge_core::{Error, Result};

use crate::PLATFORM;
use crate::bind::Bind;
use crate::client::SnowflakeClient;
use crate::sql::{ident, literal};

/// A point in a table's history.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Point {
    Timestamp(DateTime<Utc>),
    Offset(u64),
    Statement(String),
}

/// A point in a table's history, `AT` it or just `BEFORE` it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeTravel {
    before: bool,
    point: Point,
}

fn query_id(id: &str) -> Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.hyphenated().to_string())
        .map_err(|_| {
            Error::invalid_input(format!("{id:?} is not a Snowflake query id"))
                .with_connector(PLATFORM)
                .with_hint("give the query id Snowflake returned (a UUID such as 01b2c3d4-0000-4a5b-0000-0001a2b3c4d5)")
        })
}

impl TimeTravel {
    /// The table as it was at `at`.
    pub fn at_time(at: DateTime<Utc>) -> Self {
        TimeTravel {
            before: false,
            point: Point::Timestamp(at),
        }
    }

    /// The table as it was just before `at`.
    pub fn before_time(at: DateTime<Utc>) -> Self {
        TimeTravel {
            before: true,
            point: Point::Timestamp(at),
        }
    }

    /// The table as it was `seconds` ago.
    pub fn seconds_ago(seconds: u64) -> Self {
        TimeTravel {
            before: false,
            point: Point::Offset(seconds),
        }
    }

    /// The table as the statement `query_id` left it (its changes included).
    ///
    /// # Errors
    /// `query_id` is not a query id
    /// ([`InvalidInput`](moodbridge_core::ErrorKind::InvalidInput)).
    pub fn at_statement(query_id: &str) -> Result<Self> {
        Ok(TimeTravel {
            before: false,
            point: Point::Statement(self::query_id(query_id)?),
        })
    }

    /// The table as it was before the statement `query_id` changed it: how a bad load is
    /// looked at, or undone (a clone of the table before it).
    ///
    /// # Errors
    /// `query_id` is not a query id
    /// ([`InvalidInput`](moodbridge_core::ErrorKind::InvalidInput)).
    pub fn before_statement(query_id: &str) -> Result<Self> {
        Ok(TimeTravel {
            before: true,
            point: Point::Statement(self::query_id(query_id)?),
        })
    }

    /// The clause: `AT(TIMESTAMP => '…'::TIMESTAMP_TZ)`, `AT(OFFSET => -n)`,
    /// `BEFORE(STATEMENT => '…')`.
    pub fn clause(&self) -> String {
        let point = match &self.point {
            Point::Timestamp(at) => format!(
                "TIMESTAMP => {}::TIMESTAMP_TZ",
                literal(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
            ),
            Point::Offset(seconds) => format!("OFFSET => -{seconds}"),
            Point::Statement(id) => format!("STATEMENT => {}", literal(id)),
        };
        format!("{}({point})", if self.before { "BEFORE" } else { "AT" })
    }

    /// `SELECT <columns> FROM <table> <clause>` (every column when `columns` is empty).
    pub fn select(&self, table: &str, columns: &[&str]) -> String {
        let columns = if columns.is_empty() {
            "*".to_owned()
        } else {
            columns
                .iter()
                .map(|c| ident(c))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!("SELECT {columns} FROM {} {}", ident(table), self.clause())
    }
}

/// `CREATE TABLE <target> CLONE <source> [<when>]`: a zero-copy copy of `source` (as it
/// is, or as it was).
///
/// ```
/// use connector_snowflake::timetravel::{TimeTravel, clone_table};
/// assert_eq!(
///     clone_table("Case_restored", "Case", Some(&TimeTravel::seconds_ago(3600))),
///     r#"CREATE TABLE "Case_restored" CLONE "Case" AT(OFFSET => -3600)"#
/// );
/// ```
pub fn clone_table(target: &str, source: &str, when: Option<&TimeTravel>) -> String {
    let mut sql = format!("CREATE TABLE {} CLONE {}", ident(target), ident(source));
    if let Some(when) = when {
        sql.push(' ');
        sql.push_str(&when.clause());
    }
    sql
}

/// The kinds of object `UNDROP` brings back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Droppable {
    /// A table.
    Table,
    /// A schema.
    Schema,
    /// A database.
    Database,
}

/// `UNDROP TABLE | SCHEMA | DATABASE <name>`: the most recently dropped object of that
/// name, while it is within its retention.
///
/// ```
/// use connector_snowflake::timetravel::{Droppable, undrop};
/// assert_eq!(undrop(Droppable::Table, "Case"), r#"UNDROP TABLE "Case""#);
/// ```
pub fn undrop(kind: Droppable, name: &str) -> String {
    let kind = match kind {
        Droppable::Table => "TABLE",
        Droppable::Schema => "SCHEMA",
        Droppable::Database => "DATABASE",
    };
    format!("UNDROP {kind} {}", ident(name))
}

/// `ALTER TABLE <table> SET DATA_RETENTION_TIME_IN_DAYS = <days>`: how long its history
/// (time travel, `UNDROP`) is kept — up to 1 day on Standard edition, 90 on Enterprise.
///
/// # Errors
/// More than 90 days ([`InvalidInput`](moodbridge_core::ErrorKind::InvalidInput)).
///
/// ```
/// use connector_snowflake::timetravel::retention;
/// assert_eq!(
///     retention("Case", 30).unwrap(),
///     r#"ALTER TABLE "Case" SET DATA_RETENTION_TIME_IN_DAYS = 30"#
/// );
/// assert!(retention("Case", 91).is_err());
/// ```
pub fn retention(table: &str, days: u32) -> Result<String> {
    if days > 90 {
        return Err(Error::invalid_input(format!(
            "a retention of {days} days is more than Snowflake keeps (90)"
        ))
        .with_connector(PLATFORM)
        .with_hint("give 0 to 90 days (Standard edition allows 0 or 1)"));
    }
    Ok(format!(
        "ALTER TABLE {} SET DATA_RETENTION_TIME_IN_DAYS = {days}",
        ident(table)
    ))
}

/// Zero-copy snapshots of tables, one per sync run: `<table>__RUN_<id>`, taken before a
/// run changes the table, restored from when the run must be undone, pruned to the
/// newest few.
///
/// ```no_run
/// use connector_snowflake::timetravel::Snapshots;
/// # async fn run(client: connector_snowflake::SnowflakeClient) -> moodbridge_core::Result<()> {
/// let snapshots = Snapshots::new(client);
/// let name = snapshots.take("Case", 42).await?;
/// assert_eq!(name, "Case__RUN_42");
/// // … the run loads a bad batch …
/// snapshots.restore("Case", 42).await?;
/// snapshots.prune("Case", 5).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Snapshots {
    client: SnowflakeClient,
}

const SNAPSHOT_MARK: &str = "__RUN_";

impl Snapshots {
    /// Snapshots through `client`, in its current schema.
    pub fn new(client: SnowflakeClient) -> Self {
        Snapshots { client }
    }

    /// The snapshot of `table` for run `run`.
    pub fn name(table: &str, run: i64) -> String {
        format!("{table}{SNAPSHOT_MARK}{run}")
    }

    /// Clone `table` as the snapshot of run `run` (the run in scope when `None`
    /// is given to [`take_for_current_run`](Self::take_for_current_run)). Taking it again
    /// keeps the first.
    ///
    /// # Errors
    /// The statement's (a missing table is
    /// [`NotFound`](moodbridge_core::ErrorKind::NotFound)).
    pub async fn take(&self, table: &str, run: i64) -> Result<String> {
        let name = Self::name(table, run);
        if self.exists(&name).await? {
            return Ok(name);
        }
        self.client
            .execute(&clone_table(&name, table, None), &[])
            .await?;
        Ok(name)
    }

    /// [`take`](Self::take) for the sync run in scope
    /// ([`RunScope`]); `None` outside a run.
    ///
    /// # Errors
    /// As [`take`](Self::take).
    pub async fn take_for_current_run(&self, table: &str) -> Result<Option<String>> {
        match RunScope::current() {
            Some(scope) => self.take(table, scope.run()).await.map(Some),
            None => Ok(None),
        }
    }

    async fn exists(&self, table: &str) -> Result<bool> {
        let rows = self
            .client
            .execute(
                "SELECT COUNT(*) AS N FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = CURRENT_SCHEMA() AND TABLE_NAME = ?",
                &[Bind::text(table)],
            )
            .await?
            .json_rows()?;
        Ok(rows.first().and_then(|r| r["N"].as_u64()).unwrap_or(0) > 0)
    }

    /// Make `table` what it was when run `run`'s snapshot was taken: its rows replaced
    /// by the snapshot's, in one transaction (the table keeps its grants, its history
    /// and any column added since, left empty).
    ///
    /// # Errors
    /// No such snapshot ([`NotFound`](moodbridge_core::ErrorKind::NotFound)); the
    /// statements'.
    pub async fn restore(&self, table: &str, run: i64) -> Result<()> {
        let name = Self::name(table, run);
        if !self.exists(&name).await? {
            return Err(
                Error::not_found(format!("no snapshot {name} of table {table}"))
                    .with_connector(PLATFORM)
                    .with_hint("list the snapshots with Snapshots::list; a pruned one is gone"),
            );
        }
        // By name: columns added since the snapshot are left empty.
        let columns = crate::evolution::table_columns(&self.client, &name)
            .await?
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let statements = [
            "BEGIN".to_owned(),
            format!("DELETE FROM {}", ident(table)),
            format!(
                "INSERT INTO {} ({columns}) SELECT {columns} FROM {}",
                ident(table),
                ident(&name)
            ),
            "COMMIT".to_owned(),
        ];
        for statement in &statements {
            if let Err(e) = self.client.execute(statement, &[]).await {
                let _ = self.client.execute("ROLLBACK", &[]).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The runs `table` has snapshots of, oldest first.
    ///
    /// # Errors
    /// The query's.
    pub async fn list(&self, table: &str) -> Result<Vec<i64>> {
        let rows = self
            .client
            .execute(
                "SELECT TABLE_NAME FROM INFORMATION_SCHEMA.TABLES WHERE TABLE_SCHEMA = CURRENT_SCHEMA() AND STARTSWITH(TABLE_NAME, ?)",
                &[Bind::text(format!("{table}{SNAPSHOT_MARK}"))],
            )
            .await?
            .json_rows()?;
        let prefix = format!("{table}{SNAPSHOT_MARK}");
        let mut runs: Vec<i64> = rows
            .iter()
            .filter_map(|r| {
                r["TABLE_NAME"]
                    .as_str()?
                    .strip_prefix(&prefix)?
                    .parse()
                    .ok()
            })
            .collect();
        runs.sort_unstable();
        Ok(runs)
    }

    /// Drop all but the newest `keep` snapshots of `table`; the runs dropped.
    ///
    /// # Errors
    /// The statements'.
    pub async fn prune(&self, table: &str, keep: usize) -> Result<Vec<i64>> {
        let runs = self.list(table).await?;
        let drop = runs.len().saturating_sub(keep);
        let dropped = runs[..drop].to_vec();
        for run in &dropped {
            self.client
                .execute(
                    &format!("DROP TABLE IF EXISTS {}", ident(&Self::name(table, *run))),
                    &[],
                )
                .await?;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn points_in_time_are_spelled_as_snowflake_documents_them() {
        let at = DateTime::parse_from_rfc3339("2026-12-01T09:20:00-07:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            TimeTravel::at_time(at).clause(),
            "AT(TIMESTAMP => '2026-12-01T16:20:00.000Z'::TIMESTAMP_TZ)"
        );
        assert_eq!(
            TimeTravel::before_time(at).select("T", &[]),
            r#"SELECT * FROM "T" BEFORE(TIMESTAMP => '2026-12-01T16:20:00.000Z'::TIMESTAMP_TZ)"#
        );
        assert_eq!(
            TimeTravel::at_statement("01B2C3D4-0000-4A5B-0000-0001A2B3C4D5")
                .unwrap()
                .clause(),
            "AT(STATEMENT => '01b2c3d4-0000-4a5b-0000-0001a2b3c4d5')"
        );
        let err = TimeTravel::before_statement("x'); DROP TABLE T; --").unwrap_err();
        assert!(err.to_string().contains("is not a Snowflake query id"));
        assert_eq!(
            undrop(Droppable::Schema, "PUBLIC"),
            r#"UNDROP SCHEMA "PUBLIC""#
        );
        assert_eq!(clone_table("a", "b", None), r#"CREATE TABLE "a" CLONE "b""#);
    }
}
