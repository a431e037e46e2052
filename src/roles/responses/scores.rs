//! The response-time arithmetic, pure: what a thread's record says about each guest
//! message (who answered it first, and when), and the OTAs' scores over those answers.
//!
//! Owns: [`responses`] (a [`ThreadRecord`] in, one [`Response`] per guest message and
//! Airbnb inquiry out), the [`Answerer`] of a message, the two scores as the OTAs define
//! them ([`airbnb_response_rate`], [`booking_reply_score`], with a projection that counts
//! the messages still open as missed), the daily response-time percentiles and the
//! answered-by counts, and the messages at risk now.
//! Must not: do I/O or read a clock (every function takes `now`), nor know where records
//! come from.
//!
//! The definitions (quoted with their sources in the README, "Response times and scores"):
//! - **Airbnb response rate**: the share of new inquiries and reservation requests
//!   answered within 24 hours over the past 30 days; with fewer than 10 of them, the 10
//!   most recent of the past 90 days. Follow-up messages do not count. Concierge counts a
//!   thread's Airbnb inquiry ([`Kind::Inquiry`]) and the first guest message of a thread
//!   it saw from its first message ([`Kind::Opening`]): it cannot tell a reservation
//!   request from an instant booking's first message, so it counts both (the stricter
//!   reading).
//! - **Booking.com Reply Score**: the share of guest messages replied to within 24 hours
//!   over the past 30 days (with fewer than 10 messages in 30 days, the 10 most recent),
//!   shown once there are 10; messages marked "no reply needed" within 24 hours are left
//!   out.
//!
//! A message is *decided* at `now` when it was answered by then, or its 24 hours are over;
//! a score counts decided messages only. Its *projection* also counts, as missed, the
//! messages still open for longer than a grace period: what the score becomes if nobody
//! answers them in time.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;

use crate::store::responses::{Channel, ThreadRecord};

/// The OTAs' line: answered within 24 hours (a reply at exactly 24:00 is in time).
pub const REPLY_WINDOW: TimeDelta = TimeDelta::hours(24);
/// The windows of the definitions.
pub const SCORE_WINDOW: TimeDelta = TimeDelta::days(30);
pub const AIRBNB_FALLBACK_WINDOW: TimeDelta = TimeDelta::days(90);
/// Airbnb's fallback takes this many threads; Booking.com shows its score from this many.
pub const MIN_COUNTED: usize = 10;

/// Who answered a guest message first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Answerer {
    /// A reply concierge sent by itself (a rule's `reply`).
    Concierge,
    /// A reply concierge wrote and a person approved (a draft).
    DraftApproved,
    /// Someone on staff, by hand (a property-side message concierge did not send).
    Staff,
    /// Concierge marked the thread "no reply needed" (Booking.com).
    NoReplyNeeded,
}

impl Answerer {
    pub const ALL: [Answerer; 4] = [
        Answerer::Concierge,
        Answerer::DraftApproved,
        Answerer::Staff,
        Answerer::NoReplyNeeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Answerer::Concierge => "concierge",
            Answerer::DraftApproved => "draft_approved",
            Answerer::Staff => "staff",
            Answerer::NoReplyNeeded => "no_reply_needed",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Answerer::Concierge => "concierge",
            Answerer::DraftApproved => "approved draft",
            Answerer::Staff => "staff",
            Answerer::NoReplyNeeded => "no reply needed",
        }
    }

    /// Concierge alone (a reply or a mark), or a person (staff, or a draft approved).
    pub fn is_automatic(self) -> bool {
        matches!(self, Answerer::Concierge | Answerer::NoReplyNeeded)
    }
}

/// What a guest message is to Airbnb's definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// An Airbnb inquiry: arrival is its system message's.
    Inquiry,
    /// The first guest message of a thread concierge saw from its first message.
    Opening,
    /// Every other guest message.
    FollowUp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub at: DateTime<Utc>,
    pub by: Answerer,
}

/// One guest message (or inquiry) and its first answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Response {
    pub property_id: String,
    pub thread_id: String,
    /// The Channex message id (`inquiry` for an inquiry).
    pub message_id: String,
    pub channel: Channel,
    pub kind: Kind,
    pub arrived: DateTime<Utc>,
    pub answer: Option<Answer>,
}

