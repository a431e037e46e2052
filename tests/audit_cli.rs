//! `concierge audit` and `audit explain`: filters return exactly the matching records, and
//! explain tells the story of a thread (reply, skip, rule error) as the worker recorded it.
mod opsrig;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use concierge::cli::inspect::{explain, explain_text};
use concierge::store::audit::{
    self, ActionKind, AuditFilter, AuditLog, AuditRecord, Outcome, Reason,
};
use opsrig::{assert_in_order, common, PREFIX};
use tokio::io::AsyncBufReadExt;

fn rec(
    id: &str,
    prop: Option<&str>,
    thread: Option<&str>,
    rule: &str,
    outcome: Outcome,
    at: DateTime<Utc>,
) -> AuditRecord {
    let mut r = AuditRecord::standalone(id, outcome);
    r.at = at;
    r.event_id = thread.map(|t| format!("ev-{t}-{id}"));
    r.event_type = Some(concierge::events::EventType::ThreadNewMessage.into());
    r.property_id = prop.map(str::to_string);
    r.thread_id = thread.map(str::to_string);
    r.rule = Some(rule.to_string());
    r.rule_version = Some("v1".into());
    r.action = Some(ActionKind::Reply);
    r.reason = Some(Reason::Other(format!("reason-{id}")));
    r
}

fn ids(records: &[AuditRecord]) -> BTreeSet<String> {
    records.iter().map(|r| r.id.clone()).collect()
}

async fn next(seen: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), seen.recv())
        .await
        .expect("a followed record")
        .expect("follower alive")
}

