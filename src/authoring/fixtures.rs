//! `rules test`: fixture tests — an event in, the expected action plan out.
//!
//! Fixture files are JSON, `<rules_dir>/tests/*.json` by default; a file holds one fixture
//! object or an array of them:
//!
//! ```json
//! {
//!   "name": "wifi question on Booking.com gets the wifi answer",
//!   "now": "2024-07-03T13:00:00Z",
//!   "event": { ...the event JSON of DESIGN.md... },
//!   "expect": [
//!     {"rule": "10_faq", "action": "reply", "template": "faq_wifi"},
//!     {"action": "follow_up", "name": "delayed_reply", "due_at": "2024-07-03T13:05:00Z"}
//!   ],
//!   "expect_rendered": {"faq_wifi": "sunshine2024"}
//! }
//! ```
//!
//! `now` defaults to the event's `occurred_at`. `expect` is the whole plan, in order (every
//! action of every rule that ran; `[]` = nothing). Each expected action is compared on
//! `action` and on whichever of `rule`, `template`, `name`, `due_at`, `vars`, `data`, `attachments` it gives
//! (`vars`/`data` match when the actual map contains those keys with those values); unknown
//! keys are an error, so typos do not pass silently. `expect_rendered` maps a template of the
//! plan to text its rendering must contain. Every reply/alert in the plan must render, and a
//! rule error fails the fixture.
//!
//! Owns the fixture format, loading fixture files and judging a plan against a fixture.
//! Plans come from [`crate::plan::plan`] (the same function the worker uses), never from
//! its own evaluation or rendering. It must not act on plans.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::content::load_content;
use crate::events::Event;
use crate::plan::rules::{Action, RuleEngine, RuleProblem};
use crate::plan::{plan, Plan};

/// One fixture (see the module docs for the file format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub name: String,
    #[serde(default)]
    pub now: Option<DateTime<Utc>>,
    pub event: Event,
    pub expect: Vec<ExpectedAction>,
    #[serde(default)]
    pub expect_rendered: BTreeMap<String, String>,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
}

/// One expected action; absent fields are not compared.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExpectedAction {
    pub action: String,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub vars: Option<Map<String, Value>>,
    #[serde(default)]
    pub data: Option<Map<String, Value>>,
    /// A reply's attachment file names, in order.
    #[serde(default)]
    pub attachments: Option<Vec<String>>,
}

impl ExpectedAction {
    fn matches(&self, rule: &str, action: &Action) -> bool {
        if self.action != action.kind() || self.rule.as_deref().is_some_and(|r| r != rule) {
            return false;
        }
        let subset = |want: &Option<Map<String, Value>>, have: &Map<String, Value>| {
            want.as_ref()
                .none_or(|w| w.iter().all(|(k, v)| have.get(k) == Some(v)))
        };
        if let Some(want) = &self.attachments {
            match action {
                Action::Reply { attachments, .. } if attachments == want => {}
                _ => return false,
            }
        }
        match action {
            Action::Reply { template, vars, .. } | Action::Alert { template, vars } => {
                self.template.as_ref().none_or(|t| t == template)
                    && subset(&self.vars, vars)
                    && self.name.is_none()
                    && self.due_at.is_none()
                    && self.data.is_none()
            }
            Action::FollowUp { name, due_at, data } => {
                self.name.as_ref().none_or(|n| n == name)
                    && self.due_at.as_ref().none_or(|d| d == due_at)
                    && subset(&self.data, data)
                    && self.template.is_none()
                    && self.vars.is_none()
            }
            Action::CancelFollowUp { name } => {
                self.name.as_ref().none_or(|n| n == name)
                    && self.template.is_none()
                    && self.due_at.is_none()
            }
            Action::NoReplyNeeded
            | Action::CloseThread
            | Action::CancelAllFollowUps
            | Action::NoAnswer { .. } => {
                self.template.is_none() && self.name.is_none() && self.due_at.is_none()
            }
        }
    }
}

