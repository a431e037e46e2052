//! The timeline: the audit log, newest first, paginated backwards from the stream's end,
//! with filters, and live rows over SSE.
//!
//! Must not: read the whole audit stream for a page.

use axum::extract::State;
use axum::response::IntoResponse;
use axum::Extension;
use maud::{html, Markup};

use super::auth::Authed;
use super::layout::{self, Nav};
use super::{Console, ConsoleError};

pub async fn page(
    State(_console): State<Console>,
    Extension(authed): Extension<Authed>,
) -> Result<Markup, ConsoleError> {
    Ok(layout::page(
        "Timeline",
        Nav::Timeline,
        Some(&authed.csrf),
        html! { h1 { "Timeline" } },
    ))
}

pub async fn stream(State(_console): State<Console>) -> impl IntoResponse {
    ""
}
