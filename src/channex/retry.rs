//! The retry policy of the Channex client, as pure functions: what one attempt's outcome
//! means for the request ([`classify`]), how long to wait between attempts
//! ([`backoff_step`]) and how `Retry-After` reads ([`parse_retry_after`]).
//!
//! Owns the decision "success / retry after X / give up with this typed error" (the table
//! in the `channex` module doc). Must not: do I/O, sleep, count or log: the client does
//! that with the decision in hand, so every branch is unit-tested here without a server.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::error::ChannexError;

/// Whether a request may be repeated after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Repeating it cannot do harm (GETs, `close`, `no_reply_needed`, uploads).
    Idempotent,
    /// A message send: repeat only when it certainly was not applied.
    Send,
}

/// The limits of the policy (from the client's options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// A `Retry-After` longer than this is not waited out: the call fails with
    /// `RateLimited` so the caller can reschedule.
    pub backoff_max: Duration,
}

/// What one attempt came back with, reduced to what the policy needs.
#[derive(Debug, Clone, PartialEq)]
pub enum AttemptOutcome {
    /// A 2xx answer, its body read in full.
    Success(bytes::Bytes),
    /// The connection failed before the request was written: it never reached Channex.
    ConnectFailed { message: String },
    /// No (complete) answer in time, after the request may have been written.
    TimedOut,
    /// The connection broke after the request may have been written (or while reading
    /// a 2xx body).
    TransportFailed { message: String },
    /// 429, with the delay `Retry-After` asked for, if any.
    RateLimited { retry_after: Option<Duration> },
    /// 5xx.
    ServerError { status: u16 },
    /// Any other answer (4xx): Channex refused the request; never retried.
    Refused(ChannexError),
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryDecision {
    /// Done: the body of the 2xx answer.
    Success(bytes::Bytes),
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Stop and return this error.
    GiveUp(ChannexError),
}

/// The decision after attempt number `attempt` (0 = the first) of a `kind` request came
/// back with `outcome`. `backoff` is the jittered delay this attempt would wait (from
/// [`backoff_step`]); it is used when Channex does not say how long to wait.
pub fn classify(
    outcome: AttemptOutcome,
    attempt: u32,
    kind: RequestKind,
    policy: RetryPolicy,
    backoff: Duration,
) -> RetryDecision {
    let idempotent = kind == RequestKind::Idempotent;
    let retries_left = attempt < policy.max_retries;
    let retry_or = |may_retry: bool, err: ChannexError| {
        if may_retry && retries_left {
            RetryDecision::RetryAfter(backoff)
        } else {
            RetryDecision::GiveUp(err)
        }
    };
    match outcome {
        AttemptOutcome::Success(body) => RetryDecision::Success(body),
        // Never sent, so even a send may be repeated; not ambiguous either way.
        AttemptOutcome::ConnectFailed { message } => retry_or(
            true,
            ChannexError::Transport {
                message,
                ambiguous: false,
            },
        ),
        AttemptOutcome::TimedOut => retry_or(
            idempotent,
            ChannexError::Timeout {
                ambiguous: !idempotent,
            },
        ),
        AttemptOutcome::TransportFailed { message } => retry_or(
            idempotent,
            ChannexError::Transport {
                message,
                ambiguous: !idempotent,
            },
        ),
        // Channex refused it: safe to repeat for any request, after the delay it asked for.
        AttemptOutcome::RateLimited { retry_after } => match retry_after {
            _ if !retries_left => RetryDecision::GiveUp(ChannexError::RateLimited { retry_after }),
            Some(d) if d > policy.backoff_max => {
                RetryDecision::GiveUp(ChannexError::RateLimited { retry_after })
            }
            Some(d) => RetryDecision::RetryAfter(d),
            None => RetryDecision::RetryAfter(backoff),
        },
        // A send may have been applied: the caller must re-read, never resend blindly.
        AttemptOutcome::ServerError { status } if !idempotent => {
            RetryDecision::GiveUp(ChannexError::Server {
                status,
                ambiguous: true,
            })
        }
        AttemptOutcome::ServerError { status } => retry_or(
            true,
            ChannexError::Server {
                status,
                ambiguous: false,
            },
        ),
        AttemptOutcome::Refused(err) => RetryDecision::GiveUp(err),
    }
}

/// The exponential step of attempt `attempt`: `base` doubling per attempt, capped at `max`.
/// The client waits a random delay between half and all of it ("equal jitter").
pub fn backoff_step(base: Duration, max: Duration, attempt: u32) -> Duration {
    let base = base.as_millis() as u64;
    let cap = max.as_millis() as u64;
    Duration::from_millis(base.saturating_mul(1u64 << attempt.min(32)).min(cap))
}

/// `Retry-After`: delay-seconds (integer or decimal) or an HTTP date (a date in the past
/// is no wait). `now` is the caller's clock.
pub fn parse_retry_after(v: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = v.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Some(Duration::from_secs_f64(secs));
        }
    }
    let at = DateTime::parse_from_rfc2822(v).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 3,
        backoff_max: Duration::from_secs(30),
    };
    const BACKOFF: Duration = Duration::from_millis(400);
    const LAST: u32 = 3;

    fn decide(outcome: AttemptOutcome, attempt: u32, kind: RequestKind) -> RetryDecision {
        classify(outcome, attempt, kind, POLICY, BACKOFF)
    }

    fn rate_limited(retry_after: Option<Duration>) -> AttemptOutcome {
        AttemptOutcome::RateLimited { retry_after }
    }

    fn now() -> DateTime<Utc> {
        "2015-10-21T07:28:00Z".parse().unwrap()
    }

    #[test]
    fn success_is_success() {
        let body = bytes::Bytes::from_static(b"{}");
        for kind in [RequestKind::Idempotent, RequestKind::Send] {
            assert_eq!(
                decide(AttemptOutcome::Success(body.clone()), LAST, kind),
                RetryDecision::Success(body.clone())
            );
        }
    }

    #[test]
    fn rate_limit_waits_as_asked_or_backs_off() {
        for kind in [RequestKind::Idempotent, RequestKind::Send] {
            let asked = Duration::from_secs(2);
            assert_eq!(
                decide(rate_limited(Some(asked)), 0, kind),
                RetryDecision::RetryAfter(asked)
            );
            assert_eq!(
                decide(rate_limited(None), 0, kind),
                RetryDecision::RetryAfter(BACKOFF)
            );
        }
    }

    #[test]
    fn rate_limit_with_an_http_date() {
        let in_five = parse_retry_after("Wed, 21 Oct 2015 07:28:05 GMT", now());
        assert_eq!(in_five, Some(Duration::from_secs(5)));
        assert_eq!(
            decide(rate_limited(in_five), 1, RequestKind::Send),
            RetryDecision::RetryAfter(Duration::from_secs(5))
        );
        // A date already past: retry at once.
        let past = parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now());
        assert_eq!(past, Some(Duration::ZERO));
        assert_eq!(
            decide(rate_limited(past), 1, RequestKind::Idempotent),
            RetryDecision::RetryAfter(Duration::ZERO)
        );
    }

    #[test]
    fn rate_limit_longer_than_the_cap_or_out_of_attempts_gives_up() {
        let long = Some(Duration::from_secs(31));
        assert_eq!(
            decide(rate_limited(long), 0, RequestKind::Idempotent),
            RetryDecision::GiveUp(ChannexError::RateLimited { retry_after: long })
        );
        assert_eq!(
            decide(rate_limited(None), LAST, RequestKind::Idempotent),
            RetryDecision::GiveUp(ChannexError::RateLimited { retry_after: None })
        );
    }

    #[test]
    fn server_errors_retry_reads_and_stop_sends_as_ambiguous() {
        let e500 = || AttemptOutcome::ServerError { status: 500 };
        assert_eq!(
            decide(e500(), 0, RequestKind::Idempotent),
            RetryDecision::RetryAfter(BACKOFF)
        );
        assert!(matches!(
            decide(e500(), LAST, RequestKind::Idempotent),
            RetryDecision::GiveUp(ChannexError::Server {
                status: 500,
                ambiguous: false
            })
        ));
        assert!(matches!(
            decide(e500(), 0, RequestKind::Send),
            RetryDecision::GiveUp(ChannexError::Server {
                status: 500,
                ambiguous: true
            })
        ));
    }

    #[test]
    fn client_errors_are_never_retried() {
        let refused = ChannexError::Api {
            status: 422,
            code: crate::channex::ErrorCode::NotSupported,
            title: "not supported".into(),
        };
        for kind in [RequestKind::Idempotent, RequestKind::Send] {
            let d = decide(AttemptOutcome::Refused(refused.clone()), 0, kind);
            assert!(
                matches!(
                    &d,
                    RetryDecision::GiveUp(ChannexError::Api { status: 422, .. })
                ),
                "{d:?}"
            );
        }
    }

    #[test]
    fn timeouts_retry_reads_and_stop_sends_as_ambiguous() {
        assert_eq!(
            decide(AttemptOutcome::TimedOut, 0, RequestKind::Idempotent),
            RetryDecision::RetryAfter(BACKOFF)
        );
        assert!(matches!(
            decide(AttemptOutcome::TimedOut, LAST, RequestKind::Idempotent),
            RetryDecision::GiveUp(ChannexError::Timeout { ambiguous: false })
        ));
        assert!(matches!(
            decide(AttemptOutcome::TimedOut, 0, RequestKind::Send),
            RetryDecision::GiveUp(ChannexError::Timeout { ambiguous: true })
        ));
    }

    #[test]
    fn connection_errors_retry_even_sends_and_are_never_ambiguous() {
        let refused = || AttemptOutcome::ConnectFailed {
            message: "connection refused".into(),
        };
        for kind in [RequestKind::Idempotent, RequestKind::Send] {
            assert_eq!(
                decide(refused(), 0, kind),
                RetryDecision::RetryAfter(BACKOFF)
            );
            assert!(matches!(
                decide(refused(), LAST, kind),
                RetryDecision::GiveUp(ChannexError::Transport {
                    ambiguous: false,
                    ..
                })
            ));
        }
        let broken = || AttemptOutcome::TransportFailed {
            message: "connection reset".into(),
        };
        assert_eq!(
            decide(broken(), 0, RequestKind::Idempotent),
            RetryDecision::RetryAfter(BACKOFF)
        );
        assert!(matches!(
            decide(broken(), 0, RequestKind::Send),
            RetryDecision::GiveUp(ChannexError::Transport {
                ambiguous: true,
                ..
            })
        ));
    }

    #[test]
    fn attempts_exhausted_give_up_with_the_last_error() {
        // Attempt `max_retries` is the last one allowed: whatever failed is returned.
        for outcome in [
            rate_limited(Some(Duration::from_secs(1))),
            AttemptOutcome::ServerError { status: 503 },
            AttemptOutcome::TimedOut,
            AttemptOutcome::ConnectFailed {
                message: "refused".into(),
            },
        ] {
            let d = decide(outcome.clone(), LAST, RequestKind::Idempotent);
            assert!(matches!(d, RetryDecision::GiveUp(_)), "{outcome:?}: {d:?}");
            let d = decide(outcome.clone(), LAST - 1, RequestKind::Idempotent);
            assert!(
                matches!(d, RetryDecision::RetryAfter(_)),
                "{outcome:?}: {d:?}"
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2", now()), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.5 ", now()),
            Some(Duration::from_millis(500))
        );
        assert_eq!(parse_retry_after("soon", now()), None);
        assert_eq!(parse_retry_after("-1", now()), None);
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_millis(250), Duration::from_secs(30));
        assert_eq!(backoff_step(base, max, 0), Duration::from_millis(250));
        assert_eq!(backoff_step(base, max, 3), Duration::from_secs(2));
        assert_eq!(backoff_step(base, max, 40), max);
    }
}
