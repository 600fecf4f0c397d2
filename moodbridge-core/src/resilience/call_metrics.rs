//! Metric handles of a policy's calls, cached per operation.
//!
//! Building a metric key allocates (a label vector, label strings) and registering it with
//! a recorder hashes it; on the success path of every call that would cost more than the
//! whole rest of the policy. So each policy registers the `ok` counter and the duration
//! histogram of an operation once and reuses the handles. Errors are rare and take the
//! uncached path.
//!
//! Consequence: install the metrics recorder (e.g. the Prometheus exporter) before the
//! first call through a policy, as the `metrics` crate recommends for any cached handle.

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use metrics::{Counter, Histogram, Label, SharedString};
// Keys are our own operation names, not attacker input: a fast non-DoS-resistant hash is fine.
use rustc_hash::FxHashMap;

use crate::observe::metric;

/// More distinct operation names than this per policy are not cached (protects against
/// callers that put ids in operation names).
const MAX_CACHED_OPERATIONS: usize = 256;

#[derive(Clone)]
struct OpHandles {
    ok: Counter,
    duration: Histogram,
}

pub(crate) struct CallMetrics {
    platform: SharedString,
    connector: Option<&'static str>,
    // Copy-on-write: reads (every call) are lock-free; a write (an operation's first call)
    // clones the small map.
    ops: ArcSwap<FxHashMap<Cow<'static, str>, OpHandles>>,
}

impl CallMetrics {
    pub(crate) fn new(platform: &Arc<str>, connector: Option<&'static str>) -> Self {
        CallMetrics {
            platform: SharedString::from_shared(Arc::clone(platform)),
            connector,
            ops: ArcSwap::from_pointee(FxHashMap::default()),
        }
    }

    #[allow(
        clippy::ptr_arg,
        reason = "cloning a borrowed 'static Cow allocates nothing"
    )]
    fn register(&self, op: &Cow<'static, str>) -> OpHandles {
        OpHandles {
            ok: metrics::counter!(metric::CALLS, self.labels(op, Some("ok"))),
            duration: metrics::histogram!(metric::CALL_DURATION, self.labels(op, None)),
        }
    }

    /// `platform`, `connector` (when set), `operation` and, for counters, `outcome`.
    #[allow(
        clippy::ptr_arg,
        reason = "cloning a borrowed 'static Cow allocates nothing"
    )]
    fn labels(&self, op: &Cow<'static, str>, outcome: Option<&'static str>) -> Vec<Label> {
        let mut labels = Vec::with_capacity(4);
        labels.push(Label::new("platform", self.platform.clone()));
        if let Some(kind) = self.connector {
            labels.push(Label::new("connector", kind));
        }
        labels.push(Label::new("operation", op.clone()));
        if let Some(outcome) = outcome {
            labels.push(Label::new("outcome", outcome));
        }
        labels
    }

    /// Count one finished call of `op` with `outcome` (`"ok"` or an error kind).
    #[allow(
        clippy::ptr_arg,
        reason = "cloning a borrowed 'static Cow allocates nothing"
    )]
    pub(crate) fn record(&self, op: &Cow<'static, str>, outcome: &'static str, took: Duration) {
        if outcome == "ok" {
            if let Some(h) = self.ops.load().get(op.as_ref()) {
                h.ok.increment(1);
                h.duration.record(took.as_secs_f64());
                return;
            }
            let handles = self.register(op);
            handles.ok.increment(1);
            handles.duration.record(took.as_secs_f64());
            if self.ops.load().len() < MAX_CACHED_OPERATIONS {
                self.ops.rcu(|ops| {
                    let mut ops = FxHashMap::clone(ops);
                    ops.entry(op.clone()).or_insert_with(|| handles.clone());
                    ops
                });
            }
            return;
        }
        metrics::counter!(metric::CALLS, self.labels(op, Some(outcome))).increment(1);
        metrics::histogram!(metric::CALL_DURATION, self.labels(op, None))
            .record(took.as_secs_f64());
    }
}
