//! Warehouses declared in config and reconciled: created when missing, altered where
//! they differ (size, multi-cluster bounds and scaling policy, auto-suspend and -resume,
//! resource monitor, comment), suspended and resumed — under an **auto-suspend guard**
//! that refuses a warehouse that would never suspend (or idle longer than the host
//! allows), and reports the existing ones that do.
//!
//! ```
//! use connector_snowflake::warehouse::{Guard, WarehouseSpec, WarehouseSize};
//!
//! let spec: WarehouseSpec = toml::from_str(r#"
//! name = "LOAD_WH"
//! size = "small"
//! min_clusters = 1
//! max_clusters = 3
//! scaling_policy = "economy"
//! auto_suspend_secs = 60
//! "#).unwrap();
//! assert_eq!(spec.size, WarehouseSize::Small);
//! spec.check(&Guard::default()).unwrap();
//! assert_eq!(
//!     spec.create_statement().unwrap(),
//!     "CREATE WAREHOUSE IF NOT EXISTS LOAD_WH WITH WAREHOUSE_SIZE = SMALL MIN_CLUSTER_COUNT = 1 \
//!      MAX_CLUSTER_COUNT = 3 SCALING_POLICY = ECONOMY AUTO_SUSPEND = 60 AUTO_RESUME = TRUE \
//!      INITIALLY_SUSPENDED = TRUE"
//! );
//! ```

use std::fmt;

use moodbridge_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::PLATFORM;
use crate::client::SnowflakeClient;
use crate::sql::{cell_number, cell_text, literal, plain_name};

/// A warehouse size, smallest to largest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WarehouseSize {
    /// 1 credit an hour.
    #[default]
    XSmall,
    /// 2.
    Small,
    /// 4.
    Medium,
    /// 8.
    Large,
    /// 16.
    XLarge,
    /// 32.
    XXLarge,
    /// 64.
    XXXLarge,
    /// 128.
    X4Large,
    /// 256.
    X5Large,
    /// 512.
    X6Large,
}

const SIZES: [(WarehouseSize, &str, &str); 10] = [
    (WarehouseSize::XSmall, "XSMALL", "X-Small"),
    (WarehouseSize::Small, "SMALL", "Small"),
    (WarehouseSize::Medium, "MEDIUM", "Medium"),
    (WarehouseSize::Large, "LARGE", "Large"),
    (WarehouseSize::XLarge, "XLARGE", "X-Large"),
    (WarehouseSize::XXLarge, "XXLARGE", "2X-Large"),
    (WarehouseSize::XXXLarge, "XXXLARGE", "3X-Large"),
    (WarehouseSize::X4Large, "X4LARGE", "4X-Large"),
    (WarehouseSize::X5Large, "X5LARGE", "5X-Large"),
    (WarehouseSize::X6Large, "X6LARGE", "6X-Large"),
];

impl WarehouseSize {
    /// The keyword DDL takes: `XSMALL` … `X6LARGE`.
    pub fn keyword(self) -> &'static str {
        SIZES.iter().find(|s| s.0 == self).map_or("XSMALL", |s| s.1)
    }

    /// Credits an hour per running cluster (standard warehouses).
    pub fn credits_per_hour(self) -> u32 {
        1 << (self as u32)
    }

    /// The size from `SHOW WAREHOUSES` (`X-Small`, `2X-Large` …) or a DDL keyword.
    pub fn parse(text: &str) -> Option<WarehouseSize> {
        let t = text.trim();
        SIZES
            .iter()
            .find(|s| s.1.eq_ignore_ascii_case(t) || s.2.eq_ignore_ascii_case(t))
            .map(|s| s.0)
    }
}

/// How a multi-cluster warehouse adds clusters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScalingPolicy {
    /// Start clusters as soon as queries queue (performance first).
    #[default]
    Standard,
    /// Start one only when there is about six minutes of work for it (credits first).
    Economy,
}

impl ScalingPolicy {
    fn keyword(self) -> &'static str {
        match self {
            ScalingPolicy::Standard => "STANDARD",
            ScalingPolicy::Economy => "ECONOMY",
        }
    }
}

fn yes() -> bool {
    true
}

fn sixty() -> Option<u64> {
    Some(60)
}

