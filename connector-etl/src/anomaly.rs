//! Anomalies in a metric's history: a run's value (its row count, a column's null rate,
//! its validity rate, a mean) judged against the same metric in earlier runs.
//!
//! Two tests, either of which marks the value anomalous:
//! - the **modified z-score** (Iglewicz and Hoaglin): `0.6745 · (x − median) / MAD`,
//!   robust to the outliers earlier runs may hold; above [`Thresholds::z`] (3.5) in
//!   absolute value is an anomaly. When the history's MAD is 0 (most values equal), the
//!   mean absolute deviation stands in (scaled by 1.2533); when that is 0 too, any value
//!   other than the history's is an anomaly;
//! - the **rate of change** against the previous run: beyond [`Thresholds::change`]
//!   (±50 %) is an anomaly.
//!
//! The z-score needs [`Thresholds::min_history`] earlier values (5); with fewer, only
//! the rate of change is judged.
//!
//! ```
//! use connector_etl::anomaly::{Thresholds, judge};
//!
//! let row_counts = [10_120.0, 9_980.0, 10_050.0, 10_210.0, 9_940.0, 10_070.0];
//! assert!(!judge(&row_counts, 10_100.0, &Thresholds::default()).anomalous);
//! let dropped = judge(&row_counts, 4_200.0, &Thresholds::default());
//! assert!(dropped.anomalous);
//! assert!(dropped.reasons.iter().any(|r| r.contains("z-score")), "{:?}", dropped.reasons);
//! assert!(dropped.reasons.iter().any(|r| r.contains("-58.3 %")), "{:?}", dropped.reasons);
//! ```

use serde::{Deserialize, Serialize};

/// When a value is anomalous.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// The largest modified z-score (absolute) that is not an anomaly (default 3.5).
    pub z: f64,
    /// The largest change against the previous run, as a share of it (default 0.5).
    pub change: f64,
    /// Earlier values the z-score needs (default 5).
    pub min_history: usize,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            z: 3.5,
            change: 0.5,
            min_history: 5,
        }
    }
}

/// What [`judge`] found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judgement {
    /// The value judged.
    pub value: f64,
    /// The history's median (`None` for no history).
    pub median: Option<f64>,
    /// The modified z-score, when the history was long enough.
    pub z: Option<f64>,
    /// The change against the previous run, as a share of it, when there is one (and it
    /// is not 0).
    pub change: Option<f64>,
    /// Whether a test found an anomaly.
    pub anomalous: bool,
    /// Why, one line per test that found one.
    pub reasons: Vec<String>,
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn sorted(values: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Judge `latest` against `history` (earlier runs' values, oldest first; values that
/// are not finite are ignored).
pub fn judge(history: &[f64], latest: f64, thresholds: &Thresholds) -> Judgement {
    let values = sorted(history.iter().copied());
    let mut judgement = Judgement {
        value: latest,
        median: None,
        z: None,
        change: None,
        anomalous: false,
        reasons: Vec::new(),
    };
    if !values.is_empty() {
        let m = median(&values);
        judgement.median = Some(m);
        if values.len() >= thresholds.min_history {
            let mad = median(&sorted(values.iter().map(|x| (x - m).abs())));
            let z = if mad > 0.0 {
                0.6745 * (latest - m) / mad
            } else {
                let mean_ad =
                    values.iter().map(|x| (x - m).abs()).sum::<f64>() / values.len() as f64;
                if mean_ad > 0.0 {
                    (latest - m) / (1.2533 * mean_ad)
                } else if latest == m {
                    0.0
                } else {
                    f64::INFINITY.copysign(latest - m)
                }
            };
            judgement.z = Some(z);
            if z.abs() > thresholds.z {
                judgement.anomalous = true;
                judgement.reasons.push(format!(
                    "modified z-score {z:.1} against the median {m} of {} runs (at most ±{} allowed)",
                    values.len(),
                    thresholds.z
                ));
            }
        }
    }
    if let Some(previous) = history.iter().rev().copied().find(|x| x.is_finite())
        && previous != 0.0
    {
        let change = (latest - previous) / previous.abs();
        judgement.change = Some(change);
        if change.abs() > thresholds.change {
            judgement.anomalous = true;
            judgement.reasons.push(format!(
                "{:+.1} % against the previous run's {previous} (at most ±{:.0} % allowed)",
                change * 100.0,
                thresholds.change * 100.0
            ));
        }
    }
    judgement
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_history_is_judged_by_its_change_only() {
        let j = judge(&[100.0, 104.0], 180.0, &Thresholds::default());
        assert_eq!(j.z, None);
        assert!(j.anomalous);
        assert_eq!(j.reasons.len(), 1);
        assert!(j.reasons[0].contains("+73.1 %"), "{:?}", j.reasons);
        let j = judge(&[], 5.0, &Thresholds::default());
        assert!(!j.anomalous);
        assert_eq!((j.median, j.change), (None, None));
    }

    #[test]
    fn an_outlier_in_the_history_does_not_hide_the_next_one() {
        // One bad run (0 rows) among steady ones: the median and MAD ignore it.
        let history = [5_000.0, 5_100.0, 0.0, 4_950.0, 5_050.0, 5_020.0];
        assert!(!judge(&history, 5_080.0, &Thresholds::default()).anomalous);
        let j = judge(&history, 3_900.0, &Thresholds::default());
        assert!(j.z.unwrap() < -3.5, "{j:?}");
        assert!(j.anomalous);
    }

    #[test]
    fn a_constant_history_flags_any_other_value() {
        let history = [0.0; 8];
        let same = judge(&history, 0.0, &Thresholds::default());
        assert!(!same.anomalous);
        let other = judge(&history, 0.01, &Thresholds::default());
        assert!(other.anomalous, "{other:?}");
        assert_eq!(other.z, Some(f64::INFINITY));
        // Mostly equal values: the mean absolute deviation stands in for the MAD.
        let mostly = [1.0, 1.0, 1.0, 1.0, 1.0, 1.2];
        let j = judge(&mostly, 1.01, &Thresholds::default());
        assert!(!j.anomalous, "{j:?}");
        assert!(judge(&mostly, 2.0, &Thresholds::default()).anomalous);
    }
}
