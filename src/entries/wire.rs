//! The primitives of the profile record codec: bincode 2's `standard()` encoding of integers,
//! strings, options and sequences (docs/format.md), written by [`Wire::put`] straight into a
//! `Vec` and read back by [`Reader`].
//!
//! bincode's derived encoder sends every primitive through its `Writer` trait one slice at a
//! time; on a profile of 40 properties that was a quarter of an identify call. The tests below
//! prove byte equality with bincode on random values, so stores written by the bincode-derived
//! codec of earlier versions read back unchanged.
//!
//! [`Reader`] is bounded: it never allocates from a length it has not checked against the bytes
//! left (every item takes at least one byte), never panics, and reports where it stopped.

use crate::types::value::CompactString;

/// A value that writes its bincode 2 `standard()` encoding (varint integers, little endian).
pub(crate) trait Wire {
    /// Append the encoding to `out`.
    fn put(&self, out: &mut Vec<u8>);
}

/// bincode's unsigned varint: < 251 in one byte, else a marker and the fixed-width value.
#[inline(always)]
pub(crate) fn put_u64(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
    } else {
        put_u64_wide(out, v);
    }
}

/// [`put_u64`] of a value of 251 or more (out of line: most integers a record holds are
/// small).
#[inline(never)]
fn put_u64_wide(out: &mut Vec<u8>, v: u64) {
    if v <= u16::MAX as u64 {
        out.push(251);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u32::MAX as u64 {
        out.push(252);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

#[inline]
pub(crate) fn put_u128(out: &mut Vec<u8>, v: u128) {
    match u64::try_from(v) {
        Ok(small) => put_u64(out, small),
        Err(_) => {
            out.push(254);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// bincode's signed varint: zigzag, then [`put_u64`].
#[inline]
pub(crate) fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

/// [`put_u64`]'s bytes, its wide forms written inline, for a writer whose integers are mostly
/// wide: a history step's times and arrival orders (microseconds since the epoch), four to a
/// step and two to each stamp of its table, which `put_u64` writes out of line. The widest
/// form is written whole, then cut to the form's length (its bytes are little-endian, so the
/// cut keeps the value's low bytes).
#[inline(always)]
pub(crate) fn put_u64_inline(out: &mut Vec<u8>, v: u64) {
    if v < 251 {
        out.push(v as u8);
        return;
    }
    let (marker, len) = if v <= u64::from(u16::MAX) {
        (251, 2)
    } else if v <= u64::from(u32::MAX) {
        (252, 4)
    } else {
        (253, 8)
    };
    let [b0, b1, b2, b3, b4, b5, b6, b7] = v.to_le_bytes();
    let at = out.len();
    out.extend_from_slice(&[marker, b0, b1, b2, b3, b4, b5, b6, b7]);
    out.truncate(at + 1 + len);
}

/// The marker byte of `v`'s varint and how many bytes of `v` follow it (a value below 251 is
/// its own marker, and nothing follows).
#[inline(always)]
pub(crate) fn varint_form(v: u64) -> (u8, usize) {
    if v < 251 {
        (v as u8, 0)
    } else if v <= u64::from(u16::MAX) {
        (251, 2)
    } else if v <= u64::from(u32::MAX) {
        (252, 4)
    } else {
        (253, 8)
    }
}

/// [`put_u64_inline`] of `a`, then of `b`, in one append: both widest forms put together
/// in a word on the stack (`b`'s right after `a`'s length), appended whole, then cut to the
/// two forms' length. A history step's stamps are such pairs (a time and an arrival order,
/// nearly always wide): one capacity check and one length stored instead of two each.
#[inline(always)]
pub(crate) fn put_two_inline(out: &mut Vec<u8>, a: u64, b: u64) {
    let ((ma, la), (mb, lb)) = (varint_form(a), varint_form(b));
    let mut w = [0u8; 18];
    let [a0, a1, a2, a3, a4, a5, a6, a7] = a.to_le_bytes();
    let [b0, b1, b2, b3, b4, b5, b6, b7] = b.to_le_bytes();
    if let Some(first) = w.first_chunk_mut::<9>() {
        *first = [ma, a0, a1, a2, a3, a4, a5, a6, a7];
    }
    // `la` is at most 8: the second form's nine bytes end within the word.
    if let Some(second) = w
        .get_mut(1 + la..10 + la)
        .and_then(|s| <&mut [u8; 9]>::try_from(s).ok())
    {
        *second = [mb, b0, b1, b2, b3, b4, b5, b6, b7];
    }
    let at = out.len();
    out.extend_from_slice(&w);
    out.truncate(at + 2 + la + lb);
}

/// [`put_two_inline`]'s bytes of `a` and `b` in a word, and their length (for a writer that
/// puts them together with other bytes in one append of its own). The two keep a body each:
/// `put_two_inline` written as this plus one append cost ~25 instructions a call more in
/// `history::encode_into` and in `put_full_parts` (callgrind on the proxy, stop 65).
#[inline(always)]
pub(crate) fn two_inline_word(a: u64, b: u64) -> ([u8; 18], usize) {
    let ((ma, la), (mb, lb)) = (varint_form(a), varint_form(b));
    let mut w = [0u8; 18];
    let [a0, a1, a2, a3, a4, a5, a6, a7] = a.to_le_bytes();
    let [b0, b1, b2, b3, b4, b5, b6, b7] = b.to_le_bytes();
    if let Some(first) = w.first_chunk_mut::<9>() {
        *first = [ma, a0, a1, a2, a3, a4, a5, a6, a7];
    }
    // `la` is at most 8: the second form's nine bytes end within the word.
    if let Some(second) = w
        .get_mut(1 + la..10 + la)
        .and_then(|s| <&mut [u8; 9]>::try_from(s).ok())
    {
        *second = [mb, b0, b1, b2, b3, b4, b5, b6, b7];
    }
    (w, 2 + la + lb)
}

/// Bytes put together on the stack and appended to a buffer in one write ([`Inline::append`]:
/// one capacity check and one length stored, instead of one each a field), each integer in
/// the bytes [`put_u64`] writes for it. Each field is written whole at the cursor (a varint's
/// nine bytes, a pair's eighteen) and the cursor moved by its length, so nothing branches on
/// a value's width; `N` must hold the widest form of every field written (a field that would
/// not fit is a bug: debug builds assert, release builds drop it and [`Inline::append`] then
/// writes nothing).
pub(crate) struct Inline<const N: usize> {
    w: [u8; N],
    at: usize,
}

impl<const N: usize> Inline<N> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        Inline { w: [0; N], at: 0 }
    }

    /// A byte.
    #[inline(always)]
    pub(crate) fn byte(&mut self, b: u8) {
        self.fixed(&[b], 1);
    }

    /// `v` as [`put_u64`] writes it.
    #[inline(always)]
    pub(crate) fn varint(&mut self, v: u64) {
        let (m, l) = varint_form(v);
        let [b0, b1, b2, b3, b4, b5, b6, b7] = v.to_le_bytes();
        self.fixed(&[m, b0, b1, b2, b3, b4, b5, b6, b7], 1 + l);
    }

    /// `a`, then `b`, as [`put_two_inline`] writes them.
    #[inline(always)]
    pub(crate) fn two(&mut self, a: u64, b: u64) {
        let (w, n) = two_inline_word(a, b);
        self.fixed(&w, n);
    }

    /// `piece` written at the cursor (its spare bytes are overwritten by the next field or
    /// cut by `append`), the cursor moved by `len`.
    #[inline(always)]
    fn fixed<const P: usize>(&mut self, piece: &[u8; P], len: usize) {
        match self
            .w
            .get_mut(self.at..self.at + P)
            .and_then(|s| <&mut [u8; P]>::try_from(s).ok())
        {
            Some(to) => {
                *to = *piece;
                self.at += len;
            }
            None => {
                debug_assert!(
                    false,
                    "an inline word of {N} bytes holds no {P} more at {}",
                    self.at
                );
                self.at = N + 1;
            }
        }
    }

    /// Append the fields written.
    #[inline(always)]
    pub(crate) fn append(&self, out: &mut Vec<u8>) {
        if self.at <= N {
            let start = out.len();
            out.extend_from_slice(&self.w);
            out.truncate(start + self.at);
        }
    }
}

/// [`put_i64`]'s bytes (zigzag, then the varint), through [`put_u64_inline`] (the history
/// step writes its signed times in pairs, [`put_two_inline`]; the tests keep this form).
#[cfg(test)]
#[inline(always)]
pub(crate) fn put_i64_inline(out: &mut Vec<u8>, v: i64) {
    put_u64_inline(out, zigzag(v));
}

/// bincode's zigzag of a signed integer: the unsigned value its varint holds.
#[inline(always)]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Zigzag for i128, then the unsigned varint.
#[inline]
pub(crate) fn put_i128(out: &mut Vec<u8>, v: i128) {
    put_u128(out, ((v << 1) ^ (v >> 127)) as u128);
}

/// An enum variant index (bincode derive: a u32 varint).
#[inline]
pub(crate) fn put_variant(out: &mut Vec<u8>, index: u32) {
    put_u64(out, index as u64);
}

impl Wire for u32 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, *self as u64);
    }
}

impl Wire for u64 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, *self);
    }
}

