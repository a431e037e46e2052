//! Issue #11, defect 3: webhook nudges over real HTTP + NATS + the simulator. A nudge only
//! ever polls a configured property, and a burst of nudges is coalesced.
mod common;

use std::sync::Arc;
use std::time::Duration;

use concierge::roles::poller::Poller;
use tokio::sync::{mpsc, watch};

struct AlwaysReady;
impl concierge::http::Readiness for AlwaysReady {
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

fn listings_of(sim: &concierge::sim::SimServer, property: &str) -> usize {
    sim.sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/message_threads"))
        .filter(|r| r.query.contains(&format!("filter[property_id]={property}")))
        .count()
}

#[tokio::test]
async fn nudges_poll_only_configured_properties_and_a_burst_is_coalesced() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property("p1", "One", true);
    sim.sim.add_property("p2", "Two", true);
    let mut config = common::config(&sim, &nats_cfg, &["p1"]);
    config.channex.poll_interval = Duration::from_secs(3600); // only nudges poll
    let rig = Rig::start(&config, &infra).await;
    let nudge = |property: &'static str| {
        rig.http
            .post(&rig.url)
            .header("x-concierge-secret", "s3cret")
            .json(&serde_json::json!({"event": "message", "property_id": property}))
            .send()
    };
    common::eventually(
        "the first (baseline) poll of p1",
        Duration::from_secs(5),
        || async { listings_of(&sim, "p1") > 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the coalescing gap

    // p2 is not configured: its guest is never read, no event emitted.
    let t2 = sim.sim.open_thread("p2", "BookingCom", "Other", true);
    sim.sim.guest_message(&t2, "anyone there?");
    sim.sim.clear_requests();
    for _ in 0..3 {
        assert_eq!(nudge("p2").await.unwrap().status(), 202);
    }
    // A p1 nudge after them proves they were processed (the subject is ordered).
    assert_eq!(nudge("p1").await.unwrap().status(), 202);
    common::eventually("the p1 nudge polled", Duration::from_secs(3), || async {
        listings_of(&sim, "p1") > 0
    })
    .await;
    assert_eq!(
        listings_of(&sim, "p2"),
        0,
        "an unconfigured property was polled"
    );
    assert!(
        sim.sim.requests().iter().all(|r| !r.path.contains(&t2)),
        "an unconfigured property's thread was read"
    );
    let events = common::stored_events(&infra.js, "concierge").await;
    assert!(events.is_empty(), "events from p2: {}", events.len());

    // A burst of 100 nudges for p1 in well under a second: at most two polls.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.sim.clear_requests();
    let started = std::time::Instant::now();
    for _ in 0..100 {
        assert_eq!(nudge("p1").await.unwrap().status(), 202);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2000)).await; // the trailing poll included
    let polls = listings_of(&sim, "p1");
    assert!(
        (1..=2).contains(&polls),
        "{polls} polls for a burst of 100 nudges"
    );

    rig.stop().await;
}

/// A running poller (the leader) behind a real HTTP webhook listener.
struct Rig {
    url: String,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
    running: tokio::task::JoinHandle<Result<(), concierge::roles::poller::PollerError>>,
}

impl Rig {
    async fn start(
        config: &concierge::config::Config,
        infra: &concierge::store::nats::Infra,
    ) -> Rig {
        let channex = concierge::wiring::channex_client(config).expect("client");
        let poller = Poller::new(channex, infra, Arc::new(config.clone()), None);
        let (stop, shutdown) = watch::channel(false);
        let (_unused, local) = mpsc::channel(1);
        let running = tokio::spawn(poller.run(shutdown.clone(), local));
        let (nudge_tx, nudge_rx) = mpsc::channel(256);
        tokio::spawn(concierge::roles::poller::publish_nudges(
            nudge_rx,
            infra.client.clone(),
            "concierge".into(),
        ));
        let router = concierge::http::router(
            Arc::new(AlwaysReady),
            concierge::config::Secret::new("s3cret"),
            Some(nudge_tx),
        );
        let addr = concierge::http::serve("127.0.0.1:0", router, shutdown)
            .await
            .unwrap();
        Rig {
            url: format!("http://{addr}/webhooks/channex"),
            http: reqwest::Client::new(),
            stop,
            running,
        }
    }

    async fn nudge(&self, body: serde_json::Value) {
        let res = self
            .http
            .post(&self.url)
            .header("x-concierge-secret", "s3cret")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.running).await;
    }
}

