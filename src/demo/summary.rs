//! The demo's closing summary: counts by outcome, what each guest saw, and the duplicate
//! check over the replies the simulator received.

use std::sync::{Arc, Mutex};

use super::timeline::{message_line, Timeline};
use crate::sim::Sim;

pub fn print_summary(timeline: &Arc<Mutex<Timeline>>, sim: &Sim) {
    let Ok(t) = timeline.lock() else { return };
    println!("\n==================== summary ====================");
    println!(
        "events: {}   audit records: {}",
        t.events.len(),
        t.records.len()
    );
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for r in &t.records {
        *counts.entry(r.outcome.as_str()).or_default() += 1;
    }
    println!(
        "outcomes: {}",
        counts
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("  ")
    );
    println!("\nwhat each guest saw:");
    for id in sim.thread_ids() {
        let Some(thread) = sim.thread(&id) else {
            continue;
        };
        println!(
            "  {} ({}){}",
            thread.title,
            thread.provider,
            if thread.is_closed { " [closed]" } else { "" }
        );
        let mut msgs = sim.messages(&id);
        msgs.sort_by_key(|m| m.inserted_at);
        for m in msgs {
            if m.is_inquiry() {
                println!("     system: inquiry");
                continue;
            }
            let line = message_line(&m.text, m.attachments.len(), 100);
            println!("     {:<8} {line}", m.sender.as_str());
        }
    }
    let replies_per_thread = sim.sent_by_api();
    let mut seen = std::collections::HashSet::new();
    let duplicates = replies_per_thread
        .iter()
        .filter(|(thread, text)| {
            !seen.insert((thread.clone(), crate::store::ledger::normalise_text(text)))
        })
        .count();
    println!(
        "\nauto-replies sent: {}   duplicates: {duplicates}",
        replies_per_thread.len()
    );
}
