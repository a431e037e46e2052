//! The audit log: one JSON record per decision on stream `CONCIERGE_AUDIT`.
//!
//! Owns the record format (every field of the contract) with its typed values
//! ([`Outcome`], [`ActionKind`], [`Reason`], each serialised exactly as the documented
//! strings), one constructor per kind of record (so each kind is built in one place),
//! publishing records under `<prefix>.audit.<property_id>.<thread_id>`, and reading them
//! back with filters (for `concierge audit`, `audit explain` and `replay`).
//!
//! It must never see a secret: callers pass already-rendered texts and Channex error codes,
//! not requests. It must not read the clock: every constructor takes the time `at` from the
//! caller's injected clock. It must not decide outcomes (the executor and the worker do).

use std::path::Path;

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::events::{subject_token, Event, EventType};
use crate::store::nats::{audit_stream, read_range, read_stored, stream_bounds, ReadFrom};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Executed,
    DryRun,
    Skipped,
    Failed,
    RuleError,
    RuleRejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Executed => "executed",
            Outcome::DryRun => "dry_run",
            Outcome::Skipped => "skipped",
            Outcome::Failed => "failed",
            Outcome::RuleError => "rule_error",
            Outcome::RuleRejected => "rule_rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Executed,
            Outcome::DryRun,
            Outcome::Skipped,
            Outcome::Failed,
            Outcome::RuleError,
            Outcome::RuleRejected,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a record is about: one of the six rule actions, or `evaluate` (a rule's
/// evaluation), `reload` (a rule/template file) or `event` (the event as a whole).
/// Serialised as that one string; a string this version does not know (a record written
/// by a newer version) is kept verbatim in [`ActionKind::Other`], so such a record can
/// still be read, shown and purged.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ActionKind {
    Reply,
    NoReplyNeeded,
    CloseThread,
    Alert,
    FollowUp,
    CancelFollowUp,
    /// One file of a reply's `attachments`, sent after the text.
    Attachment,
    CancelAllFollowUps,
    /// `no_answer(reason)`: a rule decided this message gets no automatic answer.
    NoAnswer,
    Evaluate,
    Reload,
    Event,
    Other(String),
}

impl ActionKind {
    const KNOWN: [ActionKind; 12] = [
        ActionKind::Reply,
        ActionKind::NoReplyNeeded,
        ActionKind::CloseThread,
        ActionKind::Alert,
        ActionKind::FollowUp,
        ActionKind::CancelFollowUp,
        ActionKind::Attachment,
        ActionKind::CancelAllFollowUps,
        ActionKind::NoAnswer,
        ActionKind::Evaluate,
        ActionKind::Reload,
        ActionKind::Event,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            ActionKind::Other(text) => text,
            known => known.static_str(),
        }
    }

    /// The metric label: the string for a known kind, `other` for any other (bounded
    /// label values whatever a stored record says).
    pub fn label(&self) -> &'static str {
        match self {
            ActionKind::Other(_) => "other",
            known => Self::KNOWN
                .iter()
                .find(|k| *k == known)
                .map_or("other", |k| k.static_str()),
        }
    }

    fn static_str(&self) -> &'static str {
        match self {
            ActionKind::Reply => "reply",
            ActionKind::NoReplyNeeded => "no_reply_needed",
            ActionKind::CloseThread => "close_thread",
            ActionKind::Alert => "alert",
            ActionKind::FollowUp => "follow_up",
            ActionKind::CancelFollowUp => "cancel_follow_up",
            ActionKind::Attachment => "attachment",
            ActionKind::CancelAllFollowUps => "cancel_all_follow_ups",
            ActionKind::NoAnswer => "no_answer",
            ActionKind::Evaluate => "evaluate",
            ActionKind::Reload => "reload",
            ActionKind::Event => "event",
            ActionKind::Other(_) => "other",
        }
    }

    /// The inverse of [`ActionKind::as_str`]; total (unknown text is [`ActionKind::Other`]).
    pub fn parse(s: &str) -> ActionKind {
        Self::KNOWN
            .into_iter()
            .find(|k| k.as_str() == s)
            .unwrap_or_else(|| ActionKind::Other(s.to_string()))
    }
}

impl std::fmt::Display for ActionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ActionKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ActionKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(ActionKind::parse(&text))
    }
}

