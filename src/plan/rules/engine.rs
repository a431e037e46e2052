//! The sandboxed Rhai engine: compiles rule files once and evaluates a [`RuleSet`] against an
//! event.
//!
//! Owns the sandbox (limits, no `eval`, no modules/imports, no clock, print/debug to
//! tracing, strict variables) and the mapping of Rhai errors to [`RuleProblem`]s with file
//! and line. It must not do I/O (it compiles the sources it is given; `content` reads the
//! rule files) and must never act on a plan.

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono_tz::Tz;
use rhai::packages::{
    BasicArrayPackage, BasicMapPackage, BasicMathPackage, BitFieldPackage, CorePackage,
    LogicPackage, MoreStringPackage, Package,
};
use rhai::{Dynamic, Engine, EvalAltResult, Map as RMap, Position, Scope};

use super::api::{self, CallGuard, CallState, RegexCache, WordsCache};
use super::source;
use super::{
    meta, CompiledRule, EvalContext, Evaluation, RuleLimits, RuleOutcome, RuleProblem, RuleSet,
};
use crate::base::diagnostics::{content_version, panic_text};
use crate::events::Event;
use crate::plan::understand::Understanding;

/// Scope variables every rule sees (see [`api`]).
/// `thread` is reserved in Rhai: rule sources are rewritten to use an alias (see [`source`]).
const SCOPE_VARS: [&str; 6] = [
    "event",
    source::THREAD_ALIAS,
    "message",
    "inquiry",
    "property",
    "booking",
];

/// One per process; `Send + Sync`, shared behind an `Arc`.
pub struct RuleEngine {
    engine: Engine,
    limits: RuleLimits,
}

impl std::fmt::Debug for RuleEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleEngine")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Default for RuleEngine {
    fn default() -> Self {
        RuleEngine::new(RuleLimits::default())
    }
}

