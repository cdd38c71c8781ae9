//! Finding damage in a site home: every file of every kept version hashed against that
//! version's own signed manifest. `offgrid status --verify` reports it; `offgrid repair`
//! starts from it. SPEC.md §7.14 is normative.
//!
//! Each kept version is checked in its own folder `versions/DIR` (never through
//! `current`): its `manifest.toml` and `signatures/` against the pinned trust policy
//! first, through the one signed-head reader ([`crate::signed`]), and its bundle id and
//! release against what `state.json` says of that folder. A manifest that does not verify
//! vouches for nothing, so none of its files is checked and the version is reported as
//! damaged as a whole. Then every file of the manifest: size, then every chunk hash
//! ([`crate::hash::check_file`], chunks in parallel). Kept versions share unchanged files
//! by hard link: a file (same device and inode) checked against the same entry is hashed
//! once and its result reported at every path that links it.
//!
//! Nothing is skipped on the word of the verification cache (finding damage that did not
//! change a file's metadata, bit rot, is the point), but intact files of 1 MiB or more are
//! recorded in it, so `run` and `rollback` need not hash them again.
//! Known gap: the home is read without the lock, so a version removed by a concurrent
//! apply shows as missing files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hash::{self, FileCheck};
use crate::manifest::{FileEntry, Manifest};
use crate::models::vcache::VerifyCache;
use crate::trust::TrustPolicy;
use crate::update::home::{Home, State};
use crate::update::UpdateError;

/// Files smaller than this are not recorded in the verification cache.
const CACHE_MIN_SIZE: u64 = 1 << 20;

/// One damaged or missing file of a kept version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    /// The bundle path.
    pub path: String,
    /// `missing`, `not-a-file`, `wrong-size`, `damaged` or `unreadable`.
    pub problem: &'static str,
    /// What is wrong, for people (`bytes 0..4194304 do not match the signed chunk hashes`).
    pub detail: String,
    /// What the signed manifest says the file is.
    pub sha256: String,
    pub size: u64,
    /// The file's mode in the manifest.
    #[serde(skip)]
    pub mode: Option<u32>,
}

/// What was found in one kept version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionCheck {
    pub release: String,
    /// The folder under `versions/`.
    pub dir: String,
    pub current: bool,
    /// Files and bytes the signed manifest lists (0 when it does not verify).
    pub files: usize,
    pub bytes: u64,
    /// Why `manifest.toml` or its signatures do not verify; then no file was checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_problem: Option<String>,
    pub damaged: Vec<Damage>,
    /// The verified manifest, for repair.
    #[serde(skip)]
    pub manifest: Option<Manifest>,
}

/// What was found in the whole home.
#[derive(Debug, Clone, Serialize)]
pub struct HomeCheck {
    pub home: String,
    pub versions: Vec<VersionCheck>,
    /// Distinct files hashed (a file linked into several versions counts once).
    pub hashed_files: usize,
    pub hashed_bytes: u64,
    /// Damaged or missing files, over all versions (a shared file counts once per path).
    pub damaged: usize,
    /// Kept versions whose manifest or signatures do not verify.
    pub damaged_manifests: usize,
    /// sha256 → one intact file in the home with those bytes (a source for repair).
    #[serde(skip)]
    pub intact: BTreeMap<String, PathBuf>,
}

impl HomeCheck {
    /// True when nothing is damaged or missing.
    pub fn is_clean(&self) -> bool {
        self.damaged == 0 && self.damaged_manifests == 0
    }
}

