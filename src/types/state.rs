//! The stored state of one property: the plain data the record codec writes and the profile
//! rules change. Its rules (how an operation changes it, what value it shows, how two states
//! merge) are the inherent methods in `profile/props.rs`, whose module documentation gives the
//! exact semantics.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use super::value::{Timestamp, Value};

/// When an operation happened: event timestamp, then arrival order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Encode, Decode,
)]
pub(crate) struct Stamp(pub(crate) Timestamp, pub(crate) u64);

impl Stamp {
    /// The stamp of an operation at event time `ts` with arrival order `order`.
    pub(crate) fn new(ts: Timestamp, order: u64) -> Stamp {
        Stamp(ts, order)
    }
}

/// The counted `$add`s: all newer than `lww` (up to approximation 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
pub(crate) struct Adds {
    /// Sum of integer increments (exact, order-independent).
    pub(crate) int: i128,
    /// Sum of float increments, if any.
    pub(crate) float: Option<f64>,
    /// Oldest counted add.
    pub(crate) first: Stamp,
    /// Newest counted add.
    pub(crate) last: Stamp,
}

/// The state of one property: enough to merge and to accept late calls.
///
/// See the documentation of the `profile::props` module for the exact semantics and the two
/// approximations.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Encode, Decode)]
pub struct PropState {
    /// Newest `Set` (`Some`) or `Unset` (`None`).
    pub(crate) lww: Option<(Stamp, Option<Value>)>,
    /// Oldest `SetOnce` newer than `lww`. Boxed, as `adds`: most properties never see a
    /// `$set_once` or an `$add`, and a state is 64 bytes with both behind a pointer instead of
    /// 160 inline (the writer cache holds ~40 states per profile).
    pub(crate) once: Option<Box<(Stamp, Value)>>,
    /// `$add`s newer than `lww`.
    pub(crate) adds: Option<Box<Adds>>,
}
