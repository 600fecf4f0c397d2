//! Metrics captured by a test: a recorder of this thread's metrics, read as deltas.

use metrics::LocalRecorderGuard;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

/// Captures the metrics recorded on the current thread while installed: for tests that
/// check what a call counted. [`take`](Self::take) returns what was recorded since the
/// last take.
///
/// The recorder is thread-local: install it on the thread that runs the calls (a
/// current-thread runtime, or the body of a `#[tokio::test]`, which runs on the test's
/// own thread; tasks spawned onto other worker threads are not seen). Install it before
/// the first call through a [`Policy`](crate::Policy): policies cache their metric handles.
///
/// ```
/// use moodbridge_core::testing::MetricsCapture;
/// let capture = MetricsCapture::new();
/// {
///     let _installed = capture.install();
///     metrics::counter!("moodbridge_calls_total", "platform" => "crm", "outcome" => "ok").increment(2);
/// }
/// let seen = capture.take();
/// assert_eq!(seen.sum("moodbridge_calls_total", &[("platform", "crm")]), 2);
/// assert_eq!(capture.take().sum("moodbridge_calls_total", &[]), 0, "a take is a delta");
/// ```
pub struct MetricsCapture {
    recorder: DebuggingRecorder,
    snapshotter: Snapshotter,
}

impl Default for MetricsCapture {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MetricsCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsCapture").finish_non_exhaustive()
    }
}

impl MetricsCapture {
    /// A capture with nothing recorded.
    pub fn new() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        MetricsCapture {
            recorder,
            snapshotter,
        }
    }

    /// Makes this capture the current thread's recorder until the guard drops.
    #[must_use = "the capture records only while the guard lives"]
    pub fn install(&self) -> LocalRecorderGuard<'_> {
        metrics::set_default_local_recorder(&self.recorder)
    }

    /// The counters recorded since the last take.
    pub fn take(&self) -> Counters {
        Counters(
            self.snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .filter_map(|(key, _, _, value)| match value {
                    DebugValue::Counter(n) if n > 0 => Some(CounterValue {
                        name: key.key().name().to_owned(),
                        labels: key
                            .key()
                            .labels()
                            .map(|l| (l.key().to_owned(), l.value().to_owned()))
                            .collect(),
                        value: n,
                    }),
                    _ => None,
                })
                .collect(),
        )
    }
}

/// One counter's increase: its name, labels and value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterValue {
    /// The metric name.
    pub name: String,
    /// The labels, in the order they were given.
    pub labels: Vec<(String, String)>,
    /// How much it grew.
    pub value: u64,
}

/// Counters taken from a [`MetricsCapture`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters(pub Vec<CounterValue>);

impl Counters {
    /// The sum of the counters named `name` that carry every label of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.0
            .iter()
            .filter(|c| {
                c.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| c.labels.iter().any(|(ck, cv)| ck == k && cv == v))
            })
            .map(|c| c.value)
            .sum()
    }
}

impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.0 {
            let labels: Vec<String> = c.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            writeln!(f, "{}{{{}}} {}", c.name, labels.join(","), c.value)?;
        }
        Ok(())
    }
}
