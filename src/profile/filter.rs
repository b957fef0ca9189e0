//! Property filters for scans (SPEC 3.7): equality, comparison on numbers and date-times,
//! existence; and their text syntax used by `profiledb query`.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::error::{Error, Result};
use crate::types::Profile;
use crate::types::value::{Timestamp, Value};

/// A property filter for [`Db::scan`](crate::Db::scan) (SPEC 3.7).
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
    /// Parse the filter text syntax used by `profiledb query` and [`Db::scan`] callers.
    ///
    /// ```text
    /// filter  := clause ( "and" clause )*        (empty text: every profile)
    /// clause  := "exists" NAME
    ///          | NAME OP LITERAL
    /// OP      := "=" | "!=" | "<" | "<=" | ">" | ">="
    /// NAME    := bare word | "JSON string"
    /// LITERAL := "JSON string" | bare word
    /// ```
    ///
    /// - `and` and `exists` are case-insensitive; `or` and `not` are not supported.
    /// - A bare word is a run of characters other than whitespace, `=`, `!`, `<`, `>` and `"`.
    /// - A quoted literal is a JSON string (escapes allowed); if it is an RFC 3339 date-time it
    ///   compares as a time, like stored date-times.
    /// - A bare-word literal is `true` / `false`, else a number when it parses as a JSON number
    ///   (`3`, `-2.5`, `1e3`), else a date-time when it parses as RFC 3339
    ///   (`2026-01-01T00:00:00Z`), else a string (`pro`). Quote it to force a string
    ///   (`zip = "02134"`).
    /// - `=` matches equal values (numbers compare by value: `3 = 3.0`); `!=` matches when the
    ///   property exists and is not equal; `<`, `<=`, `>`, `>=` compare numbers with numbers,
    ///   date-times with date-times, strings with strings (by code point) and never match across
    ///   types. A missing property never matches a comparison.
    ///
    /// Examples: `plan = "pro" and logins >= 3`, `exists company_size`,
    /// `created_at < 2026-01-01T00:00:00Z`.
    ///
    /// Errors are [`Error::Malformed`] naming the column (1-based, in characters).
    ///
    /// [`Db::scan`]: crate::Db::scan
    /// [`Error::Malformed`]: crate::Error::Malformed
    pub fn parse(text: &str) -> Result<Filter> {
        let tokens = tokenize(text)?;
        let mut pos = 0;
        let mut filter: Option<Filter> = None;
        if tokens.is_empty() {
            return Ok(Filter::All);
        }
        loop {
            let clause = parse_clause(text, &tokens, &mut pos)?;
            filter = Some(match filter {
                None => clause,
                Some(f) => Filter::And(Box::new(f), Box::new(clause)),
            });
            match tokens.get(pos) {
                None => break,
                Some(t) if t.is_keyword("and") => {
                    pos += 1;
                    if tokens.get(pos).is_none() {
                        return Err(error(text, text.len(), "expected a clause after `and`"));
                    }
                }
                Some(t) => {
                    let hint = if t.is_keyword("or") || t.is_keyword("not") {
                        " (only `and` is supported)"
                    } else {
                        ""
                    };
                    return Err(error(
                        text,
                        t.start,
                        &format!("expected `and` or the end of the filter{hint}"),
                    ));
                }
            }
        }
        Ok(filter.unwrap_or(Filter::All))
    }

    /// Whether a profile with these current properties matches (properties only; see
    /// [`Filter::matches_profile`] for what [`Db::scan`] uses).
    ///
    /// [`Db::scan`]: crate::Db::scan
    pub fn matches(&self, properties: &[(String, Value)]) -> bool {
        self.matches_with(&|name| {
            properties
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| Cow::Borrowed(v))
        })
    }

    /// Whether a profile matches. A name is looked up in the profile's properties first; the
    /// names `created_at` and `updated_at` that are not properties are the profile's
    /// top-level fields, as in the profile JSON: the effective `created_at` (SPEC 3.4, also
    /// when defaulted) and `updated_at`.
    pub fn matches_profile(&self, profile: &Profile) -> bool {
        self.matches_with(&|name| {
            profile
                .properties
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| Cow::Borrowed(v))
                .or(match name {
                    "created_at" => Some(Cow::Owned(Value::DateTime(profile.created_at))),
                    "updated_at" => Some(Cow::Owned(Value::DateTime(profile.updated_at))),
                    _ => None,
                })
        })
    }

    fn matches_with<'a>(&self, get: &impl Fn(&str) -> Option<Cow<'a, Value>>) -> bool {
        match self {
            Filter::All => true,
            Filter::Exists(name) => get(name).is_some(),
            Filter::Compare(name, op, literal) => {
                get(name).is_some_and(|value| op.holds(&value, literal))
            }
            Filter::And(a, b) => a.matches_with(get) && b.matches_with(get),
        }
    }
}

impl Op {
    /// Whether `value OP literal` holds.
    pub fn holds(self, value: &Value, literal: &Value) -> bool {
        let ordering = value.compare(literal);
        let equal = ordering == Some(Ordering::Equal) || value == literal;
        match self {
            Op::Eq => equal,
            Op::Ne => !equal,
            Op::Lt => ordering == Some(Ordering::Less),
            Op::Le => matches!(ordering, Some(Ordering::Less | Ordering::Equal)),
            Op::Gt => ordering == Some(Ordering::Greater),
            Op::Ge => matches!(ordering, Some(Ordering::Greater | Ordering::Equal)),
        }
    }

