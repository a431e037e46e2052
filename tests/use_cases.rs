//! The shipped example rules end to end: poller, scheduler and worker running together
//! against the simulator and a private nats-server, as a host would run them.
mod common;

use std::time::Duration;

use chrono::{Timelike, Utc};
use concierge::config::{Config, PropertyConfig};
use concierge::store::audit::{self, ActionKind, AuditFilter, Outcome};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

const PROP: &str = "prop-uc";

struct Service {
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Service {
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        while tokio::time::timeout(Duration::from_secs(10), self.tasks.join_next())
            .await
            .ok()
            .flatten()
            .is_some()
        {}
    }
}

fn example_config(sim: &concierge::sim::SimServer, nats: &concierge::config::NatsConfig) -> Config {
    let mut c = common::config(sim, nats, &[PROP]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    c.rules.dir = root.join("rules");
    c.rules.templates_dir = root.join("templates");
    // Quiet hours well away from now, so replies are immediate whatever the time of day.
    let hour = Utc::now().with_timezone(&chrono_tz::Europe::Lisbon).hour();
    let vars = serde_json::json!({
        "wifi_name": "Azul", "wifi_password": "sardinhas",
        "checkin_time": "15:00", "checkout_time": "11:00",
        "quiet_start": format!("{:02}:00", (hour + 6) % 24),
        "quiet_end": format!("{:02}:00", (hour + 8) % 24),
        "inquiry_alert_before_hours": 2,
        "delayed_reply_minutes": 0.04,
    });
    c.properties.insert(
        PROP.into(),
        PropertyConfig {
            name: "Casa Azul".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars: vars.as_object().cloned().unwrap_or_default(),
            dry_run: false,
        },
    );
    c
}

async fn start(config: &Config, infra: &concierge::store::nats::Infra) -> Service {
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let channex = concierge::wiring::channex_client(config).unwrap();
    let poller = concierge::wiring::poller(config, infra, channex.clone(), None);
    let (_nudges_tx, nudges) = mpsc::channel(1);
    let s = shutdown.clone();
    tasks.spawn(async move {
        let _keep = _nudges_tx;
        poller.run(s, nudges).await.unwrap();
    });
    let scheduler = concierge::wiring::scheduler(config, infra, channex.clone());
    let s = shutdown.clone();
    tasks.spawn(async move { scheduler.run(s).await.unwrap() });
    let (worker, _live) = concierge::wiring::worker(config, infra, channex)
        .await
        .unwrap();
    let js = infra.js.clone();
    let s = shutdown.clone();
    tasks.spawn(async move {
        let _live = _live;
        worker.run(&js, "concierge", s).await.unwrap()
    });
    // The first poll is a baseline.
    tokio::time::sleep(Duration::from_millis(600)).await;
    Service { stop, tasks }
}

#[tokio::test]
async fn inquiry_alert_goes_out_before_the_deadline_and_not_when_staff_replied() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = example_config(&sim, &nats_cfg);
    let mut alerts = infra
        .client
        .subscribe(format!("concierge.alerts.{PROP}"))
        .await
        .unwrap();
    let service = start(&config, &infra).await;

    // Two inquiries whose 2-hour alert falls due in ~3 s; staff answers the second at once.
    let deadline = Utc::now() + chrono::Duration::hours(2) + chrono::Duration::seconds(3);
    let (unanswered, _) = sim.sim.add_inquiry(
        PROP,
        "Andrew",
        deadline,
        "2031-01-10",
        "2031-01-12",
        2,
        "300.00",
        "EUR",
    );
    let (answered, _) = sim.sim.add_inquiry(
        PROP,
        "Beatriz",
        deadline,
        "2031-02-10",
        "2031-02-12",
        4,
        "420.00",
        "EUR",
    );
    common::eventually("both inquiries armed", Duration::from_secs(10), || async {
        let records = audit::query(&infra.js, "concierge", &AuditFilter::default())
            .await
            .unwrap();
        [&unanswered, &answered].iter().all(|t| {
            records.iter().any(|r| {
                r.thread_id.as_deref() == Some(t.as_str())
                    && r.action == Some(ActionKind::FollowUp)
                    && r.outcome == Outcome::Executed
            })
        })
    })
    .await;
    sim.sim
        .staff_message(&answered, "Hi Beatriz, yes the dates are free!");

    let alert = tokio::time::timeout(Duration::from_secs(15), alerts.next())
        .await
        .expect("an alert within 15 s")
        .unwrap();
    let alert: serde_json::Value = serde_json::from_slice(&alert.payload).unwrap();
    let received_at = Utc::now();
    assert_eq!(alert["thread_id"], unanswered.as_str());
    let text = alert["text"].as_str().unwrap();
    assert!(text.contains("Andrew"), "{text}");
    assert!(text.contains("2031-01-10"), "{text}");
    assert!(text.contains("300.00 EUR"), "{text}");
    assert!(received_at < deadline, "alerted before non_response_at");

    // Past the second inquiry's due time: no alert for it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), alerts.next())
            .await
            .is_err(),
        "no alert for the inquiry staff answered"
    );
    let records = audit::query(&infra.js, "concierge", &AuditFilter::default())
        .await
        .unwrap();
    let alerted: Vec<_> = records
        .iter()
        .filter(|r| r.action == Some(ActionKind::Alert) && r.outcome == Outcome::Executed)
        .collect();
    assert_eq!(alerted.len(), 1);
    assert_eq!(alerted[0].thread_id.as_deref(), Some(unanswered.as_str()));
    service.stop().await;
}

#[tokio::test]
async fn delayed_reply_is_sent_unless_staff_answers_first() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = example_config(&sim, &nats_cfg);
    let service = start(&config, &infra).await;

    let ignored = sim
        .sim
        .open_thread(PROP, "BookingCom", "Nobody Answers", true);
    let answered = sim
        .sim
        .open_thread(PROP, "BookingCom", "Staff Answers", true);
    sim.sim
        .guest_message(&ignored, "Could you recommend a restaurant?");
    sim.sim
        .guest_message(&answered, "Could you recommend a museum?");
    common::eventually("both timers armed", Duration::from_secs(10), || async {
        let records = audit::query(&infra.js, "concierge", &AuditFilter::default())
            .await
            .unwrap();
        records
            .iter()
            .filter(|r| r.action == Some(ActionKind::FollowUp))
            .count()
            >= 2
    })
    .await;
    sim.sim.staff_message(&answered, "Try the Gulbenkian!");

    // The delay is 0.04 min = 2.4 s: the ignored guest gets the holding reply.
    common::eventually("holding reply sent", Duration::from_secs(10), || async {
        !sim.sim.sent_by_api().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = sim.sim.sent_by_api();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, ignored);
    assert!(sent[0].1.contains("will get back to you"), "{}", sent[0].1);
    let records = audit::query(
        &infra.js,
        "concierge",
        &AuditFilter {
            thread_id: Some(answered.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(
        records
            .iter()
            .any(|r| r.action == Some(ActionKind::CancelFollowUp)
                && r.outcome == Outcome::Executed),
        "{records:#?}"
    );
    assert!(!records.iter().any(|r| r.action == Some(ActionKind::Reply)));
    service.stop().await;
}
