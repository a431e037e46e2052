//! The demo's timeline: every event, audit record and staff alert printed as it lands
//! (one line per schedule tick), and kept for the expectations and the summary.
//! Must not change anything: it only listens on the demo's subjects.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use serde_json::Value;

use crate::events::{Event, EventType};
use crate::sim::Sim;
use crate::store::audit::{ActionKind, AuditRecord, Outcome, Reason};

/// What the demo saw, in arrival order.
#[derive(Default)]
pub struct Timeline {
    pub records: Vec<AuditRecord>,
    pub events: Vec<Event>,
}

/// Seconds since the demo started, printed before each line.
#[derive(Clone, Copy)]
pub struct Stamp(pub Instant);

impl Stamp {
    fn stamp(&self) -> String {
        format!("+{:>5.1}s", self.0.elapsed().as_secs_f64())
    }

    pub fn elapsed_secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}

pub fn say(stamp: &Stamp, line: impl AsRef<str>) {
    println!("{} {}", stamp.stamp(), line.as_ref());
}

pub fn one_line(s: &str, n: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > n {
        format!("{}…", flat.chars().take(n).collect::<String>())
    } else {
        flat
    }
}

/// A message as one line: its text, or what it carries when it is only attachments.
pub fn message_line(text: &str, attachments: usize, n: usize) -> String {
    match (text.trim().is_empty(), attachments) {
        (true, 1..) => format!("📎 {attachments} attachment(s)"),
        _ => one_line(text, n),
    }
}

/// Prints and records whatever arrives on `<prefix>.>` until aborted.
pub fn spawn_printer(
    mut subscription: async_nats::Subscriber,
    prefix: String,
    stamp: Stamp,
    sim: Sim,
    timeline: Arc<Mutex<Timeline>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_tick: Option<String> = None;
        while let Some(msg) = subscription.next().await {
            let subject = msg.subject.as_str();
            if subject.starts_with(&format!("{prefix}.events.")) {
                on_event(&msg.payload, &stamp, &sim, &timeline, &mut last_tick);
            } else if subject.starts_with(&format!("{prefix}.audit.")) {
                on_record(&msg.payload, &stamp, &sim, &timeline);
            } else if subject.starts_with(&format!("{prefix}.alerts.")) {
                let text = serde_json::from_slice::<Value>(&msg.payload)
                    .ok()
                    .and_then(|v| v.get("text").and_then(|t| t.as_str()).map(str::to_string))
                    .unwrap_or_default();
                say(
                    &stamp,
                    format!("   🔔 STAFF ALERT: {}", one_line(&text, 140)),
                );
            }
        }
    })
}

fn on_event(
    payload: &[u8],
    stamp: &Stamp,
    sim: &Sim,
    timeline: &Mutex<Timeline>,
    last_tick: &mut Option<String>,
) {
    let Ok(ev) = serde_json::from_slice::<Event>(payload) else {
        return;
    };
    // One line per tick, not one per thread.
    let tick_key = ev.id.rsplit_once(':').map(|(k, _)| k.to_string());
    let repeated_tick = ev.event_type == EventType::ScheduleTick && tick_key == *last_tick;
    if ev.event_type == EventType::ScheduleTick {
        *last_tick = tick_key;
    }
    if !repeated_tick {
        say(stamp, describe_event(&ev, sim));
    }
    if let Ok(mut t) = timeline.lock() {
        t.events.push(ev);
    }
}

fn on_record(payload: &[u8], stamp: &Stamp, sim: &Sim, timeline: &Mutex<Timeline>) {
    let Ok(r) = serde_json::from_slice::<AuditRecord>(payload) else {
        return;
    };
    if r.reason != Some(Reason::OwnMessage) {
        let title = r
            .thread_id
            .as_deref()
            .and_then(|t| sim.thread(t))
            .map(|t| t.title)
            .unwrap_or_default();
        say(stamp, describe_record(&r, &title));
    }
    if let Ok(mut t) = timeline.lock() {
        t.records.push(r);
    }
}

fn describe_event(ev: &Event, sim: &Sim) -> String {
    let who = ev
        .thread
        .as_ref()
        .map(|t| format!("{} ({})", t.title, crate::events::provider_str(&t.provider)))
        .unwrap_or_default();
    match (&ev.message, ev.event_type) {
        (Some(m), EventType::ThreadNewMessage) => {
            let sender = if m.sender == crate::events::Sender::Property {
                if sim.sent_by_api().iter().any(|(_, text)| text == &m.text) {
                    "concierge"
                } else {
                    "staff"
                }
            } else {
                m.sender.as_str()
            };
            let line = message_line(&m.text, m.attachments.len(), 90);
            format!("📨 {who} · {sender}: \"{line}\"")
        }
        (_, EventType::InquiryReceived) => {
            let i = ev.inquiry.clone().unwrap_or_default();
            format!(
                "📨 {who} · inquiry from {} for {}–{} (respond by {})",
                i.guest_name.unwrap_or_default(),
                i.checkin_date.unwrap_or_default(),
                i.checkout_date.unwrap_or_default(),
                i.non_response_at
                    .map(|t| t.format("%H:%M:%S UTC").to_string())
                    .unwrap_or_default()
            )
        }
        (_, EventType::FollowUpDue) => format!(
            "⏰ {who} · follow-up \"{}\" is due",
            ev.follow_up.as_ref().map(|f| f.name.as_str()).unwrap_or("")
        ),
        (_, EventType::ScheduleTick) => format!(
            "🕘 schedule \"{}\" tick: one event per open thread",
            ev.schedule.as_ref().map(|s| s.name.as_str()).unwrap_or("")
        ),
        (_, EventType::BookingChanged) => {
            let b = ev.booking.clone().unwrap_or_default();
            let change = ev.booking_change.as_ref();
            let before = change
                .and_then(|c| c.before.as_ref())
                .map(|s| format!("{} → {}, ", s.arrival_date, s.departure_date))
                .unwrap_or_else(|| "new, ".into());
            format!(
                "📅 booking of {} ({}) changed: {before}now {} → {} ({})",
                b.guest_name,
                b.ota_name,
                b.arrival_date,
                b.departure_date,
                b.status.as_str()
            )
        }
        (_, other) => format!("📨 {who} · {other}"),
    }
}

fn describe_record(r: &AuditRecord, thread_title: &str) -> String {
    let what = match (&r.action, &r.template) {
        (Some(a), Some(t)) => format!("{a}({t})"),
        (Some(a), None) => a.to_string(),
        _ => "-".into(),
    };
    let mut line = format!(
        "   ↳ {:<14} {:<18} {:<26} → {}",
        one_line(thread_title, 14),
        r.rule.as_deref().unwrap_or("-"),
        what,
        r.outcome
    );
    if let Some(reason) = &r.reason {
        line.push_str(&format!(" ({reason})"));
    }
    if let Some(text) = r
        .text
        .as_deref()
        .filter(|_| r.action == Some(ActionKind::Reply))
    {
        line.push_str(&format!(": \"{}\"", one_line(text, 80)));
    }
    if let Some(err) = r
        .error
        .as_deref()
        .filter(|_| r.outcome == Outcome::Failed || r.outcome == Outcome::RuleError)
    {
        line.push_str(&format!(" — {}", one_line(err, 80)));
    }
    line
}
