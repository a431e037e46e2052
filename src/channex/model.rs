//! Domain types of the Channex Messages API (threads, messages, inquiries) and their
//! conversion from the wire models.
//!
//! Owns: normalisation (provider spelling, sender enum, absolute attachment URLs,
//! timestamps as `DateTime<Utc>`), pagination results (`Page`, `Listing`) and the
//! thread list query.
//! Must not: do I/O or know about events, NATS or rules.

use chrono::{DateTime, Utc};
use reqwest::Url;

use super::wire;

/// The OTA behind a thread. Parsed case-insensitively, ignoring punctuation:
/// `BookingCom`, `Booking.com`, `booking_com` → `BookingCom`; `Airbnb`, `AirBNB` → `Airbnb`;
/// anything else flows through as `Other` (never an error).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Provider {
    BookingCom,
    Airbnb,
    Other(String),
}

impl Provider {
    pub fn parse(s: &str) -> Provider {
        let norm: String = s
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect();
        match norm.as_str() {
            "bookingcom" | "booking" => Provider::BookingCom,
            "airbnb" => Provider::Airbnb,
            _ => Provider::Other(s.to_string()),
        }
    }

    /// `booking_com` | `airbnb` | `other` (the event contract's spelling).
    pub fn as_event_str(&self) -> &'static str {
        match self {
            Provider::BookingCom => "booking_com",
            Provider::Airbnb => "airbnb",
            Provider::Other(_) => "other",
        }
    }

    /// Whether Channex supports `no_reply_needed` for this provider (Booking.com only).
    pub fn supports_no_reply_needed(&self) -> bool {
        matches!(self, Provider::BookingCom)
    }
}

/// The empty spelling, as a blank field reads (not a provider Channex sends).
impl Default for Provider {
    fn default() -> Self {
        Provider::Other(String::new())
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_event_str())
    }
}

/// Direction of a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sender {
    Guest,
    Property,
    System,
    Other(String),
}

impl Sender {
    pub fn parse(s: &str) -> Sender {
        match s.trim().to_ascii_lowercase().as_str() {
            "guest" => Sender::Guest,
            "property" => Sender::Property,
            "system" => Sender::System,
            _ => Sender::Other(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Sender::Guest => "guest",
            Sender::Property => "property",
            Sender::System => "system",
            Sender::Other(s) => s,
        }
    }
}

/// The empty spelling, as a blank field reads (not a sender Channex sends).
impl Default for Sender {
    fn default() -> Self {
        Sender::Other(String::new())
    }
}

impl std::fmt::Display for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `attributes.last_message` of a thread.
#[derive(Debug, Clone, PartialEq)]
pub struct LastMessage {
    pub text: String,
    pub sender: Sender,
    pub inserted_at: Option<DateTime<Utc>>,
    /// Absolute URLs.
    pub attachments: Vec<String>,
}

/// A message thread (one guest conversation).
#[derive(Debug, Clone, PartialEq)]
pub struct Thread {
    pub id: String,
    pub title: String,
    pub is_closed: bool,
    pub provider: Provider,
    pub message_count: u64,
    pub last_message: Option<LastMessage>,
    pub last_message_received_at: Option<DateTime<Utc>>,
    pub inserted_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    /// `None` for Airbnb inquiries (threads without a booking).
    pub booking_id: Option<String>,
    pub channel_id: Option<String>,
    pub property_id: Option<String>,
}

impl Thread {
    pub fn from_wire(r: wire::ThreadResource, base: &Url) -> Thread {
        let a = r.attributes;
        Thread {
            booking_id: r.relationships.booking_id(),
            channel_id: r.relationships.channel_id(),
            property_id: r.relationships.property_id(),
            id: r.id,
            title: a.title,
            is_closed: a.is_closed,
            provider: Provider::parse(&a.provider),
            message_count: a.message_count,
            last_message: a.last_message.map(|m| LastMessage {
                text: m.message,
                sender: Sender::parse(&m.sender),
                inserted_at: m.inserted_at,
                attachments: absolute_urls(base, m.attachments),
            }),
            last_message_received_at: a.last_message_received_at,
            inserted_at: a.inserted_at,
            updated_at: a.updated_at,
        }
    }
}

/// Inquiry details of an Airbnb `"inquiry"` system message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BookingDetails {
    pub checkin_date: Option<String>,
    pub checkout_date: Option<String>,
    pub currency: Option<String>,
    pub expected_payout_amount_accurate: Option<String>,
    pub guest_name: Option<String>,
    pub listing_id: Option<String>,
    pub listing_name: Option<String>,
    pub nights: Option<u32>,
    pub number_of_adults: Option<u32>,
    pub number_of_children: Option<u32>,
    pub number_of_guests: Option<u32>,
    pub number_of_infants: Option<u32>,
    pub number_of_pets: Option<u32>,
    pub non_response_at: Option<DateTime<Utc>>,
    pub property_id: Option<String>,
    pub room_type_id: Option<String>,
}

