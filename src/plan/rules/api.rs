//! The Rhai API rules are written against: scope variables, action functions and helpers,
//! registered once on the shared [`RuleEngine`](super::RuleEngine).
//!
//! It must not do I/O or read the clock: `now()` and the property timezone come from the
//! per-call state installed by the engine for the duration of one evaluation.
//!
//! # Variables
//! `event` (the whole event as a map), and shortcuts `thread`, `message`, `inquiry`,
//! `property`, `booking` (each an empty map when the event has no such block, so
//! `message.sender == "guest"` is safe everywhere; a missing key reads as `()`). The
//! follow-up block is `event.follow_up`, the schedule block `event.schedule`.
//! (`thread` is a reserved word in Rhai; the loader rewrites it transparently, see
//! `rules::source`, so `thread.provider`, `event.thread` and `#{thread: ..}` all work.)
//! **Timestamps in these maps stay strings** (as in the event JSON): call `parse_time(s)` to
//! get a `Time`.
//! **These variables are read-only constants**, built once per event and shared by all rules
//! without a copy: changing one in place (`message.text = ..`, `property.vars.clear()`) is a
//! runtime error ("Cannot modify constant message") that fails that rule alone. A copy is the
//! rule's own (`let vars = property.vars; vars.x = 1;`, or a function argument).
//!
//! # Actions (collected in order; discarded if the rule later fails)
//! `reply(template [, vars])`, `no_reply_needed()`, `close_thread()`,
//! `alert(template [, vars])`, `follow_up(name, when [, data])` (`when` is a `Time`, or a
//! `Duration` counted from `now()`), `cancel_follow_up(name)`, `cancel_all_follow_ups()`
//! (every timer of this thread and of its booking), `stop()` (ends this rule
//! here, keeping its actions, and no later rule runs for this event).
//!
//! # Helpers
//! - `contains_any(text, ["wifi", "wi-fi"])`: case-insensitive whole-word/phrase match (an
//!   optional plural `s` is allowed: `"key"` matches `"Keys?"`); `()` text is `false`.
//! - `matches(text, regex)`: Rust `regex` syntax, compiled once and cached; use `(?i)` for
//!   case-insensitive; `()` text is `false`.
//! - `now()`, `parse_time(s)`, `seconds(n)`, `minutes(n)`, `hours(n)`, `days(n)`;
//!   `Time ± Duration`, `Time - Time -> Duration`, `Duration ± Duration`, `Duration * n`,
//!   comparisons of two `Time`s or two `Duration`s; `t.unix`, `d.seconds`, `d.minutes`,
//!   `d.hours`, `d.days` (whole units); `to_string()` gives RFC 3339 / `1h30m`.
//! - `local_time(t [, tz])`: map `#{year, month, day, hour, minute, second, weekday (1=Mon..7),
//!   date: "YYYY-MM-DD", time: "HH:MM", offset: "+01:00"}` in the property's timezone.
//! - `at_local(t, "08:00" [, tz])`: the first instant at/after `t` when the property's wall
//!   clock reads 08:00 (DST-aware).
//! - `within_local_hours(t, "22:00", "08:00")`: wall clock of `t` inside the window (wraps
//!   midnight).
//! - `format_time(t, "%H:%M %d %b")`: strftime in the property's timezone.
//!
//! Maps passed as `vars`/`data` become JSON; a `Time` inside becomes an RFC 3339 string and a
//! `Duration` its whole seconds.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use regex::Regex;
use rhai::{Array, Dynamic, Engine, EvalAltResult, ImmutableString, Map as RMap, Position, INT};
use serde_json::{Map, Number, Value};

use super::Action;
use crate::base::time::{self, RuleDuration, RuleTime};
use crate::plan::understand::Understanding;

type RResult<T> = Result<T, Box<EvalAltResult>>;

/// Marker value carried by the `ErrorTerminated` that `stop()` raises.
pub(crate) const STOP_MARKER: &str = "concierge:stop";
/// Marker value carried by the `ErrorTerminated` raised when the wall-time limit is hit.
pub(crate) const WALL_TIME_MARKER: &str = "concierge:wall_time";

