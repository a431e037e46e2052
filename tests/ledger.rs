//! The idempotency ledger's claim protocol against a private NATS, with fixed clocks:
//! expiry counts from the last renewal, a renewal proves ownership by compare-and-set, and
//! a takeover happens only after expiry.
mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use concierge::base::clock::{Clock, ManualClock};
use concierge::store::ledger::{Claim, Ledger};

const TIMEOUT: Duration = Duration::from_secs(60);
const KEY: &str = "ev-1|10_faq|0";

fn at(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_800_000_000 + seconds, 0).unwrap()
}

fn fixed(seconds: i64) -> Clock {
    let t = at(seconds);
    Arc::new(move || t)
}

fn ledger(infra: &concierge::store::nats::Infra, worker: &str, seconds: i64) -> Ledger {
    Ledger::new(infra.ledger.clone(), worker, TIMEOUT).with_clock(fixed(seconds))
}

fn won(claim: Claim) -> u64 {
    match claim {
        Claim::Won { revision, .. } => revision,
        Claim::Busy => panic!("expected Won, got Busy"),
        Claim::Done(e) => panic!("expected Won, got Done({e:?})"),
    }
}

#[tokio::test]
async fn a_claim_expires_exactly_claim_timeout_after_it_was_last_alive() {
    let (_nats, infra, _) = common::nats_infra().await;
    let revision = won(ledger(&infra, "a", 0).claim(KEY, Some("hi")).await.unwrap());
    // One second before expiry another worker finds it busy.
    let early = ledger(&infra, "b", 59).claim(KEY, None).await.unwrap();
    assert!(matches!(early, Claim::Busy));
    // A renewal at t=50 pushes expiry to t=110.
    let renewed = ledger(&infra, "a", 50).renew(KEY, revision).await.unwrap();
    assert!(renewed > revision);
    assert!(matches!(
        ledger(&infra, "b", 100).claim(KEY, None).await.unwrap(),
        Claim::Busy
    ));
    // At t=110 it is expired: taken over, and the previous claim (with its text) is handed
    // over so the taker verifies by reading before acting.
    match ledger(&infra, "b", 110).claim(KEY, None).await.unwrap() {
        Claim::Won {
            previous: Some(previous),
            ..
        } => {
            assert_eq!(previous.worker, "a");
            assert_eq!(previous.text.as_deref(), Some("hi"));
            assert_eq!(previous.renewed_at, Some(at(50)));
        }
        other => panic!(
            "expected a takeover, got Won={}",
            matches!(other, Claim::Won { .. })
        ),
    }
    // The old holder's renewal (and so its pre-send confirmation) now fails.
    let err = ledger(&infra, "a", 111)
        .renew(KEY, renewed)
        .await
        .unwrap_err();
    assert!(err.is_taken_over(), "{err}");
    assert!(!err.is_unavailable());
}

#[tokio::test]
async fn a_stale_revision_cannot_renew_or_finish() {
    let (_nats, infra, _) = common::nats_infra().await;
    let a = ledger(&infra, "a", 0);
    let first = won(a.claim(KEY, None).await.unwrap());
    let second = a.renew(KEY, first).await.unwrap();
    assert!(a.renew(KEY, first).await.unwrap_err().is_taken_over());
    let entry = a.get(KEY).await.unwrap().unwrap().entry;
    let err = a.finish(KEY, first, entry.clone()).await.unwrap_err();
    assert!(err.is_taken_over(), "{err}");
    a.finish(KEY, second, entry).await.unwrap();
    assert!(matches!(a.claim(KEY, None).await.unwrap(), Claim::Done(_)));
}

#[tokio::test]
async fn a_text_about_to_be_sent_is_recognised_as_ours_around_that_time_only() {
    let (_nats, infra, _) = common::nats_infra().await;
    let l = ledger(&infra, "a", 0);
    l.mark_sending("thread-1", "Wifi:  CasaAzul\n")
        .await
        .unwrap();
    assert!(l
        .is_pending_own("thread-1", "Wifi: CasaAzul", at(5))
        .await
        .unwrap());
    assert!(l
        .is_ours("thread-1", "msg-unmarked", "Wifi: CasaAzul", at(5))
        .await
        .unwrap());
    // Another thread, another text, or a staff message days later is not ours.
    assert!(!l
        .is_pending_own("thread-2", "Wifi: CasaAzul", at(5))
        .await
        .unwrap());
    assert!(!l
        .is_pending_own("thread-1", "Wifi: other", at(5))
        .await
        .unwrap());
    assert!(!l
        .is_pending_own("thread-1", "Wifi: CasaAzul", at(86_400))
        .await
        .unwrap());
    l.clear_sending("thread-1", "Wifi: CasaAzul").await.unwrap();
    assert!(!l
        .is_pending_own("thread-1", "Wifi: CasaAzul", at(5))
        .await
        .unwrap());
}

/// After an attempt whose request may still be in flight (an ambiguous answer, or a send
/// cut off at the claim's safe time), this very process waits for the claim to expire
/// like any other worker, so its verifying read comes after the abandoned request had its
/// time; a merely dropped claim (the action certainly not started) is taken back at once.
#[tokio::test]
async fn an_attempt_in_doubt_is_not_taken_back_by_the_same_process_before_expiry() {
    use concierge::store::claim::HeldClaim;
    use std::sync::atomic::{AtomicI64, Ordering};
    let (_nats, infra, _) = common::nats_infra().await;
    let now = Arc::new(AtomicI64::new(0));
    let clock_now = now.clone();
    let clock: Clock = Arc::new(move || at(clock_now.load(Ordering::SeqCst)));
    let ledger = Ledger::new(infra.ledger.clone(), "w1", TIMEOUT).with_clock(clock);

    let revision = won(ledger.claim(KEY, Some("hi")).await.unwrap());
    HeldClaim::hold(ledger.clone(), KEY.into(), None, revision).keep_in_doubt();
    now.store(59, Ordering::SeqCst);
    assert!(
        matches!(ledger.claim(KEY, None).await.unwrap(), Claim::Busy),
        "taken back while the abandoned send may still land"
    );
    now.store(60, Ordering::SeqCst);
    let revision = won(ledger.claim(KEY, None).await.unwrap());

    // Dropped without doubt: this process takes it back at once.
    drop(HeldClaim::hold(ledger.clone(), KEY.into(), None, revision));
    won(ledger.claim(KEY, None).await.unwrap());
}

/// Claim expiry on a manual clock shared by two workers: a claim younger than the claim
/// timeout cannot be taken over, one that reached it can.
#[tokio::test]
async fn a_claim_is_taken_over_only_once_the_manual_clock_passes_the_claim_timeout() {
    let (_nats, infra, _) = common::nats_infra().await;
    let manual = ManualClock::starting_at(at(0));
    let a = Ledger::new(infra.ledger.clone(), "a", TIMEOUT).with_clock(manual.clock());
    let b = Ledger::new(infra.ledger.clone(), "b", TIMEOUT).with_clock(manual.clock());
    won(a.claim(KEY, Some("hi")).await.unwrap());
    manual.advance(chrono::TimeDelta::from_std(TIMEOUT).unwrap() - chrono::TimeDelta::seconds(1));
    assert!(
        matches!(b.claim(KEY, None).await.unwrap(), Claim::Busy),
        "a claim younger than the timeout is not taken over"
    );
    manual.advance(chrono::TimeDelta::seconds(1));
    match b.claim(KEY, None).await.unwrap() {
        Claim::Won {
            previous: Some(previous),
            ..
        } => assert_eq!(previous.worker, "a"),
        _ => panic!("a claim as old as the timeout is taken over"),
    }
}