impl From<wire::BookingDetailsWire> for BookingDetails {
    fn from(w: wire::BookingDetailsWire) -> Self {
        BookingDetails {
            checkin_date: w.checkin_date,
            checkout_date: w.checkout_date,
            currency: w.currency,
            expected_payout_amount_accurate: w.expected_payout_amount_accurate,
            guest_name: w.guest_name,
            listing_id: w.listing_id,
            listing_name: w.listing_name,
            nights: w.nights,
            number_of_adults: w.number_of_adults,
            number_of_children: w.number_of_children,
            number_of_guests: w.number_of_guests,
            number_of_infants: w.number_of_infants,
            number_of_pets: w.number_of_pets,
            non_response_at: w.non_response_at,
            property_id: w.property_id,
            room_type_id: w.room_type_id,
        }
    }
}

/// `attributes.meta` of a system message.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessageMeta {
    pub status: Option<String>,
    pub live_feed_event_id: Option<String>,
    pub booking_details: Option<BookingDetails>,
}

/// One message of a thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    /// The `message` attribute; may be empty when there are attachments.
    pub text: String,
    pub sender: Sender,
    /// Absolute URLs (relative ones are joined to the client's base URL).
    pub attachments: Vec<String>,
    pub inserted_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    pub thread_id: Option<String>,
    /// The Channex user who wrote a property-side message (staff or API user).
    pub user_id: Option<String>,
    pub meta: Option<MessageMeta>,
}

impl Message {
    pub fn from_wire(r: wire::MessageResource, base: &Url) -> Message {
        let a = r.attributes;
        Message {
            thread_id: r.relationships.message_thread_id(),
            user_id: r.relationships.user_id(),
            id: r.id,
            text: a.message,
            sender: Sender::parse(&a.sender),
            attachments: absolute_urls(base, a.attachments),
            inserted_at: a.inserted_at,
            updated_at: a.updated_at,
            meta: a.meta.map(|m| MessageMeta {
                status: m.status,
                live_feed_event_id: m.live_feed_event_id,
                booking_details: m.booking_details.map(BookingDetails::from),
            }),
        }
    }

    /// The Airbnb inquiry marker: a `system` message `"inquiry"` with booking details.
    pub fn is_inquiry(&self) -> bool {
        self.sender == Sender::System
            && self.text == "inquiry"
            && self
                .meta
                .as_ref()
                .is_some_and(|m| m.booking_details.is_some())
    }

    pub fn booking_details(&self) -> Option<&BookingDetails> {
        self.meta.as_ref().and_then(|m| m.booking_details.as_ref())
    }
}

/// Makes attachment URLs absolute. Channex returns them relative to the API base
/// (`attachments/<id>`); they are appended to `base` (a leading `/` is ignored). Absolute
/// URLs are kept; a URL that cannot be joined is kept as given.
pub fn absolute_url(base: &Url, raw: &str) -> String {
    if Url::parse(raw).is_ok() {
        return raw.to_string();
    }
    match base.join(raw.trim_start_matches('/')) {
        Ok(u) => u.to_string(),
        Err(_) => raw.to_string(),
    }
}