/// Where a message stands at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Answered by then; `in_time`: within [`REPLY_WINDOW`].
    Answered { in_time: bool, by: Answerer },
    /// Not answered, its 24 hours not over.
    Open,
    /// Not answered within its 24 hours.
    Missed,
}

impl Response {
    /// Where the OTAs' 24 hours end.
    pub fn deadline(&self) -> DateTime<Utc> {
        self.arrived + REPLY_WINDOW
    }

    /// The answer as it stood at `now` (a later answer had not happened yet).
    pub fn answer_at(&self, now: DateTime<Utc>) -> Option<&Answer> {
        self.answer.as_ref().filter(|a| a.at <= now)
    }

    pub fn response_time(&self) -> Option<TimeDelta> {
        self.answer.as_ref().map(|a| a.at - self.arrived)
    }

    pub fn standing(&self, now: DateTime<Utc>) -> Standing {
        match self.answer_at(now) {
            Some(a) => Standing::Answered {
                in_time: a.at - self.arrived <= REPLY_WINDOW,
                by: a.by,
            },
            None if now < self.deadline() => Standing::Open,
            None => Standing::Missed,
        }
    }
}

/// One property-side answer on a thread's timeline.
struct TimelineAnswer {
    at: i64,
    by: Answerer,
    /// Messages go before marks at the same instant.
    order: u8,
}

/// A record's time (Unix µs: Channex's own precision, so a reply and a message within one
/// millisecond keep their order).
fn ms(at: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// Who sent a property-side message: an approved draft, concierge, else staff by hand.
fn sender_of(record: &ThreadRecord, message_id: &str) -> Answerer {
    if record.drafts.iter().any(|d| d == message_id) {
        Answerer::DraftApproved
    } else if record.concierge.iter().any(|c| c == message_id) {
        Answerer::Concierge
    } else {
        Answerer::Staff
    }
}

fn timeline(record: &ThreadRecord) -> Vec<TimelineAnswer> {
    let messages = record.property.iter().map(|m| TimelineAnswer {
        at: m.at,
        by: sender_of(record, &m.id),
        order: 0,
    });
    let marks = record.no_reply.iter().map(|at| TimelineAnswer {
        at: *at,
        by: Answerer::NoReplyNeeded,
        order: 1,
    });
    let mut all: Vec<TimelineAnswer> = messages.chain(marks).collect();
    all.sort_by_key(|a| (a.at, a.order));
    all
}

/// Whether the record holds every message of its thread (so its first guest message is
/// the conversation's opening, not a follow-up of a history concierge never saw).
fn seen_from_start(record: &ThreadRecord) -> bool {
    record.max_count > 0 && record.seen_count() >= record.max_count
}

/// One [`Response`] per guest message of the record (and one for its Airbnb inquiry),
/// oldest first, each with its first answer: the first property-side message or "no reply
/// needed" mark at or after its arrival (a later staff reply answers every guest message
/// before it).
pub fn responses(record: &ThreadRecord) -> Vec<Response> {
    let channel = record.channel.unwrap_or_default();
    let answers = timeline(record);
    let first_answer = |arrived: i64| {
        answers.iter().find(|a| a.at >= arrived).map(|a| Answer {
            at: ms(a.at),
            by: a.by,
        })
    };
    let response = |message_id: &str, kind: Kind, arrived: i64| Response {
        property_id: record.property_id.clone(),
        thread_id: record.thread_id.clone(),
        message_id: message_id.to_string(),
        channel,
        kind,
        arrived: ms(arrived),
        answer: first_answer(arrived),
    };
    let mut guest: Vec<_> = record.guest.iter().collect();
    guest.sort_by_key(|g| (g.at, g.id.clone()));
    let first_message_at = record.property.iter().map(|p| p.at).min();
    let opening = guest.first().filter(|g| {
        record.inquiry_at.is_none()
            && seen_from_start(record)
            && first_message_at.is_none_or(|p| g.at <= p)
    });
    let mut out: Vec<Response> = record
        .inquiry_at
        .map(|at| response("inquiry", Kind::Inquiry, at))
        .into_iter()
        .collect();
    for g in &guest {
        let kind = match opening {
            Some(o) if o.id == g.id => Kind::Opening,
            _ => Kind::FollowUp,
        };
        out.push(response(&g.id, kind, g.at));
    }
    out.sort_by_key(|r| r.arrived);
    out
}

/// The responses of `after` that `before` did not have answered: what a record update
/// answered (each observed once, by the writer whose update did it).
pub fn newly_answered(before: &[Response], after: &[Response]) -> Vec<Response> {
    after
        .iter()
        .filter(|r| r.answer.is_some())
        .filter(|r| {
            !before
                .iter()
                .any(|b| b.message_id == r.message_id && b.answer.is_some())
        })
        .cloned()
        .collect()
}

/// The two scores concierge computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    AirbnbResponseRate,
    BookingReplyScore,
}