/// Per-evaluation state. Rhai's engine is shared, so the actions of the running rule live in
/// a thread-local slot installed by [`CallGuard`] for the duration of one `evaluate` call
/// (evaluation is synchronous, so the slot cannot be observed by another event).
pub(crate) struct CallState {
    pub now: DateTime<Utc>,
    pub tz: Tz,
    /// What the understanding step read in the event's guest message (`asks(..)`).
    pub understanding: Option<Understanding>,
    pub actions: Vec<Action>,
    pub stopped: bool,
    pub deadline: Instant,
}

thread_local! {
    static CALL: RefCell<Option<CallState>> = const { RefCell::new(None) };
}

/// Installs a [`CallState`] for this thread and restores the previous one when dropped.
pub(crate) struct CallGuard {
    previous: Option<CallState>,
}

impl CallGuard {
    pub fn install(state: CallState) -> Self {
        let previous = CALL.with(|c| c.borrow_mut().replace(state));
        CallGuard { previous }
    }

    /// Resets per-rule state (actions, stop flag, deadline) before a rule runs.
    pub fn begin_rule(&self, deadline: Instant) {
        CALL.with(|c| {
            if let Some(s) = c.borrow_mut().as_mut() {
                s.actions.clear();
                s.stopped = false;
                s.deadline = deadline;
            }
        });
    }

    /// Takes the actions of the rule that just ran, and whether it called `stop()`.
    pub fn end_rule(&self) -> (Vec<Action>, bool) {
        CALL.with(|c| match c.borrow_mut().as_mut() {
            Some(s) => (std::mem::take(&mut s.actions), s.stopped),
            None => (Vec::new(), false),
        })
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CALL.with(|c| *c.borrow_mut() = previous);
    }
}

fn with_state<T>(f: impl FnOnce(&mut CallState) -> T) -> RResult<T> {
    CALL.with(|c| match c.borrow_mut().as_mut() {
        Some(s) => Ok(f(s)),
        None => Err("rule functions are only available while a rule is being evaluated".into()),
    })
}

fn push(action: Action) -> RResult<()> {
    with_state(|s| s.actions.push(action))
}

/// Called by `on_progress` every 256 operations: `true` when the wall-time budget is spent.
pub(crate) fn past_deadline() -> bool {
    CALL.with(|c| {
        c.borrow()
            .as_ref()
            .is_some_and(|s| Instant::now() >= s.deadline)
    })
}

fn now() -> RResult<RuleTime> {
    with_state(|s| RuleTime(s.now))
}

fn tz() -> Tz {
    CALL.with(|c| c.borrow().as_ref().map_or(Tz::UTC, |s| s.tz))
}

fn tz_named(name: &str) -> RResult<Tz> {
    time::parse_tz(name).ok_or_else(|| format!("unknown timezone `{name}`").into())
}

/// How deeply arrays/maps in action vars/data may nest. A loop can build `[[[..]]]` thousands
/// of levels deep within the size limits; converting that recursively would overflow the
/// stack (an abort no panic guard can catch), so deeper levels are cut off.
pub const MAX_JSON_DEPTH: usize = 32;

/// Converts a Rhai value to JSON for action vars/data; levels past [`MAX_JSON_DEPTH`] become
/// `null`.
pub fn dynamic_to_json(d: &Dynamic) -> Value {
    json_at(d, 0)
}

