//! A cached profile as one "hot record": what the writer cache keeps of a profile the writers
//! came back to, so that a call reads and writes the states of its own names only, instead of
//! folding a chain of records and adding a delta to it (docs/write-path-next.md, the plan's
//! first phase).
//!
//! Never written to disk: the log keeps its full records and deltas; this is the cache's
//! private form of the same profile (docs/architecture.md, "The writer cache"):
//!
//! - `buf`: the identifiers as a full record writes them (`Wire for Ids`), then one slot per
//!   state: a room byte, the state as a compact full record writes it (`put_shaped_state`: a
//!   shape byte, the stamp index, the value's payload) with its stamp indexes into `stamps`,
//!   and padding up to the room ([`room_for`]: a quarter more than the state took; room 0: a
//!   state too long for a byte's room, exactly as long as it reads);
//! - `stamps`: the stamps the states name, in the order they were added (a call's own stamp is
//!   appended once, so every state it writes finds it at the end of the list);
//! - `dir`: each name the profile has a state of, sorted, with where its slot starts in `buf`.
//!
//! A call finds each of its names by bisection and captures (or decodes) that state alone
//! ([`Hot::decode_capturing`]). After the call, [`Hot::after`] writes each changed state: over
//! its slot when it fits the room (a value of about the same length), else into a new slot at
//! the end of `buf`, the old one dead. The record is compacted ([`Hot::compact`]: the live
//! slots copied in name order) when a state finds no room at the end and the dead bytes are an
//! eighth of the live ones, or when they pass half the live ones; when the stamps pass
//! [`MAX_STAMPS`], the compaction also drops the stamps no state names and renumbers the
//! states' indexes.
//!
//! The bytes were encoded by this process from decoded profiles; reading them still checks
//! every bound (a bug is a decode error, after which the caller reads the log), and nothing
//! here panics on them.

use crate::entries::profile::{
    FullHead, StateLens, check_ids, full_head, ids_into_text, put_full_head,
};
use crate::entries::raw::RawStates;
use crate::entries::values::{
    StampIndex, StampTable, Stamps, each_stamp, plain_set_variant, plain_shaped, put_plain_shaped,
    put_set_shaped, put_shaped_state, set_shaped, shaped_state, shaped_state_or_raw, skip_payload,
    skip_shaped_state,
};
use crate::entries::wire::{DecodeError, Decoded, Names, Reader, Utf8, Wire};
use crate::types::record::{Ids, ProfileRecord};
use crate::types::sorted::gallop_by_key;
use crate::types::state::{PropState, Stamp};
use crate::types::value::Timestamp;

/// Most stamps a hot record keeps before a compaction drops those no state names, or twice
/// those its states named at the last one, if more (so that a profile whose states name many
/// stamps is not compacted at every call).
const MAX_STAMPS: usize = 32;

/// Spare bytes `buf` gets when compacted or grown: room for a few states written at its end.
const SPARE: usize = 64;

/// Spare stamps a hot record's list gets when made or compacted: the stamps of a few calls.
const STAMPS_SPARE: usize = 4;

/// Bytes a hot record made from a full record's bytes ([`Hot::from_full`]) gets for each
/// state the call loading it may add: a slot of a short value (a W1 value's takes 6-36
/// bytes, 16 on average).
const NEW_SLOT: usize = 16;

/// Free bytes at the end of `buf` below which a state is not written there before the buffer
/// is compacted or grown.
const MIN_TAIL: usize = 48;

/// A profile as the writer cache keeps it once a call came back to it (see the module).
#[derive(Debug, Clone)]
pub(crate) struct Hot {
    buf: Vec<u8>,
    /// Bytes of `buf` the identifiers take (the states start there).
    ids_len: u32,
    first_seen: Timestamp,
    updated_at: Timestamp,
    stamps: Vec<Stamp>,
    /// (name, start of its state in `buf`), sorted by name.
    dir: Vec<(u32, u32)>,
    /// Bytes of `buf` after the identifiers that no name's state is at.
    dead: u32,
    /// Stamps past which a compaction drops those no state names (see [`MAX_STAMPS`]).
    stamp_limit: u32,
}

/// A plain state's shape byte, stamp index and payload (`entries::values::plain_shaped`);
/// `None` for any other state.
type PlainParts<'a> = Option<(u8, u32, &'a [u8])>;

fn broken(at: usize, reason: &'static str) -> DecodeError {
    DecodeError { at, reason }
}

/// The entry of `id` in `list` (sorted by name), searched from `from`, which moves past it:
/// a call's names come sorted, so each search starts where the last one ended.
fn find<'a, T>(list: &'a [(u32, T)], from: &mut usize, id: u32) -> Option<&'a T> {
    match search_from(list, *from, id) {
        Ok(i) => {
            *from = i + 1;
            list.get(i).map(|p| &p.1)
        }
        Err(i) => {
            *from = i;
            None
        }
    }
}

/// Where `id` is in `list` (sorted by name), or would go, given that every entry before
/// `from` is below it: a call's names are sorted and near each other in the directory.
#[inline]
fn search_from<T>(list: &[(u32, T)], from: usize, id: u32) -> Result<usize, usize> {
    gallop_by_key(list, from, &id, |p| p.0)
}

/// The stamps of a hot record, searched newest first (a call's stamps were appended last).
struct Newest<'a>(&'a [Stamp]);

impl StampIndex for Newest<'_> {
    #[inline]
    fn index_of(&self, s: &Stamp) -> u32 {
        // Every stamp of a state written is in the table (added before it is written).
        self.0.iter().rposition(|x| x == s).unwrap_or_default() as u32
    }
}

/// The room a slot gets for a state of `len` bytes: a quarter more, so that the next value of
/// about the same length is written in place; `0` (no room beyond the state, whose length is
/// then read from it) past what a byte holds.
fn room_for(len: usize) -> u8 {
    let room = len + len / 4 + 2;
    if room > u8::MAX as usize {
        0
    } else {
        room as u8
    }
}

impl Hot {
    /// `rec`, whole, as a hot record. `scratch`: a buffer it is written in first (emptied
    /// first, left holding a copy of the record's bytes), so that the record's own buffer is
    /// allocated once, at its size and the spare it may grow by.
    pub fn encode(rec: &ProfileRecord, scratch: &mut Vec<u8>) -> Hot {
        let table = StampTable::of(rec.props.iter().map(|(_, p)| p));
        scratch.clear();
        rec.ids.put(scratch);
        let ids_len = scratch.len() as u32;
        let mut dir = Vec::with_capacity(rec.props.len() + 4);
        for (id, p) in &rec.props {
            dir.push((*id, scratch.len() as u32));
            put_slot(scratch, 0, |out| put_shaped_state(p, &table, out));
        }
        // What it may grow by before a compaction (the cache's budget counts capacity).
        let mut buf = Vec::with_capacity(scratch.len() + scratch.len() / 8 + SPARE);
        buf.extend_from_slice(scratch);
        // Room for the stamps of the next few calls (each call adds its own).
        let mut stamps = Vec::with_capacity(table.stamps().len() + STAMPS_SPARE);
        stamps.extend_from_slice(table.stamps());
        Hot {
            buf,
            ids_len,
            first_seen: rec.first_seen,
            updated_at: rec.updated_at,
            stamp_limit: MAX_STAMPS.max(2 * table.stamps().len()) as u32,
            stamps,
            dir,
            dead: 0,
        }
    }

