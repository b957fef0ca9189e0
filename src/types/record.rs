//! A profile as stored: the plain data of a profile record. The record codec (`entries/profile.rs`)
//! encodes and decodes it and adds its storage helpers (`state_mut`, `approx_bytes`); the profile
//! rules (`profile/merge.rs`) change it.

use super::state::PropState;
use super::value::Timestamp;

/// Identifier half of a profile record: first in a full record, so that recovery can decode
/// it alone.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Ids {
    pub user_id: Option<String>,
    /// As last given (lookups use the normalised form).
    pub email: Option<String>,
    pub anonymous_ids: Vec<String>,
    pub company_id: Option<String>,
}

/// A profile as stored, with every property's state.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ProfileRecord {
    pub ids: Ids,
    /// Timestamp of the first call that identified the person (earliest over merges).
    pub first_seen: Timestamp,
    /// Timestamp of the newest call applied.
    pub updated_at: Timestamp,
    /// Properties by name number, sorted by it.
    pub props: Vec<(u32, PropState)>,
}
