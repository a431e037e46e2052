//! The shipped example rules and templates (top-level `rules/`, `templates/`) pass
//! `rules check` and their fixture tests, so CI keeps them honest.

use std::path::Path;

use concierge::authoring::check::check;
use concierge::authoring::fixtures::run_fixture_tests;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_examples_pass_rules_check() {
    let report = check(&root().join("rules"), &root().join("templates"));
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.rules_ok, report.rules_total);
    assert!(report.rules_total >= 6);
    assert_eq!(report.templates_ok, report.templates_total);
}

#[test]
fn shipped_examples_pass_their_fixtures() {
    let report = run_fixture_tests(&root().join("rules"), &root().join("templates"), None);
    println!("{report}");
    assert!(report.is_ok(), "{report}");
    assert!(report.passed() >= 10, "{report}");
}
