//! Verification of a USB tree: signatures over the manifest against a trust policy
//! first, then every file's size and chunk hashes in parallel; missing files fail,
//! extra files are reported. Produces a structured report the CLI prints as text or JSON.
//!
//! Order (SPEC.md §5): read `manifest.toml` and the signatures (bounded), check the
//! signatures over the exact bytes, and only then parse the manifest and bind the trusted
//! comments to it — all in [`crate::signed`], the one head reader; only when the
//! signatures hold, look at the files: stat each one (missing, not a regular file, wrong size), then hash every chunk
//! of every file in one parallel pass over all of them (so one big model uses every
//! core), then walk the tree for files the manifest does not name. The whole-file sha256
//! is not recomputed: the chunk digests cover every byte up to the signed size, and the
//! signature covers them (SPEC.md §5 argues it).
//!
//! Known gaps: a tree on a case-insensitive file system holding `README.TXT` where the
//! manifest says `README.txt` verifies (the bytes are right) but the walk also reports
//! `README.TXT` as an extra; non-UTF-8 names of extra files are reported lossily.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;
use sha2::Digest;

use crate::hash;
use crate::manifest::{self, FileEntry, FileKind, Manifest};
use crate::paths;
use crate::signed::{self, HeadError};
use crate::trust::{SignatureReport, TrustPolicy};
use crate::Progress;

pub use crate::signed::{MAX_SIGNATURES, MAX_SIGNATURE_BYTES};
/// Most extra files listed one by one in a report (the rest are only counted).
pub const MAX_EXTRAS_LISTED: usize = 1000;

/// Names that operating systems drop onto USB sticks by themselves; the walk for extra
/// files skips them, at any depth (SPEC.md §5).
pub const IGNORED_NAMES: &[&str] = &[
    "System Volume Information",
    "$RECYCLE.BIN",
    ".Trashes",
    ".fseventsd",
    ".Spotlight-V100",
    ".TemporaryItems",
    ".DS_Store",
    "desktop.ini",
    "Thumbs.db",
];

/// True when the walk for extra files skips `name` (OS junk, see [`IGNORED_NAMES`];
/// also macOS `._*` resource-fork files).
pub fn is_ignored_name(name: &str) -> bool {
    name.starts_with("._") || IGNORED_NAMES.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Options of [`verify_tree`].
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Do not walk the tree for files the manifest does not name.
    pub skip_extras: bool,
}

pub use crate::signed::{signers_of, SignedManifest, Signer};

/// One chunk whose digest does not match the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadChunk {
    pub index: u64,
    /// Byte range `[start, end)` of the chunk.
    pub start: u64,
    pub end: u64,
    /// The signed sha256 of the chunk.
    pub expected: String,
    /// The sha256 of the bytes found, or `None` when they could not be read.
    pub found: Option<String>,
    /// The read error, when the chunk could not be read (a failing stick: EIO).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What was found where the manifest names a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum FileStatus {
    /// Every chunk matches.
    Ok,
    /// Nothing at that path.
    Missing,
    /// Something other than a regular file: `found` is `directory`, `symlink`, `other`,
    /// or `symlinked folder 'a/b'` when a folder on the way is a link.
    NotAFile { expected: String, found: String },
    /// A regular file of the wrong size (no byte was hashed).
    SizeMismatch { expected: u64, found: u64 },
    /// Chunks whose digest differs, or could not be read; `ranges` merges their bytes.
    Damaged {
        ranges: Vec<(u64, u64)>,
        chunks: Vec<BadChunk>,
    },
    /// The file exists but could not be opened (permissions, I/O error).
    Unreadable { error: String },
}

/// One manifest file and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    pub path: String,
    pub kind: FileKind,
    /// Size the manifest gives.
    pub size: u64,
    #[serde(flatten)]
    pub status: FileStatus,
}

impl FileReport {
    pub fn is_ok(&self) -> bool {
        self.status == FileStatus::Ok
    }

