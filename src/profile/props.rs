//! Per-property rules (SPEC 3.3): every property remembers the timestamp of the call that set
//! it; calls that arrive out of order leave the same properties as in order.
//!
//! # Semantics
//!
//! Every operation carries a stamp `(timestamp, arrival order)`; stamps are totally ordered.
//! The state keeps three parts, each a function of the *set* of operations received, not of
//! their arrival order:
//!
//! - `lww`: the newest `Set` or `Unset` (a trait set to `null` is an `Unset`).
//! - `once`: the oldest `SetOnce` newer than `lww` (a `SetOnce` older than the newest
//!   `Set`/`Unset` can never become visible, so it is dropped).
//! - `adds`: the sum of the `$add` increments newer than `lww`, with the stamps of the oldest
//!   and newest of them.
//!
//! The visible value is replayed as if the calls had arrived in timestamp order:
//! the base is `lww`'s value if it is a `Set`; otherwise `once`'s value if it is not newer
//! than any counted `$add` (a `$set_once` after an `$add` finds the property set; an equal
//! stamp means the same call, where `$set_once` applies before `$add`); otherwise none.
//! Then the adds are applied to the base (absent counts as 0). An `$add` on a non-number is
//! reported as [`Applied::NotANumber`] and leaves the visible value unchanged: while the base
//! is not a number, [`PropState::value`] ignores the counted adds. (They stay counted so that a
//! late, older `Set` of a number gives the same value as timestamp order.) An `$add` whose
//! float result would not be finite is reported as [`Applied::Overflow`] and not taken.
//!
//! Integer increments are summed exactly in an `i128` (so the order of increments never
//! matters); a total that does not fit an `i64` becomes a float. Any float increment or float
//! base makes the result a float (float sums may differ in the last bits between orders, as
//! float addition is not associative).
//!
//! # Approximations (bounded state)
//!
//! Exact order independence for arbitrary arrival orders would need every `$add` and
//! `$set_once` kept forever. The state is bounded instead, which costs two approximations, both
//! only when a `Set`/`Unset` arrives *late* (after operations newer than it):
//!
//! 1. A late `Set`/`Unset` whose stamp lies between the oldest and the newest counted `$add`
//!    cannot tell which adds are older than it: all of them are kept (counted as newer).
//! 2. Only the oldest candidate `$set_once` is kept. A late `Set`/`Unset` newer than it clears
//!    it, and a newer `$set_once` that was already dropped does not come back: the property
//!    stays without that value.
//!
//! In every other case (in particular: any order of `Set`/`Unset`/`SetOnce` when at most one
//! `$set_once` is newer than the newest removal, and any order of `$add`s), the result equals
//! applying the calls in timestamp order.

use crate::profile::message::Number;
pub use crate::types::state::PropState;
pub(crate) use crate::types::state::{Adds, Stamp};
use crate::types::value::{Timestamp, Value};

/// One operation on one property, as a call carries it.
#[derive(Debug, Clone, PartialEq)]
// SetOnce, List: the write path applies those by reference (`apply_set_once_ref`,
// `apply_list`); only the rules' own tests build them.
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub enum PropOp {
    /// A trait: last write wins by (timestamp, arrival order).
    Set(Value),
    /// `$set_once`: applies only where the property has no value.
    SetOnce(Value),
    /// `$unset` or a trait set to `null`: a timestamped removal.
    Unset,
    /// `$add`: sum.
    Add(Number),
    /// `$append`, `$union`, `$remove`: a list operation, applied in arrival order (see
    /// [`PropState::apply_list`]).
    List(ListOp),
}

/// A list operation on one property (Mixpanel's `$append`, `$union`, `$remove`).
#[derive(Debug, Clone, PartialEq)]
pub enum ListOp {
    /// Add one item at the end (an array is added as one item).
    Append(Value),
    /// Add each item not already in the list, in the order given (no duplicates are added).
    Union(Vec<Value>),
    /// Take every occurrence of the item out of the list.
    Remove(Value),
}

/// Bounds of a list a list operation may leave (`Options::max_list_items`,
/// `Options::max_value_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLimits {
    /// Most items.
    pub max_items: usize,
    /// Largest JSON form, in bytes (as [`Value::json_len`] counts).
    pub max_bytes: usize,
}

impl ListLimits {
    /// No bounds (calls whose values were bounded elsewhere).
    pub const UNBOUNDED: ListLimits = ListLimits {
        max_items: usize::MAX,
        max_bytes: usize::MAX,
    };
}

