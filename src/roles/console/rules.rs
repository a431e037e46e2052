//! The rules page: each running rule (name, file, version, enabled, dry run) and template
//! (name, property override, version) from the live content snapshot, when it was last
//! reloaded, the files rejected on reload (their `rule_rejected` audit records, whose
//! error names `file:line`), and per rule the count of each outcome over the last 24 h
//! with the last errors.
//!
//! Must not: read more than the newest [`MAX_COUNTED`] records for the counts (the page
//! says so when it stops there); rejected files are looked for among the records about no
//! property and no thread only ([`audit::latest_unscoped`]: the stream filters them).

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Extension;
use chrono::Duration;
use maud::{html, Markup};

use super::auth::Authed;
use super::layout::{self, Field, Nav};
use super::{Console, ConsoleError};
use crate::plan::Content;
use crate::store::audit::{self, AuditFilter, AuditRecord, Outcome};

/// Records counted at most for the 24 h statistics (the newest ones: the read goes
/// backwards from the end of the stream).
pub const MAX_COUNTED: usize = 20_000;
/// Errors listed.
const LAST_ERRORS: usize = 10;

const COLUMNS: [Outcome; 5] = [
    Outcome::Executed,
    Outcome::DryRun,
    Outcome::Skipped,
    Outcome::Failed,
    Outcome::RuleError,
];

/// Per rule, the count of each outcome; plus the newest errors.
#[derive(Debug, Default)]
pub struct Stats {
    pub counts: BTreeMap<String, BTreeMap<&'static str, u64>>,
    pub errors: Vec<AuditRecord>,
    pub truncated: bool,
}

impl Stats {
    pub fn add(&mut self, r: AuditRecord) {
        let Some(rule) = r.rule.clone() else { return };
        *self
            .counts
            .entry(rule)
            .or_default()
            .entry(r.outcome.as_str())
            .or_default() += 1;
        if matches!(r.outcome, Outcome::Failed | Outcome::RuleError) {
            self.errors.push(r);
            if self.errors.len() > LAST_ERRORS {
                self.errors.remove(0);
            }
        }
    }
}

async fn stats(console: &Console) -> Result<Stats, ConsoleError> {
    let filter = AuditFilter {
        since: Some(console.now() - Duration::hours(24)),
        ..Default::default()
    };
    let js = &console.deps().infra.js;
    let page = audit::latest(
        js,
        console.prefix(),
        &filter,
        None,
        MAX_COUNTED,
        MAX_COUNTED as u64,
    )
    .await?;
    let mut stats = Stats {
        truncated: page.older.is_some(),
        ..Default::default()
    };
    // Oldest first, so the newest errors are the ones kept.
    for (_, r) in page.records.into_iter().rev() {
        stats.add(r);
    }
    stats.errors.reverse();
    Ok(stats)
}

pub async fn page(
    State(console): State<Console>,
    Extension(authed): Extension<Authed>,
) -> Result<Markup, ConsoleError> {
    let rejected_filter = AuditFilter {
        outcome: Some(Outcome::RuleRejected),
        ..Default::default()
    };
    let js = &console.deps().infra.js;
    // Reload records are about no property and no thread: the stream filters them.
    let rejected = audit::latest_unscoped(js, console.prefix(), &rejected_filter, 20, u64::MAX);
    let (rejected, stats) = tokio::join!(rejected, stats(&console));
    let (rejected, stats) = (rejected?, stats?);
    let content = console.deps().live.current();
    let body = html! {
        h1 { "Rules" }
        p.lead { "Last reload: "
            @match console.deps().reloads.last() { Some(at) => (layout::time(at)), None => "not yet" }
            " · edits to rules/ and templates/ are picked up live." }
        (rules_table(&content, &stats))
        @if stats.truncated { p.muted { "Counts cover the newest " (MAX_COUNTED) " records of the last 24 h." } }
        h2 { "Rejected files" }
        (rejected_table(&rejected.records))
        h2 { "Last errors (24 h)" }
        (errors_table(&console, &stats.errors))
        h2 { "Templates" }
        (templates_table(&content))
    };
    Ok(layout::page("Rules", Nav::Rules, Some(&authed.csrf), body))
}