    /// One human sentence saying what is wrong (empty for a good file).
    pub fn problem(&self) -> String {
        let p = &self.path;
        match &self.status {
            FileStatus::Ok => String::new(),
            FileStatus::Missing => format!(
                "'{p}': missing (the signed manifest lists {} bytes)",
                self.size
            ),
            FileStatus::NotAFile { found, .. } => {
                format!("'{p}': expected a regular file, found a {found}")
            }
            FileStatus::SizeMismatch { expected, found } => format!(
                "'{p}': size is {found} bytes, the signed manifest says {expected}{}",
                if found < expected {
                    " (truncated?)"
                } else {
                    ""
                }
            ),
            FileStatus::Unreadable { error } => format!("'{p}': cannot be read: {error}"),
            FileStatus::Damaged { ranges, chunks } => {
                let r: Vec<String> = ranges.iter().map(|(s, e)| format!("{s}..{e}")).collect();
                let shown: Vec<String> = chunks
                    .iter()
                    .take(3)
                    .map(|c| match (&c.found, &c.error) {
                        (Some(f), _) => format!(
                            "chunk {}: expected sha256 {}…, found {}…",
                            c.index,
                            short(&c.expected),
                            short(f)
                        ),
                        (None, e) => format!(
                            "chunk {}: expected sha256 {}…, unreadable: {}",
                            c.index,
                            short(&c.expected),
                            e.as_deref().unwrap_or("read error")
                        ),
                    })
                    .collect();
                let more = if chunks.len() > 3 {
                    format!("; and {} more chunk(s)", chunks.len() - 3)
                } else {
                    String::new()
                };
                format!(
                    "'{p}': bytes {} differ from the signed manifest ({}{more})",
                    r.join(", "),
                    shown.join("; ")
                )
            }
        }
    }
}

fn short(h: &str) -> &str {
    h.get(..16).unwrap_or(h)
}

/// A file or folder in the tree that the manifest does not name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extra {
    pub path: String,
    /// `file`, `directory`, `symlink` or `other`. A directory is listed once, not its
    /// contents.
    pub kind: &'static str,
}

/// The outcome of verifying a tree whose signatures held.
#[derive(Debug, Clone, Serialize)]
pub struct TreeReport {
    pub root: PathBuf,
    pub bundle_id: String,
    pub release: String,
    /// sha256 of the manifest bytes the signatures cover.
    pub manifest_sha256: String,
    /// Every signature file and its fate.
    pub signatures: Vec<SignatureReport>,
    /// Trusted signers whose valid signatures counted.
    pub signers: Vec<Signer>,
    /// One per manifest file, in manifest order.
    pub files: Vec<FileReport>,
    /// Files not in the manifest (reported, never a failure), up to [`MAX_EXTRAS_LISTED`].
    pub extras: Vec<Extra>,
    /// Number of extras found, including those not listed.
    pub extras_total: usize,
    /// Sum of the manifest's file sizes (of this volume's pieces, for a volume).
    pub total_bytes: u64,
    /// For a volume, or a tree holding parts (SPEC.md §16.6): which one it is and what
    /// the other volumes hold.
    pub volume: Option<VolumeReport>,
}

/// Which volume a tree is, and the stored paths on each other volume.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeReport {
    pub volume: u32,
    pub volumes: u32,
    /// `(volume, stored paths)` of every other volume, in volume order.
    pub elsewhere: Vec<(u32, Vec<String>)>,
}

impl TreeReport {
    /// True when every manifest file is present and intact.
    pub fn verified(&self) -> bool {
        self.files.iter().all(FileReport::is_ok)
    }

    /// The files that failed.
    pub fn failures(&self) -> impl Iterator<Item = &FileReport> {
        self.files.iter().filter(|f| !f.is_ok())
    }
}

/// Why verification could not complete or did not pass.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The signed head could not be read or is not trusted ([`crate::signed`]).
    #[error(transparent)]
    Head(#[from] HeadError),
    #[error("{}", failed_message(report))]
    Failed { report: Box<TreeReport> },
    /// A volume marker that does not fit the signed manifest (SPEC.md §16.6).
    #[error(transparent)]
    Volume(Box<crate::volume::VolumeError>),
}

fn failed_message(r: &TreeReport) -> String {
    let bad: Vec<&FileReport> = r.failures().collect();
    let mut s = format!(
        "'{}' failed verification: {} of {} files do not match the signed manifest",
        r.root.display(),
        bad.len(),
        r.files.len()
    );
    for f in &bad {
        s.push_str("\n  ");
        s.push_str(&f.problem());
    }
    s
}

