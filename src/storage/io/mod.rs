//! The I/O seam: every file operation of the storage engine goes through [`Io`], so tests can
//! fail the n-th write or fsync and simulate power loss.
//!
//! [`RealIo`] is the file system. With the `testing` feature (the crate's own tests, never a
//! release build), `FaultyIo` (in `faulty.rs`) is a test double that wraps the real file system
//! and can fail chosen operations, return `ENOSPC`, do short writes, crash the machine at the
//! k-th operation of any kind (`FaultyIo::crash_at`), and produce the directory a power cut would
//! leave behind (only what was synced survives; `FaultyIo::power_loss_with` chooses how the
//! unsynced rest is damaged). Its items keep their paths (`storage::io::FaultyIo`, ...).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// An open file of the store (positional reads and writes, no cursor).
pub trait IoFile: Send + Sync {
    /// Write `buf` at `offset`; may write fewer bytes (the caller loops).
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<usize>;
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Read into `buf` from `offset`; returns the bytes read (0 at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncate or extend.
    fn set_len(&self, len: u64) -> io::Result<()>;
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Current length.
    fn len(&self) -> io::Result<u64>;
    #[cfg_attr(not(feature = "testing"), allow(dead_code))] // used by the crate's tests only
    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// File-system operations used by the storage engine.
pub trait Io: Send + Sync {
    /// Create a directory and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Create a new, empty file (fails if it exists), open for reading and writing.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn IoFile>>;
    /// Open an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>>;
    /// Read a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// A read-only `std::fs::File` to memory-map, or `None` to fall back to [`Io::read`].
    fn map_source(&self, path: &Path) -> io::Result<Option<File>>;
    /// Rename `from` to `to` (atomic, replaces `to`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Unlink a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// fsync a directory (makes creates, renames and unlinks in it durable).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in a directory.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Length of a file.
    fn len(&self, path: &Path) -> io::Result<u64>;
}

/// Remove `path`; one already gone is not an error (a removal retried after a crash).
pub(crate) fn remove_if_present(io: &dyn Io, path: &Path) -> io::Result<()> {
    match io.remove(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        done => done,
    }
}

/// Write all of `buf` at `offset`, looping over short writes.
pub(crate) fn write_all_at(file: &dyn IoFile, mut offset: u64, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        let n = file.write_at(offset, buf)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
        }
        buf = buf.get(n..).unwrap_or(&[]);
        offset += n as u64;
    }
    Ok(())
}

/// Write zeros over `from..to` of `file`, a block at a time (the log's zeros kept ahead of its
/// data, a hint's temp file filled before its payload).
pub(crate) fn write_zeros_at(file: &dyn IoFile, from: u64, to: u64) -> io::Result<()> {
    /// A block of zeros, written as often as the span asks.
    static ZEROS: [u8; 1 << 16] = [0; 1 << 16];
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        write_all_at(file, at, &ZEROS[..n])?;
        at += n as u64;
    }
    Ok(())
}

/// Read exactly `buf.len()` bytes at `offset` (a short file is an `UnexpectedEof` error).
pub(crate) fn read_exact_at(
    file: &dyn IoFile,
    mut offset: u64,
    mut buf: &mut [u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        let n = file.read_at(offset, buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ends before the record",
            ));
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealIo;

struct RealFile(File);

impl IoFile for RealFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        self.0.write_at(buf, offset)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
}

/// Options creating files readable by their owner only (0600 on Unix): a store holds
/// personal data.
pub(crate) fn private_file_options() -> OpenOptions {
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    o
}

/// Open `path` with `options`, asking the kernel not to update the file's access time on reads
/// (`O_NOATIME`, Linux): a miss of the writer cache reads a record with `pread`, and the access
/// time check took ~7 % of each read (docs/performance.md, round 30). The flag is allowed only
/// to the file's owner (or a privileged process): for anyone else the file is opened without
/// it, as before.
pub(crate) fn open_no_atime(options: &OpenOptions, path: &Path) -> io::Result<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut quiet = options.clone();
        quiet.custom_flags(libc::O_NOATIME);
        match quiet.open(path) {
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {}
            opened => return opened,
        }
    }
    options.open(path)
}

/// A recursive directory builder making directories of their owner only (0700 on Unix).
pub(crate) fn private_dir_builder() -> std::fs::DirBuilder {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        b.mode(0o700);
    }
    b
}

impl Io for RealIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        private_dir_builder().create(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let f = open_no_atime(
            private_file_options()
                .read(true)
                .write(true)
                .create_new(true),
            path,
        )?;
        Ok(Arc::new(RealFile(f)))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let f = open_no_atime(OpenOptions::new().read(true).write(true), path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn map_source(&self, path: &Path) -> io::Result<Option<File>> {
        open_no_atime(OpenOptions::new().read(true), path).map(Some)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir)? {
            if let Some(n) = e?.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        Ok(names)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }
}

#[cfg(feature = "testing")]
mod faulty;
#[cfg(feature = "testing")]
pub use faulty::{FaultKind, FaultyIo, NameLoss, Op, PowerCut, UnsyncedTail};

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    /// The `flags:` line of `/proc/self/fdinfo/FD` (octal), the flags the file is open with.
    #[cfg(target_os = "linux")]
    fn open_flags(f: &File) -> i32 {
        use std::os::fd::AsRawFd as _;
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", f.as_raw_fd())).unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .expect("a flags line");
        i32::from_str_radix(flags.trim(), 8).unwrap()
    }

    #[test]
    fn segments_are_read_without_access_time_updates_where_the_kernel_allows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0000000001.seg");
        std::fs::File::create(&path)
            .unwrap()
            .write_all(b"profiledb")
            .unwrap();
        let read = open_no_atime(OpenOptions::new().read(true), &path).unwrap();
        let mut buf = [0u8; 9];
        read.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"profiledb");
        let rw = RealIo.open(&path).unwrap();
        write_all_at(rw.as_ref(), 0, b"P").unwrap();
        let again = RealIo.map_source(&path).unwrap().unwrap();
        again.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"Profiledb");
        // The owner (this test made the file) may ask for it, so the kernel granted it.
        #[cfg(target_os = "linux")]
        {
            assert_ne!(open_flags(&read) & libc::O_NOATIME, 0);
            assert_ne!(open_flags(&again) & libc::O_NOATIME, 0);
            let plain = File::open(&path).unwrap();
            assert_eq!(open_flags(&plain) & libc::O_NOATIME, 0);
        }
    }
}
