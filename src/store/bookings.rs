//! The booking cache in KV: each booking the poller or the scheduler read, with the
//! revision (or `updated_at`) it was at, and the mark of the changed-bookings listing.
//!
//! Owns the record ([`CachedBooking`]) and its keys in the thread snapshots bucket
//! (`<prefix>_threads`, which the thread snapshot loader skips): `booking.<id>` per booking
//! ([`keys::encode`]d) and `bookings.mark` (the newest `updated_at` of the last complete
//! listing, [`BookingsMark`]). Must not: talk to Channex, decide what a change means or
//! publish events (the poller does); unreadable records are logged and read as absent
//! (they cost one `GET /bookings/:id`). Errors are [`StoreError`]s.

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use chrono::{DateTime, Utc};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::base::keys;
use crate::channex::BookingRecord;
use crate::events::{Booking, BookingStay};
use crate::store::nats::StoreError;

/// A booking as last read from Channex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedBooking {
    pub booking: Booking,
    #[serde(default)]
    pub property_id: String,
    /// Channex's `revision_id`, else `updated_at` in milliseconds.
    pub revision: String,
    #[serde(default)]
    pub updated_at: Option<DateTime<Utc>>,
    /// The dates and status the poller last announced (`booking.changed`) or first saw:
    /// what the next change is measured against. A refresh by anyone else keeps it, so
    /// reading a booking early (a firing timer) never hides its change from the poller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<BookingStay>,
}

impl CachedBooking {
    /// The entry for `record` read now, keeping `previous`'s announced stay.
    pub fn refreshed(previous: Option<&CachedBooking>, record: &BookingRecord) -> CachedBooking {
        let booking = Booking::from_channex(record);
        let announced = previous.map(|p| p.announced_stay());
        CachedBooking {
            booking,
            property_id: record.property_id.clone().unwrap_or_default(),
            revision: record.revision(),
            updated_at: record.updated_at,
            announced,
        }
    }

    /// What the next change is measured against.
    pub fn announced_stay(&self) -> BookingStay {
        self.announced
            .clone()
            .unwrap_or_else(|| self.booking.stay())
    }
}

/// The changed-bookings listing's mark: every booking updated before `newest_updated_at`
/// has been compared with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingsMark {
    pub newest_updated_at: DateTime<Utc>,
}

/// KV key of a cached booking: `booking.<id>`.
pub fn booking_key(booking_id: &str) -> String {
    format!("booking.{}", keys::encode(booking_id))
}

/// KV key of the listing mark.
pub const BOOKINGS_MARK_KEY: &str = "bookings.mark";

/// The booking cache (shares the thread snapshots bucket).
#[derive(Clone)]
pub struct BookingCache {
    store: kv::Store,
}

impl BookingCache {
    pub fn new(threads_bucket: kv::Store) -> Self {
        BookingCache {
            store: threads_bucket,
        }
    }

    pub async fn get(&self, booking_id: &str) -> Result<Option<CachedBooking>, StoreError> {
        self.read(&booking_key(booking_id)).await
    }

    pub async fn put(&self, cached: &CachedBooking) -> Result<(), StoreError> {
        self.write(&booking_key(&cached.booking.id), cached).await
    }

    /// Refresh the cached copy from `record`, read now by someone other than the poller (a
    /// firing timer): keeps the announced stay, never replaces the copy of a newer update,
    /// and writes only over the entry it read (compare-and-set), so a write the poller made
    /// meanwhile is never overwritten with an older view. `Ok(false)`: left as it was.
    pub async fn refresh(&self, record: &BookingRecord) -> Result<bool, StoreError> {
        let key = booking_key(&record.id);
        let what = || format!("booking cache {key}: refresh");
        let entry = self
            .store
            .entry(key.clone())
            .await
            .map_err(|e| StoreError::nats(what(), e))?;
        let entry = entry.filter(|e| e.operation == Operation::Put);
        let previous = entry
            .as_ref()
            .and_then(|e| serde_json::from_slice::<CachedBooking>(&e.value).ok());
        let newer_cached = previous.as_ref().and_then(|p| p.updated_at);
        if newer_cached
            .zip(record.updated_at)
            .is_some_and(|(c, r)| c > r)
        {
            return Ok(false);
        }
        let fresh = CachedBooking::refreshed(previous.as_ref(), record);
        let body = serde_json::to_vec(&fresh).map_err(|e| StoreError::codec(what(), e))?;
        match entry {
            Some(e) => match self.store.update(&key, body.into(), e.revision).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
                Err(e) => Err(StoreError::nats(what(), e)),
            },
            None => match self.store.create(&key, body.into()).await {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(StoreError::nats(what(), e)),
            },
        }
    }

    pub async fn mark(&self) -> Result<Option<BookingsMark>, StoreError> {
        self.read(BOOKINGS_MARK_KEY).await
    }

    pub async fn put_mark(&self, mark: &BookingsMark) -> Result<(), StoreError> {
        self.write(BOOKINGS_MARK_KEY, mark).await
    }

    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, StoreError> {
        let bytes = self
            .store
            .get(key)
            .await
            .map_err(|e| StoreError::nats(format!("booking cache {key}: read"), e))?;
        Ok(bytes.and_then(|b| match serde_json::from_slice::<T>(&b) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(key, error = %e, "unreadable booking cache entry ignored");
                None
            }
        }))
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T) -> Result<(), StoreError> {
        let what = || format!("booking cache {key}: write");
        let body = serde_json::to_vec(value).map_err(|e| StoreError::codec(what(), e))?;
        self.store
            .put(key, body.into())
            .await
            .map_err(|e| StoreError::nats(what(), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_collide_with_thread_snapshot_keys() {
        assert_eq!(booking_key("b-1"), "booking.b-1");
        assert_eq!(booking_key("a.b"), "booking.a=2Eb");
        assert!(!booking_key("x").starts_with("t."));
        assert!(
            !BOOKINGS_MARK_KEY.starts_with("t.") && !BOOKINGS_MARK_KEY.starts_with("baseline.")
        );
    }
}
