//! The poller's change detection, pure: given what the poller stored about a thread and
//! what Channex returned, which events to emit and what to store next.
//!
//! Owns: when a listed thread counts as changed, when its messages must be read (not when
//! its one new message is concierge's own reply as the ledger recorded it), which
//! messages are new (the snapshot remembers the newest message time and the ids at that
//! time, as timestamps can tie), the baseline record of a thread, the events of the new
//! messages (`thread.new_message`, plus `inquiry.received` once per inquiry message), the
//! guest's language as of each message ([`resolve_language`], remembered in the snapshot), and
//! where a listing across all configured properties may stop ([`classify_across`],
//! [`ScanMark`], with a [`SCAN_LOOKBACK`]) and which failed threads it retries.
//! Must not: do I/O, read a clock (the caller passes the backfill cutoff), or publish.

use chrono::{DateTime, Utc};

use crate::base::language::resolve_language;
use crate::channex::{Message, Sender, Thread};
use crate::events::{
    ids, Event, EventType, InquiryInfo, MessageInfo, PropertyInfo, ThreadSnapshot,
};
use std::collections::HashSet;

use crate::store::ledger::SentMessage;
use crate::store::threads::{PendingThread, ScanMark, ThreadState, ALL_KNOWN};

/// Whether a listed thread differs from its snapshot (no snapshot: new, so changed).
pub fn is_changed(state: Option<&ThreadState>, t: &Thread) -> bool {
    state.is_none_or(|s| {
        s.message_count != t.message_count
            || s.is_closed != t.is_closed
            || s.last_message_received_at != t.last_message_received_at
    })
}

/// What a listing across all configured properties does with one listed thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listed {
    /// A thread of a kept property that differs from its snapshot: process it.
    Changed,
    /// Unchanged, or of a property not kept (not configured, or not baselined yet).
    Skip,
    /// Everything from here on is known: stop listing.
    Stop,
}

/// Which properties a listing across all of them keeps.
#[derive(Debug, Clone, Copy)]
pub enum Keep<'a> {
    /// Scope `*` (`property_ids = []`): every thread.
    All,
    /// The configured, baselined properties.
    Only(&'a HashSet<String>),
}

/// How far below the previous complete listing's newest `updated_at` a listing still
/// reads before it stops. Channex's `updated_at` is stamped by its app servers: an update
/// committed late (or stamped by a server whose clock lags) can carry a time just below
/// the mark although the previous listing did not see it. The cost is the rows updated
/// within this window, usually part of page 1.
pub const SCAN_LOOKBACK: chrono::TimeDelta = chrono::TimeDelta::minutes(3);

/// The property a listed thread belongs to: the listing's `property_id`, else the one its
/// snapshot recorded (a row without one must not silently drop out of the listing).
pub fn listed_property<'a>(t: &'a Thread, state: Option<&'a ThreadState>) -> Option<&'a str> {
    t.property_id.as_deref().or_else(|| {
        state
            .map(|s| s.property_id.as_str())
            .filter(|p| !p.is_empty())
    })
}

/// One row of the `updated_at desc` listing across all properties. `complete_before` is
/// the previous complete listing's [`ScanMark`] (only when Channex honours the order and
/// the mark covers the same properties).
///
/// Why not simply stop at the first unchanged thread, as a one-property listing does:
/// a nudged poll of one property refreshes its snapshots between two listings, so a
/// thread of that property can be unchanged and newer than a change of another property
/// that this listing has not reached yet. A thread last updated before the previous
/// complete listing, though, cannot hide a change: any change after that listing moved
/// its thread's `updated_at` past the mark, give or take [`SCAN_LOOKBACK`].
pub fn classify_across(
    t: &Thread,
    state: Option<&ThreadState>,
    keep: Keep<'_>,
    complete_before: Option<DateTime<Utc>>,
) -> Listed {
    let kept = match keep {
        Keep::All => true,
        Keep::Only(set) => listed_property(t, state).is_some_and(|p| set.contains(p)),
    };
    let below = |mark: DateTime<Utc>| t.updated_at.is_some_and(|at| at < mark - SCAN_LOOKBACK);
    if kept && is_changed(state, t) {
        Listed::Changed
    } else if complete_before.is_some_and(below) {
        Listed::Stop
    } else {
        Listed::Skip
    }
}

