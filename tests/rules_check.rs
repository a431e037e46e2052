//! `rules check` and `rules test` on deliberately broken rule/template/fixture dirs: every
//! problem is found, with file and line, and failing fixtures show a diff.

use std::path::{Path, PathBuf};

use concierge::authoring::check::{check, check_with, CheckOptions};
use concierge::authoring::fixtures::run_fixture_tests;
use concierge::events::PropertyInfo;
use serde_json::json;

struct Dirs {
    _root: tempfile::TempDir,
    rules: PathBuf,
    templates: PathBuf,
}

fn dirs(rules: &[(&str, &str)], templates: &[(&str, &str)]) -> Dirs {
    let root = tempfile::tempdir().unwrap();
    let (r, t) = (root.path().join("rules"), root.path().join("templates"));
    for (dir, files) in [(&r, rules), (&t, templates)] {
        std::fs::create_dir_all(dir).unwrap();
        for (name, body) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
    }
    Dirs {
        _root: root,
        rules: r,
        templates: t,
    }
}

fn has(report: &str, file: &Path, line: Option<usize>, needle: &str) -> bool {
    let prefix = match line {
        Some(l) => format!("{}:{l}: ", file.display()),
        None => format!("{}: ", file.display()),
    };
    report
        .lines()
        .any(|l| l.starts_with(&prefix) && l.contains(needle))
}

#[test]
fn check_reports_every_problem_with_file_and_line() {
    let d = dirs(
        &[
            ("10_ok.rhai", "if message.sender == \"guest\" { reply(\"greeting\"); }\n"),
            ("20_syntax.rhai", "// name: broken\nreply(\"x\"\n"),
            (
                "30_missing.rhai",
                "if event.type == \"schedule.tick\" {\n    alert(\"no_such_template\");\n}\n",
            ),
            (
                "40_runtime.rhai",
                "if event.type == \"inquiry.received\" {\n  let x = parse_time(\"not a time\");\n}\n",
            ),
            (
                "50_vars.rhai",
                "if event.type == \"inquiry.received\" { alert(\"needs_var\", #{ given: 1 }); }\n",
            ),
            (
                "60_literal.rhai",
                "if false {\n  reply(\"literal_only_missing\");\n}\n",
            ),
        ],
        &[
            ("greeting.hbs", "Hello {{thread.title}}"),
            ("needs_var.hbs", "{{vars.given}} {{vars.door_code}}"),
            ("bad_syntax.hbs", "line\n{{#each}}"),
        ],
    );
    let report = check(&d.rules, &d.templates);
    let text = report.to_string();
    println!("{text}");
    assert!(!report.is_ok());
    let r = |n: &str| d.rules.join(n);
    let t = |n: &str| d.templates.join(n);
    assert!(
        has(&text, &r("20_syntax.rhai"), Some(3), ""),
        "syntax error line"
    );
    assert!(has(
        &text,
        &r("30_missing.rhai"),
        Some(2),
        "no_such_template"
    ));
    assert!(has(&text, &r("40_runtime.rhai"), Some(2), "not a time"));
    assert!(has(&text, &t("needs_var.hbs"), None, "vars.door_code"));
    assert!(has(
        &text,
        &r("60_literal.rhai"),
        Some(2),
        "literal_only_missing"
    ));
    assert!(has(&text, &t("bad_syntax.hbs"), Some(2), ""));
    assert_eq!(report.rules_total, 6);
    assert_eq!(report.rules_ok, 2, "10_ok and 50_vars compile and run");
    assert_eq!(report.templates_total, 3);
    assert_eq!(report.templates_ok, 1);
    // Found once, not once per sample event.
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("no_such_template"))
            .count(),
        1,
        "duplicates in:\n{text}"
    );
    assert!(text
        .lines()
        .last()
        .unwrap()
        .contains("2/6 rules ok, 1/3 templates ok"));
}

