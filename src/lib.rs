//! concierge: guest-messaging automation for hosts on Channex (Booking.com, Airbnb).
//!
//! The modules follow the data flow of DESIGN.md:
//!
//! ```text
//! channex ──▶ poller ──▶ events (JetStream CONCIERGE_EVENTS) ──▶ worker
//!                                                                  │
//!              rules (Rhai, pure: event → plan) ◀──────────────────┤
//!              templates (handlebars: plan → text)                 │
//!              executor (the only writer: Channex, alerts, ledger) ◀┘──▶ audit (CONCIERGE_AUDIT)
//!              scheduler (follow-up timers + cron ticks) ──▶ events
//! ```
//!
//! - [`base`]: pure building blocks below every layer: time (parsing, DST, formatting, cron
//!   specs), the injected clock, KV key encoding, diagnostics (source problems, reload reports).
//! - [`config`]: `concierge.toml` + environment overrides, validated once at start.
//! - [`channex`]: typed HTTP client of the Channex Messages API (retries, rate limit).
//! - [`sim`]: an in-process / standalone simulator of that API, for tests and the demo.
//! - [`events`]: the event JSON, subjects and deterministic ids.
//! - [`nats`]: connecting, and creating/reconciling streams and KV buckets.
//! - [`lease`]: KV-lease leader election used by the poller and the scheduler.
//! - [`poller`]: turns Channex changes into events, restart-safe.
//! - [`rules`]: loads and runs Rhai rule files; an event in, an action plan out.
//! - [`templates`]: handlebars rendering in strict mode.
//! - [`executor`]: carries out a plan effectively once; alert sinks.
//! - [`worker`]: the durable consumer that ties rules, executor and audit together.
//! - [`audit`]: the audit record and its stream.
//! - [`scheduler`]: durable follow-up timers and cron schedules.
//! - [`purge`]: deletes one thread's personal data on request.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz`, `/webhooks/channex`.
//! - [`roles`]: builds each role from config (shared by `run`, `demo`, tests, benches).
//! - [`demo`]: the scripted showcase behind `concierge demo`.
//! - [`cli`]: the command line; the only module that reads argv or the environment.

pub mod authoring;
pub mod base;
pub mod channex;
pub mod cli;
pub mod config;
pub mod content;
pub mod demo;
pub mod events;
pub mod http;
pub mod plan;
pub mod roles;
pub mod sim;
pub mod store;
pub mod wiring;
