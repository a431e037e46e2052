//! Configuration: `concierge.toml` plus environment overrides, validated once at start.
//!
//! Owns the typed configuration, its defaults, the environment-override scheme and the
//! one-line error that names the offending key and file (the CLI maps it to exit code 2).
//! It must not start anything or read the command line; `cli` hands it the path. It is a
//! low-level module: it uses only `base` (cron specs are parsed here, once, into
//! [`CronSpec`]s) and `events`, never `store` or `roles` (the claim's [`send_margin`] that
//! validation relies on lives here for that reason).
//!
//! Environment overrides (applied on top of the file, before validation):
//! - the well-known names `CHANNEX_API_KEY`, `CHANNEX_BASE_URL`, `NATS_URL`,
//!   `NATS_CREDENTIALS`, `CONCIERGE_WEBHOOK_URL`, `CONCIERGE_WEBHOOK_SECRET`,
//!   `CONCIERGE_CONSOLE_TOKEN`;
//! - any key as `CONCIERGE_<SECTION>_<KEY>`, e.g. `CONCIERGE_CHANNEX_POLL_INTERVAL=10s`,
//!   `CONCIERGE_RULES_DRY_RUN=true`, `CONCIERGE_CHANNEX_PROPERTY_IDS='["p1","p2"]'`. The
//!   value is read as a TOML value when it parses as one, else as a string. Section names
//!   have no underscore, so the split is unambiguous. `[properties]` and `[[schedules]]`
//!   are tables keyed by id and are only set in the file.
//!
//! Relative paths (`rules.dir`, `rules.templates_dir`, `nats.credentials`) resolve against
//! the folder of the config file (or the working directory when there is no file).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::base::time::CronSpec;

/// A string that must never be printed: API keys, webhook URLs with tokens, shared secrets.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub channex: ChannexConfig,
    pub nats: NatsConfig,
    pub rules: RulesConfig,
    pub worker: WorkerConfig,
    pub poller: PollerConfig,
    pub alerts: AlertsConfig,
    pub http: HttpConfig,
    pub console: ConsoleConfig,
    pub responses: ResponsesConfig,
    pub properties: BTreeMap<String, PropertyConfig>,
    pub schedules: Vec<ScheduleConfig>,
    /// Where the configuration came from (not a TOML key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannexConfig {
    pub base_url: String,
    pub api_key: Secret,
    /// Properties to poll. Empty = every property the key can see (one unfiltered listing).
    pub property_ids: Vec<String>,
    #[serde(deserialize_with = "duration")]
    pub poll_interval: Duration,
    pub requests_per_minute: u32,
    pub max_retries: u32,
    #[serde(deserialize_with = "duration")]
    pub timeout: Duration,
}

