//! Planning: what the rules decide for one event, with every reply and alert already
//! rendered — the one place where "evaluate the rules, then render" is written.
//!
//! Owns the content snapshot ([`Content`]: compiled rules + templates, shared as `Arc`s),
//! the [`Plan`] data model and the one pure function [`plan`]. The worker (live events),
//! `rules check`, `rules test` fixtures and `replay` all call [`plan`]; the executor then
//! carries out [`PlanStep`]s and never sees templates or rules.
//!
//! Decided here, once:
//! - the effective dry-run flag of each step (the caller's global / per-property flag OR
//!   the rule's own `// dry_run: true`);
//! - the rendered text of each `reply` / `alert`, or why it could not be rendered (a missing
//!   template, a missing variable, an empty result): a render error is data in the plan,
//!   the executor turns it into a `failed` / `template_error` record.
//!
//! The event is turned into Rhai values once per plan, shared read-only by every rule, and
//! serialised to JSON at most once, when a step has text to render.
//!
//! It must stay pure: no I/O, no NATS, no Channex, no clock of its own (the evaluation time
//! `now` comes from the caller), no audit writing. It is synchronous and CPU-bound for up to
//! the rules' wall-time budget: async callers run it on the planning threads
//! ([`plan_in_pool`], see [`pool`]).

pub mod attachments;
pub mod pool;
pub mod rules;
pub mod templates;
pub mod understand;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::events::Event;
use attachments::{AttachmentError, AttachmentFile, Attachments};
use rules::{Action, EvalContext, EvaluationError, RuleEngine, RuleProblem, RuleSet};
use templates::{TemplateError, Templates};
use understand::{Topics, Understanding};

/// One consistent snapshot of the host's content: the compiled rules, the templates they
/// render and the files replies attach. Cheap to clone and share (`Arc`s); the live
/// reloader publishes a new `Arc<Content>` on every accepted change.
#[derive(Debug, Clone, Default)]
pub struct Content {
    pub rules: Arc<RuleSet>,
    pub templates: Arc<Templates>,
    pub attachments: Arc<Attachments>,
    /// The topic files (`rules/topics/*.toml`) trained into the understanding model.
    pub topics: Arc<Topics>,
}

impl Content {
    /// Rules and templates, no attachments.
    pub fn new(rules: RuleSet, templates: Templates) -> Self {
        Content {
            rules: Arc::new(rules),
            templates: Arc::new(templates),
            attachments: Arc::default(),
            topics: Arc::default(),
        }
    }

    /// The same content with `topics`.
    pub fn with_topics(mut self, topics: Topics) -> Self {
        self.topics = Arc::new(topics);
        self
    }

    /// The same content with `attachments`.
    pub fn with_attachments(mut self, attachments: Attachments) -> Self {
        self.attachments = Arc::new(attachments);
        self
    }
}

/// What the rules decided for one event, in evaluation order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// One entry per rule that ran (disabled rules and rules after a `stop()` are absent).
    pub rules: Vec<RulePlan>,
    /// What the understanding step read in the event's message (events with a guest
    /// message only), computed once here and shared by every rule.
    pub understanding: Option<Arc<Understanding>>,
}

impl Plan {
    /// Every step of every rule, in order.
    pub fn steps(&self) -> impl Iterator<Item = &PlanStep> {
        self.rules.iter().flat_map(|r| r.steps.iter())
    }

    /// The rules that failed.
    pub fn errors(&self) -> impl Iterator<Item = &RulePlan> {
        self.rules.iter().filter(|r| r.error.is_some())
    }
}

/// What one rule planned. A failed rule has `error` set and no steps (its partial actions
/// are discarded).
#[derive(Debug, Clone)]
pub struct RulePlan {
    pub rule: String,
    pub version: String,
    pub error: Option<RuleProblem>,
    /// How long the rule ran (recorded as `duration_ms` of its `rule_error` record).
    pub elapsed: Duration,
    /// The rule called `stop()`: later rules did not run.
    pub stopped: bool,
    pub steps: Vec<PlanStep>,
}

