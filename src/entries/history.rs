//! History steps (entry kind 20, docs/format.md "History step", docs/journal.md): what one
//! call did to one profile, kept as an *undo* record. A step holds the profile's state
//! *before* the call for everything the call changed (identifiers, first_seen / updated_at,
//! the state of each property whose state changed), the call's messageId, stamps and the
//! identifiers it carried, and, for a merge, the merged-away profiles as they were. The state
//! after the call is the next step's "before" (or the current record): a profile is rebuilt
//! as of a past time by undoing the steps newer than that time, newest first, from its
//! current record. So only the steps inside the retention window are needed, never a base
//! record older than the window.
//!
//! Layout (docs/format.md "History step"): tag byte [`STEP_TAG`], arrival time as 8 bytes
//! little-endian (so that compaction reads it without decoding the rest), then a hand-written
//! body in the varints of `wire.rs`: one flags byte (kind, created, which optional fields
//! follow), the call's stamp, the optional strings, the times before, the identifiers before,
//! the properties' states before with their stamps in a table that starts with the call's
//! stamp (the compact form of full records, `values.rs`), and the merged-away records.

use super::profile::{self, Ids, MappedStates, ProfileRecord, SPLICE_STAMPS};
use super::raw::{RawState, put_raw_state};
#[cfg(test)]
use super::values::put_state;
use super::values::{StampIndex, StampTable, Stamps, each_stamp, put_state_in, stamp, state};
#[cfg(test)]
use super::wire::put_u64;
use super::wire::{
    DecodeError, Decoded, Names, Reader, Wire, put_two_inline, put_u64_inline, two_inline_word,
    zigzag,
};
use crate::error::{Error, Result};
use crate::types::state::{PropState, Stamp};
use crate::types::value::Timestamp;

/// First byte of a step (a later layout would take another value).
pub(crate) const STEP_TAG: u8 = 2;

/// What kind of change a step records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepKind {
    /// An identify / group / alias / link call applied to the profile.
    Call,
    /// Another call took one of the profile's identifiers (the protection rule) or an unlink
    /// removed an anonymous id: only identifiers changed.
    Identifiers,
    /// An unmerge restored a merged-away profile (its "before" is the profile as it was at
    /// the merge, so undoing it continues into the key's history before the merge) or took
    /// it out of the survivor (docs/journal.md "Unmerge").
    Unmerge,
}

/// The identifiers a call carried (for unmerge's attribution of later changes).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Carried {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub anonymous_id: Option<String>,
    /// As decoded: which carried identifiers are the profile's after the call (stored as a
    /// flag, or the anonymous id's index, instead of the text); [`Body::carried`] resolves
    /// them against the record after the call. Empty when encoding.
    pub same: Same,
}

/// Carried identifiers equal to the profile's after the call.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Same {
    pub user_id: bool,
    pub email: bool,
    pub anonymous_id: Option<u32>,
}

/// Identifiers before the call, as in a profile record.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct StepIds {
    pub user_id: Option<String>,
    pub email: Option<String>,
    pub anonymous_ids: Vec<String>,
    pub company_id: Option<String>,
}

impl From<&Ids> for StepIds {
    fn from(i: &Ids) -> StepIds {
        StepIds {
            user_id: i.user_id.clone(),
            email: i.email.clone(),
            anonymous_ids: i.anonymous_ids.clone(),
            company_id: i.company_id.clone(),
        }
    }
}

impl From<StepIds> for Ids {
    fn from(i: StepIds) -> Ids {
        Ids {
            user_id: i.user_id,
            email: i.email,
            anonymous_ids: i.anonymous_ids,
            company_id: i.company_id,
        }
    }
}

/// A step's body (everything after the arrival time).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Body {
    pub kind: StepKind,
    /// The call's event time and arrival order (its stamp).
    pub event: i64,
    pub order: u64,
    pub message_id: Option<String>,
    pub carried: Carried,
    /// The call created the profile: before it there was nothing.
    pub created: bool,
    /// first_seen and updated_at before the call.
    pub first_seen: i64,
    pub updated_at: i64,
    /// Identifiers before the call, when it changed them.
    pub ids: Option<StepIds>,
    /// Each property whose state the call changed, sorted by name number, with its state
    /// before the call (`None`: the profile had no state for it).
    pub props: Vec<(u32, Option<PropState>)>,
    /// Profiles merged into this one by the call: key and full record (format of kind 1)
    /// as they were just before the merge.
    pub merged: Vec<(u64, Vec<u8>)>,
}

/// A decoded step.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// When the store applied the call (journal clock: microseconds, strictly increasing
    /// within a store).
    pub arrival: i64,
    pub body: Body,
}

// Bits of the flags byte (the two low bits are the kind: 0 call, 1 identifiers, 2 unmerge).
const CREATED: u8 = 1 << 2;
const MESSAGE_ID: u8 = 1 << 3;
const IDS: u8 = 1 << 4;
const CARRIED_USER: u8 = 1 << 5;
const CARRIED_EMAIL: u8 = 1 << 6;
const CARRIED_ANON: u8 = 1 << 7;
// Bits of the second flags byte: carried identifiers equal to the profile's after the call.
const SAME_USER: u8 = 1;
const SAME_EMAIL: u8 = 1 << 1;
const SAME_ANON: u8 = 1 << 2;

/// A step's body as its encoder reads it: [`Body`]'s fields, borrowed (the write path
/// encodes its step from the call's parts, without copying them into a `Body`).
pub(crate) struct BodyRef<'a> {
    pub kind: StepKind,
    pub event: i64,
    pub order: u64,
    pub message_id: Option<&'a str>,
    pub carried: &'a Carried,
    pub created: bool,
    pub first_seen: i64,
    pub updated_at: i64,
    pub ids: Option<&'a StepIds>,
    pub props: &'a [(u32, Option<PropState>)],
    /// States before the call captured as bytes (`entries::raw`), sorted by name, none of
    /// them in `props`: written as `props`' states would be once decoded.
    pub raw: RawBefore<'a>,
    pub merged: &'a [(u64, Vec<u8>)],
}

/// A state before the call, as the encoder meets it: decoded (`None`: the profile did not
/// have the property) or captured (with its stamp's index in the step's table).
#[cfg(test)]
enum Before<'a> {
    State(Option<&'a PropState>),
    Raw(&'a RawState, u32),
}

/// States before a call captured as bytes, and the bytes of their values; or (`mapped`) read
/// from the full record the call's load mapped, not captured (`states` empty then).
#[derive(Clone, Copy, Default)]
pub(crate) struct RawBefore<'a> {
    pub states: &'a [(u32, RawState)],
    pub bytes: &'a [u8],
    pub mapped: Option<MappedStates<'a>>,
}

/// A state of [`Captured`]: its name, its stamp, and its value's bytes (`None`: a removal)
/// with the byte to be written over their first, if any.
type CapturedState<'a> = (u32, Stamp, Option<(&'a [u8], Option<u8>)>);

