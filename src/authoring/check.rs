//! `rules check`: compile every rule, find every template a rule can use, render those
//! templates against sample events, and report ALL problems with file:line.
//!
//! Templates a rule can use are found two ways: by evaluating every rule against the built-in
//! sample events ([`super::samples`]) at a daytime and a night-time `now` (then once more on
//! `follow_up.due` events for every follow-up the first pass armed), and by scanning the rule
//! sources for string-literal template names (`reply("x"`, `alert("x"`, `template: "x"`).
//! Samples are planned with [`crate::plan::plan`] (the function the worker uses), so what
//! `rules check` sees rendered is what a guest would get.
//! Attachments (`attachments/` next to the templates folder): a file that cannot be read or
//! is over the size limit is a problem of that file; a file name a rule writes literally
//! (`attachments: ["checkin-guide.pdf"]`) or a sample plan resolves must exist (globally
//! or for some property), else a problem at the rule's line.
//! It must not send anything or touch NATS; it only reads the three directories.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use regex::Regex;
use serde_json::{Map, Value};

use super::samples;
use crate::base::time;
use crate::content::load_content;
use crate::events::{Event, PropertyInfo};
use crate::plan::rules::{Action, RuleEngine, RuleLimits, RuleProblem};
use crate::plan::templates::{TemplateError, TemplateFile, Templates};
use crate::plan::{plan, Content};

/// Options for [`check_with`].
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// Properties (with their real vars and timezone) to check against; empty = the built-in
    /// sample property ([`samples::sample_property`]).
    pub properties: Vec<PropertyInfo>,
    /// Sandbox limits; default [`RuleLimits::default`].
    pub limits: Option<RuleLimits>,
}

/// Everything `rules check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub problems: Vec<RuleProblem>,
    /// Rules that compiled and ran on every sample without error.
    pub rules_ok: usize,
    pub rules_total: usize,
    /// Template files that parsed and rendered wherever they were used.
    pub templates_ok: usize,
    pub templates_total: usize,
}

impl CheckReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.problems {
            writeln!(f, "{p}")?;
        }
        write!(
            f,
            "{}/{} rules ok, {}/{} templates ok, {} problem{}",
            self.rules_ok,
            self.rules_total,
            self.templates_ok,
            self.templates_total,
            self.problems.len(),
            if self.problems.len() == 1 { "" } else { "s" }
        )
    }
}

/// [`check_with`] against the built-in sample property.
pub fn check(rules_dir: &Path, templates_dir: &Path) -> CheckReport {
    check_with(rules_dir, templates_dir, &CheckOptions::default())
}

/// One use of a template seen while planning samples.
struct Use {
    template: String,
    rule: String,
    rule_file: PathBuf,
    label: String,
    event: Event,
    vars: Map<String, Value>,
    /// What the plan rendered for `event` (the template `event`'s property resolves to).
    rendered: Result<String, TemplateError>,
}

/// Follow-ups armed on samples, by (provider, name), with their data.
type ArmedFollowUps = BTreeMap<(String, String), Map<String, Value>>;

/// What a check run has found so far.
#[derive(Default)]
struct Findings {
    problems: Problems,
    bad_rules: BTreeSet<PathBuf>,
    bad_templates: BTreeSet<PathBuf>,
    uses: Vec<Use>,
    rendered_ok: BTreeSet<String>,
}