/// Why a record has its outcome. Serialised as one string, exactly as documented; two
/// reasons are equal when their strings are (so a record read back equals the one written).
#[derive(Debug, Clone)]
pub enum Reason {
    // The worker, about an event as a whole.
    /// `malformed_event`: the stored event is not valid event JSON.
    MalformedEvent,
    /// `max_deliver`: the event was given up after its last delivery.
    MaxDeliver,
    /// `own_message`: a message this service sent never triggers rules.
    OwnMessage,
    /// `rule_error`: the rule failed or hit a sandbox limit.
    RuleError,
    /// `malformed_item` (poller): a Channex item that could not be read was skipped.
    MalformedItem,
    /// `compile_error` (reload): a rule/template file was rejected.
    CompileError,
    // The executor, about one action.
    /// `template_error`: the reply/alert text could not be rendered.
    TemplateError,
    /// `no_thread`: the event has no thread to act on.
    NoThread,
    /// `attachment_missing`: a reply names a file that is not in `attachments/` (or is over
    /// the size limit); nothing of the reply is sent.
    AttachmentMissing,

    /// `dry_run`: planned and audited, not carried out.
    DryRun,
    /// `verified_after_interruption`: a previous holder sent it; found by reading the thread.
    VerifiedAfterInterruption,
    /// `thread_closed`
    ThreadClosed,
    /// `superseded`: staff answered after the guest message.
    Superseded,
    /// `cooldown`: the same template went to this thread within the cooldown.
    Cooldown,
    /// `sent`
    Sent,
    /// `not_supported`: `no_reply_needed` on a thread that is not Booking.com's.
    NotSupported,
    /// `marked` (no_reply_needed done)
    Marked,
    /// `already_closed`
    AlreadyClosed,
    /// `closed`
    Closed,
    /// `alert_failed`
    AlertFailed,
    /// `beyond_retention`: a follow-up due later than timers are kept.
    BeyondRetention,
    /// `not_armed`: cancelling a follow-up that is not armed.
    NotArmed,
    /// `booking_cancelled`: a stay message of a follow-up whose booking is cancelled
    /// (when the timer fired) and that was not armed with `#{ on_cancelled: true }`.
    BookingCancelled,
    /// `booking_moved`: a stay message of a follow-up whose booking's dates changed since
    /// it was armed (the re-armed timer sends it at the new time).
    BookingMoved,
    /// `cancelled_all <n>`: `cancel_all_follow_ups()` removed this many timers.
    CancelledAll(usize),
    /// `ledger_unreadable`: the ledger says the action is done but its outcome cannot be
    /// read, so what happened is unknown.
    LedgerUnreadable,
    /// `channex_error`: a Channex failure without an error code.
    ChannexError,
    /// `not_answered`: a rule's `no_answer(reason)`: the guest gets no automatic answer
    /// (the record's `text` says why, its `understood` what was read).
    NotAnswered,
    /// `delivered: <sinks>`: an alert went out through these sinks (comma-separated).
    Delivered(String),
    /// `armed <name> for <RFC 3339 due time>`
    Armed { name: String, due_at: String },
    /// `cancelled <name>`
    Cancelled(String),
    /// A Channex error code (`not_found`, `validation_error`, ...) of a failed call.
    Channex(String),
    /// Any other text (records written by other versions): kept verbatim.
    Other(String),
}

impl Reason {
    const FIXED: [(Reason, &'static str); 27] = [
        (Reason::MalformedEvent, "malformed_event"),
        (Reason::MaxDeliver, "max_deliver"),
        (Reason::OwnMessage, "own_message"),
        (Reason::RuleError, "rule_error"),
        (Reason::MalformedItem, "malformed_item"),
        (Reason::CompileError, "compile_error"),
        (Reason::TemplateError, "template_error"),
        (Reason::NoThread, "no_thread"),
        (Reason::AttachmentMissing, "attachment_missing"),
        (Reason::DryRun, "dry_run"),
        (
            Reason::VerifiedAfterInterruption,
            "verified_after_interruption",
        ),
        (Reason::ThreadClosed, "thread_closed"),
        (Reason::Superseded, "superseded"),
        (Reason::Cooldown, "cooldown"),
        (Reason::Sent, "sent"),
        (Reason::NotSupported, "not_supported"),
        (Reason::Marked, "marked"),
        (Reason::AlreadyClosed, "already_closed"),
        (Reason::Closed, "closed"),
        (Reason::AlertFailed, "alert_failed"),
        (Reason::BeyondRetention, "beyond_retention"),
        (Reason::NotArmed, "not_armed"),
        (Reason::BookingCancelled, "booking_cancelled"),
        (Reason::BookingMoved, "booking_moved"),
        (Reason::LedgerUnreadable, "ledger_unreadable"),
        (Reason::ChannexError, "channex_error"),
        (Reason::NotAnswered, "not_answered"),
    ];

    /// The string written to the audit log (and the ledger).
    pub fn as_text(&self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            Reason::Delivered(sinks) => Cow::Owned(format!("delivered: {sinks}")),
            Reason::Armed { name, due_at } => Cow::Owned(format!("armed {name} for {due_at}")),
            Reason::Cancelled(name) => Cow::Owned(format!("cancelled {name}")),
            Reason::CancelledAll(n) => Cow::Owned(format!("cancelled_all {n}")),
            Reason::Channex(code) | Reason::Other(code) => Cow::Owned(code.clone()),
            fixed => Cow::Borrowed(
                Self::FIXED
                    .iter()
                    .find(|(r, _)| std::mem::discriminant(r) == std::mem::discriminant(fixed))
                    .map_or("", |(_, s)| s),
            ),
        }
    }

