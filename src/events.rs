//! The event contract between the producers (poller, scheduler) and the worker.
//!
//! Owns the event JSON of DESIGN.md ("Events"), typed: the [`EventType`], the thread's
//! [`Provider`] and the message's [`Sender`] (the Channex model's enums, written in the
//! contract's spelling), the subject layout and the deterministic event ids used as
//! `Nats-Msg-Id`. It must not talk to NATS or Channex: it is plain data, shared by the
//! poller, the scheduler, the rules, `rules test` fixtures and `replay`. It uses only
//! `base` and the Channex models.
//!
//! Provider and sender strings are read exactly: `booking_com`, `airbnb`; `guest`,
//! `property`, `system`. Anything else (a provider Channex added, an event written by hand)
//! is carried as `Other(string)` and written back unchanged, so the JSON rules see and the
//! JSON stored on the stream are byte-identical to what came in.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

pub use crate::channex::model::{Provider, Sender};

/// The kinds of events on `CONCIERGE_EVENTS`. Each is two subject tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "thread.new_message")]
    ThreadNewMessage,
    #[serde(rename = "inquiry.received")]
    InquiryReceived,
    #[serde(rename = "follow_up.due")]
    FollowUpDue,
    #[serde(rename = "schedule.tick")]
    ScheduleTick,
    #[serde(rename = "booking.changed")]
    BookingChanged,
}

