//! Identifier -> profile key, with the identifiers in one byte arena.
//!
//! Each identifier is an arena entry `[varint len][bytes][varint key]`; the hash table holds
//! only the entry's 4-byte offset (plus hashbrown's 1-byte control per bucket). So an
//! identifier costs its bytes plus about 3-5 bytes in the arena and 6-12 bytes in the table,
//! instead of a boxed string (16-byte pointer plus allocator overhead) and a 24-byte map entry.
//! An entry replaced or removed leaves garbage, reclaimed once it is half the arena; its first
//! byte is overwritten with [`DEAD`] (never a byte of UTF-8), so that the hint's copy of the
//! arena walks it in order instead of following the table into it at random.
//!
//! Offsets are 32-bit: an arena holds at most 4 GiB. Identifiers beyond that (tens of
//! millions of profiles per identifier kind) go to a plain map, so nothing is ever refused.

use hashbrown::HashTable;

use super::HashMap;

/// Arena growth: a quarter at a time (not double), so its slack stays small.
fn grow(arena: &mut Vec<u8>, extra: usize) {
    if arena.capacity() - arena.len() < extra {
        let want = (arena.len() / 4).max(extra).max(4096);
        arena.reserve_exact(want);
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A varint at `at`: its value and the offset after it.
#[inline]
fn varint_at(b: &[u8], at: usize) -> Option<(u64, usize)> {
    // One byte (a length below 128, and the first keys): no loop.
    match b.get(at) {
        Some(&byte) if byte < 0x80 => Some((u64::from(byte), at + 1)),
        Some(_) => varint_at_long(b, at),
        None => None,
    }
}

/// [`varint_at`] of a varint of more than one byte.
fn varint_at_long(b: &[u8], mut at: usize) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(at)?;
        at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some((v, at));
        }
    }
    None
}

/// Written over the first byte of a removed entry's identifier: `0xFF` never occurs in UTF-8,
/// so a live entry never starts with it.
const DEAD: u8 = 0xFF;

/// The entry at `off`: where its identifier's bytes start and end, its key, and its end.
fn span_at(arena: &[u8], off: usize) -> Option<(usize, usize, u64, usize)> {
    let (len, at) = varint_at(arena, off)?;
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    if end > arena.len() {
        return None;
    }
    let (key, next) = varint_at(arena, end)?;
    Some((at, end, key, next))
}

/// The entry at `off`: its bytes, key and end.
fn entry_at(arena: &[u8], off: usize) -> Option<(&[u8], u64, usize)> {
    span_at(arena, off).map(|(at, end, key, next)| (&arena[at..end], key, next))
}

/// Where the key of the entry at `off` starts, if the entry's identifier is `id`.
#[inline]
fn holds_at(arena: &[u8], off: usize, id: &[u8]) -> Option<usize> {
    let (len, at) = varint_at(arena, off)?;
    if len != id.len() as u64 {
        return None;
    }
    let end = at.checked_add(id.len())?;
    same_bytes(arena.get(at..end)?, id).then_some(end)
}

/// `a == b` for slices of the same length, compared a word at a time inline (identifiers are
/// short: a `bcmp` call, with the registers saved around it, cost more than the compare).
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n >= 8 {
        let mut i = 0;
        while i + 8 < n {
            if word(a, i) != word(b, i) {
                return false;
            }
            i += 8;
        }
        // The last 8 bytes (overlapping the words compared when `n` is not a multiple of 8).
        word(a, n - 8) == word(b, n - 8)
    } else if n >= 4 {
        half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4)
    } else {
        a == b
    }
}

/// The 8 bytes of `s` at `i` (one load).
#[inline(always)]
fn word(s: &[u8], i: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&s[i..i + 8]);
    u64::from_le_bytes(w)
}

/// The 4 bytes of `s` at `i` (one load).
#[inline(always)]
fn half(s: &[u8], i: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&s[i..i + 4]);
    u32::from_le_bytes(w)
}

