//! NATS plumbing: connecting, creating and reconciling the streams and KV buckets, and
//! starting a private `nats-server` (for tests and `concierge demo`).
//!
//! Owns every stream/bucket name and its configuration so that all roles agree on them,
//! the complete read of a stored stream ([`read_stored`]: replica consumer, then the stream
//! leader), and the one classification of NATS failures used by every store module
//! ([`StoreError`], [`NatsFailure`]: "unavailable, wait and retry" or "refused").
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
    #[error("JetStream setup of {what} failed: {source}")]
    Setup {
        what: String,
        #[source]
        source: NatsSource,
    },
    #[error("{0}")]
    Server(String),
}

/// The error a NATS client call returned, kept as the typed source of a [`StoreError`].
pub type NatsSource = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed store operation, classified once for every store module: "NATS is unavailable,
/// wait and retry" or "refused for good" (retrying the same call cannot help).
///
/// Compare-and-set losses (`AlreadyExists`, `WrongLastRevision`) are not errors here: they
/// are answers of the protocols built on KV, and each module handles them where it calls.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No answer, a timeout, no stream leader, a lost connection: NATS will come back.
    #[error("{what}: NATS unavailable: {source}")]
    Unavailable {
        what: String,
        #[source]
        source: NatsSource,
    },
    /// The server refused the request as such (an invalid key), or the value does not
    /// encode or decode: the same call would fail again.
    #[error("{what}: {source}")]
    Refused {
        what: String,
        #[source]
        source: NatsSource,
    },
}

impl StoreError {
    /// Classify the error of a NATS client call on `what` (see [`NatsFailure`]).
    pub fn nats<E: NatsFailure>(what: impl Into<String>, e: E) -> Self {
        let what = what.into();
        if e.is_refusal() {
            StoreError::Refused {
                what,
                source: Box::new(e),
            }
        } else {
            StoreError::Unavailable {
                what,
                source: Box::new(e),
            }
        }
    }

    /// A stored value that does not decode, or a value that does not encode.
    pub fn codec(what: impl Into<String>, e: serde_json::Error) -> Self {
        StoreError::Refused {
            what: what.into(),
            source: Box::new(e),
        }
    }

    /// Waiting for NATS will help (the caller should retry later, not give up).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// How an error of the NATS client is classified: a refusal is an error the server (or the
/// client's own validation) gives for the request itself; everything else (timeouts,
/// publish or ack failures, lost connections, a missing stream leader) means unavailable.
pub trait NatsFailure: std::error::Error + Send + Sync + 'static {
    fn is_refusal(&self) -> bool;
}

macro_rules! refused_when {
    ($($error:ty => $kind:pat),* $(,)?) => {$(
        impl NatsFailure for $error {
            fn is_refusal(&self) -> bool {
                matches!(self.kind(), $kind)
            }
        }
    )*};
}

refused_when! {
    kv::EntryError => kv::EntryErrorKind::InvalidKey,
    kv::PutError => kv::PutErrorKind::InvalidKey,
    kv::CreateError => kv::CreateErrorKind::InvalidKey,
    kv::UpdateError => kv::UpdateErrorKind::InvalidKey,
    kv::WatchError => kv::WatchErrorKind::InvalidKey,
}

/// Errors of calls that carry no request-specific refusal: always "unavailable".
macro_rules! never_refused {
    ($($error:ty),* $(,)?) => {$(
        impl NatsFailure for $error {
            fn is_refusal(&self) -> bool {
                false
            }
        }
    )*};
}

never_refused! {
    kv::WatcherError,
    jetstream::context::PublishError,
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
    /// Console sessions ended before their expiry ([`crate::store::sessions`]).
    pub fn sessions_bucket(&self) -> String {
        format!("{}_sessions", self.prefix)
    }

    /// Response-time records and score-alert episodes ([`crate::store::responses`]).
    pub fn responses_bucket(&self) -> String {
        format!("{}_responses", self.prefix)
    }
}