pub fn check_with(rules_dir: &Path, templates_dir: &Path, opts: &CheckOptions) -> CheckReport {
    let engine = RuleEngine::new(opts.limits.unwrap_or_default());
    let mut found = Findings::default();

    let (content, problems) = load_content(&engine, rules_dir, templates_dir);
    let rules_total = content.rules.len() + problems.rules.len();
    found
        .bad_rules
        .extend(problems.rules.iter().map(|p| p.file.clone()));
    found.problems.extend(problems.rules);

    let templates_total = content.templates.files().count() + problems.templates.len();
    found
        .bad_templates
        .extend(problems.templates.iter().map(|p| p.file.clone()));
    found.problems.extend(problems.templates);
    found.problems.extend(problems.attachments);

    let properties = if opts.properties.is_empty() {
        vec![samples::sample_property()]
    } else {
        opts.properties.clone()
    };
    // 1. + 2. Plan every sample event, day and night, then the follow-ups they armed.
    for property in &properties {
        for now in sample_times(property) {
            plan_samples(&engine, &content, property, now, &mut found);
        }
    }
    // 3. Templates used at run time must exist and render.
    check_uses(&content.templates, templates_dir, &mut found);
    // 4. Template names written literally in rule sources.
    check_literals(&content, templates_dir, &properties, &mut found);
    // 5. Attachment names written literally in rule sources.
    check_attachment_literals(&content, templates_dir, &mut found);

    let rules_ok = content
        .rules
        .rules()
        .iter()
        .filter(|r| !found.bad_rules.contains(&r.file))
        .count();
    let templates_ok = content
        .templates
        .files()
        .filter(|f| !found.bad_templates.contains(&f.file))
        .count();
    CheckReport {
        problems: found.problems.into_vec(),
        rules_ok,
        rules_total,
        templates_ok,
        templates_total,
    }
}

/// Plans every sample event of `property` at `now`, then fires each follow-up they armed
/// (staff replied / did not reply).
fn plan_samples(
    engine: &RuleEngine,
    content: &Content,
    property: &PropertyInfo,
    now: DateTime<Utc>,
    found: &mut Findings,
) {
    let mut follow_ups = ArmedFollowUps::new();
    for (label, event) in samples::sample_events(property, now) {
        run_sample(engine, content, &label, &event, now, &mut follow_ups, found);
    }
    for ((provider, name), data) in follow_ups.clone() {
        for awaiting in [true, false] {
            let event =
                samples::follow_up_event(property, &provider, &name, data.clone(), awaiting, now);
            let label = format!("follow_up.due {name:?} on {provider} (awaiting_reply {awaiting})");
            run_sample(
                engine,
                content,
                &label,
                &event,
                now,
                &mut ArmedFollowUps::new(),
                found,
            );
        }
    }
}

/// Every template a sample used must exist, and render for that sample's property and for
/// every per-property override of it.
fn check_uses(templates: &Templates, templates_dir: &Path, found: &mut Findings) {
    let uses = std::mem::take(&mut found.uses);
    for u in &uses {
        let Some(file) = templates.resolve(&u.template, &u.event.property.id) else {
            let line = literal_line(&u.rule_file, &u.template);
            found.problems.push(RuleProblem::new(
                &u.rule_file,
                line,
                missing_template(templates_dir, &u.template),
            ));
            found.bad_rules.insert(u.rule_file.clone());
            continue;
        };
        // The file the plan rendered, then every other file of the template: per-property
        // overrides and language variants, each rendered exactly, for its property and in
        // its language.
        let mut results = vec![(
            file.file.clone(),
            u.event.property.id.clone(),
            u.rendered.clone(),
        )];
        for o in templates.files() {
            if o.name == u.template && o.file != file.file {
                let ev = variant_event(&u.event, o);
                let rendered = templates.render_file(o, &ev, &u.vars);
                results.push((o.file.clone(), ev.property.id, rendered));
            }
        }
        for (file, property_id, rendered) in results {
            match rendered {
                Ok(_) => {
                    found.rendered_ok.insert(u.template.clone());
                }
                Err(e) => {
                    found.problems.push(RuleProblem::new(
                        &file,
                        None,
                        format!(
                            "{e} (rule {} on sample {}, property {property_id})",
                            u.rule, u.label
                        ),
                    ));
                    found.bad_templates.insert(file);
                }
            }
        }
    }
    found.uses = uses;
}

/// Template names written literally in rule sources must exist; one no sample reached must
/// render against at least one sample event.
fn check_literals(
    content: &Content,
    templates_dir: &Path,
    properties: &[PropertyInfo],
    found: &mut Findings,
) {
    let templates = &content.templates;
    for rule in content.rules.rules() {
        let Ok(source) = std::fs::read_to_string(&rule.file) else {
            continue;
        };
        for (line, name) in literal_templates(&source) {
            if !templates.files().any(|f| f.name == name) {
                found.problems.push(RuleProblem::new(
                    &rule.file,
                    Some(line),
                    missing_template(templates_dir, &name),
                ));
                found.bad_rules.insert(rule.file.clone());
                continue;
            }
            if found.uses.iter().any(|u| u.template == name) || found.rendered_ok.contains(&name) {
                continue;
            }
            let mut all_ok = true;
            for f in templates.files().filter(|f| f.name == name) {
                if let Some(e) = first_render_error(templates, f, properties) {
                    all_ok = false;
                    found.problems.push(RuleProblem::new(
                        &f.file,
                        None,
                        format!(
                            "{e} (named in {}:{line}; no sample event renders it)",
                            rule.file.display()
                        ),
                    ));
                    found.bad_templates.insert(f.file.clone());
                }
            }
            if all_ok {
                found.rendered_ok.insert(name);
            }
        }
    }
}

