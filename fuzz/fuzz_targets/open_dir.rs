//! cargo-fuzz target `open_dir`: the check is `fuzz_checks::open_dir`, shared with the corpus replay
//! in tests/fuzz_corpus.rs. See fuzz/README.md.
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::open_dir(data));
