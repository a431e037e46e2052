//! Response times and the OTAs' scores (issue 24): who answered each guest message first,
//! how fast, and what that makes of the Airbnb response rate and the Booking.com Reply
//! Score, per property.
//!
//! Owns the [`Tracker`] (run with the worker role): two durable pull consumers, one on
//! the events stream (who wrote when) and one on the audit stream (what concierge sent,
//! marked or had approved), folding each into the thread's record
//! ([`crate::store::responses`]) by compare-and-set; the response-time histogram
//! (`concierge_response_seconds{provider, answered_by}`, observed once per message by the
//! writer whose update answered it); and, through [`watch`], the score gauges and the
//! score alerts. [`scores`] is the pure arithmetic, [`report`] the report, [`ingest`] the
//! reading of events and audit records.
//! Must not: call Channex (everything comes from what concierge already reads and
//! records), send alerts itself (a score alert is a follow-up timer that the rules turn
//! into an `alert`, see `rules/35_response_alert.rhai`), nor change events or the audit
//! log.
//!
//! Both consumers start at the beginning of their streams, so a first start builds the
//! records of everything still stored (events: `nats.events_max_age`), and any number of
//! workers share them.

pub mod ingest;
pub mod report;
pub mod scores;
pub mod watch;

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures::StreamExt;
use tokio::sync::watch as signal;

use crate::base::clock::{system_clock, Clock};
use crate::config::ResponsesConfig;
use crate::events::Event;
use crate::store::audit::AuditRecord;
use crate::store::nats::{audit_stream, events_stream, Infra, StoreError};
use crate::store::responses::ResponseStore;
use crate::store::timers::FollowUps;

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("response tracker: consumer {consumer} on {stream}: {message}")]
    Consumer {
        consumer: String,
        stream: String,
        message: String,
    },
}

/// Properties whose records changed since their scores were last looked at.
#[derive(Clone, Default)]
pub struct Dirty(Arc<Mutex<HashSet<String>>>);

impl Dirty {
    pub fn mark(&self, property_id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(property_id.to_string());
    }

    pub fn take(&self) -> Vec<String> {
        let mut set = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        set.drain().collect()
    }
}

/// The response tracker. Cheap to clone.
#[derive(Clone)]
pub struct Tracker {
    pub(crate) store: ResponseStore,
    pub(crate) followups: FollowUps,
    js: jetstream::Context,
    prefix: String,
    consumer: String,
    retention: Duration,
    pub(crate) cfg: ResponsesConfig,
    pub(crate) clock: Clock,
    pub(crate) dirty: Dirty,
}

/// The two sources a tracker consumes.
#[derive(Debug, Clone, Copy)]
enum Source {
    Events,
    Audit,
}

