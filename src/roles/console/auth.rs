//! Console authentication: the bearer token, the login session cookie, CSRF tokens and the
//! login rate limit.
//!
//! Owns: the constant-time token check, the session value
//! (`<issued unix ms>.<session id>.<HMAC-SHA256(token, "session" ‖ issued ‖ id)>`: never the
//! token itself, valid on every replica that has the same token, for [`SESSION_TTL_SECS`]
//! after it was issued; ended early by logout, which revokes its id, by "end all
//! sessions", which moves the sessions epoch past it, or by changing the token), the CSRF
//! token (`HMAC-SHA256(token, "csrf" ‖ session)`, one per session; `bearer` stands for the
//! session of a bearer client) and the per-IP limit on login attempts. The middleware
//! [`require`] puts an [`Authed`] (with the CSRF token the forms carry and which session it
//! is) on every authenticated request, after asking NATS ([`SessionRevocations`]) whether
//! a cookie's session was ended: every replica sees a logout at once.
//!
//! Must not: log or echo the token, a session value or a CSRF token; keep sessions or their
//! revocations in memory (a replica must accept another replica's cookie and honour its
//! logout).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::store::sessions::{self, SessionRevocations};

use super::{layout, Console};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "concierge_session";
/// How long a login lasts.
pub const SESSION_TTL_SECS: i64 = 7 * 86_400;
/// Login attempts per client IP and minute (wrong ones and right ones alike, so a guesser
/// gains nothing from a success while limited). Failed `Bearer` tokens and bad session
/// cookies on any route count against the same limit; while an address is over it, even
/// its right credentials are answered `429`.
pub const LOGINS_PER_MINUTE: u32 = 5;
/// How long an address that went over the limit stays refused (also its `Retry-After`).
pub const BLOCKED_FOR: Duration = Duration::from_secs(60);
/// When to come back after NATS could not say whether a session was ended.
const CHECK_RETRY_AFTER_SECS: u64 = 5;
// A revocation must outlive the session it ends.
const _: () = assert!((SESSION_TTL_SECS as u64) < sessions::RETENTION.as_secs());
/// The CSRF "session" of a client authenticated with `Authorization: Bearer`.
const BEARER_SESSION: &str = "bearer";

/// The peer address of a connection, put on each request by the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// A login session, as its cookie says (checked: MAC and age).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Random, 128 bits in hex: what a logout revokes.
    pub id: String,
    /// When it was issued (Unix milliseconds): what "end all sessions" compares.
    pub issued_ms: i64,
}

/// How a request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// `Authorization: Bearer <token>`: ended only by changing the token.
    Bearer,
    /// The session cookie.
    Cookie(Session),
}

impl Principal {
    /// A key naming the session (bounds per session count it): the session id, or `bearer`.
    pub fn key(&self) -> &str {
        match self {
            Principal::Bearer => BEARER_SESSION,
            Principal::Cookie(s) => &s.id,
        }
    }
}

/// What the auth middleware leaves on an authenticated request.
#[derive(Debug, Clone)]
pub struct Authed {
    /// The CSRF token every form of this session carries (field `csrf`).
    pub csrf: String,
    /// Who: the bearer token or a cookie session.
    pub principal: Principal,
}

/// HMAC-SHA256 (RFC 2104) of `parts` (each length-prefixed) under `key`, in hex.
fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut message = Vec::new();
    for part in parts {
        message.extend_from_slice(&(part.len() as u64).to_be_bytes());
        message.extend_from_slice(part);
    }
    hmac_sha256(key, &message)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Equal without an early exit (the time does not tell how much of a guess was right).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Is `presented` the console token? Always false for an empty token (console off).
pub fn token_matches(token: &Secret, presented: &str) -> bool {
    // Digests of equal length: the comparison's time says nothing about the token's length.
    let digest = |s: &str| Sha256::digest(s.as_bytes());
    !token.is_empty() && constant_time_eq(&digest(presented), &digest(token.expose()))
}

fn session_mac(token: &Secret, issued: &str, id: &str) -> String {
    hmac_hex(
        token.expose().as_bytes(),
        &[b"session", issued.as_bytes(), id.as_bytes()],
    )
}