    /// What the process holds for it beyond its slot.
    pub fn heap_bytes(&self) -> usize {
        super::cache::alloc_bytes(self.buf.capacity())
            + super::cache::alloc_bytes(self.stamps.capacity() * size_of::<Stamp>())
            + super::cache::alloc_bytes(self.dir.capacity() * size_of::<(u32, u32)>())
    }

    /// The identifiers and times, with room for `n` states, in `into`'s buffers (what it holds
    /// is replaced).
    fn head(&self, n: usize, into: ProfileRecord) -> Decoded<ProfileRecord> {
        let bytes = self
            .buf
            .get(..self.ids_len as usize)
            .ok_or(broken(0, "hot record: identifiers outside it"))?;
        let ProfileRecord {
            mut ids, mut props, ..
        } = into;
        ids_into_text(bytes, &mut ids)?;
        props.clear();
        props.reserve(n);
        Ok(ProfileRecord {
            ids,
            first_seen: self.first_seen,
            updated_at: self.updated_at,
            props,
        })
    }

    /// The slot starting at `start`: its room byte, and a reader of its state.
    fn at(&self, start: u32) -> Decoded<(u8, Reader<'_>)> {
        self.at_checking(start, Utf8::Built)
    }

    /// [`Hot::at`], with a reader checking the strings `utf8` says.
    fn at_checking(&self, start: u32, utf8: Utf8) -> Decoded<(u8, Reader<'_>)> {
        let (room, bytes) = self.slot(start)?;
        Ok((room, Reader::checking(bytes, utf8)))
    }

    /// The slot starting at `start`: its room byte, and the bytes after it (its state, then
    /// its padding; room 0: every byte to the end of `buf`).
    #[inline]
    fn slot(&self, start: u32) -> Decoded<(u8, &[u8])> {
        let start = start as usize;
        if start < self.ids_len as usize {
            return Err(broken(start, "hot record: a state inside the identifiers"));
        }
        let room = *self
            .buf
            .get(start)
            .ok_or(broken(start, "hot record: a state outside it"))?;
        let end = match room {
            0 => self.buf.len(),
            n => start + 1 + n as usize,
        };
        self.buf
            .get(start + 1..end)
            .map(|b| (room, b))
            .ok_or(broken(start, "hot record: a state outside it"))
    }

    /// Bytes the slot at `start` takes (its room byte included).
    fn slot_len(&self, start: u32) -> Decoded<usize> {
        let (room, mut r) = self.at(start)?;
        Ok(1 + match room {
            0 => {
                skip_shaped_state(&mut r, &self.stamps[..])?;
                r.position()
            }
            n => n as usize,
        })
    }

