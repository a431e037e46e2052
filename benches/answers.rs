//! Answers benchmark (issue 13, parts 2, 3 and 5): the poller and worker roles, built
//! through `concierge::wiring` as `concierge run` builds them, with the shipped `rules/`
//! and `templates/` and a non-dry-run executor, against the in-process Channex simulator
//! (loopback HTTP) and a private nats-server. 10,000 threads of one property; 1 % of them
//! get a guest question ("What is the wifi password?", answered by the FAQ rule) per poll
//! cycle, the questions spread evenly over the cycle so they arrive at every phase of it.
//!
//! Reports:
//! - Channex API calls per answered message, split by endpoint (the simulator's request
//!   log) and by role (each role gets its own client here, so `stats()` tells them apart);
//! - guest message -> reply latency (both timestamps from the simulator's clock) p50/p99/max
//!   for `poll_interval = 1s`, for a webhook nudge per message (published on the nudge
//!   subject, as the webhook handler does; interval 30 s) and for the default 30 s interval;
//! - RSS (VmHWM/VmRSS from `/proc/<pid>/status`) of each role run alone as the real binary
//!   (`target/release/concierge run --role <role>`) against the same simulator and a
//!   private nats-server, with 10,000 tracked threads, after a cycle of questions and one
//!   schedule tick (every 20 s: one `schedule.tick` per open thread, so the scheduler
//!   lists and the worker handles all 10,000); skipped with a note when the release
//!   binary is missing (`cargo build --release`).
//!
//! `cargo bench --bench answers`; overrides: `BENCH_THREADS`, `BENCH_ROUNDS` (1 s mode),
//! `BENCH_SLOW_ROUNDS` (nudge and 30 s modes; 0 skips them), `BENCH_MEMORY=0` skips part 5.
//! Results: tables on stdout, `target/bench/answers.json`, `target/bench/latency.json`,
//! `target/bench/memory.json`.
mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{fail, percentile, yes_no, Mem, Table};
use concierge::channex::Sender;
use concierge::config::{Config, PropertyConfig, Secret};
use concierge::sim::{RecordedRequest, Sim, SimOptions, SimServer};
use concierge::store::nats::{Infra, PrivateNatsServer};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

const PROP: &str = "bench-prop";
const KEY: &str = "bench-api-key";
const QUESTION: &str = "Hi! What is the wifi password?";
/// High enough that the client's rate limiter never waits during the bench.
const REQUESTS_PER_MINUTE: u32 = 60_000_000;
const MAX_CALLS_PER_ANSWER: f64 = 3.0;
const RSS_TARGET_MB: f64 = 64.0;

/// One way of noticing a guest message.
struct Mode {
    key: &'static str,
    label: &'static str,
    poll_interval: Duration,
    nudge: bool,
    rounds: usize,
    target_p99_s: f64,
}

/// What one mode measured.
struct ModeResult {
    latencies_s: Vec<f64>,
    unanswered: usize,
    answered: usize,
    by_endpoint: BTreeMap<String, usize>,
    poller_calls: u64,
    worker_calls: u64,
}

impl ModeResult {
    fn calls(&self) -> usize {
        self.by_endpoint.values().sum()
    }

    fn per_answer(&self) -> f64 {
        self.calls() as f64 / self.answered.max(1) as f64
    }

    fn latency(&self) -> (f64, f64, f64) {
        let mut v = self.latencies_s.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        (
            percentile(&v, 50.0),
            percentile(&v, 99.0),
            v.last().copied().unwrap_or(f64::NAN),
        )
    }
}

fn main() {
    common::block_on(run());
}