    fn from_text(text: &str) -> Option<Op> {
        Some(match text {
            "=" | "==" => Op::Eq,
            "!=" => Op::Ne,
            "<" => Op::Lt,
            "<=" => Op::Le,
            ">" => Op::Gt,
            ">=" => Op::Ge,
            _ => return None,
        })
    }
}

#[derive(Debug, PartialEq)]
enum Kind {
    /// A bare word.
    Word(String),
    /// A quoted JSON string, decoded.
    Quoted(String),
    /// An operator.
    Op(Op),
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    /// Byte offset in the text.
    start: usize,
}

impl Token {
    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(&self.kind, Kind::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

fn error(text: &str, byte: usize, what: &str) -> Error {
    let column = text
        .get(..byte)
        .map(|prefix| prefix.chars().count() + 1)
        .unwrap_or(1);
    Error::Malformed(format!("filter: {what} at column {column}"))
}

fn is_op_char(c: char) -> bool {
    matches!(c, '=' | '!' | '<' | '>')
}

fn tokenize(text: &str) -> Result<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            // Find the closing quote, honouring backslash escapes.
            chars.next();
            let mut end = None;
            let mut escaped = false;
            for (i, ch) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == '"' {
                    end = Some(i);
                    break;
                }
            }
            let end = end.ok_or_else(|| error(text, start, "unterminated string"))?;
            let raw = text.get(start..=end).unwrap_or("");
            let decoded: String = serde_json::from_str(raw)
                .map_err(|e| error(text, start, &format!("bad string literal ({e})")))?;
            tokens.push(Token {
                kind: Kind::Quoted(decoded),
                start,
            });
        } else if is_op_char(c) {
            let mut end = start;
            while let Some(&(i, ch)) = chars.peek() {
                if !is_op_char(ch) {
                    break;
                }
                end = i + ch.len_utf8();
                chars.next();
            }
            let op_text = text.get(start..end).unwrap_or("");
            let op = Op::from_text(op_text).ok_or_else(|| {
                error(
                    text,
                    start,
                    &format!("unknown operator `{op_text}` (expected =, !=, <, <=, >, >=)"),
                )
            })?;
            tokens.push(Token {
                kind: Kind::Op(op),
                start,
            });
        } else {
            let mut end = start;
            while let Some(&(i, ch)) = chars.peek() {
                if ch.is_whitespace() || is_op_char(ch) || ch == '"' {
                    break;
                }
                end = i + ch.len_utf8();
                chars.next();
            }
            tokens.push(Token {
                kind: Kind::Word(text.get(start..end).unwrap_or("").to_string()),
                start,
            });
        }
    }
    Ok(tokens)
}

fn parse_clause(text: &str, tokens: &[Token], pos: &mut usize) -> Result<Filter> {
    let Some(first) = tokens.get(*pos) else {
        return Err(error(text, text.len(), "expected a clause"));
    };
    let name = match &first.kind {
        Kind::Word(w) | Kind::Quoted(w) => w.clone(),
        Kind::Op(_) => {
            return Err(error(
                text,
                first.start,
                "expected a property name or `exists`",
            ));
        }
    };
    *pos += 1;
    let next = tokens.get(*pos);
    // `exists NAME` (a property called `exists` can still be compared: `exists = 1`).
    if first.is_keyword("exists") && !matches!(next.map(|t| &t.kind), Some(Kind::Op(_)) | None) {
        let Some(t) = next else {
            return Err(error(text, text.len(), "expected a property name"));
        };
        let name = match &t.kind {
            Kind::Word(w) | Kind::Quoted(w) => w.clone(),
            Kind::Op(_) => return Err(error(text, t.start, "expected a property name")),
        };
        *pos += 1;
        return Ok(Filter::Exists(name));
    }
    if name.is_empty() {
        return Err(error(text, first.start, "empty property name"));
    }
    let op = match next {
        Some(Token {
            kind: Kind::Op(op), ..
        }) => *op,
        Some(t) => {
            return Err(error(
                text,
                t.start,
                "expected an operator (=, !=, <, <=, >, >=)",
            ));
        }
        None => {
            return Err(error(
                text,
                text.len(),
                "expected an operator (=, !=, <, <=, >, >=)",
            ));
        }
    };
    *pos += 1;
    let Some(t) = tokens.get(*pos) else {
        return Err(error(text, text.len(), "expected a value"));
    };
    let literal = match &t.kind {
        Kind::Quoted(s) => Value::from_json(&serde_json::Value::String(s.clone()))
            .unwrap_or_else(|| Value::Str(s.as_str().into())),
        Kind::Word(w) => bare_literal(w).map_err(|what| error(text, t.start, what))?,
        Kind::Op(_) => return Err(error(text, t.start, "expected a value")),
    };
    *pos += 1;
    Ok(Filter::Compare(name, op, literal))
}

fn bare_literal(word: &str) -> std::result::Result<Value, &'static str> {
    if word.eq_ignore_ascii_case("true") {
        return Ok(Value::Bool(true));
    }
    if word.eq_ignore_ascii_case("false") {
        return Ok(Value::Bool(false));
    }
    if word.eq_ignore_ascii_case("null") {
        return Err("`null` is not a value (use `exists NAME`)");
    }
    if let Ok(n @ serde_json::Value::Number(_)) = serde_json::from_str::<serde_json::Value>(word)
        && let Some(v) = Value::from_json(&n)
    {
        return Ok(v);
    }
    if let Some(ts) = Timestamp::parse(word) {
        return Ok(Value::DateTime(ts));
    }
    Ok(Value::Str(word.into()))
}
