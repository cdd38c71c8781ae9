//! Hashing: whole-file sha256 plus per-chunk sha256, computed in one pass while copying
//! (pack) and checked chunk by chunk in parallel (verify), so a damaged file's bad byte
//! ranges can be named.
//!
//! [`copy_and_hash`] and [`hash_file`] stream the file once through a two-stage pipeline:
//! while block *n* is written and hashed (the whole-file digest on one core, the chunk
//! digests on another), block *n + 1* is read. The whole-file sha256 is inherently
//! sequential, so one core's SHA-NI speed (~2 GB/s) bounds them. [`check_file`] (and
//! `verify`, through [`hash_range`]) needs only the chunk digests, which are independent:
//! every chunk is read with positional reads (`pread`, no shared cursor) and hashed on
//! whichever core is free, and nothing past the manifest's size is read.
//!
//! Streams that are not chunked files (pack payloads, staged copies) are hashed as they
//! pass through [`HashReader`] and [`HashWriter`] (sha256 on another core through
//! [`BgHasher`], which is handed whole blocks without a copy: apply hashes a payload and
//! the file it produces on two threads while the main one decodes and writes), and
//! outside input is read with a bound: [`read_bounded`] for a reader,
//! [`read_regular_bounded`] for a file path.
//!
//! Known gaps: no `O_DIRECT`/mmap (reads go through the page cache); on Windows the
//! positional read moves the file cursor, which nothing here relies on; writeback hints
//! (`sync_file_range`) are Linux-only, other systems pay the whole `fsync` at the end.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::manifest::FileEntry;
use crate::Progress;

/// The digests of one file as the manifest records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub sha256: String,
    pub chunk_size: u64,
    pub chunks: Vec<String>,
}

/// Why hashing failed (I/O only: a mismatch is a [`FileCheck`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write '{path}': {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The result of checking one file against its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    Ok,
    Missing,
    /// Not a regular file (a folder, a link, a device).
    NotAFile,
    SizeMismatch {
        expected: u64,
        actual: u64,
    },
    /// Byte ranges `[start, end)` whose chunk hashes do not match, merged when adjacent.
    Damaged {
        ranges: Vec<(u64, u64)>,
    },
}

/// Size of one pipeline block in [`copy_and_hash`] / [`hash_file`].
const BLOCK: usize = 4 << 20;
/// Size of the buffer a chunk is read through in [`hash_range`] (fits in L2 cache, so the
/// hash reads what the copy just wrote without going to memory).
const PIECE: usize = 256 << 10;

/// Lowercase hex of a digest.
pub fn to_hex(d: &[u8]) -> String {
    hex::encode(d)
}

/// Streams data into the per-chunk digests, finishing a chunk at each boundary.
struct Chunker {
    chunk_size: u64,
    cur: Sha256,
    in_cur: u64,
    chunks: Vec<String>,
}

