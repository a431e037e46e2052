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
const EPOCHS: usize = 30;
/// Step size of the first pass (decays as 1 / (1 + pass / 4)).
const LEARNING_RATE: f32 = 0.4;
/// L2 weight decay per step.
const L2: f32 = 1e-4;
/// Upper bound on how much more a positive example counts than a negative one (topics
/// have few examples against many others).
const MAX_POSITIVE_WEIGHT: f32 = 8.0;

/// A topic's phrases as words and as stems in each language they are matched in.
#[derive(Debug, Clone)]
struct PhraseForms {
    written: String,
    words: Vec<String>,
    /// Stems per message language (`None`: unstemmed).
    stems: Vec<(Option<&'static str>, Vec<String>)>,
}

impl PhraseForms {
    fn of(phrase: &Phrase) -> PhraseForms {
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
            words: phrase.words.clone(),
            stems,
        }
    }

    fn matches(&self, message: &Text, lang: Option<&str>) -> bool {
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
}

/// The trained classifier of a set of topics.
#[derive(Debug, Clone, Default)]
pub struct Model {
    vocabulary: HashMap<String, usize>,
    /// Per topic: weights over the vocabulary, then the bias.
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
        let rows: Vec<(Vec<usize>, Option<usize>)> = model.rows(topics, &texts);
        let width = model.vocabulary.len() + 1;
        model.weights = (0..topics.len())
            .map(|t| train_one(&rows, t, width))
            .collect();
        model
    }

    /// The vocabulary from the training texts, and each text as feature indices with the
    /// topic it is an example of.
    fn rows(&mut self, topics: &[Topic], texts: &[&LabelledText]) -> Vec<(Vec<usize>, Option<usize>)> {
        let index: HashMap<&str, usize> = topics.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
        let featured: Vec<(BTreeSet<String>, Option<usize>)> = texts
            .iter()
            .map(|t| {
                let lang = t.language.as_deref();
                let read = Text::read(&t.text, lang);
                let positive = (t.kind == ExampleKind::Example)
                    .then(|| index.get(t.topic.as_str()).copied())
                    .flatten();
                (self.features(&read, lang).0, positive)
            })
            .collect();
        let all: BTreeSet<&String> = featured.iter().flat_map(|(f, _)| f.iter()).collect();
        self.vocabulary = all.into_iter().enumerate().map(|(i, f)| (f.clone(), i)).collect();
        featured
            .into_iter()
            .map(|(f, positive)| (f.iter().filter_map(|x| self.vocabulary.get(x).copied()).collect(), positive))
            .collect()
    }

    /// The features of a message, and which phrases of which topic matched.
    fn features(&self, message: &Text, lang: Option<&str>) -> (BTreeSet<String>, Vec<(usize, String)>) {
        let mut features = message.features();
        let mut matched = Vec::new();
        for (t, list) in self.phrases.iter().enumerate() {
            if let Some(p) = list.iter().find(|p| p.matches(message, lang)) {
                features.insert(format!("p:{t}"));
                matched.push((t, p.written.clone()));
            }
        }
        for (t, list) in self.not_phrases.iter().enumerate() {
            if list.iter().any(|p| p.matches(message, lang)) {
                features.insert(format!("n:{t}"));
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
                let bias = w[w.len() - 1];
                let z: f32 = bias + known.iter().map(|(i, _)| w[*i]).sum::<f32>();
                let mut contributions: Vec<(f32, &String)> =
                    known.iter().map(|(i, f)| (w[*i], *f)).filter(|(c, _)| *c > 0.05).collect();
                contributions.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
                let phrase = matched.iter().find(|(m, _)| *m == t).map(|(_, p)| p.clone());
                Score {
                    topic: t,
                    confidence: f64::from(sigmoid(z)),
                    evidence: evidence(phrase, &contributions, message),
                }
            })
            .collect()
    }
}

/// The texts to learn from, sorted so that reading order never changes the weights.
fn training_set<'a>(topics: &'a [Topic], learned: &'a [LabelledText]) -> Vec<&'a LabelledText> {
    let mut texts: Vec<&LabelledText> = topics.iter().flat_map(|t| t.texts.iter()).chain(learned).collect();
    texts.sort();
    texts.dedup();
    texts
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Stochastic gradient descent of one topic's logistic regression over `rows`, in order.
fn train_one(rows: &[(Vec<usize>, Option<usize>)], topic: usize, width: usize) -> Vec<f32> {
    let mut w = vec![0.0f32; width];
    let bias = width - 1;
    let positives = rows.iter().filter(|(_, p)| *p == Some(topic)).count();
    if positives == 0 {
        w[bias] = -8.0;
        return w;
    }
    let negatives = rows.len() - positives;
    let positive_weight = (negatives as f32 / positives as f32).sqrt().clamp(1.0, MAX_POSITIVE_WEIGHT);
    for epoch in 0..EPOCHS {
        let rate = LEARNING_RATE / (1.0 + epoch as f32 / 4.0);
        for (features, label) in rows {
            let y = if *label == Some(topic) { 1.0 } else { 0.0 };
            let z = w[bias] + features.iter().map(|i| w[*i]).sum::<f32>();
            let weight = if y > 0.0 { positive_weight } else { 1.0 };
            let gradient = (sigmoid(z) - y) * weight * rate;
            for i in features {
                w[*i] -= gradient + L2 * w[*i];
            }
            w[bias] -= gradient;
        }
    }
    w
}

/// Up to three pieces of evidence: the topic phrase that matched, then the words behind
/// the features that raised the confidence most.
fn evidence(phrase: Option<String>, contributions: &[(f32, &String)], message: &Text) -> Vec<String> {
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
        "s" => message.stems.iter().position(|s| s == value).map(|i| message.words[i].clone()),
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
