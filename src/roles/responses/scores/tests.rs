//! The definitions' edges, on records built by hand.

use super::*;
use crate::store::responses::{Seen, ThreadRecord};

const HOUR: i64 = 3_600_000_000;
const MINUTE: i64 = 60_000_000;
const DAY: i64 = 24 * HOUR;

fn t0() -> i64 {
    DateTime::parse_from_rfc3339("2026-11-01T00:00:00Z")
        .expect("time")
        .timestamp_micros()
}

fn at(ms: i64) -> DateTime<Utc> {
    super::ms(ms)
}

fn seen(id: &str, at: i64) -> Seen {
    Seen { id: id.into(), at }
}

/// A thread concierge saw from its start: guest messages and replies at offsets from t0.
fn thread(id: &str, channel: Channel, guest: &[i64], replies: &[(i64, Answerer)]) -> ThreadRecord {
    let mut r = ThreadRecord::new("p1", id);
    r.channel = Some(channel);
    for (i, g) in guest.iter().enumerate() {
        r.guest.push(seen(&format!("{id}-g{i}"), t0() + g));
    }
    for (i, (at, by)) in replies.iter().enumerate() {
        let mid = format!("{id}-r{i}");
        match by {
            Answerer::NoReplyNeeded => r.no_reply.push(t0() + at),
            _ => r.property.push(seen(&mid, t0() + at)),
        }
        match by {
            Answerer::Concierge => r.concierge.push(mid),
            Answerer::DraftApproved => r.drafts.push(mid),
            _ => {}
        }
    }
    r.max_count = (r.guest.len() + r.property.len()) as u64;
    r
}

fn all(records: &[ThreadRecord]) -> Vec<Response> {
    records.iter().flat_map(responses).collect()
}

const GRACE: TimeDelta = TimeDelta::hours(1);

#[test]
fn answered_at_23_59_is_in_time_and_at_24_01_is_not() {
    let now = at(t0() + 3 * DAY);
    for (reply_after, in_time) in [
        (23 * HOUR + 59 * MINUTE, true),
        (24 * HOUR, true),
        (24 * HOUR + MINUTE, false),
    ] {
        let booking = thread(
            "b",
            Channel::BookingCom,
            &[0],
            &[(reply_after, Answerer::Staff)],
        );
        let airbnb = thread(
            "a",
            Channel::Airbnb,
            &[0],
            &[(reply_after, Answerer::Staff)],
        );
        let rs = all(&[booking, airbnb]);
        let reply = booking_reply_score(&rs, now, GRACE);
        assert_eq!(
            (reply.counted, reply.within == 1),
            (1, in_time),
            "{reply_after}"
        );
        let rate = airbnb_response_rate(&rs, now, GRACE);
        assert_eq!(
            (rate.counted, rate.within == 1),
            (1, in_time),
            "{reply_after}"
        );
    }
}

#[test]
fn a_message_open_inside_its_24_hours_is_not_counted_until_decided() {
    let rs = all(&[thread("b", Channel::BookingCom, &[0], &[])]);
    let score = booking_reply_score(&rs, at(t0() + 2 * HOUR), GRACE);
    assert_eq!((score.counted, score.open), (0, 1));
    assert_eq!(score.value, None);
    assert_eq!(
        score.projected,
        Some(0.0),
        "open for over the grace: projected missed"
    );
    let fresh = booking_reply_score(&rs, at(t0() + 10 * MINUTE), GRACE);
    assert_eq!(
        fresh.projected, None,
        "within the grace it is not projected yet"
    );
    let missed = booking_reply_score(&rs, at(t0() + 25 * HOUR), GRACE);
    assert_eq!((missed.counted, missed.within, missed.open), (1, 0, 0));
}

#[test]
fn no_reply_needed_within_24_hours_is_left_out_of_the_reply_score() {
    let now = at(t0() + 3 * DAY);
    let marked = thread(
        "b1",
        Channel::BookingCom,
        &[0],
        &[(2 * HOUR, Answerer::NoReplyNeeded)],
    );
    let late_mark = thread(
        "b2",
        Channel::BookingCom,
        &[0],
        &[(25 * HOUR, Answerer::NoReplyNeeded)],
    );
    let replied = thread(
        "b3",
        Channel::BookingCom,
        &[0],
        &[(HOUR, Answerer::Concierge)],
    );
    let score = booking_reply_score(&all(&[marked, late_mark, replied]), now, GRACE);
    assert_eq!(score.left_out, 1);
    assert_eq!(
        score.counted, 2,
        "the in-time mark is left out, the late one is a miss"
    );
    assert_eq!(score.within, 1);
    assert_eq!(score.value, Some(0.5));
}

