//! Watching the scores: the gauges, and an alert when a score heads under its threshold.
//!
//! Owns when a property's scores are looked at (a few seconds after its records changed,
//! and every [`SWEEP_EVERY`] for all of them: windows slide and open messages age without
//! any new event), the gauges `concierge_response_score{property, score}` and
//! `concierge_response_score_projected{property, score}`, and the score-alert episodes:
//! when a score's projection (open messages counted as missed once older than
//! `responses.score_alert_grace`) falls under `responses.score_alert_below`, one episode
//! starts and its alert is armed once, as a follow-up timer `response_score_alert:<score>`
//! due at the episode's start on the thread most at risk; the episode ends when the
//! projection is back at or over the threshold. The rule `rules/35_response_alert.rhai`
//! turns the timer into an `alert` (so the text is a template the host edits, and the
//! executor sends it effectively once: the timer's due time is the episode's, so arming it
//! again after a crash gives the same `follow_up.due` event id).
//! Must not: send alerts itself, nor call Channex.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::watch as signal;

use super::scores::{self, Response, Score, ScoreKind};
use super::{sleep_or_shutdown, Tracker};
use crate::store::nats::StoreError;
use crate::store::responses::ScoreEpisode;
use crate::store::timers::FollowUpTimer;

/// How soon after a change a property's scores are looked at.
pub const DIRTY_EVERY: Duration = Duration::from_secs(2);
/// How often every property's scores are looked at.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// The follow-up a score alert is armed as: `response_score_alert:<score>`.
pub const ALERT_FOLLOW_UP: &str = "response_score_alert";

/// Until shutdown: changed properties every [`DIRTY_EVERY`], all of them every
/// [`SWEEP_EVERY`] (and once at start).
pub async fn run(tracker: Tracker, mut shutdown: signal::Receiver<bool>) {
    let mut since_sweep = SWEEP_EVERY;
    loop {
        let result = if since_sweep >= SWEEP_EVERY {
            since_sweep = Duration::ZERO;
            tracker.dirty.take();
            tracker.look_at(None).await
        } else {
            let mut failed = Ok(());
            for property in tracker.dirty.take() {
                if let Err(e) = tracker.look_at(Some(&property)).await {
                    tracker.dirty.mark(&property);
                    failed = Err(e);
                }
            }
            failed
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "response scores not looked at; trying again");
        }
        if sleep_or_shutdown(&mut shutdown, DIRTY_EVERY).await {
            return;
        }
        since_sweep += DIRTY_EVERY;
    }
}

impl Tracker {
    /// Computes the scores of `property` (`None`: every property with records), sets
    /// their gauges and starts, arms or ends their alert episodes.
    pub async fn look_at(&self, property: Option<&str>) -> Result<(), StoreError> {
        let records = self.store.list(property).await?;
        let mut by_property: BTreeMap<String, Vec<Response>> = BTreeMap::new();
        for r in &records {
            by_property
                .entry(r.property_id.clone())
                .or_default()
                .extend(scores::responses(r));
        }
        let now = (self.clock)();
        let grace = TimeDelta::from_std(self.cfg.score_alert_grace).unwrap_or(TimeDelta::hours(1));
        for (property_id, responses) in by_property {
            for kind in ScoreKind::ALL {
                let score = kind.compute(&responses, now, grace);
                set_gauges(&property_id, &score);
                self.watch_score(&property_id, &score, &responses, now)
                    .await?;
            }
        }
        Ok(())
    }

    /// Whether `score` is heading under the threshold: its projection is under it, and
    /// the OTA would show a score with that many messages.
    fn heading_under(&self, score: &Score) -> bool {
        score
            .projected
            .is_some_and(|p| p < self.cfg.score_alert_below)
            && score.kind.shown_with(score.projected_counted)
    }

