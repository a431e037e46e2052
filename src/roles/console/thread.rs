//! One thread: its messages (read from Channex) interleaved by time with concierge's
//! decisions about it (the audit records grouped as `concierge audit explain` groups them:
//! [`audit::group_by_event`]), with the rendered text of every reply, and its pending
//! follow-ups, each with a Cancel button (a CSRF-checked POST, audited as a
//! `cancel_follow_up` by rule `console`, then 303 back to the thread).
//!
//! Ids in the path (the thread, a booking in the Cancel form) must be Channex ids (the
//! parser's rule, [`is_valid_id`]): anything else is `400` before NATS or Channex is
//! asked, so no path segment such as `..` can reach a Channex URL. Follow-up names are the
//! rules' own words (bounded, no control characters). Every text shown goes through
//! [`layout::shown`].
//!
//! Must not: change anything but the one follow-up it is asked to cancel; a Channex
//! failure only empties the message column (the decisions still show).

use axum::extract::{Path, State};
use axum::response::Redirect;
use axum::{Extension, Form};
use chrono::{DateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Authed;
use super::layout::{self, Field, Nav};
use super::{check_csrf, Console, ConsoleError};
use crate::channex::wire::is_valid_id;
use crate::channex::Message;
use crate::events::Sender;
use crate::store::audit::{
    self, ActionKind, AuditFilter, AuditLog, AuditRecord, EventDecisions, Outcome, Reason,
};
use crate::store::timers::{FollowUpTimer, FollowUps, TimerScope};

/// Longest follow-up name accepted in a path.
const MAX_NAME: usize = 200;

/// A thread or booking id: a Channex id, or `400`.
fn checked_id(what: &str, value: &str) -> Result<(), ConsoleError> {
    if !is_valid_id(value) {
        return Err(ConsoleError::BadInput(format!(
            "{what}: not a Channex id ([A-Za-z0-9_-], 1 to {} characters)",
            crate::channex::wire::MAX_ID_LEN
        )));
    }
    Ok(())
}

/// A follow-up name (chosen by a rule: spaces allowed).
fn checked_name(value: &str) -> Result<(), ConsoleError> {
    if value.is_empty() || value.len() > MAX_NAME || value.chars().any(char::is_control) {
        return Err(ConsoleError::BadInput("follow-up: not a valid name".into()));
    }
    Ok(())
}

/// One entry of the page, in time order.
enum Item<'a> {
    Message(&'a Message),
    Decisions(EventDecisions<'a>),
}

/// Where an item sorts: its time, then its rank among items of the same time.
type SortKey = (Option<DateTime<Utc>>, usize);

/// Messages oldest first, each followed by the decisions about it (matched by the event
/// id `thread.new_message:<thread>:<message>`); other decisions by their time.
fn interleave<'a>(messages: &'a [Message], decisions: Vec<EventDecisions<'a>>) -> Vec<Item<'a>> {
    let mut sorted: Vec<&Message> = messages.iter().collect();
    sorted.sort_by_key(|m| m.inserted_at);
    let mut keyed: Vec<(SortKey, Item<'a>)> = sorted
        .iter()
        .enumerate()
        .map(|(i, m)| ((Some(m.inserted_at), 2 * i), Item::Message(m)))
        .collect();
    for d in decisions {
        let about = d.event_id.rsplit(':').next().and_then(|mid| {
            sorted
                .iter()
                .position(|m| m.id == mid && d.event_id.starts_with("thread.new_message:"))
        });
        let key = match about {
            Some(i) => (Some(sorted[i].inserted_at), 2 * i + 1),
            None => (d.at, usize::MAX),
        };
        keyed.push((key, Item::Decisions(d)));
    }
    keyed.sort_by_key(|(key, _)| *key);
    keyed.into_iter().map(|(_, item)| item).collect()
}

pub async fn page(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Path(id): Path<String>,
) -> Result<Markup, ConsoleError> {
    checked_id("thread", &id)?;
    let deps = console.deps();
    let filter = AuditFilter {
        thread_id: Some(id.clone()),
        ..Default::default()
    };
    let records = audit::query(&deps.infra.js, console.prefix(), &filter);
    let follow_ups = FollowUps::new(deps.infra.followups.clone());
    let timers = follow_ups.list_for_thread(&id);
    let messages = deps.channex.list_thread_messages(&id);
    let (records, timers, messages) = tokio::join!(records, timers, messages);
    let (records, timers) = (records?, timers?);
    let (messages, channex_error) = match messages {
        Ok(listing) => (listing.items, None),
        Err(e) => {
            tracing::warn!(thread = %id, error = %e, "console: cannot read the thread's messages");
            (
                Vec::new(),
                Some(layout::shown(&e.to_string(), Field::Detail).into_owned()),
            )
        }
    };
    let items = interleave(&messages, audit::group_by_event(&records));
    let body = html! {
        h1 { "Thread " span.mono { (id) } }
        p.lead { (plural(messages.len(), "message")) " · " (plural(records.len(), "decision")) " recorded · "
            a href={ "/timeline?thread=" (layout::path_segment(&id)) } { "on the timeline" } }
        h2 { "Pending follow-ups" }
        (follow_up_table(&id, &timers, &authed.csrf))
        h2 { "Conversation and decisions" }
        @if let Some(e) = channex_error { p.flash.bad { "Channex did not answer: " (e) } }
        div.convo {
            @if items.is_empty() { p.muted { "Nothing here yet." } }
            @for item in &items { (render_item(item)) }
        }
    };
    Ok(layout::page("Thread", Nav::None, Some(&authed.csrf), body))
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn follow_up_table(thread_id: &str, timers: &[FollowUpTimer], csrf: &str) -> Markup {
    html! {
        div.table-wrap { table #follow-ups {
            thead { tr { th { "Follow-up" } th { "Due" } th { "Armed" } th {} } }
            tbody {
                @if timers.is_empty() { tr { td.empty colspan="4" { "No follow-up pending." } } }
                @for t in timers {
                    tr.follow-up data-name=(t.name) {
                        td { (layout::shown(&t.name, Field::Detail)) }
                        td { (layout::time(t.due_at)) }
                        td.muted { (layout::time(t.armed_at)) }
                        td { form method="post" action={ (layout::thread_href(thread_id)) "/follow-ups/" (layout::path_segment(&t.name)) "/cancel" } {
                            input type="hidden" name="csrf" value=(csrf);
                            @if let Some(b) = &t.booking_id {
                                input type="hidden" name="scope" value="booking";
                                input type="hidden" name="booking" value=(b);
                            } @else {
                                input type="hidden" name="scope" value="thread";
                            }
                            button.cancel type="submit" { "Cancel" }
                        } }
                    }
                }
            }
        } }
    }
}

fn render_item(item: &Item<'_>) -> Markup {
    match item {
        Item::Message(m) => {
            let class = match m.sender {
                Sender::Guest => "bubble guest",
                Sender::Property => "bubble property",
                _ => "bubble",
            };
            html! {
                div class=(class) {
                    div.meta { (m.sender.as_str()) " · " (layout::time(m.inserted_at)) }
                    div.message-text { (layout::shown(&m.text, Field::Text)) }
                    @if !m.attachments.is_empty() { div.meta { (m.attachments.len()) " attachment(s)" } }
                }
            }
        }
        Item::Decisions(d) => html! {
            div.decision {
                div.meta { "concierge · " (d.event_type.as_deref().unwrap_or("event"))
                    @if let Some(at) = d.at { " · " (layout::time(at)) } }
                @if let Some(u) = d.rules.values().flat_map(|rs| rs.iter()).find_map(|r| r.understood.as_ref()) {
                    div.understood { "read as: " (layout::shown(&u.summary, Field::Detail)) }
                }
                @for (rule, records) in &d.rules {
                    div { strong { (layout::shown(rule, Field::Detail)) }
                        ul { @for r in records { li {
                            (r.action.as_ref().map_or("—", |a| a.as_str()))
                            @if let Some(t) = &r.template { " (" (layout::shown(t, Field::Detail)) ")" }
                            " " (layout::outcome_pill(r.outcome))
                            @if let Some(reason) = &r.reason { " " span.muted { (layout::shown(&reason.as_text(), Field::Detail)) } }
                            @if let Some(text) = &r.text { div.rendered.reply-text { (layout::shown(text, Field::Text)) } }
                            @if let Some(e) = &r.error { div.muted { (layout::shown(e, Field::Detail)) } }
                        } } }
                    }
                }
            }
        },
    }
}

/// Whose timer a Cancel form is about: the thread's own, or a stay timer of its booking.
#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ScopeKind {
    #[default]
    Thread,
    Booking,
}

#[derive(Deserialize)]
pub struct CancelForm {
    csrf: Option<String>,
    #[serde(default)]
    scope: ScopeKind,
    booking: Option<String>,
}

/// The timer scope a Cancel form names; a booking timer must belong to thread `id`.
async fn cancel_scope<'a>(
    follow_ups: &FollowUps,
    id: &'a str,
    name: &str,
    form: &'a CancelForm,
) -> Result<(TimerScope<'a>, Option<FollowUpTimer>), ConsoleError> {
    let scope = match (form.scope, form.booking.as_deref()) {
        (ScopeKind::Thread, _) => TimerScope::Thread(id),
        (ScopeKind::Booking, Some(b)) => {
            checked_id("booking", b)?;
            TimerScope::Booking(b)
        }
        (ScopeKind::Booking, None) => {
            return Err(ConsoleError::BadInput(
                "scope=booking needs a booking".into(),
            ))
        }
    };
    let timer = follow_ups.get_in(scope, name).await?;
    let of_thread = timer.as_ref().is_some_and(|t| t.thread_id == id);
    if !of_thread {
        return Err(ConsoleError::NotFound(format!(
            "no pending follow-up {name:?} on this thread"
        )));
    }
    Ok((scope, timer))
}

pub async fn cancel(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Path((id, name)): Path<(String, String)>,
    Form(form): Form<CancelForm>,
) -> Result<Redirect, ConsoleError> {
    checked_id("thread", &id)?;
    checked_name(&name)?;
    check_csrf(&authed, form.csrf.as_deref())?;
    let deps = console.deps();
    let follow_ups = FollowUps::new(deps.infra.followups.clone());
    let (scope, timer) = cancel_scope(&follow_ups, &id, &name, &form).await?;
    if !follow_ups.cancel_in(scope, &name).await? {
        return Err(ConsoleError::NotFound(format!(
            "no pending follow-up {name:?} on this thread"
        )));
    }
    let now = console.now();
    let mut record = AuditRecord::standalone(
        format!(
            "console:cancel:{id}:{name}:{}",
            now.timestamp_nanos_opt().unwrap_or_default()
        ),
        Outcome::Executed,
    );
    record.at = now;
    record.rule = Some("console".into());
    record.action = Some(ActionKind::CancelFollowUp);
    record.reason = Some(Reason::Cancelled(name.clone()));
    record.thread_id = Some(id.clone());
    record.property_id = timer.map(|t| t.property_id);
    let log = AuditLog::new(deps.infra.js.clone(), console.prefix());
    if let Err(e) = log.record(&record).await {
        // The cancel itself is done; only its trace is missing.
        tracing::warn!(error = %e, "console: could not audit a cancelled follow-up");
    }
    tracing::info!(thread = %id, follow_up = %name, "console: follow-up cancelled");
    Ok(Redirect::to(&layout::thread_href(&id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, at: &str, sender: Sender) -> Message {
        Message {
            id: id.into(),
            text: id.into(),
            sender,
            attachments: vec![],
            inserted_at: at.parse().expect("time"),
            updated_at: None,
            thread_id: None,
            user_id: None,
            meta: None,
        }
    }

    fn record(event_id: &str, at: &str) -> AuditRecord {
        let mut r = AuditRecord::standalone(format!("{event_id}:executed"), Outcome::Executed);
        r.event_id = Some(event_id.into());
        r.at = at.parse().expect("time");
        r
    }

    #[test]
    fn each_decision_follows_the_message_it_is_about() {
        let messages = [
            message("reply", "2026-12-01T10:00:01Z", Sender::Property),
            message("question", "2026-12-01T10:00:00Z", Sender::Guest),
        ];
        // Recorded after the reply was sent, but about the question.
        let records = [
            record("thread.new_message:t1:question", "2026-12-01T10:00:02Z"),
            record("follow_up.due:t1:x:1", "2026-12-01T09:00:00Z"),
        ];
        let items = interleave(&messages, audit::group_by_event(&records));
        let order: Vec<String> = items
            .iter()
            .map(|i| match i {
                Item::Message(m) => m.id.clone(),
                Item::Decisions(d) => d.event_id.clone(),
            })
            .collect();
        assert_eq!(
            order,
            [
                "follow_up.due:t1:x:1",
                "question",
                "thread.new_message:t1:question",
                "reply"
            ]
        );
    }
}
