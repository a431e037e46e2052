//! The scheduler: cron fire times across DST, the follow-up store, and the leader-elected
//! loop against a private nats-server (follow-ups fire once, debounce, cancel, restart,
//! ticks exactly once with several schedulers). Thread data comes from an in-memory
//! `ThreadDirectory`, the boundary double of the Channex-backed one.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use concierge::base::clock::{Clock, ManualClock};
use concierge::base::time::CronSpec;
use concierge::config::ScheduleConfig;
use concierge::events::{Event, EventType, PropertyInfo, ThreadSnapshot};
use concierge::roles::scheduler::{
    next_fire_times, tick_mark_key, FollowUpOutcome, Scheduler, TickOutcome,
};
use concierge::store::nats::{Infra, EVENTS_STREAM};
use concierge::store::threads::{DirectoryError, ThreadDirectory};
use concierge::store::timers::{follow_up_key, FollowUpTimer, FollowUps};
use futures::future::BoxFuture;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn sched(name: &str, cron: &str, tz: &str) -> ScheduleConfig {
    ScheduleConfig {
        name: name.into(),
        cron: cron.parse().expect("valid cron"),
        timezone: tz.into(),
        property_ids: vec![],
    }
}

// ------------------------------------------------------------------ cron and DST

#[test]
fn spring_forward_gap_fires_at_the_transition_once() {
    // Lisbon 2026-03-29: at 01:00 UTC (01:00 WET) clocks jump to 02:00 WEST; 01:30 local
    // does not exist that day. We fire at the jump (02:00 WEST = 01:00 UTC).
    let s = sched("night", "30 1 * * *", "Europe/Lisbon");
    let got = next_fire_times(&s, utc("2026-03-27T12:00:00Z"), 4).unwrap();
    assert_eq!(
        got,
        vec![
            utc("2026-03-28T01:30:00Z"), // 01:30 WET
            utc("2026-03-29T01:00:00Z"), // gap: shifted to 02:00 WEST
            utc("2026-03-30T00:30:00Z"), // 01:30 WEST
            utc("2026-03-31T00:30:00Z"),
        ]
    );
    // Several gap times collapse into one fire.
    let s = sched("q", "*/20 1 * * *", "Europe/Lisbon");
    let got = next_fire_times(&s, utc("2026-03-29T00:00:00Z"), 2).unwrap();
    assert_eq!(
        got,
        vec![utc("2026-03-29T01:00:00Z"), utc("2026-03-30T00:00:00Z")]
    );
}

#[test]
fn fall_back_repeated_hour_fires_once_at_the_first_occurrence() {
    // Lisbon 2026-10-25: at 01:00 UTC (02:00 WEST) clocks go back to 01:00 WET; 01:30 local
    // happens at 00:30 UTC and again at 01:30 UTC. Fire once, at the first.
    let s = sched("night", "30 1 * * *", "Europe/Lisbon");
    let got = next_fire_times(&s, utc("2026-10-23T12:00:00Z"), 3).unwrap();
    assert_eq!(
        got,
        vec![
            utc("2026-10-24T00:30:00Z"),
            utc("2026-10-25T00:30:00Z"),
            utc("2026-10-26T01:30:00Z"),
        ]
    );
    // Asked from inside the repeated hour (after the first 01:30), it does not fire again.
    let got = next_fire_times(&s, utc("2026-10-25T01:10:00Z"), 1).unwrap();
    assert_eq!(got, vec![utc("2026-10-26T01:30:00Z")]);
}

