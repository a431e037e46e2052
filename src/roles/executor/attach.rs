//! The files of a reply (`reply(t, #{ attachments: [..] })`), sent after its text, each
//! effectively once.
//!
//! Owns, per file: the upload, once per content hash (the Channex attachment id is kept in
//! the ledger under `upl.<sha256>` and reused by every later reply with the same file); the
//! action key `<reply key>|att<i>`, claimed in the ledger before the send and marked done
//! after it like a reply; on a takeover of an earlier claim (a crash, an ambiguous send),
//! the verification by reading the thread, or the booking's messages when the reply went to
//! the booking (a property message carrying that attachment id,
//! newer than the claim) instead of sending again; and one `attachment` audit record.
//! The upload happens before the claim: it is invisible to the guest, and a crash after it
//! leaves the upload recorded, so the redelivery sends without uploading again.
//! Must not: send a file whose reply text was not sent (skipped, failed): the files follow
//! the text only; nor render, plan or read files (steps arrive with the files' bytes).

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::{not_confirmed, ActionResult, CrashPoint, Executor, Finished, Step};
use crate::channex::{ChannexError, Message, Sender};
use crate::events::Event;
use crate::plan::attachments::AttachmentFile;
use crate::plan::rules::Action;
use crate::plan::PlanStep;
use crate::store::audit::{ActionKind, ActionRef, Outcome, Reason};
use crate::store::claim::HeldClaim;

/// Where a reply's files go: its thread, else (a stay message to a booking whose guest has
/// not written yet) the booking, as the reply text itself did.
#[derive(Debug, Clone, Copy)]
enum Recipient<'a> {
    Thread(&'a str),
    Booking(&'a str),
}

impl<'a> Recipient<'a> {
    fn of(event: &'a Event) -> Option<Self> {
        match (&event.thread, &event.booking) {
            (Some(t), _) => Some(Recipient::Thread(&t.id)),
            (None, Some(b)) => Some(Recipient::Booking(&b.id)),
            (None, None) => None,
        }
    }

    fn thread(self) -> Option<&'a str> {
        match self {
            Recipient::Thread(id) => Some(id),
            Recipient::Booking(_) => None,
        }
    }
}

/// The action key of a reply's `index`-th attachment.
pub fn attachment_key(step_key: &str, index: usize) -> String {
    format!("{step_key}|att{index}")
}

impl Executor {
    /// Carry out one step, then, for a reply sent (or dry-run) with attachments, each of
    /// its files in order. One result per action: the step first, then one per file that
    /// was tried (a file waiting or to be retried stops the ones after it).
    pub async fn execute_step(
        &self,
        event: &Event,
        step: &PlanStep,
        delivery: u64,
    ) -> Vec<ActionResult> {
        let first = self.execute(event, step, delivery).await;
        let text_went = match &first {
            ActionResult::Final(record) => {
                matches!(record.outcome, Outcome::Executed | Outcome::DryRun)
            }
            _ => false,
        };
        let mut results = vec![first];
        if !text_went || !matches!(step.action, Action::Reply { .. }) {
            return results;
        }
        for (index, file) in step.attachments.iter().enumerate() {
            // `plan()` resolved them; a missing one already failed the reply.
            let Ok(file) = file else { continue };
            let result = self.attachment(event, step, index, file, delivery).await;
            let stop = !matches!(result, ActionResult::Final(_));
            results.push(result);
            if stop {
                break;
            }
        }
        results
    }

    async fn attachment(
        &self,
        event: &Event,
        step: &PlanStep,
        index: usize,
        file: &AttachmentFile,
        delivery: u64,
    ) -> ActionResult {
        let started = Instant::now();
        let key = attachment_key(&step.key(&event.id), index);
        let outcome = self.send_attachment(event, step, &key, file).await;
        match outcome {
            Step::Done(f) => {
                let action = ActionRef {
                    key: &key,
                    rule: &step.rule,
                    rule_version: &step.version,
                    action: ActionKind::Attachment,
                    template: step.template(),
                };
                self.final_record(event, action, f, delivery, started)
            }
            Step::Retry(reason) => ActionResult::Retry { reason },
            Step::Wait(reason) => ActionResult::Wait { reason },
        }
    }