/// A new session value (a fresh random id), valid until `now + SESSION_TTL_SECS` unless
/// revoked before.
pub fn issue_session(token: &Secret, now: DateTime<Utc>) -> String {
    let id: String = rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let issued = now.timestamp_millis().to_string();
    let mac = session_mac(token, &issued, &id);
    format!("{issued}.{id}.{mac}")
}

/// The session `value` names, if it was issued with `token` and has not expired at `now`
/// (whether it was revoked is NATS's to say: [`SessionRevocations::is_revoked`]).
pub fn parse_session(token: &Secret, value: &str, now: DateTime<Utc>) -> Option<Session> {
    let mut parts = value.splitn(3, '.');
    let (issued, id, mac) = (parts.next()?, parts.next()?, parts.next()?);
    let issued_ms = issued.parse::<i64>().ok()?;
    let want = session_mac(token, issued, id);
    let fresh = issued_ms <= now.timestamp_millis()
        && now.timestamp_millis() - issued_ms < SESSION_TTL_SECS * 1000;
    (!token.is_empty()
        && fresh
        && sessions::is_session_id(id)
        && constant_time_eq(mac.as_bytes(), want.as_bytes()))
    .then(|| Session {
        id: id.to_string(),
        issued_ms,
    })
}

/// Is `value` a session issued with `token` that has not expired at `now`?
pub fn session_valid(token: &Secret, value: &str, now: DateTime<Utc>) -> bool {
    parse_session(token, value, now).is_some()
}

/// The CSRF token of a session (`bearer` for bearer clients).
pub fn csrf_token(token: &Secret, session: &str) -> String {
    hmac_hex(token.expose().as_bytes(), &[b"csrf", session.as_bytes()])
}

/// Does the form's `csrf` field belong to this request's session?
pub fn csrf_ok(authed: &Authed, presented: Option<&str>) -> bool {
    presented.is_some_and(|p| constant_time_eq(p.as_bytes(), authed.csrf.as_bytes()))
}

/// The session cookie's value in `headers`, if any.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// `Set-Cookie` for a new session.
pub fn session_set_cookie(value: &str) -> String {
    format!(
        "{SESSION_COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_TTL_SECS}"
    )
}

/// `Set-Cookie` that ends the session in this browser.
pub fn session_clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

/// What a request presented.
enum Credentials {
    /// Nothing: no `Authorization`, no session cookie.
    None,
    /// Something that does not check out (a guess, a forged or expired cookie).
    Wrong,
    /// The token or a session that was issued with it (revocation not yet asked).
    Valid(Authed),
}

/// How the request authenticated (before asking whether a cookie's session was ended).
fn authenticate(token: &Secret, headers: &HeaderMap, now: DateTime<Utc>) -> Credentials {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(presented) = bearer {
        return match token_matches(token, presented.trim()) {
            true => Credentials::Valid(Authed {
                csrf: csrf_token(token, BEARER_SESSION),
                principal: Principal::Bearer,
            }),
            false => Credentials::Wrong,
        };
    }
    match session_cookie(headers) {
        Some(value) => match parse_session(token, value, now) {
            Some(session) => Credentials::Valid(Authed {
                csrf: csrf_token(token, value),
                principal: Principal::Cookie(session),
            }),
            None => Credentials::Wrong,
        },
        // Some other `Authorization` scheme: presented, and wrong.
        None if headers.contains_key(header::AUTHORIZATION) => Credentials::Wrong,
        None => Credentials::None,
    }
}

/// Was this principal's session ended (logout, "end all sessions")? Bearer clients have
/// no session to end. Asked of NATS on every request, so every replica agrees at once.
pub async fn session_ended(
    revocations: &SessionRevocations,
    principal: &Principal,
) -> Result<bool, crate::store::nats::StoreError> {
    match principal {
        Principal::Bearer => Ok(false),
        Principal::Cookie(s) => revocations.is_revoked(&s.id, s.issued_ms).await,
    }
}