impl ScoreKind {
    /// Whether the OTA would show a score with this many messages counted.
    pub fn shown_with(self, counted: usize) -> bool {
        match self {
            ScoreKind::AirbnbResponseRate => counted > 0,
            ScoreKind::BookingReplyScore => counted >= MIN_COUNTED,
        }
    }

    pub const ALL: [ScoreKind; 2] = [ScoreKind::AirbnbResponseRate, ScoreKind::BookingReplyScore];

    pub fn as_str(self) -> &'static str {
        match self {
            ScoreKind::AirbnbResponseRate => "airbnb_response_rate",
            ScoreKind::BookingReplyScore => "booking_reply_score",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ScoreKind::AirbnbResponseRate => "Airbnb response rate",
            ScoreKind::BookingReplyScore => "Booking.com Reply Score",
        }
    }

    pub fn channel(self) -> Channel {
        match self {
            ScoreKind::AirbnbResponseRate => Channel::Airbnb,
            ScoreKind::BookingReplyScore => Channel::BookingCom,
        }
    }

    /// The score at `now`; open messages older than `grace` count as missed in the
    /// projection.
    pub fn compute(self, responses: &[Response], now: DateTime<Utc>, grace: TimeDelta) -> Score {
        match self {
            ScoreKind::AirbnbResponseRate => airbnb_response_rate(responses, now, grace),
            ScoreKind::BookingReplyScore => booking_reply_score(responses, now, grace),
        }
    }
}

/// Which messages a score counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Those of the past 30 days.
    Last30Days,
    /// Airbnb, with fewer than 10 in 30 days: the 10 most recent of the past 90 days.
    Recent10Of90Days,
    /// Booking.com, with fewer than 10 in 30 days: the 10 most recent messages.
    Recent10,
}

/// A score as the OTA would show it at `now`, with its projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub kind: ScoreKind,
    /// `within / counted`; `None` with nothing counted.
    pub value: Option<f64>,
    /// Whether the OTA shows it (Booking.com: from 10 messages; Airbnb: from 1).
    pub shown: bool,
    pub counted: usize,
    pub within: usize,
    pub basis: Basis,
    /// Messages still open (inside their 24 hours, unanswered).
    pub open: usize,
    /// The value if every message open for longer than the grace misses its 24 hours.
    pub projected: Option<f64>,
    /// How many messages the projection counts.
    pub projected_counted: usize,
    /// Booking.com: messages left out because they were marked "no reply needed" in time.
    pub left_out: usize,
}

fn share(within: usize, counted: usize) -> Option<f64> {
    (counted > 0).then(|| within as f64 / counted as f64)
}

/// What one message is to a score at `now`: `None` while it is open (not counted),
/// `Some(true)` answered in time, `Some(false)` missed.
fn verdict(r: &Response, now: DateTime<Utc>) -> Option<bool> {
    match r.standing(now) {
        Standing::Answered { in_time, .. } => Some(in_time),
        Standing::Missed => Some(false),
        Standing::Open => None,
    }
}

