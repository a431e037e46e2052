//! Understanding a guest message: per topic a confidence and its evidence, and the
//! message's act (question, statement, thanks, problem, complaint, urgent).
//!
//! Owns [`Topics`] (the host's topic files, parsed, validated and trained into a
//! [`model::Model`] when they load) and the one pure step [`Topics::understand`] that
//! [`crate::plan::plan`] runs once per event with a message. Rules read the result as
//! `message.understood` and through `asks(topic)`; it is never stored in events, so rule
//! fixtures, the playground, `replay` and the worker read the same message the same way,
//! and a replay re-reads history with today's topics.
//!
//! Must stay pure and deterministic: no I/O, no clock, no randomness; the same topic files
//! and learned examples always give the same decisions.

pub mod acts;
pub mod model;
pub mod text;
pub mod topics;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use acts::Act;
use acts::ActReader;
use model::Model;
pub use topics::{ExampleKind, LabelledText, Topic, TopicKind};

/// Topics whose confidence is under this are left out of [`Understanding::topics`].
const REPORTED_FROM: f64 = 0.1;
/// The highest confidence a topic reaches without one of its own phrases in the message:
/// under every answer threshold, so nothing is answered on the classifier's word alone
/// (a person may still be asked).
pub const WITHOUT_PHRASE: f64 = 0.5;

/// The host's topics, ready to read messages.
#[derive(Debug, Clone, Default)]
pub struct Topics {
    topics: Vec<Topic>,
    model: Model,
    acts: Arc<ActReader>,
    learned: Vec<LabelledText>,
    version: String,
}

impl Topics {
    /// Trains on `topics` (sorted by name) and the `learned` examples.
    pub fn new(mut topics: Vec<Topic>, learned: Vec<LabelledText>) -> Topics {
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let model = Model::train(&topics, &learned);
        let mut versions: Vec<String> = topics
            .iter()
            .map(|t| format!("{}={}", t.name, t.version))
            .collect();
        let mut learned_sorted = learned.clone();
        learned_sorted.sort();
        versions.extend(
            learned_sorted
                .iter()
                .map(|l| format!("{:?}|{}|{:?}|{}", l.kind, l.topic, l.language, l.text)),
        );
        let version = crate::base::diagnostics::content_version(versions.join("\n").as_bytes());
        Topics {
            topics,
            model,
            acts: Arc::new(ActReader::default()),
            learned: learned_sorted,
            version,
        }
    }

    /// The topic files, sorted by name.
    pub fn topics(&self) -> &[Topic] {
        &self.topics
    }

    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// Content hash of the topic files and learned examples (in audit records).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The learned examples that joined the topic files, sorted.
    pub fn learned_examples(&self) -> &[LabelledText] {
        &self.learned
    }

    /// The same topic files trained with another set of learned examples.
    pub fn with_learned(&self, learned: Vec<LabelledText>) -> Topics {
        Topics::new(self.topics.clone(), learned)
    }

    /// Reads `message` written in `language` (the thread's, when known).
    pub fn understand(&self, message: &str, language: Option<&str>) -> Understanding {
        let known = language.filter(|l| text::is_supported(l));
        let first = text::Text::read(message, known);
        let lang = known.or_else(|| self.acts.guess_language(&first));
        let read = if lang == known {
            first
        } else {
            text::Text::read(message, lang)
        };
        let act = self.acts.read(&read, lang);
        let mut scores = self.scores(&read, lang);
        // Two questions in one message: each question sentence is read on its own too, and
        // a topic keeps its best reading ("what time is check-in? and where do we park?").
        let sentences = text::sentences(message);
        if sentences.len() > 1 {
            for sentence in &sentences {
                let part = text::Text::read(sentence, lang);
                if self.acts.read(&part, lang).act == Act::Question {
                    merge_best(&mut scores, self.scores(&part, lang));
                }
            }
        }
        self.apply_suppression(&mut scores);
        scores.sort_by(|a, b| {
            b.confidence
                .total_cmp(&a.confidence)
                .then_with(|| a.topic.cmp(&b.topic))
        });
        Understanding {
            language: lang.map(str::to_string),
            act: act.act,
            act_cue: act.cue,
            topics: scores,
            version: self.version.clone(),
        }
    }