    /// Mark in `used` (one flag a stamp) the stamps the state in the slot at `start` names;
    /// its parts if it is a plain state (`plain_shaped`). `utf8`: which of its strings are
    /// checked. Inline: it runs for every state of every full record written from a hot
    /// record ([`Hot::put_full`]).
    #[inline(always)]
    fn mark_stamps(&self, start: u32, used: &mut [bool], utf8: Utf8) -> Decoded<PlainParts<'_>> {
        let (_, mut r) = self.at_checking(start, utf8)?;
        let parts = plain_shaped(&mut r)?;
        match parts {
            Some((_, i, _)) => match used.get_mut(i as usize) {
                Some(u) => *u = true,
                None => return Err(r.error("property stamp index outside the stamp table")),
            },
            None => each_stamp(
                &shaped_state(&mut self.at(start)?.1, &self.stamps[..])?,
                |s| {
                    if let Some(i) = self.stamps.iter().position(|x| *x == s) {
                        used[i] = true;
                    }
                },
            ),
        }
        Ok(parts)
    }

    /// The profile as a full record: the bytes `entries::profile::put_full` writes of
    /// [`Hot::decode`]'s record, without decoding it. The identifiers' bytes and each plain
    /// state's payload are copied, its stamp index renumbered into the record's sorted table;
    /// any other state is decoded and written again.
    ///
    /// Every byte copied is first checked as a read of the record checks it (every string's
    /// UTF-8 included, the names in order), so that a hot record a bug damaged fails here
    /// instead of reaching the log as a record that does not decode; the rest of the record
    /// is written by the encoders. Given `lens` (cleared first): the record's state lengths
    /// into it, as `put_full` writes them.
    pub fn put_full(&self, out: &mut Vec<u8>, mut lens: Option<&mut Vec<u8>>) -> Decoded<()> {
        let start = out.len();
        if self.put_full_plain(out, lens.as_deref_mut()) {
            return Ok(());
        }
        // Any other state, or bytes that do not read: written (or refused) state by state.
        out.truncate(start);
        self.put_full_states(out, lens)
    }

    /// [`Hot::put_full`] of a profile whose every state is a plain set with a one-byte stamp
    /// index (nearly every profile: a state the calls only set): a first walk reads each
    /// state's shape and stamp index alone and marks the stamps they name, then the head is
    /// written, then each state is checked (as [`Hot::put_full_states`] checks it, every
    /// string's UTF-8 included) and its bytes copied whole (shape byte, stamp index, payload)
    /// after its name's gap, its stamp index renumbered into the record's sorted table (a
    /// renumbered index is below the count of stamps, at most 251: one byte too). `false`
    /// (bytes left past `out`'s length, which the caller truncates) at the first state of
    /// another kind or that does not read: [`Hot::put_full_states`] writes or refuses it.
    fn put_full_plain(&self, out: &mut Vec<u8>, mut lens: Option<&mut Vec<u8>>) -> bool {
        const MOST: usize = 251;
        let count = self.stamps.len();
        if count > MOST {
            return false;
        }
        let mut used = [false; MOST];
        let mut last = None;
        for &(id, start) in &self.dir {
            if last.is_some_and(|last| last >= id) {
                return false;
            }
            last = Some(id);
            match self.slot(start) {
                Ok((_, [shape, index, ..]))
                    if plain_set_variant(*shape).is_some() && usize::from(*index) < count =>
                {
                    used[usize::from(*index)] = true;
                }
                _ => return false,
            }
        }
        let Some(ids) = self.buf.get(..self.ids_len as usize) else {
            return false;
        };
        if check_ids(ids).is_err() {
            return false;
        }
        // The stamps named, and each one's index among them: its place when they come in
        // order (a call's stamp is added after those of the calls before it, nearly always
        // later), else its place once sorted.
        let mut stamps = Stamps::new();
        let mut renumber = [0u8; MOST];
        let mut sorted = true;
        for ((s, u), to) in self.stamps.iter().zip(&used).zip(&mut renumber) {
            if *u {
                sorted &= stamps.last().is_none_or(|l| l < s);
                *to = stamps.len() as u8;
                stamps.push(*s);
            }
        }
        let table = StampTable::sorted(stamps);
        if !sorted {
            for ((s, u), to) in self.stamps.iter().zip(&used).zip(&mut renumber) {
                if *u {
                    *to = table.index_of(s) as u8;
                }
            }
        }
        put_full_head(
            |out| out.extend_from_slice(ids),
            (self.first_seen, self.updated_at),
            &table,
            self.dir.len(),
            out,
        );
        if let Some(lens) = lens.as_deref_mut() {
            lens.clear();
        }
        let mut names = Names::default();
        for &(id, start) in &self.dir {
            let Ok((_, bytes)) = self.slot(start) else {
                return false;
            };
            let [shape, index, payload @ ..] = bytes else {
                return false;
            };
            let (Some(v), Some(&to)) =
                (plain_set_variant(*shape), renumber.get(usize::from(*index)))
            else {
                return false;
            };
            let Some(state) = plain_payload_len(payload, v).and_then(|len| bytes.get(..2 + len))
            else {
                return false;
            };
            names.put(out, id);
            let from = out.len();
            out.extend_from_slice(state);
            if let Some(b) = out.get_mut(from + 1) {
                *b = to;
            }
            if let Some(lens) = lens.as_deref_mut() {
                lens.push(u8::try_from(state.len()).unwrap_or(0));
            }
        }
        true
    }

    /// [`Hot::put_full`] state by state: each plain state's parts read, then the head, then
    /// each state written, a plain one from its parts, any other decoded and encoded again.
    fn put_full_states(&self, out: &mut Vec<u8>, mut lens: Option<&mut Vec<u8>>) -> Decoded<()> {
        if let Some(lens) = lens.as_deref_mut() {
            lens.clear();
        }
        // The stamps the states name (a profile's states share a few), and each one's index
        // in the record's sorted table.
        let mut used: smallvec::SmallVec<[bool; 64]> =
            smallvec::smallvec![false; self.stamps.len()];
        // Each plain state's parts, read once (`None`: any other state, decoded below).
        let mut plain: smallvec::SmallVec<[PlainParts<'_>; 64]> =
            smallvec::SmallVec::with_capacity(self.dir.len());
        let mut last = None;
        for &(id, start) in &self.dir {
            if last.is_some_and(|last| last >= id) {
                return Err(broken(start as usize, "hot record: names out of order"));
            }
            last = Some(id);
            plain.push(self.mark_stamps(start, &mut used, Utf8::All)?);
        }
        let table = StampTable::sorted(
            self.stamps
                .iter()
                .zip(&used)
                .filter(|(_, u)| **u)
                .map(|(s, _)| *s)
                .collect(),
        );
        let renumber: smallvec::SmallVec<[u32; 64]> = self
            .stamps
            .iter()
            .zip(&used)
            .map(|(s, u)| if *u { table.index_of(s) } else { 0 })
            .collect();
        let ids = self
            .buf
            .get(..self.ids_len as usize)
            .ok_or(broken(0, "hot record: identifiers outside it"))?;
        check_ids(ids)?;
        put_full_head(
            |out| out.extend_from_slice(ids),
            (self.first_seen, self.updated_at),
            &table,
            self.dir.len(),
            out,
        );
        let mut names = Names::default();
        for (&(id, start), parts) in self.dir.iter().zip(&plain) {
            names.put(out, id);
            let from = out.len();
            match *parts {
                Some((shape, i, payload)) => {
                    let index = renumber.get(i as usize).copied().ok_or(broken(
                        start as usize,
                        "hot record: a stamp index outside its stamps",
                    ))?;
                    put_plain_shaped(shape, index, payload, out)
                }
                None => put_shaped_state(
                    &shaped_state(&mut self.at(start)?.1, &self.stamps[..])?,
                    &table,
                    out,
                ),
            }
            if let Some(lens) = lens.as_deref_mut() {
                lens.push(u8::try_from(out.len() - from).unwrap_or(0));
            }
        }
        Ok(())
    }

    /// The profile whole.
    pub fn decode(&self) -> Decoded<ProfileRecord> {
        self.decode_into(ProfileRecord::default())
    }

    /// [`Hot::decode`] into `into`'s buffers (what it holds is replaced).
    pub fn decode_into(&self, into: ProfileRecord) -> Decoded<ProfileRecord> {
        let mut rec = self.head(self.dir.len() + 8, into)?;
        for &(id, start) in &self.dir {
            rec.props
                .push((id, shaped_state(&mut self.at(start)?.1, &self.stamps[..])?));
        }
        Ok(rec)
    }

    /// The identifiers, the times, and the states of the names in `only` (sorted, each once)
    /// that it has: each plain set or removal captured into `raw` (emptied first) as its stamp
    /// and value bytes, any other state built (`values::shaped_state_or_raw`).
    /// `into`: a record whose buffers the result reuses.
    pub fn decode_capturing(
        &self,
        only: &[u32],
        raw: &mut RawStates,
        into: ProfileRecord,
    ) -> Decoded<ProfileRecord> {
        raw.clear();
        let mut rec = self.head(only.len(), into)?;
        let mut from = 0;
        for &id in only {
            if let Some(&start) = find(&self.dir, &mut from, id)
                && let Some(state) = self.capture(start, id, raw)?
            {
                rec.props.push((id, state));
            }
        }
        Ok(rec)
    }

    /// `old`, a compact full record this process encoded (`entries::profile::put_full`, or
    /// a splice of one: the writer cache's, whose strings were checked), with its state
    /// lengths `lens`, as a hot record: what [`Hot::encode`] makes of the profile it decodes
    /// to, copied from its bytes instead (the identifiers' bytes, the stamps of its table in
    /// their order, each state's bytes with their stamp indexes as they are, in a slot of the
    /// same room), without decoding the profile and encoding it again. `Ok(None)` when the
    /// lengths do not say each state's (a state of 256 bytes or more, or lengths that are
    /// not this record's): decode it. Debug builds compare it with [`Hot::encode`]'s.
    ///
    /// `only`: the names the call loading it changes (sorted). Those it has no state of are
    /// likely added by the call (a directory entry and a slot at the end each), and a value
    /// longer than its slot's room goes to a new slot at the end too: the directory gets
    /// room for the first, and the buffer [`NEW_SLOT`] bytes more for each name of `only`,
    /// beyond what `encode` gives. A chain made hot after the call (`encode` of the profile
    /// with the call's states) had that room; without it, the record's first call grew its
    /// buffers (~0.05 allocations more a W1 call, `tests/allocations.rs`).
    pub fn from_full(old: &[u8], lens: StateLens<'_>, only: &[u32]) -> Decoded<Option<Hot>> {
        // A state of 256 bytes or more: declined before the head is read.
        if lens.contains(&0) {
            return Ok(None);
        }
        let FullHead {
            ids,
            times: (first_seen, updated_at),
            table,
            states,
            mut rest,
        } = full_head(old)?;
        if lens.len() != states {
            return Ok(None);
        }
        // Each slot: its room byte, then its state and padding up to the room (`put_slot`).
        let slots: usize = lens
            .iter()
            .map(|&len| 1 + usize::from(room_for(usize::from(len)).max(len)))
            .sum();
        let len = ids.len() + slots;
        // The names of `only` it has no state of (a walk over its names first; the states
        // are stepped over by their lengths).
        let adds = {
            let mut r = Reader::checked_before(old.get(rest.position()..).unwrap_or_default());
            let (mut names, mut wanted, mut held) = (Names::default(), 0, 0);
            for &len in lens {
                let id = names.read(&mut r)?;
                r.bytes(usize::from(len))?;
                while only.get(wanted).is_some_and(|&w| w < id) {
                    wanted += 1;
                }
                if only.get(wanted) == Some(&id) {
                    held += 1;
                }
            }
            only.len() - held
        };
        // What it may grow by before a compaction, as `encode` gives it, and the slots the
        // call may write at the end.
        let mut buf = Vec::with_capacity(len + len / 8 + SPARE + only.len() * NEW_SLOT);
        // Zeros (the padding) first, the parts copied over them: one fill, not one a slot.
        buf.resize(len, 0);
        let (head, mut slots) = buf.split_at_mut(ids.len());
        head.copy_from_slice(ids);
        let mut start = ids.len();
        let mut dir = Vec::with_capacity(states + 4 + adds);
        let mut names = Names::default();
        for &len in lens {
            let id = names.read(&mut rest)?;
            let state = rest.bytes(usize::from(len))?;
            dir.push((id, start as u32));
            let room = room_for(state.len());
            let size = 1 + usize::from(room).max(state.len());
            // The sizes are those summed above: only a bug makes this fail.
            let Some((slot, after)) = std::mem::take(&mut slots).split_at_mut_checked(size) else {
                return Err(broken(start, "hot record: a state outside it"));
            };
            slot[0] = room;
            slot[1..=state.len()].copy_from_slice(state);
            slots = after;
            start += size;
        }
        rest.finish()?;
        let mut stamps = Vec::with_capacity(table.stamps().len() + STAMPS_SPARE);
        stamps.extend_from_slice(table.stamps());
        Ok(Some(Hot {
            buf,
            ids_len: ids.len() as u32,
            first_seen,
            updated_at,
            stamp_limit: MAX_STAMPS.max(2 * table.stamps().len()) as u32,
            stamps,
            dir,
            dead: 0,
        }))
    }

    /// Whether `self` and `other` are the same record, field by field (debug builds:
    /// [`Hot::from_full`] against [`Hot::encode`]; the capacities differ by what `from_full`
    /// reserves for the call's new names).
    #[cfg(any(test, debug_assertions))]
    pub fn same_as(&self, other: &Hot) -> bool {
        self.buf == other.buf
            && self.ids_len == other.ids_len
            && self.first_seen == other.first_seen
            && self.updated_at == other.updated_at
            && self.stamps == other.stamps
            && self.dir == other.dir
            && self.dead == other.dead
            && self.stamp_limit == other.stamp_limit
    }

    /// The state of `id` in the slot at `start`, as `values::shaped_state_or_raw` reads it: a
    /// plain set or removal captured into `raw` (`None` returned), any other state built.
    /// A plain set whose stamp index is one byte (nearly every state a call reads: a hot
    /// record keeps few stamps) is read here, inline, with the same checks: its shape byte,
    /// the stamp its index names, its payload stepped over.
    #[inline]
    fn capture(&self, start: u32, id: u32, raw: &mut RawStates) -> Decoded<Option<PropState>> {
        let (_, bytes) = self.slot(start)?;
        if let [shape, index, payload @ ..] = bytes
            && *index < 251
            && let Some(v) = plain_set_variant(*shape)
        {
            let s = self.stamps.get(usize::from(*index)).copied().ok_or(broken(
                start as usize + 2,
                "property stamp index outside the stamp table",
            ))?;
            let mut r = Reader::checked_before(payload);
            skip_payload(&mut r, v)?;
            raw.push_set(id, s, Some(v), r.since(0));
            return Ok(None);
        }
        shaped_state_or_raw(
            &mut Reader::checked_before(bytes),
            &self.stamps[..],
            id,
            raw,
        )
    }

    /// The states of `only` (sorted, each once) that it has, decoded.
    #[cfg(test)]
    fn decode_only(&self, only: &[u32]) -> Decoded<ProfileRecord> {
        let mut raw = RawStates::default();
        let mut rec = self.decode_capturing(only, &mut raw, ProfileRecord::default())?;
        for (id, r) in &raw.states {
            *rec.state_mut(*id) = raw.decode(r)?;
        }
        Ok(rec)
    }

    /// Bring it to the profile after a call: `rec` holds the identifiers and times after the
    /// call and the state of each name in `changed` (sorted, each once; a name `rec` has no
    /// state of is removed); `ids`: whether the call changed the identifiers. Every other
    /// state keeps its bytes where they are.
    pub fn after(&mut self, rec: &ProfileRecord, changed: &[u32], ids: bool) -> Decoded<()> {
        if ids {
            self.put_ids(&rec.ids)?;
        }
        self.first_seen = rec.first_seen;
        self.updated_at = rec.updated_at;
        let mut from = 0;
        for &id in changed {
            let state = find(&rec.props, &mut from, id);
            self.put_state(id, state)?;
        }
        self.compact_if_due()
    }

    /// [`Hot::after`] for a call on the fast path (`apply::FastSets`): the identifiers
    /// unchanged, the times, and each name in `sets` (sorted) set at `stamp` to the value whose
    /// bytes (as `Value::put` writes them) are given.
    pub fn after_sets<'v>(
        &mut self,
        first_seen: Timestamp,
        updated_at: Timestamp,
        stamp: Stamp,
        sets: impl Iterator<Item = (u32, &'v [u8])>,
    ) -> Decoded<()> {
        self.first_seen = first_seen;
        self.updated_at = updated_at;
        // Where in the directory the search for the next name starts: the names come sorted,
        // so each one is after the last (a name not after it, which the caller never gives,
        // searches the whole directory again).
        let (mut from, mut last) = (0, None);
        for (id, value) in sets {
            if last.is_some_and(|last| last >= id) {
                from = 0;
            }
            last = Some(id);
            from = self.put_set(id, from, stamp, value)? + 1;
        }
        self.compact_if_due()
    }

    /// Compact when the stamps pass their limit or the dead bytes half the live ones.
    fn compact_if_due(&mut self) -> Decoded<()> {
        let live = self.buf.len().saturating_sub(self.dead as usize);
        if self.stamps.len() > self.stamp_limit as usize || 2 * self.dead as usize > live {
            self.compact()?;
        }
        Ok(())
    }

    /// Room for a slot at the end: the dead bytes dropped if they are worth a copy, else the
    /// buffer grown by a quarter (not doubled: the cache's budget counts capacity).
    fn tail_room(&mut self) -> Decoded<()> {
        if self.buf.capacity() - self.buf.len() < MIN_TAIL {
            let live = self.buf.len().saturating_sub(self.dead as usize);
            if 8 * self.dead as usize >= live {
                self.compact()?;
            } else {
                self.buf.reserve_exact(self.buf.len() / 4 + SPARE);
            }
        }
        Ok(())
    }

    /// Add `s` to the stamps unless it is there.
    fn add_stamp(&mut self, s: Stamp) {
        if !self.stamps.iter().rev().any(|x| *x == s) {
            if self.stamps.len() == self.stamps.capacity() {
                // By half (at least a few): each call adds its stamp, up to the limit
                // ([`MAX_STAMPS`]) that a compaction drops the unused ones at; not doubled
                // (the cache's budget counts capacity).
                self.stamps
                    .reserve_exact((self.stamps.len() / 2).max(STAMPS_SPARE));
            }
            self.stamps.push(s);
        }
    }

    /// Write the state of `id` (`None`: remove it): over the old one when it fits its slot,
    /// else in a new slot at the end.
    fn put_state(&mut self, id: u32, state: Option<&PropState>) -> Decoded<()> {
        self.tail_room()?;
        let found = self.dir.binary_search_by_key(&id, |d| d.0);
        let Some(state) = state else {
            if let Ok(i) = found {
                self.dead += self.slot_len(self.dir[i].1)? as u32;
                self.dir.remove(i);
            }
            return Ok(());
        };
        each_stamp(state, |s| self.add_stamp(s));
        let end = self.buf.len();
        let len = put_slot(&mut self.buf, 0, |out| {
            put_shaped_state(state, &Newest(&self.stamps), out)
        });
        self.place(id, found, end, len)
    }

    /// Write a plain set of `id` at `stamp` to the value whose bytes are `value` (see
    /// [`Hot::after_sets`]), as [`Hot::put_state`] writes that state: straight into its slot
    /// when it fits the room (a value of about the same length, the common case), else as
    /// [`Hot::put_state`] does. `from`: where in the directory `id` is searched from (every
    /// name before it is below `id`). Returns where `id` is in the directory.
    fn put_set(&mut self, id: u32, from: usize, stamp: Stamp, value: &[u8]) -> Decoded<usize> {
        let found = search_from(&self.dir, from, id);
        if let Ok(i) = found {
            let index = self.stamp_index(stamp);
            let start = self.dir[i].1;
            let (room, _) = self.at(start)?;
            let (shape, payload) = set_shaped(value)?;
            let len = 2 + payload.len();
            if index < 251 && room != 0 && len <= usize::from(room) {
                let start = start as usize;
                let slot = self
                    .buf
                    .get_mut(start + 1..start + 1 + len)
                    .ok_or(broken(start, "hot record: a state outside it"))?;
                slot[0] = shape;
                slot[1] = index as u8;
                slot[2..].copy_from_slice(payload);
                return Ok(i);
            }
        }
        // A compaction keeps every name at its place in the directory: `found` holds after it.
        self.tail_room()?;
        self.add_stamp(stamp);
        let index = Newest(&self.stamps).index_of(&stamp);
        let end = self.buf.len();
        let mut written = Ok(());
        let len = put_slot(&mut self.buf, 0, |out| {
            written = put_set_shaped(value, index, out);
        });
        if let Err(e) = written {
            self.buf.truncate(end);
            return Err(e);
        }
        self.place(id, found, end, len)?;
        Ok(found.unwrap_or_else(|i| i))
    }

    /// The index of `stamp` in the stamps, added first unless there: after a call's first
    /// state, the last one (every state of the call is at its stamp), found without a search.
    #[inline]
    fn stamp_index(&mut self, stamp: Stamp) -> u32 {
        match self.stamps.last() {
            // What the search below finds: the last stamp equal to it.
            Some(last) if *last == stamp => (self.stamps.len() - 1) as u32,
            _ => {
                self.add_stamp(stamp);
                Newest(&self.stamps).index_of(&stamp)
            }
        }
    }

    /// Point `id` at the slot of `len` bytes just written at `end`: copied over its old slot
    /// when it fits that slot's room, else left at the end (the old slot dead). `found`: where
    /// `id` is, or would go, in the directory.
    fn place(
        &mut self,
        id: u32,
        found: Result<usize, usize>,
        end: usize,
        len: usize,
    ) -> Decoded<()> {
        let i = match found {
            Ok(i) => i,
            Err(i) => {
                self.dir.insert(i, (id, end as u32));
                return self.check_len();
            }
        };
        let old = self.dir[i].1;
        let (room, _) = self.at(old)?;
        if room != 0 && len <= room as usize {
            let old = old as usize;
            self.buf.copy_within(end + 1..end + 1 + len, old + 1);
            self.buf.truncate(end);
        } else {
            self.dead += self.slot_len(old)? as u32;
            self.dir[i].1 = end as u32;
        }
        self.check_len()
    }

    fn check_len(&self) -> Decoded<()> {
        if self.buf.len() > u32::MAX as usize {
            return Err(broken(0, "hot record: past 4 GiB"));
        }
        Ok(())
    }

    /// Copy the slots the directory points at into a new buffer, in order, dropping the dead
    /// ones. When the stamps are past their limit, keep only those the states name: a plain
    /// state's bytes are copied with its stamp index renumbered, any other state is decoded
    /// and written again (each in a slot of the same room).
    fn compact(&mut self) -> Decoded<()> {
        let gc = self.stamps.len() > self.stamp_limit as usize;
        let mut renumber = Vec::new();
        let mut stamps = Vec::new();
        if gc {
            let mut used = vec![false; self.stamps.len()];
            for &(_, start) in &self.dir {
                self.mark_stamps(start, &mut used, Utf8::Built)?;
            }
            renumber = vec![0u32; self.stamps.len()];
            stamps = Vec::with_capacity(self.stamps.len() + STAMPS_SPARE);
            for (i, s) in self.stamps.iter().enumerate() {
                if used[i] {
                    renumber[i] = stamps.len() as u32;
                    stamps.push(*s);
                }
            }
        }
        let live = self.buf.len().saturating_sub(self.dead as usize);
        let mut buf = Vec::with_capacity(live + live / 4 + SPARE);
        buf.extend_from_slice(
            self.buf
                .get(..self.ids_len as usize)
                .ok_or(broken(0, "hot record: identifiers outside it"))?,
        );
        let mut dir = Vec::with_capacity(self.dir.len() + 4);
        for &(id, start) in &self.dir {
            dir.push((id, buf.len() as u32));
            if !gc {
                let len = self.slot_len(start)?;
                let start = start as usize;
                let slot = self
                    .buf
                    .get(start..start + len)
                    .ok_or(broken(start, "hot record: a state outside it"))?;
                buf.extend_from_slice(slot);
                continue;
            }
            let (room, mut r) = self.at(start)?;
            match plain_shaped(&mut r)? {
                Some((shape, i, payload)) => {
                    put_slot(&mut buf, room, |out| {
                        put_plain_shaped(shape, renumber[i as usize], payload, out)
                    });
                }
                None => {
                    let state = shaped_state(&mut self.at(start)?.1, &self.stamps[..])?;
                    put_slot(&mut buf, room, |out| {
                        put_shaped_state(&state, &Newest(&stamps), out)
                    });
                }
            }
        }
        if gc {
            self.stamp_limit = MAX_STAMPS.max(2 * stamps.len()) as u32;
            self.stamps = stamps;
        }
        self.buf = buf;
        self.dir = dir;
        self.dead = 0;
        Ok(())
    }

    /// Replace the identifiers (the states move by the difference in length).
    fn put_ids(&mut self, ids: &Ids) -> Decoded<()> {
        let old = self.ids_len as usize;
        if old > self.buf.len() {
            return Err(broken(0, "hot record: identifiers outside it"));
        }
        let mut bytes = Vec::with_capacity(old + 32);
        ids.put(&mut bytes);
        let shift = bytes.len() as i64 - old as i64;
        self.buf.splice(..old, bytes);
        self.ids_len = (old as i64 + shift) as u32;
        if shift != 0 {
            for d in &mut self.dir {
                d.1 = (i64::from(d.1) + shift) as u32;
            }
        }
        self.check_len()
    }
}

