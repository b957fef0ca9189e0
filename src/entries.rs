//! What the Db layer stores in the log: the entry kinds and their payloads (bincode 2, serde).
//! Storage sees only `(kind, id, bytes)`; this module is the one place that gives them meaning.
//! docs/format.md describes the payloads.

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::props::{DiskPropState, DiskStamps, PropState, StampTable};
use crate::profile::value::Timestamp;
use crate::wire::Wire;

/// Entry kinds (the `kind` byte of a storage entry).
pub(crate) mod kind {
    /// A profile's whole current state; `id` = profile key.
    pub const PROFILE: u8 = 1;
    /// A profile was deleted or merged away; `id` = profile key; no data.
    pub const TOMBSTONE: u8 = 2;
    /// A merged-away key resolves to another key; `id` = old key; data = survivor key (u64 LE).
    pub const REDIRECT: u8 = 3;
    /// A company's state; `id` = company key.
    pub const COMPANY: u8 = 4;
    /// A property name registered; `id` = name number; data = UTF-8 name.
    pub const PROP_NAME: u8 = 5;
    /// A `messageId` applied; `id` = low 64 bits of its xxh3-128 hash; data = high 64 bits.
    pub const DEDUPE: u8 = 6;
    /// A suppressed identifier; `id` = low 64 bits of its hash; data = high 64 bits.
    pub const SUPPRESS: u8 = 7;
    /// The next profile key to assign; `id` = 0; data = u64 LE. Written with deletes so that
    /// a key is never reused even after its tombstone is compacted away.
    pub const NEXT_KEY: u8 = 8;
}

/// Identifier half of a profile record: first in the payload, so that recovery can decode it
/// alone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, Encode, Decode)]
pub(crate) struct Ids {
    pub user_id: Option<String>,
    /// As last given (lookups use the normalised form).
    pub email: Option<String>,
    pub anonymous_ids: Vec<String>,
    pub company_id: Option<String>,
}

/// A profile as stored. On disk (docs/format.md, "Profile record") the property stamps are
/// written once each in a stamp table and referred to by index: see [`DiskProfileRecord`].
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ProfileRecord {
    pub ids: Ids,
    /// Timestamp of the first call that identified the person (earliest over merges).
    pub first_seen: Timestamp,
    /// Timestamp of the newest call applied.
    pub updated_at: Timestamp,
    /// Properties by name number, sorted by it.
    pub props: Vec<(u32, PropState)>,
}

/// A profile record exactly as its bytes decode (bincode 2 derive); [`ProfileRecord`] is it
/// with the stamp indexes resolved.
#[derive(Debug, Decode, Encode)]
pub(crate) struct DiskProfileRecord {
    pub ids: Ids,
    pub first_seen: Timestamp,
    pub updated_at: Timestamp,
    pub stamps: DiskStamps,
    pub props: Vec<(u32, DiskPropState)>,
}

impl<Ctx> Decode<Ctx> for ProfileRecord {
    fn decode<D: bincode::de::Decoder<Context = Ctx>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, bincode::error::DecodeError> {
        let disk = DiskProfileRecord::decode(decoder)?;
        let mut props = Vec::with_capacity(disk.props.len());
        for (id, p) in disk.props {
            let state = p
                .resolve(&disk.stamps)
                .ok_or(bincode::error::DecodeError::Other(
                    "property stamp index outside the stamp table",
                ))?;
            props.push((id, state));
        }
        Ok(ProfileRecord {
            ids: disk.ids,
            first_seen: disk.first_seen,
            updated_at: disk.updated_at,
            props,
        })
    }
}

impl Wire for Ids {
    fn put(&self, out: &mut Vec<u8>) {
        self.user_id.put(out);
        self.email.put(out);
        self.anonymous_ids.put(out);
        self.company_id.put(out);
    }
}

/// The bytes of [`DiskProfileRecord`]'s bincode derive, written by [`crate::wire`] straight
/// from the record (it is encoded on every call).
impl Wire for ProfileRecord {
    fn put(&self, out: &mut Vec<u8>) {
        self.ids.put(out);
        self.first_seen.put(out);
        self.updated_at.put(out);
        let table = StampTable::of(self.props.iter().map(|(_, p)| p));
        table.put(out);
        crate::wire::put_u64(out, self.props.len() as u64);
        for (id, p) in &self.props {
            id.put(out);
            p.put_indexed(&table, out);
        }
    }
}

/// Encode a profile record into a buffer of `capacity` bytes (a guess of its size).
pub(crate) fn encode_profile(rec: &ProfileRecord, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    rec.put(&mut out);
    out
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

/// The 128-bit hash used for messageIds and suppressed identifiers.
pub(crate) fn hash128(domain: &str, text: &str) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(domain.as_bytes());
    h.update(&[0]);
    h.update(text.as_bytes());
    h.digest128()
}

/// Split a 128-bit hash into `(id, data)` of an entry.
pub(crate) fn split_hash(h: u128) -> (u64, [u8; 8]) {
    (h as u64, ((h >> 64) as u64).to_le_bytes())
}

/// Join `(id, data)` of an entry back into the hash.
pub(crate) fn join_hash(id: u64, data: &[u8]) -> Result<u128> {
    let hi = read_u64(data, "hash")?;
    Ok(((hi as u128) << 64) | id as u128)
}