impl Chunker {
    fn new(chunk_size: u64) -> Chunker {
        Chunker {
            chunk_size,
            cur: Sha256::new(),
            in_cur: 0,
            chunks: Vec::new(),
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.chunk_size - self.in_cur;
            let n = (room.min(data.len() as u64)) as usize;
            self.cur.update(&data[..n]);
            self.in_cur += n as u64;
            data = &data[n..];
            if self.in_cur == self.chunk_size {
                self.chunks.push(to_hex(&self.cur.finalize_reset()));
                self.in_cur = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.in_cur > 0 {
            self.chunks.push(to_hex(&self.cur.finalize_reset()));
        }
        self.chunks
    }
}

/// Reads until `buf` is full or the end of the input; returns the bytes read.
pub fn read_full<R: Read + ?Sized>(f: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Where the pipeline writes the bytes it hashes.
struct Sink<'a> {
    file: &'a mut File,
    path: &'a Path,
    /// Bytes written so far (for the writeback hints).
    written: u64,
}

impl Sink<'_> {
    fn write(&mut self, data: &[u8]) -> Result<(), HashError> {
        let err = |source| HashError::Write {
            path: self.path.display().to_string(),
            source,
        };
        self.file.write_all(data).map_err(err)?;
        let start = self.written;
        self.written += data.len() as u64;
        writeback_hint(self.file, start, data.len() as u64);
        Ok(())
    }
}

/// Starts writeback of the range just written, and waits for the range before it, so the
/// disk works while we copy and the final `fsync` finds little left to do (Linux only;
/// a hint: failures are ignored, `sync_all` at the end is what makes the data durable).
#[cfg(target_os = "linux")]
fn writeback_hint(f: &File, start: u64, len: u64) {
    use std::os::unix::io::AsRawFd;
    let fd = f.as_raw_fd();
    // SAFETY: plain syscalls on a file descriptor we own; no memory is passed.
    unsafe {
        libc::sync_file_range(
            fd,
            start as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
        if start >= len {
            libc::sync_file_range(
                fd,
                (start - len) as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER,
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn writeback_hint(_f: &File, _start: u64, _len: u64) {}

/// The one-pass pipeline behind [`copy_and_hash`] and [`hash_file`]: read block n+1 while
/// block n is written to every sink (in parallel) and hashed twice in parallel. A sink
/// whose write fails is taken out (`None`) and its error put in its `failed` slot.
fn pipeline(
    src: &mut File,
    src_path: &Path,
    sinks: &mut [Option<Sink<'_>>],
    failed: &mut [Option<HashError>],
    chunk_size: u64,
    progress: Progress,
) -> Result<Digests, HashError> {
    let rerr = |source| HashError::Read {
        path: src_path.display().to_string(),
        source,
    };
    let expected_total = src.metadata().map(|m| m.len()).unwrap_or(0);
    let mut whole = Sha256::new();
    let mut chunker = Chunker::new(chunk_size);
    let mut cur = vec![0u8; BLOCK];
    let mut next = vec![0u8; BLOCK];
    let mut n = read_full(src, &mut cur).map_err(rerr)?;
    let mut done = 0u64;
    progress(0, expected_total);
    while n > 0 {
        let data = &cur[..n];
        let ((), (written, read)) = rayon::join(
            || {
                rayon::join(|| whole.update(data), || chunker.update(data));
            },
            || {
                rayon::join(
                    || write_all_sinks(sinks, data),
                    || read_full(src, &mut next),
                )
            },
        );
        take_failures(sinks, failed, written);
        if !sinks.is_empty() && sinks.iter().all(Option::is_none) {
            // Every destination failed: the digests no longer matter.
            break;
        }
        done += n as u64;
        progress(done, expected_total.max(done));
        n = read.map_err(rerr)?;
        std::mem::swap(&mut cur, &mut next);
    }
    let synced: Vec<Result<(), HashError>> = sinks
        .par_iter_mut()
        .map(|s| match s {
            Some(s) => s.file.sync_all().map_err(|source| HashError::Write {
                path: s.path.display().to_string(),
                source,
            }),
            None => Ok(()),
        })
        .collect();
    take_failures(sinks, failed, synced);
    Ok(Digests {
        size: done,
        sha256: to_hex(&whole.finalize()),
        chunk_size,
        chunks: chunker.finish(),
    })
}

/// Writes `data` to every live sink, in parallel when there are several.
fn write_all_sinks(sinks: &mut [Option<Sink<'_>>], data: &[u8]) -> Vec<Result<(), HashError>> {
    match sinks {
        [] => Vec::new(),
        [one] => vec![one.as_mut().map_or(Ok(()), |s| s.write(data))],
        many => many
            .par_iter_mut()
            .map(|s| s.as_mut().map_or(Ok(()), |s| s.write(data)))
            .collect(),
    }
}

/// Takes the sinks whose result is an error out, keeping the error in `failed`.
fn take_failures(
    sinks: &mut [Option<Sink<'_>>],
    failed: &mut [Option<HashError>],
    results: Vec<Result<(), HashError>>,
) {
    for ((sink, slot), r) in sinks.iter_mut().zip(failed.iter_mut()).zip(results) {
        if let Err(e) = r {
            *sink = None;
            if slot.is_none() {
                *slot = Some(e);
            }
        }
    }
}

fn open_read(path: &Path) -> Result<File, HashError> {
    File::open(path).map_err(|source| HashError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Copies `src` to `dst` (which must not exist; created with `create_new`), computing the
/// digests from the bytes as they are written, in one pass over the data; `dst` is fsynced.
/// On error `dst` may hold a partial copy: callers write into a staging folder they
/// remove on failure.
pub fn copy_and_hash(
    src: &Path,
    dst: &Path,
    chunk_size: u64,
    progress: Progress,
) -> Result<Digests, HashError> {
    let (digests, mut failed) = copy_and_hash_to_many(src, &[dst], chunk_size, progress)?;
    match failed.pop().flatten() {
        Some(e) => Err(e),
        None => Ok(digests),
    }
}

/// [`copy_and_hash`] to several destinations at once: `src` is read and hashed once and
/// each block written to every destination in parallel (`offgrid clone`). A destination
/// whose create or write fails is dropped, its error returned in its slot, and the others
/// go on (when all fail the copy stops and the digests are of a prefix only); a read error
/// of `src` fails the whole copy. Every destination that did not fail is fsynced.
pub fn copy_and_hash_to_many(
    src: &Path,
    dsts: &[&Path],
    chunk_size: u64,
    progress: Progress,
) -> Result<(Digests, Vec<Option<HashError>>), HashError> {
    let mut input = open_read(src)?;
    let mut failed: Vec<Option<HashError>> = Vec::with_capacity(dsts.len());
    let mut files: Vec<Option<File>> = Vec::with_capacity(dsts.len());
    for dst in dsts {
        match crate::fsutil::create_new(dst) {
            Ok(f) => {
                files.push(Some(f));
                failed.push(None);
            }
            Err(source) => {
                files.push(None);
                failed.push(Some(HashError::Write {
                    path: dst.display().to_string(),
                    source,
                }));
            }
        }
    }
    let mut sinks: Vec<Option<Sink<'_>>> = files
        .iter_mut()
        .zip(dsts)
        .map(|(f, dst)| {
            f.as_mut().map(|file| Sink {
                file,
                path: dst,
                written: 0,
            })
        })
        .collect();
    let digests = pipeline(
        &mut input,
        src,
        &mut sinks,
        &mut failed,
        chunk_size,
        progress,
    )?;
    Ok((digests, failed))
}

/// Copies bytes `[offset, offset + size)` of `src` into the new file `dst` (fsynced),
/// returning the sha256 of each `chunk_size` slice of them: the chunk digests of a part
/// of a file whose parts start at multiples of `chunk_size` (SPEC.md §16.7).
pub fn copy_range_and_hash(
    src: &Path,
    offset: u64,
    size: u64,
    dst: &Path,
    chunk_size: u64,
) -> Result<Vec<String>, HashError> {
    use std::io::{Seek, SeekFrom};
    let rerr = |source| HashError::Read {
        path: src.display().to_string(),
        source,
    };
    let werr = |source| HashError::Write {
        path: dst.display().to_string(),
        source,
    };
    let mut input = open_read(src)?;
    input.seek(SeekFrom::Start(offset)).map_err(rerr)?;
    let mut out = crate::fsutil::create_new(dst).map_err(werr)?;
    let mut buf = vec![0u8; chunk_size as usize];
    let mut left = size;
    let mut chunks = Vec::with_capacity(size.div_ceil(chunk_size) as usize);
    while left > 0 {
        let n = left.min(chunk_size) as usize;
        input.read_exact(&mut buf[..n]).map_err(rerr)?;
        chunks.push(to_hex(&Sha256::digest(&buf[..n])));
        out.write_all(&buf[..n]).map_err(werr)?;
        left -= n as u64;
    }
    out.sync_all().map_err(werr)?;
    Ok(chunks)
}

/// Computes the digests of a file.
pub fn hash_file(path: &Path, chunk_size: u64, progress: Progress) -> Result<Digests, HashError> {
    let mut input = open_read(path)?;
    pipeline(&mut input, path, &mut [], &mut [], chunk_size, progress)
}

/// Computes the digests of bytes in memory (small files, tests).
pub fn hash_bytes(bytes: &[u8], chunk_size: u64) -> Digests {
    let (sha256, chunks) = rayon::join(
        || to_hex(&Sha256::digest(bytes)),
        || {
            bytes
                .par_chunks(chunk_size.max(1) as usize)
                .map(|c| to_hex(&Sha256::digest(c)))
                .collect()
        },
    );
    Digests {
        size: bytes.len() as u64,
        sha256,
        chunk_size,
        chunks,
    }
}

/// The byte range `[start, end)` of chunk `index` of `entry`.
pub fn chunk_range(entry: &FileEntry, index: u64) -> (u64, u64) {
    let start = index.saturating_mul(entry.chunk_size).min(entry.size);
    let end = start.saturating_add(entry.chunk_size).min(entry.size);
    (start, end)
}

/// Sorts ranges and merges those that touch or overlap.
pub fn merge_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

#[cfg(unix)]
fn pread(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(f, buf, offset)
}

#[cfg(windows)]
fn pread(f: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(f, buf, offset)
}

/// A buffer for [`hash_range`]; one per thread.
pub fn range_buffer() -> Vec<u8> {
    vec![0u8; PIECE]
}

/// The sha256 of bytes `[start, end)` of `file`, read with positional reads through `buf`
/// (so many threads can hash ranges of one open file). A file that ends before `end`
/// is an `UnexpectedEof` error: it changed size while being read.
pub fn hash_range(file: &File, start: u64, end: u64, buf: &mut Vec<u8>) -> io::Result<[u8; 32]> {
    if buf.is_empty() {
        *buf = range_buffer();
    }
    let mut h = Sha256::new();
    let mut pos = start;
    while pos < end {
        let want = ((end - pos).min(buf.len() as u64)) as usize;
        match pread(file, &mut buf[..want], pos) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                    "the file ends at byte {pos}, before byte {end}: it changed while being read"
                ),
                ))
            }
            Ok(k) => {
                h.update(&buf[..k]);
                pos += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(h.finalize().into())
}

/// Opens a file for checking without following a symbolic link in its last component.
pub fn open_no_follow(path: &Path) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o.open(path)
}

/// Opens a path the user gave (a key, a trust file, a recipe, a pack, a model) for
/// reading, refusing anything but a regular file before a byte is read: a FIFO would
/// block forever, a device would never end. Links are followed. The refusal is an
/// `InvalidInput` error saying what was found (the caller names the path).
pub fn open_regular(path: &Path) -> io::Result<File> {
    open_checked(path, true)
}

/// [`open_regular`] without following a link at the last component: for paths on
/// untrusted media (a stick's manifest and signatures).
pub fn open_regular_no_follow(path: &Path) -> io::Result<File> {
    open_checked(path, false)
}

/// True when `e` is [`open_regular`]'s refusal of something that is not a regular file.
pub fn is_not_regular(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput && e.to_string().starts_with(NOT_REGULAR)
}

const NOT_REGULAR: &str = "not a regular file";

fn file_kind(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "something else"
    }
}

fn open_checked(path: &Path, follow: bool) -> io::Result<File> {
    let refuse = |t: &std::fs::FileType| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NOT_REGULAR}: it is {}", file_kind(t)),
        )
    };
    // Look before opening: opening some devices has effects of its own.
    let m = if follow {
        std::fs::metadata(path)?
    } else {
        std::fs::symlink_metadata(path)?
    };
    if !m.is_file() {
        return Err(refuse(&m.file_type()));
    }
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking, so a FIFO swapped in after the look does not block the open.
        let nofollow = if follow { 0 } else { libc::O_NOFOLLOW };
        o.custom_flags(libc::O_NONBLOCK | nofollow);
    }
    let f = o.open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(refuse(&m.file_type()));
    }
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor this function owns; no memory is passed.
        unsafe {
            let fd = f.as_raw_fd();
            let fl = libc::fcntl(fd, libc::F_GETFL);
            if fl >= 0 {
                libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK);
            }
        }
    }
    Ok(f)
}