fn json_at(d: &Dynamic, depth: usize) -> Value {
    if depth > MAX_JSON_DEPTH {
        return Value::Null;
    }
    if d.is_unit() {
        return Value::Null;
    }
    if let Ok(b) = d.as_bool() {
        return Value::Bool(b);
    }
    if let Ok(i) = d.as_int() {
        return Value::Number(i.into());
    }
    if let Ok(f) = d.as_float() {
        return Number::from_f64(f).map_or(Value::Null, Value::Number);
    }
    if let Ok(c) = d.as_char() {
        return Value::String(c.to_string());
    }
    if let Some(s) = d.read_lock::<ImmutableString>() {
        return Value::String(s.to_string());
    }
    if let Some(a) = d.read_lock::<Array>() {
        return Value::Array(a.iter().map(|v| json_at(v, depth + 1)).collect());
    }
    if let Some(m) = d.read_lock::<RMap>() {
        return Value::Object(map_json_at(&m, depth + 1));
    }
    if let Some(t) = d.read_lock::<RuleTime>() {
        return Value::String(t.to_string());
    }
    if let Some(dur) = d.read_lock::<RuleDuration>() {
        return Value::Number(dur.0.num_seconds().into());
    }
    Value::String(d.to_string())
}

pub fn map_to_json(m: &RMap) -> Map<String, Value> {
    map_json_at(m, 0)
}

fn map_json_at(m: &RMap, depth: usize) -> Map<String, Value> {
    m.iter()
        .map(|(k, v)| (k.to_string(), json_at(v, depth)))
        .collect()
}

/// Case-insensitive whole-word (or phrase) search with an optional plural `s`.
pub fn contains_any_words(text: &str, words: &[String]) -> bool {
    // Without a budget the search cannot be cut short; an oversized list is "no match".
    search_words(text, words, &|| false, &WordsCache::default()).unwrap_or(false)
}

/// Why a helper gave up before it had an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HelperLimit {
    /// The rule's wall-time budget ran out inside the helper.
    WallTime,
    /// The word list is larger than [`MAX_WORD_BYTES`].
    TooManyWords,
}

/// Upper bound on the total size of a `contains_any` word list: building the matcher is the
/// one step that cannot be interrupted, so its input is bounded instead.
pub(crate) const MAX_WORD_BYTES: usize = 256 * 1024;
/// How many candidate matches are checked between two looks at the clock.
const MATCHES_PER_DEADLINE_CHECK: usize = 256;

/// A word list made ready for searching: its normalised words and their automaton.
struct WordMatcher {
    needles: Vec<String>,
    automaton: Option<aho_corasick::AhoCorasick>,
}

impl WordMatcher {
    /// Lower-cased, trimmed, deduplicated words and one automaton over them.
    fn build(words: &[String]) -> Result<WordMatcher, HelperLimit> {
        let mut needles: Vec<String> = words
            .iter()
            .map(|w| w.trim().to_lowercase())
            .filter(|w| !w.is_empty())
            .collect();
        // Repeated words would each report every candidate match again.
        needles.sort_unstable();
        needles.dedup();
        if needles.iter().map(String::len).sum::<usize>() > MAX_WORD_BYTES {
            return Err(HelperLimit::TooManyWords);
        }
        if needles.is_empty() {
            return Ok(WordMatcher {
                needles,
                automaton: None,
            });
        }
        // Only fails past aho-corasick's own size limits, which MAX_WORD_BYTES stays under.
        let automaton =
            aho_corasick::AhoCorasick::new(&needles).map_err(|_| HelperLimit::TooManyWords)?;
        Ok(WordMatcher {
            needles,
            automaton: Some(automaton),
        })
    }
}

/// Built `contains_any` matchers by word list, shared by all evaluations: a rule asks the
/// same lists for every event, and building the automaton costs far more than searching a
/// message with it. Bounded by entries and by word bytes; cleared when full.
#[derive(Default)]
pub(crate) struct WordsCache {
    inner: RwLock<WordsCacheInner>,
}

#[derive(Default)]
struct WordsCacheInner {
    map: HashMap<Vec<String>, Arc<WordMatcher>>,
    word_bytes: usize,
}

const WORDS_CACHE_MAX: usize = 1024;
const WORDS_CACHE_MAX_BYTES: usize = 4 * MAX_WORD_BYTES;

