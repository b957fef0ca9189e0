//! Profile records (docs/format.md, "Profile record" and "Profile delta"): the one encoder and
//! the one decoder of a profile's full record (kind `Profile`) and of a delta record (kind
//! `ProfileDelta`), which holds only what one call changed and links to the profile's previous
//! record.

use super::raw::RawStates;
use super::values::{
    StampIndex, StampTable, Stamps, ValueBytes, capture_plain, each_stamp, extend_from,
    plain_set_variant, plain_shape, plain_variant, put_plain_first, put_set_shaped,
    put_set_shaped_short, put_shaped_state, put_stamp, put_stamp_after, put_state, shaped_state,
    shaped_state_or_raw, skip_kept_payload, skip_shaped_state, skip_state, skip_value, stamp,
    stamp_next, state, value,
};
use super::wire::{
    DecodeError, Decoded, Inline, Names, Reader, Utf8, Wire, put_i128, put_u64, varint_form, zigzag,
};
use crate::storage::Location;
pub(crate) use crate::types::record::{Ids, ProfileRecord};
use crate::types::state::{PropState, Stamp};
use crate::types::value::{Timestamp, Value};

/// First byte of a delta record's data. A full record begins with [`FULL_TAG`], or with 0 or
/// 1 (the option tag of its user id) in the layout of revisions 1-4, so a record read by
/// location alone tells which it is.
pub(crate) const DELTA_TAG: u8 = 2;

/// First byte of a full record in the compact layout (revision 5; docs/format.md).
pub(crate) const FULL_TAG: u8 = 3;

/// Most deltas a chain may hold whatever the options say (bounds the work of a damaged
/// record's chain walk; `Options::chain_limit` is checked against it).
pub(crate) const MAX_CHAIN_DEPTH: u32 = 63;

const FLAG_IDS: u8 = 1;
const FLAG_TIMES: u8 = 2;

impl ProfileRecord {
    /// The state of property `id`, if the profile has it.
    #[cfg(test)]
    pub(crate) fn state(&self, id: u32) -> Option<&PropState> {
        let i = self.props.binary_search_by_key(&id, |p| p.0).ok()?;
        Some(&self.props[i].1)
    }

    /// The state of property `id`, creating an empty one.
    pub(crate) fn state_mut(&mut self, id: u32) -> &mut PropState {
        self.state_mut_found(id).0
    }

    /// [`ProfileRecord::state_mut`], and whether the profile had the property.
    pub(crate) fn state_mut_found(&mut self, id: u32) -> (&mut PropState, bool) {
        let (i, found) = match self.props.binary_search_by_key(&id, |p| p.0) {
            Ok(i) => (i, true),
            Err(i) => {
                self.props.insert(i, (id, PropState::default()));
                (i, false)
            }
        };
        (&mut self.props[i].1, found)
    }
}

impl Wire for Ids {
    fn put(&self, out: &mut Vec<u8>) {
        self.user_id.put(out);
        self.email.put(out);
        self.anonymous_ids.put(out);
        self.company_id.put(out);
    }
}

pub(crate) fn ids(r: &mut Reader<'_>) -> Decoded<Ids> {
    let mut ids = Ids::default();
    ids_into(r, &mut ids)?;
    Ok(ids)
}

/// [`ids`] into `ids`, reusing the buffers of the identifiers it holds (the writer decodes
/// each call's profile into a record a previous call left). On an error `ids` holds part of
/// them.
pub(crate) fn ids_into(r: &mut Reader<'_>, ids: &mut Ids) -> Decoded<()> {
    ids_into_by(r, ids, |r, _| r.str())
}

/// Identifiers a caller holds as text (a call's): the record's identifier in the same place
/// with the same bytes is taken as it is ([`Reader::str_known`]), without a UTF-8 check.
/// Nearly every call finds its profile by one of them: its record holds it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Known<'k> {
    pub user_id: Option<&'k str>,
    pub email: Option<&'k str>,
    pub anonymous_id: Option<&'k str>,
}

/// [`ids_into`], each identifier equal to `known`'s in its place taken as it is
/// ([`Reader::str_known`]): the same identifiers, or the same error.
pub(crate) fn ids_into_known(r: &mut Reader<'_>, ids: &mut Ids, known: Known<'_>) -> Decoded<()> {
    let by_slot = known.by_slot();
    ids_into_by(r, ids, |r, slot| r.str_known(by_slot[slot as usize]))
}

impl<'k> Known<'k> {
    /// The identifier known in each [`Slot`]'s place, by the slot's index (none for a company
    /// id). A table, not a `match` on the slot: that compiled to a jump table, whose target
    /// the slots a record holds change from one call to the next (~0.9 mispredicted a W1
    /// call).
    fn by_slot(&self) -> [Option<&'k str>; 4] {
        [self.user_id, self.email, self.anonymous_id, None]
    }
}

/// Which identifier [`ids_into_by`] reads (its index: its place in [`Known::by_slot`]).
#[derive(Clone, Copy, Debug)]
enum Slot {
    UserId,
    Email,
    AnonymousId,
    CompanyId,
}

/// [`ids_into`] with `str` reading each string, into the buffers `ids` holds: a string into
/// its slot's; a buffer left without a string kept for the thread's next
/// (`wire::keep_string`), one needed taken from those.
#[inline(always)]
fn ids_into_by<'a, 's>(
    r: &mut Reader<'a>,
    ids: &mut Ids,
    str: impl Fn(&mut Reader<'a>, Slot) -> Decoded<&'s str>,
) -> Decoded<()> {
    use super::wire::{keep_string, string_gone, string_into, string_of};
    let opt = |r: &mut Reader<'a>, slot: &mut Option<String>, which| -> Decoded<()> {
        if r.some()? {
            string_into(str(r, which)?, slot);
        } else {
            string_gone(slot);
        }
        Ok(())
    };
    opt(r, &mut ids.user_id, Slot::UserId)?;
    opt(r, &mut ids.email, Slot::Email)?;
    let n = r.len(1)?;
    if ids.anonymous_ids.len() > n {
        ids.anonymous_ids.drain(n..).for_each(keep_string);
    }
    for i in 0..n {
        let s = str(r, Slot::AnonymousId)?;
        match ids.anonymous_ids.get_mut(i) {
            Some(buf) => {
                buf.clear();
                buf.push_str(s);
            }
            None => ids.anonymous_ids.push(string_of(s)),
        }
    }
    opt(r, &mut ids.company_id, Slot::CompanyId)
}

/// Step over the identifiers [`ids`] reads, with the same checks.
fn skip_ids(r: &mut Reader<'_>) -> Decoded<()> {
    if r.some()? {
        r.skip_str()?;
    }
    if r.some()? {
        r.skip_str()?;
    }
    for _ in 0..r.len(1)? {
        r.skip_str()?;
    }
    if r.some()? {
        r.skip_str()?;
    }
    Ok(())
}

/// The length of each property state of one full record, in order (not the name before it),
/// one byte each, `0` for a state of 256 bytes or more: kept by the writer cache beside a
/// record it encoded, so that a partial fold steps over a state in one jump instead of
/// reading it ([`Fold::full_with_lens`]). Never stored in the log.
pub(crate) type StateLens<'a> = &'a [u8];

/// Append a full record's bytes to `out`: the compact layout (revision 5, [`FULL_TAG`]); and,
/// given `lens` (cleared first), the byte length of each property's state into it, in order,
/// as a [`StateLens`] table: what the writer cache keeps beside the record.
pub(crate) fn put_full(rec: &ProfileRecord, out: &mut Vec<u8>, mut lens: Option<&mut Vec<u8>>) {
    if let Some(lens) = lens.as_deref_mut() {
        lens.clear();
    }
    let table = StampTable::of(rec.props.iter().map(|(_, p)| p));
    put_full_head(
        |out| rec.ids.put(out),
        (rec.first_seen, rec.updated_at),
        &table,
        rec.props.len(),
        out,
    );
    let mut names = Names::default();
    for (id, p) in &rec.props {
        names.put(out, *id);
        let from = out.len();
        put_shaped_state(p, &table, out);
        if let Some(lens) = lens.as_deref_mut() {
            lens.push(u8::try_from(out.len() - from).unwrap_or(0));
        }
    }
}

/// [`put_full`] of a record whose every state is `lww` alone (a set or a removal) at one
/// stamp: a new profile's, each state set by the call that created it (a fifth of W1's
/// calls). Its table is that stamp alone and every state's index 0, so no table is built nor
/// a stamp looked up: each state is written from its value ([`put_plain_first`]). `false`,
/// `out` as it was and `lens` holding no length of it, at the first state of another kind or
/// stamp (or no state): `put_full` writes the record then. Debug builds check the bytes and lengths against `put_full`'s.
pub(crate) fn put_full_one_stamp(
    rec: &ProfileRecord,
    out: &mut Vec<u8>,
    mut lens: Option<&mut Vec<u8>>,
) -> bool {
    let Some((
        _,
        PropState {
            lww: Some((stamp, _)),
            ..
        },
    )) = rec.props.first()
    else {
        return false;
    };
    let start = out.len();
    if let Some(lens) = lens.as_deref_mut() {
        lens.clear();
    }
    put_full_start(
        |out| rec.ids.put(out),
        (rec.first_seen, rec.updated_at),
        out,
    );
    // The table (`StampTable::put_deltas` of one stamp: its length, the stamp whole) and the
    // count of states.
    out.push(1);
    put_stamp(*stamp, out);
    put_u64(out, rec.props.len() as u64);
    let mut names = Names::default();
    for (id, p) in &rec.props {
        let value = match p {
            PropState {
                lww: Some((s, value)),
                once: None,
                adds: None,
            } if s == stamp => value.as_ref(),
            _ => {
                out.truncate(start);
                if let Some(lens) = lens {
                    lens.clear();
                }
                return false;
            }
        };
        names.put(out, *id);
        let from = out.len();
        put_plain_first(value, out);
        if let Some(lens) = lens.as_deref_mut() {
            lens.push(u8::try_from(out.len() - from).unwrap_or(0));
        }
    }
    #[cfg(debug_assertions)]
    {
        let mut want = Vec::new();
        let mut want_lens = Vec::new();
        put_full(rec, &mut want, Some(&mut want_lens));
        debug_assert_eq!(
            &out[start..],
            &want[..],
            "put_full_one_stamp: not put_full's bytes"
        );
        if let Some(lens) = lens {
            debug_assert_eq!(
                *lens, want_lens,
                "put_full_one_stamp: not put_full's lengths"
            );
        }
    }
    true
}

/// A state of a full record written from its parts ([`put_full_parts`]).
pub(crate) enum Part<'a> {
    /// A plain set at the stamp, to the value whose bytes (as `Value::put` writes them) are
    /// given (`None`: a removal): a captured state (`entries::raw`) or a fast-path set.
    Plain(Stamp, Option<&'a [u8]>),
    /// Any state, built.
    State(&'a PropState),
}

/// [`put_full`] of the profile whose identifiers, times and states (`parts`, sorted by name,
/// each once) are given, without building the plain states: the bytes `put_full` writes of
/// the record they make, and its state lengths into `lens` (cleared first). An error (a
/// value's bytes that do not start with a known variant, names out of order) is a bug of
/// the caller's: nothing is to be written then.
pub(crate) fn put_full_parts(
    ids: &Ids,
    times: (Timestamp, Timestamp),
    parts: &[(u32, Part<'_>)],
    out: &mut Vec<u8>,
    lens: &mut Vec<u8>,
) -> Decoded<()> {
    lens.clear();
    // The distinct stamps (a profile's states share a few) in the order met, and each plain
    // part's among them (its slot): a plain part's index in the sorted table is then its
    // slot's, found once a stamp instead of searched once a state. Consecutive parts often
    // share a stamp (the call's sets, states set by one call): the last one met is tried
    // first.
    let mut stamps = Stamps::new();
    // A slot past 254 noted as 255: only the first eight are looked up (below).
    let mut slots = smallvec::SmallVec::<[u8; 128]>::new();
    let mut last: Option<(Stamp, u32)> = None;
    for (_, part) in parts {
        match part {
            Part::Plain(s, _) => {
                let slot = match last {
                    Some((l, slot)) if l == *s => slot,
                    _ => {
                        let slot = match stamps.iter().position(|x| x == s) {
                            Some(i) => i as u32,
                            None => {
                                stamps.push(*s);
                                (stamps.len() - 1) as u32
                            }
                        };
                        last = Some((*s, slot));
                        slot
                    }
                };
                slots.push(u8::try_from(slot).unwrap_or(u8::MAX));
            }
            Part::State(p) => each_stamp(p, |s| {
                if !stamps.contains(&s) {
                    stamps.push(s);
                }
            }),
        }
    }
    // Each slot's index in the sorted table, while the stamps fit in place (eight: copied on
    // the stack, so that sorting them allocates nothing more); past that each plain part's
    // index is searched in the table.
    let mut met = [Stamp::new(Timestamp(0), 0); 8];
    let met = match met.get_mut(..stamps.len()) {
        Some(met) => {
            met.copy_from_slice(&stamps);
            &met[..]
        }
        None => &[][..],
    };
    let table = StampTable::sorted(stamps);
    let mut ranks = [0u32; 8];
    for (rank, s) in ranks.iter_mut().zip(met) {
        *rank = table.index_of(s);
    }
    put_full_head(|out| ids.put(out), times, &table, parts.len(), out);
    let mut names = Names::default();
    let mut last = None;
    let mut slots = slots.iter();
    for (id, part) in parts {
        if last.is_some_and(|last| last >= *id) {
            return Err(DecodeError {
                at: out.len(),
                reason: "full record from parts: names out of order",
            });
        }
        last = Some(*id);
        names.put(out, *id);
        let from = out.len();
        match part {
            Part::Plain(s, value) => {
                // One slot a plain part, pushed in the same order.
                let index = match slots.next() {
                    Some(&slot) if usize::from(slot) < met.len() => ranks[usize::from(slot)],
                    _ => table.index_of(s),
                };
                match value {
                    Some(value) => put_set_shaped(value, index, out)?,
                    // A removal (rare): written as its state is.
                    None => put_shaped_state(
                        &PropState {
                            lww: Some((*s, None)),
                            once: None,
                            adds: None,
                        },
                        &table,
                        out,
                    ),
                }
            }
            Part::State(p) => put_shaped_state(p, &table, out),
        }
        lens.push(u8::try_from(out.len() - from).unwrap_or(0));
    }
    Ok(())
}

/// Most stamps a full record's table may hold for [`splice_full`] (which keeps a bitmap of
/// the ones still used).
pub(crate) const SPLICE_STAMPS: usize = 64;

/// Most states a full record may hold for [`splice_full`] (which lists the ones a call leaves
/// on the stack).
const SPLICE_STATES: usize = 128;

/// States [`first_not_below`] compares with a name at once, without a branch a state: a
/// [`FullMap`] keeps this many states named `u32::MAX` after its record's.
const AHEAD: usize = 8;

/// The first of the states `olds[from..n]` (their names increasing) whose name is not below
/// `name`, or `n`: `from` passed over the states below `name`, as
/// `while from < n && olds[from].0 < name { from += 1 }`, [`AHEAD`] states at a time (each
/// compared, the states below counted; another [`AHEAD`] only when all were). `olds[n..]`
/// holds at least [`AHEAD`] states named `u32::MAX` (a [`FullMap`]'s `olds` does, after its
/// `n`), which no name is below. The walk a state at a time branched on each state: its
/// exit, where the call's name falls in the record, mispredicted about once a name
/// (`map_full` finds ~9 names a call in ~35 states).
#[inline(always)]
fn first_not_below(olds: &[(u32, u32, u32)], n: usize, mut from: usize, name: u32) -> usize {
    loop {
        let Some(ahead) = olds
            .get(from..)
            .and_then(|rest| rest.first_chunk::<AHEAD>())
        else {
            // Not without the states after the record's: the walk a state at a time.
            while olds.get(from).is_some_and(|o| from < n && o.0 < name) {
                from += 1;
            }
            return from;
        };
        let below: usize = ahead.iter().map(|o| usize::from(o.0 < name)).sum();
        from += below;
        if below < AHEAD {
            return from;
        }
    }
}

/// Where the parts of a full record sit, read once by [`map_full`] for [`splice_mapped`]: where
/// its identifiers end, its times, its stamp table (each stamp, and where its bytes start),
/// and each state's name, where its name's gap starts and where the state starts. Boxed and
/// reused (`apply`'s pools): it is ~5.3 KB, filled only as far as the record goes.
pub(crate) struct FullMap {
    /// Where the record's bytes sit and their length: a map is used only with the record it
    /// was read from (the same bytes, not moved since).
    from: (usize, usize),
    ids_end: usize,
    /// `first_seen` and `updated_at`.
    pub times: (Timestamp, Timestamp),
    n_stamps: usize,
    stamps: [Stamp; SPLICE_STAMPS],
    /// `at[i]`: where stamp `i` starts; `at[n_stamps]`: where the table ends.
    at: [usize; SPLICE_STAMPS + 1],
    n: usize,
    /// (name, where its name's gap starts, where its state starts); after the `n` states,
    /// [`AHEAD`] named `u32::MAX` (for [`first_not_below`]).
    olds: [(u32, u32, u32); SPLICE_STATES + AHEAD],
    /// The states of the call's names (`map_full`'s `only`) the record holds, in name order:
    /// each a plain set or removal, found by the map and captured from the record's bytes
    /// only when asked ([`FullMap::capture`]), or read from them by the call's history step
    /// ([`MappedStates`]).
    n_found: usize,
    found: [Found; SPLICE_STATES],
    /// Where each of the first [`LANDS`] names of `map_full`'s `only` lands in the record (as
    /// [`Lands`] keeps a set's: the first state not before it, and whether it is that
    /// state's), with the name; `n_lands` of them. What [`splice_mapped`] finds for a set of
    /// the same name (the fast path's sets are the call's names), not sought again.
    lands: [(u32, u16); LANDS],
    n_lands: usize,
    /// The states found are not captured yet: the load left them in the record (see
    /// [`full_mapped`]).
    pub pending: bool,
}

/// A state of one of the call's names in a mapped record: its name, where its compact state
/// starts and its length (a plain set or removal: shape, one-byte stamp index, payload), its
/// stamp's index in the record's table (below the map's [`SPLICE_STAMPS`]), and its value's
/// variant (its shape's, [`REMOVAL`] for a removal).
#[derive(Clone, Copy, Default)]
struct Found {
    name: u32,
    at: u32,
    len: u8,
    index: u8,
    variant: u8,
}

/// [`Found::variant`] of a removal (`values::plain_variant`'s).
const REMOVAL: u8 = u8::MAX;

impl FullMap {
    pub(crate) fn new() -> FullMap {
        FullMap {
            from: (0, usize::MAX),
            ids_end: 0,
            times: (Timestamp(0), Timestamp(0)),
            n_stamps: 0,
            stamps: [Stamp::new(Timestamp(0), 0); SPLICE_STAMPS],
            at: [0; SPLICE_STAMPS + 1],
            n: 0,
            olds: [(0, 0, 0); SPLICE_STATES + AHEAD],
            n_found: 0,
            found: [Found::default(); SPLICE_STATES],
            lands: [(0, 0); LANDS],
            n_lands: 0,
            pending: false,
        }
    }

    /// The name and stamp of each state found (see [`FullMap::found`]), in name order.
    #[inline]
    pub(crate) fn found(&self) -> impl ExactSizeIterator<Item = (u32, Stamp)> + '_ {
        (0..self.n_found).map(|j| self.found_at(j))
    }

    /// How many states [`FullMap::found`] gives.
    #[inline]
    pub(crate) fn n_found(&self) -> usize {
        self.n_found
    }

    /// The name and stamp of the `j`-th state found, for `j` below [`FullMap::n_found`].
    #[inline]
    pub(crate) fn found_at(&self, j: usize) -> (u32, Stamp) {
        let f = &self.found[j];
        (f.name, self.stamps[usize::from(f.index)])
    }

    /// Capture the states found into `raw` (as `Fold::only_capturing` captures them), from
    /// `old`, the record the map was read from; `false` (nothing captured) when it is not.
    pub(crate) fn capture(&self, old: &[u8], raw: &mut RawStates) -> bool {
        if self.from != (old.as_ptr() as usize, old.len()) {
            return false;
        }
        for f in &self.found[..self.n_found] {
            let at = f.at as usize;
            // Within `old`: `map_full` checked each state's bounds, shape and stamp index.
            if let Some(state) = ValueBytes::within(old, at..at + usize::from(f.len)) {
                capture_plain(raw, f.name, self.stamps[usize::from(f.index)], state);
            }
        }
        true
    }
}

/// A state of [`MappedStates`]: its name, its stamp, and its value (see [`MappedStates::get`]).
pub(crate) type MappedState<'a> = (u32, Stamp, MappedValue<'a>);

/// The value of a [`MappedState`]: `None` for a removal, else the state's bytes after its shape
/// and the byte to be written over their first (see [`MappedStates::get`]).
pub(crate) type MappedValue<'a> = Option<(&'a [u8], u8)>;

/// The states a map found (see [`FullMap::found`]), read from the bytes of the record it was
/// read from: what the call's history step writes as their states before, with no capture.
#[derive(Clone, Copy)]
pub(crate) struct MappedStates<'a> {
    old: &'a [u8],
    found: &'a [Found],
    stamps: &'a [Stamp; SPLICE_STAMPS],
}

