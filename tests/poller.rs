//! Poller against the simulator (real HTTP) and a private nats-server: exactly one event
//! per message across restarts, crashes, two pollers and injected faults.
mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use concierge::events::EventType;
use concierge::roles::poller::Poller;
use concierge::sim::FaultConfig;
use tokio::sync::{mpsc, watch};

const PROP: &str = "prop-1";

fn poller(config: &concierge::config::Config, infra: &concierge::store::nats::Infra) -> Poller {
    let channex = concierge::wiring::channex_client(config).expect("client");
    Poller::new(channex, infra, Arc::new(config.clone()), None)
}

fn count_by_id(events: &[concierge::events::Event]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in events {
        *m.entry(e.id.clone()).or_insert(0) += 1;
    }
    m
}

/// A private NATS, the simulator with property `PROP`, and the test config for both.
async fn env() -> (
    concierge::store::nats::PrivateNatsServer,
    concierge::store::nats::Infra,
    concierge::sim::SimServer,
    concierge::config::Config,
) {
    let (nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = common::config(&sim, &nats_cfg, &[PROP]);
    (nats, infra, sim, config)
}

#[tokio::test]
async fn new_guest_message_becomes_exactly_one_event_with_contract_json() {
    let (_nats, infra, sim, mut config) = env().await;
    let old = sim.sim.open_thread(PROP, "BookingCom", "Old Guest", true);
    sim.sim.guest_message(&old, "history, not to be emitted");
    config.properties.insert(
        PROP.into(),
        concierge::config::PropertyConfig {
            name: "Casa Azul".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars: serde_json::json!({"wifi_name": "azul"})
                .as_object()
                .cloned()
                .unwrap(),
            dry_run: false,
        },
    );
    let mut p = poller(&config, &infra);
    p.load_states().await.unwrap();
    let baseline = p.poll_once(Some(PROP)).await.unwrap();
    assert!(baseline.baseline);
    assert_eq!(
        baseline.events_emitted, 0,
        "history is a baseline, not events"
    );

    let thread = sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    let msg_id = sim.sim.guest_message(&thread, "What is the wifi password?");
    let mut sub = infra
        .client
        .subscribe(format!("concierge.events.thread.new_message.{PROP}"))
        .await
        .unwrap();
    let stats = p.poll_once(Some(PROP)).await.unwrap();
    assert_eq!(stats.events_emitted, 1);
    assert_eq!(stats.threads_changed, 1);
    // ceil(2 threads / 100) list call + one messages call for the changed thread.
    assert_eq!(stats.api_calls, 2, "{stats:?}");

    let msg = tokio::time::timeout(Duration::from_secs(2), futures::StreamExt::next(&mut sub))
        .await
        .expect("event on the contract subject")
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(
        msg.headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str()),
        Some(format!("thread.new_message:{thread}:{msg_id}").as_str())
    );
    assert_eq!(json["id"], format!("thread.new_message:{thread}:{msg_id}"));
    assert_eq!(json["type"], "thread.new_message");
    assert_eq!(json["property"]["id"], PROP);
    assert_eq!(json["property"]["name"], "Casa Azul");
    assert_eq!(json["property"]["timezone"], "Europe/Lisbon");
    assert_eq!(json["property"]["vars"]["wifi_name"], "azul");
    assert_eq!(json["thread"]["id"], thread.as_str());
    assert_eq!(json["thread"]["provider"], "booking_com");
    assert_eq!(json["thread"]["awaiting_reply"], true);
    assert_eq!(json["thread"]["message_count"], 1);
    assert!(json["thread"]["last_guest_message_at"].is_string());
    assert!(json["thread"]["booking_id"].is_string());
    assert_eq!(json["message"]["id"], msg_id.as_str());
    assert_eq!(json["message"]["text"], "What is the wifi password?");
    assert_eq!(json["message"]["sender"], "guest");
    assert!(json.get("inquiry").is_none());

    // Nothing changed: nothing emitted, and only the list call is spent.
    let again = p.poll_once(Some(PROP)).await.unwrap();
    assert_eq!(again.events_emitted, 0);
    assert_eq!(again.api_calls, 1);
    assert_eq!(common::stored_events(&infra.js, "concierge").await.len(), 1);
}

