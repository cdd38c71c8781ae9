//! `offgrid install --from VOLUME`: a release spread over volumes (or a tree holding
//! parts), installed volume by volume in any order (SPEC.md §16.6, §16.7).
//!
//! Each volume's signed head is checked (the same policy as `install`), its marker bound
//! to it, and every piece on it is read once, each chunk hashed against the signed
//! manifest as it streams into `HOME/incoming/tree/` — whole files at their path, parts
//! written at their offset into the file they belong to. Only when every piece of the
//! volume is in and synced is the volume recorded in `HOME/incoming/set.json`; a killed
//! install redoes that volume only, and a volume recorded is never read again. When every
//! volume is in, the assembled tree is installed by the one installer
//! ([`super::install::install_locked`]: signatures again, each file's whole sha256 as it
//! is copied, the journaled switch), then `incoming/` is removed.
//!
//! Known gaps: the home needs room for the release twice while the last volume is
//! installed (the assembled tree and the new version); a set staged by one release is
//! removed by hand (`HOME/incoming`) to start another.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hash;
use crate::manifest::{Manifest, MANIFEST_FILE, SIGNATURES_DIR};
use crate::trust::TrustPolicy;
use crate::update::home::{Home, PinnedTrust};
use crate::update::install::{check_root, install_locked, policy_for, InstallReport};
use crate::update::journal::recover_locked;
use crate::update::{io_err, UpdateError};
use crate::volume::{self, VolumeError};

/// The staging folder of a set of volumes, in the home.
pub const INCOMING_DIR: &str = "incoming";
const SET_FILE: &str = "set.json";
const TREE_DIR: &str = "tree";
const SET_FORMAT: &str = "offgrid-incoming/1";

/// `HOME/incoming/set.json`: the release being assembled and the volumes verified.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SetState {
    format: String,
    bundle_id: String,
    release: String,
    manifest_sha256: String,
    volumes: u32,
    done: Vec<u32>,
    /// The keys the first volume was checked with, when nothing is installed yet (so
    /// the other volumes need no `--pubkey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trust: Option<PinnedTrust>,
}

/// What one `install --from VOLUME` staged.
#[derive(Debug, Clone, Serialize)]
pub struct StagedReport {
    pub home: String,
    pub bundle_id: String,
    pub release: String,
    pub volume: u32,
    pub volumes: u32,
    /// True when this volume had been verified before (it was not read again).
    pub already: bool,
    /// The volumes verified so far, this one included.
    pub staged: Vec<u32>,
    pub missing: Vec<u32>,
    /// Pieces read from this volume, and their bytes.
    pub files: usize,
    pub bytes: u64,
}

/// The outcome: a volume staged (others missing), or the release installed.
#[derive(Debug)]
pub enum VolumeInstall {
    Staged(StagedReport),
    Installed(StagedReport, Box<InstallReport>),
}

/// True when `root` is a volume (or a tree holding parts): it has a `volume.toml`.
pub fn is_volume(root: &Path) -> bool {
    fs::symlink_metadata(root.join(volume::MARKER_FILE)).is_ok()
}

