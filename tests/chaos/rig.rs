//! The chaos rig: simulator, nats-server with a file store, the role processes (the real
//! binary, one process per role instance) and the hostile phase that drives them.
//! It only acts and observes; judging the outcome is `report`'s job.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use async_nats::jetstream;
use concierge::sim::{FaultConfig, Sim, SimOptions, SimServer};
use concierge::store::nats::PrivateNatsServer;
use tokio::time::Instant;

pub const PREFIX: &str = "concierge";
pub const PROP: &str = "chaos-prop";
const KEY: &str = "chaos-api-key";

/// The role processes: `(name, --role)`. Kills pick one of these uniformly.
pub const ROLES: [(&str, &str); 4] = [
    ("worker-1", "worker"),
    ("worker-2", "worker"),
    ("poller", "poller"),
    ("scheduler", "scheduler"),
];

/// Answers every guest message: the wifi question with `wifi`, the check-in one with
/// `checkin` (two templates, so the per-template cooldown never suppresses the second
/// reply of a thread).
const RULE: &str = r#"
if event.type == "thread.new_message" && message.sender == "guest" {
    if contains_any(message.text, ["wifi"]) {
        reply("wifi");
    } else if contains_any(message.text, ["checkin"]) {
        reply("checkin");
    }
}
"#;
/// Each reply quotes the guest's text, so its unique token ties it to one guest message.
const WIFI: &str = "Wifi answer ({{message.text}}): the network is {{vars.wifi_name}}.";
const CHECKIN: &str = "Check-in answer ({{message.text}}): from 15:00.";

/// What happens when, from the start of the hostile phase: `(at, thread, nth message)`
/// and `(at, index into ROLES)`.
pub struct Plan {
    pub messages: Vec<(Duration, usize, usize)>,
    pub kills: Vec<(Duration, usize)>,
}

/// One guest message sent: its token (unique, quoted by the reply), thread and id.
pub struct Asked {
    pub token: String,
    pub thread_id: String,
    pub message_id: String,
}

struct Proc {
    name: &'static str,
    role: &'static str,
    child: Option<Child>,
    log: PathBuf,
    starts: usize,
}

pub struct Chaos {
    pub sim: SimServer,
    /// The first server owns the store directory; after its kill a new process serves the
    /// same port and store.
    nats_first: PrivateNatsServer,
    nats_again: Option<PrivateNatsServer>,
    pub js: jetstream::Context,
    procs: Vec<Proc>,
    dir: Option<tempfile::TempDir>,
    config: PathBuf,
    threads: HashMap<usize, String>,
    pub asked: Vec<Asked>,
    pub kills: usize,
    pub nats_restarts: usize,
    pub unexpected_exits: usize,
}

fn write(path: &Path, body: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, body).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Short timings so a 50-kill run settles in minutes: a dead worker's events come back
/// after `ack_wait`, a dead poller's lease is taken over after `lease_ttl`.
fn config_toml(dir: &Path, sim_url: &str, nats_url: &str) -> String {
    format!(
        r#"[channex]
base_url = "{sim_url}"
api_key = "{KEY}"
property_ids = ["{PROP}"]
poll_interval = "1s"
requests_per_minute = 6000
max_retries = 5
timeout = "5s"

[nats]
url = "{nats_url}"
prefix = "{PREFIX}"

[rules]
dir = {rules:?}
templates_dir = {templates:?}
watch = false

[worker]
max_deliver = 10
ack_wait = "10s"
retry_delay = "1s"
concurrency = 8
shutdown_timeout = "2s"

[poller]
lease_ttl = "2s"

[http]
listen = ""

[properties.{PROP}]
name = "Casa Caos"
vars = {{ wifi_name = "CasaCaos" }}
"#,
        rules = dir.join("rules").display().to_string(),
        templates = dir.join("templates").display().to_string(),
    )
}

