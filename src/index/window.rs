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
//! The snapshot stores the table as it always did, a tag byte (0 for empty, else
//! `0x80 | the hash's top 7 bits`) and a `u32` slot per bucket: [`Window::stored_tag`] and
//! [`Window::stored_slot`] give them, [`Window::from_parts`] packs them again.

/// Most buckets filled, in fifths of the table.
const MAX_LOAD_FIFTHS: usize = 4;

/// The window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    /// Hashes; once `ring.len() == capacity`, `head` is the oldest.
    ring: Vec<u128>,
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

/// The byte the snapshot stores for a used bucket holding `hash`.
fn stored_tag_of(hash: u128) -> u8 {
    0x80 | (hash >> 121) as u8
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
        older.iter().chain(newer).copied()
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> u64 {
        (self.ring.capacity() * 16 + self.buckets.capacity() * 4) as u64
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
            if b & !self.slot_mask == tag && self.ring.get(self.slot_of(b)) == Some(&hash) {
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
        let slot = match self.ring.get(*at) {
            Some(&h) if h == hash => *at,
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
                .ring
                .get(self.slot_of(self.buckets[next]))
                .map_or(next, |&h| self.home(h));
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
            let hash = self.ring[slot];
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

    /// Insert `hash`, not in the window, whose probe ended at the empty bucket `empty`.
    fn insert_new(&mut self, hash: u128, empty: Option<usize>) -> bool {
        self.inserts = self.inserts.wrapping_add(1);
        if self.ring.len() < self.capacity {
            if self.ring.len() == self.ring.capacity() {
                // Grow by a quarter (not double), up to the capacity: the ring is most of the
                // window's memory, so its slack stays small.
                let want = (self.ring.len() + self.ring.len() / 4)
                    .max(1024)
                    .min(self.capacity);
                self.ring.reserve_exact(want - self.ring.len());
            }
            let slot = self.ring.len();
            match empty {
                Some(at) if slot * 5 < self.buckets.len() * MAX_LOAD_FIFTHS => {
                    self.buckets[at] = self.key(hash, slot);
                }
                _ => {
                    // The table grows four times over (up to the capacity's size), not a
                    // quarter with the ring: each rebuild places every id again, each at a
                    // random bucket of a table larger than the CPU's caches (growing with the
                    // ring, the ids of a million-id window were placed five million times on
                    // the way, ~1 % of the writer's time on W1). A full window's table is the
                    // same either way.
                    let ids = (slot * 4).min(self.capacity).max(self.ring.capacity());
                    self.rebuild(ids);
                    self.place(hash, slot);
                }
            }
            self.ring.push(hash);
            return true;
        }
        let slot = self.head;
        let old = self.ring[slot];
        if let Some(at) = self.bucket_of_slot(old, slot) {
            self.remove_bucket(at);
        }
        self.ring[slot] = hash;
        self.place(hash, slot);
        self.head = if slot + 1 == self.capacity {
            0
        } else {
            slot + 1
        };
        true
    }

    /// The parts the snapshot stores: the ring as laid out, the slot of the oldest, and the
    /// table's buckets (its layout depends only on the hashes and its size, not on a
    /// per-process seed), each stored as [`Window::stored_tag`] and [`Window::stored_slot`].
    pub fn parts(&self) -> (&[u128], usize, &[u32]) {
        (&self.ring, self.head, &self.buckets)
    }

    /// The tag byte the snapshot stores for a bucket of [`Window::parts`]: 0 for an empty
    /// one, else `0x80 | the top 7 bits of its hash`.
    pub fn stored_tag(&self, bucket: u32) -> u8 {
        match bucket {
            0 => 0,
            b => self
                .ring
                .get(self.slot_of(b))
                .map_or(0x80, |&h| stored_tag_of(h)),
        }
    }

    /// The ring slot the snapshot stores for a bucket of [`Window::parts`] (0 for an empty
    /// one).
    pub fn stored_slot(&self, bucket: u32) -> u32 {
        match bucket {
            0 => 0,
            b => self.slot_of(b) as u32,
        }
    }

    /// A window from stored parts, if they are consistent with each other and with
    /// `capacity` (else `None`: the caller rebuilds it from the hashes). The tag bytes are
    /// checked against the hashes and the table packed again (reusing `slots`' memory).
    pub fn from_parts(
        capacity: usize,
        ring: Vec<u128>,
        head: usize,
        tags: Vec<u8>,
        slots: Vec<u32>,
    ) -> Option<Window> {
        let n = tags.len();
        let fits = ring.len() <= capacity
            && (head == 0 || head < ring.len())
            && (ring.len() == capacity || head == 0)
            && slots.len() == n
            && n * MAX_LOAD_FIFTHS >= ring.len() * 5
            && n > ring.len();
        if !fits {
            return None;
        }
        // Each used bucket names a slot of the ring, one bucket a slot, with its hash's tag.
        let mut named = vec![false; ring.len()];
        for (&t, &s) in tags.iter().zip(&slots) {
            if t == 0 {
                continue;
            }
            let hash = ring.get(s as usize)?;
            if t != stored_tag_of(*hash) || std::mem::replace(&mut named[s as usize], true) {
                return None;
            }
        }
        if !named.iter().all(|&n| n) {
            return None;
        }
        let mut w = Window::new(capacity);
        w.ring = ring;
        w.head = head;
        let mut buckets = slots;
        for (b, &t) in buckets.iter_mut().zip(&tags) {
            *b = match t {
                0 => 0,
                _ => w.key(w.ring[*b as usize], *b as usize),
            };
        }
        w.buckets = buckets;
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
                assert_eq!(a.parts(), b.parts(), "capacity {capacity}, id {i}");
            }
        }
    }

    /// The table as the snapshot stores it: tag bytes and slots.
    fn stored(w: &Window) -> (Vec<u8>, Vec<u32>) {
        let (_, _, buckets) = w.parts();
        let tags = buckets.iter().map(|&b| w.stored_tag(b)).collect();
        let slots = buckets.iter().map(|&b| w.stored_slot(b)).collect();
        (tags, slots)
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
        let (tags, slots) = stored(&w);
        let (ring, head, _) = w.parts();
        let copy =
            Window::from_parts(cap, ring.to_vec(), head, tags.to_vec(), slots.to_vec()).unwrap();
        assert!((15_000..20_000).all(|i| copy.contains(h(i))));
        assert!(
            Window::from_parts(cap, ring.to_vec(), cap, tags.to_vec(), slots.to_vec()).is_none()
        );
        assert!(
            Window::from_parts(cap - 1, ring.to_vec(), head, tags.to_vec(), slots.to_vec())
                .is_none()
        );
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
            for (n, &(insert, kind, i)) in ops.iter().enumerate() {
                let hash = pick(kind, i);
                if insert {
                    let new = cap > 0 && !model.contains(&hash);
                    if new {
                        if model.len() == cap {
                            model.pop_front();
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
            let (tags, slots) = stored(&w);
            let (ring, head, _) = w.parts();
            // A window that never held a table (nothing inserted) is rebuilt from its hashes.
            let Some(mut copy) = Window::from_parts(cap, ring.to_vec(), head, tags, slots) else {
                proptest::prop_assert!(w.parts().2.is_empty());
                return Ok(());
            };
            for (kind, i) in (0..3).flat_map(|k| (390..450).map(move |i| (k, i))) {
                let hash = pick(kind, i);
                proptest::prop_assert_eq!(copy.insert(hash), w.insert(hash));
                proptest::prop_assert!(copy.oldest_first().eq(w.oldest_first()));
            }
            proptest::prop_assert!(w.oldest_first().all(|m| copy.contains(m)));
        }
    }

    #[test]
    fn damaged_parts_are_refused() {
        let cap = 50;
        let mut w = Window::new(cap);
        for i in 0..80 {
            w.insert(h(i));
        }
        let (tags, slots) = stored(&w);
        let (ring, head, _) = w.parts();
        let ok = |tags: Vec<u8>, slots: Vec<u32>| {
            Window::from_parts(cap, ring.to_vec(), head, tags, slots).is_some()
        };
        assert!(ok(tags.clone(), slots.clone()));
        let used = tags.iter().position(|&t| t != 0).unwrap();
        let other = tags.iter().rposition(|&t| t != 0).unwrap();
        // A wrong tag, a slot out of the ring, two buckets of one slot, a bucket missing.
        let mut t = tags.clone();
        t[used] ^= 1;
        assert!(!ok(t, slots.clone()));
        let mut s = slots.clone();
        s[used] = cap as u32;
        assert!(!ok(tags.clone(), s));
        let mut s = slots.clone();
        s[other] = s[used];
        let mut t = tags.clone();
        t[other] = t[used];
        assert!(!ok(t, s));
        let mut t = tags.clone();
        t[used] = 0;
        assert!(!ok(t, slots.clone()));
        assert!(!ok(tags[1..].to_vec(), slots.clone()));
        // The slots of empty buckets are not looked at.
        let mut s = slots.clone();
        let empty = tags.iter().position(|&t| t == 0).unwrap();
        s[empty] = u32::MAX;
        assert!(ok(tags, s));
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

    /// The window as it was before its buckets were packed (tags and slots apart), to
    /// check that the snapshot stores the table as it always did.
    mod old {
        use super::super::MAX_LOAD_FIFTHS;

        /// The window.
        #[derive(Default)]
        pub struct Old {
            /// Hashes; once `ring.len() == capacity`, `head` is the oldest.
            ring: Vec<u128>,
            head: usize,
            capacity: usize,
            /// Per bucket: 0 for empty, else `0x80 | 7 bits of the hash`.
            tags: Vec<u8>,
            /// Per bucket: the ring slot of its hash.
            slots: Vec<u32>,
        }

        fn tag_of(hash: u128) -> u8 {
            0x80 | (hash >> 121) as u8
        }

        impl Old {
            /// An empty window for `capacity` ids (at most `u32::MAX`; more are clamped).
            pub fn new(capacity: usize) -> Old {
                Old {
                    capacity: capacity.min(u32::MAX as usize),
                    ..Old::default()
                }
            }

            fn home(&self, hash: u128) -> usize {
                // Multiply-shift maps the (uniform) low half onto any table size.
                ((hash as u64 as u128 * self.tags.len() as u128) >> 64) as usize
            }

            fn find(&self, hash: u128) -> Option<usize> {
                let n = self.tags.len();
                if n == 0 {
                    return None;
                }
                let tag = tag_of(hash);
                let mut at = self.home(hash);
                for _ in 0..n {
                    match self.tags[at] {
                        0 => return None,
                        t if t == tag && self.ring.get(self.slots[at] as usize) == Some(&hash) => {
                            return Some(at);
                        }
                        _ => at = if at + 1 == n { 0 } else { at + 1 },
                    }
                }
                None
            }

            /// The bucket holding ring slot `slot` (whose hash is `hash`). By slot, not by hash: a
            /// damaged snapshot may hold one hash twice, and each bucket must leave with its own slot.
            fn bucket_of_slot(&self, hash: u128, slot: u32) -> Option<usize> {
                let n = self.tags.len();
                let mut at = self.home(hash);
                for _ in 0..n {
                    match self.tags[at] {
                        0 => return None,
                        _ if self.slots[at] == slot => return Some(at),
                        _ => at = if at + 1 == n { 0 } else { at + 1 },
                    }
                }
                None
            }

            /// Whether `hash` is in the window.
            pub fn contains(&self, hash: u128) -> bool {
                self.find(hash).is_some()
            }

            fn place(&mut self, hash: u128, slot: u32) {
                let n = self.tags.len();
                let mut at = self.home(hash);
                while self.tags[at] != 0 {
                    at = if at + 1 == n { 0 } else { at + 1 };
                }
                self.tags[at] = tag_of(hash);
                self.slots[at] = slot;
            }

            /// Empty bucket `at`, shifting back the entries after it that may move closer to home.
            fn remove_bucket(&mut self, mut at: usize) {
                let n = self.tags.len();
                self.tags[at] = 0;
                let mut next = if at + 1 == n { 0 } else { at + 1 };
                while self.tags[next] != 0 {
                    let home = self
                        .ring
                        .get(self.slots[next] as usize)
                        .map_or(next, |&h| self.home(h));
                    // Move when the hole lies on the way from home to `next` (cyclically).
                    let dist = |from: usize, to: usize| (to + n - from) % n;
                    if dist(home, next) >= dist(at, next) {
                        self.tags[at] = self.tags[next];
                        self.slots[at] = self.slots[next];
                        self.tags[next] = 0;
                        at = next;
                    }
                    next = if next + 1 == n { 0 } else { next + 1 };
                }
            }

            /// Size the table for `ring_capacity` ids and place every id again.
            fn rebuild(&mut self, ring_capacity: usize) {
                let buckets = (ring_capacity * 5).div_ceil(MAX_LOAD_FIFTHS).max(8);
                self.tags = vec![0; buckets];
                self.slots = vec![0; buckets];
                for slot in 0..self.ring.len() {
                    let hash = self.ring[slot];
                    self.place(hash, slot as u32);
                }
            }

            /// Remember `hash` (nothing if it is there already), forgetting the oldest beyond the
            /// capacity.
            pub fn insert(&mut self, hash: u128) {
                if self.capacity == 0 || self.contains(hash) {
                    return;
                }
                if self.ring.len() < self.capacity {
                    if self.ring.len() == self.ring.capacity() {
                        // Grow by a quarter (not double), up to the capacity: the ring is most of the
                        // window's memory, so its slack stays small.
                        let want = (self.ring.len() + self.ring.len() / 4)
                            .max(1024)
                            .min(self.capacity);
                        self.ring.reserve_exact(want - self.ring.len());
                    }
                    if self.ring.len() * 5 >= self.tags.len() * MAX_LOAD_FIFTHS {
                        // The table grows four times over (up to the capacity's size), not a quarter
                        // with the ring: each rebuild places every id again, each at a random bucket of
                        // a table larger than the CPU's caches (growing with the ring, the ids of a
                        // million-id window were placed five million times on the way, ~1 % of the
                        // writer's time on W1). A full window's table is the same either way.
                        let ids = (self.ring.len() * 4)
                            .min(self.capacity)
                            .max(self.ring.capacity());
                        self.rebuild(ids);
                    }
                    let slot = self.ring.len() as u32;
                    self.ring.push(hash);
                    self.place(hash, slot);
                    return;
                }
                let slot = self.head;
                let old = self.ring[slot];
                if let Some(at) = self.bucket_of_slot(old, slot as u32) {
                    self.remove_bucket(at);
                }
                self.ring[slot] = hash;
                self.place(hash, slot as u32);
                self.head = if slot + 1 == self.capacity {
                    0
                } else {
                    slot + 1
                };
            }
        }

        impl Old {
            pub fn parts(&self) -> (&[u8], &[u32]) {
                (&self.tags, &self.slots)
            }
        }
    }

    #[test]
    fn the_snapshot_stores_the_table_as_before() {
        for (cap, n) in [
            (1, 5),
            (7, 40),
            (100, 1000),
            (5000, 12_000),
            (20_000, 15_000),
        ] {
            let mut w = Window::new(cap);
            let mut o = old::Old::new(cap);
            for i in 0..n {
                // Duplicates and colliding homes and tags among them.
                for hash in [h(i), h(i / 2), pick(1, i % 300), pick(2, i % 50)] {
                    w.insert(hash);
                    o.insert(hash);
                }
            }
            let (tags, slots) = stored(&w);
            let (old_tags, old_slots) = o.parts();
            assert_eq!(tags, old_tags, "{cap}");
            // An empty bucket's slot is not read back (the old table kept a stale one there).
            for ((&t, &s), &os) in tags.iter().zip(&slots).zip(old_slots) {
                if t != 0 {
                    assert_eq!(s, os, "{cap}");
                }
            }
        }
    }

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut w = Window::new(0);
        w.insert(h(1));
        assert!(!w.contains(h(1)));
        assert_eq!(w.heap_bytes(), 0);
    }
}
