//! The deadlines board (home page): unanswered Airbnb inquiries by `non_response_at`, and
//! guest messages of every channel waiting longer than `[console] reply_wait`.
//!
//! Source: the events stream (no poller change): the `inquiry.received` events of the last
//! [`INQUIRY_WINDOW`] and the `thread.new_message` events of the last [`MESSAGE_WINDOW`],
//! read with a time-based start, keeping the newest [`MAX_EVENTS`] events. A thread's newest
//! message event says whether it is answered (the poller emits property messages too:
//! ours and the staff's). Server-rendered: the first response holds every row; the
//! script only ticks the countdowns.
//!
//! Guest names, listings, titles and excerpts are rendered through [`layout::shown`]
//! (controls and bidi formatting neutralised, each field capped with a visible `…`: a
//! 200 KiB title shows as its first 200 characters).
//!
//! Must not: call Channex (the board must stay fast with 10,000 threads) or show more of a
//! guest's text than a short excerpt.

use std::collections::HashMap;

use axum::extract::State;
use axum::Extension;
use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};

use super::auth::Authed;
use super::layout::{self, Field, Nav};
use super::{Console, ConsoleError};
use crate::events::{provider_str, Event, EventType, Provider, Sender};
use crate::store::nats::{events_stream, read_stored, ReadFrom};

/// How far back inquiries are read (Airbnb's deadline is 24 h after the inquiry).
pub const INQUIRY_WINDOW: Duration = Duration::days(3);
/// How far back guest messages are read.
pub const MESSAGE_WINDOW: Duration = Duration::days(14);
/// At most this many events per read.
pub const MAX_EVENTS: usize = 200_000;
/// Inquiries whose deadline passed longer ago than this leave the board.
const OVERDUE_KEPT: Duration = Duration::hours(24);
/// Rows shown per table (the counts above the tables are complete).
pub const MAX_ROWS: usize = 200;
/// Under this the countdown is red.
pub const URGENT: Duration = Duration::hours(2);

#[derive(Debug, Clone, PartialEq)]
pub struct InquiryRow {
    pub thread_id: String,
    pub property: String,
    pub guest: String,
    pub listing: String,
    pub deadline: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WaitingRow {
    pub thread_id: String,
    pub property: String,
    pub title: String,
    pub provider: Provider,
    pub since: DateTime<Utc>,
    pub excerpt: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Board {
    pub inquiries: Vec<InquiryRow>,
    pub waiting: Vec<WaitingRow>,
}

/// What the message events say about one thread.
#[derive(Default)]
struct ThreadSeen<'a> {
    /// The newest message event (its snapshot says whether the thread is closed).
    newest: Option<&'a Event>,
    /// The newest guest message event.
    guest: Option<&'a Event>,
    /// When the property last wrote.
    property_at: Option<DateTime<Utc>>,
}

impl ThreadSeen<'_> {
    fn closed(&self) -> bool {
        self.newest.is_some_and(closed)
    }
}

fn closed(ev: &Event) -> bool {
    ev.thread.as_ref().is_some_and(|t| t.is_closed)
}

fn inserted_at(ev: &Event) -> Option<DateTime<Utc>> {
    ev.message.as_ref().map(|m| m.inserted_at)
}

/// Per thread: the newest message, the newest guest message and the last property reply.
fn per_thread(messages: &[Event]) -> HashMap<&str, ThreadSeen<'_>> {
    let mut threads: HashMap<&str, ThreadSeen<'_>> = HashMap::new();
    for ev in messages {
        let (Some(thread), Some(msg)) = (ev.thread_id(), ev.message.as_ref()) else {
            continue;
        };
        let seen = threads.entry(thread).or_default();
        let newer =
            |e: Option<&Event>| e.and_then(inserted_at).is_none_or(|t| msg.inserted_at >= t);
        if newer(seen.newest) {
            seen.newest = Some(ev);
        }
        match msg.sender {
            Sender::Guest if newer(seen.guest) => seen.guest = Some(ev),
            Sender::Property if seen.property_at.is_none_or(|t| msg.inserted_at > t) => {
                seen.property_at = Some(msg.inserted_at)
            }
            _ => {}
        }
    }
    threads
}

