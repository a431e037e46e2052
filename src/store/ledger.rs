//! The idempotency ledger: what the executor has claimed, done, and sent, in a KV bucket.
//!
//! Owns the key layout and compare-and-set protocol behind "effectively once": an action
//! key is claimed with `create` (fails if anyone claimed it), the outcome is written with
//! `update` against the claim's revision, so two workers can never both own an action.
//! It must not call Channex or decide outcomes; the executor does.
//!
//! Time (claim stamps, renewals, expiry, own-message marks) comes from the injected
//! [`Clock`], never `Utc::now()`, so claim expiry is tested with a manual clock. Whether a
//! failure means "NATS unavailable, wait" is decided by the one classification of
//! [`crate::store::nats`] ([`LedgerError::is_unavailable`]).
//!
//! Keys (KV keys allow `[-/_=.a-zA-Z0-9]`, so ids are hashed or encoded with
//! [`crate::base::keys`]):
//! - `act.<sha256(action key)>`: [`LedgerEntry`] of one planned action;
//! - `own.<message id>`: a message this service sent (loop safety, takeover check);
//! - `cool.<thread>.<template>`: last time a template went to a thread (cooldown);
//! - `send.<sha256(thread, normalised text)>`: a reply about to be sent, written before the
//!   POST so that the message is recognised as ours even if the process dies before
//!   `own.` is written (see [`Ledger::is_pending_own`]);
//! - `upl.<sha256 of a file>`: the Channex attachment id a file with that content was
//!   uploaded as (uploads are reused across replies; see [`Ledger::uploaded_attachment`]);
//! - `last.<thread>`: the last reply sent to a thread as Channex returned it
//!   ([`SentMessage`]), so the poller can build that message's event without reading the
//!   thread's messages when the thread grew by exactly that message.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::base::clock::{system_clock, Clock};
use crate::base::keys;
use crate::store::nats::{NatsFailure, NatsSource};

#[derive(Debug, thiserror::Error)]
#[error("ledger {op} failed for {key}: {source}")]
pub struct LedgerError {
    pub op: &'static str,
    pub key: String,
    #[source]
    pub source: NatsSource,
    /// Classified once, by [`crate::store::nats::NatsFailure`].
    unavailable: bool,
}

impl LedgerError {
    /// The ledger could not be reached (timeout, no stream leader): waiting for NATS will
    /// help. Not so for an entry that does not decode or a claim another worker took over.
    pub fn is_unavailable(&self) -> bool {
        self.unavailable
    }

    /// The claim this worker held was taken over by another worker (it had expired).
    pub fn is_taken_over(&self) -> bool {
        matches!(
            self.op,
            "finish (claim taken over)" | "renew (claim taken over)"
        )
    }
}

/// The last reply concierge sent to a thread, as Channex's answer to the POST described
/// it: what the poller needs to build that message's event without reading it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentMessage {
    pub id: String,
    pub text: String,
    pub inserted_at: DateTime<Utc>,
    #[serde(default)]
    pub attachments: Vec<String>,
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
    /// Last renewal by the holder; expiry counts from here (or from `claimed_at`).
    #[serde(default)]
    pub renewed_at: Option<DateTime<Utc>>,
    /// The thread the action concerns: lets one thread's data be purged on request.
    #[serde(default)]
    pub thread_id: Option<String>,
}

impl LedgerEntry {
    /// When the claim was last known alive.
    pub fn alive_at(&self) -> DateTime<Utc> {
        self.renewed_at.unwrap_or(self.claimed_at)
    }
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
    /// A claim not renewed for this long is presumed abandoned by a crashed worker.
    claim_timeout: Duration,
    /// Judges claim expiry and stamps claims and renewals.
    clock: Clock,
    /// Action keys a task of this process is working on: never taken over by this process.
    held: Arc<Mutex<HashSet<String>>>,
    /// Action keys whose last attempt in this process may still land at Channex (an
    /// ambiguous or abandoned send): this process too waits for the claim to expire.
    in_doubt: Arc<Mutex<HashSet<String>>>,
}