/// One action of the plan, ready to be carried out.
#[derive(Debug, Clone)]
pub struct PlanStep {
    pub rule: String,
    pub version: String,
    /// Position among the rule's actions: part of the action key `event id | rule | index`.
    pub index: usize,
    pub action: Action,
    /// Global / per-property dry-run OR the rule's own: plan and audit, never act.
    pub dry_run: bool,
    /// `reply` / `alert`: the rendered text or why it could not be rendered; `None` for the
    /// actions that have no template.
    pub rendered: Option<Result<String, TemplateError>>,
    /// `reply` with `attachments`: each file as resolved for the event's property (the
    /// override first), or why it cannot be; empty for every other step.
    pub attachments: Vec<Result<AttachmentFile, AttachmentError>>,
    /// Decided here, carried out (as `skipped`) by the executor: why this step must not act.
    pub skip: Option<StepSkip>,
    /// The plan's understanding of the guest message, shared by its steps: the audit
    /// record of each says what was read.
    pub understood: Option<Arc<Understanding>>,
}

/// Why [`plan`] marks a step as not to be carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepSkip {
    /// A `reply` of a `follow_up.due` whose booking (as read when the timer fired) is
    /// cancelled, the follow-up not armed with `#{ on_cancelled: true }`: a stale stay is
    /// never messaged. Alerts and timer actions still run.
    BookingCancelled,
    /// A `reply` of a `follow_up.due` whose booking's dates (as read when the timer fired)
    /// differ from those it was armed with: the stay moved, and the `booking.changed` that
    /// reports it re-arms the timer for the new dates. Never sent at the old time.
    BookingMoved,
}

/// The follow-up data key that lets a stay message go out for a cancelled booking.
pub const ON_CANCELLED: &str = "on_cancelled";

/// Whether `event` is a follow-up of a cancelled booking whose replies must be skipped.
pub fn stale_stay(event: &Event) -> Option<StepSkip> {
    let follow_up = event.follow_up.as_ref()?;
    let booking = event.booking.as_ref()?;
    let allowed = follow_up.data.get(ON_CANCELLED) == Some(&Value::Bool(true));
    if booking.is_cancelled() && !allowed {
        return Some(StepSkip::BookingCancelled);
    }
    let moved = follow_up
        .armed_stay
        .as_ref()
        .is_some_and(|armed| *armed != booking.stay_dates());
    moved.then_some(StepSkip::BookingMoved)
}

impl PlanStep {
    /// The action key claimed in the ledger: `event id | rule | index`.
    pub fn key(&self, event_id: &str) -> String {
        format!("{event_id}|{}|{}", self.rule, self.index)
    }

    /// The template of a `reply` / `alert`.
    pub fn template(&self) -> Option<&str> {
        self.action.template()
    }

    /// The rendered text, if this step has one that rendered.
    pub fn text(&self) -> Option<&str> {
        match &self.rendered {
            Some(Ok(text)) => Some(text),
            _ => None,
        }
    }
}