impl WordsCache {
    fn get(&self, words: &[String]) -> Result<Arc<WordMatcher>, HelperLimit> {
        if let Ok(inner) = self.inner.read() {
            if let Some(m) = inner.map.get(words) {
                return Ok(m.clone());
            }
        }
        let matcher = Arc::new(WordMatcher::build(words)?);
        let bytes: usize = words.iter().map(String::len).sum();
        if let Ok(mut inner) = self.inner.write() {
            if inner.map.len() >= WORDS_CACHE_MAX
                || inner.word_bytes + bytes > WORDS_CACHE_MAX_BYTES
            {
                inner.map.clear();
                inner.word_bytes = 0;
            }
            inner.word_bytes += bytes;
            inner.map.insert(words.to_vec(), matcher.clone());
        }
        Ok(matcher)
    }
}

/// One Aho-Corasick pass over the text for all words at once: linear in the text plus the
/// candidate matches, never text × words. A pathological list (`a`, `aa`, `aaa`, ..) can
/// still yield many candidates, so `over_budget` is polled while they are checked.
pub(crate) fn search_words(
    text: &str,
    words: &[String],
    over_budget: &dyn Fn() -> bool,
    cache: &WordsCache,
) -> Result<bool, HelperLimit> {
    let matcher = cache.get(words)?;
    let Some(automaton) = &matcher.automaton else {
        return Ok(false);
    };
    if over_budget() {
        return Err(HelperLimit::WallTime);
    }
    let hay = text.to_lowercase();
    for (n, m) in automaton.find_overlapping_iter(&hay).enumerate() {
        if n % MATCHES_PER_DEADLINE_CHECK == MATCHES_PER_DEADLINE_CHECK - 1 && over_budget() {
            return Err(HelperLimit::WallTime);
        }
        if is_whole_word(
            &hay,
            &matcher.needles[m.pattern().as_usize()],
            m.start(),
            m.end(),
        ) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether `needle`, found at `hay[start..end]`, stands on its own: no letter or digit
/// glued to an end that is itself a letter or digit (a trailing plural `s` is allowed).
fn is_whole_word(hay: &str, needle: &str, start: usize, end: usize) -> bool {
    let is_word = |c: char| c.is_alphanumeric();
    let boundary = |c: Option<char>| c.is_none_or(|c| !is_word(c));
    let first_is_word = needle.chars().next().is_some_and(is_word);
    let last_is_word = needle.chars().next_back().is_some_and(is_word);
    let after = &hay[end..];
    let left_ok = !first_is_word || boundary(hay[..start].chars().next_back());
    let right_ok = !last_is_word
        || boundary(after.chars().next())
        || (after.starts_with('s') && boundary(after[1..].chars().next()));
    left_ok && right_ok
}

/// Compiled regexes shared by all evaluations (bounded; cleared when full).
#[derive(Default)]
pub(crate) struct RegexCache {
    map: RwLock<HashMap<String, Result<Arc<Regex>, String>>>,
}

const REGEX_CACHE_MAX: usize = 1024;
const REGEX_SIZE_LIMIT: usize = 1 << 20;
/// Longest `matches` pattern: compiling is the one step a deadline cannot interrupt.
pub(crate) const MAX_PATTERN_LEN: usize = 4096;

impl RegexCache {
    fn get(&self, pattern: &str) -> Result<Arc<Regex>, String> {
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(format!(
                "matches: the pattern is {} bytes long (at most {MAX_PATTERN_LEN})",
                pattern.len()
            ));
        }
        if let Ok(map) = self.map.read() {
            if let Some(r) = map.get(pattern) {
                return r.clone();
            }
        }
        let compiled = regex::RegexBuilder::new(pattern)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Arc::new)
            .map_err(|e| format!("invalid regex `{pattern}`: {e}"));
        if let Ok(mut map) = self.map.write() {
            if map.len() >= REGEX_CACHE_MAX {
                map.clear();
            }
            map.insert(pattern.to_string(), compiled.clone());
        }
        compiled
    }
}

fn words_of(arr: &Array) -> Vec<String> {
    arr.iter()
        .map(|d| match d.read_lock::<ImmutableString>() {
            Some(s) => s.to_string(),
            None => d.to_string(),
        })
        .collect()
}