/// How many cycles a thread that cannot be processed is retried on its own before it is
/// audited (`malformed_item`) and given up until it changes again.
pub const RETRY_ATTEMPTS: u32 = 5;

/// The mark a listing leaves, and the pending threads given up (after [`RETRY_ATTEMPTS`]).
///
/// `previous` is the mark this listing started from (same properties only); `newest_listed`
/// is the newest `updated_at` of a *complete* listing (every page read, in order), `None`
/// when the listing was cut short, which leaves the mark where it was. Threads that could
/// not be processed (`failed`: id and `updated_at`) do not hold the mark back (one broken
/// thread would make every listing a full one): they are kept in it, counted, and retried
/// on their own next cycle.
pub fn next_scan_mark(
    properties: String,
    previous: Option<&ScanMark>,
    newest_listed: Option<DateTime<Utc>>,
    failed: &[(String, Option<DateTime<Utc>>)],
) -> (Option<ScanMark>, Vec<PendingThread>) {
    let complete_before = match (previous.map(|m| m.complete_before), newest_listed) {
        (Some(old), Some(new)) => old.max(new),
        (old, new) => match old.or(new) {
            Some(at) => at,
            None => return (None, Vec::new()),
        },
    };
    let attempts_before = |id: &str| {
        previous
            .and_then(|m| m.pending.iter().find(|p| p.id == id))
            .map_or(0, |p| p.attempts)
    };
    let (pending, given_up) = failed
        .iter()
        .map(|(id, at)| PendingThread {
            id: id.clone(),
            updated_at: *at,
            attempts: attempts_before(id) + 1,
        })
        .partition(|p| p.attempts < RETRY_ATTEMPTS);
    let mark = ScanMark {
        properties,
        complete_before,
        pending,
    };
    (Some(mark), given_up)
}