/// A message text as its identity: Channex strips or re-wraps whitespace, and identity
/// must survive that (sending marks, recognising our own messages).
pub fn normalise_text(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
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
            clock: system_clock(),
            held: Arc::default(),
            in_doubt: Arc::default(),
        }
    }

    /// Judge expiry with `clock` (tests: a fixed or stepped clock).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn claim_timeout(&self) -> Duration {
        self.claim_timeout
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A poisoned set is still a set of keys: keep using it.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_doubt(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.in_doubt.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mark `action_key` as worked on by a task of this process (until [`Self::unhold`]).
    pub(crate) fn hold(&self, action_key: &str) {
        self.in_doubt().remove(action_key);
        self.held().insert(action_key.to_string());
    }

    /// The last attempt on `action_key` may still land at Channex (a send abandoned or
    /// answered ambiguously while the request may be in flight): no task of this process
    /// takes the claim back before it expires, exactly as another worker would not, so the
    /// verifying read comes after the abandoned request had its time.
    pub(crate) fn mark_in_doubt(&self, action_key: &str) {
        self.in_doubt().insert(action_key.to_string());
    }

    pub(crate) fn unhold(&self, action_key: &str) {
        self.held().remove(action_key);
    }

    /// A failed NATS call, classified by [`NatsFailure`].
    fn err(op: &'static str, key: &str, e: impl NatsFailure) -> LedgerError {
        LedgerError {
            op,
            key: key.to_string(),
            unavailable: !e.is_refusal(),
            source: Box::new(e),
        }
    }

    /// An entry that does not decode (or encode): waiting will not help.
    fn codec_err(op: &'static str, key: &str, e: serde_json::Error) -> LedgerError {
        LedgerError {
            op,
            key: key.to_string(),
            unavailable: false,
            source: Box::new(e),
        }
    }

    /// The claim this worker held was taken over (`op` says so, see
    /// [`LedgerError::is_taken_over`]).
    fn taken_over(op: &'static str, key: &str, source: impl Into<NatsSource>) -> LedgerError {
        LedgerError {
            op,
            key: key.to_string(),
            unavailable: false,
            source: source.into(),
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
                    .map_err(|err| Self::codec_err("decode", &key, err))?;
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
            claimed_at: (self.clock)(),
            outcome: None,
            reason: None,
            text: text.map(str::to_string),
            channex_message_id: None,
            attempts,
            renewed_at: None,
            thread_id: None,
        }
    }

    /// A claim may be taken over once it has not been renewed for `claim_timeout`, or
    /// at once by this process when none of its tasks works on it any more and its last
    /// attempt here cannot still be in flight (see [`Self::mark_in_doubt`]).
    fn may_take_over(&self, action_key: &str, entry: &LedgerEntry) -> bool {
        if entry.worker == self.worker_id {
            if self.held().contains(action_key) {
                return false;
            }
            if !self.in_doubt().contains(action_key) {
                return true;
            }
        }
        (self.clock)()
            .signed_duration_since(entry.alive_at())
            .to_std()
            .is_ok_and(|age| age >= self.claim_timeout)
    }

    /// Claim `action_key` for this worker.
    pub async fn claim(&self, action_key: &str, text: Option<&str>) -> Result<Claim, LedgerError> {
        self.claim_in(action_key, None, text).await
    }

    /// Claim `action_key`, an action on `thread_id` (recorded for purges).
    pub async fn claim_in(
        &self,
        action_key: &str,
        thread_id: Option<&str>,
        text: Option<&str>,
    ) -> Result<Claim, LedgerError> {
        let key = action_ledger_key(action_key);
        let mut fresh = self.claim_entry(text, 1);
        fresh.thread_id = thread_id.map(str::to_string);
        let body = serde_json::to_vec(&fresh).map_err(|e| Self::codec_err("encode", &key, e))?;
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
            LedgerState::Done => {
                self.in_doubt().remove(action_key);
                Ok(Claim::Done(current.entry))
            }
            LedgerState::Claimed => {
                if self.may_take_over(action_key, &current.entry) {
                    let mut takeover =
                        self.claim_entry(text, current.entry.attempts.saturating_add(1));
                    if takeover.text.is_none() {
                        takeover.text = current.entry.text.clone();
                    }
                    takeover.thread_id = fresh.thread_id.or(current.entry.thread_id.clone());
                    let body = serde_json::to_vec(&takeover)
                        .map_err(|e| Self::codec_err("encode", &key, e))?;
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

    /// Prove the claim at `revision` is still ours and push its expiry out by
    /// `claim_timeout` (compare-and-set); returns the new revision.
    pub async fn renew(&self, action_key: &str, revision: u64) -> Result<u64, LedgerError> {
        let key = action_ledger_key(action_key);
        let taken_over = || Self::taken_over("renew (claim taken over)", &key, "revision changed");
        let Some(current) = self.get(action_key).await? else {
            return Err(taken_over());
        };
        if current.revision != revision || current.entry.state != LedgerState::Claimed {
            return Err(taken_over());
        }
        let mut entry = current.entry;
        entry.renewed_at = Some((self.clock)());
        let body = serde_json::to_vec(&entry).map_err(|e| Self::codec_err("encode", &key, e))?;
        match self.store.update(&key, body.into(), revision).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(taken_over()),
            Err(e) => Err(Self::err("renew", &key, e)),
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
        let body = serde_json::to_vec(&entry).map_err(|e| Self::codec_err("encode", &key, e))?;
        match self.store.update(&key, body.into(), revision).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                Err(Self::taken_over("finish (claim taken over)", &key, e))
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
        let body = serde_json::to_vec(&stale).map_err(|e| Self::codec_err("encode", &key, e))?;
        self.store
            .update(&key, body.into(), revision)
            .await
            .map(|_| ())
            .map_err(|e| Self::err("release", &key, e))
    }

    fn upload_key(sha256: &str) -> String {
        format!("upl.{}", keys::encode(sha256))
    }

    /// The Channex attachment id a file with content hash `sha256` was uploaded as, if it
    /// was.
    pub async fn uploaded_attachment(&self, sha256: &str) -> Result<Option<String>, LedgerError> {
        let key = Self::upload_key(sha256);
        let value = self
            .store
            .get(key.clone())
            .await
            .map_err(|e| Self::err("read", &key, e))?;
        Ok(value
            .and_then(|b| String::from_utf8(b.to_vec()).ok())
            .filter(|id| !id.is_empty()))
    }

    /// Remember that the file with content hash `sha256` is Channex attachment `id`.
    pub async fn record_upload(&self, sha256: &str, id: &str) -> Result<(), LedgerError> {
        let key = Self::upload_key(sha256);
        self.store
            .put(&key, id.to_string().into_bytes().into())
            .await
            .map(|_| ())
            .map_err(|e| Self::err("record_upload", &key, e))
    }

    /// Forget the upload of `sha256` (Channex refused its id: the next send uploads again).
    pub async fn forget_upload(&self, sha256: &str) -> Result<(), LedgerError> {
        let key = Self::upload_key(sha256);
        self.store
            .put(&key, Vec::new().into())
            .await
            .map(|_| ())
            .map_err(|e| Self::err("forget_upload", &key, e))
    }

    pub async fn mark_own_message(&self, message_id: &str) -> Result<(), LedgerError> {
        let key = format!("own.{}", keys::encode(message_id));
        self.store
            .put(&key, (self.clock)().to_rfc3339().into())
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

    fn last_sent_key(thread_id: &str) -> String {
        format!("last.{}", keys::encode(thread_id))
    }

    /// Remember `message` as the last reply sent to `thread_id` (after the POST, with what
    /// Channex answered).
    pub async fn record_last_reply(
        &self,
        thread_id: &str,
        message: &SentMessage,
    ) -> Result<(), LedgerError> {
        let key = Self::last_sent_key(thread_id);
        let body = serde_json::to_vec(message).map_err(|e| Self::codec_err("encode", &key, e))?;
        self.store
            .put(&key, body.into())
            .await
            .map(|_| ())
            .map_err(|e| Self::err("record_last_reply", &key, e))
    }

    /// The last reply sent to `thread_id`, if one is recorded (one that does not decode is
    /// treated as none: the caller then reads the thread).
    pub async fn last_reply(&self, thread_id: &str) -> Result<Option<SentMessage>, LedgerError> {
        let key = Self::last_sent_key(thread_id);
        let value = self
            .store
            .get(key.clone())
            .await
            .map_err(|e| Self::err("read", &key, e))?;
        Ok(value.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    fn sending_key(thread_id: &str, text: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(thread_id.as_bytes());
        hasher.update([0u8]);
        hasher.update(normalise_text(text).as_bytes());
        let hex: String = hasher
            .finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("send.{hex}")
    }

    /// Note, before the POST, that this text is about to go to this thread: a process
    /// killed between the POST and [`Self::mark_own_message`] still leaves the message
    /// recognisable as ours.
    pub async fn mark_sending(&self, thread_id: &str, text: &str) -> Result<(), LedgerError> {
        let key = Self::sending_key(thread_id, text);
        self.store
            .put(&key, (self.clock)().to_rfc3339().into())
            .await
            .map(|_| ())
            .map_err(|e| Self::err("mark_sending", &key, e))
    }

    /// The send certainly did not happen: a staff message with the same text is not ours.
    pub async fn clear_sending(&self, thread_id: &str, text: &str) -> Result<(), LedgerError> {
        let key = Self::sending_key(thread_id, text);
        self.store
            .delete(&key)
            .await
            .map_err(|e| Self::err("clear_sending", &key, e))
    }

    /// A property message with this text in this thread, inserted around a send we were
    /// about to make (from 2 minutes before it, for clock skew, until the claim that
    /// allowed it ran out, plus the same skew), is ours even if it is not marked `own.`.
    pub async fn is_pending_own(
        &self,
        thread_id: &str,
        text: &str,
        inserted_at: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        let key = Self::sending_key(thread_id, text);
        let value = self
            .store
            .get(key.clone())
            .await
            .map_err(|e| Self::err("read", &key, e))?;
        let Some(at) = value
            .and_then(|b| std::str::from_utf8(&b).ok().map(str::to_string))
            .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| t.with_timezone(&Utc))
        else {
            return Ok(false);
        };
        let skew = chrono::Duration::minutes(2);
        let life = chrono::Duration::from_std(self.claim_timeout).unwrap_or(skew);
        Ok(inserted_at >= at - skew && inserted_at <= at + life + skew)
    }

    /// Ours for certain (`own.`) or about to be sent by us when the process died (`send.`).
    pub async fn is_ours(
        &self,
        thread_id: &str,
        message_id: &str,
        text: &str,
        inserted_at: DateTime<Utc>,
    ) -> Result<bool, LedgerError> {
        if self.is_own_message(message_id).await? {
            return Ok(true);
        }
        self.is_pending_own(thread_id, text, inserted_at).await
    }

    /// Forget everything about one thread: its actions' entries (rendered texts) and their
    /// own-message and sending marks, its cooldown marks and its last reply. Entries
    /// written before entries recorded their thread cannot be found; they expire with
    /// `ledger_max_age`.
    /// Returns the number of keys removed.
    pub async fn purge_thread(&self, thread_id: &str) -> Result<usize, LedgerError> {
        use futures::TryStreamExt;
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(|e| Self::err("list", "*", e))?
            .try_collect()
            .await
            .map_err(|e| Self::err("list", "*", e))?;
        let cooldowns = format!("cool.{}.", keys::encode(thread_id));
        let last_reply = Self::last_sent_key(thread_id);
        let mut doomed: Vec<String> = keys
            .iter()
            .filter(|k| k.starts_with(&cooldowns) || **k == last_reply)
            .cloned()
            .collect();
        for key in keys.iter().filter(|k| k.starts_with("act.")) {
            let Some(entry) = self
                .store
                .get(key.clone())
                .await
                .map_err(|e| Self::err("read", key, e))?
            else {
                continue;
            };
            let Ok(entry) = serde_json::from_slice::<LedgerEntry>(&entry) else {
                continue;
            };
            if entry.thread_id.as_deref() != Some(thread_id) {
                continue;
            }
            doomed.push(key.clone());
            if let Some(id) = &entry.channex_message_id {
                doomed.push(format!("own.{}", keys::encode(id)));
            }
            if let Some(text) = &entry.text {
                doomed.push(Self::sending_key(thread_id, text));
            }
        }
        for key in &doomed {
            self.store
                .purge(key)
                .await
                .map_err(|e| Self::err("purge", key, e))?;
        }
        Ok(doomed.len())
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
