//! The site home's content-addressed store (SPEC.md §7.5, layout 2): every installed
//! file's bytes are kept once, at `objects/AA/SHA256.MODE` (`AA` the first two hex digits
//! of the sha256, `MODE` the octal permission bits: a hard link shares its mode, so the
//! same bytes with two modes are two objects), and every release folder under
//! `versions/` holds its signed manifest and its files as hard links to those objects, so
//! llama.cpp still maps a plain file and `current/` stays an ordinary tree.
//!
//! - [`intern`] puts a file whose sha256 was already checked into the store (a hard link
//!   made under a temporary name in the object's folder, then renamed: an object name
//!   never points at anything but complete, checked bytes), or, when the object exists,
//!   replaces the file by a link to it. Install and apply intern a staged release after
//!   its files are durable and before the switch ([`crate::update::txn`]).
//! - [`sweep`] removes every object no kept release needs: no other link to it, and no
//!   kept release's manifest names it (so an object whose release file was deleted
//!   stays, and repair takes it back from the store). Run by every cleanup
//!   ([`crate::update::journal::collect_garbage`]): after an install, apply, gc and
//!   recovery.
//! - [`migrate`] turns a layout-1 home (plain files shared by hard link between
//!   releases) into layout 2, under the lock, from the one home opener
//!   ([`crate::update::journal::recover_locked`]): each distinct file is hashed once and
//!   interned only if it matches its manifest; then the state records `layout: 2`. Every
//!   step is idempotent and the old layout stays valid throughout, so a crash in the
//!   middle is finished by the next command.
//!
//! Known gaps: on file systems without hard links (FAT, exFAT) a release keeps plain
//! copies and the store stays empty (nothing is lost, nothing is shared); an existing
//! object is trusted when a new release links it (its size is checked — one of the wrong
//! size is replaced by the new checked bytes — not its hash:
//! `status --verify` finds its damage and `repair` fixes it once for every release); the
//! unit is a whole file, so two releases whose model differs by one byte of metadata
//! store two model files (sub-file sharing would need the tensor data stored apart from
//! the GGUF metadata, SPEC.md §16.2).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::manifest::{FileEntry, Manifest};
use crate::update::home::{Home, State};
use crate::update::{fault, io_err, UpdateError};

/// The layout this code writes: 2, the content-addressed store. A state without a
/// `layout` field is layout 1 (release folders of plain files).
pub const LAYOUT: u32 = 2;
/// The store's folder in the home.
pub const OBJECTS: &str = "objects";

/// The object file name of bytes `sha` with permission bits `mode`: `SHA256.MODE`.
pub fn object_name(sha: &str, mode: u32) -> String {
    format!("{sha}.{:o}", mode & 0o777)
}

/// The store folder of `home`: the home root's, shared by every bundle installed in it.
pub fn objects_dir(home: &Home) -> PathBuf {
    home.base.join(OBJECTS)
}

/// Where the object `name` (`SHA256.MODE`) lives.
pub fn object_path(home: &Home, name: &str) -> PathBuf {
    let fan = name.get(..2).unwrap_or("00");
    objects_dir(home).join(fan).join(name)
}

/// The permission bits a manifest entry's file is installed with.
pub fn entry_mode(f: &FileEntry) -> u32 {
    f.mode.unwrap_or(0o644) & 0o777
}

/// The permission bits of a file on disk (the manifest's on non-Unix systems).
fn disk_mode(m: &fs::Metadata, f: &FileEntry) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = f;
        m.permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        entry_mode(f)
    }
}

/// `(device, inode)` of a file, on Unix.
pub fn inode(m: &fs::Metadata) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some((m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        None
    }
}

/// Hard links to a file (1 where unknown).
fn links(m: &fs::Metadata) -> u64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        m.nlink()
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        1
    }
}

/// What [`intern`] did with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interned {
    /// Its bytes became a new object (the file is that object's first link).
    New,
    /// The object existed: the file is now (or already was) a link to it.
    Shared,
    /// The file system makes no hard links: the file stays a plain copy.
    Copy,
}

