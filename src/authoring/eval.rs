//! `concierge rules eval`: how well the rules answer real guest messages, measured on a
//! labelled corpus (`rules/corpus/*.jsonl`, format in `rules/corpus/LABELLING.md`).
//!
//! Owns the corpus format, the measurement and its report. Every message goes through
//! [`crate::plan::plan`] as a new guest message on a property that has every FAQ fact, so
//! what is measured is what the worker would send. A *wrong answer* is a message that got
//! an FAQ answer it did not ask for; *recall* is the share of asked FAQ topics answered.
//! The thread's language is what the poller would give a first message (detected from the
//! text, none when too short), never the label. Must not: write anything.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::events::Event;
use crate::plan::rules::{Action, RuleEngine};
use crate::plan::understand::TopicKind;
use crate::plan::Content;

/// The most wrong answers the shipped rules may give, per language (a share of messages).
pub const MAX_WRONG_RATE: f64 = 0.01;
/// The least share of asked FAQ topics they must answer, per language.
pub const MIN_RECALL: f64 = 0.9;

/// One labelled message of the corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct CorpusMessage {
    pub id: String,
    pub lang: String,
    pub text: String,
    #[serde(default)]
    pub asks: Vec<String>,
    #[serde(default)]
    pub act: Option<String>,
    #[serde(default)]
    pub mentions: Vec<String>,
    #[serde(default)]
    pub split: Option<String>,
}

/// Which messages of the corpus are measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Only `split: heldout` (what the topic files never saw; what `make test` checks).
    Heldout,
    /// Only `split: train`.
    Train,
    All,
}

impl Split {
    fn takes(self, m: &CorpusMessage) -> bool {
        match self {
            Split::All => true,
            Split::Heldout => m.split.as_deref() == Some("heldout"),
            Split::Train => m.split.as_deref() == Some("train"),
        }
    }
}

/// Why a corpus could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    #[error("{0}: cannot read: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}:{1}: not a corpus line: {2}")]
    Line(PathBuf, usize, serde_json::Error),
}

/// The messages of `path`: a `.jsonl` file, or every `.jsonl` file of a folder.
pub fn read_corpus(path: &Path) -> Result<Vec<CorpusMessage>, CorpusError> {
    let files = if path.is_dir() {
        let entries = std::fs::read_dir(path).map_err(|e| CorpusError::Read(path.into(), e))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut out = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| CorpusError::Read(file.clone(), e))?;
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            out.push(
                serde_json::from_str(line)
                    .map_err(|e| CorpusError::Line(file.clone(), i + 1, e))?,
            );
        }
    }
    Ok(out)
}

/// Counts of one slice (a language, a topic, or everything).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub messages: usize,
    /// Messages that got an FAQ answer they did not ask for.
    pub wrong_messages: usize,
    /// FAQ topics asked / answered among those asked / answers given / answers not asked.
    pub asked: usize,
    pub answered: usize,
    pub answers: usize,
    pub wrong_answers: usize,
}

impl Tally {
    pub fn wrong_rate(&self) -> f64 {
        ratio(self.wrong_messages, self.messages)
    }
    pub fn recall(&self) -> f64 {
        if self.asked == 0 {
            1.0
        } else {
            ratio(self.answered, self.asked)
        }
    }
    pub fn precision(&self) -> f64 {
        if self.answers == 0 {
            1.0
        } else {
            ratio(self.answers - self.wrong_answers, self.answers)
        }
    }
}

fn ratio(a: usize, b: usize) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// One message that got a wrong answer or missed a topic.
#[derive(Debug, Clone)]
pub struct Miss {
    pub id: String,
    pub text: String,
    pub asked: Vec<String>,
    pub answered: Vec<String>,
    pub understood: String,
}

/// The measurement of a corpus.
#[derive(Debug, Clone, Default)]
pub struct EvalReport {
    pub total: Tally,
    pub by_language: BTreeMap<String, Tally>,
    pub by_topic: BTreeMap<String, Tally>,
    /// (asked, answered) → count; `-` for none.
    pub confusions: BTreeMap<(String, String), usize>,
    pub wrong: Vec<Miss>,
    pub missed: Vec<Miss>,
}

/// Runs every message of `corpus` in `split` through the rules of `content`.
pub fn evaluate(
    engine: &RuleEngine,
    content: &Content,
    corpus: &[CorpusMessage],
    split: Split,
) -> EvalReport {
    let faq: BTreeMap<String, String> = content
        .topics
        .topics()
        .iter()
        .filter(|t| t.kind == TopicKind::Faq)
        .filter_map(|t| Some((t.template.clone()?, t.name.clone())))
        .collect();
    let now: DateTime<Utc> = DateTime::from_timestamp(1_719_835_200, 0).unwrap_or_default();
    let mut report = EvalReport::default();
    for m in corpus.iter().filter(|m| split.takes(m)) {
        // Built from a fixed shape: only a text JSON cannot hold could fail, never seen.
        let Some(event) = corpus_event(m, now) else {
            continue;
        };
        let plan = crate::plan::plan(engine, content, &event, now, false);
        let answered: Vec<String> = answered_templates(plan.steps().map(|s| &s.action))
            .filter_map(|t| faq.get(&t).cloned())
            .collect();
        let understood = plan
            .understanding
            .as_ref()
            .map(|u| u.summary())
            .unwrap_or_default();
        record(&mut report, m, &faq, answered, understood);
    }
    report
}

