//! NATS plumbing: connecting, creating and reconciling the streams and KV buckets, and
//! starting a private `nats-server` (for tests and `concierge demo`).
//!
//! Owns every stream/bucket name and its configuration so that all roles agree on them.
//! It must not know what is stored inside (events, audit records, snapshots): the modules
//! that own those formats read and write them.
//!
//! Stays within nats-server 2.9 (Debian's): one filter subject per consumer, bucket-wide
//! `max_age`, no per-message TTL. `get_or_create_stream` returns an existing stream
//! unchanged, so [`Infra::setup`] compares and updates the config explicitly.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv, stream};

use crate::config::NatsConfig;

/// Stream names for the default prefix `concierge`, as in the contract.
pub const EVENTS_STREAM: &str = "CONCIERGE_EVENTS";
pub const AUDIT_STREAM: &str = "CONCIERGE_AUDIT";

/// `CONCIERGE_EVENTS` for the default prefix; `<PREFIX>_EVENTS` for another prefix, so two
/// deployments (or a demo) can share one NATS server without touching each other.
pub fn events_stream(prefix: &str) -> String {
    format!("{}_EVENTS", prefix.to_ascii_uppercase())
}

/// `CONCIERGE_AUDIT` for the default prefix; `<PREFIX>_AUDIT` otherwise.
pub fn audit_stream(prefix: &str) -> String {
    format!("{}_AUDIT", prefix.to_ascii_uppercase())
}

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("JetStream setup of {what} failed: {message}")]
    Setup { what: String, message: String },
    #[error("{0}")]
    Server(String),
}

/// Bucket names derive from the prefix so two deployments can share a server.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Self {
        Names {
            prefix: prefix.to_string(),
        }
    }
    pub fn events_subjects(&self) -> String {
        format!("{}.events.>", self.prefix)
    }
    pub fn audit_subjects(&self) -> String {
        format!("{}.audit.>", self.prefix)
    }
    /// Thread snapshots kept by the poller.
    pub fn threads_bucket(&self) -> String {
        format!("{}_threads", self.prefix)
    }
    /// Idempotency ledger of the executor (claims, done marks, cooldowns, own messages).
    pub fn ledger_bucket(&self) -> String {
        format!("{}_ledger", self.prefix)
    }
    /// Durable follow-up timers.
    pub fn followups_bucket(&self) -> String {
        format!("{}_followups", self.prefix)
    }
    /// Leader leases (poller, scheduler) and schedule tick marks.
    pub fn leases_bucket(&self) -> String {
        format!("{}_leases", self.prefix)
    }
}

/// Everything a role needs from NATS, created once per process.
#[derive(Clone)]
pub struct Infra {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub names: Names,
    pub threads: kv::Store,
    pub ledger: kv::Store,
    pub followups: kv::Store,
    pub leases: kv::Store,
}