#[test]
fn local_nine_am_follows_the_utc_offset() {
    let s = sched("morning", "0 9 * * *", "Europe/Lisbon");
    assert_eq!(
        next_fire_times(&s, utc("2026-01-15T10:00:00Z"), 1).unwrap(),
        vec![utc("2026-01-16T09:00:00Z")]
    );
    assert_eq!(
        next_fire_times(&s, utc("2026-07-15T10:00:00Z"), 1).unwrap(),
        vec![utc("2026-07-16T08:00:00Z")]
    );
    // Across the spring change: Saturday 09:00 WET, Sunday 09:00 WEST.
    assert_eq!(
        next_fire_times(&s, utc("2026-03-28T00:00:00Z"), 2).unwrap(),
        vec![utc("2026-03-28T09:00:00Z"), utc("2026-03-29T08:00:00Z")]
    );
}

#[test]
fn the_cron_crate_alone_skips_the_gap_and_doubles_the_overlap() {
    // Why next_fire_times does its own wall-clock mapping (cron 0.15 behaviour).
    let tz: chrono_tz::Tz = "Europe/Lisbon".parse().unwrap();
    let spec = CronSpec::parse("30 1 * * *").unwrap();
    let cron = spec.schedule();
    let spring: Vec<_> = cron
        .after(&tz.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap())
        .take(2)
        .map(|t| t.with_timezone(&Utc))
        .collect();
    assert_eq!(
        spring,
        vec![utc("2026-03-30T00:30:00Z"), utc("2026-03-31T00:30:00Z")]
    );
    let autumn: Vec<_> = cron
        .after(&tz.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap())
        .take(2)
        .map(|t| t.with_timezone(&Utc))
        .collect();
    assert_eq!(
        autumn,
        vec![utc("2026-10-25T00:30:00Z"), utc("2026-10-25T01:30:00Z")]
    );
}

#[test]
fn bad_cron_or_zone_is_an_error_naming_the_schedule() {
    // A bad cron no longer reaches the scheduler: the config refuses it when it is loaded
    // (config's tests check that the message names the schedule).
    let e = "nope".parse::<CronSpec>().unwrap_err();
    assert!(e.to_string().contains("\"nope\""), "{e}");
    let e = next_fire_times(&sched("y", "0 9 * * *", "Mars/Base"), Utc::now(), 1).unwrap_err();
    assert!(e.to_string().contains("Mars/Base"), "{e}");
}

// ------------------------------------------------------------------ test doubles

#[derive(Default)]
struct MemDirectory {
    /// property id -> threads
    threads: Mutex<BTreeMap<String, Vec<ThreadSnapshot>>>,
    fail_snapshots: AtomicU32,
    snapshot_calls: AtomicU32,
}

impl MemDirectory {
    fn with_threads(threads: &[(&str, &str)]) -> Arc<Self> {
        let d = MemDirectory::default();
        {
            let mut map = d.threads.lock().unwrap();
            for (p, t) in threads {
                map.entry(p.to_string()).or_default().push(ThreadSnapshot {
                    id: t.to_string(),
                    title: format!("thread {t}"),
                    provider: concierge::events::Provider::Airbnb,
                    ..Default::default()
                });
            }
        }
        Arc::new(d)
    }

    fn remove_thread(&self, thread: &str) {
        for ts in self.threads.lock().unwrap().values_mut() {
            ts.retain(|t| t.id != thread);
        }
    }
}

impl ThreadDirectory for MemDirectory {
    fn snapshot(
        &self,
        property_id: &str,
        thread_id: &str,
    ) -> BoxFuture<'_, Result<Option<ThreadSnapshot>, DirectoryError>> {
        self.snapshot_calls.fetch_add(1, Ordering::SeqCst);
        let failing = self
            .fail_snapshots
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        let found = self
            .threads
            .lock()
            .unwrap()
            .get(property_id)
            .and_then(|ts| ts.iter().find(|t| t.id == thread_id).cloned());
        Box::pin(async move {
            if failing {
                Err(DirectoryError::new("channex unavailable"))
            } else {
                Ok(found)
            }
        })
    }

    fn open_threads(
        &self,
        property_id: &str,
    ) -> BoxFuture<'_, Result<Vec<ThreadSnapshot>, DirectoryError>> {
        let ts = self
            .threads
            .lock()
            .unwrap()
            .get(property_id)
            .cloned()
            .unwrap_or_default();
        Box::pin(async move { Ok(ts.into_iter().filter(|t| !t.is_closed).collect()) })
    }

    fn property(&self, property_id: &str) -> PropertyInfo {
        PropertyInfo {
            id: property_id.into(),
            name: format!("Casa {property_id}"),
            timezone: "Europe/Lisbon".into(),
            vars: Default::default(),
        }
    }

    fn properties(&self) -> Vec<String> {
        self.threads.lock().unwrap().keys().cloned().collect()
    }
}

