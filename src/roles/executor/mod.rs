//! The executor: carries out one rendered plan step effectively once and builds that
//! step's audit record.
//!
//! Owns every side effect of the service — Channex writes, alerts, follow-up timers — and
//! the guarantees hosts rely on (DESIGN.md, "Executor guarantees"):
//! - an action key (`event id | rule | action index`) is claimed in the ledger before any
//!   Channex call and marked done after it; a claim found on redelivery (a crash or an
//!   ambiguous 5xx/timeout) is resolved by re-reading the thread and comparing
//!   whitespace-normalised text, never by sending blindly again;
//! - a claim is renewed while held and confirmed by compare-and-set right before a send,
//!   which starts only if the claim is certainly ours for longer than the HTTP timeout
//!   ([`crate::store::claim`]); a reply's text is noted for its thread before the POST, so the message
//!   is known as ours even if the process dies before recording its id;
//! - human takeover: a property-side message newer than the guest message that triggered
//!   the event, not sent by us, skips the reply (`superseded`); a closed thread skips it.
//!   Right before the send the thread is read; its messages are read too only when the
//!   thread moved since the poll (see `unmoved_since_poll`);
//! - after a send, the reply as Channex returned it is recorded for its thread
//!   ([`Ledger::record_last_reply`]), so the poller need not read it back;
//! - a reply's attachments go after its text, each effectively once, uploaded once per
//!   content hash (the `attach` module); a reply naming a missing file sends nothing
//!   (`attachment_missing`);
//! - cooldown per thread + template; `no_reply_needed` only on Booking.com;
//! - a step marked dry-run (decided once, by [`crate::plan::plan`]) is audited without
//!   calling out. Follow-up timers are internal state, armed even in dry-run so a dry run
//!   shows the whole flow (the delayed reply then shows up as `dry_run` too).
//!
//! Time (audit `at`, claim and send times, cooldown and the timer horizon) comes from the
//! injected [`Clock`]. It must not evaluate rules, render templates (steps arrive rendered,
//! a render error arrives as data) or touch the event stream; the worker hands it one step
//! at a time and acks the event once every step has a final outcome.

pub mod alerts;
mod attach;
mod stay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::base::clock::{system_clock, Clock};
use crate::channex::{ChannexClient, ChannexError, Message, Sender};
use crate::events::Event;
use crate::plan::rules::Action;
use crate::plan::PlanStep;
use crate::store::audit::{ActionKind, ActionOutcome, ActionRef, AuditRecord, Outcome, Reason};
use crate::store::claim::{ConfirmError, HeldClaim};
use crate::store::ledger::{self, Claim, Ledger, LedgerEntry, LedgerError, SentMessage};
use crate::store::timers::{FollowUpTimer, FollowUps, TimerScope};
use alerts::{Alert, AlertSinks};

/// Where a test may make the executor "crash" (return without finishing, as a killed
/// process would) to prove redelivery does not duplicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    AfterClaim,
    /// The POST reached Channex, nothing was recorded yet (not even `own.`).
    AfterSendBeforeMarks,
    AfterSend,
    /// An attachment was uploaded (and its upload recorded), it was not sent yet.
    AfterUpload,
    /// An attachment's POST reached Channex, nothing was recorded yet.
    AfterAttachmentSend,
}

/// A test hook awaited right before a reply's pre-send confirmation: lets a test hold a
/// worker there while another one acts, to replay an interleaving deterministically.
pub type BeforeSend =
    Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Clone)]
pub struct ExecutorSettings {
    pub cooldown: Duration,
    /// Property-level and global dry-run, already combined by the caller; the worker hands
    /// it to [`crate::plan::plan`], which adds each rule's own flag.
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

/// One plan step with the event it belongs to: what the executor carries out and audits.
struct PlannedAction<'a> {
    event: &'a Event,
    step: &'a PlanStep,
}

impl PlannedAction<'_> {
    fn key(&self) -> String {
        self.step.key(&self.event.id)
    }

    fn kind(&self) -> ActionKind {
        action_kind(&self.step.action)
    }
}

