//! Built-in sample events used by `rules check`: every event type, both providers, several
//! FAQ-ish guest texts, staff replies, an Airbnb inquiry, a stale thread for the daily tick,
//! and bookings (the `booking` block on threads that have one; `booking.changed` for moved
//! dates, a cancellation and a new Airbnb booking).
//!
//! Plain data only; it must not read files, the clock or the network (the times are fixed
//! and relative to a caller-supplied `now`).

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};

use crate::events::{ids, Event};
use crate::events::{
    Booking, BookingChange, BookingStatus, EventType, FollowUpInfo, InquiryInfo, MessageInfo,
    PropertyInfo, ScheduleInfo, ThreadSnapshot,
};

/// Guest texts a FAQ rule set should recognise (or deliberately not).
pub const GUEST_TEXTS: &[&str] = &[
    "Hi! What's the wifi password?",
    "What time is check-in?",
    "When do we have to check out on Sunday?",
    "Is there parking near the apartment?",
    "Could we check in early, around 11am?",
    "How do we get there from the airport? What's the address?",
    "Thank you!",
    "ok, see you",
    "Do you allow pets? We have a small dog.",
    "The wifi keeps dropping, can you reset the router?",
    "Thanks, the wifi works great!",
    "Hello",
];

/// A property with the vars the example rules and templates use.
pub fn sample_property() -> PropertyInfo {
    let vars: Map<String, Value> = json!({
        "wifi_name": "CasaAzul-Guest",
        "wifi_password": "sunshine2024",
        "checkin_time": "15:00",
        "checkout_time": "11:00",
        "early_checkin": "We can usually offer 13:00 for a small fee if the apartment is ready.",
        "parking": "Free street parking on Rua das Flores; a public garage is 200 m away.",
        "address": "Rua das Flores 12, 1200-195 Lisboa",
        "directions": "Take the metro green line to Baixa-Chiado, exit Rua Garrett, 5 minutes on foot.",
        "host_name": "Marta",
        "quiet_start": "22:00",
        "quiet_end": "08:00",
        "close_after_days": 14,
        "inquiry_alert_before_hours": 2
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    PropertyInfo {
        id: "sample-property".into(),
        name: "Casa Azul".into(),
        timezone: "Europe/Lisbon".into(),
        vars,
    }
}

fn thread(provider: &str, now: DateTime<Utc>, awaiting_reply: bool) -> ThreadSnapshot {
    let guest_at = now - TimeDelta::minutes(1);
    let staff_at = if awaiting_reply {
        now - TimeDelta::hours(3)
    } else {
        now
    };
    ThreadSnapshot {
        id: format!("sample-thread-{provider}"),
        title: "Ana Silva".into(),
        provider: crate::events::contract_provider(provider),
        is_closed: false,
        message_count: 4,
        booking_id: (provider != "airbnb").then(|| "sample-booking".to_string()),
        channel_id: Some("sample-channel".into()),
        last_message_received_at: Some(guest_at.max(staff_at)),
        last_guest_message_at: Some(guest_at),
        last_property_message_at: Some(staff_at),
        awaiting_reply,
        awaiting_reply_since: awaiting_reply.then_some(guest_at),
        language: None,
    }
}

/// The booking of the sample threads that have one: arriving in 3 days for 3 nights.
pub fn sample_booking(
    id: &str,
    ota_name: &str,
    status: BookingStatus,
    now: DateTime<Utc>,
) -> Booking {
    let day = |n: i64| (now + TimeDelta::days(n)).format("%Y-%m-%d").to_string();
    Booking {
        id: id.into(),
        status,
        arrival_date: day(3),
        departure_date: day(6),
        nights: 3,
        ota_name: ota_name.into(),
        guest_name: "Ana Silva".into(),
        adults: 2,
        children: 0,
        language: Some("pt".into()),
    }
}

/// The `booking` block of an event on thread `t`.
fn booking_of(t: &ThreadSnapshot, now: DateTime<Utc>) -> Option<Booking> {
    let ota = crate::events::provider_str(&t.provider).to_string();
    t.booking_id
        .as_deref()
        .map(|id| sample_booking(id, &ota, BookingStatus::Modified, now))
}

/// A `booking.changed` of a booking without a thread: `before` absent for a new booking.
pub fn booking_changed_event(
    property: &PropertyInfo,
    booking: Booking,
    before: Option<crate::events::BookingStay>,
    now: DateTime<Utc>,
) -> Event {
    let mut ev = base(
        EventType::BookingChanged,
        ids::booking_changed(&booking.id, "sample-revision"),
        now,
        property,
    );
    ev.booking_change = Some(BookingChange {
        before,
        after: booking.stay(),
    });
    ev.booking = Some(booking);
    ev
}

fn booking_samples(property: &PropertyInfo, now: DateTime<Utc>) -> Vec<(String, Event)> {
    let moved = sample_booking("sample-booking", "BookingCom", BookingStatus::Modified, now);
    let mut earlier = moved.stay();
    earlier.arrival_date = (now + TimeDelta::days(2)).format("%Y-%m-%d").to_string();
    let mut cancelled = moved.clone();
    cancelled.status = BookingStatus::Cancelled;
    let fresh = sample_booking("sample-airbnb-booking", "Airbnb", BookingStatus::New, now);
    vec![
        (
            "booking.changed, dates moved".into(),
            booking_changed_event(property, moved.clone(), Some(earlier), now),
        ),
        (
            "booking.changed, cancelled".into(),
            booking_changed_event(property, cancelled, Some(moved.stay()), now),
        ),
        (
            "booking.changed, new Airbnb booking".into(),
            booking_changed_event(property, fresh, None, now),
        ),
    ]
}

fn base(event_type: EventType, id: String, now: DateTime<Utc>, property: &PropertyInfo) -> Event {
    Event {
        id,
        event_type,
        occurred_at: now,
        property: property.clone(),
        thread: None,
        message: None,
        inquiry: None,
        follow_up: None,
        schedule: None,
        booking: None,
        booking_change: None,
    }
}

/// A new message on `provider` from `sender`.
pub fn message_event(
    property: &PropertyInfo,
    provider: &str,
    sender: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Event {
    let t = thread(provider, now, sender == "guest");
    let msg_id = format!(
        "sample-msg-{}",
        crate::base::diagnostics::content_version(text.as_bytes())
    );
    let mut ev = base(
        EventType::ThreadNewMessage,
        ids::new_message(&t.id, &msg_id),
        now,
        property,
    );
    ev.message = Some(MessageInfo {
        id: msg_id,
        text: text.into(),
        sender: crate::events::contract_sender(sender),
        attachments: Vec::new(),
        inserted_at: now,
        language: None,
    });
    ev.booking = booking_of(&t, now);
    ev.thread = Some(t);
    ev
}

/// An Airbnb inquiry whose response deadline is 20 hours after `now`.
pub fn inquiry_event(property: &PropertyInfo, now: DateTime<Utc>) -> Event {
    let mut t = thread("airbnb", now, true);
    t.booking_id = None;
    let mut ev = base(
        EventType::InquiryReceived,
        ids::inquiry(&t.id, "sample-inquiry"),
        now,
        property,
    );
    ev.thread = Some(t);
    ev.message = Some(MessageInfo {
        id: "sample-inquiry".into(),
        text: "inquiry".into(),
        sender: crate::events::Sender::System,
        attachments: Vec::new(),
        inserted_at: now,
        language: None,
    });
    ev.inquiry = Some(sample_inquiry(now));
    ev
}

fn sample_inquiry(now: DateTime<Utc>) -> InquiryInfo {
    InquiryInfo {
        status: "active".into(),
        non_response_at: Some(now + TimeDelta::hours(20)),
        checkin_date: Some("2024-09-12".into()),
        checkout_date: Some("2024-09-15".into()),
        nights: Some(3),
        number_of_guests: Some(2),
        guest_name: Some("Ana".into()),
        listing_name: Some("Casa Azul, sunny flat in Baixa".into()),
        expected_payout_amount_accurate: Some("312.50".into()),
        currency: Some("EUR".into()),
    }
}

/// A follow-up timer firing (thread snapshot re-read at due time).
pub fn follow_up_event(
    property: &PropertyInfo,
    provider: &str,
    name: &str,
    data: Map<String, Value>,
    awaiting_reply: bool,
    now: DateTime<Utc>,
) -> Event {
    let t = thread(provider, now, awaiting_reply);
    let mut ev = base(
        EventType::FollowUpDue,
        ids::follow_up(&t.id, name, now),
        now,
        property,
    );
    if provider == "airbnb" && name.contains("inquiry") {
        ev.inquiry = Some(sample_inquiry(now - TimeDelta::hours(18)));
    }
    ev.booking = booking_of(&t, now);
    ev.thread = Some(t);
    ev.follow_up = Some(FollowUpInfo {
        name: name.into(),
        due_at: now,
        data,
        armed_stay: None,
    });
    ev
}

/// The daily tick for a thread whose last message was `idle_days` ago.
pub fn tick_event(property: &PropertyInfo, idle_days: i64, now: DateTime<Utc>) -> Event {
    let mut t = thread("booking_com", now - TimeDelta::days(idle_days), false);
    t.id = format!("sample-thread-idle-{idle_days}");
    let mut ev = base(
        EventType::ScheduleTick,
        ids::schedule_tick("daily", now, &t.id),
        now,
        property,
    );
    ev.thread = Some(t);
    ev.schedule = Some(ScheduleInfo {
        name: "daily".into(),
    });
    ev
}

/// Every built-in sample event for `property` at `now`, with a label for reports.
pub fn sample_events(property: &PropertyInfo, now: DateTime<Utc>) -> Vec<(String, Event)> {
    let mut out = Vec::new();
    for provider in ["booking_com", "airbnb"] {
        for text in GUEST_TEXTS {
            out.push((
                format!("{provider} guest message {text:?}"),
                message_event(property, provider, "guest", text, now),
            ));
        }
        out.push((
            format!("{provider} staff reply"),
            message_event(property, provider, "property", "Sure, see you soon!", now),
        ));
    }
    out.push(("airbnb inquiry".into(), inquiry_event(property, now)));
    out.extend(booking_samples(property, now));
    for days in [1, 30] {
        out.push((
            format!("schedule.tick, thread idle {days} days"),
            tick_event(property, days, now),
        ));
    }
    out
}
