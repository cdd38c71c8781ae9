//! A release laid out over several volumes, and files stored in parts (SPEC.md §16.6,
//! §16.7): [`plan_layout`] decides which volume holds each file and which files are cut
//! into parts; [`pack_set`] signs the manifest, then writes the volumes one at a time
//! (each destination given, or asked for once the previous volume is switched), each
//! with the same signed manifest and its `volume.toml`.
//!
//! Layout: models (whole or llama.cpp shards, never parts) go first-fit by decreasing
//! size; then every other file too large for the file limit or for a volume is cut into
//! parts at multiples of its chunk size, filling the space left on each volume in turn
//! and opening new volumes as needed. Each file counts as whole 4 KiB blocks; each volume
//! keeps room for the manifest, signatures and marker (an estimate from the plan).
//! Known gaps: every input is read twice (hashed to sign the manifest first, then
//! copied and compared), and shards and generated files are written to a scratch folder
//! at HQ first; a set cut short cannot be resumed (it is packed again); the checks for foreign files in the way of a volume are those of
//! [`super::pack::inspect_dest`] only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::hash;
use crate::keys::SecretKey;
use crate::manifest::{self, Manifest, Part};
use crate::paths;
use crate::sign;
use crate::volume::{self, Marker, VolumeError};
use crate::Progress;

use super::layout::{Source, TreePlan, STAGING_DIR};
use super::pack::{check_inputs_outside, inspect_dest, lock_dest, set_mode, PackOptions};
use super::{io_err, PackError};

/// Accounting unit of a file on a volume.
const BLOCK: u64 = 4096;
/// Smallest chunk a parted file uses (the manifest's minimum).
const MIN_PART_CHUNK: u64 = manifest::MIN_CHUNK_SIZE;

/// Where one planned file goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLayout {
    /// Its volume when whole (1 for a single tree).
    pub volume: u32,
    /// Chunk size of its manifest entry.
    pub chunk_size: u64,
    /// `(stored path, offset, size, volume)` of each part; empty when whole.
    pub parts: Vec<(String, u64, u64, u32)>,
}

/// The layout of a planned tree on its media.
#[derive(Debug, Clone)]
pub struct VolumePlan {
    /// `Some(N)` for a release spread over volumes (`--volume-size`), `None` for one tree.
    pub volumes: Option<u32>,
    /// One per file of the plan, in its order.
    pub files: Vec<FileLayout>,
    /// Bytes of files each volume may hold (after the room kept for the head).
    pub capacity: Option<u64>,
}

impl VolumePlan {
    /// How many destinations the layout needs.
    pub fn count(&self) -> u32 {
        self.volumes.unwrap_or(1)
    }

    /// True when the plan needs more than the ordinary single tree: parts or volumes.
    pub fn is_needed(&self) -> bool {
        self.volumes.is_some() || self.files.iter().any(|f| !f.parts.is_empty())
    }

    /// `(stored path, file index, offset, size)` of every piece on volume `k`.
    pub fn pieces_on(&self, plan: &TreePlan, k: u32) -> Vec<(String, usize, u64, u64)> {
        let mut out = Vec::new();
        for (i, (f, l)) in plan.files.iter().zip(&self.files).enumerate() {
            if l.parts.is_empty() {
                if l.volume == k {
                    out.push((f.path.clone(), i, 0, f.size));
                }
            } else {
                for (p, off, size, v) in &l.parts {
                    if *v == k {
                        out.push((p.clone(), i, *off, *size));
                    }
                }
            }
        }
        out
    }

    /// Bytes stored on volume `k`.
    pub fn bytes_on(&self, plan: &TreePlan, k: u32) -> u64 {
        self.pieces_on(plan, k).iter().map(|p| p.3).sum()
    }
}

