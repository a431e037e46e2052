//! The web console (DESIGN.md, "Console (web)"): server-rendered pages for the people who
//! run concierge, under `/` of the HTTP port of any `concierge run` with `[console] token`.
//!
//! Pages: [`deadlines`] (home), [`timeline`] (audit log, live over SSE), [`thread`]
//! (messages interleaved with decisions, follow-ups with Cancel), [`rules`], [`playground`]
//! (the worker's `plan()`, dry), [`health`] and [`responses`] (response times and the OTAs'
//! scores, charts drawn as SVG). [`auth`] guards every route but `/login`
//! and the embedded assets; [`sessions`] ends sessions (logout, "end all sessions");
//! [`streams`] bounds the live streams; [`layout`] is the page shell and the one place
//! outside text is made fit to render.
//!
//! Owns: the routes, the [`Console`] state (handles to NATS, the Channex client, the live
//! rules; no data of its own, so any replica serves the same pages) and the one error type
//! of the pages ([`ConsoleError`]). Must not: send anything to guests (the playground plans
//! dry and never executes), log or render the token, put guest text in a URL or a log
//! line, or read a whole stream for a page (reads are bounded and start from the end).

pub mod auth;
mod deadlines;
mod health;
pub mod layout;
mod playground;
mod responses;
mod rules;
mod sessions;
pub mod streams;
mod thread;
mod timeline;

use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use chrono::{DateTime, Utc};
use maud::html;
use serde::Deserialize;

use crate::base::clock::Clock;
use crate::channex::ChannexClient;
use crate::config::{Config, Secret};
use crate::content::LiveRules;
use crate::plan::rules::RuleEngine;
use crate::store::nats::Infra;
use crate::store::sessions::SessionRevocations;

use auth::{Authed, LoginLimiter, PeerAddr};
use layout::Nav;
use streams::{StreamGate, StreamLimits};

/// When the running rules were last (re)loaded, as the process saw it: set by whoever
/// forwards the live-reload reports (`wiring`), read by the rules page.
#[derive(Clone, Default)]
pub struct ReloadStatus(Arc<Mutex<Option<DateTime<Utc>>>>);

impl ReloadStatus {
    pub fn record(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }

    pub fn last(&self) -> Option<DateTime<Utc>> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What the console reads from (built by `wiring`).
pub struct ConsoleDeps {
    pub config: Arc<Config>,
    pub infra: Infra,
    pub channex: ChannexClient,
    pub live: Arc<LiveRules>,
    pub engine: Arc<RuleEngine>,
    pub reloads: ReloadStatus,
    pub clock: Clock,
}

/// The console's shared state: cheap to clone.
#[derive(Clone)]
pub struct Console(Arc<Inner>);

struct Inner {
    token: Secret,
    deps: ConsoleDeps,
    limiter: LoginLimiter,
    calls: health::CallRate,
    revocations: SessionRevocations,
}

impl Console {
    /// `None` when `[console] token` is empty: the console is off. Call it inside a Tokio
    /// runtime (it starts the Channex call-rate sampler of the health page).
    pub fn new(deps: ConsoleDeps) -> Option<Console> {
        let token = deps.config.console.token.clone();
        if token.is_empty() {
            return None;
        }
        let calls = health::CallRate::start(deps.channex.clone());
        let revocations = SessionRevocations::new(deps.infra.sessions.clone());
        Some(Console(Arc::new(Inner {
            token,
            deps,
            limiter: LoginLimiter::default(),
            calls,
            revocations,
        })))
    }

    fn token(&self) -> &Secret {
        &self.0.token
    }

    fn now(&self) -> DateTime<Utc> {
        (self.0.deps.clock)()
    }

    fn deps(&self) -> &ConsoleDeps {
        &self.0.deps
    }

    fn revocations(&self) -> &SessionRevocations {
        &self.0.revocations
    }

    fn prefix(&self) -> &str {
        &self.0.deps.config.nats.prefix
    }

