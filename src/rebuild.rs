//! Rebuilding the index on open: the hint snapshot, then the frames after it, then the
//! identifiers of every profile the replay touched, read from their final records.
//!
//! Identifiers are taken from final records only (never from the superseded versions on the
//! way), which is unambiguous: in the final state each identifier belongs to at most one
//! profile. A delta record carries all of a profile's identifiers when its call changed any,
//! so the newest record of a chain that has them is found by decoding record prefixes only
//! (`entries::chain::read_ids`).

use crate::entries::chain::Forwards;
use crate::entries::{self, CompanyRecord, EntryKind, Ids};
use crate::error::{Error, Result};
use crate::index::{HashMap, Index, Update};
use crate::storage::{Location, Replay, Store, StoredEntry};

/// Most property names a replay accepts as lost between two it knows (see `PROP_NAME` below):
/// far above any real store (the default name limit is 1,000), and small enough that the
/// placeholders (32 bytes each) cost at most 32 MiB.
const MAX_NAME_GAP: usize = 1 << 20;

/// The [`Replay`] target the Db hands to [`Store::open`].
pub(crate) struct Rebuild {
    pub index: Index,
    /// Profile keys touched by the replay, with their location in the snapshot (if any).
    touched: HashMap<u64, Option<Location>>,
    dedupe_window: usize,
    /// Open with repair: a profile whose chain runs through a quarantined segment is dropped
    /// (and listed in `lost`) instead of failing the open.
    pub repair: bool,
    /// Profiles dropped by repair, with why (reported by `Db::check`).
    lost: Vec<String>,
    /// Where the history table files a snapshot names are (the store's directory and I/O).
    files: (
        std::sync::Arc<dyn crate::storage::io::Io>,
        std::path::PathBuf,
    ),
}

impl Rebuild {
    pub fn new(
        dedupe_window: usize,
        io: std::sync::Arc<dyn crate::storage::io::Io>,
        dir: &std::path::Path,
    ) -> Rebuild {
        Rebuild {
            index: Index::new(dedupe_window),
            touched: HashMap::default(),
            dedupe_window,
            repair: false,
            lost: Vec::new(),
            files: (io, dir.to_path_buf()),
        }
    }

    fn touch(&mut self, key: u64) {
        let before = self.index.location(key);
        self.touched.entry(key).or_insert(before);
    }