/// A stable fingerprint of a set of property ids (FNV-1a over the sorted ids), so a
/// [`ScanMark`] is only trusted for the properties its listing covered.
pub fn properties_fingerprint(properties: &HashSet<String>) -> String {
    let mut sorted: Vec<&String> = properties.iter().collect();
    sorted.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for p in sorted {
        for b in p.bytes().chain([0u8]) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{}:{hash:016x}", properties.len())
}

/// Whether its messages must be read (a close alone changes nothing in them).
pub fn needs_messages(previous: Option<&ThreadState>, t: &Thread) -> bool {
    previous.is_none_or(|p| {
        p.message_count != t.message_count
            || p.last_message_received_at != t.last_message_received_at
    })
}

/// Whether the listing row says the thread grew by exactly one message, a property one,
/// since its snapshot: it may be concierge's own last reply (see [`own_reply_alone`]).
pub fn may_be_own_reply(previous: &ThreadState, t: &Thread) -> bool {
    previous.message_count.checked_add(1) == Some(t.message_count)
        && t.last_message
            .as_ref()
            .is_some_and(|m| m.sender == Sender::Property && m.inserted_at.is_some())
}

/// The thread's one new message when it is `sent`, concierge's last reply to it as the
/// ledger recorded it (Channex's answer to the POST): the listing row grew by exactly one
/// message, its `last_message` is that reply (time, text, attachments), and the reply is not
/// known yet. Built as a read of the messages would have returned it, so its event is the
/// same; `None` (read the messages) on any mismatch.
pub fn own_reply_alone(previous: &ThreadState, t: &Thread, sent: &SentMessage) -> Option<Message> {
    let last = t.last_message.as_ref()?;
    let matches = may_be_own_reply(previous, t)
        && last.inserted_at == Some(sent.inserted_at)
        && last.text == sent.text
        && last.attachments == sent.attachments;
    let message = Message {
        id: sent.id.clone(),
        text: sent.text.clone(),
        sender: Sender::Property,
        attachments: sent.attachments.clone(),
        inserted_at: sent.inserted_at,
        updated_at: None,
        thread_id: Some(t.id.clone()),
        user_id: None,
        meta: None,
    };
    (matches && !knows(previous, &message)).then_some(message)
}

/// Whether `m` was already emitted (or recorded by a baseline).
pub fn knows(state: &ThreadState, m: &Message) -> bool {
    match state.newest_message_at {
        None => false,
        Some(at) => {
            m.inserted_at < at
                || (m.inserted_at == at
                    && state
                        .newest_message_ids
                        .iter()
                        .any(|id| *id == m.id || id == ALL_KNOWN))
        }
    }
}

/// A baseline only needs the messages it will emit (backfill): a thread new to a baseline
/// poll whose last message is not after the backfill cutoff (or with no backfill at all)
/// is recorded from its listing row alone.
pub fn is_listing_baseline(
    baseline: bool,
    previous: Option<&ThreadState>,
    t: &Thread,
    backfill_cutoff: Option<DateTime<Utc>>,
) -> bool {
    baseline
        && previous.is_none()
        && backfill_cutoff
            .is_none_or(|cutoff| t.last_message_received_at.is_none_or(|at| at <= cutoff))
}

/// Remember a thread from its listing row alone: everything up to its last message is
/// known history.
pub fn baseline_state(t: &Thread, mut state: ThreadState) -> ThreadState {
    state.message_count = t.message_count;
    state.is_closed = t.is_closed;
    state.last_message_received_at = t.last_message_received_at;
    state.newest_message_at = t.last_message_received_at;
    state.newest_message_ids = vec![ALL_KNOWN.to_string()];
    if let Some(last) = &t.last_message {
        let at = last.inserted_at.or(t.last_message_received_at);
        match last.sender {
            Sender::Guest => {
                state.last_guest_message_at = at;
                // The listing shows the last message only: the wait started no later.
                state.awaiting_reply_since = at;
            }
            Sender::Property => state.last_property_message_at = at,
            _ => {}
        }
    }
    state
}

/// Builds the event's thread block from the listing row and the poller's knowledge.
pub fn snapshot_of(t: &Thread, state: &ThreadState) -> ThreadSnapshot {
    ThreadSnapshot {
        id: t.id.clone(),
        title: t.title.clone(),
        provider: crate::events::event_provider(&t.provider),
        is_closed: t.is_closed,
        message_count: t.message_count,
        booking_id: t.booking_id.clone(),
        channel_id: t.channel_id.clone(),
        last_message_received_at: t.last_message_received_at,
        last_guest_message_at: state.last_guest_message_at,
        last_property_message_at: state.last_property_message_at,
        awaiting_reply: ThreadSnapshot::compute_awaiting_reply(
            state.last_guest_message_at,
            state.last_property_message_at,
        ),
        awaiting_reply_since: awaiting_since(state),
        language: state.language.clone(),
    }
}

/// The start of the wait while a guest waits: the stored one, else (a snapshot from
/// before it was kept) the newest guest message.
fn awaiting_since(state: &ThreadState) -> Option<DateTime<Utc>> {
    if !ThreadSnapshot::compute_awaiting_reply(
        state.last_guest_message_at,
        state.last_property_message_at,
    ) {
        return None;
    }
    let answered_before = |at: &DateTime<Utc>| {
        state
            .last_property_message_at
            .is_none_or(|property| *at > property)
    };
    state
        .awaiting_reply_since
        .filter(answered_before)
        .or(state.last_guest_message_at)
}

/// Moves the last guest / property message times forward to the newest of `messages`, and
/// the start of the guest's wait ([`ThreadState::awaiting_reply_since`]) with them.
pub fn fold_senders(state: &mut ThreadState, messages: &[Message]) {
    fold_last_times(state, messages);
    let answered_at = state.last_property_message_at;
    let unanswered = |at: &DateTime<Utc>| answered_at.is_none_or(|p| *at > p);
    let earlier_wait = state.awaiting_reply_since.filter(unanswered);
    let oldest_new = messages
        .iter()
        .filter(|m| m.sender == Sender::Guest && unanswered(&m.inserted_at))
        .map(|m| m.inserted_at)
        .min();
    state.awaiting_reply_since = match (earlier_wait, oldest_new) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
}

fn fold_last_times(state: &mut ThreadState, messages: &[Message]) {
    for m in messages {
        let slot = match m.sender {
            Sender::Guest => &mut state.last_guest_message_at,
            Sender::Property => &mut state.last_property_message_at,
            _ => continue,
        };
        if slot.is_none_or(|at| m.inserted_at > at) {
            *slot = Some(m.inserted_at);
        }
    }
}

pub fn inquiry_info(m: &Message) -> Option<InquiryInfo> {
    let d = m.booking_details()?;
    Some(InquiryInfo {
        status: m
            .meta
            .as_ref()
            .and_then(|meta| meta.status.clone())
            .unwrap_or_default(),
        non_response_at: d.non_response_at,
        checkin_date: d.checkin_date.clone(),
        checkout_date: d.checkout_date.clone(),
        nights: d.nights,
        number_of_guests: d.number_of_guests,
        guest_name: d.guest_name.clone(),
        listing_name: d.listing_name.clone(),
        expected_payout_amount_accurate: d.expected_payout_amount_accurate.clone(),
        currency: d.currency.clone(),
    })
}

/// What Channex said about one changed thread, with the poller's context.
pub struct Observed<'a> {
    pub thread: &'a Thread,
    /// The stored snapshot, if the thread was seen before.
    pub previous: Option<&'a ThreadState>,
    /// The thread's property (from the listing, else the polled scope).
    pub property_id: String,
    /// The event property block of that property.
    pub property: PropertyInfo,
    /// The messages not yet known, in any order.
    pub fresh: Vec<Message>,
    /// The language of the thread's booking, when Channex gives one: it wins over detection.
    pub booking_language: Option<&'a str>,
    /// Messages inserted at or before this are recorded but not emitted (`None`: emit
    /// nothing; a baseline poll emits only the backfill window).
    pub emit_after: Option<DateTime<Utc>>,
}

