//! Property tests (issue #11): arbitrary calls of the rule API (numbers at the edges, odd and
//! huge strings, unit values, times and durations out of range) and arbitrary template
//! variables never panic: each call is a result or a rule/template error, and no panic is
//! even caught on the way (the guards in the engine and renderer are a last resort, not
//! the way errors are made). Must not depend on NATS or the network.

use std::sync::{Arc, OnceLock};

use concierge::content::load_templates;
use concierge::events::Event;
use concierge::plan::rules::{EvalContext, RuleEngine, RuleSet};
use concierge::plan::templates::Templates;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn engine() -> &'static RuleEngine {
    static ENGINE: OnceLock<RuleEngine> = OnceLock::new();
    ENGINE.get_or_init(RuleEngine::default)
}

/// Strings that reach rules through the event: unicode, controls, timestamps, big ones.
fn odd_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        any::<String>(),
        "[ -~]{0,40}",
        "\\PC{0,20}",
        "[0-9]{1,6}-[0-9]{1,2}-[0-9]{1,2}(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\\.[0-9]{1,9})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?",
        "%[a-zA-Z%.:#0-9-]{0,6}",
        "[0-9]{1,2}:[0-9]{1,2}(:[0-9]{1,2})?",
        Just("9999-12-31T23:59:59Z".to_string()),
        Just("0001-01-01".to_string()),
        Just("Pacific/Kiritimati".to_string()),
        (1usize..3000).prop_map(|n| "a".repeat(n * 30)),
    ]
}

/// A Rhai expression for one argument.
fn arg() -> impl Strategy<Value = String> {
    let ints = prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(0i64),
        Just(-1i64),
        Just(100_000_000_000i64),
        any::<i64>(),
    ];
    prop_oneof![
        ints.clone().prop_map(|n| format!("({n})")),
        // `i64::MIN` has no literal: build it.
        Just("(-9223372036854775807 - 1)".to_string()),
        any::<f64>()
            .prop_map(|f| format!("({f:?})"))
            .prop_filter("a float literal", |s| !s.contains("inf")
                && !s.contains("NaN")),
        Just("(1e308 * 10.0)".to_string()),
        Just("()".to_string()),
        // The durations at the edge of chrono's range (the overflow), more often.
        Just("days(100000000000)".to_string()),
        Just("days(-100000000000)".to_string()),
        Just("days(100000000000)".to_string()),
        Just("days(-100000000000)".to_string()),
        Just("message.text".to_string()),
        Just("thread.title".to_string()),
        Just("property.timezone".to_string()),
        Just("message.missing".to_string()),
        Just("now()".to_string()),
        ints.clone().prop_map(|n| format!("days({n})")),
        ints.prop_map(|n| format!("seconds({n})")),
        Just("parse_time(\"9999-12-31T23:59:59Z\")".to_string()),
        Just("parse_time(\"0001-01-01T00:00:00Z\")".to_string()),
        Just("[message.text, thread.title, \"wifi\", \"\", 1, ()]".to_string()),
        Just("#{ a: message.text, b: [1, [2, [3]]], t: now(), d: days(1) }".to_string()),
    ]
}

const FUNCTIONS: [&str; 23] = [
    "reply",
    "alert",
    "no_reply_needed",
    "close_thread",
    "follow_up",
    "cancel_follow_up",
    "contains_any",
    "matches",
    "parse_time",
    "seconds",
    "minutes",
    "hours",
    "days",
    "local_time",
    "at_local",
    "within_local_hours",
    "format_time",
    "to_string",
    "now",
    "stop",
    "to_debug",
    "type_of",
    "print",
];
const OPERATORS: [&str; 9] = ["+", "-", "*", "==", "!=", "<", ">=", "/", "%"];

/// One rule line: a function call with 0–3 arguments, a binary operator, a unary minus or
/// a property getter on arbitrary values.
fn call() -> impl Strategy<Value = String> {
    prop_oneof![
        (
            prop::sample::select(&FUNCTIONS[..]),
            prop::collection::vec(arg(), 0..=3)
        )
            .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
        (arg(), prop::sample::select(&OPERATORS[..]), arg())
            .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
        arg().prop_map(|a| format!("-{a}")),
        (
            arg(),
            prop::sample::select(&["unix", "seconds", "minutes", "hours", "days"][..])
        )
            .prop_map(|(a, g)| format!("{a}.{g}")),
    ]
}