/// The understanding of a plan as the audit log keeps it.
pub fn audit_understood(
    u: &crate::plan::understand::Understanding,
) -> crate::store::audit::Understood {
    let top = u.top_topic();
    crate::store::audit::Understood {
        summary: u.summary(),
        act: u.act.as_str().to_string(),
        topic: top.map(|t| t.topic.clone()),
        confidence: top.map(|t| t.confidence),
        evidence: top.map(|t| t.evidence.clone()).unwrap_or_default(),
        language: u.language.clone(),
        topics_version: u.version.clone(),
    }
}

/// The audit name of a rule action.
pub fn action_kind(action: &Action) -> ActionKind {
    match action {
        Action::Reply { .. } => ActionKind::Reply,
        Action::NoReplyNeeded => ActionKind::NoReplyNeeded,
        Action::CloseThread => ActionKind::CloseThread,
        Action::Alert { .. } => ActionKind::Alert,
        Action::FollowUp { .. } => ActionKind::FollowUp,
        Action::CancelFollowUp { .. } => ActionKind::CancelFollowUp,
        Action::CancelAllFollowUps => ActionKind::CancelAllFollowUps,
        Action::NoAnswer { .. } => ActionKind::NoAnswer,
    }
}

#[derive(Clone)]
pub struct Executor {
    channex: ChannexClient,
    ledger: Ledger,
    followups: FollowUps,
    alerts: AlertSinks,
    settings: ExecutorSettings,
    clock: Clock,
}

pub use crate::store::ledger::normalise_text;

struct Finished {
    outcome: Outcome,
    reason: Option<Reason>,
    text: Option<String>,
    channex_message_id: Option<String>,
    error: Option<String>,
}

