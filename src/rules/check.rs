//! TODO
pub struct CheckReport;
pub struct CheckOptions;
pub fn check() {}
pub fn check_with() {}