/// The events to publish (in order) and the snapshot to store once they are acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct Detected {
    pub events: Vec<Event>,
    pub state: ThreadState,
}

/// The change detection of one thread.
pub fn detect(o: Observed<'_>) -> Detected {
    let mut state = o.previous.cloned().unwrap_or_default();
    state.property_id = o.property_id.clone();
    let mut fresh = o.fresh;
    fresh.sort_by(|a, b| {
        a.inserted_at
            .cmp(&b.inserted_at)
            .then_with(|| a.id.cmp(&b.id))
    });
    advance_state(&mut state, o.thread, &fresh);
    let mut snapshot = snapshot_of(o.thread, &state);
    let mut events = Vec::new();
    for m in &fresh {
        // The thread's language as of this message: the booking's when known, else detected.
        let message_language = (m.sender == Sender::Guest).then(|| {
            state.language =
                resolve_language(o.booking_language, &m.text, state.language.as_deref());
            state.language.clone()
        });
        snapshot.language.clone_from(&state.language);
        let inquiry = (o.thread.booking_id.is_none() && m.is_inquiry())
            .then(|| inquiry_info(m))
            .flatten();
        if inquiry.is_some() && state.inquiry_message_id.is_none() {
            state.inquiry_message_id = Some(m.id.clone());
        }
        if o.emit_after.is_none_or(|after| m.inserted_at <= after) {
            continue;
        }
        let announced = o.previous.and_then(|p| p.inquiry_message_id.as_deref()) == Some(&m.id);
        events.extend(message_events(
            m,
            inquiry,
            announced,
            message_language.flatten(),
            &o.property,
            &snapshot,
        ));
    }
    Detected { events, state }
}

/// The snapshot after reading `fresh` (sorted oldest first) for the listed thread `t`.
fn advance_state(state: &mut ThreadState, t: &Thread, fresh: &[Message]) {
    fold_senders(state, fresh);
    state.message_count = t.message_count;
    state.is_closed = t.is_closed;
    state.last_message_received_at = t.last_message_received_at;
    if let Some(newest) = fresh.last() {
        let at = newest.inserted_at;
        if state.newest_message_at != Some(at) {
            state.newest_message_ids.clear();
        }
        state.newest_message_at = Some(at);
        for m in fresh.iter().filter(|m| m.inserted_at == at) {
            if !state.newest_message_ids.contains(&m.id) {
                state.newest_message_ids.push(m.id.clone());
            }
        }
    }
}

