//! Message templates: handlebars files rendered in strict mode into the text of replies and
//! alerts.
//!
//! Owns loading `<dir>/<name>.hbs` and per-property overrides `<dir>/<property_id>/<name>.hbs`
//! (the override wins), keeping the last good version of a file that stops parsing on
//! reload, the render context and the date helpers. It must not send anything, read the
//! clock, or decide which template to use (rules do that). The service renders through
//! [`crate::plan::plan`], which serialises the event once and hands it to
//! [`Templates::render_json`] for every reply/alert of the plan.
//!
//! Render context: the event JSON at the top level (`{{thread.title}}`, `{{message.text}}`,
//! `{{property.vars.wifi_name}}`, `{{inquiry.guest_name}}`, `{{follow_up.data.x}}`) plus
//! `vars` = the property's vars merged with the rule's vars (the rule's keys win).
//! Plain text: no HTML escaping. Strict: a missing variable is an error naming it. The
//! result is trimmed at the end; an empty/whitespace-only result is an error.
//!
//! Date helpers (property timezone; accept RFC 3339, zone-less UTC `2021-07-28T04:25:15.000000`
//! or a bare date; an optional `tz="Europe/Lisbon"` hash overrides the zone):
//! `{{local_date t}}` → `2024-08-01`, `{{local_time t}}` → `14:05`,
//! `{{local_datetime t}}` → `2024-08-01 14:05`, `{{format_time t "%H:%M %d %b"}}` (strftime).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    ScopedJson, Template,
};
use serde_json::{Map, Value};

use crate::base::diagnostics::{content_version, panic_text, Changes, SourceProblem};
use crate::base::time;
use crate::events::Event;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template `{template}` not found (property {property_id})")]
    NotFound {
        template: String,
        property_id: String,
    },
    #[error("template `{template}`: {message}")]
    Render { template: String, message: String },
    #[error("template `{template}` rendered an empty message")]
    Empty { template: String },
}

/// One loaded template file.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    /// The template name (file stem), e.g. `faq_wifi`.
    pub name: String,
    /// `Some(id)` for an override in `<dir>/<id>/`.
    pub property_id: Option<String>,
    pub file: PathBuf,
    /// Short sha256 of the content.
    pub version: String,
    compiled: Template,
}

impl TemplateFile {
    fn key(&self) -> String {
        key_of(&self.name, self.property_id.as_deref())
    }
}

fn key_of(name: &str, property_id: Option<&str>) -> String {
    match property_id {
        Some(p) => format!("{p}/{name}"),
        None => name.to_string(),
    }
}

/// The loaded templates. Cheap to clone.
#[derive(Clone)]
pub struct Templates {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Handlebars<'static>,
    /// By key (`name` or `property_id/name`).
    files: BTreeMap<String, TemplateFile>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("files", &self.inner.files.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Templates::from_files(BTreeMap::new())
    }
}

impl Templates {
    /// Loads every `*.hbs` in `dir` and in its direct sub-directories (per-property
    /// overrides). Files that fail to parse are left out and reported.
    pub fn load_dir(dir: &Path) -> (Templates, Vec<SourceProblem>) {
        let (t, changes) = Templates::default().reload(dir);
        (t, changes.rejected)
    }

