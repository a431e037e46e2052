//! Template rendering with real files in temp dirs: context, strict mode, overrides, date
//! helpers, blank results, parse problems, reload keeping the last good version.

use concierge::content::{load_templates, reload_templates};
use concierge::events::Event;
use concierge::plan::templates::TemplateError;
use serde_json::{json, Map, Value};

fn event() -> Event {
    serde_json::from_value(json!({
        "id": "inquiry.received:t1:m1",
        "type": "inquiry.received",
        "occurred_at": "2024-07-01T10:00:00Z",
        "property": {"id": "p1", "name": "Casa Azul", "timezone": "Europe/Lisbon",
                     "vars": {"wifi_name": "CasaAzul", "wifi_password": "sol2024", "greeting": "Hello"}},
        "thread": {"id": "t1", "title": "Ana Silva", "provider": "airbnb"},
        "inquiry": {"status": "active", "non_response_at": "2024-07-02T09:30:00Z",
                    "checkin_date": "2024-08-01", "guest_name": "Ana", "expected_payout_amount_accurate": "50.00",
                    "currency": "GBP"},
        "follow_up": {"name": "x", "due_at": "2024-07-02T07:30:00Z", "data": {"n": 3}}
    }))
    .expect("valid event")
}

fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, body) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    dir
}

fn vars(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

#[test]
fn renders_event_context_and_merged_vars_without_escaping() {
    let dir = dir_with(&[(
        "faq_wifi.hbs",
        "{{vars.greeting}} {{inquiry.guest_name}} & co!\nWifi: {{property.vars.wifi_name}} / {{vars.wifi_password}}\n{{thread.title}} <{{follow_up.data.n}}>\n\n",
    )]);
    let (t, problems) = load_templates(dir.path());
    assert!(problems.is_empty(), "{problems:?}");
    let out = t
        .render(
            "faq_wifi",
            &event(),
            &vars(json!({"greeting": "Olá", "wifi_password": "override"})),
        )
        .unwrap();
    assert_eq!(
        out,
        "Olá Ana & co!\nWifi: CasaAzul / override\nAna Silva <3>"
    );
}

#[test]
fn strict_mode_names_the_missing_variable() {
    let dir = dir_with(&[("t.hbs", "Code: {{vars.door_code}}")]);
    let (t, _) = load_templates(dir.path());
    let err = t.render("t", &event(), &Map::new()).unwrap_err();
    match &err {
        TemplateError::Render { template, message } => {
            assert_eq!(template, "t");
            assert!(message.contains("vars.door_code"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn missing_helper_argument_is_a_strict_error_too() {
    let dir = dir_with(&[("t.hbs", "Deadline {{local_time inquiry.nope}}")]);
    let (t, _) = load_templates(dir.path());
    let err = t.render("t", &event(), &Map::new()).unwrap_err();
    assert!(err.to_string().contains("inquiry.nope"), "{err}");
}

#[test]
fn unknown_template_is_not_found() {
    let (t, _) = load_templates(dir_with(&[]).path());
    assert!(matches!(
        t.render("nope", &event(), &Map::new()),
        Err(TemplateError::NotFound { .. })
    ));
}

#[test]
fn blank_result_is_an_error() {
    let dir = dir_with(&[("blank.hbs", "{{#if vars.missing_flag}}yes{{/if}}  \n\n")]);
    let (t, _) = load_templates(dir.path());
    let r = t.render("blank", &event(), &vars(json!({"missing_flag": false})));
    assert!(matches!(r, Err(TemplateError::Empty { .. })), "{r:?}");
}

#[test]
fn per_property_override_wins() {
    let dir = dir_with(&[
        ("welcome.hbs", "Welcome!"),
        ("p1/welcome.hbs", "Bem-vindo à {{property.name}}!"),
        ("p2/welcome.hbs", "Other property"),
    ]);
    let (t, problems) = load_templates(dir.path());
    assert!(problems.is_empty());
    assert_eq!(
        t.render("welcome", &event(), &Map::new()).unwrap(),
        "Bem-vindo à Casa Azul!"
    );
    let mut other = event();
    other.property.id = "p9".into();
    assert_eq!(
        t.render("welcome", &other, &Map::new()).unwrap(),
        "Welcome!"
    );
    assert!(t.has("welcome", "p9"));
    assert_ne!(t.version("welcome", "p1"), t.version("welcome", "p9"));
    assert_eq!(t.names(), ["welcome"]);
}

#[test]
fn date_helpers_use_the_property_timezone() {
    let dir = dir_with(&[(
        "t.hbs",
        "{{local_date inquiry.non_response_at}} {{local_time inquiry.non_response_at}} | {{local_datetime follow_up.due_at}} | {{format_time inquiry.non_response_at \"%H:%M %d %b\"}} | {{local_time inquiry.non_response_at tz=\"America/New_York\"}} | {{local_date inquiry.checkin_date}} | {{local_time vars.naive}}",
    )]);
    let (t, _) = load_templates(dir.path());
    let out = t
        .render(
            "t",
            &event(),
            &vars(json!({"naive": "2024-01-15T18:05:00.000000"})),
        )
        .unwrap();
    // Lisbon is UTC+1 in July and UTC+0 in January.
    assert_eq!(
        out,
        "2024-07-02 10:30 | 2024-07-02 08:30 | 10:30 02 Jul | 05:30 | 2024-08-01 | 18:05"
    );
}

#[test]
fn parse_errors_are_problems_and_reload_keeps_the_last_good_version() {
    let dir = dir_with(&[
        ("a.hbs", "A {{vars.wifi_name}}"),
        ("b.hbs", "line one\n{{#if x}}\nunclosed"),
    ]);
    let (t, problems) = load_templates(dir.path());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].file, dir.path().join("b.hbs"));
    assert!(problems[0].line.is_some(), "{}", problems[0]);
    assert!(!t.has("b", "p1"));

    // Break a, fix b, add c: a keeps rendering its old text.
    std::fs::write(dir.path().join("a.hbs"), "A {{#each}}").unwrap();
    std::fs::write(dir.path().join("b.hbs"), "B").unwrap();
    std::fs::write(dir.path().join("c.hbs"), "C").unwrap();
    let (t2, changes) = reload_templates(&t, dir.path());
    assert_eq!(changes.rejected.len(), 1, "{changes:?}");
    assert_eq!(changes.rejected[0].file, dir.path().join("a.hbs"));
    assert_eq!(changes.accepted.len(), 2);
    assert_eq!(t2.render("a", &event(), &Map::new()).unwrap(), "A CasaAzul");
    assert_eq!(t2.render("b", &event(), &Map::new()).unwrap(), "B");

    std::fs::remove_file(dir.path().join("c.hbs")).unwrap();
    let (t3, changes) = reload_templates(&t2, dir.path());
    assert_eq!(changes.removed, [dir.path().join("c.hbs")]);
    assert!(!t3.has("c", "p1"));
}

#[test]
fn if_blocks_may_test_an_optional_var() {
    let dir = dir_with(&[(
        "t.hbs",
        "Address.{{#if vars.directions}} {{vars.directions}}{{/if}}",
    )]);
    let (t, _) = load_templates(dir.path());
    assert_eq!(t.render("t", &event(), &Map::new()).unwrap(), "Address.");
    assert_eq!(
        t.render("t", &event(), &vars(json!({"directions": "Left."})))
            .unwrap(),
        "Address. Left."
    );
}
