//! The web console over real HTTP: a `concierge` listener with the console mounted, a
//! private nats-server, the Channex simulator, the real poller (and worker where a test
//! needs replies), requests with reqwest.
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use concierge::config::{Config, Secret};
use concierge::roles::poller::Poller;
use concierge::sim::SimServer;
use concierge::store::nats::Infra;
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
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["late"]) {
    follow_up("check late arrival", now_plus_hours(5), #{});
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
