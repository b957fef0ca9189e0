//! The lookup form of an email, shared by the index (which looks emails up) and the profile
//! rules (which validate them).

use std::borrow::Cow;

/// The lookup form of an email: trimmed, lower-cased. Borrowed when `email` is that already
/// (nearly every call's: no allocation on the write path's look-up).
pub fn normalize_email(email: &str) -> Cow<'_, str> {
    let trimmed = email.trim();
    if trimmed.len() == email.len()
        && !email
            .bytes()
            .any(|b| b.is_ascii_uppercase() || !b.is_ascii())
    {
        return Cow::Borrowed(email);
    }
    Cow::Owned(trimmed.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::normalize_email;
    use std::borrow::Cow;

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
