//! Response times and scores end to end (issue 24): the simulator's conversations, the real
//! poller, worker and executor, and the response tracker over a private nats-server; the
//! report read back through the same store the console and `concierge report` use.
//! Plus the shipped 20 h warning (rules/35_response_alert.rhai) firing once across a
//! worker kill, with an injected clock.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use concierge::base::clock::ManualClock;
use concierge::config::Config;
use concierge::roles::poller::Poller;
use concierge::roles::responses::report::{self, ReportOptions};
use concierge::roles::responses::scores::{Answerer, Basis};
use concierge::roles::responses::Tracker;
use concierge::sim::SimServer;
use concierge::store::nats::Infra;
use futures::StreamExt;
use tokio::sync::watch;

const PROP: &str = "prop-r";

const RULES: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["wifi"]) {
    reply("wifi");
}
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["thanks"]) {
    no_reply_needed();
}
"#;

struct Rig {
    _nats: concierge::store::nats::PrivateNatsServer,
    infra: Infra,
    sim: SimServer,
    config: Config,
    poller: Poller,
    _dir: tempfile::TempDir,
    stop: watch::Sender<bool>,
}

fn copy_shipped(from: &str, to: &Path, name: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(from).join(name);
    std::fs::copy(&src, to.join(name)).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
}

