//! Issue 22: the HTTP listener and the console under a misbehaving client, over raw TCP and
//! real HTTP (a `concierge` listener with the console, a private nats-server, the Channex
//! simulator, the real poller):
//! 1. a flood of live timeline streams cannot starve `/healthz`, the webhook or the console
//!    (streams bounded per session, per address and in total; a reserve of connections);
//! 2. logout ends the session for every copy of the cookie, on every replica, and "end all
//!    sessions" (`concierge console revoke-sessions`) ends them all;
//! 3. guest text cannot disguise itself (controls, bidi overrides) and one field cannot
//!    flood a page (a 200 KiB title);
//! 4. an id that is not a Channex id never reaches a Channex URL (`GET /threads/..`);
//! 5. every 429 says `Retry-After`.
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use concierge::config::{Config, Secret};
use concierge::http::{Limits, WEBHOOK_SECRET_HEADER};
use concierge::roles::console::auth::issue_session;
use concierge::roles::poller::Poller;
use concierge::sim::SimServer;
use concierge::store::nats::Infra;
use reqwest::header::{AUTHORIZATION, COOKIE, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

const PROP: &str = "prop-h";
const TOKEN: &str = "console-hardening-token-91c2";
const HOOK_SECRET: &str = "hook-secret";

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
    addr: SocketAddr,
    http: reqwest::Client,
    _shutdown: Vec<watch::Sender<bool>>,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    rig_with(Limits::default()).await
}

async fn rig_with(limits: Limits) -> Rig {
    let (nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Verde", true);
    let mut config = common::config(&sim, &nats_cfg, &[PROP]);
    let dir = tempfile::tempdir().unwrap();
    for sub in ["rules", "templates"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
    }
    config.rules.dir = dir.path().join("rules");
    config.rules.templates_dir = dir.path().join("templates");
    config.console.token = Secret::new(TOKEN);
    config.console.reply_wait = Duration::ZERO;
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = Poller::new(channex, &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.unwrap(); // baseline
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap();
    let mut rig = Rig {
        _nats: nats,
        infra,
        sim,
        config,
        poller,
        addr: "127.0.0.1:1".parse().unwrap(),
        http,
        _shutdown: Vec::new(),
        _dir: dir,
    };
    rig.addr = rig.listener(limits).await;
    rig
}

impl Rig {
    /// Another listener with its own console on the same NATS and simulator: a replica.
    async fn listener(&mut self, limits: Limits) -> SocketAddr {
        let channex = concierge::wiring::channex_client(&self.config).unwrap();
        let console = concierge::wiring::console(
            &self.config,
            &self.infra,
            channex,
            None,
            Default::default(),
        );
        let (tx, rx) = watch::channel(false);
        let router = concierge::http::router_with_console(
            Arc::new(AlwaysReady),
            Secret::new(HOOK_SECRET),
            None,
            limits,
            console,
        );
        let addr = concierge::http::serve_with("127.0.0.1:0", router, rx, limits)
            .await
            .unwrap();
        self._shutdown.push(tx);
        addr
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
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

    async fn get_at(&self, addr: SocketAddr, path: &str, cookie: &str) -> (StatusCode, String) {
        let resp = self
            .http
            .get(format!("http://{addr}{path}"))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }
}

/// The status and headers of a raw HTTP/1.1 answer.
#[derive(Debug)]
struct Head {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Connects (from `from` when given: any 127.0.0.0/8 address works on Linux), writes
/// `request` and reads the answer's head; `None` when the server closed or reset first.
async fn raw(addr: SocketAddr, from: Option<IpAddr>, request: &str) -> (Option<Head>, TcpStream) {
    let socket = TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(ip, 0)).unwrap();
    }
    let mut stream = socket.connect(addr).await.unwrap();
    if stream.write_all(request.as_bytes()).await.is_err() {
        return (None, stream);
    }
    let head = read_head(&mut stream, Duration::from_secs(3)).await;
    (head, stream)
}

async fn read_head(stream: &mut TcpStream, limit: Duration) -> Option<Head> {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while !out.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    }
    let text = String::from_utf8_lossy(&out).to_string();
    let mut lines = text.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Some(Head { status, headers })
}

fn stream_request(cookie: &str) -> String {
    format!(
        "GET /timeline/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nCookie: {cookie}\r\n\r\n"
    )
}

fn loopback(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 1, (1 + i) as u8))
}

