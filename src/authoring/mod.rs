//! Authoring: the host's tools for rule and template files — `rules check`, `rules test`
//! fixtures, the built-in sample events and `replay`.
//!
//! Owns those tools' logic and reports. Every one of them gets its plans from
//! [`crate::plan::plan`], the function the worker uses, so what they show is what the
//! service would do. It may read files and (replay) the NATS streams; it must not act on a
//! plan, write to NATS, call Channex, or read argv / the environment (the CLI does that).

pub mod check;
pub mod eval;
pub mod fixtures;
pub mod replay;
pub mod samples;
