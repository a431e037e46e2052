//! The poller's bookings part: the `booking` block of thread events and the read-only
//! detection of `booking.changed`.
//!
//! Owns: reading a thread's booking (the KV cache, else `GET /bookings/:id` then cached),
//! the changed-bookings listing of each cycle and the comparison that decides a change.
//! Cost per cycle: one `GET /bookings?order[updated_at]=desc&filter[updated_at][gte]=<since>`
//! (`since` = the mark less [`BOOKING_LOOKBACK`]; plus `filter[property_id]` when one
//! property is configured) when nothing changed (more pages only when
//! more than 100 bookings changed within the look-back), plus one `GET /bookings/:id` per
//! booking of a thread event that is not cached yet. The first listing (no mark in KV) is the bookings'
//! baseline: it caches every booking and emits nothing. Every listed row moves the mark,
//! another property's too. The listing stops at the first row older than `since` only
//! when Channex reports the order asked for (`updated_at desc`); else it reads every page.
//!
//! A change is measured against the stay the poller last announced (or first saw), not
//! against whatever refreshed the cache last (the scheduler re-reads bookings when timers
//! fire). A booking never announced is new (`before` absent) when Channex created it
//! within the listing's window; an older one (a newly configured property, or a booking
//! first read for a thread) is compared with the stay first cached (see `change_of`).
//! The event id is `booking.changed:<booking>:<revision>`, so a crash between publish and
//! cache write re-publishes a duplicate JetStream drops.
//!
//! Must not: ack booking revisions or call the revisions feed (the host's PMS owns it), nor
//! write anything to Channex. A malformed booking is reported once (`malformed_item`) and
//! the cycle goes on.

use chrono::{DateTime, Utc};

use super::{Poller, PollerError};
use crate::channex::{BookingQuery, BookingRecord, ChannexError, ItemKind, SkippedItem};
use crate::events::{ids, Booking, BookingChange, BookingStay, Event, EventType};
use crate::store::bookings::{BookingsMark, CachedBooking};

/// How far below the mark each listing reads again: Channex's `updated_at` stamps are not
/// an exact timeline, and a booking updated in the same second as the mark must not be
/// lost. Re-read rows cost nothing (they compare equal to the cache).
pub const BOOKING_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// What one bookings listing did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BookingCycle {
    pub listed: usize,
    pub events_emitted: usize,
    pub pages: u32,
    pub baseline: bool,
}

impl Poller {
    /// The `booking` block of a thread's events: cached, else read and cached. `None` (the
    /// events go without it) when Channex cannot say; a malformed booking is reported.
    pub(super) async fn booking_block(&mut self, booking_id: &str) -> Option<Booking> {
        if let Ok(Some(cached)) = self.bookings.get(booking_id).await {
            return Some(cached.booking);
        }
        match self.channex.get_booking(booking_id).await {
            Ok(record) => {
                let entry = CachedBooking::refreshed(None, &record);
                if let Err(e) = self.bookings.put(&entry).await {
                    tracing::warn!(booking = %booking_id, error = %e, "booking not cached");
                }
                Some(entry.booking)
            }
            Err(ChannexError::Decode(error)) => {
                let item = SkippedItem {
                    kind: ItemKind::Booking,
                    id: Some(booking_id.to_string()),
                    fingerprint: format!("get-{booking_id}"),
                    error,
                };
                self.report_malformed(&[item], None, None).await;
                None
            }
            Err(e) => {
                tracing::warn!(booking = %booking_id, error = %e, "booking not readable; events go without it");
                None
            }
        }
    }

    /// One changed-bookings listing: compare each booking updated since the mark (less
    /// [`BOOKING_LOOKBACK`]) with the cache, emit `booking.changed`, refresh the cache,
    /// move the mark.
    pub async fn poll_bookings(&mut self) -> Result<BookingCycle, PollerError> {
        let mark = self.bookings.mark().await?;
        let since = mark.map(|m| m.newest_updated_at - BOOKING_LOOKBACK);
        let query = self.booking_query(since);
        let mut cycle = BookingCycle {
            baseline: mark.is_none(),
            ..BookingCycle::default()
        };
        let mut newest = mark.map(|m| m.newest_updated_at);
        let mut page_no = 1;
        loop {
            let page = self.channex.list_bookings_page(&query, page_no).await?;
            cycle.pages += 1;
            self.report_malformed(&page.skipped, None, None).await;
            // Stopping at the first older row is safe only on a newest-first listing.
            let ordered = page.meta.order_by == "updated_at"
                && page.meta.order_direction.eq_ignore_ascii_case("desc");
            let n = page.items.len();
            let mut below_mark = false;
            for record in page.items {
                let updated = record.updated_at;
                if ordered && since.zip(updated).is_some_and(|(s, u)| u < s) {
                    below_mark = true;
                    break;
                }
                // Every row moves the mark (another property's too: read once, not again).
                newest = newest.max(updated);
                if !self.is_ours(&record) {
                    continue;
                }
                cycle.listed += 1;
                cycle.events_emitted += self.compare_booking(&record, since).await?;
            }
            let limit = u64::from(page.meta.limit.max(1));
            if below_mark || n == 0 || u64::from(page_no) * limit >= page.meta.total {
                break;
            }
            page_no += 1;
        }
        // An account without bookings still leaves its baseline: its first booking is new.
        let newest = newest.or_else(|| cycle.baseline.then(|| (self.clock)()));
        if let Some(n) = newest {
            self.bookings
                .put_mark(&BookingsMark {
                    newest_updated_at: n,
                })
                .await?;
        }
        tracing::info!(
            listed = cycle.listed,
            events = cycle.events_emitted,
            pages = cycle.pages,
            baseline = cycle.baseline,
            "bookings cycle"
        );
        Ok(cycle)
    }

