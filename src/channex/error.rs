//! Typed errors of the Channex client.
//!
//! Owns: `ChannexError`, `ErrorCode` and the classification helpers callers use to decide
//! what to do next (`is_transient`, `is_ambiguous`, `code`, `status`).
//! Must not: carry secrets. No variant holds the API key, a header map or a request
//! body; messages are built from status codes, Channex's error code/title and the
//! transport error's text (which names the URL, never headers).

use std::time::Duration;

/// Channex's `errors.code` strings, typed. `as_str()` gives the wire string back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    NotSupported,
    /// `http_too_many_requests`
    TooManyRequests,
    ValidationError,
    Other(String),
}

impl ErrorCode {
    pub fn parse(s: &str) -> ErrorCode {
        match s {
            "unauthorized" => ErrorCode::Unauthorized,
            "forbidden" => ErrorCode::Forbidden,
            "not_found" => ErrorCode::NotFound,
            "not_supported" => ErrorCode::NotSupported,
            "http_too_many_requests" => ErrorCode::TooManyRequests,
            "validation_error" => ErrorCode::ValidationError,
            other => ErrorCode::Other(other.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::TooManyRequests => "http_too_many_requests",
            ErrorCode::ValidationError => "validation_error",
            ErrorCode::Other(s) => s,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

static TOO_MANY_REQUESTS: ErrorCode = ErrorCode::TooManyRequests;

/// Everything a Channex call can fail with.
///
/// `ambiguous: true` (on `Server`, `Timeout`, `Transport`) means a non-idempotent request
/// (sending a message) may or may not have been applied by Channex: the caller must
/// re-read the thread instead of sending again.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannexError {
    /// A 4xx answer with Channex's error body (or a synthesised code when the body was
    /// not an error document).
    #[error("channex API error {status} {code}: {title}")]
    Api {
        status: u16,
        code: ErrorCode,
        title: String,
    },
    /// 429 after the retry budget was spent (or `Retry-After` longer than `backoff_max`).
    #[error("channex rate limit (429) persisted; retry after {retry_after:?}")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx (after retries for idempotent requests; at once for sends).
    #[error("channex server error {status}{}", if *.ambiguous { " (request may have been applied)" } else { "" })]
    Server { status: u16, ambiguous: bool },
    /// The request timed out.
    #[error("channex request timed out{}", if *.ambiguous { " (request may have been applied)" } else { "" })]
    Timeout { ambiguous: bool },
    /// Connection/transport failure.
    #[error("channex transport error: {message}{}", if *.ambiguous { " (request may have been applied)" } else { "" })]
    Transport { message: String, ambiguous: bool },
    /// A 2xx answer whose body could not be read as the expected document.
    #[error("channex response could not be decoded: {0}")]
    Decode(String),
    /// Bad client options (URL, limits).
    #[error("invalid channex client configuration: {0}")]
    InvalidConfig(String),
    /// An id handed to the client is not a Channex id ([`super::wire::is_valid_id`]): it
    /// could change the request's path (`..`), so nothing was sent.
    #[error("not a Channex id: {0}")]
    InvalidId(String),
}

impl ChannexError {
    /// Channex's error code, when there is one (`RateLimited` maps to `TooManyRequests`).
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ChannexError::Api { code, .. } => Some(code),
            ChannexError::RateLimited { .. } => Some(&TOO_MANY_REQUESTS),
            _ => None,
        }
    }

    /// HTTP status, when the failure came with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ChannexError::Api { status, .. } | ChannexError::Server { status, .. } => Some(*status),
            ChannexError::RateLimited { .. } => Some(429),
            _ => None,
        }
    }

    /// Worth trying again later (rate limit, 5xx, timeout, transport).
    pub fn is_transient(&self) -> bool {
        match self {
            ChannexError::RateLimited { .. }
            | ChannexError::Server { .. }
            | ChannexError::Timeout { .. }
            | ChannexError::Transport { .. } => true,
            ChannexError::Api { status, .. } => *status == 429 || *status == 408,
            ChannexError::Decode(_)
            | ChannexError::InvalidConfig(_)
            | ChannexError::InvalidId(_) => false,
        }
    }

    /// The request was a non-idempotent send that may have been applied: re-read before
    /// resending.
    pub fn is_ambiguous(&self) -> bool {
        match self {
            ChannexError::Server { ambiguous, .. }
            | ChannexError::Timeout { ambiguous }
            | ChannexError::Transport { ambiguous, .. } => *ambiguous,
            _ => false,
        }
    }
}
