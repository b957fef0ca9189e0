//! The codec of property values and property states inside profile records (docs/format.md,
//! "Profile record"): values as bincode 2 enums, states with their stamps as indexes into the
//! record's stamp table.

use super::wire::{Decoded, Reader, Wire, put_i128, put_u64, put_variant};
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
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            Value::Bool(b) => {
                put_variant(out, 0);
                b.put(out);
            }
            Value::Int(i) => {
                put_variant(out, 1);
                i.put(out);
            }
            Value::Float(f) => {
                put_variant(out, 2);
                f.put(out);
            }
            Value::Str(s) => {
                put_variant(out, 3);
                s.put(out);
            }
            Value::DateTime(t) => {
                put_variant(out, 4);
                t.put(out);
            }
            Value::Array(items) => {
                put_variant(out, 5);
                items.put(out);
            }
            Value::Object(fields) => {
                put_variant(out, 6);
                fields.put(out);
            }
            Value::Null => put_variant(out, 7),
        }
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
    Ok(match r.u32()? {
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
pub(crate) fn skip_value(r: &mut Reader<'_>) -> Decoded<()> {
    skip_value_at(r, 0)
}

fn skip_value_at(r: &mut Reader<'_>, depth: usize) -> Decoded<()> {
    if depth > MAX_NESTING {
        return Err(r.error("values nested too deep"));
    }
    match r.u32()? {
        0 => {
            r.bool()?;
        }
        1 | 4 => {
            r.i64()?;
        }
        2 => {
            r.f64()?;
        }
        3 => {
            r.str()?;
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
                r.str()?;
                skip_value_at(r, depth + 1)?;
            }
        }
        7 => {}
        _ => return Err(r.error("unknown value variant")),
    }
    Ok(())
}

/// A record's stamp table: its distinct stamps; properties refer to one by index, so the
/// properties one call set share one stamp instead of carrying a copy each.
#[derive(Debug, Default)]
pub(crate) struct StampTable(Vec<Stamp>, Order);

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
        let mut stamps: Vec<Stamp> = Vec::with_capacity(props.len().min(SMALL));
        let mut sorted = true;
        for p in props {
            each_stamp(p, |s| {
                if !sorted {
                    stamps.push(s);
                } else if let Err(i) = stamps.binary_search(&s) {
                    if stamps.len() < SMALL {
                        stamps.insert(i, s);
                    } else {
                        stamps.push(s);
                        sorted = false;
                    }
                }
            });
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
        let mut stamps = vec![first];
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
        let mut stamps = Vec::with_capacity(n);
        for _ in 0..n {
            stamps.push(stamp(r)?);
        }
        Ok(StampTable(stamps, Order::Sorted))
    }

    /// Write a length-prefixed table of stamps (after the first `skip`).
    pub(crate) fn put_from(&self, skip: usize, out: &mut Vec<u8>) {
        let rest = self.0.get(skip..).unwrap_or_default();
        put_u64(out, rest.len() as u64);
        Self::put_stamps(rest, out);
    }

    /// A table from stamps already read.
    pub(crate) fn from_stamps(stamps: Vec<Stamp>) -> StampTable {
        StampTable(stamps, Order::AsMet)
    }

    fn get(&self, r: &Reader<'_>, i: u32) -> Decoded<Stamp> {
        self.0
            .get(i as usize)
            .copied()
            .ok_or_else(|| r.error("property stamp index outside the stamp table"))
    }
}

impl Wire for StampTable {
    fn put(&self, out: &mut Vec<u8>) {
        self.put_from(0, out);
    }
}

/// Read one stamp: event time, arrival order.
pub(crate) fn stamp(r: &mut Reader<'_>) -> Decoded<Stamp> {
    let ts = r.i64()?;
    let order = r.u64()?;
    Ok(Stamp::new(Timestamp(ts), order))
}

/// Write one stamp.
pub(crate) fn put_stamp(s: Stamp, out: &mut Vec<u8>) {
    s.0.put(out);
    s.1.put(out);
}

fn each_stamp(p: &PropState, mut f: impl FnMut(Stamp)) {
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

/// Write a property state with its stamps as indexes into `table`.
pub(crate) fn put_state(p: &PropState, table: &StampTable, out: &mut Vec<u8>) {
    match &p.lww {
        None => out.push(0),
        Some((s, v)) => {
            out.push(1);
            table.index(s).put(out);
            v.put(out);
        }
    }
    match p.once.as_deref() {
        None => out.push(0),
        Some((s, v)) => {
            out.push(1);
            table.index(s).put(out);
            v.put(out);
        }
    }
    match p.adds.as_deref() {
        None => out.push(0),
        Some(a) => {
            out.push(1);
            put_i128(out, a.int);
            a.float.put(out);
            table.index(&a.first).put(out);
            table.index(&a.last).put(out);
        }
    }
}

/// Check a property state written by [`put_state`] and step over it without building it
/// (see [`skip_value`]).
pub(crate) fn skip_state(r: &mut Reader<'_>, table: &StampTable) -> Decoded<()> {
    if r.some()? {
        let i = r.u32()?;
        table.get(r, i)?;
        if r.some()? {
            skip_value(r)?;
        }
    }
    if r.some()? {
        let i = r.u32()?;
        table.get(r, i)?;
        skip_value(r)?;
    }
    if r.some()? {
        r.i128()?;
        if r.some()? {
            r.f64()?;
        }
        for _ in 0..2 {
            let i = r.u32()?;
            table.get(r, i)?;
        }
    }
    Ok(())
}

/// Read a property state written by [`put_state`] against the same table.
pub(crate) fn state(r: &mut Reader<'_>, table: &StampTable) -> Decoded<PropState> {
    let lww = if r.some()? {
        let s = {
            let i = r.u32()?;
            table.get(r, i)?
        };
        let v = if r.some()? { Some(value(r)?) } else { None };
        Some((s, v))
    } else {
        None
    };
    let once = if r.some()? {
        let s = {
            let i = r.u32()?;
            table.get(r, i)?
        };
        Some(Box::new((s, value(r)?)))
    } else {
        None
    };
    let adds = if r.some()? {
        let int = r.i128()?;
        let float = if r.some()? { Some(r.f64()?) } else { None };
        let first = {
            let i = r.u32()?;
            table.get(r, i)?
        };
        let last = {
            let i = r.u32()?;
            table.get(r, i)?
        };
        Some(Box::new(Adds {
            int,
            float,
            first,
            last,
        }))
    } else {
        None
    };
    Ok(PropState { lww, once, adds })
}
