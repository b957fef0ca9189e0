//! A sealed segment's history table on disk: `NNNNNNNNNN.steps` beside `NNNNNNNNNN.seg`
//! (docs/format.md, "History table file"). Its rows are the segment's steps sorted by (profile
//! key, offset), 16 bytes each, after a 24-byte head and before a CRC-32 of everything ahead
//! of it. The process keeps one key per block of [`BLOCK`] rows (8 bytes per 256 steps); a
//! look-up reads the blocks whose keys bracket its key, a few KiB with `pread`, and the page
//! cache, not the process, holds the rest.
//!
//! A table file is written once, whole (by a compaction for its outputs, or for a segment the
//! log sealed), synced, and never written again; it is trusted only through the index
//! snapshot that names it with its row count and CRC (checked whole when the snapshot is
//! loaded). A file no snapshot names is removed at open; one that does not match makes the
//! open refuse the snapshot and scan the log, which lists every step again.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ROW_BYTES, Row};
use crate::error::{Error, Result};
use crate::storage::io::{Io, IoFile, read_exact_at, remove_if_present, write_all_at};

/// The I/O seam a table file is read through (the store's).
pub(crate) type SharedIo = Arc<dyn Io>;

/// A table file, open.
type OpenFile = Arc<dyn IoFile>;

/// First bytes of a table file.
const MAGIC: [u8; 8] = *b"PDBSTEPS";
/// Layout version.
const VERSION: u32 = 1;
/// Head: magic, version u32, segment u32, rows u64.
const HEAD: usize = 24;
/// Rows per block (4 KiB): a look-up reads whole blocks.
const BLOCK: usize = 256;
/// Bytes written or read at once.
const CHUNK: usize = 64 << 10;

pub(crate) use crate::storage::steps_name as name;

fn head(segment: u32, rows: u64) -> [u8; HEAD] {
    let mut h = [0u8; HEAD];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..16].copy_from_slice(&segment.to_le_bytes());
    h[16..].copy_from_slice(&rows.to_le_bytes());
    h
}

/// A segment's table on disk, open for look-ups.
pub(crate) struct TableFile {
    pub segment: u32,
    /// Rows in the file.
    pub rows: u64,
    /// CRC-32 of the head and the rows (the file's last 4 bytes).
    pub crc: u32,
    path: PathBuf,
    /// Opened for each read, not held: a store holds a descriptor per segment already, and
    /// a table file is read only by `history`-like look-ups and compactions.
    io: SharedIo,
    /// The key of each block's first row.
    fences: Vec<u64>,
    /// A compaction's output: the input segments its rows came from (for the output's bound
    /// on its steps' arrival times, `Journal::install`); empty otherwise.
    pub from: Vec<u32>,
}

impl std::fmt::Debug for TableFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableFile")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("crc", &self.crc)
            .finish()
    }
}

