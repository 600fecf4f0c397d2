//! Schema evolution: a stream's fields (a Salesforce describe, any source's catalog)
//! compared with the table's columns in `INFORMATION_SCHEMA`, giving a plan of the safe
//! changes — columns added, types widened, `NOT NULL` dropped — and the conflicts no
//! `ALTER` can resolve without losing data. The plan can be shown (a dry run) and
//! applied; [`SnowflakeSink`](crate::SnowflakeSink) applies it when a stream starts.
//!
//! Nothing is ever dropped or narrowed: a column the stream no longer has is kept (and
//! listed as retained), a type Snowflake cannot change in place (a scale, `NUMBER` to
//! `FLOAT`, text to a number) is a conflict for a person to decide.
//!
//! ```
//! use connector_snowflake::evolution::{SchemaPlan, TableColumn};
//! use moodbridge_core::{FieldDescriptor, FieldType, StreamDescriptor};
//!
//! let stream = StreamDescriptor::new("Case")
//!     .field(FieldDescriptor::new("Id", FieldType::String).required())
//!     .field(FieldDescriptor::new("Amount", FieldType::Decimal { scale: 2 }))
//!     .field(FieldDescriptor::new("Priority", FieldType::String));
//! let table = [
//!     TableColumn::text("Id", 18).not_null(),
//!     TableColumn::number("Amount", 18, 2),
//!     TableColumn::text("Legacy", 255),
//! ];
//! let plan = SchemaPlan::diff("Case", &stream, &table);
//! assert!(plan.is_safe());
//! assert_eq!(
//!     plan.statements(),
//!     [
//!         r#"ALTER TABLE "Case" ALTER COLUMN "Id" SET DATA TYPE VARCHAR"#,
//!         r#"ALTER TABLE "Case" ALTER COLUMN "Amount" SET DATA TYPE NUMBER(38,2)"#,
//!         r#"ALTER TABLE "Case" ADD COLUMN IF NOT EXISTS "Priority" VARCHAR"#,
//!     ]
//! );
//! assert_eq!(plan.retained, ["Legacy"]);
//! ```

use std::fmt;

use moodbridge_core::{Error, FieldDescriptor, FieldType, Result, StreamDescriptor};
use serde::{Deserialize, Serialize};

use crate::PLATFORM;
use crate::bind::Bind;
use crate::client::SnowflakeClient;
use crate::sql::{cell_number, cell_text, ident};

/// The longest `VARCHAR` (what a `VARCHAR` without a length holds).
pub const MAX_VARCHAR: u64 = 16_777_216;

/// The column type a field gets in a table MoodBridge creates.
///
/// ```
/// use connector_snowflake::evolution::sql_type;
/// use moodbridge_core::{FieldDescriptor, FieldType};
/// assert_eq!(sql_type(&FieldDescriptor::new("Amount", FieldType::Decimal { scale: 2 })), "NUMBER(38,2)");
/// assert_eq!(sql_type(&FieldDescriptor::new("Details", FieldType::Json)), "VARIANT");
/// ```
pub fn sql_type(field: &FieldDescriptor) -> String {
    match &field.field_type {
        FieldType::Integer => "NUMBER(38,0)".to_owned(),
        FieldType::Number => "FLOAT".to_owned(),
        FieldType::Decimal { scale } => format!("NUMBER(38,{})", (*scale).min(37)),
        FieldType::Boolean => "BOOLEAN".to_owned(),
        FieldType::Date => "DATE".to_owned(),
        FieldType::DateTime => "TIMESTAMP_TZ".to_owned(),
        FieldType::Time => "TIME".to_owned(),
        FieldType::Json => "VARIANT".to_owned(),
        _ => "VARCHAR".to_owned(),
    }
}

/// A column of a table, as `INFORMATION_SCHEMA.COLUMNS` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableColumn {
    /// The column's name, as created.
    pub name: String,
    /// `DATA_TYPE`: `TEXT`, `NUMBER`, `FLOAT`, `BOOLEAN`, `DATE`, `TIMESTAMP_TZ`,
    /// `VARIANT` ….
    pub data_type: String,
    /// `CHARACTER_MAXIMUM_LENGTH` of a text column.
    pub length: Option<u64>,
    /// `NUMERIC_PRECISION` of a `NUMBER`.
    pub precision: Option<u32>,
    /// `NUMERIC_SCALE` of a `NUMBER`.
    pub scale: Option<u32>,
    /// `IS_NULLABLE`.
    pub nullable: bool,
}