    /// Re-reads `dir`, keeping unchanged files, adding/replacing changed ones that parse,
    /// keeping the last good version of a file that no longer parses, and dropping deleted
    /// files.
    pub fn reload(&self, dir: &Path) -> (Templates, Changes) {
        let mut changes = Changes::default();
        let found = match scan(dir) {
            Ok(found) => found,
            Err(p) => {
                changes.rejected.push(p);
                return (self.clone(), changes);
            }
        };
        let mut files = BTreeMap::new();
        for (name, property_id, path) in found {
            let key = key_of(&name, property_id.as_deref());
            let previous = self.inner.files.get(&key);
            let source = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    changes.rejected.push(SourceProblem {
                        file: path.clone(),
                        line: None,
                        message: format!("cannot read: {e}"),
                    });
                    if let Some(prev) = previous {
                        files.insert(key, prev.clone());
                    }
                    continue;
                }
            };
            let version = content_version(&source);
            if let Some(prev) = previous.filter(|p| p.version == version && p.file == path) {
                files.insert(key, prev.clone());
                continue;
            }
            match compile(&path, &source) {
                Ok(compiled) => {
                    changes.accepted.push((path.clone(), version.clone()));
                    files.insert(
                        key,
                        TemplateFile {
                            name,
                            property_id,
                            file: path,
                            version,
                            compiled,
                        },
                    );
                }
                Err(problem) => {
                    changes.rejected.push(problem);
                    if let Some(prev) = previous {
                        files.insert(key, prev.clone());
                    }
                }
            }
        }
        for (key, prev) in &self.inner.files {
            if !files.contains_key(key) {
                changes.removed.push(prev.file.clone());
            }
        }
        if changes.accepted.is_empty() && changes.removed.is_empty() {
            return (self.clone(), changes);
        }
        (Templates::from_files(files), changes)
    }

    fn from_files(files: BTreeMap<String, TemplateFile>) -> Templates {
        let mut registry = Handlebars::new();
        registry.register_escape_fn(handlebars::no_escape);
        registry.set_strict_mode(true);
        register_helpers(&mut registry);
        for (key, f) in &files {
            registry.register_template(key, f.compiled.clone());
        }
        Templates {
            inner: Arc::new(Inner { registry, files }),
        }
    }

    /// Template names (global and overrides), sorted, without duplicates.
    pub fn names(&self) -> Vec<String> {
        let set: BTreeSet<_> = self.inner.files.values().map(|f| f.name.clone()).collect();
        set.into_iter().collect()
    }

    /// All loaded files.
    pub fn files(&self) -> impl Iterator<Item = &TemplateFile> {
        self.inner.files.values()
    }

    /// The file that `name` resolves to for `property_id` (override first).
    pub fn resolve(&self, name: &str, property_id: &str) -> Option<&TemplateFile> {
        self.inner
            .files
            .get(&key_of(name, Some(property_id)))
            .or_else(|| self.inner.files.get(name))
    }

    pub fn has(&self, name: &str, property_id: &str) -> bool {
        self.resolve(name, property_id).is_some()
    }

    /// Content hash of the file `name` resolves to for `property_id`.
    pub fn version(&self, name: &str, property_id: &str) -> Option<String> {
        self.resolve(name, property_id).map(|f| f.version.clone())
    }

    /// Renders `name` for `event` (the property's override if there is one).
    pub fn render(
        &self,
        name: &str,
        event: &Event,
        rule_vars: &Map<String, Value>,
    ) -> Result<String, TemplateError> {
        self.render_json(name, event, &crate::plan::event_json(event), rule_vars)
    }

    /// [`Templates::render`] with the event already serialised (`event_json` must be
    /// `event` as JSON): a plan serialises its event once for every render.
    pub fn render_json(
        &self,
        name: &str,
        event: &Event,
        event_json: &Map<String, Value>,
        rule_vars: &Map<String, Value>,
    ) -> Result<String, TemplateError> {
        let file =
            self.resolve(name, &event.property.id)
                .ok_or_else(|| TemplateError::NotFound {
                    template: name.to_string(),
                    property_id: event.property.id.clone(),
                })?;
        let render_err = |message: String| TemplateError::Render {
            template: name.to_string(),
            message,
        };
        let mut data = event_json.clone();
        let mut vars = event.property.vars.clone();
        for (k, v) in rule_vars {
            vars.insert(k.clone(), v.clone());
        }
        data.insert("vars".into(), Value::Object(vars));
        let context = Value::Object(data);
        // A panic inside handlebars or a helper must not take the worker task down with it:
        // it fails this action (template_error) like any other render error.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.inner.registry.render(&file.key(), &context)
        }));
        let out = match rendered {
            Ok(r) => r.map_err(|e| render_err(describe_render_error(&e)))?,
            Err(payload) => {
                return Err(render_err(format!(
                    "internal error while rendering: {}",
                    panic_text(&*payload)
                )))
            }
        };
        let trimmed = out.trim_end();
        if trimmed.trim().is_empty() {
            return Err(TemplateError::Empty {
                template: name.to_string(),
            });
        }
        Ok(trimmed.to_string())
    }
}

fn describe_render_error(e: &RenderError) -> String {
    let reason = match e.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => format!("missing variable `{path}`"),
        RenderErrorReason::MissingVariable(None) => "missing variable".to_string(),
        other => other.to_string(),
    };
    match e.line_no {
        Some(line) => format!("line {line}: {reason}"),
        None => reason,
    }
}

fn compile(path: &Path, source: &[u8]) -> Result<Template, SourceProblem> {
    let text = std::str::from_utf8(source).map_err(|_| SourceProblem {
        file: path.to_path_buf(),
        line: None,
        message: "not valid UTF-8".into(),
    })?;
    Template::compile(text).map_err(|e| SourceProblem {
        file: path.to_path_buf(),
        line: e.pos().map(|(l, _)| l),
        message: e.reason().to_string(),
    })
}

