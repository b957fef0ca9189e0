//! Property states kept as the records hold them: what a partial fold captures of a state a
//! call is about to overwrite, instead of building a `PropState` and its `Value`.
//!
//! A call that sets (or removes) a property with a stamp newer than everything the state
//! holds leaves a state that does not depend on the one before
//! (`PropState::before_write`). The state before is then needed only for the history step's
//! undo, and only as bytes. So a partial fold captures a state that is a plain set or removal
//! (`lww` alone, the form W1's states all have) as its stamp and its value's bytes, as
//! `Value::put` writes them: a delta's `FORM_SET` holds exactly those bytes, and a compact
//! full record holds the payload after a shape byte that names the variant. The write path
//! decodes a captured state only when the call needs it as a `PropState` (another
//! operation, or a write older than the state).

use std::ops::Range;

use super::values::{ValueBytes, value};
use super::wire::{Decoded, Reader, Wire, put_variant};
use crate::types::state::{PropState, Stamp};

/// The plain state a set at `stamp` leaves: `bytes` are its value as `Value::put` writes
/// them, bytes this process wrote or checked before (`None`: a removal).
pub(crate) fn plain_state(stamp: Stamp, bytes: Option<&[u8]>) -> Decoded<PropState> {
    let v = match bytes {
        Some(bytes) => {
            let mut r = Reader::checked_before(bytes);
            let v = value(&mut r)?;
            r.finish()?;
            Some(v)
        }
        None => None,
    };
    Ok(PropState {
        lww: Some((stamp, v)),
        once: None,
        adds: None,
    })
}

/// A plain set or removal, captured: its stamp, and the value's bytes in
/// [`RawStates::bytes`] (`None`: a removal).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RawState {
    pub stamp: Stamp,
    pub value: Option<Range<u32>>,
}

/// The states a partial fold captured (by name, sorted once the fold is done) and the bytes
/// of their values.
#[derive(Debug, Default)]
pub(crate) struct RawStates {
    pub states: Vec<(u32, RawState)>,
    pub bytes: Vec<u8>,
}

impl RawStates {
    /// Capture a set at `stamp` whose value is `variant` (as a value's first varint) and the
    /// payload bytes that follow it; `None`: `payload` is the whole value, variant included
    /// (a delta's `FORM_SET` holds it so).
    pub(crate) fn push_set(&mut self, id: u32, stamp: Stamp, variant: Option<u32>, payload: &[u8]) {
        let from = self.bytes.len();
        if let Some(v) = variant {
            put_variant(&mut self.bytes, v);
        }
        self.bytes.extend_from_slice(payload);
        self.push_captured(id, stamp, from);
    }

    /// Capture the set of `id` at `stamp` whose value is the bytes from `from` on.
    #[inline]
    fn push_captured(&mut self, id: u32, stamp: Stamp, from: usize) {
        let range = from as u32..self.bytes.len() as u32;
        self.states.push((
            id,
            RawState {
                stamp,
                value: Some(range),
            },
        ));
    }

    /// [`RawStates::push_set`] of a value whose variant is below 251 (one byte, as
    /// `put_variant` writes it), from `over`: its payload after one byte (a compact state's
    /// stamp index), which the variant is written over: one copy, not two appends (of a
    /// fixed-size piece when the record has the bytes after it: [`ValueBytes::extend`]).
    #[inline]
    pub(crate) fn push_set_over(
        &mut self,
        id: u32,
        stamp: Stamp,
        variant: u8,
        over: ValueBytes<'_>,
    ) {
        debug_assert!(variant < 251 && !over.bytes().is_empty());
        let at = self.bytes.len();
        over.extend(&mut self.bytes);
        if let Some(b) = self.bytes.get_mut(at) {
            *b = variant;
        }
        self.push_captured(id, stamp, at);
    }

    /// Capture a removal at `stamp`.
    pub(crate) fn push_unset(&mut self, id: u32, stamp: Stamp) {
        self.states.push((id, RawState { stamp, value: None }));
    }

    /// Sort the captured states by name (a fold captures them newest record first).
    pub(crate) fn sort(&mut self) {
        self.states.sort_unstable_by_key(|s| s.0);
    }

