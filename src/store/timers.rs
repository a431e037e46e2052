//! Durable follow-up timers in KV: the record a rule's `follow_up(name, when, data)` arms.
//!
//! Owns the timer record ([`FollowUpTimer`]), its key (bucket `<prefix>_followups`, key
//! `<thread>.<name>`, each a [`keys::encode`] token) and the store operations on it: arm
//! (re-arming the same thread+name replaces it: debounce), cancel, list, the
//! compare-and-set removal after firing ([`FollowUps::remove_if_unchanged`]) and the watch
//! that replays every timer and then follows changes ([`FollowUps::watch`]).
//! Must not: decide when a timer fires or what it means (the scheduler role and the rules
//! do), nor publish events. Errors are [`StoreError`]s, classified once in
//! [`crate::store::nats`].

use async_nats::jetstream::kv::{self, Operation, UpdateErrorKind};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::base::keys;
use crate::store::nats::StoreError;

/// A durable timer armed by a rule's `follow_up(name, when, data)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUpTimer {
    pub thread_id: String,
    pub property_id: String,
    pub name: String,
    pub due_at: DateTime<Utc>,
    #[serde(default)]
    pub data: Map<String, Value>,
    pub armed_at: DateTime<Utc>,
    /// Id of the event whose rule armed it (for the audit trail).
    pub armed_by_event: String,
}

/// KV key of a timer: `<thread>.<name>`, each a [`keys::encode`] token.
pub fn follow_up_key(thread_id: &str, name: &str) -> String {
    format!("{}.{}", keys::encode(thread_id), keys::encode(name))
}

/// A timer as stored, with the revision that compare-and-set operations need.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTimer {
    pub key: String,
    pub revision: u64,
    pub timer: FollowUpTimer,
}

/// One change seen by [`TimerWatch`].
#[derive(Debug, Clone, PartialEq)]
pub enum TimerChange {
    /// Armed or re-armed (replaces whatever the key held).
    Armed(StoredTimer),
    /// Cancelled, removed after firing, or unreadable: the key holds no timer.
    Gone { key: String },
}

/// The follow-up timer store (one KV bucket).
#[derive(Clone)]
pub struct FollowUps {
    store: kv::Store,
}

impl FollowUps {
    pub fn new(store: kv::Store) -> Self {
        FollowUps { store }
    }

    /// Arm (or re-arm) a timer. Re-arming the same thread+name replaces it (debounce).
    pub async fn arm(&self, t: &FollowUpTimer) -> Result<(), StoreError> {
        let key = follow_up_key(&t.thread_id, &t.name);
        let value =
            serde_json::to_vec(t).map_err(|e| StoreError::codec(timer_op("arm", &key), e))?;
        self.store
            .put(&key, value.into())
            .await
            .map_err(|e| StoreError::nats(timer_op("arm", &key), e))?;
        Ok(())
    }