impl EventType {
    pub const ALL: [EventType; 5] = [
        EventType::ThreadNewMessage,
        EventType::InquiryReceived,
        EventType::FollowUpDue,
        EventType::ScheduleTick,
        EventType::BookingChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::ThreadNewMessage => "thread.new_message",
            EventType::InquiryReceived => "inquiry.received",
            EventType::FollowUpDue => "follow_up.due",
            EventType::ScheduleTick => "schedule.tick",
            EventType::BookingChanged => "booking.changed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, exactly the JSON of the contract. Blocks that do not apply are `None` and are
/// left out of the JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub occurred_at: DateTime<Utc>,
    pub property: PropertyInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<ThreadSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<MessageInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inquiry: Option<InquiryInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follow_up: Option<FollowUpInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleInfo>,
    /// The booking of the thread (or of a `booking.changed`), as last read from Channex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booking: Option<Booking>,
    /// `booking.changed` only: the dates and status before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booking_change: Option<BookingChange>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PropertyInfo {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// IANA zone name, e.g. `Europe/Lisbon`; `UTC` when the config says nothing.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default)]
    pub vars: Map<String, Value>,
}

pub fn default_timezone() -> String {
    "UTC".to_string()
}

/// The thread as it was when the event was produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadSnapshot {
    pub id: String,
    #[serde(default)]
    pub title: String,
    /// `booking_com`, `airbnb` or `other` (see [`provider_str`]).
    #[serde(with = "provider_json")]
    pub provider: Provider,
    #[serde(default)]
    pub is_closed: bool,
    #[serde(default)]
    pub message_count: u64,
    #[serde(default)]
    pub booking_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_message_received_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_guest_message_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_property_message_at: Option<DateTime<Utc>>,
    /// The newest guest message is newer than the newest property message.
    #[serde(default)]
    pub awaiting_reply: bool,
    /// While `awaiting_reply`: when the oldest guest message not answered yet arrived (the
    /// first guest message after the newest property message), so a rule can time a
    /// warning from the start of the wait, however many messages the guest added since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_reply_since: Option<DateTime<Utc>>,
    /// The guest's language, lower-case ISO 639-1 (`de`, `pt`): the booking's when known,
    /// else detected from the guest's messages ([`crate::base::language`]); absent when
    /// unknown (templates then use the default file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl ThreadSnapshot {
    /// `awaiting_reply` as the contract defines it.
    pub fn compute_awaiting_reply(
        last_guest: Option<DateTime<Utc>>,
        last_property: Option<DateTime<Utc>>,
    ) -> bool {
        match (last_guest, last_property) {
            (Some(g), Some(p)) => g > p,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// The contract's spelling of a provider: `booking_com`, `airbnb`, or an `Other` string as
/// it came (the poller writes `other` for every provider it does not know, see
/// [`event_provider`]).
pub fn provider_str(provider: &Provider) -> &str {
    match provider {
        Provider::BookingCom => "booking_com",
        Provider::Airbnb => "airbnb",
        Provider::Other(s) => s,
    }
}

/// The provider an event carries for a Channex thread: providers Channex added since
/// (Expedia, ...) all read `other`, as the contract says.
pub fn event_provider(channex: &Provider) -> Provider {
    match channex {
        Provider::Other(_) => Provider::Other("other".to_string()),
        known => known.clone(),
    }
}

/// A provider in the contract's spelling, read exactly: `booking_com`, `airbnb`, else
/// `Other` as given (the lenient reading of Channex's spellings is [`Provider::parse`]).
pub fn contract_provider(s: &str) -> Provider {
    match s {
        "booking_com" => Provider::BookingCom,
        "airbnb" => Provider::Airbnb,
        _ => Provider::Other(s.to_string()),
    }
}

/// A sender in the contract's spelling, read exactly: `guest`, `property`, `system`, else
/// `Other` as given (`Guest` stays `Other("Guest")`).
pub fn contract_sender(s: &str) -> Sender {
    match s {
        "guest" => Sender::Guest,
        "property" => Sender::Property,
        "system" => Sender::System,
        _ => Sender::Other(s.to_string()),
    }
}

/// `thread.provider` as a string, read exactly (no normalisation: that is Channex's side).
mod provider_json {
    use super::*;

    pub fn serialize<S: Serializer>(p: &Provider, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(provider_str(p))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Provider, D::Error> {
        String::deserialize(d).map(|raw| contract_provider(&raw))
    }
}

/// `message.sender` as a string, read exactly (`Guest` stays `Other("Guest")`).
mod sender_json {
    use super::*;

    pub fn serialize<S: Serializer>(sender: &Sender, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(sender.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Sender, D::Error> {
        String::deserialize(d).map(|raw| contract_sender(&raw))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageInfo {
    pub id: String,
    #[serde(default)]
    pub text: String,
    /// `guest`, `property` or `system` (see [`Sender::as_str`]).
    #[serde(with = "sender_json")]
    pub sender: Sender,
    #[serde(default)]
    pub attachments: Vec<String>,
    pub inserted_at: DateTime<Utc>,
    /// The language of this message (ISO 639-1) as resolved for the thread at this message:
    /// a short "ok" carries the thread's language so far. Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InquiryInfo {
    #[serde(default)]
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_response_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkin_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkout_date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nights: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_of_guests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listing_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_payout_amount_accurate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FollowUpInfo {
    pub name: String,
    pub due_at: DateTime<Utc>,
    #[serde(default)]
    pub data: Map<String, Value>,
    /// The booking's dates when the timer was armed (a booking's timer only): a stay that
    /// moved since is not messaged at the old time (see [`crate::plan::stale_stay`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub armed_stay: Option<StayDates>,
}

/// A stay's dates, as a booking timer remembers them from when it was armed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StayDates {
    pub arrival_date: String,
    pub departure_date: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScheduleInfo {
    pub name: String,
}

/// A booking's status as events spell it: `new`, `modified`, `cancelled`; any other value
/// Channex sends is carried as `Other` and written back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum BookingStatus {
    #[default]
    New,
    Modified,
    Cancelled,
    Other(String),
}

impl BookingStatus {
    pub fn parse(s: &str) -> BookingStatus {
        match s {
            "new" => BookingStatus::New,
            "modified" => BookingStatus::Modified,
            "cancelled" => BookingStatus::Cancelled,
            other => BookingStatus::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            BookingStatus::New => "new",
            BookingStatus::Modified => "modified",
            BookingStatus::Cancelled => "cancelled",
            BookingStatus::Other(s) => s,
        }
    }
}

impl Serialize for BookingStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for BookingStatus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|raw| BookingStatus::parse(&raw))
    }
}

/// The `booking` block: a Channex booking as rules and templates see it. Dates are
/// `YYYY-MM-DD` strings (the property's local calendar dates, as Channex gives them);
/// `language` is a lower-case ISO 639-1 code (`de`) or absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    pub id: String,
    pub status: BookingStatus,
    pub arrival_date: String,
    pub departure_date: String,
    #[serde(default)]
    pub nights: u32,
    #[serde(default)]
    pub ota_name: String,
    #[serde(default)]
    pub guest_name: String,
    #[serde(default)]
    pub adults: u32,
    #[serde(default)]
    pub children: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl Booking {
    /// The block of a Channex booking: status in the contract's spelling, nights from the
    /// dates, the customer's language normalised (see [`normalise_language`]).
    pub fn from_channex(b: &crate::channex::BookingRecord) -> Booking {
        Booking {
            id: b.id.clone(),
            status: BookingStatus::parse(&b.status.trim().to_ascii_lowercase()),
            arrival_date: b.arrival_date.clone(),
            departure_date: b.departure_date.clone(),
            nights: b.nights(),
            ota_name: b.ota_name.clone(),
            guest_name: b.guest_name.clone(),
            adults: b.adults,
            children: b.children,
            language: b.language.as_deref().and_then(normalise_language),
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.status == BookingStatus::Cancelled
    }

    /// The stay's dates (what a booking timer remembers when armed).
    pub fn stay_dates(&self) -> StayDates {
        StayDates {
            arrival_date: self.arrival_date.clone(),
            departure_date: self.departure_date.clone(),
        }
    }

    /// The dates and status a `booking.changed` compares.
    pub fn stay(&self) -> BookingStay {
        BookingStay {
            arrival_date: self.arrival_date.clone(),
            departure_date: self.departure_date.clone(),
            status: self.status.clone(),
        }
    }
}

/// What `booking.changed` compares: the stay's dates and the booking's status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingStay {
    pub arrival_date: String,
    pub departure_date: String,
    pub status: BookingStatus,
}

/// `event.booking_change`: `before` is absent (`()` in rules) for a booking seen for the
/// first time after the poller's baseline (a new booking).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookingChange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<BookingStay>,
    pub after: BookingStay,
}

/// A Channex language value (`de`, `DE`, `de-DE`, `pt_BR`) as a lower-case ISO 639-1 code;
/// `None` for anything else (empty, `german`, digits).
pub fn normalise_language(raw: &str) -> Option<String> {
    let primary = raw.trim().split(['-', '_']).next().unwrap_or_default();
    (primary.len() == 2 && primary.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| primary.to_ascii_lowercase())
}

impl Event {
    /// `<prefix>.events.<type>.<property_id>`.
    pub fn subject(&self, prefix: &str) -> String {
        event_subject(prefix, self.event_type, &self.property.id)
    }

    pub fn thread_id(&self) -> Option<&str> {
        self.thread.as_ref().map(|t| t.id.as_str())
    }

    /// The booking this event is about: its `booking` block, else the thread's `booking_id`.
    pub fn booking_id(&self) -> Option<&str> {
        self.booking
            .as_ref()
            .map(|b| b.id.as_str())
            .or_else(|| self.thread.as_ref().and_then(|t| t.booking_id.as_deref()))
    }
}

pub fn event_subject(prefix: &str, event_type: EventType, property_id: &str) -> String {
    format!(
        "{prefix}.events.{}.{}",
        event_type.as_str(),
        subject_token(property_id)
    )
}

/// NATS subject tokens may not contain `.`, `*`, `>` or whitespace; Channex ids are UUIDs,
/// but ids from config are user-typed, so sanitise rather than trust.
pub fn subject_token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".to_string();
    }
    raw.chars()
        .map(|c| match c {
            '.' | '*' | '>' => '_',
            c if c.is_whitespace() => '_',
            c => c,
        })
        .collect()
}

/// Deterministic ids: same input, same id, so a re-publish is deduplicated by JetStream.
pub mod ids {
    use chrono::{DateTime, Utc};

    pub fn new_message(thread_id: &str, message_id: &str) -> String {
        format!("thread.new_message:{thread_id}:{message_id}")
    }

    pub fn inquiry(thread_id: &str, inquiry_message_id: &str) -> String {
        format!("inquiry.received:{thread_id}:{inquiry_message_id}")
    }

    pub fn follow_up(thread_id: &str, name: &str, due_at: DateTime<Utc>) -> String {
        format!(
            "follow_up.due:{thread_id}:{name}:{}",
            due_at.timestamp_millis()
        )
    }

    /// One id per booking revision (or `updated_at` when Channex gives no revision), so a
    /// change seen twice (restart, two cycles) is one event.
    pub fn booking_changed(booking_id: &str, revision: &str) -> String {
        format!("booking.changed:{booking_id}:{revision}")
    }

    pub fn schedule_tick(schedule: &str, tick_at: DateTime<Utc>, thread_id: &str) -> String {
        format!(
            "schedule.tick:{schedule}:{}:{thread_id}",
            tick_at.timestamp()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_json_omits_absent_blocks_and_round_trips() {
        let ev = Event {
            id: ids::new_message("t1", "m1"),
            event_type: EventType::ThreadNewMessage,
            occurred_at: "2021-07-28T04:25:15Z".parse().unwrap(),
            property: PropertyInfo {
                id: "p1".into(),
                name: "Casa".into(),
                timezone: "Europe/Lisbon".into(),
                vars: Map::new(),
            },
            thread: Some(ThreadSnapshot {
                id: "t1".into(),
                provider: Provider::BookingCom,
                ..Default::default()
            }),
            message: None,
            inquiry: None,
            follow_up: None,
            schedule: None,
            booking: None,
            booking_change: None,
        };
        let json = serde_json::to_value(&ev).unwrap();
        assert_eq!(json["type"], "thread.new_message");
        assert!(json.get("message").is_none());
        assert!(json.get("inquiry").is_none());
        assert_eq!(json["thread"]["booking_id"], Value::Null);
        let back: Event = serde_json::from_value(json).unwrap();
        assert_eq!(back, ev);
        assert_eq!(
            ev.subject("concierge"),
            "concierge.events.thread.new_message.p1"
        );
    }

    #[test]
    fn provider_and_sender_are_typed_and_written_back_exactly() {
        let json = serde_json::json!({
            "id": "e1", "type": "thread.new_message", "occurred_at": "2024-07-01T03:00:00Z",
            "property": {"id": "p1", "name": "", "timezone": "UTC", "vars": {}},
            "thread": {"id": "t1", "title": "", "provider": "airbnb", "is_closed": false,
                       "message_count": 0, "booking_id": null, "awaiting_reply": false},
            "message": {"id": "m1", "text": "hi", "sender": "guest", "attachments": [],
                        "inserted_at": "2024-07-01T03:00:00Z"}
        });
        let ev: Event = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(ev.thread.as_ref().unwrap().provider, Provider::Airbnb);
        assert_eq!(ev.message.as_ref().unwrap().sender, Sender::Guest);
        assert_eq!(serde_json::to_value(&ev).unwrap(), json);

        // Unknown (or differently spelt) values are carried, never normalised or refused.
        let mut odd = json.clone();
        odd["thread"]["provider"] = "Expedia".into();
        odd["message"]["sender"] = "Guest".into();
        let ev: Event = serde_json::from_value(odd.clone()).unwrap();
        assert_eq!(
            ev.thread.as_ref().unwrap().provider,
            Provider::Other("Expedia".into())
        );
        assert_eq!(
            ev.message.as_ref().unwrap().sender,
            Sender::Other("Guest".into())
        );
        assert_eq!(serde_json::to_value(&ev).unwrap(), odd);
    }

    #[test]
    fn channex_providers_map_to_the_contract() {
        assert_eq!(
            event_provider(&Provider::parse("Booking.com")),
            Provider::BookingCom
        );
        assert_eq!(event_provider(&Provider::parse("AirBNB")), Provider::Airbnb);
        let other = event_provider(&Provider::parse("Expedia"));
        assert_eq!(provider_str(&other), "other");
    }

    #[test]
    fn awaiting_reply_follows_the_contract() {
        let t = |s: &str| Some(s.parse::<DateTime<Utc>>().unwrap());
        assert!(ThreadSnapshot::compute_awaiting_reply(
            t("2024-01-02T00:00:00Z"),
            t("2024-01-01T00:00:00Z")
        ));
        assert!(!ThreadSnapshot::compute_awaiting_reply(
            t("2024-01-01T00:00:00Z"),
            t("2024-01-02T00:00:00Z")
        ));
        assert!(ThreadSnapshot::compute_awaiting_reply(
            t("2024-01-01T00:00:00Z"),
            None
        ));
        assert!(!ThreadSnapshot::compute_awaiting_reply(None, None));
    }

    #[test]
    fn the_booking_block_and_change_round_trip_and_languages_normalise() {
        let json = serde_json::json!({
            "id": "booking.changed:b1:r2", "type": "booking.changed",
            "occurred_at": "2024-07-01T03:00:00Z",
            "property": {"id": "p1", "name": "", "timezone": "UTC", "vars": {}},
            "booking": {"id": "b1", "status": "modified", "arrival_date": "2024-08-02",
                        "departure_date": "2024-08-05", "nights": 3, "ota_name": "Airbnb",
                        "guest_name": "Anna", "adults": 2, "children": 0, "language": "de"},
            "booking_change": {
                "before": {"arrival_date": "2024-08-01", "departure_date": "2024-08-04",
                           "status": "new"},
                "after": {"arrival_date": "2024-08-02", "departure_date": "2024-08-05",
                          "status": "modified"}}
        });
        let ev: Event = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(ev.event_type, EventType::BookingChanged);
        assert_eq!(ev.booking_id(), Some("b1"));
        let b = ev.booking.as_ref().unwrap();
        assert_eq!(b.status, BookingStatus::Modified);
        assert_eq!(serde_json::to_value(&ev).unwrap(), json);
        assert_eq!(
            BookingStatus::parse("tentative"),
            BookingStatus::Other("tentative".into())
        );
        assert_eq!(normalise_language("de-DE").as_deref(), Some("de"));
        assert_eq!(normalise_language(" PT_br").as_deref(), Some("pt"));
        assert_eq!(normalise_language("german"), None);
        assert_eq!(normalise_language(""), None);
        assert_eq!(ev.subject("c"), "c.events.booking.changed.p1");
    }

    #[test]
    fn subject_tokens_are_sanitised() {
        assert_eq!(subject_token("a.b*c>d e"), "a_b_c_d_e");
        assert_eq!(subject_token(""), "_");
    }
}