/// A file check's problem as `(kind, text)`, or `None` when the file is intact. The text
/// is what rollback and status print after the quoted path.
pub fn describe(check: &Result<FileCheck, String>) -> Option<(&'static str, String)> {
    match check {
        Ok(FileCheck::Ok) => None,
        Ok(FileCheck::Missing) => Some(("missing", "is missing".to_owned())),
        Ok(FileCheck::NotAFile) => Some(("not-a-file", "is not a regular file".to_owned())),
        Ok(FileCheck::SizeMismatch { expected, actual }) => Some((
            "wrong-size",
            format!("is {actual} bytes, the signed manifest says {expected}"),
        )),
        Ok(FileCheck::Damaged { ranges }) => Some((
            "damaged",
            format!(
                "bytes {} do not match the signed chunk hashes",
                ranges
                    .iter()
                    .take(4)
                    .map(|(a, b)| format!("{a}..{b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
                    + if ranges.len() > 4 { ", …" } else { "" }
            ),
        )),
        Err(e) => Some(("unreadable", format!("cannot be read: {e}"))),
    }
}

/// Identity of a file's bytes on disk: device and inode (Unix), else its path.
fn identity(p: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(p).ok()?;
        m.is_file().then(|| (m.dev(), m.ino()))
    }
    #[cfg(not(unix))]
    {
        let _ = p;
        None
    }
}

/// Reads the state and pinned policy of `home` and checks every kept version.
pub fn verify_home(
    home: &Home,
    cache: Option<&VerifyCache>,
    progress: crate::Progress,
) -> Result<HomeCheck, UpdateError> {
    let state = home.state()?;
    let policy = home.policy(&state)?;
    Ok(check_home(home, &state, &policy, cache, progress))
}

/// Checks every kept version of `state` (see the module doc). Problems are findings,
/// not errors: this never fails.
pub fn check_home(
    home: &Home,
    state: &State,
    policy: &TrustPolicy,
    cache: Option<&VerifyCache>,
    progress: crate::Progress,
) -> HomeCheck {
    let mut versions = Vec::new();
    for inst in state.kept() {
        let dir = home.version_dir(&inst.dir);
        let mut v = VersionCheck {
            release: inst.release.to_string(),
            dir: inst.dir.clone(),
            current: inst.dir == state.current.dir,
            files: 0,
            bytes: 0,
            manifest_problem: None,
            damaged: Vec::new(),
            manifest: None,
        };
        match crate::signed::read_trusted(&dir, policy) {
            Err(e) => {
                let first = e.to_string().lines().next().unwrap_or_default().to_owned();
                v.manifest_problem = Some(crate::update::short(&first));
            }
            Ok(s)
                if s.manifest.release != inst.release
                    || s.manifest.bundle_id != state.bundle_id =>
            {
                v.manifest_problem = Some(format!(
                    "it is release {} of '{}', state.json says release {} of '{}'",
                    s.manifest.release, s.manifest.bundle_id, inst.release, state.bundle_id
                ));
            }
            Ok(s) => {
                v.files = s.manifest.files.len();
                v.bytes = s.manifest.total_size();
                v.manifest = Some(s.manifest);
            }
        }
        versions.push(v);
    }
    let total = versions.iter().map(|v| v.bytes).sum::<u64>().max(1);
    let mut base = 0u64;
    let mut seen: BTreeMap<(u64, u64, String, u64), Result<FileCheck, String>> = BTreeMap::new();
    let mut intact: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut to_cache: Vec<(PathBuf, FileEntry)> = Vec::new();
    let (mut hashed_files, mut hashed_bytes) = (0usize, 0u64);
    for v in &mut versions {
        let Some(m) = &v.manifest else { continue };
        let dir = home.version_dir(&v.dir);
        for f in &m.files {
            let p = crate::paths::join(&dir, &f.path);
            let id = identity(&p).map(|(d, i)| (d, i, f.sha256.clone(), f.chunk_size));
            let known = id.as_ref().and_then(|k| seen.get(k)).cloned();
            let check = match known {
                Some(c) => c,
                None => {
                    let on = |d: u64, _: u64| progress(base + d, total);
                    let c = hash::check_file(&p, f, &on).map_err(|e| e.to_string());
                    if matches!(c, Ok(FileCheck::Ok | FileCheck::Damaged { .. })) {
                        hashed_files += 1;
                        hashed_bytes += f.size;
                    }
                    if let Some(k) = id {
                        seen.insert(k, c.clone());
                    }
                    if c == Ok(FileCheck::Ok) && f.size >= CACHE_MIN_SIZE {
                        to_cache.push((p.clone(), f.clone()));
                    }
                    c
                }
            };
            match describe(&check) {
                None => {
                    intact.entry(f.sha256.clone()).or_insert(p);
                }
                Some((problem, detail)) => v.damaged.push(Damage {
                    path: f.path.clone(),
                    problem,
                    detail,
                    sha256: f.sha256.clone(),
                    size: f.size,
                    mode: f.mode,
                }),
            }
            base += f.size;
            progress(base, total);
        }
    }
    if let Some(c) = cache {
        // Best effort: a cache that cannot be written only costs a re-hash later.
        let refs: Vec<(PathBuf, &FileEntry)> =
            to_cache.iter().map(|(p, f)| (p.clone(), f)).collect();
        let _ = c.record_all(&refs);
    }
    HomeCheck {
        home: home.root.display().to_string(),
        damaged: versions.iter().map(|v| v.damaged.len()).sum(),
        damaged_manifests: versions
            .iter()
            .filter(|v| v.manifest_problem.is_some())
            .count(),
        versions,
        hashed_files,
        hashed_bytes,
        intact,
    }
}
