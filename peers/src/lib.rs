//! Bench-only crate: W1 on profiledb's peers (SQLite, redb, fjall and a hand-written log of
//! whole profiles). See `src/bin/compare.rs`.

pub mod baseline;
pub mod engines;
pub mod peer;
pub mod procfs;
