//! Rotating a secret over any [`CredentialStore`], in process: write the new value as a
//! pending version, verify it with a check of the caller's (a test login, a test
//! signature), promote it, keep the previous version readable for a grace period, then
//! retire the older versions. Every step is recorded in the state store's audit log
//! (version ids only, never a value), in a run named `rotation:<key>`.
//!
//! A failed verification leaves the current version untouched. On a store that holds
//! no pending versions ([`CredentialStore::can_stage`] is false), the new value is
//! verified in memory first and written as the current version only once verified.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use moodbridge_core::rotation::Rotation;
//! use moodbridge_core::state::StateStore;
//! use moodbridge_core::{CredentialStore, Error, Result};
//! use secrecy::{ExposeSecret, SecretString};
//!
//! async fn rotate_webhook_secret(
//!     store: Arc<dyn CredentialStore>,
//!     state: Arc<dyn StateStore>,
//!     new_secret: SecretString,
//! ) -> Result<()> {
//!     let rotation = Rotation::new(store, "webhooks/apex")
//!         .grace(Duration::from_secs(600))
//!         .audit(state, "ops:alice");
//!     let rotated = rotation
//!         .rotate(new_secret, async |candidate: &SecretString| {
//!             // e.g. a test login or a signed test call with the candidate
//!             if candidate.expose_secret().len() < 32 {
//!                 return Err(Error::invalid_input("a webhook secret needs 32 characters"));
//!             }
//!             Ok(())
//!         })
//!         .await?;
//!     // … once every sender signs with the new secret:
//!     rotation.retire(&rotated).await?;
//!     Ok(())
//! }
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use crate::credential::{CredentialStore, SecretVersion};
use crate::error::{Error, ErrorKind, Result};
use crate::state::{AuditEntry, AuditOperation, RunCounts, RunId, RunStatus, StateStore};

/// The outcome of [`Rotation::rotate`]: the new current version, the one it replaced,
/// and when the replaced one may be retired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The new current version.
    pub version: SecretVersion,
    /// The version it replaced (readable until retired).
    pub previous: SecretVersion,
    /// The end of the grace period: [`Rotation::retire`] refuses before it.
    pub retire_after: SystemTime,
    /// The audit run of this rotation, when audited.
    pub run: Option<RunId>,
}

/// A rotation of one secret. See the [module docs](self).
#[derive(Clone)]
pub struct Rotation {
    store: Arc<dyn CredentialStore>,
    key: String,
    grace: Duration,
    audit: Option<(Arc<dyn StateStore>, String)>,
}

impl std::fmt::Debug for Rotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotation")
            .field("key", &self.key)
            .field("grace", &self.grace)
            .field("audited", &self.audit.is_some())
            .finish_non_exhaustive()
    }
}

/// The audit stream of rotations.
pub const AUDIT_STREAM: &str = "secret";

impl Rotation {
    /// A rotation of `key` in `store`, with a grace period of one hour and no audit.
    pub fn new(store: Arc<dyn CredentialStore>, key: impl Into<String>) -> Self {
        Rotation {
            store,
            key: key.into(),
            grace: Duration::from_secs(3600),
            audit: None,
        }
    }

    /// How long the previous version stays readable after the promotion (default one
    /// hour): long enough for every reader to pick up the new one.
    #[must_use]
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Record every step in `state`'s audit log as `actor`.
    #[must_use]
    pub fn audit(mut self, state: Arc<dyn StateStore>, actor: impl Into<String>) -> Self {
        self.audit = Some((state, actor.into()));
        self
    }

    async fn record(
        &self,
        run: Option<RunId>,
        step: &str,
        before: Option<&SecretVersion>,
        after: Option<&SecretVersion>,
        detail: Option<&str>,
    ) -> Result<()> {
        let (Some(run), Some((state, actor))) = (run, &self.audit) else {
            return Ok(());
        };
        let image = |v: Option<&SecretVersion>| {
            v.map(|v| serde_json::json!({"version": v.as_str(), "step": step, "detail": detail}))
        };
        state
            .append_audit(&[AuditEntry {
                run,
                stream: AUDIT_STREAM.to_owned(),
                record_key: self.key.clone(),
                operation: AuditOperation::Update,
                before: image(before),
                after: image(after)
                    .or_else(|| Some(serde_json::json!({"step": step, "detail": detail}))),
                after_sha256: None,
                actor: actor.clone(),
            }])
            .await
            .map(|_| ())
    }

