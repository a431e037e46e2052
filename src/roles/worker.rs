//! The worker role: a durable pull consumer on `CONCIERGE_EVENTS` shared by every worker
//! process; for each event it takes the current content snapshot, calls
//! [`crate::plan::plan`] (on the planning threads), hands each rendered step to the executor,
//! audits every decision and acks only when every step has a final outcome.
//!
//! Owns delivery semantics: explicit acks, progress heartbeats while an event is being
//! worked on (so a slow Channex call does not trigger a redelivery), delayed naks for
//! transient failures, in-place waits (not redeliveries) while NATS itself is unreachable
//! or another worker holds an action's claim, the `max_deliver` cut-off with a `failed`
//! record, and graceful shutdown (stop pulling, finish in-flight events, ack, return).
//! It must not call Channex or write to the ledger itself (the executor's job), nor
//! evaluate rules or render templates itself (the planner's job).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, AckKind};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::watch;

use crate::base::clock::Clock;
use crate::config::WorkerConfig;
use crate::content::LiveRules;
use crate::events::Event;
use crate::plan::rules::RuleEngine;
use crate::plan::{plan_in_pool, Content};
use crate::roles::executor::{ActionResult, Executor};
use crate::store::audit::{AuditError, AuditLog, AuditRecord};
use crate::store::nats::events_stream;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("consumer setup failed: {0}")]
    Consumer(String),
    #[error("pulling events failed: {0}")]
    Pull(String),
}

/// What happened to one event.
#[derive(Debug, Default)]
pub struct EventReport {
    pub records: Vec<AuditRecord>,
    /// Actions that must be tried again (transient failures), with the reason.
    pub pending: Vec<String>,
    /// What waits on something that time resolves, with the reason: NATS itself
    /// unreachable (ledger, timer store or audit stream), or an action claimed by another
    /// worker. Nothing is wrong with the event or its actions.
    pub waiting: Vec<String>,
}

impl EventReport {
    pub fn is_final(&self) -> bool {
        self.pending.is_empty() && self.waiting.is_empty()
    }

    /// Everything left to do is waiting (for NATS or a claim), nothing needs a redelivery.
    fn only_waiting(&self) -> bool {
        self.pending.is_empty() && !self.waiting.is_empty()
    }

    fn reasons(&self) -> String {
        self.pending
            .iter()
            .chain(&self.waiting)
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// First pause before an event whose only obstacle is NATS is tried again in place; it
/// doubles up to [`NATS_RETRY_MAX_PAUSE`].
const NATS_RETRY_FIRST_PAUSE: Duration = Duration::from_millis(250);
const NATS_RETRY_MAX_PAUSE: Duration = Duration::from_secs(5);

/// Waiting in place for NATS: a doubling pause, within a time budget, cut short by shutdown.
struct NatsWait {
    started: Instant,
    budget: Duration,
    pause: Duration,
    shutdown: watch::Receiver<bool>,
}

impl NatsWait {
    fn is_over(&self) -> bool {
        self.started.elapsed() >= self.budget || *self.shutdown.borrow()
    }

    /// Sleeps the current pause and doubles the next one; false if shutdown came first.
    async fn sleep(&mut self) -> bool {
        let pause = self.pause;
        self.pause = (pause * 2).min(NATS_RETRY_MAX_PAUSE);
        tokio::select! {
            _ = tokio::time::sleep(pause) => true,
            _ = self.shutdown.changed() => false,
        }
    }
}

#[derive(Clone)]
pub struct Worker {
    pub(crate) engine: Arc<RuleEngine>,
    pub(crate) live: Arc<LiveRules>,
    pub(crate) executor: Executor,
    pub(crate) audit: AuditLog,
    pub(crate) cfg: WorkerConfig,
    /// Evaluation time source: `now()` inside rules (injectable for tests). Records are
    /// stamped with the executor's clock.
    pub(crate) clock: Clock,
}

/// Every 5 s until shutdown: the consumer's pending and ack-pending counts as gauges.
async fn report_consumer_gauges(
    mut consumer: jetstream::consumer::Consumer<pull::Config>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut every = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = every.tick() => {}
        }
        if let Ok(info) = consumer.info().await {
            metrics::gauge!("concierge_consumer_pending").set(info.num_pending as f64);
            metrics::gauge!("concierge_consumer_ack_pending").set(info.num_ack_pending as f64);
        }
    }
}

