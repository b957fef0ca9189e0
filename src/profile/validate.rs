//! SPEC 3.1: a call that breaks any rule is refused whole, with every broken field listed.
//!
//! Fields are named as the caller wrote them (`userId`, `traits.firstName`,
//! `traits.custom.plan`, `$set_once.created_at`, ...). The whole-call byte limit is checked by
//! the caller on the raw JSON, not here.

use crate::error::{Error, FieldError, Result};
use crate::options::Options;
use crate::profile::message::{Identify, Message};
use crate::profile::printable::{find_byte, has_pair_of, printable_without};
use crate::profile::props::ListOp;
pub use crate::types::email::normalize_email;
use crate::types::email::trim_text;
use crate::types::value::Value;

/// Longest identifier (`userId`, `anonymousId`, `groupId`, `previousId`, company id), in
/// characters.
pub const MAX_ID_CHARS: usize = 255;

/// Longest email address, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;

/// Check every rule of SPEC 3.1 on `message`; `Err(Error::Invalid(all problems))` if any.
pub fn validate(message: &Message, options: &Options) -> Result<()> {
    validate_with(message, options, PlaceholderLens::of(options))
}

/// The byte lengths of `placeholder_ids` once trimmed (`trim_text`), as a set: bit `n` for a
/// length `n` below 63, bit 63 for any longer. An ASCII id trimmed to a length not in it
/// matches none of them (a match is equal bytes but for ASCII case): [`plain_user_id_passes`]
/// then skips the walk of the list (~70 instructions a call, the defaults' 16). Read once
/// per store ([`validate_with`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlaceholderLens(u64);

impl PlaceholderLens {
    pub(crate) fn of(options: &Options) -> PlaceholderLens {
        PlaceholderLens(
            options
                .placeholder_ids
                .iter()
                .fold(0, |set, p| set | Self::bit(trim_text(p).len())),
        )
    }

    #[inline(always)]
    fn bit(len: usize) -> u64 {
        1 << len.min(63)
    }

    /// Whether a placeholder trims to `len` bytes (maybe, for 63 or more).
    #[inline(always)]
    fn may_be(self, len: usize) -> bool {
        self.0 & Self::bit(len) != 0
    }
}

