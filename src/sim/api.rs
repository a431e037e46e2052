//! The simulated Channex Messages API under `/api/v1`: handlers plus the gate middleware
//! (authentication, fault injection, latency, request recording).
//!
//! Owns: HTTP parsing of the API requests and the mapping of refusals to Channex's error
//! documents and status codes.
//! Must not: hold the store lock across an `.await`, or record/gate control requests.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::Utc;
use serde::Serialize;

use crate::channex::wire::{
    AttachmentUploadRequest, Document, ErrorDocument, ResourceRef, SendMessageRequest,
};

use super::state::{BrokenMessages, RawList, RecordedRequest, Refusal, SortField};
use super::Sim;

pub(crate) const PREFIX: &str = "/api/v1";

pub(crate) fn router(sim: Sim) -> Router {
    let r = |p: &str| format!("{PREFIX}{p}");
    Router::new()
        .route(&r("/message_threads"), get(list_threads))
        .route(&r("/message_threads/{id}"), get(get_thread))
        .route(
            &r("/message_threads/{id}/messages"),
            get(list_thread_messages).post(send_thread_message),
        )
        .route(&r("/message_threads/{id}/close"), post(close_thread))
        .route(
            &r("/message_threads/{id}/no_reply_needed"),
            post(no_reply_needed),
        )
        .route(
            &r("/bookings/{id}/messages"),
            get(list_booking_messages).post(send_booking_message),
        )
        .route(&r("/bookings"), get(super::bookings::list_bookings))
        .route(&r("/bookings/{id}"), get(super::bookings::get_booking))
        .route(
            &r("/booking_revisions/feed"),
            get(super::bookings::revisions_feed),
        )
        .route(
            &r("/booking_revisions/{id}/ack"),
            post(super::bookings::ack_revision),
        )
        .route(&r("/attachments"), post(upload_attachment))
        .route(&r("/attachments/{id}"), get(download_attachment))
        .route(&r("/{*rest}"), get(not_found).post(not_found))
        .layer(from_fn_with_state(sim.clone(), gate))
        .with_state(sim)
}

// -- responses ---------------------------------------------------------------------------

pub(crate) fn error_response(status: StatusCode, code: &str, title: &str) -> Response {
    (status, Json(ErrorDocument::new(code, title))).into_response()
}

fn refusal(r: Refusal) -> Response {
    match r {
        Refusal::NotFound => {
            error_response(StatusCode::NOT_FOUND, "not_found", "Resouce Not Found")
        }
        Refusal::Forbidden => error_response(StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
        Refusal::NotSupported => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_supported",
            "Method not supported",
        ),
        Refusal::Validation(title) => {
            error_response(StatusCode::UNPROCESSABLE_ENTITY, "validation_error", title)
        }
    }
}

fn ok<T: Serialize>(v: T) -> Response {
    (StatusCode::OK, Json(v)).into_response()
}

fn respond<T: Serialize>(r: Result<T, Refusal>) -> Response {
    match r {
        Ok(v) => ok(v),
        Err(e) => refusal(e),
    }
}

// -- gate ----------------------------------------------------------------------------------

/// Percent-decodes a query string for the request log (`+` is a space).
fn decode_query(q: &str) -> String {
    let b = q.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One API write (POST) between the gate and its answer, for [`Sim::posts_in_flight`].
struct PostInFlight(Sim);

impl PostInFlight {
    fn start(sim: &Sim) -> Self {
        sim.lock().posts_in_flight += 1;
        PostInFlight(sim.clone())
    }
}

impl Drop for PostInFlight {
    fn drop(&mut self) {
        let mut s = self.0.lock();
        s.posts_in_flight = s.posts_in_flight.saturating_sub(1);
    }
}

/// Authentication, injected latency and faults, and the request log.
async fn gate(State(sim): State<Sim>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = decode_query(req.uri().query().unwrap_or(""));
    let given_key = req
        .headers()
        .get("user-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (faults, jitter, key_ok) = {
        let s = sim.lock();
        (
            s.faults.clone(),
            s.latency_jitter,
            given_key.as_deref() == Some(s.api_key.as_str()),
        )
    };
    // Counted down on drop: a client that gives up mid-request still leaves the count.
    let _post = (req.method() == Method::POST).then(|| PostInFlight::start(&sim));
    let latency = faults.latency + jitter.mul_f64(rand::random::<f64>());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let roll: f64 = rand::random();
    let resp = if !key_ok {
        error_response(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized")
    } else if roll < faults.rate_429 {
        let mut r = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "http_too_many_requests",
            "Too Many Requests",
        );
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(faults.retry_after_secs),
        );
        r
    } else if roll < faults.rate_429 + faults.rate_500 {
        error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "Internal Server Error",
        )
    } else {
        next.run(req).await
    };
    sim.lock().record(RecordedRequest {
        method,
        path,
        query,
        status: resp.status().as_u16(),
        at: Utc::now(),
    });
    resp
}

// -- query parameters ---------------------------------------------------------------------

type Params = Query<HashMap<String, String>>;

pub(crate) fn pagination(p: &HashMap<String, String>) -> (u32, u32) {
    let page = p
        .get("pagination[page]")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(1);
    let limit = p
        .get("pagination[limit]")
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    (page, limit)
}

/// `order[<field>]=asc|desc`; unknown fields or directions are ignored (the default order
/// is then applied and reported in `meta`).
fn order(p: &HashMap<String, String>) -> Option<(SortField, bool)> {
    p.iter().find_map(|(k, v)| {
        let field = k.strip_prefix("order[")?.strip_suffix(']')?;
        let field = SortField::parse(field)?;
        match v.trim().to_ascii_lowercase().as_str() {
            "desc" => Some((field, true)),
            "asc" => Some((field, false)),
            _ => None,
        }
    })
}

