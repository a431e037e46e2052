//! Shared test harness: a private `nats-server -js` per test (free port, temporary store,
//! killed on drop). A test that needs NATS and cannot start it fails with the install
//! command in its message; nothing is skipped.
#![allow(dead_code)]

use concierge::config::NatsConfig;
use concierge::nats::{Infra, PrivateNatsServer};

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