/// The Airbnb response rate at `now` (see the module docs).
pub fn airbnb_response_rate(responses: &[Response], now: DateTime<Utc>, grace: TimeDelta) -> Score {
    let mut threads: Vec<&Response> = responses
        .iter()
        .filter(|r| r.channel == Channel::Airbnb && r.kind != Kind::FollowUp)
        .filter(|r| r.arrived <= now && r.arrived > now - AIRBNB_FALLBACK_WINDOW)
        .collect();
    threads.sort_by_key(|r| std::cmp::Reverse(r.arrived));
    let open = threads.iter().filter(|r| verdict(r, now).is_none()).count();
    let pick = |projected: bool| -> (Vec<bool>, Basis) {
        let decided: Vec<(DateTime<Utc>, bool)> = threads
            .iter()
            .filter_map(|r| match verdict(r, now) {
                Some(v) => Some((r.arrived, v)),
                None if projected && now - r.arrived >= grace => Some((r.arrived, false)),
                None => None,
            })
            .collect();
        let recent: Vec<bool> = decided
            .iter()
            .filter(|(at, _)| *at > now - SCORE_WINDOW)
            .map(|(_, v)| *v)
            .collect();
        if recent.len() >= MIN_COUNTED {
            (recent, Basis::Last30Days)
        } else {
            let ten = decided.iter().take(MIN_COUNTED).map(|(_, v)| *v).collect();
            (ten, Basis::Recent10Of90Days)
        }
    };
    let (counted, basis) = pick(false);
    let (projection, _) = pick(true);
    let within = counted.iter().filter(|v| **v).count();
    Score {
        kind: ScoreKind::AirbnbResponseRate,
        value: share(within, counted.len()),
        shown: !counted.is_empty(),
        counted: counted.len(),
        within,
        basis,
        open,
        projected: share(projection.iter().filter(|v| **v).count(), projection.len()),
        projected_counted: projection.len(),
        left_out: 0,
    }
}

/// Marked "no reply needed" within its 24 hours (as it stood at `now`).
fn left_out(r: &Response, now: DateTime<Utc>) -> bool {
    r.answer_at(now)
        .is_some_and(|a| a.by == Answerer::NoReplyNeeded && a.at - r.arrived <= REPLY_WINDOW)
}

/// The Booking.com Reply Score at `now` (see the module docs): messages of the past 30
/// days, or the 10 most recent when there were fewer (the store keeps at least 90 days).
pub fn booking_reply_score(responses: &[Response], now: DateTime<Utc>, grace: TimeDelta) -> Score {
    let mut messages: Vec<&Response> = responses
        .iter()
        .filter(|r| r.channel == Channel::BookingCom && r.arrived <= now)
        .collect();
    messages.sort_by_key(|r| std::cmp::Reverse(r.arrived));
    let excluded = messages
        .iter()
        .filter(|r| r.arrived > now - SCORE_WINDOW && left_out(r, now))
        .count();
    let counted: Vec<&&Response> = messages.iter().filter(|r| !left_out(r, now)).collect();
    let open = counted.iter().filter(|r| verdict(r, now).is_none()).count();
    let pick = |projected: bool| -> (Vec<bool>, Basis) {
        let decided: Vec<(DateTime<Utc>, bool)> = counted
            .iter()
            .filter_map(|r| match verdict(r, now) {
                Some(v) => Some((r.arrived, v)),
                None if projected && now - r.arrived >= grace => Some((r.arrived, false)),
                None => None,
            })
            .collect();
        let recent: Vec<bool> = decided
            .iter()
            .filter(|(at, _)| *at > now - SCORE_WINDOW)
            .map(|(_, v)| *v)
            .collect();
        if recent.len() >= MIN_COUNTED {
            (recent, Basis::Last30Days)
        } else {
            let ten = decided.iter().take(MIN_COUNTED).map(|(_, v)| *v).collect();
            (ten, Basis::Recent10)
        }
    };
    let (decided, basis) = pick(false);
    let (projection, _) = pick(true);
    let within = decided.iter().filter(|v| **v).count();
    Score {
        kind: ScoreKind::BookingReplyScore,
        value: share(within, decided.len()),
        shown: ScoreKind::BookingReplyScore.shown_with(decided.len()),
        counted: decided.len(),
        within,
        basis,
        open,
        projected: share(projection.iter().filter(|v| **v).count(), projection.len()),
        projected_counted: projection.len(),
        left_out: excluded,
    }
}