impl Wire for i64 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_i64(out, *self);
    }
}

impl Wire for f64 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl Wire for bool {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl Wire for str {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, self.len() as u64);
        out.extend_from_slice(self.as_bytes());
    }
}

impl Wire for String {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        self.as_str().put(out);
    }
}

impl Wire for CompactString {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        self.as_str().put(out);
    }
}

impl<T: Wire> Wire for Option<T> {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                v.put(out);
            }
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_u64(out, self.len() as u64);
        for v in self {
            v.put(out);
        }
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        self.0.put(out);
        self.1.put(out);
    }
}

/// Strictly increasing `u32` names (property name numbers) written as gaps: the first as it
/// is, each next as its distance from the previous one (>= 1). The one rule for full records
/// and history steps; [`Names::read`] refuses a gap of 0 (names out of order) and a name past
/// `u32::MAX`.
#[derive(Debug, Default)]
pub(crate) struct Names {
    prev: Option<u32>,
}

impl Names {
    /// Write `name` (greater than the previous one written).
    #[inline]
    pub(crate) fn put(&mut self, out: &mut Vec<u8>, name: u32) {
        let gap = match self.prev {
            None => name,
            Some(prev) => name.wrapping_sub(prev),
        };
        self.prev = Some(name);
        put_u64(out, u64::from(gap));
    }