    async fn send_attachment(
        &self,
        event: &Event,
        step: &PlanStep,
        key: &str,
        file: &AttachmentFile,
    ) -> Step {
        let name = file.name.as_str();
        let Some(to) = Recipient::of(event) else {
            return Step::Done(Finished::new(Outcome::Skipped, Reason::NoThread).text(name));
        };
        if step.dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, Reason::DryRun).text(name));
        }
        let attachment_id = match self.uploaded(file).await {
            Ok(id) => id,
            Err(step) => return step,
        };
        if self.settings.crash_at == Some(CrashPoint::AfterUpload) {
            return Step::Retry("injected crash after upload".into());
        }
        let (claim, previous) = match self.claim_key(key.to_string(), to.thread(), None).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        if let Some(previous) = previous {
            // A takeover: the previous holder may have sent it; if so, that is our outcome.
            let messages = match self.messages_of(to).await {
                Ok(m) => m,
                Err(e) => return self.on_channex_error(claim, e, Some(name)).await,
            };
            if let Some(sent) = find_attachment(&messages, &attachment_id, previous.claimed_at) {
                let _ = self.ledger.mark_own_message(&sent.id).await;
                let mut f =
                    Finished::new(Outcome::Executed, Reason::VerifiedAfterInterruption).text(name);
                f.channex_message_id = Some(sent.id.clone());
                return self.finish(claim, f).await;
            }
        }
        self.post_attachment(claim, to, &attachment_id, file).await
    }

    /// The newest messages of the recipient, to verify an interrupted send.
    async fn messages_of(&self, to: Recipient<'_>) -> Result<Vec<Message>, ChannexError> {
        match to {
            Recipient::Thread(id) => self.newest_messages(id).await,
            Recipient::Booking(id) => self.booking_messages(id).await,
        }
    }

    /// The Channex attachment id of `file`: the recorded upload of its content, else a new
    /// upload, recorded.
    async fn uploaded(&self, file: &AttachmentFile) -> Result<String, Step> {
        if let Some(id) = self.ledger.uploaded_attachment(&file.sha256).await? {
            return Ok(id);
        }
        let id = match self
            .channex
            .upload_attachment(&file.bytes, &file.name, file.content_type)
            .await
        {
            Ok(id) => id,
            Err(e) if e.is_ambiguous() || e.is_transient() => {
                return Err(Step::Retry(format!("attachment upload: {e}")))
            }
            Err(e) => return Err(Step::Done(Finished::channex_failure(&e).text(&file.name))),
        };
        self.ledger.record_upload(&file.sha256, &id).await?;
        Ok(id)
    }

    /// The send itself, within the time the claim is certainly ours, then the marks.
    async fn post_attachment(
        &self,
        claim: HeldClaim,
        to: Recipient<'_>,
        attachment_id: &str,
        file: &AttachmentFile,
    ) -> Step {
        let name = file.name.as_str();
        let left = match claim.confirm(self.settings.send_timeout).await {
            Ok(left) => left,
            Err(e) => return not_confirmed(claim, e).await,
        };
        let send = async {
            match to {
                Recipient::Thread(id) => {
                    self.channex
                        .send_thread_attachment(id, attachment_id, None)
                        .await
                }
                Recipient::Booking(id) => {
                    self.channex
                        .send_booking_attachment(id, attachment_id, None)
                        .await
                }
            }
        };
        let sent = match tokio::time::timeout(left, send).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                if !e.is_ambiguous() && !e.is_transient() {
                    // Channex refused the id (expired, deleted): the next reply with this file uploads it again.
                    let _ = self.ledger.forget_upload(&file.sha256).await;
                }
                return self.on_channex_error(claim, e, Some(name)).await;
            }
            Err(_) => {
                claim.keep_in_doubt();
                return Step::Retry(format!(
                    "attachment send outlived the claim's safe time ({left:?}); will verify by reading"
                ));
            }
        };
        if self.settings.crash_at == Some(CrashPoint::AfterAttachmentSend) {
            return Step::Retry("injected crash after the attachment was sent".into());
        }
        // Loop safety and the takeover check of later replies depend on this mark.
        if let Err(e) = self.ledger.mark_own_message(&sent.id).await {
            return e.into();
        }
        let mut f = Finished::new(Outcome::Executed, Reason::Sent).text(name);
        f.channex_message_id = Some(sent.id);
        self.finish(claim, f).await
    }
}

/// A property message carrying attachment `attachment_id` (Channex lists it as the URL
/// `attachments/<id>`, relative or absolute) sent since `claimed_at` (minus clock skew).
fn find_attachment<'a>(
    newest_first: &'a [Message],
    attachment_id: &str,
    claimed_at: DateTime<Utc>,
) -> Option<&'a Message> {
    let earliest = claimed_at - chrono::Duration::minutes(2);
    let suffix = format!("attachments/{attachment_id}");
    newest_first.iter().find(|m| {
        m.sender == Sender::Property
            && m.inserted_at >= earliest
            && m.attachments.iter().any(|url| url.ends_with(&suffix))
    })
}
