//! TODO
pub struct LiveRules;
pub struct ReloadReport;
