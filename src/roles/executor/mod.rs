//! The executor: carries out one planned action effectively once and says what happened.
//!
//! Owns every side effect of the service — Channex writes, alerts, follow-up timers — and
//! the guarantees hosts rely on (DESIGN.md, "Executor guarantees"):
//! - an action key (`event id | rule | action index`) is claimed in the ledger before any
//!   Channex call and marked done after it; a claim found on redelivery (a crash or an
//!   ambiguous 5xx/timeout) is resolved by re-reading the thread and comparing
//!   whitespace-normalised text, never by sending blindly again;
//! - a claim is renewed while held and confirmed by compare-and-set right before a send,
//!   which starts only if the claim is certainly ours for longer than the HTTP timeout
//!   ([`claim`]); a reply's text is noted for its thread before the POST, so the message
//!   is known as ours even if the process dies before recording its id;
//! - human takeover: a property-side message newer than the guest message that triggered
//!   the event, not sent by us, skips the reply (`superseded`); a closed thread skips it;
//! - cooldown per thread + template; `no_reply_needed` only on Booking.com;
//! - dry-run (global, per property, per rule) renders and audits without calling out.
//!   Follow-up timers are internal state, armed even in dry-run so a dry run shows the whole
//!   flow (the delayed reply then shows up as `dry_run` too).
//!
//! It must not evaluate rules or touch the event stream; the worker hands it one action
//! at a time and acks the event once every action has a final outcome.

pub mod alerts;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::channex::{ChannexClient, ChannexError, Message, Sender};
use crate::events::Event;
use crate::plan::rules::Action;
use crate::plan::templates::Templates;
use crate::store::audit::{AuditRecord, Outcome};
use crate::store::claim::{ConfirmError, HeldClaim};
use crate::store::ledger::{self, Claim, Ledger, LedgerEntry, LedgerError};
use crate::store::timers::{FollowUpTimer, FollowUps};
use alerts::{Alert, AlertSinks};

/// Where a test may make the executor "crash" (return without finishing, as a killed
/// process would) to prove redelivery does not duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterClaim,
    /// The POST reached Channex, nothing was recorded yet (not even `own.`).
    AfterSendBeforeMarks,
    AfterSend,
}

/// A test hook awaited right before a reply's pre-send confirmation: lets a test hold a
/// worker there while another one acts, to replay an interleaving deterministically.
pub type BeforeSend =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct ExecutorSettings {
    pub cooldown: Duration,
    /// Property-level and global dry-run, already combined by the caller.
    pub dry_run: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    pub crash_at: Option<CrashPoint>,
    /// The longest a send may take (the Channex HTTP timeout): a send starts only while
    /// the claim is certainly ours for longer than this.
    pub send_timeout: Duration,
    pub before_send: Option<BeforeSend>,
    /// Timers due later than this from now are refused: the timer store would forget them
    /// first (`nats.followups_max_age` minus a day).
    pub timer_horizon: Duration,
}

impl std::fmt::Debug for ExecutorSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutorSettings")
            .field("cooldown", &self.cooldown)
            .field("crash_at", &self.crash_at)
            .field("send_timeout", &self.send_timeout)
            .finish_non_exhaustive()
    }
}

/// The result of one action: final (audit it, never redo it), retry later, or wait: the
/// ledger or timer store could not be reached, or another worker holds a live claim on the
/// action. Nothing about the action itself failed, so the worker waits in place rather
/// than spend one of the event's deliveries.
#[derive(Debug)]
pub enum ActionResult {
    Final(Box<AuditRecord>),
    Retry { reason: String },
    Wait { reason: String },
}

/// One planned action with what it needs to be carried out and audited.
pub struct PlannedAction<'a> {
    pub event: &'a Event,
    pub rule: &'a str,
    pub rule_version: &'a str,
    pub rule_dry_run: bool,
    pub index: usize,
    pub action: &'a Action,
    pub templates: &'a Templates,
}

