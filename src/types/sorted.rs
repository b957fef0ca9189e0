//! Searches in sorted lists that follow the order of their look-ups: the writer cache's hot
//! record finds a call's names (sorted) in its directory, and a compaction finds the places of
//! history rows (sorted by place) in its moves, each starting where the last search ended.

/// Where `key` is in `list` (sorted by `key_of`), or would go, as `binary_search_by_key` says,
/// given that every entry before `from` is below it. The search gallops from `from` (bounds 1,
/// 2, 4... past it) and bisects only the last step: a few comparisons near `from` instead of a
/// bisection of the whole rest, each touching memory far apart.
#[inline]
pub(crate) fn gallop_by_key<T, K: Ord>(
    list: &[T],
    from: usize,
    key: &K,
    key_of: impl Fn(&T) -> K,
) -> Result<usize, usize> {
    let rest = list.get(from..).unwrap_or_default();
    let mut bound = 1;
    while let Some(p) = rest.get(bound)
        && key_of(p) < *key
    {
        bound *= 2;
    }
    // Every entry up to `bound / 2` is below `key` (or `bound` is 1), and none from `bound` on.
    let lo = bound / 2;
    let part = rest
        .get(lo..(bound + 1).min(rest.len()))
        .unwrap_or_default();
    match part.binary_search_by_key(key, key_of) {
        Ok(i) => Ok(from + lo + i),
        Err(i) => Err(from + lo + i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The galloping search finds what a bisection of the whole list finds, from wherever
        /// it starts below the key.
        #[test]
        fn a_search_from_a_start_finds_what_bisection_finds(
            names in proptest::collection::btree_set(0u32..200, 0..80),
            id in 0u32..210,
            start in any::<proptest::sample::Index>(),
        ) {
            let list: Vec<(u32, ())> = names.into_iter().map(|n| (n, ())).collect();
            let want = list.binary_search_by_key(&id, |p| p.0);
            let below = list.partition_point(|p| p.0 < id);
            let from = start.index(below + 1);
            prop_assert_eq!(gallop_by_key(&list, from, &id, |p| p.0), want);
        }
    }
}
