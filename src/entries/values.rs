//! The codec of property values and property states inside profile records (docs/format.md,
//! "Profile record"): values as bincode 2 enums, states with their stamps as indexes into the
//! record's stamp table.

use super::raw::RawStates;
use super::wire::{
    DecodeError, Decoded, Reader, Wire, put_i128, put_two_inline, put_u64, put_u64_inline,
    put_variant, zigzag,
};
use crate::types::state::{Adds, PropState, Stamp};
use crate::types::value::{Timestamp, Value};

/// Deepest nesting of arrays and objects a decoder follows (JSON parsing stops at 128 levels,
/// so no valid call holds more): beyond it a damaged record would recurse without bound.
const MAX_NESTING: usize = 256;

impl Wire for Timestamp {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        super::wire::put_i64(out, self.0);
    }
}

/// A variant index, then the payload.
impl Wire for Value {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_variant(out, variant(self));
        put_payload(self, out);
    }
}

/// A value's variant index: 0 bool, 1 i64, 2 f64, 3 str, 4 date-time, 5 array, 6 object,
/// 7 null.
#[inline]
pub(crate) fn variant(v: &Value) -> u32 {
    v.variant_index() as u32
}

/// Most variant indexes (a variant past it is a decode error).
const VARIANTS: u32 = 8;

/// Write what follows a value's variant index (arrays and objects: their items, each a whole
/// value).
#[inline]
pub(crate) fn put_payload(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Bool(b) => b.put(out),
        // Inline (`put_u64_inline`): a date-time is always wide, an integer often (past 125).
        Value::Int(i) => put_u64_inline(out, zigzag(*i)),
        Value::Float(f) => f.put(out),
        Value::Str(s) => s.put(out),
        Value::DateTime(t) => put_u64_inline(out, zigzag(t.0)),
        Value::Array(items) => items.put(out),
        Value::Object(fields) => fields.put(out),
        Value::Null => {}
    }
}

/// Read a value written by [`Value::put`].
pub(crate) fn value(r: &mut Reader<'_>) -> Decoded<Value> {
    value_at(r, 0)
}

fn value_at(r: &mut Reader<'_>, depth: usize) -> Decoded<Value> {
    if depth > MAX_NESTING {
        return Err(r.error("values nested too deep"));
    }
    let v = r.u32()?;
    payload_at(r, v, depth)
}

/// Read the payload of a value of variant `v` (written by [`put_payload`]).
pub(crate) fn payload(r: &mut Reader<'_>, v: u32) -> Decoded<Value> {
    payload_at(r, v, 0)
}

fn payload_at(r: &mut Reader<'_>, v: u32, depth: usize) -> Decoded<Value> {
    Ok(match v {
        0 => Value::Bool(r.bool()?),
        1 => Value::Int(r.i64()?),
        2 => Value::Float(r.f64()?),
        3 => Value::Str(r.compact()?),
        4 => Value::DateTime(Timestamp(r.i64()?)),
        5 => {
            let n = r.len(1)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value_at(r, depth + 1)?);
            }
            Value::Array(items)
        }
        6 => {
            let n = r.len(2)?;
            let mut fields = Vec::with_capacity(n);
            for _ in 0..n {
                let k = r.string()?;
                fields.push((k, value_at(r, depth + 1)?));
            }
            Value::Object(fields)
        }
        7 => Value::Null,
        _ => return Err(r.error("unknown value variant")),
    })
}

/// Check a value written by [`Value::put`] and step over it without building it (a state a
/// newer record of the chain replaces): the same checks as [`value`] (variants, lengths,
/// UTF-8, nesting), no allocation.
#[inline]
pub(crate) fn skip_value(r: &mut Reader<'_>) -> Decoded<()> {
    let v = r.u32()?;
    skip_payload(r, v)
}

fn skip_value_at(r: &mut Reader<'_>, depth: usize) -> Decoded<()> {
    if depth > MAX_NESTING {
        return Err(r.error("values nested too deep"));
    }
    let v = r.u32()?;
    skip_payload_at(r, v, depth)
}

/// Check and step over the payload of a value of variant `v` (see [`skip_value`]). The
/// scalars (nearly every state a record holds) inline; lists and objects out of line.
#[inline(always)]
pub(crate) fn skip_payload(r: &mut Reader<'_>, v: u32) -> Decoded<()> {
    match v {
        1 | 4 => r.skip_varint(),
        2 => r.bytes(8).map(|_| ()),
        3 => r.skip_str(),
        _ => skip_payload_at(r, v, 0),
    }
}

fn skip_payload_at(r: &mut Reader<'_>, v: u32, depth: usize) -> Decoded<()> {
    match v {
        0 => {
            r.bool()?;
        }
        1 | 4 => r.skip_varint()?,
        2 => {
            r.bytes(8)?;
        }
        3 => {
            r.skip_str()?;
        }
        5 => {
            let n = r.len(1)?;
            for _ in 0..n {
                skip_value_at(r, depth + 1)?;
            }
        }
        6 => {
            let n = r.len(2)?;
            for _ in 0..n {
                r.skip_str()?;
                skip_value_at(r, depth + 1)?;
            }
        }
        7 => {}
        _ => return Err(r.error("unknown value variant")),
    }
    Ok(())
}

/// [`skip_payload`] of a value the caller keeps as bytes, as `r.keeping(|r| skip_payload(r,
/// v))` steps over it (every string checked for UTF-8): the same bytes, or the same error at
/// the same place. A scalar (a boolean, an integer, a float, a string of at most 32 bytes all
/// ASCII, a date-time, a null: nearly every value of a W1 profile) is stepped over by its
/// length, worked out from the variant and the payload's first byte through tables
/// ([`scalar_len`]). The `match` on the variant compiled to a jump table whose target
/// mispredicted about every other state (a record's states come in name order, their variants
/// at random). Anything else (a longer or non-ASCII string, a list, an object, a damaged byte,
/// a string within 32 bytes of the record's end) goes the plain way, which decides.
#[inline(always)]
pub(crate) fn skip_kept_payload(r: &mut Reader<'_>, v: u32) -> Decoded<()> {
    match scalar_len(r.whole(), r.position(), v) {
        Some(len) => r.bytes(len).map(|_| ()),
        None => r.keeping(|r| skip_payload(r, v)),
    }
}

/// The length of the payload of variant `v` at `at` in `buf`, when it is a scalar
/// [`skip_kept_payload`] steps over by its length, checked as `skip_payload` checks it (a
/// string's UTF-8 as ASCII); `None` for anything else. No branch on the variant or the
/// payload: the length is looked up by variant and first byte ([`SCALAR_LEN`]), and each
/// test is a comparison, folded into one result.
#[inline(always)]
fn scalar_len(buf: &[u8], at: usize, v: u32) -> Option<usize> {
    // The string's variant: its length is its first byte's (below 251).
    const STR: [u8; 8] = [0, 0, 0, !0, 0, 0, 0, 0];
    let first = *buf.get(at)?;
    let k = (v & 7) as usize;
    let len = usize::from(SCALAR_LEN[k][usize::from(first)]);
    // The string's bytes to check (none for any other variant).
    let n = usize::from(STR[k] & first);
    let ascii = match buf.get(at + 1..).and_then(|rest| rest.first_chunk::<32>()) {
        Some(window) => ascii_prefix(window, n),
        None => n == 0,
    };
    let ok = (v < VARIANTS) & (len != NOT_SCALAR) & (at + len <= buf.len()) & ascii;
    ok.then_some(len)
}

