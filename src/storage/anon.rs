//! Lists of fixed-size records kept in anonymous memory maps, outside the allocator: for the
//! large lists a compaction builds and drops (`Places`, a list per input segment, 12 bytes a
//! move, and `Moves`, 33 bytes a move: megabytes each on W1).
//!
//! Why not a `Vec`: under glibc's malloc, freeing a block that malloc had mapped by itself
//! (128 KiB or more) raises its mmap threshold to that block's size (up to 32 MiB). After the
//! first compaction had dropped its lists, every allocation below their size came from
//! malloc's heaps instead, and what the next compactions freed there stayed resident: ~10-20
//! MB of `compare`'s peak RSS (docs/performance.md, "Engine round 33"). A list here takes
//! pages from the kernel as it fills them and gives them back when dropped, whatever the
//! process's allocator is. Anonymous maps need no `unsafe` (`memmap2::MmapMut::map_anon`).

use memmap2::MmapMut;

/// Bytes the first map of a list takes (pages are resident only once written).
const FIRST_MAP: usize = 256 << 10;

/// A growable list of `N`-byte records in an anonymous map. It grows by doubling into a new
/// map: the old one is copied, then unmapped, so a list briefly holds its records twice while
/// it grows (a `Vec` under glibc would be remapped in place, but `memmap2`'s remap is
/// `unsafe`).
#[derive(Debug, Default)]
pub(crate) struct MapList<const N: usize> {
    map: Option<MmapMut>,
    len: usize,
    /// Records the first map is sized for (its pages are resident only once written).
    first: usize,
}

impl<const N: usize> MapList<N> {
    /// An empty list whose first map holds `n` records.
    pub fn with_capacity(n: usize) -> Self {
        MapList {
            map: None,
            len: 0,
            first: n,
        }
    }

    /// Append `record`. An error only if the kernel refuses the map (out of address space
    /// or memory).
    pub fn push(&mut self, record: [u8; N]) -> std::io::Result<()> {
        let at = self.len * N;
        let capacity = self.map.as_ref().map_or(0, |m| m.len());
        if at + N > capacity {
            let bigger = capacity
                .saturating_mul(2)
                .max(FIRST_MAP)
                .max(self.first.saturating_mul(N))
                .max(at + N);
            let mut map = MmapMut::map_anon(bigger)?;
            if let Some(old) = &self.map {
                map[..at].copy_from_slice(&old[..at]);
            }
            self.map = Some(map);
        }
        if let Some(map) = &mut self.map {
            map[at..at + N].copy_from_slice(&record);
            self.len += 1;
        }
        Ok(())
    }

    /// The records, in order.
    pub fn as_slice(&self) -> &[[u8; N]] {
        match &self.map {
            Some(map) => map[..self.len * N].as_chunks::<N>().0,
            None => &[],
        }
    }

    /// Sort the records by `key`, in place (no buffer from the allocator).
    pub fn sort_by_key<K: Ord>(&mut self, key: impl Fn(&[u8; N]) -> K) {
        if let Some(map) = &mut self.map {
            map[..self.len * N]
                .as_chunks_mut::<N>()
                .0
                .sort_unstable_by_key(|r| key(r));
        }
    }

    /// Bytes of memory it maps (its resident part is what was written, rounded to pages).
    #[cfg(test)]
    pub fn mapped_bytes(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_back_in_order_across_growths() {
        let mut list = MapList::<12>::default();
        assert!(list.as_slice().is_empty());
        assert_eq!(list.as_slice().first(), None);
        let n = 3 * FIRST_MAP / 12 + 7;
        for i in 0..n as u32 {
            let mut r = [0u8; 12];
            r[..4].copy_from_slice(&i.to_le_bytes());
            r[8..].copy_from_slice(&(i ^ 0xdead_beef).to_le_bytes());
            list.push(r).unwrap();
        }
        assert_eq!(list.as_slice().len(), n);
        assert!(list.mapped_bytes() >= n * 12 && list.mapped_bytes() <= 4 * n * 12);
        for (i, r) in list.as_slice().iter().enumerate() {
            assert_eq!(u32::from_le_bytes(r[..4].try_into().unwrap()), i as u32);
            assert_eq!(
                u32::from_le_bytes(r[8..].try_into().unwrap()),
                i as u32 ^ 0xdead_beef
            );
        }
        assert_eq!(list.as_slice().get(n), None);
    }

    #[test]
    fn sorting_orders_by_the_key() {
        let mut list = MapList::<4>::default();
        for v in [5u32, 1, 4, 2, 3] {
            list.push(v.to_le_bytes()).unwrap();
        }
        list.sort_by_key(|r| u32::from_le_bytes(*r));
        let got: Vec<u32> = list
            .as_slice()
            .iter()
            .map(|r| u32::from_le_bytes(*r))
            .collect();
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }
}
