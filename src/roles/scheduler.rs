//! Durable follow-up timers and cron schedules: the producer of `follow_up.due` and
//! `schedule.tick` events.
//!
//! Owns the follow-up timer record and its KV keys (bucket `<prefix>_followups`, key
//! `<thread>.<name>`), the schedule tick marks (bucket `<prefix>_leases`, key
//! `tick.<schedule>.<unix seconds>`), the computation of cron fire times in a schedule's
//! time zone, and the leader-elected loop that fires both. It must not decide what a
//! follow-up or a tick *means* (rules do) nor talk to Channex itself: fresh thread
//! snapshots come through the [`ThreadDirectory`] trait, implemented by the caller.
//!
//! Guarantees:
//! - Only the holder of lease `scheduler` fires (see [`crate::store::lease`]).
//! - A follow-up fires as one event with `Nats-Msg-Id = ids::follow_up(thread, name,
//!   due_at)`; the timer is deleted only after JetStream acknowledged the event and only if
//!   its KV revision is unchanged, so a timer re-armed meanwhile survives. A crash between
//!   publish and delete re-publishes on restart and JetStream deduplicates it.
//! - Timers are learnt from a KV watch that first replays every key's last value, so a timer
//!   that fell due while every scheduler was down fires once on the next start.
//! - A cron tick is claimed with `kv.create` of its tick mark before its events go out and
//!   marked done after, so a leader hand-over never fires a tick twice; a claim left by a
//!   dead leader (older than the lease ttl) is taken over, and the re-published events are
//!   deduplicated by JetStream (same ids).
//!
//! Cron time zones and DST (checked against cron 0.15, whose own iterator *skips* local
//! times that do not exist and yields ambiguous ones *twice*): [`next_fire_times`] walks the
//! cron expression over wall-clock times and maps each to an instant itself:
//! - a wall time in a spring-forward gap fires at the transition (e.g. Lisbon "30 1 * * *"
//!   on 2026-03-29 fires at 02:00 WEST = 01:00 UTC), like cron(8), once;
//! - a wall time that happens twice (fall back) fires once, at its first occurrence.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{
    self,
    kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
};
use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::base::clock::{system_clock, Clock};
use crate::base::keys;
use crate::base::time;
use crate::config::ScheduleConfig;
use crate::events::{
    event_subject, ids, Event, EventType, FollowUpInfo, PropertyInfo, ScheduleInfo, ThreadSnapshot,
};
use crate::store::lease::{LeaderElection, Lease};
use crate::store::nats::Infra;

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("follow-up store: {0}")]
    Store(String),
    #[error("schedule {name}: {message}")]
    Schedule { name: String, message: String },
    #[error("cannot publish event {id}: {message}")]
    Publish { id: String, message: String },
    #[error("thread directory: {0}")]
    Directory(String),
}

fn store_err(e: impl std::fmt::Display) -> SchedulerError {
    SchedulerError::Store(e.to_string())
}

// ---------------------------------------------------------------------------------------
// Follow-up timers
// ---------------------------------------------------------------------------------------

/// A durable timer armed by a rule's `follow_up(name, when, data)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FollowUpTimer {
    pub thread_id: String,
    pub property_id: String,
    pub name: String,
    pub due_at: DateTime<Utc>,
    #[serde(default)]
    pub data: Map<String, Value>,
    pub armed_at: DateTime<Utc>,
    /// Id of the event whose rule armed it (for the audit trail).
    pub armed_by_event: String,
}

/// KV key of a timer: `<thread>.<name>`, each a [`keys::encode`] token.
pub fn follow_up_key(thread_id: &str, name: &str) -> String {
    format!("{}.{}", keys::encode(thread_id), keys::encode(name))
}

/// A timer as stored, with the revision that compare-and-set operations need.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTimer {
    pub key: String,
    pub revision: u64,
    pub timer: FollowUpTimer,
}

/// The follow-up timer store (one KV bucket).
#[derive(Clone)]
pub struct FollowUps {
    store: kv::Store,
}

impl FollowUps {
    pub fn new(store: kv::Store) -> Self {
        FollowUps { store }
    }