impl<'a> MappedStates<'a> {
    /// The states `map` found in `old`; `None` when `map` was not read from `old`.
    pub(crate) fn of(old: &'a [u8], map: &'a FullMap) -> Option<MappedStates<'a>> {
        (map.from == (old.as_ptr() as usize, old.len())).then_some(MappedStates {
            old,
            found: map.found.get(..map.n_found).unwrap_or_default(),
            stamps: &map.stamps,
        })
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.found.len()
    }

    /// State `k`'s name, its stamp, and its value (`None`: a removal) as `over`, the state's
    /// bytes after its shape (the stamp index, then the payload), with `variant` to be written
    /// over their first byte: the value's bytes as `Value::put` writes them. `None` past the
    /// last state.
    #[inline(always)]
    pub(crate) fn get(&self, k: usize) -> Option<MappedState<'a>> {
        let (name, index, value) = self.get_indexed(k)?;
        Some((name, self.stamp(index), value))
    }

    /// State `k` as [`MappedStates::get`] gives it, its stamp given as its index in the
    /// record's table (below [`SPLICE_STAMPS`], [`MappedStates::stamp`]). The table's stamps
    /// strictly increase (`map_stamps` checks it), so two states have the same stamp exactly
    /// when they have the same index.
    #[inline(always)]
    pub(crate) fn get_indexed(&self, k: usize) -> Option<(u32, usize, MappedValue<'a>)> {
        let f = self.found.get(k)?;
        let at = f.at as usize;
        // `map_full` checked the state's bounds and shape, and its stamp index (below
        // `SPLICE_STAMPS`), against these bytes (`of`).
        debug_assert!(
            self.old.get(at).is_some_and(|&b| plain_shape(b)
                && plain_set_variant(b).map_or(REMOVAL, |v| v as u8) == f.variant),
            "a plain state"
        );
        let value = match f.variant {
            REMOVAL => None,
            v => Some((
                self.old
                    .get(at + 1..at + usize::from(f.len))
                    .unwrap_or_default(),
                v,
            )),
        };
        Some((f.name, usize::from(f.index) % SPLICE_STAMPS, value))
    }

    /// State `k` as [`MappedStates::get_indexed`] gives it, its value given by place instead
    /// of as a slice: its name, its stamp's index, where the state ends in
    /// [`MappedStates::record`], and its value's length and variant (`(0, None)` for a
    /// removal): the value is the `len` bytes before the end, the variant over their first.
    /// For a writer that copies the value as a fixed-size window of the record ending there,
    /// with no branch on its length. `None` past the last state.
    #[inline(always)]
    pub(crate) fn get_placed(&self, k: usize) -> Option<(u32, usize, usize, usize, Option<u8>)> {
        let f = self.found.get(k)?;
        let end = f.at as usize + usize::from(f.len);
        let variant = (f.variant != REMOVAL).then_some(f.variant);
        // A state is at least its shape and its stamp index (`map_full`): a value is the
        // state's bytes after its shape.
        let len = usize::from(f.len.saturating_sub(1)) * usize::from(variant.is_some());
        Some((
            f.name,
            usize::from(f.index) % SPLICE_STAMPS,
            end,
            len,
            variant,
        ))
    }

    /// The record's bytes (those [`MappedStates::get_placed`] places states in).
    #[inline(always)]
    pub(crate) fn record(&self) -> &'a [u8] {
        self.old
    }

    /// The stamp at `index` of the record's table (one of [`MappedStates::get_indexed`]'s).
    #[inline(always)]
    pub(crate) fn stamp(&self, index: usize) -> Stamp {
        self.stamps[index % SPLICE_STAMPS]
    }
}

/// Read where the parts of `old` sit into `map` (see [`FullMap`]): a full record this process
/// encoded, with its state lengths `old_lens`. With `ids`, its identifiers decoded into it
/// (as [`ids_into`]; those equal to the call's [`Known`] ones taken as the call's); with
/// `only`, the state of each name it lists (sorted) that the record holds found
/// ([`FullMap::found`]: captured by [`FullMap::capture`] as `values::shaped_state_or_raw`
/// captures a plain one). `Ok(false)`, the map not to be used (and the identifiers partial),
/// when the record is not one [`splice_mapped`] writes from: more than [`SPLICE_STATES`]
/// states or [`SPLICE_STAMPS`] stamps, a state of 256 bytes or more (its length is not kept),
/// or a state found that is not a plain set or removal. An error: bytes that are not such a record (only a bug
/// gets there: the cache's records are this process's).
pub(crate) fn map_full(
    old: &[u8],
    old_lens: StateLens<'_>,
    ids: Option<(&mut Ids, Known<'_>)>,
    only: Option<&[u32]>,
    map: &mut FullMap,
) -> Decoded<bool> {
    debug_assert!(
        only.is_none_or(|only| only.is_sorted_by(|a, b| a < b)),
        "the call's names sorted, each once"
    );
    map.from = (0, usize::MAX);
    map.n_found = 0;
    map.n_lands = 0;
    map.pending = false;
    let mut r = Reader::checked_before(old);
    if r.u8()? != FULL_TAG {
        return Ok(false);
    }
    match ids {
        Some((ids, known)) => ids_into_known(&mut r, ids, known)?,
        None => skip_ids(&mut r)?,
    }
    map.ids_end = r.position();
    map.times = compact_times(&mut r)?;
    // The stamp table: each stamp, and where its bytes start, so that a splice copies the
    // bytes of the stamps it keeps in a row.
    let n_stamps = r.len(2)?;
    if n_stamps > SPLICE_STAMPS {
        return Ok(false);
    }
    map_stamps(&mut r, &mut map.stamps[..n_stamps], &mut map.at[..n_stamps])?;
    map.at[n_stamps] = r.position();
    map.n_stamps = n_stamps;
    let n = r.len(2)?;
    if old_lens.len() != n || n > SPLICE_STATES {
        return Ok(false);
    }
    let broken = |at: usize, reason| DecodeError { at, reason };
    // Two walks: every state's place first (a tight loop: ~18 instructions a state), then
    // the states to capture, found in the map. One walk doing both, the list of names to
    // capture walked beside the record's, kept its counters on the stack: ~45 a state.
    let pos = match map_states(old, r.position(), old_lens, &mut map.olds[..n])? {
        Some(pos) => pos,
        None => return Ok(false),
    };
    if pos != old.len() {
        return Err(broken(pos, "trailing bytes after the record"));
    }
    // The states after the record's, for `first_not_below`.
    if let Some(after) = map.olds.get_mut(n..n + AHEAD) {
        after.fill((u32::MAX, 0, 0));
    }
    if let Some(only) = only {
        // Both sorted: each name to capture found past the one before. The state there is
        // read whether it is the name's or not, and counted found or not without a branch
        // (a name the record does not hold, ~1 of 7 in W1, mispredicted as one).
        let olds = &map.olds;
        let mut j = 0;
        let mut found = 0;
        let mut landed = 0;
        for (k, &wanted) in only.iter().enumerate() {
            j = first_not_below(olds, n, j, wanted);
            let (Some(&(name, _, state)), Some(&len)) = (olds[..n].get(j), old_lens.get(j)) else {
                // Past the record's states (as the names after it: `splice_mapped` finds them).
                if let Some(slot) = map.lands.get_mut(k) {
                    *slot = (wanted, Lands::code(n, false));
                }
                landed = k + 1;
                break;
            };
            let hit = name == wanted;
            if let Some(slot) = map.lands.get_mut(k) {
                *slot = (wanted, Lands::code(j, hit));
            }
            landed = k + 1;
            // Within `old`: `map_states` checked each state's end.
            let state = state as usize;
            let bytes = &old[state..state + usize::from(len)];
            // A stamp index below the table's 64 stamps is one byte (varints below 251
            // are), the one after the shape.
            let (shape, index) = match *bytes {
                [shape, index, ..] if plain_shape(shape) => (shape, usize::from(index)),
                _ if hit => return Ok(false),
                _ => continue,
            };
            if hit & (index >= n_stamps) {
                return Err(broken(state + 1, "stamp index beyond the table"));
            }
            // Each found is a state of its own: fewer than `n` (at most `SPLICE_STATES`).
            if let Some(slot) = map.found.get_mut(found) {
                *slot = Found {
                    name,
                    at: state as u32,
                    len,
                    index: index as u8,
                    variant: plain_variant(shape),
                };
            }
            found += usize::from(hit);
            j += usize::from(hit);
        }
        map.n_found = found;
        map.n_lands = landed.min(LANDS);
    }
    map.n = n;
    map.from = (old.as_ptr() as usize, old.len());
    Ok(true)
}

/// [`map_full`]'s read of a stamp table of `stamps.len()` stamps at `r`: each stamp, and
/// where its bytes start into `at`. Out of line, as [`map_states`]: in `map_full` the loop
/// kept its values on the stack. The first stamp read whole, each later one by
/// [`stamp_next`] (inline: the stamp before it kept in registers, ~25 instructions a stamp
/// against ~85 through `stamp_after`), as `stamp_after` reads them.
#[inline(never)]
fn map_stamps(r: &mut Reader<'_>, stamps: &mut [Stamp], at: &mut [usize]) -> Decoded<()> {
    let (Some((first, stamps)), Some((first_at, at))) =
        (stamps.split_first_mut(), at.split_first_mut())
    else {
        return Ok(());
    };
    *first_at = r.position();
    let mut prev = stamp(r)?;
    *first = prev;
    for (slot, at) in stamps.iter_mut().zip(at) {
        *at = r.position();
        prev = stamp_next(r, prev)?;
        *slot = prev;
    }
    Ok(())
}

/// [`map_full`]'s walk over the states of `old` from `pos` (the first one's name gap), their
/// lengths `lens`: each state's name, where its gap starts and where it starts into `olds`
/// (as long as `lens`). Where the last state ends, or `None` for a state of 256 bytes or
/// more (its length is not kept). An error: names out of order or beyond 32 bits, a state
/// past the end of `old`.
///
/// The walk of a record as the cache keeps them (every state's length kept, every name gap
/// one byte): one bound and one range check a state. Each state's end is not checked against
/// `old`'s: the next state's gap is read within `old` (else the checked walk), and the last
/// state's end is checked once; no name can pass 32 bits (at most `SPLICE_STATES` gaps, each
/// below 251). Anything else, from a gap of 251 or more to a damaged
/// record, is walked again from the start by [`map_states_checked`], which decides: the same
/// result, or the same error, as it alone gives (~18 instructions a state, from ~24).
#[inline]
fn map_states(
    old: &[u8],
    start: usize,
    lens: StateLens<'_>,
    olds: &mut [(u32, u32, u32)],
) -> Decoded<Option<usize>> {
    debug_assert!(olds.len() <= SPLICE_STATES);
    // A state of 256 bytes or more (its length 0) ends the walk: the checked walk says where.
    if lens.iter().fold(u8::MAX, |m, &l| m.min(l)) == 0 {
        return map_states_checked(old, start, lens, olds);
    }
    let mut pos = start;
    // At most `SPLICE_STATES` gaps below 251: far below 2^32.
    let mut name = 0u32;
    // The least gap, less one, as a wrapping range: any below 251 for the first, 1 to 250
    // after (names strictly increase).
    let mut least = 0u8;
    for (&len, slot) in lens.iter().zip(olds.iter_mut()) {
        let gap_at = pos;
        let Some(&b) = old.get(pos) else {
            return map_states_checked(old, start, lens, olds);
        };
        if b.wrapping_sub(least) >= 251 - least {
            return map_states_checked(old, start, lens, olds);
        }
        least = 1;
        name += u32::from(b);
        pos += 1;
        *slot = (name, gap_at as u32, pos as u32);
        pos += usize::from(len);
    }
    if pos > old.len() {
        return map_states_checked(old, start, lens, olds);
    }
    Ok(Some(pos))
}

/// [`map_states`] with every check at each state: the walk that decides when the lean one
/// meets anything but one-byte gaps of increasing names and states within `old`.
#[cold]
#[inline(never)]
fn map_states_checked(
    old: &[u8],
    mut pos: usize,
    lens: StateLens<'_>,
    olds: &mut [(u32, u32, u32)],
) -> Decoded<Option<usize>> {
    let broken = |at: usize, reason| DecodeError { at, reason };
    let mut name = 0u32;
    // The least gap a name may have: any for the first, 1 after (names strictly increase).
    let mut least_gap = 0;
    for (&len, slot) in lens.iter().zip(olds) {
        let gap_at = pos;
        let gap = match old.get(pos) {
            Some(&b) if b < 251 => {
                pos += 1;
                u32::from(b)
            }
            _ => {
                let (gap, width) = wide_gap(old, pos)?;
                pos += width;
                gap
            }
        };
        if gap < least_gap {
            return Err(broken(pos, "property names out of order"));
        }
        least_gap = 1;
        name = name
            .checked_add(gap)
            .ok_or(broken(pos, "property name beyond 32 bits"))?;
        if len == 0 {
            return Ok(None);
        }
        let state = pos;
        pos += usize::from(len);
        if pos > old.len() {
            return Err(broken(state, "record ends early"));
        }
        *slot = (name, gap_at as u32, state as u32);
    }
    Ok(Some(pos))
}

/// A name gap of [`map_states`] that is not one byte (251 or more), or past the end of
/// `old`: the gap and its width. Out of line, so that the walk keeps its registers.
#[cold]
#[inline(never)]
fn wide_gap(old: &[u8], pos: usize) -> Decoded<(u32, usize)> {
    let Some(rest) = old.get(pos..).filter(|rest| !rest.is_empty()) else {
        return Err(DecodeError {
            at: pos,
            reason: "record ends early",
        });
    };
    let mut g = Reader::checked_before(rest);
    let gap = g.u32()?;
    Ok((gap, g.position()))
}

/// The identifiers, times and the states of `only` (sorted) of a full record this process
/// encoded, `old` with its state lengths `old_lens`: what `Fold::only_capturing` folds of it
/// (plain states captured into `raw`, which is emptied first; the record's list of states
/// left empty), read by [`map_full`] into `map` on the way, for the call's
/// [`splice_mapped`]. `Ok(None)` when [`map_full`] does not map the record (`raw` emptied):
/// fold it instead. `into`: a record whose buffers the result reuses. `capture`: the states
/// captured into `raw`; else left in the record, found by the map ([`FullMap::pending`]), for
/// [`FullMap::capture`] to capture when the call needs them (the fast path's history step
/// reads them from the record's bytes, [`MappedStates`]). `known`: the call's identifiers
/// ([`Known`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn full_mapped(
    old: &[u8],
    old_lens: StateLens<'_>,
    only: &[u32],
    raw: &mut RawStates,
    capture: bool,
    into: ProfileRecord,
    map: &mut FullMap,
    known: Known<'_>,
) -> Decoded<Option<ProfileRecord>> {
    raw.clear();
    let ProfileRecord {
        mut ids, mut props, ..
    } = into;
    if !map_full(old, old_lens, Some((&mut ids, known)), Some(only), map)? {
        return Ok(None);
    }
    if capture {
        map.capture(old, raw);
    } else {
        map.pending = true;
    }
    // Room for the names a call adds, as `shaped_props` leaves.
    props.clear();
    props.reserve(only.len().min(map.n) + ROOM);
    Ok(Some(ProfileRecord {
        ids,
        first_seen: map.times.0,
        updated_at: map.times.1,
        props,
    }))
}

/// [`put_full`] of the profile after a call that set the properties `sets` (sorted by name,
/// each once; each value's bytes as `Value::put` writes them) at `stamp`, changing no
/// identifier, written from the profile's full record before the call: `old`, bytes this
/// process encoded (`put_full`, or this), with its state lengths `old_lens`. The identifiers'
/// bytes and every other state's payload are copied, each state's stamp index renumbered into
/// the new table (the old one's stamps still used, then `stamp`), the times written anew:
/// the bytes `put_full` writes of the profile after the call, and its state lengths into
/// `lens` (both cleared first). `Ok(false)`, nothing to use in `out`, when the record is not
/// one this writes: `stamp` not after every stamp of its table, a state the call leaves that
/// is not a plain set or removal, or one [`map_full`] does not map. An error: bytes that are
/// not such a record (only a bug gets there: the cache's records are this process's).
pub(crate) fn splice_full<'v>(
    old: &[u8],
    old_lens: StateLens<'_>,
    times: (Timestamp, Timestamp),
    stamp: Stamp,
    sets: impl Iterator<Item = (u32, &'v [u8])> + Clone,
    out: &mut Vec<u8>,
    lens: &mut Vec<u8>,
) -> Decoded<bool> {
    out.clear();
    lens.clear();
    let mut map = FullMap::new();
    if !map_full(old, old_lens, None, None, &mut map)? {
        return Ok(false);
    }
    splice_mapped(old, old, old_lens, &map, times, stamp, sets, out, lens)
}

/// [`splice_full`] with `old`'s [`FullMap`], read by [`map_full`] (by the call's load,
/// [`full_mapped`]): the record is not walked again. `Ok(false)` also when `map` is not
/// `old`'s. `padded`: the buffer `old` starts (the cache's chain: its state lengths and more
/// follow the record), or `old` itself: the copies of runs read fixed-size pieces from it,
/// past `old`'s end (what they copy is `old`'s bytes alone).
// Out of line: one call site, and profiles then show its own cost (docs/performance.md,
// round 36).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn splice_mapped<'v>(
    padded: &[u8],
    old: &[u8],
    old_lens: StateLens<'_>,
    map: &FullMap,
    times: (Timestamp, Timestamp),
    stamp: Stamp,
    sets: impl Iterator<Item = (u32, &'v [u8])> + Clone,
    out: &mut Vec<u8>,
    lens: &mut Vec<u8>,
) -> Decoded<bool> {
    out.clear();
    lens.clear();
    if map.from != (old.as_ptr() as usize, old.len()) || map.n != old_lens.len() {
        return Ok(false);
    }
    let n_stamps = map.n_stamps;
    let (stamps, at) = (&map.stamps[..n_stamps], &map.at);
    if stamps.last().is_some_and(|last| *last >= stamp) {
        return Ok(false);
    }
    let ids = &old[1..map.ids_end];
    // A fixed-size piece of a run near `old`'s end reads on into the bytes after it (else a
    // `memcpy` call): `padded` only when it starts where `old` does.
    let padded = match padded.get(..old.len()) {
        Some(head) if head.as_ptr() == old.as_ptr() => padded,
        _ => old,
    };
    let olds = &map.olds[..map.n];
    let n = olds.len();
    let old_lens = &old_lens[..n];
    // Where each set lands (the first state not before its name) and the states the sets
    // replace (those of their names): as the map found them for the call's names, else found
    // [`AHEAD`] states at a time (`first_not_below`, over the map's states with its
    // `u32::MAX` ones after them). No loop over a run of states, whose exit mispredicted
    // about once a set; the states kept are then walked by the bits of a mask.
    let mut lands = Lands::default();
    let mut replaced = [0u64; SPLICE_STATES / 64];
    let mut n_replaced = 0;
    let mut i = 0;
    let mapped = &map.lands[..map.n_lands.min(LANDS)];
    for (k, (name, _)) in sets.clone().enumerate() {
        // Found by the map when the set is the `k`th of the names it was given (every set of
        // the fast path's) and lands no earlier than the set before it ended (so a caller's
        // names out of order cannot make a replaced state part of a kept run), else here.
        let land = match mapped.get(k) {
            Some(&(wanted, land)) if (wanted == name) & (Lands::place(land).0 >= i) => land,
            _ => {
                let at = first_not_below(&map.olds[..], n, i, name);
                Lands::code(
                    at,
                    map.olds.get(at).is_some_and(|o| (at < n) & (o.0 == name)),
                )
            }
        };
        lands.push(land);
        let (at, hit) = Lands::place(land);
        replaced[(at / 64) % replaced.len()] |= u64::from(hit) << (at % 64);
        n_replaced += usize::from(hit);
        i = at + usize::from(hit);
    }
    let replaced = &replaced;
    // The stamps the states the call leaves use (each must be a plain set or removal).
    let Some(used) = used_stamps(old, olds, old_lens, replaced, n_stamps)? else {
        return Ok(false);
    };
    let kept = n - n_replaced;
    let n_sets = lands.n;
    // The new table: the stamps still used, in order, then the call's (if it set anything).
    let mut renumber = [0u8; SPLICE_STAMPS];
    let mut kept_stamps = 0;
    // Each stamp kept numbered, found by the bits of `used` (a dropped one is never read): one
    // loop a kept stamp, no branch a stamp on whether it is kept.
    let mut bits = used;
    while bits != 0 {
        renumber[bits.trailing_zeros() as usize % SPLICE_STAMPS] = kept_stamps as u8;
        kept_stamps += 1;
        bits &= bits - 1;
    }
    let call = kept_stamps as u32;
    out.reserve(old.len() + 32 * n_sets);
    lens.reserve(kept + n_sets);
    // Every set replacing a state (a call setting the names it set before: most): the
    // lengths are the old ones, each set's written over its state's, one copy instead of
    // one a run.
    let in_place = n_replaced == n_sets;
    if in_place {
        extend_part(lens, padded, old_lens);
    }
    put_full_start(|out| out.extend_from_slice(ids), times, out);
    put_u64(out, (kept_stamps + usize::from(n_sets > 0)) as u64);
    // Each run of stamps kept in a row is the old table's bytes but for its first stamp's when
    // the stamp before it is gone (its distance is from another stamp now).
    let mut last: Option<usize> = None;
    // Each run found by counting bits (the stamps skipped, then the run's), not by a branch a
    // stamp. `used` has no bit at `n_stamps` or above (the indexes were checked).
    let mut i = 0;
    while i < n_stamps {
        i += (used >> i).trailing_zeros() as usize;
        if i >= n_stamps {
            break;
        }
        let j = (i + (used >> i).trailing_ones() as usize).min(n_stamps);
        match last {
            None if i == 0 => extend_from::<RUN_PIECE>(out, padded, at[0], at[j]),
            None => {
                put_stamp(stamps[i], out);
                extend_from::<RUN_PIECE>(out, padded, at[i + 1], at[j]);
            }
            Some(p) => {
                put_stamp_after(stamps[p], stamps[i], out);
                extend_from::<RUN_PIECE>(out, padded, at[i + 1], at[j]);
            }
        }
        last = Some(j - 1);
        i = j;
    }
    if n_sets > 0 {
        match last {
            None => put_stamp(stamp, out),
            Some(p) => put_stamp_after(stamps[p], stamp, out),
        }
    }
    put_u64(out, (kept + n_sets) as u64);
    // The states: each run of states the call leaves (those between two of its names) copied
    // in one piece with their lengths, then each set written.
    let renumber = (kept_stamps != n_stamps).then_some(&renumber);
    let mut run = Run {
        old,
        padded,
        old_lens,
        olds,
        renumber,
        names: Names::default(),
        written: None,
        lens_copied: in_place,
    };
    let mut a = 0;
    for (k, (set, value)) in sets.enumerate() {
        // One a set, pushed in the same order (the same iterator's clone walked).
        let Some((b, replaces)) = lands.get(k) else {
            debug_assert!(false, "the sets' second walk is longer than their first");
            return Ok(false);
        };
        run.copy(a, b, out, lens);
        run.names.put(out, set);
        run.written = Some(set);
        let from = out.len();
        put_set_shaped_short(value, call, out)?;
        let len = u8::try_from(out.len() - from).unwrap_or(0);
        match lens.get_mut(b) {
            // The set replaces state `b` (every set does, `in_place`).
            Some(at) if in_place => *at = len,
            _ => lens.push(len),
        }
        a = b + usize::from(replaces);
    }
    run.copy(a, n, out, lens);
    debug_assert_eq!(lens.len(), kept + n_sets, "one length a state");
    Ok(true)
}

