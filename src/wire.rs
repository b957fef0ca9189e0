//! A fast writer of bincode 2's `standard()` encoding for the records written on every call.
//!
//! bincode's derived encoder sends every primitive through its `Writer` trait one slice at a
//! time; on a profile of 40 properties that was a quarter of an identify call. [`Wire::put`]
//! writes the same bytes straight into a `Vec`, so the on-disk format (docs/format.md) and the
//! decoder are unchanged. The tests below prove byte equality with bincode on random values.

/// A value that writes its bincode 2 `standard()` encoding (varint integers, little endian).
pub(crate) trait Wire {
    /// Append the encoding to `out`.
    fn put(&self, out: &mut Vec<u8>);
}

/// bincode's unsigned varint: < 251 in one byte, else a marker and the fixed-width value.
#[inline]
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else if v <= u16::MAX as u64 {
        out.push(251);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u32::MAX as u64 {
        out.push(252);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[inline]
fn put_u128(out: &mut Vec<u8>, v: u128) {
    match u64::try_from(v) {
        Ok(small) => put_u64(out, small),
        Err(_) => {
            out.push(254);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// bincode's signed varint: zigzag, then [`put_u64`].
#[inline]
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// Zigzag for i128, then the unsigned varint.
#[inline]
pub(crate) fn put_i128(out: &mut Vec<u8>, v: i128) {
    put_u128(out, ((v << 1) ^ (v >> 127)) as u128);
}

/// An enum variant index (bincode derive: a u32 varint).
#[inline]
pub(crate) fn put_variant(out: &mut Vec<u8>, index: u32) {
    put_u64(out, index as u64);
}

impl Wire for u32 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, *self as u64);
    }
}

impl Wire for u64 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, *self);
    }
}

impl Wire for i64 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_i64(out, *self);
    }
}

impl Wire for f64 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Wire for bool {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Wire for str {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }
}

impl Wire for String {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        self.as_str().put(out);
    }
}

impl<T: Wire> Wire for Option<T> {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, self.len() as u64);
        for v in self {
            v.put(out);
        }
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::Wire;
    use crate::entries::{Ids, ProfileRecord};
    use crate::profile::message::Number;
    use crate::profile::props::{PropOp, PropState};
    use crate::types::value::{Timestamp, Value};

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,300}".prop_map(Value::Str),
            any::<i64>().prop_map(|t| Value::DateTime(Timestamp(t))),
            Just(Value::Null),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((".{0,8}", inner), 0..4).prop_map(Value::Object),
            ]
        })
    }

    fn op() -> impl Strategy<Value = PropOp> {
        prop_oneof![
            value().prop_map(PropOp::Set),
            value().prop_map(PropOp::SetOnce),
            Just(PropOp::Unset),
            any::<i64>().prop_map(|n| PropOp::Add(Number::Int(n))),
            any::<f64>().prop_map(|n| PropOp::Add(Number::Float(n))),
        ]
    }

    fn state() -> impl Strategy<Value = PropState> {
        prop::collection::vec((op(), any::<i64>(), any::<u64>()), 0..6).prop_map(|ops| {
            let mut s = PropState::default();
            for (op, ts, order) in ops {
                let _ = s.apply(&op, Timestamp(ts), order);
            }
            s
        })
    }

    fn record() -> impl Strategy<Value = ProfileRecord> {
        (
            proptest::option::of(".{0,40}"),
            proptest::option::of(".{0,40}"),
            prop::collection::vec(".{0,40}", 0..4),
            proptest::option::of(".{0,10}"),
            any::<i64>(),
            any::<i64>(),
            prop::collection::vec((any::<u32>(), state()), 0..24),
        )
            .prop_map(
                |(user_id, email, anonymous_ids, company_id, first, updated, props)| {
                    ProfileRecord {
                        ids: Ids {
                            user_id,
                            email,
                            anonymous_ids,
                            company_id,
                        },
                        first_seen: Timestamp(first),
                        updated_at: Timestamp(updated),
                        props,
                    }
                },
            )
    }

    fn bincode_bytes<T: bincode::Encode>(v: &T) -> Vec<u8> {
        bincode::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    #[test]
    fn a_stamp_index_outside_the_table_is_a_decode_error() {
        let rec = ProfileRecord {
            props: vec![(3, {
                let mut s = PropState::default();
                let _ = s.apply(&PropOp::Set(Value::Int(1)), Timestamp(5), 1);
                s
            })],
            ..ProfileRecord::default()
        };
        let mut bytes = crate::entries::encode_profile(&rec, 16);
        // ids (4 bytes: None, None, [], None), first_seen, updated_at, table of 1 stamp (3
        // bytes), 1 prop, id 3, lww Some, stamp index 0 -> 7.
        let at = 4 + 1 + 1 + 3 + 1 + 1 + 1;
        assert_eq!(bytes[at - 1..], [1, 0, 1, 1, 2, 0, 0], "{bytes:?}");
        bytes[at] = 7;
        let err = crate::entries::decode::<ProfileRecord>(&bytes, "profile").unwrap_err();
        assert!(err.to_string().contains("stamp"), "{err}");
    }

    fn wire_bytes<T: Wire>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        v.put(&mut out);
        out
    }

    proptest! {
        #[test]
        fn profile_records_decode_to_what_was_written(rec in record()) {
            let bytes = crate::entries::encode_profile(&rec, 16);
            let back: ProfileRecord = crate::entries::decode(&bytes, "profile").unwrap();
            prop_assert_eq!(back, rec);
        }

        #[test]
        fn damaged_profile_records_are_errors_not_panics(rec in record(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let mut bytes = crate::entries::encode_profile(&rec, 16);
            let i = at.index(bytes.len());
            bytes[i] = byte;
            let _ = crate::entries::decode::<ProfileRecord>(&bytes, "profile");
            // A strict prefix of a record never decodes.
            let mut whole = crate::entries::encode_profile(&rec, 16);
            whole.truncate(i);
            prop_assert!(crate::entries::decode::<ProfileRecord>(&whole, "profile").is_err());
        }

        #[test]
        fn integers_encode_exactly_as_bincode(u in any::<u64>(), i in any::<i64>(), small in 0u64..70_000) {
            prop_assert_eq!(wire_bytes(&u), bincode_bytes(&u));
            prop_assert_eq!(wire_bytes(&i), bincode_bytes(&i));
            prop_assert_eq!(wire_bytes(&small), bincode_bytes(&small));
            prop_assert_eq!(wire_bytes(&(small as u32)), bincode_bytes(&(small as u32)));
        }
    }

    #[test]
    fn i128_boundaries_encode_exactly_as_bincode() {
        for v in [
            0i128,
            -1,
            1,
            i64::MAX as i128 + 1,
            i64::MIN as i128 - 1,
            i128::MAX,
            i128::MIN,
        ] {
            let mut out = Vec::new();
            super::put_i128(&mut out, v);
            assert_eq!(out, bincode_bytes(&v), "{v}");
        }
    }
}
