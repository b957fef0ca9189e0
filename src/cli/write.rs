//! Commands that change the store: `identify`, `import`, `delete`, `unlink`.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::time::Instant;

use profiledb::{Db, Durability, Outcome, Prepared, Selector, Status};
use serde::Serialize;

use super::lines::{self, Event, Line};
use super::progress::{Progress, Unit};
use super::{
    Access, CmdResult, DurabilityArg, FAILED, Failure, Global, OK, close, describe, open,
    print_json,
};

/// How commands that apply many calls from one thread (`import`, `bench`) honour
/// `--durability`: the store's default durability to open with, and the durability each call
/// is applied with.
///
/// - `group`: the store runs group commit (its background thread syncs at least every 10 ms,
///   and early once 1,000 calls are unsynced) and calls are applied without waiting for it;
/// - `buffered`: no background syncs; the command syncs once at the end;
/// - `sync`: every call is synced before the next one is applied.
pub fn durabilities(mode: DurabilityArg) -> (Durability, Durability) {
    match mode {
        DurabilityArg::Group => (Durability::group_commit(), Durability::Buffered),
        DurabilityArg::Buffered => (Durability::Buffered, Durability::Buffered),
        DurabilityArg::Sync => (Durability::SyncEach, Durability::SyncEach),
    }
}

/// `profiledb identify JSON`.
pub fn identify(global: &Global, json: &str) -> CmdResult {
    let mut text = json.as_bytes().to_vec();
    if json == "-" {
        text.clear();
        io::stdin()
            .lock()
            .read_to_end(&mut text)
            .map_err(|e| Failure::error(format!("cannot read stdin: {e}")))?;
    }
    let mode = global.durability.unwrap_or(DurabilityArg::Group);
    let db = open(global, Access::Write, mode.durability())?;
    let result = db.apply_json(text.trim_ascii());
    close(db)?;
    print_json(&result?)?;
    Ok(OK)
}

/// The summary `import` prints.
#[derive(Debug, Default, Serialize)]
pub struct ImportSummary {
    /// Non-blank lines read.
    pub lines: u64,
    /// Lines the store acknowledged (created + updated + merged + duplicate + unchanged).
    pub accepted: u64,
    /// Lines refused (not JSON, not a message, or against the rules).
    pub refused: u64,
    /// Accepted lines whose messageId was applied before (ignored).
    pub duplicates: u64,
    /// Accepted lines that merged profiles.
    pub merges: u64,
    /// Accepted lines that created a profile.
    pub created: u64,
    /// Accepted lines that updated one profile.
    pub updated: u64,
    /// Accepted lines with nothing to store.
    pub unchanged: u64,
    /// Identifiers moved between profiles by the protection rule.
    pub moved: u64,
    /// Property operations ignored (a new name over the limit, `$add` on a non-number or
    /// overflowing to infinity).
    pub ignored: u64,
    /// Wall time, in seconds.
    pub seconds: f64,
    /// Accepted lines per second.
    pub calls_per_sec: f64,
}

impl ImportSummary {
    fn count(&mut self, outcome: &Outcome) {
        self.accepted += 1;
        match outcome.status {
            Status::Created => self.created += 1,
            Status::Updated => self.updated += 1,
            Status::Merged => self.merges += 1,
            Status::Duplicate => self.duplicates += 1,
            Status::Unchanged => self.unchanged += 1,
        }
        self.moved += outcome.moved.len() as u64;
        self.ignored += outcome.ignored.len() as u64;
    }
}

/// Prepared lines `import` applies in one `Db::apply_prepared_batch`.
const IMPORT_BATCH: usize = 256;