fn blocks(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// The chunk size of a file cut into parts no larger than `limit`: the largest power of
/// two from 64 KiB to 4 MiB that is at most an eighth of the limit.
fn part_chunk(limit: u64) -> u64 {
    let mut c = manifest::DEFAULT_CHUNK_SIZE;
    while c > MIN_PART_CHUNK && c > limit / 8 {
        c /= 2;
    }
    c
}

/// Bytes each volume keeps for `manifest.toml`, the signatures and `volume.toml`: an
/// estimate of the manifest from the plan (every chunk digest, every part), doubled.
pub fn head_reserve(plan: &TreePlan, signers: usize, smallest_chunk: u64) -> u64 {
    let mut m: u64 = 1024;
    for f in &plan.files {
        let chunks = f.size.div_ceil(smallest_chunk.max(1)) + 1;
        m += 400 + 3 * f.path.len() as u64 + 70 * chunks;
        m += (f.size / smallest_chunk.max(1) + 2).min(chunks) * (80 + f.path.len() as u64);
    }
    2 * m + 1024 * signers as u64 + 1024
}

/// Lays `plan` out: `file_limit` is the medium's per-file limit, `volume_size` the bytes
/// one volume holds (`--volume-size`), `signers` how many signatures each volume carries.
pub fn plan_layout(
    plan: &TreePlan,
    file_limit: Option<u64>,
    volume_size: Option<u64>,
    signers: usize,
) -> Result<VolumePlan, VolumeError> {
    let capacity = match volume_size {
        Some(v) => {
            let smallest = part_chunk(file_limit.unwrap_or(v).min(v));
            let reserve = head_reserve(plan, signers, smallest);
            let cap = v.saturating_sub(reserve);
            if cap < 2 * MIN_PART_CHUNK {
                return Err(VolumeError::Plan(format!(
                    "a volume of {v} bytes leaves {cap} bytes for files once its manifest and signatures ({reserve} bytes) are counted"
                )));
            }
            Some(cap)
        }
        None => None,
    };
    let piece_limit = match (file_limit, capacity) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let n_files = plan.files.len();
    let mut out: Vec<FileLayout> = plan
        .files
        .iter()
        .map(|_| FileLayout {
            volume: 1,
            chunk_size: manifest::DEFAULT_CHUNK_SIZE,
            parts: Vec::new(),
        })
        .collect();
    let parted: Vec<usize> = (0..n_files)
        .filter(|&i| {
            let f = &plan.files[i];
            f.kind.can_be_parted()
                && (file_limit.is_some_and(|l| f.size > l)
                    || capacity.is_some_and(|c| blocks(f.size) > c))
        })
        .collect();
    let cap = capacity.unwrap_or(u64::MAX);
    // Whole files: first fit, largest first.
    let mut free: Vec<u64> = vec![cap];
    let mut whole: Vec<usize> = (0..n_files).filter(|i| !parted.contains(i)).collect();
    whole.sort_by_key(|&i| std::cmp::Reverse(plan.files[i].size));
    for i in whole {
        let f = &plan.files[i];
        let need = blocks(f.size);
        if need > cap {
            return Err(VolumeError::Plan(format!(
                "'{}' is {} bytes, more than a volume holds ({cap} bytes for files)",
                f.path, f.size
            )));
        }
        let v = match free.iter().position(|&room| room >= need) {
            Some(v) => v,
            None => {
                free.push(cap);
                free.len() - 1
            }
        };
        free[v] -= need;
        out[i].volume = v as u32 + 1;
    }
    // Files in parts: the space left, volume by volume.
    for &i in &parted {
        let f = &plan.files[i];
        let limit = piece_limit.unwrap_or(u64::MAX);
        let cs = part_chunk(limit);
        if limit < cs {
            return Err(VolumeError::Plan(format!(
                "'{}' would be cut into parts of at most {limit} bytes, less than the {cs}-byte chunk a part is made of",
                f.path
            )));
        }
        out[i].chunk_size = cs;
        let mut pieces: Vec<(u64, u64, u32)> = Vec::new();
        let mut offset = 0u64;
        let mut v = 0usize;
        while offset < f.size {
            if v == free.len() {
                free.push(cap);
            }
            let rest = f.size - offset;
            let room = free[v].min(limit);
            let take = if blocks(rest) <= free[v] && rest <= limit {
                rest
            } else {
                room / cs * cs
            };
            if take == 0 {
                v += 1;
                continue;
            }
            pieces.push((offset, take, v as u32 + 1));
            free[v] -= blocks(take);
            offset += take;
        }
        let n = pieces.len();
        out[i].parts = pieces
            .into_iter()
            .enumerate()
            .map(|(k, (off, size, vol))| (volume::part_name(&f.path, k + 1, n), off, size, vol))
            .collect();
        out[i].volume = 0;
    }
    Ok(VolumePlan {
        volumes: volume_size.map(|_| free.len() as u32),
        files: out,
        capacity,
    })
}

/// The largest model shard for a release spread over volumes of `volume_size` bytes on a
/// medium with `file_limit`: what a volume holds once its head is counted.
pub fn model_limit(
    plan: &TreePlan,
    file_limit: Option<u64>,
    volume_size: u64,
    signers: usize,
) -> u64 {
    let l = file_limit.unwrap_or(volume_size).min(volume_size);
    let r = head_reserve(plan, signers, part_chunk(l));
    l.min(volume_size.saturating_sub(r)) / BLOCK * BLOCK
}

/// What [`pack_set`] wrote.
#[derive(Debug, Clone)]
pub struct SetReport {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    /// `(key id, .minisig text)` per signer.
    pub signatures: Vec<(String, String)>,
    /// `(destination, files, bytes)` per volume, in volume order.
    pub volumes: Vec<(PathBuf, usize, u64)>,
    /// `(bundle path, file holding its bytes whole)` of every file, for the HQ history:
    /// the input, or its copy in the scratch folder (shards, generated files), never a
    /// volume (which may be ejected by then).
    pub sources: Vec<(String, PathBuf)>,
}

/// Asked for the folder of volume `k` of `n` (holding `bytes`) when no destination was
/// given for it, the medium of volume `k - 1` being written and switched; `refused` is
/// why the previous answer was refused. `None`: the operator gave up.
pub type AskDest<'a> = &'a mut dyn FnMut(u32, u32, u64, Option<&PackError>) -> Option<PathBuf>;

/// Where the volumes go: `dests` one per volume in order (the first ones), `ask` for the
/// others; `scratch` an empty folder (at HQ, on the history's file system) that holds
/// the bytes of files with no input file (shards, generated files) until the release is
/// recorded.
pub struct SetTargets<'a> {
    pub dests: &'a [PathBuf],
    pub ask: AskDest<'a>,
    pub scratch: &'a Path,
}