impl PlannedAction<'_> {
    pub fn key(&self) -> String {
        format!("{}|{}|{}", self.event.id, self.rule, self.index)
    }

    fn record(&self, outcome: Outcome) -> AuditRecord {
        let mut r = AuditRecord::for_event(
            format!("{}:{}", self.key(), outcome.as_str()),
            self.event,
            outcome,
        );
        r.rule = Some(self.rule.to_string());
        r.rule_version = Some(self.rule_version.to_string());
        r.action = Some(self.action.kind().to_string());
        r.template = match self.action {
            Action::Reply { template, .. } | Action::Alert { template, .. } => {
                Some(template.clone())
            }
            _ => None,
        };
        r
    }
}

#[derive(Clone)]
pub struct Executor {
    channex: ChannexClient,
    ledger: Ledger,
    followups: FollowUps,
    alerts: AlertSinks,
    settings: ExecutorSettings,
}

pub use crate::store::ledger::normalise_text;

struct Finished {
    outcome: Outcome,
    reason: Option<String>,
    text: Option<String>,
    channex_message_id: Option<String>,
    error: Option<String>,
}

impl Finished {
    fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Finished {
            outcome,
            reason: Some(reason.into()),
            text: None,
            channex_message_id: None,
            error: None,
        }
    }
    fn text(mut self, text: &str) -> Self {
        self.text = Some(text.to_string());
        self
    }
    fn error(mut self, e: impl std::fmt::Display) -> Self {
        self.error = Some(e.to_string());
        self
    }
    fn channex_failure(e: &ChannexError) -> Self {
        let code = e
            .code()
            .map(|c| c.as_str().to_string())
            .unwrap_or_else(|| "channex_error".into());
        Finished::new(Outcome::Failed, code).error(e)
    }
}

enum Step {
    Done(Finished),
    Retry(String),
    /// The ledger or the follow-up store is unreachable (NATS fail-over, outage), or
    /// another worker holds a live claim on the action: time will tell.
    Wait(String),
}

impl From<LedgerError> for Step {
    fn from(e: LedgerError) -> Step {
        if e.is_unavailable() {
            Step::Wait(e.to_string())
        } else {
            Step::Retry(e.to_string())
        }
    }
}

impl Executor {
    pub fn new(
        channex: ChannexClient,
        ledger: Ledger,
        followups: FollowUps,
        alerts: AlertSinks,
        settings: ExecutorSettings,
    ) -> Self {
        Executor {
            channex,
            ledger,
            followups,
            alerts,
            settings,
        }
    }

    /// Fault injection for tests: stop at `point` as a killed process would.
    pub fn with_crash_point(mut self, point: CrashPoint) -> Self {
        self.settings.crash_at = Some(point);
        self
    }

    /// Judge claim expiry with `clock` (tests: a clock stepped past the claim timeout).
    pub fn with_ledger_clock(mut self, clock: crate::base::clock::Clock) -> Self {
        self.ledger = self.ledger.with_clock(clock);
        self
    }

