//! The record codec layer: what the Db layer stores in the log, the entry kinds and their
//! payloads. Storage sees only `(kind, id, bytes)`; this module is the one place that gives
//! them meaning. docs/format.md describes the payloads byte by byte.
//!
//! - [`wire`]: the primitives (bincode 2 `standard()` integers, strings, options), a bounded
//!   [`wire::Reader`].
//! - [`values`]: property values, property states, stamp tables.
//! - [`profile`]: full profile records and delta records (one encoder, one decoder each).
//! - [`chain`]: reading a profile back through its chain of delta records.
//! - [`raw`]: states a partial fold captures as bytes for a call that overwrites them.
//! - this file: the entry kinds, company records (bincode derive), the small fixed payloads.

pub(crate) mod chain;
pub(crate) mod guard;
pub(crate) mod history;
pub(crate) mod profile;
pub(crate) mod raw;
pub(crate) mod values;
pub(crate) mod wire;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::storage::Location;
use crate::types::state::PropState;

pub(crate) use profile::{Ids, ProfileRecord};

/// Entry kinds (the `kind` byte of a storage entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum EntryKind {
    /// A profile's whole current state; `id` = profile key.
    Profile = 1,
    /// A profile was deleted or merged away; `id` = profile key; no data.
    Tombstone = 2,
    /// A merged-away key resolves to another key; `id` = old key; data = survivor key (u64 LE).
    Redirect = 3,
    /// A company's state; `id` = company key.
    Company = 4,
    /// A property name registered; `id` = name number; data = UTF-8 name.
    PropName = 5,
    /// A `messageId` applied; `id` = low 64 bits of its xxh3-128 hash; data = high 64 bits.
    Dedupe = 6,
    /// A suppressed identifier; `id` = low 64 bits of its hash; data = high 64 bits.
    Suppress = 7,
    /// The next profile key to assign; `id` = 0; data = u64 LE. Written with deletes so that
    /// a key is never reused even after its tombstone is compacted away.
    NextKey = 8,
    /// What one call changed in a profile, linked to the profile's previous record
    /// ([`profile::put_delta`]); `id` = profile key.
    ProfileDelta = 9,
    /// MessageIds packed by compaction ([`hash_block`]): `id` = 0; data = n x 16 bytes, each
    /// an xxh3-128 hash as a u128 little-endian (the `Dedupe` entry's id and data), oldest
    /// first. One block replaces up to 4,096 `Dedupe` entries and the frames that held only
    /// them.
    DedupeBlock = 10,
    /// Where the compaction that wrote it moved records that deltas written during it link
    /// to ([`chain::Forwards`], [`forward_block`]): `id` = 0; data = n x 24 bytes, each the
    /// old and the new place (segment, offset, length: u32 LE each). Written to the log and
    /// synced before the compaction switches its segments in; never copied by a compaction.
    Forward = 11,
    /// One step of a profile's history (issue 16, [`history`]); `id` = profile key. Kept by
    /// compaction while younger than `Options::history_retention` and its profile lives.
    History = 20,
    /// The guard linked an identifier to a user id ([`guard`]); `id` = low half of the
    /// identifier's hash.
    GuardLink = 21,
    /// The guard quarantined an identifier ([`guard`]); `id` = low half of its hash.
    Quarantine = 22,
    /// The position in an external log (a Kafka topic partition) applied up to, written in the
    /// frame of the call it covers ([`SourceRecord`]); `id` = [`source_id`] of the topic
    /// partition. Kinds 30-39 belong to the consumer of issue 17.
    SourceOffset = 30,
}

impl EntryKind {
    /// The kind byte.
    pub(crate) const fn byte(self) -> u8 {
        self as u8
    }
}

/// A kind byte no version of profiledb writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct UnknownKind(pub u8);

impl TryFrom<u8> for EntryKind {
    type Error = UnknownKind;

