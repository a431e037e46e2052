//! The response-time records: per thread, the facts concierge saw about who wrote when,
//! kept compactly in KV bucket `<prefix>_responses` for `nats.responses_max_age` (at least
//! 90 days: Airbnb's response rate can look back that far).
//!
//! Owns the record ([`ThreadRecord`]: guest and property-side message ids and times, the
//! ids concierge sent itself or as an approved draft, the times concierge marked the thread
//! "no reply needed", the Airbnb inquiry's arrival, the largest message count seen), its
//! key `r.<property>.<thread>` (both [`keys::encode`]d), the compare-and-set update every
//! writer goes through ([`ResponseStore::update`]), the listing of one property's or every
//! record, the score-alert episodes (`a.<property>.<score>`, see [`ScoreEpisode`]) and the
//! purge of one thread's record.
//! Must not: decide what the facts mean (who answered, which score a message counts for:
//! that is `roles::responses`), nor read a clock of its own (callers pass `now`).
//!
//! Why facts and not outcomes: the events and the audit records that feed a record arrive
//! through two consumers in any order (a reply's event can be folded before the guest
//! message it answers, a concierge send's audit record before or after its event), so a
//! record only accumulates what was seen and the outcome is derived when read. Folding the
//! same fact twice changes nothing, so redeliveries are harmless.

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::base::keys;
use crate::store::nats::{read_stored, ReadFrom, StoreError};

/// The most entries of each list a record keeps (the oldest go first): a thread with more
/// than this many messages in the retention window is not a guest conversation.
pub const MAX_ENTRIES: usize = 500;

/// The channel of a thread, as far as the scores go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Airbnb,
    BookingCom,
    #[default]
    Other,
}

impl Channel {
    pub fn of(provider: &crate::events::Provider) -> Channel {
        match provider {
            crate::events::Provider::Airbnb => Channel::Airbnb,
            crate::events::Provider::BookingCom => Channel::BookingCom,
            crate::events::Provider::Other(_) => Channel::Other,
        }
    }

    /// The contract's spelling (`airbnb`, `booking_com`, `other`): metric labels, JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Airbnb => "airbnb",
            Channel::BookingCom => "booking_com",
            Channel::Other => "other",
        }
    }

    /// For people: `Airbnb`, `Booking.com`, `other`.
    pub fn label(self) -> &'static str {
        match self {
            Channel::Airbnb => "Airbnb",
            Channel::BookingCom => "Booking.com",
            Channel::Other => "other",
        }
    }
}

/// One message seen: its Channex id and when Channex says it was inserted (Unix µs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub id: String,
    pub at: i64,
}

/// What concierge saw of one thread. Field names are short: there is one record per
/// thread for three months.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadRecord {
    #[serde(rename = "p")]
    pub property_id: String,
    #[serde(rename = "t")]
    pub thread_id: String,
    /// Unknown until an event of the thread was folded (audit records do not say).
    #[serde(rename = "c", default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The largest `thread.message_count` an event carried: with the messages seen, it
    /// tells whether concierge saw the thread from its first message.
    #[serde(rename = "n", default)]
    pub max_count: u64,
    /// Guest messages.
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub guest: Vec<Seen>,
    /// Property-side messages (staff or concierge: see `concierge` / `drafts`).
    #[serde(rename = "s", default, skip_serializing_if = "Vec::is_empty")]
    pub property: Vec<Seen>,
    /// System messages (the inquiry message, ...): ids only, they count as seen.
    #[serde(rename = "y", default, skip_serializing_if = "Vec::is_empty")]
    pub system: Vec<String>,
    /// When the Airbnb inquiry arrived (its system message), Unix µs.
    #[serde(rename = "i", default, skip_serializing_if = "Option::is_none")]
    pub inquiry_at: Option<i64>,
    /// Ids of property messages concierge sent by itself.
    #[serde(rename = "o", default, skip_serializing_if = "Vec::is_empty")]
    pub concierge: Vec<String>,
    /// Ids of property messages sent as drafts a person approved.
    #[serde(rename = "d", default, skip_serializing_if = "Vec::is_empty")]
    pub drafts: Vec<String>,
    /// When concierge marked the thread "no reply needed" (Unix µs).
    #[serde(rename = "x", default, skip_serializing_if = "Vec::is_empty")]
    pub no_reply: Vec<i64>,
}

impl ThreadRecord {
    pub fn new(property_id: &str, thread_id: &str) -> Self {
        ThreadRecord {
            property_id: property_id.to_string(),
            thread_id: thread_id.to_string(),
            ..Default::default()
        }
    }

