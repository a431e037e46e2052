//! Turning Channex response bodies into domain types.
//!
//! Owns: document-level decoding, per-item tolerance in lists (a malformed item is
//! reported in `skipped` with a tracing warning and the rest of the page is kept), and
//! error-body decoding. The client uses exactly these functions, and they are public so
//! tests can feed them the seed's own example payloads.
//! Must not: do I/O, retry, or panic on any input.

use reqwest::Url;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ChannexError, ErrorCode};
use super::model::{Message, Page, PageMeta, SkippedItem, Thread};
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

/// Generic list decoding. `page`/`limit` are what was asked for; they fill `meta` when
/// the response has none (then `total` is estimated so that paging continues while pages
/// come back full).
fn parse_list<W, T>(
    body: &[u8],
    what: &str,
    page: u32,
    limit: u32,
    convert: impl Fn(W) -> T,
) -> Result<Page<T>, ChannexError>
where
    W: DeserializeOwned,
{
    let (data, meta) = take_data(decode_value(body)?)?;
    let Value::Array(raw_items) = data else {
        return Err(ChannexError::Decode(format!(
            "{what} list: `data` is not an array"
        )));
    };
    let raw_count = raw_items.len() as u64;
    let mut items = Vec::with_capacity(raw_items.len());
    let mut skipped = Vec::new();
    for raw in raw_items {
        let id = raw.get("id").and_then(Value::as_str).map(str::to_string);
        match serde_json::from_value::<W>(raw) {
            Ok(w) => items.push(convert(w)),
            Err(e) => {
                tracing::warn!(kind = what, id = ?id, error = %e, "skipping malformed Channex list item");
                skipped.push(SkippedItem {
                    id,
                    error: e.to_string(),
                });
            }
        }
    }
    let meta = match serde_json::from_value::<wire::ListMeta>(meta) {
        Ok(m) => PageMeta {
            limit: m.limit,
            order_by: m.order_by,
            order_direction: m.order_direction,
            page: m.page,
            total: m.total,
        },
        Err(_) => {
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
    };
    Ok(Page {
        items,
        meta,
        skipped,
    })
}

/// `GET /message_threads` body.
pub fn parse_thread_page(
    body: &[u8],
    base: &Url,
    page: u32,
    limit: u32,
) -> Result<Page<Thread>, ChannexError> {
    parse_list(
        body,
        "message_thread",
        page,
        limit,
        |w: wire::ThreadResource| Thread::from_wire(w, base),
    )
}

/// `GET /message_threads/:id/messages` or `GET /bookings/:id/messages` body.
pub fn parse_message_page(
    body: &[u8],
    base: &Url,
    page: u32,
    limit: u32,
) -> Result<Page<Message>, ChannexError> {
    parse_list(body, "message", page, limit, |w: wire::MessageResource| {
        Message::from_wire(w, base)
    })
}

fn parse_single<W: DeserializeOwned>(body: &[u8], what: &str) -> Result<W, ChannexError> {
    let (data, _) = take_data(decode_value(body)?)?;
    serde_json::from_value(data).map_err(|e| ChannexError::Decode(format!("{what}: {e}")))
}

/// `{"data": <message_thread>}` (get, close).
pub fn parse_thread_document(body: &[u8], base: &Url) -> Result<Thread, ChannexError> {
    parse_single::<wire::ThreadResource>(body, "message_thread").map(|w| Thread::from_wire(w, base))
}

/// `{"data": <message>}` (send message / attachment).
pub fn parse_message_document(body: &[u8], base: &Url) -> Result<Message, ChannexError> {
    parse_single::<wire::MessageResource>(body, "message").map(|w| Message::from_wire(w, base))
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