impl Default for ChannexConfig {
    fn default() -> Self {
        ChannexConfig {
            base_url: "https://staging.channex.io/api/v1/".into(),
            api_key: Secret::default(),
            property_ids: Vec::new(),
            poll_interval: Duration::from_secs(30),
            requests_per_minute: 600,
            max_retries: 5,
            timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub url: String,
    /// Subject prefix: `<prefix>.events.>`, `<prefix>.audit.>`, `<prefix>.alerts.>`.
    pub prefix: String,
    /// Path to a `.creds` file (NATS decentralised auth). Optional.
    pub credentials: Option<PathBuf>,
    /// Stream and KV replicas: 1 on a single server, 3 on a 3-node cluster.
    pub replicas: usize,
    #[serde(deserialize_with = "duration")]
    pub events_max_age: Duration,
    #[serde(deserialize_with = "duration")]
    pub audit_max_age: Duration,
    /// Retention of the ledger (rendered texts, own-message and cooldown marks): at least
    /// `events_max_age` (an event still stored can be delivered again) and `rules.cooldown`.
    #[serde(deserialize_with = "duration")]
    pub ledger_max_age: Duration,
    /// Retention of follow-up timers; a timer due later than this minus a day is refused.
    #[serde(deserialize_with = "duration")]
    pub followups_max_age: Duration,
    /// Retention of the response-time records (at least 90 days: Airbnb's response rate
    /// can look back that far).
    #[serde(deserialize_with = "duration")]
    pub responses_max_age: Duration,
    #[serde(deserialize_with = "duration")]
    pub duplicate_window: Duration,
}

/// By hand: `url` may carry `user:password@`, which `Debug` must not show.
impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url_userinfo(&self.url))
            .field("prefix", &self.prefix)
            .field("credentials", &self.credentials)
            .field("replicas", &self.replicas)
            .field("events_max_age", &self.events_max_age)
            .field("audit_max_age", &self.audit_max_age)
            .field("ledger_max_age", &self.ledger_max_age)
            .field("followups_max_age", &self.followups_max_age)
            .field("responses_max_age", &self.responses_max_age)
            .field("duplicate_window", &self.duplicate_window)
            .finish()
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "concierge".into(),
            credentials: None,
            replicas: 1,
            events_max_age: Duration::from_secs(30 * 86_400),
            audit_max_age: Duration::from_secs(90 * 86_400),
            ledger_max_age: Duration::from_secs(31 * 86_400),
            followups_max_age: Duration::from_secs(400 * 86_400),
            responses_max_age: Duration::from_secs(100 * 86_400),
            duplicate_window: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    pub dir: PathBuf,
    pub templates_dir: PathBuf,
    /// Global dry-run: plan and audit, never call Channex or alert sinks.
    pub dry_run: bool,
    /// Properties in dry-run while the others act.
    pub dry_run_properties: Vec<String>,
    /// The same template is not sent to the same thread twice within this window.
    #[serde(deserialize_with = "duration")]
    pub cooldown: Duration,
    /// Live reload of rules and templates.
    pub watch: bool,
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            dir: PathBuf::from("rules"),
            templates_dir: PathBuf::from("templates"),
            dry_run: false,
            dry_run_properties: Vec::new(),
            cooldown: Duration::from_secs(3600),
            watch: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Durable consumer name shared by every worker process.
    pub consumer: String,
    /// Deliveries before an event is given up with a `failed` audit record.
    pub max_deliver: i64,
    #[serde(deserialize_with = "duration")]
    pub ack_wait: Duration,
    /// Delay before a transiently failed event is redelivered.
    #[serde(deserialize_with = "duration")]
    pub retry_delay: Duration,
    /// Events processed at once per process.
    pub concurrency: usize,
    /// On SIGTERM: time allowed to finish in-flight actions.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            consumer: "concierge-worker".into(),
            max_deliver: 5,
            ack_wait: Duration::from_secs(60),
            retry_delay: Duration::from_secs(5),
            concurrency: 32,
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

/// Held back from a ledger claim's life (`worker.ack_wait`) before a send: covers clock
/// skew between workers (a takeover is judged on the other worker's wall clock) and the
/// ledger write itself. Used by the claim holder (`store::claim`) and by the validation
/// that `ack_wait` leaves room for one Channex call.
pub fn send_margin(claim_timeout: Duration) -> Duration {
    (claim_timeout / 10).min(Duration::from_secs(5))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollerConfig {
    /// Leader lease time-to-live; a standby takes over within about this long.
    #[serde(deserialize_with = "duration")]
    pub lease_ttl: Duration,
    /// Read bookings: attach the `booking` block to events of threads with a booking and
    /// emit `booking.changed` (one `GET /bookings` per cycle, plus one `GET /bookings/:id`
    /// per booking not cached yet). Off by default: hosts without stay rules pay nothing.
    pub bookings: bool,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            lease_ttl: Duration::from_secs(5),
            bookings: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Slack-compatible incoming webhook (`{"text": ...}`). A secret: never logged.
    pub webhook_url: Secret,
    /// Publish alerts on NATS, subject `<nats_subject>.<property_id>`.
    pub nats: bool,
    /// Subject prefix for NATS alerts; empty = `<nats.prefix>.alerts`.
    pub nats_subject: String,
    /// Also write alerts to the log.
    pub log: bool,
    pub max_attempts: u32,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook_url: Secret::default(),
            nats: true,
            nats_subject: String::new(),
            log: true,
            max_attempts: 4,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` for `/metrics`, `/healthz`, `/readyz`, `/webhooks/channex`. Empty = off.
    pub listen: String,
    /// Required in header `x-concierge-secret` on `/webhooks/channex` (empty = webhooks refused).
    pub webhook_secret: Secret,
}

/// The shortest `[console] token` accepted (a shorter one is a config error).
pub const MIN_CONSOLE_TOKEN_CHARS: usize = 16;

/// `[console]`: the web console served on `http.listen` (see `roles::console`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleConfig {
    /// Bearer token / login password of the console (also `CONCIERGE_CONSOLE_TOKEN`).
    /// Empty = console off (its routes answer 404); else at least 16 characters.
    pub token: Secret,
    /// A guest message unanswered for longer than this shows on the deadlines board
    /// (Booking.com expects a reply within 12 h).
    #[serde(deserialize_with = "duration")]
    pub reply_wait: Duration,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            token: Secret::default(),
            reply_wait: Duration::from_secs(12 * 3600),
        }
    }
}

/// `[responses]`: response times and the OTAs' scores (see `roles::responses`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesConfig {
    /// Track response times (the worker role runs the tracker).
    pub enabled: bool,
    /// A score whose projection falls under this share alerts staff once (0 < x <= 1).
    pub score_alert_below: f64,
    /// The projection counts an open guest message as missed once it has waited this long
    /// (an auto-reply a second away must not alert).
    #[serde(deserialize_with = "duration")]
    pub score_alert_grace: Duration,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        ResponsesConfig {
            enabled: true,
            score_alert_below: 0.9,
            score_alert_grace: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PropertyConfig {
    pub name: String,
    pub timezone: Option<String>,
    pub vars: Map<String, Value>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    /// 5-field crontab (`0 9 * * *`) or 6/7-field with seconds, parsed when the file is read.
    pub cron: CronSpec,
    #[serde(default = "crate::events::default_timezone")]
    pub timezone: String,
    /// Properties to tick; empty = every configured property.
    #[serde(default)]
    pub property_ids: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config error in {file}: cannot read: {message}")]
    Read { file: String, message: String },
    #[error("config error in {file}: {message}")]
    Syntax { file: String, message: String },
    #[error("config error in {file}: key `{key}`{origin}: {message}")]
    Key {
        file: String,
        key: String,
        origin: String,
        message: String,
    },
}

impl ConfigError {
    fn key(file: &str, key: &str, origin: Option<&str>, message: impl Into<String>) -> Self {
        ConfigError::Key {
            file: file.to_string(),
            key: key.to_string(),
            origin: origin
                .map(|var| format!(" (from environment variable {var})"))
                .unwrap_or_default(),
            message: message.into(),
        }
    }
}

/// Well-known environment variables and the key they set.
const NAMED_ENV: &[(&str, &str, &str)] = &[
    ("CHANNEX_API_KEY", "channex", "api_key"),
    ("CHANNEX_BASE_URL", "channex", "base_url"),
    ("NATS_URL", "nats", "url"),
    ("NATS_CREDENTIALS", "nats", "credentials"),
    ("CONCIERGE_WEBHOOK_URL", "alerts", "webhook_url"),
    ("CONCIERGE_WEBHOOK_SECRET", "http", "webhook_secret"),
    ("CONCIERGE_CONSOLE_TOKEN", "console", "token"),
];

/// `CONCIERGE_*` variables that are not config keys.
const NON_KEY_ENV: &[&str] = &["CONCIERGE_CONFIG", "CONCIERGE_LOG", "CONCIERGE_LOG_FORMAT"];

const SECTIONS: &[&str] = &[
    "channex", "nats", "rules", "worker", "poller", "alerts", "http", "console",
];

/// Keys whose values are secrets: never echoed in errors.
const SECRET_KEYS: &[&str] = &["api_key", "webhook_url", "webhook_secret", "token"];

impl Config {
    /// Load from `path` (or defaults when `None`), apply `env`, validate.
    /// `env` is passed in (not read here) so tests are hermetic.
    pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let file_label = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".to_string());
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError::Read {
                file: file_label.clone(),
                message: e.to_string(),
            })?,
            None => String::new(),
        };
        // Every error leaves through the redactor: a value that is a secret in the file or
        // the environment never reaches the message, whatever went wrong and where.
        let redactor = Redactor::collect(&text, env);
        Self::load_text(path, &file_label, &text, env).map_err(|e| e.redacted(&redactor))
    }

    fn load_text(
        path: Option<&Path>,
        file_label: &str,
        text: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let mut table = text
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Syntax {
                file: file_label.to_string(),
                message: syntax_message(text, &e),
            })?;
        let origins = apply_env(&mut table, env, file_label)?;

        let schedule_names = schedule_names(&table);
        let mut config: Config = serde_path_to_error::deserialize(toml::Value::Table(table))
            .map_err(|e| {
                let key = e.path().to_string();
                let origin = origins
                    .iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, var)| var.as_str());
                // A bad cron names its schedule, in the words validation always used.
                let text = match cron_schedule_name(e.path(), &schedule_names) {
                    Some(name) => format!("schedule {name:?}: {}", e.inner().message()),
                    None => e.inner().to_string(),
                };
                let message = redact_secret_value(&key, text)
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                ConfigError::key(file_label, &key, origin, message)
            })?;
        config.source = path.map(Path::to_path_buf);
        let base = path
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default();
        config.resolve_paths(&base);
        config.validate(file_label)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.rules.dir);
        resolve(&mut self.rules.templates_dir);
        if let Some(c) = self.nats.credentials.as_mut() {
            resolve(c);
        }
    }

    fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(ConfigError::key(file, key, None, msg));
        if !(self.channex.base_url.starts_with("http://")
            || self.channex.base_url.starts_with("https://"))
        {
            return err(
                "channex.base_url",
                format!("must be an http(s) URL, got {:?}", self.channex.base_url),
            );
        }
        if self.channex.requests_per_minute == 0 {
            return err("channex.requests_per_minute", "must be at least 1".into());
        }
        self.validate_durations(file)?;
        if self.nats.prefix.is_empty()
            || self
                .nats
                .prefix
                .chars()
                .any(|c| matches!(c, '.' | '*' | '>' | ' '))
        {
            return err(
                "nats.prefix",
                "must be one subject token (no '.', '*', '>' or spaces)".into(),
            );
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return err("nats.replicas", "must be between 1 and 5".into());
        }
        let below = self.responses.score_alert_below;
        if !(below > 0.0 && below <= 1.0) {
            return err(
                "responses.score_alert_below",
                format!("must be a share above 0 and at most 1, got {below}"),
            );
        }
        let token_chars = self.console.token.expose().chars().count();
        if token_chars > 0 && token_chars < MIN_CONSOLE_TOKEN_CHARS {
            return err(
                "console.token",
                format!(
                    "must be at least {} characters (empty = console off)",
                    MIN_CONSOLE_TOKEN_CHARS
                ),
            );
        }
        if self.worker.max_deliver < 1 {
            return err("worker.max_deliver", "must be at least 1".into());
        }
        if self.worker.concurrency == 0 {
            return err("worker.concurrency", "must be at least 1".into());
        }
        self.validate_retention_and_claims(file)?;
        self.validate_alerts(file)?;
        self.validate_zones_and_schedules(file)
    }

    fn validate_alerts(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(ConfigError::key(file, key, None, msg));
        if self
            .alerts
            .nats_subject
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
            && !self.alerts.nats_subject.is_empty()
        {
            return err(
                "alerts.nats_subject",
                format!(
                    "{:?} is not a valid subject prefix",
                    self.alerts.nats_subject
                ),
            );
        }
        let hook = self.alerts.webhook_url.expose();
        if !hook.is_empty() && !hook.starts_with("https://") && !hook.starts_with("http://") {
            return err(
                "alerts.webhook_url",
                "must be an http(s) URL (value hidden: it is a secret)".into(),
            );
        }
        Ok(())
    }

    fn validate_zones_and_schedules(&self, file: &str) -> Result<(), ConfigError> {
        for (id, prop) in &self.properties {
            if let Some(tz) = &prop.timezone {
                if tz.parse::<chrono_tz::Tz>().is_err() {
                    return Err(ConfigError::key(
                        file,
                        &format!("properties.\"{id}\".timezone"),
                        None,
                        format!("unknown IANA time zone {tz:?}"),
                    ));
                }
            }
        }
        self.validate_schedules(file)
    }

    /// Every duration key with its sane range, `(key, value, min, max)`. Below the minimum
    /// the mechanism cannot work (a zero `ack_wait` redelivers every event at once, a zero
    /// lease is never held); above the maximum the value is almost certainly a typo.
    fn duration_ranges(&self) -> [(&'static str, Duration, Duration, Duration); 15] {
        const MS: u64 = 1;
        const S: u64 = 1000 * MS;
        const MIN: u64 = 60 * S;
        const H: u64 = 60 * MIN;
        const D: u64 = 24 * H;
        let r = |key, v, lo: u64, hi: u64| {
            (key, v, Duration::from_millis(lo), Duration::from_millis(hi))
        };
        [
            r(
                "channex.poll_interval",
                self.channex.poll_interval,
                100 * MS,
                H,
            ),
            r("channex.timeout", self.channex.timeout, 100 * MS, 10 * MIN),
            r(
                "nats.events_max_age",
                self.nats.events_max_age,
                MIN,
                3650 * D,
            ),
            r("nats.audit_max_age", self.nats.audit_max_age, MIN, 3650 * D),
            // The deadlines board reads guest messages of the last 14 days.
            r("console.reply_wait", self.console.reply_wait, 0, 7 * D),
            // The lower bounds of the cross-key checks in `validate`: at least
            // `events_max_age` (itself at least 1m), resp. 2d for follow-up timers.
            r(
                "nats.ledger_max_age",
                self.nats.ledger_max_age,
                MIN,
                3650 * D,
            ),
            r(
                "nats.followups_max_age",
                self.nats.followups_max_age,
                2 * D,
                3650 * D,
            ),
            // Airbnb's response rate falls back to the last 90 days.
            r(
                "nats.responses_max_age",
                self.nats.responses_max_age,
                90 * D,
                3650 * D,
            ),
            r(
                "nats.duplicate_window",
                self.nats.duplicate_window,
                S,
                7 * D,
            ),
            r("rules.cooldown", self.rules.cooldown, 0, 365 * D),
            r("worker.ack_wait", self.worker.ack_wait, S, H),
            r("worker.retry_delay", self.worker.retry_delay, 10 * MS, H),
            r(
                "worker.shutdown_timeout",
                self.worker.shutdown_timeout,
                S,
                H,
            ),
            r("poller.lease_ttl", self.poller.lease_ttl, S, 10 * MIN),
            r(
                "responses.score_alert_grace",
                self.responses.score_alert_grace,
                0,
                24 * H,
            ),
        ]
    }

    /// Personal data expires, but never before the guarantees that rest on it; a claim
    /// must outlive one send.
    fn validate_retention_and_claims(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(ConfigError::key(file, key, None, msg));
        let nats = &self.nats;
        if nats.ledger_max_age < nats.events_max_age.max(self.rules.cooldown) {
            return err(
                "nats.ledger_max_age",
                "must be at least nats.events_max_age and rules.cooldown".into(),
            );
        }
        if nats.followups_max_age < Duration::from_secs(2 * 86_400) {
            return err("nats.followups_max_age", "must be at least 2d".into());
        }
        // ack_wait is also the claim timeout: a send starts only while the claim is ours for
        // longer than the HTTP timeout plus a margin for clock skew (executor::claim).
        let needed = self.channex.timeout + send_margin(self.worker.ack_wait);
        if self.worker.ack_wait <= needed {
            return err(
                "worker.ack_wait",
                format!("must exceed channex.timeout plus a tenth (at most 5s) of itself, i.e. be over {needed:?}"),
            );
        }
        Ok(())
    }

    fn validate_schedules(&self, file: &str) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| Err(ConfigError::key(file, key, None, msg));
        let mut names = std::collections::HashSet::new();
        for (i, s) in self.schedules.iter().enumerate() {
            if !names.insert(s.name.as_str()) {
                return err(
                    &format!("schedules[{i}].name"),
                    format!("duplicate schedule name {:?}", s.name),
                );
            }
            if s.timezone.parse::<chrono_tz::Tz>().is_err() {
                return err(
                    &format!("schedules[{i}].timezone"),
                    format!("unknown IANA time zone {:?}", s.timezone),
                );
            }
        }
        Ok(())
    }

    fn validate_durations(&self, file: &str) -> Result<(), ConfigError> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        for (key, value, min, max) in self.duration_ranges() {
            if value < min || value > max {
                return Err(ConfigError::key(
                    file,
                    key,
                    None,
                    format!(
                        "must be between {} and {}, got {}",
                        show(min),
                        show(max),
                        show(value)
                    ),
                ));
            }
        }
        // JetStream refuses a duplicate window longer than the stream's max age.
        if self.nats.duplicate_window > self.nats.events_max_age {
            return Err(ConfigError::key(
                file,
                "nats.duplicate_window",
                None,
                format!(
                    "must be at most nats.events_max_age ({}), got {}",
                    show(self.nats.events_max_age),
                    show(self.nats.duplicate_window)
                ),
            ));
        }
        Ok(())
    }

    /// The roles that talk to Channex need a key; `rules check` and friends do not.
    pub fn require_channex_key(&self) -> Result<(), ConfigError> {
        if self.channex.api_key.is_empty() {
            return Err(ConfigError::key(
                &self.source_label(),
                "channex.api_key",
                None,
                "is required (set it in the file or with CHANNEX_API_KEY)",
            ));
        }
        Ok(())
    }

    pub fn source_label(&self) -> String {
        self.source
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".to_string())
    }

    /// Timezone of a property (`UTC` when not configured).
    pub fn property_timezone(&self, property_id: &str) -> String {
        self.properties
            .get(property_id)
            .and_then(|p| p.timezone.clone())
            .unwrap_or_else(crate::events::default_timezone)
    }

    /// The property block of an event, from config.
    pub fn property_info(&self, property_id: &str) -> crate::events::PropertyInfo {
        let prop = self.properties.get(property_id);
        crate::events::PropertyInfo {
            id: property_id.to_string(),
            name: prop.map(|p| p.name.clone()).unwrap_or_default(),
            timezone: self.property_timezone(property_id),
            vars: prop.map(|p| p.vars.clone()).unwrap_or_default(),
        }
    }

    /// Dry-run for this property (global switch or per-property).
    pub fn is_dry_run(&self, property_id: &str) -> bool {
        self.rules.dry_run
            || self
                .rules
                .dry_run_properties
                .iter()
                .any(|p| p == property_id)
            || self.properties.get(property_id).is_some_and(|p| p.dry_run)
    }
}

/// Returns, for every key set from the environment, `(dotted key, variable name)`.
fn apply_env(
    table: &mut toml::Table,
    env: &[(String, String)],
    file: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut origins = Vec::new();
    let mut set = |table: &mut toml::Table, section: &str, key: &str, var: &str, raw: &str| {
        let value = parse_env_value(key, raw);
        let entry = table
            .entry(section.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => {
                t.insert(key.to_string(), value);
                origins.push((format!("{section}.{key}"), var.to_string()));
                Ok(())
            }
            _ => Err(ConfigError::key(
                file,
                section,
                None,
                "must be a table ([section])",
            )),
        }
    };
    for (var, raw) in env {
        if let Some((_, section, key)) = NAMED_ENV.iter().find(|(name, _, _)| name == var) {
            set(table, section, key, var, raw)?;
            continue;
        }
        let Some(rest) = var.strip_prefix("CONCIERGE_") else {
            continue;
        };
        if NON_KEY_ENV.contains(&var.as_str()) || NAMED_ENV.iter().any(|(n, _, _)| n == var) {
            continue;
        }
        let lower = rest.to_ascii_lowercase();
        let Some((section, key)) = lower.split_once('_') else {
            return Err(ConfigError::key(
                file,
                &lower,
                Some(var),
                "is not a config key (expected CONCIERGE_<SECTION>_<KEY>)",
            ));
        };
        if !SECTIONS.contains(&section) {
            return Err(ConfigError::key(
                file,
                &format!("{section}.{key}"),
                Some(var),
                format!("unknown section `{section}`, expected one of {SECTIONS:?}"),
            ));
        }
        set(table, section, key, var, raw)?;
    }
    Ok(origins)
}

/// The `name` of each `[[schedules]]` entry, in order (`None` where it is missing), read
/// before deserialising so that a cron error can name its schedule.
fn schedule_names(table: &toml::Table) -> Vec<Option<String>> {
    let Some(toml::Value::Array(schedules)) = table.get("schedules") else {
        return Vec::new();
    };
    schedules
        .iter()
        .map(|s| {
            s.get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// The schedule whose `cron` failed to parse, when `path` is `schedules[i].cron`.
fn cron_schedule_name<'a>(
    path: &serde_path_to_error::Path,
    names: &'a [Option<String>],
) -> Option<&'a str> {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    match segments.as_slice() {
        [Segment::Map { key: table }, Segment::Seq { index }, Segment::Map { key: field }]
            if table == "schedules" && field == "cron" =>
        {
            names.get(*index)?.as_deref()
        }
        _ => None,
    }
}

fn parse_env_value(key: &str, raw: &str) -> toml::Value {
    if SECRET_KEYS.contains(&key) {
        return toml::Value::String(raw.to_string());
    }
    // `key = <raw>` parses for numbers, booleans, arrays and quoted strings.
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn redact_secret_value(key: &str, message: String) -> String {
    if SECRET_KEYS.iter().any(|s| key.ends_with(s)) {
        "invalid value (hidden: it is a secret)".to_string()
    } else {
        message
    }
}

/// A TOML syntax error as `line L, column C: <what>`, never with the source text: the
/// offending line may hold a secret (an unterminated `api_key = "sk_live_...` or an
/// unquoted `webhook_url = https://...`), and `toml`'s own message quotes it.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("TOML syntax error at line {line}, column {column}: {what}")
        }
        None => format!("TOML syntax error: {what}"),
    }
}

