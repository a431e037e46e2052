//! The scheduler role: fires durable follow-up timers and cron schedules as
//! `follow_up.due` and `schedule.tick` events.
//!
//! Owns the schedule tick marks (bucket `<prefix>_leases`, key
//! `tick.<schedule>.<unix seconds>`), the computation of cron fire times in a schedule's
//! time zone, and the leader-elected loop that fires both. The timers themselves are
//! stored by [`crate::store::timers`]. It must not decide what a follow-up or a tick
//! *means* (rules do) nor talk to Channex itself: fresh thread snapshots come through the
//! [`ThreadDirectory`] trait of [`crate::store::threads`]. Time comes from the injected
//! [`Clock`] (no `Utc::now()` here), so due times and tick claims are testable.
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
    kv::{self, CreateErrorKind, UpdateErrorKind},
};
use chrono::{DateTime, TimeZone, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::base::clock::{system_clock, Clock};
use crate::base::keys;
use crate::base::time;
use crate::config::ScheduleConfig;
use crate::events::{event_subject, ids, Event, EventType, FollowUpInfo, ScheduleInfo};
use crate::store::lease::{LeaderElection, Lease};
use crate::store::nats::{Infra, StoreError};
use crate::store::threads::{DirectoryError, ThreadDirectory};
use crate::store::timers::{FollowUpTimer, FollowUps, StoredTimer, TimerChange};

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("follow-up store: {0}")]
    Store(#[from] StoreError),
    #[error("schedule {name}: {message}")]
    Schedule { name: String, message: String },
    #[error("cannot publish event {id}: {source}")]
    Publish {
        id: String,
        #[source]
        source: crate::store::nats::NatsSource,
    },
    #[error("thread directory: {0}")]
    Directory(#[from] DirectoryError),
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

/// The armed timers the leader loop knows, by key and by fire time.
#[derive(Default)]
struct TimerQueue {
    pending: HashMap<String, Pending>,
    queue: BTreeSet<(DateTime<Utc>, String)>,
}

/// One timer of the [`TimerQueue`]: fires at `fire_at` (its due time, or a retry time).
struct Pending {
    revision: u64,
    timer: FollowUpTimer,
    fire_at: DateTime<Utc>,
}

impl TimerQueue {
    /// Apply a change of the timer bucket: a re-arm replaces, a removal drops.
    fn apply(&mut self, change: TimerChange) {
        match change {
            TimerChange::Armed(stored) => {
                let fire_at = stored.timer.due_at;
                self.insert(stored, fire_at);
            }
            TimerChange::Gone { key } => self.remove(&key),
        }
    }

    fn insert(&mut self, stored: StoredTimer, fire_at: DateTime<Utc>) {
        self.remove(&stored.key);
        self.queue.insert((fire_at, stored.key.clone()));
        self.pending.insert(
            stored.key,
            Pending {
                revision: stored.revision,
                timer: stored.timer,
                fire_at,
            },
        );
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.pending.remove(key) {
            self.queue.remove(&(old.fire_at, key.to_string()));
        }
    }

    /// The soonest timer whose fire time is at or before `now`, taken out of the queue.
    fn pop_due(&mut self, now: DateTime<Utc>) -> Option<StoredTimer> {
        loop {
            let (at, key) = self.queue.first().cloned()?;
            if at > now {
                return None;
            }
            self.queue.remove(&(at, key.clone()));
            if let Some(p) = self.pending.remove(&key) {
                return Some(StoredTimer {
                    key,
                    revision: p.revision,
                    timer: p.timer,
                });
            }
        }
    }

    fn next_fire_at(&self) -> Option<DateTime<Utc>> {
        self.queue.first().map(|(at, _)| *at)
    }

    fn len(&self) -> usize {
        self.pending.len()
    }
}

/// Per-schedule state of the leader loop.
struct TickCursor {
    next: Option<DateTime<Utc>>,
    retry_at: Option<DateTime<Utc>>,
}

/// The result of trying to claim a tick mark.
enum TickClaim {
    /// Ours at this KV revision: fire the tick.
    Won(u64),
    /// Not ours to fire (done, or in progress elsewhere).
    Not(TickOutcome),
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_default()
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
        let err = |source: crate::store::nats::NatsSource| SchedulerError::Publish {
            id: event.id.clone(),
            source,
        };
        let payload = serde_json::to_vec(event).map_err(|e| err(e.into()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, event.id.as_str());
        let subject = event_subject(&self.prefix, event.event_type, &event.property.id);
        let ack = self
            .js
            .publish_with_headers(subject, headers, payload.into())
            .await
            .map_err(|e| err(e.into()))?;
        ack.await.map_err(|e| err(e.into()))?;
        Ok(())
    }

    /// Fire one timer now: fresh thread snapshot and booking, publish, then delete if
    /// unchanged. A booking timer's event carries the booking as it is now (a cancelled
    /// one included: whether to message it is `plan()`'s decision, see
    /// [`crate::plan::stale_stay`]).
    pub async fn fire_follow_up(
        &self,
        stored: &StoredTimer,
    ) -> Result<FollowUpOutcome, SchedulerError> {
        let t = &stored.timer;
        let thread = match t.thread_id.as_str() {
            "" => None,
            id => match self.directory.snapshot(&t.property_id, id).await? {
                Some(snapshot) => Some(snapshot),
                None => return self.drop_timer(stored, "thread is gone").await,
            },
        };
        // A thread's timer armed without the booking block still fires with the
        // thread's booking, so a cancelled stay is skipped whichever scope armed it.
        let booking_id = t.booking_id.as_ref().or_else(|| {
            thread
                .as_ref()
                .and_then(|s: &crate::events::ThreadSnapshot| s.booking_id.as_ref())
        });
        let booking = match booking_id {
            None => None,
            Some(id) => match self.directory.booking(id).await? {
                Some(b) => Some(b),
                None if thread.is_none() => {
                    return self.drop_timer(stored, "booking is gone").await
                }
                None => None,
            },
        };
        let event = Event {
            id: follow_up_event_id(t),
            event_type: EventType::FollowUpDue,
            occurred_at: t.due_at,
            property: self.directory.property(&t.property_id),
            thread,
            message: None,
            inquiry: None,
            follow_up: Some(FollowUpInfo {
                name: t.name.clone(),
                due_at: t.due_at,
                data: t.data.clone(),
                armed_stay: t.stay.as_deref().cloned(),
            }),
            schedule: None,
            booking,
            booking_change: None,
        };
        self.publish(&event).await?;
        let removed = self
            .followups
            .remove_if_unchanged(&stored.key, stored.revision)
            .await?;
        tracing::info!(id = %event.id, removed, "follow-up fired");
        Ok(FollowUpOutcome::Fired { removed })
    }

    /// A timer whose thread (or threadless booking) no longer exists: dropped, no event.
    async fn drop_timer(
        &self,
        stored: &StoredTimer,
        why: &str,
    ) -> Result<FollowUpOutcome, SchedulerError> {
        let t = &stored.timer;
        tracing::info!(thread = %t.thread_id, booking = ?t.booking_id, name = %t.name, "follow-up dropped: {why}");
        self.followups
            .remove_if_unchanged(&stored.key, stored.revision)
            .await?;
        Ok(FollowUpOutcome::ThreadGone)
    }

    /// Fire one cron tick (claim its mark, publish one event per open thread, mark done).
    pub async fn fire_tick(
        &self,
        schedule: &ScheduleConfig,
        tick_at: DateTime<Utc>,
    ) -> Result<TickOutcome, SchedulerError> {
        let key = tick_mark_key(&schedule.name, tick_at);
        let now = (self.clock)();
        let revision = match self.claim_tick(&key, now).await? {
            TickClaim::Won(revision) => revision,
            TickClaim::Not(outcome) => return Ok(outcome),
        };
        let events = self.publish_tick_events(schedule, tick_at).await?;
        let done = self.tick_mark(TickState::Done, now, events)?;
        match self.leases.update(&key, done.into(), revision).await {
            Ok(_) => {}
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                tracing::warn!(schedule = %schedule.name, %tick_at, "tick mark taken over while firing; events are deduplicated");
            }
            Err(e) => return Err(StoreError::nats(format!("tick mark {key}: done"), e).into()),
        }
        tracing::info!(schedule = %schedule.name, %tick_at, events, "schedule tick fired");
        Ok(TickOutcome::Fired { events })
    }

    fn tick_mark(
        &self,
        state: TickState,
        at: DateTime<Utc>,
        events: usize,
    ) -> Result<Vec<u8>, SchedulerError> {
        let mark = TickMark {
            holder: self.holder_id.clone(),
            state,
            at,
            events,
        };
        serde_json::to_vec(&mark).map_err(|e| StoreError::codec("tick mark: encode", e).into())
    }

    /// Claim the tick mark `key` with `kv.create`; when it exists, take over our own
    /// unfinished claim or a dead scheduler's (older than the lease ttl).
    async fn claim_tick(&self, key: &str, now: DateTime<Utc>) -> Result<TickClaim, SchedulerError> {
        let firing = self.tick_mark(TickState::Firing, now, 0)?;
        match self.leases.create(key, firing.clone().into()).await {
            Ok(revision) => return Ok(TickClaim::Won(revision)),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {}
            Err(e) => return Err(StoreError::nats(format!("tick mark {key}: claim"), e).into()),
        }
        let entry = self
            .leases
            .entry(key.to_string())
            .await
            .map_err(|e| StoreError::nats(format!("tick mark {key}: read"), e))?;
        let Some(entry) = entry else {
            return Ok(TickClaim::Not(TickOutcome::InProgressElsewhere));
        };
        match serde_json::from_slice::<TickMark>(&entry.value).ok() {
            Some(m) if m.state == TickState::Done => {
                return Ok(TickClaim::Not(TickOutcome::AlreadyFired))
            }
            Some(m) if m.holder != self.holder_id && !self.claim_is_stale(m.at, now) => {
                return Ok(TickClaim::Not(TickOutcome::InProgressElsewhere))
            }
            _ => {}
        }
        match self.leases.update(key, firing.into(), entry.revision).await {
            Ok(revision) => Ok(TickClaim::Won(revision)),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                Ok(TickClaim::Not(TickOutcome::InProgressElsewhere))
            }
            Err(e) => Err(StoreError::nats(format!("tick mark {key}: take over"), e).into()),
        }
    }

    /// One `schedule.tick` event per open thread of the schedule's properties; returns
    /// how many were published.
    async fn publish_tick_events(
        &self,
        schedule: &ScheduleConfig,
        tick_at: DateTime<Utc>,
    ) -> Result<usize, SchedulerError> {
        let properties = if schedule.property_ids.is_empty() {
            self.directory.properties()
        } else {
            schedule.property_ids.clone()
        };
        let mut events = 0;
        for property_id in properties {
            let threads = self.directory.open_threads(&property_id).await?;
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
                    booking: None,
                    booking_change: None,
                };
                self.publish(&event).await?;
                events += 1;
            }
        }
        Ok(events)
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

    /// One cursor per schedule, at its next tick after the last one that fired (within
    /// the catch-up window): a schedule that never fired, or a new deployment, starts now.
    async fn tick_cursors(&self) -> Result<Vec<TickCursor>, SchedulerError> {
        let catch_up = to_chrono(self.tick_catch_up);
        let now = (self.clock)();
        let mut cursors = Vec::with_capacity(self.schedules.len());
        for s in &self.schedules {
            let start = match self.last_fired_tick(s, now - catch_up).await {
                Some(last) => last.max(now - catch_up),
                None => now,
            };
            cursors.push(TickCursor {
                next: next_fire_times(s, start, 1)?.into_iter().next(),
                retry_at: None,
            });
        }
        Ok(cursors)
    }

    /// The leader loop; returns `Ok` when leadership is lost or on shutdown.
    async fn lead(
        &self,
        leader: &mut watch::Receiver<bool>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), SchedulerError> {
        let mut watch = self.followups.watch().await?;
        let mut timers = TimerQueue::default();
        let mut cursors = self.tick_cursors().await?;
        loop {
            if !*leader.borrow() || is_shutdown(shutdown) {
                return Ok(());
            }
            let now = (self.clock)();
            self.fire_due_timers(&mut timers, now, leader).await;
            for (s, cursor) in self.schedules.iter().zip(cursors.iter_mut()) {
                self.fire_due_ticks(s, cursor, now, leader).await?;
            }
            metrics::gauge!("concierge_follow_ups_pending").set(timers.len() as f64);
            let nap = self.nap(&timers, &cursors);
            // Sleep until the next thing is due (bounded), or until something changes.
            tokio::select! {
                change = watch.next() => timers.apply(change?),
                _ = tokio::time::sleep(nap) => {}
                _ = leader.changed() => {}
                _ = wait_shutdown(shutdown) => return Ok(()),
            }
        }
    }

    /// Fire every timer due at `now` while leader; a failed one is retried after
    /// `retry_delay` (a newer arm or a cancel arriving meanwhile replaces or drops it).
    async fn fire_due_timers(
        &self,
        timers: &mut TimerQueue,
        now: DateTime<Utc>,
        leader: &watch::Receiver<bool>,
    ) {
        while *leader.borrow() {
            let Some(stored) = timers.pop_due(now) else {
                break;
            };
            if let Err(e) = self.fire_follow_up(&stored).await {
                tracing::warn!(key = %stored.key, error = %e, "follow-up firing failed; will retry");
                // Watch updates are applied between firings, so the key is vacant here.
                timers.insert(stored, now + to_chrono(self.retry_delay));
            }
        }
    }

    /// Fire the due ticks of one schedule, in order; a tick that cannot be fired is retried
    /// after `retry_delay` until it is older than the catch-up window, then given up.
    async fn fire_due_ticks(
        &self,
        s: &ScheduleConfig,
        cursor: &mut TickCursor,
        now: DateTime<Utc>,
        leader: &watch::Receiver<bool>,
    ) -> Result<(), SchedulerError> {
        let catch_up = to_chrono(self.tick_catch_up);
        while let Some(tick_at) = cursor.next {
            let due = cursor.retry_at.unwrap_or(tick_at);
            if due > now || !*leader.borrow() {
                break;
            }
            let advance = match self.fire_tick(s, tick_at).await {
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
                cursor.retry_at = Some(now + to_chrono(self.retry_delay));
                break;
            }
            cursor.retry_at = None;
            cursor.next = next_fire_times(s, tick_at, 1)?.into_iter().next();
        }
        Ok(())
    }

    /// How long the loop may sleep: until the next timer or tick, at most `max_idle`.
    fn nap(&self, timers: &TimerQueue, cursors: &[TickCursor]) -> Duration {
        let now = (self.clock)();
        let idle =
            chrono::Duration::from_std(self.max_idle).unwrap_or(chrono::Duration::seconds(1));
        let wake = cursors
            .iter()
            .filter_map(|c| c.retry_at.or(c.next))
            .chain(timers.next_fire_at())
            .fold(now + idle, DateTime::min);
        (wake - now).to_std().unwrap_or(Duration::ZERO)
    }
}