fn rules_table(content: &Content, stats: &Stats) -> Markup {
    let empty = BTreeMap::new();
    html! {
        div.table-wrap { table #rules {
            thead { tr { th { "Rule" } th.optional { "File" } th { "Version" } th { "State" }
                @for o in COLUMNS { th { (o.as_str()) " 24h" } } } }
            tbody {
                @if content.rules.is_empty() { tr { td.empty colspan="9" { "No rule loaded." } } }
                @for r in content.rules.rules() {
                    @let counts = stats.counts.get(&r.name).unwrap_or(&empty);
                    tr.rule data-rule=(r.name) {
                        td { strong { (r.meta.name) } @if !r.meta.description.is_empty() { div.muted { (r.meta.description) } } }
                        td.optional.mono { (r.file.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()) }
                        td.mono { (r.version) }
                        td {
                            @if r.meta.enabled { span.pill.ok { "enabled" } } @else { span.pill.skip { "disabled" } }
                            @if r.meta.dry_run { " " span.pill.dry { "dry run" } }
                        }
                        @for o in COLUMNS { td { (counts.get(o.as_str()).copied().unwrap_or(0)) } }
                    }
                }
            }
        } }
    }
}

fn rejected_table(records: &[(u64, AuditRecord)]) -> Markup {
    html! {
        div.table-wrap { table #rejected {
            thead { tr { th { "When" } th { "File" } th { "Problem (file:line)" } } }
            tbody {
                @if records.is_empty() { tr { td.empty colspan="3" { "No file rejected." } } }
                @for (_, r) in records {
                    tr.rejected {
                        td { (layout::time(r.at)) }
                        td.mono { (layout::shown(r.rule.as_deref().unwrap_or("—"), Field::Detail)) }
                        td.mono { (layout::shown(r.error.as_deref().unwrap_or(""), Field::Detail)) }
                    }
                }
            }
        } }
    }
}

fn errors_table(console: &Console, errors: &[AuditRecord]) -> Markup {
    html! {
        div.table-wrap { table #errors {
            thead { tr { th { "When" } th { "Rule" } th { "Thread" } th { "Outcome" } th { "Error" } } }
            tbody {
                @if errors.is_empty() { tr { td.empty colspan="5" { "No error in the last 24 h." } } }
                @for r in errors {
                    tr {
                        td { (layout::time(r.at)) }
                        td { (layout::shown(r.rule.as_deref().unwrap_or("—"), Field::Detail)) }
                        td { @if let Some(t) = &r.thread_id { (layout::thread_link(t)) } }
                        td { (layout::outcome_pill(r.outcome)) }
                        td { (layout::shown(r.error.as_deref().unwrap_or(""), Field::Detail)) " "
                            span.muted { (r.property_id.as_deref().map(|p| console.property_name(p)).unwrap_or_default()) } }
                    }
                }
            }
        } }
    }
}

fn templates_table(content: &Content) -> Markup {
    html! {
        div.table-wrap { table #templates {
            thead { tr { th { "Template" } th { "Property override" } th.optional { "File" } th { "Version" } } }
            tbody {
                @for t in content.templates.files() {
                    tr {
                        td { strong { (t.name) } }
                        td { (t.property_id.as_deref().unwrap_or("—")) }
                        td.optional.mono { (t.file.file_name().map(|f| f.to_string_lossy()).unwrap_or_default()) }
                        td.mono { (t.version) }
                    }
                }
            }
        } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_count_outcomes_per_rule_and_keep_the_newest_errors() {
        let mut stats = Stats::default();
        for i in 0..15 {
            let mut r = AuditRecord::standalone(format!("e{i}"), Outcome::Failed);
            r.rule = Some("faq".into());
            stats.add(r);
        }
        let mut ok = AuditRecord::standalone("ok", Outcome::Executed);
        ok.rule = Some("faq".into());
        stats.add(ok);
        stats.add(AuditRecord::standalone("no rule", Outcome::Executed));
        assert_eq!(stats.counts["faq"]["failed"], 15);
        assert_eq!(stats.counts["faq"]["executed"], 1);
        assert_eq!(stats.counts.len(), 1);
        assert_eq!(stats.errors.len(), LAST_ERRORS);
        assert_eq!(stats.errors.last().map(|r| r.id.as_str()), Some("e14"));
    }
}
