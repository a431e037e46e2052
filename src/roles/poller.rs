//! The poller role: turns what changed at Channex into events on `CONCIERGE_EVENTS`.
//!
//! Owns change detection and the thread snapshots in KV (`<prefix>_threads`, key
//! `t.<thread id>`), the per-property baseline mark (`baseline.<property>`; both tokens
//! encoded with [`crate::base::keys`]), the once-only report of malformed Channex items
//! (log, metric, `malformed_item` audit record; the rest of the page is processed), and the
//! guarantee of exactly one event per message:
//! - every event id is deterministic and sent as `Nats-Msg-Id`, and a thread's snapshot is
//!   written only after all its events were acknowledged by JetStream, so a crash between
//!   the two re-publishes the same ids, which the stream's duplicate window drops;
//! - the snapshot remembers the newest message seen (time and the ids at that time), so a
//!   restart emits exactly the messages that arrived while it was down.
//!
//! Economy: one `list_threads` pass per property per cycle (ceil(threads/100) calls, asking
//! for `order[updated_at]=desc` and stopping at the first unchanged thread when Channex
//! honours the order), then one messages call per changed thread (more only when more
//! than 100 messages arrived). Decisions that are not in the contract:
//! - thread snapshots in events describe the thread as of the poll (freshest knowledge:
//!   if staff answered in the same cycle, the guest message's event already says
//!   `awaiting_reply: false`);
//! - the first cycle ever for a property is a baseline (nothing emitted) unless
//!   `--backfill` asks for recent messages; threads that appear later are new, and all
//!   their messages are emitted.
//!
//! It must not evaluate rules or write to Channex. Only the lease holder polls.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use crate::base::keys;
use crate::channex::{
    ChannexClient, ChannexError, ItemKind, Message, OrderDirection, Sender, SkippedItem, Thread,
    ThreadQuery,
};
use crate::config::Config;
use crate::events::{
    ids, Event, EventType, InquiryInfo, MessageInfo, PropertyInfo, ThreadSnapshot,
};
use crate::store::audit::{AuditLog, AuditRecord};
use crate::store::lease::{LeaderElection, Lease};

#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    #[error("Channex: {0}")]
    Channex(#[from] ChannexError),
    #[error("snapshot store: {0}")]
    Store(String),
    #[error("publishing event {id}: {message}")]
    Publish { id: String, message: String },
    #[error("leader election: {0}")]
    Lease(String),
}

/// What the poller remembers of one thread between cycles.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ThreadState {
    pub property_id: String,
    pub message_count: u64,
    pub is_closed: bool,
    pub last_message_received_at: Option<DateTime<Utc>>,
    /// Newest message already emitted (or recorded by the baseline).
    pub newest_message_at: Option<DateTime<Utc>>,
    /// Ids of the messages at exactly `newest_message_at` (timestamps can tie).
    pub newest_message_ids: Vec<String>,
    pub last_guest_message_at: Option<DateTime<Utc>>,
    pub last_property_message_at: Option<DateTime<Utc>>,
    /// The inquiry message already announced with `inquiry.received`.
    pub inquiry_message_id: Option<String>,
}

impl ThreadState {
    fn changed(&self, t: &Thread) -> bool {
        self.message_count != t.message_count
            || self.is_closed != t.is_closed
            || self.last_message_received_at != t.last_message_received_at
    }