/// [`SCALAR_LEN`]'s entry for a payload that is not a scalar stepped over by its length.
const NOT_SCALAR: usize = 255;

/// The bytes a scalar payload takes, by variant and first byte (0 bool, 1 i64, 2 f64, 3 str,
/// 4 date-time, 5 array, 6 object, 7 null): a boolean 1 (its byte 0 or 1), a varint 1 below
/// 251, 3, 5 or 9 for the markers 251 to 253 (`Reader::u64`'s forms), a float 8, a string its
/// one-byte length (below 251) and that many bytes, a null none; [`NOT_SCALAR`] for a byte
/// these refuse and for lists and objects (the plain way decides).
static SCALAR_LEN: [[u8; 256]; 8] = {
    let mut t = [[NOT_SCALAR as u8; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let varint = match b {
            0..=250 => 1,
            251 => 3,
            252 => 5,
            253 => 9,
            _ => NOT_SCALAR as u8,
        };
        if b < 2 {
            t[0][b] = 1;
        }
        t[1][b] = varint;
        t[2][b] = 8;
        if b < 251 {
            t[3][b] = 1 + b as u8;
        }
        t[4][b] = varint;
        t[7][b] = 0;
        b += 1;
    }
    t
};

/// 32 high bits then 32 zero bytes: the mask of the first `n` bytes of a 32-byte window is
/// its 32 bytes from `32 - n` ([`ascii_prefix`]). Aligned: one cache line.
#[repr(C, align(64))]
struct HighBits([u8; 64]);

static HIGH_BITS: HighBits = {
    let mut t = [0u8; 64];
    let mut i = 0;
    while i < 32 {
        t[i] = 0x80;
        i += 1;
    }
    HighBits(t)
};

/// Whether the first `n` bytes of `window` are ASCII (never for `n` past 32): their high bits,
/// under a mask of those bytes read from [`HIGH_BITS`], no branch on `n`. ASCII is UTF-8; a
/// string that is not ASCII is left to `std::str::from_utf8`.
#[inline(always)]
fn ascii_prefix(window: &[u8; 32], n: usize) -> bool {
    let Some(mask) = HIGH_BITS
        .0
        .get(32 - n.min(32)..)
        .and_then(|m| m.first_chunk::<32>())
    else {
        return false;
    };
    let (words, _) = window.as_chunks::<8>();
    let (masks, _) = mask.as_chunks::<8>();
    let high = words.iter().zip(masks).fold(0, |high, (w, m)| {
        high | (u64::from_le_bytes(*w) & u64::from_le_bytes(*m))
    });
    (n <= 32) & (high == 0)
}

/// A record's stamp table: its distinct stamps; properties refer to one by index, so the
/// properties one call set share one stamp instead of carrying a copy each.
#[derive(Debug, Default)]
pub(crate) struct StampTable(Stamps, Order);

/// A table's stamps: in place up to eight (a delta's: the call's own and few others; many
/// full records of W1's profiles), so that decoding or encoding one allocates nothing for
/// them (with four in place, W1 paid ~1.5 allocations a call here; sixteen saved 0.7 more
/// a call and cost more instructions moving the tables).
pub(crate) type Stamps = smallvec::SmallVec<[Stamp; 8]>;

/// Whether a table is sorted (full records: searched by bisection) or in the order met
/// (deltas: searched in order).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Order {
    #[default]
    Sorted,
    AsMet,
}

impl StampTable {
    /// The sorted table of `props`' stamps (full records).
    pub(crate) fn of<'a>(props: impl ExactSizeIterator<Item = &'a PropState>) -> StampTable {
        // Inserted in order, once each, while the table is small: a profile's properties
        // share few stamps (one per call that set them), so this beats sorting every state's
        // stamp. Past `SMALL` distinct stamps (a profile of many properties set by many
        // calls) inserting would be quadratic: the rest are pushed and the table sorted once.
        const SMALL: usize = 32;
        // In place until it holds more than eight (not sized by the states: a profile of
        // forty properties set by a few calls would allocate room for 32 it does not use).
        let mut stamps = Stamps::new();
        let mut sorted = true;
        #[inline(always)]
        fn add(stamps: &mut Stamps, sorted: &mut bool, s: Stamp) {
            if !*sorted {
                stamps.push(s);
            } else if let Err(i) = stamps.binary_search(&s) {
                if stamps.len() < SMALL {
                    stamps.insert(i, s);
                } else {
                    stamps.push(s);
                    *sorted = false;
                }
            }
        }
        #[inline(never)]
        fn add_rest(stamps: &mut Stamps, sorted: &mut bool, p: &PropState) {
            if let Some((s, _)) = p.once.as_deref() {
                add(stamps, sorted, *s);
            }
            if let Some(a) = p.adds.as_deref() {
                add(stamps, sorted, a.first);
                add(stamps, sorted, a.last);
            }
        }
        // Each state's stamps as `each_stamp` meets them: the `lww` one (a plain state's only
        // one) here, inline; those of `once` and `adds` out of line.
        // The `lww` stamp added last is not searched again: states set by one call sit
        // together (a new profile's all share one), so most are the one before's.
        let mut last = None;
        for p in props {
            if let Some((s, _)) = &p.lww
                && last != Some(*s)
            {
                add(&mut stamps, &mut sorted, *s);
                last = Some(*s);
            }
            if p.once.is_some() || p.adds.is_some() {
                add_rest(&mut stamps, &mut sorted, p);
            }
        }
        if !sorted {
            stamps.sort_unstable();
            stamps.dedup();
        }
        StampTable(stamps, Order::Sorted)
    }

    /// A table whose first stamp is `first` followed by the other stamps of `props`, in the
    /// order met (delta records: few stamps, `first` the call's own).
    pub(crate) fn starting_with<'a>(
        first: Stamp,
        props: impl Iterator<Item = &'a PropState>,
    ) -> StampTable {
        let mut stamps = Stamps::new();
        stamps.push(first);
        for p in props {
            each_stamp(p, |s| {
                if !stamps.contains(&s) {
                    stamps.push(s);
                }
            });
        }
        StampTable(stamps, Order::AsMet)
    }

    /// The stamps.
    pub(crate) fn stamps(&self) -> &[Stamp] {
        &self.0
    }

    #[inline]
    fn index(&self, s: &Stamp) -> u32 {
        // Every stamp of the record is in the table (built from the same properties).
        if self.1 == Order::AsMet || self.0.len() <= 4 {
            self.0.iter().position(|x| x == s).unwrap_or_default() as u32
        } else {
            self.0.binary_search(s).unwrap_or_default() as u32
        }
    }

    /// Write the table's stamps (without a length: see [`StampTable::put`]).
    fn put_stamps(stamps: &[Stamp], out: &mut Vec<u8>) {
        for s in stamps {
            s.0.put(out);
            s.1.put(out);
        }
    }

    /// Read a table of `n` stamps.
    pub(crate) fn read(r: &mut Reader<'_>) -> Decoded<StampTable> {
        let n = r.len(2)?;
        let mut stamps = Stamps::with_capacity(n);
        for _ in 0..n {
            stamps.push(stamp(r)?);
        }
        Ok(StampTable(stamps, Order::Sorted))
    }

    /// Write the (sorted) table as compact full records hold it: its length, the first stamp
    /// whole, then each next one as deltas from the one before: the event time's (>= 0, an
    /// unsigned varint) and the arrival order's (a signed varint: order need not increase
    /// with time).
    pub(crate) fn put_deltas(&self, out: &mut Vec<u8>) {
        put_u64(out, self.0.len() as u64);
        let mut prev: Option<Stamp> = None;
        for s in &self.0 {
            match prev {
                None => put_stamp(*s, out),
                Some(p) => put_stamp_after(p, *s, out),
            }
            prev = Some(*s);
        }
    }

    /// Read a table written by [`StampTable::put_deltas`]: a sum past the range of its field
    /// or a stamp not after the previous one is a decode error.
    pub(crate) fn read_deltas(r: &mut Reader<'_>) -> Decoded<StampTable> {
        // A stamp takes 2 bytes at least (the first: two varints; the next: two deltas).
        let n = r.len(2)?;
        let mut stamps = Stamps::with_capacity(n);
        for _ in 0..n {
            let s = stamp_after(r, stamps.last().copied())?;
            stamps.push(s);
        }
        Ok(StampTable(stamps, Order::Sorted))
    }

    /// Write a length-prefixed table of stamps (after the first `skip`).
    pub(crate) fn put_from(&self, skip: usize, out: &mut Vec<u8>) {
        let rest = self.0.get(skip..).unwrap_or_default();
        put_u64(out, rest.len() as u64);
        Self::put_stamps(rest, out);
    }

    /// The sorted table of `stamps` (each once): what [`StampTable::of`] gives for states
    /// naming them.
    pub(crate) fn sorted(mut stamps: Stamps) -> StampTable {
        stamps.sort_unstable();
        stamps.dedup();
        StampTable(stamps, Order::Sorted)
    }

    /// A table from stamps already read.
    pub(crate) fn from_stamps(stamps: Stamps) -> StampTable {
        StampTable(stamps, Order::AsMet)
    }

    fn get(&self, r: &Reader<'_>, i: u32) -> Decoded<Stamp> {
        self.0
            .get(i as usize)
            .copied()
            .ok_or_else(|| r.error("property stamp index outside the stamp table"))
    }
}