fn absolute_urls(base: &Url, raw: Vec<String>) -> Vec<String> {
    raw.iter().map(|u| absolute_url(base, u)).collect()
}

/// A Channex booking (the latest revision), as concierge reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingRecord {
    pub id: String,
    pub property_id: Option<String>,
    /// The revision the booking is at (changes with every modification).
    pub revision_id: Option<String>,
    /// `new`, `modified`, `cancelled` (as Channex spells it).
    pub status: String,
    pub arrival_date: String,
    pub departure_date: String,
    pub ota_name: String,
    /// `name surname` of the customer, trimmed.
    pub guest_name: String,
    pub adults: u32,
    pub children: u32,
    /// As Channex gives it (`de`, `de-DE`, ...); normalised by the events layer.
    pub language: Option<String>,
    pub inserted_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

impl BookingRecord {
    pub fn from_wire(r: wire::BookingResource) -> BookingRecord {
        let a = r.attributes;
        let customer = a.customer.unwrap_or_default();
        let guest_name = [customer.name, customer.surname]
            .into_iter()
            .flatten()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let occupancy = a.occupancy.unwrap_or_default();
        BookingRecord {
            property_id: a.property_id.or_else(|| r.relationships.property_id()),
            id: r.id,
            revision_id: a.revision_id,
            status: a.status,
            arrival_date: a.arrival_date,
            departure_date: a.departure_date,
            ota_name: a.ota_name.unwrap_or_default(),
            guest_name,
            adults: occupancy.adults.unwrap_or(0),
            children: occupancy.children.unwrap_or(0),
            language: customer.language.filter(|l| !l.trim().is_empty()),
            inserted_at: a.inserted_at,
            updated_at: a.updated_at,
        }
    }

    /// Nights between arrival and departure (0 when the dates are inverted).
    pub fn nights(&self) -> u32 {
        let parse = |d: &str| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok();
        match (parse(&self.arrival_date), parse(&self.departure_date)) {
            (Some(a), Some(d)) => u32::try_from((d - a).num_days()).unwrap_or(0),
            _ => 0,
        }
    }

    /// What identifies this state of the booking: the revision, else `updated_at`, else
    /// the stay itself (`stay-<arrival>-<departure>-<status>`), so two states never share
    /// an id (one would be dropped as a duplicate event).
    pub fn revision(&self) -> String {
        let revision = self.revision_id.clone().filter(|r| !r.trim().is_empty());
        revision
            .or_else(|| self.updated_at.map(|t| t.timestamp_millis().to_string()))
            .unwrap_or_else(|| {
                format!(
                    "stay-{}-{}-{}",
                    self.arrival_date,
                    self.departure_date,
                    self.status.trim().to_ascii_lowercase()
                )
            })
    }
}

/// Query of `GET /bookings` (read-only: concierge never touches the revisions feed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookingQuery {
    /// `filter[property_id]=`.
    pub property_id: Option<String>,
    /// `filter[updated_at][gte]=` (callers still stop at the first older row: Channex may
    /// ignore a filter).
    pub updated_since: Option<DateTime<Utc>>,
    /// `pagination[limit]`, clamped to 1..=100.
    pub limit: u32,
}

impl Default for BookingQuery {
    fn default() -> Self {
        BookingQuery {
            property_id: None,
            updated_since: None,
            limit: 100,
        }
    }
}

impl BookingQuery {
    pub fn effective_limit(&self) -> u32 {
        self.limit.clamp(1, 100)
    }
}

/// `meta` of a list page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMeta {
    pub limit: u32,
    pub order_by: String,
    pub order_direction: String,
    pub page: u32,
    pub total: u64,
}

/// Which list a malformed item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ItemKind {
    Thread,
    Message,
    Booking,
}