/// Every publish on the events subjects as seen by a core subscriber: JetStream
/// deduplication does not hide re-publishes from it, so it counts real double-fires.
/// (Nats-Msg-Id, event, when it was seen)
type Seen = (String, Event, DateTime<Utc>);

struct Published {
    seen: Arc<Mutex<Vec<Seen>>>,
    _task: JoinHandle<()>,
}

impl Published {
    async fn start(infra: &Infra) -> Self {
        let mut sub = infra.client.subscribe("concierge.events.>").await.unwrap();
        infra.client.flush().await.unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let id = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default();
                let ev: Event = serde_json::from_slice(&msg.payload).unwrap();
                s.lock().unwrap().push((id, ev, Utc::now()));
            }
        });
        Published { seen, _task: task }
    }

    fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn counts(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (id, _, _) in self.all() {
            *m.entry(id).or_insert(0) += 1;
        }
        m
    }
}

async fn stream_messages(infra: &Infra) -> u64 {
    let mut s = infra.js.get_stream(EVENTS_STREAM).await.unwrap();
    s.info().await.unwrap().state.messages
}

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(3), self.task)
            .await
            .expect("scheduler did not stop")
            .unwrap();
    }
}

fn start(scheduler: Scheduler) -> Running {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move { scheduler.run(rx).await.unwrap() });
    Running { stop: tx, task }
}

fn scheduler(
    infra: &Infra,
    dir: &Arc<MemDirectory>,
    holder: &str,
    schedules: Vec<ScheduleConfig>,
) -> Scheduler {
    let dir: Arc<dyn ThreadDirectory> = dir.clone();
    Scheduler::new(infra, dir, schedules, holder, Duration::from_secs(1))
        .with_retry_delay(Duration::from_millis(200))
        .with_max_idle(Duration::from_millis(100))
}

fn timer(thread: &str, name: &str, due_at: DateTime<Utc>) -> FollowUpTimer {
    let mut data = serde_json::Map::new();
    data.insert("template".into(), "nudge".into());
    FollowUpTimer {
        thread_id: thread.into(),
        booking_id: None,
        property_id: "p1".into(),
        name: name.into(),
        due_at,
        data,
        armed_at: Utc::now(),
        armed_by_event: "thread.new_message:t1:m1".into(),
        stay: None,
    }
}

fn ms(n: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(n)
}

async fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ follow-up store

