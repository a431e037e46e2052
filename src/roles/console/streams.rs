//! Bounds on the console's long-lived responses (the live timeline, `/timeline/stream`):
//! a stream holds a connection for as long as the tab stays open, so without a bound of
//! their own a script or a tab left reconnecting fills the listener's connection cap and
//! starves `/healthz` and the webhook (issue 22).
//!
//! Owns [`StreamLimits`] (the numbers, [`StreamLimits::default`] is what `concierge run`
//! uses), the [`StreamGate`] that counts the streams held per session, per client address
//! and in total, and the refusal: `429` when a session or an address holds its share, `503`
//! when the process holds its total, both with `Retry-After` and `Connection: close` (the
//! refused connection is given back at once). A [`StreamPermit`] lives inside the stream's
//! body, so the count drops when the client goes away.
//!
//! Must not: share counts between replicas (they bound this process's connections, which
//! are local by nature) or keep anything once a stream ends.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::layout;

/// The bounds of the live streams of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Streams held at once by the process (well under the listener's connection cap).
    pub total: usize,
    /// Streams held at once by one session (all copies of a cookie, or all bearer
    /// clients together).
    pub per_session: usize,
    /// Streams held at once from one client address (behind a reverse proxy: the proxy's).
    pub per_address: usize,
    /// What a refusal's `Retry-After` says.
    pub retry_after: Duration,
    /// How often a held stream asks whether its session was ended (logout, "end all
    /// sessions"); an ended session's streams close within this.
    pub recheck: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            total: 64,
            per_session: 8,
            per_address: 16,
            retry_after: Duration::from_secs(10),
            recheck: Duration::from_secs(10),
        }
    }
}

/// Why a stream was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Session,
    Address,
    Total,
}

impl Refused {
    fn status(self) -> StatusCode {
        match self {
            Refused::Session | Refused::Address => StatusCode::TOO_MANY_REQUESTS,
            Refused::Total => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refused::Session => "too many live streams for this session: close a tab\n",
            Refused::Address => "too many live streams from this address\n",
            Refused::Total => "the server holds as many live streams as it serves\n",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Refused::Session => "streams_session",
            Refused::Address => "streams_address",
            Refused::Total => "streams_total",
        }
    }
}

#[derive(Default)]
struct Held {
    total: usize,
    sessions: HashMap<String, usize>,
    addresses: HashMap<IpAddr, usize>,
}

fn lock(held: &Mutex<Held>) -> std::sync::MutexGuard<'_, Held> {
    held.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts the streams held; cheap to clone (one count per process).
#[derive(Clone)]
pub struct StreamGate {
    limits: StreamLimits,
    held: Arc<Mutex<Held>>,
}

/// One admitted stream; dropping it (the stream's body ending) gives its place back.
pub struct StreamPermit {
    held: Arc<Mutex<Held>>,
    session: String,
    address: IpAddr,
}

impl StreamGate {
    pub fn new(limits: StreamLimits) -> Self {
        StreamGate {
            limits,
            held: Arc::default(),
        }
    }

    pub fn limits(&self) -> StreamLimits {
        self.limits
    }

    /// Streams held right now.
    pub fn held(&self) -> usize {
        lock(&self.held).total
    }

    /// A place for one more stream of `session` from `address`, or why not.
    pub fn admit(&self, session: &str, address: IpAddr) -> Result<StreamPermit, Refused> {
        let mut held = lock(&self.held);
        let of_session = held.sessions.get(session).copied().unwrap_or(0);
        let of_address = held.addresses.get(&address).copied().unwrap_or(0);
        let refused = if of_session >= self.limits.per_session {
            Some(Refused::Session)
        } else if of_address >= self.limits.per_address {
            Some(Refused::Address)
        } else if held.total >= self.limits.total {
            Some(Refused::Total)
        } else {
            None
        };
        if let Some(why) = refused {
            metrics::counter!("concierge_http_refused_total", "reason" => why.label()).increment(1);
            return Err(why);
        }
        held.total += 1;
        *held.sessions.entry(session.to_string()).or_default() += 1;
        *held.addresses.entry(address).or_default() += 1;
        metrics::gauge!("concierge_console_streams").set(held.total as f64);
        Ok(StreamPermit {
            held: self.held.clone(),
            session: session.to_string(),
            address,
        })
    }

    /// The answer to a refused stream: `429`/`503`, `Retry-After`, `Connection: close`.
    pub fn refusal(&self, why: Refused) -> Response {
        let mut response = (why.status(), why.message()).into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        layout::retry_after(response, self.limits.retry_after)
    }
}

fn release<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(key);
        }
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut held = lock(&self.held);
        held.total = held.total.saturating_sub(1);
        release(&mut held.sessions, &self.session);
        release(&mut held.addresses, &self.address);
        metrics::gauge!("concierge_console_streams").set(held.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn streams_are_bounded_per_session_per_address_and_in_total() {
        let gate = StreamGate::new(StreamLimits {
            total: 5,
            per_session: 2,
            per_address: 3,
            ..StreamLimits::default()
        });
        let a1 = gate.admit("a", ip(1)).expect("first");
        let _a2 = gate.admit("a", ip(1)).expect("second");
        assert_eq!(gate.admit("a", ip(2)).err(), Some(Refused::Session));
        let _b1 = gate.admit("b", ip(1)).expect("third from the address");
        assert_eq!(gate.admit("c", ip(1)).err(), Some(Refused::Address));
        let _c = gate.admit("c", ip(2)).expect("fourth");
        let _d = gate.admit("d", ip(3)).expect("fifth");
        assert_eq!(gate.admit("e", ip(4)).err(), Some(Refused::Total));
        assert_eq!(gate.held(), 5);
        drop(a1);
        assert_eq!(gate.held(), 4);
        let _e = gate.admit("e", ip(4)).expect("a place was given back");
        let refusal = gate.refusal(Refused::Total);
        assert_eq!(refusal.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refusal.headers()[header::RETRY_AFTER], "10");
        assert_eq!(refusal.headers()[header::CONNECTION], "close");
        assert_eq!(
            gate.refusal(Refused::Session).status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }
}
