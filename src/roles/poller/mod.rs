//! The poller role: turns what changed at Channex into events on `CONCIERGE_EVENTS`.
//!
//! Owns the poll cycle (list threads, read the messages of changed ones, publish, store),
//! the once-only report of malformed Channex items (log, metric, `malformed_item` audit
//! record; the rest of the page is processed), and the guarantee of exactly one event per
//! message:
//! - every event id is deterministic and sent as `Nats-Msg-Id`, and a thread's snapshot is
//!   written only after all its events were acknowledged by JetStream, so a crash between
//!   the two re-publishes the same ids, which the stream's duplicate window drops;
//! - the snapshot remembers the newest message seen (time and the ids at that time), so a
//!   restart emits exactly the messages that arrived while it was down.
//!
//! Bookings (with `poller.bookings = true`): see [`bookings`] for the `booking` block of
//! thread events, `booking.changed` and their cost.
//!
//! Parts: [`detect`] decides, purely, which events a changed thread yields and what to
//! store; [`nudge`] gates webhook nudges; the snapshots themselves live in
//! [`crate::store::threads`]. Time comes from the injected [`Clock`].
//!
//! Economy: a cycle costs a number of Channex calls that does not grow with the number of
//! configured properties. Each interval cycle is one listing of `GET /message_threads`
//! across every property the key sees ([`Poller::poll_configured`]: no
//! `filter[property_id]`, `order[updated_at]=desc`, 100 a page), keeping only threads of
//! `channex.property_ids` and stopping at the first thread known to be unchanged since the
//! previous complete listing, less [`detect::SCAN_LOOKBACK`] (the [`ScanMark`] in KV, so
//! this survives restarts; threads that failed are kept in it and retried on their own,
//! then audited and given up after [`detect::RETRY_ATTEMPTS`] cycles); when
//! Channex ignores the order, or no mark covers the same properties (first run, a property
//! added or removed), the whole listing is read (ceil(threads/100) calls). Then one
//! messages call per changed thread (more only when more than 100 messages arrived), none
//! for a thread whose one new message is concierge's own reply: the executor records the
//! reply in the ledger ([`Ledger::last_reply`]) and its event is built from that record. A
//! property not baselined yet is first polled alone (`filter[property_id]`, once in its
//! life), as is the property of a webhook nudge ([`Poller::poll_once`]). With
//! `property_ids = []` the cycle is the same marked listing of scope `*` (every thread
//! kept). A one-property listing drops rows of other properties (Channex ignoring
//! `filter[property_id]`) and stops at the first unchanged thread.
//!
//! Decisions that are not in the contract:
//! - thread snapshots in events describe the thread as of the poll (freshest knowledge:
//!   if staff answered in the same cycle, the guest message's event already says
//!   `awaiting_reply: false`);
//! - the first cycle ever for a property is a baseline (nothing emitted) unless
//!   `--backfill` asks for recent messages; threads that appear later are new, and all
//!   their messages are emitted.
//!
//! It must not evaluate rules or write to Channex. Only the lease holder polls.

pub mod bookings;
pub mod detect;
pub mod nudge;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch};

use crate::base::clock::{system_clock, Clock};
use crate::channex::{
    ChannexClient, ChannexError, ItemKind, Message, OrderDirection, SkippedItem, Thread,
    ThreadQuery,
};
use crate::config::Config;
use crate::events::Event;
use crate::store::audit::{AuditLog, AuditRecord};
use crate::store::lease::{LeaderElection, Lease};
use crate::store::ledger::Ledger;
use crate::store::nats::{NatsSource, StoreError};
use crate::store::threads::{
    PendingThread, ScanMark, ThreadSnapshots, ThreadState, ALL_PROPERTIES,
};

pub use detect::{inquiry_info, snapshot_of};
pub use nudge::{nudge_subject, publish_nudges, NudgeGate, NUDGE_MIN_GAP};

#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    #[error("Channex: {0}")]
    Channex(#[from] ChannexError),
    #[error("snapshot store: {0}")]
    Store(#[from] StoreError),
    #[error("publishing event {id}: {source}")]
    Publish {
        id: String,
        #[source]
        source: NatsSource,
    },
}

/// Counters of one cycle (logged, and returned for tests and benchmarks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleStats {
    pub threads_seen: usize,
    pub threads_changed: usize,
    pub events_emitted: usize,
    pub api_calls: u64,
    pub threads_failed: usize,
    /// Malformed Channex items (threads or messages) reported for the first time.
    pub malformed_items: usize,
    pub baseline: bool,
}