    /// Note `name` as written: its bytes were copied from a record whose name before it is the
    /// one written before here.
    #[inline]
    pub(crate) fn passed(&mut self, name: u32) {
        self.prev = Some(name);
    }

    /// Read the next name.
    #[inline]
    pub(crate) fn read(&mut self, r: &mut Reader<'_>) -> Decoded<u32> {
        let gap = r.u32()?;
        let name = match self.prev {
            None => gap,
            Some(_) if gap == 0 => return Err(r.error("property names out of order")),
            Some(prev) => prev
                .checked_add(gap)
                .ok_or_else(|| r.error("property name beyond 32 bits"))?,
        };
        self.prev = Some(name);
        Ok(name)
    }
}

/// Why a record did not decode: the byte offset within the record, and what was wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError {
    /// Offset within the record's data.
    pub at: usize,
    /// What was wrong.
    pub reason: &'static str,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (at byte {} of the record)", self.reason, self.at)
    }
}

/// Result of a [`Reader`] step.
pub(crate) type Decoded<T> = std::result::Result<T, DecodeError>;

/// A stamp table's distance from one stamp to the next ([`Reader::stamp_delta`]): the event
/// times' and the arrival orders'. The tests' reference: the writer reads the short ones by
/// [`Reader::stamp_delta_short`], any other one by `Reader::u64` and `Reader::i128`
/// (`values::stamp_next`).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StampDelta {
    /// Both read from forms below 2^32 (nearly always).
    Short(u64, i64),
    /// Any other forms.
    Wide(u64, i128),
}

#[cfg(test)]
impl StampDelta {
    /// Both distances, the order's in 128 bits.
    pub(crate) fn pair(self) -> (u64, i128) {
        match self {
            StampDelta::Short(dt, d) => (dt, i128::from(d)),
            StampDelta::Wide(dt, d) => (dt, d),
        }
    }
}

/// Which strings a [`Reader`] checks for UTF-8. A string it builds ([`Reader::str`]) always
/// is: the modes differ only in the strings it steps over ([`Reader::skip_str`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Utf8 {
    /// Every string: bytes read the first time.
    #[default]
    All,
    /// The strings stepped over to be kept as bytes ([`Reader::keeping`]), not the others: the
    /// writer's partial fold of records read from the log (docs/architecture.md, "The writer
    /// cache"). A state it steps over is never built from these bytes without being decoded,
    /// and so checked, first; one it keeps as bytes may be copied into a history step.
    Kept,
    /// Only the strings built: bytes that decoded before (the writer cache's).
    Built,
}