async fn run() {
    let threads = common::env_usize("BENCH_THREADS", 10_000);
    let per_cycle = (threads / 100).max(1);
    let rounds = common::env_usize("BENCH_ROUNDS", 5).max(1);
    let slow_rounds = common::env_usize("BENCH_SLOW_ROUNDS", 1);
    println!("== answers benchmark (calls per answer, latency, role memory) ==");
    common::print_machine();
    println!(
        "{threads} threads of one property in the simulator; {per_cycle} guest questions \
         per poll cycle, spread over the cycle; shipped rules/ and templates/, executor \
         not in dry-run."
    );
    let sim = Sim::start(SimOptions::with_key(KEY))
        .await
        .unwrap_or_else(|e| fail(&format!("cannot start the Channex simulator: {e}")));
    sim.sim.add_property(PROP, "Bench Apartments", true);
    for i in 0..threads {
        let id = sim
            .sim
            .open_thread(PROP, "BookingCom", &format!("Guest {i}"), true);
        sim.sim
            .guest_message(&id, "Hello! We are looking forward to our stay.");
        // A real account's threads were last touched over past weeks, not in this second:
        // spread them over the last days, so the poller's listing (which re-reads what
        // changed within its look-back below the mark) sees a realistic history.
        let minutes_ago = 60 + i64::try_from(i).unwrap_or(i64::MAX / 120);
        sim.sim.set_thread_updated_at(
            &id,
            chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
        );
    }
    let thread_ids = sim.sim.thread_ids();
    let mut next = 0usize;

    let modes = [
        Mode {
            key: "poll_1s",
            label: "poll_interval = 1s",
            poll_interval: Duration::from_secs(1),
            nudge: false,
            rounds,
            target_p99_s: 2.0,
        },
        Mode {
            key: "webhook_nudge",
            label: "webhook nudge (interval 30s)",
            poll_interval: Duration::from_secs(30),
            nudge: true,
            rounds: slow_rounds,
            target_p99_s: 1.0,
        },
        Mode {
            key: "poll_30s",
            label: "poll_interval = 30s (default)",
            poll_interval: Duration::from_secs(30),
            nudge: false,
            rounds: slow_rounds,
            target_p99_s: 31.0,
        },
    ];
    let mut results = Vec::new();
    for mode in modes.iter().filter(|m| m.rounds > 0) {
        let r = run_mode(&sim, &thread_ids, &mut next, per_cycle, mode).await;
        results.push((mode, r));
    }
    report_calls(&results, threads, per_cycle);
    report_latency(&results);
    if common::env_usize("BENCH_MEMORY", 1) != 0 {
        memory(&sim, &thread_ids, &mut next, per_cycle).await;
    }
    sim.shutdown().await;
}

/// A config for the simulator, a private NATS and the shipped rules.
fn bench_config(sim: &SimServer, nats: &PrivateNatsServer, poll_interval: Duration) -> Config {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut config = Config::default();
    config.channex.base_url = sim.base_url.clone();
    config.channex.api_key = Secret::new(KEY);
    config.channex.property_ids = vec![PROP.to_string()];
    config.channex.requests_per_minute = REQUESTS_PER_MINUTE;
    config.channex.poll_interval = poll_interval;
    config.nats = nats.config();
    config.rules.dir = root.join("rules");
    config.rules.templates_dir = root.join("templates");
    config.rules.watch = false;
    config.properties.insert(
        PROP.into(),
        PropertyConfig {
            name: "Bench Apartments".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars: property_vars(),
            dry_run: false,
        },
    );
    config
}