#[tokio::test]
async fn inquiry_is_announced_once_with_its_deadline() {
    let (_nats, infra, sim, config) = env().await;
    let mut p = poller(&config, &infra);
    p.poll_once(Some(PROP)).await.unwrap();

    let deadline: chrono::DateTime<Utc> = "2031-12-01T07:01:38.735Z".parse().unwrap();
    let (thread, inquiry_msg) = sim.sim.add_inquiry(
        PROP,
        "Andrew",
        deadline,
        "2031-12-02",
        "2031-12-03",
        3,
        "50.00",
        "GBP",
    );
    p.poll_once(Some(PROP)).await.unwrap();
    p.poll_once(Some(PROP)).await.unwrap();
    let events = common::stored_events(&infra.js, "concierge").await;
    let inquiries: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::InquiryReceived)
        .collect();
    assert_eq!(inquiries.len(), 1, "{events:#?}");
    let ev = inquiries[0];
    assert_eq!(ev.id, format!("inquiry.received:{thread}:{inquiry_msg}"));
    let inquiry = ev.inquiry.as_ref().unwrap();
    assert_eq!(inquiry.non_response_at, Some(deadline));
    assert_eq!(inquiry.guest_name.as_deref(), Some("Andrew"));
    assert_eq!(inquiry.number_of_guests, Some(3));
    assert_eq!(
        inquiry.expected_payout_amount_accurate.as_deref(),
        Some("50.00")
    );
    assert_eq!(inquiry.currency.as_deref(), Some("GBP"));
    assert_eq!(
        ev.thread.as_ref().unwrap().provider,
        concierge::events::Provider::Airbnb
    );
    assert_eq!(ev.thread.as_ref().unwrap().booking_id, None);

    // A guest message on the inquiry thread is a new message, not a new inquiry.
    sim.sim
        .guest_message(&thread, "Is the flat quiet at night?");
    p.poll_once(Some(PROP)).await.unwrap();
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e.event_type == EventType::InquiryReceived)
            .count(),
        1
    );
}

#[tokio::test]
async fn restart_and_crash_between_publish_and_snapshot_emit_each_message_once() {
    let (_nats, infra, sim, config) = env().await;
    let thread = sim.sim.open_thread(PROP, "Airbnb", "Tom", true);

    let mut first = poller(&config, &infra);
    first.load_states().await.unwrap();
    first.poll_once(Some(PROP)).await.unwrap(); // baseline
    sim.sim.guest_message(&thread, "one");
    first.poll_once(Some(PROP)).await.unwrap();
    drop(first); // "restart"

    // Messages that arrive while the poller is down are emitted once after restart.
    sim.sim.guest_message(&thread, "two");
    sim.sim.guest_message(&thread, "three");
    let mut second = poller(&config, &infra);
    second.load_states().await.unwrap();
    let stats = second.poll_once(Some(PROP)).await.unwrap();
    assert_eq!(stats.events_emitted, 2);

    // A crash between publish and snapshot write: the events went out, the snapshot did
    // not. Simulate by restoring the previous snapshot after the cycle.
    let key = format!("t.{thread}");
    let before = infra
        .threads
        .entry(key.clone())
        .await
        .unwrap()
        .unwrap()
        .value;
    sim.sim.guest_message(&thread, "four");
    second.poll_once(Some(PROP)).await.unwrap();
    infra.threads.put(&key, before).await.unwrap();
    drop(second);
    let mut third = poller(&config, &infra);
    third.load_states().await.unwrap();
    third.poll_once(Some(PROP)).await.unwrap(); // re-publishes "four": deduplicated

    let events = common::stored_events(&infra.js, "concierge").await;
    let texts: Vec<_> = events
        .iter()
        .map(|e| e.message.as_ref().unwrap().text.clone())
        .collect();
    assert_eq!(
        texts,
        vec!["one", "two", "three", "four"],
        "oldest first, once each"
    );
    assert!(count_by_id(&events).values().all(|n| *n == 1));
}

#[tokio::test]
async fn two_pollers_elect_one_leader_and_the_standby_takes_over() {
    let (_nats, infra, sim, config) = env().await;
    let thread = sim.sim.open_thread(PROP, "BookingCom", "Ana", true);

    let (stop_a, shutdown_a) = watch::channel(false);
    let (stop_b, shutdown_b) = watch::channel(false);
    let (_na, nudge_a) = mpsc::channel(1);
    let (_nb, nudge_b) = mpsc::channel(1);
    let a = tokio::spawn(poller(&config, &infra).run(shutdown_a, nudge_a));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let b = tokio::spawn(poller(&config, &infra).run(shutdown_b, nudge_b));
    tokio::time::sleep(Duration::from_millis(800)).await; // baseline by the leader

    for i in 0..5 {
        sim.sim.guest_message(&thread, &format!("message {i}"));
    }
    common::eventually("5 events", Duration::from_secs(5), || async {
        common::stored_events(&infra.js, "concierge").await.len() >= 5
    })
    .await;

    // Kill the leader (a, which started first); b must take over within a few seconds.
    let _ = stop_a.send(true);
    a.abort();
    for i in 5..8 {
        sim.sim.guest_message(&thread, &format!("message {i}"));
    }
    common::eventually(
        "standby took over and emitted 3 more",
        Duration::from_secs(8),
        || async { common::stored_events(&infra.js, "concierge").await.len() >= 8 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(events.len(), 8, "no duplicates across two pollers");
    assert!(count_by_id(&events).values().all(|n| *n == 1));
    let _ = stop_b.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), b).await;
}