/// A bounded reader of the encoding [`Wire`] writes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
    /// Which strings stepped over are checked for UTF-8.
    utf8: Utf8,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader::checking(buf, Utf8::All)
    }

    /// A reader of bytes that decoded before ([`Utf8::Built`]).
    pub(crate) fn checked_before(buf: &'a [u8]) -> Reader<'a> {
        Reader::checking(buf, Utf8::Built)
    }

    /// A reader that checks the strings `utf8` says.
    pub(crate) fn checking(buf: &'a [u8], utf8: Utf8) -> Reader<'a> {
        Reader { buf, at: 0, utf8 }
    }

    /// Run `f`, which steps over bytes the caller keeps (`entries::raw`), checking their
    /// strings as bytes read the first time are checked when the reader is in [`Utf8::Kept`].
    pub(crate) fn keeping<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        let mode = self.utf8;
        if mode == Utf8::Kept {
            self.utf8 = Utf8::All;
        }
        let out = f(self);
        self.utf8 = mode;
        out
    }

    /// The error `reason` at the current position.
    pub(crate) fn error(&self, reason: &'static str) -> DecodeError {
        DecodeError {
            at: self.at,
            reason,
        }
    }

    /// Bytes read so far.
    pub(crate) fn position(&self) -> usize {
        self.at
    }

    /// All the bytes read from, those after the position too (for a fixed-size copy of a run
    /// read: `values::extend_from`).
    pub(crate) fn whole(&self) -> &'a [u8] {
        self.buf
    }

    /// The bytes read since position `from` (an earlier [`Reader::position`]).
    #[inline]
    pub(crate) fn since(&self, from: usize) -> &'a [u8] {
        &self.buf[from.min(self.at)..self.at]
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.at
    }

    /// Succeed only if every byte was read.
    pub(crate) fn finish(&self) -> Decoded<()> {
        if self.at == self.buf.len() {
            Ok(())
        } else {
            Err(self.error("trailing bytes after the record"))
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Decoded<&'a [u8]> {
        if n <= self.remaining() {
            let b = &self.buf[self.at..self.at + n];
            self.at += n;
            Ok(b)
        } else {
            Err(self.ends_early())
        }
    }

    #[cold]
    fn ends_early(&self) -> DecodeError {
        self.error("record ends early")
    }

    /// The next `n` bytes as they are.
    #[inline]
    pub(crate) fn bytes(&mut self, n: usize) -> Decoded<&'a [u8]> {
        self.take(n)
    }

    /// The next `n` bytes, if there are that many, not stepped over.
    #[inline]
    pub(crate) fn peek(&self, n: usize) -> Option<&'a [u8]> {
        self.buf.get(self.at..self.at.checked_add(n)?)
    }

    fn array<const N: usize>(&mut self) -> Decoded<[u8; N]> {
        let b = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Decoded<u8> {
        match self.buf.get(self.at) {
            Some(&b) => {
                self.at += 1;
                Ok(b)
            }
            None => Err(self.ends_early()),
        }
    }

    /// An unsigned varint ([`put_u64`]).
    #[inline(always)]
    pub(crate) fn u64(&mut self) -> Decoded<u64> {
        if let Some(&b) = self.buf.get(self.at)
            && b < 251
        {
            self.at += 1;
            return Ok(u64::from(b));
        }
        self.u64_wide()
    }

    /// [`Reader::u64`] past its one-byte form (out of line: most integers are small).
    #[inline(never)]
    fn u64_wide(&mut self) -> Decoded<u64> {
        match self.u8()? {
            b @ 0..=250 => Ok(u64::from(b)),
            251 => Ok(u64::from(u16::from_le_bytes(self.array()?))),
            252 => Ok(u64::from(u32::from_le_bytes(self.array()?))),
            253 => Ok(u64::from_le_bytes(self.array()?)),
            _ => Err(self.error("integer marker out of range")),
        }
    }

    #[inline]
    pub(crate) fn u32(&mut self) -> Decoded<u32> {
        let v = self.u64()?;
        u32::try_from(v).map_err(|_| self.error("integer beyond 32 bits"))
    }

    /// A signed varint ([`put_i64`]).
    #[inline]
    pub(crate) fn i64(&mut self) -> Decoded<i64> {
        let v = self.u64()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// A signed 128-bit varint ([`put_i128`]).
    #[inline(always)]
    pub(crate) fn i128(&mut self) -> Decoded<i128> {
        if let Some(&b) = self.buf.get(self.at)
            && b < 251
        {
            self.at += 1;
            return Ok(i128::from(b >> 1) ^ -i128::from(b & 1));
        }
        self.i128_wide()
    }

    /// [`Reader::i128`] past its one-byte form (out of line, as [`Reader::u64_wide`]).
    #[inline(never)]
    fn i128_wide(&mut self) -> Decoded<i128> {
        let v: u128 = match self.u8()? {
            b @ 0..=250 => u128::from(b),
            251 => u128::from(u16::from_le_bytes(self.array()?)),
            252 => u128::from(u32::from_le_bytes(self.array()?)),
            253 => u128::from(u64::from_le_bytes(self.array()?)),
            254 => u128::from_le_bytes(self.array()?),
            _ => return Err(self.error("integer marker out of range")),
        };
        Ok(((v >> 1) as i128) ^ -((v & 1) as i128))
    }

    /// Two unsigned varints ([`Reader::u64`] twice: what [`put_two_inline`] writes, a stamp
    /// whole), read in one step when each is in any of its forms and eighteen bytes are left
    /// (the first stamp of a table: a time and an arrival order, both wide); otherwise one by
    /// one.
    #[inline]
    pub(crate) fn two_u64(&mut self) -> Decoded<(u64, u64)> {
        if let Some(two) = self.two_u64_forms() {
            return Ok(two);
        }
        Ok((self.u64()?, self.u64()?))
    }

    /// [`Reader::two_u64`]'s one step: two varints, each in one of [`Reader::u64`]'s forms
    /// (markers up to 253), read as it reads them when eighteen bytes are left; `None`, nothing
    /// read, otherwise. [`Reader::i128`] reads those forms as `u64` does, so the second may be
    /// an `i128`'s (its zigzag undone by the caller).
    #[inline(always)]
    pub(crate) fn two_u64_forms(&mut self) -> Option<(u64, u64)> {
        if let Some(b) = self.buf.get(self.at..self.at + 18) {
            let form = |b: &[u8]| -> Option<(u64, usize)> {
                match b[0] {
                    v @ 0..=250 => Some((u64::from(v), 1)),
                    251 => Some((u64::from(u16::from_le_bytes([b[1], b[2]])), 3)),
                    252 => Some((u64::from(u32::from_le_bytes([b[1], b[2], b[3], b[4]])), 5)),
                    253 => Some((
                        u64::from_le_bytes([b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]]),
                        9,
                    )),
                    _ => None,
                }
            };
            if let Some((a, n)) = form(b)
                && let Some((c, m)) = form(&b[n..])
            {
                self.at += n + m;
                return Some((a, c));
            }
        }
        None
    }

    /// A stamp table's distance from one stamp to the next: [`Reader::u64`] (the event
    /// times') then [`Reader::i128`] (the arrival orders'), read in one step when each takes
    /// one to five bytes, its marker and value as those read them (the distances of W1's
    /// tables), and ten bytes are left: [`StampDelta::Short`], both below 2^32, the order's
    /// zigzag undone in 64 bits; otherwise by those two, [`StampDelta::Wide`].
    #[cfg(test)]
    pub(crate) fn stamp_delta(&mut self) -> Decoded<StampDelta> {
        if let Some((dt, d)) = self.stamp_delta_short() {
            return Ok(StampDelta::Short(dt, d));
        }
        Ok(StampDelta::Wide(self.u64()?, self.i128()?))
    }

    /// A stamp table's distance from one stamp to the next, read in one step when each of its
    /// two varints (the event times' `Reader::u64`, the arrival orders' `Reader::i128`) takes
    /// one to five bytes, its marker and value as those read them, and ten bytes are left: both
    /// below 2^32, the order's zigzag undone in 64 bits. `None`, nothing read, otherwise (the
    /// caller reads them one by one: `values::stamp_next`).
    #[inline(always)]
    pub(crate) fn stamp_delta_short(&mut self) -> Option<(u64, i64)> {
        if let Some(b) = self.buf.get(self.at..self.at + 10) {
            let short = |b: &[u8]| -> Option<(u64, usize)> {
                match b[0] {
                    v @ 0..=250 => Some((u64::from(v), 1)),
                    251 => Some((u64::from(u16::from_le_bytes([b[1], b[2]])), 3)),
                    252 => Some((u64::from(u32::from_le_bytes([b[1], b[2], b[3], b[4]])), 5)),
                    _ => None,
                }
            };
            if let Some((dt, n)) = short(b)
                && let Some((zigzag, m)) = short(&b[n..])
            {
                self.at += n + m;
                // Below 2^32: the halved value and the sign fit an i64.
                let d = (zigzag >> 1) as i64 ^ -((zigzag & 1) as i64);
                return Some((dt, d));
            }
        }
        None
    }

    /// Step over an unsigned or signed varint ([`put_u64`], [`put_i64`]) without building it:
    /// the same bytes [`Reader::u64`] reads, refused where it refuses them.
    #[inline(always)]
    pub(crate) fn skip_varint(&mut self) -> Decoded<()> {
        let n = match self.buf.get(self.at) {
            Some(&b) if b < 251 => 1,
            Some(251) => 3,
            Some(252) => 5,
            Some(253) => 9,
            Some(_) => return Err(self.error("integer marker out of range")),
            None => return Err(self.ends_early()),
        };
        self.take(n).map(|_| ())
    }

    pub(crate) fn f64(&mut self) -> Decoded<f64> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    pub(crate) fn bool(&mut self) -> Decoded<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.error("boolean other than 0 or 1")),
        }
    }

    /// An option's tag: whether a value follows.
    #[inline]
    pub(crate) fn some(&mut self) -> Decoded<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.error("option tag other than 0 or 1")),
        }
    }

    /// A sequence length whose items take at least `min_item` bytes each: refused when the
    /// bytes left cannot hold that many, so a damaged length never reserves memory.
    #[inline]
    pub(crate) fn len(&mut self, min_item: usize) -> Decoded<usize> {
        let n = self.u64()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.remaining() / min_item.max(1) => Ok(n),
            _ => Err(self.error("sequence length beyond the record")),
        }
    }

    pub(crate) fn str(&mut self) -> Decoded<&'a str> {
        let n = self.len(1)?;
        let start = self.at;
        let b = self.take(n)?;
        std::str::from_utf8(b).map_err(|_| DecodeError {
            at: start,
            reason: "string is not UTF-8",
        })
    }

    /// [`Reader::str`], the string taken as `known` when its bytes are `known`'s: text
    /// already, so without a UTF-8 check (a call's identifier, found in the record of the
    /// profile it names). A string that is not UTF-8 is never `known`'s bytes: the same
    /// string or the same error as `str`.
    #[inline]
    pub(crate) fn str_known<'k>(&mut self, known: Option<&'k str>) -> Decoded<&'k str>
    where
        'a: 'k,
    {
        let n = self.len(1)?;
        let start = self.at;
        let b = self.take(n)?;
        if let Some(k) = known
            && k.as_bytes() == b
        {
            return Ok(k);
        }
        std::str::from_utf8(b).map_err(|_| DecodeError {
            at: start,
            reason: "string is not UTF-8",
        })
    }

    /// Step over a string: checked as [`Reader::str`] checks it, but for its UTF-8 unless the
    /// reader checks every string ([`Utf8`]).
    #[inline]
    pub(crate) fn skip_str(&mut self) -> Decoded<()> {
        if self.utf8 != Utf8::All {
            let n = self.len(1)?;
            self.take(n).map(|_| ())
        } else {
            self.str().map(|_| ())
        }
    }

    /// A string as a [`CompactString`]: no allocation when it is short (up to 24 bytes).
    pub(crate) fn compact(&mut self) -> Decoded<CompactString> {
        Ok(CompactString::from(self.str()?))
    }

    pub(crate) fn string(&mut self) -> Decoded<String> {
        Ok(self.str()?.to_owned())
    }

    pub(crate) fn opt_string(&mut self) -> Decoded<Option<String>> {
        Ok(if self.some()? {
            Some(self.string()?)
        } else {
            None
        })
    }
}

