//! Time values for rules and templates: the `Time` and `Duration` types rules see, timestamp
//! parsing (RFC 3339 or Channex's zone-less microsecond UTC), and wall-clock arithmetic in a
//! property's timezone (DST-aware through chrono-tz).
//!
//! Pure functions only: it must not read the system clock (`now` always comes from the
//! caller).

use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

/// An instant, as rules see it (`now()`, `parse_time(..)`). Rhai type name `Time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleTime(pub DateTime<Utc>);

/// A signed span of time (`minutes(5)`, `t1 - t2`). Rhai type name `Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleDuration(pub TimeDelta);

impl fmt::Display for RuleTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
    }
}

impl fmt::Display for RuleDuration {
    /// `1d2h30m`, `-5m`, `45s`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.0.num_seconds();
        if total == 0 {
            return f.write_str("0s");
        }
        if total < 0 {
            f.write_str("-")?;
        }
        let mut rest = total.unsigned_abs();
        for (unit, secs) in [("d", 86_400u64), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

/// The years a `Time` may lie in. Far inside chrono's own range, so converting to any
/// timezone (offsets are under a day) or formatting with `%Y` can never overflow or panic.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// `t` if its year is within [`YEARS`]; every `Time` a rule or template sees passes here.
pub fn in_range(t: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if YEARS.contains(&t.year()) {
        Ok(t)
    } else {
        Err(format!(
            "time out of range (years {} to {} only)",
            YEARS.start(),
            YEARS.end()
        ))
    }
}

/// Parses a timestamp: RFC 3339 (`2024-08-01T10:00:00Z`, any offset), or zone-less UTC as
/// Channex writes it (`2021-07-28T04:25:15.000000`, `T` or space). A bare date
/// (`2024-08-01`) is midnight in `tz`. Years outside [`YEARS`] are an error.
pub fn parse_timestamp(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return in_range(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return in_range(n.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if !YEARS.contains(&d.year()) {
            return in_range(d.and_time(NaiveTime::MIN).and_utc());
        }
        return in_range(resolve_local(tz, d.and_time(NaiveTime::MIN)));
    }
    Err(format!(
        "`{s}` is not a timestamp (expected RFC 3339, `YYYY-MM-DDTHH:MM:SS[.ffffff]` UTC or `YYYY-MM-DD`)"
    ))
}

/// An IANA zone name; `None` when unknown.
pub fn parse_tz(name: &str) -> Option<Tz> {
    name.trim().parse::<Tz>().ok()
}

/// `HH:MM` (or `H:MM`, `HH:MM:SS`) wall-clock time.
pub fn parse_wall_clock(s: &str) -> Result<NaiveTime, String> {
    let s = s.trim();
    NaiveTime::parse_from_str(s, "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s, "%H:%M:%S"))
        .map_err(|_| format!("`{s}` is not a wall-clock time (expected HH:MM)"))
}

/// A local date-time in `tz` made an instant. Ambiguous times (autumn DST fold) take the
/// earlier instant; times in a spring-forward gap move to the first valid minute after it.
pub fn resolve_local(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = naive;
    // Gaps are at most a day (Samoa 2011); step a minute at a time after a coarse search.
    for _ in 0..(24 * 4) {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return refine_gap(tz, naive, probe, t.with_timezone(&Utc)),
            LocalResult::Ambiguous(a, b) => {
                let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                return a.min(b);
            }
            // Checked: at the very end of chrono's range there is no later probe.
            LocalResult::None => match probe.checked_add_signed(TimeDelta::minutes(15)) {
                Some(next) => probe = next,
                None => break,
            },
        }
    }
    // No valid local time within a day: fall back to reading the wall clock as UTC.
    naive.and_utc()
}

/// After a gap search that stepped in 15-minute increments, find the first valid minute.
fn refine_gap(
    tz: Tz,
    wanted: NaiveDateTime,
    found: NaiveDateTime,
    at: DateTime<Utc>,
) -> DateTime<Utc> {
    if found == wanted {
        return at;
    }
    let mut best = at;
    let mut probe = found - TimeDelta::minutes(1);
    while probe > wanted {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => best = t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, _) => best = a.with_timezone(&Utc),
            LocalResult::None => break,
        }
        probe -= TimeDelta::minutes(1);
    }
    best
}

/// The wall clock of `t` in `tz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalParts {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
    /// 1 = Monday .. 7 = Sunday.
    pub weekday: i64,
    /// `YYYY-MM-DD`.
    pub date: String,
    /// `HH:MM`.
    pub time: String,
    /// The UTC offset in effect, e.g. `+01:00`.
    pub offset: String,
}