/// Reads a whole regular file of at most `max` bytes (opened by [`open_regular`], or
/// [`open_regular_no_follow`] when `follow` is false), refusing a larger one before
/// allocating for it. `Ok(Err(size))` when it is too large.
pub fn read_regular_bounded(
    path: &Path,
    max: u64,
    follow: bool,
) -> io::Result<Result<Vec<u8>, u64>> {
    let f = open_checked(path, follow)?;
    let len = f.metadata()?.len();
    if len > max {
        return Ok(Err(len));
    }
    match read_bounded(&mut &f, max)? {
        Some(buf) => Ok(Ok(buf)),
        None => Ok(Err(max + 1)),
    }
}

/// Checks `path` against `entry`: size first, then every chunk hash, chunks hashed in
/// parallel. Does not read past `entry.size`.
pub fn check_file(
    path: &Path,
    entry: &FileEntry,
    progress: Progress,
) -> Result<FileCheck, HashError> {
    let rerr = |source| HashError::Read {
        path: path.display().to_string(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(FileCheck::Missing),
        Err(e) => return Err(rerr(e)),
    };
    if !meta.is_file() {
        return Ok(FileCheck::NotAFile);
    }
    let file = open_no_follow(path).map_err(rerr)?;
    let meta = file.metadata().map_err(rerr)?;
    if !meta.is_file() {
        return Ok(FileCheck::NotAFile);
    }
    if meta.len() != entry.size {
        return Ok(FileCheck::SizeMismatch {
            expected: entry.size,
            actual: meta.len(),
        });
    }
    let done = AtomicU64::new(0);
    progress(0, entry.size);
    let bad: Vec<(u64, u64)> = (0..entry.chunks.len() as u64)
        .into_par_iter()
        .map_init(range_buffer, |buf, i| -> io::Result<Option<(u64, u64)>> {
            let (s, e) = chunk_range(entry, i);
            let got = hash_range(&file, s, e, buf)?;
            let d = done.fetch_add(e - s, Ordering::Relaxed) + (e - s);
            progress(d, entry.size);
            let ok = hex::decode(&entry.chunks[i as usize]).is_ok_and(|want| want == got);
            Ok((!ok).then_some((s, e)))
        })
        .collect::<io::Result<Vec<_>>>()
        .map_err(rerr)?
        .into_iter()
        .flatten()
        .collect();
    if bad.is_empty() {
        Ok(FileCheck::Ok)
    } else {
        Ok(FileCheck::Damaged {
            ranges: merge_ranges(bad),
        })
    }
}

/// Lowercase hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Size of the blocks [`BgHasher`] hands to its thread, and of [`HashReader`]'s reads.
pub const HASH_BLOCK: usize = 1 << 20;

/// Blocks queued for the hashing thread (the producer waits when it is this far ahead).
const QUEUED_BLOCKS: usize = 8;

/// Blocks a [`BgHasher`] keeps for reuse.
const KEPT_BLOCKS: usize = QUEUED_BLOCKS + 4;

/// A block of bytes shared with the hashing thread: `(block, length used)`.
type Shared = (std::sync::Arc<Vec<u8>>, usize);

/// sha256 computed on a helper thread, so hashing overlaps reading, decoding and
/// writing (a second core hashes while the first moves bytes). Small inputs are hashed
/// inline.
///
/// Bytes reach the thread in [`HASH_BLOCK`]-sized blocks without a copy when the caller
/// fills a block itself ([`BgHasher::block`], then [`BgHasher::update_shared`]: the
/// thread reads the block while the caller still writes it out, and whichever lets go of
/// it last returns it for reuse), or copied into a reused block by [`BgHasher::update`].
/// Blocks are reused, never freed and allocated again, so a stream costs no page faults
/// past its first blocks, and at most about [`KEPT_BLOCKS`] blocks are alive at once.
pub struct BgHasher {
    inline: Sha256,
    tx: Option<std::sync::mpsc::SyncSender<Shared>>,
    /// Blocks the thread let go of last, for reuse.
    back: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<Sha256>>,
    /// Blocks free for reuse.
    free: Vec<Vec<u8>>,
    /// Bytes copied by [`BgHasher::update`] not yet sent: `(block, length used)`.
    pending: Option<(Vec<u8>, usize)>,
}

impl Default for BgHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl BgHasher {
    pub fn new() -> Self {
        BgHasher {
            inline: Sha256::new(),
            tx: None,
            back: None,
            thread: None,
            free: Vec::new(),
            pending: None,
        }
    }

    /// Starts the thread (once); false when no thread can be had (then hash inline).
    fn start(&mut self) -> bool {
        if self.tx.is_some() {
            return true;
        }
        if self.thread.is_some() {
            // The thread went away (it cannot, short of a panic): stay inline.
            return false;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Shared>(QUEUED_BLOCKS);
        let (back_tx, back) = std::sync::mpsc::channel::<Vec<u8>>();
        let mut h = self.inline.clone();
        let spawned = std::thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                for (block, len) in rx {
                    h.update(&block[..len]);
                    // Only blocks of the pool's size go back to it.
                    if let Ok(b) = std::sync::Arc::try_unwrap(block) {
                        if b.len() == HASH_BLOCK {
                            let _ = back_tx.send(b);
                        }
                    }
                }
                h
            });
        match spawned {
            Ok(t) => {
                self.tx = Some(tx);
                self.back = Some(back);
                self.thread = Some(t);
                true
            }
            Err(_) => false,
        }
    }

    /// A block of [`HASH_BLOCK`] bytes to fill and pass to [`BgHasher::update_shared`]
    /// (a reused one when there is one; its old bytes are still in it).
    pub fn block(&mut self) -> Vec<u8> {
        if let Some(b) = self.free.pop() {
            return b;
        }
        if let Some(b) = self.back.as_ref().and_then(|r| r.try_recv().ok()) {
            return b;
        }
        vec![0u8; HASH_BLOCK]
    }

    /// Takes back a block the caller no longer needs (kept for reuse when the thread is
    /// done with it too).
    pub fn recycle(&mut self, block: std::sync::Arc<Vec<u8>>) {
        if let Ok(b) = std::sync::Arc::try_unwrap(block) {
            if self.free.len() < KEPT_BLOCKS && b.len() == HASH_BLOCK {
                self.free.push(b);
            }
        }
    }

    /// Hashes `block[..len]` on the thread without copying it; the caller may keep
    /// reading the block, and hands it back with [`BgHasher::recycle`].
    pub fn update_shared(&mut self, block: &std::sync::Arc<Vec<u8>>, len: usize) {
        let len = len.min(block.len());
        if len == 0 {
            return;
        }
        self.flush_pending();
        if len < (64 << 10) && self.thread.is_none() {
            self.inline.update(&block[..len]);
            return;
        }
        self.send_or_inline((block.clone(), len));
    }

    fn send_or_inline(&mut self, (block, len): Shared) {
        if self.start() {
            if let Some(tx) = &self.tx {
                match tx.send((block, len)) {
                    Ok(()) => return,
                    Err(std::sync::mpsc::SendError((block, len))) => {
                        // Cannot happen while the thread lives; never lose bytes.
                        self.tx = None;
                        self.inline.update(&block[..len]);
                        return;
                    }
                }
            }
        }
        self.inline.update(&block[..len]);
    }

    /// Sends the bytes [`BgHasher::update`] collected.
    fn flush_pending(&mut self) {
        if let Some((b, len)) = self.pending.take() {
            if len > 0 {
                self.send_or_inline((std::sync::Arc::new(b), len));
            } else {
                self.free.push(b);
            }
        }
    }

    pub fn update(&mut self, mut b: &[u8]) {
        if b.is_empty() {
            return;
        }
        if self.thread.is_none() && self.pending.is_none() && b.len() < (64 << 10) {
            self.inline.update(b);
            return;
        }
        while !b.is_empty() {
            let (mut block, mut len) = match self.pending.take() {
                Some(p) => p,
                None => (self.block(), 0),
            };
            let n = (block.len() - len).min(b.len());
            block[len..len + n].copy_from_slice(&b[..n]);
            len += n;
            b = &b[n..];
            self.pending = Some((block, len));
            if len == HASH_BLOCK {
                self.flush_pending();
            }
        }
    }

    /// The lowercase hex digest of everything passed to [`BgHasher::update`] and
    /// [`BgHasher::update_shared`].
    pub fn finish(mut self) -> String {
        self.flush_pending();
        self.tx = None;
        let h = match self.thread.take() {
            Some(t) => t.join().unwrap_or_default(),
            None => std::mem::take(&mut self.inline),
        };
        hex::encode(h.finalize())
    }
}