impl RuleEngine {
    pub fn new(limits: RuleLimits) -> Self {
        let mut engine = Engine::new_raw();
        // The standard library minus BasicTimePackage (`timestamp()` would read the clock)
        // and the blob package (rules have no use for binary data).
        for module in [
            CorePackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ] {
            engine.register_global_module(module);
        }
        engine
            .set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new())
            .set_strict_variables(true)
            .set_max_operations(limits.max_operations)
            .set_max_call_levels(limits.max_call_levels)
            .set_max_string_size(limits.max_string_size)
            .set_max_array_size(limits.max_array_size)
            .set_max_map_size(limits.max_map_size)
            .set_max_modules(0)
            .disable_symbol("eval")
            .on_print(|s| tracing::info!(target: "concierge::rules", "rule print: {s}"))
            .on_debug(|s, src, pos| {
                tracing::debug!(target: "concierge::rules", source = src.unwrap_or(""), %pos, "rule debug: {s}")
            })
            .on_progress(|ops| {
                if ops % 256 == 0 && api::past_deadline() {
                    Some(Dynamic::from(api::WALL_TIME_MARKER))
                } else {
                    None
                }
            });
        api::register(
            &mut engine,
            Arc::new(RegexCache::default()),
            Arc::new(WordsCache::default()),
        );
        RuleEngine { engine, limits }
    }

    pub fn limits(&self) -> RuleLimits {
        self.limits
    }

    /// Compiles a rule from its source text; `file` is used for its name and for problems.
    pub fn compile_source(&self, file: &Path, source: &str) -> Result<CompiledRule, RuleProblem> {
        let stem = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let meta = meta::parse_header(file, &stem, source)?;
        let mut scope = Scope::new();
        for var in SCOPE_VARS {
            // Plain variables, not constants: constants would be folded into the AST.
            scope.push(var, RMap::new());
        }
        let prepared = source::prepare(source);
        let mut ast = self
            .engine
            .compile_with_scope(&scope, prepared.as_ref())
            .map_err(|e| RuleProblem::new(file, line_of(e.1), source::unalias(&e.0.to_string())))?;
        ast.set_source(file.display().to_string());
        Ok(CompiledRule {
            file: file.to_path_buf(),
            name: stem,
            version: content_version(source.as_bytes()),
            meta,
            ast: Arc::new(ast),
        })
    }

    /// Runs every enabled rule, in order, on `event`. A rule that fails (runtime error,
    /// operation limit, wall time, even a panic inside a helper) gets an `error` and no
    /// actions; the others still run. A rule that calls `stop()` keeps its actions and ends
    /// the evaluation. Synchronous and CPU-bound for up to the wall-time budget per rule: from
    /// async code use [`RuleEngine::evaluate_in_pool`].
    pub fn evaluate(&self, rules: &RuleSet, event: &Event, ctx: &EvalContext) -> Evaluation {
        self.evaluate_understood(rules, event, ctx, None)
    }

    /// [`RuleEngine::evaluate`] with what the understanding step read in the event's
    /// message: rules see it as `message.understood` and through `asks(topic)`.
    pub fn evaluate_understood(
        &self,
        rules: &RuleSet,
        event: &Event,
        ctx: &EvalContext,
        understanding: Option<&Understanding>,
    ) -> Evaluation {
        let tz = crate::base::time::parse_tz(&event.property.timezone).unwrap_or_else(|| {
            tracing::warn!(
                property = %event.property.id,
                timezone = %event.property.timezone,
                "unknown property timezone; rules use UTC"
            );
            Tz::UTC
        });
        let mut scope = rule_scope(event, understanding);
        let guard = CallGuard::install(CallState {
            now: ctx.now,
            tz,
            understanding: understanding.cloned(),
            actions: Vec::new(),
            stopped: false,
            deadline: Instant::now() + self.limits.max_wall_time,
        });
        let mut outcomes = Vec::with_capacity(rules.len());
        for rule in rules.rules() {
            if !rule.meta.enabled {
                continue;
            }
            let outcome = self.run_rule(rule, &mut scope, (event, understanding), &guard);
            let stopped = outcome.stopped;
            outcomes.push(outcome);
            if stopped {
                break;
            }
        }
        drop(guard);
        Evaluation { rules: outcomes }
    }

    /// [`RuleEngine::evaluate`] on the planning threads ([`crate::plan::pool`]), so a rule
    /// burning its budget never holds an async worker thread (heartbeats, leases and other
    /// events keep running).
    pub async fn evaluate_in_pool(
        self: &Arc<Self>,
        rules: &RuleSet,
        event: &Event,
        ctx: &EvalContext,
    ) -> Result<Evaluation, EvaluationError> {
        let (engine, rules, event, ctx) = (self.clone(), rules.clone(), event.clone(), *ctx);
        crate::plan::pool::run(move || engine.evaluate(&rules, &event, &ctx))
            .await
            .map_err(|crate::plan::pool::PoolError::Interrupted(e)| EvaluationError::Interrupted(e))
    }

    /// One rule on the evaluation's scope. A panic inside it (a bug in a helper or in Rhai)
    /// is caught here and becomes this rule's error: the evaluation goes on.
    fn run_rule(
        &self,
        rule: &CompiledRule,
        scope: &mut Scope<'static>,
        (event, understanding): (&Event, Option<&Understanding>),
        guard: &CallGuard,
    ) -> RuleOutcome {
        let started = Instant::now();
        guard.begin_rule(started + self.limits.max_wall_time);
        // The engine is only read during a run and the per-rule state is reset by
        // begin_rule, so nothing a panic interrupted is observed afterwards.
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            self.engine.run_ast_with_scope(scope, rule.ast())
        }));
        // The event's variables are constants, which no rule can change: dropping what the
        // rule declared leaves the scope as the next rule must find it. After a panic the
        // scope is rebuilt, as nothing about its state can be assumed.
        if result.is_ok() {
            scope.rewind(SCOPE_VARS.len());
        } else {
            *scope = rule_scope(event, understanding);
        }
        let (actions, stop_called) = guard.end_rule();
        let (actions, error, stopped) = match result {
            Ok(Ok(())) => (actions, None, stop_called),
            Ok(Err(e)) if stop_called && is_stop(&e) => (actions, None, true),
            Ok(Err(e)) => (Vec::new(), Some(self.problem(&rule.file, *e)), false),
            Err(payload) => {
                let message = format!(
                    "internal error in a rule function: {}",
                    panic_text(&*payload)
                );
                (
                    Vec::new(),
                    Some(RuleProblem::new(&rule.file, None, message)),
                    false,
                )
            }
        };
        RuleOutcome {
            rule: rule.name.clone(),
            version: rule.version.clone(),
            dry_run: rule.meta.dry_run,
            actions,
            error,
            stopped,
            elapsed: started.elapsed(),
        }
    }

    /// A runtime error as `file:line: message`, using the innermost position (inside a
    /// script function when the error happened there).
    fn problem(&self, file: &Path, err: EvalAltResult) -> RuleProblem {
        let mut inner = err;
        let mut calls = Vec::new();
        while let EvalAltResult::ErrorInFunctionCall(name, _, e, pos) = inner {
            calls.push((name, pos));
            inner = *e;
        }
        let line = line_of(inner.position()).or_else(|| calls.first().and_then(|c| line_of(c.1)));
        let mut message = self.limit_message(&inner).unwrap_or_else(|| {
            inner.clear_position();
            inner.to_string()
        });
        for (name, pos) in &calls {
            match pos.line() {
                Some(l) => message.push_str(&format!(" (in function '{name}' called at line {l})")),
                None => message.push_str(&format!(" (in function '{name}')")),
            }
        }
        RuleProblem::new(file, line, source::unalias(&message))
    }

    /// Sandbox limits in the host's words, naming the limit (Rhai says "Stack overflow" for
    /// the call depth and "Too many modules imported" for `import`).
    fn limit_message(&self, err: &EvalAltResult) -> Option<String> {
        let l = &self.limits;
        Some(match err {
            EvalAltResult::ErrorTerminated(v, _) if is_marker(v, api::WALL_TIME_MARKER) => {
                format!(
                    "wall-time limit of {} ms exceeded",
                    l.max_wall_time.as_millis()
                )
            }
            EvalAltResult::ErrorTooManyOperations(_) => {
                format!(
                    "operation limit of {} exceeded (endless loop?)",
                    l.max_operations
                )
            }
            EvalAltResult::ErrorStackOverflow(_) => {
                format!(
                    "call depth limit {} exceeded (endless recursion?)",
                    l.max_call_levels
                )
            }
            EvalAltResult::ErrorTooManyModules(_) | EvalAltResult::ErrorModuleNotFound(..) => {
                "modules are not available in rules (`import` is not allowed)".to_string()
            }
            EvalAltResult::ErrorDataTooLarge(what, _) => match what.as_str() {
                "Length of string" => {
                    format!("string size limit of {} bytes exceeded", l.max_string_size)
                }
                "Size of array/BLOB" => {
                    format!("array size limit of {} items exceeded", l.max_array_size)
                }
                "Size of object map" => {
                    format!("map size limit of {} entries exceeded", l.max_map_size)
                }
                other => format!("size limit exceeded: {other} too large"),
            },
            _ => return None,
        })
    }
}