    fn knows(&self, m: &Message) -> bool {
        match self.newest_message_at {
            None => false,
            Some(at) => {
                m.inserted_at < at
                    || (m.inserted_at == at
                        && self
                            .newest_message_ids
                            .iter()
                            .any(|id| *id == m.id || id == ALL_KNOWN))
            }
        }
    }
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

/// In `newest_message_ids`: every message at `newest_message_at` is known (a baseline
/// recorded from the listing, without reading the messages).
const ALL_KNOWN: &str = "*";

fn state_key(thread_id: &str) -> String {
    format!("t.{}", keys::encode(thread_id))
}

fn baseline_key(property_id: &str) -> String {
    format!("baseline.{}", keys::encode(property_id))
}

/// Builds the event's thread block from the listing row and the poller's knowledge.
pub fn snapshot_of(t: &Thread, state: &ThreadState) -> ThreadSnapshot {
    ThreadSnapshot {
        id: t.id.clone(),
        title: t.title.clone(),
        provider: t.provider.as_event_str().to_string(),
        is_closed: t.is_closed,
        message_count: t.message_count,
        booking_id: t.booking_id.clone(),
        channel_id: t.channel_id.clone(),
        last_message_received_at: t.last_message_received_at,
        last_guest_message_at: state.last_guest_message_at,
        last_property_message_at: state.last_property_message_at,
        awaiting_reply: ThreadSnapshot::compute_awaiting_reply(
            state.last_guest_message_at,
            state.last_property_message_at,
        ),
    }
}

/// A thread snapshot straight from Channex (thread + its newest messages): used where a
/// fresh view matters more than API calls (follow-up firing).
pub async fn fresh_snapshot(
    channex: &ChannexClient,
    thread_id: &str,
) -> Result<(ThreadSnapshot, Option<String>), ChannexError> {
    let thread = channex.get_thread(thread_id).await?;
    let page = channex.list_thread_messages_page(thread_id, 1, 100).await?;
    let mut state = ThreadState::default();
    fold_senders(&mut state, &page.items);
    Ok((snapshot_of(&thread, &state), thread.property_id.clone()))
}

fn fold_senders(state: &mut ThreadState, messages: &[Message]) {
    for m in messages {
        let slot = match m.sender {
            Sender::Guest => &mut state.last_guest_message_at,
            Sender::Property => &mut state.last_property_message_at,
            _ => continue,
        };
        if slot.is_none_or(|at| m.inserted_at > at) {
            *slot = Some(m.inserted_at);
        }
    }
}

pub fn inquiry_info(m: &Message) -> Option<InquiryInfo> {
    let d = m.booking_details()?;
    Some(InquiryInfo {
        status: m
            .meta
            .as_ref()
            .and_then(|meta| meta.status.clone())
            .unwrap_or_default(),
        non_response_at: d.non_response_at,
        checkin_date: d.checkin_date.clone(),
        checkout_date: d.checkout_date.clone(),
        nights: d.nights,
        number_of_guests: d.number_of_guests,
        guest_name: d.guest_name.clone(),
        listing_name: d.listing_name.clone(),
        expected_payout_amount_accurate: d.expected_payout_amount_accurate.clone(),
        currency: d.currency.clone(),
    })
}

pub struct Poller {
    channex: ChannexClient,
    js: jetstream::Context,
    client: async_nats::Client,
    threads_kv: kv::Store,
    leases_kv: kv::Store,
    config: Arc<Config>,
    backfill: Option<Duration>,
    holder_id: String,
    /// In-memory copy of the snapshots; reloaded from KV on becoming leader.
    states: HashMap<String, ThreadState>,
    baselined: HashSet<String>,
    audit: AuditLog,
    /// `<kind>:<fingerprint>` of the malformed items already reported, so a broken thread
    /// that is listed every cycle is logged, counted and audited once.
    malformed_seen: HashSet<String>,
}

impl Poller {
    pub fn new(
        channex: ChannexClient,
        infra: &crate::store::nats::Infra,
        config: Arc<Config>,
        backfill: Option<Duration>,
    ) -> Self {
        let audit = AuditLog::new(infra.js.clone(), &config.nats.prefix);
        Poller {
            channex,
            js: infra.js.clone(),
            client: infra.client.clone(),
            threads_kv: infra.threads.clone(),
            leases_kv: infra.leases.clone(),
            config,
            backfill,
            holder_id: format!("poller-{}", uuid::Uuid::new_v4()),
            states: HashMap::new(),
            baselined: HashSet::new(),
            audit,
            malformed_seen: HashSet::new(),
        }
    }

    pub fn holder_id(&self) -> &str {
        &self.holder_id
    }