    /// Every topic's reading of `read` (those under [`REPORTED_FROM`] left out).
    fn scores(&self, read: &text::Text, lang: Option<&str>) -> Vec<TopicScore> {
        self.model
            .score(read, lang)
            .into_iter()
            .filter(|s| s.confidence >= REPORTED_FROM)
            .filter_map(|s| self.topics.get(s.topic).map(|t| TopicScore::of(t, s)))
            .collect()
    }

    /// A topic that `suppresses` another found with it takes its place ("check in early"
    /// is early check-in, not also check-in).
    fn apply_suppression(&self, scores: &mut Vec<TopicScore>) {
        let strong: Vec<&Topic> = scores
            .iter()
            .filter(|s| s.confidence >= s.draft_at)
            .filter_map(|s| self.get(&s.topic))
            .collect();
        let suppressed: Vec<String> = strong
            .iter()
            .flat_map(|t| t.suppresses.iter().cloned())
            .collect();
        scores.retain(|s| !suppressed.contains(&s.topic));
    }
}

/// Adds `more` to `scores`, each topic keeping its most confident reading.
fn merge_best(scores: &mut Vec<TopicScore>, more: Vec<TopicScore>) {
    for m in more {
        match scores.iter_mut().find(|s| s.topic == m.topic) {
            Some(s) if s.confidence >= m.confidence => {}
            Some(s) => *s = m,
            None => scores.push(m),
        }
    }
}

/// One topic's reading of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicScore {
    pub topic: String,
    pub kind: TopicKind,
    /// 0..1, two decimals.
    pub confidence: f64,
    pub evidence: Vec<String>,
    /// The property var the answer needs (faq topics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub answer_at: f64,
    pub draft_at: f64,
}

impl TopicScore {
    fn of(topic: &Topic, score: model::Score) -> TopicScore {
        let confidence = if score.phrase {
            score.confidence
        } else {
            score.confidence.min(WITHOUT_PHRASE)
        };
        TopicScore {
            topic: topic.name.clone(),
            kind: topic.kind,
            confidence: (confidence * 100.0).round() / 100.0,
            evidence: score.evidence,
            needs: topic.needs.clone(),
            template: topic.template.clone(),
            answer_at: topic.answer_at,
            draft_at: topic.draft_at,
        }
    }
}

/// What the understanding step read in one message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Understanding {
    /// The language the message was read in.
    pub language: Option<String>,
    pub act: Act,
    /// The phrase that decided the act.
    pub act_cue: Option<String>,
    /// Topics from the most confident down (those under 0.1 left out).
    pub topics: Vec<TopicScore>,
    /// The topics' version ([`Topics::version`]).
    pub version: String,
}

impl Understanding {
    /// The confidence of `topic` (0 when it was not found).
    pub fn confidence(&self, topic: &str) -> f64 {
        self.topics
            .iter()
            .find(|t| t.topic == topic)
            .map_or(0.0, |t| t.confidence)
    }

    /// The most confident topic.
    pub fn top_topic(&self) -> Option<&TopicScore> {
        self.topics.first()
    }

    /// A question or request for `topic` at or above its answer threshold.
    pub fn asks(&self, topic: &str) -> bool {
        self.act == Act::Question
            && self
                .topics
                .iter()
                .any(|t| t.topic == topic && t.confidence >= t.answer_at)
    }

    /// A question or request that may be about `topic`: at or above its draft threshold,
    /// under its answer threshold (a person should look).
    pub fn may_ask(&self, topic: &str) -> bool {
        self.act == Act::Question
            && self.topics.iter().any(|t| {
                t.topic == topic && t.confidence >= t.draft_at && t.confidence < t.answer_at
            })
    }

    /// One line for people: "wifi 0.94: 'get online', 'password'; question ('?')".
    pub fn summary(&self) -> String {
        let act = match &self.act_cue {
            Some(cue) => format!("{} ('{cue}')", self.act.as_str()),
            None => self.act.as_str().to_string(),
        };
        match self.top_topic() {
            Some(t) if t.confidence >= t.draft_at => {
                let evidence: Vec<String> = t.evidence.iter().map(|e| format!("'{e}'")).collect();
                format!(
                    "{} {:.2}: {}; {act}",
                    t.topic,
                    t.confidence,
                    evidence.join(", ")
                )
            }
            Some(t) => format!("no topic (best {} {:.2}); {act}", t.topic, t.confidence),
            None => format!("no topic; {act}"),
        }
    }
}