/// Why [`RuleEngine::evaluate_in_pool`] has no evaluation to give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvaluationError {
    /// The planning job panicked (outside any rule) or the planning threads are gone.
    #[error("rule evaluation did not finish: {0}")]
    Interrupted(String),
}

/// The scope every rule of one evaluation runs in: the event's maps, in [`SCOPE_VARS`] order,
/// as constants, so a rule that assigns to one (`message.text = ..`, `property.vars.clear()`)
/// fails with an error naming the constant, and the next rule reuses the same values without
/// a copy. Built straight from the event (no JSON value in between).
fn rule_scope(event: &Event, understanding: Option<&Understanding>) -> Scope<'static> {
    let event_map = match rhai::serde::to_dynamic(event) {
        Ok(d) => d.try_cast::<RMap>().unwrap_or_default(),
        Err(e) => {
            // Cannot happen for the Event type; keep going with an empty map and say so.
            tracing::error!(error = %e, "event could not be converted for rules");
            RMap::new()
        }
    };
    let block = |key: &str| -> Dynamic {
        let map = event_map
            .get(key)
            .and_then(|d| d.clone().try_cast::<RMap>())
            .unwrap_or_default();
        Dynamic::from_map(map)
    };
    let [thread, mut message, inquiry, property, booking] =
        ["thread", "message", "inquiry", "property", "booking"].map(block);
    if let Some(understood) = understanding.and_then(understood_map) {
        if let Some(mut map) = message.clone().try_cast::<RMap>() {
            map.insert("understood".into(), understood);
            message = Dynamic::from_map(map);
        }
    }
    let blocks = [
        Dynamic::from_map(event_map),
        thread,
        message,
        inquiry,
        property,
        booking,
    ];
    let mut scope = Scope::with_capacity(SCOPE_VARS.len() + 8);
    for (name, value) in SCOPE_VARS.into_iter().zip(blocks) {
        scope.push_constant_dynamic(name, value);
    }
    scope
}

