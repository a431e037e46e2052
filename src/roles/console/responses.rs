//! The Response page (`/responses?property=<id>`): response times and the OTAs' scores of
//! one property, with charts drawn here as SVG (no script draws anything).
//!
//! Owns the page and its charts: each score day by day against its target line,
//! response time p50/p90 per day over the report window (30 days), who answered first per
//! day (concierge, approved drafts, staff, no reply needed), and the messages at risk now
//! with their countdowns (ticked by the console's script; the page works without it).
//! Must not: compute a score itself (that is [`crate::roles::responses::report`], the same
//! report `concierge report responses` prints), call Channex, or put guest text anywhere
//! (the records hold ids and times only).

use axum::extract::{Query, State};
use axum::Extension;
use chrono::{NaiveDate, TimeDelta};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Authed;
use super::layout::{self, Nav};
use super::{Console, ConsoleError};
use crate::roles::responses::report::{self, PropertyReport, ReportOptions};
use crate::roles::responses::scores::Answerer;
use crate::store::responses::ResponseStore;

/// The page's window: the OTAs' 30 days.
const WINDOW: TimeDelta = TimeDelta::days(30);

#[derive(Deserialize)]
pub struct PageQuery {
    property: Option<String>,
}

pub async fn page(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Query(q): Query<PageQuery>,
) -> Result<Markup, ConsoleError> {
    let deps = console.deps();
    let store = ResponseStore::new(
        deps.infra.js.clone(),
        deps.infra.responses.clone(),
        &deps.infra.names.responses_bucket(),
    );
    let records = store.list(None).await?;
    let mut properties: Vec<String> = records.iter().map(|r| r.property_id.clone()).collect();
    properties.extend(deps.config.channex.property_ids.iter().cloned());
    properties.extend(deps.config.properties.keys().cloned());
    properties.sort();
    properties.dedup();
    let selected = q.property.filter(|p| properties.contains(p)).or_else(|| {
        // The first property with records, else the first configured.
        let with_records = records.iter().map(|r| &r.property_id).min().cloned();
        with_records.or_else(|| properties.first().cloned())
    });
    let options = ReportOptions {
        property: selected.clone(),
        since: WINDOW,
        now: console.now(),
        grace: TimeDelta::from_std(deps.config.responses.score_alert_grace)
            .unwrap_or(TimeDelta::hours(1)),
        target: deps.config.responses.score_alert_below,
    };
    let name = |id: &str| console.property_name(id);
    let built = report::build(&records, &options, &name);
    let body = html! {
        h1 { "Response times and scores" }
        p.lead { "How fast guests get an answer, and the Airbnb response rate and Booking.com Reply Score as the OTAs define them, computed from what concierge reads. "
            strong { "The OTAs' own figures are authoritative." } " Times are UTC." }
        form.filters method="get" action="/responses" {
            label for="property" { "Property" }
            select #property name="property" {
                @for p in &properties {
                    option value=(p) selected[selected.as_deref() == Some(p.as_str())] { (console.property_name(p)) }
                }
            }
            button type="submit" { "Show" }
        }
        @match built.properties.first() {
            Some(p) => (property_section(p, built.target, built.generated_at)),
            None => p.muted { "No response records yet: they build up as guests write." },
        }
    };
    Ok(layout::page(
        "Response",
        Nav::Responses,
        Some(&authed.csrf),
        body,
    ))
}

fn property_section(p: &PropertyReport, target: f64, now: chrono::DateTime<chrono::Utc>) -> Markup {
    let dates: Vec<NaiveDate> = p.days.iter().map(|d| d.date).collect();
    html! {
        div.stats #scores {
            @for s in &p.scores {
                div.stat id=(s.score.kind.as_str()) {
                    div.value { @match (s.score.value, s.score.shown) {
                        (Some(v), true) => (report::percent(v)),
                        _ => "—",
                    } }
                    div.label { (s.label) }
                    div.muted.small { (report::score_line(&s.score, target)) }
                }
            }
            div.stat #answered-share {
                div.value { (p.automatic_share.map(report::percent).unwrap_or_else(|| "—".into())) }
                div.label { "answered by concierge alone" }
            }
        }
        @for s in &p.scores {
            section.card.chart {
                h2 { (s.label) " per day, against the " (report::percent(target)) " line" }
                (charts::line_chart(&charts::LineChart {
                    id: &format!("chart-{}", s.score.kind.as_str()),
                    dates: &dates,
                    series: &[charts::Series {
                        name: s.label,
                        class: "score",
                        color: "#2e90fa",
                        points: s.daily.iter().map(|d| d.value.map(|v| v * 100.0)).collect(),
                    }],
                    y_max: 100.0,
                    unit: charts::Unit::Percent,
                    target: Some((target * 100.0).round()),
                }))
            }
        }
        section.card.chart {
            h2 { "Response time per day (p50, p90)" }
            (times_chart(p, &dates))
        }
        section.card.chart {
            h2 { "Answered first by, per day" }
            (answered_chart(p, &dates))
        }
        h2 { "At risk now" }
        (at_risk_table(p, now))
    }
}