    async fn watch_score(
        &self,
        property_id: &str,
        score: &Score,
        responses: &[Response],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let name = score.kind.as_str();
        let (episode, revision) = self.store.episode(property_id, name).await?;
        let under = self.heading_under(score);
        match episode {
            // A new episode: the writer that creates it arms its alert.
            None if under => {
                self.start_episode(property_id, score, responses, now, revision)
                    .await
            }
            Some(e) if under && !e.below => {
                self.start_episode(property_id, score, responses, now, revision)
                    .await
            }
            // Started but not armed (its writer stopped in between): arm it now, same due time.
            Some(e) if under && !e.armed && now - e.since > TimeDelta::minutes(1) => {
                self.arm(property_id, score, &e).await?;
                let armed = ScoreEpisode { armed: true, ..e };
                self.store
                    .put_episode(property_id, name, &armed, revision)
                    .await?;
                Ok(())
            }
            Some(e) if !under && e.below => {
                let over = ScoreEpisode { below: false, ..e };
                self.store
                    .put_episode(property_id, name, &over, revision)
                    .await?;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn start_episode(
        &self,
        property_id: &str,
        score: &Score,
        responses: &[Response],
        now: DateTime<Utc>,
        revision: Option<u64>,
    ) -> Result<(), StoreError> {
        let Some(thread_id) = thread_most_at_risk(score, responses, now) else {
            return Ok(());
        };
        let name = score.kind.as_str();
        let episode = ScoreEpisode {
            below: true,
            since: now,
            armed: false,
            thread_id,
        };
        if !self
            .store
            .put_episode(property_id, name, &episode, revision)
            .await?
        {
            return Ok(()); // another worker started it
        }
        self.arm(property_id, score, &episode).await?;
        let (_, revision) = self.store.episode(property_id, name).await?;
        let armed = ScoreEpisode {
            armed: true,
            ..episode
        };
        self.store
            .put_episode(property_id, name, &armed, revision)
            .await?;
        Ok(())
    }

    async fn arm(
        &self,
        property_id: &str,
        score: &Score,
        e: &ScoreEpisode,
    ) -> Result<(), StoreError> {
        let timer = FollowUpTimer {
            thread_id: e.thread_id.clone(),
            booking_id: None,
            property_id: property_id.to_string(),
            name: format!("{ALERT_FOLLOW_UP}:{}", score.kind.as_str()),
            due_at: e.since,
            data: alert_data(score, self.cfg.score_alert_below),
            armed_at: (self.clock)(),
            armed_by_event: format!("response.score:{property_id}:{}", score.kind.as_str()),
            stay: None,
        };
        tracing::info!(
            property = property_id,
            score = score.kind.as_str(),
            "score heading under its threshold: alert armed"
        );
        self.followups.arm(&timer).await
    }
}

fn pct(share: Option<f64>) -> Value {
    share.map_or(Value::Null, |s| json!((s * 100.0 + 1e-9).floor() as i64))
}

/// What the alert template gets as `follow_up.data`.
fn alert_data(score: &Score, target: f64) -> Map<String, Value> {
    let mut data = Map::new();
    data.insert("score".into(), json!(score.kind.as_str()));
    data.insert("label".into(), json!(score.kind.label()));
    data.insert("channel".into(), json!(score.kind.channel().label()));
    data.insert("value_pct".into(), pct(score.value));
    data.insert("projected_pct".into(), pct(score.projected));
    data.insert("target_pct".into(), pct(Some(target)));
    data.insert("counted".into(), json!(score.counted));
    data.insert("open".into(), json!(score.open));
    data
}

/// The thread of the score's channel whose open message ends its 24 hours first, else
/// the one with the most recent message.
fn thread_most_at_risk(
    score: &Score,
    responses: &[Response],
    now: DateTime<Utc>,
) -> Option<String> {
    let channel = score.kind.channel();
    let of_channel = || responses.iter().filter(move |r| r.channel == channel);
    scores::at_risk(
        &of_channel().cloned().collect::<Vec<_>>(),
        now,
        TimeDelta::days(30),
    )
    .first()
    .map(|r| r.thread_id.clone())
    .or_else(|| {
        of_channel()
            .max_by_key(|r| r.arrived)
            .map(|r| r.thread_id.clone())
    })
}

fn set_gauges(property_id: &str, score: &Score) {
    let labels = [
        ("property", property_id.to_string()),
        ("score", score.kind.as_str().to_string()),
    ];
    if let Some(v) = score.value {
        metrics::gauge!("concierge_response_score", &labels).set(v);
    }
    if let Some(v) = score.projected {
        metrics::gauge!("concierge_response_score_projected", &labels).set(v);
    }
}
