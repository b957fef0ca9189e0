//! HTTP basic auth as Segment's clients send it: the write key is the user, the password empty.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// What the `Authorization` header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// No usable basic-auth header (absent, or another scheme): the body's `writeKey` may
    /// still authenticate the request.
    None,
    /// The basic-auth user.
    Key(String),
    /// A `Basic` header that cannot be decoded.
    Malformed,
}

/// The write key of a request's basic-auth header.
pub(crate) fn basic_auth_key(headers: &HeaderMap) -> Credentials {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Credentials::None;
    };
    let Ok(value) = value.to_str() else {
        return Credentials::Malformed;
    };
    let value = value.trim();
    let Some((scheme, rest)) = value.split_once(' ') else {
        return Credentials::None;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Credentials::None;
    }
    let Some(decoded) = base64_decode(rest.trim()) else {
        return Credentials::Malformed;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Credentials::Malformed;
    };
    let user = match decoded.split_once(':') {
        Some((user, _password)) => user,
        None => decoded.as_str(),
    };
    if user.is_empty() {
        Credentials::None
    } else {
        Credentials::Key(user.to_string())
    }
}

/// Decode standard (or URL-safe) base64, padding optional. `None` on any other character.
pub(crate) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4 + 1);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_base64() {
        assert_eq!(base64_decode("a2V5Og==").unwrap(), b"key:");
        assert_eq!(base64_decode("a2V5Og").unwrap(), b"key:");
        assert_eq!(base64_decode("").unwrap(), b"");
        assert_eq!(base64_decode("YWJj").unwrap(), b"abc");
        assert!(base64_decode("a b").is_none());
    }

    #[test]
    fn reads_the_user() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_auth_key(&h), Credentials::None);
        h.insert(AUTHORIZATION, "Basic a2V5Og==".parse().unwrap());
        assert_eq!(basic_auth_key(&h), Credentials::Key("key".into()));
        h.insert(AUTHORIZATION, "basic a2V5".parse().unwrap());
        assert_eq!(basic_auth_key(&h), Credentials::Key("key".into()));
        h.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_auth_key(&h), Credentials::Malformed);
        h.insert(AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert_eq!(basic_auth_key(&h), Credentials::None);
    }
}