fn local_map(t: DateTime<Utc>, tz: Tz) -> RMap {
    let p = time::local_parts(t, tz);
    let mut m = RMap::new();
    m.insert("year".into(), p.year.into());
    m.insert("month".into(), p.month.into());
    m.insert("day".into(), p.day.into());
    m.insert("hour".into(), p.hour.into());
    m.insert("minute".into(), p.minute.into());
    m.insert("second".into(), p.second.into());
    m.insert("weekday".into(), p.weekday.into());
    m.insert("date".into(), p.date.into());
    m.insert("time".into(), p.time.into());
    m.insert("offset".into(), p.offset.into());
    m
}

fn wall(s: &str) -> RResult<chrono::NaiveTime> {
    time::parse_wall_clock(s).map_err(Into::into)
}

fn span(n: INT, unit: fn(i64) -> Option<TimeDelta>) -> RResult<RuleDuration> {
    unit(n)
        .map(RuleDuration)
        .ok_or_else(|| format!("duration {n} is out of range").into())
}

fn span_f(n: f64, secs_per_unit: f64) -> RResult<RuleDuration> {
    let ms = n * secs_per_unit * 1000.0;
    if !ms.is_finite() || ms.abs() > 1e15 {
        return Err(format!("duration {n} is out of range").into());
    }
    Ok(RuleDuration(TimeDelta::milliseconds(ms.round() as i64)))
}

/// Every `Time` a rule gets back passes through here (see [`time::YEARS`]).
fn checked_time(t: Option<DateTime<Utc>>) -> RResult<RuleTime> {
    let t = t.ok_or_else(|| {
        format!(
            "time out of range (years {} to {} only)",
            time::YEARS.start(),
            time::YEARS.end()
        )
    })?;
    time::in_range(t).map(RuleTime).map_err(Into::into)
}

fn checked_span(d: Option<TimeDelta>) -> RResult<RuleDuration> {
    d.map(RuleDuration)
        .ok_or_else(|| "duration out of range".into())
}

/// `d * n` in exact nanoseconds. Not `TimeDelta::checked_mul`: it can return a value past
/// `TimeDelta::MAX` (`days(100000000000) * 2`) instead of `None`.
fn mul_span(d: TimeDelta, n: INT) -> Option<TimeDelta> {
    const NANOS: i128 = 1_000_000_000;
    let total = i128::from(d.num_seconds()) * NANOS + i128::from(d.subsec_nanos());
    let total = total.checked_mul(i128::from(n))?;
    let secs = i64::try_from(total.div_euclid(NANOS)).ok()?;
    let nanos = u32::try_from(total.rem_euclid(NANOS)).ok()?;
    TimeDelta::new(secs, nanos)
}

fn add(t: RuleTime, d: RuleDuration) -> RResult<RuleTime> {
    checked_time(t.0.checked_add_signed(d.0))
}

fn sub(t: RuleTime, d: RuleDuration) -> RResult<RuleTime> {
    checked_time(t.0.checked_sub_signed(d.0))
}

/// The error a helper raises when the rule's wall-time budget ran out inside it; reported
/// like the limit hit between operations.
fn wall_time_exceeded() -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorTerminated(
        WALL_TIME_MARKER.into(),
        Position::NONE,
    ))
}

fn contains_any(text: &str, words: &Array, cache: &WordsCache) -> RResult<bool> {
    match search_words(text, &words_of(words), &past_deadline, cache) {
        Ok(found) => Ok(found),
        Err(HelperLimit::WallTime) => Err(wall_time_exceeded()),
        Err(HelperLimit::TooManyWords) => Err(format!(
            "contains_any: the word list is larger than {} KiB",
            MAX_WORD_BYTES / 1024
        )
        .into()),
    }
}

fn follow_up_at(name: &str, due_at: DateTime<Utc>, data: Map<String, Value>) -> RResult<()> {
    if name.trim().is_empty() {
        return Err("follow_up: the name must not be empty".into());
    }
    push(Action::FollowUp {
        name: name.to_string(),
        due_at,
        data,
    })
}

fn follow_up_in(name: &str, d: RuleDuration, data: Map<String, Value>) -> RResult<()> {
    let at = add(now()?, d)?;
    follow_up_at(name, at.0, data)
}