#[tokio::test]
async fn injected_429_and_500_still_emit_every_message_exactly_once() {
    let (_nats, infra, sim, config) = env().await;
    let mut p = poller(&config, &infra);
    p.poll_once(Some(PROP)).await.unwrap();
    let threads: Vec<String> = (0..6)
        .map(|i| {
            sim.sim
                .open_thread(PROP, "BookingCom", &format!("Guest {i}"), true)
        })
        .collect();
    for (i, t) in threads.iter().enumerate() {
        for j in 0..3 {
            sim.sim.guest_message(t, &format!("thread {i} message {j}"));
        }
    }
    sim.sim.set_faults(FaultConfig {
        rate_429: 0.15,
        rate_500: 0.15,
        retry_after_secs: 0,
        latency: Duration::ZERO,
    });
    let faults = |sim: &concierge::sim::SimServer| {
        sim.sim
            .requests()
            .iter()
            .filter(|r| r.status == 429 || r.status == 500)
            .count()
    };
    // Cycles may fail part-way (retries exhausted); later cycles pick up the rest. The
    // faults are random: keep polling under them until some were injected, so the run
    // always exercises them (a handful of requests can go through unfaulted by chance).
    for _ in 0..60 {
        let _ = p.poll_once(Some(PROP)).await;
        let emitted = common::stored_events(&infra.js, "concierge").await.len();
        if emitted >= 18 && faults(&sim) > 0 {
            break;
        }
    }
    sim.sim.set_faults(FaultConfig::default());
    let _ = p.poll_once(Some(PROP)).await;
    assert!(faults(&sim) > 0, "faults were injected");
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(events.len(), 18);
    assert!(count_by_id(&events).values().all(|n| *n == 1));
}

#[tokio::test]
async fn authenticated_webhook_nudges_an_immediate_poll_and_is_never_data() {
    let (_nats, infra, sim, mut config) = env().await;
    config.channex.poll_interval = Duration::from_secs(3600); // only nudges poll
    let thread = sim.sim.open_thread(PROP, "BookingCom", "Ana", true);

    let (stop, shutdown) = watch::channel(false);
    let (_unused, local) = mpsc::channel(1);
    let running = tokio::spawn(poller(&config, &infra).run(shutdown.clone(), local));
    let (nudge_tx, nudge_rx) = mpsc::channel(4);
    tokio::spawn(concierge::roles::poller::publish_nudges(
        nudge_rx,
        infra.client.clone(),
        "concierge".into(),
    ));
    struct AlwaysReady;
    impl concierge::http::Readiness for AlwaysReady {
        fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }
    let router = concierge::http::router(
        Arc::new(AlwaysReady),
        concierge::config::Secret::new("s3cret"),
        Some(nudge_tx),
    );
    let addr = concierge::http::serve("127.0.0.1:0", router, shutdown)
        .await
        .unwrap();
    let url = format!("http://{addr}/webhooks/channex");
    tokio::time::sleep(Duration::from_millis(800)).await; // leader + baseline poll

    sim.sim.guest_message(&thread, "hello?");
    let http = reqwest::Client::new();
    // The payload claims a message that does not exist: it is only a nudge, never data.
    let body = serde_json::json!({"event": "message", "property_id": PROP,
        "payload": {"message": "forged text", "id": "forged"}});
    let denied = http
        .post(&url)
        .header("x-concierge-secret", "wrong")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(common::stored_events(&infra.js, "concierge")
        .await
        .is_empty());

    let accepted = http
        .post(&url)
        .header("x-concierge-secret", "s3cret")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    common::eventually(
        "nudged poll emitted the message",
        Duration::from_secs(3),
        || async {
            !common::stored_events(&infra.js, "concierge")
                .await
                .is_empty()
        },
    )
    .await;
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].message.as_ref().unwrap().text, "hello?");
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
}

#[tokio::test]
async fn a_broken_thread_is_skipped_and_the_rest_of_the_cycle_continues() {
    let (_nats, infra, sim, config) = env().await;
    let mut p = poller(&config, &infra);
    p.poll_once(Some(PROP)).await.unwrap();
    let malformed = sim.sim.open_thread(PROP, "BookingCom", "Broken JSON", true);
    let gone = sim.sim.open_thread(PROP, "Airbnb", "Deleted", true);
    let fine = sim.sim.open_thread(PROP, "BookingCom", "Fine", true);
    for t in [&malformed, &gone, &fine] {
        sim.sim.guest_message(t, "hello");
    }
    sim.sim
        .break_messages(&malformed, Some(concierge::sim::BrokenMessages::Malformed));
    sim.sim
        .break_messages(&gone, Some(concierge::sim::BrokenMessages::NotFound));
    let stats = p.poll_once(Some(PROP)).await.unwrap();
    assert_eq!(stats.threads_failed, 2, "{stats:?}");
    assert_eq!(stats.events_emitted, 1);
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].thread_id(), Some(fine.as_str()));

    // Healed threads are picked up on a later cycle, once.
    sim.sim.break_messages(&malformed, None);
    sim.sim.break_messages(&gone, None);
    let stats = p.poll_once(Some(PROP)).await.unwrap();
    assert_eq!(stats.events_emitted, 2);
    p.poll_once(Some(PROP)).await.unwrap();
    assert_eq!(common::stored_events(&infra.js, "concierge").await.len(), 3);
}

