//! Profile key -> the writer cache's slot holding it.
//!
//! Keys are handed out densely from 1, so this is a dense array indexed by key, as the
//! index's key -> location table is (`index::Profiles`), with the same rule for a key far
//! beyond the array's end (`index::dense_slot`): such a key, which only a damaged log names,
//! goes to a small map instead of growing the array without bound. A look-up is one load
//! where a hash map's is two (a control-byte group and a bucket, usually two cache lines both
//! cold for W1's ~200,000 profiles): the look-ups of `ProfileCache::take` were DRAM misses.
//!
//! The array costs 4 bytes a key up to the highest key the cache kept, whether its profile is
//! cached or not: a cost of the key space, like the index's 12 bytes a key, not counted in
//! the cache's budget (the map it replaces, ~20-36 bytes a cached profile, was not counted
//! either). For W1's ~200,000 profiles: ~0.8 MB.

use crate::index::{HashMap, dense_slot, touch_dense};

/// The slots of the cached (or reserved) profiles by key.
#[derive(Default)]
pub(super) struct SlotsByKey {
    /// Slot index + 1 by key; 0: none.
    dense: Vec<u32>,
    /// Keys beyond what the array may grow to, and slot indexes beyond a `u32`.
    sparse: HashMap<u64, usize>,
}

impl SlotsByKey {
    /// The slot of `key`.
    #[inline]
    pub fn get(&self, key: u64) -> Option<usize> {
        match usize::try_from(key).ok().and_then(|k| self.dense.get(k)) {
            Some(&n) if n != 0 => Some(n as usize - 1),
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get(&key).copied(),
        }
    }

    /// Load `key`'s entry into the CPU's cache.
    pub fn touch(&self, key: u64) {
        touch_dense(&self.dense, key);
    }

    /// Make `i` the slot of `key` (which has none).
    pub fn insert(&mut self, key: u64, i: usize) {
        debug_assert!(self.get(key).is_none(), "key {key} has a slot");
        let n = u32::try_from(i + 1).ok();
        match (n, dense_slot(&mut self.dense, key, 0)) {
            (Some(n), Some(slot)) => *slot = n,
            _ => {
                self.sparse.insert(key, i);
            }
        }
    }

    /// Forget the slot of `key`.
    pub fn remove(&mut self, key: u64) {
        if let Some(n) = usize::try_from(key)
            .ok()
            .and_then(|k| self.dense.get_mut(k))
            && *n != 0
        {
            *n = 0;
        } else if !self.sparse.is_empty() {
            self.sparse.remove(&key);
        }
    }

    /// Keys with a slot.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Each key and its slot, in no particular order.
    #[cfg(test)]
    pub fn iter(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.dense
            .iter()
            .enumerate()
            .filter(|(_, n)| **n != 0)
            .map(|(k, n)| (k as u64, *n as usize - 1))
            .chain(self.sparse.iter().map(|(&k, &i)| (k, i)))
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub fn heap_bytes(&self) -> usize {
        self.dense.capacity() * size_of::<u32>() + crate::index::map_bytes(&self.sparse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table against a map: what `insert` (of a key without a slot) and `remove` leave,
    /// keys far beyond the array (kept in the map) and slot indexes beyond a `u32` included.
    #[test]
    fn far_keys_and_large_slots_go_to_the_map() {
        let mut t = SlotsByKey::default();
        t.insert(1 << 40, 3);
        t.insert(u64::MAX, 4);
        t.insert(5, u32::MAX as usize);
        t.insert(6, 7);
        assert_eq!(t.sparse.len(), 3);
        assert!(t.heap_bytes() < 64 << 10, "{}", t.heap_bytes());
        assert_eq!(
            [1 << 40, u64::MAX, 5, 6, 7].map(|k| t.get(k)),
            [Some(3), Some(4), Some(u32::MAX as usize), Some(7), None]
        );
        assert_eq!(t.len(), 4);
        for k in [1 << 40, u64::MAX, 5, 6, 7] {
            t.remove(k);
        }
        assert_eq!(t.len(), 0);
    }

    proptest::proptest! {
        /// Any sequence of inserts (of keys without a slot) and removals, of keys in the
        /// array, beyond its end and far beyond what it may grow to, gives the map's slots.
        #[test]
        fn matches_a_map(
            ops in proptest::collection::vec(
                (
                    proptest::bool::ANY,
                    proptest::prop_oneof![
                        0u64..64,
                        1000u64..1100,
                        (1u64 << 21)..(1u64 << 21) + 64,
                        proptest::num::u64::ANY,
                    ],
                    0usize..1000,
                ),
                1..200,
            ),
        ) {
            let mut t = SlotsByKey::default();
            let mut model = std::collections::HashMap::new();
            for (put, key, i) in ops {
                if put && !model.contains_key(&key) {
                    t.insert(key, i);
                    model.insert(key, i);
                } else {
                    t.remove(key);
                    model.remove(&key);
                }
                proptest::prop_assert_eq!(t.len(), model.len());
                proptest::prop_assert_eq!(t.get(key), model.get(&key).copied());
            }
            for (&k, &i) in &model {
                proptest::prop_assert_eq!(t.get(k), Some(i));
            }
            let mut all: Vec<_> = t.iter().collect();
            all.sort_unstable();
            let mut want: Vec<_> = model.into_iter().collect();
            want.sort_unstable();
            proptest::prop_assert_eq!(all, want);
        }
    }
}
