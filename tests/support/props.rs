//! The configuration of the property tests in `tests/`.
#![allow(dead_code)]

use proptest::test_runner::{Config, FileFailurePersistence};

/// `PROPTEST_CASES` cases if it is set (README, "Tests"), else `default_cases`; failures saved to
/// and replayed from `regressions`, a path from the crate's root
/// (`tests/NAME.proptest-regressions`). proptest's default looks for a `lib.rs` or `main.rs`
/// above the test's source to put the file beside, finds none in `tests/`, and then neither
/// saves a failure nor replays the seeds committed there.
pub fn config(default_cases: u32, regressions: &'static str) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..Config::default()
    }
}
