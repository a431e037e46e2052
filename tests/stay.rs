//! Stay messages end to end: the shipped rules with the poller (bookings on), the worker
//! and a scheduler on a manual clock, against the simulator and a private nats-server.
//! The stay follows the booking: a moved date moves the message, a cancellation drops it,
//! a threadless booking is written to through its booking endpoint, and concierge never
//! acks a booking revision.
mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use concierge::base::clock::ManualClock;
use concierge::config::{Config, PropertyConfig};
use concierge::events::{BookingStatus, EventType};
use concierge::roles::directory::ChannexDirectory;
use concierge::roles::scheduler::Scheduler;
use concierge::sim::{BookingChangeRequest, NewBooking, SimServer};
use concierge::store::audit::{self, ActionKind, AuditFilter, Reason};
use concierge::store::bookings::BookingCache;
use concierge::store::nats::Infra;
use concierge::store::timers::{FollowUpTimer, FollowUps, TimerScope};
use tokio::sync::{mpsc, watch};

const PROP: &str = "prop-stay";
const LISBON: chrono_tz::Tz = chrono_tz::Europe::Lisbon;

struct Service {
    stop: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
    clock: ManualClock,
}

impl Service {
    async fn stop(mut self) {
        let _ = self.stop.send(true);
        while tokio::time::timeout(Duration::from_secs(10), self.tasks.join_next())
            .await
            .ok()
            .flatten()
            .is_some()
        {}
    }
}