impl fmt::Display for ExpectedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.rule.as_deref().unwrap_or("*"), self.action)?;
        if let Some(t) = &self.template {
            write!(f, " {t}")?;
        }
        if let Some(n) = &self.name {
            write!(f, " {n}")?;
        }
        if let Some(d) = &self.due_at {
            write!(f, " at {}", d.to_rfc3339())?;
        }
        if let Some(v) = &self.vars {
            write!(f, " vars {}", Value::Object(v.clone()))?;
        }
        if let Some(v) = &self.data {
            write!(f, " data {}", Value::Object(v.clone()))?;
        }
        Ok(())
    }
}

/// `Option::is_none_or` without needing Rust 1.82.
trait NoneOr<T> {
    fn none_or(self, f: impl FnOnce(T) -> bool) -> bool;
}

impl<T> NoneOr<T> for Option<T> {
    fn none_or(self, f: impl FnOnce(T) -> bool) -> bool {
        match self {
            None => true,
            Some(v) => f(v),
        }
    }
}

fn describe(rule: &str, action: &Action) -> String {
    let mut s = format!("{rule} {}", action.kind());
    match action {
        Action::Reply { template, vars, .. } | Action::Alert { template, vars } => {
            s.push_str(&format!(" {template}"));
            if !vars.is_empty() {
                s.push_str(&format!(" vars {}", Value::Object(vars.clone())));
            }
        }
        Action::FollowUp { name, due_at, data } => {
            s.push_str(&format!(" {name} at {}", due_at.to_rfc3339()));
            if !data.is_empty() {
                s.push_str(&format!(" data {}", Value::Object(data.clone())));
            }
        }
        Action::CancelFollowUp { name } => s.push_str(&format!(" {name}")),
        Action::NoAnswer { reason } => s.push_str(&format!(" ({reason})")),
        Action::NoReplyNeeded | Action::CloseThread | Action::CancelAllFollowUps => {}
    }
    if let Action::Reply { attachments, .. } = action {
        if !attachments.is_empty() {
            s.push_str(&format!(" attachments [{}]", attachments.join(", ")));
        }
    }
    s
}

/// The result of one fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureResult {
    pub file: PathBuf,
    pub name: String,
    /// Empty when the fixture passed; otherwise human-readable failure text (with a diff).
    pub failures: Vec<String>,
}

impl FixtureResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The result of a `rules test` run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TestReport {
    pub results: Vec<FixtureResult>,
    /// Rules, templates or fixture files that could not be loaded (these fail the run).
    pub problems: Vec<RuleProblem>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// No failed fixture and no load problem (and at least one fixture ran).
    pub fn is_ok(&self) -> bool {
        self.failed() == 0 && self.problems.is_empty() && !self.results.is_empty()
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "error: {p}")?;
        }
        for r in &self.results {
            if r.passed() {
                writeln!(f, "ok    {} ({})", r.name, r.file.display())?;
            } else {
                writeln!(f, "FAIL  {} ({})", r.name, r.file.display())?;
                for failure in &r.failures {
                    for line in failure.lines() {
                        writeln!(f, "      {line}")?;
                    }
                }
            }
        }
        write!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// Runs every fixture in `fixtures_dir` (default `<rules_dir>/tests`) against the rules and
/// templates on disk.
pub fn run_fixture_tests(
    rules_dir: &Path,
    templates_dir: &Path,
    fixtures_dir: Option<&Path>,
) -> TestReport {
    let default_dir = rules_dir.join("tests");
    let fixtures_dir = fixtures_dir.unwrap_or(&default_dir);
    let mut report = TestReport::default();
    let engine = RuleEngine::default();
    let (content, problems) = load_content(&engine, rules_dir, templates_dir);
    report.problems.extend(problems.rules);
    report.problems.extend(problems.templates);

    let (fixtures, problems) = load_fixtures(fixtures_dir);
    report.problems.extend(problems);
    for (file, fixture) in fixtures {
        let now = fixture.now.unwrap_or(fixture.event.occurred_at);
        let plan = plan(&engine, &content, &fixture.event, now, false);
        let failures = judge(&fixture, &plan);
        report.results.push(FixtureResult {
            file,
            name: fixture.name,
            failures,
        });
    }
    report
}

