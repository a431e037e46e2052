//! A real browser for the console tests: Debian's `chromium` driven through `chromedriver`
//! (a child process on a free port, killed on drop) with fantoccini, headless.
//!
//! Included only by the browser tests (`#[path]`), so the other test binaries do not
//! compile fantoccini. A missing browser fails the test with the command that installs it
//! (`make ensure-browser`); nothing is skipped.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page element may take to appear on a loaded two-core machine.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// A `chromedriver` child process; killed (and reaped) when dropped.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
}

impl Drop for ChromeDriver {
    /// Asks chromedriver to quit (`GET /shutdown` closes its browsers too, even when the
    /// test panicked before closing its session), then kills it if it is still there.
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let addr = self.url.trim_start_matches("http://").to_string();
        if let Ok(mut stream) = std::net::TcpStream::connect(&addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request =
                format!("GET /shutdown HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            if stream.write_all(request.as_bytes()).is_ok() {
                let _ = stream.read_to_end(&mut Vec::new());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics with the install command when chromium or chromedriver is missing.
pub fn require_browser() {
    for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
        assert!(
            Path::new(path).exists(),
            "the console browser tests need {path} (Debian package {package}): \
             run `make ensure-browser` (apt-get install chromium chromium-driver)"
        );
    }
}

/// Starts chromedriver on a free port and waits (up to 20 s) until it answers `/status`.
pub async fn chromedriver() -> ChromeDriver {
    require_browser();
    let port = concierge::store::nats::free_port().expect("a free port for chromedriver");
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e} (run `make ensure-browser`)"));
    let driver = ChromeDriver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let status = format!("{}/status", driver.url);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = http.get(&status).send().await {
            if r.status().is_success() {
                return driver;
            }
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer on {status} within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A headless chromium session (1280x900) through `driver`.
pub async fn headless(driver: &ChromeDriver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,900",
                "--hide-scrollbars",
            ],
        }),
    );
    // chromedriver is plain HTTP on localhost: no TLS stack (and no crypto provider) needed.
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a headless chromium session: {e}"))
}

/// Waits (up to [`PATIENCE`]) for an element matching `css`.
pub async fn wait_css(client: &Client, css: &str) -> fantoccini::elements::Element {
    client
        .wait()
        .at_most(PATIENCE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css:?} within {PATIENCE:?}: {e}"))
}

/// Where screenshots go: `$CARGO_TARGET_DIR/console`, else `<crate>/target/console`.
pub fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console")
}

/// Saves a PNG of the current page as `<screenshot_dir>/<page>.png`.
pub async fn screenshot(client: &Client, page: &str) -> PathBuf {
    let png = client
        .screenshot()
        .await
        .unwrap_or_else(|e| panic!("screenshot of {page}: {e}"));
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    let path = dir.join(format!("{page}.png"));
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