/// Puts `file`, whose bytes are known to have sha256 `sha` and whose mode is `mode`, into
/// the store of `home` (see the module doc). `file` must be durable already when the
/// object is new (its name then points at it).
pub fn intern(home: &Home, file: &Path, sha: &str, mode: u32) -> io::Result<Interned> {
    let obj = object_path(home, &object_name(sha, mode));
    let fm = fs::symlink_metadata(file)?;
    match fs::symlink_metadata(&obj) {
        Ok(om) if om.is_file() => {
            if inode(&om).is_some() && inode(&om) == inode(&fm) {
                return Ok(Interned::Shared);
            }
            if om.len() != fm.len() {
                // A damaged object (wrong size): the checked bytes take its name; the
                // releases still linking the old inode are found and repaired by
                // `status --verify` and `repair`.
                return put_new(home, file, &obj, sha, mode);
            }
            let name = file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = file.with_file_name(format!("{}store-{name}", crate::fsutil::TMP_PREFIX));
            crate::fsutil::remove_if_exists(&tmp)?;
            if fs::hard_link(&obj, &tmp).is_err() {
                return Ok(Interned::Copy);
            }
            fs::rename(&tmp, file)?;
            // Renaming a link over another link of the same file does nothing (POSIX).
            crate::fsutil::remove_if_exists(&tmp)?;
            Ok(Interned::Shared)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("'{}' is not a regular file", obj.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => put_new(home, file, &obj, sha, mode),
        Err(e) => Err(e),
    }
}

/// Makes `file` the object `obj`: a hard link under a temporary name in the object's
/// folder, renamed to the object's name (over a damaged one).
fn put_new(home: &Home, file: &Path, obj: &Path, sha: &str, mode: u32) -> io::Result<Interned> {
    let dir = obj.parent().unwrap_or(&home.root).to_path_buf();
    if !dir.is_dir() {
        fs::create_dir_all(&dir)?;
        crate::fsutil::fsync_dir(&objects_dir(home))?;
    }
    let tmp = dir.join(format!(
        "{}{}",
        crate::fsutil::TMP_PREFIX,
        object_name(sha, mode)
    ));
    crate::fsutil::remove_if_exists(&tmp)?;
    if fs::hard_link(file, &tmp).is_err() {
        return Ok(Interned::Copy);
    }
    fs::rename(&tmp, obj)?;
    Ok(Interned::New)
}

/// Interns every file of the release folder `dir` (its manifest `m`, the files for
/// `host`), whose bytes were checked as they were staged. Returns the counts
/// `(new, shared, copies)`.
pub fn intern_release(
    home: &Home,
    dir: &Path,
    m: &Manifest,
    host: &str,
) -> Result<(usize, usize, usize), UpdateError> {
    let mut n = (0, 0, 0);
    for f in m.files_on(host) {
        let p = crate::paths::join(dir, &f.path);
        let md = fs::symlink_metadata(&p).map_err(io_err("read", &p))?;
        match intern(home, &p, &f.sha256, disk_mode(&md, f)).map_err(io_err("store", &p))? {
            Interned::New => n.0 += 1,
            Interned::Shared => n.1 += 1,
            Interned::Copy => n.2 += 1,
        }
    }
    Ok(n)
}

/// The manifest of the release folder `dir` (read from the folder, without a signature
/// check: only for deciding what the store keeps). `None` when it cannot be read.
fn folder_manifest(dir: &Path) -> Option<Manifest> {
    let p = dir.join(crate::manifest::MANIFEST_FILE);
    let bytes = crate::hash::read_regular_bounded(&p, crate::manifest::MAX_MANIFEST_BYTES, false)
        .ok()?
        .ok()?;
    Manifest::parse(&bytes).ok()
}

/// The object names the kept releases of every bundle of the home root name (`s` is
/// `home`'s state, the others are read from their `state.json`); `None` when a kept
/// release's manifest or a bundle's state cannot be read (then nothing may be swept by
/// name).
fn named_objects(home: &Home, s: &State) -> Option<BTreeSet<String>> {
    let host = crate::platform::Platform::host().to_string();
    let mut names = BTreeSet::new();
    for member in home.members() {
        let other;
        let state = if member.root == home.root {
            s
        } else {
            match member.read_state() {
                Ok(Some(st)) => {
                    other = st;
                    &other
                }
                Ok(None) => continue,
                Err(_) => return None,
            }
        };
        for k in state.kept() {
            let m = folder_manifest(&member.version_dir(&k.dir))?;
            for f in m.files_on(&host) {
                names.insert(object_name(&f.sha256, entry_mode(f)));
            }
        }
    }
    Some(names)
}

/// Removes every object of the shared store that nothing links and no kept release of
/// any bundle of the home root names (`s` is `home`'s state), and the temporaries a
/// killed [`intern`] left. Returns the bytes freed.
pub fn sweep(home: &Home, s: &State) -> Result<u64, UpdateError> {
    let od = objects_dir(home);
    let fans = match fs::read_dir(&od) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err("read", &od)(e)),
    };
    let named = named_objects(home, s);
    let mut freed = 0u64;
    for fan in fans {
        let fan = fan.map_err(io_err("read", &od))?;
        if !fan.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let fp = fan.path();
        for e in fs::read_dir(&fp).map_err(io_err("read", &fp))? {
            let e = e.map_err(io_err("read", &fp))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(md) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            if !md.is_file() {
                continue;
            }
            let tmp = name.starts_with(crate::fsutil::TMP_PREFIX);
            let unused =
                links(&md) == 1 && named.as_ref().is_some_and(|n| !n.contains(&name)) && cfg!(unix);
            if tmp || unused {
                crate::fsutil::remove_if_exists(&e.path()).map_err(io_err("remove", &e.path()))?;
                if links(&md) == 1 {
                    freed += md.len();
                }
                fault::point("gc-swept");
            }
        }
        // An empty fan folder goes too (a new object recreates it).
        let _ = fs::remove_dir(&fp);
    }
    Ok(freed)
}