/// The inquiries not answered (no property message at or after them), not closed and not
/// long overdue; a re-announced inquiry counts once (the newest), soonest deadline first.
fn open_inquiries(
    inquiries: &[Event],
    threads: &HashMap<&str, ThreadSeen<'_>>,
    now: DateTime<Utc>,
) -> Vec<InquiryRow> {
    let mut rows: Vec<InquiryRow> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for ev in inquiries {
        let (Some(thread), Some(inquiry)) = (ev.thread_id(), ev.inquiry.as_ref()) else {
            continue;
        };
        let Some(deadline) = inquiry.non_response_at else {
            continue;
        };
        let seen = threads.get(thread);
        let answered = seen
            .and_then(|s| s.property_at)
            .is_some_and(|t| t >= ev.occurred_at);
        if answered
            || closed(ev)
            || seen.is_some_and(ThreadSeen::closed)
            || deadline < now - OVERDUE_KEPT
        {
            continue;
        }
        let row = InquiryRow {
            thread_id: thread.to_string(),
            property: property_label(ev),
            guest: inquiry.guest_name.clone().unwrap_or_default(),
            listing: inquiry.listing_name.clone().unwrap_or_default(),
            deadline,
        };
        match index.get(thread) {
            Some(&i) => rows[i] = row,
            None => {
                index.insert(thread, rows.len());
                rows.push(row);
            }
        }
    }
    rows.sort_by_key(|r| r.deadline);
    rows
}

/// Threads whose newest guest message is newer than the property's last reply and older
/// than `reply_wait` (threads with an open inquiry are on the other table), oldest first.
fn waiting(
    threads: &HashMap<&str, ThreadSeen<'_>>,
    inquiries: &[InquiryRow],
    now: DateTime<Utc>,
    reply_wait: Duration,
) -> Vec<WaitingRow> {
    let mut rows = Vec::new();
    for (thread, seen) in threads {
        let Some((ev, msg)) = seen.guest.and_then(|e| Some((e, e.message.as_ref()?))) else {
            continue;
        };
        let answered = seen.property_at.is_some_and(|t| t >= msg.inserted_at);
        if answered
            || seen.closed()
            || now - msg.inserted_at < reply_wait
            || inquiries.iter().any(|r| r.thread_id == *thread)
        {
            continue;
        }
        let snapshot = ev.thread.clone().unwrap_or_default();
        rows.push(WaitingRow {
            thread_id: thread.to_string(),
            property: property_label(ev),
            title: snapshot.title,
            provider: snapshot.provider,
            since: msg.inserted_at,
            excerpt: excerpt(&msg.text, 90),
        });
    }
    rows.sort_by_key(|r| r.since);
    rows
}

/// The board from the stored events (pure: `now` and `reply_wait` come in).
pub fn build_board(
    inquiries: &[Event],
    messages: &[Event],
    now: DateTime<Utc>,
    reply_wait: Duration,
) -> Board {
    let threads = per_thread(messages);
    let inquiries = open_inquiries(inquiries, &threads, now);
    let waiting = waiting(&threads, &inquiries, now, reply_wait);
    Board { inquiries, waiting }
}

fn property_label(ev: &Event) -> String {
    if ev.property.name.is_empty() {
        ev.property.id.clone()
    } else {
        ev.property.name.clone()
    }
}

/// The first `n` characters of `text` on one line (sanitised like every shown field), and
/// `…` when there was more.
pub fn excerpt(text: &str, n: usize) -> String {
    // Bounded before the split: a 200 KiB message costs no more than a short one.
    let head: String = text.chars().take(n.saturating_mul(4) + 1).collect();
    let one_line = head.split_whitespace().collect::<Vec<_>>().join(" ");
    let clean = crate::base::display::sanitize(
        &one_line,
        n.saturating_add(1),
        crate::base::display::Lines::Join,
    );
    if clean.chars().count() <= n && head.len() == text.len() {
        clean.into_owned()
    } else {
        let cut: String = clean.chars().take(n).collect();
        format!("{}…", cut.trim_end_matches('…'))
    }
}

/// The newest [`MAX_EVENTS`] events of `event_type` stored since `since`, oldest first.
/// Past the cap the oldest are dropped, never the newest: a thread's latest message is what
/// says whether it waits.
async fn recent_events(
    console: &Console,
    event_type: EventType,
    since: DateTime<Utc>,
) -> Result<Vec<Event>, ConsoleError> {
    let prefix = console.prefix();
    let mut out = std::collections::VecDeque::new();
    read_stored(
        &console.deps().infra.js,
        &events_stream(prefix),
        &format!("{prefix}.events.{}.>", event_type.as_str()),
        ReadFrom::Time(since),
        false,
        |msg| {
            if let Ok(ev) = serde_json::from_slice::<Event>(&msg.payload) {
                if out.len() == MAX_EVENTS {
                    out.pop_front();
                }
                out.push_back(ev);
            }
            true
        },
    )
    .await?;
    Ok(out.into())
}