#[tokio::test]
async fn backfill_emits_recent_history_on_the_first_run_only() {
    let (_nats, infra, sim, config) = env().await;
    let old = sim.sim.open_thread(PROP, "BookingCom", "Old", true);
    sim.sim.guest_message(&old, "three days ago");
    sim.sim.backdate_thread(&old, chrono::Duration::days(3));
    let recent = sim.sim.open_thread(PROP, "BookingCom", "Recent", true);
    sim.sim.guest_message(&recent, "an hour ago");
    sim.sim.backdate_thread(&recent, chrono::Duration::hours(1));
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut p = Poller::new(
        channex,
        &infra,
        Arc::new(config.clone()),
        Some(Duration::from_secs(2 * 3600)),
    );
    let stats = p.poll_once(Some(PROP)).await.unwrap();
    assert!(stats.baseline);
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(
        events.len(),
        1,
        "only the message inside the backfill window"
    );
    assert_eq!(events[0].message.as_ref().unwrap().text, "an hour ago");
    // A restart with --backfill again does not re-emit: the baseline is recorded.
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut again = Poller::new(
        channex,
        &infra,
        Arc::new(config),
        Some(Duration::from_secs(2 * 3600)),
    );
    again.load_states().await.unwrap();
    let stats = again.poll_once(Some(PROP)).await.unwrap();
    assert!(!stats.baseline);
    assert_eq!(common::stored_events(&infra.js, "concierge").await.len(), 1);
}

#[tokio::test]
async fn baseline_over_many_threads_costs_only_list_calls_and_history_stays_quiet() {
    let (_nats, infra, sim, config) = env().await;
    let threads: Vec<String> = (0..250)
        .map(|i| {
            let t = sim
                .sim
                .open_thread(PROP, "BookingCom", &format!("Guest {i}"), true);
            sim.sim.guest_message(&t, "old question");
            t
        })
        .collect();
    let mut p = poller(&config, &infra);
    let stats = p.poll_once(Some(PROP)).await.unwrap();
    assert!(stats.baseline);
    assert_eq!(
        stats.api_calls, 3,
        "ceil(250 / 100) list calls and nothing else"
    );
    // One thread moves on: only it is read, only its new message is emitted.
    sim.sim.guest_message(&threads[17], "new question");
    let stats = p.poll_once(Some(PROP)).await.unwrap();
    assert_eq!(stats.events_emitted, 1);
    assert_eq!(
        stats.api_calls, 2,
        "early stop on the ordered listing + one messages call"
    );
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(events[0].message.as_ref().unwrap().text, "new question");
    assert!(events[0].thread.as_ref().unwrap().awaiting_reply);
}

#[tokio::test]
async fn a_closed_nudge_channel_neither_stops_nor_spins_the_poller() {
    let (_nats, infra, sim, config) = env().await; // poll_interval 200 ms
    let thread = sim.sim.open_thread(PROP, "BookingCom", "Ana", true);
    let (stop, shutdown) = watch::channel(false);
    let (nudge_tx, nudges) = mpsc::channel(1);
    drop(nudge_tx);
    let running = tokio::spawn(poller(&config, &infra).run(shutdown, nudges));
    tokio::time::sleep(Duration::from_millis(500)).await;
    sim.sim.guest_message(&thread, "still polling?");
    common::eventually("polled on the interval", Duration::from_secs(5), || async {
        !common::stored_events(&infra.js, "concierge")
            .await
            .is_empty()
    })
    .await;
    sim.sim.clear_requests();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lists = sim
        .sim
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/message_threads"))
        .count();
    assert!(
        (2..=10).contains(&lists),
        "one list call per 200 ms interval, got {lists}"
    );
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), running).await;
}

// -- defects 6 and 8: malformed items and ids from outside ---------------------------------