impl VerifyError {
    /// True for a clean "no" (exit 1) rather than an error.
    pub fn is_refusal(&self) -> bool {
        match self {
            VerifyError::Head(h) => h.is_refusal(),
            VerifyError::Failed { .. } => true,
            VerifyError::Volume(v) => v.is_refusal(),
        }
    }

    /// The tree report, when the signatures held but files failed.
    pub fn report(&self) -> Option<&TreeReport> {
        match self {
            VerifyError::Failed { report } => Some(report),
            _ => None,
        }
    }

    /// The signature reports, when the trust policy was evaluated.
    pub fn signatures(&self) -> &[SignatureReport] {
        match self {
            VerifyError::Failed { report } => &report.signatures,
            VerifyError::Head(h) => h.signatures(),
            VerifyError::Volume(_) => &[],
        }
    }
}

/// Reads `ROOT/manifest.toml` and `ROOT/signatures/*.minisig` and evaluates the trust
/// policy over them, signatures before parsing ([`crate::signed::read_trusted`]).
pub fn read_signed_manifest(
    root: &Path,
    policy: &TrustPolicy,
) -> Result<SignedManifest, VerifyError> {
    Ok(signed::read_trusted(root, policy)?)
}

/// What the stat pass found for one file.
enum Found {
    Final(FileStatus),
    /// A regular file of the right size: its chunks are to be hashed.
    Candidate,
}

fn kind_name(t: &fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_symlink() {
        "symlink"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    }
}

/// Stats one manifest file without following links anywhere on its path.
fn stat_file(root: &Path, entry: &FileEntry) -> Found {
    // Every folder on the way must be a real folder: a linked folder could point outside.
    let comps: Vec<&str> = entry.path.split('/').collect();
    let mut p = root.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        p.push(c);
        let last = i + 1 == comps.len();
        let m = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Found::Final(FileStatus::Missing)
            }
            Err(e) if !last && e.kind() == io::ErrorKind::NotADirectory => {
                return Found::Final(FileStatus::Missing)
            }
            Err(e) => {
                return Found::Final(FileStatus::Unreadable {
                    error: e.to_string(),
                })
            }
        };
        let t = m.file_type();
        if !last {
            if t.is_symlink() {
                return Found::Final(FileStatus::NotAFile {
                    expected: "file".into(),
                    found: format!("symlinked folder '{}'", comps[..=i].join("/")),
                });
            }
            if !t.is_dir() {
                return Found::Final(FileStatus::Missing);
            }
            continue;
        }
        if !t.is_file() {
            return Found::Final(FileStatus::NotAFile {
                expected: "file".into(),
                found: kind_name(&t).into(),
            });
        }
        if m.len() != entry.size {
            return Found::Final(FileStatus::SizeMismatch {
                expected: entry.size,
                found: m.len(),
            });
        }
    }
    Found::Candidate
}

/// One chunk to hash: file index in the manifest, chunk index.
struct Job {
    file: usize,
    chunk: u64,
}

