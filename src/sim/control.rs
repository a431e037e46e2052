//! The simulator's control API under `/_sim/` (no authentication, not recorded, not
//! subject to faults): building the world, steering faults and reading what happened.
//!
//! Owns: the control request/response JSON.
//! Must not: be reachable under `/api/v1` or panic on malformed input (bad JSON → 400).

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{FaultConfig, RawList, Sim};

pub(crate) fn router(sim: Sim) -> Router {
    Router::new()
        .route("/_sim/properties", post(add_property))
        .route("/_sim/threads", post(open_thread).get(list_thread_ids))
        .route("/_sim/inquiries", post(add_inquiry))
        .route("/_sim/threads/{id}/guest_messages", post(guest_message))
        .route("/_sim/threads/{id}/staff_messages", post(staff_message))
        .route("/_sim/threads/{id}/no_reply_needed", get(no_reply_marks))
        .route("/_sim/bookings", post(super::bookings::create_booking))
        .route("/_sim/bookings/{id}", post(super::bookings::modify_booking))
        .route("/_sim/booking_acks", get(super::bookings::acks))
        .route("/_sim/faults", put(set_faults).get(get_faults))
        .route("/_sim/posts_in_flight", get(posts_in_flight))
        .route("/_sim/list_features", put(set_list_features))
        .route("/_sim/requests", get(requests).delete(clear_requests))
        .route("/_sim/sent", get(sent))
        .route(
            "/_sim/raw_items",
            post(inject_raw_item).delete(clear_raw_items),
        )
        .with_state(sim)
}

fn bad_request(msg: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": msg}))).into_response()
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(bad_request(format!("invalid body: {e}"))))
}

fn unknown_thread(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": format!("unknown thread {id}")})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PropertyBody {
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default = "yes")]
    messages_app: bool,
}

fn yes() -> bool {
    true
}

async fn add_property(State(sim): State<Sim>, body: Bytes) -> Response {
    match parse::<PropertyBody>(&body) {
        Ok(p) => {
            sim.add_property(&p.id, &p.title, p.messages_app);
            Json(json!({"id": p.id})).into_response()
        }
        Err(r) => *r,
    }
}

#[derive(Deserialize)]
struct ThreadBody {
    property_id: String,
    provider: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    with_booking: bool,
}

async fn open_thread(State(sim): State<Sim>, body: Bytes) -> Response {
    match parse::<ThreadBody>(&body) {
        Ok(t) => {
            let id = sim.open_thread(&t.property_id, &t.provider, &t.title, t.with_booking);
            let booking_id = sim.thread(&id).and_then(|t| t.booking_id);
            Json(json!({"id": id, "booking_id": booking_id})).into_response()
        }
        Err(r) => *r,
    }
}

async fn list_thread_ids(State(sim): State<Sim>) -> Response {
    Json(sim.thread_ids()).into_response()
}

#[derive(Deserialize)]
struct InquiryBody {
    property_id: String,
    guest_name: String,
    non_response_at: String,
    checkin: String,
    checkout: String,
    #[serde(default = "one")]
    guests: u32,
    #[serde(default)]
    payout: String,
    #[serde(default)]
    currency: String,
}

fn one() -> u32 {
    1
}

async fn add_inquiry(State(sim): State<Sim>, body: Bytes) -> Response {
    let i = match parse::<InquiryBody>(&body) {
        Ok(i) => i,
        Err(r) => return *r,
    };
    let Some(deadline) = crate::base::time::parse_utc_timestamp(&i.non_response_at) else {
        return bad_request(format!(
            "non_response_at {:?} is not a timestamp",
            i.non_response_at
        ));
    };
    let (thread_id, message_id) = sim.add_inquiry(
        &i.property_id,
        &i.guest_name,
        deadline,
        &i.checkin,
        &i.checkout,
        i.guests,
        &i.payout,
        &i.currency,
    );
    Json(json!({"thread_id": thread_id, "message_id": message_id})).into_response()
}

#[derive(Deserialize)]
struct TextBody {
    text: String,
}