/// A reader that hashes and counts every byte read through it. It reads `inner` a
/// [`HASH_BLOCK`] at a time (to its end or the block's), hands each block to the hashing
/// thread without a copy and serves it to the caller ([`BufRead`] reads it in place), so
/// `count` and the digest cover what was read from `inner`, which may run one block
/// ahead of what the caller consumed: take the digest after reading to the end.
pub struct HashReader<R> {
    pub inner: R,
    hasher: BgHasher,
    pub count: u64,
    /// The block being served, and the bytes of it served so far and filled.
    block: Option<std::sync::Arc<Vec<u8>>>,
    pos: usize,
    filled: usize,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: BgHasher::new(),
            count: 0,
            block: None,
            pos: 0,
            filled: 0,
        }
    }
    /// Reads to the end (hashing), then returns `(count, hex sha256)`.
    pub fn finish(mut self) -> io::Result<(u64, String)> {
        loop {
            let n = self.fill_buf()?.len();
            if n == 0 {
                break;
            }
            self.consume(n);
        }
        Ok(self.digest())
    }
    /// `(count, hex sha256)` of what was read from `inner` so far.
    pub fn digest(self) -> (u64, String) {
        (self.count, self.hasher.finish())
    }
}

impl<R: Read> io::BufRead for HashReader<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.pos == self.filled {
            if let Some(old) = self.block.take() {
                self.hasher.recycle(old);
            }
            let mut b = self.hasher.block();
            let mut n = 0;
            let res = loop {
                match self.inner.read(&mut b[n..]) {
                    Ok(0) => break Ok(()),
                    Ok(k) => {
                        n += k;
                        if n == b.len() {
                            break Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            // Bytes read before an error are hashed and served; the error comes next.
            let b = std::sync::Arc::new(b);
            self.hasher.update_shared(&b, n);
            self.count += n as u64;
            self.block = Some(b);
            self.pos = 0;
            self.filled = n;
            if n == 0 {
                res?;
            }
        }
        Ok(match &self.block {
            Some(b) => &b[self.pos..self.filled],
            None => &[],
        })
    }
    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.filled);
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let avail = io::BufRead::fill_buf(self)?;
        let n = avail.len().min(buf.len());
        buf[..n].copy_from_slice(&avail[..n]);
        io::BufRead::consume(self, n);
        Ok(n)
    }
}