/// The id of a timer's `follow_up.due` event. A booking's timer is owned by the booking
/// (`b.<booking>`) whether or not it was armed with a thread, so the same stay message
/// (booking, name, due time) is one event id whichever event armed it.
pub fn follow_up_event_id(t: &FollowUpTimer) -> String {
    let owner = match &t.booking_id {
        Some(b) => format!("b.{b}"),
        None => t.thread_id.clone(),
    };
    ids::follow_up(&owner, &t.name, t.due_at)
}

fn is_shutdown(rx: &watch::Receiver<bool>) -> bool {
    *rx.borrow() || rx.has_changed().is_err()
}

async fn wait_shutdown(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("timestamp")
    }

    fn stored(key: &str, revision: u64, due_at: DateTime<Utc>) -> StoredTimer {
        StoredTimer {
            key: key.into(),
            revision,
            timer: FollowUpTimer {
                thread_id: "t1".into(),
                booking_id: None,
                property_id: "p1".into(),
                name: key.into(),
                due_at,
                data: Default::default(),
                armed_at: due_at,
                armed_by_event: "ev".into(),
                stay: None,
            },
        }
    }

    #[test]
    fn a_booking_timer_has_one_event_id_with_or_without_a_thread() {
        let due = at("2026-05-01T09:00:00Z");
        let mut with_thread = stored("checkin_instructions", 1, due).timer;
        with_thread.booking_id = Some("bk1".into());
        let mut threadless = with_thread.clone();
        threadless.thread_id = String::new();
        assert_eq!(
            follow_up_event_id(&with_thread),
            follow_up_event_id(&threadless)
        );
        let thread_timer = stored("checkin_instructions", 1, due).timer;
        assert_ne!(
            follow_up_event_id(&thread_timer),
            follow_up_event_id(&threadless)
        );
    }

    #[test]
    fn timers_fall_due_in_order_and_a_rearm_replaces_the_old_due_time() {
        let mut q = TimerQueue::default();
        let (t9, t10, t11) = (
            at("2026-05-01T09:00:00Z"),
            at("2026-05-01T10:00:00Z"),
            at("2026-05-01T11:00:00Z"),
        );
        q.apply(TimerChange::Armed(stored("a", 1, t10)));
        q.apply(TimerChange::Armed(stored("b", 1, t9)));
        q.apply(TimerChange::Armed(stored("a", 2, t11)));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_fire_at(), Some(t9));
        assert!(q.pop_due(t9 - chrono::Duration::seconds(1)).is_none());
        assert_eq!(q.pop_due(t9).map(|s| s.key), Some("b".into()));
        assert!(q.pop_due(t10).is_none(), "a was re-armed for 11:00");
        q.apply(TimerChange::Gone { key: "a".into() });
        assert_eq!(q.len(), 0);
        assert!(q.pop_due(t11).is_none());
    }
}