    /// Poll every `poll_interval` (or at once on a webhook nudge) while holding the lease.
    pub async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        mut nudges: mpsc::Receiver<Option<String>>,
    ) -> Result<(), PollerError> {
        let lease = Lease::new(
            self.leases_kv.clone(),
            "poller",
            self.holder_id.clone(),
            self.config.poller.lease_ttl,
        );
        let election =
            LeaderElection::spawn(lease, crate::base::clock::system_clock(), shutdown.clone());
        let mut leader = election.subscribe();
        let mut was_leader = false;
        // Webhook nudges may land on any process (behind a load balancer, on a standby):
        // they are published on a subject every poller listens to, and the leader acts.
        let mut remote_nudges = match self
            .client
            .subscribe(nudge_subject(&self.config.nats.prefix))
            .await
        {
            Ok(sub) => Some(sub),
            Err(e) => {
                tracing::warn!(error = %e, "cannot subscribe to webhook nudges; polling on the interval only");
                None
            }
        };
        let mut interval = tokio::time::interval(self.config.channex.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut local_nudges_open = true;
        let mut gate = NudgeGate::new(&self.config);
        loop {
            let nudged: Option<String> = tokio::select! {
                _ = shutdown.changed() => break,
                _ = interval.tick() => None,
                _ = gate.next_due() => match gate.take_due(Instant::now()) {
                    Some(p) => p,
                    None => continue,
                },
                n = nudges.recv(), if local_nudges_open => match n {
                    Some(p) => match gate.admit(p, Instant::now()) {
                        Some(p) => p,
                        None => continue,
                    },
                    // Nobody can nudge locally any more: stop listening, keep polling.
                    None => { local_nudges_open = false; continue; }
                },
                Some(m) = next_nudge(&mut remote_nudges) => {
                    let p = String::from_utf8_lossy(&m.payload).trim().to_string();
                    match gate.admit((!p.is_empty()).then_some(p), Instant::now()) {
                        Some(p) => p,
                        None => continue,
                    }
                }
                changed = leader.changed() => {
                    if changed.is_err() {
                        break; // the election ended (shutdown)
                    }
                    None
                }
            };
            // An admitted nudge names one property (or none: everything, like a tick).
            let only = nudged;
            let is_leader = *leader.borrow();
            if !is_leader {
                if was_leader {
                    tracing::info!(holder = %self.holder_id, "poller lost the lease; standing by");
                }
                was_leader = false;
                continue;
            }
            if !was_leader {
                tracing::info!(holder = %self.holder_id, "poller is leader");
                // A store hiccup (e.g. a NATS fail-over) must not end the role: stay
                // leader-elect and try again on the next tick.
                if let Err(e) = self.load_states().await {
                    tracing::warn!(error = %e, "cannot load thread snapshots yet; retrying");
                    continue;
                }
                was_leader = true;
            }
            self.sweep(only, &mut gate, &shutdown, &leader).await;
        }
        election.stop().await;
        Ok(())
    }

    /// Poll what one wake-up asks for: the nudged property, or every configured one.
    async fn sweep(
        &mut self,
        only: Option<String>,
        gate: &mut NudgeGate,
        shutdown: &watch::Receiver<bool>,
        leader: &watch::Receiver<bool>,
    ) {
        if only.is_none() {
            // A full sweep (interval or nudge) also answers nudges without a property,
            // even when it runs as one poll per configured property.
            gate.polled(None, Instant::now());
        }
        let properties: Vec<Option<String>> = match only {
            Some(p) => vec![Some(p)],
            None if self.config.channex.property_ids.is_empty() => vec![None],
            None => self
                .config
                .channex
                .property_ids
                .iter()
                .cloned()
                .map(Some)
                .collect(),
        };
        for property in properties {
            if *shutdown.borrow() || !*leader.borrow() {
                break;
            }
            gate.polled(property.as_deref(), Instant::now());
            match self.poll_once(property.as_deref()).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(property = property.as_deref().unwrap_or("*"), error = %e, "poll cycle failed; will retry next cycle")
                }
            }
        }
    }

    /// Load every snapshot from KV (on becoming leader; a previous leader wrote them).
    pub async fn load_states(&mut self) -> Result<(), PollerError> {
        let store_err = |e: &dyn std::fmt::Display| PollerError::Store(e.to_string());
        self.states.clear();
        self.baselined.clear();
        let mut keys = match self.threads_kv.keys().await {
            Ok(k) => k,
            Err(e) => return Err(store_err(&e)),
        };
        let mut all = Vec::new();
        while let Some(k) = keys.next().await {
            all.push(k.map_err(|e| store_err(&e))?);
        }
        for key in all {
            if let Some(p) = key.strip_prefix("baseline.") {
                // `_` is how the all-properties scope `*` was written before the key encoding
                // was unified; read it so an upgrade does not re-baseline (and miss) messages.
                match keys::decode(p) {
                    Ok(_) if p == "_" => self.baselined.insert("*".to_string()),
                    Ok(p) => self.baselined.insert(p),
                    Err(e) => {
                        tracing::warn!(key, error = %e, "undecodable baseline key ignored");
                        continue;
                    }
                };
                continue;
            }
            let Some(id) = key.strip_prefix("t.").and_then(|t| keys::decode(t).ok()) else {
                continue;
            };
            if let Some(bytes) = self.threads_kv.get(&key).await.map_err(|e| store_err(&e))? {
                match serde_json::from_slice::<ThreadState>(&bytes) {
                    Ok(s) => {
                        self.states.insert(id.to_string(), s);
                    }
                    Err(e) => tracing::warn!(key, error = %e, "unreadable snapshot ignored"),
                }
            }
        }
        Ok(())
    }

    /// One poll of one property (`None`: every property the key sees).
    pub async fn poll_once(&mut self, property: Option<&str>) -> Result<CycleStats, PollerError> {
        let started = Instant::now();
        let calls_before = self.channex.stats().requests_sent;
        let scope = property.unwrap_or("*").to_string();
        // With `property_ids = []` the interval polls scope `*`, which covers every property:
        // a nudged poll of one of them must not run as a second (silent) baseline, or it
        // records a new guest thread as seen without emitting its messages. With configured
        // properties each is polled (and baselined) on its own; an old `*` baseline from an
        // earlier empty `property_ids` does not count for a property added since.
        let covered_by_all = property.is_some()
            && self.config.channex.property_ids.is_empty()
            && self.baselined.contains("*");
        let baseline = !covered_by_all && !self.baselined.contains(&scope);
        let mut stats = CycleStats {
            baseline,
            ..Default::default()
        };
        let query = ThreadQuery {
            property_id: property.map(str::to_string),
            ..ThreadQuery::default()
        }
        .ordered_by("updated_at", OrderDirection::Desc);
        // Page through until the first unchanged thread (when the order is honoured).
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
                let is_changed = self.states.get(&t.id).is_none_or(|s| s.changed(&t));
                if is_changed {
                    changed.push(t);
                } else if honoured && !baseline {
                    reached_unchanged = true;
                }
            }
            let limit = page.meta.limit.max(1) as u64;
            let seen_all = (page_no as u64) * limit >= page.meta.total || n == 0;
            if seen_all || reached_unchanged {
                break;
            }
            page_no += 1;
        }
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
            let key = baseline_key(&scope);
            self.threads_kv
                .put(&key, Utc::now().to_rfc3339().into())
                .await
                .map_err(|e| PollerError::Store(e.to_string()))?;
            self.baselined.insert(scope.clone());
        }
        stats.api_calls = self.channex.stats().requests_sent - calls_before;
        let elapsed = started.elapsed();
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
        Ok(stats)
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
            records.push(malformed_record(item, property, thread));
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
        let mut state = previous.clone().unwrap_or_default();
        let property_id = thread
            .property_id
            .clone()
            .or_else(|| scope_property.map(str::to_string))
            .unwrap_or_default();
        state.property_id = property_id.clone();
        // Newest first, until we reach a known message.
        let mut fresh: Vec<Message> = Vec::new();
        let mut malformed = 0;
        let backfill_cutoff = self
            .backfill
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() - d);
        // A baseline only needs the messages it will emit (backfill): for every other
        // thread the listing row says enough, which keeps a first run over thousands of
        // threads at ceil(threads / 100) calls.
        if baseline
            && previous.is_none()
            && backfill_cutoff.is_none_or(|cutoff| {
                thread
                    .last_message_received_at
                    .is_none_or(|at| at <= cutoff)
            })
        {
            return self.record_baseline(thread, state).await.map(|n| (n, 0));
        }
        let needs_messages = previous.as_ref().is_none_or(|p| {
            p.message_count != thread.message_count
                || p.last_message_received_at != thread.last_message_received_at
        });
        if needs_messages {
            let mut page_no = 1;
            'pages: loop {
                let page = self
                    .channex
                    .list_thread_messages_page(&thread.id, page_no, 100)
                    .await?;
                malformed += self
                    .report_malformed(&page.skipped, Some(&property_id), Some(&thread.id))
                    .await;
                let n = page.items.len();
                for m in page.items {
                    if state.knows(&m) {
                        break 'pages;
                    }
                    fresh.push(m);
                }
                let limit = page.meta.limit.max(1) as u64;
                if n == 0 || (page_no as u64) * limit >= page.meta.total {
                    break;
                }
                page_no += 1;
            }
        }
        fresh.sort_by(|a, b| {
            a.inserted_at
                .cmp(&b.inserted_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        fold_senders(&mut state, &fresh);
        state.message_count = thread.message_count;
        state.is_closed = thread.is_closed;
        state.last_message_received_at = thread.last_message_received_at;
        if let Some(newest) = fresh.last() {
            let at = newest.inserted_at;
            if state.newest_message_at != Some(at) {
                state.newest_message_ids.clear();
            }
            state.newest_message_at = Some(at);
            for m in fresh.iter().filter(|m| m.inserted_at == at) {
                if !state.newest_message_ids.contains(&m.id) {
                    state.newest_message_ids.push(m.id.clone());
                }
            }
        }
        let emit_after: Option<DateTime<Utc>> = if baseline {
            self.backfill
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| Utc::now() - d)
        } else {
            Some(DateTime::<Utc>::MIN_UTC)
        };
        let property = self.config.property_info(&property_id);
        let snapshot = snapshot_of(thread, &state);
        let mut emitted = 0;
        for m in &fresh {
            let inquiry = (thread.booking_id.is_none() && m.is_inquiry())
                .then(|| inquiry_info(m))
                .flatten();
            if inquiry.is_some() && state.inquiry_message_id.is_none() {
                state.inquiry_message_id = Some(m.id.clone());
            } else if inquiry.is_some() && state.inquiry_message_id.as_deref() != Some(&m.id) {
                // A second inquiry message on the same thread: still announce it once.
            }
            let Some(after) = emit_after else { continue };
            if m.inserted_at <= after {
                continue;
            }
            let message_info = MessageInfo {
                id: m.id.clone(),
                text: m.text.clone(),
                sender: m.sender.as_str().to_string(),
                attachments: m.attachments.clone(),
                inserted_at: m.inserted_at,
            };
            self.publish(Event {
                id: ids::new_message(&thread.id, &m.id),
                event_type: EventType::ThreadNewMessage,
                occurred_at: m.inserted_at,
                property: property.clone(),
                thread: Some(snapshot.clone()),
                message: Some(message_info.clone()),
                inquiry: inquiry.clone(),
                follow_up: None,
                schedule: None,
            })
            .await?;
            emitted += 1;
            if let Some(inquiry) = inquiry {
                let already = previous
                    .as_ref()
                    .and_then(|p| p.inquiry_message_id.as_deref())
                    == Some(m.id.as_str());
                if !already {
                    self.publish(Event {
                        id: ids::inquiry(&thread.id, &m.id),
                        event_type: EventType::InquiryReceived,
                        occurred_at: m.inserted_at,
                        property: property.clone(),
                        thread: Some(snapshot.clone()),
                        message: Some(message_info),
                        inquiry: Some(inquiry),
                        follow_up: None,
                        schedule: None,
                    })
                    .await?;
                    emitted += 1;
                }
            }
        }
        // Only now, with every event acknowledged, remember the thread.
        self.store_state(&thread.id, state).await?;
        Ok((emitted, malformed))
    }

    /// Remember a thread from its listing row alone: everything up to its last message is
    /// known history.
    async fn record_baseline(
        &mut self,
        thread: &Thread,
        mut state: ThreadState,
    ) -> Result<usize, PollerError> {
        state.message_count = thread.message_count;
        state.is_closed = thread.is_closed;
        state.last_message_received_at = thread.last_message_received_at;
        state.newest_message_at = thread.last_message_received_at;
        state.newest_message_ids = vec![ALL_KNOWN.to_string()];
        if let Some(last) = &thread.last_message {
            let at = last.inserted_at.or(thread.last_message_received_at);
            match last.sender {
                Sender::Guest => state.last_guest_message_at = at,
                Sender::Property => state.last_property_message_at = at,
                _ => {}
            }
        }
        self.store_state(&thread.id, state).await?;
        Ok(0)
    }

    async fn store_state(
        &mut self,
        thread_id: &str,
        state: ThreadState,
    ) -> Result<(), PollerError> {
        let body = serde_json::to_vec(&state).map_err(|e| PollerError::Store(e.to_string()))?;
        self.threads_kv
            .put(state_key(thread_id), body.into())
            .await
            .map_err(|e| PollerError::Store(e.to_string()))?;
        self.states.insert(thread_id.to_string(), state);
        Ok(())
    }

    async fn publish(&self, event: Event) -> Result<(), PollerError> {
        let publish_err = |message: String| PollerError::Publish {
            id: event.id.clone(),
            message,
        };
        let payload = serde_json::to_vec(&event).map_err(|e| publish_err(e.to_string()))?;
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
            .map_err(|e| publish_err(e.to_string()))?;
        ack.await.map_err(|e| publish_err(e.to_string()))?;
        Ok(())
    }
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
) -> AuditRecord {
    let thread_id = match item.kind {
        ItemKind::Thread => item.id.as_deref(),
        ItemKind::Message => thread,
    };
    AuditRecord::malformed_item(
        item.kind.as_str(),
        &item.fingerprint,
        item.id.as_deref(),
        property,
        thread_id,
        &item.error,
        chrono::Utc::now(),
    )
}

