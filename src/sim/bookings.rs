//! The simulator's bookings: the Bookings Collection endpoints (`GET /bookings`,
//! `GET /bookings/:id`), the booking revisions feed with its ack endpoint, and the control
//! endpoints that create and modify bookings.
//!
//! Owns: the booking records, their revisions (one per create / modify, each with its own
//! id), the acks received (so tests can assert that concierge never acks) and the wire form
//! of a booking ([`crate::channex::wire::BookingResource`], the struct the client reads).
//! Must not: do HTTP itself outside its handlers, nor hold the store lock across an
//! `.await`. A booking's messages go through the thread endpoints in `api` (a booking
//! without a thread gets one on its first message, as Channex opens the OTA conversation).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::channex::wire::{
    BookingAttributes, BookingResource, CustomerWire, Document, ListMeta, OccupancyWire,
    Relationships,
};

use super::state::Refusal;
use super::Sim;

/// One booking at its latest revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimBooking {
    pub id: String,
    pub property_id: String,
    pub status: String,
    pub arrival_date: String,
    pub departure_date: String,
    pub ota_name: String,
    pub guest_name: String,
    pub language: Option<String>,
    pub adults: u32,
    pub children: u32,
    pub revision_id: String,
    pub inserted_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl SimBooking {
    fn to_wire(&self) -> BookingResource {
        let (name, surname) = match self.guest_name.split_once(' ') {
            Some((n, s)) => (Some(n.to_string()), Some(s.to_string())),
            None => (Some(self.guest_name.clone()), None),
        };
        BookingResource {
            id: self.id.clone(),
            kind: "booking".into(),
            attributes: BookingAttributes {
                status: self.status.clone(),
                arrival_date: self.arrival_date.clone(),
                departure_date: self.departure_date.clone(),
                revision_id: Some(self.revision_id.clone()),
                property_id: Some(self.property_id.clone()),
                ota_name: Some(self.ota_name.clone()),
                ota_reservation_code: Some(self.id.chars().take(8).collect()),
                occupancy: Some(OccupancyWire {
                    adults: Some(self.adults),
                    children: Some(self.children),
                    infants: Some(0),
                }),
                customer: Some(CustomerWire {
                    name,
                    surname,
                    language: self.language.clone(),
                }),
                inserted_at: Some(self.inserted_at),
                updated_at: Some(self.updated_at),
            },
            relationships: Relationships::default(),
        }
    }
}

/// A change asked through the control API (absent fields keep their value).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BookingChangeRequest {
    pub arrival_date: Option<String>,
    pub departure_date: Option<String>,
    pub status: Option<String>,
}

/// The bookings of the simulated world.
#[derive(Debug, Default)]
pub(crate) struct Stays {
    bookings: HashMap<String, SimBooking>,
    /// The revisions feed: (revision id, booking at that revision), oldest first.
    revisions: Vec<(String, SimBooking)>,
    /// Revision ids acked through `POST /booking_revisions/:id/ack`.
    pub acks: Vec<String>,
}

fn valid_date(d: &str) -> bool {
    chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok()
}

impl Stays {
    pub fn insert(&mut self, b: SimBooking) {
        self.revisions.push((b.revision_id.clone(), b.clone()));
        self.bookings.insert(b.id.clone(), b);
    }

    pub fn get(&self, id: &str) -> Option<&SimBooking> {
        self.bookings.get(id)
    }

    /// Apply a change as a new revision (status `modified` unless one is given).
    pub fn modify(
        &mut self,
        id: &str,
        change: &BookingChangeRequest,
        at: DateTime<Utc>,
    ) -> Result<SimBooking, Refusal> {
        let dates = [&change.arrival_date, &change.departure_date];
        if dates
            .iter()
            .any(|d| d.as_deref().is_some_and(|d| !valid_date(d)))
        {
            return Err(Refusal::Validation("dates must be YYYY-MM-DD"));
        }
        let b = self.bookings.get_mut(id).ok_or(Refusal::NotFound)?;
        if let Some(d) = &change.arrival_date {
            b.arrival_date = d.clone();
        }
        if let Some(d) = &change.departure_date {
            b.departure_date = d.clone();
        }
        b.status = change.status.clone().unwrap_or_else(|| "modified".into());
        b.revision_id = uuid::Uuid::new_v4().to_string();
        b.updated_at = at;
        let b = b.clone();
        self.revisions.push((b.revision_id.clone(), b.clone()));
        Ok(b)
    }

