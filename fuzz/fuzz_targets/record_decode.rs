//! cargo-fuzz target `record_decode`: the check is `fuzz_checks::record_decode`, shared with the corpus replay
//! in tests/fuzz_corpus.rs. See fuzz/README.md.
#![no_main]

#[path = "../../tests/support/fuzz_checks.rs"]
mod fuzz_checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_checks::record_decode(data));
