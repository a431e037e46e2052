//! The command line: parses arguments, loads configuration, sets up logging and wires the
//! roles together. It is the only module that reads argv or the environment.
//!
//! Exit codes: 0 success, 1 a check or test failed (or a runtime error), 2 invalid
//! configuration or usage.

/// The read-side commands (`audit`, `explain`, `replay`, `follow-ups`), public so that
/// integration tests can drive them without the command line.
pub mod inspect;
mod report;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError};

#[derive(Debug, Parser)]
#[command(
    name = "concierge",
    version,
    about = "Guest-messaging automation for Channex: poller, Rhai rules, effectively-once executor",
    propagate_version = true
)]
pub struct Cli {
    /// Configuration file (default: $CONCIERGE_CONFIG, else ./concierge.toml if present).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CONCIERGE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `concierge=debug`
    /// [default: info; warn for `demo`, whose timeline goes to stdout].
    #[arg(long, global = true, env = "CONCIERGE_LOG")]
    log: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service: all roles, or one with --role.
    Run(RunArgs),
    /// Self-contained showcase: simulator, private NATS if needed, example rules, timeline.
    Demo(DemoArgs),
    /// Run the Channex Messages API simulator (for trials and tests).
    Sim(SimArgs),
    /// Check and test rule scripts and templates.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Query the audit log.
    Audit(inspect::AuditArgs),
    /// Re-run rules (dry-run) over stored events and compare with what was done.
    Replay(inspect::ReplayArgs),
    /// Show or cancel pending follow-up timers.
    #[command(subcommand, name = "follow-ups")]
    FollowUps(inspect::FollowUpsCommand),
    /// Delete one thread's personal data (ledger texts, timers, audit records, events).
    Purge(PurgeArgs),
    /// Reports: `report responses` (response times and the OTAs' scores).
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Manage the web console.
    #[command(subcommand)]
    Console(ConsoleCommand),
}

#[derive(Debug, Subcommand)]
enum ConsoleCommand {
    /// End every console session issued until now, on every replica (a lost laptop):
    /// everyone logs in again. Bearer clients are not affected (change the token for those).
    RevokeSessions,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    /// The Channex thread id whose data is deleted.
    #[arg(long, value_parser = channex_id_arg)]
    thread: String,
    /// Its property: only that property's events are deleted.
    #[arg(long, value_parser = channex_id_arg)]
    property: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Role {
    All,
    Poller,
    Worker,
    Scheduler,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Which role to run in this process.
    #[arg(long, value_enum, default_value_t = Role::All)]
    role: Role,
    /// On the very first poll, emit messages newer than this (e.g. `2h`) instead of only
    /// recording a baseline.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_arg)]
    backfill: Option<std::time::Duration>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the demo's services running after the script (Ctrl-C to stop).
    #[arg(long)]
    keep_running: bool,
    /// Also serve the web console (its URL and a random token are printed), seed a few
    /// conversations for it after the script and keep running until Ctrl-C.
    #[arg(long)]
    serve: bool,
    /// Where the console listens with --serve (port 0: any free port).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:0",
        requires = "serve"
    )]
    listen: String,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Port to listen on (0 = any free port).
    #[arg(long, default_value_t = 8089)]
    port: u16,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// API key the simulator accepts in `user-api-key`.
    #[arg(
        long,
        default_value = "sim-key",
        env = "CHANNEX_API_KEY",
        hide_env_values = true
    )]
    api_key: String,
    /// Fraction of API requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    fault_429: f64,
    /// Fraction of API requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    fault_500: f64,
    /// Added latency per request, e.g. `50ms`.
    #[arg(long, value_parser = parse_duration_arg)]
    latency: Option<std::time::Duration>,
    /// Seed a sample property with a few conversations.
    #[arg(long)]
    seed_demo: bool,
}

#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Compile every rule and render every template a rule can use; exit 1 on problems.
    Check(RulesDirs),
    /// Run fixture tests (event in, expected plan out); exit 1 on failure.
    Test(RulesTestArgs),
    /// Measure the rules on a labelled guest-message corpus: wrong answers, missed topics,
    /// precision and recall per language and per topic; exit 1 over 1% wrong or under 90%
    /// recall in any language.
    Eval(RulesEvalArgs),
    /// Show what the understanding step reads in one message: act, topics, confidence,
    /// evidence (JSON).
    Understand(RulesUnderstandArgs),
}

#[derive(Debug, Args)]
struct RulesUnderstandArgs {
    #[command(flatten)]
    dirs: RulesDirs,
    /// The thread's language (ISO 639-1); default: detected from the text.
    #[arg(long)]
    language: Option<String>,
    /// The guest's message.
    text: String,
}