    /// The captured state of `id`, taken out of the list (the bytes stay).
    pub(crate) fn take(&mut self, id: u32) -> Option<RawState> {
        let i = self.states.binary_search_by_key(&id, |s| s.0).ok()?;
        Some(self.states.remove(i).1)
    }

    /// [`RawStates::take`] for each of `items` (their names, `id_of`, strictly increasing), in
    /// order, handing `each` the item and its captured state: one walk along the list, the
    /// states kept moved down over those taken. `take` bisected the list and removed from it
    /// (moving every state after) for each name: ~50 instructions a name on the fast path,
    /// whose names come sorted.
    pub(crate) fn take_ascending<T>(
        &mut self,
        items: impl IntoIterator<Item = T>,
        id_of: impl Fn(&T) -> u32,
        mut each: impl FnMut(T, Option<RawState>),
    ) {
        let states = &mut self.states;
        let (mut read, mut kept) = (0, 0);
        let mut last = None;
        for item in items {
            let id = id_of(&item);
            debug_assert!(
                last < Some(id),
                "take_ascending: names not strictly increasing"
            );
            last = Some(id);
            while let Some(st) = states.get(read)
                && st.0 < id
            {
                // Until a state is taken the two are one place: no swap of a state (40 bytes)
                // with itself.
                if kept != read {
                    states.swap(kept, read);
                }
                kept += 1;
                read += 1;
            }
            let taken = match states.get(read) {
                Some(st) if st.0 == id => {
                    read += 1;
                    Some(st.1.clone())
                }
                _ => None,
            };
            each(item, taken);
        }
        // The states after the last name taken: moved down as a block (nothing to move when
        // none was taken).
        if kept != read {
            states.drain(kept..read);
        }
    }

    /// A value's bytes.
    pub(crate) fn value_bytes(&self, raw: &RawState) -> Option<&[u8]> {
        let r = raw.value.as_ref()?;
        self.bytes.get(r.start as usize..r.end as usize)
    }

    /// The state a captured one stands for. The bytes were read from records this process
    /// checked, so only a bug makes this fail.
    pub(crate) fn decode(&self, raw: &RawState) -> Decoded<PropState> {
        plain_state(raw.stamp, self.value_bytes(raw))
    }

    /// Forget every state and byte (keeping the buffers).
    pub(crate) fn clear(&mut self) {
        self.states.clear();
        self.bytes.clear();
    }
}

