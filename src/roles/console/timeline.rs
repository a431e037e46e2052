//! The timeline: the audit log, newest first, read backwards from the end of the stream
//! ([`audit::latest`], [`PAGE`] records a page, an `older` cursor by stream sequence),
//! filtered by property, thread, rule, outcome and time (a GET form: ids and names only,
//! never guest text), and live: `/timeline/stream` sends each new matching record as a
//! server-rendered row over SSE ([`audit::follow_new`]: an ephemeral consumer that starts
//! after the newest record the page showed, `after=<seq>` in the page's `data-live` URL, or
//! after a reconnect's `Last-Event-ID`; each event's `id` is its stream sequence and the
//! page's script drops rows it already has). A stream is admitted by the [`StreamGate`]
//! (bounded per session, per address and in total: `429`/`503` with `Retry-After` past
//! them) and ends when its session is ended (checked every [`super::streams::StreamLimits::recheck`]).
//!
//! Must not: read more than [`MAX_SCAN`] stored records for a page (a thread filter, served
//! by the stream's subject filter, is the exception: it only delivers that thread's).

use std::convert::Infallible;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::{self, Authed, PeerAddr, Principal};
use super::layout::{self, Field, Nav};
use super::streams::StreamGate;
use super::{Console, ConsoleError};
use crate::store::audit::{self, AuditFilter, AuditRecord, Outcome};
use crate::store::nats::{audit_stream, stream_bounds};
use crate::store::sessions::SessionRevocations;

/// Records per page.
pub const PAGE: usize = 100;
/// Stored records a page may read at most (with narrow filters a page can come out short;
/// its `older` link continues from where the read stopped).
pub const MAX_SCAN: u64 = 20_000;

const OUTCOMES: [Outcome; 6] = [
    Outcome::Executed,
    Outcome::DryRun,
    Outcome::Skipped,
    Outcome::Failed,
    Outcome::RuleError,
    Outcome::RuleRejected,
];

/// The filter form (all optional; empty fields mean "any").
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TimelineQuery {
    pub property: Option<String>,
    pub thread: Option<String>,
    pub rule: Option<String>,
    pub outcome: Option<String>,
    /// `2h` (back from now) or an RFC 3339 time.
    pub since: Option<String>,
    /// The `older` cursor: records stored before this stream sequence.
    pub before: Option<u64>,
    /// The live stream's start: records stored after this stream sequence (the newest one
    /// the page showed); a reconnect's `Last-Event-ID` wins when it is newer.
    pub after: Option<u64>,
}

fn non_empty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// An id filter: empty, or a Channex id (the parser's rule), else `400`.
fn channex_id(what: &str, v: &Option<String>) -> Result<Option<String>, ConsoleError> {
    match non_empty(v) {
        Some(id) if !crate::channex::wire::is_valid_id(&id) => Err(ConsoleError::BadInput(
            format!("{what}: not a Channex id ([A-Za-z0-9_-])"),
        )),
        id => Ok(id),
    }
}

/// `2h` back from `now`, or an RFC 3339 time.
pub fn point_in_time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ConsoleError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        ConsoleError::BadInput(format!(
            "since: {s:?} is neither a duration like 2h nor an RFC 3339 time"
        ))
    };
    let d = crate::config::parse_duration(s).map_err(|_| bad())?;
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(bad)
}

impl TimelineQuery {
    pub fn filter(&self, now: DateTime<Utc>) -> Result<AuditFilter, ConsoleError> {
        let outcome =
            match non_empty(&self.outcome) {
                Some(o) => Some(Outcome::parse(&o).ok_or_else(|| {
                    ConsoleError::BadInput(format!("outcome: unknown value {o:?}"))
                })?),
                None => None,
            };
        Ok(AuditFilter {
            property_id: channex_id("property", &self.property)?,
            thread_id: channex_id("thread", &self.thread)?,
            rule: non_empty(&self.rule),
            outcome,
            since: non_empty(&self.since)
                .map(|s| point_in_time(&s, now))
                .transpose()?,
            ..Default::default()
        })
    }

    /// The filters as a query string (`before` left out), for the live stream and paging.
    fn query_string(&self) -> String {
        [
            ("property", &self.property),
            ("thread", &self.thread),
            ("rule", &self.rule),
            ("outcome", &self.outcome),
            ("since", &self.since),
        ]
        .iter()
        .filter_map(|(k, v)| non_empty(v).map(|v| format!("{k}={}", layout::path_segment(&v))))
        .collect::<Vec<_>>()
        .join("&")
    }
}

