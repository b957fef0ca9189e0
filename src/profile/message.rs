//! Segment-shaped messages (SPEC 2): parsed from JSON into normalised, typed calls.
//!
//! Normalisation done here, once: `null` is absent; a numeric `userId` becomes its decimal
//! string; GoSquared's nested `traits.custom` object is flattened into ordinary traits;
//! Segment's camelCase reserved traits (`firstName`, `createdAt`, ...) are renamed to
//! snake_case; `traits.email` is lifted out as the call's email; `traits.company` (an object
//! with an `id`) is lifted out as the company reference.

use crate::error::{Error, Result};
use crate::profile::value::{Timestamp, Value};

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
    pub traits: Vec<(String, Option<Value>)>,
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
    /// Traits to set, normalised names; `None` = a `null` (remove).
    pub traits: Vec<(String, Option<Value>)>,
    /// `$set_once`.
    pub set_once: Vec<(String, Value)>,
    /// `$unset`.
    pub unset: Vec<String>,
    /// `$add`.
    pub add: Vec<(String, Number)>,
    /// `traits.company` with an id.
    pub company: Option<CompanyRef>,
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
    pub traits: Vec<(String, Option<Value>)>,
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
    pub fn parse(json: &[u8]) -> Result<Message> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| Error::Malformed(e.to_string()))?;
        Message::from_json(&value)
    }

    /// Same as [`Message::parse`] from an already-parsed JSON value.
    pub fn from_json(value: &serde_json::Value) -> Result<Message> {
        todo!("{value}")
    }

    /// The message's `messageId`.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            Message::Identify(m) => m.message_id.as_deref(),
            Message::Group(m) => m.message_id.as_deref(),
            Message::Alias(m) => m.message_id.as_deref(),
            Message::Link(m) => m.message_id.as_deref(),
        }
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
