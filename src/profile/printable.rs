//! Validation's byte scans of identifiers, eight bytes at a time: most `userId`s and emails
//! are short printable ASCII, and a byte-by-byte loop over them cost ~9 instructions a byte
//! on every call (a `userId` of 13 bytes ~120, the larger part of its check).

/// Eight copies of a byte.
const fn each(b: u8) -> u64 {
    u64::from_le_bytes([b; 8])
}

const HIGH: u64 = each(0x80);

/// The high bit of each byte of `x` (read little-endian) that is not printable ASCII
/// (0x21..=0x7E) or is `banned` (an ASCII byte). Exact for every word: a byte with its high
/// bit set is marked by `x` itself, so the word is refused whatever else is marked. For a
/// word of bytes below 0x80 none of the sums carries into the next byte (the largest,
/// 0x7F + 0x7F, is 0xFE), so each byte's mark depends on that byte only. (A byte of 0x80 or
/// more can carry into the next one's sum and clear its mark, but then the word is marked
/// already.)
#[inline(always)]
fn not_printable_or(x: u64, banned: u8) -> u64 {
    // b + 0x5F reaches 0x80 from b = 0x21 up: a clear high bit marks b < 0x21.
    let below_bang = !(x.wrapping_add(each(0x80 - 0x21)));
    // b + 1 reaches 0x80 only from b = 0x7F.
    let del = x.wrapping_add(each(1));
    // The low seven bits of b ^ banned are 0 only for `banned` (or `banned` + 0x80, marked
    // by `x`); 0 + 0x7F is the one sum of them below 0x80.
    let is_banned = !(((x ^ each(banned)) & !HIGH).wrapping_add(each(0x7F)));
    (x | below_bang | del | is_banned) & HIGH
}

/// The eight bytes of `b` from `at` as a little-endian word (`b` holds them: the callers'
/// bounds).
#[inline(always)]
fn word(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .and_then(|c| <[u8; 8]>::try_from(c).ok())
        .map_or(HIGH, u64::from_le_bytes)
}

/// Whether every byte of `b` is printable ASCII (0x21..=0x7E: no space, no control, nothing
/// past ASCII) and none is `banned` (an ASCII byte): what `b.iter().all(|&c| c > b' ' && c < 0x7F && c !=
/// banned)` says, eight bytes at a time (the last word overlapping the one before it when the
/// length is not a multiple of eight).
#[inline]
pub(crate) fn printable_without(b: &[u8], banned: u8) -> bool {
    debug_assert!(
        banned.is_ascii(),
        "printable_without: a banned byte past ASCII"
    );
    if b.len() < 8 {
        return b.iter().all(|&c| c > b' ' && c < 0x7F && c != banned);
    }
    let mut at = 0;
    while at + 8 < b.len() {
        if not_printable_or(word(b, at), banned) != 0 {
            return false;
        }
        at += 8;
    }
    not_printable_or(word(b, b.len() - 8), banned) == 0
}

/// The high bit of each byte of `x` that is `byte` (an ASCII byte): exact for every word (the
/// low seven bits of each byte are compared without a carry between bytes, and a byte with
/// its high bit set is never marked).
#[inline(always)]
fn marks_of(x: u64, byte: u8) -> u64 {
    !(((x ^ each(byte)) & !HIGH).wrapping_add(each(0x7F))) & !x & HIGH
}

/// The place of the first `byte` (an ASCII byte) in `b`: what
/// `b.iter().position(|&c| c == byte)` says, eight bytes at a time (the last word overlapping
/// the one before it, whose bytes held none).
#[inline]
pub(crate) fn find_byte(b: &[u8], byte: u8) -> Option<usize> {
    debug_assert!(byte.is_ascii(), "find_byte: a byte past ASCII");
    if b.len() < 8 {
        return b.iter().position(|&c| c == byte);
    }
    let mut at = 0;
    loop {
        let m = marks_of(word(b, at), byte);
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        if at + 8 >= b.len() {
            return None;
        }
        at = (at + 8).min(b.len() - 8);
    }
}

