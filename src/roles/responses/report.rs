//! The response report of one or every property, pure: what `concierge report responses`
//! prints (as text or JSON) and what the console's Response page draws.
//!
//! Owns the report's shape ([`Report`], [`PropertyReport`]: the scores with their
//! projections and daily history, response-time percentiles per day, answered-by counts,
//! the messages at risk) and its text form. Must not: read NATS or a clock (the caller
//! hands in the records and `now`).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::Serialize;

use super::scores::{self, AnsweredBy, Day, Response, Score, ScoreKind};
use crate::store::responses::{Channel, ThreadRecord};

/// How long an overdue message stays in the "at risk" list.
pub const OVERDUE_SHOWN: TimeDelta = TimeDelta::days(7);

#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Only this property (else every property with records).
    pub property: Option<String>,
    /// Daily figures and totals from `now - since`.
    pub since: TimeDelta,
    pub now: DateTime<Utc>,
    /// See `responses.score_alert_grace`.
    pub grace: TimeDelta,
    /// The target line of the scores (`responses.score_alert_below`).
    pub target: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub generated_at: DateTime<Utc>,
    pub since: DateTime<Utc>,
    pub target: f64,
    pub properties: Vec<PropertyReport>,
}

/// A score with its value at the end of each day of the report.
#[derive(Debug, Clone, Serialize)]
pub struct ScoreReport {
    #[serde(flatten)]
    pub score: Score,
    pub channel: Channel,
    pub label: &'static str,
    pub daily: Vec<DailyValue>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DailyValue {
    pub date: NaiveDate,
    pub value: Option<f64>,
}

/// A message at risk: unanswered, its 24 hours about to end or just over.
#[derive(Debug, Clone, Serialize)]
pub struct AtRisk {
    pub thread_id: String,
    pub message_id: String,
    pub channel: Channel,
    pub arrived_at: DateTime<Utc>,
    pub deadline: DateTime<Utc>,
    pub overdue: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PropertyReport {
    pub property_id: String,
    pub name: String,
    pub scores: Vec<ScoreReport>,
    pub answered_by: AnsweredBy,
    pub automatic_share: Option<f64>,
    pub p50_seconds: Option<i64>,
    pub p90_seconds: Option<i64>,
    pub days: Vec<Day>,
    pub at_risk: Vec<AtRisk>,
}

/// The report over `records` (any properties; grouped here).
pub fn build(
    records: &[ThreadRecord],
    opts: &ReportOptions,
    name: &dyn Fn(&str) -> String,
) -> Report {
    let mut by_property: BTreeMap<&str, Vec<Response>> = BTreeMap::new();
    if let Some(p) = &opts.property {
        by_property.entry(p.as_str()).or_default();
    }
    for r in records {
        if opts.property.as_ref().is_none_or(|p| *p == r.property_id) {
            by_property
                .entry(r.property_id.as_str())
                .or_default()
                .extend(scores::responses(r));
        }
    }
    let since = opts.now - opts.since;
    Report {
        generated_at: opts.now,
        since,
        target: opts.target,
        properties: by_property
            .into_iter()
            .map(|(id, responses)| property_report(id, &name(id), &responses, opts))
            .collect(),
    }
}

/// The end of `date` (or `now`, today).
fn day_end(date: NaiveDate, now: DateTime<Utc>) -> DateTime<Utc> {
    let end = date
        .succ_opt()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc() - TimeDelta::milliseconds(1));
    end.map_or(now, |e| e.min(now))
}

fn property_report(
    id: &str,
    name: &str,
    responses: &[Response],
    opts: &ReportOptions,
) -> PropertyReport {
    let since = opts.now - opts.since;
    let days = scores::daily(responses, since, opts.now);
    let score_reports = ScoreKind::ALL
        .into_iter()
        .map(|kind| ScoreReport {
            score: kind.compute(responses, opts.now, opts.grace),
            channel: kind.channel(),
            label: kind.label(),
            daily: days
                .iter()
                .map(|d| DailyValue {
                    date: d.date,
                    value: kind
                        .compute(responses, day_end(d.date, opts.now), opts.grace)
                        .value,
                })
                .collect(),
        })
        .collect();
    let (answered_by, p50, p90) = scores::summary(responses, since, opts.now);
    let at_risk = scores::at_risk(responses, opts.now, OVERDUE_SHOWN)
        .into_iter()
        .map(|r| AtRisk {
            overdue: r.deadline() <= opts.now,
            deadline: r.deadline(),
            thread_id: r.thread_id,
            message_id: r.message_id,
            channel: r.channel,
            arrived_at: r.arrived,
        })
        .collect();
    PropertyReport {
        property_id: id.to_string(),
        name: name.to_string(),
        scores: score_reports,
        automatic_share: answered_by.automatic_share(),
        answered_by,
        p50_seconds: p50,
        p90_seconds: p90,
        days,
        at_risk,
    }
}

/// `95%` (whole percent, rounded down so 89.9% never reads as 90%).
pub fn percent(share: f64) -> String {
    format!("{}%", (share * 100.0 + 1e-9).floor())
}

/// `3h 05m`, `12m`, `40s`.
pub fn duration(seconds: i64) -> String {
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m"),
        (h, m) => format!("{h}h {m:02}m"),
    }
}

