//! The HTTP client of the Channex Messages API.
//!
//! Owns: authentication (`user-api-key` header), URL building (each id checked with the
//! parser's rule, [`wire::is_valid_id`], and percent-encoded as one path segment: no id
//! can change the path; a bad one is [`ChannexError::InvalidId`] and nothing is sent),
//! the client-side rate limiter, retries with backoff, pagination and the request
//! counters.
//! Must not: know about events, NATS, rules or the executor's ledger; log or format the API
//! key (it lives only inside a sensitive header value of the HTTP client).
//!
//! Retry policy (see the `channex` module doc for the reasoning; decided by the pure
//! [`retry::classify`], this module only carries it out):
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
use super::model::{BookingQuery, BookingRecord, Listing, Message, Page, Thread, ThreadQuery};
use super::parse;
use super::retry::{self, AttemptOutcome, RequestKind, RetryDecision, RetryPolicy};
use super::wire;

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
    policy: RetryPolicy,
    backoff_base: Duration,
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

/// One logical request, as each of its attempts sends it.
struct Request<'a> {
    method: Method,
    url: Url,
    query: &'a [(String, String)],
    body: Option<&'a serde_json::Value>,
    /// The metric label, e.g. `GET message_threads/:id/messages`.
    endpoint: String,
}

const MAX_PAGES: u32 = 100_000;

