//! Shared test harness: a private `nats-server -js` per test (free port, temporary store,
//! killed on drop). A test that needs NATS and cannot start it fails with the install
//! command in its message; nothing is skipped.
#![allow(dead_code)]

use concierge::config::NatsConfig;
use concierge::store::nats::{Infra, PrivateNatsServer};

pub fn nats_server() -> PrivateNatsServer {
    match PrivateNatsServer::start() {
        Ok(server) => server,
        Err(e) => panic!("this test needs a private nats-server: {e}"),
    }
}

/// A private server plus the streams and buckets every role uses.
pub async fn nats_infra() -> (PrivateNatsServer, Infra, NatsConfig) {
    let server = nats_server();
    let cfg = server.config();
    let infra = Infra::setup(&cfg)
        .await
        .unwrap_or_else(|e| panic!("JetStream setup on the private server failed: {e}"));
    (server, infra, cfg)
}

use std::time::Duration;

use async_nats::jetstream;
use concierge::config::{Config, Secret};
use concierge::events::Event;
use concierge::sim::{Sim, SimOptions, SimServer};

pub const SIM_KEY: &str = "test-api-key";

pub async fn sim() -> SimServer {
    Sim::start(SimOptions::with_key(SIM_KEY))
        .await
        .unwrap_or_else(|e| panic!("cannot start the Channex simulator: {e}"))
}

/// A config pointing at the simulator and the private NATS, with fast timings.
pub fn config(sim: &SimServer, nats: &NatsConfig, property_ids: &[&str]) -> Config {
    let mut c = Config::default();
    c.channex.base_url = sim.base_url.clone();
    c.channex.api_key = Secret::new(SIM_KEY);
    c.channex.property_ids = property_ids.iter().map(|s| s.to_string()).collect();
    c.channex.poll_interval = Duration::from_millis(200);
    c.channex.requests_per_minute = 60_000;
    c.nats = nats.clone();
    c.poller.lease_ttl = Duration::from_secs(1);
    c.worker.ack_wait = Duration::from_secs(5);
    // A send starts only while its claim (ack_wait) outlasts the HTTP timeout.
    c.channex.timeout = Duration::from_secs(2);
    c.worker.retry_delay = Duration::from_millis(200);
    c
}

/// Every event stored on the events stream, in order (the library's own reader).
pub async fn stored_events(js: &jetstream::Context, prefix: &str) -> Vec<Event> {
    concierge::cli::inspect::stored_events(js, prefix, chrono::DateTime::<chrono::Utc>::UNIX_EPOCH)
        .await
        .expect("reading the events stream")
        .into_iter()
        .map(|(event, _)| event)
        .collect()
}

/// Wait until `check` holds, polling every 50 ms, or panic with `what`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {limit:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