    /// The inverse of [`Reason::as_text`]; total (unknown text is [`Reason::Other`]).
    pub fn parse(s: &str) -> Reason {
        if let Some((r, _)) = Self::FIXED.iter().find(|(_, text)| *text == s) {
            return r.clone();
        }
        if let Some(sinks) = s.strip_prefix("delivered: ") {
            return Reason::Delivered(sinks.to_string());
        }
        if let Some((name, due_at)) = s
            .strip_prefix("armed ")
            .and_then(|r| r.rsplit_once(" for "))
        {
            return Reason::Armed {
                name: name.to_string(),
                due_at: due_at.to_string(),
            };
        }
        if let Some(n) = s
            .strip_prefix("cancelled_all ")
            .and_then(|n| n.parse().ok())
        {
            return Reason::CancelledAll(n);
        }
        if let Some(name) = s.strip_prefix("cancelled ") {
            return Reason::Cancelled(name.to_string());
        }
        Reason::Other(s.to_string())
    }
}

impl PartialEq for Reason {
    fn eq(&self, other: &Reason) -> bool {
        self.as_text() == other.as_text()
    }
}

impl Eq for Reason {}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_text())
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_text())
    }
}

impl<'de> Deserialize<'de> for Reason {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Reason, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(Reason::parse(&text))
    }
}

/// What `event_type` names: the type of the event a record is about, or the Channex
/// resource of an item the poller could not read. Serialised as one string
/// (`thread.new_message`, `channex.message_thread`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordEventType {
    Event(EventType),
    /// `channex.<resource>`: `message_thread` or `message`.
    ChannexItem(String),
    /// Any other text (records written by other versions): kept verbatim.
    Other(String),
}

impl RecordEventType {
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        use std::borrow::Cow;
        match self {
            RecordEventType::Event(t) => Cow::Borrowed(t.as_str()),
            RecordEventType::ChannexItem(resource) => Cow::Owned(format!("channex.{resource}")),
            RecordEventType::Other(text) => Cow::Borrowed(text),
        }
    }

    /// The inverse of [`RecordEventType::as_text`]; total.
    pub fn parse(s: &str) -> RecordEventType {
        if let Some(t) = EventType::parse(s) {
            return RecordEventType::Event(t);
        }
        match s.strip_prefix("channex.") {
            Some(resource) => RecordEventType::ChannexItem(resource.to_string()),
            None => RecordEventType::Other(s.to_string()),
        }
    }
}

impl From<EventType> for RecordEventType {
    fn from(t: EventType) -> Self {
        RecordEventType::Event(t)
    }
}

impl std::fmt::Display for RecordEventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_text())
    }
}

impl Serialize for RecordEventType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_text())
    }
}

impl<'de> Deserialize<'de> for RecordEventType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<RecordEventType, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        Ok(RecordEventType::parse(&text))
    }
}

/// One decision. Fields follow DESIGN.md ("Audit log"); absent ones are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Deterministic for action outcomes (`<action key>:<outcome>`), so a redelivered
    /// event that reaches the same final outcome is deduplicated by JetStream.
    pub id: String,
    pub at: DateTime<Utc>,
    pub event_id: Option<String>,
    pub event_type: Option<RecordEventType>,
    pub rule: Option<String>,
    pub rule_version: Option<String>,
    /// One of the six actions, or `evaluate` / `reload` / `event` for records that are not
    /// about one action.
    pub action: Option<ActionKind>,
    /// Template used by a reply or alert.
    #[serde(default)]
    pub template: Option<String>,
    pub thread_id: Option<String>,
    pub property_id: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    pub text: Option<String>,
    pub channex_message_id: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
    pub duration_ms: u64,
    /// What the understanding step read in the guest's message, on the records of an
    /// event that had one: why an answer was (or was not) sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub understood: Option<Understood>,
}

