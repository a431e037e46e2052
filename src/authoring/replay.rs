//! `replay`: re-run rules over stored events, dry, and compare with what the audit log says
//! was done ("what would this rule change have done last week?").
//!
//! Owns reading the stored events back, the comparison (plan lines per event: what the
//! rules would do now against what was done) and its text report. Plans come from
//! [`crate::plan::plan`] with dry-run on, so rendering is the worker's own. It only reads
//! NATS (events and audit streams) and must never act on a plan, write to NATS or call
//! Channex; argument handling and printing stay in the CLI.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use async_nats::jetstream;
use chrono::{DateTime, Utc};

use crate::events::Event;
use crate::plan::rules::{RuleEngine, RuleSet};
use crate::plan::templates::Templates;
use crate::plan::{plan, Content, RulePlan};
use crate::store::audit::{self, ActionKind, AuditFilter, AuditRecord, Outcome, Reason};
use crate::store::nats::{events_stream, read_stored, ReadFrom};

/// One planned action as `rule action(template)`, the unit compared by replay.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct PlanLine {
    pub rule: String,
    pub action: String,
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

impl PlanLine {
    fn label(&self) -> String {
        match &self.template {
            Some(t) => format!("{} {}({t})", self.rule, self.action),
            None => format!("{} {}", self.rule, self.action),
        }
    }

    fn same_action(&self, other: &PlanLine) -> bool {
        self.rule == other.rule && self.action == other.action && self.template == other.template
    }
}

#[derive(Debug, serde::Serialize)]
pub struct ReplayEntry {
    pub event_id: String,
    pub event_type: String,
    pub thread_id: Option<String>,
    pub would: Vec<PlanLine>,
    pub did: Vec<PlanLine>,
    pub changed: bool,
}

/// Read every stored event since `since` (oldest first) with its store time.
pub async fn stored_events(
    js: &jetstream::Context,
    prefix: &str,
    since: DateTime<Utc>,
) -> anyhow::Result<Vec<(Event, DateTime<Utc>)>> {
    let mut out = Vec::new();
    read_stored(
        js,
        &events_stream(prefix),
        &format!("{prefix}.events.>"),
        ReadFrom::Time(since),
        false,
        |msg| {
            match serde_json::from_slice::<Event>(&msg.payload) {
                Ok(ev) => out.push((ev, msg.stored_at)),
                Err(e) => {
                    tracing::warn!(seq = msg.seq, error = %e, "unreadable stored event skipped")
                }
            }
            true
        },
    )
    .await?;
    Ok(out)
}

/// The rules and templates to replay with, and a warning per file left out (it does not
/// compile or parse).
pub fn load_content(
    engine: &RuleEngine,
    rules_dir: &Path,
    templates_dir: &Path,
) -> (Content, Vec<String>) {
    let (content, problems) = crate::content::load_content(engine, rules_dir, templates_dir);
    let mut warnings: Vec<String> = problems
        .rules
        .iter()
        .map(|p| format!("{p} (rule left out of the replay)"))
        .collect();
    warnings.extend(problems.templates.iter().map(ToString::to_string));
    (content, warnings)
}

/// Replays every event stored since `since` (of `property`, if given) against the audit
/// records of the same period.
pub async fn replay_since(
    js: &jetstream::Context,
    prefix: &str,
    engine: &RuleEngine,
    content: &Content,
    since: DateTime<Utc>,
    property: Option<&str>,
) -> anyhow::Result<Vec<ReplayEntry>> {
    let mut events = stored_events(js, prefix, since).await?;
    if let Some(p) = property {
        events.retain(|(e, _)| e.property.id == p);
    }
    let filter = AuditFilter {
        since: Some(since),
        property_id: property.map(str::to_string),
        ..Default::default()
    };
    let records = audit::query(js, prefix, &filter).await?;
    Ok(compare_content(engine, content, &events, &records))
}

/// Re-plan `events` with `rule_set` and `templates` (dry, pure, at each event's store time)
/// and compare with the audit records of what was done.
pub fn compare_replay(
    engine: &RuleEngine,
    rule_set: &RuleSet,
    templates: &Templates,
    events: &[(Event, DateTime<Utc>)],
    audit_records: &[AuditRecord],
) -> Vec<ReplayEntry> {
    let content = Content::new(rule_set.clone(), templates.clone());
    compare_content(engine, &content, events, audit_records)
}

