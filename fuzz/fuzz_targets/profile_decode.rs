//! cargo-fuzz target `profile_decode`: arbitrary bytes to the profile record decoder (full and
//! delta records, their identifier prefixes), through `profiledb::fuzz_profile_payload`
//! (feature `testing`). See fuzz/README.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| profiledb::fuzz_profile_payload(data));
