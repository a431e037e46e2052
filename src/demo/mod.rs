//! `concierge demo`: the whole service on one machine, driven by a scripted conversation.
//!
//! Starts (or reuses) NATS, the Channex simulator, the poller, two workers and the
//! scheduler with the example rules in `rules/` and `templates/`, then plays a script — FAQ
//! questions, a stay whose dates move (its check-in instructions go out at the new time),
//! a Booking.com "thanks", a staff takeover of a delayed reply, an Airbnb inquiry
//! whose alert falls due within seconds, a stale thread — and prints a timeline of events and
//! audit records as they happen, then a summary. Exits non-zero if an expected outcome did
//! not happen within its time limit.
//!
//! With `--serve` ([`DemoOptions::serve`]) it also serves the web console on an HTTP
//! listener from the start (URL and a random token printed first, so the script can be
//! watched live), seeds a few conversations for the console after the script, prints the
//! URL and token again and keeps everything running until Ctrl-C (Ctrl-C during the script
//! stops the demo cleanly too).
//!
//! Parts: [`config`] (the demo's configuration), [`timeline`] (printing what happens),
//! [`script`] (the scenes), [`stay`] (the stay scene), [`summary`] (the closing report),
//! [`serve`] (the console).
//!
//! It must not depend on anything outside the process but `nats-server`: given a NATS URL
//! ([`DemoOptions::nats_url`], which the CLI takes from `NATS_URL`) it uses that server
//! under a throwaway prefix (and deletes its streams at the end), otherwise it starts a
//! private one. It must not read the environment itself.

mod config;
mod script;
mod serve;
mod stay;
mod summary;
mod timeline;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::content::LiveRules;
use crate::roles::console::ReloadStatus;
use crate::sim::{Sim, SimOptions, SimServer};
use crate::store::nats::{Infra, PrivateNatsServer};
use config::{demo_config, API_KEY, PROPERTY};
use timeline::{say, Stamp, Timeline};

/// What the command line passes to the demo.
#[derive(Debug, Clone, Default)]
pub struct DemoOptions {
    /// Keep the services running after the script (until Ctrl-C).
    pub keep_running: bool,
    /// An existing NATS server to use (under a throwaway prefix); `None`: start a private one.
    pub nats_url: Option<String>,
    /// Serve the web console on this address (e.g. `127.0.0.1:0`: any free port) with a
    /// random token, and keep running after the script until Ctrl-C.
    pub serve: Option<String>,
}

/// The NATS server the demo runs on.
struct DemoNats {
    url: String,
    prefix: String,
    /// A private server, stopped when dropped; `None` when using an external one.
    private: Option<PrivateNatsServer>,
}

/// The running roles of the demo.
struct Services {
    roles: tokio::task::JoinSet<anyhow::Result<()>>,
    /// The rule watchers of the workers: alive as long as the services.
    watchers: Vec<Arc<LiveRules>>,
    /// Kept open so the poller keeps listening for local nudges.
    _nudges: mpsc::Sender<Option<String>>,
    /// When the workers last (re)loaded their rules (the console's rules page).
    reloads: ReloadStatus,
}

/// What the demo runs on: NATS, the simulator, the configuration and the JetStream infra.
struct Stage {
    stamp: Stamp,
    nats: DemoNats,
    sim_server: SimServer,
    config: Config,
    infra: Infra,
    /// The console's token (used only with `--serve`).
    token: String,
}

async fn set_stage(options: &DemoOptions) -> anyhow::Result<Stage> {
    let stamp = Stamp(Instant::now());
    println!("concierge demo — the service end to end against a Channex simulator\n");
    let nats = start_nats(options.nats_url.clone(), &stamp)?;
    let sim_server = start_sim(&stamp).await?;
    let mut config = demo_config(&sim_server.base_url, &nats.url, &nats.prefix, Utc::now());
    let token = serve::random_token();
    if let Some(listen) = &options.serve {
        config = serve::with_console(config, listen, &token);
    }
    let infra = Infra::setup(&config.nats)
        .await
        .context("setting up JetStream")?;
    Ok(Stage {
        stamp,
        nats,
        sim_server,
        config,
        infra,
        token,
    })
}

pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let stage = set_stage(&options).await?;
    let (stamp, sim) = (stage.stamp, stage.sim_server.sim.clone());
    let stale = seed_stale_thread(&sim);
    let (shutdown_tx, shutdown) = watch::channel(false);
    // The timeline: every event and audit record, printed as it lands.
    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let subscription = (stage.infra.client)
        .subscribe(format!("{}.>", stage.nats.prefix))
        .await
        .context("subscribing to the demo subjects")?;
    let printer = timeline::spawn_printer(
        subscription,
        stage.nats.prefix.clone(),
        stamp,
        sim.clone(),
        timeline.clone(),
    );
    let services = start_services(&stage.config, &stage.infra, &shutdown).await?;
    say(
        &stamp,
        "poller, scheduler and 2 workers running with the example rules\n",
    );
    let console = match options.serve {
        Some(_) => Some(start_console(&stage, &services, &shutdown).await?),
        None => None,
    };
    // Let the first poll record its baseline (history is not replayed).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let script = script::Script {
        sim: &sim,
        stamp,
        timeline: timeline.clone(),
    };
    let played = match console {
        Some(console) => {
            let quiet = printer.abort_handle();
            serve_around(script.play(&stale), &sim, &stage, console, quiet).await
        }
        None => Played::Finished(script.play(&stale).await),
    };
    // Let trailing records land, then stop everything gracefully.
    tokio::time::sleep(Duration::from_millis(800)).await;
    if options.keep_running && played.is_ok() {
        say(
            &stamp,
            "demo script done; services keep running (Ctrl-C to stop)",
        );
        let _ = tokio::signal::ctrl_c().await;
    }
    let _ = shutdown_tx.send(true);
    stop_services(services).await;
    printer.abort();
    summary::print_summary(&timeline, &sim);
    tear_down(stage, played).await
}

/// Removes what the demo left on an external NATS server, stops the simulator and reports.
async fn tear_down(stage: Stage, played: Played) -> anyhow::Result<()> {
    if stage.nats.private.is_none() {
        remove_demo_data(&stage.infra, &stage.nats.prefix).await;
    }
    stage.sim_server.shutdown().await;
    let secs = stage.stamp.elapsed_secs();
    match played {
        Played::Interrupted => println!("\ndemo stopped (Ctrl-C) after {secs:.1}s"),
        Played::Finished(result) => {
            result?;
            println!("\ndemo finished in {secs:.1}s: every expected outcome happened");
        }
    }
    Ok(())
}

/// How the script ended.
enum Played {
    Finished(anyhow::Result<()>),
    /// Ctrl-C while serving the console: a normal way to leave.
    Interrupted,
}

impl Played {
    fn is_ok(&self) -> bool {
        matches!(self, Played::Finished(Ok(())))
    }
}

/// The console listener, announced before the script starts (Ctrl-C is handled from here
/// on, so an interrupted demo still stops its private nats-server).
async fn start_console(
    stage: &Stage,
    services: &Services,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<(std::net::SocketAddr, serve::Interrupt)> {
    let interrupt = serve::Interrupt::listen()?;
    let live = services.watchers.first().cloned();
    let rules = (live, services.reloads.clone());
    let addr = serve::start_listener(&stage.config, &stage.infra, rules, shutdown.clone()).await?;
    say(&stage.stamp, "web console running (watch the script live):");
    serve::print_banner(addr, &stage.token);
    Ok((addr, interrupt))
}

/// `--serve`: plays the script (Ctrl-C stops it), seeds the console's conversations, lets
/// their events print, silences the timeline `printer` (the console shows what follows, and
/// the banner stays on screen), prints the URL and token again and waits for Ctrl-C.
async fn serve_around(
    play: impl std::future::Future<Output = anyhow::Result<()>>,
    sim: &Sim,
    stage: &Stage,
    (addr, mut interrupt): (std::net::SocketAddr, serve::Interrupt),
    printer: tokio::task::AbortHandle,
) -> Played {
    let result = tokio::select! {
        r = play => r,
        _ = interrupt.wait() => return Played::Interrupted,
    };
    if let Err(e) = &result {
        say(
            &stage.stamp,
            format!("demo script failed: {e:#} (the console keeps running)"),
        );
    }
    serve::seed_console(sim, &stage.stamp);
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_secs(3)) => {}
        _ = interrupt.wait() => return Played::Finished(result),
    }
    printer.abort();
    say(
        &stage.stamp,
        "demo script done; the console and the simulator keep running \
         (the timeline stops printing here: the console shows what happens next)",
    );
    serve::print_banner(addr, &stage.token);
    println!("Ctrl-C to stop.");
    interrupt.wait().await;
    Played::Finished(result)
}

