//! SPEC 3.3: per-property values. Any arrival order of the same calls leaves the same value
//! (up to the two documented approximations of `profiledb::profile::props`), and merging two
//! states equals applying both histories to one.

use profiledb::profile::props::{Applied, PropOp, PropState};
use profiledb::{Number, Timestamp, Value};
use proptest::prelude::*;

#[path = "support/props.rs"]
mod props;

fn ts(t: i64) -> Timestamp {
    Timestamp(t * 1_000_000)
}

/// Apply `(time, op)` pairs in the given (arrival) order; arrival order is the `order` field.
fn apply_all(state: &mut PropState, ops: &[(i64, PropOp)]) {
    for (i, (t, op)) in ops.iter().enumerate() {
        state.apply(op, ts(*t), i as u64);
    }
}

fn state_of(ops: &[(i64, PropOp)]) -> PropState {
    let mut s = PropState::default();
    apply_all(&mut s, ops);
    s
}

fn value_of(ops: &[(i64, PropOp)]) -> Option<Value> {
    state_of(ops).value()
}

fn s(text: &str) -> Value {
    Value::Str(text.into())
}

/// The reference: the calls applied one by one in timestamp order, as SPEC 2 describes them.
fn in_order(ops: &[(i64, PropOp)]) -> Option<Value> {
    let mut sorted: Vec<&(i64, PropOp)> = ops.iter().collect();
    sorted.sort_by_key(|(t, _)| *t);
    let mut v: Option<Value> = None;
    for (_, op) in sorted {
        match op {
            PropOp::Set(x) => v = Some(x.clone()),
            PropOp::Unset => v = None,
            PropOp::SetOnce(x) => {
                if v.is_none() {
                    v = Some(x.clone());
                }
            }
            PropOp::Add(n) => {
                v = match (&v, n) {
                    (None, Number::Int(i)) => Some(Value::Int(*i)),
                    (None, Number::Float(f)) => Some(Value::Float(*f)),
                    (Some(Value::Int(a)), Number::Int(b)) => Some(Value::Int(a + b)),
                    (Some(Value::Int(a)), Number::Float(b)) => Some(Value::Float(*a as f64 + b)),
                    (Some(Value::Float(a)), Number::Int(b)) => Some(Value::Float(a + *b as f64)),
                    (Some(Value::Float(a)), Number::Float(b)) => Some(Value::Float(a + b)),
                    (other, _) => other.clone(),
                }
            }
            // List operations apply in arrival order, not timestamp order: their reference is
            // in tests/list_ops.rs.
            PropOp::List(_) => panic!("no list operations in the timestamp-order reference"),
        }
    }
    v
}

// ---- unit rules ----

#[test]
fn newest_set_wins_whatever_the_arrival_order() {
    let ops = [(2, PropOp::Set(s("pro"))), (1, PropOp::Set(s("free")))];
    assert_eq!(value_of(&ops), Some(s("pro")));
    let st = state_of(&ops);
    assert_eq!(st.last_ts(), Some(ts(2)));
}

#[test]
fn same_timestamp_ties_break_by_arrival_order() {
    let mut st = PropState::default();
    st.apply(&PropOp::Set(s("first")), ts(5), 1);
    st.apply(&PropOp::Set(s("second")), ts(5), 2);
    assert_eq!(st.value(), Some(s("second")));
    let mut st = PropState::default();
    st.apply(&PropOp::Set(s("second")), ts(5), 2);
    st.apply(&PropOp::Set(s("first")), ts(5), 1);
    assert_eq!(st.value(), Some(s("second")));
}

#[test]
fn set_once_keeps_the_oldest() {
    let ops = [
        (3, PropOp::SetOnce(s("summer"))),
        (1, PropOp::SetOnce(s("spring"))),
    ];
    assert_eq!(value_of(&ops), Some(s("spring")));
    assert_eq!(state_of(&ops).last_ts(), Some(ts(1)));
}

#[test]
fn set_beats_any_set_once() {
    let ops = [(1, PropOp::Set(s("set"))), (2, PropOp::SetOnce(s("once")))];
    assert_eq!(value_of(&ops), Some(s("set")));
    let ops = [(2, PropOp::SetOnce(s("once"))), (1, PropOp::Set(s("set")))];
    assert_eq!(value_of(&ops), Some(s("set")));
}

