//! The profile rules: knows people, never bytes.
//!
//! `message` parses Segment-shaped calls, `value` holds typed values, `validate` enforces
//! SPEC 3.1, `props` the per-property rules of SPEC 3.3, `filter` the scan filters of 3.7.

pub mod filter;
pub mod message;
mod parse;
pub mod props;
pub mod resolve;
pub mod validate;
pub mod value;
