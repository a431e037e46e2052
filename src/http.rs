//! The service's one HTTP port: `/metrics` (Prometheus text), `/healthz` (alive),
//! `/readyz` (NATS connected, rules loaded), `/webhooks/channex` (a nudge to poll) and,
//! when `[console] token` is set, the web console under `/` ([`crate::roles::console`],
//! which owns its routes and their authentication; each request carries the connection's
//! peer address for its login rate limit).
//!
//! Owns the metrics recorder installation and the webhook authentication. A webhook is
//! never trusted as data: at most its `property_id` is read, to poll that property now.
//! It must not do any work itself beyond handing the nudge to the poller.
//!
//! The port faces the Internet (Channex calls the webhook), so it is bounded ([`Limits`]):
//! the webhook secret is checked from the headers before a byte of the body is read, the
//! body is capped (64 KiB, `413` above) and must arrive within a timeout (`408`), request
//! headers must arrive within `header_read_timeout` (idle keep-alive connections too), at
//! most `max_connections` connections are held (more are closed at once rather than queued)
//! and at most `max_in_flight` requests are served at once (`503` above).
//!
//! The probes and the webhook always get through (issue 22): the last
//! `reserved_connections` of the connection cap are a reserve that serves only
//! `/healthz`, `/readyz`, `/metrics` and `/webhooks/channex` (anything else on a reserve
//! connection is `503` with `Retry-After`; a reserve connection serves one request and
//! closes), the probes are never counted in flight (they do no I/O), the webhook has its
//! own in-flight bound (`max_webhooks_in_flight`), and the console's long-lived streams are
//! bounded well under the cap ([`Limits::streams`], enforced by the console's
//! [`crate::roles::console::streams`]). Every `503` and `429` says `Retry-After`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::Secret;
use crate::roles::console::streams::StreamLimits;
use crate::roles::console::{self, auth::PeerAddr, layout, Console};

/// Header carrying the shared secret on `/webhooks/channex` (configure it as a custom
/// header of the Channex webhook).
pub const WEBHOOK_SECRET_HEADER: &str = "x-concierge-secret";

/// Bounds of the listener; [`Limits::default`] is what `concierge run` uses.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Time for a request's headers to arrive (also the idle time between keep-alive
    /// requests): a slowloris connection is closed after this long.
    pub header_read_timeout: Duration,
    /// Time for the webhook body to arrive once its headers are accepted.
    pub body_read_timeout: Duration,
    /// A Channex webhook is a small JSON document; anything larger is refused (`413`).
    pub max_webhook_body: usize,
    /// Connections held at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Of `max_connections`, how many are kept for the probes and the webhook (at most half
    /// of the cap): a connection accepted while the others are held serves only those.
    pub reserved_connections: usize,
    /// Requests served at once (the console's and anything but the probes and the
    /// webhook); more are answered `503` at once.
    pub max_in_flight: usize,
    /// Webhook requests served at once (a bound of their own, so console traffic cannot
    /// refuse them, nor they the console); more are answered `503` at once.
    pub max_webhooks_in_flight: usize,
    /// The console's live streams (`/timeline/stream`).
    pub streams: StreamLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            body_read_timeout: Duration::from_secs(5),
            max_webhook_body: 64 * 1024,
            max_connections: 256,
            reserved_connections: 32,
            max_in_flight: 64,
            max_webhooks_in_flight: 16,
            streams: StreamLimits::default(),
        }
    }
}

impl Limits {
    /// The reserve actually kept: `reserved_connections`, at most half of the cap.
    pub fn reserve(&self) -> usize {
        self.reserved_connections.min(self.max_connections / 2)
    }
}

/// What a refused client is told to wait before coming back.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Which share of the connection cap a connection was accepted on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectionShare {
    General,
    /// The reserve: only the priority routes are served on it.
    Reserve,
}

/// How a request is bounded, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// `/healthz`, `/readyz`, `/metrics`: answered from memory, never counted in flight.
    Probe,
    /// `/webhooks/channex`: its own in-flight bound.
    Webhook,
    /// Everything else (the console): `max_in_flight`.
    General,
}

impl Lane {
    fn of(path: &str) -> Lane {
        match path {
            "/healthz" | "/readyz" | "/metrics" => Lane::Probe,
            "/webhooks/channex" => Lane::Webhook,
            _ => Lane::General,
        }
    }
}