/// `sample` as the event `file` is rendered for: its property (an override) and its
/// language (a variant).
fn variant_event(sample: &Event, file: &TemplateFile) -> Event {
    let mut ev = sample.clone();
    if let Some(pid) = &file.property_id {
        ev.property.id.clone_from(pid);
    }
    if let Some(t) = ev.thread.as_mut() {
        t.language.clone_from(&file.language);
    }
    if let Some(m) = ev.message.as_mut() {
        m.language.clone_from(&file.language);
    }
    ev
}

/// `None` if `file` renders (without rule vars) against at least one daytime sample event
/// of some property; otherwise the first render error.
fn first_render_error(
    templates: &Templates,
    file: &TemplateFile,
    properties: &[PropertyInfo],
) -> Option<TemplateError> {
    let mut first_err = None;
    let ok = properties.iter().any(|p| {
        samples::sample_events(p, sample_times(p)[0])
            .into_iter()
            .map(|(_, ev)| variant_event(&ev, file))
            .any(|ev| match templates.render_file(file, &ev, &Map::new()) {
                Ok(_) => true,
                Err(e) => {
                    first_err.get_or_insert(e);
                    false
                }
            })
    });
    if ok {
        None
    } else {
        first_err
    }
}

fn run_sample(
    engine: &RuleEngine,
    content: &Content,
    label: &str,
    event: &Event,
    now: DateTime<Utc>,
    follow_ups: &mut ArmedFollowUps,
    found: &mut Findings,
) {
    let plan = plan(engine, content, event, now, false);
    for rule_plan in &plan.rules {
        if let Some(p) = &rule_plan.error {
            let mut p = p.clone();
            p.message = format!("{} (on sample {label})", p.message);
            found.bad_rules.insert(p.file.clone());
            found.problems.push(p);
        }
        let Some(rule) = content.rules.get(&rule_plan.rule) else {
            continue;
        };
        for step in &rule_plan.steps {
            for missing in step.attachments.iter().filter_map(|a| a.as_ref().err()) {
                found.problems.push(RuleProblem::new(
                    &rule.file,
                    None,
                    format!("{missing} (on sample {label})"),
                ));
                found.bad_rules.insert(rule.file.clone());
            }
            match (&step.action, &step.rendered) {
                (
                    Action::Reply { template, vars, .. } | Action::Alert { template, vars },
                    Some(rendered),
                ) => found.uses.push(Use {
                    template: template.clone(),
                    rule: rule_plan.rule.clone(),
                    rule_file: rule.file.clone(),
                    label: label.to_string(),
                    event: event.clone(),
                    vars: vars.clone(),
                    rendered: rendered.clone(),
                }),
                (Action::FollowUp { name, data, .. }, _) => {
                    let provider = event.thread.as_ref().map_or("other".to_string(), |t| {
                        crate::events::provider_str(&t.provider).to_string()
                    });
                    follow_ups.insert((provider, name.clone()), data.clone());
                }
                _ => {}
            }
        }
    }
}

/// A daytime (14:00) and a night-time (23:30) instant in the property's timezone.
fn sample_times(property: &PropertyInfo) -> [DateTime<Utc>; 2] {
    let tz = time::parse_tz(&property.timezone).unwrap_or(chrono_tz::Tz::UTC);
    let day = NaiveDate::from_ymd_opt(2024, 7, 3).unwrap_or_default();
    let at = |h, m| {
        time::resolve_local(
            tz,
            day.and_time(NaiveTime::from_hms_opt(h, m, 0).unwrap_or_default()),
        )
    };
    [at(14, 0), at(23, 30)]
}

