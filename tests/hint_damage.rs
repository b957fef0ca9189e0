//! The hint's index snapshot (docs/format.md, "Index snapshot"): a damaged, truncated, foreign
//! or hostile payload is ignored and the log replayed in full, with the same result and no
//! panic; an intact one is used. The damage is put inside a correctly framed hint file (its
//! CRC recomputed), so that the payload decoder itself meets it, not only the file's CRC.

#[path = "support/common.rs"]
mod common;

use common::*;
use profiledb::{Db, Selector};
use serde_json::json;

/// Everything the test reads back from a store, for comparison.
fn state(db: &Db) -> String {
    let mut out = String::new();
    for i in 0..40 {
        for sel in [
            Selector::UserId(format!("u{i}")),
            Selector::Email(format!("E{i}@Example.com")),
            Selector::AnonymousId(format!("a{i}")),
            Selector::Key(i),
        ] {
            let p = db.get(&sel).unwrap();
            out.push_str(&format!("{sel:?} -> {p:?}\n"));
        }
    }
    for c in ["acme", "globex"] {
        out.push_str(&format!(
            "{:?} {:?}\n",
            db.company(c).unwrap(),
            db.members(c)
        ));
    }
    let s = db.stats();
    out.push_str(&format!(
        "{} {} {} {}\n",
        s.profiles, s.companies, s.property_names, s.live_bytes
    ));
    // A suppressed identifier stays refused; a duplicate messageId stays a duplicate.
    let again = try_call(
        db,
        json!({"type": "identify", "userId": "u3", "messageId": "m-7", "traits": {"x": 1}}),
    );
    out.push_str(&format!("{:?}\n", again.map(|o| o.status)));
    out
}

fn build(dir: &std::path::Path) -> String {
    let db = open(dir);
    for i in 0..40u32 {
        let mut m = identify(
            (i % 3 != 0).then(|| format!("u{i}")).as_deref(),
            (i % 2 == 0).then(|| format!("e{i}@example.com")).as_deref(),
            Some(&format!("a{i}")),
            json!({"plan": format!("p{i}"), "n": i}),
        );
        m["messageId"] = json!(format!("m-{i}"));
        call(&db, m);
        if i % 7 == 0 {
            call(
                &db,
                json!({"type": "group", "groupId": if i % 2 == 0 { "acme" } else { "globex" },
                       "anonymousId": format!("a{i}"), "traits": {"size": i}}),
            );
        }
    }
    // Merges: an id-only and an email-only profile joined by a call naming both.
    for i in [1u32, 2, 4, 5] {
        call(
            &db,
            identify(
                Some(&format!("u{i}")),
                Some(&format!("e{}@example.com", i + 10)),
                None,
                json!({}),
            ),
        );
    }
    db.delete(&Selector::UserId("u7".into()), true).unwrap();
    db.delete(&Selector::AnonymousId("a9".into()), false)
        .unwrap();
    let s = state(&db);
    db.close().unwrap();
    s
}

/// The hint file split into its header (through the payload length), payload, and nothing
/// else (the file CRC is recomputed on writing).
fn split(hint: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let n = u32::from_le_bytes(hint[28..32].try_into().unwrap()) as usize;
    let at = 32 + 4 * n;
    let plen = u64::from_le_bytes(hint[at..at + 8].try_into().unwrap()) as usize;
    (hint[..at].to_vec(), hint[at + 8..at + 8 + plen].to_vec())
}

