//! Writing a planned release onto a stick: check the destination, stage every file into
//! `DEST/.offgrid-staging/` (hashing while copying, one pass over the data), sign the
//! manifest, and only then flip: remove the old manifest and signatures, move the staged
//! files into place, write `manifest.toml` and `signatures/KEYID.minisig` last.
//!
//! A tree without `manifest.toml` is not a tree, so a pack interrupted at any point never
//! looks complete; a pack that fails before the flip leaves the previous tree untouched
//! (the staging folder is removed). Every refusal happens before the first byte is
//! written. A writer holds `DEST/.offgrid-lock` ([`lock_dest`]) from the first check to
//! the end, so a second pack into the same folder is refused at once, naming the first. Known gaps: the free-space check counts the staged copy in full even when the
//! old tree holds the same files; renames are not journalled, so power loss during the
//! flip leaves a tree with no manifest (re-run the pack); Windows directory fsync is a no-op.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::fsutil;
use crate::hash;
use crate::keys::SecretKey;
use crate::manifest::{self, Manifest, MANIFEST_FILE, SIGNATURES_DIR};
use crate::paths;
use crate::sign;
use crate::Progress;

use crate::media::{self, FileLimit, MediaError};

use super::layout::{Source, TreePlan, MODE_DATA, STAGING_DIR};
use super::{io_err, PackError};

/// How `pack` treats an existing destination.
#[derive(Debug, Clone, Copy, Default)]
pub struct PackOptions {
    /// Replace a tree of another bundle or release, an unreadable manifest, or files that
    /// are in the way of a tree with no manifest.
    pub force: bool,
}

/// What a finished pack wrote.
#[derive(Debug, Clone)]
pub struct PackReport {
    pub dest: PathBuf,
    pub manifest: Manifest,
    /// The exact bytes of `manifest.toml` (what the signatures cover).
    pub manifest_bytes: Vec<u8>,
    /// `(key id, .minisig text)` per signer, in signer order.
    pub signatures: Vec<(String, String)>,
    /// Number of files listed in the manifest.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// `(bundle id, release)` of the tree this pack replaced, if any.
    pub replaced: Option<(String, String)>,
}

/// What is at the destination before packing.
#[derive(Debug, Clone)]
pub struct DestState {
    /// The destination folder exists.
    pub exists: bool,
    /// The manifest of the tree already there, if any.
    pub old: Option<Manifest>,
}

/// Loads every signer's secret key (asking `password(path)` for encrypted ones) and
/// refuses the same key twice. Run before copying anything, so a wrong password costs
/// nothing.
pub fn load_signers(
    paths: &[PathBuf],
    password: &mut dyn FnMut(&Path) -> Result<String, String>,
) -> Result<Vec<SecretKey>, PackError> {
    if paths.is_empty() {
        return Err(PackError::NoSigner);
    }
    let mut keys: Vec<(SecretKey, &PathBuf)> = Vec::new();
    for p in paths {
        let sk = SecretKey::load(p, &mut || password(p))?;
        let id = sk.public.key_id();
        if let Some((_, prev)) = keys.iter().find(|(k, _)| k.public.key_id() == id) {
            return Err(PackError::DuplicateSigner {
                key_id: id,
                a: prev.display().to_string(),
                b: p.display().to_string(),
            });
        }
        keys.push((sk, p));
    }
    Ok(keys.into_iter().map(|(k, _)| k).collect())
}

/// Checks what is at `dest` against the release about to be written (see SPEC.md §2):
/// another writer holding the destination's lock refuses (exit 1, naming it); then as
/// [`inspect_dest`].
pub fn check_dest(
    dest: &Path,
    bundle_id: &str,
    release: &crate::version::Version,
    force: bool,
) -> Result<DestState, PackError> {
    // Another writer mid-pack: its half-written folder is not ours to judge.
    if let Some(holder) = crate::lockfile::held(&dest.join(LOCK_FILE)) {
        return Err(PackError::Busy {
            dest: dest.display().to_string(),
            holder,
        });
    }
    inspect_dest(dest, bundle_id, release, force)
}

