//! The web console over real HTTP: a `concierge` listener with the console mounted, a
//! private nats-server, the Channex simulator, the real poller (and worker where a test
//! needs replies), requests with reqwest.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use std::time::Duration;

use chrono::Utc;
use concierge::config::{Config, Secret};
use concierge::roles::poller::Poller;
use concierge::sim::SimServer;
use concierge::store::nats::Infra;
use concierge::store::timers::{FollowUpTimer, FollowUps};
use reqwest::header::{ACCEPT, AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use tokio::sync::watch;

const PROP: &str = "prop-c";
const TOKEN: &str = "console-test-token-7f3a";

struct AlwaysReady;
impl concierge::http::Readiness for AlwaysReady {
    fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

struct Rig {
    _nats: concierge::store::nats::PrivateNatsServer,
    infra: Infra,
    sim: SimServer,
    config: Config,
    poller: Poller,
    base: String,
    http: reqwest::Client,
    _shutdown: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

const FAQ_RULE: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["wifi"]) {
    reply("wifi");
}
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["echo"]) {
    reply("echo");
}
"#;

fn write(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), body).unwrap();
}

/// A listener with the console (token `TOKEN`, or off with `None`).
async fn rig(token: Option<&str>) -> Rig {
    let (nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("rules"), "10_faq.rhai", FAQ_RULE);
    write(
        &dir.path().join("templates"),
        "wifi.hbs",
        "Wifi: {{property.vars.wifi_name}} / {{property.vars.wifi_password}}",
    );
    write(
        &dir.path().join("templates"),
        "echo.hbs",
        "You wrote: {{message.text}}",
    );
    let mut config = common::config(&sim, &nats_cfg, &[PROP]);
    config.rules.dir = dir.path().join("rules");
    config.rules.templates_dir = dir.path().join("templates");
    config.console.token = Secret::new(token.unwrap_or(""));
    config.properties.insert(
        PROP.into(),
        concierge::config::PropertyConfig {
            name: "Casa Azul".into(),
            timezone: Some("Europe/Lisbon".into()),
            vars: serde_json::json!({"wifi_name": "CasaAzul", "wifi_password": "sardinhas"})
                .as_object()
                .cloned()
                .unwrap(),
            dry_run: false,
        },
    );
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = Poller::new(channex.clone(), &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.unwrap(); // baseline
    let console = concierge::wiring::console(&config, &infra, channex, None, Default::default());
    let (tx, rx) = watch::channel(false);
    let limits = concierge::http::Limits::default();
    let router = concierge::http::router_with_console(
        Arc::new(AlwaysReady),
        Secret::new("hook"),
        None,
        limits,
        console,
    );
    let addr: SocketAddr = concierge::http::serve_with("127.0.0.1:0", router, rx, limits)
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    Rig {
        _nats: nats,
        infra,
        sim,
        config,
        poller,
        base: format!("http://{addr}"),
        http,
        _shutdown: tx,
        _dir: dir,
    }
}

impl Rig {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get_bearer(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .get(self.url(path))
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    async fn login(&self) -> String {
        let resp = self
            .http
            .post(self.url("/login"))
            .form(&[("token", TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        let cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
        cookie.split(';').next().unwrap().to_string()
    }
}

const PAGES: &[&str] = &[
    "/",
    "/timeline",
    "/timeline/stream",
    "/threads/t-1",
    "/rules",
    "/playground",
    "/health",
];

#[tokio::test]
async fn without_a_token_the_console_is_off() {
    let rig = rig(None).await;
    for path in PAGES.iter().chain(&["/login"]) {
        let resp = rig.http.get(rig.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
    }
    // The existing routes are untouched.
    let resp = rig.http.get(rig.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_console_route_needs_the_token() {
    let rig = rig(Some(TOKEN)).await;
    for path in PAGES {
        let resp = rig.http.get(rig.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        // A browser is sent to the login form instead.
        let resp = rig
            .http
            .get(rig.url(path))
            .header(ACCEPT, "text/html,application/xhtml+xml")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(resp.headers()[LOCATION], "/login");
    }
    // A wrong Bearer token is 401 (a few only: they count against the login limit).
    for path in &PAGES[..3] {
        let resp = rig
            .http
            .get(rig.url(path))
            .header(AUTHORIZATION, "Bearer not-the-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in [
        "/threads/t-1/follow-ups/x/cancel",
        "/playground",
        "/playground/replay",
        "/logout",
    ] {
        let resp = rig.http.post(rig.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let (status, body) = rig.get_bearer("/health").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = rig.get_bearer("/login").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#"<form id="login""#), "{body}");
    assert!(!body.contains(TOKEN));
}

#[tokio::test]
async fn logging_in_sets_a_strict_http_only_session_cookie() {
    let rig = rig(Some(TOKEN)).await;
    let resp = rig
        .http
        .post(rig.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/");
    let set_cookie = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(set_cookie.starts_with("concierge_session="), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("Path=/"), "{set_cookie}");
    assert!(!set_cookie.contains(TOKEN), "the cookie is not the token");
    let cookie = set_cookie.split(';').next().unwrap().to_string();
    let resp = rig
        .http
        .get(rig.url("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.unwrap();
    for nav in ["/", "/timeline", "/rules", "/playground", "/health"] {
        assert!(page.contains(&format!(r#"href="{nav}""#)), "nav {nav}");
    }
    // Log out: the cookie is cleared.
    let resp = rig.http.get(rig.url("/logout")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(resp.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

#[tokio::test]
async fn wrong_tokens_are_rate_limited() {
    let rig = rig(Some(TOKEN)).await;
    let mut statuses = Vec::new();
    for _ in 0..7 {
        let resp = rig
            .http
            .post(rig.url("/login"))
            .form(&[("token", "guess")])
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    // While limited, even the right token is refused (a guesser learns nothing).
    let resp = rig
        .http
        .post(rig.url("/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// Guessing the token with `Authorization: Bearer` on any route is limited like the login
/// form: after 5 wrong guesses the address gets 429, even with the right token.
#[tokio::test]
async fn wrong_bearer_tokens_are_rate_limited_on_every_route() {
    let rig = rig(Some(TOKEN)).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let resp = rig
            .http
            .get(rig.url("/health"))
            .header(AUTHORIZATION, "Bearer guess-guess-guess-guess")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    let (status, _) = rig.get_bearer("/health").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    // Bad session cookies count too.
    let resp = rig
        .http
        .get(rig.url("/"))
        .header(COOKIE, "concierge_session=1.forged")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_deadlines_board_is_server_rendered_with_the_inquiry() {
    let mut rig = rig(Some(TOKEN)).await;
    let deadline = Utc::now() + chrono::Duration::minutes(90);
    let (thread, _) = rig.sim.sim.add_inquiry(
        PROP,
        "Andrew",
        deadline,
        "2031-12-02",
        "2031-12-03",
        2,
        "50.00",
        "GBP",
    );
    rig.poller.poll_once(Some(PROP)).await.unwrap();
    let cookie = rig.login().await;
    let resp = rig
        .http
        .get(rig.url("/"))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.unwrap();
    let row = format!(r#"data-thread="{thread}""#);
    assert!(page.contains(&row), "{page}");
    assert!(page.contains("inquiry urgent"), "under 2 h: urgent");
    assert!(page.contains("Andrew"));
    assert!(page.contains(&format!(r#"href="/threads/{thread}""#)));
    assert!(page.contains(r#"class="countdown" data-deadline=""#));
    let _ = (&rig.infra, &rig.config);
}

impl Rig {
    async fn get_cookie(&self, path: &str, cookie: &str) -> String {
        let resp = self
            .http
            .get(self.url(path))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        resp.text().await.unwrap()
    }

    /// `Worker::run` in the background; stops when the returned sender is dropped.
    async fn start_worker(&self) -> watch::Sender<bool> {
        let channex = concierge::wiring::channex_client(&self.config).unwrap();
        let (worker, live) = concierge::wiring::worker(&self.config, &self.infra, channex)
            .await
            .unwrap();
        let (stop, shutdown) = watch::channel(false);
        let js = self.infra.js.clone();
        tokio::spawn(async move {
            let _live = live;
            worker.run(&js, "concierge", shutdown).await
        });
        stop
    }

    /// A Booking.com guest writes `text`; the poller emits it.
    async fn guest_writes(&mut self, text: &str) -> String {
        let thread = self.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
        self.sim.sim.guest_message(&thread, text);
        self.poller.poll_once(Some(PROP)).await.unwrap();
        thread
    }
}

/// The value of the first `name="csrf"` hidden field of a page.
fn csrf_of(page: &str) -> String {
    let at = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF field");
    let rest = &page[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// Every URL a page links, posts or connects to.
fn urls_of(page: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["href=\"", "action=\"", "src=\"", "data-live=\""] {
        let mut rest = page;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            out.push(rest[..rest.find('"').unwrap()].to_string());
        }
    }
    out
}

/// A stay timer (`b.<booking>.<name>`) armed from an event of thread t shows on t's page
/// and its Cancel removes it; a thread called `b` does not list booking timers.
#[tokio::test]
async fn booking_follow_ups_show_on_the_thread_and_cancel() {
    let rig = rig(Some(TOKEN)).await;
    let store = FollowUps::new(rig.infra.followups.clone());
    let now = Utc::now();
    store
        .arm(&FollowUpTimer {
            thread_id: "t-77".into(),
            booking_id: Some("bk-9".into()),
            property_id: PROP.into(),
            name: "pre arrival".into(),
            due_at: now + chrono::Duration::hours(3),
            data: Default::default(),
            armed_at: now,
            armed_by_event: "e1".into(),
            stay: None,
        })
        .await
        .unwrap();
    let cookie = rig.login().await;
    let other = rig.get_cookie("/threads/b", &cookie).await;
    assert!(!other.contains(r#"class="follow-up""#), "{other}");
    let page = rig.get_cookie("/threads/t-77", &cookie).await;
    assert!(page.contains(r#"data-name="pre arrival""#), "{page}");
    assert!(page.contains(r#"name="scope" value="booking""#), "{page}");
    let csrf = csrf_of(&page);
    let resp = rig
        .http
        .post(rig.url("/threads/t-77/follow-ups/pre%20arrival/cancel"))
        .header(COOKIE, &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("scope", "booking"),
            ("booking", "bk-9"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(store.list().await.unwrap().is_empty(), "cancelled");
}

#[tokio::test]
async fn cancel_needs_the_csrf_token_and_removes_the_follow_up() {
    let rig = rig(Some(TOKEN)).await;
    let store = FollowUps::new(rig.infra.followups.clone());
    let now = Utc::now();
    store
        .arm(&FollowUpTimer {
            thread_id: "t-42".into(),
            booking_id: None,
            property_id: PROP.into(),
            name: "check in".into(),
            due_at: now + chrono::Duration::hours(3),
            data: Default::default(),
            armed_at: now,
            armed_by_event: "e1".into(),
            stay: None,
        })
        .await
        .unwrap();
    let cookie = rig.login().await;
    let page = rig.get_cookie("/threads/t-42", &cookie).await;
    assert!(page.contains(r#"class="follow-up""#), "{page}");
    assert!(page.contains(r#"class="cancel""#));
    let action = "/threads/t-42/follow-ups/check%20in/cancel";
    assert!(page.contains(&format!(r#"action="{action}""#)), "{page}");
    let csrf = csrf_of(&page);

    for forged in [
        None,
        Some("0123"),
        Some(csrf_of(&rig.get_bearer("/playground").await.1).as_str()),
    ] {
        let mut req = rig.http.post(rig.url(action)).header(COOKIE, &cookie);
        if let Some(f) = forged {
            req = req.form(&[("csrf", f)]);
        } else {
            req = req.form(&[("other", "x")]);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{forged:?}");
    }
    assert!(
        store.get("t-42", "check in").await.unwrap().is_some(),
        "still armed"
    );

    let resp = rig
        .http
        .post(rig.url(action))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[LOCATION], "/threads/t-42");
    assert!(
        store.get("t-42", "check in").await.unwrap().is_none(),
        "gone"
    );
    assert!(
        store.list().await.unwrap().is_empty(),
        "follow-ups list agrees"
    );
    let page = rig.get_cookie("/threads/t-42", &cookie).await;
    assert!(!page.contains(r#"class="follow-up""#));
    // The cancel is on the record, and a second one is a clear 404.
    assert!(page.contains("cancelled check in"), "{page}");
    let resp = rig
        .http
        .post(rig.url(action))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// A record stored between the page render and the stream's connection is not lost: the
/// page's `data-live` URL starts after the newest record it showed, and events carry ids.
#[tokio::test]
async fn the_live_timeline_starts_after_the_page_and_loses_nothing() {
    use concierge::store::audit::{AuditLog, AuditRecord, Outcome};
    let rig = rig(Some(TOKEN)).await;
    let (status, page) = rig.get_bearer("/timeline").await;
    assert_eq!(status, StatusCode::OK);
    let attr = r#"data-live=""#;
    let at = page.find(attr).expect("data-live") + attr.len();
    let live_url = page[at..at + page[at..].find('"').unwrap()].replace("&amp;", "&");
    assert!(live_url.contains("after="), "{live_url}");
    // An older page is history: it gets no live rows on top.
    let (status, older) = rig.get_bearer("/timeline?before=1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        older.contains(r#"id="timeline""#) && !older.contains("data-live"),
        "{older}"
    );
    let mut record = AuditRecord::standalone("console-gap-1", Outcome::Executed);
    record.thread_id = Some("t-gap".into());
    AuditLog::new(rig.infra.js.clone(), &rig.config.nats.prefix)
        .record(&record)
        .await
        .unwrap();
    let mut live = rig
        .http
        .get(rig.url(&live_url))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !seen.contains("/threads/t-gap") {
        let chunk = tokio::time::timeout_at(deadline, live.chunk())
            .await
            .unwrap_or_else(|_| panic!("the record stored before connecting, got {seen}"))
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("id: "), "{seen}");
}

#[tokio::test]
async fn the_timeline_shows_the_reply_text_live_and_on_the_page() {
    let mut rig = rig(Some(TOKEN)).await;
    let _worker = rig.start_worker().await;
    // Subscribe to the live rows first.
    let mut live = rig
        .http
        .get(rig.url("/timeline/stream"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    assert!(live.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let thread = rig.guest_writes("hi! what's the wifi?").await;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while !seen.contains("Wifi: CasaAzul / sardinhas") {
        let chunk = tokio::time::timeout_at(deadline, live.chunk())
            .await
            .expect("a live row with the reply within 3 s")
            .unwrap()
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: record"), "{seen}");
    assert!(seen.contains(r#"class="reply-text""#), "{seen}");
    assert!(seen.contains(&format!("/threads/{thread}")), "{seen}");

    let (status, page) = rig.get_bearer("/timeline").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"<table id="timeline""#), "{page}");
    assert!(page.contains(r#"class="record""#));
    assert!(page.contains("Wifi: CasaAzul / sardinhas"));
    // Filters narrow it down.
    let (_, page) = rig.get_bearer("/timeline?outcome=failed").await;
    assert!(!page.contains("Wifi: CasaAzul"), "{page}");
    let (_, page) = rig.get_bearer(&format!("/timeline?thread={thread}")).await;
    assert!(page.contains("Wifi: CasaAzul"));
    let (status, _) = rig.get_bearer("/timeline?outcome=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn guest_html_is_escaped_and_never_in_a_url() {
    let mut rig = rig(Some(TOKEN)).await;
    let _worker = rig.start_worker().await;
    let evil = "<script>alert('x')</script> echo please";
    let thread = rig.guest_writes(evil).await;
    let audit_js = rig.infra.js.clone();
    common::eventually(
        "the echo reply is recorded",
        Duration::from_secs(10),
        || {
            let js = audit_js.clone();
            async move {
                let records = concierge::store::audit::query(&js, "concierge", &Default::default())
                    .await
                    .unwrap();
                records
                    .iter()
                    .any(|r| r.text.as_deref().is_some_and(|t| t.contains("You wrote")))
            }
        },
    )
    .await;
    let cookie = rig.login().await;
    for path in [format!("/threads/{thread}"), "/timeline".to_string()] {
        let page = rig.get_cookie(&path, &cookie).await;
        assert!(!page.contains("<script>alert"), "{path}: {page}");
        assert!(
            page.contains("&lt;script&gt;alert"),
            "{path}: escaped text shown"
        );
    }
    // The board shows the waiting guest (reply_wait 0 would be needed); every URL of every
    // page carries ids only.
    for path in ["/", "/timeline", "/rules", "/playground", "/health"]
        .iter()
        .map(|p| p.to_string())
        .chain([format!("/threads/{thread}")])
    {
        let page = rig.get_cookie(&path, &cookie).await;
        for url in urls_of(&page) {
            assert!(
                !url.contains("script") && !url.contains("echo") && !url.contains(TOKEN),
                "{path}: {url}"
            );
        }
        assert!(!page.contains(TOKEN), "{path}");
    }
}

#[tokio::test]
async fn the_playground_plans_dry_through_the_workers_rules() {
    let rig = rig(Some(TOKEN)).await;
    let cookie = rig.login().await;
    let page = rig.get_cookie("/playground", &cookie).await;
    for hook in [
        r#"<form class="stacked" id="playground""#,
        r#"<select name="property""#,
        r#"<select name="channel""#,
        r#"<textarea name="message""#,
    ] {
        assert!(page.contains(hook), "{hook}: {page}");
    }
    let csrf = csrf_of(&page);
    let post = |form: Vec<(&'static str, String)>| {
        rig.http
            .post(rig.url("/playground"))
            .header(COOKIE, &cookie)
            .form(&form)
            .send()
    };
    let resp = post(vec![("message", "what's the wifi?".into())])
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let resp = post(vec![
        ("csrf", csrf.clone()),
        ("property", PROP.into()),
        ("channel", "booking_com".into()),
        ("message", "what's the wifi?".into()),
    ])
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.unwrap();
    assert!(page.contains(r#"class="plan-step""#), "{page}");
    // The reading of the message that the rules decided on.
    assert!(
        page.contains(r#"<div class="understood" data-act="question">Read as: "#),
        "{page}"
    );
    assert!(
        page.contains(r#"class="rendered">Wifi: CasaAzul / sardinhas<"#),
        "{page}"
    );
    // Nothing was sent.
    assert!(rig.sim.sim.sent_by_api().is_empty());
    // A broken event JSON is a clear message, not a failure.
    let resp = post(vec![("csrf", csrf.clone()), ("event", "{".into())])
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("not a valid event"));
    let resp = rig
        .http
        .post(rig.url("/playground/replay"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.text().await.unwrap().contains("events replayed"));
}

#[tokio::test]
async fn the_rules_and_health_pages_show_the_running_state() {
    let rig = rig(Some(TOKEN)).await;
    // A worker rejected a broken file (and some unrelated records came after it).
    let log = concierge::store::audit::AuditLog::new(rig.infra.js.clone(), "concierge");
    let rejected = concierge::store::audit::AuditRecord::reload_rejected(
        Path::new("rules/20_broken.rhai"),
        "rules/20_broken.rhai:3: syntax error: expecting ')'".into(),
        Utc::now(),
    );
    log.record(&rejected).await.unwrap();
    for i in 0..50 {
        let mut r = concierge::store::audit::AuditRecord::standalone(
            format!("x{i}"),
            concierge::store::audit::Outcome::Failed,
        );
        r.rule = Some("10_faq".into());
        r.thread_id = Some("t-9".into());
        r.property_id = Some(PROP.into());
        r.error = Some("channex said no".into());
        log.record(&r).await.unwrap();
    }
    let (status, page) = rig.get_bearer("/rules").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"data-rule="10_faq""#), "{page}");
    assert!(
        page.contains("rules/20_broken.rhai:3: syntax error"),
        "{page}"
    );
    assert!(page.contains("channex said no"), "last errors");
    assert!(page.contains("<td>50</td>"), "50 failed in 24 h: {page}");
    assert!(
        page.contains("wifi") && page.contains("echo"),
        "templates listed"
    );
    // Two timers armed, one cancelled: the health page counts the one still pending.
    let store = FollowUps::new(rig.infra.followups.clone());
    let now = Utc::now();
    for name in ["first", "second"] {
        store
            .arm(&FollowUpTimer {
                thread_id: "t-7".into(),
                booking_id: None,
                property_id: PROP.into(),
                name: name.into(),
                due_at: now + chrono::Duration::hours(3),
                data: Default::default(),
                armed_at: now,
                armed_by_event: "e1".into(),
                stay: None,
            })
            .await
            .unwrap();
    }
    assert!(store.cancel("t-7", "first").await.unwrap());
    let (status, page) = rig.get_bearer("/health").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains(r#"<div class="value">1</div><div class="label">follow-up timers armed"#),
        "one timer pending: {page}"
    );
    assert!(page.contains("connected"), "{page}");
    assert!(page.contains("Channex calls in the last minute"));
    assert!(page.contains(r#"id="leases""#));
}

#[tokio::test]
async fn audit_pages_are_read_backwards_from_the_end_with_a_bound() {
    use concierge::store::audit::{latest, AuditFilter, AuditLog, AuditRecord, Outcome};
    let (_nats, infra, _cfg) = common::nats_infra().await;
    let log = AuditLog::new(infra.js.clone(), "concierge");
    let records: Vec<AuditRecord> = (0..350)
        .map(|i| {
            let mut r = AuditRecord::standalone(format!("r{i}"), Outcome::Executed);
            r.property_id = Some("p1".into());
            r.thread_id = Some(if i % 10 == 0 { "rare" } else { "common" }.into());
            r
        })
        .collect();
    for chunk in records.chunks(100) {
        for result in log.record_all(chunk).await {
            result.unwrap();
        }
    }
    let all = AuditFilter::default();
    let page = latest(&infra.js, "concierge", &all, None, 100, 20_000)
        .await
        .unwrap();
    let ids: Vec<&str> = page.records.iter().map(|(_, r)| r.id.as_str()).collect();
    assert_eq!(ids.len(), 100);
    assert_eq!(ids[0], "r349", "newest first");
    assert_eq!(ids[99], "r250");
    let older = page.older.expect("more to read");
    let page2 = latest(&infra.js, "concierge", &all, Some(older), 100, 20_000)
        .await
        .unwrap();
    assert_eq!(page2.records[0].1.id, "r249");
    assert_eq!(page2.records.len(), 100);
    // A narrow filter (server-side subject) still fills its page, newest first.
    let rare = AuditFilter {
        thread_id: Some("rare".into()),
        ..Default::default()
    };
    let page = latest(&infra.js, "concierge", &rare, None, 20, 20_000)
        .await
        .unwrap();
    let ids: Vec<&str> = page.records.iter().map(|(_, r)| r.id.as_str()).collect();
    assert_eq!(ids.len(), 20);
    assert_eq!(ids[..3], ["r340", "r330", "r320"]);
    // The bound: a read never scans more than asked, and says where to go on.
    let page = latest(&infra.js, "concierge", &all, None, 1000, 256)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 256);
    assert!(page.older.is_some());
    // The last page has no cursor.
    let page = latest(&infra.js, "concierge", &all, Some(50), 100, 20_000)
        .await
        .unwrap();
    assert_eq!(page.records.len(), 49);
    assert_eq!(page.older, None);
}

#[tokio::test]
async fn concierge_run_says_once_that_the_console_is_off_and_never_logs_the_token() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let (_nats, _infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("concierge.toml");
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(
        &config,
        format!(
            "[channex]\nbase_url = \"{}\"\napi_key = \"{}\"\n[nats]\nurl = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n",
            sim.base_url, common::SIM_KEY, nats_cfg.url
        ),
    )
    .unwrap();
    for token in [None, Some(TOKEN)] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_concierge"));
        cmd.args(["--config", config.to_str().unwrap(), "run"])
            .env_remove("CONCIERGE_CONFIG")
            .env_remove("CONCIERGE_CONSOLE_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.env("CONCIERGE_CONSOLE_TOKEN", t);
        }
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for out in [
            Box::new(stderr) as Box<dyn std::io::Read + Send>,
            Box::new(stdout),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        let mut log = Vec::new();
        while !log.iter().any(|l: &String| l.contains("http:")) {
            match rx.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => log.push(line),
                Err(_) => break,
            }
        }
        child.kill().unwrap();
        let _ = child.wait();
        let off = log
            .iter()
            .filter(|l| l.contains("console off: set [console] token or CONCIERGE_CONSOLE_TOKEN"))
            .count();
        assert_eq!(off, usize::from(token.is_none()), "{log:#?}");
        assert!(log.iter().all(|l| !l.contains(TOKEN)), "{log:#?}");
    }
}
