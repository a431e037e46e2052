//! Worker + executor end to end: events from the real poller, rules from real files, Channex
//! calls over real HTTP to the simulator, audit records read back from JetStream.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use concierge::config::Config;
use concierge::events::{Event, EventType};
use concierge::roles::executor::CrashPoint;
use concierge::roles::poller::Poller;
use concierge::roles::worker::Worker;
use concierge::sim::{FaultConfig, SimServer};
use concierge::store::audit::{self, ActionKind, AuditFilter, AuditRecord, Outcome, Reason};
use concierge::store::nats::Infra;
use tokio::sync::watch;

const PROP: &str = "prop-w";

struct Rig {
    _nats: concierge::store::nats::PrivateNatsServer,
    infra: Infra,
    sim: SimServer,
    config: Config,
    poller: Poller,
    _dir: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, body).unwrap();
}

const FAQ_RULE: &str = r#"
// FAQ: wifi
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["wifi", "wi-fi"]) {
    reply("wifi");
}
"#;

const THANKS_RULE: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["thanks", "thank you"]) {
    no_reply_needed();
}
"#;

async fn rig(rules: &[(&str, &str)], templates: &[(&str, &str)]) -> Rig {
    let (nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let dir = tempfile::tempdir().unwrap();
    let rules_dir = dir.path().join("rules");
    let templates_dir = dir.path().join("templates");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::create_dir_all(&templates_dir).unwrap();
    for (name, body) in rules {
        write(&rules_dir, name, body);
    }
    for (name, body) in templates {
        write(&templates_dir, name, body);
    }
    let mut config = common::config(&sim, &nats_cfg, &[PROP]);
    config.rules.dir = rules_dir;
    config.rules.templates_dir = templates_dir;
    config.properties.insert(
        PROP.into(),
        concierge::config::PropertyConfig {
            name: "Casa Azul".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars: serde_json::json!({"wifi_name": "CasaAzul", "wifi_password": "sardinhas"})
                .as_object()
                .cloned()
                .unwrap(),
            dry_run: false,
        },
    );
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = Poller::new(channex, &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.unwrap(); // baseline
    Rig {
        _nats: nats,
        infra,
        sim,
        config,
        poller,
        _dir: dir,
    }
}

impl Rig {
    /// Maria opens a Booking.com thread and asks for the wifi; the poller emits her message.
    async fn wifi_question(&mut self) -> (String, Event) {
        let thread = self.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
        self.sim.sim.guest_message(&thread, "wifi?");
        (thread, guest_event(&self.poll().await))
    }

    async fn worker(&self) -> (Worker, Arc<concierge::content::LiveRules>) {
        let channex = concierge::wiring::channex_client(&self.config).unwrap();
        concierge::wiring::worker(&self.config, &self.infra, channex)
            .await
            .unwrap()
    }

    /// Poll and return the events emitted by this cycle.
    async fn poll(&mut self) -> Vec<Event> {
        let before = common::stored_events(&self.infra.js, "concierge")
            .await
            .len();
        self.poller.poll_once(Some(PROP)).await.unwrap();
        common::stored_events(&self.infra.js, "concierge")
            .await
            .into_iter()
            .skip(before)
            .collect()
    }

    async fn audit(&self) -> Vec<AuditRecord> {
        audit::query(&self.infra.js, "concierge", &AuditFilter::default())
            .await
            .unwrap()
    }

    fn sent(&self) -> Vec<(String, String)> {
        self.sim.sim.sent_by_api()
    }

    /// `Worker::run` in the background, as a worker process would run it.
    async fn start_worker(&self) -> RunningWorker {
        let (worker, live) = self.worker().await;
        let (stop, shutdown) = watch::channel(false);
        let js = self.infra.js.clone();
        let task = tokio::spawn(async move { worker.run(&js, "concierge", shutdown).await });
        RunningWorker {
            stop,
            task,
            _live: live,
        }
    }

    async fn wait_for_executed(&self, within: Duration) {
        common::eventually("the executed record", within, || async {
            self.audit()
                .await
                .iter()
                .any(|r| r.outcome == Outcome::Executed)
        })
        .await;
    }

    /// The worker's durable consumer, once the worker has created it.
    async fn try_consumer_info(&self) -> Option<async_nats::jetstream::consumer::Info> {
        let stream = self.infra.js.get_stream("CONCIERGE_EVENTS").await.ok()?;
        let mut consumer: async_nats::jetstream::consumer::PullConsumer =
            stream.get_consumer("concierge-worker").await.ok()?;
        consumer.info().await.ok().cloned()
    }

    /// The worker's durable consumer, as the server sees it.
    async fn consumer_info(&self) -> async_nats::jetstream::consumer::Info {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = self
            .infra
            .js
            .get_stream("CONCIERGE_EVENTS")
            .await
            .unwrap()
            .get_consumer("concierge-worker")
            .await
            .unwrap();
        consumer.info().await.unwrap().clone()
    }
}

struct RunningWorker {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), concierge::roles::worker::WorkerError>>,
    _live: Arc<concierge::content::LiveRules>,
}

impl RunningWorker {
    /// Shutdown as on SIGTERM; returns once the worker has finished and returned Ok.
    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap().unwrap();
    }
}

