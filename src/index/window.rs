//! The messageId dedupe window: the newest `capacity` messageId hashes, in arrival order.
//!
//! 16 bytes of hash per id in a ring (oldest overwritten first), plus an open-addressing table
//! of ring slots, at most 80 % full (linear probing, backward-shift deletion). Each bucket is
//! one `u32`: the ring slot plus one in its low bits (enough bits for `capacity`; 0 is an
//! empty bucket) and as many of the hash's high bits as are left as a tag above them, so a
//! check and the insert that follows touch one table line (one cache miss on a window of a
//! million ids, not one on a tag array and another on a slot array). About 21 bytes per id
//! when the window is full. The tag has 32 - ceil(log2(capacity + 1)) bits: 12 for a
//! million ids, none for a window of `u32::MAX`; with fewer bits, a probe compares more ring
//! entries (right answers, just slower). No location is kept: a `DEDUPE` entry is live for
//! compaction while its hash is in the window.
//!
//! The snapshot stores the ring and the slot of its oldest hash, not the table: the table is
//! an index of the ring, and encoding it read the ring at a random slot for each bucket (a
//! cache miss each, ~2/3 of the time the hint held the writers out on W1), for ~6 MB of
//! payload a million ids. [`Window::from_ring`] places the ring's ids in a new table instead.

/// Most buckets filled, in fifths of the table.
const MAX_LOAD_FIFTHS: usize = 4;

/// The ids the first table is sized for (a ring grown by quarters first holds as many).
const FIRST_IDS: usize = 1024;

/// The largest capacity whose ring is reserved whole at the first insert (64 MiB of address
/// space); a larger one grows by quarters (`Window::reserve_ring`).
const RESERVED_AT_ONCE: usize = 1 << 22;

/// A hash as the ring holds it: its little-endian bytes, as the snapshot stores them, so that
/// the snapshot hands the whole ring on as one slice (`as_flattened`) instead of copying it a
/// hash at a time under the lock that holds the writers (16 MB for a million ids).
type Held = [u8; 16];

/// The window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    /// Hashes ([`Held`]); once `ring.len() == capacity`, `head` is the oldest.
    ring: Vec<Held>,
    head: usize,
    capacity: usize,
    /// Per bucket: 0 for empty, else `tag | (slot + 1)` (see `key`).
    buckets: Vec<u32>,
    /// The bits of a bucket holding its slot plus one (the rest hold the tag): the low
    /// ceil(log2(capacity + 1)) bits.
    slot_mask: u32,
    /// Ids inserted since the window was made (wrapping): an [`Absent`] holds while it is
    /// unchanged. Not stored.
    inserts: u64,
}

/// What a probe for a hash the window does not hold found ([`Window::absent`]): the writer
/// checks a call's messageId before it builds the call and inserts it at the commit, with
/// nothing inserted between; [`Window::insert_absent`] then does not probe the table again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Absent {
    hash: u128,
    /// The empty bucket the probe ended at (`None`: the table has none).
    empty: Option<usize>,
    /// [`Window::inserts`] when probed.
    inserts: u64,
}

impl Absent {
    /// The hash probed.
    pub fn hash(&self) -> u128 {
        self.hash
    }
}

/// The ids the table is sized for once it holds `len` of them, as the window grows from
/// empty: the least of [`FIRST_IDS`] times a power of four that is at least `len`, at most
/// `capacity` (the table grows four times over, see [`Window::insert_new`]).
fn grown_ids(len: usize, capacity: usize) -> usize {
    let mut ids = FIRST_IDS;
    while ids < len {
        ids = ids.saturating_mul(4);
    }
    ids.min(capacity)
}

impl Window {
    /// An empty window for `capacity` ids (at most `u32::MAX`; more are clamped).
    pub fn new(capacity: usize) -> Window {
        let capacity = capacity.min(u32::MAX as usize);
        // `capacity` itself (the largest slot plus one) must fit under the mask.
        let bits = u32::BITS - (capacity as u32).leading_zeros();
        Window {
            capacity,
            slot_mask: u32::MAX.checked_shr(u32::BITS - bits).unwrap_or(0),
            ..Window::default()
        }
    }