    /// The listing's query: updated since `since`; with one configured property, that
    /// property's bookings only.
    fn booking_query(&self, since: Option<DateTime<Utc>>) -> BookingQuery {
        let property_id = match self.configured.len() {
            1 => self.configured.iter().next().cloned(),
            _ => None,
        };
        BookingQuery {
            updated_since: since,
            property_id,
            ..BookingQuery::default()
        }
    }

    /// A booking of a configured property (every property with `property_ids = []`).
    fn is_ours(&self, record: &BookingRecord) -> bool {
        self.configured.is_empty()
            || record
                .property_id
                .as_ref()
                .is_some_and(|p| self.configured.contains(p))
    }

    /// Compare one listed booking with the cache; publish its `booking.changed` (if any)
    /// before caching it. Returns the number of events published.
    /// `since`: the listing's lower bound (`None` on the baseline listing).
    async fn compare_booking(
        &mut self,
        record: &BookingRecord,
        since: Option<DateTime<Utc>>,
    ) -> Result<usize, PollerError> {
        let cached = self.bookings.get(&record.id).await?;
        let mut entry = CachedBooking::refreshed(cached.as_ref(), record);
        let after = entry.booking.stay();
        let seen = Seen {
            announced: cached.as_ref().and_then(|c| c.announced.clone()),
            first_seen: cached.map(|c| c.booking.stay()),
            inserted_at: record.inserted_at,
        };
        let mut emitted = 0;
        if let Some(before) = change_of(seen, &after, since) {
            let event = self.booking_event(
                record,
                &entry,
                before,
                now_or(record.updated_at, (self.clock)()),
            );
            self.publish(event).await?;
            emitted = 1;
        }
        entry.announced = Some(after);
        self.bookings.put(&entry).await?;
        Ok(emitted)
    }

    fn booking_event(
        &self,
        record: &BookingRecord,
        entry: &CachedBooking,
        before: Option<crate::events::BookingStay>,
        occurred_at: DateTime<Utc>,
    ) -> Event {
        Event {
            id: ids::booking_changed(&record.id, &record.revision()),
            event_type: EventType::BookingChanged,
            occurred_at,
            property: self.config.property_info(&entry.property_id),
            thread: None,
            message: None,
            inquiry: None,
            follow_up: None,
            schedule: None,
            booking: Some(entry.booking.clone()),
            booking_change: Some(BookingChange {
                before,
                after: entry.booking.stay(),
            }),
        }
    }
}

/// What the poller knows of a booking before comparing it.
struct Seen {
    /// The stay last announced (`booking.changed`) or first seen by a listing.
    announced: Option<BookingStay>,
    /// The stay cached by someone else (a thread event's `booking` block, a timer).
    first_seen: Option<BookingStay>,
    inserted_at: Option<DateTime<Utc>>,
}

/// Whether a listed booking is announced, and with what `before`: `Some(None)` a new
/// booking, `Some(Some(b))` a change from `b`, `None` nothing. A booking never announced
/// is new only when Channex created it within the listing's window (`since`): an old one
/// first listed now (read before for a thread, or a newly configured property) is not a
/// new booking (no months-late welcome); its first-seen stay is what it is compared with.
fn change_of(
    seen: Seen,
    after: &BookingStay,
    since: Option<DateTime<Utc>>,
) -> Option<Option<BookingStay>> {
    if let Some(b) = seen.announced {
        return (b != *after).then_some(Some(b));
    }
    let since = since?; // the baseline announces nothing
    if seen.inserted_at.is_none_or(|at| at >= since) {
        return Some(None);
    }
    seen.first_seen.filter(|b| b != after).map(Some)
}

fn now_or(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    at.unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stay(arrival: &str) -> BookingStay {
        BookingStay {
            arrival_date: arrival.into(),
            departure_date: "2030-01-09".into(),
            status: crate::events::BookingStatus::New,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    #[test]
    fn an_old_booking_first_listed_now_is_not_new_but_a_recent_one_is() {
        let since = Some(at("2030-01-01T10:00:00Z"));
        let after = stay("2030-01-05");
        let seen = |inserted: &str, first: Option<BookingStay>| Seen {
            announced: None,
            first_seen: first,
            inserted_at: Some(at(inserted)),
        };
        // Created within the window: new (a welcome may follow).
        assert_eq!(
            change_of(seen("2030-01-01T10:01:00Z", None), &after, since),
            Some(None)
        );
        // Created months ago (read first for a thread, or a newly configured property).
        assert_eq!(
            change_of(seen("2029-09-01T00:00:00Z", None), &after, since),
            None
        );
        let first = Some(stay("2030-01-03"));
        assert_eq!(
            change_of(seen("2029-09-01T00:00:00Z", first), &after, since),
            Some(Some(stay("2030-01-03")))
        );
        // The baseline announces nothing; an announced stay is compared as before.
        assert_eq!(
            change_of(seen("2030-01-01T10:01:00Z", None), &after, None),
            None
        );
        let announced = Seen {
            announced: Some(stay("2030-01-04")),
            first_seen: None,
            inserted_at: None,
        };
        assert_eq!(
            change_of(announced, &after, since),
            Some(Some(stay("2030-01-04")))
        );
    }
}
