//! Segment-shaped messages (SPEC 2): parsed from JSON into normalised, typed calls.
//!
//! Normalisation done here, once: `null` is absent; a numeric `userId` becomes its decimal
//! string; GoSquared's nested `traits.custom` object is flattened into ordinary traits;
//! Segment's camelCase reserved traits (`firstName`, `createdAt`, ...) are renamed to
//! snake_case; `traits.email` is lifted out as the call's email; `traits.company` (an object
//! with an `id`) is lifted out as the company reference. The rules themselves live in one
//! place, the parser (src/profile/parse.rs); [`Message::from_json`] goes through it too.

use crate::error::{Error, Result};
use crate::profile::props::ListOp;
use crate::types::value::{CompactString, Timestamp, Value};

/// A numeric increment of `$add`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    /// Integer increment.
    Int(i64),
    /// Fractional increment.
    Float(f64),
}

/// `traits.company` with an `id`: upsert that company and make the person a member.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompanyRef {
    /// The company's id (a number becomes its decimal string).
    pub id: String,
    /// The company's own properties (everything in the object but `id`); `None` = remove.
    pub traits: Vec<(CompactString, Option<Value>)>,
}

/// An `identify` call.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Identify {
    /// `userId`.
    pub user_id: Option<String>,
    /// `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `traits.email`, as given (validation and normalisation come later).
    pub email: Option<String>,
    /// `messageId`.
    pub message_id: Option<String>,
    /// `timestamp`; `None` means now.
    pub timestamp: Option<Timestamp>,
    /// Traits to set, normalised names; `None` = a `null` (remove). Names, like values, are
    /// inline small strings ([`CompactString`]: `"plan".into()`).
    pub traits: Vec<(CompactString, Option<Value>)>,
    /// `$set_once`.
    pub set_once: Vec<(CompactString, Value)>,
    /// `$unset`.
    pub unset: Vec<CompactString>,
    /// `$add`.
    pub add: Vec<(CompactString, Number)>,
    /// `$append`, `$union` and `$remove`, in that order (docs/semantics.md, "List
    /// operations").
    pub lists: Vec<(CompactString, ListOp)>,
    /// `traits.company` with an id.
    pub company: Option<CompanyRef>,
    /// Where a normalised field came from when the caller wrote it differently:
    /// `(normalised path, path as written)`, e.g. `("traits.first_name", "traits.firstName")`,
    /// `("traits.plan", "traits.custom.plan")`, `("userId", "traits.id")`. Empty in the common
    /// case; validation uses it to name fields as the caller wrote them.
    pub written_as: Vec<(String, String)>,
}

impl Identify {
    /// The path of a normalised field (`userId`, `traits.first_name`, ...) as the caller wrote it.
    pub fn field_as_written<'a>(&'a self, normalised: &'a str) -> &'a str {
        self.written_as
            .iter()
            .find(|(n, _)| n == normalised)
            .map(|(_, w)| w.as_str())
            .unwrap_or(normalised)
    }
}

/// A `group` call: upsert company `group_id` with `traits`; with a user/anonymous id, make
/// that person a member.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Group {
    /// `userId`.
    pub user_id: Option<String>,
    /// `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `groupId` (required).
    pub group_id: String,
    /// The company's traits.
    pub traits: Vec<(CompactString, Option<Value>)>,
    /// `messageId`.
    pub message_id: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<Timestamp>,
}

/// An `alias` call: `previous_id` and `user_id` are one person.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alias {
    /// `previousId` (required).
    pub previous_id: String,
    /// `userId` (required).
    pub user_id: String,
    /// `messageId`.
    pub message_id: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<Timestamp>,
}

/// A `track`, `page` or `screen` call: not stored as an event, but with both ids it links
/// them like an identify without traits.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Link {
    /// `userId`.
    pub user_id: Option<String>,
    /// `anonymousId`.
    pub anonymous_id: Option<String>,
    /// `messageId`.
    pub message_id: Option<String>,
    /// `timestamp`.
    pub timestamp: Option<Timestamp>,
}

/// Any message profiledb accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// `identify`.
    Identify(Identify),
    /// `group`.
    Group(Group),
    /// `alias`.
    Alias(Alias),
    /// `track`, `page`, `screen`.
    Link(Link),
}

impl Message {
    /// Parse one Segment-shaped JSON message. `type` defaults to `identify` when absent.
    /// Never panics; a message that is not JSON or not of a known shape is `Error::Malformed`
    /// naming the field.
    ///
    /// Parses straight into the message, without a `serde_json::Value` (see
    /// `profile::parse`, the one place holding the rules of a message's shape).
    pub fn parse(json: &[u8]) -> Result<Message> {
        crate::profile::parse::parse(json)
    }