fn property_vars() -> serde_json::Map<String, Value> {
    json!({
        "wifi_name": "BenchNet",
        "wifi_password": "correct-horse",
        "checkin_time": "15:00",
        "checkout_time": "11:00",
    })
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// Poller and worker running as `concierge run` runs them (each with its own client, so
/// their calls can be told apart), on a fresh private nats-server.
async fn run_mode(
    sim: &SimServer,
    thread_ids: &[String],
    next: &mut usize,
    per_cycle: usize,
    mode: &Mode,
) -> ModeResult {
    println!(
        "\n-- {}: {} round(s) of {per_cycle} questions",
        mode.label, mode.rounds
    );
    let nats = common::nats_server();
    let config = bench_config(sim, &nats, mode.poll_interval);
    let infra = common::infra(&config.nats).await;
    let client = |what: &str| {
        concierge::wiring::channex_client(&config)
            .unwrap_or_else(|e| fail(&format!("Channex client for the {what}: {e:#}")))
    };
    let (poller_client, worker_client) = (client("poller"), client("worker"));
    let (stop, shutdown) = watch::channel(false);
    let (_local_nudges, local_rx) = mpsc::channel(1);
    let poller = concierge::wiring::poller(&config, &infra, poller_client.clone(), None);
    let poller_task = tokio::spawn(poller.run(shutdown.clone(), local_rx));
    let (worker, live) = concierge::wiring::worker(&config, &infra, worker_client.clone())
        .await
        .unwrap_or_else(|e| fail(&format!("building the worker: {e:#}")));
    let (js, prefix) = (infra.js.clone(), config.nats.prefix.clone());
    let worker_shutdown = shutdown.clone();
    let worker_task = tokio::spawn(async move {
        let _live = live;
        worker.run(&js, &prefix, worker_shutdown).await
    });
    let started = Instant::now();
    wait_for_baseline(&infra).await;
    println!(
        "   baseline done in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    sim.sim.clear_requests();
    let (poller_before, worker_before) = (
        poller_client.stats().requests_sent,
        worker_client.stats().requests_sent,
    );
    let mut result = ModeResult {
        latencies_s: Vec::new(),
        unanswered: 0,
        answered: 0,
        by_endpoint: BTreeMap::new(),
        poller_calls: 0,
        worker_calls: 0,
    };
    let nudge_subject = concierge::roles::poller::nudge_subject(&config.nats.prefix);
    for round in 0..mode.rounds {
        let nudger = mode
            .nudge
            .then_some((&infra.client, nudge_subject.as_str()));
        let asked = ask(sim, thread_ids, next, per_cycle, mode.poll_interval, nudger).await;
        let deadline = mode.poll_interval * 2 + Duration::from_secs(20);
        let (latencies, missing) = wait_for_replies(sim, &asked, deadline).await;
        println!(
            "   round {}: {} answered, {missing} unanswered",
            round + 1,
            latencies.len()
        );
        result.latencies_s.extend(latencies);
        result.unanswered += missing;
    }
    // One more cycle, so the poller's reading of the replies is counted too.
    tokio::time::sleep(mode.poll_interval + Duration::from_millis(500)).await;
    result.answered = result.latencies_s.len();
    result.by_endpoint = by_endpoint(&sim.sim.requests());
    result.poller_calls = poller_client.stats().requests_sent - poller_before;
    result.worker_calls = worker_client.stats().requests_sent - worker_before;
    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), poller_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(35), worker_task).await;
    drop(nats);
    result
}

