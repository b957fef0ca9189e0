//! Commands that read the store: `get`, `export`, `query`, `company`, `stats`.

use std::io::{self, BufWriter, Write};

use profiledb::{Durability, Filter, Selector, Timestamp};

use super::{Access, CmdResult, Failure, Global, OK, close, describe, open, print_json};

/// `profiledb get SELECTOR [--at TIMESTAMP]`.
pub fn get(global: &Global, selector: &Selector, at: Option<&str>) -> CmdResult {
    let at = match at {
        None => None,
        Some(text) => Some(Timestamp::parse(text).ok_or_else(|| {
            Failure::error(format!(
                "--at {text:?} is not an RFC 3339 date-time with a zone"
            ))
        })?),
    };
    let db = open(global, Access::Read, Durability::Buffered)?;
    let result = match at {
        Some(at) => db.get_at(selector, at),
        None => db.get(selector),
    };
    close(db)?;
    match result? {
        Some(profile) => {
            print_json(&profile)?;
            Ok(OK)
        }
        None => Err(Failure::failed(format!(
            "no profile with {}",
            describe(selector)
        ))),
    }
}

/// `profiledb history SELECTOR`.
pub fn history(global: &Global, selector: &Selector) -> CmdResult {
    let db = open(global, Access::Read, Durability::Buffered)?;
    let result = db.history(selector);
    close(db)?;
    match result? {
        Some(history) => {
            print_json(&history)?;
            Ok(OK)
        }
        None => Err(Failure::failed(format!(
            "no profile with {}",
            describe(selector)
        ))),
    }
}

/// `profiledb explain JSON`.
pub fn explain(global: &Global, json: &str) -> CmdResult {
    let mut text = json.as_bytes().to_vec();
    if json == "-" {
        text.clear();
        io::Read::read_to_end(&mut io::stdin().lock(), &mut text)
            .map_err(|e| Failure::error(format!("cannot read stdin: {e}")))?;
    }
    let db = open(global, Access::Read, Durability::Buffered)?;
    let result = db.explain_json(text.trim_ascii());
    close(db)?;
    print_json(&result?)?;
    Ok(OK)
}

/// `profiledb export` (no filter) and `profiledb query FILTER`: JSON lines of profiles.
pub fn query(global: &Global, filter: Option<&str>) -> CmdResult {
    let filter = match filter {
        None => Filter::All,
        Some(text) => {
            Filter::parse(text).map_err(|e| Failure::error(format!("invalid filter: {e}")))?
        }
    };
    let db = open(global, Access::Read, Durability::Buffered)?;
    let stdout = io::stdout();
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut write_error = None;
    let scanned = db.scan(&filter, &mut |profile| {
        let written = serde_json::to_writer(&mut out, &profile)
            .map_err(io::Error::from)
            .and_then(|_| out.write_all(b"\n"));
        match written {
            Ok(()) => true,
            Err(e) => {
                write_error = Some(e);
                false
            }
        }
    });
    let flushed = out.flush();
    drop(out);
    close(db)?;
    scanned?;
    if let Some(e) = write_error {
        return Err(Failure::output(e));
    }
    flushed.map_err(Failure::output)?;
    Ok(OK)
}

/// `profiledb company ID [--members]`.
pub fn company(global: &Global, id: &str, members: bool) -> CmdResult {
    let db = open(global, Access::Read, Durability::Buffered)?;
    let result = db.company(id).and_then(|c| match (c, members) {
        (Some(c), true) => db.members(id).map(|m| Some((c, Some(m)))),
        (c, _) => Ok(c.map(|c| (c, None))),
    });
    close(db)?;
    match result? {
        Some((company, members)) => {
            let mut json = serde_json::to_value(&company)
                .map_err(|e| Failure::error(format!("cannot encode the company: {e}")))?;
            if let (Some(members), Some(obj)) = (members, json.as_object_mut()) {
                obj.insert("members".into(), members.into());
            }
            print_json(&json)?;
            Ok(OK)
        }
        None => Err(Failure::failed(format!("no company with id {id:?}"))),
    }
}

/// `profiledb stats`.
pub fn stats(global: &Global) -> CmdResult {
    let db = open(global, Access::Read, Durability::Buffered)?;
    let stats = db.stats();
    close(db)?;
    print_json(&stats)?;
    Ok(OK)
}