/// Where a decoder finds the stamp a state's index names: a record's [`StampTable`], or a
/// plain list of stamps.
pub(crate) trait StampLookup {
    /// Stamp `i`, or a decode error at `r` when the table has none.
    fn stamp(&self, r: &Reader<'_>, i: u32) -> Decoded<Stamp>;
}

impl StampLookup for StampTable {
    #[inline]
    fn stamp(&self, r: &Reader<'_>, i: u32) -> Decoded<Stamp> {
        self.get(r, i)
    }
}

impl StampLookup for [Stamp] {
    #[inline]
    fn stamp(&self, r: &Reader<'_>, i: u32) -> Decoded<Stamp> {
        self.get(i as usize)
            .copied()
            .ok_or_else(|| r.error("property stamp index outside the stamp table"))
    }
}

/// Where an encoder finds the index of a stamp: a record's [`StampTable`].
pub(crate) trait StampIndex {
    /// The index of `s`, which the table holds.
    fn index_of(&self, s: &Stamp) -> u32;
}

impl StampIndex for StampTable {
    #[inline]
    fn index_of(&self, s: &Stamp) -> u32 {
        self.index(s)
    }
}

impl Wire for StampTable {
    fn put(&self, out: &mut Vec<u8>) {
        self.put_from(0, out);
    }
}

/// Read one stamp: event time, arrival order.
pub(crate) fn stamp(r: &mut Reader<'_>) -> Decoded<Stamp> {
    // `Reader::i64` then `Reader::u64`, in one step.
    let (zigzag, order) = r.two_u64()?;
    let ts = ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64);
    Ok(Stamp::new(Timestamp(ts), order))
}

/// The next stamp of a table [`StampTable::put_deltas`] wrote: the first whole, each later one
/// as its distance from `prev` (the one before it). A sum past the range of its field or a
/// stamp not after `prev` is a decode error.
#[inline]
pub(crate) fn stamp_after(r: &mut Reader<'_>, prev: Option<Stamp>) -> Decoded<Stamp> {
    match prev {
        None => stamp(r),
        Some(p) => stamp_next(r, p),
    }
}

/// [`stamp_after`] a stamp `p`: inline, the distances in one step and 64-bit sums, which
/// nearly every stamp takes; any other form, and every error, out of line.
#[inline(always)]
pub(crate) fn stamp_next(r: &mut Reader<'_>, p: Stamp) -> Decoded<Stamp> {
    let Some((dt, d_order)) = r.stamp_delta_short() else {
        return stamp_after_wide(r, p);
    };
    // The time's distance is unsigned, so the stamp is after `p` unless the times are the same
    // and the order does not grow.
    if let Some(ts) = p.0.0.checked_add_unsigned(dt)
        && let Some(order) = p.1.checked_add_signed(d_order)
        && (dt != 0 || d_order > 0)
    {
        return Ok(Stamp::new(Timestamp(ts), order));
    }
    Err(short_error(r, p, dt, d_order))
}

/// The error of [`stamp_next`]'s short distances `dt`, `d_order` after `p`, checked in this
/// order: the time's sum, the order's, the stamps' order.
#[cold]
#[inline(never)]
fn short_error(r: &Reader<'_>, p: Stamp, dt: u64, d_order: i64) -> DecodeError {
    if p.0.0.checked_add_unsigned(dt).is_none() {
        r.error("stamp table: event time beyond 64 bits")
    } else if p.1.checked_add_signed(d_order).is_none() {
        r.error("stamp table: arrival order beyond 64 bits")
    } else {
        r.error("stamp table: stamps out of order")
    }
}

/// [`stamp_next`] of distances that are not short (`Reader::stamp_delta_short`): read one by
/// one, summed in 128 bits, as every stamp was read before the short form (the tests hold
/// [`stamp_after`] to it on any bytes).
#[cold]
#[inline(never)]
fn stamp_after_wide(r: &mut Reader<'_>, p: Stamp) -> Decoded<Stamp> {
    let dt = r.u64()?;
    let d_order = r.i128()?;
    let ts =
        p.0.0
            .checked_add_unsigned(dt)
            .ok_or_else(|| r.error("stamp table: event time beyond 64 bits"))?;
    let order = i128::from(p.1)
        .checked_add(d_order)
        .and_then(|o| u64::try_from(o).ok())
        .ok_or_else(|| r.error("stamp table: arrival order beyond 64 bits"))?;
    let s = Stamp::new(Timestamp(ts), order);
    if s <= p {
        return Err(r.error("stamp table: stamps out of order"));
    }
    Ok(s)
}

/// Write stamp `s` of a table as [`StampTable::put_deltas`] does after `p` (sorted: `s` after
/// `p`): its distance from `p`.
#[inline]
pub(crate) fn put_stamp_after(p: Stamp, s: Stamp, out: &mut Vec<u8>) {
    // Sorted: the time difference is >= 0 and below 2^64.
    let time = (i128::from(s.0.0) - i128::from(p.0.0)) as u64;
    let order = i128::from(s.1) - i128::from(p.1);
    match i64::try_from(order) {
        // Nearly always: both in one append (`put_i128` of an `i64` is its `put_i64`).
        Ok(order) => put_two_inline(out, time, zigzag(order)),
        Err(_) => {
            put_u64(out, time);
            put_i128(out, order);
        }
    }
}