#[test]
fn unset_is_a_timestamped_removal() {
    let ops = [(2, PropOp::Unset), (1, PropOp::Set(s("pro")))];
    assert_eq!(value_of(&ops), None);
    assert_eq!(state_of(&ops).last_ts(), Some(ts(2)));
    let ops = [(1, PropOp::Unset), (2, PropOp::Set(s("pro")))];
    assert_eq!(value_of(&ops), Some(s("pro")));
}

#[test]
fn set_once_after_unset_sets_again() {
    let ops = [
        (1, PropOp::SetOnce(s("a"))),
        (2, PropOp::Unset),
        (3, PropOp::SetOnce(s("b"))),
    ];
    assert_eq!(value_of(&ops), Some(s("b")));
    // A set_once older than the removal is dropped, whenever it arrives.
    let ops = [(2, PropOp::Unset), (1, PropOp::SetOnce(s("a")))];
    assert_eq!(value_of(&ops), None);
}

#[test]
fn add_sums_on_the_current_value() {
    let ops = [
        (1, PropOp::Set(Value::Int(10))),
        (2, PropOp::Add(Number::Int(1))),
        (3, PropOp::Add(Number::Int(2))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Int(13)));
    assert_eq!(state_of(&ops).last_ts(), Some(ts(3)));
    // Absent counts as 0.
    assert_eq!(
        value_of(&[(1, PropOp::Add(Number::Int(4)))]),
        Some(Value::Int(4))
    );
    // Any float makes a float.
    let ops = [
        (1, PropOp::Add(Number::Int(1))),
        (2, PropOp::Add(Number::Float(0.5))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Float(1.5)));
}

#[test]
fn add_older_than_the_winning_set_is_discarded() {
    let ops = [
        (1, PropOp::Add(Number::Int(5))),
        (2, PropOp::Set(Value::Int(0))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Int(0)));
    let ops = [
        (2, PropOp::Set(Value::Int(0))),
        (1, PropOp::Add(Number::Int(5))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Int(0)));
    // A late, older Set keeps the newer adds on top of it.
    let ops = [
        (2, PropOp::Add(Number::Int(5))),
        (1, PropOp::Set(Value::Int(100))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Int(105)));
}

#[test]
fn add_on_a_non_number_is_refused() {
    let mut st = PropState::default();
    st.apply(&PropOp::Set(s("gold")), ts(1), 0);
    assert_eq!(
        st.apply(&PropOp::Add(Number::Int(1)), ts(2), 1),
        Applied::NotANumber
    );
    assert_eq!(st.value(), Some(s("gold")));
    assert_eq!(
        st.apply(&PropOp::Add(Number::Int(1)), ts(0), 2),
        Applied::Taken,
        "older than the Set: overridden, not refused"
    );
    // A newer numeric Set makes later adds count again.
    st.apply(&PropOp::Set(Value::Int(1)), ts(3), 3);
    assert_eq!(
        st.apply(&PropOp::Add(Number::Int(1)), ts(4), 4),
        Applied::Taken
    );
    assert_eq!(st.value(), Some(Value::Int(2)));
}

#[test]
fn set_once_after_an_add_finds_the_property_set() {
    let ops = [
        (1, PropOp::Add(Number::Int(1))),
        (2, PropOp::SetOnce(Value::Int(50))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Int(1)));
    let ops = [
        (2, PropOp::SetOnce(Value::Int(50))),
        (1, PropOp::Add(Number::Int(1))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Int(1)));
    let ops = [
        (1, PropOp::SetOnce(Value::Int(50))),
        (2, PropOp::Add(Number::Int(1))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Int(51)));
}

#[test]
fn integer_overflow_becomes_a_float() {
    let ops = [
        (1, PropOp::Set(Value::Int(i64::MAX))),
        (2, PropOp::Add(Number::Int(1))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Float(i64::MAX as f64 + 1.0)));
    // Integer increments are summed exactly: overflow in the middle does not matter.
    let ops = [
        (1, PropOp::Add(Number::Int(i64::MAX))),
        (2, PropOp::Add(Number::Int(1))),
        (3, PropOp::Add(Number::Int(-1))),
    ];
    assert_eq!(value_of(&ops), Some(Value::Int(i64::MAX)));
}

