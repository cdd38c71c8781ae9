//! Byte plumbing for updates: readers and writers that hash what passes through them,
//! bounded reads, whole-file sha256, and durable copies/links that check the bytes
//! against an expected size and hash in the same pass.
//!
//! Known gap: hard links are tried first for unchanged files; on file systems without
//! them (FAT) the file is copied.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

/// Lowercase hex sha256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// sha256 computed on a helper thread, so hashing overlaps reading, decoding and
/// writing (a second core hashes while the first moves bytes). Small inputs are hashed
/// inline.
pub struct BgHasher {
    inline: Sha256,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    thread: Option<std::thread::JoinHandle<Sha256>>,
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
            thread: None,
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        if b.is_empty() {
            return;
        }
        if self.tx.is_none() && b.len() < (64 << 10) && self.thread.is_none() {
            self.inline.update(b);
            return;
        }
        if self.tx.is_none() {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
            let mut h = self.inline.clone();
            let spawned = std::thread::Builder::new()
                .name("sha256".into())
                .spawn(move || {
                    for chunk in rx {
                        h.update(&chunk);
                    }
                    h
                });
            match spawned {
                Ok(t) => {
                    self.tx = Some(tx);
                    self.thread = Some(t);
                }
                Err(_) => {
                    // No thread to be had: hash inline.
                    self.inline.update(b);
                    return;
                }
            }
        }
        if let Some(tx) = &self.tx {
            if tx.send(b.to_vec()).is_err() {
                self.tx = None;
            }
        }
    }

    /// The lowercase hex digest of everything passed to [`BgHasher::update`].
    pub fn finish(mut self) -> String {
        self.tx = None;
        let h = match self.thread.take() {
            Some(t) => t.join().unwrap_or_default(),
            None => std::mem::take(&mut self.inline),
        };
        hex::encode(h.finalize())
    }
}

/// A reader that hashes and counts every byte read through it.
pub struct HashReader<R> {
    pub inner: R,
    hasher: BgHasher,
    pub count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: BgHasher::new(),
            count: 0,
        }
    }
    /// Reads to the end (hashing), then returns `(count, hex sha256)`.
    pub fn finish(mut self) -> io::Result<(u64, String)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok(self.digest())
    }
    /// `(count, hex sha256)` of what was read so far.
    pub fn digest(self) -> (u64, String) {
        (self.count, self.hasher.finish())
    }
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts every byte written through it, and refuses to write
/// more than `limit` bytes (the declared size of what is being produced).
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

/// `(size, hex sha256)` of a file.
pub fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let f = File::open(path)?;
    HashReader::new(io::BufReader::with_capacity(1 << 20, f)).finish()
}

/// Copies `src` to the new file `dst`, checking the bytes against `size` and `sha256`
/// as they pass (never reading more than `size + 1` bytes), then fsyncs `dst` when
/// `sync` (staged trees are made durable at once by [`sync_tree`] instead).
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
        let _ = fs::remove_file(dst);
        return Ok(Err(if count != size {
            format!("{count} bytes")
        } else {
            actual
        }));
    }
    set_mode(&out, mode)?;
    if sync {
        out.sync_all()?;
    }
    Ok(Ok(()))
}

/// Hard-links `src` to `dst` when the file system allows, else copies (made durable
/// later by [`sync_tree`]). The caller has already checked `src`'s bytes.
pub fn link_or_copy(src: &Path, dst: &Path) -> io::Result<()> {
    if fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    let mut r = File::open(src)?;
    let out = crate::fsutil::create_new(dst)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, out);
    io::copy(&mut r, &mut w)?;
    let out = w.into_inner().map_err(|e| e.into_error())?;
    out.set_permissions(r.metadata()?.permissions())
}

/// Applies Unix permission bits (no-op elsewhere). Only permission bits, never owners.
pub fn set_mode(f: &File, mode: Option<u32>) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let m = mode.unwrap_or(0o644) & 0o777;
        f.set_permissions(fs::Permissions::from_mode(m))?;
    }
    #[cfg(not(unix))]
    let _ = (f, mode);
    Ok(())
}

/// Creates every folder of `path` under `root` and fsyncs the new ones' parents.
pub fn create_parents(root: &Path, rel: &str) -> io::Result<()> {
    let mut dir = root.to_path_buf();
    let comps: Vec<&str> = rel.split('/').collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        let next = dir.join(c);
        match fs::create_dir(&next) {
            Ok(()) => crate::fsutil::fsync_dir(&dir)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        dir = next;
    }
    Ok(())
}

/// Fsyncs every folder under `root` (bottom-up), so new entries in them are durable.
pub fn fsync_tree(root: &Path) -> io::Result<()> {
    let mut dirs = Vec::new();
    for e in walkdir::WalkDir::new(root).contents_first(true) {
        let e = e.map_err(io::Error::other)?;
        if e.file_type().is_dir() {
            dirs.push(e.into_path());
        }
    }
    for d in dirs {
        crate::fsutil::fsync_dir(&d)?;
    }
    Ok(())
}

/// Makes everything written under `root` durable: on Linux one `syncfs` of its file
/// system (what `sync -f` does: every file's data and every folder entry, in one call
/// instead of one fsync per file); elsewhere, or if that fails, an fsync of every file
/// and folder under `root`.
pub fn sync_tree(root: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let d = File::open(root)?;
        // SAFETY: syncfs only reads the descriptor, which `d` keeps open.
        if unsafe { libc::syncfs(d.as_raw_fd()) } == 0 {
            return Ok(());
        }
    }
    for e in walkdir::WalkDir::new(root) {
        let e = e.map_err(io::Error::other)?;
        if e.file_type().is_file() {
            File::open(e.path())?.sync_all()?;
        }
    }
    fsync_tree(root)
}

/// Removes a folder tree if it exists.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
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

    #[test]
    fn copy_checked_refuses_wrong_bytes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a");
        fs::write(&src, b"hello").unwrap();
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
}