/// The id of the next record `audit --follow --json` prints.
async fn next_printed(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> String {
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("a printed record")
        .expect("readable stdout")
        .expect("still running");
    serde_json::from_str::<AuditRecord>(&line)
        .unwrap_or_else(|e| panic!("not a record: {line:?}: {e}"))
        .id
}

fn set(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn audit_filters_return_exactly_the_matching_records() {
    let (nats, infra, _cfg) = common::nats_infra().await;
    let log = AuditLog::new(infra.js.clone(), PREFIX);
    let now = Utc::now();
    let h = |hours: i64| now - chrono::Duration::hours(hours);
    let m = |minutes: i64| now - chrono::Duration::minutes(minutes);
    let (p1, p2) = (Some("prop-1"), Some("prop-2"));
    let (t1, t2, t3) = (Some("thr-1"), Some("thr-2"), Some("thr-3"));
    use Outcome::*;
    let crafted = vec![
        rec("a1", p1, t1, "10_faq", Executed, h(3)),
        rec("a2", p1, t1, "20_thanks", Skipped, m(90)),
        rec("a3", p1, t1, "30_alert", Failed, m(30)),
        rec("a4", p1, t2, "10_faq", RuleError, m(5)),
        rec("a5", p1, t2, "10_faq", Executed, m(30)),
        rec("a6", p2, t3, "10_faq", Executed, h(3)),
        rec("a7", p2, t3, "30_alert", DryRun, m(5)),
        rec("a8", p2, t3, "20_thanks", Skipped, m(30)),
        // Not tied to a property or thread (a rejected reload).
        rec("a9", None, None, "10_faq", RuleRejected, m(5)),
    ];
    for r in &crafted {
        log.record(r).await.unwrap();
    }
    // Publishing the same id again is deduplicated by JetStream: still nine records.
    log.record(&crafted[0]).await.unwrap();

    let query = |f: AuditFilter| {
        let js = infra.js.clone();
        async move { audit::query(&js, PREFIX, &f).await.unwrap() }
    };
    let all = query(AuditFilter::default()).await;
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9"],
        "oldest first, every record once"
    );
    assert_eq!(all, crafted, "records round-trip unchanged");

    let s = |v: &str| Some(v.to_string());
    let cases: Vec<(&str, AuditFilter, BTreeSet<String>)> = vec![
        (
            "thread",
            AuditFilter {
                thread_id: s("thr-1"),
                ..Default::default()
            },
            set(&["a1", "a2", "a3"]),
        ),
        (
            "property",
            AuditFilter {
                property_id: s("prop-2"),
                ..Default::default()
            },
            set(&["a6", "a7", "a8"]),
        ),
        (
            "rule",
            AuditFilter {
                rule: s("10_faq"),
                ..Default::default()
            },
            set(&["a1", "a4", "a5", "a6", "a9"]),
        ),
        (
            "outcome executed",
            AuditFilter {
                outcome: Some(Executed),
                ..Default::default()
            },
            set(&["a1", "a5", "a6"]),
        ),
        (
            "outcome skipped",
            AuditFilter {
                outcome: Some(Skipped),
                ..Default::default()
            },
            set(&["a2", "a8"]),
        ),
        (
            "event id",
            AuditFilter {
                event_id: s("ev-thr-2-a4"),
                ..Default::default()
            },
            set(&["a4"]),
        ),
        (
            "property + rule",
            AuditFilter {
                property_id: s("prop-1"),
                rule: s("10_faq"),
                ..Default::default()
            },
            set(&["a1", "a4", "a5"]),
        ),
        (
            "property + thread",
            AuditFilter {
                property_id: s("prop-1"),
                thread_id: s("thr-2"),
                ..Default::default()
            },
            set(&["a4", "a5"]),
        ),
        (
            "thread of another property",
            AuditFilter {
                property_id: s("prop-2"),
                thread_id: s("thr-1"),
                ..Default::default()
            },
            set(&[]),
        ),
        (
            "thread + outcome",
            AuditFilter {
                thread_id: s("thr-3"),
                outcome: Some(DryRun),
                ..Default::default()
            },
            set(&["a7"]),
        ),
        (
            "since 1h",
            AuditFilter {
                since: Some(h(1)),
                ..Default::default()
            },
            set(&["a3", "a4", "a5", "a7", "a8", "a9"]),
        ),
        (
            "since 1h until 10m",
            AuditFilter {
                since: Some(h(1)),
                until: Some(m(10)),
                ..Default::default()
            },
            set(&["a3", "a5", "a8"]),
        ),
        (
            "until 2h",
            AuditFilter {
                until: Some(h(2)),
                ..Default::default()
            },
            set(&["a1", "a6"]),
        ),
        (
            "property + outcome + since",
            AuditFilter {
                property_id: s("prop-1"),
                outcome: Some(Executed),
                since: Some(h(1)),
                ..Default::default()
            },
            set(&["a5"]),
        ),
        (
            "rule + since",
            AuditFilter {
                rule: s("20_thanks"),
                since: Some(h(1)),
                ..Default::default()
            },
            set(&["a8"]),
        ),
        (
            "unknown rule",
            AuditFilter {
                rule: s("99_none"),
                ..Default::default()
            },
            set(&[]),
        ),
    ];
    for (name, filter, want) in cases {
        let got = query(filter.clone()).await;
        assert_eq!(ids(&got), want, "filter {name}: {filter:?}");
        // And the pure predicate agrees with the stream read.
        let by_predicate: BTreeSet<String> = crafted
            .iter()
            .filter(|r| filter.matches(r))
            .map(|r| r.id.clone())
            .collect();
        assert_eq!(by_predicate, want, "AuditFilter::matches for {name}");
    }

    // The real binary parses the same filters from its command line.
    let cwd = tempfile::tempdir().unwrap();
    let parse_lines = |stdout: String| -> Vec<AuditRecord> {
        stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a record: {l:?}: {e}")))
            .collect()
    };
    let mut cmd = opsrig::bin(&nats.url, cwd.path());
    cmd.args(["audit", "--json", "--thread", "thr-1"]);
    let got = parse_lines(opsrig::run_ok(cmd).await);
    assert_eq!(got, crafted[..3].to_vec(), "--thread thr-1");

    let mut cmd = opsrig::bin(&nats.url, cwd.path());
    cmd.args([
        "audit",
        "--json",
        "--property",
        "prop-2",
        "--outcome",
        "skipped",
        "--since",
        "1h",
    ]);
    let got = parse_lines(opsrig::run_ok(cmd).await);
    assert_eq!(ids(&got), set(&["a8"]), "--property --outcome --since");

    let mut cmd = opsrig::bin(&nats.url, cwd.path());
    cmd.args(["audit", "--json", "--rule", "10_faq", "--since", "1h"]);
    let got = parse_lines(opsrig::run_ok(cmd).await);
    assert_eq!(ids(&got), set(&["a4", "a5", "a9"]), "--rule --since");

    // An unknown outcome is refused with the list of valid ones.
    let mut cmd = opsrig::bin(&nats.url, cwd.path());
    cmd.args(["audit", "--outcome", "done"]);
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rule_rejected"));
}

const OOPS_RULE: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["password"]) {
    throw "exploded on purpose";
}
"#;