pub async fn page(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Query(q): Query<TimelineQuery>,
) -> Result<Markup, ConsoleError> {
    let filter = q.filter(console.now())?;
    let js = &console.deps().infra.js;
    // A thread filter is a subject filter: the server skips the other records, so the
    // read may go back through the whole stream (it still returns one page).
    let bound = if filter.thread_id.is_some() {
        u64::MAX
    } else {
        MAX_SCAN
    };
    // The stream's end before the read: the live stream continues from here, so nothing
    // stored between this page and the stream's connection is lost (the JS drops repeats).
    let (_, last) = stream_bounds(js, &audit_stream(console.prefix())).await?;
    let page = audit::latest(js, console.prefix(), &filter, q.before, PAGE, bound).await?;
    let newest = page
        .records
        .iter()
        .map(|(seq, _)| *seq)
        .fold(last, u64::max);
    let rules: Vec<String> = console
        .deps()
        .live
        .current()
        .rules
        .rules()
        .iter()
        .map(|r| r.name.clone())
        .collect();
    let properties: Vec<String> = console.deps().config.properties.keys().cloned().collect();
    let qs = q.query_string();
    // An older page is history: new records belong on the first page, not on top of this one.
    let live = q.before.is_none().then(|| {
        let sep = if qs.is_empty() { "" } else { "&" };
        format!("/timeline/stream?{qs}{sep}after={newest}")
    });
    let body = html! {
        h1 { "Timeline" }
        p.lead { span.live-dot {} "Every decision concierge made, newest first; new ones appear live." }
        (filter_form(&q, &properties, &rules))
        (records_table(&console, &page.records, live.as_deref()))
        @if let Some(older) = page.older {
            div.pager { a.button href={ "/timeline?" (qs) @if !qs.is_empty() { "&" } "before=" (older) } { "Older →" } }
        }
    };
    Ok(layout::page(
        "Timeline",
        Nav::Timeline,
        Some(&authed.csrf),
        body,
    ))
}

fn filter_form(q: &TimelineQuery, properties: &[String], rules: &[String]) -> Markup {
    let selected = |v: &Option<String>, want: &str| non_empty(v).as_deref() == Some(want);
    html! {
        form.filters method="get" action="/timeline" {
            label { "Property" select name="property" {
                option value="" { "any" }
                @for p in properties { option value=(p) selected[selected(&q.property, p)] { (p) } }
            } }
            label { "Thread" input type="text" name="thread" value=[non_empty(&q.thread)] placeholder="thread id"; }
            label { "Rule" select name="rule" {
                option value="" { "any" }
                @for r in rules { option value=(r) selected[selected(&q.rule, r)] { (r) } }
            } }
            label { "Outcome" select name="outcome" {
                option value="" { "any" }
                @for o in OUTCOMES { option value=(o.as_str()) selected[selected(&q.outcome, o.as_str())] { (o.as_str()) } }
            } }
            label { "Since" input type="text" name="since" value=[non_empty(&q.since)] placeholder="2h or 2026-12-01T10:00:00Z"; }
            button type="submit" { "Filter" }
            a href="/timeline" { "Clear" }
        }
    }
}

/// The records table; `live` is the SSE URL new rows come from (none on an older page).
pub fn records_table(
    console: &Console,
    records: &[(u64, AuditRecord)],
    live: Option<&str>,
) -> Markup {
    html! {
        div.table-wrap { table #timeline data-live=[live] {
            thead { tr {
                th { "Time" } th { "Property" } th { "Thread" } th { "Rule" } th { "Action" }
                th { "Outcome" } th.optional { "Reason" } th { "Reply / detail" }
            } }
            tbody {
                @if records.is_empty() {
                    tr { td.empty colspan="8" { "Nothing recorded yet for these filters." } }
                }
                @for (seq, r) in records { (record_row(console, *seq, r)) }
            }
        } }
    }
}