fn guest_event(events: &[Event]) -> Event {
    events
        .iter()
        .find(|e| {
            e.event_type == EventType::ThreadNewMessage
                && e.message
                    .as_ref()
                    .is_some_and(|m| m.sender == concierge::events::Sender::Guest)
        })
        .cloned()
        .expect("a new-message event")
}

#[tokio::test]
async fn wifi_question_gets_exactly_one_reply_and_an_executed_record() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[(
            "wifi.hbs",
            "The wifi is {{vars.wifi_name}}, password {{vars.wifi_password}}.\n",
        )],
    )
    .await;
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "Hi, what's the wifi?");
    rig.poll().await;

    let running = rig.start_worker().await;
    common::eventually("executed reply", Duration::from_secs(10), || async {
        rig.audit()
            .await
            .iter()
            .any(|r| r.outcome == Outcome::Executed)
    })
    .await;
    running.stop().await;

    let sent = rig.sent();
    assert_eq!(
        sent,
        vec![(
            thread.clone(),
            "The wifi is CasaAzul, password sardinhas.".to_string()
        )]
    );
    let records = rig.audit().await;
    let executed: Vec<_> = records
        .iter()
        .filter(|r| r.outcome == Outcome::Executed)
        .collect();
    assert_eq!(executed.len(), 1, "{records:#?}");
    let r = executed[0];
    assert_eq!(r.action, Some(ActionKind::Reply));
    assert_eq!(r.rule.as_deref(), Some("10_faq"));
    assert_eq!(r.template.as_deref(), Some("wifi"));
    assert_eq!(r.thread_id.as_deref(), Some(thread.as_str()));
    assert_eq!(r.property_id.as_deref(), Some(PROP));
    assert_eq!(
        r.text.as_deref(),
        Some("The wifi is CasaAzul, password sardinhas.")
    );
    assert!(r.rule_version.as_deref().is_some_and(|v| !v.is_empty()));
    let channex_id = r.channex_message_id.clone().expect("channex message id");
    assert!(rig
        .sim
        .sim
        .messages(&thread)
        .iter()
        .any(|m| m.id == channex_id));

    // Our own reply comes back through the poller: it never triggers the rules.
    let own = rig.poll().await;
    assert_eq!(own.len(), 1);
    let (worker, _live) = rig.worker().await;
    let report = worker.process_event(&own[0], 1).await;
    assert!(report.is_final());
    assert_eq!(report.records[0].reason, Some(Reason::OwnMessage));
    assert_eq!(rig.sent().len(), 1);
}

#[tokio::test]
async fn duplicate_delivery_and_racing_workers_send_one_reply() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    let (_, event) = rig.wifi_question().await;
    let (a, _la) = rig.worker().await;
    let (b, _lb) = rig.worker().await;
    let (ra, rb) = tokio::join!(a.process_event(&event, 1), b.process_event(&event, 1));
    // One of them may have been told to retry (the other held the claim); the retry then
    // finds the action done.
    for (w, r) in [(&a, ra), (&b, rb)] {
        if !r.is_final() {
            let again = w.process_event(&event, 2).await;
            assert!(again.is_final());
        }
    }
    // And a plain redelivery later.
    let again = a.process_event(&event, 3).await;
    assert!(again.is_final());
    assert_eq!(rig.sent().len(), 1, "{:?}", rig.sent());
}

#[tokio::test]
async fn crash_after_send_is_resolved_by_reading_the_thread_not_by_resending() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi:   {{vars.wifi_name}}")],
    )
    .await;
    rig.config.worker.ack_wait = Duration::from_secs(1); // claim timeout
    rig.config.channex.timeout = Duration::from_millis(500); // a send fits in a claim
    let (_, event) = rig.wifi_question().await;

    let (crashing, _l) = rig.worker().await;
    let crashing = crashing.with_crash_point(CrashPoint::AfterSend);
    let report = crashing.process_event(&event, 1).await;
    assert!(!report.is_final(), "the crash leaves the action unfinished");
    assert_eq!(rig.sent().len(), 1);

    // Another process picks the redelivery up after the claim went stale.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (fresh, _l2) = rig.worker().await;
    let report = fresh.process_event(&event, 2).await;
    assert!(report.is_final(), "{:?}", report.pending);
    assert_eq!(rig.sent().len(), 1, "no second message");
    let r = &report.records[0];
    assert_eq!(r.outcome, Outcome::Executed);
    assert_eq!(r.reason, Some(Reason::VerifiedAfterInterruption));
    assert!(r.channex_message_id.is_some());
}

#[tokio::test]
async fn crash_after_claim_before_send_sends_once_on_redelivery() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    rig.config.worker.ack_wait = Duration::from_secs(1);
    rig.config.channex.timeout = Duration::from_millis(500);
    let (_, event) = rig.wifi_question().await;
    let (crashing, _l) = rig.worker().await;
    let report = crashing
        .with_crash_point(CrashPoint::AfterClaim)
        .process_event(&event, 1)
        .await;
    assert!(!report.is_final());
    assert!(rig.sent().is_empty());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (fresh, _l2) = rig.worker().await;
    assert!(fresh.process_event(&event, 2).await.is_final());
    assert!(fresh.process_event(&event, 3).await.is_final());
    assert_eq!(rig.sent().len(), 1);
}

