//! The private-server harness and stream/bucket setup, including reconciliation.
mod common;

use std::time::Duration;

use concierge::store::nats::{Infra, EVENTS_STREAM};

#[tokio::test]
async fn setup_creates_streams_and_buckets_and_reconciles_max_age() {
    let (_server, infra, mut cfg) = common::nats_infra().await;
    let mut stream = infra.js.get_stream(EVENTS_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.subjects, vec!["concierge.events.>".to_string()]);
    assert_eq!(info.config.max_age, cfg.events_max_age);

    // A config change on restart is applied to the existing stream, not ignored.
    cfg.events_max_age = Duration::from_secs(7 * 86_400);
    let infra2 = Infra::setup(&cfg).await.unwrap();
    let mut stream = infra2.js.get_stream(EVENTS_STREAM).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().config.max_age,
        Duration::from_secs(7 * 86_400)
    );
    // One copy: nothing can lag, so bucket reads use the cheaper direct gets.
    let mut ledger = infra
        .js
        .get_stream(format!("KV_{}", infra.names.ledger_bucket()))
        .await
        .unwrap();
    assert!(ledger.info().await.unwrap().config.allow_direct);
    infra2.ledger.put("k", "v".into()).await.unwrap();
    assert_eq!(
        infra.ledger.get("k").await.unwrap().as_deref(),
        Some(&b"v"[..])
    );
}
