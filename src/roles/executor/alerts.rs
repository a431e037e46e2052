//! Alert sinks: where a rule's `alert(...)` goes once the executor decided to send it.
//!
//! Owns the [`Alert`] record and its delivery to the configured sinks: a Slack-compatible
//! webhook (`POST {"text": ...}`, bounded retries with jittered exponential backoff on
//! 5xx, 429 and connection errors, immediate failure on other 4xx), a NATS subject
//! (`<prefix>.alerts.<property_id>`, JSON alert, core publish + flush) and the log
//! (`tracing::warn!`). It must not decide whether to alert, render text or audit: the
//! executor does that and records the [`AlertReport`] or [`AlertError`].
//!
//! An alert's text quotes guest words, and staff read it in chat, a terminal or a log: every
//! sink gets it through the shared sanitiser ([`crate::base::display::sanitize`]: control
//! characters shown as U+FFFD, bidi formatting removed, at most [`ALERT_TEXT_CHARS`]
//! characters, line breaks kept).
//!
//! The webhook URL is a secret (it embeds the token): it never appears in logs or error
//! strings. reqwest errors carry the URL, so every error message here is built from
//! `without_url()` and then scrubbed of the URL and its path as a second line of defence.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::base::display::{sanitize, Lines};
use crate::config::{AlertsConfig, Secret};

/// The most an alert's text shows (Slack cuts messages near 40,000 characters; an alert
/// is a pointer to a thread, not the thread).
pub const ALERT_TEXT_CHARS: usize = 4_000;

/// One staff notification, already rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub property_id: String,
    pub thread_id: Option<String>,
    /// Rendered template text (sent as the webhook's `text`).
    pub text: String,
    pub event_id: String,
    pub rule: String,
    pub at: DateTime<Utc>,
}

/// What [`AlertSinks::send`] delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertReport {
    /// Sinks that delivered: `"webhook"`, `"nats"`, `"log"`.
    pub delivered: Vec<&'static str>,
    /// Webhook attempts made (0 without a webhook).
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkFailure {
    pub sink: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// At least one sink failed; the others may have delivered.
    #[error("alert not delivered to {}{}", describe_failures(.failures), describe_delivered(.delivered))]
    Failed {
        failures: Vec<SinkFailure>,
        delivered: Vec<&'static str>,
        attempts: u32,
    },
}

fn describe_failures(failures: &[SinkFailure]) -> String {
    failures
        .iter()
        .map(|f| format!("{}: {}", f.sink, f.message))
        .collect::<Vec<_>>()
        .join("; ")
}

fn describe_delivered(delivered: &[&'static str]) -> String {
    if delivered.is_empty() {
        String::new()
    } else {
        format!(" (delivered via {})", delivered.join(", "))
    }
}

/// The configured sinks. Cheap to clone.
#[derive(Clone)]
pub struct AlertSinks {
    webhook: Option<Secret>,
    nats: Option<(async_nats::Client, String)>,
    log: bool,
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
    http: reqwest::Client,
}

impl std::fmt::Debug for AlertSinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSinks")
            .field("webhook", &self.webhook)
            .field("nats", &self.nats.as_ref().map(|(_, p)| p))
            .field("log", &self.log)
            .field("max_attempts", &self.max_attempts)
            .finish()
    }
}