/// What happened to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Taken into the state.
    Taken,
    /// `$add` on a property whose value is not a number: refused and reported. The visible
    /// value is unchanged; the increment is remembered only so that a late-arriving older
    /// `Set` of a number gives the in-timestamp-order result.
    NotANumber,
    /// `$add` whose float result would not be finite (overflow to infinity): refused and
    /// reported, not remembered; the value stays as it was.
    Overflow,
    /// A list operation on a property whose value is not a list: refused and reported; the
    /// value stays as it was.
    NotAList,
    /// A list operation whose result would pass [`ListLimits`]: refused and reported; the
    /// value stays as it was.
    TooLarge,
}

/// Whether a `Set`/`Unset` at `(ts, order)` on a state whose newest stamp is `newest` leaves
/// a state that does not depend on it: the write is newer than everything the state holds
/// ([`PropState::before_write`]).
pub(crate) fn write_replaces(newest: Option<Stamp>, ts: Timestamp, order: u64) -> bool {
    newest.is_none_or(|s| s < Stamp(ts, order))
}

impl Adds {
    fn combine(&mut self, other: &Adds) {
        self.int = self.int.saturating_add(other.int);
        self.float = match (self.float, other.float) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.first = self.first.min(other.first);
        self.last = self.last.max(other.last);
    }

    /// `base + sum`; `None` if `base` is not a number.
    fn apply_to(&self, base: Option<&Value>) -> Option<Value> {
        let base_int: i128;
        let mut float: Option<f64> = self.float;
        match base {
            None => base_int = 0,
            Some(Value::Int(i)) => base_int = i128::from(*i),
            Some(Value::Float(f)) => {
                base_int = 0;
                float = Some(float.unwrap_or(0.0) + f);
            }
            Some(_) => return None,
        }
        let total = base_int.saturating_add(self.int);
        Some(match float {
            Some(f) => Value::Float(total as f64 + f),
            None => match i64::try_from(total) {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Float(total as f64),
            },
        })
    }
}

impl PropState {
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Apply `op` stamped with the call's event time `ts` and arrival order `order`.
    pub fn apply(&mut self, op: &PropOp, ts: Timestamp, order: u64) -> Applied {
        self.apply_owned(op.clone(), ts, order)
    }

    /// [`PropState::apply`] taking the operation by value (no copy of its value).
    pub fn apply_owned(&mut self, op: PropOp, ts: Timestamp, order: u64) -> Applied {
        let stamp = Stamp(ts, order);
        match op {
            PropOp::List(list) => return self.apply_list(list, ts, order, ListLimits::UNBOUNDED),
            PropOp::Set(v) => self.write(stamp, Some(v)),
            PropOp::Unset => self.write(stamp, None),
            PropOp::SetOnce(v) => {
                if !self.older_than_lww(stamp)
                    && self.once.as_deref().is_none_or(|(s, _)| stamp < *s)
                {
                    self.once = Some(Box::new((stamp, v)));
                }
            }
            PropOp::Add(n) => {
                if self.older_than_lww(stamp) {
                    // A newer Set/Unset overrides it, as in timestamp order.
                    return Applied::Taken;
                }
                let (int, float) = match n {
                    Number::Int(i) => (i128::from(i), None),
                    Number::Float(f) => (0, Some(f)),
                };
                let add = Adds {
                    int,
                    float,
                    first: stamp,
                    last: stamp,
                };
                let mut combined = add.clone();
                if let Some(existing) = self.adds.as_deref() {
                    combined.combine(existing);
                }
                let base = self.base_with(Some(&combined));
                // A float result that is not finite (overflow to infinity) is refused and not
                // remembered: the value stays as it was.
                let overflow = combined.float.is_some_and(|f| !f.is_finite())
                    || matches!(combined.apply_to(base.as_ref()),
                                Some(Value::Float(f)) if !f.is_finite());
                if overflow {
                    return Applied::Overflow;
                }
                let not_a_number = base.is_some_and(|base| base.as_f64().is_none());
                // Remembered even when refused: it stays invisible while the base is not a
                // number, and counts if a late, older Set of a number arrives (as in
                // timestamp order).
                self.adds = Some(Box::new(combined));
                if not_a_number {
                    return Applied::NotANumber;
                }
            }
        }
        Applied::Taken
    }

    /// A `Set` (`Some`) or `Unset` (`None`) from a borrowed value: the same as
    /// [`PropState::apply_owned`] with `PropOp::Set(v.clone())` / `PropOp::Unset`, but the value
    /// is copied only when it is taken and differs from the string the state already holds.
    pub(crate) fn apply_set_ref(&mut self, value: Option<&Value>, ts: Timestamp, order: u64) {
        let stamp = Stamp(ts, order);
        if self.older_than_lww(stamp) {
            return;
        }
        match (&mut self.lww, value) {
            // The same string again: keep its allocation, take the new stamp.
            (Some((s, Some(Value::Str(have)))), Some(Value::Str(new))) if have == new => {
                *s = stamp;
            }
            _ => self.lww = Some((stamp, value.cloned())),
        }
        self.drop_older_than(stamp);
    }