/// The states before a call that are plain sets or removals held as bytes, as the encoder
/// reads them: in name order, each its name, its stamp, and its value's bytes (`None`: a
/// removal) with the byte to be written over their first, if any.
trait Captured<'a> {
    fn count(&self) -> usize;
    /// State `k`; `None` past the last.
    fn at(&self, k: usize) -> Option<CapturedState<'a>>;
}

impl<'a> Captured<'a> for RawBefore<'a> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.states.len()
    }

    #[inline(always)]
    fn at(&self, k: usize) -> Option<CapturedState<'a>> {
        let (name, r) = self.states.get(k)?;
        let bytes = self.bytes;
        let value = r
            .value
            .as_ref()
            .and_then(|v| bytes.get(v.start as usize..v.end as usize));
        Some((*name, r.stamp, value.map(|v| (v, None))))
    }
}

impl<'a> Captured<'a> for MappedStates<'a> {
    #[inline(always)]
    fn count(&self) -> usize {
        self.len()
    }

    #[inline(always)]
    fn at(&self, k: usize) -> Option<CapturedState<'a>> {
        let (name, stamp, value) = self.get(k)?;
        Some((name, stamp, value.map(|(over, v)| (over, Some(v)))))
    }
}

#[cfg(test)]
impl Body {
    /// The body, borrowed, for [`encode_into`].
    pub(crate) fn as_ref(&self) -> BodyRef<'_> {
        BodyRef {
            kind: self.kind,
            event: self.event,
            order: self.order,
            message_id: self.message_id.as_deref(),
            carried: &self.carried,
            created: self.created,
            first_seen: self.first_seen,
            updated_at: self.updated_at,
            ids: self.ids.as_ref(),
            props: &self.props,
            raw: RawBefore::default(),
            merged: &self.merged,
        }
    }
}

/// Encode a step; `after` is the profile's identifiers after the call (carried identifiers
/// equal to them are written as flags).
#[cfg(test)]
pub(crate) fn encode(arrival: i64, body: &Body, after: &Ids) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, &mut Vec::new(), arrival, &body.as_ref(), after);
    out
}

/// [`encode`], appended to `out`; `props` is a buffer for the properties' bytes (emptied
/// first, left holding them: a buffer to reuse from step to step).
pub(crate) fn encode_into(
    out: &mut Vec<u8>,
    props: &mut Vec<u8>,
    arrival: i64,
    body: &BodyRef<'_>,
    after: &Ids,
) {
    // A captured state takes 7 bytes and its value's (few over 16), a decoded one more.
    let captured = body.raw.states.len() + body.raw.mapped.map_or(0, |m| m.len());
    let props_guess = 32 * body.props.len() + 24 * captured;
    out.reserve(64 + props_guess);
    put_head(out, arrival, body, after);
    put_props(out, props, props_guess, body);
    put_merged(out, body);
}

/// Write what precedes the properties: the tag, the arrival, the flags, the call's stamp, the
/// identifiers it carried (each only when its flag is set), the times and the identifiers
/// after the step.
fn put_head(out: &mut Vec<u8>, arrival: i64, body: &BodyRef<'_>, after: &Ids) {
    let c = body.carried;
    let same_user = c.user_id.is_some() && c.user_id == after.user_id;
    let same_email = c.email.is_some() && c.email == after.email;
    let anon_at = c
        .anonymous_id
        .as_ref()
        .and_then(|a| after.anonymous_ids.iter().position(|x| x == a));
    let mut same = 0u8;
    for (on, bit) in [
        (same_user, SAME_USER),
        (same_email, SAME_EMAIL),
        (anon_at.is_some(), SAME_ANON),
    ] {
        if on {
            same |= bit;
        }
    }
    let mut flags = match body.kind {
        StepKind::Call => 0,
        StepKind::Identifiers => 1,
        StepKind::Unmerge => 2,
    };
    for (on, bit) in [
        (body.created, CREATED),
        (body.message_id.is_some(), MESSAGE_ID),
        (body.ids.is_some(), IDS),
        (c.user_id.is_some() && !same_user, CARRIED_USER),
        (c.email.is_some() && !same_email, CARRIED_EMAIL),
        (c.anonymous_id.is_some() && anon_at.is_none(), CARRIED_ANON),
    ] {
        if on {
            flags |= bit;
        }
    }
    // The tag, the arrival, the flags and the call's stamp put together in a word on the
    // stack and appended whole, then cut to their length: one capacity check and one length
    // stored instead of five each.
    let (stamp, stamp_len) = two_inline_word(zigzag(body.event), body.order);
    let mut w = [0u8; 11 + 18];
    if let Some((head, rest)) = w.split_first_chunk_mut::<11>() {
        let [a0, a1, a2, a3, a4, a5, a6, a7] = arrival.to_le_bytes();
        *head = [STEP_TAG, a0, a1, a2, a3, a4, a5, a6, a7, flags, same];
        if let Ok(rest) = <&mut [u8; 18]>::try_from(rest) {
            *rest = stamp;
        }
    }
    let at = out.len();
    out.extend_from_slice(&w);
    out.truncate(at + 11 + stamp_len);
    // The optional strings, each only when its flag is set (one test each: no array of
    // them to build and walk).
    if let Some(m) = body.message_id {
        m.put(out);
    }
    if let Some(u) = c.user_id.as_deref().filter(|_| !same_user) {
        u.put(out);
    }
    if let Some(e) = c.email.as_deref().filter(|_| !same_email) {
        e.put(out);
    }
    if let Some(a) = c.anonymous_id.as_deref().filter(|_| anon_at.is_none()) {
        a.put(out);
    }
    if let Some(i) = anon_at {
        put_u64_inline(out, i as u64);
    }
    put_two_inline(out, zigzag(body.first_seen), zigzag(body.updated_at));
    if let Some(ids) = &body.ids {
        ids.user_id.put(out);
        ids.email.put(out);
        ids.anonymous_ids.put(out);
        ids.company_id.put(out);
    }
}

/// Write the profiles the call merged away, each as its key and its record.
fn put_merged(out: &mut Vec<u8>, body: &BodyRef<'_>) {
    put_u64_inline(out, body.merged.len() as u64);
    for (key, rec) in body.merged {
        put_u64_inline(out, *key);
        put_u64_inline(out, rec.len() as u64);
        out.extend_from_slice(rec);
    }
}

/// Write the properties: their count, the stamp table (after the call's own stamp, which
/// starts it), then each name as the gap from the previous one (the first: the name itself)
/// and its state before.
///
/// The decoded states and the captured ones are merged by name (a name is in one list only)
/// and written as they are met. The table lists the stamps in the order the states meet them,
/// so it is complete only once they are written: the states are written to `props` first,
/// then the table to `out`, then `props` after it. One copy of the properties' bytes costs
/// less than a first pass over the states to gather the stamps, a list of the merged states
/// and a second search of the table for each state, and less than writing them to `out` and
/// rotating the table into place before them (round 40's form: a rotation of ~200 bytes is
/// three copies through a buffer on the stack).
///
/// `props` is emptied first and reserved `guess` bytes (when the states are written to it).
fn put_props(out: &mut Vec<u8>, props: &mut Vec<u8>, guess: usize, body: &BodyRef<'_>) {
    props.clear();
    match &body.raw.mapped {
        // The fast path's step (nearly every one read from a mapped record): the states before
        // are the record's or absent, so the table is known before the states are written.
        Some(mapped) if body.props.iter().all(|p| p.1.is_none()) => {
            debug_assert!(body.raw.states.is_empty(), "captured or mapped, not both");
            put_props_mapped(out, body, mapped);
        }
        Some(mapped) => {
            debug_assert!(body.raw.states.is_empty(), "captured or mapped, not both");
            props.reserve(guess);
            put_props_of(out, props, body, mapped);
        }
        None => {
            props.reserve(guess);
            put_props_of(out, props, body, &body.raw);
        }
    }
}

