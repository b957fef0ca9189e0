//! Whole-profile rules (SPEC 3.2.3, 3.3, 3.4): merging a merged-away profile into its survivor,
//! the effective `created_at`, and the order in which one call's operations apply. Pure
//! functions of the decoded profile; the write path and the view both use them.

use crate::profile::message::Identify;
use crate::profile::message::Number;
use crate::profile::props::ListOp;
use crate::types::record::ProfileRecord;
use crate::types::value::{Timestamp, Value};

/// One operation of a call, borrowed from the message (values are copied only where the
/// property state takes them).
#[derive(Debug, Clone, Copy)]
pub(crate) enum CallOp<'m> {
    /// A trait: last write wins.
    Set(&'m Value),
    /// `$set_once`.
    SetOnce(&'m Value),
    /// `$unset` or a trait set to `null`.
    Unset,
    /// `$add`.
    Add(Number),
    /// `$append`, `$union`, `$remove`.
    List(&'m ListOp),
}

/// Merge a merged-away profile into the survivor (SPEC 3.2.3, 3.3, 3.4). `created_at` is the
/// name number of the `created_at` property, if the store knows the name.
pub(crate) fn merge_into(
    survivor: &mut ProfileRecord,
    gone: ProfileRecord,
    created_at: Option<u32>,
) {
    // A merge keeps the earliest *effective* created_at (SPEC 3.4): the explicit trait where
    // it is a date-time, else the first call's timestamp.
    let earliest_created =
        effective_created_at(survivor, created_at).min(effective_created_at(&gone, created_at));
    let ids = &mut survivor.ids;
    if ids.user_id.is_none() {
        ids.user_id = gone.ids.user_id;
    }
    if ids.email.is_none() {
        ids.email = gone.ids.email;
    }
    for a in gone.ids.anonymous_ids {
        if !ids.anonymous_ids.contains(&a) {
            ids.anonymous_ids.push(a);
        }
    }
    if ids.company_id.is_none() {
        ids.company_id = gone.ids.company_id;
    }
    survivor.first_seen = survivor.first_seen.min(gone.first_seen);
    survivor.updated_at = survivor.updated_at.max(gone.updated_at);
    for (id, state) in gone.props {
        match survivor.props.binary_search_by_key(&id, |p| p.0) {
            Ok(i) => {
                let mine = &mut survivor.props[i].1;
                if Some(id) == created_at {
                    // A merge keeps the earliest created_at (SPEC 3.4).
                    if let (Some(Value::DateTime(a)), Some(Value::DateTime(b))) =
                        (mine.value(), state.value())
                    {
                        if b < a {
                            *mine = state;
                        }
                        continue;
                    }
                }
                mine.merge(&state);
            }
            Err(i) => survivor.props.insert(i, (id, state)),
        }
    }
    // Only one side had the trait, and the other side's default is earlier: the trait takes
    // that value, so that the property and the top-level created_at agree.
    if effective_created_at(survivor, created_at) != earliest_created
        && let Some(id) = created_at
        && let Ok(i) = survivor.props.binary_search_by_key(&id, |p| p.0)
    {
        survivor.props[i]
            .1
            .overwrite(Value::DateTime(earliest_created));
    }
}

/// A profile's created_at as shown (SPEC 3.4): the `created_at` property when it is a
/// date-time, else the timestamp of its first call.
pub(crate) fn effective_created_at(rec: &ProfileRecord, created_at: Option<u32>) -> Timestamp {
    created_at
        .and_then(|id| rec.props.binary_search_by_key(&id, |p| p.0).ok())
        .and_then(|i| match rec.props[i].1.value() {
            Some(Value::DateTime(ts)) => Some(ts),
            _ => None,
        })
        .unwrap_or(rec.first_seen)
}

/// One call's property operations in the order they apply (SPEC 3.3, 3.5). All operations of
/// a call share its stamp; they apply in PostHog's order: traits / `$set`, `$set_once`,
/// `$add`, and `$unset` last. So a name the call also `$unset`s gets only the removal
/// (whatever came before it in the call would be removed by it), and a `$set_once` counts as
/// older than an `$add` of the same call (`PropState` treats equal stamps so).
///
/// When every operation it yields is a set, they are the traits, in order, each with a value
/// ([`set_of_place`] uses it): an `$unset` yields a removal itself, and `$set_once`, `$add`
/// and list operations are not sets.
// Always inlined, as it was before the writer's first closure (`apply::Builder::identify`, the
// one marking the call's names) grew: the compiler had then made it a call of its own.
#[inline(always)]
pub(crate) fn call_ops<'m>(m: &'m Identify, f: impl FnMut(&'m str, CallOp<'m>)) {
    // A call without `$unset` (nearly every one) looks no name up in it: the walk is built
    // without the look-up, where a test of the list's length in it still made each name's
    // text (a `CompactString`'s inline-or-heap branch) twice a name.
    if m.unset.is_empty() {
        ops_in_order(m, |_| false, f);
    } else {
        ops_in_order(m, |name| m.unset.iter().any(|u| u == name), f);
    }
}

/// [`call_ops`]' walk, with `unset_too` telling the names the call also `$unset`s.
#[inline(always)]
fn ops_in_order<'m>(
    m: &'m Identify,
    unset_too: impl Fn(&str) -> bool,
    mut f: impl FnMut(&'m str, CallOp<'m>),
) {
    for (name, value) in &m.traits {
        if !unset_too(name) {
            f(
                name,
                match value {
                    Some(v) => CallOp::Set(v),
                    None => CallOp::Unset,
                },
            );
        }
    }
    for (name, value) in &m.set_once {
        if !unset_too(name) {
            f(name, CallOp::SetOnce(value));
        }
    }
    for (name, n) in &m.add {
        if !unset_too(name) {
            f(name, CallOp::Add(*n));
        }
    }
    for (name, list) in &m.lists {
        if !unset_too(name) {
            f(name, CallOp::List(list));
        }
    }
    for name in &m.unset {
        f(name, CallOp::Unset);
    }
}