/// Write one stamp.
pub(crate) fn put_stamp(s: Stamp, out: &mut Vec<u8>) {
    // The time and the arrival order (both nearly always wide) in one append: the bytes
    // `s.0.put` and `s.1.put` write.
    put_two_inline(out, zigzag(s.0.0), s.1);
}

/// Each stamp a state holds, in the order a table meets them (`lww`, `once`, the adds').
pub(crate) fn each_stamp(p: &PropState, mut f: impl FnMut(Stamp)) {
    if let Some((s, _)) = &p.lww {
        f(*s);
    }
    if let Some((s, _)) = p.once.as_deref() {
        f(*s);
    }
    if let Some(a) = p.adds.as_deref() {
        f(a.first);
        f(a.last);
    }
}

/// Write a property state with its stamps as indexes into `table` (delta records, history
/// steps, and full records of revisions 1-4): three option tags, then what each holds.
pub(crate) fn put_state(p: &PropState, table: &StampTable, out: &mut Vec<u8>) {
    put_state_in(p, table, out);
}

/// [`put_state`] against any [`StampIndex`] (a history step writes its states against the
/// stamps met so far, before its table is complete).
pub(crate) fn put_state_in<T: StampIndex + ?Sized>(p: &PropState, table: &T, out: &mut Vec<u8>) {
    match &p.lww {
        None => out.push(0),
        Some((s, v)) => {
            out.push(1);
            table.index_of(s).put(out);
            v.put(out);
        }
    }
    match p.once.as_deref() {
        None => out.push(0),
        Some(once) => {
            out.push(1);
            put_once_body(once, table, out);
        }
    }
    match p.adds.as_deref() {
        None => out.push(0),
        Some(a) => {
            out.push(1);
            put_adds_body(a, table, out);
        }
    }
}

/// `once`'s body: the stamp index, then the value.
fn put_once_body<T: StampIndex + ?Sized>((s, v): &(Stamp, Value), table: &T, out: &mut Vec<u8>) {
    table.index_of(s).put(out);
    v.put(out);
}

/// `adds`'s body: the sums, then the first and the last stamp's indexes.
fn put_adds_body<T: StampIndex + ?Sized>(a: &Adds, table: &T, out: &mut Vec<u8>) {
    put_i128(out, a.int);
    a.float.put(out);
    table.index_of(&a.first).put(out);
    table.index_of(&a.last).put(out);
}

/// A stamp index, checked against `table`.
#[inline]
fn stamp_at<T: StampLookup + ?Sized>(r: &mut Reader<'_>, table: &T) -> Decoded<Stamp> {
    let i = r.u32()?;
    table.stamp(r, i)
}

fn once_body<T: StampLookup + ?Sized>(
    r: &mut Reader<'_>,
    table: &T,
) -> Decoded<Box<(Stamp, Value)>> {
    let s = stamp_at(r, table)?;
    Ok(Box::new((s, value(r)?)))
}

fn skip_once_body<T: StampLookup + ?Sized>(r: &mut Reader<'_>, table: &T) -> Decoded<()> {
    stamp_at(r, table)?;
    skip_value(r)
}

fn adds_body<T: StampLookup + ?Sized>(r: &mut Reader<'_>, table: &T) -> Decoded<Box<Adds>> {
    let int = r.i128()?;
    let float = if r.some()? { Some(r.f64()?) } else { None };
    let first = stamp_at(r, table)?;
    let last = stamp_at(r, table)?;
    Ok(Box::new(Adds {
        int,
        float,
        first,
        last,
    }))
}

fn skip_adds_body<T: StampLookup + ?Sized>(r: &mut Reader<'_>, table: &T) -> Decoded<()> {
    r.i128()?;
    if r.some()? {
        r.f64()?;
    }
    stamp_at(r, table)?;
    stamp_at(r, table)?;
    Ok(())
}

/// Check a property state written by [`put_state`] and step over it without building it
/// (see [`skip_value`]).
pub(crate) fn skip_state(r: &mut Reader<'_>, table: &StampTable) -> Decoded<()> {
    if r.some()? {
        stamp_at(r, table)?;
        if r.some()? {
            skip_value(r)?;
        }
    }
    if r.some()? {
        skip_once_body(r, table)?;
    }
    if r.some()? {
        skip_adds_body(r, table)?;
    }
    Ok(())
}

/// Read a property state written by [`put_state`] against the same table.
pub(crate) fn state(r: &mut Reader<'_>, table: &StampTable) -> Decoded<PropState> {
    let lww = if r.some()? {
        let s = stamp_at(r, table)?;
        let v = if r.some()? { Some(value(r)?) } else { None };
        Some((s, v))
    } else {
        None
    };
    let once = if r.some()? {
        Some(once_body(r, table)?)
    } else {
        None
    };
    let adds = if r.some()? {
        Some(adds_body(r, table)?)
    } else {
        None
    };
    Ok(PropState { lww, once, adds })
}

/// The shape byte of a property state in a compact full record (docs/format.md, "Profile
/// record, full"): bits 0-3 say what `lww` is ([`SHAPE_NO_LWW`], [`SHAPE_UNSET`], or
/// [`SHAPE_SET`] plus the value's variant: set, and only the value's payload follows), bit 4
/// that `once` follows, bit 5 that `adds` follows; bits 6-7 must be 0.
const SHAPE_LWW: u8 = 0x0f;
const SHAPE_NO_LWW: u8 = 0;
const SHAPE_UNSET: u8 = 1;
const SHAPE_SET: u8 = 2;
const SHAPE_ONCE: u8 = 0x10;
const SHAPE_ADDS: u8 = 0x20;

/// Write a property state in its compact form: the shape byte, then the lww stamp index and
/// the value's payload (without its variant, which the shape holds), then `once` and `adds`
/// as [`put_state`] writes them, without option tags.
pub(crate) fn put_shaped_state<T: StampIndex + ?Sized>(
    p: &PropState,
    table: &T,
    out: &mut Vec<u8>,
) {
    let lww = match &p.lww {
        None => SHAPE_NO_LWW,
        Some((_, None)) => SHAPE_UNSET,
        // At most 7 + 2 = 9: fits the 4 bits.
        Some((_, Some(v))) => SHAPE_SET + variant(v) as u8,
    };
    let once = if p.once.is_some() { SHAPE_ONCE } else { 0 };
    let adds = if p.adds.is_some() { SHAPE_ADDS } else { 0 };
    out.push(lww | once | adds);
    if let Some((s, v)) = &p.lww {
        table.index_of(s).put(out);
        if let Some(v) = v {
            put_payload(v, out);
        }
    }
    if let Some(once) = p.once.as_deref() {
        put_once_body(once, table, out);
    }
    if let Some(a) = p.adds.as_deref() {
        put_adds_body(a, table, out);
    }
}