    /// Number of ids held.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// The hashes held, oldest first.
    #[cfg(test)]
    pub fn oldest_first(&self) -> impl Iterator<Item = u128> + '_ {
        let (newer, older) = self.ring.split_at(self.head.min(self.ring.len()));
        older.iter().chain(newer).map(|h| u128::from_le_bytes(*h))
    }

    /// The hash at ring slot `slot`, if the ring has one there.
    fn hash_at(&self, slot: usize) -> Option<u128> {
        self.ring.get(slot).map(|h| u128::from_le_bytes(*h))
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> u64 {
        (self.ring.capacity() * 16 + self.buckets.capacity() * 4) as u64
    }

    /// Load the bucket a look-up of `hash` starts at, so that the call that looks it up finds
    /// it in the CPU's cache (`apply::ahead`).
    pub fn touch(&self, hash: u128) {
        if !self.buckets.is_empty() {
            std::hint::black_box(self.buckets.get(self.home(hash)).copied());
        }
    }

    fn home(&self, hash: u128) -> usize {
        // Multiply-shift maps the (uniform) low half onto any table size.
        ((hash as u64 as u128 * self.buckets.len() as u128) >> 64) as usize
    }

    /// The tag bits of a bucket holding `hash`: its top bits, above the slot's.
    fn tag(&self, hash: u128) -> u32 {
        (hash >> 96) as u32 & !self.slot_mask
    }

    /// The bucket for `hash` at ring slot `slot`.
    fn key(&self, hash: u128, slot: usize) -> u32 {
        self.tag(hash) | (slot as u32 + 1)
    }

    /// The ring slot of a used bucket (out of the ring's range for an empty one).
    fn slot_of(&self, bucket: u32) -> usize {
        (bucket & self.slot_mask).wrapping_sub(1) as usize
    }

    fn next(&self, at: usize) -> usize {
        if at + 1 == self.buckets.len() {
            0
        } else {
            at + 1
        }
    }

    /// The bucket holding `hash` (`Ok`), else the empty bucket its probe ended at (`Err`;
    /// `None` for a table without one).
    fn probe(&self, hash: u128) -> Result<usize, Option<usize>> {
        let n = self.buckets.len();
        if n == 0 {
            return Err(None);
        }
        let tag = self.tag(hash);
        let mut at = self.home(hash);
        for _ in 0..n {
            let b = self.buckets[at];
            if b == 0 {
                return Err(Some(at));
            }
            if b & !self.slot_mask == tag && self.hash_at(self.slot_of(b)) == Some(hash) {
                return Ok(at);
            }
            at = self.next(at);
        }
        Err(None)
    }

    /// The bucket holding ring slot `slot` (whose hash is `hash`). By slot, not by hash: a
    /// damaged snapshot may hold one hash twice, and each bucket must leave with its own slot.
    fn bucket_of_slot(&self, hash: u128, slot: usize) -> Option<usize> {
        let n = self.buckets.len();
        let mut at = self.home(hash);
        for _ in 0..n {
            match self.buckets[at] {
                0 => return None,
                b if self.slot_of(b) == slot => return Some(at),
                _ => at = self.next(at),
            }
        }
        None
    }

    /// Whether `hash` is in the window.
    pub fn contains(&self, hash: u128) -> bool {
        self.probe(hash).is_ok()
    }

    /// [`Window::contains`], and when `hash` is not there, what the probe found, for
    /// [`Window::insert_absent`] (`None`: it is there).
    pub fn absent(&self, hash: u128) -> Option<Absent> {
        match self.probe(hash) {
            Ok(_) => None,
            Err(empty) => Some(Absent {
                hash,
                empty,
                inserts: self.inserts,
            }),
        }
    }

    /// [`Window::contains`], for hashes asked in the order they were inserted (a compaction
    /// reads the log's `DEDUPE` entries in that order): `at` is the ring slot where the next
    /// one is expected. A hash found there is in the window (the ring holds exactly the
    /// window's ids; the table only finds them), answered from the ring read in order
    /// instead of from a probe of the table at a random bucket and of the ring at a random
    /// slot (cache misses each, on a window of a million ids). Any other hash is probed, and
    /// one found moves `at` past its slot. Any order gives the right answers; insertion
    /// order makes them cheap.
    pub fn contains_walking(&self, hash: u128, at: &mut usize) -> bool {
        let slot = match self.hash_at(*at) {
            Some(h) if h == hash => *at,
            _ => match self.probe(hash) {
                Ok(bucket) => self.slot_of(self.buckets[bucket]),
                Err(_) => return false,
            },
        };
        *at = if slot + 1 == self.ring.len() {
            0
        } else {
            slot + 1
        };
        true
    }

    fn place(&mut self, hash: u128, slot: usize) {
        let mut at = self.home(hash);
        while self.buckets[at] != 0 {
            at = self.next(at);
        }
        self.buckets[at] = self.key(hash, slot);
    }

    /// Empty bucket `at`, shifting back the entries after it that may move closer to home.
    fn remove_bucket(&mut self, mut at: usize) {
        let n = self.buckets.len();
        self.buckets[at] = 0;
        let mut next = self.next(at);
        while self.buckets[next] != 0 {
            let home = self
                .hash_at(self.slot_of(self.buckets[next]))
                .map_or(next, |h| self.home(h));
            // Move when the hole lies on the way from home to `next` (cyclically).
            let dist = |from: usize, to: usize| (to + n - from) % n;
            if dist(home, next) >= dist(at, next) {
                self.buckets[at] = self.buckets[next];
                self.buckets[next] = 0;
                at = next;
            }
            next = self.next(next);
        }
    }

    /// Size the table for `ring_capacity` ids and place every id again.
    fn rebuild(&mut self, ring_capacity: usize) {
        let buckets = (ring_capacity * 5).div_ceil(MAX_LOAD_FIFTHS).max(8);
        self.buckets = vec![0; buckets];
        for slot in 0..self.ring.len() {
            let hash = u128::from_le_bytes(self.ring[slot]);
            self.place(hash, slot);
        }
    }

    /// Remember `hash` (nothing if it is there already), forgetting the oldest beyond the
    /// capacity. Whether it was new. One probe finds it or the empty bucket it goes to (a
    /// probe again only after the table is rebuilt or the oldest leaves it, on lines that
    /// probe just read).
    pub fn insert(&mut self, hash: u128) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let empty = match self.probe(hash) {
            Ok(_) => return false,
            Err(empty) => empty,
        };
        self.insert_new(hash, empty)
    }

    /// [`Window::insert`] of the hash `absent` probed for, without probing again while
    /// nothing was inserted since (else as `insert`).
    pub fn insert_absent(&mut self, absent: Absent) -> bool {
        if self.capacity == 0 || absent.inserts != self.inserts {
            return self.insert(absent.hash);
        }
        debug_assert_eq!(self.probe(absent.hash), Err(absent.empty));
        self.insert_new(absent.hash, absent.empty)
    }

    /// Room in the ring for more ids: the whole capacity at once when it is at most
    /// [`RESERVED_AT_ONCE`] ids (a million-id window: 16 MB of address space, resident only
    /// as the ring fills, since a hash is written once its slot is taken; grown by quarters,
    /// each growth copied the ring while the writer waited, ~30 times up to a million ids,
    /// the last ones copying 5-13 MB); else a quarter more (not double), up to the capacity.
    fn reserve_ring(&mut self) {
        let len = self.ring.len();
        let want = if self.capacity <= RESERVED_AT_ONCE {
            self.capacity
        } else {
            (len + len / 4).max(FIRST_IDS).min(self.capacity)
        };
        self.ring.reserve_exact(want - len);
    }

    /// Insert `hash`, not in the window, whose probe ended at the empty bucket `empty`.
    fn insert_new(&mut self, hash: u128, empty: Option<usize>) -> bool {
        self.inserts = self.inserts.wrapping_add(1);
        if self.ring.len() < self.capacity {
            if self.ring.len() == self.ring.capacity() {
                self.reserve_ring();
            }
            let slot = self.ring.len();
            match empty {
                Some(at) if slot * 5 < self.buckets.len() * MAX_LOAD_FIFTHS => {
                    self.buckets[at] = self.key(hash, slot);
                }
                _ => {
                    // The table grows four times over (up to the capacity's size), not a
                    // quarter at a time as the ring once did: each rebuild places every id again, each at a
                    // random bucket of a table larger than the CPU's caches (growing with the
                    // ring, the ids of a million-id window were placed five million times on
                    // the way, ~1 % of the writer's time on W1). A full window's table is the
                    // same either way.
                    let ids = grown_ids(slot + 1, self.capacity);
                    self.rebuild(ids);
                    self.place(hash, slot);
                }
            }
            self.ring.push(hash.to_le_bytes());
            return true;
        }
        let slot = self.head;
        let old = u128::from_le_bytes(self.ring[slot]);
        if let Some(at) = self.bucket_of_slot(old, slot) {
            self.remove_bucket(at);
        }
        self.ring[slot] = hash.to_le_bytes();
        self.place(hash, slot);
        self.head = if slot + 1 == self.capacity {
            0
        } else {
            slot + 1
        };
        true
    }

    /// The parts the snapshot stores: the ring as laid out (each hash little-endian) and the
    /// slot of the oldest.
    pub fn parts(&self) -> (&[[u8; 16]], usize) {
        (&self.ring, self.head)
    }

    /// A window from the snapshot's parts ([`Window::parts`]), if they fit `capacity` (else
    /// `None`: the caller keeps the newest hashes, oldest first, with
    /// [`Window::from_oldest_first`]; the option may have changed since). The ring is kept as
    /// it was laid out and its ids placed in a table of the size the window's growth left
    /// (a full window's: the capacity's), in slot order: the same buckets as the table it
    /// was written from (the same layout, until the ring first wrapped).
    pub fn from_ring(capacity: usize, ring: Vec<[u8; 16]>, head: usize) -> Option<Window> {
        let mut w = Window::new(capacity);
        let fits = ring.len() <= w.capacity
            && (head == 0 || head < ring.len())
            && (ring.len() == w.capacity || head == 0);
        if !fits {
            return None;
        }
        w.ring = ring;
        w.head = head;
        if !w.ring.is_empty() {
            w.rebuild(grown_ids(w.ring.len(), w.capacity));
        }
        Some(w)
    }

    /// A window holding `hashes` (oldest first; the newest `capacity` of them are kept),
    /// sized once.
    pub fn from_oldest_first(capacity: usize, hashes: &[u128]) -> Window {
        let mut w = Window::new(capacity);
        let keep = &hashes[hashes.len().saturating_sub(w.capacity)..];
        w.ring.reserve_exact(keep.len());
        w.rebuild(keep.len());
        for &h in keep {
            w.insert(h);
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u64) -> u128 {
        crate::entries::hash128("message", &i.to_string())
    }

    /// `insert_absent` of a probe leaves the window `insert` would, through growth, table
    /// rebuilds and the ring's wrap; a probe made stale by an insert since is still right.
    #[test]
    fn insert_absent_is_insert() {
        for capacity in [0, 1, 5, 300] {
            let (mut a, mut b) = (Window::new(capacity), Window::new(capacity));
            for i in 0..1000u64 {
                let hash = h(i % 700);
                let absent = a.absent(hash);
                assert_eq!(absent.is_none(), a.contains(hash));
                if i % 7 == 0 {
                    let other = h(5000 + i);
                    assert_eq!(a.insert(other), b.insert(other));
                }
                match absent {
                    Some(absent) => assert_eq!(a.insert_absent(absent), b.insert(hash)),
                    None => assert_eq!(a.insert(hash), b.insert(hash)),
                }
                assert_eq!(
                    (a.parts(), &a.buckets),
                    (b.parts(), &b.buckets),
                    "capacity {capacity}, id {i}"
                );
            }
        }
    }

    /// `w` through the snapshot's parts: its ring, head, and a table placed again.
    fn through_snapshot(w: &Window) -> Option<Window> {
        let (ring, head) = w.parts();
        Window::from_ring(w.capacity, ring.to_vec(), head)
    }

    /// Whether `rebuilt`'s table holds what `before`'s does: as many buckets, the same used
    /// ones (each a ring slot and its hash's tag) wherever linear probing put them, each
    /// found by its hash's probe; and, while the ring has not wrapped (no id forgotten, so
    /// the ids were placed in slot order both times), in the same buckets.
    fn same_table(before: &Window, rebuilt: &Window, wrapped: bool) -> bool {
        let used = |w: &Window| {
            let mut b: Vec<u32> = w.buckets.iter().copied().filter(|&b| b != 0).collect();
            b.sort_unstable();
            b
        };
        let found = (0..rebuilt.ring.len()).all(|slot| {
            let hash = u128::from_le_bytes(rebuilt.ring[slot]);
            rebuilt
                .bucket_of_slot(hash, slot)
                .is_some_and(|at| rebuilt.buckets[at] == rebuilt.key(hash, slot))
        });
        rebuilt.buckets.len() == before.buckets.len()
            && used(rebuilt) == used(before)
            && found
            && (wrapped || rebuilt.buckets == before.buckets)
    }

    /// Hashes for the model test, from a few kinds: random ones; ones differing only in
    /// their low bits (one tag, homes close together); ones with one low half (one home)
    /// and top bits zero (one tag too).
    fn pick(kind: u8, i: u64) -> u128 {
        match kind % 3 {
            0 => h(i),
            1 => (0xabcd_u128 << 112) | u128::from(i),
            _ => (u128::from(i) << 64) | 7,
        }
    }

    #[test]
    fn keeps_exactly_the_newest_ids_and_stays_small() {
        let cap = 5000;
        let mut w = Window::new(cap);
        for i in 0..20_000u64 {
            w.insert(h(i));
            w.insert(h(i)); // a duplicate changes nothing
            if i % 997 == 0 {
                for j in 0..=i {
                    assert_eq!(w.contains(h(j)), j + cap as u64 > i, "after {i}: id {j}");
                }
            }
        }
        assert_eq!(w.len(), cap);
        let order: Vec<u128> = w.oldest_first().collect();
        assert_eq!(order, (15_000..20_000).map(h).collect::<Vec<_>>());
        assert!(w.heap_bytes() <= 24 * cap as u64, "{}", w.heap_bytes());
        let copy = through_snapshot(&w).unwrap();
        assert!(same_table(&w, &copy, true));
        assert!((15_000..20_000).all(|i| copy.contains(h(i))));
        assert!(!copy.contains(h(14_999)));
        assert_eq!(copy.heap_bytes(), w.heap_bytes());
        let again = Window::from_oldest_first(cap, &order);
        assert!((15_000..20_000).all(|i| again.contains(h(i))));
        assert!(!again.contains(h(14_999)));
        assert!(again.heap_bytes() <= 24 * cap as u64);
    }

    #[test]
    fn the_table_grows_four_times_over_up_to_the_capacity() {
        // Each size the table takes is one rebuild placing every id again: a few, not one per
        // quarter the ring grows (~30 to a million ids).
        let cap = 100_000;
        let mut w = Window::new(cap);
        let mut sizes = Vec::new();
        for i in 0..cap as u64 {
            w.insert(h(i));
            if sizes.last() != Some(&w.buckets.len()) {
                sizes.push(w.buckets.len());
            }
        }
        assert_eq!(sizes, [1280, 5120, 20480, 81920, 125_000]);
        assert!((0..cap as u64).step_by(97).all(|i| w.contains(h(i))));
        // Full, it takes what a table grown with the ring took.
        assert!(w.heap_bytes() * 2 <= 45 * cap as u64, "{}", w.heap_bytes());
    }

    /// The ring of a window up to [`RESERVED_AT_ONCE`] ids is reserved once, at the first
    /// insert, and never copied as it fills; a larger one grows by quarters.
    #[test]
    fn the_ring_is_reserved_once() {
        let cap = 100_000;
        let mut w = Window::new(cap);
        w.insert(h(0));
        let (ring, capacity) = (w.ring.as_ptr(), w.ring.capacity());
        assert_eq!(capacity, cap);
        for i in 1..cap as u64 + 10 {
            w.insert(h(i));
        }
        assert_eq!((w.ring.as_ptr(), w.ring.capacity()), (ring, capacity));
        let mut big = Window::new(RESERVED_AT_ONCE + 1);
        big.insert(h(0));
        assert_eq!(big.ring.capacity(), FIRST_IDS);
    }

    #[test]
    fn colliding_homes_survive_deletion() {
        // Hashes with the same low half share a home bucket: deletion must keep the rest.
        let mut w = Window::new(4);
        let same = |hi: u128| (hi << 64) | 7;
        for hi in 1..=12 {
            w.insert(same(hi));
            for k in 1..=hi {
                assert_eq!(w.contains(same(k)), k + 4 > hi, "{hi} {k}");
            }
        }
    }

    proptest::proptest! {
        /// The walk answers as the probe does, for hashes asked in insertion order (as a
        /// compaction asks), with ids never inserted or already forgotten mixed in, and in
        /// any other order; the window wrapped or not.
        #[test]
        fn the_walk_answers_as_the_probe(
            cap in 1usize..300,
            inserted in 0u64..700,
            asked in proptest::collection::vec(0u64..800, 0..200),
            sorted: bool,
        ) {
            let mut w = Window::new(cap);
            for i in 0..inserted {
                w.insert(h(i));
            }
            let mut asked = asked;
            if sorted {
                asked.sort_unstable();
            }
            let mut at = 0;
            for i in asked.into_iter().chain(0..inserted) {
                proptest::prop_assert_eq!(w.contains_walking(h(i), &mut at), w.contains(h(i)));
                proptest::prop_assert!(at < w.len().max(1));
            }
        }
    }

    proptest::proptest! {
        /// The window holds what a queue of the newest `capacity` hashes holds, through
        /// random inserts (duplicates among them) and checks, with eviction, wrap-around,
        /// table rebuilds and colliding tags and homes; and a copy through the snapshot's
        /// parts goes on alike.
        #[test]
        fn the_window_is_a_queue_of_the_newest(
            cap in proptest::sample::select(vec![0usize, 1, 2, 7, 100, 1500]),
            ops in proptest::collection::vec((proptest::bool::weighted(0.7), 0u8..3, 0u64..400), 0..3000),
        ) {
            use std::collections::VecDeque;
            let mut w = Window::new(cap);
            let mut model: VecDeque<u128> = VecDeque::new();
            let mut wrapped = false;
            for (n, &(insert, kind, i)) in ops.iter().enumerate() {
                let hash = pick(kind, i);
                if insert {
                    let new = cap > 0 && !model.contains(&hash);
                    if new {
                        if model.len() == cap {
                            model.pop_front();
                            wrapped = true;
                        }
                        model.push_back(hash);
                    }
                    proptest::prop_assert_eq!(w.insert(hash), new);
                } else {
                    proptest::prop_assert_eq!(w.contains(hash), model.contains(&hash));
                }
                proptest::prop_assert_eq!(w.len(), model.len());
                if n % 500 == 0 {
                    proptest::prop_assert!(model.iter().all(|&m| w.contains(m)));
                }
            }
            proptest::prop_assert!(w.oldest_first().eq(model.iter().copied()));
            proptest::prop_assert!(w.heap_bytes() <= 24 * cap.max(1024) as u64 + 40);
            let mut copy = through_snapshot(&w).unwrap();
            proptest::prop_assert!(same_table(&w, &copy, wrapped));
            for (kind, i) in (0..3).flat_map(|k| (390..450).map(move |i| (k, i))) {
                let hash = pick(kind, i);
                proptest::prop_assert_eq!(copy.insert(hash), w.insert(hash));
                proptest::prop_assert!(copy.oldest_first().eq(w.oldest_first()));
            }
            proptest::prop_assert!(w.oldest_first().all(|m| copy.contains(m)));
        }
    }

    #[test]
    fn a_ring_that_does_not_fit_is_refused_and_a_hostile_one_does_no_harm() {
        let cap = 50;
        let mut w = Window::new(cap);
        for i in 0..80 {
            w.insert(h(i));
        }
        let (ring, head) = w.parts();
        assert!(head != 0);
        let fits = |cap: usize, ring: &[[u8; 16]], head: usize| {
            Window::from_ring(cap, ring.to_vec(), head).is_some()
        };
        assert!(fits(cap, ring, head));
        // The head out of the ring; a wrapped ring that is not full; a smaller window.
        assert!(!fits(cap, ring, cap));
        assert!(!fits(cap, &ring[1..], head));
        assert!(!fits(cap - 1, ring, head));
        assert!(fits(cap + 1, &ring[..10], 0));
        // One hash in every slot (a payload that passed its CRC yet is not a window's): each
        // slot leaves the table with its own bucket as the ring wraps.
        let mut same = Window::from_ring(cap, vec![h(1).to_le_bytes(); cap], 7).unwrap();
        assert!(same.contains(h(1)));
        for i in 100..100 + cap as u64 {
            assert!(same.insert(h(i)));
        }
        assert!(!same.contains(h(1)));
        assert_eq!(same.buckets.iter().filter(|&&b| b != 0).count(), cap);
    }

    /// The table placed again from the ring is the one the window grew, for a window of
    /// 100,000 ids part full (the same layout) and wrapped (the same buckets in use).
    #[test]
    fn the_rebuilt_table_is_the_grown_one() {
        let cap = 100_000;
        let mut w = Window::new(cap);
        for i in 0..250_000u64 {
            w.insert(h(i));
            if [
                0, 1023, 1024, 5000, 70_000, 99_999, 100_000, 100_001, 249_999,
            ]
            .contains(&i)
            {
                let copy = through_snapshot(&w).unwrap();
                assert!(same_table(&w, &copy, i >= cap as u64), "after id {i}");
            }
        }
    }

    #[test]
    fn the_tag_takes_the_bits_the_slot_leaves() {
        assert_eq!(Window::new(1).slot_mask, 1);
        assert_eq!(Window::new(7).slot_mask, 7);
        assert_eq!(Window::new(8).slot_mask, 15);
        assert_eq!(Window::new(1_000_000).slot_mask, (1 << 20) - 1);
        assert_eq!(Window::new(usize::MAX).slot_mask, u32::MAX);
        // No tag bits left: every probe compares the ring, and still answers right.
        let mut w = Window::new(usize::MAX);
        for i in 0..3000 {
            assert!(w.insert(h(i)));
        }
        assert!((0..3000).all(|i| w.contains(h(i))));
        assert!(!w.contains(h(3000)));
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut w = Window::new(0);
        w.insert(h(1));
        assert!(!w.contains(h(1)));
        assert_eq!(w.heap_bytes(), 0);
    }
}