fn literal_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"\b(?:reply|alert)\s*\(\s*"([^"\\]+)"|\btemplate\s*:\s*"([^"\\]+)""#)
            .unwrap_or_else(|_| unreachable!("static regex"))
    })
}

/// `(line, name)` of every string-literal template name in a rule source (comments skipped).
pub fn literal_templates(source: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (idx, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for cap in literal_regex().captures_iter(code) {
            if let Some(m) = cap.get(1).or_else(|| cap.get(2)) {
                out.push((idx + 1, m.as_str().to_string()));
            }
        }
    }
    out
}

/// Every attachment name a rule writes literally must be a file of `attachments/` (global
/// or a property's) that loaded (readable, within the size limit).
fn check_attachment_literals(content: &Content, templates_dir: &Path, found: &mut Findings) {
    let dir = crate::content::attachments_dir(templates_dir);
    for rule in content.rules.rules() {
        let Ok(source) = std::fs::read_to_string(&rule.file) else {
            continue;
        };
        for (line, name) in literal_attachments(&source) {
            if !content.attachments.exists_anywhere(&name) {
                found.problems.push(RuleProblem::new(
                    &rule.file,
                    Some(line),
                    format!(
                        "attachment `{name}` does not exist or is over the size limit (expected {})",
                        dir.join(&name).display()
                    ),
                ));
                found.bad_rules.insert(rule.file.clone());
            }
        }
    }
}

/// `(line, name)` of every string in an `attachments: [..]` list of a rule source (the
/// list on one line).
pub fn literal_attachments(source: &str) -> Vec<(usize, String)> {
    static LIST: OnceLock<Regex> = OnceLock::new();
    static STRING: OnceLock<Regex> = OnceLock::new();
    let list = LIST
        .get_or_init(|| Regex::new(r#"attachments"?\s*:\s*\[([^\]]*)\]"#).expect("valid regex"));
    let string = STRING.get_or_init(|| Regex::new(r#""([^"]*)""#).expect("valid regex"));
    let mut out = Vec::new();
    for (idx, line) in source.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for cap in list.captures_iter(code) {
            let Some(items) = cap.get(1) else { continue };
            for s in string.captures_iter(items.as_str()) {
                if let Some(m) = s.get(1) {
                    out.push((idx + 1, m.as_str().to_string()));
                }
            }
        }
    }
    out
}

fn missing_template(templates_dir: &Path, name: &str) -> String {
    format!(
        "template `{name}` does not exist (expected {})",
        templates_dir.join(format!("{name}.hbs")).display()
    )
}

fn literal_line(file: &Path, template: &str) -> Option<usize> {
    let source = std::fs::read_to_string(file).ok()?;
    let quoted = format!("\"{template}\"");
    source
        .lines()
        .position(|l| l.contains(&quoted))
        .map(|i| i + 1)
}

/// Problems without duplicates, in the order found.
#[derive(Default)]
struct Problems {
    list: Vec<RuleProblem>,
    seen: BTreeSet<(PathBuf, Option<usize>, String)>,
}

impl Problems {
    fn push(&mut self, p: RuleProblem) {
        // The same failure on many samples is one problem: key on the message without the
        // sample label.
        let key_msg = p
            .message
            .split(" (on sample ")
            .next()
            .unwrap_or(&p.message)
            .split(" (rule ")
            .next()
            .unwrap_or(&p.message)
            .to_string();
        if self.seen.insert((p.file.clone(), p.line, key_msg)) {
            self.list.push(p);
        }
    }

    fn extend(&mut self, ps: impl IntoIterator<Item = RuleProblem>) {
        for p in ps {
            self.push(p);
        }
    }

    fn into_vec(self) -> Vec<RuleProblem> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_literal_template_names_with_lines() {
        let src = "reply(\"faq_wifi\");\n// reply(\"commented\")\nif x { alert( \"inquiry_alert\", #{}); }\nfollow_up(\"q\", minutes(1), #{ template: \"holding\" });\nreply(follow_up.data.template);";
        assert_eq!(
            literal_templates(src),
            [
                (1, "faq_wifi".to_string()),
                (3, "inquiry_alert".to_string()),
                (4, "holding".to_string())
            ]
        );
    }
}