    /// Test hook: await `hook` right before each reply's pre-send confirmation.
    pub fn with_before_send(mut self, hook: BeforeSend) -> Self {
        self.settings.before_send = Some(hook);
        self
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Carry out one action. Never panics on external data; every path ends in a final
    /// audit record, a retry request, or a wait (ledger or timer store unreachable, or the
    /// action claimed by another worker).
    pub async fn execute(&self, planned: &PlannedAction<'_>, delivery: u64) -> ActionResult {
        let started = Instant::now();
        let dry_run = planned.rule_dry_run || (self.settings.dry_run)(&planned.event.property.id);
        let step = match planned.action {
            Action::Reply { template, vars } => self.reply(planned, template, vars, dry_run).await,
            Action::NoReplyNeeded => self.no_reply_needed(planned, dry_run).await,
            Action::CloseThread => self.close_thread(planned, dry_run).await,
            Action::Alert { template, vars } => self.alert(planned, template, vars, dry_run).await,
            Action::FollowUp { name, due_at, data } => {
                self.follow_up(planned, name, *due_at, data).await
            }
            Action::CancelFollowUp { name } => self.cancel_follow_up(planned, name).await,
        };
        let kind = planned.action.kind();
        match step {
            Step::Done(f) => {
                metrics::counter!("concierge_actions_total", "kind" => kind, "outcome" => f.outcome.as_str())
                    .increment(1);
                let mut r = planned.record(f.outcome);
                r.reason = f.reason;
                r.text = f.text;
                r.channex_message_id = f.channex_message_id;
                r.error = f.error;
                r.attempts = u32::try_from(delivery).unwrap_or(u32::MAX);
                r.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                ActionResult::Final(Box::new(r))
            }
            Step::Retry(reason) => {
                metrics::counter!("concierge_action_retries_total", "kind" => kind).increment(1);
                tracing::info!(action = kind, key = %planned.key(), %reason, "action will be retried");
                ActionResult::Retry { reason }
            }
            Step::Wait(reason) => {
                metrics::counter!("concierge_action_retries_total", "kind" => kind).increment(1);
                tracing::info!(action = kind, key = %planned.key(), %reason, "action waits; it will be tried again");
                ActionResult::Wait { reason }
            }
        }
    }

    fn thread_id<'a>(planned: &'a PlannedAction<'_>) -> Option<&'a str> {
        planned.event.thread.as_ref().map(|t| t.id.as_str())
    }

    /// Claim the action; `Err` carries the step to return at once.
    async fn claim(
        &self,
        planned: &PlannedAction<'_>,
        text: Option<&str>,
    ) -> Result<(HeldClaim, Option<LedgerEntry>), Step> {
        let key = planned.key();
        let thread = Self::thread_id(planned);
        match self.ledger.claim_in(&key, thread, text).await {
            Ok(Claim::Won { revision, previous }) => Ok((
                HeldClaim::hold(
                    self.ledger.clone(),
                    key,
                    thread.map(str::to_string),
                    revision,
                ),
                previous,
            )),
            // Another worker is on it (or crashed holding it): wait for its outcome or for
            // the claim to expire, rather than spend this event's deliveries meanwhile.
            Ok(Claim::Busy) => Err(Step::Wait("claimed by another worker".into())),
            Ok(Claim::Done(entry)) => {
                let outcome = entry
                    .outcome
                    .as_deref()
                    .and_then(Outcome::parse)
                    .unwrap_or(Outcome::Executed);
                Err(Step::Done(Finished {
                    outcome,
                    reason: entry.reason,
                    text: entry.text,
                    channex_message_id: entry.channex_message_id,
                    error: None,
                }))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Write the final outcome to the ledger; a failure to do so is retried (the claim
    /// stays, and the next run, in place or redelivered, resolves it by reading the thread).
    async fn finish(&self, claim: HeldClaim, f: Finished) -> Step {
        let entry = LedgerEntry {
            state: ledger::LedgerState::Done,
            worker: String::new(),
            claimed_at: Utc::now(),
            outcome: Some(f.outcome.as_str().to_string()),
            reason: f.reason.clone(),
            text: f.text.clone(),
            channex_message_id: f.channex_message_id.clone(),
            attempts: 0,
            renewed_at: None,
            thread_id: None,
        };
        match claim.finish(entry).await {
            Ok(()) => Step::Done(f),
            Err(e) => e.into(),
        }
    }

    /// A Channex error while we hold a claim: release it if the call certainly did not
    /// happen, keep it if it may have, fail for good on 4xx.
    async fn on_channex_error(
        &self,
        claim: HeldClaim,
        e: ChannexError,
        text: Option<&str>,
    ) -> Step {
        if e.is_ambiguous() {
            claim.keep_in_doubt();
            return Step::Retry(format!("ambiguous Channex result, will verify: {e}"));
        }
        if e.is_transient() {
            if let Err(le) = claim.release().await {
                tracing::warn!(error = %le, "could not release claim");
            }
            return Step::Retry(format!("transient Channex error: {e}"));
        }
        let mut f = Finished::channex_failure(&e);
        f.text = text.map(str::to_string);
        self.finish(claim, f).await
    }

    async fn reply(
        &self,
        planned: &PlannedAction<'_>,
        template: &str,
        vars: &Map<String, Value>,
        dry_run: bool,
    ) -> Step {
        let text = match render(planned, template, vars) {
            Ok(t) => t,
            Err(step) => return step,
        };
        let Some(thread_id) = Self::thread_id(planned) else {
            return Step::Done(Finished::new(Outcome::Skipped, "no_thread").text(&text));
        };
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, "dry_run").text(&text));
        }
        let (claim, previous) = match self.claim(planned, Some(&text)).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        let messages = match self
            .channex
            .list_thread_messages_page(thread_id, 1, 100)
            .await
        {
            Ok(page) => page.items,
            Err(e) => return self.on_channex_error(claim, e, Some(&text)).await,
        };
        // A takeover: the previous holder may have sent; if so, that is our outcome.
        let verified = previous
            .as_ref()
            .and_then(|p| find_sent(&messages, &text, p.claimed_at));
        if let Some(sent) = verified {
            let _ = self.ledger.mark_own_message(&sent.id).await;
            let _ = self
                .ledger
                .mark_sent(thread_id, template, sent.inserted_at)
                .await;
            let mut f = Finished::new(Outcome::Executed, "verified_after_interruption").text(&text);
            f.channex_message_id = Some(sent.id.clone());
            return self.finish(claim, f).await;
        }
        let thread = match self.channex.get_thread(thread_id).await {
            Ok(t) => t,
            Err(e) => return self.on_channex_error(claim, e, Some(&text)).await,
        };
        if thread.is_closed {
            let f = Finished::new(Outcome::Skipped, "thread_closed").text(&text);
            return self.finish(claim, f).await;
        }
        match self.superseded_by(planned, &messages).await {
            Ok(Some(by)) => {
                let f = Finished::new(Outcome::Skipped, "superseded")
                    .text(&text)
                    .error(format!(
                        "staff message {by} is newer than the guest message"
                    ));
                return self.finish(claim, f).await;
            }
            Ok(None) => {}
            Err(e) => return e.into(),
        }
        match self.ledger.last_sent(thread_id, template).await {
            Ok(Some(at)) if in_window(at, self.settings.cooldown) => {
                let f = Finished::new(Outcome::Skipped, "cooldown")
                    .text(&text)
                    .error(format!(
                        "template {template} was sent to this thread at {at}"
                    ));
                return self.finish(claim, f).await;
            }
            Ok(_) => {}
            Err(e) => return e.into(),
        }
        if self.settings.crash_at == Some(CrashPoint::AfterClaim) {
            return Step::Retry("injected crash after claim".into());
        }
        self.send_reply(claim, thread_id, template, &text).await
    }

    /// The send itself: note the text as ours, confirm the claim is ours for longer than
    /// the send may take, send within that time, then record the message as ours.
    async fn send_reply(
        &self,
        claim: HeldClaim,
        thread_id: &str,
        template: &str,
        text: &str,
    ) -> Step {
        // Written before the POST so a process killed right after it still leaves the
        // message recognisable as ours (poller events, takeover check).
        if let Err(e) = self.ledger.mark_sending(thread_id, text).await {
            return e.into();
        }
        if let Some(hook) = &self.settings.before_send {
            hook().await;
        }
        let left = match claim.confirm(self.settings.send_timeout).await {
            Ok(left) => left,
            Err(e) => return not_confirmed(claim, e).await,
        };
        // Past `left` another worker may take the claim over: a send still running then is
        // abandoned as ambiguous, and whoever runs next verifies by reading the thread.
        let sent =
            match tokio::time::timeout(left, self.channex.send_thread_message(thread_id, text))
                .await
            {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    if !e.is_ambiguous() {
                        let _ = self.ledger.clear_sending(thread_id, text).await;
                    }
                    return self.on_channex_error(claim, e, Some(text)).await;
                }
                Err(_) => {
                    claim.keep_in_doubt();
                    return Step::Retry(format!(
                        "send outlived the claim's safe time ({left:?}); will verify by reading"
                    ));
                }
            };
        if self.settings.crash_at == Some(CrashPoint::AfterSendBeforeMarks) {
            return Step::Retry("injected crash after send, before marks".into());
        }
        // Loop safety and the takeover check depend on these marks; if they cannot be
        // written the claim stays and the redelivery finds the message by reading.
        if let Err(e) = self.ledger.mark_own_message(&sent.id).await {
            return e.into();
        }
        let _ = self.ledger.mark_sent(thread_id, template, Utc::now()).await;
        if self.settings.crash_at == Some(CrashPoint::AfterSend) {
            return Step::Retry("injected crash after send".into());
        }
        let mut f = Finished::new(Outcome::Executed, "sent").text(text);
        f.channex_message_id = Some(sent.id);
        self.finish(claim, f).await
    }

    /// A property-side message, newer than the guest message that triggered the event and
    /// not sent by this service, means a human has taken the conversation.
    async fn superseded_by(
        &self,
        planned: &PlannedAction<'_>,
        newest_first: &[Message],
    ) -> Result<Option<String>, LedgerError> {
        let trigger = planned
            .event
            .message
            .as_ref()
            .filter(|m| m.sender == "guest")
            .map(|m| m.inserted_at)
            .or_else(|| {
                planned
                    .event
                    .thread
                    .as_ref()
                    .and_then(|t| t.last_guest_message_at)
            });
        let Some(trigger) = trigger else {
            return Ok(None);
        };
        for m in newest_first {
            if m.inserted_at <= trigger {
                break;
            }
            if m.sender != Sender::Property {
                continue;
            }
            let thread_id = Self::thread_id(planned).unwrap_or_default();
            if !self
                .ledger
                .is_ours(thread_id, &m.id, &m.text, m.inserted_at)
                .await?
            {
                return Ok(Some(m.id.clone()));
            }
        }
        Ok(None)
    }

    async fn no_reply_needed(&self, planned: &PlannedAction<'_>, dry_run: bool) -> Step {
        let Some(thread) = planned.event.thread.as_ref() else {
            return Step::Done(Finished::new(Outcome::Skipped, "no_thread"));
        };
        if thread.provider != "booking_com" {
            return Step::Done(
                Finished::new(Outcome::Skipped, "not_supported").error(format!(
                    "no_reply_needed applies to Booking.com only, thread is {}",
                    thread.provider
                )),
            );
        }
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, "dry_run"));
        }
        let (claim, _) = match self.claim(planned, None).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        match self.channex.mark_no_reply_needed(&thread.id).await {
            Ok(()) => {
                self.finish(claim, Finished::new(Outcome::Executed, "marked"))
                    .await
            }
            Err(e) => self.on_channex_error(claim, e, None).await,
        }
    }

    async fn close_thread(&self, planned: &PlannedAction<'_>, dry_run: bool) -> Step {
        let Some(thread_id) = Self::thread_id(planned) else {
            return Step::Done(Finished::new(Outcome::Skipped, "no_thread"));
        };
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, "dry_run"));
        }
        let (claim, _) = match self.claim(planned, None).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        match self.channex.get_thread(thread_id).await {
            Ok(t) if t.is_closed => {
                return self
                    .finish(claim, Finished::new(Outcome::Skipped, "already_closed"))
                    .await
            }
            Ok(_) => {}
            Err(e) => return self.on_channex_error(claim, e, None).await,
        }
        match self.channex.close_thread(thread_id).await {
            Ok(_) => {
                self.finish(claim, Finished::new(Outcome::Executed, "closed"))
                    .await
            }
            // Closing twice is harmless: an ambiguous close is simply retried.
            Err(e) => self.on_channex_error(claim, e, None).await,
        }
    }

    async fn alert(
        &self,
        planned: &PlannedAction<'_>,
        template: &str,
        vars: &Map<String, Value>,
        dry_run: bool,
    ) -> Step {
        let text = match render(planned, template, vars) {
            Ok(t) => t,
            Err(step) => return step,
        };
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, "dry_run").text(&text));
        }
        let (claim, _) = match self.claim(planned, Some(&text)).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        let alert = Alert {
            property_id: planned.event.property.id.clone(),
            thread_id: Self::thread_id(planned).map(str::to_string),
            text: text.clone(),
            event_id: planned.event.id.clone(),
            rule: planned.rule.to_string(),
            at: Utc::now(),
        };
        // Like a reply, an alert starts only on a claim confirmed as ours (a holder that
        // waited out a NATS outage may have lost it) and is cut off when that time runs out.
        let left = match claim.confirm(Duration::ZERO).await {
            Ok(left) => left,
            Err(e) => return not_confirmed(claim, e).await,
        };
        let Ok(sent) = tokio::time::timeout(left, self.alerts.send(&alert)).await else {
            claim.keep_in_doubt();
            return Step::Retry(format!("alert outlived the claim's safe time ({left:?})"));
        };
        let f = match sent {
            Ok(report) => Finished::new(
                Outcome::Executed,
                format!("delivered: {}", report.delivered.join(",")),
            )
            .text(&text),
            Err(e) => Finished::new(Outcome::Failed, "alert_failed")
                .text(&text)
                .error(e),
        };
        self.finish(claim, f).await
    }

    async fn follow_up(
        &self,
        planned: &PlannedAction<'_>,
        name: &str,
        due_at: DateTime<Utc>,
        data: &Map<String, Value>,
    ) -> Step {
        let Some(thread_id) = Self::thread_id(planned) else {
            return Step::Done(Finished::new(Outcome::Skipped, "no_thread"));
        };
        let horizon = chrono::Duration::from_std(self.settings.timer_horizon)
            .unwrap_or(chrono::Duration::MAX);
        if due_at.signed_duration_since(Utc::now()) > horizon {
            return Step::Done(
                Finished::new(Outcome::Failed, "beyond_retention").error(format!(
                "follow-up {name} is due {}, later than timers are kept (nats.followups_max_age)",
                due_at.to_rfc3339()
            )),
            );
        }
        let timer = FollowUpTimer {
            thread_id: thread_id.to_string(),
            property_id: planned.event.property.id.clone(),
            name: name.to_string(),
            due_at,
            data: data.clone(),
            armed_at: Utc::now(),
            armed_by_event: planned.event.id.clone(),
        };
        match self.followups.arm(&timer).await {
            Ok(()) => Step::Done(Finished::new(
                Outcome::Executed,
                format!("armed {name} for {}", due_at.to_rfc3339()),
            )),
            Err(e) => Step::Wait(e.to_string()),
        }
    }

    async fn cancel_follow_up(&self, planned: &PlannedAction<'_>, name: &str) -> Step {
        let Some(thread_id) = Self::thread_id(planned) else {
            return Step::Done(Finished::new(Outcome::Skipped, "no_thread"));
        };
        match self.followups.cancel(thread_id, name).await {
            Ok(true) => Step::Done(Finished::new(
                Outcome::Executed,
                format!("cancelled {name}"),
            )),
            Ok(false) => Step::Done(Finished::new(Outcome::Skipped, "not_armed")),
            Err(e) => Step::Wait(e.to_string()),
        }
    }
}

