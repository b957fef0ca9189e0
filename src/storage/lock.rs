//! The directory lock: an exclusive `File::try_lock` on `LOCK`, held for the store's life.
//! The OS releases it when the process dies; a second open (same process or another) fails
//! with [`Error::Locked`].

use std::fs::{File, TryLockError};
use std::path::Path;

use crate::error::{Error, Result};

/// File name of the lock file.
pub(crate) const LOCK: &str = "LOCK";

/// Take the lock of `dir`.
pub(crate) fn lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK);
    let file = super::io::private_file_options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("open", &path, e))?;
    // A lock just released by this process can still be held for a moment by a child it is
    // starting: between fork and exec the child shares the lock's open file (close-on-exec
    // closes it only at the exec). Seen in a test binary where one test reopened a store while
    // another started the CLI. So a refusal is retried for a short while before it is final;
    // a store really held by someone else is still refused, ~50 ms later.
    let mut waits = 0;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if waits < RETRIES => {
                waits += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(Error::Locked {
                    dir: dir.to_path_buf(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
    }
}

/// Retries of a refused lock, 5 ms apart (see [`lock`]).
const RETRIES: u32 = 10;