/// One segment of a Channex path: a name of the API, or an id that came from outside
/// (checked with the parser's id rule before it goes into a URL).
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    Name(&'static str),
    Id(&'a str),
}

impl<'a> Seg<'a> {
    fn as_str(&self) -> &'a str {
        match *self {
            Seg::Name(name) => name,
            Seg::Id(id) => id,
        }
    }

    fn invalid_id(&self) -> Option<&'a str> {
        match *self {
            Seg::Id(id) if !wire::is_valid_id(id) => Some(id),
            _ => None,
        }
    }
}

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
                policy: RetryPolicy {
                    max_retries: opts.max_retries,
                    backoff_max: opts.backoff_max.max(opts.backoff_base),
                },
                backoff_base: opts.backoff_base,
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
                &[Seg::Name("message_threads")],
                &query,
                None,
                RequestKind::Idempotent,
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
                &[Seg::Name("message_threads"), Seg::Id(thread_id)],
                &[],
                None,
                RequestKind::Idempotent,
            )
            .await?;
        parse::parse_thread_document(&body, &self.inner.base)
    }

    /// `POST /message_threads/:id/close` → the thread as Channex returns it.
    pub async fn close_thread(&self, thread_id: &str) -> Result<Thread, ChannexError> {
        let body = self
            .call(
                Method::POST,
                &[
                    Seg::Name("message_threads"),
                    Seg::Id(thread_id),
                    Seg::Name("close"),
                ],
                &[],
                None,
                RequestKind::Idempotent,
            )
            .await?;
        parse::parse_thread_document(&body, &self.inner.base)
    }

    /// `POST /message_threads/:id/no_reply_needed` (Booking.com only; others answer 422
    /// `not_supported`). The response body is ignored.
    pub async fn mark_no_reply_needed(&self, thread_id: &str) -> Result<(), ChannexError> {
        self.call(
            Method::POST,
            &[
                Seg::Name("message_threads"),
                Seg::Id(thread_id),
                Seg::Name("no_reply_needed"),
            ],
            &[],
            None,
            RequestKind::Idempotent,
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
        self.messages_page(
            &[
                Seg::Name("message_threads"),
                Seg::Id(thread_id),
                Seg::Name("messages"),
            ],
            page,
            limit,
        )
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
            &[
                Seg::Name("message_threads"),
                Seg::Id(thread_id),
                Seg::Name("messages"),
            ],
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
            &[
                Seg::Name("message_threads"),
                Seg::Id(thread_id),
                Seg::Name("messages"),
            ],
            attachment_body(attachment_id, text),
        )
        .await
    }

    // -- bookings (read only) ----------------------------------------------------------

    /// `GET /bookings/:id`: the booking at its latest revision.
    pub async fn get_booking(&self, booking_id: &str) -> Result<BookingRecord, ChannexError> {
        let body = self
            .call(
                Method::GET,
                &[Seg::Name("bookings"), Seg::Id(booking_id)],
                &[],
                None,
                RequestKind::Idempotent,
            )
            .await?;
        parse::parse_booking_document(&body)
    }

    /// One page (from 1) of `GET /bookings`, most recently updated first
    /// (`order[updated_at]=desc`; `meta.order_by` says whether Channex honoured it).
    pub async fn list_bookings_page(
        &self,
        q: &BookingQuery,
        page: u32,
    ) -> Result<Page<BookingRecord>, ChannexError> {
        let page = page.max(1);
        let limit = q.effective_limit();
        let mut query = vec![
            ("pagination[page]".to_string(), page.to_string()),
            ("pagination[limit]".to_string(), limit.to_string()),
            ("order[updated_at]".to_string(), "desc".to_string()),
        ];
        if let Some(p) = &q.property_id {
            query.push(("filter[property_id]".to_string(), p.clone()));
        }
        if let Some(since) = q.updated_since {
            query.push((
                "filter[updated_at][gte]".to_string(),
                since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ));
        }
        let body = self
            .call(
                Method::GET,
                &[Seg::Name("bookings")],
                &query,
                None,
                RequestKind::Idempotent,
            )
            .await?;
        parse::parse_booking_page(&body, page, limit)
    }

    // -- booking messages --------------------------------------------------------------

    /// Every message of a booking's thread, newest first.
    pub async fn list_booking_messages(
        &self,
        booking_id: &str,
    ) -> Result<Listing<Message>, ChannexError> {
        let segments = [
            Seg::Name("bookings"),
            Seg::Id(booking_id),
            Seg::Name("messages"),
        ];
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
            &[
                Seg::Name("bookings"),
                Seg::Id(booking_id),
                Seg::Name("messages"),
            ],
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
            &[
                Seg::Name("bookings"),
                Seg::Id(booking_id),
                Seg::Name("messages"),
            ],
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
                &[Seg::Name("attachments")],
                &[],
                Some(&body),
                RequestKind::Idempotent,
            )
            .await?;
        parse::parse_attachment_document(&resp)
    }

    // -- plumbing ------------------------------------------------------------------------

    async fn messages_page(
        &self,
        segments: &[Seg<'_>],
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
            .call(Method::GET, segments, &query, None, RequestKind::Idempotent)
            .await?;
        parse::parse_message_page(&body, &self.inner.base, page, limit)
    }

    async fn send(
        &self,
        segments: &[Seg<'_>],
        body: serde_json::Value,
    ) -> Result<Message, ChannexError> {
        let resp = self
            .call(Method::POST, segments, &[], Some(&body), RequestKind::Send)
            .await?;
        parse::parse_message_document(&resp, &self.inner.base)
    }

    /// The API root plus `segments`, each percent-encoded as one path segment. An id that
    /// is not a Channex id is refused before anything is sent: `url` skips `.` and `..`
    /// segments silently, so `..` would otherwise turn `message_threads/../messages` into
    /// `message_threads/messages`.
    fn url(&self, segments: &[Seg<'_>]) -> Result<Url, ChannexError> {
        if let Some(bad) = segments.iter().find_map(Seg::invalid_id) {
            return Err(ChannexError::InvalidId(wire::describe_id(bad)));
        }
        let mut url = self.inner.base.clone();
        {
            let mut path = url
                .path_segments_mut()
                .map_err(|_| ChannexError::InvalidConfig("base_url cannot be a base".into()))?;
            path.pop_if_empty();
            path.extend(segments.iter().map(Seg::as_str));
        }
        Ok(url)
    }

    /// The delay before retry `attempt + 1` when Channex does not say: "equal jitter",
    /// between half and all of the exponential step.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = retry::backoff_step(
            self.inner.backoff_base,
            self.inner.policy.backoff_max,
            attempt,
        );
        let exp = step.as_millis() as u64;
        let low = exp / 2;
        let ms = if exp > low {
            rand::rng().random_range(low..=exp)
        } else {
            exp
        };
        Duration::from_millis(ms)
    }

    /// Sends one logical request with rate limiting and the retry policy
    /// ([`retry::classify`]); returns the body of the 2xx answer.
    async fn call(
        &self,
        method: Method,
        segments: &[Seg<'_>],
        query: &[(String, String)],
        body: Option<&serde_json::Value>,
        kind: RequestKind,
    ) -> Result<bytes::Bytes, ChannexError> {
        let request = Request {
            url: self.url(segments)?,
            endpoint: endpoint_label(&method, segments),
            method,
            query,
            body,
        };
        let mut attempt: u32 = 0;
        loop {
            let outcome = self.attempt(&request).await;
            let backoff = self.backoff(attempt);
            match retry::classify(outcome, attempt, kind, self.inner.policy, backoff) {
                RetryDecision::Success(body) => return Ok(body),
                RetryDecision::GiveUp(err) => return Err(err),
                RetryDecision::RetryAfter(delay) => {
                    self.inner.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(method = %request.method, path = request.url.path(), attempt, delay_ms = delay.as_millis() as u64, "Channex request will be retried");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
            }
        }
    }

    /// One attempt: waits for the rate limiter, sends, reads the answer as far as the retry
    /// policy needs it, and counts it (requests, 429s, 5xx, the per-status metric).
    async fn attempt(&self, request: &Request<'_>) -> AttemptOutcome {
        self.inner.limiter.until_ready().await;
        let counters = &self.inner.counters;
        counters.requests_sent.fetch_add(1, Ordering::Relaxed);
        let mut req = self
            .inner
            .http
            .request(request.method.clone(), request.url.clone())
            .query(request.query);
        if let Some(b) = request.body {
            req = req.json(b);
        }
        let sent = req.send().await;
        let status_label = match &sent {
            Ok(resp) => resp.status().as_u16().to_string(),
            Err(e) if e.is_timeout() => "timeout".to_string(),
            Err(_) => "transport_error".to_string(),
        };
        metrics::counter!("concierge_channex_requests_total", "endpoint" => request.endpoint.clone(), "status" => status_label)
            .increment(1);
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return sending_failed(&e),
        };
        let status = resp.status();
        if status.is_success() {
            return match resp.bytes().await {
                Ok(body) => AttemptOutcome::Success(body),
                Err(e) => reading_failed(&e),
            };
        }
        if status.as_u16() == 429 {
            counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let retry_after = resp
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, chrono::Utc::now()));
            return AttemptOutcome::RateLimited { retry_after };
        }
        if status.is_server_error() {
            counters.server_errors.fetch_add(1, Ordering::Relaxed);
            return AttemptOutcome::ServerError {
                status: status.as_u16(),
            };
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        AttemptOutcome::Refused(parse::parse_error(status.as_u16(), &bytes))
    }
}

