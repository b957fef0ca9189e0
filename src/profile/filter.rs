//! Property filters for scans (SPEC 3.7): equality, comparison on numbers and date-times,
//! existence; and their text syntax used by `profiledb query`.

use crate::error::Result;
use crate::profile::value::Value;

/// A property filter for [`Db::scan`] (SPEC 3.7).
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every profile.
    All,
    /// The property exists.
    Exists(String),
    /// `name op value` with `op` one of `=`, `!=`, `<`, `<=`, `>`, `>=`.
    Compare(String, Op, Value),
    /// Both hold.
    And(Box<Filter>, Box<Filter>),
}

/// Comparison operator of a [`Filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Filter {
    /// Parse the text syntax (see docs/semantics.md), e.g. `plan = "pro" and logins >= 3`,
    /// `exists company_size`, `created_at < 2026-01-01T00:00:00Z`.
    pub fn parse(text: &str) -> Result<Filter> {
        todo!("{text}")
    }

    /// Whether a profile with these current properties matches.
    pub fn matches(&self, properties: &[(String, Value)]) -> bool {
        todo!("{}", properties.len())
    }
}