/// The compact state of `lww` alone, a set to `value` (`None`: a removal), whose stamp is the
/// first of the record's table (index 0): the bytes [`put_shaped_state`] writes of it against
/// such a table, without a stamp looked up and in one append but for a long string's bytes or
/// a list's items (`entries::profile::put_full_one_stamp`, a new profile's full record).
#[inline(always)]
pub(crate) fn put_plain_first(value: Option<&Value>, out: &mut Vec<u8>) {
    /// The shape and the index 0, then `v`'s varint (its widest form appended, then cut to
    /// its length, as [`put_two_inline`] does).
    #[inline(always)]
    fn head_varint(shape: u8, v: u64, out: &mut Vec<u8>) {
        let (marker, len) = super::wire::varint_form(v);
        let [b0, b1, b2, b3, b4, b5, b6, b7] = v.to_le_bytes();
        let at = out.len();
        out.extend_from_slice(&[shape, 0, marker, b0, b1, b2, b3, b4, b5, b6, b7]);
        out.truncate(at + 3 + len);
    }
    // The shapes are `SHAPE_SET` plus the value's variant ([`variant`]).
    match value {
        None => out.extend_from_slice(&[SHAPE_UNSET, 0]),
        Some(Value::Bool(b)) => out.extend_from_slice(&[SHAPE_SET, 0, u8::from(*b)]),
        Some(Value::Int(i)) => head_varint(SHAPE_SET + 1, zigzag(*i), out),
        Some(Value::Str(s)) if s.len() < 251 => {
            out.extend_from_slice(&[SHAPE_SET + 3, 0, s.len() as u8]);
            out.extend_from_slice(s.as_bytes());
        }
        Some(Value::DateTime(t)) => head_varint(SHAPE_SET + 4, zigzag(t.0), out),
        Some(Value::Null) => out.extend_from_slice(&[SHAPE_SET + 7, 0]),
        Some(v) => {
            out.extend_from_slice(&[SHAPE_SET + variant(v) as u8, 0]);
            put_payload(v, out);
        }
    }
}

/// Whether a compact state's shape byte is a plain set or removal: `lww` alone, whose bytes
/// are the shape, the stamp index and (a set) the value's payload, nothing after.
///
/// The shapes it takes are one range, `SHAPE_UNSET` to the last set's (no `once`, no `adds`):
/// one subtraction and one comparison (the three tests it spells out compiled to seven
/// instructions, once a state in the splice's walk). The test `plain_shape_is_its_definition`
/// checks every byte against the definition.
#[inline(always)]
pub(crate) fn plain_shape(b: u8) -> bool {
    b.wrapping_sub(SHAPE_UNSET) < PLAIN_SHAPES
}

/// How many shape bytes [`plain_shape`] takes: the removal's and one a set variant's.
const PLAIN_SHAPES: u8 = SHAPE_SET - SHAPE_UNSET + VARIANTS as u8;

const _: () = assert!(
    SHAPE_UNSET == SHAPE_NO_LWW + 1
        && SHAPE_SET == SHAPE_UNSET + 1
        && (SHAPE_SET as u32 + VARIANTS) <= SHAPE_LWW as u32 + 1
);

/// The value variant of a plain set's shape byte (see [`plain_shape`]); `None` for a removal
/// or any other state.
#[inline]
pub(crate) fn plain_set_variant(b: u8) -> Option<u32> {
    let v = u32::from(b.wrapping_sub(SHAPE_SET));
    (b & !SHAPE_LWW == 0 && b >= SHAPE_SET && v < VARIANTS).then_some(v)
}

/// The value variant of a plain state's shape byte `b` (see [`plain_shape`], which it does not
/// check): a set's variant, or `u8::MAX` for a removal. One subtraction: a removal's shape is
/// the one before the first set's.
#[inline(always)]
pub(crate) fn plain_variant(b: u8) -> u8 {
    b.wrapping_sub(SHAPE_SET)
}

const _: () = assert!(SHAPE_UNSET.wrapping_sub(SHAPE_SET) == u8::MAX && VARIANTS < 255);

/// Write the compact state of a plain set whose stamp has `index` in the table, from the
/// value's bytes as `Value::put` writes them (its variant, then its payload): the bytes
/// [`put_shaped_state`] writes for `{lww: (that stamp, that value)}`.
// Inlined: a full record writes one a set (~10 a splice, ~26 a record from parts), and out of
// line its prologue and epilogue took ~19 of its ~66 instructions; the rare forms (a variant
// or an index of 251 or more) stay out of line.
#[inline(always)]
pub(crate) fn put_set_shaped(value: &[u8], index: u32, out: &mut Vec<u8>) -> Decoded<()> {
    match (value.split_first(), u8::try_from(index)) {
        // A variant below `VARIANTS` and an index below 251 are their one-byte varints: the
        // shape and the index in one append, then the payload.
        (Some((&v, payload)), Ok(i)) if u32::from(v) < VARIANTS && i < 251 => {
            out.extend_from_slice(&[SHAPE_SET + v, i]);
            out.extend_from_slice(payload);
            Ok(())
        }
        _ => put_set_shaped_wide(value, index, out),
    }
}

/// [`put_set_shaped`], a short payload copied without a `memcpy` call ([`extend_short`]): for
/// the splice (`entries::profile::splice_mapped`), whose ~10 sets a record each made one. (In
/// `put_full_parts` it cost more than the calls it saved.)
#[inline(always)]
pub(crate) fn put_set_shaped_short(value: &[u8], index: u32, out: &mut Vec<u8>) -> Decoded<()> {
    match (value.split_first(), u8::try_from(index)) {
        (Some((&v, payload)), Ok(i)) if u32::from(v) < VARIANTS && i < 251 => {
            out.extend_from_slice(&[SHAPE_SET + v, i]);
            extend_short(out, payload);
            Ok(())
        }
        _ => put_set_shaped_wide(value, index, out),
    }
}

/// Bytes [`extend_from`] copies as one piece for a value (its payload, or its bytes): most
/// are shorter (W1's strings, numbers and flags).
pub(crate) const VALUE_PIECE: usize = 32;

/// A value's bytes, `src[from..to]`, kept with the buffer they lie in: appended
/// ([`ValueBytes::extend`]) as one fixed-size piece of [`VALUE_PIECE`] bytes when the buffer
/// has that many from their start ([`extend_from`]), not by a libc `memcpy` whose dispatch on
/// the length mispredicts (a whole load's walk of a full record captures ~20 states of varying
/// lengths: `entries::profile::full_skipping`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ValueBytes<'a> {
    src: &'a [u8],
    from: usize,
    to: usize,
}