/// How long an ended console session is remembered ([`crate::store::sessions`]): longer
/// than any session lives.
pub const SESSIONS_RETENTION: std::time::Duration = std::time::Duration::from_secs(8 * 86_400);

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
    pub sessions: kv::Store,
    /// Response-time records ([`crate::store::responses`]), `nats.responses_max_age`.
    pub responses: kv::Store,
}

/// A connect error that never shows `user:password@` of `nats.url`, neither in the URL
/// nor in the client library's message (which may quote the server address).
fn connect_error(cfg: &NatsConfig, message: String) -> NatsError {
    let mut message = crate::config::redact_userinfo(&message);
    for info in cfg
        .url
        .split("://")
        .skip(1)
        .filter_map(|rest| rest.split_once('@').map(|(info, _)| info))
        .filter(|info| !info.is_empty())
    {
        message = message.replace(info, "***");
    }
    NatsError::Connect {
        url: crate::config::redact_url_userinfo(&cfg.url),
        message,
    }
}

pub async fn connect(cfg: &NatsConfig) -> Result<async_nats::Client, NatsError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("concierge")
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5));
    if let Some(creds) = &cfg.credentials {
        opts = opts.credentials_file(creds).await.map_err(|e| {
            connect_error(cfg, format!("credentials file {}: {e}", creds.display()))
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
        .map_err(|e| connect_error(cfg, format!("invalid server address: {e}")))?;
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| connect_error(cfg, e.to_string()))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client.connection_state() != async_nats::connection::State::Connected {
        if Instant::now() > deadline {
            return Err(connect_error(cfg, "no connection within 10s".into()));
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
        // Snapshots and leases hold no personal data and must not expire (a lost snapshot
        // re-announces a thread); the ledger and timers do, per `nats.*_max_age`.
        let forever = Duration::ZERO;
        let threads = ensure_bucket(&js, &names.threads_bucket(), forever, cfg).await?;
        let ledger = ensure_bucket(&js, &names.ledger_bucket(), cfg.ledger_max_age, cfg).await?;
        let followups =
            ensure_bucket(&js, &names.followups_bucket(), cfg.followups_max_age, cfg).await?;
        let leases = ensure_bucket(&js, &names.leases_bucket(), forever, cfg).await?;
        let sessions_max_age = SESSIONS_RETENTION;
        let sessions = ensure_bucket(&js, &names.sessions_bucket(), sessions_max_age, cfg).await?;
        let responses =
            ensure_bucket(&js, &names.responses_bucket(), cfg.responses_max_age, cfg).await?;
        Ok(Infra {
            client,
            js,
            names,
            threads,
            ledger,
            followups,
            leases,
            sessions,
            responses,
        })
    }
}

async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<(), NatsError> {
    let setup_err = |source: NatsSource| NatsError::Setup {
        what: format!("stream {}", wanted.name),
        source,
    };
    let mut existing = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| setup_err(e.into()))?;
    let info = existing.info().await.map_err(|e| setup_err(e.into()))?;
    let have = &info.config;
    if have.subjects != wanted.subjects
        || have.max_age != wanted.max_age
        || have.duplicate_window != wanted.duplicate_window
        || have.num_replicas != wanted.num_replicas
    {
        tracing::info!(stream = %wanted.name, "reconciling stream configuration");
        js.update_stream(wanted.clone())
            .await
            .map_err(|e| setup_err(e.into()))?;
    }
    Ok(())
}

/// Creates the bucket's backing stream directly rather than with `create_key_value`:
/// async-nats queries the account first and cannot parse nats-server 2.9's account info.
/// The stream config is the one async-nats itself derives for a KV bucket, except for
/// direct gets.
///
/// Direct gets are answered by any replica, and right after a node loss a replica can lag
/// for a minute: a lease holder would read an old revision, fail to renew and stall the
/// poller; a ledger or snapshot read would miss a write it was just told about. So with
/// replicas every point read (`get`/`entry`) goes to the stream leader (`allow_direct` off);
/// with one copy there is no one to lag and direct gets stay on (they are cheaper).
///
/// `max_age` (zero: forever) is reconciled like the rest, so changing a retention setting
/// applies to an existing bucket at the next start.
async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    cfg: &NatsConfig,
) -> Result<kv::Store, NatsError> {
    let setup_err = |source: NatsSource| NatsError::Setup {
        what: format!("bucket {bucket}"),
        source,
    };
    let wanted = stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: cfg.replicas <= 1,
        discard: stream::DiscardPolicy::New,
        num_replicas: cfg.replicas,
        ..Default::default()
    };
    let mut existing = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| setup_err(e.into()))?;
    let info = existing.info().await.map_err(|e| setup_err(e.into()))?;
    if info.config.num_replicas != wanted.num_replicas
        || info.config.allow_direct != wanted.allow_direct
        || info.config.max_age != wanted.max_age
    {
        tracing::info!(%bucket, "reconciling bucket configuration");
        js.update_stream(wanted)
            .await
            .map_err(|e| setup_err(e.into()))?;
    }
    js.get_key_value(bucket)
        .await
        .map_err(|e| setup_err(e.into()))
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

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub seq: u64,
    pub payload: bytes::Bytes,
    pub stored_at: chrono::DateTime<chrono::Utc>,
}

