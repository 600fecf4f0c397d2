//! Governance declared in config and reconciled: masking policies on columns, row
//! access policies on tables, tags with their allowed values on tables and columns —
//! and a least-privilege check of the role a connector logs in as.
//!
//! [`GovernanceSpec::plan`] compares the declaration with what the account holds
//! ([`GovernanceState`]: `DESCRIBE … POLICY`, `INFORMATION_SCHEMA.POLICY_REFERENCES`,
//! `TAG_REFERENCES_ALL_COLUMNS`) and gives the statements that make them agree — a
//! policy created or its body replaced, attached where declared (`FORCE` replaces
//! another policy on the column in one step, never leaving it unmasked), detached where
//! no longer declared (only from policies the spec manages), tags set and unset. A
//! policy whose signature changed cannot be altered in place: that is a conflict for a
//! person, because replacing it would unmask its columns in between.
//!
//! ```
//! use connector_snowflake::governance::{GovernanceSpec, GovernanceState};
//!
//! let spec: GovernanceSpec = toml::from_str(r#"
//! [[masking_policies]]
//! name = "SSN_MASK"
//! signature = "VAL STRING"
//! returns = "STRING"
//! body = "CASE WHEN IS_ROLE_IN_SESSION('PII_READER') THEN VAL ELSE '***-**-****' END"
//! columns = ["Contact.SSN__c"]
//!
//! [[tags]]
//! name = "SENSITIVITY"
//! allowed_values = ["pii", "privileged"]
//! [[tags.assignments]]
//! target = "Contact.SSN__c"
//! value = "pii"
//! "#).unwrap();
//! spec.check().unwrap();
//! let plan = spec.plan(&GovernanceState::default());
//! assert_eq!(plan.statements, [
//!     "CREATE MASKING POLICY IF NOT EXISTS SSN_MASK AS (VAL STRING) RETURNS STRING -> CASE WHEN IS_ROLE_IN_SESSION('PII_READER') THEN VAL ELSE '***-**-****' END",
//!     r#"ALTER TABLE "Contact" MODIFY COLUMN "SSN__c" SET MASKING POLICY SSN_MASK"#,
//!     "CREATE TAG IF NOT EXISTS SENSITIVITY ALLOWED_VALUES 'pii', 'privileged'",
//!     r#"ALTER TABLE "Contact" MODIFY COLUMN "SSN__c" SET TAG SENSITIVITY = 'pii'"#,
//! ]);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use moodbridge_core::{Error, HealthReport, HealthStatus, Result};
use serde::{Deserialize, Serialize};

use crate::PLATFORM;
use crate::client::SnowflakeClient;
use crate::sql::{cell_text as text, ident, literal, object_name, plain_name};

/// A masking policy and the columns it masks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingPolicy {
    /// Its name (`NAME`, `SCHEMA.NAME` or `DATABASE.SCHEMA.NAME`).
    pub name: String,
    /// Its arguments: `VAL STRING`, or more for a conditional policy.
    pub signature: String,
    /// The type it returns (the first argument's).
    pub returns: String,
    /// The expression after `->`.
    pub body: String,
    /// The columns it masks: `Table.Column`, names as the tables spell them.
    #[serde(default)]
    pub columns: Vec<String>,
}

/// A row access policy and the tables it filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowAccessPolicy {
    /// Its name.
    pub name: String,
    /// Its arguments: `REGION VARCHAR`.
    pub signature: String,
    /// The expression after `->` (a `BOOLEAN`).
    pub body: String,
    /// The tables it is added to, each with the columns passed to it.
    #[serde(default)]
    pub tables: Vec<RowAccessTable>,
}

/// A table a row access policy filters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowAccessTable {
    /// The table.
    pub table: String,
    /// Its columns given to the policy, in the signature's order.
    pub columns: Vec<String>,
}

/// A tag and where it is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagSpec {
    /// Its name.
    pub name: String,
    /// The values it may take (none: any).
    #[serde(default)]
    pub allowed_values: Vec<String>,
    /// Where it is set.
    #[serde(default)]
    pub assignments: Vec<TagAssignment>,
}

/// A tag set on a table (`Table`) or a column (`Table.Column`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagAssignment {
    /// `Table` or `Table.Column`.
    pub target: String,
    /// The value.
    pub value: String,
}

/// The governance a config declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernanceSpec {
    /// Masking policies.
    #[serde(default)]
    pub masking_policies: Vec<MaskingPolicy>,
    /// Row access policies.
    #[serde(default)]
    pub row_access_policies: Vec<RowAccessPolicy>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<TagSpec>,
}