/// A writer that hashes and counts every byte written through it, and refuses to write
/// more than `limit` bytes (the declared size of what is being produced). A producer
/// that fills its own blocks writes them with [`HashWriter::write_block`], so the hash
/// thread reads them without a copy.
pub struct HashWriter<W> {
    pub inner: W,
    hasher: BgHasher,
    pub count: u64,
    pub limit: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W, limit: u64) -> Self {
        HashWriter {
            inner,
            hasher: BgHasher::new(),
            count: 0,
            limit,
        }
    }
    /// `(inner, count, hex sha256)` of what was written.
    pub fn finish(self) -> (W, u64, String) {
        (self.inner, self.count, self.hasher.finish())
    }
    /// A block of [`HASH_BLOCK`] bytes to fill and give to [`HashWriter::write_block`].
    pub fn block(&mut self) -> Vec<u8> {
        self.hasher.block()
    }
    /// Writes `block[..len]` whole (refused, nothing written, past the limit) and hashes
    /// it on the thread without a copy.
    pub fn write_block(&mut self, block: Vec<u8>, len: usize) -> io::Result<()> {
        let len = len.min(block.len());
        if self.count + len as u64 > self.limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, OVER_LIMIT));
        }
        let block = std::sync::Arc::new(block);
        self.hasher.update_shared(&block, len);
        // Counted as written even if the write fails: the caller stops at an error.
        self.count += len as u64;
        let res = self.inner.write_all(&block[..len]);
        self.hasher.recycle(block);
        res
    }
}

