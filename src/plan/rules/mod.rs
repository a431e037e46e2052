//! Rules: compile and run the host's Rhai rule sources; an event in, the rules' actions out.
//!
//! Owns the rule data model ([`Action`], [`CompiledRule`], [`RuleSet`], [`RuleProblem`]) and
//! the sandboxed [`RuleEngine`]. Callers do not evaluate rules directly to act on them: they
//! go through [`crate::plan::plan`], which also renders the templates and decides dry-run.
//! Reading rule files and live reload live in `content`, `rules check` / `rules test` in
//! `authoring`.
//!
//! It must stay pure: no NATS, no HTTP, no file I/O, no clock of its own (the evaluation
//! time comes in through [`EvalContext`]), no audit writing. Whatever acts on a plan lives
//! in `executor`. Evaluation is total: every registered function checks its input (no
//! chrono overflow panics), helpers keep to the wall-time budget, and a panic anyway becomes
//! that rule's error. Async callers evaluate on the planning threads
//! ([`RuleEngine::evaluate_in_pool`], [`crate::plan::pool`]).
//!
//! # Rule files
//!
//! `rules/*.rhai`, evaluated in file-name order (`10_faq.rhai` before `20_thanks.rhai`).
//! Metadata is an optional comment header at the very top of the file (only leading `//`
//! comment lines and blank lines are read; the first code line ends the header):
//!
//! ```text
//! // name: FAQ auto-replies
//! // description: answers wifi / check-in / parking questions from property vars
//! // enabled: true        (default true; false = the rule is not run at all)
//! // dry_run: false       (default false; true = planned and audited, never executed)
//! ```
//!
//! See [`api`] for the functions a rule can call and the variables it sees.

pub mod api;
pub(crate) mod engine;
mod meta;
mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::base::diagnostics::SourceProblem;

pub use engine::{EvaluationError, RuleEngine};

/// One step of an action plan. Serialised as `{"action":"reply","template":"wifi","vars":{..}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Reply {
        template: String,
        #[serde(default)]
        vars: Map<String, Value>,
        /// File names from `attachments/` sent after the text, in order (the rule's
        /// `#{ attachments: [..] }`; not a template variable).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<String>,
    },
    NoReplyNeeded,
    CloseThread,
    Alert {
        template: String,
        #[serde(default)]
        vars: Map<String, Value>,
    },
    FollowUp {
        name: String,
        due_at: DateTime<Utc>,
        #[serde(default)]
        data: Map<String, Value>,
    },
    CancelFollowUp {
        name: String,
    },
    /// Every timer of this thread and of its booking (or of the booking of a threadless
    /// event): the stay was cancelled, or the rule re-plans everything.
    CancelAllFollowUps,
    /// The rule decided this message gets no automatic answer, and says why: audited as
    /// `skipped` / `not_answered`, so a host can see why a guest got nothing.
    NoAnswer {
        reason: String,
    },
}

impl Action {
    /// The `action` tag: `reply`, `no_reply_needed`, `close_thread`, `alert`, `follow_up`,
    /// `cancel_follow_up`.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Reply { .. } => "reply",
            Action::NoReplyNeeded => "no_reply_needed",
            Action::CloseThread => "close_thread",
            Action::Alert { .. } => "alert",
            Action::FollowUp { .. } => "follow_up",
            Action::CancelFollowUp { .. } => "cancel_follow_up",
            Action::CancelAllFollowUps => "cancel_all_follow_ups",
            Action::NoAnswer { .. } => "no_answer",
        }
    }

    /// The template this action renders, if any (`reply`, `alert`).
    pub fn template(&self) -> Option<&str> {
        match self {
            Action::Reply { template, .. } | Action::Alert { template, .. } => Some(template),
            _ => None,
        }
    }
}

/// Metadata from the comment header of a rule file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMeta {
    /// `// name:`; defaults to the file stem.
    pub name: String,
    /// `// enabled:`; default `true`. A disabled rule is not run.
    pub enabled: bool,
    /// `// dry_run:`; default `false`. The executor plans and audits but does not act.
    pub dry_run: bool,
    /// `// description:`; default empty.
    pub description: String,
}

/// A rule file compiled once; shared behind an `Arc` by every evaluation.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub file: PathBuf,
    /// The file stem, e.g. `10_faq`: the rule's identity in plans, audit and fixtures.
    pub name: String,
    /// Short sha256 (12 hex digits) of the file content.
    pub version: String,
    pub meta: RuleMeta,
    ast: Arc<rhai::AST>,
}

impl CompiledRule {
    pub(crate) fn ast(&self) -> &rhai::AST {
        &self.ast
    }
}

/// The rules in file-name order. Cheap to clone (a vector of `Arc`s).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Arc<CompiledRule>>,
}

impl RuleSet {
    /// Builds a set; the rules are sorted by file name (the evaluation order).
    pub fn new(mut rules: Vec<Arc<CompiledRule>>) -> Self {
        rules.sort_by(|a, b| a.file.file_name().cmp(&b.file.file_name()));
        RuleSet { rules }
    }

    pub fn rules(&self) -> &[Arc<CompiledRule>] {
        &self.rules
    }

    pub fn get(&self, name: &str) -> Option<&Arc<CompiledRule>> {
        self.rules.iter().find(|r| r.name == name)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

/// A problem with a rule file (compile error, runtime error, limit hit, bad metadata): the
/// one [`SourceProblem`] of `base`, displayed as `file:line: message`.
pub type RuleProblem = SourceProblem;

/// Sandbox limits applied to every rule evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleLimits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub max_wall_time: Duration,
}

impl Default for RuleLimits {
    fn default() -> Self {
        RuleLimits {
            max_operations: 100_000,
            max_call_levels: 32,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 10_000,
            max_wall_time: Duration::from_millis(50),
        }
    }
}

/// What the caller hands in: the evaluation time (`now()` in rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalContext {
    pub now: DateTime<Utc>,
}

/// The result of running a [`RuleSet`] on one event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// One per rule that ran (disabled rules and rules after a `stop()` are absent), in order.
    pub rules: Vec<RuleOutcome>,
}

impl Evaluation {
    /// Every action of every rule that succeeded, in order, with the rule that planned it.
    pub fn actions(&self) -> impl Iterator<Item = (&RuleOutcome, &Action)> {
        self.rules
            .iter()
            .flat_map(|o| o.actions.iter().map(move |a| (o, a)))
    }

    /// The outcomes that failed.
    pub fn errors(&self) -> impl Iterator<Item = &RuleOutcome> {
        self.rules.iter().filter(|o| o.error.is_some())
    }
}

/// What one rule did with one event. A failed rule has `error` set and no actions (its
/// partial actions are discarded).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleOutcome {
    pub rule: String,
    pub version: String,
    pub dry_run: bool,
    pub actions: Vec<Action>,
    pub error: Option<RuleProblem>,
    /// The rule called `stop()`: later rules did not run.
    pub stopped: bool,
    pub elapsed: Duration,
}
