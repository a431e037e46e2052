//! The rules page: each rule and template with its version and state, reloads and
//! rejected files, per-rule outcome counts over 24 h and the last errors.

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
        "Rules",
        Nav::Rules,
        Some(&authed.csrf),
        html! { h1 { "Rules" } },
    ))
}