/// The error kind [`HashWriter`] reports when its limit would be passed.
pub const OVER_LIMIT: &str = "output exceeds its declared size";

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.count + buf.len() as u64 > self.limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, OVER_LIMIT));
        }
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// True when `e` is [`HashWriter`]'s over-limit error.
pub fn is_over_limit(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::FileTooLarge && e.to_string() == OVER_LIMIT
}

/// Reads at most `max` bytes; `None` when the input is longer.
pub fn read_bounded(r: &mut dyn Read, max: u64) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    r.take(max + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > max {
        return Ok(None);
    }
    Ok(Some(buf))
}

/// `(size, hex sha256)` of a file, streamed (no chunk digests; see [`hash_file`]).
pub fn sha256_file(path: &Path) -> io::Result<(u64, String)> {
    let f = File::open(path)?;
    HashReader::new(io::BufReader::with_capacity(1 << 20, f)).finish()
}

/// Copies `src` to the new file `dst`, checking the bytes against `size` and `sha256`
/// as they pass (never reading more than `size + 1` bytes), then fsyncs `dst` when
/// `sync` (staged trees are made durable at once by [`crate::fsutil::sync_tree`] instead).
/// Returns `Ok(Err(actual_sha))` on a mismatch (dst removed).
pub fn copy_checked(
    src: &Path,
    dst: &Path,
    size: u64,
    sha256: &str,
    mode: Option<u32>,
    sync: bool,
) -> io::Result<Result<(), String>> {
    let f = File::open(src)?;
    let mut r = HashReader::new(f.take(size + 1));
    let out = crate::fsutil::create_new(dst)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, out);
    io::copy(&mut r, &mut w)?;
    let out = w.into_inner().map_err(|e| e.into_error())?;
    let (count, actual) = r.digest();
    if count != size || actual != sha256 {
        drop(out);
        let _ = std::fs::remove_file(dst);
        return Ok(Err(if count != size {
            format!("{count} bytes")
        } else {
            actual
        }));
    }
    crate::fsutil::set_mode(&out, mode)?;
    if sync {
        out.sync_all()?;
    }
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_writer_refuses_past_limit() {
        let mut w = HashWriter::new(Vec::new(), 4);
        w.write_all(b"abcd").unwrap();
        let e = w.write_all(b"e").unwrap_err();
        assert!(is_over_limit(&e));
        assert_eq!(w.finish().2, sha256_hex(b"abcd"));
    }

    #[test]
    fn background_hash_equals_inline_hash() {
        let big = vec![7u8; 3 << 20];
        let mut h = BgHasher::new();
        h.update(b"small first");
        h.update(&big);
        h.update(b"tail");
        let mut all = b"small first".to_vec();
        all.extend_from_slice(&big);
        all.extend_from_slice(b"tail");
        assert_eq!(h.finish(), sha256_hex(&all));
    }

    /// A reader that returns at most `step` bytes a call (like a pipe or a tar entry).
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn hash_reader_serves_and_hashes_every_byte_once() {
        let bytes = data(3 * HASH_BLOCK + 12345);
        // Consumed through BufRead in uneven steps.
        let mut r = HashReader::new(Trickle(&bytes, 100_003));
        let mut got = Vec::new();
        loop {
            let b = r.fill_buf().unwrap();
            if b.is_empty() {
                break;
            }
            let n = b.len().min(777_777);
            got.extend_from_slice(&b[..n]);
            r.consume(n);
        }
        assert_eq!(got, bytes);
        assert_eq!(r.digest(), (bytes.len() as u64, sha256_hex(&bytes)));
        // Through Read, with small buffers.
        let mut r = HashReader::new(Trickle(&bytes, 1 << 20));
        let mut got = Vec::new();
        let mut buf = [0u8; 8191];
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, bytes);
        assert_eq!(r.digest().1, sha256_hex(&bytes));
        // finish drains what the caller left.
        let mut r = HashReader::new(&bytes[..]);
        let mut head = [0u8; 10];
        r.read_exact(&mut head).unwrap();
        assert_eq!(
            r.finish().unwrap(),
            (bytes.len() as u64, sha256_hex(&bytes))
        );
    }

    #[test]
    fn blocks_and_copies_hash_in_order() {
        let bytes = data(5 * HASH_BLOCK + 99);
        let mut w = HashWriter::new(Vec::new(), bytes.len() as u64);
        // Small writes (inline, then copied), whole blocks, small writes again.
        w.write_all(&bytes[..1000]).unwrap();
        w.write_all(&bytes[1000..HASH_BLOCK + 5]).unwrap();
        let mut at = HASH_BLOCK + 5;
        for len in [HASH_BLOCK, 3, HASH_BLOCK, HASH_BLOCK - 1] {
            let mut b = w.block();
            b[..len].copy_from_slice(&bytes[at..at + len]);
            w.write_block(b, len).unwrap();
            at += len;
        }
        w.write_all(&bytes[at..]).unwrap();
        let mut b = w.block();
        b[0] = 1;
        assert!(is_over_limit(&w.write_block(b, 1).unwrap_err()));
        let (out, n, sha) = w.finish();
        assert_eq!(out, bytes);
        assert_eq!((n, sha), (bytes.len() as u64, sha256_hex(&bytes)));
    }

    #[test]
    fn copy_checked_refuses_wrong_bytes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a");
        std::fs::write(&src, b"hello").unwrap();
        let good = sha256_hex(b"hello");
        copy_checked(&src, &d.path().join("b"), 5, &good, None, true)
            .unwrap()
            .unwrap();
        let bad = copy_checked(&src, &d.path().join("c"), 5, &"0".repeat(64), None, true).unwrap();
        assert_eq!(bad, Err(good));
        assert!(!d.path().join("c").exists());
        assert!(
            copy_checked(&src, &d.path().join("e"), 4, &"0".repeat(64), None, true)
                .unwrap()
                .is_err()
        );
    }

    use crate::manifest::{FileKind, MIN_CHUNK_SIZE};

    fn data(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn entry(d: &Digests) -> FileEntry {
        FileEntry {
            path: "f".into(),
            size: d.size,
            sha256: d.sha256.clone(),
            kind: FileKind::Data,
            platform: None,
            mode: None,
            chunk_size: d.chunk_size,
            chunks: d.chunks.clone(),
            model: None,
            volume: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn known_answer() {
        let d = hash_bytes(b"abc", MIN_CHUNK_SIZE);
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(d.sha256, abc);
        assert_eq!(d.chunks, vec![abc.to_owned()]);
        let e = hash_bytes(b"", MIN_CHUNK_SIZE);
        assert!(e.chunks.is_empty());
        assert_eq!(
            e.sha256,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn file_copy_and_bytes_agree_across_block_and_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        // Sizes around the chunk size and the pipeline block.
        for (i, n) in [
            0usize,
            1,
            65535,
            65536,
            65537,
            BLOCK - 1,
            BLOCK + 65536 * 3 + 7,
        ]
        .into_iter()
        .enumerate()
        {
            let bytes = data(n);
            let src = dir.path().join(format!("src{i}"));
            std::fs::write(&src, &bytes).unwrap();
            let want = hash_bytes(&bytes, MIN_CHUNK_SIZE);
            assert_eq!(
                want.chunks.len() as u64,
                FileEntry::chunk_count(n as u64, MIN_CHUNK_SIZE)
            );
            let got = hash_file(&src, MIN_CHUNK_SIZE, &crate::no_progress).unwrap();
            assert_eq!(got, want, "hash_file, size {n}");
            let dst = dir.path().join(format!("dst{i}"));
            let got = copy_and_hash(&src, &dst, MIN_CHUNK_SIZE, &crate::no_progress).unwrap();
            assert_eq!(got, want, "copy_and_hash, size {n}");
            assert_eq!(std::fs::read(&dst).unwrap(), bytes);
            // The whole-file digest agrees with an independent computation.
            assert_eq!(got.sha256, hex::encode(Sha256::digest(&bytes)));
            assert_eq!(
                check_file(&dst, &entry(&got), &crate::no_progress).unwrap(),
                FileCheck::Ok
            );
        }
    }

    #[test]
    fn copy_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a");
        let dst = dir.path().join("b");
        std::fs::write(&src, b"new").unwrap();
        std::fs::write(&dst, b"old").unwrap();
        let e = copy_and_hash(&src, &dst, MIN_CHUNK_SIZE, &crate::no_progress).unwrap_err();
        assert!(matches!(e, HashError::Write { .. }), "{e}");
        assert_eq!(std::fs::read(&dst).unwrap(), b"old");
    }

    #[test]
    fn check_names_damaged_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut bytes = data(5 * MIN_CHUNK_SIZE as usize + 10);
        let e = entry(&hash_bytes(&bytes, MIN_CHUNK_SIZE));
        // Flip one bit in chunk 1, two in chunks 2 and 3 (adjacent: merged), one in the
        // short last chunk.
        let c = MIN_CHUNK_SIZE as usize;
        bytes[c + 5] ^= 1;
        bytes[2 * c] ^= 0x80;
        bytes[3 * c + 1] ^= 4;
        bytes[5 * c + 9] ^= 1;
        std::fs::write(&p, &bytes).unwrap();
        let c = c as u64;
        assert_eq!(
            check_file(&p, &e, &crate::no_progress).unwrap(),
            FileCheck::Damaged {
                ranges: vec![(c, 4 * c), (5 * c, 5 * c + 10)]
            }
        );
        std::fs::write(&p, &bytes[..100]).unwrap();
        assert_eq!(
            check_file(&p, &e, &crate::no_progress).unwrap(),
            FileCheck::SizeMismatch {
                expected: e.size,
                actual: 100
            }
        );
        assert_eq!(
            check_file(&dir.path().join("nope"), &e, &crate::no_progress).unwrap(),
            FileCheck::Missing
        );
        assert_eq!(
            check_file(dir.path(), &e, &crate::no_progress).unwrap(),
            FileCheck::NotAFile
        );
        #[cfg(unix)]
        {
            let l = dir.path().join("link");
            std::os::unix::fs::symlink(&p, &l).unwrap();
            assert_eq!(
                check_file(&l, &e, &crate::no_progress).unwrap(),
                FileCheck::NotAFile
            );
        }
    }

    #[test]
    fn merges_ranges() {
        assert_eq!(
            merge_ranges(vec![(8, 12), (0, 4), (4, 6), (20, 30), (25, 28)]),
            vec![(0, 6), (8, 12), (20, 30)]
        );
        assert!(merge_ranges(vec![]).is_empty());
    }
}