/// Where a read of stored messages starts.
#[derive(Debug, Clone, Copy)]
pub enum ReadFrom {
    Beginning,
    /// Messages stored at or after this instant.
    Time(chrono::DateTime<chrono::Utc>),
}

/// How long a read of stored messages waits for the next one from its consumer before it
/// asks the stream leader instead.
pub const READ_STALL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("reading stream {stream}: {source}")]
pub struct ReadError {
    pub stream: String,
    #[source]
    pub source: NatsSource,
}

impl ReadError {
    fn new(stream: &str, e: impl Into<NatsSource>) -> Self {
        ReadError {
            stream: stream.to_string(),
            source: e.into(),
        }
    }
}

impl ReadFrom {
    fn since(self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            ReadFrom::Beginning => None,
            ReadFrom::Time(t) => Some(t),
        }
    }
}

/// Reads every message of `stream_name` on `filter_subject`, oldest first, handing each to
/// `sink` until it returns false. With `follow`, keeps waiting for new messages.
///
/// The bulk is read with an ephemeral ordered consumer (one round trip per batch). That
/// consumer is placed on any replica, and right after a node loss a replica can still be
/// catching up: its view ends early, and a read that trusted it would come back short
/// without any error. So a read that is not following ends by asking the stream leader,
/// which holds every acknowledged message, for anything after the last one delivered
/// (one request when the replica was current) and reads the rest from the leader.
pub async fn read_stored(
    js: &jetstream::Context,
    stream_name: &str,
    filter_subject: &str,
    from: ReadFrom,
    follow: bool,
    mut sink: impl FnMut(StoredMessage) -> bool,
) -> Result<(), ReadError> {
    let read_err = |e: NatsSource| ReadError::new(stream_name, e);
    let since = from.since();
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| read_err(e.into()))?;
    // A read covers what the stream held when it started (stream info comes from the
    // leader): the leader part stops there instead of chasing new writes.
    let until = stream.cached_info().state.last_sequence;
    let consumer = match open_reader(&stream, filter_subject, since).await {
        Ok(consumer) => consumer,
        Err(e) if follow => return Err(read_err(e.into())),
        // No replica could host the reader (a peer is down and the assignment timed out):
        // the leader alone can still serve the whole read.
        Err(e) => {
            tracing::debug!(stream = stream_name, error = %e, "no reader consumer; reading from the stream leader");
            return read_all_from_leader(&stream, filter_subject, since, until, sink)
                .await
                .map_err(|e| read_err(e.into()));
        }
    };
    let next_seq = match read_through_consumer(consumer, since, follow, &mut sink).await {
        Ok(ConsumerRead::SinkDone) => return Ok(()),
        Ok(ConsumerRead::Ended { next_seq }) => next_seq,
        Err(e) => return Err(read_err(e)),
    };
    if follow {
        return Ok(());
    }
    read_from_leader(&stream, filter_subject, next_seq, until, since, sink)
        .await
        .map_err(|e| read_err(e.into()))
}

