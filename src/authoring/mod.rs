//! authoring

pub mod check;
pub mod fixtures;
pub mod samples;
