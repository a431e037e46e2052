//! One thread: its messages interleaved with concierge's decisions, and its pending
//! follow-ups with a Cancel button.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use maud::{html, Markup};

use super::auth::Authed;
use super::layout::{self, Nav};
use super::{Console, ConsoleError};

pub async fn page(
    State(_console): State<Console>,
    Extension(authed): Extension<Authed>,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    Ok(layout::page(
        "Thread",
        Nav::None,
        Some(&authed.csrf),
        html! { h1 { "Thread " (id) } },
    ))
}

pub async fn cancel(
    State(_console): State<Console>,
    Path((id, _name)): Path<(String, String)>,
) -> Result<impl IntoResponse, ConsoleError> {
    Ok(Redirect::to(&layout::thread_href(&id)))
}
