//! Property name -> its number, for the writer's look-ups (~10 a call).
//!
//! Names of 1 to [`SHORT`] bytes (nearly all: `plan`, `utm_campaign`, `last_login_at`) are
//! keyed by a `u128` that packs their bytes and length ([`pack`]), in a table of their own
//! ([`Short`]): a look-up hashes and compares two words, with no hash of a byte string and no
//! `memcmp` call (by a boxed-string key in a std map it cost ~100 instructions under
//! callgrind, now ~44). Longer names, and the empty one, keep a std map of boxed strings.
//! Both hashes are seeded per index (foldhash's random seed): names come from clients. The registry
//! is append-only, so a name's number never changes once inserted.

use super::HashMap;

/// The longest name [`pack`] packs: its bytes fill the low 15 bytes, its length the top one.
const SHORT: usize = 15;

/// `name`'s bytes as a little-endian number (byte `i` at bits `8 i..`) in the low 15 bytes and
/// its length in the top byte, for names of 1 to [`SHORT`] bytes; `None` for others. Two
/// names pack equal only if they are equal (the length tells `"a"` from `"a\0"`), and never
/// to 0 (the length is not 0), which marks [`Short`]'s empty buckets. Read with overlapping
/// loads of whole words, not a byte loop or a `memcpy` call.
#[inline(always)]
pub(crate) fn pack(name: &str) -> Option<u128> {
    let b = name.as_bytes();
    let n = b.len();
    if n == 0 || n > SHORT {
        return None;
    }
    let (lo, hi) = if n <= 8 {
        (le_upto8(b), 0)
    } else {
        let (head, tail) = b.split_at(8);
        (le_upto8(head), le_upto8(tail))
    };
    Some(u128::from(lo) | (u128::from(hi) << 64) | ((n as u128) << 120))
}

/// `b` (at most 8 bytes) as a little-endian number; bytes past its end are zero. Two loads
/// that may overlap: the bytes they share are the same, so or-ing them is exact.
#[inline(always)]
fn le_upto8(b: &[u8]) -> u64 {
    let n = b.len();
    if n >= 4 {
        let first = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let last = u32::from_le_bytes([b[n - 4], b[n - 3], b[n - 2], b[n - 1]]);
        u64::from(first) | (u64::from(last) << ((n - 4) * 8))
    } else if n > 0 {
        // 1 to 3 bytes: the first, the middle and the last (the same byte more than once
        // when shorter).
        u64::from(b[0])
            | (u64::from(b[n / 2]) << (n / 2 * 8))
            | (u64::from(b[n - 1]) << ((n - 1) * 8))
    } else {
        0
    }
}

/// An open-addressing table of packed names (linear probing, at most half full; no removal:
/// the registry only grows). A probe is a multiply, then a compare of two words a bucket,
/// where hashbrown's generic probe (control bytes, tag match, bit mask) cost ~45
/// instructions.
#[derive(Debug, Clone)]
struct Short {
    /// Per bucket: the packed name's low and high halves (0 and 0: empty) and its number (24
    /// bytes, where a `u128`'s alignment would make it 32).
    buckets: Vec<(u64, u64, u32)>,
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
    /// multiply of the two halves, each mixed with a seed.
    #[inline(always)]
    fn start(&self, (lo, hi): (u64, u64), mask: usize) -> usize {
        #[cfg(test)]
        if self.collide {
            return mask;
        }
        let p = u128::from(lo ^ self.seed[0]) * u128::from(hi ^ self.seed[1]);
        ((p as u64) ^ ((p >> 64) as u64)) as usize & mask
    }