pub async fn page(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
) -> Result<Markup, ConsoleError> {
    let now = console.now();
    let inquiries = recent_events(&console, EventType::InquiryReceived, now - INQUIRY_WINDOW);
    let messages = recent_events(&console, EventType::ThreadNewMessage, now - MESSAGE_WINDOW);
    let (inquiries, messages) = futures::try_join!(inquiries, messages)?;
    let reply_wait =
        Duration::from_std(console.deps().config.console.reply_wait).unwrap_or(Duration::hours(12));
    let board = build_board(&inquiries, &messages, now, reply_wait);
    Ok(layout::page(
        "Deadlines",
        Nav::Deadlines,
        Some(&authed.csrf),
        render(&board, now, reply_wait),
    ))
}

fn render(board: &Board, now: DateTime<Utc>, reply_wait: Duration) -> Markup {
    let urgent = board
        .inquiries
        .iter()
        .filter(|r| r.deadline - now < URGENT)
        .count();
    html! {
        h1 { "Deadlines" }
        p.lead { "What needs an answer first. Times are UTC; the countdowns tick in your browser." }
        div.stats {
            div.stat { div.value { (board.inquiries.len()) } div.label { "open Airbnb inquiries" } }
            div.stat { div.value { (urgent) } div.label { "due within 2 hours" } }
            div.stat { div.value { (board.waiting.len()) } div.label { "guests waiting over " (layout::human_duration(reply_wait)) } }
        }
        h2 { "Airbnb inquiries" }
        (inquiry_table(&board.inquiries, now))
        (more(board.inquiries.len()))
        h2 { "Guests waiting for a reply" }
        (waiting_table(&board.waiting, now))
        (more(board.waiting.len()))
    }
}

fn more(total: usize) -> Markup {
    html! {
        @if total > MAX_ROWS { p.muted { "…and " (total - MAX_ROWS) " more (the most urgent are shown)." } }
    }
}

fn inquiry_table(rows: &[InquiryRow], now: DateTime<Utc>) -> Markup {
    html! {
        div.table-wrap { table #inquiries {
            thead { tr { th { "Respond within" } th { "Deadline" } th { "Guest" } th.optional { "Listing" } th { "Property" } th { "Thread" } } }
            tbody {
                @if rows.is_empty() {
                    tr { td.empty colspan="6" { "No inquiry waiting for an answer." } }
                }
                @for r in rows.iter().take(MAX_ROWS) {
                    @let left = r.deadline - now;
                    tr.inquiry.urgent[left < URGENT].overdue[left < Duration::zero()] data-thread=(r.thread_id) {
                        td { span.countdown data-deadline=(r.deadline.to_rfc3339()) {
                            @if left >= Duration::zero() { (layout::human_duration(left)) " left" }
                            @else { "overdue by " (layout::human_duration(left)) }
                        } }
                        td { (layout::time(r.deadline)) }
                        td { (layout::shown(&r.guest, Field::Name)) }
                        td.optional { (layout::shown(&r.listing, Field::Name)) }
                        td { (layout::shown(&r.property, Field::Name)) }
                        td { (layout::thread_link(&r.thread_id)) }
                    }
                }
            }
        } }
    }
}

fn waiting_table(rows: &[WaitingRow], now: DateTime<Utc>) -> Markup {
    html! {
        div.table-wrap { table #waiting {
            thead { tr { th { "Waiting" } th { "Channel" } th { "Thread" } th { "Last guest message" } th { "Property" } } }
            tbody {
                @if rows.is_empty() {
                    tr { td.empty colspan="5" { "Every guest has an answer." } }
                }
                @for r in rows.iter().take(MAX_ROWS) {
                    tr.waiting data-thread=(r.thread_id) {
                        td { span.pill.warn { (layout::human_duration(now - r.since)) } }
                        td { (provider_label(&r.provider)) }
                        td { a href=(layout::thread_href(&r.thread_id)) {
                            @if r.title.is_empty() { span.mono { (r.thread_id) } } @else { (layout::shown(&r.title, Field::Title)) }
                        } }
                        td.message-text { (r.excerpt) }
                        td { (layout::shown(&r.property, Field::Name)) }
                    }
                }
            }
        } }
    }
}