/// Nudges of one property are coalesced: at most one nudged poll per this gap.
pub const NUDGE_MIN_GAP: Duration = Duration::from_secs(1);

/// Decides which webhook nudges become polls. A nudge is outside data (anyone with the
/// webhook secret, or any NATS publisher on the nudge subject, can send one), so:
/// - it only ever polls a configured property (`channex.property_ids`; any id when that is
///   empty, meaning "all the key can see"), since a global Channex webhook fires for every
///   property of the account and polling another one would answer its guests;
/// - nudges of one property within [`NUDGE_MIN_GAP`] of its last poll collapse into one
///   trailing poll when the gap has passed (so a burst costs at most two polls); a nudge
///   without a property (`None`) sweeps every property and is coalesced against the last
///   full sweep, interval or nudged;
/// - nudged polls draw on their own budget, a quarter of `channex.requests_per_minute`
///   (at least one a minute), charged per property polled (a `None` nudge costs one per
///   configured property), so a nudge flood cannot starve sends of the shared Channex
///   rate limit; a nudge over the budget is dropped and the interval poll catches up.
///
/// Memory is bounded: poll times older than the gap are forgotten (they no longer defer
/// anything), and a nudge is only deferred for a key polled within the gap (and leaves
/// `pending` when it is polled or due), so `pending` is bounded by the polls made.
pub struct NudgeGate {
    configured: HashSet<String>,
    last_poll: HashMap<Option<String>, Instant>,
    pending: HashMap<Option<String>, Instant>,
    budget: governor::DefaultDirectRateLimiter,
    last_prune: Option<Instant>,
}