pub struct Poller {
    channex: ChannexClient,
    js: jetstream::Context,
    client: async_nats::Client,
    snapshots: ThreadSnapshots,
    leases_kv: async_nats::jetstream::kv::Store,
    config: Arc<Config>,
    backfill: Option<Duration>,
    holder_id: String,
    clock: Clock,
    /// In-memory copy of the snapshots; reloaded from KV on becoming leader.
    states: HashMap<String, ThreadState>,
    baselined: HashSet<String>,
    /// `channex.property_ids`, for the listing across all of them.
    configured: HashSet<String>,
    /// The last complete listing across the configured properties (see [`ScanMark`]).
    scan_mark: Option<ScanMark>,
    audit: AuditLog,
    /// Read only: the last reply the executor sent to a thread ([`Ledger::last_reply`]).
    ledger: Ledger,
    /// `<kind>:<fingerprint>` of the malformed items already reported, so a broken thread
    /// that is listed every cycle is logged, counted and audited once.
    malformed_seen: HashSet<String>,
    /// Whether Channex ignoring `filter[property_id]` was reported (once).
    warned_foreign_rows: bool,
    /// The booking cache (read and written only with `poller.bookings`).
    bookings: crate::store::bookings::BookingCache,
}

/// What woke the run loop up.
enum Wake {
    /// Poll: one property (a nudge), or every configured one (`None`).
    Poll(Option<String>),
    /// Nothing to poll (a dropped or deferred nudge, a leadership change is handled).
    Idle,
    /// Shut down.
    Stop,
}

/// The sources that wake the run loop: the interval, webhook nudges (local and over
/// NATS, through the [`NudgeGate`]), leadership changes and shutdown.
struct Wakeups {
    interval: tokio::time::Interval,
    gate: NudgeGate,
    local: mpsc::Receiver<Option<String>>,
    local_open: bool,
    remote: Option<async_nats::Subscriber>,
}

impl Wakeups {
    async fn next(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        leader: &mut watch::Receiver<bool>,
    ) -> Wake {
        tokio::select! {
            _ = shutdown.changed() => Wake::Stop,
            _ = self.interval.tick() => Wake::Poll(None),
            _ = self.gate.next_due() => self.admitted(None),
            n = self.local.recv(), if self.local_open => match n {
                Some(p) => self.admitted(Some(p)),
                // Nobody can nudge locally any more: stop listening, keep polling.
                None => { self.local_open = false; Wake::Idle }
            },
            Some(m) = nudge::next_nudge(&mut self.remote) => {
                let p = String::from_utf8_lossy(&m.payload).trim().to_string();
                self.admitted(Some((!p.is_empty()).then_some(p)))
            }
            changed = leader.changed() => match changed {
                Err(_) => Wake::Stop, // the election ended (shutdown)
                Ok(()) => Wake::Poll(None),
            },
        }
    }

    /// A nudge (`Some`) through the gate, or the deferred nudge that fell due (`None`).
    fn admitted(&mut self, nudge: Option<Option<String>>) -> Wake {
        let admitted = match nudge {
            Some(property) => self.gate.admit(property, Instant::now()),
            None => self.gate.take_due(Instant::now()),
        };
        admitted.map_or(Wake::Idle, Wake::Poll)
    }
}

impl Poller {
    pub fn new(
        channex: ChannexClient,
        infra: &crate::store::nats::Infra,
        config: Arc<Config>,
        backfill: Option<Duration>,
    ) -> Self {
        let audit = AuditLog::new(infra.js.clone(), &config.nats.prefix);
        let configured = config.channex.property_ids.iter().cloned().collect();
        Poller {
            channex,
            js: infra.js.clone(),
            client: infra.client.clone(),
            snapshots: ThreadSnapshots::new(infra.threads.clone()),
            leases_kv: infra.leases.clone(),
            config,
            backfill,
            holder_id: format!("poller-{}", uuid::Uuid::new_v4()),
            clock: system_clock(),
            states: HashMap::new(),
            baselined: HashSet::new(),
            configured,
            scan_mark: None,
            audit,
            ledger: Ledger::new(infra.ledger.clone(), "poller", Duration::ZERO),
            malformed_seen: HashSet::new(),
            warned_foreign_rows: false,
            bookings: crate::store::bookings::BookingCache::new(infra.threads.clone()),
        }
    }

