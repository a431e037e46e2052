//! Building each role from a validated [`Config`] and a NATS [`Infra`]: the one place that
//! knows how the pieces plug together, shared by `concierge run`, `concierge demo`, the
//! integration tests and the benchmarks.
//!
//! It passes the real clock ([`system_clock`]) to the roles that judge time (poller,
//! scheduler) and to the audit of rejected reloads, and gives the scheduler its
//! Channex-backed thread directory ([`ChannexDirectory`]).
//!
//! It must not read the environment or the command line (the CLI does), nor run anything
//! by itself: it returns the roles, ready to `run`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::base::clock::{system_clock, Clock};
use crate::channex::{ApiKey, ChannexClient, ClientOptions};
use crate::config::Config;
use crate::content::{LiveRules, ReloadReport};
use crate::plan::rules::{RuleEngine, RuleLimits};
use crate::roles::console::{Console, ConsoleDeps, ReloadStatus};
use crate::roles::directory::ChannexDirectory;
use crate::roles::executor::alerts::AlertSinks;
use crate::roles::executor::{Executor, ExecutorSettings};
use crate::roles::poller::Poller;
use crate::roles::responses::Tracker;
use crate::roles::scheduler::Scheduler;
use crate::roles::worker::Worker;
use crate::store::audit::{AuditLog, AuditRecord};
use crate::store::ledger::Ledger;
use crate::store::nats::Infra;
use crate::store::timers::FollowUps;

pub fn channex_client(config: &Config) -> anyhow::Result<ChannexClient> {
    let mut opts = ClientOptions::new(
        config.channex.base_url.clone(),
        ApiKey::new(config.channex.api_key.expose()),
    );
    opts.requests_per_minute = config.channex.requests_per_minute;
    opts.max_retries = config.channex.max_retries;
    opts.timeout = config.channex.timeout;
    ChannexClient::new(opts).context("building the Channex client")
}

pub fn poller(
    config: &Config,
    infra: &Infra,
    channex: ChannexClient,
    backfill: Option<Duration>,
) -> Poller {
    Poller::new(channex, infra, Arc::new(config.clone()), backfill).with_clock(system_clock())
}

/// The scheduler (follow-up timers and cron schedules), leader-elected.
pub fn scheduler(config: &Config, infra: &Infra, channex: ChannexClient) -> Scheduler {
    let config = Arc::new(config.clone());
    let directory = Arc::new(ChannexDirectory::new(channex, infra, config.clone()));
    Scheduler::new(
        infra,
        directory,
        config.schedules.clone(),
        format!("scheduler-{}", uuid::Uuid::new_v4()),
        config.poller.lease_ttl,
    )
    .with_clock(system_clock())
}

/// The executor with its ledger, follow-up store and alert sinks.
pub fn executor(
    config: &Config,
    infra: &Infra,
    channex: ChannexClient,
    worker_id: &str,
) -> Executor {
    let dry = {
        let config = config.clone();
        Arc::new(move |property_id: &str| config.is_dry_run(property_id))
    };
    Executor::new(
        channex,
        // A claim not renewed for ack_wait belongs to a worker that died: by then JetStream
        // has redelivered the event. Live holders renew theirs (executor::claim).
        Ledger::new(infra.ledger.clone(), worker_id, config.worker.ack_wait),
        FollowUps::new(infra.followups.clone()),
        AlertSinks::new(
            &config.alerts,
            config
                .alerts
                .nats
                .then(|| (infra.client.clone(), config.nats.prefix.clone())),
        ),
        ExecutorSettings {
            cooldown: config.rules.cooldown,
            dry_run: dry,
            crash_at: None,
            send_timeout: config.channex.timeout,
            before_send: None,
            timer_horizon: config
                .nats
                .followups_max_age
                .saturating_sub(Duration::from_secs(86_400)),
        },
    )
}

/// A worker with live-reloaded rules; rejected reloads become `rule_rejected` audit records.
/// The file watcher lives as long as the worker (or the returned handle).
pub async fn worker(
    config: &Config,
    infra: &Infra,
    channex: ChannexClient,
) -> anyhow::Result<(Worker, Arc<LiveRules>)> {
    worker_reporting(config, infra, channex, ReloadStatus::default()).await
}

