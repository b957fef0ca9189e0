//! Rebuilding the index on open: the hint snapshot, then the frames after it, then the
//! identifiers of every profile the replay touched, read from their final records.
//!
//! Identifiers are taken from final records only (never from the superseded versions on the
//! way), which is unambiguous: in the final state each identifier belongs to at most one
//! profile. A delta record carries all of a profile's identifiers when its call changed any,
//! so the newest record of a chain that has them is found by decoding record prefixes only
//! (`entries::chain::read_ids`).

use crate::entries::{self, CompanyRecord, EntryKind, Ids};
use crate::error::{Error, Result};
use crate::index::{CompanySlot, HashMap, Index};
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
    pub lost: Vec<String>,
}

impl Rebuild {
    pub fn new(dedupe_window: usize) -> Rebuild {
        Rebuild {
            index: Index::default(),
            touched: HashMap::default(),
            dedupe_window,
            repair: false,
            lost: Vec::new(),
        }
    }

    fn touch(&mut self, key: u64) {
        let before = self.index.profiles.get(&key).copied();
        self.touched.entry(key).or_insert(before);
    }

    /// After the store is open: fix the identifier maps of every touched profile.
    pub fn finish(mut self, store: &Store) -> Result<(Index, Vec<String>)> {
        let touched = std::mem::take(&mut self.touched);
        // First forget what the snapshot said about them, then learn the final state.
        for (&key, before) in &touched {
            if let Some(loc) = before {
                match read_ids(store, *loc) {
                    Ok(ids) => self.index.unindex(key, &ids),
                    // The snapshot's version lay in a quarantined segment: its identifiers
                    // are dropped below with the profile if they point at it.
                    Err(_) if self.repair => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for &key in touched.keys() {
            if let Some(&loc) = self.index.profiles.get(&key) {
                let ids = match read_ids(store, loc) {
                    Ok(ids) => ids,
                    Err(e) if self.repair => {
                        self.drop_lost(key, e);
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                ensure_company(&mut self.index, ids.company_id.as_deref());
                self.index.index(key, &ids);
            }
        }
        if self.repair {
            // A profile the replay did not touch may still have a chain through a
            // quarantined segment (its newest record came from the snapshot).
            let keys: Vec<(u64, Location)> =
                self.index.profiles.iter().map(|(k, l)| (*k, *l)).collect();
            for (key, loc) in keys {
                if let Err(e) = entries::chain::read_profile(store, loc) {
                    self.drop_lost(key, e);
                }
            }
        }
        Ok((self.index, self.lost))
    }

    /// Repair: forget a profile whose records were lost with a quarantined segment.
    fn drop_lost(&mut self, key: u64, e: Error) {
        self.index.profiles.remove(&key);
        for map in [
            &mut self.index.user,
            &mut self.index.email,
            &mut self.index.anon,
        ] {
            map.retain(|_, k| *k != key);
        }
        self.lost.push(format!(
            "profile {key} dropped by repair (its records were in a quarantined segment): {e}"
        ));
    }
}

/// Membership needs the company slot; a profile may name a company that has no record yet
/// only if the record was lost to repair. Create an empty slot so membership stays counted.
fn ensure_company(index: &mut Index, company: Option<&str>) {
    // A damaged log can claim company key 2^64-1 (open saturates at it; the `open_dir` fuzz
    // target found the `+= 1` here overflowing): then no slot is made (membership of that
    // company goes uncounted) rather than reusing a key; new companies are refused by `apply`.
    if let Some(cid) = company
        && !index.companies.contains_key(cid)
        && index.next_company_key < u64::MAX
    {
        let key = index.next_company_key;
        index.next_company_key += 1;
        index.company_ids.insert(key, cid.into());
        index.companies.insert(
            cid.into(),
            CompanySlot {
                key,
                ..CompanySlot::default()
            },
        );
    }
}

fn read_ids(store: &Store, loc: Location) -> Result<Ids> {
    entries::chain::read_ids(store, loc)
}

impl Replay for Rebuild {
    fn load_snapshot(&mut self, payload: &[u8]) -> Result<()> {
        self.index = entries::decode_serde(payload, "index snapshot")?;
        Ok(())
    }

    fn reset(&mut self) {
        self.index = Index::default();
        self.touched.clear();
    }

    fn apply(&mut self, seq: u64, batch: &[StoredEntry<'_>]) -> Result<()> {
        self.index.last_seq = self.index.last_seq.max(seq);
        for e in batch {
            let kind = EntryKind::try_from(e.kind).map_err(|k| Error::Decode {
                what: "entry kind",
                file: Default::default(),
                offset: e.location.offset as u64,
                reason: format!(
                    "kind {} in segment {} is not one this version writes (a newer profiledb?)",
                    k.0, e.location.segment
                ),
            })?;
            match kind {
                // A full record or a delta: either is the profile's newest version.
                EntryKind::Profile | EntryKind::ProfileDelta => {
                    self.touch(e.id);
                    self.index.profiles.insert(e.id, e.location);
                    self.index.next_key = self.index.next_key.max(e.id.saturating_add(1));
                }
                EntryKind::Tombstone => {
                    self.touch(e.id);
                    self.index.profiles.remove(&e.id);
                    self.index.next_key = self.index.next_key.max(e.id.saturating_add(1));
                }
                EntryKind::Redirect => {
                    let to = entries::read_u64(e.data, "redirect")?;
                    self.index.redirects.insert(e.id, (to, e.location));
                    self.index.next_key = self.index.next_key.max(e.id.saturating_add(1));
                }
                EntryKind::Company => {
                    let rec: CompanyRecord = entries::decode(e.data, "company")?;
                    let slot = self
                        .index
                        .companies
                        .entry(rec.id.as_str().into())
                        .or_default();
                    slot.key = e.id;
                    slot.location = e.location;
                    self.index.company_ids.insert(e.id, rec.id.into());
                    self.index.next_company_key =
                        self.index.next_company_key.max(e.id.saturating_add(1));
                }
                EntryKind::PropName => {
                    let name = String::from_utf8_lossy(e.data);
                    let id = e.id as usize;
                    // Names are numbered 0, 1, 2, ... as they are registered; a gap means
                    // names lost to a quarantined segment and is filled with placeholders. An
                    // id no writer could have given (beyond u32, or far beyond the names known)
                    // is damage: without this check `resize` tried to allocate up to 2^64
                    // placeholders and aborted the process (found by the `open_dir` fuzz target).
                    if e.id > u64::from(u32::MAX) || id > self.index.names.len() + MAX_NAME_GAP {
                        return Err(Error::Decode {
                            what: "property name",
                            file: Default::default(),
                            offset: e.location.offset as u64,
                            reason: format!(
                                "name id {} in segment {} is out of range ({} names known)",
                                e.id,
                                e.location.segment,
                                self.index.names.len()
                            ),
                        });
                    }
                    if self.index.names.len() <= id {
                        self.index
                            .names
                            .resize(id + 1, (Box::from(""), Location::default()));
                    }
                    self.index.names[id] = (name.as_ref().into(), e.location);
                    self.index.name_ids.insert(name.as_ref().into(), id as u32);
                }
                EntryKind::Dedupe => {
                    let h = entries::join_hash(e.id, e.data)?;
                    self.index
                        .remember_message(h, e.location, self.dedupe_window);
                }
                EntryKind::Suppress => {
                    let hi = entries::read_u64(e.data, "suppression")?;
                    self.index.suppressed.insert(e.id, (hi, e.location));
                }
                EntryKind::NextKey => {
                    let next = entries::read_u64(e.data, "next key")?;
                    self.index.next_key = self.index.next_key.max(next);
                    self.index.next_key_location = Some(e.location);
                }
            }
        }
        Ok(())
    }
}