/// The stamps (bit `i`: stamp `i` of the table) that the states a splice keeps use: the
/// record's states `olds` (the map's, with their lengths `old_lens`) but those `replaced`
/// marks (bit `i % 64` of word `i / 64`: state `i`), each of which must be a plain set or
/// removal (`Ok(None)` at the first that is not, `splice_mapped`'s refusal) with a stamp index
/// below `n_stamps` (an error at the first that is not). The states kept are walked by the
/// bits of their mask (`trailing_zeros`), in order: one loop for the record, not one a run of
/// states kept between two sets (whose exit mispredicted about once a set).
fn used_stamps(
    old: &[u8],
    olds: &[(u32, u32, u32)],
    old_lens: &[u8],
    replaced: &[u64; SPLICE_STATES / 64],
    n_stamps: usize,
) -> Decoded<Option<u64>> {
    let mut used = 0u64;
    for (w, &replaced) in replaced.iter().enumerate() {
        // The states of word `w` the record holds, but those replaced.
        let held = olds.len().saturating_sub(w * 64);
        let mut kept = !replaced & u64::MAX.checked_shr(64 - held.min(64) as u32).unwrap_or(0);
        while kept != 0 {
            let i = w * 64 + kept.trailing_zeros() as usize;
            kept &= kept - 1;
            let (Some(&(_, _, state)), Some(&len)) = (olds.get(i), old_lens.get(i)) else {
                return Ok(None);
            };
            let state = state as usize;
            let Some(&[shape, index]) = old.get(state..).and_then(|s| s.first_chunk::<2>()) else {
                return Ok(None);
            };
            if len < 2 || !plain_shape(shape) {
                return Ok(None);
            }
            if usize::from(index) >= n_stamps {
                return Err(DecodeError {
                    at: state + 1,
                    reason: "stamp index beyond the table",
                });
            }
            used |= 1 << index;
        }
    }
    Ok(Some(used))
}

/// Where each of [`splice_mapped`]'s sets lands (the first state not before its name) and
/// whether it replaces that state (of its name), in the order of the sets: the first
/// [`LANDS`] in an array, any more in a `Vec` (not allocated otherwise). Cheaper to fill and
/// read than a `SmallVec` (~6 instructions a set). Each as one `u16`: the place (at most
/// `SPLICE_STATES`) doubled, plus one when the set replaces the state there.
struct Lands {
    first: [u16; LANDS],
    /// How many.
    n: usize,
    more: Vec<u16>,
}

/// Sets a splice's [`Lands`] holds in its array (W1's calls set ~9 names).
const LANDS: usize = 64;

impl Default for Lands {
    fn default() -> Self {
        Lands {
            first: [0; LANDS],
            n: 0,
            more: Vec::new(),
        }
    }
}

const _: () = assert!(SPLICE_STATES < 1 << 15);

impl Lands {
    /// Where a set lands, `at` (at most `SPLICE_STATES`), and whether it replaces the state
    /// there, as one `u16` (see [`Lands`]).
    #[inline(always)]
    fn code(at: usize, replaces: bool) -> u16 {
        (at as u16) << 1 | u16::from(replaces)
    }

    /// What [`Lands::code`] coded.
    #[inline(always)]
    fn place(b: u16) -> (usize, bool) {
        (usize::from(b >> 1), b & 1 == 1)
    }

    /// Note where the next set lands (coded by [`Lands::code`]).
    #[inline(always)]
    fn push(&mut self, b: u16) {
        match self.first.get_mut(self.n) {
            Some(slot) => *slot = b,
            None => self.more.push(b),
        }
        self.n += 1;
    }

    /// The `k`th pushed: where it lands, and whether it replaces the state there.
    #[inline(always)]
    fn get(&self, k: usize) -> Option<(usize, bool)> {
        if k >= self.n {
            return None;
        }
        let b = match self.first.get(k) {
            Some(&b) => b,
            None => *self.more.get(k - LANDS)?,
        };
        Some(Lands::place(b))
    }
}

/// What [`splice_mapped`] copies its runs of states from: the old record, its state lengths
/// and its map's states, with each stamp's new index when a stamp is dropped; and the names
/// written so far.
struct Run<'a> {
    old: &'a [u8],
    /// `old` and the bytes after it (`splice_mapped`'s `padded`).
    padded: &'a [u8],
    old_lens: StateLens<'a>,
    olds: &'a [(u32, u32, u32)],
    renumber: Option<&'a [u8; SPLICE_STAMPS]>,
    names: Names,
    /// The name written last (`names`' too).
    written: Option<u32>,
    /// The lengths are all in the output already (`splice_mapped`'s `in_place`): a run copies
    /// none.
    lens_copied: bool,
}

impl Run<'_> {
    /// Copy the old record's states `a..b` (none of them set by the call; their stamp indexes
    /// checked against the table): their bytes in one piece, with the first one's name's gap
    /// when the name written last is the one before it in the old record (else its gap written
    /// anew), their lengths, and their stamp indexes renumbered.
    #[inline(always)]
    fn copy(&mut self, a: usize, b: usize, out: &mut Vec<u8>, lens: &mut Vec<u8>) {
        if a >= b {
            return;
        }
        let olds = &self.olds[a..b];
        let (name, gap_at, state) = olds[0];
        let before = a.checked_sub(1).map(|x| self.olds[x].0);
        let from = if self.written == before {
            gap_at as usize
        } else {
            self.names.put(out, name);
            state as usize
        };
        // A state ends where the next one's name's gap starts; the last, where the record does.
        let to = self
            .olds
            .get(b)
            .map_or(self.old.len(), |&(_, gap_at, _)| gap_at as usize);
        let base = out.len();
        // Within `old`: the map's positions are its (checked by `splice_mapped`).
        debug_assert!(to <= self.old.len());
        extend_from::<RUN_PIECE>(out, self.padded, from, to);
        if !self.lens_copied {
            // A few lengths, usually, within `padded` (the cache's chain): one fixed-size
            // piece, no `memcpy` call and no branch on their count.
            extend_part(lens, self.padded, &self.old_lens[a..b]);
        }
        if let Some(renumber) = self.renumber {
            for &(_, _, state) in olds {
                // Where the state's stamp index landed.
                let p = base + (state as usize + 1 - from);
                // Below `SPLICE_STAMPS`: checked by `used_stamps`.
                out[p] = renumber[usize::from(out[p]) % SPLICE_STAMPS];
            }
        }
        let last = olds[olds.len() - 1].0;
        self.names.passed(last);
        self.written = Some(last);
    }
}

/// Bytes [`extend_from`] copies as one fixed-size piece for the splice's runs of states and
/// stamps (~10 a record).
const RUN_PIECE: usize = 64;

/// `out.extend_from_slice(part)`, `part` a slice of `within` (the splice's `padded`: the
/// cache's chain holds the record's state lengths after it) copied by [`extend_from`] from
/// `within` (one fixed-size piece, no `memcpy` call, for the ~35 lengths of a W1 record);
/// copied as it is when it is not one.
#[inline(always)]
fn extend_part(out: &mut Vec<u8>, within: &[u8], part: &[u8]) {
    let at = (part.as_ptr() as usize).wrapping_sub(within.as_ptr() as usize);
    match within.get(at..at.wrapping_add(part.len())) {
        Some(same) if same.as_ptr() == part.as_ptr() => {
            extend_from::<RUN_PIECE>(out, within, at, at + part.len())
        }
        _ => out.extend_from_slice(part),
    }
}

/// What a full record holds before its states: the tag, the identifiers (`ids` writes them as
/// `Ids::put` does), the times, the stamp table (sorted) and the count of states. The states
/// follow, in name order, each its name's gap (`Names::put`) and its compact state
/// (`values::put_shaped_state` with `table`).
pub(crate) fn put_full_head(
    ids: impl FnOnce(&mut Vec<u8>),
    times: (Timestamp, Timestamp),
    table: &StampTable,
    states: usize,
    out: &mut Vec<u8>,
) {
    put_full_start(ids, times, out);
    table.put_deltas(out);
    put_u64(out, states as u64);
}

/// What a full record holds before its stamp table: the tag, the identifiers and the times
/// ([`put_full_head`]).
fn put_full_start(
    ids: impl FnOnce(&mut Vec<u8>),
    (first_seen, updated_at): (Timestamp, Timestamp),
    out: &mut Vec<u8>,
) {
    out.push(FULL_TAG);
    ids(out);
    first_seen.put(out);
    // updated_at as its distance from first_seen (a few bytes, not 9): any two i64 differ by
    // less than 2^65, so the difference fits an i128.
    put_i128(out, i128::from(updated_at.0) - i128::from(first_seen.0));
}

/// Which property states a decode steps over (checked as if decoded, not built): the names a
/// newer record of the chain decided (`known`, sorted), and, for a partial read, every name
/// outside `only` (sorted). `utf8`: which strings stepped over are checked for UTF-8 (not
/// those of bytes decoded whole before, the writer cache's; see [`Utf8`]).
#[derive(Clone, Copy, Default)]
pub(crate) struct Skip<'a> {
    pub known: &'a [u32],
    pub only: Option<&'a [u32]>,
    pub utf8: Utf8,
}

impl<'a> Skip<'a> {
    fn reader<'b>(&self, bytes: &'b [u8]) -> Reader<'b> {
        Reader::checking(bytes, self.utf8)
    }

    /// A walk over one record's names, which come strictly increasing (the decoders refuse
    /// any other order): each list is walked once, not searched per name.
    fn walk(self) -> SkipWalk<'a> {
        SkipWalk {
            known: self.known,
            only: self.only,
        }
    }
}

/// [`Skip::walk`]: the parts of the lists not passed yet.
struct SkipWalk<'a> {
    known: &'a [u32],
    only: Option<&'a [u32]>,
}

impl SkipWalk<'_> {
    /// Whether the state of `id` is stepped over; `id` greater than the one asked before.
    #[inline]
    fn skips(&mut self, id: u32) -> bool {
        fn pass(list: &[u32], id: u32) -> (&[u32], bool) {
            let below = list.iter().take_while(|&&x| x < id).count();
            let rest = &list[below..];
            (rest, rest.first() == Some(&id))
        }
        if let Some(only) = self.only {
            let (rest, wanted) = pass(only, id);
            self.only = Some(rest);
            if !wanted {
                return true;
            }
        }
        let (rest, known) = pass(self.known, id);
        self.known = rest;
        known
    }
}

/// The properties of a compact full record (names as gaps, states with a shape byte), but
/// for the names `skip` steps over.
fn shaped_props(
    r: &mut Reader<'_>,
    table: &StampTable,
    skip: Skip<'_>,
    lens: Option<StateLens<'_>>,
    mut raw: Option<&mut RawStates>,
    mut props: Vec<(u32, PropState)>,
) -> Decoded<Vec<(u32, PropState)>> {
    // A name gap and a shape byte at least.
    let n = r.len(2)?;
    // Room for the names a call adds (the writer's fold): no reallocation when it does.
    props.clear();
    props.reserve(skip.only.map_or(n, |only| only.len().min(n)) + ROOM);
    let mut names = Names::default();
    // Lengths are used only for bytes checked before, and only if they are this record's.
    let lens = lens.filter(|l| skip.utf8 == Utf8::Built && l.len() == n);
    let mut skip = skip.walk();
    for i in 0..n {
        let id = names.read(r)?;
        if skip.skips(id) {
            match lens.map_or(0, |l| l[i]) {
                0 => skip_shaped_state(r, table)?,
                len => {
                    r.bytes(usize::from(len))?;
                }
            }
        } else if let Some(raw) = raw.as_deref_mut() {
            // A plain set or removal of a record whose state lengths are known (bytes this
            // process encoded): captured from its bytes as `map_full` captures it, its payload
            // not walked. Its stamp index must be one byte (below 251) naming a stamp of the
            // table; any other state is read.
            if let Some(len) = lens.map(|l| usize::from(l[i]))
                && let Some(bytes) = r.peek(len)
                && len >= 2
                && plain_shape(bytes[0])
                && bytes[1] < 251
                && let Some(&s) = table.stamps().get(usize::from(bytes[1]))
            {
                // With the record's bytes after it, as the reader holds them; else alone.
                let at = r.position();
                let state = ValueBytes::within(r.whole(), at..at + len)
                    .unwrap_or_else(|| ValueBytes::of(bytes));
                capture_plain(raw, id, s, state);
                // The length kept is the state's: read, it is the same plain state.
                #[cfg(debug_assertions)]
                {
                    let mut whole = Reader::checked_before(bytes);
                    let read = super::values::plain_shaped(&mut whole);
                    debug_assert!(
                        matches!(read, Ok(Some((b, i, payload)))
                            if b == bytes[0] && i == u32::from(bytes[1]) && payload == &bytes[2..])
                            && whole.remaining() == 0,
                        "state {id} captured by its kept length differs from the state read"
                    );
                }
                r.bytes(len)?;
            } else if let Some(state) = shaped_state_or_raw(r, table, id, raw)? {
                props.push((id, state));
            }
        } else {
            props.push((id, shaped_state(r, table)?));
        }
    }
    Ok(props)
}

/// The properties of a full record of revisions 1-4 (sorted by name number, each name once,
/// states as [`put_state`] writes them), but for the names `skip` steps over.
fn props(r: &mut Reader<'_>, table: &StampTable, skip: Skip<'_>) -> Decoded<Vec<(u32, PropState)>> {
    // A state takes at least 3 bytes, its name number 1.
    let n = r.len(4)?;
    let mut props: Vec<(u32, PropState)> = Vec::with_capacity(n);
    let mut last = None;
    let mut skip = skip.walk();
    for _ in 0..n {
        let id = r.u32()?;
        if last.is_some_and(|last| last >= id) {
            return Err(r.error("property names out of order"));
        }
        last = Some(id);
        if skip.skips(id) {
            skip_state(r, table)?;
        } else {
            props.push((id, state(r, table)?));
        }
    }
    Ok(props)
}

/// Check a full record as [`full`] does (every string's UTF-8 included), building none of its
/// states or identifiers (tests).
#[cfg(test)]
pub(crate) fn check_full(bytes: &[u8]) -> Decoded<()> {
    let skip = Skip {
        only: Some(&[]),
        ..Skip::default()
    };
    full_skipping(bytes, skip, false, None, None, ProfileRecord::default()).map(|_| ())
}

/// Decode a full record.
pub(crate) fn full(bytes: &[u8]) -> Decoded<ProfileRecord> {
    full_but(bytes, &[])
}

/// Decode a full record but for the states of the names in `known` (sorted): they are checked
/// as [`full`] checks them, and left out.
pub(crate) fn full_but(bytes: &[u8], known: &[u32]) -> Decoded<ProfileRecord> {
    full_skipping(
        bytes,
        Skip {
            known,
            ..Skip::default()
        },
        true,
        None,
        None,
        ProfileRecord::default(),
    )
}

/// Decode a full record but for the states `skip` steps over, and for its identifiers unless
/// `with_ids` (left empty: checked and stepped over). `lens`: the record's [`StateLens`], if
/// the writer cache has them. `raw`: where to capture the plain states of the names it builds
/// instead of building them (compact records only; see `entries::raw`). `into`: a record
/// whose buffers (identifiers, list of states) the result reuses.
fn full_skipping(
    bytes: &[u8],
    skip: Skip<'_>,
    with_ids: bool,
    lens: Option<StateLens<'_>>,
    raw: Option<&mut RawStates>,
    into: ProfileRecord,
) -> Decoded<ProfileRecord> {
    let mut r = skip.reader(bytes);
    let compact = match bytes.first() {
        Some(&DELTA_TAG) => return Err(r.error("a delta record where a full record was expected")),
        Some(&FULL_TAG) => {
            r.u8()?;
            true
        }
        _ => false,
    };
    let ProfileRecord {
        mut ids,
        props: spare,
        ..
    } = into;
    if with_ids {
        ids_into(&mut r, &mut ids)?;
    } else {
        skip_ids(&mut r)?;
        ids = Ids::default();
    }
    let (first_seen, updated_at, props) = if compact {
        let (first_seen, updated_at) = compact_times(&mut r)?;
        let table = StampTable::read_deltas(&mut r)?;
        (
            first_seen,
            updated_at,
            shaped_props(&mut r, &table, skip, lens, raw, spare)?,
        )
    } else {
        let first_seen = Timestamp(r.i64()?);
        let updated_at = Timestamp(r.i64()?);
        let table = StampTable::read(&mut r)?;
        (first_seen, updated_at, props(&mut r, &table, skip)?)
    };
    r.finish()?;
    Ok(ProfileRecord {
        ids,
        first_seen,
        updated_at,
        props,
    })
}

/// A compact full record's times: `first_seen`, then `updated_at` as its distance from it.
fn compact_times(r: &mut Reader<'_>) -> Decoded<(Timestamp, Timestamp)> {
    // Nearly always: both in one step (`first_seen` 9 bytes, the distance a few), the
    // distance's zigzag undone in 64 bits (below 2^64 it is an `i64`'s), so the sum is one of
    // 64 bits: the same times, or the same error at the same place, as read one by one.
    if let Some((zigzag, d)) = r.two_u64_forms() {
        let first_seen = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
        let d = ((d >> 1) as i64) ^ -((d & 1) as i64);
        let updated_at = first_seen
            .checked_add(d)
            .ok_or_else(|| r.error("updated_at beyond 64 bits"))?;
        return Ok((Timestamp(first_seen), Timestamp(updated_at)));
    }
    let first_seen = r.i64()?;
    let d = r.i128()?;
    let updated_at = i128::from(first_seen)
        .checked_add(d)
        .and_then(|t| i64::try_from(t).ok())
        .ok_or_else(|| r.error("updated_at beyond 64 bits"))?;
    Ok((Timestamp(first_seen), Timestamp(updated_at)))
}

/// Decode the identifiers at the start of a full record, of either layout (the rest is not
/// read).
pub(crate) fn full_ids(bytes: &[u8]) -> Decoded<Ids> {
    let mut r = Reader::new(bytes);
    if bytes.first() == Some(&FULL_TAG) {
        r.u8()?;
    }
    ids(&mut r)
}

/// What a delta record links to: the location of the profile's previous record and how many
/// deltas the chain holds up to and including this one (1: the previous record is full).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Link {
    pub prev: Location,
    pub depth: u32,
}

/// One call's change to a profile, to be written as a delta record.
pub(crate) struct DeltaOut<'a> {
    pub link: Link,
    /// The call's stamp (event time, arrival order): the key of this step of the profile's
    /// history.
    pub stamp: Stamp,
    /// Whether the call's event time moves `first_seen` / `updated_at` (a call applying
    /// operations does; an unlink or a moved identifier does not).
    pub times: bool,
    /// The identifiers, when the call changed them (all of them: replay reads no further).
    pub ids: Option<&'a Ids>,
    /// The record after the call, and the names whose state the call changed (sorted, once
    /// each).
    pub rec: &'a ProfileRecord,
    pub changed: &'a [u32],
}

/// Append a delta record's bytes to `out`.
pub(crate) fn put_delta(d: &DeltaOut<'_>, out: &mut Vec<u8>) {
    let flags = if d.ids.is_some() { FLAG_IDS } else { 0 } | if d.times { FLAG_TIMES } else { 0 };
    put_delta_head(d.link, flags, d.stamp, out);
    if let Some(ids) = d.ids {
        ids.put(out);
    }
    // The changed states, found once: both lists are sorted, so each search starts past the
    // previous find.
    // Inline for a call's usual few names.
    let mut states: smallvec::SmallVec<[&(u32, PropState); 16]> =
        smallvec::SmallVec::with_capacity(d.changed.len());
    let mut from = 0;
    for id in d.changed {
        let rest = d.rec.props.get(from..).unwrap_or_default();
        if let Ok(i) = rest.binary_search_by_key(id, |p| p.0) {
            states.push(&rest[i]);
            from += i + 1;
        }
    }
    // The usual delta: every state a set or removal by this call alone, so the stamp table
    // holds the call's stamp only (written as no extra stamps).
    let all_simple = states
        .iter()
        .all(|(_, p)| simple_form(p, d.stamp).is_some());
    let table = if all_simple {
        put_u64(out, 0);
        StampTable::default()
    } else {
        let table = StampTable::starting_with(d.stamp, states.iter().map(|(_, p)| p));
        table.put_from(1, out);
        table
    };
    put_u64(out, states.len() as u64);
    for (id, p) in states {
        id.put(out);
        match simple_form(p, d.stamp) {
            Some((FORM_SET, Some(v))) => {
                out.push(FORM_SET);
                v.put(out);
            }
            Some((form, _)) => out.push(form),
            None => {
                out.push(FORM_STATE);
                put_state(p, &table, out);
            }
        }
    }
}

/// Append the delta record of a call whose every change is a set by the call itself (the
/// in-order fast path of `apply`): `items` are `count` sets as [`put_set_item`] wrote them,
/// one after another, their names sorted and each once. The bytes are those [`put_delta`]
/// writes for the record holding those states (no identifiers, every state in [`FORM_SET`]);
/// the write path checks that in debug builds.
pub(crate) fn put_delta_sets(
    link: Link,
    stamp: Stamp,
    times: bool,
    count: usize,
    items: &[u8],
    out: &mut Vec<u8>,
) {
    let mut head = delta_head_word(link, if times { FLAG_TIMES } else { 0 }, stamp);
    // No stamps beyond the call's, and the count of states (in the head's append); then the
    // states, written whole as the call made them (one copy, not three appends a set).
    head.two(0, count as u64);
    head.append(out);
    out.extend_from_slice(items);
}

