//! A batch's coming calls, loaded into the CPU's caches while the present one is applied
//! ([`crate::Db::apply_batch`]).
//!
//! Most of a W1 call's loads that miss the CPU's caches are chains of dependent loads: an
//! identifier's table entry, then the identifier's bytes and the profile's key, then the
//! profile's location and its entry in the writer cache's table, then its cache slot, then
//! the cached records. Each waits for the one before, so a call alone cannot overlap them.
//! A batch knows its coming calls, so it walks those chains as a software pipeline: as call
//! `i` begins, it takes one step of each of the next four calls' chains, a different step
//! for each (the records of call `i + 1`, the slot of `i + 2`, the location and table entry
//! of `i + 3`, the identifiers of `i + 4`). The four steps do not depend on each other, so
//! their misses overlap, and each finds in the cache what the step before it loaded one
//! call earlier. The loads are plain reads whose values are dropped
//! (`std::hint::black_box`): the processor goes on with call `i` while they are outstanding.
//! Nothing here changes a thing; a step that loads the wrong line (the index changed since
//! the step before) only costs a load.

use crate::index::Index;
use crate::profile::message::Message;

use super::ProfileCache;

/// How many calls ahead the pipeline starts (its steps).
const DEPTH: usize = 4;

/// The pipeline over a batch's calls.
pub(crate) struct Ahead<'a> {
    calls: &'a [&'a Message],
    /// The call to be applied next.
    at: usize,
    /// The profile key of call `j` at `j % DEPTH`, from the first step of its chain; `None`
    /// when its identifiers named none (yet).
    keys: [Option<u64>; DEPTH],
}

impl<'a> Ahead<'a> {
    /// A pipeline over `calls`, before the first is applied.
    pub fn new(calls: &'a [&'a Message]) -> Ahead<'a> {
        Ahead {
            calls,
            at: 0,
            keys: [None; DEPTH],
        }
    }

    /// Call `at` is the next to be applied.
    pub fn set_at(&mut self, at: usize) {
        self.at = at;
    }

    /// As the next call begins (index and cache locked): one step of each coming call's
    /// chain. (A call that stops before, a duplicate, takes none.)
    pub fn step(&mut self, index: &Index, cache: &ProfileCache) {
        let at = self.at;
        let key = |ahead: &Self, d: usize| ahead.keys[(at + d) % DEPTH];
        if let Some(k) = key(self, 1) {
            cache.touch_chain(k);
        }
        if let Some(k) = key(self, 2) {
            cache.touch_slot(k);
        }
        if let Some(k) = key(self, 3) {
            index.touch(None, Some(k));
            cache.touch_key(k);
        }
        // Call `at`'s own key is no longer needed: its place takes call `at + DEPTH`'s.
        self.keys[at % DEPTH] = self
            .calls
            .get(at + DEPTH)
            .and_then(|call| identifiers(index, call));
    }
}

/// The first step of a call's chain: its own memory, its messageId's bucket in the dedupe
/// window, and its identifiers' look-ups (these wait for their loads): the key of the profile
/// they name, as a duplicate's answer finds it (`Builder::current_key`).
fn identifiers(index: &Index, next: &Message) -> Option<u64> {
    if let Message::Identify(call) = next {
        for (name, _) in &call.traits {
            std::hint::black_box(name.len());
        }
    }
    index.touch(next.message_id().map(super::message_hash), None);
    Some(super::Builder::current_key(index, next)).filter(|&key| key != 0)
}