    /// `GET /bookings`: `filter[property_id]`, `filter[updated_at][gte]`,
    /// `order[updated_at|inserted_at]=asc|desc` (default `inserted_at desc`), pages.
    fn list(&self, p: &HashMap<String, String>) -> Document<Vec<BookingResource>> {
        let (page, limit) = super::api::pagination(p);
        let property = p.get("filter[property_id]");
        let since = p
            .get("filter[updated_at][gte]")
            .and_then(|s| crate::base::time::parse_utc_timestamp(s));
        let (field, desc) = p
            .iter()
            .find_map(|(k, v)| {
                let f = k.strip_prefix("order[")?.strip_suffix(']')?;
                let f = matches!(f, "updated_at" | "inserted_at").then_some(f)?;
                Some((f.to_string(), v.eq_ignore_ascii_case("desc")))
            })
            .unwrap_or(("inserted_at".to_string(), true));
        let mut rows: Vec<&SimBooking> = self
            .bookings
            .values()
            .filter(|b| property.is_none_or(|p| *p == b.property_id))
            .filter(|b| since.is_none_or(|s| b.updated_at >= s))
            .collect();
        rows.sort_by_key(|b| {
            let at = if field == "updated_at" {
                b.updated_at
            } else {
                b.inserted_at
            };
            (at, b.id.clone())
        });
        if desc {
            rows.reverse();
        }
        let total = rows.len() as u64;
        let start = (page.saturating_sub(1) as usize).saturating_mul(limit as usize);
        let data = rows
            .into_iter()
            .skip(start)
            .take(limit as usize)
            .map(SimBooking::to_wire)
            .collect();
        Document {
            data,
            meta: Some(ListMeta {
                limit,
                order_by: field,
                order_direction: if desc { "desc" } else { "asc" }.into(),
                page,
                total,
            }),
        }
    }
}

// -- API handlers -------------------------------------------------------------------------

type Params = Query<HashMap<String, String>>;

/// The listing, with raw items injected into `RawList::Bookings` spliced into page 1.
pub(crate) async fn list_bookings(State(sim): State<Sim>, Query(p): Params) -> Response {
    let store = sim.lock();
    let doc = store.stays.list(&p);
    let first_page = doc.meta.as_ref().is_some_and(|m| m.page == 1);
    let raw = match store.raw_items.get(&super::RawList::Bookings) {
        Some(items) if first_page => items.clone(),
        _ => Vec::new(),
    };
    drop(store);
    super::api::respond_with_raw(Ok(doc), &raw)
}

pub(crate) async fn get_booking(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    match sim.lock().stays.get(&id) {
        Some(b) => Json(Document {
            data: b.to_wire(),
            meta: None,
        })
        .into_response(),
        None => super::api::error_response(StatusCode::NOT_FOUND, "not_found", "Resouce Not Found"),
    }
}

/// `GET /booking_revisions/feed`: the revisions not acked yet, oldest first.
pub(crate) async fn revisions_feed(State(sim): State<Sim>) -> Response {
    let store = sim.lock();
    let data: Vec<serde_json::Value> = store
        .stays
        .revisions
        .iter()
        .filter(|(id, _)| !store.stays.acks.contains(id))
        .map(|(id, b)| {
            let mut attrs = serde_json::to_value(b.to_wire().attributes).unwrap_or_default();
            attrs["booking_id"] = json!(b.id);
            json!({"id": id, "type": "booking_revision", "attributes": attrs})
        })
        .collect();
    Json(json!({"data": data})).into_response()
}

/// `POST /booking_revisions/:id/ack`: recorded, so tests can assert concierge never acks.
pub(crate) async fn ack_revision(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let mut store = sim.lock();
    if !store.stays.revisions.iter().any(|(r, _)| *r == id) {
        return super::api::error_response(StatusCode::NOT_FOUND, "not_found", "Resouce Not Found");
    }
    store.stays.acks.push(id);
    StatusCode::OK.into_response()
}

// -- control handlers -----------------------------------------------------------------------

/// `POST /_sim/bookings` body.
#[derive(Debug, Clone, Deserialize)]
pub struct NewBooking {
    pub property_id: String,
    /// `Booking.com`, `Airbnb`, ...
    pub ota_name: String,
    pub arrival_date: String,
    pub departure_date: String,
    pub guest_name: String,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default = "two")]
    pub adults: u32,
    #[serde(default)]
    pub children: u32,
    /// Also open the booking's message thread now (else it opens on the first message).
    #[serde(default)]
    pub with_thread: bool,
}

fn two() -> u32 {
    2
}

fn bad(msg: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

pub(crate) async fn create_booking(State(sim): State<Sim>, body: Bytes) -> Response {
    let req: NewBooking = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(&format!("invalid body: {e}")),
    };
    match sim.create_booking(&req) {
        Some((id, thread_id)) => Json(json!({"id": id, "thread_id": thread_id})).into_response(),
        None => bad("dates must be YYYY-MM-DD"),
    }
}

pub(crate) async fn modify_booking(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let req: BookingChangeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad(&format!("invalid body: {e}")),
    };
    match sim.modify_booking(&id, &req) {
        Ok(b) => Json(json!({"id": b.id, "revision_id": b.revision_id})).into_response(),
        Err(e) if sim.booking(&id).is_none() => {
            (StatusCode::NOT_FOUND, Json(json!({"error": e}))).into_response()
        }
        Err(e) => bad(&e),
    }
}

pub(crate) async fn acks(State(sim): State<Sim>) -> Response {
    Json(json!({"count": sim.booking_acks().len()})).into_response()
}

/// The provider string of a thread opened for a booking of `ota_name`.
pub(crate) fn provider_of(ota_name: &str) -> &'static str {
    match crate::channex::Provider::parse(ota_name) {
        crate::channex::Provider::Airbnb => "AirBNB",
        crate::channex::Provider::BookingCom => "BookingCom",
        crate::channex::Provider::Other(_) => "Other",
    }
}

pub(crate) fn valid_dates(a: &str, d: &str) -> bool {
    valid_date(a) && valid_date(d)
}
