//! Webhook nudges: which ones become polls ([`NudgeGate`]), and how they reach whichever
//! poller leads (a core NATS subject every poller listens to, [`nudge_subject`]).
//!
//! Owns: the per-property coalescing, the nudge budget and the nudge subject. Must not:
//! poll or publish events (the poller does), nor read the wall clock (gaps are measured on
//! the monotonic `Instant`s the caller passes).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::config::Config;

/// Nudges of one property are coalesced: at most one nudged poll per this gap.
pub const NUDGE_MIN_GAP: Duration = Duration::from_secs(1);

/// Decides which webhook nudges become polls. A nudge is outside data (anyone with the
/// webhook secret, or any NATS publisher on the nudge subject, can send one), so:
/// - it only ever polls a configured property (`channex.property_ids`; any id when that is
///   empty, meaning "all the key can see"), since a global Channex webhook fires for every
///   property of the account and polling another one would answer its guests;
/// - nudges of one property within [`NUDGE_MIN_GAP`] of its last poll collapse into one
///   trailing poll when the gap has passed (so a burst costs at most two polls); a nudge
///   without a property (`None`) sweeps every property and is coalesced against the last
///   full sweep, interval or nudged;
/// - nudged polls draw on their own budget, a quarter of `channex.requests_per_minute`
///   (at least one a minute), charged per property polled (a `None` nudge costs one per
///   configured property), so a nudge flood cannot starve sends of the shared Channex
///   rate limit; a nudge over the budget is dropped and the interval poll catches up.
///
/// Memory is bounded: poll times older than the gap are forgotten (they no longer defer
/// anything), and a nudge is only deferred for a key polled within the gap (and leaves
/// `pending` when it is polled or due), so `pending` is bounded by the polls made.
pub struct NudgeGate {
    configured: HashSet<String>,
    last_poll: HashMap<Option<String>, Instant>,
    pending: HashMap<Option<String>, Instant>,
    budget: governor::DefaultDirectRateLimiter,
    last_prune: Option<Instant>,
}

impl NudgeGate {
    pub fn new(config: &Config) -> Self {
        let per_minute = (config.channex.requests_per_minute / 4).max(1);
        let quota = governor::Quota::per_minute(
            std::num::NonZeroU32::new(per_minute).unwrap_or(std::num::NonZeroU32::MIN),
        );
        NudgeGate {
            configured: config.channex.property_ids.iter().cloned().collect(),
            last_poll: HashMap::new(),
            pending: HashMap::new(),
            budget: governor::RateLimiter::direct(quota),
            last_prune: None,
        }
    }

    /// `Some(property)` when the nudge should poll now; otherwise it was dropped or
    /// deferred (see [`Self::take_due`]).
    pub fn admit(&mut self, property: Option<String>, now: Instant) -> Option<Option<String>> {
        if let Some(p) = &property {
            if !self.configured.is_empty() && !self.configured.contains(p) {
                metrics::counter!("concierge_nudges_total", "result" => "unconfigured")
                    .increment(1);
                tracing::debug!(property = %p, "webhook nudge for a property that is not configured; ignored");
                return None;
            }
        }
        match self.last_poll.get(&property) {
            Some(at) if now.duration_since(*at) < NUDGE_MIN_GAP => {
                metrics::counter!("concierge_nudges_total", "result" => "coalesced").increment(1);
                let due = *at + NUDGE_MIN_GAP;
                self.pending.entry(property).or_insert(due);
                None
            }
            _ => self.spend(property),
        }
    }

    fn spend(&mut self, property: Option<String>) -> Option<Option<String>> {
        // What the nudge will poll: one property, or a sweep of every configured one.
        let polls = match &property {
            None => self.configured.len().max(1),
            Some(_) => 1,
        };
        let polls = std::num::NonZeroU32::new(u32::try_from(polls).unwrap_or(u32::MAX))
            .unwrap_or(std::num::NonZeroU32::MIN);
        // A sweep larger than the whole budget is never admitted: the interval covers it.
        if !matches!(self.budget.check_n(polls), Ok(Ok(()))) {
            metrics::counter!("concierge_nudges_total", "result" => "over_budget").increment(1);
            return None;
        }
        metrics::counter!("concierge_nudges_total", "result" => "polled").increment(1);
        Some(property)
    }