#[tokio::test]
async fn staff_reply_newer_than_the_guest_message_supersedes_the_auto_reply() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    let (thread, event) = rig.wifi_question().await;
    rig.sim
        .sim
        .staff_message(&thread, "Hi Maria, the wifi is on the fridge!");
    let (worker, _l) = rig.worker().await;
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final());
    let r = &report.records[0];
    assert_eq!(r.outcome, Outcome::Skipped);
    assert_eq!(r.reason, Some(Reason::Superseded));
    assert!(rig.sent().is_empty());
}

#[tokio::test]
async fn no_reply_needed_only_on_booking_com() {
    let mut rig = rig(&[("20_thanks.rhai", THANKS_RULE)], &[]).await;
    let booking = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    let airbnb = rig.sim.sim.open_thread(PROP, "Airbnb", "Tom", true);
    rig.sim.sim.guest_message(&booking, "Thanks!");
    rig.sim.sim.guest_message(&airbnb, "Thank you!");
    let events = rig.poll().await;
    let (worker, _l) = rig.worker().await;
    rig.sim.sim.clear_requests();
    let mut outcomes = Vec::new();
    for ev in &events {
        let report = worker.process_event(ev, 1).await;
        assert!(report.is_final());
        outcomes.push((
            ev.thread_id().unwrap().to_string(),
            report.records[0].clone(),
        ));
    }
    let on = |t: &str| outcomes.iter().find(|(id, _)| id == t).unwrap().1.clone();
    assert_eq!(on(&booking).outcome, Outcome::Executed);
    assert_eq!(rig.sim.sim.no_reply_needed_marks(&booking), 1);
    let skipped = on(&airbnb);
    assert_eq!(skipped.outcome, Outcome::Skipped);
    assert_eq!(skipped.reason, Some(Reason::NotSupported));
    assert!(
        !rig.sim
            .sim
            .requests()
            .iter()
            .any(|r| r.path.contains(&airbnb)),
        "no API call for the Airbnb thread"
    );
}

#[tokio::test]
async fn endless_loop_rule_is_a_rule_error_and_other_rules_still_act() {
    let mut rig = rig(
        &[
            ("05_loop.rhai", "let x = 0;\nloop { x += 1; }\n"),
            ("10_faq.rhai", FAQ_RULE),
        ],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    let (_, event) = rig.wifi_question().await;
    let (worker, _l) = rig.worker().await;
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final());
    let err = report
        .records
        .iter()
        .find(|r| r.outcome == Outcome::RuleError)
        .expect("rule_error record");
    assert_eq!(err.rule.as_deref(), Some("05_loop"));
    let message = err.error.clone().unwrap();
    assert!(message.contains("05_loop.rhai"), "{message}");
    assert!(message.contains(":2"), "line number in {message}");
    assert!(report
        .records
        .iter()
        .any(|r| r.outcome == Outcome::Executed));
    assert_eq!(rig.sent().len(), 1);
}

#[tokio::test]
async fn missing_template_variable_fails_the_action_and_sends_nothing() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[(
            "wifi.hbs",
            "Wifi: {{vars.wifi_name}} / {{vars.router_room}}",
        )],
    )
    .await;
    let (_, event) = rig.wifi_question().await;
    let (worker, _l) = rig.worker().await;
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final());
    let r = &report.records[0];
    assert_eq!(r.outcome, Outcome::Failed);
    assert_eq!(r.reason, Some(Reason::TemplateError));
    assert!(r.error.as_deref().unwrap().contains("router_room"), "{r:?}");
    assert!(rig.sent().is_empty());
    // Recorded in the audit stream too.
    assert!(rig
        .audit()
        .await
        .iter()
        .any(|a| a.outcome == Outcome::Failed));
}

#[tokio::test]
async fn live_edit_changes_behaviour_and_a_broken_edit_is_rejected() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[
            ("wifi.hbs", "Wifi: {{vars.wifi_name}}"),
            ("parking.hbs", "Park on the street."),
        ],
    )
    .await;
    let (worker, _live) = rig.worker().await;
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "where can I park?");
    let event = guest_event(&rig.poll().await);
    assert!(worker.process_event(&event, 1).await.records.is_empty());

    // Edit the rule in place: parking questions now get an answer, without a restart.
    let rule_path = rig.config.rules.dir.join("10_faq.rhai");
    std::fs::write(
        &rule_path,
        r#"if message.sender == "guest" && contains_any(message.text, ["park"]) { reply("parking"); }"#,
    )
    .unwrap();
    let started = std::time::Instant::now();
    common::eventually(
        "edited rule takes effect",
        Duration::from_secs(2),
        || async {
            let report = worker.process_event(&event, 1).await;
            report
                .records
                .iter()
                .any(|r| r.outcome == Outcome::Executed)
        },
    )
    .await;
    assert!(started.elapsed() <= Duration::from_secs(2));
    assert_eq!(rig.sent().len(), 1);

    // A broken edit is rejected; the last good version keeps acting.
    std::fs::write(&rule_path, "if message.sender == \"guest\" {{ reply(\n").unwrap();
    common::eventually(
        "rule_rejected audit record",
        Duration::from_secs(3),
        || async {
            rig.audit()
                .await
                .iter()
                .any(|r| r.outcome == Outcome::RuleRejected)
        },
    )
    .await;
    let rejected = rig
        .audit()
        .await
        .into_iter()
        .find(|r| r.outcome == Outcome::RuleRejected)
        .unwrap();
    assert!(rejected.error.unwrap().contains("10_faq.rhai:"));
    let thread2 = rig.sim.sim.open_thread(PROP, "BookingCom", "Ana", true);
    rig.sim
        .sim
        .guest_message(&thread2, "where do we park the car?");
    let event2 = guest_event(&rig.poll().await);
    let report = worker.process_event(&event2, 1).await;
    assert_eq!(
        report.records[0].outcome,
        Outcome::Executed,
        "{:?}",
        report.records
    );
    assert_eq!(rig.sent().len(), 2);
}

