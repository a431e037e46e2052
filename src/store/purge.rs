//! Purging one thread's personal data on request (`concierge purge --thread <id>`).
//!
//! Owns finding and deleting what the service stores about one thread: the ledger's
//! entries for its actions (rendered texts) with their own-message, sending and cooldown
//! marks, its follow-up timers (with their data), its audit records (subjects
//! `<prefix>.audit.<property>.<thread>`) and its events (subjects are per property, so
//! the events stream is read and the thread's events picked by their thread id); stored
//! messages are deleted one by one. The thread's bookings (named by its events and its
//! timers) go too: their cached copies (`booking.<id>` in `<prefix>_threads`: the guest's
//! name), their booking-keyed timers (armed with or without the thread) and their events
//! (`booking.changed`, threadless follow-ups). Its response-time record goes too (the
//! thread's message ids and times; its scores then count without it).
//!
//! It keeps the poller's thread snapshot: it holds ids, counts and times, no text or
//! names, and without it the poller would announce the thread as new and the rules would
//! answer its old messages again. It must not run while the thread is being worked on: an
//! event in flight can write a record or a timer after the purge (run it again then).

use crate::events::subject_token;
use crate::store::nats::{audit_stream, events_stream, read_stored, Infra, ReadFrom, StoreError};
use std::collections::HashSet;

use crate::store::bookings::booking_key;
use crate::store::responses::ResponseStore;
use crate::store::timers::FollowUps;

#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// Not a Channex id: subject tokens are lossy for other strings (`a.b` and `a_b`
    /// share one), and an empty id would match the records of no thread at all.
    #[error("`{0}` is not a Channex thread id (1-128 of A-Z a-z 0-9 _ -)")]
    InvalidThreadId(String),
    #[error("ledger: {0}")]
    Ledger(#[from] crate::store::ledger::LedgerError),
    #[error("follow-up timers: {0}")]
    Timers(#[from] StoreError),
    #[error("stream {stream}: {source}")]
    Stream {
        stream: String,
        #[source]
        source: crate::store::nats::NatsSource,
    },
}

/// What one purge removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub ledger_keys: usize,
    pub timers: usize,
    pub audit_records: usize,
    pub events: usize,
    /// Cached bookings of the thread removed.
    pub bookings: usize,
    /// Response-time records of the thread removed ([`crate::store::responses`]).
    pub responses: usize,
}

/// Delete one thread's data; `property_id` narrows the events scan to that property.
pub async fn purge_thread(
    infra: &Infra,
    prefix: &str,
    thread_id: &str,
    property_id: Option<&str>,
) -> Result<PurgeReport, PurgeError> {
    if !crate::channex::wire::is_valid_id(thread_id) {
        let shown: String = thread_id.escape_debug().take(40).collect();
        return Err(PurgeError::InvalidThreadId(shown));
    }
    let ledger =
        crate::store::ledger::Ledger::new(infra.ledger.clone(), "purge", std::time::Duration::ZERO);
    let ledger_keys = ledger.purge_thread(thread_id).await?;
    let followups = FollowUps::new(infra.followups.clone());
    let bookings = thread_bookings(infra, prefix, &followups, thread_id).await?;
    let timers = purge_timers(&followups, thread_id, &bookings).await?;
    let audit_records = purge_audit(infra, prefix, thread_id).await?;
    let events = purge_events(infra, prefix, thread_id, property_id, &bookings).await?;
    let bookings = purge_booking_cache(infra, &bookings).await?;
    let responses = ResponseStore::new(
        infra.js.clone(),
        infra.responses.clone(),
        &infra.names.responses_bucket(),
    )
    .purge_thread(thread_id, property_id)
    .await?;
    Ok(PurgeReport {
        ledger_keys,
        timers,
        audit_records,
        events,
        bookings,
        responses,
    })
}

/// The bookings of a thread: named by its timers and by its events' `booking` blocks.
async fn thread_bookings(
    infra: &Infra,
    prefix: &str,
    followups: &FollowUps,
    thread_id: &str,
) -> Result<HashSet<String>, PurgeError> {
    let mut bookings: HashSet<String> = followups
        .list()
        .await?
        .into_iter()
        .filter(|t| t.thread_id == thread_id)
        .filter_map(|t| t.booking_id)
        .collect();
    let name = events_stream(prefix);
    let filter = format!("{prefix}.events.>");
    read_stored(
        &infra.js,
        &name,
        &filter,
        ReadFrom::Beginning,
        false,
        |msg| {
            if let Ok(e) = serde_json::from_slice::<EventIds>(&msg.payload) {
                if e.thread.is_some_and(|t| t.id == thread_id) {
                    bookings.extend(e.booking.map(|b| b.id));
                }
            }
            true
        },
    )
    .await
    .map_err(|e| PurgeError::Stream {
        stream: name.clone(),
        source: e.source,
    })?;
    Ok(bookings)
}

