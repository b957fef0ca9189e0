//! The fuzz checks, one copy each, shared by the cargo-fuzz targets in `fuzz/fuzz_targets/`
//! (which include this file with `#[path]`) and by `tests/fuzz_corpus.rs` (which replays every
//! file of `fuzz/corpus/<target>/` through them under `cargo test`, without libFuzzer).
//!
//! Each check takes arbitrary bytes and panics only when profiledb misbehaves: a panic inside
//! the library, an error of a kind the input cannot explain, or a broken property. Uses only
//! profiledb's public API plus `crc32fast` and `serde_json` (dependencies of both crates).
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use profiledb::profile::validate::validate;
use profiledb::storage::{self, Entry};
use profiledb::{Db, Durability, Error, Filter, Message, Options, Selector, Status};
use serde_json::{Map, Number, Value as Json};

#[path = "reference_parse.rs"]
mod reference_parse;

/// Arbitrary bytes read as a stream of choices; reads past the end give zeros.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// Up to `n` bytes (fewer if the input runs out).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// One of `items`.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.u8() as usize % items.len()]
    }
}

// ---------------------------------------------------------------------------------------------
// record_decode
// ---------------------------------------------------------------------------------------------

/// The frame decoder on arbitrary bytes: never panics; a frame it accepts re-encodes to exactly
/// the same bytes, and any one-bit change of its body or any truncation is rejected. The same
/// bytes with the CRC field made right are decoded too (so the structural checks behind the CRC
/// are reached), and a frame built from the input round-trips.
pub fn record_decode(data: &[u8]) {
    check_frame(data);
    if let Some(fixed) = with_frame_crc_fixed(data) {
        check_frame(&fixed);
    }
    build_and_decode(data);
}

fn check_frame(data: &[u8]) {
    let mut entries: Vec<(u8, u64, Vec<u8>)> = Vec::new();
    let Ok((seq, total)) = storage::decode_frame(data, |kind, id, bytes| {
        entries.push((kind, id, bytes.to_vec()))
    }) else {
        return;
    };
    assert!(
        (20..=data.len()).contains(&total),
        "frame length {total} of {} bytes",
        data.len()
    );
    let borrowed: Vec<Entry<'_>> = entries
        .iter()
        .map(|(kind, id, data)| Entry {
            kind: *kind,
            id: *id,
            data,
        })
        .collect();
    let mut again = Vec::new();
    storage::encode_frame(&mut again, seq, &borrowed).expect("a decoded frame re-encodes");
    assert_eq!(again, data[..total], "decode/encode is not the identity");
    // CRC-32 detects every one-bit error: flip one bit of the body.
    let body = total - 8;
    let pick = (seq as usize ^ entries.len()) % (body * 8);
    let mut flipped = data[..total].to_vec();
    flipped[8 + pick / 8] ^= 1 << (pick % 8);
    assert!(
        storage::decode_frame(&flipped, |_, _, _| {}).is_err(),
        "a one-bit change at body byte {} went unnoticed",
        pick / 8
    );
    let cut = (seq as usize) % total;
    assert!(
        storage::decode_frame(&data[..cut], |_, _, _| {}).is_err(),
        "a frame cut to {cut} of {total} bytes was accepted"
    );
}

/// `data` with its frame CRC field set to the CRC of the body its length field names.
fn with_frame_crc_fixed(data: &[u8]) -> Option<Vec<u8>> {
    let len = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let body = data.get(8..8usize.checked_add(len)?)?;
    let mut fixed = data.to_vec();
    fixed[4..8].copy_from_slice(&crc32fast::hash(body).to_le_bytes());
    Some(fixed)
}

fn build_and_decode(data: &[u8]) {
    let mut inp = Input::new(data);
    let seq = inp.u64();
    let n = inp.u8() % 8;
    let mut entries = Vec::new();
    for _ in 0..n {
        let kind = inp.u8();
        let id = inp.u64();
        let len = inp.u8() as usize;
        entries.push(Entry {
            kind,
            id,
            data: inp.bytes(len),
        });
    }
    let mut buf = Vec::new();
    storage::encode_frame(&mut buf, seq, &entries).expect("small frame");
    let mut got = Vec::new();
    let (s, total) = storage::decode_frame(&buf, |k, i, d| got.push((k, i, d.to_vec())))
        .expect("an encoded frame decodes");
    assert_eq!((s, total), (seq, buf.len()));
    assert_eq!(got.len(), entries.len());
    for (g, e) in got.iter().zip(&entries) {
        assert_eq!((g.0, g.1, &g.2[..]), (e.kind, e.id, e.data));
    }
}

