//! `concierge report responses [--property ID] [--since 30d] [--json]`: response times and
//! the OTAs' scores, from the response records in NATS (nothing is asked of Channex).
//!
//! Owns the command's arguments and output; the report itself is
//! [`crate::roles::responses::report`], the same the console's Response page draws.

use chrono::Utc;
use clap::{Args, Subcommand};

use crate::config::Config;
use crate::roles::responses::report::{self, ReportOptions};
use crate::store::nats::Infra;
use crate::store::responses::ResponseStore;

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Response times, who answered, and the Airbnb response rate and Booking.com Reply
    /// Score as the OTAs define them (their own figures are authoritative).
    Responses(ResponsesArgs),
}

#[derive(Debug, Args)]
pub struct ResponsesArgs {
    /// Only this property.
    #[arg(long)]
    property: Option<String>,
    /// Daily figures and totals over this far back (the scores keep their own windows).
    #[arg(long, default_value = "30d", value_parser = super::parse_duration_arg)]
    since: std::time::Duration,
    /// One JSON document instead of text.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &Config, cmd: ReportCommand) -> anyhow::Result<()> {
    let ReportCommand::Responses(args) = cmd;
    let infra = Infra::setup(&config.nats).await?;
    let store = ResponseStore::new(
        infra.js.clone(),
        infra.responses.clone(),
        &infra.names.responses_bucket(),
    );
    let records = store.list(args.property.as_deref()).await?;
    let options = ReportOptions {
        property: args.property,
        since: chrono::TimeDelta::from_std(args.since)?,
        now: Utc::now(),
        grace: chrono::TimeDelta::from_std(config.responses.score_alert_grace)?,
        target: config.responses.score_alert_below,
    };
    let name = |id: &str| {
        config
            .properties
            .get(id)
            .map(|p| p.name.clone())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| id.to_string())
    };
    let built = report::build(&records, &options, &name);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&built)?);
    } else {
        print!("{}", report::render_text(&built));
    }
    Ok(())
}