type OrderedConsumer = jetstream::consumer::Consumer<jetstream::consumer::pull::OrderedConfig>;

/// The ephemeral ordered consumer that reads `filter_subject` from `since` (or the start).
async fn open_reader(
    stream: &jetstream::stream::Stream,
    filter_subject: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<OrderedConsumer, jetstream::stream::ConsumerError> {
    use async_nats::jetstream::consumer::{self, DeliverPolicy};
    let deliver_policy = match since {
        Some(since) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp(since.timestamp())
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        },
        None => DeliverPolicy::All,
    };
    stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter_subject.to_string(),
            deliver_policy,
            ..Default::default()
        })
        .await
}

/// How the consumer part of a read ended.
enum ConsumerRead {
    /// The sink asked for no more.
    SinkDone,
    /// The consumer delivered what it had (or stalled, or lost its replica): the leader
    /// part continues from `next_seq`.
    Ended { next_seq: u64 },
}

/// Hands the consumer's messages to `sink`. Without `follow` a stall or a lost replica is
/// no failure: the leader has the rest.
async fn read_through_consumer(
    consumer: OrderedConsumer,
    since: Option<chrono::DateTime<chrono::Utc>>,
    follow: bool,
    sink: &mut impl FnMut(StoredMessage) -> bool,
) -> Result<ConsumerRead, NatsSource> {
    use futures::StreamExt;
    // The replica's idea of where to start; a lagging one can only start earlier, never
    // later, since it holds a prefix of the stream.
    let mut next_seq = consumer.cached_info().delivered.stream_sequence + 1;
    if !follow && consumer.cached_info().num_pending == 0 {
        return Ok(ConsumerRead::Ended { next_seq });
    }
    let mut messages = consumer.messages().await?;
    loop {
        let next = if follow {
            messages.next().await
        } else {
            match tokio::time::timeout(READ_STALL, messages.next()).await {
                Ok(next) => next,
                // A stalled consumer is no reason to fail: the leader has the rest.
                Err(_) => break,
            }
        };
        let msg = match next {
            None => break,
            Some(Ok(msg)) => msg,
            Some(Err(e)) if follow => return Err(e.into()),
            // The replica serving the reader went away: the leader has the rest.
            Some(Err(_)) => break,
        };
        let info = msg.info()?;
        let (seq, remaining) = (info.stream_sequence, info.pending);
        let stored_at = to_chrono(info.published);
        next_seq = seq + 1;
        let too_early = since.is_some_and(|s| stored_at < s);
        if !too_early
            && !sink(StoredMessage {
                seq,
                payload: msg.payload.clone(),
                stored_at,
            })
        {
            return Ok(ConsumerRead::SinkDone);
        }
        if !follow && remaining == 0 {
            break;
        }
    }
    Ok(ConsumerRead::Ended { next_seq })
}

/// The whole read from the stream leader (no consumer could be created).
async fn read_all_from_leader(
    stream: &jetstream::stream::Stream,
    filter_subject: &str,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: u64,
    sink: impl FnMut(StoredMessage) -> bool,
) -> Result<(), jetstream::stream::LastRawMessageError> {
    let state = &stream.cached_info().state;
    let first = match since {
        Some(since) => {
            first_seq_since(
                stream,
                filter_subject,
                since,
                state.first_sequence,
                state.last_sequence,
            )
            .await?
        }
        None => state.first_sequence,
    };
    read_from_leader(stream, filter_subject, first, until, since, sink).await
}

