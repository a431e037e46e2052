//! The console's Response page in a real browser (issue 24): headless Debian chromium
//! through chromedriver, against the console served in-process (the same router
//! `concierge run` serves) with an injected clock, over response records seeded into a
//! private nats-server. The charts are server-drawn SVG: the test reads their points and
//! bars and checks the values the seeded records make. A screenshot goes to
//! `target/console/responses.png` (the README's docs/console/responses.png).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`make ensure-browser`).
#[path = "common/browser.rs"]
mod browser;
mod common;

use std::sync::Arc;

use browser::{screenshot, wait_css};
use chrono::{DateTime, TimeDelta, Utc};
use concierge::base::clock::fixed_clock;
use concierge::content::LiveRules;
use concierge::plan::rules::{RuleEngine, RuleLimits};
use concierge::roles::console::{Console, ConsoleDeps, ReloadStatus};
use concierge::store::responses::{Channel, ResponseStore, Seen, ThreadRecord};
use fantoccini::{Client, Locator};

const PROPERTY: &str = "casa-azul";

struct AlwaysReady;

impl concierge::http::Readiness for AlwaysReady {
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// One thread: a guest message `ago` before `now`, answered `after` it by `by` (a
/// property message concierge sent when `concierge`), or not at all.
fn record(
    id: &str,
    channel: Channel,
    now: DateTime<Utc>,
    ago: TimeDelta,
    answer: Option<(TimeDelta, bool)>,
) -> ThreadRecord {
    let mut r = ThreadRecord::new(PROPERTY, id);
    r.channel = Some(channel);
    let arrived = now - ago;
    r.guest.push(Seen {
        id: format!("{id}-g"),
        at: ms(arrived),
    });
    if let Some((after, by_concierge)) = answer {
        r.property.push(Seen {
            id: format!("{id}-r"),
            at: ms(arrived + after),
        });
        if by_concierge {
            r.concierge.push(format!("{id}-r"));
        }
    }
    r.max_count = r.seen_count();
    r
}

/// 12 Booking.com messages over 30 days: 9 answered by concierge in 2 minutes, 2 by
/// staff in 3 hours, 1 by staff after 25 hours (Reply Score 11/12 = 91%); 10 Airbnb
/// threads, 8 answered in an hour, 2 never (response rate 80%); one Booking.com guest
/// waiting for 21 hours (at risk, 3 h left).
fn seeded(now: DateTime<Utc>) -> Vec<ThreadRecord> {
    let mut out = Vec::new();
    let day = |d: i64| TimeDelta::days(d) + TimeDelta::hours(2);
    for i in 0..12 {
        let answer = match i {
            0..=8 => (TimeDelta::minutes(2), true),
            9 | 10 => (TimeDelta::hours(3), false),
            _ => (TimeDelta::hours(25), false),
        };
        out.push(record(
            &format!("b{i}"),
            Channel::BookingCom,
            now,
            day(2 + 2 * i),
            Some(answer),
        ));
    }
    for i in 0..10 {
        let answer = (i >= 2).then_some((TimeDelta::hours(1), false));
        out.push(record(
            &format!("a{i}"),
            Channel::Airbnb,
            now,
            day(3 + 2 * i),
            answer,
        ));
    }
    out.push(record(
        "waiting",
        Channel::BookingCom,
        now,
        TimeDelta::hours(21),
        None,
    ));
    out
}

async fn texts(client: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
        out.push(e.text().await.unwrap_or_default());
    }
    out
}