fn times_chart(p: &PropertyReport, dates: &[NaiveDate]) -> Markup {
    let hours = |s: Option<i64>| s.map(|s| s as f64 / 3600.0);
    let p50: Vec<Option<f64>> = p.days.iter().map(|d| hours(d.p50_seconds)).collect();
    let p90: Vec<Option<f64>> = p.days.iter().map(|d| hours(d.p90_seconds)).collect();
    let highest = p90.iter().flatten().fold(0.0_f64, |a, b| a.max(*b));
    html! {
        (charts::line_chart(&charts::LineChart {
            id: "chart-times",
            dates,
            series: &[
                charts::Series { name: "p50", class: "p50", color: "#12b76a", points: p50 },
                charts::Series { name: "p90", class: "p90", color: "#f79009", points: p90 },
            ],
            y_max: charts::nice_max(highest.max(1.0)),
            unit: charts::Unit::Hours,
            target: Some(24.0).filter(|_| highest > 12.0),
        }))
        p.legend #times-legend {
            "Over the 30 days: "
            @match (p.p50_seconds, p.p90_seconds) {
                (Some(a), Some(b)) => { "p50 " strong.p50 { (report::duration(a)) } ", p90 " strong.p90 { (report::duration(b)) } }
                _ => "no answers yet",
            }
        }
    }
}

fn answered_chart(p: &PropertyReport, dates: &[NaiveDate]) -> Markup {
    let colors = [
        (Answerer::Concierge, "#2e90fa"),
        (Answerer::DraftApproved, "#7a5af8"),
        (Answerer::Staff, "#f79009"),
        (Answerer::NoReplyNeeded, "#98a2b3"),
    ];
    let stacks: Vec<charts::Stack> = colors
        .iter()
        .map(|(by, color)| charts::Stack {
            name: by.label(),
            class: by.as_str(),
            color,
            values: p.days.iter().map(|d| d.answered_by.get(*by)).collect(),
        })
        .collect();
    html! {
        (charts::stacked_bars("chart-answered", dates, &stacks))
        p.legend #answered-legend {
            @for (by, color) in colors {
                span.key { svg width="10" height="10" { rect width="10" height="10" fill=(color) {} } " " (by.label()) " " strong data-by=(by.as_str()) { (p.answered_by.get(by)) } }
                " "
            }
            span.key { "unanswered " strong data-by="unanswered" { (p.answered_by.unanswered) } }
        }
    }
}

fn at_risk_table(p: &PropertyReport, now: chrono::DateTime<chrono::Utc>) -> Markup {
    html! {
        div.table-wrap { table #at-risk {
            thead { tr { th { "Thread" } th { "Channel" } th { "Arrived" } th { "24 h end" } th { "Left" } } }
            tbody {
                @if p.at_risk.is_empty() {
                    tr { td.empty colspan="5" { "No guest message is waiting." } }
                }
                @for r in &p.at_risk {
                    tr class=[r.overdue.then_some("overdue")] {
                        td { (layout::thread_link(&r.thread_id)) }
                        td { (r.channel.label()) }
                        td { (layout::time(r.arrived_at)) }
                        td { (layout::time(r.deadline)) }
                        td { span.countdown data-deadline=(r.deadline.to_rfc3339()) {
                            @if r.overdue { "overdue by " (layout::human_duration(now - r.deadline)) }
                            @else { (layout::human_duration(r.deadline - now)) " left" }
                        } }
                    }
                }
            }
        } }
    }
}

/// Server-drawn SVG charts: plain shapes with presentation attributes (the console's
/// Content-Security-Policy allows no inline style), a `<title>` on every point and bar so
/// a value can be read by hovering (and by tests).
pub mod charts {
    use chrono::NaiveDate;
    use maud::{html, Markup};

    const WIDTH: f64 = 720.0;
    const HEIGHT: f64 = 200.0;
    const LEFT: f64 = 44.0;
    const RIGHT: f64 = 12.0;
    const TOP: f64 = 10.0;
    const BOTTOM: f64 = 24.0;

