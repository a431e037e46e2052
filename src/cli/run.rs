//! `concierge run`, `concierge sim` and `concierge demo`: starting the roles, the HTTP
//! listener and the signal handling of one process.
//!
//! Owns: which roles `--role` starts, readiness, and reading what the demo needs from the
//! environment (`NATS_URL`). Must not build roles itself (that is [`crate::wiring`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use super::{DemoArgs, Role, RunArgs, SimArgs};
use crate::channex::ChannexClient;
use crate::config::Config;
use crate::content::LiveRules;
use crate::roles::console::ReloadStatus;
use crate::roles::worker::Worker;
use crate::store::nats::Infra;
use crate::wiring;

/// Flip `shutdown` on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
        tracing::info!("shutdown requested: finishing in-flight work");
        let _ = tx.send(true);
    });
    rx
}

struct Ready {
    client: async_nats::Client,
    rules_loaded: Arc<AtomicBool>,
}

impl crate::http::Readiness for Ready {
    fn ready(&self) -> Result<(), String> {
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err("NATS not connected".into());
        }
        if !self.rules_loaded.load(Ordering::Relaxed) {
            return Err("rules not loaded".into());
        }
        Ok(())
    }
}

pub async fn run(config: Config, args: RunArgs) -> anyhow::Result<()> {
    let shutdown = shutdown_on_signals();
    let infra = Infra::setup(&config.nats)
        .await
        .context("connecting to NATS")?;
    let channex = wiring::channex_client(&config)?;
    let rules_loaded = Arc::new(AtomicBool::new(!matches!(
        args.role,
        Role::All | Role::Worker
    )));
    let (nudge_tx, nudge_rx) = mpsc::channel(16);
    tokio::spawn(crate::roles::poller::publish_nudges(
        nudge_rx,
        infra.client.clone(),
        config.nats.prefix.clone(),
    ));
    // The worker is built first so the console shows its live rules.
    let reloads = ReloadStatus::default();
    let worker = if args.role == Role::All || args.role == Role::Worker {
        let built =
            wiring::worker_reporting(&config, &infra, channex.clone(), reloads.clone()).await?;
        rules_loaded.store(true, Ordering::Relaxed);
        Some(built)
    } else {
        None
    };
    if !config.http.listen.is_empty() {
        let ready = Arc::new(Ready {
            client: infra.client.clone(),
            rules_loaded: rules_loaded.clone(),
        });
        let live = worker.as_ref().map(|(_, live)| live.clone());
        let console = wiring::console(&config, &infra, channex.clone(), live, reloads);
        if console.is_none() {
            tracing::info!("console off: set [console] token or CONCIERGE_CONSOLE_TOKEN");
        }
        let router = crate::http::router_with_console(
            ready,
            config.http.webhook_secret.clone(),
            Some(nudge_tx),
            crate::http::Limits::default(),
            console,
        );
        crate::http::serve(&config.http.listen, router, shutdown.clone()).await?;
    }
    let tasks = spawn_roles(&config, &infra, &channex, &args, &shutdown, worker)?;
    join_roles(tasks).await
}

/// Starts the roles `args.role` asks for, each as a task.
fn spawn_roles(
    config: &Config,
    infra: &Infra,
    channex: &ChannexClient,
    args: &RunArgs,
    shutdown: &watch::Receiver<bool>,
    worker: Option<(Worker, Arc<LiveRules>)>,
) -> anyhow::Result<tokio::task::JoinSet<anyhow::Result<()>>> {
    let mut tasks = tokio::task::JoinSet::new();
    let wants = |r: Role| args.role == Role::All || args.role == r;
    if wants(Role::Poller) {
        // Local pollers hear nudges through NATS like remote ones (see `publish_nudges`).
        let (local_nudges, local_nudge_rx) = mpsc::channel::<Option<String>>(1);
        let poller = wiring::poller(config, infra, channex.clone(), args.backfill);
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            let _keep_open = local_nudges;
            Ok(poller.run(shutdown, local_nudge_rx).await?)
        });
    }
    if wants(Role::Scheduler) {
        let scheduler = wiring::scheduler(config, infra, channex.clone());
        let shutdown = shutdown.clone();
        tasks.spawn(async move { Ok(scheduler.run(shutdown).await?) });
    }
    if worker.is_some() {
        if let Some(tracker) = wiring::responses(config, infra) {
            let shutdown = shutdown.clone();
            tasks.spawn(async move { Ok(tracker.run(shutdown).await?) });
        }
    }
    if let Some((worker, watcher)) = worker {
        let shutdown = shutdown.clone();
        let js = infra.js.clone();
        let prefix = config.nats.prefix.clone();
        tasks.spawn(async move {
            // The rule watcher lives as long as the worker runs.
            let _watcher = watcher;
            Ok(worker.run(&js, &prefix, shutdown).await?)
        });
    }
    Ok(tasks)
}

/// Waits for every role; the first error (if any) is the result.
async fn join_roles(mut tasks: tokio::task::JoinSet<anyhow::Result<()>>) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "role stopped with an error");
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("role task failed: {e}"));
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub async fn sim(args: SimArgs) -> anyhow::Result<()> {
    let opts = crate::sim::SimOptions {
        api_key: args.api_key,
        port: args.port,
        bind: args.bind,
        faults: crate::sim::FaultConfig {
            rate_429: args.fault_429,
            rate_500: args.fault_500,
            latency: args.latency.unwrap_or_default(),
            ..Default::default()
        },
    };
    crate::sim::serve_forever(opts, args.seed_demo).await
}

/// The demo, on the NATS server named by `NATS_URL` when set (else a private one).
pub async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    crate::demo::run(crate::demo::DemoOptions {
        keep_running: args.keep_running,
        nats_url: std::env::var("NATS_URL").ok().filter(|u| !u.is_empty()),
        serve: args.serve.then_some(args.listen),
    })
    .await
}