    /// Record a poll of `property` (nudged or on the interval): it restarts the gap.
    pub fn polled(&mut self, property: Option<&str>, now: Instant) {
        let key = property.map(str::to_string);
        self.pending.remove(&key);
        self.last_poll.insert(key, now);
        self.prune(now);
    }

    /// Forgets poll times older than the gap (at most once a gap, so the cost stays linear
    /// in the polls made): with an empty `property_ids` any made-up id is polled once.
    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|at| now.duration_since(at) < NUDGE_MIN_GAP)
        {
            return;
        }
        self.last_prune = Some(now);
        self.last_poll
            .retain(|_, at| now.duration_since(*at) < NUDGE_MIN_GAP);
    }

    /// Resolves when the earliest deferred nudge is due (never when none is pending).
    pub async fn next_due(&self) {
        match self.pending.values().min() {
            Some(due) => tokio::time::sleep_until((*due).into()).await,
            None => futures::future::pending().await,
        }
    }

    /// The deferred nudge that is due now, if any (and within the budget).
    pub fn take_due(&mut self, now: Instant) -> Option<Option<String>> {
        let key = self
            .pending
            .iter()
            .filter(|(_, due)| **due <= now)
            .min_by_key(|(_, due)| **due)
            .map(|(k, _)| k.clone())?;
        self.pending.remove(&key);
        self.spend(key)
    }
}

/// Core NATS subject carrying webhook nudges to whichever poller leads.
pub fn nudge_subject(prefix: &str) -> String {
    format!("{prefix}.control.poll")
}

pub(super) async fn next_nudge(
    sub: &mut Option<async_nats::Subscriber>,
) -> Option<async_nats::Message> {
    match sub {
        Some(s) => s.next().await,
        None => futures::future::pending().await,
    }
}

/// Publishes webhook nudges (from [`crate::http`]) for the leading poller, wherever it runs.
/// The payload is the property id, or empty for "poll everything".
pub async fn publish_nudges(
    mut nudges: mpsc::Receiver<Option<String>>,
    client: async_nats::Client,
    prefix: String,
) {
    let subject = nudge_subject(&prefix);
    while let Some(property) = nudges.recv().await {
        let payload = property.unwrap_or_default();
        if let Err(e) = client.publish(subject.clone(), payload.into()).await {
            tracing::warn!(error = %e, "could not forward a webhook nudge; the next poll will catch up");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(property_ids: &[&str], requests_per_minute: u32) -> NudgeGate {
        let mut config = Config::default();
        config.channex.property_ids = property_ids.iter().map(|p| p.to_string()).collect();
        config.channex.requests_per_minute = requests_per_minute;
        NudgeGate::new(&config)
    }

    #[test]
    fn a_nudge_without_a_property_costs_one_poll_per_configured_property() {
        // A budget of 6 nudged polls a minute; each sweep polls 3 properties.
        let mut g = gate(&["p1", "p2", "p3"], 24);
        let now = Instant::now();
        assert_eq!(g.admit(None, now), Some(None));
        assert_eq!(g.admit(None, now), Some(None));
        assert_eq!(g.admit(None, now), None, "a third sweep is over the budget");
    }

    #[test]
    fn a_full_sweep_coalesces_nudges_without_a_property() {
        let mut g = gate(&["p1", "p2"], 6000);
        let now = Instant::now();
        assert_eq!(g.admit(None, now), Some(None));
        g.polled(None, now);
        g.polled(Some("p1"), now);
        g.polled(Some("p2"), now);
        assert_eq!(g.admit(None, now), None, "deferred, not polled again");
        assert_eq!(g.take_due(now + NUDGE_MIN_GAP), Some(None));
    }

    #[test]
    fn poll_times_older_than_the_gap_are_forgotten() {
        let mut g = gate(&[], 600_000);
        let t0 = Instant::now();
        for i in 0..1000 {
            let p = format!("made-up-{i}");
            assert!(g.admit(Some(p.clone()), t0).is_some());
            g.polled(Some(&p), t0);
        }
        g.polled(None, t0 + 2 * NUDGE_MIN_GAP);
        assert_eq!(g.last_poll.len(), 1);
    }
}
