//! The dynamic guard (issue 16, docs/journal.md "Guard"): an email or anonymous id that moves
//! between identified profiles (the protection rule) is linked to each of their user ids; one
//! that would be linked to more than `Options::guard_max_user_ids` distinct user ids within
//! `Options::guard_window` is quarantined: calls carrying it neither merge nor move through it.
//!
//! State: the link events of identifiers that moved (entry kind 21, live while inside the
//! window and the identifier is not quarantined), and the quarantined identifiers (kind 22,
//! live while listed). Identifiers are kept as 128-bit hashes (`"guard:email"` over the
//! normalised email, `"guard:anonymous_id"`), plus the quarantined identifier's text so that
//! an admin can list and release it.

use super::HashMap;
use crate::storage::Location;

/// Link events and quarantined identifiers.
#[derive(Debug, Clone, Default)]
pub(crate) struct Guard {
    /// Identifier hash -> (user id hash, time in microseconds, entry location), oldest first.
    links: HashMap<u128, Vec<(u64, i64, Location)>>,
    /// Identifier hash -> (kind and text, e.g. `email:x@y.z`, entry location).
    quarantined: HashMap<u128, (String, Location)>,
    /// Most distinct user ids one identifier may link within the window (0: guard off).
    pub max_user_ids: usize,
    /// The window in microseconds.
    pub window_us: i64,
}

impl Guard {
    /// Whether the guard is on.
    pub fn enabled(&self) -> bool {
        self.max_user_ids > 0
    }

    /// Whether any identifier is quarantined (none: a call's identifiers need not be hashed
    /// to be looked up).
    pub fn any_quarantined(&self) -> bool {
        !self.quarantined.is_empty()
    }

    /// Whether an identifier is quarantined.
    pub fn is_quarantined(&self, ident: u128) -> bool {
        self.quarantined.contains_key(&ident)
    }

