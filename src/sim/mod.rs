//! A simulator of the Channex Messages API (axum), in-process for tests and standalone
//! for `concierge sim` / the demo, with fault injection.
//!
//! Owns: an in-memory world of properties, threads, messages, bookings and attachments
//! served over HTTP with the seed document's exact JSON shapes (it serialises the same
//! wire structs the client reads: [`crate::channex::wire`]), a request log and a control
//! API. Must not: depend on anything but the channex wire/domain types (no NATS, rules,
//! config); block the runtime (the store lock is never held across an `.await`).
//!
//! # API (`/api/v1`, header `user-api-key` required, else 401)
//! | Method | Path | Notes |
//! |---|---|---|
//! | GET | `/message_threads` | `pagination[page]` (from 1), `pagination[limit]` (default 10, max 100), `filter[property_id]`, `order[inserted_at\|updated_at\|last_message_received_at]=asc\|desc`; default and fallback order `inserted_at desc`; `meta` reports the order actually applied |
//! | GET | `/message_threads/:id` | |
//! | GET/POST | `/message_threads/:id/messages` | list newest first, paginated; POST `{"message":{"message":..}}` or `{"message":{"attachment_id":..,"message"?:..}}` |
//! | POST | `/message_threads/:id/close` | thread document |
//! | POST | `/message_threads/:id/no_reply_needed` | Booking.com only, else 422 `not_supported`; answers 200 with the thread document (`{"data": <message_thread>}`), like close |
//! | GET/POST | `/bookings/:booking_id/messages` | as the thread endpoints; 422 `not_supported` for providers other than Booking.com/Airbnb |
//! | POST | `/attachments` | `{"attachment":{"file":<base64>,"file_name","file_type"}}` → `{"data":{"id","type":"attachment"}}` |
//! | GET | `/attachments/:id` | the uploaded bytes (messages reference attachments as the relative URL `attachments/<id>`) |
//! | GET | `/bookings` | `filter[property_id]`, `filter[updated_at][gte]` (RFC 3339), `order[updated_at\|inserted_at]=asc\|desc` (default `inserted_at desc`), `pagination[page]`/`[limit]`; `meta` reports the order applied |
//! | GET | `/bookings/:id` | `{"data": <booking>}`: `attributes.status`, `arrival_date`, `departure_date`, `revision_id`, `ota_name`, `occupancy{adults,children,infants}`, `customer{name,surname,language}`, `inserted_at`, `updated_at` |
//! | GET | `/booking_revisions/feed` | revisions not acked yet (`type: booking_revision`, `attributes.booking_id`) |
//! | POST | `/booking_revisions/:id/ack` | records the ack (concierge must never call it: `/_sim/booking_acks`) |
//!
//! Booking messages (`/bookings/:id/messages`) of a booking without a thread open its
//! thread on the first POST, as Channex opens the OTA conversation.
//!
//! Errors use Channex's bodies: 401 `unauthorized`, 403 `forbidden` (property without the
//! messages app, also for thread/booking lookups and a filtered list), 404 `not_found`
//! ("Resouce Not Found", sic), 422 `not_supported` / `validation_error`. Faults: a fraction
//! `rate_429` of authenticated requests is answered 429 `http_too_many_requests` with a
//! `Retry-After: <retry_after_secs>` header, a fraction `rate_500` with 500, and every API
//! request is delayed by `latency` plus a random `0..=latency_jitter`.
//!
//! Shape notes (documented deviations/choices): threads without a booking (Airbnb
//! inquiries) carry `relationships.property.data.title`, as in the seed's inquiry example;
//! only system messages carry `attributes.meta`; property messages carry a `user`
//! relationship — the API user for messages sent through the API, a separate staff user
//! for [`Sim::staff_message`]. `last_message_received_at` is the newest message's time.
//! Timestamps are naive microseconds, strictly increasing; `non_response_at` is RFC 3339.
//!
//! # Control API (`/_sim/`, no auth, not recorded, no faults)
//! | Method | Path | Body → answer |
//! |---|---|---|
//! | POST | `/_sim/properties` | `{id, title, messages_app}` → `{id}` |
//! | POST | `/_sim/threads` | `{property_id, provider, title, with_booking}` → `{id, booking_id}` |
//! | GET | `/_sim/threads` | → thread ids, oldest first |
//! | POST | `/_sim/inquiries` | `{property_id, guest_name, non_response_at, checkin, checkout, guests, payout, currency}` → `{thread_id, message_id}` |
//! | POST | `/_sim/threads/:id/guest_messages` | `{text}` → `{id}` (404 unknown thread) |
//! | POST | `/_sim/threads/:id/staff_messages` | `{text}` → `{id}` |
//! | GET | `/_sim/threads/:id/no_reply_needed` | → `{count}` |
//! | PUT/GET | `/_sim/faults` | `{rate_429, rate_500, retry_after_secs, latency_ms, latency_jitter_ms}`: every API request waits `latency_ms` plus a uniform random `0..=latency_jitter_ms` |
//! | GET | `/_sim/posts_in_flight` | → `{count}`: API writes (POSTs, e.g. sends) received and not yet answered |
//! | PUT | `/_sim/list_features` | `{order: bool, property_filter: bool}`: whether list ordering / the property filter are honoured (default both) |
//! | GET/DELETE | `/_sim/requests` | recorded API requests `[{method, path, query, status, at}]` / clear |
//! | GET | `/_sim/sent` | messages sent through the API `[{thread_id, text}]` |
//! | POST | `/_sim/bookings` | `{property_id, ota_name, arrival_date, departure_date, guest_name, language?, adults?, children?, with_thread?}` → `{id, thread_id}` (a thread with `booking` relationship when `with_thread`) |
//! | POST | `/_sim/bookings/:id` | `{arrival_date?, departure_date?, status?}` → `{id, revision_id}`: a new revision (status `modified` unless given, e.g. `cancelled`) |
//! | GET | `/_sim/booking_acks` | → `{count}` of revision acks received |
//! | POST/DELETE | `/_sim/raw_items` | `{list: "threads"\|"messages"\|"bookings", scope: <property or thread id; ignored for bookings>, raw_base64}`: inject one raw (possibly malformed) item into page 1 of that list / clear all |