/// Checks what is at `dest` against the release about to be written (see SPEC.md §2):
/// a file refuses; another bundle or release, or an unreadable manifest, refuses unless
/// `force`; the same bundle and release is replaced.
pub fn inspect_dest(
    dest: &Path,
    bundle_id: &str,
    release: &crate::version::Version,
    force: bool,
) -> Result<DestState, PackError> {
    let shown = dest.display().to_string();
    let meta = match fs::metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DestState {
                exists: false,
                old: None,
            })
        }
        Err(e) => return Err(io_err("inspect destination", dest)(e)),
    };
    if !meta.is_dir() {
        return Err(PackError::DestIsFile { path: shown });
    }
    let mpath = dest.join(MANIFEST_FILE);
    let bytes = match fs::read(&mpath) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DestState {
                exists: true,
                old: None,
            })
        }
        Err(e) => return Err(io_err("read", &mpath)(e)),
    };
    match Manifest::parse(&bytes) {
        Ok(old) => {
            if !force && (old.bundle_id != bundle_id || old.release.as_str() != release.as_str()) {
                return Err(PackError::DestHoldsOther {
                    dest: shown,
                    old_bundle: old.bundle_id,
                    old_release: old.release.to_string(),
                    new_bundle: bundle_id.to_owned(),
                    new_release: release.to_string(),
                });
            }
            Ok(DestState {
                exists: true,
                old: Some(old),
            })
        }
        Err(e) if !force => Err(PackError::DestBadManifest {
            dest: shown,
            reason: e.to_string().lines().next().unwrap_or("").to_owned(),
        }),
        Err(_) => Ok(DestState {
            exists: true,
            old: None,
        }),
    }
}

/// Refuses, naming the file, its size, the limit and the file system, when a planned
/// file is larger than the destination's files can be (SPEC.md §16.1). Models were
/// already split by the plan; anything still too large cannot go on this medium.
pub fn check_fits(plan: &TreePlan, limit: &FileLimit, dest: &Path) -> Result<(), PackError> {
    let Some(max) = limit.max else { return Ok(()) };
    // Data files are stored in parts (SPEC.md §16.7); models were split into shards.
    if let Some(f) = plan
        .files
        .iter()
        .find(|f| f.size > max && !f.kind.can_be_parted())
    {
        let shown = match f.source.input() {
            Some(p) if !matches!(f.source, Source::Shard { .. }) => p.display().to_string(),
            _ => f.path.clone(),
        };
        return Err(PackError::Media(MediaError::TooLarge {
            path: shown,
            size: f.size,
            limit: max,
            source_name: limit.source(),
            dest: dest.display().to_string(),
            help: if f.kind == crate::manifest::FileKind::Model {
                "re-split the model into smaller shards (llama.cpp's gguf-split), or use a medium without the limit (exFAT, NTFS, ext4)"
            } else {
                "binaries and scripts are never split; use a medium without the limit (exFAT, NTFS, ext4)"
            },
        }));
    }
    Ok(())
}

/// The lock file a writer of a destination holds (inside it, beside the staging folder).
pub const LOCK_FILE: &str = ".offgrid-lock";

/// Takes the writer's lock on the destination folder `dest` (which must exist) for
/// `command`: a second writer (`pack-usb`, and the coming `clone`) is refused at once,
/// naming the holder. The lock dies with its process ([`crate::lockfile`]).
pub fn lock_dest(dest: &Path, command: &str) -> Result<crate::lockfile::FileLock, PackError> {
    let p = dest.join(LOCK_FILE);
    match crate::lockfile::try_lock(&p, command).map_err(io_err("lock", &p))? {
        crate::lockfile::TryLock::Acquired(l) => Ok(l),
        crate::lockfile::TryLock::Busy(holder) => Err(PackError::Busy {
            dest: dest.display().to_string(),
            holder,
        }),
    }
}

/// Writes `plan` as a signed tree at `dest`. See the module doc for the order of steps.
/// Holds the destination's lock ([`lock_dest`]) throughout; the lock file is removed
/// when done.
pub fn pack(
    plan: &TreePlan,
    keys: &[SecretKey],
    dest: &Path,
    opts: &PackOptions,
    progress: Progress,
) -> Result<PackReport, PackError> {
    if keys.is_empty() {
        return Err(PackError::NoSigner);
    }
    let existed = match fs::metadata(dest) {
        Ok(m) if !m.is_dir() => {
            return Err(PackError::DestIsFile {
                path: dest.display().to_string(),
            })
        }
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_err("inspect destination", dest)(e)),
    };
    if !existed {
        fs::create_dir_all(dest).map_err(io_err("create destination", dest))?;
    }
    // Busy: the folder is the other writer's now; leave it exactly as it is.
    let lock = lock_dest(dest, "pack-usb")?;
    let r = pack_locked(plan, keys, dest, opts, progress);
    let _ = lock.remove();
    if r.is_err() && !existed {
        let _ = fs::remove_dir(dest);
    }
    r
}