#[tokio::test]
async fn follow_up_store_arm_replace_cancel_and_compare_and_delete() {
    let (_server, infra, _) = common::nats_infra().await;
    let f = FollowUps::new(infra.followups.clone());
    let due = utc("2030-01-01T10:00:00Z");
    // Ids with characters KV keys do not allow still get distinct, valid keys.
    assert_eq!(follow_up_key("t.1", "a b"), "t=2E1.a=20b");
    assert_ne!(follow_up_key("t_1", "x"), follow_up_key("t.1", "x"));
    f.arm(&timer("t.1", "a b", due)).await.unwrap();
    f.arm(&timer("t2", "nudge", due + ms(1000))).await.unwrap();
    f.arm(&timer("t2", "nudge", due + ms(5000))).await.unwrap(); // replaces
    assert_eq!(f.pending_count().await.unwrap(), 2);
    let list = f.list().await.unwrap();
    assert_eq!(list[0].thread_id, "t.1");
    assert_eq!(list[1].due_at, due + ms(5000));
    assert_eq!(
        f.get("t2", "nudge").await.unwrap().unwrap().due_at,
        due + ms(5000)
    );

    // A delete at a stale revision leaves the re-armed timer alone.
    let stored = f.list_stored().await.unwrap();
    let t2 = stored.iter().find(|s| s.timer.thread_id == "t2").unwrap();
    f.arm(&timer("t2", "nudge", due + ms(9000))).await.unwrap();
    assert!(!f.remove_if_unchanged(&t2.key, t2.revision).await.unwrap());
    assert_eq!(
        f.get("t2", "nudge").await.unwrap().unwrap().due_at,
        due + ms(9000)
    );

    assert!(f.cancel("t2", "nudge").await.unwrap());
    assert!(!f.cancel("t2", "nudge").await.unwrap());
    assert!(f.get("t2", "nudge").await.unwrap().is_none());
    assert_eq!(f.pending_count().await.unwrap(), 1);
}

// ------------------------------------------------------------------ follow-up firing

#[tokio::test]
async fn follow_up_fires_once_within_a_second_of_due_and_is_removed() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1")]);
    let published = Published::start(&infra).await;
    let s = start(scheduler(&infra, &dir, "s1", vec![]));
    let f = FollowUps::new(infra.followups.clone());
    tokio::time::sleep(Duration::from_millis(300)).await; // let it become leader
    let due = Utc::now() + ms(700);
    f.arm(&timer("t1", "nudge", due)).await.unwrap();
    wait_until("follow-up event", Duration::from_secs(3), || {
        !published.all().is_empty()
    })
    .await;
    let (id, ev, seen_at) = published.all().remove(0);
    assert_eq!(
        id,
        format!("follow_up.due:t1:nudge:{}", due.timestamp_millis())
    );
    assert_eq!(ev.event_type, EventType::FollowUpDue);
    assert!(seen_at >= due - ms(5), "fired early: {seen_at} < {due}");
    assert!(seen_at - due < ms(1000), "fired late: {}", seen_at - due);
    let fu = ev.follow_up.unwrap();
    assert_eq!(fu.name, "nudge");
    assert_eq!(fu.due_at, due);
    assert_eq!(fu.data["template"], "nudge");
    assert_eq!(ev.thread.unwrap().title, "thread t1");
    assert_eq!(ev.property.name, "Casa p1");
    tokio::time::sleep(Duration::from_millis(500)).await; // any second fire would show by now
    assert!(f.get("t1", "nudge").await.unwrap().is_none());
    assert_eq!(published.all().len(), 1);
    assert_eq!(stream_messages(&infra).await, 1);
    s.stop().await;
}

#[tokio::test]
async fn rearm_debounces_to_the_later_time_and_cancel_prevents_firing() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1"), ("p1", "t2")]);
    let published = Published::start(&infra).await;
    let s = start(scheduler(&infra, &dir, "s1", vec![]));
    let f = FollowUps::new(infra.followups.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = Utc::now();
    f.arm(&timer("t1", "nudge", now + ms(500))).await.unwrap();
    f.arm(&timer("t2", "nudge", now + ms(600))).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let later = now + ms(1500);
    f.arm(&timer("t1", "nudge", later)).await.unwrap();
    assert!(f.cancel("t2", "nudge").await.unwrap());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let all = published.all();
    assert_eq!(
        all.len(),
        1,
        "{:?}",
        all.iter().map(|a| &a.0).collect::<Vec<_>>()
    );
    assert_eq!(all[0].1.follow_up.as_ref().unwrap().due_at, later);
    assert!(all[0].2 >= later - ms(5));
    s.stop().await;
}

