//! Time, the one module for it: the `Time` and `Duration` types rules see, timestamp
//! parsing (RFC 3339 or Channex's zone-less microsecond UTC, plus the lenient forms rules and
//! templates accept), DST resolution of wall-clock times in a property's timezone
//! (chrono-tz), strftime formatting in a zone, and cron specs parsed once at config load.
//!
//! Pure functions only: it must not read the system clock (`now` always comes from the
//! caller), log or do I/O.

use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};

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

/// Parses a timestamp as Channex writes it: RFC 3339 (`2023-12-01T07:01:38.735Z`, any
/// offset) or zone-less UTC (`2021-07-28T04:25:15.000000`, with or without fractional
/// seconds, `T` or a space). `None` when it is none of those. No range check: this is the
/// parser of outside data; [`parse_timestamp`] adds the forms and limits rules need.
pub fn parse_utc_timestamp(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .into_iter()
        .find_map(|fmt| NaiveDateTime::parse_from_str(s, fmt).ok())
        .map(|n| n.and_utc())
}

/// Parses a timestamp for rules and templates: everything [`parse_utc_timestamp`] reads,
/// plus `YYYY-MM-DDTHH:MM` (UTC) and a bare date (`2024-08-01`, midnight in `tz`). Years
/// outside [`YEARS`] are an error.
pub fn parse_timestamp(s: &str, tz: Tz) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Some(t) = parse_utc_timestamp(s) {
        return in_range(t);
    }
    if let Ok(n) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M") {
        return in_range(n.and_utc());
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
/// earlier instant; a time in a spring-forward gap moves to the transition, the first
/// instant after the gap (Lisbon 01:30 on a spring-forward day is 02:00 WEST), like cron(8).
///
/// The gap is found by bisecting over UTC seconds (about 17 steps): local time is monotonic
/// within the ±15 h window searched, which holds every gap there is (UTC offsets span
/// -12 h..+14 h; Samoa skipped a whole day in 2011).
pub fn resolve_local(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(a, b) => a.with_timezone(&Utc).min(b.with_timezone(&Utc)),
        LocalResult::None => first_instant_after_gap(tz, naive),
    }
}

/// The first UTC second whose wall time in `tz` is past `wall` (a time inside a gap).
fn first_instant_after_gap(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
    let wall_secs = wall.and_utc().timestamp();
    // Out of chrono's range counts as "past": the search then stays inside it.
    let local_secs = |t: i64| {
        DateTime::from_timestamp(t, 0)
            .map(|u| u.with_timezone(&tz).naive_local().and_utc().timestamp())
            .unwrap_or(i64::MAX)
    };
    let window = 15 * 3600;
    let (mut lo, mut hi) = (wall_secs - window, wall_secs + window);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local_secs(mid) > wall_secs {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or(wall.and_utc())
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

/// Longest `format_time` pattern (a real one is a few dozen characters).
pub const MAX_FORMAT_LEN: usize = 256;

/// strftime of `t` in `tz` (rules' `format_time`, templates' date helpers); an invalid or
/// oversized format is an error, not a panic.
pub fn format_in(t: DateTime<Utc>, fmt: &str, tz: Tz) -> Result<String, String> {
    use std::fmt::Write;
    if fmt.len() > MAX_FORMAT_LEN {
        return Err(format!(
            "the time format is longer than {MAX_FORMAT_LEN} bytes"
        ));
    }
    let items: Vec<_> = chrono::format::StrftimeItems::new(fmt).collect();
    if items.contains(&chrono::format::Item::Error) {
        return Err(format!("invalid time format `{fmt}`"));
    }
    let mut out = String::new();
    write!(
        out,
        "{}",
        t.with_timezone(&tz).format_with_items(items.into_iter())
    )
    .map_err(|_| format!("cannot format time with `{fmt}`"))?;
    Ok(out)
}

/// A cron schedule as the host wrote it (`schedules[].cron`), parsed once when the config
/// is loaded: the usual 5-field crontab (`min hour day month weekday`) or the `cron`
/// crate's 6/7-field form with seconds. Wall-clock fields; the schedule's zone and DST are
/// applied by the scheduler (through [`resolve_local`]).
#[derive(Debug, Clone)]
pub struct CronSpec {
    expr: String,
    schedule: cron::Schedule,
}

/// A cron expression that does not parse; names the user's own expression, never the
/// 6-field form it was turned into.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid cron expression {expr:?} ({reason}); expected 5 fields \
     (`min hour day month weekday`, e.g. \"0 9 * * *\") or 6/7 with seconds"
)]
pub struct CronError {
    pub expr: String,
    /// The cron crate's reason, on one line.
    pub reason: String,
}

impl CronSpec {
    pub fn parse(expr: &str) -> Result<CronSpec, CronError> {
        let full = if expr.split_whitespace().count() == 5 {
            format!("0 {expr}")
        } else {
            expr.to_string()
        };
        let schedule = full.parse::<cron::Schedule>().map_err(|e| CronError {
            expr: expr.to_string(),
            reason: cron_reason(&e.to_string()),
        })?;
        Ok(CronSpec {
            expr: expr.to_string(),
            schedule,
        })
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The parsed schedule (6/7-field form, read as wall-clock times).
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }
}

/// The cron crate's message flattened to one line, without the internal 6/7-field form it
/// quotes before a `^`.
fn cron_reason(message: &str) -> String {
    let flat = message.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.rsplit_once('^')
        .map_or(flat.as_str(), |(_, r)| r)
        .trim()
        .to_string()
}

impl std::str::FromStr for CronSpec {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CronSpec::parse(s)
    }
}