/// The status of a request answered within 2 s, or why not.
async fn answers(req: reqwest::RequestBuilder) -> Result<u16, String> {
    match req.timeout(Duration::from_secs(2)).send().await {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

/// Defect 1: 300 live streams (one session each, from 20 addresses) while `/healthz`, the
/// webhook and a console page must still answer. Before the fix the streams took all 256
/// connections and the probes were reset.
#[tokio::test]
async fn a_flood_of_live_streams_cannot_starve_health_checks_the_webhook_or_the_console() {
    let rig = rig().await;
    let token = Secret::new(TOKEN);
    let (mut open, mut refused, mut reset) = (Vec::new(), Vec::new(), 0usize);
    for i in 0..300 {
        let cookie = format!("concierge_session={}", issue_session(&token, Utc::now()));
        let (head, stream) = raw(rig.addr, Some(loopback(i % 20)), &stream_request(&cookie)).await;
        match head {
            Some(h) if h.status == 200 => open.push(stream),
            Some(h) => refused.push(h),
            None => reset += 1,
        }
    }
    let started = Instant::now();
    let health = answers(rig.http.get(rig.url("/healthz"))).await;
    let hook = rig
        .http
        .post(rig.url("/webhooks/channex"))
        .header(WEBHOOK_SECRET_HEADER, HOOK_SECRET)
        .body(format!(r#"{{"property_id":"{PROP}"}}"#));
    let hook = answers(hook).await;
    let page = rig
        .http
        .get(rig.url("/rules"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"));
    let page = answers(page).await;
    let took = started.elapsed();
    assert_eq!(health, Ok(200), "/healthz with {} streams open", open.len());
    assert_eq!(
        hook,
        Ok(202),
        "the webhook with {} streams open",
        open.len()
    );
    assert_eq!(
        page,
        Ok(200),
        "a console page with {} streams open",
        open.len()
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    let bound = Limits::default().streams.total;
    assert_eq!(open.len(), bound, "the total bound holds ({reset} reset)");
    assert_eq!(reset, 0, "every refused stream gets an answer, not a reset");
    for h in &refused {
        assert_eq!(h.status, 503, "{h:?}");
        assert!(h.header("retry-after").is_some(), "{h:?}");
    }
    println!(
        "300 streams: {} open, {} refused (503 + Retry-After); probes answered in {took:?}",
        open.len(),
        refused.len()
    );
}

/// Defects 1 and 5: one session (or one address) holds a share of the streams; past it
/// `429` with `Retry-After`, and the place comes back when a stream closes.
#[tokio::test]
async fn live_streams_are_bounded_per_session_and_per_address() {
    let rig = rig().await;
    let limits = Limits::default().streams;
    let cookie = rig.login().await;
    let mut held = Vec::new();
    for _ in 0..limits.per_session {
        let (head, stream) = raw(rig.addr, None, &stream_request(&cookie)).await;
        assert_eq!(head.map(|h| h.status), Some(200));
        held.push(stream);
    }
    let (head, _) = raw(rig.addr, None, &stream_request(&cookie)).await;
    let head = head.expect("an answer");
    assert_eq!(head.status, 429, "{head:?}");
    assert_eq!(head.header("retry-after"), Some("10"), "{head:?}");
    assert_eq!(head.header("connection"), Some("close"), "{head:?}");
    // A closed stream gives its place back.
    drop(held.pop());
    let mut again = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while again.is_none() && Instant::now() < deadline {
        let (head, stream) = raw(rig.addr, None, &stream_request(&cookie)).await;
        if head.is_some_and(|h| h.status == 200) {
            again = Some(stream);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert!(again.is_some(), "the closed stream's place was given back");
    // Other sessions from the same address: up to the per-address bound.
    let token = Secret::new(TOKEN);
    let from = Some(loopback(77));
    let mut statuses = Vec::new();
    for _ in 0..limits.per_address + 2 {
        let other = format!("concierge_session={}", issue_session(&token, Utc::now()));
        let (head, stream) = raw(rig.addr, from, &stream_request(&other)).await;
        statuses.push(head.map(|h| h.status));
        held.push(stream);
    }
    assert!(
        statuses[..limits.per_address]
            .iter()
            .all(|s| *s == Some(200)),
        "{statuses:?}"
    );
    assert!(
        statuses[limits.per_address..]
            .iter()
            .all(|s| *s == Some(429)),
        "{statuses:?}"
    );
}

/// The reserve: with every general connection held, only the probes and the webhook are
/// served (anything else `503` with `Retry-After`), and past the cap connections close.
#[tokio::test]
async fn a_reserve_of_connections_serves_the_probes_and_the_webhook() {
    let limits = Limits {
        max_connections: 40,
        reserved_connections: 8,
        header_read_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let rig = rig_with(limits).await;
    let mut held = Vec::new();
    for _ in 0..32 {
        let mut s = TcpStream::connect(rig.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost:").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await; // all 32 accepted
    let (head, _) = raw(rig.addr, None, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(head.map(|h| h.status), Some(200));
    let hook = format!(
        "POST /webhooks/channex HTTP/1.1\r\nHost: x\r\n{WEBHOOK_SECRET_HEADER}: {HOOK_SECRET}\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    let (head, _) = raw(rig.addr, None, &hook).await;
    assert_eq!(head.map(|h| h.status), Some(202));
    let (head, _) = raw(rig.addr, None, "GET /login HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let head = head.expect("an answer");
    assert_eq!(head.status, 503, "{head:?}");
    assert_eq!(head.header("retry-after"), Some("1"), "{head:?}");
}

/// Defect 2: a copied cookie stops working once its session logged out, on this replica
/// and on another one (state in NATS, none in the process), and its live stream ends.
#[tokio::test]
async fn logout_ends_the_session_for_every_copy_of_the_cookie_on_every_replica() {
    let mut limits = Limits::default();
    limits.streams.recheck = Duration::from_millis(200);
    let mut rig = rig_with(limits).await;
    let replica = rig.listener(limits).await;
    let cookie = rig.login().await;
    let copy = cookie.clone();
    let (status, page) = rig.get_at(rig.addr, "/health", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        rig.get_at(replica, "/health", &copy).await.0,
        StatusCode::OK
    );
    let (head, mut live) = raw(replica, None, &stream_request(&copy)).await;
    assert_eq!(head.map(|h| h.status), Some(200));
    let at = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let resp = rig
        .http
        .post(rig.url("/logout"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    for addr in [rig.addr, replica] {
        let (status, _) = rig.get_at(addr, "/health", &copy).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{addr}: the copy is ended"
        );
    }
    // The copy's live stream on the replica closes within the recheck interval.
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(3);
    let ended = loop {
        match tokio::time::timeout_at(deadline.into(), live.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) if String::from_utf8_lossy(&buf[..n]).contains("0\r\n\r\n") => break true,
            Ok(Ok(_)) => continue,
            Err(_) => break false,
        }
    };
    assert!(ended, "the ended session's stream closes");
    // Logging in again works.
    let fresh = rig.login().await;
    assert_eq!(
        rig.get_at(replica, "/health", &fresh).await.0,
        StatusCode::OK
    );
}

/// Defect 2, "end all sessions" from the command line: every cookie issued before it is
/// refused, a login after it works.
#[tokio::test]
async fn revoke_sessions_on_the_command_line_ends_every_session() {
    let rig = rig().await;
    let first = rig.login().await;
    let second = rig.login().await;
    assert_eq!(
        rig.get_at(rig.addr, "/health", &second).await.0,
        StatusCode::OK
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("concierge.toml");
    std::fs::write(
        &config,
        format!("[nats]\nurl = \"{}\"\n", rig.config.nats.url),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args([
            "--config",
            config.to_str().unwrap(),
            "console",
            "revoke-sessions",
        ])
        .env_remove("CONCIERGE_CONFIG")
        .env_remove("NATS_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for cookie in [&first, &second] {
        assert_eq!(
            rig.get_at(rig.addr, "/health", cookie).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let fresh = rig.login().await;
    assert_eq!(
        rig.get_at(rig.addr, "/health", &fresh).await.0,
        StatusCode::OK
    );
}

/// The characters that must never reach a page as they are.
const DISGUISES: [char; 9] = [
    '\u{0}', '\u{1b}', '\u{7f}', '\u{85}', '\u{202E}', '\u{2066}', '\u{2069}', '\u{200F}',
    '\u{61C}',
];

fn disguised(page: &str) -> Vec<char> {
    DISGUISES
        .iter()
        .copied()
        .filter(|c| page.contains(*c))
        .collect()
}

/// Defect 3: control and bidi characters in guest names, titles and messages reach no page
/// as they are, and a 200 KiB title is cut with a visible ellipsis on the board.
#[tokio::test]
async fn guest_text_cannot_disguise_itself_or_flood_a_page() {
    let mut rig = rig().await;
    let long_title = format!("Stay {}", "W".repeat(200 * 1024));
    let thread = rig
        .sim
        .sim
        .open_thread(PROP, "BookingCom", &long_title, true);
    rig.sim.sim.guest_message(
        &thread,
        "invoice\u{202E}fdp.exe\u{0} \u{1b}[2J\u{7f}\u{85} please \u{2066}check\u{2069}\u{200F}\u{61C}",
    );
    let deadline = Utc::now() + chrono::Duration::hours(5);
    let (inquiry, _) = rig.sim.sim.add_inquiry(
        PROP,
        "Ana\u{202E}nimda\u{0}\u{1b}",
        deadline,
        "2031-12-02",
        "2031-12-03",
        2,
        "50.00",
        "GBP",
    );
    rig.poller.poll_once(Some(PROP)).await.unwrap();
    let cookie = rig.login().await;
    let (status, board) = rig.get_at(rig.addr, "/", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        board.contains(&format!(r#"data-thread="{inquiry}""#)),
        "the inquiry shows"
    );
    assert!(
        board.contains(&format!(r#"data-thread="{thread}""#)),
        "the waiting guest shows"
    );
    assert_eq!(disguised(&board), Vec::<char>::new(), "the board");
    assert!(
        board.len() < 64 * 1024,
        "a 200 KiB title is not printed in full: {} bytes",
        board.len()
    );
    assert!(
        board.contains("WWW…"),
        "the cut title ends in a visible ellipsis"
    );
    assert!(board.contains("Ananimda"), "the name in its logical order");
    let (status, page) = rig
        .get_at(rig.addr, &format!("/threads/{thread}"), &cookie)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(disguised(&page), Vec::<char>::new(), "the thread page");
    assert!(
        page.contains("invoicefdp.exe\u{FFFD}"),
        "shown in logical order, NUL visible"
    );
}

/// Defect 4: an authenticated `GET /threads/..` (raw: an HTTP client would normalise the
/// path) is refused before Channex is asked; before the fix concierge requested
/// `/api/v1/message_threads/messages` from the simulator.
#[tokio::test]
async fn a_path_that_is_not_a_channex_id_never_reaches_channex() {
    let rig = rig().await;
    rig.sim.sim.clear_requests();
    let mut statuses = Vec::new();
    for id in ["..", ".", "%2E%2E", "a.b", "t%2F1"] {
        let request = format!(
            "GET /threads/{id} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        );
        let (head, _) = raw(rig.addr, None, &request).await;
        statuses.push((id, head.map(|h| h.status)));
    }
    let reached: Vec<String> = rig.sim.sim.requests().into_iter().map(|r| r.path).collect();
    assert!(
        reached.is_empty(),
        "nothing reached the simulator: {reached:?}"
    );
    for (id, status) in statuses {
        assert_eq!(status, Some(400), "{id}");
    }
    // A real id still reads the thread.
    let (head, _) = raw(
        rig.addr,
        None,
        &format!("GET /threads/t-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"),
    )
    .await;
    assert_eq!(head.map(|h| h.status), Some(200));
    let reached: Vec<String> = rig.sim.sim.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(reached, ["/api/v1/message_threads/t-1/messages"]);
}

/// Defect 4 on the command line: an id argument that is not a Channex id is a usage error
/// (refused before any connection: the config points at a port nothing listens on, so even
/// a binary without the check reaches no NATS).
#[test]
fn id_arguments_on_the_command_line_follow_the_channex_rule() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("concierge.toml");
    std::fs::write(&config, "[nats]\nurl = \"nats://127.0.0.1:1\"\n").unwrap();
    for args in [
        &["purge", "--thread", ".."][..],
        &["audit", "--thread", "a.b"],
        &["audit", "explain", "t*"],
        &["follow-ups", "cancel", "booking:..", "x"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_concierge"))
            .args(["--config", config.to_str().unwrap()])
            .args(args)
            .env_remove("CONCIERGE_CONFIG")
            .env_remove("NATS_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("not a Channex id"), "{args:?}: {stderr}");
    }
}

/// Defect 5: the login limit's 429 (the form and bearer guesses) says when to come back.
#[tokio::test]
async fn every_429_of_the_login_limit_carries_retry_after() {
    let rig = rig().await;
    let mut last = None;
    for _ in 0..6 {
        let resp = rig
            .http
            .post(rig.url("/login"))
            .form(&[("token", "guess")])
            .send()
            .await
            .unwrap();
        last = Some((resp.status(), resp.headers().get("retry-after").cloned()));
    }
    let (status, retry_after) = last.unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        retry_after.as_ref().and_then(|v| v.to_str().ok()),
        Some("60")
    );
    let resp = rig
        .http
        .get(rig.url("/health"))
        .header(AUTHORIZATION, "Bearer guess")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "60");
}

/// Defect 2, the console's own button: `POST /sessions/end-all` (CSRF-checked, on the
/// health page) ends every session, this one included.
#[tokio::test]
async fn the_end_every_session_button_ends_every_session() {
    let rig = rig().await;
    let other = rig.login().await;
    let cookie = rig.login().await;
    let (status, page) = rig.get_at(rig.addr, "/health", &cookie).await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains(r#"action="/sessions/end-all""#), "{page}");
    let at = page.find(r#"name="csrf" value=""#).expect("a CSRF field") + 19;
    let csrf = &page[at..at + page[at..].find('"').unwrap()];
    let forged = rig
        .http
        .post(rig.url("/sessions/end-all"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", "0123")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        rig.get_at(rig.addr, "/health", &other).await.0,
        StatusCode::OK
    );
    let resp = rig
        .http
        .post(rig.url("/sessions/end-all"))
        .header(COOKIE, &cookie)
        .form(&[("csrf", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    for c in [&cookie, &other] {
        assert_eq!(
            rig.get_at(rig.addr, "/health", c).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}

/// Defect 3 in alert texts: what a sink delivers (here the NATS sink) is the sanitised
/// text, capped.
#[tokio::test]
async fn alert_texts_cannot_disguise_themselves() {
    use concierge::config::AlertsConfig;
    use concierge::roles::executor::alerts::{Alert, AlertSinks, ALERT_TEXT_CHARS};
    use futures::StreamExt;
    let (_server, infra, _) = common::nats_infra().await;
    let mut sub = infra.client.subscribe("concierge.alerts.>").await.unwrap();
    infra.client.flush().await.unwrap();
    let cfg = AlertsConfig {
        nats: true,
        log: false,
        max_attempts: 1,
        ..AlertsConfig::default()
    };
    let sinks = AlertSinks::new(&cfg, Some((infra.client.clone(), "concierge".into())));
    let text = format!(
        "Inquiry from Ana\u{202E}nimda\u{0}\u{1b}[2J unanswered\n{}",
        "x".repeat(10_000)
    );
    let alert = Alert {
        property_id: "p1".into(),
        thread_id: Some("t1".into()),
        text,
        event_id: "inquiry.received:t1:m1".into(),
        rule: "20-inquiry-deadline".into(),
        at: Utc::now(),
    };
    sinks.send(&alert).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .unwrap()
        .unwrap();
    let got: Alert = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(
        disguised(&got.text),
        Vec::<char>::new(),
        "{:?}",
        &got.text[..40]
    );
    assert!(got
        .text
        .starts_with("Inquiry from Ananimda\u{FFFD}\u{FFFD}[2J unanswered\n"));
    assert_eq!(got.text.chars().count(), ALERT_TEXT_CHARS);
    assert!(got.text.ends_with('…'));
}