/// The FAQ templates a plan sends now or defers to quiet hours' end.
fn answered_templates<'a>(
    actions: impl Iterator<Item = &'a Action>,
) -> impl Iterator<Item = String> {
    let mut out: Vec<String> = actions
        .filter_map(|a| match a {
            Action::Reply { template, .. } => Some(template.clone()),
            Action::FollowUp { data, .. } => data
                .get("template")
                .and_then(|t| t.as_str())
                .map(str::to_string),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out.into_iter()
}

fn record(
    report: &mut EvalReport,
    m: &CorpusMessage,
    faq: &BTreeMap<String, String>,
    answered: Vec<String>,
    understood: String,
) {
    let is_faq = |t: &String| faq.values().any(|f| f == t);
    let asked: Vec<String> = m.asks.iter().filter(|t| is_faq(t)).cloned().collect();
    let wrong: Vec<&String> = answered.iter().filter(|a| !asked.contains(a)).collect();
    let hit = asked.iter().filter(|a| answered.contains(a)).count();
    for tally in [
        &mut report.total,
        report.by_language.entry(m.lang.clone()).or_default(),
    ] {
        tally.messages += 1;
        tally.wrong_messages += usize::from(!wrong.is_empty());
        tally.asked += asked.len();
        tally.answered += hit;
        tally.answers += answered.len();
        tally.wrong_answers += wrong.len();
    }
    for topic in faq.values() {
        let t = report.by_topic.entry(topic.clone()).or_default();
        let asks = asked.contains(topic);
        let gets = answered.contains(topic);
        t.messages += 1;
        t.asked += usize::from(asks);
        t.answered += usize::from(asks && gets);
        t.answers += usize::from(gets);
        t.wrong_answers += usize::from(gets && !asks);
        t.wrong_messages += usize::from(gets && !asks);
    }
    let none = || "-".to_string();
    for a in &wrong {
        let from = if asked.is_empty() {
            none()
        } else {
            asked.join("+")
        };
        *report.confusions.entry((from, (*a).clone())).or_default() += 1;
    }
    for a in asked.iter().filter(|a| !answered.contains(a)) {
        let to = if answered.is_empty() {
            none()
        } else {
            answered.join("+")
        };
        *report.confusions.entry((a.clone(), to)).or_default() += 1;
    }
    let miss = || Miss {
        id: m.id.clone(),
        text: m.text.clone(),
        asked: asked.clone(),
        answered: answered.clone(),
        understood: understood.clone(),
    };
    if !wrong.is_empty() {
        report.wrong.push(miss());
    }
    if hit < asked.len() {
        report.missed.push(miss());
    }
}

/// A first guest message of a new Booking.com thread on a property with every FAQ fact.
fn corpus_event(m: &CorpusMessage, now: DateTime<Utc>) -> Option<Event> {
    let language = crate::base::language::detect(&m.text);
    let json = serde_json::json!({
        "id": format!("thread.new_message:{}:m1", m.id),
        "type": "thread.new_message",
        "occurred_at": now,
        "property": {"id": "eval", "name": "Casa Eval", "timezone": "UTC", "vars": sample_vars()},
        "thread": {"id": m.id, "title": "Guest", "provider": "booking_com", "is_closed": false,
                   "message_count": 1, "awaiting_reply": true, "language": language},
        "message": {"id": "m1", "text": m.text, "sender": "guest", "inserted_at": now,
                    "language": language},
    });
    serde_json::from_value(json).ok()
}

fn sample_vars() -> serde_json::Value {
    serde_json::json!({
        "wifi_name": "CasaGuest", "wifi_password": "sunshine2024", "checkin_time": "15:00",
        "checkout_time": "11:00", "early_checkin": "from 12:00 for 20 EUR when the flat is ready",
        "parking": "Garage under the building, space 12", "address": "Rua das Flores 12, Lisboa",
        "directions": "Metro to Baixa-Chiado, then 5 minutes on foot",
    })
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<10} {:>8} {:>7} {:>7} {:>9} {:>7}",
            "language", "messages", "wrong", "wrong%", "precision", "recall"
        )?;
        for (lang, t) in self
            .by_language
            .iter()
            .chain(std::iter::once((&"all".to_string(), &self.total)))
        {
            writeln!(
                f,
                "{:<10} {:>8} {:>7} {:>6.1}% {:>8.1}% {:>6.1}%",
                lang,
                t.messages,
                t.wrong_messages,
                100.0 * t.wrong_rate(),
                100.0 * t.precision(),
                100.0 * t.recall()
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<14} {:>6} {:>8} {:>7} {:>9} {:>7}",
            "topic", "asked", "answered", "wrong", "precision", "recall"
        )?;
        for (topic, t) in &self.by_topic {
            writeln!(
                f,
                "{:<14} {:>6} {:>8} {:>7} {:>8.1}% {:>6.1}%",
                topic,
                t.asked,
                t.answered,
                t.wrong_answers,
                100.0 * t.precision(),
                100.0 * t.recall()
            )?;
        }
        let mut worst: Vec<(&(String, String), &usize)> = self.confusions.iter().collect();
        worst.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        writeln!(f, "\nworst confusions (asked → answered, '-' = nothing):")?;
        for ((asked, got), n) in worst.iter().take(10) {
            writeln!(f, "  {n:>3}  {asked} → {got}")?;
        }
        Ok(())
    }
}

impl EvalReport {
    /// The messages behind the figures: every wrong answer and missed topic.
    pub fn details(&self) -> String {
        let mut s = String::new();
        for (kind, list) in [("wrong", &self.wrong), ("missed", &self.missed)] {
            for m in list {
                s.push_str(&format!(
                    "{kind} {}: {:?} asked [{}] answered [{}] ({})\n",
                    m.id,
                    m.text,
                    m.asked.join(", "),
                    m.answered.join(", "),
                    m.understood
                ));
            }
        }
        s
    }
}