pub async fn ensure_consumer(
    js: &jetstream::Context,
    prefix: &str,
    cfg: &WorkerConfig,
) -> Result<jetstream::consumer::Consumer<pull::Config>, WorkerError> {
    let err = |e: &dyn std::fmt::Display| WorkerError::Consumer(e.to_string());
    let stream = js
        .get_stream(events_stream(prefix))
        .await
        .map_err(|e| err(&e))?;
    let wanted = pull::Config {
        durable_name: Some(cfg.consumer.clone()),
        filter_subject: format!("{prefix}.events.>"),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: cfg.ack_wait,
        max_deliver: cfg.max_deliver + 1,
        max_ack_pending: 10_000,
        ..Default::default()
    };
    // An existing durable with the same name is reused (nats-server 2.9 cannot update
    // most consumer fields in place; change `worker.consumer` to roll out new settings).
    match stream.create_consumer(wanted).await {
        Ok(c) => Ok(c),
        Err(create_err) => stream.get_consumer(&cfg.consumer).await.map_err(|e| {
            WorkerError::Consumer(format!("{create_err}; and reading the existing one: {e}"))
        }),
    }
}

impl Worker {
    pub fn new(
        engine: Arc<RuleEngine>,
        live: Arc<LiveRules>,
        executor: Executor,
        audit: AuditLog,
        cfg: WorkerConfig,
    ) -> Self {
        Worker {
            engine,
            live,
            executor,
            audit,
            cfg,
            clock: crate::base::clock::system_clock(),
        }
    }

    /// Fault injection for tests (see [`crate::roles::executor::CrashPoint`]).
    pub fn with_crash_point(mut self, point: crate::roles::executor::CrashPoint) -> Self {
        self.executor = self.executor.with_crash_point(point);
        self
    }

    /// Test hooks on the executor (ledger clock, pause before a send).
    pub fn map_executor(mut self, f: impl FnOnce(Executor) -> Executor) -> Self {
        self.executor = f(self.executor);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Consume until `shutdown` turns true, then finish in-flight events and return.
    pub async fn run(
        &self,
        js: &jetstream::Context,
        prefix: &str,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), WorkerError> {
        let consumer = ensure_consumer(js, prefix, &self.cfg).await?;
        let gauge = tokio::spawn(report_consumer_gauges(consumer.clone(), shutdown.clone()));
        let open = || async {
            consumer
                .stream()
                .max_messages_per_batch(self.cfg.concurrency.max(1))
                .heartbeat(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|e| WorkerError::Pull(e.to_string()))
        };
        let mut messages = open().await?;
        let limit = Arc::new(tokio::sync::Semaphore::new(self.cfg.concurrency.max(1)));
        let mut in_flight = tokio::task::JoinSet::new();
        tracing::info!(consumer = %self.cfg.consumer, "worker consuming");
        loop {
            let permit = tokio::select! {
                _ = shutdown.changed() => break,
                p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let next = tokio::select! {
                _ = shutdown.changed() => break,
                m = messages.next() => m,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // A missed heartbeat or a lost server (cluster fail-over) can leave the
                    // pull request dead: open a fresh one rather than wait on it forever.
                    tracing::warn!(error = %e, "pull error; reopening the pull subscription");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    match open().await {
                        Ok(fresh) => messages = fresh,
                        Err(e) => tracing::warn!(error = %e, "cannot reopen yet; retrying"),
                    }
                    continue;
                }
                None => break,
            };
            let worker = self.clone();
            let shutdown = shutdown.clone();
            in_flight.spawn(async move {
                worker.handle(msg, shutdown).await;
                drop(permit);
            });
            while in_flight.try_join_next().is_some() {}
        }
        // Stop pulling: dropping the stream ends the pull request, so no new messages
        // are handed to us; the in-flight ones are finished and acked.
        drop(messages);
        let deadline = tokio::time::sleep(self.cfg.shutdown_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => {
                    tracing::warn!(left = in_flight.len(), "shutdown timeout: unfinished events will be redelivered");
                    in_flight.abort_all();
                    break;
                }
                next = in_flight.join_next() => if next.is_none() { break },
            }
        }
        gauge.abort();
        tracing::info!("worker stopped");
        Ok(())
    }

