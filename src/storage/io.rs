//! The I/O seam: every file operation of the storage engine goes through [`Io`], so tests can
//! fail the n-th write or fsync and simulate power loss.
//!
//! [`RealIo`] is the file system. [`FaultyIo`] is a test double that wraps the real file system
//! and can fail chosen operations, return `ENOSPC`, do short writes, and produce the directory a
//! power cut would leave behind (only what was synced survives).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

/// An open file of the store (positional reads and writes, no cursor).
pub trait IoFile: Send + Sync {
    /// Write `buf` at `offset`; may write fewer bytes (the caller loops).
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<usize>;
    /// Read into `buf` from `offset`; returns the bytes read (0 at the end).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// `fdatasync`.
    fn sync_data(&self) -> io::Result<()>;
    /// Truncate or extend.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Current length.
    fn len(&self) -> io::Result<u64>;
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

impl Io for RealIo {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Arc::new(RealFile(f)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn map_source(&self, path: &Path) -> io::Result<Option<File>> {
        File::open(path).map(Some)
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

/// Kinds of operation [`FaultyIo`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// File creation.
    Create,
    /// A write to a file.
    Write,
    /// `fdatasync` of a file.
    Sync,
    /// `fsync` of a directory.
    SyncDir,
    /// A rename.
    Rename,
    /// An unlink.
    Remove,
    /// Truncation (`set_len`).
    SetLen,
}

/// How an injected fault fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Fail with an I/O error (`EIO`); nothing is done.
    Error,
    /// Fail with `ENOSPC`; nothing is done.
    NoSpace,
    /// (Writes only) write half the bytes and report that, as a short write does.
    ShortWrite,
}

/// What a simulated power cut leaves of data that was written but never synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsyncedTail {
    /// Nothing of it survives.
    Drop,
    /// Up to this many bytes of it survive intact (as if the OS had written them back).
    Keep(usize),
    /// Up to this many bytes survive, but as zeros (metadata updated, data blocks not).
    Zeros(usize),
    /// Up to this many bytes survive, but as garbage (a torn sector write).
    Garbage(usize),
}

#[derive(Debug, Clone, Copy)]
struct Fault {
    op: Op,
    /// Fails the `nth` operation of `op` counted from when the fault was added (1 = next).
    nth: u64,
    kind: FaultKind,
    permanent: bool,
    seen: u64,
}

#[derive(Default)]
struct Shadow {
    /// Content as of the last successful sync.
    durable: Mutex<Vec<u8>>,
}

#[derive(Default)]
struct FaultState {
    counts: HashMap<Op, u64>,
    faults: Vec<Fault>,
    /// The current namespace: path -> inode shadow.
    names: HashMap<PathBuf, Arc<Shadow>>,
    /// The namespace as of the last directory sync.
    durable_names: HashMap<PathBuf, Arc<Shadow>>,
    crashed: bool,
}

/// A fault-injecting, power-loss-simulating [`Io`] for tests. It works on real files (so maps
/// and reads see the real bytes) and keeps a shadow of what was *synced*: each file's content at
/// its last `fdatasync`, and each directory's names at its last `fsync`.
///
/// Files that already exist when first seen are assumed durable.
#[derive(Default)]
pub struct FaultyIo {
    state: Mutex<FaultState>,
}

struct FaultyFile {
    real: File,
    path: PathBuf,
    shadow: Arc<Shadow>,
    io: Arc<FaultyIo>,
}

fn injected(kind: FaultKind) -> io::Error {
    match kind {
        FaultKind::NoSpace => io::Error::from_raw_os_error(28),
        _ => io::Error::other("injected I/O fault"),
    }
}

impl FaultyIo {
    /// A fresh double with no faults.
    pub fn new() -> Arc<FaultyIo> {
        Arc::new(FaultyIo::default())
    }

    /// Fail the `nth` next operation of kind `op` (1 = the very next one); if `permanent`, that
    /// one and every later one of the kind fail.
    pub fn fail(&self, op: Op, nth: u64, kind: FaultKind, permanent: bool) {
        self.state.lock().faults.push(Fault {
            op,
            nth: nth.max(1),
            kind,
            permanent,
            seen: 0,
        });
    }

    /// Remove every pending fault.
    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// How many operations of kind `op` were attempted so far.
    pub fn count(&self, op: Op) -> u64 {
        self.state.lock().counts.get(&op).copied().unwrap_or(0)
    }

    fn alive(&self) -> io::Result<()> {
        if self.state.lock().crashed {
            return Err(io::Error::other("simulated power loss: the machine is off"));
        }
        Ok(())
    }