/// Bytes of the regular files under `roots`, each file counted once however many links
/// it has (what `du --apparent-size` counts).
pub fn usage(roots: &[PathBuf]) -> u64 {
    let mut seen = BTreeSet::new();
    let mut n = 0u64;
    for r in roots {
        for e in walkdir::WalkDir::new(r).into_iter().flatten() {
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            match inode(&m) {
                Some(id) if !seen.insert(id) => {}
                _ => n += m.len(),
            }
        }
    }
    n
}

/// The home root's files that take space: every bundle's release folders and the store.
pub fn home_usage(home: &Home) -> u64 {
    let mut roots: Vec<PathBuf> = home.members().iter().map(Home::versions).collect();
    roots.push(objects_dir(home));
    usage(&roots)
}

/// Migrates a layout-1 home to the store (see the module doc). Returns whether it did.
/// The caller holds the lock and has finished any interrupted operation.
pub fn migrate(home: &Home) -> Result<bool, UpdateError> {
    let Some(mut s) = home.read_state()? else {
        return Ok(false);
    };
    if s.layout >= LAYOUT {
        return Ok(false);
    }
    let host = crate::platform::Platform::host().to_string();
    // (device, inode) -> whether its bytes matched the manifest (hashed once).
    let mut checked: BTreeMap<(u64, u64), bool> = BTreeMap::new();
    let mut first = true;
    for k in s.kept() {
        let dir = home.version_dir(&k.dir);
        // A release whose manifest cannot be read is left as it is (status --verify
        // reports it).
        let Some(m) = folder_manifest(&dir) else {
            continue;
        };
        for f in m.files_on(&host) {
            let p = crate::paths::join(&dir, &f.path);
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            if !md.is_file() || md.len() != f.size {
                continue;
            }
            let good = match inode(&md).and_then(|id| checked.get(&id).copied()) {
                Some(g) => g,
                None => {
                    let g = crate::hash::sha256_file(&p)
                        .is_ok_and(|(n, sha)| n == f.size && sha == f.sha256);
                    if let Some(id) = inode(&md) {
                        checked.insert(id, g);
                    }
                    g
                }
            };
            if !good {
                // Damaged: never becomes an object (repair puts it back).
                continue;
            }
            intern(home, &p, &f.sha256, disk_mode(&md, f)).map_err(io_err("store", &p))?;
            if first {
                first = false;
                fault::point("migrate-interned");
            }
        }
    }
    let od = objects_dir(home);
    fs::create_dir_all(&od).map_err(io_err("create", &od))?;
    crate::fsutil::sync_tree(&od).map_err(io_err("sync", &od))?;
    s.layout = LAYOUT;
    home.write_state(&s)?;
    fault::point("migrate-flipped");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_carry_the_mode() {
        let sha = "ab".repeat(32);
        assert_eq!(object_name(&sha, 0o100755), format!("{sha}.755"));
        let home = Home::at(PathBuf::from("/h"));
        assert_eq!(
            object_path(&home, &object_name(&sha, 0o644)),
            PathBuf::from(format!("/h/objects/ab/{sha}.644"))
        );
    }

    #[cfg(unix)]
    #[test]
    fn intern_links_equal_bytes_to_one_object() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let home = Home::at(d.path().to_path_buf());
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        fs::write(&a, b"same").unwrap();
        fs::write(&b, b"same").unwrap();
        let sha = crate::hash::sha256_hex(b"same");
        assert_eq!(intern(&home, &a, &sha, 0o644).unwrap(), Interned::New);
        assert_eq!(intern(&home, &b, &sha, 0o644).unwrap(), Interned::Shared);
        assert_eq!(intern(&home, &b, &sha, 0o644).unwrap(), Interned::Shared);
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(ino(&a), ino(&b));
        let obj = object_path(&home, &object_name(&sha, 0o644));
        assert_eq!(ino(&a), ino(&obj));
        assert_eq!(fs::metadata(&obj).unwrap().nlink(), 3);
    }
}