    /// After the store is open: fix the identifier maps of every touched profile.
    /// Also returns the profiles a repair dropped (see [`Rebuild::repair`]).
    pub fn finish(mut self, store: &Store) -> Result<(Index, Vec<String>)> {
        let touched = std::mem::take(&mut self.touched);
        // A pair is used only when its old segment is gone and its new one is there. A
        // `FORWARD` entry of a compaction that did not switch in (a crash after the entry
        // was written and before the switch) names old places that still exist (the links
        // there stay where they are) and new ones in outputs the open deleted, whose ids a
        // later segment may take.
        if !self.index.forwards.is_empty() {
            std::sync::Arc::make_mut(&mut self.index.forwards).retain(|old, new| {
                !store.has_segment(old.segment) && store.has_segment(new.segment)
            });
        }
        // First forget what the snapshot said about them, then learn the final state.
        for (&key, before) in &touched {
            if let Some(loc) = before {
                match read_ids(store, &self.index.forwards, *loc) {
                    Ok(ids) => self.index.unindex_ids(key, &ids),
                    // The snapshot's version lay in a quarantined segment: its identifiers
                    // go below with the profile if they still point at it.
                    Err(_) if self.repair => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for &key in touched.keys() {
            if let Some(loc) = self.index.location(key) {
                match read_ids(store, &self.index.forwards, loc) {
                    Ok(ids) => self.index.index_ids(key, &ids),
                    Err(e) if self.repair => self.drop_lost(key, e),
                    Err(e) => return Err(e),
                }
            }
        }
        if self.repair {
            // A profile the replay did not touch may still have a chain through a
            // quarantined segment (its newest record came from the snapshot).
            let heads: Vec<(u64, Location)> = self.index.profiles().collect();
            for (key, loc) in heads {
                if let Err(e) = entries::chain::read_profile(store, &self.index.forwards, loc) {
                    self.drop_lost(key, e);
                }
            }
        }
        self.index.finish_open();
        Ok((self.index, self.lost))
    }

    /// Repair: forget a profile whose records were lost with a quarantined segment, as a
    /// full record in such a segment is lost.
    fn drop_lost(&mut self, key: u64, e: Error) {
        self.index.forget_profile(key);
        self.lost.push(format!(
            "profile {key} dropped by repair (its records were in a quarantined segment): {e}"
        ));
    }
}

/// The error for an entry packing many items (`what`) whose data did not decode: names its
/// segment and offset.
fn block_error(e: &StoredEntry<'_>, what: &'static str, reason: impl std::fmt::Display) -> Error {
    Error::Decode {
        what,
        file: Default::default(),
        offset: e.location.offset as u64,
        reason: format!("in segment {}: {reason}", e.location.segment),
    }
}

fn read_ids(store: &Store, forwards: &Forwards, loc: Location) -> Result<Ids> {
    entries::chain::read_ids(store, forwards, loc)
}

impl Replay for Rebuild {
    fn load_snapshot(&mut self, payload: &[u8]) -> Result<()> {
        self.index = Index::from_snapshot(payload, self.dedupe_window)?;
        // The history table files it names, checked whole: one missing or damaged refuses
        // the snapshot (the whole log is replayed, which lists every step again).
        let (io, dir) = &self.files;
        self.index.journal.attach(io, dir)
    }

    fn reset(&mut self) {
        self.index = Index::new(self.dedupe_window);
        self.touched.clear();
    }

    /// A sealed segment replayed: its history table goes to its file now, so that a replay
    /// of the whole log holds one segment's steps in memory, not the log's.
    fn sealed(&mut self, segment: u32) -> Result<()> {
        let (io, dir) = &self.files;
        self.index.journal.spill_replayed(io, dir, segment);
        Ok(())
    }

    fn apply(&mut self, seq: u64, batch: &[StoredEntry<'_>]) -> Result<()> {
        self.index.set_last_seq(seq);
        for e in batch {
            let company: CompanyRecord;
            let source;
            let name;
            let text: String;
            let kind = EntryKind::try_from(e.kind).map_err(|k| Error::Decode {
                what: "entry kind",
                file: Default::default(),
                offset: e.location.offset as u64,
                reason: format!(
                    "kind {} in segment {} is not one this version writes (a newer profiledb?)",
                    k.0, e.location.segment
                ),
            })?;
            let update = match kind {
                // A full record or a delta: either is the profile's newest version.
                EntryKind::Profile | EntryKind::ProfileDelta => {
                    self.touch(e.id);
                    Update::Profile { key: e.id }
                }
                EntryKind::Tombstone => {
                    self.touch(e.id);
                    Update::Tombstone { key: e.id }
                }
                EntryKind::Redirect => Update::Redirect {
                    from: e.id,
                    to: entries::read_u64(e.data, "redirect")?,
                },
                EntryKind::Company => {
                    company = entries::decode(e.data, "company")?;
                    Update::Company {
                        key: e.id,
                        id: &company.id,
                    }
                }
                EntryKind::PropName => {
                    name = String::from_utf8_lossy(e.data);
                    Update::Name {
                        id: self.name_id(e)?,
                        name: &name,
                    }
                }
                EntryKind::Dedupe => Update::Dedupe {
                    hash: entries::join_hash(e.id, e.data)?,
                },
                // Many messageIds in one entry (written by compaction), oldest first.
                EntryKind::DedupeBlock => {
                    let hashes = entries::hash_block(e.data)
                        .map_err(|err| block_error(e, "messageId block", err))?;
                    for hash in hashes {
                        self.index.apply(Update::Dedupe { hash }, e.location);
                    }
                    continue;
                }
                // Where the compaction that wrote it moved linked records (kept until the
                // next compaction replaces them; see `finish` for one that did not switch).
                EntryKind::Forward => {
                    let pairs = entries::forward_pairs(e.data)
                        .map_err(|reason| block_error(e, "forward entry", reason))?;
                    std::sync::Arc::make_mut(&mut self.index.forwards).extend(pairs);
                    continue;
                }
                EntryKind::Suppress => Update::Suppress {
                    hash: entries::join_hash(e.id, e.data)?,
                },
                EntryKind::NextKey => Update::NextKey {
                    next: entries::read_u64(e.data, "next key")?,
                },
                EntryKind::GuardLink => {
                    let (ident, user, time) = entries::guard::link(e.id, e.data)?;
                    Update::GuardLink { ident, user, time }
                }
                EntryKind::Quarantine => {
                    let (ident, t) = entries::guard::quarantine(e.id, e.data)?;
                    text = t;
                    Update::Quarantine { ident, text: &text }
                }
                EntryKind::History => Update::History {
                    key: e.id,
                    arrival: entries::history::arrival(e.data)?,
                },
                EntryKind::SourceOffset => {
                    let rec: entries::SourceRecord = entries::decode(e.data, "source offset")?;
                    source = rec.to_offset();
                    Update::Source {
                        id: e.id,
                        at: &source,
                    }
                }
            };
            self.index.apply(update, e.location);
        }
        Ok(())
    }
}

impl Rebuild {
    /// The number of a `PROP_NAME` entry, checked. Names are numbered 0, 1, 2, ... as they
    /// are registered; a gap means names lost to a quarantined segment (filled with
    /// placeholders by [`Index::apply`]). An id no writer could have given (beyond u32, or far
    /// beyond the names known) is damage: without this check the placeholders could take up
    /// to 2^64 slots and abort the process (found by the `open_dir` fuzz target).
    fn name_id(&self, e: &StoredEntry<'_>) -> Result<u32> {
        let known = self.index.name_count();
        match u32::try_from(e.id) {
            Ok(id) if (id as usize) <= known + MAX_NAME_GAP => Ok(id),
            _ => Err(Error::Decode {
                what: "property name",
                file: Default::default(),
                offset: e.location.offset as u64,
                reason: format!(
                    "name id {} in segment {} is out of range ({known} names known)",
                    e.id, e.location.segment,
                ),
            }),
        }
    }
}
