//! Maintenance commands: `compact` and `check`.

use std::time::Instant;

use profiledb::{Durability, Error};
use serde::Serialize;

use super::progress::Progress;
use super::{
    Access, CmdResult, FAILED, Failure, Global, OK, close, open, print_json, try_open, warn,
};

/// What `compact` prints.
#[derive(Debug, Serialize)]
struct Compacted {
    bytes_reclaimed: u64,
    disk_bytes_before: u64,
    disk_bytes_after: u64,
    seconds: f64,
}

/// `profiledb compact`.
pub fn compact(global: &Global) -> CmdResult {
    let db = open(global, Access::Read, Durability::Buffered)?;
    let progress = Progress::spinner("compacting");
    let started = Instant::now();
    let before = db.stats().storage.disk_bytes;
    let result = db.compact();
    let after = db.stats().storage.disk_bytes;
    progress.finish();
    close(db)?;
    let bytes_reclaimed = result?;
    print_json(&Compacted {
        bytes_reclaimed,
        disk_bytes_before: before,
        disk_bytes_after: after,
        seconds: started.elapsed().as_secs_f64(),
    })?;
    Ok(OK)
}

/// What `check` prints.
#[derive(Debug, Serialize)]
struct Checked {
    ok: bool,
    problems: Vec<String>,
}

/// `profiledb check`: problems found while opening (corruption that is not a torn tail,
/// undecodable records, bad file headers) and by [`profiledb::Db::check`] (every record's CRC,
/// indexes against data). Any other failure to open (locked, I/O) is an error.
pub fn check(global: &Global) -> CmdResult {
    let progress = Progress::spinner("checking");
    let problems = match try_open(global, Access::Read, Durability::Buffered)? {
        Ok(db) => {
            let found = db.check();
            progress.finish();
            close(db)?;
            found?
        }
        Err(e @ (Error::Corruption { .. } | Error::Decode { .. } | Error::Format { .. })) => {
            vec![e.to_string()]
        }
        Err(e) => return Err(Failure::error(e.to_string())),
    };
    progress.finish();
    for problem in &problems {
        warn(&format!("check: {problem}"));
    }
    let ok = problems.is_empty();
    print_json(&Checked { ok, problems })?;
    Ok(if ok { OK } else { FAILED })
}
