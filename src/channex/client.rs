//! The HTTP client of the Channex Messages API.
//!
//! Owns: authentication (`user-api-key` header), URL building, the client-side rate
//! limiter, retries with backoff, pagination and the request counters.
//! Must not: know about events, NATS, rules or the executor's ledger; log or format the API
//! key (it lives only inside a sensitive header value of the HTTP client).
//!
//! Retry policy (see the `channex` module doc for the reasoning):
//! - idempotent requests (all GETs, `close`, `no_reply_needed`, attachment upload): retried
//!   on 429, 5xx, timeouts and transport errors, up to `max_retries`;
//! - sends (`POST .../messages`): retried only on 429 and on connection errors (the request
//!   never left); a 5xx, a timeout or a broken connection after sending returns at once with
//!   `is_ambiguous() == true`;
//! - other 4xx: never retried.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng as _;
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, Url};
use serde_json::json;

use super::error::ChannexError;
use super::model::{Listing, Message, Page, Thread, ThreadQuery};
use super::parse;

/// A Channex API key. Never printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The secret itself, for the one place that needs it (the request header).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Options of [`ChannexClient`]. `ClientOptions::new(base_url, key)` fills the defaults.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// API root, e.g. `https://staging.channex.io/api/v1/` (a missing trailing `/` is added).
    pub base_url: String,
    pub api_key: ApiKey,
    /// Client-side budget (default 600). A burst of up to `requests_per_minute / 30`
    /// (at least 1, at most 50) requests is allowed.
    pub requests_per_minute: u32,
    /// Retries after the first attempt (default 5).
    pub max_retries: u32,
    /// Per-request timeout (default 30 s).
    pub timeout: Duration,
    /// First backoff step (default 250 ms); doubles per retry, with jitter.
    pub backoff_base: Duration,
    /// Backoff cap (default 30 s). A `Retry-After` longer than this is not waited out:
    /// the call fails with `RateLimited { retry_after }` so the caller can reschedule.
    pub backoff_max: Duration,
}

impl ClientOptions {
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        ClientOptions {
            base_url: base_url.into(),
            api_key,
            requests_per_minute: 600,
            max_retries: 5,
            timeout: Duration::from_secs(30),
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// Counters since the client was created (shared by clones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// HTTP requests put on the wire (retries included).
    pub requests_sent: u64,
    /// Attempts repeated after a retryable failure.
    pub retries: u64,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// 5xx answers seen.
    pub server_errors: u64,
}

#[derive(Default)]
struct Counters {
    requests_sent: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    server_errors: AtomicU64,
}

struct Inner {
    http: reqwest::Client,
    base: Url,
    limiter: DefaultDirectRateLimiter,
    max_retries: u32,
    backoff_base: Duration,
    backoff_max: Duration,
    counters: Counters,
}

/// Typed client of the Channex Messages API. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct ChannexClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for ChannexClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannexClient")
            .field("base_url", &self.inner.base.as_str())
            .field("api_key", &"***")
            .finish()
    }
}

/// Whether a request may be repeated after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Repeating it cannot do harm.
    Idempotent,
    /// A message send: repeat only when it certainly was not applied.
    Send,
}

const MAX_PAGES: u32 = 100_000;

impl ChannexClient {
    pub fn new(opts: ClientOptions) -> Result<Self, ChannexError> {
        let mut base_str = opts.base_url.trim().to_string();
        if !base_str.ends_with('/') {
            base_str.push('/');
        }
        let base = Url::parse(&base_str)
            .map_err(|e| ChannexError::InvalidConfig(format!("base_url {base_str:?}: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(ChannexError::InvalidConfig(format!(
                "base_url {base_str:?} must be an http(s) URL"
            )));
        }
        if opts.api_key.is_empty() {
            return Err(ChannexError::InvalidConfig("api_key is empty".into()));
        }
        let rpm = NonZeroU32::new(opts.requests_per_minute).ok_or_else(|| {
            ChannexError::InvalidConfig("requests_per_minute must be at least 1".into())
        })?;
        let burst = NonZeroU32::new((opts.requests_per_minute / 30).clamp(1, 50))
            .unwrap_or(NonZeroU32::MIN);
        let limiter = RateLimiter::direct(Quota::per_minute(rpm).allow_burst(burst));

