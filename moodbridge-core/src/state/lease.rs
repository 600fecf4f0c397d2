//! Leases: one holder at a time for a named piece of work, across processes and
//! machines, with fencing tokens.

use std::time::Duration;

use async_trait::async_trait;

use super::Lease;
use crate::error::Result;

/// Where leases live: a named lease has at most one holder until it lapses, and every
/// new holder gets a greater fencing token than the last, so work done under a lost
/// lease can be told apart and refused.
///
/// The state stores implement it ([`StateStore`](super::StateStore) is a `LeaseStore`:
/// `FOR UPDATE SKIP LOCKED` on PostgreSQL); a host without PostgreSQL can keep leases in
/// a cloud table instead (DynamoDB's state table in `connector-aws`). Every
/// implementation passes `testing::lease_store_contract`.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use moodbridge_core::state::{LeaseStore, SqliteStateStore};
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap();
/// let ttl = Duration::from_secs(30);
/// let lease = store.acquire_lease("case-changes", "worker-1", ttl).await.unwrap().unwrap();
/// assert!(store.acquire_lease("case-changes", "worker-2", ttl).await.unwrap().is_none());
/// store.release_lease(&lease).await.unwrap();
/// # });
/// ```
#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Take the lease on `name` for `ttl` if it is free, lapsed, or already `holder`'s
    /// (then it is extended, keeping its token). `None` when someone else holds it.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration)
    -> Result<Option<Lease>>;

    /// Take the lease on whichever of `names` is free or lapsed (one never leased first,
    /// then the one lapsed longest), skipping ones other workers are claiming at the same
    /// moment. `None` when all are held.
    async fn claim_lease(
        &self,
        names: &[String],
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>>;

    /// Extend a held lease. [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) when it
    /// was lost (someone else took it after it lapsed): stop working on it.
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease>;

    /// Give a lease back (no-op if it was already lost).
    async fn release_lease(&self, lease: &Lease) -> Result<()>;
}

/// A shared lease store is a lease store.
#[async_trait]
impl<T: LeaseStore + ?Sized> LeaseStore for std::sync::Arc<T> {
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        (**self).acquire_lease(name, holder, ttl).await
    }

    async fn claim_lease(
        &self,
        names: &[String],
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>> {
        (**self).claim_lease(names, holder, ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        (**self).renew_lease(lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<()> {
        (**self).release_lease(lease).await
    }
}

/// How a [`run_leased`] ended.
#[derive(Debug)]
pub enum LeasedRun<T> {
    /// The work finished under the lease (which was then released) with this value.
    Done(T),
    /// The lease was lost (it lapsed and another holder took it, or the store refused a
    /// renewal): the work was stopped at its next await point.
    Lost(crate::Error),
    /// `shutdown` completed first, before the lease was taken or while the work ran (then
    /// it was stopped and the lease released).
    Stopped,
}

/// Renew `lease` every third of `ttl` until it is lost; returns the reason. A renewal
/// the store fails temporarily is tried again at the next third, so a brief outage does
/// not lose the lease unless it outlasts it.
///
/// # Errors
/// This returns the error that ended the hold (it never returns otherwise).
pub async fn hold_lease(store: &dyn LeaseStore, lease: Lease, ttl: Duration) -> crate::Error {
    let mut lease = lease;
    loop {
        tokio::time::sleep(ttl / 3).await;
        match store.renew_lease(&lease, ttl).await {
            Ok(renewed) => lease = renewed,
            Err(e) if e.kind() == crate::ErrorKind::Conflict => return e,
            Err(e) if e.is_temporary() => {
                tracing::warn!(lease = %lease.name, error = %e, "lease renewal failed; retrying");
            }
            Err(e) => return e,
        }
    }
}

/// Run `work` only while `holder` holds lease `name`: one holder at a time across every
/// process sharing `store` (a singleton subscriber, a leader). Waits — trying every third
/// of `ttl` — until the lease is free; then runs `work(lease)` with the lease renewed
/// every third of `ttl`, stops it if the lease is lost, and releases the lease when the
/// work ends. `ttl` is how soon a standby takes over from a holder that died.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::time::Duration;
/// use moodbridge_core::state::{LeasedRun, SqliteStateStore, run_leased};
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap();
/// let ran = run_leased(&store, "case-changes", "host-a", Duration::from_secs(30), std::future::pending::<()>(), |lease| async move {
///     lease.token // the fencing token: pass it along with every write made under the lease
/// })
/// .await
/// .unwrap();
/// assert!(matches!(ran, LeasedRun::Done(1)));
/// # });
/// ```
///
/// # Errors
/// The store's, when taking or releasing the lease fails for good.
pub async fn run_leased<T, F, Fut>(
    store: &dyn LeaseStore,
    name: &str,
    holder: &str,
    ttl: Duration,
    shutdown: impl std::future::Future,
    work: F,
) -> Result<LeasedRun<T>>
where
    F: FnOnce(Lease) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    tokio::pin!(shutdown);
    let lease = loop {
        let taken = tokio::select! {
            _ = &mut shutdown => return Ok(LeasedRun::Stopped),
            taken = store.acquire_lease(name, holder, ttl) => taken,
        };
        match taken {
            Ok(Some(lease)) => break lease,
            Ok(None) => {}
            Err(e) if e.is_temporary() => {
                tracing::warn!(lease = %name, error = %e, "taking the lease failed; retrying");
            }
            Err(e) => return Err(e),
        }
        tokio::select! {
            _ = &mut shutdown => return Ok(LeasedRun::Stopped),
            () = tokio::time::sleep(ttl / 3) => {}
        }
    };
    tracing::info!(lease = %name, holder = %holder, token = lease.token, "lease taken");
    let ended = tokio::select! {
        value = work(lease.clone()) => LeasedRun::Done(value),
        lost = hold_lease(store, lease.clone(), ttl) => {
            tracing::error!(lease = %name, holder = %holder, error = %lost, "lease lost: work stopped");
            return Ok(LeasedRun::Lost(lost));
        }
        _ = &mut shutdown => LeasedRun::Stopped,
    };
    store.release_lease(&lease).await?;
    Ok(ended)
}