fn all_property_listings(sim: &concierge::sim::SimServer) -> usize {
    sim.sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/message_threads"))
        .filter(|r| !r.query.contains("filter[property_id]"))
        .count()
}

/// Review F1: with `property_ids = []` the interval polls baseline the all-properties
/// scope `*`; the first nudge for one property must not run as a second, silent baseline
/// that records a new guest thread as seen without emitting its message.
#[tokio::test]
async fn first_nudge_for_a_property_after_the_all_properties_baseline_emits_new_messages() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property("p1", "One", true);
    let mut config = common::config(&sim, &nats_cfg, &[]);
    config.channex.poll_interval = Duration::from_secs(3600); // only the nudge polls
    let rig = Rig::start(&config, &infra).await;

    // The all-properties baseline is done (and stored) before the guest writes.
    let baseline_key = format!("baseline.{}", concierge::base::keys::encode("*"));
    common::eventually(
        "the all-properties baseline",
        Duration::from_secs(5),
        || async {
            all_property_listings(&sim) > 0
                && matches!(infra.threads.get(&baseline_key).await, Ok(Some(_)))
        },
    )
    .await;

    let t = sim.sim.open_thread("p1", "BookingCom", "New guest", true);
    sim.sim.guest_message(&t, "what is the wifi password?");
    sim.sim.clear_requests();
    rig.nudge(serde_json::json!({"event": "message", "property_id": "p1"}))
        .await;
    common::eventually("the p1 nudge polled", Duration::from_secs(3), || async {
        listings_of(&sim, "p1") > 0
    })
    .await;
    common::eventually(
        "the guest's message emitted as an event",
        Duration::from_secs(3),
        || async {
            common::stored_events(&infra.js, "concierge")
                .await
                .iter()
                .any(|e| {
                    e.message
                        .as_ref()
                        .is_some_and(|m| m.text == "what is the wifi password?")
                })
        },
    )
    .await;
    assert_eq!(all_property_listings(&sim), 0, "an interval poll ran");
    rig.stop().await;
}

/// Review F6: nudges without a usable property id (`{}`) poll every configured property;
/// a burst of them must be coalesced like nudges of one property (at most two sweeps).
#[tokio::test]
async fn a_burst_of_nudges_without_a_property_is_coalesced() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    for p in ["p1", "p2", "p3"] {
        sim.sim.add_property(p, p, true);
    }
    let mut config = common::config(&sim, &nats_cfg, &["p1", "p2", "p3"]);
    config.channex.poll_interval = Duration::from_secs(3600); // only nudges poll
    let rig = Rig::start(&config, &infra).await;
    common::eventually(
        "the first (baseline) sweep",
        Duration::from_secs(5),
        || async { listings_of(&sim, "p3") > 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the coalescing gap

    sim.sim.clear_requests();
    let started = std::time::Instant::now();
    for _ in 0..100 {
        rig.nudge(serde_json::json!({})).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2000)).await; // the trailing sweep included
    for p in ["p1", "p2", "p3"] {
        // A sweep lists every configured property at once (issue 13, part 4).
        let polls = listings_of(&sim, p) + all_property_listings(&sim);
        assert!(
            (1..=2).contains(&polls),
            "{polls} polls of {p} for a burst of 100 nudges without a property"
        );
    }
    rig.stop().await;
}

/// Review LOW 10: a nudge for one property polls that property's threads; the bookings
/// listing (across the account) belongs to full sweeps only.
#[tokio::test]
async fn a_property_nudge_does_not_run_the_bookings_listing() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property("p1", "One", true);
    let mut config = common::config(&sim, &nats_cfg, &["p1"]);
    config.channex.poll_interval = Duration::from_secs(3600); // only nudges poll
    config.poller.bookings = true;
    let rig = Rig::start(&config, &infra).await;
    let bookings_listings = || {
        sim.sim
            .requests()
            .iter()
            .filter(|r| r.path.ends_with("/bookings"))
            .count()
    };
    common::eventually(
        "the first sweep's listing",
        Duration::from_secs(5),
        || async { bookings_listings() > 0 },
    )
    .await;
    sim.sim.clear_requests();
    rig.nudge(serde_json::json!({"event": "message", "property_id": "p1"}))
        .await;
    common::eventually("the p1 nudge polled", Duration::from_secs(3), || async {
        listings_of(&sim, "p1") > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(bookings_listings(), 0, "{:?}", sim.sim.requests());
    rig.stop().await;
}