    /// Distinct user ids linked to `ident` since `since`, with `extra` added.
    pub fn distinct(&self, ident: u128, since: i64, extra: &[u64]) -> usize {
        let mut ids: Vec<u64> = self
            .links
            .get(&ident)
            .map(|l| {
                l.iter()
                    .filter(|e| e.1 >= since)
                    .map(|e| e.0)
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        ids.extend_from_slice(extra);
        ids.sort_unstable();
        ids.dedup();
        ids.len()
    }

    /// A link event appended or replayed.
    pub fn link(&mut self, ident: u128, user: u64, time: i64, at: Location) {
        self.links.entry(ident).or_default().push((user, time, at));
    }

    /// A quarantine appended or replayed.
    pub fn quarantine(&mut self, ident: u128, text: String, at: Location) {
        self.links.remove(&ident);
        self.quarantined.insert(ident, (text, at));
    }

    /// Release a quarantined identifier (its entries become dead). Whether it was.
    pub fn release(&mut self, ident: u128) -> bool {
        self.links.remove(&ident);
        self.quarantined.remove(&ident).is_some()
    }

    /// Quarantined identifiers (`email:...` / `anonymous_id:...`), sorted.
    pub fn list(&self) -> Vec<String> {
        let mut v: Vec<String> = self.quarantined.values().map(|q| q.0.clone()).collect();
        v.sort();
        v
    }

    /// Whether a link entry is live (listed, inside the window as of `now`).
    pub fn link_live(&self, ident: u128, at: Location, now: i64) -> bool {
        self.links.get(&ident).is_some_and(|l| {
            l.iter()
                .any(|e| e.2 == at && e.1 >= now.saturating_sub(self.window_us))
        })
    }

    /// Whether a quarantine entry is live.
    pub fn quarantine_live(&self, ident: u128, at: Location) -> bool {
        self.quarantined.get(&ident).is_some_and(|q| q.1 == at)
    }

    /// Entries moved by compaction, all at once (one pass): `old -> new`.
    pub fn relocate_all(&mut self, moved: &HashMap<Location, Location>) {
        for l in self.links.values_mut() {
            for e in l.iter_mut() {
                if let Some(&new) = moved.get(&e.2) {
                    e.2 = new;
                }
            }
        }
        for q in self.quarantined.values_mut() {
            if let Some(&new) = moved.get(&q.1) {
                q.1 = new;
            }
        }
    }

    /// After a compaction switched: forget link events left in its inputs (dropped).
    pub fn forget_segments(&mut self, inputs: &[u32]) {
        self.links.retain(|_, l| {
            l.retain(|e| inputs.binary_search(&e.2.segment).is_err());
            !l.is_empty()
        });
    }

    /// Snapshot bytes: links count u64, each `ident u128, n u32, n x (user u64, time i64,
    /// loc)`; quarantined count u64, each `ident u128, loc, text length u32, text`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let loc = |out: &mut Vec<u8>, l: &Location| {
            out.extend_from_slice(&l.segment.to_le_bytes());
            out.extend_from_slice(&l.offset.to_le_bytes());
            out.extend_from_slice(&l.len.to_le_bytes());
        };
        out.extend_from_slice(&(self.links.len() as u64).to_le_bytes());
        for (ident, l) in &self.links {
            out.extend_from_slice(&ident.to_le_bytes());
            out.extend_from_slice(&(l.len() as u32).to_le_bytes());
            for (u, t, at) in l {
                out.extend_from_slice(&u.to_le_bytes());
                out.extend_from_slice(&t.to_le_bytes());
                loc(out, at);
            }
        }
        out.extend_from_slice(&(self.quarantined.len() as u64).to_le_bytes());
        for (ident, (text, at)) in &self.quarantined {
            out.extend_from_slice(&ident.to_le_bytes());
            loc(out, at);
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }

    /// Read what [`Guard::encode`] wrote from `b[*at..]`; `None` on any damage (the caller
    /// then ignores the whole hint).
    pub fn decode(b: &[u8], at: &mut usize) -> Option<Guard> {
        fn take<'a>(b: &'a [u8], at: &mut usize, n: usize) -> Option<&'a [u8]> {
            let s = b.get(*at..at.checked_add(n)?)?;
            *at += n;
            Some(s)
        }
        fn u32_(b: &[u8], at: &mut usize) -> Option<u32> {
            Some(u32::from_le_bytes(take(b, at, 4)?.try_into().ok()?))
        }
        fn u64_(b: &[u8], at: &mut usize) -> Option<u64> {
            Some(u64::from_le_bytes(take(b, at, 8)?.try_into().ok()?))
        }
        fn u128_(b: &[u8], at: &mut usize) -> Option<u128> {
            Some(u128::from_le_bytes(take(b, at, 16)?.try_into().ok()?))
        }
        fn loc(b: &[u8], at: &mut usize) -> Option<Location> {
            Some(Location {
                segment: u32_(b, at)?,
                offset: u32_(b, at)?,
                len: u32_(b, at)?,
            })
        }
        let mut g = Guard::default();
        let n = u64_(b, at)?;
        if n.saturating_mul(20) > b.len() as u64 {
            return None;
        }
        for _ in 0..n {
            let ident = u128_(b, at)?;
            let k = u32_(b, at)? as usize;
            if k.saturating_mul(28) > b.len() - *at {
                return None;
            }
            let mut l = Vec::with_capacity(k);
            for _ in 0..k {
                l.push((u64_(b, at)?, u64_(b, at)? as i64, loc(b, at)?));
            }
            g.links.insert(ident, l);
        }
        let n = u64_(b, at)?;
        if n.saturating_mul(32) > b.len() as u64 {
            return None;
        }
        for _ in 0..n {
            let ident = u128_(b, at)?;
            let l = loc(b, at)?;
            let len = u32_(b, at)? as usize;
            let text = std::str::from_utf8(take(b, at, len)?).ok()?.to_string();
            g.quarantined.insert(ident, (text, l));
        }
        Some(g)
    }
}