/// Output == input: refuses when a file `plan` reads lives inside the tree at `dest`
/// (an existing folder).
pub(crate) fn check_inputs_outside(plan: &TreePlan, dest: &Path) -> Result<(), PackError> {
    let root = fs::canonicalize(dest).map_err(io_err("resolve", dest))?;
    for f in &plan.files {
        if let Some(src) = f.source.input() {
            let c = fs::canonicalize(src).map_err(io_err("resolve", src))?;
            if c.starts_with(&root) {
                return Err(PackError::InputInsideDest {
                    path: src.display().to_string(),
                    dest: dest.display().to_string(),
                });
            }
        }
    }
    Ok(())
}

/// [`pack`] with the destination's lock held (a folder made for this pack is removed by
/// the caller when this fails).
fn pack_locked(
    plan: &TreePlan,
    keys: &[SecretKey],
    dest: &Path,
    opts: &PackOptions,
    progress: Progress,
) -> Result<PackReport, PackError> {
    let state = inspect_dest(dest, &plan.bundle_id, &plan.release, opts.force)?;

    // Output == input: nothing we read may live inside the tree we write.
    if state.exists {
        check_inputs_outside(plan, dest)?;
        // Nothing but folders may stand where the tree's folders go, and nothing but
        // plain files where its files go; with no manifest, files in the way are someone
        // else's unless --force.
        let mut folders: BTreeSet<String> = BTreeSet::from([SIGNATURES_DIR.to_owned()]);
        for f in &plan.files {
            let mut prefix = String::new();
            for c in f
                .path
                .split('/')
                .rev()
                .skip(1)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(c);
                folders.insert(prefix.clone());
            }
        }
        folders.extend(plan.dirs.iter().map(|d| d.path.clone()));
        for d in &folders {
            match fs::symlink_metadata(paths::join(dest, d)) {
                Ok(m) if !m.is_dir() => {
                    return Err(PackError::DestNotATree {
                        dest: dest.display().to_string(),
                        path: d.clone(),
                    })
                }
                _ => {}
            }
        }
        for f in &plan.files {
            let target = paths::join(dest, &f.path);
            match fs::symlink_metadata(&target) {
                Ok(m) if !m.is_file() => {
                    return Err(PackError::DestNotATree {
                        dest: dest.display().to_string(),
                        path: f.path.clone(),
                    })
                }
                Ok(_) if state.old.is_none() && !opts.force => {
                    return Err(PackError::DestNotATree {
                        dest: dest.display().to_string(),
                        path: f.path.clone(),
                    })
                }
                _ => {}
            }
        }
    }

    let need = plan.total_size();
    let probe = if state.exists {
        dest.to_path_buf()
    } else {
        fsutil::parent_dir(dest)
    };
    if let Some(free) = media::free_bytes(&probe) {
        if free < need {
            return Err(PackError::NoSpace {
                dest: dest.display().to_string(),
                need,
                free,
            });
        }
    }

    // From here on we write. Stage everything; on failure remove what we made (the
    // caller removes a destination made for this pack).
    let staging = dest.join(STAGING_DIR);
    let staged = stage(plan, keys, &staging, progress);
    crate::update::fault::point("pack-staged");
    let (manifest, manifest_bytes, signatures) = match staged {
        Ok(s) => s,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let paths: Vec<&str> = plan.files.iter().map(|f| f.path.as_str()).collect();
    let flipped = flip(
        &paths,
        &plan.dirs,
        dest,
        &staging,
        state.old.as_ref(),
        &manifest_bytes,
        &signatures,
        None,
    );
    let _ = fs::remove_dir_all(&staging);
    flipped?;
    Ok(PackReport {
        dest: dest.to_path_buf(),
        files: manifest.files.len(),
        bytes: manifest.total_size(),
        manifest,
        manifest_bytes,
        signatures,
        replaced: state
            .old
            .map(|o| (o.bundle_id.clone(), o.release.to_string())),
    })
}