    /// Wall clock for baseline marks, the backfill window and lease expiry.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn holder_id(&self) -> &str {
        &self.holder_id
    }

    /// Poll every `poll_interval` (or at once on a webhook nudge) while holding the lease.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        nudges: mpsc::Receiver<Option<String>>,
    ) -> Result<(), PollerError> {
        let lease = Lease::new(
            self.leases_kv.clone(),
            "poller",
            self.holder_id.clone(),
            self.config.poller.lease_ttl,
        );
        let election = LeaderElection::spawn(lease, self.clock.clone(), shutdown.clone());
        let mut leader = election.subscribe();
        let mut wakeups = self.wakeups(nudges).await;
        let mut was_leader = false;
        loop {
            // An admitted nudge names one property (or none: everything, like a tick).
            let only = match wakeups.next(&mut shutdown, &mut leader).await {
                Wake::Stop => break,
                Wake::Idle => continue,
                Wake::Poll(only) => only,
            };
            let is_leader = *leader.borrow();
            if !self.ready_to_lead(is_leader, &mut was_leader).await {
                continue;
            }
            self.sweep(only, &mut wakeups.gate, &shutdown, &leader)
                .await;
        }
        election.stop().await;
        Ok(())
    }

    /// Webhook nudges may land on any process (behind a load balancer, on a standby):
    /// they are published on a subject every poller listens to, and the leader acts.
    async fn wakeups(&self, local: mpsc::Receiver<Option<String>>) -> Wakeups {
        let subject = nudge_subject(&self.config.nats.prefix);
        let remote = match self.client.subscribe(subject).await {
            Ok(sub) => Some(sub),
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to webhook nudges; polling on the interval only");
                None
            }
        };
        let mut interval = tokio::time::interval(self.config.channex.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Wakeups {
            interval,
            gate: NudgeGate::new(&self.config),
            local,
            local_open: true,
            remote,
        }
    }

    /// Whether this poller may poll now: it leads, and its snapshots are loaded (loaded
    /// once on becoming leader).
    async fn ready_to_lead(&mut self, is_leader: bool, was_leader: &mut bool) -> bool {
        if !is_leader {
            if *was_leader {
                tracing::info!(holder = %self.holder_id, "poller lost the lease; standing by");
            }
            *was_leader = false;
            return false;
        }
        if !*was_leader {
            tracing::info!(holder = %self.holder_id, "poller is leader");
            // A store hiccup (e.g. a NATS fail-over) must not end the role: stay
            // leader-elect and try again on the next tick.
            if let Err(e) = self.load_states().await {
                tracing::warn!(error = %e, "cannot load thread snapshots yet; retrying");
                return false;
            }
            *was_leader = true;
        }
        true
    }

    /// Poll what one wake-up asks for: the nudged property, or every configured one
    /// (each not yet baselined on its own, then all of them in one listing).
    async fn sweep(
        &mut self,
        only: Option<String>,
        gate: &mut NudgeGate,
        shutdown: &watch::Receiver<bool>,
        leader: &watch::Receiver<bool>,
    ) {
        let full = only.is_none();
        let across = full && !self.configured.is_empty();
        if only.is_none() {
            // A full sweep (interval or nudge) also answers nudges without a property.
            gate.polled(None, Instant::now());
        }
        let properties: Vec<Option<String>> = match only {
            Some(p) => vec![Some(p)],
            None if !across => vec![None],
            None => self.unbaselined().into_iter().map(Some).collect(),
        };
        let still_leading = || !*shutdown.borrow() && *leader.borrow();
        for property in properties {
            if !still_leading() {
                return;
            }
            gate.polled(property.as_deref(), Instant::now());
            if let Err(e) = self.poll_once(property.as_deref()).await {
                tracing::warn!(property = property.as_deref().unwrap_or("*"), error = %e, "poll cycle failed; will retry next cycle");
            }
        }
        if across && still_leading() {
            match self.poll_configured().await {
                Ok(_) => {
                    let now = Instant::now();
                    for p in &self.config.channex.property_ids {
                        gate.polled(Some(p), now);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "poll cycle across the configured properties failed; will retry next cycle");
                }
            }
        }
        // The bookings listing spans the account: full sweeps only, not a property nudge.
        if self.config.poller.bookings && full && still_leading() {
            if let Err(e) = self.poll_bookings().await {
                tracing::warn!(error = %e, "bookings listing failed; will retry next cycle");
            }
        }
    }

    /// The configured properties without a baseline yet, in configuration order.
    fn unbaselined(&self) -> Vec<String> {
        let ids = &self.config.channex.property_ids;
        ids.iter()
            .filter(|p| !self.baselined.contains(*p))
            .cloned()
            .collect()
    }

    /// Load every snapshot from KV (on becoming leader; a previous leader wrote them).
    pub async fn load_states(&mut self) -> Result<(), PollerError> {
        self.states.clear();
        self.baselined.clear();
        let loaded = self.snapshots.load_all().await?;
        self.states = loaded.states;
        self.baselined = loaded.baselined;
        self.scan_mark = loaded.scan_mark;
        Ok(())
    }

    /// Whether a poll of `property` (`None`: every property) is its scope's baseline.
    ///
    /// With `property_ids = []` the interval polls scope `*`, which covers every property:
    /// a nudged poll of one of them must not run as a second (silent) baseline, or it
    /// records a new guest thread as seen without emitting its messages. With configured
    /// properties each is polled (and baselined) on its own; an old `*` baseline from an
    /// earlier empty `property_ids` does not count for a property added since.
    fn is_baseline(&self, property: Option<&str>) -> bool {
        let scope = property.unwrap_or(ALL_PROPERTIES);
        let covered_by_all = property.is_some()
            && self.config.channex.property_ids.is_empty()
            && self.baselined.contains(ALL_PROPERTIES);
        !covered_by_all && !self.baselined.contains(scope)
    }

    /// One poll of one property (`None`: every property the key sees).
    pub async fn poll_once(&mut self, property: Option<&str>) -> Result<CycleStats, PollerError> {
        let baseline = self.is_baseline(property);
        if property.is_none() && !baseline {
            // Scope `*` after its baseline: the same marked listing as the configured
            // properties use (a nudged poll may have refreshed the top of the listing).
            return self.poll_across(None).await;
        }
        let started = Instant::now();
        let calls_before = self.channex.stats().requests_sent;
        let scope = property.unwrap_or(ALL_PROPERTIES).to_string();
        let mut stats = CycleStats {
            baseline,
            ..Default::default()
        };
        let mut changed = self.changed_threads(property, baseline, &mut stats).await?;
        stats.threads_changed = changed.len();
        // Oldest change first, so events of different threads come out in time order.
        changed.sort_by_key(|t| t.last_message_received_at);
        for thread in changed {
            match self.process_thread(&thread, property, baseline).await {
                Ok((n, malformed)) => {
                    stats.events_emitted += n;
                    stats.malformed_items += malformed;
                }
                Err(PollerError::Channex(e)) => {
                    stats.threads_failed += 1;
                    tracing::warn!(thread = %thread.id, error = %e, "thread skipped this cycle");
                }
                Err(e) => return Err(e),
            }
        }
        if baseline {
            self.snapshots
                .mark_baselined(&scope, (self.clock)())
                .await?;
            self.baselined.insert(scope.clone());
        }
        stats.api_calls = self.channex.stats().requests_sent - calls_before;
        log_cycle(&scope, &stats, started.elapsed());
        Ok(stats)
    }

    /// One poll of every configured, baselined property with a single listing across all
    /// the properties the key sees (`updated_at desc`, no `filter[property_id]`): threads
    /// of other properties are skipped, and the listing stops below the previous complete
    /// listing (see [`detect::classify_across`]), so a cycle costs the same at 1 or 1,000
    /// properties. Without a usable mark (first run, properties changed, order ignored)
    /// it lists all.
    pub async fn poll_configured(&mut self) -> Result<CycleStats, PollerError> {
        let keep: HashSet<String> = self
            .configured
            .iter()
            .filter(|p| self.baselined.contains(*p))
            .cloned()
            .collect();
        if keep.is_empty() {
            return Ok(CycleStats::default()); // nothing baselined yet: nothing to list for
        }
        self.poll_across(Some(keep)).await
    }

    /// One listing across every property, keeping the threads of `keep` (`None`: scope
    /// `*`, every thread), then the pending threads of the previous listing one by one,
    /// then the new [`ScanMark`]. A page error still processes the changed threads found
    /// before it and leaves the mark where it was; the error is returned after.
    async fn poll_across(
        &mut self,
        keep: Option<HashSet<String>>,
    ) -> Result<CycleStats, PollerError> {
        let started = Instant::now();
        let calls_before = self.channex.stats().requests_sent;
        let mut stats = CycleStats::default();
        let fingerprint = keep.as_ref().map_or_else(
            || ALL_PROPERTIES.to_string(),
            detect::properties_fingerprint,
        );
        let previous = self
            .scan_mark
            .clone()
            .filter(|m| m.properties == fingerprint);
        let rule = keep.as_ref().map_or(detect::Keep::All, detect::Keep::Only);
        let mut listing = self
            .changed_across(rule, previous.as_ref(), &mut stats)
            .await;
        self.retry_pending(&mut listing, previous.as_ref()).await;
        let mut changed = std::mem::take(&mut listing.changed);
        stats.threads_changed = changed.len();
        changed.sort_by_key(|t| t.last_message_received_at);
        for thread in changed {
            match self.process_thread(&thread, None, false).await {
                Ok((n, malformed)) => {
                    stats.events_emitted += n;
                    stats.malformed_items += malformed;
                }
                Err(PollerError::Channex(e)) => {
                    tracing::warn!(thread = %thread.id, error = %e, "thread skipped this cycle; retried on its own next cycle");
                    listing
                        .failed
                        .push((thread.id.clone(), thread.updated_at, e.to_string()));
                }
                Err(e) => return Err(e),
            }
        }
        stats.threads_failed = listing.failed.len();
        let failed: Vec<_> = listing
            .failed
            .iter()
            .map(|(id, at, _)| (id.clone(), *at))
            .collect();
        let newest = listing.newest.filter(|_| listing.complete);
        let (mark, given_up) =
            detect::next_scan_mark(fingerprint, previous.as_ref(), newest, &failed);
        self.give_up(&given_up, &listing.failed).await;
        self.keep_scan_mark(mark).await?;
        stats.api_calls = self.channex.stats().requests_sent - calls_before;
        let scope = if keep.is_some() {
            "configured"
        } else {
            ALL_PROPERTIES
        };
        log_cycle(scope, &stats, started.elapsed());
        match listing.error {
            Some(e) => Err(e.into()),
            None => Ok(stats),
        }
    }

    /// The changed threads of `keep` in the listing across all properties, the newest
    /// `updated_at` listed and whether the listing was complete (every page read in order).
    async fn changed_across(
        &mut self,
        keep: detect::Keep<'_>,
        previous: Option<&ScanMark>,
        stats: &mut CycleStats,
    ) -> AcrossListing {
        let query = ThreadQuery::default().ordered_by("updated_at", OrderDirection::Desc);
        let mark = previous.map(|m| m.complete_before);
        let mut listing = AcrossListing {
            complete: true,
            ..AcrossListing::default()
        };
        let mut page_no = 1;
        loop {
            let page = match self.channex.list_threads_page(&query, page_no).await {
                Ok(page) => page,
                Err(e) => {
                    listing.complete = false;
                    listing.error = Some(e);
                    return listing;
                }
            };
            stats.malformed_items += self.report_malformed(&page.skipped, None, None).await;
            // Channex ignoring the order: no early stop, the whole listing is read, and
            // the mark does not move (the listing proves nothing about `updated_at`).
            let honoured = query.order_honoured_by(&page.meta);
            listing.complete &= honoured;
            let stop_mark = mark.filter(|_| honoured);
            let n = page.items.len();
            for mut t in page.items {
                stats.threads_seen += 1;
                listing.newest = listing.newest.max(t.updated_at);
                let state = self.states.get(&t.id);
                match detect::classify_across(&t, state, keep, stop_mark) {
                    detect::Listed::Changed => {
                        if t.property_id.is_none() {
                            t.property_id = detect::listed_property(&t, state).map(str::to_string);
                        }
                        listing.changed.push(t);
                    }
                    detect::Listed::Skip => {}
                    detect::Listed::Stop => return listing,
                }
            }
            let limit = page.meta.limit.max(1) as u64;
            if n == 0 || (page_no as u64) * limit >= page.meta.total {
                return listing;
            }
            page_no += 1;
        }
    }

    /// Reads the pending threads of the previous mark that this listing did not find
    /// changed (one call each: they may be below where it stopped) and adds the changed
    /// ones; a failed read counts as a failed attempt.
    async fn retry_pending(&mut self, listing: &mut AcrossListing, previous: Option<&ScanMark>) {
        let Some(previous) = previous else { return };
        for pending in &previous.pending {
            if listing.changed.iter().any(|t| t.id == pending.id) {
                continue;
            }
            match self.channex.get_thread(&pending.id).await {
                Ok(t) if detect::is_changed(self.states.get(&t.id), &t) => listing.changed.push(t),
                Ok(_) => {}
                Err(e) => {
                    let failure = (pending.id.clone(), pending.updated_at, e.to_string());
                    listing.failed.push(failure);
                }
            }
        }
    }

    /// Audits (`skipped`, reason `malformed_item`, kind `message_thread`) and forgets the
    /// threads that failed [`detect::RETRY_ATTEMPTS`] cycles in a row; a later change of
    /// such a thread lists it again.
    async fn give_up(
        &mut self,
        threads: &[PendingThread],
        failed: &[(String, Option<DateTime<Utc>>, String)],
    ) {
        if threads.is_empty() {
            return;
        }
        let now = (self.clock)();
        let kind = ItemKind::Thread.as_str();
        let records: Vec<AuditRecord> = threads
            .iter()
            .map(|p| {
                let error = failed.iter().find(|f| f.0 == p.id).map_or("", |f| f.2.as_str());
                let why = format!("not processed in {} cycles: {error}", p.attempts);
                tracing::warn!(thread = %p.id, error = %why, "thread given up until it changes again");
                let property = self.states.get(&p.id).map(|s| s.property_id.as_str());
                let stamp = p.updated_at.map_or(0, |at| at.timestamp_millis());
                let fingerprint = format!("{}@{stamp}", p.id);
                AuditRecord::malformed_item(kind, &fingerprint, Some(&p.id), property.filter(|s| !s.is_empty()), Some(&p.id), &why, now)
            })
            .collect();
        for (r, result) in records.iter().zip(self.audit.record_all(&records).await) {
            if let Err(e) = result {
                tracing::warn!(id = %r.id, error = %e, "could not audit a thread given up");
            }
        }
    }

    /// Remembers (in KV only when it moved) the mark of the listing just completed;
    /// `None` deletes the stored one, so a restarted poller lists everything too.
    async fn keep_scan_mark(&mut self, mark: Option<ScanMark>) -> Result<(), PollerError> {
        match mark {
            Some(m) if self.scan_mark.as_ref() != Some(&m) => {
                self.snapshots.put_scan_mark(&m).await?;
                self.scan_mark = Some(m);
            }
            Some(_) => {}
            None => {
                if self.scan_mark.take().is_some() {
                    self.snapshots.delete_scan_mark().await?;
                }
            }
        }
        Ok(())
    }

    /// The listed threads that differ from their snapshots, paging through the listing
    /// until the first unchanged thread (when Channex honours the order).
    async fn changed_threads(
        &mut self,
        property: Option<&str>,
        baseline: bool,
        stats: &mut CycleStats,
    ) -> Result<Vec<Thread>, PollerError> {
        let query = ThreadQuery {
            property_id: property.map(str::to_string),
            ..ThreadQuery::default()
        }
        .ordered_by("updated_at", OrderDirection::Desc);
        let mut changed: Vec<Thread> = Vec::new();
        let mut page_no = 1;
        loop {
            let page = self.channex.list_threads_page(&query, page_no).await?;
            stats.malformed_items += self.report_malformed(&page.skipped, property, None).await;
            let honoured = query.order_honoured_by(&page.meta);
            let mut reached_unchanged = false;
            let n = page.items.len();
            for t in page.items {
                stats.threads_seen += 1;
                if self.is_foreign(property, &t) {
                    continue;
                }
                if detect::is_changed(self.states.get(&t.id), &t) {
                    changed.push(t);
                } else if honoured && !baseline {
                    reached_unchanged = true;
                }
            }
            let limit = page.meta.limit.max(1) as u64;
            let seen_all = (page_no as u64) * limit >= page.meta.total || n == 0;
            if seen_all || reached_unchanged {
                return Ok(changed);
            }
            page_no += 1;
        }
    }

    /// Whether a row of a one-property listing belongs to another property (Channex
    /// ignoring `filter[property_id]`): such rows are dropped, so a baseline does not
    /// swallow another property's change and a nudge never emits for an unconfigured
    /// one. Warns once per process.
    fn is_foreign(&mut self, property: Option<&str>, t: &Thread) -> bool {
        let foreign = match (property, t.property_id.as_deref()) {
            (Some(p), Some(q)) => p != q,
            _ => false,
        };
        if foreign && !self.warned_foreign_rows {
            self.warned_foreign_rows = true;
            tracing::warn!(
                property = property.unwrap_or("*"),
                listed = t.property_id.as_deref().unwrap_or("?"),
                "Channex returned threads of another property for filter[property_id]; they are ignored"
            );
        }
        foreign
    }

    /// Logs, counts (`concierge_channex_malformed_items_total{kind}`) and audits
    /// (`skipped`, reason `malformed_item`) each malformed item the first time it is seen;
    /// returns how many were new. The rest of the page was processed regardless.
    async fn report_malformed(
        &mut self,
        skipped: &[SkippedItem],
        property: Option<&str>,
        thread: Option<&str>,
    ) -> usize {
        // Bounded memory: forgetting only means one more report of a still-broken item.
        if self.malformed_seen.len() > MALFORMED_MEMORY {
            self.malformed_seen.clear();
        }
        let mut records = Vec::new();
        for item in skipped {
            let kind = item.kind.as_str();
            if !self
                .malformed_seen
                .insert(format!("{kind}:{}", item.fingerprint))
            {
                continue;
            }
            tracing::warn!(kind, id = item.id.as_deref().unwrap_or("?"), thread = thread.unwrap_or("-"), fingerprint = %item.fingerprint, error = %item.error, "malformed Channex item skipped (reported once)");
            metrics::counter!("concierge_channex_malformed_items_total", "kind" => kind)
                .increment(1);
            records.push(malformed_record(item, property, thread, (self.clock)()));
        }
        for (r, result) in records.iter().zip(self.audit.record_all(&records).await) {
            if let Err(e) = result {
                tracing::warn!(id = %r.id, error = %e, "could not audit a malformed Channex item");
            }
        }
        records.len()
    }

    /// Fetch the new messages of one changed thread, emit their events, then store the
    /// snapshot. Returns the number of events emitted and of malformed messages reported.
    async fn process_thread(
        &mut self,
        thread: &Thread,
        scope_property: Option<&str>,
        baseline: bool,
    ) -> Result<(usize, usize), PollerError> {
        let previous = self.states.get(&thread.id).cloned();
        let property_id = thread
            .property_id
            .clone()
            .or_else(|| scope_property.map(str::to_string))
            .unwrap_or_default();
        let backfill_cutoff = self.backfill_cutoff();
        // Keeps a first run over thousands of threads at ceil(threads / 100) calls.
        if detect::is_listing_baseline(baseline, previous.as_ref(), thread, backfill_cutoff) {
            let mut state = ThreadState {
                property_id,
                ..ThreadState::default()
            };
            state = detect::baseline_state(thread, state);
            self.store_state(&thread.id, state).await?;
            return Ok((0, 0));
        }
        let (fresh, malformed) = if detect::needs_messages(previous.as_ref(), thread) {
            match self.own_reply_alone(thread, previous.as_ref()).await {
                Some(own) => (vec![own], 0),
                None => {
                    let known = previous.clone().unwrap_or_default();
                    self.new_messages(thread, &known, &property_id).await?
                }
            }
        } else {
            (Vec::new(), 0)
        };
        // Read before detection: the booking's language is the thread's language.
        let read_before = !fresh.is_empty();
        let mut booking = match read_before {
            true => self.booking_of(thread).await,
            false => None,
        };
        let detected = detect::detect(detect::Observed {
            thread,
            previous: previous.as_ref(),
            property: self.config.property_info(&property_id),
            property_id,
            fresh,
            booking_language: booking.as_ref().and_then(|b| b.language.as_deref()),
            emit_after: if baseline {
                backfill_cutoff
            } else {
                Some(DateTime::<Utc>::MIN_UTC)
            },
        });
        let emitted = detected.events.len();
        // Read once per thread: a booking Channex could not give is not asked for twice.
        if emitted > 0 && !read_before {
            booking = self.booking_of(thread).await;
        }
        for mut event in detected.events {
            event.booking = booking.clone();
            self.publish(event).await?;
        }
        // Only now, with every event acknowledged, remember the thread.
        self.store_state(&thread.id, detected.state).await?;
        Ok((emitted, malformed))
    }

    /// The `booking` block of a thread with a booking (with `poller.bookings`).
    async fn booking_of(&mut self, thread: &Thread) -> Option<crate::events::Booking> {
        match &thread.booking_id {
            Some(id) if self.config.poller.bookings => self.booking_block(id).await,
            _ => None,
        }
    }

    /// With `--backfill`: messages after this instant are emitted by a baseline poll.
    fn backfill_cutoff(&self) -> Option<DateTime<Utc>> {
        self.backfill
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| (self.clock)() - d)
    }

    /// Concierge's own reply, built from the executor's ledger record, when the listing row
    /// shows it is the thread's one new message ([`detect::own_reply_alone`]): saves reading
    /// it back. `None` (read the messages) when anything differs or the ledger cannot say.
    async fn own_reply_alone(
        &self,
        thread: &Thread,
        previous: Option<&ThreadState>,
    ) -> Option<Message> {
        let previous = previous.filter(|p| detect::may_be_own_reply(p, thread))?;
        match self.ledger.last_reply(&thread.id).await {
            Ok(sent) => detect::own_reply_alone(previous, thread, &sent?),
            Err(e) => {
                tracing::debug!(thread = %thread.id, error = %e, "last reply not readable; reading the messages");
                None
            }
        }
    }

    /// The thread's messages newer than `known` knows of (newest first, until a known one),
    /// and the number of malformed messages reported on the way.
    async fn new_messages(
        &mut self,
        thread: &Thread,
        known: &ThreadState,
        property_id: &str,
    ) -> Result<(Vec<Message>, usize), PollerError> {
        let mut fresh = Vec::new();
        let mut malformed = 0;
        let mut page_no = 1;
        loop {
            let page = self
                .channex
                .list_thread_messages_page(&thread.id, page_no, 100)
                .await?;
            malformed += self
                .report_malformed(&page.skipped, Some(property_id), Some(&thread.id))
                .await;
            let n = page.items.len();
            for m in page.items {
                if detect::knows(known, &m) {
                    return Ok((fresh, malformed));
                }
                fresh.push(m);
            }
            let limit = page.meta.limit.max(1) as u64;
            if n == 0 || (page_no as u64) * limit >= page.meta.total {
                return Ok((fresh, malformed));
            }
            page_no += 1;
        }
    }

    async fn store_state(
        &mut self,
        thread_id: &str,
        state: ThreadState,
    ) -> Result<(), PollerError> {
        self.snapshots.put(thread_id, &state).await?;
        self.states.insert(thread_id.to_string(), state);
        Ok(())
    }

    async fn publish(&self, event: Event) -> Result<(), PollerError> {
        let publish_err = |source: NatsSource| PollerError::Publish {
            id: event.id.clone(),
            source,
        };
        let payload = serde_json::to_vec(&event).map_err(|e| publish_err(e.into()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event.id.as_str());
        let ack = self
            .js
            .publish_with_headers(
                event.subject(&self.config.nats.prefix),
                headers,
                payload.into(),
            )
            .await
            .map_err(|e| publish_err(e.into()))?;
        ack.await.map_err(|e| publish_err(e.into()))?;
        Ok(())
    }
}