impl<'a> ValueBytes<'a> {
    /// The bytes `src[range]` (`None` if outside `src`).
    #[inline]
    pub(crate) fn within(src: &'a [u8], range: std::ops::Range<usize>) -> Option<ValueBytes<'a>> {
        src.get(range.clone())?;
        Some(ValueBytes {
            src,
            from: range.start,
            to: range.end,
        })
    }

    /// Bytes with none known after them (copied as they are).
    pub(crate) fn of(bytes: &'a [u8]) -> ValueBytes<'a> {
        ValueBytes {
            src: bytes,
            from: 0,
            to: bytes.len(),
        }
    }

    /// The bytes.
    #[inline]
    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.src.get(self.from..self.to).unwrap_or_default()
    }

    /// The first byte, and the bytes after it.
    #[inline]
    pub(crate) fn split_first(&self) -> Option<(u8, ValueBytes<'a>)> {
        let first = *self.bytes().first()?;
        Some((
            first,
            ValueBytes {
                from: self.from + 1,
                ..*self
            },
        ))
    }

    /// `out.extend_from_slice(self.bytes())`, by [`extend_from`].
    #[inline(always)]
    pub(crate) fn extend(&self, out: &mut Vec<u8>) {
        extend_from::<VALUE_PIECE>(out, self.src, self.from, self.to);
    }
}

/// `out.extend_from_slice(&src[from..to])` (which it panics as), a run of `P` bytes or fewer
/// with that many bytes of `src` from its start copied as that fixed-size piece (a few moves,
/// no call, no branch on the run's length), then `out` cut back to the run's end. A libc
/// `memcpy` of a few dozen bytes cost ~25 instructions with its call's setup, and its dispatch
/// on the length mispredicts where the lengths vary (values, runs of states).
#[inline(always)]
pub(crate) fn extend_from<const P: usize>(out: &mut Vec<u8>, src: &[u8], from: usize, to: usize) {
    let piece = src.get(from..).and_then(|rest| rest.first_chunk::<P>());
    match piece {
        Some(piece) if from <= to && to - from <= P => {
            let end = out.len() + (to - from);
            out.extend_from_slice(piece);
            out.truncate(end);
        }
        _ => out.extend_from_slice(&src[from..to]),
    }
}

/// `out.extend_from_slice(src)`, a short `src` (32 bytes or fewer: most values' payloads,
/// runs of state lengths) without a libc `memcpy` call (~25 instructions with its setup for a
/// few bytes): up to 16 bytes gathered into a 16-byte buffer in two overlapping fixed-size
/// pieces (the first and the last 8, 4, or 1 bytes and the middle one; each piece one move,
/// not a copy of a slice whose length the compiler does not see, which it makes a `memcpy`
/// call), the buffer appended whole and `out` cut back to `src`'s end; 17 to 32 bytes as
/// their first 16, then the rest so.
#[inline(always)]
pub(crate) fn extend_short(out: &mut Vec<u8>, src: &[u8]) {
    let src = match src.split_first_chunk::<16>() {
        Some((first, rest)) if !rest.is_empty() && rest.len() <= 16 => {
            out.extend_from_slice(first);
            rest
        }
        _ => src,
    };
    let n = src.len();
    let mut b = [0u8; 16];
    match n {
        0 => return,
        1..=3 => {
            b[0] = src[0];
            b[n / 2] = src[n / 2];
            b[n - 1] = src[n - 1];
        }
        4..=7 => put_ends::<4>(&mut b, src),
        8..=16 => put_ends::<8>(&mut b, src),
        _ => return out.extend_from_slice(src),
    }
    let end = out.len() + n;
    out.extend_from_slice(&b);
    out.truncate(end);
}

/// `b[..src.len()]` set to `src`, of `K` to `2 * K` bytes (16 or fewer): its first and its last
/// `K` bytes, each put as one fixed-size piece.
#[inline(always)]
fn put_ends<const K: usize>(b: &mut [u8; 16], src: &[u8]) {
    let (Some(first), Some(last)) = (src.first_chunk::<K>(), src.last_chunk::<K>()) else {
        return;
    };
    if let Some(at) = b.first_chunk_mut::<K>() {
        *at = *first;
    }
    if let Some(at) = b
        .get_mut(src.len() - K..)
        .and_then(|rest| rest.first_chunk_mut::<K>())
    {
        *at = *last;
    }
}

/// [`put_set_shaped`] of any value and index.
#[cold]
#[inline(never)]
fn put_set_shaped_wide(value: &[u8], index: u32, out: &mut Vec<u8>) -> Decoded<()> {
    let (shape, payload) = set_shaped(value)?;
    put_plain_shaped(shape, index, payload, out);
    Ok(())
}

/// The shape byte and the payload of a plain set's compact state (before and after its stamp
/// index, see [`put_set_shaped`]), from the value's bytes as `Value::put` writes them.
#[inline]
pub(crate) fn set_shaped(value: &[u8]) -> Decoded<(u8, &[u8])> {
    // The variant is a varint: one below `VARIANTS` is one byte as this encoder writes it;
    // a longer form (another encoder's) is read as a varint.
    match value.split_first() {
        Some((&v, payload)) if u32::from(v) < VARIANTS => Ok((SHAPE_SET + v, payload)),
        Some((&v, _)) if v >= 251 => {
            let mut r = Reader::new(value);
            let v = r.u32()?;
            if v >= VARIANTS {
                return Err(r.error("unknown value variant"));
            }
            Ok((SHAPE_SET + v as u8, &value[r.position()..]))
        }
        _ => Err(DecodeError {
            at: 0,
            reason: "unknown value variant",
        }),
    }
}

/// A shape byte, checked: what `lww` is (`None`: no lww; `Some(None)`: unset; `Some(Some(v))`:
/// set to a value of variant `v`), and the byte.
fn shape(r: &mut Reader<'_>) -> Decoded<(Option<Option<u32>>, u8)> {
    let b = r.u8()?;
    if b & !(SHAPE_LWW | SHAPE_ONCE | SHAPE_ADDS) != 0 {
        return Err(r.error("property shape: unknown bits"));
    }
    let lww = match b & SHAPE_LWW {
        SHAPE_NO_LWW => None,
        SHAPE_UNSET => Some(None),
        v if u32::from(v - SHAPE_SET) < VARIANTS => Some(Some(u32::from(v - SHAPE_SET))),
        _ => return Err(r.error("property shape: unknown value variant")),
    };
    Ok((lww, b))
}

/// Read a property state written by [`put_shaped_state`] against the same table.
pub(crate) fn shaped_state<T: StampLookup + ?Sized>(
    r: &mut Reader<'_>,
    table: &T,
) -> Decoded<PropState> {
    let (lww, b) = shape(r)?;
    shaped_rest(r, table, lww, b)
}

/// [`shaped_state`], but a plain set or removal (`lww` alone) of `id` is captured into `raw`
/// as its stamp and value bytes (`None` returned) instead of built: the same checks, no
/// `Value`.
pub(crate) fn shaped_state_or_raw<T: StampLookup + ?Sized>(
    r: &mut Reader<'_>,
    table: &T,
    id: u32,
    raw: &mut RawStates,
) -> Decoded<Option<PropState>> {
    let (lww, b) = shape(r)?;
    match lww {
        Some(v) if b & (SHAPE_ONCE | SHAPE_ADDS) == 0 => {
            let s = stamp_at(r, table)?;
            match v {
                Some(v) => {
                    let from = r.position();
                    skip_kept_payload(r, v)?;
                    // The payload with the byte before it (the stamp index's last), which the
                    // variant (below `VARIANTS`: one byte) is written over.
                    // Within the reader's bytes, as it read them; else the payload alone.
                    let over = ValueBytes::within(r.whole(), from - 1..r.position())
                        .unwrap_or_else(|| ValueBytes::of(r.since(from - 1)));
                    raw.push_set_over(id, s, v as u8, over);
                }
                None => raw.push_unset(id, s),
            }
            Ok(None)
        }
        _ => shaped_rest(r, table, lww, b).map(Some),
    }
}

/// Capture the compact state `state` (its bytes: [`plain_shape`] of its first byte, a
/// one-byte stamp index, the payload; kept with the record's bytes after it, for a fixed-size
/// copy) of property `id` into `raw`, its stamp `s`: what [`shaped_state_or_raw`] captures of
/// it, read from a record whose state lengths are known.
#[inline]
pub(crate) fn capture_plain(raw: &mut RawStates, id: u32, s: Stamp, state: ValueBytes<'_>) {
    match state.split_first() {
        Some((SHAPE_UNSET, _)) => raw.push_unset(id, s),
        // The variant, below `VARIANTS`, is one byte: copied with the payload, in the place
        // of the stamp index.
        Some((b, over)) => raw.push_set_over(id, s, b - SHAPE_SET, over),
        // Never: a state has its shape byte.
        None => debug_assert!(false, "a captured state without its shape byte"),
    }
}

/// A compact state (as [`put_shaped_state`] writes it) that is a plain set or removal (`lww`
/// alone): its shape byte, its stamp index (not checked against a table) and its payload's
/// bytes (none for a removal). `None` for any other state. Debug builds check the states a
/// load captures by their kept lengths against it.
#[cfg(debug_assertions)]
pub(crate) fn plain_shaped<'a>(r: &mut Reader<'a>) -> Decoded<Option<(u8, u32, &'a [u8])>> {
    let (lww, b) = shape(r)?;
    match lww {
        Some(v) if b & (SHAPE_ONCE | SHAPE_ADDS) == 0 => {
            let i = r.u32()?;
            let from = r.position();
            if let Some(v) = v {
                skip_payload(r, v)?;
            }
            Ok(Some((b, i, r.since(from))))
        }
        _ => Ok(None),
    }
}

