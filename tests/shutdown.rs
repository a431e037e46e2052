//! Graceful shutdown of the real binary: SIGTERM while a Channex call is in flight finishes
//! the action, acks the event and exits 0; a later worker sends nothing again.
mod opsrig;

use std::process::Stdio;
use std::time::{Duration, Instant};

use concierge::sim::FaultConfig;
use concierge::store::audit::Outcome;
use opsrig::{common, PREFIX};

const PROP: &str = "prop-s";

fn toml_str(p: &std::path::Path) -> String {
    toml::Value::String(p.display().to_string()).to_string()
}

#[tokio::test]
async fn sigterm_during_a_slow_channex_call_finishes_the_action_and_exits_0() {
    let mut rig = opsrig::rig(
        PROP,
        &[("10_faq.rhai", opsrig::FAQ_RULE)],
        &[("wifi.hbs", opsrig::WIFI_TEMPLATE)],
    )
    .await;
    let cfg_path = rig.dir.path().join("concierge.toml");
    std::fs::write(
        &cfg_path,
        format!(
            r#"
[channex]
base_url = {base_url}
api_key = "{key}"
property_ids = ["{PROP}"]
requests_per_minute = 60000
max_retries = 2
timeout = "2s"

[nats]
url = "{nats}"

[rules]
dir = {rules}
templates_dir = {templates}
watch = false

[worker]
ack_wait = "5s"
retry_delay = "200ms"
shutdown_timeout = "10s"

[properties.{PROP}]
name = "Casa Azul"
vars = {{ wifi_name = "CasaAzul", wifi_password = "sardinhas" }}
"#,
            base_url = toml::Value::String(rig.sim.base_url.clone()),
            key = common::SIM_KEY,
            nats = rig.nats.url,
            rules = toml_str(&rig.config.rules.dir),
            templates = toml_str(&rig.config.rules.templates_dir),
        ),
    )
    .unwrap();

    // The event is stored before the worker process starts.
    let thread = rig.sim.sim.open_thread(PROP, "BookingCom", "Maria", true);
    rig.sim.sim.guest_message(&thread, "Hi, what's the wifi?");
    let guest = opsrig::guest_events(&rig.poll().await);
    assert_eq!(guest.len(), 1);
    let event_id = guest[0].id.clone();

    // The guest writes again after the poll: the thread moved, so the reply reads the
    // messages too (an unmoved thread is answered with the thread read and the POST alone).
    rig.sim
        .sim
        .guest_message(&thread, "Also, is there parking?");
    // Every Channex call now takes 1.5 s: the reply is GET thread, GET messages, POST.
    rig.sim.sim.clear_requests();
    rig.sim.sim.set_faults(FaultConfig {
        rate_429: 0.0,
        rate_500: 0.0,
        retry_after_secs: 0,
        latency: Duration::from_millis(1500),
    });
    let stderr_path = rig.dir.path().join("worker.stderr");
    let mut cmd = rig.bin();
    cmd.arg("--config")
        .arg(&cfg_path)
        .args(["--log-format", "json", "run", "--role", "worker"])
        .env("CONCIERGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap());
    let mut child = cmd.spawn().expect("start concierge run --role worker");
    let pid = child.id().expect("pid").to_string();
    let worker_log = || std::fs::read_to_string(&stderr_path).unwrap_or_default();

    // Wait until the first Channex call of the reply (reading the thread) has been
    // answered: the action is now between Channex calls, two slow ones still to go.
    let thread_path = format!("/message_threads/{thread}");
    let started = Instant::now();
    while !rig
        .sim
        .sim
        .requests()
        .iter()
        .any(|r| r.method == "GET" && r.path.ends_with(&thread_path))
    {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("worker exited early ({status}):\n{}", worker_log());
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the worker never read the thread:\n{}",
            worker_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rig.sent().is_empty(), "nothing sent yet");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    let term_at = Instant::now();

    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .unwrap_or_else(|_| panic!("no exit within 15s of SIGTERM:\n{}", worker_log()))
        .unwrap();
    let log = worker_log();
    assert_eq!(exit.code(), Some(0), "exit status {exit}:\n{log}");
    assert!(
        term_at.elapsed() >= Duration::from_millis(2500),
        "it waited for the two remaining 1.5 s calls ({:?})",
        term_at.elapsed()
    );
    assert!(log.contains("shutdown requested"), "{log}");
    assert!(!log.contains("shutdown timeout"), "{log}");
    // `--log-format json`: one JSON object per line, message under `fields`.
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line: {l:?}: {e}"))
        })
        .collect();
    assert!(
        lines.iter().any(|v| v["level"] == "INFO"
            && v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutdown requested"))),
        "{log}"
    );

    // The action finished: exactly one message, one executed record, the event acked.
    assert_eq!(
        rig.sent(),
        vec![(
            thread.clone(),
            "The wifi is CasaAzul, password sardinhas.".to_string()
        )]
    );
    let posts = rig
        .sim
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1);
    let executed = |records: &[concierge::store::audit::AuditRecord]| {
        records
            .iter()
            .filter(|r| r.event_id.as_deref() == Some(event_id.as_str()))
            .filter(|r| r.outcome == Outcome::Executed)
            .count()
    };
    assert_eq!(executed(&rig.audit().await), 1);
    let mut stream = rig
        .infra
        .js
        .get_stream(concierge::store::nats::events_stream(PREFIX))
        .await
        .unwrap();
    let last_seq = stream.info().await.unwrap().state.last_sequence;
    let consumer = rig.config.worker.consumer.clone();
    let info = stream.consumer_info(&consumer).await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "unacked: {info:?}");
    assert_eq!(info.num_pending, 0, "undelivered: {info:?}");
    assert_eq!(info.num_redelivered, 0, "{info:?}");
    assert_eq!(info.ack_floor.stream_sequence, last_seq, "{info:?}");

    // A second worker on the same durable consumer finds nothing to do, even after
    // ack_wait (5 s) has passed since the first delivery.
    rig.sim.sim.set_faults(FaultConfig {
        rate_429: 0.0,
        rate_500: 0.0,
        retry_after_secs: 0,
        latency: Duration::ZERO,
    });
    let requests_before = rig.sim.sim.requests().len();
    let (stop, running) = rig.spawn_worker().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop.send(true);
    running.await.unwrap().unwrap();
    assert_eq!(rig.sent().len(), 1, "no second message");
    assert_eq!(
        rig.sim.sim.requests().len(),
        requests_before,
        "no Channex call"
    );
    assert_eq!(executed(&rig.audit().await), 1);
    let info = stream.consumer_info(&consumer).await.unwrap();
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_redelivered, 0);
}
