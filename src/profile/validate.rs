//! SPEC 3.1: a call that breaks any rule is refused whole, with every broken field listed.

use crate::error::{FieldError, Result};
use crate::options::Options;
use crate::profile::message::Message;

/// Check every rule of SPEC 3.1 on `message`; `Err(Error::Invalid(all problems))` if any.
pub fn validate(message: &Message, options: &Options) -> Result<()> {
    todo!("{message:?} {options:?}")
}

/// The lookup form of an email: trimmed, lower-cased.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

/// Problems of one email address (empty if valid).
pub fn email_problems(field: &str, email: &str) -> Vec<FieldError> {
    todo!("{field} {email}")
}