    fn try_from(b: u8) -> std::result::Result<EntryKind, UnknownKind> {
        Ok(match b {
            1 => EntryKind::Profile,
            2 => EntryKind::Tombstone,
            3 => EntryKind::Redirect,
            4 => EntryKind::Company,
            5 => EntryKind::PropName,
            6 => EntryKind::Dedupe,
            7 => EntryKind::Suppress,
            8 => EntryKind::NextKey,
            9 => EntryKind::ProfileDelta,
            10 => EntryKind::DedupeBlock,
            11 => EntryKind::Forward,
            20 => EntryKind::History,
            21 => EntryKind::GuardLink,
            22 => EntryKind::Quarantine,
            30 => EntryKind::SourceOffset,
            other => return Err(UnknownKind(other)),
        })
    }
}

/// Encode a full profile record into a buffer of `capacity` bytes (a guess of its size).
pub(crate) fn encode_profile(rec: &ProfileRecord, capacity: usize) -> Vec<u8> {
    encode_profile_measured(rec, capacity, None)
}

/// [`encode_profile`], and the record's state lengths into `lens` if given
/// (`profile::put_full`: what the writer cache keeps beside it).
pub(crate) fn encode_profile_measured(
    rec: &ProfileRecord,
    capacity: usize,
    lens: Option<&mut Vec<u8>>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    profile::put_full(rec, &mut out, lens);
    out
}

/// The payload of a [`EntryKind::SourceOffset`] entry (bincode derive): the fields of
/// [`crate::types::SourceOffset`].
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(crate) struct SourceRecord {
    pub topic: String,
    pub partition: i32,
    pub next_offset: i64,
    pub next_call: u32,
}

impl SourceRecord {
    pub(crate) fn from_offset(at: &crate::types::SourceOffset) -> SourceRecord {
        SourceRecord {
            topic: at.topic.clone(),
            partition: at.partition,
            next_offset: at.next_offset,
            next_call: at.next_call,
        }
    }

    pub(crate) fn to_offset(&self) -> crate::types::SourceOffset {
        crate::types::SourceOffset {
            topic: self.topic.clone(),
            partition: self.partition,
            next_offset: self.next_offset,
            next_call: self.next_call,
        }
    }
}

/// The entry id of a topic partition's [`EntryKind::SourceOffset`] entries.
pub(crate) fn source_id(topic: &str, partition: i32) -> u64 {
    hash128("source offset", &format!("{topic}/{partition}")) as u64
}

/// A company as stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Encode, Decode)]
pub(crate) struct CompanyRecord {
    pub id: String,
    /// Properties by name, sorted by name (companies have few; no interning).
    pub props: Vec<(String, PropState)>,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
}

/// Most bytes one decode may reserve for what it decodes. bincode allocates a string or a
/// vector from its length prefix *before* reading the elements, so without a limit a damaged
/// record (or a hint whose CRC matches but whose payload is not a snapshot) with a length like
/// 2^62 aborts the process with a failed allocation (found by the `open_dir` fuzz target).
/// With a limit, such a length is a `Decode` error. A decoded value takes at most a few dozen
/// bytes of memory per input byte, so inputs up to [`SMALL_INPUT`] (nearly every record) get
/// 1024 times their size at most; bigger ones (a record lives in one frame, at most 1 GiB) get
/// 4 GiB. What a bad length can still reserve is address space that is never touched: the read
/// of the elements fails first.
const SMALL_INPUT: usize = 64 << 10;
const SMALL_LIMIT: usize = SMALL_INPUT * 1024;
const LARGE_LIMIT: usize = u32::MAX as usize;

/// [`config`] with a decode limit.
fn limited<const LIMIT: usize>() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<LIMIT>()
}

/// Encode a record (bincode's own derive: several times faster than its serde path).
pub(crate) fn encode<T: Encode>(value: &T) -> Vec<u8> {
    encode_sized(value, 256)
}

/// Encode into a buffer of `capacity` bytes, to avoid regrowing it for big records.
pub(crate) fn encode_sized<T: Encode>(value: &T, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    // Encoding plain data structures into a Vec cannot fail.
    let _ = bincode::encode_into_std_write(value, &mut out, config());
    out
}

/// Decode a record; `what` names it in the error.
pub(crate) fn decode<T: Decode<()>>(bytes: &[u8], what: &'static str) -> Result<T> {
    if bytes.len() <= SMALL_INPUT {
        bincode::decode_from_slice(bytes, limited::<SMALL_LIMIT>())
    } else {
        bincode::decode_from_slice(bytes, limited::<LARGE_LIMIT>())
    }
    .map(|(v, _)| v)
    .map_err(|e| decode_error(what, e))
}

