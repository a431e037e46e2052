//! Pure building blocks shared by every layer (DESIGN.md, "Layers": `base`).
//!
//! Owns: the encoding of outside data into NATS KV key tokens ([`keys`]).
//! Must not: do I/O, log, or depend on anything but std: it sits below every other module.

pub mod clock;
pub mod keys;
pub mod time;