/// The understanding behind a decision, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Understood {
    /// "wifi 0.94: 'get online'; question ('?')".
    pub summary: String,
    /// `question`, `statement`, `thanks`, `problem`, `complaint`, `urgent`.
    pub act: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// The topic files' version (content hash) that read it.
    pub topics_version: String,
}

/// What the executor reports about one action: the fields of its record that the outcome
/// decides (the rest comes from the event and the plan step).
#[derive(Debug, Clone)]
pub struct ActionOutcome {
    pub outcome: Outcome,
    pub reason: Option<Reason>,
    pub text: Option<String>,
    pub channex_message_id: Option<String>,
    pub error: Option<String>,
}

/// The plan step an action record is about.
#[derive(Debug, Clone)]
pub struct ActionRef<'a> {
    /// `event id | rule | index`.
    pub key: &'a str,
    pub rule: &'a str,
    pub rule_version: &'a str,
    pub action: ActionKind,
    pub template: Option<&'a str>,
}

impl AuditRecord {
    /// A record about `event`, with the other fields empty.
    pub fn for_event(id: impl Into<String>, event: &Event, outcome: Outcome) -> Self {
        AuditRecord {
            event_id: Some(event.id.clone()),
            event_type: Some(event.event_type.into()),
            thread_id: event.thread_id().map(str::to_string),
            property_id: Some(event.property.id.clone()),
            ..Self::standalone(id, outcome)
        }
    }

    /// A record not tied to an event, stamped with the system clock (tests and tools; the
    /// service's records come from the constructors below, which take `at`).
    pub fn standalone(id: impl Into<String>, outcome: Outcome) -> Self {
        Self::blank(id, outcome, Utc::now())
    }

    fn blank(id: impl Into<String>, outcome: Outcome, at: DateTime<Utc>) -> Self {
        AuditRecord {
            id: id.into(),
            at,
            event_id: None,
            event_type: None,
            rule: None,
            rule_version: None,
            action: None,
            template: None,
            thread_id: None,
            property_id: None,
            outcome,
            reason: None,
            text: None,
            channex_message_id: None,
            error: None,
            attempts: 0,
            duration_ms: 0,
            understood: None,
        }
    }

    fn about_event(id: String, event: &Event, outcome: Outcome, at: DateTime<Utc>) -> Self {
        AuditRecord {
            event_id: Some(event.id.clone()),
            event_type: Some(event.event_type.into()),
            thread_id: event.thread_id().map(str::to_string),
            property_id: Some(event.property.id.clone()),
            ..Self::blank(id, outcome, at)
        }
    }

    /// The final outcome of one planned action (id `<action key>:<outcome>`).
    pub fn action_outcome(
        event: &Event,
        step: ActionRef<'_>,
        done: ActionOutcome,
        attempts: u32,
        duration_ms: u64,
        at: DateTime<Utc>,
    ) -> Self {
        let id = format!("{}:{}", step.key, done.outcome.as_str());
        AuditRecord {
            rule: Some(step.rule.to_string()),
            rule_version: Some(step.rule_version.to_string()),
            action: Some(step.action),
            template: step.template.map(str::to_string),
            reason: done.reason,
            text: done.text,
            channex_message_id: done.channex_message_id,
            error: done.error,
            attempts,
            duration_ms,
            ..Self::about_event(id, event, done.outcome, at)
        }
    }

    /// A rule that failed (runtime error, sandbox limit) on `event`.
    pub fn rule_error(
        event: &Event,
        rule: &str,
        rule_version: &str,
        error: String,
        duration_ms: u64,
        at: DateTime<Utc>,
    ) -> Self {
        let id = format!("{}|{rule}:rule_error", event.id);
        AuditRecord {
            rule: Some(rule.to_string()),
            rule_version: Some(rule_version.to_string()),
            action: Some(ActionKind::Evaluate),
            reason: Some(Reason::RuleError),
            error: Some(error),
            duration_ms,
            ..Self::about_event(id, event, Outcome::RuleError, at)
        }
    }