/// The `attachments` of a reply's options: a list of plain file names from `attachments/`
/// (absent: none).
fn reply_attachments(value: Option<Value>) -> RResult<Vec<String>> {
    let err = |m: String| -> RResult<Vec<String>> { Err(m.into()) };
    let items = match value {
        None => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return err("reply: `attachments` must be a list of file names".into()),
    };
    let mut names = Vec::with_capacity(items.len());
    for item in items {
        match item {
            Value::String(n) if crate::plan::attachments::valid_name(&n) => names.push(n),
            other => {
                return err(format!(
                    "reply: attachment {other} is not a file name of attachments/ (no folders, not hidden)"
                ))
            }
        }
    }
    Ok(names)
}

fn template_name(t: &str) -> RResult<String> {
    if t.trim().is_empty() {
        return Err("the template name must not be empty".into());
    }
    Ok(t.to_string())
}

/// Registers types, actions and helpers on `engine`.
pub(crate) fn register(engine: &mut Engine, regexes: Arc<RegexCache>, words: Arc<WordsCache>) {
    engine
        .register_type_with_name::<RuleTime>("Time")
        .register_type_with_name::<RuleDuration>("Duration");
    register_actions(engine);
    register_understanding(engine);
    register_text(engine, regexes, words);
    register_time(engine);
    register_time_ops(engine);
}

fn register_actions(engine: &mut Engine) {
    engine
        .register_fn("reply", |t: &str| -> RResult<()> {
            push(Action::Reply {
                template: template_name(t)?,
                vars: Map::new(),
                attachments: Vec::new(),
            })
        })
        .register_fn("reply", |t: &str, vars: RMap| -> RResult<()> {
            let mut vars = map_to_json(&vars);
            let attachments = reply_attachments(vars.remove("attachments"))?;
            push(Action::Reply {
                template: template_name(t)?,
                vars,
                attachments,
            })
        })
        .register_fn("alert", |t: &str| -> RResult<()> {
            push(Action::Alert {
                template: template_name(t)?,
                vars: Map::new(),
            })
        })
        .register_fn("alert", |t: &str, vars: RMap| -> RResult<()> {
            push(Action::Alert {
                template: template_name(t)?,
                vars: map_to_json(&vars),
            })
        })
        .register_fn("no_reply_needed", || push(Action::NoReplyNeeded))
        .register_fn("close_thread", || push(Action::CloseThread))
        .register_fn("cancel_follow_up", |name: &str| -> RResult<()> {
            push(Action::CancelFollowUp {
                name: name.to_string(),
            })
        })
        .register_fn("cancel_all_follow_ups", || push(Action::CancelAllFollowUps))
        .register_fn("follow_up", |name: &str, at: RuleTime| {
            follow_up_at(name, at.0, Map::new())
        })
        .register_fn("follow_up", |name: &str, at: RuleTime, data: RMap| {
            follow_up_at(name, at.0, map_to_json(&data))
        })
        .register_fn("follow_up", |name: &str, d: RuleDuration| {
            follow_up_in(name, d, Map::new())
        })
        .register_fn("follow_up", |name: &str, d: RuleDuration, data: RMap| {
            follow_up_in(name, d, map_to_json(&data))
        })
        .register_fn("stop", || -> RResult<()> {
            with_state(|s| s.stopped = true)?;
            Err(Box::new(EvalAltResult::ErrorTerminated(
                STOP_MARKER.into(),
                Position::NONE,
            )))
        });
}

/// `asks(topic)`, `may_ask(topic)`, `confidence(topic)` over the event's understanding
/// (all false / 0.0 on events without a guest message), and `no_answer(reason)`.
fn register_understanding(engine: &mut Engine) {
    engine
        .register_fn("asks", |topic: &str| -> RResult<bool> {
            with_state(|s| s.understanding.as_ref().is_some_and(|u| u.asks(topic)))
        })
        .register_fn("may_ask", |topic: &str| -> RResult<bool> {
            with_state(|s| s.understanding.as_ref().is_some_and(|u| u.may_ask(topic)))
        })
        .register_fn("confidence", |topic: &str| -> RResult<f64> {
            with_state(|s| {
                s.understanding
                    .as_ref()
                    .map_or(0.0, |u| u.confidence(topic))
            })
        })
        .register_fn("no_answer", |reason: &str| -> RResult<()> {
            push(Action::NoAnswer {
                reason: reason.chars().take(500).collect(),
            })
        });
}