/// Put `s` into `slot`, reusing the buffer it holds if any, else a spare one
/// ([`keep_string`]).
pub(crate) fn string_into(s: &str, slot: &mut Option<String>) {
    match slot {
        Some(buf) => {
            buf.clear();
            buf.push_str(s);
        }
        None => *slot = Some(string_of(s)),
    }
}

/// `s` in a spare buffer ([`keep_string`]) if the thread has one, else in a new one.
pub(crate) fn string_of(s: &str) -> String {
    let spare = SPARE_STRINGS
        .try_with(|p| p.borrow_mut().pop())
        .ok()
        .flatten();
    match spare {
        Some(mut buf) => {
            buf.push_str(s);
            buf
        }
        None => s.to_owned(),
    }
}

/// Empty `slot`, its buffer kept for the thread's next [`string_into`] / [`string_of`].
pub(crate) fn string_gone(slot: &mut Option<String>) {
    if let Some(buf) = slot.take() {
        keep_string(buf);
    }
}

/// Keep `buf`, emptied, for the thread's next string ([`string_of`]), unless the thread keeps
/// [`SPARE_STRINGS_MAX`] already or it is large. A decode of a profile's identifiers into the
/// buffers another profile's left (the writer's pooled records) then allocates nothing when
/// one has an identifier the other has not (an email, a company, more anonymous ids).
pub(crate) fn keep_string(mut buf: String) {
    // An unallocated buffer saves nothing and would take a place.
    if buf.capacity() != 0 && buf.capacity() <= SPARE_STRING_BYTES {
        buf.clear();
        let _ = SPARE_STRINGS.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < SPARE_STRINGS_MAX {
                p.push(buf);
            }
        });
    }
}