/// Write a captured state as `values::put_state` writes the state it stands for (`index`:
/// its stamp's index in the table the caller writes): the `lww` tag, the stamp index, the
/// value as an option, and no `once` or `adds`.
pub(crate) fn put_raw_state(value: Option<&[u8]>, index: u32, out: &mut Vec<u8>) {
    out.push(1);
    index.put(out);
    match value {
        Some(bytes) => {
            out.push(1);
            out.extend_from_slice(bytes);
        }
        None => out.push(0),
    }
    out.extend_from_slice(&[0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::values::{StampIndex, StampTable, put_state};
    use crate::entries::wire::Wire;
    use crate::types::value::{Timestamp, Value};

    proptest::proptest! {
        /// Taking names in increasing order in one walk gives what `take` gives name by name,
        /// and leaves the same states.
        #[test]
        fn taking_in_order_is_taking_one_by_one(
            held in proptest::collection::btree_set(0u32..40, 0..20),
            asked in proptest::collection::btree_set(0u32..40, 0..20),
        ) {
            let states = |raw: &mut RawStates| {
                for &id in &held {
                    raw.push_unset(id, Stamp::new(Timestamp(i64::from(id)), 0));
                }
            };
            let (mut walked, mut plain) = (RawStates::default(), RawStates::default());
            states(&mut walked);
            states(&mut plain);
            let mut got = Vec::new();
            walked.take_ascending(asked.iter().copied(), |&id| id, |id, c| got.push((id, c)));
            let want: Vec<_> = asked.iter().map(|&id| (id, plain.take(id))).collect();
            proptest::prop_assert_eq!(got, want);
            proptest::prop_assert_eq!(walked.states, plain.states);
        }
    }

    proptest::proptest! {
        /// [`RawStates::push_set_over`] captures what `push_set` captures of the same variant
        /// and payload, whatever the byte it writes the variant over, the bytes before and the
        /// record's bytes after (which a fixed-size copy reads and must not keep).
        #[test]
        fn push_set_over_is_push_set(
            before in proptest::collection::vec(proptest::num::u8::ANY, 0..8),
            variant in 0u8..251,
            over in proptest::num::u8::ANY,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
        ) {
            let stamp = Stamp::new(Timestamp(3), 4);
            let (mut got, mut want) = (RawStates::default(), RawStates::default());
            got.bytes.extend_from_slice(&before);
            want.bytes.extend_from_slice(&before);
            // The record's bytes after the payload (none, or enough for a fixed-size copy).
            let mut bytes = vec![over];
            bytes.extend_from_slice(&payload);
            let len = bytes.len();
            bytes.extend_from_slice(&after);
            let state = ValueBytes::within(&bytes, 0..len).expect("within");
            got.push_set_over(9, stamp, variant, state);
            want.push_set(9, stamp, Some(u32::from(variant)), &payload);
            proptest::prop_assert_eq!(&got.bytes, &want.bytes);
            proptest::prop_assert_eq!(&got.states, &want.states);
        }
    }

    proptest::proptest! {
        /// A captured value's bytes are the variant's varint (when given) and the payload,
        /// whatever their lengths, after the bytes captured before.
        #[test]
        fn push_set_captures_variant_and_payload(
            before in proptest::collection::vec(proptest::num::u8::ANY, 0..8),
            variant in proptest::option::of(0u32..70_000),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
        ) {
            let mut raw = RawStates::default();
            raw.bytes.extend_from_slice(&before);
            let stamp = Stamp::new(Timestamp(3), 4);
            raw.push_set(9, stamp, variant, &payload);
            let mut want = before.clone();
            if let Some(v) = variant {
                put_variant(&mut want, v);
            }
            want.extend_from_slice(&payload);
            proptest::prop_assert_eq!(&raw.bytes, &want);
            let range = before.len() as u32..want.len() as u32;
            proptest::prop_assert_eq!(
                &raw.states,
                &vec![(9, RawState { stamp, value: Some(range) })]
            );
        }
    }

    /// A captured set or removal is written byte for byte as `put_state` writes the state it
    /// stands for, and decodes back to it.
    #[test]
    fn a_captured_state_writes_and_decodes_as_the_state() {
        let stamp = Stamp::new(Timestamp(1_700_000_000_000_000), 42);
        let values = [
            Some(Value::Int(-7)),
            Some(Value::Str("a string longer than twenty-four bytes".into())),
            Some(Value::Bool(true)),
            Some(Value::DateTime(Timestamp(5))),
            Some(Value::Array(vec![Value::Int(1), Value::Null])),
            None,
        ];
        for value in values {
            let mut raw = RawStates::default();
            match &value {
                Some(v) => {
                    let mut bytes = Vec::new();
                    v.put(&mut bytes);
                    // The variant is one byte for these values; the payload follows it.
                    raw.push_set(7, stamp, Some(u32::from(bytes[0])), &bytes[1..]);
                }
                None => raw.push_unset(7, stamp),
            }
            let (id, captured) = raw.states[0].clone();
            assert_eq!(id, 7);
            let state = PropState {
                lww: Some((stamp, value.clone())),
                once: None,
                adds: None,
            };
            assert_eq!(raw.decode(&captured).unwrap(), state);
            let table = StampTable::from_stamps(smallvec::SmallVec::from_slice(&[
                Stamp::new(Timestamp(0), 1),
                stamp,
            ]));
            let (mut want, mut got) = (Vec::new(), Vec::new());
            put_state(&state, &table, &mut want);
            put_raw_state(raw.value_bytes(&captured), table.index_of(&stamp), &mut got);
            assert_eq!(got, want, "{value:?}");
            assert_eq!(raw.take(7), Some(captured));
            assert_eq!(raw.take(7), None);
        }
    }
}