/// Until the poller has baselined the property and completed its first listing across
/// the configured properties (its scan mark is stored).
async fn wait_for_baseline(infra: &Infra) {
    let baseline = concierge::store::threads::baseline_key(PROP);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let has = |key: String| async move { matches!(infra.threads.get(key).await, Ok(Some(_))) };
        if has(baseline.clone()).await
            && has(concierge::store::threads::SCAN_MARK_KEY.to_string()).await
        {
            return;
        }
        if Instant::now() > deadline {
            fail("the poller did not complete its baseline within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts `n` guest questions on the next threads, evenly over `spread`; with a nudger,
/// each question is followed by a webhook nudge for the property. Returns (thread,
/// message id) of each question.
async fn ask(
    sim: &SimServer,
    thread_ids: &[String],
    next: &mut usize,
    n: usize,
    spread: Duration,
    nudger: Option<(&async_nats::Client, &str)>,
) -> Vec<(String, String)> {
    let gap = spread / n as u32;
    let mut asked = Vec::with_capacity(n);
    for _ in 0..n {
        let thread = thread_ids[*next % thread_ids.len()].clone();
        *next += 1;
        let message = sim.sim.guest_message(&thread, QUESTION);
        if let Some((client, subject)) = nudger {
            if let Err(e) = client.publish(subject.to_string(), PROP.into()).await {
                fail(&format!("publishing a nudge: {e}"));
            }
        }
        asked.push((thread, message));
        tokio::time::sleep(gap).await;
    }
    asked
}

/// Latency (s) of each question answered within `limit`, and how many were not.
async fn wait_for_replies(
    sim: &SimServer,
    asked: &[(String, String)],
    limit: Duration,
) -> (Vec<f64>, usize) {
    let deadline = Instant::now() + limit;
    let mut latencies = vec![None; asked.len()];
    loop {
        for (slot, (thread, message)) in latencies.iter_mut().zip(asked) {
            if slot.is_none() {
                *slot = reply_latency(sim, thread, message);
            }
        }
        let missing = latencies.iter().filter(|l| l.is_none()).count();
        if missing == 0 || Instant::now() > deadline {
            return (latencies.into_iter().flatten().collect(), missing);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Seconds from the guest message to the first property message after it (simulator clock).
fn reply_latency(sim: &SimServer, thread: &str, message: &str) -> Option<f64> {
    let messages = sim.sim.messages(thread);
    let asked_at = messages.iter().find(|m| m.id == message)?.inserted_at;
    let reply = messages
        .iter()
        .filter(|m| m.sender == Sender::Property && m.inserted_at >= asked_at)
        .map(|m| m.inserted_at)
        .min()?;
    Some((reply - asked_at).num_microseconds()? as f64 / 1e6)
}

/// Requests counted per `METHOD /path` with ids replaced by `{id}`.
fn by_endpoint(requests: &[RecordedRequest]) -> BTreeMap<String, usize> {
    const WORDS: [&str; 9] = [
        "",
        "api",
        "v1",
        "message_threads",
        "messages",
        "close",
        "no_reply_needed",
        "attachments",
        "bookings",
    ];
    let mut counts = BTreeMap::new();
    for r in requests {
        let path: Vec<&str> = r
            .path
            .split('/')
            .map(|s| if WORDS.contains(&s) { s } else { "{id}" })
            .collect();
        *counts
            .entry(format!("{} {}", r.method, path.join("/")))
            .or_insert(0) += 1;
    }
    counts
}

fn report_calls(results: &[(&Mode, ModeResult)], threads: usize, per_cycle: usize) {
    println!("\nChannex API calls per answered guest message (target <= {MAX_CALLS_PER_ANSWER})");
    let mut table = Table::new(&[
        "mode",
        "answered",
        "endpoint",
        "calls",
        "per answer",
        "target",
        "met",
    ]);
    let mut json_modes = serde_json::Map::new();
    for (mode, r) in results {
        for (endpoint, n) in &r.by_endpoint {
            table.row(vec![
                mode.label.into(),
                r.answered.to_string(),
                endpoint.clone(),
                n.to_string(),
                format!("{:.2}", *n as f64 / r.answered.max(1) as f64),
                String::new(),
                String::new(),
            ]);
        }
        let met = r.per_answer() <= MAX_CALLS_PER_ANSWER && r.unanswered == 0;
        for (role, n) in [
            ("poller", r.poller_calls),
            ("worker (executor)", r.worker_calls),
        ] {
            table.row(vec![
                mode.label.into(),
                r.answered.to_string(),
                format!("all, by the {role}"),
                n.to_string(),
                format!("{:.2}", n as f64 / r.answered.max(1) as f64),
                String::new(),
                String::new(),
            ]);
        }
        table.row(vec![
            mode.label.into(),
            r.answered.to_string(),
            "TOTAL".into(),
            r.calls().to_string(),
            format!("{:.2}", r.per_answer()),
            format!("<= {MAX_CALLS_PER_ANSWER}"),
            yes_no(met).into(),
        ]);
        json_modes.insert(
            mode.key.into(),
            json!({
                "answered": r.answered,
                "unanswered": r.unanswered,
                "calls": r.calls(),
                "calls_per_answered_message": r.per_answer(),
                "by_endpoint": r.by_endpoint,
                "by_role": {"poller": r.poller_calls, "worker": r.worker_calls},
                "target_max": MAX_CALLS_PER_ANSWER,
                "met": met,
            }),
        );
    }
    table.print();
    common::write_json(
        "answers",
        &json!({
            "bench": "answers",
            "machine": common::machine(),
            "threads": threads,
            "questions_per_cycle": per_cycle,
            "modes": json_modes,
        }),
    );
}

fn report_latency(results: &[(&Mode, ModeResult)]) {
    println!("\nguest message -> reply latency");
    let mut table = Table::new(&["mode", "samples", "p50", "p99", "max", "target p99", "met"]);
    let mut json_modes = serde_json::Map::new();
    for (mode, r) in results {
        let (p50, p99, max) = r.latency();
        let met = p99 <= mode.target_p99_s && r.unanswered == 0;
        table.row(vec![
            mode.label.into(),
            format!(
                "{}{}",
                r.answered,
                if r.unanswered > 0 {
                    format!(" ({} unanswered)", r.unanswered)
                } else {
                    String::new()
                }
            ),
            format!("{p50:.2} s"),
            format!("{p99:.2} s"),
            format!("{max:.2} s"),
            format!("<= {} s", mode.target_p99_s),
            yes_no(met).into(),
        ]);
        json_modes.insert(
            mode.key.into(),
            json!({
                "p50_s": p50, "p99_s": p99, "max_s": max,
                "samples": r.answered, "unanswered": r.unanswered,
                "poll_interval_s": mode.poll_interval.as_secs_f64(),
                "target_p99_s": mode.target_p99_s, "met": met,
            }),
        );
    }
    table.print();
    common::write_json("latency", &Value::Object(json_modes));
}

/// Part 5: each role alone as the real binary, against this simulator and a private NATS.
async fn memory(sim: &SimServer, thread_ids: &[String], next: &mut usize, per_cycle: usize) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let binary = root.join("target/release/concierge");
    println!(
        "\nRSS of each role process alone (real binary, {} tracked threads)",
        thread_ids.len()
    );
    if !binary.exists() {
        println!(
            "not measured: {} is missing (cargo build --release)",
            binary.display()
        );
        return;
    }
    let nats = common::nats_server();
    let nats_cfg = nats.config();
    let infra = common::infra(&nats_cfg).await;
    let dir = common::results_dir().join("memory-run");
    let _ = std::fs::create_dir_all(&dir);
    let config_path = dir.join("concierge.toml");
    let toml = role_config_toml(sim, &nats_cfg.url, &root);
    if let Err(e) = std::fs::write(&config_path, toml) {
        fail(&format!("writing {}: {e}", config_path.display()));
    }
    let mut children = Vec::new();
    for role in ["poller", "worker", "scheduler"] {
        let log = std::fs::File::create(dir.join(format!("{role}.log")))
            .unwrap_or_else(|e| fail(&format!("log file: {e}")));
        let child = tokio::process::Command::new(&binary)
            .arg("--config")
            .arg(&config_path)
            .args(["run", "--role", role])
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| fail(&format!("starting {}: {e}", binary.display())));
        children.push((role, child));
    }
    wait_for_baseline(&infra).await;
    let asked = ask(
        sim,
        thread_ids,
        next,
        per_cycle,
        Duration::from_secs(1),
        None,
    )
    .await;
    let (answered, missing) = wait_for_replies(sim, &asked, Duration::from_secs(30)).await;
    let ticks = wait_for_schedule_tick(&infra, thread_ids.len()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut table = Table::new(&["role process", "VmRSS", "VmHWM (peak)", "target", "met"]);
    let mut json_roles = serde_json::Map::new();
    for (role, child) in &mut children {
        let mem = child.id().map(proc_mem).unwrap_or_default();
        let met = mem.hwm_kb > 0 && (mem.hwm_kb as f64 / 1024.0) <= RSS_TARGET_MB;
        table.row(vec![
            role.to_string(),
            Mem::mib(mem.rss_kb),
            Mem::mib(mem.hwm_kb),
            format!("<= {RSS_TARGET_MB} MB"),
            yes_no(met).into(),
        ]);
        json_roles.insert(
            role.to_string(),
            json!({"mem": mem.json(), "target_mb": RSS_TARGET_MB, "met": met}),
        );
        let _ = child.kill().await;
    }
    table.print();
    println!(
        "(after the poller's baseline of {} threads, one cycle of {} questions ({} answered, \
         {missing} unanswered) and a schedule tick: {ticks} schedule.tick events published by \
         the scheduler and handled by the worker)",
        thread_ids.len(),
        asked.len(),
        answered.len()
    );
    common::write_json(
        "memory",
        &json!({
            "bench": "answers/memory",
            "machine": common::machine(),
            "tracked_threads": thread_ids.len(),
            "schedule_tick_events": ticks,
            "roles": json_roles,
        }),
    );
    drop(nats);
}

/// Waits (up to 90 s) for the scheduler's tick to publish one `schedule.tick` per open
/// thread and for the worker to handle them all; returns how many events were added.
async fn wait_for_schedule_tick(infra: &Infra, threads: usize) -> u64 {
    let stream_name = concierge::store::nats::events_stream("concierge");
    let mut stream = match infra.js.get_stream(&stream_name).await {
        Ok(s) => s,
        Err(e) => fail(&format!("events stream: {e}")),
    };
    let before = stream.info().await.map(|i| i.state.messages).unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let now = stream.info().await.map(|i| i.state.messages).unwrap_or(0);
        let ticked = now >= before + threads as u64;
        if (ticked && worker_drained(infra).await) || Instant::now() > deadline {
            return now.saturating_sub(before);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether the worker's durable consumer has nothing left to deliver or acknowledge.
async fn worker_drained(infra: &Infra) -> bool {
    let stream_name = concierge::store::nats::events_stream("concierge");
    let Ok(stream) = infra.js.get_stream(&stream_name).await else {
        return false;
    };
    let consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>("concierge-worker")
        .await;
    match consumer {
        Ok(mut c) => c
            .info()
            .await
            .is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0),
        Err(_) => false,
    }
}

/// VmRSS / VmHWM of another process.
fn proc_mem(pid: u32) -> Mem {
    Mem::of(&pid.to_string())
}

fn role_config_toml(sim: &SimServer, nats_url: &str, root: &std::path::Path) -> String {
    let vars: Vec<String> = property_vars()
        .iter()
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    format!(
        "[channex]\nbase_url = \"{base}\"\napi_key = \"{KEY}\"\nproperty_ids = [\"{PROP}\"]\n\
         poll_interval = \"1s\"\nrequests_per_minute = {REQUESTS_PER_MINUTE}\n\n\
         [nats]\nurl = \"{nats_url}\"\n\n\
         [rules]\ndir = \"{rules}\"\ntemplates_dir = \"{templates}\"\nwatch = false\n\n\
         [http]\nlisten = \"\"\n\n\
         [properties.\"{PROP}\"]\nname = \"Bench Apartments\"\ntimezone = \"Europe/Lisbon\"\n\
         vars = {{ {vars} }}\n\n\
         [[schedules]]\nname = \"bench-tick\"\ncron = \"*/20 * * * * *\"\n",
        base = sim.base_url,
        rules = root.join("rules").display(),
        templates = root.join("templates").display(),
        vars = vars.join(", "),
    )
}
