//! The topic classifier: one logistic regression per topic over the features of
//! [`super::text`] plus two per topic from its file (a phrase of the topic matched, a
//! phrase pointing away from it matched), trained when the topics load.
//!
//! Owns training and scoring. Training is deterministic: the labelled texts are sorted
//! first, weights start at zero and the passes run in that order, so the same files (and
//! learned examples) give the same weights whatever order they were read in. Must not: read
//! files, decide what a rule does with a confidence.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::text::{self, Text};
use super::topics::{ExampleKind, LabelledText, Phrase, Topic};

/// Passes over the training texts.
const EPOCHS: usize = 20;
/// Step size of the first pass (decays as 1 / (1 + pass / 4)).
const LEARNING_RATE: f32 = 0.4;
/// L2 weight decay per step.
const L2: f32 = 1e-3;
/// Upper bound on how much more a positive example counts than a negative one (topics
/// have few examples against many others).
const MAX_POSITIVE_WEIGHT: f32 = 2.0;
/// The fixed part of a topic's score: its bias, what one of its phrases adds, what one of
/// its not-phrases takes away. Training learns only corrections on top (words that make
/// a phrase a near miss, phrasings the file lacks), so a topic with few examples still
/// rests on its phrases, and an added phrase works at once.
const BIAS: f32 = -2.5;
const PHRASE: f32 = 5.0;
const NOT_PHRASE: f32 = -4.0;

/// A topic's phrases as words and as stems in each language they are matched in.
#[derive(Debug, Clone)]
struct PhraseForms {
    written: String,
    language: Option<&'static str>,
    words: Vec<String>,
    /// Stems per message language (`None`: unstemmed).
    stems: Vec<(Option<&'static str>, Vec<String>)>,
}

impl PhraseForms {
    fn of(phrase: &Phrase) -> PhraseForms {
        let language = phrase
            .language
            .as_deref()
            .and_then(|l| text::LANGUAGES.iter().find(|x| **x == l).copied());
        let languages: Vec<Option<&'static str>> = match &phrase.language {
            Some(l) => text::LANGUAGES
                .iter()
                .find(|x| **x == l.as_str())
                .map(|x| vec![Some(*x)])
                .unwrap_or_default(),
            None => text::LANGUAGES.iter().map(|x| Some(*x)).collect(),
        };
        let stems = languages
            .into_iter()
            .map(|lang| (lang, text::phrase_forms(&phrase.written, lang).1))
            .collect();
        PhraseForms {
            written: phrase.written.clone(),
            language,
            words: phrase.words.clone(),
            stems,
        }
    }

    /// A phrase of one language is matched in messages of that language only (folded
    /// accents make French "tôt" Dutch "tot"); `any` phrases and messages of unknown
    /// language match everywhere.
    fn matches(&self, message: &Text, lang: Option<&str>) -> bool {
        if let (Some(own), Some(lang)) = (self.language, lang) {
            if own != lang {
                return false;
            }
        }
        let stems = self
            .stems
            .iter()
            .find(|(l, _)| *l == lang)
            .map(|(_, s)| s.as_slice())
            .unwrap_or(&[]);
        message.has_phrase(&self.words, stems)
    }
}

/// What the classifier says of one topic for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct Score {
    pub topic: usize,
    pub confidence: f64,
    /// The phrases and words that raised the confidence most, as the guest wrote them.
    pub evidence: Vec<String>,
    /// One of the topic's own phrases is in the message.
    pub phrase: bool,
}

/// The trained classifier of a set of topics.
#[derive(Debug, Clone, Default)]
pub struct Model {
    vocabulary: HashMap<String, usize>,
    /// Per topic: the learned corrections over the vocabulary.
    weights: Vec<Vec<f32>>,
    phrases: Vec<Vec<PhraseForms>>,
    not_phrases: Vec<Vec<PhraseForms>>,
}

