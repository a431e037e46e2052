//! Console sessions ended before their expiry, shared by every replica through one KV
//! bucket (`<prefix>_sessions`).
//!
//! Owns the bucket's two kinds of keys and their JSON:
//! - `revoked.<session id>` `{at}`: that session was logged out (every copy of its cookie
//!   ends with it);
//! - `epoch` `{not_after_ms, at}`: every session issued at or before `not_after_ms` (Unix
//!   milliseconds) is ended ("end all sessions", e.g. for a lost laptop). The epoch only
//!   moves forward (compare-and-set), so a revoker with a late clock cannot revive sessions.
//!
//! Entries expire with the bucket's [`RETENTION`], longer than any session lives, so the
//! bucket stays small and nothing needs cleaning up. Holds no personal data: session ids
//! are random.
//!
//! Must not: know what a session value looks like or how it is checked (the console's
//! `auth` does); keep anything in memory (a replica must see another's logout at once).

use std::time::Duration;

use async_nats::jetstream::kv::{self, CreateErrorKind, UpdateErrorKind};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::store::nats::StoreError;

/// How long the bucket keeps an entry: longer than a console session lives (7 days), so a
/// revocation outlasts the session it ends.
pub const RETENTION: Duration = crate::store::nats::SESSIONS_RETENTION;

const EPOCH_KEY: &str = "epoch";

/// Length of a session id: 128 random bits in lowercase hex.
pub const SESSION_ID_LEN: usize = 32;

/// Is `sid` a session id (`[0-9a-f]{32}`, so always a valid KV key token)?
pub fn is_session_id(sid: &str) -> bool {
    sid.len() == SESSION_ID_LEN && sid.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[derive(Debug, Serialize, Deserialize)]
struct Revoked {
    at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Epoch {
    /// Sessions issued at or before this Unix millisecond are ended.
    not_after_ms: i64,
    at: DateTime<Utc>,
}

/// The session revocations of one deployment. Cheap to clone.
#[derive(Clone)]
pub struct SessionRevocations {
    kv: kv::Store,
}

fn refused_id(sid: &str) -> StoreError {
    StoreError::Refused {
        what: "session revocation".into(),
        source: format!("not a session id ({} characters)", sid.len()).into(),
    }
}

impl SessionRevocations {
    pub fn new(kv: kv::Store) -> Self {
        SessionRevocations { kv }
    }

    /// Ends session `sid` (idempotent).
    pub async fn revoke(&self, sid: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        if !is_session_id(sid) {
            return Err(refused_id(sid));
        }
        let body = serde_json::to_vec(&Revoked { at })
            .map_err(|e| StoreError::codec("session revocation", e))?;
        self.kv
            .put(format!("revoked.{sid}"), body.into())
            .await
            .map_err(|e| StoreError::nats("session revocation", e))?;
        Ok(())
    }

    /// Ends every session issued at or before `at`; returns the epoch now in force (later
    /// than `at` when another revoker already moved it further).
    pub async fn revoke_all(&self, at: DateTime<Utc>) -> Result<DateTime<Utc>, StoreError> {
        let wanted = at.timestamp_millis();
        loop {
            let entry = self
                .kv
                .entry(EPOCH_KEY)
                .await
                .map_err(|e| StoreError::nats("sessions epoch", e))?;
            let current = entry
                .as_ref()
                .and_then(|e| serde_json::from_slice::<Epoch>(&e.value).ok());
            if let Some(current) = current.filter(|c| c.not_after_ms >= wanted) {
                return Ok(DateTime::from_timestamp_millis(current.not_after_ms).unwrap_or(at));
            }
            let body = serde_json::to_vec(&Epoch {
                not_after_ms: wanted,
                at,
            })
            .map_err(|e| StoreError::codec("sessions epoch", e))?;
            let written = match entry {
                Some(e) => self
                    .kv
                    .update(EPOCH_KEY, body.into(), e.revision)
                    .await
                    .map(|_| true)
                    .or_else(|e| lost_race(e.kind() == UpdateErrorKind::WrongLastRevision, e)),
                None => self
                    .kv
                    .create(EPOCH_KEY, body.into())
                    .await
                    .map(|_| true)
                    .or_else(|e| lost_race(e.kind() == CreateErrorKind::AlreadyExists, e)),
            };
            if written? {
                return Ok(at);
            }
        }
    }

    /// Was session `sid`, issued at `issued_ms` (Unix milliseconds), ended? A value that
    /// is not a session id counts as ended.
    pub async fn is_revoked(&self, sid: &str, issued_ms: i64) -> Result<bool, StoreError> {
        if !is_session_id(sid) {
            return Ok(true);
        }
        let key = format!("revoked.{sid}");
        let (revoked, epoch) = tokio::join!(self.kv.get(key), self.kv.get(EPOCH_KEY));
        let revoked = revoked.map_err(|e| StoreError::nats("session revocation", e))?;
        let epoch = epoch.map_err(|e| StoreError::nats("sessions epoch", e))?;
        if revoked.is_some() {
            return Ok(true);
        }
        let epoch = epoch
            .map(|v| serde_json::from_slice::<Epoch>(&v))
            .transpose()
            .map_err(|e| StoreError::codec("sessions epoch", e))?;
        Ok(epoch.is_some_and(|e| issued_ms <= e.not_after_ms))
    }
}

/// `Ok(false)` (read again and retry) when a compare-and-set lost to another writer.
fn lost_race<E>(lost: bool, e: E) -> Result<bool, StoreError>
where
    E: crate::store::nats::NatsFailure,
{
    if lost {
        Ok(false)
    } else {
        Err(StoreError::nats("sessions epoch", e))
    }
}