/// Most spare string buffers a thread keeps ([`keep_string`]).
const SPARE_STRINGS_MAX: usize = 8;
/// The largest spare string buffer kept, in bytes of capacity.
const SPARE_STRING_BYTES: usize = 256;

thread_local! {
    /// The thread's spare string buffers ([`keep_string`]).
    static SPARE_STRINGS: std::cell::RefCell<Vec<String>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// The inline varints write `put_u64`'s and `put_i64`'s bytes at every form's edges.
    #[test]
    fn inline_varints_write_the_wire_bytes() {
        use super::{put_i64, put_i64_inline, put_u64, put_u64_inline};
        for v in [
            0,
            1,
            250,
            251,
            255,
            256,
            u64::from(u16::MAX),
            u64::from(u16::MAX) + 1,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX - 1,
            u64::MAX,
        ] {
            let (mut got, mut want) = (vec![1u8], vec![1u8]);
            put_u64_inline(&mut got, v);
            put_u64(&mut want, v);
            assert_eq!(got, want, "{v}");
            for s in [
                v as i64,
                -(v as i64),
                (v as i64).wrapping_neg().wrapping_sub(1),
            ] {
                let (mut got, mut want) = (Vec::new(), Vec::new());
                put_i64_inline(&mut got, s);
                put_i64(&mut want, s);
                assert_eq!(got, want, "{s}");
            }
        }
        for s in [i64::MIN, i64::MAX, -1] {
            let (mut got, mut want) = (Vec::new(), Vec::new());
            put_i64_inline(&mut got, s);
            put_i64(&mut want, s);
            assert_eq!(got, want, "{s}");
        }
    }

    /// Two varints in one append write what two `put_u64`s write, every pair of forms at
    /// their edges (after bytes already there).
    #[test]
    fn two_inline_varints_write_the_wire_bytes() {
        use super::{put_two_inline, put_u64};
        let edges = [
            0,
            250,
            251,
            u64::from(u16::MAX),
            u64::from(u16::MAX) + 1,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::MAX,
        ];
        for a in edges {
            for b in edges {
                let (mut got, mut want) = (vec![7u8; 3], vec![7u8; 3]);
                put_two_inline(&mut got, a, b);
                put_u64(&mut want, a);
                put_u64(&mut want, b);
                assert_eq!(got, want, "{a} {b}");
            }
        }
    }

    proptest! {
        /// As above, on random pairs of every length class.
        #[test]
        fn two_inline_varints_are_two_varints(a in wide_u64(), b in wide_u64()) {
            let (mut got, mut want) = (Vec::new(), Vec::new());
            super::put_two_inline(&mut got, a, b);
            super::put_u64(&mut want, a);
            super::put_u64(&mut want, b);
            prop_assert_eq!(got, want);
        }
    }

    use super::{Reader, Wire};

    fn bincode_bytes<T: bincode::Encode>(v: &T) -> Vec<u8> {
        bincode::encode_to_vec(v, bincode::config::standard()).unwrap()
    }

    fn wire_bytes<T: Wire>(v: &T) -> Vec<u8> {
        let mut out = Vec::new();
        v.put(&mut out);
        out
    }

    proptest! {
        #[test]
        fn integers_encode_exactly_as_bincode_and_read_back(u in any::<u64>(), i in any::<i64>(), small in 0u64..70_000) {
            prop_assert_eq!(wire_bytes(&u), bincode_bytes(&u));
            prop_assert_eq!(wire_bytes(&i), bincode_bytes(&i));
            prop_assert_eq!(wire_bytes(&small), bincode_bytes(&small));
            prop_assert_eq!(wire_bytes(&(small as u32)), bincode_bytes(&(small as u32)));
            prop_assert_eq!(Reader::new(&wire_bytes(&u)).u64().unwrap(), u);
            prop_assert_eq!(Reader::new(&wire_bytes(&i)).i64().unwrap(), i);
        }
    }

    /// A varint of each length class: one byte, `u16`, `u32`, `u64` (and, zigzagged, `u128`).
    fn wide_u64() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..251, 251u64..65_536, 65_536u64..1 << 32, any::<u64>()]
    }

    proptest! {
        /// `stamp_delta` reads what `u64` then `i128` read, stopping where they stop and
        /// refusing where they refuse: on what `put_u64` and `put_i128` write, with any bytes
        /// after (its one-step form needs ten), and on any bytes at all.
        #[test]
        fn a_stamp_delta_reads_as_its_two_varints(
            dt in wide_u64(),
            d in prop_oneof![
                (-125i128..126),
                (-40_000i128..40_000),
                any::<i64>().prop_map(i128::from),
                any::<i128>(),
            ],
            tail in prop::collection::vec(any::<u8>(), 0..12),
            noise in prop::collection::vec(any::<u8>(), 0..14),
        ) {
            let mut bytes = Vec::new();
            super::put_u64(&mut bytes, dt);
            super::put_i128(&mut bytes, d);
            let end = bytes.len();
            bytes.extend_from_slice(&tail);
            let mut r = Reader::new(&bytes);
            prop_assert_eq!(r.stamp_delta().unwrap().pair(), (dt, d));
            prop_assert_eq!(r.position(), end);
            for bytes in [&bytes[..end - 1], &noise[..]] {
                let (mut one, mut two) = (Reader::new(bytes), Reader::new(bytes));
                let got = one.stamp_delta().map(super::StampDelta::pair);
                let want = two.u64().and_then(|t| Ok((t, two.i128()?)));
                prop_assert_eq!(got.is_ok(), want.is_ok());
                if let (Ok(got), Ok(want)) = (got, want) {
                    prop_assert_eq!(got, want);
                    prop_assert_eq!(one.position(), two.position());
                }
            }
        }
    }

    proptest! {
        /// `skip_varint` steps over exactly what `u64` reads (and `i128` agrees with `i64` on
        /// what both read), refusing where it refuses, on any bytes.
        #[test]
        fn skipping_a_varint_takes_the_bytes_reading_it_takes(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let mut read = Reader::new(&bytes);
            let mut skipped = Reader::new(&bytes);
            let r = read.u64();
            let s = skipped.skip_varint();
            prop_assert_eq!(r.is_ok(), s.is_ok());
            if r.is_ok() {
                prop_assert_eq!(read.position(), skipped.position());
                let mut wide = Reader::new(&bytes);
                let mut narrow = Reader::new(&bytes);
                prop_assert_eq!(wide.i128().ok(), narrow.i64().ok().map(i128::from));
            }
        }
    }

    #[test]
    fn i128_boundaries_encode_exactly_as_bincode() {
        for v in [
            0i128,
            -1,
            1,
            i64::MAX as i128 + 1,
            i64::MIN as i128 - 1,
            i128::MAX,
            i128::MIN,
        ] {
            let mut out = Vec::new();
            super::put_i128(&mut out, v);
            assert_eq!(out, bincode_bytes(&v), "{v}");
            assert_eq!(Reader::new(&out).i128().unwrap(), v);
        }
    }
}