impl TableFile {
    fn fail(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
        Error::Decode {
            what: "history table file",
            file: path.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// Open the table file of `segment` in `dir` and check it whole against what the index
    /// snapshot says of it: its row count and CRC, its head, its rows in strictly increasing
    /// order. Reads the file once (16 bytes a step), in chunks.
    pub(crate) fn open(
        io: &SharedIo,
        dir: &Path,
        segment: u32,
        rows: u64,
        crc: u32,
    ) -> Result<TableFile> {
        let path = dir.join(name(segment));
        let file = io.open(&path).map_err(|e| Error::io("open", &path, e))?;
        let want = rows
            .checked_mul(ROW_BYTES as u64)
            .and_then(|b| b.checked_add(HEAD as u64 + 4))
            .ok_or_else(|| Self::fail(&path, 0, "row count out of range"))?;
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        if len != want {
            return Err(Self::fail(
                &path,
                0,
                format!("{len} bytes, the index snapshot's {rows} rows need {want}"),
            ));
        }
        let mut h = [0u8; HEAD];
        read_exact_at(file.as_ref(), 0, &mut h).map_err(|e| Error::io("read", &path, e))?;
        if h != head(segment, rows) {
            return Err(Self::fail(
                &path,
                0,
                "head is not this segment's (magic, version, segment or row count)",
            ));
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&h);
        let mut fences = Vec::with_capacity((rows as usize).div_ceil(BLOCK));
        let mut last: Option<Row> = None;
        let mut buf = vec![0u8; CHUNK];
        let mut at = HEAD as u64;
        let mut i = 0u64;
        let end = want - 4;
        while at < end {
            let n = ((end - at) as usize).min(CHUNK);
            read_exact_at(file.as_ref(), at, &mut buf[..n])
                .map_err(|e| Error::io("read", &path, e))?;
            hasher.update(&buf[..n]);
            for (j, c) in buf[..n].chunks_exact(ROW_BYTES).enumerate() {
                let r = Row::from_bytes(c);
                if last.is_some_and(|l| (l.key, l.offset) >= (r.key, r.offset)) {
                    return Err(Self::fail(
                        &path,
                        at + (j * ROW_BYTES) as u64,
                        "rows out of order",
                    ));
                }
                if i.is_multiple_of(BLOCK as u64) {
                    fences.push(r.key);
                }
                last = Some(r);
                i += 1;
            }
            at += n as u64;
        }
        let mut tail = [0u8; 4];
        read_exact_at(file.as_ref(), end, &mut tail).map_err(|e| Error::io("read", &path, e))?;
        let stored = u32::from_le_bytes(tail);
        let computed = hasher.finalize();
        if stored != computed || stored != crc {
            return Err(Self::fail(
                &path,
                end,
                format!(
                    "CRC {stored:08x} stored, {computed:08x} computed, {crc:08x} in the index \
                     snapshot"
                ),
            ));
        }
        Ok(TableFile {
            segment,
            rows,
            crc,
            path,
            io: io.clone(),
            fences,
            from: Vec::new(),
        })
    }

    fn open_file(&self) -> Result<OpenFile> {
        self.io
            .open(&self.path)
            .map_err(|e| Error::io("open", &self.path, e))
    }

    /// Rows `from..to` (row numbers), read at once.
    fn read_rows(&self, file: &dyn IoFile, from: u64, to: u64, out: &mut Vec<Row>) -> Result<()> {
        let n = (to - from) as usize * ROW_BYTES;
        let mut buf = vec![0u8; n];
        read_exact_at(file, HEAD as u64 + from * ROW_BYTES as u64, &mut buf)
            .map_err(|e| Error::io("read", &self.path, e))?;
        out.extend(buf.chunks_exact(ROW_BYTES).map(Row::from_bytes));
        Ok(())
    }

    /// The blocks that may hold rows of `key`: from the last block starting below it to the
    /// last one starting at it.
    fn blocks_of(&self, key: u64) -> (u64, u64) {
        let from = self.fences.partition_point(|&f| f < key).saturating_sub(1);
        let to = self.fences.partition_point(|&f| f <= key);
        let row = |b: usize| (b as u64 * BLOCK as u64).min(self.rows);
        (row(from), row(to.max(from)))
    }

    /// The rows of `key`, in offset order.
    pub(crate) fn of_key(&self, key: u64) -> Result<Vec<Row>> {
        let (from, to) = self.blocks_of(key);
        let mut rows = Vec::new();
        if from < to {
            self.read_rows(self.open_file()?.as_ref(), from, to, &mut rows)?;
        }
        rows.retain(|r| r.key == key);
        Ok(rows)
    }

    /// Every row in order, read a chunk at a time.
    pub(crate) fn cursor(self: &Arc<Self>) -> Cursor {
        Cursor {
            file: Some((self.clone(), None)),
            next: 0,
            buf: Arc::new(Vec::new()),
            at: 0,
        }
    }

    /// Heap bytes (the block keys).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.fences.capacity() * 8 + 128
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// A table's rows in order: of a file (read a chunk at a time) or of rows frozen in memory
/// (shared, not copied).
pub(crate) struct Cursor {
    /// The table and, once read from, its file, open.
    file: Option<(Arc<TableFile>, Option<OpenFile>)>,
    /// The next row number to read from the file.
    next: u64,
    buf: Arc<Vec<Row>>,
    at: usize,
}

impl Cursor {
    /// Rows held in memory (sorted).
    pub(crate) fn of_rows(rows: &Arc<Vec<Row>>) -> Cursor {
        Cursor {
            file: None,
            next: 0,
            buf: rows.clone(),
            at: 0,
        }
    }

    /// The next row, or `None` at the end.
    pub(crate) fn peek(&mut self) -> Result<Option<Row>> {
        if self.at == self.buf.len()
            && let Some((f, open)) = &mut self.file
            && self.next < f.rows
        {
            let to = (self.next + (CHUNK / ROW_BYTES) as u64).min(f.rows);
            let file = match open {
                Some(file) => file,
                None => open.insert(f.open_file()?),
            };
            // The cursor's own buffer: never shared, so reused in place.
            let buf = Arc::make_mut(&mut self.buf);
            buf.clear();
            f.read_rows(file.as_ref(), self.next, to, buf)?;
            self.at = 0;
            self.next = to;
        }
        Ok(self.buf.get(self.at).copied())
    }

    pub(crate) fn advance(&mut self) {
        self.at += 1;
    }
}

/// Writes one table file: rows pushed in strictly increasing (key, offset) order.
pub(crate) struct Writer {
    segment: u32,
    path: PathBuf,
    io: SharedIo,
    file: Arc<dyn IoFile>,
    buf: Vec<u8>,
    /// Bytes of rows written to the file so far.
    written: u64,
    rows: u64,
    crc: crc32fast::Hasher,
    fences: Vec<u64>,
    last: Option<Row>,
    from: Vec<u32>,
}

impl Writer {
    /// Start the table file of `segment` (one left by a crash is replaced).
    pub(crate) fn create(io: &SharedIo, dir: &Path, segment: u32) -> Result<Writer> {
        let path = dir.join(name(segment));
        remove_if_present(io.as_ref(), &path).map_err(|e| Error::io("unlink", &path, e))?;
        let file = io
            .create(&path)
            .map_err(|e| Error::io("create", &path, e))?;
        Ok(Writer {
            segment,
            path,
            io: io.clone(),
            file,
            buf: Vec::with_capacity(CHUNK),
            written: 0,
            rows: 0,
            crc: crc32fast::Hasher::new(),
            fences: Vec::new(),
            last: None,
            from: Vec::new(),
        })
    }

    /// [`Writer::push`], noting that the row came from segment `source` (see
    /// [`TableFile::from`]).
    pub(crate) fn push_from(&mut self, r: Row, source: u32) -> Result<()> {
        if !self.from.contains(&source) {
            self.from.push(source);
        }
        self.push(r)
    }

    pub(crate) fn push(&mut self, r: Row) -> Result<()> {
        if self
            .last
            .is_some_and(|l| (l.key, l.offset) >= (r.key, r.offset))
        {
            return Err(TableFile::fail(
                &self.path,
                HEAD as u64 + self.rows * ROW_BYTES as u64,
                "rows handed out of order (a bug: a table is written sorted)",
            ));
        }
        if self.rows.is_multiple_of(BLOCK as u64) {
            self.fences.push(r.key);
        }
        self.last = Some(r);
        self.rows += 1;
        self.buf.extend_from_slice(&r.to_bytes());
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        write_all_at(self.file.as_ref(), HEAD as u64 + self.written, &self.buf)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.crc.update(&self.buf);
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Write the head and the CRC, sync, and open the table for look-ups.
    pub(crate) fn finish(mut self) -> Result<TableFile> {
        self.flush()?;
        let h = head(self.segment, self.rows);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&h);
        crc.combine(&self.crc);
        let crc = crc.finalize();
        let io_err = |e| Error::io("write", &self.path, e);
        write_all_at(self.file.as_ref(), 0, &h).map_err(io_err)?;
        write_all_at(
            self.file.as_ref(),
            HEAD as u64 + self.written,
            &crc.to_le_bytes(),
        )
        .map_err(io_err)?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("fdatasync", &self.path, e))?;
        self.fences.shrink_to_fit();
        Ok(TableFile {
            segment: self.segment,
            rows: self.rows,
            crc,
            path: self.path,
            io: self.io,
            fences: self.fences,
            from: self.from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::io::RealIo;

    fn io() -> SharedIo {
        Arc::new(RealIo)
    }

    fn write(dir: &Path, segment: u32, rows: &[Row]) -> TableFile {
        let mut w = Writer::create(&io(), dir, segment).unwrap();
        for &r in rows {
            w.push(r).unwrap();
        }
        w.finish().unwrap()
    }

    fn rows(n: u64) -> Vec<Row> {
        // Keys 0, 0, 0, 1, 1, 1, ...: three steps a key, so keys straddle blocks.
        (0..n)
            .map(|i| Row {
                key: i / 3 * 7,
                offset: 32 + i as u32 * 40,
                len: 30 + (i % 5) as u32,
            })
            .collect()
    }

    #[test]
    fn every_key_finds_its_rows_and_the_file_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let all = rows(2_000);
        let t = write(dir.path(), 4, &all);
        assert_eq!(t.rows, 2_000);
        let again = TableFile::open(&io(), dir.path(), 4, t.rows, t.crc).unwrap();
        for t in [&t, &again] {
            for key in (0..700u64).map(|k| k * 7) {
                let want: Vec<Row> = all.iter().copied().filter(|r| r.key == key).collect();
                assert_eq!(t.of_key(key).unwrap(), want, "key {key}");
                assert!(t.of_key(key + 1).unwrap().is_empty());
            }
        }
        let t = Arc::new(again);
        let mut c = t.cursor();
        let mut back = Vec::new();
        while let Some(r) = c.peek().unwrap() {
            back.push(r);
            c.advance();
        }
        assert_eq!(back, all);
        // An empty table is a valid file too.
        let e = write(dir.path(), 5, &[]);
        assert!(e.of_key(0).unwrap().is_empty());
        TableFile::open(&io(), dir.path(), 5, 0, e.crc).unwrap();
    }

    #[test]
    fn damage_and_mismatch_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let t = write(dir.path(), 9, &rows(600));
        let path = dir.path().join(name(9));
        let good = std::fs::read(&path).unwrap();
        let open = || TableFile::open(&io(), dir.path(), 9, 600, t.crc);
        open().unwrap();
        // Another count or CRC than the snapshot's.
        assert!(TableFile::open(&io(), dir.path(), 9, 599, t.crc).is_err());
        assert!(TableFile::open(&io(), dir.path(), 9, 600, t.crc ^ 1).is_err());
        // Another segment's file under this name.
        assert!(TableFile::open(&io(), dir.path(), 8, 600, t.crc).is_err());
        // A flipped bit anywhere, a short file, a long one.
        for at in [0, 13, 24, 5_000, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let e = open().unwrap_err().to_string();
            assert!(e.contains(&name(9)), "{e}");
        }
        std::fs::write(&path, &good[..good.len() - 16]).unwrap();
        assert!(open().is_err());
        let mut long = good.clone();
        long.extend_from_slice(&[0; 16]);
        std::fs::write(&path, &long).unwrap();
        assert!(open().is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(open().is_err());
        // Rows out of order are refused when written.
        let mut w = Writer::create(&io(), dir.path(), 10).unwrap();
        w.push(Row {
            key: 5,
            offset: 40,
            len: 1,
        })
        .unwrap();
        assert!(
            w.push(Row {
                key: 5,
                offset: 40,
                len: 1
            })
            .is_err()
        );
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(name(42), "0000000042.steps");
        use crate::storage::parse_steps_name;
        assert_eq!(parse_steps_name(&name(42)), Some(42));
        assert_eq!(parse_steps_name("0000000042.seg"), None);
        assert_eq!(parse_steps_name("42.steps"), None);
    }
}