#[tokio::test]
async fn follow_up_due_while_every_scheduler_was_down_fires_once_on_restart() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1")]);
    let published = Published::start(&infra).await;
    let f = FollowUps::new(infra.followups.clone());
    let a = start(scheduler(&infra, &dir, "a", vec![]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.arm(&timer("t1", "nudge", Utc::now() + ms(400)))
        .await
        .unwrap();
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(published.all().is_empty());
    // Two schedulers come back: the due timer fires exactly once.
    let a = start(scheduler(&infra, &dir, "a2", vec![]));
    let b = start(scheduler(&infra, &dir, "b2", vec![]));
    wait_until("catch-up fire", Duration::from_secs(3), || {
        !published.all().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(published.all().len(), 1);
    assert_eq!(stream_messages(&infra).await, 1);
    assert_eq!(f.pending_count().await.unwrap(), 0);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn snapshot_failure_is_retried_and_a_gone_thread_drops_the_timer() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1"), ("p1", "t2")]);
    dir.fail_snapshots.store(2, Ordering::SeqCst);
    let published = Published::start(&infra).await;
    let f = FollowUps::new(infra.followups.clone());
    dir.remove_thread("t2");
    let due = Utc::now() + ms(300);
    f.arm(&timer("t1", "nudge", due)).await.unwrap();
    f.arm(&timer("t2", "nudge", due + ms(800))).await.unwrap();
    let s = start(scheduler(&infra, &dir, "s", vec![]));
    wait_until("retried fire", Duration::from_secs(4), || {
        !published.all().is_empty()
    })
    .await;
    assert!(dir.snapshot_calls.load(Ordering::SeqCst) >= 3);
    assert_eq!(published.all()[0].1.thread_id(), Some("t1"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while f.pending_count().await.unwrap() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "t2 timer not dropped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(published.all().len(), 1);
    s.stop().await;
}

#[tokio::test]
async fn fire_follow_up_keeps_a_timer_rearmed_during_firing() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1")]);
    let s = scheduler(&infra, &dir, "s", vec![]);
    let f = FollowUps::new(infra.followups.clone());
    f.arm(&timer("t1", "nudge", Utc::now())).await.unwrap();
    let stored = f.list_stored().await.unwrap().remove(0);
    let rearmed = Utc::now() + ms(60_000);
    f.arm(&timer("t1", "nudge", rearmed)).await.unwrap();
    assert_eq!(
        s.fire_follow_up(&stored).await.unwrap(),
        FollowUpOutcome::Fired { removed: false }
    );
    assert_eq!(f.get("t1", "nudge").await.unwrap().unwrap().due_at, rearmed);
}

// ------------------------------------------------------------------ schedule ticks

#[tokio::test]
async fn fire_tick_claims_a_mark_so_a_second_scheduler_does_not_refire() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1"), ("p1", "t2"), ("p2", "t3")]);
    let published = Published::start(&infra).await;
    let daily = sched("daily", "0 9 * * *", "Europe/Lisbon");
    let a = scheduler(&infra, &dir, "a", vec![daily.clone()]);
    let b = scheduler(&infra, &dir, "b", vec![daily.clone()]);
    let tick = utc("2026-07-16T08:00:00Z");
    let (ra, rb) = tokio::join!(a.fire_tick(&daily, tick), b.fire_tick(&daily, tick));
    let outcomes = [ra.unwrap(), rb.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, TickOutcome::Fired { events: 3 }))
            .count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        b.fire_tick(&daily, tick).await.unwrap(),
        TickOutcome::AlreadyFired
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let counts = published.counts();
    assert_eq!(counts.len(), 3);
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert!(counts.contains_key(&format!("schedule.tick:daily:{}:t3", tick.timestamp())));
    let ev = &published.all()[0].1;
    assert_eq!(ev.event_type, EventType::ScheduleTick);
    assert_eq!(ev.schedule.as_ref().unwrap().name, "daily");
    assert_eq!(ev.occurred_at, tick);

    // A claim left by a dead scheduler (older than the lease ttl) is taken over.
    let tick2 = tick + chrono::Duration::days(1);
    let stale =
        serde_json::json!({"holder": "dead", "state": "firing", "at": "2026-07-17T07:00:00Z"});
    infra
        .leases
        .create(tick_mark_key("daily", tick2), stale.to_string().into())
        .await
        .unwrap();
    assert_eq!(
        a.fire_tick(&daily, tick2).await.unwrap(),
        TickOutcome::Fired { events: 3 }
    );
}

#[tokio::test]
async fn two_running_schedulers_fire_each_tick_exactly_once_across_a_handover() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1"), ("p2", "t2")]);
    let published = Published::start(&infra).await;
    let every_second = sched("pulse", "* * * * * *", "UTC");
    let a = start(
        scheduler(&infra, &dir, "a", vec![every_second.clone()])
            .with_tick_catch_up(Duration::from_secs(3)),
    );
    let b = start(
        scheduler(&infra, &dir, "b", vec![every_second.clone()])
            .with_tick_catch_up(Duration::from_secs(3)),
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Hand over: whichever leads is stopped (releases); the other continues.
    a.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    b.stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let counts = published.counts();
    let dupes: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dupes.is_empty(), "double-fired: {dupes:?}");
    // Each tick fired both threads: complete sets only.
    let mut per_tick: HashMap<i64, usize> = HashMap::new();
    for (_, ev, _) in published.all() {
        *per_tick.entry(ev.occurred_at.timestamp()).or_insert(0) += 1;
    }
    assert!(per_tick.len() >= 3, "too few ticks: {per_tick:?}");
    assert!(per_tick.values().all(|n| *n == 2), "{per_tick:?}");
    assert_eq!(stream_messages(&infra).await as usize, counts.len());
}

#[tokio::test]
async fn injected_clock_drives_cron_ticks_in_the_schedule_zone() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1")]);
    let published = Published::start(&infra).await;
    let now = Arc::new(Mutex::new(utc("2026-07-16T07:59:59Z")));
    let n = now.clone();
    let clock: Clock = Arc::new(move || *n.lock().unwrap());
    let morning = sched("morning", "0 9 * * *", "Europe/Lisbon");
    let s = start(
        scheduler(&infra, &dir, "s", vec![morning])
            .with_clock(clock)
            .with_max_idle(Duration::from_millis(50)),
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(published.all().is_empty(), "fired before 09:00 Lisbon");
    *now.lock().unwrap() = utc("2026-07-16T08:00:01Z");
    wait_until("tick at 09:00 WEST", Duration::from_secs(2), || {
        !published.all().is_empty()
    })
    .await;
    let all = published.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.occurred_at, utc("2026-07-16T08:00:00Z"));
    s.stop().await;
}

/// With a manual clock the timer fires exactly when the clock reaches its due time: not a
/// second before (however long the loop runs), and at once when the clock gets there.
#[tokio::test]
async fn a_timer_fires_when_the_manual_clock_reaches_its_due_time() {
    let (_server, infra, _) = common::nats_infra().await;
    let dir = MemDirectory::with_threads(&[("p1", "t1")]);
    let published = Published::start(&infra).await;
    let due = utc("2026-07-16T10:00:00Z");
    let manual = ManualClock::starting_at(due - chrono::Duration::seconds(1));
    FollowUps::new(infra.followups.clone())
        .arm(&timer("t1", "nudge", due))
        .await
        .unwrap();
    let s = start(
        scheduler(&infra, &dir, "s", vec![])
            .with_clock(manual.clock())
            .with_max_idle(Duration::from_millis(50)),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(published.all().is_empty(), "fired before its due time");
    manual.set(due);
    wait_until(
        "the timer fired at its due time",
        Duration::from_secs(3),
        || !published.all().is_empty(),
    )
    .await;
    let all = published.all();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.event_type, EventType::FollowUpDue);
    assert_eq!(all[0].1.occurred_at, due);
    s.stop().await;
}
