//! Reading the host's content from disk: the rule files (`<rules>/*.rhai`, in file-name
//! order) and the template files (`<templates>/*.hbs` and per-property overrides
//! `<templates>/<property_id>/*.hbs`; `<name>.<lang>.hbs` is the variant of `<name>` in
//! language `<lang>`, two lower-case letters, ISO 639-1), compiled through `plan`.
//!
//! Owns the file-system side of loading: listing the directories (hidden files and editor
//! backups are not rule/template files), reading bytes, and the problems of that side
//! (unreadable/missing directory, unreadable file, rule not valid UTF-8). [`load_content`]
//! is the one way every caller (`rules check`, `rules test`, `replay`, benches, tests) loads
//! both directories at once; the live reloader uses the same listing and reading.
//! Attachments (`<attachments>/<name>` and overrides `<attachments>/<property_id>/<name>`)
//! live in the folder next to the templates folder: [`attachments_dir`].
//! Must not: compile or render anything itself (that is `plan`), decide what a problem means
//! (callers report them), or watch files (the reloader in this module's parent does).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::base::diagnostics::{Changes, SourceProblem};
use crate::plan::attachments::{AttachmentSource, Attachments};
use crate::plan::rules::{CompiledRule, RuleEngine, RuleProblem, RuleSet};
use crate::plan::templates::{TemplateSource, Templates};
use crate::plan::Content;

/// What a load of both directories left out, by kind (a rule count is `rules loaded + rule
/// problems`, so the kinds stay apart).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadProblems {
    /// Rule files that could not be read or compiled, or the unreadable rules directory.
    pub rules: Vec<RuleProblem>,
    /// Template files that could not be read or parsed, or the unreadable templates
    /// directory.
    pub templates: Vec<SourceProblem>,
    /// Attachment files that could not be read or are over the size limit (a missing
    /// attachments folder is no problem: no attachments).
    pub attachments: Vec<SourceProblem>,
    /// Topic files (`<rules>/topics/*.toml`) that could not be read or parsed, and problems
    /// across them (a duplicate topic, an example claimed by two topics).
    pub topics: Vec<SourceProblem>,
}

impl LoadProblems {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
            && self.templates.is_empty()
            && self.attachments.is_empty()
            && self.topics.is_empty()
    }

    /// Every problem, rules first.
    pub fn all(&self) -> impl Iterator<Item = &SourceProblem> {
        self.rules
            .iter()
            .chain(self.templates.iter())
            .chain(self.attachments.iter())
            .chain(self.topics.iter())
    }
}

/// The attachments folder that goes with `templates_dir`: `attachments/` next to it
/// (`<root>/templates` → `<root>/attachments`).
pub fn attachments_dir(templates_dir: &Path) -> PathBuf {
    match templates_dir.parent() {
        Some(parent) => parent.join("attachments"),
        None => PathBuf::from("attachments"),
    }
}

/// Loads the rules of `rules_dir` and the templates of `templates_dir` into one snapshot.
/// Files that cannot be read, compiled or parsed are left out and reported.
pub fn load_content(
    engine: &RuleEngine,
    rules_dir: &Path,
    templates_dir: &Path,
) -> (Content, LoadProblems) {
    let (rules, rule_problems) = load_rules(engine, rules_dir);
    let (templates, template_problems) = load_templates(templates_dir);
    let (attachments, attachment_changes) =
        reload_attachments(&Attachments::default(), &attachments_dir(templates_dir));
    let (topics, topic_problems) =
        super::topics::load_topics(&super::topics::topics_dir(rules_dir), Vec::new());
    let problems = LoadProblems {
        rules: rule_problems,
        templates: template_problems,
        attachments: attachment_changes.rejected,
        topics: topic_problems,
    };
    let content = Content::new(rules, templates)
        .with_attachments(attachments)
        .with_topics(topics);
    (content, problems)
}

