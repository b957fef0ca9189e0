//! The layer check (docs/architecture.md, "Layers"): no module of `src/` names a module of a
//! layer above its own. Run it alone with `cargo test --test layers`; it also runs under plain
//! `cargo test` and so in `.ci/run`.
//!
//! It reads every `crate::…` path in the code of `src/**/*.rs` (comments skipped, `use` lines and
//! inline paths alike, test modules included) and maps both ends to a layer by their first path
//! segment. A path through a crate-root re-export (`crate::Db`, `crate::Error`, …) counts as the
//! top layer, since it hides where the item lives.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, bottom first, each with the top-level modules of `src/` it holds.
const LAYERS: &[(&str, &[&str])] = &[
    // Vocabulary every layer may name: errors, options, the API's value types, the plain data
    // the codec stores and the rules change (`types/`), the generator.
    ("foundation", &["error", "options", "rng", "types"]),
    // Bytes: frames, segments, fsync, hints, compaction, the directory lock, the I/O seam.
    ("storage", &["storage"]),
    // The meaning and encoding of each on-disk payload.
    ("record codec", &["entries"]),
    // Identifiers -> key -> location, and rebuilding it on open.
    ("index", &["index", "rebuild"]),
    // The identify rules: people, never bytes.
    ("profile rules", &["profile"]),
    // One call turned into one batch; a stored profile read back.
    ("write path", &["apply", "view", "journal"]),
    // `Db`.
    ("api", &["db"]),
    // What sits on the API: the binary, the server, the W1 generator, the crate root.
    ("surfaces", &["cli", "server", "workload", "main", "lib"]),
];

/// Layers that must stay pure even though they sit higher: the profile rules may name only the
/// foundation (issue 10: "pure: ... no disk types"), not storage, codec or index.
const PURE: &[(&str, &[&str])] = &[("profile rules", &["foundation"])];

/// Imports against the layers allowed as exceptions, each as (file, imported module path
/// prefix), with the reason beside it. Empty since issue 10 moved the plain data types the codec
/// stores (`PropState`, `Stamp`, `Adds`, `ProfileRecord`, `Ids`) and the email normalisation to
/// `src/types/`; keep it empty. The check fails on a violation not listed here, and also on an
/// entry that no longer matches anything.
const KNOWN_VIOLATIONS: &[(&str, &str)] = &[];

fn layer_of_module(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

fn layer_index(name: &str) -> usize {
    LAYERS.iter().position(|(n, _)| *n == name).unwrap()
}

/// May code in layer `from` name layer `to`?
fn allowed(from: usize, to: usize) -> bool {
    if let Some((_, may)) = PURE.iter().find(|(n, _)| layer_index(n) == from) {
        return to == from || may.iter().any(|m| layer_index(m) == to);
    }
    to <= from
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The line without its `//` comment (a `//` inside a string literal ends the scan early, which
/// can only hide a path, and no `crate::` path is written inside a string in `src/`).
fn code_of(line: &str) -> &str {
    match line.find("//") {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Every `crate::a::b` path on a line, as its module segments (`a::b`, or `a` alone); a path
/// starting with an upper-case segment (`crate::Error`) is returned as `lib`. Grouped imports
/// (`use crate::{a, b}`) yield each member.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = &rest[..i];
        rest = &rest[i + "crate::".len()..];
        // `$crate::` and `some_crate::` are not ours.
        if before.ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let inner = group.split('}').next().unwrap_or("");
            for member in inner.split(',') {
                found.push(module_of(member.trim()));
            }
            continue;
        }
        found.push(module_of(rest));
    }
    found
}

fn module_of(path: &str) -> String {
    let segments: Vec<&str> = path
        .split("::")
        .map(|s| {
            s.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
        })
        .take(2)
        .collect();
    let first = segments.first().copied().unwrap_or("");
    if first.starts_with(|c: char| c.is_uppercase()) || first.is_empty() || first == "self" {
        return "lib".to_string();
    }
    match segments.get(1) {
        Some(second) if !second.is_empty() && second.starts_with(|c: char| c.is_lowercase()) => {
            format!("{first}::{second}")
        }
        _ => first.to_string(),
    }
}

fn file_module(rel: &str) -> String {
    let inner = rel.trim_start_matches("src/").trim_end_matches(".rs");
    inner.split('/').next().unwrap().to_string()
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    assert!(files.len() > 20, "expected the crate's sources under src/");

    let mut violations = Vec::new();
    let mut used_exceptions = BTreeSet::new();
    for path in &files {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let module = file_module(&rel);
        let from = layer_of_module(&module).unwrap_or_else(|| {
            panic!("{rel}: module `{module}` is in no layer; add it to LAYERS in tests/layers.rs")
        });
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for target in crate_paths(code_of(line)) {
                let top = target.split("::").next().unwrap();
                let to = layer_of_module(top).unwrap_or_else(|| {
                    panic!(
                        "{rel}:{}: `crate::{target}` names a module in no layer",
                        n + 1
                    )
                });
                if allowed(from, to) {
                    continue;
                }
                if let Some(known) = KNOWN_VIOLATIONS.iter().find(|(f, prefix)| {
                    *f == rel && (target == *prefix || target.starts_with(&format!("{prefix}::")))
                }) {
                    used_exceptions.insert(*known);
                    continue;
                }
                violations.push(format!(
                    "{rel}:{}: `crate::{target}` — {} (layer {}) may not import from {} (layer {})",
                    n + 1,
                    module,
                    LAYERS[from].0,
                    top,
                    LAYERS[to].0
                ));
            }
        }
    }
    let stale: Vec<String> = KNOWN_VIOLATIONS
        .iter()
        .filter(|k| !used_exceptions.contains(*k))
        .map(|(f, p)| format!("{f} -> {p}: no longer happens; delete it from KNOWN_VIOLATIONS"))
        .collect();
    assert!(
        violations.is_empty() && stale.is_empty(),
        "layer check (docs/architecture.md, \"Layers\"):\n{}\n{}",
        violations.join("\n"),
        stale.join("\n")
    );
}

#[test]
fn the_path_reader_sees_every_form_of_import() {
    assert_eq!(crate_paths("use crate::db::Profile;"), ["db"]);
    assert_eq!(
        crate_paths("use crate::index::{Index, HashMap};"),
        ["index"]
    );
    assert_eq!(
        crate_paths("use crate::{Db, profile::message::Message};"),
        ["lib", "profile::message"]
    );
    assert_eq!(
        crate_paths("    let x = crate::wire::put_u64(out, 1);"),
        ["wire::put_u64"]
    );
    assert_eq!(crate_paths("source: crate::Error,"), ["lib"]);
    assert!(crate_paths("use profiledb::Db; $crate::x; other_crate::y").is_empty());
    assert_eq!(code_of("let a = 1; // crate::db::Profile"), "let a = 1; ");
}

#[test]
fn every_rule_of_the_order_holds_itself() {
    let codec = layer_index("record codec");
    let rules = layer_index("profile rules");
    let storage = layer_index("storage");
    let foundation = layer_index("foundation");
    assert!(allowed(codec, storage) && !allowed(storage, codec));
    assert!(allowed(rules, foundation) && !allowed(rules, codec) && !allowed(rules, storage));
    assert!(allowed(layer_index("write path"), rules));
    assert!(!allowed(layer_index("write path"), layer_index("api")));
}