fn stay_config(sim: &SimServer, nats: &concierge::config::NatsConfig) -> Config {
    let mut c = common::config(sim, nats, &[PROP]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    c.rules.dir = root.join("rules");
    c.rules.templates_dir = root.join("templates");
    c.poller.bookings = true;
    let vars = serde_json::json!({
        "checkin_time": "15:00", "checkout_time": "11:00",
        "address": "Rua das Flores 12, Lisboa",
        // Quiet hours never (the stay rule does not defer, the FAQ rules might).
        "quiet_start": "03:00", "quiet_end": "03:01",
    });
    c.properties.insert(
        PROP.into(),
        PropertyConfig {
            name: "Casa Azul".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars: vars.as_object().cloned().unwrap_or_default(),
            dry_run: false,
        },
    );
    c
}

/// Poller and worker on the real clock (rules see real "now"), the scheduler on `clock`.
async fn start(config: &Config, infra: &Infra) -> Service {
    let channex = concierge::wiring::channex_client(config).unwrap();
    let poller = concierge::wiring::poller(config, infra, channex, None);
    let mut service = start_without_poller(config, infra).await;
    let (nudges_tx, nudges) = mpsc::channel(1);
    let s = service.stop.subscribe();
    service.tasks.spawn(async move {
        let _keep = nudges_tx;
        poller.run(s, nudges).await.unwrap();
    });
    // The first poll is the threads' baseline.
    tokio::time::sleep(Duration::from_millis(600)).await;
    service
}

/// The worker and the scheduler (on a manual clock); the test drives the poller.
async fn start_without_poller(config: &Config, infra: &Infra) -> Service {
    let (stop, shutdown) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let channex = concierge::wiring::channex_client(config).unwrap();
    let clock = ManualClock::starting_at(Utc::now());
    let shared = Arc::new(config.clone());
    let directory = Arc::new(ChannexDirectory::new(channex.clone(), infra, shared));
    let scheduler = Scheduler::new(
        infra,
        directory,
        vec![],
        "scheduler-stay",
        config.poller.lease_ttl,
    )
    .with_clock(clock.clock())
    .with_max_idle(Duration::from_millis(50))
    .with_retry_delay(Duration::from_millis(200));
    let s = shutdown.clone();
    tasks.spawn(async move { scheduler.run(s).await.unwrap() });
    let (worker, live) = concierge::wiring::worker(config, infra, channex)
        .await
        .unwrap();
    let js = infra.js.clone();
    let s = shutdown.clone();
    tasks.spawn(async move {
        let _live = live;
        worker.run(&js, "concierge", s).await.unwrap()
    });
    Service { stop, tasks, clock }
}

fn day(offset: i64) -> String {
    (Utc::now().with_timezone(&LISBON).date_naive() + chrono::Days::new(offset as u64))
        .format("%Y-%m-%d")
        .to_string()
}

/// `date` minus one day at `hh:mm` Lisbon time.
fn eve_at(date: &str, hh: u32, mm: u32) -> DateTime<Utc> {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap() - chrono::Days::new(1);
    LISBON
        .from_local_datetime(&d.and_hms_opt(hh, mm, 0).unwrap())
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

fn new_booking(guest: &str, arrival: &str, departure: &str, with_thread: bool) -> NewBooking {
    serde_json::from_value(serde_json::json!({
        "property_id": PROP, "ota_name": "BookingCom", "arrival_date": arrival,
        "departure_date": departure, "guest_name": guest, "language": "de-DE",
        "with_thread": with_thread,
    }))
    .unwrap()
}

async fn timer_due(followups: &FollowUps, booking: &str, name: &str) -> Option<DateTime<Utc>> {
    followups
        .get_in(TimerScope::Booking(booking), name)
        .await
        .ok()
        .flatten()
        .map(|t| t.due_at)
}

/// A first booking, so the bookings baseline is written and later bookings are new.
async fn baseline(sim: &SimServer, infra: &Infra) {
    sim.sim
        .create_booking(&new_booking("Old Guest", &day(60), &day(62), false))
        .unwrap();
    let cache = BookingCache::new(infra.threads.clone());
    common::eventually("bookings baseline", Duration::from_secs(10), || async {
        matches!(cache.mark().await, Ok(Some(_)))
    })
    .await;
}

#[tokio::test]
async fn a_moved_stay_is_messaged_once_at_the_new_time_through_the_booking_endpoint() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = stay_config(&sim, &nats_cfg);
    let service = start(&config, &infra).await;
    baseline(&sim, &infra).await;
    let followups = FollowUps::new(infra.followups.clone());

    // A new booking without a thread: booking.changed (new) arms its stay timers.
    let (arrival, departure) = (day(3), day(6));
    let (booking, thread) = sim
        .sim
        .create_booking(&new_booking("Anna Schmidt", &arrival, &departure, false))
        .unwrap();
    assert!(thread.is_none());
    let old_due = eve_at(&arrival, 10, 0);
    common::eventually("check-in timer armed", Duration::from_secs(10), || async {
        timer_due(&followups, &booking, "checkin_instructions").await == Some(old_due)
    })
    .await;

    // The dates move by a day after the timer was armed: the timer moves with them.
    let new_arrival = day(4);
    let change = BookingChangeRequest {
        arrival_date: Some(new_arrival.clone()),
        departure_date: Some(day(7)),
        status: None,
    };
    sim.sim.modify_booking(&booking, &change).unwrap();
    let new_due = eve_at(&new_arrival, 10, 0);
    common::eventually(
        "check-in timer re-armed",
        Duration::from_secs(10),
        || async { timer_due(&followups, &booking, "checkin_instructions").await == Some(new_due) },
    )
    .await;

    // The old time passes: nothing is sent.
    service.clock.set(old_due + chrono::Duration::minutes(1));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        sim.sim.sent_by_api().is_empty(),
        "{:?}",
        sim.sim.sent_by_api()
    );

    // The new time: the instructions go out once, through POST /bookings/:id/messages.
    service.clock.set(new_due + chrono::Duration::minutes(1));
    common::eventually(
        "check-in instructions sent",
        Duration::from_secs(10),
        || async { !sim.sim.sent_by_api().is_empty() },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = sim.sim.sent_by_api();
    assert_text_then_guide(&sent);
    assert!(sent[0].1.contains("Anna Schmidt"), "{}", sent[0].1);
    assert!(sent[0].1.contains(&new_arrival), "{}", sent[0].1);
    let booking_posts = sim
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with(&format!("bookings/{booking}/messages")))
        .count();
    assert_eq!(
        booking_posts, 2,
        "the text and the guide, both to the booking"
    );

    // booking.changed: once per change (new, then the move), never an ack or a feed read.
    let events = common::stored_events(&infra.js, "concierge").await;
    let changes: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::BookingChanged)
        .filter(|e| e.booking.as_ref().is_some_and(|b| b.id == booking))
        .collect();
    assert_eq!(changes.len(), 2, "{changes:#?}");
    let moved = changes[1].booking_change.as_ref().unwrap();
    assert_eq!(moved.before.as_ref().unwrap().arrival_date, arrival);
    assert_eq!(moved.after.arrival_date, new_arrival);
    assert_eq!(
        changes[1].booking.as_ref().unwrap().language.as_deref(),
        Some("de")
    );
    assert!(sim.sim.booking_acks().is_empty());
    assert!(!sim
        .sim
        .requests()
        .iter()
        .any(|r| r.path.contains("booking_revisions")));
    service.stop().await;
}