#[test]
fn airbnb_follow_up_messages_do_not_count() {
    let now = at(t0() + 5 * DAY);
    // Opening answered in 1 h; a follow-up two days later never answered.
    let r = thread(
        "a",
        Channel::Airbnb,
        &[0, 2 * DAY],
        &[(HOUR, Answerer::Staff)],
    );
    let rs = responses(&r);
    assert_eq!(rs[0].kind, Kind::Opening);
    assert_eq!(rs[1].kind, Kind::FollowUp);
    let rate = airbnb_response_rate(&rs, now, GRACE);
    assert_eq!((rate.counted, rate.within), (1, 1));
    assert_eq!(rate.value, Some(1.0));
    // The same record on Booking.com counts both messages.
    let mut b = r.clone();
    b.channel = Some(Channel::BookingCom);
    let reply = booking_reply_score(&responses(&b), now, GRACE);
    assert_eq!((reply.counted, reply.within), (2, 1));
}

#[test]
fn a_thread_not_seen_from_its_start_has_no_opening() {
    let mut r = thread("a", Channel::Airbnb, &[0], &[(HOUR, Answerer::Staff)]);
    r.max_count = 12; // a baselined thread: ten earlier messages concierge never saw
    assert_eq!(responses(&r)[0].kind, Kind::FollowUp);
    // A host-initiated thread: the guest's first message answers the host.
    let mut host_first = thread(
        "h",
        Channel::Airbnb,
        &[2 * HOUR],
        &[(HOUR, Answerer::Staff)],
    );
    host_first.max_count = 2;
    assert_eq!(responses(&host_first)[0].kind, Kind::FollowUp);
}

#[test]
fn an_inquiry_counts_from_its_system_message() {
    let mut r = thread(
        "a",
        Channel::Airbnb,
        &[5 * MINUTE],
        &[(23 * HOUR, Answerer::Staff)],
    );
    r.inquiry_at = Some(t0());
    r.system.push("sys".into());
    let rs = responses(&r);
    assert_eq!(rs[0].kind, Kind::Inquiry);
    assert_eq!(
        rs[1].kind,
        Kind::FollowUp,
        "the guest's text with it is not a second thread"
    );
    let rate = airbnb_response_rate(&rs, at(t0() + 2 * DAY), GRACE);
    assert_eq!((rate.counted, rate.within), (1, 1));
}

#[test]
fn fewer_than_10_threads_in_30_days_take_the_10_most_recent_of_90() {
    let now = at(t0() + 100 * DAY);
    let mut records = Vec::new();
    // 12 threads 40..51 days ago: the older 4 missed, the newer 8 in time.
    for i in 0..12 {
        let arrived = (100 - 51 + i) * DAY;
        let reply = if i < 4 { 30 * HOUR } else { HOUR };
        records.push(thread(
            &format!("old{i}"),
            Channel::Airbnb,
            &[arrived],
            &[(arrived + reply, Answerer::Staff)],
        ));
    }
    // 3 threads in the last 30 days, all missed.
    for i in 0..3 {
        let arrived = (100 - 10 + i) * DAY;
        records.push(thread(&format!("new{i}"), Channel::Airbnb, &[arrived], &[]));
    }
    // One older than 90 days: never counted.
    records.push(thread(
        "ancient",
        Channel::Airbnb,
        &[5 * DAY],
        &[(5 * DAY + HOUR, Answerer::Staff)],
    ));
    let rate = airbnb_response_rate(&all(&records), now, GRACE);
    assert_eq!(rate.basis, Basis::Recent10Of90Days);
    assert_eq!(rate.counted, 10);
    // The 10 most recent: 3 missed new ones + the 7 newest old ones (in time: old5..old11).
    assert_eq!(rate.within, 7);
    assert_eq!(rate.value, Some(0.7));

    // With 10 threads inside the 30 days, only they count.
    for i in 3..10 {
        let arrived = (100 - 10 + i) * DAY;
        records.push(thread(
            &format!("new{i}"),
            Channel::Airbnb,
            &[arrived],
            &[(arrived + HOUR, Answerer::Concierge)],
        ));
    }
    let rate = airbnb_response_rate(&all(&records), now, GRACE);
    assert_eq!(
        (rate.basis, rate.counted, rate.within),
        (Basis::Last30Days, 10, 7)
    );
}

#[test]
fn a_later_staff_reply_answers_every_earlier_guest_message() {
    // Guest writes at 0 h and 10 h; staff answers at 12 h.
    let r = thread(
        "b",
        Channel::BookingCom,
        &[0, 10 * HOUR],
        &[(12 * HOUR, Answerer::Staff)],
    );
    let rs = responses(&r);
    assert_eq!(rs[0].response_time(), Some(TimeDelta::hours(12)));
    assert_eq!(rs[1].response_time(), Some(TimeDelta::hours(2)));
    assert!(rs
        .iter()
        .all(|r| r.answer.as_ref().map(|a| a.by) == Some(Answerer::Staff)));
    // A reply before a message does not answer it.
    let early = thread("c", Channel::BookingCom, &[HOUR], &[(0, Answerer::Staff)]);
    assert_eq!(responses(&early)[0].answer, None);
}