/// Nearest-rank percentile `q` (0..=1) of `sorted` (ascending).
pub fn percentile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// How many messages each answerer answered first, and how many are unanswered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AnsweredBy {
    pub concierge: usize,
    pub draft_approved: usize,
    pub staff: usize,
    pub no_reply_needed: usize,
    pub unanswered: usize,
}

impl AnsweredBy {
    fn add(&mut self, answer: Option<&Answer>) {
        match answer.map(|a| a.by) {
            Some(Answerer::Concierge) => self.concierge += 1,
            Some(Answerer::DraftApproved) => self.draft_approved += 1,
            Some(Answerer::Staff) => self.staff += 1,
            Some(Answerer::NoReplyNeeded) => self.no_reply_needed += 1,
            None => self.unanswered += 1,
        }
    }

    pub fn get(&self, by: Answerer) -> usize {
        match by {
            Answerer::Concierge => self.concierge,
            Answerer::DraftApproved => self.draft_approved,
            Answerer::Staff => self.staff,
            Answerer::NoReplyNeeded => self.no_reply_needed,
        }
    }

    pub fn answered(&self) -> usize {
        self.concierge + self.draft_approved + self.staff + self.no_reply_needed
    }

    /// The share answered by concierge alone (its replies and marks) among the answered.
    pub fn automatic_share(&self) -> Option<f64> {
        share(self.concierge + self.no_reply_needed, self.answered())
    }
}

/// One day (UTC) of guest messages, by arrival.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Day {
    pub date: NaiveDate,
    pub arrived: usize,
    /// Response-time percentiles of the messages answered (seconds).
    pub p50_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
    pub answered_by: AnsweredBy,
}

/// Guest messages (inquiries included) arrived in `[from, now]`, per UTC day from `from`'s
/// day to `now`'s, as they stood at `now`.
pub fn daily(responses: &[Response], from: DateTime<Utc>, now: DateTime<Utc>) -> Vec<Day> {
    let mut days = Vec::new();
    let mut date = from.date_naive();
    while date <= now.date_naive() {
        let of_day: Vec<&Response> = responses
            .iter()
            .filter(|r| r.arrived.date_naive() == date && r.arrived >= from && r.arrived <= now)
            .collect();
        let mut times: Vec<i64> = of_day
            .iter()
            .filter_map(|r| r.answer_at(now).map(|a| (a.at - r.arrived).num_seconds()))
            .collect();
        times.sort_unstable();
        let mut answered_by = AnsweredBy::default();
        for r in &of_day {
            answered_by.add(r.answer_at(now));
        }
        days.push(Day {
            date,
            arrived: of_day.len(),
            p50_seconds: percentile(&times, 0.5),
            p90_seconds: percentile(&times, 0.9),
            answered_by,
        });
        match date.succ_opt() {
            Some(next) => date = next,
            None => break,
        }
    }
    days
}

/// The answered-by counts and response-time percentiles over `[from, now]`.
pub fn summary(
    responses: &[Response],
    from: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (AnsweredBy, Option<i64>, Option<i64>) {
    let mut by = AnsweredBy::default();
    let mut times = Vec::new();
    for r in responses
        .iter()
        .filter(|r| r.arrived >= from && r.arrived <= now)
    {
        let answer = r.answer_at(now);
        by.add(answer);
        if let Some(a) = answer {
            times.push((a.at - r.arrived).num_seconds());
        }
    }
    times.sort_unstable();
    (by, percentile(&times, 0.5), percentile(&times, 0.9))
}

/// Messages unanswered at `now` whose 24 hours end after `now - overdue_for` (those still
/// open first, soonest deadline first; then the overdue ones, latest first).
pub fn at_risk(
    responses: &[Response],
    now: DateTime<Utc>,
    overdue_for: TimeDelta,
) -> Vec<Response> {
    let mut out: Vec<Response> = responses
        .iter()
        .filter(|r| r.arrived <= now && r.answer_at(now).is_none())
        .filter(|r| r.deadline() > now - overdue_for)
        .cloned()
        .collect();
    out.sort_by_key(|r| {
        let overdue = r.deadline() <= now;
        (
            overdue,
            if overdue {
                now - r.deadline()
            } else {
                r.deadline() - now
            },
        )
    });
    out
}

#[cfg(test)]
mod tests;
