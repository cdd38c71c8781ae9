//! Advisory locks that say who holds them: the site home's `.lock` and a pack
//! destination's `.offgrid-lock` (and any future writer of a shared folder, e.g. `clone`).
//!
//! The lock is an exclusive `flock` on the lock file (`File::try_lock`), so it dies with
//! its process: a crashed or killed holder never wedges it. Whoever holds it writes one
//! JSON line into the file naming the command, its pid and when it started (SPEC.md
//! §7.9); a second taker is refused at once and can say who is in the way. The record is
//! cleared when the lock is released. A holder may remove the lock file while holding
//! it ([`FileLock::remove`]): a taker that locked a file since unlinked notices (the path
//! no longer names the locked file) and tries again.
//!
//! Known gaps: `flock` is advisory (only offgrid honours it); on network file systems it
//! may not be enforced between machines; a holder's record is missing for the instant
//! between taking the lock and writing it (the refusal then names no holder).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Largest holder record read back.
const MAX_RECORD: u64 = 4096;
/// Longest command name kept from a record (it is local, but still bounded).
const MAX_COMMAND: usize = 64;

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The offgrid command (`install`, `apply-update`, `pack-usb`, …).
    pub command: String,
    pub pid: u32,
    /// RFC 3339 time the lock was taken.
    pub since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "'offgrid {}' (pid {}, since {})",
            self.command, self.pid, self.since
        )
    }
}

/// Describes an optional holder for a message: `'offgrid install' (pid 7, since …)`, or
/// `another offgrid command` when the record could not be read.
pub fn describe(holder: Option<&Holder>) -> String {
    match holder {
        Some(h) => h.to_string(),
        None => "another offgrid command".into(),
    }
}

/// A held lock; released (and its record cleared) when dropped or when the process dies.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

/// The outcome of [`try_lock`].
#[derive(Debug)]
pub enum TryLock {
    Acquired(FileLock),
    /// Someone else holds it; their record, when readable.
    Busy(Option<Holder>),
}

/// Takes the exclusive lock on `path` (created if missing) without waiting, and records
/// `command` and this process as its holder.
pub fn try_lock(path: &Path, command: &str) -> io::Result<TryLock> {
    // A few rounds at most: each retry means a holder removed the file in between.
    for _ in 0..8 {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)?;
        match f.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Ok(TryLock::Busy(read_holder(&mut f))),
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        if !same_file(&f, path) {
            continue;
        }
        let rec = Holder {
            command: command.chars().take(MAX_COMMAND).collect(),
            pid: std::process::id(),
            since: crate::manifest::now_rfc3339(),
        };
        let mut line = serde_json::to_string(&rec).unwrap_or_default();
        line.push('\n');
        f.set_len(0)?;
        f.rewind()?;
        f.write_all(line.as_bytes())?;
        return Ok(TryLock::Acquired(FileLock {
            file: f,
            path: path.to_path_buf(),
        }));
    }
    Err(io::Error::other(format!(
        "'{}' keeps being replaced while it is locked",
        path.display()
    )))
}

/// Whether the lock at `path` is held right now, without taking it or creating the
/// file: `Some(holder record)` when another open file holds it, `None` when free or
/// missing.
pub fn held(path: &Path) -> Option<Option<Holder>> {
    let mut f = OpenOptions::new().read(true).open(path).ok()?;
    match f.try_lock_shared() {
        Ok(()) => None,
        Err(fs::TryLockError::WouldBlock) => Some(read_holder(&mut f)),
        Err(fs::TryLockError::Error(_)) => None,
    }
}

/// The holder recorded in the lock file at `path`, if it can be read. Only meaningful
/// while the lock is held (a released lock's record is cleared).
pub fn holder(path: &Path) -> Option<Holder> {
    let mut f = File::open(path).ok()?;
    read_holder(&mut f)
}

fn read_holder(f: &mut File) -> Option<Holder> {
    let mut b = Vec::new();
    f.rewind().ok()?;
    f.take(MAX_RECORD).read_to_end(&mut b).ok()?;
    let mut h: Holder = serde_json::from_slice(b.trim_ascii()).ok()?;
    h.command = h
        .command
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_COMMAND)
        .collect();
    h.since = h
        .since
        .chars()
        .filter(|c| !c.is_control())
        .take(40)
        .collect();
    Some(h)
}

#[cfg(unix)]
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_f: &File, path: &Path) -> bool {
    path.exists()
}

impl FileLock {
    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock file, then releases the lock (a writer that leaves no trace).
    pub fn remove(self) -> io::Result<()> {
        crate::fsutil::remove_if_exists(&self.path)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Clear the record before the lock goes (closing the file releases it).
        let _ = self.file.set_len(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_example_is_a_holder_record() {
        let h: Holder = serde_json::from_str(include_str!("../formats/lock.example.json")).unwrap();
        assert_eq!(h.command, "install");
        assert_eq!(
            h.to_string(),
            "'offgrid install' (pid 48213, since 2026-11-21T12:00:00Z)"
        );
    }

    #[test]
    fn second_taker_is_told_who_holds_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let TryLock::Acquired(held) = try_lock(&p, "install").unwrap() else {
            panic!("first lock refused");
        };
        match try_lock(&p, "status").unwrap() {
            TryLock::Busy(Some(h)) => {
                assert_eq!(h.command, "install");
                assert_eq!(h.pid, std::process::id());
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(holder(&p).unwrap().command, "install");
        assert_eq!(super::held(&p).unwrap().unwrap().command, "install");
        drop(held);
        assert!(super::held(&p).is_none());
        assert!(holder(&p).is_none(), "record cleared on release");
        let TryLock::Acquired(again) = try_lock(&p, "rollback").unwrap() else {
            panic!("lock not released");
        };
        again.remove().unwrap();
        assert!(!p.exists());
        assert!(matches!(
            try_lock(&p, "pack-usb").unwrap(),
            TryLock::Acquired(_)
        ));
    }
}