        let mut key = HeaderValue::from_str(opts.api_key.expose()).map_err(|_| {
            ChannexError::InvalidConfig(
                "api_key contains characters not allowed in a header".into(),
            )
        })?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert("user-api-key", key);
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(opts.timeout)
            .user_agent(concat!("concierge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ChannexError::InvalidConfig(format!("HTTP client: {e}")))?;
        Ok(ChannexClient {
            inner: Arc::new(Inner {
                http,
                base,
                limiter,
                max_retries: opts.max_retries,
                backoff_base: opts.backoff_base,
                backoff_max: opts.backoff_max.max(opts.backoff_base),
                counters: Counters::default(),
            }),
        })
    }

    /// The API root this client talks to (always ends with `/`).
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    pub fn stats(&self) -> ClientStats {
        let c = &self.inner.counters;
        ClientStats {
            requests_sent: c.requests_sent.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            server_errors: c.server_errors.load(Ordering::Relaxed),
        }
    }

    // -- threads ---------------------------------------------------------------------

    /// One page (from 1) of `GET /message_threads`.
    pub async fn list_threads_page(
        &self,
        q: &ThreadQuery,
        page: u32,
    ) -> Result<Page<Thread>, ChannexError> {
        let page = page.max(1);
        let limit = q.effective_limit();
        let mut query = vec![
            ("pagination[page]".to_string(), page.to_string()),
            ("pagination[limit]".to_string(), limit.to_string()),
        ];
        if let Some(p) = &q.property_id {
            query.push(("filter[property_id]".to_string(), p.clone()));
        }
        if let Some(field) = &q.order_by {
            query.push((
                format!("order[{field}]"),
                q.order_direction.as_str().to_string(),
            ));
        }
        let body = self
            .call(
                Method::GET,
                &["message_threads"],
                &query,
                None,
                Retry::Idempotent,
            )
            .await?;
        parse::parse_thread_page(&body, &self.inner.base, page, limit)
    }

    /// Every page of `GET /message_threads`.
    pub async fn list_threads(&self, q: &ThreadQuery) -> Result<Listing<Thread>, ChannexError> {
        let mut honoured = true;
        let listing = collect_pages(
            |page| self.list_threads_page(q, page),
            |t: &Thread| t.id.clone(),
            |meta| honoured &= q.order_honoured_by(meta),
        )
        .await?;
        Ok(Listing {
            order_honoured: honoured,
            ..listing
        })
    }

    pub async fn get_thread(&self, thread_id: &str) -> Result<Thread, ChannexError> {
        let body = self
            .call(
                Method::GET,
                &["message_threads", thread_id],
                &[],
                None,
                Retry::Idempotent,
            )
            .await?;
        parse::parse_thread_document(&body, &self.inner.base)
    }

    /// `POST /message_threads/:id/close` → the thread as Channex returns it.
    pub async fn close_thread(&self, thread_id: &str) -> Result<Thread, ChannexError> {
        let body = self
            .call(
                Method::POST,
                &["message_threads", thread_id, "close"],
                &[],
                None,
                Retry::Idempotent,
            )
            .await?;
        parse::parse_thread_document(&body, &self.inner.base)
    }

    /// `POST /message_threads/:id/no_reply_needed` (Booking.com only; others answer 422
    /// `not_supported`). The response body is ignored.
    pub async fn mark_no_reply_needed(&self, thread_id: &str) -> Result<(), ChannexError> {
        self.call(
            Method::POST,
            &["message_threads", thread_id, "no_reply_needed"],
            &[],
            None,
            Retry::Idempotent,
        )
        .await
        .map(|_| ())
    }

    // -- thread messages ---------------------------------------------------------------

    /// One page (from 1, newest first) of `GET /message_threads/:id/messages`.
    pub async fn list_thread_messages_page(
        &self,
        thread_id: &str,
        page: u32,
        limit: u32,
    ) -> Result<Page<Message>, ChannexError> {
        self.messages_page(&["message_threads", thread_id, "messages"], page, limit)
            .await
    }

    /// Every message of a thread, newest first.
    pub async fn list_thread_messages(
        &self,
        thread_id: &str,
    ) -> Result<Listing<Message>, ChannexError> {
        collect_pages(
            |page| self.list_thread_messages_page(thread_id, page, 100),
            |m: &Message| m.id.clone(),
            |_| {},
        )
        .await
    }

    pub async fn send_thread_message(
        &self,
        thread_id: &str,
        text: &str,
    ) -> Result<Message, ChannexError> {
        self.send(
            &["message_threads", thread_id, "messages"],
            json!({"message": {"message": text}}),
        )
        .await
    }

    pub async fn send_thread_attachment(
        &self,
        thread_id: &str,
        attachment_id: &str,
        text: Option<&str>,
    ) -> Result<Message, ChannexError> {
        self.send(
            &["message_threads", thread_id, "messages"],
            attachment_body(attachment_id, text),
        )
        .await
    }

    // -- booking messages --------------------------------------------------------------

    /// Every message of a booking's thread, newest first.
    pub async fn list_booking_messages(
        &self,
        booking_id: &str,
    ) -> Result<Listing<Message>, ChannexError> {
        let segments = ["bookings", booking_id, "messages"];
        collect_pages(
            |page| self.messages_page(&segments, page, 100),
            |m: &Message| m.id.clone(),
            |_| {},
        )
        .await
    }

    pub async fn send_booking_message(
        &self,
        booking_id: &str,
        text: &str,
    ) -> Result<Message, ChannexError> {
        self.send(
            &["bookings", booking_id, "messages"],
            json!({"message": {"message": text}}),
        )
        .await
    }

    pub async fn send_booking_attachment(
        &self,
        booking_id: &str,
        attachment_id: &str,
        text: Option<&str>,
    ) -> Result<Message, ChannexError> {
        self.send(
            &["bookings", booking_id, "messages"],
            attachment_body(attachment_id, text),
        )
        .await
    }

    /// `POST /attachments` with the file base64-encoded; returns the attachment id to pass
    /// to `send_*_attachment`. Retried like an idempotent call (a duplicate upload only
    /// leaves an unused attachment behind).
    pub async fn upload_attachment(
        &self,
        bytes: &[u8],
        file_name: &str,
        file_type: &str,
    ) -> Result<String, ChannexError> {
        let body = json!({"attachment": {
            "file": base64::engine::general_purpose::STANDARD.encode(bytes),
            "file_name": file_name,
            "file_type": file_type,
        }});
        let resp = self
            .call(
                Method::POST,
                &["attachments"],
                &[],
                Some(&body),
                Retry::Idempotent,
            )
            .await?;
        parse::parse_attachment_document(&resp)
    }

    // -- plumbing ------------------------------------------------------------------------

    async fn messages_page(
        &self,
        segments: &[&str],
        page: u32,
        limit: u32,
    ) -> Result<Page<Message>, ChannexError> {
        let page = page.max(1);
        let limit = limit.clamp(1, 100);
        let query = [
            ("pagination[page]".to_string(), page.to_string()),
            ("pagination[limit]".to_string(), limit.to_string()),
        ];
        let body = self
            .call(Method::GET, segments, &query, None, Retry::Idempotent)
            .await?;
        parse::parse_message_page(&body, &self.inner.base, page, limit)
    }

    async fn send(
        &self,
        segments: &[&str],
        body: serde_json::Value,
    ) -> Result<Message, ChannexError> {
        let resp = self
            .call(Method::POST, segments, &[], Some(&body), Retry::Send)
            .await?;
        parse::parse_message_document(&resp, &self.inner.base)
    }

    fn url(&self, segments: &[&str]) -> Result<Url, ChannexError> {
        let mut url = self.inner.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| ChannexError::InvalidConfig("base_url cannot be a base".into()))?;
            path.pop_if_empty();
            path.extend(segments);
        }
        Ok(url)
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.inner.backoff_base.as_millis() as u64;
        let cap = self.inner.backoff_max.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempt.min(32)).min(cap);
        // "Equal jitter": between half and all of the exponential step.
        let low = exp / 2;
        let ms = if exp > low {
            rand::rng().random_range(low..=exp)
        } else {
            exp
        };
        Duration::from_millis(ms)
    }

    /// Sends one logical request with rate limiting and the retry policy; returns the
    /// body of the 2xx answer.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<&serde_json::Value>,
        retry: Retry,
    ) -> Result<bytes::Bytes, ChannexError> {
        let url = self.url(segments)?;
        let endpoint = endpoint_label(&method, segments);
        let idempotent = retry == Retry::Idempotent;
        let counters = &self.inner.counters;
        let max = self.inner.max_retries;
        let mut attempt: u32 = 0;
        loop {
            self.inner.limiter.until_ready().await;
            counters.requests_sent.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .inner
                .http
                .request(method.clone(), url.clone())
                .query(query);
            if let Some(b) = body {
                req = req.json(b);
            }
            let sent = req.send().await;
            let status_label = match &sent {
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(e) if e.is_timeout() => "timeout".to_string(),
                Err(_) => "transport_error".to_string(),
            };
            metrics::counter!("concierge_channex_requests_total", "endpoint" => endpoint.clone(), "status" => status_label)
                .increment(1);
            let delay = match sent {
                Err(e) => {
                    // A connect error means the request never reached Channex.
                    let not_sent = e.is_connect();
                    let err = if e.is_timeout() && !not_sent {
                        ChannexError::Timeout {
                            ambiguous: !idempotent,
                        }
                    } else {
                        ChannexError::Transport {
                            message: error_chain(&e),
                            ambiguous: !idempotent && !not_sent,
                        }
                    };
                    if (idempotent || not_sent) && attempt < max {
                        tracing::debug!(%method, path = url.path(), attempt, error = %err, "retrying Channex request");
                        self.backoff(attempt)
                    } else {
                        return Err(err);
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    let code = status.as_u16();
                    if status.is_success() {
                        match resp.bytes().await {
                            Ok(b) => return Ok(b),
                            Err(e) => {
                                let err = if e.is_timeout() {
                                    ChannexError::Timeout {
                                        ambiguous: !idempotent,
                                    }
                                } else {
                                    ChannexError::Transport {
                                        message: error_chain(&e),
                                        ambiguous: !idempotent,
                                    }
                                };
                                if idempotent && attempt < max {
                                    self.backoff(attempt)
                                } else {
                                    return Err(err);
                                }
                            }
                        }
                    } else if code == 429 {
                        counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        let retry_after = resp
                            .headers()
                            .get(RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after);
                        if attempt >= max {
                            return Err(ChannexError::RateLimited { retry_after });
                        }
                        match retry_after {
                            Some(d) if d > self.inner.backoff_max => {
                                return Err(ChannexError::RateLimited { retry_after });
                            }
                            Some(d) => d,
                            None => self.backoff(attempt),
                        }
                    } else if status.is_server_error() {
                        counters.server_errors.fetch_add(1, Ordering::Relaxed);
                        if !idempotent {
                            return Err(ChannexError::Server {
                                status: code,
                                ambiguous: true,
                            });
                        }
                        if attempt >= max {
                            return Err(ChannexError::Server {
                                status: code,
                                ambiguous: false,
                            });
                        }
                        self.backoff(attempt)
                    } else {
                        let bytes = resp.bytes().await.unwrap_or_default();
                        return Err(parse::parse_error(code, &bytes));
                    }
                }
            };
            counters.retries.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%method, path = url.path(), attempt, delay_ms = delay.as_millis() as u64, "Channex request will be retried");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

fn attachment_body(attachment_id: &str, text: Option<&str>) -> serde_json::Value {
    match text {
        Some(t) => json!({"message": {"attachment_id": attachment_id, "message": t}}),
        None => json!({"message": {"attachment_id": attachment_id}}),
    }
}

/// `Retry-After`: delay-seconds (integer or decimal) or an HTTP date.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Reads pages 1.. until `meta.total` is covered or a page comes back empty.
async fn collect_pages<T, F, Fut, K>(
    mut fetch: F,
    key: K,
    mut on_meta: impl FnMut(&super::model::PageMeta),
) -> Result<Listing<T>, ChannexError>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<Page<T>, ChannexError>>,
    K: Fn(&T) -> String,
{
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    let mut seen = HashSet::new();
    let mut pages = 0u32;
    let mut total;
    let mut page = 1u32;
    loop {
        let p = fetch(page).await?;
        pages += 1;
        on_meta(&p.meta);
        total = p.meta.total;
        let raw = p.items.len() + p.skipped.len();
        let page_size = u64::from(p.meta.limit.max(1));
        for item in p.items {
            if seen.insert(key(&item)) {
                items.push(item);
            }
        }
        skipped.extend(p.skipped);
        if raw == 0 || u64::from(page) * page_size >= total {
            break;
        }
        if page >= MAX_PAGES {
            tracing::warn!(pages, total, "stopping Channex pagination at the page cap");
            break;
        }
        page += 1;
    }
    Ok(Listing {
        items,
        skipped,
        pages,
        total,
        order_honoured: true,
    })
}

/// `GET message_threads/:id/messages`: the endpoint without ids, for metric labels.
fn endpoint_label(method: &Method, segments: &[&str]) -> String {
    let path: Vec<&str> = segments
        .iter()
        .enumerate()
        .map(|(i, s)| if i % 2 == 1 { ":id" } else { *s })
        .collect();
    format!("{method} {}", path.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after(" 0.5 "), Some(Duration::from_millis(500)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn key_is_hidden() {
        let k = ApiKey::new("sekrit");
        assert_eq!(format!("{k}"), "***");
        assert!(!format!("{k:?}").contains("sekrit"));
    }
}