/// One audit record as a table row (the page and the live stream render the same). Every
/// text of the record is outside text (a reply renders the guest's words, an error quotes
/// Channex): each goes through [`layout::shown`].
pub fn record_row(console: &Console, seq: u64, r: &AuditRecord) -> Markup {
    let property = r.property_id.as_deref().map(|p| console.property_name(p));
    let detail_is_error = !matches!(r.outcome, Outcome::Executed | Outcome::DryRun);
    let detail = |s: &str| layout::shown(s, Field::Detail).into_owned();
    let reason = r.reason.as_ref().map(|x| detail(&x.as_text()));
    html! {
        tr.record id={ "r" (seq) } data-outcome=(r.outcome.as_str()) {
            td { (layout::time(r.at)) }
            td { (property.unwrap_or_default()) }
            td { @if let Some(t) = &r.thread_id { (layout::thread_link(t)) } @else { span.muted { "—" } } }
            td { (detail(r.rule.as_deref().unwrap_or("—"))) }
            td { (r.action.as_ref().map_or("—", |a| a.as_str()))
                 @if let Some(t) = &r.template { " " span.muted { "(" (detail(t)) ")" } } }
            td { (layout::outcome_pill(r.outcome)) }
            td.optional { (reason.unwrap_or_default()) }
            td {
                @if let Some(text) = &r.text { div.reply-text { (layout::shown(text, Field::Text)) } }
                @if let (true, Some(e)) = (detail_is_error, &r.error) { div.muted { (detail(e)) } }
            }
        }
    }
}

/// Records stored after `after` (query) or the `Last-Event-ID` of a reconnect (the newer
/// wins), else from now on; each event carries its stream sequence as `id`. Refused past
/// the [`StreamGate`]'s bounds; ends when the session is ended.
pub async fn stream(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Extension(gate): Extension<StreamGate>,
    peer: Option<Extension<PeerAddr>>,
    headers: HeaderMap,
    Query(q): Query<TimelineQuery>,
) -> Result<Response, ConsoleError> {
    let address = auth::peer_ip(peer.map(|Extension(p)| p));
    let permit = match gate.admit(authed.principal.key(), address) {
        Ok(permit) => permit,
        Err(why) => {
            tracing::info!(?why, "console: live stream refused");
            return Ok(gate.refusal(why));
        }
    };
    let mut filter = q.filter(console.now())?;
    filter.since = None;
    let last_event = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let after = q.after.max(last_event);
    let js = &console.deps().infra.js;
    let records = audit::follow_new(js, console.prefix(), filter, after).await?;
    let ended = Box::pin(session_ends(
        console.revocations().clone(),
        authed.principal,
        gate.limits().recheck,
    ));
    let events = records.take_until(ended).map(move |(seq, r)| {
        // The permit lives inside the body: the place is given back when the client goes.
        let _held = &permit;
        let row = record_row(&console, seq, &r).into_string();
        Ok::<_, Infallible>(
            SseEvent::default()
                .event("record")
                .id(seq.to_string())
                .data(row),
        )
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Resolves when the session of `principal` is ended (never for a bearer client), asked
/// every `every`; a NATS failure keeps the stream (the next page request fails closed).
async fn session_ends(
    revocations: SessionRevocations,
    principal: Principal,
    every: std::time::Duration,
) {
    if principal == Principal::Bearer {
        return std::future::pending().await;
    }
    loop {
        tokio::time::sleep(every).await;
        if let Ok(true) = auth::session_ended(&revocations, &principal).await {
            tracing::info!("console: live stream of an ended session closed");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_from_the_form() {
        let now: DateTime<Utc> = "2026-12-01T12:00:00Z".parse().expect("time");
        let q = TimelineQuery {
            property: Some("p1".into()),
            thread: Some(" ".into()),
            outcome: Some("failed".into()),
            since: Some("2h".into()),
            ..Default::default()
        };
        let f = q.filter(now).expect("valid");
        assert_eq!(f.property_id.as_deref(), Some("p1"));
        assert_eq!(f.thread_id, None);
        assert_eq!(f.outcome, Some(Outcome::Failed));
        assert_eq!(f.since, Some("2026-12-01T10:00:00Z".parse().expect("time")));
        assert_eq!(q.query_string(), "property=p1&outcome=failed&since=2h");
        let bad = TimelineQuery {
            outcome: Some("great".into()),
            ..Default::default()
        };
        assert!(matches!(bad.filter(now), Err(ConsoleError::BadInput(_))));
        let bad = TimelineQuery {
            since: Some("yesterday".into()),
            ..Default::default()
        };
        assert!(bad.filter(now).is_err());
        for id in ["..", "a.b", "t 1", "*", ">"] {
            let bad = TimelineQuery {
                thread: Some(id.into()),
                ..Default::default()
            };
            assert!(
                matches!(bad.filter(now), Err(ConsoleError::BadInput(_))),
                "{id}"
            );
        }
    }
}