#[tokio::test]
async fn thread_events_carry_the_booking_and_a_cancelled_stay_gets_no_message() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = stay_config(&sim, &nats_cfg);
    let service = start(&config, &infra).await;
    baseline(&sim, &infra).await;
    let followups = FollowUps::new(infra.followups.clone());

    let arrival = day(3);
    let (booking, thread) = sim
        .sim
        .create_booking(&new_booking("Jonas Weber", &arrival, &day(5), true))
        .unwrap();
    let thread = thread.unwrap();
    sim.sim.guest_message(&thread, "Hallo, wir freuen uns!");
    let due = eve_at(&arrival, 10, 0);
    common::eventually("stay timers armed", Duration::from_secs(10), || async {
        timer_due(&followups, &booking, "checkin_instructions").await == Some(due)
    })
    .await;
    let guest_event = || async {
        common::stored_events(&infra.js, "concierge")
            .await
            .into_iter()
            .find(|e| e.event_type == EventType::ThreadNewMessage && e.thread_id() == Some(&thread))
    };
    common::eventually(
        "the guest message's event",
        Duration::from_secs(10),
        || async { guest_event().await.is_some() },
    )
    .await;
    let on_thread = guest_event().await.expect("the guest message's event");
    let block = on_thread.booking.as_ref().expect("booking block");
    assert_eq!(block.id, booking);
    assert_eq!(block.status, BookingStatus::New);
    assert_eq!(
        (block.arrival_date.as_str(), block.nights),
        (arrival.as_str(), 2)
    );
    assert_eq!(block.guest_name, "Jonas Weber");

    // Cancelled: the rule drops every stay timer of the booking.
    let cancel = BookingChangeRequest {
        status: Some("cancelled".into()),
        ..Default::default()
    };
    sim.sim.modify_booking(&booking, &cancel).unwrap();
    common::eventually("stay timers dropped", Duration::from_secs(10), || async {
        timer_due(&followups, &booking, "checkin_instructions")
            .await
            .is_none()
            && timer_due(&followups, &booking, "checkout_reminder")
                .await
                .is_none()
    })
    .await;

    // A timer the rules did not drop (armed before the cancellation was seen) fires with
    // the booking as it is now: its reply is skipped, with the reason in the audit log.
    followups
        .arm(&FollowUpTimer {
            thread_id: thread.clone(),
            booking_id: Some(booking.clone()),
            property_id: PROP.into(),
            name: "checkin_instructions".into(),
            due_at: due,
            data: Default::default(),
            armed_at: Utc::now(),
            armed_by_event: "test".into(),
            stay: None,
        })
        .await
        .unwrap();
    // And one armed on the thread alone (an event without the booking block): it fires
    // with the thread's booking too, so it is skipped the same way.
    followups
        .arm(&FollowUpTimer {
            thread_id: thread.clone(),
            booking_id: None,
            property_id: PROP.into(),
            name: "checkout_reminder".into(),
            due_at: due,
            data: Default::default(),
            armed_at: Utc::now(),
            armed_by_event: "test".into(),
            stay: None,
        })
        .await
        .unwrap();
    service.clock.set(due + chrono::Duration::minutes(1));
    common::eventually("skips audited", Duration::from_secs(10), || async {
        let records = audit::query(&infra.js, "concierge", &AuditFilter::default())
            .await
            .unwrap();
        replies_with(&records, Reason::BookingCancelled) >= 2
    })
    .await;
    let records = audit::query(&infra.js, "concierge", &AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(
        replies_with(&records, Reason::BookingCancelled),
        2,
        "{records:#?}"
    );
    assert!(
        sim.sim.sent_by_api().is_empty(),
        "{:?}",
        sim.sim.sent_by_api()
    );
    let fired = common::stored_events(&infra.js, "concierge").await;
    let due_event = fired
        .iter()
        .find(|e| e.event_type == EventType::FollowUpDue)
        .expect("the follow-up fired");
    assert!(due_event.booking.as_ref().is_some_and(|b| b.is_cancelled()));
    assert!(sim.sim.booking_acks().is_empty());
    service.stop().await;
}

