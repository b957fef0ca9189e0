//! Per-property rules (SPEC 3.3): every property remembers the timestamp of the call that set
//! it; calls that arrive out of order leave the same properties as in order.

use serde::{Deserialize, Serialize};

use crate::profile::message::Number;
use crate::profile::value::{Timestamp, Value};

/// One operation on one property, as a call carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum PropOp {
    /// A trait: last write wins by (timestamp, arrival order).
    Set(Value),
    /// `$set_once`: applies only where the property has no value.
    SetOnce(Value),
    /// `$unset` or a trait set to `null`: a timestamped removal.
    Unset,
    /// `$add`: sum.
    Add(Number),
}

/// What happened to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Taken into the state.
    Taken,
    /// `$add` on a property whose value is not a number: refused and reported.
    NotANumber,
}

/// The state of one property: enough to merge and to accept late calls.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PropState {
    // filled in by the implementation
}

impl PropState {
    /// Apply `op` stamped with the call's event time `ts` and arrival order `order`.
    pub fn apply(&mut self, op: &PropOp, ts: Timestamp, order: u64) -> Applied {
        todo!("{op:?} {ts:?} {order}")
    }

    /// Combine with the state of the same property of a merged-away profile, by the same
    /// rules (the result is what applying both histories would give).
    pub fn merge(&mut self, other: &PropState) {
        todo!("{other:?}")
    }

    /// The current value, if any.
    pub fn value(&self) -> Option<Value> {
        todo!()
    }

    /// Timestamp of the newest operation that decided the current value (for `updated_at`
    /// style reporting and tests).
    pub fn last_ts(&self) -> Option<Timestamp> {
        todo!()
    }
}