pub async fn connect(cfg: &NatsConfig) -> Result<async_nats::Client, NatsError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("concierge")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5));
    if let Some(creds) = &cfg.credentials {
        opts = opts
            .credentials_file(creds)
            .await
            .map_err(|e| NatsError::Connect {
                url: cfg.url.clone(),
                message: format!("credentials file {}: {e}", creds.display()),
            })?;
    }
    // retry_on_initial_connect makes connect return at once; wait for the first
    // connection so a wrong URL is reported instead of hanging silently.
    // `nats.url` may list several servers ("nats://a:4222,nats://b:4222"), so the first
    // connection succeeds while any cluster node is up.
    let servers: Vec<async_nats::ServerAddr> = cfg
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| NatsError::Connect {
            url: cfg.url.clone(),
            message: format!("invalid server address: {e}"),
        })?;
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| NatsError::Connect {
            url: cfg.url.clone(),
            message: e.to_string(),
        })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.connection_state() != async_nats::connection::State::Connected {
        if Instant::now() > deadline {
            return Err(NatsError::Connect {
                url: cfg.url.clone(),
                message: "no connection within 10s".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(client)
}

impl Infra {
    /// Connect and create or reconcile every stream and bucket.
    pub async fn setup(cfg: &NatsConfig) -> Result<Infra, NatsError> {
        let client = connect(cfg).await?;
        Self::with_client(client, cfg).await
    }

    pub async fn with_client(
        client: async_nats::Client,
        cfg: &NatsConfig,
    ) -> Result<Infra, NatsError> {
        let js = jetstream::new(client.clone());
        let names = Names::new(&cfg.prefix);
        ensure_stream(
            &js,
            stream::Config {
                name: events_stream(&cfg.prefix),
                subjects: vec![names.events_subjects()],
                storage: stream::StorageType::File,
                max_age: cfg.events_max_age,
                duplicate_window: cfg.duplicate_window,
                num_replicas: cfg.replicas,
                ..Default::default()
            },
        )
        .await?;
        ensure_stream(
            &js,
            stream::Config {
                name: audit_stream(&cfg.prefix),
                subjects: vec![names.audit_subjects()],
                storage: stream::StorageType::File,
                max_age: cfg.audit_max_age,
                duplicate_window: cfg.duplicate_window,
                num_replicas: cfg.replicas,
                ..Default::default()
            },
        )
        .await?;
        let threads = ensure_bucket(&js, &names.threads_bucket(), 1, cfg).await?;
        let ledger = ensure_bucket(&js, &names.ledger_bucket(), 1, cfg).await?;
        let followups = ensure_bucket(&js, &names.followups_bucket(), 1, cfg).await?;
        let leases = ensure_bucket(&js, &names.leases_bucket(), 1, cfg).await?;
        Ok(Infra {
            client,
            js,
            names,
            threads,
            ledger,
            followups,
            leases,
        })
    }
}

async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<(), NatsError> {
    let setup_err = |e: &dyn std::fmt::Display| NatsError::Setup {
        what: format!("stream {}", wanted.name),
        message: e.to_string(),
    };
    let mut existing = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| setup_err(&e))?;
    let info = existing.info().await.map_err(|e| setup_err(&e))?;
    let have = &info.config;
    if have.subjects != wanted.subjects
        || have.max_age != wanted.max_age
        || have.duplicate_window != wanted.duplicate_window
        || have.num_replicas != wanted.num_replicas
    {
        tracing::info!(stream = %wanted.name, "reconciling stream configuration");
        js.update_stream(wanted.clone())
            .await
            .map_err(|e| setup_err(&e))?;
    }
    Ok(())
}

/// Creates the bucket's backing stream directly rather than with `create_key_value`:
/// async-nats queries the account first and cannot parse nats-server 2.9's account info.
/// The stream config is the one async-nats itself derives for a KV bucket.
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    history: i64,
    cfg: &NatsConfig,
) -> Result<kv::Store, NatsError> {
    let setup_err = |e: &dyn std::fmt::Display| NatsError::Setup {
        what: format!("bucket {bucket}"),
        message: e.to_string(),
    };
    let wanted = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: history.max(1),
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        num_replicas: cfg.replicas,
        ..Default::default()
    };
    let mut existing = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| setup_err(&e))?;
    let info = existing.info().await.map_err(|e| setup_err(&e))?;
    if info.config.num_replicas != wanted.num_replicas {
        js.update_stream(wanted).await.map_err(|e| setup_err(&e))?;
    }
    js.get_key_value(bucket).await.map_err(|e| setup_err(&e))
}

/// A `nats-server -js` on a free loopback port with a temporary store, killed on drop.
pub struct PrivateNatsServer {
    child: Child,
    pub url: String,
    pub port: u16,
    store: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

pub const NATS_INSTALL_HINT: &str =
    "nats-server not found on PATH: install it with `apt-get update && apt-get install -y nats-server` (or run `make test`, which does)";

/// Locates `nats-server` on PATH or in `/usr/sbin` (Debian's location).
pub fn find_nats_server() -> Result<PathBuf, NatsError> {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")]);
    for dir in candidates {
        let bin = dir.join("nats-server");
        if bin.is_file() {
            return Ok(bin);
        }
    }
    Err(NatsError::Server(NATS_INSTALL_HINT.to_string()))
}

pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl PrivateNatsServer {
    /// Start on a free port with a fresh temporary store.
    pub fn start() -> Result<Self, NatsError> {
        let dir = tempfile::tempdir().map_err(|e| NatsError::Server(e.to_string()))?;
        let store = dir.path().to_path_buf();
        let port = free_port().map_err(|e| NatsError::Server(e.to_string()))?;
        let mut server = Self::spawn(port, &store)?;
        server._dir = Some(dir);
        Ok(server)
    }

    /// Start on a given port and store directory (used to restart "the same" server).
    pub fn start_at(port: u16, store: &Path) -> Result<Self, NatsError> {
        Self::spawn(port, store)
    }

    fn spawn(port: u16, store: &Path) -> Result<Self, NatsError> {
        let bin = find_nats_server()?;
        let child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| NatsError::Server(format!("cannot start nats-server: {e}")))?;
        let mut server = PrivateNatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            port,
            store: store.to_path_buf(),
            _dir: None,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), NatsError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(NatsError::Server(format!(
                    "nats-server exited early ({status}) on port {}",
                    self.port
                )));
            }
            if Instant::now() > deadline {
                return Err(NatsError::Server(format!(
                    "nats-server did not listen on port {} within 10s",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn store_dir(&self) -> &Path {
        &self.store
    }

    /// Stop the process (keeping the store), e.g. to simulate an outage.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn config(&self) -> NatsConfig {
        NatsConfig {
            url: self.url.clone(),
            ..NatsConfig::default()
        }
    }
}

impl Drop for PrivateNatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
