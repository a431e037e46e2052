//! Hostile rules inside the service (issue #11, defects 1, 2, 12): the worker turns a rule
//! that overflows or hits a sandbox limit into a `rule_error` audit record while the reply
//! rule still sends, and a rule burning its budget does not stall the worker's runtime.
//! Real NATS (private server), real HTTP to the simulator.
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge::events::{Event, EventType};
use concierge::roles::poller::Poller;
use concierge::roles::worker::Worker;
use concierge::sim::SimServer;
use concierge::store::audit::{Outcome, Reason};
use concierge::store::nats::{Infra, PrivateNatsServer};

const PROP: &str = "prop-h";

const FAQ_RULE: &str = "if event.type == \"thread.new_message\" && message.sender == \"guest\" {\n    reply(\"wifi\");\n}\n";

struct Rig {
    _nats: PrivateNatsServer,
    _dir: tempfile::TempDir,
    sim: SimServer,
    worker: Worker,
    _live: Arc<concierge::content::LiveRules>,
    event: Event,
}

/// NATS, simulator, the given rules, and the guest event of one new thread.
async fn rig(rules: &[(&str, &str)]) -> Rig {
    let (nats, infra, nats_cfg): (PrivateNatsServer, Infra, _) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let dir = tempfile::tempdir().expect("tempdir");
    let (rules_dir, templates_dir) = (dir.path().join("rules"), dir.path().join("templates"));
    std::fs::create_dir_all(&rules_dir).expect("mkdir");
    std::fs::create_dir_all(&templates_dir).expect("mkdir");
    for (name, body) in rules {
        std::fs::write(rules_dir.join(name), body).expect("write rule");
    }
    std::fs::write(templates_dir.join("wifi.hbs"), "The wifi is Casa.\n").expect("write");
    let mut config = common::config(&sim, &nats_cfg, &[PROP]);
    config.rules.dir = rules_dir;
    config.rules.templates_dir = templates_dir;
    config.rules.watch = false;
    let channex = concierge::wiring::channex_client(&config).expect("client");
    let mut poller = Poller::new(channex, &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.expect("baseline poll");
    let thread = sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    sim.sim.guest_message(&thread, "Hi, what's the wifi?");
    poller.poll_once(Some(PROP)).await.expect("poll");
    let event = common::stored_events(&infra.js, "concierge")
        .await
        .into_iter()
        .find(|e| {
            e.event_type == EventType::ThreadNewMessage
                && e.message
                    .as_ref()
                    .is_some_and(|m| m.sender == concierge::events::Sender::Guest)
        })
        .expect("the guest message event");
    let channex = concierge::wiring::channex_client(&config).expect("client");
    let (worker, live) = concierge::wiring::worker(&config, &infra, channex)
        .await
        .expect("worker");
    Rig {
        _nats: nats,
        _dir: dir,
        sim,
        worker,
        _live: live,
        event,
    }
}

#[tokio::test]
async fn overflowing_and_limit_hitting_rules_are_audited_and_the_reply_is_sent() {
    let rig = rig(&[
        (
            "05_plus.rhai",
            "let d = days(100000000000) + days(100000000000);\n",
        ),
        (
            "06_minus.rhai",
            "let d = days(-100000000000) - days(100000000000);\n",
        ),
        ("07_recursion.rhai", "fn f(n) { f(n + 1) }\nf(0);\n"),
        ("08_import.rhai", "import \"other\" as o;\n"),
        ("10_faq.rhai", FAQ_RULE),
    ])
    .await;
    let report = rig.worker.process_event(&rig.event, 1).await;
    assert!(report.is_final(), "{report:?}");
    let error_of = |rule: &str| -> String {
        let r = report
            .records
            .iter()
            .find(|r| r.outcome == Outcome::RuleError && r.rule.as_deref() == Some(rule))
            .unwrap_or_else(|| panic!("no rule_error record for {rule}: {:#?}", report.records));
        assert_eq!(r.reason, Some(Reason::RuleError));
        r.error.clone().unwrap_or_default()
    };
    assert!(error_of("05_plus").contains("duration out of range"));
    assert!(error_of("06_minus").contains("duration out of range"));
    assert!(error_of("07_recursion").contains("call depth limit 32 exceeded"));
    assert!(error_of("08_import").contains("modules are not available in rules"));
    assert!(report
        .records
        .iter()
        .any(|r| r.outcome == Outcome::Executed && r.rule.as_deref() == Some("10_faq")));
    assert_eq!(rig.sim.sim.sent_by_api().len(), 1);
}

/// Ten rules that each burn the whole 50 ms budget on heavy string work (few operations).
fn slow_rules() -> Vec<(String, String)> {
    (0..10)
        .map(|i| {
            (
                format!("0{i}_slow.rhai"),
                "let s = \"\";\ns.pad(60000, 'x');\nloop { let t = s.to_upper(); }\n".to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn rules_burning_their_budget_do_not_stall_the_worker_runtime() {
    let slow = slow_rules();
    let mut files: Vec<(&str, &str)> = slow.iter().map(|(n, s)| (n.as_str(), s.as_str())).collect();
    files.push(("10_faq.rhai", FAQ_RULE));
    let rig = rig(&files).await;
    // This test runs on tokio's single-threaded test runtime: a heartbeat task shares the
    // thread with the worker, as leases and heartbeats do in the service.
    let longest_gap_ms = Arc::new(AtomicU64::new(0));
    let gap = longest_gap_ms.clone();
    // Started here, not at the task's first poll: a stall before that poll counts too.
    let mut last = Instant::now();
    let heartbeat = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let ms = u64::try_from(last.elapsed().as_millis()).unwrap_or(u64::MAX);
            gap.fetch_max(ms, Ordering::Relaxed);
            last = Instant::now();
        }
    });
    // Let the heartbeat run once before the worker takes the thread.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let started = Instant::now();
    let report = rig.worker.process_event(&rig.event, 1).await;
    let took = started.elapsed();
    heartbeat.abort();
    assert!(report.is_final(), "{report:?}");
    let errors = report
        .records
        .iter()
        .filter(|r| r.outcome == Outcome::RuleError)
        .count();
    assert_eq!(errors, 10, "{:#?}", report.records);
    assert!(took >= Duration::from_millis(400), "the rules ran {took:?}");
    let longest = longest_gap_ms.load(Ordering::Relaxed);
    assert!(
        longest < 200,
        "the heartbeat stalled {longest} ms while rules ran for {took:?}"
    );
    assert_eq!(rig.sim.sim.sent_by_api().len(), 1);
}