type Staged = (Manifest, Vec<u8>, Vec<(String, String)>);

/// Copies (hashing) every file into `staging`, builds and signs the manifest.
fn stage(
    plan: &TreePlan,
    keys: &[SecretKey],
    staging: &Path,
    progress: Progress,
) -> Result<Staged, PackError> {
    match fs::symlink_metadata(staging) {
        // A staging folder left by an interrupted pack is ours to remove.
        Ok(m) if m.is_dir() => fs::remove_dir_all(staging).map_err(io_err("remove", staging))?,
        Ok(_) => fs::remove_file(staging).map_err(io_err("remove", staging))?,
        Err(_) => {}
    }
    fs::create_dir(staging).map_err(io_err("create staging folder", staging))?;

    let total = plan.total_size();
    let done = AtomicU64::new(0);
    let mut entries = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let dst = paths::join(staging, &f.path);
        let parent = fsutil::parent_dir(&dst);
        fs::create_dir_all(&parent).map_err(io_err("create folder", &parent))?;
        let base = done.load(Ordering::Relaxed);
        let digests = match &f.source {
            Source::File(src) => {
                let each = |d: u64, _t: u64| progress(base + d, total.max(base + d));
                hash::copy_and_hash(src, &dst, manifest::DEFAULT_CHUNK_SIZE, &each)?
            }
            Source::Shard { .. } => {
                if let Some(r) = f.source.write_shard(&dst) {
                    r.map_err(io_err("write", &dst))?;
                }
                let each = |d: u64, _t: u64| progress(base + d, total.max(base + d));
                hash::hash_file(&dst, manifest::DEFAULT_CHUNK_SIZE, &each)?
            }
            Source::Bytes(bytes) => {
                let mut out = fsutil::create_new(&dst).map_err(io_err("create", &dst))?;
                out.write_all(bytes)
                    .and_then(|_| out.sync_all())
                    .map_err(io_err("write", &dst))?;
                hash::hash_bytes(bytes, manifest::DEFAULT_CHUNK_SIZE)
            }
        };
        done.fetch_add(digests.size, Ordering::Relaxed);
        progress(done.load(Ordering::Relaxed), total);
        set_mode(&dst, f.mode);
        entries.push(f.entry(digests));
    }
    // Folders (empty ones included); their modes are set after the flip, so renames
    // out of them never meet a read-only folder.
    for d in &plan.dirs {
        let p = paths::join(staging, &d.path);
        fs::create_dir_all(&p).map_err(io_err("create folder", &p))?;
    }
    fsutil::fsync_dir(staging).map_err(io_err("sync", staging))?;

    let manifest = plan.manifest(entries);
    manifest.validate()?;
    let bytes = manifest.to_toml().into_bytes();
    let mut sigs = Vec::with_capacity(keys.len());
    for k in keys {
        let text = sign::sign_manifest(k, &manifest, &bytes)?;
        sigs.push((k.public.key_id(), text));
    }
    Ok((manifest, bytes, sigs))
}

/// The mode a folder of the tree gets: its own bits with the owner's `rwx` kept, so
/// offgrid can always replace and remove what it wrote (SPEC.md §18.1).
pub fn dir_mode(mode: Option<u32>) -> Option<u32> {
    mode.map(|m| (m & 0o777) | 0o700)
}