impl Tracker {
    /// `consumer` names both durables (one per stream); `retention` is
    /// `nats.responses_max_age` (records are pruned to it on every write).
    pub fn new(
        infra: &Infra,
        prefix: &str,
        consumer: &str,
        retention: Duration,
        cfg: ResponsesConfig,
    ) -> Self {
        Tracker {
            store: ResponseStore::new(
                infra.js.clone(),
                infra.responses.clone(),
                &infra.names.responses_bucket(),
            ),
            followups: FollowUps::new(infra.followups.clone()),
            js: infra.js.clone(),
            prefix: prefix.to_string(),
            consumer: consumer.to_string(),
            retention,
            cfg,
            clock: system_clock(),
            dirty: Dirty::default(),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn store(&self) -> &ResponseStore {
        &self.store
    }

    /// Oldest fact a record keeps (Unix µs).
    fn cutoff(&self) -> i64 {
        let retention =
            chrono::TimeDelta::from_std(self.retention).unwrap_or(chrono::TimeDelta::MAX);
        ((self.clock)() - retention).timestamp_micros()
    }

    /// Folds one event into its thread's record.
    pub async fn fold_event(&self, event: &Event) -> Result<(), StoreError> {
        match ingest::from_event(event) {
            Some(facts) => self.fold(&facts).await,
            None => Ok(()),
        }
    }

    /// Folds one audit record into its thread's record.
    pub async fn fold_audit(&self, record: &AuditRecord) -> Result<(), StoreError> {
        match ingest::from_audit(record) {
            Some(facts) => self.fold(&facts).await,
            None => Ok(()),
        }
    }

    async fn fold(&self, facts: &ingest::Facts) -> Result<(), StoreError> {
        let updated = self
            .store
            .update(&facts.property_id, &facts.thread_id, self.cutoff(), |r| {
                ingest::apply(r, facts)
            })
            .await?;
        let Some((before, after)) = updated else {
            return Ok(());
        };
        let before = scores::responses(&before);
        for r in scores::newly_answered(&before, &scores::responses(&after)) {
            if let (Some(answer), Some(elapsed)) = (&r.answer, r.response_time()) {
                metrics::histogram!(
                    "concierge_response_seconds",
                    "provider" => r.channel.as_str(),
                    "answered_by" => answer.by.as_str()
                )
                .record(elapsed.num_milliseconds().max(0) as f64 / 1000.0);
            }
        }
        self.dirty.mark(&facts.property_id);
        Ok(())
    }

    /// Consumes both streams and keeps the scores watched until `shutdown`.
    pub async fn run(self, shutdown: signal::Receiver<bool>) -> Result<(), TrackerError> {
        let events = self.consume(Source::Events, shutdown.clone());
        let audit = self.consume(Source::Audit, shutdown.clone());
        let watcher = watch::run(self.clone(), shutdown);
        let (events, audit, ()) = tokio::join!(events, audit, watcher);
        events.and(audit)
    }

    async fn consumer(
        &self,
        source: Source,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, TrackerError> {
        let (stream_name, filter) = match source {
            Source::Events => (
                events_stream(&self.prefix),
                format!("{}.events.>", self.prefix),
            ),
            Source::Audit => (
                audit_stream(&self.prefix),
                format!("{}.audit.>", self.prefix),
            ),
        };
        let err = |message: String| TrackerError::Consumer {
            consumer: self.consumer.clone(),
            stream: stream_name.clone(),
            message,
        };
        let stream = self
            .js
            .get_stream(&stream_name)
            .await
            .map_err(|e| err(e.to_string()))?;
        let wanted = pull::Config {
            durable_name: Some(self.consumer.clone()),
            filter_subject: filter,
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            max_ack_pending: 1_000,
            ..Default::default()
        };
        match stream.create_consumer(wanted).await {
            Ok(c) => Ok(c),
            Err(create) => stream
                .get_consumer(&self.consumer)
                .await
                .map_err(|e| err(format!("{create}; and reading the existing one: {e}"))),
        }
    }

    async fn consume(
        &self,
        source: Source,
        mut shutdown: signal::Receiver<bool>,
    ) -> Result<(), TrackerError> {
        let consumer = self.consumer(source).await?;
        loop {
            let mut messages = match consumer.messages().await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(?source, error = %e, "response tracker: cannot pull yet");
                    if sleep_or_shutdown(&mut shutdown, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            loop {
                let next = tokio::select! {
                    _ = shutdown.changed() => return Ok(()),
                    m = messages.next() => m,
                };
                match next {
                    Some(Ok(msg)) => self.handle(source, msg).await,
                    // A lost pull (fail-over, missed heartbeat): open a fresh one.
                    Some(Err(e)) => {
                        tracing::debug!(?source, error = %e, "response tracker: reopening the pull");
                        break;
                    }
                    None => break,
                }
            }
            if sleep_or_shutdown(&mut shutdown, Duration::from_millis(200)).await {
                return Ok(());
            }
        }
    }

    /// Folds one message and acks it; a NATS failure naks it for a later try, an
    /// undecodable payload is acked and left alone (it cannot become readable).
    async fn handle(&self, source: Source, msg: jetstream::Message) {
        let folded = match source {
            Source::Events => match serde_json::from_slice::<Event>(&msg.payload) {
                Ok(e) => self.fold_event(&e).await,
                Err(_) => Ok(()),
            },
            Source::Audit => match serde_json::from_slice::<AuditRecord>(&msg.payload) {
                Ok(r) => self.fold_audit(&r).await,
                Err(_) => Ok(()),
            },
        };
        let ack = match folded {
            Ok(()) => msg.ack().await,
            Err(e) => {
                tracing::warn!(?source, error = %e, "response record not updated; retrying later");
                msg.ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                    .await
            }
        };
        if let Err(e) = ack {
            tracing::debug!(?source, error = %e, "response tracker: ack failed (folding again is harmless)");
        }
    }
}

/// Sleeps `d`; true when shutdown came first (or was already asked for).
async fn sleep_or_shutdown(shutdown: &mut signal::Receiver<bool>, d: Duration) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(d) => *shutdown.borrow(),
    }
}