impl NudgeGate {
    pub fn new(config: &Config) -> Self {
        let per_minute = (config.channex.requests_per_minute / 4).max(1);
        let quota = governor::Quota::per_minute(
            std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN),
        );
        NudgeGate {
            configured: config.channex.property_ids.iter().cloned().collect(),
            last_poll: HashMap::new(),
            pending: HashMap::new(),
            budget: governor::RateLimiter::direct(quota),
            last_prune: None,
        }
    }

    /// `Some(property)` when the nudge should poll now; otherwise it was dropped or
    /// deferred (see [`Self::take_due`]).
    pub fn admit(&mut self, property: Option<String>, now: Instant) -> Option<Option<String>> {
        if let Some(p) = &property {
            if !self.configured.is_empty() && !self.configured.contains(p) {
                metrics::counter!("concierge_nudges_total", "result" => "unconfigured")
                    .increment(1);
                tracing::debug!(property = %p, "webhook nudge for a property that is not configured; ignored");
                return None;
            }
        }
        match self.last_poll.get(&property) {
            Some(at) if now.duration_since(*at) < NUDGE_MIN_GAP => {
                metrics::counter!("concierge_nudges_total", "result" => "coalesced").increment(1);
                let due = *at + NUDGE_MIN_GAP;
                self.pending.entry(property).or_insert(due);
                None
            }
            _ => self.spend(property),
        }
    }

    fn spend(&mut self, property: Option<String>) -> Option<Option<String>> {
        // What the nudge will poll: one property, or a sweep of every configured one.
        let polls = match &property {
            None => self.configured.len().max(1),
            Some(_) => 1,
        };
        let polls = std::num::NonZeroU32::new(u32::try_from(polls).unwrap_or(u32::MAX))
            .unwrap_or(std::num::NonZeroU32::MIN);
        // A sweep larger than the whole budget is never admitted: the interval covers it.
        if !matches!(self.budget.check_n(polls), Ok(Ok(()))) {
            metrics::counter!("concierge_nudges_total", "result" => "over_budget").increment(1);
            return None;
        }
        metrics::counter!("concierge_nudges_total", "result" => "polled").increment(1);
        Some(property)
    }

    /// Record a poll of `property` (nudged or on the interval): it restarts the gap.
    pub fn polled(&mut self, property: Option<&str>, now: Instant) {
        let key = property.map(str::to_string);
        self.pending.remove(&key);
        self.last_poll.insert(key, now);
        self.prune(now);
    }

    /// Forgets poll times older than the gap (at most once a gap, so the cost stays linear
    /// in the polls made): with an empty `property_ids` any made-up id is polled once.
    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|at| now.duration_since(at) < NUDGE_MIN_GAP)
        {
            return;
        }
        self.last_prune = Some(now);
        self.last_poll
            .retain(|_, at| now.duration_since(*at) < NUDGE_MIN_GAP);
    }

    /// Resolves when the earliest deferred nudge is due (never when none is pending).
    pub async fn next_due(&self) {
        match self.pending.values().min() {
            Some(due) => tokio::time::sleep_until((*due).into()).await,
            None => futures::future::pending().await,
        }
    }

    /// The deferred nudge that is due now, if any (and within the budget).
    pub fn take_due(&mut self, now: Instant) -> Option<Option<String>> {
        let key = self
            .pending
            .iter()
            .filter(|(_, due)| **due <= now)
            .min_by_key(|(_, due)| **due)
            .map(|(k, _)| k.clone())?;
        self.pending.remove(&key);
        self.spend(key)
    }
}

