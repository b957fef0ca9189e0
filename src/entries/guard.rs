//! The guard's entries (docs/format.md, "Guard link" and "Quarantine"): kind 21, `id` = low
//! 64 bits of the identifier's hash, data = high 64 bits, user id hash u64, time i64 (24
//! bytes, little-endian); kind 22, `id` = low half, data = high half u64 then the identifier
//! as `email:...` or `anonymous_id:...` (UTF-8).

use crate::error::{Error, Result};

fn bad(what: &'static str, reason: &str) -> Error {
    Error::Decode {
        what,
        file: Default::default(),
        offset: 0,
        reason: reason.into(),
    }
}

/// The hash of a guarded identifier (`kind` is `email`, normalised, or `anonymous_id`).
pub(crate) fn ident_hash(kind: &str, value: &str) -> u128 {
    match kind {
        "email" => super::hash_prefixed(b"guard:email\0", value.as_bytes()),
        "anonymous_id" => super::hash_prefixed(b"guard:anonymous_id\0", value.as_bytes()),
        _ => super::hash_concat(&[b"guard:", kind.as_bytes(), &[0], value.as_bytes()]),
    }
}

/// A link entry's `(id, data)`.
pub(crate) fn link_entry(ident: u128, user: u64, time: i64) -> (u64, Vec<u8>) {
    let mut d = Vec::with_capacity(24);
    d.extend_from_slice(&((ident >> 64) as u64).to_le_bytes());
    d.extend_from_slice(&user.to_le_bytes());
    d.extend_from_slice(&time.to_le_bytes());
    (ident as u64, d)
}

/// Decode a link entry: `(identifier hash, user id hash, time)`.
pub(crate) fn link(id: u64, data: &[u8]) -> Result<(u128, u64, i64)> {
    if data.len() != 24 {
        return Err(bad("guard link", "expected 24 bytes"));
    }
    let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap_or([0; 8]));
    Ok((
        (u128::from(word(0)) << 64) | u128::from(id),
        word(8),
        word(16) as i64,
    ))
}

/// A quarantine entry's `(id, data)`.
pub(crate) fn quarantine_entry(ident: u128, text: &str) -> (u64, Vec<u8>) {
    let mut d = Vec::with_capacity(8 + text.len());
    d.extend_from_slice(&((ident >> 64) as u64).to_le_bytes());
    d.extend_from_slice(text.as_bytes());
    (ident as u64, d)
}

/// Decode a quarantine entry: `(identifier hash, text)`.
pub(crate) fn quarantine(id: u64, data: &[u8]) -> Result<(u128, String)> {
    let (hi, text) = data
        .split_at_checked(8)
        .ok_or_else(|| bad("quarantine", "shorter than 8 bytes"))?;
    let hi = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
    let text = std::str::from_utf8(text)
        .map_err(|_| bad("quarantine", "identifier is not UTF-8"))?
        .to_string();
    Ok(((u128::from(hi) << 64) | u128::from(id), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_an_error() {
        let h = ident_hash("email", "a@b.c");
        let (id, d) = link_entry(h, 7, -3);
        assert_eq!(link(id, &d).unwrap(), (h, 7, -3));
        assert!(link(id, &d[..23]).is_err());
        let (id, d) = quarantine_entry(h, "email:a@b.c");
        assert_eq!(quarantine(id, &d).unwrap(), (h, "email:a@b.c".to_string()));
        assert!(quarantine(id, &d[..7]).is_err());
        assert!(quarantine(id, &[0, 0, 0, 0, 0, 0, 0, 0, 0xff]).is_err());
    }
}