/// [`worker`], noting the time of every reload in `reloads` (the console's rules page).
pub async fn worker_reporting(
    config: &Config,
    infra: &Infra,
    channex: ChannexClient,
    reloads: ReloadStatus,
) -> anyhow::Result<(Worker, Arc<LiveRules>)> {
    let worker_id = format!("worker-{}", uuid::Uuid::new_v4());
    let engine = Arc::new(RuleEngine::new(RuleLimits::default()));
    let audit = AuditLog::new(infra.js.clone(), &config.nats.prefix);
    let live = if config.rules.watch {
        let (live, reports) = LiveRules::watch(
            &config.rules.dir,
            &config.rules.templates_dir,
            engine.clone(),
        );
        tokio::spawn(forward_reload_reports_to(
            reports,
            Some(audit.clone()),
            system_clock(),
            reloads.clone(),
        ));
        live
    } else {
        let (live, report) = LiveRules::load(
            &config.rules.dir,
            &config.rules.templates_dir,
            engine.clone(),
        );
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.try_send(report);
        tokio::spawn(forward_reload_reports_to(
            rx,
            Some(audit.clone()),
            system_clock(),
            reloads.clone(),
        ));
        live
    };
    reloads.record(system_clock()());
    let live = Arc::new(live);
    let executor = executor(config, infra, channex, &worker_id);
    let worker = Worker::new(engine, live.clone(), executor, audit, config.worker.clone());
    Ok((worker, live))
}

/// Every rejected file of a reload becomes a `rule_rejected` audit record, stamped by
/// `clock`.
pub async fn forward_reload_reports(
    reports: tokio::sync::mpsc::Receiver<ReloadReport>,
    audit: AuditLog,
    clock: Clock,
) {
    forward_reload_reports_to(reports, Some(audit), clock, ReloadStatus::default()).await
}

/// [`forward_reload_reports`] that also notes each reload's time in `reloads`; without
/// `audit` (a console-only process watching the same files as its workers) rejections
/// are only logged, so they are not audited twice.
pub async fn forward_reload_reports_to(
    mut reports: tokio::sync::mpsc::Receiver<ReloadReport>,
    audit: Option<AuditLog>,
    clock: Clock,
    reloads: ReloadStatus,
) {
    while let Some(report) = reports.recv().await {
        reloads.record(clock());
        for accepted in &report.accepted {
            tracing::info!(file = %accepted.0.display(), version = %accepted.1, "rule reloaded");
        }
        for problem in &report.rejected {
            tracing::error!(problem = %problem, "rule file rejected; the last good version keeps running");
            let Some(audit) = &audit else { continue };
            let r = AuditRecord::reload_rejected(&problem.file, problem.to_string(), clock());
            if let Err(e) = audit.record(&r).await {
                tracing::warn!(error = %e, "could not audit a rejected rule");
            }
        }
    }
}

/// The response tracker of the worker role (`None` with `responses.enabled = false`): its
/// durable consumers are named after `worker.consumer`.
pub fn responses(config: &Config, infra: &Infra) -> Option<Tracker> {
    config.responses.enabled.then(|| {
        Tracker::new(
            infra,
            &config.nats.prefix,
            &format!("{}-responses", config.worker.consumer),
            config.nats.responses_max_age,
            config.responses.clone(),
        )
    })
}

/// The web console, or `None` when `[console] token` is empty (console off). `live` is the
/// worker's live rules when this process runs one; otherwise the console watches the rule
/// files itself (its reloads are not audited: the workers do that).
pub fn console(
    config: &Config,
    infra: &Infra,
    channex: ChannexClient,
    live: Option<Arc<LiveRules>>,
    reloads: ReloadStatus,
) -> Option<Console> {
    if config.console.token.is_empty() {
        return None;
    }
    let engine = Arc::new(RuleEngine::new(RuleLimits::default()));
    let live = live.unwrap_or_else(|| {
        let (live, reports) = LiveRules::watch(
            &config.rules.dir,
            &config.rules.templates_dir,
            engine.clone(),
        );
        reloads.record(system_clock()());
        tokio::spawn(forward_reload_reports_to(
            reports,
            None,
            system_clock(),
            reloads.clone(),
        ));
        Arc::new(live)
    });
    Console::new(ConsoleDeps {
        config: Arc::new(config.clone()),
        infra: infra.clone(),
        channex,
        live,
        engine,
        reloads,
        clock: system_clock(),
    })
}
