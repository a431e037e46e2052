//! Loading rule and template files ([`load`]), and their live reload while the service runs.
//!
//! Owns the current [`Content`] snapshot (compiled rules + templates) behind an
//! `RwLock<Arc<Content>>`, the file watcher (notify + notify-debouncer-mini on a std thread,
//! bridged to tokio through an mpsc channel), and the reload policy: changed/added files are
//! recompiled, deleted ones dropped, and a file that does not compile/parse is REJECTED while
//! the last good version of that file keeps running. Every change is reported as a
//! [`ReloadReport`] on the receiver (the wiring turns rejections into `rule_rejected` audit
//! records). It must not evaluate rules or render templates (that is `plan`), must not write
//! audit records itself, and never stops serving the last good snapshot.
//!
//! Directories are watched (not files), so editors that save by rename-over are seen; the
//! watches are re-added after every change and a slow periodic rescan covers missed events
//! (or a missing watcher). An edit takes effect well within 2 s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::base::diagnostics::{content_version, Changes};
use crate::plan::attachments::Attachments;
use crate::plan::rules::{CompiledRule, RuleEngine, RuleSet};
use crate::plan::templates::Templates;
use crate::plan::Content;

pub mod load;
pub mod topics;

pub use load::{
    attachments_dir, compile_rule_file, load_content, load_rules, load_templates,
    reload_attachments, reload_templates, LoadProblems,
};

/// Debounce window for file events.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Safety-net rescan period when the watcher works / when it could not be set up.
const RESCAN_WATCHED: Duration = Duration::from_secs(5);
const RESCAN_UNWATCHED: Duration = Duration::from_secs(1);

/// What one reload of rules and templates changed (accepted files with their version,
/// removed files, rejected files whose previous version keeps running). Only non-empty
/// reports are sent.
pub type ReloadReport = Changes;

/// The live rules and templates. Dropping it stops the watcher thread.
pub struct LiveRules {
    reloader: Arc<Reloader>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for LiveRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveRules")
            .field("rules_dir", &self.reloader.rules_dir)
            .field("templates_dir", &self.reloader.templates_dir)
            .finish_non_exhaustive()
    }
}

