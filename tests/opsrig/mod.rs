//! A full rig for the operability tests: private nats-server + Channex simulator + poller,
//! rules and templates in a temporary directory, workers built by `roles::worker`, and a
//! helper to run the real `concierge` binary against the same NATS.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use concierge::config::Config;
use concierge::events::{Event, EventType};
use concierge::roles::poller::Poller;
use concierge::roles::worker::Worker;
use concierge::sim::SimServer;
use concierge::store::audit::{self, AuditFilter, AuditRecord};
use concierge::store::nats::Infra;
use tokio::sync::watch;

#[path = "../common/mod.rs"]
pub mod common;

pub const PREFIX: &str = "concierge";

pub const FAQ_RULE: &str = r#"
// FAQ: wifi
if event.type == "thread.new_message" && message.sender == "guest" && contains_any(message.text, ["wifi", "wi-fi"]) {
    reply("wifi");
}
"#;

pub const WIFI_TEMPLATE: &str = "The wifi is {{vars.wifi_name}}, password {{vars.wifi_password}}.";

pub struct Rig {
    pub nats: concierge::store::nats::PrivateNatsServer,
    pub infra: Infra,
    pub sim: SimServer,
    pub config: Config,
    pub poller: Poller,
    pub prop: String,
    pub dir: tempfile::TempDir,
}

pub fn write(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, body).unwrap();
}

/// A rule/template directory pair under `root` holding the given files.
pub fn rule_dirs(
    root: &Path,
    name: &str,
    rules: &[(&str, &str)],
    templates: &[(&str, &str)],
) -> (PathBuf, PathBuf) {
    let rules_dir = root.join(name).join("rules");
    let templates_dir = root.join(name).join("templates");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::create_dir_all(&templates_dir).unwrap();
    for (n, body) in rules {
        write(&rules_dir, n, body);
    }
    for (n, body) in templates {
        write(&templates_dir, n, body);
    }
    (rules_dir, templates_dir)
}

pub async fn rig(prop: &str, rules: &[(&str, &str)], templates: &[(&str, &str)]) -> Rig {
    let (nats, infra, nats_cfg) = common::nats_infra().await;
    let sim = common::sim().await;
    sim.sim.add_property(prop, "Casa Azul", true);
    let dir = tempfile::tempdir().unwrap();
    let (rules_dir, templates_dir) = rule_dirs(dir.path(), "a", rules, templates);
    let mut config = common::config(&sim, &nats_cfg, &[prop]);
    config.rules.dir = rules_dir;
    config.rules.templates_dir = templates_dir;
    config.rules.watch = false;
    config.properties.insert(
        prop.into(),
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
    let mut poller = Poller::new(channex, &infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(prop)).await.unwrap(); // baseline
    Rig {
        nats,
        infra,
        sim,
        config,
        poller,
        prop: prop.to_string(),
        dir,
    }
}

impl Rig {
    pub async fn worker(&self) -> Worker {
        let channex = concierge::wiring::channex_client(&self.config).unwrap();
        let (worker, live) = concierge::wiring::worker(&self.config, &self.infra, channex)
            .await
            .unwrap();
        // Rules are loaded once (watch = false); the handle may go.
        drop(live);
        worker
    }

    /// A worker consuming the durable consumer until the returned sender says stop.
    pub async fn spawn_worker(
        &self,
    ) -> (
        watch::Sender<bool>,
        tokio::task::JoinHandle<Result<(), concierge::roles::worker::WorkerError>>,
    ) {
        let worker = self.worker().await;
        let (stop, shutdown) = watch::channel(false);
        let js = self.infra.js.clone();
        let handle = tokio::spawn(async move { worker.run(&js, PREFIX, shutdown).await });
        (stop, handle)
    }

    /// Poll and return the events emitted by this cycle.
    pub async fn poll(&mut self) -> Vec<Event> {
        let before = common::stored_events(&self.infra.js, PREFIX).await.len();
        self.poller.poll_once(Some(&self.prop)).await.unwrap();
        common::stored_events(&self.infra.js, PREFIX)
            .await
            .into_iter()
            .skip(before)
            .collect()
    }

    pub async fn audit(&self) -> Vec<AuditRecord> {
        audit::query(&self.infra.js, PREFIX, &AuditFilter::default())
            .await
            .unwrap()
    }

    pub fn sent(&self) -> Vec<(String, String)> {
        self.sim.sim.sent_by_api()
    }

    /// The real binary with a clean environment pointing at this rig's NATS.
    pub fn bin(&self) -> tokio::process::Command {
        bin(&self.nats.url, self.dir.path())
    }
}

/// `concierge` with only PATH, NATS_URL and a quiet log in its environment, run in `cwd`
/// (so no stray `concierge.toml` or `CONCIERGE_*` variable changes its configuration).
pub fn bin(nats_url: &str, cwd: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_concierge"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NATS_URL", nats_url)
        .env("CONCIERGE_LOG", "warn")
        .current_dir(cwd)
        .kill_on_drop(true);
    cmd
}

/// Run the binary to completion; panic with its stderr unless it exits 0.
pub async fn run_ok(mut cmd: tokio::process::Command) -> String {
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("concierge did not finish within 30s")
        .expect("cannot run concierge");
    assert!(
        out.status.success(),
        "concierge exited with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

pub fn guest_events(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .filter(|e| {
            e.event_type == EventType::ThreadNewMessage
                && e.message
                    .as_ref()
                    .is_some_and(|m| m.sender == concierge::events::Sender::Guest)
        })
        .cloned()
        .collect()
}

/// Every part occurs in `text`, each after the previous one.
pub fn assert_in_order(text: &str, parts: &[&str]) {
    let mut from = 0;
    for part in parts {
        match text[from..].find(part) {
            Some(i) => from += i + part.len(),
            None => panic!(
                "{part:?} not found (in order) after byte {from} of:\n{text}\nexpected order: {parts:#?}"
            ),
        }
    }
}