/// [`put_props`] of a step whose states before are `mapped`'s and absent ones (`body.props`,
/// every one `None`): written as [`put_props_of`] writes them, straight to `out`.
///
/// Only the mapped states have stamps, so the table is the call's stamp and theirs in name
/// order, each once: it is written before the states ([`put_mapped_table`]). No search per
/// state, and no copy of the states' bytes from a buffer.
#[inline(never)]
fn put_props_mapped(out: &mut Vec<u8>, body: &BodyRef<'_>, mapped: &MappedStates<'_>) {
    debug_assert!(
        body.props.iter().all(|p| p.1.is_none()),
        "absent states only"
    );
    put_u64_inline(out, (body.props.len() + mapped.len()) as u64);
    let call = Stamp::new(Timestamp(body.event), body.order);
    let slot = put_mapped_table(out, call, mapped);
    let mut prev = 0u32;
    let mut gap_to = |name: u32| name.wrapping_sub(std::mem::replace(&mut prev, name));
    let mut k = 0;
    for (name, _) in body.props {
        while let Some(state) = mapped.get_placed(k).filter(|(n, ..)| n < name) {
            put_mapped_state(out, gap_to(state.0), mapped, k, state, &slot);
            k += 1;
        }
        // A property the profile did not have: gap and tag in one write.
        let gap = gap_to(*name);
        match one_byte(gap) {
            Some(g) => out.extend_from_slice(&[g, 0]),
            None => {
                put_u64_inline(out, u64::from(gap));
                out.push(0);
            }
        }
    }
    while let Some(state) = mapped.get_placed(k) {
        put_mapped_state(out, gap_to(state.0), mapped, k, state, &slot);
        k += 1;
    }
}

/// [`put_props_mapped`]'s stamp table: the count, then each stamp of `mapped`'s states other
/// than `call` once, in name order; returns `slot`, where `slot[i]` is the step's index of
/// the record's stamp `i` (0, the call's own stamp's, for a stamp equal to it).
///
/// The stamps new to the table are found first, with no branch on whether a state's stamp is
/// new (W1's traits come in name order, so the states set by different calls alternate at
/// random: a branch on it mispredicted ~4 times a step): each state's index stored at the end
/// of the list of new ones, which only a new one lengthens, and its slot given the count when
/// new by masks (storing it to a slot past the table's when not new measured no fewer
/// instructions). Then the new ones are written.
#[inline(always)]
fn put_mapped_table(
    out: &mut Vec<u8>,
    call: Stamp,
    mapped: &MappedStates<'_>,
) -> [u8; SPLICE_STAMPS] {
    let mut slot = [0u8; SPLICE_STAMPS];
    // A bit for each of the record's stamps met (the record's table holds each stamp once,
    // `MappedStates::get_indexed`: equal stamps are equal indices).
    let mut met = 0u64;
    // The record's indices of the new stamps, in the order met: at most `SPLICE_STAMPS`,
    // one a state (the slot past the last written over by each state not new).
    let mut new = [0u8; SPLICE_STAMPS + 1];
    let mut count = 0u8;
    let mut k = 0;
    while let Some((_, index, ..)) = mapped.get_placed(k) {
        k += 1;
        let bit = 1u64 << (index % SPLICE_STAMPS);
        let s = mapped.stamp(index);
        let is_new = (met & bit == 0) & ((s.0.0 != call.0.0) | (s.1 != call.1));
        met |= bit;
        if let Some(at) = new.get_mut(usize::from(count)) {
            *at = index as u8;
        }
        count += u8::from(is_new);
        if let Some(slot) = slot.get_mut(index) {
            // The count when new, else as it was.
            let keep = u8::from(is_new).wrapping_sub(1);
            *slot = (*slot & keep) | (count & !keep);
        }
    }
    debug_assert!(usize::from(count) <= SPLICE_STAMPS && count < 251);
    out.push(count);
    for &index in new.get(..usize::from(count)).unwrap_or_default() {
        let s = mapped.stamp(usize::from(index));
        put_two_inline(out, zigzag(s.0.0), s.1);
    }
    slot
}

/// Longest value [`put_mapped_state`] puts together in a word: `SHORT_STATE` less the state's
/// 7 fixed bytes.
const SHORT_VALUE: usize = SHORT_STATE - 7;

/// Mapped state `k`, `state` as [`MappedStates::get_placed`] gives it, with `gap`: as
/// [`put_captured_at`] writes it, its stamp as its index `slot` gives.
///
/// A value of up to [`SHORT_VALUE`] bytes with no branch on its length or the state's form
/// (W1's traits come in name order, so their value types, and so the lengths, alternate at
/// random: `copy_short`'s dispatch on the length mispredicted about once a state): the state
/// put together in a word on the stack, the value copied in as the fixed-size window of the
/// record's bytes that ends where the value ends (the bytes before the value then written
/// over by the state's head, those after it by its closing zeros), the word appended whole
/// and cut to the state's length. A longer value, or a wide gap, goes to `put_captured_at`.
#[inline(always)]
fn put_mapped_state(
    out: &mut Vec<u8>,
    gap: u32,
    mapped: &MappedStates<'_>,
    k: usize,
    state: (u32, usize, usize, usize, Option<u8>),
    slot: &[u8; SPLICE_STAMPS],
) {
    // The state starts at `AT` of the word; the window before it may start before.
    const AT: usize = SHORT_VALUE;
    let (_, index, end, len, variant) = state;
    let index = slot.get(index).copied().unwrap_or_default();
    let window = mapped
        .record()
        .get(end.wrapping_sub(SHORT_VALUE)..end)
        .and_then(|w| <&[u8; SHORT_VALUE]>::try_from(w).ok());
    let (Some(g), Some(window), true) = (one_byte(gap), window, len <= SHORT_VALUE) else {
        return put_mapped_state_long(out, gap, mapped, k, index);
    };
    let mut word = [0u8; AT + SHORT_STATE];
    if let Some(at) = word
        .get_mut(AT + 5 + len - SHORT_VALUE..)
        .and_then(|w| w.first_chunk_mut::<SHORT_VALUE>())
    {
        *at = *window;
    }
    if let Some(head) = word.get_mut(AT..).and_then(|w| w.first_chunk_mut::<6>()) {
        // The value's variant over its first byte (a removal's written over below).
        *head = [
            g,
            1,
            1,
            index,
            u8::from(variant.is_some()),
            variant.unwrap_or_default(),
        ];
    }
    // No `once`, no `adds`.
    if let Some(end) = word
        .get_mut(AT + 5 + len..)
        .and_then(|w| w.first_chunk_mut::<2>())
    {
        *end = [0, 0];
    }
    let at = out.len();
    out.extend_from_slice(word.get(AT..).unwrap_or_default());
    out.truncate(at + 7 + len);
}