#[test]
fn approximation_late_set_between_adds_keeps_all_adds() {
    // In timestamp order: add@1 (discarded by set@2), set 10 @2, add@3 -> 11.
    // Arriving as add@1, add@3, set@2: the state cannot tell the adds apart and keeps both.
    let ops = [
        (1, PropOp::Add(Number::Int(1))),
        (3, PropOp::Add(Number::Int(1))),
        (2, PropOp::Set(Value::Int(10))),
    ];
    assert_eq!(in_order(&ops), Some(Value::Int(11)));
    assert_eq!(value_of(&ops), Some(Value::Int(12)));
}

#[test]
fn approximation_late_unset_drops_newer_set_once() {
    // In timestamp order: once a @1, unset @2, once b @3 -> b. Arriving with the unset last,
    // only the oldest set_once (a) was kept, and the unset clears it.
    let ops = [
        (1, PropOp::SetOnce(s("a"))),
        (3, PropOp::SetOnce(s("b"))),
        (2, PropOp::Unset),
    ];
    assert_eq!(in_order(&ops), Some(s("b")));
    assert_eq!(value_of(&ops), None);
}

#[test]
fn state_round_trips_through_bincode_compactly() {
    let st = state_of(&[
        (1, PropOp::Set(Value::Int(10))),
        (2, PropOp::Add(Number::Int(3))),
        (3, PropOp::SetOnce(s("x"))),
    ]);
    let bytes = bincode::serde::encode_to_vec(&st, bincode::config::standard()).expect("encode");
    let (back, _): (PropState, usize) =
        bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).expect("decode");
    assert_eq!(back, st);
    assert_eq!(back.value(), Some(Value::Int(13)));
    let plain = state_of(&[(1, PropOp::Set(s("pro")))]);
    let bytes = bincode::serde::encode_to_vec(&plain, bincode::config::standard()).expect("encode");
    assert!(bytes.len() <= 24, "a plain set costs {} bytes", bytes.len());
}

#[test]
fn empty_state_has_no_value() {
    let st = PropState::default();
    assert!(st.is_empty());
    assert_eq!(st.value(), None);
    assert_eq!(st.last_ts(), None);
}

// ---- order independence and merge ----

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-20i64..20).prop_map(Value::Int),
        (-20i32..20).prop_map(|h| Value::Float(f64::from(h) / 2.0)),
        prop::sample::select(vec!["a", "b", "c"]).prop_map(|t| Value::Str(t.into())),
    ]
}

fn number_strategy() -> impl Strategy<Value = Number> {
    prop_oneof![
        3 => (-5i64..6).prop_map(Number::Int),
        1 => (-6i32..6).prop_map(|h| Number::Float(f64::from(h) / 2.0)),
    ]
}

/// Set / Unset operations.
fn lww_op() -> impl Strategy<Value = PropOp> {
    prop_oneof![
        3 => value_strategy().prop_map(PropOp::Set),
        1 => Just(PropOp::Unset),
    ]
}

/// A history with distinct timestamps in which no Set/Unset lies between two $adds or
/// between two $set_onces (the class where the bounded state is exact): Set/Unsets in a time
/// line, the adds in one gap of it and the set_onces in one gap (possibly the same one).
fn exact_history() -> impl Strategy<Value = Vec<(i64, PropOp)>> {
    (
        prop::collection::vec(lww_op(), 0..6),
        prop::collection::vec(number_strategy(), 0..6),
        prop::collection::vec(value_strategy(), 0..5),
        0usize..7,
        0usize..7,
        prop::collection::vec(any::<u8>(), 11),
    )
        .prop_map(|(lww, adds, onces, add_gap, once_gap, jitter)| {
            // Sort keys: lww op i at (2i, 0); the gap g sits at (2g - 1, jitter).
            let mut keyed: Vec<((i64, u8), PropOp)> = Vec::new();
            let gap = |g: usize| 2 * (g.min(lww.len()) as i64) - 1;
            for (i, op) in lww.iter().enumerate() {
                keyed.push(((2 * i as i64, 0), op.clone()));
            }
            for (i, n) in adds.iter().enumerate() {
                keyed.push(((gap(add_gap), jitter[i]), PropOp::Add(*n)));
            }
            for (i, v) in onces.iter().enumerate() {
                keyed.push(((gap(once_gap), jitter[6 + i]), PropOp::SetOnce(v.clone())));
            }
            keyed.sort_by_key(|(k, _)| *k);
            keyed
                .into_iter()
                .enumerate()
                .map(|(t, (_, op))| (t as i64, op))
                .collect()
        })
}

