//! Fault injection and power-loss simulation for the crate's own tests (feature `testing`):
//! [`FaultyIo`] and the kinds of damage it does ([`Op`], [`FaultKind`], [`UnsyncedTail`],
//! [`NameLoss`], [`PowerCut`]). See the parent module for the seam it plugs into.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Io, IoFile, RealIo};
use crate::rng::SplitMix64;

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
    /// Everything written survives, as after `kill -9` (the OS had it). Unlike `Keep`, this
    /// also applies to a file whose unsynced state does not extend its synced content (an
    /// unsynced truncation).
    All,
    /// A seeded random damage chosen per file (the seed is mixed with the file name): the
    /// unsynced bytes are dropped, kept whole, cut short at a random point, zero-filled (the
    /// length grew but the data blocks were never written), kept partly then zero-filled, or
    /// kept partly then garbage. A file whose unsynced state does not extend its synced
    /// content (an unsynced truncation) keeps either its synced or its current content.
    Seeded(u64),
    /// Writes reordered: the file keeps its new length, but each 512-byte sector of the
    /// unsynced bytes independently holds its new content or zeros (seeded per file).
    Sectors(u64),
}

/// Which namespace changes (creates, renames, unlinks) made since a directory's last fsync a
/// simulated power cut keeps. Changes are journaled in order; a prefix of them survives (as
/// with a journaling file system), never a later change without the earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameLoss {
    /// None: the names are those of the last directory fsync (the default of
    /// [`FaultyIo::power_loss`]).
    Durable,
    /// All of them: the names are the current ones.
    Current,
    /// The first `n` changes (since the last fsync of the directory).
    Prefix(usize),
    /// A seeded random prefix.
    Seeded(u64),
}

/// A simulated power cut: what survives of the unsynced data and of the unsynced names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    /// Data written but not synced.
    pub tail: UnsyncedTail,
    /// Names changed but not made durable by a directory fsync.
    pub names: NameLoss,
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
    /// Content as of the last successful sync, with the number of the sync (its [`Shadow::
    /// syncs`] ticket): syncs that run at once (the group commit's and a rotation's) each
    /// store what they made durable, and the newest wins, whichever finishes last.
    durable: Mutex<(u64, Vec<u8>)>,
    /// Tickets of the syncs started: a sync takes the next one together with the content it
    /// will make durable.
    syncs: Mutex<u64>,
    /// A read handle on the inode, to read its current content even after it lost its name.
    live: Option<File>,
}

impl Shadow {
    /// Sync number `ticket` made `content` durable. A sync started earlier may finish later:
    /// it must not take back what a newer one made durable (storing whatever finished last
    /// did, and a power cut then lost a sealed segment's synced tail: the busy group-commit
    /// matrix of tests/powerloss_sim.rs, when the flusher's sync of the active segment
    /// overlapped the rotation's).
    fn synced(&self, ticket: u64, content: Vec<u8>) {
        let mut durable = self.durable.lock();
        if ticket > durable.0 {
            *durable = (ticket, content);
        }
    }

    /// The inode's current content (what the OS has), or `None` if it cannot be read.
    fn current(&self) -> Option<Vec<u8>> {
        let f = self.live.as_ref()?;
        let len = f.metadata().ok()?.len() as usize;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0).ok()?;
        Some(buf)
    }
}

/// One namespace change not yet made durable by a directory fsync.
#[derive(Clone)]
enum NameChange {
    Link(PathBuf, Arc<Shadow>),
    Rename(PathBuf, PathBuf, Arc<Shadow>),
    Unlink(PathBuf),
}

impl NameChange {
    fn dir(&self) -> Option<&Path> {
        match self {
            NameChange::Link(p, _) | NameChange::Rename(_, p, _) | NameChange::Unlink(p) => {
                p.parent()
            }
        }
    }
}

/// The crate's generator (splitmix64), seeded per damage from the seed and a file name.
struct Rng(SplitMix64);

