//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, seeds plus the minimised
//! corpus and every crash found so far) through the same checks the cargo-fuzz targets run
//! (`tests/support/fuzz_checks.rs`), so that `cargo test` guards them without libFuzzer.
//! How to run the fuzzers themselves: fuzz/README.md.

#[path = "support/fuzz_checks.rs"]
mod fuzz_checks;

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    for file in &files {
        let bytes = std::fs::read(file).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(outcome.is_ok(), "{target}: {} fails", file.display());
    }
    eprintln!("{target}: {} corpus files replayed", files.len());
}

#[test]
fn record_decode_corpus() {
    replay("record_decode", fuzz_checks::record_decode);
}

#[test]
fn open_dir_corpus() {
    replay("open_dir", fuzz_checks::open_dir);
}

#[test]
fn message_parse_corpus() {
    replay("message_parse", fuzz_checks::message_parse);
}

/// The profile record decoder (full and delta records): `fuzz/fuzz_targets/profile_decode.rs`.
#[test]
fn profile_decode_corpus() {
    replay("profile_decode", profiledb::fuzz_profile_payload);
}

/// The generated seeds pass too (they are also committed, as `seed-*` files).
#[test]
fn seeds_pass() {
    for s in fuzz_checks::record_seeds() {
        fuzz_checks::record_decode(&s);
    }
    for s in fuzz_checks::open_dir_seeds() {
        fuzz_checks::open_dir(&s);
    }
    for s in fuzz_checks::message_seeds() {
        fuzz_checks::message_parse(&s);
    }
}

/// Rewrites the `seed-*` files of the corpora from the generators:
/// `cargo test --test fuzz_corpus -- --ignored write_seeds`.
#[test]
#[ignore]
fn write_seeds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let sets = [
        ("record_decode", fuzz_checks::record_seeds()),
        ("open_dir", fuzz_checks::open_dir_seeds()),
        ("message_parse", fuzz_checks::message_seeds()),
    ];
    for (target, seeds) in sets {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("create corpus dir");
        for (i, s) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).expect("write seed");
        }
    }
}