/// Re-reads the attachments folder `dir` against `current` (see [`Attachments::update`]).
/// A missing folder means no attachments.
pub fn reload_attachments(current: &Attachments, dir: &Path) -> (Attachments, Changes) {
    current.update(attachment_sources(dir))
}

/// Every attachment file in `dir` and its direct sub-folders (per-property overrides),
/// sorted; hidden files are skipped.
fn attachment_sources(dir: &Path) -> Vec<AttachmentSource> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let Some(fname) = visible_name(&path) else {
            continue;
        };
        if path.is_dir() {
            let Ok(sub) = std::fs::read_dir(&path) else {
                continue;
            };
            for e in sub.filter_map(|e| e.ok()) {
                let p = e.path();
                if let Some(name) = visible_name(&p).filter(|_| p.is_file()) {
                    out.push(attachment_source(name, Some(fname.clone()), p));
                }
            }
        } else if path.is_file() {
            out.push(attachment_source(fname, None, path));
        }
    }
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

fn visible_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    (!name.starts_with('.') && !name.ends_with('~')).then(|| name.to_string())
}

fn attachment_source(name: String, property_id: Option<String>, file: PathBuf) -> AttachmentSource {
    // Bounded read: a file far over the limit is not read whole into memory.
    let limit = crate::plan::attachments::MAX_ATTACHMENT_BYTES as u64 + 1;
    let bytes = std::fs::File::open(&file)
        .and_then(|f| {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(f, limit), &mut buf).map(|_| buf)
        })
        .map_err(|e| SourceProblem::new(&file, None, format!("cannot read: {e}")));
    AttachmentSource {
        name,
        property_id,
        file,
        bytes,
    }
}

/// Compiles every `*.rhai` in `dir` (not recursive), sorted by file name. Files that cannot
/// be read or do not compile are left out and reported.
pub fn load_rules(engine: &RuleEngine, dir: &Path) -> (RuleSet, Vec<RuleProblem>) {
    let mut problems = Vec::new();
    let mut rules = Vec::new();
    match rule_files(dir) {
        Ok(files) => {
            for file in files {
                match compile_rule_file(engine, &file) {
                    Ok(rule) => rules.push(Arc::new(rule)),
                    Err(p) => problems.push(p),
                }
            }
        }
        Err(p) => problems.push(p),
    }
    (RuleSet::new(rules), problems)
}

/// Reads and compiles one rule file.
pub fn compile_rule_file(engine: &RuleEngine, path: &Path) -> Result<CompiledRule, RuleProblem> {
    let bytes = std::fs::read(path)
        .map_err(|e| RuleProblem::new(path, None, format!("cannot read: {e}")))?;
    let source = rule_text(path, bytes)?;
    engine.compile_source(path, &source)
}

/// A rule file's bytes as text.
pub(crate) fn rule_text(path: &Path, bytes: Vec<u8>) -> Result<String, RuleProblem> {
    String::from_utf8(bytes).map_err(|_| RuleProblem::new(path, None, "not valid UTF-8"))
}

/// Loads every `*.hbs` in `dir` and in its direct sub-directories (per-property overrides).
/// Files that cannot be read or do not parse are left out and reported.
pub fn load_templates(dir: &Path) -> (Templates, Vec<SourceProblem>) {
    let (templates, changes) = reload_templates(&Templates::default(), dir);
    (templates, changes.rejected)
}

/// Re-reads `dir` against `current`: unchanged files are kept, changed/added ones that parse
/// are taken, a file that no longer reads or parses keeps its last good version, deleted
/// files are dropped. An unreadable directory keeps `current` as it is and is reported.
pub fn reload_templates(current: &Templates, dir: &Path) -> (Templates, Changes) {
    match template_sources(dir) {
        Ok(sources) => current.update(sources),
        Err(problem) => {
            let mut changes = Changes::default();
            changes.rejected.push(problem);
            (current.clone(), changes)
        }
    }
}