    /// A property's configured name, else its id.
    fn property_name(&self, id: &str) -> String {
        let name = self
            .0
            .deps
            .config
            .properties
            .get(id)
            .map(|p| p.name.as_str())
            .filter(|n| !n.is_empty())
            .unwrap_or(id);
        layout::shown(name, layout::Field::Name).into_owned()
    }
}

/// The console's routes (none when `console` is `None`: every path is then `404`), its
/// live streams bounded by `streams`.
pub fn router(console: Option<Console>, streams: StreamLimits) -> Router {
    let Some(console) = console else {
        return Router::new();
    };
    let guarded = Router::new()
        .route("/", get(deadlines::page))
        .route("/timeline", get(timeline::page))
        .route("/timeline/stream", get(timeline::stream))
        .route("/threads/{id}", get(thread::page))
        .route(
            "/threads/{id}/follow-ups/{name}/cancel",
            post(thread::cancel),
        )
        .route("/rules", get(rules::page))
        .route("/playground", get(playground::page).post(playground::run))
        .route("/playground/replay", post(playground::replay))
        .route("/health", get(health::page))
        .route("/responses", get(responses::page))
        .route("/logout", post(sessions::logout))
        .route("/sessions/end-all", post(sessions::end_all))
        .layer(Extension(StreamGate::new(streams)))
        .route_layer(axum::middleware::from_fn_with_state(
            console.clone(),
            auth::require,
        ));
    Router::new()
        .route("/login", get(login_form).post(login))
        .route("/logout", get(sessions::logout_get))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .merge(guarded)
        .layer(axum::middleware::from_fn(secure_headers))
        .with_state(console)
}

async fn secure_headers(req: Request, next: Next) -> Response {
    layout::secure(next.run(req).await)
}

/// Why a page could not be served. Shown as a page with a short message; the details are
/// logged (never with guest text or secrets: these errors carry ids and NATS/Channex
/// error messages only).
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("NATS: {0}")]
    Store(String),
    #[error("Channex: {0}")]
    Channex(String),
    #[error("{0}")]
    BadInput(String),
    #[error("the form is stale or forged (CSRF token missing or wrong): reload the page")]
    Csrf,
    #[error("not found: {0}")]
    NotFound(String),
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = match &self {
            ConsoleError::Store(_) | ConsoleError::Channex(_) => StatusCode::BAD_GATEWAY,
            ConsoleError::BadInput(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Csrf => StatusCode::FORBIDDEN,
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
        };
        if status.is_server_error() {
            tracing::warn!(error = %self, "console: page failed");
        } else {
            tracing::info!(status = status.as_u16(), "console: request refused");
        }
        layout::error_page(status, &self.to_string())
    }
}

impl From<crate::store::audit::AuditError> for ConsoleError {
    fn from(e: crate::store::audit::AuditError) -> Self {
        ConsoleError::Store(e.to_string())
    }
}

impl From<crate::store::nats::StoreError> for ConsoleError {
    fn from(e: crate::store::nats::StoreError) -> Self {
        ConsoleError::Store(e.to_string())
    }
}

impl From<crate::store::nats::ReadError> for ConsoleError {
    fn from(e: crate::store::nats::ReadError) -> Self {
        ConsoleError::Store(e.to_string())
    }
}

/// The CSRF check of every state-changing form.
fn check_csrf(authed: &Authed, presented: Option<&str>) -> Result<(), ConsoleError> {
    if auth::csrf_ok(authed, presented) {
        Ok(())
    } else {
        Err(ConsoleError::Csrf)
    }
}

async fn css() -> Response {
    asset(layout::CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(layout::JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        body,
    )
        .into_response()
}

fn login_page(message: Option<&str>) -> maud::Markup {
    layout::page(
        "Log in",
        Nav::None,
        None,
        html! {
            section.card.login {
                h1 { "Log in to concierge" }
                @if let Some(message) = message {
                    p.flash.bad { (message) }
                }
                form #login method="post" action="/login" {
                    label for="token" { "Console token" }
                    input #token type="password" name="token" autocomplete="current-password" autofocus required;
                    button type="submit" { "Log in" }
                }
                p.muted { "The token is " code { "[console] token" } " in concierge.toml (or "
                    code { "CONCIERGE_CONSOLE_TOKEN" } ")." }
            }
        },
    )
}

async fn login_form() -> maud::Markup {
    login_page(None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(console): State<Console>,
    peer: Option<Extension<PeerAddr>>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !console.0.limiter.allow(peer.map(|Extension(p)| p)) {
        tracing::warn!("console: login attempts over the limit");
        let body = login_page(Some("Too many attempts: wait a minute and try again."));
        let response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
        return layout::retry_after(response, auth::BLOCKED_FOR);
    }
    if !auth::token_matches(console.token(), form.token.trim()) {
        tracing::info!("console: failed login");
        return (StatusCode::UNAUTHORIZED, login_page(Some("Wrong token."))).into_response();
    }
    let session = auth::issue_session(console.token(), console.now());
    (
        [(header::SET_COOKIE, auth::session_set_cookie(&session))],
        Redirect::to("/"),
    )
        .into_response()
}
