//! Worker throughput and rule-evaluation latency.
//!
//! 1. Throughput: N events (default 5,000, a realistic mix) are published to
//!    `CONCIERGE_EVENTS` on a private nats-server, then consumed to the end by
//!    - the BASELINE: a bare pull consumer with the worker's batch size that only acks
//!      (`ack()`), and, for context, one that acks like the worker does (`double_ack`, the
//!      worker's number of events in flight);
//!    - `Worker::run` with 20 rules (the 6 examples + 14 FAQ-style variants) and a dry-run
//!      executor (no Channex calls; audit records, follow-up timers and ledger look-ups are
//!      real JetStream traffic).
//!
//!    Each run gets its own durable consumer; the clock stops when the consumer's ack floor
//!    reaches the last event and nothing is pending or unacknowledged, so the time covers
//!    processing and acks, not just delivery. Rounds are interleaved; the median rate wins.
//!    Each run also reports the CPU it cost per event (this process + the private
//!    nats-server, from `/proc`), which other load on a shared machine disturbs far less.
//! 2. Latency: `RuleEngine::evaluate` with the same 20 rules over the same event mix.
//!
//! `cargo bench --bench worker`; `BENCH_EVENTS`, `BENCH_ROUNDS`, `BENCH_EVALS` override the
//! sizes. Results: stdout tables + `target/bench/worker.json`.
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use chrono::{DateTime, TimeDelta, Utc};
use common::{fail, median, percentile, yes_no, Table};
use concierge::authoring::samples;
use concierge::config::{Config, Secret, WorkerConfig};
use concierge::events::{Event, PropertyInfo};
use concierge::plan::rules::{EvalContext, RuleEngine, RuleLimits};
use concierge::store::nats::Infra;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

const PREFIX: &str = "concierge";
const TARGET_RATIO: f64 = 0.5;
const TARGET_P99_US: f64 = 1000.0;

/// The 14 FAQ-style variants: (slug, topic, keywords, property var, template text).
const VARIANTS: [(&str, &str, &[&str], &str, &str); 14] = [
    (
        "pets",
        "pets",
        &["pet", "dog", "cat", "puppy"],
        "pets_policy",
        "Hi! About pets: {{vars.pets_policy}}",
    ),
    (
        "towels",
        "towels and linen",
        &["towel", "linen", "sheet", "bedding"],
        "linen",
        "Hi! {{vars.linen}}",
    ),
    (
        "breakfast",
        "breakfast",
        &["breakfast", "coffee", "morning meal"],
        "breakfast",
        "Hi! About breakfast: {{vars.breakfast}}",
    ),
    (
        "luggage",
        "luggage storage",
        &["luggage", "bag", "suitcase"],
        "luggage",
        "Hi! About luggage: {{vars.luggage}}",
    ),
    (
        "pool",
        "the pool",
        &["pool", "swimming"],
        "pool",
        "Hi! About the pool: {{vars.pool}}",
    ),
    (
        "aircon",
        "air conditioning",
        &["air conditioning", "aircon", "ac", "air con"],
        "aircon",
        "Hi! {{vars.aircon}}",
    ),
    (
        "heating",
        "heating",
        &["heating", "heater", "cold at night"],
        "heating",
        "Hi! {{vars.heating}}",
    ),
    (
        "laundry",
        "laundry",
        &["laundry", "washing machine", "dryer", "iron"],
        "laundry",
        "Hi! About laundry: {{vars.laundry}}",
    ),
    (
        "bbq",
        "barbecue",
        &["bbq", "barbecue", "grill"],
        "bbq",
        "Hi! About the barbecue: {{vars.bbq}}",
    ),
    (
        "baby",
        "baby equipment",
        &["baby", "cot", "crib", "high chair"],
        "baby",
        "Hi! For the little one: {{vars.baby}}",
    ),
    (
        "taxi",
        "taxis and transfers",
        &["taxi", "uber", "transfer", "shuttle"],
        "taxi",
        "Hi! {{vars.taxi}}",
    ),
    (
        "restaurants",
        "restaurants",
        &["restaurant", "eat", "dinner", "recommendation"],
        "restaurants",
        "Hi! Our favourites: {{vars.restaurants}}",
    ),
    (
        "keys",
        "keys",
        &["key", "lockbox", "key box", "door code"],
        "keys",
        "Hi! About the keys: {{vars.keys}}. See you at {{property.name}}!",
    ),
    (
        "smoking",
        "smoking",
        &["smoke", "smoking", "cigarette"],
        "smoking",
        "Hi! {{vars.smoking}}",
    ),
];

