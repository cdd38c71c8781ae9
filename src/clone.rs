//! `offgrid clone SRC DEST...`: one verified tree written to many sticks at once, then
//! every copy read back from its medium and checked against the signed manifest (the
//! "50 clinics" case). SPEC.md §16.5 is normative.
//!
//! Order: [`plan`] trusts the source's head (signatures against the policy, then the
//! parse), checks every destination as `pack-usb` does (a file in the way, another bundle
//! or release without `--force`, another writer, the medium's file limit, free space per
//! file system) and refuses before anything is written. [`clone`] then takes every
//! destination's lock, stages each file into every destination at once from one read of
//! the source ([`crate::hash::copy_and_hash_to_many`]: read once, hashed once, written to
//! all in parallel), refuses the whole clone if the source's bytes differ from its signed
//! manifest (nothing flipped anywhere), flips each destination as `pack-usb` does
//! (manifest and signatures last), and finally reads every destination back: each file is
//! synced and its cached pages dropped ([`crate::fsutil::drop_cached`]), then the tree is
//! verified in full ([`crate::verify::verify_tree`]), so a medium that corrupts on write
//! or a file changed behind the writer's back is caught.
//!
//! A destination that fails (an I/O error while writing, or its read-back) is reported
//! and the others go on. Only the signed tree is carried: `manifest.toml`, every
//! `signatures/*.minisig` and the files the manifest names; extras on the source are not.
//!
//! A volume (or a single tree holding parts, SPEC.md §16.6–16.7) is carried as stored:
//! its `volume.toml` is checked against the signed manifest, then every piece the manifest
//! puts on that volume is copied (the manifest's stored view,
//! [`Manifest::stored_view`]), each checked against its slice of chunk digests, and the
//! marker written beside the manifest; the read-back is `verify`'s check of a volume.
//!
//! Known gaps: the read-back trusts `posix_fadvise` to drop the page cache (Linux; other
//! systems may read back from memory); a destination holding the same release is still
//! staged in full.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::hash::{self, HashError};
use crate::lockfile::FileLock;
use crate::manifest::{Manifest, MANIFEST_FILE, SIGNATURES_DIR};
use crate::media::{self, FileLimit, MediaError};
use crate::paths;
use crate::signed::{self, HeadError};
use crate::trust::TrustPolicy;
use crate::usb::layout::STAGING_DIR;
use crate::usb::pack as usbpack;
use crate::usb::PackError;
use crate::verify::{self, VerifyError, VerifyOptions};
use crate::volume::{self, Marker, VolumeError};
use crate::Progress;

/// Why a clone is refused as a whole (per-destination failures are in [`CloneReport`]).
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    #[error("the source tree's head cannot be trusted")]
    Head(#[from] HeadError),
    #[error(transparent)]
    Dest(#[from] PackError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Volume(#[from] VolumeError),
    #[error("'{dest}' is given twice")]
    Duplicate { dest: String },
    #[error("destination '{dest}' overlaps the source '{source_dir}'")]
    Overlap { dest: String, source_dir: String },
    #[error("the source's '{path}' differs from its signed manifest ({detail}); nothing was switched at any destination")]
    SourceDamaged { path: String, detail: String },
    #[error("cannot read the source's '{path}': {source}")]
    SourceRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("every destination failed; the first: {first}")]
    AllFailed { first: String },
}

impl CloneError {
    /// A clean "no" (exit 1): the source cannot be trusted or is damaged, or a
    /// destination is busy or refused by its own checks.
    pub fn is_refusal(&self) -> bool {
        match self {
            CloneError::Head(e) => e.is_refusal(),
            CloneError::Dest(e) => e.is_refusal(),
            CloneError::Volume(e) => e.is_refusal(),
            CloneError::SourceDamaged { .. } => true,
            _ => false,
        }
    }
}

/// What `clone` does with its destinations.
#[derive(Debug, Clone, Default)]
pub struct CloneOptions {
    /// Replace a tree of another bundle or release (as `pack-usb --force`).
    pub force: bool,
    /// `--max-file-size`: replaces every destination's detected file limit.
    pub max_file_size: Option<u64>,
}