    /// An event about a message this service sent itself: skipped (loop safety).
    pub fn own_message(event: &Event, at: DateTime<Utc>) -> Self {
        let id = format!("{}:own_message", event.id);
        AuditRecord {
            action: Some(ActionKind::Event),
            reason: Some(Reason::OwnMessage),
            ..Self::about_event(id, event, Outcome::Skipped, at)
        }
    }

    /// An event given up after `deliveries` deliveries, with what was still unfinished.
    pub fn gave_up(event: &Event, deliveries: u64, unfinished: &str, at: DateTime<Utc>) -> Self {
        let id = format!("{}:gave_up", event.id);
        AuditRecord {
            action: Some(ActionKind::Event),
            reason: Some(Reason::MaxDeliver),
            error: Some(format!(
                "gave up after {deliveries} deliveries: {unfinished}"
            )),
            attempts: u32::try_from(deliveries).unwrap_or(u32::MAX),
            ..Self::about_event(id, event, Outcome::Failed, at)
        }
    }

    /// A stored event (stream sequence `seq`, on `subject`) that is not valid event JSON.
    pub fn malformed_event(seq: u64, subject: &str, error: &str, at: DateTime<Utc>) -> Self {
        AuditRecord {
            action: Some(ActionKind::Event),
            reason: Some(Reason::MalformedEvent),
            error: Some(format!(
                "event on {subject} is not valid event JSON: {error}"
            )),
            ..Self::blank(format!("malformed_event:{seq}"), Outcome::Failed, at)
        }
    }

    /// A Channex item the poller could not read and skipped. `kind` names the resource
    /// (`message_thread`, `message`); `fingerprint` makes the id deterministic.
    #[allow(clippy::too_many_arguments)]
    pub fn malformed_item(
        kind: &str,
        fingerprint: &str,
        item_id: Option<&str>,
        property_id: Option<&str>,
        thread_id: Option<&str>,
        error: &str,
        at: DateTime<Utc>,
    ) -> Self {
        let id = format!("malformed_item:{kind}:{fingerprint}");
        let item_id = item_id.unwrap_or("unknown");
        let error: String = error.chars().take(300).collect();
        AuditRecord {
            event_type: Some(RecordEventType::ChannexItem(kind.to_string())),
            action: Some(ActionKind::Event),
            reason: Some(Reason::MalformedItem),
            property_id: property_id.map(str::to_string),
            thread_id: thread_id.map(str::to_string),
            error: Some(format!("{kind} {item_id} skipped: {error}")),
            ..Self::blank(id, Outcome::Skipped, at)
        }
    }

    /// A rule/template file rejected on reload; the last good version keeps running.
    pub fn reload_rejected(file: &Path, problem: String, at: DateTime<Utc>) -> Self {
        let id = format!(
            "reload:{}:{}",
            file.display(),
            at.timestamp_nanos_opt().unwrap_or_default()
        );
        AuditRecord {
            rule: file.file_stem().map(|s| s.to_string_lossy().into_owned()),
            action: Some(ActionKind::Reload),
            reason: Some(Reason::CompileError),
            error: Some(problem),
            ..Self::blank(id, Outcome::RuleRejected, at)
        }
    }

