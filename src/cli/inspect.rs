//! The read-side commands: `rules check|test`, `audit` (+ `explain`), `replay` and
//! `follow-ups`: argument handling and printing only. The logic lives below
//! (`authoring` for check/test/replay, `store::audit` for the audit log). None of them
//! calls Channex; `replay` only reads stored events.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};

pub use crate::authoring::replay::{
    compare_replay, replay_text, short, stored_events, PlanLine, ReplayEntry,
};
use crate::config::Config;
use crate::plan::rules::{RuleEngine, RuleLimits};
use crate::store::audit::{self, AuditFilter, AuditRecord, Outcome};
use crate::store::nats::Infra;

// ---------- rules check / test ----------

pub fn rules_check(config: &Config, dir: Option<PathBuf>, templates: Option<PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(|| config.rules.dir.clone());
    let templates = templates.unwrap_or_else(|| config.rules.templates_dir.clone());
    // Check against the configured properties' real vars when there are any, so a
    // template using a var a property lacks is caught before a guest would see it.
    let options = crate::authoring::check::CheckOptions {
        properties: config
            .properties
            .keys()
            .map(|id| config.property_info(id))
            .collect(),
        limits: None,
    };
    let report = crate::authoring::check::check_with(&dir, &templates, &options);
    println!("{report}");
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn rules_test(
    config: &Config,
    dir: Option<PathBuf>,
    templates: Option<PathBuf>,
    fixtures: Option<PathBuf>,
) -> ExitCode {
    let dir = dir.unwrap_or_else(|| config.rules.dir.clone());
    let templates = templates.unwrap_or_else(|| config.rules.templates_dir.clone());
    let report =
        crate::authoring::fixtures::run_fixture_tests(&dir, &templates, fixtures.as_deref());
    println!("{report}");
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `rules eval`: the figures on a labelled corpus; failure over 1% wrong answers or under
/// 90% recall in any language (the targets of the shipped rules).
pub fn rules_eval(
    config: &Config,
    dir: Option<PathBuf>,
    templates: Option<PathBuf>,
    corpus: Option<PathBuf>,
    split: &str,
    details: bool,
) -> ExitCode {
    use crate::authoring::eval::{self, Split};
    let dir = dir.unwrap_or_else(|| config.rules.dir.clone());
    let templates = templates.unwrap_or_else(|| config.rules.templates_dir.clone());
    let split = match split {
        "heldout" => Split::Heldout,
        "train" => Split::Train,
        "all" => Split::All,
        other => {
            eprintln!("error: --split {other:?}: one of heldout, train, all");
            return ExitCode::from(2);
        }
    };
    let corpus_path = corpus.unwrap_or_else(|| dir.join("corpus"));
    let messages = match eval::read_corpus(&corpus_path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let engine = crate::plan::rules::RuleEngine::default();
    let (content, problems) = crate::content::load_content(&engine, &dir, &templates);
    for p in problems.all() {
        eprintln!("warning: {p}");
    }
    let report = eval::evaluate(&engine, &content, &messages, split);
    println!("{report}");
    if details {
        print!("{}", report.details());
    }
    let ok = report
        .by_language
        .values()
        .all(|t| t.wrong_rate() <= eval::MAX_WRONG_RATE && t.recall() >= eval::MIN_RECALL);
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `rules understand`: the understanding of one message, as rules see it.
pub fn rules_understand(
    config: &Config,
    dir: Option<PathBuf>,
    language: Option<String>,
    text: &str,
) -> ExitCode {
    let dir = dir.unwrap_or_else(|| config.rules.dir.clone());
    let topics_dir = crate::content::topics::topics_dir(&dir);
    let (topics, problems) = crate::content::topics::load_topics(&topics_dir, Vec::new());
    for p in &problems {
        eprintln!("warning: {p}");
    }
    let language = language.or_else(|| crate::base::language::detect(text));
    let understood = topics.understand(text, language.as_deref());
    println!("{}", understood.summary());
    match serde_json::to_string_pretty(&understood) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("error: {e}"),
    }
    ExitCode::SUCCESS
}

// ---------- audit ----------

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AuditArgs {
    #[command(subcommand)]
    explain: Option<AuditCommand>,
    #[command(flatten)]
    filter: FilterArgs,
    /// Keep printing new records as they arrive.
    #[arg(long)]
    follow: bool,
    /// One JSON record per line instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// For each event of a thread: which rules ran, what they planned, what happened.
    Explain {
        #[arg(value_parser = super::channex_id_arg)]
        thread_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    #[arg(long, value_parser = super::channex_id_arg)]
    thread: Option<String>,
    #[arg(long, value_parser = super::channex_id_arg)]
    property: Option<String>,
    #[arg(long)]
    rule: Option<String>,
    /// executed | dry_run | skipped | failed | rule_error | rule_rejected
    #[arg(long)]
    outcome: Option<String>,
    /// A duration back from now (`2h`, `7d`) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// An RFC 3339 time or a duration back from now.
    #[arg(long)]
    until: Option<String>,
}

/// `2h` (ago) or a timestamp as [`time::parse_utc_timestamp`] reads it
/// (`2026-11-25T10:00:00Z`).
pub fn parse_point_in_time(s: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    // A time typed by a person carries its zone (RFC 3339): a zone-less one could be local
    // time read as UTC, so it is refused rather than guessed.
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let d = crate::config::parse_duration(s).map_err(anyhow::Error::msg)?;
    let back = chrono::Duration::from_std(d).context("duration too large")?;
    now.checked_sub_signed(back).context("duration too large")
}

impl FilterArgs {
    pub fn to_filter(&self, now: DateTime<Utc>) -> anyhow::Result<AuditFilter> {
        let outcome = match &self.outcome {
            Some(o) => Some(Outcome::parse(o).with_context(|| {
                format!("unknown outcome {o:?} (executed, dry_run, skipped, failed, rule_error, rule_rejected)")
            })?),
            None => None,
        };
        Ok(AuditFilter {
            thread_id: self.thread.clone(),
            property_id: self.property.clone(),
            rule: self.rule.clone(),
            outcome,
            event_id: None,
            since: self
                .since
                .as_deref()
                .map(|s| parse_point_in_time(s, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|s| parse_point_in_time(s, now))
                .transpose()?,
        })
    }
}

pub fn table_header() -> String {
    format!(
        "{:<20} {:<13} {:<22} {:<16} {:<14} {:<18} {}",
        "AT", "OUTCOME", "RULE", "ACTION", "THREAD", "REASON", "TEXT / ERROR"
    )
}

pub fn table_row(r: &AuditRecord) -> String {
    let detail = r
        .error
        .as_deref()
        .filter(|_| r.outcome != Outcome::Executed && r.outcome != Outcome::DryRun)
        .or(r.text.as_deref())
        .unwrap_or("");
    format!(
        "{:<20} {:<13} {:<22} {:<16} {:<14} {:<18} {}",
        r.at.format("%Y-%m-%d %H:%M:%S"),
        r.outcome.as_str(),
        short(r.rule.as_deref().unwrap_or("-"), 22),
        short(
            r.action
                .as_ref()
                .map_or("-", crate::store::audit::ActionKind::as_str),
            16
        ),
        short(r.thread_id.as_deref().unwrap_or("-"), 14),
        short(&r.reason.as_ref().map_or("-".into(), |x| x.as_text()), 18),
        short(detail, 70),
    )
}

pub async fn audit(config: &Config, args: AuditArgs) -> anyhow::Result<()> {
    let infra = Infra::setup(&config.nats).await?;
    if let Some(AuditCommand::Explain { thread_id, json }) = args.explain {
        let filter = AuditFilter {
            thread_id: Some(thread_id.clone()),
            ..Default::default()
        };
        let records = audit::query(&infra.js, &config.nats.prefix, &filter).await?;
        if json {
            println!("{}", serde_json::to_string_pretty(&explain(&records))?);
        } else {
            print!("{}", explain_text(&thread_id, &records));
        }
        return Ok(());
    }
    let filter = args.filter.to_filter(Utc::now())?;
    if !args.json {
        println!("{}", table_header());
    }
    let json = args.json;
    audit::read_stream(&infra.js, &config.nats.prefix, &filter, args.follow, |r| {
        if json {
            if let Ok(line) = serde_json::to_string(&r) {
                println!("{line}");
            }
        } else {
            println!("{}", table_row(&r));
        }
        true
    })
    .await?;
    Ok(())
}

/// Records grouped by event, in order of first appearance (the grouping is
/// [`audit::group_by_event`], shared with the console's thread page).
pub fn explain(records: &[AuditRecord]) -> Vec<serde_json::Value> {
    audit::group_by_event(records)
        .into_iter()
        .map(|ev| {
            // Every record of an event carries the same reading of its guest message.
            let understood = ev
                .rules
                .values()
                .flat_map(|rs| rs.iter())
                .find_map(|r| r.understood.clone());
            let rules: BTreeMap<String, Vec<serde_json::Value>> = ev
                .rules
                .into_iter()
                .map(|(rule, rs)| {
                    let actions = rs
                        .into_iter()
                        .map(|r| {
                            serde_json::json!({
                                "action": r.action, "template": r.template, "outcome": r.outcome,
                                "reason": r.reason, "text": r.text, "error": r.error,
                                "channex_message_id": r.channex_message_id,
                            })
                        })
                        .collect();
                    (rule, actions)
                })
                .collect();
            serde_json::json!({
                "event_id": ev.event_id,
                "event_type": ev.event_type,
                "at": ev.at,
                "understood": understood,
                "rules": rules,
            })
        })
        .collect()
}

pub fn explain_text(thread_id: &str, records: &[AuditRecord]) -> String {
    let mut out = format!("thread {thread_id}: {} audit records\n", records.len());
    if records.is_empty() {
        out.push_str("  (nothing recorded for this thread)\n");
    }
    for ev in explain(records) {
        out.push_str(&format!(
            "\nevent {} ({})\n",
            ev["event_id"].as_str().unwrap_or("-"),
            ev["event_type"].as_str().unwrap_or("-")
        ));
        if let Some(summary) = ev["understood"]["summary"].as_str() {
            out.push_str(&format!("  read as: {summary}\n"));
        }
        if let Some(rules) = ev["rules"].as_object() {
            for (rule, actions) in rules {
                out.push_str(&format!("  rule {rule}\n"));
                for a in actions.as_array().into_iter().flatten() {
                    let what = match (a["action"].as_str(), a["template"].as_str()) {
                        (Some(act), Some(t)) => format!("{act}({t})"),
                        (Some(act), None) => act.to_string(),
                        _ => "-".into(),
                    };
                    out.push_str(&format!(
                        "    {:<28} → {:<12} {}\n",
                        what,
                        a["outcome"].as_str().unwrap_or("-"),
                        a["reason"].as_str().unwrap_or("")
                    ));
                    if let Some(text) = a["text"].as_str() {
                        out.push_str(&format!("        text: {}\n", short(text, 100)));
                    }
                    if let Some(err) = a["error"].as_str() {
                        out.push_str(&format!("        why:  {}\n", short(err, 100)));
                    }
                }
            }
        }
    }
    out
}

// ---------- replay ----------

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// How far back to replay, e.g. `24h`, `7d`.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Rules to try (default: rules.dir from config).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Templates to render with (default: rules.templates_dir).
    #[arg(long)]
    templates: Option<PathBuf>,
    /// Only this property.
    #[arg(long, value_parser = super::channex_id_arg)]
    property: Option<String>,
    /// Only events whose plan differs from what was done.
    #[arg(long)]
    changes_only: bool,
    #[arg(long)]
    json: bool,
}

pub async fn replay(config: &Config, args: ReplayArgs) -> anyhow::Result<()> {
    let now = Utc::now();
    let since = parse_point_in_time(&args.since, now)?;
    let rules_dir = args.rules.unwrap_or_else(|| config.rules.dir.clone());
    let templates_dir = args
        .templates
        .unwrap_or_else(|| config.rules.templates_dir.clone());
    let engine = RuleEngine::new(RuleLimits::default());
    let (content, warnings) =
        crate::authoring::replay::load_content(&engine, &rules_dir, &templates_dir);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    let infra = Infra::setup(&config.nats).await?;
    let entries = crate::authoring::replay::replay_since(
        &infra.js,
        &config.nats.prefix,
        &engine,
        &content,
        since,
        args.property.as_deref(),
    )
    .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    } else {
        print!("{}", replay_text(&entries, args.changes_only));
    }
    Ok(())
}

// ---------- follow-ups ----------

#[derive(Debug, Subcommand)]
pub enum FollowUpsCommand {
    /// List pending follow-up timers, soonest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Cancel one pending follow-up (of a thread, or `booking:<id>` for a booking's).
    Cancel {
        #[arg(value_parser = timer_owner_arg)]
        thread_id: String,
        name: String,
    },
}

/// A thread id, or `booking:<id>`: either id by the Channex rule.
fn timer_owner_arg(s: &str) -> Result<String, String> {
    super::channex_id_arg(s.strip_prefix("booking:").unwrap_or(s)).map(|_| s.to_string())
}

pub async fn follow_ups(config: &Config, cmd: FollowUpsCommand) -> anyhow::Result<()> {
    let infra = Infra::setup(&config.nats).await?;
    let store = crate::store::timers::FollowUps::new(infra.followups.clone());
    match cmd {
        FollowUpsCommand::List { json } => {
            let mut timers = store.list().await?;
            timers.sort_by_key(|t| t.due_at);
            if json {
                println!("{}", serde_json::to_string_pretty(&timers)?);
            } else {
                println!("{:<22} {:<38} {:<20} PROPERTY", "DUE", "THREAD", "NAME");
                for t in &timers {
                    let owner = match &t.booking_id {
                        Some(b) => format!("booking:{b}"),
                        None => t.thread_id.clone(),
                    };
                    println!(
                        "{:<22} {:<38} {:<20} {}",
                        t.due_at.format("%Y-%m-%d %H:%M:%S"),
                        owner,
                        t.name,
                        t.property_id
                    );
                }
                println!("{} pending", timers.len());
            }
        }
        FollowUpsCommand::Cancel { thread_id, name } => {
            let scope = match thread_id.strip_prefix("booking:") {
                Some(b) => crate::store::timers::TimerScope::Booking(b),
                None => crate::store::timers::TimerScope::Thread(&thread_id),
            };
            if store.cancel_in(scope, &name).await? {
                println!("cancelled {name} on thread {thread_id}");
            } else {
                anyhow::bail!("no pending follow-up {name:?} on thread {thread_id}");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("valid timestamp")
    }

    #[test]
    fn a_point_in_time_is_a_timestamp_or_a_duration_back_from_now() {
        let now = at("2026-11-25T12:00:00Z");
        let parse = |s| parse_point_in_time(s, now).expect(s);
        assert_eq!(parse("2026-11-25T10:00:00Z"), at("2026-11-25T10:00:00Z"));
        assert_eq!(
            parse("2026-11-25T11:00:00+01:00"),
            at("2026-11-25T10:00:00Z")
        );
        assert_eq!(parse("2h"), at("2026-11-25T10:00:00Z"));
        assert_eq!(parse("7d"), at("2026-11-18T12:00:00Z"));
        assert!(parse_point_in_time("yesterday", now).is_err());
        assert!(parse_point_in_time("2026-11-25T10:00:00", now).is_err());
    }

    #[test]
    fn a_duration_reaching_before_the_calendar_is_an_error_not_a_panic() {
        let now = at("2026-11-25T12:00:00Z");
        assert!(parse_point_in_time("99999999999d", now).is_err());
    }
}
