//! `profiledb import` parses and validates on worker threads and applies in file order: the
//! same file imported with one worker and with several gives the same store, the same summary
//! and the same refusals, line for line. It applies its calls in batches
//! (`Db::apply_prepared_batch`): the store it makes is the one the same lines make applied one
//! at a time (`Db::apply_json`), with the same counts.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_profiledb");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn run(data: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("--data")
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// W1 calls from `gen`, with repeated lines (duplicates by messageId), lines that are not
/// JSON, lines the rules refuse, a line over the call-size limit, blank lines, and calls that
/// merge profiles, spread over several of the pipeline's chunks.
fn mixed_file(dir: &Path) -> std::path::PathBuf {
    let gen_out = dir.join("w1.jsonl");
    let gen_run = Command::new(BIN)
        .args([
            "gen", "--seed", "3", "--calls", "5000", "--people", "400", "--out",
        ])
        .arg(&gen_out)
        .output()
        .unwrap();
    assert!(gen_run.status.success(), "{gen_run:?}");
    let calls = std::fs::read_to_string(&gen_out).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    let mut text = String::new();
    for (i, line) in calls.iter().enumerate() {
        text.push_str(line);
        text.push('\n');
        match i % 97 {
            // A redelivery of an earlier call: a duplicate.
            5 => {
                text.push_str(calls[i / 2]);
                text.push('\n');
            }
            11 => text.push_str("{not json\n"),
            17 => text.push_str("\n   \n"),
            23 => text.push_str(
                "{\"userId\": \"x\", \"timestamp\": \"2026-01-01T00:00:00Z\", \"traits\": {\"plan\": \"pro\"}}\n",
            ),
            // Two people named apart, then one call naming both: a merge.
            31 => text.push_str(&format!(
                "{{\"userId\": \"merge-{i}\", \"messageId\": \"mu-{i}\", \"timestamp\": \"2026-02-01T00:00:00Z\"}}\n\
                 {{\"messageId\": \"me-{i}\", \"timestamp\": \"2026-02-01T00:00:01Z\", \"traits\": {{\"email\": \"m{i}@example.com\", \"n\": {i}}}}}\n\
                 {{\"userId\": \"merge-{i}\", \"messageId\": \"mb-{i}\", \"timestamp\": \"2026-02-01T00:00:02Z\", \"traits\": {{\"email\": \"m{i}@example.com\"}}}}\n"
            )),
            41 => text.push_str("[1, 2, 3]\n"),
            _ => {}
        }
        if i == 2500 {
            text.push_str(&format!(
                "{{\"userId\": \"long\", \"traits\": {{\"t\": \"{}\"}}}}\n",
                "y".repeat(40 << 10)
            ));
        }
    }
    let path = dir.join("mixed.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn import(dir: &Path, file: &Path, workers: &str) -> (Value, String, String) {
    let data = dir.join(format!("data-{workers}"));
    let imported = run(
        &data,
        &["import", file.to_str().unwrap(), "--workers", workers],
    );
    assert_eq!(
        imported.code,
        Some(1),
        "some lines are refused: {}",
        imported.stderr
    );
    let mut summary: Value = serde_json::from_str(imported.stdout.trim()).unwrap();
    let object = summary.as_object_mut().unwrap();
    object.remove("seconds");
    object.remove("calls_per_sec");
    let export = run(&data, &["export"]);
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    (summary, imported.stderr, export.stdout)
}

#[test]
fn one_worker_and_many_give_the_same_store_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let file = mixed_file(dir.path());
    let (summary1, refusals1, export1) = import(dir.path(), &file, "1");
    assert!(summary1["duplicates"].as_u64().unwrap() >= 50, "{summary1}");
    assert!(summary1["merges"].as_u64().unwrap() >= 50, "{summary1}");
    assert!(summary1["refused"].as_u64().unwrap() >= 150, "{summary1}");
    assert!(refusals1.contains("longer than"), "{refusals1}");
    assert!(refusals1.contains("must be a JSON object"), "{refusals1}");
    for workers in ["2", "5"] {
        let (summary, refusals, export) = import(dir.path(), &file, workers);
        assert_eq!(summary, summary1, "{workers} workers");
        assert_eq!(refusals, refusals1, "{workers} workers");
        assert!(export == export1, "{workers} workers: the exports differ");
    }
    assert!(export1.lines().count() > 300, "{export1}");

    // The same lines, one call at a time through the library, then exported by the CLI.
    let one_by_one = dir.path().join("data-one-by-one");
    let db = profiledb::Db::open(&one_by_one, profiledb::Options::default()).unwrap();
    let (mut accepted, mut refused) = (0u64, 0u64);
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match db.apply_json(line.as_bytes()) {
            Ok(_) => accepted += 1,
            Err(e) if e.is_refusal() => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    db.close().unwrap();
    assert_eq!(Some(accepted), summary1["accepted"].as_u64(), "{summary1}");
    assert_eq!(Some(refused), summary1["refused"].as_u64(), "{summary1}");
    let export = run(&one_by_one, &["export"]);
    assert_eq!(export.code, Some(0), "{}", export.stderr);
    assert!(
        export.stdout == export1,
        "the lines applied one at a time make another store than the import's batches"
    );
}
