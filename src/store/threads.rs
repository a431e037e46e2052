//! The poller's thread snapshots in KV, and the [`ThreadDirectory`] the scheduler reads
//! threads through.
//!
//! Owns the snapshot record ([`ThreadState`]) and its keys in bucket `<prefix>_threads`:
//! `t.<thread id>` per thread and `baseline.<scope>` per property scope (`*`: every
//! property the key sees), both tokens [`keys::encode`]d, plus `scan.all`: the
//! [`ScanMark`] of the last complete listing across all configured properties (what lets
//! the next one stop early). A baseline key written before
//! the key encoding was unified (`baseline._` for scope `*`) is still read as `*`, so an
//! upgrade does not re-baseline (and miss) messages.
//! Must not: detect changes or talk to Channex (the poller does), nor publish events.
//! Errors are [`StoreError`]s, classified once in [`crate::store::nats`].

use std::collections::{HashMap, HashSet};

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::base::keys;
use crate::events::{PropertyInfo, ThreadSnapshot};
use crate::store::nats::StoreError;

/// What the poller remembers of one thread between cycles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadState {
    pub property_id: String,
    pub message_count: u64,
    pub is_closed: bool,
    pub last_message_received_at: Option<DateTime<Utc>>,
    /// Newest message already emitted (or recorded by the baseline).
    pub newest_message_at: Option<DateTime<Utc>>,
    /// Ids of the messages at exactly `newest_message_at` (timestamps can tie).
    pub newest_message_ids: Vec<String>,
    pub last_guest_message_at: Option<DateTime<Utc>>,
    pub last_property_message_at: Option<DateTime<Utc>>,
    /// The first guest message after the newest property message (the wait's start);
    /// absent when nobody waits, and in snapshots written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_reply_since: Option<DateTime<Utc>>,
    /// The inquiry message already announced with `inquiry.received`.
    pub inquiry_message_id: Option<String>,
    /// The guest's language so far (ISO 639-1), so a short "ok" keeps it; absent in
    /// snapshots written before languages were detected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// In `newest_message_ids`: every message at `newest_message_at` is known (a baseline
/// recorded from the listing, without reading the messages).
pub const ALL_KNOWN: &str = "*";

/// The scope of a poll of every property the key sees.
pub const ALL_PROPERTIES: &str = "*";

/// KV key of a thread's snapshot: `t.<thread id>`.
pub fn state_key(thread_id: &str) -> String {
    format!("t.{}", keys::encode(thread_id))
}

/// KV key of a scope's baseline mark: `baseline.<property id or *>`.
pub fn baseline_key(scope: &str) -> String {
    format!("baseline.{}", keys::encode(scope))
}

/// The scope a `baseline.` key token stands for (`None`: not a key we wrote).
fn baseline_scope(token: &str) -> Option<String> {
    match keys::decode(token) {
        // How the all-properties scope `*` was written before the encoding was unified.
        Ok(_) if token == "_" => Some(ALL_PROPERTIES.to_string()),
        Ok(scope) => Some(scope),
        Err(_) => None,
    }
}

/// KV key of the [`ScanMark`] (not a `t.` or `baseline.` key, so older versions skip it).
pub const SCAN_MARK_KEY: &str = "scan.all";

/// What the last complete listing across the configured properties established: every
/// thread of `properties` with an `updated_at` before `complete_before` is known in its
/// current state (a change after that listing moves `updated_at` past it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanMark {
    /// Fingerprint of the set of properties that listing covered.
    pub properties: String,
    /// Channex's own `updated_at` (not our clock); the poller still reads a lookback
    /// below it, as Channex's stamps are not an exact account-wide timeline.
    pub complete_before: DateTime<Utc>,
    /// Threads that could not be processed, retried on their own next cycle (the mark
    /// moved past them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<PendingThread>,
}

/// A thread a listing found changed but could not process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingThread {
    pub id: String,
    /// Its `updated_at` when it failed.
    pub updated_at: Option<DateTime<Utc>>,
    /// Cycles it failed in, in a row.
    pub attempts: u32,
}

/// Everything the snapshots bucket holds, as loaded by a new poller leader.
#[derive(Debug, Default)]
pub struct Snapshots {
    pub states: HashMap<String, ThreadState>,
    pub baselined: HashSet<String>,
    pub scan_mark: Option<ScanMark>,
}

/// The thread snapshot store (one KV bucket).
#[derive(Clone)]
pub struct ThreadSnapshots {
    store: kv::Store,
}

impl ThreadSnapshots {
    pub fn new(store: kv::Store) -> Self {
        ThreadSnapshots { store }
    }

    /// Every snapshot and baseline mark (unreadable ones are logged and skipped).
    pub async fn load_all(&self) -> Result<Snapshots, StoreError> {
        let list_err = |e| StoreError::nats("thread snapshots: list", e);
        let mut listing = self.store.keys().await.map_err(list_err)?;
        let mut all = Vec::new();
        while let Some(k) = listing.next().await {
            all.push(k.map_err(|e| StoreError::nats("thread snapshots: list", e))?);
        }
        let mut loaded = Snapshots::default();
        for key in all {
            if key == SCAN_MARK_KEY {
                loaded.scan_mark = self.read_scan_mark().await?;
                continue;
            }
            if let Some(token) = key.strip_prefix("baseline.") {
                match baseline_scope(token) {
                    Some(scope) => loaded.baselined.insert(scope),
                    None => {
                        tracing::warn!(key, "undecodable baseline key ignored");
                        continue;
                    }
                };
                continue;
            }
            let Some(id) = key.strip_prefix("t.").and_then(|t| keys::decode(t).ok()) else {
                continue;
            };
            if let Some(state) = self.read(&key).await? {
                loaded.states.insert(id, state);
            }
        }
        Ok(loaded)
    }