/// Append the entry `[varint len][bytes][varint key]`.
fn put_entry(out: &mut Vec<u8>, bytes: &[u8], key: u64) {
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
    put_varint(out, key);
}

/// Identifier -> key.
#[derive(Debug, Clone, Default)]
pub(crate) struct IdMap {
    arena: Vec<u8>,
    table: HashTable<u32>,
    garbage: usize,
    /// Identifiers that did not fit the arena's 32-bit offsets.
    overflow: HashMap<Box<str>, u64>,
    hasher: foldhash::fast::RandomState,
}

impl IdMap {
    /// The bytes hashed as they are, without the length prefix `Hash for [u8]` writes first
    /// (a multiply less a look-up; the table's hashes are never stored, only made here).
    #[inline]
    fn hash(hasher: &foldhash::fast::RandomState, bytes: &[u8]) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = hasher.build_hasher();
        h.write(bytes);
        h.finish()
    }

    fn find(&self, id: &str) -> Option<(u32, u64)> {
        self.find_hashed(id, Self::hash(&self.hasher, id.as_bytes()))
    }

    /// [`IdMap::find`] of `id` whose hash is `hash`. A candidate's length is compared before
    /// its bytes (inline, [`same_bytes`]), and only the match's key is decoded, once: the
    /// compare used to decode each candidate's whole entry, key included, and call `bcmp`,
    /// then the match was decoded again (with the `bcmp` calls, ~180 instructions a W1 call
    /// under callgrind, now ~135).
    fn find_hashed(&self, id: &str, hash: u64) -> Option<(u32, u64)> {
        let arena = &self.arena[..];
        let id = id.as_bytes();
        let mut key_at = 0;
        let off = *self
            .table
            .find(hash, |&off| match holds_at(arena, off as usize, id) {
                Some(end) => {
                    key_at = end;
                    true
                }
                None => false,
            })?;
        varint_at(arena, key_at).map(|(key, _)| (off, key))
    }

    /// The key `id` points to.
    pub fn get(&self, id: &str) -> Option<u64> {
        match self.find(id) {
            Some((_, key)) => Some(key),
            None if self.overflow.is_empty() => None,
            None => self.overflow.get(id).copied(),
        }
    }

    /// Number of identifiers.
    pub fn len(&self) -> usize {
        self.table.len() + self.overflow.len()
    }

    /// Point `id` at `key`.
    pub fn insert(&mut self, id: &str, key: u64) {
        // Hashed once: for the look-up and, when new, for the table's insert.
        let hash = Self::hash(&self.hasher, id.as_bytes());
        if let Some((off, old)) = self.find_hashed(id, hash) {
            if old == key {
                return;
            }
            self.remove_at(hash, off);
            self.maybe_compact();
        } else if self.overflow.contains_key(id) {
            self.overflow.insert(id.into(), key);
            return;
        }
        let off = self.arena.len();
        let Ok(off32) = u32::try_from(off) else {
            self.overflow.insert(id.into(), key);
            return;
        };
        grow(&mut self.arena, id.len() + 20);
        put_entry(&mut self.arena, id.as_bytes(), key);
        let (arena, hasher) = (&self.arena, &self.hasher);
        self.table.insert_unique(hash, off32, |&o| {
            Self::hash(hasher, entry_at(arena, o as usize).map_or(&[][..], |e| e.0))
        });
    }

    /// Forget `id` if it points at `key`.
    pub fn remove_if(&mut self, id: &str, key: u64) {
        let hash = Self::hash(&self.hasher, id.as_bytes());
        match self.find_hashed(id, hash) {
            Some((off, k)) if k == key => {
                self.remove_at(hash, off);
                self.maybe_compact();
            }
            Some(_) => {}
            None => {
                if self.overflow.get(id) == Some(&key) {
                    self.overflow.remove(id);
                }
            }
        }
    }

    /// Forget the entry at `off`, of an identifier whose hash is `hash`.
    fn remove_at(&mut self, hash: u64, off: u32) {
        if let Ok(e) = self.table.find_entry(hash, |&o| o == off) {
            e.remove();
        }
        self.bury(off as usize);
    }

    /// Count the entry at `off` as garbage and mark it [`DEAD`] (its identifier's first byte;
    /// an empty identifier has none, and the hint's walk asks the table about it).
    fn bury(&mut self, off: usize) {
        if let Some((at, end, _, next)) = span_at(&self.arena, off) {
            self.garbage += next - off;
            if at < end {
                self.arena[at] = DEAD;
            }
        }
    }

    /// Keep only the identifiers whose key passes `keep` (a linear pass: repair only).
    pub fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let arena = &self.arena;
        let mut gone = Vec::new();
        self.table
            .retain(|off| match entry_at(arena, *off as usize) {
                Some((_, key, _)) if !keep(key) => {
                    gone.push(*off as usize);
                    false
                }
                _ => true,
            });
        for off in gone {
            self.bury(off);
        }
        self.overflow.retain(|_, k| keep(*k));
        self.maybe_compact();
    }

    /// Rewrite the arena without garbage once garbage is half of it.
    fn maybe_compact(&mut self) {
        if self.garbage < 64 << 10 || self.garbage * 2 < self.arena.len() {
            return;
        }
        let mut fresh = Vec::with_capacity((self.arena.len() - self.garbage) * 9 / 8);
        for off in self.table.iter_mut() {
            let start = fresh.len();
            if let Some((_, _, end)) = entry_at(&self.arena, *off as usize) {
                fresh.extend_from_slice(&self.arena[*off as usize..end]);
            }
            // Smaller than before, so it fits 32 bits.
            *off = start as u32;
        }
        self.arena = fresh;
        self.garbage = 0;
    }

    /// Every `(identifier bytes, key)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let arena = &self.arena;
        self.table
            .iter()
            .filter_map(move |&off| entry_at(arena, off as usize).map(|e| (e.0, e.1)))
            .chain(self.overflow.iter().map(|(k, &v)| (k.as_bytes(), v)))
    }

    /// Bytes of the identifiers themselves.
    pub fn id_bytes(&self) -> u64 {
        self.iter().map(|(b, _)| b.len() as u64).sum()
    }

    /// Heap bytes held: the arena's capacity, every table bucket with its control byte, and
    /// the overflow map.
    pub fn heap_bytes(&self) -> u64 {
        let table = super::table_bytes::<u32>(self.table.capacity());
        let overflow: usize = self
            .overflow
            .keys()
            .map(|k| k.len() + 16 + 25)
            .sum::<usize>();
        (self.arena.capacity() + table + overflow) as u64
    }

    /// The arena as [`IdMap::to_arena`] gives it (the same entries, perhaps in another order),
    /// without building it: the runs of live entries where they stand in the arena, found by
    /// one pass in order (following the table instead reads the arena at random, a cache miss
    /// an entry: ~10 ms of the hint's 30 for a million profiles, with the writers held), then
    /// the overflow's entries. Falls back to [`IdMap::to_arena`] should the walk not add up to
    /// the table's count and the arena's live bytes (a bug; debug builds stop there): a
    /// guard on the counts, not a comparison of the entries, which the tests make.
    pub fn live_arena(&self) -> LiveArena<'_> {
        let mut runs: Vec<&[u8]> = Vec::new();
        let mut len = 0;
        let (arena, mut at, mut run) = (&self.arena[..], 0, 0);
        let mut live_entries = 0;
        while at < arena.len() {
            let Some((id_at, id_end, _, next)) = span_at(arena, at) else {
                debug_assert!(false, "identifier arena entry at {at} does not parse");
                return LiveArena::Owned(self.to_arena());
            };
            let live = if id_at < id_end {
                arena[id_at] != DEAD
            } else {
                // An empty identifier has no byte to mark: live if the table points at it.
                let hash = Self::hash(&self.hasher, &[]);
                self.table.find(hash, |&o| o as usize == at).is_some()
            };
            if live {
                live_entries += 1;
            } else {
                if run < at {
                    runs.push(&arena[run..at]);
                    len += at - run;
                }
                run = next;
            }
            at = next;
        }
        if run < arena.len() {
            runs.push(&arena[run..]);
            len += arena.len() - run;
        }
        if live_entries != self.table.len() || len != arena.len() - self.garbage {
            debug_assert!(false, "the arena's walk does not add up to its table");
            return LiveArena::Owned(self.to_arena());
        }
        let mut tail = Vec::new();
        for (k, &v) in &self.overflow {
            put_entry(&mut tail, k.as_bytes(), v);
        }
        LiveArena::Runs { runs, len, tail }
    }

    /// The arena, compacted, for the hint: entries back to back (following the table; the
    /// hint takes [`IdMap::live_arena`], which gives the same entries).
    pub fn to_arena(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.arena.len() - self.garbage);
        for (bytes, key) in self.iter() {
            put_entry(&mut out, bytes, key);
        }
        out
    }

    /// A map from an arena written by [`IdMap::to_arena`] holding `count` entries; `Err`
    /// names what is wrong. The table is sized once.
    pub fn from_arena(arena: &[u8], count: usize) -> Result<IdMap, String> {
        // Each entry takes at least 2 bytes: a count beyond that is damage, refused before
        // anything is allocated for it.
        if count > arena.len() / 2 {
            return Err(format!(
                "{count} identifiers cannot fit in {} bytes",
                arena.len()
            ));
        }
        if u32::try_from(arena.len()).is_err() {
            return Err("identifier arena beyond 4 GiB".into());
        }
        let mut map = IdMap {
            arena: arena.to_vec(),
            table: HashTable::with_capacity(count),
            ..IdMap::default()
        };
        let mut at = 0;
        let mut n = 0;
        while at < map.arena.len() {
            let (bytes, _, end) = entry_at(&map.arena, at)
                .ok_or_else(|| format!("identifier entry at byte {at} is truncated"))?;
            if std::str::from_utf8(bytes).is_err() {
                return Err(format!("identifier at byte {at} is not UTF-8"));
            }
            let hash = Self::hash(&map.hasher, bytes);
            let (arena, hasher) = (&map.arena, &map.hasher);
            map.table.insert_unique(hash, at as u32, |&o| {
                Self::hash(hasher, entry_at(arena, o as usize).map_or(&[][..], |e| e.0))
            });
            at = end;
            n += 1;
        }
        if n != count {
            return Err(format!("{n} identifiers where {count} were announced"));
        }
        Ok(map)
    }
}