/// [`put_mapped_state`] of a wide gap or a long value: `put_captured_at`.
#[cold]
#[inline(never)]
fn put_mapped_state_long(
    out: &mut Vec<u8>,
    gap: u32,
    mapped: &MappedStates<'_>,
    k: usize,
    index: u8,
) {
    if let Some((_, _, v)) = mapped.get_indexed(k) {
        put_captured_at(out, gap, u32::from(index), v.map(|(v, f)| (v, Some(f))));
    }
}

/// [`put_props`] with the captured states `raws`.
#[inline(never)]
fn put_props_of<'a>(
    out: &mut Vec<u8>,
    props: &mut Vec<u8>,
    body: &BodyRef<'_>,
    raws: &impl Captured<'a>,
) {
    put_u64_inline(out, (body.props.len() + raws.count()) as u64);
    let mut table = Met::new(Stamp::new(Timestamp(body.event), body.order));
    // The name written before (`Names::gap`'s, kept in a register: the first name's gap is
    // the name itself, its gap from 0).
    let mut prev = 0u32;
    let mut gap_to = |name: u32| name.wrapping_sub(std::mem::replace(&mut prev, name));
    // The captured states not written yet: from `k` on (an index, not a `Peekable`).
    let mut k = 0;
    for (name, st) in body.props {
        while let Some((n, s, v)) = raws.at(k).filter(|(n, ..)| n < name) {
            put_captured(props, gap_to(n), s, v, &mut table);
            k += 1;
        }
        let gap = gap_to(*name);
        match st {
            // A property the profile did not have (most decoded ones): gap and tag in one write.
            None => match one_byte(gap) {
                Some(g) => props.extend_from_slice(&[g, 0]),
                None => {
                    put_u64_inline(props, u64::from(gap));
                    props.push(0);
                }
            },
            Some(st) => {
                put_u64_inline(props, u64::from(gap));
                each_stamp(st, |s| {
                    table.meet(s);
                });
                props.push(1);
                put_state_in(st, &table, props);
            }
        }
    }
    while let Some((n, s, v)) = raws.at(k) {
        put_captured(props, gap_to(n), s, v, &mut table);
        k += 1;
    }
    table.put(out);
    out.extend_from_slice(props);
    // Not left to be copied with the call's details (their `Clone`, `Debug`).
    props.clear();
}

/// A captured state before the call (its stamp, and its value's bytes `v` with `first`, when
/// given, in the place of their first byte: `None`, a removal), written as its decoded state
/// would be, with its stamp met in `table`: the name's gap, the state's option tag, then as
/// [`put_raw_state`] writes it. Inlined into both of [`put_props`]' loops: it is ~6 times a
/// W1 step, and its call's saved registers were a sixth of its instructions.
#[inline(always)]
fn put_captured(
    out: &mut Vec<u8>,
    gap: u32,
    stamp: Stamp,
    value: Option<(&[u8], Option<u8>)>,
    table: &mut Met,
) {
    put_captured_at(out, gap, table.meet(stamp), value);
}

/// [`put_captured`] of a state whose stamp is at `index` of the step's table.
#[inline(always)]
fn put_captured_at(out: &mut Vec<u8>, gap: u32, index: u32, value: Option<(&[u8], Option<u8>)>) {
    let (value, first) = value.unzip();
    let first = first.flatten();
    // A gap and an index of one byte each (nearly always): the bytes before the value (gap,
    // state and lww tags, index, value tag) and after it (no `once`, no `adds`) are each one
    // write instead of five and two.
    match (one_byte(gap), one_byte(index), value) {
        // A value of a few bytes (nearly every one: W1's strings take at most 26): the state
        // put together in a zeroed word on the stack, its closing tags the zeros after the
        // value, the value copied in by fixed-size moves, then the whole word appended and
        // cut to the state's length: one append and no call to `memcpy`, where three
        // appends and a `memcpy` of the value cost about twice as much.
        (Some(g), Some(i), Some(v)) if v.len() <= SHORT_STATE - 7 => {
            let mut state = [0u8; SHORT_STATE];
            if let Some((head, rest)) = state.split_first_chunk_mut::<5>() {
                *head = [g, 1, 1, i, 1];
                if let Some(value) = rest.get_mut(..v.len()) {
                    copy_short(value, v);
                    if let (Some(f), Some(b)) = (first, value.first_mut()) {
                        *b = f;
                    }
                }
            }
            let at = out.len();
            out.extend_from_slice(&state);
            out.truncate(at + 7 + v.len());
        }
        (Some(g), Some(i), Some(v)) => {
            out.extend_from_slice(&[g, 1, 1, i, 1]);
            put_over(out, v, first);
            out.extend_from_slice(&[0, 0]);
        }
        (Some(g), Some(i), None) => out.extend_from_slice(&[g, 1, 1, i, 0, 0, 0]),
        _ => {
            put_u64_inline(out, u64::from(gap));
            out.push(1);
            match first {
                None => put_raw_state(value, index, out),
                // As `put_raw_state` writes it, the value's first byte `f`.
                Some(f) => {
                    out.push(1);
                    index.put(out);
                    match value {
                        Some(v) => {
                            out.push(1);
                            put_over(out, v, Some(f));
                        }
                        None => out.push(0),
                    }
                    out.extend_from_slice(&[0, 0]);
                }
            }
        }
    }
}

/// Append `v`, with `first` in the place of its first byte when given.
#[inline(always)]
fn put_over(out: &mut Vec<u8>, v: &[u8], first: Option<u8>) {
    match (first, v.split_first()) {
        (Some(f), Some((_, rest))) => {
            out.push(f);
            out.extend_from_slice(rest);
        }
        _ => out.extend_from_slice(v),
    }
}

/// The bytes a captured state of a short value is put together in: its 7 fixed bytes and a
/// value of up to 25.
const SHORT_STATE: usize = 32;