/// A warehouse as config declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseSpec {
    /// Its name (a plain identifier; Snowflake upper-cases it).
    pub name: String,
    /// Its size (default `xsmall`).
    #[serde(default)]
    pub size: WarehouseSize,
    /// Fewest clusters running (multi-cluster warehouses, Enterprise edition).
    #[serde(default)]
    pub min_clusters: Option<u32>,
    /// Most clusters running.
    #[serde(default)]
    pub max_clusters: Option<u32>,
    /// How clusters are added.
    #[serde(default)]
    pub scaling_policy: Option<ScalingPolicy>,
    /// Seconds idle before it suspends (default 60; `0` or absent-with-`null` never,
    /// which the [`Guard`] refuses unless told otherwise).
    #[serde(default = "sixty")]
    pub auto_suspend_secs: Option<u64>,
    /// Resume when a statement needs it (default `true`).
    #[serde(default = "yes")]
    pub auto_resume: bool,
    /// Created suspended, costing nothing until used (default `true`).
    #[serde(default = "yes")]
    pub initially_suspended: bool,
    /// The resource monitor capping its credits.
    #[serde(default)]
    pub resource_monitor: Option<String>,
    /// A comment.
    #[serde(default)]
    pub comment: Option<String>,
}

/// The host's rules for warehouses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// The longest idle time allowed before suspending, in seconds (default 600).
    #[serde(default = "ten_minutes")]
    pub max_auto_suspend_secs: u64,
    /// Allow a warehouse that never suspends (default `false`).
    #[serde(default)]
    pub allow_never_suspend: bool,
    /// The largest size allowed (default `large`).
    #[serde(default = "large")]
    pub max_size: WarehouseSize,
}

fn ten_minutes() -> u64 {
    600
}

fn large() -> WarehouseSize {
    WarehouseSize::Large
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            max_auto_suspend_secs: ten_minutes(),
            allow_never_suspend: false,
            max_size: large(),
        }
    }
}

impl Guard {
    /// What is wrong with a warehouse of this size and auto-suspend, by these rules.
    fn problems(&self, size: WarehouseSize, auto_suspend: Option<u64>) -> Vec<String> {
        let mut problems = Vec::new();
        match auto_suspend {
            None | Some(0) if !self.allow_never_suspend => problems.push(
                "never suspends, so it bills every second it exists (set auto_suspend_secs, e.g. 60)"
                    .to_owned(),
            ),
            Some(secs) if secs > self.max_auto_suspend_secs => problems.push(format!(
                "idles {secs} s before suspending, more than the {} s allowed",
                self.max_auto_suspend_secs
            )),
            _ => {}
        }
        if size > self.max_size {
            problems.push(format!(
                "is {} ({} credits an hour), larger than the {} allowed",
                size.keyword(),
                size.credits_per_hour(),
                self.max_size.keyword()
            ));
        }
        problems
    }
}

impl WarehouseSpec {
    /// A spec with the defaults: `XSMALL`, one cluster, suspending after 60 s idle.
    pub fn new(name: impl Into<String>) -> Self {
        WarehouseSpec {
            name: name.into(),
            size: WarehouseSize::XSmall,
            min_clusters: None,
            max_clusters: None,
            scaling_policy: None,
            auto_suspend_secs: sixty(),
            auto_resume: true,
            initially_suspended: true,
            resource_monitor: None,
            comment: None,
        }
    }

    /// Check the spec against Snowflake's rules and `guard`'s, every problem at once.
    ///
    /// # Errors
    /// [`Config`](moodbridge_core::ErrorKind::Config) naming each problem.
    pub fn check(&self, guard: &Guard) -> Result<()> {
        let mut problems = Vec::new();
        if let Err(e) = plain_name("warehouse", &self.name) {
            problems.push(e.message().to_owned());
        }
        if let Some(monitor) = &self.resource_monitor
            && let Err(e) = plain_name("resource monitor", monitor)
        {
            problems.push(e.message().to_owned());
        }
        match (self.min_clusters, self.max_clusters) {
            (Some(0), _) | (_, Some(0)) => problems.push("cluster counts start at 1".to_owned()),
            (Some(min), Some(max)) if min > max => problems.push(format!(
                "min_clusters ({min}) is more than max_clusters ({max})"
            )),
            (Some(min), None) if min > 1 => problems.push(format!(
                "min_clusters ({min}) is more than max_clusters (1 when not given)"
            )),
            _ => {}
        }
        problems.extend(
            guard
                .problems(self.size, self.auto_suspend_secs)
                .into_iter()
                .map(|p| format!("warehouse {} {p}", self.name)),
        );
        if problems.is_empty() {
            return Ok(());
        }
        Err(Error::config(problems.join("; "))
            .with_connector(PLATFORM)
            .with_hint(
                "fix the warehouse's settings, or widen the guard's limits if this is intended",
            ))
    }

