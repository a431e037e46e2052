//! Poll-cycle benchmark: 10,000 threads of one property in the in-process Channex
//! simulator, 1 % of them (100 threads) getting a new guest message between cycles.
//!
//! For both list modes — Channex honouring `order[updated_at]=desc` (the poller stops at
//! the first unchanged thread) and ignoring it (full scan) — it measures the baseline
//! cycle, the steady-state unchanged cycle and the 1 %-changed cycle (several repetitions,
//! median): API calls per cycle (from the simulator's request log, cross-checked with
//! `ChannexClient::stats()`), cycle time, events emitted, and the process RSS.
//!
//! Then (issue 13, part 4) the cost of one unchanged poll cycle with 1, 100 and 1,000
//! configured properties of 10 threads each: the sweep as it was (one listing per
//! property) against the listing across all configured properties
//! (`Poller::poll_configured`).
//!
//! `cargo bench --bench poller`; `BENCH_THREADS`, `BENCH_CHANGED`, `BENCH_REPS` override the
//! sizes, `BENCH_PROPERTIES` the property counts (e.g. `1,100`; `0` skips that part).
//! Results: stdout tables + `target/bench/poller.json`, `target/bench/properties.json`.
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fail, median, ms, yes_no, Mem, Table};
use concierge::config::{Config, Secret};
use concierge::roles::poller::Poller;
use concierge::sim::{Sim, SimOptions, SimServer};
use serde_json::json;

const PROP: &str = "bench-prop";
const KEY: &str = "bench-api-key";
/// High enough that the client's rate limiter never waits during the bench.
const REQUESTS_PER_MINUTE: u32 = 60_000_000;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Baseline,
    Unchanged,
    Changed,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Baseline => "baseline (first cycle)",
            Kind::Unchanged => "steady state, unchanged",
            Kind::Changed => "1 % changed",
        }
    }
}

/// One measured cycle.
#[derive(Debug, Clone)]
struct Cycle {
    ms: f64,
    list_calls: usize,
    message_calls: usize,
    other_calls: usize,
    client_calls: u64,
    events: usize,
    threads_seen: usize,
    threads_changed: usize,
}

/// The repetitions of one kind of cycle, with what they should cost.
struct Measured {
    kind: Kind,
    runs: Vec<Cycle>,
    want_list: usize,
    want_messages: usize,
    want_events: usize,
}

impl Measured {
    fn calls_stable(&self) -> bool {
        self.runs.iter().all(|c| {
            c.list_calls == self.runs[0].list_calls
                && c.message_calls == self.runs[0].message_calls
                && c.events == self.runs[0].events
        })
    }

    fn first(&self) -> &Cycle {
        &self.runs[0]
    }

    fn median_ms(&self) -> f64 {
        median(&self.runs.iter().map(|c| c.ms).collect::<Vec<_>>())
    }

    fn calls_met(&self) -> bool {
        self.calls_stable()
            && self.runs.iter().all(|c| {
                c.list_calls == self.want_list
                    && c.message_calls == self.want_messages
                    && c.other_calls == 0
                    && c.client_calls == (c.list_calls + c.message_calls) as u64
            })
    }

    fn events_met(&self) -> bool {
        self.runs.iter().all(|c| c.events == self.want_events)
    }
}

fn main() {
    common::block_on(run());
}

/// A poller of `property_ids` on the simulator and the private server `nats`, with the
/// client it polls through (its call counters).
async fn poller_on(
    nats: &concierge::store::nats::PrivateNatsServer,
    sim: &SimServer,
    property_ids: Vec<String>,
) -> (concierge::channex::ChannexClient, Poller) {
    let nats_cfg = nats.config();
    let infra = common::infra(&nats_cfg).await;
    let mut config = Config::default();
    config.channex.base_url = sim.base_url.clone();
    config.channex.api_key = Secret::new(KEY);
    config.channex.property_ids = property_ids;
    config.channex.requests_per_minute = REQUESTS_PER_MINUTE;
    config.nats = nats_cfg;
    let channex = concierge::wiring::channex_client(&config)
        .unwrap_or_else(|e| fail(&format!("Channex client: {e:#}")));
    let poller = Poller::new(channex.clone(), &infra, Arc::new(config), None);
    (channex, poller)
}