/// Append one set of a fast-path call as a delta writes it among its states: the name number,
/// [`FORM_SET`], and the value as `Value::put` writes it; the value's bytes' range in `out`.
/// A run of these sorted by name is the states of [`put_delta_sets`]. A value without
/// nested parts goes out in one fixed-size append (the delta's and the value's headers and a
/// number's bytes put together on the stack; a string's bytes follow). Always inlined into
/// the fast path's walk, its one caller: left to the compiler, it was called, ~125
/// instructions a call more.
#[inline(always)]
pub(crate) fn put_set_item(id: u32, value: &Value, out: &mut Vec<u8>) -> std::ops::Range<usize> {
    let (payload, text) = match value {
        Value::Bool(b) => (u64::from(*b), None),
        Value::Int(i) => (zigzag(*i), None),
        Value::DateTime(t) => (zigzag(t.0), None),
        Value::Str(s) => (s.len() as u64, Some(s.as_bytes())),
        Value::Float(_) | Value::Array(_) | Value::Object(_) | Value::Null => {
            id.put(out);
            out.push(FORM_SET);
            let from = out.len();
            value.put(out);
            return from..out.len();
        }
    };
    // A bool's byte is its own varint (0 or 1); an integer's and a date-time's zigzag and a
    // string's length are varints: `varint_form`'s marker and bytes, as `put_u64` writes them.
    let ((mi, li), (mp, lp)) = (varint_form(u64::from(id)), varint_form(payload));
    let [i0, i1, i2, i3] = id.to_le_bytes();
    let [p0, p1, p2, p3, p4, p5, p6, p7] = payload.to_le_bytes();
    let mut w = [0u8; 24];
    // `li` is at most 4 (a `u32`): the value's header and nine bytes end within the array.
    if let Some(head) = w.first_chunk_mut::<5>() {
        *head = [mi, i0, i1, i2, i3];
    }
    if let Some(rest) = w
        .get_mut(1 + li..12 + li)
        .and_then(|s| <&mut [u8; 11]>::try_from(s).ok())
    {
        *rest = [
            FORM_SET,
            super::values::variant(value) as u8,
            mp,
            p0,
            p1,
            p2,
            p3,
            p4,
            p5,
            p6,
            p7,
        ];
    }
    let start = out.len();
    out.extend_from_slice(&w);
    out.truncate(start + 4 + li + lp);
    if let Some(text) = text {
        out.extend_from_slice(text);
    }
    start + 2 + li..out.len()
}

/// A delta's header: tag, link, flags, the call's stamp ([`delta_head`] reads it).
fn put_delta_head(link: Link, flags: u8, stamp: Stamp, out: &mut Vec<u8>) {
    delta_head_word(link, flags, stamp).append(out);
}

/// Bytes a delta's header takes at most, with a pair of integers after it
/// ([`put_delta_sets`]' stamp count and state count): the tag, the segment's varint, the
/// offset's and length's, the depth's, the flags, the stamp's pair, and that pair.
const DELTA_HEAD_MAX: usize = 1 + 9 + 18 + 9 + 1 + 18 + 18;

/// [`put_delta_head`]'s bytes put together on the stack, room left for a pair after them: one
/// append for the whole header (and the pair) instead of six, ~150 instructions a delta
/// before.
#[inline(always)]
fn delta_head_word(link: Link, flags: u8, stamp: Stamp) -> Inline<DELTA_HEAD_MAX> {
    let mut w = Inline::new();
    w.byte(DELTA_TAG);
    w.varint(u64::from(link.prev.segment));
    w.two(u64::from(link.prev.offset), u64::from(link.prev.len));
    w.varint(u64::from(link.depth));
    w.byte(flags);
    w.two(zigzag(stamp.0.0), stamp.1);
    w
}

/// The one-byte form of a state that is a set or removal by the call at `stamp` and nothing
/// else ([`FORM_SET`] with its value, [`FORM_UNSET`]); `None` for any other state.
fn simple_form(p: &PropState, stamp: Stamp) -> Option<(u8, Option<&Value>)> {
    match (&p.lww, &p.once, &p.adds) {
        (Some((s, Some(v))), None, None) if *s == stamp => Some((FORM_SET, Some(v))),
        (Some((s, None)), None, None) if *s == stamp => Some((FORM_UNSET, None)),
        _ => None,
    }
}

/// How a delta writes a property state: in full ([`put_state`]), or as a set (the value
/// follows) or a removal by the delta's own call with nothing else in the state.
const FORM_STATE: u8 = 0;
const FORM_SET: u8 = 1;
const FORM_UNSET: u8 = 2;

/// Read a delta's property states (sorted by name number, each once).
fn delta_props(
    r: &mut Reader<'_>,
    table: &StampTable,
    call: Stamp,
    skip: Skip<'_>,
    props: &mut Vec<(u32, PropState)>,
    mut raw: Option<&mut RawStates>,
) -> Decoded<()> {
    // A name number and a form byte at least.
    let n = r.len(2)?;
    props.reserve(n);
    let mut last = None;
    let mut skip = skip.walk();
    for _ in 0..n {
        let id = r.u32()?;
        if last.is_some_and(|last| last >= id) {
            return Err(r.error("property names out of order"));
        }
        last = Some(id);
        if skip.skips(id) {
            match r.u8()? {
                FORM_STATE => skip_state(r, table)?,
                FORM_SET => skip_value(r)?,
                FORM_UNSET => {}
                _ => return Err(r.error("unknown property form")),
            }
            continue;
        }
        let form = r.u8()?;
        if let Some(raw) = raw.as_deref_mut() {
            match form {
                FORM_SET => {
                    // The value as `Value::put` wrote it, its variant included.
                    let from = r.position();
                    let v = r.u32()?;
                    skip_kept_payload(r, v)?;
                    raw.push_set(id, call, None, r.since(from));
                    continue;
                }
                FORM_UNSET => {
                    raw.push_unset(id, call);
                    continue;
                }
                _ => {}
            }
        }
        let state = match form {
            FORM_STATE => state(r, table)?,
            FORM_SET => PropState {
                lww: Some((call, Some(value(r)?))),
                once: None,
                adds: None,
            },
            FORM_UNSET => PropState {
                lww: Some((call, None)),
                once: None,
                adds: None,
            },
            _ => return Err(r.error("unknown property form")),
        };
        props.push((id, state));
    }
    Ok(())
}

/// A decoded delta record (tests and the fuzz targets; a fold decodes with [`delta_into`]).
#[cfg(any(test, feature = "testing"))]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Delta {
    pub link: Link,
    pub stamp: Stamp,
    pub times: bool,
    pub ids: Option<Ids>,
    pub props: Vec<(u32, PropState)>,
}

/// The header of a delta: link, flags, stamp.
fn delta_head(r: &mut Reader<'_>) -> Decoded<(Link, u8, Stamp)> {
    if r.u8()? != DELTA_TAG {
        return Err(r.error("not a delta record"));
    }
    let prev = Location {
        segment: r.u32()?,
        offset: r.u32()?,
        len: r.u32()?,
    };
    let depth = r.u32()?;
    if depth == 0 || depth > MAX_CHAIN_DEPTH {
        return Err(r.error("delta chain depth out of range"));
    }
    let flags = r.u8()?;
    if flags & !(FLAG_IDS | FLAG_TIMES) != 0 {
        return Err(r.error("unknown delta flags"));
    }
    let stamp = stamp(r)?;
    Ok((Link { prev, depth }, flags, stamp))
}

/// Decode a delta record.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn delta(bytes: &[u8]) -> Decoded<Delta> {
    delta_but(bytes, &[])
}

/// Decode a delta record but for the states of the names in `known` (sorted): checked as
/// [`delta`] checks them, and left out.
#[cfg(any(test, feature = "testing"))]
pub(crate) fn delta_but(bytes: &[u8], known: &[u32]) -> Decoded<Delta> {
    let mut props = Vec::new();
    let skip = Skip {
        known,
        ..Skip::default()
    };
    let head = delta_into(bytes, skip, &mut props, None)?;
    Ok(Delta {
        link: head.link,
        stamp: head.stamp,
        times: head.times,
        ids: head.ids,
        props,
    })
}

/// A delta record but its states: what [`delta_into`] returns.
pub(crate) struct DeltaHead {
    pub link: Link,
    pub stamp: Stamp,
    pub times: bool,
    pub ids: Option<Ids>,
}

/// Decode a delta record as [`delta_but`] does, but for the states `skip` steps over,
/// appending its states to `props` (a fold's list: no list of its own per record). On an error
/// `props` may hold some of its states.
pub(crate) fn delta_into(
    bytes: &[u8],
    skip: Skip<'_>,
    props: &mut Vec<(u32, PropState)>,
    raw: Option<&mut RawStates>,
) -> Decoded<DeltaHead> {
    let mut r = skip.reader(bytes);
    let (link, flags, call) = delta_head(&mut r)?;
    let ids = if flags & FLAG_IDS != 0 {
        Some(ids(&mut r)?)
    } else {
        None
    };
    let extra = StampTable::read(&mut r)?;
    let mut stamps = Stamps::with_capacity(extra.stamps().len() + 1);
    stamps.push(call);
    stamps.extend_from_slice(extra.stamps());
    let table = StampTable::from_stamps(stamps);
    delta_props(&mut r, &table, call, skip, props, raw)?;
    r.finish()?;
    Ok(DeltaHead {
        link,
        stamp: call,
        times: flags & FLAG_TIMES != 0,
        ids,
    })
}

/// The link of a delta record and its identifiers if it carries them (the rest is not read).
pub(crate) fn delta_ids(bytes: &[u8]) -> Decoded<(Link, Option<Ids>)> {
    let mut r = Reader::new(bytes);
    let (link, flags, _) = delta_head(&mut r)?;
    let ids = if flags & FLAG_IDS != 0 {
        Some(ids(&mut r)?)
    } else {
        None
    };
    Ok((link, ids))
}

/// Spare room for property states in a decoded record's list, and in a fold's list of
/// states decided by its deltas before the first one is read: a call adds a few names, a
/// chain has a few deltas, and each growth of the list would be a reallocation.
const ROOM: usize = 8;

/// A profile's chain read newest record first (`chain::read_profile` drives it): a delta
/// holds the whole state of each name it changed, so the newest record naming a property
/// decides it. Older records are still read and checked whole, but the states of names already
/// decided are stepped over, not built (W1's deltas change about a quarter of a profile's
/// names each). The result equals applying each delta oldest first to the full record
/// ([`Delta::apply_to`]; tested below).
///
/// A partial fold ([`Fold::only`]) builds the states of some names only (those a call is about
/// to change): the identifiers, the times and those states come out as a whole fold gives
/// them, every other state is checked and stepped over.
#[derive(Default)]
pub(crate) struct Fold {
    /// The states decided by the deltas read so far.
    newer: Newer,
    /// Their names, sorted.
    known: smallvec::SmallVec<[u32; 16]>,
    /// A partial fold: the names whose states it builds (sorted).
    only: Option<smallvec::SmallVec<[u32; 16]>>,
    /// Which strings stepped over are checked for UTF-8 (`Skip::utf8`).
    utf8: Utf8,
    /// A partial fold's capture of the plain states of its names (`entries::raw`), if it
    /// captures them.
    raw: Option<RawStates>,
    /// The newest delta's identifiers, if one carried them.
    ids: Option<Ids>,
    /// The lowest and highest event time of the deltas that move first_seen / updated_at.
    times: Option<(Timestamp, Timestamp)>,
    deltas: u32,
    /// A record whose buffers the result reuses ([`Fold::reuse`]).
    into: Option<ProfileRecord>,
}

impl Fold {
    /// A partial fold: the states of the names in `only` (sorted, each once), no others.
    pub(crate) fn only(only: &[u32]) -> Fold {
        Fold {
            only: Some(only.into()),
            ..Fold::default()
        }
    }

    /// A partial fold that captures each of its names' states that is a plain set or
    /// removal into `raw` (emptied first) as bytes instead of building it
    /// ([`Fold::take_raw`]); the others it builds. `only` as for [`Fold::only`].
    pub(crate) fn only_capturing(only: &[u32], mut raw: RawStates) -> Fold {
        raw.clear();
        Fold {
            raw: Some(raw),
            ..Fold::only(only)
        }
    }

    /// A whole fold that captures every state that is a plain set or removal into `raw`
    /// (emptied first) as bytes instead of building it; the others it builds (see
    /// [`Fold::only_capturing`]).
    pub(crate) fn capturing(mut raw: RawStates) -> Fold {
        raw.clear();
        Fold {
            raw: Some(raw),
            ..Fold::default()
        }
    }

    /// Give the profile in `rec`'s buffers (its identifiers' and its list of states'; what
    /// `rec` holds is replaced). Set in place: a fold is large to move.
    pub(crate) fn reuse(&mut self, rec: ProfileRecord) {
        self.into = Some(rec);
    }

    /// The states captured (sorted by name once the fold read its full record), if the fold
    /// captures them.
    pub(crate) fn take_raw(&mut self) -> Option<RawStates> {
        self.raw.take()
    }

    /// The same fold of records that decoded whole before (the writer cache's): the strings
    /// it steps over are not checked for UTF-8 again.
    pub(crate) fn checked_before(mut self) -> Fold {
        self.utf8 = Utf8::Built;
        self
    }

    /// The same fold of records read from the log by the writer, which keeps what it reads
    /// ([`Utf8::Kept`]): the strings of the states it steps over are not checked for UTF-8 (a
    /// call that needs one of those states decodes it, and so checks it), those it builds or
    /// captures are.
    pub(crate) fn checking_kept(mut self) -> Fold {
        self.utf8 = Utf8::Kept;
        self
    }

