//! KV-lease leader election against a private nats-server: exclusivity, takeover after a
//! crash within about one ttl, and immediate hand-over on release.
mod common;

use std::time::Duration;

use chrono::Utc;
use concierge::base::clock::system_clock;
use concierge::store::lease::{LeaderElection, Lease};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

const TTL: Duration = Duration::from_secs(1);

#[tokio::test]
async fn compare_and_set_gives_the_lease_to_one_holder_until_it_expires() {
    let (_server, infra, _) = common::nats_infra().await;
    let mut a = Lease::new(infra.leases.clone(), "poller", "a".into(), TTL);
    let mut b = Lease::new(infra.leases.clone(), "poller", "b".into(), TTL);
    let now = Utc::now();
    assert!(a.try_acquire_or_renew(now).await.unwrap());
    assert!(!b.try_acquire_or_renew(now).await.unwrap());
    // a renews; b still cannot take it before expiry.
    assert!(a.try_acquire_or_renew(now).await.unwrap());
    let (rec, _) = a.current().await.unwrap().unwrap();
    assert_eq!(rec.holder, "a");
    assert!(!b
        .try_acquire_or_renew(now + chrono::Duration::milliseconds(900))
        .await
        .unwrap());
    // Judged by the stored expires_at: past it, b takes over and a no longer can renew.
    let later = now + chrono::Duration::milliseconds(1100);
    assert!(b.try_acquire_or_renew(later).await.unwrap());
    assert!(!a.try_acquire_or_renew(later).await.unwrap());
    // a's release must not delete b's lease.
    a.release().await.unwrap();
    assert_eq!(b.current().await.unwrap().unwrap().0.holder, "b");
    b.release().await.unwrap();
    assert!(b.current().await.unwrap().is_none());
    assert!(a.try_acquire_or_renew(later).await.unwrap());
}

#[tokio::test]
async fn racing_contenders_for_a_free_lease_yield_exactly_one_winner() {
    let (_server, infra, _) = common::nats_infra().await;
    let now = Utc::now();
    let mut handles = Vec::new();
    for i in 0..5 {
        let mut l = Lease::new(infra.leases.clone(), "scheduler", format!("h{i}"), TTL);
        handles.push(tokio::spawn(
            async move { l.try_acquire_or_renew(now).await },
        ));
    }
    let mut winners = 0;
    for h in handles {
        if h.await.unwrap().unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1);
}

fn election(
    infra: &concierge::store::nats::Infra,
    holder: &str,
) -> (LeaderElection, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    let lease = Lease::new(infra.leases.clone(), "poller", holder.into(), TTL);
    (LeaderElection::spawn(lease, system_clock(), rx), tx)
}

async fn wait_leader(e: &LeaderElection, within: Duration) {
    let mut rx = e.subscribe();
    timeout(within, rx.wait_for(|l| *l))
        .await
        .expect("did not become leader in time")
        .unwrap();
}

#[tokio::test]
async fn two_elections_one_leader_and_takeover_after_crash_within_ttl() {
    let (_server, infra, _) = common::nats_infra().await;
    let (a, _sa) = election(&infra, "a");
    wait_leader(&a, Duration::from_secs(2)).await;
    let (b, _sb) = election(&infra, "b");
    // Several renew periods: never two leaders at once, a stays leader.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(!(a.is_leader() && b.is_leader()), "two leaders");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(a.is_leader());
    assert!(!b.is_leader());

    // a crashes (stops renewing, no release): b takes over within about one ttl.
    let crashed = Instant::now();
    a.abort();
    wait_leader(&b, TTL * 2).await;
    let took = crashed.elapsed();
    assert!(took >= TTL / 3, "took over too early: {took:?}");
    assert!(took <= TTL + TTL / 2, "took over too late: {took:?}");
    b.stop().await;
}

#[tokio::test]
async fn release_hands_over_immediately() {
    let (_server, infra, _) = common::nats_infra().await;
    let (a, _sa) = election(&infra, "a");
    wait_leader(&a, Duration::from_secs(2)).await;
    let (b, _sb) = election(&infra, "b");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!b.is_leader());
    let released = Instant::now();
    a.stop().await;
    wait_leader(&b, TTL).await;
    // Next attempt of b (every ttl/3), not a full ttl.
    assert!(released.elapsed() < TTL / 2, "{:?}", released.elapsed());
    b.stop().await;
}

#[tokio::test]
async fn shutdown_signal_steps_down_and_releases() {
    let (_server, infra, _) = common::nats_infra().await;
    let (a, sa) = election(&infra, "a");
    wait_leader(&a, Duration::from_secs(2)).await;
    let mut rx = a.subscribe();
    sa.send(true).unwrap();
    timeout(Duration::from_secs(1), rx.wait_for(|l| !*l))
        .await
        .unwrap()
        .unwrap();
    let probe = Lease::new(infra.leases.clone(), "poller", "probe".into(), TTL);
    let deadline = Instant::now() + Duration::from_secs(1);
    while probe.current().await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "lease not released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn leader_steps_down_when_nats_goes_away() {
    let (mut server, infra, _) = common::nats_infra().await;
    let (a, _sa) = election(&infra, "a");
    wait_leader(&a, Duration::from_secs(2)).await;
    server.stop();
    let mut rx = a.subscribe();
    // Renewals fail: a must stop acting no later than ttl after its last renewal.
    timeout(TTL + TTL / 2, rx.wait_for(|l| !*l))
        .await
        .expect("leader kept acting without a lease")
        .unwrap();
}