    /// Drops entries older than `cutoff` (Unix µs) and keeps each list within
    /// [`MAX_ENTRIES`]. Ids of concierge's own messages go with their messages.
    pub fn prune(&mut self, cutoff: i64) {
        let keep_recent = |list: &mut Vec<Seen>| {
            list.retain(|s| s.at >= cutoff);
            list.sort_by(|a, b| a.at.cmp(&b.at).then_with(|| a.id.cmp(&b.id)));
            let excess = list.len().saturating_sub(MAX_ENTRIES);
            list.drain(..excess);
        };
        keep_recent(&mut self.guest);
        keep_recent(&mut self.property);
        self.no_reply.retain(|at| *at >= cutoff);
        self.no_reply.sort_unstable();
        let excess = self.no_reply.len().saturating_sub(MAX_ENTRIES);
        self.no_reply.drain(..excess);
        for ids in [&mut self.system, &mut self.concierge, &mut self.drafts] {
            let excess = ids.len().saturating_sub(MAX_ENTRIES);
            ids.drain(..excess);
        }
    }

    /// Messages of the thread this record has seen.
    pub fn seen_count(&self) -> u64 {
        (self.guest.len() + self.property.len() + self.system.len()) as u64
    }
}

/// A score's alert state for one property: `below` while the score is under its
/// threshold; the episode's alert is armed once (`armed`), as a follow-up timer due at
/// `since`, so arming it again after a crash yields the same `follow_up.due` event id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreEpisode {
    pub below: bool,
    pub since: DateTime<Utc>,
    #[serde(default)]
    pub armed: bool,
    /// The thread the alert timer is armed on.
    #[serde(default)]
    pub thread_id: String,
}

/// `r.<property>.<thread>`.
pub fn record_key(property_id: &str, thread_id: &str) -> String {
    format!(
        "r.{}.{}",
        keys::encode(property_id),
        keys::encode(thread_id)
    )
}

/// `a.<property>.<score>`.
pub fn episode_key(property_id: &str, score: &str) -> String {
    format!("a.{}.{}", keys::encode(property_id), keys::encode(score))
}

/// How often an update is retried when another writer changed the record in between.
const CAS_ATTEMPTS: usize = 20;

/// Another writer kept changing a record for [`CAS_ATTEMPTS`] tries in a row.
#[derive(Debug, thiserror::Error)]
#[error("changed by other writers {CAS_ATTEMPTS} times in a row")]
pub struct Contended;

/// The answer of a compare-and-set write.
enum Cas {
    Written,
    /// Another writer changed (or created) the key since it was read.
    Conflict,
    Failed(StoreError),
}

/// The response record store (one KV bucket).
#[derive(Clone)]
pub struct ResponseStore {
    js: async_nats::jetstream::Context,
    store: kv::Store,
    bucket: String,
}

impl ResponseStore {
    pub fn new(js: async_nats::jetstream::Context, store: kv::Store, bucket: &str) -> Self {
        ResponseStore {
            js,
            store,
            bucket: bucket.to_string(),
        }
    }

    /// Reads the record, lets `fold` change it (returning whether it did), prunes it to
    /// `cutoff` and writes it back by compare-and-set, retrying on a concurrent change.
    /// Returns the record before and after when it changed, `None` when `fold` changed
    /// nothing (nothing is written).
    pub async fn update(
        &self,
        property_id: &str,
        thread_id: &str,
        cutoff: i64,
        mut fold: impl FnMut(&mut ThreadRecord) -> bool,
    ) -> Result<Option<(ThreadRecord, ThreadRecord)>, StoreError> {
        let key = record_key(property_id, thread_id);
        for _ in 0..CAS_ATTEMPTS {
            let (before, revision) = self.read_entry(&key).await?;
            let before = before
                .and_then(|b| decode_record(&key, &b))
                .unwrap_or_else(|| ThreadRecord::new(property_id, thread_id));
            let mut after = before.clone();
            if !fold(&mut after) {
                return Ok(None);
            }
            after.prune(cutoff);
            let body = serde_json::to_vec(&after)
                .map_err(|e| StoreError::codec(format!("response record {key}"), e))?;
            match self.write(&key, body, revision).await {
                Cas::Written => return Ok(Some((before, after))),
                Cas::Conflict => continue,
                Cas::Failed(e) => return Err(e),
            }
        }
        Err(StoreError::Unavailable {
            what: format!("response record {key}: write"),
            source: Box::new(Contended),
        })
    }

    /// The value of `key` (`None` when absent or deleted) and the revision to write on
    /// (also that of a delete marker: a purged key is written over it).
    async fn read_entry(
        &self,
        key: &str,
    ) -> Result<(Option<bytes::Bytes>, Option<u64>), StoreError> {
        let entry = self
            .store
            .entry(key)
            .await
            .map_err(|e| StoreError::nats(format!("{key}: read"), e))?;
        Ok(match entry {
            Some(e) if e.operation == kv::Operation::Put => (Some(e.value), Some(e.revision)),
            Some(e) => (None, Some(e.revision)),
            None => (None, None),
        })
    }