    /// Read the next (older) record of the chain, a delta: its link to the previous record.
    pub(crate) fn delta(&mut self, bytes: &[u8]) -> Decoded<Link> {
        let from = self.newer.len();
        if self.newer.capacity() == 0 {
            self.newer.0 = SPARE_NEWER.try_with(|s| s.take()).unwrap_or_default();
            self.newer.reserve(4 * ROOM);
        }
        let skip = Skip {
            known: &self.known,
            only: self.only.as_deref(),
            utf8: self.utf8,
        };
        let raw_from = self.raw.as_ref().map_or(0, |r| r.states.len());
        let d = delta_into(bytes, skip, &mut self.newer, self.raw.as_mut())?;
        self.deltas += 1;
        if self.ids.is_none() {
            self.ids = d.ids;
        }
        if d.times {
            let t = d.stamp.0;
            self.times = Some(self.times.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
        }
        // The names this delta decided (none of them known before: those were skipped).
        let captured = self.raw.as_ref().map_or(&[][..], |r| &r.states[raw_from..]);
        for id in self.newer[from..]
            .iter()
            .map(|p| p.0)
            .chain(captured.iter().map(|p| p.0))
        {
            if let Err(i) = self.known.binary_search(&id) {
                self.known.insert(i, id);
            }
        }
        Ok(d.link)
    }

    /// Deltas read so far.
    pub(crate) fn deltas(&self) -> u32 {
        self.deltas
    }

    /// Read the chain's full record (its oldest): the profile, folded.
    pub(crate) fn full(&mut self, bytes: &[u8]) -> Decoded<ProfileRecord> {
        self.full_with_lens(bytes, None)
    }

    /// [`Fold::full`] with the record's [`StateLens`] (the writer cache's): a state the fold
    /// steps over is jumped, not read. Used only by a fold of bytes checked before.
    pub(crate) fn full_with_lens(
        &mut self,
        bytes: &[u8],
        lens: Option<StateLens<'_>>,
    ) -> Decoded<ProfileRecord> {
        let skip = Skip {
            known: &self.known,
            only: self.only.as_deref(),
            utf8: self.utf8,
        };
        let into = self.into.take().unwrap_or_default();
        let mut rec = full_skipping(
            bytes,
            skip,
            self.ids.is_none(),
            lens,
            self.raw.as_mut(),
            into,
        )?;
        if let Some(raw) = self.raw.as_mut() {
            raw.sort();
        }
        if let Some(ids) = self.ids.take() {
            rec.ids = ids;
        }
        if let Some((lo, hi)) = self.times {
            rec.first_seen = rec.first_seen.min(lo);
            rec.updated_at = rec.updated_at.max(hi);
        }
        if !self.newer.is_empty() {
            // Both sorted by name, no name in both: merged in place from the back, not
            // sorted again.
            self.newer.sort_unstable_by_key(|p| p.0);
            merge_sorted(&mut rec.props, &mut self.newer);
        }
        Ok(rec)
    }
}

thread_local! {
    /// The list of a fold's states decided by deltas, kept between folds ([`Newer`]).
    static SPARE_NEWER: std::cell::Cell<Vec<(u32, PropState)>> =
        const { std::cell::Cell::new(Vec::new()) };
}

/// A fold's list of the states its deltas decided: taken from the thread's spare at the
/// first delta and given back (emptied) when the fold is dropped, so that folding a chain
/// allocates no list (the writer folds ~2.5 chains a W1 call: a cached one, a miss's read).
/// A list grown past [`Newer::KEPT`] states is freed instead.
#[derive(Default)]
struct Newer(Vec<(u32, PropState)>);

impl Newer {
    const KEPT: usize = 256;
}

impl std::ops::Deref for Newer {
    type Target = Vec<(u32, PropState)>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for Newer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for Newer {
    fn drop(&mut self) {
        if self.0.capacity() != 0 && self.0.capacity() <= Self::KEPT {
            self.0.clear();
            // `try_with`: a fold dropped while the thread's locals are torn down frees it.
            let _ = SPARE_NEWER.try_with(|s| s.set(std::mem::take(&mut self.0)));
        }
    }
}

/// Merge `newer` (sorted by name, emptied) into `props` (sorted by name, no name in both), in
/// place: `props` grows by `newer`'s length and is filled from its back, the greater of the
/// two lists' last items first.
fn merge_sorted(props: &mut Vec<(u32, PropState)>, newer: &mut Vec<(u32, PropState)>) {
    let mut old = props.len();
    props.resize_with(old + newer.len(), Default::default);
    for at in (0..props.len()).rev() {
        let from_newer = match (newer.last(), old.checked_sub(1)) {
            (None, _) => break,
            (Some(_), None) => true,
            (Some(n), Some(o)) => n.0 > props[o].0,
        };
        if from_newer {
            if let Some(n) = newer.pop() {
                props[at] = n;
            }
        } else {
            old -= 1;
            props.swap(at, old);
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl Delta {
    /// Bring `rec` (the state before the call) to the state after it.
    pub(crate) fn apply_to(self, rec: &mut ProfileRecord) {
        if let Some(ids) = self.ids {
            rec.ids = ids;
        }
        if self.times {
            rec.updated_at = rec.updated_at.max(self.stamp.0);
            rec.first_seen = rec.first_seen.min(self.stamp.0);
        }
        for (id, state) in self.props {
            *rec.state_mut(id) = state;
        }
    }
}

/// Whether `bytes` hold a delta record (else a full one).
pub(crate) fn is_delta(bytes: &[u8]) -> bool {
    bytes.first() == Some(&DELTA_TAG)
}

/// The fuzz target `profile_decode` (fuzz/README.md; feature `testing` only): decode `bytes`
/// as a full and as a delta profile record, and as their identifier prefixes. Nothing may
/// panic; a full record that decodes re-encodes to bytes that decode and re-encode to the same
/// bytes (byte equality, since a float NaN is not equal to itself); a delta that decodes
/// applies to the decoded full record (or an empty one) without panicking.
#[cfg(feature = "testing")]
pub fn fuzz_profile_payload(bytes: &[u8]) {
    let _ = full_ids(bytes);
    let _ = delta_ids(bytes);
    let _ = is_delta(bytes);
    let base = match full(bytes) {
        Ok(rec) => {
            let mut once = Vec::new();
            put_full(&rec, &mut once, None);
            let again = full(&once).expect("a re-encoded full record decodes");
            let mut twice = Vec::new();
            put_full(&again, &mut twice, None);
            assert_eq!(once, twice, "full record encoding is not stable");
            // A partial fold (the writer's load) gives the same states of its names, from bytes
            // read the first time and from bytes checked before (they decoded just now).
            let mut only: Vec<u32> = rec.props.iter().step_by(2).map(|p| p.0).collect();
            only.push(rec.props.last().map_or(7, |p| p.0.wrapping_add(1)));
            only.sort_unstable();
            only.dedup();
            let mut want = rec.clone();
            want.props.retain(|(id, _)| only.binary_search(id).is_ok());
            let (mut want_bytes, mut got_bytes) = (Vec::new(), Vec::new());
            put_full(&want, &mut want_bytes, None);
            for mut fold in [
                Fold::only(&only),
                Fold::only(&only).checked_before(),
                Fold::only_capturing(&only, RawStates::default()),
                Fold::only_capturing(&only, RawStates::default()).checked_before(),
                Fold::only_capturing(&only, RawStates::default()).checking_kept(),
            ] {
                let mut got = fold.full(bytes).expect("a full record decodes partially");
                // The states captured as bytes (`entries::raw`), decoded, are the same.
                if let Some(raw) = fold.take_raw() {
                    for (id, r) in &raw.states {
                        *got.state_mut(*id) = raw.decode(r).expect("a captured state decodes");
                    }
                }
                got_bytes.clear();
                put_full(&got, &mut got_bytes, None);
                // Bytes, not records: a float NaN is not equal to itself.
                assert_eq!(
                    got_bytes, want_bytes,
                    "a partial fold differs from the whole one"
                );
            }
            rec
        }
        Err(_) => {
            // Damaged: a partial fold may refuse it or not (it steps over some states), but
            // must not panic.
            let _ = Fold::only(&[0, 1, 2]).full(bytes);
            let _ = Fold::only_capturing(&[0, 1, 2], RawStates::default()).full(bytes);
            ProfileRecord::default()
        }
    };
    let _ = Fold::only(&[0, 3]).delta(bytes);
    let mut capturing = Fold::only_capturing(&[0, 3], RawStates::default());
    if capturing.delta(bytes).is_ok()
        && let Some(raw) = capturing.take_raw()
    {
        for (_, r) in &raw.states {
            raw.decode(r).expect("a captured state of a delta decodes");
        }
    }
    if let Ok(d) = delta(bytes) {
        let mut rec = base;
        d.apply_to(&mut rec);
        let mut out = Vec::new();
        put_full(&rec, &mut out, None);
        full(&out).expect("a delta applied to a record re-encodes to a decodable record");
    }
}

/// Tests: a full record of two string states, of names 1 and 2, whose second string is not
/// UTF-8 (a record of a crafted log whose checksum still holds).
#[cfg(test)]
pub(crate) fn full_with_bad_string() -> Vec<u8> {
    let mut rec = ProfileRecord::default();
    let stamp = Stamp::new(Timestamp(5), 1);
    rec.state_mut(1).lww = Some((stamp, Some(Value::Str("good-value".into()))));
    rec.state_mut(2).lww = Some((stamp, Some(Value::Str("zzzzzzzz".into()))));
    let mut bytes = Vec::new();
    put_full(&rec, &mut bytes, None);
    let at = bytes.windows(8).position(|w| w == b"zzzzzzzz");
    bytes[at.expect("the string is in the record")] = 0xff;
    bytes
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::entries::raw::RawStates;
    use crate::entries::values::stamp_after;
    use crate::entries::wire::put_i64;
    use crate::types::state::Adds;

    /// Flip the bytes `flips` names in a full record (each changed: `| 1`), and set the one
    /// length `lens_flip` names, if any (the damaged inputs of the splice's proptests).
    fn damage(
        old: &mut [u8],
        old_lens: &mut [u8],
        flips: &[(prop::sample::Index, u8)],
        lens_flip: Option<(prop::sample::Index, u8)>,
    ) {
        for (at, b) in flips {
            let i = at.index(old.len());
            old[i] ^= b | 1;
        }
        if let (Some((at, b)), false) = (lens_flip, old_lens.is_empty()) {
            let i = at.index(old_lens.len());
            old_lens[i] = b;
        }
    }

    /// [`compact_times`] as it read the times before the one-step read: each integer alone
    /// (`Reader::i64`, `Reader::i128`), the sum in 128 bits.
    fn compact_times_one_by_one(r: &mut Reader<'_>) -> Decoded<(Timestamp, Timestamp)> {
        let first_seen = r.i64()?;
        let d = r.i128()?;
        let updated_at = i128::from(first_seen)
            .checked_add(d)
            .and_then(|t| i64::try_from(t).ok())
            .ok_or_else(|| r.error("updated_at beyond 64 bits"))?;
        Ok((Timestamp(first_seen), Timestamp(updated_at)))
    }

    proptest! {
        /// A compact record's times (`compact_times`, both integers read in one step and summed
        /// in 64 bits when they can be) are the ones read one by one and summed in 128 bits
        /// give, or the same error at the same place: every form and sign, sums past 64 bits,
        /// bytes cut short or damaged.
        #[test]
        fn compact_times_are_their_integers_read_one_by_one(
            first in prop_oneof![any::<i64>(), -3i64..3, (i64::MAX - 3)..=i64::MAX, Just(i64::MIN)],
            d in prop_oneof![
                -3i128..3,
                -70_000i128..70_000,
                any::<i32>().prop_map(i128::from),
                any::<i64>().prop_map(i128::from),
                any::<i128>(),
            ],
            tail in prop::collection::vec(any::<u8>(), 0..20),
            cut in any::<prop::sample::Index>(),
            damage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let mut bytes = Vec::new();
            put_i64(&mut bytes, first);
            put_i128(&mut bytes, d);
            bytes.extend_from_slice(&tail);
            if let Some((at, b)) = damage {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
            let read_at = |bytes: &[u8], f: fn(&mut Reader<'_>) -> Decoded<(Timestamp, Timestamp)>| {
                let mut r = Reader::new(bytes);
                let got = f(&mut r);
                (got, r.position())
            };
            for bytes in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
                prop_assert_eq!(
                    read_at(bytes, compact_times),
                    read_at(bytes, compact_times_one_by_one)
                );
            }
        }
    }

    proptest! {
        /// `extend_part` appends the bytes of its part, whether the part lies within the
        /// buffer it names (at its start, middle or end, a fixed-size piece or not) or not.
        #[test]
        fn extend_part_is_extend_from_slice(
            within in prop::collection::vec(any::<u8>(), 0..200),
            range in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
            other in prop::collection::vec(any::<u8>(), 0..100),
            before in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let (a, b) = (range.0.index(within.len() + 1), range.1.index(within.len() + 1));
            let (a, b) = (a.min(b), a.max(b));
            for part in [&within[a..b], &other[..]] {
                let mut got = before.clone();
                extend_part(&mut got, &within, part);
                let mut want = before.clone();
                want.extend_from_slice(part);
                prop_assert_eq!(got, want);
            }
        }
    }

    proptest! {
        /// `first_not_below` (the states ahead counted `AHEAD` at a time) is the walk a state
        /// at a time, from any start, for any name (below, between, equal to, past the
        /// record's, `u32::MAX`), with the states after the record's named `u32::MAX` as a
        /// `FullMap` keeps them, or without them (cut short).
        #[test]
        fn first_not_below_is_the_walk_a_state_at_a_time(
            gaps in prop::collection::vec(1u32..6, 0..40),
            from in any::<prop::sample::Index>(),
            name in prop_oneof![0u32..130, Just(u32::MAX), any::<u32>()],
            cut in 0usize..=AHEAD,
        ) {
            let mut olds: Vec<(u32, u32, u32)> = gaps
                .iter()
                .scan(0u32, |at, &gap| { *at += gap; Some((*at, 0, 0)) })
                .collect();
            let n = olds.len();
            olds.extend([(u32::MAX, 0, 0); AHEAD]);
            let from = from.index(n + 1);
            let mut want = from;
            while want < n && olds[want].0 < name {
                want += 1;
            }
            prop_assert_eq!(first_not_below(&olds, n, from, name), want);
            if cut > 0 {
                // Fewer than `AHEAD` after the record's (not a map's): the same place.
                olds.truncate(n + AHEAD - cut);
                prop_assert_eq!(first_not_below(&olds, n, from, name), want);
            }
        }
    }

    proptest! {
        /// `used_stamps` (the states kept walked by the bits of their mask) is the splice's
        /// walk of the states one at a time, the replaced ones passed over: the same stamps,
        /// or the same refusal (a state not within the record, shorter than 2 bytes or not a
        /// plain shape) or error (a stamp index beyond the table) at the first state kept that
        /// has one; with up to `SPLICE_STATES` states, any of them replaced.
        #[test]
        fn used_stamps_is_the_walk_of_the_kept_states_one_by_one(
            old in prop::collection::vec(prop_oneof![0u8..8, any::<u8>()], 0..80),
            states in prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    prop_oneof![2u8..6, any::<u8>()],
                    prop_oneof![Just(false), any::<bool>()],
                ),
                0..=SPLICE_STATES,
            ),
            n_stamps in prop_oneof![8usize..=SPLICE_STAMPS, 0usize..=SPLICE_STAMPS],
        ) {
            // Each state's start: anywhere in the record or just past it.
            let olds: Vec<(u32, u32, u32)> = states
                .iter()
                .map(|(at, _, _)| (0, 0, at.index(old.len() + 2) as u32))
                .collect();
            let lens: Vec<u8> = states.iter().map(|s| s.1).collect();
            let mut replaced = [0u64; SPLICE_STATES / 64];
            for (i, s) in states.iter().enumerate() {
                replaced[i / 64] |= u64::from(s.2) << (i % 64);
            }
            let one_by_one = || -> Decoded<Option<u64>> {
                let mut used = 0u64;
                for (i, (&(_, _, state), &len)) in olds.iter().zip(&lens).enumerate() {
                    if states[i].2 {
                        continue;
                    }
                    let state = state as usize;
                    let Some(&[shape, index]) = old.get(state..state + 2) else {
                        return Ok(None);
                    };
                    if len < 2 || !plain_shape(shape) {
                        return Ok(None);
                    }
                    if usize::from(index) >= n_stamps {
                        return Err(DecodeError { at: state + 1, reason: "stamp index beyond the table" });
                    }
                    used |= 1 << index;
                }
                Ok(Some(used))
            };
            let want = one_by_one();
            prop_assert_eq!(used_stamps(&old, &olds, &lens, &replaced, n_stamps), want);
        }
    }

    proptest! {
        /// A delta's header, its wide integers written in pairs, and a stamp and a value's
        /// integers written inline: the bytes each integer's `Wire::put` writes, one by one.
        #[test]
        fn headers_stamps_and_integers_are_their_integers_put_one_by_one(
            segment in any::<u32>(),
            offset in prop_oneof![0u32..300, any::<u32>()],
            len in prop_oneof![0u32..300, any::<u32>()],
            depth in prop_oneof![0u32..300, any::<u32>()],
            flags in any::<u8>(),
            ts in prop_oneof![-200i64..200, any::<i64>()],
            order in prop_oneof![0u64..300, any::<u64>()],
            int in prop_oneof![-200i64..200, any::<i64>()],
        ) {
            let link = Link { prev: Location { segment, offset, len }, depth };
            let stamp = Stamp::new(Timestamp(ts), order);
            let mut got = Vec::new();
            put_delta_head(link, flags, stamp, &mut got);
            let mut want = vec![DELTA_TAG];
            for v in [segment, offset, len, depth] {
                v.put(&mut want);
            }
            want.push(flags);
            ts.put(&mut want);
            order.put(&mut want);
            prop_assert_eq!(&got, &want);
            // A fast path's delta: the header, no stamps beyond the call's, the count of
            // states, the states' bytes as they are.
            let items = int.to_le_bytes();
            let count = (int as u64) >> (int as u32 % 64);
            let times = flags % 2 == 0;
            let mut sets = Vec::new();
            put_delta_sets(link, stamp, times, count as usize, &items, &mut sets);
            let mut want = Vec::new();
            put_delta_head(link, if times { FLAG_TIMES } else { 0 }, stamp, &mut want);
            0u64.put(&mut want);
            count.put(&mut want);
            want.extend_from_slice(&items);
            prop_assert_eq!(&sets, &want);
            for p in [Stamp::new(Timestamp(int), order / 3), Stamp::new(Timestamp(ts / 2), int as u64)] {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                if p < stamp {
                    crate::entries::values::put_stamp_after(p, stamp, &mut got);
                    put_u64(&mut want, (i128::from(ts) - i128::from(p.0.0)) as u64);
                    put_i128(&mut want, i128::from(order) - i128::from(p.1));
                    prop_assert_eq!(&got, &want);
                }
            }
            let (mut got, mut want) = (Vec::new(), Vec::new());
            crate::entries::values::put_stamp(stamp, &mut got);
            ts.put(&mut want);
            order.put(&mut want);
            prop_assert_eq!(&got, &want);
            for v in [Value::Int(int), Value::DateTime(Timestamp(int))] {
                let (mut got, mut want) =
                    (Vec::new(), vec![crate::entries::values::variant(&v) as u8]);
                v.put(&mut got);
                int.put(&mut want);
                prop_assert_eq!(&got, &want);
            }
        }
    }

    /// The widest form of every field of a delta's header and of the fast path's two counts
    /// fits the inline word they are put together in (`DELTA_HEAD_MAX`): the bytes are each
    /// integer's `Wire::put`, nothing dropped.
    #[test]
    fn the_widest_delta_header_fits_its_inline_word() {
        let link = Link {
            prev: Location {
                segment: u32::MAX,
                offset: u32::MAX,
                len: u32::MAX,
            },
            depth: u32::MAX,
        };
        for (ts, order) in [(i64::MIN, u64::MAX), (i64::MAX, u64::MAX)] {
            let stamp = Stamp::new(Timestamp(ts), order);
            let mut got = Vec::new();
            put_delta_sets(link, stamp, true, usize::MAX, &[], &mut got);
            let mut want = vec![DELTA_TAG];
            for v in [u32::MAX; 4] {
                v.put(&mut want);
            }
            want.push(FLAG_TIMES);
            ts.put(&mut want);
            order.put(&mut want);
            0u64.put(&mut want);
            (usize::MAX as u64).put(&mut want);
            assert_eq!(got, want);
            assert!(got.len() <= DELTA_HEAD_MAX);
        }
    }

    proptest! {
        /// A fast call's sets put one by one (`put_set_item`: each value's range holds the
        /// bytes `Value::put` writes) and copied whole into a delta (`put_delta_sets`) are the
        /// delta `put_delta` writes of the states they set.
        #[test]
        fn fast_sets_put_whole_are_the_delta_of_their_states(
            sets in prop::collection::btree_map(
                prop_oneof![0u32..300, 60_000u32..70_000, any::<u32>()],
                value(),
                0..12,
            ),
            segment in any::<u32>(),
            offset in any::<u32>(),
            len in any::<u32>(),
            depth in 0u32..300,
            times in any::<bool>(),
            stamp in stamp(),
        ) {
            let mut items = vec![7u8];
            let mut rec = ProfileRecord::default();
            for (&id, v) in &sets {
                let at = put_set_item(id, v, &mut items);
                let mut want = Vec::new();
                v.put(&mut want);
                prop_assert_eq!(&items[at], &want[..]);
                rec.state_mut(id).lww = Some((stamp, Some(v.clone())));
            }
            let link = Link { prev: Location { segment, offset, len }, depth };
            let mut got = vec![9u8];
            put_delta_sets(link, stamp, times, sets.len(), &items[1..], &mut got);
            let changed: Vec<u32> = sets.keys().copied().collect();
            let mut want = vec![9u8];
            put_delta(
                &DeltaOut { link, stamp, times, ids: None, rec: &rec, changed: &changed },
                &mut want,
            );
            prop_assert_eq!(got, want);
        }
    }

    /// `check_full` refuses what `full` refuses (a string that is not UTF-8, in a state it
    /// builds none of; a record cut short; bytes after it) and accepts a record `put_full` wrote.
    #[test]
    fn check_full_refuses_what_full_refuses() {
        let bad = full_with_bad_string();
        assert!(full(&bad).is_err());
        assert!(check_full(&bad).is_err(), "a string that is not UTF-8");
        let mut rec = ProfileRecord::default();
        rec.ids.user_id = Some("u1".into());
        rec.ids.anonymous_ids = vec!["a1".into()];
        let stamp = Stamp::new(Timestamp(5), 1);
        rec.state_mut(3).lww = Some((stamp, Some(Value::Str("good".into()))));
        rec.state_mut(9).lww = Some((stamp, Some(Value::Int(7))));
        let mut good = Vec::new();
        put_full(&rec, &mut good, None);
        assert_eq!(check_full(&good), Ok(()));
        for cut in 0..good.len() {
            assert!(check_full(&good[..cut]).is_err(), "cut at {cut}");
        }
        good.push(0);
        assert!(check_full(&good).is_err(), "a byte after the record");
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            ".{0,300}".prop_map(|s: String| Value::Str(s.into())),
            any::<i64>().prop_map(|t| Value::DateTime(Timestamp(t))),
            Just(Value::Null),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((".{0,8}", inner), 0..4).prop_map(Value::Object),
            ]
        })
    }

    fn stamp() -> impl Strategy<Value = Stamp> {
        (any::<i64>(), any::<u64>()).prop_map(|(ts, order)| Stamp::new(Timestamp(ts), order))
    }

    /// Any property state, reachable by the rules or not: the codec stores whatever it is given.
    fn state() -> impl Strategy<Value = PropState> {
        let adds = (
            any::<i128>(),
            proptest::option::of(any::<f64>()),
            stamp(),
            stamp(),
        )
            .prop_map(|(int, float, first, last)| Adds {
                int,
                float,
                first,
                last,
            });
        (
            proptest::option::of((stamp(), proptest::option::of(value()))),
            proptest::option::of((stamp(), value())),
            proptest::option::of(adds),
        )
            .prop_map(|(lww, once, adds)| PropState {
                lww,
                once: once.map(Box::new),
                adds: adds.map(Box::new),
            })
    }

    fn record() -> impl Strategy<Value = ProfileRecord> {
        (
            proptest::option::of(".{0,40}"),
            proptest::option::of(".{0,40}"),
            prop::collection::vec(".{0,40}", 0..4),
            proptest::option::of(".{0,10}"),
            any::<i64>(),
            any::<i64>(),
            prop::collection::btree_map(any::<u32>(), state(), 0..24),
        )
            .prop_map(
                |(user_id, email, anonymous_ids, company_id, first, updated, props)| {
                    ProfileRecord {
                        ids: Ids {
                            user_id,
                            email,
                            anonymous_ids,
                            company_id,
                        },
                        first_seen: Timestamp(first),
                        updated_at: Timestamp(updated),
                        props: props.into_iter().collect(),
                    }
                },
            )
    }

    fn encode(rec: &ProfileRecord) -> Vec<u8> {
        let mut out = Vec::new();
        put_full(rec, &mut out, None);
        out
    }

    /// The encoder of the full record layout of revisions 1-4 (what earlier versions wrote;
    /// kept here only, to prove that such records still decode): identifiers, times, the
    /// stamp table whole, each property's name number and [`put_state`].
    fn encode_old(rec: &ProfileRecord) -> Vec<u8> {
        let mut out = Vec::new();
        rec.ids.put(&mut out);
        rec.first_seen.put(&mut out);
        rec.updated_at.put(&mut out);
        let table = StampTable::of(rec.props.iter().map(|(_, p)| p));
        table.put(&mut out);
        put_u64(&mut out, rec.props.len() as u64);
        for (id, p) in &rec.props {
            id.put(&mut out);
            put_state(p, &table, &mut out);
        }
        out
    }

    /// `rec` without the states of the names in `known`: what [`full_but`] decodes.
    fn without(rec: &ProfileRecord, known: &[u32]) -> ProfileRecord {
        let mut rec = rec.clone();
        rec.props.retain(|p| known.binary_search(&p.0).is_err());
        rec
    }

    /// The layout of earlier versions, written by bincode's derive: what old stores hold.
    mod old {
        use bincode::Encode;

        #[derive(Encode)]
        pub struct Ids {
            pub user_id: Option<String>,
            pub email: Option<String>,
            pub anonymous_ids: Vec<String>,
            pub company_id: Option<String>,
        }
        #[derive(Encode)]
        pub struct Rec {
            pub ids: Ids,
            pub first_seen: i64,
            pub updated_at: i64,
            pub stamps: Vec<(i64, u64)>,
            pub props: Vec<(u32, State)>,
        }
        #[derive(Encode)]
        pub struct State {
            pub lww: Option<(u32, Option<crate::types::value::Value>)>,
            pub once: Option<(u32, crate::types::value::Value)>,
            pub adds: Option<(i128, Option<f64>, u32, u32)>,
        }
    }

    #[test]
    fn a_record_in_the_layout_of_earlier_versions_decodes() {
        let bytes = bincode::encode_to_vec(
            old::Rec {
                ids: old::Ids {
                    user_id: Some("u1".into()),
                    email: None,
                    anonymous_ids: vec!["a".into()],
                    company_id: Some("c".into()),
                },
                first_seen: 5,
                updated_at: 9,
                stamps: vec![(5, 1), (9, 4)],
                props: vec![
                    (
                        0,
                        old::State {
                            lww: Some((1, Some(Value::Str("x".into())))),
                            once: None,
                            adds: None,
                        },
                    ),
                    (
                        3,
                        old::State {
                            lww: None,
                            once: None,
                            adds: Some((7, None, 0, 1)),
                        },
                    ),
                ],
            },
            bincode::config::standard(),
        )
        .unwrap();
        let rec = full(&bytes).unwrap();
        assert_eq!(rec.ids.user_id.as_deref(), Some("u1"));
        let x = &rec.props[0].1;
        assert_eq!(
            x.lww,
            Some((Stamp::new(Timestamp(9), 4), Some(Value::Str("x".into()))))
        );
        assert_eq!((&x.once, &x.adds), (&None, &None));
        let n = rec.props[1].1.adds.as_ref().unwrap();
        assert_eq!((n.int, n.float), (7, None));
        assert_eq!(
            (n.first, n.last),
            (Stamp::new(Timestamp(5), 1), Stamp::new(Timestamp(9), 4))
        );
        assert_eq!(rec.props[1].1.lww, None);
        assert_eq!(
            encode_old(&rec),
            bytes,
            "the test's encoder of the old layout is bincode's"
        );
        assert_eq!(full_ids(&bytes).unwrap(), rec.ids);
        let again = encode(&rec);
        assert_eq!(again[0], FULL_TAG, "written again in the compact layout");
        assert_eq!(full(&again).unwrap(), rec);
    }

    #[test]
    fn a_stamp_index_outside_the_table_is_a_decode_error() {
        let mut rec = ProfileRecord::default();
        rec.state_mut(3).lww = Some((Stamp::new(Timestamp(5), 1), Some(Value::Int(1))));
        // Compact: tag, ids (4 bytes: None, None, [], None), first_seen, updated_at, table of 1
        // stamp (3 bytes), 1 prop, name 3, shape (set, int), stamp index 0 -> 7, payload.
        let mut bytes = encode(&rec);
        let at = 1 + 4 + 1 + 1 + 3 + 1 + 1 + 1;
        assert_eq!(bytes[at - 2..], [3, SHAPE_SET_INT, 0, 2], "{bytes:?}");
        bytes[at] = 7;
        let err = full(&bytes).unwrap_err();
        assert!(err.reason.contains("stamp index"), "{err}");
        assert_eq!(err.at, at + 1);
        // And in the old layout: ids, times, table, 1 prop, id 3, lww Some, index.
        let mut bytes = encode_old(&rec);
        let at = 4 + 1 + 1 + 3 + 1 + 1 + 1;
        assert_eq!(bytes[at - 1..], [1, 0, 1, 1, 2, 0, 0], "{bytes:?}");
        bytes[at] = 7;
        let err = full(&bytes).unwrap_err();
        assert!(err.reason.contains("stamp index"), "{err}");
        assert_eq!(err.at, at + 1);
    }

    /// The shape byte of an lww set to an integer (variant 1).
    const SHAPE_SET_INT: u8 = 3;

    /// A compact record by hand: tag, ids (none), first_seen 0, updated_at 0, then `rest`
    /// (the stamp table and the properties).
    fn compact(rest: &[u8]) -> Vec<u8> {
        let mut b = vec![FULL_TAG, 0, 0, 0, 0, 0, 0];
        b.extend_from_slice(rest);
        b
    }

    /// One stamp (time 5, order 1): `[1, 10, 1]`.
    const ONE_STAMP: [u8; 3] = [1, 10, 1];

