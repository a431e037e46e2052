//! The simulator's in-memory world: properties, threads, messages, bookings, attachments,
//! the request log and the fault settings, plus the rules that change them.
//!
//! Owns: the data and its invariants (timestamps strictly increasing, thread counters
//! kept in step with messages) and the conversion to the shared wire models.
//! Must not: do HTTP or hold its lock across an `.await` (every method is synchronous).

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, SubsecRound, Utc};
use rand::Rng as _;
use serde::Serialize;

use crate::channex::wire::{
    BookingDetailsWire, LastMessageAttributes, ListMeta, MessageAttributes, MessageMetaWire,
    MessageResource, RelData, Relationships, ThreadAttributes, ThreadResource,
};
use crate::channex::Provider;

use super::FaultConfig;

/// Keep at most this many entries in the request log (oldest dropped first).
const MAX_RECORDED_REQUESTS: usize = 200_000;

/// One API request the simulator answered (control requests are not recorded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    /// e.g. `/api/v1/message_threads`
    pub path: String,
    /// Percent-decoded query string, e.g. `pagination[page]=1&pagination[limit]=100`.
    pub query: String,
    pub status: u16,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub(crate) struct SimProperty {
    pub title: String,
    pub messages_app: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct SimMessage {
    pub id: String,
    pub text: String,
    pub sender: String,
    /// Relative URLs (`attachments/<id>`), as Channex returns them.
    pub attachments: Vec<String>,
    pub inserted_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub user_id: Option<String>,
    pub meta: Option<MessageMetaWire>,
}

#[derive(Debug, Clone)]
pub(crate) struct SimThread {
    pub id: String,
    pub property_id: String,
    pub provider: String,
    pub title: String,
    pub is_closed: bool,
    pub booking_id: Option<String>,
    pub channel_id: String,
    pub inserted_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Oldest first.
    pub messages: Vec<SimMessage>,
}

impl SimThread {
    fn last_message_at(&self) -> Option<DateTime<Utc>> {
        self.messages.last().map(|m| m.inserted_at)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SimAttachment {
    pub file_type: String,
    pub bytes: Vec<u8>,
}

/// Why an API operation was refused (mapped to Channex's error bodies by the API layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NotFound,
    Forbidden,
    NotSupported,
    Validation(&'static str),
}

/// Order fields `GET /message_threads` can sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SortField {
    Inserted,
    Updated,
    LastMessageReceived,
}

impl SortField {
    pub fn parse(s: &str) -> Option<SortField> {
        match s {
            "inserted_at" => Some(SortField::Inserted),
            "updated_at" => Some(SortField::Updated),
            "last_message_received_at" => Some(SortField::LastMessageReceived),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            SortField::Inserted => "inserted_at",
            SortField::Updated => "updated_at",
            SortField::LastMessageReceived => "last_message_received_at",
        }
    }
}

pub(crate) struct ThreadListing {
    pub items: Vec<ThreadResource>,
    pub meta: ListMeta,
}

pub(crate) struct MessageListing {
    pub items: Vec<MessageResource>,
    pub meta: ListMeta,
}

pub(crate) struct Store {
    pub api_key: String,
    pub faults: FaultConfig,
    pub honour_order: bool,
    pub honour_property_filter: bool,
    pub api_user_id: String,
    pub staff_user_id: String,
    properties: HashMap<String, SimProperty>,
    threads: HashMap<String, SimThread>,
    bookings: HashMap<String, String>,
    channels: HashMap<(String, String), String>,
    attachments: HashMap<String, SimAttachment>,
    sent_by_api: Vec<(String, String)>,
    requests: VecDeque<RecordedRequest>,
    no_reply: HashMap<String, u32>,
    /// Threads whose message list is answered with a broken payload (fault injection).
    pub broken_messages: HashMap<String, BrokenMessages>,
    /// Extra latency drawn uniformly from `0..=latency_jitter` per API request, on top of
    /// `faults.latency` (chaos runs: "500–1000 ms" is latency 500 ms + jitter 500 ms).
    pub latency_jitter: Duration,
    /// API requests between the gate and their answer (sends in flight, for chaos runs).
    pub posts_in_flight: usize,
    /// Raw bytes put verbatim into the first page of a list (fault injection: malformed
    /// items), keyed by the list they go into.
    pub raw_items: HashMap<RawList, Vec<Vec<u8>>>,
    /// Threads listed without their property relationship (a row Channex sends without
    /// `property_id`).
    pub property_hidden: HashSet<String>,
    /// Bookings, their revisions feed and the acks received.
    pub stays: super::bookings::Stays,
    last_ts: DateTime<Utc>,
}

/// A list that raw items can be injected into (see [`super::Sim::inject_raw_item`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RawList {
    /// `GET /message_threads` of this property (also the unfiltered list).
    Threads { property_id: String },
    /// `GET /message_threads/:id/messages` of this thread.
    Messages { thread_id: String },
    /// `GET /bookings` (any filter).
    Bookings,
}

/// How a thread's message list misbehaves (see [`super::Sim::break_messages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokenMessages {
    /// 200 with a body that is not a message list.
    Malformed,
    /// 404 `not_found`, as for a thread deleted between list and read.
    NotFound,
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Store {
    pub fn new(api_key: String, faults: FaultConfig) -> Self {
        Store {
            api_key,
            faults,
            honour_order: true,
            honour_property_filter: true,
            api_user_id: new_id(),
            staff_user_id: new_id(),
            properties: HashMap::new(),
            threads: HashMap::new(),
            bookings: HashMap::new(),
            channels: HashMap::new(),
            attachments: HashMap::new(),
            sent_by_api: Vec::new(),
            requests: VecDeque::new(),
            no_reply: HashMap::new(),
            broken_messages: HashMap::new(),
            latency_jitter: Duration::ZERO,
            posts_in_flight: 0,
            raw_items: HashMap::new(),
            property_hidden: HashSet::new(),
            stays: super::bookings::Stays::default(),
            last_ts: DateTime::<Utc>::MIN_UTC,
        }
    }

    /// Now (microsecond precision), strictly after every timestamp handed out before.
    pub(crate) fn tick(&mut self) -> DateTime<Utc> {
        let now = Utc::now().trunc_subsecs(6);
        let ts = if now > self.last_ts {
            now
        } else {
            self.last_ts + chrono::Duration::microseconds(1)
        };
        self.last_ts = ts;
        ts
    }

    // -- world building --------------------------------------------------------------

    pub fn add_property(&mut self, id: &str, title: &str, messages_app: bool) {
        self.properties.insert(
            id.to_string(),
            SimProperty {
                title: title.to_string(),
                messages_app,
            },
        );
    }

    fn ensure_property(&mut self, id: &str) {
        if !self.properties.contains_key(id) {
            self.add_property(id, &format!("Property {id}"), true);
        }
    }

    /// A thread; `with_booking` also creates its booking (arriving in a week, three
    /// nights, status `new`), readable through `GET /bookings/:id`.
    pub fn open_thread(
        &mut self,
        property_id: &str,
        provider: &str,
        title: &str,
        with_booking: bool,
    ) -> String {
        let booking_id = with_booking.then(new_id);
        if let Some(b) = &booking_id {
            let now = self.tick();
            let day = |n: i64| {
                (now + chrono::Duration::days(n))
                    .format("%Y-%m-%d")
                    .to_string()
            };
            self.stays.insert(super::bookings::SimBooking {
                id: b.clone(),
                property_id: property_id.to_string(),
                status: "new".into(),
                arrival_date: day(7),
                departure_date: day(10),
                ota_name: Provider::parse(provider).as_event_str().to_string(),
                guest_name: title.to_string(),
                language: None,
                adults: 2,
                children: 0,
                revision_id: new_id(),
                inserted_at: now,
                updated_at: now,
            });
        }
        self.open_thread_for(property_id, provider, title, booking_id)
    }

    /// A thread of an existing (or no) booking.
    pub fn open_thread_for(
        &mut self,
        property_id: &str,
        provider: &str,
        title: &str,
        booking_id: Option<String>,
    ) -> String {
        self.ensure_property(property_id);
        let id = new_id();
        let channel_key = (
            property_id.to_string(),
            Provider::parse(provider).as_event_str().to_string(),
        );
        let channel_id = self
            .channels
            .entry(channel_key)
            .or_insert_with(new_id)
            .clone();
        let now = self.tick();
        if let Some(b) = &booking_id {
            self.bookings.insert(b.clone(), id.clone());
        }
        self.threads.insert(
            id.clone(),
            SimThread {
                id: id.clone(),
                property_id: property_id.to_string(),
                provider: provider.to_string(),
                title: title.to_string(),
                is_closed: false,
                booking_id,
                channel_id,
                inserted_at: now,
                updated_at: now,
                messages: Vec::new(),
            },
        );
        id
    }

    /// Moves a thread and all its messages `by` into the past (a conversation that went
    /// quiet long ago), for stale-thread scenarios.
    pub fn backdate_thread(&mut self, thread_id: &str, by: chrono::Duration) -> bool {
        let Some(thread) = self.threads.get_mut(thread_id) else {
            return false;
        };
        thread.inserted_at -= by;
        thread.updated_at -= by;
        for m in &mut thread.messages {
            m.inserted_at -= by;
            m.updated_at -= by;
        }
        true
    }

    /// Sets a thread's `updated_at` alone (an update Channex stamped late, or on a server
    /// whose clock lags); `false` if it does not exist.
    pub fn set_thread_updated_at(&mut self, thread_id: &str, at: DateTime<Utc>) -> bool {
        let Some(thread) = self.threads.get_mut(thread_id) else {
            return false;
        };
        thread.updated_at = at;
        true
    }

    fn push_message(
        &mut self,
        thread_id: &str,
        text: &str,
        sender: &str,
        attachments: Vec<String>,
        user_id: Option<String>,
        meta: Option<MessageMetaWire>,
    ) -> Option<String> {
        if !self.threads.contains_key(thread_id) {
            return None;
        }
        let now = self.tick();
        let thread = self.threads.get_mut(thread_id)?;
        let id = new_id();
        thread.messages.push(SimMessage {
            id: id.clone(),
            text: text.to_string(),
            sender: sender.to_string(),
            attachments,
            inserted_at: now,
            updated_at: now,
            user_id,
            meta,
        });
        thread.updated_at = now;
        Some(id)
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_inquiry(
        &mut self,
        property_id: &str,
        guest_name: &str,
        non_response_at: DateTime<Utc>,
        checkin: &str,
        checkout: &str,
        guests: u32,
        payout: &str,
        currency: &str,
    ) -> (String, String) {
        self.ensure_property(property_id);
        let listing_name = self
            .properties
            .get(property_id)
            .map(|p| p.title.clone())
            .unwrap_or_default();
        let thread_id = self.open_thread(property_id, "AirBNB", guest_name, false);
        let nights = match (
            NaiveDate::parse_from_str(checkin, "%Y-%m-%d"),
            NaiveDate::parse_from_str(checkout, "%Y-%m-%d"),
        ) {
            (Ok(a), Ok(b)) => u32::try_from((b - a).num_days()).unwrap_or(0),
            _ => 0,
        };
        let listing_id = rand::rng()
            .random_range(10_000_000_000u64..100_000_000_000)
            .to_string();
        let meta = MessageMetaWire {
            status: Some("active".into()),
            live_feed_event_id: Some(new_id()),
            booking_details: Some(BookingDetailsWire {
                checkin_date: Some(checkin.to_string()),
                checkout_date: Some(checkout.to_string()),
                currency: Some(currency.to_string()),
                expected_payout_amount_accurate: Some(payout.to_string()),
                guest_name: Some(guest_name.to_string()),
                listing_id: Some(listing_id),
                listing_name: Some(listing_name),
                nights: Some(nights),
                non_response_at: Some(non_response_at),
                number_of_adults: Some(guests),
                number_of_children: Some(0),
                number_of_guests: Some(guests),
                number_of_infants: Some(0),
                number_of_pets: Some(0),
                property_id: Some(property_id.to_string()),
                room_type_id: Some(new_id()),
            }),
        };
        let msg_id = self
            .push_message(
                &thread_id,
                "inquiry",
                "system",
                Vec::new(),
                None,
                Some(meta),
            )
            .unwrap_or_default();
        (thread_id, msg_id)
    }

    pub fn guest_message(&mut self, thread_id: &str, text: &str) -> Option<String> {
        self.push_message(thread_id, text, "guest", Vec::new(), None, None)
    }

    pub fn staff_message(&mut self, thread_id: &str, text: &str) -> Option<String> {
        let user = Some(self.staff_user_id.clone());
        self.push_message(thread_id, text, "property", Vec::new(), user, None)
    }

    // -- inspection --------------------------------------------------------------------

    pub fn thread_resource(&self, id: &str) -> Option<ThreadResource> {
        self.threads.get(id).map(|t| self.thread_to_wire(t))
    }

    pub fn message_resources(&self, thread_id: &str) -> Option<Vec<MessageResource>> {
        self.threads
            .get(thread_id)
            .map(|t| t.messages.iter().map(|m| message_to_wire(t, m)).collect())
    }

    pub fn sent_by_api(&self) -> Vec<(String, String)> {
        self.sent_by_api.clone()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests.iter().cloned().collect()
    }

    pub fn clear_requests(&mut self) {
        self.requests.clear();
    }

    pub fn record(&mut self, r: RecordedRequest) {
        if self.requests.len() >= MAX_RECORDED_REQUESTS {
            self.requests.pop_front();
        }
        self.requests.push_back(r);
    }

    pub fn no_reply_needed_marks(&self, thread_id: &str) -> u32 {
        self.no_reply.get(thread_id).copied().unwrap_or(0)
    }

    pub fn thread_ids(&self) -> Vec<String> {
        let mut v: Vec<&SimThread> = self.threads.values().collect();
        v.sort_by(|a, b| (a.inserted_at, &a.id).cmp(&(b.inserted_at, &b.id)));
        v.into_iter().map(|t| t.id.clone()).collect()
    }

    pub fn attachment(&self, id: &str) -> Option<SimAttachment> {
        self.attachments.get(id).cloned()
    }

    // -- API operations ----------------------------------------------------------------

    fn accessible(&self, t: &SimThread) -> Result<(), Refusal> {
        match self.properties.get(&t.property_id) {
            Some(p) if p.messages_app => Ok(()),
            _ => Err(Refusal::Forbidden),
        }
    }

    fn thread_checked(&self, id: &str) -> Result<&SimThread, Refusal> {
        let t = self.threads.get(id).ok_or(Refusal::NotFound)?;
        self.accessible(t)?;
        Ok(t)
    }

    /// The thread of a booking, checked for access and for a provider with messaging. A
    /// known booking without a thread yet gets one (as Channex opens the OTA conversation
    /// on the first message).
    pub fn booking_thread_or_open(&mut self, booking_id: &str) -> Result<String, Refusal> {
        if !self.bookings.contains_key(booking_id) {
            let b = self
                .stays
                .get(booking_id)
                .cloned()
                .ok_or(Refusal::NotFound)?;
            let provider = super::bookings::provider_of(&b.ota_name);
            self.open_thread_for(&b.property_id, provider, &b.guest_name, Some(b.id));
        }
        self.booking_thread(booking_id)
    }

    /// The thread of a booking, checked for access and for a provider with messaging.
    pub fn booking_thread(&self, booking_id: &str) -> Result<String, Refusal> {
        let tid = self.bookings.get(booking_id).ok_or(Refusal::NotFound)?;
        let t = self.thread_checked(tid)?;
        if matches!(Provider::parse(&t.provider), Provider::Other(_)) {
            return Err(Refusal::NotSupported);
        }
        Ok(t.id.clone())
    }

    pub fn list_threads(
        &self,
        property_filter: Option<&str>,
        order: Option<(SortField, bool)>,
        page: u32,
        limit: u32,
    ) -> Result<ThreadListing, Refusal> {
        let filter = property_filter.filter(|_| self.honour_property_filter);
        if let Some(p) = filter {
            match self.properties.get(p) {
                Some(prop) if !prop.messages_app => return Err(Refusal::Forbidden),
                _ => {}
            }
        }
        let (field, desc) = match order {
            Some(o) if self.honour_order => o,
            _ => (SortField::Inserted, true),
        };
        let mut rows: Vec<&SimThread> = self
            .threads
            .values()
            .filter(|t| match filter {
                None => true,
                Some(p) => t.property_id == p,
            })
            .filter(|t| self.accessible(t).is_ok())
            .collect();
        let key = |t: &SimThread| match field {
            SortField::Inserted => Some(t.inserted_at),
            SortField::Updated => Some(t.updated_at),
            SortField::LastMessageReceived => t.last_message_at(),
        };
        rows.sort_by(|a, b| {
            let ord = (key(a), &a.id).cmp(&(key(b), &b.id));
            if desc {
                ord.reverse()
            } else {
                ord
            }
        });
        let total = rows.len() as u64;
        let items = page_slice(&rows, page, limit)
            .iter()
            .map(|t| self.thread_to_wire(t))
            .collect();
        Ok(ThreadListing {
            items,
            meta: ListMeta {
                limit,
                order_by: field.as_str().to_string(),
                order_direction: if desc { "desc" } else { "asc" }.to_string(),
                page,
                total,
            },
        })
    }

    pub fn get_thread(&self, id: &str) -> Result<ThreadResource, Refusal> {
        self.thread_checked(id).map(|t| self.thread_to_wire(t))
    }

    pub fn list_messages(
        &self,
        thread_id: &str,
        page: u32,
        limit: u32,
    ) -> Result<MessageListing, Refusal> {
        let t = self.thread_checked(thread_id)?;
        let newest_first: Vec<&SimMessage> = t.messages.iter().rev().collect();
        let items = page_slice(&newest_first, page, limit)
            .iter()
            .map(|m| message_to_wire(t, m))
            .collect();
        Ok(MessageListing {
            items,
            meta: ListMeta {
                limit,
                order_by: "inserted_at".into(),
                order_direction: "desc".into(),
                page,
                total: t.messages.len() as u64,
            },
        })
    }

    /// A property-side message sent through the API (by the API user).
    pub fn send_message(
        &mut self,
        thread_id: &str,
        text: Option<String>,
        attachment_id: Option<String>,
    ) -> Result<MessageResource, Refusal> {
        self.thread_checked(thread_id)?;
        let attachments = match &attachment_id {
            Some(a) if self.attachments.contains_key(a) => vec![format!("attachments/{a}")],
            Some(_) => return Err(Refusal::Validation("attachment not found")),
            None => Vec::new(),
        };
        let text = text.unwrap_or_default();
        if text.trim().is_empty() && attachments.is_empty() {
            return Err(Refusal::Validation("message can't be blank"));
        }
        let user = Some(self.api_user_id.clone());
        let id = self
            .push_message(thread_id, &text, "property", attachments, user, None)
            .ok_or(Refusal::NotFound)?;
        self.sent_by_api.push((thread_id.to_string(), text));
        let t = self.threads.get(thread_id).ok_or(Refusal::NotFound)?;
        let m = t
            .messages
            .iter()
            .rev()
            .find(|m| m.id == id)
            .ok_or(Refusal::NotFound)?;
        Ok(message_to_wire(t, m))
    }

    pub fn close_thread(&mut self, id: &str) -> Result<ThreadResource, Refusal> {
        self.thread_checked(id)?;
        let now = self.tick();
        if let Some(t) = self.threads.get_mut(id) {
            if !t.is_closed {
                t.is_closed = true;
                t.updated_at = now;
            }
        }
        self.get_thread(id)
    }

    pub fn no_reply_needed(&mut self, id: &str) -> Result<ThreadResource, Refusal> {
        let t = self.thread_checked(id)?;
        if !Provider::parse(&t.provider).supports_no_reply_needed() {
            return Err(Refusal::NotSupported);
        }
        *self.no_reply.entry(id.to_string()).or_insert(0) += 1;
        self.get_thread(id)
    }

    pub fn add_attachment(&mut self, file_type: String, bytes: Vec<u8>) -> String {
        let id = new_id();
        self.attachments
            .insert(id.clone(), SimAttachment { file_type, bytes });
        id
    }

    // -- wire conversion -----------------------------------------------------------------

    fn thread_to_wire(&self, t: &SimThread) -> ThreadResource {
        let last = t.messages.last();
        let mut property = RelData::new(t.property_id.clone(), "property");
        if t.booking_id.is_none() {
            // As in the seed's inquiry example: threads without a booking carry the
            // property's title in the relationship.
            property.data.title = Some(
                self.properties
                    .get(&t.property_id)
                    .map(|p| p.title.clone())
                    .unwrap_or_default(),
            );
        }
        ThreadResource {
            id: t.id.clone(),
            kind: "message_thread".into(),
            attributes: ThreadAttributes {
                title: t.title.clone(),
                is_closed: t.is_closed,
                provider: t.provider.clone(),
                message_count: t.messages.len() as u64,
                last_message: last.map(|m| LastMessageAttributes {
                    attachments: m.attachments.clone(),
                    inserted_at: Some(m.inserted_at),
                    message: m.text.clone(),
                    sender: m.sender.clone(),
                }),
                last_message_received_at: last.map(|m| m.inserted_at),
                inserted_at: Some(t.inserted_at),
                updated_at: Some(t.updated_at),
            },
            relationships: Relationships {
                booking: t
                    .booking_id
                    .as_ref()
                    .map(|b| RelData::new(b.clone(), "booking")),
                channel: Some(RelData::new(t.channel_id.clone(), "channel")),
                property: (!self.property_hidden.contains(&t.id)).then_some(property),
                message_thread: None,
                user: None,
            },
        }
    }
}

fn message_to_wire(t: &SimThread, m: &SimMessage) -> MessageResource {
    MessageResource {
        id: m.id.clone(),
        kind: "message".into(),
        attributes: MessageAttributes {
            attachments: m.attachments.clone(),
            inserted_at: m.inserted_at,
            message: m.text.clone(),
            sender: m.sender.clone(),
            updated_at: Some(m.updated_at),
            meta: m.meta.clone(),
        },
        relationships: Relationships {
            message_thread: Some(RelData::new(t.id.clone(), "message_thread")),
            user: m.user_id.as_ref().map(|u| RelData::new(u.clone(), "user")),
            ..Default::default()
        },
    }
}

fn page_slice<T>(rows: &[T], page: u32, limit: u32) -> &[T] {
    let start = (page.saturating_sub(1) as usize).saturating_mul(limit as usize);
    if start >= rows.len() {
        return &[];
    }
    let end = start.saturating_add(limit as usize).min(rows.len());
    &rows[start..end]
}
