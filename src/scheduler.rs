//! Durable follow-up timers and cron schedules (work in progress).

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

/// One KV key token: characters KV keys allow (`[-/_a-zA-Z0-9]`) are kept, every other
/// byte (including `.`, which separates tokens, and `=`, the escape) becomes `=XX` (hex).
/// Injective, so two different ids never share a key; UUIDs pass unchanged.
pub fn key_token(raw: &str) -> String {
    if raw.is_empty() {
        return "=".to_string();
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        match b {
            b'-' | b'/' | b'_' | b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => out.push(b as char),
            _ => out.push_str(&format!("={b:02X}")),
        }
    }
    out
}