#[tokio::test]
async fn replies_are_sent_exactly_once_under_30_percent_channex_faults() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    let threads: Vec<String> = (0..8)
        .map(|i| {
            let t = rig
                .sim
                .sim
                .open_thread(PROP, "BookingCom", &format!("Guest {i}"), true);
            rig.sim.sim.guest_message(&t, "what's the wifi?");
            t
        })
        .collect();
    rig.poll().await;
    rig.sim.sim.set_faults(FaultConfig {
        rate_429: 0.15,
        rate_500: 0.15,
        retry_after_secs: 0,
        latency: Duration::ZERO,
    });
    let (w1, _l1) = rig.worker().await;
    let (w2, _l2) = rig.worker().await;
    let (stop, shutdown) = watch::channel(false);
    let mut running = Vec::new();
    for w in [w1, w2] {
        let js = rig.infra.js.clone();
        let shutdown = shutdown.clone();
        running.push(tokio::spawn(async move {
            w.run(&js, "concierge", shutdown).await
        }));
    }
    common::eventually("every thread answered", Duration::from_secs(60), || async {
        let records = rig.audit().await;
        threads.iter().all(|t| {
            records.iter().any(|r| {
                r.thread_id.as_deref() == Some(t.as_str()) && r.outcome == Outcome::Executed
            })
        })
    })
    .await;
    let _ = stop.send(true);
    for r in running {
        r.await.unwrap().unwrap();
    }
    let faults = rig
        .sim
        .sim
        .requests()
        .iter()
        .filter(|r| r.status == 429 || r.status == 500)
        .count();
    assert!(faults > 0);
    let mut sent = rig.sent();
    sent.sort();
    let mut unique = sent.clone();
    unique.dedup();
    assert_eq!(sent.len(), threads.len(), "{sent:?}");
    assert_eq!(unique.len(), sent.len(), "no thread got the reply twice");
}

#[tokio::test]
async fn persistent_channex_failure_is_retried_with_delay_then_given_up_with_a_failed_record() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    rig.config.worker.max_deliver = 3;
    rig.config.worker.retry_delay = Duration::from_millis(150);
    rig.config.channex.max_retries = 1;
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "wifi?");
    rig.poll().await;
    rig.sim.sim.set_faults(FaultConfig {
        rate_500: 1.0,
        ..FaultConfig::default()
    });
    let running = rig.start_worker().await;
    common::eventually(
        "gave up after max_deliver",
        Duration::from_secs(15),
        || async {
            rig.audit()
                .await
                .iter()
                .any(|r| r.reason == Some(Reason::MaxDeliver))
        },
    )
    .await;
    running.stop().await;
    let records = rig.audit().await;
    let gave_up = records
        .iter()
        .find(|r| r.reason == Some(Reason::MaxDeliver))
        .unwrap();
    assert_eq!(gave_up.outcome, Outcome::Failed);
    assert_eq!(gave_up.attempts, 3);
    assert!(
        gave_up.error.as_deref().unwrap().contains("500"),
        "{gave_up:?}"
    );
    assert!(rig.sent().is_empty());
    // The event is not retried forever: nothing is pending on the consumer.
    let info = rig.consumer_info().await;
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.num_ack_pending, 0);
}

/// An audit stream that cannot be written (here: deleted, as a stream without a leader
/// during a cluster fail-over looks to a publisher) is waited out in place: the reply is
/// sent once, the event keeps its first delivery instead of using up `max_deliver`, and
/// the executed record lands once the stream is back.
#[tokio::test]
async fn audit_stream_outage_is_waited_out_in_place_without_using_up_deliveries() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    rig.config.worker.max_deliver = 2;
    rig.config.worker.retry_delay = Duration::from_millis(100);
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "wifi?");
    rig.poll().await;
    rig.infra
        .js
        .delete_stream(concierge::store::nats::AUDIT_STREAM)
        .await
        .unwrap();

    let running = rig.start_worker().await;
    common::eventually("the reply is sent", Duration::from_secs(10), || async {
        !rig.sent().is_empty()
    })
    .await;
    // Long enough for several deliveries had the worker nak'd instead of waiting.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    Infra::setup(&rig.config.nats).await.unwrap();
    rig.wait_for_executed(Duration::from_secs(15)).await;
    running.stop().await;

    assert_eq!(rig.sent().len(), 1);
    let records = rig.audit().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].outcome, Outcome::Executed);
    assert_eq!(records[0].attempts, 1, "still the first delivery");
    let info = rig.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    assert_eq!(info.num_redelivered, 0);
}