/// Hashes every chunk of the candidate files in one parallel pass; returns the bad chunks
/// per file, or a file-level status when the file could not be opened.
fn check_chunks(
    root: &Path,
    m: &Manifest,
    candidates: &[usize],
    progress: Progress,
) -> Vec<(usize, Result<Vec<BadChunk>, String>)> {
    let total: u64 = candidates.iter().map(|&i| m.files[i].size).sum();
    let done = AtomicU64::new(0);
    progress(0, total);
    // Open each candidate once; chunks of one file are then read in parallel with
    // positional reads. Files are opened lazily in batches to bound open descriptors.
    const BATCH: usize = 256;
    let mut out = Vec::with_capacity(candidates.len());
    for batch in candidates.chunks(BATCH) {
        let opened: Vec<Result<File, String>> = batch
            .iter()
            .map(|&i| {
                let p = paths::join(root, &m.files[i].path);
                let f = hash::open_no_follow(&p).map_err(|e| e.to_string())?;
                match f.metadata() {
                    Ok(md) if md.is_file() && md.len() == m.files[i].size => Ok(f),
                    Ok(md) if md.is_file() => Err(format!(
                        "its size changed to {} bytes during verification",
                        md.len()
                    )),
                    Ok(_) => Err("it is no longer a regular file".into()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .collect();
        let jobs: Vec<Job> = batch
            .iter()
            .enumerate()
            .filter(|(k, _)| opened[*k].is_ok())
            .flat_map(|(k, &i)| {
                (0..m.files[i].chunks.len() as u64).map(move |c| Job { file: k, chunk: c })
            })
            .collect();
        let bad: Vec<(usize, BadChunk)> = jobs
            .par_iter()
            .map_init(hash::range_buffer, |buf, job| {
                let entry = &m.files[batch[job.file]];
                let Ok(file) = &opened[job.file] else {
                    return None;
                };
                let (s, e) = hash::chunk_range(entry, job.chunk);
                let expected = &entry.chunks[job.chunk as usize];
                let r = hash::hash_range(file, s, e, buf);
                let d = done.fetch_add(e - s, Ordering::Relaxed) + (e - s);
                progress(d, total);
                let bad = |found: Option<String>, error: Option<String>| BadChunk {
                    index: job.chunk,
                    start: s,
                    end: e,
                    expected: expected.clone(),
                    found,
                    error,
                };
                match r {
                    Ok(got) => {
                        let got = hash::to_hex(&got);
                        (got != *expected).then(|| (job.file, bad(Some(got), None)))
                    }
                    Err(err) => Some((job.file, bad(None, Some(err.to_string())))),
                }
            })
            .flatten()
            .collect();
        let mut per: Vec<Vec<BadChunk>> = vec![Vec::new(); batch.len()];
        for (k, c) in bad {
            per[k].push(c);
        }
        for (k, (o, mut chunks)) in opened.into_iter().zip(per).enumerate() {
            chunks.sort_by_key(|c| c.index);
            out.push((batch[k], o.map(|_| chunks)));
        }
    }
    out
}

/// Walks the tree for entries the manifest does not name (see [`is_ignored_name`]).
fn find_extras(root: &Path, m: &Manifest) -> (Vec<Extra>, usize) {
    use std::collections::HashSet;
    let files: HashSet<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    // Every folder on the way to a manifest file ("a", "a/b" for "a/b/c").
    let mut dirs: HashSet<&str> = m.dirs.iter().map(|d| d.path.as_str()).collect();
    for f in m
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(m.dirs.iter().map(|d| d.path.as_str()))
    {
        let mut p = f;
        while let Some((parent, _)) = p.rsplit_once('/') {
            dirs.insert(parent);
            p = parent;
        }
    }
    let mut extras = Vec::new();
    let mut total = 0usize;
    let mut it = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter();
    while let Some(entry) = it.next() {
        let entry = match entry {
            Ok(e) => e,
            Err(_) => continue,
        };
        let rel = match entry.path().strip_prefix(root) {
            Ok(r) => r,
            Err(_) => continue,
        };
        let rel: String = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let name = entry.file_name().to_string_lossy();
        let t = entry.file_type();
        if (entry.depth() == 1
            && (rel == manifest::MANIFEST_FILE
                || rel == manifest::SIGNATURES_DIR
                || rel == crate::volume::MARKER_FILE))
            || is_ignored_name(&name)
        {
            if t.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if files.contains(rel.as_str()) {
            // Expected: a folder here is reported by the file check, not walked into.
            if t.is_dir() {
                it.skip_current_dir();
            }
            continue;
        }
        if t.is_dir() && dirs.contains(rel.as_str()) {
            continue;
        }
        if t.is_dir() {
            it.skip_current_dir();
        }
        total += 1;
        if extras.len() < MAX_EXTRAS_LISTED {
            extras.push(Extra {
                path: rel,
                kind: kind_name(&t),
            });
        }
    }
    (extras, total)
}

/// Verifies the tree at `root` against `policy` (SPEC.md §5). Ok when the signatures hold
/// and every file is intact (extras may be present: see [`TreeReport::extras`]);
/// `VerifyError::Failed` carrying the full report when a file is not.
pub fn verify_tree(
    root: &Path,
    policy: &TrustPolicy,
    opts: &VerifyOptions,
    progress: Progress,
) -> Result<TreeReport, VerifyError> {
    let signed = read_signed_manifest(root, policy)?;
    let manifest_sha256 = hash::to_hex(&sha2::Sha256::digest(&signed.bytes));
    // A volume (or a tree holding parts) is checked as stored: its pieces, each against
    // its slice of the file's signed chunk digests (SPEC.md §16.6, §16.7).
    let marker = crate::volume::read_marker(root).map_err(|e| VerifyError::Volume(Box::new(e)))?;
    let (view, volume) = match &marker {
        Some(mk) => {
            mk.check(root, &signed.manifest, &manifest_sha256)
                .map_err(|e| VerifyError::Volume(Box::new(e)))?;
            let elsewhere = crate::volume::contents(&signed.manifest)
                .into_iter()
                .filter(|(k, _)| *k != mk.volume)
                .collect();
            (
                signed.manifest.stored_view(Some(mk.volume)),
                Some(VolumeReport {
                    volume: mk.volume,
                    volumes: mk.volumes,
                    elsewhere,
                }),
            )
        }
        None => (signed.manifest.clone(), None),
    };
    let m = &view;
    // Signatures hold: now, and only now, look at the payload.
    let mut statuses: Vec<Option<FileStatus>> = Vec::with_capacity(m.files.len());
    let mut candidates = Vec::new();
    for (i, f) in m.files.iter().enumerate() {
        match stat_file(root, f) {
            Found::Final(s) => statuses.push(Some(s)),
            Found::Candidate => {
                statuses.push(None);
                candidates.push(i);
            }
        }
    }
    for (i, r) in check_chunks(root, m, &candidates, progress) {
        statuses[i] = Some(match r {
            Ok(chunks) if chunks.is_empty() => FileStatus::Ok,
            Ok(chunks) => FileStatus::Damaged {
                ranges: hash::merge_ranges(chunks.iter().map(|c| (c.start, c.end)).collect()),
                chunks,
            },
            Err(error) => FileStatus::Unreadable { error },
        });
    }
    let files: Vec<FileReport> = m
        .files
        .iter()
        .zip(statuses)
        .map(|(f, s)| FileReport {
            path: f.path.clone(),
            kind: f.kind,
            size: f.size,
            status: s.unwrap_or(FileStatus::Unreadable {
                error: "not checked".into(),
            }),
        })
        .collect();
    let (extras, extras_total) = if opts.skip_extras {
        (Vec::new(), 0)
    } else {
        find_extras(root, m)
    };
    let report = TreeReport {
        root: root.to_path_buf(),
        bundle_id: m.bundle_id.clone(),
        release: m.release.as_str().to_owned(),
        manifest_sha256,
        signatures: signed.signatures,
        signers: signed.signers,
        total_bytes: m.total_size(),
        files,
        extras,
        extras_total,
        volume,
    };
    if report.verified() {
        Ok(report)
    } else {
        Err(VerifyError::Failed {
            report: Box::new(report),
        })
    }
}

impl crate::diagnostic::Diagnostic for VerifyError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            VerifyError::Head(e) => crate::diagnostic::Diagnostic::help(e),
            VerifyError::Volume(e) => crate::diagnostic::Diagnostic::help(e.as_ref()),
            VerifyError::Failed { .. } => Some(
                "the stick was damaged or tampered with; copy the tree again from HQ or from a verified stick".into(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_os_junk_only() {
        for n in [
            ".DS_Store",
            "._model.gguf",
            "System Volume Information",
            "$RECYCLE.BIN",
            ".Trashes",
        ] {
            assert!(is_ignored_name(n), "{n}");
        }
        for n in ["model.gguf", "_x", ".hidden", "System"] {
            assert!(!is_ignored_name(n), "{n}");
        }
    }

    #[test]
    fn damaged_problem_names_range_and_chunk() {
        let f = FileReport {
            path: "models/x.gguf".into(),
            kind: FileKind::Model,
            size: 3 << 22,
            status: FileStatus::Damaged {
                ranges: vec![(4194304, 8388608)],
                chunks: vec![BadChunk {
                    index: 1,
                    start: 4194304,
                    end: 8388608,
                    expected: "ab".repeat(32),
                    found: Some("cd".repeat(32)),
                    error: None,
                }],
            },
        };
        assert_eq!(
            f.problem(),
            "'models/x.gguf': bytes 4194304..8388608 differ from the signed manifest (chunk 1: expected sha256 abababababababab…, found cdcdcdcdcdcdcdcd…)"
        );
    }
}