    pub fn subject(&self, prefix: &str) -> String {
        format!(
            "{prefix}.audit.{}.{}",
            subject_token(self.property_id.as_deref().unwrap_or("_")),
            subject_token(self.thread_id.as_deref().unwrap_or("_"))
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// `unavailable`: the audit stream could not be reached (no leader, timeout, lost
    /// connection), as opposed to a record the stream refused.
    #[error("cannot publish audit record {id}: {message}")]
    Publish {
        id: String,
        message: String,
        unavailable: bool,
    },
    #[error("cannot read the audit stream: {0}")]
    Read(String),
}

/// Publishes audit records (acknowledged by JetStream before returning).
#[derive(Clone)]
pub struct AuditLog {
    js: jetstream::Context,
    prefix: String,
}

impl AuditLog {
    pub fn new(js: jetstream::Context, prefix: &str) -> Self {
        AuditLog {
            js,
            prefix: prefix.to_string(),
        }
    }

    /// Publish several records in order and wait for their acknowledgements together (one
    /// round trip instead of one per record). Results are per record, in order.
    pub async fn record_all(&self, records: &[AuditRecord]) -> Vec<Result<(), AuditError>> {
        use async_nats::jetstream::context::{PublishError, PublishErrorKind};
        // Unreachable: no stream leader (no responders), a timeout, a lost connection, or
        // the 503 a replica answers while leadership moves ("raft: not leader").
        let failed = |record: &AuditRecord, e: PublishError| AuditError::Publish {
            id: record.id.clone(),
            unavailable: matches!(
                e.kind(),
                PublishErrorKind::StreamNotFound
                    | PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
            ) || std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<async_nats::jetstream::Error>())
                .is_some_and(|j| j.code() == 503),
            message: e.to_string(),
        };
        let mut pending = Vec::with_capacity(records.len());
        for record in records {
            let sent = match serde_json::to_vec(record) {
                Ok(payload) => {
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", record.id.as_str());
                    self.js
                        .publish_with_headers(record.subject(&self.prefix), headers, payload.into())
                        .await
                        .map_err(|e| failed(record, e))
                }
                Err(e) => Err(AuditError::Publish {
                    id: record.id.clone(),
                    message: e.to_string(),
                    unavailable: false,
                }),
            };
            pending.push(sent);
        }
        let mut results = Vec::with_capacity(records.len());
        for (record, sent) in records.iter().zip(pending) {
            let result = match sent {
                Ok(ack) => match ack.await {
                    Ok(ack) => {
                        tracing::debug!(
                            id = %record.id,
                            outcome = %record.outcome,
                            seq = ack.sequence,
                            duplicate = ack.duplicate,
                            "audit"
                        );
                        Ok(())
                    }
                    Err(e) => Err(failed(record, e)),
                },
                Err(e) => Err(e),
            };
            results.push(result);
        }
        results
    }

    pub async fn record(&self, record: &AuditRecord) -> Result<(), AuditError> {
        self.record_all(std::slice::from_ref(record))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }
}

/// Filters for reading the audit stream back.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub thread_id: Option<String>,
    pub property_id: Option<String>,
    pub rule: Option<String>,
    pub outcome: Option<Outcome>,
    pub event_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl AuditFilter {
    pub fn matches(&self, r: &AuditRecord) -> bool {
        let eq = |want: &Option<String>, have: &Option<String>| {
            want.as_ref().is_none_or(|w| have.as_deref() == Some(w))
        };
        eq(&self.thread_id, &r.thread_id)
            && eq(&self.property_id, &r.property_id)
            && eq(&self.rule, &r.rule)
            && eq(&self.event_id, &r.event_id)
            && self.outcome.is_none_or(|o| o == r.outcome)
            && self.since.is_none_or(|s| r.at >= s)
            && self.until.is_none_or(|u| r.at <= u)
    }

    /// The narrowest subject filter the stream can apply server-side.
    fn subject(&self, prefix: &str) -> String {
        match (&self.property_id, &self.thread_id) {
            (Some(p), Some(t)) => {
                format!("{prefix}.audit.{}.{}", subject_token(p), subject_token(t))
            }
            (Some(p), None) => format!("{prefix}.audit.{}.*", subject_token(p)),
            (None, Some(t)) => format!("{prefix}.audit.*.{}", subject_token(t)),
            (None, None) => format!("{prefix}.audit.>"),
        }
    }
}

/// Reads every stored record matching `filter`, oldest first, with an ephemeral consumer.
pub async fn query(
    js: &jetstream::Context,
    prefix: &str,
    filter: &AuditFilter,
) -> Result<Vec<AuditRecord>, AuditError> {
    let mut out = Vec::new();
    read_stream(js, prefix, filter, false, |r| {
        out.push(r);
        true
    })
    .await?;
    Ok(out)
}

/// Streams matching records to `sink` (oldest first). With `follow`, keeps waiting for new
/// ones until `sink` returns false; otherwise stops at the end of the stream, complete
/// even right after a cluster fail-over (see [`crate::store::nats::read_stored`]).
pub async fn read_stream(
    js: &jetstream::Context,
    prefix: &str,
    filter: &AuditFilter,
    follow: bool,
    mut sink: impl FnMut(AuditRecord) -> bool,
) -> Result<(), AuditError> {
    let from = match filter.since {
        Some(since) => ReadFrom::Time(since),
        None => ReadFrom::Beginning,
    };
    read_stored(
        js,
        &audit_stream(prefix),
        &filter.subject(prefix),
        from,
        follow,
        |msg| match serde_json::from_slice::<AuditRecord>(&msg.payload) {
            Ok(record) if filter.matches(&record) => sink(record),
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(seq = msg.seq, error = %e, "unreadable audit record skipped");
                true
            }
        },
    )
    .await
    .map_err(|e| AuditError::Read(e.to_string()))
}