impl Finished {
    fn new(outcome: Outcome, reason: Reason) -> Self {
        Finished {
            outcome,
            reason: Some(reason),
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
        let reason = e.code().map_or(Reason::ChannexError, |c| {
            Reason::Channex(c.as_str().to_string())
        });
        Finished::new(Outcome::Failed, reason).error(e)
    }

    /// The outcome a previous run wrote to the ledger. One that cannot be read is not
    /// taken for `executed`: what happened is unknown, so the action fails visibly.
    fn from_ledger(entry: LedgerEntry) -> Self {
        let stored = entry.outcome.as_deref();
        match stored.and_then(Outcome::parse) {
            Some(outcome) => Finished {
                outcome,
                reason: entry.reason.as_deref().map(Reason::parse),
                text: entry.text,
                channex_message_id: entry.channex_message_id,
                error: None,
            },
            None => Finished::new(Outcome::Failed, Reason::LedgerUnreadable)
                .error(UnreadableOutcome(stored.map(str::to_string))),
        }
    }

    fn into_outcome(self) -> ActionOutcome {
        ActionOutcome {
            outcome: self.outcome,
            reason: self.reason,
            text: self.text,
            channex_message_id: self.channex_message_id,
            error: self.error,
        }
    }
}

/// A ledger entry marked done whose outcome is missing or not one of the known outcomes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the ledger marks this action done but its outcome {0:?} cannot be read; it may or may not have been carried out")]
pub struct UnreadableOutcome(pub Option<String>);

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
            clock: system_clock(),
        }
    }

    /// Read the time from `clock` (audit `at`, claims, sends, cooldown, timer horizon) and
    /// judge claim expiry in the ledger with it too.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.ledger = self.ledger.with_clock(clock.clone());
        self.clock = clock;
        self
    }

    /// The current time of the executor's clock (the time audit records are stamped with).
    pub fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }

    /// The global / per-property dry-run setting for `property_id` (the worker hands it to
    /// the planner, which adds the rule's own flag).
    pub fn dry_run_configured(&self, property_id: &str) -> bool {
        (self.settings.dry_run)(property_id)
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

    /// Carry out one step. Never panics on external data; every path ends in a final
    /// audit record, a retry request, or a wait (ledger or timer store unreachable, or the
    /// action claimed by another worker).
    pub async fn execute(&self, event: &Event, step: &PlanStep, delivery: u64) -> ActionResult {
        let planned = PlannedAction { event, step };
        let started = Instant::now();
        let outcome = self.carry_out(&planned).await;
        let kind = planned.kind().label();
        match outcome {
            Step::Done(f) => {
                let key = planned.key();
                let action = ActionRef {
                    key: &key,
                    rule: &step.rule,
                    rule_version: &step.version,
                    action: planned.kind(),
                    template: step.template(),
                };
                let mut result = self.final_record(event, action, f, delivery, started);
                if let ActionResult::Final(record) = &mut result {
                    record.understood = step.understood.as_deref().map(audit_understood);
                }
                result
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

    /// The audit record of a finished action (and its metric).
    fn final_record(
        &self,
        event: &Event,
        action: ActionRef<'_>,
        f: Finished,
        delivery: u64,
        started: Instant,
    ) -> ActionResult {
        metrics::counter!("concierge_actions_total", "kind" => action.action.label(), "outcome" => f.outcome.as_str())
            .increment(1);
        ActionResult::Final(Box::new(AuditRecord::action_outcome(
            event,
            action,
            f.into_outcome(),
            u32::try_from(delivery).unwrap_or(u32::MAX),
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            (self.clock)(),
        )))
    }

    async fn carry_out(&self, planned: &PlannedAction<'_>) -> Step {
        let step = planned.step;
        // A text that did not render never becomes a message: the action fails for good.
        if let Some(Err(e)) = &step.rendered {
            return Step::Done(Finished::new(Outcome::Failed, Reason::TemplateError).error(e));
        }
        if let Some(skip) = step.skip {
            let reason = match skip {
                crate::plan::StepSkip::BookingCancelled => Reason::BookingCancelled,
                crate::plan::StepSkip::BookingMoved => Reason::BookingMoved,
            };
            let mut f = Finished::new(Outcome::Skipped, reason);
            f.text = step.text().map(str::to_string);
            return Step::Done(f);
        }
        let dry_run = step.dry_run;
        // A reply or alert step without rendered text (built by hand, not by `plan()`) is
        // never sent as an empty message.
        let no_text = || {
            Step::Done(
                Finished::new(Outcome::Failed, Reason::TemplateError)
                    .error("the step carries no rendered text"),
            )
        };
        // A reply whose attachment is missing sends nothing: not the text without the file.
        if let Some(Err(e)) = step.attachments.iter().find(|a| a.is_err()) {
            return Step::Done(Finished::new(Outcome::Failed, Reason::AttachmentMissing).error(e));
        }
        match &step.action {
            Action::Reply { template, .. } => match step.text() {
                Some(text) => self.reply(planned, template, text, dry_run).await,
                None => no_text(),
            },
            Action::NoReplyNeeded => self.no_reply_needed(planned, dry_run).await,
            Action::CloseThread => self.close_thread(planned, dry_run).await,
            Action::Alert { .. } => match step.text() {
                Some(text) => self.alert(planned, text, dry_run).await,
                None => no_text(),
            },
            Action::FollowUp { name, due_at, data } => {
                self.follow_up(planned, name, *due_at, data).await
            }
            Action::CancelFollowUp { name } => self.cancel_follow_up(planned, name).await,
            Action::CancelAllFollowUps => self.cancel_all_follow_ups(planned).await,
            Action::NoAnswer { reason } => {
                let mut f = Finished::new(Outcome::Skipped, Reason::NotAnswered);
                f.text = Some(reason.clone());
                Step::Done(f)
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
        self.claim_key(planned.key(), Self::thread_id(planned), text)
            .await
    }

    /// Claim the action `key` (of `thread`); `Err` carries the step to return at once.
    async fn claim_key(
        &self,
        key: String,
        thread: Option<&str>,
        text: Option<&str>,
    ) -> Result<(HeldClaim, Option<LedgerEntry>), Step> {
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
            Ok(Claim::Done(entry)) => Err(Step::Done(Finished::from_ledger(entry))),
            Err(e) => Err(e.into()),
        }
    }

    /// Write the final outcome to the ledger; a failure to do so is retried (the claim
    /// stays, and the next run, in place or redelivered, resolves it by reading the thread).
    async fn finish(&self, claim: HeldClaim, f: Finished) -> Step {
        let entry = LedgerEntry {
            state: ledger::LedgerState::Done,
            worker: String::new(),
            claimed_at: (self.clock)(),
            outcome: Some(f.outcome.as_str().to_string()),
            reason: f.reason.as_ref().map(Reason::to_string),
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
        text: &str,
        dry_run: bool,
    ) -> Step {
        let Some(thread_id) = Self::thread_id(planned) else {
            if let Some(booking) = &planned.event.booking {
                return self
                    .reply_to_booking(planned, &booking.id, text, dry_run)
                    .await;
            }
            return Step::Done(Finished::new(Outcome::Skipped, Reason::NoThread).text(text));
        };
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, Reason::DryRun).text(text));
        }
        let (claim, previous) = match self.claim(planned, Some(text)).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        // Only a takeover of an earlier claim needs the messages before anything else.
        let mut messages = None;
        if previous.is_some() {
            match self.newest_messages(thread_id).await {
                Ok(m) => messages = Some(m),
                Err(e) => return self.on_channex_error(claim, e, Some(text)).await,
            }
        }
        // A takeover: the previous holder may have sent; if so, that is our outcome.
        let verified = previous
            .as_ref()
            .zip(messages.as_deref())
            .and_then(|(p, m)| find_sent(m, text, p.claimed_at).cloned());
        if let Some(sent) = verified {
            return self
                .verified_sent(claim, thread_id, template, text, sent)
                .await;
        }
        let thread = match self.channex.get_thread(thread_id).await {
            Ok(t) => t,
            Err(e) => return self.on_channex_error(claim, e, Some(text)).await,
        };
        if thread.is_closed {
            let f = Finished::new(Outcome::Skipped, Reason::ThreadClosed).text(text);
            return self.finish(claim, f).await;
        }
        // The takeover check reads the messages only when the thread moved since the poll.
        let messages = match messages {
            Some(m) => m,
            None if unmoved_since_poll(planned.event, &thread) => Vec::new(),
            None => match self.newest_messages(thread_id).await {
                Ok(m) => m,
                Err(e) => return self.on_channex_error(claim, e, Some(text)).await,
            },
        };
        match self
            .reply_blocked(planned, thread_id, template, &messages)
            .await
        {
            Ok(Some(blocked)) => return self.finish(claim, blocked.text(text)).await,
            Ok(None) => {}
            Err(e) => return e.into(),
        }
        if self.settings.crash_at == Some(CrashPoint::AfterClaim) {
            return Step::Retry("injected crash after claim".into());
        }
        self.send_reply(claim, thread_id, template, text).await
    }

    /// A thread's newest messages, newest first (the takeover check and the verification
    /// of an interrupted send read them).
    async fn newest_messages(&self, thread_id: &str) -> Result<Vec<Message>, ChannexError> {
        self.channex
            .list_thread_messages_page(thread_id, 1, 100)
            .await
            .map(|page| page.items)
    }

    /// An interrupted send that did reach Channex: record it as ours and finish.
    async fn verified_sent(
        &self,
        claim: HeldClaim,
        thread_id: &str,
        template: &str,
        text: &str,
        sent: Message,
    ) -> Step {
        let _ = self.ledger.mark_own_message(&sent.id).await;
        let _ = self
            .ledger
            .mark_sent(thread_id, template, sent.inserted_at)
            .await;
        let mut f = Finished::new(Outcome::Executed, Reason::VerifiedAfterInterruption).text(text);
        f.channex_message_id = Some(sent.id);
        self.finish(claim, f).await
    }

    /// Why a reply must not go out although its thread is open: staff took the
    /// conversation over (`superseded`) or the template went to this thread within the
    /// cooldown (`cooldown`).
    async fn reply_blocked(
        &self,
        planned: &PlannedAction<'_>,
        thread_id: &str,
        template: &str,
        newest_first: &[Message],
    ) -> Result<Option<Finished>, LedgerError> {
        if let Some(by) = self.superseded_by(planned, newest_first).await? {
            return Ok(Some(
                Finished::new(Outcome::Skipped, Reason::Superseded).error(format!(
                    "staff message {by} is newer than the guest message"
                )),
            ));
        }
        match self.ledger.last_sent(thread_id, template).await? {
            Some(at) if in_window(at, (self.clock)(), self.settings.cooldown) => Ok(Some(
                Finished::new(Outcome::Skipped, Reason::Cooldown).error(format!(
                    "template {template} was sent to this thread at {at}"
                )),
            )),
            _ => Ok(None),
        }
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
        // Saves the poller reading the message back; it reads when this is missing.
        let last = SentMessage {
            id: sent.id.clone(),
            text: sent.text.clone(),
            inserted_at: sent.inserted_at,
            attachments: sent.attachments.clone(),
        };
        let _ = self.ledger.record_last_reply(thread_id, &last).await;
        let _ = self
            .ledger
            .mark_sent(thread_id, template, (self.clock)())
            .await;
        if self.settings.crash_at == Some(CrashPoint::AfterSend) {
            return Step::Retry("injected crash after send".into());
        }
        let mut f = Finished::new(Outcome::Executed, Reason::Sent).text(text);
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
            .filter(|m| m.sender == Sender::Guest)
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
            return Step::Done(Finished::new(Outcome::Skipped, Reason::NoThread));
        };
        if thread.provider != crate::events::Provider::BookingCom {
            return Step::Done(Finished::new(Outcome::Skipped, Reason::NotSupported).error(
                format!(
                    "no_reply_needed applies to Booking.com only, thread is {}",
                    crate::events::provider_str(&thread.provider)
                ),
            ));
        }
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, Reason::DryRun));
        }
        let (claim, _) = match self.claim(planned, None).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        match self.channex.mark_no_reply_needed(&thread.id).await {
            Ok(()) => {
                self.finish(claim, Finished::new(Outcome::Executed, Reason::Marked))
                    .await
            }
            Err(e) => self.on_channex_error(claim, e, None).await,
        }
    }

    async fn close_thread(&self, planned: &PlannedAction<'_>, dry_run: bool) -> Step {
        let Some(thread_id) = Self::thread_id(planned) else {
            return Step::Done(Finished::new(Outcome::Skipped, Reason::NoThread));
        };
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, Reason::DryRun));
        }
        let (claim, _) = match self.claim(planned, None).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        match self.channex.get_thread(thread_id).await {
            Ok(t) if t.is_closed => {
                return self
                    .finish(
                        claim,
                        Finished::new(Outcome::Skipped, Reason::AlreadyClosed),
                    )
                    .await
            }
            Ok(_) => {}
            Err(e) => return self.on_channex_error(claim, e, None).await,
        }
        match self.channex.close_thread(thread_id).await {
            Ok(_) => {
                self.finish(claim, Finished::new(Outcome::Executed, Reason::Closed))
                    .await
            }
            // Closing twice is harmless: an ambiguous close is simply retried.
            Err(e) => self.on_channex_error(claim, e, None).await,
        }
    }

    async fn alert(&self, planned: &PlannedAction<'_>, text: &str, dry_run: bool) -> Step {
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, Reason::DryRun).text(text));
        }
        let (claim, _) = match self.claim(planned, Some(text)).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        let alert = Alert {
            property_id: planned.event.property.id.clone(),
            thread_id: Self::thread_id(planned).map(str::to_string),
            text: text.to_string(),
            event_id: planned.event.id.clone(),
            rule: planned.step.rule.clone(),
            at: (self.clock)(),
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
                Reason::Delivered(report.delivered.join(",")),
            )
            .text(text),
            Err(e) => Finished::new(Outcome::Failed, Reason::AlertFailed)
                .text(text)
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
        let Some(scope) = stay::timer_scope(planned.event) else {
            return Step::Done(Finished::new(Outcome::Skipped, Reason::NoThread));
        };
        let horizon = chrono::Duration::from_std(self.settings.timer_horizon)
            .unwrap_or(chrono::Duration::MAX);
        if due_at.signed_duration_since((self.clock)()) > horizon {
            return Step::Done(
                Finished::new(Outcome::Failed, Reason::BeyondRetention).error(format!(
                "follow-up {name} is due {}, later than timers are kept (nats.followups_max_age)",
                due_at.to_rfc3339()
            )),
            );
        }
        let timer = FollowUpTimer {
            thread_id: Self::thread_id(planned).unwrap_or_default().to_string(),
            booking_id: match scope {
                TimerScope::Booking(b) => Some(b.to_string()),
                TimerScope::Thread(_) => None,
            },
            property_id: planned.event.property.id.clone(),
            name: name.to_string(),
            due_at,
            data: data.clone(),
            armed_at: (self.clock)(),
            armed_by_event: planned.event.id.clone(),
            stay: match scope {
                TimerScope::Booking(_) => planned
                    .event
                    .booking
                    .as_ref()
                    .map(|b| Box::new(b.stay_dates())),
                TimerScope::Thread(_) => None,
            },
        };
        match self.followups.arm(&timer).await {
            Ok(()) => Step::Done(Finished::new(
                Outcome::Executed,
                Reason::Armed {
                    name: name.to_string(),
                    due_at: due_at.to_rfc3339(),
                },
            )),
            Err(e) => Step::Wait(e.to_string()),
        }
    }

    async fn cancel_follow_up(&self, planned: &PlannedAction<'_>, name: &str) -> Step {
        // Both scopes: a timer armed before the event carried its booking block is keyed
        // by the thread, a later one by the booking.
        let scopes = stay::cancel_scopes(planned.event);
        if scopes.is_empty() {
            return Step::Done(Finished::new(Outcome::Skipped, Reason::NoThread));
        }
        let mut found = false;
        for scope in scopes {
            match self.followups.cancel_in(scope, name).await {
                Ok(armed) => found |= armed,
                Err(e) => return Step::Wait(e.to_string()),
            }
        }
        let f = match found {
            true => Finished::new(Outcome::Executed, Reason::Cancelled(name.to_string())),
            false => Finished::new(Outcome::Skipped, Reason::NotArmed),
        };
        Step::Done(f)
    }
}