async fn purge_timers(
    store: &FollowUps,
    thread_id: &str,
    bookings: &HashSet<String>,
) -> Result<usize, PurgeError> {
    let mut removed = 0;
    for timer in store.list().await? {
        // A thread's timers include its booking's (keyed `b.<booking>.<name>`), also those
        // armed without the thread (a `booking.changed`).
        let of_booking = timer
            .booking_id
            .as_ref()
            .is_some_and(|b| bookings.contains(b));
        if (timer.thread_id == thread_id || of_booking)
            && store.cancel_in(timer.scope(), &timer.name).await?
        {
            removed += 1;
        }
    }
    Ok(removed)
}

/// Purge (every revision of) the cached copies of `bookings`.
async fn purge_booking_cache(
    infra: &Infra,
    bookings: &HashSet<String>,
) -> Result<usize, PurgeError> {
    let mut removed = 0;
    for id in bookings {
        let key = booking_key(id);
        let op = |e| StoreError::nats(format!("booking cache {key}: purge"), e);
        let present = infra.threads.get(&key).await.map_err(op)?.is_some();
        let op = |e| StoreError::nats(format!("booking cache {key}: purge"), e);
        infra.threads.purge(&key).await.map_err(op)?;
        removed += usize::from(present);
    }
    Ok(removed)
}

async fn purge_audit(infra: &Infra, prefix: &str, thread_id: &str) -> Result<usize, PurgeError> {
    // One subject per thread (under each property); the record's own thread id decides,
    // as subject tokens of different ids may coincide.
    let filter = format!("{prefix}.audit.*.{}", subject_token(thread_id));
    delete_matching(infra, &audit_stream(prefix), &filter, |payload| {
        serde_json::from_slice::<RecordIds>(payload)
            .is_ok_and(|r| r.thread_id.as_deref() == Some(thread_id))
    })
    .await
}

async fn purge_events(
    infra: &Infra,
    prefix: &str,
    thread_id: &str,
    property_id: Option<&str>,
    bookings: &HashSet<String>,
) -> Result<usize, PurgeError> {
    // Event types have dots of their own (`thread.new_message`): match the property in
    // the payload rather than count subject tokens.
    let filter = format!("{prefix}.events.>");
    delete_matching(infra, &events_stream(prefix), &filter, |payload| {
        // Only the ids are looked at; an undecodable event cannot be attributed.
        serde_json::from_slice::<EventIds>(payload).is_ok_and(|e| {
            let of_booking = e.booking.is_some_and(|b| bookings.contains(&b.id));
            (of_booking || e.thread.is_some_and(|t| t.id == thread_id))
                && property_id.is_none_or(|p| e.property.id == p)
        })
    })
    .await
}

/// The ids of an audit record, read leniently: a record whose other fields this version
/// does not know (a newer action, outcome or reason) is still attributed and purged.
#[derive(serde::Deserialize)]
struct RecordIds {
    thread_id: Option<String>,
}

/// The ids of an event, read leniently (see [`RecordIds`]).
#[derive(serde::Deserialize)]
struct EventIds {
    thread: Option<IdOnly>,
    booking: Option<IdOnly>,
    property: IdOnly,
}

#[derive(serde::Deserialize)]
struct IdOnly {
    id: String,
}

/// Delete every stored message on `filter` whose payload `wanted` picks, one by one.
async fn delete_matching(
    infra: &Infra,
    name: &str,
    filter: &str,
    wanted: impl Fn(&[u8]) -> bool,
) -> Result<usize, PurgeError> {
    let err = |source: crate::store::nats::NatsSource| PurgeError::Stream {
        stream: name.to_string(),
        source,
    };
    let mut doomed = Vec::new();
    read_stored(&infra.js, name, filter, ReadFrom::Beginning, false, |msg| {
        if wanted(&msg.payload) {
            doomed.push(msg.seq);
        }
        true
    })
    .await
    .map_err(|e| err(e.source))?;
    let stream = infra.js.get_stream(name).await.map_err(|e| err(e.into()))?;
    for seq in &doomed {
        stream
            .delete_message(*seq)
            .await
            .map_err(|e| err(e.into()))?;
    }
    Ok(doomed.len())
}
