//! Durable follow-up timers and cron schedules (stub; see the scheduler issue).

/// Parse a crontab expression: the usual 5-field form (minute hour dom month dow) or the
/// `cron` crate's 6/7-field form with seconds.
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, cron::error::Error> {
    let fields = expr.split_whitespace().count();
    let full = if fields == 5 {
        format!("0 {expr}")
    } else {
        expr.to_string()
    };
    full.parse::<cron::Schedule>()
}
