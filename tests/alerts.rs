//! Alert sinks over real HTTP (a tiny axum webhook receiver) and a private nats-server:
//! delivery, retries on 5xx, no retry on 4xx, and the webhook URL never leaking into errors.
mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use concierge::config::{AlertsConfig, Secret};
use concierge::roles::executor::alerts::{Alert, AlertError, AlertSinks};
use futures::StreamExt;
use serde_json::Value;

#[derive(Clone, Default)]
struct Hook {
    bodies: Arc<Mutex<Vec<Value>>>,
    calls: Arc<AtomicU32>,
    /// Respond with this status for the first `fail_first` calls.
    fail_first: u32,
    fail_status: u16,
}

async fn receive(State(h): State<Hook>, Json(body): Json<Value>) -> StatusCode {
    let n = h.calls.fetch_add(1, Ordering::SeqCst) + 1;
    if n <= h.fail_first {
        return StatusCode::from_u16(h.fail_status).unwrap();
    }
    h.bodies.lock().unwrap().push(body);
    StatusCode::OK
}

/// Serves the hook on a free port; returns the webhook URL (with a token in its path).
async fn serve(hook: Hook) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/services/T000/B000/{token}", post(receive))
        .with_state(hook);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    format!("http://{addr}/services/T000/B000/S3CR3T-T0K3N-abc123")
}

fn alert() -> Alert {
    Alert {
        property_id: "p1".into(),
        thread_id: Some("t1".into()),
        text: "Inquiry from Ana unanswered: respond before 14:00".into(),
        event_id: "inquiry.received:t1:m1".into(),
        rule: "20-inquiry-deadline".into(),
        at: Utc::now(),
    }
}

fn cfg(url: &str, max_attempts: u32) -> AlertsConfig {
    AlertsConfig {
        webhook_url: Secret::new(url),
        nats: false,
        log: true,
        max_attempts,
        ..AlertsConfig::default()
    }
}

#[tokio::test]
async fn webhook_receives_slack_compatible_text() {
    let hook = Hook::default();
    let url = serve(hook.clone()).await;
    let sinks = AlertSinks::new(&cfg(&url, 3), None);
    let report = sinks.send(&alert()).await.unwrap();
    assert_eq!(report.delivered, vec!["webhook", "log"]);
    assert_eq!(report.attempts, 1);
    let bodies = hook.bodies.lock().unwrap().clone();
    assert_eq!(
        bodies,
        vec![serde_json::json!({"text": "Inquiry from Ana unanswered: respond before 14:00"})]
    );
}

#[tokio::test]
async fn webhook_retries_server_errors_then_succeeds() {
    let hook = Hook {
        fail_first: 2,
        fail_status: 500,
        ..Default::default()
    };
    let url = serve(hook.clone()).await;
    let sinks = AlertSinks::new(&cfg(&url, 4), None).with_base_delay(Duration::from_millis(20));
    let report = sinks.send(&alert()).await.unwrap();
    assert_eq!(report.attempts, 3);
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);
    assert_eq!(hook.bodies.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn webhook_gives_up_after_max_attempts_and_does_not_retry_4xx() {
    let hook = Hook {
        fail_first: 100,
        fail_status: 503,
        ..Default::default()
    };
    let url = serve(hook.clone()).await;
    let sinks = AlertSinks::new(&cfg(&url, 3), None).with_base_delay(Duration::from_millis(10));
    let err = sinks.send(&alert()).await.unwrap_err();
    let AlertError::Failed {
        attempts,
        delivered,
        ..
    } = &err;
    assert_eq!(*attempts, 3);
    assert_eq!(delivered, &vec!["log"]);
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    assert_eq!(hook.calls.load(Ordering::SeqCst), 3);

    let hook = Hook {
        fail_first: 100,
        fail_status: 404,
        ..Default::default()
    };
    let url = serve(hook.clone()).await;
    let sinks = AlertSinks::new(&cfg(&url, 3), None).with_base_delay(Duration::from_millis(10));
    let err = sinks.send(&alert()).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 404"), "{err}");
    assert!(err.to_string().contains("after 1 attempt"), "{err}");
    assert_eq!(hook.calls.load(Ordering::SeqCst), 1);
    assert!(!err.to_string().contains("S3CR3T"), "{err}");
}

#[tokio::test]
async fn webhook_url_never_appears_in_errors() {
    // Nothing listens there: connection refused, retried, then reported without the URL.
    let port = concierge::store::nats::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}/services/T000/B000/S3CR3T-T0K3N-abc123");
    let sinks = AlertSinks::new(&cfg(&url, 2), None).with_base_delay(Duration::from_millis(10));
    let err = sinks.send(&alert()).await.unwrap_err();
    let text = err.to_string();
    let debug = format!("{err:?} {sinks:?}");
    assert!(text.contains("connection failed"), "{text}");
    assert!(text.contains("after 2 attempts"), "{text}");
    for leaked in ["S3CR3T", "T0K3N", "/services/"] {
        assert!(!text.contains(leaked), "{text}");
        assert!(!debug.contains(leaked), "{debug}");
    }
}

#[tokio::test]
async fn nats_sink_publishes_the_alert_on_the_property_subject() {
    let (_server, infra, _) = common::nats_infra().await;
    let mut sub = infra.client.subscribe("concierge.alerts.>").await.unwrap();
    infra.client.flush().await.unwrap();
    let cfg = AlertsConfig {
        webhook_url: Secret::default(),
        nats: true,
        log: false,
        max_attempts: 1,
        ..AlertsConfig::default()
    };
    let sinks = AlertSinks::new(&cfg, Some((infra.client.clone(), "concierge".into())));
    let a = alert();
    let report = sinks.send(&a).await.unwrap();
    assert_eq!(report.delivered, vec!["nats"]);
    assert_eq!(report.attempts, 0);
    let msg = tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.subject.as_str(), "concierge.alerts.p1");
    let got: Alert = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(got, a);

    // nats = false in config: the client is not used even when given.
    let off = AlertSinks::new(
        &AlertsConfig { nats: false, ..cfg },
        Some((infra.client.clone(), "concierge".into())),
    );
    assert!(off.send(&a).await.unwrap().delivered.is_empty());
}