/// [`validate`] with the store's [`PlaceholderLens`] of `options` (read at its open).
pub(crate) fn validate_with(
    message: &Message,
    options: &Options,
    lens: PlaceholderLens,
) -> Result<()> {
    let mut errors = Vec::new();
    match message {
        Message::Identify(m) => identify(m, options, lens, &mut errors),
        Message::Group(m) => {
            if m.group_id.is_empty() {
                errors.push(FieldError::new("groupId", "is required"));
            } else {
                id_rules("groupId", &m.group_id, options, false, &mut errors);
            }
            if let Some(id) = &m.user_id {
                user_id_rules("userId", id, options, &mut errors);
            }
            if let Some(id) = &m.anonymous_id {
                id_rules("anonymousId", id, options, true, &mut errors);
            }
            for (name, value) in &m.traits {
                let field = format!("traits.{name}");
                property_rules(&field, name, value.as_ref(), options, &mut errors);
                if name == "size" {
                    number_rule(&field, value.as_ref(), &mut errors);
                }
            }
        }
        Message::Alias(m) => {
            if m.previous_id.is_empty() {
                errors.push(FieldError::new("previousId", "is required"));
            } else {
                id_rules("previousId", &m.previous_id, options, true, &mut errors);
            }
            if m.user_id.is_empty() {
                errors.push(FieldError::new("userId", "is required"));
            } else {
                user_id_rules("userId", &m.user_id, options, &mut errors);
            }
        }
        Message::Link(m) => {
            if let Some(id) = &m.user_id {
                user_id_rules("userId", id, options, &mut errors);
            }
            if let Some(id) = &m.anonymous_id {
                id_rules("anonymousId", id, options, true, &mut errors);
            }
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

fn identify(m: &Identify, options: &Options, lens: PlaceholderLens, errors: &mut Vec<FieldError>) {
    if m.user_id.is_none() && m.email.is_none() && m.anonymous_id.is_none() {
        errors.push(FieldError::new(
            "userId",
            "one of userId, traits.email, anonymousId is required",
        ));
    }
    if let Some(id) = &m.user_id
        && !plain_user_id_passes(id, options, lens)
    {
        user_id_rules(m.field_as_written("userId"), id, options, errors);
    }
    if let Some(id) = &m.anonymous_id {
        id_rules("anonymousId", id, options, true, errors);
    }
    if let Some(email) = &m.email
        && !plain_email_passes(email)
    {
        errors.extend(email_problems(m.field_as_written("traits.email"), email));
    }
    // Field names are built only when a rule fails: the rules push errors with an empty (or
    // relative, `.size`) field, which `name_new_errors` completes. Valid calls allocate nothing.
    for (name, value) in &m.traits {
        let name = name.as_str();
        if plain_trait_passes(name, value.as_ref(), options) {
            continue;
        }
        let before = errors.len();
        property_rules("", name, value.as_ref(), options, errors);
        reserved_rules("", name, value.as_ref(), errors);
        name_new_errors(errors, before, || {
            m.field_as_written(&format!("traits.{name}")).to_string()
        });
    }
    for (name, value) in &m.set_once {
        let name = name.as_str();
        let before = errors.len();
        property_rules("", name, Some(value), options, errors);
        reserved_rules("", name, Some(value), errors);
        name_new_errors(errors, before, || format!("$set_once.{name}"));
    }
    for (i, name) in m.unset.iter().enumerate() {
        let before = errors.len();
        name_rules("", name, options, errors);
        name_new_errors(errors, before, || format!("$unset[{i}]"));
    }
    for (name, _) in &m.add {
        let before = errors.len();
        name_rules("", name, options, errors);
        add_rules("", name, errors);
        name_new_errors(errors, before, || format!("$add.{name}"));
    }
    for (name, op) in &m.lists {
        let before = errors.len();
        let (section, item) = match op {
            ListOp::Append(v) => ("$append", Some(v)),
            ListOp::Union(_) => ("$union", None),
            ListOp::Remove(v) => ("$remove", Some(v)),
        };
        match op {
            ListOp::Union(items) => property_rules(
                "",
                name,
                Some(&Value::Array(items.clone())),
                options,
                errors,
            ),
            _ => property_rules("", name, item, options, errors),
        }
        list_rules("", name, errors);
        name_new_errors(errors, before, || format!("{section}.{name}"));
    }
    if let Some(company) = &m.company {
        let base = || m.field_as_written("traits.company").to_string();
        let before = errors.len();
        id_rules("", &company.id, options, false, errors);
        name_new_errors(errors, before, || format!("{}.id", base()));
        for (name, value) in &company.traits {
            let before = errors.len();
            property_rules("", name, value.as_ref(), options, errors);
            if name == "size" {
                number_rule("", value.as_ref(), errors);
            }
            name_new_errors(errors, before, || format!("{}.{name}", base()));
        }
    }
}

/// Whether a trait surely passes every rule of [`property_rules`] and [`reserved_rules`]:
/// its name is not empty, not over the limit in bytes (so not in characters), does not start
/// with `$` and is not a reserved trait, and its value is within the size limit. A `false`
/// says only "check it": the rules decide, and name what is wrong. (Most traits of most calls
/// are plain: this keeps the rules' generic path off the hot path.)
#[inline]
fn plain_trait_passes(name: &str, value: Option<&Value>, options: &Options) -> bool {
    let Some(&first) = name.as_bytes().first() else {
        return false;
    };
    first != b'$'
        && name.len() <= options.max_name_chars
        && !is_reserved_trait(name)
        && value.is_none_or(|v| v.json_len() <= options.max_value_bytes)
}

/// The traits [`reserved_rules`] checks the value of (its match arms; the proptest
/// `a_plain_trait_passes_every_rule` fails if a name there is missing here).
const RESERVED_TRAITS: [&str; 6] = [
    "first_name",
    "last_name",
    "created_at",
    "avatar",
    "company_size",
    "company",
];

/// Per first byte, the lengths of the [`RESERVED_TRAITS`] that start with it: bit `n` for `n`
/// bytes (no reserved trait is 15 bytes or longer, so bit 15 stands for those and is never
/// set).
static RESERVED_LENGTHS: [u16; 256] = reserved_lengths();

const fn reserved_lengths() -> [u16; 256] {
    let mut by_first = [0u16; 256];
    let mut i = 0;
    while i < RESERVED_TRAITS.len() {
        let name = RESERVED_TRAITS[i].as_bytes();
        assert!(!name.is_empty() && name.len() < 15);
        by_first[name[0] as usize] |= 1 << name.len();
        i += 1;
    }
    by_first
}

/// Whether `name` is one of the [`RESERVED_TRAITS`]. Its first byte and its length rule out
/// nearly every other name with one look-up, whose answer ("no") the processor predicts: a
/// test of the first letter alone was passed by a third of W1's names, at random (~3.5
/// mispredicted branches a call), and sent them to the comparisons of whole names.
fn is_reserved_trait(name: &str) -> bool {
    let b = name.as_bytes();
    let Some(&first) = b.first() else {
        return false;
    };
    RESERVED_LENGTHS[usize::from(first)] & (1 << b.len().min(15)) != 0
        && RESERVED_TRAITS.contains(&name)
}

/// Complete the field names of the errors pushed since `before`: an empty field becomes
/// `field()`, a relative one (`.size`) is appended to it.
fn name_new_errors(errors: &mut [FieldError], before: usize, field: impl FnOnce() -> String) {
    let Some(new) = errors.get_mut(before..) else {
        return;
    };
    if new.is_empty() {
        return;
    }
    let field = field();
    for e in new {
        e.field = format!("{field}{}", e.field);
    }
}

/// Rules of every identifier: not blank, not a placeholder, at most [`MAX_ID_CHARS`]
/// characters. `is_person` ids (user and anonymous ids) are checked against the placeholder
/// blocklist.
fn id_rules(
    field: &str,
    id: &str,
    options: &Options,
    is_person: bool,
    errors: &mut Vec<FieldError>,
) {
    let trimmed = trim_text(id);
    if trimmed.is_empty() {
        errors.push(FieldError::new(field, "must not be blank"));
        return;
    }
    if is_person && is_placeholder(trimmed, options) {
        errors.push(FieldError::new(
            field,
            format!("{trimmed:?} is a placeholder id sent by buggy clients, not a real id"),
        ));
    }
    // A string has at most as many characters as bytes: count only when it could be too long.
    let chars = if id.len() > MAX_ID_CHARS {
        id.chars().count()
    } else {
        0
    };
    if chars > MAX_ID_CHARS {
        errors.push(FieldError::new(
            field,
            format!("must be at most {MAX_ID_CHARS} characters (got {chars})"),
        ));
    }
}

fn is_placeholder(trimmed: &str, options: &Options) -> bool {
    if trimmed.is_ascii() {
        // The common case, without allocating.
        return is_ascii_placeholder(trimmed, options);
    }
    let lower = trimmed.to_lowercase();
    options
        .placeholder_ids
        .iter()
        .any(|p| p.trim().to_lowercase() == lower)
}

/// [`is_placeholder`] of a trimmed ASCII id (a plain `userId` is one: no need to check).
#[inline(always)]
fn is_ascii_placeholder(trimmed: &str, options: &Options) -> bool {
    // A loop of its own rather than `Iterator::any`, which wrote its place in the list back
    // to memory at every placeholder (8 instructions a placeholder instead of 6).
    for p in &options.placeholder_ids {
        // Trimming only shortens: a placeholder shorter than the id cannot match it (the one
        // test most placeholders take).
        if p.len() >= trimmed.len() && placeholder_matches(p, trimmed) {
            return true;
        }
    }
    false
}

/// Whether `trim_text(p).eq_ignore_ascii_case(trimmed)`, for a `trimmed` ASCII id no longer
/// than `p`. A placeholder of the id's length matches as it is: trimmed, it would be shorter
/// than the id, and untrimmed, its first or last character (whitespace) would have to equal
/// the id's, which has none there.
#[inline(always)]
fn placeholder_matches(p: &str, trimmed: &str) -> bool {
    if p.len() == trimmed.len() {
        p.eq_ignore_ascii_case(trimmed)
    } else {
        let t = trim_text(p);
        t.len() == trimmed.len() && t.eq_ignore_ascii_case(trimmed)
    }
}

/// `userId`: the identifier rules, 2 to 255 characters, and not an email address.
fn user_id_rules(field: &str, id: &str, options: &Options, errors: &mut Vec<FieldError>) {
    id_rules(field, id, options, true, errors);
    if trim_text(id).is_empty() {
        return;
    }
    // A character is at most 4 bytes: 8 bytes or more are at least 2 characters.
    let chars = if id.len() < 8 { id.chars().count() } else { 2 };
    if chars < 2 {
        errors.push(FieldError::new(
            field,
            format!("must be 2 to {MAX_ID_CHARS} characters (got {chars})"),
        ));
    }
    if id.contains('@') && email_problems(field, id).is_empty() {
        errors.push(FieldError::new(
            field,
            "must not be an email address; put it in traits.email",
        ));
    }
}

/// Whether a `userId` surely passes [`user_id_rules`]: 2 to [`MAX_ID_CHARS`] bytes of
/// printable ASCII without spaces or `@`, and not a placeholder. A `false` says only "check
/// it": the rules decide and name what is wrong.
/// `lens`: the [`PlaceholderLens`] of `options`.
#[inline]
fn plain_user_id_passes(id: &str, options: &Options, lens: PlaceholderLens) -> bool {
    (2..=MAX_ID_CHARS).contains(&id.len())
        && printable_without(id.as_bytes(), b'@')
        // Printable ASCII: trimmed and ASCII as it is.
        && !(lens.may_be(id.len()) && is_ascii_placeholder(id, options))
}

/// Property names: non-empty, at most `max_name_chars` characters, not starting with `$`.
fn name_rules(field: &str, name: &str, options: &Options, errors: &mut Vec<FieldError>) {
    if name.is_empty() {
        errors.push(FieldError::new(field, "property name must not be empty"));
        return;
    }
    // Count only when the byte length allows too many characters.
    let chars = if name.len() > options.max_name_chars {
        name.chars().count()
    } else {
        0
    };
    if chars > options.max_name_chars {
        errors.push(FieldError::new(
            field,
            format!(
                "property name must be at most {} characters (got {chars})",
                options.max_name_chars
            ),
        ));
    }
    if name.starts_with('$') {
        errors.push(FieldError::new(
            field,
            "property name must not start with '$' (reserved for operators such as $set_once)",
        ));
    }
}

/// Name rules plus the value-size limit.
fn property_rules(
    field: &str,
    name: &str,
    value: Option<&Value>,
    options: &Options,
    errors: &mut Vec<FieldError>,
) {
    name_rules(field, name, options, errors);
    if let Some(v) = value {
        let len = v.json_len();
        if len > options.max_value_bytes {
            errors.push(FieldError::new(
                field,
                format!(
                    "value must be at most {} bytes (got {len})",
                    options.max_value_bytes
                ),
            ));
        }
    }
}

/// Rules of the reserved traits (`first_name`, `last_name`, `created_at`, `avatar`,
/// `company_size`, `company.size`). A `null` (removal) is always allowed.
fn reserved_rules(field: &str, name: &str, value: Option<&Value>, errors: &mut Vec<FieldError>) {
    let Some(value) = value else { return };
    match name {
        "first_name" | "last_name" => match value {
            Value::Str(s) => {
                let chars = s.chars().count();
                if !(2..=50).contains(&chars) {
                    errors.push(FieldError::new(
                        field,
                        format!("must be 2 to 50 characters (got {chars})"),
                    ));
                }
            }
            _ => errors.push(FieldError::new(field, "must be a string")),
        },
        "created_at" if !matches!(value, Value::DateTime(_)) => {
            errors.push(FieldError::new(
                field,
                "must be an ISO 8601 / RFC 3339 date-time, e.g. 2026-11-22T10:00:00Z",
            ));
        }
        "avatar" if !value.as_str().is_some_and(is_absolute_url) => {
            errors.push(FieldError::new(
                field,
                "must be an absolute URL (http:// or https://)",
            ));
        }
        "company_size" => number_rule(field, Some(value), errors),
        "company" => {
            if let Value::Object(members) = value {
                for (member, v) in members {
                    if member == "size" && !matches!(v, Value::Null) {
                        let before = errors.len();
                        number_rule("", Some(v), errors);
                        name_new_errors(errors, before, || format!("{field}.size"));
                    }
                }
            }
        }
        _ => {}
    }
}

/// `$add` applies to numbers only: refuse it on a reserved trait that holds something else
/// (checked on the snake_case name, so Segment's camelCase forms are refused too, though `$add`
/// names are otherwise used as written).
fn add_rules(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    let snake = crate::profile::message::snake_case_trait(name).unwrap_or(name);
    let holds = match snake {
        "email" => "an email address",
        "first_name" | "last_name" | "name" | "company_name" | "company_industry"
        | "company_position" => "a string",
        "created_at" => "a date-time",
        "avatar" => "a URL",
        "company" => "a company",
        _ => return,
    };
    errors.push(FieldError::new(
        field,
        format!("is a reserved trait that holds {holds}, not a number; $add cannot change it"),
    ));
}

/// List operations apply to lists only: refuse them on every reserved trait (none holds a
/// list), by the name as written and by its snake_case form.
fn list_rules(field: &str, name: &str, errors: &mut Vec<FieldError>) {
    let snake = crate::profile::message::snake_case_trait(name).unwrap_or(name);
    let reserved = matches!(
        snake,
        "email"
            | "first_name"
            | "last_name"
            | "name"
            | "created_at"
            | "avatar"
            | "company"
            | "company_name"
            | "company_size"
            | "company_industry"
            | "company_position"
    );
    if reserved {
        errors.push(FieldError::new(
            field,
            "is a reserved trait that does not hold a list; $append, $union and $remove cannot \
             change it",
        ));
    }
}

fn number_rule(field: &str, value: Option<&Value>, errors: &mut Vec<FieldError>) {
    if let Some(v) = value
        && v.as_f64().is_none()
    {
        errors.push(FieldError::new(field, "must be a number"));
    }
}

/// An absolute `http` / `https` URL with a non-empty host.
pub fn is_absolute_url(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return false;
    }
    if text.chars().any(char::is_whitespace) {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = if host_port.starts_with('[') {
        // IPv6 literal: `[::1]:8080`.
        host_port
            .split_once(']')
            .map(|(h, _)| h.trim_start_matches('['))
            .unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    !host.is_empty()
}

/// Whether an email address surely has none of [`email_problems`]' problems: printable ASCII
/// without spaces, at most [`MAX_EMAIL_BYTES`], one `@` with something before it, and a domain
/// of non-empty labels with a dot. A `false` says only "check it": [`email_problems`] decides
/// (surrounding spaces, which it trims, and non-ASCII addresses go there). Each check reads
/// eight bytes at a time (`printable_without`, `find_byte`, `has_pair_of`): a loop over the
/// address's bytes took ~9 instructions a byte.
#[inline]
fn plain_email_passes(email: &str) -> bool {
    let b = email.as_bytes();
    if b.len() > MAX_EMAIL_BYTES || !printable_without(b, b' ') {
        return false;
    }
    let Some(at) = find_byte(b, b'@') else {
        return false;
    };
    let domain = &b[at + 1..];
    at > 0
        && find_byte(domain, b'@').is_none()
        && find_byte(domain, b'.').is_some()
        && domain.first() != Some(&b'.')
        && domain.last() != Some(&b'.')
        && !has_pair_of(domain, b'.')
}

/// Problems of one email address (empty if valid). Surrounding whitespace is ignored (lookups
/// trim it too); inside the address it is an error.
pub fn email_problems(field: &str, email: &str) -> Vec<FieldError> {
    let email = trim_text(email);
    let mut problems = Vec::new();
    let mut problem = |rule: String| problems.push(FieldError::new(field, rule));
    if email.is_empty() {
        problem("must be a valid email address (got an empty string)".into());
        return problems;
    }
    if email.len() > MAX_EMAIL_BYTES {
        problem(format!(
            "must be at most {MAX_EMAIL_BYTES} bytes (got {})",
            email.len()
        ));
    }
    if email.chars().any(char::is_whitespace) {
        problem("must be a valid email address: no spaces".into());
    }
    let ats = email.bytes().filter(|&b| b == b'@').count();
    if ats != 1 {
        problem(format!(
            "must be a valid email address: exactly one '@' (got {ats})"
        ));
        return problems;
    }
    let (local, domain) = email.split_once('@').unwrap_or((email, ""));
    if local.is_empty() {
        problem("must be a valid email address: empty part before '@'".into());
    }
    if !domain.contains('.') || domain.split('.').any(str::is_empty) {
        problem("must be a valid email address: the domain needs a dot and no empty labels (example.com)".into());
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::DEFAULT_PLACEHOLDER_IDS as DEFAULT_IDS;
    use proptest::prelude::*;

    /// The byte-by-byte form of [`plain_email_passes`] it replaced.
    fn byte_by_byte_email(email: &str) -> bool {
        let b = email.as_bytes();
        if b.len() > MAX_EMAIL_BYTES {
            return false;
        }
        let mut at = None;
        for (i, &c) in b.iter().enumerate() {
            if c <= b' ' || c >= 0x7f {
                return false;
            }
            if c == b'@' {
                if at.is_some() {
                    return false;
                }
                at = Some(i);
            }
        }
        let Some(at) = at else { return false };
        let domain = &b[at + 1..];
        at > 0
            && domain.contains(&b'.')
            && domain.first() != Some(&b'.')
            && domain.last() != Some(&b'.')
            && !domain.windows(2).any(|w| w == b"..")
    }

    /// Names: the reserved traits, names near the rules' edges, and arbitrary ones.
    fn names() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "first_name",
                "last_name",
                "created_at",
                "avatar",
                "company_size",
                "company",
                "email",
                "$set",
                "",
                "plan",
            ])
            .prop_map(str::to_string),
            "[a-z_$]{0,12}",
            "\\PC{0,8}",
        ]
    }

    /// Values of every kind, some of them too large for a small limit.
    fn values() -> impl Strategy<Value = Option<Value>> {
        prop_oneof![
            Just(None),
            any::<bool>().prop_map(|b| Some(Value::Bool(b))),
            any::<i64>().prop_map(|i| Some(Value::Int(i))),
            "\\PC{0,40}".prop_map(|s| Some(Value::Str(s.into()))),
            Just(Some(Value::Object(vec![(
                "size".into(),
                Value::Bool(true)
            )]))),
        ]
    }

    /// The test of reserved names the table replaced: the whole names.
    fn is_reserved_by_name(name: &str) -> bool {
        matches!(
            name,
            "first_name" | "last_name" | "created_at" | "avatar" | "company_size" | "company"
        )
    }

    proptest! {
        /// The look-up by first byte and length answers as the comparison of whole names, for
        /// the reserved names, names that share their first byte and length, and any others.
        #[test]
        fn the_reserved_trait_table_answers_as_the_names(
            name in prop_oneof![
                names(),
                prop::sample::select(RESERVED_TRAITS.to_vec()).prop_map(str::to_string),
                "[acfl][a-z_]{5,11}",
                "\\PC{0,20}",
            ],
        ) {
            prop_assert_eq!(is_reserved_trait(&name), is_reserved_by_name(&name));
        }

        /// The trait check that skips the rules says "passes" only for traits the rules pass.
        #[test]
        fn a_plain_trait_passes_every_rule(
            name in names(),
            value in values(),
            max_name_chars in 0usize..16,
            max_value_bytes in 0usize..48,
        ) {
            let options = Options { max_name_chars, max_value_bytes, ..Options::default() };
            if plain_trait_passes(&name, value.as_ref(), &options) {
                let mut errors = Vec::new();
                property_rules("", &name, value.as_ref(), &options, &mut errors);
                reserved_rules("", &name, value.as_ref(), &mut errors);
                prop_assert!(errors.is_empty(), "{name:?} = {value:?}: {errors:?}");
            }
        }

        /// The user id check that skips the rules says "passes" only for ids they pass.
        #[test]
        fn a_plain_user_id_passes_every_rule(
            id in prop_oneof![
                prop::sample::select(DEFAULT_IDS.to_vec()).prop_map(str::to_string),
                "[a-zA-Z0-9@ /\\[\\]-]{0,12}",
                "\\PC{0,8}",
                "[a-z]{250,260}",
            ],
        ) {
            let options = Options::default();
            if plain_user_id_passes(&id, &options, PlaceholderLens::of(&options)) {
                let mut errors = Vec::new();
                user_id_rules("userId", &id, &options, &mut errors);
                prop_assert!(errors.is_empty(), "{id:?}: {errors:?}");
            }
        }

        /// A placeholder compared by length first matches exactly when the plain form does
        /// (`trim_text(p).eq_ignore_ascii_case(id)`): placeholders with spaces or Unicode
        /// whitespace around them, of the id's length or near it, in either case.
        #[test]
        fn a_placeholder_matches_as_the_plain_form(
            id in prop_oneof![
                prop::sample::select(DEFAULT_IDS.to_vec()).prop_map(str::to_string),
                "[!-~]{1,6}",
            ],
            pad in prop::sample::select(vec!["", " ", "\t", "\u{3000}", "\u{a0}", "x", " x"]),
            pad_end in prop::sample::select(vec!["", " ", "\n", "\u{2003}", "y"]),
            upper in any::<bool>(),
            other in "\\PC{0,8}",
            same in any::<bool>(),
        ) {
            let base = if same { id.clone() } else { other };
            let base = if upper { base.to_ascii_uppercase() } else { base };
            let p = format!("{pad}{base}{pad_end}");
            let trimmed = trim_text(&id);
            prop_assume!(trimmed.is_ascii());
            prop_assert_eq!(
                p.len() >= trimmed.len() && placeholder_matches(&p, trimmed),
                trim_text(&p).eq_ignore_ascii_case(trimmed),
                "{:?} against {:?}", p, trimmed
            );
        }

        /// An ASCII id trimmed to a length the placeholders' lengths do not hold matches none
        /// of them: placeholders of every length near the id's, padded, in either case.
        #[test]
        fn an_id_of_no_placeholder_length_is_none(
            id in prop_oneof![
                prop::sample::select(DEFAULT_IDS.to_vec()).prop_map(str::to_string),
                "[!-~]{1,8}",
                "[a-z]{60,70}",
            ],
            placeholders in prop::collection::vec(
                prop_oneof![
                    prop::sample::select(DEFAULT_IDS.to_vec()).prop_map(str::to_string),
                    "[ \t\u{3000}]{0,2}[!-~]{0,9}[ \n\u{a0}]{0,2}",
                    "[a-zA-Z]{60,70}",
                ],
                0..6,
            ),
            upper in any::<bool>(),
        ) {
            let id = if upper { id.to_ascii_uppercase() } else { id };
            let options = Options { placeholder_ids: placeholders, ..Options::default() };
            let trimmed = trim_text(&id);
            prop_assume!(!trimmed.is_empty());
            if !PlaceholderLens::of(&options).may_be(trimmed.len()) {
                prop_assert!(!is_placeholder(trimmed, &options), "{:?}", id);
            }
        }

        /// The email check that skips the rules says "passes" only for addresses they pass.
        #[test]
        fn a_plain_email_has_no_problem(
            email in prop_oneof![
                "[a-z.@ ]{0,12}",
                "[a-z]{0,4}@[a-z.]{0,6}",
                "[a-z.@]{0,12}@[a-z.@]{0,24}",
                "\\PC{0,12}",
                "[a-z]{1,300}@example\\.com",
            ],
        ) {
            if plain_email_passes(&email) {
                prop_assert_eq!(email_problems("traits.email", &email), vec![]);
            }
            prop_assert_eq!(plain_email_passes(&email), byte_by_byte_email(&email));
        }
    }

    #[test]
    fn common_traits_and_emails_take_the_short_check() {
        let options = Options::default();
        for (name, value) in [
            ("plan", Value::Str("pro".into())),
            ("logins", Value::Int(3)),
            ("beta", Value::Bool(false)),
        ] {
            assert!(plain_trait_passes(name, Some(&value), &options), "{name}");
        }
        for name in ["first_name", "created_at", "$plan", ""] {
            assert!(!plain_trait_passes(name, None, &options), "{name}");
        }
        assert!(plain_email_passes("person0@example.com"));
        let lens = PlaceholderLens::of(&options);
        assert!(plain_user_id_passes("user-00000000", &options, lens));
        for bad in ["u", "NULL", "a@b.co", "a b", "Undefined"] {
            assert!(!plain_user_id_passes(bad, &options, lens), "{bad}");
        }
        for bad in [
            "a@b",
            "@example.com",
            "a@@example.com",
            "a@example..com",
            " a@x.io",
        ] {
            assert!(!plain_email_passes(bad), "{bad}");
        }
    }
}
