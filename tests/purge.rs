//! `concierge purge --thread`: one thread's personal data goes from the ledger, the timer
//! store, the audit stream and the events stream of a private NATS; other threads' stays.
mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use concierge::events::Event;
use concierge::roles::poller::Poller;
use concierge::store::audit::{self, AuditFilter, AuditLog, AuditRecord, Outcome};
use concierge::store::ledger::{Ledger, LedgerEntry, LedgerState};
use concierge::store::timers::{FollowUpTimer, FollowUps};

const PROP: &str = "prop-purge";

/// Everything the service keeps about a thread, as the executor would have left it.
async fn remember(ledger: &Ledger, timers: &FollowUps, audit: &AuditLog, event: &Event) {
    let thread = event.thread.as_ref().unwrap().id.clone();
    let key = format!("{}|10_faq|0", event.id);
    let text = format!("Door code for {thread}: 4711");
    let claim = ledger
        .claim_in(&key, Some(&thread), Some(&text))
        .await
        .unwrap();
    let concierge::store::ledger::Claim::Won { revision, .. } = claim else {
        panic!("fresh claim expected");
    };
    let entry = LedgerEntry {
        state: LedgerState::Done,
        worker: String::new(),
        claimed_at: Utc::now(),
        outcome: Some("executed".into()),
        reason: Some("sent".into()),
        text: Some(text.clone()),
        channex_message_id: Some(format!("sent-{thread}")),
        attempts: 1,
        renewed_at: None,
        thread_id: Some(thread.clone()),
    };
    ledger.finish(&key, revision, entry).await.unwrap();
    ledger
        .mark_own_message(&format!("sent-{thread}"))
        .await
        .unwrap();
    ledger.mark_sending(&thread, &text).await.unwrap();
    ledger.mark_sent(&thread, "wifi", Utc::now()).await.unwrap();
    let reply = concierge::store::ledger::SentMessage {
        id: format!("sent-{thread}"),
        text: text.clone(),
        inserted_at: Utc::now(),
        attachments: vec![],
    };
    ledger.record_last_reply(&thread, &reply).await.unwrap();
    timers
        .arm(&FollowUpTimer {
            thread_id: thread.clone(),
            booking_id: None,
            property_id: PROP.into(),
            name: "delayed_reply".into(),
            due_at: Utc::now() + chrono::Duration::hours(1),
            data: serde_json::Map::new(),
            armed_at: Utc::now(),
            armed_by_event: event.id.clone(),
            stay: None,
        })
        .await
        .unwrap();
    let mut r = AuditRecord::for_event(format!("{key}:executed"), event, Outcome::Executed);
    r.text = Some(text);
    audit.record(&r).await.unwrap();
}

#[tokio::test]
async fn purge_deletes_one_threads_data_everywhere_and_keeps_the_others() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = common::config(&sim, &nats_cfg, &[PROP]);
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = Poller::new(channex, &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.unwrap(); // baseline
    let doomed = sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    let kept = sim.sim.open_thread(PROP, "AirBNB", "João", true);
    sim.sim
        .guest_message(&doomed, "Maria Silva here, what is the door code?");
    sim.sim.guest_message(&kept, "Hello");
    poller.poll_once(Some(PROP)).await.unwrap();
    let events = common::stored_events(&infra.js, "concierge").await;
    assert_eq!(events.len(), 2, "{events:#?}");

    let ledger = Ledger::new(infra.ledger.clone(), "w", Duration::from_secs(60));
    let timers = FollowUps::new(infra.followups.clone());
    let audit_log = AuditLog::new(infra.js.clone(), "concierge");
    for e in &events {
        remember(&ledger, &timers, &audit_log, e).await;
    }

    let report = concierge::store::purge::purge_thread(&infra, "concierge", &doomed, Some(PROP))
        .await
        .unwrap();
    assert_eq!(report.timers, 1);
    assert_eq!(report.audit_records, 1);
    assert_eq!(report.events, 1);
    // act., own., send., cool. and last. keys.
    assert_eq!(report.ledger_keys, 5, "{report:?}");

    for (thread, present) in [(&doomed, false), (&kept, true)] {
        let event = events
            .iter()
            .find(|e| e.thread_id() == Some(thread))
            .unwrap();
        let key = format!("{}|10_faq|0", event.id);
        let text = format!("Door code for {thread}: 4711");
        assert_eq!(ledger.get(&key).await.unwrap().is_some(), present);
        assert_eq!(
            ledger
                .is_own_message(&format!("sent-{thread}"))
                .await
                .unwrap(),
            present
        );
        assert_eq!(
            ledger
                .is_pending_own(thread, &text, Utc::now())
                .await
                .unwrap(),
            present
        );
        assert_eq!(
            ledger.last_sent(thread, "wifi").await.unwrap().is_some(),
            present
        );
        assert_eq!(ledger.last_reply(thread).await.unwrap().is_some(), present);
        assert_eq!(
            timers.get(thread, "delayed_reply").await.unwrap().is_some(),
            present
        );
        let filter = AuditFilter {
            thread_id: Some(thread.clone()),
            ..Default::default()
        };
        let records = audit::query(&infra.js, "concierge", &filter).await.unwrap();
        assert_eq!(records.len(), usize::from(present));
        let stored = common::stored_events(&infra.js, "concierge").await;
        assert_eq!(
            stored.iter().any(|e| e.thread_id() == Some(thread)),
            present
        );
    }
    // The snapshot stays, so the thread is not announced again as new.
    poller.poll_once(Some(PROP)).await.unwrap();
    assert_eq!(common::stored_events(&infra.js, "concierge").await.len(), 1);
}

