//! The chaos suite (`make test-chaos`, the last step of `make test`): the real binary as
//! separate processes — two workers, a poller and a scheduler — against the Channex
//! simulator and a private nats-server with a file store, while the run is made hostile:
//! 20% 429 (with Retry-After) + 10% 500 on every Channex request, 500–1000 ms of added
//! latency for part of the run, 50 `kill -9`s of random role processes at random moments
//! (each restarted at once) and one `kill -9` + restart of nats-server while sends are in
//! flight. 40 threads and 80 guest messages each need exactly one reply.
//!
//! At the end (bounded wait for quiescence) it checks at the simulator that every guest
//! message got exactly one reply, and in the audit stream that every reply has exactly one
//! `executed` record and no event ended `failed`; it prints one line
//! `chaos: kills=50 nats_restarts=1 messages=80 once=80 dup=0 lost=0 unaudited=0 failed=0 p50=… p99=…`
//! (latency from guest message to reply) and fails on any dup/lost/unaudited/failed.
//!
//! The schedule (message times, kill times and victims) comes from a random seed that is
//! printed first; `CHAOS_SEED=<n>` replays it (process timing still varies). On failure the
//! work directory with every process's log is kept and its path printed.

mod report;
mod rig;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use rig::{Chaos, Plan};

/// Threads opened, each receiving two guest messages (a wifi and a check-in question).
const THREADS: usize = 40;
/// Process kills over the run.
const KILLS: usize = 50;
/// The hostile phase: messages, faults, kills and the NATS restart happen inside it.
const HOSTILE: Duration = Duration::from_secs(100);
/// Latency window inside the hostile phase.
const LATENCY_FROM: Duration = Duration::from_secs(20);
const LATENCY_UNTIL: Duration = Duration::from_secs(60);
/// When the nats-server is killed (then restarted after `NATS_DOWN`): inside the latency
/// window, so sends are slow and some are in flight.
const NATS_KILL_AT: Duration = Duration::from_secs(40);
const NATS_DOWN: Duration = Duration::from_secs(3);
/// Quiescence after the hostile phase: every message answered and the worker consumer
/// fully acknowledged, or the run fails.
const SETTLE_LIMIT: Duration = Duration::from_secs(120);

fn seed() -> u64 {
    match std::env::var("CHAOS_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("CHAOS_SEED must be an unsigned integer, got {s:?}")),
        Err(_) => rand::random(),
    }
}

/// Message times, kill times and victims, all drawn from the seed up front.
fn plan(seed: u64) -> Plan {
    let mut rng = StdRng::seed_from_u64(seed);
    let last_first = HOSTILE.as_secs_f64() * 0.6;
    let mut messages = Vec::new();
    for thread in 0..THREADS {
        let first = rng.random_range(0.0..last_first);
        let second = first + rng.random_range(1.0..25.0);
        messages.push((Duration::from_secs_f64(first), thread, 0));
        messages.push((Duration::from_secs_f64(second), thread, 1));
    }
    messages.sort();
    let mut kills: Vec<(Duration, usize)> = (0..KILLS)
        .map(|_| {
            let at = rng.random_range(2.0..HOSTILE.as_secs_f64());
            (
                Duration::from_secs_f64(at),
                rng.random_range(0..rig::ROLES.len()),
            )
        })
        .collect();
    kills.sort();
    Plan { messages, kills }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_every_guest_message_is_answered_exactly_once_and_audited() {
    let seed = seed();
    eprintln!("chaos: seed={seed} (replay with CHAOS_SEED={seed})");
    let started = Instant::now();
    let mut chaos = Chaos::start().await;
    chaos.hostile_phase(plan(seed)).await;
    eprintln!(
        "chaos: hostile phase over after {:?}; waiting for quiescence",
        started.elapsed()
    );
    let settled = chaos.settle(SETTLE_LIMIT).await;
    chaos.stop_processes();
    let outcome = report::collect(&chaos).await;
    println!("{}", outcome.line(chaos.kills, chaos.nats_restarts));
    eprintln!(
        "chaos: seed={seed} took {:?}, unexpected process exits={}",
        started.elapsed(),
        chaos.unexpected_exits
    );
    if !settled || !outcome.ok() {
        outcome.explain(&chaos).await;
        let dir = chaos.keep_dir();
        panic!(
            "chaos run failed (seed {seed}, replay with CHAOS_SEED={seed}); settled={settled}; \
             process logs kept in {}",
            dir.display()
        );
    }
}