impl AlertSinks {
    /// `nats` (client, subject prefix) is used only when `cfg.nats` is true; alerts go to
    /// `<cfg.nats_subject>.<property_id>`, or `<prefix>.alerts.<property_id>` by default.
    pub fn new(cfg: &AlertsConfig, nats: Option<(async_nats::Client, String)>) -> Self {
        let nats = nats.map(|(client, prefix)| {
            let base = if cfg.nats_subject.is_empty() {
                format!("{prefix}.alerts")
            } else {
                cfg.nats_subject.clone()
            };
            (client, base)
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        AlertSinks {
            webhook: (!cfg.webhook_url.is_empty()).then(|| cfg.webhook_url.clone()),
            nats: if cfg.nats { nats } else { None },
            log: cfg.log,
            max_attempts: cfg.max_attempts.max(1),
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(10),
            http,
        }
    }

    /// First retry delay (doubled per attempt, jittered, capped at 20x). Default 500ms.
    pub fn with_base_delay(mut self, d: Duration) -> Self {
        self.base_delay = d;
        self.max_delay = d * 20;
        self
    }

    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// Deliver to every configured sink (the text sanitised once for all of them). `Ok`
    /// only when all of them delivered.
    pub async fn send(&self, alert: &Alert) -> Result<AlertReport, AlertError> {
        let shown = Alert {
            text: sanitize(&alert.text, ALERT_TEXT_CHARS, Lines::Keep).into_owned(),
            ..alert.clone()
        };
        let alert = &shown;
        let mut delivered = Vec::new();
        let mut failures = Vec::new();
        let mut attempts = 0;
        if let Some(url) = &self.webhook {
            let (result, n) = self.send_webhook(url, alert).await;
            attempts = n;
            match result {
                Ok(()) => delivered.push("webhook"),
                Err(message) => failures.push(SinkFailure {
                    sink: "webhook",
                    message,
                }),
            }
        }
        if let Some((client, subject_base)) = &self.nats {
            match send_nats(client, subject_base, alert).await {
                Ok(()) => delivered.push("nats"),
                Err(message) => failures.push(SinkFailure {
                    sink: "nats",
                    message,
                }),
            }
        }
        if self.log {
            tracing::warn!(
                property_id = %alert.property_id,
                thread_id = alert.thread_id.as_deref().unwrap_or("-"),
                rule = %alert.rule,
                event_id = %alert.event_id,
                "ALERT: {}",
                alert.text
            );
            delivered.push("log");
        }
        if failures.is_empty() {
            Ok(AlertReport {
                delivered,
                attempts,
            })
        } else {
            Err(AlertError::Failed {
                failures,
                delivered,
                attempts,
            })
        }
    }

    /// Returns the outcome (error message already free of the URL) and the attempts made.
    async fn send_webhook(&self, url: &Secret, alert: &Alert) -> (Result<(), String>, u32) {
        let body = serde_json::json!({ "text": alert.text });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (retryable, message, retry_after) =
                match self.http.post(url.expose()).json(&body).send().await {
                    Ok(resp) if resp.status().is_success() => return (Ok(()), attempt),
                    Ok(resp) => {
                        let status = resp.status();
                        let retry_after = resp
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .map(Duration::from_secs);
                        let retryable = status.is_server_error()
                            || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
                        (retryable, format!("HTTP {}", status.as_u16()), retry_after)
                    }
                    Err(e) => {
                        let kind = if e.is_timeout() {
                            "timed out"
                        } else if e.is_connect() {
                            "connection failed"
                        } else {
                            "request failed"
                        };
                        let detail = error_chain(&e.without_url());
                        (true, format!("{kind}: {detail}"), None)
                    }
                };
            let message = redact(&message, url);
            if !retryable || attempt >= self.max_attempts {
                let message = format!(
                    "{message} (after {attempt} attempt{})",
                    if attempt == 1 { "" } else { "s" }
                );
                return (Err(message), attempt);
            }
            let delay = retry_after
                .map(|d| d.min(self.max_delay))
                .unwrap_or_else(|| self.backoff(attempt));
            tracing::debug!(attempt, error = %message, ?delay, "alert webhook failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .base_delay
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.max_delay);
        // Full jitter on the upper half: [exp/2, exp].
        let half = exp / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis().max(1) as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

async fn send_nats(
    client: &async_nats::Client,
    subject_base: &str,
    alert: &Alert,
) -> Result<(), String> {
    let payload = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
    let subject = format!(
        "{subject_base}.{}",
        crate::events::subject_token(&alert.property_id)
    );
    client
        .publish(subject, payload.into())
        .await
        .map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())
}

/// `e` and its sources, one line.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Removes the URL, and any path/query part of it, from a message.
fn redact(message: &str, url: &Secret) -> String {
    let raw = url.expose();
    let mut out = message.replace(raw, "<webhook url>");
    if let Some(after_scheme) = raw.split_once("://").map(|(_, rest)| rest) {
        if let Some((_, path)) = after_scheme.split_once('/') {
            for part in path.split(['/', '?', '&', '=']) {
                if part.len() >= 6 {
                    out = out.replace(part, "***");
                }
            }
        }
    }
    out
}
