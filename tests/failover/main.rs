//! A 3-node JetStream cluster (the `deploy/nats/` configs, on free ports), R3 streams and
//! buckets, a poller and two workers; one node is killed (SIGKILL) mid-run. Every guest
//! message still gets exactly one reply and one `executed` record.
#[path = "../opsrig/mod.rs"]
mod opsrig;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use concierge::config::NatsConfig;
use concierge::roles::poller::Poller;
use concierge::store::audit::{self, AuditFilter, Outcome};
use concierge::store::nats::{find_nats_server, free_port, Infra};
use opsrig::{common, PREFIX};
use tokio::sync::{mpsc, watch};

const PROP: &str = "prop-c";

struct Node {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

/// Three nats-server processes started from `deploy/nats/nats-N.conf`, with the client
/// and route ports overridden on the command line; all killed on drop.
struct Cluster {
    nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let bin = find_nats_server().unwrap_or_else(|e| panic!("{e}"));
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats");
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3)
            .map(|_| (free_port().unwrap(), free_port().unwrap()))
            .collect();
        let mut nodes = Vec::new();
        for n in 1..=3usize {
            let (port, route) = ports[n - 1];
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != n - 1)
                .map(|(_, (_, r))| format!("nats-route://127.0.0.1:{r}"))
                .collect();
            let store = dir.path().join(format!("nats-{n}"));
            std::fs::create_dir_all(&store).unwrap();
            let log = dir.path().join(format!("nats-{n}.log"));
            let child = Command::new(&bin)
                .arg("-c")
                .arg(deploy.join(format!("nats-{n}.conf")))
                .args(["-a", "127.0.0.1", "-p", &port.to_string()])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &routes.join(",")])
                .arg("-l")
                .arg(&log)
                .env(format!("NATS_STORE_{n}"), &store)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start nats-server node {n}: {e}"));
            nodes.push(Node {
                child: Some(child),
                port,
                log,
            });
        }
        let cluster = Cluster { nodes, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        for (i, node) in cluster.nodes.iter().enumerate() {
            loop {
                let log = std::fs::read_to_string(&node.log).unwrap_or_default();
                if std::net::TcpStream::connect(("127.0.0.1", node.port)).is_ok()
                    && log.contains("metadata leader")
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {} not ready (port {} taken?):\n{log}",
                    i + 1,
                    node.port
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    fn index_of_port(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node on port {port}"))
    }

    /// SIGKILL: a crash, not a clean shutdown.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = log
                    .lines()
                    .rev()
                    .filter(|l| !l.contains("Error trying to connect to route"))
                    .take(40)
                    .collect();
                format!(
                    "--- {}\n{}",
                    n.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// Infra::setup with R3, retried while the cluster settles (the first R3 creations can
/// be refused until every node has joined the meta group).
async fn r3_infra(cfg: &NatsConfig) -> Infra {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match Infra::setup(cfg).await {
            Ok(infra) => return infra,
            Err(e) if Instant::now() < deadline => {
                eprintln!("R3 setup not yet possible: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("R3 setup failed: {e}"),
        }
    }
}

/// Reads right after a node loss can time out while the JetStream meta group elects a new
/// leader (creating the reader's ephemeral consumer needs one): retry for a while.
async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                eprintln!("{what}: {e} (retrying)");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// For a failure message: both streams (state, leader, replica lag) and the worker consumer.
async fn print_nats_state(infra: &Infra) {
    for name in [
        concierge::store::nats::audit_stream(PREFIX),
        concierge::store::nats::events_stream(PREFIX),
    ] {
        if let Ok(mut s) = infra.js.get_stream(&name).await {
            if let Ok(info) = s.info().await {
                eprintln!("{name}: {:?} {:?}", info.state, info.cluster);
            }
        }
    }
    if let Ok(stream) = infra
        .js
        .get_stream(concierge::store::nats::events_stream(PREFIX))
        .await
    {
        let consumer: Result<async_nats::jetstream::consumer::PullConsumer, _> =
            stream.get_consumer("concierge-worker").await;
        if let Ok(mut c) = consumer {
            eprintln!("worker consumer: {:?}", c.info().await);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_cluster_survives_losing_a_node_with_exactly_once_replies() {
    node_loss(false).await;
}

/// Kill one node mid-run: the one every client is connected to (`connected`), or another.
async fn node_loss(connected: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("CLUSTER_TEST_LOG").unwrap_or_else(|_| "concierge=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let mut cluster = Cluster::start();
    let nats_cfg = NatsConfig {
        url: cluster.url(0),
        replicas: 3,
        ..NatsConfig::default()
    };
    let infra = r3_infra(&nats_cfg).await;
    for stream in [
        concierge::store::nats::events_stream(PREFIX),
        concierge::store::nats::audit_stream(PREFIX),
        format!("KV_{}", infra.names.ledger_bucket()),
    ] {
        let mut s = infra.js.get_stream(&stream).await.unwrap();
        assert_eq!(s.info().await.unwrap().config.num_replicas, 3, "{stream}");
    }
    // Replicated buckets are read from their leader, never from a lagging replica.
    for bucket in [
        infra.names.ledger_bucket(),
        infra.names.threads_bucket(),
        infra.names.leases_bucket(),
        infra.names.followups_bucket(),
    ] {
        let mut s = infra.js.get_stream(format!("KV_{bucket}")).await.unwrap();
        assert!(!s.info().await.unwrap().config.allow_direct, "{bucket}");
    }

    let sim = common::sim().await;
    sim.sim.add_property(PROP, "Casa Azul", true);
    let dir = tempfile::tempdir().unwrap();
    let (rules_dir, templates_dir) = opsrig::rule_dirs(
        dir.path(),
        "a",
        &[("10_faq.rhai", opsrig::FAQ_RULE)],
        &[("wifi.hbs", "Wifi: {{vars.wifi_name}}")],
    );
    let mut config = common::config(&sim, &nats_cfg, &[PROP]);
    config.rules.dir = rules_dir;
    config.rules.templates_dir = templates_dir;
    config.rules.watch = false;
    config.worker.concurrency = 8;
    config.properties.insert(
        PROP.into(),
        concierge::config::PropertyConfig {
            name: "Casa Azul".into(),
            vars: serde_json::json!({"wifi_name": "CasaAzul"})
                .as_object()
                .cloned()
                .unwrap(),
            ..Default::default()
        },
    );

    // Each role on its own connection, as separate processes would be.
    let (stop, shutdown) = watch::channel(false);
    let poller_infra = r3_infra(&nats_cfg).await;
    let channex = concierge::wiring::channex_client(&config).unwrap();
    let mut poller = Poller::new(channex, &poller_infra, Arc::new(config.clone()), None);
    poller.poll_once(Some(PROP)).await.unwrap(); // baseline
    let (_nudge_tx, nudges) = mpsc::channel(1);
    let poller_task = tokio::spawn(poller.run(shutdown.clone(), nudges));
    let mut clients = vec![infra.client.clone(), poller_infra.client.clone()];
    let mut workers = Vec::new();
    for _ in 0..2 {
        let w_infra = r3_infra(&nats_cfg).await;
        clients.push(w_infra.client.clone());
        let channex = concierge::wiring::channex_client(&config).unwrap();
        let (worker, _live) = concierge::wiring::worker(&config, &w_infra, channex)
            .await
            .unwrap();
        let shutdown = shutdown.clone();
        workers.push(tokio::spawn(async move {
            worker.run(&w_infra.js, PREFIX, shutdown).await
        }));
    }
    // Everyone connected to node 1 (the one URL given).
    let connected_to = cluster.index_of_port(clients[0].server_info().port);
    assert!(clients
        .iter()
        .all(|c| cluster.index_of_port(c.server_info().port) == connected_to));
    let victim = if connected {
        connected_to
    } else {
        (connected_to + 1) % 3
    };

    let mut threads = Vec::new();
    let mut ask = |n: usize| {
        for i in 0..n {
            let t = sim.sim.open_thread(
                PROP,
                "BookingCom",
                &format!("Guest {}", threads.len() + i),
                true,
            );
            sim.sim.guest_message(&t, "Hello! What's the wifi?");
            threads.push(t);
        }
    };
    ask(15);
    let answered = |infra: Infra| async move {
        audit::query(
            &infra.js,
            PREFIX,
            &AuditFilter {
                outcome: Some(Outcome::Executed),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_default()
        .len()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while answered(infra.clone()).await < 5 {
        assert!(Instant::now() < deadline, "no progress before the outage");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Crash the node every client is connected to, while work is in flight.
    cluster.kill(victim);
    let killed_at = Instant::now();
    eprintln!("killed node {} after {:?}", victim + 1, started.elapsed());
    ask(15);
    assert_eq!(threads.len(), 30);

    let all_answered = || async {
        let sent: BTreeSet<String> = sim.sim.sent_by_api().into_iter().map(|(t, _)| t).collect();
        threads.iter().all(|t| sent.contains(t))
    };
    // Recovery (new stream leaders, lease re-acquired, pull subscriptions reopened) takes
    // ~10 s here; allow for a slow, shared CI machine.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !all_answered().await {
        if Instant::now() > deadline {
            print_nats_state(&infra).await;
            panic!(
                "not every thread answered within 60s after the node loss: {} of 30 sent\n{}",
                sim.sim.sent_by_api().len(),
                cluster.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "all 30 answered {:?} after the node loss",
        killed_at.elapsed()
    );
    // Settle: an action whose ledger or audit write was cut by the node loss is finished
    // by its redelivery (after ack_wait): wait until every guest event has its executed
    // record before stopping the workers.
    let settle_started = Instant::now();
    loop {
        // Settled when the durable consumer has acked every stored event: its ack floor
        // is the stream's last sequence, and nothing is waiting for delivery or for an
        // ack. (A nak'd event waiting out its redelivery delay counts as neither pending
        // nor ack-pending, so those two counts alone would call it settled too early.)
        let settled = async {
            let mut stream = infra
                .js
                .get_stream(concierge::store::nats::events_stream(PREFIX))
                .await
                .ok()?;
            let last = stream.info().await.ok()?.state.last_sequence;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer("concierge-worker").await.ok()?;
            let info = consumer.info().await.ok()?;
            Some(
                info.num_pending == 0
                    && info.num_ack_pending == 0
                    && info.ack_floor.stream_sequence >= last,
            )
        }
        .await
        .unwrap_or(false);
        if settled || settle_started.elapsed() > Duration::from_secs(60) {
            eprintln!(
                "worker consumer settled: {settled} after {:?}",
                settle_started.elapsed()
            );
            if !settled {
                print_nats_state(&infra).await;
            }
            assert!(
                settled,
                "the worker consumer did not ack every event within 60 s"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = stop.send(true);
    for w in workers {
        w.await.unwrap().unwrap();
    }
    poller_task.await.unwrap().unwrap();
    if connected {
        for c in &clients {
            assert_ne!(
                cluster.index_of_port(c.server_info().port),
                victim,
                "every client reconnected to a surviving node"
            );
        }
    }

    // Exactly one reply per thread.
    let mut per_thread: BTreeMap<String, usize> = BTreeMap::new();
    for (t, _) in sim.sim.sent_by_api() {
        *per_thread.entry(t).or_default() += 1;
    }
    assert_eq!(per_thread.len(), 30);
    assert!(
        per_thread.values().all(|n| *n == 1),
        "duplicates: {per_thread:?}"
    );
    // One guest event per thread, one executed record per event.
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let events: Vec<_> = retry("reading the events stream", || {
        concierge::cli::inspect::stored_events(&infra.js, PREFIX, since)
    })
    .await
    .into_iter()
    .map(|(e, _)| e)
    .collect();
    let guest = opsrig::guest_events(&events);
    let guest_ids: BTreeSet<&str> = guest.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(guest_ids.len(), 30, "one stored guest event per message");
    let executed_only = AuditFilter {
        outcome: Some(Outcome::Executed),
        ..Default::default()
    };
    // Every event is acked, so every record is stored on the stream leader: the first read
    // that succeeds must be complete, even if its consumer sits on a lagging replica.
    // (Only errors are retried: a request can time out while leaders are being elected.)
    let executed = retry("reading the audit stream", || {
        audit::query(&infra.js, PREFIX, &executed_only)
    })
    .await;
    if executed.len() < guest_ids.len() {
        print_nats_state(&infra).await;
    }
    let mut per_event: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &executed {
        *per_event
            .entry(r.event_id.as_deref().unwrap_or("-"))
            .or_default() += 1;
    }
    let executed_ids: BTreeSet<&str> = per_event.keys().copied().collect();
    if executed_ids != guest_ids {
        // Show what the audit log says about the events without an executed record.
        let all = audit::query(&infra.js, PREFIX, &AuditFilter::default())
            .await
            .unwrap_or_default();
        for missing in guest_ids.difference(&executed_ids).take(3) {
            let about: Vec<_> = all
                .iter()
                .filter(|r| r.event_id.as_deref() == Some(*missing))
                .map(|r| format!("{} {:?} {:?}", r.outcome, r.reason, r.error))
                .collect();
            eprintln!(
                "audit for {missing}: {about:?} (of {} records in all)",
                all.len()
            );
        }
    }
    assert_eq!(
        executed_ids,
        guest_ids,
        "executed records are for the guest events; missing {:?}, extra {:?}",
        guest_ids.difference(&executed_ids).collect::<Vec<_>>(),
        executed_ids.difference(&guest_ids).collect::<Vec<_>>()
    );
    assert!(
        per_event.values().all(|n| *n == 1),
        "one executed per event: {per_event:?}"
    );
    eprintln!("cluster test took {:?}", started.elapsed());
}
