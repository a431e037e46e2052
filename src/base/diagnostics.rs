//! What authoring tools and live reload say about source files (rules, templates,
//! fixtures): one [`SourceProblem`] (`file:line: message`), one [`Changes`] report of a
//! reload, the [`content_version`] hash that identifies a file's content, and
//! [`panic_text`] for turning a caught panic into such a message.
//!
//! Owns the shape and the wording of these diagnostics (`rules check` prints them; audit
//! records and reload reports carry them).
//! Must not: read files, log or decide what a problem means: the modules that load rules and
//! templates create them, their callers report them.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// A problem with a source file: compile error, runtime error, limit hit, bad metadata, a
/// template that does not parse. Displayed as `file:line: message` (or `file: message`
/// without a line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct SourceProblem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl SourceProblem {
    pub fn new(file: impl Into<PathBuf>, line: Option<usize>, message: impl Into<String>) -> Self {
        SourceProblem {
            file: file.into(),
            line,
            message: message.into(),
        }
    }
}

impl fmt::Display for SourceProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What one (re)load of a set of source files changed. Callers usually send or act on
/// non-empty reports only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes<P = SourceProblem> {
    /// Files (re)loaded, with their new version ([`content_version`]).
    pub accepted: Vec<(PathBuf, String)>,
    /// Files that disappeared and are no longer used.
    pub removed: Vec<PathBuf>,
    /// Files that failed to load; the previous version (if any) stays in use.
    pub rejected: Vec<P>,
}

// By hand: a derived `Default` would require `P: Default`.
impl<P> Default for Changes<P> {
    fn default() -> Self {
        Changes {
            accepted: Vec::new(),
            removed: Vec::new(),
            rejected: Vec::new(),
        }
    }
}

impl<P> Changes<P> {
    pub fn is_empty(&self) -> bool {
        self.accepted.is_empty() && self.removed.is_empty() && self.rejected.is_empty()
    }
}

/// Short content hash used as rule and template version: the first 12 hex digits of sha256.
pub fn content_version(content: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(content);
    let mut s = String::with_capacity(12);
    for b in digest.iter().take(6) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The message of a caught panic (`panic!("..")` payloads are `&str` or `String`).
pub fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_print_as_file_line_message() {
        assert_eq!(
            SourceProblem::new("rules/10_faq.rhai", Some(3), "oops").to_string(),
            "rules/10_faq.rhai:3: oops"
        );
        assert_eq!(
            SourceProblem::new("templates/wifi.hbs", None, "not valid UTF-8").to_string(),
            "templates/wifi.hbs: not valid UTF-8"
        );
    }

    #[test]
    fn changes_are_empty_until_something_happens() {
        let mut c = Changes::<SourceProblem>::default();
        assert!(c.is_empty());
        c.removed.push("rules/old.rhai".into());
        assert!(!c.is_empty());
    }

    #[test]
    fn versions_are_twelve_hex_digits_of_sha256() {
        // sha256("") = e3b0c44298fc1c14...
        assert_eq!(content_version(b""), "e3b0c44298fc");
    }

    #[test]
    fn panic_payloads_become_text() {
        let caught = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_text(&*caught), "boom 1");
        let caught = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_text(&*caught), "static");
        let caught = std::panic::catch_unwind(|| std::panic::panic_any(7)).unwrap_err();
        assert_eq!(panic_text(&*caught), "panic");
    }
}