/// An identifier map's entries as the hint writes them ([`IdMap::live_arena`]).
pub(crate) enum LiveArena<'a> {
    /// Slices of the arena, then the overflow's entries.
    Runs {
        runs: Vec<&'a [u8]>,
        len: usize,
        tail: Vec<u8>,
    },
    /// Built by following the table.
    Owned(Vec<u8>),
}

impl LiveArena<'_> {
    /// Bytes in all.
    pub fn len(&self) -> usize {
        match self {
            LiveArena::Runs { len, tail, .. } => len + tail.len(),
            LiveArena::Owned(v) => v.len(),
        }
    }

    /// The bytes, in order.
    pub fn slices(&self) -> impl Iterator<Item = &[u8]> {
        let (runs, last): (&[&[u8]], &[u8]) = match self {
            LiveArena::Runs { runs, tail, .. } => (runs, tail),
            LiveArena::Owned(v) => (&[], v),
        };
        runs.iter().copied().chain(std::iter::once(last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_through_replacements_removals_and_compaction() {
        let mut m = IdMap::default();
        let mut model = std::collections::HashMap::new();
        let mut x = 88172645463325252u64;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let id = format!("user-{}", x % 5000);
            let key = x % 97;
            match i % 3 {
                0 | 1 => {
                    m.insert(&id, key);
                    model.insert(id.clone(), key);
                }
                _ => {
                    m.remove_if(&id, key);
                    if model.get(&id) == Some(&key) {
                        model.remove(&id);
                    }
                }
            }
        }
        assert_eq!(m.len(), model.len());
        for (id, key) in &model {
            assert_eq!(m.get(id), Some(*key), "{id}");
        }
        assert!(m.arena.len() < 4 * (m.len() * 16 + (64 << 10)), "compacted");
        let back = IdMap::from_arena(&m.to_arena(), m.len()).unwrap();
        for (id, key) in &model {
            assert_eq!(back.get(id), Some(*key));
        }
        assert_eq!(back.get("user-nope"), None);
    }

    /// The entries of an arena as the hint writes it, sorted.
    fn entries(arena: &[u8]) -> Vec<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < arena.len() {
            let (bytes, key, next) = entry_at(arena, at).expect("an entry");
            out.push((bytes.to_vec(), key));
            at = next;
        }
        out.sort();
        out
    }

    #[test]
    fn the_hints_walk_in_order_gives_the_tables_entries() {
        let mut m = IdMap::default();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..60_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Empty identifiers too: they have no byte to mark when removed.
            let id = if x.is_multiple_of(41) {
                String::new()
            } else {
                format!("id-{}", x % 3000)
            };
            let key = x % 13;
            match i % 5 {
                0..=2 => m.insert(&id, key),
                3 => m.remove_if(&id, key),
                _ if i % 2000 == 4 => m.retain(|k| k % 5 != 0),
                _ => m.remove_if(&id, m.get(&id).unwrap_or(u64::MAX)),
            }
            if i % 997 == 0 || i == 59_999 {
                let live = m.live_arena();
                assert!(matches!(live, LiveArena::Runs { .. }), "walked at call {i}");
                let bytes: Vec<u8> = live.slices().flatten().copied().collect();
                assert_eq!(bytes.len(), live.len());
                assert_eq!(entries(&bytes), entries(&m.to_arena()), "call {i}");
                let back = IdMap::from_arena(&bytes, m.len()).unwrap();
                for (id, key) in m.iter() {
                    assert_eq!(back.get(std::str::from_utf8(id).unwrap()), Some(key));
                }
            }
        }
        assert!(m.garbage > 0, "the walk met removed entries");
    }

    #[test]
    fn same_bytes_is_slice_equality() {
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for n in 0..base.len() {
            let a = &base[..n];
            assert!(same_bytes(a, a), "{n}");
            for i in 0..n {
                let mut b = a.to_vec();
                b[i] ^= 0x20;
                assert!(!same_bytes(a, &b), "{n} bytes, differing at {i}");
            }
            assert!(!same_bytes(a, &base[..n + 1]), "{n} against {}", n + 1);
        }
    }

    #[test]
    fn long_lengths_and_keys_are_found() {
        let mut m = IdMap::default();
        let long = "x".repeat(300);
        for (i, id) in ["", "a", "abcdefgh", long.as_str(), &long[..129]]
            .iter()
            .enumerate()
        {
            let key = (1u64 << (7 * i as u32 + 1)) + 5;
            m.insert(id, key);
            assert_eq!(m.get(id), Some(key), "{} bytes", id.len());
        }
        assert_eq!(m.get(&long[..128]), None);
        assert_eq!(m.get(&"y".repeat(300)), None);
    }

    #[test]
    fn damaged_arenas_are_errors() {
        let mut m = IdMap::default();
        m.insert("alice", 1);
        m.insert("bob", 300);
        let a = m.to_arena();
        assert!(IdMap::from_arena(&a, 3).is_err());
        assert!(IdMap::from_arena(&a, 1).is_err());
        assert!(IdMap::from_arena(&a, usize::MAX).is_err());
        for cut in 0..a.len() {
            let _ = IdMap::from_arena(&a[..cut], 2); // no panic
        }
        let mut bad = a.clone();
        bad[1] = 0xff;
        assert!(IdMap::from_arena(&bad, 2).is_err());
    }
}
