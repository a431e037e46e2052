//! The health page: the NATS connection, the worker consumer's pending / ack-pending
//! counts, the poller's last complete listing (the scan mark: one for all configured
//! properties) and threads it still owes a retry, Channex calls per minute against
//! `channex.requests_per_minute`, the follow-up timers armed, and who holds the poller
//! and scheduler leases.
//!
//! Owns [`CallRate`]: samples of the process's Channex client counter (the console's
//! only in-memory state, a gauge of this process: on a replica without roles it reads 0).
//! Must not: write anything (its "End every session" form posts to
//! [`super::sessions`]), or call Channex.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull;
use axum::extract::State;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::{html, Markup};

use super::auth::Authed;
use super::layout::{self, Nav};
use super::{Console, ConsoleError};
use crate::channex::ChannexClient;
use crate::store::lease::{Lease, LeaseRecord};
use crate::store::nats::events_stream;
use crate::store::threads::{ScanMark, ThreadSnapshots};

/// Samples of the Channex client's request counter, one every [`SAMPLE_EVERY`], for the
/// last minute: what "calls per minute" is computed from.
#[derive(Clone)]
pub struct CallRate {
    samples: Arc<Mutex<VecDeque<(Instant, u64)>>>,
    channex: ChannexClient,
}

const SAMPLE_EVERY: Duration = Duration::from_secs(5);

impl CallRate {
    /// Starts sampling (a task that ends when the last handle is dropped).
    pub fn start(channex: ChannexClient) -> Self {
        let rate = CallRate {
            samples: Arc::default(),
            channex,
        };
        let weak = Arc::downgrade(&rate.samples);
        let client = rate.channex.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let Some(samples) = weak.upgrade() else { break };
                let mut samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
                samples.push_back((Instant::now(), client.stats().requests_sent));
                while samples.len() > 13 {
                    samples.pop_front();
                }
            }
        });
        rate
    }

    /// Requests sent in the last minute (since the start when that is more recent): a
    /// count, not an extrapolation.
    pub fn last_minute(&self) -> u64 {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let (now, sent) = (Instant::now(), self.channex.stats().requests_sent);
        let oldest = samples
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= Duration::from_secs(60))
            .map_or(0, |(_, n)| *n);
        sent.saturating_sub(oldest)
    }
}

/// What the page shows, read once per request.
struct Snapshot {
    nats: String,
    server: String,
    consumer: Result<(u64, usize, usize), String>,
    scan: Result<Option<ScanMark>, String>,
    timers: Result<u64, String>,
    poller: Result<Option<LeaseRecord>, String>,
    scheduler: Result<Option<LeaseRecord>, String>,
}

async fn read(console: &Console) -> Snapshot {
    let deps = console.deps();
    let client = &deps.infra.client;
    let consumer = async {
        let stream = deps
            .infra
            .js
            .get_stream(events_stream(console.prefix()))
            .await
            .map_err(|e| e.to_string())?;
        let mut consumer = stream
            .get_consumer::<pull::Config>(&deps.config.worker.consumer)
            .await
            .map_err(|e| e.to_string())?;
        let info = consumer.info().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((info.num_pending, info.num_ack_pending, info.num_waiting))
    };
    let scan = async {
        let snapshots = ThreadSnapshots::new(deps.infra.threads.clone());
        snapshots.scan_mark().await.map_err(|e| e.to_string())
    };
    let timers = async {
        // Counted from the keys: the bucket's stream counts deleted timers' markers too.
        crate::store::timers::FollowUps::new(deps.infra.followups.clone())
            .pending_count()
            .await
            .map(|n| n as u64)
            .map_err(|e| e.to_string())
    };
    let lease = |name: &'static str| {
        let lease = Lease::new(
            deps.infra.leases.clone(),
            name,
            String::new(),
            Duration::ZERO,
        );
        async move {
            lease
                .current()
                .await
                .map(|c| c.map(|(record, _)| record))
                .map_err(|e| e.to_string())
        }
    };
    let (consumer, scan, timers, poller, scheduler) =
        tokio::join!(consumer, scan, timers, lease("poller"), lease("scheduler"));
    let info = client.server_info();
    Snapshot {
        nats: format!("{:?}", client.connection_state()).to_lowercase(),
        server: format!(
            "nats-server {} at {}:{}",
            info.version, info.host, info.port
        ),
        consumer,
        scan,
        timers,
        poller,
        scheduler,
    }
}

