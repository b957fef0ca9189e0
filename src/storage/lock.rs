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
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Locked {
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
    }
}