async fn run() {
    let threads = common::env_usize("BENCH_THREADS", 10_000);
    let changed = common::env_usize("BENCH_CHANGED", threads / 100).min(threads);
    let reps = common::env_usize("BENCH_REPS", 5).max(1);
    let poll_interval = Config::default().channex.poll_interval;

    println!("== poller benchmark ==");
    common::print_machine();
    println!(
        "{threads} threads in one property (simulator, in process, over loopback HTTP), \
         {changed} get a new guest message before each changed cycle; {reps} repetitions \
         of the steady-state and changed cycles (median reported)."
    );
    println!(
        "client rate limit set to {REQUESTS_PER_MINUTE} requests/minute so the limiter \
         never waits (production default: 600/minute)."
    );

    let mem_start = Mem::read();
    let sim = Sim::start(SimOptions::with_key(KEY))
        .await
        .unwrap_or_else(|e| fail(&format!("cannot start the Channex simulator: {e}")));
    sim.sim.add_property(PROP, "Bench Apartments", true);
    let seed_started = Instant::now();
    for i in 0..threads {
        let provider = if i % 3 == 0 { "AirBNB" } else { "BookingCom" };
        let id = sim
            .sim
            .open_thread(PROP, provider, &format!("Guest {i}"), true);
        sim.sim
            .guest_message(&id, "Hello! We are looking forward to our stay.");
    }
    let thread_ids = sim.sim.thread_ids();
    let mem_seeded = Mem::read();
    println!(
        "seeded {threads} threads in {:.0} ms",
        ms(seed_started.elapsed())
    );

    let list_full = threads.div_ceil(100);
    let mut next_changed = 0usize;
    let mut modes = Vec::new();
    let mut mem_modes = Vec::new();
    for honoured in [true, false] {
        sim.sim.set_list_features(honoured, true);
        let measured = run_mode(
            &sim,
            &thread_ids,
            honoured,
            changed,
            reps,
            list_full,
            &mut next_changed,
        )
        .await;
        mem_modes.push((honoured, Mem::read()));
        modes.push((honoured, measured));
    }
    let mem_end = Mem::read();

    println!();
    let mut table = Table::new(&[
        "list order",
        "cycle",
        "API calls (list + messages)",
        "target",
        "met",
        "events",
        "target",
        "met",
        "cycle time: median (min-max)",
        "met (< poll_interval)",
    ]);
    let mut all_met = true;
    let mut json_modes = Vec::new();
    for (honoured, measured) in &modes {
        let mode = if *honoured {
            "honoured (early stop)"
        } else {
            "ignored (full scan)"
        };
        let mut json_cycles = Vec::new();
        for m in measured {
            let c = m.first();
            let times: Vec<f64> = m.runs.iter().map(|c| c.ms).collect();
            let (lo, hi) = times
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
            let time_met = m.median_ms() < ms(poll_interval);
            let calls_met = m.calls_met();
            let events_met = m.events_met();
            all_met &= time_met && calls_met && events_met;
            let calls = format!(
                "{} + {}{}",
                c.list_calls,
                c.message_calls,
                if m.calls_stable() { "" } else { " (varied)" }
            );
            table.row(vec![
                mode.to_string(),
                format!("{} x{}", m.kind.label(), m.runs.len()),
                calls,
                format!("{} + {}", m.want_list, m.want_messages),
                yes_no(calls_met).into(),
                c.events.to_string(),
                m.want_events.to_string(),
                yes_no(events_met).into(),
                format!("{:.1} ms ({lo:.1}-{hi:.1})", m.median_ms()),
                yes_no(time_met).into(),
            ]);
            json_cycles.push(json!({
                "cycle": format!("{:?}", m.kind).to_lowercase(),
                "repetitions": m.runs.len(),
                "median_ms": m.median_ms(),
                "runs": m.runs.iter().map(|c| json!({
                    "ms": c.ms,
                    "list_calls": c.list_calls,
                    "message_calls": c.message_calls,
                    "other_calls": c.other_calls,
                    "client_requests_sent": c.client_calls,
                    "events_emitted": c.events,
                    "threads_seen": c.threads_seen,
                    "threads_changed": c.threads_changed,
                })).collect::<Vec<_>>(),
                "target": {
                    "list_calls": m.want_list,
                    "message_calls": m.want_messages,
                    "events_emitted": m.want_events,
                    "median_ms_below": ms(poll_interval),
                },
                "met": {"calls": calls_met, "events": events_met, "time": time_met},
            }));
        }
        json_modes.push(json!({"order_honoured": honoured, "cycles": json_cycles}));
    }
    table.print();

    println!();
    let mut mem_table = Table::new(&["process memory (bench + simulator)", "VmRSS", "VmHWM"]);
    mem_table.row(vec![
        "start".into(),
        Mem::mib(mem_start.rss_kb),
        Mem::mib(mem_start.hwm_kb),
    ]);
    mem_table.row(vec![
        format!("after seeding {threads} threads in the simulator"),
        Mem::mib(mem_seeded.rss_kb),
        Mem::mib(mem_seeded.hwm_kb),
    ]);
    for (honoured, m) in &mem_modes {
        mem_table.row(vec![
            format!(
                "after the {} cycles (poller state held)",
                if *honoured { "honoured" } else { "full-scan" }
            ),
            Mem::mib(m.rss_kb),
            Mem::mib(m.hwm_kb),
        ]);
    }
    mem_table.print();
    println!(
        "(the simulator's world lives in this process too; nats-server is a separate process)"
    );
    println!(
        "\ntargets: calls = ceil(threads/100) list calls for a full scan, 1 list call for an \
         unchanged cycle when the order is honoured (ceil((changed+1)/100) when changed), \
         plus 1 message call per changed thread; events = 1 per new message; median cycle \
         time below the default poll_interval ({} s). all met: {}",
        poll_interval.as_secs(),
        yes_no(all_met)
    );

    common::write_json(
        "poller",
        &json!({
            "bench": "poller",
            "machine": common::machine(),
            "threads": threads,
            "changed_per_cycle": changed,
            "repetitions": reps,
            "client_requests_per_minute": REQUESTS_PER_MINUTE,
            "modes": json_modes,
            "memory": {
                "start": mem_start.json(),
                "after_seed": mem_seeded.json(),
                "after_modes": mem_modes.iter().map(|(h, m)| json!({"order_honoured": h, "mem": m.json()})).collect::<Vec<_>>(),
                "end": mem_end.json(),
            },
            "all_targets_met": all_met,
        }),
    );
    sim.shutdown().await;
    properties_scaling().await;
}