    /// Compare-and-set on `revision` (`None`: the key must not exist yet).
    async fn write(&self, key: &str, body: Vec<u8>, revision: Option<u64>) -> Cas {
        let what = || format!("{key}: write");
        match revision {
            Some(rev) => match self.store.update(key, body.into(), rev).await {
                Ok(_) => Cas::Written,
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Cas::Conflict,
                Err(e) => Cas::Failed(StoreError::nats(what(), e)),
            },
            None => match self.store.create(key, body.into()).await {
                Ok(_) => Cas::Written,
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Cas::Conflict,
                Err(e) => Cas::Failed(StoreError::nats(what(), e)),
            },
        }
    }

    pub async fn get(
        &self,
        property_id: &str,
        thread_id: &str,
    ) -> Result<Option<ThreadRecord>, StoreError> {
        let key = record_key(property_id, thread_id);
        let (bytes, _) = self.read_entry(&key).await?;
        Ok(bytes.and_then(|b| decode_record(&key, &b)))
    }

    /// Every record of `property_id` (`None`: of every property), read from the bucket's
    /// stream (one value per key is kept, so this reads each record once).
    pub async fn list(&self, property_id: Option<&str>) -> Result<Vec<ThreadRecord>, StoreError> {
        let filter = match property_id {
            Some(p) => format!("$KV.{}.r.{}.>", self.bucket, keys::encode(p)),
            None => format!("$KV.{}.r.>", self.bucket),
        };
        let mut out = Vec::new();
        read_stored(
            &self.js,
            &format!("KV_{}", self.bucket),
            &filter,
            ReadFrom::Beginning,
            false,
            |msg| {
                // Deleted and purged keys leave an empty marker.
                if let Ok(r) = serde_json::from_slice::<ThreadRecord>(&msg.payload) {
                    out.push(r);
                }
                true
            },
        )
        .await
        .map_err(|e| StoreError::Unavailable {
            what: "response records: list".into(),
            source: e.source,
        })?;
        Ok(out)
    }

    /// Removes every record of `thread_id` (under any property, or `property_id`'s only);
    /// how many there were.
    pub async fn purge_thread(
        &self,
        thread_id: &str,
        property_id: Option<&str>,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        for r in self.list(property_id).await? {
            if r.thread_id == thread_id {
                let key = record_key(&r.property_id, &r.thread_id);
                self.store
                    .purge(&key)
                    .await
                    .map_err(|e| StoreError::nats(format!("response record {key}: purge"), e))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The alert episode of one score, with the revision to write on.
    pub async fn episode(
        &self,
        property_id: &str,
        score: &str,
    ) -> Result<(Option<ScoreEpisode>, Option<u64>), StoreError> {
        let key = episode_key(property_id, score);
        let (bytes, revision) = self.read_entry(&key).await?;
        Ok((
            bytes.and_then(|b| serde_json::from_slice(&b).ok()),
            revision,
        ))
    }

    /// Writes an episode by compare-and-set on `revision` (`None`: it must not exist);
    /// `Ok(false)` when another writer got there first.
    pub async fn put_episode(
        &self,
        property_id: &str,
        score: &str,
        episode: &ScoreEpisode,
        revision: Option<u64>,
    ) -> Result<bool, StoreError> {
        let key = episode_key(property_id, score);
        let body = serde_json::to_vec(episode)
            .map_err(|e| StoreError::codec(format!("score episode {key}"), e))?;
        match self.write(&key, body, revision).await {
            Cas::Written => Ok(true),
            Cas::Conflict => Ok(false),
            Cas::Failed(e) => Err(e),
        }
    }
}

fn decode_record(key: &str, bytes: &[u8]) -> Option<ThreadRecord> {
    match serde_json::from_slice(bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            // An unreadable record is started afresh rather than blocking its thread.
            tracing::warn!(key, error = %e, "unreadable response record ignored");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_compact_and_round_trip() {
        let mut r = ThreadRecord::new("p1", "t1");
        r.channel = Some(Channel::BookingCom);
        r.guest.push(Seen {
            id: "m1".into(),
            at: 1_000,
        });
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"p":"p1","t":"t1","c":"booking_com","n":0,"g":[{"id":"m1","at":1000}]}"#
        );
        assert_eq!(serde_json::from_str::<ThreadRecord>(&json).unwrap(), r);
        assert_eq!(record_key("p.1", "t1"), "r.p=2E1.t1");
    }

    #[test]
    fn pruning_drops_old_entries_and_caps_lists() {
        let mut r = ThreadRecord::new("p", "t");
        for i in 0..(MAX_ENTRIES as i64 + 10) {
            r.guest.push(Seen {
                id: format!("g{i}"),
                at: i,
            });
        }
        r.no_reply = vec![1, 100];
        r.prune(5);
        assert_eq!(r.guest.len(), MAX_ENTRIES);
        assert_eq!(r.guest[0].id, "g10");
        assert_eq!(r.no_reply, vec![100]);
    }
}