/// `scheme://user:password@host` becomes `scheme://***@host`, anywhere in `text`.
pub fn redact_userinfo(text: &str) -> String {
    static USERINFO: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    // Greedy up to the last `@` of the authority: a password may hold a raw `@`.
    match USERINFO.get_or_init(|| regex::Regex::new(r"://[^/\s]+@").ok()) {
        Some(re) => re.replace_all(text, "://***@").into_owned(),
        // The pattern is a constant; should it ever fail, hide every URL's authority.
        None => text.replace("://", "://***@"),
    }
}

/// [`redact_userinfo`] for one URL value rather than free text: the user-info is everything
/// up to the last `@` before the path, so a stray space (`nats://user: pw@host`) or a raw
/// `@` in the password (`nats://user:p@ss@host`) hides it too.
pub fn redact_url_userinfo(url: &str) -> String {
    static USERINFO: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
    match USERINFO.get_or_init(|| regex::Regex::new(r"://[^/]+@").ok()) {
        Some(re) => re.replace_all(url, "://***@").into_owned(),
        None => url.replace("://", "://***@"),
    }
}

/// The secret values of one load (from the raw file text and the environment), removed
/// from every error message. The raw text is scanned rather than the parsed table so a
/// line that does not parse is covered too.
struct Redactor {
    values: Vec<String>,
}