fn frame(header: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut b = header.to_vec();
    b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    b.extend_from_slice(payload);
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Recompute the payload's own CRC (its last 4 bytes), so that the damage reaches the fields.
fn recrc(payload: &mut [u8]) {
    let body = payload.len() - 4;
    let crc = crc32fast::hash(&payload[..body]);
    payload[body..].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn damaged_hints_fall_back_to_the_full_scan() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let expected = build(&base);
    let hint = std::fs::read(base.join("HINT")).unwrap();
    let (header, payload) = split(&hint);
    assert_eq!(&payload[..8], b"PDBINDEX");

    let check = |name: &str, damaged: Vec<u8>, hint_usable: bool| {
        let dir = tmp.path().join("case");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&base).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        std::fs::write(dir.join("HINT"), &damaged).unwrap();
        let db = open(&dir);
        let used = db.stats().storage.recovery.used_hint;
        if hint_usable {
            assert!(used, "{name}: an intact hint is used");
        } else {
            assert!(!used, "{name}: the hint must be ignored");
        }
        assert_eq!(state(&db), expected, "{name}");
        assert!(db.check().unwrap().is_empty(), "{name}");
        db.close().unwrap();
    };

    check("intact", frame(&header, &payload), true);

    // Flipped bytes inside a correctly framed file: the payload's own CRC catches them.
    let step = (payload.len() / 97).max(1);
    for i in (0..payload.len() - 4).step_by(step).chain(0..64) {
        let mut p = payload.clone();
        p[i] ^= 0x5a;
        check(&format!("flip {i}"), frame(&header, &p), false);
    }

    // Truncated payloads (framed correctly).
    for cut in [
        0,
        4,
        8,
        11,
        12,
        40,
        payload.len() / 2,
        payload.len() - 5,
        payload.len() - 1,
    ] {
        check(
            &format!("cut {cut}"),
            frame(&header, &payload[..cut]),
            false,
        );
    }

    // Another version, before and after this one.
    for v in [1u16, 2, 3, 4, 5, 6, 7, 9, u16::MAX] {
        let mut p = payload.clone();
        p[8..10].copy_from_slice(&v.to_le_bytes());
        recrc(&mut p);
        check(&format!("version {v}"), frame(&header, &p), false);
    }

    // Huge counts with a valid CRC: refused before anything is allocated for them (the dense
    // profile count sits at byte 49).
    for count in [
        u64::MAX,
        u64::MAX / 12,
        1 << 40,
        (payload.len() as u64) / 12 + 1,
    ] {
        let mut p = payload.clone();
        p[49..57].copy_from_slice(&count.to_le_bytes());
        recrc(&mut p);
        check(&format!("count {count}"), frame(&header, &p), false);
    }

    // A payload of another format entirely (the version-1 bincode image had no magic).
    let mut junk = vec![7u8; 300];
    recrc(&mut junk);
    check("foreign", frame(&header, &junk), false);
}

/// A snapshot larger than the chunks the hint is streamed in (1 MiB): the hint written on
/// close is used on open (nothing replayed) and reads back what a full replay of the log
/// reads, history included.
#[test]
fn a_hint_streamed_in_many_chunks_reads_back_as_the_log() {
    use profiledb::workload::{W1, W1Config};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    let calls = 80_000;
    let people = 60_000;
    {
        let db = open(&dir);
        let mut w1 = W1::new(W1Config::new(7, calls).with_people(people));
        while let Some((_, _, call)) = w1.next_call() {
            db.apply(&profiledb::Message::Identify(call)).unwrap();
        }
        db.close().unwrap();
    }
    let hint_len = std::fs::metadata(dir.join("HINT")).unwrap().len();
    assert!(
        hint_len > 2 << 20,
        "a hint of several chunks ({hint_len} bytes)"
    );
    let read = |db: &Db| {
        let mut out = String::new();
        for p in (0..people).step_by(37) {
            for sel in [
                Selector::UserId(profiledb::workload::user_id(p)),
                Selector::Email(profiledb::workload::email(p)),
            ] {
                out.push_str(&format!("{:?}\n", db.get(&sel).unwrap()));
            }
        }
        let s = db.stats();
        out.push_str(&format!(
            "{} {} {} {}\n",
            s.profiles, s.property_names, s.live_bytes, s.history_steps
        ));
        out
    };
    let db = open(&dir);
    let recovery = db.stats().storage.recovery;
    assert!(recovery.used_hint, "the streamed hint is used");
    assert_eq!(recovery.frames_replayed, 0);
    let from_hint = read(&db);
    db.close().unwrap();
    std::fs::remove_file(dir.join("HINT")).unwrap();
    let db = open(&dir);
    assert!(!db.stats().storage.recovery.used_hint);
    assert_eq!(read(&db), from_hint);
    assert!(db.check().unwrap().is_empty());
    db.close().unwrap();
}
