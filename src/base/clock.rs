//! The one source of "now" for every role and store module.
//!
//! Owns: the [`Clock`] type (a shared `Fn() -> DateTime<Utc>`), the real [`system_clock`],
//! and [`fixed_clock`] / [`ManualClock`] for tests that must control time (cooldowns, claim
//! and lease expiry, timers, deadlines).
//! Must not: be bypassed. Code that judges time (an age, an expiry, a due date) takes a
//! `Clock` instead of calling `Utc::now()`, so the judgement can be tested with a fixed clock.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, TimeDelta, Utc};

/// A source of the current time, injected into whatever needs one.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The machine's wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A clock that always says `at`.
pub fn fixed_clock(at: DateTime<Utc>) -> Clock {
    Arc::new(move || at)
}

/// A clock a test moves by hand; [`ManualClock::clock`] hands out the injectable view.
#[derive(Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn starting_at(at: DateTime<Utc>) -> Self {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    pub fn advance(&self, by: TimeDelta) {
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }

    pub fn clock(&self) -> Clock {
        let inner = self.clone();
        Arc::new(move || inner.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-03-29T00:30:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid timestamp");
        let manual = ManualClock::starting_at(start);
        let clock = manual.clock();
        assert_eq!(clock(), start);
        manual.advance(TimeDelta::minutes(90));
        assert_eq!(clock(), start + TimeDelta::minutes(90));
        assert_eq!(fixed_clock(start)(), start);
    }
}