/// A decode failure of `what` (the caller adds file and offset).
fn decode_error(what: &'static str, e: bincode::error::DecodeError) -> Error {
    Error::Decode {
        what,
        file: Default::default(),
        offset: 0,
        reason: e.to_string(),
    }
}

/// A u64 payload.
pub(crate) fn u64_bytes(v: u64) -> [u8; 8] {
    v.to_le_bytes()
}

/// Read a u64 payload.
pub(crate) fn read_u64(bytes: &[u8], what: &'static str) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::Decode {
        what,
        file: Default::default(),
        offset: 0,
        reason: format!("expected 8 bytes, got {}", bytes.len()),
    })?;
    Ok(u64::from_le_bytes(arr))
}

/// The 128-bit hash used for messageIds and suppressed identifiers: XXH3-128 of `domain`, a
/// zero byte and `text`.
pub(crate) fn hash128(domain: &str, text: &str) -> u128 {
    hash_concat(&[domain.as_bytes(), &[0], text.as_bytes()])
}

/// XXH3-128 of the concatenation of `parts`. Hashed in one shot from a stack buffer when they
/// fit in it (an identifier or a messageId always does in practice): the streaming hasher's
/// state is ~600 bytes to set up, more than the hash of a short text costs. The value is the
/// same either way (XXH3 of the same bytes), so stored hashes do not change.
pub(crate) fn hash_concat(parts: &[&[u8]]) -> u128 {
    const ROOM: usize = 256;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len <= ROOM {
        let mut buf = [0u8; ROOM];
        let mut at = 0;
        for p in parts {
            buf[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
        xxhash_rust::xxh3::xxh3_128(&buf[..at])
    } else {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for p in parts {
            h.update(p);
        }
        h.digest128()
    }
}

/// [`hash_concat`] of `prefix` (a domain and its zero byte, a constant) and `text`: the same
/// value, the prefix copied by code of its known length instead of a `memcpy` call (the
/// messageId's hash of every call).
#[inline]
pub(crate) fn hash_prefixed<const P: usize>(prefix: &[u8; P], text: &[u8]) -> u128 {
    const ROOM: usize = 128;
    const { assert!(P <= ROOM) };
    let len = P + text.len();
    if len <= ROOM {
        let mut buf = [0u8; ROOM];
        buf[..P].copy_from_slice(prefix);
        buf[P..len].copy_from_slice(text);
        xxhash_rust::xxh3::xxh3_128(&buf[..len])
    } else {
        hash_concat(&[prefix, text])
    }
}

/// Split a 128-bit hash into `(id, data)` of an entry.
pub(crate) fn split_hash(h: u128) -> (u64, [u8; 8]) {
    (h as u64, ((h >> 64) as u64).to_le_bytes())
}

/// The hashes of a [`EntryKind::DedupeBlock`], oldest first; an error unless the data is a
/// whole, non-zero number of hashes.
pub(crate) fn hash_block(data: &[u8]) -> Result<impl Iterator<Item = u128> + '_> {
    if data.is_empty() || !data.len().is_multiple_of(16) {
        return Err(Error::Decode {
            what: "messageId block",
            file: Default::default(),
            offset: 0,
            reason: format!(
                "{} bytes is not a whole number of 16-byte hashes",
                data.len()
            ),
        });
    }
    Ok(data
        .chunks_exact(16)
        .map(|c| u128::from_le_bytes(c.try_into().unwrap_or_default())))
}

/// Bytes of one pair of a [`EntryKind::Forward`] entry.
pub(crate) const FORWARD_PAIR: usize = 24;

/// The data of a [`EntryKind::Forward`] entry holding `pairs` (old place, new place).
pub(crate) fn forward_block(pairs: &[(Location, Location)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pairs.len() * FORWARD_PAIR);
    for (old, new) in pairs {
        for l in [old, new] {
            out.extend_from_slice(&l.segment.to_le_bytes());
            out.extend_from_slice(&l.offset.to_le_bytes());
            out.extend_from_slice(&l.len.to_le_bytes());
        }
    }
    out
}

/// The pairs of a [`EntryKind::Forward`] entry; an error unless the data is a whole, non-zero
/// number of pairs.
pub(crate) fn forward_pairs(
    data: &[u8],
) -> std::result::Result<impl Iterator<Item = (Location, Location)> + '_, String> {
    if data.is_empty() || !data.len().is_multiple_of(FORWARD_PAIR) {
        return Err(format!(
            "{} bytes is not a whole number of {FORWARD_PAIR}-byte pairs",
            data.len()
        ));
    }
    let u32_at = |c: &[u8], i: usize| u32::from_le_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
    let loc = move |c: &[u8], i: usize| Location {
        segment: u32_at(c, i),
        offset: u32_at(c, i + 4),
        len: u32_at(c, i + 8),
    };
    Ok(data
        .chunks_exact(FORWARD_PAIR)
        .map(move |c| (loc(c, 0), loc(c, 12))))
}