// ---------------------------------------------------------------------------------------------
// open_dir
// ---------------------------------------------------------------------------------------------

/// A fresh directory for one check (removed by `Drop`). `PROFILEDB_FUZZ_TMP` overrides the
/// parent (fuzz runs use a tmpfs: every open fsyncs).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let parent = std::env::var_os("PROFILEDB_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = parent.join(format!("profiledb-fuzz-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create fuzz temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// File names an `open_dir` input can create, by `selector % 16` (see [`file_name`]).
pub fn file_name(sel: u8) -> String {
    let id = |x: u8| x as u32 % 8 + 1;
    match sel % 16 {
        s @ 0..=7 => format!("{:010}.seg", id(s)),
        8 | 9 => format!("{:010}.seg.tmp", id(sel >> 4)),
        10 => format!("{:010}.seg.quarantined", id(sel >> 4)),
        11 => "HINT".into(),
        12 => "COMPACT".into(),
        13 => "HINT.tmp".into(),
        14 => "COMPACT.tmp".into(),
        _ => "LOCK".into(),
    }
}

/// The selector of a file name made by [`file_name`], for building seeds.
pub fn file_selector(name: &str) -> Option<u8> {
    (0..=255u8).find(|&s| file_name(s) == name)
}

/// Mode of a file in an `open_dir` input.
pub const RAW: u8 = 0;
pub const BUILT: u8 = 1;
pub const RAW_CRC_FIXED: u8 = 2;