    /// Count one operation and decide whether it fails.
    fn check(&self, op: Op) -> io::Result<Option<FaultKind>> {
        let mut st = self.state.lock();
        if st.crashed {
            return Err(io::Error::other("simulated power loss: the machine is off"));
        }
        *st.counts.entry(op).or_insert(0) += 1;
        let mut hit = None;
        st.faults.retain_mut(|f| {
            if f.op != op {
                return true;
            }
            f.seen += 1;
            if f.seen >= f.nth {
                hit = Some(f.kind);
                return f.permanent;
            }
            true
        });
        match hit {
            Some(FaultKind::ShortWrite) if op == Op::Write => Ok(Some(FaultKind::ShortWrite)),
            Some(k) => Err(injected(k)),
            None => Ok(None),
        }
    }

    fn shadow_for(&self, path: &Path) -> Arc<Shadow> {
        let mut st = self.state.lock();
        if let Some(s) = st.names.get(path) {
            return s.clone();
        }
        let s = Arc::new(Shadow {
            durable: Mutex::new(std::fs::read(path).unwrap_or_default()),
        });
        st.names.insert(path.to_path_buf(), s.clone());
        st.durable_names.insert(path.to_path_buf(), s.clone());
        s
    }

    /// Simulate a power cut now: from here on every operation fails, and `dest` (created if
    /// missing) receives the files of `dir` a restart would find: the names as of the last
    /// directory sync, each with its content as of its last sync, plus what `tail` says of the
    /// bytes written after it.
    pub fn power_loss(&self, dir: &Path, dest: &Path, tail: UnsyncedTail) -> io::Result<()> {
        let mut st = self.state.lock();
        st.crashed = true;
        std::fs::create_dir_all(dest)?;
        for (path, shadow) in &st.durable_names {
            if path.parent() != Some(dir) {
                continue;
            }
            let Some(name) = path.file_name() else {
                continue;
            };
            let mut bytes = shadow.durable.lock().clone();
            // The live file (if the inode still has this name) shows what was written since.
            let current = if st.names.get(path).is_some_and(|s| Arc::ptr_eq(s, shadow)) {
                std::fs::read(path).unwrap_or_default()
            } else {
                Vec::new()
            };
            if current.len() > bytes.len() && current.starts_with(&bytes) {
                let extra = &current[bytes.len()..];
                match tail {
                    UnsyncedTail::Drop => {}
                    UnsyncedTail::Keep(n) => bytes.extend_from_slice(&extra[..n.min(extra.len())]),
                    UnsyncedTail::Zeros(n) => bytes.resize(bytes.len() + n.min(extra.len()), 0),
                    UnsyncedTail::Garbage(n) => {
                        let n = n.min(extra.len());
                        bytes.extend((0..n).map(|i| (i as u8).wrapping_mul(31) ^ 0xA5));
                    }
                }
            }
            std::fs::write(dest.join(name), bytes)?;
        }
        Ok(())
    }
}

impl FaultyFile {
    fn check(&self, op: Op) -> io::Result<Option<FaultKind>> {
        self.io.check(op)
    }
}

impl IoFile for FaultyFile {
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<usize> {
        match self.check(Op::Write)? {
            Some(FaultKind::ShortWrite) if buf.len() > 1 => {
                self.real.write_at(&buf[..buf.len() / 2], offset)
            }
            _ => self.real.write_at(buf, offset),
        }
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.real.read_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check(Op::Sync)?;
        self.real.sync_data()?;
        *self.shadow.durable.lock() = std::fs::read(&self.path)?;
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check(Op::SetLen)?;
        self.real.set_len(len)
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.real.metadata()?.len())
    }
}

/// [`Io`] for a shared [`FaultyIo`] (what goes into `StoreOptions::io`).
impl Io for Arc<FaultyIo> {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        RealIo.create_dir_all(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        self.check(Op::Create)?;
        let real = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        let shadow = Arc::new(Shadow::default());
        self.state
            .lock()
            .names
            .insert(path.to_path_buf(), shadow.clone());
        Ok(Arc::new(FaultyFile {
            real,
            path: path.to_path_buf(),
            shadow,
            io: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        self.alive()?;
        let real = OpenOptions::new().read(true).write(true).open(path)?;
        let shadow = self.shadow_for(path);
        Ok(Arc::new(FaultyFile {
            real,
            path: path.to_path_buf(),
            shadow,
            io: self.clone(),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn map_source(&self, path: &Path) -> io::Result<Option<File>> {
        File::open(path).map(Some)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename)?;
        let shadow = self.shadow_for(from);
        std::fs::rename(from, to)?;
        let mut st = self.state.lock();
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), shadow);
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Remove)?;
        let _ = self.shadow_for(path);
        std::fs::remove_file(path)?;
        self.state.lock().names.remove(path);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Op::SyncDir)?;
        RealIo.sync_dir(dir)?;
        let mut st = self.state.lock();
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        for (p, s) in &st.names {
            if p.parent() == Some(dir) {
                st.durable_names.insert(p.clone(), s.clone());
            }
        }
        Ok(())
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.alive()?;
        let names = RealIo.list(dir)?;
        for n in &names {
            let _ = self.shadow_for(&dir.join(n));
        }
        Ok(names)
    }
    fn len(&self, path: &Path) -> io::Result<u64> {
        RealIo.len(path)
    }
}