    /// Arm (or re-arm) a timer. Re-arming the same thread+name replaces it (debounce).
    pub async fn arm(&self, t: &FollowUpTimer) -> Result<(), SchedulerError> {
        let value = serde_json::to_vec(t).map_err(store_err)?;
        self.store
            .put(follow_up_key(&t.thread_id, &t.name), value.into())
            .await
            .map_err(store_err)?;
        Ok(())
    }

    /// Cancel a timer; `Ok(true)` when one was armed.
    pub async fn cancel(&self, thread_id: &str, name: &str) -> Result<bool, SchedulerError> {
        let key = follow_up_key(thread_id, name);
        match self.store.entry(key.clone()).await.map_err(store_err)? {
            Some(e) if e.operation == Operation::Put => {
                self.store.delete(&key).await.map_err(store_err)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    pub async fn get(
        &self,
        thread_id: &str,
        name: &str,
    ) -> Result<Option<FollowUpTimer>, SchedulerError> {
        Ok(self
            .get_stored(&follow_up_key(thread_id, name))
            .await?
            .map(|s| s.timer))
    }

    async fn get_stored(&self, key: &str) -> Result<Option<StoredTimer>, SchedulerError> {
        match self.store.entry(key).await.map_err(store_err)? {
            Some(e) if e.operation == Operation::Put => {
                Ok(decode_timer(&e.key, e.revision, &e.value))
            }
            _ => Ok(None),
        }
    }

    /// Every armed timer with its revision, soonest first.
    pub async fn list_stored(&self) -> Result<Vec<StoredTimer>, SchedulerError> {
        let keys: Vec<String> = self
            .store
            .keys()
            .await
            .map_err(store_err)?
            .try_collect()
            .await
            .map_err(store_err)?;
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(t) = self.get_stored(&key).await? {
                out.push(t);
            }
        }
        out.sort_by(|a, b| (a.timer.due_at, &a.key).cmp(&(b.timer.due_at, &b.key)));
        Ok(out)
    }

    /// Every armed timer, soonest first (for `concierge follow-ups list`).
    pub async fn list(&self) -> Result<Vec<FollowUpTimer>, SchedulerError> {
        Ok(self
            .list_stored()
            .await?
            .into_iter()
            .map(|s| s.timer)
            .collect())
    }

    pub async fn pending_count(&self) -> Result<usize, SchedulerError> {
        Ok(self.list_stored().await?.len())
    }

    /// Delete `key` only if it is still at `revision`. `Ok(false)`: it changed (re-armed or
    /// cancelled) and was left alone.
    pub async fn remove_if_unchanged(
        &self,
        key: &str,
        revision: u64,
    ) -> Result<bool, SchedulerError> {
        match self.store.delete_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(store_err(e)),
        }
    }
}

fn decode_timer(key: &str, revision: u64, value: &[u8]) -> Option<StoredTimer> {
    match serde_json::from_slice::<FollowUpTimer>(value) {
        Ok(timer) => Some(StoredTimer {
            key: key.to_string(),
            revision,
            timer,
        }),
        Err(e) => {
            tracing::warn!(key, error = %e, "unreadable follow-up timer ignored");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------
// Thread directory (implemented by the caller over Channex)
// ---------------------------------------------------------------------------------------

/// Where the scheduler gets fresh thread snapshots and property blocks.
pub trait ThreadDirectory: Send + Sync + 'static {
    /// Fresh snapshot of one thread (None if gone).
    fn snapshot(
        &self,
        property_id: &str,
        thread_id: &str,
    ) -> BoxFuture<'_, Result<Option<ThreadSnapshot>, String>>;
    /// Open threads of a property (for schedule ticks).
    fn open_threads(&self, property_id: &str)
        -> BoxFuture<'_, Result<Vec<ThreadSnapshot>, String>>;
    /// The property block of events.
    fn property(&self, property_id: &str) -> PropertyInfo;
    /// Every property known (ticked by schedules with no `property_ids`).
    fn properties(&self) -> Vec<String>;
}

// ---------------------------------------------------------------------------------------
// Cron
// ---------------------------------------------------------------------------------------

/// The next `n` fire instants of `schedule` strictly after `after`, computed in the
/// schedule's time zone (see the module doc for DST behaviour).
pub fn next_fire_times(
    schedule: &ScheduleConfig,
    after: DateTime<Utc>,
    n: usize,
) -> Result<Vec<DateTime<Utc>>, SchedulerError> {
    let err = |message: String| SchedulerError::Schedule {
        name: schedule.name.clone(),
        message,
    };
    let tz: chrono_tz::Tz = schedule
        .timezone
        .parse()
        .map_err(|_| err(format!("unknown time zone {:?}", schedule.timezone)))?;
    // Walk wall-clock times (expressed in UTC so the cron crate applies no zone rules).
    // A wall time `w` whose instant is after `after` is itself after `after`'s wall time
    // (a repeated wall time maps to its first occurrence, a gap time to the transition),
    // so the walk starts there (one second early, as `cron.after` is exclusive).
    let wall_after = after.with_timezone(&tz).naive_local();
    let start = Utc.from_utc_datetime(&wall_after) - chrono::Duration::seconds(1);
    let mut out: Vec<DateTime<Utc>> = Vec::with_capacity(n);
    for wall in schedule
        .cron
        .schedule()
        .after(&start)
        .take(n.saturating_mul(4).saturating_add(1_000))
    {
        if out.len() >= n {
            break;
        }
        let instant = time::resolve_local(tz, wall.naive_utc());
        if instant > after && out.last().is_none_or(|last| instant > *last) {
            out.push(instant);
        }
    }
    Ok(out)
}

/// KV key of a tick mark: `tick.<schedule>.<unix seconds>` (in the leases bucket).
pub fn tick_mark_key(schedule: &str, tick_at: DateTime<Utc>) -> String {
    format!("tick.{}.{}", keys::encode(schedule), tick_at.timestamp())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TickState {
    Firing,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TickMark {
    holder: String,
    state: TickState,
    at: DateTime<Utc>,
    #[serde(default)]
    events: usize,
}

/// What [`Scheduler::fire_tick`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// This call published the tick's events (count).
    Fired { events: usize },
    /// The tick was already done (by us or another scheduler).
    AlreadyFired,
    /// Another live scheduler is firing it right now; look again later.
    InProgressElsewhere,
}

/// What [`Scheduler::fire_follow_up`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowUpOutcome {
    /// Published; `removed` is false when the timer was re-armed meanwhile (kept).
    Fired { removed: bool },
    /// The thread no longer exists: the timer was dropped, no event.
    ThreadGone,
}

// ---------------------------------------------------------------------------------------
// The scheduler role
// ---------------------------------------------------------------------------------------

/// The `scheduler` role. Build with [`Scheduler::new`], tune with the `with_*` methods,
/// then [`Scheduler::run`].
pub struct Scheduler {
    js: jetstream::Context,
    prefix: String,
    followups: FollowUps,
    leases: kv::Store,
    directory: Arc<dyn ThreadDirectory>,
    schedules: Vec<ScheduleConfig>,
    clock: Clock,
    holder_id: String,
    lease_ttl: Duration,
    retry_delay: Duration,
    max_idle: Duration,
    tick_catch_up: Duration,
}

/// Per-timer state of the leader loop.
struct Pending {
    revision: u64,
    timer: FollowUpTimer,
    fire_at: DateTime<Utc>,
}

/// Per-schedule state of the leader loop.
struct TickCursor {
    next: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
}

impl Scheduler {
    pub fn new(
        infra: &Infra,
        directory: Arc<dyn ThreadDirectory>,
        schedules: Vec<ScheduleConfig>,
        holder_id: impl Into<String>,
        lease_ttl: Duration,
    ) -> Self {
        Scheduler {
            js: infra.js.clone(),
            prefix: infra.names.prefix.clone(),
            followups: FollowUps::new(infra.followups.clone()),
            leases: infra.leases.clone(),
            directory,
            schedules,
            clock: system_clock(),
            holder_id: holder_id.into(),
            lease_ttl,
            retry_delay: Duration::from_secs(5),
            max_idle: Duration::from_secs(1),
            tick_catch_up: Duration::from_secs(300),
        }
    }

    /// Wall clock used for cron ticks, due checks and lease expiry.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Delay before retrying a firing that failed (directory or NATS error). Default 5s.
    pub fn with_retry_delay(mut self, d: Duration) -> Self {
        self.retry_delay = d;
        self
    }

    /// Longest sleep of the loop without looking at the clock (matters for injected
    /// clocks). Default 1s.
    pub fn with_max_idle(mut self, d: Duration) -> Self {
        self.max_idle = d;
        self
    }

    /// How far back a new leader fires ticks that nobody marked done (covers a hand-over
    /// gap or a short outage; older missed ticks are skipped). Default 5 min.
    pub fn with_tick_catch_up(mut self, d: Duration) -> Self {
        self.tick_catch_up = d;
        self
    }

    pub fn followups(&self) -> &FollowUps {
        &self.followups
    }

    async fn publish(&self, event: &Event) -> Result<(), SchedulerError> {
        let err = |e: &dyn std::fmt::Display| SchedulerError::Publish {
            id: event.id.clone(),
            message: e.to_string(),
        };
        let payload = serde_json::to_vec(event).map_err(|e| err(&e))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
        let subject = event_subject(&self.prefix, event.event_type, &event.property.id);
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| err(&e))?;
        ack.await.map_err(|e| err(&e))?;
        Ok(())
    }

    /// Fire one timer now: fresh snapshot, publish, then delete if unchanged.
    pub async fn fire_follow_up(
        &self,
        stored: &StoredTimer,
    ) -> Result<FollowUpOutcome, SchedulerError> {
        let t = &stored.timer;
        let snapshot = self
            .directory
            .snapshot(&t.property_id, &t.thread_id)
            .await
            .map_err(SchedulerError::Directory)?;
        let Some(thread) = snapshot else {
            tracing::info!(thread = %t.thread_id, name = %t.name, "follow-up dropped: thread is gone");
            self.followups
                .remove_if_unchanged(&stored.key, stored.revision)
                .await?;
            return Ok(FollowUpOutcome::ThreadGone);
        };
        let event = Event {
            id: ids::follow_up(&t.thread_id, &t.name, t.due_at),
            event_type: EventType::FollowUpDue,
            occurred_at: t.due_at,
            property: self.directory.property(&t.property_id),
            thread: Some(thread),
            message: None,
            inquiry: None,
            follow_up: Some(FollowUpInfo {
                name: t.name.clone(),
                due_at: t.due_at,
                data: t.data.clone(),
            }),
            schedule: None,
        };
        self.publish(&event).await?;
        let removed = self
            .followups
            .remove_if_unchanged(&stored.key, stored.revision)
            .await?;
        tracing::info!(id = %event.id, removed, "follow-up fired");
        Ok(FollowUpOutcome::Fired { removed })
    }

    /// Fire one cron tick (claim its mark, publish one event per open thread, mark done).
    pub async fn fire_tick(
        &self,
        schedule: &ScheduleConfig,
        tick_at: DateTime<Utc>,
    ) -> Result<TickOutcome, SchedulerError> {
        let key = tick_mark_key(&schedule.name, tick_at);
        let now = (self.clock)();
        let mark = |state, events| {
            serde_json::to_vec(&TickMark {
                holder: self.holder_id.clone(),
                state,
                at: now,
                events,
            })
            .map_err(store_err)
        };
        let revision = match self
            .leases
            .create(&key, mark(TickState::Firing, 0)?.into())
            .await
        {
            Ok(rev) => rev,
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
                let Some(entry) = self.leases.entry(key.clone()).await.map_err(store_err)? else {
                    return Ok(TickOutcome::InProgressElsewhere);
                };
                let existing = serde_json::from_slice::<TickMark>(&entry.value).ok();
                match existing {
                    Some(m) if m.state == TickState::Done => return Ok(TickOutcome::AlreadyFired),
                    Some(m) if m.holder != self.holder_id && !self.claim_is_stale(m.at, now) => {
                        return Ok(TickOutcome::InProgressElsewhere)
                    }
                    _ => {}
                }
                // Our own unfinished claim, or a dead scheduler's: take it over.
                match self
                    .leases
                    .update(&key, mark(TickState::Firing, 0)?.into(), entry.revision)
                    .await
                {
                    Ok(rev) => rev,
                    Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                        return Ok(TickOutcome::InProgressElsewhere)
                    }
                    Err(e) => return Err(store_err(e)),
                }
            }
            Err(e) => return Err(store_err(e)),
        };
        let properties = if schedule.property_ids.is_empty() {
            self.directory.properties()
        } else {
            schedule.property_ids.clone()
        };
        let mut events = 0;
        for property_id in properties {
            let threads = self
                .directory
                .open_threads(&property_id)
                .await
                .map_err(SchedulerError::Directory)?;
            let property = self.directory.property(&property_id);
            for thread in threads {
                let event = Event {
                    id: ids::schedule_tick(&schedule.name, tick_at, &thread.id),
                    event_type: EventType::ScheduleTick,
                    occurred_at: tick_at,
                    property: property.clone(),
                    thread: Some(thread),
                    message: None,
                    inquiry: None,
                    follow_up: None,
                    schedule: Some(ScheduleInfo {
                        name: schedule.name.clone(),
                    }),
                };
                self.publish(&event).await?;
                events += 1;
            }
        }
        match self
            .leases
            .update(&key, mark(TickState::Done, events)?.into(), revision)
            .await
        {
            Ok(_) => {}
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(schedule = %schedule.name, %tick_at, "tick mark taken over while firing; events are deduplicated");
            }
            Err(e) => return Err(store_err(e)),
        }
        tracing::info!(schedule = %schedule.name, %tick_at, events, "schedule tick fired");
        Ok(TickOutcome::Fired { events })
    }

    fn claim_is_stale(&self, claimed_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let ttl =
            chrono::Duration::from_std(self.lease_ttl).unwrap_or(chrono::Duration::seconds(5));
        now - claimed_at > ttl
    }

    /// Run until `shutdown` turns true (or its sender is dropped): campaign for the lease
    /// and, while leader, fire due follow-ups and ticks.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), SchedulerError> {
        let lease = Lease::new(
            self.leases.clone(),
            "scheduler",
            self.holder_id.clone(),
            self.lease_ttl,
        );
        let election = LeaderElection::spawn(lease, self.clock.clone(), shutdown.clone());
        let mut leader = election.subscribe();
        loop {
            tokio::select! {
                r = leader.wait_for(|l| *l) => if r.is_err() { break },
                _ = wait_shutdown(&mut shutdown) => break,
            }
            tracing::info!(holder = %self.holder_id, "scheduler leading");
            if let Err(e) = self.lead(&mut leader, &mut shutdown).await {
                tracing::warn!(error = %e, "scheduler loop failed; restarting it");
                tokio::select! {
                    _ = tokio::time::sleep(self.retry_delay) => {},
                    _ = wait_shutdown(&mut shutdown) => break,
                }
            }
            if is_shutdown(&shutdown) {
                break;
            }
        }
        election.stop().await;
        Ok(())
    }

    /// The newest tick mark of `schedule`; marks older than `forget_before` are deleted on
    /// the way (they only guard against double fires within the catch-up window).
    async fn last_fired_tick(
        &self,
        schedule: &ScheduleConfig,
        forget_before: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let prefix = format!("tick.{}.", keys::encode(&schedule.name));
        let mut keys = self.leases.keys().await.ok()?;
        let mut newest: Option<DateTime<Utc>> = None;
        let mut stale = Vec::new();
        while let Some(Ok(key)) = keys.next().await {
            let Some(at) = key
                .strip_prefix(&prefix)
                .and_then(|unix| unix.parse::<i64>().ok())
                .and_then(|unix| DateTime::<Utc>::from_timestamp(unix, 0))
            else {
                continue;
            };
            newest = Some(newest.map_or(at, |n| n.max(at)));
            if at < forget_before - chrono::Duration::hours(1) {
                stale.push(key);
            }
        }
        for key in stale {
            let _ = self.leases.purge(&key).await;
        }
        newest
    }

    /// The leader loop; returns `Ok` when leadership is lost or on shutdown.
    async fn lead(
        &self,
        leader: &mut watch::Receiver<bool>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SchedulerError> {
        // Replays every key's last value, then follows changes: the full rescan on
        // becoming leader and prompt arms/cancels from one consumer.
        let mut watch = self
            .followups
            .store
            .watch_with_history(">")
            .await
            .map_err(store_err)?;
        let mut pending: HashMap<String, Pending> = HashMap::new();
        let mut queue: BTreeSet<(DateTime<Utc>, String)> = BTreeSet::new();
        let catch_up =
            chrono::Duration::from_std(self.tick_catch_up).unwrap_or(chrono::Duration::zero());
        let now = (self.clock)();
        let mut cursors = Vec::with_capacity(self.schedules.len());
        for s in &self.schedules {
            // Catch up only on ticks missed since the last one that fired (within the
            // window): a schedule that never fired, or a new deployment, starts from now.
            let start = match self.last_fired_tick(s, now - catch_up).await {
                Some(last) => last.max(now - catch_up),
                None => now,
            };
            cursors.push(TickCursor {
                next: next_fire_times(s, start, 1)?.into_iter().next(),
                retry_at: None,
            });
        }
        loop {
            if !*leader.borrow() || is_shutdown(shutdown) {
                return Ok(());
            }
            let now = (self.clock)();

            // Due follow-ups.
            while let Some((at, key)) = queue.first().cloned() {
                if at > now || !*leader.borrow() {
                    break;
                }
                queue.remove(&(at, key.clone()));
                let Some(p) = pending.remove(&key) else {
                    continue;
                };
                let stored = StoredTimer {
                    key: key.clone(),
                    revision: p.revision,
                    timer: p.timer,
                };
                if let Err(e) = self.fire_follow_up(&stored).await {
                    tracing::warn!(key = %key, error = %e, "follow-up firing failed; will retry");
                    let fire_at =
                        now + chrono::Duration::from_std(self.retry_delay).unwrap_or_default();
                    // Watch updates are applied between firings, so the key is vacant here;
                    // a newer arm or a cancel arriving later replaces or drops this retry.
                    queue.insert((fire_at, key.clone()));
                    pending.insert(
                        key,
                        Pending {
                            revision: stored.revision,
                            timer: stored.timer,
                            fire_at,
                        },
                    );
                }
            }

            // Due ticks.
            for (s, cursor) in self.schedules.iter().zip(cursors.iter_mut()) {
                while let Some(tick_at) = cursor.next {
                    let due = cursor.retry_at.unwrap_or(tick_at);
                    if due > now || !*leader.borrow() {
                        break;
                    }
                    let outcome = self.fire_tick(s, tick_at).await;
                    let advance = match outcome {
                        Ok(TickOutcome::Fired { .. }) | Ok(TickOutcome::AlreadyFired) => true,
                        Ok(TickOutcome::InProgressElsewhere) => false,
                        Err(e) => {
                            tracing::warn!(schedule = %s.name, %tick_at, error = %e, "tick failed; will retry");
                            false
                        }
                    };
                    if !advance && now - tick_at > catch_up {
                        tracing::error!(schedule = %s.name, %tick_at, "tick given up: could not fire it within the catch-up window");
                    } else if !advance {
                        cursor.retry_at = Some(
                            now + chrono::Duration::from_std(self.retry_delay).unwrap_or_default(),
                        );
                        break;
                    }
                    cursor.retry_at = None;
                    cursor.next = next_fire_times(s, tick_at, 1)?.into_iter().next();
                }
            }

            metrics::gauge!("concierge_follow_ups_pending").set(pending.len() as f64);
            // Sleep until the next thing is due (bounded), or until something changes.
            let now = (self.clock)();
            let mut wake = now
                + chrono::Duration::from_std(self.max_idle).unwrap_or(chrono::Duration::seconds(1));
            if let Some((at, _)) = queue.first() {
                wake = wake.min(*at);
            }
            for c in &cursors {
                if let Some(t) = c.retry_at.or(c.next) {
                    wake = wake.min(t);
                }
            }
            let nap = (wake - now).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                entry = watch.next() => {
                    let entry = match entry {
                        Some(Ok(entry)) => entry,
                        Some(Err(e)) => return Err(store_err(e)),
                        None => return Err(SchedulerError::Store("follow-up watch ended".into())),
                    };
                    if let Some(old) = pending.remove(&entry.key) {
                        queue.remove(&(old.fire_at, entry.key.clone()));
                    }
                    if entry.operation == Operation::Put {
                        if let Some(st) = decode_timer(&entry.key, entry.revision, &entry.value) {
                            let fire_at = st.timer.due_at;
                            queue.insert((fire_at, entry.key.clone()));
                            pending.insert(entry.key, Pending { revision: st.revision, timer: st.timer, fire_at });
                        }
                    }
                }
                _ = tokio::time::sleep(nap) => {}
                _ = leader.changed() => {}
                _ = wait_shutdown(shutdown) => return Ok(()),
            }
        }
    }
}

fn is_shutdown(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow() || rx.has_changed().is_err()
}

async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