/// Reads `*.json` fixture files, sorted by name.
pub fn load_fixtures(dir: &Path) -> (Vec<(PathBuf, Fixture)>, Vec<RuleProblem>) {
    let mut fixtures = Vec::new();
    let mut problems = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json") && p.is_file())
            .collect(),
        Err(e) => {
            problems.push(RuleProblem::new(
                dir,
                None,
                format!("cannot read fixtures directory: {e}"),
            ));
            return (fixtures, problems);
        }
    };
    files.sort();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) => {
                problems.push(RuleProblem::new(&file, None, format!("cannot read: {e}")));
                continue;
            }
        };
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            Many(Vec<Fixture>),
            One(Box<Fixture>),
        }
        // Parse as a Value first so that errors point at the right line.
        let parsed = serde_json::from_str::<Value>(&text)
            .map_err(|e| (Some(e.line()), e.to_string()))
            .and_then(|v| match v {
                Value::Array(items) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        serde_json::from_value::<Fixture>(item)
                            .map_err(|e| (None, format!("fixture #{}: {e}", i + 1)))
                    })
                    .collect::<Result<Vec<_>, _>>()
                    .map(OneOrMany::Many),
                other => serde_json::from_value::<Fixture>(other)
                    .map(|f| OneOrMany::One(Box::new(f)))
                    .map_err(|e| (None, e.to_string())),
            });
        match parsed {
            Ok(OneOrMany::Many(list)) => {
                fixtures.extend(list.into_iter().map(|f| (file.clone(), f)))
            }
            Ok(OneOrMany::One(f)) => fixtures.push((file.clone(), *f)),
            Err((line, message)) => problems.push(RuleProblem::new(&file, line, message)),
        }
    }
    (fixtures, problems)
}

fn judge(fixture: &Fixture, plan: &Plan) -> Vec<String> {
    let mut failures = Vec::new();
    for o in plan.errors() {
        if let Some(e) = &o.error {
            failures.push(format!("rule error: {e}"));
        }
    }
    let actual: Vec<(&str, &Action)> = plan
        .steps()
        .map(|step| (step.rule.as_str(), &step.action))
        .collect();

    if let Some(diff) = plan_diff(&fixture.expect, &actual) {
        failures.push(diff);
    }

    // Every reply/alert must render; expect_rendered checks the text.
    let mut rendered: BTreeMap<&str, Result<String, String>> = BTreeMap::new();
    for step in plan.steps() {
        let (Some(template), Some(result)) = (step.template(), &step.rendered) else {
            continue;
        };
        let r = result.clone().map_err(|e| e.to_string());
        if let Err(e) = &r {
            failures.push(format!("rule {}: {e}", step.rule));
        }
        rendered.entry(template).or_insert(r);
    }
    for (template, needle) in &fixture.expect_rendered {
        match rendered.get(template.as_str()) {
            None => failures.push(format!(
                "expect_rendered: template `{template}` is not in the plan"
            )),
            Some(Err(_)) => {}
            Some(Ok(text)) if !text.contains(needle.as_str()) => failures.push(format!(
                "expect_rendered: `{template}` does not contain {needle:?}; it rendered:\n{text}"
            )),
            Some(Ok(_)) => {}
        }
    }
    failures
}

/// `None` when `actual` matches `expected` in order; otherwise the diff to show.
fn plan_diff(expected: &[ExpectedAction], actual: &[(&str, &Action)]) -> Option<String> {
    let plan_ok = actual.len() == expected.len()
        && expected
            .iter()
            .zip(actual)
            .all(|(e, (rule, a))| e.matches(rule, a));
    if plan_ok {
        return None;
    }
    let mut diff = String::from("plan differs (- expected, + actual, = same):");
    for i in 0..actual.len().max(expected.len()) {
        match (expected.get(i), actual.get(i)) {
            (Some(e), Some((rule, a))) if e.matches(rule, a) => {
                diff.push_str(&format!("\n  = {}", describe(rule, a)))
            }
            (e, a) => {
                if let Some(e) = e {
                    diff.push_str(&format!("\n  - {e}"));
                }
                if let Some((rule, a)) = a {
                    diff.push_str(&format!("\n  + {}", describe(rule, a)));
                }
            }
        }
    }
    if actual.is_empty() {
        diff.push_str("\n  (the rules planned nothing)");
    }
    Some(diff)
}
