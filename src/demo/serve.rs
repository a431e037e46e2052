//! `concierge demo --serve`: the web console next to the demo, so a newcomer can click
//! around while the script plays and after it.
//!
//! Owns the demo's HTTP listener (the same router as `concierge run` with `[http] listen`,
//! console mounted), its random console token, the banner that prints the URL and the
//! token, and the conversations seeded after the script so every console page has
//! something to show (two Airbnb inquiries, one under 2 h, with pending alert timers, and a
//! Booking.com guest message waiting longer than the console's `reply_wait`).
//!
//! The token is printed on stdout once, for the person who started the demo; it must never
//! reach a log or an audit record. Must not read the environment.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use chrono::Utc;
use rand::Rng;
use tokio::sync::watch;

use super::config::PROPERTY;
use super::timeline::{say, Stamp};
use crate::config::{Config, Secret};
use crate::content::LiveRules;
use crate::roles::console::ReloadStatus;
use crate::sim::Sim;
use crate::store::nats::Infra;

/// Ctrl-C (SIGINT), listened for from the moment [`Interrupt::listen`] returns.
pub struct Interrupt {
    #[cfg(unix)]
    sigint: tokio::signal::unix::Signal,
}

impl Interrupt {
    pub fn listen() -> anyhow::Result<Interrupt> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let sigint = signal(SignalKind::interrupt()).context("listening for Ctrl-C")?;
            Ok(Interrupt { sigint })
        }
        #[cfg(not(unix))]
        Ok(Interrupt {})
    }

    /// Resolves on Ctrl-C.
    pub async fn wait(&mut self) {
        #[cfg(unix)]
        let _ = self.sigint.recv().await;
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A fresh console token: 32 random hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The demo's configuration with the console on: `listen` and `token`.
pub fn with_console(mut config: Config, listen: &str, token: &str) -> Config {
    config.http.listen = listen.to_string();
    config.console.token = Secret::new(token);
    config
}

/// `/readyz` of the demo: ready while NATS is connected (the workers loaded their rules
/// before the listener starts).
struct NatsReady(async_nats::Client);

impl crate::http::Readiness for NatsReady {
    fn ready(&self) -> Result<(), String> {
        match self.0.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            _ => Err("NATS not connected".into()),
        }
    }
}

/// Starts the HTTP listener on `config.http.listen`, with the console showing the workers'
/// live rules and reload times (`rules`); returns its address. It stops when `shutdown`
/// flips.
pub async fn start_listener(
    config: &Config,
    infra: &Infra,
    rules: (Option<Arc<LiveRules>>, ReloadStatus),
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<SocketAddr> {
    let ready = Arc::new(NatsReady(infra.client.clone()));
    let channex = crate::wiring::channex_client(config)?;
    let console = crate::wiring::console(config, infra, channex, rules.0, rules.1);
    anyhow::ensure!(console.is_some(), "the demo's console has no token");
    let router = crate::http::router_with_console(
        ready,
        config.http.webhook_secret.clone(),
        None,
        crate::http::Limits::default(),
        console,
    );
    crate::http::serve(&config.http.listen, router, shutdown)
        .await
        .context("starting the demo's console listener")
}

/// Prints where the console is and how to log in.
pub fn print_banner(addr: SocketAddr, token: &str) {
    println!();
    println!("  console:  http://{addr}/");
    println!("  token:    {token}");
    println!(
        "            (log in with it; or curl -H 'Authorization: Bearer {token}' http://{addr}/)"
    );
    println!();
}

/// Conversations for the console: two Airbnb inquiries (the rules arm their alert timers:
/// pending follow-ups) and a Booking.com guest message unanswered for 13 hours. Returns the
/// thread ids.
pub fn seed_console(sim: &Sim, stamp: &Stamp) -> Vec<String> {
    let day = |d: i64| {
        (Utc::now() + chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    let (soon, _) = sim.add_inquiry(
        PROPERTY,
        "Sofia Rossi",
        Utc::now() + chrono::Duration::minutes(80),
        &day(3),
        &day(6),
        2,
        "540.00",
        "EUR",
    );
    let (later, _) = sim.add_inquiry(
        PROPERTY,
        "Kenji Watanabe",
        Utc::now() + chrono::Duration::hours(9),
        &day(21),
        &day(28),
        4,
        "1260.00",
        "EUR",
    );
    // A statement, not a question: no rule answers it, so it waits for staff. Its message
    // is moved 13 hours back (Booking.com expects a reply within 12 h) while the thread
    // stays freshly updated, so the poller sees it as new.
    let waiting = sim.open_thread(PROPERTY, "BookingCom", "Hans Keller", true);
    sim.guest_message(
        &waiting,
        "We will arrive late, around 23:30, with our two bikes. See you then.",
    );
    sim.backdate_thread(&waiting, chrono::Duration::hours(13));
    sim.set_thread_updated_at(&waiting, Utc::now());
    say(
        stamp,
        "seeded for the console: inquiries due in 80 min and 9 h, a Booking.com guest waiting 13 h",
    );
    vec![soon, later, waiting]
}
