//! The messageId dedupe window: the newest `capacity` messageId hashes, in arrival order.
//!
//! 16 bytes of hash per id in a ring (oldest overwritten first), plus an open-addressing table
//! of ring slots: a 4-byte slot and a 1-byte tag per bucket, at most 80 % full (linear
//! probing, backward-shift deletion). About 22 bytes per id when the window is full. No
//! location is kept: a `DEDUPE` entry is live for compaction while its hash is in the window.

/// Most buckets filled, in fifths of the table.
const MAX_LOAD_FIFTHS: usize = 4;

/// The window.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
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

impl Window {
    /// An empty window for `capacity` ids (at most `u32::MAX`; more are clamped).
    pub fn new(capacity: usize) -> Window {
        Window {
            capacity: capacity.min(u32::MAX as usize),
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
        (self.ring.capacity() * 16 + self.tags.capacity() + self.slots.capacity() * 4) as u64
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
            _ => match self.find(hash) {
                Some(bucket) => self.slots[bucket] as usize,
                None => return false,
            },
        };
        *at = if slot + 1 == self.ring.len() {
            0
        } else {
            slot + 1
        };
        true
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

    /// The parts the snapshot stores: the ring as laid out, the slot of the oldest, and the
    /// table (its layout depends only on the hashes and its size, not on a per-process seed).
    pub fn parts(&self) -> (&[u128], usize, &[u8], &[u32]) {
        (&self.ring, self.head, &self.tags, &self.slots)
    }

    /// A window from stored parts, if they are consistent with each other and with
    /// `capacity` (else `None`: the caller rebuilds it from the hashes).
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
            && n > ring.len()
            && tags.iter().all(|&t| t == 0 || t >= 0x80)
            && tags
                .iter()
                .zip(&slots)
                .filter(|(t, _)| **t != 0)
                .all(|(_, &s)| (s as usize) < ring.len());
        let used = tags.iter().filter(|&&t| t != 0).count();
        (fits && used == ring.len()).then_some(Window {
            ring,
            head,
            capacity: capacity.min(u32::MAX as usize),
            tags,
            slots,
        })
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
        let (ring, head, tags, slots) = w.parts();
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
            if sizes.last() != Some(&w.tags.len()) {
                sizes.push(w.tags.len());
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

    #[test]
    fn a_zero_window_remembers_nothing() {
        let mut w = Window::new(0);
        w.insert(h(1));
        assert!(!w.contains(h(1)));
        assert_eq!(w.heap_bytes(), 0);
    }
}