/// An `open_dir` input: a flags byte (bit 0: open with `repair`; bit 1: after a successful
/// open, write, compact, close and reopen), then up to 10 files, each
/// `name selector u8 | mode u8 | ...`: mode [`RAW`] = `len u16 | bytes`; [`RAW_CRC_FIXED`] =
/// the same with every CRC (segment header, frames, hint, manifest) recomputed, so that
/// mutations of real files get past the checksums; [`BUILT`] = a structurally valid file
/// built from the following choices (see [`segment_file`], [`hint_file`], [`manifest_file`]).
///
/// Open (`Db::open`) must return `Ok` or a typed error and never panic; once open, stats,
/// check, scan, get, company and members must not panic; with bit 1, a store that opened and
/// closed cleanly must open again.
pub fn open_dir(data: &[u8]) {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let dir = TempDir::new("open");
    let mut files = 0;
    while !inp.is_empty() && files < 10 {
        files += 1;
        let sel = inp.u8();
        let name = file_name(sel);
        let bytes = match inp.u8() % 3 {
            RAW => {
                let len = inp.u16() as usize;
                inp.bytes(len).to_vec()
            }
            BUILT => build_file(&name, &mut inp),
            _ => {
                let len = inp.u16() as usize;
                fix_crcs(&name, inp.bytes(len).to_vec())
            }
        };
        std::fs::write(dir.path().join(&name), bytes).expect("write fuzz file");
    }
    let options = Options {
        repair: flags & 1 != 0,
        ..fuzz_options()
    };
    let db = match Db::open(dir.path(), options) {
        Ok(db) => db,
        Err(e) => {
            assert!(
                !matches!(e, Error::Locked { .. } | Error::Options { .. }),
                "{e}"
            );
            let _ = e.to_string();
            return;
        }
    };
    exercise(&db);
    if flags & 2 == 0 {
        drop(db);
        return;
    }
    let _ = db.apply_json(
        br#"{"userId":"fuzz-user","traits":{"email":"Fuzz@Example.com","plan":"pro","company":{"id":"c1","size":3}},"$add":{"logins":1}}"#,
    );
    let _ = db.apply_json(br#"{"type":"alias","previousId":"fuzz-anon","userId":"fuzz-user"}"#);
    if flags & 4 != 0 {
        let _ = db.compact();
    }
    if db.close().is_err() {
        return;
    }
    match Db::open(dir.path(), fuzz_options()) {
        Ok(db) => exercise(&db),
        Err(e) => panic!("a store that opened and closed cleanly does not reopen: {e}"),
    }
}

/// Options of the fuzzed stores: fast, small segments, no background thread.
pub fn fuzz_options() -> Options {
    Options {
        durability: Durability::Buffered,
        segment_size: 4096,
        compaction_ratio: None,
        dedupe_window: 1000,
        profile_cache_bytes: 64 << 10,
        ..Options::default()
    }
}

/// Every read an open store offers; results are not checked, only that nothing panics.
fn exercise(db: &Db) {
    let stats = db.stats();
    let _ = serde_json::to_string(&stats);
    let _ = db.check();
    let mut companies = Vec::new();
    let mut keys = Vec::new();
    let _ = db.scan(&Filter::All, &mut |p| {
        keys.push(p.key);
        companies.extend(p.company_id.clone());
        let _ = serde_json::to_string(&p);
        keys.len() < 64
    });
    for key in (0..4).chain(keys.iter().map(|k| k.wrapping_add(1))) {
        let _ = db.get(&Selector::Key(key));
    }
    for s in [
        Selector::UserId("fuzz-user".into()),
        Selector::Email("fuzz@example.com".into()),
        Selector::AnonymousId("fuzz-anon".into()),
    ] {
        let _ = db.get(&s);
    }
    companies.push("c1".into());
    for c in &companies {
        let _ = db.company(c);
        let _ = db.members(c);
    }
}

fn build_file(name: &str, inp: &mut Input<'_>) -> Vec<u8> {
    if name == "HINT" || name == "HINT.tmp" {
        hint_file(inp)
    } else if name.starts_with("COMPACT") {
        manifest_file(inp)
    } else if let Some(id) = name.get(..10).and_then(|d| d.parse::<u32>().ok()) {
        segment_file(inp, id)
    } else {
        Vec::new()
    }
}

/// A segment built from choices: a header (kind, id, seq floor; optionally wrong), frames
/// with valid CRCs (seq steps, entries of the Db's kinds (`BUILT_KINDS`) or others, small or full ids,
/// data bytes), then optional damage (garbage, truncation or a flipped bit).
pub fn segment_file(inp: &mut Input<'_>, id: u32) -> Vec<u8> {
    let hk = inp.u8();
    let kind = match hk & 3 {
        0 | 1 => 1,
        2 => 2,
        _ => inp.u8(),
    };
    let header_id = if hk & 4 != 0 { id.wrapping_add(1) } else { id };
    let seq_floor = inp.u8() as u64;
    let mut out = Vec::new();
    out.extend_from_slice(b"PDBSEG\r\n");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&header_id.to_le_bytes());
    out.extend_from_slice(&seq_floor.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    let crc = crc32fast::hash(&out) ^ u32::from(hk & 8 != 0);
    out.extend_from_slice(&crc.to_le_bytes());
    let mut seq = seq_floor;
    for _ in 0..inp.u8() % 8 {
        let step = inp.u8();
        seq = if step == 0xFF {
            inp.u64()
        } else {
            seq.wrapping_add(step as u64)
        };
        let mut entries = Vec::new();
        for _ in 0..inp.u8() % 4 {
            let k = inp.u8();
            let id = if k & 0x80 != 0 {
                inp.u64()
            } else {
                inp.u8() as u64
            };
            let len = match inp.u8() {
                0xFF => inp.u16() as usize,
                l => l as usize,
            };
            entries.push(Entry {
                kind: BUILT_KINDS[(k & 0x7F) as usize % BUILT_KINDS.len()],
                id,
                data: inp.bytes(len),
            });
        }
        storage::encode_frame(&mut out, seq, &entries).expect("small frame");
    }
    damage(inp, &mut out);
    out
}

/// The kinds a built entry takes: none (0), every kind the Db writes, and two it does not.
const BUILT_KINDS: [u8; 17] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 20, 21, 22, 30, 99];