#[tokio::test]
async fn a_quiet_bookings_cycle_is_one_call_and_a_malformed_booking_is_audited_once() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = stay_config(&sim, &nats_cfg);
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = concierge::wiring::poller(&config, &infra, channex, None);
    let (booking, _) = sim
        .sim
        .create_booking(&new_booking("Eva Rossi", &day(10), &day(12), false))
        .unwrap();
    let first = poller.poll_bookings().await.unwrap();
    assert!(first.baseline);
    assert_eq!((first.listed, first.events_emitted), (1, 0));

    // Nothing changed: one call, no event.
    sim.sim.clear_requests();
    let quiet = poller.poll_bookings().await.unwrap();
    assert_eq!((quiet.pages, quiet.events_emitted), (1, 0));
    assert_eq!(sim.sim.requests().len(), 1);

    // A booking Channex sends broken sits next to one that changed.
    let broken = serde_json::json!({"id": "broken-1", "type": "booking",
        "attributes": {"status": "new", "arrival_date": "soon", "departure_date": "2030-01-02"}});
    sim.sim.inject_raw_item(
        concierge::sim::RawList::Bookings,
        serde_json::to_vec(&broken).unwrap(),
    );
    let change = BookingChangeRequest {
        departure_date: Some(day(13)),
        ..Default::default()
    };
    sim.sim.modify_booking(&booking, &change).unwrap();
    let changed = poller.poll_bookings().await.unwrap();
    assert_eq!(changed.events_emitted, 1);
    let again = poller.poll_bookings().await.unwrap();
    assert_eq!(again.events_emitted, 0);
    let records = audit::query(&infra.js, "concierge", &AuditFilter::default())
        .await
        .unwrap();
    let malformed: Vec<_> = records
        .iter()
        .filter(|r| r.reason == Some(Reason::MalformedItem))
        .collect();
    assert_eq!(malformed.len(), 1, "{malformed:#?}");
    assert!(malformed[0].error.as_deref().unwrap_or("").contains("soon"));
    assert!(sim.sim.booking_acks().is_empty());
}

fn replies_with(records: &[audit::AuditRecord], reason: Reason) -> usize {
    records
        .iter()
        .filter(|r| r.action == Some(ActionKind::Reply) && r.reason == Some(reason.clone()))
        .count()
}