/// The first sequence from which messages on `filter_subject` were stored at or after
/// `since`, found by bisection over `[first, last]` with requests to the stream leader
/// (store times grow with the sequence).
async fn first_seq_since(
    stream: &jetstream::stream::Stream,
    filter_subject: &str,
    since: chrono::DateTime<chrono::Utc>,
    first: u64,
    last: u64,
) -> Result<u64, jetstream::stream::LastRawMessageError> {
    use jetstream::stream::LastRawMessageErrorKind;
    let (mut low, mut high) = (first.max(1), last.saturating_add(1));
    while low < high {
        let mid = low + (high - low) / 2;
        match stream
            .get_first_raw_message_by_subject(filter_subject, mid)
            .await
        {
            Ok(msg) if to_chrono(msg.time) < since => low = msg.sequence + 1,
            Ok(_) => high = mid,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => high = mid,
            Err(e) => return Err(e),
        }
    }
    Ok(low.min(high))
}

/// Reads `filter_subject` from `next_seq` up to `until`, one message per request to the
/// stream leader (never a replica), skipping messages stored before `since`.
async fn read_from_leader(
    stream: &jetstream::stream::Stream,
    filter_subject: &str,
    mut next_seq: u64,
    until: u64,
    since: Option<chrono::DateTime<chrono::Utc>>,
    mut sink: impl FnMut(StoredMessage) -> bool,
) -> Result<(), jetstream::stream::LastRawMessageError> {
    use jetstream::stream::LastRawMessageErrorKind;
    while next_seq <= until {
        let msg = match stream
            .get_first_raw_message_by_subject(filter_subject, next_seq)
            .await
        {
            Ok(msg) => msg,
            Err(e) if matches!(e.kind(), LastRawMessageErrorKind::NoMessageFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        if msg.sequence > until {
            return Ok(());
        }
        next_seq = msg.sequence + 1;
        let stored_at = to_chrono(msg.time);
        if since.is_some_and(|s| stored_at < s) {
            continue;
        }
        if !sink(StoredMessage {
            seq: msg.sequence,
            payload: msg.payload,
            stored_at,
        }) {
            return Ok(());
        }
    }
    Ok(())
}

/// The first and last sequence the stream holds now (`(0, 0)` when empty), from the leader.
pub async fn stream_bounds(
    js: &jetstream::Context,
    stream_name: &str,
) -> Result<(u64, u64), ReadError> {
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| ReadError::new(stream_name, e))?;
    let state = &stream.cached_info().state;
    Ok((state.first_sequence, state.last_sequence))
}

/// Reads `filter_subject` from sequence `from` through `to` (inclusive), oldest first, with
/// an ephemeral ordered consumer, handing each message to `sink` until it returns false.
/// A bounded window: the console pages the audit log backwards from the end with it, so a
/// page never reads the whole stream.
pub async fn read_range(
    js: &jetstream::Context,
    stream_name: &str,
    filter_subject: &str,
    from: u64,
    to: u64,
    mut sink: impl FnMut(StoredMessage) -> bool,
) -> Result<(), ReadError> {
    use async_nats::jetstream::consumer::{self, DeliverPolicy};
    use futures::StreamExt;
    let read_err = |e: NatsSource| ReadError::new(stream_name, e);
    if from > to {
        return Ok(());
    }
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| read_err(e.into()))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter_subject.to_string(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|e| read_err(e.into()))?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(|e| read_err(e.into()))?;
    while let Ok(Some(next)) = tokio::time::timeout(READ_STALL, messages.next()).await {
        let msg = next.map_err(|e| read_err(e.into()))?;
        let info = msg.info().map_err(&read_err)?;
        let (seq, remaining) = (info.stream_sequence, info.pending);
        if seq > to {
            break;
        }
        let stored = StoredMessage {
            seq,
            payload: msg.payload.clone(),
            stored_at: to_chrono(info.published),
        };
        if !sink(stored) || remaining == 0 || seq == to {
            break;
        }
    }
    Ok(())
}

