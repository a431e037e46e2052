//! Pure building blocks shared by every layer (DESIGN.md, "Layout and layers": `base`).
//!
//! Owns:
//! - [`time`]: timestamp parsing (Channex's zone-less UTC and RFC 3339, the lenient forms of
//!   rules and templates), DST resolution, formatting in a zone, cron specs;
//! - [`clock`]: the one injectable source of "now";
//! - [`keys`]: the encoding of outside data into NATS KV key tokens;
//! - [`diagnostics`]: problems with source files, reload reports, content versions;
//! - [`display`]: the one sanitiser of outside text shown to people (controls, bidi
//!   formatting, a cap per field);
//! - [`language`]: the guest's language (ISO 639-1), detected offline or read from a booking.
//!
//! Must not: do I/O, log, or use anything of the crate: it sits below every other module
//! and depends on std and pure crates (chrono, chrono-tz, cron, serde, sha2, whatlang) only.

pub mod clock;
pub mod diagnostics;
pub mod display;
pub mod keys;
pub mod language;
pub mod time;