/// `(name, property_id, path)` of every template file under `dir`, sorted.
fn scan(dir: &Path) -> Result<Vec<(String, Option<String>, PathBuf)>, SourceProblem> {
    let entries = std::fs::read_dir(dir).map_err(|e| SourceProblem {
        file: dir.to_path_buf(),
        line: None,
        message: format!("cannot read templates directory: {e}"),
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

fn template_stem(path: &Path) -> Option<String> {
    let fname = path.file_name()?.to_str()?;
    if fname.starts_with('.') || !path.is_file() {
        return None;
    }
    let stem = fname.strip_suffix(".hbs")?;
    (!stem.is_empty()).then(|| stem.to_string())
}

#[derive(Clone, Copy)]
enum TimeHelper {
    Date,
    Time,
    DateTime,
    Format,
}

impl TimeHelper {
    fn name(self) -> &'static str {
        match self {
            TimeHelper::Date => "local_date",
            TimeHelper::Time => "local_time",
            TimeHelper::DateTime => "local_datetime",
            TimeHelper::Format => "format_time",
        }
    }
}

fn register_helpers(registry: &mut Handlebars<'static>) {
    for h in [
        TimeHelper::Date,
        TimeHelper::Time,
        TimeHelper::DateTime,
        TimeHelper::Format,
    ] {
        registry.register_helper(h.name(), Box::new(h));
    }
}

impl HelperDef for TimeHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let name = self.name();
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 0))?;
        if param.is_value_missing() {
            return Err(RenderError::strict_error(param.relative_path()));
        }
        let raw = param
            .value()
            .as_str()
            .ok_or(RenderErrorReason::InvalidParamType("timestamp string"))?;
        let tz_name = match h.hash_get("tz") {
            Some(v) => v.value().as_str().map(str::to_string),
            None => ctx
                .data()
                .pointer("/property/timezone")
                .and_then(Value::as_str)
                .map(str::to_string),
        };
        let tz = match tz_name {
            Some(n) => time::parse_tz(&n).ok_or_else(|| {
                RenderErrorReason::Other(format!("{name}: unknown timezone `{n}`"))
            })?,
            None => Tz::UTC,
        };
        let t = time::parse_timestamp(raw, tz)
            .map_err(|e| RenderErrorReason::Other(format!("{name}: {e}")))?;
        let fmt = match self {
            TimeHelper::Date => "%Y-%m-%d".to_string(),
            TimeHelper::Time => "%H:%M".to_string(),
            TimeHelper::DateTime => "%Y-%m-%d %H:%M".to_string(),
            TimeHelper::Format => h
                .param(1)
                .and_then(|p| p.value().as_str())
                .ok_or(RenderErrorReason::ParamNotFoundForIndex(name, 1))?
                .to_string(),
        };
        // "Runtime error: " is the wording these messages have always carried (they came
        // through Rhai's error type); audit records keep it.
        let text = time::format_in(t, &fmt, tz)
            .map_err(|e| RenderErrorReason::Other(format!("{name}: Runtime error: {e}")))?;
        Ok(ScopedJson::Derived(Value::String(text)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stands in for a bug in handlebars or a helper.
    struct Boom;

    impl HelperDef for Boom {
        fn call_inner<'reg: 'rc, 'rc>(
            &self,
            _: &Helper<'rc>,
            _: &'reg Handlebars<'reg>,
            _: &'rc Context,
            _: &mut RenderContext<'reg, 'rc>,
        ) -> Result<ScopedJson<'rc>, RenderError> {
            panic!("helper bug")
        }
    }

    #[test]
    fn a_panic_while_rendering_is_a_render_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("bad.hbs"), "Hi {{boom}}").expect("write");
        std::fs::write(dir.path().join("good.hbs"), "Hi {{property.id}}").expect("write");
        let (mut templates, problems) = Templates::load_dir(dir.path());
        assert!(problems.is_empty(), "{problems:?}");
        Arc::get_mut(&mut templates.inner)
            .expect("sole owner")
            .registry
            .register_helper("boom", Box::new(Boom));
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "e1", "type": "schedule.tick", "occurred_at": "2024-07-01T03:00:00Z",
            "property": {"id": "p1", "timezone": "Europe/Lisbon"}, "schedule": {"name": "daily"}
        }))
        .expect("event");
        let err = templates
            .render("bad", &event, &Map::new())
            .expect_err("must fail");
        assert!(
            matches!(&err, TemplateError::Render { message, .. } if message.contains("internal error while rendering: helper bug")),
            "{err}"
        );
        assert_eq!(
            templates.render("good", &event, &Map::new()),
            Ok("Hi p1".into())
        );
    }
}