fn register_text(engine: &mut Engine, regexes: Arc<RegexCache>, words_cache: Arc<WordsCache>) {
    let re = regexes;
    engine
        .register_fn("contains_any", move |text: &str, words: Array| {
            contains_any(text, &words, &words_cache)
        })
        .register_fn("contains_any", |_: (), _: Array| false)
        .register_fn(
            "matches",
            move |text: &str, pattern: &str| -> RResult<bool> {
                let regex = re.get(pattern)?;
                // Compiling a new pattern is not interruptible: account for it before the
                // (linear-time) match.
                if past_deadline() {
                    return Err(wall_time_exceeded());
                }
                Ok(regex.is_match(text))
            },
        )
        .register_fn("matches", |_: (), _: &str| false);
}

fn register_time(engine: &mut Engine) {
    engine
        .register_fn("now", now)
        .register_fn("parse_time", |s: &str| -> RResult<RuleTime> {
            checked_time(Some(time::parse_timestamp(s, tz())?))
        })
        .register_fn("parse_time", |_: ()| -> RResult<RuleTime> {
            Err("parse_time: no timestamp (the value is `()`: is the field present?)".into())
        })
        .register_fn("parse_time", |t: RuleTime| t)
        .register_fn("seconds", |n: INT| span(n, TimeDelta::try_seconds))
        .register_fn("minutes", |n: INT| span(n, TimeDelta::try_minutes))
        .register_fn("hours", |n: INT| span(n, TimeDelta::try_hours))
        .register_fn("days", |n: INT| span(n, TimeDelta::try_days))
        .register_fn("seconds", |n: f64| span_f(n, 1.0))
        .register_fn("minutes", |n: f64| span_f(n, 60.0))
        .register_fn("hours", |n: f64| span_f(n, 3600.0))
        .register_fn("days", |n: f64| span_f(n, 86400.0))
        .register_fn("+", add)
        .register_fn("+", |d: RuleDuration, t: RuleTime| add(t, d))
        .register_fn("-", sub)
        // Two in-range Times are at most ~10,000 years apart: always a valid Duration.
        .register_fn("-", |a: RuleTime, b: RuleTime| {
            checked_span(Some(a.0.signed_duration_since(b.0)))
        })
        .register_fn("+", |a: RuleDuration, b: RuleDuration| {
            checked_span(a.0.checked_add(&b.0))
        })
        .register_fn("-", |a: RuleDuration, b: RuleDuration| {
            checked_span(a.0.checked_sub(&b.0))
        })
        .register_fn("-", |a: RuleDuration| {
            checked_span(TimeDelta::zero().checked_sub(&a.0))
        })
        .register_fn("*", |a: RuleDuration, n: INT| {
            checked_span(mul_span(a.0, n))
        });
}