/// Messages stored on `filter_subject` after sequence `after` (from now on when `None`),
/// for live views: an ephemeral ordered consumer. Ends when the connection does.
pub async fn follow_new(
    js: &jetstream::Context,
    stream_name: &str,
    filter_subject: &str,
    after: Option<u64>,
) -> Result<futures::stream::BoxStream<'static, StoredMessage>, ReadError> {
    use async_nats::jetstream::consumer::{self, DeliverPolicy};
    use futures::StreamExt;
    let read_err = |e: NatsSource| ReadError::new(stream_name, e);
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| read_err(e.into()))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter_subject.to_string(),
            deliver_policy: match after {
                Some(seq) => DeliverPolicy::ByStartSequence {
                    start_sequence: seq.saturating_add(1),
                },
                None => DeliverPolicy::New,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| read_err(e.into()))?;
    let messages = consumer.messages().await.map_err(|e| read_err(e.into()))?;
    Ok(messages
        .filter_map(|next| async move {
            let msg = next.ok()?;
            let info = msg.info().ok()?;
            Some(StoredMessage {
                seq: info.stream_sequence,
                payload: msg.payload.clone(),
                stored_at: to_chrono(info.published),
            })
        })
        .boxed())
}

fn to_chrono(t: time::OffsetDateTime) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_failures_are_classified_once() {
        let refused = StoreError::nats("k", kv::EntryError::from(kv::EntryErrorKind::InvalidKey));
        assert!(!refused.is_unavailable());
        for unavailable in [
            StoreError::nats("k", kv::EntryError::from(kv::EntryErrorKind::TimedOut)),
            StoreError::nats("k", kv::PutError::from(kv::PutErrorKind::Publish)),
            StoreError::nats("k", kv::UpdateError::from(kv::UpdateErrorKind::Other)),
            StoreError::nats("k", kv::WatcherError::from(kv::WatcherErrorKind::Consumer)),
        ] {
            assert!(unavailable.is_unavailable(), "{unavailable}");
        }
        let undecodable = serde_json::from_slice::<u8>(b"x").expect_err("not JSON");
        assert!(!StoreError::codec("k", undecodable).is_unavailable());
    }

    async fn stored_seqs(
        js: &jetstream::Context,
        stream: &str,
        filter: &str,
        from: ReadFrom,
        limit: usize,
    ) -> Vec<u64> {
        let mut seqs = Vec::new();
        read_stored(js, stream, filter, from, false, |m| {
            seqs.push(m.seq);
            seqs.len() < limit
        })
        .await
        .expect("read");
        seqs
    }

    async fn leader_seqs(
        js: &jetstream::Context,
        filter: &str,
        from_seq: u64,
        until: u64,
        since: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Vec<u64> {
        let stream = js.get_stream("READS").await.expect("stream");
        let mut seqs = Vec::new();
        read_from_leader(&stream, filter, from_seq, until, since, |m| {
            seqs.push(m.seq);
            true
        })
        .await
        .expect("leader read");
        seqs
    }

    /// Stream `name` on `<p>.>` holding `<p>.a.1 <p>.b.1 | <p>.a.2 <p>.b.2 <p>.a.3` (seq 1 to 5);
    /// returns an instant between seq 2 and 3.
    async fn fill(
        js: &jetstream::Context,
        name: &str,
        p: &str,
        max_consumers: i32,
    ) -> chrono::DateTime<chrono::Utc> {
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{p}.>")],
            max_consumers,
            ..Default::default()
        })
        .await
        .expect("stream");
        let mut later = chrono::Utc::now();
        for (i, subject) in ["a.1", "b.1", "a.2", "b.2", "a.3"].iter().enumerate() {
            if i == 2 {
                tokio::time::sleep(Duration::from_millis(30)).await;
                later = chrono::Utc::now();
            }
            let ack = js
                .publish(format!("{p}.{subject}"), "x".into())
                .await
                .expect("publish")
                .await
                .expect("ack");
            assert_eq!(ack.sequence, i as u64 + 1);
        }
        later
    }

    /// Both halves of a read (replica consumer, then leader) return exactly the matching
    /// messages, once each, honouring the subject filter, the start time and the sink.
    #[tokio::test]
    async fn stored_reads_are_exact_through_consumer_and_leader() {
        let server = PrivateNatsServer::start().unwrap_or_else(|e| panic!("{e}"));
        let client = async_nats::connect(server.url.as_str())
            .await
            .expect("connect");
        let js = jetstream::new(client);
        let later = fill(&js, "READS", "r", -1).await;
        let read =
            |filter: &'static str, from, limit| stored_seqs(&js, "READS", filter, from, limit);
        assert_eq!(read("r.a.*", ReadFrom::Beginning, 99).await, [1, 3, 5]);
        assert_eq!(read("r.>", ReadFrom::Time(later), 99).await, [3, 4, 5]);
        assert_eq!(read("r.>", ReadFrom::Beginning, 2).await, [1, 2]);
        assert!(read("r.c.*", ReadFrom::Beginning, 99).await.is_empty());

        assert_eq!(leader_seqs(&js, "r.a.*", 1, 5, None).await, [1, 3, 5]);
        assert_eq!(leader_seqs(&js, "r.a.*", 4, 5, None).await, [5]);
        assert_eq!(leader_seqs(&js, "r.>", 1, 5, Some(later)).await, [3, 4, 5]);
        assert!(leader_seqs(&js, "r.>", 6, 9, None).await.is_empty());
        assert_eq!(
            leader_seqs(&js, "r.a.*", 1, 4, None).await,
            [1, 3],
            "a read stops at the end the stream had when it started"
        );

        let stream = js.get_stream("READS").await.expect("stream");
        let start = |filter: &'static str, since| {
            let stream = stream.clone();
            async move {
                first_seq_since(&stream, filter, since, 1, 5)
                    .await
                    .expect("bisect")
            }
        };
        assert_eq!(start("r.>", later).await, 3);
        assert_eq!(
            start("r.b.*", later).await,
            3,
            "r.b.1 (seq 2) is the last one before"
        );
        assert_eq!(start("r.>", later - chrono::Duration::hours(1)).await, 1);
        assert_eq!(start("r.>", chrono::Utc::now()).await, 6);
    }

    /// When no reader consumer can be created (here: the stream's consumer limit is
    /// taken), the whole read is served by the leader, with the same results.
    #[tokio::test]
    async fn stored_reads_fall_back_to_the_leader_without_a_consumer() {
        let server = PrivateNatsServer::start().unwrap_or_else(|e| panic!("{e}"));
        let client = async_nats::connect(server.url.as_str())
            .await
            .expect("connect");
        let js = jetstream::new(client);
        let later = fill(&js, "CAPPED", "c", 1).await;
        let stream = js.get_stream("CAPPED").await.expect("stream");
        stream
            .create_consumer(jetstream::consumer::pull::Config {
                durable_name: Some("only".into()),
                ..Default::default()
            })
            .await
            .expect("the one allowed consumer");
        let refused = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await;
        assert!(refused.is_err(), "premise: no room for a reader consumer");
        let read =
            |filter: &'static str, from, limit| stored_seqs(&js, "CAPPED", filter, from, limit);
        assert_eq!(read("c.a.*", ReadFrom::Beginning, 99).await, [1, 3, 5]);
        assert_eq!(read("c.>", ReadFrom::Time(later), 99).await, [3, 4, 5]);
        assert_eq!(read("c.b.*", ReadFrom::Time(later), 99).await, [4]);
        assert_eq!(read("c.>", ReadFrom::Beginning, 2).await, [1, 2]);
        let following =
            read_stored(&js, "CAPPED", "c.>", ReadFrom::Beginning, true, |_| false).await;
        assert!(following.is_err(), "following needs a consumer: it says so");
    }
}
