//! The lookup form of an email, shared by the index (which looks emails up) and the profile
//! rules (which validate them).

use std::borrow::Cow;

/// The lookup form of an email: trimmed, lower-cased. Borrowed when `email` is that already
/// (nearly every call's: no allocation on the write path's look-up).
pub fn normalize_email(email: &str) -> Cow<'_, str> {
    let trimmed = trim_text(email);
    if trimmed.len() == email.len() && !lowering_may_change(email.as_bytes()) {
        return Cow::Borrowed(email);
    }
    Cow::Owned(trimmed.to_lowercase())
}

/// `s.trim()`, without its `char::is_whitespace` walk from either end when `s` starts and
/// ends with printable ASCII (nearly every identifier and email: nothing to trim).
#[inline]
pub(crate) fn trim_text(s: &str) -> &str {
    let printable = |b: Option<&u8>| b.is_some_and(|&b| b > b' ' && b < 0x7F);
    if printable(s.as_bytes().first()) && printable(s.as_bytes().last()) {
        s
    } else {
        s.trim()
    }
}

/// Whether `b` has a byte outside ASCII or an ASCII capital (when neither, lower-casing leaves
/// it as it is): eight bytes at a time, the write path looking up an email at every call that
/// names one.
fn lowering_may_change(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let x = u64::from_le_bytes(<[u8; 8]>::try_from(c).unwrap_or_default());
        if x & HIGH != 0 {
            return true;
        }
        // Every byte below 0x80: adding 0x80 - b'A' sets a byte's high bit from b'A' up,
        // adding 0x80 - (b'Z' + 1) from past b'Z' up, no carry crossing into the next byte.
        let from_a = x + 0x3F3F_3F3F_3F3F_3F3F;
        let past_z = x + 0x2525_2525_2525_2525;
        if from_a & !past_z & HIGH != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
}

#[cfg(test)]
mod tests {
    use super::{lowering_may_change, normalize_email, trim_text};
    use proptest::prelude::*;
    use std::borrow::Cow;

    proptest! {
        /// Eight bytes at a time, as byte by byte: every byte value at every place.
        #[test]
        fn lowering_may_change_as_byte_by_byte(
            b in proptest::collection::vec(any::<u8>(), 0..40),
            ascii in "[ -~]{0,40}",
        ) {
            for b in [&b[..], ascii.as_bytes()] {
                prop_assert_eq!(
                    lowering_may_change(b),
                    b.iter().any(|b| b.is_ascii_uppercase() || !b.is_ascii())
                );
            }
        }
    }

    proptest! {
        /// As trimming and lower-casing every time would.
        #[test]
        fn normalize_email_trims_and_lowers(
            e in "[ -~]{0,30}",
            any_text in ".{0,20}",
            ends in proptest::sample::select(vec!["", " ", "\t", "\n", "\u{0B}", "\u{A0}", "\u{3000}", "A", "é", "~", "\u{7F}"]),
        ) {
            for e in [e.clone(), format!("{ends}{e}"), format!("{e}{ends}"), any_text.clone()] {
                prop_assert_eq!(trim_text(&e), e.trim());
                let got = normalize_email(&e);
                let want = e.trim().to_lowercase();
                prop_assert_eq!(&*got, &*want);
                // Borrowed exactly when nothing changes and no byte needs a look past ASCII.
                prop_assert_eq!(matches!(got, Cow::Borrowed(_)), e.is_ascii() && want == e);
            }
        }
    }

    #[test]
    fn lowering_may_change_at_each_place_of_a_chunk() {
        for len in 0..24 {
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = byte;
                    assert_eq!(
                        lowering_may_change(&b),
                        byte.is_ascii_uppercase() || !byte.is_ascii(),
                        "{len} {at} {byte}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_emails_not_in_lookup_form_are_copied() {
        assert!(matches!(
            normalize_email("ann@x.io"),
            Cow::Borrowed("ann@x.io")
        ));
        for (given, want) in [
            (" Ann@X.io ", "ann@x.io"),
            ("ann@x.io\n", "ann@x.io"),
            ("ÄNN@x.io", "änn@x.io"),
            ("ann@X.IO", "ann@x.io"),
        ] {
            let got = normalize_email(given);
            assert!(matches!(got, Cow::Owned(_)), "{given:?}");
            assert_eq!(got, want);
        }
    }
}