    #[derive(Debug, Clone, Copy)]
    pub enum Unit {
        Percent,
        Hours,
    }

    impl Unit {
        fn format(self, v: f64) -> String {
            match self {
                Unit::Percent => format!("{}%", (v + 1e-9).floor()),
                Unit::Hours if v < 1.0 => format!("{}m", (v * 60.0).round()),
                Unit::Hours => format!("{:.1}h", v),
            }
        }
    }

    pub struct Series<'a> {
        pub name: &'a str,
        pub class: &'a str,
        pub color: &'a str,
        pub points: Vec<Option<f64>>,
    }

    pub struct LineChart<'a> {
        pub id: &'a str,
        pub dates: &'a [NaiveDate],
        pub series: &'a [Series<'a>],
        pub y_max: f64,
        pub unit: Unit,
        /// A dashed line at this value (a score's target, the 24 h line).
        pub target: Option<f64>,
    }

    /// 1, 2, 5 × 10^n at or above `v`.
    pub fn nice_max(v: f64) -> f64 {
        let magnitude = 10f64.powf(v.log10().floor());
        [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude)
            .find(|m| *m >= v)
            .unwrap_or(v)
    }

    fn x(i: usize, n: usize) -> f64 {
        let inner = WIDTH - LEFT - RIGHT;
        if n <= 1 {
            LEFT + inner / 2.0
        } else {
            LEFT + inner * i as f64 / (n - 1) as f64
        }
    }

    fn y(v: f64, max: f64) -> f64 {
        let inner = HEIGHT - TOP - BOTTOM;
        TOP + inner * (1.0 - (v / max).clamp(0.0, 1.0))
    }

    fn frame(dates: &[NaiveDate], max: f64, unit: Unit) -> Markup {
        html! {
            @for step in [0.0, 0.5, 1.0] {
                line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(max * step, max)) y2=(y(max * step, max)) stroke="#eaecf0" {}
                text.axis x=(LEFT - 6.0) y=(y(max * step, max) + 4.0) text-anchor="end" font-size="11" fill="#667085" { (unit.format(max * step)) }
            }
            @for (i, d) in dates.iter().enumerate() {
                @if i % 7 == 0 || i + 1 == dates.len() {
                    text.axis x=(x(i, dates.len())) y=(HEIGHT - 6.0) text-anchor="middle" font-size="11" fill="#667085" { (d.format("%d %b")) }
                }
            }
        }
    }

    /// Lines broken where a day has no value, a dot with its value on every day that has one.
    pub fn line_chart(c: &LineChart<'_>) -> Markup {
        let n = c.dates.len();
        html! {
            svg id=(c.id) class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width="100%" role="img" {
                title { @for s in c.series { (s.name) " " } "per day" }
                (frame(c.dates, c.y_max, c.unit))
                @if let Some(t) = c.target {
                    line.target x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(t, c.y_max)) y2=(y(t, c.y_max)) stroke="#f04438" stroke-dasharray="6 4" data-value=(t) {}
                    text x=(WIDTH - RIGHT) y=(y(t, c.y_max) - 4.0) text-anchor="end" font-size="11" fill="#f04438" { "target " (c.unit.format(t)) }
                }
                @for s in c.series {
                    @for run in runs(&s.points) {
                        polyline class=(s.class) fill="none" stroke=(s.color) stroke-width="2"
                            points=(run.iter().map(|(i, v)| format!("{:.1},{:.1}", x(*i, n), y(*v, c.y_max))).collect::<Vec<_>>().join(" ")) {}
                    }
                    @for (i, v) in s.points.iter().enumerate() {
                        @if let Some(v) = v {
                            circle class=(s.class) cx=(format!("{:.1}", x(i, n))) cy=(format!("{:.1}", y(*v, c.y_max))) r="3" fill=(s.color) data-date=(c.dates[i].to_string()) data-value=(format!("{v:.4}")) {
                                title { (c.dates[i].format("%Y-%m-%d")) " " (s.name) " " (c.unit.format(*v)) }
                            }
                        }
                    }
                }
            }
        }
    }

    /// The runs of consecutive days with a value.
    fn runs(points: &[Option<f64>]) -> Vec<Vec<(usize, f64)>> {
        let mut out: Vec<Vec<(usize, f64)>> = Vec::new();
        let mut current = Vec::new();
        for (i, p) in points.iter().enumerate() {
            match p {
                Some(v) => current.push((i, *v)),
                None if !current.is_empty() => out.push(std::mem::take(&mut current)),
                None => {}
            }
        }
        if !current.is_empty() {
            out.push(current);
        }
        out
    }

    pub struct Stack<'a> {
        pub name: &'a str,
        pub class: &'a str,
        pub color: &'a str,
        pub values: Vec<usize>,
    }

    /// One part of a bar.
    struct Part<'a> {
        x: f64,
        top: f64,
        height: f64,
        stack: &'a Stack<'a>,
        date: NaiveDate,
        value: usize,
    }

    fn parts<'a>(
        dates: &[NaiveDate],
        stacks: &'a [Stack<'a>],
        max: f64,
        slot: f64,
        bar: f64,
    ) -> Vec<Part<'a>> {
        let mut out = Vec::new();
        for (i, date) in dates.iter().enumerate() {
            let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
            let mut base = 0usize;
            for stack in stacks {
                let value = stack.values.get(i).copied().unwrap_or(0);
                if value > 0 {
                    let top = y((base + value) as f64, max);
                    out.push(Part {
                        x,
                        top,
                        height: y(base as f64, max) - top,
                        stack,
                        date: *date,
                        value,
                    });
                }
                base += value;
            }
        }
        out
    }

    /// One bar per day, its parts stacked in the order given.
    pub fn stacked_bars(id: &str, dates: &[NaiveDate], stacks: &[Stack<'_>]) -> Markup {
        let n = dates.len();
        let highest = (0..n)
            .map(|i| {
                stacks
                    .iter()
                    .map(|s| s.values.get(i).copied().unwrap_or(0))
                    .sum::<usize>()
            })
            .max()
            .unwrap_or(0);
        let max = nice_max(highest.max(1) as f64);
        let slot = (WIDTH - LEFT - RIGHT) / n.max(1) as f64;
        let bar = (slot * 0.7).max(1.0);
        html! {
            svg id=(id) class="chart" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } width="100%" role="img" {
                title { "answered first by, per day" }
                @for step in [0.0, 0.5, 1.0] {
                    line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(max * step, max)) y2=(y(max * step, max)) stroke="#eaecf0" {}
                    text.axis x=(LEFT - 6.0) y=(y(max * step, max) + 4.0) text-anchor="end" font-size="11" fill="#667085" { ((max * step).round()) }
                }
                @for p in parts(dates, stacks, max, slot, bar) {
                    rect class=(p.stack.class) x=(format!("{:.1}", p.x)) y=(format!("{:.1}", p.top)) width=(format!("{bar:.1}"))
                        height=(format!("{:.1}", p.height)) fill=(p.stack.color) data-date=(p.date.to_string()) data-value=(p.value) {
                        title { (p.date.format("%Y-%m-%d")) " " (p.stack.name) " " (p.value) }
                    }
                }
                @for (i, d) in dates.iter().enumerate() {
                    @if i % 7 == 0 || i + 1 == n {
                        text.axis x=(format!("{:.1}", LEFT + slot * (i as f64 + 0.5))) y=(HEIGHT - 6.0) text-anchor="middle" font-size="11" fill="#667085" { (d.format("%d %b")) }
                    }
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn lines_break_at_days_without_values_and_maxima_are_round() {
            let r = runs(&[Some(1.0), Some(2.0), None, Some(3.0), None]);
            assert_eq!(r.len(), 2);
            assert_eq!(r[1], vec![(3, 3.0)]);
            assert_eq!(nice_max(3.2), 5.0);
            assert_eq!(nice_max(17.0), 20.0);
            assert_eq!(nice_max(1.0), 1.0);
        }

        #[test]
        fn a_chart_is_plain_svg_with_a_titled_point_per_value() {
            let dates: Vec<NaiveDate> = (1..=3)
                .map(|d| NaiveDate::from_ymd_opt(2026, 12, d).expect("date"))
                .collect();
            let svg = line_chart(&LineChart {
                id: "c",
                dates: &dates,
                series: &[Series {
                    name: "p50",
                    class: "p50",
                    color: "#000",
                    points: vec![Some(0.5), None, Some(2.0)],
                }],
                y_max: 5.0,
                unit: Unit::Hours,
                target: Some(4.0),
            })
            .into_string();
            assert_eq!(svg.matches("<circle").count(), 2);
            assert!(svg.contains("2026-12-01 p50 30m"));
            assert!(svg.contains("2026-12-03 p50 2.0h"));
            assert!(!svg.contains("style="), "no inline style (CSP)");
        }
    }
}