/// Whether `b` holds two `byte`s (an ASCII byte) next to each other: what
/// `b.windows(2).any(|w| w == [byte, byte])` says, eight bytes at a time. The words overlap
/// by one byte (a step of seven), so each pair of neighbours lies within one of them.
#[inline]
pub(crate) fn has_pair_of(b: &[u8], byte: u8) -> bool {
    debug_assert!(byte.is_ascii(), "has_pair_of: a byte past ASCII");
    if b.len() < 8 {
        return b.windows(2).any(|w| w[0] == byte && w[1] == byte);
    }
    let pair = |at: usize| {
        let m = marks_of(word(b, at), byte);
        m & (m >> 8) != 0
    };
    let mut at = 0;
    while at + 8 < b.len() {
        if pair(at) {
            return true;
        }
        at += 7;
    }
    pair(b.len() - 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain form it replaces.
    fn byte_by_byte(b: &[u8], banned: u8) -> bool {
        b.iter().all(|&c| c > b' ' && c < 0x7F && c != banned)
    }

    proptest! {
        /// Eight bytes at a time, as byte by byte: printable runs with any byte value placed
        /// anywhere, any banned byte, lengths across the word edges.
        #[test]
        fn eight_at_a_time_as_byte_by_byte(
            text in "[!-~]{0,40}",
            put in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            banned in prop_oneof![Just(b'@'), 0u8..0x80],
        ) {
            let mut b = text.into_bytes();
            if let Some((at, v)) = put && !b.is_empty() {
                let i = at.index(b.len());
                b[i] = v;
            }
            prop_assert_eq!(printable_without(&b, banned), byte_by_byte(&b, banned));
        }
    }

    proptest! {
        /// The first of a byte, and two of it side by side, found eight bytes at a time where
        /// a walk of the bytes (of the pairs) finds them: runs of dots and letters across the
        /// word edges, with any byte value placed anywhere.
        #[test]
        fn found_eight_at_a_time_as_by_a_walk(
            text in "[.a@]{0,40}",
            put in proptest::option::of((any::<prop::sample::Index>(), any::<u8>())),
            byte in prop_oneof![Just(b'.'), Just(b'@'), 0u8..0x80],
        ) {
            let mut b = text.into_bytes();
            if let Some((at, v)) = put && !b.is_empty() {
                let i = at.index(b.len());
                b[i] = v;
            }
            prop_assert_eq!(find_byte(&b, byte), b.iter().position(|&c| c == byte));
            prop_assert_eq!(
                has_pair_of(&b, byte),
                b.windows(2).any(|w| w[0] == byte && w[1] == byte)
            );
        }
    }

    /// Every byte value at every place of words and tails, once and before another.
    #[test]
    fn every_byte_found_at_every_place() {
        for len in 0usize..24 {
            for at in 0..len {
                for v in 0..=255u8 {
                    let mut b = vec![b'x'; len];
                    b[at] = v;
                    if at + 1 < len {
                        b[len - 1] = b'@';
                    }
                    for byte in [b'@', v & 0x7F] {
                        assert_eq!(
                            find_byte(&b, byte),
                            b.iter().position(|&c| c == byte),
                            "{len} {at} {v} {byte}"
                        );
                    }
                }
            }
        }
    }

    /// A pair at every place of words and tails, beside every byte value.
    #[test]
    fn every_pair_at_every_place() {
        for len in 0usize..24 {
            for at in 0..len.saturating_sub(1) {
                for v in [0u8, b'.', b'.' | 0x80, b'.' ^ 1, 0xFF, b'x'] {
                    let mut b = vec![b'x'; len];
                    b[at] = b'.';
                    b[at + 1] = v;
                    assert_eq!(
                        has_pair_of(&b, b'.'),
                        b.windows(2).any(|w| w == b".."),
                        "{len} {at} {v}"
                    );
                }
            }
        }
    }

    /// Every byte value at every place of one and of two words and a tail, against every
    /// banned byte that matters (printable ones, and one outside).
    #[test]
    fn every_byte_at_every_place() {
        for len in [8usize, 13, 16] {
            for at in 0..len {
                for v in 0..=255u8 {
                    for banned in [b'@', b'a', b'~', b'!', 0] {
                        let mut b = vec![b'x'; len];
                        b[at] = v;
                        assert_eq!(
                            printable_without(&b, banned),
                            byte_by_byte(&b, banned),
                            "{len} {at} {v} {banned}"
                        );
                    }
                }
            }
        }
    }
}
