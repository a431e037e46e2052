//! A ledger claim while its holder works on the action: renewed, confirmed before a send.
//!
//! Owns the holder's side of the claim protocol (DESIGN.md, "Executor guarantees"):
//! - a background task renews the claim by compare-and-set every `claim_timeout / 3`, so a
//!   slow Channex call or a NATS hiccup does not let it expire under a live holder;
//! - before a send the holder renews once more in the foreground and learns how long the
//!   claim is certainly its own (`claim_timeout` from the *start* of that write, on its
//!   monotonic clock, minus [`send_margin`] for clock skew between workers); the send
//!   starts only if that covers the Channex HTTP timeout, and is cut off when it runs out;
//! - a renewal that finds the claim taken over marks it lost: the holder must not send.
//!
//! It must not decide outcomes or call Channex; the executor does.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::ledger::{Ledger, LedgerEntry, LedgerError};
use crate::config::send_margin;

/// Why a send may not start.
#[derive(Debug, thiserror::Error)]
pub enum ConfirmError {
    #[error("the claim was taken over by another worker")]
    Lost,
    #[error("the claim could not be renewed: {0}")]
    Unavailable(LedgerError),
    #[error("the claim leaves {left:?}, less than the {needed:?} a send may take")]
    TooShort { left: Duration, needed: Duration },
}

struct State {
    revision: u64,
    lost: bool,
}

/// One claim held by this task. Dropping it stops the renewals (the claim then expires
/// unless finished or released).
pub struct HeldClaim {
    ledger: Ledger,
    action_key: String,
    thread_id: Option<String>,
    state: Arc<Mutex<State>>,
    renewer: JoinHandle<()>,
}

impl HeldClaim {
    /// Start holding a claim just won at `revision`.
    pub fn hold(
        ledger: Ledger,
        action_key: String,
        thread_id: Option<String>,
        revision: u64,
    ) -> Self {
        ledger.hold(&action_key);
        let state = Arc::new(Mutex::new(State {
            revision,
            lost: false,
        }));
        let renewer = tokio::spawn(renew_in_background(
            ledger.clone(),
            action_key.clone(),
            state.clone(),
        ));
        HeldClaim {
            ledger,
            action_key,
            thread_id,
            state,
            renewer,
        }
    }

    /// Renew now and return how long the claim is certainly ours, which must exceed
    /// `needed` (the time a send may take).
    pub async fn confirm(&self, needed: Duration) -> Result<Duration, ConfirmError> {
        let mut state = self.state.lock().await;
        if state.lost {
            return Err(ConfirmError::Lost);
        }
        let started = Instant::now();
        match self.ledger.renew(&self.action_key, state.revision).await {
            Ok(revision) => state.revision = revision,
            Err(e) if e.is_taken_over() => {
                state.lost = true;
                return Err(ConfirmError::Lost);
            }
            Err(e) => return Err(ConfirmError::Unavailable(e)),
        }
        let timeout = self.ledger.claim_timeout();
        let left = (timeout.saturating_sub(send_margin(timeout))).saturating_sub(started.elapsed());
        if left <= needed {
            return Err(ConfirmError::TooShort { left, needed });
        }
        Ok(left)
    }

    /// Write the final outcome against the current revision.
    pub async fn finish(self, mut entry: LedgerEntry) -> Result<(), LedgerError> {
        entry.thread_id = self.thread_id.clone();
        // Lock before stopping the renewer: a renewal in progress then completes and
        // records its new revision, instead of being cut off after NATS applied it.
        let state = self.state.lock().await;
        self.renewer.abort();
        self.ledger
            .finish(&self.action_key, state.revision, entry)
            .await
    }

    /// Give the claim back: the action certainly did not happen.
    pub async fn release(self) -> Result<(), LedgerError> {
        let state = self.state.lock().await;
        self.renewer.abort();
        self.ledger.release(&self.action_key, state.revision).await
    }
}

impl HeldClaim {
    /// The action may have happened (an ambiguous answer, or a send abandoned while its
    /// request may still be in flight): stop renewing and leave the claim to expire. Not
    /// even this process takes it back before then; whoever does verifies by reading.
    pub fn keep_in_doubt(self) {
        self.ledger.mark_in_doubt(&self.action_key);
    }
}

impl Drop for HeldClaim {
    fn drop(&mut self) {
        self.renewer.abort();
        self.ledger.unhold(&self.action_key);
    }
}

/// Renew every `claim_timeout / 3` until aborted or the claim is found taken over. A
/// renewal that fails for want of NATS is tried again at the next tick: the claim then
/// expires unless NATS comes back in time, and the pre-send confirmation fails with it.
async fn renew_in_background(ledger: Ledger, action_key: String, state: Arc<Mutex<State>>) {
    let every = (ledger.claim_timeout() / 3).max(Duration::from_millis(10));
    let mut ticker = tokio::time::interval_at(Instant::now() + every, every);
    loop {
        ticker.tick().await;
        let mut state = state.lock().await;
        match ledger.renew(&action_key, state.revision).await {
            Ok(revision) => state.revision = revision,
            Err(e) if e.is_taken_over() => {
                tracing::warn!(key = %action_key, "claim taken over while held; this worker will not send");
                state.lost = true;
                return;
            }
            Err(e) => {
                tracing::warn!(key = %action_key, error = %e, "claim renewal failed; retrying")
            }
        }
    }
}