impl Model {
    /// Trains one classifier per topic from the topics' texts and `learned` ones.
    pub fn train(topics: &[Topic], learned: &[LabelledText]) -> Model {
        let phrases = topics
            .iter()
            .map(|t| t.phrases.iter().map(PhraseForms::of).collect())
            .collect();
        let not_phrases = topics
            .iter()
            .map(|t| t.not_phrases.iter().map(PhraseForms::of).collect())
            .collect();
        let mut model = Model {
            vocabulary: HashMap::new(),
            weights: Vec::new(),
            phrases,
            not_phrases,
        };
        let texts = training_set(topics, learned);
        let rows = model.rows(topics, &texts);
        let width = model.vocabulary.len();
        model.weights = (0..topics.len())
            .map(|t| train_one(&rows, t, width))
            .collect();
        model
    }

    /// The vocabulary from the training texts, and each text as feature indices with the
    /// topic it is an example of.
    fn rows(&mut self, topics: &[Topic], texts: &[&LabelledText]) -> Vec<Row> {
        let index: HashMap<&str, usize> = topics
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let featured: Vec<(BTreeSet<String>, Matched, Option<usize>)> = texts
            .iter()
            .map(|t| {
                let lang = t.language.as_deref();
                let read = Text::read(&t.text, lang);
                let positive = (t.kind == ExampleKind::Example)
                    .then(|| index.get(t.topic.as_str()).copied())
                    .flatten();
                let (features, matched) = self.features(&read, lang);
                (features, matched, positive)
            })
            .collect();
        let all: BTreeSet<&String> = featured.iter().flat_map(|(f, _, _)| f.iter()).collect();
        self.vocabulary = all
            .into_iter()
            .enumerate()
            .map(|(i, f)| (f.clone(), i))
            .collect();
        featured
            .into_iter()
            .map(|(f, matched, positive)| Row {
                features: f
                    .iter()
                    .filter_map(|x| self.vocabulary.get(x).copied())
                    .collect(),
                phrase: matched.phrases,
                not_phrase: matched.not_phrases,
                positive,
            })
            .collect()
    }

    /// The features of a message, and which phrases of which topic matched (another
    /// topic's phrase is a feature like a word: "early" counts against check-in).
    fn features(&self, message: &Text, lang: Option<&str>) -> (BTreeSet<String>, Matched) {
        let mut features = message.features();
        let mut matched = Matched::default();
        for (t, list) in self.phrases.iter().enumerate() {
            if let Some(p) = list.iter().find(|p| p.matches(message, lang)) {
                features.insert(format!("p:{t}"));
                matched.phrases.push(t);
                matched.written.push((t, p.written.clone()));
            }
        }
        for (t, list) in self.not_phrases.iter().enumerate() {
            if list.iter().any(|p| p.matches(message, lang)) {
                features.insert(format!("n:{t}"));
                matched.not_phrases.push(t);
            }
        }
        (features, matched)
    }

    /// Every topic's confidence for `message`, with its evidence.
    pub fn score(&self, message: &Text, lang: Option<&str>) -> Vec<Score> {
        let (features, matched) = self.features(message, lang);
        let known: Vec<(usize, &String)> = features
            .iter()
            .filter_map(|f| self.vocabulary.get(f).map(|i| (*i, f)))
            .collect();
        self.weights
            .iter()
            .enumerate()
            .map(|(t, w)| {
                let z: f32 = prior(t, &matched.phrases, &matched.not_phrases)
                    + known.iter().map(|(i, _)| w[*i]).sum::<f32>();
                let mut contributions: Vec<(f32, &String)> = known
                    .iter()
                    .map(|(i, f)| (w[*i], *f))
                    .filter(|(c, _)| *c > 0.05)
                    .collect();
                contributions.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
                let phrase = matched
                    .written
                    .iter()
                    .find(|(m, _)| *m == t)
                    .map(|(_, p)| p.clone());
                Score {
                    topic: t,
                    confidence: f64::from(sigmoid(z)),
                    phrase: phrase.is_some(),
                    evidence: evidence(phrase, &contributions, message),
                }
            })
            .collect()
    }
}