    fn properties(&self) -> Vec<(&'static str, String)> {
        let mut p = vec![("WAREHOUSE_SIZE", self.size.keyword().to_owned())];
        if let Some(n) = self.min_clusters {
            p.push(("MIN_CLUSTER_COUNT", n.to_string()));
        }
        if let Some(n) = self.max_clusters {
            p.push(("MAX_CLUSTER_COUNT", n.to_string()));
        }
        if let Some(policy) = self.scaling_policy {
            p.push(("SCALING_POLICY", policy.keyword().to_owned()));
        }
        p.push((
            "AUTO_SUSPEND",
            match self.auto_suspend_secs {
                Some(n) if n > 0 => n.to_string(),
                _ => "NULL".to_owned(),
            },
        ));
        p.push(("AUTO_RESUME", bool_keyword(self.auto_resume)));
        if let Some(monitor) = &self.resource_monitor {
            p.push(("RESOURCE_MONITOR", monitor.to_ascii_uppercase()));
        }
        if let Some(comment) = &self.comment {
            p.push(("COMMENT", literal(comment)));
        }
        p
    }

    /// `CREATE WAREHOUSE IF NOT EXISTS …` with every property the spec gives.
    ///
    /// # Errors
    /// A name that is not a plain identifier.
    pub fn create_statement(&self) -> Result<String> {
        let name = plain_name("warehouse", &self.name)?;
        let mut properties = self.properties();
        properties.push((
            "INITIALLY_SUSPENDED",
            bool_keyword(self.initially_suspended),
        ));
        Ok(format!(
            "CREATE WAREHOUSE IF NOT EXISTS {name} WITH {}",
            assignments(&properties)
        ))
    }

