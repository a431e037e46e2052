//! The service's one HTTP port: `/metrics` (Prometheus text), `/healthz` (alive),
//! `/readyz` (NATS connected, rules loaded) and `/webhooks/channex` (a nudge to poll).
//!
//! Owns the metrics recorder installation and the webhook authentication. A webhook is
//! never trusted as data: at most its `property_id` is read, to poll that property now.
//! It must not do any work itself beyond handing the nudge to the poller.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::sync::{mpsc, watch};

use crate::config::Secret;

/// Header carrying the shared secret on `/webhooks/channex` (configure it as a custom
/// header of the Channex webhook).
pub const WEBHOOK_SECRET_HEADER: &str = "x-concierge-secret";

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
}

/// Nudges carry `Some(property_id)` or `None` (poll everything).
pub fn router(
    readiness: Arc<dyn Readiness>,
    webhook_secret: Secret,
    nudges: Option<mpsc::Sender<Option<String>>>,
) -> Router {
    let state = AppState {
        metrics: metrics_handle(),
        readiness,
        webhook_secret,
        nudges,
    };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/webhooks/channex", post(webhook))
        .with_state(state)
}

pub async fn serve(
    listen: &str,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} (http.listen): {e}"))?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
    });
    tracing::info!(%addr, "http: /metrics /healthz /readyz /webhooks/channex");
    Ok(addr)
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

async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let presented = headers
        .get(WEBHOOK_SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if state.webhook_secret.is_empty()
        || !constant_time_eq(presented, state.webhook_secret.expose().as_bytes())
    {
        metrics::counter!("concierge_webhooks_total", "result" => "unauthorized").increment(1);
        return (StatusCode::UNAUTHORIZED, "unauthorized\n");
    }
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