    async fn finish(&self, run: Option<RunId>, error: Option<&Error>) -> Result<()> {
        let (Some(run), Some((state, _))) = (run, &self.audit) else {
            return Ok(());
        };
        let counts = RunCounts {
            read: 1,
            written: u64::from(error.is_none()),
            failed: u64::from(error.is_some()),
        };
        let status = if error.is_some() {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        let message = error.map(ToString::to_string);
        state
            .finish_run(run, status, counts, message.as_deref())
            .await
    }

    /// Writes `candidate`, verifies it with `verify`, and makes it current: as a pending
    /// version promoted after the check where the store holds pending versions, else
    /// checked in memory and then put. The previous version stays readable.
    ///
    /// # Errors
    /// The check's error (the current version untouched; a pending version left for
    /// inspection, replaced by the next rotation), and the store's errors. A key with no
    /// current version is `NotFound`: put the first one.
    pub async fn rotate<F>(&self, candidate: SecretString, verify: F) -> Result<Rotated>
    where
        F: AsyncFnOnce(&SecretString) -> Result<()>,
    {
        let current = self.store.get(&self.key).await?.version;
        let run = match &self.audit {
            Some((state, _)) => Some(state.start_run(&format!("rotation:{}", self.key)).await?),
            None => None,
        };
        let outcome = self.steps(run, &current, candidate, verify).await;
        self.finish(run, outcome.as_ref().err()).await?;
        let version = outcome?;
        tracing::info!(key = %self.key, version = %version, "secret rotated");
        Ok(Rotated {
            version,
            previous: current,
            retire_after: SystemTime::now() + self.grace,
            run,
        })
    }

    async fn steps<F>(
        &self,
        run: Option<RunId>,
        current: &SecretVersion,
        candidate: SecretString,
        verify: F,
    ) -> Result<SecretVersion>
    where
        F: AsyncFnOnce(&SecretString) -> Result<()>,
    {
        let staged = if self.store.can_stage() {
            let pending = self.store.stage(&self.key, candidate.clone()).await?;
            self.record(run, "staged", Some(current), Some(&pending), None)
                .await?;
            Some(pending)
        } else {
            None
        };
        if let Err(e) = verify(&candidate).await {
            let why = e.to_string();
            self.record(
                run,
                "verification_failed",
                Some(current),
                staged.as_ref(),
                Some(&why),
            )
            .await?;
            return Err(Error::new(
                e.kind(),
                format!(
                    "the new value of {} failed its check: {}",
                    self.key,
                    e.message()
                ),
            )
            .with_hint("the current version is unchanged; fix the new value and rotate again")
            .with_source(e));
        }
        self.record(run, "verified", Some(current), staged.as_ref(), None)
            .await?;
        let version = match staged {
            Some(pending) => {
                self.store.promote(&self.key, &pending).await?;
                pending
            }
            None => self.store.put(&self.key, candidate).await?,
        };
        self.record(run, "promoted", Some(current), Some(&version), None)
            .await?;
        Ok(version)
    }

    /// Retires the versions before the rotated one, once the grace period is over: the
    /// number retired.
    ///
    /// # Errors
    /// `Conflict` before the end of the grace period (with the time left); the store's
    /// errors.
    pub async fn retire(&self, rotated: &Rotated) -> Result<usize> {
        let now = SystemTime::now();
        if let Ok(left) = rotated.retire_after.duration_since(now)
            && !left.is_zero()
        {
            return Err(Error::new(
                ErrorKind::Conflict,
                format!(
                    "the previous version of {} stays readable for {} s more",
                    self.key,
                    left.as_secs()
                ),
            )
            .with_hint("retire after the grace period, when every reader has the new version"));
        }
        let retired = self.store.retire(&self.key, &rotated.version).await?;
        self.record(
            rotated.run,
            "retired",
            Some(&rotated.previous),
            Some(&rotated.version),
            Some(&format!("{retired} versions retired")),
        )
        .await?;
        Ok(retired)
    }

    /// Rotates, waits out the grace period, and retires: one whole rotation, for a
    /// scheduled task.
    ///
    /// # Errors
    /// As [`rotate`](Self::rotate) and [`retire`](Self::retire).
    pub async fn run<F>(&self, candidate: SecretString, verify: F) -> Result<Rotated>
    where
        F: AsyncFnOnce(&SecretString) -> Result<()>,
    {
        let rotated = self.rotate(candidate, verify).await?;
        if let Ok(wait) = rotated.retire_after.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        self.retire(&rotated).await?;
        Ok(rotated)
    }
}