/// A policy as `DESCRIBE MASKING POLICY` / `DESCRIBE ROW ACCESS POLICY` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDefinition {
    /// `signature`: `(VAL VARCHAR)`.
    pub signature: String,
    /// `return_type`: `VARCHAR(16777216)`.
    pub return_type: String,
    /// `body`.
    pub body: String,
}

/// A policy attached to a table or column, as `POLICY_REFERENCES` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyReference {
    /// `POLICY_NAME` (upper case).
    pub policy: String,
    /// `POLICY_KIND`: `MASKING_POLICY` or `ROW_ACCESS_POLICY`.
    pub kind: String,
    /// `REF_ENTITY_NAME`.
    pub table: String,
    /// `REF_COLUMN_NAME` (a masking policy's column).
    pub column: Option<String>,
    /// `REF_ARG_COLUMN_NAMES` (a row access policy's columns).
    pub arg_columns: Vec<String>,
}

/// A tag set on a table or column, as `TAG_REFERENCES_ALL_COLUMNS` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagReference {
    /// `TAG_NAME` (upper case).
    pub tag: String,
    /// `TAG_VALUE`.
    pub value: String,
    /// `OBJECT_NAME`.
    pub table: String,
    /// `COLUMN_NAME` (`None`: on the table).
    pub column: Option<String>,
}

/// What the account holds of what a spec declares.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceState {
    /// Masking policies that exist, by upper-case name.
    pub masking: BTreeMap<String, PolicyDefinition>,
    /// Row access policies that exist, by upper-case name.
    pub row_access: BTreeMap<String, PolicyDefinition>,
    /// Tags that exist, upper case.
    pub tags: BTreeSet<String>,
    /// Policies attached to the spec's tables.
    pub references: Vec<PolicyReference>,
    /// Tags set on the spec's tables and their columns.
    pub tag_references: Vec<TagReference>,
}

/// The statements that make the account hold a spec, and what they cannot fix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernancePlan {
    /// In order.
    pub statements: Vec<String>,
    /// What needs a person.
    pub conflicts: Vec<String>,
}

impl fmt::Display for GovernancePlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.statements.is_empty() && self.conflicts.is_empty() {
            return f.write_str("governance: no change");
        }
        f.write_str("governance:")?;
        for s in &self.statements {
            write!(f, "\n  {s};")?;
        }
        for c in &self.conflicts {
            write!(f, "\n  conflict: {c}")?;
        }
        Ok(())
    }
}

/// `Table.Column` split (names may not contain `.`; a table alone has no column).
fn target(text: &str) -> (String, Option<String>) {
    match text.split_once('.') {
        Some((table, column)) => (table.to_owned(), Some(column.to_owned())),
        None => (text.to_owned(), None),
    }
}

/// The last part of a policy or tag name, upper case (how references name it).
fn short(name: &str) -> String {
    name.rsplit('.').next().unwrap_or(name).to_ascii_uppercase()
}