fn read_set(path: &Path) -> Result<Option<SetState>, UpdateError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| UpdateError::BadHome {
                home: path.display().to_string(),
                reason: format!("unreadable: {e}"),
                help: "remove the 'incoming' folder of the home and install the volumes again",
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

fn write_set(path: &Path, s: &SetState) -> Result<(), UpdateError> {
    let b = serde_json::to_vec_pretty(s).unwrap_or_default();
    crate::fsutil::atomic_write(path, &b).map_err(io_err("write", path))
}

/// Installs the volume at `root` into `home` (see the module doc).
pub fn install_volume(
    home: &Home,
    root: &Path,
    given: Option<&TrustPolicy>,
    progress: crate::Progress,
) -> Result<VolumeInstall, UpdateError> {
    check_root(root)?;
    let lock = home.lock(true, "install")?;
    let recovered = recover_locked(home, &lock)?;
    let state = home.read_state()?;
    let inc = home.root.join(INCOMING_DIR);
    let tree = inc.join(TREE_DIR);
    let set_path = inc.join(SET_FILE);
    let staged_set = read_set(&set_path)?;
    let set_trust = staged_set.as_ref().and_then(|s| s.trust.clone());
    let policy = match (&state, given, &set_trust) {
        (None, Some(g), Some(t)) if PinnedTrust::from_policy(g) != *t => {
            return Err(UpdateError::KeysDiffer {
                home: inc.display().to_string(),
            })
        }
        (None, None, Some(t)) => home.pinned_policy(t)?,
        _ => policy_for(home, state.as_ref(), given)?,
    };
    let (signed, sigs) = crate::update::install::trusted_head(root, &policy)?;
    let (m, bytes) = (signed.manifest, signed.bytes);
    let sha = hash::sha256_hex(&bytes);
    let marker = volume::read_marker(root)?.ok_or_else(|| VolumeError::BadMarker {
        path: root.join(volume::MARKER_FILE).display().to_string(),
        reason: "it is missing".into(),
    })?;
    marker.check(root, &m, &sha)?;
    crate::update::install::check_offer(state.as_ref(), &m)?;
    let n = marker.volumes;
    let k = marker.volume;
    let mut set = match staged_set {
        Some(s) if s.manifest_sha256 != sha => {
            let missing: Vec<u32> = (1..=s.volumes).filter(|v| !s.done.contains(v)).collect();
            return Err(VolumeError::OtherSet {
                root: root.display().to_string(),
                this: format!("release {} of {}", m.release, m.bundle_id),
                staged: format!(
                    "release {} of {} (manifest sha256 {}…)",
                    s.release,
                    s.bundle_id,
                    s.manifest_sha256.get(..16).unwrap_or("")
                ),
                dir: inc.display().to_string(),
                missing,
            }
            .into());
        }
        Some(s) => s,
        None => {
            // A first volume: the signed head, then the record of the set.
            let _ = fs::remove_dir_all(&inc);
            fs::create_dir_all(tree.join(SIGNATURES_DIR)).map_err(io_err("create", &tree))?;
            crate::fsutil::atomic_write(&tree.join(MANIFEST_FILE), &bytes)
                .map_err(io_err("write", &tree))?;
            for (name, text) in &sigs {
                let p = tree.join(SIGNATURES_DIR).join(name);
                crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))?;
            }
            let s = SetState {
                format: SET_FORMAT.into(),
                bundle_id: m.bundle_id.clone(),
                release: m.release.to_string(),
                manifest_sha256: sha.clone(),
                volumes: n,
                done: Vec::new(),
                trust: state.is_none().then(|| PinnedTrust::from_policy(&policy)),
            };
            write_set(&set_path, &s)?;
            s
        }
    };
    let pieces = m.pieces(Some(k));
    let total: u64 = pieces.iter().map(|p| p.size).sum();
    let already = set.done.contains(&k);
    if !already {
        crate::media::check_space(
            &home.root,
            "the volume",
            total.saturating_add(1 << 20),
            crate::media::HOME_SPACE_HELP,
        )?;
        let mut done = 0u64;
        for p in &pieces {
            stage_piece(root, &tree, &m, p, k)?;
            done += p.size;
            progress(done, total.max(1));
            crate::update::fault::point("volume-piece-written");
        }
        crate::fsutil::sync_tree(&tree).map_err(io_err("sync", &tree))?;
        set.done.push(k);
        set.done.sort_unstable();
        write_set(&set_path, &set)?;
    }
    let missing: Vec<u32> = (1..=n).filter(|v| !set.done.contains(v)).collect();
    let report = StagedReport {
        home: home.root.display().to_string(),
        bundle_id: m.bundle_id.clone(),
        release: m.release.to_string(),
        volume: k,
        volumes: n,
        already,
        staged: set.done.clone(),
        missing: missing.clone(),
        files: pieces.len(),
        bytes: total,
    };
    if !missing.is_empty() {
        return Ok(VolumeInstall::Staged(report));
    }
    // A first install pins the keys the volumes were checked with.
    let first = state.is_none().then_some(&policy);
    let installed = install_locked(home, &lock, recovered, &tree, first.or(given), progress)?;
    crate::fsutil::remove_tree(&inc).map_err(io_err("remove", &inc))?;
    Ok(VolumeInstall::Installed(report, Box::new(installed)))
}

/// Reads one piece from the volume, checking each chunk against the signed manifest as it
/// goes, into its file under `tree` at its offset (the file made at its full size).
fn stage_piece(
    root: &Path,
    tree: &Path,
    m: &Manifest,
    p: &crate::manifest::Piece,
    volume: u32,
) -> Result<(), UpdateError> {
    let f = &m.files[p.file];
    let src: PathBuf = crate::paths::join(root, &p.path);
    let bad = |reason: String| VolumeError::BadPiece {
        path: p.path.clone(),
        volume,
        size: p.size,
        reason,
    };
    let input = hash::open_regular_no_follow(&src).map_err(|e| bad(e.to_string()))?;
    let len = input.metadata().map_err(|e| bad(e.to_string()))?.len();
    if len != p.size {
        return Err(bad(format!("it is {len} bytes")).into());
    }
    let dst = crate::paths::join(tree, &f.path);
    let parent = crate::fsutil::parent_dir(&dst);
    fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    let out = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&dst)
        .map_err(io_err("create", &dst))?;
    if out.metadata().map_err(io_err("read", &dst))?.len() != f.size {
        out.set_len(f.size).map_err(io_err("write", &dst))?;
    }
    let cs = f.chunk_size;
    let first = p.offset / cs;
    let mut r = std::io::BufReader::with_capacity(1 << 20, input);
    let mut buf = vec![0u8; cs as usize];
    let mut at = 0u64;
    let mut i = 0u64;
    while at < p.size {
        let n = (p.size - at).min(cs) as usize;
        r.read_exact(&mut buf[..n])
            .map_err(|e| bad(e.to_string()))?;
        let got = hash::to_hex(&Sha256::digest(&buf[..n]));
        if f.chunks.get((first + i) as usize) != Some(&got) {
            return Err(VolumeError::Damaged {
                path: p.path.clone(),
                volume,
                start: at,
                end: at + n as u64,
                chunk: first + i,
            }
            .into());
        }
        write_at(&out, &buf[..n], p.offset + at).map_err(io_err("write", &dst))?;
        at += n as u64;
        i += 1;
    }
    out.sync_all().map_err(io_err("sync", &dst))
}

#[cfg(unix)]
fn write_at(f: &fs::File, b: &[u8], off: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(b, off)
}

#[cfg(not(unix))]
fn write_at(mut f: &fs::File, b: &[u8], off: u64) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    f.seek(SeekFrom::Start(off))?;
    f.write_all(b)
}