    /// The state as it is, for the undo record of a `Set`/`Unset` about to be applied at
    /// `(ts, order)`. When that stamp is newer than every stamp the state holds, the write
    /// leaves `lww` alone of all it holds (`drop_older_than` clears the older `once` and
    /// `adds`), so the result does not depend on the state: it is taken out, not copied, and
    /// the write applies to an empty state. Otherwise it is copied.
    pub(crate) fn before_write(&mut self, ts: Timestamp, order: u64) -> PropState {
        if write_replaces(self.newest_stamp(), ts, order) {
            std::mem::take(self)
        } else {
            self.clone()
        }
    }

    /// A `$set_once` from a borrowed value: the same as [`PropState::apply_owned`] with
    /// `PropOp::SetOnce(v.clone())`, copying the value only when it is taken.
    pub(crate) fn apply_set_once_ref(&mut self, value: &Value, ts: Timestamp, order: u64) {
        let stamp = Stamp(ts, order);
        if !self.older_than_lww(stamp) && self.once.as_deref().is_none_or(|(s, _)| stamp < *s) {
            self.once = Some(Box::new((stamp, value.clone())));
        }
    }

    /// A `Set` (`Some`) or `Unset` (`None`) at `stamp`.
    fn write(&mut self, stamp: Stamp, value: Option<Value>) {
        if self.older_than_lww(stamp) {
            return;
        }
        self.lww = Some((stamp, value));
        self.drop_older_than(stamp);
    }

    /// Whether `stamp` is older than the newest `Set`/`Unset`.
    fn older_than_lww(&self, stamp: Stamp) -> bool {
        self.lww.as_ref().is_some_and(|(s, _)| stamp < *s)
    }

    /// Forget the `once` and `adds` a `Set`/`Unset` at `stamp` overrides.
    fn drop_older_than(&mut self, stamp: Stamp) {
        if self.once.as_deref().is_some_and(|(s, _)| *s < stamp) {
            self.once = None;
        }
        if self.adds.as_deref().is_some_and(|a| a.last < stamp) {
            self.adds = None;
        }
        // Approximation 1: adds on both sides of `stamp` are all kept.
    }

    /// The value without the adds, given the adds that will be counted.
    fn base_with(&self, adds: Option<&Adds>) -> Option<Value> {
        match &self.lww {
            Some((_, Some(v))) => Some(v.clone()),
            _ => self
                .once
                .as_deref()
                .filter(|(s, _)| adds.is_none_or(|a| *s <= a.first))
                .map(|(_, v)| v.clone()),
        }
    }

    /// Combine with the state of the same property of a merged-away profile, by the same
    /// rules (the result is what applying both histories would give, up to the two
    /// approximations of the module documentation).
    pub fn merge(&mut self, other: &PropState) {
        if let Some((stamp, value)) = &other.lww
            && !self.older_than_lww(*stamp)
            && self.lww.as_ref().is_none_or(|(s, _)| s != stamp)
        {
            self.lww = Some((*stamp, value.clone()));
        }
        let lww = self.lww.as_ref().map(|(s, _)| *s);
        let newer = |s: &Stamp| lww.is_none_or(|l| *s > l);
        let once = [self.once.take(), other.once.clone()]
            .into_iter()
            .flatten()
            .filter(|b| newer(&b.0))
            .min_by_key(|b| b.0);
        self.once = once;
        let mut adds: Option<Box<Adds>> = None;
        for side in [self.adds.take(), other.adds.clone()].into_iter().flatten() {
            if !newer(&side.last) {
                continue;
            }
            match &mut adds {
                Some(a) => a.combine(&side),
                None => adds = Some(side),
            }
        }
        self.adds = adds;
    }

