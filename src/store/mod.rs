//! Everything the service keeps in NATS (DESIGN.md, "Layout and layers": `store`).
//!
//! Owns: the NATS infrastructure and the one classification of NATS failures
//! ([`nats::StoreError`]: unavailable, wait and retry / refused), the executor's ledger and
//! claims, leader leases, follow-up timers, the booking cache, the console's session revocations, the poller's thread snapshots (with the
//! [`threads::ThreadDirectory`] trait the scheduler reads threads through), the audit log,
//! the response-time records ([`responses`]) and purges. Must not: use `roles`, `wiring`, `cli` or `demo`, nor decide what is stored
//! means (the roles do); time comes from an injected [`crate::base::clock::Clock`].

pub mod audit;
pub mod bookings;
pub mod claim;
pub mod lease;
pub mod ledger;
pub mod nats;
pub mod purge;
pub mod responses;
pub mod sessions;
pub mod threads;
pub mod timers;