mod api;
mod bookings;
mod control;
mod state;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::channex::{Message, Thread};

pub use bookings::{BookingChangeRequest, NewBooking, SimBooking};
use state::Store;
pub use state::{BrokenMessages, RawList, RecordedRequest};

/// Injected faults. Rates are fractions in `0.0..=1.0` of authenticated API requests.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    pub rate_429: f64,
    pub rate_500: f64,
    /// `Retry-After` of injected 429s (default 1).
    pub retry_after_secs: u64,
    /// Added to every API request.
    pub latency: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate_429: 0.0,
            rate_500: 0.0,
            retry_after_secs: 1,
            latency: Duration::ZERO,
        }
    }
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The key clients must send in `user-api-key`.
    pub api_key: String,
    /// 0 = any free port.
    pub port: u16,
    pub faults: FaultConfig,
    /// Default 127.0.0.1.
    pub bind: IpAddr,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            api_key: "sim-api-key".into(),
            port: 0,
            faults: FaultConfig::default(),
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
        }
    }
}

impl SimOptions {
    pub fn with_key(api_key: impl Into<String>) -> Self {
        SimOptions {
            api_key: api_key.into(),
            ..Default::default()
        }
    }
}

/// Handle to a simulator's shared state (cheap to clone). World-building methods take
/// effect immediately for API clients.
#[derive(Clone)]
pub struct Sim {
    store: Arc<Mutex<Store>>,
    base: Arc<Url>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("base_url", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A running simulator. Stops when dropped or on [`SimServer::shutdown`].
pub struct SimServer {
    /// API root, e.g. `http://127.0.0.1:PORT/api/v1/`.
    pub base_url: String,
    /// Server root (control API under `{root_url}_sim/`), e.g. `http://127.0.0.1:PORT/`.
    pub root_url: String,
    pub addr: SocketAddr,
    pub sim: Sim,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl SimServer {
    /// Stops accepting, lets in-flight requests finish (up to 5 s) and returns.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Sim {
    /// Binds `opts.bind:opts.port` and serves the API and the control API on a tokio task.
    pub async fn start(opts: SimOptions) -> std::io::Result<SimServer> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::new(opts.bind, opts.port)).await?;
        let addr = listener.local_addr()?;
        let host = match addr.ip() {
            IpAddr::V6(ip) => format!("[{ip}]"),
            IpAddr::V4(ip) => ip.to_string(),
        };
        let root_url = format!("http://{host}:{}/", addr.port());
        let base_url = format!("{root_url}api/v1/");
        let base = Url::parse(&base_url)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let sim = Sim {
            store: Arc::new(Mutex::new(Store::new(opts.api_key, opts.faults))),
            base: Arc::new(base),
        };
        let app: Router = api::router(sim.clone()).merge(control::router(sim.clone()));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "channex simulator stopped");
            }
        });
        Ok(SimServer {
            base_url,
            root_url,
            addr,
            sim,
            shutdown: Some(tx),
            task: Some(task),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The API root this simulator serves.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// The API key clients must send.
    pub fn api_key(&self) -> String {
        self.lock().api_key.clone()
    }

    /// User id on property messages sent through the API.
    pub fn api_user_id(&self) -> String {
        self.lock().api_user_id.clone()
    }

    /// User id on property messages written by "staff" ([`Sim::staff_message`]).
    pub fn staff_user_id(&self) -> String {
        self.lock().staff_user_id.clone()
    }

    /// Adds or replaces a property. Threads of unknown properties create them with the
    /// messages app installed.
    pub fn add_property(&self, id: &str, title: &str, messages_app: bool) {
        self.lock().add_property(id, title, messages_app);
    }

    /// Opens an empty thread; `provider` is stored verbatim (`BookingCom`, `Airbnb`,
    /// `AirBNB`, anything). Returns the thread id.
    pub fn open_thread(
        &self,
        property_id: &str,
        provider: &str,
        title: &str,
        with_booking: bool,
    ) -> String {
        self.lock()
            .open_thread(property_id, provider, title, with_booking)
    }

    /// A booking (revision 1, status `new`); with `with_thread` its message thread too.
    /// Returns `(booking id, thread id)`; `None` when a date is not `YYYY-MM-DD`.
    pub fn create_booking(&self, req: &NewBooking) -> Option<(String, Option<String>)> {
        if !bookings::valid_dates(&req.arrival_date, &req.departure_date) {
            return None;
        }
        let mut store = self.lock();
        let now = store.tick();
        let id = uuid::Uuid::new_v4().to_string();
        store.stays.insert(SimBooking {
            id: id.clone(),
            property_id: req.property_id.clone(),
            status: "new".into(),
            arrival_date: req.arrival_date.clone(),
            departure_date: req.departure_date.clone(),
            ota_name: req.ota_name.clone(),
            guest_name: req.guest_name.clone(),
            language: req.language.clone(),
            adults: req.adults,
            children: req.children,
            revision_id: uuid::Uuid::new_v4().to_string(),
            inserted_at: now,
            updated_at: now,
        });
        let thread = req.with_thread.then(|| {
            let provider = bookings::provider_of(&req.ota_name);
            store.open_thread_for(
                &req.property_id,
                provider,
                &req.guest_name,
                Some(id.clone()),
            )
        });
        Some((id, thread))
    }

    /// Modify a booking (new revision); the booking as it now is, or why not.
    pub fn modify_booking(
        &self,
        id: &str,
        change: &BookingChangeRequest,
    ) -> Result<SimBooking, String> {
        let mut store = self.lock();
        let now = store.tick();
        store.stays.modify(id, change, now).map_err(|r| match r {
            state::Refusal::NotFound => format!("unknown booking {id}"),
            _ => "dates must be YYYY-MM-DD".to_string(),
        })
    }

    /// A booking as the simulator holds it.
    pub fn booking(&self, id: &str) -> Option<SimBooking> {
        self.lock().stays.get(id).cloned()
    }

    /// Revision ids acked through the API (concierge must leave this empty).
    pub fn booking_acks(&self) -> Vec<String> {
        self.lock().stays.acks.clone()
    }

    /// An Airbnb inquiry: an `AirBNB` thread without a booking holding a `system`
    /// `"inquiry"` message with `meta.booking_details` shaped as in the seed.
    /// Returns `(thread id, inquiry message id)`.
    #[allow(clippy::too_many_arguments)]
    pub fn add_inquiry(
        &self,
        property_id: &str,
        guest_name: &str,
        non_response_at: DateTime<Utc>,
        checkin: &str,
        checkout: &str,
        guests: u32,
        payout: &str,
        currency: &str,
    ) -> (String, String) {
        self.lock().add_inquiry(
            property_id,
            guest_name,
            non_response_at,
            checkin,
            checkout,
            guests,
            payout,
            currency,
        )
    }

    /// Moves a thread and its messages `by` into the past; `false` if it does not exist.
    pub fn backdate_thread(&self, thread_id: &str, by: chrono::Duration) -> bool {
        self.lock().backdate_thread(thread_id, by)
    }

    /// Sets a thread's `updated_at` alone (its messages keep theirs): a late-stamped update.
    pub fn set_thread_updated_at(
        &self,
        thread_id: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> bool {
        self.lock().set_thread_updated_at(thread_id, at)
    }

    /// Whether a thread is answered without its property relationship (no `property_id`).
    pub fn hide_thread_property(&self, thread_id: &str, hidden: bool) {
        let mut store = self.lock();
        if hidden {
            store.property_hidden.insert(thread_id.to_string());
        } else {
            store.property_hidden.remove(thread_id);
        }
    }

    /// Makes a thread's message list misbehave (`None` heals it), to test that one broken
    /// thread does not stop the others.
    pub fn break_messages(&self, thread_id: &str, how: Option<BrokenMessages>) {
        let mut store = self.lock();
        match how {
            Some(h) => store.broken_messages.insert(thread_id.to_string(), h),
            None => store.broken_messages.remove(thread_id),
        };
    }

    /// Puts `raw` verbatim (any bytes: invalid UTF-8, lone surrogate escapes, odd ids) as
    /// an extra item at the start of page 1 of `list`, on every read until
    /// [`Sim::clear_raw_items`]. The item is not counted in `meta.total`.
    pub fn inject_raw_item(&self, list: RawList, raw: Vec<u8>) {
        self.lock().raw_items.entry(list).or_default().push(raw);
    }

    pub fn clear_raw_items(&self) {
        self.lock().raw_items.clear();
    }

    /// A guest message; `None` when the thread does not exist.
    pub fn try_guest_message(&self, thread_id: &str, text: &str) -> Option<String> {
        self.lock().guest_message(thread_id, text)
    }

    /// A property-side message written by a human (staff user relationship); `None` when
    /// the thread does not exist.
    pub fn try_staff_message(&self, thread_id: &str, text: &str) -> Option<String> {
        self.lock().staff_message(thread_id, text)
    }

    /// A guest message. Test helper.
    ///
    /// # Panics
    /// If the thread does not exist (use [`Sim::try_guest_message`] for untrusted input).
    pub fn guest_message(&self, thread_id: &str, text: &str) -> String {
        match self.try_guest_message(thread_id, text) {
            Some(id) => id,
            None => panic!("sim: guest_message on unknown thread {thread_id}"),
        }
    }

    /// A staff-written property message. Test helper.
    ///
    /// # Panics
    /// If the thread does not exist (use [`Sim::try_staff_message`] for untrusted input).
    pub fn staff_message(&self, thread_id: &str, text: &str) -> String {
        match self.try_staff_message(thread_id, text) {
            Some(id) => id,
            None => panic!("sim: staff_message on unknown thread {thread_id}"),
        }
    }

    /// A thread's messages, oldest first, as the client would read them.
    pub fn messages(&self, thread_id: &str) -> Vec<Message> {
        let wire = self.lock().message_resources(thread_id).unwrap_or_default();
        wire.into_iter()
            .map(|m| Message::from_wire(m, &self.base))
            .collect()
    }

    /// A thread as the client would read it (regardless of the messages app).
    pub fn thread(&self, id: &str) -> Option<Thread> {
        let wire = self.lock().thread_resource(id);
        wire.map(|t| Thread::from_wire(t, &self.base))
    }

    /// All thread ids, oldest first.
    pub fn thread_ids(&self) -> Vec<String> {
        self.lock().thread_ids()
    }

    /// `(thread id, text)` of every message POSTed through the API, in order.
    pub fn sent_by_api(&self) -> Vec<(String, String)> {
        self.lock().sent_by_api()
    }

    /// Every API request answered (control requests excluded), oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests()
    }

    pub fn clear_requests(&self) {
        self.lock().clear_requests();
    }

    pub fn faults(&self) -> FaultConfig {
        self.lock().faults.clone()
    }

    pub fn set_faults(&self, f: FaultConfig) {
        self.lock().faults = f;
    }

    /// Extra latency per API request, uniform in `0..=jitter`, on top of
    /// [`FaultConfig::latency`] (zero by default). Switchable at run time, like the faults.
    pub fn set_latency_jitter(&self, jitter: Duration) {
        self.lock().latency_jitter = jitter;
    }

    pub fn latency_jitter(&self) -> Duration {
        self.lock().latency_jitter
    }

    /// API writes (POSTs) received and not yet answered, e.g. sends held up by latency.
    pub fn posts_in_flight(&self) -> usize {
        self.lock().posts_in_flight
    }

    /// Whether `GET /message_threads` honours `order[...]` and `filter[property_id]`
    /// (both by default). With `order == false` the default order is applied and reported.
    pub fn set_list_features(&self, order: bool, property_filter: bool) {
        let mut s = self.lock();
        s.honour_order = order;
        s.honour_property_filter = property_filter;
    }

    /// How many times `no_reply_needed` succeeded for a thread.
    pub fn no_reply_needed_marks(&self, thread_id: &str) -> u32 {
        self.lock().no_reply_needed_marks(thread_id)
    }
}

/// Seeds a small demo world: a property with a Booking.com and an Airbnb conversation, an
/// Airbnb inquiry due in two hours, and a property without the messages app.
pub fn seed_demo(sim: &Sim) {
    sim.add_property("demo-property", "Casa Azul", true);
    sim.add_property("no-app-property", "Old Mill", false);
    let bc = sim.open_thread("demo-property", "BookingCom", "Maria Santos", true);
    sim.guest_message(&bc, "Hi! What's the wifi password?");
    let ab = sim.open_thread("demo-property", "Airbnb", "John Miller", true);
    sim.guest_message(&ab, "What time is check-in?");
    sim.add_inquiry(
        "demo-property",
        "Andrew",
        Utc::now() + chrono::Duration::hours(2),
        &(Utc::now() + chrono::Duration::days(7))
            .format("%Y-%m-%d")
            .to_string(),
        &(Utc::now() + chrono::Duration::days(9))
            .format("%Y-%m-%d")
            .to_string(),
        3,
        "250.00",
        "EUR",
    );
    sim.open_thread("no-app-property", "BookingCom", "Hidden Guest", true);
}

/// Runs a simulator until Ctrl-C (for `concierge sim --port N`), printing its base URL,
/// control URL and API key.
pub async fn serve_forever(opts: SimOptions, seed_demo_data: bool) -> anyhow::Result<()> {
    let key = opts.api_key.clone();
    let server = Sim::start(opts).await?;
    if seed_demo_data {
        seed_demo(&server.sim);
    }
    println!("channex simulator listening");
    println!("  base URL:    {}", server.base_url);
    println!("  control API: {}_sim/", server.root_url);
    println!("  API key:     {key}");
    tokio::signal::ctrl_c().await?;
    server.shutdown().await;
    Ok(())
}