fn event(text: &str, title: &str, vars: Value) -> Event {
    serde_json::from_value(json!({
        "id": "thread.new_message:t1:m1",
        "type": "thread.new_message",
        "occurred_at": "2024-07-01T10:00:00Z",
        "property": {"id": "p1", "name": "Casa", "timezone": "Europe/Lisbon", "vars": vars},
        "thread": {"id": "t1", "title": title, "provider": "airbnb", "is_closed": false,
                   "message_count": 1, "booking_id": "b1", "awaiting_reply": true},
        "message": {"id": "m1", "text": text, "sender": "guest", "attachments": [],
                    "inserted_at": "2024-07-01T10:00:00Z"}
    }))
    .expect("valid event")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_rule_api_calls_never_panic(
        lines in prop::collection::vec(call(), 1..4),
        text in odd_string(),
        title in odd_string(),
        now_secs in prop_oneof![Just(0i64), Just(253_402_300_799i64), 0i64..4_000_000_000],
    ) {
        let source: String = lines.iter().map(|l| format!("let x = {l};\n")).collect();
        let rule = engine()
            .compile_source(std::path::Path::new("10_prop.rhai"), &source)
            .map_err(|p| TestCaseError::fail(format!("{source}: {p}")))?;
        let set = RuleSet::new(vec![Arc::new(rule)]);
        let now = chrono::DateTime::from_timestamp(now_secs, 0).expect("in range");
        let ev = event(&text, &title, json!({}));
        let e = engine().evaluate(&set, &ev, &EvalContext { now });
        prop_assert_eq!(e.rules.len(), 1);
        if let Some(p) = &e.rules[0].error {
            prop_assert!(!p.message.contains("internal error"), "{} panicked: {}", source, p);
        }
    }
}

/// Any JSON value, with odd keys (dots, brackets, `@`, empty) and edge numbers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        odd_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(odd_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn odd_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("t".to_string()),
        Just("fmt".to_string()),
        Just(String::new()),
        Just("a.b".to_string()),
        Just("[0]".to_string()),
        Just("@index".to_string()),
        Just("../x".to_string()),
        any::<String>(),
    ]
}

/// Templates touching every helper and the usual block forms with `vars` values.
fn templates() -> &'static (tempfile::TempDir, Templates) {
    static T: OnceLock<(tempfile::TempDir, Templates)> = OnceLock::new();
    T.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = [
            ("plain", "Hi {{vars.a}} {{vars.t}} {{message.text}} {{thread.title}}"),
            ("dates", "{{local_date vars.t}} {{local_time vars.t}} {{local_datetime vars.a}}"),
            ("format", "{{format_time vars.t vars.fmt}} {{format_time message.text thread.title tz=vars.a}}"),
            ("each", "{{#each vars}}{{@key}}={{this}};{{#each this}}{{@index}}{{this}}{{/each}}{{/each}}"),
            ("blocks", "{{#if vars.a}}{{vars.a.b}}{{else}}{{lookup vars vars.t}}{{/if}}{{#with vars.a}}{{this}}{{/with}}"),
        ];
        for (name, body) in files {
            std::fs::write(dir.path().join(format!("{name}.hbs")), body).expect("write");
        }
        let (t, problems) = load_templates(dir.path());
        assert!(problems.is_empty(), "{problems:?}");
        (dir, t)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_template_variables_never_panic_the_renderer(
        property_vars in prop::collection::btree_map(odd_key(), json_value(), 0..6),
        rule_vars in prop::collection::btree_map(odd_key(), json_value(), 0..6),
        t in odd_string(),
        a in json_value(),
        text in odd_string(),
        title in odd_string(),
    ) {
        let property_vars: Map<String, Value> = property_vars.into_iter().collect();
        let mut rule_vars: Map<String, Value> = rule_vars.into_iter().collect();
        rule_vars.insert("t".into(), Value::String(t));
        rule_vars.insert("a".into(), a);
        let ev = event(&text, &title, Value::Object(property_vars));
        let (_, templates) = templates();
        for name in ["plain", "dates", "format", "each", "blocks"] {
            if let Err(e) = templates.render(name, &ev, &rule_vars) {
                prop_assert!(!e.to_string().contains("internal error"), "{} panicked: {}", name, e);
            }
        }
    }
}
