//! Request bodies of the vendor dialects (PostHog, Mixpanel): gzip by `Content-Encoding` or by
//! its magic bytes (posthog-js sends `?compression=gzip-js` without the header), then JSON, or
//! an `application/x-www-form-urlencoded` form whose `data` field holds JSON or base64 of JSON.

use base64::Engine as _;
use serde_json::Value;

use super::ingest::{Reply, gunzip, too_large};

/// A decoded body: its JSON and the other fields of a form (empty for a JSON body).
pub(crate) struct Decoded {
    pub(crate) json: Value,
    pub(crate) form: Vec<(String, String)>,
}

impl Decoded {
    /// A form field.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn is_gzip(body: &[u8]) -> bool {
    body.starts_with(&[0x1f, 0x8b])
}

fn looks_like_json(text: &[u8]) -> bool {
    matches!(text.trim_ascii_start().first(), Some(b'{' | b'['))
}

fn invalid(code: &str, message: &str) -> Reply {
    Reply::error(400, code, message)
}

fn parse_json(bytes: &[u8], what: &str) -> Result<Value, Reply> {
    serde_json::from_slice(bytes)
        .map_err(|e| invalid("invalid_json", &format!("{what} is not valid JSON: {e}")))
}

/// Decode `body` (at most `limit` bytes after gzip decoding).
pub(crate) fn decode(body: &[u8], gzip_header: bool, limit: usize) -> Result<Decoded, Reply> {
    let inflated;
    let body = if gzip_header || is_gzip(body) {
        inflated = gunzip(body, limit)?;
        &inflated[..]
    } else {
        body
    };
    if body.len() > limit {
        return Err(too_large(limit, ""));
    }
    if looks_like_json(body) {
        return Ok(Decoded {
            json: parse_json(body, "the body")?,
            form: Vec::new(),
        });
    }
    let mut form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
    let Some(i) = form.iter().position(|(n, _)| n == "data") else {
        return Err(invalid(
            "invalid_body",
            "the body must be JSON, or a form with a data= field holding JSON or base64 of JSON",
        ));
    };
    let data = form.swap_remove(i).1;
    let json = if looks_like_json(data.as_bytes()) {
        parse_json(data.as_bytes(), "data")?
    } else {
        let text = data.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|e| {
                invalid(
                    "invalid_body",
                    &format!("data is neither JSON nor base64 of JSON: {e}"),
                )
            })?;
        let bytes = if is_gzip(&bytes) {
            gunzip(&bytes, limit)?
        } else {
            bytes
        };
        parse_json(&bytes, "data (base64-decoded)")?
    };
    Ok(Decoded { json, form })
}

/// `name=value` pairs of a query string.
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// An id given as a string or a number, as Segment's `userId` is read (a number becomes its
/// decimal string); `None` when absent, `null` or of another type.
pub(crate) fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