    async fn read(&self, key: &str) -> Result<Option<ThreadState>, StoreError> {
        let bytes = self
            .store
            .get(key)
            .await
            .map_err(|e| StoreError::nats(format!("thread snapshot {key}: read"), e))?;
        Ok(
            bytes.and_then(|b| match serde_json::from_slice::<ThreadState>(&b) {
                Ok(state) => Some(state),
                Err(e) => {
                    tracing::warn!(key, error = %e, "unreadable snapshot ignored");
                    None
                }
            }),
        )
    }

    async fn read_scan_mark(&self) -> Result<Option<ScanMark>, StoreError> {
        let bytes = self
            .store
            .get(SCAN_MARK_KEY)
            .await
            .map_err(|e| StoreError::nats("scan mark: read", e))?;
        // An unreadable mark only costs one full listing.
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// The mark of the last complete listing, if one is stored and readable (status pages).
    pub async fn scan_mark(&self) -> Result<Option<ScanMark>, StoreError> {
        self.read_scan_mark().await
    }

    /// Remember the last complete listing across the configured properties.
    pub async fn put_scan_mark(&self, mark: &ScanMark) -> Result<(), StoreError> {
        let what = || "scan mark: write".to_string();
        let body = serde_json::to_vec(mark).map_err(|e| StoreError::codec(what(), e))?;
        self.store
            .put(SCAN_MARK_KEY, body.into())
            .await
            .map_err(|e| StoreError::nats(what(), e))?;
        Ok(())
    }

    /// Forget the mark (the next listing is a full one, after a restart too).
    pub async fn delete_scan_mark(&self) -> Result<(), StoreError> {
        self.store
            .delete(SCAN_MARK_KEY)
            .await
            .map_err(|e| StoreError::nats("scan mark: delete", e))?;
        Ok(())
    }

    /// The snapshot of one thread, if one is stored and readable.
    pub async fn get(&self, thread_id: &str) -> Result<Option<ThreadState>, StoreError> {
        self.read(&state_key(thread_id)).await
    }

    pub async fn put(&self, thread_id: &str, state: &ThreadState) -> Result<(), StoreError> {
        let key = state_key(thread_id);
        let what = || format!("thread snapshot {key}: write");
        let body = serde_json::to_vec(state).map_err(|e| StoreError::codec(what(), e))?;
        self.store
            .put(&key, body.into())
            .await
            .map_err(|e| StoreError::nats(what(), e))?;
        Ok(())
    }

    /// Remember that `scope` had its first (baseline) poll at `at`.
    pub async fn mark_baselined(&self, scope: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        let key = baseline_key(scope);
        self.store
            .put(&key, at.to_rfc3339().into())
            .await
            .map_err(|e| StoreError::nats(format!("baseline mark {key}: write"), e))?;
        Ok(())
    }
}

/// Why a [`ThreadDirectory`] could not answer (e.g. Channex unavailable), with the
/// implementation's own error as its source. The scheduler retries later.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct DirectoryError(pub Box<dyn std::error::Error + Send + Sync + 'static>);

impl DirectoryError {
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>) -> Self {
        DirectoryError(source.into())
    }
}

/// Where the scheduler gets fresh thread snapshots and property blocks. Implemented over
/// Channex and these snapshots by `roles::directory::ChannexDirectory`; tests use
/// in-memory doubles.
pub trait ThreadDirectory: Send + Sync + 'static {
    /// Fresh snapshot of one thread (None if gone).
    fn snapshot(
        &self,
        property_id: &str,
        thread_id: &str,
    ) -> BoxFuture<'_, Result<Option<ThreadSnapshot>, DirectoryError>>;
    /// Open threads of a property (for schedule ticks).
    fn open_threads(
        &self,
        property_id: &str,
    ) -> BoxFuture<'_, Result<Vec<ThreadSnapshot>, DirectoryError>>;
    /// The property block of events.
    fn property(&self, property_id: &str) -> PropertyInfo;
    /// A booking as it is now (fresh, for a firing follow-up; the implementation may
    /// refresh its cache on the way); `None` when Channex does not know it. The default
    /// knows no bookings.
    fn booking(
        &self,
        _booking_id: &str,
    ) -> BoxFuture<'_, Result<Option<crate::events::Booking>, DirectoryError>> {
        Box::pin(async { Ok(None) })
    }
    /// Every property known (ticked by schedules with no `property_ids`).
    fn properties(&self) -> Vec<String>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn baseline_keys_round_trip_and_the_legacy_all_scope_is_read() {
        assert_eq!(baseline_key("*"), "baseline.=2A");
        assert_eq!(baseline_scope("=2A").as_deref(), Some("*"));
        assert_eq!(baseline_scope("_").as_deref(), Some("*"));
        assert_eq!(baseline_scope("p1").as_deref(), Some("p1"));
        assert_eq!(baseline_scope("a.b"), None);
        assert_eq!(state_key("t-1"), "t.t-1");
    }
}
