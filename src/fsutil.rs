//! Durable file-system primitives: atomic replace of one file, directory fsync, staged
//! trees (create parents, link or copy, sync a whole tree, remove).
//!
//! One file is written as a temporary file beside the target, `sync_all`ed, renamed over
//! the target, and the directory is fsynced so the rename itself survives power loss
//! (the rust-atomicwrites pattern). Known gap: on Windows, directory fsync is a no-op.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Prefix of the temporary files [`atomic_write`] creates beside its target; a process
/// killed mid-write leaves one behind (the home's recovery removes them).
pub const TMP_PREFIX: &str = ".offgrid-tmp-";

/// Fsyncs a directory so that entries created, renamed or removed in it are durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Atomically replaces (or creates) `path` with `bytes`: temp file beside it, fsync,
/// rename, fsync the directory. Readers see the old content or the new, never a mix.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Crash tests: `OFFGRID_FAULT_AT=tmp-state.json` dies with the temp file written.
    if std::env::var_os(crate::update::fault::ENV).is_some() {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        crate::update::fault::point(&format!("tmp-{name}"));
    }
    tmp.persist(path).map_err(|e| e.error)?;
    fsync_dir(&dir)
}

/// Like [`atomic_write`], but fails with `AlreadyExists` when `path` exists.
/// The check and the creation are one step (no "check, then write" race).
pub fn atomic_write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist_noclobber(path).map_err(|e| e.error)?;
    fsync_dir(&dir)
}

/// Opens `path` for writing, refusing to replace an existing file.
pub fn create_new(path: &Path) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Removes a file if it exists; a missing file is not an error.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// What kind of file system object `m` describes, for messages: `a regular file`,
/// `a folder`, `a FIFO (named pipe)`, `a socket`, `a device`, `a symbolic link`.
pub fn kind_name(m: &fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_file() {
        return "a regular file";
    }
    if t.is_dir() {
        return "a folder";
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    "not a regular file"
}

/// Writes `path`'s dirty pages to the device and drops its cached pages, so the next read
/// comes from the medium itself, not from memory (`clone`'s and `pack-usb --read-back`'s
/// read-back). Linux: `fdatasync` then `posix_fadvise(POSIX_FADV_DONTNEED)`; elsewhere
/// only the sync (the read-back may then be served from the cache).
pub fn drop_cached(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    f.sync_data()?;
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a plain advisory syscall on a descriptor we own; no memory is passed.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
    }
    Ok(())
}

/// Asks the kernel to start writing `len` bytes of `f` from `offset` to the device now,
/// without waiting (Linux `sync_file_range(SYNC_FILE_RANGE_WRITE)`; a no-op elsewhere).
/// A large download written this way has little left to flush at its final `fsync`,
/// instead of a whole file's dirty pages. Advisory: errors are ignored.
pub fn start_writeback(f: &File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: an advisory syscall on a descriptor we own; no memory is passed.
        unsafe {
            libc::sync_file_range(
                f.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (f, offset, len);
}

/// Bytes written front to back between two requests to start their write-back
/// ([`start_writeback`]): downloads and [`Writeback`] files.
pub const WRITEBACK_STEP: u64 = 8 << 20;

/// A file written front to back that asks the kernel to start writing it to the device
/// every [`WRITEBACK_STEP`] bytes ([`start_writeback`]), so the disk works while the
/// rest is produced and the final `fsync`/`syncfs` finds little left to write. The
/// caller still makes it durable.
pub struct Writeback {
    file: File,
    written: u64,
    started: u64,
}

impl Writeback {
    pub fn new(file: File) -> Writeback {
        Writeback {
            file,
            written: 0,
            started: 0,
        }
    }

    /// The file, its write-back started up to its end.
    pub fn into_inner(self) -> File {
        start_writeback(&self.file, self.started, self.written - self.started);
        self.file
    }
}

impl Write for Writeback {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.started >= WRITEBACK_STEP {
            start_writeback(&self.file, self.started, self.written - self.started);
            self.started = self.written;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Hard-links `src` to `dst` when the file system allows, else copies (made durable
/// later by [`sync_tree`]). The caller has already checked `src`'s bytes.
pub fn link_or_copy(src: &Path, dst: &Path) -> io::Result<()> {
    if fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    let mut r = File::open(src)?;
    let out = create_new(dst)?;
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
            Ok(()) => fsync_dir(&dir)?,
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
        fsync_dir(&d)?;
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
    fn atomic_write_replaces_and_new_refuses() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let e = atomic_write_new(&p, b"three").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"two");
        // no temp files left behind
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