/// Calls of one unchanged cycle at each property count (10 threads per property).
async fn properties_scaling() {
    let counts: Vec<usize> = std::env::var("BENCH_PROPERTIES")
        .unwrap_or_else(|_| "1,100,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    if counts.is_empty() {
        return;
    }
    println!("\n== one poll cycle against the number of configured properties ==");
    let mut rows = Vec::new();
    for n in &counts {
        rows.push(properties_cycle(*n).await);
    }
    let reference = rows.first().map(|r| r.now).unwrap_or(0);
    let mut table = Table::new(&[
        "properties (10 threads each)",
        "unchanged cycle: before (one listing per property)",
        "now (one listing across all)",
        "target: as at 1 property",
        "met",
        "1 % of threads changed: before",
        "now",
        "first listing after the baselines",
    ]);
    let mut json_rows = Vec::new();
    for r in &rows {
        let met = r.now == reference && reference <= 1;
        table.row(vec![
            r.properties.to_string(),
            format!("{} calls", r.before),
            format!("{} calls", r.now),
            format!("{reference} call(s)"),
            yes_no(met).into(),
            format!("{} calls ({} changed)", r.changed_before, r.changed_threads),
            format!("{} calls ({} changed)", r.changed_now, r.changed_threads),
            format!("{} calls", r.full),
        ]);
        json_rows.push(json!({
            "properties": r.properties, "threads": r.properties * 10,
            "calls_per_unchanged_cycle_per_property_listings": r.before,
            "calls_per_unchanged_cycle_one_listing": r.now,
            "changed_threads": r.changed_threads,
            "calls_per_changed_cycle_per_property_listings": r.changed_before,
            "calls_per_changed_cycle_one_listing": r.changed_now,
            "calls_first_listing_after_baselines": r.full,
            "met": met,
        }));
    }
    table.print();
    println!(
        "(a property not baselined yet is first polled alone, once in its life: 1 call per \
         property with up to 100 threads)"
    );
    common::write_json(
        "properties",
        &json!({"bench": "poller/properties", "machine": common::machine(), "rows": json_rows}),
    );
}

