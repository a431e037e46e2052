//! roles

pub mod executor;
pub mod poller;
pub mod scheduler;
pub mod worker;
