//! Hostile rules (issue #11, defects 1, 2 and 12): overflowing arithmetic, helpers fed
//! huge inputs and every sandbox limit end as a clear rule error for that rule only; the
//! other rules still run, and `rules check` / `rules test` (the real binary) report the
//! problem with exit 1 instead of crashing. Must not depend on NATS or the network.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use concierge::content::load_rules;
use concierge::events::Event;
use concierge::plan::rules::{EvalContext, Evaluation, RuleEngine, RuleLimits, RuleSet};
use serde_json::json;

/// The two expressions of the issue that panicked inside chrono.
const PLUS: &str = "let d = days(100000000000) + days(100000000000);\n";
const MINUS: &str = "let d = days(-100000000000) - days(100000000000);\n";

fn event_json() -> serde_json::Value {
    json!({
        "id": "thread.new_message:t1:m1",
        "type": "thread.new_message",
        "occurred_at": "2024-07-01T10:00:00Z",
        "property": {"id": "p1", "name": "Casa Azul", "timezone": "Europe/Lisbon",
                     "vars": {"wifi_name": "CasaAzul"}},
        "thread": {"id": "t1", "title": "Ana", "provider": "booking_com", "is_closed": false,
                   "message_count": 1, "booking_id": "b1", "awaiting_reply": true},
        "message": {"id": "m1", "text": "what is the wifi?", "sender": "guest",
                    "attachments": [], "inserted_at": "2024-07-01T10:00:00Z"}
    })
}

fn event() -> Event {
    serde_json::from_value(event_json()).expect("valid event")
}

fn load_with(
    engine: RuleEngine,
    files: &[(&str, &str)],
) -> (tempfile::TempDir, RuleEngine, RuleSet) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, src) in files {
        std::fs::write(dir.path().join(name), src).expect("write rule");
    }
    let (set, problems) = load_rules(&engine, dir.path());
    assert!(problems.is_empty(), "unexpected problems: {problems:?}");
    (dir, engine, set)
}

fn load(files: &[(&str, &str)]) -> (tempfile::TempDir, RuleEngine, RuleSet) {
    load_with(RuleEngine::default(), files)
}

fn run(engine: &RuleEngine, set: &RuleSet) -> Evaluation {
    let now: DateTime<Utc> = "2024-07-01T10:00:00Z".parse().expect("time");
    engine.evaluate(set, &event(), &EvalContext { now })
}

/// The error message of rule `name`, which must have failed.
fn error_of(e: &Evaluation, name: &str) -> String {
    let outcome = e
        .rules
        .iter()
        .find(|o| o.rule == name)
        .unwrap_or_else(|| panic!("rule {name} did not run: {e:?}"));
    assert!(outcome.actions.is_empty(), "{outcome:?}");
    outcome
        .error
        .as_ref()
        .unwrap_or_else(|| panic!("rule {name} must fail: {outcome:?}"))
        .to_string()
}

fn replies(e: &Evaluation) -> Vec<String> {
    e.actions()
        .filter_map(|(_, a)| a.template().map(str::to_string))
        .collect()
}

#[test]
fn duration_overflow_is_a_rule_error_and_the_reply_still_runs() {
    let (_d, engine, set) = load(&[
        ("10_plus.rhai", PLUS),
        ("20_minus.rhai", MINUS),
        ("30_reply.rhai", "reply(\"wifi\");\n"),
    ]);
    let e = run(&engine, &set);
    for rule in ["10_plus", "20_minus"] {
        let message = error_of(&e, rule);
        assert!(message.contains("out of range"), "{message}");
        assert!(message.contains(&format!("{rule}.rhai:1:")), "{message}");
    }
    assert_eq!(replies(&e), ["wifi"]);
}

