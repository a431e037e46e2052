//! Ending console sessions: `POST /logout` (and the plain `GET /logout` link) revoke the
//! session the cookie names, so every copy of that cookie stops working on every replica,
//! then clear the cookie; `POST /sessions/end-all` (the button on the health page, or
//! `concierge console revoke-sessions` on the command line) ends every session issued until
//! now, for a lost laptop. Both are recorded in NATS ([`SessionRevocations`]), never in the
//! process.
//!
//! Must not: end anything without a CSRF token on the POSTs, or write a revocation for a
//! cookie that was not issued with the token (an unauthenticated `GET /logout` cannot fill
//! the bucket).

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::{self, Authed, Principal};
use super::{check_csrf, Console, ConsoleError};

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

/// Ends this request's session (a bearer client has none: it is only sent to `/login`).
pub async fn logout(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    check_csrf(&authed, form.csrf.as_deref())?;
    if let Principal::Cookie(session) = &authed.principal {
        console
            .revocations()
            .revoke(&session.id, console.now())
            .await?;
        tracing::info!("console: logged out (session revoked)");
    }
    Ok(logged_out())
}

/// `GET /logout` ends the session in this browser too; its cookie, when it was issued with
/// the token, is revoked like a `POST /logout` (a forged one only logs out).
pub async fn logout_get(
    State(console): State<Console>,
    headers: HeaderMap,
) -> Result<Response, ConsoleError> {
    let session = auth::session_cookie(&headers)
        .and_then(|value| auth::parse_session(console.token(), value, console.now()));
    if let Some(session) = session {
        console
            .revocations()
            .revoke(&session.id, console.now())
            .await?;
        tracing::info!("console: logged out (session revoked)");
    }
    Ok(logged_out())
}

/// Ends every session issued until now, this one included.
pub async fn end_all(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, ConsoleError> {
    check_csrf(&authed, form.csrf.as_deref())?;
    let epoch = console.revocations().revoke_all(console.now()).await?;
    tracing::warn!(%epoch, "console: every session issued until now was ended");
    Ok(logged_out())
}

/// The health page's "End every session" form.
pub fn end_all_form(csrf: &str) -> Markup {
    html! {
        form #end-sessions method="post" action="/sessions/end-all" {
            p.muted { "Ends every console session issued until now, on every replica, this one "
                "included (a lost laptop, someone who left). Bearer clients are not affected: "
                "change the token for those." }
            input type="hidden" name="csrf" value=(csrf);
            button.cancel type="submit" { "End every session" }
        }
    }
}

fn logged_out() -> Response {
    (
        [(header::SET_COOKIE, auth::session_clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}