fn log_cycle(scope: &str, stats: &CycleStats, elapsed: Duration) {
    metrics::histogram!("concierge_poll_cycle_seconds").record(elapsed.as_secs_f64());
    metrics::counter!("concierge_poller_events_total").increment(stats.events_emitted as u64);
    tracing::info!(
        property = %scope,
        threads_seen = stats.threads_seen,
        threads_changed = stats.threads_changed,
        events = stats.events_emitted,
        api_calls = stats.api_calls,
        failed = stats.threads_failed,
        malformed = stats.malformed_items,
        baseline = stats.baseline,
        duration_ms = elapsed.as_millis() as u64,
        "poll cycle"
    );
}

/// What the listing across all properties found.
#[derive(Default)]
struct AcrossListing {
    changed: Vec<Thread>,
    /// Threads that could not be read or processed: id, `updated_at`, error.
    failed: Vec<(String, Option<DateTime<Utc>>, String)>,
    newest: Option<DateTime<Utc>>,
    /// Every page read, each in the order asked for (only then may the mark move).
    complete: bool,
    /// The page error that cut the listing short.
    error: Option<ChannexError>,
}

/// How many malformed-item fingerprints are remembered before the memory is reset.
const MALFORMED_MEMORY: usize = 10_000;

/// The audit record of a malformed Channex item: `skipped`, reason `malformed_item`,
/// `event_type` naming the resource (`channex.message_thread` / `channex.message`). Its id
/// is deterministic, so a restarted poller's second report is deduplicated by JetStream.
fn malformed_record(
    item: &SkippedItem,
    property: Option<&str>,
    thread: Option<&str>,
    at: DateTime<Utc>,
) -> AuditRecord {
    let thread_id = match item.kind {
        ItemKind::Thread => item.id.as_deref(),
        ItemKind::Message => thread,
        ItemKind::Booking => None,
    };
    AuditRecord::malformed_item(
        item.kind.as_str(),
        &item.fingerprint,
        item.id.as_deref(),
        property,
        thread_id,
        &item.error,
        at,
    )
}