/// Write a plain compact state from its parts (see [`plain_shaped`]).
#[inline]
pub(crate) fn put_plain_shaped(shape: u8, index: u32, payload: &[u8], out: &mut Vec<u8>) {
    out.push(shape);
    index.put(out);
    out.extend_from_slice(payload);
}

/// What follows a state's shape byte `b` (`lww` as [`shape`] read it).
fn shaped_rest<T: StampLookup + ?Sized>(
    r: &mut Reader<'_>,
    table: &T,
    lww: Option<Option<u32>>,
    b: u8,
) -> Decoded<PropState> {
    let lww = match lww {
        None => None,
        Some(v) => {
            let s = stamp_at(r, table)?;
            Some((
                s,
                match v {
                    Some(v) => Some(payload(r, v)?),
                    None => None,
                },
            ))
        }
    };
    let once = if b & SHAPE_ONCE != 0 {
        Some(once_body(r, table)?)
    } else {
        None
    };
    let adds = if b & SHAPE_ADDS != 0 {
        Some(adds_body(r, table)?)
    } else {
        None
    };
    Ok(PropState { lww, once, adds })
}

/// Check a property state written by [`put_shaped_state`] and step over it without building
/// it (see [`skip_value`]).
pub(crate) fn skip_shaped_state<T: StampLookup + ?Sized>(
    r: &mut Reader<'_>,
    table: &T,
) -> Decoded<()> {
    let (lww, b) = shape(r)?;
    if let Some(v) = lww {
        stamp_at(r, table)?;
        if let Some(v) = v {
            skip_payload(r, v)?;
        }
    }
    if b & SHAPE_ONCE != 0 {
        skip_once_body(r, table)?;
    }
    if b & SHAPE_ADDS != 0 {
        skip_adds_body(r, table)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entries::wire::Utf8;
    use proptest::prelude::*;

    /// A read and where it left the reader.
    fn read_at<T>(
        bytes: &[u8],
        f: impl FnOnce(&mut Reader<'_>) -> Decoded<T>,
    ) -> (Decoded<T>, usize) {
        let mut r = Reader::new(bytes);
        let got = f(&mut r);
        (got, r.position())
    }

    proptest! {
        /// A stamp after another (`stamp_after`, its distances read in one step and summed in
        /// 64 bits when short) is the one its distances read one by one and summed in 128 bits
        /// give, or the same error at the same place: distances of every form and sign, sums
        /// past either field's range, stamps out of order, bytes cut short or damaged.
        #[test]
        fn a_stamp_after_another_is_its_distances_read_one_by_one(
            p_ts in prop_oneof![any::<i64>(), -3i64..3, (i64::MAX - 3)..=i64::MAX, Just(i64::MIN)],
            p_order in prop_oneof![any::<u64>(), 0u64..3, (u64::MAX - 3)..=u64::MAX],
            dt in prop_oneof![0u64..3, 0u64..70_000, any::<u32>().prop_map(u64::from), any::<u64>()],
            d in prop_oneof![
                -3i128..3,
                -70_000i128..70_000,
                any::<i32>().prop_map(i128::from),
                any::<i64>().prop_map(i128::from),
                any::<i128>(),
            ],
            tail in prop::collection::vec(any::<u8>(), 0..12),
            cut in any::<prop::sample::Index>(),
            damage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let mut bytes = Vec::new();
            put_u64(&mut bytes, dt);
            put_i128(&mut bytes, d);
            bytes.extend_from_slice(&tail);
            if let Some((at, b)) = damage {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
            let p = Stamp::new(Timestamp(p_ts), p_order);
            for bytes in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)]] {
                prop_assert_eq!(
                    read_at(bytes, |r| stamp_after(r, Some(p))),
                    read_at(bytes, |r| stamp_after_wide(r, p))
                );
            }
        }

        /// A stamp read whole (`stamp`: its two varints in one step) is its time and order read
        /// one by one, or the same error at the same place.
        #[test]
        fn a_stamp_is_its_time_and_order_read_one_by_one(
            ts in prop_oneof![any::<i64>(), -200i64..200],
            order in prop_oneof![any::<u64>(), 0u64..300, 0u64..70_000],
            tail in prop::collection::vec(any::<u8>(), 0..20),
            cut in any::<prop::sample::Index>(),
            damage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            noise in prop::collection::vec(any::<u8>(), 0..24),
        ) {
            let mut bytes = Vec::new();
            put_stamp(Stamp::new(Timestamp(ts), order), &mut bytes);
            bytes.extend_from_slice(&tail);
            if let Some((at, b)) = damage {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
            let one_by_one = |r: &mut Reader<'_>| -> Decoded<Stamp> {
                let ts = r.i64()?;
                let order = r.u64()?;
                Ok(Stamp::new(Timestamp(ts), order))
            };
            for bytes in [&bytes[..], &bytes[..cut.index(bytes.len() + 1)], &noise[..]] {
                prop_assert_eq!(read_at(bytes, stamp), read_at(bytes, one_by_one));
            }
        }
    }

    /// Values of every variant, scalars most: strings ASCII and not, short and past the
    /// 32-byte window and the one-byte length, integers in every varint form.
    fn kept_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            prop_oneof![any::<i64>(), -130i64..130].prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            "[ -~]{0,40}".prop_map(|s: String| Value::Str(s.into())),
            ".{0,12}".prop_map(|s: String| Value::Str(s.into())),
            "[a-z]{240,260}".prop_map(|s: String| Value::Str(s.into())),
            any::<i64>().prop_map(|t| Value::DateTime(Timestamp(t))),
            Just(Value::Null),
        ];
        leaf.prop_recursive(2, 8, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::vec(("[a-z]{0,4}", inner), 0..3).prop_map(Value::Object),
            ]
        })
    }

    proptest! {
        /// A kept value's payload stepped over by [`skip_kept_payload`] (scalars by their
        /// length, a string's UTF-8 as ASCII) is stepped over as `keeping` and `skip_payload`
        /// step over it: the same place, or the same error at the same place, in every UTF-8
        /// mode; for values of every variant read as their own variant or any other, with the
        /// record's bytes after them or cut short, damaged (a non-UTF-8 string, a bad marker)
        /// or not.
        #[test]
        fn a_kept_payload_is_stepped_over_as_the_plain_way(
            before in prop::collection::vec(any::<u8>(), 0..4),
            value in kept_value(),
            other in proptest::option::of(0u32..10),
            tail in prop::collection::vec(any::<u8>(), 0..48),
            cut in any::<prop::sample::Index>(),
            damage in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            noise in prop::collection::vec(any::<u8>(), 0..48),
        ) {
            let mut bytes = before.clone();
            let v = other.unwrap_or(variant(&value));
            put_payload(&value, &mut bytes);
            bytes.extend_from_slice(&tail);
            // An empty record (no bytes before, a payload of none, no tail) has no byte
            // to damage.
            if let Some((at, b)) = damage.filter(|_| !bytes.is_empty()) {
                let at = at.index(bytes.len());
                bytes[at] = b;
            }
            let cut = cut.index(bytes.len() + 1).max(before.len());
            for bytes in [&bytes[..], &bytes[..cut], &noise[..]] {
                let from = before.len().min(bytes.len());
                for mode in [Utf8::All, Utf8::Kept, Utf8::Built] {
                    let step = |f: &dyn Fn(&mut Reader<'_>) -> Decoded<()>| {
                        let mut r = Reader::checking(bytes, mode);
                        r.bytes(from).expect("within");
                        let got = f(&mut r);
                        (got, r.position())
                    };
                    prop_assert_eq!(
                        step(&|r| skip_kept_payload(r, v)),
                        step(&|r| r.keeping(|r| skip_payload(r, v)))
                    );
                }
            }
        }
    }

    /// Every first byte of every variant's payload, followed by ASCII and by bytes that are
    /// not: [`skip_kept_payload`] (its table of lengths) steps over what the plain way steps
    /// over, or fails where it fails.
    #[test]
    fn every_first_byte_of_every_variant_is_stepped_over_as_the_plain_way() {
        for v in 0..=VARIANTS {
            for first in 0..=u8::MAX {
                for after in [b'a', 0xC3, 0x80] {
                    let mut bytes = vec![first];
                    bytes.resize(300, after);
                    for mode in [Utf8::All, Utf8::Kept, Utf8::Built] {
                        let step = |f: &dyn Fn(&mut Reader<'_>) -> Decoded<()>| {
                            let mut r = Reader::checking(&bytes, mode);
                            let got = f(&mut r);
                            (got, r.position())
                        };
                        assert_eq!(
                            step(&|r| skip_kept_payload(r, v)),
                            step(&|r| r.keeping(|r| skip_payload(r, v))),
                            "variant {v}, first byte {first}, then {after:#x}, {mode:?}"
                        );
                    }
                }
            }
        }
    }

    /// [`ascii_prefix`] is `is_ascii` of the first `n` bytes, at every length to 32 and past
    /// it, a high bit at every place.
    #[test]
    fn an_ascii_prefix_is_its_bytes_checked_one_by_one() {
        for high in 0..=32 {
            let mut window = [b'a'; 32];
            if let Some(b) = window.get_mut(high) {
                *b = 0xC3;
            }
            for n in 0..=40 {
                let want = n <= 32 && window[..n.min(32)].is_ascii();
                assert_eq!(ascii_prefix(&window, n), want, "{n} bytes, high at {high}");
            }
        }
    }

    proptest::proptest! {
        /// [`extend_from`] appends what `extend_from_slice` of the same range does, whatever
        /// the piece's size, runs short and long, near the end of their bytes and not.
        #[test]
        fn extend_from_is_extend_from_slice(
            src in prop::collection::vec(any::<u8>(), 0..200),
            before in prop::collection::vec(any::<u8>(), 0..8),
            from in any::<prop::sample::Index>(),
            len in 0usize..80,
        ) {
            let from = from.index(src.len() + 1);
            let to = (from + len).min(src.len());
            let mut want = before.clone();
            want.extend_from_slice(&src[from..to]);
            for got in [
                {
                    let mut got = before.clone();
                    extend_from::<32>(&mut got, &src, from, to);
                    got
                },
                {
                    let mut got = before.clone();
                    extend_from::<64>(&mut got, &src, from, to);
                    got
                },
            ] {
                prop_assert_eq!(&got, &want);
            }
        }
    }

    /// [`extend_short`] appends what `extend_from_slice` does, at every length it gathers
    /// and past them.
    #[test]
    fn extend_short_is_extend_from_slice() {
        let src: Vec<u8> = (1..=50).collect();
        for n in 0..=src.len() {
            for before in [0usize, 3] {
                let mut want = vec![0xAA; before];
                let mut got = want.clone();
                want.extend_from_slice(&src[..n]);
                extend_short(&mut got, &src[..n]);
                assert_eq!(got, want, "{n} bytes after {before}");
            }
        }
    }

    /// [`plain_shape`]'s range is its definition: `lww` alone (no `once`, no `adds`), either
    /// unset or a set of a known variant.
    #[test]
    fn plain_shape_is_its_definition() {
        for b in 0..=u8::MAX {
            let want = b & !SHAPE_LWW == 0
                && b != SHAPE_NO_LWW
                && (b == SHAPE_UNSET || u32::from(b - SHAPE_SET) < VARIANTS);
            assert_eq!(plain_shape(b), want, "shape {b:#x}");
        }
    }

    /// A plain set's variant is read from exactly the shape bytes [`plain_shape`] takes for a
    /// set, and is the variant [`shaped_state`] reads.
    #[test]
    fn a_plain_set_variant_is_that_of_its_shape() {
        for b in 0..=u8::MAX {
            let want = (plain_shape(b) && b != SHAPE_UNSET).then(|| u32::from(b - SHAPE_SET));
            assert_eq!(plain_set_variant(b), want, "shape {b:#x}");
        }
    }

    /// [`plain_variant`] of a plain shape is its set's variant, or `u8::MAX` for a removal.
    #[test]
    fn a_plain_variant_is_the_set_variant_or_a_removal() {
        for b in (0..=u8::MAX).filter(|b| plain_shape(*b)) {
            let want = plain_set_variant(b).map_or(u8::MAX, |v| v as u8);
            assert_eq!(plain_variant(b), want, "shape {b:#x}");
        }
    }

    /// A set's value read for its compact state: the variant's one byte as this encoder
    /// writes it, a longer varint form (another encoder's) read alike, an unknown variant or no
    /// bytes refused.
    #[test]
    fn a_set_shape_reads_its_variant_in_either_form() {
        let mut short = Vec::new();
        Value::Int(5).put(&mut short);
        let (shape, payload) = set_shaped(&short).unwrap();
        assert_eq!(shape, SHAPE_SET + 1);
        assert_eq!(payload, &short[1..]);
        let mut long = vec![251, short[0], 0];
        long.extend_from_slice(&short[1..]);
        assert_eq!(set_shaped(&long).unwrap(), (shape, payload));
        assert!(set_shaped(&[VARIANTS as u8]).is_err());
        assert!(set_shaped(&[251, VARIANTS as u8, 0]).is_err());
        assert!(set_shaped(&[]).is_err());
    }
}
