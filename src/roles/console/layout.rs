//! The console's page shell: the HTML document, header with the navigation, flash and
//! error pages, and the shared bits of markup (status pills, times, thread links).
//!
//! Owns the look (the embedded `assets/console.css` and `assets/console.js`, served from
//! `/assets/` with a content hash in their URL), the security headers of every console
//! response, `Retry-After` on refusals ([`retry_after`]) and what one field of outside text
//! may render ([`Field`], [`shown`]: the shared sanitiser [`crate::base::display`] with the
//! console's caps). Must not: put guest text in a URL (links carry thread ids only), render
//! outside text without [`shown`], or bypass maud's escaping for anything that did not
//! come from this binary (`PreEscaped` is used for nothing but the embedded assets).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

use crate::base::display::{self, Lines};
use crate::store::audit::Outcome;

pub const CSS: &str = include_str!("assets/console.css");
pub const JS: &str = include_str!("assets/console.js");

/// The pages of the navigation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Deadlines,
    Timeline,
    Rules,
    Playground,
    Health,
    Responses,
    /// Pages outside the navigation (a thread, the login form).
    None,
}

const NAV: [(Nav, &str, &str); 6] = [
    (Nav::Deadlines, "/", "Deadlines"),
    (Nav::Responses, "/responses", "Response"),
    (Nav::Timeline, "/timeline", "Timeline"),
    (Nav::Rules, "/rules", "Rules"),
    (Nav::Playground, "/playground", "Playground"),
    (Nav::Health, "/health", "Health"),
];

/// Headers of every console response: no caching of guest data, no framing, scripts and
/// styles only from this origin.
pub fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |name, value: &'static str| (name, HeaderValue::from_static(value));
    for (name, value) in [
        set(header::CACHE_CONTROL, "no-store"),
        set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        set(header::REFERRER_POLICY, "no-referrer"),
        set(header::X_FRAME_OPTIONS, "DENY"),
        set(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    ] {
        headers.entry(name).or_insert(value);
    }
    response
}

/// Short content hash of an asset, so its URL changes when it does (cached forever).
pub fn asset_version(body: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(body.as_bytes())
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A field of outside text (guest names and messages, thread titles, rendered replies,
/// errors), by what it may render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A guest or listing name, a property label: one line, [`Field::NAME_CHARS`].
    Name,
    /// A thread title: one line, [`Field::TITLE_CHARS`].
    Title,
    /// A message or a rendered reply: lines kept, [`Field::TEXT_CHARS`].
    Text,
    /// An error, a reason, a rule or template name: one line, [`Field::DETAIL_CHARS`].
    Detail,
}

impl Field {
    pub const NAME_CHARS: usize = 120;
    pub const TITLE_CHARS: usize = 200;
    pub const TEXT_CHARS: usize = 20_000;
    pub const DETAIL_CHARS: usize = 1_000;

    fn cap(self) -> (usize, Lines) {
        match self {
            Field::Name => (Self::NAME_CHARS, Lines::Join),
            Field::Title => (Self::TITLE_CHARS, Lines::Join),
            Field::Text => (Self::TEXT_CHARS, Lines::Keep),
            Field::Detail => (Self::DETAIL_CHARS, Lines::Join),
        }
    }
}

/// `text` as the console may render it in `field`: controls shown as U+FFFD, bidi
/// formatting removed, cut with a visible `…` past the field's cap (maud escapes the rest).
pub fn shown(text: &str, field: Field) -> std::borrow::Cow<'_, str> {
    let (max, lines) = field.cap();
    display::sanitize(text, max, lines)
}

/// `response` with `Retry-After` in whole seconds (at least 1): every refusal that asks the
/// client to come back (429, 503) says when.
pub fn retry_after(mut response: Response, after: std::time::Duration) -> Response {
    let secs = after.as_secs().max(1);
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// A whole page: head, header with the navigation (and the logout button when `csrf` is
/// given: a logged-in page), then `body`.
pub fn page(title: &str, active: Nav, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · concierge" }
                link rel="stylesheet" href={ "/assets/console.css?v=" (asset_version(CSS)) };
                script src={ "/assets/console.js?v=" (asset_version(JS)) } defer {}
            }
            body {
                header.top {
                    a.brand href="/" { span.logo { "◆" } " concierge" }
                    @if let Some(csrf) = csrf {
                        nav {
                            @for (nav, href, label) in NAV {
                                a href=(href) class=[(nav == active).then_some("active")] { (label) }
                            }
                        }
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A page that says what went wrong, with its status.
pub fn error_page(status: StatusCode, message: &str) -> Response {
    let body = page(
        status.canonical_reason().unwrap_or("Error"),
        Nav::None,
        None,
        html! {
            section.card.error {
                h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
                p { (message) }
                p { a href="/" { "Back to the deadlines" } }
            }
        },
    );
    secure((status, body).into_response())
}

/// The status pill of an outcome (`sent`, `dry run`, `skipped`, `failed`, ...).
pub fn outcome_pill(outcome: Outcome) -> Markup {
    let (class, label) = match outcome {
        Outcome::Executed => ("pill ok", "executed"),
        Outcome::DryRun => ("pill dry", "dry run"),
        Outcome::Skipped => ("pill skip", "skipped"),
        Outcome::Failed => ("pill bad", "failed"),
        Outcome::RuleError => ("pill bad", "rule error"),
        Outcome::RuleRejected => ("pill bad", "rejected"),
    };
    html! { span class=(class) { (label) } }
}

/// A time as `2026-12-01 10:00 UTC`, machine-readable in `datetime`.
pub fn time(at: DateTime<Utc>) -> Markup {
    html! { time datetime=(at.to_rfc3339()) { (at.format("%Y-%m-%d %H:%M:%S")) } }
}

/// `/threads/<id>`, the id percent-encoded (ids only: never guest text in a URL).
pub fn thread_href(thread_id: &str) -> String {
    format!("/threads/{}", path_segment(thread_id))
}

/// Percent-encodes everything but unreserved characters.
pub fn path_segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// A link to a thread, showing a short id.
pub fn thread_link(thread_id: &str) -> Markup {
    let short: String = thread_id.chars().take(8).collect();
    html! { a.thread href=(thread_href(thread_id)) title=(thread_id) { (short) } }
}

/// "3h 12m", "2d 4h", "45s": a duration for people.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds().abs();
    let (days, hours, minutes) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, 0) => format!("{h}h"),
        (0, h, m) => format!("{h}h {m:02}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_links_encode_the_id() {
        assert_eq!(thread_href("abc-123"), "/threads/abc-123");
        assert_eq!(thread_href("a/b?c"), "/threads/a%2Fb%3Fc");
    }

    #[test]
    fn durations_read_naturally() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(42)), "42s");
        assert_eq!(human_duration(d(300)), "5m");
        assert_eq!(human_duration(d(3 * 3600 + 120)), "3h 02m");
        assert_eq!(human_duration(d(2 * 86_400 + 4 * 3600)), "2d 4h");
    }
}
