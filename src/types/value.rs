//! Typed property values (SPEC 1): bool, integer, float, string, date-time, array, object.
//! A JSON string in RFC 3339 form is a date-time; it compares as time and is written back as
//! RFC 3339 (UTC, `Z`).

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A string stored inline when it is short: up to 24 bytes in place (no heap allocation), a
/// heap buffer beyond. The type of [`Value::Str`] and of the property names of a message
/// ([`crate::Identify::traits`] and the other operations). It dereferences to `&str`, compares
/// with `&str` and `String`, and converts from both with `.into()`
/// (the [`compact_str`](https://docs.rs/compact_str) crate's type, re-exported).
pub use compact_str::CompactString;

/// A point in time: microseconds since the Unix epoch, UTC.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    Serialize,
    Deserialize,
    bincode::Encode,
    bincode::Decode,
)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Now, from the system clock: microseconds since the Unix epoch (negative before it),
    /// as `chrono::Utc::now().timestamp_micros()` gives them, without building a calendar date
    /// (every call reads the clock once or twice).
    pub fn now() -> Timestamp {
        use std::time::{SystemTime, UNIX_EPOCH};
        let micros = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        Timestamp(match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(after) => micros(after),
            Err(before) => micros(before.duration()).saturating_neg(),
        })
    }

    /// Parse RFC 3339 / ISO 8601 date-time with a zone (`2026-11-22T10:00:00Z`,
    /// `2026-11-22T10:00:00.123+02:00`). `None` if it is not one.
    pub fn parse(text: &str) -> Option<Timestamp> {
        // Cheap shape test first: the hot path calls this on every string value.
        let b = text.as_bytes();
        if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't') {
            return None;
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|dt| Timestamp(dt.timestamp_micros()))
    }

    /// RFC 3339 in UTC with `Z`; fractional seconds only when present.
    pub fn to_rfc3339(self) -> String {
        match chrono::DateTime::from_timestamp_micros(self.0) {
            Some(dt) => dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            None => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

/// A typed property value. JSON `null` is not a value: it means "remove" (SPEC 2).
///
/// A string is a [`CompactString`]: the common short value (up to 24 bytes) is held inline, so
/// parsing, decoding and caching it costs no allocation (docs/architecture.md, "Strings").
/// Build one with `Value::Str("pro".into())`; read it with [`Value::as_str`] or `&*s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, bincode::Encode, bincode::Decode)]
pub enum Value {
    /// `true` / `false`.
    Bool(bool),
    /// A JSON number without fraction or exponent that fits an i64.
    Int(i64),
    /// Any other JSON number.
    Float(f64),
    /// A string that is not an RFC 3339 date-time (inline up to 24 bytes).
    Str(#[bincode(with_serde)] CompactString),
    /// A string in RFC 3339 date-time form.
    DateTime(Timestamp),
    /// A JSON array (`null` elements kept as `Null`).
    Array(Vec<Value>),
    /// A JSON object, in the order given.
    Object(Vec<(String, Value)>),
    /// A `null` nested inside an array or object (top-level null never becomes a value).
    Null,
}

impl Value {
    /// Convert from JSON. Top-level `null` gives `None` (meaning: remove).
    pub fn from_json(json: &serde_json::Value) -> Option<Value> {
        match json {
            serde_json::Value::Null => None,
            other => Some(Self::from_json_inner(other)),
        }
    }

    fn from_json_inner(json: &serde_json::Value) -> Value {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(*b),
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => match Timestamp::parse(s) {
                Some(ts) => Value::DateTime(ts),
                None => Value::Str(CompactString::from(s.as_str())),
            },
            serde_json::Value::Array(items) => {
                Value::Array(items.iter().map(Self::from_json_inner).collect())
            }
            serde_json::Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), Self::from_json_inner(v)))
                    .collect(),
            ),
        }
    }

    /// Convert to JSON (date-times as RFC 3339 strings).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => serde_json::Value::from(*i),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => serde_json::Value::String(s.to_string()),
            Value::DateTime(ts) => serde_json::Value::String(ts.to_rfc3339()),
            Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(Value::to_json).collect())
            }
            Value::Object(members) => serde_json::Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
            Value::Null => serde_json::Value::Null,
        }
    }

    /// The number, if this is one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The string, if this is a plain string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Order for filters: numbers with numbers, date-times with date-times, strings with
    /// strings; `None` across types.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::DateTime(a), Value::DateTime(b)) => Some(a.cmp(b)),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (a, b) => match (a.as_f64(), b.as_f64()) {
                (Some(x), Some(y)) => x.partial_cmp(&y),
                _ => None,
            },
        }
    }

    /// Size of the value's JSON form, in bytes (for the value-size limit). Cheap upper bound
    /// for scalars, exact enough for nested values.
    #[inline]
    pub fn json_len(&self) -> usize {
        match self {
            Value::Array(_) | Value::Object(_) => self.nested_json_len(),
            scalar => scalar.scalar_json_len(),
        }
    }

    /// [`Value::json_len`] of a scalar: its variant's fixed size, read from a table by the
    /// variant's index, plus a string's bytes (`text_or_empty`). Not a `match` of a
    /// size for each variant: that compiled to a jump table, whose target the processor
    /// mispredicts when the types of a call's traits come in no order (~8 of every 10 checks
    /// of a W1 call, at ~15-20 cycles each).
    #[inline(always)]
    fn scalar_json_len(&self) -> usize {
        // By variant index: bool, integer, float, string (its quotes), date-time, array and
        // object (not scalars: never read), null.
        const FIXED: [usize; 8] = [5, 24, 24, 2, 32, 0, 0, 4];
        FIXED[self.variant_index()] + self.text_or_empty().len()
    }

    /// A string's bytes, empty for any other variant, read without a branch on the variant:
    /// the string read is chosen first, the value's own or an empty one, and its bytes read
    /// after. Chosen by `select_unpredictable` (a plain `match` of the two became a branch
    /// again, as unpredictable as the jump table), from an empty string hidden by `black_box`
    /// first (seeing its length, the compiler branched around the read of the other; and
    /// hidden after the `match`, the choice became a branch again).
    #[inline(always)]
    fn text_or_empty(&self) -> &[u8] {
        static EMPTY: CompactString = CompactString::const_new("");
        let empty = std::hint::black_box(&EMPTY);
        let own = match self {
            Value::Str(s) => Some(s),
            _ => None,
        };
        std::hint::select_unpredictable(own.is_some(), own.unwrap_or(empty), empty).as_bytes()
    }

    /// The variant's index in declaration order (0 bool, ..., 7 null): the enum's tag, which
    /// the compiler reads as it stands.
    #[inline(always)]
    pub(crate) fn variant_index(&self) -> usize {
        match self {
            Value::Bool(_) => 0,
            Value::Int(_) => 1,
            Value::Float(_) => 2,
            Value::Str(_) => 3,
            Value::DateTime(_) => 4,
            Value::Array(_) => 5,
            Value::Object(_) => 6,
            Value::Null => 7,
        }
    }

    /// [`Value::json_len`] of an array or object (not inlined: it recurses).
    fn nested_json_len(&self) -> usize {
        match self {
            Value::Array(items) => 2 + items.iter().map(|v| v.json_len() + 1).sum::<usize>(),
            Value::Object(members) => {
                2 + members
                    .iter()
                    .map(|(k, v)| k.len() + 4 + v.json_len())
                    .sum::<usize>()
            }
            scalar => scalar.json_len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The `match` of a size for each variant that [`Value::json_len`] replaced.
    fn json_len_by_match(v: &Value) -> usize {
        match v {
            Value::Bool(_) => 5,
            Value::Int(_) | Value::Float(_) => 24,
            Value::Str(s) => s.len() + 2,
            Value::DateTime(_) => 32,
            Value::Null => 4,
            Value::Array(items) => {
                2 + items
                    .iter()
                    .map(|v| json_len_by_match(v) + 1)
                    .sum::<usize>()
            }
            Value::Object(members) => {
                2 + members
                    .iter()
                    .map(|(k, v)| k.len() + 4 + json_len_by_match(v))
                    .sum::<usize>()
            }
        }
    }

    /// Any value, nested a little; strings inline and on the heap.
    fn values() -> impl Strategy<Value = Value> {
        let scalar = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            "\\PC{0,40}".prop_map(|s| Value::Str(s.into())),
            any::<i64>().prop_map(|t| Value::DateTime(Timestamp(t))),
            Just(Value::Null),
        ];
        scalar.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{0,6}", inner), 0..4).prop_map(Value::Object),
            ]
        })
    }

    proptest! {
        /// The table of fixed sizes gives the sizes the `match` gave, and the variant index is
        /// the declaration order bincode writes.
        #[test]
        fn json_len_is_the_match_of_sizes(v in values()) {
            prop_assert_eq!(v.json_len(), json_len_by_match(&v));
            let bytes = bincode::encode_to_vec(&v, bincode::config::standard()).unwrap();
            prop_assert_eq!(usize::from(bytes[0]), v.variant_index());
        }
    }

    #[test]
    fn now_reads_the_clock_chrono_reads() {
        let before = chrono::Utc::now().timestamp_micros();
        let now = Timestamp::now().0;
        let after = chrono::Utc::now().timestamp_micros();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }

    /// What bincode's derive wrote for `Str(String)` before the inline strings (company
    /// records are still written by it): the variant index, then the string.
    fn as_string_variant(s: &str) -> Vec<u8> {
        bincode::encode_to_vec((3u32, s.to_string()), bincode::config::standard()).unwrap()
    }

    #[test]
    fn a_string_value_encodes_as_before_and_reads_back_inline() {
        for text in ["", "pro", &"é".repeat(12), &"y".repeat(300)] {
            let v = Value::Str(text.into());
            let bytes = bincode::encode_to_vec(&v, bincode::config::standard()).unwrap();
            assert_eq!(bytes, as_string_variant(text), "{text:?}");
            let (back, used): (Value, usize) =
                bincode::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
            assert_eq!((back.as_str(), used), (Some(text), bytes.len()));
            let Value::Str(s) = back else { unreachable!() };
            assert_eq!(s.is_heap_allocated(), text.len() > 24, "{text:?}");
        }
    }

    #[test]
    fn an_inline_string_keeps_a_value_and_a_state_at_their_sizes() {
        // As with `String`: 24 bytes of string, one tag; the writer cache holds ~40 states per
        // profile (`types::state::PropState`).
        assert_eq!(std::mem::size_of::<CompactString>(), 24);
        assert_eq!(std::mem::size_of::<Value>(), 32);
        assert_eq!(std::mem::size_of::<Option<Value>>(), 32);
        assert_eq!(std::mem::size_of::<crate::types::state::PropState>(), 64);
    }

    #[test]
    fn a_damaged_string_length_is_a_decode_error() {
        let mut bytes = as_string_variant("abc");
        bytes[1] = 9; // longer than what follows
        let config = bincode::config::standard().with_limit::<1024>();
        assert!(bincode::decode_from_slice::<Value, _>(&bytes, config).is_err());
        let mut huge = vec![3u8, 253];
        huge.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(bincode::decode_from_slice::<Value, _>(&huge, config).is_err());
    }
}
