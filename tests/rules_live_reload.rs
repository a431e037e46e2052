//! Live reload against real files in temp dirs: edits, rename-over-save, broken edits
//! (rejected, last good version keeps running), deletions, additions, templates.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge::content::{LiveRules, ReloadReport};
use concierge::events::Event;
use concierge::plan::rules::{EvalContext, RuleEngine};
use serde_json::json;
use tokio::sync::mpsc::Receiver;

const WITHIN: Duration = Duration::from_secs(2);

fn event() -> Event {
    serde_json::from_value(json!({
        "id": "thread.new_message:t1:m1",
        "type": "thread.new_message",
        "occurred_at": "2024-07-01T10:00:00Z",
        "property": {"id": "p1", "timezone": "UTC", "vars": {"x": "X"}},
        "thread": {"id": "t1", "provider": "airbnb"},
        "message": {"id": "m1", "text": "hi", "sender": "guest", "inserted_at": "2024-07-01T10:00:00Z"}
    }))
    .unwrap()
}

fn templates_used(live: &LiveRules, engine: &RuleEngine) -> Vec<String> {
    let rules = live.current().rules.clone();
    let ctx = EvalContext {
        now: "2024-07-01T10:00:00Z".parse().unwrap(),
    };
    engine
        .evaluate(&rules, &event(), &ctx)
        .actions()
        .filter_map(|(_, a)| a.template().map(String::from))
        .collect()
}

/// Polls until `f` holds, for at most [`WITHIN`]; returns how long it took.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < WITHIN {
        if f() {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not within {WITHIN:?}");
}

/// The next report that satisfies `pred`, within [`WITHIN`] (reports from the same burst may
/// be split across two rescans).
async fn report_where(
    rx: &mut Receiver<ReloadReport>,
    pred: impl Fn(&ReloadReport) -> bool,
) -> ReloadReport {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(r)) if pred(&r) => return r,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("report channel closed"),
            Err(_) => panic!("no matching reload report within {WITHIN:?}"),
        }
    }
}

fn write(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_take_effect_and_broken_edits_are_rejected() {
    let root = tempfile::tempdir().unwrap();
    let rules_dir = root.path().join("rules");
    let tpl_dir = root.path().join("templates");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::create_dir_all(&tpl_dir).unwrap();
    let rule = rules_dir.join("10_a.rhai");
    write(&rule, "reply(\"a\");\n");
    write(&rules_dir.join("20_bad.rhai"), "reply(\n");
    write(&tpl_dir.join("a.hbs"), "A {{vars.x}}");

    let engine = Arc::new(RuleEngine::default());
    let (live, mut rx) = LiveRules::watch(&rules_dir, &tpl_dir, engine.clone());

    // Initial report: everything that loaded, and the broken file.
    let initial = rx.recv().await.unwrap();
    assert_eq!(initial.accepted.len(), 2, "{initial:?}");
    assert_eq!(initial.rejected.len(), 1);
    assert_eq!(initial.rejected[0].file, rules_dir.join("20_bad.rhai"));
    assert!(initial.rejected[0].line.is_some());
    assert_eq!(templates_used(&live, &engine), ["a"]);

    // Plain edit.
    tokio::time::sleep(Duration::from_millis(50)).await;
    write(&rule, "reply(\"b\");\n");
    eventually("edit", || templates_used(&live, &engine) == ["b"]).await;
    let r = report_where(&mut rx, |r| !r.accepted.is_empty()).await;
    assert_eq!(r.accepted[0].0, rule);

    // Broken edit: rejected with its line, the last good version keeps running.
    write(&rule, "reply(\"c\");\nif (\n");
    let r = report_where(&mut rx, |r| !r.rejected.is_empty()).await;
    assert_eq!(r.rejected[0].file, rule);
    assert!(
        matches!(r.rejected[0].line, Some(2..=3)),
        "{}",
        r.rejected[0]
    );
    assert_eq!(templates_used(&live, &engine), ["b"]);

    // Editor-style save: write a temp file, rename it over the rule.
    let tmp = rules_dir.join(".10_a.rhai.tmp");
    write(&tmp, "reply(\"d\");\n");
    std::fs::rename(&tmp, &rule).unwrap();
    eventually("rename-over-save", || {
        templates_used(&live, &engine) == ["d"]
    })
    .await;

    // Added file.
    write(&rules_dir.join("30_new.rhai"), "alert(\"new\");\n");
    eventually("add", || templates_used(&live, &engine) == ["d", "new"]).await;

    // Deleted file.
    std::fs::remove_file(&rule).unwrap();
    let r = report_where(&mut rx, |r| !r.removed.is_empty()).await;
    assert_eq!(r.removed, std::slice::from_ref(&rule));
    assert_eq!(templates_used(&live, &engine), ["new"]);

    // Templates: a broken edit is rejected and the old text still renders; a fix is taken.
    write(&tpl_dir.join("a.hbs"), "A {{#if}}");
    let r = report_where(&mut rx, |r| !r.rejected.is_empty()).await;
    assert_eq!(r.rejected[0].file, tpl_dir.join("a.hbs"));
    let templates = live.current().templates.clone();
    assert_eq!(
        templates
            .render("a", &event(), &Default::default())
            .unwrap(),
        "A X"
    );
    write(&tpl_dir.join("a.hbs"), "A2 {{vars.x}}");
    eventually("template fix", || {
        live.current()
            .templates
            .render("a", &event(), &Default::default())
            .ok()
            .as_deref()
            == Some("A2 X")
    })
    .await;

    // A per-property override added in a sub-directory is picked up too.
    std::fs::create_dir_all(tpl_dir.join("p1")).unwrap();
    write(&tpl_dir.join("p1").join("a.hbs"), "P1 {{vars.x}}");
    eventually("override", || {
        live.current()
            .templates
            .render("a", &event(), &Default::default())
            .ok()
            .as_deref()
            == Some("P1 X")
    })
    .await;
}

#[test]
fn load_without_watching_and_reload_now() {
    let root = tempfile::tempdir().unwrap();
    let rules_dir = root.path().join("rules");
    let tpl_dir = root.path().join("templates");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::create_dir_all(&tpl_dir).unwrap();
    write(&rules_dir.join("10_a.rhai"), "reply(\"a\");");
    let engine = Arc::new(RuleEngine::default());
    let (live, report) = LiveRules::load(&rules_dir, &tpl_dir, engine.clone());
    assert_eq!(report.accepted.len(), 1);
    write(&rules_dir.join("10_a.rhai"), "reply(\"b\");");
    write(&rules_dir.join("20_bad.rhai"), "}");
    let r = live.reload_now();
    assert_eq!(r.accepted.len(), 1);
    assert_eq!(r.rejected.len(), 1);
    assert_eq!(templates_used(&live, &engine), ["b"]);
    // A file that stays broken is reported once, not on every rescan.
    assert!(live.reload_now().is_empty());
}