async fn rig(rules: &[(&str, &str)], shipped_rules: &[&str], shipped_templates: &[&str]) -> Rig {
    let (nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let dir = tempfile::tempdir().unwrap();
    let (rules_dir, templates_dir) = (dir.path().join("rules"), dir.path().join("templates"));
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::create_dir_all(&templates_dir).unwrap();
    for (name, body) in rules {
        std::fs::write(rules_dir.join(name), body).unwrap();
    }
    std::fs::write(
        templates_dir.join("wifi.hbs"),
        "The wifi is {{vars.wifi_name}}.",
    )
    .unwrap();
    for name in shipped_rules {
        copy_shipped("rules", &rules_dir, name);
    }
    for name in shipped_templates {
        copy_shipped("templates", &templates_dir, name);
    }
    let mut config = common::config(&sim, &nats_cfg, &[PROP]);
    config.rules.dir = rules_dir;
    config.rules.templates_dir = templates_dir;
    config.properties.insert(
        PROP.into(),
        concierge::config::PropertyConfig {
            name: "Casa Azul".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars: serde_json::json!({"wifi_name": "CasaAzul"})
                .as_object()
                .cloned()
                .unwrap(),
            dry_run: false,
        },
    );
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = Poller::new(channex, &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.unwrap(); // baseline
    let (stop, _) = watch::channel(false);
    Rig {
        _nats: nats,
        infra,
        sim,
        config,
        poller,
        _dir: dir,
        stop,
    }
}

impl Rig {
    fn tracker(&self) -> Tracker {
        concierge::wiring::responses(&self.config, &self.infra).expect("tracker on by default")
    }

    /// A worker (`Worker::run`) in the background until the returned task is aborted.
    async fn start_worker(&self, clock: Option<&ManualClock>) -> tokio::task::JoinHandle<()> {
        let channex = concierge::wiring::channex_client(&self.config).unwrap();
        let (mut worker, live) = concierge::wiring::worker(&self.config, &self.infra, channex)
            .await
            .unwrap();
        if let Some(c) = clock {
            worker = worker
                .with_clock(c.clock())
                .map_executor(|e| e.with_clock(c.clock()));
        }
        let js = self.infra.js.clone();
        let shutdown = self.stop.subscribe();
        tokio::spawn(async move {
            let _live = live;
            let _ = worker.run(&js, "concierge", shutdown).await;
        })
    }

    fn start_tracker(&self, clock: &ManualClock) -> tokio::task::JoinHandle<()> {
        let tracker = self.tracker().with_clock(clock.clock());
        let shutdown = self.stop.subscribe();
        tokio::spawn(async move {
            let _ = tracker.run(shutdown).await;
        })
    }

    fn thread(&self, provider: &str, guest: &str) -> String {
        self.sim
            .sim
            .open_thread(PROP, provider, guest, provider != "AirBNB")
    }

    async fn report(&self, now: chrono::DateTime<Utc>) -> report::PropertyReport {
        let records = self.tracker().store().list(Some(PROP)).await.unwrap();
        let options = ReportOptions {
            property: Some(PROP.into()),
            since: TimeDelta::days(30),
            now,
            grace: TimeDelta::hours(1),
            target: 0.9,
        };
        let built = report::build(&records, &options, &|id| id.to_string());
        built.properties.into_iter().next().expect("the property")
    }
}

/// Each definition's edge over the whole pipeline: an auto-reply, a "no reply needed"
/// within 24 h (left out), a staff reply at 23:59 (in time) and one at 24:01 (late), a
/// later staff reply answering two guest messages, an Airbnb opening and its follow-up;
/// then one thread purged.
#[tokio::test]
async fn every_answer_is_attributed_and_the_scores_follow_the_definitions() {
    let mut rig = rig(&[("10_rules.rhai", RULES)], &[], &[]).await;
    let clock = ManualClock::starting_at(Utc::now());
    let _worker = rig.start_worker(None).await;
    let _tracker = rig.start_tracker(&clock);
    let sim = rig.sim.sim.clone();

    let auto = rig.thread("BookingCom", "Ana");
    sim.guest_message(&auto, "What is the wifi?");
    let thanks = rig.thread("BookingCom", "Bea");
    sim.guest_message(&thanks, "thanks");
    let in_time = rig.thread("BookingCom", "Carla");
    sim.guest_message(&in_time, "Can we bring a dog?");
    sim.backdate_thread(&in_time, TimeDelta::hours(23) + TimeDelta::minutes(59));
    let late = rig.thread("BookingCom", "Dora");
    sim.guest_message(&late, "Is there a lift?");
    sim.backdate_thread(&late, TimeDelta::hours(24) + TimeDelta::minutes(1));
    let two = rig.thread("BookingCom", "Eva");
    sim.guest_message(&two, "Hello?");
    sim.backdate_thread(&two, TimeDelta::hours(8));
    sim.guest_message(&two, "Anyone there?");
    let airbnb = rig.thread("AirBNB", "Fay");
    sim.guest_message(&airbnb, "Is the flat free in May?");
    rig.poller.poll_once(Some(PROP)).await.unwrap();
    for (thread, text) in [
        (&in_time, "Yes, dogs are welcome."),
        (&late, "Yes, there is."),
        (&two, "Sorry, here now!"),
        (&airbnb, "It is!"),
    ] {
        sim.staff_message(thread, text);
    }
    sim.guest_message(&airbnb, "Great, and parking?"); // a follow-up, never answered
    rig.poller.poll_once(Some(PROP)).await.unwrap();
    // Concierge's own reply comes back as a property message.
    common::eventually("concierge's reply", Duration::from_secs(10), || async {
        sim.sent_by_api().len() == 1
    })
    .await;
    rig.poller.poll_once(Some(PROP)).await.unwrap();

    let now = Utc::now();
    common::eventually("every answer folded", Duration::from_secs(15), || async {
        let p = rig.report(now).await;
        p.answered_by.concierge == 1
            && p.answered_by.staff == 5
            && p.answered_by.no_reply_needed == 1
    })
    .await;
    let p = rig.report(now + TimeDelta::days(2)).await;
    let booking = &p
        .scores
        .iter()
        .find(|s| s.channel.as_str() == "booking_com")
        .unwrap()
        .score;
    // Ana (concierge), Carla (23:59), Eva ×2 (a later staff reply) in time; Dora (24:01)
    // late; Bea's "thanks" marked no reply needed within 24 h: left out.
    assert_eq!(
        (booking.counted, booking.within, booking.left_out),
        (5, 4, 1),
        "{booking:?}"
    );
    assert_eq!(booking.value, Some(0.8));
    assert!(
        !booking.shown,
        "Booking.com shows its score from 10 messages"
    );
    let airbnb_rate = &p
        .scores
        .iter()
        .find(|s| s.channel.as_str() == "airbnb")
        .unwrap()
        .score;
    // The opening answered in time; the follow-up does not count.
    assert_eq!(
        (airbnb_rate.counted, airbnb_rate.within),
        (1, 1),
        "{airbnb_rate:?}"
    );
    assert_eq!(airbnb_rate.basis, Basis::Recent10Of90Days);
    assert_eq!(p.at_risk.len(), 1);
    assert!(
        p.at_risk[0].overdue,
        "two days on, Fay's follow-up is overdue"
    );
    let now_report = rig.report(Utc::now()).await;
    assert_eq!(now_report.at_risk.len(), 1, "Fay's follow-up is open now");
    assert_eq!(now_report.at_risk[0].thread_id, airbnb);

    // Who answered each thread, from the records.
    let records = rig.tracker().store().list(Some(PROP)).await.unwrap();
    let first_by = |thread: &str| {
        let r = records.iter().find(|r| r.thread_id == thread).unwrap();
        concierge::roles::responses::scores::responses(r)[0]
            .answer
            .as_ref()
            .map(|a| a.by)
    };
    assert_eq!(first_by(&auto), Some(Answerer::Concierge));
    assert_eq!(first_by(&thanks), Some(Answerer::NoReplyNeeded));
    assert_eq!(first_by(&late), Some(Answerer::Staff));

    // A purged thread is gone from the records, and from the score.
    let purged = concierge::store::purge::purge_thread(&rig.infra, "concierge", &late, None)
        .await
        .unwrap();
    assert_eq!(purged.responses, 1);
    let p = rig.report(now + TimeDelta::days(2)).await;
    let booking = &p
        .scores
        .iter()
        .find(|s| s.channel.as_str() == "booking_com")
        .unwrap()
        .score;
    assert_eq!((booking.counted, booking.within), (4, 4));

    // The CLI prints the same report as JSON.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args(["report", "responses", "--property", PROP, "--json"])
        .env("NATS_URL", &rig.config.nats.url)
        .env_remove("CONCIERGE_CONFIG")
        .current_dir(rig._dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let property = &json["properties"][0];
    assert_eq!(property["property_id"], PROP);
    assert_eq!(property["answered_by"]["concierge"], 1);
    assert_eq!(property["answered_by"]["no_reply_needed"], 1);
    let booking = property["scores"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "booking_reply_score")
        .unwrap();
    assert_eq!(booking["counted"], 4);
    assert_eq!(json["target"], 0.9);
    assert_eq!(property["days"].as_array().unwrap().len(), 31);
    let _ = rig.stop.send(true);
}

/// The shipped rule warns at 20 h, before the OTAs' 24 h line: once, although the worker
/// that armed the warning is killed, the guest writes again in the same wait (re-arming
/// the same due time) and the fired event is delivered to a second worker again.
#[tokio::test]
async fn the_20_hour_warning_fires_once_across_a_worker_kill() {
    let mut rig = rig(
        &[],
        &["35_response_alert.rhai"],
        &["response_alert.hbs", "response_score_alert.hbs"],
    )
    .await;
    let mut alerts = rig
        .infra
        .client
        .subscribe(format!("concierge.alerts.{PROP}"))
        .await
        .unwrap();
    let thread = rig.thread("BookingCom", "Gil");
    rig.sim
        .sim
        .guest_message(&thread, "Is late checkout possible?");
    let asked = rig.sim.sim.messages(&thread)[0].inserted_at;
    let clock = ManualClock::starting_at(asked);
    let first = rig.start_worker(Some(&clock)).await;
    rig.poller.poll_once(Some(PROP)).await.unwrap();
    let followups = concierge::store::timers::FollowUps::new(rig.infra.followups.clone());
    common::eventually("the warning armed", Duration::from_secs(10), || async {
        followups
            .list()
            .await
            .unwrap()
            .iter()
            .any(|t| t.name == "response_alert")
    })
    .await;
    let armed = followups.list().await.unwrap();
    assert_eq!(armed[0].due_at, asked + TimeDelta::hours(20));
    first.abort(); // the worker is killed; the timer is in NATS

    clock.set(asked + TimeDelta::hours(20) + TimeDelta::seconds(1));
    let channex = concierge::wiring::channex_client(&rig.config).unwrap();
    let scheduler = concierge::wiring::scheduler(&rig.config, &rig.infra, channex)
        .with_clock(clock.clock())
        .with_max_idle(Duration::from_millis(50));
    let stop = rig.stop.subscribe();
    let _scheduler = tokio::spawn(async move {
        let _ = scheduler.run(stop).await;
    });
    let second = rig.start_worker(Some(&clock)).await;
    let alert = tokio::time::timeout(Duration::from_secs(15), alerts.next())
        .await
        .expect("the warning within 15 s")
        .unwrap();
    let alert: serde_json::Value = serde_json::from_slice(&alert.payload).unwrap();
    let text = alert["text"].as_str().unwrap();
    assert!(
        text.contains("Booking.com guest Gil has waited 20 h"),
        "{text}"
    );
    assert_eq!(alert["rule"], "35_response_alert");

    // The guest writes again in the same wait: the same due time is armed again, its
    // timer fires again with the same event id, and nothing is alerted twice.
    rig.sim.sim.guest_message(&thread, "Hello?");
    rig.poller.poll_once(Some(PROP)).await.unwrap();
    second.abort();
    let _third = rig.start_worker(Some(&clock)).await;
    let again = tokio::time::timeout(Duration::from_secs(4), alerts.next()).await;
    assert!(
        again.is_err(),
        "a second alert: {:?}",
        again.map(|m| m.map(|m| m.payload))
    );
    let audit = concierge::store::audit::query(
        &rig.infra.js,
        "concierge",
        &concierge::store::audit::AuditFilter::default(),
    )
    .await
    .unwrap();
    let executed_alerts = audit
        .iter()
        .filter(|r| r.action == Some(concierge::store::audit::ActionKind::Alert))
        .filter(|r| r.outcome == concierge::store::audit::Outcome::Executed)
        .count();
    assert_eq!(executed_alerts, 1);
    let _ = rig.stop.send(true);
}
