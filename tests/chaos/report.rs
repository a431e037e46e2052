//! Judging a chaos run: replies at the simulator matched to guest messages by their token,
//! `executed` records matched to replies by Channex message id, `failed` events, latency.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use concierge::channex::Sender;
use concierge::store::audit::{self, AuditFilter, AuditRecord, Outcome};

use crate::rig::{Chaos, PREFIX};

/// What the run produced, per guest message and in total.
pub struct RunOutcome {
    pub messages: usize,
    pub once: usize,
    /// Tokens (guest messages) with more than one reply / with none.
    pub dup: Vec<String>,
    pub lost: Vec<String>,
    /// Replies (Channex message ids) without an `executed` record / with more than one.
    pub unaudited: Vec<String>,
    pub audited_twice: Vec<String>,
    /// Property messages that quote no guest token (should not exist).
    pub stray: usize,
    /// Events with a `failed` record.
    pub failed: BTreeSet<String>,
    /// Guest message → its (first) reply.
    pub latencies: Vec<Duration>,
    pub outcomes: BTreeMap<&'static str, usize>,
    records: Vec<AuditRecord>,
}

/// Reads the audit stream, retrying errors for a while (the restarted server may still be
/// recovering its streams).
async fn audit_records(chaos: &Chaos) -> Vec<AuditRecord> {
    let mut tries = 0;
    loop {
        match audit::query(&chaos.js, PREFIX, &AuditFilter::default()).await {
            Ok(records) => return records,
            Err(e) if tries < 20 => {
                eprintln!("chaos: reading the audit stream: {e} (retrying)");
                tries += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("reading the audit stream: {e}"),
        }
    }
}

pub async fn collect(chaos: &Chaos) -> RunOutcome {
    let records = audit_records(chaos).await;
    let mut executed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut outcomes: BTreeMap<&'static str, usize> = BTreeMap::new();
    for r in &records {
        *outcomes.entry(r.outcome.as_str()).or_default() += 1;
        if r.outcome == Outcome::Executed {
            if let Some(id) = r.channex_message_id.as_deref() {
                *executed.entry(id).or_default() += 1;
            }
        }
    }
    let failed = records
        .iter()
        .filter(|r| r.outcome == Outcome::Failed)
        .map(|r| r.event_id.clone().unwrap_or_else(|| r.id.clone()))
        .collect();
    let mut out = RunOutcome {
        messages: chaos.asked.len(),
        once: 0,
        dup: Vec::new(),
        lost: Vec::new(),
        unaudited: Vec::new(),
        audited_twice: Vec::new(),
        stray: 0,
        failed,
        latencies: Vec::new(),
        outcomes,
        records: Vec::new(),
    };
    out.match_replies(chaos, &executed);
    out.records = records;
    out
}

impl RunOutcome {
    /// Every property message of every thread asked in, matched to its guest message.
    fn match_replies(&mut self, chaos: &Chaos, executed: &BTreeMap<&str, usize>) {
        let threads: BTreeSet<&str> = chaos.asked.iter().map(|a| a.thread_id.as_str()).collect();
        for thread in threads {
            let messages = chaos.sim.sim.messages(thread);
            let replies: Vec<_> = messages
                .iter()
                .filter(|m| m.sender == Sender::Property)
                .collect();
            for reply in &replies {
                match executed.get(reply.id.as_str()).copied().unwrap_or(0) {
                    0 => self.unaudited.push(reply.id.clone()),
                    1 => {}
                    _ => self.audited_twice.push(reply.id.clone()),
                }
            }
            let asked_here = chaos.asked.iter().filter(|a| a.thread_id == thread);
            let mut quoted = 0;
            for asked in asked_here {
                let mine: Vec<_> = replies
                    .iter()
                    .filter(|m| m.text.contains(&asked.token))
                    .collect();
                quoted += mine.len();
                let guest_at = messages
                    .iter()
                    .find(|m| m.id == asked.message_id)
                    .map(|m| m.inserted_at);
                match (mine.first(), guest_at) {
                    (Some(first), Some(at)) => self
                        .latencies
                        .push((first.inserted_at - at).to_std().unwrap_or_default()),
                    _ => {}
                }
                match mine.len() {
                    0 => self.lost.push(asked.token.clone()),
                    1 => self.once += 1,
                    _ => self.dup.push(asked.token.clone()),
                }
            }
            self.stray += replies.len().saturating_sub(quoted);
        }
    }

    pub fn ok(&self) -> bool {
        self.dup.is_empty()
            && self.lost.is_empty()
            && self.unaudited.is_empty()
            && self.audited_twice.is_empty()
            && self.stray == 0
            && self.failed.is_empty()
            && self.once == self.messages
    }

    fn percentile(&self, q: f64) -> f64 {
        let mut v = self.latencies.clone();
        v.sort();
        if v.is_empty() {
            return 0.0;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].as_secs_f64()
    }

    /// The one summary line the issue asks for.
    pub fn line(&self, kills: usize, nats_restarts: usize) -> String {
        format!(
            "chaos: kills={kills} nats_restarts={nats_restarts} messages={} once={} dup={} \
             lost={} unaudited={} failed={} p50={:.1}s p99={:.1}s",
            self.messages,
            self.once,
            self.dup.len(),
            self.lost.len(),
            self.unaudited.len(),
            self.failed.len(),
            self.percentile(0.5),
            self.percentile(0.99),
        )
    }

    /// For a failed run: what the simulator, the audit log and the process logs say about
    /// each message that went wrong.
    pub async fn explain(&self, chaos: &Chaos) {
        eprintln!(
            "chaos: audit outcomes {:?}; replies audited twice {:?}; stray replies {}",
            self.outcomes, self.audited_twice, self.stray
        );
        let bad: BTreeSet<&String> = self.dup.iter().chain(&self.lost).collect();
        for token in bad.iter().take(5) {
            let Some(asked) = chaos.asked.iter().find(|a| &&a.token == token) else {
                continue;
            };
            self.explain_thread(chaos, &asked.thread_id, token);
        }
        for id in self.unaudited.iter().take(5) {
            eprintln!("chaos: reply {id} has no executed record");
            eprint!("{}", chaos.log_lines(id, 10));
        }
        for event in self.failed.iter().take(5) {
            eprintln!("chaos: event {event} ended failed:");
            for r in self
                .records
                .iter()
                .filter(|r| r.event_id.as_ref() == Some(event))
            {
                eprintln!("  {} {:?} {:?} {:?}", r.outcome, r.rule, r.reason, r.error);
            }
        }
    }

    fn explain_thread(&self, chaos: &Chaos, thread: &str, token: &str) {
        eprintln!("chaos: {token} in thread {thread}:");
        for m in chaos.sim.sim.messages(thread) {
            eprintln!(
                "  sim {} {:?} {} {:?}",
                m.inserted_at, m.sender, m.id, m.text
            );
        }
        for r in self
            .records
            .iter()
            .filter(|r| r.thread_id.as_deref() == Some(thread))
        {
            eprintln!(
                "  audit {} {} event={:?} action={:?} reason={:?} msg={:?} error={:?}",
                r.at, r.outcome, r.event_id, r.action, r.reason, r.channex_message_id, r.error
            );
        }
        eprint!("{}", chaos.log_lines(thread, 15));
    }
}