/// The value of the `nth` operation [`call_ops`] yields, for a call whose every operation is a
/// set: the `nth` trait's (see [`call_ops`]). The writer's fast path takes a set's value by its
/// place without walking the operations again to list them.
pub(crate) fn set_of_place(m: &Identify, nth: usize) -> Option<&Value> {
    m.traits.get(nth).and_then(|(_, v)| v.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use compact_str::CompactString;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = CompactString> {
        proptest::sample::select(vec!["a", "b", "c"]).prop_map(CompactString::from)
    }

    proptest! {
        /// Whenever every operation `call_ops` yields is a set, the `nth` is the `nth`
        /// trait's, as `set_of_place` takes it.
        #[test]
        fn all_sets_are_the_traits_in_order(
            traits in proptest::collection::vec((name(), proptest::option::weighted(0.8, 0i64..5)), 0..6),
            set_once in proptest::collection::vec((name(), 0i64..5), 0..2),
            unset in proptest::collection::vec(name(), 0..2),
            add in proptest::collection::vec((name(), 0i64..5), 0..2),
            lists in proptest::collection::vec((name(), 0i64..5), 0..2),
        ) {
            let m = Identify {
                traits: traits.into_iter().map(|(n, v)| (n, v.map(Value::Int))).collect(),
                set_once: set_once.into_iter().map(|(n, v)| (n, Value::Int(v))).collect(),
                unset,
                add: add.into_iter().map(|(n, v)| (n, Number::Int(v))).collect(),
                lists: lists
                    .into_iter()
                    .map(|(n, v)| (n, ListOp::Append(Value::Int(v))))
                    .collect(),
                ..Identify::default()
            };
            let mut ops = Vec::new();
            call_ops(&m, |name, op| ops.push((name, op)));
            if ops.iter().all(|(_, op)| matches!(op, CallOp::Set(_))) {
                prop_assert_eq!(ops.len(), m.traits.len());
                for (nth, (name, op)) in ops.iter().enumerate() {
                    let CallOp::Set(v) = op else { unreachable!() };
                    prop_assert_eq!(*name, m.traits[nth].0.as_str());
                    prop_assert_eq!(Some(*v), set_of_place(&m, nth));
                }
            }
        }
    }
}
