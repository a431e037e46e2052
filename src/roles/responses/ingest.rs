//! What one event or one audit record adds to a thread's response record, pure.
//!
//! Owns the reading of the two sources: an event of a message (`thread.new_message`,
//! `inquiry.received`) says who wrote when and the thread's channel and message count; an
//! audit record says which property messages concierge sent (a `reply` executed, with its
//! Channex id, or a message event skipped as `own_message`), which were approved drafts
//! ([`draft_approved_message`]), and when concierge marked the thread "no reply needed".
//! Must not: do I/O, or judge who answered what (that is [`super::scores`]).

use crate::events::{Event, EventType, Sender};
use crate::store::audit::{ActionKind, AuditRecord, Outcome, Reason};
use crate::store::responses::{Channel, Seen, ThreadRecord};

/// One fact about a thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    Guest(Seen),
    Property(Seen),
    System(String),
    /// The Airbnb inquiry's system message arrived (Unix µs).
    Inquiry(i64),
    /// A property message concierge sent by itself.
    Concierge(String),
    /// A property message sent as a draft a person approved.
    Draft(String),
    /// Concierge marked the thread "no reply needed" (Unix µs).
    NoReply(i64),
}

/// The facts one source gives about one thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub property_id: String,
    pub thread_id: String,
    pub channel: Option<Channel>,
    pub message_count: Option<u64>,
    pub facts: Vec<Fact>,
}

/// The facts of a message event; `None` for every other event.
pub fn from_event(event: &Event) -> Option<Facts> {
    if !matches!(
        event.event_type,
        EventType::ThreadNewMessage | EventType::InquiryReceived
    ) {
        return None;
    }
    let thread = event.thread.as_ref()?;
    let message = event.message.as_ref()?;
    let seen = Seen {
        id: message.id.clone(),
        at: message.inserted_at.timestamp_micros(),
    };
    let mut facts = vec![match message.sender {
        Sender::Guest => Fact::Guest(seen),
        Sender::Property => Fact::Property(seen),
        Sender::System | Sender::Other(_) => Fact::System(message.id.clone()),
    }];
    if event.inquiry.is_some() && thread.booking_id.is_none() {
        facts.push(Fact::Inquiry(message.inserted_at.timestamp_micros()));
    }
    Some(Facts {
        property_id: event.property.id.clone(),
        thread_id: thread.id.clone(),
        channel: Some(Channel::of(&thread.provider)),
        message_count: Some(thread.message_count),
        facts,
    })
}

/// The message id of a `thread.new_message` event id (`thread.new_message:<thread>:<message>`;
/// Channex ids have no `:`).
fn message_of_event_id(event_id: &str) -> Option<&str> {
    let rest = event_id.strip_prefix("thread.new_message:")?;
    rest.split_once(':').map(|(_, message)| message)
}

/// The Channex message id of a property message sent as a draft a person approved, when
/// `record` says so. **Connection point for drafts**: the drafts work adds the audit
/// action/outcome of an approved draft's send; until it lands no record is one, and such
/// a send counts as concierge's (its message is concierge's own).
pub fn draft_approved_message(record: &AuditRecord) -> Option<&str> {
    let _ = record;
    None
}

/// The facts of an audit record; `None` for records that say nothing about answers.
pub fn from_audit(record: &AuditRecord) -> Option<Facts> {
    let thread_id = record.thread_id.clone()?;
    let property_id = record.property_id.clone()?;
    let fact = if let Some(id) = draft_approved_message(record) {
        Fact::Draft(id.to_string())
    } else {
        match (&record.action, record.outcome, &record.reason) {
            (Some(ActionKind::Reply), Outcome::Executed, _) => {
                Fact::Concierge(record.channex_message_id.clone()?)
            }
            (_, Outcome::Skipped, Some(Reason::OwnMessage)) => {
                Fact::Concierge(message_of_event_id(record.event_id.as_deref()?)?.to_string())
            }
            (Some(ActionKind::NoReplyNeeded), Outcome::Executed, _) => {
                Fact::NoReply(record.at.timestamp_micros())
            }
            _ => return None,
        }
    };
    Some(Facts {
        property_id,
        thread_id,
        channel: None,
        message_count: None,
        facts: vec![fact],
    })
}

fn add_seen(list: &mut Vec<Seen>, seen: &Seen) -> bool {
    if list.iter().any(|s| s.id == seen.id) {
        return false;
    }
    list.push(seen.clone());
    true
}