    #[test]
    fn hand_made_compact_records_decode_and_damaged_fields_are_named() {
        // Two properties: 4 set to int 1, and 4 + 3 = 7 unset with a once (index 0, bool).
        let mut good = compact(&ONE_STAMP);
        good.extend_from_slice(&[2, 4, SHAPE_SET_INT, 0, 2, 3, 0x11, 0, 0, 0, 1]);
        let rec = full(&good).unwrap();
        let s = Stamp::new(Timestamp(5), 1);
        assert_eq!(rec.props.len(), 2);
        assert_eq!(
            rec.props[0],
            (
                4,
                PropState {
                    lww: Some((s, Some(Value::Int(1)))),
                    once: None,
                    adds: None,
                }
            )
        );
        assert_eq!(
            rec.props[1],
            (
                7,
                PropState {
                    lww: Some((s, None)),
                    once: Some(Box::new((s, Value::Bool(true)))),
                    adds: None,
                }
            )
        );
        assert_eq!(encode(&rec), good, "the encoder writes these very bytes");
        // Stepped over (known), the same checks apply and the record still ends exactly.
        assert_eq!(full_but(&good, &[4, 7]).unwrap().props, []);

        let err = |bytes: &[u8], known: &[u32]| full_but(bytes, known).unwrap_err();
        let shape_at = 7 + 3 + 2;
        for known in [&[][..], &[4]] {
            // Unknown bits in the shape byte (bit 6, bit 7) and an lww form past the variants.
            for bad in [0x40 | SHAPE_SET_INT, 0x80, 10, 15] {
                let mut b = good.clone();
                b[shape_at] = bad;
                let e = err(&b, known);
                assert!(e.reason.starts_with("property shape"), "{bad}: {e}");
                assert_eq!(e.at, shape_at + 1);
            }
            // A second name gap of 0: names out of order.
            let mut b = good.clone();
            b[shape_at + 3] = 0;
            let e = err(&b, known);
            assert!(e.reason.contains("out of order"), "{e}");
            assert_eq!(e.at, shape_at + 4);
            // A stamp index outside the table.
            let mut b = good.clone();
            b[shape_at + 1] = 1;
            assert!(err(&b, known).reason.contains("stamp index"));
            // A byte too many, a byte too few.
            let mut b = good.clone();
            b.push(0);
            assert!(err(&b, known).reason.contains("trailing"));
            assert!(
                err(&good[..good.len() - 1], known)
                    .reason
                    .contains("ends early")
            );
        }
        // A name gap past u32::MAX: first name u32::MAX, then a gap of 1.
        let mut b = compact(&ONE_STAMP);
        b.extend_from_slice(&[2, 252, 255, 255, 255, 255, 1, 0]);
        b.extend_from_slice(&[1, 1, 0]);
        let e = err(&b, &[]);
        assert!(e.reason.contains("property name beyond 32 bits"), "{e}");
        // A count of properties the bytes cannot hold.
        let mut b = compact(&ONE_STAMP);
        b.extend_from_slice(&[200, 0, 0]);
        assert!(err(&b, &[]).reason.contains("sequence length"));
    }