/// Retention is reconciled on start-up: a bucket created with other settings gets the
/// configured `max_age`.
#[tokio::test]
async fn ledger_and_timer_retention_is_applied_to_existing_buckets() {
    let (_nats, infra, mut cfg) = common::nats_infra().await;
    let age = |infra: concierge::store::nats::Infra, stream: &'static str| async move {
        let mut s = infra.js.get_stream(stream).await.unwrap();
        s.info().await.unwrap().config.max_age
    };
    assert_eq!(
        age(infra.clone(), "KV_concierge_ledger").await,
        cfg.ledger_max_age
    );
    cfg.ledger_max_age = Duration::from_secs(40 * 86_400);
    cfg.followups_max_age = Duration::from_secs(100 * 86_400);
    let infra = concierge::store::nats::Infra::setup(&cfg).await.unwrap();
    assert_eq!(
        age(infra.clone(), "KV_concierge_ledger").await,
        Duration::from_secs(40 * 86_400)
    );
    assert_eq!(
        age(infra.clone(), "KV_concierge_followups").await,
        Duration::from_secs(100 * 86_400)
    );
    assert_eq!(age(infra, "KV_concierge_threads").await, Duration::ZERO);
}

/// The command an operator runs on a deletion request, through the real binary.
#[tokio::test]
async fn the_purge_command_deletes_a_threads_timers_and_reports_what_went() {
    let (_nats, infra, cfg) = common::nats_infra().await;
    let timers = FollowUps::new(infra.followups.clone());
    for thread in ["thread-1", "thread-2"] {
        timers
            .arm(&FollowUpTimer {
                thread_id: thread.into(),
                booking_id: None,
                property_id: "p1".into(),
                name: "delayed_reply".into(),
                due_at: Utc::now() + chrono::Duration::hours(1),
                data: serde_json::Map::new(),
                armed_at: Utc::now(),
                stay: None,
                armed_by_event: "e1".into(),
            })
            .await
            .unwrap();
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args(["purge", "--thread", "thread-1"])
        .env_remove("CONCIERGE_CONFIG")
        .env("NATS_URL", &cfg.url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("purged thread thread-1: ledger_keys=0 timers=1 audit_records=0 events=0"),
        "{stdout}"
    );
    let left: Vec<String> = timers
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.thread_id)
        .collect();
    assert_eq!(left, vec!["thread-2".to_string()]);
}