/// Shutdown during such a wait stops waiting (well before `shutdown_timeout` and
/// `ack_wait`) and leaves the event to the next worker, which audits it without sending
/// again.
#[tokio::test]
async fn shutdown_during_a_nats_outage_stops_waiting_and_the_next_worker_finishes_the_event() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    rig.config.worker.retry_delay = Duration::from_millis(100);
    // Waiting for NATS could last up to ack_wait (8 s) and shutdown up to 30 s: stopping
    // well under both shows the wait was cut short. (A short ack_wait also bounds the
    // redelivery if the nak'd event went to the stopped worker's last pull request.)
    rig.config.worker.ack_wait = Duration::from_secs(8);
    rig.config.worker.shutdown_timeout = Duration::from_secs(30);
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "wifi?");
    rig.poll().await;
    rig.infra
        .js
        .delete_stream(concierge::store::nats::AUDIT_STREAM)
        .await
        .unwrap();

    let running = rig.start_worker().await;
    common::eventually("the reply is sent", Duration::from_secs(10), || async {
        !rig.sent().is_empty()
    })
    .await;
    let stopping = std::time::Instant::now();
    running.stop().await;
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped waiting for NATS on shutdown (took {:?})",
        stopping.elapsed()
    );

    Infra::setup(&rig.config.nats).await.unwrap();
    let running = rig.start_worker().await;
    rig.wait_for_executed(Duration::from_secs(25)).await;
    running.stop().await;
    assert_eq!(rig.sent().len(), 1, "no second send after the restart");
    let records = rig.audit().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].attempts, 2, "finished by the redelivery");
    let info = rig.consumer_info().await;
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
}

/// Shutdown on the last allowed delivery while the ledger is unreachable: the event is not
/// given up as `failed` (only NATS was in the way); the next worker answers it.
#[tokio::test]
async fn shutdown_on_the_last_delivery_during_a_ledger_outage_does_not_give_the_event_up() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    rig.config.worker.max_deliver = 1;
    rig.config.worker.retry_delay = Duration::from_millis(100);
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "wifi?");
    rig.poll().await;
    let ledger_stream = format!("KV_{}", rig.infra.names.ledger_bucket());
    rig.infra.js.delete_stream(&ledger_stream).await.unwrap();

    let running = rig.start_worker().await;
    common::eventually(
        "the event is delivered",
        Duration::from_secs(10),
        || async {
            rig.try_consumer_info()
                .await
                .is_some_and(|i| i.num_ack_pending == 1)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    assert!(rig.sent().is_empty(), "no claim, no send");
    assert!(
        rig.audit().await.is_empty(),
        "not given up: {:#?}",
        rig.audit().await
    );

    Infra::setup(&rig.config.nats).await.unwrap();
    let running = rig.start_worker().await;
    rig.wait_for_executed(Duration::from_secs(25)).await;
    running.stop().await;
    assert_eq!(rig.sent().len(), 1);
    let records = rig.audit().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].attempts, 2);
}

/// An action claimed by another worker that went quiet (crashed, or its Channex call is
/// still unresolved) is waited for in place until the claim expires, then taken over:
/// the event keeps its first delivery instead of being given up as `failed` after
/// `max_deliver` quick redeliveries that each found the claim busy.
#[tokio::test]
async fn an_action_claimed_by_another_worker_is_waited_for_not_given_up() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    rig.config.worker.max_deliver = 2;
    rig.config.worker.retry_delay = Duration::from_millis(100);
    rig.config.worker.ack_wait = Duration::from_secs(3); // also the claim timeout
    let (_, event) = rig.wifi_question().await;
    let other = concierge::store::ledger::Ledger::new(
        rig.infra.ledger.clone(),
        "a-worker-that-went-quiet",
        rig.config.worker.ack_wait,
    );
    let claim = other
        .claim(&format!("{}|10_faq|0", event.id), None)
        .await
        .unwrap();
    assert!(matches!(claim, concierge::store::ledger::Claim::Won { .. }));

    let running = rig.start_worker().await;
    rig.wait_for_executed(Duration::from_secs(20)).await;
    running.stop().await;
    assert_eq!(rig.sent().len(), 1);
    let records = rig.audit().await;
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0].attempts, 1, "taken over on the first delivery");
    assert_eq!(rig.consumer_info().await.num_redelivered, 0);
}

/// A pause point before a reply's send: the worker reports it got there, then waits for
/// the test's go-ahead.
fn pause_before_send() -> (
    concierge::roles::executor::BeforeSend,
    Arc<tokio::sync::Notify>,
    Arc<tokio::sync::Notify>,
) {
    let reached = Arc::new(tokio::sync::Notify::new());
    let go = Arc::new(tokio::sync::Notify::new());
    let hook: concierge::roles::executor::BeforeSend = {
        let (reached, go) = (reached.clone(), go.clone());
        Arc::new(move || {
            let (reached, go) = (reached.clone(), go.clone());
            Box::pin(async move {
                reached.notify_one();
                go.notified().await;
            })
        })
    };
    (hook, reached, go)
}