/// Lets authenticated requests through (with [`Authed`]); a browser's page request without
/// a session goes to `/login` (303), anything else is `401`. Wrong credentials (a `Bearer`
/// token or a session cookie that does not check out) count against the login limit of the
/// peer address; an address over it gets `429` (with `Retry-After`), right credentials
/// included. An ended session is sent to log in again (its cookie cleared) without
/// counting: it was issued, not guessed. When NATS cannot say, `503` with `Retry-After`.
pub async fn require(State(console): State<Console>, mut req: Request, next: Next) -> Response {
    let now = console.now();
    let peer = req.extensions().get::<PeerAddr>().copied();
    let limiter = &console.0.limiter;
    let found = authenticate(console.token(), req.headers(), now);
    let over = match found {
        Credentials::Wrong => !limiter.allow(peer),
        _ => limiter.blocked(peer),
    };
    if over {
        tracing::warn!("console: credential attempts over the limit");
        let body = (
            StatusCode::TOO_MANY_REQUESTS,
            "too many attempts: wait a minute\n",
        );
        return layout::retry_after(body.into_response(), BLOCKED_FOR);
    }
    let Credentials::Valid(authed) = found else {
        return unauthenticated(&req, false);
    };
    match session_ended(console.revocations(), &authed.principal).await {
        Ok(false) => {
            req.extensions_mut().insert(authed);
            next.run(req).await
        }
        Ok(true) => {
            tracing::info!("console: a request with an ended session");
            unauthenticated(&req, true)
        }
        Err(e) => {
            tracing::warn!(error = %e, "console: cannot check the session");
            let body = (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot check the session right now: try again\n",
            );
            let wait = Duration::from_secs(CHECK_RETRY_AFTER_SECS);
            layout::retry_after(body.into_response(), wait)
        }
    }
}

/// `/login` for a browser's page, `401` otherwise; `clear`: also expire the cookie.
fn unauthenticated(req: &Request, clear: bool) -> Response {
    let mut response = if wants_page(req) {
        Redirect::to("/login").into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized\n",
        )
            .into_response()
    };
    if clear {
        if let Ok(v) = session_clear_cookie().parse() {
            response.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    response
}

/// A browser navigating to a page (GET accepting HTML).
fn wants_page(req: &Request) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"))
}

/// Login attempts per client IP, and the addresses that went over the limit (refused for
/// [`BLOCKED_FOR`] even with the right credentials).
#[derive(Clone)]
pub struct LoginLimiter {
    rate: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    blocked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        let per_minute = NonZeroU32::new(LOGINS_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        LoginLimiter {
            rate: Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute))),
            blocked: Arc::default(),
        }
    }
}

/// The client address of a request (unspecified when the listener gave none).
pub fn peer_ip(peer: Option<PeerAddr>) -> IpAddr {
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip())
}

impl LoginLimiter {
    /// Counts one attempt from `peer`; false when over the limit (the address is then
    /// blocked for [`BLOCKED_FOR`]).
    pub fn allow(&self, peer: Option<PeerAddr>) -> bool {
        let ip = peer_ip(peer);
        // Forget idle addresses so the table stays small.
        if self.rate.len() > 10_000 {
            self.rate.retain_recent();
        }
        let ok = self.rate.check_key(&ip).is_ok() && !self.blocked(peer);
        if !ok {
            let mut blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if blocked.len() > 10_000 {
                blocked.retain(|_, until| *until > now);
            }
            blocked.insert(ip, now + BLOCKED_FOR);
        }
        ok
    }

