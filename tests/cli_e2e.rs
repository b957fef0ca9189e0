//! End-to-end tests of the `profiledb` binary: every command, run as a user would.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_profiledb");

/// A temporary directory with a (not yet created) data directory inside.
struct Env {
    tmp: tempfile::TempDir,
}

/// What a run of the binary gave.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}): {self:?}"))
    }

    fn lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[track_caller]
    fn ok(self) -> Run {
        assert_eq!(self.code, Some(0), "{self:?}");
        self
    }

    #[track_caller]
    fn code(self, code: i32) -> Run {
        assert_eq!(self.code, Some(code), "{self:?}");
        self
    }
}

impl Env {
    fn new() -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_stdin(args, b"")
    }

    fn run_stdin(&self, args: &[&str], stdin: &[u8]) -> Run {
        let mut child = Command::new(BIN)
            .arg("--data")
            .arg(self.data())
            .args(args)
            .current_dir(self.tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        let stdin = stdin.to_vec();
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn identify(&self, json: &str) -> Value {
        self.run(&["identify", json]).ok().json()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

const SARAH: &str = r#"{"type": "identify", "userId": "u-123", "anonymousId": "a-9", "messageId": "m-1",
 "timestamp": "2026-11-22T10:00:00Z",
 "traits": {"email": "Sarah@Example.com", "first_name": "Sarah", "last_name": "Smith", "plan": "pro",
            "company": {"id": "c-1", "name": "Acme", "size": 12}}}"#;

#[test]
fn identify_then_get_by_each_selector() {
    let env = Env::new();
    let outcome = env.identify(SARAH);
    assert_eq!(outcome["status"], "created", "{outcome}");
    let key = outcome["key"].as_u64().unwrap();
    let key_text = key.to_string();
    for selector in [
        ["--user-id", "u-123"],
        ["--email", "sarah@example.com"],
        ["--email", " SARAH@example.COM "],
        ["--anonymous-id", "a-9"],
        ["--key", key_text.as_str()],
    ] {
        let profile = env.run(&["get", selector[0], selector[1]]).ok().json();
        assert_eq!(profile["key"], key, "{selector:?}");
        assert_eq!(profile["user_id"], "u-123");
        assert_eq!(profile["email"], "Sarah@Example.com");
        assert_eq!(profile["anonymous_ids"], serde_json::json!(["a-9"]));
        assert_eq!(profile["company_id"], "c-1");
        assert_eq!(profile["created_at"], "2026-11-22T10:00:00Z");
        assert_eq!(profile["properties"]["plan"], "pro");
        assert_eq!(profile["properties"]["name"], "Sarah Smith");
    }
    // The same message again is a duplicate.
    assert_eq!(env.identify(SARAH)["status"], "duplicate");
    // Read from stdin with `-`.
    let outcome = env
        .run_stdin(
            &["identify", "-"],
            br#"{"userId": "u-123", "traits": {"plan": "max"}}"#,
        )
        .ok()
        .json();
    assert_eq!(outcome["status"], "updated");
    assert_eq!(outcome["key"], key);
}

#[test]
fn get_on_a_missing_profile_exits_1() {
    let env = Env::new();
    env.identify(SARAH);
    for selector in [
        ["--user-id", "nobody"],
        ["--email", "nobody@example.com"],
        ["--anonymous-id", "nothing"],
        ["--key", "999999"],
    ] {
        let run = env.run(&["get", selector[0], selector[1]]).code(1);
        assert!(run.stdout.is_empty(), "{run:?}");
        assert!(run.stderr.contains("no profile"), "{run:?}");
    }
}

#[test]
fn read_commands_without_a_store_exit_2() {
    let env = Env::new();
    let run = env.run(&["get", "--user-id", "u-1"]).code(2);
    assert!(run.stderr.contains("no profile store"), "{run:?}");
    assert!(!env.data().exists(), "a read must not create the store");
    env.run(&["export"]).code(2);
    env.run(&["stats"]).code(2);
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    env.run(&["get"]).code(2);
    env.run(&["get", "--user-id", "a", "--email", "b@c.de"])
        .code(2);
    env.run(&["get", "--key", "not-a-number"]).code(2);
    env.run(&["no-such-command"]).code(2);
    env.run(&["--durability", "sometimes", "stats"]).code(2);
}

#[test]
fn identify_refused_or_malformed_exits_1_naming_the_field() {
    let env = Env::new();
    let run = env
        .run(&["identify", r#"{"traits": {"plan": "pro"}}"#])
        .code(1);
    assert!(run.stderr.contains("refused"), "{run:?}");
    let run = env
        .run(&["identify", r#"{"userId": "sarah@example.com"}"#])
        .code(1);
    assert!(run.stderr.contains("userId"), "{run:?}");
    let run = env.run(&["identify", "{not json"]).code(1);
    assert!(run.stderr.contains("malformed"), "{run:?}");
}

#[test]
fn no_command_panics_on_odd_input() {
    let env = Env::new();
    for input in [
        "",
        "[]",
        "null",
        "42",
        "\"text\"",
        r#"{"userId": 12345}"#,
        r#"{"userId": null, "anonymousId": null}"#,
        r#"{"type": "alias"}"#,
        r#"{"type": "group", "groupId": null}"#,
        r#"{"type": "teleport", "userId": "u-1"}"#,
        r#"{"userId": "u-1", "traits": [1, 2]}"#,
        r#"{"userId": "u-1", "timestamp": "yesterday"}"#,
        r#"{"userId": "u-1", "$add": {"n": "one"}}"#,
        "\u{feff}{\"userId\": \"u-1\"}",
    ] {
        let run = env.run(&["identify", input]);
        assert!(matches!(run.code, Some(0 | 1)), "{input}: {run:?}");
        assert!(!run.stderr.contains("panicked"), "{input}: {run:?}");
    }
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let run = env.run_stdin(&["import", "-"], &garbage);
    assert!(matches!(run.code, Some(0 | 1)), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    let run = env.run(&["query", "plan = = ="]).code(2);
    assert!(!run.stderr.contains("panicked"), "{run:?}");
}

#[test]
fn import_reports_bad_lines_and_keeps_the_good_ones() {
    let env = Env::new();
    let file = env.write(
        "calls.jsonl",
        concat!(
            "{\"userId\": \"u-1\", \"traits\": {\"plan\": \"pro\"}}\n",
            "{\"userId\": \"u-2\", \"traits\": {\"plan\": \"free\"}}\n",
            "{not json at all\n",
            "\n",
            "{\"userId\": \"x\", \"traits\": {\"plan\": \"pro\"}}\n",
            "{\"userId\": \"u-3\", \"traits\": {\"email\": \"u3@example.com\"}}\r\n",
        ),
    );
    let run = env.run(&["import", s(&file)]).code(1);
    let name = s(&file);
    assert!(run.stderr.contains(&format!("{name}:3:")), "{run:?}");
    assert!(run.stderr.contains(&format!("{name}:5:")), "{run:?}");
    assert!(run.stderr.contains("userId"), "{run:?}");
    assert!(!run.stderr.contains(&format!("{name}:1:")), "{run:?}");
    let summary = run.json();
    assert_eq!(summary["accepted"], 3, "{summary}");
    assert_eq!(summary["refused"], 2, "{summary}");
    assert_eq!(summary["created"], 3, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["merges"], 0, "{summary}");
    for user in ["u-1", "u-2", "u-3"] {
        env.run(&["get", "--user-id", user]).ok();
    }
    env.run(&["get", "--email", "u3@example.com"]).ok();
    env.run(&["get", "--user-id", "x"]).code(1);

    // A missing file is an error, not a refusal.
    let run = env.run(&["import", "no-such-file.jsonl"]).code(2);
    assert!(run.stderr.contains("no-such-file.jsonl"), "{run:?}");
}

#[test]
fn import_counts_merges_and_duplicates() {
    let env = Env::new();
    let text = concat!(
        "{\"messageId\": \"m1\", \"userId\": \"u-1\"}\n",
        "{\"messageId\": \"m2\", \"traits\": {\"email\": \"one@example.com\"}}\n",
        "{\"messageId\": \"m3\", \"userId\": \"u-1\", \"traits\": {\"email\": \"one@example.com\"}}\n",
        "{\"messageId\": \"m3\", \"userId\": \"u-1\", \"traits\": {\"email\": \"one@example.com\"}}\n",
    );
    let summary = env.run_stdin(&["import", "-"], text.as_bytes()).ok().json();
    assert_eq!(summary["accepted"], 4, "{summary}");
    assert_eq!(summary["created"], 2, "{summary}");
    assert_eq!(summary["merges"], 1, "{summary}");
    assert_eq!(summary["duplicates"], 1, "{summary}");
    assert_eq!(summary["refused"], 0, "{summary}");
}

#[test]
fn export_prints_every_profile() {
    let env = Env::new();
    let text: String = (0..25)
        .map(|i| format!("{{\"userId\": \"user-{i}\", \"traits\": {{\"n\": {i}}}}}\n"))
        .collect();
    env.run_stdin(&["import", "-"], text.as_bytes()).ok();
    let profiles = env.run(&["export"]).ok().lines();
    assert_eq!(profiles.len(), 25);
    let mut ids: Vec<_> = profiles
        .iter()
        .map(|p| p["user_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 25);
    assert!(profiles.iter().all(|p| p["key"].is_u64()));
}

#[test]
fn query_prints_matching_profiles() {
    let env = Env::new();
    let text = concat!(
        "{\"userId\": \"u-1\", \"traits\": {\"plan\": \"pro\", \"logins\": 5, \"created_at\": \"2025-06-01T00:00:00Z\"}}\n",
        "{\"userId\": \"u-2\", \"traits\": {\"plan\": \"pro\", \"logins\": 1}}\n",
        "{\"userId\": \"u-3\", \"traits\": {\"plan\": \"free\", \"logins\": 9, \"company_size\": 40}}\n",
    );
    env.run_stdin(&["import", "-"], text.as_bytes()).ok();
    let ids = |filter: &str| {
        let mut ids: Vec<String> = env
            .run(&["query", filter])
            .ok()
            .lines()
            .iter()
            .map(|p| p["user_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(r#"plan = "pro" and logins >= 3"#), ["u-1"]);
    assert_eq!(ids("plan = pro"), ["u-1", "u-2"]);
    assert_eq!(ids("logins > 1"), ["u-1", "u-3"]);
    assert_eq!(ids("exists company_size"), ["u-3"]);
    assert_eq!(ids("created_at < 2026-01-01T00:00:00Z"), ["u-1"]);
    assert!(ids("plan = enterprise").is_empty());
    let run = env.run(&["query", "plan ="]).code(2);
    assert!(run.stderr.contains("invalid filter"), "{run:?}");
}

#[test]
fn delete_then_get_is_missing() {
    let env = Env::new();
    let key = env.identify(SARAH)["key"].as_u64().unwrap();
    let deleted = env
        .run(&["delete", "--email", "sarah@example.com"])
        .ok()
        .json();
    assert_eq!(deleted["deleted"], key);
    assert_eq!(deleted["suppressed"], false);
    env.run(&["get", "--user-id", "u-123"]).code(1);
    env.run(&["get", "--anonymous-id", "a-9"]).code(1);
    let run = env.run(&["delete", "--user-id", "u-123"]).code(1);
    assert!(run.stderr.contains("no profile"), "{run:?}");
    // Without suppression the identifiers are free again.
    assert_eq!(env.identify(r#"{"userId": "u-123"}"#)["status"], "created");
}

#[test]
fn delete_with_suppress_refuses_later_calls() {
    let env = Env::new();
    env.identify(SARAH);
    let deleted = env
        .run(&["delete", "--user-id", "u-123", "--suppress"])
        .ok()
        .json();
    assert_eq!(deleted["suppressed"], true);
    let run = env
        .run(&[
            "identify",
            r#"{"userId": "u-123", "traits": {"plan": "pro"}}"#,
        ])
        .code(1);
    assert!(run.stderr.contains("suppressed"), "{run:?}");
    env.run(&["get", "--user-id", "u-123"]).code(1);
}

#[test]
fn unlink_detaches_devices() {
    let env = Env::new();
    env.identify(r#"{"userId": "u-1", "anonymousId": "phone"}"#);
    let key = env.identify(r#"{"userId": "u-1", "anonymousId": "laptop"}"#)["key"]
        .as_u64()
        .unwrap();
    let run = env.run(&["unlink", "--anonymous-id", "phone"]).ok().json();
    assert_eq!(run["key"], key);
    assert_eq!(run["unlinked"], serde_json::json!(["phone"]));
    env.run(&["get", "--anonymous-id", "phone"]).code(1);
    let profile = env.run(&["get", "--user-id", "u-1"]).ok().json();
    assert_eq!(profile["anonymous_ids"], serde_json::json!(["laptop"]));
    // A later call from the unlinked device no longer reaches the person.
    let other = env.identify(r#"{"anonymousId": "phone"}"#);
    assert_ne!(other["key"], key);

    let run = env.run(&["unlink", "--user-id", "u-1"]).ok().json();
    assert_eq!(run["unlinked"], serde_json::json!(["laptop"]));
    let profile = env.run(&["get", "--key", &key.to_string()]).ok().json();
    assert_eq!(profile["anonymous_ids"], serde_json::json!([]));
    env.run(&["unlink", "--anonymous-id", "never-seen"]).code(1);
    env.run(&["unlink", "--email", "nobody@example.com"])
        .code(1);
}

#[test]
fn company_shows_member_count() {
    let env = Env::new();
    env.identify(SARAH);
    env.identify(r#"{"userId": "u-456", "traits": {"company": {"id": "c-1", "plan": "team"}}}"#);
    let company = env.run(&["company", "c-1"]).ok().json();
    assert_eq!(company["id"], "c-1");
    assert_eq!(company["member_count"], 2, "{company}");
    assert_eq!(company["properties"]["name"], "Acme");
    assert!(company.get("members").is_none());
    let company = env.run(&["company", "c-1", "--members"]).ok().json();
    assert_eq!(company["members"].as_array().unwrap().len(), 2, "{company}");
    let run = env.run(&["company", "c-404"]).code(1);
    assert!(run.stderr.contains("c-404"), "{run:?}");
    // A group message upserts a company too.
    env.identify(
        r#"{"type": "group", "groupId": "c-2", "userId": "u-123", "traits": {"name": "Beta"}}"#,
    );
    let company = env.run(&["company", "c-2"]).ok().json();
    assert_eq!(company["member_count"], 1, "{company}");
}

#[test]
fn stats_and_compact() {
    let env = Env::new();
    let w1 = env.path("w1.jsonl");
    env.run(&["gen", "--seed", "3", "--calls", "3000", "--out", s(&w1)])
        .ok();
    env.run(&["import", s(&w1)]).ok();
    let stats = env.run(&["stats"]).ok().json();
    let profiles = stats["profiles"].as_u64().unwrap();
    assert!(profiles > 0 && profiles <= 600, "{stats}");
    assert!(
        stats["storage"]["disk_bytes"].as_u64().unwrap() > 0,
        "{stats}"
    );
    let compacted = env.run(&["compact"]).ok().json();
    let before = compacted["disk_bytes_before"].as_u64().unwrap();
    let after = compacted["disk_bytes_after"].as_u64().unwrap();
    assert!(compacted["bytes_reclaimed"].is_u64(), "{compacted}");
    assert!(after < before, "{compacted}");
    let again = env.run(&["stats"]).ok().json();
    assert_eq!(again["profiles"], profiles);
    env.run(&["check"]).ok();
}

#[test]
fn gen_is_deterministic_and_round_trips_through_import() {
    let env = Env::new();
    let a = env.run(&["gen", "--seed", "5", "--calls", "2000"]).ok();
    let b = env.run(&["gen", "--seed", "5", "--calls", "2000"]).ok();
    let c = env.run(&["gen", "--seed", "6", "--calls", "2000"]).ok();
    assert_eq!(a.stdout, b.stdout);
    assert_ne!(a.stdout, c.stdout);
    assert_eq!(a.stdout.lines().count(), 2000);
    let file = env.path("w1.jsonl");
    env.run(&["gen", "--seed", "5", "--calls", "2000", "--out", s(&file)])
        .ok();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), a.stdout);
    let people = env.run(&["gen", "--calls", "100", "--people", "3"]).ok();
    let mut ids: Vec<_> = people
        .lines()
        .iter()
        .filter_map(|m| m["userId"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    assert!(ids.len() <= 3, "{ids:?}");

    let summary = env
        .run_stdin(&["import", "-"], a.stdout.as_bytes())
        .ok()
        .json();
    assert_eq!(summary["accepted"], 2000, "{summary}");
    assert_eq!(summary["refused"], 0, "{summary}");
    assert!(summary["merges"].as_u64().unwrap() > 0, "{summary}");
    let profiles = env.run(&["stats"]).ok().json()["profiles"]
        .as_u64()
        .unwrap();
    assert!((100..=400).contains(&profiles), "{profiles}");
    // The same calls again are all duplicates (same messageIds).
    let summary = env.run(&["import", s(&file)]).ok().json();
    assert_eq!(summary["duplicates"], 2000, "{summary}");
    assert_eq!(env.run(&["export"]).ok().lines().len() as u64, profiles);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let mut child = Command::new(BIN)
        .args(["gen", "--calls", "200000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bench_runs_w1_small() {
    let env = Env::new();
    let mut child = Command::new(BIN);
    child.args(["bench", "--calls", "3000", "--seed", "2", "--json"]);
    let out = child.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["calls"], 3000, "{report}");
    assert_eq!(report["people"], 600, "{report}");
    assert_eq!(report["durability"], "group", "{report}");
    assert_eq!(report["outcomes"]["refused"], 0, "{report}");
    assert!(report["calls_per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert!(
        report["latency_us"]["p99"].as_f64().unwrap()
            >= report["latency_us"]["p50"].as_f64().unwrap()
    );
    // The latency bands cover every sampled call and all their time, in order.
    let bands = report["latency_us"]["bands"].as_array().unwrap();
    assert_eq!(bands.len(), 5, "{report}");
    assert_eq!(bands[0]["from_us"], 0, "{report}");
    assert!(bands[4]["to_us"].is_null(), "{report}");
    for w in bands.windows(2) {
        assert_eq!(w[0]["to_us"], w[1]["from_us"], "{report}");
    }
    for key in ["calls_pct", "time_pct"] {
        let sum: f64 = bands.iter().map(|b| b[key].as_f64().unwrap()).sum();
        assert!((sum - 100.0).abs() < 1e-6, "{key} sums to {sum}: {report}");
    }
    assert!(
        report["bytes_written_per_call"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        report["peak_memory_bytes"].as_u64().unwrap() > 0,
        "{report}"
    );
    let temp = report["data_dir"].as_str().unwrap();
    assert!(
        !Path::new(temp).exists(),
        "the temporary directory is removed"
    );

    // Human output, into an explicit --data directory that is kept.
    let run = env
        .run(&["bench", "--calls", "500", "--durability", "buffered"])
        .ok();
    assert!(run.stdout.contains("calls/s"), "{run:?}");
    assert!(run.stdout.contains("p99"), "{run:?}");
    assert!(env.data().is_dir(), "an explicit --data directory is kept");
    // ... and refuses a directory that holds data.
    let run = env.run(&["bench", "--calls", "500"]).code(2);
    assert!(run.stderr.contains("not empty"), "{run:?}");
}

#[test]
fn check_passes_on_a_clean_store() {
    let env = Env::new();
    let calls = env.run(&["gen", "--calls", "500"]).ok().stdout;
    env.run_stdin(&["import", "-"], calls.as_bytes()).ok();
    let report = env.run(&["check"]).ok().json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[test]
fn check_catches_a_flipped_byte() {
    let env = Env::new();
    let calls = env.run(&["gen", "--calls", "500"]).ok().stdout;
    env.run_stdin(&["import", "-"], calls.as_bytes()).ok();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(env.data())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let first = segments.first().expect("a segment file");
    let mut bytes = std::fs::read(first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(first, &bytes).unwrap();

    let run = env.run(&["check"]);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    let name = first.file_name().unwrap().to_str().unwrap();
    let all = format!("{}{}", run.stdout, run.stderr);
    assert!(all.contains(name), "names the file {name}: {run:?}");
    assert!(all.contains("offset"), "names an offset: {run:?}");
}

#[test]
fn every_command_has_help_with_an_example() {
    let env = Env::new();
    let top = env.run(&["--help"]).ok();
    assert!(top.stdout.contains("Exit status"), "{top:?}");
    for command in [
        "identify", "import", "get", "export", "delete", "unlink", "company", "query", "compact",
        "check", "stats", "gen", "bench",
    ] {
        let run = env.run(&[command, "--help"]).ok();
        assert!(run.stdout.contains("Example"), "{command}: {run:?}");
        assert!(
            run.stdout.contains(&format!("profiledb {command}")),
            "{command}: {run:?}"
        );
    }
    assert!(!env.data().exists(), "--help touches nothing");
}

/// The README's quick start: generate W1, import it and print the stats, all on the default
/// data directory `./profiledb-data` (no `--data`).
#[test]
fn quick_start_on_the_default_data_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str], stdin: Option<&[u8]>| {
        let mut child = Command::new(BIN)
            .args(args)
            .current_dir(tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    let calls = run(&["gen", "--calls", "5000"], None);
    let summary: Value =
        serde_json::from_str(&run(&["import", "-"], Some(calls.as_bytes()))).unwrap();
    assert_eq!(summary["accepted"], 5000, "{summary}");
    let stats: Value = serde_json::from_str(&run(&["stats"], None)).unwrap();
    assert!(stats["profiles"].as_u64().unwrap() > 0, "{stats}");
    assert!(tmp.path().join("profiledb-data").is_dir());
}

#[test]
fn history_get_at_and_explain() {
    let env = Env::new();
    env.identify(SARAH);
    env.identify(r#"{"userId": "u-123", "traits": {"plan": "max"}}"#);
    let h = env.run(&["history", "--user-id", "u-123"]).ok().json();
    let steps = h["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{h}");
    assert_eq!(steps[0]["message_id"], "m-1");
    assert_eq!(steps[1]["changes"][0]["name"], "plan");
    assert_eq!(steps[1]["changes"][0]["old"], "pro");
    assert_eq!(steps[1]["changes"][0]["new"], "max");
    let first = steps[0]["applied_at"].as_str().unwrap();
    let then = env
        .run(&["get", "--user-id", "u-123", "--at", first])
        .ok()
        .json();
    assert_eq!(then["properties"]["plan"], "pro");
    env.run(&["get", "--user-id", "u-123", "--at", "yesterday"])
        .code(2);
    let ex = env
        .run(&[
            "explain",
            r#"{"userId": "u-123", "traits": {"plan": "team"}}"#,
        ])
        .ok()
        .json();
    assert_eq!(ex["verdict"], "apply");
    assert_eq!(ex["changes"][0]["old"], "max");
    let ex = env
        .run(&[
            "explain",
            r#"{"userId": "u-123", "traits": {"email": "nope"}}"#,
        ])
        .ok()
        .json();
    assert_eq!(ex["verdict"], "refuse", "{ex}");
    // Nothing was written by explain.
    let now = env.run(&["get", "--user-id", "u-123"]).ok().json();
    assert_eq!(now["properties"]["plan"], "max");
    // History off for one command: steps already written stay until a compaction drops
    // them, and get --at is refused (exit 1) while history is off.
    let h = env
        .run(&["--history-days", "0", "history", "--user-id", "u-123"])
        .ok()
        .json();
    assert_eq!(
        h["steps"].as_array().unwrap().len(),
        2,
        "steps stay until a compaction"
    );
    env.run(&[
        "--history-days",
        "0",
        "get",
        "--user-id",
        "u-123",
        "--at",
        first,
    ])
    .code(1);
}

#[test]
fn unmerge_splits_a_merge_back_and_refuses_with_exit_1() {
    let env = Env::new();
    let anon = env.identify(r#"{"anonymousId": "a-1", "traits": {"plan": "free"}}"#);
    let anon_key = anon["key"].as_u64().unwrap().to_string();
    env.identify(r#"{"userId": "u-1", "traits": {"name": "Ann"}}"#);
    let merge = env.identify(r#"{"userId": "u-1", "anonymousId": "a-1"}"#);
    assert_eq!(
        merge["merged"][0].as_u64().unwrap().to_string(),
        anon_key,
        "{merge}"
    );
    let out = env
        .run(&["unmerge", "--user-id", "u-1", "--merged-key", &anon_key])
        .ok()
        .json();
    assert_eq!(
        out["restored"]["key"].as_u64().unwrap().to_string(),
        anon_key
    );
    assert_eq!(out["restored"]["anonymous_ids"][0], "a-1");
    assert_eq!(out["restored"]["properties"]["plan"], "free");
    assert!(out["survivor"]["properties"].get("plan").is_none(), "{out}");
    let back = env.run(&["get", "--anonymous-id", "a-1"]).ok().json();
    assert_eq!(back["key"].as_u64().unwrap().to_string(), anon_key);
    // Done once: the key is live now, so a second unmerge is refused (exit 1, a reason).
    let again = env
        .run(&["unmerge", "--user-id", "u-1", "--merged-key", &anon_key])
        .code(1);
    assert!(again.stderr.contains("was not merged into"), "{again:?}");
    env.run(&["unmerge", "--user-id", "nobody", "--merged-key", "1"])
        .code(1);
    env.run(&["unmerge", "--user-id", "u-1"]).code(2);
}