impl fmt::Display for CronSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

impl PartialEq for CronSpec {
    fn eq(&self, other: &Self) -> bool {
        self.expr == other.expr
    }
}

impl<'de> Deserialize<'de> for CronSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let expr = String::deserialize(d)?;
        CronSpec::parse(&expr).map_err(serde::de::Error::custom)
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

    #[test]
    fn channex_and_rule_parsers_accept_exactly_their_forms() {
        let tz = Tz::UTC;
        // Both: RFC 3339 and zone-less UTC with or without fraction, `T` or space.
        for s in [
            "2021-07-28T04:25:15.000000",
            "2021-07-28 04:25:15",
            "2021-07-28T05:25:15+01:00",
            " 2021-07-28T04:25:15Z ",
        ] {
            assert_eq!(
                parse_utc_timestamp(s),
                Some(utc("2021-07-28T04:25:15Z")),
                "{s}"
            );
            assert_eq!(
                parse_timestamp(s, tz),
                Ok(utc("2021-07-28T04:25:15Z")),
                "{s}"
            );
        }
        // Only rules and templates: minutes without seconds, bare dates; with a year limit.
        assert_eq!(parse_utc_timestamp("2021-07-28T04:25"), None);
        assert_eq!(parse_utc_timestamp("2021-07-28"), None);
        assert_eq!(
            parse_timestamp("2021-07-28T04:25", tz),
            Ok(utc("2021-07-28T04:25:00Z"))
        );
        assert!(parse_utc_timestamp("+10000-01-01T00:00:00").is_some());
        assert!(parse_timestamp("+10000-01-01T00:00:00", tz).is_err());
        assert_eq!(parse_utc_timestamp("yesterday"), None);
    }

    #[test]
    fn a_gap_of_a_whole_day_resolves_to_its_end() {
        // Samoa skipped 2011-12-30 (UTC-10 -> UTC+14 at 10:00 UTC). The old minute-stepping
        // resolver gave up after 24 h of probes and read 00:00 as UTC.
        let tz: Tz = "Pacific/Apia".parse().unwrap();
        let midnight = NaiveDate::from_ymd_opt(2011, 12, 30)
            .unwrap()
            .and_time(NaiveTime::MIN);
        assert_eq!(resolve_local(tz, midnight), utc("2011-12-30T10:00:00Z"));
    }

    /// One resolver for rules and schedules: a wall time with seconds inside a gap moves to
    /// the transition itself, as schedules always did. (The rules' old minute-stepping
    /// resolver kept the seconds, 02:30:30 -> 03:00:30; the difference is under a minute and
    /// only on spring-forward nights.)
    #[test]
    fn a_wall_time_with_seconds_in_a_gap_resolves_to_the_transition() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let in_gap = NaiveDate::from_ymd_opt(2026, 3, 29)
            .unwrap()
            .and_hms_opt(2, 30, 30)
            .unwrap();
        assert_eq!(resolve_local(tz, in_gap), utc("2026-03-29T01:00:00Z"));
        let t = utc("2026-03-29T00:00:00Z");
        let wall = parse_wall_clock("02:30:30").unwrap();
        assert_eq!(at_local(t, wall, tz), utc("2026-03-29T01:00:00Z"));
    }

    #[test]
    fn format_in_checks_the_pattern() {
        let tz: Tz = "Europe/Lisbon".parse().unwrap();
        let t = utc("2024-08-01T13:05:00Z");
        assert_eq!(format_in(t, "%H:%M %d %b", tz).unwrap(), "14:05 01 Aug");
        assert_eq!(
            format_in(t, "%Q", tz).unwrap_err(),
            "invalid time format `%Q`"
        );
        assert!(format_in(t, &"%H".repeat(200), tz).is_err());
    }

    #[test]
    fn cron_specs_take_five_six_or_seven_fields() {
        for expr in ["0 9 * * *", "*/5 * * * * *", "0 0 9 * * * 2030"] {
            let spec = CronSpec::parse(expr).unwrap();
            assert_eq!(spec.expr(), expr);
            assert_eq!(spec.to_string(), expr);
        }
        let five = CronSpec::parse("30 1 * * *").unwrap();
        let next = five.schedule().after(&utc("2024-01-01T00:00:00Z")).next();
        assert_eq!(next, Some(utc("2024-01-01T01:30:00Z")));
        let e = CronSpec::parse("61 9 * * *").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("invalid cron expression \"61 9 * * *\" ("),
            "{text}"
        );
        assert!(text.ends_with("expected 5 fields (`min hour day month weekday`, e.g. \"0 9 * * *\") or 6/7 with seconds"), "{text}");
        assert!(!text.contains('\n') && !text.contains("0 61 9"), "{text}");
        assert!("every day".parse::<CronSpec>().is_err());
    }

    /// The DST resolver this module had before (15-minute probes, then minute steps back),
    /// kept as the reference the bisecting one is checked against.
    fn minute_stepping_resolve(tz: Tz, naive: NaiveDateTime) -> DateTime<Utc> {
        let mut probe = naive;
        for _ in 0..(24 * 4) {
            match tz.from_local_datetime(&probe) {
                LocalResult::Single(t) => {
                    let at = t.with_timezone(&Utc);
                    if probe == naive {
                        return at;
                    }
                    let mut best = at;
                    let mut back = probe - TimeDelta::minutes(1);
                    while back > naive {
                        match tz.from_local_datetime(&back) {
                            LocalResult::Single(t) => best = t.with_timezone(&Utc),
                            LocalResult::Ambiguous(a, _) => best = a.with_timezone(&Utc),
                            LocalResult::None => break,
                        }
                        back -= TimeDelta::minutes(1);
                    }
                    return best;
                }
                LocalResult::Ambiguous(a, b) => {
                    return a.with_timezone(&Utc).min(b.with_timezone(&Utc));
                }
                LocalResult::None => match probe.checked_add_signed(TimeDelta::minutes(15)) {
                    Some(next) => probe = next,
                    None => break,
                },
            }
        }
        naive.and_utc()
    }

    /// Zones with gaps and folds of 30 min and 1 h, north and south, and an odd offset.
    const ZONES: [&str; 6] = [
        "Europe/Lisbon",
        "America/New_York",
        "Australia/Lord_Howe",
        "America/Santiago",
        "Asia/Kathmandu",
        "Australia/Sydney",
    ];

    /// Minutes of 1980..2037, densely around each zone's transitions by construction: a
    /// random UTC instant is moved onto the nearest DST change about half of the time.
    fn wall_minute() -> impl proptest::strategy::Strategy<Value = (Tz, NaiveDateTime)> {
        use proptest::prelude::*;
        let start = utc("1980-01-01T00:00:00Z").timestamp() / 60;
        let end = utc("2037-12-31T00:00:00Z").timestamp() / 60;
        (0..ZONES.len(), start..end, any::<bool>(), -120i64..120).prop_map(
            move |(zone, minute, near_change, offset)| {
                let tz: Tz = ZONES[zone].parse().unwrap();
                let at = DateTime::from_timestamp(minute * 60, 0).unwrap();
                let local = if near_change {
                    nearest_change(tz, at) + TimeDelta::minutes(offset)
                } else {
                    at.with_timezone(&tz).naive_local()
                };
                (tz, local)
            },
        )
    }

    /// The local wall time at the next offset change after `at` (within a year), else `at`.
    fn nearest_change(tz: Tz, at: DateTime<Utc>) -> NaiveDateTime {
        use chrono::Offset;
        let offset = |t: DateTime<Utc>| t.with_timezone(&tz).offset().fix();
        let first = offset(at);
        let mut t = at;
        for _ in 0..(366 * 4) {
            let next = t + TimeDelta::hours(6);
            if offset(next) != first {
                return next.with_timezone(&tz).naive_local();
            }
            t = next;
        }
        at.with_timezone(&tz).naive_local()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        #[test]
        fn bisecting_resolver_agrees_with_the_minute_stepping_one((tz, wall) in wall_minute()) {
            let got = resolve_local(tz, wall);
            proptest::prop_assert_eq!(got, minute_stepping_resolve(tz, wall), "{} {}", tz, wall);
            // And what it means: a valid wall time maps onto itself (the earlier one on a
            // fold); a gap time maps to the first instant whose wall time is past it.
            let local = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local();
            match tz.from_local_datetime(&wall) {
                LocalResult::None => {
                    proptest::prop_assert!(local(got) > wall);
                    proptest::prop_assert!(local(got - TimeDelta::seconds(1)) < wall);
                }
                LocalResult::Single(_) => proptest::prop_assert_eq!(local(got), wall),
                LocalResult::Ambiguous(a, b) => {
                    proptest::prop_assert_eq!(local(got), wall);
                    proptest::prop_assert_eq!(got, a.with_timezone(&Utc).min(b.with_timezone(&Utc)));
                }
            }
        }
    }

    proptest::proptest! {
        /// Outside data (config, Channex, event JSON) never makes these parsers panic, and a
        /// timestamp they accept is the instant its RFC 3339 form names.
        #[test]
        fn parsers_of_outside_data_are_total(s in "\\PC{0,40}", fields in proptest::collection::vec("[0-9*/,-]{1,4}", 0..8)) {
            let _ = CronSpec::parse(&s);
            let expr = fields.join(" ");
            if let Ok(spec) = CronSpec::parse(&expr) {
                proptest::prop_assert_eq!(spec.expr(), expr.as_str());
            }
            let _ = parse_timestamp(&s, Tz::UTC);
            if let Some(t) = parse_utc_timestamp(&s) {
                let again = parse_utc_timestamp(&t.to_rfc3339());
                proptest::prop_assert_eq!(again, Some(t));
            }
        }
    }
}