#[tokio::test]
async fn explain_tells_reply_skip_and_rule_error_in_order() {
    let mut rig = opsrig::rig(
        "prop-x",
        &[
            ("05_oops.rhai", OOPS_RULE),
            ("10_faq.rhai", opsrig::FAQ_RULE),
        ],
        &[("wifi.hbs", opsrig::WIFI_TEMPLATE)],
    )
    .await;
    rig.config.worker.concurrency = 1; // events in stream order, so explain's order is fixed
    let (stop, running) = rig.spawn_worker().await;
    let thread = rig
        .sim
        .sim
        .open_thread("prop-x", "BookingCom", "Maria", true);

    // 1. A wifi question: answered.
    rig.sim.sim.guest_message(&thread, "Hi, what's the wifi?");
    let first = opsrig::guest_events(&rig.poll().await);
    assert_eq!(first.len(), 1);
    common::eventually("the reply is executed", Duration::from_secs(15), || async {
        rig.audit()
            .await
            .iter()
            .any(|r| r.outcome == Outcome::Executed)
    })
    .await;

    // 2. Our own reply comes back (skipped as own message) and the guest asks again: the
    //    FAQ rule is in cooldown and the 05_oops rule throws.
    rig.sim
        .sim
        .guest_message(&thread, "Sorry, the wifi password again?");
    let second = rig.poll().await;
    let again = opsrig::guest_events(&second);
    assert_eq!(again.len(), 1);
    common::eventually("the cooldown skip", Duration::from_secs(15), || async {
        let records = rig.audit().await;
        records.iter().any(|r| r.reason == Some(Reason::Cooldown))
            && records.iter().any(|r| r.reason == Some(Reason::OwnMessage))
    })
    .await;
    let _ = stop.send(true);
    running.await.unwrap().unwrap();
    assert_eq!(rig.sent().len(), 1, "one reply only: {:?}", rig.sent());

    let records = audit::query(
        &rig.infra.js,
        PREFIX,
        &AuditFilter {
            thread_id: Some(thread.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    type Line<'a> = (Option<&'a str>, Option<&'a str>, Outcome, Option<String>);
    let summary: Vec<Line> = records
        .iter()
        .map(|r| {
            (
                r.rule.as_deref(),
                r.action.as_ref().map(ActionKind::as_str),
                r.outcome,
                r.reason.as_ref().map(Reason::to_string),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                Some("10_faq"),
                Some("reply"),
                Outcome::Executed,
                Some("sent".to_string())
            ),
            (
                None,
                Some("event"),
                Outcome::Skipped,
                Some("own_message".to_string())
            ),
            (
                Some("05_oops"),
                Some("evaluate"),
                Outcome::RuleError,
                Some("rule_error".to_string())
            ),
            (
                Some("10_faq"),
                Some("reply"),
                Outcome::Skipped,
                Some("cooldown".to_string())
            ),
        ],
        "{records:#?}"
    );

    let text = explain_text(&thread, &records);
    assert_in_order(
        &text,
        &[
            &format!("thread {thread}: 4 audit records"),
            &format!("event {} (thread.new_message)", first[0].id),
            "read as: ",
            "rule 10_faq",
            "reply(wifi)",
            "→ executed",
            "sent",
            "text: The wifi is CasaAzul, password sardinhas.",
            "rule -",
            "event",
            "→ skipped",
            "own_message",
            &format!("event {} (thread.new_message)", again[0].id),
            "rule 05_oops",
            "evaluate",
            "→ rule_error",
            "why:",
            "exploded on purpose",
            "rule 10_faq",
            "reply(wifi)",
            "→ skipped",
            "cooldown",
            "why:  template wifi was sent to this thread at",
        ],
    );
    assert!(
        text.contains("05_oops.rhai"),
        "the error names the file:\n{text}"
    );
    // Grouped per event: three events, in order of first appearance.
    let grouped = explain(&records);
    assert_eq!(grouped.len(), 3);
    assert_eq!(grouped[0]["event_id"], first[0].id.as_str());
    assert_eq!(grouped[2]["event_id"], again[0].id.as_str());
    assert_eq!(grouped[2]["rules"]["05_oops"][0]["outcome"], "rule_error");
    assert_eq!(grouped[2]["rules"]["10_faq"][0]["reason"], "cooldown");

    // The real binary: `audit --json --thread` prints the same records, one per line, and
    // `audit explain` prints the same text.
    let mut cmd = rig.bin();
    cmd.args(["audit", "--json", "--thread", &thread]);
    let stdout = opsrig::run_ok(cmd).await;
    let printed: Vec<AuditRecord> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect();
    assert_eq!(printed, records);

    let mut cmd = rig.bin();
    cmd.args(["audit", "explain", &thread]);
    assert_eq!(opsrig::run_ok(cmd).await, text);
}

/// `audit --follow`: the stored matching records first, then new ones as they are
/// written, until the reader says stop; non-matching records never show.
#[tokio::test]
async fn follow_prints_stored_then_new_matching_records() {
    let (nats, infra, _cfg) = common::nats_infra().await;
    let log = AuditLog::new(infra.js.clone(), PREFIX);
    let now = Utc::now();
    let (p1, t1, t2) = (Some("prop-1"), Some("thr-1"), Some("thr-2"));
    log.record(&rec("f1", p1, t1, "10_faq", Outcome::Executed, now))
        .await
        .unwrap();
    log.record(&rec("f2", p1, t2, "10_faq", Outcome::Executed, now))
        .await
        .unwrap();

    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let js = infra.js.clone();
    let follower = tokio::spawn(async move {
        let filter = AuditFilter {
            thread_id: Some("thr-1".into()),
            ..Default::default()
        };
        let mut count = 0;
        audit::read_stream(&js, PREFIX, &filter, true, |r| {
            count += 1;
            let _ = seen_tx.send(r.id);
            count < 3
        })
        .await
    });
    assert_eq!(next(&mut seen).await, "f1", "the stored record first");
    for (id, thread) in [("f3", t2), ("f4", t1), ("f5", t1)] {
        log.record(&rec(
            id,
            p1,
            thread,
            "10_faq",
            Outcome::Executed,
            Utc::now(),
        ))
        .await
        .unwrap();
    }
    assert_eq!(
        next(&mut seen).await,
        "f4",
        "then new ones, other threads skipped"
    );
    assert_eq!(next(&mut seen).await, "f5");
    tokio::time::timeout(Duration::from_secs(10), follower)
        .await
        .expect("the follower stops when told")
        .unwrap()
        .unwrap();

    // The real binary: `audit --follow --json --thread thr-1` prints the stored records,
    // then each new one as it is written, one JSON record per line, until stopped.
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = opsrig::bin(&nats.url, cwd.path());
    cmd.args(["audit", "--follow", "--json", "--thread", "thr-1"])
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("start concierge audit --follow");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    for stored in ["f1", "f4", "f5"] {
        assert_eq!(next_printed(&mut lines).await, stored);
    }
    log.record(&rec("f6", p1, t2, "10_faq", Outcome::Executed, Utc::now()))
        .await
        .unwrap();
    log.record(&rec("f7", p1, t1, "10_faq", Outcome::Executed, Utc::now()))
        .await
        .unwrap();
    assert_eq!(
        next_printed(&mut lines).await,
        "f7",
        "a new record, the other thread's skipped"
    );
    child.kill().await.unwrap();
}