/// Whether `at` lies within `window` before `now` (a time in the future counts as inside).
fn in_window(at: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> bool {
    now.signed_duration_since(at)
        .to_std()
        .map(|age| age < window)
        .unwrap_or(true)
}

/// Whether `thread`, read right before a send, is as the poll saw it when it emitted the
/// guest message that triggered `event`, and that message is still the thread's last: then
/// no message at all, so no staff message, is newer than the trigger, and the takeover
/// check needs no read of the messages. Any doubt (no guest message in the event, no
/// snapshot, a missing time) answers `false`, and the messages are read.
fn unmoved_since_poll(event: &Event, thread: &crate::channex::Thread) -> bool {
    let (Some(snapshot), Some(trigger)) = (event.thread.as_ref(), event.message.as_ref()) else {
        return false;
    };
    let Some(last) = thread.last_message.as_ref() else {
        return false;
    };
    trigger.sender == Sender::Guest
        && thread.message_count == snapshot.message_count
        && thread.last_message_received_at.is_some()
        && thread.last_message_received_at == snapshot.last_message_received_at
        && last.sender == Sender::Guest
        && last.inserted_at == Some(trigger.inserted_at)
        && last.text == trigger.text
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

    #[test]
    fn cooldown_window_is_judged_against_the_given_now() {
        let sent: DateTime<Utc> = "2024-07-01T12:00:00Z".parse().expect("time");
        let window = Duration::from_secs(600);
        let at = |minutes| sent + chrono::Duration::minutes(minutes);
        assert!(in_window(sent, at(0), window));
        assert!(in_window(sent, at(9), window));
        assert!(!in_window(sent, at(10), window));
        assert!(!in_window(sent, at(60), window));
        // A clock behind the stored time (skew) keeps the cooldown on.
        assert!(in_window(sent, at(-5), window));
    }

    #[test]
    fn an_unreadable_ledger_outcome_fails_the_action_instead_of_counting_as_executed() {
        let entry = |outcome: Option<&str>| LedgerEntry {
            state: ledger::LedgerState::Done,
            worker: String::new(),
            claimed_at: Utc::now(),
            outcome: outcome.map(str::to_string),
            reason: Some("sent".into()),
            text: Some("hi".into()),
            channex_message_id: Some("m1".into()),
            attempts: 1,
            renewed_at: None,
            thread_id: None,
        };
        let done = Finished::from_ledger(entry(Some("executed")));
        assert_eq!(done.outcome, Outcome::Executed);
        assert_eq!(done.reason, Some(Reason::Sent));
        for unreadable in [Some("exectued"), None] {
            let f = Finished::from_ledger(entry(unreadable));
            assert_eq!(f.outcome, Outcome::Failed);
            assert_eq!(f.reason, Some(Reason::LedgerUnreadable));
            assert!(f.error.is_some());
        }
    }

    fn guest_event_and_thread() -> (Event, crate::channex::Thread) {
        let asked: DateTime<Utc> = "2024-07-01T12:00:00Z".parse().expect("time");
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "e1",
            "type": "thread.new_message",
            "occurred_at": "2024-07-01T12:00:00Z",
            "property": {"id": "p1", "name": "Casa", "timezone": "UTC"},
            "thread": {
                "id": "t1", "title": "Maria", "provider": "booking_com", "is_closed": false,
                "message_count": 3, "last_message_received_at": "2024-07-01T12:00:00Z",
                "last_guest_message_at": "2024-07-01T12:00:00Z", "awaiting_reply": true
            },
            "message": {"id": "m3", "text": "wifi?", "sender": "guest",
                        "inserted_at": "2024-07-01T12:00:00Z"}
        }))
        .expect("event");
        let thread = crate::channex::Thread {
            id: "t1".into(),
            title: "Maria".into(),
            is_closed: false,
            provider: crate::channex::Provider::BookingCom,
            message_count: 3,
            last_message: Some(crate::channex::LastMessage {
                text: "wifi?".into(),
                sender: Sender::Guest,
                inserted_at: Some(asked),
                attachments: vec![],
            }),
            last_message_received_at: Some(asked),
            inserted_at: None,
            updated_at: None,
            booking_id: None,
            channel_id: None,
            property_id: Some("p1".into()),
        };
        (event, thread)
    }

    #[test]
    fn a_thread_as_polled_whose_last_message_is_the_trigger_has_not_moved() {
        let (event, thread) = guest_event_and_thread();
        assert!(unmoved_since_poll(&event, &thread));
    }

    #[test]
    fn any_sign_of_a_newer_message_means_the_thread_moved() {
        let (event, thread) = guest_event_and_thread();
        let later: DateTime<Utc> = "2024-07-01T12:00:09Z".parse().expect("time");
        let mut grown = thread.clone();
        grown.message_count = 4;
        assert!(!unmoved_since_poll(&event, &grown));
        let mut received = thread.clone();
        received.last_message_received_at = Some(later);
        assert!(!unmoved_since_poll(&event, &received));
        // Same count and time as the snapshot, but the last message is staff's (it came
        // in the same poll as the guest's): not unmoved.
        let mut staff_last = thread.clone();
        if let Some(l) = staff_last.last_message.as_mut() {
            l.sender = Sender::Property;
        }
        assert!(!unmoved_since_poll(&event, &staff_last));
        let mut no_last = thread.clone();
        no_last.last_message = None;
        assert!(!unmoved_since_poll(&event, &no_last));
        // An event without a guest message (a follow-up timer) always reads.
        let mut timer = event.clone();
        timer.message = None;
        assert!(!unmoved_since_poll(&timer, &thread));
    }
}
