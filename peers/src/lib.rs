//! Bench-only crate: W1 on profiledb's peers (SQLite, redb, fjall). See `src/bin/compare.rs`.

pub mod engines;
pub mod peer;
