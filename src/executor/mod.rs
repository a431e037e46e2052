//! TODO
pub mod alerts;