/// The texts to learn from, sorted so that reading order never changes the weights.
fn training_set<'a>(topics: &'a [Topic], learned: &'a [LabelledText]) -> Vec<&'a LabelledText> {
    let mut texts: Vec<&LabelledText> = topics
        .iter()
        .flat_map(|t| t.texts.iter())
        .chain(learned)
        .collect();
    texts.sort();
    texts.dedup();
    texts
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// One training text: its feature indices, the topics whose phrases and not-phrases it
/// has, and the topic it is an example of.
struct Row {
    features: Vec<usize>,
    phrase: Vec<usize>,
    not_phrase: Vec<usize>,
    positive: Option<usize>,
}

/// Which topics' phrases matched a message, and the phrase as written.
#[derive(Default)]
struct Matched {
    phrases: Vec<usize>,
    not_phrases: Vec<usize>,
    written: Vec<(usize, String)>,
}

/// The fixed part of topic `t`'s score.
fn prior(t: usize, phrases: &[usize], not_phrases: &[usize]) -> f32 {
    let mut z = BIAS;
    if phrases.contains(&t) {
        z += PHRASE;
    }
    if not_phrases.contains(&t) {
        z += NOT_PHRASE;
    }
    z
}

/// Stochastic gradient descent of one topic's corrections over `rows`, in order.
fn train_one(rows: &[Row], topic: usize, width: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; width];
    let positives = rows.iter().filter(|r| r.positive == Some(topic)).count();
    if positives == 0 {
        return w;
    }
    let negatives = rows.len() - positives;
    let positive_weight = (negatives as f32 / positives as f32)
        .sqrt()
        .clamp(1.0, MAX_POSITIVE_WEIGHT);
    for epoch in 0..EPOCHS {
        let rate = LEARNING_RATE / (1.0 + epoch as f32 / 4.0);
        for row in rows {
            let y = if row.positive == Some(topic) {
                1.0
            } else {
                0.0
            };
            let z = prior(topic, &row.phrase, &row.not_phrase)
                + row.features.iter().map(|i| w[*i]).sum::<f32>();
            let weight = if y > 0.0 { positive_weight } else { 1.0 };
            let gradient = (sigmoid(z) - y) * weight * rate;
            for i in &row.features {
                w[*i] -= gradient + L2 * w[*i];
            }
        }
    }
    w
}

/// Up to three pieces of evidence: the topic phrase that matched, then the words behind
/// the features that raised the confidence most.
fn evidence(
    phrase: Option<String>,
    contributions: &[(f32, &String)],
    message: &Text,
) -> Vec<String> {
    let mut out: Vec<String> = phrase.into_iter().collect();
    let mut seen: BTreeMap<String, ()> = out.iter().map(|p| (p.clone(), ())).collect();
    for (_, feature) in contributions {
        if out.len() >= 3 {
            break;
        }
        if let Some(words) = as_written(feature, message) {
            if seen.insert(words.clone(), ()).is_none() {
                out.push(words);
            }
        }
    }
    out
}

/// The message's own words behind a feature (`s:onlin` → "online").
fn as_written(feature: &str, message: &Text) -> Option<String> {
    let (kind, value) = feature.split_once(':')?;
    let pairs = || message.words.windows(2).zip(message.stems.windows(2));
    match kind {
        "w" => Some(value.to_string()),
        "s" => message
            .stems
            .iter()
            .position(|s| s == value)
            .map(|i| message.words[i].clone()),
        "b" => pairs()
            .find(|(_, s)| format!("{} {}", s[0], s[1]) == value)
            .map(|(w, _)| format!("{} {}", w[0], w[1])),
        "j" => pairs()
            .find(|(w, _)| format!("{}{}", w[0], w[1]) == value)
            .map(|(w, _)| format!("{} {}", w[0], w[1])),
        "c" => message.words.iter().find(|w| w.contains(value)).cloned(),
        _ => None,
    }
}