pub fn provider_label(p: &Provider) -> &str {
    match p {
        Provider::BookingCom => "Booking.com",
        Provider::Airbnb => "Airbnb",
        other => provider_str(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{InquiryInfo, MessageInfo, PropertyInfo, ThreadSnapshot};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    fn message(thread: &str, sender: Sender, when: &str, text: &str) -> Event {
        Event {
            id: format!("m:{thread}:{when}"),
            event_type: EventType::ThreadNewMessage,
            occurred_at: at(when),
            property: PropertyInfo {
                id: "p1".into(),
                name: "Casa Azul".into(),
                ..Default::default()
            },
            thread: Some(ThreadSnapshot {
                id: thread.into(),
                title: format!("Stay {thread}"),
                provider: Provider::BookingCom,
                ..Default::default()
            }),
            message: Some(MessageInfo {
                id: format!("{thread}{when}"),
                text: text.into(),
                sender,
                attachments: vec![],
                inserted_at: at(when),
                language: None,
            }),
            inquiry: None,
            follow_up: None,
            schedule: None,
            booking: None,
            booking_change: None,
        }
    }

    fn inquiry(thread: &str, when: &str, deadline: &str) -> Event {
        let mut ev = message(thread, Sender::Guest, when, "hi");
        ev.event_type = EventType::InquiryReceived;
        ev.inquiry = Some(InquiryInfo {
            non_response_at: Some(at(deadline)),
            guest_name: Some("Ana".into()),
            ..Default::default()
        });
        ev
    }

    #[test]
    fn open_inquiries_are_sorted_by_deadline_and_answered_ones_leave() {
        let now = at("2026-12-01T10:00:00Z");
        let inquiries = [
            inquiry("late", "2026-12-01T09:00:00Z", "2026-12-02T09:00:00Z"),
            inquiry("soon", "2026-11-30T11:00:00Z", "2026-12-01T11:00:00Z"),
            inquiry("done", "2026-11-30T12:00:00Z", "2026-12-01T12:00:00Z"),
            inquiry("ancient", "2026-11-28T12:00:00Z", "2026-11-29T12:00:00Z"),
        ];
        let messages = [message(
            "done",
            Sender::Property,
            "2026-11-30T13:00:00Z",
            "yes",
        )];
        let board = build_board(&inquiries, &messages, now, Duration::hours(12));
        let ids: Vec<_> = board
            .inquiries
            .iter()
            .map(|r| r.thread_id.as_str())
            .collect();
        assert_eq!(ids, ["soon", "late"]);
        assert_eq!(board.inquiries[0].guest, "Ana");
    }

    #[test]
    fn guests_waiting_longer_than_reply_wait_are_listed_oldest_first() {
        let now = at("2026-12-01T12:00:00Z");
        let messages = [
            message(
                "a",
                Sender::Guest,
                "2026-11-30T20:00:00Z",
                "where is the key?",
            ),
            message("b", Sender::Guest, "2026-12-01T11:00:00Z", "recent"),
            message("c", Sender::Guest, "2026-11-30T10:00:00Z", "old question"),
            message("c", Sender::Property, "2026-11-30T11:00:00Z", "answered"),
            message(
                "d",
                Sender::Guest,
                "2026-11-29T10:00:00Z",
                "oldest <script>",
            ),
        ];
        let board = build_board(&[], &messages, now, Duration::hours(12));
        let ids: Vec<_> = board.waiting.iter().map(|r| r.thread_id.as_str()).collect();
        assert_eq!(ids, ["d", "a"]);
        assert_eq!(board.waiting[1].excerpt, "where is the key?");
    }

    /// Inquiry, host reply, guest writes again: the inquiry is answered (leaves the
    /// inquiries table) and the guest is waiting.
    #[test]
    fn an_answered_inquiry_leaves_and_a_guest_writing_again_waits() {
        let now = at("2026-12-01T12:00:00Z");
        let inquiries = [inquiry("t", "2026-11-30T08:00:00Z", "2026-12-01T20:00:00Z")];
        let messages = [
            message("t", Sender::Guest, "2026-11-30T08:00:00Z", "is it free?"),
            message("t", Sender::Property, "2026-11-30T09:00:00Z", "yes"),
            message(
                "t",
                Sender::Guest,
                "2026-11-30T10:00:00Z",
                "great, and parking?",
            ),
        ];
        let board = build_board(&inquiries, &messages, now, Duration::hours(12));
        assert!(board.inquiries.is_empty(), "answered by the host reply");
        let ids: Vec<_> = board.waiting.iter().map(|r| r.thread_id.as_str()).collect();
        assert_eq!(ids, ["t"]);
        assert_eq!(board.waiting[0].excerpt, "great, and parking?");
    }

    #[test]
    fn excerpts_are_short_and_on_one_line() {
        assert_eq!(excerpt("a\n  b", 10), "a b");
        assert_eq!(excerpt("abcdefghijkl", 5), "abcde…");
        assert_eq!(excerpt("abcde", 5), "abcde");
        assert_eq!(excerpt("a\u{202E}b\u{0}c", 5), "ab\u{FFFD}c");
        let long = excerpt(&"word ".repeat(50_000), 90);
        assert_eq!(long.chars().count(), 91);
        assert!(long.ends_with('…'));
    }
}