    /// `ALTER WAREHOUSE … SET …` for the properties `current` differs in (`None` when
    /// it matches).
    ///
    /// # Errors
    /// A name that is not a plain identifier.
    pub fn alter_statement(&self, current: &WarehouseInfo) -> Result<Option<String>> {
        let name = plain_name("warehouse", &self.name)?;
        let differs = |key: &str, value: &str| -> bool {
            match key {
                "WAREHOUSE_SIZE" => {
                    WarehouseSize::parse(&current.size).map(WarehouseSize::keyword) != Some(value)
                }
                "MIN_CLUSTER_COUNT" => current.min_clusters.to_string() != value,
                "MAX_CLUSTER_COUNT" => current.max_clusters.to_string() != value,
                "SCALING_POLICY" => !current.scaling_policy.eq_ignore_ascii_case(value),
                "AUTO_SUSPEND" => match current.auto_suspend_secs {
                    Some(n) if n > 0 => n.to_string() != value,
                    _ => value != "NULL",
                },
                "AUTO_RESUME" => bool_keyword(current.auto_resume) != value,
                "RESOURCE_MONITOR" => !current.resource_monitor.eq_ignore_ascii_case(value),
                "COMMENT" => literal(&current.comment) != value,
                _ => true,
            }
        };
        let changes: Vec<(&'static str, String)> = self
            .properties()
            .into_iter()
            .filter(|(k, v)| differs(k, v))
            .collect();
        Ok((!changes.is_empty())
            .then(|| format!("ALTER WAREHOUSE {name} SET {}", assignments(&changes))))
    }
}

fn bool_keyword(b: bool) -> String {
    if b { "TRUE" } else { "FALSE" }.to_owned()
}

fn assignments(properties: &[(&'static str, String)]) -> String {
    properties
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ALTER WAREHOUSE <name> SUSPEND`.
///
/// # Errors
/// A name that is not a plain identifier.
pub fn suspend_statement(name: &str) -> Result<String> {
    Ok(format!(
        "ALTER WAREHOUSE {} SUSPEND",
        plain_name("warehouse", name)?
    ))
}

/// `ALTER WAREHOUSE <name> RESUME IF SUSPENDED` (no error when it is running).
///
/// # Errors
/// A name that is not a plain identifier.
pub fn resume_statement(name: &str) -> Result<String> {
    Ok(format!(
        "ALTER WAREHOUSE {} RESUME IF SUSPENDED",
        plain_name("warehouse", name)?
    ))
}

/// A warehouse as `SHOW WAREHOUSES` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarehouseInfo {
    /// Its name.
    pub name: String,
    /// `STARTED`, `SUSPENDED`, `RESIZING` ….
    pub state: String,
    /// Its size as listed (`X-Small` …).
    pub size: String,
    /// `min_cluster_count`.
    pub min_clusters: u32,
    /// `max_cluster_count`.
    pub max_clusters: u32,
    /// `scaling_policy`.
    pub scaling_policy: String,
    /// `auto_suspend` in seconds (`None` or 0: never).
    pub auto_suspend_secs: Option<u64>,
    /// `auto_resume`.
    pub auto_resume: bool,
    /// `resource_monitor` (`null` when none).
    pub resource_monitor: String,
    /// `comment`.
    pub comment: String,
}

impl WarehouseInfo {
    /// One row of `SHOW WAREHOUSES`, by its documented column names.
    pub fn from_row(row: &serde_json::Value) -> WarehouseInfo {
        let text = |k: &str| cell_text(row, k).trim().to_owned();
        let number = |k: &str| cell_number(row, k).map(|n| n as u64);
        WarehouseInfo {
            name: text("name"),
            state: text("state"),
            size: text("size"),
            min_clusters: number("min_cluster_count").unwrap_or(1) as u32,
            max_clusters: number("max_cluster_count").unwrap_or(1) as u32,
            scaling_policy: text("scaling_policy"),
            auto_suspend_secs: number("auto_suspend"),
            auto_resume: text("auto_resume").eq_ignore_ascii_case("true"),
            resource_monitor: text("resource_monitor"),
            comment: text("comment"),
        }
    }
}

/// A warehouse the guard objects to, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The warehouse.
    pub warehouse: String,
    /// What is wrong.
    pub problem: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "warehouse {} {}", self.warehouse, self.problem)
    }
}

/// Warehouses through a session: listed, reconciled with specs, suspended, resumed,
/// audited.
#[derive(Debug, Clone)]
pub struct Warehouses {
    client: SnowflakeClient,
}

impl Warehouses {
    /// Warehouses through `client` (its role needs `CREATE WAREHOUSE` to create, and
    /// `MODIFY` / `OPERATE` on a warehouse to alter, suspend or resume it).
    pub fn new(client: SnowflakeClient) -> Self {
        Warehouses { client }
    }

    /// The warehouses the role sees.
    ///
    /// # Errors
    /// The statement's.
    pub async fn list(&self) -> Result<Vec<WarehouseInfo>> {
        let result = self.client.execute("SHOW WAREHOUSES", &[]).await?;
        Ok(result
            .json_rows()?
            .iter()
            .map(WarehouseInfo::from_row)
            .collect())
    }

    /// The statements that would make the warehouse what `spec` says (a dry run):
    /// a `CREATE` when it is missing, an `ALTER` where it differs, nothing when it
    /// matches.
    ///
    /// # Errors
    /// The spec's problems by `guard` (nothing is planned); the listing's.
    pub async fn plan(&self, spec: &WarehouseSpec, guard: &Guard) -> Result<Vec<String>> {
        spec.check(guard)?;
        let name = plain_name("warehouse", &spec.name)?;
        let current = self.list().await?.into_iter().find(|w| w.name == name);
        Ok(match current {
            None => vec![spec.create_statement()?],
            Some(current) => spec.alter_statement(&current)?.into_iter().collect(),
        })
    }

    /// Run [`plan`](Self::plan)'s statements; the statements run.
    ///
    /// # Errors
    /// As [`plan`](Self::plan); a statement's.
    pub async fn apply(&self, spec: &WarehouseSpec, guard: &Guard) -> Result<Vec<String>> {
        let statements = self.plan(spec, guard).await?;
        for statement in &statements {
            self.client.execute(statement, &[]).await?;
        }
        Ok(statements)
    }

    /// Suspend the warehouse `name`.
    ///
    /// # Errors
    /// The statement's.
    pub async fn suspend(&self, name: &str) -> Result<()> {
        self.client.execute(&suspend_statement(name)?, &[]).await?;
        Ok(())
    }

    /// Resume the warehouse `name` if it is suspended.
    ///
    /// # Errors
    /// The statement's.
    pub async fn resume(&self, name: &str) -> Result<()> {
        self.client.execute(&resume_statement(name)?, &[]).await?;
        Ok(())
    }

    /// Every warehouse the role sees that `guard` objects to.
    ///
    /// # Errors
    /// The listing's.
    pub async fn audit(&self, guard: &Guard) -> Result<Vec<Finding>> {
        Ok(audit(&self.list().await?, guard))
    }
}

/// The warehouses of `listed` that `guard` objects to.
pub fn audit(listed: &[WarehouseInfo], guard: &Guard) -> Vec<Finding> {
    listed
        .iter()
        .flat_map(|w| {
            let size = WarehouseSize::parse(&w.size).unwrap_or_default();
            guard
                .problems(size, w.auto_suspend_secs)
                .into_iter()
                .map(|problem| Finding {
                    warehouse: w.name.clone(),
                    problem,
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]

    use super::*;

    #[test]
    fn sizes_read_both_spellings_and_double_in_credits() {
        assert_eq!(WarehouseSize::parse("X-Small"), Some(WarehouseSize::XSmall));
        assert_eq!(
            WarehouseSize::parse("2X-Large"),
            Some(WarehouseSize::XXLarge)
        );
        assert_eq!(
            WarehouseSize::parse("x4large"),
            Some(WarehouseSize::X4Large)
        );
        assert_eq!(WarehouseSize::parse("huge"), None);
        assert_eq!(WarehouseSize::Medium.credits_per_hour(), 4);
        assert_eq!(WarehouseSize::X6Large.credits_per_hour(), 512);
    }

    #[test]
    fn the_guard_refuses_a_warehouse_that_never_suspends_and_every_other_problem() {
        let mut spec = WarehouseSpec::new("etl wh");
        spec.auto_suspend_secs = None;
        spec.size = WarehouseSize::XLarge;
        spec.min_clusters = Some(4);
        spec.max_clusters = Some(2);
        let err = spec.check(&Guard::default()).unwrap_err().to_string();
        for part in [
            "\"etl wh\" is not a plain warehouse name",
            "min_clusters (4) is more than max_clusters (2)",
            "never suspends",
            "is XLARGE (16 credits an hour), larger than the LARGE allowed",
        ] {
            assert!(err.contains(part), "{part:?} missing from {err}");
        }
        let lenient = Guard {
            allow_never_suspend: true,
            max_size: WarehouseSize::X6Large,
            ..Guard::default()
        };
        spec.name = "ETL_WH".into();
        spec.min_clusters = Some(1);
        spec.check(&lenient).unwrap();
        assert!(
            spec.create_statement()
                .unwrap()
                .contains("AUTO_SUSPEND = NULL")
        );
    }

    #[test]
    fn only_what_differs_is_altered() {
        let listed = serde_json::json!({
            "name": "LOAD_WH", "state": "SUSPENDED", "type": "STANDARD", "size": "X-Small",
            "min_cluster_count": 1, "max_cluster_count": 1, "auto_suspend": 600,
            "auto_resume": "true", "resource_monitor": "null", "comment": "",
            "scaling_policy": "STANDARD",
        });
        let current = WarehouseInfo::from_row(&listed);
        let mut spec = WarehouseSpec::new("load_wh");
        spec.auto_suspend_secs = Some(600);
        assert_eq!(spec.alter_statement(&current).unwrap(), None);
        spec.size = WarehouseSize::Small;
        spec.auto_suspend_secs = Some(120);
        spec.comment = Some("MoodBridge's loads".into());
        assert_eq!(
            spec.alter_statement(&current).unwrap().unwrap(),
            "ALTER WAREHOUSE LOAD_WH SET WAREHOUSE_SIZE = SMALL AUTO_SUSPEND = 120 COMMENT = 'MoodBridge''s loads'"
        );
        assert_eq!(
            resume_statement("load_wh").unwrap(),
            "ALTER WAREHOUSE LOAD_WH RESUME IF SUSPENDED"
        );
        assert_eq!(
            suspend_statement("LOAD_WH").unwrap(),
            "ALTER WAREHOUSE LOAD_WH SUSPEND"
        );
    }
}