/// Shorter values are not searched for: they would mangle ordinary words of a message.
const MIN_REDACTED_LEN: usize = 4;

impl Redactor {
    fn collect(text: &str, env: &[(String, String)]) -> Redactor {
        static ASSIGN: std::sync::OnceLock<Option<regex::Regex>> = std::sync::OnceLock::new();
        let assign = ASSIGN.get_or_init(|| {
            regex::Regex::new(
                r#"(?m)(api_key|webhook_url|webhook_secret|token|url)["']?\s*=\s*("[^"\n]*"?|'[^'\n]*'?|[^\s,}#\]]+)"#,
            )
            .ok()
        });
        let mut values = Vec::new();
        for c in assign.iter().flat_map(|re| re.captures_iter(text)) {
            let raw = c.get(2).map_or("", |m| m.as_str());
            let key = c.get(1).map_or("", |m| m.as_str());
            Self::add(&mut values, key, raw.trim_matches(['"', '\'']));
        }
        for (var, value) in env {
            let lower = var.to_ascii_lowercase();
            if let Some(key) = ["api_key", "webhook_url", "webhook_secret", "token", "url"]
                .into_iter()
                .find(|k| lower.ends_with(k))
            {
                Self::add(&mut values, key, value);
            }
        }
        // Longest first, so a value containing another is removed whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        Redactor { values }
    }

