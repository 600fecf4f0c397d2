//! What each sync run cost in Snowflake credits, from the account's own usage views.
//!
//! Every statement a run issues carries its `QUERY_TAG`
//! (`moodbridge:<pipeline>:run-<id>`, see [`RunScope`](moodbridge_core::observe::RunScope)).
//! A run's credits are then:
//!
//! - **compute**: for each warehouse-hour of `SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY`,
//!   the hour's `CREDITS_USED_COMPUTE` shared among the queries that ran in it by
//!   their `EXECUTION_TIME` (`QUERY_HISTORY`) — the run's share is its queries' part of
//!   that time. Idle time the warehouse billed (before it suspended) belongs to no query
//!   and is not attributed;
//! - **cloud services**: its queries' `CREDITS_USED_CLOUD_SERVICES`.
//!
//! [`CostBudget`] thresholds turn a report into alerts and a
//! [`moodbridge_core::HealthReport`]. The views lag real time (up to 45
//! minutes for `QUERY_HISTORY`, 3 hours for metering): report on runs that finished a
//! while ago. Reading them needs a role granted the `SNOWFLAKE` database's
//! `IMPORTED PRIVILEGES` (or `USAGE_VIEWER`).
//!
//! ```
//! use connector_snowflake::cost::{CostBudget, CostReport, RunCost};
//!
//! let report = CostReport::new(
//!     vec![RunCost {
//!         tag: "moodbridge:cases:run-7".into(),
//!         queries: 12,
//!         execution_secs: 340.0,
//!         compute_credits: 0.75,
//!         cloud_services_credits: 0.01,
//!     }],
//!     &CostBudget { per_run_credits: Some(0.5), total_credits: None },
//! );
//! assert_eq!(report.alerts, ["run moodbridge:cases:run-7 used 0.760 credits, more than the 0.500 allowed per run"]);
//! assert_eq!(report.health().status, moodbridge_core::HealthStatus::Degraded);
//! ```

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use moodbridge_core::{HealthReport, HealthStatus, Result};
use serde::{Deserialize, Serialize};

use crate::bind::Bind;
use crate::client::SnowflakeClient;
use crate::sql::{cell_number, cell_text, literal};

/// The credits of the statements that carried one query tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCost {
    /// The query tag (the run).
    pub tag: String,
    /// How many statements carried it.
    pub queries: u64,
    /// Their execution time, in seconds.
    pub execution_secs: f64,
    /// Their share of the warehouses' compute credits.
    pub compute_credits: f64,
    /// Their cloud-services credits.
    pub cloud_services_credits: f64,
}

impl RunCost {
    /// Compute and cloud-services credits together.
    pub fn credits(&self) -> f64 {
        self.compute_credits + self.cloud_services_credits
    }
}

/// The thresholds that raise alerts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostBudget {
    /// Most credits one run may use.
    #[serde(default)]
    pub per_run_credits: Option<f64>,
    /// Most credits all runs in the report may use together.
    #[serde(default)]
    pub total_credits: Option<f64>,
}

/// The runs' costs over a window, and the alerts the budget raises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostReport {
    /// One entry per run (query tag), by tag.
    pub runs: Vec<RunCost>,
    /// Every threshold crossed, as a sentence.
    pub alerts: Vec<String>,
}

impl CostReport {
    /// The report of `runs` under `budget`.
    pub fn new(runs: Vec<RunCost>, budget: &CostBudget) -> CostReport {
        let mut alerts = Vec::new();
        if let Some(limit) = budget.per_run_credits {
            for run in runs.iter().filter(|r| r.credits() > limit) {
                alerts.push(format!(
                    "run {} used {:.3} credits, more than the {limit:.3} allowed per run",
                    run.tag,
                    run.credits()
                ));
            }
        }
        let report = CostReport { runs, alerts };
        let total = report.total_credits();
        let mut report = report;
        if let Some(limit) = budget.total_credits
            && total > limit
        {
            report.alerts.push(format!(
                "the runs used {total:.3} credits together, more than the {limit:.3} allowed"
            ));
        }
        report
    }

    /// Every run's credits together.
    pub fn total_credits(&self) -> f64 {
        self.runs.iter().map(RunCost::credits).sum()
    }