async fn guest_message(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Response {
    match parse::<TextBody>(&body) {
        Ok(b) => match sim.try_guest_message(&id, &b.text) {
            Some(mid) => Json(json!({"id": mid})).into_response(),
            None => unknown_thread(&id),
        },
        Err(r) => *r,
    }
}

async fn staff_message(State(sim): State<Sim>, Path(id): Path<String>, body: Bytes) -> Response {
    match parse::<TextBody>(&body) {
        Ok(b) => match sim.try_staff_message(&id, &b.text) {
            Some(mid) => Json(json!({"id": mid})).into_response(),
            None => unknown_thread(&id),
        },
        Err(r) => *r,
    }
}

async fn no_reply_marks(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    Json(json!({"count": sim.no_reply_needed_marks(&id)})).into_response()
}

/// Faults as JSON: latency in milliseconds; a PUT replaces all of them (the jitter too).
#[derive(Serialize, Deserialize)]
struct FaultsBody {
    #[serde(default)]
    rate_429: f64,
    #[serde(default)]
    rate_500: f64,
    #[serde(default = "one_u64")]
    retry_after_secs: u64,
    #[serde(default)]
    latency_ms: u64,
    /// Uniform random extra latency `0..=latency_jitter_ms` per request.
    #[serde(default)]
    latency_jitter_ms: u64,
}

fn one_u64() -> u64 {
    1
}

impl FaultsBody {
    fn new(f: &FaultConfig, jitter: Duration) -> Self {
        FaultsBody {
            rate_429: f.rate_429,
            rate_500: f.rate_500,
            retry_after_secs: f.retry_after_secs,
            latency_ms: f.latency.as_millis() as u64,
            latency_jitter_ms: jitter.as_millis() as u64,
        }
    }
}

async fn set_faults(State(sim): State<Sim>, body: Bytes) -> Response {
    match parse::<FaultsBody>(&body) {
        Ok(f) => {
            let cfg = FaultConfig {
                rate_429: f.rate_429,
                rate_500: f.rate_500,
                retry_after_secs: f.retry_after_secs,
                latency: Duration::from_millis(f.latency_ms),
            };
            let jitter = Duration::from_millis(f.latency_jitter_ms);
            sim.set_faults(cfg.clone());
            sim.set_latency_jitter(jitter);
            Json(FaultsBody::new(&cfg, jitter)).into_response()
        }
        Err(r) => *r,
    }
}

async fn get_faults(State(sim): State<Sim>) -> Response {
    Json(FaultsBody::new(&sim.faults(), sim.latency_jitter())).into_response()
}

async fn posts_in_flight(State(sim): State<Sim>) -> Response {
    Json(json!({"count": sim.posts_in_flight()})).into_response()
}

#[derive(Deserialize)]
struct ListFeaturesBody {
    #[serde(default = "yes")]
    order: bool,
    #[serde(default = "yes")]
    property_filter: bool,
}

async fn set_list_features(State(sim): State<Sim>, body: Bytes) -> Response {
    match parse::<ListFeaturesBody>(&body) {
        Ok(b) => {
            sim.set_list_features(b.order, b.property_filter);
            Json(json!({"order": b.order, "property_filter": b.property_filter})).into_response()
        }
        Err(r) => *r,
    }
}

async fn requests(State(sim): State<Sim>) -> Response {
    Json(sim.requests()).into_response()
}

async fn clear_requests(State(sim): State<Sim>) -> Response {
    sim.clear_requests();
    StatusCode::NO_CONTENT.into_response()
}

#[derive(Serialize)]
struct Sent {
    thread_id: String,
    text: String,
}

async fn sent(State(sim): State<Sim>) -> Response {
    let v: Vec<Sent> = sim
        .sent_by_api()
        .into_iter()
        .map(|(thread_id, text)| Sent { thread_id, text })
        .collect();
    Json(v).into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawListName {
    Threads,
    Messages,
    Bookings,
}

#[derive(Deserialize)]
struct RawItemBody {
    list: RawListName,
    /// The property (threads) or thread (messages) whose list gets the item.
    scope: String,
    /// The item's bytes, base64 (standard): JSON cannot carry invalid UTF-8 otherwise.
    raw_base64: String,
}

async fn inject_raw_item(State(sim): State<Sim>, body: Bytes) -> Response {
    use base64::Engine as _;
    let b = match parse::<RawItemBody>(&body) {
        Ok(b) => b,
        Err(r) => return *r,
    };
    let raw = match base64::engine::general_purpose::STANDARD.decode(&b.raw_base64) {
        Ok(raw) => raw,
        Err(e) => return bad_request(format!("raw_base64: {e}")),
    };
    let list = match b.list {
        RawListName::Threads => RawList::Threads {
            property_id: b.scope,
        },
        RawListName::Messages => RawList::Messages { thread_id: b.scope },
        RawListName::Bookings => RawList::Bookings,
    };
    sim.inject_raw_item(list, raw);
    StatusCode::NO_CONTENT.into_response()
}

async fn clear_raw_items(State(sim): State<Sim>) -> Response {
    sim.clear_raw_items();
    StatusCode::NO_CONTENT.into_response()
}