#[test]
fn check_follows_follow_ups_to_the_templates_they_use() {
    let d = dirs(
        &[(
            "10_later.rhai",
            r#"
            if event.type == "thread.new_message" && message.sender == "guest" {
                follow_up("later", minutes(5), #{ template: "later_text" });
            }
            if event.type == "follow_up.due" && event.follow_up.name == "later" && thread.awaiting_reply {
                reply(event.follow_up.data.template, #{ n: 1 });
            }
            "#,
        )],
        &[(
            "later_text.hbs",
            "n={{vars.n}} {{vars.missing_in_follow_up}}",
        )],
    );
    let report = check(&d.rules, &d.templates);
    let text = report.to_string();
    assert!(
        has(
            &text,
            &d.templates.join("later_text.hbs"),
            None,
            "vars.missing_in_follow_up"
        ),
        "{text}"
    );
}

#[test]
fn check_uses_the_configured_properties_vars_and_overrides() {
    let d = dirs(
        &[(
            "10_wifi.rhai",
            "if message.sender == \"guest\" { reply(\"wifi\"); }",
        )],
        &[
            ("wifi.hbs", "{{vars.wifi_password}}"),
            ("p7/wifi.hbs", "{{vars.wifi_name}} / {{vars.wifi_password}}"),
        ],
    );
    let property = |vars: serde_json::Value| PropertyInfo {
        id: "p1".into(),
        name: "P".into(),
        timezone: "America/New_York".into(),
        vars: vars.as_object().cloned().unwrap(),
    };
    // The override is rendered too, and the configured property lacks wifi_name.
    let report = check_with(
        &d.rules,
        &d.templates,
        &CheckOptions {
            properties: vec![property(json!({"wifi_password": "pw"}))],
            limits: None,
        },
    );
    let text = report.to_string();
    assert!(
        has(
            &text,
            &d.templates.join("p7").join("wifi.hbs"),
            None,
            "vars.wifi_name"
        ),
        "{text}"
    );
    let ok = check_with(
        &d.rules,
        &d.templates,
        &CheckOptions {
            properties: vec![property(json!({"wifi_password": "pw", "wifi_name": "n"}))],
            limits: None,
        },
    );
    assert!(ok.is_ok(), "{ok}");
}

#[test]
fn check_renders_every_language_variant_and_names_the_broken_one() {
    let d = dirs(
        &[
            (
                "10_wifi.rhai",
                "if message.sender == \"guest\" { reply(\"wifi\"); }",
            ),
            // Named literally, reached by no sample event.
            (
                "20_never.rhai",
                "if event.type == \"thread.closed\" { reply(\"bye\"); }",
            ),
        ],
        &[
            ("wifi.hbs", "Wifi: {{vars.wifi_password}}"),
            ("wifi.pt.hbs", "Senha do wifi: {{vars.wifi_password}}"),
            ("wifi.de.hbs", "WLAN-Passwort: {{vars.wlan_passwort}}"),
            ("p7/wifi.fr.hbs", "Wifi : {{vars.mot_de_passe}}"),
            ("bye.hbs", "Bye {{property.name}}"),
            ("bye.es.hbs", "Adiós {{vars.despedida}}"),
        ],
    );
    let text = check(&d.rules, &d.templates).to_string();
    for (file, var) in [
        (d.templates.join("wifi.de.hbs"), "vars.wlan_passwort"),
        (
            d.templates.join("p7").join("wifi.fr.hbs"),
            "vars.mot_de_passe",
        ),
        (d.templates.join("bye.es.hbs"), "vars.despedida"),
    ] {
        assert!(has(&text, &file, None, var), "{}: {text}", file.display());
    }
    assert!(!text.contains("wifi.pt.hbs"), "{text}");
    assert!(!text.contains("wifi.hbs:"), "{text}");
    assert!(text.ends_with("3 problems"), "{text}");
}

#[test]
fn check_fails_on_a_missing_or_oversized_attachment() {
    let d = dirs(
        &[(
            "10_guide.rhai",
            "if message.sender == \"guest\" {\n    reply(\"hello\", #{ attachments: [\"guide.pdf\", \"map.pdf\", \"huge.pdf\"] });\n}\n",
        )],
        &[("hello.hbs", "Hello from {{property.name}}")],
    );
    let attachments = d.templates.parent().unwrap().join("attachments");
    std::fs::create_dir_all(attachments.join("p1")).unwrap();
    std::fs::write(attachments.join("guide.pdf"), b"%PDF-1.4 guide").unwrap();
    // An override only: exists for one property, not globally (the sample property has none).
    std::fs::write(attachments.join("p1").join("map.pdf"), b"%PDF-1.4 map").unwrap();
    let huge = std::fs::File::create(attachments.join("huge.pdf")).unwrap();
    huge.set_len(concierge::plan::attachments::MAX_ATTACHMENT_BYTES as u64 + 1)
        .unwrap();
    let text = check(&d.rules, &d.templates).to_string();
    let rule = d.rules.join("10_guide.rhai");
    assert!(
        has(&text, &attachments.join("huge.pdf"), None, "over the limit"),
        "{text}"
    );
    assert!(
        has(
            &text,
            &rule,
            Some(2),
            "attachment `huge.pdf` does not exist"
        ),
        "{text}"
    );
    // Named for the sample property, which has no map.pdf: found by planning the samples.
    assert!(
        has(&text, &rule, None, "attachment `map.pdf` not found"),
        "{text}"
    );
    assert!(!text.contains("`guide.pdf`"), "{text}");

    std::fs::remove_file(attachments.join("huge.pdf")).unwrap();
    std::fs::write(attachments.join("map.pdf"), b"%PDF-1.4 map").unwrap();
    let rule_ok = "if message.sender == \"guest\" {\n    reply(\"hello\", #{ attachments: [\"guide.pdf\", \"map.pdf\"] });\n}\n";
    std::fs::write(&rule, rule_ok).unwrap();
    let ok = check(&d.rules, &d.templates);
    assert!(ok.is_ok(), "{ok}");
}

#[test]
fn fixture_failures_show_a_diff_and_counts() {
    let d = dirs(
        &[(
            "10_faq.rhai",
            "if contains_any(message.text, [\"wifi\"]) { reply(\"faq_wifi\", #{ a: 1 }); }\nif message.text == \"boom\" { throw \"exploded\"; }\n",
        )],
        &[("faq_wifi.hbs", "Password: {{vars.wifi_password}}")],
    );
    let tests = d.rules.join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    let event = |text: &str| {
        json!({
            "id": "e1", "type": "thread.new_message", "occurred_at": "2024-07-01T10:00:00Z",
            "property": {"id": "p1", "vars": {"wifi_password": "secret"}},
            "thread": {"id": "t1", "provider": "airbnb"},
            "message": {"id": "m1", "text": text, "sender": "guest", "inserted_at": "2024-07-01T10:00:00Z"}
        })
    };
    let fixtures = json!([
        {"name": "passes", "event": event("wifi?"),
         "expect": [{"rule": "10_faq", "action": "reply", "template": "faq_wifi", "vars": {"a": 1}}],
         "expect_rendered": {"faq_wifi": "secret"}},
        {"name": "wrong template", "event": event("wifi?"),
         "expect": [{"action": "reply", "template": "faq_parking"}]},
        {"name": "expected nothing", "event": event("wifi?"), "expect": []},
        {"name": "missing action", "event": event("hello"),
         "expect": [{"action": "close_thread"}]},
        {"name": "rendered text differs", "event": event("wifi"),
         "expect": [{"action": "reply"}], "expect_rendered": {"faq_wifi": "nope"}},
        {"name": "rule error fails", "event": event("boom"), "expect": []}
    ]);
    std::fs::write(tests.join("a.json"), fixtures.to_string()).unwrap();
    std::fs::write(
        tests.join("b.json"),
        "{\"name\": \"typo\", \"event\": {}, \"expectt\": []}",
    )
    .unwrap();

    let report = run_fixture_tests(&d.rules, &d.templates, None);
    let text = report.to_string();
    println!("{text}");
    assert_eq!((report.passed(), report.failed()), (1, 5));
    assert!(!report.is_ok());
    assert!(text.ends_with("1 passed, 5 failed"));
    assert!(text.contains("  - * reply faq_parking"), "{text}");
    assert!(
        text.contains("  + 10_faq reply faq_wifi vars {\"a\":1}"),
        "{text}"
    );
    assert!(text.contains("(the rules planned nothing)"), "{text}");
    assert!(text.contains("does not contain \"nope\""), "{text}");
    assert!(text.contains("exploded"), "{text}");
    // The broken fixture file is a load problem naming the file.
    assert_eq!(report.problems.len(), 1);
    assert_eq!(report.problems[0].file, tests.join("b.json"));
}