/// The purge only ever matches the thread asked for: ids that are not Channex ids are
/// refused, and records without a thread (subject token `_`) are never taken for thread `_`.
#[tokio::test]
async fn purge_refuses_non_ids_and_never_takes_records_of_no_thread() {
    let (_nats, infra, _) = common::nats_infra().await;
    let audit_log = AuditLog::new(infra.js.clone(), "concierge");
    let mut cron = AuditRecord::standalone("schedule.tick:daily", Outcome::Executed);
    cron.property_id = Some(PROP.into());
    audit_log.record(&cron).await.unwrap();

    for bad in ["", "a.b", "t1\r\nx", "p1.>"] {
        let err = concierge::store::purge::purge_thread(&infra, "concierge", bad, None)
            .await
            .expect_err("not a Channex id");
        assert!(
            matches!(err, concierge::store::purge::PurgeError::InvalidThreadId(_)),
            "{err}"
        );
    }
    let report = concierge::store::purge::purge_thread(&infra, "concierge", "_", None)
        .await
        .unwrap();
    assert_eq!(report.audit_records, 0, "{report:?}");
    let all = audit::query(&infra.js, "concierge", &AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(all.len(), 1, "the record of no thread must stay: {all:#?}");
}

/// Issue 12 review: records a newer version writes (an action or outcome this version does
/// not know) are still attributed to their thread and purged; the typed reader must not make
/// such personal data invisible to the purge. A record of an unknown action also reads back.
#[tokio::test]
async fn purge_takes_records_of_kinds_this_version_does_not_know() {
    let (_nats, infra, _cfg) = common::nats_infra().await;
    let thread = "t-newer-version";
    let record = serde_json::json!({
        "id": "e1|20_drafts|0:drafted", "at": "2026-12-01T10:00:00Z", "event_id": "e1",
        "event_type": "thread.new_message", "rule": "20_drafts", "rule_version": "v1",
        "action": "draft", "template": "wifi", "thread_id": thread, "property_id": PROP,
        "outcome": "drafted", "reason": "draft_saved", "text": "Maria, the code is 4711",
        "channex_message_id": null, "error": null, "attempts": 1, "duration_ms": 3
    });
    let subject = format!("concierge.audit.{PROP}.{thread}");
    infra
        .js
        .publish(subject, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut readable = record.clone();
    readable["outcome"] = "executed".into();
    let read_back: AuditRecord = serde_json::from_value(readable)
        .unwrap_or_else(|e| panic!("a record of an unknown action must read back: {e}"));
    assert_eq!(
        read_back.action,
        Some(audit::ActionKind::Other("draft".into()))
    );

    let report = concierge::store::purge::purge_thread(&infra, "concierge", thread, Some(PROP))
        .await
        .unwrap();
    assert_eq!(report.audit_records, 1, "{report:?}");
    let stream = infra
        .js
        .get_stream(concierge::store::nats::audit_stream("concierge"))
        .await
        .unwrap();
    assert_eq!(stream.cached_info().state.messages, 0);
}

/// A thread with a booking: the purge also takes the booking's cached copy (it holds the
/// guest's name), its booking-keyed timers (armed with or without the thread) and the
/// booking's `booking.changed` events.
#[tokio::test]
async fn purge_takes_the_threads_booking_cache_timers_and_booking_events() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let mut config = common::config(&sim, &nats_cfg, &[PROP]);
    config.poller.bookings = true;
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = Poller::new(channex, &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.unwrap(); // baseline
    poller.poll_bookings().await.unwrap();
    let new_booking = serde_json::from_value(serde_json::json!({
        "property_id": PROP, "ota_name": "BookingCom", "arrival_date": "2030-05-02",
        "departure_date": "2030-05-04", "guest_name": "Maria Silva", "with_thread": true,
    }))
    .unwrap();
    let (booking, thread) = sim.sim.create_booking(&new_booking).unwrap();
    let thread = thread.unwrap();
    sim.sim.guest_message(&thread, "Olá!");
    poller.poll_once(Some(PROP)).await.unwrap();
    poller.poll_bookings().await.unwrap();
    let cache = concierge::store::bookings::BookingCache::new(infra.threads.clone());
    assert!(cache.get(&booking).await.unwrap().is_some());
    let about_booking = |e: &Event| e.booking.as_ref().is_some_and(|b| b.id == booking);
    let events = common::stored_events(&infra.js, "concierge").await;
    assert!(events
        .iter()
        .any(|e| e.thread.is_none() && about_booking(e)));
    let timers = FollowUps::new(infra.followups.clone());
    timers
        .arm(&FollowUpTimer {
            thread_id: String::new(),
            booking_id: Some(booking.clone()),
            property_id: PROP.into(),
            name: "checkin_instructions".into(),
            due_at: Utc::now() + chrono::Duration::hours(1),
            data: serde_json::Map::new(),
            armed_at: Utc::now(),
            armed_by_event: "booking.changed:x".into(),
            stay: None,
        })
        .await
        .unwrap();

    concierge::store::purge::purge_thread(&infra, "concierge", &thread, Some(PROP))
        .await
        .unwrap();
    assert!(cache.get(&booking).await.unwrap().is_none());
    assert!(timers.list().await.unwrap().is_empty());
    let left = common::stored_events(&infra.js, "concierge").await;
    assert!(!left.iter().any(about_booking), "{left:#?}");
}
