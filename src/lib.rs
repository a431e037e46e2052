//! concierge: guest-messaging automation for hosts on Channex (Booking.com, Airbnb).
//!
//! The folders follow the data flow of DESIGN.md ("Layout and layers") and dependencies
//! point one way: a layer uses only the layers listed before it in the table below.
//! `tests/architecture.rs` reads every `use crate::..` path of `src/` and fails on a cycle
//! (between top-level modules, or between the modules of one layer), on a forbidden edge,
//! on I/O in `base` or `plan`, on the environment read outside `cli`, and on any function
//! longer than 100 lines.
//!
//! ```text
//!  Channex ──▶ roles::poller ──▶ <PREFIX>_EVENTS ──▶ roles::worker ── plan() ──▶ roles::executor ──▶ Channex, alert sinks
//!                  │                                     ▲   (plan: rules + templates,          │
//!                  │              roles::scheduler ──────┘    pure, rendered steps)             │
//!                  ▼                  (timers, cron)                                            ▼
//!            store: thread snapshots · leases · follow-up timers · ledger + claims · audit log (<PREFIX>_AUDIT)
//!  content: rules/ + templates/ on disk ──live reload──▶ Arc<Content> ──▶ worker, authoring (check, test, replay)
//! ```
//!
//! | layer | owns | may use |
//! |---|---|---|
//! | [`base`] | time (Channex timestamps, DST, formatting, cron specs), the injected [`base::clock::Clock`], KV key encoding, diagnostics | std and pure crates |
//! | [`channex`] | the typed Channex client: wire shapes, models, errors, the pure retry policy | `base` |
//! | [`events`] | the event JSON with typed provider / sender / event type, subjects, ids | `base`, `channex` models |
//! | [`config`] | `concierge.toml` + the environment overrides `cli` hands in, validated once (cron specs parsed here) | `base`, `channex`, `events` |
//! | [`plan`] | rules (Rhai engine, API, metadata) + templates, and the one pure `plan(engine, content, event, now, dry_run)` | `base`, `events`: no I/O, no clock |
//! | [`content`] | reading rules/ and templates/ and live-reloading them into `Arc<Content>` snapshots | `base`, `events`, `plan` |
//! | [`store`] | NATS infra and the one NATS failure classification, ledger + claims, follow-up timers, thread snapshots, leases, the audit log (typed action / outcome / reason), purge | `base`, `events`, `config`, Channex models |
//! | [`authoring`] | `rules check`, `rules test` fixtures, samples, `replay`: all through `plan()` | `plan`, `content`, `store` (read) |
//! | [`roles`] | poller (pure change detection + run loop), worker, executor (the only writer to Channex and alert sinks), scheduler, the web console (read-only but for cancelling a follow-up) | everything above |
//! | [`wiring`], [`http`], [`sim`], [`demo`], [`cli`] | building each role from config, `/metrics` `/healthz` `/readyz` `/webhooks/channex` (+ the console's routes), the Channex simulator, the showcase, the command line (the only reader of argv and the environment) | everything |

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