/// Issue 11, defect 10, replayed deterministically: worker A claims the reply and is held
/// right before its send while the (shared, stepped) clock moves past the claim timeout,
/// as during a NATS outage plus slow Channex calls. Worker B gets the redelivery, takes the
/// expired claim over, verifies by reading and sends. When A resumes, its pre-send
/// confirmation finds the claim taken over: it must not send as well.
#[tokio::test]
async fn a_holder_whose_claim_was_taken_over_does_not_send_a_second_reply() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    // Renewals every 10 s never happen within this test: only the stepped clock counts.
    rig.config.worker.ack_wait = Duration::from_secs(30);
    let (_, event) = rig.wifi_question().await;
    let offset = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let clock: concierge::base::clock::Clock = {
        let offset = offset.clone();
        Arc::new(move || {
            chrono::Utc::now()
                + chrono::Duration::seconds(offset.load(std::sync::atomic::Ordering::SeqCst))
        })
    };
    let (hook, reached, go) = pause_before_send();
    let (a, _la) = rig.worker().await;
    let a = a.map_executor(|e| e.with_ledger_clock(clock.clone()).with_before_send(hook));
    let a_run = {
        let (a, event) = (a.clone(), event.clone());
        tokio::spawn(async move { a.process_event(&event, 1).await })
    };
    reached.notified().await;
    offset.store(61, std::sync::atomic::Ordering::SeqCst);

    let (b, _lb) = rig.worker().await;
    let b = b.map_executor(|e| e.with_ledger_clock(clock.clone()));
    let report = b.process_event(&event, 2).await;
    assert!(report.is_final(), "{report:?}");
    assert_eq!(report.records[0].outcome, Outcome::Executed);
    assert_eq!(rig.sent().len(), 1);

    go.notify_one();
    let report = a_run.await.unwrap();
    assert!(!report.is_final(), "A lost its claim: {report:?}");
    assert!(format!("{report:?}").contains("taken over"), "{report:?}");
    assert_eq!(rig.sent().len(), 1, "A sent too: {:?}", rig.sent());
    // A's redelivery finds the action done.
    assert!(a.process_event(&event, 3).await.is_final());
    assert_eq!(rig.sent().len(), 1);
    let executed = rig
        .audit()
        .await
        .into_iter()
        .filter(|r| r.outcome == Outcome::Executed)
        .count();
    assert_eq!(executed, 1);
}

/// Defect 10, the other half: a live holder renews its claim, so a redelivery that comes
/// after the claim timeout (measured from the claim) finds it busy instead of taking it
/// over, and exactly one reply goes out.
#[tokio::test]
async fn a_held_claim_is_renewed_and_not_taken_over_while_its_holder_works() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    rig.config.worker.ack_wait = Duration::from_millis(1200); // claim timeout
    rig.config.channex.timeout = Duration::from_millis(500);
    let (_, event) = rig.wifi_question().await;
    let (hook, reached, go) = pause_before_send();
    let (a, _la) = rig.worker().await;
    let a = a.map_executor(|e| e.with_before_send(hook));
    let a_run = {
        let event = event.clone();
        tokio::spawn(async move { a.process_event(&event, 1).await })
    };
    reached.notified().await;
    // Twice the claim timeout since A claimed: only renewals keep the claim A's.
    tokio::time::sleep(Duration::from_millis(2400)).await;
    let (b, _lb) = rig.worker().await;
    let report = b.process_event(&event, 2).await;
    assert!(!report.is_final(), "B must find the claim busy: {report:?}");
    assert!(rig.sent().is_empty(), "{:?}", rig.sent());

    go.notify_one();
    let report = a_run.await.unwrap();
    assert!(report.is_final(), "{report:?}");
    assert_eq!(report.records[0].reason, Some(Reason::Sent));
    assert!(b.process_event(&event, 3).await.is_final());
    assert_eq!(rig.sent().len(), 1);
}

/// Issue 11, defect 11: a worker killed after its POST reached Channex but before it
/// recorded the message as its own. The reply must still never reach the rules as a staff
/// message (the poller's event for it is skipped as `own_message`), and it must not
/// supersede another reply to the same guest message.
#[tokio::test]
async fn a_reply_sent_by_a_worker_killed_before_recording_it_is_still_its_own() {
    const PARKING_RULE: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" && message.text.contains("wifi") {
    reply("parking");
}
// Staff answered: what the delayed-reply rule does (it cancels its timer).
if event.type == "thread.new_message" && message.sender == "property" {
    close_thread();
}
"#;
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE), ("20_parking.rhai", PARKING_RULE)],
        &[
            ("wifi.hbs", "Wifi: {{vars.wifi_name}}"),
            ("parking.hbs", "Parking is free."),
        ],
    )
    .await;
    rig.config.worker.ack_wait = Duration::from_secs(1);
    rig.config.channex.timeout = Duration::from_millis(500);
    let (thread, event) = rig.wifi_question().await;

    let (killed, _l) = rig.worker().await;
    let killed = killed.with_crash_point(CrashPoint::AfterSendBeforeMarks);
    let report = killed.process_event(&event, 1).await;
    assert!(!report.is_final());
    // The second reply went out although the first one (unmarked) is newer than the
    // guest message: it is known to be ours, not a staff takeover.
    assert_eq!(rig.sent().len(), 2, "{:?} {report:?}", rig.sent());

    // The poller sees both replies as property messages: no rule runs on them.
    let own = rig.poll().await;
    assert_eq!(own.len(), 2, "{own:#?}");
    let (fresh, _l2) = rig.worker().await;
    for e in &own {
        let report = fresh.process_event(e, 1).await;
        assert!(report.is_final(), "{report:?}");
        assert_eq!(report.records.len(), 1, "{:#?}", report.records);
        assert_eq!(report.records[0].reason, Some(Reason::OwnMessage));
    }
    assert!(!rig.sim.sim.thread(&thread).is_some_and(|t| t.is_closed));

    // The redelivery of the guest event verifies both replies by reading.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = fresh.process_event(&event, 2).await;
    assert!(report.is_final(), "{report:?}");
    for r in &report.records {
        assert_eq!(r.outcome, Outcome::Executed, "{r:?}");
        assert_eq!(r.reason, Some(Reason::VerifiedAfterInterruption));
    }
    assert_eq!(rig.sent().len(), 2);
}