/// Whitespace collapsed, for comparing bodies.
fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A type list normalised: `STRING`/`TEXT` as `VARCHAR`, the longest `VARCHAR`'s length
/// dropped, upper case, no parentheses or spaces.
fn types(text: &str) -> String {
    let upper = text.to_ascii_uppercase().replace("(16777216)", "");
    upper
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != ',')
        .filter(|w| !w.is_empty())
        .map(|w| match w {
            "STRING" | "TEXT" => "VARCHAR",
            other => other,
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl GovernanceSpec {
    /// Check names, targets and tag values, every problem at once.
    ///
    /// # Errors
    /// [`Config`](moodbridge_core::ErrorKind::Config) naming each problem.
    pub fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        let mut name = |what: &str, n: &str| {
            if object_name(n).is_none() {
                problems.push(format!("{what} {n:?} is not a plain name"));
            }
        };
        for p in &self.masking_policies {
            name("masking policy", &p.name);
        }
        for p in &self.row_access_policies {
            name("row access policy", &p.name);
        }
        for t in &self.tags {
            name("tag", &t.name);
        }
        for p in &self.masking_policies {
            for c in &p.columns {
                if target(c).1.is_none() {
                    problems.push(format!(
                        "masking policy {}: {c:?} names no column (write Table.Column)",
                        p.name
                    ));
                }
            }
            if p.body.trim().is_empty() {
                problems.push(format!("masking policy {} has an empty body", p.name));
            }
        }
        for p in &self.row_access_policies {
            let arity = p.signature.split(',').count();
            for t in &p.tables {
                if t.columns.len() != arity {
                    problems.push(format!(
                        "row access policy {} takes {arity} argument(s) but table {} gives {}",
                        p.name,
                        t.table,
                        t.columns.len()
                    ));
                }
            }
        }
        for t in &self.tags {
            for a in &t.assignments {
                if !t.allowed_values.is_empty() && !t.allowed_values.contains(&a.value) {
                    problems.push(format!(
                        "tag {} on {}: {:?} is not one of its allowed values ({})",
                        t.name,
                        a.target,
                        a.value,
                        t.allowed_values.join(", ")
                    ));
                }
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::config(problems.join("; "))
            .with_connector(PLATFORM)
            .with_hint("fix the governance section of the Snowflake integration's settings"))
    }

    /// The tables the spec touches.
    pub fn tables(&self) -> BTreeSet<String> {
        let mut tables = BTreeSet::new();
        for p in &self.masking_policies {
            tables.extend(p.columns.iter().map(|c| target(c).0));
        }
        for p in &self.row_access_policies {
            tables.extend(p.tables.iter().map(|t| t.table.clone()));
        }
        for t in &self.tags {
            tables.extend(t.assignments.iter().map(|a| target(&a.target).0));
        }
        tables
    }

    /// The statements that make `state` what the spec declares.
    pub fn plan(&self, state: &GovernanceState) -> GovernancePlan {
        let mut plan = GovernancePlan::default();
        let out = &mut plan.statements;
        for p in &self.masking_policies {
            let name = p.name.to_ascii_uppercase();
            match state.masking.get(&short(&p.name)) {
                None => out.push(format!(
                    "CREATE MASKING POLICY IF NOT EXISTS {name} AS ({}) RETURNS {} -> {}",
                    p.signature, p.returns, p.body
                )),
                Some(have)
                    if types(&have.signature) != types(&p.signature)
                        || types(&have.return_type) != types(&p.returns) =>
                {
                    plan.conflicts.push(format!(
                        "masking policy {name} is {} RETURNS {} in the account but ({}) RETURNS {} in config: a signature cannot be altered; unset it from its columns, replace it and set it again (the columns are unmasked in between)",
                        have.signature, have.return_type, p.signature, p.returns
                    ));
                    continue;
                }
                Some(have) if squash(&have.body) != squash(&p.body) => {
                    out.push(format!(
                        "ALTER MASKING POLICY {name} SET BODY -> {}",
                        p.body
                    ));
                }
                Some(_) => {}
            }
            let attached: Vec<&PolicyReference> = state
                .references
                .iter()
                .filter(|r| r.kind == "MASKING_POLICY")
                .collect();
            for c in &p.columns {
                let (table, Some(column)) = target(c) else {
                    continue;
                };
                let on_column = attached
                    .iter()
                    .find(|r| r.table == table && r.column.as_deref() == Some(&column));
                match on_column {
                    Some(r) if r.policy == short(&p.name) => {}
                    Some(_) => out.push(format!(
                        "ALTER TABLE {} MODIFY COLUMN {} SET MASKING POLICY {name} FORCE",
                        ident(&table),
                        ident(&column)
                    )),
                    None => out.push(format!(
                        "ALTER TABLE {} MODIFY COLUMN {} SET MASKING POLICY {name}",
                        ident(&table),
                        ident(&column)
                    )),
                }
            }
            for r in attached.iter().filter(|r| r.policy == short(&p.name)) {
                let declared = p
                    .columns
                    .iter()
                    .any(|c| target(c) == (r.table.clone(), r.column.clone()));
                if !declared && let Some(column) = &r.column {
                    out.push(format!(
                        "ALTER TABLE {} MODIFY COLUMN {} UNSET MASKING POLICY",
                        ident(&r.table),
                        ident(column)
                    ));
                }
            }
        }
        for p in &self.row_access_policies {
            let name = p.name.to_ascii_uppercase();
            match state.row_access.get(&short(&p.name)) {
                None => out.push(format!(
                    "CREATE ROW ACCESS POLICY IF NOT EXISTS {name} AS ({}) RETURNS BOOLEAN -> {}",
                    p.signature, p.body
                )),
                Some(have) if types(&have.signature) != types(&p.signature) => {
                    plan.conflicts.push(format!(
                        "row access policy {name} is {} in the account but ({}) in config: a signature cannot be altered",
                        have.signature, p.signature
                    ));
                    continue;
                }
                Some(have) if squash(&have.body) != squash(&p.body) => {
                    out.push(format!(
                        "ALTER ROW ACCESS POLICY {name} SET BODY -> {}",
                        p.body
                    ));
                }
                Some(_) => {}
            }
            let on = |table: &str| {
                state
                    .references
                    .iter()
                    .filter(|r| r.kind == "ROW_ACCESS_POLICY" && r.table == table)
                    .collect::<Vec<_>>()
            };
            for t in &p.tables {
                let columns = t
                    .columns
                    .iter()
                    .map(|c| ident(c))
                    .collect::<Vec<_>>()
                    .join(", ");
                let existing = on(&t.table);
                match existing.first() {
                    // A table has one row access policy at most.
                    Some(r) if r.policy == short(&p.name) && r.arg_columns == t.columns => {}
                    Some(r) => {
                        out.push(format!(
                            "ALTER TABLE {} DROP ROW ACCESS POLICY {}, ADD ROW ACCESS POLICY {name} ON ({columns})",
                            ident(&t.table),
                            r.policy
                        ));
                    }
                    None => out.push(format!(
                        "ALTER TABLE {} ADD ROW ACCESS POLICY {name} ON ({columns})",
                        ident(&t.table)
                    )),
                }
            }
            for r in state
                .references
                .iter()
                .filter(|r| r.kind == "ROW_ACCESS_POLICY" && r.policy == short(&p.name))
            {
                if !p.tables.iter().any(|t| t.table == r.table) {
                    out.push(format!(
                        "ALTER TABLE {} DROP ROW ACCESS POLICY {name}",
                        ident(&r.table)
                    ));
                }
            }
        }
        for t in &self.tags {
            let name = t.name.to_ascii_uppercase();
            if !state.tags.contains(&short(&t.name)) {
                let mut create = format!("CREATE TAG IF NOT EXISTS {name}");
                if !t.allowed_values.is_empty() {
                    create.push_str(" ALLOWED_VALUES ");
                    create.push_str(
                        &t.allowed_values
                            .iter()
                            .map(|v| literal(v))
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                }
                out.push(create);
            }
            let set_on = |table: &str, column: Option<&str>| match column {
                Some(c) => format!("ALTER TABLE {} MODIFY COLUMN {}", ident(table), ident(c)),
                None => format!("ALTER TABLE {}", ident(table)),
            };
            for a in &t.assignments {
                let (table, column) = target(&a.target);
                let current = state
                    .tag_references
                    .iter()
                    .find(|r| r.tag == short(&t.name) && r.table == table && r.column == column);
                if current.is_none_or(|r| r.value != a.value) {
                    out.push(format!(
                        "{} SET TAG {name} = {}",
                        set_on(&table, column.as_deref()),
                        literal(&a.value)
                    ));
                }
            }
            for r in state
                .tag_references
                .iter()
                .filter(|r| r.tag == short(&t.name))
            {
                let declared = t
                    .assignments
                    .iter()
                    .any(|a| target(&a.target) == (r.table.clone(), r.column.clone()));
                if !declared {
                    out.push(format!(
                        "{} UNSET TAG {name}",
                        set_on(&r.table, r.column.as_deref())
                    ));
                }
            }
        }
        plan
    }
}

impl PolicyDefinition {
    /// The row of `DESCRIBE MASKING POLICY` / `DESCRIBE ROW ACCESS POLICY`.
    pub fn from_row(row: &serde_json::Value) -> Self {
        PolicyDefinition {
            signature: text(row, "signature"),
            return_type: text(row, "return_type"),
            body: text(row, "body"),
        }
    }
}

impl PolicyReference {
    /// A row of `POLICY_REFERENCES`.
    pub fn from_row(row: &serde_json::Value) -> Self {
        let column = text(row, "REF_COLUMN_NAME");
        // REF_ARG_COLUMN_NAMES is a JSON array in text: [ "REGION" ].
        let args = text(row, "REF_ARG_COLUMN_NAMES");
        let arg_columns = serde_json::from_str::<Vec<String>>(&args).unwrap_or_default();
        PolicyReference {
            policy: text(row, "POLICY_NAME").to_ascii_uppercase(),
            kind: text(row, "POLICY_KIND"),
            table: text(row, "REF_ENTITY_NAME"),
            column: (!column.is_empty()).then_some(column),
            arg_columns,
        }
    }
}

impl TagReference {
    /// A row of `TAG_REFERENCES_ALL_COLUMNS` / `TAG_REFERENCES`.
    pub fn from_row(row: &serde_json::Value) -> Self {
        let column = text(row, "COLUMN_NAME");
        TagReference {
            tag: text(row, "TAG_NAME").to_ascii_uppercase(),
            value: text(row, "TAG_VALUE"),
            table: text(row, "OBJECT_NAME"),
            column: (!column.is_empty()).then_some(column),
        }
    }
}

/// Governance through a session: its state read, a spec planned and applied.
#[derive(Debug, Clone)]
pub struct Governance {
    client: SnowflakeClient,
}

impl Governance {
    /// Governance through `client`, in its current database and schema (its role needs
    /// `APPLY MASKING POLICY`, `APPLY ROW ACCESS POLICY` and `APPLY TAG`, or ownership of
    /// the policies, tags and tables).
    pub fn new(client: SnowflakeClient) -> Self {
        Governance { client }
    }

    async fn rows(&self, sql: &str) -> Result<Vec<serde_json::Value>> {
        self.client.execute(sql, &[]).await?.json_rows()
    }

    /// What the account holds of `spec`'s policies, tags and tables.
    ///
    /// # Errors
    /// The statements' (a policy that does not exist is read as missing).
    pub async fn state(&self, spec: &GovernanceSpec) -> Result<GovernanceState> {
        let mut state = GovernanceState::default();
        for (kind, names) in [
            (
                "MASKING POLICY",
                spec.masking_policies
                    .iter()
                    .map(|p| &p.name)
                    .collect::<Vec<_>>(),
            ),
            (
                "ROW ACCESS POLICY",
                spec.row_access_policies.iter().map(|p| &p.name).collect(),
            ),
        ] {
            for name in names {
                let name = plain_name("policy", name)?;
                match self.rows(&format!("DESCRIBE {kind} {name}")).await {
                    Ok(rows) => {
                        if let Some(row) = rows.first() {
                            let map = if kind == "MASKING POLICY" {
                                &mut state.masking
                            } else {
                                &mut state.row_access
                            };
                            map.insert(short(&name), PolicyDefinition::from_row(row));
                        }
                    }
                    Err(e) if e.kind() == moodbridge_core::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for row in self.rows("SHOW TAGS IN SCHEMA").await? {
            state.tags.insert(text(&row, "name").to_ascii_uppercase());
        }
        for table in spec.tables() {
            // Quoted inside the string: the tables keep the case they were created with.
            let name = literal(&ident(&table));
            state.references.extend(
                self.rows(&format!(
                    "SELECT * FROM TABLE(INFORMATION_SCHEMA.POLICY_REFERENCES(REF_ENTITY_NAME => {name}, REF_ENTITY_DOMAIN => 'table'))"
                ))
                .await?
                .iter()
                .map(PolicyReference::from_row),
            );
            state.tag_references.extend(
                self.rows(&format!(
                    "SELECT * FROM TABLE(INFORMATION_SCHEMA.TAG_REFERENCES_ALL_COLUMNS({name}, 'table'))"
                ))
                .await?
                .iter()
                .map(TagReference::from_row),
            );
        }
        Ok(state)
    }

    /// The plan that makes the account hold `spec` (a dry run).
    ///
    /// # Errors
    /// The spec's problems; reading the state.
    pub async fn plan(&self, spec: &GovernanceSpec) -> Result<GovernancePlan> {
        spec.check()?;
        Ok(spec.plan(&self.state(spec).await?))
    }

    /// Apply [`plan`](Self::plan)'s statements; the plan applied.
    ///
    /// # Errors
    /// A plan with conflicts ([`Config`](moodbridge_core::ErrorKind::Config), nothing
    /// run); a statement's error.
    pub async fn apply(&self, spec: &GovernanceSpec) -> Result<GovernancePlan> {
        let plan = self.plan(spec).await?;
        if !plan.conflicts.is_empty() {
            return Err(Error::config(plan.conflicts.join("; "))
                .with_connector(PLATFORM)
                .with_hint("resolve the conflicts by hand (see the plan), then apply again"));
        }
        for statement in &plan.statements {
            self.client.execute(statement, &[]).await?;
        }
        Ok(plan)
    }
}

/// One row of `SHOW GRANTS TO ROLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// `privilege`: `USAGE`, `OWNERSHIP`, `CREATE TABLE` ….
    pub privilege: String,
    /// `granted_on`: `ACCOUNT`, `DATABASE`, `SCHEMA`, `WAREHOUSE`, `ROLE` ….
    pub granted_on: String,
    /// `name`: the object (for `ROLE`, the role granted).
    pub name: String,
    /// `grant_option`: the role may grant it on.
    pub grant_option: bool,
}

impl Grant {
    /// A row of `SHOW GRANTS TO ROLE`.
    pub fn from_row(row: &serde_json::Value) -> Self {
        Grant {
            privilege: text(row, "privilege").to_ascii_uppercase(),
            granted_on: text(row, "granted_on").to_ascii_uppercase(),
            name: text(row, "name"),
            grant_option: text(row, "grant_option").eq_ignore_ascii_case("true"),
        }
    }
}

/// What a role lacks for loading and what it has beyond it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivilegeReport {
    /// The role.
    pub role: String,
    /// Privileges loading needs that the role was not granted.
    pub missing: Vec<String>,
    /// Grants beyond least privilege.
    pub excess: Vec<String>,
}

/// Roles whose grant makes any role all-powerful.
const ADMIN_ROLES: [&str; 5] = [
    "ACCOUNTADMIN",
    "SECURITYADMIN",
    "USERADMIN",
    "SYSADMIN",
    "ORGADMIN",
];

impl PrivilegeReport {
    /// Compare `grants` (of `role`) with what loading into `database`.`schema` on
    /// `warehouse` needs: `USAGE` on the three, and `CREATE TABLE` and `CREATE STAGE` on
    /// the schema (or its `OWNERSHIP`). Beyond that: account-level privileges, ownership
    /// of the database, administrative roles, and grant options.
    pub fn of(
        role: &str,
        grants: &[Grant],
        warehouse: &str,
        database: &str,
        schema: &str,
    ) -> PrivilegeReport {
        let has = |privilege: &str, on: &str, name: &str| {
            grants.iter().any(|g| {
                g.privilege == privilege
                    && g.granted_on == on
                    && g.name.trim_matches('"').eq_ignore_ascii_case(name)
            })
        };
        let qualified = format!("{database}.{schema}");
        let owns_schema = has("OWNERSHIP", "SCHEMA", &qualified);
        let mut missing = Vec::new();
        for (privilege, on, name) in [
            ("USAGE", "WAREHOUSE", warehouse),
            ("USAGE", "DATABASE", database),
            ("USAGE", "SCHEMA", qualified.as_str()),
            ("CREATE TABLE", "SCHEMA", qualified.as_str()),
            ("CREATE STAGE", "SCHEMA", qualified.as_str()),
        ] {
            let implied = on == "SCHEMA" && owns_schema;
            if !implied && !has(privilege, on, name) {
                missing.push(format!("{privilege} on {on} {name}"));
            }
        }
        let mut excess = Vec::new();
        if ADMIN_ROLES.contains(&role.to_ascii_uppercase().as_str()) {
            excess.push(format!("the role is {role}, an administrative role"));
        }
        for g in grants {
            let what = format!("{} on {} {}", g.privilege, g.granted_on, g.name);
            if g.granted_on == "ACCOUNT" {
                excess.push(format!("{what} (account-wide)"));
            } else if g.granted_on == "ROLE" && ADMIN_ROLES.contains(&g.name.as_str()) {
                excess.push(format!("{what} (an administrative role)"));
            } else if g.granted_on == "DATABASE" && g.privilege == "OWNERSHIP" {
                excess.push(format!("{what} (owns the whole database)"));
            } else if g.grant_option {
                excess.push(format!("{what} with grant option"));
            }
        }
        PrivilegeReport {
            role: role.to_owned(),
            missing,
            excess,
        }
    }

    /// Down when something is missing, degraded when something is in excess.
    pub fn health(&self) -> HealthReport {
        let (status, detail) = if !self.missing.is_empty() {
            (
                HealthStatus::Down,
                format!("role {} lacks {}", self.role, self.missing.join(", ")),
            )
        } else if !self.excess.is_empty() {
            (
                HealthStatus::Degraded,
                format!(
                    "role {} has more than loading needs: {}",
                    self.role,
                    self.excess.join("; ")
                ),
            )
        } else {
            (
                HealthStatus::Up,
                format!("role {} has exactly what loading needs", self.role),
            )
        };
        HealthReport::new(status, std::time::Duration::ZERO, detail)
    }
}

/// The grants of `role` (`SHOW GRANTS TO ROLE`).
///
/// # Errors
/// A role name that is not plain; the statement's.
pub async fn grants_to_role(client: &SnowflakeClient, role: &str) -> Result<Vec<Grant>> {
    let role = plain_name("role", role)?;
    Ok(client
        .execute(&format!("SHOW GRANTS TO ROLE {role}"), &[])
        .await?
        .json_rows()?
        .iter()
        .map(Grant::from_row)
        .collect())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;
    use serde_json::json;

    fn spec() -> GovernanceSpec {
        toml::from_str(
            r#"
[[masking_policies]]
name = "SSN_MASK"
signature = "VAL STRING"
returns = "STRING"
body = "CASE WHEN IS_ROLE_IN_SESSION('PII_READER') THEN VAL ELSE '***' END"
columns = ["Contact.SSN__c", "Contact.TaxId__c"]

[[row_access_policies]]
name = "BY_REGION"
signature = "REGION VARCHAR"
body = "IS_ROLE_IN_SESSION('ALL_REGIONS') OR REGION = 'EU'"
tables = [{ table = "Case", columns = ["Region__c"] }]

[[tags]]
name = "SENSITIVITY"
allowed_values = ["pii", "privileged"]
assignments = [
  { target = "Contact.SSN__c", value = "pii" },
  { target = "Case", value = "privileged" },
]
"#,
        )
        .unwrap()
    }

    /// The account as `DESCRIBE … POLICY`, `POLICY_REFERENCES` and
    /// `TAG_REFERENCES_ALL_COLUMNS` return it (their documented columns).
    fn state() -> GovernanceState {
        let mut state = GovernanceState::default();
        state.masking.insert(
            "SSN_MASK".into(),
            PolicyDefinition::from_row(&json!({
                "name": "SSN_MASK", "signature": "(VAL VARCHAR)",
                "return_type": "VARCHAR(16777216)", "body": "'***'",
            })),
        );
        state.row_access.insert(
            "BY_REGION".into(),
            PolicyDefinition::from_row(&json!({
                "name": "BY_REGION", "signature": "(REGION VARCHAR)", "return_type": "BOOLEAN",
                "body": "IS_ROLE_IN_SESSION('ALL_REGIONS')\n  OR REGION = 'EU'",
            })),
        );
        state.tags.insert("SENSITIVITY".into());
        let reference = |policy: &str,
                         kind: &str,
                         table: &str,
                         column: Option<&str>,
                         args: Option<&str>| {
            PolicyReference::from_row(&json!({
                "POLICY_DB": "CASES", "POLICY_SCHEMA": "PUBLIC", "POLICY_NAME": policy,
                "POLICY_KIND": kind, "REF_DATABASE_NAME": "CASES", "REF_SCHEMA_NAME": "PUBLIC",
                "REF_ENTITY_NAME": table, "REF_ENTITY_DOMAIN": "TABLE", "REF_COLUMN_NAME": column,
                "REF_ARG_COLUMN_NAMES": args, "TAG_DATABASE": null, "TAG_SCHEMA": null,
                "TAG_NAME": null, "POLICY_STATUS": "ACTIVE",
            }))
        };
        state.references = vec![
            reference(
                "SSN_MASK",
                "MASKING_POLICY",
                "Contact",
                Some("SSN__c"),
                None,
            ),
            reference(
                "OLD_MASK",
                "MASKING_POLICY",
                "Contact",
                Some("TaxId__c"),
                None,
            ),
            reference("SSN_MASK", "MASKING_POLICY", "Contact", Some("Phone"), None),
            reference(
                "BY_OFFICE",
                "ROW_ACCESS_POLICY",
                "Case",
                None,
                Some("[ \"Office__c\" ]"),
            ),
        ];
        let tag = |table: &str, column: Option<&str>, value: &str| {
            TagReference::from_row(&json!({
                "TAG_DATABASE": "CASES", "TAG_SCHEMA": "PUBLIC", "TAG_NAME": "SENSITIVITY",
                "TAG_VALUE": value, "LEVEL": if column.is_some() { "COLUMN" } else { "TABLE" },
                "OBJECT_DATABASE": "CASES", "OBJECT_SCHEMA": "PUBLIC", "OBJECT_NAME": table,
                "DOMAIN": if column.is_some() { "COLUMN" } else { "TABLE" }, "COLUMN_NAME": column,
            }))
        };
        state.tag_references = vec![
            tag("Contact", Some("SSN__c"), "pii"),
            tag("Case", None, "pii"),
            tag("Contact", Some("Email"), "pii"),
        ];
        state
    }

    #[test]
    fn the_plan_changes_only_what_differs_and_replaces_in_one_step() {
        let plan = spec().plan(&state());
        assert_eq!(
            plan.statements,
            [
                "ALTER MASKING POLICY SSN_MASK SET BODY -> CASE WHEN IS_ROLE_IN_SESSION('PII_READER') THEN VAL ELSE '***' END",
                r#"ALTER TABLE "Contact" MODIFY COLUMN "TaxId__c" SET MASKING POLICY SSN_MASK FORCE"#,
                r#"ALTER TABLE "Contact" MODIFY COLUMN "Phone" UNSET MASKING POLICY"#,
                r#"ALTER TABLE "Case" DROP ROW ACCESS POLICY BY_OFFICE, ADD ROW ACCESS POLICY BY_REGION ON ("Region__c")"#,
                r#"ALTER TABLE "Case" SET TAG SENSITIVITY = 'privileged'"#,
                r#"ALTER TABLE "Contact" MODIFY COLUMN "Email" UNSET TAG SENSITIVITY"#,
            ],
            "{plan}"
        );
        assert!(plan.conflicts.is_empty());
        // The row access body differs by whitespace only: no change.
        assert!(
            !plan
                .statements
                .iter()
                .any(|s| s.contains("ALTER ROW ACCESS POLICY"))
        );
    }

    #[test]
    fn a_changed_signature_is_a_conflict_not_a_replacement() {
        let mut state = state();
        state.masking.get_mut("SSN_MASK").unwrap().signature = "(VAL NUMBER)".into();
        let plan = spec().plan(&state);
        assert_eq!(plan.conflicts.len(), 1);
        assert!(plan.conflicts[0].contains("a signature cannot be altered"));
        assert!(
            !plan.statements.iter().any(|s| s.contains("SSN_MASK")),
            "{plan}"
        );
    }

    #[test]
    fn every_problem_of_a_spec_is_reported() {
        let mut bad = spec();
        bad.masking_policies[0].name = "ssn mask".into();
        bad.masking_policies[0].columns.push("Contact".into());
        bad.row_access_policies[0].tables[0]
            .columns
            .push("Office__c".into());
        bad.tags[0].assignments[0].value = "public".into();
        let err = bad.check().unwrap_err().to_string();
        for part in [
            "masking policy \"ssn mask\" is not a plain name",
            "\"Contact\" names no column",
            "takes 1 argument(s) but table Case gives 2",
            "\"public\" is not one of its allowed values (pii, privileged)",
        ] {
            assert!(err.contains(part), "{part:?} missing from {err}");
        }
    }

    #[test]
    fn a_loader_role_is_held_to_least_privilege() {
        // SHOW GRANTS TO ROLE rows, as documented (created_on … granted_by).
        let row = |privilege: &str, on: &str, name: &str, option: &str| {
            Grant::from_row(&json!({
                "created_on": "2026-11-02 08:49:57.427 -0800", "privilege": privilege,
                "granted_on": on, "name": name, "granted_to": "ROLE", "grantee_name": "LOADER",
                "grant_option": option, "granted_by": "SECURITYADMIN",
            }))
        };
        let exact = vec![
            row("USAGE", "WAREHOUSE", "LOAD_WH", "false"),
            row("USAGE", "DATABASE", "CASES", "false"),
            row("USAGE", "SCHEMA", "CASES.PUBLIC", "false"),
            row("CREATE TABLE", "SCHEMA", "CASES.PUBLIC", "false"),
            row("CREATE STAGE", "SCHEMA", "CASES.PUBLIC", "false"),
        ];
        let report = PrivilegeReport::of("LOADER", &exact, "LOAD_WH", "CASES", "PUBLIC");
        assert_eq!(report.health().status, HealthStatus::Up, "{report:?}");

        let mut broad = exact[..3].to_vec();
        broad.push(row("OWNERSHIP", "SCHEMA", "CASES.PUBLIC", "false"));
        broad.push(row("CREATE DATABASE", "ACCOUNT", "ACME", "false"));
        broad.push(row("USAGE", "ROLE", "SYSADMIN", "false"));
        broad.push(row("USAGE", "WAREHOUSE", "BIG_WH", "true"));
        let report = PrivilegeReport::of("LOADER", &broad, "LOAD_WH", "CASES", "PUBLIC");
        assert!(
            report.missing.is_empty(),
            "ownership of the schema implies creating in it"
        );
        assert_eq!(report.excess.len(), 3, "{report:?}");
        assert_eq!(report.health().status, HealthStatus::Degraded);

        let report = PrivilegeReport::of("LOADER", &exact[1..], "LOAD_WH", "CASES", "PUBLIC");
        assert_eq!(report.missing, ["USAGE on WAREHOUSE LOAD_WH"]);
        assert_eq!(report.health().status, HealthStatus::Down);
    }
}