#[derive(Debug, Args)]
struct RulesEvalArgs {
    #[command(flatten)]
    dirs: RulesDirs,
    /// A corpus file (.jsonl) or folder (default: <rules dir>/corpus).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Which messages: heldout (default; what the topic files never saw), train or all.
    #[arg(long, default_value = "heldout")]
    split: String,
    /// Also list every wrong answer and missed topic with what was understood.
    #[arg(long)]
    details: bool,
}

#[derive(Debug, Args)]
struct RulesDirs {
    /// Rules directory (default: rules.dir from config).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Templates directory (default: rules.templates_dir from config).
    #[arg(long)]
    templates: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RulesTestArgs {
    #[command(flatten)]
    dirs: RulesDirs,
    /// Fixture directory (default: <rules dir>/tests).
    #[arg(long)]
    fixtures: Option<PathBuf>,
}

fn parse_duration_arg(s: &str) -> Result<std::time::Duration, String> {
    crate::config::parse_duration(s)
}

/// An id argument: the Channex id rule the parser applies to everything Channex sends
/// ([`crate::channex::wire::is_valid_id`]), so a typo such as `..` or `a.b` is a usage
/// error (exit 2) instead of a wrong subject, key or URL.
pub(crate) fn channex_id_arg(s: &str) -> Result<String, String> {
    if crate::channex::wire::is_valid_id(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{} is not a Channex id ([A-Za-z0-9_-], 1 to {} characters)",
            crate::channex::wire::describe_id(s),
            crate::channex::wire::MAX_ID_LEN
        ))
    }
}

fn init_logging(format: LogFormat, filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// The config path: `--config`, else `CONCIERGE_CONFIG`, else `./concierge.toml` if present.
fn config_path(explicit: Option<PathBuf>) -> Option<PathBuf> {
    explicit
        .or_else(|| std::env::var_os("CONCIERGE_CONFIG").map(PathBuf::from))
        .or_else(|| {
            let local = PathBuf::from("concierge.toml");
            local.is_file().then_some(local)
        })
}

fn load_config(explicit: Option<PathBuf>) -> Result<Config, ConfigError> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    Config::load(config_path(explicit).as_deref(), &env)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    init_logging(cli.log_format, cli.log.as_deref().unwrap_or(default_filter));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(dispatch(cli))
}

async fn dispatch(cli: Cli) -> ExitCode {
    // The simulator and the demo need no configuration file.
    match cli.command {
        Command::Sim(args) => return report(run::sim(args).await),
        Command::Demo(args) => return report(crate::cli::run::demo(args).await),
        _ => {}
    }
    let config = match load_config(cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run(args) => match config.require_channex_key() {
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
            Ok(()) => report(run::run(config, args).await),
        },
        Command::Rules(RulesCommand::Check(dirs)) => {
            inspect::rules_check(&config, dirs.dir, dirs.templates)
        }
        Command::Rules(RulesCommand::Test(args)) => {
            inspect::rules_test(&config, args.dirs.dir, args.dirs.templates, args.fixtures)
        }
        Command::Rules(RulesCommand::Eval(args)) => inspect::rules_eval(
            &config,
            args.dirs.dir,
            args.dirs.templates,
            args.corpus,
            &args.split,
            args.details,
        ),
        Command::Rules(RulesCommand::Understand(args)) => {
            inspect::rules_understand(&config, args.dirs.dir, args.language, &args.text)
        }
        Command::Audit(args) => report(inspect::audit(&config, args).await),
        Command::Replay(args) => report(inspect::replay(&config, args).await),
        Command::FollowUps(cmd) => report(inspect::follow_ups(&config, cmd).await),
        Command::Purge(args) => report(purge(&config, args).await),
        Command::Console(ConsoleCommand::RevokeSessions) => report(revoke_sessions(&config).await),
        Command::Report(cmd) => report(report::run(&config, cmd).await),
        Command::Sim(_) | Command::Demo(_) => ExitCode::SUCCESS,
    }
}

/// `concierge console revoke-sessions`: moves the sessions epoch (NATS) to now.
async fn revoke_sessions(config: &Config) -> anyhow::Result<()> {
    let infra = crate::store::nats::Infra::setup(&config.nats).await?;
    let revocations = crate::store::sessions::SessionRevocations::new(infra.sessions.clone());
    let epoch = revocations.revoke_all(chrono::Utc::now()).await?;
    println!(
        "ended every console session issued until {}",
        epoch.to_rfc3339()
    );
    Ok(())
}

async fn purge(config: &Config, args: PurgeArgs) -> anyhow::Result<()> {
    let infra = crate::store::nats::Infra::setup(&config.nats).await?;
    let r = crate::store::purge::purge_thread(
        &infra,
        &config.nats.prefix,
        &args.thread,
        args.property.as_deref(),
    )
    .await?;
    println!(
        "purged thread {}: ledger_keys={} timers={} audit_records={} events={} bookings={} responses={}",
        args.thread, r.ledger_keys, r.timers, r.audit_records, r.events, r.bookings, r.responses
    );
    Ok(())
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