/// Core NATS subject carrying webhook nudges to whichever poller leads.
pub fn nudge_subject(prefix: &str) -> String {
    format!("{prefix}.control.poll")
}

async fn next_nudge(sub: &mut Option<async_nats::Subscriber>) -> Option<async_nats::Message> {
    match sub {
        Some(s) => s.next().await,
        None => futures::future::pending().await,
    }
}

/// Publishes webhook nudges (from [`crate::http`]) for the leading poller, wherever it runs.
/// The payload is the property id, or empty for "poll everything".
pub async fn publish_nudges(
    mut nudges: mpsc::Receiver<Option<String>>,
    client: async_nats::Client,
    prefix: String,
) {
    let subject = nudge_subject(&prefix);
    while let Some(property) = nudges.recv().await {
        let payload = property.unwrap_or_default();
        if let Err(e) = client.publish(subject.clone(), payload.into()).await {
            tracing::warn!(error = %e, "could not forward a webhook nudge; the next poll will catch up");
        }
    }
}

/// The scheduler's view of threads, backed by Channex (fresh snapshots for follow-ups) and
/// the poller's snapshots (sender timestamps for schedule ticks, without extra calls).
pub struct ChannexDirectory {
    channex: ChannexClient,
    threads_kv: kv::Store,
    config: Arc<Config>,
}