// -- handlers -------------------------------------------------------------------------------

async fn not_found() -> Response {
    refusal(Refusal::NotFound)
}

async fn list_threads(State(sim): State<Sim>, Query(p): Params) -> Response {
    let (page, limit) = pagination(&p);
    let filter = p.get("filter[property_id]").map(String::as_str);
    let store = sim.lock();
    let r = store
        .list_threads(filter, order(&p), page, limit)
        .map(|l| Document {
            data: l.items,
            meta: Some(l.meta),
        });
    let raw: Vec<Vec<u8>> = store
        .raw_items
        .iter()
        .filter(|(list, _)| match list {
            RawList::Threads { property_id } => filter.is_none_or(|f| f == property_id),
            RawList::Messages { .. } | RawList::Bookings => false,
        })
        .flat_map(|(_, items)| items.iter().cloned())
        .collect();
    drop(store);
    respond_with_raw(r, if page == 1 { &raw } else { &[] })
}

/// Like [`respond`], with `raw` spliced verbatim in front of the document's `data` items.
pub(crate) fn respond_with_raw<T: Serialize>(
    r: Result<Document<Vec<T>>, Refusal>,
    raw: &[Vec<u8>],
) -> Response {
    let doc = match r {
        Ok(doc) if !raw.is_empty() => doc,
        other => return respond(other),
    };
    let Ok(body) = serde_json::to_vec(&doc) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // serde_json writes struct fields in order: the body starts with `{"data":[`.
    let prefix = b"{\"data\":[";
    let Some(rest) = body.strip_prefix(prefix.as_slice()) else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let mut out = prefix.to_vec();
    for (i, item) in raw.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    if !rest.starts_with(b"]") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    (StatusCode::OK, [("content-type", "application/json")], out).into_response()
}

async fn get_thread(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    respond(sim.lock().get_thread(&id).map(|t| Document {
        data: t,
        meta: None,
    }))
}

fn messages_of(sim: &Sim, thread_id: &str, p: &HashMap<String, String>) -> Response {
    let broken = sim.lock().broken_messages.get(thread_id).copied();
    match broken {
        Some(BrokenMessages::Malformed) => {
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                r#"{"data": {"unexpected": true}, "meta": "#,
            )
                .into_response();
        }
        Some(BrokenMessages::NotFound) => {
            return error_response(StatusCode::NOT_FOUND, "not_found", "Resouce Not Found");
        }
        None => {}
    }
    let (page, limit) = pagination(p);
    let store = sim.lock();
    let r = store
        .list_messages(thread_id, page, limit)
        .map(|l| Document {
            data: l.items,
            meta: Some(l.meta),
        });
    let list = RawList::Messages {
        thread_id: thread_id.to_string(),
    };
    let raw = match store.raw_items.get(&list) {
        Some(items) if page == 1 => items.clone(),
        _ => Vec::new(),
    };
    drop(store);
    respond_with_raw(r, &raw)
}

async fn list_thread_messages(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Response {
    messages_of(&sim, &id, &p)
}

async fn list_booking_messages(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    Query(p): Params,
) -> Response {
    let thread = sim.lock().booking_thread(&id);
    match thread {
        Ok(t) => messages_of(&sim, &t, &p),
        Err(e) => refusal(e),
    }
}

fn send_to(sim: &Sim, thread_id: &str, body: &Bytes) -> Response {
    let req: SendMessageRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(_) => return refusal(Refusal::Validation("Validation Error")),
    };
    respond(
        sim.lock()
            .send_message(thread_id, req.message.message, req.message.attachment_id)
            .map(|m| Document {
                data: m,
                meta: None,
            }),
    )
}

async fn send_thread_message(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    send_to(&sim, &id, &body)
}

async fn send_booking_message(
    State(sim): State<Sim>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let thread = sim.lock().booking_thread_or_open(&id);
    match thread {
        Ok(t) => send_to(&sim, &t, &body),
        Err(e) => refusal(e),
    }
}

async fn close_thread(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    respond(sim.lock().close_thread(&id).map(|t| Document {
        data: t,
        meta: None,
    }))
}

/// Answers 200 with the thread document (`{"data": <message_thread>}`), like `close`.
async fn no_reply_needed(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    respond(sim.lock().no_reply_needed(&id).map(|t| Document {
        data: t,
        meta: None,
    }))
}

async fn upload_attachment(State(sim): State<Sim>, body: Bytes) -> Response {
    let req: AttachmentUploadRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(_) => return refusal(Refusal::Validation("Validation Error")),
    };
    let bytes = match base64::engine::general_purpose::STANDARD.decode(req.attachment.file.trim()) {
        Ok(b) => b,
        Err(_) => return refusal(Refusal::Validation("file is not valid base64")),
    };
    let id = sim.lock().add_attachment(req.attachment.file_type, bytes);
    ok(Document {
        data: ResourceRef {
            id,
            kind: "attachment".into(),
            title: None,
        },
        meta: None,
    })
}

async fn download_attachment(State(sim): State<Sim>, Path(id): Path<String>) -> Response {
    let Some(a) = sim.lock().attachment(&id) else {
        return refusal(Refusal::NotFound);
    };
    let ct = HeaderValue::from_str(&a.file_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    ([(header::CONTENT_TYPE, ct)], a.bytes).into_response()
}

#[cfg(test)]
mod tests {
    use super::decode_query;

    #[test]
    fn decodes_queries() {
        assert_eq!(
            decode_query("pagination%5Bpage%5D=2&x=a+b"),
            "pagination[page]=2&x=a b"
        );
        assert_eq!(decode_query("bad%zz%4"), "bad%zz%4");
    }
}