    /// Cancel a timer; `Ok(true)` when one was armed.
    pub async fn cancel(&self, thread_id: &str, name: &str) -> Result<bool, StoreError> {
        let key = follow_up_key(thread_id, name);
        let entry = self
            .store
            .entry(key.clone())
            .await
            .map_err(|e| StoreError::nats(timer_op("read", &key), e))?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                self.store
                    .delete(&key)
                    .await
                    .map_err(|e| StoreError::nats(timer_op("cancel", &key), e))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub async fn get(
        &self,
        thread_id: &str,
        name: &str,
    ) -> Result<Option<FollowUpTimer>, StoreError> {
        Ok(self
            .get_stored(&follow_up_key(thread_id, name))
            .await?
            .map(|s| s.timer))
    }

    async fn get_stored(&self, key: &str) -> Result<Option<StoredTimer>, StoreError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| StoreError::nats(timer_op("read", key), e))?;
        match entry {
            Some(e) if e.operation == Operation::Put => {
                Ok(decode_timer(&e.key, e.revision, &e.value))
            }
            _ => Ok(None),
        }
    }

    /// Every armed timer with its revision, soonest first.
    pub async fn list_stored(&self) -> Result<Vec<StoredTimer>, StoreError> {
        let list_err = |e| StoreError::nats("follow-up timers: list", e);
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(list_err)?
            .try_collect()
            .await
            .map_err(|e| StoreError::nats("follow-up timers: list", e))?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(t) = self.get_stored(&key).await? {
                out.push(t);
            }
        }
        out.sort_by(|a, b| (a.timer.due_at, &a.key).cmp(&(b.timer.due_at, &b.key)));
        Ok(out)
    }

    /// The armed timers of one thread, soonest first: the key listing is filtered by the
    /// thread's key prefix before any timer is read.
    pub async fn list_for_thread(&self, thread_id: &str) -> Result<Vec<FollowUpTimer>, StoreError> {
        let list_err = |e| StoreError::nats("follow-up timers: list", e);
        let prefix = format!("{}.", keys::encode(thread_id));
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(list_err)?
            .try_collect()
            .await
            .map_err(|e| StoreError::nats("follow-up timers: list", e))?;
        let mut out = Vec::new();
        for key in keys.iter().filter(|k| k.starts_with(&prefix)) {
            if let Some(t) = self.get_stored(key).await? {
                out.push(t.timer);
            }
        }
        out.sort_by(|a, b| (a.due_at, &a.name).cmp(&(b.due_at, &b.name)));
        Ok(out)
    }

    /// Every armed timer, soonest first (for `concierge follow-ups list`).
    pub async fn list(&self) -> Result<Vec<FollowUpTimer>, StoreError> {
        Ok(self
            .list_stored()
            .await?
            .into_iter()
            .map(|s| s.timer)
            .collect())
    }

    pub async fn pending_count(&self) -> Result<usize, StoreError> {
        Ok(self.list_stored().await?.len())
    }

    /// Delete `key` only if it is still at `revision`. `Ok(false)`: it changed (re-armed or
    /// cancelled) and was left alone.
    pub async fn remove_if_unchanged(&self, key: &str, revision: u64) -> Result<bool, StoreError> {
        match self.store.delete_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(StoreError::nats(timer_op("remove", key), e)),
        }
    }

    /// Replays every key's last value, then follows changes: one consumer gives the full
    /// rescan (on becoming leader) and prompt arms/cancels.
    pub async fn watch(&self) -> Result<TimerWatch, StoreError> {
        let watch = self
            .store
            .watch_with_history(">")
            .await
            .map_err(|e| StoreError::nats("follow-up timers: watch", e))?;
        Ok(TimerWatch { watch })
    }
}

/// The changes of the timer bucket, see [`FollowUps::watch`].
pub struct TimerWatch {
    watch: kv::Watch,
}

impl TimerWatch {
    /// The next change; an error when the watch broke or ended (start a new one).
    pub async fn next(&mut self) -> Result<TimerChange, StoreError> {
        let entry = match self.watch.next().await {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => return Err(StoreError::nats("follow-up timers: watch", e)),
            None => {
                return Err(StoreError::Unavailable {
                    what: "follow-up timers: watch".into(),
                    source: "the watch ended".into(),
                })
            }
        };
        let armed = (entry.operation == Operation::Put)
            .then(|| decode_timer(&entry.key, entry.revision, &entry.value))
            .flatten();
        Ok(match armed {
            Some(stored) => TimerChange::Armed(stored),
            None => TimerChange::Gone { key: entry.key },
        })
    }
}

fn timer_op(op: &str, key: &str) -> String {
    format!("follow-up timer {key}: {op}")
}

/// An unreadable timer is logged and ignored: it can never fire, and must not stop the rest.
fn decode_timer(key: &str, revision: u64, value: &[u8]) -> Option<StoredTimer> {
    match serde_json::from_slice::<FollowUpTimer>(value) {
        Ok(timer) => Some(StoredTimer {
            key: key.to_string(),
            revision,
            timer,
        }),
        Err(e) => {
            tracing::warn!(key, error = %e, "unreadable follow-up timer ignored");
            None
        }
    }
}
