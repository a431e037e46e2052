//! The playground: a property, a channel and a guest message (or a pasted event JSON) go
//! through the same [`crate::plan::plan`] as the worker (on the planning threads, dry
//! run), and the page shows which rules fired, their actions and the rendered replies and
//! alerts. "Replay last 24h" runs what `concierge replay --since 24h` runs
//! ([`crate::authoring::replay::replay_since`]) with the live rules and lists what would
//! change.
//!
//! Must not: execute a plan, write to NATS or call Channex. The message travels in a POST
//! body only (never in a URL) and is never logged.

use axum::extract::State;
use axum::{Extension, Form};
use chrono::{DateTime, Duration, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::Authed;
use super::deadlines::provider_label;
use super::layout::{self, Field, Nav};
use super::{check_csrf, Console, ConsoleError};
use crate::authoring::replay::{replay_since, PlanLine, ReplayEntry};
use crate::events::{Event, EventType, MessageInfo, Provider, Sender, ThreadSnapshot};
use crate::plan::{plan_in_pool, Plan};

const CHANNELS: [Provider; 3] = [
    Provider::BookingCom,
    Provider::Airbnb,
    Provider::Other(String::new()),
];

fn channel_value(p: &Provider) -> &str {
    match p {
        Provider::BookingCom => "booking_com",
        Provider::Airbnb => "airbnb",
        Provider::Other(_) => "other",
    }
}

/// The form, as posted (and shown again with the result).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PlaygroundForm {
    pub csrf: Option<String>,
    pub property: Option<String>,
    pub channel: Option<String>,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub event: String,
}

/// The event the form describes: the pasted JSON when there is one, else a guest message
/// on a playground thread of the chosen property and channel.
pub fn event_from_form(
    form: &PlaygroundForm,
    config: &crate::config::Config,
    now: DateTime<Utc>,
) -> Result<Event, String> {
    if !form.event.trim().is_empty() {
        return serde_json::from_str::<Event>(&form.event)
            .map_err(|e| format!("the event JSON is not a valid event: {e}"));
    }
    if form.message.trim().is_empty() {
        return Err("type a guest message or paste an event JSON".into());
    }
    let property = form
        .property
        .clone()
        .filter(|p| config.properties.contains_key(p))
        .or_else(|| config.properties.keys().next().cloned())
        .unwrap_or_else(|| "playground".into());
    let provider = match form.channel.as_deref() {
        Some("airbnb") => Provider::Airbnb,
        Some("booking_com") | None => Provider::BookingCom,
        Some(_) => Provider::Other("other".into()),
    };
    // As the poller would: the language the guest's text is written in picks the variant.
    let language = crate::base::language::resolve_language(None, &form.message, None);
    Ok(Event {
        id: format!("playground:{}", uuid::Uuid::new_v4()),
        event_type: EventType::ThreadNewMessage,
        occurred_at: now,
        property: config.property_info(&property),
        thread: Some(ThreadSnapshot {
            id: "playground-thread".into(),
            title: "Playground".into(),
            provider,
            message_count: 1,
            last_message_received_at: Some(now),
            last_guest_message_at: Some(now),
            awaiting_reply: true,
            language: language.clone(),
            ..Default::default()
        }),
        message: Some(MessageInfo {
            id: "playground-message".into(),
            text: form.message.clone(),
            sender: Sender::Guest,
            attachments: vec![],
            inserted_at: now,
            language,
        }),
        inquiry: None,
        follow_up: None,
        schedule: None,
        booking: None,
        booking_change: None,
    })
}

pub async fn page(State(console): State<Console>, Extension(authed): Extension<Authed>) -> Markup {
    let body = html! {
        (intro())
        (form_card(&console, &PlaygroundForm::default(), &authed.csrf))
    };
    layout::page("Playground", Nav::Playground, Some(&authed.csrf), body)
}

fn intro() -> Markup {
    html! {
        h1 { "Playground" }
        p.lead { "Try a guest message against the running rules. Same planning as the worker, "
            strong { "dry run" } ": nothing is sent, nothing is recorded." }
    }
}

pub async fn run(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Form(form): Form<PlaygroundForm>,
) -> Result<Markup, ConsoleError> {
    check_csrf(&authed, form.csrf.as_deref())?;
    let deps = console.deps();
    let now = console.now();
    let result = match event_from_form(&form, &deps.config, now) {
        Ok(event) => {
            let content = deps.live.current();
            plan_in_pool(&deps.engine, &content, &event, now, true)
                .await
                .map_err(|e| e.to_string())
        }
        Err(problem) => Err(problem),
    };
    let body = html! {
        (intro())
        (form_card(&console, &form, &authed.csrf))
        h2 { "What the rules would do" }
        @match &result {
            Ok(plan) => (plan_view(plan)),
            Err(problem) => p.flash.bad { (problem) },
        }
    };
    Ok(layout::page(
        "Playground",
        Nav::Playground,
        Some(&authed.csrf),
        body,
    ))
}

