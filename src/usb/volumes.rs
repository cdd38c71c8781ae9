//! A release laid out over several volumes, and files stored in parts (SPEC.md §16.6,
//! §16.7): [`plan_layout`] decides which volume holds each file and which files are cut
//! into parts; [`pack_set`] writes every volume (one destination each) with the same
//! signed manifest and its `volume.toml`.
//!
//! Layout: models (whole or llama.cpp shards, never parts) go first-fit by decreasing
//! size; then every other file too large for the file limit or for a volume is cut into
//! parts at multiples of its chunk size, filling the space left on each volume in turn
//! and opening new volumes as needed. Each file counts as whole 4 KiB blocks; each volume
//! keeps room for the manifest, signatures and marker (an estimate from the plan).
//! Known gaps: every destination is needed before writing starts (a terminal prompt
//! asks for the missing ones first; there is no "write volume 1, swap, write volume 2");
//! a parted file is read twice (its parts, then the whole file's sha256, which must
//! agree); the checks for foreign files in the way of a volume are those of
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
use super::pack::{inspect_dest, lock_dest, set_mode, PackOptions};
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
    /// `(bundle path, file holding its bytes whole)` of every file: a volume's copy, or
    /// the input of a file stored in parts (for the HQ history).
    pub sources: Vec<(String, PathBuf)>,
}

/// Writes `plan` laid out as `layout` onto `dests` (one per volume), each volume staged
/// in `DEST/.offgrid-staging/` and switched as `pack-usb` switches a tree, its
/// `volume.toml` written before its manifest. Every destination is locked and checked
/// before the first byte is written.
pub fn pack_set(
    plan: &TreePlan,
    layout: &VolumePlan,
    keys: &[SecretKey],
    dests: &[PathBuf],
    opts: &PackOptions,
    progress: Progress,
) -> Result<SetReport, PackError> {
    if keys.is_empty() {
        return Err(PackError::NoSigner);
    }
    let n = layout.count();
    if dests.len() < n as usize {
        return Err(VolumeError::TooFewDests {
            needed: n,
            given: dests.len(),
        }
        .into());
    }
    let mut made = Vec::new();
    let mut locks = Vec::new();
    let r = (|| {
        for d in &dests[..n as usize] {
            match fs::metadata(d) {
                Ok(m) if !m.is_dir() => {
                    return Err(PackError::DestIsFile {
                        path: d.display().to_string(),
                    })
                }
                Ok(_) => {}
                Err(_) => {
                    fs::create_dir_all(d).map_err(io_err("create destination", d))?;
                    made.push(d.clone());
                }
            }
            locks.push(lock_dest(d, "pack-usb")?);
        }
        pack_locked(plan, layout, keys, &dests[..n as usize], opts, progress)
    })();
    for l in locks {
        let _ = l.remove();
    }
    if r.is_err() {
        for d in made {
            let _ = fs::remove_dir(d);
        }
    }
    r
}

fn pack_locked(
    plan: &TreePlan,
    layout: &VolumePlan,
    keys: &[SecretKey],
    dests: &[PathBuf],
    opts: &PackOptions,
    progress: Progress,
) -> Result<SetReport, PackError> {
    let mut olds = Vec::new();
    for (k, d) in dests.iter().enumerate() {
        let state = inspect_dest(d, &plan.bundle_id, &plan.release, opts.force)?;
        let root = fs::canonicalize(d).map_err(io_err("resolve", d))?;
        for f in &plan.files {
            if let Some(src) = f.source.input() {
                let c = fs::canonicalize(src).map_err(io_err("resolve", src))?;
                if c.starts_with(&root) {
                    return Err(PackError::InputInsideDest {
                        path: src.display().to_string(),
                        dest: d.display().to_string(),
                    });
                }
            }
        }
        let need = layout.bytes_on(plan, k as u32 + 1);
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
        let old = state.old.map(|o| volume::as_stored_at(d, o));
        olds.push(old);
    }
    let stagings: Vec<PathBuf> = dests.iter().map(|d| d.join(STAGING_DIR)).collect();
    let r = stage_and_flip(plan, layout, keys, dests, &stagings, &olds, progress);
    for s in &stagings {
        let _ = fs::remove_dir_all(s);
    }
    r
}