impl TableColumn {
    /// A nullable column of `data_type`, without length, precision or scale.
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        TableColumn {
            name: name.into(),
            data_type: data_type.into(),
            length: None,
            precision: None,
            scale: None,
            nullable: true,
        }
    }

    /// A nullable `VARCHAR(length)` (`TEXT`) column.
    pub fn text(name: impl Into<String>, length: u64) -> Self {
        TableColumn {
            length: Some(length),
            ..Self::new(name, "TEXT")
        }
    }

    /// A nullable `NUMBER(precision, scale)` column.
    pub fn number(name: impl Into<String>, precision: u32, scale: u32) -> Self {
        TableColumn {
            precision: Some(precision),
            scale: Some(scale),
            ..Self::new(name, "NUMBER")
        }
    }

    /// The same column, `NOT NULL`.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }

    /// The type as DDL spells it: `VARCHAR(255)`, `NUMBER(18,2)`, `FLOAT` ….
    pub fn sql_type(&self) -> String {
        match self.data_type.as_str() {
            "TEXT" => match self.length {
                Some(n) if n < MAX_VARCHAR => format!("VARCHAR({n})"),
                _ => "VARCHAR".to_owned(),
            },
            "NUMBER" => format!(
                "NUMBER({},{})",
                self.precision.unwrap_or(38),
                self.scale.unwrap_or(0)
            ),
            other => other.to_owned(),
        }
    }
}

/// A safe change to a table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// A new, nullable column for a field the table lacks.
    Add {
        /// The column.
        column: String,
        /// Its type.
        sql_type: String,
    },
    /// A longer `VARCHAR` or a `NUMBER` of more precision (same scale).
    Widen {
        /// The column.
        column: String,
        /// Its type now.
        from: String,
        /// Its type after.
        to: String,
    },
    /// A `NOT NULL` column the stream may leave empty.
    DropNotNull {
        /// The column.
        column: String,
    },
}

/// A difference no safe `ALTER` resolves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "conflict", rename_all = "snake_case")]
pub enum Conflict {
    /// The column's type cannot hold the field's values, and Snowflake cannot change it
    /// in place without losing data.
    Type {
        /// The column.
        column: String,
        /// The table's type.
        table: String,
        /// The type the field needs.
        stream: String,
    },
    /// The table has the field's name in another case only: quoted statements would not
    /// find it, a second column would shadow it.
    Case {
        /// The stream's field.
        field: String,
        /// The table's column.
        column: String,
    },
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conflict::Type {
                column,
                table,
                stream,
            } => write!(
                f,
                "column {column} is {table} where the stream needs {stream}, a change Snowflake cannot make in place"
            ),
            Conflict::Case { field, column } => write!(
                f,
                "field {field} matches column {column} only when case is ignored"
            ),
        }
    }
}

/// What it takes for a table to hold a stream: safe changes, conflicts, and the
/// columns kept though the stream no longer has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaPlan {
    /// The table.
    pub table: String,
    /// The safe changes, in the order they are applied.
    pub changes: Vec<Change>,
    /// What no safe change resolves.
    pub conflicts: Vec<Conflict>,
    /// Columns the stream does not have; never dropped.
    pub retained: Vec<String>,
}

/// Whether values of the field's type fit a column of `column`'s type as it is, and if
/// not, the widened type that would take them (`Err` when none would).
fn fit(field: &FieldDescriptor, column: &TableColumn) -> std::result::Result<Option<String>, ()> {
    let scale = column.scale.unwrap_or(0);
    let more_precision =
        || (column.precision.unwrap_or(38) < 38).then(|| format!("NUMBER(38,{scale})"));
    match (column.data_type.as_str(), &field.field_type) {
        ("TEXT", FieldType::Json) => Err(()),
        // Text holds anything a file carries as text; a short one is lengthened.
        ("TEXT", _) => Ok(column
            .length
            .is_some_and(|n| n < MAX_VARCHAR)
            .then(|| "VARCHAR".to_owned())),
        ("NUMBER", FieldType::Integer) => Ok(more_precision()),
        // Snowflake changes a NUMBER's precision in place, never its scale.
        ("NUMBER", FieldType::Decimal { scale: wanted }) if (*wanted).min(37) == scale => {
            Ok(more_precision())
        }
        ("FLOAT", FieldType::Integer | FieldType::Number)
        | ("BOOLEAN", FieldType::Boolean)
        | ("DATE", FieldType::Date)
        | ("TIME", FieldType::Time)
        | ("VARIANT", FieldType::Json)
        | ("TIMESTAMP_TZ" | "TIMESTAMP_LTZ" | "TIMESTAMP_NTZ", FieldType::DateTime) => Ok(None),
        _ => Err(()),
    }
}