impl Rng {
    fn new(seed: u64, name: &str) -> Rng {
        let mut h = seed ^ 0x9E37_79B9_7F4A_7C15;
        for b in name.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01B3);
        }
        Rng(SplitMix64(h))
    }
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..=n`.
    fn upto(&mut self, n: usize) -> usize {
        (self.next() % (n as u64 + 1)) as usize
    }
}

fn garbage(n: usize, salt: u64) -> impl Iterator<Item = u8> {
    (0..n).map(move |i| ((i as u64).wrapping_mul(31) ^ 0xA5 ^ salt) as u8)
}

/// What survives of one file: `durable` (synced) and `current` (what the OS has).
fn damaged(durable: Vec<u8>, current: Option<Vec<u8>>, tail: UnsyncedTail, name: &str) -> Vec<u8> {
    let Some(current) = current else {
        return durable;
    };
    let extends = current.len() > durable.len() && current.starts_with(&durable);
    if !extends {
        return match tail {
            UnsyncedTail::All => current,
            UnsyncedTail::Seeded(seed) if Rng::new(seed, name).next() % 2 == 1 => current,
            _ => durable,
        };
    }
    let mut bytes = durable;
    let extra = &current[bytes.len()..];
    match tail {
        UnsyncedTail::Drop => {}
        UnsyncedTail::All => bytes.extend_from_slice(extra),
        UnsyncedTail::Keep(n) => bytes.extend_from_slice(&extra[..n.min(extra.len())]),
        UnsyncedTail::Zeros(n) => bytes.resize(bytes.len() + n.min(extra.len()), 0),
        UnsyncedTail::Garbage(n) => bytes.extend(garbage(n.min(extra.len()), 0)),
        UnsyncedTail::Sectors(seed) => {
            let mut rng = Rng::new(seed, name);
            let start = bytes.len();
            bytes.extend_from_slice(extra);
            let mut at = start;
            while at < bytes.len() {
                let end = ((at / 512 + 1) * 512).min(bytes.len());
                if rng.next().is_multiple_of(2) {
                    bytes[at..end].fill(0);
                }
                at = end;
            }
        }
        UnsyncedTail::Seeded(seed) => {
            let mut rng = Rng::new(seed, name);
            let cut = rng.upto(extra.len());
            match rng.next() % 6 {
                0 => {}
                1 => bytes.extend_from_slice(extra),
                2 => bytes.extend_from_slice(&extra[..cut]),
                3 => bytes.resize(bytes.len() + extra.len(), 0),
                4 => {
                    bytes.extend_from_slice(&extra[..cut]);
                    bytes.resize(bytes.len() + extra.len() - cut, 0);
                }
                _ => {
                    bytes.extend_from_slice(&extra[..cut]);
                    let n = rng.upto(extra.len() - cut);
                    bytes.extend(garbage(n, rng.next()));
                }
            }
        }
    }
    bytes
}

#[derive(Default)]
struct FaultState {
    counts: HashMap<Op, u64>,
    faults: Vec<Fault>,
    /// The current namespace: path -> inode shadow.
    names: HashMap<PathBuf, Arc<Shadow>>,
    /// The namespace as of the last directory sync.
    durable_names: HashMap<PathBuf, Arc<Shadow>>,
    /// Namespace changes since the last sync of their directory, in order.
    journal: Vec<NameChange>,
    crashed: bool,
    /// Operations of any kind counted so far (see [`FaultyIo::ops`]).
    total: u64,
    /// The operation (by [`FaultyIo::ops`] number) at which the machine crashes.
    crash_at: Option<u64>,
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

    /// How many operations of any [`Op`] kind were attempted so far (the numbering
    /// [`FaultyIo::crash_at`] uses). Opens, reads and listings are not counted.
    pub fn ops(&self) -> u64 {
        self.state.lock().total
    }

    /// Crash the machine at operation number `k` of any kind (counted by [`FaultyIo::ops`]
    /// from this double's creation, 1 = the first): that operation is not done and fails, and
    /// so does every later operation, opens and listings included, as after
    /// [`FaultyIo::power_loss`]. Take the disk image with `power_loss`/`power_loss_with`.
    pub fn crash_at(&self, k: u64) {
        self.state.lock().crash_at = Some(k);
    }

    /// Whether the machine is off (a crash point was hit or a power loss simulated).
    pub fn crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Turn the machine back on after a crash *without* a power loss, as a process restart
    /// after `kill -9` sees it: the files keep everything written (the page cache), and what is
    /// durable is still tracked, so a later `power_loss` shows what the restarted process made
    /// durable. Clears the crash point; other faults stay.
    pub fn revive(&self) {
        let mut st = self.state.lock();
        st.crashed = false;
        st.crash_at = None;
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
        st.total += 1;
        if st.crash_at == Some(st.total) {
            st.crashed = true;
            return Err(io::Error::other("simulated power loss: the machine is off"));
        }
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

    /// The shadow of the file named `path`; a file seen for the first time is assumed durable.
    /// `None` if there is no such file (then nothing is registered: an unlink or rename of a
    /// missing name must not make the name reappear in a power-cut image).
    fn shadow_for(&self, path: &Path) -> Option<Arc<Shadow>> {
        let mut st = self.state.lock();
        if let Some(s) = st.names.get(path) {
            return Some(s.clone());
        }
        let live = File::open(path).ok()?;
        let s = Arc::new(Shadow {
            durable: Mutex::new((0, std::fs::read(path).unwrap_or_default())),
            live: Some(live),
            ..Shadow::default()
        });
        st.names.insert(path.to_path_buf(), s.clone());
        st.durable_names.insert(path.to_path_buf(), s.clone());
        Some(s)
    }

    /// Simulate a power cut now: from here on every operation fails, and `dest` (created if
    /// missing) receives the files of `dir` a restart would find: the names as of the last
    /// directory sync, each with its content as of its last sync, plus what `tail` says of the
    /// bytes written after it.
    pub fn power_loss(&self, dir: &Path, dest: &Path, tail: UnsyncedTail) -> io::Result<()> {
        self.power_loss_with(
            dir,
            dest,
            PowerCut {
                tail,
                names: NameLoss::Durable,
            },
        )
    }

    /// [`FaultyIo::power_loss`] with a choice of which unsynced namespace changes survive.
    /// May be called several times (with different damages) for one crash.
    pub fn power_loss_with(&self, dir: &Path, dest: &Path, cut: PowerCut) -> io::Result<()> {
        let mut st = self.state.lock();
        st.crashed = true;
        std::fs::create_dir_all(dest)?;
        let mut names: HashMap<PathBuf, Arc<Shadow>> = st
            .durable_names
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, s)| (p.clone(), s.clone()))
            .collect();
        let pending: Vec<&NameChange> =
            st.journal.iter().filter(|c| c.dir() == Some(dir)).collect();
        let keep = match cut.names {
            NameLoss::Durable => 0,
            NameLoss::Current => pending.len(),
            NameLoss::Prefix(n) => n.min(pending.len()),
            NameLoss::Seeded(seed) => Rng::new(seed, "names").upto(pending.len()),
        };
        for c in pending.into_iter().take(keep) {
            match c {
                NameChange::Link(p, s) => {
                    names.insert(p.clone(), s.clone());
                }
                NameChange::Rename(from, to, s) => {
                    names.remove(from);
                    names.insert(to.clone(), s.clone());
                }
                NameChange::Unlink(p) => {
                    names.remove(p);
                }
            }
        }
        for (path, shadow) in &names {
            let Some(name) = path.file_name() else {
                continue;
            };
            let durable = shadow.durable.lock().1.clone();
            let bytes = damaged(durable, shadow.current(), cut.tail, &name.to_string_lossy());
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
        // What `fdatasync` promises: the bytes written before it was called are durable once it
        // returns (those written while it runs may or may not be). Read through the handle (the
        // file may have been renamed since it was opened), with the sync's ticket.
        let (ticket, now) = {
            let mut syncs = self.shadow.syncs.lock();
            *syncs += 1;
            let mut now = vec![0u8; self.real.metadata()?.len() as usize];
            self.real.read_exact_at(&mut now, 0)?;
            (*syncs, now)
        };
        self.real.sync_data()?;
        self.shadow.synced(ticket, now);
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
        let shadow = Arc::new(Shadow {
            live: real.try_clone().ok(),
            ..Shadow::default()
        });
        let mut st = self.state.lock();
        st.names.insert(path.to_path_buf(), shadow.clone());
        st.journal
            .push(NameChange::Link(path.to_path_buf(), shadow.clone()));
        drop(st);
        Ok(Arc::new(FaultyFile {
            real,
            shadow,
            io: self.clone(),
        }))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn IoFile>> {
        self.alive()?;
        let real = OpenOptions::new().read(true).write(true).open(path)?;
        let shadow = self.shadow_for(path).unwrap_or_default();
        Ok(Arc::new(FaultyFile {
            real,
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
        let shadow = shadow.unwrap_or_default();
        let mut st = self.state.lock();
        st.names.remove(from);
        st.names.insert(to.to_path_buf(), shadow.clone());
        st.journal.push(NameChange::Rename(
            from.to_path_buf(),
            to.to_path_buf(),
            shadow,
        ));
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Remove)?;
        let _ = self.shadow_for(path);
        std::fs::remove_file(path)?;
        let mut st = self.state.lock();
        st.names.remove(path);
        st.journal.push(NameChange::Unlink(path.to_path_buf()));
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Op::SyncDir)?;
        RealIo.sync_dir(dir)?;
        let mut st = self.state.lock();
        let st = &mut *st;
        st.durable_names.retain(|p, _| p.parent() != Some(dir));
        st.journal.retain(|c| c.dir() != Some(dir));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_finishing_after_a_newer_one_keeps_the_newer_content() {
        let shadow = Shadow::default();
        shadow.synced(2, b"header+frame1+frame2".to_vec());
        shadow.synced(1, b"header+frame1".to_vec());
        assert_eq!(shadow.durable.lock().1, b"header+frame1+frame2");
        shadow.synced(3, b"header+frame1+frame2+frame3".to_vec());
        assert_eq!(shadow.durable.lock().1, b"header+frame1+frame2+frame3");
    }

    #[test]
    fn a_power_cut_keeps_what_was_written_before_the_sync() {
        let dir = tempfile::tempdir().unwrap();
        let io = FaultyIo::new();
        let path = dir.path().join("f");
        let f = io.create(&path).unwrap();
        f.write_at(0, b"synced").unwrap();
        f.sync_data().unwrap();
        f.write_at(6, b"+unsynced").unwrap();
        io.sync_dir(dir.path()).unwrap();
        let image = dir.path().join("image");
        io.power_loss(dir.path(), &image, UnsyncedTail::Drop)
            .unwrap();
        assert_eq!(std::fs::read(image.join("f")).unwrap(), b"synced");
    }
}
