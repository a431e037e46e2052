//! Turning Channex response bodies into domain types.
//!
//! Owns: document-level decoding, per-item tolerance in lists and error-body decoding.
//! A list's items are decoded one by one: an item that is not valid JSON text of its kind
//! (an invalid UTF-8 byte, a lone surrogate escape such as `\udcff`, a wrong type, a
//! missing required field) or that carries an id which is not a sane Channex id (see
//! [`wire::is_valid_id`]) is reported in `skipped` (kind, id when sane, error, fingerprint)
//! and the rest of the page is kept. Reporting it (once) is the caller's job: the poller
//! logs, counts and audits it. The client uses exactly these functions, and they are public so
//! tests can feed them the seed's own example payloads.
//! Must not: do I/O, retry, or panic on any input.

use std::borrow::Cow;

use reqwest::Url;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::error::{ChannexError, ErrorCode};
use super::model::{BookingRecord, ItemKind, Message, Page, PageMeta, SkippedItem, Thread};
use super::wire;

fn decode_value(body: &[u8]) -> Result<Value, ChannexError> {
    serde_json::from_slice(body).map_err(|e| ChannexError::Decode(format!("invalid JSON: {e}")))
}

fn take_data(mut doc: Value) -> Result<(Value, Value), ChannexError> {
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| ChannexError::Decode("response is not a JSON object".into()))?;
    let data = obj
        .remove("data")
        .ok_or_else(|| ChannexError::Decode("response has no `data`".into()))?;
    let meta = obj.remove("meta").unwrap_or(Value::Null);
    Ok((data, meta))
}

/// The body as text, with every invalid UTF-8 sequence replaced by U+FFFD, and the byte
/// offsets (in the returned text) of those replacements: the items that contain one are
/// skipped as malformed rather than kept with an altered text.
fn lossy_text(body: &[u8]) -> (Cow<'_, str>, Vec<usize>) {
    if let Ok(text) = std::str::from_utf8(body) {
        return (Cow::Borrowed(text), Vec::new());
    }
    let mut text = String::with_capacity(body.len() + 8);
    let mut damaged = Vec::new();
    for chunk in body.utf8_chunks() {
        text.push_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            damaged.push(text.len());
            text.push(char::REPLACEMENT_CHARACTER);
        }
    }
    (Cow::Owned(text), damaged)
}

/// A list document, its items left undecoded so that each can fail on its own (a lone
/// surrogate escape in one title must not fail the whole page).
#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    #[serde(borrow, default)]
    meta: Option<&'a RawValue>,
}

/// Only the id of an item, for reporting one that does not decode.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<Value>,
}

