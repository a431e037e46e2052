//! The HTTP port: `/metrics` moves when the worker handles an event, `/healthz`, `/readyz`
//! follows readiness, and `/webhooks/channex` authenticates and nudges the poller.
//!
//! The metrics recorder is process-global, so this binary holds one test and compares
//! values before and after rather than absolute ones.
mod opsrig;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use concierge::config::Secret;
use concierge::http::{Readiness, WEBHOOK_SECRET_HEADER};
use concierge::store::audit::Outcome;
use opsrig::common;
use tokio::sync::{mpsc, watch};

struct TestReadiness {
    client: async_nats::Client,
    rules_loaded: AtomicBool,
}

impl Readiness for TestReadiness {
    fn ready(&self) -> Result<(), String> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err("NATS not connected".into());
        }
        if !self.rules_loaded.load(Ordering::Relaxed) {
            return Err("rules not loaded".into());
        }
        Ok(())
    }
}

/// The value of one sample line (`name{labels} value`) of the Prometheus text; 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let rest = l.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_health_readiness_and_webhook_over_real_http() {
    let mut rig = opsrig::rig(
        "prop-m",
        &[("10_faq.rhai", opsrig::FAQ_RULE)],
        &[("wifi.hbs", opsrig::WIFI_TEMPLATE)],
    )
    .await;
    let readiness = Arc::new(TestReadiness {
        client: rig.infra.client.clone(),
        rules_loaded: AtomicBool::new(false),
    });
    let (nudge_tx, mut nudges) = mpsc::channel(16);
    let (stop_http, http_shutdown) = watch::channel(false);
    let router = concierge::http::router(
        readiness.clone(),
        Secret::new("s3cret-hook"),
        Some(nudge_tx),
    );
    let addr = concierge::http::serve("127.0.0.1:0", router, http_shutdown)
        .await
        .unwrap();
    assert_ne!(addr.port(), 0, "serve returns the bound address");
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let req = http.get(format!("{base}{path}"));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    };

    // Liveness needs nothing; readiness waits for the rules.
    assert_eq!(get("/healthz").await, (200, "ok\n".to_string()));
    assert_eq!(
        get("/readyz").await,
        (503, "not ready: rules not loaded\n".to_string())
    );
    readiness.rules_loaded.store(true, Ordering::Relaxed);
    assert_eq!(get("/readyz").await, (200, "ready\n".to_string()));

    // Metrics before.
    let (status, before) = get("/metrics").await;
    assert_eq!(status, 200);
    let consumed = r#"concierge_events_consumed_total{type="thread.new_message"}"#;
    let replies = r#"concierge_actions_total{kind="reply",outcome="executed"}"#;
    let polled = "concierge_poller_events_total";
    let (consumed0, replies0, polled0) = (
        sample(&before, consumed),
        sample(&before, replies),
        sample(&before, polled),
    );

    // One guest question through poller and worker.
    let thread = rig
        .sim
        .sim
        .open_thread("prop-m", "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "what's the wifi?");
    let events = rig.poll().await;
    let new_messages = events
        .iter()
        .filter(|e| e.event_type == concierge::events::EventType::ThreadNewMessage)
        .count();
    assert_eq!(new_messages, 1);
    let (stop, running) = rig.spawn_worker().await;
    common::eventually("the reply is executed", Duration::from_secs(15), || async {
        rig.audit()
            .await
            .iter()
            .any(|r| r.outcome == Outcome::Executed)
    })
    .await;
    let (status, after) = get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&after, consumed) - consumed0, 1.0, "{after}");
    assert_eq!(sample(&after, replies) - replies0, 1.0, "{after}");
    assert_eq!(
        sample(&after, polled) - polled0,
        events.len() as f64,
        "{after}"
    );
    assert!(
        after.contains("concierge_rule_evaluation_seconds"),
        "histogram exported: {after}"
    );
    let _ = stop.send(true);
    running.await.unwrap().unwrap();
    assert_eq!(rig.sent().len(), 1);

    // The webhook: no secret, a wrong one, then the right one with a property id.
    let hook = format!("{base}/webhooks/channex");
    let body = serde_json::json!({"event": "message", "property_id": "prop-m"});
    let unauthorized = r#"concierge_webhooks_total{result="unauthorized"}"#;
    let accepted = r#"concierge_webhooks_total{result="accepted"}"#;
    let m0 = get("/metrics").await.1;
    let resp = http.post(&hook).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = http
        .post(&hook)
        .header(WEBHOOK_SECRET_HEADER, "s3cret-hoo")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert!(
        nudges.try_recv().is_err(),
        "a refused webhook nudges nothing"
    );
    let resp = http
        .post(&hook)
        .header(WEBHOOK_SECRET_HEADER, "s3cret-hook")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(nudges.try_recv().unwrap(), Some("prop-m".to_string()));
    // A body without a property id nudges a poll of everything.
    let resp = http
        .post(&hook)
        .header(WEBHOOK_SECRET_HEADER, "s3cret-hook")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(nudges.try_recv().unwrap(), None);
    let m1 = get("/metrics").await.1;
    assert_eq!(sample(&m1, unauthorized) - sample(&m0, unauthorized), 2.0);
    assert_eq!(sample(&m1, accepted) - sample(&m0, accepted), 2.0);

    // Readiness follows the NATS connection: stop the server.
    rig.nats.stop();
    common::eventually(
        "/readyz reports NATS down",
        Duration::from_secs(10),
        || async {
            let (status, body) = get("/readyz").await;
            status == 503 && body.contains("NATS not connected")
        },
    )
    .await;
    assert_eq!(get("/healthz").await.0, 200, "still alive");
    let _ = stop_http.send(true);
}