pub async fn page(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
) -> Result<Markup, ConsoleError> {
    let s = read(&console).await;
    let now = console.now();
    let budget = console.deps().config.channex.requests_per_minute;
    let calls = console.0.calls.last_minute();
    let stats = console.deps().channex.stats();
    let body = html! {
        h1 { "Health" }
        p.lead { "This process's view of NATS, the roles and Channex." }
        div.stats {
            div.stat #nats { div.value { (s.nats) } div.label { "NATS · " (s.server) } }
            @match &s.consumer {
                Ok((pending, ack_pending, _)) => {
                    div.stat #pending { div.value { (pending) } div.label { "events waiting for a worker" } }
                    div.stat #ack-pending { div.value { (ack_pending) } div.label { "events being handled (ack pending)" } }
                }
                Err(e) => div.stat { div.value { "—" } div.label { "worker consumer: " (e) } },
            }
            div.stat #channex { div.value { (calls) " / " (budget) }
                div.label { "Channex calls in the last minute / budget per minute" } }
            div.stat { div.value { @match &s.timers { Ok(n) => (n), Err(_) => "—" } } div.label { "follow-up timers armed" } }
        }
        h2 { "Leaders" }
        div.table-wrap { table #leases {
            thead { tr { th { "Role" } th { "Holder" } th { "Lease expires" } th { "State" } } }
            tbody {
                (lease_row("poller", &s.poller, now))
                (lease_row("scheduler", &s.scheduler, now))
            }
        } }
        h2 { "Polling" }
        (scan_view(&s.scan, now))
        h2 { "Channex client (this process)" }
        p { (stats.requests_sent) " requests sent · " (stats.retries) " retries · "
            (stats.rate_limited) " rate-limited (429) · " (stats.server_errors) " server errors" }
        h2 { "Console sessions" }
        (super::sessions::end_all_form(&authed.csrf))
    };
    Ok(layout::page(
        "Health",
        Nav::Health,
        Some(&authed.csrf),
        body,
    ))
}

fn lease_row(
    role: &str,
    lease: &Result<Option<LeaseRecord>, String>,
    now: DateTime<Utc>,
) -> Markup {
    html! {
        tr {
            td { strong { (role) } }
            @match lease {
                Ok(Some(l)) => {
                    td.mono { (l.holder) }
                    td { (layout::time(l.expires_at)) }
                    td { @if l.expires_at > now { span.pill.ok { "leading" } } @else { span.pill.bad { "expired" } } }
                }
                Ok(None) => { td.muted colspan="2" { "nobody holds the lease" } td { span.pill.warn { "no leader" } } }
                Err(e) => { td colspan="3" { span.pill.bad { "unreadable" } " " (e) } }
            }
        }
    }
}

fn scan_view(scan: &Result<Option<ScanMark>, String>, now: DateTime<Utc>) -> Markup {
    html! {
        @match scan {
            Ok(Some(mark)) => p #scan {
                "Last complete listing of every configured property covered changes up to "
                (layout::time(mark.complete_before)) " (" (layout::human_duration(now - mark.complete_before)) " ago). "
                @if mark.pending.is_empty() { "No thread waiting for a retry." }
                @else { strong { (mark.pending.len()) } " thread(s) waiting for a retry." }
            },
            Ok(None) => p.muted #scan { "No complete listing recorded yet (the poller has not finished a cycle)." },
            Err(e) => p.flash.bad { "Cannot read the poller's mark: " (e) },
        }
    }
}