/// The in-flight bounds of the lanes that have one.
struct InFlight {
    general: Arc<Semaphore>,
    webhooks: Arc<Semaphore>,
}

/// Install the global Prometheus recorder once per process and return its handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.1,
                    0.5, 1.0, 5.0, 30.0,
                ])
                // Response times are minutes to days (roles::responses): their own buckets,
                // around the OTAs' 24 h line.
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(
                            "concierge_response_seconds".into(),
                        ),
                        &[
                            10.0,
                            60.0,
                            300.0,
                            900.0,
                            3600.0,
                            4.0 * 3600.0,
                            12.0 * 3600.0,
                            20.0 * 3600.0,
                            24.0 * 3600.0,
                            48.0 * 3600.0,
                        ],
                    )
                })
                .map(|b| b.build_recorder())
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// What `/readyz` checks.
pub trait Readiness: Send + Sync + 'static {
    /// `Err(reason)` when not ready.
    fn ready(&self) -> Result<(), String>;
}

#[derive(Clone)]
struct AppState {
    metrics: PrometheusHandle,
    readiness: Arc<dyn Readiness>,
    webhook_secret: Secret,
    nudges: Option<mpsc::Sender<Option<String>>>,
    limits: Limits,
}

/// Nudges carry `Some(property_id)` or `None` (poll everything).
pub fn router(
    readiness: Arc<dyn Readiness>,
    webhook_secret: Secret,
    nudges: Option<mpsc::Sender<Option<String>>>,
) -> Router {
    router_with(readiness, webhook_secret, nudges, Limits::default())
}

/// [`router`] with explicit limits (tests use short ones).
pub fn router_with(
    readiness: Arc<dyn Readiness>,
    webhook_secret: Secret,
    nudges: Option<mpsc::Sender<Option<String>>>,
    limits: Limits,
) -> Router {
    router_with_console(readiness, webhook_secret, nudges, limits, None)
}

/// [`router_with`] plus the web console's routes (`None`: console off, its paths `404`).
/// The existing routes come first and keep their behaviour.
pub fn router_with_console(
    readiness: Arc<dyn Readiness>,
    webhook_secret: Secret,
    nudges: Option<mpsc::Sender<Option<String>>>,
    limits: Limits,
    console: Option<Console>,
) -> Router {
    let state = AppState {
        metrics: metrics_handle(),
        readiness,
        webhook_secret,
        nudges,
        limits,
    };
    let in_flight = Arc::new(InFlight {
        general: Arc::new(Semaphore::new(limits.max_in_flight)),
        webhooks: Arc::new(Semaphore::new(limits.max_webhooks_in_flight)),
    });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/webhooks/channex", post(webhook))
        .with_state(state)
        .merge(console::router(console, limits.streams))
        .layer(axum::middleware::from_fn_with_state(in_flight, shed_load))
}

/// `503` with `Retry-After`; `close`: give the connection back at once too.
fn busy(reason: &'static str, close: bool) -> Response {
    metrics::counter!("concierge_http_refused_total", "reason" => reason).increment(1);
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    if close {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    layout::retry_after(response, BUSY_RETRY_AFTER)
}

/// Over its lane's in-flight bound a request is refused at once: queueing would let a
/// flood of slow webhooks or console pages delay the others. On a reserve connection only
/// the probes and the webhook are served.
async fn shed_load(State(in_flight): State<Arc<InFlight>>, req: Request, next: Next) -> Response {
    let lane = Lane::of(req.uri().path());
    let share = req.extensions().get::<ConnectionShare>().copied();
    if share == Some(ConnectionShare::Reserve) && lane == Lane::General {
        return busy("reserve", true);
    }
    let pool = match lane {
        Lane::Probe => return next.run(req).await,
        Lane::Webhook => &in_flight.webhooks,
        Lane::General => &in_flight.general,
    };
    match pool.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => busy("in_flight", false),
    }
}

pub async fn serve(
    listen: &str,
    router: Router,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    serve_with(listen, router, shutdown, Limits::default()).await
}

