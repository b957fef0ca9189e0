//! The only `unsafe` code of the crate: read-only memory maps of sealed segment files.
//!
//! # SAFETY contract
//!
//! `memmap2::Mmap::map` is unsafe because the mapped bytes may change (or vanish, raising
//! SIGBUS) if the file is modified or truncated while mapped. The storage engine guarantees
//! that this never happens to a file it maps:
//!
//! 1. The data directory is locked (`LOCK`, an exclusive `File::try_lock`) for the whole life of
//!    the store, so no other profiledb process writes to it.
//! 2. Only *sealed* segments are mapped: a log segment is mapped after its last write and its
//!    fdatasync, and a compacted segment after it was written whole and synced. The engine never
//!    writes to, truncates or renames-over a mapped file again.
//! 3. Old segments are unlinked only after compaction switched the segment table; readers hold
//!    an `Arc` to the mapping, and an unlinked file stays valid while mapped (POSIX).
//!
//! Outside processes that ignore the lock and edit the files are outside the contract.

use std::fs::File;
use std::ops::Deref;

/// Bytes of a sealed segment: a read-only map, or an owned copy when the I/O seam has no real
/// file to map (test doubles) or the file is empty.
pub(crate) enum Bytes {
    /// A read-only memory map, and the file it maps (point reads use `pread` on it, so that
    /// reading one record does not fault a page of the map into the resident set).
    Map(memmap2::Mmap, File),
    /// The file read whole.
    Owned(Vec<u8>),
}

impl Bytes {
    /// Map `file` read-only.
    pub(crate) fn map(file: &File) -> std::io::Result<Bytes> {
        if file.metadata()?.len() == 0 {
            return Ok(Bytes::Owned(Vec::new()));
        }
        // SAFETY: see the module contract: the directory is locked, the file is sealed and is
        // never written or truncated while this map lives (only unlinked, which is harmless).
        let map = unsafe { memmap2::Mmap::map(file)? };
        Ok(Bytes::Map(map, file.try_clone()?))
    }
}

impl Bytes {
    /// Let the kernel drop the mapped pages from this process's resident set (compaction calls
    /// it on each input segment once it has copied it: without it the whole store stayed
    /// resident as file-backed memory until the old segments were unmapped). Later reads
    /// fault the pages back in from the page cache or the file. Best effort: an error only
    /// means the pages stay resident.
    pub(crate) fn release_pages(&self) {
        if let Bytes::Map(m, _) = self {
            // SAFETY: `MADV_DONTNEED` on a private read-only file mapping discards only this
            // process's page table entries; the next access reads the same bytes again from
            // the file, which the module contract guarantees is never modified while mapped.
            // No reference handed out can observe a change (the bytes stay the same).
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

impl Bytes {
    /// Call `f` with `len` bytes at `start`, which the caller checked lie inside. A map is read
    /// with `pread` into a reused buffer (the page cache serves it, as for SQLite; the bytes do
    /// not count in the process's resident set); an owned copy is borrowed.
    pub(crate) fn read_at<R>(
        &self,
        start: usize,
        len: usize,
        f: impl FnOnce(&[u8]) -> R,
    ) -> std::io::Result<R> {
        match self {
            Bytes::Map(..) => super::log::with_read_buf(|buf| {
                buf.clear();
                self.read_appending(start, len, buf)?;
                Ok(f(buf))
            }),
            Bytes::Owned(v) => Ok(f(&v[start..start + len])),
        }
    }

    /// Append the `len` bytes at `start`, which the caller checked lie inside, to `out`: a
    /// map's read with `pread` straight into `out` (no reused buffer to copy them from).
    pub(crate) fn read_appending(
        &self,
        start: usize,
        len: usize,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        match self {
            Bytes::Map(_, file) => {
                use std::os::unix::fs::FileExt;
                let at = out.len();
                out.resize(at + len, 0);
                let read = file.read_exact_at(&mut out[at..], start as u64);
                if read.is_err() {
                    out.truncate(at);
                }
                read
            }
            Bytes::Owned(v) => {
                out.extend_from_slice(&v[start..start + len]);
                Ok(())
            }
        }
    }
}

impl Deref for Bytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Map(m, _) => m,
            Bytes::Owned(v) => v,
        }
    }
}