/// `*.rhai` files directly in `dir`, sorted by file name.
pub(crate) fn rule_files(dir: &Path) -> Result<Vec<PathBuf>, RuleProblem> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| RuleProblem::new(dir, None, format!("cannot read rules directory: {e}")))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| is_rule_file(p) && p.is_file())
        .collect();
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Whether a directory entry looks like a rule file (`*.rhai`, not hidden, not an editor
/// backup).
fn is_rule_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".rhai") && name.len() > ".rhai".len()
}

/// Every template file under `dir` with its content (or why it could not be read), sorted by
/// `(name, property_id, path)`.
fn template_sources(dir: &Path) -> Result<Vec<TemplateSource>, SourceProblem> {
    Ok(template_files(dir)?
        .into_iter()
        .map(|((name, language), property_id, file)| {
            let bytes = std::fs::read(&file)
                .map_err(|e| SourceProblem::new(&file, None, format!("cannot read: {e}")));
            TemplateSource {
                name,
                property_id,
                language,
                file,
                bytes,
            }
        })
        .collect())
}

/// A template file's name and language: `faq_wifi.de.hbs` → `("faq_wifi", Some("de"))`.
type NameLang = (String, Option<String>);

/// `((name, language), property_id, path)` of every template file under `dir`, sorted.
#[allow(clippy::type_complexity)]
fn template_files(dir: &Path) -> Result<Vec<(NameLang, Option<String>, PathBuf)>, SourceProblem> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        SourceProblem::new(dir, None, format!("cannot read templates directory: {e}"))
    })?;
    let mut out = Vec::new();
    for entry in entries.filter_map(|e| e.ok()) {
        let path = entry.path();
        let Some(fname) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if fname.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            // An unreadable override folder is skipped, as if empty.
            let Ok(sub) = std::fs::read_dir(&path) else {
                continue;
            };
            for e in sub.filter_map(|e| e.ok()) {
                if let Some(name) = template_stem(&e.path()) {
                    out.push((name, Some(fname.to_string()), e.path()));
                }
            }
        } else if let Some(name) = template_stem(&path) {
            out.push((name, None, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The template name and language of a `*.hbs` file (not hidden, not a directory).
fn template_stem(path: &Path) -> Option<NameLang> {
    let fname = path.file_name()?.to_str()?;
    if fname.starts_with('.') || !path.is_file() {
        return None;
    }
    let stem = fname.strip_suffix(".hbs")?;
    (!stem.is_empty()).then(|| split_language(stem))
}

/// `faq_wifi.de` → `("faq_wifi", Some("de"))`; a stem without a two-letter lower-case
/// suffix is a name on its own (`faq_wifi`, `notes.v2`).
fn split_language(stem: &str) -> NameLang {
    match stem.rsplit_once('.') {
        Some((name, lang))
            if !name.is_empty()
                && lang.len() == 2
                && lang.chars().all(|c| c.is_ascii_lowercase()) =>
        {
            (name.to_string(), Some(lang.to_string()))
        }
        _ => (stem.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_files_are_rhai_files_that_are_not_hidden() {
        assert!(is_rule_file(Path::new("rules/10_faq.rhai")));
        assert!(!is_rule_file(Path::new("rules/.10_faq.rhai")));
        assert!(!is_rule_file(Path::new("rules/.rhai")));
        assert!(!is_rule_file(Path::new("rules/10_faq.rhai~")));
        assert!(!is_rule_file(Path::new("rules/10_faq.rhai.swp")));
    }

    #[test]
    fn one_load_reports_rules_and_templates_apart_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rules, templates) = (dir.path().join("rules"), dir.path().join("templates"));
        std::fs::create_dir_all(templates.join("p1")).expect("mkdir");
        std::fs::create_dir_all(&rules).expect("mkdir");
        std::fs::write(rules.join("20_ok.rhai"), "close_thread();\n").expect("write");
        std::fs::write(rules.join("10_bad.rhai"), [0xff, 0xfe]).expect("write");
        std::fs::write(rules.join("05_ok.rhai"), "close_thread();\n").expect("write");
        std::fs::write(templates.join("wifi.hbs"), "Wifi").expect("write");
        std::fs::write(templates.join("p1").join("wifi.hbs"), "Casa").expect("write");
        std::fs::write(templates.join("broken.hbs"), "{{#if}}").expect("write");

        let (content, problems) = load_content(&RuleEngine::default(), &rules, &templates);
        let names: Vec<_> = content.rules.rules().iter().map(|r| &r.name).collect();
        assert_eq!(names, ["05_ok", "20_ok"]);
        assert_eq!(
            problems.rules,
            [RuleProblem::new(
                rules.join("10_bad.rhai"),
                None,
                "not valid UTF-8"
            )]
        );
        assert_eq!(problems.templates.len(), 1);
        assert_eq!(problems.templates[0].file, templates.join("broken.hbs"));
        assert_eq!(problems.all().count(), 2);
        assert_eq!(content.templates.files().count(), 2);
        let p1 = content.templates.resolve("wifi", "p1").expect("override");
        assert_eq!(p1.property_id.as_deref(), Some("p1"));
    }

    #[test]
    fn language_variants_are_read_from_the_file_name() {
        assert_eq!(
            split_language("faq_wifi.de"),
            ("faq_wifi".into(), Some("de".into()))
        );
        assert_eq!(split_language("faq_wifi"), ("faq_wifi".into(), None));
        assert_eq!(split_language("notes.v2"), ("notes.v2".into(), None));
        assert_eq!(split_language("notes.DE"), ("notes.DE".into(), None));
        assert_eq!(split_language(".de"), (".de".into(), None));
    }

    #[test]
    fn templates_resolve_property_and_language_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = dir.path();
        std::fs::create_dir_all(t.join("p1")).expect("mkdir");
        for (file, text) in [
            ("wifi.hbs", "default"),
            ("wifi.de.hbs", "deutsch"),
            ("wifi.fr.hbs", "français"),
            ("p1/wifi.hbs", "p1 default"),
            ("p1/wifi.fr.hbs", "p1 français"),
        ] {
            std::fs::write(t.join(file), text).expect("write");
        }
        let (templates, problems) = load_templates(t);
        assert!(problems.is_empty(), "{problems:?}");
        let resolved = |pid: &str, lang: Option<&str>| {
            let f = templates.resolve_in("wifi", pid, lang).expect("resolves");
            f.file.strip_prefix(t).expect("inside").to_path_buf()
        };
        assert_eq!(resolved("p1", Some("fr")), Path::new("p1/wifi.fr.hbs"));
        assert_eq!(resolved("p1", Some("de")), Path::new("wifi.de.hbs"));
        assert_eq!(resolved("p1", Some("it")), Path::new("p1/wifi.hbs"));
        assert_eq!(resolved("p1", None), Path::new("p1/wifi.hbs"));
        assert_eq!(resolved("p2", Some("fr")), Path::new("wifi.fr.hbs"));
        assert_eq!(resolved("p2", Some("it")), Path::new("wifi.hbs"));
        assert_eq!(templates.names(), ["wifi"]);
        assert_eq!(templates.languages("wifi"), ["de", "fr"]);
    }

    #[test]
    fn missing_directories_are_one_problem_each() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rules, templates) = (dir.path().join("rules"), dir.path().join("templates"));
        let (content, problems) = load_content(&RuleEngine::default(), &rules, &templates);
        assert!(content.rules.is_empty());
        assert_eq!(problems.rules.len(), 1);
        assert!(problems.rules[0]
            .message
            .starts_with("cannot read rules directory: "));
        assert_eq!(problems.templates.len(), 1);
        assert!(problems.templates[0]
            .message
            .starts_with("cannot read templates directory: "));
    }
}
