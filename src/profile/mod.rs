//! The profile rules: knows people, never bytes.
//!
//! `message` parses Segment-shaped calls, `validate` enforces
//! SPEC 3.1, `props` the per-property rules of SPEC 3.3, `merge` the whole-profile rules (merge,
//! effective `created_at`, the order of a call's operations), `filter` the scan filters of 3.7.

pub mod filter;
pub(crate) mod merge;
pub mod message;
pub(crate) mod parse;
mod printable;
pub mod props;
pub mod resolve;
pub mod validate;