/// A destination locked for one volume.
struct Claim {
    dest: PathBuf,
    lock: crate::lockfile::FileLock,
    /// The folder was created for this volume (removed again if it is not written).
    made: bool,
    /// The tree being replaced, as stored there.
    old: Option<Manifest>,
}

impl Claim {
    fn release(self, written: bool) {
        let _ = self.lock.remove();
        if self.made && !written {
            let _ = fs::remove_dir(&self.dest);
        }
    }
}

/// Writes `plan` laid out as `layout`, one volume at a time (SPEC.md §16.6): every input
/// is hashed first (shards and generated files written to the scratch folder) and the
/// manifest signed; then each volume's destination is locked and checked, its pieces
/// staged in `DEST/.offgrid-staging/`, compared with the signed digests, and switched as
/// `pack-usb` switches a tree, `volume.toml` written before the manifest. The given
/// destinations are all locked and checked before the first byte is written; a volume
/// asked for is checked when it is given (a refusal asks again). A failure after volume
/// `k` leaves volumes 1..k complete, each valid on its own.
pub fn pack_set(
    plan: &TreePlan,
    layout: &VolumePlan,
    keys: &[SecretKey],
    targets: SetTargets<'_>,
    opts: &PackOptions,
    progress: Progress,
) -> Result<SetReport, PackError> {
    if keys.is_empty() {
        return Err(PackError::NoSigner);
    }
    let n = layout.count();
    let given = &targets.dests[..targets.dests.len().min(n as usize)];
    let mut claims: Vec<Claim> = Vec::new();
    for (k, d) in given.iter().enumerate() {
        match claim(plan, layout, d, k as u32 + 1, None, opts) {
            Ok(c) => claims.push(c),
            Err(e) => {
                for c in claims {
                    c.release(false);
                }
                return Err(e);
            }
        }
    }
    let mut claims = claims.into_iter();
    let signed = match sign_set(plan, layout, keys, targets.scratch, progress) {
        Ok(s) => s,
        Err(e) => {
            for c in claims {
                c.release(false);
            }
            return Err(e);
        }
    };
    let total = plan.total_size();
    let mut done = total;
    let mut vols = Vec::new();
    for vol in 1..=n {
        let c = match claims.next() {
            Some(c) => c,
            None => {
                let bytes = layout.bytes_on(plan, vol);
                let mut refused = None;
                loop {
                    let Some(d) = (targets.ask)(vol, n, bytes, refused.as_ref()) else {
                        return Err(PackError::SetIncomplete {
                            bundle_id: plan.bundle_id.clone(),
                            release: plan.release.to_string(),
                            written: vol - 1,
                            volumes: n,
                        });
                    };
                    match claim(plan, layout, &d, vol, Some(&signed.sha), opts) {
                        Ok(c) => break c,
                        Err(e) => refused = Some(e),
                    }
                }
            }
        };
        let r = write_volume(plan, layout, &signed, vol, &c, &mut done, progress);
        let ok = r.is_ok();
        let dest = c.dest.clone();
        c.release(ok);
        if let Err(e) = r {
            for c in claims {
                c.release(false);
            }
            return Err(e);
        }
        let pieces = layout.pieces_on(plan, vol);
        vols.push((dest, pieces.len(), pieces.iter().map(|p| p.3).sum::<u64>()));
    }
    Ok(SetReport {
        manifest: signed.manifest,
        manifest_bytes: signed.bytes,
        signatures: signed.sigs,
        volumes: vols,
        sources: plan
            .files
            .iter()
            .map(|f| f.path.clone())
            .zip(signed.sources)
            .collect(),
    })
}

