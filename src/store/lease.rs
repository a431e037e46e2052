//! KV-lease leader election, used by the poller and the scheduler.
//!
//! Owns the lease record (`lease.<name>` in the leases bucket, JSON `{holder, expires_at}`),
//! the compare-and-set protocol on it, and the background task that keeps a lease renewed
//! and publishes "am I the leader" on a `watch` channel. It must not know what a leader
//! does: the poller and the scheduler only read [`LeaderElection::is_leader`] and stop acting
//! as soon as it turns false.
//!
//! Protocol: every write is a compare-and-set on the KV revision. A free (absent or deleted)
//! key is taken with `kv.create`; the holder renews with `kv.update(key, value, revision)`;
//! a contender takes over only when the stored `expires_at` is in the past, again with
//! `kv.update` on the revision it read, so of two contenders racing for an expired lease
//! exactly one wins. Release deletes the key with the expected revision, and only if we
//! are the holder, so the standby takes over on its next attempt (within `ttl / 3`).
//!
//! Errors: [`LeaseError`] carries a [`StoreError`], classified once in
//! [`crate::store::nats`]; the campaign only logs them and tries again on its next round.
//! Time: `now` is passed in from the injected [`Clock`] (no `Utc::now()` here).
//!
//! Clocks: `expires_at` is written with the holder's wall clock and judged with the
//! contender's. A skew of `s` lets a contender take over `s` early (or late). The holder
//! therefore steps down on its own monotonic clock, `ttl` after the *start* of its last
//! successful renewal, and renews every `ttl / 3`, so with NTP-synced hosts (skew well
//! under `ttl / 3`) two leaders never overlap. Overlap is still harmless downstream: every
//! event carries a deterministic `Nats-Msg-Id` and JetStream deduplicates it.

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::base::clock::Clock;
use crate::store::nats::{NatsFailure, StoreError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease {name}: cannot read: {source}")]
    Read {
        name: String,
        #[source]
        source: StoreError,
    },
    #[error("lease {name}: cannot write: {source}")]
    Write {
        name: String,
        #[source]
        source: StoreError,
    },
}

impl LeaseError {
    /// NATS could not be reached: the campaign retries on its next round.
    pub fn is_unavailable(&self) -> bool {
        match self {
            LeaseError::Read { source, .. } | LeaseError::Write { source, .. } => {
                source.is_unavailable()
            }
        }
    }
}

/// The stored lease value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub holder: String,
    pub expires_at: DateTime<Utc>,
}

/// One process's claim on a named lease.
pub struct Lease {
    store: kv::Store,
    name: String,
    key: String,
    holder_id: String,
    ttl: Duration,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("key", &self.key)
            .field("holder_id", &self.holder_id)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// The KV key of a lease: `lease.<name>`.
pub fn lease_key(name: &str) -> String {
    format!("lease.{}", crate::base::keys::encode(name))
}

impl Lease {
    pub fn new(store: kv::Store, name: &str, holder_id: String, ttl: Duration) -> Self {
        Lease {
            store,
            name: name.to_string(),
            key: lease_key(name),
            holder_id,
            ttl,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn holder_id(&self) -> &str {
        &self.holder_id
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn read_err(&self, e: impl NatsFailure) -> LeaseError {
        LeaseError::Read {
            name: self.name.clone(),
            source: StoreError::nats(self.key.clone(), e),
        }
    }

    fn write_err(&self, e: impl NatsFailure) -> LeaseError {
        LeaseError::Write {
            name: self.name.clone(),
            source: StoreError::nats(self.key.clone(), e),
        }
    }

    /// The current record, if any (for status output and tests).
    pub async fn current(&self) -> Result<Option<(LeaseRecord, u64)>, LeaseError> {
        let entry = self
            .store
            .entry(self.key.clone())
            .await
            .map_err(|e| self.read_err(e))?;
        Ok(match entry {
            Some(e) if e.operation == Operation::Put => {
                match serde_json::from_slice::<LeaseRecord>(&e.value) {
                    Ok(rec) => Some((rec, e.revision)),
                    Err(err) => {
                        tracing::warn!(lease = %self.name, error = %err, "unreadable lease record: treated as expired");
                        Some((
                            LeaseRecord {
                                holder: String::new(),
                                expires_at: DateTime::<Utc>::MIN_UTC,
                            },
                            e.revision,
                        ))
                    }
                }
            }
            _ => None,
        })
    }

    /// Take the lease if it is free or expired, or renew it if we hold it. `Ok(true)` means
    /// we hold it until `now + ttl` (by the stored record); `Ok(false)` means someone else
    /// holds a live lease or won the race for it.
    pub async fn try_acquire_or_renew(&mut self, now: DateTime<Utc>) -> Result<bool, LeaseError> {
        let ttl = chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::seconds(5));
        let value = serde_json::to_vec(&LeaseRecord {
            holder: self.holder_id.clone(),
            expires_at: now + ttl,
        })
        .map_err(|e| LeaseError::Write {
            name: self.name.clone(),
            source: StoreError::codec(self.key.clone(), e),
        })?;
        match self.current().await? {
            None => match self.store.create(&self.key, value.into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(self.write_err(e)),
            },
            Some((rec, revision)) => {
                if rec.holder != self.holder_id && rec.expires_at > now {
                    return Ok(false);
                }
                if rec.holder != self.holder_id {
                    tracing::info!(lease = %self.name, previous = %rec.holder, "taking over an expired lease");
                }
                match self.store.update(&self.key, value.into(), revision).await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                    Err(e) => Err(self.write_err(e)),
                }
            }
        }
    }

    /// Give the lease up (only if we hold it), so a standby takes over at once.
    pub async fn release(&mut self) -> Result<(), LeaseError> {
        if let Some((rec, revision)) = self.current().await? {
            if rec.holder == self.holder_id {
                self.store
                    .delete_expect_revision(&self.key, Some(revision))
                    .await
                    .map_err(|e| self.write_err(e))?;
                tracing::info!(lease = %self.name, holder = %self.holder_id, "lease released");
            }
        }
        Ok(())
    }
}

/// A running election: a task that acquires/renews the lease every `ttl / 3` and says
/// whether we are the leader. Dropping it aborts the task *without* releasing (like a
/// crash); [`LeaderElection::stop`] steps down and releases.
pub struct LeaderElection {
    is_leader: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl LeaderElection {
    /// Start campaigning. `shutdown` turning true (or its sender dropping) makes the task
    /// step down, release the lease and end.
    pub fn spawn(lease: Lease, clock: Clock, shutdown: watch::Receiver<bool>) -> Self {
        let (tx, rx) = watch::channel(false);
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(campaign(lease, clock, tx, shutdown, stop_rx));
        LeaderElection {
            is_leader: rx,
            stop: stop_tx,
            task: Some(task),
        }
    }

    pub fn is_leader(&self) -> bool {
        *self.is_leader.borrow()
    }

    /// A receiver that follows leadership changes (`wait_for(|l| *l)`, `changed()`).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.is_leader.clone()
    }