    #[inline(always)]
    fn get(&self, key: u128) -> Option<u32> {
        let key = halves(key);
        let mask = self.buckets.len().checked_sub(1)?;
        let mut i = self.start(key, mask);
        loop {
            let (lo, hi, id) = self.buckets[i];
            if (lo, hi) == key {
                return Some(id);
            }
            if (lo, hi) == (0, 0) {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    fn insert(&mut self, key: u128, id: u32) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow(self.len + 1);
        }
        let (lo, hi) = halves(key);
        let mask = self.buckets.len() - 1;
        let mut i = self.start((lo, hi), mask);
        loop {
            let bucket = &mut self.buckets[i];
            if (bucket.0, bucket.1) == (lo, hi) {
                bucket.2 = id;
                return;
            }
            if (bucket.0, bucket.1) == (0, 0) {
                *bucket = (lo, hi, id);
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
        let old = std::mem::replace(&mut self.buckets, vec![(0, 0, 0); size]);
        self.len = 0;
        for (lo, hi, id) in old {
            if (lo, hi) != (0, 0) {
                self.insert(u128::from(lo) | (u128::from(hi) << 64), id);
            }
        }
    }
}

/// A packed name's low and high halves.
#[inline]
fn halves(key: u128) -> (u64, u64) {
    (key as u64, (key >> 64) as u64)
}

/// The numbers of the registered names.
#[derive(Debug, Clone, Default)]
pub(crate) struct NameIds {
    /// Names of 1 to [`SHORT`] bytes, by [`pack`].
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

    /// `name`'s number. One call with the packing and the probe inlined in it: inlined in
    /// turn into the writer's loop over a call's names, it made that loop's closure a call of
    /// its own, which cost as much as it saved.
    pub(crate) fn get(&self, name: &str) -> Option<u32> {
        match pack(name) {
            Some(k) => self.short.get(k),
            None => self.get_long(name),
        }
    }

    /// A name [`pack`] does not pack. A call of its own: inlined, the string map's hashing
    /// made every look-up save and restore six registers.
    #[inline(never)]
    fn get_long(&self, name: &str) -> Option<u32> {
        self.long.get(name).copied()
    }

    /// Gives `name` the number `id` (replacing any it had).
    pub(crate) fn insert(&mut self, name: &str, id: u32) {
        match pack(name) {
            Some(k) => self.short.insert(k, id),
            None => {
                self.long.insert(name.into(), id);
            }
        }
    }

    /// Heap bytes: the two tables and the long names' boxes.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.short.buckets.capacity() * std::mem::size_of::<(u64, u64, u32)>()
            + super::map_bytes(&self.long)
            + self.long.keys().map(|k| k.len() + 16).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// A name from a small alphabet (so that near names share prefixes and suffixes), with the
    /// bytes `pack` could confuse: NUL, and multi-byte UTF-8.
    fn name() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::collection::vec(
            proptest::sample::select(vec!['a', 'b', '\0', '_', 'é', '\u{10348}']),
            0..20,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    /// The packing the fast loads replace: bytes copied into a zeroed buffer, length on top.
    fn pack_plain(name: &str) -> Option<u128> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() > SHORT {
            return None;
        }
        let mut buf = [0u8; 16];
        buf[..b.len()].copy_from_slice(b);
        buf[15] = b.len() as u8;
        Some(u128::from_le_bytes(buf))
    }

    #[test]
    fn every_short_length_packs_its_bytes() {
        let all = "abcdefghijklmnopqrstuvwxyz";
        for n in 1..=all.len() {
            assert_eq!(pack(&all[..n]), pack_plain(&all[..n]), "{n} bytes");
        }
        assert_ne!(pack("a"), pack("a\0"));
        assert_eq!(pack(&"x".repeat(16)), None);
        assert_eq!(pack(""), None);
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
        /// The packing is the byte copy's, so two names pack equal only when equal.
        #[test]
        fn pack_is_the_byte_copy(a in name(), b in name()) {
            proptest::prop_assert_eq!(pack(&a), pack_plain(&a));
            if let (Some(x), Some(y)) = (pack(&a), pack(&b)) {
                proptest::prop_assert_eq!(x == y, a == b);
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