/// One line about a score, as the text report and the console say it.
pub fn score_line(s: &Score, target: f64) -> String {
    let basis = match s.basis {
        scores::Basis::Last30Days => "past 30 days",
        scores::Basis::Recent10Of90Days => "the 10 most recent of the past 90 days",
        scores::Basis::Recent10 => "the 10 most recent",
    };
    let value = match (s.value, s.shown) {
        (Some(v), true) => format!(
            "{} ({} of {} within 24 h, {basis})",
            percent(v),
            s.within,
            s.counted
        ),
        (_, false) if s.kind == ScoreKind::BookingReplyScore => format!(
            "not shown yet ({} of {} messages{})",
            s.counted,
            scores::MIN_COUNTED,
            s.value
                .map(|v| format!(", {} so far", percent(v)))
                .unwrap_or_default()
        ),
        _ => "no threads yet".to_string(),
    };
    let projection = match s.projected {
        Some(p) if s.open > 0 && Some(p) != s.value => {
            format!("; {} open, {} if they miss 24 h", s.open, percent(p))
        }
        _ if s.open > 0 => format!("; {} open", s.open),
        _ => String::new(),
    };
    format!("{value}{projection}; target {}", percent(target))
}

/// The text form of `report`.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    if report.properties.is_empty() {
        out.push_str("no response records yet\n");
    }
    for p in &report.properties {
        out.push_str(&format!(
            "{} ({}), {} .. {} UTC\n",
            p.name,
            p.property_id,
            report.since.format("%Y-%m-%d %H:%M"),
            report.generated_at.format("%Y-%m-%d %H:%M")
        ));
        for s in &p.scores {
            out.push_str(&format!(
                "  {:<24} {}\n",
                s.label,
                score_line(&s.score, report.target)
            ));
        }
        let times = match (p.p50_seconds, p.p90_seconds) {
            (Some(p50), Some(p90)) => format!(
                "p50 {}, p90 {} ({} answered)",
                duration(p50),
                duration(p90),
                p.answered_by.answered()
            ),
            _ => "no answers yet".to_string(),
        };
        out.push_str(&format!("  {:<24} {times}\n", "response time"));
        let by = &p.answered_by;
        out.push_str(&format!(
            "  {:<24} concierge {} · approved drafts {} · staff {} · no reply needed {} · unanswered {}{}\n",
            "answered by",
            by.concierge,
            by.draft_approved,
            by.staff,
            by.no_reply_needed,
            by.unanswered,
            p.automatic_share
                .map(|s| format!(" ({} by concierge alone)", percent(s)))
                .unwrap_or_default()
        ));
        if p.at_risk.is_empty() {
            out.push_str(&format!("  {:<24} none\n", "at risk now"));
        }
        for r in &p.at_risk {
            let left = r.deadline - report.generated_at;
            let when = if r.overdue {
                format!("overdue by {}", duration(-left.num_seconds()))
            } else {
                format!("{} left", duration(left.num_seconds()))
            };
            out.push_str(&format!(
                "  {:<24} thread {} ({}), arrived {}, {when}\n",
                "at risk now",
                r.thread_id,
                r.channel.label(),
                r.arrived_at.format("%Y-%m-%d %H:%M")
            ));
        }
    }
    out
}