#[allow(clippy::too_many_arguments)]
fn stage_and_flip(
    plan: &TreePlan,
    layout: &VolumePlan,
    keys: &[SecretKey],
    dests: &[PathBuf],
    stagings: &[PathBuf],
    olds: &[Option<Manifest>],
    progress: Progress,
) -> Result<SetReport, PackError> {
    let total: u64 = plan.total_size();
    let mut done = 0u64;
    let nf = plan.files.len();
    let mut whole: Vec<Option<hash::Digests>> = vec![None; nf];
    let mut part_chunks: Vec<Vec<Vec<String>>> = layout
        .files
        .iter()
        .map(|l| vec![Vec::new(); l.parts.len()])
        .collect();
    for (k, staging) in stagings.iter().enumerate() {
        let vol = k as u32 + 1;
        match fs::symlink_metadata(staging) {
            Ok(m) if m.is_dir() => {
                fs::remove_dir_all(staging).map_err(io_err("remove", staging))?
            }
            Ok(_) => fs::remove_file(staging).map_err(io_err("remove", staging))?,
            Err(_) => {}
        }
        fs::create_dir(staging).map_err(io_err("create staging folder", staging))?;
        for (path, i, offset, size) in layout.pieces_on(plan, vol) {
            let f = &plan.files[i];
            let l = &layout.files[i];
            let dst = paths::join(staging, &path);
            let parent = crate::fsutil::parent_dir(&dst);
            fs::create_dir_all(&parent).map_err(io_err("create folder", &parent))?;
            let base = done;
            let each = |d: u64, _t: u64| progress(base + d, total.max(base + d));
            if l.parts.is_empty() {
                let digests = match &f.source {
                    Source::File(src) => hash::copy_and_hash(src, &dst, l.chunk_size, &each)?,
                    Source::Shard { .. } => {
                        if let Some(r) = f.source.write_shard(&dst) {
                            r.map_err(io_err("write", &dst))?;
                        }
                        hash::hash_file(&dst, l.chunk_size, &each)?
                    }
                    Source::Bytes(bytes) => {
                        let mut out =
                            crate::fsutil::create_new(&dst).map_err(io_err("create", &dst))?;
                        out.write_all(bytes)
                            .and_then(|_| out.sync_all())
                            .map_err(io_err("write", &dst))?;
                        hash::hash_bytes(bytes, l.chunk_size)
                    }
                };
                set_mode(&dst, f.mode);
                whole[i] = Some(digests);
            } else {
                let Source::File(src) = &f.source else {
                    return Err(PackError::Media(crate::media::MediaError::BadSize {
                        what: "a part",
                        value: f.path.clone(),
                        reason: "only files read from disk are cut into parts".into(),
                    }));
                };
                let chunks = hash::copy_range_and_hash(src, offset, size, &dst, l.chunk_size)?;
                set_mode(&dst, Some(super::layout::MODE_DATA));
                let j = l.parts.iter().position(|p| p.0 == path).unwrap_or_default();
                part_chunks[i][j] = chunks;
            }
            done += size;
            progress(done, total);
        }
        crate::fsutil::fsync_dir(staging).map_err(io_err("sync", staging))?;
    }
    // Files in parts: the whole file's digests, which must agree with its parts.
    let mut entries = Vec::with_capacity(nf);
    let mut sources = Vec::with_capacity(nf);
    for (i, f) in plan.files.iter().enumerate() {
        let l = &layout.files[i];
        let mut e = if l.parts.is_empty() {
            let d = whole[i].take().ok_or_else(|| {
                PackError::Media(crate::media::MediaError::BadSize {
                    what: "a file",
                    value: f.path.clone(),
                    reason: "it was not staged".into(),
                })
            })?;
            sources.push((
                f.path.clone(),
                paths::join(&dests[l.volume as usize - 1], &f.path),
            ));
            f.entry(d)
        } else {
            let src = f.source.input().unwrap_or(Path::new(""));
            let d = hash::hash_file(src, l.chunk_size, &crate::no_progress)?;
            let joined: Vec<String> = part_chunks[i].concat();
            if joined != d.chunks {
                return Err(PackError::InputRead {
                    what: format!("payload '{}'", f.path),
                    path: src.display().to_string(),
                    source: std::io::Error::other("it changed while it was being packed"),
                });
            }
            sources.push((f.path.clone(), src.to_path_buf()));
            let mut e = f.entry(d);
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
            e
        };
        if l.parts.is_empty() && layout.volumes.is_some() {
            e.volume = Some(l.volume);
        }
        entries.push(e);
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
    let mut vols = Vec::new();
    for (k, d) in dests.iter().enumerate() {
        let vol = k as u32 + 1;
        let pieces = layout.pieces_on(plan, vol);
        let paths_on: Vec<&str> = pieces.iter().map(|p| p.0.as_str()).collect();
        let marker = Marker::new(&m, &sha, vol).to_toml();
        super::pack::flip(
            &paths_on,
            &[],
            d,
            &stagings[k],
            olds[k].as_ref(),
            &bytes,
            &sigs,
            Some(marker.as_bytes()),
        )?;
        vols.push((
            d.clone(),
            pieces.len(),
            pieces.iter().map(|p| p.3).sum::<u64>(),
        ));
    }
    Ok(SetReport {
        manifest: m,
        manifest_bytes: bytes,
        signatures: sigs,
        volumes: vols,
        sources,
    })
}