    /// Handle one JetStream message: process, then ack, nak with delay, or give up.
    /// `shutdown` cuts short the in-place waits for NATS (the event is then redelivered).
    pub async fn handle(&self, msg: jetstream::Message, shutdown: watch::Receiver<bool>) {
        let delivery = msg.info().map(|i| i.delivered).unwrap_or(1).max(1) as u64;
        let event: Event = match serde_json::from_slice(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                let r = AuditRecord::malformed_event(
                    seq,
                    &msg.subject,
                    &e.to_string(),
                    self.executor.now(),
                );
                let written = self
                    .with_heartbeat(&msg, self.record_patiently(&r, shutdown))
                    .await;
                if written {
                    let _ = msg.ack_with(AckKind::Term).await;
                } else {
                    let _ = msg.ack_with(AckKind::Nak(Some(self.cfg.retry_delay))).await;
                }
                return;
            }
        };
        metrics::counter!("concierge_events_consumed_total", "type" => event.event_type.as_str())
            .increment(1);
        let report = self
            .with_heartbeat(
                &msg,
                self.process_event_patiently(&event, delivery, shutdown.clone()),
            )
            .await;
        if report.is_final() {
            if let Err(e) = msg.double_ack().await {
                tracing::warn!(event = %event.id, error = %e, "ack failed; the event may be redelivered (actions are idempotent)");
            }
            return;
        }
        // Cut short by shutdown while only waiting was in the way: that is no reason to give
        // up on the event (the consumer allows one delivery beyond `max_deliver` for this).
        let interrupted = *shutdown.borrow() && report.only_waiting();
        if delivery >= self.cfg.max_deliver as u64 && !interrupted {
            let r = AuditRecord::gave_up(&event, delivery, &report.reasons(), self.executor.now());
            // The server delivers this event no more: the record must get through here.
            if self
                .with_heartbeat(&msg, self.record_patiently(&r, shutdown))
                .await
            {
                let _ = msg.ack_with(AckKind::Term).await;
                return;
            }
        }
        tracing::warn!(
            event = %event.id,
            delivery,
            pending = %report.reasons(),
            "event not finished; it will be redelivered"
        );
        if let Err(e) = msg.ack_with(AckKind::Nak(Some(self.cfg.retry_delay))).await {
            tracing::warn!(event = %event.id, error = %e, "nak failed; the event is redelivered after ack_wait");
        }
    }

    /// Runs `work` while telling the server every `ack_wait / 3` that the message is still
    /// being worked on, so a slow action (Channex retries) or a wait for NATS does not
    /// outlive `ack_wait` and get the event redelivered to another worker meanwhile.
    async fn with_heartbeat<T>(
        &self,
        msg: &jetstream::Message,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let heartbeat_every = (self.cfg.ack_wait / 3).max(Duration::from_millis(100));
        tokio::pin!(work);
        let mut ticker = tokio::time::interval(heartbeat_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                r = &mut work => return r,
                _ = ticker.tick() => { let _ = msg.ack_with(AckKind::Progress).await; }
            }
        }
    }

    /// An in-place wait for NATS bounded by `ack_wait` and shutdown. The first pause is
    /// never shorter than `retry_delay`, the pause a redelivery would have had (after a send
    /// whose ledger marks failed, the re-run finds the message by reading the thread, which
    /// must have had time to show it).
    fn nats_wait(&self, shutdown: watch::Receiver<bool>) -> NatsWait {
        NatsWait {
            started: Instant::now(),
            budget: self.cfg.ack_wait,
            pause: self
                .cfg
                .retry_delay
                .clamp(NATS_RETRY_FIRST_PAUSE, NATS_RETRY_MAX_PAUSE),
            shutdown,
        }
    }

    /// [`Self::process_event`], repeated in place while all that is in the way is NATS
    /// itself (ledger, timer store or audit stream unreachable, as during a cluster
    /// fail-over) or another worker's live claim on an action (its outcome, or the claim's
    /// expiry, is a matter of time), so that neither uses up the event's deliveries and
    /// ends it as `failed`. The
    /// rules, templates and clock are taken once, so every run plans the same actions; the
    /// ledger keeps each claimed action effectively-once and audit ids are deterministic.
    /// After `ack_wait`, or on shutdown, the event is left to the redelivery.
    async fn process_event_patiently(
        &self,
        event: &Event,
        delivery: u64,
        shutdown: watch::Receiver<bool>,
    ) -> EventReport {
        let content = self.live.current();
        let now = (self.clock)();
        let mut wait = self.nats_wait(shutdown);
        loop {
            let report = self
                .process_event_with(event, delivery, &content, now)
                .await;
            if !report.only_waiting() || wait.is_over() {
                return report;
            }
            tracing::warn!(
                event = %event.id,
                reason = %report.reasons(),
                retry_in = ?wait.pause,
                "waiting for NATS or another worker's claim; retrying the event in place"
            );
            if !wait.sleep().await {
                return report;
            }
        }
    }

    /// Write one record, retrying in place (as above) for up to `ack_wait` or until shutdown.
    async fn record_patiently(
        &self,
        record: &AuditRecord,
        shutdown: watch::Receiver<bool>,
    ) -> bool {
        let mut wait = self.nats_wait(shutdown);
        loop {
            let error = match self.audit.record(record).await {
                Ok(()) => return true,
                Err(e) => e,
            };
            let waiting_helps = matches!(
                error,
                AuditError::Publish {
                    unavailable: true,
                    ..
                }
            );
            if !waiting_helps || wait.is_over() {
                tracing::warn!(id = %record.id, %error, "audit write failed");
                return false;
            }
            tracing::warn!(id = %record.id, %error, retry_in = ?wait.pause, "audit write failed; retrying");
            if !wait.sleep().await {
                return false;
            }
        }
    }

    /// Run the current rules on one event and carry out the plan. Every final decision is
    /// audited before this returns; actions that need another try are listed in `pending`,
    /// what waits (for NATS or a claim) in `waiting`.
    pub async fn process_event(&self, event: &Event, delivery: u64) -> EventReport {
        let content = self.live.current();
        self.process_event_with(event, delivery, &content, (self.clock)())
            .await
    }

    async fn process_event_with(
        &self,
        event: &Event,
        delivery: u64,
        content: &Arc<Content>,
        now: DateTime<Utc>,
    ) -> EventReport {
        let mut report = EventReport::default();
        let mut finals: Vec<AuditRecord> = Vec::new();
        if let Some(skip) = self.own_message_skip(event).await {
            match skip {
                Ok(record) => self.audit_all(&mut report, vec![record]).await,
                Err(e) => report.waiting.push(e),
            }
            return report;
        }
        let started = Instant::now();
        let dry_run = self.executor.dry_run_configured(&event.property.id);
        // On the planning threads: a rule spending its whole budget must not hold this thread.
        let plan = match plan_in_pool(&self.engine, content, event, now, dry_run).await {
            Ok(plan) => plan,
            Err(e) => {
                report.pending.push(e.to_string());
                return report;
            }
        };
        metrics::histogram!("concierge_rule_evaluation_seconds")
            .record(started.elapsed().as_secs_f64());
        for rule in &plan.rules {
            if let Some(problem) = &rule.error {
                finals.push(AuditRecord::rule_error(
                    event,
                    &rule.rule,
                    &rule.version,
                    problem.to_string(),
                    u64::try_from(rule.elapsed.as_millis()).unwrap_or(u64::MAX),
                    self.executor.now(),
                ));
                continue;
            }
            for step in &rule.steps {
                // The step, then the files of a reply that went out.
                for result in self.executor.execute_step(event, step, delivery).await {
                    match result {
                        ActionResult::Final(record) => finals.push(*record),
                        ActionResult::Retry { reason } => report
                            .pending
                            .push(format!("{}: {reason}", step.key(&event.id))),
                        ActionResult::Wait { reason } => report
                            .waiting
                            .push(format!("{}: {reason}", step.key(&event.id))),
                    }
                }
            }
        }
        self.audit_all(&mut report, finals).await;
        report
    }

    /// Every final decision is audited before the event is acked; a record that could not
    /// be written keeps the event unfinished (the next run, in place or redelivered, finds
    /// the action done in the ledger and writes the same record id again).
    async fn audit_all(&self, report: &mut EventReport, records: Vec<AuditRecord>) {
        let results = self.audit.record_all(&records).await;
        for (record, result) in records.into_iter().zip(results) {
            match result {
                Ok(()) => report.records.push(record),
                Err(AuditError::Publish {
                    id,
                    message,
                    unavailable: true,
                }) => report.waiting.push(format!("audit {id}: {message}")),
                Err(e) => report.pending.push(e.to_string()),
            }
        }
    }

    /// Messages this service sent itself never trigger rules (loop safety), including one
    /// whose sender died between the POST and marking it as its own (`send.` note).
    async fn own_message_skip(&self, event: &Event) -> Option<Result<AuditRecord, String>> {
        let message = event.message.as_ref()?;
        if message.sender != crate::events::Sender::Property {
            return None;
        }
        let thread_id = event.thread.as_ref().map_or("", |t| t.id.as_str());
        let ours = self
            .executor
            .ledger()
            .is_ours(thread_id, &message.id, &message.text, message.inserted_at)
            .await;
        match ours {
            Ok(true) => Some(Ok(AuditRecord::own_message(event, self.executor.now()))),
            Ok(false) => None,
            Err(e) => Some(Err(e.to_string())),
        }
    }
}
