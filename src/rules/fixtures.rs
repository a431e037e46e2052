//! TODO
pub struct Fixture;
pub struct FixtureResult;
pub struct TestReport;
pub fn run_fixture_tests() {}