/// [`compare_replay`] with a content snapshot.
pub fn compare_content(
    engine: &RuleEngine,
    content: &Content,
    events: &[(Event, DateTime<Utc>)],
    audit_records: &[AuditRecord],
) -> Vec<ReplayEntry> {
    let mut did_by_event = done_by_event(audit_records);
    // Events the worker skipped as the service's own messages never reach the rules.
    let own_messages: HashSet<&str> = audit_records
        .iter()
        .filter(|r| r.reason == Some(Reason::OwnMessage))
        .filter_map(|r| r.event_id.as_deref())
        .collect();
    events
        .iter()
        .filter(|(event, _)| !own_messages.contains(event.id.as_str()))
        .map(|(event, stored_at)| {
            let plan = plan(engine, content, event, *stored_at, true);
            let would: Vec<PlanLine> = plan.rules.iter().flat_map(would_lines).collect();
            let did = did_by_event.remove(event.id.as_str()).unwrap_or_default();
            let changed = would.len() != did.len()
                || would.iter().any(|w| !did.iter().any(|d| d.same_action(w)));
            ReplayEntry {
                event_id: event.id.clone(),
                event_type: event.event_type.as_str().to_string(),
                thread_id: event.thread_id().map(str::to_string),
                would,
                did,
                changed,
            }
        })
        .collect()
}

/// What the audit log says was done, per event: action records (not rule evaluations, not
/// rejected reloads).
fn done_by_event(audit_records: &[AuditRecord]) -> HashMap<&str, Vec<PlanLine>> {
    let mut did_by_event: HashMap<&str, Vec<PlanLine>> = HashMap::new();
    for r in audit_records {
        let (Some(event_id), Some(rule), Some(action)) = (&r.event_id, &r.rule, r.action.clone())
        else {
            continue;
        };
        if r.outcome == Outcome::RuleRejected || action == ActionKind::Evaluate {
            continue;
        }
        did_by_event.entry(event_id).or_default().push(PlanLine {
            rule: rule.clone(),
            action: action.as_str().to_string(),
            template: r.template.clone(),
            outcome: Some(r.outcome.as_str().to_string()),
            text: r.text.clone(),
        });
    }
    did_by_event
}

/// One rule's part of a re-plan: its error as a `rule_error` line, then its steps (with the
/// rendered text, or the render error, of a reply/alert).
fn would_lines(rule: &RulePlan) -> Vec<PlanLine> {
    let error = rule.error.as_ref().map(|problem| PlanLine {
        rule: rule.rule.clone(),
        action: "rule_error".into(),
        template: None,
        outcome: None,
        text: Some(problem.to_string()),
    });
    let steps = rule.steps.iter().map(|step| PlanLine {
        rule: step.rule.clone(),
        action: step.action.kind().to_string(),
        template: step.template().map(str::to_string),
        outcome: None,
        text: step.rendered.as_ref().map(|r| match r {
            Ok(text) => text.clone(),
            Err(e) => format!("(render error: {e})"),
        }),
    });
    error.into_iter().chain(steps).collect()
}

/// The text report of a replay; with `changes_only`, only events whose plan changed.
pub fn replay_text(entries: &[ReplayEntry], changes_only: bool) -> String {
    let mut out = String::new();
    let changed = entries.iter().filter(|e| e.changed).count();
    for e in entries.iter().filter(|e| e.changed || !changes_only) {
        out.push_str(&format!(
            "{} {} (thread {})\n",
            if e.changed { "≠" } else { "=" },
            e.event_id,
            e.thread_id.as_deref().unwrap_or("-")
        ));
        for w in &e.would {
            let marker = if e.did.iter().any(|d| d.same_action(w)) {
                " "
            } else {
                "+"
            };
            out.push_str(&format!("    would {marker} {}", w.label()));
            if let Some(t) = &w.text {
                out.push_str(&format!(": {}", short(t, 80)));
            }
            out.push('\n');
        }
        for d in &e.did {
            let marker = if e.would.iter().any(|w| w.same_action(d)) {
                " "
            } else {
                "-"
            };
            out.push_str(&format!(
                "    did   {marker} {} → {}\n",
                d.label(),
                d.outcome.as_deref().unwrap_or("-")
            ));
        }
    }
    out.push_str(&format!(
        "\nreplayed {} events: {} unchanged, {} would change (dry-run: nothing was sent)\n",
        entries.len(),
        entries.len() - changed,
        changed
    ));
    out
}

/// `s` on one line (newlines shown as ⏎), cut to `n` characters with an ellipsis.
pub fn short(s: &str, n: usize) -> String {
    // Printed to a terminal: the shared sanitiser keeps an ESC sequence in a guest's text
    // from driving it, and bidi formatting from reordering the line.
    let one_line = s.replace('\n', " ⏎ ");
    crate::base::display::sanitize(&one_line, n, crate::base::display::Lines::Join).into_owned()
}
