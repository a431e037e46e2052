//! The web console in a real browser (issue 14): headless Debian chromium through
//! chromedriver, against the real `concierge run` binary (its HTTP listener serves the
//! console), a private nats-server and the Channex simulator.
//!
//! One stack and one browser session for the whole binary (starting chromium costs seconds
//! on a loaded two-core machine), so the points are steps of one test, run in order, each
//! an `async fn` named after what it proves; a failure names the step. Every page is
//! screenshotted under `target/console/<page>.png` (`$CARGO_TARGET_DIR/console` when set).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`: `make ensure-browser` installs
//! them (a missing browser fails the test with that hint; nothing is skipped).
#[path = "common/browser.rs"]
mod browser;
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use browser::{screenshot, wait_css, PATIENCE};
use chrono::Utc;
use concierge::sim::SimServer;
use concierge::store::nats::PrivateNatsServer;
use fantoccini::{Client, Locator};

const PROPERTY: &str = "casa-azul";
const WIFI_PASSWORD: &str = "sardinhas2024";
const SCRIPT: &str = "<script>alert(1)</script>";

/// A `concierge run` child process; killed (and reaped) when dropped.
struct Service {
    child: Child,
    log: PathBuf,
}

impl Service {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// NATS, the simulator, the service with the console on, and the seeded conversations.
struct Stack {
    _nats: PrivateNatsServer,
    sim: SimServer,
    dir: tempfile::TempDir,
    service: Service,
    /// `http://127.0.0.1:<port>` of the service's listener.
    base: String,
    token: String,
    /// An Airbnb inquiry due in 5 h: two pending alert timers (2 h and 30 min before).
    inquiry: String,
    /// An Airbnb inquiry due in 90 min: urgent on the board.
    urgent_inquiry: String,
}

impl Stack {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("concierge.toml")
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A Booking.com guest unanswered for 13 h (over the default 12 h `reply_wait`): the
    /// message is moved back, the thread stays freshly updated, so the poller sees it.
    fn waiting_guest(&self) -> String {
        let sim = &self.sim.sim;
        let waiting = sim.open_thread(PROPERTY, "BookingCom", "Hans Keller", true);
        sim.guest_message(&waiting, "We will arrive late, around 23:30. See you then.");
        sim.backdate_thread(&waiting, chrono::Duration::hours(13));
        sim.set_thread_updated_at(&waiting, Utc::now());
        waiting
    }
}

fn repo_dir(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .display()
        .to_string()
}

/// The service's configuration: the example rules, Casa Azul's facts, fast timings, the
/// HTTP listener on `port` and the console token.
fn config_toml(sim: &SimServer, nats_url: &str, port: u16, token: &str) -> String {
    // Quiet hours (an example rule) away from now, so replies are immediate.
    let hour = (Utc::now().with_timezone(&chrono_tz::Europe::Lisbon))
        .format("%H")
        .to_string()
        .parse::<u32>()
        .unwrap_or(0);
    let quiet_start = format!("{:02}:00", (hour + 6) % 24);
    let quiet_end = format!("{:02}:00", (hour + 8) % 24);
    format!(
        r#"
[channex]
base_url = "{base}"
api_key = "{key}"
property_ids = ["{PROPERTY}"]
poll_interval = "200ms"
requests_per_minute = 60000
timeout = "2s"

[nats]
url = "{nats_url}"

[rules]
dir = "{rules}"
templates_dir = "{templates}"

[worker]
ack_wait = "5s"
retry_delay = "200ms"

[poller]
lease_ttl = "1s"

[alerts]
log = false

[http]
listen = "127.0.0.1:{port}"

[console]
token = "{token}"

[properties."{PROPERTY}"]
name = "Casa Azul"
timezone = "Europe/Lisbon"
vars = {{ wifi_name = "CasaAzul-Guest", wifi_password = "{WIFI_PASSWORD}", checkin_time = "15:00", checkout_time = "11:00", parking = "Free street parking on Rua das Flores.", inquiry_alert_before_hours = 2, close_after_days = 14, quiet_start = "{quiet_start}", quiet_end = "{quiet_end}", delayed_reply_minutes = 60 }}
"#,
        base = sim.base_url,
        key = common::SIM_KEY,
        rules = repo_dir("rules"),
        templates = repo_dir("templates"),
    )
}

/// An Airbnb inquiry from `guest` whose reply deadline is `due_in` from now.
fn seed_inquiry(sim: &SimServer, guest: &str, due_in: chrono::Duration) -> String {
    let day = |d: i64| {
        (Utc::now() + chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string()
    };
    let (thread, _) = sim.sim.add_inquiry(
        PROPERTY,
        guest,
        Utc::now() + due_in,
        &day(10),
        &day(13),
        2,
        "420.00",
        "EUR",
    );
    thread
}

/// Starts everything; the inquiries exist before the service, which backfills them.
async fn start_stack() -> Stack {
    let nats = common::nats_server();
    let sim = common::sim().await;
    sim.sim.add_property(PROPERTY, "Casa Azul", true);
    let inquiry = seed_inquiry(&sim, "Andrew Park", chrono::Duration::hours(5));
    let urgent_inquiry = seed_inquiry(&sim, "Léa Martin", chrono::Duration::minutes(90));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = concierge::store::nats::free_port().expect("a free port for the console");
    let token = format!("console-{}", uuid::Uuid::new_v4().simple());
    let config = dir.path().join("concierge.toml");
    std::fs::write(&config, config_toml(&sim, &nats.url, port, &token))
        .expect("writing the config");
    let log = dir.path().join("concierge.log");
    let service = spawn_service(&config, &log);
    let mut stack = Stack {
        _nats: nats,
        sim,
        dir,
        service,
        base: format!("http://127.0.0.1:{port}"),
        token,
        inquiry,
        urgent_inquiry,
    };
    wait_ready(&mut stack).await;
    stack
}

fn spawn_service(config: &Path, log: &Path) -> Service {
    let out = std::fs::File::create(log).expect("creating the service log");
    let err = out.try_clone().expect("cloning the log handle");
    let child = Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args(["--config", &config.display().to_string()])
        .args(["run", "--backfill", "1h"])
        .env_remove("CONCIERGE_CONFIG")
        .env_remove("CONCIERGE_CONSOLE_TOKEN")
        .env_remove("NATS_URL")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("starting concierge run");
    Service {
        child,
        log: log.to_path_buf(),
    }
}

/// `/readyz` answers 200 (NATS connected, rules loaded), within 30 s; fails at once with
/// the service's log when it exits.
async fn wait_ready(stack: &mut Stack) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(stack.url("/readyz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if let Ok(Some(status)) = stack.service.child.try_wait() {
            panic!(
                "concierge run exited ({status}) before it was ready; its log:\n{}",
                stack.service.log_tail()
            );
        }
        assert!(
            Instant::now() < deadline,
            "concierge run not ready within 30 s; its log:\n{}",
            stack.service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 150 ms until it holds or `limit` passes (then panics with `what`).
async fn until<F, Fut>(stack: &Stack, what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for: {what}\nservice log:\n{}",
            stack.service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Texts of every element matching `css` on the current page.
async fn texts(client: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
        out.push(e.text().await.unwrap_or_default());
    }
    out
}

/// The `attr` of every element matching `css` on the current page, in document order.
async fn attrs(client: &Client, css: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in client.find_all(Locator::Css(css)).await.unwrap_or_default() {
        out.push(e.attr(attr).await.ok().flatten().unwrap_or_default());
    }
    out
}

async fn path_of(client: &Client) -> String {
    client
        .current_url()
        .await
        .map(|u| u.path().to_string())
        .unwrap_or_default()
}

/// Plain HTTP: no credentials or a wrong Bearer token → 401 (or 303 to /login for an HTML
/// GET), nothing of the page served; the right Bearer token → 200; a POST without → 401.
async fn plain_http_needs_the_token(stack: &Stack, pages: &[String]) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("an HTTP client");
    for (i, page) in pages.iter().enumerate() {
        // Wrong Bearer tokens count against the login limit (5 a minute): two only.
        let wrong = (i < 2).then_some("Bearer wrong-token");
        for auth in [None, wrong].into_iter().filter(|a| i < 2 || a.is_none()) {
            let mut req = http.get(stack.url(page));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let r = req.send().await.expect("GET a console page");
            let status = r.status().as_u16();
            let location = r
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
                .unwrap_or("")
                .to_string();
            assert!(
                status == 401 || (status == 303 && location.starts_with("/login")),
                "{page} with {auth:?}: {status} {location}"
            );
        }
        let ok = http
            .get(stack.url(page))
            .bearer_auth(&stack.token)
            .send()
            .await
            .expect("GET with the token");
        assert_eq!(ok.status().as_u16(), 200, "{page} with the Bearer token");
    }
    let post = http
        .post(stack.url("/playground"))
        .form(&[("message", "What's the wifi password?")])
        .send()
        .await
        .expect("POST without a session");
    assert_eq!(
        post.status().as_u16(),
        401,
        "POST /playground without the token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let started = Instant::now();
    let stack = start_stack().await;
    let driver = browser::chromedriver().await;
    let client = browser::headless(&driver).await;
    eprintln!(
        "stack and browser up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let steps = Steps {
        stack: &stack,
        client: &client,
    };
    steps.every_page_without_the_token_is_login_or_401().await;
    steps.log_in_through_the_form().await;
    steps
        .deadlines_board_shows_inquiries_with_countdowns_and_waiting_guests()
        .await;
    steps.wifi_question_reaches_the_timeline_within_3s().await;
    steps.guest_script_renders_as_text().await;
    steps.cancel_removes_a_follow_up_and_the_cli_agrees().await;
    steps.playground_renders_the_wifi_reply().await;
    steps.rules_and_health_pages_render().await;
    let _ = client.close().await;
    eprintln!(
        "console browser test done in {:.1}s; screenshots in {}",
        started.elapsed().as_secs_f64(),
        browser::screenshot_dir().display()
    );
}

struct Steps<'a> {
    stack: &'a Stack,
    client: &'a Client,
}

impl Steps<'_> {
    async fn goto(&self, path: &str) {
        self.client
            .goto(&self.stack.url(path))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    /// Reloads `path` until `css` matches (server-rendered pages, filled by the poller).
    async fn goto_until(&self, path: &str, css: &str, limit: Duration) {
        until(self.stack, &format!("{css} on {path}"), limit, || async {
            self.goto(path).await;
            self.client.find(Locator::Css(css)).await.is_ok()
        })
        .await;
    }

    async fn every_page_without_the_token_is_login_or_401(&self) {
        let t = Instant::now();
        let pages = [
            "/".to_string(),
            "/timeline".to_string(),
            format!("/threads/{}", self.stack.inquiry),
            "/rules".to_string(),
            "/playground".to_string(),
            "/health".to_string(),
        ];
        // The browser (no cookie yet) lands on the login form for every page.
        for page in &pages {
            self.goto(page).await;
            wait_css(self.client, "form#login input[name=token]").await;
            assert_eq!(
                path_of(self.client).await,
                "/login",
                "{page} without a session"
            );
        }
        screenshot(self.client, "login").await;
        plain_http_needs_the_token(self.stack, &pages).await;
        eprintln!(
            "step: no token → login/401 ({:.1}s)",
            t.elapsed().as_secs_f64()
        );
    }

    async fn log_in_through_the_form(&self) {
        let t = Instant::now();
        self.goto("/login").await;
        let input = wait_css(self.client, "form#login input[name=token]").await;
        input
            .send_keys(&self.stack.token)
            .await
            .expect("typing the token");
        let form = wait_css(self.client, "form#login").await;
        form.find(Locator::Css("button, input[type=submit]"))
            .await
            .expect("the login button")
            .click()
            .await
            .expect("clicking log in");
        wait_css(
            self.client,
            "nav a[href=\"/timeline\"], a[href=\"/timeline\"]",
        )
        .await;
        assert_eq!(path_of(self.client).await, "/", "after logging in");
        assert!(
            self.client.find(Locator::Css("form#login")).await.is_err(),
            "still on the login form after logging in"
        );
        for href in ["/", "/timeline", "/rules", "/playground", "/health"] {
            let css = format!("a[href=\"{href}\"]");
            assert!(
                self.client.find(Locator::Css(&css)).await.is_ok(),
                "the nav has no link to {href}"
            );
        }
        eprintln!("step: logged in ({:.1}s)", t.elapsed().as_secs_f64());
    }

    async fn deadlines_board_shows_inquiries_with_countdowns_and_waiting_guests(&self) {
        let t = Instant::now();
        let (calm, urgent) = (&self.stack.inquiry, &self.stack.urgent_inquiry);
        let waiting = self.stack.waiting_guest();
        let row = format!("tr.inquiry[data-thread=\"{calm}\"]");
        let waiting_row = format!("tr.waiting[data-thread=\"{waiting}\"]");
        self.goto_until("/", &waiting_row, PATIENCE).await;
        wait_css(self.client, &row).await;
        let urgent_row = format!("tr.inquiry[data-thread=\"{urgent}\"]");
        wait_css(self.client, &urgent_row).await;
        // Sorted by deadline: the 90-minute inquiry first.
        let order = attrs(self.client, "tr.inquiry", "data-thread").await;
        let pos = |id: &str| order.iter().position(|o| o == id);
        assert!(pos(urgent) < pos(calm), "board order {order:?}");
        self.countdown_ticks(&row).await;
        // Under 2 h is urgent (red); 5 h is not.
        let urgent_html = wait_css(self.client, &urgent_row).await.html(false).await;
        let calm_html = wait_css(self.client, &row).await.html(false).await;
        assert!(
            urgent_html.unwrap_or_default().contains("urgent"),
            "90 min row not urgent"
        );
        assert!(
            !calm_html.unwrap_or_default().contains("urgent"),
            "5 h row marked urgent"
        );
        screenshot(self.client, "deadlines").await;
        eprintln!("step: deadlines board ({:.1}s)", t.elapsed().as_secs_f64());
    }

    /// The countdown in `row` carries its RFC 3339 deadline and JavaScript ticks it.
    async fn countdown_ticks(&self, row: &str) {
        // The countdown carries its deadline and JavaScript ticks it every second.
        let countdown = wait_css(self.client, &format!("{row} .countdown")).await;
        let deadline = countdown.attr("data-deadline").await.ok().flatten();
        let deadline = deadline.expect("the countdown has data-deadline");
        assert!(
            chrono::DateTime::parse_from_rfc3339(&deadline).is_ok(),
            "data-deadline {deadline:?} is RFC 3339"
        );
        let first = countdown.text().await.unwrap_or_default();
        until(
            self.stack,
            "the countdown to tick",
            Duration::from_secs(5),
            || async {
                let now = countdown.text().await.unwrap_or_default();
                !now.is_empty() && now != first
            },
        )
        .await;
    }

    async fn wifi_question_reaches_the_timeline_within_3s(&self) {
        let t = Instant::now();
        self.goto("/timeline").await;
        wait_css(self.client, "table#timeline").await;
        // The live feed is connected (its dot turns on when the EventSource opens): the
        // reply must arrive through it, without a reload.
        wait_css(self.client, ".live-dot.on").await;
        let sim = &self.stack.sim.sim;
        let thread = sim.open_thread(PROPERTY, "BookingCom", "Maria Santos", true);
        let asked = Instant::now();
        sim.guest_message(&thread, "Hi! What's the wifi password please?");
        let link = format!("table#timeline tr.record a[href=\"/threads/{thread}\"]");
        until(
            self.stack,
            "the wifi reply on the live timeline",
            Duration::from_secs(10),
            || async {
                let replies = texts(self.client, "table#timeline tr.record .reply-text").await;
                replies.iter().any(|r| r.contains(WIFI_PASSWORD))
                    && self.client.find(Locator::Css(&link)).await.is_ok()
            },
        )
        .await;
        let took = asked.elapsed();
        assert!(
            took <= Duration::from_secs(3),
            "the wifi reply reached the timeline after {took:?} (limit 3 s)"
        );
        self.more_live_rows_then_the_thread(&thread).await;
        eprintln!(
            "step: wifi reply on the timeline after {:.2}s ({:.1}s)",
            took.as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }

    /// A "thanks" (no reply needed) and a parking question join the live timeline (its
    /// screenshot), then `thread`'s page shows the question, the reply text, the decision.
    async fn more_live_rows_then_the_thread(&self, thread: &str) {
        let sim = &self.stack.sim.sim;
        sim.guest_message(thread, "Thanks so much!");
        let john = sim.open_thread(PROPERTY, "Airbnb", "John Miller", true);
        sim.guest_message(&john, "Hello! Is there parking near the apartment?");
        until(
            self.stack,
            "the thanks and parking rows",
            PATIENCE,
            || async {
                let replies = texts(self.client, "table#timeline tr.record .reply-text").await;
                let page = self.client.source().await.unwrap_or_default();
                replies.iter().any(|r| r.contains("Rua das Flores"))
                    && page.contains("no_reply_needed")
            },
        )
        .await;
        screenshot(self.client, "timeline").await;
        // Its thread: the question, the reply's rendered text, the decision.
        self.goto_until(
            &format!("/threads/{thread}"),
            ".rendered, .reply-text",
            PATIENCE,
        )
        .await;
        let page = self.client.source().await.unwrap_or_default();
        assert!(
            page.contains(WIFI_PASSWORD),
            "thread page lacks the reply text"
        );
        assert!(page.contains("What&#39;s the wifi") || page.contains("What's the wifi"));
        screenshot(self.client, "thread").await;
    }

    async fn guest_script_renders_as_text(&self) {
        let t = Instant::now();
        let sim = &self.stack.sim.sim;
        let thread = sim.open_thread(PROPERTY, "BookingCom", "Mallory", true);
        sim.guest_message(&thread, &format!("Hello {SCRIPT} there"));
        let xpath = format!("//*[contains(text(), '{SCRIPT}')]");
        until(
            self.stack,
            "the guest's <script> as text",
            PATIENCE,
            || async {
                self.goto(&format!("/threads/{thread}")).await;
                self.client.find(Locator::XPath(&xpath)).await.is_ok()
            },
        )
        .await;
        let shown = self
            .client
            .find(Locator::XPath(&xpath))
            .await
            .expect("the text node");
        assert!(shown.text().await.unwrap_or_default().contains(SCRIPT));
        assert!(
            self.client.get_alert_text().await.is_err(),
            "an alert opened"
        );
        let injected = self
            .client
            .execute(
                "return Array.from(document.scripts).some(s => s.text.includes('alert(1)'))",
                vec![],
            )
            .await
            .expect("inspecting the scripts");
        assert_eq!(
            injected,
            serde_json::json!(false),
            "the guest's script is a <script>"
        );
        eprintln!("step: <script> is text ({:.1}s)", t.elapsed().as_secs_f64());
    }

    async fn cancel_removes_a_follow_up_and_the_cli_agrees(&self) {
        let t = Instant::now();
        let thread = &self.stack.inquiry;
        let page = format!("/threads/{thread}");
        until(
            self.stack,
            "two pending follow-ups on the inquiry",
            PATIENCE,
            || async {
                self.goto(&page).await;
                texts(self.client, "tr.follow-up").await.len() == 2
            },
        )
        .await;
        assert_eq!(
            self.timers_of(thread),
            ["inquiry_alert", "inquiry_final_alert"]
        );
        let mut target = None;
        for row in self
            .client
            .find_all(Locator::Css("tr.follow-up"))
            .await
            .expect("rows")
        {
            if row
                .text()
                .await
                .unwrap_or_default()
                .contains("inquiry_final_alert")
            {
                target = Some(row);
            }
        }
        let row = target.expect("a follow-up row naming inquiry_final_alert");
        row.find(Locator::Css("button.cancel"))
            .await
            .expect("its Cancel button")
            .click()
            .await
            .expect("clicking Cancel");
        until(
            self.stack,
            "the cancelled follow-up to go",
            PATIENCE,
            || async {
                let rows = texts(self.client, "tr.follow-up").await;
                rows.len() == 1 && !rows[0].contains("inquiry_final_alert")
            },
        )
        .await;
        assert_eq!(path_of(self.client).await, page, "Cancel redirects back");
        assert_eq!(self.timers_of(thread), ["inquiry_alert"], "follow-ups list");
        eprintln!("step: cancel ({:.1}s)", t.elapsed().as_secs_f64());
    }

    /// `concierge follow-ups list --json`: the names of `thread`'s pending timers, sorted.
    fn timers_of(&self, thread: &str) -> Vec<String> {
        let out = Command::new(env!("CARGO_BIN_EXE_concierge"))
            .args(["--config", &self.stack.config_path().display().to_string()])
            .args(["follow-ups", "list", "--json"])
            .env_remove("CONCIERGE_CONFIG")
            .output()
            .expect("running concierge follow-ups list");
        assert!(
            out.status.success(),
            "follow-ups list: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let timers: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("follow-ups list --json is JSON");
        let mut names: Vec<String> = timers
            .iter()
            .filter(|t| t["thread_id"] == thread)
            .filter_map(|t| t["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        names
    }

    async fn playground_renders_the_wifi_reply(&self) {
        let t = Instant::now();
        self.goto("/playground").await;
        let form = wait_css(self.client, "form#playground").await;
        form.find(Locator::Css("select[name=property]"))
            .await
            .expect("the property select")
            .select_by_value(PROPERTY)
            .await
            .expect("choosing Casa Azul");
        form.find(Locator::Css("select[name=channel]"))
            .await
            .expect("the channel select")
            .select_by_value("booking_com")
            .await
            .expect("choosing Booking.com");
        form.find(Locator::Css("textarea[name=message]"))
            .await
            .expect("the message box")
            .send_keys("What's the wifi password?")
            .await
            .expect("typing the question");
        form.find(Locator::Css(
            "button[type=submit], input[type=submit], button:not([type])",
        ))
        .await
        .expect("the playground's submit button")
        .click()
        .await
        .expect("submitting the playground");
        wait_css(self.client, ".plan-step").await;
        let rendered = texts(self.client, ".rendered").await;
        assert!(
            rendered
                .iter()
                .any(|r| r.contains(WIFI_PASSWORD) && r.contains("CasaAzul-Guest")),
            "rendered replies: {rendered:?}"
        );
        screenshot(self.client, "playground").await;
        eprintln!("step: playground ({:.1}s)", t.elapsed().as_secs_f64());
    }

    async fn rules_and_health_pages_render(&self) {
        self.goto("/rules").await;
        wait_css(self.client, "a[href=\"/rules\"]").await;
        let page = self.client.source().await.unwrap_or_default();
        assert!(page.contains("10_faq"), "the rules page lists 10_faq.rhai");
        screenshot(self.client, "rules").await;
        self.goto("/health").await;
        wait_css(self.client, "a[href=\"/health\"]").await;
        screenshot(self.client, "health").await;
    }
}
