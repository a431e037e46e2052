//! The audit log: one JSON record per decision on stream `CONCIERGE_AUDIT`.
//!
//! Owns the record format (every field of the contract), publishing records under
//! `<prefix>.audit.<property_id>.<thread_id>`, and reading them back with filters (for
//! `concierge audit`, `audit explain` and `replay`). It must never see a secret: callers
//! pass already-rendered texts and Channex error codes, not requests.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{subject_token, Event};
use crate::store::nats::{audit_stream, read_stored, ReadFrom};

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

/// One decision. Fields follow DESIGN.md ("Audit log"); absent ones are `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Deterministic for action outcomes (`<action key>:<outcome>`), so a redelivered
    /// event that reaches the same final outcome is deduplicated by JetStream.
    pub id: String,
    pub at: DateTime<Utc>,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub rule: Option<String>,
    pub rule_version: Option<String>,
    /// `reply`, `no_reply_needed`, `close_thread`, `alert`, `follow_up`, `cancel_follow_up`,
    /// or `evaluate` / `reload` / `event` for records that are not about one action.
    pub action: Option<String>,
    /// Template used by a reply or alert.
    #[serde(default)]
    pub template: Option<String>,
    pub thread_id: Option<String>,
    pub property_id: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub text: Option<String>,
    pub channex_message_id: Option<String>,
    pub error: Option<String>,
    pub attempts: u32,
    pub duration_ms: u64,
}

impl AuditRecord {
    /// A record about `event`, with the other fields empty.
    pub fn for_event(id: impl Into<String>, event: &Event, outcome: Outcome) -> Self {
        AuditRecord {
            event_id: Some(event.id.clone()),
            event_type: Some(event.event_type.as_str().to_string()),
            thread_id: event.thread_id().map(str::to_string),
            property_id: Some(event.property.id.clone()),
            ..Self::standalone(id, outcome)
        }
    }

    /// A record not tied to an event (e.g. a rejected rule file on reload).
    pub fn standalone(id: impl Into<String>, outcome: Outcome) -> Self {
        AuditRecord {
            id: id.into(),
            at: Utc::now(),
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