/// Creates (when missing), locks and checks the destination of volume `vol`: what it
/// holds (`inspect_dest`), no input inside it, its free space, and (once the manifest
/// is signed, `sha`) that it does not still hold another volume of this very set.
fn claim(
    plan: &TreePlan,
    layout: &VolumePlan,
    d: &Path,
    vol: u32,
    sha: Option<&str>,
    opts: &PackOptions,
) -> Result<Claim, PackError> {
    let made = match fs::metadata(d) {
        Ok(m) if !m.is_dir() => {
            return Err(PackError::DestIsFile {
                path: d.display().to_string(),
            })
        }
        Ok(_) => false,
        Err(_) => {
            fs::create_dir_all(d).map_err(io_err("create destination", d))?;
            true
        }
    };
    let lock = match lock_dest(d, "pack-usb") {
        Ok(l) => l,
        Err(e) => {
            if made {
                let _ = fs::remove_dir(d);
            }
            return Err(e);
        }
    };
    let c = Claim {
        dest: d.to_path_buf(),
        lock,
        made,
        old: None,
    };
    let checked = (|| {
        if let (Some(sha), Ok(Some(mk))) = (sha, volume::read_marker(d)) {
            if mk.manifest_sha256 == sha && mk.volume != vol {
                return Err(PackError::NotSwapped {
                    dest: d.display().to_string(),
                    held: mk.volume,
                    volume: vol,
                });
            }
        }
        let state = inspect_dest(d, &plan.bundle_id, &plan.release, opts.force)?;
        check_inputs_outside(plan, d)?;
        let need = layout.bytes_on(plan, vol);
        if let Some(free) = crate::media::free_bytes(d) {
            if free < need {
                return Err(PackError::NoSpace {
                    dest: d.display().to_string(),
                    need,
                    free,
                });
            }
        }
        // The old tree as stored on this medium (its parts, on its volume).
        Ok(state.old.map(|o| volume::as_stored_at(d, o)))
    })();
    match checked {
        Ok(old) => Ok(Claim { old, ..c }),
        Err(e) => {
            c.release(false);
            Err(e)
        }
    }
}

/// The signed head of a set, and where each file's bytes are read from.
struct SignedSet {
    manifest: Manifest,
    bytes: Vec<u8>,
    sha: String,
    sigs: Vec<(String, String)>,
    /// Per planned file: the file holding its bytes whole.
    sources: Vec<PathBuf>,
}