impl LiveRules {
    /// Loads both directories now and watches them. The first report on the receiver is the
    /// initial load (every accepted file, every rejected one).
    pub fn watch(
        rules_dir: impl Into<PathBuf>,
        templates_dir: impl Into<PathBuf>,
        engine: Arc<RuleEngine>,
    ) -> (LiveRules, mpsc::Receiver<ReloadReport>) {
        let (tx, rx) = mpsc::channel(64);
        let reloader = Arc::new(Reloader::new(
            rules_dir.into(),
            templates_dir.into(),
            engine,
        ));
        let initial = reloader.rescan();
        if !initial.is_empty() {
            // Cannot fail: the channel is fresh and has room.
            let _ = tx.try_send(initial);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread_reloader = reloader.clone();
        let thread_stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("rules-watch".into())
            .spawn(move || watch_loop(&thread_reloader, &thread_stop, &tx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the rules watcher thread; live reload is off");
        }
        (LiveRules { reloader, stop }, rx)
    }

    /// A snapshot that is never reloaded automatically (tests, `replay`); `reload_now` still
    /// works.
    pub fn load(
        rules_dir: impl Into<PathBuf>,
        templates_dir: impl Into<PathBuf>,
        engine: Arc<RuleEngine>,
    ) -> (LiveRules, ReloadReport) {
        let reloader = Arc::new(Reloader::new(
            rules_dir.into(),
            templates_dir.into(),
            engine,
        ));
        let report = reloader.rescan();
        let live = LiveRules {
            reloader,
            stop: Arc::new(AtomicBool::new(true)),
        };
        (live, report)
    }

    /// The current rules and templates, one consistent snapshot; cheap (an `Arc` clone
    /// under a read lock).
    pub fn current(&self) -> Arc<Content> {
        self.reloader.current()
    }

    /// Rescans both directories now, synchronously (e.g. on SIGHUP).
    pub fn reload_now(&self) -> ReloadReport {
        self.reloader.rescan()
    }
}

impl Drop for LiveRules {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Reloader {
    rules_dir: PathBuf,
    templates_dir: PathBuf,
    /// `attachments/` next to the templates folder ([`attachments_dir`]).
    attachments_dir: PathBuf,
    engine: Arc<RuleEngine>,
    state: RwLock<Arc<Content>>,
    /// Serialises rescans and remembers what was last reported as rejected, so a file that
    /// stays broken is reported once, not on every rescan.
    book: Mutex<HashMap<PathBuf, String>>,
}

impl Reloader {
    fn new(rules_dir: PathBuf, templates_dir: PathBuf, engine: Arc<RuleEngine>) -> Self {
        Reloader {
            attachments_dir: attachments_dir(&templates_dir),
            rules_dir,
            templates_dir,
            engine,
            state: RwLock::new(Arc::new(Content::default())),
            book: Mutex::new(HashMap::new()),
        }
    }

    fn current(&self) -> Arc<Content> {
        match self.state.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rescans both directories, publishes a new snapshot if anything was accepted or
    /// removed, and reports what changed (a file that stays broken is reported once).
    fn rescan(&self) -> ReloadReport {
        let mut rejected_book = match self.book.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let before = self.current();
        let mut report = ReloadReport::default();
        let rules = self.rescan_rules(&before.rules, &mut rejected_book, &mut report);
        let templates = self.rescan_templates(&before.templates, &mut rejected_book, &mut report);
        let attachments =
            self.rescan_attachments(&before.attachments, &mut rejected_book, &mut report);
        let (topics, topic_changes) =
            topics::reload_topics(&before.topics, &topics::topics_dir(&self.rules_dir));
        merge_changes(topic_changes, &mut rejected_book, &mut report);

        // Forget rejections of files that are gone, so a broken file that comes back is
        // reported again.
        if self.templates_dir.is_dir() {
            rejected_book.remove(&self.templates_dir);
        }
        rejected_book.retain(|f, _| f.exists() || *f == self.rules_dir || *f == self.templates_dir);

        if rules.is_some() || templates.is_some() || attachments.is_some() || topics.is_some() {
            let snapshot = Arc::new(Content {
                rules: rules.map_or_else(|| before.rules.clone(), Arc::new),
                templates: templates.map_or_else(|| before.templates.clone(), Arc::new),
                attachments: attachments.map_or_else(|| before.attachments.clone(), Arc::new),
                topics: topics.map_or_else(|| before.topics.clone(), Arc::new),
            });
            match self.state.write() {
                Ok(mut g) => *g = snapshot,
                Err(p) => *p.into_inner() = snapshot,
            }
        }
        if !report.is_empty() {
            tracing::info!(
                accepted = report.accepted.len(),
                removed = report.removed.len(),
                rejected = report.rejected.len(),
                "rules/templates reloaded"
            );
            for p in &report.rejected {
                tracing::warn!(problem = %p, "rejected; the last good version keeps running");
            }
        }
        report
    }

    /// The rules directory against the running rules: `Some(new set)` when a rule was
    /// accepted or removed, `None` when the running set stays.
    fn rescan_rules(
        &self,
        old_rules: &RuleSet,
        rejected_book: &mut HashMap<PathBuf, String>,
        report: &mut ReloadReport,
    ) -> Option<RuleSet> {
        let files = match load::rule_files(&self.rules_dir) {
            Ok(files) => files,
            Err(problem) => {
                // A missing/unreadable directory (e.g. mid-swap) keeps the rules running.
                let key = self.rules_dir.clone();
                if rejected_book.get(&key) != Some(&problem.message) {
                    rejected_book.insert(key, problem.message.clone());
                    report.rejected.push(problem);
                }
                return None;
            }
        };
        let old: HashMap<&Path, &Arc<CompiledRule>> = old_rules
            .rules()
            .iter()
            .map(|r| (r.file.as_path(), r))
            .collect();
        let mut next = Vec::new();
        let mut changed = false;
        for file in &files {
            let previous = old.get(file.as_path()).copied();
            match self.rescan_rule(file, previous, rejected_book, report) {
                Some(Ok(rule)) => {
                    next.push(rule);
                    changed = true;
                }
                Some(Err(())) | None => next.extend(previous.cloned()),
            }
        }
        for rule in old_rules.rules() {
            if !files.contains(&rule.file) {
                report.removed.push(rule.file.clone());
                changed = true;
            }
        }
        rejected_book.remove(&self.rules_dir);
        changed.then(|| RuleSet::new(next))
    }

    /// One rule file: `None` if unchanged (or unreadable, or already rejected in this
    /// version), `Some(Ok)` with the newly compiled rule, `Some(Err)` if rejected now.
    fn rescan_rule(
        &self,
        file: &Path,
        previous: Option<&Arc<CompiledRule>>,
        rejected_book: &mut HashMap<PathBuf, String>,
        report: &mut ReloadReport,
    ) -> Option<Result<Arc<CompiledRule>, ()>> {
        let source = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                // Vanished between listing and reading: treat as still there.
                tracing::debug!(file = %file.display(), error = %e, "rule unreadable");
                return None;
            }
        };
        let version = content_version(&source);
        if previous.is_some_and(|p| p.version == version)
            || rejected_book.get(file).is_some_and(|v| *v == version)
        {
            return None;
        }
        let compiled =
            load::rule_text(file, source).and_then(|s| self.engine.compile_source(file, &s));
        Some(match compiled {
            Ok(rule) => {
                rejected_book.remove(file);
                report
                    .accepted
                    .push((file.to_path_buf(), rule.version.clone()));
                Ok(Arc::new(rule))
            }
            Err(problem) => {
                rejected_book.insert(file.to_path_buf(), version);
                report.rejected.push(problem);
                Err(())
            }
        })
    }

    /// The attachments folder against the running attachments: `Some(new attachments)`
    /// when a file was accepted or removed.
    fn rescan_attachments(
        &self,
        old: &Attachments,
        rejected_book: &mut HashMap<PathBuf, String>,
        report: &mut ReloadReport,
    ) -> Option<Attachments> {
        let (attachments, changes) = load::reload_attachments(old, &self.attachments_dir);
        merge_changes(changes, rejected_book, report).then_some(attachments)
    }

    /// The templates directory against the running templates: `Some(new templates)` when
    /// one was accepted or removed.
    fn rescan_templates(
        &self,
        old_templates: &Templates,
        rejected_book: &mut HashMap<PathBuf, String>,
        report: &mut ReloadReport,
    ) -> Option<Templates> {
        let (templates, changes) = load::reload_templates(old_templates, &self.templates_dir);
        merge_changes(changes, rejected_book, report).then_some(templates)
    }
}

/// Adds one folder's changes to `report` (a file that stays broken is reported once);
/// whether anything was accepted or removed.
fn merge_changes(
    changes: Changes,
    rejected_book: &mut HashMap<PathBuf, String>,
    report: &mut ReloadReport,
) -> bool {
    let changed = !changes.accepted.is_empty() || !changes.removed.is_empty();
    for (file, version) in changes.accepted {
        rejected_book.remove(&file);
        report.accepted.push((file, version));
    }
    for file in changes.removed {
        rejected_book.remove(&file);
        report.removed.push(file);
    }
    for problem in changes.rejected {
        if rejected_book.get(&problem.file) != Some(&problem.message) {
            rejected_book.insert(problem.file.clone(), problem.message.clone());
            report.rejected.push(problem);
        }
    }
    changed
}

fn watch_loop(reloader: &Reloader, stop: &AtomicBool, tx: &mpsc::Sender<ReloadReport>) {
    let (events_tx, events_rx) = std::sync::mpsc::channel();
    let mut debouncer = match notify_debouncer_mini::new_debouncer(DEBOUNCE, events_tx) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(error = %e, "file watcher unavailable; rescanning every second");
            None
        }
    };
    let mut dirs = watch_targets(&reloader.rules_dir, &reloader.templates_dir);
    // Attachments and their per-property folders, when the folder exists at start (one
    // created later is picked up by the periodic rescan).
    if reloader.attachments_dir.is_dir() {
        dirs.push((reloader.attachments_dir.clone(), RecursiveMode::Recursive));
    }
    let mut watching = rewatch(debouncer.as_mut(), &dirs);
    while !stop.load(Ordering::SeqCst) {
        let period = if watching {
            RESCAN_WATCHED
        } else {
            RESCAN_UNWATCHED
        };
        match events_rx.recv_timeout(period) {
            Ok(result) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "file watcher error");
                }
                // Drain whatever else arrived in the same burst.
                while events_rx.try_recv().is_ok() {}
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                debouncer = None;
                std::thread::sleep(RESCAN_UNWATCHED);
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let report = reloader.rescan();
        // Directories replaced by a rename (or created late) need their watch re-added.
        watching = rewatch(debouncer.as_mut(), &dirs);
        if !report.is_empty() && tx.blocking_send(report).is_err() {
            tracing::debug!("reload report receiver dropped");
        }
    }
}

fn watch_targets(rules: &Path, templates: &Path) -> Vec<(PathBuf, RecursiveMode)> {
    if rules == templates {
        vec![(rules.to_path_buf(), RecursiveMode::Recursive)]
    } else {
        vec![
            (rules.to_path_buf(), RecursiveMode::NonRecursive),
            // Per-property overrides live in sub-directories.
            (templates.to_path_buf(), RecursiveMode::Recursive),
        ]
    }
}

fn rewatch<W: Watcher>(
    debouncer: Option<&mut notify_debouncer_mini::Debouncer<W>>,
    dirs: &[(PathBuf, RecursiveMode)],
) -> bool {
    let Some(debouncer) = debouncer else {
        return false;
    };
    let watcher = debouncer.watcher();
    let mut all = true;
    for (dir, mode) in dirs {
        let _ = watcher.unwatch(dir);
        if let Err(e) = watcher.watch(dir, *mode) {
            tracing::debug!(dir = %dir.display(), error = %e, "cannot watch directory (yet)");
            all = false;
        }
    }
    all
}
