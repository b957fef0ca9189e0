//! Property name -> its number, for the writer's look-ups (~10 a call).
//!
//! Names of 1 to [`SHORT`] bytes (nearly all: `plan`, `utm_campaign`, `last_login_at`) are
//! keyed by their [`Key`] (their bytes read as words at places that follow from the length,
//! and the length), in a table of their own ([`Short`]): a look-up hashes and compares two
//! words, with no hash of a byte string and no `memcmp` call (by a boxed-string key in a std
//! map it cost ~100 instructions under callgrind, now ~45). Longer names, and the empty one,
//! keep a std map of boxed strings. Both hashes are seeded per index (foldhash's random
//! seed): names come from clients. The registry is append-only, so a name's number never
//! changes once inserted.

use super::HashMap;

/// The longest name a [`Key`] holds.
const SHORT: usize = 15;

/// A name of 1 to [`SHORT`] bytes, as the table compares it: its bytes read as little-endian
/// words at places that depend on its length only, and the length in the top byte. `lo`: the
/// 4 bytes at 0 and at `min(n - 4, 4)`; `hi`: the 4 bytes at `min(n - 4, 8)`, then the last
/// 3 bytes, then the length. The words may overlap, and together they cover every byte, so
/// two names have equal keys only if they are equal. `hi` is never 0 (the length is not),
/// which marks [`Short`]'s empty buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Key {
    lo: u64,
    hi: u64,
}

impl Key {
    /// `name`'s key; `None` for the empty name and names longer than [`SHORT`].
    ///
    /// Names of 4 or more bytes (all but a few) are read by the same four loads whatever
    /// their length, with no branch on it: a packing of the bytes themselves (the first 8,
    /// then the rest) branched on the length twice, and names of up to 8 bytes and longer
    /// ones come in no order: ~5.5 mispredictions a W1 call.
    #[inline(always)]
    pub(crate) fn of(name: &str) -> Option<Key> {
        let b = name.as_bytes();
        let n = b.len();
        if n == 0 || n > SHORT {
            return None;
        }
        let (lo, hi) = if n >= 4 {
            words(b)
        } else {
            // 1 to 3 bytes (rare: this branch is predicted): the first, the middle and the
            // last (the same byte more than once when shorter).
            let w = u64::from(b[0]) | (u64::from(b[n / 2]) << 8) | (u64::from(b[n - 1]) << 16);
            (w, 0)
        };
        Some(Key {
            lo,
            hi: hi | ((n as u64) << 56),
        })
    }

    /// Whether the key is `(lo, hi)`, with one branch for the two compares.
    #[inline(always)]
    fn is(self, lo: u64, hi: u64) -> bool {
        ((self.lo ^ lo) | (self.hi ^ hi)) == 0
    }
}

/// [`Key`]'s words of a name `b` of 4 to 15 bytes, the length not yet in: the 4 bytes at 0,
/// at `min(n - 4, 4)` and at `min(n - 4, 8)` (each at most 4 bytes after the one before, so
/// they cover the first `min(n, 12)` bytes), and the last 3 bytes (the rest, up to 15).
#[inline(always)]
fn words(b: &[u8]) -> (u64, u64) {
    let last = b.len() - 4;
    // A copy of 4 bytes, which compiles to one load (the bytes' own array, to a load each).
    let word = |at: usize| {
        let mut w = [0; 4];
        w.copy_from_slice(&b[at..at + 4]);
        u64::from(u32::from_le_bytes(w))
    };
    let lo = word(0) | (word(last.min(4)) << 32);
    let hi = word(last.min(8)) | ((word(last) >> 8) << 32);
    (lo, hi)
}

/// A [`Short`] bucket: a key's words (`hi` 0: empty) and the name's number (24 bytes).
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    lo: u64,
    hi: u64,
    id: u32,
}