/// A short stable digest of an item's text: the same malformed item is recognised
/// across cycles (reported once) without keeping its content.
fn fingerprint(raw: &str) -> String {
    Sha256::digest(raw.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every id an item carries (its own and its relationships'), all of which end up in
/// subjects, KV keys or `Nats-Msg-Id` headers downstream.
fn check_ids<A>(r: &wire::Resource<A>) -> Result<(), String> {
    let rel = &r.relationships;
    let ids = [
        Some(r.id.clone()),
        rel.booking_id(),
        rel.channel_id(),
        rel.property_id(),
        rel.message_thread_id(),
        rel.user_id(),
    ];
    match ids.into_iter().flatten().find(|id| !wire::is_valid_id(id)) {
        None => Ok(()),
        Some(bad) => Err(format!(
            "id {} is not a Channex id ([A-Za-z0-9_-], 1 to {} characters)",
            wire::describe_id(&bad),
            wire::MAX_ID_LEN
        )),
    }
}

/// One item of a list: the resource, or why it was skipped.
fn decode_item<A: DeserializeOwned>(
    raw: &RawValue,
    damaged: bool,
    kind: ItemKind,
) -> Result<wire::Resource<A>, SkippedItem> {
    let text = raw.get();
    let id = serde_json::from_str::<IdOnly>(text)
        .ok()
        .and_then(|i| i.id)
        .and_then(|v| v.as_str().map(str::to_string))
        .filter(|id| wire::is_valid_id(id));
    let skipped = |error: String| SkippedItem {
        kind,
        id: id.clone(),
        error,
        fingerprint: fingerprint(text),
    };
    if damaged {
        return Err(skipped("invalid UTF-8 in the item".into()));
    }
    let resource =
        serde_json::from_str::<wire::Resource<A>>(text).map_err(|e| skipped(e.to_string()))?;
    check_ids(&resource).map_err(skipped)?;
    Ok(resource)
}

/// Generic list decoding. `page`/`limit` are what was asked for; they fill `meta` when
/// the response has none (then `total` is estimated so that paging continues while pages
/// come back full).
fn parse_list<A, T>(
    body: &[u8],
    kind: ItemKind,
    page: u32,
    limit: u32,
    convert: impl Fn(wire::Resource<A>) -> T,
) -> Result<Page<T>, ChannexError>
where
    A: DeserializeOwned,
{
    let (text, damaged) = lossy_text(body);
    let doc: RawList<'_> = serde_json::from_str(&text)
        .map_err(|e| ChannexError::Decode(format!("invalid JSON: {e}")))?;
    let what = kind.as_str();
    let raw_items = doc
        .data
        .ok_or_else(|| ChannexError::Decode("response has no `data`".into()))
        .and_then(|d| {
            serde_json::from_str::<Vec<&RawValue>>(d.get())
                .map_err(|_| ChannexError::Decode(format!("{what} list: `data` is not an array")))
        })?;
    let raw_count = raw_items.len() as u64;
    let mut items = Vec::with_capacity(raw_items.len());
    let mut skipped = Vec::new();
    for raw in raw_items {
        let start = raw.get().as_ptr() as usize - text.as_ptr() as usize;
        let range = start..start + raw.get().len();
        let is_damaged = damaged.iter().any(|at| range.contains(at));
        match decode_item::<A>(raw, is_damaged, kind) {
            Ok(w) => items.push(convert(w)),
            Err(s) => skipped.push(s),
        }
    }
    let meta = doc
        .meta
        .and_then(|m| serde_json::from_str::<wire::ListMeta>(m.get()).ok());
    Ok(Page {
        items,
        meta: page_meta(meta, page, limit, raw_count),
        skipped,
    })
}

fn page_meta(meta: Option<wire::ListMeta>, page: u32, limit: u32, raw_count: u64) -> PageMeta {
    match meta {
        Some(m) => PageMeta {
            limit: m.limit,
            order_by: m.order_by,
            order_direction: m.order_direction,
            page: m.page,
            total: m.total,
        },
        None => {
            let seen = u64::from(page.saturating_sub(1)) * u64::from(limit) + raw_count;
            PageMeta {
                limit,
                order_by: String::new(),
                order_direction: String::new(),
                page,
                total: if raw_count >= u64::from(limit) {
                    seen + 1
                } else {
                    seen
                },
            }
        }
    }
}

/// `GET /message_threads` body.
pub fn parse_thread_page(
    body: &[u8],
    base: &Url,
    page: u32,
    limit: u32,
) -> Result<Page<Thread>, ChannexError> {
    parse_list(body, ItemKind::Thread, page, limit, |w| {
        Thread::from_wire(w, base)
    })
}

/// `GET /message_threads/:id/messages` or `GET /bookings/:id/messages` body.
pub fn parse_message_page(
    body: &[u8],
    base: &Url,
    page: u32,
    limit: u32,
) -> Result<Page<Message>, ChannexError> {
    parse_list(body, ItemKind::Message, page, limit, |w| {
        Message::from_wire(w, base)
    })
}

/// `GET /bookings` body. A booking with a bad date, no status or an insane id is skipped
/// (reported in `skipped`), the rest of the page kept.
pub fn parse_booking_page(
    body: &[u8],
    page: u32,
    limit: u32,
) -> Result<Page<BookingRecord>, ChannexError> {
    parse_list(
        body,
        ItemKind::Booking,
        page,
        limit,
        BookingRecord::from_wire,
    )
}

/// `{"data": <booking>}` (`GET /bookings/:id`).
pub fn parse_booking_document(body: &[u8]) -> Result<BookingRecord, ChannexError> {
    let what = "booking";
    let w = checked(parse_single::<wire::BookingResource>(body, what)?, what)?;
    Ok(BookingRecord::from_wire(w))
}

fn parse_single<W: DeserializeOwned>(body: &[u8], what: &str) -> Result<W, ChannexError> {
    let (data, _) = take_data(decode_value(body)?)?;
    serde_json::from_value(data).map_err(|e| ChannexError::Decode(format!("{what}: {e}")))
}

/// A single resource whose ids are checked like a list item's.
fn checked<A>(r: wire::Resource<A>, what: &str) -> Result<wire::Resource<A>, ChannexError> {
    check_ids(&r).map_err(|e| ChannexError::Decode(format!("{what}: {e}")))?;
    Ok(r)
}

/// `{"data": <message_thread>}` (get, close).
pub fn parse_thread_document(body: &[u8], base: &Url) -> Result<Thread, ChannexError> {
    let what = "message_thread";
    let w = checked(parse_single::<wire::ThreadResource>(body, what)?, what)?;
    Ok(Thread::from_wire(w, base))
}

/// `{"data": <message>}` (send message / attachment).
pub fn parse_message_document(body: &[u8], base: &Url) -> Result<Message, ChannexError> {
    let what = "message";
    let w = checked(parse_single::<wire::MessageResource>(body, what)?, what)?;
    Ok(Message::from_wire(w, base))
}

/// A bare message resource (as in the seed's inquiry example, not wrapped in `data`).
pub fn parse_message_resource(body: &[u8], base: &Url) -> Result<Message, ChannexError> {
    serde_json::from_slice::<wire::MessageResource>(body)
        .map(|w| Message::from_wire(w, base))
        .map_err(|e| ChannexError::Decode(format!("message: {e}")))
}

/// `{"data": {"id": "...", "type": "attachment"}}` → the attachment id.
pub fn parse_attachment_document(body: &[u8]) -> Result<String, ChannexError> {
    parse_single::<wire::ResourceRef>(body, "attachment").map(|r| r.id)
}

fn default_code(status: u16) -> ErrorCode {
    match status {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        429 => ErrorCode::TooManyRequests,
        _ => ErrorCode::Other(format!("http_{status}")),
    }
}

/// An error answer (4xx) → `ChannexError::Api`. Reads `{"errors": {"code","title"}}`, also
/// an array of such objects; when the body is something else the code comes from the
/// status.
pub fn parse_error(status: u16, body: &[u8]) -> ChannexError {
    let errors = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|mut v| v.get_mut("errors").map(Value::take));
    let obj = match errors {
        Some(Value::Array(mut a)) if !a.is_empty() => Some(a.swap_remove(0)),
        Some(v @ Value::Object(_)) => Some(v),
        _ => None,
    };
    let code = obj
        .as_ref()
        .and_then(|o| o.get("code"))
        .and_then(Value::as_str)
        .map(ErrorCode::parse)
        .unwrap_or_else(|| default_code(status));
    let title = obj
        .as_ref()
        .and_then(|o| o.get("title"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| {
            reqwest::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("error")
                .to_string()
        });
    ChannexError::Api {
        status,
        code,
        title,
    }
}
