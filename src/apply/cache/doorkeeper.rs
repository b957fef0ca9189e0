//! Which profiles the writer cache refused lately: the doorkeeper of its admission
//! (docs/architecture.md, "Which profiles the writer cache keeps"). A full cache keeps a
//! profile that did not come from it (a new one, or a miss) only at the cost of another; the
//! doorkeeper lets it in only if it was refused once already, recently: a profile called once
//! and not again (most of W1's cold people) never takes a hot one's place. The idea is 2Q's
//! list of keys seen once (Johnson and Shasha, 1994) and TinyLFU's doorkeeper (Einziger,
//! Friedman and Manes, 2017), kept exact: the keys, in two generations of a fixed size.

use crate::index::HashSet;

pub(crate) struct Doorkeeper {
    now: HashSet<u64>,
    before: HashSet<u64>,
    generation: usize,
}

impl Doorkeeper {
    /// A doorkeeper remembering the last `generation` to `2 * generation` keys it refused.
    pub fn new(generation: usize) -> Doorkeeper {
        let generation = generation.max(1);
        let set = || HashSet::with_capacity_and_hasher(generation, Default::default());
        Doorkeeper {
            now: set(),
            before: set(),
            generation,
        }
    }

    /// Bytes the doorkeeper's two sets take as made (removals may leave tombstones that grow a
    /// table later; at most half full and emptied every other generation, they do not in
    /// practice): their tables' buckets (a key and a control byte
    /// each; the tables are made once, at their full size, and emptied in place).
    pub fn bytes(generation: usize) -> usize {
        // hashbrown's buckets for `n` keys: 4 or 8 for a few, else a power of two at most
        // 7/8 full; a control byte each and a group's (16) more.
        let n = generation.max(1);
        let buckets = match n {
            0..4 => 4,
            4..8 => 8,
            _ => (n * 8).div_ceil(7).next_power_of_two(),
        };
        2 * (buckets * (size_of::<u64>() + 1) + 16)
    }

    /// Whether `key` was refused lately: if so it is let in (and forgotten), otherwise noted
    /// as refused once.
    pub fn admit(&mut self, key: u64) -> bool {
        if self.now.remove(&key) || self.before.remove(&key) {
            return true;
        }
        if self.now.len() >= self.generation {
            std::mem::swap(&mut self.now, &mut self.before);
            self.now.clear();
        }
        self.now.insert(key);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against a model (every refusal, in order): a key is let in when at most
        /// `generation` refusals came after its last one, and not when more than
        /// `2 * generation` did with no key let in meanwhile (letting a key in shrinks a
        /// generation, so it is remembered longer); a key never refused, or let in since it
        /// last was, is refused.
        #[test]
        fn a_key_refused_lately_is_let_in(
            generation in 1usize..8,
            keys in proptest::collection::vec(0u64..24, 0..300),
        ) {
            let mut door = Doorkeeper::new(generation);
            let mut refusals = 0usize;
            let mut last_refused = std::collections::HashMap::<u64, usize>::new();
            let mut last_admission: Option<usize> = None;
            for k in keys {
                let admitted = door.admit(k);
                match last_refused.get(&k) {
                    None => prop_assert!(!admitted, "{k} not refused since it was let in"),
                    Some(&at) => {
                        let since = refusals - at - 1;
                        if since <= generation {
                            prop_assert!(admitted, "{k}: {since} refusals since");
                        }
                        if since > 2 * generation && last_admission.is_none_or(|a| a <= at) {
                            prop_assert!(!admitted, "{k}: {since} refusals since");
                        }
                    }
                }
                if admitted {
                    last_refused.remove(&k);
                    last_admission = Some(refusals);
                } else {
                    last_refused.insert(k, refusals);
                    refusals += 1;
                }
            }
        }
    }

    /// The bytes counted cover what the sets allocated.
    #[test]
    fn the_bytes_counted_cover_the_sets() {
        for generation in [1, 7, 100, 128, 4096, 1 << 16] {
            let door = Doorkeeper::new(generation);
            // A table of `b` buckets holds `b - 1` keys (fewer than 8 buckets) or `7b / 8`.
            let capacity = door.now.capacity().max(door.before.capacity());
            let buckets = (capacity + 1).next_power_of_two();
            assert!(
                Doorkeeper::bytes(generation) >= 2 * (buckets * (size_of::<u64>() + 1) + 16),
                "{generation}: {capacity} keys"
            );
        }
    }
}