/// Issue 11, defect 9: timers expire with `nats.followups_max_age`, so one due later than
/// that (minus a day) would silently vanish; it is refused with a `failed` record instead.
#[tokio::test]
async fn a_follow_up_due_beyond_timer_retention_is_refused_not_lost() {
    const FAR_RULE: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" {
    follow_up("anniversary", days(500));
}
"#;
    let mut rig = rig(&[("10_far.rhai", FAR_RULE)], &[]).await;
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "hello");
    let event = guest_event(&rig.poll().await);
    let (worker, _l) = rig.worker().await;
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final(), "{report:?}");
    assert_eq!(report.records[0].outcome, Outcome::Failed);
    assert_eq!(report.records[0].reason, Some(Reason::BeyondRetention));
    let timers = concierge::store::timers::FollowUps::new(rig.infra.followups.clone());
    assert!(timers.list().await.unwrap().is_empty());
}

/// Issue 12: a ledger entry marked done whose outcome cannot be read used to count as
/// `executed`; what happened is unknown, so the action now fails visibly instead.
#[tokio::test]
async fn an_unreadable_ledger_outcome_is_a_failed_record_not_executed() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "The wifi is {{vars.wifi_name}}.\n")],
    )
    .await;
    let (thread, event) = rig.wifi_question().await;

    let ledger = concierge::store::ledger::Ledger::new(
        rig.infra.ledger.clone(),
        "earlier-worker",
        Duration::from_secs(30),
    );
    let key = format!("{}|10_faq|0", event.id);
    let concierge::store::ledger::Claim::Won { revision, .. } =
        ledger.claim_in(&key, Some(&thread), None).await.unwrap()
    else {
        panic!("fresh claim expected");
    };
    let garbled = concierge::store::ledger::LedgerEntry {
        state: concierge::store::ledger::LedgerState::Done,
        worker: String::new(),
        claimed_at: chrono::Utc::now(),
        outcome: Some("exectued".into()),
        reason: Some("sent".into()),
        text: None,
        channex_message_id: None,
        attempts: 1,
        renewed_at: None,
        thread_id: Some(thread.clone()),
    };
    ledger.finish(&key, revision, garbled).await.unwrap();

    let (worker, _live) = rig.worker().await;
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final(), "{report:?}");
    let r = &report.records[0];
    assert_eq!(r.outcome, Outcome::Failed, "{r:?}");
    assert_eq!(r.reason, Some(Reason::LedgerUnreadable));
    assert!(r.error.as_deref().is_some_and(|e| e.contains("exectued")));
    assert!(rig.sent().is_empty());
}

/// The cooldown is judged with the executor's injected clock: the same template to the same
/// thread within the window is skipped, after it is sent again.
#[tokio::test]
async fn cooldown_is_judged_with_the_injected_clock() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "The wifi is {{vars.wifi_name}}.\n")],
    )
    .await;
    rig.config.rules.cooldown = Duration::from_secs(3600);
    let start = chrono::DateTime::parse_from_rfc3339("2030-01-01T12:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let manual = concierge::base::clock::ManualClock::starting_at(start);
    let (worker, _live) = rig.worker().await;
    let worker = worker.map_executor(|e| e.with_clock(manual.clock()));
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);

    rig.sim.sim.guest_message(&thread, "wifi?");
    let first = guest_event(&rig.poll().await);
    let report = worker.process_event(&first, 1).await;
    assert_eq!(report.records[0].reason, Some(Reason::Sent), "{report:?}");

    manual.advance(chrono::TimeDelta::minutes(59));
    rig.sim.sim.guest_message(&thread, "the wifi again?");
    let second = guest_event(&rig.poll().await);
    let report = worker.process_event(&second, 1).await;
    let r = &report.records[0];
    assert_eq!(r.outcome, Outcome::Skipped, "{r:?}");
    assert_eq!(r.reason, Some(Reason::Cooldown));
    assert_eq!(rig.sent().len(), 1);

    manual.advance(chrono::TimeDelta::minutes(2));
    rig.sim
        .sim
        .guest_message(&thread, "and the wifi once more?");
    let third = guest_event(&rig.poll().await);
    let report = worker.process_event(&third, 1).await;
    assert_eq!(report.records[0].reason, Some(Reason::Sent), "{report:?}");
    assert_eq!(rig.sent().len(), 2);
    // The record is stamped with the injected clock.
    assert_eq!(report.records[0].at, start + chrono::TimeDelta::minutes(61));
}

