//! The executor's stay-related actions: replies to a booking without a thread (through
//! `POST /bookings/:id/messages`), the scope of follow-up timers (a booking's when the
//! event carries a `booking` block, else the thread's) and `cancel_all_follow_ups()`.
//!
//! Same guarantees as thread replies: the action key is claimed before the send and marked
//! done after; a claim taken over from a crashed holder is resolved by reading the
//! booking's messages, never by sending again. Must not: decide whether a stay message is
//! stale (that is [`crate::plan::stale_stay`], decided once in `plan()`).

use super::{find_sent, not_confirmed, Executor, Finished, PlannedAction, Step};
use crate::channex::{ChannexError, Message};
use crate::events::Event;
use crate::store::audit::{Outcome, Reason};
use crate::store::timers::TimerScope;

/// The timer scope of an event: its booking's when it carries a `booking` block (so a
/// timer armed from a thread message and re-armed from a `booking.changed` is one timer),
/// else its thread's; `None` when it has neither.
pub(super) fn timer_scope(event: &Event) -> Option<TimerScope<'_>> {
    match (&event.booking, &event.thread) {
        (Some(b), _) => Some(TimerScope::Booking(&b.id)),
        (None, Some(t)) => Some(TimerScope::Thread(&t.id)),
        (None, None) => None,
    }
}

/// Every timer scope of an event (its thread's and its booking's): where a cancel looks.
pub(super) fn cancel_scopes(event: &Event) -> Vec<TimerScope<'_>> {
    let thread = event.thread.as_ref().map(|t| TimerScope::Thread(&t.id));
    let booking = event.booking.as_ref().map(|b| TimerScope::Booking(&b.id));
    thread.into_iter().chain(booking).collect()
}

impl Executor {
    /// A reply for an event without a thread, sent to its booking.
    pub(super) async fn reply_to_booking(
        &self,
        planned: &PlannedAction<'_>,
        booking_id: &str,
        text: &str,
        dry_run: bool,
    ) -> Step {
        if dry_run {
            return Step::Done(Finished::new(Outcome::DryRun, Reason::DryRun).text(text));
        }
        let (claim, previous) = match self.claim(planned, Some(text)).await {
            Ok(c) => c,
            Err(step) => return step,
        };
        if let Some(previous) = previous {
            let messages = match self.booking_messages(booking_id).await {
                Ok(messages) => messages,
                Err(e) => return self.on_channex_error(claim, e, Some(text)).await,
            };
            if let Some(sent) = find_sent(&messages, text, previous.claimed_at) {
                let _ = self.ledger.mark_own_message(&sent.id).await;
                let mut f =
                    Finished::new(Outcome::Executed, Reason::VerifiedAfterInterruption).text(text);
                f.channex_message_id = Some(sent.id.clone());
                return self.finish(claim, f).await;
            }
        }
        let left = match claim.confirm(self.settings.send_timeout).await {
            Ok(left) => left,
            Err(e) => return not_confirmed(claim, e).await,
        };
        let send = self.channex.send_booking_message(booking_id, text);
        let sent = match tokio::time::timeout(left, send).await {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => return self.on_channex_error(claim, e, Some(text)).await,
            Err(_) => {
                claim.keep_in_doubt();
                return Step::Retry(format!(
                    "send outlived the claim's safe time ({left:?}); will verify by reading"
                ));
            }
        };
        // The poller must see this message (in the booking's thread) as ours.
        if let Err(e) = self.ledger.mark_own_message(&sent.id).await {
            return e.into();
        }
        let mut f = Finished::new(Outcome::Executed, Reason::Sent).text(text);
        f.channex_message_id = Some(sent.id);
        self.finish(claim, f).await
    }

    /// A booking's messages, to verify an interrupted send; none yet (404: no thread
    /// opened) is an empty list.
    pub(super) async fn booking_messages(
        &self,
        booking_id: &str,
    ) -> Result<Vec<Message>, ChannexError> {
        match self.channex.list_booking_messages(booking_id).await {
            Ok(listing) => Ok(listing.items),
            Err(e) if e.status() == Some(404) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// `cancel_all_follow_ups()`: every timer of the event's thread and of its booking.
    pub(super) async fn cancel_all_follow_ups(&self, planned: &PlannedAction<'_>) -> Step {
        let scopes = cancel_scopes(planned.event);
        if scopes.is_empty() {
            return Step::Done(Finished::new(Outcome::Skipped, Reason::NoThread));
        }
        let mut cancelled = 0;
        for scope in scopes {
            match self.followups.cancel_all(scope).await {
                Ok(n) => cancelled += n,
                Err(e) => return Step::Wait(e.to_string()),
            }
        }
        Step::Done(Finished::new(
            Outcome::Executed,
            Reason::CancelledAll(cancelled),
        ))
    }
}
