//! The idempotency ledger: what the executor has claimed, done, and sent, in a KV bucket.
//!
//! Owns the key layout and compare-and-set protocol behind "effectively once": an action
//! key is claimed with `create` (fails if anyone claimed it), the outcome is written with
//! `update` against the claim's revision, so two workers can never both own an action.
//! It must not call Channex or decide outcomes; the executor does.
//!
//! Keys (KV keys allow `[-/_=.a-zA-Z0-9]`, so ids are hashed or encoded with
//! [`crate::base::keys`]):
//! - `act.<sha256(action key)>`: [`LedgerEntry`] of one planned action;
//! - `own.<message id>`: a message this service sent (loop safety, takeover check);
//! - `cool.<thread>.<template>`: last time a template went to a thread (cooldown).

use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::base::keys;

#[derive(Debug, thiserror::Error)]
#[error("ledger {op} failed for {key}: {message}")]
pub struct LedgerError {
    pub op: &'static str,
    pub key: String,
    pub message: String,
}

impl LedgerError {
    /// The ledger could not be reached (timeout, no stream leader): waiting for NATS will
    /// help. Not so for an entry that does not decode or a claim another worker took over.
    pub fn is_unavailable(&self) -> bool {
        !matches!(self.op, "decode" | "encode" | "finish (claim taken over)")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerState {
    /// Someone is carrying the action out (or crashed while doing so).
    Claimed,
    /// The action reached a final outcome; never carry it out again.
    Done,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub state: LedgerState,
    pub worker: String,
    pub claimed_at: DateTime<Utc>,
    /// Final outcome (`executed`, `skipped`, `failed`, `dry_run`) once done.
    #[serde(default)]
    pub outcome: Option<String>,
    #[serde(default)]
    pub reason: Option<String>,
    /// The rendered text we meant to send: needed to resolve an ambiguous claim.
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub channex_message_id: Option<String>,
    #[serde(default)]
    pub attempts: u32,
}

/// The current ledger entry and its revision (for compare-and-set).
#[derive(Debug, Clone)]
pub struct Versioned {
    pub entry: LedgerEntry,
    pub revision: u64,
}

pub enum Claim {
    /// We own the action now (fresh claim, or a takeover of a stale one).
    Won {
        revision: u64,
        /// A previous claim existed and was taken over: the action may already have been
        /// carried out, so the caller must check before acting.
        previous: Option<LedgerEntry>,
    },
    /// Another worker holds a fresh claim: try again later.
    Busy,
    /// Already final.
    Done(LedgerEntry),
}

#[derive(Clone)]
pub struct Ledger {
    store: kv::Store,
    worker_id: String,
    /// A claim older than this is presumed abandoned by a crashed worker.
    claim_timeout: Duration,
}

pub fn action_ledger_key(action_key: &str) -> String {
    let digest = Sha256::digest(action_key.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("act.{hex}")
}

impl Ledger {
    pub fn new(store: kv::Store, worker_id: impl Into<String>, claim_timeout: Duration) -> Self {
        Ledger {
            store,
            worker_id: worker_id.into(),
            claim_timeout,
        }
    }

    fn err(op: &'static str, key: &str, e: impl std::fmt::Display) -> LedgerError {
        LedgerError {
            op,
            key: key.to_string(),
            message: e.to_string(),
        }
    }

    pub async fn get(&self, action_key: &str) -> Result<Option<Versioned>, LedgerError> {
        let key = action_ledger_key(action_key);
        let entry = self
            .store
            .entry(key.clone())
            .await
            .map_err(|e| Self::err("read", &key, e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                let parsed: LedgerEntry = serde_json::from_slice(&e.value)
                    .map_err(|err| Self::err("decode", &key, err))?;
                Ok(Some(Versioned {
                    entry: parsed,
                    revision: e.revision,
                }))
            }
            _ => Ok(None),
        }
    }

    fn claim_entry(&self, text: Option<&str>, attempts: u32) -> LedgerEntry {
        LedgerEntry {
            state: LedgerState::Claimed,
            worker: self.worker_id.clone(),
            claimed_at: Utc::now(),
            outcome: None,
            reason: None,
            text: text.map(str::to_string),
            channex_message_id: None,
            attempts,
        }
    }

    /// Claim `action_key` for this worker.
    pub async fn claim(&self, action_key: &str, text: Option<&str>) -> Result<Claim, LedgerError> {
        let key = action_ledger_key(action_key);
        let fresh = self.claim_entry(text, 1);
        let body = serde_json::to_vec(&fresh).map_err(|e| Self::err("encode", &key, e))?;
        match self.store.create(&key, body.into()).await {
            Ok(revision) => {
                return Ok(Claim::Won {
                    revision,
                    previous: None,
                })
            }
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(Self::err("claim", &key, e)),
        }
        let Some(current) = self.get(action_key).await? else {
            // The key exists (create said so) but this read did not see it: a replica that
            // lags behind after a fail-over. Try again later rather than loop on it.
            return Ok(Claim::Busy);
        };
        match current.entry.state {
            LedgerState::Done => Ok(Claim::Done(current.entry)),
            LedgerState::Claimed => {
                let age = Utc::now()
                    .signed_duration_since(current.entry.claimed_at)
                    .to_std()
                    .unwrap_or_default();
                if current.entry.worker == self.worker_id || age >= self.claim_timeout {
                    let mut takeover =
                        self.claim_entry(text, current.entry.attempts.saturating_add(1));
                    if takeover.text.is_none() {
                        takeover.text = current.entry.text.clone();
                    }
                    let body =
                        serde_json::to_vec(&takeover).map_err(|e| Self::err("encode", &key, e))?;
                    match self.store.update(&key, body.into(), current.revision).await {
                        Ok(revision) => Ok(Claim::Won {
                            revision,
                            previous: Some(current.entry),
                        }),
                        // Someone else took it over first.
                        Err(_) => Ok(Claim::Busy),
                    }
                } else {
                    Ok(Claim::Busy)
                }
            }
        }
    }

    /// Record the final outcome, only if we still own the claim.
    pub async fn finish(
        &self,
        action_key: &str,
        revision: u64,
        mut entry: LedgerEntry,
    ) -> Result<(), LedgerError> {
        let key = action_ledger_key(action_key);
        entry.state = LedgerState::Done;
        entry.worker = self.worker_id.clone();
        let body = serde_json::to_vec(&entry).map_err(|e| Self::err("encode", &key, e))?;
        match self.store.update(&key, body.into(), revision).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(Self::err("finish (claim taken over)", &key, e))
            }
            Err(e) => Err(Self::err("finish", &key, e)),
        }
    }

    /// Give a claim back when the action certainly did not happen (e.g. Channex said 429),
    /// so the redelivery can claim it at once.
    pub async fn release(&self, action_key: &str, revision: u64) -> Result<(), LedgerError> {
        let key = action_ledger_key(action_key);
        // `delete` has no revision check in async-nats; write a claim with an old timestamp
        // against our revision instead, which any worker may take over immediately.
        let mut stale = self.claim_entry(None, 0);
        stale.claimed_at = DateTime::<Utc>::UNIX_EPOCH;
        stale.worker = String::new();
        let body = serde_json::to_vec(&stale).map_err(|e| Self::err("encode", &key, e))?;
        self.store
            .update(&key, body.into(), revision)
            .await
            .map(|_| ())
            .map_err(|e| Self::err("release", &key, e))
    }

    pub async fn mark_own_message(&self, message_id: &str) -> Result<(), LedgerError> {
        let key = format!("own.{}", keys::encode(message_id));
        self.store
            .put(&key, Utc::now().to_rfc3339().into())
            .await
            .map(|_| ())
            .map_err(|e| Self::err("mark_own", &key, e))
    }

    pub async fn is_own_message(&self, message_id: &str) -> Result<bool, LedgerError> {
        let key = format!("own.{}", keys::encode(message_id));
        self.store
            .get(key.clone())
            .await
            .map(|v| v.is_some_and(|b| !b.is_empty()))
            .map_err(|e| Self::err("read", &key, e))
    }

    fn cooldown_key(thread_id: &str, template: &str) -> String {
        format!(
            "cool.{}.{}",
            keys::encode(thread_id),
            keys::encode(template)
        )
    }

    /// When `template` was last sent to `thread_id`.
    pub async fn last_sent(
        &self,
        thread_id: &str,
        template: &str,
    ) -> Result<Option<DateTime<Utc>>, LedgerError> {
        let key = Self::cooldown_key(thread_id, template);
        let value = self
            .store
            .get(key.clone())
            .await
            .map_err(|e| Self::err("read", &key, e))?;
        Ok(value
            .and_then(|b| std::str::from_utf8(&b).ok().map(str::to_string))
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc)))
    }

    pub async fn mark_sent(
        &self,
        thread_id: &str,
        template: &str,
        at: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let key = Self::cooldown_key(thread_id, template);
        self.store
            .put(&key, at.to_rfc3339().into())
            .await
            .map(|_| ())
            .map_err(|e| Self::err("mark_sent", &key, e))
    }
}