/// Hashes every file of the plan (first half of the progress), builds the manifest with
/// the layout's volumes and parts, and signs it. Files with no input file are written to
/// `scratch` and hashed there.
fn sign_set(
    plan: &TreePlan,
    layout: &VolumePlan,
    keys: &[SecretKey],
    scratch: &Path,
    progress: Progress,
) -> Result<SignedSet, PackError> {
    let total = plan.total_size();
    let mut done = 0u64;
    let mut entries = Vec::with_capacity(plan.files.len());
    let mut sources = Vec::with_capacity(plan.files.len());
    for (i, (f, l)) in plan.files.iter().zip(&layout.files).enumerate() {
        let src = match &f.source {
            Source::File(src) => src.clone(),
            Source::Shard { .. } | Source::Bytes(_) => {
                let p = scratch.join(format!("{i}"));
                let r = match &f.source {
                    Source::Bytes(bytes) => crate::fsutil::create_new(&p)
                        .and_then(|mut out| out.write_all(bytes).and_then(|_| out.sync_all())),
                    _ => f.source.write_shard(&p).unwrap_or(Ok(0)).map(|_| ()),
                };
                r.map_err(io_err("write", &p))?;
                p
            }
        };
        let base = done;
        let each = |d: u64, _t: u64| progress(base + d, 2 * total.max(base + d));
        let d = hash::hash_file(&src, l.chunk_size, &each)?;
        done += f.size;
        let mut e = f.entry(d);
        if l.parts.is_empty() {
            e.volume = layout.volumes.map(|_| l.volume);
        } else {
            e.parts = l
                .parts
                .iter()
                .map(|(p, off, size, v)| Part {
                    path: p.clone(),
                    offset: *off,
                    size: *size,
                    volume: layout.volumes.map(|_| *v),
                })
                .collect();
        }
        entries.push(e);
        sources.push(src);
    }
    let mut m = plan.manifest(entries);
    m.volumes = layout.volumes;
    m.format = m.needed_format().to_owned();
    m.validate()?;
    let bytes = m.to_toml().into_bytes();
    let mut sigs = Vec::with_capacity(keys.len());
    for k in keys {
        sigs.push((k.public.key_id(), sign::sign_manifest(k, &m, &bytes)?));
    }
    let sha = hash::sha256_hex(&bytes);
    Ok(SignedSet {
        manifest: m,
        bytes,
        sha,
        sigs,
        sources,
    })
}

/// Stages volume `vol` in its destination, compares every piece with the signed
/// digests, and switches it (second half of the progress, `done` of `2 * total`).
fn write_volume(
    plan: &TreePlan,
    layout: &VolumePlan,
    s: &SignedSet,
    vol: u32,
    c: &Claim,
    done: &mut u64,
    progress: Progress,
) -> Result<(), PackError> {
    let staging = c.dest.join(STAGING_DIR);
    let r = (|| {
        match fs::symlink_metadata(&staging) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(&staging).map_err(io_err("remove", &staging))?
            }
            Ok(_) => fs::remove_file(&staging).map_err(io_err("remove", &staging))?,
            Err(_) => {}
        }
        fs::create_dir(&staging).map_err(io_err("create staging folder", &staging))?;
        let total = 2 * plan.total_size();
        let pieces = layout.pieces_on(plan, vol);
        for (path, i, offset, size) in &pieces {
            let (f, l, e) = (&plan.files[*i], &layout.files[*i], &s.manifest.files[*i]);
            let src = &s.sources[*i];
            let dst = paths::join(&staging, path);
            let parent = crate::fsutil::parent_dir(&dst);
            fs::create_dir_all(&parent).map_err(io_err("create folder", &parent))?;
            let base = *done;
            let each = |d: u64, _t: u64| progress(base + d, total.max(base + d));
            let same = if l.parts.is_empty() {
                let d = hash::copy_and_hash(src, &dst, l.chunk_size, &each)?;
                set_mode(&dst, f.mode);
                d.sha256 == e.sha256 && d.chunks == e.chunks
            } else {
                let chunks = hash::copy_range_and_hash(src, *offset, *size, &dst, l.chunk_size)?;
                set_mode(&dst, Some(super::layout::MODE_DATA));
                let first = (*offset / l.chunk_size) as usize;
                e.chunks.get(first..first + chunks.len()) == Some(&chunks[..])
            };
            if !same {
                return Err(PackError::InputRead {
                    what: format!("payload '{}'", f.path),
                    path: src.display().to_string(),
                    source: std::io::Error::other("it changed while it was being packed"),
                });
            }
            *done += size;
            progress(*done, total);
        }
        crate::fsutil::fsync_dir(&staging).map_err(io_err("sync", &staging))?;
        let paths_on: Vec<&str> = pieces.iter().map(|p| p.0.as_str()).collect();
        let marker = Marker::new(&s.manifest, &s.sha, vol).to_toml();
        super::pack::flip(
            &paths_on,
            &[],
            &c.dest,
            &staging,
            c.old.as_ref(),
            &s.bytes,
            &s.sigs,
            Some(marker.as_bytes()),
        )
    })();
    let _ = fs::remove_dir_all(&staging);
    r
}