impl ChannexDirectory {
    pub fn new(
        channex: ChannexClient,
        infra: &crate::store::nats::Infra,
        config: Arc<Config>,
    ) -> Self {
        ChannexDirectory {
            channex,
            threads_kv: infra.threads.clone(),
            config,
        }
    }

    async fn known_state(&self, thread_id: &str) -> ThreadState {
        match self.threads_kv.get(state_key(thread_id)).await {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_default(),
            _ => ThreadState::default(),
        }
    }
}

impl crate::roles::scheduler::ThreadDirectory for ChannexDirectory {
    fn snapshot(
        &self,
        _property_id: &str,
        thread_id: &str,
    ) -> futures::future::BoxFuture<'_, Result<Option<ThreadSnapshot>, String>> {
        let thread_id = thread_id.to_string();
        Box::pin(async move {
            match fresh_snapshot(&self.channex, &thread_id).await {
                Ok((snapshot, _)) => Ok(Some(snapshot)),
                Err(e) if e.status() == Some(404) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn open_threads(
        &self,
        property_id: &str,
    ) -> futures::future::BoxFuture<'_, Result<Vec<ThreadSnapshot>, String>> {
        let property_id = property_id.to_string();
        Box::pin(async move {
            let listing = self
                .channex
                .list_threads(&ThreadQuery::for_property(property_id.clone()))
                .await
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for t in listing.items.iter().filter(|t| {
                !t.is_closed && t.property_id.as_deref().is_none_or(|p| p == property_id)
            }) {
                let state = self.known_state(&t.id).await;
                out.push(snapshot_of(t, &state));
            }
            Ok(out)
        })
    }

    fn property(&self, property_id: &str) -> PropertyInfo {
        self.config.property_info(property_id)
    }

    fn properties(&self) -> Vec<String> {
        if self.config.channex.property_ids.is_empty() {
            self.config.properties.keys().cloned().collect()
        } else {
            self.config.channex.property_ids.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(property_ids: &[&str], requests_per_minute: u32) -> NudgeGate {
        let mut config = Config::default();
        config.channex.property_ids = property_ids.iter().map(|p| p.to_string()).collect();
        config.channex.requests_per_minute = requests_per_minute;
        NudgeGate::new(&config)
    }

    #[test]
    fn a_nudge_without_a_property_costs_one_poll_per_configured_property() {
        // A budget of 6 nudged polls a minute; each sweep polls 3 properties.
        let mut g = gate(&["p1", "p2", "p3"], 24);
        let now = Instant::now();
        assert_eq!(g.admit(None, now), Some(None));
        assert_eq!(g.admit(None, now), Some(None));
        assert_eq!(g.admit(None, now), None, "a third sweep is over the budget");
    }

    #[test]
    fn a_full_sweep_coalesces_nudges_without_a_property() {
        let mut g = gate(&["p1", "p2"], 6000);
        let now = Instant::now();
        assert_eq!(g.admit(None, now), Some(None));
        g.polled(None, now);
        g.polled(Some("p1"), now);
        g.polled(Some("p2"), now);
        assert_eq!(g.admit(None, now), None, "deferred, not polled again");
        assert_eq!(g.take_due(now + NUDGE_MIN_GAP), Some(None));
    }

    #[test]
    fn poll_times_older_than_the_gap_are_forgotten() {
        let mut g = gate(&[], 600_000);
        let t0 = Instant::now();
        for i in 0..1000 {
            let p = format!("made-up-{i}");
            assert!(g.admit(Some(p.clone()), t0).is_some());
            g.polled(Some(&p), t0);
        }
        g.polled(None, t0 + 2 * NUDGE_MIN_GAP);
        assert_eq!(g.last_poll.len(), 1);
    }
}
