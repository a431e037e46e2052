//! Topic files: what a host writes to teach concierge a topic (`rules/topics/*.toml`), parsed
//! and validated into [`Topic`]s.
//!
//! Owns the file format and its checks (unknown key or language, duplicate topic, an
//! example claimed by two topics, a threshold out of range), each reported as a
//! `file:line` [`SourceProblem`]. Must not: read files (`content` hands in the bytes) or
//! train anything (that is [`super::model`]).
//!
//! ```toml
//! topic = "wifi"               # the name rules use: asks("wifi")
//! kind = "faq"                 # faq: answered from the property's facts; person: staff
//! needs = "wifi_password"      # the property var the answer needs (faq)
//! template = "faq_wifi"        # the answer (faq; default "faq_<topic>")
//! answer_at = 0.9              # confidence from which rules may answer (default 0.88)
//! draft_at = 0.45              # confidence from which a person is asked (default 0.45)
//! suppresses = []              # topics this one replaces when both are found
//! [phrases]                    # words that point to the topic, per language or "any"
//! any = ["wifi", "wlan"]
//! [not_phrases]                # words that point away from it ("speed", "safe")
//! en = ["speed", "video call"]
//! [examples]                   # real messages asking for it, per language
//! en = ["what's the wifi password?"]
//! [near_misses]                # real messages that mention it without asking
//! en = ["thanks, the wifi works great"]
//! ```

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::text;
use crate::base::diagnostics::SourceProblem;

/// Default confidence from which a rule may answer automatically.
pub const DEFAULT_ANSWER_AT: f64 = 0.88;
/// Default confidence from which a person is asked (a draft, or staff).
pub const DEFAULT_DRAFT_AT: f64 = 0.45;

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicKind {
    /// Answered with the property's facts (`needs`) by `template`.
    Faq,
    /// Needs a person (pets, refunds, something broken): rules route it to staff.
    Person,
}

/// Whether a labelled text says the topic is asked ([`Example`]) or only mentioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExampleKind {
    Example,
    NearMiss,
}

/// One labelled text of a topic, as training data.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LabelledText {
    pub topic: String,
    pub kind: ExampleKind,
    /// ISO 639-1, or `None` for `any`.
    pub language: Option<String>,
    pub text: String,
}

/// A phrase of a topic file, kept as written and as normalised words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phrase {
    pub written: String,
    pub language: Option<String>,
    pub words: Vec<String>,
}

/// One parsed topic file.
#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub name: String,
    pub kind: TopicKind,
    pub needs: Option<String>,
    pub template: Option<String>,
    pub answer_at: f64,
    pub draft_at: f64,
    pub suppresses: Vec<String>,
    pub phrases: Vec<Phrase>,
    pub not_phrases: Vec<Phrase>,
    pub texts: Vec<LabelledText>,
    pub file: PathBuf,
    /// Content hash of the file.
    pub version: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopicFile {
    topic: Spanned<String>,
    kind: TopicKind,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    needs: Option<String>,
    #[serde(default)]
    template: Option<String>,
    #[serde(default)]
    answer_at: Option<Spanned<f64>>,
    #[serde(default)]
    draft_at: Option<Spanned<f64>>,
    #[serde(default)]
    suppresses: Vec<String>,
    #[serde(default)]
    phrases: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    not_phrases: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    examples: BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    near_misses: BTreeMap<String, Vec<Spanned<String>>>,
}