async fn attrs(client: &Client, css: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
        out.push(e.attr(attr).await.ok().flatten().unwrap_or_default());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_page_draws_the_scores_times_and_who_answered() {
    let (_nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    let now = Utc::now();
    let store = ResponseStore::new(
        infra.js.clone(),
        infra.responses.clone(),
        &infra.names.responses_bucket(),
    );
    for r in seeded(now) {
        store
            .update(&r.property_id, &r.thread_id, 0, |slot| {
                *slot = r.clone();
                true
            })
            .await
            .unwrap();
    }
    let token = format!("console-{}", uuid::Uuid::new_v4().simple());
    let mut config = common::config(&sim, &nats_cfg, &[PROPERTY]);
    config.console.token = concierge::config::Secret::new(&token);
    config.properties.insert(
        PROPERTY.into(),
        concierge::config::PropertyConfig {
            name: "Casa Azul".into(),
            ..Default::default()
        },
    );
    let engine = Arc::new(RuleEngine::new(RuleLimits::default()));
    let empty = tempfile::tempdir().unwrap();
    let (live, _) = LiveRules::load(empty.path(), empty.path(), engine.clone());
    let console = Console::new(ConsoleDeps {
        config: Arc::new(config.clone()),
        infra: infra.clone(),
        channex: concierge::wiring::channex_client(&config).unwrap(),
        live: Arc::new(live),
        engine,
        reloads: ReloadStatus::default(),
        clock: fixed_clock(now),
    });
    let router = concierge::http::router_with_console(
        Arc::new(AlwaysReady),
        concierge::config::Secret::default(),
        None,
        concierge::http::Limits::default(),
        console,
    );
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let addr = concierge::http::serve("127.0.0.1:0", router, shutdown)
        .await
        .unwrap();
    let base = format!("http://{addr}");

    let driver = browser::chromedriver().await;
    let client = browser::headless(&driver).await;
    client.goto(&format!("{base}/login")).await.unwrap();
    wait_css(&client, "form#login input[name=token]")
        .await
        .send_keys(&token)
        .await
        .unwrap();
    wait_css(&client, "form#login button")
        .await
        .click()
        .await
        .unwrap();
    wait_css(&client, "nav a[href=\"/responses\"]").await;
    client
        .goto(&format!("{base}/responses?property={PROPERTY}"))
        .await
        .unwrap();
    wait_css(&client, "svg#chart-times").await;
    screenshot(&client, "responses").await;

    // The scores, as the OTAs define them.
    assert_eq!(texts(&client, "#booking_reply_score .value").await, ["91%"]);
    assert_eq!(
        texts(&client, "#airbnb_response_rate .value").await,
        ["80%"]
    );
    // Each score against its 90 % target line, one point per day with a value.
    for chart in ["chart-booking_reply_score", "chart-airbnb_response_rate"] {
        assert_eq!(
            attrs(&client, &format!("svg#{chart} line.target"), "data-value").await,
            ["90"],
            "{chart}"
        );
    }
    let today = now.date_naive().to_string();
    let last_booking = attrs(
        &client,
        &format!("svg#chart-booking_reply_score circle[data-date=\"{today}\"]"),
        "data-value",
    )
    .await;
    assert_eq!(last_booking, ["91.6667"]);
    // Response times per day: p50 and p90 points of the days with answers, 2 minutes for
    // concierge's days.
    // (Values in hours, as drawn; every point also has a <title> for hovering.)
    let p50 = attrs(&client, "svg#chart-times circle.p50", "data-value").await;
    assert_eq!(p50.len(), 20, "{p50:?}"); // 12 Booking.com + 8 answered Airbnb days
    assert_eq!(p50.iter().filter(|v| *v == "0.0333").count(), 9, "{p50:?}");
    assert_eq!(p50.iter().filter(|v| *v == "25.0000").count(), 1, "{p50:?}");
    assert_eq!(p50.iter().filter(|v| *v == "1.0000").count(), 8, "{p50:?}");
    let legend = texts(&client, "#times-legend").await.join(" ");
    assert!(
        legend.contains("p50 1h 00m") && legend.contains("p90 3h 00m"),
        "{legend}"
    );
    // Who answered first: concierge 9, staff 11, per day as bars.
    assert_eq!(
        texts(&client, "#answered-legend strong[data-by=concierge]").await,
        ["9"]
    );
    assert_eq!(
        texts(&client, "#answered-legend strong[data-by=staff]").await,
        ["11"]
    );
    assert_eq!(
        texts(&client, "#answered-legend strong[data-by=unanswered]").await,
        ["3"]
    );
    assert_eq!(
        client
            .find_all(Locator::Css("svg#chart-answered rect.concierge"))
            .await
            .unwrap()
            .len(),
        9
    );
    assert_eq!(
        client
            .find_all(Locator::Css("svg#chart-answered rect.staff"))
            .await
            .unwrap()
            .len(),
        11
    );
    assert_eq!(texts(&client, "#answered-share .value").await, ["45%"]);
    // At risk now: the guest waiting 21 h, 3 h left (the countdown ticks in the browser).
    let rows = texts(&client, "table#at-risk tbody tr").await;
    assert!(
        rows.iter()
            .any(|r| r.contains("Booking.com") && (r.contains("2h 59m") || r.contains("3h"))),
        "{rows:?}"
    );
    let _ = client.close().await;
}