/// `message.understood`: the understanding as a Rhai map, with `summary` added.
fn understood_map(understanding: &Understanding) -> Option<Dynamic> {
    let mut map = rhai::serde::to_dynamic(understanding)
        .ok()?
        .try_cast::<RMap>()?;
    map.insert("summary".into(), understanding.summary().into());
    Some(Dynamic::from_map(map))
}

fn is_marker(v: &Dynamic, marker: &str) -> bool {
    v.read_lock::<rhai::ImmutableString>()
        .is_some_and(|s| s.as_str() == marker)
}

fn is_stop(err: &EvalAltResult) -> bool {
    match err {
        EvalAltResult::ErrorTerminated(v, _) => is_marker(v, api::STOP_MARKER),
        EvalAltResult::ErrorInFunctionCall(_, _, e, _) => is_stop(e),
        _ => false,
    }
}

fn line_of(pos: Position) -> Option<usize> {
    pos.line()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_inside_a_rule_function_is_that_rules_error_and_later_rules_run() {
        let mut engine = RuleEngine::default();
        // Stands in for a bug in a helper or in Rhai.
        engine
            .engine
            .register_fn("boom", || -> bool { panic!("helper bug") });
        let compile = |file: &str, src: &str| {
            Arc::new(
                engine
                    .compile_source(Path::new(file), src)
                    .expect("compiles"),
            )
        };
        let set = RuleSet::new(vec![
            compile(
                "10_boom.rhai",
                "reply(\"lost\");\nif boom() { reply(\"x\"); }\n",
            ),
            compile("20_ok.rhai", "reply(\"ok\");\n"),
        ]);
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "e1", "type": "schedule.tick", "occurred_at": "2024-07-01T03:00:00Z",
            "property": {"id": "p1", "timezone": "Europe/Lisbon"}, "schedule": {"name": "daily"}
        }))
        .expect("event");
        let now = "2024-07-01T03:00:00Z".parse().expect("time");
        let e = engine.evaluate(&set, &event, &EvalContext { now });
        assert_eq!(e.rules.len(), 2);
        let problem = e.rules[0].error.as_ref().expect("the panic is an error");
        assert!(
            problem
                .message
                .contains("internal error in a rule function: helper bug"),
            "{problem}"
        );
        assert!(e.rules[0].actions.is_empty());
        assert_eq!(e.rules[1].actions.len(), 1);
        assert!(e.rules[1].error.is_none());
    }
}
