//! The lookup form of an email, shared by the index (which looks emails up) and the profile
//! rules (which validate them).

/// The lookup form of an email: trimmed, lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}
