//! The roles (DESIGN.md, "Layout and layers": `roles`): poller, worker, executor, scheduler,
//! each a long-running loop built by [`crate::wiring`], the [`responses`] tracker (response
//! times and the OTAs' scores, run with the worker), plus the Channex-backed
//! [`directory`] the scheduler reads threads through, and the web [`console`].
//!
//! Must not: be used by `base`, `channex`, `events`, `plan`, `content` or `store`; a role
//! does not implement another role's trait (shared traits live in `store`).

pub mod console;
pub mod directory;
pub mod executor;
pub mod poller;
pub mod responses;
pub mod scheduler;
pub mod worker;