fn variant_rule(topic: &str, keywords: &[&str], var: &str, slug: &str) -> String {
    let words: Vec<String> = keywords.iter().map(|k| format!("{k:?}")).collect();
    format!(
        r#"// name: FAQ: {topic}
// description: Answers questions about {topic} from the property var `{var}`.

if event.type != "thread.new_message" || message.sender != "guest" || thread.is_closed == true {{
    return;
}}
if !("{var}" in property.vars) {{
    return;   // no facts, no auto-reply
}}
if contains_any(message.text, [{words}]) {{
    reply("faq_{slug}");
    stop();   // answered: the delayed holding reply is not needed
}}
"#,
        words = words.join(", ")
    )
}

/// Copies the example rules and templates and adds the 14 variants; returns the rule count.
fn write_rules(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let rules = root.join("rules");
    let templates = root.join("templates");
    let copy = |from: &Path, to: &Path, ext: &str| {
        std::fs::create_dir_all(to).unwrap_or_else(|e| fail(&format!("{}: {e}", to.display())));
        let entries = std::fs::read_dir(from)
            .unwrap_or_else(|e| fail(&format!("reading {}: {e}", from.display())));
        for entry in entries.flatten() {
            let p = entry.path();
            if p.is_file() && p.extension().is_some_and(|x| x == ext) {
                if let Some(name) = p.file_name() {
                    std::fs::copy(&p, to.join(name))
                        .unwrap_or_else(|e| fail(&format!("copying {}: {e}", p.display())));
                }
            }
        }
    };
    copy(&repo.join("rules"), &rules, "rhai");
    copy(&repo.join("templates"), &templates, "hbs");
    for (slug, topic, keywords, var, template) in VARIANTS {
        let write = |path: std::path::PathBuf, body: String| {
            std::fs::write(&path, body)
                .unwrap_or_else(|e| fail(&format!("writing {}: {e}", path.display())))
        };
        // 15_faq_*: after the main FAQ rule, before the thanks / delayed-reply rules.
        write(
            rules.join(format!("15_faq_{slug}.rhai")),
            variant_rule(topic, keywords, var, slug),
        );
        write(
            templates.join(format!("faq_{slug}.hbs")),
            format!("{template}\n"),
        );
    }
    (rules, templates)
}

fn property() -> PropertyInfo {
    let mut p = samples::sample_property();
    p.id = "bench-prop".into();
    let extra = json!({
        "pets_policy": "Small dogs are welcome (10 EUR per night); please keep them off the sofa.",
        "linen": "Towels and bed linen are provided and changed every 4 days.",
        "breakfast": "Breakfast is not included, but the bakery downstairs opens at 7:00.",
        "luggage": "You can leave your bags in the storage room from 10:00 on arrival day.",
        "pool": "The pool is open from 9:00 to 20:00, May to September.",
        "aircon": "Every bedroom has air conditioning; the remote is in the drawer.",
        "heating": "Heating is controlled by the thermostat in the hallway.",
        "laundry": "There is a washing machine in the kitchen and a drying rack on the balcony.",
        "bbq": "The barbecue on the terrace can be used until 22:00; charcoal is in the shed.",
        "baby": "We have a cot and a high chair; tell us and we will set them up.",
        "taxi": "We recommend Taxi Lisboa (+351 21 000 0000) or Bolt; a transfer from the airport is about 20 EUR.",
        "restaurants": "Taberna da Rua (fish), Casa do Bacalhau, and Pastelaria Estrela for cakes.",
        "keys": "The key box is left of the door; the code arrives on the morning of check-in",
        "smoking": "Smoking is not allowed inside; you are welcome to smoke on the balcony."
    });
    if let Some(extra) = extra.as_object() {
        p.vars.extend(extra.clone());
    }
    p
}