/// Channex requests recorded by the simulator since `clear_requests`, as `METHOD path`.
fn requests(rig: &Rig) -> Vec<String> {
    rig.sim
        .sim
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn is_messages_read(request: &str) -> bool {
    request.starts_with("GET ") && request.ends_with("/messages")
}

/// A worker whose Channex client's request counter the test can read.
async fn counted_worker(rig: &Rig) -> (Worker, concierge::channex::ChannexClient) {
    let channex = concierge::wiring::channex_client(&rig.config).unwrap();
    let (worker, _live) = concierge::wiring::worker(&rig.config, &rig.infra, channex.clone())
        .await
        .unwrap();
    (worker, channex)
}

#[tokio::test]
async fn a_thread_unchanged_since_the_poll_is_answered_with_two_channex_calls() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    let (_, event) = rig.wifi_question().await;
    let (worker, channex) = counted_worker(&rig).await;
    rig.sim.sim.clear_requests();
    let before = channex.stats().requests_sent;
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final());
    assert_eq!(report.records[0].outcome, Outcome::Executed);
    // The thread (closed? moved since the poll?), then the send: no read of the messages.
    assert_eq!(channex.stats().requests_sent - before, 2);
    let calls = requests(&rig);
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].starts_with("GET ") && !is_messages_read(&calls[0]),
        "{calls:?}"
    );
    assert!(calls[1].starts_with("POST "), "{calls:?}");
    assert_eq!(rig.sent().len(), 1);
}

#[tokio::test]
async fn staff_answering_between_poll_and_send_moves_the_thread_and_skips_the_reply() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    let (thread, event) = rig.wifi_question().await;
    rig.sim.sim.staff_message(&thread, "On the fridge!");
    let (worker, _channex) = counted_worker(&rig).await;
    rig.sim.sim.clear_requests();
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final());
    assert_eq!(report.records[0].outcome, Outcome::Skipped);
    assert_eq!(report.records[0].reason, Some(Reason::Superseded));
    // The thread moved since the poll, so its messages were read before deciding.
    let calls = requests(&rig);
    assert!(calls.iter().any(|c| is_messages_read(c)), "{calls:?}");
    assert!(!calls.iter().any(|c| c.starts_with("POST ")), "{calls:?}");
    assert!(rig.sent().is_empty());
}

#[tokio::test]
async fn staff_answering_before_the_poll_supersedes_although_the_thread_did_not_move_since() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "wifi?");
    rig.sim.sim.staff_message(&thread, "On the fridge!");
    // The guest message's event carries a snapshot that already counts the staff answer:
    // the thread equals the snapshot, but its last message is not the guest's.
    let event = guest_event(&rig.poll().await);
    let (worker, _channex) = counted_worker(&rig).await;
    let report = worker.process_event(&event, 1).await;
    assert!(report.is_final());
    assert_eq!(report.records[0].reason, Some(Reason::Superseded));
    assert!(rig.sent().is_empty());
}

#[tokio::test]
async fn the_poller_builds_the_event_of_our_own_reply_from_the_ledger_as_a_read_would() {
    use concierge::roles::poller::detect;
    use concierge::store::threads::ThreadSnapshots;
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi:\n  {{vars.wifi_name}}  ")],
    )
    .await;
    let (thread, event) = rig.wifi_question().await;
    let (worker, _channex) = counted_worker(&rig).await;
    assert!(worker.process_event(&event, 1).await.is_final());
    assert_eq!(rig.sent().len(), 1);

    // What a read of the messages would have produced, by the poller's own detection.
    let previous = ThreadSnapshots::new(rig.infra.threads.clone())
        .get(&thread)
        .await
        .unwrap()
        .expect("snapshot");
    let channex = concierge::wiring::channex_client(&rig.config).unwrap();
    let listed = channex.get_thread(&thread).await.unwrap();
    let read = channex
        .list_thread_messages_page(&thread, 1, 100)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|m| !detect::knows(&previous, m))
        .collect::<Vec<_>>();
    assert_eq!(read.len(), 1);
    let expected = detect::detect(detect::Observed {
        thread: &listed,
        previous: Some(&previous),
        property_id: PROP.to_string(),
        property: rig.config.property_info(PROP),
        fresh: read,
        booking_language: None,
        emit_after: Some(chrono::DateTime::<chrono::Utc>::MIN_UTC),
    });

    rig.sim.sim.clear_requests();
    let own = rig.poll().await;
    let calls = requests(&rig);
    assert!(!calls.iter().any(|c| is_messages_read(c)), "{calls:?}");
    assert_eq!(own.len(), 1);
    assert_eq!(
        serde_json::to_value(&own[0]).unwrap(),
        serde_json::to_value(&expected.events[0]).unwrap()
    );
    let stored = ThreadSnapshots::new(rig.infra.threads.clone())
        .get(&thread)
        .await
        .unwrap();
    assert_eq!(stored, Some(expected.state));
    // And the worker still recognises it as ours.
    let report = worker.process_event(&own[0], 1).await;
    assert_eq!(report.records[0].reason, Some(Reason::OwnMessage));
}

#[tokio::test]
async fn the_poller_reads_the_messages_when_more_than_our_reply_arrived() {
    let mut rig = rig(
        &[("10_faq.rhai", FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    )
    .await;
    let (thread, event) = rig.wifi_question().await;
    let (worker, _channex) = counted_worker(&rig).await;
    assert!(worker.process_event(&event, 1).await.is_final());
    rig.sim.sim.guest_message(&thread, "thanks!");
    rig.sim.sim.clear_requests();
    let events = rig.poll().await;
    let calls = requests(&rig);
    assert!(calls.iter().any(|c| is_messages_read(c)), "{calls:?}");
    let senders: Vec<_> = events
        .iter()
        .filter_map(|e| e.message.as_ref().map(|m| m.sender.clone()))
        .collect();
    assert_eq!(
        senders,
        vec![
            concierge::events::Sender::Property,
            concierge::events::Sender::Guest
        ]
    );
}
