//! Typed client of the Channex Messages API (message threads, thread and booking
//! messages, attachments, close, no-reply-needed) and the read-only part of the Bookings
//! API (`GET /bookings/:id`, `GET /bookings`). The booking revisions feed and its ack
//! endpoint are never called: the host's PMS owns that feed.
//!
//! Owns: the wire models ([`wire`], shared with the simulator), the domain types
//! ([`model`]), response decoding ([`parse`]), typed errors ([`error`]), the retry policy
//! as pure functions ([`retry`]) and the HTTP client with rate limiting, retries and
//! pagination ([`client`]).
//! Must not: use anything of the crate but [`crate::base`]; know about NATS, events, rules
//! or the executor; print the API key anywhere
//! (`ApiKey`'s `Debug`/`Display` print `***`, the header value is marked sensitive, and no
//! error message is built from headers).
//!
//! # Shapes and tolerance
//! Timestamps are accepted as naive microseconds (`2021-07-28T04:25:15.000000`, UTC) and
//! RFC 3339 (`2023-12-01T07:01:38.735Z`). Unknown fields are ignored. A malformed item of a
//! list (bad UTF-8, a lone surrogate escape, a wrong type, an id that is not
//! `[A-Za-z0-9_-]{1,128}`) is reported in `Page::skipped` / `Listing::skipped` while the
//! rest of the page is kept; a message text that is a JSON number is kept as its string
//! form. Relative attachment URLs (`attachments/<id>`) are made
//! absolute against the client's base URL. Providers are normalised case-insensitively
//! (`BookingCom`, `AirBNB`, ...) and unknown ones flow through as `Provider::Other`.
//!
//! # Retries and the non-idempotent send
//! GETs, `close`, `no_reply_needed` and attachment uploads are idempotent: they are retried
//! on 429 (after `Retry-After`, or backoff when absent), on 5xx, timeouts and transport
//! errors, with jittered exponential backoff (`backoff_base` doubling up to
//! `backoff_max`), at most `max_retries` times. Other 4xx fail at once as
//! [`ChannexError::Api`] with Channex's error code.
//!
//! Sending a message is not idempotent: a 5xx or a timeout after the request went out may
//! mean the message *was* delivered to the guest. So a send is retried only when it surely
//! was not applied — a 429 (Channex rejected it) or a connection error before the request
//! was written — and otherwise fails at once with `Server`/`Timeout`/`Transport` whose
//! [`ChannexError::is_ambiguous`] is `true`. The executor then re-reads the thread to decide
//! whether the text is already there, instead of resending blindly.
//!
//! A client-side `governor` limiter keeps the client under `requests_per_minute` (with a
//! small burst), shared by all clones of a client.

pub mod client;
pub mod error;
pub mod model;
pub mod parse;
pub mod retry;
pub mod wire;

pub use client::{ApiKey, ChannexClient, ClientOptions, ClientStats};
pub use error::{ChannexError, ErrorCode};
pub use model::{
    absolute_url, BookingDetails, BookingQuery, BookingRecord, ItemKind, LastMessage, Listing,
    Message, MessageMeta, OrderDirection, Page, PageMeta, Provider, Sender, SkippedItem, Thread,
    ThreadQuery,
};