/// NATS: the given server (throwaway prefix), or a private one.
fn start_nats(external: Option<String>, stamp: &Stamp) -> anyhow::Result<DemoNats> {
    match external.filter(|u| !u.is_empty()) {
        Some(url) => {
            let prefix = format!("demo{}", std::process::id());
            say(
                stamp,
                format!("using NATS at {url} (prefix {prefix}, removed afterwards)"),
            );
            Ok(DemoNats {
                url,
                prefix,
                private: None,
            })
        }
        None => {
            let server = PrivateNatsServer::start().context("starting a private nats-server")?;
            say(
                stamp,
                format!("started a private nats-server -js at {}", server.url),
            );
            Ok(DemoNats {
                url: server.url.clone(),
                prefix: "concierge".to_string(),
                private: Some(server),
            })
        }
    }
}

async fn start_sim(stamp: &Stamp) -> anyhow::Result<SimServer> {
    let sim_server = Sim::start(SimOptions::with_key(API_KEY))
        .await
        .context("starting the Channex simulator")?;
    sim_server.sim.add_property(PROPERTY, "Casa Azul", true);
    say(
        stamp,
        format!("Channex simulator at {}", sim_server.base_url),
    );
    Ok(sim_server)
}

/// A thread that went quiet three weeks ago, before the service started.
fn seed_stale_thread(sim: &Sim) -> String {
    let stale = sim.open_thread(PROPERTY, "BookingCom", "Old Conversation", true);
    sim.guest_message(&stale, "Is the balcony door key on the hook?");
    sim.staff_message(&stale, "Yes, the blue one. Have a lovely stay!");
    sim.backdate_thread(&stale, chrono::Duration::days(21));
    stale
}

/// The service: poller, scheduler, two workers sharing one durable consumer.
async fn start_services(
    config: &Config,
    infra: &Infra,
    shutdown: &watch::Receiver<bool>,
) -> anyhow::Result<Services> {
    let channex = crate::wiring::channex_client(config)?;
    let (nudges, nudge_rx) = mpsc::channel(4);
    let mut roles = tokio::task::JoinSet::new();
    let poller = crate::wiring::poller(config, infra, channex.clone(), None);
    let poller_shutdown = shutdown.clone();
    roles.spawn(async move { Ok(poller.run(poller_shutdown, nudge_rx).await?) });
    let scheduler = crate::wiring::scheduler(config, infra, channex.clone());
    let scheduler_shutdown = shutdown.clone();
    roles.spawn(async move { Ok(scheduler.run(scheduler_shutdown).await?) });
    if let Some(tracker) = crate::wiring::responses(config, infra) {
        let tracker_shutdown = shutdown.clone();
        roles.spawn(async move { Ok(tracker.run(tracker_shutdown).await?) });
    }
    let mut watchers = Vec::new();
    let reloads = ReloadStatus::default();
    for _ in 0..2 {
        let (worker, live) =
            crate::wiring::worker_reporting(config, infra, channex.clone(), reloads.clone())
                .await?;
        watchers.push(live);
        let shutdown = shutdown.clone();
        let js = infra.js.clone();
        let prefix = config.nats.prefix.clone();
        roles.spawn(async move { Ok(worker.run(&js, &prefix, shutdown).await?) });
    }
    Ok(Services {
        roles,
        watchers,
        _nudges: nudges,
        reloads,
    })
}

/// Waits (at most 10 s per role) for the roles to finish after shutdown.
async fn stop_services(mut services: Services) {
    while let Some(joined) =
        tokio::time::timeout(Duration::from_secs(10), services.roles.join_next())
            .await
            .ok()
            .flatten()
    {
        if let Ok(Err(e)) = joined {
            tracing::warn!(error = %format!("{e:#}"), "role ended with an error");
        }
    }
    services.watchers.clear();
}

/// On an external server: delete the demo's streams and buckets.
async fn remove_demo_data(infra: &Infra, prefix: &str) {
    for stream in [
        crate::store::nats::events_stream(prefix),
        crate::store::nats::audit_stream(prefix),
    ] {
        let _ = infra.js.delete_stream(&stream).await;
    }
    for bucket in [
        infra.names.threads_bucket(),
        infra.names.ledger_bucket(),
        infra.names.followups_bucket(),
        infra.names.leases_bucket(),
        infra.names.responses_bucket(),
    ] {
        let _ = infra.js.delete_key_value(&bucket).await;
    }
}