/// `dst.copy_from_slice(src)` (of equal lengths; unequal ones copy nothing) without a call to
/// `memcpy` up to 32 bytes: the first and the last bytes of `src` by two fixed-size moves
/// (overlapping in the middle, as `memcpy` itself copies a short length), here inline.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if dst.len() != n {
        return;
    }
    match n {
        0 => {}
        1..4 => {
            // First, middle and last byte: every byte of 1 to 3.
            for k in [0, n / 2, n - 1] {
                if let (Some(d), Some(s)) = (dst.get_mut(k), src.get(k)) {
                    *d = *s;
                }
            }
        }
        4..8 => two::<4>(dst, src),
        8..16 => two::<8>(dst, src),
        16..=32 => two::<16>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// The first `N` and the last `N` bytes of `src` moved to `dst` (of equal lengths from `N` to
/// `2 * N`: together they are every byte).
#[inline(always)]
fn two<const N: usize>(dst: &mut [u8], src: &[u8]) {
    if let (Some(d), Some(s)) = (dst.first_chunk_mut::<N>(), src.first_chunk::<N>()) {
        *d = *s;
    }
    if let (Some(d), Some(s)) = (dst.last_chunk_mut::<N>(), src.last_chunk::<N>()) {
        *d = *s;
    }
}

/// `v` as the one byte its varint takes, if it takes one.
#[inline(always)]
fn one_byte(v: u32) -> Option<u8> {
    u8::try_from(v).ok().filter(|b| *b < 251)
}

/// A step's stamp table as its states meet their stamps: the call's own first, then each
/// other stamp once, in the order met (what `StampTable::from_stamps` of the same list holds).
///
/// `seen` has the bit [`Met::bit`] of each stamp held set: a stamp whose bit is clear is not
/// held, and is added without a search (most stamps a W1 step meets are new to its table, ~7
/// of them: the search of the whole table each was most of the table's cost).
struct Met {
    stamps: Stamps,
    seen: u64,
}

impl Met {
    fn new(first: Stamp) -> Met {
        let mut stamps = Stamps::new();
        stamps.push(first);
        Met {
            stamps,
            seen: Met::bit(&first),
        }
    }

    /// The bit of `seen` for `s`: one of 64, by the top six bits of its arrival order times
    /// an odd constant (a multiplicative hash: the orders of a step's stamps differ in their
    /// low bits, times in microseconds).
    #[inline(always)]
    fn bit(s: &Stamp) -> u64 {
        1 << (s.1.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58)
    }

    /// The index of `s`, added at the end when the table does not hold it yet.
    #[inline]
    fn meet(&mut self, s: Stamp) -> u32 {
        let bit = Met::bit(&s);
        if self.seen & bit != 0
            && let Some(i) = self.stamps.iter().position(|x| *x == s)
        {
            return i as u32;
        }
        self.seen |= bit;
        self.stamps.push(s);
        (self.stamps.len() - 1) as u32
    }

    /// Write the table as a step holds it: the count and the stamps after the first (the
    /// call's own, which the step's header holds).
    fn put(&self, out: &mut Vec<u8>) {
        let rest = self.stamps.get(1..).unwrap_or_default();
        put_u64_inline(out, rest.len() as u64);
        for s in rest {
            put_two_inline(out, zigzag(s.0.0), s.1);
        }
    }
}

impl StampIndex for Met {
    #[inline]
    fn index_of(&self, s: &Stamp) -> u32 {
        // Every stamp of a state is met before the state is written.
        self.stamps.iter().position(|x| x == s).unwrap_or_default() as u32
    }
}

/// The properties as [`encode_into`] wrote them before it wrote its states in one pass
/// (commit 8ad09a7), between the same head and tail: the tests hold the new writer to its
/// bytes.
#[cfg(test)]
pub(crate) fn encode_into_reference(
    out: &mut Vec<u8>,
    arrival: i64,
    body: &BodyRef<'_>,
    after: &Ids,
) {
    put_head(out, arrival, body, after);
    // Properties: count, the stamp table (after the call's own stamp, which starts it),
    // then each name as the gap from the previous one (the first: the name itself) and its
    // state before.
    let first = Stamp::new(Timestamp(body.event), body.order);
    // The decoded states and the captured ones, in name order (names are in one list only).
    let mut props = smallvec::SmallVec::<[(u32, Before<'_>); 16]>::new();
    let mut raw = body.raw.states.iter().peekable();
    for (name, st) in body.props {
        while let Some((n, r)) = raw.next_if(|(n, _)| n < name) {
            props.push((*n, Before::Raw(r, 0)));
        }
        props.push((*name, Before::State(st.as_ref())));
    }
    props.extend(raw.map(|(n, r)| (*n, Before::Raw(r, 0))));
    // The stamp table: the call's stamp, then the states' other stamps in the order met (a
    // captured state's index noted as it is met).
    let mut stamps = Stamps::new();
    stamps.push(first);
    let mut meet = |s: Stamp| match stamps.iter().position(|x| *x == s) {
        Some(i) => i as u32,
        None => {
            stamps.push(s);
            (stamps.len() - 1) as u32
        }
    };
    for (_, p) in &mut props {
        match p {
            Before::State(Some(st)) => each_stamp(st, |s| {
                meet(s);
            }),
            Before::State(None) => {}
            Before::Raw(r, index) => *index = meet(r.stamp),
        }
    }
    let table = StampTable::from_stamps(stamps);
    put_u64(out, props.len() as u64);
    table.put_from(1, out);
    let mut names = Names::default();
    for (name, st) in &props {
        names.put(out, *name);
        match st {
            Before::State(None) => out.push(0),
            Before::State(Some(s)) => {
                out.push(1);
                put_state(s, &table, out);
            }
            Before::Raw(r, index) => {
                out.push(1);
                let value = r
                    .value
                    .as_ref()
                    .and_then(|v| body.raw.bytes.get(v.start as usize..v.end as usize));
                put_raw_state(value, *index, out);
            }
        }
    }
    put_merged(out, body);
}

fn bad(reason: impl Into<String>) -> Error {
    bad_at(0, reason)
}

fn bad_at(offset: usize, reason: impl Into<String>) -> Error {
    Error::Decode {
        what: "history step",
        file: Default::default(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// The arrival time of a step, read from its first 9 bytes only.
pub(crate) fn arrival(bytes: &[u8]) -> Result<i64> {
    if bytes.first() != Some(&STEP_TAG) {
        return Err(bad("unknown history step tag"));
    }
    let a: [u8; 8] = bytes
        .get(1..9)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("history step shorter than its header"))?;
    Ok(i64::from_le_bytes(a))
}

/// Decode a step (bounded: every length is checked against the bytes left before anything is
/// allocated; the body must fill the bytes exactly). Errors name the field and the offset
/// within the step.
pub(crate) fn decode(bytes: &[u8]) -> Result<Step> {
    let arrival = arrival(bytes)?;
    let mut r = Reader::new(&bytes[9..]);
    let body =
        body(&mut r).map_err(|(field, e)| bad_at(9 + e.at, format!("{field}: {}", e.reason)))?;
    Ok(Step { arrival, body })
}

/// Name the field a reader error happened in.
fn field<T>(
    name: &'static str,
    v: Decoded<T>,
) -> std::result::Result<T, (&'static str, DecodeError)> {
    v.map_err(|e| (name, e))
}

fn body(r: &mut Reader<'_>) -> std::result::Result<Body, (&'static str, DecodeError)> {
    let flags = field("flags", r.u8())?;
    let kind = match flags & 3 {
        0 => StepKind::Call,
        1 => StepKind::Identifiers,
        2 => StepKind::Unmerge,
        _ => return Err(("flags", r.error("unknown step kind"))),
    };
    let same = field("same flags", r.u8())?;
    if same >> 3 != 0 {
        return Err(("same flags", r.error("unknown flag bits")));
    }
    let event = field("event time", r.i64())?;
    let order = field("arrival order", r.u64())?;
    let opt = |r: &mut Reader<'_>, bit: u8, name| -> std::result::Result<Option<String>, _> {
        if flags & bit != 0 {
            Ok(Some(field(name, r.string())?))
        } else {
            Ok(None)
        }
    };
    let message_id = opt(r, MESSAGE_ID, "message_id")?;
    let mut carried = Carried {
        user_id: opt(r, CARRIED_USER, "carried user_id")?,
        email: opt(r, CARRIED_EMAIL, "carried email")?,
        anonymous_id: opt(r, CARRIED_ANON, "carried anonymous_id")?,
        same: Same {
            user_id: same & SAME_USER != 0,
            email: same & SAME_EMAIL != 0,
            anonymous_id: None,
        },
    };
    if same & SAME_ANON != 0 {
        carried.same.anonymous_id = Some(field("carried anonymous_id index", r.u32())?);
    }
    let both = (carried.user_id.is_some() && carried.same.user_id)
        || (carried.email.is_some() && carried.same.email)
        || (carried.anonymous_id.is_some() && carried.same.anonymous_id.is_some());
    if both {
        return Err((
            "same flags",
            r.error("carried identifier both as text and as a flag"),
        ));
    }
    let first_seen = field("first_seen", r.i64())?;
    let updated_at = field("updated_at", r.i64())?;
    let ids = if flags & IDS != 0 {
        let user_id = field("identifiers before: user_id", r.opt_string())?;
        let email = field("identifiers before: email", r.opt_string())?;
        let n = field("identifiers before: anonymous_ids", r.len(1))?;
        let mut anonymous_ids = Vec::with_capacity(n);
        for _ in 0..n {
            anonymous_ids.push(field("identifiers before: anonymous_ids", r.string())?);
        }
        let company_id = field("identifiers before: company_id", r.opt_string())?;
        Some(StepIds {
            user_id,
            email,
            anonymous_ids,
            company_id,
        })
    } else {
        None
    };
    // Each property takes at least 2 bytes (name, option tag).
    let n = field("properties", r.len(2))?;
    let k = field("stamp table", r.len(2))?;
    let mut stamps = crate::entries::values::Stamps::with_capacity(k + 1);
    stamps.push(Stamp::new(Timestamp(event), order));
    for _ in 0..k {
        stamps.push(field("stamp table", stamp(r))?);
    }
    let table = StampTable::from_stamps(stamps);
    let mut props = Vec::with_capacity(n);
    let mut names = Names::default();
    for _ in 0..n {
        let name = field("property name", names.read(r))?;
        let st = if field("property state", r.some())? {
            Some(field("property state", state(r, &table))?)
        } else {
            None
        };
        props.push((name, st));
    }
    // Each merged profile takes at least 2 bytes (key, length).
    let m = field("merged profiles", r.len(2))?;
    let mut merged = Vec::with_capacity(m);
    for _ in 0..m {
        let key = field("merged profile key", r.u64())?;
        let len = field("merged profile record", r.len(1))?;
        let rec = field("merged profile record", r.bytes(len))?;
        merged.push((key, rec.to_vec()));
    }
    field("end", r.finish())?;
    Ok(Body {
        kind,
        event,
        order,
        message_id,
        carried,
        created: flags & CREATED != 0,
        first_seen,
        updated_at,
        ids,
        props,
        merged,
    })
}

/// Decode a merged-away profile's record held in a step.
pub(crate) fn merged_record(bytes: &[u8]) -> Result<ProfileRecord> {
    profile::full(bytes).map_err(|e| Error::Decode {
        what: "merged profile in a history step",
        file: Default::default(),
        offset: e.at as u64,
        reason: e.reason.to_string(),
    })
}

/// The undo part of a step: identifiers before (if they changed), first_seen and updated_at
/// before, the state before of each property whose state changed.
pub(crate) type Undo = (
    Option<StepIds>,
    Timestamp,
    Timestamp,
    Vec<(u32, Option<PropState>)>,
);

/// The undo part of a step from what the write path saved as the call changed the profile
/// (the same result as [`diff`] of the whole record before and after, without the copy):
/// the identifiers before if the call changed them (`old_ids`, compared here), the times when
/// loaded, and each changed property's state before its first change.
pub(crate) fn diff_changed(
    old_ids: Option<&Ids>,
    times: (Timestamp, Timestamp),
    mut props: Vec<(u32, Option<PropState>)>,
    after: &ProfileRecord,
) -> Undo {
    let ids = old_ids.filter(|old| **old != after.ids).map(StepIds::from);
    props.sort_unstable_by_key(|p| p.0);
    props.retain(|(id, was)| {
        let now = after
            .props
            .binary_search_by_key(id, |p| p.0)
            .ok()
            .map(|i| &after.props[i].1);
        match (was, now) {
            (Some(w), Some(n)) => w != n,
            (None, Some(_)) => true,
            // Only an undo removes a property; a state that was not there and is not now.
            (Some(_), None) => true,
            (None, None) => false,
        }
    });
    (ids, times.0, times.1, props)
}

/// The undo part of a step, computed from a profile's record before and after a call:
/// identifiers (if they differ), times, and every property whose state differs.
pub(crate) fn diff(before: Option<&ProfileRecord>, after: &ProfileRecord) -> Undo {
    diff_into(before, after, Vec::new())
}

/// [`diff`] with its list of properties in `props` (emptied first; a buffer to reuse).
pub(crate) fn diff_into(
    before: Option<&ProfileRecord>,
    after: &ProfileRecord,
    mut props: Vec<(u32, Option<PropState>)>,
) -> Undo {
    props.clear();
    let Some(b) = before else {
        // A new profile (a fifth of W1's calls): nothing before, each state absent. What the
        // walk below gives of the empty record, in one pass over the names (~480
        // instructions a W1 create walked).
        let empty = ProfileRecord::default();
        props.extend(after.props.iter().map(|(id, _)| (*id, None)));
        return (
            Some(StepIds::from(&empty.ids)),
            empty.first_seen,
            empty.updated_at,
            props,
        );
    };
    let ids = (b.ids != after.ids).then(|| StepIds::from(&b.ids));
    props.reserve(b.props.len().max(after.props.len()));
    let (mut i, mut j) = (0, 0);
    let (bp, ap) = (&b.props, &after.props);
    while i < bp.len() || j < ap.len() {
        match (bp.get(i), ap.get(j)) {
            (Some(x), Some(y)) if x.0 == y.0 => {
                if x.1 != y.1 {
                    props.push((x.0, Some(x.1.clone())));
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.0 < y.0 => {
                // Only a damaged or undone record loses a property; record it all the same.
                props.push((x.0, Some(x.1.clone())));
                i += 1;
            }
            (Some(x), None) => {
                props.push((x.0, Some(x.1.clone())));
                i += 1;
            }
            (_, Some(y)) => {
                props.push((y.0, None));
                j += 1;
            }
            (None, None) => break,
        }
    }
    (ids, b.first_seen, b.updated_at, props)
}

impl Body {
    /// The identifiers the call carried, given the profile's identifiers after it (an
    /// anonymous id index outside them, only in a damaged history, reads as none).
    pub(crate) fn carried(&self, after: &Ids) -> Carried {
        let c = &self.carried;
        Carried {
            user_id: if c.same.user_id {
                after.user_id.clone()
            } else {
                c.user_id.clone()
            },
            email: if c.same.email {
                after.email.clone()
            } else {
                c.email.clone()
            },
            anonymous_id: match c.same.anonymous_id {
                Some(i) => after.anonymous_ids.get(i as usize).cloned(),
                None => c.anonymous_id.clone(),
            },
            same: Same::default(),
        }
    }

    /// Turn `rec` (the state after the call) into the state before it.
    pub(crate) fn undo(&self, rec: &mut ProfileRecord) {
        if let Some(ids) = &self.ids {
            rec.ids = ids.clone().into();
        }
        rec.first_seen = Timestamp(self.first_seen);
        rec.updated_at = Timestamp(self.updated_at);
        for (id, state) in &self.props {
            match state {
                Some(s) => *rec.state_mut(*id) = s.clone(),
                None => {
                    if let Ok(i) = rec.props.binary_search_by_key(id, |p| p.0) {
                        rec.props.remove(i);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::raw::RawStates;
    use crate::types::state::Stamp;
    use crate::types::value::Value;
    use proptest::prelude::*;

    fn rec(props: &[(u32, i64)], user: &str) -> ProfileRecord {
        let mut r = ProfileRecord {
            ids: Ids {
                user_id: Some(user.into()),
                ..Ids::default()
            },
            first_seen: Timestamp(1),
            updated_at: Timestamp(2),
            props: Vec::new(),
        };
        for (id, v) in props {
            // The state a `$set` of `v` at time 3 leaves (built directly: the codec layer does
            // not call the rules).
            *r.state_mut(*id) = PropState {
                lww: Some((Stamp(Timestamp(3), 1), Some(Value::Int(*v)))),
                once: None,
                adds: None,
            };
        }
        r
    }

    #[test]
    fn undo_of_a_diff_restores_the_record_before() {
        let before = rec(&[(1, 1), (3, 3), (5, 5)], "a");
        let mut after = rec(&[(1, 1), (2, 2), (3, 4)], "b");
        after.first_seen = Timestamp(0);
        after.updated_at = Timestamp(9);
        let (ids, fs, ua, props) = diff(Some(&before), &after);
        let body = Body {
            kind: StepKind::Call,
            event: 9,
            order: 4,
            message_id: Some("m".into()),
            carried: Carried::default(),
            created: false,
            first_seen: fs.0,
            updated_at: ua.0,
            ids,
            props,
            merged: Vec::new(),
        };
        let bytes = encode(77, &body, &Ids::default());
        assert_eq!(arrival(&bytes).unwrap(), 77);
        let step = decode(&bytes).unwrap();
        assert_eq!(step.body, body);
        let mut r = after.clone();
        step.body.undo(&mut r);
        assert_eq!(r, before);
    }

    /// The undo of a new profile is what the walk of the empty record before it gives, and
    /// always names the (empty) identifiers before, also when the profile has none after
    /// (where the walk of the empty record would name none: they did not change).
    #[test]
    fn undo_of_a_new_profile_is_the_diff_from_the_empty_record() {
        let mut no_ids = rec(&[(2, 2)], "x");
        no_ids.ids = Ids::default();
        for after in [
            rec(&[(1, 1), (4, 2), (9, 3)], "a"),
            rec(&[], "b"),
            rec(&[(7, 7)], "c"),
            no_ids,
        ] {
            let empty = ProfileRecord::default();
            let walked = diff(Some(&empty), &after);
            let want = (
                Some(StepIds::from(&Ids::default())),
                walked.1,
                walked.2,
                walked.3,
            );
            assert_eq!(diff(None, &after), want);
            let reused = diff_into(None, &after, vec![(3, None), (5, None)]);
            assert_eq!(reused, want);
        }
    }

    #[test]
    fn damaged_steps_are_errors() {
        let body = Body {
            kind: StepKind::Call,
            event: 1,
            order: 1,
            message_id: None,
            carried: Carried::default(),
            created: true,
            first_seen: 0,
            updated_at: 0,
            ids: None,
            props: vec![(2, None), (1, None)],
            merged: Vec::new(),
        };
        let bytes = encode(1, &body, &Ids::default());
        assert!(decode(&bytes).is_err(), "names out of order");
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err());
        }
        let mut extra = encode(
            1,
            &Body {
                props: vec![],
                ..body
            },
            &Ids::default(),
        );
        extra.push(0);
        assert!(decode(&extra).is_err(), "trailing bytes");
    }

    fn arb_state() -> impl Strategy<Value = Option<PropState>> {
        proptest::option::of((
            proptest::option::of((-5i64..5, 0u64..300, proptest::option::of(any::<i64>()))),
            proptest::option::of((-5i64..5, 0u64..3, ".{0,4}")),
            proptest::option::of((any::<i64>(), proptest::option::of(-1e9f64..1e9), 0u64..3)),
        ))
        .prop_map(|s| {
            s.map(|(lww, once, adds)| PropState {
                lww: lww.map(|(t, o, v)| (Stamp(Timestamp(t), o), v.map(Value::Int))),
                once: once
                    .map(|(t, o, v)| Box::new((Stamp(Timestamp(t), o), Value::Str(v.into())))),
                adds: adds.map(|(i, f, o)| {
                    Box::new(crate::types::state::Adds {
                        int: i128::from(i),
                        float: f,
                        first: Stamp(Timestamp(1), o),
                        last: Stamp(Timestamp(2), o + 1),
                    })
                }),
            })
        })
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        let s = || proptest::option::of("[a-z@.]{0,2}");
        (
            (
                0u8..3,
                any::<i64>(),
                any::<u64>(),
                s(),
                s(),
                s(),
                s(),
                any::<bool>(),
            ),
            (any::<i64>(), any::<i64>()),
            proptest::option::of((s(), s(), proptest::collection::vec("[a-z]{0,5}", 0..3), s())),
            proptest::collection::btree_map(any::<u32>(), arb_state(), 0..6),
            proptest::collection::vec(
                (any::<u64>(), proptest::collection::vec(any::<u8>(), 0..8)),
                0..3,
            ),
        )
            .prop_map(
                |((k, event, order, m, u, e, a, created), (fs, ua), ids, props, merged)| Body {
                    kind: [StepKind::Call, StepKind::Identifiers, StepKind::Unmerge][k as usize],
                    event,
                    order,
                    message_id: m,
                    carried: Carried {
                        user_id: u,
                        email: e,
                        anonymous_id: a,
                        same: Same::default(),
                    },
                    created,
                    first_seen: fs,
                    updated_at: ua,
                    ids: ids.map(|(user_id, email, anonymous_ids, company_id)| StepIds {
                        user_id,
                        email,
                        anonymous_ids,
                        company_id,
                    }),
                    props: props.into_iter().collect(),
                    merged,
                },
            )
    }

    /// A value a captured state holds.
    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            ".{0,30}".prop_map(|s| Value::Str(s.into())),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            any::<i64>().prop_map(|t| Value::DateTime(Timestamp(t))),
            proptest::collection::vec(any::<i64>().prop_map(Value::Int), 0..3)
                .prop_map(Value::Array),
        ]
    }

    /// States captured as bytes for the names of `captured` that `body` has no decoded state
    /// for (a name is in one list only), in name order as the write path sorts them. Each
    /// stamp is the call's own (`0`), one of a pool the decoded states of `arb_state` also
    /// draw from (`1..=4`), or its own (more); `None`: a removal.
    fn captured_states(
        body: &Body,
        captured: &std::collections::BTreeMap<u32, (u8, Option<Value>)>,
    ) -> RawStates {
        let mut raw = RawStates::default();
        for (i, (name, (k, value))) in captured.iter().enumerate() {
            if body.props.binary_search_by_key(name, |p| p.0).is_ok() {
                continue;
            }
            let stamp = match k {
                0 => Stamp::new(Timestamp(body.event), body.order),
                1..=4 => Stamp(Timestamp(i64::from(*k) - 3), u64::from(k % 3)),
                _ => Stamp(
                    Timestamp(1_700_000_000_000_000 + i as i64),
                    200_000 + i as u64,
                ),
            };
            match value {
                Some(v) => {
                    let mut bytes = Vec::new();
                    v.put(&mut bytes);
                    raw.push_set(*name, stamp, None, &bytes);
                }
                None => raw.push_unset(*name, stamp),
            }
        }
        raw
    }

    /// The encoder against the reference (the encoder before it wrote the states in one pass),
    /// and its step decoded: the decoded states and the captured ones, merged by name.
    fn check_against_reference(
        arrival: i64,
        body: &Body,
        raw: &RawStates,
        after: &Ids,
    ) -> std::result::Result<(), TestCaseError> {
        let mut r = body.as_ref();
        r.raw = RawBefore {
            states: &raw.states,
            bytes: &raw.bytes,
            mapped: None,
        };
        // Appended after bytes already there, as the write path appends to a batch.
        let (mut got, mut want) = (vec![9u8; 3], vec![9u8; 3]);
        encode_into(&mut got, &mut vec![7u8; 5], arrival, &r, after);
        encode_into_reference(&mut want, arrival, &r, after);
        prop_assert_eq!(&got, &want);
        let step = decode(&got[3..]).unwrap();
        let mut all = body.props.clone();
        for (name, state) in &raw.states {
            all.push((*name, Some(raw.decode(state).unwrap())));
        }
        all.sort_by_key(|p| p.0);
        prop_assert_eq!(step.body.props, all);
        Ok(())
    }

    /// Wide gaps and stamp indexes past one byte (a table of more than 250 stamps): the
    /// encoder's slow path writes the reference's bytes too.
    #[test]
    fn wide_gaps_and_indexes_write_the_reference_bytes() {
        let body = Body {
            kind: StepKind::Call,
            event: 1_700_000_000_000_000,
            order: 7,
            message_id: None,
            carried: Carried::default(),
            created: false,
            first_seen: 0,
            updated_at: 0,
            ids: None,
            props: vec![(5, None), (600, set_at(3)), (100_000, None)],
            merged: Vec::new(),
        };
        let captured = (0..400u32)
            .map(|i| {
                let name = if i % 7 == 0 { i * 1_000 + 1 } else { i * 3 + 2 };
                let value = (i % 5 != 0).then(|| Value::Int(i64::from(i)));
                (name, (8, value))
            })
            .collect();
        let raw = captured_states(&body, &captured);
        assert!(raw.states.len() > 300);
        check_against_reference(1, &body, &raw, &Ids::default()).unwrap();
    }

    /// The decoded state a set at `t` leaves.
    fn set_at(t: i64) -> Option<PropState> {
        Some(PropState {
            lww: Some((Stamp(Timestamp(t), 1), Some(Value::Int(t)))),
            once: None,
            adds: None,
        })
    }

    proptest! {
        /// The fixed-size moves copy every length as `copy_from_slice` does (past 32 bytes,
        /// it is `copy_from_slice`).
        #[test]
        fn copy_short_copies_as_copy_from_slice(
            src in proptest::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut got = vec![0xAA; src.len()];
            copy_short(&mut got, &src);
            prop_assert_eq!(&got, &src);
            // Unequal lengths copy nothing.
            let mut other = vec![0xAA; src.len() + 1];
            copy_short(&mut other, &src);
            prop_assert!(other.iter().all(|b| *b == 0xAA));
        }

        #[test]
        fn random_steps_round_trip_and_damage_is_an_error_or_a_step(
            body in arb_body(),
            arrival in any::<i64>(),
            after_user in proptest::option::of("[a-z@.]{0,2}"),
            after_email in proptest::option::of("[a-z@.]{0,2}"),
            after_anons in proptest::collection::vec("[a-z@.]{0,2}", 0..3),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            bits in 1u8..=255,
        ) {
            // Short identifiers, so that carried ones often equal the profile's (flags).
            let after = Ids {
                user_id: after_user,
                email: after_email,
                anonymous_ids: after_anons,
                company_id: None,
            };
            let bytes = encode(arrival, &body, &after);
            let step = decode(&bytes).unwrap();
            prop_assert_eq!(step.arrival, arrival);
            let mut got = step.body.clone();
            got.carried = step.body.carried(&after);
            prop_assert_eq!(&got, &body);
            // Every cut short step is an error, never a panic.
            let n = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..n]).is_err());
            // A flipped byte decodes to an error or to some step, never panics; a flipped
            // tag is always an error.
            let mut damaged = bytes.clone();
            let at = flip.index(damaged.len());
            damaged[at] ^= bits;
            let r = decode(&damaged);
            if at == 0 {
                prop_assert!(r.is_err());
            }
        }

        /// The encoder writes the reference encoder's bytes for decoded states and captured
        /// ones mixed, stamps shared between them and with the call, or not.
        #[test]
        fn the_encoder_writes_the_reference_bytes(
            body in arb_body(),
            captured in proptest::collection::btree_map(
                prop_oneof![0u32..64, any::<u32>()],
                (0u8..8, proptest::option::of(arb_value())),
                0..12,
            ),
            arrival in any::<i64>(),
            after_user in proptest::option::of("[a-z@.]{0,2}"),
            after_anons in proptest::collection::vec("[a-z@.]{0,2}", 0..3),
        ) {
            let after = Ids {
                user_id: after_user,
                email: None,
                anonymous_ids: after_anons,
                company_id: None,
            };
            let raw = captured_states(&body, &captured);
            check_against_reference(arrival, &body, &raw, &after)?;
        }

        /// As above, every decoded state absent (the fast path's and a new profile's steps),
        /// with up to 80 captured states.
        #[test]
        fn absent_and_captured_states_write_the_reference_bytes(
            mut body in arb_body(),
            captured in proptest::collection::btree_map(
                prop_oneof![0u32..64, any::<u32>()],
                (0u8..8, proptest::option::of(arb_value())),
                0..80,
            ),
            arrival in any::<i64>(),
        ) {
            for p in &mut body.props {
                p.1 = None;
            }
            let raw = captured_states(&body, &captured);
            check_against_reference(arrival, &body, &raw, &Ids::default())?;
        }
    }
}