/// `profiledb import FILE|-`: read on one thread, parse and validate on `workers` threads
/// (0: one per core), apply on this one in file order (`lines::run`), in batches of up to
/// [`IMPORT_BATCH`] calls (`Db::apply_prepared_batch`: each call applied while the memory of
/// the coming ones is loaded). A fatal error stops the import at its line, as one call at a
/// time did: the batch applies nothing after it, and the summary counts the lines before it.
pub fn import(global: &Global, file: &str, workers: usize) -> CmdResult {
    let (input, name, size): (Box<dyn BufRead + Send>, String, Option<u64>) = if file == "-" {
        (
            Box::new(BufReader::with_capacity(1 << 16, io::stdin())),
            "<stdin>".into(),
            None,
        )
    } else {
        let f = File::open(file).map_err(|e| Failure::error(format!("cannot open {file}: {e}")))?;
        let size = f.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
        (
            Box::new(BufReader::with_capacity(1 << 16, f)),
            file.into(),
            size,
        )
    };
    let workers = if workers == 0 {
        lines::default_workers()
    } else {
        workers
    };
    let mode = global.durability.unwrap_or(DurabilityArg::Group);
    let (store_durability, call_durability) = durabilities(mode);
    let db = open(global, Access::Write, store_durability)?;
    let cap = db.options().max_call_bytes;
    let progress = match size {
        Some(total) => Progress::bar("import", Some(total), Unit::Bytes),
        None => Progress::bar("import", None, Unit::Items),
    };
    let mut summary = ImportSummary::default();
    let started = Instant::now();
    let mut fatal = None;
    // Prepared lines waiting to be applied in one `apply_prepared_batch`: applied when
    // `IMPORT_BATCH` are waiting, before any line that is not a prepared call (so that
    // messages come out in line order), and at the end.
    let mut pending: Vec<Prepared> = Vec::with_capacity(IMPORT_BATCH);
    let mut linenos: Vec<u64> = Vec::with_capacity(IMPORT_BATCH);
    let flush = |pending: &mut Vec<Prepared>,
                 linenos: &mut Vec<u64>,
                 summary: &mut ImportSummary,
                 fatal: &mut Option<String>| {
        let results = db.apply_prepared_batch(pending, call_durability);
        pending.clear();
        for (result, lineno) in results.into_iter().zip(linenos.drain(..)) {
            if fatal.is_some() {
                // The import stopped before this line (as it did one call at a time): not
                // applied (`Error::NotApplied`), or answered with the store's failure.
                summary.lines -= 1;
                continue;
            }
            match result {
                Ok(outcome) => summary.count(&outcome),
                Err(e) if e.is_refusal() => {
                    summary.refused += 1;
                    progress.println(&format!("{name}:{lineno}: {e}"));
                }
                Err(e) => *fatal = Some(format!("{name}:{lineno}: {e}; import stopped")),
            }
        }
        fatal.is_none()
    };
    lines::run(&db, input, workers, &mut |event| {
        let item = match event {
            Event::Item(item) => item,
            Event::ReadError { lineno, error } => {
                if flush(&mut pending, &mut linenos, &mut summary, &mut fatal) {
                    fatal = Some(format!("{name}:{lineno}: cannot read: {error}"));
                }
                return false;
            }
        };
        let lineno = item.lineno;
        if lineno.is_multiple_of(1024) {
            progress.set(if size.is_some() {
                item.consumed
            } else {
                lineno
            });
        }
        summary.lines += 1;
        match item.line {
            Line::Prepared(Ok(prepared)) => {
                pending.push(prepared);
                linenos.push(lineno);
                if pending.len() < IMPORT_BATCH {
                    return true;
                }
                flush(&mut pending, &mut linenos, &mut summary, &mut fatal)
            }
            other => {
                if !flush(&mut pending, &mut linenos, &mut summary, &mut fatal) {
                    return false;
                }
                match other {
                    Line::TooLong => {
                        summary.refused += 1;
                        progress.println(&format!(
                            "{name}:{lineno}: call refused: the line is longer than {cap} bytes \
                             (the call-size limit)"
                        ));
                        true
                    }
                    Line::Prepared(Err(e)) if e.is_refusal() => {
                        summary.refused += 1;
                        progress.println(&format!("{name}:{lineno}: {e}"));
                        true
                    }
                    Line::Prepared(Err(e)) => {
                        fatal = Some(format!("{name}:{lineno}: {e}; import stopped"));
                        false
                    }
                    Line::Prepared(Ok(_)) => true,
                }
            }
        }
    });
    if fatal.is_none() {
        flush(&mut pending, &mut linenos, &mut summary, &mut fatal);
    }
    progress.finish();
    // Closing syncs everything applied (and writes the index snapshot).
    let closed = close(db);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.calls_per_sec = summary.accepted as f64 / summary.seconds.max(1e-9);
    print_json(&summary)?;
    if let Some(message) = fatal {
        return Err(Failure::error(message));
    }
    closed?;
    Ok(if summary.refused > 0 { FAILED } else { OK })
}

/// `profiledb delete SELECTOR [--suppress]`.
pub fn delete(global: &Global, selector: &Selector, suppress: bool, erase: bool) -> CmdResult {
    let mode = global.durability.unwrap_or(DurabilityArg::Group);
    let db = open(global, Access::Write, mode.durability())?;
    let result = if erase {
        db.delete_and_erase(selector, suppress)
    } else {
        db.delete(selector, suppress)
    };
    close(db)?;
    match result? {
        Some(key) => {
            print_json(
                &serde_json::json!({"deleted": key, "suppressed": suppress, "erased": erase}),
            )?;
            Ok(OK)
        }
        None => Err(Failure::failed(format!(
            "no profile with {}",
            describe(selector)
        ))),
    }
}

/// `profiledb unlink SELECTOR`: by anonymous id, detach that device; by another selector,
/// detach every device of the profile.
pub fn unlink(global: &Global, selector: &Selector) -> CmdResult {
    let mode = global.durability.unwrap_or(DurabilityArg::Group);
    let db = open(global, Access::Write, mode.durability())?;
    let result = unlink_in(&db, selector);
    close(db)?;
    match result? {
        Some((key, unlinked)) => {
            print_json(&serde_json::json!({"key": key, "unlinked": unlinked}))?;
            Ok(OK)
        }
        None => Err(Failure::failed(format!(
            "no profile with {}",
            describe(selector)
        ))),
    }
}

/// `profiledb unmerge SELECTOR --merged-key KEY`.
pub fn unmerge(global: &Global, survivor: &Selector, merged_key: u64) -> CmdResult {
    let mode = global.durability.unwrap_or(DurabilityArg::Group);
    let db = open(global, Access::Write, mode.durability())?;
    let result = db.unmerge(survivor, merged_key);
    close(db)?;
    print_json(&result?)?;
    Ok(OK)
}

fn unlink_in(db: &Db, selector: &Selector) -> profiledb::Result<Option<(u64, Vec<String>)>> {
    if let Selector::AnonymousId(id) = selector {
        return Ok(db.unlink(id)?.map(|key| (key, vec![id.clone()])));
    }
    let Some(profile) = db.get(selector)? else {
        return Ok(None);
    };
    let mut unlinked = Vec::new();
    for id in &profile.anonymous_ids {
        if db.unlink(id)?.is_some() {
            unlinked.push(id.clone());
        }
    }
    Ok(Some((profile.key, unlinked)))
}
