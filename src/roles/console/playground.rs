//! The playground: a guest message (or an event JSON) through the worker's `plan()`, dry.

use axum::extract::State;
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
        "Playground",
        Nav::Playground,
        Some(&authed.csrf),
        html! { h1 { "Playground" } },
    ))
}

pub async fn run(
    State(_console): State<Console>,
    Extension(authed): Extension<Authed>,
) -> Result<Markup, ConsoleError> {
    Ok(layout::page(
        "Playground",
        Nav::Playground,
        Some(&authed.csrf),
        html! { h1 { "Playground" } },
    ))
}

pub async fn replay(
    State(_console): State<Console>,
    Extension(authed): Extension<Authed>,
) -> Result<Markup, ConsoleError> {
    Ok(layout::page(
        "Playground",
        Nav::Playground,
        Some(&authed.csrf),
        html! { h1 { "Playground" } },
    ))
}