fn add_id(list: &mut Vec<String>, id: &str) -> bool {
    if list.iter().any(|s| s == id) {
        return false;
    }
    list.push(id.to_string());
    true
}

/// Folds `facts` into `record`; whether anything changed (the same facts twice: no).
pub fn apply(record: &mut ThreadRecord, facts: &Facts) -> bool {
    let mut changed = false;
    if let Some(channel) = facts.channel {
        if record.channel != Some(channel) {
            record.channel = Some(channel);
            changed = true;
        }
    }
    if let Some(count) = facts.message_count.filter(|c| *c > record.max_count) {
        record.max_count = count;
        changed = true;
    }
    for fact in &facts.facts {
        changed |= match fact {
            Fact::Guest(s) => add_seen(&mut record.guest, s),
            Fact::Property(s) => add_seen(&mut record.property, s),
            Fact::System(id) => add_id(&mut record.system, id),
            Fact::Concierge(id) => add_id(&mut record.concierge, id),
            Fact::Draft(id) => add_id(&mut record.drafts, id),
            Fact::Inquiry(at) => {
                let earlier = record.inquiry_at.is_none_or(|known| *at < known);
                if earlier {
                    record.inquiry_at = Some(*at);
                }
                earlier
            }
            Fact::NoReply(at) => {
                let new = !record.no_reply.contains(at);
                if new {
                    record.no_reply.push(*at);
                }
                new
            }
        };
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_event(sender: &str, message: &str, inquiry: bool) -> Event {
        let mut json = serde_json::json!({
            "id": format!("thread.new_message:t1:{message}"), "type": "thread.new_message",
            "occurred_at": "2026-11-01T10:00:00Z",
            "property": {"id": "p1", "name": "", "timezone": "UTC", "vars": {}},
            "thread": {"id": "t1", "title": "", "provider": "airbnb", "is_closed": false,
                       "message_count": 2, "booking_id": null, "awaiting_reply": true},
            "message": {"id": message, "text": "hi", "sender": sender, "attachments": [],
                        "inserted_at": "2026-11-01T10:00:00Z"}
        });
        if inquiry {
            json["inquiry"] = serde_json::json!({"status": "active"});
        }
        serde_json::from_value(json).expect("event")
    }

    #[test]
    fn events_give_senders_channel_count_and_the_inquiry() {
        let mut r = ThreadRecord::new("p1", "t1");
        let guest = from_event(&message_event("guest", "m1", false)).unwrap();
        assert!(apply(&mut r, &guest));
        assert!(
            !apply(&mut r, &guest),
            "the same event twice changes nothing"
        );
        let inquiry = from_event(&message_event("system", "m0", true)).unwrap();
        assert!(apply(&mut r, &inquiry));
        assert_eq!(r.channel, Some(Channel::Airbnb));
        assert_eq!(r.max_count, 2);
        assert_eq!(r.guest.len(), 1);
        assert_eq!(r.system, vec!["m0".to_string()]);
        assert!(r.inquiry_at.is_some());
    }

    #[test]
    fn audit_records_say_what_concierge_sent_and_marked() {
        let record = |json: serde_json::Value| -> AuditRecord {
            let mut base = serde_json::json!({
                "id": "x", "at": "2026-11-01T10:05:00Z", "event_id": "thread.new_message:t1:m9",
                "event_type": "thread.new_message", "rule": "10_faq", "rule_version": "v",
                "action": "reply", "thread_id": "t1", "property_id": "p1",
                "outcome": "executed", "reason": "sent", "text": null,
                "channex_message_id": "m2", "error": null, "attempts": 1, "duration_ms": 1
            });
            for (k, v) in json.as_object().unwrap() {
                base[k] = v.clone();
            }
            serde_json::from_value(base).expect("record")
        };
        let sent = from_audit(&record(serde_json::json!({}))).unwrap();
        assert_eq!(sent.facts, vec![Fact::Concierge("m2".into())]);
        let own = from_audit(&record(serde_json::json!({
            "action": "event", "outcome": "skipped", "reason": "own_message", "channex_message_id": null
        })))
        .unwrap();
        assert_eq!(own.facts, vec![Fact::Concierge("m9".into())]);
        let marked = from_audit(&record(serde_json::json!({
            "action": "no_reply_needed", "reason": "marked", "channex_message_id": null
        })))
        .unwrap();
        assert!(matches!(marked.facts[0], Fact::NoReply(_)));
        let dry = record(serde_json::json!({"outcome": "dry_run", "reason": "dry_run"}));
        assert_eq!(from_audit(&dry), None);
    }
}