/// One page of the newest records (see [`latest`]), newest first, each with its stream
/// sequence.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    pub records: Vec<(u64, AuditRecord)>,
    /// Pass as `before` for the next (older) page; `None` when nothing older is left to
    /// read (or the read hit its bound).
    pub older: Option<u64>,
}

/// The newest `limit` records matching `filter` stored before sequence `before` (the
/// whole stream when `None`), read backwards from the end in growing windows: never more
/// than `max_scan` stored records, so a page costs the same with 100,000 records stored.
pub async fn latest(
    js: &jetstream::Context,
    prefix: &str,
    filter: &AuditFilter,
    before: Option<u64>,
    limit: usize,
    max_scan: u64,
) -> Result<AuditPage, AuditError> {
    let subject = filter.subject(prefix);
    latest_on(js, prefix, &subject, filter, before, limit, max_scan).await
}

/// [`latest`] among the records about no property and no thread (subject
/// `<prefix>.audit._._`: rejected reloads, malformed events), filtered by the stream
/// itself, so a rare kind of record is found without reading the others.
pub async fn latest_unscoped(
    js: &jetstream::Context,
    prefix: &str,
    filter: &AuditFilter,
    limit: usize,
    max_scan: u64,
) -> Result<AuditPage, AuditError> {
    let subject = format!("{prefix}.audit._._");
    latest_on(js, prefix, &subject, filter, None, limit, max_scan).await
}

async fn latest_on(
    js: &jetstream::Context,
    prefix: &str,
    subject: &str,
    filter: &AuditFilter,
    before: Option<u64>,
    limit: usize,
    max_scan: u64,
) -> Result<AuditPage, AuditError> {
    let stream = audit_stream(prefix);
    let read_err = |e: crate::store::nats::ReadError| AuditError::Read(e.to_string());
    let (first, last) = stream_bounds(js, &stream).await.map_err(read_err)?;
    let mut end = before.map_or(last, |b| b.saturating_sub(1)).min(last);
    let (mut window, mut scanned) = ((limit as u64 * 4).max(256), 0u64);
    let mut found: Vec<(u64, AuditRecord)> = Vec::new();
    let mut reached_since = false;
    while found.len() < limit && end >= first.max(1) && scanned < max_scan && !reached_since {
        let span = window.min(max_scan - scanned).max(1);
        let start = end.saturating_sub(span - 1).max(first.max(1));
        read_range(js, &stream, subject, start, end, |msg| {
            reached_since |= filter.since.is_some_and(|s| msg.stored_at < s);
            if let Ok(record) = serde_json::from_slice::<AuditRecord>(&msg.payload) {
                if filter.matches(&record) {
                    found.push((msg.seq, record));
                }
            }
            true
        })
        .await
        .map_err(read_err)?;
        scanned += end - start + 1;
        end = start - 1;
        window = (window * 2).min(8192);
    }
    found.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    let older = if found.len() > limit {
        found.truncate(limit);
        found.last().map(|(seq, _)| *seq)
    } else if end >= first.max(1) && !reached_since {
        Some(end + 1)
    } else {
        None
    };
    Ok(AuditPage {
        records: found,
        older,
    })
}

/// Records matching `filter` as they are stored from now on (live views).
pub async fn follow_new(
    js: &jetstream::Context,
    prefix: &str,
    filter: AuditFilter,
    after: Option<u64>,
) -> Result<futures::stream::BoxStream<'static, (u64, AuditRecord)>, AuditError> {
    use futures::StreamExt;
    let subject = filter.subject(prefix);
    let stream = crate::store::nats::follow_new(js, &audit_stream(prefix), &subject, after)
        .await
        .map_err(|e| AuditError::Read(e.to_string()))?;
    Ok(stream
        .filter_map(move |msg| {
            let record = serde_json::from_slice::<AuditRecord>(&msg.payload)
                .ok()
                .filter(|r| filter.matches(r))
                .map(|r| (msg.seq, r));
            async move { record }
        })
        .boxed())
}

/// What happened to one event, as `concierge audit explain` and the console's thread page
/// show it: its records grouped by rule.
#[derive(Debug, Clone)]
pub struct EventDecisions<'a> {
    /// `(no event)` for records not tied to an event.
    pub event_id: String,
    pub event_type: Option<String>,
    /// The time of its first record.
    pub at: Option<DateTime<Utc>>,
    /// Per rule (`-` for records without one), its records in order.
    pub rules: std::collections::BTreeMap<String, Vec<&'a AuditRecord>>,
}

