//! The bulkhead: a cap on calls in flight to one platform, so a slow platform cannot
//! tie up every task of the host.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, ErrorKind, Result};
use crate::observe::metric;

/// At most `max_concurrent` calls at once; further calls queue (up to `max_wait`, if set,
/// after which they are rejected with [`ErrorKind::Rejected`]).
///
/// ```
/// use moodbridge_core::resilience::Bulkhead;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let bulkhead = Bulkhead::new("s3:docs", 2, None);
/// let a = bulkhead.acquire().await.unwrap();
/// let b = bulkhead.acquire().await.unwrap();
/// assert_eq!(bulkhead.available(), 0);
/// drop(a);
/// assert_eq!(bulkhead.available(), 1);
/// # drop(b);
/// # });
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    name: Arc<str>,
    semaphore: Arc<Semaphore>,
    max_concurrent: usize,
    max_wait: Option<Duration>,
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.name)
            .field("max_concurrent", &self.max_concurrent)
            .field("available", &self.available())
            .finish()
    }
}

/// A slot in a [`Bulkhead`], freed on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
    gauge: metrics::Gauge,
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.gauge.decrement(1.0);
    }
}

impl Bulkhead {
    /// A bulkhead of `max_concurrent` slots (at least 1).
    pub fn new(
        name: impl Into<Arc<str>>,
        max_concurrent: usize,
        max_wait: Option<Duration>,
    ) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Bulkhead {
            name: name.into(),
            semaphore: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_wait,
        }
    }

    /// Free slots right now.
    pub fn available(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Take a slot if one is free right now.
    pub fn try_acquire_now(&self) -> Option<BulkheadPermit> {
        let permit = Arc::clone(&self.semaphore).try_acquire_owned().ok()?;
        Some(self.enter(permit))
    }

    fn enter(&self, permit: OwnedSemaphorePermit) -> BulkheadPermit {
        let gauge = metrics::gauge!(metric::IN_FLIGHT, "platform" => self.name.to_string());
        gauge.increment(1.0);
        BulkheadPermit {
            _permit: permit,
            gauge,
        }
    }

    /// Take a slot, waiting for one if all are busy.
    pub async fn acquire(&self) -> Result<BulkheadPermit> {
        let acquire = Arc::clone(&self.semaphore).acquire_owned();
        let permit = match self.max_wait {
            None => acquire.await,
            Some(wait) => match tokio::time::timeout(wait, acquire).await {
                Ok(p) => p,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Rejected,
                        format!(
                            "{} calls to {} already in flight",
                            self.max_concurrent, self.name
                        ),
                    )
                    .with_platform(self.name.to_string())
                    .with_context("by", "bulkhead")
                    .with_hint("raise max_concurrency or max_concurrency_wait, or send fewer calls at once"));
                }
            },
        }
        .map_err(|_| Error::internal("bulkhead semaphore closed"))?;
        Ok(self.enter(permit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_full_bulkhead_rejects_after_max_wait() {
        let b = Bulkhead::new("p", 1, Some(Duration::from_millis(50)));
        let _held = b.acquire().await.unwrap();
        let err = b.acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected);
        assert_eq!(err.context_value("by"), Some("bulkhead"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_call_proceeds_when_a_slot_frees() {
        let b = Bulkhead::new("p", 1, None);
        let held = b.acquire().await.unwrap();
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire().await.map(|_| ()) });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        waiter.await.unwrap().unwrap();
    }
}