fn form_card(console: &Console, form: &PlaygroundForm, csrf: &str) -> Markup {
    let properties = &console.deps().config.properties;
    let channel = form.channel.as_deref().unwrap_or("booking_com");
    html! {
        section.card {
            form.stacked #playground method="post" action="/playground" {
                input type="hidden" name="csrf" value=(csrf);
                div.row {
                    label { "Property" select name="property" {
                        @for (id, p) in properties {
                            option value=(id) selected[form.property.as_deref() == Some(id)] {
                                @if p.name.is_empty() { (id) } @else { (p.name) }
                            }
                        }
                    } }
                    label { "Channel" select name="channel" {
                        @for c in &CHANNELS {
                            option value=(channel_value(c)) selected[channel == channel_value(c)] {
                                @if matches!(c, Provider::Other(_)) { "Other" } @else { (provider_label(c)) }
                            }
                        }
                    } }
                }
                label { "Guest message" textarea name="message" placeholder="what's the wifi?" { (form.message) } }
                details { summary { "…or paste an event JSON instead" }
                    label { "Event JSON" textarea name="event" placeholder="{\"type\": \"thread.new_message\", ...}" { (form.event) } }
                }
                div { button type="submit" { "Plan it" } }
            }
            form method="post" action="/playground/replay" {
                input type="hidden" name="csrf" value=(csrf);
                button.secondary type="submit" { "Replay last 24h" }
                span.muted { " what " code { "concierge replay --since 24h" } " says the running rules would change" }
            }
        }
    }
}

fn plan_view(plan: &Plan) -> Markup {
    html! {
        @if let Some(u) = &plan.understanding {
            div.understood data-act=(u.act.as_str()) { "Read as: " strong { (layout::shown(&u.summary(), Field::Detail)) } }
            @if !u.topics.is_empty() {
                table.understood-topics { tr { th { "topic" } th { "confidence" } th { "evidence" } }
                    @for t in &u.topics { tr { td { (t.topic) } td { (format!("{:.2}", t.confidence)) } td { (layout::shown(&t.evidence.join(", "), Field::Detail)) } } }
                }
            }
        }
        @if plan.rules.is_empty() { p.muted { "No rule ran (none enabled?)." } }
        @if plan.steps().next().is_none() && !plan.rules.is_empty() {
            p.muted { "The rules ran and planned nothing for this message." }
        }
        @for rule in &plan.rules {
            @if let Some(e) = &rule.error {
                div.plan-step { strong { (rule.rule) } " " span.pill.bad { "rule error" } div.muted { (e.to_string()) } }
            }
            @for step in &rule.steps {
                div.plan-step data-action=(step.action.kind()) {
                    strong { (step.rule) } " → " (step.action.kind())
                    @if let Some(t) = step.template() { " (" (t) ")" }
                    " " span.pill.dry { "dry run" }
                    span.muted { " version " (step.version) }
                    @match &step.rendered {
                        Some(Ok(text)) => div.rendered { (layout::shown(text, Field::Text)) },
                        Some(Err(e)) => div.flash.bad { "cannot render: " (e.to_string()) },
                        None => {},
                    }
                }
            }
        }
    }
}

pub async fn replay(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
    Form(form): Form<PlaygroundForm>,
) -> Result<Markup, ConsoleError> {
    check_csrf(&authed, form.csrf.as_deref())?;
    let deps = console.deps();
    let since = console.now() - Duration::hours(24);
    let content = deps.live.current();
    let entries = replay_since(
        &deps.infra.js,
        console.prefix(),
        &deps.engine,
        &content,
        since,
        None,
    )
    .await
    .map_err(|e| ConsoleError::Store(format!("{e:#}")))?;
    let changed: Vec<&ReplayEntry> = entries.iter().filter(|e| e.changed).collect();
    let body = html! {
        (intro())
        (form_card(&console, &PlaygroundForm::default(), &authed.csrf))
        h2 { "Replay of the last 24 hours" }
        p { (entries.len()) " events replayed; " strong { (changed.len()) } " would go differently with the running rules." }
        div.table-wrap { table #replay {
            thead { tr { th { "Event" } th { "Thread" } th { "Would do now" } th { "Was done" } } }
            tbody {
                @if changed.is_empty() { tr { td.empty colspan="4" { "No change." } } }
                @for e in &changed {
                    tr.replay-change {
                        td { (e.event_type) }
                        td { @if let Some(t) = &e.thread_id { (layout::thread_link(t)) } }
                        td { (lines(&e.would)) }
                        td { (lines(&e.did)) }
                    }
                }
            }
        } }
    };
    Ok(layout::page(
        "Playground",
        Nav::Playground,
        Some(&authed.csrf),
        body,
    ))
}

fn lines(lines: &[PlanLine]) -> Markup {
    html! {
        @if lines.is_empty() { span.muted { "nothing" } }
        @for l in lines {
            div { (l.rule) " " (l.action) @if let Some(t) = &l.template { "(" (t) ")" }
                @if let Some(o) = &l.outcome { " " span.muted { (o) } }
                @if let Some(text) = &l.text { div.rendered { (layout::shown(text, Field::Text)) } } }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_message_becomes_a_guest_message_event() {
        let mut config = crate::config::Config::default();
        config
            .properties
            .insert("p1".into(), crate::config::PropertyConfig::default());
        let now: DateTime<Utc> = "2026-12-01T10:00:00Z".parse().expect("time");
        let form = PlaygroundForm {
            property: Some("p1".into()),
            channel: Some("airbnb".into()),
            message: "what's the wifi?".into(),
            ..Default::default()
        };
        let ev = event_from_form(&form, &config, now).expect("event");
        assert_eq!(ev.event_type, EventType::ThreadNewMessage);
        assert_eq!(ev.property.id, "p1");
        assert_eq!(
            ev.thread.as_ref().map(|t| t.provider.clone()),
            Some(Provider::Airbnb)
        );
        assert_eq!(
            ev.message.as_ref().map(|m| m.sender.clone()),
            Some(Sender::Guest)
        );
        let empty = PlaygroundForm::default();
        assert!(event_from_form(&empty, &config, now).is_err());
        let bad = PlaygroundForm {
            event: "{".into(),
            ..Default::default()
        };
        assert!(event_from_form(&bad, &config, now)
            .unwrap_err()
            .contains("not a valid event"));
    }
}