    #[test]
    fn updated_at_past_64_bits_is_a_decode_error() {
        // first_seen i64::MAX (zigzag u64::MAX - 1), updated_at 1 later (zigzag 2).
        let mut b = vec![FULL_TAG, 0, 0, 0, 0, 253];
        b.extend_from_slice(&(u64::MAX - 1).to_le_bytes());
        b.extend_from_slice(&[2, 0, 0]);
        let e = full(&b).unwrap_err();
        assert_eq!((e.reason, e.at), ("updated_at beyond 64 bits", 15));
        // 0 later decodes; and far below i64::MIN (delta -2^64 - 1) does not.
        let at = b.len() - 3;
        b[at] = 0;
        assert_eq!(full(&b).unwrap().updated_at, Timestamp(i64::MAX));
        b.truncate(at);
        b.push(254);
        b.extend_from_slice(&((1u128 << 65) + 1).to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        assert_eq!(full(&b).unwrap_err().reason, "updated_at beyond 64 bits");
    }

    #[test]
    fn a_stamp_table_delta_past_its_field_is_a_decode_error() {
        // First stamp: time i64::MAX - 1 (zigzag u64::MAX - 3), order 0; next: +2 in time.
        let max_time = [253, 0xfc, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        let mut b = compact(&[2]);
        b.extend_from_slice(&max_time);
        b.extend_from_slice(&[0, 2, 2, 0]);
        let e = full(&b).unwrap_err();
        assert_eq!(e.reason, "stamp table: event time beyond 64 bits");
        // +1 in time fits (then no properties).
        let last = b.len() - 3;
        b[last] = 1;
        let rec = full(&b).unwrap();
        assert!(rec.props.is_empty());
        // Arrival order below 0: first order 0, delta -1 (zigzag 1).
        let mut b = compact(&[2, 10, 0, 1, 1, 0]);
        let e = full(&b).unwrap_err();
        assert_eq!(e.reason, "stamp table: arrival order beyond 64 bits");
        // Above u64::MAX: first order u64::MAX, delta +1 (zigzag 2).
        b = compact(&[2, 10, 253, 255, 255, 255, 255, 255, 255, 255, 255, 1, 2, 0]);
        assert_eq!(
            full(&b).unwrap_err().reason,
            "stamp table: arrival order beyond 64 bits"
        );
        // An i128 delta so large that the sum itself overflows.
        let mut b = compact(&[2, 10, 5, 1, 254]);
        b.extend_from_slice(&u128::MAX.to_le_bytes());
        b.push(0);
        assert_eq!(
            full(&b).unwrap_err().reason,
            "stamp table: arrival order beyond 64 bits"
        );
        // The same stamp twice (deltas 0, 0), and a stamp before the previous one.
        for next in [[0, 0], [0, 1]] {
            let mut b = compact(&[2, 10, 5]);
            b.extend_from_slice(&next);
            b.push(0);
            assert_eq!(
                full(&b).unwrap_err().reason,
                "stamp table: stamps out of order"
            );
        }
    }

    /// A profile of W1's shape (docs/performance.md: 40 traits, 16 strings of 8-24 characters,
    /// 12 integers below 10^6, 8 booleans, 4 date-times; stamps of calls 1 ms and some 43,000
    /// calls apart).
    fn w1_like() -> ProfileRecord {
        let mut rec = ProfileRecord {
            ids: Ids {
                user_id: Some("user-00012345".into()),
                email: Some("user-00012345@example.com".into()),
                anonymous_ids: vec!["anon-6c1f7a0e-00012345".into()],
                company_id: None,
            },
            first_seen: Timestamp(1_767_225_600_000_000 + 1_000_000),
            updated_at: Timestamp(1_767_225_600_000_000 + 900_000_000),
            props: Vec::new(),
        };
        let stamps: Vec<Stamp> = (0..9u64)
            .map(|k| {
                let order = 1_000 + k * 43_000 + k * k * 311;
                Stamp::new(
                    Timestamp(1_767_225_600_000_000 + order as i64 * 1_000),
                    order,
                )
            })
            .collect();
        for i in 0..40u32 {
            let n = u64::from(i) * 7_919;
            let v = match i % 10 {
                0..4 => Value::Str("abcdefghijklmnopqrstuvwx"[..8 + (n % 17) as usize].into()),
                4..7 => Value::Int((n * 104_729 % 1_000_000) as i64),
                7..9 => Value::Bool(n % 2 == 1),
                _ => Value::DateTime(Timestamp(1_767_225_600_000_000 - (n as i64) * 1_000_000)),
            };
            let s = stamps[(n % stamps.len() as u64) as usize];
            rec.state_mut(i * 3 + 1).lww = Some((s, Some(v)));
        }
        rec
    }

    #[test]
    fn the_compact_layout_is_at_most_80_percent_of_the_old_on_a_w1_profile() {
        let rec = w1_like();
        let (new, old) = (encode(&rec), encode_old(&rec));
        assert_eq!(full(&new).unwrap(), rec);
        assert_eq!(full(&old).unwrap(), rec);
        eprintln!(
            "W1-like full record: {} B compact, {} B old",
            new.len(),
            old.len()
        );
        assert!(
            new.len() * 100 <= old.len() * 80,
            "{} B against {} B",
            new.len(),
            old.len()
        );
    }

    #[test]
    fn short_strings_decode_inline() {
        let mut rec = ProfileRecord::default();
        let stamp = Stamp::new(Timestamp(5), 1);
        // 24 bytes (W1's longest value) is held in place, 25 take a heap buffer.
        rec.state_mut(1).lww = Some((stamp, Some(Value::Str("x".repeat(24).into()))));
        let short = full(&encode(&rec)).unwrap();
        match short.state(1).map(|p| &p.lww) {
            Some(Some((_, Some(Value::Str(s))))) => assert!(!s.is_heap_allocated(), "inline"),
            other => panic!("{other:?}"),
        }
        rec.state_mut(1).lww = Some((stamp, Some(Value::Str("x".repeat(25).into()))));
        let long = full(&encode(&rec)).unwrap();
        let Some(Some((_, Some(Value::Str(s))))) = long.state(1).map(|p| &p.lww) else {
            panic!("a string");
        };
        assert!(s.is_heap_allocated());
    }

    #[test]
    fn the_writers_fold_of_the_log_checks_the_strings_it_keeps_not_those_it_steps_over() {
        let bytes = full_with_bad_string();
        let fold = |mut fold: Fold| fold.full(&bytes).map(|_| fold.take_raw());
        // Bytes read the first time: every string is checked, stepped over or not.
        assert!(fold(Fold::only(&[1])).is_err());
        assert!(fold(Fold::only_capturing(&[1], RawStates::default())).is_err());
        // The writer's fold of the log: the damaged state stepped over is not checked (a call
        // that needs it decodes it, and fails then)...
        let kept = fold(Fold::only_capturing(&[1], RawStates::default()).checking_kept());
        assert_eq!(kept.unwrap().unwrap().states.len(), 1);
        assert!(full(&bytes).is_err());
        // ...but one it keeps as bytes, or builds, is.
        let err = fold(Fold::only_capturing(&[2], RawStates::default()).checking_kept());
        assert_eq!(err.unwrap_err().reason, "string is not UTF-8");
        assert!(fold(Fold::only(&[2]).checking_kept()).is_err());
    }

    #[test]
    fn a_profile_of_many_stamps_gets_one_sorted_table() {
        // More distinct stamps than the table builds by insertion (32), in no order, each
        // used twice: the table must still be sorted with each stamp once, and the record
        // must decode to what was written.
        let mut rec = ProfileRecord::default();
        for i in 0..200u32 {
            let t = i64::from((i * 37) % 100);
            rec.state_mut(i).lww = Some((
                Stamp::new(Timestamp(t), u64::from(i % 100)),
                Some(Value::Int(i64::from(i))),
            ));
        }
        let table = StampTable::of(rec.props.iter().map(|(_, p)| p));
        assert_eq!(table.stamps().len(), 100);
        assert!(table.stamps().windows(2).all(|w| w[0] < w[1]));
        let bytes = encode(&rec);
        assert_eq!(full(&bytes).unwrap(), rec);
    }

    #[test]
    fn a_huge_length_is_an_error_not_an_allocation() {
        // user_id Some, string of length 2^62.
        let mut bytes = vec![1, 253];
        bytes.extend_from_slice(&(1u64 << 62).to_le_bytes());
        assert!(full(&bytes).unwrap_err().reason.contains("length"));
        // The same after the compact layout's tag.
        bytes.insert(0, FULL_TAG);
        assert!(full(&bytes).unwrap_err().reason.contains("length"));
        assert!(full_ids(&bytes).unwrap_err().reason.contains("length"));
        // Arrays nested beyond the bound: ids, times, one stamp, one property whose lww value
        // is an array of an array of ...
        let mut deep = vec![0u8, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0, 1];
        for _ in 0..10_000 {
            deep.extend_from_slice(&[5, 1]);
        }
        assert!(full(&deep).is_err());
        // And in the compact layout: one property whose shape says "set to an array" (2 + 5).
        let mut deep = compact(&ONE_STAMP);
        deep.extend_from_slice(&[1, 0, 7, 0, 1]);
        for _ in 0..10_000 {
            deep.extend_from_slice(&[5, 1]);
        }
        let e = full(&deep).unwrap_err();
        assert!(e.reason.contains("nested too deep"), "{e}");
        assert!(
            full_but(&deep, &[0])
                .unwrap_err()
                .reason
                .contains("nested too deep")
        );
    }

    /// The names of `rec`'s properties that `pick` points at, sorted, once each: what a call
    /// changed.
    fn picked(rec: &ProfileRecord, pick: &[prop::sample::Index]) -> Vec<u32> {
        if rec.props.is_empty() {
            return Vec::new();
        }
        let mut names: Vec<u32> = pick
            .iter()
            .map(|i| rec.props[i.index(rec.props.len())].0)
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// One delta of a test chain: the state after it, the picks of the names it changed, its
    /// event time, whether it carries the identifiers and whether it moves the times.
    type ChainStep = (ProfileRecord, Vec<prop::sample::Index>, i64, bool, bool);

    /// Up to six steps of a chain for [`chain_of`]: each a record, the names it changes picked
    /// from it, a time, and whether the delta carries identifiers and times.
    fn chain_steps() -> impl Strategy<Value = Vec<ChainStep>> {
        prop::collection::vec(
            (
                record(),
                prop::collection::vec(any::<prop::sample::Index>(), 0..6),
                any::<i64>(),
                any::<bool>(),
                any::<bool>(),
            ),
            0..7,
        )
    }

    /// The records of a chain: `base` encoded whole, then one delta per step, each linking to
    /// the one before.
    fn chain_of(base: &ProfileRecord, steps: &[ChainStep]) -> Vec<Vec<u8>> {
        let mut chain = vec![encode(base)];
        for (n, (after, pick, ts, with_ids, times)) in steps.iter().enumerate() {
            let changed = picked(after, pick);
            let link = Link {
                prev: Location {
                    segment: 1,
                    offset: n as u32,
                    len: 1,
                },
                depth: n as u32 + 1,
            };
            let mut bytes = Vec::new();
            put_delta(
                &DeltaOut {
                    link,
                    stamp: Stamp::new(Timestamp(*ts), n as u64),
                    times: *times,
                    ids: with_ids.then_some(&after.ids),
                    rec: after,
                    changed: &changed,
                },
                &mut bytes,
            );
            chain.push(bytes);
        }
        chain
    }

    /// Profiles whose states are plain sets or removals (W1's), as the writer cache splices.
    fn plain_record() -> impl Strategy<Value = ProfileRecord> {
        (
            record(),
            prop::collection::btree_map(0u32..48, (stamp(), proptest::option::of(value())), 0..40),
        )
            .prop_map(|(mut rec, props)| {
                rec.props = props
                    .into_iter()
                    .map(|(id, lww)| {
                        (
                            id,
                            PropState {
                                lww: Some(lww),
                                once: None,
                                adds: None,
                            },
                        )
                    })
                    .collect();
                rec
            })
    }

    /// [`plain_record`] of few states with values near the history step's short window
    /// (`history::put_mapped_state`: values of up to 25 bytes put together in a word, longer
    /// ones written apart): strings of 21 to 25 bytes (values of 23 to 27), small scalars and removals, a few
    /// shared stamps, the first states near the record's start when its identifiers are short.
    fn short_window_record() -> impl Strategy<Value = ProfileRecord> {
        let short = prop_oneof![
            "[a-z]{21,25}".prop_map(|s: String| Some(Value::Str(s.into()))),
            any::<i64>().prop_map(|i| Some(Value::Int(i))),
            any::<bool>().prop_map(|b| Some(Value::Bool(b))),
            Just(None),
        ];
        (
            record(),
            prop::collection::vec(stamp(), 1..4),
            prop::collection::btree_map(0u32..8, (any::<prop::sample::Index>(), short), 0..8),
        )
            .prop_map(|(mut rec, stamps, props)| {
                rec.props = props
                    .into_iter()
                    .map(|(id, (which, v))| {
                        let lww = (stamps[which.index(stamps.len())], v);
                        (
                            id,
                            PropState {
                                lww: Some(lww),
                                once: None,
                                adds: None,
                            },
                        )
                    })
                    .collect();
                rec
            })
    }

    /// Names of `names`, as many as `size` asks for, each once and in order, each with a
    /// value of `value`: a subsequence of the names, not names drawn one by one into a map.
    /// Such a map holds fewer names than were drawn when two are the same; proptest rejects
    /// it when it holds fewer than `size` asks for, and ends the run after 65,536 rejections
    /// in all: ~3.7 a draw of 120 to 128 names of 1,000 (`limit_record`), so that
    /// `a_splice_at_the_limits_is_the_whole_records` stopped after 32,926 cases; ~1.2 a draw
    /// of 62 to 83 of 200 (`a_splice_of_many_sets_is_the_whole_records`: ~55,000 cases).
    fn distinct_names<T: std::fmt::Debug + 'static>(
        names: std::ops::Range<u32>,
        size: impl Into<prop::collection::SizeRange>,
        value: BoxedStrategy<T>,
    ) -> impl Strategy<Value = Vec<(u32, T)>> {
        prop::sample::subsequence(names.collect::<Vec<u32>>(), size).prop_flat_map(move |names| {
            prop::collection::vec(value.clone(), names.len())
                .prop_map(move |values| names.iter().copied().zip(values).collect::<Vec<_>>())
        })
    }

    /// A record of `states` plain states with names spread over 0..1000 and short values:
    /// each on a stamp of its own (`shared: None`), or on one of `shared` stamps.
    fn limit_record(
        states: std::ops::RangeInclusive<usize>,
        shared: Option<usize>,
    ) -> impl Strategy<Value = ProfileRecord> {
        let short = prop_oneof![
            any::<i64>().prop_map(|i| Some(Value::Int(i))),
            "[a-z]{0,12}".prop_map(|s: String| Some(Value::Str(s.into()))),
            Just(None),
        ];
        (
            record(),
            prop::collection::vec(stamp(), shared.unwrap_or(1)..=shared.unwrap_or(1)),
            distinct_names(
                0..1000,
                states,
                (stamp(), any::<prop::sample::Index>(), short).boxed(),
            ),
        )
            .prop_map(move |(mut rec, stamps, props)| {
                rec.props = props
                    .into_iter()
                    .map(|(id, (own, which, v))| {
                        let stamp = match shared {
                            Some(_) => stamps[which.index(stamps.len())],
                            None => own,
                        };
                        let lww = Some((stamp, v));
                        (
                            id,
                            PropState {
                                lww,
                                once: None,
                                adds: None,
                            },
                        )
                    })
                    .collect();
                rec
            })
    }

    /// `splice_full` of `base`'s full record and a call's `sets` at `stamp` and `times`,
    /// held to the record `put_full` writes of the whole profile after the call (the same
    /// bytes and state lengths) when it splices: whether it did, and `base`'s state lengths
    /// (for the reasons a test accepts a decline).
    fn splice_is_put_full(
        base: &ProfileRecord,
        sets: &std::collections::BTreeMap<u32, Value>,
        times: (Timestamp, Timestamp),
        stamp: Stamp,
    ) -> Result<(bool, Vec<u8>), proptest::test_runner::TestCaseError> {
        let (mut old, mut old_lens) = (Vec::new(), Vec::new());
        put_full(base, &mut old, Some(&mut old_lens));
        let values = value_bytes(sets);
        // Written over: what the buffers held before is not kept.
        let (mut got, mut lens) = (vec![7], vec![9]);
        let done = splice_full(
            &old,
            &old_lens,
            times,
            stamp,
            values.iter().map(|(id, b)| (*id, &b[..])),
            &mut got,
            &mut lens,
        )
        .unwrap();
        if done {
            let mut whole = base.clone();
            (whole.first_seen, whole.updated_at) = times;
            set_all(&mut whole, sets, stamp);
            let (mut want, mut want_lens) = (Vec::new(), Vec::new());
            put_full(&whole, &mut want, Some(&mut want_lens));
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(&lens, &want_lens);
        }
        Ok((done, old_lens))
    }

    /// A call's sets as `splice_full` takes them: each value's bytes as `Value::put` writes
    /// them.
    fn value_bytes(sets: &std::collections::BTreeMap<u32, Value>) -> Vec<(u32, Vec<u8>)> {
        sets.iter()
            .map(|(id, v)| {
                let mut bytes = Vec::new();
                v.put(&mut bytes);
                (*id, bytes)
            })
            .collect()
    }

    /// The profile after a call setting `sets` at `stamp` (what `splice_full` must write).
    fn set_all(
        rec: &mut ProfileRecord,
        sets: &std::collections::BTreeMap<u32, Value>,
        stamp: Stamp,
    ) {
        for (id, v) in sets {
            *rec.state_mut(*id) = PropState {
                lww: Some((stamp, Some(v.clone()))),
                once: None,
                adds: None,
            };
        }
    }

    /// A property name: mostly small, some far apart (a gap of two or more bytes).
    fn wide_name() -> impl Strategy<Value = u32> {
        prop_oneof![3 => 0u32..48, 1 => 250u32..70_000, 1 => Just(u32::MAX)]
    }

    /// [`plain_record`] whose states share a few stamps, as the states one call sets do: a call
    /// setting some of them leaves the rest's stamp in the table.
    fn shared_stamps_record() -> impl Strategy<Value = ProfileRecord> {
        (
            record(),
            prop::collection::vec(stamp(), 1..5),
            prop::collection::btree_map(
                wide_name(),
                (any::<prop::sample::Index>(), proptest::option::of(value())),
                0..40,
            ),
        )
            .prop_map(|(mut rec, stamps, props)| {
                rec.props = props
                    .into_iter()
                    .map(|(id, (which, v))| {
                        (
                            id,
                            PropState {
                                lww: Some((stamps[which.index(stamps.len())], v)),
                                once: None,
                                adds: None,
                            },
                        )
                    })
                    .collect();
                rec
            })
    }

    /// A new profile's record (`put_full_one_stamp`): every state `lww` alone at one stamp, a
    /// set to any value (strings long and short, integers of every width, lists, objects)
    /// or a removal, the names some far apart.
    fn one_stamp_record() -> impl Strategy<Value = ProfileRecord> {
        (
            record(),
            stamp(),
            prop::collection::btree_map(wide_name(), proptest::option::of(value()), 0..40),
        )
            .prop_map(|(mut rec, s, props)| {
                rec.props = props
                    .into_iter()
                    .map(|(id, v)| {
                        let state = PropState {
                            lww: Some((s, v)),
                            once: None,
                            adds: None,
                        };
                        (id, state)
                    })
                    .collect();
                rec
            })
    }

    /// `put_full_one_stamp` of `rec` after the bytes `prefix`: `put_full`'s bytes and
    /// lengths when it writes, `prefix` untouched when it declines; whether it wrote.
    fn one_stamp_is_put_fulls(rec: &ProfileRecord, prefix: &[u8]) -> bool {
        let mut out = prefix.to_vec();
        let mut lens = vec![7u8; 3];
        let wrote = put_full_one_stamp(rec, &mut out, Some(&mut lens));
        let mut bare = prefix.to_vec();
        assert_eq!(wrote, put_full_one_stamp(rec, &mut bare, None));
        if wrote {
            let mut want = prefix.to_vec();
            let mut want_lens = Vec::new();
            put_full(rec, &mut want, Some(&mut want_lens));
            assert_eq!(out, want, "bytes of {rec:?}");
            assert_eq!(bare, want, "bytes of {rec:?}, no lengths");
            assert_eq!(lens, want_lens, "lengths of {rec:?}");
            assert_eq!(full(&out[prefix.len()..]).unwrap(), *rec);
        } else {
            assert_eq!(out, prefix, "declined, nothing written");
            assert_eq!(bare, prefix, "declined, nothing written");
        }
        wrote
    }

    #[test]
    fn a_new_profiles_record_is_put_fulls_and_any_other_is_declined() {
        let s = Stamp::new(Timestamp(1_767_225_600_000_000), 77);
        let set = |v: Option<Value>| PropState {
            lww: Some((s, v)),
            once: None,
            adds: None,
        };
        let mut rec = w1_like();
        rec.props = vec![
            (0, set(Some(Value::Bool(true)))),
            (1, set(Some(Value::Bool(false)))),
            (2, set(Some(Value::Int(0)))),
            (3, set(Some(Value::Int(125)))),
            (4, set(Some(Value::Int(126)))),
            (5, set(Some(Value::Int(-40_000)))),
            (6, set(Some(Value::Int(1 << 40)))),
            (7, set(Some(Value::Int(i64::MIN)))),
            (8, set(Some(Value::Float(-0.5)))),
            (9, set(Some(Value::Str("".into())))),
            (10, set(Some(Value::Str("a W1 string of 24 chars".into())))),
            (11, set(Some(Value::Str("x".repeat(250).into())))),
            (12, set(Some(Value::Str("é".repeat(200).into())))),
            (13, set(Some(Value::DateTime(Timestamp(-1))))),
            (
                14,
                set(Some(Value::DateTime(Timestamp(1_767_225_600_000_000)))),
            ),
            (15, set(Some(Value::Null))),
            (16, set(None)),
            (
                17,
                set(Some(Value::Array(vec![Value::Int(1), Value::Null]))),
            ),
            (
                300,
                set(Some(Value::Object(vec![(
                    "k".into(),
                    Value::Str("v".into()),
                )]))),
            ),
            (70_000, set(Some(Value::Int(3)))),
            (u32::MAX, set(Some(Value::Bool(true)))),
        ];
        assert!(one_stamp_is_put_fulls(&rec, &[]));
        assert!(one_stamp_is_put_fulls(&rec, b"before"));
        // Any state of another kind or stamp: declined, at the first state or a later one.
        for at in [0, 5, rec.props.len() - 1] {
            let mut other = rec.clone();
            other.props[at].1.lww = Some((Stamp::new(s.0, 78), Some(Value::Int(1))));
            assert!(!one_stamp_is_put_fulls(&other, b"xy"));
            let mut other = rec.clone();
            other.props[at].1.once = Some(Box::new((s, Value::Int(1))));
            assert!(!one_stamp_is_put_fulls(&other, b"xy"));
            let mut other = rec.clone();
            other.props[at].1.lww = None;
            other.props[at].1.adds = Some(Box::new(Adds {
                int: 1,
                float: None,
                first: s,
                last: s,
            }));
            assert!(!one_stamp_is_put_fulls(&other, b"xy"));
        }
        // No state: declined (`put_full` writes an empty table).
        rec.props.clear();
        assert!(!one_stamp_is_put_fulls(&rec, b""));
    }

    proptest! {
        /// A stamp table read by `map_stamps` is the table `stamp_after` reads stamp by stamp
        /// from the first: the same stamps, each one's place and the reader's place after, or
        /// the same error; on tables `put_deltas` writes (distances short and wide), cut short
        /// or damaged.
        #[test]
        fn a_mapped_stamp_table_is_its_stamps_read_one_by_one(
            stamps in prop::collection::vec(
                prop_oneof![
                    stamp(),
                    (0i64..5_000_000, 0u64..200_000)
                        .prop_map(|(t, o)| Stamp::new(Timestamp(t), o)),
                ],
                1..12,
            ),
            tail in prop::collection::vec(any::<u8>(), 0..12),
            cut in any::<prop::sample::Index>(),
            damage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let table = StampTable::sorted(stamps.into_iter().collect());
            let n = table.stamps().len();
            let mut bytes = Vec::new();
            table.put_deltas(&mut bytes);
            // After the count (one byte: at most 11 stamps).
            bytes.remove(0);
            bytes.extend_from_slice(&tail);
            if let Some((at, b)) = damage {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
            let mapped = |bytes: &[u8]| {
                let mut r = Reader::checked_before(bytes);
                let mut got = vec![Stamp::new(Timestamp(0), 0); n];
                let mut at = vec![0; n];
                map_stamps(&mut r, &mut got, &mut at).map(|()| (got, at, r.position()))
            };
            let one_by_one = |bytes: &[u8]| -> Decoded<(Vec<Stamp>, Vec<usize>, usize)> {
                let mut r = Reader::checked_before(bytes);
                let (mut got, mut at) = (Vec::new(), Vec::new());
                for _ in 0..n {
                    at.push(r.position());
                    let s = stamp_after(&mut r, got.last().copied())?;
                    got.push(s);
                }
                Ok((got, at, r.position()))
            };
            if damage.is_none() {
                prop_assert_eq!(&mapped(&bytes).unwrap().0, &table.stamps().to_vec());
            }
            for bytes in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
                prop_assert_eq!(mapped(bytes), one_by_one(bytes));
            }
        }
    }

    proptest! {
        /// A new profile's record written without a table built (`put_full_one_stamp`) is
        /// `put_full`'s, bytes and state lengths; any other record is declined, nothing
        /// written.
        #[test]
        fn a_one_stamp_record_is_put_fulls(
            rec in one_stamp_record(),
            other in prop_oneof![plain_record(), record()],
            prefix in prop::collection::vec(any::<u8>(), 0..3),
        ) {
            prop_assert_eq!(one_stamp_is_put_fulls(&rec, &prefix), !rec.props.is_empty());
            one_stamp_is_put_fulls(&other, &prefix);
        }

        /// A full record spliced from the one before and a call's sets (`splice_full`) is the
        /// record `put_full` writes of the whole profile after the call, with the same state
        /// lengths; when it declines, the record is one it does not write (a state the call
        /// leaves that is not plain, a state of 256 bytes or more, a stamp not older than the
        /// call's, or too many stamps).
        #[test]
        fn a_spliced_full_record_is_the_whole_records(
            base in prop_oneof![plain_record(), shared_stamps_record(), record()],
            sets in prop::collection::btree_map(0u32..56, value(), 0..12),
            times in (any::<i64>(), any::<i64>()),
            newest in any::<bool>(),
        ) {
            let stamp = if newest {
                Stamp::new(Timestamp(i64::MAX), u64::MAX)
            } else {
                Stamp::new(Timestamp(0), 0)
            };
            let times = (Timestamp(times.0), Timestamp(times.1));
            let (done, old_lens) = splice_is_put_full(&base, &sets, times, stamp)?;
            if !done {
                let table = StampTable::of(base.props.iter().map(|(_, p)| p));
                let left_not_plain = base.props.iter().any(|(id, p)| {
                    !sets.contains_key(id)
                        && (p.once.is_some() || p.adds.is_some() || p.lww.is_none())
                });
                prop_assert!(
                    left_not_plain
                        || old_lens.contains(&0)
                        || table.stamps().len() > SPLICE_STAMPS
                        || base.props.len() > SPLICE_STATES
                        || table.stamps().last().is_some_and(|s| *s >= stamp)
                );
            }
        }

        /// A call setting more names than a splice keeps where they land in its array (`Lands`,
        /// the rest in a `Vec`): the record `put_full` writes of the whole profile.
        #[test]
        fn a_splice_of_many_sets_is_the_whole_records(
            base in plain_record(),
            sets in distinct_names(0..200, LANDS - 2..LANDS + 20, value().boxed())
                .prop_map(|sets| sets.into_iter().collect::<std::collections::BTreeMap<_, _>>()),
        ) {
            let stamp = Stamp::new(Timestamp(i64::MAX), u64::MAX);
            let times = (Timestamp(5), Timestamp(6));
            let (done, old_lens) = splice_is_put_full(&base, &sets, times, stamp)?;
            if !done {
                let table = StampTable::of(base.props.iter().map(|(_, p)| p));
                prop_assert!(
                    old_lens.contains(&0)
                        || table.stamps().len() > SPLICE_STAMPS
                        || base.props.len() > SPLICE_STATES
                );
            }
        }

        /// A record at the splice's limits (up to `SPLICE_STAMPS` stamps, one a state, or up
        /// to `SPLICE_STATES` states on a few stamps): the splice's stamps numbered and its
        /// runs of kept stamps found by bit counts (`splice_mapped`), the newest stamp's bit
        /// 63 dropped or kept, and `map_full`'s names found 8 at a time up to the last state,
        /// give the record `put_full` writes of the whole profile.
        #[test]
        fn a_splice_at_the_limits_is_the_whole_records(
            (base, picks) in prop_oneof![
                (limit_record(56..=SPLICE_STAMPS, None), prop::collection::vec(any::<prop::sample::Index>(), 0..6)),
                (limit_record(120..=SPLICE_STATES, Some(6)), prop::collection::vec(any::<prop::sample::Index>(), 0..6)),
            ],
            newest in any::<bool>(),
            fresh in prop::collection::btree_map(0u32..300, value(), 0..3),
        ) {
            // Some of the record's names set again: the state on the newest stamp among them
            // when `newest`, so that the table's last stamp (bit 63 of a full table) drops.
            let mut sets = fresh;
            let by_stamp = |p: &PropState| p.lww.as_ref().map(|l| l.0);
            if newest && let Some((id, _)) = base.props.iter().max_by_key(|(_, p)| by_stamp(p)) {
                sets.insert(*id, Value::Int(1));
            }
            for i in &picks {
                sets.insert(base.props[i.index(base.props.len())].0, Value::Bool(true));
            }
            let stamp = Stamp::new(Timestamp(i64::MAX), u64::MAX);
            let times = (Timestamp(3), Timestamp(4));
            let (done, old_lens) = splice_is_put_full(&base, &sets, times, stamp)?;
            if !done {
                let table = StampTable::of(base.props.iter().map(|(_, p)| p));
                prop_assert!(
                    old_lens.contains(&0)
                        || table.stamps().len() > SPLICE_STAMPS
                        || base.props.len() > SPLICE_STATES
                );
            }
        }

        /// Call after call, each full record spliced from the one spliced before (the writer
        /// cache's steady state: stamps dropped as their names are set again, names far apart)
        /// is the record `put_full` writes of the whole profile.
        #[test]
        fn records_spliced_call_after_call_are_the_whole_records(
            base in shared_stamps_record(),
            calls in prop::collection::vec(
                (
                    prop::collection::btree_map(wide_name(), value(), 0..8),
                    prop::collection::vec(any::<prop::sample::Index>(), 0..6),
                ),
                1..6,
            ),
        ) {
            let mut whole = base;
            let (mut old, mut old_lens) = (Vec::new(), Vec::new());
            put_full(&whole, &mut old, Some(&mut old_lens));
            for (n, (new_names, again)) in calls.into_iter().enumerate() {
                // Some of the names the profile holds set again, as most W1 calls do.
                let mut sets = new_names;
                for i in again.iter().filter(|_| !whole.props.is_empty()) {
                    sets.insert(whole.props[i.index(whole.props.len())].0, Value::Int(n as i64));
                }
                let stamp = Stamp::new(Timestamp(i64::MAX), u64::MAX - 8 + n as u64);
                let values = value_bytes(&sets);
                let times = (Timestamp(n as i64), Timestamp(n as i64 * 1_000));
                let (mut got, mut lens) = (Vec::new(), Vec::new());
                let done = splice_full(
                    &old,
                    &old_lens,
                    times,
                    stamp,
                    values.iter().map(|(id, b)| (*id, &b[..])),
                    &mut got,
                    &mut lens,
                )
                .unwrap();
                let table = StampTable::of(whole.props.iter().map(|(_, p)| p));
                (whole.first_seen, whole.updated_at) = times;
                set_all(&mut whole, &sets, stamp);
                let (mut want, mut want_lens) = (Vec::new(), Vec::new());
                put_full(&whole, &mut want, Some(&mut want_lens));
                if done {
                    prop_assert_eq!(&got, &want);
                    prop_assert_eq!(&lens, &want_lens);
                } else {
                    // Only a record it does not write: a state of 256 bytes or more, too
                    // many stamps or states, or a stamp not older than the call's.
                    prop_assert!(
                        old_lens.contains(&0)
                            || old_lens.len() > SPLICE_STATES
                            || table.stamps().len() > SPLICE_STAMPS
                            || table.stamps().last().is_some_and(|s| *s >= stamp)
                    );
                }
                (old, old_lens) = (want, want_lens);
            }
        }

        /// A mapped state placed (`MappedStates::get_placed`: where it ends in the record, its
        /// value's length and variant) is the state `get_indexed` gives: the same name and
        /// stamp index, its value the bytes before its end with the variant over their first
        /// (none for a removal); nothing past the last.
        #[test]
        fn a_placed_mapped_state_is_the_indexed_one(
            base in prop_oneof![plain_record(), shared_stamps_record()],
            only in prop::collection::btree_set(wide_name(), 0..12),
        ) {
            let (mut old, mut old_lens) = (Vec::new(), Vec::new());
            put_full(&base, &mut old, Some(&mut old_lens));
            let only: Vec<u32> = only.into_iter().collect();
            let (mut map, mut raw) = (FullMap::new(), RawStates::default());
            let mapped =
                full_mapped(&old, &old_lens, &only, &mut raw, false, ProfileRecord::default(), &mut map, Known::default())
                    .unwrap();
            if mapped.is_none() {
                return Ok(());
            }
            let states = MappedStates::of(&old, &map).unwrap();
            prop_assert!(std::ptr::eq(states.record(), old.as_slice()));
            for k in 0..=states.len() {
                let placed = states.get_placed(k).map(|(name, index, end, len, variant)| {
                    let value = variant.map(|v| {
                        let mut bytes = old[end - len..end].to_vec();
                        bytes[0] = v;
                        bytes
                    });
                    (name, index, value)
                });
                let indexed = states.get_indexed(k).map(|(name, index, v)| {
                    let value = v.map(|(over, f)| {
                        let mut bytes = over.to_vec();
                        bytes[0] = f;
                        bytes
                    });
                    (name, index, value)
                });
                prop_assert_eq!(placed, indexed, "state {}", k);
            }
        }

        /// The states of the call's names a load left in the record it mapped
        /// (`full_mapped` without capturing) are, captured later (`FullMap::capture`), what
        /// it captures at once; and a history step that reads them from the record's bytes
        /// (`history::RawBefore::mapped`) is byte for byte the step their capture writes, and
        /// the reference encoder's, among decoded states (absent ones, and others' with their
        /// own stamps), the call's stamp one of theirs or not.
        #[test]
        fn a_step_read_from_a_mapped_record_is_the_step_of_its_captured_states(
            base in prop_oneof![plain_record(), shared_stamps_record(), short_window_record()],
            only in prop::collection::btree_set(wide_name(), 0..12),
            absent in prop::collection::btree_set(wide_name(), 0..6),
            call in stamp(),
            shared in any::<prop::sample::Index>(),
            share in any::<bool>(),
            arrival in any::<i64>(),
            decoded in 0usize..4,
            held in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            use crate::entries::history::{self, Body, RawBefore, StepKind};
            let (mut old, mut old_lens) = (Vec::new(), Vec::new());
            put_full(&base, &mut old, Some(&mut old_lens));
            // The call's names: drawn, and some of the record's (states mapped for the step).
            let mut only = only;
            if !base.props.is_empty() {
                only.extend(held.iter().map(|i| base.props[i.index(base.props.len())].0));
            }
            let only: Vec<u32> = only.into_iter().collect();
            let (mut map, mut raw) = (FullMap::new(), RawStates::default());
            let mapped =
                full_mapped(&old, &old_lens, &only, &mut raw, false, ProfileRecord::default(), &mut map, Known::default())
                    .unwrap();
            if mapped.is_none() {
                return Ok(());
            }
            prop_assert!(map.pending && raw.states.is_empty() && raw.bytes.is_empty());
            let (mut at_once, mut map_at_once) = (RawStates::default(), FullMap::new());
            let rec = full_mapped(
                &old,
                &old_lens,
                &only,
                &mut at_once,
                true,
                ProfileRecord::default(),
                &mut map_at_once,
                Known::default(),
            )
            .unwrap();
            prop_assert_eq!(rec, mapped);
            prop_assert!(!map_at_once.pending);
            prop_assert!(!map.capture(&old.clone(), &mut raw), "another record's bytes");
            prop_assert!(map.capture(&old, &mut raw));
            prop_assert_eq!(&raw.states, &at_once.states);
            prop_assert_eq!(&raw.bytes, &at_once.bytes);
            let found: Vec<(u32, Stamp)> = map.found().collect();
            prop_assert_eq!(
                found.clone(),
                raw.states.iter().map(|(n, r)| (n.to_owned(), r.stamp)).collect::<Vec<_>>()
            );
            // The call's stamp one of the record's (a state's it set before), or its own.
            let call = match base.props.get(shared.index(base.props.len().max(1))) {
                Some((_, p)) if share => p.lww.as_ref().map_or(call, |l| l.0),
                _ => call,
            };
            // Decoded states among them: names the record does not hold (absent before),
            // and states of names the call did not load (their stamps in the table too).
            let mut props: Vec<(u32, Option<PropState>)> = absent
                .iter()
                .filter(|n| base.props.binary_search_by_key(*n, |p| p.0).is_err())
                .map(|n| (*n, None))
                .collect();
            props.extend(
                base.props
                    .iter()
                    .filter(|(n, _)| !only.contains(n))
                    .take(decoded)
                    .map(|(n, p)| (*n, Some(p.clone()))),
            );
            // With no decoded state (a quarter of the cases) the step takes the mapped
            // writer (`history::put_props_mapped`, the fast path's), else `put_props_of`.
            props.sort_by_key(|p| p.0);
            props.dedup_by_key(|p| p.0);
            let body = Body {
                kind: StepKind::Call,
                event: call.0.0,
                order: call.1,
                message_id: None,
                carried: Default::default(),
                created: false,
                first_seen: 1,
                updated_at: 2,
                ids: None,
                props,
                merged: Vec::new(),
            };
            let mut r = body.as_ref();
            r.raw = RawBefore {
                states: &[],
                bytes: &[],
                mapped: MappedStates::of(&old, &map),
            };
            prop_assert!(r.raw.mapped.is_some());
            prop_assert!(MappedStates::of(&old.clone(), &map).is_none());
            let (mut got, mut want, mut reference) = (vec![5u8], vec![5u8], vec![5u8]);
            history::encode_into(&mut got, &mut vec![7u8; 3], arrival, &r, &Ids::default());
            r.raw = RawBefore {
                states: &raw.states,
                bytes: &raw.bytes,
                mapped: None,
            };
            history::encode_into(&mut want, &mut Vec::new(), arrival, &r, &Ids::default());
            history::encode_into_reference(&mut reference, arrival, &r, &Ids::default());
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(&got, &reference);
        }

        /// A full record mapped by a call's load (`full_mapped`) decodes to what the writer's
        /// fold of it gives (`Fold::only_capturing`: the identifiers, the times, the call's
        /// plain states captured with the same bytes), and the full record spliced from its map
        /// (`splice_mapped`) is the one `splice_full` writes; it declines only a record with a
        /// captured state that is not plain, a state of 256 bytes or more, or too many stamps
        /// or states. A map is not used with another record.
        #[test]
        fn a_record_mapped_by_the_load_decodes_and_splices_as_walked_again(
            base in prop_oneof![plain_record(), shared_stamps_record(), record()],
            // Now and then more names than the map keeps places for (`LANDS`): the sets past
            // them are found by the splice.
            only in prop_oneof![
                4 => prop::collection::btree_set(wide_name(), 0..12),
                1 => (
                    prop::collection::btree_set(0u32..48, 20..40),
                    prop::collection::btree_set(250u32..70_000, 40..60),
                )
                    .prop_map(|(a, b)| a.into_iter().chain(b).collect()),
            ],
            sets in prop::collection::btree_map(wide_name(), value(), 0..12),
            names in 0u8..3,
            newest in any::<bool>(),
        ) {
            let (mut old, mut old_lens) = (Vec::new(), Vec::new());
            put_full(&base, &mut old, Some(&mut old_lens));
            let only: Vec<u32> = only.into_iter().collect();
            // The names set: others than the map's, the map's (the fast path's: each set's
            // place the map's), or both (the map's places used for some sets only).
            let mut sets = sets;
            if names > 0 {
                let own = only.iter().map(|&id| (id, Value::Int(i64::from(id))));
                match names {
                    1 => sets = own.collect(),
                    _ => own.for_each(|(id, v)| {
                        sets.entry(id).or_insert(v);
                    }),
                }
            }
            let mut fold = Fold::only_capturing(&only, RawStates::default()).checked_before();
            let folded = fold.full_with_lens(&old, Some(&old_lens)).unwrap();
            let folded_raw = fold.take_raw().unwrap();
            // The same fold without the state lengths reads each state by its own bytes
            // (`shaped_state_or_raw`), not through the capture by kept length that the fold
            // above and `full_mapped` share: an independent reference for both.
            let mut walk = Fold::only_capturing(&only, RawStates::default()).checked_before();
            let walked_rec = walk.full_with_lens(&old, None).unwrap();
            let walked_raw = walk.take_raw().unwrap();
            prop_assert_eq!(&walked_rec, &folded);
            prop_assert_eq!(&walked_raw.states, &folded_raw.states);
            prop_assert_eq!(&walked_raw.bytes, &folded_raw.bytes);
            let mut map = FullMap::new();
            let mut raw = RawStates::default();
            let mapped = full_mapped(
                &old,
                &old_lens,
                &only,
                &mut raw,
                true,
                ProfileRecord::default(),
                &mut map,
                Known::default(),
            )
            .unwrap();
            let Some(rec) = mapped else {
                let table = StampTable::of(base.props.iter().map(|(_, p)| p));
                let captured_not_plain = base.props.iter().any(|(id, p)| {
                    only.contains(id) && (p.once.is_some() || p.adds.is_some() || p.lww.is_none())
                });
                prop_assert!(
                    captured_not_plain
                        || old_lens.contains(&0)
                        || table.stamps().len() > SPLICE_STAMPS
                        || base.props.len() > SPLICE_STATES
                );
                prop_assert!(raw.states.is_empty());
                return Ok(());
            };
            prop_assert!(folded.props.is_empty());
            prop_assert_eq!(&rec, &folded);
            prop_assert_eq!(&raw.states, &folded_raw.states);
            prop_assert_eq!(&raw.bytes, &folded_raw.bytes);
            let stamp = if newest {
                Stamp::new(Timestamp(i64::MAX), u64::MAX)
            } else {
                Stamp::new(Timestamp(0), 0)
            };
            let values = value_bytes(&sets);
            let times = (Timestamp(1), Timestamp(2));
            let (mut want, mut want_lens) = (Vec::new(), Vec::new());
            let walked = splice_full(
                &old,
                &old_lens,
                times,
                stamp,
                values.iter().map(|(id, b)| (*id, &b[..])),
                &mut want,
                &mut want_lens,
            )
            .unwrap();
            let (mut got, mut lens) = (vec![7], vec![9]);
            // The call's splice from `map` of `bytes` with their lengths.
            let spliced = |bytes: &[u8], lens_of: &[u8], got: &mut Vec<u8>, lens: &mut Vec<u8>| {
                splice_mapped(
                    bytes,
                    bytes,
                    lens_of,
                    &map,
                    times,
                    stamp,
                    values.iter().map(|(id, b)| (*id, &b[..])),
                    got,
                    lens,
                )
                .unwrap()
            };
            let done = spliced(&old, &old_lens, &mut got, &mut lens);
            prop_assert_eq!(done, walked);
            if done {
                prop_assert_eq!(&got, &want);
                prop_assert_eq!(&lens, &want_lens);
            }
            // The record at the start of a longer buffer (as the cache keeps it, its lengths
            // and more after it), which the runs' pieces read past the record's end: the same
            // bytes; a `padded` that does not start where the record does is not read.
            let mut buffer = old.clone();
            buffer.extend_from_slice(&[0xEE; 80]);
            let in_buffer = &buffer[..old.len()];
            let mut buffer_map = FullMap::new();
            let buffer_mapped = map_full(in_buffer, &old_lens, None, None, &mut buffer_map);
            let buffer_mapped = buffer_mapped.unwrap();
            prop_assert!(buffer_mapped || !walked);
            for padded in [&buffer[..], &buffer[1..], &old[..]].into_iter().filter(|_| buffer_mapped) {
                let (mut got, mut lens) = (vec![7], vec![9]);
                let done = splice_mapped(
                    padded,
                    in_buffer,
                    &old_lens,
                    &buffer_map,
                    times,
                    stamp,
                    values.iter().map(|(id, b)| (*id, &b[..])),
                    &mut got,
                    &mut lens,
                )
                .unwrap();
                prop_assert_eq!(done, walked);
                if done {
                    prop_assert_eq!(&got, &want);
                    prop_assert_eq!(&lens, &want_lens);
                }
            }
            // Other bytes, even the same ones elsewhere, or another record of the same length
            // (its `first_seen` moved): the map is not theirs.
            let copy = old.clone();
            let mut other = base.clone();
            other.first_seen = Timestamp(other.first_seen.0 ^ 2);
            let (mut other_bytes, mut other_lens) = (Vec::new(), Vec::new());
            put_full(&other, &mut other_bytes, Some(&mut other_lens));
            for (bytes, lens_of) in [(&copy, &old_lens), (&other_bytes, &other_lens)] {
                prop_assert!(!spliced(bytes, lens_of, &mut got, &mut lens));
            }
        }

        /// The lean walk of a record's states (`map_states`) gives what the walk checking
        /// every state (`map_states_checked`) gives: the same places, the same refusal or the
        /// same error, on records as the cache keeps them, with wide names, damaged bytes or
        /// lengths, from where the states start or from anywhere.
        #[test]
        fn the_lean_walk_of_the_states_decides_as_the_checked_one(
            base in prop_oneof![plain_record(), record()],
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            lens_flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            anywhere in proptest::option::of(any::<prop::sample::Index>()),
        ) {
            let (mut old, mut old_lens) = (Vec::new(), Vec::new());
            put_full(&base, &mut old, Some(&mut old_lens));
            let mut map = FullMap::new();
            // Where the states start: past the table and their count (one byte below 251).
            let start = match (map_full(&old, &old_lens, None, None, &mut map), anywhere) {
                (_, Some(at)) => at.index(old.len() + 1),
                (Ok(true), None) if old_lens.len() < 251 => map.at[map.n_stamps] + 1,
                _ => return Ok(()),
            };
            damage(&mut old, &mut old_lens, &flips, lens_flip);
            let n = old_lens.len().min(SPLICE_STATES);
            let (mut lean, mut checked) = ([(0, 0, 0); SPLICE_STATES], [(0, 0, 0); SPLICE_STATES]);
            let got = map_states(&old, start, &old_lens, &mut lean[..n]);
            let want = map_states_checked(&old, start, &old_lens, &mut checked[..n]);
            prop_assert_eq!(&got, &want);
            if let Ok(Some(_)) = want {
                prop_assert_eq!(&lean[..n], &checked[..n]);
            }
        }

        /// Bytes that are not a full record with its lengths give an error or a refusal, never
        /// a panic.
        #[test]
        fn splicing_damaged_bytes_does_not_panic(
            base in plain_record(),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            lens_flip in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            sets in prop::collection::btree_map(0u32..56, any::<i64>(), 0..12),
        ) {
            let (mut old, mut old_lens) = (Vec::new(), Vec::new());
            put_full(&base, &mut old, Some(&mut old_lens));
            damage(&mut old, &mut old_lens, &flips, lens_flip);
            let values: Vec<(u32, Vec<u8>)> = sets
                .iter()
                .map(|(id, v)| {
                    let mut bytes = Vec::new();
                    Value::Int(*v).put(&mut bytes);
                    (*id, bytes)
                })
                .collect();
            let (mut got, mut lens) = (Vec::new(), Vec::new());
            let _ = splice_full(
                &old,
                &old_lens,
                (Timestamp(0), Timestamp(0)),
                Stamp::new(Timestamp(i64::MAX), u64::MAX),
                values.iter().map(|(id, b)| (*id, &b[..])),
                &mut got,
                &mut lens,
            );
            let only: Vec<u32> = sets.keys().copied().collect();
            let (mut map, mut raw) = (FullMap::new(), RawStates::default());
            let mapped =
                full_mapped(&old, &old_lens, &only, &mut raw, true, ProfileRecord::default(), &mut map, Known::default());
            if let Ok(Some(_)) = mapped {
                let _ = splice_mapped(
                    &old,
                    &old,
                    &old_lens,
                    &map,
                    (Timestamp(0), Timestamp(0)),
                    Stamp::new(Timestamp(i64::MAX), u64::MAX),
                    values.iter().map(|(id, b)| (*id, &b[..])),
                    &mut got,
                    &mut lens,
                );
            }
        }
    }

    proptest! {
        /// A chain folded whole with every plain state captured as bytes
        /// (`Fold::capturing`), then written from those parts (`put_full_parts`: the
        /// captured states, the ones built, and sets of some names by a newer call) is the full
        /// record `put_full` writes of the whole profile after that call, with the same state
        /// lengths; a name given twice is refused.
        #[test]
        fn a_full_record_from_parts_is_the_whole_records(
            base in record(),
            steps in chain_steps(),
            sets in prop::collection::btree_map(0u32..12, any::<i64>(), 0..5),
            checked_before in any::<bool>(),
        ) {
            let chain = chain_of(&base, &steps);
            let fold_with = |mut fold: Fold| {
                for bytes in chain.iter().skip(1).rev() {
                    fold.delta(bytes).unwrap();
                }
                let rec = fold.full(&chain[0]).unwrap();
                (rec, fold.take_raw())
            };
            let (mut whole, _) = fold_with(Fold::default());
            let fold = Fold::capturing(RawStates::default());
            let (built, raw) =
                fold_with(if checked_before { fold.checked_before() } else { fold });
            let mut raw = raw.unwrap();
            // A newer call sets some names (the fast path: their captured states taken out,
            // none of them built).
            let stamp = Stamp::new(Timestamp(i64::MAX), u64::MAX);
            let values: Vec<(u32, i64, Vec<u8>)> = sets
                .iter()
                .filter(|(id, _)| built.props.binary_search_by_key(*id, |p| p.0).is_err())
                .map(|(id, v)| {
                    let mut bytes = Vec::new();
                    Value::Int(*v).put(&mut bytes);
                    (*id, *v, bytes)
                })
                .collect();
            for (id, v, _) in &values {
                raw.take(*id);
                whole
                    .state_mut(*id)
                    .apply_set_ref(Some(&Value::Int(*v)), stamp.0, stamp.1);
            }
            let mut parts: Vec<(u32, Part<'_>)> = raw
                .states
                .iter()
                .map(|(id, r)| (*id, Part::Plain(r.stamp, raw.value_bytes(r))))
                .chain(built.props.iter().map(|(id, p)| (*id, Part::State(p))))
                .chain(values.iter().map(|(id, _, v)| (*id, Part::Plain(stamp, Some(&v[..])))))
                .collect();
            parts.sort_by_key(|p| p.0);
            let (mut want, mut want_lens) = (Vec::new(), Vec::new());
            put_full(&whole, &mut want, Some(&mut want_lens));
            let (mut got, mut lens) = (Vec::new(), vec![9]);
            put_full_parts(
                &built.ids,
                (built.first_seen, built.updated_at),
                &parts,
                &mut got,
                &mut lens,
            )
            .unwrap();
            prop_assert_eq!(&got, &want);
            prop_assert_eq!(&lens, &want_lens);
            if let Some(first) = parts.first().map(|p| p.0) {
                parts.insert(0, (first, Part::Plain(stamp, None)));
                prop_assert!(put_full_parts(
                    &built.ids,
                    (built.first_seen, built.updated_at),
                    &parts,
                    &mut Vec::new(),
                    &mut lens,
                )
                .is_err());
            }
        }

        /// A fold into a record another profile left (the writer's reuse of its buffers) gives
        /// what a fold into nothing gives: nothing of the other profile stays.
        #[test]
        fn a_fold_into_a_used_record_keeps_nothing_of_it(
            rec in record(),
            other in record(),
            pick in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let bytes = encode(&rec);
            let only = picked(&rec, &pick);
            let fresh = Fold::only(&only).full(&bytes).unwrap();
            let mut fold = Fold::only(&only);
            fold.reuse(other.clone());
            let reused = fold.full(&bytes).unwrap();
            prop_assert_eq!(&reused, &fresh);
            let mut ids = other.ids.clone();
            let mut r = Reader::new(&bytes[1..]);
            ids_into(&mut r, &mut ids).unwrap();
            prop_assert_eq!(ids, rec.ids.clone());
        }

        /// The identifiers read with a call's (`ids_into_known`: an identifier of the call's
        /// bytes taken as the call's) decode as `ids_into` decodes them, into a used record
        /// too, whether the call's identifiers are the record's or not; damaged bytes give the
        /// same error (never a panic).
        #[test]
        fn identifiers_read_with_a_calls_decode_as_alone(
            rec in record(),
            other in record(),
            same in prop::collection::vec(any::<bool>(), 3),
            stranger in "[a-z@.é]{0,12}",
            damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = Vec::new();
            rec.ids.put(&mut bytes);
            let pick = |i: usize, theirs: Option<&str>| {
                if same[i] { theirs.map(str::to_string) } else { Some(stranger.clone()) }
            };
            let (user_id, email) = (pick(0, rec.ids.user_id.as_deref()), pick(1, rec.ids.email.as_deref()));
            let anonymous_id = pick(2, rec.ids.anonymous_ids.first().map(String::as_str));
            let known = Known {
                user_id: user_id.as_deref(),
                email: email.as_deref(),
                anonymous_id: anonymous_id.as_deref(),
            };
            let read = |bytes: &[u8], into: &mut Ids, known: Option<Known<'_>>| {
                let mut r = Reader::checked_before(bytes);
                match known {
                    Some(known) => ids_into_known(&mut r, into, known)?,
                    None => ids_into(&mut r, into)?,
                }
                r.finish()
            };
            let mut got = other.ids.clone();
            read(&bytes, &mut got, Some(known)).unwrap();
            prop_assert_eq!(&got, &rec.ids);
            for (at, b) in damage {
                let i = at.index(bytes.len().max(1));
                if let Some(x) = bytes.get_mut(i) {
                    *x = b;
                }
            }
            for bytes in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
                let (mut a, mut b) = (other.ids.clone(), other.ids.clone());
                let (with, alone) = (read(bytes, &mut a, Some(known)), read(bytes, &mut b, None));
                prop_assert_eq!(&with, &alone);
                if with.is_ok() {
                    prop_assert_eq!(a, b);
                }
            }
        }

        /// `Known::by_slot`'s table gives, for each slot, what the `match` on the slot it
        /// replaced gave.
        #[test]
        fn known_by_slot_is_the_match_on_the_slot(
            user_id in prop::option::of("[a-z]{0,4}"),
            email in prop::option::of("[a-z]{0,4}"),
            anonymous_id in prop::option::of("[a-z]{0,4}"),
        ) {
            let known = Known {
                user_id: user_id.as_deref(),
                email: email.as_deref(),
                anonymous_id: anonymous_id.as_deref(),
            };
            let by_match = |slot| match slot {
                Slot::UserId => known.user_id,
                Slot::Email => known.email,
                Slot::AnonymousId => known.anonymous_id,
                Slot::CompanyId => None,
            };
            for slot in [Slot::UserId, Slot::Email, Slot::AnonymousId, Slot::CompanyId] {
                prop_assert_eq!(known.by_slot()[slot as usize], by_match(slot), "{:?}", slot);
            }
        }

        /// The in-place merge of a fold's newer states gives the sorted union.
        #[test]
        fn merge_sorted_gives_the_sorted_union(
            names in prop::collection::btree_set(0u32..64, 0..24),
            sides in prop::collection::vec(any::<bool>(), 24),
        ) {
            let (mut props, mut newer) = (Vec::new(), Vec::new());
            for (i, id) in names.iter().enumerate() {
                let side = if sides[i] { &mut props } else { &mut newer };
                let state = PropState {
                    lww: Some((Stamp::new(Timestamp(i64::from(*id)), 1), None)),
                    ..PropState::default()
                };
                side.push((*id, state));
            }
            merge_sorted(&mut props, &mut newer);
            prop_assert!(newer.is_empty());
            for (id, state) in &props {
                prop_assert_eq!(state.lww.as_ref().map(|l| l.0.0.0), Some(i64::from(*id)));
            }
            let got: Vec<u32> = props.iter().map(|p| p.0).collect();
            prop_assert_eq!(got, names.into_iter().collect::<Vec<_>>());
        }

        #[test]
        fn full_records_decode_to_what_was_written(
            rec in record(),
            pick in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let bytes = encode(&rec);
            prop_assert_eq!(bytes[0], FULL_TAG);
            prop_assert_eq!(full(&bytes).unwrap(), rec.clone());
            prop_assert_eq!(full_ids(&bytes).unwrap(), rec.ids.clone());
            let known = picked(&rec, &pick);
            prop_assert_eq!(full_but(&bytes, &known).unwrap(), without(&rec, &known));
        }

        /// Records in the layout of revisions 1-4 decode to the same record as the compact
        /// layout, whole, identifiers alone, and with names stepped over.
        #[test]
        fn old_layout_records_decode_to_the_same_record(
            rec in record(),
            pick in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let old = encode_old(&rec);
            prop_assert!(old[0] <= 1);
            prop_assert_eq!(full(&old).unwrap(), rec.clone());
            prop_assert_eq!(full_ids(&old).unwrap(), rec.ids.clone());
            let known = picked(&rec, &pick);
            prop_assert_eq!(full_but(&old, &known).unwrap(), without(&rec, &known));
        }

        #[test]
        fn deltas_decode_and_apply_to_what_was_written(
            before in record(),
            after in record(),
            pick in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
            ts in any::<i64>(), order in any::<u64>(), with_ids in any::<bool>(), times in any::<bool>(),
            seg in any::<u32>(), off in any::<u32>(), len in any::<u32>(), depth in 1u32..=MAX_CHAIN_DEPTH,
        ) {
            let changed = picked(&after, &pick);
            let link = Link { prev: Location { segment: seg, offset: off, len }, depth };
            let stamp = Stamp::new(Timestamp(ts), order);
            let mut bytes = Vec::new();
            put_delta(&DeltaOut {
                link, stamp, times,
                ids: with_ids.then_some(&after.ids),
                rec: &after, changed: &changed,
            }, &mut bytes);
            prop_assert!(is_delta(&bytes));
            let d = delta(&bytes).unwrap();
            prop_assert_eq!(d.link, link);
            let (l2, ids2) = delta_ids(&bytes).unwrap();
            prop_assert_eq!(l2, link);
            prop_assert_eq!(ids2.as_ref(), with_ids.then_some(&after.ids));
            let mut rec = before.clone();
            d.apply_to(&mut rec);
            for id in &changed {
                let want = after.props.iter().find(|p| p.0 == *id).map(|p| &p.1);
                let got = rec.props.iter().find(|p| p.0 == *id).map(|p| &p.1);
                prop_assert_eq!(got, want);
            }
            prop_assert!(rec.props.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(full(&bytes).is_err(), "a delta is never taken for a full record");
        }

        /// The newest-first fold that reads chains equals applying each delta oldest first,
        /// whatever the names the deltas share with each other and with the full record.
        #[test]
        fn newest_first_fold_equals_applying_deltas_in_order(
            base in record(),
            steps in chain_steps(),
        ) {
            let chain = chain_of(&base, &steps);
            let mut want = base.clone();
            for bytes in &chain[1..] {
                delta(bytes).unwrap().apply_to(&mut want);
            }
            let mut fold = Fold::default();
            for (n, bytes) in chain.iter().enumerate().skip(1).rev() {
                let link = fold.delta(bytes).unwrap();
                prop_assert_eq!(link.depth, n as u32);
            }
            let rec = fold.full(&chain[0]).unwrap();
            prop_assert_eq!(fold.deltas(), steps.len() as u32);
            prop_assert_eq!(rec, want);
        }

        /// A partial fold (`Fold::only`, as the writer loads a profile for a call) gives the
        /// identifiers, times and the states of its names as the whole fold does, and no other
        /// state; from bytes read the first time and from bytes checked before alike.
        #[test]
        fn a_partial_fold_is_the_whole_fold_restricted_to_its_names(
            base in record(),
            steps in chain_steps(),
            pick in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
            stray in any::<u32>(),
            other in record(),
        ) {
            let chain = chain_of(&base, &steps);
            let mut names: Vec<u32> = base.props.iter().map(|p| p.0).collect();
            for (after, pick, ..) in &steps {
                names.extend(picked(after, pick));
            }
            let mut only: Vec<u32> = pick
                .iter()
                .filter(|_| !names.is_empty())
                .map(|i| names[i.index(names.len())])
                .chain([stray])
                .collect();
            only.sort_unstable();
            only.dedup();
            let fold_with = |mut fold: Fold, lens: Option<&[u8]>| {
                for bytes in chain.iter().skip(1).rev() {
                    fold.delta(bytes).unwrap();
                }
                fold.full_with_lens(&chain[0], lens).unwrap()
            };
            let whole = fold_with(Fold::default(), None);
            let mut want = whole.clone();
            want.props.retain(|(id, _)| only.binary_search(id).is_ok());
            prop_assert_eq!(&fold_with(Fold::only(&only), None), &want);
            prop_assert_eq!(&fold_with(Fold::only(&only).checked_before(), None), &want);
            // Into a record another profile left (the writer reuses its buffers): the same.
            let reusing = |mut fold: Fold| {
                fold.reuse(other.clone());
                fold
            };
            prop_assert_eq!(&fold_with(reusing(Fold::default()), None), &whole);
            prop_assert_eq!(&fold_with(reusing(Fold::only(&only)), None), &want);
            // With the full record's state lengths (the writer cache's): the same folds.
            let (mut full, mut lens) = (Vec::new(), Vec::new());
            put_full(&base, &mut full, Some(&mut lens));
            prop_assert_eq!(&full, &chain[0]);
            prop_assert_eq!(&fold_with(Fold::only(&only).checked_before(), Some(&lens)), &want);
            prop_assert_eq!(&fold_with(Fold::default().checked_before(), Some(&lens)), &whole);
            // Capturing the plain states as bytes (`entries::raw`): those decoded, with the
            // states built, are the same states; no name both built and captured.
            for (case, reuse) in [
                (Utf8::All, None),
                (Utf8::Kept, None),
                (Utf8::Built, None),
                (Utf8::Built, Some(&lens[..])),
            ]
            .into_iter()
            .flat_map(|case| [(case, false), (case, true)])
            {
                let (utf8, lens) = case;
                let mut fold = Fold::only_capturing(&only, RawStates::default());
                fold = match utf8 {
                    Utf8::All => fold,
                    Utf8::Kept => fold.checking_kept(),
                    Utf8::Built => fold.checked_before(),
                };
                if reuse {
                    fold.reuse(other.clone());
                }
                for bytes in chain.iter().skip(1).rev() {
                    fold.delta(bytes).unwrap();
                }
                let mut got = fold.full_with_lens(&chain[0], lens).unwrap();
                let raw = fold.take_raw().unwrap();
                prop_assert!(raw.states.windows(2).all(|w| w[0].0 < w[1].0));
                for (id, r) in &raw.states {
                    prop_assert!(got.props.iter().all(|p| p.0 != *id), "{} built and captured", id);
                    let state = raw.decode(r).unwrap();
                    prop_assert!(state.once.is_none() && state.adds.is_none());
                    *got.state_mut(*id) = state;
                }
                prop_assert_eq!(&got, &want);
            }
        }

        #[test]
        fn damaged_records_are_errors_not_panics(rec in record(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            for encoder in [encode, encode_old] {
                let mut bytes = encoder(&rec);
                let i = at.index(bytes.len());
                bytes[i] = byte;
                let _ = full(&bytes);
                let _ = full_but(&bytes, &[0, 1, 2, 3]);
                let _ = full_ids(&bytes);
                let _ = delta(&bytes);
                let _ = delta_ids(&bytes);
                // A strict prefix of a record never decodes.
                let mut whole = encoder(&rec);
                whole.truncate(i);
                prop_assert!(full(&whole).is_err());
            }
        }
    }
}