    /// Same as [`Message::parse`] from an already-parsed JSON value: the value is read by the
    /// same parser's visitors (not written back to text), so that one parser holds the rules
    /// of a message's shape.
    pub fn from_json(value: &serde_json::Value) -> Result<Message> {
        crate::profile::parse::parse_value(value)
    }

    /// The message's `messageId`, for dedupe. A blank one (empty or only whitespace) counts as
    /// absent: otherwise every later blank-id call would be answered `duplicate`.
    pub fn message_id(&self) -> Option<&str> {
        let id = match self {
            Message::Identify(m) => m.message_id.as_deref(),
            Message::Group(m) => m.message_id.as_deref(),
            Message::Alias(m) => m.message_id.as_deref(),
            Message::Link(m) => m.message_id.as_deref(),
        };
        id.filter(|id| !crate::types::email::trim_text(id).is_empty())
    }

    /// The message's `timestamp`.
    pub fn timestamp(&self) -> Option<Timestamp> {
        match self {
            Message::Identify(m) => m.timestamp,
            Message::Group(m) => m.timestamp,
            Message::Alias(m) => m.timestamp,
            Message::Link(m) => m.timestamp,
        }
    }
}

pub(crate) fn malformed(field: &str, rule: &str) -> Error {
    Error::Malformed(format!("{field}: {rule}"))
}

/// Segment's camelCase reserved traits and their snake_case names.
const CAMEL_CASE_TRAITS: &[(&str, &str)] = &[
    ("firstName", "first_name"),
    ("lastName", "last_name"),
    ("createdAt", "created_at"),
    ("companyName", "company_name"),
    ("companySize", "company_size"),
    ("companyIndustry", "company_industry"),
    ("companyPosition", "company_position"),
];

/// The snake_case name of a camelCase reserved trait.
pub fn snake_case_trait(name: &str) -> Option<&'static str> {
    CAMEL_CASE_TRAITS
        .iter()
        .find(|(camel, _)| *camel == name)
        .map(|(_, snake)| *snake)
}

/// Priority of a trait's source: when two sources give the same normalised name, the higher
/// one wins (a snake_case name written directly beats a renamed camelCase one, which beats a
/// member of GoSquared's `custom` object; between equals, the later one wins).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Source {
    Custom,
    Renamed,
    Direct,
}

/// Collects traits; duplicates of one normalised name are resolved once at the end, and only
/// when they are possible (renamed, flattened or `$set` traits), so the common call pays
/// nothing for it.
/// Normalised traits; `None` = remove.
type Traits = Vec<(CompactString, Option<Value>)>;

/// `(name, value, source, path as written when it differs from traits.<name>)`.
type TraitItem = (CompactString, Option<Value>, Source, Option<String>);

#[derive(Default)]
pub(crate) struct TraitsBuilder {
    items: Vec<TraitItem>,
    may_repeat: bool,
}

impl TraitsBuilder {
    /// A builder with room for `n` traits (the members of the trait sections: one allocation
    /// instead of the doublings of a growing vector).
    pub(crate) fn with_capacity(n: usize) -> Self {
        TraitsBuilder {
            items: Vec::with_capacity(n),
            may_repeat: false,
        }
    }

    pub(crate) fn push(
        &mut self,
        name: CompactString,
        value: Option<Value>,
        source: Source,
        written: Option<String>,
    ) {
        self.may_repeat |= source != Source::Direct || written.is_some();
        self.items.push((name, value, source, written));
    }

    /// The traits, one per name, in first-seen order, and the `written_as` entries.
    pub(crate) fn finish(self) -> (Traits, Vec<(String, String)>) {
        let mut items = self.items;
        if self.may_repeat {
            let mut first: std::collections::HashMap<CompactString, usize> =
                std::collections::HashMap::with_capacity(items.len());
            let mut keep: Vec<Option<TraitItem>> = Vec::with_capacity(items.len());
            for item in items {
                match first.get(&item.0) {
                    Some(&i) => {
                        if let Some(Some(old)) = keep.get_mut(i)
                            && item.2 >= old.2
                        {
                            *old = item;
                        }
                    }
                    None => {
                        first.insert(item.0.clone(), keep.len());
                        keep.push(Some(item));
                    }
                }
            }
            items = keep.into_iter().flatten().collect();
        }
        let mut written_as = Vec::new();
        let traits = items
            .into_iter()
            .map(|(name, value, _, written)| {
                if let Some(w) = written {
                    written_as.push((format!("traits.{name}"), w));
                }
                (name, value)
            })
            .collect();
        (traits, written_as)
    }
}

pub(crate) fn set_written(list: &mut Vec<(String, String)>, normalised: &str, written: &str) {
    list.retain(|(n, _)| n != normalised);
    if normalised != written {
        list.push((normalised.to_string(), written.to_string()));
    }
}