    /// Is `peer` refused right now (without counting an attempt)?
    pub fn blocked(&self, peer: Option<PeerAddr>) -> bool {
        let blocked = self.blocked.lock().unwrap_or_else(PoisonError::into_inner);
        blocked
            .get(&peer_ip(peer))
            .is_some_and(|until| *until > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn hmac_matches_the_rfc_4231_vectors() {
        let hex = |b: [u8; 32]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(
            hex(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_session_is_not_the_token_and_expires() {
        let token = Secret::new("s3cret-token");
        let now = at("2026-12-01T10:00:00Z");
        let session = issue_session(&token, now);
        assert!(!session.contains("s3cret-token"));
        assert!(session_valid(&token, &session, now));
        assert!(session_valid(&token, &session, at("2026-12-07T10:00:00Z")));
        assert!(!session_valid(&token, &session, at("2026-12-08T10:00:01Z")));
        // Not valid before it was issued either (a forged future issue time).
        assert!(!session_valid(&token, &session, at("2026-12-01T09:59:59Z")));
        // Another token (rotated) ends every session.
        assert!(!session_valid(&Secret::new("other"), &session, now));
        // Tampering with the issue time or the id breaks the MAC.
        let (_, rest) = session.split_once('.').expect("dot");
        let later = (now.timestamp_millis() + 1).to_string();
        assert!(!session_valid(&token, &format!("{later}.{rest}"), now));
        let (issued, rest) = session.split_once('.').expect("dot");
        let (_, mac) = rest.split_once('.').expect("dot");
        let other_id = "0".repeat(32);
        assert!(!session_valid(
            &token,
            &format!("{issued}.{other_id}.{mac}"),
            now
        ));
        assert!(!session_valid(&token, "garbage", now));
        assert!(!session_valid(&Secret::default(), &session, now));
        // Two logins in the same millisecond are two sessions.
        let again = issue_session(&token, now);
        assert_ne!(
            parse_session(&token, &session, now),
            parse_session(&token, &again, now)
        );
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let token = Secret::new("s3cret-token");
        let a = csrf_token(&token, "1.aa");
        let b = csrf_token(&token, "1.bb");
        assert_ne!(a, b);
        let authed = Authed {
            csrf: a.clone(),
            principal: Principal::Bearer,
        };
        assert!(csrf_ok(&authed, Some(&a)));
        assert!(!csrf_ok(&authed, Some(&b)));
        assert!(!csrf_ok(&authed, None));
        assert!(!csrf_ok(&authed, Some("")));
    }

    fn authed(c: Credentials) -> Option<Authed> {
        match c {
            Credentials::Valid(a) => Some(a),
            _ => None,
        }
    }

    #[test]
    fn requests_authenticate_by_bearer_or_cookie() {
        let token = Secret::new("s3cret-token");
        let now = at("2026-12-01T10:00:00Z");
        let mut headers = HeaderMap::new();
        assert!(matches!(
            authenticate(&token, &headers, now),
            Credentials::None
        ));
        headers.insert(header::AUTHORIZATION, "Bearer wrong".parse().expect("hv"));
        assert!(matches!(
            authenticate(&token, &headers, now),
            Credentials::Wrong
        ));
        headers.insert(
            header::AUTHORIZATION,
            "Bearer s3cret-token".parse().expect("hv"),
        );
        let bearer = authed(authenticate(&token, &headers, now)).expect("bearer");
        assert_eq!(bearer.principal, Principal::Bearer);
        let mut headers = HeaderMap::new();
        let cookie = format!("a=b; {SESSION_COOKIE}={}", issue_session(&token, now));
        headers.insert(header::COOKIE, cookie.parse().expect("hv"));
        let authed = authed(authenticate(&token, &headers, now)).expect("cookie session");
        assert_ne!(authed.csrf, csrf_token(&token, BEARER_SESSION));
        assert!(matches!(authed.principal, Principal::Cookie(_)));
        // An empty token (console off) never authenticates.
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer ".parse().expect("hv"));
        assert!(matches!(
            authenticate(&Secret::default(), &headers, now),
            Credentials::Wrong
        ));
    }

    #[test]
    fn the_login_limit_is_per_address() {
        let limiter = LoginLimiter::default();
        let a = Some(PeerAddr("10.0.0.1:1000".parse().expect("addr")));
        let b = Some(PeerAddr("10.0.0.2:1000".parse().expect("addr")));
        for _ in 0..LOGINS_PER_MINUTE {
            assert!(limiter.allow(a));
        }
        assert!(!limiter.allow(a));
        assert!(limiter.blocked(a));
        assert!(limiter.allow(b));
        assert!(!limiter.blocked(b));
    }
}