    /// Step down, release the lease and wait for the task to end.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Stop renewing without releasing, as a crash would (the lease then expires).
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for LeaderElection {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The campaign's view of its own leadership: what it published, and until when (on the
/// monotonic clock) the lease it holds is certainly still its own.
struct Standing {
    tx: watch::Sender<bool>,
    name: String,
    holder: String,
    /// While leader: the monotonic instant at which our lease may have expired.
    held_until: Option<Instant>,
}

impl Standing {
    fn set(&self, leader: bool) {
        self.tx.send_if_modified(|cur| {
            if *cur == leader {
                return false;
            }
            *cur = leader;
            if leader {
                tracing::info!(lease = %self.name, holder = %self.holder, "leadership acquired");
            } else {
                tracing::info!(lease = %self.name, holder = %self.holder, "leadership lost or given up");
            }
            true
        });
    }

    /// Our lease may have run out: stop acting now.
    fn expire(&mut self) {
        self.held_until = None;
        self.set(false);
    }

    /// Record the result of an attempt that started at `started`.
    fn record(&mut self, result: Result<bool, LeaseError>, started: Instant, ttl: Duration) {
        match result {
            Ok(true) => {
                self.held_until = Some(started + ttl);
                self.set(true);
            }
            Ok(false) => self.expire(),
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "lease renewal failed"),
        }
    }
}

async fn campaign(
    mut lease: Lease,
    clock: Clock,
    tx: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = lease.ttl();
    let period = (ttl / 3).max(Duration::from_millis(10));
    let mut standing = Standing {
        tx,
        name: lease.name().to_string(),
        holder: lease.holder_id().to_string(),
        held_until: None,
    };
    loop {
        if *shutdown.borrow() || *stop.borrow() {
            break;
        }
        let started = Instant::now();
        let attempt = lease.try_acquire_or_renew(clock());
        let Some(result) =
            attempt_while_held(attempt, &mut standing, &mut shutdown, &mut stop).await
        else {
            break;
        };
        standing.record(result, started, ttl);
        let next = started + period;
        loop {
            let expiry = standing.held_until;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => break,
                _ = sleep_until_opt(expiry) => standing.expire(),
                _ = shutdown.changed() => break,
                _ = stop.changed() => break,
            }
        }
    }
    // Step down before releasing, so nothing acts while the lease is being handed over.
    standing.set(false);
    if let Err(e) = lease.release().await {
        tracing::warn!(lease = %lease.name(), error = %e, "lease release failed; it will expire");
    }
}

/// Waits for one acquire/renew attempt; if it hangs past our lease we step down meanwhile.
/// `None`: shutdown or stop came first.
async fn attempt_while_held(
    attempt: impl std::future::Future<Output = Result<bool, LeaseError>>,
    standing: &mut Standing,
    shutdown: &mut watch::Receiver<bool>,
    stop: &mut watch::Receiver<bool>,
) -> Option<Result<bool, LeaseError>> {
    tokio::pin!(attempt);
    loop {
        let expiry = standing.held_until;
        tokio::select! {
            r = &mut attempt => return Some(r),
            // The renewal is hanging past our lease: stop acting now.
            _ = sleep_until_opt(expiry) => standing.expire(),
            _ = shutdown.changed() => return None,
            _ = stop.changed() => return None,
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
