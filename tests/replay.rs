//! `concierge replay`: events handled with rules A, replayed (dry, pure) with rules B; the
//! differences are reported and nothing reaches Channex.
mod opsrig;

use std::time::Duration;

use chrono::Utc;
use concierge::cli::inspect::{compare_replay, replay_text, stored_events, PlanLine};
use concierge::content::{load_rules, load_templates};
use concierge::plan::rules::{RuleEngine, RuleLimits};
use concierge::store::audit::{self, AuditFilter, Outcome};
use opsrig::{assert_in_order, common, PREFIX};

const THANKS_RULE: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["thanks", "thank you"]) {
    no_reply_needed();
}
"#;

/// Version B: the FAQ also answers parking questions; the thanks rule is gone.
const FAQ_RULE_B: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["wifi", "wi-fi"]) {
    reply("wifi");
}
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["park", "parking"]) {
    reply("parking");
}
"#;

#[tokio::test]
async fn replay_with_changed_rules_reports_the_difference_and_sends_nothing() {
    let mut rig = opsrig::rig(
        "prop-r",
        &[
            ("10_faq.rhai", opsrig::FAQ_RULE),
            ("20_thanks.rhai", THANKS_RULE),
        ],
        &[("wifi.hbs", opsrig::WIFI_TEMPLATE)],
    )
    .await;
    let wifi = rig
        .sim
        .sim
        .open_thread("prop-r", "BookingCom", "Maria", true);
    let park = rig.sim.sim.open_thread("prop-r", "BookingCom", "Tom", true);
    let thanks = rig.sim.sim.open_thread("prop-r", "BookingCom", "Ana", true);
    rig.sim.sim.guest_message(&wifi, "What's the wifi?");
    rig.sim
        .sim
        .guest_message(&park, "Where can I park the car?");
    rig.sim.sim.guest_message(&thanks, "Thanks for everything!");
    let guests = opsrig::guest_events(&rig.poll().await);
    assert_eq!(guests.len(), 3);
    let event_of = |thread: &str| {
        guests
            .iter()
            .find(|e| e.thread_id() == Some(thread))
            .unwrap()
            .id
            .clone()
    };

    // Version A handles the events for real.
    let (stop, running) = rig.spawn_worker().await;
    common::eventually("rules A acted", Duration::from_secs(15), || async {
        rig.audit()
            .await
            .iter()
            .filter(|r| r.outcome == Outcome::Executed)
            .count()
            == 2
    })
    .await;
    let _ = stop.send(true);
    running.await.unwrap().unwrap();
    assert_eq!(rig.sent().len(), 1);
    assert_eq!(rig.sim.sim.no_reply_needed_marks(&thanks), 1);

    // Version B, in another directory.
    let (rules_b, templates_b) = opsrig::rule_dirs(
        rig.dir.path(),
        "b",
        &[("10_faq.rhai", FAQ_RULE_B)],
        &[
            ("wifi.hbs", opsrig::WIFI_TEMPLATE),
            ("parking.hbs", "Free parking on Rua das Flores."),
        ],
    );
    let requests_before = rig.sim.sim.requests().len();
    let sent_before = rig.sent();

    let engine = RuleEngine::new(RuleLimits::default());
    let (rule_set, problems) = load_rules(&engine, &rules_b);
    assert!(problems.is_empty(), "{problems:?}");
    let (templates, template_problems) = load_templates(&templates_b);
    assert!(template_problems.is_empty(), "{template_problems:?}");
    let since = Utc::now() - chrono::Duration::hours(1);
    let events = stored_events(&rig.infra.js, PREFIX, since).await.unwrap();
    assert!(events.len() >= 3, "{events:?}");
    let records = audit::query(
        &rig.infra.js,
        PREFIX,
        &AuditFilter {
            since: Some(since),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let entries = compare_replay(&engine, &rule_set, &templates, &events, &records);
    assert_eq!(entries.len(), events.len(), "one entry per stored event");

    let entry = |thread: &str| {
        let id = event_of(thread);
        entries.iter().find(|e| e.event_id == id).unwrap()
    };
    let line = |rule: &str, action: &str, template: Option<&str>| {
        (
            rule.to_string(),
            action.to_string(),
            template.map(str::to_string),
        )
    };
    let key = |p: &PlanLine| (p.rule.clone(), p.action.clone(), p.template.clone());

    // Unchanged: the wifi question gets the same reply.
    let e = entry(&wifi);
    assert!(!e.changed, "{e:?}");
    assert_eq!(
        e.would.iter().map(key).collect::<Vec<_>>(),
        [line("10_faq", "reply", Some("wifi"))]
    );
    assert_eq!(e.did.len(), 1);
    assert_eq!(e.did[0].outcome.as_deref(), Some("executed"));
    // New: the parking question would now be answered.
    let e = entry(&park);
    assert!(e.changed);
    assert!(e.did.is_empty());
    assert_eq!(
        e.would.iter().map(key).collect::<Vec<_>>(),
        [line("10_faq", "reply", Some("parking"))]
    );
    assert_eq!(
        e.would[0].text.as_deref(),
        Some("Free parking on Rua das Flores.")
    );
    // Gone: the thanks rule no longer marks the thread.
    let e = entry(&thanks);
    assert!(e.changed);
    assert!(e.would.is_empty());
    assert_eq!(
        e.did.iter().map(key).collect::<Vec<_>>(),
        [line("20_thanks", "no_reply_needed", None)]
    );
    // Nothing else differs (the other events: thread openings, our own reply).
    assert_eq!(entries.iter().filter(|e| e.changed).count(), 2);

    let text = replay_text(&entries, false);
    let changed_park = format!("≠ {} (thread {park})", event_of(&park));
    let changed_thanks = format!("≠ {} (thread {thanks})", event_of(&thanks));
    let same_wifi = format!("= {} (thread {wifi})", event_of(&wifi));
    assert_in_order(
        &text,
        &[
            &same_wifi,
            "would   10_faq reply(wifi)",
            "did     10_faq reply(wifi) → executed",
        ],
    );
    assert_in_order(
        &text,
        &[
            &changed_park,
            "would + 10_faq reply(parking): Free parking on Rua das Flores.",
        ],
    );
    assert_in_order(
        &text,
        &[
            &changed_thanks,
            "did   - 20_thanks no_reply_needed → executed",
        ],
    );
    assert!(
        text.contains(&format!(
            "replayed {} events: {} unchanged, 2 would change (dry-run: nothing was sent)",
            entries.len(),
            entries.len() - 2
        )),
        "{text}"
    );
    let only_changes = replay_text(&entries, true);
    assert!(!only_changes.contains(&same_wifi));
    assert!(only_changes.contains(&changed_park) && only_changes.contains(&changed_thanks));

    // The real binary, same comparison.
    let mut cmd = rig.bin();
    cmd.arg("replay")
        .args(["--since", "1h", "--rules"])
        .arg(&rules_b)
        .arg("--templates")
        .arg(&templates_b);
    let stdout = opsrig::run_ok(cmd).await;
    assert_in_order(
        &stdout,
        &[
            &changed_park,
            "would + 10_faq reply(parking)",
            "replayed",
            "2 would change",
        ],
    );
    assert!(stdout.contains(&changed_thanks), "{stdout}");
    assert!(
        stdout.contains("did   - 20_thanks no_reply_needed → executed"),
        "{stdout}"
    );
    let mut cmd = rig.bin();
    cmd.arg("replay")
        .args(["--since", "1h", "--changes-only", "--json", "--rules"])
        .arg(&rules_b)
        .arg("--templates")
        .arg(&templates_b);
    let json: serde_json::Value = serde_json::from_str(&opsrig::run_ok(cmd).await).unwrap();
    let mut changed: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["changed"] == true)
        .map(|e| e["thread_id"].as_str().unwrap())
        .collect();
    changed.sort();
    let mut want = vec![park.as_str(), thanks.as_str()];
    want.sort();
    assert_eq!(changed, want);

    // Dry-run and pure: no Channex request, nothing sent, nothing new in the audit.
    assert_eq!(
        rig.sim.sim.requests().len(),
        requests_before,
        "replay made Channex requests: {:?}",
        &rig.sim.sim.requests()[requests_before..]
    );
    assert_eq!(rig.sent(), sent_before);
    assert_eq!(rig.sim.sim.no_reply_needed_marks(&park), 0);
    assert_eq!(rig.audit().await.len(), records.len());
}