/// A realistic mix: guest questions (every FAQ topic, plus questions no rule answers),
/// small talk, thanks, staff replies, an inquiry, follow-up timers firing, daily ticks.
fn catalog(now: DateTime<Utc>) -> Vec<(&'static str, Event)> {
    let p = property();
    let questions = [
        "Hi! What's the wifi password?",
        "What time is check-in?",
        "When do we have to check out on Sunday?",
        "Is there parking near the apartment?",
        "Could we check in early, around 11am?",
        "How do we get there from the airport? What's the address?",
        "Can we bring our dog? He is very calm.",
        "Are towels provided or should we bring our own?",
        "Is breakfast included?",
        "Where can we leave our luggage in the afternoon?",
        "Is the pool open in October?",
        "Does the flat have air conditioning?",
        "How does the heating work?",
        "Is there a washing machine we can use?",
        "Can we use the barbecue on the terrace?",
        "Do you have a cot for our baby?",
        "Can you recommend a taxi company?",
        "Any restaurant you would recommend for dinner?",
        "Where is the key box?",
        "Is smoking allowed on the balcony?",
        "Do you have a hair dryer?",
        "Is it a quiet street at night?",
    ];
    let chatter = [
        "Hello",
        "We arrive at 6pm with two kids.",
        "We had a wonderful time, the view is amazing and we will recommend you to our friends.",
    ];
    let thanks = ["Thank you!", "ok, see you", "Thanks a lot, perfect"];
    let mut out = Vec::new();
    for provider in ["booking_com", "airbnb"] {
        for q in questions {
            out.push((
                "guest question",
                samples::message_event(&p, provider, "guest", q, now),
            ));
        }
        for c in chatter {
            out.push((
                "guest chatter",
                samples::message_event(&p, provider, "guest", c, now),
            ));
        }
        for t in thanks {
            out.push((
                "guest thanks",
                samples::message_event(&p, provider, "guest", t, now),
            ));
        }
        for s in ["Sure, see you soon!", "The code is 4521."] {
            out.push((
                "property message",
                samples::message_event(&p, provider, "property", s, now),
            ));
        }
    }
    for _ in 0..2 {
        out.push(("inquiry.received", samples::inquiry_event(&p, now)));
    }
    let deadline = (now + TimeDelta::hours(2)).to_rfc3339();
    let inquiry_facts: Map<String, Value> = json!({
        "guest": "Ana", "listing": "Casa Azul", "checkin": "2024-09-12", "checkout": "2024-09-15",
        "nights": 3, "guests": 2, "payout": "312.50", "currency": "EUR", "deadline": deadline
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let quiet: Map<String, Value> = json!({"template": "faq_wifi"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (provider, awaiting) in [("booking_com", true), ("airbnb", true), ("airbnb", false)] {
        out.push((
            "follow_up.due",
            samples::follow_up_event(&p, provider, "delayed_reply", Map::new(), awaiting, now),
        ));
        out.push((
            "follow_up.due",
            samples::follow_up_event(
                &p,
                provider,
                "quiet_reply:faq_wifi",
                quiet.clone(),
                awaiting,
                now,
            ),
        ));
    }
    out.push((
        "follow_up.due",
        samples::follow_up_event(
            &p,
            "airbnb",
            "inquiry_alert",
            inquiry_facts.clone(),
            true,
            now,
        ),
    ));
    out.push((
        "follow_up.due",
        samples::follow_up_event(
            &p,
            "airbnb",
            "inquiry_final_alert",
            inquiry_facts,
            true,
            now,
        ),
    ));
    for days in [1, 3, 20, 30] {
        out.push(("schedule.tick", samples::tick_event(&p, days, now)));
    }
    out
}

/// The i-th published event: a catalog entry with its own event, thread and message ids.
fn nth_event(catalog: &[(&'static str, Event)], i: usize) -> Event {
    let mut e = catalog[i % catalog.len()].1.clone();
    e.id = format!("{}#{i}", e.id);
    if let Some(t) = e.thread.as_mut() {
        t.id = format!("bench-thread-{i}");
    }
    if let Some(m) = e.message.as_mut() {
        m.id = format!("bench-msg-{i}");
    }
    e
}

fn main() {
    common::block_on(run());
}

#[derive(Debug, Clone, Copy)]
enum Consumer {
    /// Bare pull consumer, `ack()` per message (the BASELINE).
    BareAck,
    /// Bare pull consumer, `double_ack()` with the worker's events in flight.
    BareDoubleAck,
    Worker,
}

impl Consumer {
    fn label(self) -> &'static str {
        match self {
            Consumer::BareAck => "BASELINE: bare pull consume + ack",
            Consumer::BareDoubleAck => "bare pull consume + double_ack (worker's ack mode)",
            Consumer::Worker => "Worker::run, 20 rules, dry-run executor",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Consumer::BareAck => "baseline_ack",
            Consumer::BareDoubleAck => "bare_double_ack",
            Consumer::Worker => "worker",
        }
    }
}

async fn run() {
    let n = common::env_usize("BENCH_EVENTS", 5_000).max(1);
    let rounds = common::env_usize("BENCH_ROUNDS", 3).max(1);
    let evals = common::env_usize("BENCH_EVALS", 20_000).max(1);
    println!("== worker benchmark ==");
    common::print_machine();

    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&format!("temp dir: {e}")));
    let (rules_dir, templates_dir) = write_rules(dir.path());
    let nats = common::nats_server();
    let nats_cfg = nats.config();
    let infra = common::infra(&nats_cfg).await;

    let mut config = Config::default();
    // Dry-run: the executor never calls Channex, so this address is never used.
    config.channex.base_url = "http://127.0.0.1:9/api/v1/".into();
    config.channex.api_key = Secret::new("unused-in-dry-run");
    config.nats = nats_cfg;
    config.rules.dir = rules_dir.clone();
    config.rules.templates_dir = templates_dir;
    config.rules.dry_run = true;
    config.rules.watch = false;
    let worker_cfg = config.worker.clone();
    let batch = worker_cfg.concurrency.max(1);

    // Rules as the worker loads them (also checks that all 20 compile).
    let engine = RuleEngine::new(RuleLimits::default());
    let (rules, problems) = concierge::content::load_rules(&engine, &rules_dir);
    if !problems.is_empty() || rules.len() != 20 {
        let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        fail(&format!(
            "expected 20 rules, loaded {}; problems: {}",
            rules.len(),
            list.join("; ")
        ));
    }

    // Publish the N events once; every run consumes all of them with its own consumer.
    let now = Utc::now();
    let mix = catalog(now);
    let publish_started = Instant::now();
    let mut acks = Vec::with_capacity(n);
    let mut type_counts: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..n {
        let e = nth_event(&mix, i);
        *type_counts.entry(mix[i % mix.len()].0).or_default() += 1;
        let payload = serde_json::to_vec(&e).unwrap_or_else(|err| fail(&err.to_string()));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", e.id.as_str());
        let ack = infra
            .js
            .publish_with_headers(e.subject(PREFIX), headers, payload.into())
            .await
            .unwrap_or_else(|err| fail(&format!("publishing event {i}: {err}")));
        acks.push(ack);
        if acks.len() >= 500 {
            for a in acks.drain(..) {
                a.await
                    .unwrap_or_else(|err| fail(&format!("publish ack: {err}")));
            }
        }
    }
    for a in acks.drain(..) {
        a.await
            .unwrap_or_else(|err| fail(&format!("publish ack: {err}")));
    }
    let mut stream = infra
        .js
        .get_stream(concierge::store::nats::events_stream(PREFIX))
        .await
        .unwrap_or_else(|e| fail(&format!("events stream: {e}")));
    let last_seq = stream
        .info()
        .await
        .unwrap_or_else(|e| fail(&format!("events stream info: {e}")))
        .state
        .last_sequence;
    println!(
        "published {n} events ({} kinds in the mix: {}) in {:.0} ms; worker batch = concurrency = {batch}",
        mix.len(),
        type_counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        common::ms(publish_started.elapsed())
    );

    // Throughput rounds, interleaved so drift on a shared machine hits every kind alike.
    let kinds = [Consumer::BareAck, Consumer::Worker, Consumer::BareDoubleAck];
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut redelivered: BTreeMap<&str, usize> = BTreeMap::new();
    // CPU per event (this process + the private nats-server): steadier than events/s on a
    // shared machine, where other load takes cores away from the wall clock.
    let mut cpu_us: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let server_pid = nats_server_pid(nats.port);
    for round in 0..rounds {
        for kind in kinds {
            let mut cfg = worker_cfg.clone();
            cfg.consumer = format!("bench-{}-{round}", kind.key().replace('_', "-"));
            let cpu_before = cpu_seconds(server_pid);
            let (secs, redeliveries) = match kind {
                Consumer::Worker => {
                    let mut config = config.clone();
                    config.worker = cfg.clone();
                    run_worker(&config, &infra, &cfg, n, last_seq).await
                }
                _ => run_bare(kind, &infra.js, &cfg, n, last_seq).await,
            };
            let cpu = (cpu_seconds(server_pid) - cpu_before) * 1e6 / n as f64;
            let rate = n as f64 / secs;
            println!(
                "round {}: {:<52} {:>9.0} events/s ({:.0} ms, {cpu:.0} µs CPU/event)",
                round + 1,
                kind.label(),
                rate,
                secs * 1000.0
            );
            cpu_us.entry(kind.key()).or_default().push(cpu);
            results.entry(kind.key()).or_default().push(rate);
            *redelivered.entry(kind.key()).or_default() += redeliveries;
        }
    }

    // What the worker decided (every worker round processes the same events; the audit
    // stream drops the repeats by id, so this is one round's worth).
    let records = concierge::store::audit::query(&infra.js, PREFIX, &Default::default())
        .await
        .unwrap_or_else(|e| fail(&format!("reading the audit stream: {e}")));
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_action: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        *outcomes.entry(r.outcome.to_string()).or_default() += 1;
        let action = r.action.as_ref().map_or("-", |a| a.as_str());
        *by_action
            .entry(format!("{action}:{}", r.outcome))
            .or_default() += 1;
    }
    println!("audit records by action:outcome: {by_action:?}");
    let bad = outcomes.get("rule_error").copied().unwrap_or(0)
        + outcomes.get("failed").copied().unwrap_or(0)
        + outcomes.get("rule_rejected").copied().unwrap_or(0);

    let med = |k: &str| median(results.get(k).map(Vec::as_slice).unwrap_or(&[]));
    let baseline = med(Consumer::BareAck.key());
    let worker_rate = med(Consumer::Worker.key());
    let double = med(Consumer::BareDoubleAck.key());
    let ratio = worker_rate / baseline;
    let ratio_met = ratio >= TARGET_RATIO;

    println!("\nthroughput: {n} events, median of {rounds} rounds");
    let mut table = Table::new(&[
        "consumer",
        "events/s (median)",
        "rounds",
        "ratio to BASELINE",
        "CPU µs/event (bench + nats-server)",
        "target",
        "met",
    ]);
    for kind in kinds {
        let rates = results.get(kind.key()).cloned().unwrap_or_default();
        let r = med(kind.key()) / baseline;
        let (target, met) = match kind {
            Consumer::Worker => (format!(">= {TARGET_RATIO}"), yes_no(ratio_met).to_string()),
            _ => ("-".to_string(), "-".to_string()),
        };
        table.row(vec![
            kind.label().into(),
            format!("{:.0}", med(kind.key())),
            rates
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            format!("{r:.2}"),
            format!(
                "{:.0}",
                median(cpu_us.get(kind.key()).map(Vec::as_slice).unwrap_or(&[]))
            ),
            target,
            met,
        ]);
    }
    table.print();
    println!(
        "worker / bare double_ack = {:.2}; audit records (one round): {} ({}); redeliveries: {}",
        worker_rate / double,
        records.len(),
        outcomes
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        redelivered
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if bad > 0 {
        println!(
            "WARNING: {bad} audit records are rule errors / failures: the mix or the rules are off"
        );
    }

    // Rule-evaluation latency.
    let lat = eval_latency(&engine, &rules, &mix, evals);
    println!(
        "\nrule evaluation: RuleEngine::evaluate, 20 rules, {evals} evaluations over the mix \
         (event -> Rhai maps included), after 1,000 warm-up evaluations"
    );
    let mut lt = Table::new(&[
        "events",
        "count",
        "p50 µs",
        "p90 µs",
        "p99 µs",
        "max µs",
        "target p99",
        "met",
    ]);
    let mut lat_json = Vec::new();
    let mut p99_met = true;
    for (label, samples_us) in &lat {
        let s = samples_us;
        let (p50, p90, p99, max) = (
            percentile(s, 50.0),
            percentile(s, 90.0),
            percentile(s, 99.0),
            s.last().copied().unwrap_or(f64::NAN),
        );
        let overall = *label == "all";
        if overall {
            p99_met = p99 < TARGET_P99_US;
        }
        lt.row(vec![
            label.to_string(),
            s.len().to_string(),
            format!("{p50:.1}"),
            format!("{p90:.1}"),
            format!("{p99:.1}"),
            format!("{max:.1}"),
            if overall {
                format!("< {TARGET_P99_US:.0} µs")
            } else {
                "-".into()
            },
            if overall {
                yes_no(p99_met).into()
            } else {
                "-".into()
            },
        ]);
        lat_json.push(json!({"events": label, "count": s.len(), "p50_us": p50, "p90_us": p90, "p99_us": p99, "max_us": max}));
    }
    lt.print();

    common::write_json(
        "worker",
        &json!({
            "bench": "worker",
            "machine": common::machine(),
            "events": n,
            "rounds": rounds,
            "rules": rules.len(),
            "batch_size": batch,
            "concurrency": worker_cfg.concurrency,
            "mix": type_counts,
            "throughput_events_per_s": {
                "baseline_bare_ack": {"median": baseline, "rounds": results.get("baseline_ack")},
                "bare_double_ack": {"median": double, "rounds": results.get("bare_double_ack")},
                "worker": {"median": worker_rate, "rounds": results.get("worker")},
            },
            "ratio_worker_to_baseline": ratio,
            "ratio_worker_to_double_ack": worker_rate / double,
            "audit_outcomes": outcomes,
            "redeliveries": redelivered,
            "cpu_us_per_event_bench_and_nats_server": cpu_us,
            "evaluation_latency": lat_json,
            "targets": {
                "ratio_min": TARGET_RATIO, "ratio_met": ratio_met,
                "p99_us_max": TARGET_P99_US, "p99_met": p99_met,
            },
        }),
    );
    drop(nats);
}

/// The private nats-server's pid, found by its port on the command line (`None`: its CPU is
/// not counted, and the CPU column covers this process alone).
fn nats_server_pid(port: u16) -> Option<u32> {
    let port = port.to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_server = args.first().is_some_and(|a| a.ends_with(b"nats-server"));
            (is_server && args.contains(&port.as_bytes())).then_some(pid)
        })
}

/// User + system CPU seconds used so far by this process and by `server` (from
/// `/proc/<pid>/stat`, in clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds(server: Option<u32>) -> f64 {
    let read = |stat: String| -> Option<f64> {
        let text = std::fs::read_to_string(stat).ok()?;
        // Fields after the `)` that closes the command name start at field 3 (`state`):
        // utime and stime are fields 14 and 15.
        let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
        let user: f64 = fields.get(11)?.parse().ok()?;
        let system: f64 = fields.get(12)?.parse().ok()?;
        Some((user + system) / 100.0)
    };
    let own = read("/proc/self/stat".into()).unwrap_or(0.0);
    let server = server
        .and_then(|pid| read(format!("/proc/{pid}/stat")))
        .unwrap_or(0.0);
    own + server
}