/// Comparisons, display, getters and the local-time helpers.
fn register_time_ops(engine: &mut Engine) {
    engine
        .register_fn("==", |a: RuleTime, b: RuleTime| a == b)
        .register_fn("!=", |a: RuleTime, b: RuleTime| a != b)
        .register_fn("<", |a: RuleTime, b: RuleTime| a < b)
        .register_fn("<=", |a: RuleTime, b: RuleTime| a <= b)
        .register_fn(">", |a: RuleTime, b: RuleTime| a > b)
        .register_fn(">=", |a: RuleTime, b: RuleTime| a >= b)
        .register_fn("==", |a: RuleDuration, b: RuleDuration| a == b)
        .register_fn("!=", |a: RuleDuration, b: RuleDuration| a != b)
        .register_fn("<", |a: RuleDuration, b: RuleDuration| a < b)
        .register_fn("<=", |a: RuleDuration, b: RuleDuration| a <= b)
        .register_fn(">", |a: RuleDuration, b: RuleDuration| a > b)
        .register_fn(">=", |a: RuleDuration, b: RuleDuration| a >= b)
        .register_fn("to_string", |t: &mut RuleTime| t.to_string())
        .register_fn("to_debug", |t: &mut RuleTime| format!("Time({t})"))
        .register_fn("to_string", |d: &mut RuleDuration| d.to_string())
        .register_fn("to_debug", |d: &mut RuleDuration| format!("Duration({d})"))
        .register_get("unix", |t: &mut RuleTime| t.0.timestamp())
        .register_get("seconds", |d: &mut RuleDuration| d.0.num_seconds())
        .register_get("minutes", |d: &mut RuleDuration| d.0.num_minutes())
        .register_get("hours", |d: &mut RuleDuration| d.0.num_hours())
        .register_get("days", |d: &mut RuleDuration| d.0.num_days())
        .register_fn("local_time", |t: RuleTime| local_map(t.0, tz()))
        .register_fn("local_time", |t: RuleTime, zone: &str| -> RResult<RMap> {
            Ok(local_map(t.0, tz_named(zone)?))
        })
        .register_fn("at_local", |t: RuleTime, w: &str| -> RResult<RuleTime> {
            checked_time(Some(time::at_local(t.0, wall(w)?, tz())))
        })
        .register_fn(
            "at_local",
            |t: RuleTime, w: &str, zone: &str| -> RResult<RuleTime> {
                checked_time(Some(time::at_local(t.0, wall(w)?, tz_named(zone)?)))
            },
        )
        .register_fn(
            "within_local_hours",
            |t: RuleTime, start: &str, end: &str| -> RResult<bool> {
                Ok(time::within_local_hours(
                    t.0,
                    wall(start)?,
                    wall(end)?,
                    tz(),
                ))
            },
        )
        .register_fn("format_time", |t: RuleTime, fmt: &str| -> RResult<String> {
            Ok(time::format_in(t.0, fmt, tz())?)
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn contains_any_is_word_ish() {
        assert!(contains_any_words("What's the WiFi?", &w(&["wifi"])));
        assert!(contains_any_words("wi-fi password pls", &w(&["wi-fi"])));
        assert!(contains_any_words("where are the keys", &w(&["key"])));
        assert!(contains_any_words(
            "Can we check in early?",
            &w(&["check in"])
        ));
        assert!(!contains_any_words("parking", &w(&["park"])));
        assert!(!contains_any_words("swift", &w(&["wifi", "if"])));
        assert!(!contains_any_words("anything", &w(&["", "  "])));
        assert!(contains_any_words("Obrigado!", &w(&["obrigado"])));
    }

    #[test]
    fn a_word_list_is_built_once_and_the_cache_stays_bounded() {
        let cache = WordsCache::default();
        let never = || false;
        let list = w(&["Wifi ", "wi-fi", "wifi"]);
        assert_eq!(search_words("the WIFI?", &list, &never, &cache), Ok(true));
        assert_eq!(search_words("swift", &list, &never, &cache), Ok(false));
        let first = cache.get(&list).expect("built");
        assert!(Arc::ptr_eq(&first, &cache.get(&list).expect("cached")));
        assert_eq!(first.needles, ["wi-fi", "wifi"]);
        // An oversized list is refused, not cached; many lists never grow the cache unbounded.
        let huge = vec!["x".repeat(MAX_WORD_BYTES + 1)];
        assert_eq!(
            search_words("x", &huge, &never, &cache),
            Err(HelperLimit::TooManyWords)
        );
        for i in 0..WORDS_CACHE_MAX + 10 {
            let _ = search_words("a", &[format!("w{i}")], &never, &cache);
        }
        let entries = cache
            .inner
            .read()
            .map(|c| c.map.len())
            .unwrap_or(usize::MAX);
        assert!(entries <= WORDS_CACHE_MAX, "{entries}");
    }
}