#[test]
fn the_first_answer_decides_who_answered() {
    let r = thread(
        "b",
        Channel::BookingCom,
        &[0, 3 * HOUR, 6 * HOUR],
        &[
            (MINUTE, Answerer::Concierge),
            (4 * HOUR, Answerer::DraftApproved),
            (7 * HOUR, Answerer::Staff),
            (8 * HOUR, Answerer::Staff),
        ],
    );
    let by: Vec<_> = responses(&r)
        .iter()
        .map(|r| r.answer.as_ref().map(|a| a.by))
        .collect();
    assert_eq!(
        by,
        vec![
            Some(Answerer::Concierge),
            Some(Answerer::DraftApproved),
            Some(Answerer::Staff)
        ]
    );
    let (counts, p50, p90) = summary(&responses(&r), at(t0()), at(t0() + DAY));
    assert_eq!(
        (counts.concierge, counts.draft_approved, counts.staff),
        (1, 1, 1)
    );
    assert_eq!(counts.automatic_share(), Some(1.0 / 3.0));
    assert_eq!((p50, p90), (Some(3600), Some(3600)));
}

#[test]
fn newly_answered_names_what_an_update_answered_once() {
    let before = thread("b", Channel::BookingCom, &[0], &[]);
    let after = thread("b", Channel::BookingCom, &[0], &[(HOUR, Answerer::Staff)]);
    let new = newly_answered(&responses(&before), &responses(&after));
    assert_eq!(new.len(), 1);
    assert!(newly_answered(&responses(&after), &responses(&after)).is_empty());
}

#[test]
fn a_score_as_of_an_earlier_instant_ignores_later_answers() {
    let r = thread(
        "b",
        Channel::BookingCom,
        &[0],
        &[(20 * HOUR, Answerer::Staff)],
    );
    let rs = responses(&r);
    assert_eq!(rs[0].standing(at(t0() + 10 * HOUR)), Standing::Open);
    assert_eq!(
        rs[0].standing(at(t0() + 21 * HOUR)),
        Standing::Answered {
            in_time: true,
            by: Answerer::Staff
        }
    );
}

#[test]
fn booking_shows_its_score_from_10_messages() {
    let now = at(t0() + 20 * DAY);
    let mut records: Vec<ThreadRecord> = (0..9)
        .map(|i| {
            thread(
                &format!("b{i}"),
                Channel::BookingCom,
                &[i * DAY],
                &[(i * DAY + HOUR, Answerer::Staff)],
            )
        })
        .collect();
    assert!(!booking_reply_score(&all(&records), now, GRACE).shown);
    records.push(thread("b9", Channel::BookingCom, &[9 * DAY], &[]));
    let score = booking_reply_score(&all(&records), now, GRACE);
    assert!(score.shown);
    assert_eq!(score.value, Some(0.9));
}

#[test]
fn percentiles_daily_and_at_risk() {
    assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.5), Some(5));
    assert_eq!(percentile(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.9), Some(9));
    assert_eq!(percentile(&[7], 0.9), Some(7));
    assert_eq!(percentile(&[], 0.5), None);
    let records = [
        thread(
            "b1",
            Channel::BookingCom,
            &[HOUR],
            &[(2 * HOUR, Answerer::Staff)],
        ),
        thread("b2", Channel::BookingCom, &[DAY + HOUR], &[]),
        thread("b3", Channel::BookingCom, &[DAY + 2 * HOUR], &[]),
    ];
    let rs = all(&records);
    let now = at(t0() + DAY + 23 * HOUR);
    let days = daily(&rs, at(t0()), now);
    assert_eq!(days.len(), 2);
    assert_eq!(days[0].p50_seconds, Some(3600));
    assert_eq!(days[1].answered_by.unanswered, 2);
    let risk = at_risk(&rs, now, TimeDelta::days(7));
    assert_eq!(
        risk.iter()
            .map(|r| r.thread_id.as_str())
            .collect::<Vec<_>>(),
        ["b2", "b3"]
    );
}

#[test]
fn booking_with_fewer_than_10_messages_in_30_days_takes_the_10_most_recent() {
    let now = at(t0() + 80 * DAY);
    // 12 messages 40..51 days ago (the oldest 3 late), 2 in the last 30 days in time.
    let mut records: Vec<ThreadRecord> = (0..12)
        .map(|i| {
            let arrived = (80 - 51 + i) * DAY;
            let reply = if i < 3 { 30 * HOUR } else { HOUR };
            thread(
                &format!("o{i}"),
                Channel::BookingCom,
                &[arrived],
                &[(arrived + reply, Answerer::Staff)],
            )
        })
        .collect();
    records.push(thread(
        "n0",
        Channel::BookingCom,
        &[75 * DAY],
        &[(75 * DAY + HOUR, Answerer::Staff)],
    ));
    records.push(thread(
        "n1",
        Channel::BookingCom,
        &[76 * DAY],
        &[(76 * DAY + HOUR, Answerer::Staff)],
    ));
    let score = booking_reply_score(&all(&records), now, GRACE);
    assert_eq!(
        (score.basis, score.counted, score.within),
        (Basis::Recent10, 10, 10)
    );
    assert!(score.shown);
}