/// A request that got no answer. A connect error means it never reached Channex.
fn sending_failed(e: &reqwest::Error) -> AttemptOutcome {
    if e.is_connect() {
        AttemptOutcome::ConnectFailed {
            message: error_chain(e),
        }
    } else if e.is_timeout() {
        AttemptOutcome::TimedOut
    } else {
        AttemptOutcome::TransportFailed {
            message: error_chain(e),
        }
    }
}

/// A 2xx answer whose body could not be read: the request was applied, the answer lost.
fn reading_failed(e: &reqwest::Error) -> AttemptOutcome {
    if e.is_timeout() {
        AttemptOutcome::TimedOut
    } else {
        AttemptOutcome::TransportFailed {
            message: error_chain(e),
        }
    }
}

fn attachment_body(attachment_id: &str, text: Option<&str>) -> serde_json::Value {
    match text {
        Some(t) => json!({"message": {"attachment_id": attachment_id, "message": t}}),
        None => json!({"message": {"attachment_id": attachment_id}}),
    }
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
fn endpoint_label(method: &Method, segments: &[Seg<'_>]) -> String {
    let path: Vec<&str> = segments
        .iter()
        .map(|s| match s {
            Seg::Name(name) => name,
            Seg::Id(_) => ":id",
        })
        .collect();
    format!("{method} {}", path.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_that_is_not_a_channex_id_never_reaches_a_url() {
        let client = ChannexClient::new(ClientOptions::new(
            "http://127.0.0.1:9/api/v1",
            ApiKey::new("k"),
        ))
        .expect("client");
        for bad in ["..", ".", "", "a/b", "a?b", "t 1", "%2e%2e"] {
            let err = client
                .url(&[
                    Seg::Name("message_threads"),
                    Seg::Id(bad),
                    Seg::Name("messages"),
                ])
                .expect_err(bad);
            assert!(matches!(err, ChannexError::InvalidId(_)), "{bad}: {err}");
            assert!(!err.is_transient());
        }
        let url = client
            .url(&[
                Seg::Name("message_threads"),
                Seg::Id("t-1_A"),
                Seg::Name("messages"),
            ])
            .expect("a Channex id");
        assert_eq!(url.path(), "/api/v1/message_threads/t-1_A/messages");
        let label = endpoint_label(&Method::GET, &[Seg::Name("bookings"), Seg::Id("b1")]);
        assert_eq!(label, "GET bookings/:id");
    }

    #[test]
    fn key_is_hidden() {
        let k = ApiKey::new("sekrit");
        assert_eq!(format!("{k}"), "***");
        assert!(!format!("{k:?}").contains("sekrit"));
    }
}
