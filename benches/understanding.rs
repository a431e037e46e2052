//! Understanding benchmark (issue 20): the time `plan()`'s understanding step takes per
//! guest message, over every message of the shipped corpus (`rules/corpus`, seven
//! languages), and what training the shipped topic files costs at load.
//!
//! Reports p50/p99/max per message (target p99 ≤ 1 ms on the 2-core machine), the training
//! time, and the process RSS before and after loading (the model's memory). `BENCH_ROUNDS`
//! (default 20) repeats the corpus. Results: a table on stdout and
//! `target/bench/understanding.json`.
mod common;

use std::path::PathBuf;
use std::time::Instant;

use common::{env_usize, fail, percentile, yes_no, Mem, Table};
use concierge::authoring::eval::read_corpus;
use concierge::content::topics::{load_topics, topics_dir};

fn main() {
    common::print_machine();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let corpus = read_corpus(&root.join("rules/corpus")).unwrap_or_else(|e| fail(&e.to_string()));
    let before = Mem::read();
    let started = Instant::now();
    let (topics, problems) = load_topics(&topics_dir(&root.join("rules")), Vec::new());
    let training = started.elapsed();
    if !problems.is_empty() {
        fail(&format!("topic files: {problems:?}"));
    }
    let after = Mem::read();
    let rounds = env_usize("BENCH_ROUNDS", 20);
    let mut times = Vec::with_capacity(corpus.len() * rounds);
    for _ in 0..rounds {
        for m in &corpus {
            let t = Instant::now();
            std::hint::black_box(topics.understand(&m.text, Some(&m.lang)));
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&times, 50.0), percentile(&times, 99.0));
    let max = times.last().copied().unwrap_or_default();
    let mut table = Table::new(&["measure", "value", "target", "met"]);
    table.row(vec![
        "messages read".into(),
        times.len().to_string(),
        "-".into(),
        "-".into(),
    ]);
    table.row(vec![
        "p50 per message".into(),
        format!("{p50:.3} ms"),
        "-".into(),
        "-".into(),
    ]);
    table.row(vec![
        "p99 per message".into(),
        format!("{p99:.3} ms"),
        "≤ 1 ms".into(),
        yes_no(p99 <= 1.0).into(),
    ]);
    table.row(vec![
        "max per message".into(),
        format!("{max:.3} ms"),
        "-".into(),
        "-".into(),
    ]);
    table.row(vec![
        "training at load".into(),
        format!("{:.0} ms", training.as_secs_f64() * 1000.0),
        "-".into(),
        "-".into(),
    ]);
    let grown = after.rss_kb.saturating_sub(before.rss_kb);
    table.row(vec![
        "RSS added by the model".into(),
        Mem::mib(grown),
        "-".into(),
        "-".into(),
    ]);
    table.print();
    common::write_json(
        "understanding",
        &serde_json::json!({
            "machine": common::machine(), "messages": times.len(), "p50_ms": p50, "p99_ms": p99,
            "max_ms": max, "training_ms": training.as_secs_f64() * 1000.0,
            "rss_before": before.json(), "rss_after": after.json(),
        }),
    );
}
