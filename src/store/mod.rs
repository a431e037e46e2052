//! store

pub mod audit;
pub mod claim;
pub mod lease;
pub mod ledger;
pub mod nats;
pub mod purge;
