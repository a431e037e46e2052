//! Shared helpers of the `harness = false` benches: memory readings, statistics, a plain
//! text table, JSON results under `target/bench/`, and a private nats-server that fails
//! with the install command when `nats-server` is missing.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use concierge::store::nats::PrivateNatsServer;

/// Resident set size of this process, from `/proc/self/status` (kB).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mem {
    /// Current resident set (`VmRSS`).
    pub rss_kb: u64,
    /// Peak resident set so far (`VmHWM`).
    pub hwm_kb: u64,
}

impl Mem {
    /// This process's memory.
    pub fn read() -> Mem {
        Mem::of("self")
    }

    /// The memory of process `pid` (`"self"` for this one), from `/proc/<pid>/status`.
    pub fn of(pid: &str) -> Mem {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0)
        };
        Mem {
            rss_kb: field("VmRSS:"),
            hwm_kb: field("VmHWM:"),
        }
    }

    pub fn mib(kb: u64) -> String {
        format!("{:.1} MiB", kb as f64 / 1024.0)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"vm_rss_kb": self.rss_kb, "vm_hwm_kb": self.hwm_kb})
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median of the values (the mean of the two middle ones for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Nearest-rank percentile of already sorted values (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn yes_no(met: bool) -> &'static str {
    if met {
        "yes"
    } else {
        "NO"
    }
}

/// A plain text table with left-aligned columns.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).map(String::as_str).unwrap_or("");
                s.push_str(&format!("| {cell:<w$} "));
            }
            s.push('|');
            s
        };
        println!("{}", line(&self.header));
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("{}", line(&rule).replace(' ', "-"));
        for row in &self.rows {
            println!("{}", line(row));
        }
    }
}

/// `target/bench/` (honouring `CARGO_TARGET_DIR`).
pub fn results_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench")
}

/// Writes `target/bench/<name>.json` and says where.
pub fn write_json(name: &str, value: &serde_json::Value) {
    let dir = results_dir();
    let path = dir.join(format!("{name}.json"));
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let written = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&path, body));
    match written {
        Ok(()) => println!("\nresults written to {}", path.display()),
        Err(e) => {
            eprintln!("error: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}

/// A private `nats-server -js`; exits with the install hint when it cannot start.
pub fn nats_server() -> PrivateNatsServer {
    match PrivateNatsServer::start() {
        Ok(s) => s,
        Err(e) => fail(&format!("this benchmark needs a private nats-server: {e}")),
    }
}

/// The streams and buckets every role uses, on the private server at `cfg`.
pub async fn infra(cfg: &concierge::config::NatsConfig) -> concierge::store::nats::Infra {
    concierge::store::nats::Infra::setup(cfg)
        .await
        .unwrap_or_else(|e| fail(&format!("JetStream setup on the private server: {e}")))
}

/// Runs a bench's `main` future on a multi-threaded tokio runtime.
pub fn block_on(bench: impl std::future::Future<Output = ()>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(&format!("cannot start the tokio runtime: {e}")));
    runtime.block_on(bench);
}

/// Prints `error: <message>` and exits 1 (benches have no test harness to report to).
pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

/// An environment override for quick runs, e.g. `BENCH_THREADS=2000`.
pub fn env_usize(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| fail(&format!("{name}={v:?} is not a number"))),
        Err(_) => default,
    }
}

/// A short description of the machine for the results.
pub fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    serde_json::json!({"cores": cores, "cpu": cpu})
}

pub fn print_machine() {
    let m = machine();
    println!(
        "machine: {} cores ({})",
        m["cores"],
        m["cpu"].as_str().unwrap_or("?")
    );
}