/// The guest moves the stay after the timer was armed, and the timer fires before the
/// poller has seen the move: the old time sends nothing (`booking_moved`), the re-armed
/// timer sends once at the new time.
#[tokio::test]
async fn a_timer_firing_before_the_move_is_seen_sends_nothing_then_once_at_the_new_time() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = stay_config(&sim, &nats_cfg);
    let service = start_without_poller(&config, &infra).await;
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = concierge::wiring::poller(&config, &infra, channex, None);
    assert!(poller.poll_bookings().await.unwrap().baseline);
    let followups = FollowUps::new(infra.followups.clone());
    let (arrival, new_arrival) = (day(3), day(4));
    let (booking, _) = sim
        .sim
        .create_booking(&new_booking("Lena Vogel", &arrival, &day(6), false))
        .unwrap();
    assert_eq!(poller.poll_bookings().await.unwrap().events_emitted, 1);
    let old_due = eve_at(&arrival, 10, 0);
    common::eventually("check-in timer armed", Duration::from_secs(10), || async {
        timer_due(&followups, &booking, "checkin_instructions").await == Some(old_due)
    })
    .await;

    // Moved; the listing has not run yet when the old time comes.
    let change = BookingChangeRequest {
        arrival_date: Some(new_arrival.clone()),
        ..Default::default()
    };
    sim.sim.modify_booking(&booking, &change).unwrap();
    service.clock.set(old_due + chrono::Duration::minutes(1));
    let audit_of = || async {
        audit::query(&infra.js, "concierge", &AuditFilter::default())
            .await
            .unwrap()
    };
    common::eventually("old timer handled", Duration::from_secs(10), || async {
        timer_due(&followups, &booking, "checkin_instructions")
            .await
            .is_none()
            && !audit_of()
                .await
                .iter()
                .all(|r| r.action != Some(ActionKind::Reply))
    })
    .await;
    assert!(
        sim.sim.sent_by_api().is_empty(),
        "{:?}",
        sim.sim.sent_by_api()
    );
    assert_eq!(replies_with(&audit_of().await, Reason::BookingMoved), 1);

    // The listing sees the move: re-armed, sent once at the new time.
    assert_eq!(poller.poll_bookings().await.unwrap().events_emitted, 1);
    let new_due = eve_at(&new_arrival, 10, 0);
    common::eventually("re-armed", Duration::from_secs(10), || async {
        timer_due(&followups, &booking, "checkin_instructions").await == Some(new_due)
    })
    .await;
    service.clock.set(new_due + chrono::Duration::minutes(1));
    common::eventually("sent", Duration::from_secs(10), || async {
        !sim.sim.sent_by_api().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let sent = sim.sim.sent_by_api();
    assert_text_then_guide(&sent);
    assert!(sent[0].1.contains(&new_arrival), "{}", sent[0].1);
    service.stop().await;
}

/// The check-in instructions went out once, in the guest's language (German), followed by
/// the shipped guide as one attachment-only message.
fn assert_text_then_guide(sent: &[(String, String)]) {
    assert_eq!(sent.len(), 2, "the text, then the guide: {sent:?}");
    assert!(
        sent[0].1.contains("Check-in ist ab"),
        "German: {}",
        sent[0].1
    );
    assert_eq!(sent[1].1, "", "the guide carries no text: {sent:?}");
}

/// One configured property: the listing asks Channex for its bookings only; other
/// properties' bookings still move the mark, so they are not listed again and again.
#[tokio::test]
async fn the_bookings_listing_is_filtered_to_the_property_and_foreign_rows_move_the_mark() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = stay_config(&sim, &nats_cfg);
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = concierge::wiring::poller(&config, &infra, channex, None);
    let foreign = |guest: &str| {
        let mut b = new_booking(guest, &day(10), &day(12), false);
        b.property_id = "prop-elsewhere".into();
        b
    };
    sim.sim.create_booking(&foreign("Other Guest")).unwrap();
    sim.sim.clear_requests();
    assert!(poller.poll_bookings().await.unwrap().baseline);
    let asked = sim.sim.requests();
    assert!(
        asked
            .iter()
            .all(|r| r.query.contains(&format!("filter[property_id]={PROP}"))),
        "{asked:?}"
    );

    // Several configured properties: no filter, but a foreign row still moves the mark.
    let mut two = config.clone();
    two.channex.property_ids.push("prop-two".into());
    let channex = concierge::wiring::channex_client(&two).unwrap();
    let mut poller = concierge::wiring::poller(&two, &infra, channex, None);
    let cache = BookingCache::new(infra.threads.clone());
    let before = cache.mark().await.unwrap().unwrap().newest_updated_at;
    tokio::time::sleep(Duration::from_millis(20)).await;
    sim.sim.create_booking(&foreign("Later Guest")).unwrap();
    let cycle = poller.poll_bookings().await.unwrap();
    assert_eq!(cycle.listed, 0);
    let after = cache.mark().await.unwrap().unwrap().newest_updated_at;
    assert!(after > before, "{before} -> {after}");
}

/// The scheduler's re-read (a firing timer) never overwrites a copy of a newer update that
/// the poller wrote meanwhile.
#[tokio::test]
async fn a_timers_booking_refresh_never_overwrites_a_newer_cached_copy() {
    use concierge::store::threads::ThreadDirectory;
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let config = stay_config(&sim, &nats_cfg);
    let (booking, _) = sim
        .sim
        .create_booking(&new_booking("Nina Berg", &day(10), &day(12), false))
        .unwrap();
    let cache = BookingCache::new(infra.threads.clone());
    let newer = concierge::store::bookings::CachedBooking {
        booking: concierge::events::Booking {
            id: booking.clone(),
            arrival_date: day(20),
            departure_date: day(22),
            ..Default::default()
        },
        property_id: PROP.into(),
        revision: "from-the-future".into(),
        updated_at: Some(Utc::now() + chrono::Duration::hours(1)),
        announced: None,
    };
    cache.put(&newer).await.unwrap();
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let directory = ChannexDirectory::new(channex, &infra, Arc::new(config));
    let read = directory.booking(&booking).await.unwrap().unwrap();
    assert_eq!(read.arrival_date, day(10), "the caller gets Channex's view");
    assert_eq!(cache.get(&booking).await.unwrap(), Some(newer));
}