#[test]
fn every_time_function_is_total_at_the_edges() {
    // Each line either works or is a rule error; none may panic (one rule per case, so a
    // failure names the case).
    let cases = [
        ("now() + days(3000000)", true),
        ("now() - days(3000000)", true),
        ("parse_time(\"9999-12-31T23:59:59Z\") + hours(1)", true),
        (
            "at_local(parse_time(\"9999-12-31T23:00:00Z\"), \"08:00\")",
            true,
        ),
        (
            "at_local(parse_time(\"9999-12-31T23:00:00Z\"), \"08:00\", \"Pacific/Kiritimati\")",
            true,
        ),
        (
            "local_time(parse_time(\"0001-01-01T00:00:00Z\"), \"Pacific/Kiritimati\")",
            false,
        ),
        (
            "local_time(parse_time(\"9999-12-31T23:59:59Z\"), \"Pacific/Kiritimati\")",
            false,
        ),
        (
            "format_time(parse_time(\"0001-01-01\"), \"%Y %c %Z\")",
            false,
        ),
        ("parse_time(\"0000-12-31\")", true),
        ("parse_time(\"262143-12-31T00:00:00\")", true),
        ("seconds(9223372036854775807)", true),
        ("days(-9223372036854775808)", true),
        ("minutes(1e300)", true),
        ("hours(-1e300)", true),
        ("-(days(100000000000) * 1)", false),
        ("days(100000000000) * 2", true),
        ("days(100000000000) * -9223372036854775808", true),
        (
            "parse_time(\"9999-12-31T00:00:00Z\") - parse_time(\"0001-01-01T00:00:00Z\")",
            false,
        ),
        ("format_time(now(), \"%Q\")", true),
        ("format_time(now(), \"%\")", true),
        ("format_time(now(), \"%Y\".pad(300, 'x'))", true),
        ("within_local_hours(now(), \"25:00\", \"08:00\")", true),
        ("at_local(now(), \"\")", true),
        ("local_time(now(), \"Mars/Olympus\")", true),
        ("follow_up(\"x\", days(100000000000))", true),
        ("follow_up(\"x\", -days(100000000000))", true),
    ];
    let files: Vec<(String, String)> = cases
        .iter()
        .enumerate()
        .map(|(i, (expr, _))| {
            (
                format!("{:02}_case.rhai", i + 10),
                format!("let x = {expr};\n"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(n, s)| (n.as_str(), s.as_str()))
        .collect();
    let (_d, engine, set) = load(&refs);
    let e = run(&engine, &set);
    assert_eq!(e.rules.len(), cases.len());
    for (outcome, (expr, must_fail)) in e.rules.iter().zip(cases) {
        assert_eq!(outcome.error.is_some(), must_fail, "`{expr}`: {outcome:?}");
        if let Some(p) = &outcome.error {
            assert!(
                !p.message.contains("internal error"),
                "`{expr}` panicked: {p}"
            );
        }
    }
}

/// A 65,000-character text of `fill` and `count` copies of `word`, then `extra` (the issue's
/// case, 10,000 words, ran 16 s in one rule).
fn contains_any_rule(fill: char, word: &str, count: usize, extra: &str) -> String {
    format!(
        "let text = \"\";\ntext.pad(65000, '{fill}');\nlet words = [];\nwords.pad({count}, \"{word}\");\n{extra}\nif contains_any(text, words) {{ reply(\"found\"); }}\n"
    )
}

#[test]
fn contains_any_on_huge_inputs_stays_within_the_wall_time_budget() {
    let (_d, engine, set) = load(&[
        // Every position matches "a" but none is a whole word: text × words × matches before.
        ("10_worst.rhai", &contains_any_rule('a', "a", 10_000, "")),
        // Words of every length up to 300 over the same text: many candidates per position.
        (
            "20_lengths.rhai",
            &contains_any_rule(
                'a',
                "b",
                9_000,
                "for n in 1..300 { let w = \"\"; w.pad(n, 'a'); words.push(w); }",
            ),
        ),
        // A real hit at the very end is still found.
        (
            "30_found.rhai",
            &contains_any_rule('x', "zz", 9_999, "text += \" wifi\"; words.push(\"wifi\");"),
        ),
        ("40_reply.rhai", "reply(\"after\");\n"),
    ]);
    let started = Instant::now();
    let e = run(&engine, &set);
    let total = started.elapsed();
    assert!(total < Duration::from_secs(1), "took {total:?}: {e:?}");
    for o in &e.rules {
        assert!(o.elapsed < Duration::from_millis(400), "{o:?}");
        if let Some(p) = &o.error {
            assert!(
                p.message.contains("wall-time limit of 50 ms exceeded"),
                "{p}"
            );
        }
    }
    // Within the budget the answers are right: no whole word in the first two, a hit in
    // the third (a slow, loaded machine may end any of them on the wall-time limit instead).
    for (outcome, hits) in e.rules[..3].iter().zip([0, 0, 1]) {
        assert!(
            outcome.error.is_some() || outcome.actions.len() == hits,
            "{outcome:?}"
        );
    }
    assert_eq!(e.rules[3].actions.len(), 1, "the next rule still runs");
}

#[test]
fn matches_with_an_oversized_pattern_is_a_rule_error() {
    let (_d, engine, set) = load(&[(
        "10_re.rhai",
        "let p = \"\";\np.pad(5000, 'a');\nif matches(message.text, p) { reply(\"x\"); }\n",
    )]);
    let message = error_of(&run(&engine, &set), "10_re");
    assert!(message.contains("at most 4096"), "{message}");
}

#[test]
fn sandbox_limits_are_named_in_plain_words() {
    // Small collection limits: growing one to 10,000 entries re-checks its size per step
    // and would end on the wall-time limit first.
    let engine = RuleEngine::new(RuleLimits {
        max_array_size: 100,
        max_map_size: 100,
        ..RuleLimits::default()
    });
    let (_d, engine, set) = load_with(
        engine,
        &[
            ("10_recursion.rhai", "fn f(n) { f(n + 1) }\nf(0);\n"),
            ("20_import.rhai", "import \"other\" as o;\n"),
            ("30_string.rhai", "let s = \"ab\";\nloop { s += s; }\n"),
            ("40_array.rhai", "let a = [];\nloop { a.push(1); }\n"),
            (
                "50_map.rhai",
                "let m = #{};\nfor i in 0..200 { m[`k${i}`] = i; }\nlet n = m + #{ z: 1 };\n",
            ),
            ("60_ops.rhai", "let i = 0;\nloop { i += 1; }\n"),
            ("70_reply.rhai", "reply(\"still\");\n"),
        ],
    );
    let e = run(&engine, &set);
    let expect = [
        ("10_recursion", "call depth limit 32 exceeded"),
        ("20_import", "modules are not available in rules"),
        ("30_string", "string size limit of 65536 bytes exceeded"),
        ("40_array", "array size limit of 100 items exceeded"),
        ("50_map", "map size limit of 100 entries exceeded"),
        ("60_ops", "operation limit of 100000 exceeded"),
    ];
    for (rule, wanted) in expect {
        let message = error_of(&e, rule);
        assert!(message.contains(wanted), "{rule}: {message}");
        assert!(!message.contains("Stack overflow"), "{message}");
    }
    assert_eq!(replies(&e), ["still"]);
}

#[test]
fn wall_time_limit_message_names_the_budget() {
    let engine = RuleEngine::new(RuleLimits {
        max_operations: u64::MAX / 2,
        max_wall_time: Duration::from_millis(20),
        ..RuleLimits::default()
    });
    let (_d, engine, set) = load_with(
        engine,
        &[("10_slow.rhai", "let s = 0;\nloop { s += 1; }\n")],
    );
    let message = error_of(&run(&engine, &set), "10_slow");
    assert!(
        message.contains("wall-time limit of 20 ms exceeded"),
        "{message}"
    );
}

// ---- the real binary ----

fn concierge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args(args)
        .env_remove("CONCIERGE_CONFIG")
        .output()
        .expect("run concierge")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(dir.join(name), body).expect("write");
}

/// A rules dir where `20_overflow` is the issue's `+` or `-` case and `10_faq` replies.
fn overflow_dirs(expr: &str) -> (tempfile::TempDir, String, String) {
    let root = tempfile::tempdir().expect("tempdir");
    let (rules, templates) = (root.path().join("rules"), root.path().join("templates"));
    write(
        &rules,
        "10_faq.rhai",
        "if message.sender == \"guest\" { reply(\"wifi\"); }\n",
    );
    write(
        &rules,
        "20_overflow.rhai",
        &format!("if message.sender == \"guest\" {{\n{expr}}}\n"),
    );
    write(&templates, "wifi.hbs", "The wifi is {{vars.wifi_name}}.\n");
    let mut fixture = json!({"name": "wifi question", "now": "2024-07-01T10:00:00Z",
        "expect": [{"rule": "10_faq", "action": "reply", "template": "wifi"}]});
    fixture["event"] = event_json();
    write(&rules.join("tests"), "wifi.json", &fixture.to_string());
    let paths = (rules.display().to_string(), templates.display().to_string());
    (root, paths.0, paths.1)
}

#[test]
fn rules_check_and_test_report_the_overflow_instead_of_crashing() {
    for expr in [PLUS, MINUS] {
        let (_root, rules, templates) = overflow_dirs(expr);
        for cmd in ["check", "test"] {
            let out = concierge(&["rules", cmd, "--dir", &rules, "--templates", &templates]);
            let t = text(&out);
            assert_eq!(out.status.code(), Some(1), "rules {cmd} on `{expr}`: {t}");
            assert!(t.contains("20_overflow.rhai:2:"), "rules {cmd}: {t}");
            assert!(t.contains("duration out of range"), "rules {cmd}: {t}");
            assert!(!t.contains("panicked"), "rules {cmd}: {t}");
        }
    }
}

#[test]
fn rules_check_names_sandbox_limits() {
    let root = tempfile::tempdir().expect("tempdir");
    let (rules, templates) = (root.path().join("rules"), root.path().join("templates"));
    write(&rules, "10_recursion.rhai", "fn f(n) { f(n + 1) }\nf(0);\n");
    write(&rules, "20_import.rhai", "import \"other\" as o;\n");
    std::fs::create_dir_all(&templates).expect("mkdir");
    let out = concierge(&[
        "rules",
        "check",
        "--dir",
        &rules.display().to_string(),
        "--templates",
        &templates.display().to_string(),
    ]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("call depth limit 32 exceeded"), "{t}");
    assert!(t.contains("modules are not available in rules"), "{t}");
}
