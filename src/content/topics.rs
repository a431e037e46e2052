//! Reading the host's topic files (`<rules>/topics/*.toml`) into [`Topics`].
//!
//! Owns the file-system side of topics: listing the folder (hidden files and editor
//! backups are not topic files), reading bytes, versioning each file by content hash, and
//! the reload policy: a file that does not parse keeps its last good version, and a set
//! that fails the checks across files (a duplicate topic, an example claimed by two
//! topics) is rejected whole while the last good set keeps running. Must not: parse the
//! format or train (that is `plan::understand`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::base::diagnostics::{content_version, Changes, SourceProblem};
use crate::plan::understand::{topics, LabelledText, Topic, Topics};

/// The topics folder of a rules folder.
pub fn topics_dir(rules_dir: &Path) -> PathBuf {
    rules_dir.join("topics")
}

/// The topic files of `dir`, sorted; a missing folder has none.
fn topic_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| !n.starts_with('.') && !n.ends_with('~'))
        })
        .collect();
    files.sort();
    files
}

/// Loads every topic file of `dir`; files with problems are left out and reported.
pub fn load_topics(dir: &Path, learned: Vec<LabelledText>) -> (Topics, Vec<SourceProblem>) {
    let (topics, changes) = reload_topics(&Topics::default(), dir);
    match topics {
        Some(t) => (t.with_learned(learned), changes.rejected),
        None => (Topics::default(), changes.rejected),
    }
}

/// Re-reads `dir` against `current`: `Some(new topics)` when a file was accepted or
/// removed and the resulting set passes the checks, with what changed.
pub fn reload_topics(current: &Topics, dir: &Path) -> (Option<Topics>, Changes) {
    let mut changes = Changes::default();
    let previous: HashMap<&Path, &Topic> = current
        .topics()
        .iter()
        .map(|t| (t.file.as_path(), t))
        .collect();
    let mut next = Vec::new();
    let mut sources = HashMap::new();
    let files = topic_files(dir);
    for file in &files {
        let old = previous.get(file.as_path()).copied();
        match read_topic(file, old) {
            Read::Unchanged(t) => next.push(t),
            Read::Accepted(t, source) => {
                changes.accepted.push((file.clone(), t.version.clone()));
                sources.insert(file.clone(), source);
                next.push(t);
            }
            Read::Rejected(problems) => {
                changes.rejected.extend(problems);
                next.extend(old.cloned());
            }
        }
    }
    for t in current.topics() {
        if !files.contains(&t.file) {
            changes.removed.push(t.file.clone());
        }
    }
    if changes.accepted.is_empty() && changes.removed.is_empty() {
        return (None, changes);
    }
    fill_sources(&next, &mut sources);
    let set_problems = topics::check_set(&next, &sources);
    if !set_problems.is_empty() {
        changes.accepted.clear();
        changes.removed.clear();
        changes.rejected.extend(set_problems);
        return (None, changes);
    }
    let learned = current.learned_examples().to_vec();
    (Some(Topics::new(next, learned)), changes)
}

enum Read {
    Unchanged(Topic),
    Accepted(Topic, String),
    Rejected(Vec<SourceProblem>),
}

fn read_topic(file: &Path, old: Option<&Topic>) -> Read {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            return match old {
                Some(t) => Read::Unchanged(t.clone()),
                None => Read::Rejected(vec![SourceProblem::new(
                    file,
                    None,
                    format!("cannot read: {e}"),
                )]),
            }
        }
    };
    let version = content_version(&bytes);
    if let Some(t) = old.filter(|t| t.version == version) {
        return Read::Unchanged(t.clone());
    }
    let Ok(source) = String::from_utf8(bytes) else {
        return Read::Rejected(vec![SourceProblem::new(file, None, "not valid UTF-8")]);
    };
    match topics::parse(file, &source, version) {
        Ok(t) => Read::Accepted(t, source),
        Err(problems) => Read::Rejected(problems),
    }
}

/// The text of unchanged files too, for the line numbers of cross-file problems.
fn fill_sources(topics: &[Topic], sources: &mut HashMap<PathBuf, String>) {
    for t in topics {
        if !sources.contains_key(&t.file) {
            if let Ok(s) = std::fs::read_to_string(&t.file) {
                sources.insert(t.file.clone(), s);
            }
        }
    }
}