/// [`serve`] with explicit limits; the router should come from [`router_with`] with the same.
pub async fn serve_with(
    listen: &str,
    router: Router,
    shutdown: watch::Receiver<bool>,
    limits: Limits,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (http.listen): {e}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(accept_loop(listener, router, shutdown, limits));
    tracing::info!(%addr, "http: /metrics /healthz /readyz /webhooks/channex");
    Ok(addr)
}

/// The connection cap in two shares: the general one, and the reserve that only the
/// probes and the webhook are served on.
struct ConnectionShares {
    general: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
}

impl ConnectionShares {
    fn new(limits: &Limits) -> Self {
        let reserve = limits.reserve();
        ConnectionShares {
            general: Arc::new(Semaphore::new(limits.max_connections - reserve)),
            reserve: Arc::new(Semaphore::new(reserve)),
        }
    }

    /// A place for one more connection: general first, else the reserve, else none.
    fn admit(&self) -> Option<(tokio::sync::OwnedSemaphorePermit, ConnectionShare)> {
        if let Ok(p) = self.general.clone().try_acquire_owned() {
            return Some((p, ConnectionShare::General));
        }
        let p = self.reserve.clone().try_acquire_owned().ok()?;
        Some((p, ConnectionShare::Reserve))
    }
}

/// Hand-rolled instead of `axum::serve`, which sets no header read timeout and holds any
/// number of connections.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
    limits: Limits,
) {
    let shares = ConnectionShares::new(&limits);
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Over the cap the connection is closed at once rather than queued: a flood of
        // idle connections then costs nothing, and each held one ends within the header
        // read timeout, so the port recovers by itself.
        let Some((permit, share)) = shares.admit() else {
            metrics::counter!("concierge_http_refused_total", "reason" => "connections")
                .increment(1);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(PeerAddr(peer)))
                .layer(axum::Extension(share)),
        );
        tokio::spawn(serve_connection(
            stream,
            service,
            permit,
            share,
            limits,
            shutdown.clone(),
        ));
    }
}

/// One connection until it ends (or the process shuts down). A reserve connection serves
/// one request and closes, so the reserve is free again at once.
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    service: S,
    permit: tokio::sync::OwnedSemaphorePermit,
    share: ConnectionShare,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let _permit = permit;
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(share == ConnectionShare::General);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.readiness.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(state: &AppState, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(WEBHOOK_SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    !state.webhook_secret.is_empty()
        && constant_time_eq(presented, state.webhook_secret.expose().as_bytes())
}

/// Takes the raw request (not a body extractor) so the secret is checked from the headers
/// before any of the body is read: an unauthenticated upload costs one header parse.
async fn webhook(State(state): State<AppState>, request: Request) -> impl IntoResponse {
    let (parts, body) = request.into_parts();
    if !authorized(&state, &parts.headers) {
        metrics::counter!("concierge_webhooks_total", "result" => "unauthorized").increment(1);
        return (StatusCode::UNAUTHORIZED, "unauthorized\n");
    }
    let limit = state.limits.max_webhook_body;
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        metrics::counter!("concierge_webhooks_total", "result" => "too_large").increment(1);
        return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large\n");
    }
    let read = axum::body::to_bytes(body, limit);
    let body = match tokio::time::timeout(state.limits.body_read_timeout, read).await {
        Ok(Ok(body)) => body,
        // Chunked past the limit, or the client went away mid-body.
        Ok(Err(_)) => {
            metrics::counter!("concierge_webhooks_total", "result" => "too_large").increment(1);
            return (StatusCode::PAYLOAD_TOO_LARGE, "payload too large\n");
        }
        Err(_) => {
            metrics::counter!("concierge_webhooks_total", "result" => "timeout").increment(1);
            return (StatusCode::REQUEST_TIMEOUT, "body read timeout\n");
        }
    };
    let property_id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("property_id")
                .and_then(|p| p.as_str())
                .filter(|p| p.len() <= 64 && !p.is_empty())
                .map(str::to_string)
        });
    metrics::counter!("concierge_webhooks_total", "result" => "accepted").increment(1);
    if let Some(tx) = &state.nudges {
        // A full queue already holds a pending poll: dropping this nudge loses nothing.
        let _ = tx.try_send(property_id);
    }
    (StatusCode::ACCEPTED, "accepted\n")
}