impl SchemaPlan {
    /// Compare `stream`'s fields with `columns`, the table's (`[]` when it does not
    /// exist: every field is then a column to add).
    pub fn diff(table: &str, stream: &StreamDescriptor, columns: &[TableColumn]) -> SchemaPlan {
        let mut plan = SchemaPlan {
            table: table.to_owned(),
            changes: Vec::new(),
            conflicts: Vec::new(),
            retained: Vec::new(),
        };
        let mut adds = Vec::new();
        for field in &stream.fields {
            let Some(column) = columns.iter().find(|c| c.name == field.name) else {
                match columns
                    .iter()
                    .find(|c| c.name.eq_ignore_ascii_case(&field.name))
                {
                    Some(other) => plan.conflicts.push(Conflict::Case {
                        field: field.name.clone(),
                        column: other.name.clone(),
                    }),
                    None => adds.push(Change::Add {
                        column: field.name.clone(),
                        sql_type: sql_type(field),
                    }),
                }
                continue;
            };
            match fit(field, column) {
                Ok(Some(to)) => plan.changes.push(Change::Widen {
                    column: column.name.clone(),
                    from: column.sql_type(),
                    to,
                }),
                Ok(None) => {}
                Err(()) => plan.conflicts.push(Conflict::Type {
                    column: column.name.clone(),
                    table: column.sql_type(),
                    stream: sql_type(field),
                }),
            }
            if field.nullable && !column.nullable {
                plan.changes.push(Change::DropNotNull {
                    column: column.name.clone(),
                });
            }
        }
        plan.changes.extend(adds);
        plan.retained = columns
            .iter()
            .filter(|c| {
                !stream
                    .fields
                    .iter()
                    .any(|f| f.name.eq_ignore_ascii_case(&c.name))
            })
            .map(|c| c.name.clone())
            .collect();
        plan
    }

    /// Read `table`'s columns (in the session's current schema) and compare them with
    /// `stream`'s fields.
    ///
    /// # Errors
    /// The query's.
    pub async fn plan(
        client: &SnowflakeClient,
        table: &str,
        stream: &StreamDescriptor,
    ) -> Result<SchemaPlan> {
        let columns = table_columns(client, table).await?;
        Ok(Self::diff(table, stream, &columns))
    }

    /// No change and no conflict: the table holds the stream as it is.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.conflicts.is_empty()
    }

    /// No conflict: applying the changes makes the table hold the stream.
    pub fn is_safe(&self) -> bool {
        self.conflicts.is_empty()
    }

    /// The statements that apply the changes, in order (what a dry run shows).
    pub fn statements(&self) -> Vec<String> {
        let table = ident(&self.table);
        self.changes
            .iter()
            .map(|change| match change {
                Change::Add { column, sql_type } => format!(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {} {sql_type}",
                    ident(column)
                ),
                Change::Widen { column, to, .. } => format!(
                    "ALTER TABLE {table} ALTER COLUMN {} SET DATA TYPE {to}",
                    ident(column)
                ),
                Change::DropNotNull { column } => {
                    format!(
                        "ALTER TABLE {table} ALTER COLUMN {} DROP NOT NULL",
                        ident(column)
                    )
                }
            })
            .collect()
    }

    /// The error a load gets when the plan has conflicts (`None` when it has none).
    pub fn conflict_error(&self) -> Option<Error> {
        if self.conflicts.is_empty() {
            return None;
        }
        let list = self
            .conflicts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Some(
            Error::invalid_input(format!(
                "table {} cannot take stream {} as it is: {list}",
                self.table, self.table
            ))
            .with_connector(PLATFORM)
            .with_hint(
                "change or rename the column yourself (or map the field to a new name), then load again",
            ),
        )
    }

    /// Apply the changes, one statement at a time (DDL commits as it goes; each
    /// statement is safe to run again, so a plan stopped half-way is finished by
    /// planning and applying again).
    ///
    /// # Errors
    /// A plan with conflicts ([`InvalidInput`](moodbridge_core::ErrorKind::InvalidInput),
    /// nothing applied); a statement's error.
    pub async fn apply(&self, client: &SnowflakeClient) -> Result<()> {
        if let Some(e) = self.conflict_error() {
            return Err(e);
        }
        for statement in self.statements() {
            client.execute(&statement, &[]).await?;
        }
        Ok(())
    }
}

impl fmt::Display for SchemaPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "table {}: no change", self.table)?;
        } else {
            write!(f, "table {}:", self.table)?;
            for statement in self.statements() {
                write!(f, "\n  {statement};")?;
            }
            for conflict in &self.conflicts {
                write!(f, "\n  conflict: {conflict}")?;
            }
        }
        if !self.retained.is_empty() {
            write!(
                f,
                "\n  kept (not in the stream): {}",
                self.retained.join(", ")
            )?;
        }
        Ok(())
    }
}