/// A thread resource as Channex lists it, with `title_json` spliced in verbatim (it may
/// hold invalid UTF-8 or a lone surrogate escape).
fn raw_thread(id: &str, property: &str, title_json: &[u8]) -> Vec<u8> {
    let mut out =
        format!(r#"{{"id":"{id}","type":"message_thread","attributes":{{"title":"#).into_bytes();
    out.extend_from_slice(title_json);
    out.extend_from_slice(
        format!(
            r#","provider":"BookingCom","message_count":1,"last_message_received_at":"{}"}},"relationships":{{"property":{{"data":{{"id":"{property}","type":"property"}}}}}}}}"#,
            Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f")
        )
        .as_bytes(),
    );
    out
}

/// A guest message resource with `text_json` spliced in verbatim.
fn raw_message(id: &str, text_json: &[u8]) -> Vec<u8> {
    let mut out =
        format!(r#"{{"id":"{id}","type":"message","attributes":{{"message":"#).into_bytes();
    out.extend_from_slice(text_json);
    out.extend_from_slice(
        format!(
            r#","sender":"guest","inserted_at":"{}"}}}}"#,
            Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f")
        )
        .as_bytes(),
    );
    out
}

fn metric(series: &str) -> f64 {
    let text = concierge::http::metrics_handle().render();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn malformed_audit(
    infra: &concierge::store::nats::Infra,
) -> Vec<concierge::store::audit::AuditRecord> {
    let all = concierge::store::audit::query(&infra.js, "concierge", &Default::default())
        .await
        .expect("audit");
    all.into_iter()
        .filter(|r| r.reason == Some(concierge::store::audit::Reason::MalformedItem))
        .collect()
}

#[tokio::test]
async fn one_bad_byte_skips_only_its_thread_or_message_and_is_reported_once() {
    use concierge::sim::RawList;
    let (_nats, infra, sim, config) = env().await;
    let threads_series = r#"concierge_channex_malformed_items_total{kind="message_thread"}"#;
    let messages_series = r#"concierge_channex_malformed_items_total{kind="message"}"#;
    let (threads0, messages0) = (metric(threads_series), metric(messages_series));
    let mut p = poller(&config, &infra);
    p.poll_once(Some(PROP)).await.unwrap();

    let ana = sim.sim.open_thread(PROP, "BookingCom", "Ana", true);
    let bea = sim.sim.open_thread(PROP, "Airbnb", "Bea", true);
    let threads = |property: &str| RawList::Threads {
        property_id: property.to_string(),
    };
    sim.sim
        .inject_raw_item(threads(PROP), raw_thread("t-utf8", PROP, b"\"Jo\xffao\""));
    sim.sim.inject_raw_item(
        threads(PROP),
        raw_thread("t-surrogate", PROP, br#""Jo\udcffao""#),
    );
    let messages = RawList::Messages {
        thread_id: ana.clone(),
    };
    sim.sim
        .inject_raw_item(messages.clone(), raw_message("m-utf8", b"\"caf\xc3\""));
    sim.sim
        .inject_raw_item(messages, raw_message("m-number", b"42"));
    sim.sim.guest_message(&ana, "is there parking?");
    sim.sim.guest_message(&bea, "wifi?");

    let stats = p
        .poll_once(Some(PROP))
        .await
        .expect("the property is not blinded");
    assert_eq!(stats.malformed_items, 3, "{stats:?}");
    assert_eq!(stats.threads_failed, 0, "{stats:?}");
    let texts = |events: &[concierge::events::Event]| {
        let mut t: Vec<String> = events
            .iter()
            .map(|e| e.message.as_ref().unwrap().text.clone())
            .collect();
        t.sort();
        t
    };
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(texts(&events), ["42", "is there parking?", "wifi?"]);

    // Later cycles still answer the property's guests and do not report the same items
    // again: logged, counted and audited once.
    for text in ["and breakfast?", "thanks"] {
        sim.sim.guest_message(&bea, text);
        let stats = p.poll_once(Some(PROP)).await.unwrap();
        assert_eq!(
            (stats.events_emitted, stats.malformed_items),
            (1, 0),
            "{stats:?}"
        );
    }
    assert_eq!(metric(threads_series) - threads0, 2.0);
    assert_eq!(metric(messages_series) - messages0, 1.0);
    let audit = malformed_audit(&infra).await;
    assert_eq!(audit.len(), 3, "{audit:#?}");
    assert!(audit
        .iter()
        .all(|r| r.outcome == concierge::store::audit::Outcome::Skipped
            && r.property_id.as_deref() == Some(PROP)));
    let mut threads: Vec<_> = audit.iter().filter_map(|r| r.thread_id.clone()).collect();
    threads.sort();
    let mut want = vec!["t-surrogate".to_string(), "t-utf8".to_string(), ana.clone()];
    want.sort();
    assert_eq!(threads, want);
}

#[tokio::test]
async fn ids_from_channex_cannot_inject_headers_or_break_subjects() {
    use concierge::sim::RawList;
    let (_nats, infra, sim, config) = env().await;
    let mut p = poller(&config, &infra);
    p.poll_once(Some(PROP)).await.unwrap();
    let ana = sim.sim.open_thread(PROP, "BookingCom", "Ana", true);
    let messages = RawList::Messages {
        thread_id: ana.clone(),
    };
    // JSON-escaped CR/LF: valid JSON, an id that would end the header line.
    sim.sim.inject_raw_item(
        messages.clone(),
        raw_message(r"m1\r\nNats-Msg-Id: forged", br#""hi""#),
    );
    sim.sim
        .inject_raw_item(messages, raw_message("m2.>", br#""hi""#));
    let threads = RawList::Threads {
        property_id: PROP.to_string(),
    };
    sim.sim
        .inject_raw_item(threads.clone(), raw_thread("t1.*", PROP, br#""x""#));
    sim.sim
        .inject_raw_item(threads, raw_thread("t2", "p1.>", br#""x""#));
    sim.sim.guest_message(&ana, "hello");

    let stats = p.poll_once(Some(PROP)).await.expect("poll");
    assert_eq!(stats.malformed_items, 4, "{stats:?}");
    assert_eq!(stats.threads_failed, 0, "{stats:?}");
    // Exactly the one sane message became an event, and every stored message's
    // `Nats-Msg-Id` and subject are the sane ones.
    let stream = infra.js.get_stream("CONCIERGE_EVENTS").await.unwrap();
    let info = stream.get_info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    let raw = stream
        .get_raw_message(info.state.first_sequence)
        .await
        .unwrap();
    assert_eq!(
        raw.subject.as_str(),
        format!("concierge.events.thread.new_message.{PROP}")
    );
    let event: concierge::events::Event = serde_json::from_slice(&raw.payload).unwrap();
    assert_eq!(event.message.as_ref().unwrap().text, "hello");
    let header = raw
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str().to_string());
    assert_eq!(
        header.as_deref(),
        Some(event.id.as_str()),
        "{:?}",
        raw.headers
    );
    assert!(
        !event.id.contains(['\r', '\n', ' ', '*', '>']),
        "{}",
        event.id
    );
    for r in malformed_audit(&infra).await {
        let id = r.thread_id.unwrap_or_default();
        assert!(!id.contains(['\r', '\n', '.', '*', '>']), "{id:?}");
        assert!(!r.error.unwrap_or_default().contains('\n'));
    }
}

/// Issue 13, part 4: one listing across every configured property per cycle (its cost does
/// not grow with the properties), threads of other properties ignored, a nudged poll of one
/// property does not hide another's change, the early stop survives a restart, and a
/// property added later is baselined then.
#[tokio::test]
async fn one_listing_covers_every_configured_property() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    let mut threads = HashMap::new();
    for p in ["p1", "p2", "p3", "p4", "other"] {
        sim.sim.add_property(p, p, true);
        for i in 0..3 {
            let t = sim
                .sim
                .open_thread(p, "BookingCom", &format!("{p} guest {i}"), true);
            sim.sim.guest_message(&t, "history");
            threads.insert((p, i), t);
        }
    }
    let config = common::config(&sim, &nats_cfg, &["p1", "p2", "p3"]);
    let calls = || {
        let r = sim.sim.requests();
        let lists = r.iter().filter(|r| r.path.ends_with("/message_threads"));
        let filtered = lists
            .clone()
            .filter(|r| r.query.contains("filter[property_id]"));
        (lists.count(), filtered.count(), r.len())
    };
    let mut p = poller(&config, &infra);
    p.load_states().await.unwrap();
    for prop in ["p1", "p2", "p3"] {
        assert!(p.poll_once(Some(prop)).await.unwrap().baseline);
    }
    let first = p.poll_configured().await.unwrap();
    assert_eq!((first.events_emitted, first.api_calls), (0, 1));
    sim.sim.clear_requests();
    let steady = p.poll_configured().await.unwrap();
    assert_eq!((steady.events_emitted, steady.api_calls), (0, 1));
    assert_eq!(calls(), (1, 0, 1), "one listing, no property filter");

    // A guest of p2 and one of an unconfigured property: only p2's is read and emitted.
    sim.sim
        .guest_message(&threads[&("p2", 0)], "is there parking?");
    sim.sim.guest_message(&threads[&("other", 0)], "not ours");
    sim.sim.clear_requests();
    let stats = p.poll_configured().await.unwrap();
    assert_eq!((stats.events_emitted, stats.api_calls), (1, 2));
    assert!(sim
        .sim
        .requests()
        .iter()
        .all(|r| !r.path.contains(&threads[&("other", 0)])));

    // p1 changes, then p3 changes and is nudged (polled alone): p3's thread is now newer
    // and unchanged, yet the next listing must still reach p1's change below it.
    sim.sim
        .guest_message(&threads[&("p1", 1)], "late checkout?");
    tokio::time::sleep(Duration::from_millis(5)).await;
    sim.sim
        .guest_message(&threads[&("p3", 2)], "early checkin?");
    assert_eq!(p.poll_once(Some("p3")).await.unwrap().events_emitted, 1);
    assert_eq!(p.poll_configured().await.unwrap().events_emitted, 1);
    let texts: Vec<String> = common::stored_events(&infra.js, "concierge")
        .await
        .into_iter()
        .filter_map(|e| e.message.map(|m| m.text))
        .collect();
    assert_eq!(
        texts,
        ["is there parking?", "early checkin?", "late checkout?"]
    );

    // A restarted poller stops early at once (the mark is in KV).
    let mut again = poller(&config, &infra);
    again.load_states().await.unwrap();
    assert_eq!(again.poll_configured().await.unwrap().api_calls, 1);

    // p4 added to the configuration: baselined on its own, then listed with the others.
    let config4 = common::config(&sim, &nats_cfg, &["p1", "p2", "p3", "p4"]);
    let mut with_p4 = poller(&config4, &infra);
    with_p4.load_states().await.unwrap();
    let baseline = with_p4.poll_once(Some("p4")).await.unwrap();
    assert!(baseline.baseline && baseline.events_emitted == 0);
    assert_eq!(with_p4.poll_configured().await.unwrap().events_emitted, 0);
    sim.sim.guest_message(&threads[&("p4", 1)], "towels?");
    let stats = with_p4.poll_configured().await.unwrap();
    assert_eq!((stats.events_emitted, stats.api_calls), (1, 2));
}

/// Messages of the stored events, in order.
async fn event_texts(infra: &concierge::store::nats::Infra) -> Vec<String> {
    common::stored_events(&infra.js, "concierge")
        .await
        .into_iter()
        .filter_map(|e| e.message.map(|m| m.text))
        .collect()
}

/// Review of issue 13 part 4, defect 1: Channex's `updated_at` is not an exact timeline.
/// An update stamped late, just below the previous complete listing's newest `updated_at`,
/// is still reached (the listing reads a lookback below the mark).
#[tokio::test]
async fn a_late_stamped_update_just_below_the_mark_is_still_read() {
    let (_nats, infra, sim, config) = env().await;
    let threads: Vec<String> = (0..3)
        .map(|i| {
            let t = sim
                .sim
                .open_thread(PROP, "BookingCom", &format!("guest {i}"), true);
            sim.sim.guest_message(&t, "history");
            t
        })
        .collect();
    let mut p = poller(&config, &infra);
    p.load_states().await.unwrap();
    assert!(p.poll_once(Some(PROP)).await.unwrap().baseline);
    assert_eq!(p.poll_configured().await.unwrap().api_calls, 1); // full listing: mark
    let mark = threads
        .iter()
        .filter_map(|t| sim.sim.thread(t).and_then(|t| t.updated_at))
        .max()
        .expect("updated_at");
    sim.sim.guest_message(&threads[0], "stamped late");
    assert!(sim
        .sim
        .set_thread_updated_at(&threads[0], mark - chrono::Duration::seconds(1)));
    let stats = p.poll_configured().await.unwrap();
    assert_eq!((stats.events_emitted, stats.api_calls), (1, 2), "{stats:?}");
    assert_eq!(event_texts(&infra).await, ["stamped late"]);
}

/// Defect 2: with `property_ids = []` (scope `*`) a nudged poll refreshes page 1 of the
/// listing; the next `*` listing still reaches a change on page 2.
#[tokio::test]
async fn scope_all_reaches_a_change_below_a_page_a_nudge_refreshed() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property("pa", "pa", true);
    sim.sim.add_property("pb", "pb", true);
    let ta = sim.sim.open_thread("pa", "BookingCom", "pa guest", true);
    sim.sim.guest_message(&ta, "history");
    let pb: Vec<String> = (0..100)
        .map(|i| {
            let t = sim
                .sim
                .open_thread("pb", "BookingCom", &format!("pb {i}"), true);
            sim.sim.guest_message(&t, "history");
            t
        })
        .collect();
    let config = common::config(&sim, &nats_cfg, &[]);
    let mut p = poller(&config, &infra);
    p.load_states().await.unwrap();
    assert!(p.poll_once(None).await.unwrap().baseline);
    assert_eq!(p.poll_once(None).await.unwrap().events_emitted, 0);
    sim.sim.guest_message(&ta, "first");
    tokio::time::sleep(Duration::from_millis(5)).await;
    for t in &pb {
        sim.sim.guest_message(t, "pb news");
    }
    // The nudge refreshes every thread on page 1; pa's change is now on page 2.
    assert_eq!(p.poll_once(Some("pb")).await.unwrap().events_emitted, 100);
    assert_eq!(p.poll_once(None).await.unwrap().events_emitted, 1);
    let texts = event_texts(&infra).await;
    assert_eq!(
        (texts.len(), texts.last().map(String::as_str)),
        (101, Some("first"))
    );
}

/// Defect 3: Channex ignoring `filter[property_id]`. A baseline of a new property does not
/// swallow another property's change, and a nudge never emits for an unconfigured one.
#[tokio::test]
async fn rows_of_other_properties_in_a_filtered_listing_are_ignored() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    let mut threads = HashMap::new();
    for prop in ["p1", "p2", "other"] {
        sim.sim.add_property(prop, prop, true);
        let t = sim.sim.open_thread(prop, "BookingCom", prop, true);
        sim.sim.guest_message(&t, "history");
        threads.insert(prop, t);
    }
    sim.sim.set_list_features(true, false);
    let config = common::config(&sim, &nats_cfg, &["p1", "p2"]);
    let mut p = poller(&config, &infra);
    p.load_states().await.unwrap();
    assert!(p.poll_once(Some("p1")).await.unwrap().baseline);
    assert_eq!(p.poll_configured().await.unwrap().events_emitted, 0);
    sim.sim.guest_message(&threads["p1"], "p1 guest");
    let p2 = p.poll_once(Some("p2")).await.unwrap();
    assert!(p2.baseline && p2.events_emitted == 0);
    sim.sim.guest_message(&threads["other"], "not ours");
    assert_eq!(p.poll_once(Some("p1")).await.unwrap().events_emitted, 1);
    assert_eq!(p.poll_configured().await.unwrap().events_emitted, 0);
    assert_eq!(event_texts(&infra).await, ["p1 guest"]);
}

/// Defect 5: a thread that keeps failing does not pin the mark: it is retried on its own
/// for a few cycles, then audited (`malformed_item`, kind `message_thread`) and given up
/// until it changes again; nothing of it is lost once it reads again.
#[tokio::test]
async fn a_thread_that_keeps_failing_is_retried_then_audited_and_given_up() {
    use concierge::roles::poller::detect::RETRY_ATTEMPTS;
    use concierge::sim::BrokenMessages;
    let (_nats, infra, sim, config) = env().await;
    let stuck = sim.sim.open_thread(PROP, "BookingCom", "stuck", true);
    let fine = sim.sim.open_thread(PROP, "BookingCom", "fine", true);
    sim.sim.guest_message(&stuck, "history");
    sim.sim.guest_message(&fine, "history");
    let quiet = sim.sim.open_thread(PROP, "BookingCom", "quiet", true);
    let mut p = poller(&config, &infra);
    p.load_states().await.unwrap();
    p.poll_once(Some(PROP)).await.unwrap();
    p.poll_configured().await.unwrap();
    sim.sim
        .break_messages(&stuck, Some(BrokenMessages::Malformed));
    sim.sim.guest_message(&stuck, "unreadable for now");
    for cycle in 1..=RETRY_ATTEMPTS {
        sim.sim.guest_message(&fine, &format!("fine {cycle}"));
        let stats = p.poll_configured().await.unwrap();
        assert_eq!((stats.threads_failed, stats.events_emitted), (1, 1));
        // One listing, the fine thread's messages, the stuck one's (and its own read).
        assert!(stats.api_calls <= 4, "{stats:?}");
    }
    let audit = malformed_audit(&infra).await;
    assert_eq!(audit.len(), 1, "{audit:#?}");
    assert_eq!(audit[0].thread_id.as_deref(), Some(stuck.as_str()));
    // Time passes: the thread falls below the listing's lookback (under a quiet thread
    // the listing stops at) and is left alone.
    let ago = |minutes| Utc::now() - chrono::Duration::minutes(minutes);
    assert!(sim.sim.set_thread_updated_at(&quiet, ago(10)));
    assert!(sim.sim.set_thread_updated_at(&stuck, ago(30)));
    let stats = p.poll_configured().await.unwrap();
    assert_eq!((stats.threads_failed, stats.api_calls), (0, 1), "{stats:?}");
    sim.sim.break_messages(&stuck, None);
    sim.sim.guest_message(&stuck, "readable again");
    assert_eq!(p.poll_configured().await.unwrap().events_emitted, 2);
}

/// Defect 4: a listed row without `property_id` counts for the property its snapshot
/// recorded, instead of silently never being kept by the listing across properties.
#[tokio::test]
async fn a_row_without_property_id_is_kept_by_its_snapshot_property() {
    let (_nats, infra, sim, config) = env().await;
    let t = sim.sim.open_thread(PROP, "BookingCom", "Ann", true);
    sim.sim.guest_message(&t, "history");
    let mut p = poller(&config, &infra);
    p.load_states().await.unwrap();
    assert!(p.poll_once(Some(PROP)).await.unwrap().baseline);
    p.poll_configured().await.unwrap();
    sim.sim.hide_thread_property(&t, true);
    sim.sim.guest_message(&t, "towels?");
    assert_eq!(p.poll_configured().await.unwrap().events_emitted, 1);
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].property.id, PROP);
}

/// Review note: a listing Channex did not return in the order asked for proves nothing
/// about `updated_at`, so it does not move the mark: the next ordered listing reads all.
#[tokio::test]
async fn a_listing_out_of_order_does_not_move_the_mark() {
    let (_nats, infra, sim, config) = env().await;
    let names = ["recent", "quiet", "changed"];
    let ids: Vec<String> = names
        .iter()
        .map(|n| {
            let t = sim.sim.open_thread(PROP, "BookingCom", n, true);
            sim.sim.guest_message(&t, "history");
            t
        })
        .collect();
    let mut p = poller(&config, &infra);
    p.load_states().await.unwrap();
    assert!(p.poll_once(Some(PROP)).await.unwrap().baseline);
    sim.sim.set_list_features(false, true);
    assert_eq!(p.poll_configured().await.unwrap().events_emitted, 0);
    sim.sim.set_list_features(true, true);
    let ago = |minutes| Utc::now() - chrono::Duration::minutes(minutes);
    sim.sim.guest_message(&ids[2], "far below");
    assert!(sim.sim.set_thread_updated_at(&ids[1], ago(30)));
    assert!(sim.sim.set_thread_updated_at(&ids[2], ago(60)));
    assert_eq!(p.poll_configured().await.unwrap().events_emitted, 1);
    assert_eq!(event_texts(&infra).await, ["far below"]);
}