/// The 1-based line of byte offset `at` in `source`.
fn line_at(source: &str, at: usize) -> usize {
    source.as_bytes()[..at.min(source.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Parses one topic file. Problems of the file itself (syntax, unknown language, bad
/// threshold) reject it; cross-file checks are [`check_set`]'s.
pub fn parse(file: &Path, source: &str, version: String) -> Result<Topic, Vec<SourceProblem>> {
    let parsed: TopicFile = toml::from_str(source).map_err(|e| {
        let line = e.span().map(|s| line_at(source, s.start));
        vec![SourceProblem::new(
            file,
            line,
            format!("not a topic file: {}", e.message()),
        )]
    })?;
    let mut problems = Vec::new();
    let name = parsed.topic.get_ref().trim().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        let line = line_at(source, parsed.topic.span().start);
        problems.push(SourceProblem::new(
            file,
            Some(line),
            format!("topic name {name:?} must be lower-case letters, digits and _"),
        ));
    }
    let answer_at = threshold(
        file,
        source,
        parsed.answer_at.as_ref(),
        DEFAULT_ANSWER_AT,
        &mut problems,
    );
    let draft_at = threshold(
        file,
        source,
        parsed.draft_at.as_ref(),
        DEFAULT_DRAFT_AT,
        &mut problems,
    );
    if parsed.kind == TopicKind::Faq && parsed.needs.is_none() {
        problems.push(SourceProblem::new(
            file,
            None,
            "a faq topic needs `needs = \"<property var>\"`",
        ));
    }
    let phrases = phrase_list(file, source, &parsed.phrases, &mut problems);
    let not_phrases = phrase_list(file, source, &parsed.not_phrases, &mut problems);
    let mut texts = Vec::new();
    for (kind, table) in [
        (ExampleKind::Example, &parsed.examples),
        (ExampleKind::NearMiss, &parsed.near_misses),
    ] {
        for (lang, list) in table {
            let language = language_key(file, source, lang, list.first(), &mut problems);
            texts.extend(list.iter().map(|t| LabelledText {
                topic: name.clone(),
                kind,
                language: language.clone(),
                text: t.get_ref().clone(),
            }));
        }
    }
    let _ = parsed.description;
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Topic {
        template: parsed
            .template
            .or_else(|| (parsed.kind == TopicKind::Faq).then(|| format!("faq_{name}"))),
        name,
        kind: parsed.kind,
        needs: parsed.needs,
        answer_at,
        draft_at,
        suppresses: parsed.suppresses,
        phrases,
        not_phrases,
        texts,
        file: file.to_path_buf(),
        version,
    })
}

fn threshold(
    file: &Path,
    source: &str,
    value: Option<&Spanned<f64>>,
    default: f64,
    problems: &mut Vec<SourceProblem>,
) -> f64 {
    let Some(value) = value else { return default };
    let v = *value.get_ref();
    if !(0.0..=1.0).contains(&v) {
        let line = line_at(source, value.span().start);
        problems.push(SourceProblem::new(
            file,
            Some(line),
            format!("{v} is not a confidence between 0 and 1"),
        ));
        return default;
    }
    v
}

/// A language key of a table: `Some(code)`, `None` for `any`; an unknown one is a problem
/// reported at the line of the key's first entry.
fn language_key(
    file: &Path,
    source: &str,
    lang: &str,
    first: Option<&Spanned<String>>,
    problems: &mut Vec<SourceProblem>,
) -> Option<String> {
    if lang == "any" {
        return None;
    }
    if !text::is_supported(lang) {
        let line = first.map(|f| line_at(source, f.span().start));
        problems.push(SourceProblem::new(
            file,
            line,
            format!(
                "unknown language {lang:?} (one of {} or any)",
                text::LANGUAGES.join(", ")
            ),
        ));
    }
    Some(lang.to_string())
}

fn phrase_list(
    file: &Path,
    source: &str,
    table: &BTreeMap<String, Vec<Spanned<String>>>,
    problems: &mut Vec<SourceProblem>,
) -> Vec<Phrase> {
    let mut out = Vec::new();
    for (lang, list) in table {
        let language = language_key(file, source, lang, list.first(), problems);
        for p in list {
            let words = text::words(p.get_ref());
            if words.is_empty() {
                let line = line_at(source, p.span().start);
                problems.push(SourceProblem::new(file, Some(line), "an empty phrase"));
                continue;
            }
            out.push(Phrase {
                written: p.get_ref().clone(),
                language: language.clone(),
                words,
            });
        }
    }
    out
}

/// Checks across topic files: one file per topic name, a text labelled by two topics as
/// their example, a `suppresses` naming no topic. `sources` gives each file's text for
/// line numbers.
pub fn check_set(topics: &[Topic], sources: &HashMap<PathBuf, String>) -> Vec<SourceProblem> {
    let mut problems = Vec::new();
    let mut names: HashMap<&str, &Path> = HashMap::new();
    for t in topics {
        if let Some(first) = names.insert(&t.name, &t.file) {
            problems.push(SourceProblem::new(
                &t.file,
                None,
                format!(
                    "topic {:?} is already defined in {}",
                    t.name,
                    first.display()
                ),
            ));
        }
    }
    for t in topics {
        for s in &t.suppresses {
            if !names.contains_key(s.as_str()) {
                problems.push(SourceProblem::new(
                    &t.file,
                    None,
                    format!("suppresses unknown topic {s:?}"),
                ));
            }
        }
    }
    problems.extend(claimed_twice(topics, sources));
    problems
}

/// An example whose normalised text is also another topic's example.
fn claimed_twice(topics: &[Topic], sources: &HashMap<PathBuf, String>) -> Vec<SourceProblem> {
    let mut owner: HashMap<Vec<String>, &str> = HashMap::new();
    let mut problems = Vec::new();
    for t in topics {
        for ex in t.texts.iter().filter(|x| x.kind == ExampleKind::Example) {
            let key = text::words(&ex.text);
            match owner.get(&key) {
                Some(other) if *other != t.name => {
                    let line = sources.get(&t.file).and_then(|s| find_line(s, &ex.text));
                    problems.push(SourceProblem::new(
                        &t.file,
                        line,
                        format!(
                            "example {:?} is also an example of topic {other:?}",
                            ex.text
                        ),
                    ));
                }
                _ => {
                    owner.insert(key, &t.name);
                }
            }
        }
    }
    problems
}

fn find_line(source: &str, needle: &str) -> Option<usize> {
    let quoted = serde_json::to_string(needle).ok()?;
    let at = source.find(&quoted).or_else(|| source.find(needle))?;
    Some(line_at(source, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WIFI: &str = r#"topic = "wifi"
kind = "faq"
needs = "wifi_password"
[phrases]
any = ["wifi"]
[examples]
en = ["what is the wifi password?"]
"#;

    #[test]
    fn a_topic_file_parses_with_defaults() {
        let t = parse(Path::new("rules/topics/wifi.toml"), WIFI, "v".into()).expect("parses");
        assert_eq!(t.name, "wifi");
        assert_eq!(t.template.as_deref(), Some("faq_wifi"));
        assert_eq!(t.answer_at, DEFAULT_ANSWER_AT);
        assert_eq!(t.texts.len(), 1);
    }

    #[test]
    fn an_unknown_language_is_reported_at_its_line() {
        let bad = WIFI.replace("en = [", "xx = [");
        let problems = parse(Path::new("t.toml"), &bad, "v".into()).expect_err("rejected");
        assert_eq!(problems[0].line, Some(7), "{problems:?}");
        assert!(problems[0].message.contains("unknown language \"xx\""));
    }

    #[test]
    fn duplicates_and_double_claims_are_found() {
        let a = parse(Path::new("a.toml"), WIFI, "v".into()).expect("a");
        let b = parse(Path::new("b.toml"), WIFI, "v".into()).expect("b");
        let other = WIFI.replace("topic = \"wifi\"", "topic = \"net\"");
        let c = parse(Path::new("c.toml"), &other, "v".into()).expect("c");
        let sources = HashMap::from([(PathBuf::from("c.toml"), other.clone())]);
        let problems = check_set(&[a.clone(), b], &sources);
        assert!(
            problems[0].message.contains("already defined"),
            "{problems:?}"
        );
        let problems = check_set(&[a, c], &sources);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].line, Some(7));
        assert!(problems[0]
            .message
            .contains("also an example of topic \"wifi\""));
    }
}