    fn add(values: &mut Vec<String>, key: &str, value: &str) {
        // A URL (`nats.url`, `channex.base_url`) is a secret only in its user-info part.
        let parts: Vec<&str> = if key == "url" {
            value
                .split("://")
                .skip(1)
                .filter_map(|rest| rest.split_once('@').map(|(info, _)| info))
                .flat_map(|info| [info, info.split_once(':').map_or("", |(_, pw)| pw)])
                .collect()
        } else {
            vec![value]
        };
        values.extend(
            parts
                .into_iter()
                .filter(|p| p.len() >= MIN_REDACTED_LEN)
                .map(str::to_string),
        );
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = redact_userinfo(text);
        for v in &self.values {
            out = out.replace(v.as_str(), "***");
        }
        out
    }
}

impl ConfigError {
    fn redacted(self, r: &Redactor) -> ConfigError {
        match self {
            ConfigError::Read { file, message } => ConfigError::Read {
                file,
                message: r.scrub(&message),
            },
            ConfigError::Syntax { file, message } => ConfigError::Syntax {
                file,
                message: r.scrub(&message),
            },
            ConfigError::Key {
                file,
                key,
                origin,
                message,
            } => ConfigError::Key {
                file,
                key: r.scrub(&key),
                origin,
                message: r.scrub(&message),
            },
        }
    }
}