/// An open-addressing table of keys (linear probing, at most half full; no removal: the
/// registry only grows). A probe is a multiply, then a compare of the key a bucket, where
/// hashbrown's generic probe (control bytes, tag match, bit mask) cost ~45 instructions.
#[derive(Debug, Clone)]
struct Short {
    buckets: Vec<Bucket>,
    len: usize,
    /// Per table (foldhash's random seed): the hash of a name depends on it.
    seed: [u64; 2],
    /// Tests: every name's probe starts at the last bucket (one cluster of all the names,
    /// wrapping around the table's end: what a flood of colliding names would build).
    #[cfg(test)]
    collide: bool,
}

impl Default for Short {
    fn default() -> Short {
        use std::hash::BuildHasher;
        let s = foldhash::fast::RandomState::default();
        Short {
            buckets: Vec::new(),
            len: 0,
            seed: [s.hash_one(1u64), s.hash_one(2u64)],
            #[cfg(test)]
            collide: false,
        }
    }
}

impl Short {
    /// The bucket `key`'s probe starts at, in a table of `mask + 1` buckets: foldhash's folded
    /// multiply of the two words, each mixed with a seed.
    #[inline(always)]
    fn start(&self, key: Key, mask: usize) -> usize {
        #[cfg(test)]
        if self.collide {
            return mask;
        }
        let p = u128::from(key.lo ^ self.seed[0]) * u128::from(key.hi ^ self.seed[1]);
        ((p as u64) ^ ((p >> 64) as u64)) as usize & mask
    }

    #[inline(always)]
    fn get(&self, key: Key) -> Option<u32> {
        let mask = self.buckets.len().checked_sub(1)?;
        let mut i = self.start(key, mask);
        loop {
            let b = self.buckets[i];
            if key.is(b.lo, b.hi) {
                return Some(b.id);
            }
            if b.hi == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, key: Key, id: u32) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow(self.len + 1);
        }
        let mask = self.buckets.len() - 1;
        let mut i = self.start(key, mask);
        loop {
            let b = &mut self.buckets[i];
            if key.is(b.lo, b.hi) {
                b.id = id;
                return;
            }
            if b.hi == 0 {
                *b = Bucket {
                    lo: key.lo,
                    hi: key.hi,
                    id,
                };
                self.len += 1;
                return;
            }
            i = (i + 1) & mask;
        }
    }

    /// Room for `n` names (a power of two of buckets, at least twice `n`).
    fn grow(&mut self, n: usize) {
        let size = (n * 2).next_power_of_two().max(16);
        if size <= self.buckets.len() {
            return;
        }
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::default(); size]);
        self.len = 0;
        for b in old {
            if b.hi != 0 {
                let key = Key { lo: b.lo, hi: b.hi };
                self.insert(key, b.id);
            }
        }
    }
}

/// The numbers of the registered names.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameIds {
    /// Names of 1 to [`SHORT`] bytes, by [`Key`].
    short: Short,
    /// The others.
    long: HashMap<Box<str>, u32>,
}

impl NameIds {
    /// Room for `n` names.
    pub(crate) fn with_capacity(n: usize) -> NameIds {
        let mut ids = NameIds::default();
        ids.short.grow(n);
        ids
    }