/// Sets Unix permission bits; advisory (FAT has none), so failure is ignored.
pub(crate) fn set_mode(path: &Path, mode: Option<u32>) {
    #[cfg(unix)]
    if let Some(m) = mode {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(path, fs::Permissions::from_mode(m));
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
}

/// Removes the old manifest and signatures, moves the staged files into place, removes
/// files of the old tree that the new one does not have, then writes the manifest and
/// the signatures, each step made durable before the next. `new_paths` are the tree's
/// files, staged under `staging`, and `new_dirs` its folders; `signatures` are `(key id, .minisig text)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn flip(
    new_paths: &[&str],
    new_dirs: &[crate::manifest::DirEntry],
    dest: &Path,
    staging: &Path,
    old: Option<&Manifest>,
    manifest_bytes: &[u8],
    signatures: &[(String, String)],
    marker: Option<&[u8]>,
) -> Result<(), PackError> {
    // 1. The tree stops being a tree.
    let mpath = dest.join(MANIFEST_FILE);
    fsutil::remove_if_exists(&mpath).map_err(io_err("remove", &mpath))?;
    let vpath = dest.join(crate::volume::MARKER_FILE);
    fsutil::remove_if_exists(&vpath).map_err(io_err("remove", &vpath))?;
    let sigdir = dest.join(SIGNATURES_DIR);
    if let Ok(rd) = fs::read_dir(&sigdir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "minisig") {
                fsutil::remove_if_exists(&p).map_err(io_err("remove", &p))?;
            }
        }
        fsutil::fsync_dir(&sigdir).map_err(io_err("sync", &sigdir))?;
    }
    fsutil::fsync_dir(dest).map_err(io_err("sync", dest))?;

    // 2. Staged files into place.
    let mut dirs = BTreeSet::new();
    for path in new_paths {
        let from = paths::join(staging, path);
        let to = paths::join(dest, path);
        let parent = fsutil::parent_dir(&to);
        fs::create_dir_all(&parent).map_err(io_err("create folder", &parent))?;
        fs::rename(&from, &to).map_err(io_err("move into place", &to))?;
        dirs.insert(parent);
    }
    // Folders of the payload, empty ones included.
    for d in new_dirs {
        let p = paths::join(dest, &d.path);
        fs::create_dir_all(&p).map_err(io_err("create folder", &p))?;
        dirs.insert(fsutil::parent_dir(&p));
    }
    // 3. Files of the old tree the new one no longer has.
    if let Some(old) = old {
        let new: BTreeSet<&str> = new_paths.iter().copied().collect();
        for f in old.files.iter().filter(|f| !new.contains(f.path.as_str())) {
            let p = paths::join(dest, &f.path);
            fsutil::remove_if_exists(&p).map_err(io_err("remove", &p))?;
            let parent = fsutil::parent_dir(&p);
            // Folders the old tree alone used (bin/PLATFORM/): removed when empty.
            let kept = new_dirs
                .iter()
                .any(|d| paths::join(dest, &d.path) == parent);
            if parent != dest && !kept && fs::remove_dir(&parent).is_ok() {
                dirs.insert(fsutil::parent_dir(&parent));
            } else {
                dirs.insert(parent);
            }
        }
    }
    // Folders of the old tree the new one no longer has: removed when empty, deepest
    // first (a folder holding the user's own files stays).
    if let Some(old) = old {
        let new: BTreeSet<&str> = new_dirs.iter().map(|d| d.path.as_str()).collect();
        let mut gone: Vec<&str> = old
            .dirs
            .iter()
            .map(|d| d.path.as_str())
            .filter(|d| !new.contains(d))
            .collect();
        gone.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for d in gone {
            let p = paths::join(dest, d);
            if fs::remove_dir(&p).is_ok() {
                dirs.insert(fsutil::parent_dir(&p));
            }
        }
    }
    for d in new_dirs {
        set_mode(&paths::join(dest, &d.path), dir_mode(d.mode));
    }
    for d in &dirs {
        if d.exists() {
            fsutil::fsync_dir(d).map_err(io_err("sync", d))?;
        }
    }
    fsutil::fsync_dir(dest).map_err(io_err("sync", dest))?;

    // 4. The volume marker, the manifest, then the signatures: now it is a tree.
    if let Some(b) = marker {
        fsutil::atomic_write(&vpath, b).map_err(io_err("write", &vpath))?;
        set_mode(&vpath, Some(MODE_DATA));
    }
    fsutil::atomic_write(&mpath, manifest_bytes).map_err(io_err("write", &mpath))?;
    set_mode(&mpath, Some(MODE_DATA));
    fs::create_dir_all(&sigdir).map_err(io_err("create folder", &sigdir))?;
    for (key_id, text) in signatures {
        let p = sigdir.join(format!("{key_id}.minisig"));
        fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))?;
        set_mode(&p, Some(MODE_DATA));
    }
    fsutil::fsync_dir(dest).map_err(io_err("sync", dest))?;
    Ok(())
}
