//! Message templates: handlebars files rendered in strict mode into the text of replies and
//! alerts.
//!
//! Owns compiling template sources — `<dir>/<name>.hbs`, per-property overrides
//! `<dir>/<property_id>/<name>.hbs` and per-language variants `<name>.<lang>.hbs` (ISO
//! 639-1, e.g. `faq_wifi.de.hbs`) of both — keeping the last good version of a file that
//! stops parsing on an update, the lookup order, the render context and the date helpers.
//!
//! Lookup for an event of property `pid` in language `lang` (`thread.language`, else
//! `message.language`): `<pid>/<name>.<lang>.hbs`, `<name>.<lang>.hbs`, `<pid>/<name>.hbs`,
//! `<name>.hbs`, first found. An unknown language (no variant) or none uses the default
//! file. It must
//! not read files (`content` lists and reads them and hands over [`TemplateSource`]s), send
//! anything, read the clock, or decide which template to use (rules do that). The service
//! renders through [`crate::plan::plan`], which serialises the event once and hands it to
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

/// One template file as the content layer read it: what [`Templates::update`] compiles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    /// The template name (file stem), e.g. `faq_wifi`.
    pub name: String,
    /// `Some(id)` for an override in `<dir>/<id>/`.
    pub property_id: Option<String>,
    /// `Some("de")` for a language variant `<name>.de.hbs`.
    pub language: Option<String>,
    pub file: PathBuf,
    /// The file's content, or why it could not be read.
    pub bytes: Result<Vec<u8>, SourceProblem>,
}

/// One loaded template file.
#[derive(Debug, Clone)]
pub struct TemplateFile {
    /// The template name (file stem), e.g. `faq_wifi`.
    pub name: String,
    /// `Some(id)` for an override in `<dir>/<id>/`.
    pub property_id: Option<String>,
    /// `Some("de")` for a language variant `<name>.de.hbs`.
    pub language: Option<String>,
    pub file: PathBuf,
    /// Short sha256 of the content.
    pub version: String,
    compiled: Template,
}

impl TemplateFile {
    fn key(&self) -> String {
        key_of(
            &self.name,
            self.property_id.as_deref(),
            self.language.as_deref(),
        )
    }
}

/// Registry key: `[<property_id>/]<name>[.<lang>]`.
fn key_of(name: &str, property_id: Option<&str>, language: Option<&str>) -> String {
    let base = match property_id {
        Some(p) => format!("{p}/{name}"),
        None => name.to_string(),
    };
    match language {
        Some(l) => format!("{base}.{l}"),
        None => base,
    }
}