/// `table`'s columns in the session's current schema, in order (`[]` when there is no
/// such table).
///
/// # Errors
/// The query's.
pub async fn table_columns(client: &SnowflakeClient, table: &str) -> Result<Vec<TableColumn>> {
    let result = client
        .execute(
            "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_MAXIMUM_LENGTH, NUMERIC_PRECISION, NUMERIC_SCALE, IS_NULLABLE \
             FROM INFORMATION_SCHEMA.COLUMNS WHERE TABLE_SCHEMA = CURRENT_SCHEMA() AND TABLE_NAME = ? \
             ORDER BY ORDINAL_POSITION",
            &[Bind::text(table)],
        )
        .await?;
    let number = |row: &serde_json::Value, key: &str| cell_number(row, key).map(|n| n as u64);
    result
        .json_rows()?
        .iter()
        .map(|row| {
            Ok(TableColumn {
                name: cell_text(row, "COLUMN_NAME"),
                data_type: cell_text(row, "DATA_TYPE"),
                length: number(row, "CHARACTER_MAXIMUM_LENGTH"),
                precision: number(row, "NUMERIC_PRECISION").map(|n| n as u32),
                scale: number(row, "NUMERIC_SCALE").map(|n| n as u32),
                nullable: cell_text(row, "IS_NULLABLE") == "YES",
            })
        })
        .collect()
}

/// What [`SnowflakeSink`](crate::SnowflakeSink) does when a stream starts and its
/// table differs from the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evolution {
    /// Apply the safe changes; fail the stream on a conflict (the default).
    #[default]
    Apply,
    /// Fail the stream on any difference, naming the changes it would take.
    Freeze,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    fn field(name: &str, t: FieldType) -> FieldDescriptor {
        FieldDescriptor::new(name, t)
    }

    #[test]
    fn types_that_fit_stay_short_ones_widen_and_others_conflict() {
        let stream = StreamDescriptor::new("T")
            .field(field("Count", FieldType::Integer))
            .field(field("Ratio", FieldType::Number))
            .field(field("Price", FieldType::Decimal { scale: 4 }))
            .field(field("When", FieldType::DateTime))
            .field(field("Flag", FieldType::Boolean))
            .field(field("Body", FieldType::Json))
            .field(field("name", FieldType::String));
        let table = [
            TableColumn::number("Count", 10, 0),
            TableColumn::number("Ratio", 38, 0),
            TableColumn::number("Price", 38, 2),
            TableColumn::new("When", "TIMESTAMP_NTZ"),
            TableColumn::text("Flag", MAX_VARCHAR),
            TableColumn::text("Body", MAX_VARCHAR),
            TableColumn::text("Name", 80),
        ];
        let plan = SchemaPlan::diff("T", &stream, &table);
        assert_eq!(
            plan.changes,
            [Change::Widen {
                column: "Count".into(),
                from: "NUMBER(10,0)".into(),
                to: "NUMBER(38,0)".into()
            }]
        );
        assert_eq!(
            plan.conflicts,
            [
                Conflict::Type {
                    column: "Ratio".into(),
                    table: "NUMBER(38,0)".into(),
                    stream: "FLOAT".into()
                },
                Conflict::Type {
                    column: "Price".into(),
                    table: "NUMBER(38,2)".into(),
                    stream: "NUMBER(38,4)".into()
                },
                Conflict::Type {
                    column: "Body".into(),
                    table: "VARCHAR".into(),
                    stream: "VARIANT".into()
                },
                Conflict::Case {
                    field: "name".into(),
                    column: "Name".into()
                },
            ]
        );
        assert!(plan.retained.is_empty());
        let err = plan.conflict_error().unwrap().to_string();
        assert!(
            err.contains("column Price is NUMBER(38,2) where the stream needs NUMBER(38,4)"),
            "{err}"
        );
        assert!(
            plan.to_string()
                .contains("conflict: field name matches column Name")
        );
    }

    #[test]
    fn a_missing_table_is_all_additions_and_a_matching_one_no_change() {
        let stream = StreamDescriptor::new("A")
            .field(field("Id", FieldType::String).required())
            .field(field("Open", FieldType::Boolean));
        let plan = SchemaPlan::diff("A", &stream, &[]);
        assert_eq!(
            plan.statements(),
            [
                r#"ALTER TABLE "A" ADD COLUMN IF NOT EXISTS "Id" VARCHAR"#,
                r#"ALTER TABLE "A" ADD COLUMN IF NOT EXISTS "Open" BOOLEAN"#
            ]
        );
        let same = [
            TableColumn::text("Id", MAX_VARCHAR).not_null(),
            TableColumn::new("Open", "BOOLEAN"),
        ];
        let plan = SchemaPlan::diff("A", &stream, &same);
        assert!(plan.is_empty(), "{plan}");
        assert_eq!(plan.to_string(), "table A: no change");
    }
}