/// Waits until the consumer has acked everything up to `last_seq`; returns the consumer
/// info at that moment.
async fn wait_all_acked(
    consumer: &mut jetstream::consumer::Consumer<pull::Config>,
    last_seq: u64,
    started: Instant,
) -> jetstream::consumer::Info {
    let limit = Duration::from_secs(600);
    loop {
        let info = consumer
            .info()
            .await
            .unwrap_or_else(|e| fail(&format!("consumer info: {e}")))
            .clone();
        if info.ack_floor.stream_sequence >= last_seq
            && info.num_ack_pending == 0
            && info.num_pending == 0
        {
            return info;
        }
        if started.elapsed() > limit {
            fail(&format!(
                "consumer {} did not finish within {limit:?}: ack floor {} of {last_seq}, {} unacked, {} pending",
                info.name, info.ack_floor.stream_sequence, info.num_ack_pending, info.num_pending
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn create_consumer(
    js: &jetstream::Context,
    cfg: &WorkerConfig,
) -> jetstream::consumer::Consumer<pull::Config> {
    concierge::roles::worker::ensure_consumer(js, PREFIX, cfg)
        .await
        .unwrap_or_else(|e| fail(&format!("creating consumer {}: {e}", cfg.consumer)))
}

/// A bare pull consumer: the same consumer config and batch size as the worker, no work.
async fn run_bare(
    kind: Consumer,
    js: &jetstream::Context,
    cfg: &WorkerConfig,
    n: usize,
    last_seq: u64,
) -> (f64, usize) {
    let mut consumer = create_consumer(js, cfg).await;
    let batch = cfg.concurrency.max(1);
    let started = Instant::now();
    let pulling = consumer.clone();
    let task = tokio::spawn(async move {
        let messages = pulling
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .unwrap_or_else(|e| fail(&format!("pull: {e}")))
            .take(n);
        match kind {
            Consumer::BareDoubleAck => {
                messages
                    .for_each_concurrent(batch, |m| async move {
                        let m = m.unwrap_or_else(|e| fail(&format!("pull: {e}")));
                        m.double_ack()
                            .await
                            .unwrap_or_else(|e| fail(&format!("double_ack: {e}")));
                    })
                    .await
            }
            _ => {
                let mut messages = std::pin::pin!(messages);
                while let Some(m) = messages.next().await {
                    let m = m.unwrap_or_else(|e| fail(&format!("pull: {e}")));
                    m.ack().await.unwrap_or_else(|e| fail(&format!("ack: {e}")));
                }
            }
        }
    });
    let info = wait_all_acked(&mut consumer, last_seq, started).await;
    let secs = started.elapsed().as_secs_f64();
    let _ = task.await;
    (secs, info.num_redelivered)
}

async fn run_worker(
    config: &Config,
    infra: &Infra,
    cfg: &WorkerConfig,
    _n: usize,
    last_seq: u64,
) -> (f64, usize) {
    let mut consumer = create_consumer(&infra.js, cfg).await;
    let channex = concierge::wiring::channex_client(config)
        .unwrap_or_else(|e| fail(&format!("Channex client: {e:#}")));
    let (worker, live) = concierge::wiring::worker(config, infra, channex)
        .await
        .unwrap_or_else(|e| fail(&format!("building the worker: {e:#}")));
    let loaded = live.current().rules.len();
    if loaded != 20 {
        fail(&format!("the worker loaded {loaded} rules, expected 20"));
    }
    let (stop, shutdown) = watch::channel(false);
    let js = infra.js.clone();
    let started = Instant::now();
    let running = tokio::spawn(async move { worker.run(&js, PREFIX, shutdown).await });
    let info = wait_all_acked(&mut consumer, last_seq, started).await;
    let secs = started.elapsed().as_secs_f64();
    let _ = stop.send(true);
    match running.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail(&format!("worker: {e}")),
        Err(e) => fail(&format!("worker task: {e}")),
    }
    drop(live);
    (secs, info.num_redelivered)
}

/// Evaluation latency in µs per event kind (sorted), plus `all`.
fn eval_latency(
    engine: &RuleEngine,
    rules: &concierge::plan::rules::RuleSet,
    mix: &[(&'static str, Event)],
    evals: usize,
) -> Vec<(&'static str, Vec<f64>)> {
    let ctx = EvalContext { now: Utc::now() };
    let mut actions = 0usize;
    for i in 0..1_000 {
        actions += engine
            .evaluate(rules, &mix[i % mix.len()].1, &ctx)
            .actions()
            .count();
    }
    let mut by_kind: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
    let mut all = Vec::with_capacity(evals);
    for i in 0..evals {
        let (kind, event) = &mix[i % mix.len()];
        let started = Instant::now();
        let evaluation = engine.evaluate(rules, event, &ctx);
        let us = started.elapsed().as_secs_f64() * 1e6;
        actions += evaluation.actions().count();
        if evaluation.errors().next().is_some() {
            fail(&format!(
                "rule error on a {kind} event: {:?}",
                evaluation.errors().next().and_then(|o| o.error.clone())
            ));
        }
        all.push(us);
        by_kind.entry(kind).or_default().push(us);
    }
    std::hint::black_box(actions);
    let mut out: Vec<(&'static str, Vec<f64>)> = vec![("all", all)];
    out.extend(by_kind);
    for (_, v) in out.iter_mut() {
        v.sort_by(|a, b| a.total_cmp(b));
    }
    out
}