impl Chaos {
    pub async fn start() -> Chaos {
        let dir = tempfile::tempdir().unwrap();
        let nats_first = PrivateNatsServer::start()
            .unwrap_or_else(|e| panic!("the chaos suite needs a private nats-server: {e}"));
        let infra = concierge::store::nats::Infra::setup(&nats_first.config())
            .await
            .unwrap_or_else(|e| panic!("JetStream setup failed: {e}"));
        let sim = Sim::start(SimOptions::with_key(KEY))
            .await
            .unwrap_or_else(|e| panic!("cannot start the Channex simulator: {e}"));
        sim.sim.add_property(PROP, "Casa Caos", true);
        write(&dir.path().join("rules/10_chaos.rhai"), RULE);
        write(&dir.path().join("templates/wifi.hbs"), WIFI);
        write(&dir.path().join("templates/checkin.hbs"), CHECKIN);
        let config = dir.path().join("concierge.toml");
        write(
            &config,
            &config_toml(dir.path(), &sim.base_url, &nats_first.url),
        );
        let procs = ROLES
            .iter()
            .map(|(name, role)| Proc {
                name,
                role,
                child: None,
                log: dir.path().join(format!("{name}.log")),
                starts: 0,
            })
            .collect();
        let mut chaos = Chaos {
            sim,
            nats_first,
            nats_again: None,
            js: infra.js.clone(),
            procs,
            dir: Some(dir),
            config,
            threads: HashMap::new(),
            asked: Vec::new(),
            kills: 0,
            nats_restarts: 0,
            unexpected_exits: 0,
        };
        for i in 0..chaos.procs.len() {
            chaos.spawn(i);
        }
        chaos.wait_for_baseline(&infra).await;
        chaos
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("."))
    }

    /// Keeps the work directory (logs, config, NATS store) for a post-mortem.
    pub fn keep_dir(&mut self) -> PathBuf {
        match self.dir.take() {
            Some(d) => d.keep(),
            None => PathBuf::from("."),
        }
    }

    fn spawn(&mut self, i: usize) {
        let config = self.config.clone();
        let cwd = self.dir().to_path_buf();
        let p = &mut self.procs[i];
        p.starts += 1;
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(&p.log)
            .unwrap_or_else(|e| panic!("log {}: {e}", p.log.display()));
        use std::io::Write as _;
        let _ = writeln!(log, "=== chaos: start #{} of {}", p.starts, p.name);
        let child = Command::new(env!("CARGO_BIN_EXE_concierge"))
            .arg("--config")
            .arg(&config)
            .args(["run", "--role", p.role])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CONCIERGE_LOG", "concierge=info")
            .env("NO_COLOR", "1")
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start concierge {}: {e}", p.name));
        p.child = Some(child);
    }

    /// SIGKILL (a crash, not a shutdown), then an immediate restart.
    fn kill_and_restart(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.kills += 1;
        self.spawn(i);
    }

    /// A role process that exited by itself is counted, reported and restarted.
    fn reap(&mut self) {
        for i in 0..self.procs.len() {
            let exited = match self.procs[i].child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status),
                _ => None,
            };
            if let Some(status) = exited {
                self.unexpected_exits += 1;
                eprintln!(
                    "chaos: {} exited by itself ({status}); restarting it",
                    self.procs[i].name
                );
                self.procs[i].child = None;
                self.spawn(i);
            }
        }
    }

    pub fn stop_processes(&mut self) {
        for p in &mut self.procs {
            if let Some(mut child) = p.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// The first poller cycle is a baseline (emits nothing): messages sent before it would
    /// never be answered, so the run starts only once it is recorded.
    async fn wait_for_baseline(&mut self, infra: &concierge::store::nats::Infra) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let keys = match infra.threads.keys().await {
                Ok(keys) => {
                    use futures::TryStreamExt as _;
                    keys.try_collect::<Vec<String>>().await.unwrap_or_default()
                }
                Err(_) => Vec::new(),
            };
            if keys.iter().any(|k| k.starts_with("baseline")) {
                return;
            }
            self.reap();
            assert!(
                Instant::now() < deadline,
                "the poller did not record its baseline within 30 s; logs in {}",
                self.dir().display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn set_faults(&self, latency: bool) {
        self.sim.sim.set_faults(FaultConfig {
            rate_429: 0.2,
            rate_500: 0.1,
            retry_after_secs: 1,
            latency: if latency {
                Duration::from_millis(500)
            } else {
                Duration::ZERO
            },
        });
        self.sim.sim.set_latency_jitter(if latency {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        });
    }

    fn ask(&mut self, thread: usize, nth: usize) {
        let sim = &self.sim.sim;
        let thread_id = self
            .threads
            .entry(thread)
            .or_insert_with(|| {
                sim.open_thread(PROP, "BookingCom", &format!("Chaos guest {thread}"), true)
            })
            .clone();
        let token = format!("c{:03}", self.asked.len() + 1);
        let text = if nth == 0 {
            format!("{token} wifi please")
        } else {
            format!("{token} checkin time please")
        };
        let message_id = self.sim.sim.guest_message(&thread_id, &text);
        self.asked.push(Asked {
            token,
            thread_id,
            message_id,
        });
    }
}

/// One scheduled step of the hostile phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    Ask { thread: usize, nth: usize },
    Kill(usize),
    LatencyOn,
    LatencyOff,
    NatsKill,
    FaultsOff,
}

impl Chaos {
    /// Runs the plan: faults on from the start, latency inside its window, the NATS kill
    /// inside it, process kills and guest messages at their planned moments.
    pub async fn hostile_phase(&mut self, plan: Plan) {
        let mut steps: Vec<(Duration, Step)> = plan
            .messages
            .iter()
            .map(|&(at, thread, nth)| (at, Step::Ask { thread, nth }))
            .chain(plan.kills.iter().map(|&(at, i)| (at, Step::Kill(i))))
            .chain([
                (super::LATENCY_FROM, Step::LatencyOn),
                (super::NATS_KILL_AT, Step::NatsKill),
                (super::LATENCY_UNTIL, Step::LatencyOff),
                (super::HOSTILE, Step::FaultsOff),
            ])
            .collect();
        steps.sort();
        self.set_faults(false);
        let t0 = Instant::now();
        for (at, step) in steps {
            tokio::time::sleep_until(t0 + at).await;
            self.reap();
            match step {
                Step::Ask { thread, nth } => self.ask(thread, nth),
                Step::Kill(i) => self.kill_and_restart(i),
                Step::LatencyOn => self.set_faults(true),
                Step::LatencyOff => self.set_faults(false),
                Step::NatsKill => self.restart_nats().await,
                Step::FaultsOff => self.sim.sim.set_faults(FaultConfig::default()),
            }
        }
    }

    /// `kill -9` of nats-server once a send is in flight (bounded wait), then a restart on
    /// the same port and file store after `NATS_DOWN`.
    async fn restart_nats(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.sim.sim.posts_in_flight() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let in_flight = self.sim.sim.posts_in_flight();
        self.nats_first.stop();
        if let Some(mut again) = self.nats_again.take() {
            again.stop();
        }
        let killed = Instant::now();
        eprintln!("chaos: nats-server killed with {in_flight} send(s) in flight");
        tokio::time::sleep_until(killed + super::NATS_DOWN).await;
        let (port, store) = (self.nats_first.port, self.nats_first.store_dir().to_owned());
        let again = PrivateNatsServer::start_at(port, &store)
            .unwrap_or_else(|e| panic!("restarting nats-server on port {port}: {e}"));
        self.nats_again = Some(again);
        self.nats_restarts += 1;
    }

    /// Waits (bounded) until every guest message has a reply, no send is in flight and the
    /// worker consumer has acknowledged every stored event, three checks in a row.
    pub async fn settle(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut quiet = 0;
        while Instant::now() < deadline {
            self.reap();
            let calm = self.all_answered()
                && self.sim.sim.posts_in_flight() == 0
                && self.consumer_settled().await;
            quiet = if calm { quiet + 1 } else { 0 };
            if quiet >= 3 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    fn all_answered(&self) -> bool {
        let sent = self.sim.sim.sent_by_api();
        self.asked
            .iter()
            .all(|a| sent.iter().any(|(_, text)| text.contains(&a.token)))
    }

    /// The durable consumer's ack floor is the stream's last sequence and nothing waits
    /// for delivery or an ack (a nak'd event waiting out its delay counts as neither, so
    /// the floor is what proves it is done).
    async fn consumer_settled(&self) -> bool {
        let settled = async {
            let mut stream = self
                .js
                .get_stream(concierge::store::nats::events_stream(PREFIX))
                .await
                .ok()?;
            let last = stream.info().await.ok()?.state.last_sequence;
            let mut consumer: jetstream::consumer::PullConsumer =
                stream.get_consumer("concierge-worker").await.ok()?;
            let info = consumer.info().await.ok()?;
            Some(
                info.num_pending == 0
                    && info.num_ack_pending == 0
                    && info.ack_floor.stream_sequence >= last,
            )
        };
        settled.await.unwrap_or(false)
    }

    /// The last `lines` lines of every process log that mention `needle`.
    pub fn log_lines(&self, needle: &str, lines: usize) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            let hits: Vec<&str> = log.lines().filter(|l| l.contains(needle)).collect();
            for l in hits.iter().skip(hits.len().saturating_sub(lines)) {
                out.push_str(&format!("  [{}] {l}\n", p.name));
            }
        }
        out
    }
}