/// Calls of the sweep as it was (one listing per property) and of `poll_configured`.
struct PropertiesRow {
    properties: usize,
    before: u64,
    now: u64,
    full: u64,
    changed_threads: usize,
    changed_before: u64,
    changed_now: u64,
}

async fn properties_cycle(n: usize) -> PropertiesRow {
    let sim = Sim::start(SimOptions::with_key(KEY))
        .await
        .unwrap_or_else(|e| fail(&format!("cannot start the Channex simulator: {e}")));
    let ids: Vec<String> = (0..n).map(|i| format!("prop-{i:04}")).collect();
    let mut threads = Vec::new();
    for id in &ids {
        sim.sim.add_property(id, id, true);
        for t in 0..10 {
            let thread = sim
                .sim
                .open_thread(id, "BookingCom", &format!("Guest {t}"), true);
            sim.sim.guest_message(&thread, "Hello!");
            // Last touched in the past days, as in a real account: the listing re-reads
            // only what changed within its look-back below the previous listing's mark.
            let minutes_ago = 60 + i64::try_from(threads.len()).unwrap_or(i64::MAX / 120);
            sim.sim.set_thread_updated_at(
                &thread,
                chrono::Utc::now() - chrono::Duration::minutes(minutes_ago),
            );
            threads.push(thread);
        }
    }
    let nats = common::nats_server();
    let (_, mut poller) = poller_on(&nats, &sim, ids.clone()).await;
    poller.load_states().await.unwrap_or_else(poll_failed);
    for id in &ids {
        poller.poll_once(Some(id)).await.unwrap_or_else(poll_failed);
    }
    let full = poller.poll_configured().await.unwrap_or_else(poll_failed);
    let mut before = 0;
    for id in &ids {
        before += poller
            .poll_once(Some(id))
            .await
            .unwrap_or_else(poll_failed)
            .api_calls;
    }
    let now = poller.poll_configured().await.unwrap_or_else(poll_failed);
    assert_eq!(
        now.events_emitted + full.events_emitted,
        0,
        "nothing changed"
    );
    // 1 % of the threads (spread over the properties) get a guest message, twice.
    let changed_threads = (threads.len() / 100).max(1);
    let step = threads.len() / changed_threads;
    let change = |round: usize| {
        for i in 0..changed_threads {
            let t = &threads[(i * step + round) % threads.len()];
            sim.sim.guest_message(t, "Is there parking?");
        }
    };
    // The listing across all first: per-property polls in between would, like nudges,
    // leave refreshed threads above the mark that the next listing reads past.
    change(1);
    let changed = poller.poll_configured().await.unwrap_or_else(poll_failed);
    assert_eq!(changed.events_emitted, changed_threads);
    change(2);
    let mut changed_before = 0;
    for id in &ids {
        changed_before += poller
            .poll_once(Some(id))
            .await
            .unwrap_or_else(poll_failed)
            .api_calls;
    }
    println!(
        "   {n} properties: unchanged {before} calls (one listing each) -> {} (one listing)",
        now.api_calls
    );
    drop(nats);
    sim.shutdown().await;
    PropertiesRow {
        properties: n,
        before,
        now: now.api_calls,
        full: full.api_calls,
        changed_threads,
        changed_before,
        changed_now: changed.api_calls,
    }
}