impl ItemKind {
    /// The Channex resource type (`message_thread`, `message`), also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ItemKind::Thread => "message_thread",
            ItemKind::Message => "message",
            ItemKind::Booking => "booking",
        }
    }
}

/// A list item that could not be read; the rest of its page was kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedItem {
    pub kind: ItemKind,
    /// The item's id, only when it is a valid Channex id (an id that is not is never
    /// repeated: it may hold CR/LF or subject wildcards).
    pub id: Option<String>,
    /// Why it was skipped (serde's message or the id check's).
    pub error: String,
    /// Hex digest of the item's raw text: the same broken item is the same fingerprint
    /// across cycles, so it is reported once.
    pub fingerprint: String,
}

/// One page of a list endpoint.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub meta: PageMeta,
    pub skipped: Vec<SkippedItem>,
}

/// All pages of a list endpoint, concatenated (deduplicated by id: rows shifting between
/// pages while we read them are kept once, first occurrence wins).
#[derive(Debug, Clone)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub skipped: Vec<SkippedItem>,
    /// Number of list calls made.
    pub pages: u32,
    /// `meta.total` of the last page read.
    pub total: u64,
    /// Every page's `meta.order_by` / `meta.order_direction` matched what was asked for
    /// (always true when no order was asked for).
    pub order_honoured: bool,
}

/// Sort direction for `order[<field>]=asc|desc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrderDirection {
    Asc,
    #[default]
    Desc,
}

impl OrderDirection {
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderDirection::Asc => "asc",
            OrderDirection::Desc => "desc",
        }
    }
}

/// Query of `GET /message_threads`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadQuery {
    /// `filter[property_id]=` (Channex may ignore it: callers should still check
    /// `Thread::property_id`).
    pub property_id: Option<String>,
    /// `pagination[limit]`, clamped to 1..=100.
    pub limit: u32,
    /// `order[<field>]=<direction>`, e.g. `updated_at`.
    pub order_by: Option<String>,
    pub order_direction: OrderDirection,
}

impl Default for ThreadQuery {
    fn default() -> Self {
        ThreadQuery {
            property_id: None,
            limit: 100,
            order_by: None,
            order_direction: OrderDirection::Desc,
        }
    }
}

impl ThreadQuery {
    pub fn for_property(property_id: impl Into<String>) -> Self {
        ThreadQuery {
            property_id: Some(property_id.into()),
            ..Default::default()
        }
    }

    pub fn ordered_by(mut self, field: impl Into<String>, direction: OrderDirection) -> Self {
        self.order_by = Some(field.into());
        self.order_direction = direction;
        self
    }

    pub fn effective_limit(&self) -> u32 {
        self.limit.clamp(1, 100)
    }

    /// Whether a page's meta says our order was applied.
    pub fn order_honoured_by(&self, meta: &PageMeta) -> bool {
        match &self.order_by {
            None => true,
            Some(field) => {
                meta.order_by == *field
                    && meta
                        .order_direction
                        .eq_ignore_ascii_case(self.order_direction.as_str())
            }
        }
    }
}

#[cfg(test)]
mod booking_revision_tests {
    use super::*;

    fn record(revision: Option<&str>, arrival: &str, status: &str) -> BookingRecord {
        BookingRecord {
            id: "b1".into(),
            property_id: None,
            revision_id: revision.map(str::to_string),
            status: status.into(),
            arrival_date: arrival.into(),
            departure_date: "2030-01-09".into(),
            ota_name: String::new(),
            guest_name: String::new(),
            adults: 2,
            children: 0,
            language: None,
            inserted_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn states_without_revision_or_update_time_keep_distinct_ids() {
        let a = record(None, "2030-01-05", "new");
        let moved = record(Some(""), "2030-01-06", "new");
        let cancelled = record(None, "2030-01-05", "cancelled");
        assert_ne!(a.revision(), moved.revision());
        assert_ne!(a.revision(), cancelled.revision());
        assert!(!a.revision().is_empty());
        assert_eq!(record(Some("r-7"), "2030-01-05", "new").revision(), "r-7");
    }
}