/// `thread.new_message` for `m`, followed by `inquiry.received` when it is an inquiry not
/// announced before.
fn message_events(
    m: &Message,
    inquiry: Option<InquiryInfo>,
    already_announced: bool,
    language: Option<String>,
    property: &PropertyInfo,
    snapshot: &ThreadSnapshot,
) -> Vec<Event> {
    let t = snapshot;
    let message_info = MessageInfo {
        id: m.id.clone(),
        text: m.text.clone(),
        sender: m.sender.clone(),
        attachments: m.attachments.clone(),
        inserted_at: m.inserted_at,
        language,
    };
    let mut events = vec![Event {
        id: ids::new_message(&t.id, &m.id),
        event_type: EventType::ThreadNewMessage,
        occurred_at: m.inserted_at,
        property: property.clone(),
        thread: Some(snapshot.clone()),
        message: Some(message_info.clone()),
        inquiry: inquiry.clone(),
        follow_up: None,
        schedule: None,
        booking: None,
        booking_change: None,
    }];
    if let Some(inquiry) = inquiry.filter(|_| !already_announced) {
        events.push(Event {
            id: ids::inquiry(&t.id, &m.id),
            event_type: EventType::InquiryReceived,
            occurred_at: m.inserted_at,
            property: property.clone(),
            thread: Some(snapshot.clone()),
            message: Some(message_info),
            inquiry: Some(inquiry),
            follow_up: None,
            schedule: None,
            booking: None,
            booking_change: None,
        });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channex::{BookingDetails, MessageMeta, Provider};
    use crate::events::EventType;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    fn thread(count: u64, last: &str) -> Thread {
        Thread {
            id: "t1".into(),
            title: "Guest".into(),
            is_closed: false,
            provider: Provider::Airbnb,
            message_count: count,
            last_message: None,
            last_message_received_at: Some(at(last)),
            inserted_at: None,
            updated_at: None,
            booking_id: Some("b1".into()),
            channel_id: None,
            property_id: Some("p1".into()),
        }
    }

    fn message(id: &str, inserted: &str, sender: Sender) -> Message {
        Message {
            id: id.into(),
            text: format!("text {id}"),
            sender,
            attachments: vec![],
            inserted_at: at(inserted),
            updated_at: None,
            thread_id: Some("t1".into()),
            user_id: None,
            meta: None,
        }
    }

    fn inquiry_message(id: &str, inserted: &str) -> Message {
        Message {
            text: "inquiry".into(),
            meta: Some(MessageMeta {
                booking_details: Some(BookingDetails {
                    guest_name: Some("Ann".into()),
                    ..BookingDetails::default()
                }),
                ..MessageMeta::default()
            }),
            ..message(id, inserted, Sender::System)
        }
    }

    fn observe<'a>(
        t: &'a Thread,
        previous: Option<&'a ThreadState>,
        fresh: Vec<Message>,
        emit_after: Option<DateTime<Utc>>,
    ) -> Detected {
        detect(Observed {
            thread: t,
            previous,
            property_id: "p1".into(),
            property: PropertyInfo {
                id: "p1".into(),
                ..PropertyInfo::default()
            },
            fresh,
            booking_language: None,
            emit_after,
        })
    }

    const ALL: Option<DateTime<Utc>> = Some(DateTime::<Utc>::MIN_UTC);

    #[test]
    fn new_messages_become_events_oldest_first_and_the_snapshot_remembers_the_newest() {
        let t = thread(3, "2026-05-01T10:02:00Z");
        let fresh = vec![
            message("m3", "2026-05-01T10:02:00Z", Sender::Property),
            message("m2", "2026-05-01T10:02:00Z", Sender::Guest),
            message("m1", "2026-05-01T10:00:00Z", Sender::Guest),
        ];
        let d = observe(&t, None, fresh, ALL);
        let ids: Vec<_> = d.events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "thread.new_message:t1:m1",
                "thread.new_message:t1:m2",
                "thread.new_message:t1:m3"
            ]
        );
        assert_eq!(d.state.newest_message_at, Some(at("2026-05-01T10:02:00Z")));
        assert_eq!(d.state.newest_message_ids, ["m2", "m3"]);
        assert_eq!(d.state.message_count, 3);
        assert_eq!(d.state.property_id, "p1");
        let snapshot = d.events[0].thread.clone().expect("thread block");
        assert!(!snapshot.awaiting_reply, "staff answered in the same cycle");
        // What the snapshot now knows is not new any more, a tie at the newest time included.
        assert!(knows(
            &d.state,
            &message("m2", "2026-05-01T10:02:00Z", Sender::Guest)
        ));
        assert!(!knows(
            &d.state,
            &message("m4", "2026-05-01T10:02:00Z", Sender::Guest)
        ));
        assert!(!is_changed(Some(&d.state), &t));
        assert!(is_changed(
            Some(&d.state),
            &thread(4, "2026-05-01T10:03:00Z")
        ));
    }

    #[test]
    fn the_booking_language_wins_over_the_detected_one() {
        let t = thread(1, "2026-05-01T10:00:00Z");
        let german = Message {
            text: "Hallo! Wie lautet das WLAN-Passwort für die Wohnung?".into(),
            ..message("m1", "2026-05-01T10:00:00Z", Sender::Guest)
        };
        let d = detect(Observed {
            thread: &t,
            previous: None,
            property_id: "p1".into(),
            property: PropertyInfo::default(),
            fresh: vec![german],
            booking_language: Some("pt"),
            emit_after: ALL,
        });
        let event = d.events.first().expect("one event");
        let message = event.message.as_ref().expect("message");
        assert_eq!(message.language.as_deref(), Some("pt"));
        assert_eq!(d.state.language.as_deref(), Some("pt"));
    }

    #[test]
    fn the_guest_language_is_detected_and_short_texts_keep_it() {
        let t = thread(3, "2026-05-01T10:02:00Z");
        let said = |id: &str, at: &str, sender: Sender, text: &str| Message {
            text: text.into(),
            ..message(id, at, sender)
        };
        let fresh = vec![
            said(
                "m1",
                "2026-05-01T10:00:00Z",
                Sender::Guest,
                "Hallo! Wie lautet das WLAN-Passwort für die Wohnung?",
            ),
            said(
                "m2",
                "2026-05-01T10:01:00Z",
                Sender::Property,
                "Sure, here it is: casa1234",
            ),
            said("m3", "2026-05-01T10:02:00Z", Sender::Guest, "ok"),
        ];
        let d = observe(&t, None, fresh, ALL);
        let langs: Vec<_> = d
            .events
            .iter()
            .map(|e| {
                let m = e.message.as_ref().expect("message");
                (
                    e.thread.as_ref().and_then(|t| t.language.as_deref()),
                    m.language.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            langs,
            [
                (Some("de"), Some("de")),
                (Some("de"), None),
                (Some("de"), Some("de"))
            ]
        );
        assert_eq!(d.state.language.as_deref(), Some("de"));
        // The next cycle starts from the stored language.
        let later = thread(4, "2026-05-01T10:03:00Z");
        let d2 = observe(
            &later,
            Some(&d.state),
            vec![said("m4", "2026-05-01T10:03:00Z", Sender::Guest, "Danke!")],
            ALL,
        );
        assert_eq!(
            d2.events[0]
                .thread
                .as_ref()
                .and_then(|t| t.language.as_deref()),
            Some("de")
        );
    }

    #[test]
    fn a_baseline_records_without_emitting_unless_inside_the_backfill_window() {
        let t = thread(2, "2026-05-01T10:05:00Z");
        let fresh = || {
            vec![
                message("m1", "2026-05-01T09:00:00Z", Sender::Guest),
                message("m2", "2026-05-01T10:05:00Z", Sender::Guest),
            ]
        };
        let silent = observe(&t, None, fresh(), None);
        assert!(silent.events.is_empty());
        assert_eq!(silent.state.newest_message_ids, ["m2"]);
        let backfill = observe(&t, None, fresh(), Some(at("2026-05-01T10:00:00Z")));
        assert_eq!(backfill.events.len(), 1);
        assert_eq!(backfill.events[0].id, "thread.new_message:t1:m2");

        let cutoff = Some(at("2026-05-01T11:00:00Z"));
        assert!(is_listing_baseline(true, None, &t, cutoff));
        assert!(is_listing_baseline(true, None, &t, None));
        assert!(!is_listing_baseline(
            true,
            None,
            &t,
            Some(at("2026-05-01T10:00:00Z"))
        ));
        assert!(!is_listing_baseline(false, None, &t, None));
        let state = baseline_state(&t, ThreadState::default());
        assert_eq!(state.newest_message_ids, [ALL_KNOWN]);
        assert!(knows(
            &state,
            &message("mx", "2026-05-01T10:05:00Z", Sender::Guest)
        ));
        assert!(!needs_messages(Some(&state), &t));
    }

    #[test]
    fn an_inquiry_is_announced_once() {
        let mut t = thread(1, "2026-05-01T10:00:00Z");
        t.booking_id = None;
        let m = || vec![inquiry_message("q1", "2026-05-01T10:00:00Z")];
        let first = observe(&t, None, m(), ALL);
        let types: Vec<_> = first.events.iter().map(|e| e.event_type).collect();
        assert_eq!(
            types,
            [EventType::ThreadNewMessage, EventType::InquiryReceived]
        );
        assert_eq!(first.state.inquiry_message_id.as_deref(), Some("q1"));
        let again = observe(&t, Some(&first.state), m(), ALL);
        let types: Vec<_> = again.events.iter().map(|e| e.event_type).collect();
        assert_eq!(types, [EventType::ThreadNewMessage]);
    }

    #[test]
    fn a_listing_across_properties_stops_only_below_the_previous_complete_listing() {
        let set: HashSet<String> = ["p1".to_string()].into();
        let keep = Keep::Only(&set);
        let mut t = thread(2, "2026-05-01T10:00:00Z");
        t.updated_at = Some(at("2026-05-01T10:00:00Z"));
        let known = detect(Observed {
            thread: &t,
            previous: None,
            property_id: "p1".into(),
            property: PropertyInfo::default(),
            fresh: vec![],
            booking_language: None,
            emit_after: None,
        })
        .state;
        let lookback = |mark: DateTime<Utc>| Some(mark + SCAN_LOOKBACK);
        // Past the lookback below the mark: stop.
        let before = lookback(at("2026-05-01T10:00:01Z"));
        // Below the mark but within the lookback (a late-stamped update): go on.
        let within = Some(at("2026-05-01T10:00:01Z"));
        let after = Some(at("2026-05-01T09:59:59Z"));
        // Unchanged, but newer than the mark (e.g. refreshed by a nudged poll): go on.
        assert_eq!(classify_across(&t, Some(&known), keep, after), Listed::Skip);
        assert_eq!(
            classify_across(&t, Some(&known), keep, within),
            Listed::Skip
        );
        assert_eq!(classify_across(&t, Some(&known), keep, None), Listed::Skip);
        assert_eq!(
            classify_across(&t, Some(&known), keep, before),
            Listed::Stop
        );
        // Changed threads of kept properties are processed even below the mark.
        assert_eq!(classify_across(&t, None, keep, before), Listed::Changed);
        assert_eq!(
            classify_across(&t, None, Keep::All, before),
            Listed::Changed
        );
        // Other properties are never processed, but they do end the listing below the mark.
        let mut other = t.clone();
        other.property_id = Some("p9".into());
        assert_eq!(classify_across(&other, None, keep, after), Listed::Skip);
        assert_eq!(classify_across(&other, None, keep, before), Listed::Stop);
        assert_eq!(
            classify_across(&other, None, Keep::All, after),
            Listed::Changed
        );
        // A row without property_id falls back to its snapshot's property.
        other.property_id = None;
        assert_eq!(classify_across(&other, None, keep, after), Listed::Skip);
        let mut changed_state = known.clone();
        changed_state.message_count = 1;
        assert_eq!(
            classify_across(&other, Some(&changed_state), keep, after),
            Listed::Changed
        );
        assert_eq!(listed_property(&other, Some(&known)), Some("p1"));
        assert_eq!(listed_property(&other, None), None);
    }

    #[test]
    fn failed_threads_do_not_hold_the_mark_back_and_are_given_up_after_the_attempts() {
        let newest_at = at("2026-05-01T10:00:00Z");
        let newest = Some(newest_at);
        let stamp = Some(at("2026-05-01T09:00:00Z"));
        let failed = vec![("t9".to_string(), stamp)];
        let (first, gone) = next_scan_mark("fp".into(), None, newest, &failed);
        let first = first.expect("a mark");
        assert!(gone.is_empty());
        assert_eq!(first.complete_before, newest_at);
        assert_eq!(first.pending[0].attempts, 1);
        let mut mark = first;
        for attempt in 2..RETRY_ATTEMPTS {
            let (next, gone) = next_scan_mark("fp".into(), Some(&mark), None, &failed);
            mark = next.expect("the mark stays");
            assert!(gone.is_empty());
            assert_eq!(mark.pending[0].attempts, attempt);
            assert_eq!(mark.complete_before, newest_at, "an incomplete listing");
        }
        let (last, gone) = next_scan_mark("fp".into(), Some(&mark), None, &failed);
        assert!(last.expect("mark").pending.is_empty());
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].attempts, RETRY_ATTEMPTS);
        // Succeeding clears the pending entry; a newer listing moves the mark.
        let later_at = at("2026-05-01T11:00:00Z");
        let later = Some(later_at);
        let (cleared, _) = next_scan_mark("fp".into(), Some(&mark), later, &[]);
        let cleared = cleared.expect("mark");
        assert!(cleared.pending.is_empty());
        assert_eq!(cleared.complete_before, later_at);
        assert_eq!(next_scan_mark("fp".into(), None, None, &[]).0, None);
    }

    #[test]
    fn the_properties_fingerprint_ignores_order_and_tells_sets_apart() {
        let set = |ids: &[&str]| -> HashSet<String> { ids.iter().map(|s| s.to_string()).collect() };
        let a = properties_fingerprint(&set(&["p1", "p2"]));
        assert_eq!(a, properties_fingerprint(&set(&["p2", "p1"])));
        assert_ne!(a, properties_fingerprint(&set(&["p1"])));
        assert_ne!(a, properties_fingerprint(&set(&["p1p2"])));
        assert_ne!(
            properties_fingerprint(&set(&["ab", "c"])),
            properties_fingerprint(&set(&["a", "bc"]))
        );
    }

    /// A thread known up to one guest message, listed again with one more message: ours.
    fn grown_by_our_reply() -> (ThreadState, Thread, SentMessage) {
        let previous = ThreadState {
            message_count: 1,
            newest_message_at: Some(at("2024-07-01T10:00:00Z")),
            newest_message_ids: vec!["g1".into()],
            ..ThreadState::default()
        };
        let sent = SentMessage {
            id: "r1".into(),
            text: "Wifi: CasaAzul".into(),
            inserted_at: at("2024-07-01T10:00:05Z"),
            attachments: vec![],
        };
        let mut t = thread(2, "2024-07-01T10:00:05Z");
        t.last_message = Some(crate::channex::LastMessage {
            text: sent.text.clone(),
            sender: Sender::Property,
            inserted_at: Some(sent.inserted_at),
            attachments: vec![],
        });
        (previous, t, sent)
    }

    #[test]
    fn our_reply_as_the_one_new_message_is_built_from_its_record() {
        let (previous, t, sent) = grown_by_our_reply();
        assert!(may_be_own_reply(&previous, &t));
        let m = own_reply_alone(&previous, &t, &sent).expect("our reply");
        assert_eq!(m.id, "r1");
        assert_eq!(m.sender, Sender::Property);
        assert_eq!(m.text, sent.text);
        assert_eq!(m.inserted_at, sent.inserted_at);
    }

    #[test]
    fn anything_but_exactly_our_reply_means_reading_the_messages() {
        let (previous, t, sent) = grown_by_our_reply();
        // Two new messages.
        let mut two = t.clone();
        two.message_count = 3;
        assert!(own_reply_alone(&previous, &two, &sent).is_none());
        // The last message is someone else's (other text, time, or sender).
        let mut other_text = t.clone();
        if let Some(l) = other_text.last_message.as_mut() {
            l.text = "staff wrote this".into();
        }
        assert!(own_reply_alone(&previous, &other_text, &sent).is_none());
        let older = SentMessage {
            inserted_at: at("2024-07-01T09:00:00Z"),
            ..sent.clone()
        };
        assert!(own_reply_alone(&previous, &t, &older).is_none());
        let mut guest = t.clone();
        if let Some(l) = guest.last_message.as_mut() {
            l.sender = Sender::Guest;
        }
        assert!(!may_be_own_reply(&previous, &guest));
        assert!(own_reply_alone(&previous, &guest, &sent).is_none());
        // Already known (emitted by an earlier read).
        let known = ThreadState {
            newest_message_at: Some(sent.inserted_at),
            newest_message_ids: vec![sent.id.clone()],
            ..previous.clone()
        };
        assert!(own_reply_alone(&known, &t, &sent).is_none());
    }
}