fn poll_failed<T>(e: concierge::roles::poller::PollerError) -> T {
    fail(&format!("poll failed: {e}"))
}

/// Baseline, `reps` unchanged cycles and `reps` changed cycles with a fresh poller on a
/// fresh private nats-server.
async fn run_mode(
    sim: &SimServer,
    thread_ids: &[String],
    honoured: bool,
    changed: usize,
    reps: usize,
    list_full: usize,
    next_changed: &mut usize,
) -> Vec<Measured> {
    let nats = common::nats_server();
    let (channex, mut poller) = poller_on(&nats, sim, vec![PROP.to_string()]).await;
    poller
        .load_states()
        .await
        .unwrap_or_else(|e| fail(&format!("loading poller state: {e}")));
    let threads = thread_ids.len();
    println!(
        "\n-- list order {}: baseline cycle ({} list calls over {threads} threads, no message calls)...",
        if honoured { "honoured" } else { "ignored" },
        list_full
    );

    let baseline = Measured {
        kind: Kind::Baseline,
        runs: vec![cycle(&mut poller, sim, &channex).await],
        want_list: list_full,
        // The baseline records history from the listing rows alone.
        want_messages: 0,
        want_events: 0,
    };
    println!("   {:.0} ms", baseline.first().ms);

    let mut unchanged = Measured {
        kind: Kind::Unchanged,
        runs: Vec::new(),
        want_list: if honoured {
            list_full.min(1)
        } else {
            list_full
        },
        want_messages: 0,
        want_events: 0,
    };
    for _ in 0..reps {
        unchanged.runs.push(cycle(&mut poller, sim, &channex).await);
    }

    let mut changed_m = Measured {
        kind: Kind::Changed,
        runs: Vec::new(),
        want_list: if honoured {
            (changed + 1).div_ceil(100).min(list_full)
        } else {
            list_full
        },
        want_messages: changed,
        want_events: changed,
    };
    for _ in 0..reps {
        for _ in 0..changed {
            let id = &thread_ids[*next_changed % threads];
            *next_changed += 1;
            sim.sim
                .guest_message(id, "Hi! Is there parking near the apartment?");
        }
        changed_m.runs.push(cycle(&mut poller, sim, &channex).await);
    }
    // Give the server a moment to flush before it is killed (it is dropped here).
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(nats);
    vec![baseline, unchanged, changed_m]
}

async fn cycle(
    poller: &mut Poller,
    sim: &SimServer,
    channex: &concierge::channex::ChannexClient,
) -> Cycle {
    sim.sim.clear_requests();
    let sent_before = channex.stats().requests_sent;
    let started = Instant::now();
    let stats = poller
        .poll_once(Some(PROP))
        .await
        .unwrap_or_else(|e| fail(&format!("poll cycle failed: {e}")));
    let elapsed = started.elapsed();
    let requests = sim.sim.requests();
    let list_calls = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/message_threads"))
        .count();
    let message_calls = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/messages"))
        .count();
    Cycle {
        ms: ms(elapsed),
        list_calls,
        message_calls,
        other_calls: requests.len() - list_calls - message_calls,
        client_calls: channex.stats().requests_sent - sent_before,
        events: stats.events_emitted,
        threads_seen: stats.threads_seen,
        threads_changed: stats.threads_changed,
    }
}