    /// The current value, if any.
    pub fn value(&self) -> Option<Value> {
        let base = self.base_with(self.adds.as_deref());
        match &self.adds {
            None => base,
            // Adds counted before an older non-number Set arrived are ignored.
            Some(adds) => adds.apply_to(base.as_ref()).or(base),
        }
    }

    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Timestamp of the newest operation that decided the current value (for `updated_at`
    /// style reporting and tests): the newest of the `Set`/`Unset`, the `$set_once` used as
    /// base, and the counted `$add`s.
    pub fn last_ts(&self) -> Option<Timestamp> {
        let lww = self.lww.as_ref().map(|(s, _)| *s);
        let once = match &self.lww {
            Some((_, Some(_))) => None,
            _ => self
                .once
                .as_deref()
                .filter(|(s, _)| self.adds.as_deref().is_none_or(|a| *s <= a.first))
                .map(|(s, _)| *s),
        };
        let adds = self.adds.as_deref().map(|a| a.last);
        [lww, once, adds].into_iter().flatten().max().map(|s| s.0)
    }

    /// Replace the visible value by `value`, as a set stamped with the newest stamp the state
    /// holds (so that a later set still wins and an older one still loses). Used by a merge to
    /// keep the earliest `created_at` (SPEC 3.4) when it comes from the other profile's default.
    pub fn overwrite(&mut self, value: Value) {
        let lww = self.lww.as_ref().map(|(s, _)| *s);
        let once = self.once.as_deref().map(|(s, _)| *s);
        let adds = self.adds.as_deref().map(|a| a.last);
        let stamp = [lww, once, adds]
            .into_iter()
            .flatten()
            .max()
            .unwrap_or(Stamp(Timestamp(i64::MIN), 0));
        *self = PropState {
            lww: Some((stamp, Some(value))),
            once: None,
            adds: None,
        };
    }

    /// Apply a list operation, in **arrival order**: it reads the value the property has when
    /// it arrives (absent counts as an empty list) and leaves the result as a set stamped with
    /// the newer of its own stamp and the newest stamp the state holds. So a list operation is
    /// never discarded for being old, a later-arriving older set does not undo it, and a newer
    /// set or removal replaces the list (docs/semantics.md, "List operations").
    ///
    /// `$remove` on an absent property changes nothing. On a value that is not a list, or
    /// when the result would pass `limits`, nothing changes and [`Applied::NotAList`] or
    /// [`Applied::TooLarge`] is returned.
    pub fn apply_list(
        &mut self,
        op: ListOp,
        ts: Timestamp,
        order: u64,
        limits: ListLimits,
    ) -> Applied {
        let mut items = match self.value() {
            None if matches!(op, ListOp::Remove(_)) => return Applied::Taken,
            None => Vec::new(),
            Some(Value::Array(items)) => items,
            Some(_) => return Applied::NotAList,
        };
        match op {
            ListOp::Append(v) => items.push(v),
            ListOp::Union(vs) => {
                for v in vs {
                    if !items.contains(&v) {
                        items.push(v);
                    }
                }
            }
            ListOp::Remove(v) => items.retain(|x| *x != v),
        }
        let list = Value::Array(items);
        let len = match &list {
            Value::Array(items) => items.len(),
            _ => 0,
        };
        if len > limits.max_items || list.json_len() > limits.max_bytes {
            return Applied::TooLarge;
        }
        let newest = self
            .newest_stamp()
            .map_or(Stamp(ts, order), |s| s.max(Stamp(ts, order)));
        *self = PropState {
            lww: Some((newest, Some(list))),
            once: None,
            adds: None,
        };
        Applied::Taken
    }

    /// The newest stamp the state holds.
    fn newest_stamp(&self) -> Option<Stamp> {
        let lww = self.lww.as_ref().map(|(s, _)| *s);
        let once = self.once.as_deref().map(|(s, _)| *s);
        let adds = self.adds.as_deref().map(|a| a.last);
        [lww, once, adds].into_iter().flatten().max()
    }

    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Whether the state holds nothing at all (no operation was ever taken).
    pub fn is_empty(&self) -> bool {
        self.lww.is_none() && self.once.is_none() && self.adds.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An operation of a call, with its event time (arrival order: its position).
    fn op() -> impl Strategy<Value = (PropOp, i64)> {
        let value = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            "[a-z]{0,30}".prop_map(|s| Value::Str(s.into())),
        ];
        (
            prop_oneof![
                value.clone().prop_map(PropOp::Set),
                value.prop_map(PropOp::SetOnce),
                Just(PropOp::Unset),
                (-5i64..5).prop_map(|n| PropOp::Add(Number::Int(n))),
            ],
            0i64..20,
        )
    }

    proptest! {
        /// `before_write` takes the state out exactly when the write at the stamp does not
        /// depend on it, and either way the write gives what it gives on the state itself.
        #[test]
        fn a_write_newer_than_the_state_does_not_depend_on_it(
            ops in prop::collection::vec(op(), 0..8),
            set in prop::option::of(any::<i64>()),
            ts in 0i64..24,
        ) {
            let mut state = PropState::default();
            for (order, (op, ts)) in ops.iter().enumerate() {
                state.apply(op, Timestamp(*ts), order as u64);
            }
            let order = ops.len() as u64;
            let value = set.map(Value::Int);
            let mut want = state.clone();
            want.apply_set_ref(value.as_ref(), Timestamp(ts), order);
            let newer = state.newest_stamp().is_none_or(|s| s < Stamp(Timestamp(ts), order));
            let was = state.clone();
            let before = state.before_write(Timestamp(ts), order);
            prop_assert_eq!(&before, &was);
            prop_assert_eq!(state.is_empty(), newer || was.is_empty());
            state.apply_set_ref(value.as_ref(), Timestamp(ts), order);
            prop_assert_eq!(state, want);
        }
    }
}