/// The length of the payload of a value of variant `v` at the start of `bytes`, checked as a
/// read checks it (every string's UTF-8); `None` when it does not read. A string (most of a
/// profile's values) is checked here: ASCII (nearly every one) a word at a time.
#[inline(always)]
fn plain_payload_len(bytes: &[u8], v: u32) -> Option<usize> {
    let mut r = Reader::new(bytes);
    if v == 3 {
        let n = r.len(1).ok()?;
        let s = r.bytes(n).ok()?;
        if !s.is_ascii() && std::str::from_utf8(s).is_err() {
            return None;
        }
    } else {
        skip_payload(&mut r, v).ok()?;
    }
    Some(r.position())
}

/// Append a slot to `buf`: its room byte, the state `put` writes, and the padding up to its
/// room (at least `room`, when given, so that a slot copied keeps its room). Returns the
/// state's length.
fn put_slot(buf: &mut Vec<u8>, room: u8, put: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = buf.len();
    buf.push(0);
    put(buf);
    let len = buf.len() - start - 1;
    let room = match room_for(len) {
        0 => 0,
        r if room as usize >= len => r.max(room),
        r => r,
    };
    if room != 0 {
        // The padding: up to 16 bytes (a state of up to 56 bytes, nearly every one) as one
        // fixed-size append cut to length, not a `memset` call; only where the buffer has
        // room for all 16 (else the append could grow it where the padding fits: the cache's
        // budget counts capacity, and the buffer's growth is by a quarter, `tail_room`).
        let end = start + 1 + room as usize;
        if end.saturating_sub(buf.len()) <= 16 && buf.capacity() - buf.len() >= 16 {
            buf.extend_from_slice(&[0; 16]);
            buf.truncate(end);
        } else {
            buf.resize(end, 0);
        }
    }
    buf[start] = room;
    len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::value::Value;
    use proptest::prelude::*;

    fn state(v: i64, ts: i64, order: u64, once: bool) -> PropState {
        let mut p = PropState::default();
        let value = if v % 2 == 0 {
            Value::Int(v)
        } else {
            Value::Str(format!("s{}", v % 1000).into())
        };
        p.apply_set_ref(Some(&value), Timestamp(ts), order);
        if once {
            p.once = Some(Box::new((
                Stamp::new(Timestamp(ts + 1), order + 1),
                Value::Str("first".into()),
            )));
        }
        p
    }

    /// The full record `Hot::put_full` writes; its state lengths, checked against those
    /// `entries::profile::put_full` gives for the profile the hot record decodes to.
    fn full_of(hot: &Hot) -> Vec<u8> {
        let (mut out, mut lens) = (Vec::new(), Vec::new());
        hot.put_full(&mut out, Some(&mut lens)).unwrap();
        let (mut want, mut want_lens) = (Vec::new(), Vec::new());
        crate::entries::profile::put_full(&hot.decode().unwrap(), &mut want, Some(&mut want_lens));
        assert_eq!(lens, want_lens, "state lengths");
        out
    }

    /// The full record `entries::profile::put_full` writes of `rec`.
    fn full_record(rec: &ProfileRecord) -> Vec<u8> {
        let mut out = Vec::new();
        crate::entries::profile::put_full(rec, &mut out, None);
        out
    }

    fn record(props: &[(u32, i64, i64)]) -> ProfileRecord {
        let mut rec = ProfileRecord::default();
        rec.ids.user_id = Some("u1".into());
        rec.ids.anonymous_ids = vec!["a1".into(), "a2".into()];
        rec.first_seen = Timestamp(5);
        rec.updated_at = Timestamp(90);
        for &(id, v, ts) in props {
            *rec.state_mut(id) = state(v, ts, ts as u64, id % 3 == 0);
        }
        rec
    }

    proptest! {
        /// A hot record decodes to the profile it encodes, whole and by names; after each call
        /// it decodes to the profile with the call's states put in (and removed), whatever the
        /// states' lengths and stamps, through rebuilds.
        #[test]
        fn a_hot_record_follows_the_profile_through_calls(
            props in proptest::collection::vec((0u32..60, any::<i64>(), 0i64..40), 0..50),
            calls in proptest::collection::vec(
                proptest::collection::vec(
                    (0u32..70, any::<i64>(), 0i64..400, 0u8..8),
                    0..12,
                ),
                0..40,
            ),
            only in proptest::collection::btree_set(0u32..80, 0..12),
        ) {
            let mut rec = record(&props);
            let mut hot = Hot::encode(&rec, &mut Vec::new());
            prop_assert_eq!(hot.decode().unwrap(), rec.clone());
            prop_assert_eq!(full_of(&hot), full_record(&rec));
            for (n, call) in calls.iter().enumerate() {
                let mut changed: Vec<u32> = call.iter().map(|c| c.0).collect();
                changed.sort_unstable();
                changed.dedup();
                let order = 1_000 + n as u64;
                let call_ts = 500 + n as i64;
                for &(id, v, ts, what) in call {
                    match what {
                        0 => rec.props.retain(|(k, _)| *k != id),
                        1 => rec.state_mut(id).apply_set_ref(None, Timestamp(call_ts), order),
                        2 => *rec.state_mut(id) = state(v, ts, order, true),
                        3 => rec.state_mut(id).apply_set_ref(
                            Some(&Value::Int(v)),
                            Timestamp(ts),
                            order,
                        ),
                        _ => rec.state_mut(id).apply_set_ref(
                            Some(&Value::Str(format!("{}", v % 100_000).into())),
                            Timestamp(call_ts),
                            order,
                        ),
                    }
                }
                rec.updated_at = Timestamp(rec.updated_at.0.max(call.len() as i64));
                let ids = call.len() % 3 == 1;
                if ids {
                    rec.ids.email = Some(format!("e{}@x.io", "y".repeat(call.len())));
                }
                // What a call hands over: identifiers, times, the changed names' states.
                let mut partial = rec.clone();
                partial.props.retain(|(k, _)| changed.binary_search(k).is_ok());
                hot.after(&partial, &changed, ids).unwrap();
                prop_assert_eq!(hot.decode().unwrap(), rec.clone());
                prop_assert_eq!(full_of(&hot), full_record(&rec));

                prop_assert!(hot.stamps.len() <= hot.stamp_limit as usize);
            }
            // Each state captured (or built) as `values::shaped_state_or_raw` reads it.
            for &(id, start) in &hot.dir {
                let (mut fast, mut slow) = (RawStates::default(), RawStates::default());
                let built = hot.capture(start, id, &mut fast).unwrap();
                let mut r = hot.at(start).unwrap().1;
                let want = shaped_state_or_raw(&mut r, &hot.stamps[..], id, &mut slow).unwrap();
                prop_assert_eq!(built, want);
                prop_assert_eq!(&fast.states, &slow.states);
                prop_assert_eq!(&fast.bytes, &slow.bytes);
            }
            let only: Vec<u32> = only.into_iter().collect();
            let mut want = rec.clone();
            want.props.retain(|(k, _)| only.binary_search(k).is_ok());
            prop_assert_eq!(hot.decode_only(&only).unwrap(), want);
            // Into a record another profile left (the writer reuses its buffers): the same
            // identifiers, times, states and captures as into nothing.
            let mut used = record(&props);
            used.ids.user_id = Some("someone else".into());
            used.ids.anonymous_ids = vec!["a1".into(), "a2".into(), "a3".into()];
            let (mut fresh_raw, mut reused_raw) = (RawStates::default(), RawStates::default());
            let fresh = hot
                .decode_capturing(&only, &mut fresh_raw, ProfileRecord::default())
                .unwrap();
            let reused = hot.decode_capturing(&only, &mut reused_raw, used).unwrap();
            prop_assert_eq!(reused, fresh);
            prop_assert_eq!(reused_raw.bytes, fresh_raw.bytes);
        }
    }

    proptest! {
        /// The fast path's update ([`Hot::after_sets`]: plain sets newer than every state, each
        /// name once) leaves the record decoding to the profile with those sets applied, whether
        /// each value fits its slot (written in place) or not, through compactions.
        #[test]
        fn sets_written_into_a_hot_record_follow_the_profile(
            props in proptest::collection::vec((0u32..40, any::<i64>(), 0i64..40), 0..40),
            calls in proptest::collection::vec(
                proptest::collection::btree_map(0u32..50, (any::<i64>(), 0u8..4), 0..12),
                0..60,
            ),
        ) {
            let mut rec = record(&props);
            let mut hot = Hot::encode(&rec, &mut Vec::new());
            for (n, call) in calls.iter().enumerate() {
                let order = 1_000 + n as u64;
                let ts = Timestamp(500 + n as i64);
                let (bytes, sets, values) = call_sets(call, "");
                for (id, value) in &values {
                    rec.state_mut(*id).apply_set_ref(Some(value), ts, order);
                }
                rec.updated_at = ts;
                hot.after_sets(
                    rec.first_seen,
                    rec.updated_at,
                    Stamp::new(ts, order),
                    sets.iter().map(|(id, r)| (*id, &bytes[r.clone()])),
                )
                .unwrap();
                prop_assert_eq!(hot.decode().unwrap(), rec.clone());
                prop_assert_eq!(full_of(&hot), full_record(&rec));
                prop_assert!(hot.stamps.len() <= hot.stamp_limit as usize);
            }
        }
    }

    proptest! {
        /// A hot record copied from a full record's bytes ([`Hot::from_full`]) is the one
        /// [`Hot::encode`] makes of the profile it decodes to, field by field (capacities
        /// included), whatever its states and stamps; a record with a state of 256 bytes or
        /// more is left to be decoded.
        #[test]
        fn a_hot_record_from_a_full_records_bytes_is_the_encoded_one(
            props in proptest::collection::vec((0u32..300, any::<i64>(), 0i64..80), 0..60),
            long in proptest::option::of((0u32..300, 200usize..400)),
            email in proptest::option::of("[a-z]{0,40}@x\\.io"),
            only in proptest::collection::btree_set(0u32..320, 0..12),
        ) {
            let mut rec = record(&props);
            rec.ids.email = email;
            if let Some((id, len)) = long {
                rec.state_mut(id).apply_set_ref(
                    Some(&Value::Str("é".repeat(len / 2).into())),
                    Timestamp(7),
                    7,
                );
            }
            let (mut full, mut lens) = (Vec::new(), Vec::new());
            crate::entries::profile::put_full(&rec, &mut full, Some(&mut lens));
            let want = Hot::encode(&rec, &mut Vec::new());
            match Hot::from_full(&full, &lens, &[]).unwrap() {
                Some(hot) => {
                    prop_assert!(!lens.contains(&0));
                    prop_assert!(hot.same_as(&want), "{:?} against {:?}", hot, want);
                    prop_assert_eq!(hot.heap_bytes(), want.heap_bytes());
                    prop_assert_eq!(hot.decode().unwrap(), rec.clone());
                    // With room for the states of a call's names: a directory entry for each
                    // name it has no state of, bytes for each.
                    let only: Vec<u32> = only.into_iter().collect();
                    let adds = only.iter().filter(|&&id| rec.state(id).is_none()).count();
                    let roomy = Hot::from_full(&full, &lens, &only).unwrap().unwrap();
                    prop_assert!(roomy.same_as(&want));
                    prop_assert_eq!(roomy.dir.capacity(), want.dir.capacity() + adds);
                    prop_assert_eq!(
                        roomy.buf.capacity(),
                        want.buf.capacity() + only.len() * NEW_SLOT
                    );
                }
                None => prop_assert!(lens.contains(&0)),
            }
            // Fewer lengths than states: left to be decoded.
            if !lens.is_empty() {
                prop_assert!(matches!(Hot::from_full(&full, &lens[..lens.len() / 2], &[]), Ok(None)));
            }
        }
    }

    /// A generated call's sets: each `(value, kind)` made an integer, a short string (with
    /// `prefix` before it), a string of up to 299 bytes or a boolean; their bytes as
    /// `Value::put` writes them, one after another, each name's range of them, and the values.
    #[allow(clippy::type_complexity)]
    fn call_sets(
        call: &std::collections::BTreeMap<u32, (i64, u8)>,
        prefix: &str,
    ) -> (
        Vec<u8>,
        Vec<(u32, std::ops::Range<usize>)>,
        Vec<(u32, Value)>,
    ) {
        let (mut bytes, mut sets, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (&id, &(v, kind)) in call {
            let value = match kind {
                0 => Value::Int(v),
                1 => Value::Str(format!("{prefix}{}", v % 1_000).into()),
                2 => Value::Str("x".repeat((v % 300).unsigned_abs() as usize).into()),
                _ => Value::Bool(v % 2 == 0),
            };
            let from = bytes.len();
            crate::entries::wire::Wire::put(&value, &mut bytes);
            sets.push((id, from..bytes.len()));
            values.push((id, value));
        }
        (bytes, sets, values)
    }

    /// A slot that fits the buffer's free room never grows it (the padding's fixed-size
    /// append would have doubled it where fewer than 16 bytes were left past the state), and
    /// its bytes are the room byte, the state and zeros up to the room.
    #[test]
    fn a_slot_that_fits_leaves_the_buffers_capacity_alone() {
        for free in 40..100usize {
            for n in 1..80usize {
                let mut buf = Vec::with_capacity(1_000);
                buf.resize(1_000 - free, 9u8);
                let cap = buf.capacity();
                let start = buf.len();
                let len = put_slot(&mut buf, 0, |out| out.extend(std::iter::repeat_n(7, n)));
                assert_eq!(len, n);
                let room = room_for(n);
                let size = 1 + usize::from(room).max(n);
                assert_eq!(buf.len(), start + size, "free {free}, state {n}");
                assert_eq!(buf[start], room);
                assert!(buf[start + 1..start + 1 + n].iter().all(|&b| b == 7));
                assert!(buf[start + 1 + n..].iter().all(|&b| b == 0));
                if size <= free {
                    assert_eq!(buf.capacity(), cap, "free {free}, state {n}: grew");
                }
            }
        }
    }

    /// A damaged full record or state lengths (a bug: the cache's records are this process's)
    /// make [`Hot::from_full`] fail or decline, never panic.
    #[test]
    fn a_hot_record_from_damaged_bytes_is_an_error_not_a_panic() {
        let rec = record(&[(1, 11, 3), (3, 13, 4), (4, 20, 6), (9, 7, 5)]);
        let (mut full, mut lens) = (Vec::new(), Vec::new());
        crate::entries::profile::put_full(&rec, &mut full, Some(&mut lens));
        assert!(Hot::from_full(&full, &lens, &[]).unwrap().is_some());
        for cut in 0..full.len() {
            assert!(
                Hot::from_full(&full[..cut], &lens, &[1, 2]).is_err(),
                "cut at {cut}"
            );
        }
        for at in 0..full.len() {
            for change in [0x01, 0x80, 0xff] {
                let mut bad = full.clone();
                bad[at] ^= change;
                let _ = Hot::from_full(&bad, &lens, &[1, 2]);
            }
        }
        for at in 0..lens.len() {
            for change in [0x01, 0x80, 0xff] {
                let mut bad = lens.clone();
                bad[at] ^= change;
                let _ = Hot::from_full(&full, &bad, &[1, 2]);
            }
        }
    }

    proptest! {
        /// A profile whose states are all plain sets (`Hot::put_full` in one walk): its full
        /// record is the one its states give, byte for byte, with names far apart (gaps of
        /// several bytes), values of any length, and stamps added out of order and left unused
        /// (indexes renumbered), through compactions; a damaged string is refused.
        #[test]
        fn a_full_record_of_plain_sets_is_the_one_its_states_give(
            props in proptest::collection::vec((0u32..1_000, any::<i64>(), 0i64..40), 0..40),
            calls in proptest::collection::vec(
                proptest::collection::btree_map(0u32..1_000, (any::<i64>(), 0u8..4), 0..12),
                0..40,
            ),
        ) {
            let plain = |v: i64, ts: i64, order: u64| {
                let mut p = PropState::default();
                p.apply_set_ref(Some(&Value::Int(v)), Timestamp(ts), order);
                p
            };
            let mut rec = ProfileRecord::default();
            rec.ids.user_id = Some("u1".into());
            rec.first_seen = Timestamp(5);
            rec.updated_at = Timestamp(90);
            for &(id, v, ts) in &props {
                *rec.state_mut(id) = plain(v, ts, 100 - ts as u64);
            }
            let mut hot = Hot::encode(&rec, &mut Vec::new());
            prop_assert_eq!(full_of(&hot), full_record(&rec));
            for (n, call) in calls.iter().enumerate() {
                // Each call's stamp before the last one's in time: the stamps out of order.
                let order = 1_000 + n as u64;
                let ts = Timestamp(500 - n as i64);
                let (bytes, sets, values) = call_sets(call, "é");
                for (id, value) in &values {
                    let mut p = PropState::default();
                    p.apply_set_ref(Some(value), ts, order);
                    *rec.state_mut(*id) = p;
                }
                hot.after_sets(
                    rec.first_seen,
                    rec.updated_at,
                    Stamp::new(ts, order),
                    sets.iter().map(|(id, r)| (*id, &bytes[r.clone()])),
                )
                .unwrap();
                prop_assert_eq!(full_of(&hot), full_record(&rec));
                prop_assert!(hot.put_full_plain(&mut Vec::new(), None), "in one walk");
            }
            // A string's first byte made not UTF-8: refused.
            let string = hot.dir.iter().find_map(|&(_, start)| {
                let (_, bytes) = hot.slot(start).ok()?;
                // Shape of a set to a string (variant 3), a one-byte length of 1 or more.
                (bytes.first() == Some(&5) && (1..251).contains(bytes.get(2)?))
                    .then_some(start as usize + 4)
            });
            if let Some(at) = string {
                let mut bad = hot.clone();
                bad.buf[at] = 0xff;
                prop_assert!(bad.put_full(&mut Vec::new(), None).is_err());
            }
        }
    }

    proptest! {
        /// `find` finds what a bisection of the whole list finds, from wherever it starts below
        /// the name, and moves past it.
        #[test]
        fn a_find_from_a_start_finds_what_bisection_finds(
            names in proptest::collection::btree_set(0u32..200, 0..80),
            id in 0u32..210,
            start in any::<proptest::sample::Index>(),
        ) {
            let list: Vec<(u32, ())> = names.into_iter().map(|n| (n, ())).collect();
            let want = list.binary_search_by_key(&id, |p| p.0);
            let below = list.partition_point(|p| p.0 < id);
            let from = start.index(below + 1);
            let mut at = from;
            prop_assert_eq!(find(&list, &mut at, id).is_some(), want.is_ok());
            prop_assert_eq!(at, want.map_or_else(|i| i, |i| i + 1));
        }
    }

    /// A state that fits its slot's room is written in place; a longer one goes to a new slot
    /// at the end and the old slot counts as dead, until a compaction drops it.
    #[test]
    fn a_state_that_fits_its_room_is_written_in_place() {
        let mut rec = record(&[(1, 10, 3), (4, 20, 4), (9, -1, 5)]);
        let mut hot = Hot::encode(&rec, &mut Vec::new());
        let len = hot.buf.len();
        rec.state_mut(4)
            .apply_set_ref(Some(&Value::Int(22)), Timestamp(50), 50);
        hot.after(&rec, &[4], false).unwrap();
        assert_eq!(hot.buf.len(), len);
        assert_eq!(hot.dead, 0);
        rec.state_mut(4).apply_set_ref(
            Some(&Value::Str("a string longer than the room".into())),
            Timestamp(51),
            51,
        );
        hot.after(&rec, &[4], false).unwrap();
        assert!(hot.buf.len() > len);
        assert!(hot.dead > 0);
        assert_eq!(hot.decode().unwrap(), rec);
        hot.compact().unwrap();
        assert_eq!(hot.dead, 0);
        assert_eq!(hot.decode().unwrap(), rec);
    }

    /// Damaged bytes (a bug: nothing outside writes them) are decode errors, never panics.
    #[test]
    fn a_damaged_hot_record_is_an_error_not_a_panic() {
        let good = Hot::encode(
            &record(&[(1, 10, 3), (4, 20, 4), (9, -1, 5)]),
            &mut Vec::new(),
        );
        for cut in 0..good.buf.len() {
            let mut bad = good.clone();
            bad.buf.truncate(cut);
            assert!(bad.decode().is_err(), "cut at {cut}");
            let _ = bad.decode_only(&[1, 9]);
            let _ = bad.after(&record(&[(4, 1, 1)]), &[4], false);
        }
        for at in 0..good.buf.len() {
            for bit in [0x01, 0x80] {
                let mut bad = good.clone();
                bad.buf[at] ^= bit;
                let _ = bad.decode();
                let _ = bad.decode_only(&[4]);
                let _ = bad.after(&record(&[(4, 1, 1)]), &[4], false);
            }
        }
        let mut bad = good.clone();
        bad.dir[1].1 = u32::MAX;
        assert!(bad.decode().is_err());
        bad.dir[1].1 = 0;
        assert!(bad.decode().is_err());
    }

    /// `put_full` writes no record a read refuses: whatever byte of a hot record is damaged,
    /// and in whichever way, it fails, or what it wrote passes the read's checks (every
    /// string's UTF-8 included), as the writer relies on (it writes the record unread).
    #[test]
    fn a_full_record_from_a_damaged_hot_record_is_refused_or_reads() {
        // Strings in the identifiers, in plain states and in a `$set_once` state (odd values
        // are strings; name 3 holds a `once`).
        let good = Hot::encode(
            &record(&[(1, 11, 3), (3, 13, 4), (4, 20, 6), (9, 7, 5)]),
            &mut Vec::new(),
        );
        let full = crate::entries::profile::check_full;
        assert_eq!(full(&full_of(&good)), Ok(()));
        let mut refused = 0;
        for at in 0..good.buf.len() {
            for change in [0x01, 0x80, 0xff] {
                let mut bad = good.clone();
                bad.buf[at] ^= change;
                let mut out = Vec::new();
                match bad.put_full(&mut out, None) {
                    Ok(()) => assert_eq!(full(&out), Ok(()), "byte {at} ^ {change:#x}"),
                    Err(_) => refused += 1,
                }
            }
        }
        assert!(refused > 0);
        // A string that is not UTF-8, in the identifiers and in a plain state's value: the
        // bytes "u1" and "s11" as the record holds them.
        for text in [&b"u1"[..], b"s11"] {
            let at = good
                .buf
                .windows(text.len())
                .position(|w| w == text)
                .expect("the string is in the hot record");
            let mut bad = good.clone();
            bad.buf[at] = 0xff;
            assert!(bad.put_full(&mut Vec::new(), None).is_err(), "{text:?}");
        }
        // Names out of order.
        let mut bad = good.clone();
        bad.dir.swap(0, 1);
        assert!(bad.put_full(&mut Vec::new(), None).is_err());
    }
}