pub fn local_parts(t: DateTime<Utc>, tz: Tz) -> LocalParts {
    let l = t.with_timezone(&tz);
    LocalParts {
        year: i64::from(l.year()),
        month: i64::from(l.month()),
        day: i64::from(l.day()),
        hour: i64::from(l.hour()),
        minute: i64::from(l.minute()),
        second: i64::from(l.second()),
        weekday: i64::from(l.weekday().number_from_monday()),
        date: l.format("%Y-%m-%d").to_string(),
        time: l.format("%H:%M").to_string(),
        offset: l.format("%:z").to_string(),
    }
}

/// The first instant at or after `t` whose wall clock in `tz` reads `wall` (e.g. the end of
/// quiet hours). DST-aware: on a spring-forward day a time inside the gap moves to just after
/// it; on a fold the earlier instant wins.
pub fn at_local(t: DateTime<Utc>, wall: NaiveTime, tz: Tz) -> DateTime<Utc> {
    let local_date = t.with_timezone(&tz).date_naive();
    for add_days in 0..3 {
        let Some(date) = local_date.checked_add_days(chrono::Days::new(add_days)) else {
            break;
        };
        let candidate = resolve_local(tz, date.and_time(wall));
        if candidate >= t {
            return candidate;
        }
    }
    t
}

/// Whether the wall clock of `t` in `tz` is inside `[start, end)`; a window that wraps
/// midnight (`22:00`..`08:00`) is handled.
pub fn within_local_hours(t: DateTime<Utc>, start: NaiveTime, end: NaiveTime, tz: Tz) -> bool {
    let now = t.with_timezone(&tz).time();
    if start <= end {
        now >= start && now < end
    } else {
        now >= start || now < end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn parses_both_channex_shapes_and_dates() {
        let tz: Tz = "Europe/Lisbon".parse().unwrap();
        assert_eq!(
            parse_timestamp("2021-07-28T04:25:15.000000", tz).unwrap(),
            utc("2021-07-28T04:25:15Z")
        );
        assert_eq!(
            parse_timestamp("2021-07-28T05:25:15+01:00", tz).unwrap(),
            utc("2021-07-28T04:25:15Z")
        );
        // Lisbon is UTC+1 in summer: local midnight is 23:00 UTC the day before.
        assert_eq!(
            parse_timestamp("2021-07-28", tz).unwrap(),
            utc("2021-07-27T23:00:00Z")
        );
        assert!(parse_timestamp("soon", tz).is_err());
    }

    #[test]
    fn at_local_crosses_dst_in_lisbon() {
        let tz: Tz = "Europe/Lisbon".parse().unwrap();
        let eight = parse_wall_clock("08:00").unwrap();
        // 2024-03-31 spring forward (01:00 -> 02:00): 23:30 UTC on the 30th is 23:30 WET.
        assert_eq!(
            at_local(utc("2024-03-30T23:30:00Z"), eight, tz),
            utc("2024-03-31T07:00:00Z")
        );
        // Inside the gap: 01:30 does not exist on 2024-03-31, so 02:00 WEST (01:00 UTC).
        let half_one = parse_wall_clock("01:30").unwrap();
        assert_eq!(
            at_local(utc("2024-03-30T23:30:00Z"), half_one, tz),
            utc("2024-03-31T01:00:00Z")
        );
        // 2024-10-27 fall back (02:00 -> 01:00): 01:30 happens twice; the first one wins.
        assert_eq!(
            at_local(utc("2024-10-26T22:00:00Z"), half_one, tz),
            utc("2024-10-27T00:30:00Z")
        );
    }

    #[test]
    fn wrapping_window() {
        let tz = Tz::UTC;
        let (s, e) = (
            parse_wall_clock("22:00").unwrap(),
            parse_wall_clock("08:00").unwrap(),
        );
        assert!(within_local_hours(utc("2024-01-01T23:00:00Z"), s, e, tz));
        assert!(within_local_hours(utc("2024-01-01T07:59:00Z"), s, e, tz));
        assert!(!within_local_hours(utc("2024-01-01T08:00:00Z"), s, e, tz));
        assert!(!within_local_hours(utc("2024-01-01T12:00:00Z"), s, e, tz));
    }

    #[test]
    fn duration_display() {
        assert_eq!(RuleDuration(TimeDelta::minutes(90)).to_string(), "1h30m");
        assert_eq!(RuleDuration(TimeDelta::seconds(-300)).to_string(), "-5m");
        assert_eq!(RuleDuration(TimeDelta::zero()).to_string(), "0s");
    }
}
