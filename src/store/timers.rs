//! Durable follow-up timers in KV: the record a rule's `follow_up(name, when, data)` arms.
//!
//! Owns the timer record ([`FollowUpTimer`]), its key (bucket `<prefix>_followups`, key
//! `<thread>.<name>` for a timer of a thread without booking, `b.<booking>.<name>` for a
//! timer of a booking — armed by an event that carries a `booking` block, with or without a
//! thread — each part a [`keys::encode`] token, so the two forms never collide) and the
//! store operations on it: arm (re-arming the same scope+name replaces it: debounce),
//! cancel, cancel every timer of a scope, list, the
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
    /// Empty for a timer of a booking that has no thread (yet).
    pub thread_id: String,
    /// Set: the timer belongs to this booking (key `b.<booking>.<name>`); when it fires the
    /// scheduler re-reads the booking and the event carries it as it is then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booking_id: Option<String>,
    pub property_id: String,
    pub name: String,
    pub due_at: DateTime<Utc>,
    #[serde(default)]
    pub data: Map<String, Value>,
    pub armed_at: DateTime<Utc>,
    /// Id of the event whose rule armed it (for the audit trail).
    pub armed_by_event: String,
    /// A booking's timer: the stay's dates when armed (the fired event carries them, so a
    /// stay moved since is skipped as `booking_moved`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stay: Option<Box<crate::events::StayDates>>,
}

/// KV key of a timer: `<thread>.<name>`, each a [`keys::encode`] token.
pub fn follow_up_key(thread_id: &str, name: &str) -> String {
    format!("{}.{}", keys::encode(thread_id), keys::encode(name))
}

/// KV key of a booking's timer: `b.<booking>.<name>`.
pub fn booking_follow_up_key(booking_id: &str, name: &str) -> String {
    format!("b.{}.{}", keys::encode(booking_id), keys::encode(name))
}

/// Whose timers: a thread's (no booking known) or a booking's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerScope<'a> {
    Thread(&'a str),
    Booking(&'a str),
}

impl TimerScope<'_> {
    pub fn key(&self, name: &str) -> String {
        match self {
            TimerScope::Thread(t) => follow_up_key(t, name),
            TimerScope::Booking(b) => booking_follow_up_key(b, name),
        }
    }

    /// The prefix every key of this scope starts with (then one more token, the name).
    fn prefix(&self) -> String {
        match self {
            TimerScope::Thread(t) => format!("{}.", keys::encode(t)),
            TimerScope::Booking(b) => format!("b.{}.", keys::encode(b)),
        }
    }
}

impl FollowUpTimer {
    /// The scope this timer is keyed by: its booking when it has one.
    pub fn scope(&self) -> TimerScope<'_> {
        match &self.booking_id {
            Some(b) => TimerScope::Booking(b),
            None => TimerScope::Thread(&self.thread_id),
        }
    }

    pub fn key(&self) -> String {
        self.scope().key(&self.name)
    }
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

    /// Arm (or re-arm) a timer. Re-arming the same scope+name replaces it (debounce).
    pub async fn arm(&self, t: &FollowUpTimer) -> Result<(), StoreError> {
        let key = t.key();
        let value =
            serde_json::to_vec(t).map_err(|e| StoreError::codec(timer_op("arm", &key), e))?;
        self.store
            .put(&key, value.into())
            .await
            .map_err(|e| StoreError::nats(timer_op("arm", &key), e))?;
        Ok(())
    }

    /// Cancel a thread's timer; `Ok(true)` when one was armed.
    pub async fn cancel(&self, thread_id: &str, name: &str) -> Result<bool, StoreError> {
        self.cancel_in(TimerScope::Thread(thread_id), name).await
    }

    /// Cancel every timer of `scope`; how many were armed.
    pub async fn cancel_all(&self, scope: TimerScope<'_>) -> Result<usize, StoreError> {
        let prefix = scope.prefix();
        let mut cancelled = 0;
        for key in self.keys().await? {
            let Some(name) = key.strip_prefix(&prefix).filter(|n| !n.contains('.')) else {
                continue;
            };
            let Ok(name) = keys::decode(name) else {
                continue;
            };
            if self.cancel_in(scope, &name).await? {
                cancelled += 1;
            }
        }
        Ok(cancelled)
    }

    async fn keys(&self) -> Result<Vec<String>, StoreError> {
        let list_err = |e| StoreError::nats("follow-up timers: list", e);
        self.store
            .keys()
            .await
            .map_err(list_err)?
            .try_collect()
            .await
            .map_err(|e| StoreError::nats("follow-up timers: list", e))
    }

    /// Cancel a timer of `scope`; `Ok(true)` when one was armed.
    pub async fn cancel_in(&self, scope: TimerScope<'_>, name: &str) -> Result<bool, StoreError> {
        let key = scope.key(name);
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
        self.get_in(TimerScope::Thread(thread_id), name).await
    }

    pub async fn get_in(
        &self,
        scope: TimerScope<'_>,
        name: &str,
    ) -> Result<Option<FollowUpTimer>, StoreError> {
        Ok(self.get_stored(&scope.key(name)).await?.map(|s| s.timer))
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
        let keys = self.keys().await?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(t) = self.get_stored(&key).await? {
                out.push(t);
            }
        }
        out.sort_by(|a, b| (a.timer.due_at, &a.key).cmp(&(b.timer.due_at, &b.key)));
        Ok(out)
    }

    /// The armed timers of one thread, soonest first: its own (`<thread>.<name>`: the key
    /// listing is filtered before any timer is read; a thread id `b` does not match booking
    /// keys) and the stay timers of its bookings (`b.<booking>.<name>` whose timer was armed
    /// for this thread).
    pub async fn list_for_thread(&self, thread_id: &str) -> Result<Vec<FollowUpTimer>, StoreError> {
        let prefix = format!("{}.", keys::encode(thread_id));
        let mut out = Vec::new();
        for key in self.keys().await? {
            let own = key.strip_prefix(&prefix).is_some_and(|n| !n.contains('.'));
            let booking = key
                .strip_prefix("b.")
                .is_some_and(|rest| rest.matches('.').count() == 1);
            if !(own || booking) {
                continue;
            }
            match self.get_stored(&key).await? {
                Some(t) if own || t.timer.thread_id == thread_id => out.push(t.timer),
                _ => {}
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

    /// How many timers are armed.
    pub async fn pending_count(&self) -> Result<usize, StoreError> {
        // Keys only: one listing, not one read per timer (10,000 threads, a health page).
        Ok(self.keys().await?.len())
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
