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

/// A reader that hashes and counts every byte read through it.
pub struct HashReader<R> {
    pub inner: R,
    pub hasher: Sha256,
    pub count: u64,
}

impl<R: Read> HashReader<R> {
    pub fn new(inner: R) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Reads to the end (hashing), then returns `(count, hex sha256)`.
    pub fn finish(mut self) -> io::Result<(u64, String)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.count, hex::encode(self.hasher.finalize())))
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
    pub hasher: Sha256,
    pub count: u64,
    pub limit: u64,
}

impl<W: Write> HashWriter<W> {
    pub fn new(inner: W, limit: u64) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
        }
    }
    /// `(count, hex sha256)` of what was written.
    pub fn digest(&self) -> (u64, String) {
        (self.count, hex::encode(self.hasher.clone().finalize()))
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
/// as they pass (never reading more than `size + 1` bytes), then fsyncs `dst`.
/// Returns `Ok(Err(actual_sha))` on a mismatch (dst removed).
pub fn copy_checked(
    src: &Path,
    dst: &Path,
    size: u64,
    sha256: &str,
    mode: Option<u32>,
) -> io::Result<Result<(), String>> {
    let f = File::open(src)?;
    let mut r = HashReader::new(f.take(size + 1));
    let out = crate::fsutil::create_new(dst)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, out);
    io::copy(&mut r, &mut w)?;
    let out = w.into_inner().map_err(|e| e.into_error())?;
    let actual = hex::encode(r.hasher.finalize());
    if r.count != size || actual != sha256 {
        drop(out);
        let _ = fs::remove_file(dst);
        return Ok(Err(if r.count != size {
            format!("{} bytes", r.count)
        } else {
            actual
        }));
    }
    set_mode(&out, mode)?;
    out.sync_all()?;
    Ok(Ok(()))
}

/// Hard-links `src` to `dst` when the file system allows, else copies; `dst` is fsynced.
/// The caller has already checked `src`'s bytes.
pub fn link_or_copy(src: &Path, dst: &Path) -> io::Result<()> {
    if fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    let mut r = File::open(src)?;
    let out = crate::fsutil::create_new(dst)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, out);
    io::copy(&mut r, &mut w)?;
    let out = w.into_inner().map_err(|e| e.into_error())?;
    out.set_permissions(r.metadata()?.permissions())?;
    out.sync_all()
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
        assert_eq!(w.digest().1, sha256_hex(b"abcd"));
    }

    #[test]
    fn copy_checked_refuses_wrong_bytes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a");
        fs::write(&src, b"hello").unwrap();
        let good = sha256_hex(b"hello");
        copy_checked(&src, &d.path().join("b"), 5, &good, None)
            .unwrap()
            .unwrap();
        let bad = copy_checked(&src, &d.path().join("c"), 5, &"0".repeat(64), None).unwrap();
        assert_eq!(bad, Err(good));
        assert!(!d.path().join("c").exists());
        assert!(copy_checked(&src, &d.path().join("e"), 4, &"0".repeat(64), None)
            .unwrap()
            .is_err());
    }
}