fn damage(inp: &mut Input<'_>, out: &mut Vec<u8>) {
    match inp.u8() % 4 {
        1 => {
            let n = inp.u8() as usize;
            out.extend_from_slice(inp.bytes(n));
        }
        2 => {
            let cut = inp.u16() as usize % (out.len() + 1);
            out.truncate(out.len() - cut);
        }
        3 if !out.is_empty() => {
            let bit = inp.u16() as usize % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
        }
        _ => {}
    }
}

/// A hint built from choices: seq, active segment, offset, covered ids, payload bytes; the
/// version and CRC optionally wrong.
pub fn hint_file(inp: &mut Input<'_>) -> Vec<u8> {
    let flags = inp.u8();
    let mut out = Vec::new();
    out.extend_from_slice(b"PDBHINT\n");
    out.extend_from_slice(&(1 + u16::from(flags & 1)).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    let seq = if flags & 2 != 0 {
        inp.u64()
    } else {
        inp.u8() as u64
    };
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(inp.u8() as u32 % 9).to_le_bytes());
    out.extend_from_slice(&(inp.u16() as u32).to_le_bytes());
    let n = inp.u8() % 5;
    out.extend_from_slice(&(n as u32).to_le_bytes());
    for _ in 0..n {
        out.extend_from_slice(&(inp.u8() as u32 % 9).to_le_bytes());
    }
    let len = inp.u16() as usize % 4096;
    let payload = inp.bytes(len);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out) ^ u32::from(flags & 4 != 0);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A compaction manifest built from choices: new ids and old ids (1..=8, or 0), valid CRC