/// Records grouped by event, in order of first appearance.
pub fn group_by_event(records: &[AuditRecord]) -> Vec<EventDecisions<'_>> {
    let mut out: Vec<EventDecisions<'_>> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for r in records {
        let key = r.event_id.clone().unwrap_or_else(|| "(no event)".into());
        let i = *index.entry(key.clone()).or_insert_with(|| {
            out.push(EventDecisions {
                event_id: key,
                event_type: r.event_type.as_ref().map(|t| t.to_string()),
                at: Some(r.at),
                rules: Default::default(),
            });
            out.len() - 1
        });
        out[i]
            .rules
            .entry(r.rule.clone().unwrap_or_else(|| "-".into()))
            .or_default()
            .push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_kinds_serialise_as_the_documented_strings() {
        for kind in ActionKind::KNOWN {
            let json = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(ActionKind::parse(kind.as_str()), kind);
            assert_eq!(kind.label(), kind.as_str());
            assert_eq!(serde_json::from_str::<ActionKind>(&json).ok(), Some(kind));
        }
        // A kind written by a newer version is kept verbatim, and labelled `other`.
        let draft: ActionKind = serde_json::from_str("\"draft\"").expect("any string reads");
        assert_eq!(draft, ActionKind::Other("draft".into()));
        assert_eq!(
            serde_json::to_string(&draft).expect("serialises"),
            "\"draft\""
        );
        assert_eq!(draft.label(), "other");
        assert_eq!(ActionKind::NoReplyNeeded.as_str(), "no_reply_needed");
        assert_eq!(ActionKind::CancelFollowUp.as_str(), "cancel_follow_up");
    }

    #[test]
    fn reasons_serialise_as_their_strings_and_read_back_equal() {
        let reasons = [
            (Reason::OwnMessage, "own_message"),
            (Reason::MaxDeliver, "max_deliver"),
            (Reason::TemplateError, "template_error"),
            (
                Reason::VerifiedAfterInterruption,
                "verified_after_interruption",
            ),
            (Reason::ChannexError, "channex_error"),
            (Reason::Delivered("log,nats".into()), "delivered: log,nats"),
            (
                Reason::Armed {
                    name: "delayed reply".into(),
                    due_at: "2024-07-01T12:05:00+00:00".into(),
                },
                "armed delayed reply for 2024-07-01T12:05:00+00:00",
            ),
            (Reason::Cancelled("holding".into()), "cancelled holding"),
            (Reason::Channex("not_found".into()), "not_found"),
            (Reason::Other("reason-7".into()), "reason-7"),
        ];
        for (reason, text) in reasons {
            let json = serde_json::to_string(&reason).expect("serialises");
            assert_eq!(json, serde_json::to_string(text).expect("string"));
            let back: Reason = serde_json::from_str(&json).expect("reads back");
            assert_eq!(back, reason);
            assert_eq!(back.to_string(), text);
        }
        for (fixed, text) in Reason::FIXED {
            assert_eq!(fixed.as_text(), text);
            assert_eq!(Reason::parse(text).as_text(), text);
        }
    }

    #[test]
    fn event_types_serialise_as_their_strings() {
        for (t, text) in [
            (
                RecordEventType::Event(EventType::FollowUpDue),
                "follow_up.due",
            ),
            (
                RecordEventType::ChannexItem("message_thread".into()),
                "channex.message_thread",
            ),
            (RecordEventType::Other("x.y".into()), "x.y"),
        ] {
            let json = serde_json::to_string(&t).expect("serialises");
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<RecordEventType>(&json).ok(), Some(t));
        }
    }

    #[test]
    fn a_records_json_keeps_its_shape() {
        let at = "2024-07-01T12:00:00Z".parse().expect("time");
        let r = AuditRecord::malformed_event(7, "concierge.events.x.y", "bad", at);
        let json = serde_json::to_value(&r).expect("serialises");
        assert_eq!(json["id"], "malformed_event:7");
        assert_eq!(json["action"], "event");
        assert_eq!(json["reason"], "malformed_event");
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["at"], "2024-07-01T12:00:00Z");
        assert!(json["event_type"].is_null());
        assert!(json["rule"].is_null());
        let back: AuditRecord = serde_json::from_value(json).expect("reads back");
        assert_eq!(back, r);
    }
}