    /// `Up` within budget, `Degraded` with the alerts as the detail otherwise.
    pub fn health(&self) -> HealthReport {
        let (status, detail) = if self.alerts.is_empty() {
            (
                HealthStatus::Up,
                format!(
                    "{} runs, {:.3} credits",
                    self.runs.len(),
                    self.total_credits()
                ),
            )
        } else {
            (HealthStatus::Degraded, self.alerts.join("; "))
        };
        HealthReport::new(status, Duration::ZERO, detail)
    }
}

/// The credits of every tag starting with `tag_prefix` (`moodbridge:` for every run,
/// `moodbridge:cases:` for one pipeline's) among statements started in
/// `[since, until)`, by tag.
///
/// # Errors
/// The query's (a role without access to `SNOWFLAKE.ACCOUNT_USAGE` gets Snowflake's
/// "does not exist or not authorized").
pub async fn run_costs(
    client: &SnowflakeClient,
    tag_prefix: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<Vec<RunCost>> {
    let at = |t: DateTime<Utc>| {
        format!(
            "{}::TIMESTAMP_LTZ",
            literal(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
        )
    };
    let (since, until) = (at(since), at(until));
    let sql = format!(
        "WITH Q AS ( \
           SELECT QUERY_TAG, WAREHOUSE_NAME, DATE_TRUNC('HOUR', START_TIME) AS HOUR, \
                  COALESCE(EXECUTION_TIME, 0) AS EXECUTION_TIME, \
                  COALESCE(CREDITS_USED_CLOUD_SERVICES, 0) AS CLOUD \
           FROM SNOWFLAKE.ACCOUNT_USAGE.QUERY_HISTORY \
           WHERE START_TIME >= {since} AND START_TIME < {until}), \
         BUSY AS ( \
           SELECT WAREHOUSE_NAME, HOUR, SUM(EXECUTION_TIME) AS EXECUTION_TIME \
           FROM Q WHERE WAREHOUSE_NAME IS NOT NULL GROUP BY WAREHOUSE_NAME, HOUR), \
         METERED AS ( \
           SELECT WAREHOUSE_NAME, DATE_TRUNC('HOUR', START_TIME) AS HOUR, SUM(CREDITS_USED_COMPUTE) AS CREDITS \
           FROM SNOWFLAKE.ACCOUNT_USAGE.WAREHOUSE_METERING_HISTORY \
           WHERE START_TIME >= DATE_TRUNC('HOUR', {since}) AND START_TIME < {until} \
           GROUP BY WAREHOUSE_NAME, DATE_TRUNC('HOUR', START_TIME)) \
         SELECT Q.QUERY_TAG AS TAG, COUNT(*) AS QUERIES, \
                SUM(Q.EXECUTION_TIME) / 1000.0 AS EXECUTION_SECS, \
                SUM(COALESCE(M.CREDITS * Q.EXECUTION_TIME / NULLIF(B.EXECUTION_TIME, 0), 0)) AS COMPUTE_CREDITS, \
                SUM(Q.CLOUD) AS CLOUD_SERVICES_CREDITS \
         FROM Q \
         LEFT JOIN BUSY B ON B.WAREHOUSE_NAME = Q.WAREHOUSE_NAME AND B.HOUR = Q.HOUR \
         LEFT JOIN METERED M ON M.WAREHOUSE_NAME = Q.WAREHOUSE_NAME AND M.HOUR = Q.HOUR \
         WHERE STARTSWITH(Q.QUERY_TAG, ?) \
         GROUP BY Q.QUERY_TAG ORDER BY Q.QUERY_TAG"
    );
    let rows = client
        .execute(&sql, &[Bind::text(tag_prefix)])
        .await?
        .json_rows()?;
    let number = |row: &serde_json::Value, key: &str| cell_number(row, key).unwrap_or(0.0);
    Ok(rows
        .iter()
        .map(|row| RunCost {
            tag: cell_text(row, "TAG"),
            queries: number(row, "QUERIES") as u64,
            execution_secs: number(row, "EXECUTION_SECS"),
            compute_credits: number(row, "COMPUTE_CREDITS"),
            cloud_services_credits: number(row, "CLOUD_SERVICES_CREDITS"),
        })
        .collect())
}

/// [`run_costs`] under `budget`.
///
/// # Errors
/// As [`run_costs`].
pub async fn report(
    client: &SnowflakeClient,
    tag_prefix: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
    budget: &CostBudget,
) -> Result<CostReport> {
    let runs = run_costs(client, tag_prefix, since, until).await?;
    Ok(CostReport::new(runs, budget))
}