    /// `name`'s number. One call with the key and the probe inlined in it: inlined in
    /// turn into the writer's loop over a call's names, it made that loop's closure a call of
    /// its own, which cost as much as it saved.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        match Key::of(name) {
            Some(k) => self.short.get(k),
            None => self.get_long(name),
        }
    }

    /// A name with no [`Key`]. A call of its own: inlined, the string map's hashing
    /// made every look-up save and restore six registers.
    #[inline(never)]
    fn get_long(&self, name: &str) -> Option<u32> {
        self.long.get(name).copied()
    }

    /// Gives `name` the number `id` (replacing any it had).
    pub(crate) fn insert(&mut self, name: &str, id: u32) {
        match Key::of(name) {
            Some(k) => self.short.insert(k, id),
            None => {
                self.long.insert(name.into(), id);
            }
        }
    }

    /// Heap bytes: the two tables and the long names' boxes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.short.buckets.capacity() * std::mem::size_of::<Bucket>()
            + super::map_bytes(&self.long)
            + self.long.keys().map(|k| k.len() + 16).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// A name from a small alphabet (so that near names share prefixes and suffixes), with the
    /// bytes a key could confuse: NUL, and multi-byte UTF-8.
    fn name() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec(
            proptest::sample::select(vec!['a', 'b', '\0', '_', 'é', '\u{10348}']),
            0..20,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    /// Each byte of every short length counts in the key: a name and each of its one-byte
    /// changes have different keys (the four words cover all its bytes), and so do names of
    /// one byte repeated, length by length.
    #[test]
    fn every_byte_of_every_short_length_counts() {
        let all = b"abcdefghijklmnop";
        let key = |b: &[u8]| Key::of(std::str::from_utf8(b).unwrap());
        for n in 1..=SHORT {
            let k = key(&all[..n]).unwrap();
            for i in 0..n {
                let mut other = all[..n].to_vec();
                other[i] = b'_';
                assert_ne!(key(&other), Some(k), "{n} bytes, byte {i}");
            }
            assert_ne!(key(&vec![b'a'; n]), key(&vec![b'a'; n + 1]), "{n} bytes");
        }
        assert_ne!(Key::of("a"), Key::of("a\0"));
        assert_eq!(Key::of(&"x".repeat(16)), None);
        assert_eq!(Key::of(""), None);
    }

    /// `names` inserted into `ids` (the n-th numbered n) and into a map of strings: both
    /// answer alike for each of them and each of `asked`.
    fn answers_as_plain(
        mut ids: NameIds,
        names: &[String],
        asked: &[String],
    ) -> Result<(), proptest::test_runner::TestCaseError> {
        let mut plain = std::collections::HashMap::new();
        for (i, n) in names.iter().enumerate() {
            ids.insert(n, i as u32);
            plain.insert(n.clone(), i as u32);
        }
        for n in names.iter().chain(asked) {
            proptest::prop_assert_eq!(ids.get(n), plain.get(n).copied(), "{:?}", n);
        }
        Ok(())
    }

    proptest::proptest! {
        /// Two names have equal keys only when equal: for any two names, and for a name and
        /// the same with one character changed (names of the same length, apart by a byte or
        /// a few).
        #[test]
        fn keys_are_equal_only_for_equal_names(
            a in name(),
            b in name(),
            at in 0usize..20,
            c in proptest::sample::select(vec!['a', 'b', '\0', '_', 'é']),
        ) {
            let mut near: Vec<char> = a.chars().collect();
            if !near.is_empty() {
                let i = at % near.len();
                near[i] = c;
            }
            let near: String = near.into_iter().collect();
            for other in [&b, &near] {
                if let (Some(x), Some(y)) = (Key::of(&a), Key::of(other)) {
                    proptest::prop_assert_eq!(x == y, &a == other, "{:?} {:?}", a, other);
                }
            }
        }

        /// So it does when every name collides: one cluster, wrapping around the table's end,
        /// across growths.
        #[test]
        fn answers_as_a_map_of_strings_when_every_name_collides(
            names in proptest::collection::vec(name(), 0..60),
            asked in proptest::collection::vec(name(), 0..60),
        ) {
            let mut ids = NameIds::default();
            ids.short.collide = true;
            answers_as_plain(ids, &names, &asked)?;
        }

        /// The map answers as the map of strings it replaces.
        #[test]
        fn answers_as_a_map_of_strings(
            names in proptest::collection::vec(name(), 0..60),
            asked in proptest::collection::vec(name(), 0..60),
        ) {
            answers_as_plain(NameIds::with_capacity(4), &names, &asked)?;
        }
    }
}