/// Join `(id, data)` of an entry back into the hash.
pub(crate) fn join_hash(id: u64, data: &[u8]) -> Result<u128> {
    let hi = read_u64(data, "hash")?;
    Ok(((hi as u128) << 64) | id as u128)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    /// The streaming form the stored hashes were first written with.
    fn streamed(parts: &[&[u8]]) -> u128 {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for p in parts {
            h.update(p);
        }
        h.digest128()
    }

    proptest! {
        #[test]
        fn the_one_shot_hash_is_the_streamed_one(
            a in proptest::collection::vec(any::<u8>(), 0..40),
            b in proptest::collection::vec(any::<u8>(), 0..300),
            c in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let parts: [&[u8]; 4] = [&a, &[0], &b, &c];
            prop_assert_eq!(super::hash_concat(&parts), streamed(&parts));
        }
    }

    proptest! {
        #[test]
        fn the_prefixed_hash_is_the_streamed_one(
            text in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            prop_assert_eq!(
                super::hash_prefixed(b"message\0", &text),
                streamed(&[b"message", &[0], &text])
            );
            prop_assert_eq!(
                super::hash_prefixed(b"guard:email\0", &text),
                streamed(&[b"guard:email", &[0], &text])
            );
            prop_assert_eq!(
                super::hash_prefixed(b"guard:user\0", &text),
                streamed(&[b"guard:user", &[0], &text])
            );
        }
    }

    #[test]
    fn identifier_and_message_hashes_are_unchanged() {
        let long = "x".repeat(1000);
        for (domain, text) in [
            ("message", "m-1"),
            ("guard:user", "u-42"),
            ("message", &*long),
        ] {
            assert_eq!(
                super::hash128(domain, text),
                streamed(&[domain.as_bytes(), &[0], text.as_bytes()])
            );
        }
        // The guard's identifier hash: once `format!("guard:{kind}")` hashed with `hash128`.
        for kind in ["email", "anonymous_id", "other"] {
            assert_eq!(
                super::guard::ident_hash(kind, "a@b.co"),
                super::hash128(&format!("guard:{kind}"), "a@b.co")
            );
        }
        // The messageId's (`apply::message_hash`).
        for text in ["m-1", &*long] {
            assert_eq!(
                super::hash_prefixed(b"message\0", text.as_bytes()),
                super::hash128("message", text)
            );
        }
        // The values themselves, as stores on disk hold them (XXH3-128 of `domain`, a zero
        // byte and `text`, computed apart from this crate): a change on both sides above would
        // still fail here.
        const PINNED: [(&str, &str, u128); 3] = [
            ("message", "m-1", 0xc843f029c64e48f50a5a21dcd5813965),
            ("guard:user", "u-42", 0x4ba0d260598598fc0b01c772bcf2922d),
            ("user_id", "alice", 0x649d580b36bc6f5e2e40e81e8d5576ad),
        ];
        for (domain, text, want) in PINNED {
            assert_eq!(super::hash128(domain, text), want, "{domain} {text}");
        }
        assert_eq!(super::hash_prefixed(b"message\0", b"m-1"), PINNED[0].2);
    }
}
