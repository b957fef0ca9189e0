//! Live profile key -> location of its newest record.
//!
//! Keys are handed out one by one from 1, so the table is a dense array indexed by key
//! (12 bytes per key ever used, an empty slot for each deleted or merged-away key). Only a
//! damaged log can name keys far beyond the ones in use: those go to a small map instead of
//! growing the array without bound.

use super::HashMap;
use crate::storage::Location;

/// How far beyond the array's end a key may land and still grow it.
const MAX_DENSE_GAP: u64 = 1 << 20;

/// Segment 0 is never used: a slot holding it is empty.
const EMPTY: Location = Location {
    segment: 0,
    offset: 0,
    len: 0,
};

/// `key`'s element of a dense array indexed by key, the array grown to it (new elements
/// `empty`); `None` for a key so far beyond the end (more than [`MAX_DENSE_GAP`]) that only a
/// damaged log names it: the caller keeps such a key in a map instead. The rule of every
/// table indexed by profile key (this one, and the writer cache's, `apply::cache`).
pub(crate) fn dense_slot<T: Clone>(dense: &mut Vec<T>, key: u64, empty: T) -> Option<&mut T> {
    let k = usize::try_from(key).ok()?;
    if k >= dense.len() {
        if key > dense.len() as u64 + MAX_DENSE_GAP {
            return None;
        }
        if k >= dense.capacity() {
            // Grow by a quarter (not double): slack stays small.
            let want = (k + 1).max(dense.len() + dense.len() / 4).max(1024);
            dense.reserve_exact(want - dense.len());
        }
        dense.resize(k + 1, empty);
    }
    dense.get_mut(k)
}

/// Load the entry of `key` in an array indexed by key, if it has one, into the CPU's cache
/// (a read whose value is dropped: `apply::ahead`).
pub(crate) fn touch_dense<T: Copy>(dense: &[T], key: u64) {
    std::hint::black_box(
        usize::try_from(key)
            .ok()
            .and_then(|k| dense.get(k))
            .copied(),
    );
}

/// The table.
#[derive(Debug, Clone, Default)]
pub(crate) struct Profiles {
    dense: Vec<Location>,
    sparse: HashMap<u64, Location>,
    live: usize,
}

impl Profiles {
    /// The location of a live profile.
    pub fn get(&self, key: u64) -> Option<Location> {
        if let Some(l) = usize::try_from(key).ok().and_then(|k| self.dense.get(k))
            && l.segment != 0
        {
            return Some(*l);
        }
        if self.sparse.is_empty() {
            return None;
        }
        self.sparse.get(&key).copied()
    }

    /// Load `key`'s entry into the CPU's cache (`apply::ahead`).
    pub fn touch(&self, key: u64) {
        touch_dense(&self.dense, key);
    }

    /// Number of live profiles.
    pub fn len(&self) -> usize {
        self.live
    }

    fn slot(&mut self, key: u64) -> Option<&mut Location> {
        dense_slot(&mut self.dense, key, EMPTY)
    }

    /// Set a live profile's location. A location in segment 0 (never written by storage)
    /// would read as empty: such a profile is kept in the map.
    pub fn insert(&mut self, key: u64, at: Location) {
        // A key within the array (nearly every one): its slot set in place, what `remove`
        // and then `slot` would do in one look (the live count the same).
        if at.segment != 0
            && let Some(slot) = usize::try_from(key)
                .ok()
                .and_then(|k| self.dense.get_mut(k))
        {
            if slot.segment == 0 {
                self.live += 1;
            }
            *slot = at;
            if !self.sparse.is_empty() && self.sparse.remove(&key).is_some() {
                self.live -= 1;
            }
            return;
        }
        self.remove(key);
        match self.slot(key).filter(|_| at.segment != 0) {
            Some(slot) => *slot = at,
            None => {
                self.sparse.insert(key, at);
            }
        }
        self.live += 1;
    }

    /// Forget a profile.
    pub fn remove(&mut self, key: u64) {
        if let Some(slot) = usize::try_from(key)
            .ok()
            .and_then(|k| self.dense.get_mut(k))
            && slot.segment != 0
        {
            *slot = EMPTY;
            self.live -= 1;
        }
        if !self.sparse.is_empty() && self.sparse.remove(&key).is_some() {
            self.live -= 1;
        }
    }

    /// Live profiles in no particular order (the dense part ascending).
    pub fn iter(&self) -> impl Iterator<Item = (u64, Location)> + '_ {
        self.dense
            .iter()
            .enumerate()
            .filter(|(_, l)| l.segment != 0)
            .map(|(k, l)| (k as u64, *l))
            .chain(self.sparse.iter().map(|(&k, &l)| (k, l)))
    }

    /// Replace a location only where it is still `old`.
    pub fn relocate(&mut self, key: u64, old: Location, new: Location) {
        if self.get(key) == Some(old) {
            self.insert(key, new);
        }
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> u64 {
        (self.dense.capacity() * std::mem::size_of::<Location>() + super::map_bytes(&self.sparse))
            as u64
    }

    /// The dense array, for the hint.
    pub fn dense(&self) -> &[Location] {
        &self.dense
    }

    /// The keys beyond the dense array, for the hint.
    pub fn sparse(&self) -> impl Iterator<Item = (u64, Location)> + '_ {
        self.sparse.iter().map(|(&k, &l)| (k, l))
    }

    /// A table from its hint parts.
    pub fn from_parts(dense: Vec<Location>, sparse: HashMap<u64, Location>) -> Profiles {
        let live = dense.iter().filter(|l| l.segment != 0).count() + sparse.len();
        Profiles {
            dense,
            sparse,
            live,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `insert` (in place within the array, else through `remove` and `slot`) and `remove`
    /// against a map: the same locations and live count, keys far beyond the array and
    /// locations in segment 0 (kept in the map) included.
    #[test]
    fn insert_matches_a_map() {
        let mut t = Profiles::default();
        let mut model = std::collections::HashMap::new();
        let keys = [0u64, 1, 2, 5, 3000, 1 << 40, u64::MAX];
        for i in 0..400u32 {
            let key = keys[(i as usize * 7 + i as usize / 3) % keys.len()];
            if i % 5 == 4 {
                t.remove(key);
                model.remove(&key);
            } else {
                let at = Location {
                    segment: i % 3,
                    offset: i,
                    len: 1,
                };
                t.insert(key, at);
                model.insert(key, at);
            }
            assert_eq!(t.len(), model.len(), "step {i}");
            for k in keys {
                assert_eq!(t.get(k), model.get(&k).copied(), "step {i}, key {k}");
            }
        }
    }
}