/// The language an event's templates are looked up in: `thread.language`, else
/// `message.language`, else (a stay message to a booking without a thread yet) the
/// booking's language.
pub fn event_language(event: &Event) -> Option<&str> {
    event
        .thread
        .as_ref()
        .and_then(|t| t.language.as_deref())
        .or_else(|| event.message.as_ref().and_then(|m| m.language.as_deref()))
        .or_else(|| event.booking.as_ref().and_then(|b| b.language.as_deref()))
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
    /// Builds the templates from `sources` (see [`TemplateSource`]). Files that cannot be
    /// read or do not parse are left out and reported.
    pub fn from_sources(sources: Vec<TemplateSource>) -> (Templates, Vec<SourceProblem>) {
        let (t, changes) = Templates::default().update(sources);
        (t, changes.rejected)
    }

    /// The templates after the files in `sources` (all files now present): unchanged files
    /// are kept, changed/added ones that parse are added or replace the old version, a file
    /// that can no longer be read or parsed keeps its last good version, and files absent
    /// from `sources` are dropped.
    pub fn update(&self, sources: Vec<TemplateSource>) -> (Templates, Changes) {
        let mut changes = Changes::default();
        let mut files = BTreeMap::new();
        for source in sources {
            let key = key_of(
                &source.name,
                source.property_id.as_deref(),
                source.language.as_deref(),
            );
            let previous = self.inner.files.get(&key);
            match self.updated_file(source, previous, &mut changes) {
                Some(file) => {
                    files.insert(key, file);
                }
                None => {
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

    /// The file to use for `source`: the previous one if the content is unchanged, the newly
    /// compiled one (accepted), or `None` when it cannot be read or parsed (rejected; the
    /// caller keeps the previous version).
    fn updated_file(
        &self,
        source: TemplateSource,
        previous: Option<&TemplateFile>,
        changes: &mut Changes,
    ) -> Option<TemplateFile> {
        let TemplateSource {
            name,
            property_id,
            language,
            file,
            bytes,
        } = source;
        let bytes = match bytes {
            Ok(bytes) => bytes,
            Err(problem) => {
                changes.rejected.push(problem);
                return None;
            }
        };
        let version = content_version(&bytes);
        if let Some(prev) = previous.filter(|p| p.version == version && p.file == file) {
            return Some(prev.clone());
        }
        match compile(&file, &bytes) {
            Ok(compiled) => {
                changes.accepted.push((file.clone(), version.clone()));
                Some(TemplateFile {
                    name,
                    property_id,
                    language,
                    file,
                    version,
                    compiled,
                })
            }
            Err(problem) => {
                changes.rejected.push(problem);
                None
            }
        }
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

    /// The file that `name` resolves to for `property_id` without a language (override
    /// first).
    pub fn resolve(&self, name: &str, property_id: &str) -> Option<&TemplateFile> {
        self.resolve_in(name, property_id, None)
    }

    /// The file that `name` resolves to for `property_id` in `language`:
    /// `<pid>/<name>.<lang>`, `<name>.<lang>`, `<pid>/<name>`, `<name>`.
    pub fn resolve_in(
        &self,
        name: &str,
        property_id: &str,
        language: Option<&str>,
    ) -> Option<&TemplateFile> {
        let files = &self.inner.files;
        let variant = language.and_then(|l| {
            files
                .get(&key_of(name, Some(property_id), Some(l)))
                .or_else(|| files.get(&key_of(name, None, Some(l))))
        });
        variant
            .or_else(|| files.get(&key_of(name, Some(property_id), None)))
            .or_else(|| files.get(name))
    }

    /// The languages `name` has variants in (global or for any property), sorted.
    pub fn languages(&self, name: &str) -> Vec<String> {
        let set: BTreeSet<_> = self
            .inner
            .files
            .values()
            .filter(|f| f.name == name)
            .filter_map(|f| f.language.clone())
            .collect();
        set.into_iter().collect()
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
        let file = self
            .resolve_in(name, &event.property.id, event_language(event))
            .ok_or_else(|| TemplateError::NotFound {
                template: name.to_string(),
                property_id: event.property.id.clone(),
            })?;
        self.render_file_json(file, event, event_json, rule_vars)
    }

    /// Renders exactly `file` (one variant or override, whatever the event's property and
    /// language): `rules check` renders every file of a template this way.
    pub fn render_file(
        &self,
        file: &TemplateFile,
        event: &Event,
        rule_vars: &Map<String, Value>,
    ) -> Result<String, TemplateError> {
        self.render_file_json(file, event, &crate::plan::event_json(event), rule_vars)
    }

    fn render_file_json(
        &self,
        file: &TemplateFile,
        event: &Event,
        event_json: &Map<String, Value>,
        rule_vars: &Map<String, Value>,
    ) -> Result<String, TemplateError> {
        let name = file.name.as_str();
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

    fn source(name: &str, text: &str) -> TemplateSource {
        TemplateSource {
            name: name.to_string(),
            property_id: None,
            language: None,
            file: PathBuf::from(format!("templates/{name}.hbs")),
            bytes: Ok(text.as_bytes().to_vec()),
        }
    }

    #[test]
    fn an_update_keeps_the_last_good_version_of_an_unreadable_or_broken_file() {
        let (t, problems) =
            Templates::from_sources(vec![source("a", "A {{property.id}}"), source("b", "B")]);
        assert!(problems.is_empty(), "{problems:?}");
        let unreadable = SourceProblem::new("templates/a.hbs", None, "cannot read: gone");
        let (t2, changes) = t.update(vec![
            TemplateSource {
                bytes: Err(unreadable.clone()),
                ..source("a", "")
            },
            source("b", "B {{#if}}"),
        ]);
        assert!(changes.accepted.is_empty() && changes.removed.is_empty());
        assert_eq!(changes.rejected.len(), 2);
        assert_eq!(changes.rejected[0], unreadable);
        assert_eq!(changes.rejected[1].file, PathBuf::from("templates/b.hbs"));
        assert_eq!(t2.version("a", "p1"), t.version("a", "p1"));
        assert_eq!(t2.version("b", "p1"), t.version("b", "p1"));
    }

    #[test]
    fn an_update_accepts_changed_files_keeps_unchanged_ones_and_drops_missing_ones() {
        let (t, _) = Templates::from_sources(vec![source("a", "A"), source("b", "B")]);
        let (t2, changes) = t.update(vec![source("a", "A2")]);
        assert_eq!(
            changes.accepted,
            vec![(PathBuf::from("templates/a.hbs"), content_version(b"A2"))]
        );
        assert_eq!(changes.removed, vec![PathBuf::from("templates/b.hbs")]);
        assert_eq!(t2.names(), vec!["a".to_string()]);
        let (_, unchanged) = t2.update(vec![source("a", "A2")]);
        assert!(unchanged.is_empty());
    }

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
        let (mut templates, problems) = Templates::from_sources(vec![
            source("bad", "Hi {{boom}}"),
            source("good", "Hi {{property.id}}"),
        ]);
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
