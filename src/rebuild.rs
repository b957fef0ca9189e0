//! Rebuilding the index on open: the hint snapshot, then the frames after it, then the
//! identifiers of every profile the replay touched, read from their final records.
//!
//! Identifiers are taken from final records only (never from the superseded versions on the
//! way), which is unambiguous: in the final state each identifier belongs to at most one
//! profile.

use crate::entries::{self, CompanyRecord, Ids, kind};
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
}

impl Rebuild {
    pub fn new(dedupe_window: usize) -> Rebuild {
        Rebuild {
            index: Index::default(),
            touched: HashMap::default(),
            dedupe_window,
        }
    }

    fn touch(&mut self, key: u64) {
        let before = self.index.profiles.get(&key).copied();
        self.touched.entry(key).or_insert(before);
    }

    /// After the store is open: fix the identifier maps of every touched profile.
    pub fn finish(mut self, store: &Store) -> Result<Index> {
        let touched = std::mem::take(&mut self.touched);
        // First forget what the snapshot said about them, then learn the final state.
        for (&key, before) in &touched {
            if let Some(loc) = before {
                let ids = read_ids(store, *loc)?;
                self.index.unindex(key, &ids);
            }
        }
        for &key in touched.keys() {
            if let Some(&loc) = self.index.profiles.get(&key) {
                let ids = read_ids(store, loc)?;
                ensure_company(&mut self.index, ids.company_id.as_deref());
                self.index.index(key, &ids);
            }
        }
        Ok(self.index)
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
    store.read(loc, |bytes| {
        entries::decode::<Ids>(bytes, "profile identifiers")
    })?
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
            match e.kind {
                kind::PROFILE => {
                    self.touch(e.id);
                    self.index.profiles.insert(e.id, e.location);
                    self.index.next_key = self.index.next_key.max(e.id.saturating_add(1));
                }
                kind::TOMBSTONE => {
                    self.touch(e.id);
                    self.index.profiles.remove(&e.id);
                    self.index.next_key = self.index.next_key.max(e.id.saturating_add(1));
                }
                kind::REDIRECT => {
                    let to = entries::read_u64(e.data, "redirect")?;
                    self.index.redirects.insert(e.id, (to, e.location));
                    self.index.next_key = self.index.next_key.max(e.id.saturating_add(1));
                }
                kind::COMPANY => {
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
                kind::PROP_NAME => {
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
                kind::DEDUPE => {
                    let h = entries::join_hash(e.id, e.data)?;
                    self.index
                        .remember_message(h, e.location, self.dedupe_window);
                }
                kind::SUPPRESS => {
                    let hi = entries::read_u64(e.data, "suppression")?;
                    self.index.suppressed.insert(e.id, (hi, e.location));
                }
                kind::NEXT_KEY => {
                    let next = entries::read_u64(e.data, "next key")?;
                    self.index.next_key = self.index.next_key.max(next);
                    self.index.next_key_location = Some(e.location);
                }
                _ => {}
            }
        }
        Ok(())
    }
}