/// A history of `(time, op)` pairs.
type History = Vec<(i64, PropOp)>;

/// A history in time order and the same operations in a random arrival order.
fn shuffled(history: impl Strategy<Value = History>) -> impl Strategy<Value = (History, History)> {
    history.prop_flat_map(|h| (Just(h.clone()), Just(h).prop_shuffle()))
}

proptest! {
    #![proptest_config(props::config(2000, "tests/unit_props.proptest-regressions"))]

    /// Any arrival order gives the value of timestamp order.
    #[test]
    fn any_arrival_order_gives_the_in_order_value((history, arrival) in shuffled(exact_history())) {
        let expected = in_order(&history);
        prop_assert_eq!(value_of(&arrival), expected.clone());
        prop_assert_eq!(value_of(&history), expected);
    }

    /// Any mix of set / set_once / unset / add, any arrival order, with at most one
    /// set_once and one add: exact too.
    #[test]
    fn permutations_of_mixed_ops_give_the_same_value(
        (history, arrival) in shuffled(
            (prop::collection::vec(lww_op(), 0..8),
             prop::option::of(value_strategy()),
             prop::option::of(number_strategy()),
             prop::collection::vec(any::<u16>(), 10))
                .prop_map(|(lww, once, add, keys)| {
                    let mut ops: Vec<PropOp> = lww;
                    ops.extend(once.map(PropOp::SetOnce));
                    ops.extend(add.map(PropOp::Add));
                    let mut keyed: Vec<(u16, usize, PropOp)> =
                        ops.into_iter().enumerate().map(|(i, op)| (keys[i], i, op)).collect();
                    keyed.sort_by_key(|(k, i, _)| (*k, *i));
                    keyed.into_iter().enumerate().map(|(t, (_, _, op))| (t as i64, op)).collect()
                })
        )
    ) {
        prop_assert_eq!(value_of(&arrival), in_order(&history));
    }

    /// merge(a, b) and merge(b, a) give the value of applying both histories to one state.
    #[test]
    fn merge_is_commutative_and_equals_one_history(
        (history, arrival) in shuffled(exact_history()),
        split in prop::collection::vec(any::<bool>(), 24),
    ) {
        let (mut left, mut right) = (Vec::new(), Vec::new());
        for (i, op) in arrival.iter().enumerate() {
            if split[i] { left.push(op.clone()) } else { right.push(op.clone()) }
        }
        let (a, b) = (state_of(&left), state_of(&right));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        let expected = in_order(&history);
        prop_assert_eq!(ab.value(), expected.clone());
        prop_assert_eq!(ba.value(), expected);
        prop_assert_eq!(ab.value(), state_of(&arrival).value());
        // Merging with an empty state changes nothing.
        let mut alone = a.clone();
        alone.merge(&PropState::default());
        prop_assert_eq!(alone.value(), a.value());
    }
}

/// An `$add` whose float result would not be finite (overflow to infinity) is refused as
/// [`Applied::Overflow`] and leaves the value as it was, instead of storing infinity.
#[test]
fn add_overflowing_to_infinity_is_refused() {
    let mut st = PropState::default();
    assert_eq!(
        st.apply(&PropOp::Add(Number::Float(1e308)), ts(1), 0),
        Applied::Taken
    );
    assert_eq!(
        st.apply(&PropOp::Add(Number::Float(1e308)), ts(2), 1),
        Applied::Overflow
    );
    assert_eq!(st.value(), Some(Value::Float(1e308)));
    // Adds that stay finite still count.
    assert_eq!(
        st.apply(&PropOp::Add(Number::Float(-1e308)), ts(3), 2),
        Applied::Taken
    );
    assert_eq!(st.value(), Some(Value::Float(0.0)));
    // On a float base, too.
    let mut st = PropState::default();
    st.apply(&PropOp::Set(Value::Float(f64::MAX)), ts(1), 0);
    assert_eq!(
        st.apply(&PropOp::Add(Number::Float(f64::MAX)), ts(2), 1),
        Applied::Overflow
    );
    assert_eq!(st.value(), Some(Value::Float(f64::MAX)));
}