/// A template that does not render never produces a message: the action fails for good.
fn render(
    planned: &PlannedAction<'_>,
    template: &str,
    vars: &Map<String, Value>,
) -> Result<String, Step> {
    planned
        .templates
        .render(template, planned.event, vars)
        .map_err(|e| Step::Done(Finished::new(Outcome::Failed, "template_error").error(e)))
}

fn in_window(at: DateTime<Utc>, window: Duration) -> bool {
    Utc::now()
        .signed_duration_since(at)
        .to_std()
        .map(|age| age < window)
        .unwrap_or(true)
}

/// A property message with our text, inserted around or after our claim.
fn find_sent<'a>(
    newest_first: &'a [Message],
    text: &str,
    claimed_at: DateTime<Utc>,
) -> Option<&'a Message> {
    let wanted = normalise_text(text);
    let earliest = claimed_at - chrono::Duration::minutes(2);
    newest_first.iter().find(|m| {
        m.sender == Sender::Property
            && m.inserted_at >= earliest
            && normalise_text(&m.text) == wanted
    })
}

/// A claim that could not be confirmed before acting: the action does not start.
async fn not_confirmed(claim: HeldClaim, e: ConfirmError) -> Step {
    match e {
        // The other worker owns the action now and will finish it; this one waits for its
        // outcome (the next run finds the action done).
        ConfirmError::Lost => Step::Wait(ConfirmError::Lost.to_string()),
        ConfirmError::Unavailable(e) => e.into(),
        e @ ConfirmError::TooShort { .. } => {
            if let Err(le) = claim.release().await {
                tracing::warn!(error = %le, "could not release claim");
            }
            Step::Retry(format!("not started: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_ignores_whitespace_shape() {
        assert_eq!(
            normalise_text("  Wifi:\n  casa\t\tazul  "),
            normalise_text("Wifi: casa azul")
        );
        assert_ne!(normalise_text("a b"), normalise_text("ab"));
    }
}