/// Durations are strings such as `"30s"`, `"5m"`, `"2h"`, `"1h 30m"`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?} ({e}); use e.g. \"30s\", \"5m\", \"2h\""))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load_without_a_file() {
        let c = Config::load(None, &[]).unwrap();
        assert_eq!(c.channex.poll_interval, Duration::from_secs(30));
        assert_eq!(c.nats.prefix, "concierge");
        assert!(c.require_channex_key().is_err());
    }

    #[test]
    fn full_file_with_env_overrides() {
        let f = write(
            r#"
            [channex]
            api_key = "file-key"
            property_ids = ["p1"]
            poll_interval = "10s"
            [rules]
            dir = "myrules"
            cooldown = "2h"
            [properties."p1"]
            name = "Casa Azul"
            timezone = "Europe/Lisbon"
            vars = { wifi_name = "azul", checkin_time = "15:00" }
            [[schedules]]
            name = "daily"
            cron = "0 9 * * *"
            timezone = "Europe/Lisbon"
            "#,
        );
        let c = Config::load(
            Some(f.path()),
            &env(&[
                ("CHANNEX_API_KEY", "env-key"),
                ("NATS_URL", "nats://10.0.0.1:4222"),
                ("CONCIERGE_CHANNEX_POLL_INTERVAL", "5s"),
                ("CONCIERGE_RULES_DRY_RUN", "true"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.channex.api_key.expose(), "env-key");
        assert_eq!(c.nats.url, "nats://10.0.0.1:4222");
        assert_eq!(c.channex.poll_interval, Duration::from_secs(5));
        assert!(c.rules.dry_run);
        assert_eq!(c.rules.cooldown, Duration::from_secs(7200));
        assert_eq!(c.rules.dir, f.path().parent().unwrap().join("myrules"));
        assert_eq!(c.property_info("p1").timezone, "Europe/Lisbon");
        assert_eq!(c.property_info("p1").vars["wifi_name"], "azul");
        assert_eq!(c.property_info("other").timezone, "UTC");
        assert!(!format!("{c:?}").contains("env-key"));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let f = write("[channex]\npoll_intervall = \"10s\"\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("poll_intervall"), "{e}");
        assert!(e.contains(&f.path().display().to_string()), "{e}");
    }

    #[test]
    fn wrong_type_names_key() {
        let f = write("[channex]\nrequests_per_minute = \"lots\"\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("channex.requests_per_minute"), "{e}");
    }

    #[test]
    fn bad_duration_and_env_origin_are_reported() {
        let e = Config::load(None, &env(&[("CONCIERGE_CHANNEX_POLL_INTERVAL", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("channex.poll_interval"), "{e}");
        assert!(e.contains("CONCIERGE_CHANNEX_POLL_INTERVAL"), "{e}");
        let e = Config::load(None, &env(&[("CONCIERGE_BOGUS_X", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn secrets_never_echoed() {
        let e = Config::load(
            None,
            &env(&[("CONCIERGE_WEBHOOK_URL", "ftp://hooks.example/T0K3N")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("alerts.webhook_url"), "{e}");
        assert!(!e.contains("T0K3N"), "{e}");
    }

    #[test]
    fn the_console_token_comes_from_the_environment_and_is_never_echoed() {
        let c = Config::load(
            None,
            &env(&[("CONCIERGE_CONSOLE_TOKEN", "c0ns0le-T0K3N-0123456789")]),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.console.token.expose(), "c0ns0le-T0K3N-0123456789");
        assert!(!format!("{c:?}").contains("c0ns0le-T0K3N-0123456789"));
        assert_eq!(c.console.reply_wait, Duration::from_secs(12 * 3600));
        let e = Config::load(
            None,
            &env(&[
                ("CONCIERGE_CONSOLE_TOKEN", "c0ns0le-T0K3N-0123456789"),
                ("CONCIERGE_CONSOLE_REPLY_WAIT", "30d"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("console.reply_wait"), "{e}");
        assert!(!e.contains("c0ns0le-T0K3N-0123456789"), "{e}");
        let e = Config::load(None, &env(&[("CONCIERGE_CONSOLE_TOKEN", "short-T0K3N")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("console.token") && e.contains("16"), "{e}");
        assert!(!e.contains("short-T0K3N"), "{e}");
        let f = write("[console]\ntoken = [\"c0ns0le-T0K3N-0123456789\"]\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("console.token"), "{e}");
        assert!(!e.contains("c0ns0le-T0K3N-0123456789"), "{e}");
    }

    #[test]
    fn bad_timezone_and_cron_rejected() {
        let f = write("[properties.\"p\"]\ntimezone = \"Mars/Olympus\"\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("timezone"), "{e}");
        let f = write("[[schedules]]\nname = \"x\"\ncron = \"every day\"\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("schedules[0].cron"), "{e}");
    }

    #[test]
    fn toml_syntax_errors_never_quote_the_source_line() {
        let cases = [
            ("[channex]\napi_key = \"sk_live_SUPERSECRET123\n", 2),
            (
                "[alerts]\nwebhook_url = https://hooks.example/T0K3NSECRET\n",
                2,
            ),
            ("[http]\nwebhook_secret = 'sk_live_SUPERSECRET123\n", 2),
            (
                "[channex]\nbase_url = \"https://x\"\napi_key = sk_live_SUPERSECRET123 = 1\n",
                3,
            ),
        ];
        for (text, line) in cases {
            let f = write(text);
            let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
            assert!(!e.contains("SUPERSECRET") && !e.contains("T0K3N"), "{e}");
            assert!(e.contains(&f.path().display().to_string()), "{e}");
            assert!(e.contains(&format!("line {line}")), "{e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn nats_url_password_is_never_shown() {
        let f = write("[nats]\nurl = \"nats://alice:hunter2pw@127.0.0.1:4222\"\nreplicas = 9\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("nats.replicas"), "{e}");
        let c = Config::load(
            None,
            &env(&[("NATS_URL", "nats://alice:hunter2pw@127.0.0.1:4222")]),
        )
        .unwrap();
        let debug = format!("{c:?}");
        assert!(!debug.contains("hunter2pw"), "{debug}");
        assert!(debug.contains("nats://***@127.0.0.1:4222"), "{debug}");
        assert_eq!(
            redact_userinfo("cannot reach nats://bob:pw@h:1, nats://h2:2"),
            "cannot reach nats://***@h:1, nats://h2:2"
        );
        // A raw `@` in the password (found by tests/config_props.rs).
        assert_eq!(
            redact_url_userinfo("nats://user:@NATSPW@host:4222/x@y"),
            "nats://***@host:4222/x@y"
        );
        assert_eq!(
            redact_userinfo("cannot reach nats://user:p@ss@h:1 now"),
            "cannot reach nats://***@h:1 now"
        );
        // A wrong type on a key next to a secret: the secret's value is scrubbed anyway.
        let e = Config::load(
            None,
            &env(&[
                ("CONCIERGE_NATS_URL", "nats://alice:hunter2pw@h:1"),
                ("CONCIERGE_NATS_REPLICAS", "nats://alice:hunter2pw@h:1"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("nats.replicas"), "{e}");
        assert!(!e.contains("hunter2pw"), "{e}");
    }

    #[test]
    fn nonsense_durations_are_refused_naming_the_key() {
        let cases = [
            ("worker", "ack_wait", "0s"),
            ("poller", "lease_ttl", "0s"),
            ("channex", "poll_interval", "10ms"),
            ("channex", "timeout", "0s"),
            ("worker", "retry_delay", "0s"),
            ("worker", "shutdown_timeout", "0s"),
            ("worker", "ack_wait", "30d"),
            ("nats", "events_max_age", "1s"),
            ("nats", "audit_max_age", "0s"),
            ("nats", "duplicate_window", "0s"),
            ("rules", "cooldown", "400d"),
        ];
        for (section, key, value) in cases {
            let f = write(&format!("[{section}]\n{key} = \"{value}\"\n"));
            let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
            assert!(
                e.contains(&format!("{section}.{key}")),
                "{section}.{key}={value}: {e}"
            );
            assert!(e.contains("must be between"), "{e}");
        }
        let f = write("[nats]\nevents_max_age = \"1h\"\nduplicate_window = \"2h\"\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(
            e.contains("nats.duplicate_window") && e.contains("events_max_age"),
            "{e}"
        );
        // The edges themselves are fine.
        // ack_wait must also exceed channex.timeout plus min(ack_wait/10, 5s).
        let f = write("[channex]\ntimeout = \"100ms\"\n[worker]\nack_wait = \"1s\"\n[poller]\nlease_ttl = \"1s\"\n[rules]\ncooldown = \"0s\"\n");
        Config::load(Some(f.path()), &[]).unwrap();
    }

    #[test]
    fn retention_durations_have_an_upper_bound_naming_the_key() {
        for key in ["ledger_max_age", "followups_max_age"] {
            let f = write(&format!("[nats]\n{key} = \"1000000d\"\n"));
            let e = Config::load(Some(f.path()), &[]).unwrap_err();
            assert!(
                matches!(&e, ConfigError::Key { key: k, .. } if *k == format!("nats.{key}")),
                "{e}"
            );
            assert!(e.to_string().contains("must be between"), "{e}");
        }
        let debug = format!("{:?}", Config::default().nats);
        assert!(
            debug.contains("ledger_max_age") && debug.contains("followups_max_age"),
            "{debug}"
        );
    }

    #[test]
    fn bad_cron_is_one_line_with_the_users_expression_and_schedule_name() {
        let f = write("[[schedules]]\nname = \"daily\"\ncron = \"61 9 * * *\"\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        assert!(e.contains("schedules[0].cron"), "{e}");
        assert!(e.contains("\"61 9 * * *\""), "{e}");
        assert!(e.contains("\"daily\""), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(
            !e.contains("0 61 9"),
            "the internal 6-field form leaked: {e}"
        );
    }

    #[test]
    fn bad_cron_message_is_the_one_it_always_was() {
        let f = write("[[schedules]]\nname = \"ok\"\ncron = \"0 9 * * *\"\n[[schedules]]\nname = \"daily\"\ncron = \"61 9 * * *\"\n");
        let e = Config::load(Some(f.path()), &[]).unwrap_err().to_string();
        let head = format!(
            "config error in {}: key `schedules[1].cron`: schedule \"daily\": invalid cron expression \"61 9 * * *\" (",
            f.path().display()
        );
        assert!(e.starts_with(&head), "{e}");
        assert!(
            e.ends_with("); expected 5 fields (`min hour day month weekday`, e.g. \"0 9 * * *\") or 6/7 with seconds"),
            "{e}"
        );
        let f = write(
            "[[schedules]]\nname = \"daily\"\ncron = \"0 9 * * *\"\ntimezone = \"Europe/Lisbon\"\n",
        );
        let c = Config::load(Some(f.path()), &[]).unwrap();
        assert_eq!(c.schedules[0].cron.expr(), "0 9 * * *");
    }

    #[test]
    fn dry_run_levels() {
        let f =
            write("[rules]\ndry_run_properties = [\"a\"]\n[properties.\"b\"]\ndry_run = true\n");
        let c = Config::load(Some(f.path()), &[]).unwrap();
        assert!(c.is_dry_run("a"));
        assert!(c.is_dry_run("b"));
        assert!(!c.is_dry_run("c"));
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    #[test]
    fn shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("concierge.example.toml");
        let c = Config::load(Some(&path), &[]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.schedules.len(), 1);
        assert!(!c.properties.is_empty());
    }
}
