//! plan

pub mod rules;
pub mod templates;