/// unless told otherwise.
pub fn manifest_file(inp: &mut Input<'_>) -> Vec<u8> {
    let flags = inp.u8();
    let mut out = Vec::new();
    out.extend_from_slice(b"PDBCMPT\n");
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    for _ in 0..2 {
        let n = inp.u8() % 4;
        out.extend_from_slice(&(n as u32).to_le_bytes());
        for _ in 0..n {
            out.extend_from_slice(&(inp.u8() as u32 % 9).to_le_bytes());
        }
    }
    let crc = crc32fast::hash(&out) ^ u32::from(flags & 1 != 0);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Recompute every CRC of a file: the trailing CRC of a hint or manifest; the header CRC and
/// each frame's CRC (following the length fields) of a segment.
pub fn fix_crcs(name: &str, mut b: Vec<u8>) -> Vec<u8> {
    if name.starts_with("HINT") || name.starts_with("COMPACT") {
        if let Some(n) = b.len().checked_sub(4) {
            let crc = crc32fast::hash(&b[..n]);
            b[n..].copy_from_slice(&crc.to_le_bytes());
        }
        return b;
    }
    if !name.contains(".seg") || b.len() < 32 {
        return b;
    }
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    let mut at = 32usize;
    while let Some(len) = b.get(at..at + 4) {
        let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        let Some(end) = (at + 8).checked_add(len).filter(|&e| e <= b.len()) else {
            break;
        };
        let crc = crc32fast::hash(&b[at + 8..end]);
        b[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
    b
}

/// Seeds for `open_dir`: real stores (with and without a hint, compacted, with deletes) as
/// [`RAW_CRC_FIXED`] files, plus a few built ones.
pub fn open_dir_seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for variant in 0..4u8 {
        let dir = TempDir::new("seed");
        let options = Options {
            segment_size: 1024,
            ..fuzz_options()
        };
        let db = Db::open(dir.path(), options).expect("open seed store");
        let calls: &[&[u8]] = &[
            br#"{"userId":"u1","anonymousId":"a1","traits":{"email":"One@x.io","firstName":"Ada","plan":"pro"},"messageId":"m1"}"#,
            br#"{"type":"group","groupId":"c1","userId":"u1","traits":{"name":"Acme","size":3}}"#,
            br#"{"anonymousId":"a2","traits":{"plan":"free","logins":2},"$add":{"logins":1}}"#,
            br#"{"type":"alias","previousId":"a2","userId":"u2"}"#,
            br#"{"type":"track","userId":"u1","anonymousId":"a3"}"#,
            br#"{"userId":"u2","traits":{"email":"one@x.io","company":{"id":"c2","plan":"x"}},"$set_once":{"first":"yes"},"$unset":["plan"]}"#,
        ];
        for c in calls {
            db.apply_json(c).expect("seed call");
        }
        if variant >= 2 {
            db.delete(&Selector::UserId("u2".into()), variant == 3)
                .expect("seed delete");
            db.compact().expect("seed compact");
        }
        if variant % 2 == 0 {
            db.close().expect("seed close");
        } else {
            db.abandon();
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list seed store")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n != "LOCK")
            .collect();
        names.sort();
        let mut seed = vec![variant];
        for name in names {
            let Some(sel) = file_selector(&name) else {
                continue;
            };
            let bytes = std::fs::read(dir.path().join(&name)).expect("read seed file");
            seed.push(sel);
            seed.push(RAW_CRC_FIXED);
            seed.extend_from_slice(&(bytes.len().min(65535) as u16).to_le_bytes());
            seed.extend_from_slice(&bytes[..bytes.len().min(65535)]);
        }
        seeds.push(seed);
    }
    // Built: two log segments with a few frames and a hint; a manifest naming temp files.
    seeds.push(vec![
        2, 0, BUILT, 0, 1, 2, 1, 1, 1, 3, b'a', b'b', b'c', 1, 2, 5, 1, b'n', 0, 1, BUILT, 0, 9, 1,
        1, 1, 8, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    seeds.push(vec![
        0, 12, BUILT, 0, 1, 2, 1, 1, 1, 9, BUILT, 2, 1, 1, 0, 0, 0,
    ]);
    seeds
}

// ---------------------------------------------------------------------------------------------
// message_parse
// ---------------------------------------------------------------------------------------------

/// Input byte that selects the structured mode of [`message_parse`] (never the first byte of
/// valid UTF-8, so raw JSON inputs never start with it).
pub const STRUCTURED: u8 = 0xFF;

/// `Message::parse` and `Db::apply_json` on arbitrary bytes, or (first byte [`STRUCTURED`]) on
/// a Segment-shaped JSON message built from the rest. Parsing fails only with `Malformed`,
/// validation only with `Invalid` naming at least one field, applying only with `Malformed`,
/// `Invalid` or `Suppressed`; an applied call's profile can be read back.
pub fn message_parse(data: &[u8]) {
    if let Some((&STRUCTURED, rest)) = data.split_first() {
        let json = structured_message(&mut Input::new(rest)).to_string();
        check_message(json.as_bytes());
    } else {
        check_message(data);
    }
}

thread_local! {
    /// One store for many inputs (opening one per input would dominate the run), replaced every
    /// few thousand calls after a `check` that must find nothing wrong.
    static STORE: RefCell<Option<(Db, TempDir, u32)>> = const { RefCell::new(None) };
}

/// The direct parser (`Message::parse`) must agree with the reference it replaced (a
/// `serde_json::Value`, then the former `Value`-based rules, frozen in reference_parse.rs):
/// the same message, or the same error text.
/// Not for serde_json's private raw-value member name, which only `Value` treats specially
/// (src/profile/parse.rs).
fn check_parsers_agree(bytes: &[u8]) {
    if bytes
        .windows(RAW_VALUE_TOKEN.len())
        .any(|w| w == RAW_VALUE_TOKEN)
    {
        return;
    }
    let direct = Message::parse(bytes);
    let reference = reference_parse::reference(bytes);
    match (&direct, &reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the parsers disagree"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "the parsers' errors differ"),
        _ => panic!("one parser accepts, one refuses: {direct:?} / {reference:?}"),
    }
}

const RAW_VALUE_TOKEN: &[u8] = b"$serde_json::private::RawValue";

fn check_message(bytes: &[u8]) {
    let options = fuzz_options();
    check_parsers_agree(bytes);
    match Message::parse(bytes) {
        Ok(m) => match validate(&m, &options) {
            Ok(()) => {}
            Err(Error::Invalid(errors)) => {
                assert!(!errors.is_empty(), "Invalid without field errors");
                for e in &errors {
                    let _ = e.to_string();
                }
            }
            Err(e) => panic!("validate failed with a non-Invalid error: {e:?}"),
        },
        Err(Error::Malformed(_)) => {}
        Err(e) => panic!("parse failed with a non-Malformed error: {e:?}"),
    }
    STORE.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_some_and(|(_, _, n)| *n >= 2000) {
            let (db, dir, _) = slot.take().expect("checked above");
            let problems = db.check().expect("check");
            assert!(problems.is_empty(), "{problems:?}");
            db.close().expect("close");
            drop(dir);
        }
        let (db, _, n) = slot.get_or_insert_with(|| {
            let dir = TempDir::new("msg");
            let db = Db::open(dir.path(), fuzz_options()).expect("open message store");
            (db, dir, 0)
        });
        *n += 1;
        match db.apply_json(bytes) {
            Ok(outcome) => {
                let got = db
                    .get(&Selector::Key(outcome.key))
                    .expect("read back the profile of an applied call");
                if matches!(
                    outcome.status,
                    Status::Created | Status::Updated | Status::Merged
                ) && outcome.key != 0
                {
                    let p = got.expect("an applied call's profile exists");
                    let _ = serde_json::to_string(&p);
                }
            }
            Err(Error::Malformed(_) | Error::Invalid(_) | Error::Suppressed { .. }) => {}
            Err(e) => panic!("apply_json failed with an unexpected error: {e:?}"),
        }
    });
}

const IDS: &[&str] = &[
    "u1", "u2", "a1", "", " ", "null", "NULL ", "0", "x@y.io", "Ü", "\u{0}", "c1", "m1", "😀",
];
const NAMES: &[&str] = &[
    "email",
    "firstName",
    "first_name",
    "lastName",
    "name",
    "createdAt",
    "created_at",
    "company",
    "custom",
    "id",
    "plan",
    "logins",
    "$add",
    "",
    "a.b",
    "Plan",
    "companySize",
];
const STRINGS: &[&str] = &[
    "",
    "x",
    "One@Example.COM",
    "not an email",
    "2026-01-02T03:04:05Z",
    "2026-01-02T03:04:05.123456789+14:00",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "2026-13-45T99:99:99Z",
    "2026-01-02t03:04:05z",
    "-262143-01-01T00:00:00Z",
    "é",
    "pro",
];

fn structured_message(inp: &mut Input<'_>) -> Json {
    let mut obj = Map::new();
    let ty = inp.u8();
    match ty % 10 {
        0 => {}
        1..=6 => {
            let t = ["identify", "group", "alias", "track", "page", "screen"][ty as usize % 10 - 1];
            obj.insert("type".into(), Json::from(t));
        }
        7 => {
            obj.insert("type".into(), Json::from(" IDENTIFY "));
        }
        8 => {
            obj.insert("type".into(), Json::from(7));
        }
        _ => {
            obj.insert("type".into(), Json::from("other"));
        }
    }
    let fields = inp.u16();
    let named = [
        "userId",
        "anonymousId",
        "previousId",
        "groupId",
        "messageId",
        "timestamp",
    ];
    for (i, f) in named.iter().enumerate() {
        if fields & (1 << i) != 0 {
            let v = match inp.u8() % 8 {
                0 => Json::Null,
                1 => Json::from(inp.u64() as i64),
                2 => Json::from(inp.pick(STRINGS)),
                3 => value(inp, 2),
                _ => Json::from(inp.pick(IDS)),
            };
            obj.insert((*f).into(), v);
        }
    }
    let sections = ["traits", "$set", "$set_once", "$add", "context"];
    for (i, s) in sections.iter().enumerate() {
        if fields & (1 << (i + 6)) != 0 {
            let v = if fields & (1 << 11) != 0 && i == 0 {
                value(inp, 3)
            } else {
                traits(inp, 3)
            };
            obj.insert((*s).into(), v);
        }
    }
    if fields & (1 << 12) != 0 {
        let n = inp.u8() % 4;
        let items = (0..n)
            .map(|_| {
                if inp.u8().is_multiple_of(5) {
                    value(inp, 1)
                } else {
                    Json::from(inp.pick(NAMES))
                }
            })
            .collect();
        obj.insert("$unset".into(), Json::Array(items));
    }
    Json::Object(obj)
}

fn traits(inp: &mut Input<'_>, depth: u8) -> Json {
    let mut m = Map::new();
    for _ in 0..inp.u8() % 6 {
        let name = if inp.u8().is_multiple_of(8) {
            String::from_utf8_lossy(inp.bytes(3)).into_owned()
        } else {
            inp.pick(NAMES).to_string()
        };
        let v = if name == "company" || name == "custom" {
            traits(inp, depth.saturating_sub(1))
        } else {
            value(inp, depth)
        };
        m.insert(name, v);
    }
    if inp.u8().is_multiple_of(4) {
        m.insert("id".into(), Json::from(inp.pick(IDS)));
    }
    Json::Object(m)
}

fn value(inp: &mut Input<'_>, depth: u8) -> Json {
    match inp.u8() % 12 {
        0 => Json::Null,
        1 => Json::Bool(inp.u8() & 1 != 0),
        2 => Json::from(inp.u8() as i64 - 128),
        3 => Json::from(inp.u64() as i64),
        4 => Json::from(inp.u64()),
        5 => Number::from_f64(f64::from_bits(inp.u64()))
            .map(Json::Number)
            .unwrap_or(Json::Null),
        6 => Json::from(inp.pick(&[1e308, -1e308, 0.5, -0.0, 9007199254740993.0, 1e-320])),
        7 => Json::from("x".repeat(inp.u16() as usize % 9000)),
        8 if depth > 0 => {
            let n = inp.u8() % 4;
            Json::Array((0..n).map(|_| value(inp, depth - 1)).collect())
        }
        9 if depth > 0 => traits(inp, depth - 1),
        10 => {
            let len = inp.u8() as usize % 16;
            Json::from(String::from_utf8_lossy(inp.bytes(len)).into_owned())
        }
        _ => Json::from(inp.pick(STRINGS)),
    }
}

/// Seeds for `message_parse`: typical raw messages, and structured inputs.
pub fn message_seeds() -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = [
        &br#"{"userId":"u1","anonymousId":"a1","traits":{"email":"One@x.io","firstName":"Ada","createdAt":"2026-01-02T03:04:05Z","custom":{"plan":"pro"}},"messageId":"m1","timestamp":"2026-01-02T03:04:05Z"}"#[..],
        br#"{"type":"group","groupId":"c1","userId":"u1","traits":{"name":"Acme","size":3}}"#,
        br#"{"type":"alias","previousId":"a2","userId":"u2"}"#,
        br#"{"type":"page","userId":"u1","anonymousId":"a3"}"#,
        br#"{"userId":42,"traits":{"company":{"id":7,"plan":"x"},"logins":null},"$set_once":{"first":"yes"},"$unset":["plan"],"$add":{"logins":1.5}}"#,
        br#"{"anonymousId":"a9","$set":{"plan":"free"},"traits":{"email":"bad"}}"#,
        br#"[1,2,{"a":"\ud800"}]"#,
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect();
    seeds.push(vec![STRUCTURED, 0, 0xFF, 0x1F]);
    seeds.push(vec![STRUCTURED, 2, 0x49, 0x08, 4, 1, 2, 3, 4, 0, 2, 0]);
    seeds
}

/// Seeds for `record_decode`: valid frames (no entry, one, several, an empty data).
pub fn record_seeds() -> Vec<Vec<u8>> {
    let frames: [(u64, &[Entry<'_>]); 3] = [
        (1, &[]),
        (
            42,
            &[Entry {
                kind: 1,
                id: 7,
                data: b"hello",
            }],
        ),
        (
            u64::MAX,
            &[
                Entry {
                    kind: 5,
                    id: 0,
                    data: b"plan",
                },
                Entry {
                    kind: 2,
                    id: 9,
                    data: b"",
                },
                Entry {
                    kind: 8,
                    id: u64::MAX,
                    data: &[1, 0, 0, 0, 0, 0, 0, 0],
                },
            ],
        ),
    ];
    frames
        .iter()
        .map(|(seq, entries)| {
            let mut out = Vec::new();
            storage::encode_frame(&mut out, *seq, entries).expect("seed frame");
            out
        })
        .collect()
}