/// One destination as planned.
#[derive(Debug, Clone)]
pub struct DestPlan {
    pub dest: PathBuf,
    /// The folder exists now.
    pub exists: bool,
    /// Its medium and per-file limit.
    pub limit: FileLimit,
    /// Free bytes on its file system (None: not reported).
    pub free: Option<u64>,
    /// Bytes staged there (the whole tree).
    pub need: u64,
    /// `(bundle id, release)` of a tree already there that the clone replaces.
    pub replaces: Option<(String, String)>,
}

/// A checked clone, ready to write (or to print for `--dry-run`).
#[derive(Debug, Clone)]
pub struct ClonePlan {
    pub source: PathBuf,
    /// The signed manifest.
    pub manifest: Manifest,
    /// What the source stores and the clone copies: the manifest itself for a tree of
    /// whole files, else its stored view of the source's volume (one entry per piece).
    pub stored: Manifest,
    /// The source's `volume.toml`, checked against the manifest; written at every
    /// destination.
    pub marker: Option<Marker>,
    /// The manifest's exact bytes.
    pub manifest_bytes: Vec<u8>,
    /// `(file name, text)` of each signature file, copied as they are.
    pub signatures: Vec<(String, String)>,
    /// Key ids of the trusted signers.
    pub signers: Vec<String>,
    pub dests: Vec<DestPlan>,
}

impl ClonePlan {
    /// Bytes of the files (or pieces) copied (one copy).
    pub fn bytes(&self) -> u64 {
        self.stored.total_size()
    }

    /// Files (or pieces) copied.
    pub fn files(&self) -> usize {
        self.stored.files.len()
    }
}

/// How one destination ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum DestStatus {
    /// Written, and every byte read back from the medium matches the signed manifest.
    Ok,
    /// Writing failed (nothing was switched there: the old tree, if any, is intact,
    /// unless the failure came while switching).
    WriteFailed { error: String },
    /// Written, but reading it back found problems (each names a file).
    ReadBackFailed { problems: Vec<String> },
}

/// One destination's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DestOutcome {
    pub dest: PathBuf,
    #[serde(flatten)]
    pub status: DestStatus,
    /// Release replaced there, as `BUNDLE RELEASE`.
    pub replaced: Option<String>,
}

/// What a finished clone did.
#[derive(Debug, Clone)]
pub struct CloneReport {
    pub bundle_id: String,
    pub release: String,
    pub files: usize,
    pub bytes: u64,
    pub dests: Vec<DestOutcome>,
}