/// Runs every enabled rule of `content` on `event` at `now` and renders what they plan.
/// `dry_run` is the caller's global / per-property flag; each step's flag adds the rule's own.
/// Pure and total: a rule error or a render error is part of the returned plan.
pub fn plan(
    engine: &RuleEngine,
    content: &Content,
    event: &Event,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Plan {
    let understanding = understand_event(&content.topics, event);
    let evaluation = engine.evaluate_understood(
        &content.rules,
        event,
        &EvalContext { now },
        understanding.as_deref(),
    );
    let stale = stale_stay(event);
    // Serialised for templates only, once, and only when a step has text to render.
    let event_json = std::cell::OnceCell::new();
    let rules = evaluation
        .rules
        .into_iter()
        .map(|outcome| {
            let step_dry_run = dry_run || outcome.dry_run;
            let steps = outcome
                .actions
                .into_iter()
                .enumerate()
                .map(|(index, action)| {
                    let rendered = render_action(&content.templates, event, &event_json, &action);
                    let attachments = attachments_of(&content.attachments, event, &action);
                    let skip = matches!(action, Action::Reply { .. })
                        .then_some(stale)
                        .flatten();
                    PlanStep {
                        rule: outcome.rule.clone(),
                        version: outcome.version.clone(),
                        index,
                        action,
                        dry_run: step_dry_run,
                        rendered,
                        attachments,
                        skip,
                        understood: understanding.clone(),
                    }
                })
                .collect();
            RulePlan {
                rule: outcome.rule,
                version: outcome.version,
                error: outcome.error,
                elapsed: outcome.elapsed,
                stopped: outcome.stopped,
                steps,
            }
        })
        .collect();
    Plan {
        rules,
        understanding,
    }
}

/// The understanding of the event's guest message in the thread's language, or `None`
/// for events without one (ticks, timers, staff messages).
pub fn understand_event(topics: &Topics, event: &Event) -> Option<Arc<Understanding>> {
    let message = event.message.as_ref()?;
    if message.sender != crate::events::Sender::Guest || message.text.trim().is_empty() {
        return None;
    }
    let language = message
        .language
        .as_deref()
        .or_else(|| event.thread.as_ref().and_then(|t| t.language.as_deref()));
    Some(Arc::new(topics.understand(&message.text, language)))
}

/// [`plan`] on the planning threads ([`pool`]), so a rule burning its wall-time budget never
/// holds an async worker thread (heartbeats, leases and other events keep running).
pub async fn plan_in_pool(
    engine: &Arc<RuleEngine>,
    content: &Arc<Content>,
    event: &Event,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<Plan, EvaluationError> {
    let (engine, content, event) = (engine.clone(), content.clone(), event.clone());
    pool::run(move || plan(&engine, &content, &event, now, dry_run))
        .await
        .map_err(|pool::PoolError::Interrupted(e)| EvaluationError::Interrupted(e))
}

/// The event as the JSON object templates see (serialised at most once per plan).
pub(crate) fn event_json(event: &Event) -> Map<String, Value> {
    match serde_json::to_value(event) {
        Ok(Value::Object(map)) => map,
        Ok(_) => Map::new(),
        Err(e) => {
            // Cannot happen for the Event type; keep going with an empty map and say so.
            tracing::error!(error = %e, "event could not be serialised for rules/templates");
            Map::new()
        }
    }
}

/// The files a `reply` attaches, resolved for the event's property.
fn attachments_of(
    attachments: &Attachments,
    event: &Event,
    action: &Action,
) -> Vec<Result<AttachmentFile, AttachmentError>> {
    match action {
        Action::Reply {
            attachments: names, ..
        } => names
            .iter()
            .map(|n| attachments.get(n, &event.property.id))
            .collect(),
        _ => Vec::new(),
    }
}

fn render_action(
    templates: &Templates,
    event: &Event,
    event_json: &std::cell::OnceCell<Map<String, Value>>,
    action: &Action,
) -> Option<Result<String, TemplateError>> {
    match action {
        Action::Reply { template, vars, .. } | Action::Alert { template, vars } => {
            let json = event_json.get_or_init(|| crate::plan::event_json(event));
            Some(templates.render_json(template, event, json, vars))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use templates::TemplateSource;

    fn event() -> Event {
        serde_json::from_value(serde_json::json!({
            "id": "e1", "type": "thread.new_message", "occurred_at": "2024-07-01T12:00:00Z",
            "property": {"id": "p1", "timezone": "Europe/Lisbon", "vars": {"wifi": "casa"}},
            "thread": {"id": "t1", "provider": "booking_com"},
            "message": {"id": "m1", "text": "wifi?", "sender": "guest",
                        "inserted_at": "2024-07-01T12:00:00Z"}
        }))
        .expect("event")
    }

    fn content(rules: &[(&str, &str)], templates: &[(&str, &str)]) -> Content {
        let engine = RuleEngine::default();
        let compiled = rules
            .iter()
            .map(|(file, src)| {
                Arc::new(
                    engine
                        .compile_source(Path::new(file), src)
                        .expect("compiles"),
                )
            })
            .collect();
        let sources = templates
            .iter()
            .map(|(name, text)| TemplateSource {
                name: name.to_string(),
                property_id: None,
                language: None,
                file: format!("templates/{name}.hbs").into(),
                bytes: Ok(text.as_bytes().to_vec()),
            })
            .collect();
        let (t, problems) = Templates::from_sources(sources);
        assert!(problems.is_empty(), "{problems:?}");
        Content::new(RuleSet::new(compiled), t)
    }

    fn now() -> DateTime<Utc> {
        "2024-07-01T12:00:00Z".parse().expect("time")
    }

    #[test]
    fn steps_carry_rendered_text_or_the_render_error() {
        let content = content(
            &[(
                "10_faq.rhai",
                "reply(\"wifi\");\nalert(\"broken\");\nclose_thread();\n",
            )],
            &[("wifi", "Wifi: {{vars.wifi}}"), ("broken", "{{vars.nope}}")],
        );
        let plan = plan(&RuleEngine::default(), &content, &event(), now(), false);
        let steps: Vec<_> = plan.steps().collect();
        assert_eq!(steps.len(), 3);
        assert_eq!(steps[0].text(), Some("Wifi: casa"));
        assert_eq!(steps[0].key("e1"), "e1|10_faq|0");
        let err = steps[1]
            .rendered
            .as_ref()
            .and_then(|r| r.as_ref().err())
            .expect("render error");
        assert!(err.to_string().contains("missing variable"), "{err}");
        assert!(steps[2].rendered.is_none());
        assert!(steps.iter().all(|s| !s.dry_run));
    }

    #[test]
    fn a_follow_up_of_a_cancelled_booking_skips_its_replies_unless_armed_for_it() {
        let content = content(
            &[("70_stay.rhai", "reply(\"wifi\");\nalert(\"wifi\");\n")],
            &[("wifi", "Wifi: {{vars.wifi}}")],
        );
        let due = |status: &str, data: Value| -> Event {
            serde_json::from_value(serde_json::json!({
                "id": "f1", "type": "follow_up.due", "occurred_at": "2024-07-01T12:00:00Z",
                "property": {"id": "p1", "vars": {"wifi": "casa"}},
                "follow_up": {"name": "checkin", "due_at": "2024-07-01T12:00:00Z", "data": data},
                "booking": {"id": "b1", "status": status, "arrival_date": "2024-07-02",
                            "departure_date": "2024-07-04"}
            }))
            .expect("event")
        };
        let skips = |e: &Event| {
            plan(&RuleEngine::default(), &content, e, now(), false)
                .steps()
                .map(|s| s.skip)
                .collect::<Vec<_>>()
        };
        let empty = serde_json::json!({});
        assert_eq!(
            skips(&due("cancelled", empty.clone())),
            [Some(StepSkip::BookingCancelled), None]
        );
        assert_eq!(skips(&due("modified", empty)), [None, None]);
        let allowed = serde_json::json!({ "on_cancelled": true });
        assert_eq!(skips(&due("cancelled", allowed)), [None, None]);
    }

    #[test]
    fn a_follow_up_of_a_moved_stay_skips_its_replies() {
        let event = |arrival: &str| -> Event {
            serde_json::from_value(serde_json::json!({
                "id": "f1", "type": "follow_up.due", "occurred_at": "2024-07-01T12:00:00Z",
                "property": {"id": "p1"},
                "follow_up": {"name": "checkin", "due_at": "2024-07-01T12:00:00Z",
                              "armed_stay": {"arrival_date": "2024-07-02",
                                             "departure_date": "2024-07-04"}},
                "booking": {"id": "b1", "status": "modified", "arrival_date": arrival,
                            "departure_date": "2024-07-04"}
            }))
            .expect("event")
        };
        assert_eq!(
            stale_stay(&event("2024-07-20")),
            Some(StepSkip::BookingMoved)
        );
        assert_eq!(stale_stay(&event("2024-07-02")), None);
    }

    #[test]
    fn dry_run_is_the_callers_flag_or_the_rules_own() {
        let content = content(
            &[
                ("10_dry.rhai", "// dry_run: true\nclose_thread();\n"),
                ("20_live.rhai", "close_thread();\n"),
            ],
            &[],
        );
        let engine = RuleEngine::default();
        let flags = |global| {
            plan(&engine, &content, &event(), now(), global)
                .steps()
                .map(|s| s.dry_run)
                .collect::<Vec<_>>()
        };
        assert_eq!(flags(false), [true, false]);
        assert_eq!(flags(true), [true, true]);
    }

    #[test]
    fn a_rule_error_is_part_of_the_plan_and_later_rules_still_run() {
        let content = content(
            &[
                ("10_bad.rhai", "close_thread();\nlet x = 1 / 0;\n"),
                ("20_ok.rhai", "close_thread();\n"),
            ],
            &[],
        );
        let plan = plan(&RuleEngine::default(), &content, &event(), now(), false);
        assert_eq!(plan.rules.len(), 2);
        assert!(plan.rules[0].error.is_some());
        assert!(plan.rules[0].steps.is_empty());
        assert_eq!(plan.errors().count(), 1);
        assert_eq!(plan.rules[1].steps.len(), 1);
    }
}