impl CloneReport {
    /// Destinations that did not end [`DestStatus::Ok`].
    pub fn bad(&self) -> impl Iterator<Item = &DestOutcome> {
        self.dests.iter().filter(|d| d.status != DestStatus::Ok)
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// Trusts the source's head and checks every destination; writes nothing.
pub fn plan(
    source: &Path,
    dests: &[PathBuf],
    policy: &TrustPolicy,
    opts: &CloneOptions,
) -> Result<ClonePlan, CloneError> {
    let raw = signed::read_raw(source)?;
    let signatures = raw.sigs.clone();
    let trusted = signed::trust_raw(raw, policy)?;
    let m = trusted.manifest;
    // A volume, or a tree holding parts: carried as stored (SPEC.md §16.5).
    let marker = volume::read_marker(source)?;
    if let Some(mk) = &marker {
        mk.check(source, &m, &hash::sha256_hex(&trusted.bytes))?;
    }
    let stored = match &marker {
        Some(mk) => m.stored_view(Some(mk.volume)),
        None => m.clone(),
    };
    let head_bytes =
        trusted.bytes.len() as u64 + marker.as_ref().map_or(0, |mk| mk.to_toml().len() as u64);
    let src_real = fs::canonicalize(source).map_err(|e| CloneError::SourceRead {
        path: shown(source),
        source: e,
    })?;
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut planned = Vec::with_capacity(dests.len());
    for dest in dests {
        let real = resolved(dest);
        if seen.contains(&real) {
            return Err(CloneError::Duplicate { dest: shown(dest) });
        }
        if real.starts_with(&src_real) || src_real.starts_with(&real) {
            return Err(CloneError::Overlap {
                dest: shown(dest),
                source_dir: shown(source),
            });
        }
        seen.push(real);
        let state = usbpack::check_dest(dest, &m.bundle_id, &m.release, opts.force)?;
        let limit = FileLimit::for_dest(dest, opts.max_file_size);
        if let Some(max) = limit.max {
            if let Some(f) = stored.files.iter().find(|f| f.size > max) {
                return Err(MediaError::TooLarge {
                    path: f.path.clone(),
                    size: f.size,
                    limit: max,
                    source_name: limit.source(),
                    dest: shown(dest),
                    help: "use a medium without the limit (exFAT, NTFS, ext4), or re-pack the release with --max-file-size so its models are split",
                }
                .into());
            }
        }
        planned.push(DestPlan {
            dest: dest.clone(),
            exists: state.exists,
            free: media::free_bytes(dest),
            need: stored.total_size() + head_bytes,
            replaces: state
                .old
                .map(|o| (o.bundle_id.clone(), o.release.to_string())),
            limit,
        });
    }
    check_space(&planned)?;
    Ok(ClonePlan {
        source: source.to_path_buf(),
        manifest: m,
        stored,
        marker,
        manifest_bytes: trusted.bytes,
        signatures,
        signers: trusted.signers.into_iter().map(|s| s.key_id).collect(),
        dests: planned,
    })
}

/// `dest` made absolute through its nearest existing folder (for overlap checks).
fn resolved(dest: &Path) -> PathBuf {
    let abs = std::path::absolute(dest).unwrap_or_else(|_| dest.to_path_buf());
    let base = media::existing_ancestor(&abs);
    let rest = abs
        .strip_prefix(&base)
        .unwrap_or(Path::new(""))
        .to_path_buf();
    fs::canonicalize(&base).unwrap_or(base).join(rest)
}

/// Refuses when the destinations on one file system together need more than it has free.
fn check_space(dests: &[DestPlan]) -> Result<(), CloneError> {
    let mut by_fs: BTreeMap<u64, (u64, &DestPlan)> = BTreeMap::new();
    for d in dests {
        let Some(dev) = device_of(&d.dest) else {
            media::check_space(&d.dest, "the clone", d.need, SPACE_HELP)?;
            continue;
        };
        let e = by_fs.entry(dev).or_insert((0, d));
        e.0 += d.need;
    }
    for (need, d) in by_fs.values() {
        media::check_space(
            &d.dest,
            "the clone (every destination on it)",
            *need,
            SPACE_HELP,
        )?;
    }
    Ok(())
}

const SPACE_HELP: &str =
    "free space on that medium, or clone to fewer destinations on one file system at a time";

#[cfg(unix)]
fn device_of(dest: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(media::existing_ancestor(dest))
        .ok()
        .map(|m| m.dev())
}

#[cfg(not(unix))]
fn device_of(_dest: &Path) -> Option<u64> {
    None
}

/// A destination being written.
struct Live {
    index: usize,
    staging: PathBuf,
    lock: Option<FileLock>,
    made: bool,
}

/// Writes the planned clone, then reads every destination back. `progress(done, total)`
/// counts the source bytes read, then the bytes read back.
pub fn clone(
    plan: &ClonePlan,
    policy: &TrustPolicy,
    progress: Progress,
) -> Result<CloneReport, CloneError> {
    let mut outcomes: Vec<Option<DestStatus>> = vec![None; plan.dests.len()];
    let mut live: Vec<Live> = Vec::new();
    let mut olds: Vec<Option<Manifest>> = vec![None; plan.dests.len()];
    // Locks first: a destination another writer holds is refused before anything starts.
    for (i, d) in plan.dests.iter().enumerate() {
        let made = !d.dest.exists();
        if made {
            if let Err(e) = fs::create_dir_all(&d.dest) {
                unwind(&mut live);
                return Err(PackError::Io {
                    action: "create destination",
                    path: shown(&d.dest),
                    source: e,
                }
                .into());
            }
        }
        let lock = match usbpack::lock_dest(&d.dest, "clone") {
            Ok(l) => l,
            Err(e) => {
                if made {
                    let _ = fs::remove_dir(&d.dest);
                }
                unwind(&mut live);
                return Err(e.into());
            }
        };
        live.push(Live {
            index: i,
            staging: d.dest.join(STAGING_DIR),
            lock: Some(lock),
            made,
        });
        // Under the lock, what is there now (the plan may be a moment old).
        let m = &plan.manifest;
        match usbpack::inspect_dest(&d.dest, &m.bundle_id, &m.release, true) {
            Ok(state) => olds[i] = state.old.map(|o| volume::as_stored_at(&d.dest, o)),
            Err(e) => {
                unwind(&mut live);
                return Err(e.into());
            }
        }
    }
    let result = write_all(plan, &mut live, &mut outcomes, &olds, progress);
    if let Err(e) = result {
        unwind(&mut live);
        return Err(e);
    }
    crate::update::fault::point("clone-written");
    // Read back every destination that was switched.
    let total_back: u64 = live.len() as u64 * plan.bytes();
    let base = AtomicU64::new(0);
    for l in &live {
        let d = &plan.dests[l.index];
        let b = base.load(Ordering::Relaxed);
        let each = |done: u64, _t: u64| progress(b + done, total_back);
        outcomes[l.index] = Some(read_back_with(&d.dest, &plan.stored, policy, &each));
        base.fetch_add(plan.bytes(), Ordering::Relaxed);
    }
    for l in &mut live {
        if let Some(lock) = l.lock.take() {
            let _ = lock.remove();
        }
    }
    let dests = plan
        .dests
        .iter()
        .zip(outcomes)
        .map(|(d, s)| DestOutcome {
            dest: d.dest.clone(),
            status: s.unwrap_or(DestStatus::WriteFailed {
                error: "not written".into(),
            }),
            replaced: d.replaces.as_ref().map(|(b, r)| format!("{b} {r}")),
        })
        .collect();
    Ok(CloneReport {
        bundle_id: plan.manifest.bundle_id.clone(),
        release: plan.manifest.release.to_string(),
        files: plan.files(),
        bytes: plan.bytes(),
        dests,
    })
}

/// Stages every file into every live destination, then switches each one. Destinations
/// that fail are taken out of `live` (their staging removed, their lock released) with
/// their outcome set; an error here means the source failed and nothing was switched.
fn write_all(
    plan: &ClonePlan,
    live: &mut Vec<Live>,
    outcomes: &mut [Option<DestStatus>],
    olds: &[Option<Manifest>],
    progress: Progress,
) -> Result<(), CloneError> {
    for l in live.iter() {
        clear_staging(&l.staging).map_err(|e| PackError::Io {
            action: "create staging folder",
            path: shown(&l.staging),
            source: e,
        })?;
    }
    let m = &plan.stored;
    let total = plan.bytes();
    let done = AtomicU64::new(0);
    for f in &m.files {
        let src = paths::join(&plan.source, &f.path);
        let mut dsts = Vec::with_capacity(live.len());
        let mut keep = Vec::with_capacity(live.len());
        for l in live.iter() {
            let dst = paths::join(&l.staging, &f.path);
            let parent = crate::fsutil::parent_dir(&dst);
            match fs::create_dir_all(&parent) {
                Ok(()) => {
                    dsts.push(dst);
                    keep.push(true);
                }
                Err(e) => {
                    outcomes[l.index] = Some(DestStatus::WriteFailed {
                        error: format!("cannot create folder '{}': {e}", parent.display()),
                    });
                    keep.push(false);
                }
            }
        }
        drop_failed(live, &keep);
        if live.is_empty() {
            break;
        }
        let refs: Vec<&Path> = dsts.iter().map(PathBuf::as_path).collect();
        let b = done.load(Ordering::Relaxed);
        let each = |d: u64, _t: u64| progress(b + d, total);
        let (digests, failed) = match hash::copy_and_hash_to_many(&src, &refs, f.chunk_size, &each)
        {
            Ok(r) => r,
            Err(HashError::Read { source, .. }) => {
                return Err(CloneError::SourceRead {
                    path: shown(&src),
                    source,
                })
            }
            Err(e) => {
                return Err(CloneError::SourceRead {
                    path: shown(&src),
                    source: std::io::Error::other(e.to_string()),
                })
            }
        };
        let mut keep = Vec::with_capacity(live.len());
        for (l, err) in live.iter().zip(&failed) {
            match err {
                Some(e) => {
                    outcomes[l.index] = Some(DestStatus::WriteFailed {
                        error: e.to_string(),
                    });
                    keep.push(false);
                }
                None => keep.push(true),
            }
        }
        drop_failed(live, &keep);
        if live.is_empty() {
            break;
        }
        if let Some(detail) = differs(f, &digests) {
            return Err(CloneError::SourceDamaged {
                path: shown(&src),
                detail,
            });
        }
        for (dst, l) in dsts.iter().zip(failed.iter()) {
            if l.is_none() {
                usbpack::set_mode(dst, f.mode);
            }
        }
        done.fetch_add(f.size, Ordering::Relaxed);
    }
    if live.is_empty() {
        let first = outcomes
            .iter()
            .flatten()
            .find_map(|s| match s {
                DestStatus::WriteFailed { error } => Some(error.clone()),
                _ => None,
            })
            .unwrap_or_default();
        return Err(CloneError::AllFailed { first });
    }
    crate::update::fault::point("clone-staged");
    let names: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    // A volume's folders are made by its pieces (as `pack-usb` writes volumes).
    let dirs: &[crate::manifest::DirEntry] = if plan.marker.is_some() { &[] } else { &m.dirs };
    let marker = plan.marker.as_ref().map(Marker::to_toml);
    let sigs: Vec<(String, String)> = plan
        .signatures
        .iter()
        .map(|(n, t)| (n.trim_end_matches(".minisig").to_owned(), t.clone()))
        .collect();
    let mut keep = Vec::with_capacity(live.len());
    for l in live.iter() {
        let dest = &plan.dests[l.index].dest;
        let flipped = crate::fsutil::fsync_dir(&l.staging)
            .map_err(|e| PackError::Io {
                action: "sync",
                path: shown(&l.staging),
                source: e,
            })
            .and_then(|()| {
                usbpack::flip(
                    &names,
                    dirs,
                    dest,
                    &l.staging,
                    olds[l.index].as_ref(),
                    &plan.manifest_bytes,
                    &sigs,
                    marker.as_ref().map(String::as_bytes),
                )
            });
        let _ = fs::remove_dir_all(&l.staging);
        match flipped {
            Ok(()) => keep.push(true),
            Err(e) => {
                outcomes[l.index] = Some(DestStatus::WriteFailed {
                    error: crate::diagnostic::with_help(&e),
                });
                keep.push(false);
            }
        }
    }
    drop_failed(live, &keep);
    Ok(())
}

/// Why the source's digests differ from its manifest entry, if they do. A part's entry
/// (of a stored view) has no whole-file sha256: its chunks are what is signed.
fn differs(f: &crate::manifest::FileEntry, d: &hash::Digests) -> Option<String> {
    if d.size != f.size {
        return Some(format!("{} bytes, the manifest says {}", d.size, f.size));
    }
    if let Some(i) = d.chunks.iter().zip(&f.chunks).position(|(a, b)| a != b) {
        let (start, end) = hash::chunk_range(f, i as u64);
        return Some(format!("bytes {start}..{end} (chunk {i})"));
    }
    if (!f.sha256.is_empty() && d.sha256 != f.sha256) || d.chunks.len() != f.chunks.len() {
        return Some("its sha256".into());
    }
    None
}

/// Removes destinations whose `keep` is false from `live` (staging removed, lock released).
fn drop_failed(live: &mut Vec<Live>, keep: &[bool]) {
    let mut i = 0;
    live.retain_mut(|l| {
        let k = keep.get(i).copied().unwrap_or(true);
        i += 1;
        if !k {
            release(l);
        }
        k
    });
}

/// Gives up a destination: its staging folder removed, its lock released, a folder made
/// for the clone removed when empty.
fn release(l: &mut Live) {
    let _ = fs::remove_dir_all(&l.staging);
    if let Some(lock) = l.lock.take() {
        let _ = lock.remove();
    }
    if l.made {
        if let Some(d) = l.staging.parent() {
            let _ = fs::remove_dir(d);
        }
    }
}

/// Gives up every destination (a refusal of the whole clone).
fn unwind(live: &mut [Live]) {
    for l in live {
        release(l);
    }
}

fn clear_staging(staging: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(staging) {
        // A staging folder left by an interrupted pack or clone is ours to remove.
        Ok(m) if m.is_dir() => fs::remove_dir_all(staging)?,
        Ok(_) => fs::remove_file(staging)?,
        Err(_) => {}
    }
    fs::create_dir(staging)
}

/// Reads the tree at `dest` back from its medium and checks it against `policy`: every
/// file (and the head) synced and dropped from the page cache, then verified in full.
/// Used by `clone` and `pack-usb --read-back`.
pub fn read_back(
    dest: &Path,
    policy: &TrustPolicy,
    progress: Progress,
) -> Result<verify::TreeReport, VerifyError> {
    if let Ok((m, _)) = signed::read_unverified(dest) {
        drop_tree_cache(dest, &volume::as_stored_at(dest, m));
    }
    verify::verify_tree(dest, policy, &VerifyOptions { skip_extras: true }, progress)
}

/// [`read_back`] as a destination outcome, the problems naming files.
fn read_back_with(
    dest: &Path,
    m: &Manifest,
    policy: &TrustPolicy,
    progress: Progress,
) -> DestStatus {
    drop_tree_cache(dest, m);
    match read_back(dest, policy, progress) {
        Ok(_) => DestStatus::Ok,
        Err(VerifyError::Failed { report }) => DestStatus::ReadBackFailed {
            problems: report.failures().map(|f| f.problem()).collect(),
        },
        Err(e) => DestStatus::ReadBackFailed {
            problems: vec![e.to_string().lines().next().unwrap_or("").to_owned()],
        },
    }
}

/// Drops the cached pages of a tree's head and every file `m` (a stored view) names
/// (best effort: a file that cannot be opened is found by the verification that follows).
fn drop_tree_cache(dest: &Path, m: &Manifest) {
    let _ = crate::fsutil::drop_cached(&dest.join(MANIFEST_FILE));
    let _ = crate::fsutil::drop_cached(&dest.join(volume::MARKER_FILE));
    if let Ok(rd) = fs::read_dir(dest.join(SIGNATURES_DIR)) {
        for e in rd.flatten() {
            let _ = crate::fsutil::drop_cached(&e.path());
        }
    }
    for f in &m.files {
        let _ = crate::fsutil::drop_cached(&paths::join(dest, &f.path));
    }
}

impl crate::diagnostic::Diagnostic for CloneError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            CloneError::Dest(e) => crate::diagnostic::Diagnostic::help(e),
            CloneError::Media(e) => crate::diagnostic::Diagnostic::help(e),
            CloneError::Volume(e) => crate::diagnostic::Diagnostic::help(e),
            CloneError::Duplicate { .. } => Some("name each destination once".into()),
            CloneError::Overlap { .. } => Some("clone to other sticks or folders, outside the source and not holding it".into()),
            CloneError::SourceDamaged { .. } => Some("the source stick is damaged: run 'offgrid verify' on it, and clone from a good copy".into()),
            CloneError::SourceRead { .. } => Some("check the source medium; nothing was switched at any destination".into()),
            _ => None,
        }
    }
}
