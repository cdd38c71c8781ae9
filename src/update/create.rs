//! HQ side of `create-update-pack`: given recorded releases (the new one and one or more
//! bases from the history), chooses for every file of the new release how each base
//! gets it — unchanged (copied on the site), a binary delta (when it is smaller than the
//! whole file compressed), or the whole file as a zstd frame — signs the pack manifest
//! and writes the pack tar (SPEC.md §7.1) atomically; with `volume_size`, a pack larger
//! than that is cut into parts that each verify alone (`write_parts`, SPEC.md §7.18).
//!
//! Known gaps: payloads are compressed one after the other (no parallelism); a delta is
//! tried only against the base file at the same path (or, for a renamed model or binary,
//! the base file of the same model name or platform).

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::hash::{sha256_file, sha256_hex, HashReader, HashWriter};
use crate::keys::SecretKey;
use crate::manifest::{FileEntry, FileKind, Manifest};
use crate::update::delta::{self, DeltaOptions};
use crate::update::history::{object_path, Release};
use crate::update::pack::{
    payload_entry, Copy, Encoding, From, PackManifest, Payload, BUNDLE_MANIFEST, FORMAT,
    FORMAT_PARTS, MAX_CHANGELOG, MAX_PARTS, PACK_MANIFEST, PACK_ROOTS, PACK_SIGS, RELEASE_SIGS,
};
use crate::update::parts::{cut, part_path, tar_entry_bytes, PartMarker, PART_MARKER, TAR_END};
use crate::update::{io_err, pack_sign, UpdateError};

/// What to make.
pub struct CreateOptions<'a> {
    pub hq: &'a Path,
    /// The release the pack goes to (already recorded).
    pub to: &'a Release,
    /// The releases it updates from (recorded, older than `to`).
    pub bases: &'a [Release],
    pub output: &'a Path,
    pub force: bool,
    pub keys: &'a [SecretKey],
    pub zstd_level: i32,
    /// Try binary deltas (off: whole files only).
    pub deltas: bool,
    pub delta: DeltaOptions,
    /// A chain of trust roots carried at the head of the pack (`roots/NAME` entries,
    /// SPEC.md §7.2), from [`crate::trustroot::files_of`]; empty for none.
    pub roots: &'a [(String, Vec<u8>)],
    /// Cut the pack into parts of at most this many bytes when it is larger (SPEC.md
    /// §7.18); `None`: one file.
    pub volume_size: Option<u64>,
    pub progress: crate::Progress<'a>,
}

/// How one file of the new release travels, for one base (or for all).
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    pub target: String,
    pub kind: FileKind,
    /// `unchanged`, `delta` or `zstd`.
    pub how: &'static str,
    /// The base release (delta/unchanged), absent for a zstd payload every base shares.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_release: Option<String>,
    pub file_size: u64,
    /// Bytes this part adds to the pack (0 for unchanged).
    pub payload_size: u64,
    /// Bytes saved against shipping the whole file uncompressed.
    pub saved: i64,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct CreateReport {
    pub output: String,
    pub size: u64,
    pub bundle_id: String,
    pub to: String,
    pub from: Vec<String>,
    pub parts: Vec<Part>,
    pub removed: Vec<(String, String)>,
    /// Sum of the new release's file sizes.
    pub release_bytes: u64,
    pub pack_sha256: String,
    /// The parts written, when the pack was cut (SPEC.md §7.18).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pack_parts: Vec<PartFile>,
}

struct Staged {
    payload: Payload,
    file: PathBuf,
}

fn verify_object(hq: &Path, f: &FileEntry) -> Result<PathBuf, UpdateError> {
    let p = object_path(hq, &f.sha256);
    let (n, h) = sha256_file(&p).map_err(|e| UpdateError::History {
        dir: hq.display().to_string(),
        reason: format!(
            "the stored bytes of '{}' ({}) cannot be read: {e}",
            f.path,
            p.display()
        ),
        help: "record the release again with pack-usb, or restore the history from a backup".into(),
    })?;
    if n != f.size || h != f.sha256 {
        return Err(UpdateError::History {
            dir: hq.display().to_string(),
            reason: format!(
                "the stored bytes of '{}' ({}) are damaged",
                f.path,
                p.display()
            ),
            help: "restore the history from a backup".into(),
        });
    }
    Ok(p)
}

/// The base file a delta for `f` is tried against.
fn delta_base<'m>(base: &'m Manifest, f: &FileEntry) -> Option<&'m FileEntry> {
    if let Some(b) = base.file(&f.path) {
        return Some(b);
    }
    base.files.iter().find(|b| {
        b.kind == f.kind
            && match f.kind {
                FileKind::Model => {
                    b.model.as_ref().map(|m| &m.name) == f.model.as_ref().map(|m| &m.name)
                }
                FileKind::Binary => b.platform == f.platform,
                _ => false,
            }
    })
}

/// Makes the pack (see the module doc).
pub fn create(o: &CreateOptions) -> Result<CreateReport, UpdateError> {
    let new = &o.to.manifest;
    if o.bases.is_empty() {
        return Err(UpdateError::usage_help(
            "no base release given",
            "pass --since VERSION|DATE",
        ));
    }
    for b in o.bases {
        if b.manifest.bundle_id != new.bundle_id {
            return Err(UpdateError::usage(format!(
                "base release {} is of bundle '{}', the new release of '{}'",
                b.manifest.release, b.manifest.bundle_id, new.bundle_id
            )));
        }
        if b.manifest.release >= new.release {
            return Err(UpdateError::usage_help(
                format!(
                    "base release {} is not older than the new release {}",
                    b.manifest.release, new.release
                ),
                "--since names a release the sites already run",
            ));
        }
    }
    if o.keys.is_empty() {
        return Err(UpdateError::usage_help(
            "no signing key given",
            "pass --sign-with HQ.key",
        ));
    }
    if o.to.sigs.is_empty() {
        return Err(UpdateError::History {
            dir: o.hq.display().to_string(),
            reason: format!("release {} has no recorded signatures", new.release),
            help: "record the release with pack-usb (which signs it)".into(),
        });
    }
    let out_dir = crate::fsutil::parent_dir(o.output);
    if !o.force && fs::symlink_metadata(o.output).is_ok() {
        return Err(UpdateError::Exists {
            path: o.output.display().to_string(),
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix(".offgrid-pack-")
        .tempdir_in(&out_dir)
        .map_err(io_err("create a temporary folder in", &out_dir))?;

    let total: u64 = new.files.iter().map(|f| f.size).sum::<u64>().max(1);
    let mut done = 0u64;
    let mut staged: Vec<Staged> = Vec::new();
    let mut parts = Vec::new();
    let mut froms: Vec<From> = o
        .bases
        .iter()
        .map(|b| From {
            release: b.manifest.release.clone(),
            manifest_sha256: sha256_hex(&b.manifest_bytes),
            removed: b
                .manifest
                .files
                .iter()
                .filter(|f| new.file(&f.path).is_none())
                .map(|f| f.path.clone())
                .collect(),
            copy: Vec::new(),
        })
        .collect();
    let mut verified_bases = std::collections::BTreeSet::new();

    for f in &new.files {
        // Unchanged for which bases?
        let mut need_full = false;
        let mut delta_tries = Vec::new();
        for (bi, b) in o.bases.iter().enumerate() {
            let same = b
                .manifest
                .file(&f.path)
                .filter(|x| x.sha256 == f.sha256)
                .or_else(|| {
                    b.manifest
                        .files
                        .iter()
                        .find(|x| x.sha256 == f.sha256 && x.size == f.size)
                });
            if let Some(s) = same {
                froms[bi].copy.push(Copy {
                    target: f.path.clone(),
                    base_path: s.path.clone(),
                    sha256: f.sha256.clone(),
                });
                parts.push(Part {
                    target: f.path.clone(),
                    kind: f.kind,
                    how: "unchanged",
                    base_release: Some(b.manifest.release.to_string()),
                    file_size: f.size,
                    payload_size: 0,
                    saved: f.size as i64,
                });
                continue;
            }
            match delta_base(&b.manifest, f) {
                Some(base) if o.deltas && base.size > 0 && f.size > 0 => {
                    delta_tries.push((bi, base))
                }
                _ => need_full = true,
            }
        }
        if delta_tries.is_empty() && !need_full {
            done += f.size;
            (o.progress)(done, total);
            continue;
        }
        let new_obj = object_path(o.hq, &f.sha256);
        // The whole file, compressed: needed when some base has no delta, and as the
        // yardstick a delta must beat.
        let zpath = tmp.path().join(format!("z{}", staged.len()));
        let (zsize, zsha) = {
            let src = File::open(&new_obj).map_err(io_err("open the stored file", &new_obj))?;
            let mut r = HashReader::new(BufReader::with_capacity(1 << 20, src));
            let out = File::create(&zpath).map_err(io_err("create", &zpath))?;
            let w = HashWriter::new(io::BufWriter::with_capacity(1 << 20, out), u64::MAX);
            let mut enc = zstd::stream::write::Encoder::new(w, o.zstd_level)
                .map_err(io_err("compress", &new_obj))?;
            enc.include_contentsize(true)
                .map_err(io_err("compress", &new_obj))?;
            enc.set_pledged_src_size(Some(f.size))
                .map_err(io_err("compress", &new_obj))?;
            io::copy(&mut r, &mut enc).map_err(io_err("compress", &new_obj))?;
            let mut w = enc.finish().map_err(io_err("compress", &new_obj))?;
            w.flush().map_err(io_err("write", &zpath))?;
            let (n, h) = r.digest();
            if n != f.size || h != f.sha256 {
                return Err(UpdateError::History {
                    dir: o.hq.display().to_string(),
                    reason: format!(
                        "the stored bytes of '{}' ({}) are damaged",
                        f.path,
                        new_obj.display()
                    ),
                    help: "restore the history from a backup".into(),
                });
            }
            let (_, zs, zh) = w.finish();
            (zs, zh)
        };
        let mut used_full = need_full;
        for (bi, base) in delta_tries {
            let b = &o.bases[bi];
            let base_obj = if verified_bases.insert(base.sha256.clone()) {
                verify_object(o.hq, base)?
            } else {
                object_path(o.hq, &base.sha256)
            };
            let dpath = tmp.path().join(format!("d{}-{bi}", staged.len()));
            let out = File::create(&dpath).map_err(io_err("create", &dpath))?;
            let mut w = HashWriter::new(io::BufWriter::with_capacity(1 << 20, out), u64::MAX);
            delta::create(&base_obj, &new_obj, &mut w, &o.delta).map_err(|source| {
                UpdateError::Delta {
                    path: f.path.clone(),
                    source,
                }
            })?;
            w.flush().map_err(io_err("write", &dpath))?;
            let (_, dsize, dsha) = w.finish();
            // A delta must beat the compressed whole file by a margin to be worth the
            // base check and the random reads on the site.
            if dsize < zsize.saturating_sub(zsize / 20) {
                parts.push(Part {
                    target: f.path.clone(),
                    kind: f.kind,
                    how: "delta",
                    base_release: Some(b.manifest.release.to_string()),
                    file_size: f.size,
                    payload_size: dsize,
                    saved: f.size as i64 - dsize as i64,
                });
                let i = staged.len();
                staged.push(Staged {
                    payload: Payload {
                        entry: payload_entry(i, Encoding::Delta),
                        encoding: Encoding::Delta,
                        size: dsize,
                        sha256: dsha,
                        target: f.path.clone(),
                        target_size: f.size,
                        target_sha256: f.sha256.clone(),
                        base_release: Some(b.manifest.release.clone()),
                        base_path: Some(base.path.clone()),
                        base_sha256: Some(base.sha256.clone()),
                        pieces: Vec::new(),
                    },
                    file: dpath,
                });
            } else {
                let _ = fs::remove_file(&dpath);
                used_full = true;
            }
        }
        if used_full {
            parts.push(Part {
                target: f.path.clone(),
                kind: f.kind,
                how: "zstd",
                base_release: None,
                file_size: f.size,
                payload_size: zsize,
                saved: f.size as i64 - zsize as i64,
            });
            let i = staged.len();
            staged.push(Staged {
                payload: Payload {
                    entry: payload_entry(i, Encoding::Zstd),
                    encoding: Encoding::Zstd,
                    size: zsize,
                    sha256: zsha,
                    target: f.path.clone(),
                    target_size: f.size,
                    target_sha256: f.sha256.clone(),
                    base_release: None,
                    base_path: None,
                    base_sha256: None,
                    pieces: Vec::new(),
                },
                file: zpath,
            });
        } else {
            let _ = fs::remove_file(&zpath);
        }
        done += f.size;
        (o.progress)(done, total);
    }

    let changelog = new
        .files
        .iter()
        .find(|f| f.kind == FileKind::Changelog)
        .and_then(|f| {
            let mut b = fs::read(object_path(o.hq, &f.sha256)).ok()?;
            b.truncate(MAX_CHANGELOG);
            let mut s = String::from_utf8_lossy(&b).into_owned();
            while s.len() > MAX_CHANGELOG {
                s.pop();
            }
            Some(s)
        });
    let pm = PackManifest {
        format: FORMAT.into(),
        bundle_id: new.bundle_id.clone(),
        to: new.release.clone(),
        created: crate::manifest::now_rfc3339(),
        manifest_sha256: sha256_hex(&o.to.manifest_bytes),
        manifest_size: o.to.manifest_bytes.len() as u64,
        changelog,
        parts: None,
        from: froms,
        payloads: staged.iter().map(|s| s.payload.clone()).collect(),
    };
    // Check our own output with the reader's rules before signing it.
    let internal = |e: String| {
        UpdateError::usage(format!(
            "internal error: the pack made is inconsistent: {e}"
        ))
    };
    pm.validate().map_err(internal)?;
    pm.check_against(new).map_err(internal)?;
    let pm_bytes = pm.to_toml().into_bytes();
    let sigs = sign_pack(o.keys, &pm, &pm_bytes)?;
    let mtime =
        time::OffsetDateTime::parse(&pm.created, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp().max(0) as u64)
            .unwrap_or(0);
    let whole: u64 = head_entries(o, &pm_bytes, &sigs)
        .iter()
        .map(|(n, b)| tar_entry_bytes(n, b.len() as u64))
        .chain(
            staged
                .iter()
                .map(|s| tar_entry_bytes(&s.payload.entry, s.payload.size)),
        )
        .sum::<u64>()
        + TAR_END;
    let (pm, pm_bytes, size, pack_parts) = match o.volume_size {
        Some(limit) if whole > limit => {
            let (pm, pm_bytes, files) = write_parts(o, pm, &staged, tmp.path(), mtime, limit)?;
            let size = files.iter().map(|f| f.size).sum();
            (pm, pm_bytes, size, files)
        }
        _ => {
            // Write the tar beside the output, then put it in place.
            let tar_tmp = tmp.path().join("pack.tar");
            let mut t = TarOut::create(&tar_tmp, mtime)?;
            for (n, b) in head_entries(o, &pm_bytes, &sigs) {
                t.add(&n, b.len() as u64, &mut &b[..])?;
            }
            for s in &staged {
                let mut f = File::open(&s.file).map_err(io_err("open", &s.file))?;
                t.add(&s.payload.entry, s.payload.size, &mut f)?;
            }
            let size = t.finish()?;
            place(&tar_tmp, o.output, o.force)?;
            (pm, pm_bytes, size, Vec::new())
        }
    };
    crate::fsutil::fsync_dir(&out_dir).map_err(io_err("sync", &out_dir))?;
    let mut removed = Vec::new();
    for f in &pm.from {
        for r in &f.removed {
            removed.push((f.release.to_string(), r.clone()));
        }
    }
    Ok(CreateReport {
        output: o.output.display().to_string(),
        size,
        bundle_id: new.bundle_id.clone(),
        to: new.release.to_string(),
        from: pm.from.iter().map(|f| f.release.to_string()).collect(),
        parts,
        removed,
        release_bytes: new.total_size(),
        pack_sha256: sha256_hex(&pm_bytes),
        pack_parts,
    })
}

/// The pack's signatures over `pm_bytes`, one per key (`KEYID.minisig`, text).
fn sign_pack(
    keys: &[SecretKey],
    pm: &PackManifest,
    pm_bytes: &[u8],
) -> Result<Vec<(String, String)>, UpdateError> {
    let mut sigs = Vec::new();
    for k in keys {
        let text = pack_sign::sign(k, pm, pm_bytes)
            .map_err(|e| UpdateError::usage(format!("signing the pack failed: {e}")))?;
        sigs.push((format!("{}.minisig", k.public.key_id()), text));
    }
    Ok(sigs)
}

/// The entries every pack file starts with, in order (SPEC.md §7.2 entries 0–4): the
/// trust roots, the pack manifest, its signatures, the release manifest and its
/// signatures.
fn head_entries<'b>(
    o: &'b CreateOptions,
    pm_bytes: &'b [u8],
    sigs: &'b [(String, String)],
) -> Vec<(String, &'b [u8])> {
    let mut out: Vec<(String, &[u8])> = Vec::new();
    for (n, b) in o.roots {
        out.push((format!("{PACK_ROOTS}/{n}"), b));
    }
    out.push((PACK_MANIFEST.into(), pm_bytes));
    for (n, t) in sigs {
        out.push((format!("{PACK_SIGS}/{n}"), t.as_bytes()));
    }
    out.push((BUNDLE_MANIFEST.into(), &o.to.manifest_bytes));
    for (n, t) in &o.to.sigs {
        out.push((format!("{RELEASE_SIGS}/{n}"), t.as_bytes()));
    }
    out
}

/// A pack file being written: GNU headers, regular files, mode 0644, owner 0, one mtime.
struct TarOut {
    path: PathBuf,
    tb: tar::Builder<io::BufWriter<File>>,
    mtime: u64,
}

impl TarOut {
    fn create(path: &Path, mtime: u64) -> Result<TarOut, UpdateError> {
        let file = File::create(path).map_err(io_err("create", path))?;
        Ok(TarOut {
            path: path.to_owned(),
            tb: tar::Builder::new(io::BufWriter::with_capacity(1 << 20, file)),
            mtime,
        })
    }

    fn add(&mut self, name: &str, size: u64, r: &mut dyn io::Read) -> Result<(), UpdateError> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_mtime(self.mtime);
        h.set_uid(0);
        h.set_gid(0);
        self.tb
            .append_data(&mut h, name, r)
            .map_err(io_err("write", &self.path))
    }

    /// Ends the archive, syncs it, and returns its size.
    fn finish(self) -> Result<u64, UpdateError> {
        let path = self.path;
        let w = self.tb.into_inner().map_err(io_err("write", &path))?;
        let file = w
            .into_inner()
            .map_err(|e| io_err("write", &path)(e.into_error()))?;
        file.sync_all().map_err(io_err("sync", &path))?;
        Ok(file.metadata().map_err(io_err("read", &path))?.len())
    }
}

/// Puts the finished file `tmp` at `out`, refusing (unless `force`) an output that
/// appeared meanwhile: link, then unlink.
fn place(tmp: &Path, out: &Path, force: bool) -> Result<(), UpdateError> {
    if force {
        return fs::rename(tmp, out).map_err(io_err("write", out));
    }
    let exists = || UpdateError::Exists {
        path: out.display().to_string(),
    };
    match fs::hard_link(tmp, out) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(exists()),
        Err(_) if fs::symlink_metadata(out).is_ok() => Err(exists()),
        Err(_) => fs::rename(tmp, out).map_err(io_err("write", out)),
    }
}

/// One part written (SPEC.md §7.18).
#[derive(Debug, Clone, Serialize)]
pub struct PartFile {
    pub part: u32,
    pub path: String,
    pub size: u64,
    /// Payload pieces it holds.
    pub pieces: usize,
}

/// Cuts the pack into parts of at most `limit` bytes each (SPEC.md §7.18): lays the
/// payloads out over parts with room for the head (the pack manifest's size found by
/// laying out again until it holds still), hashes each piece, signs the pack manifest
/// (format `offgrid-pack/2`), writes every part beside the output and puts them in place
/// once all are written. Returns the signed manifest, its bytes and the parts.
fn write_parts(
    o: &CreateOptions,
    mut pm: PackManifest,
    staged: &[Staged],
    tmp: &Path,
    mtime: u64,
    limit: u64,
) -> Result<(PackManifest, Vec<u8>, Vec<PartFile>), UpdateError> {
    let too_small = |why: String| {
        UpdateError::usage_help(
            format!("--volume-size {limit} is too small for this pack: {why}"),
            "use a larger --volume-size (a part holds the whole signed head, then payload bytes)",
        )
    };
    pm.format = FORMAT_PARTS.into();
    let placeholder = "0".repeat(64);
    // The head's size but for the pack manifest: signatures are as long whatever they
    // sign (same trusted comment fields, a fixed-length hash).
    let sigs = sign_pack(o.keys, &pm, pm.to_toml().as_bytes())?;
    let mut widest = PartMarker::new(&pm, &placeholder, MAX_PARTS);
    widest.parts = MAX_PARTS;
    let fixed: u64 = head_entries(o, &[], &sigs)
        .iter()
        .filter(|(n, _)| n != PACK_MANIFEST)
        .map(|(n, b)| tar_entry_bytes(n, b.len() as u64))
        .sum::<u64>()
        + tar_entry_bytes(PART_MARKER, widest.to_toml().len() as u64)
        + TAR_END;
    let mut assumed = pm.to_toml().len() as u64;
    let mut laid = false;
    for _ in 0..8 {
        let head = fixed + tar_entry_bytes(PACK_MANIFEST, assumed);
        let room = limit
            .checked_sub(head)
            .ok_or_else(|| too_small(format!("its head alone takes {head} bytes")))?;
        let (pieces, n) = cut(&pm.payloads, room).map_err(too_small)?;
        pm.parts = Some(n);
        for (p, mut cs) in pm.payloads.iter_mut().zip(pieces) {
            for c in &mut cs {
                c.sha256 = placeholder.clone();
            }
            p.pieces = cs;
        }
        let len = pm.to_toml().len() as u64;
        if tar_entry_bytes(PACK_MANIFEST, len) <= tar_entry_bytes(PACK_MANIFEST, assumed) {
            laid = true;
            break;
        }
        assumed = len + 512;
    }
    if !laid {
        return Err(UpdateError::usage(
            "internal error: the layout of the parts does not settle",
        ));
    }
    let n = pm.parts.unwrap_or(1);
    // Each piece's own sha256, so each part verifies alone.
    let mut buf = Vec::new();
    for (p, s) in pm.payloads.iter_mut().zip(staged) {
        let f = File::open(&s.file).map_err(io_err("open", &s.file))?;
        for c in &mut p.pieces {
            let d = crate::hash::hash_range(&f, c.offset, c.offset + c.size, &mut buf)
                .map_err(io_err("read", &s.file))?;
            c.sha256 = crate::hash::to_hex(&d);
        }
    }
    let internal = |e: String| {
        UpdateError::usage(format!(
            "internal error: the pack made is inconsistent: {e}"
        ))
    };
    pm.validate().map_err(internal)?;
    let pm_bytes = pm.to_toml().into_bytes();
    let sigs = sign_pack(o.keys, &pm, &pm_bytes)?;
    let pack_sha = sha256_hex(&pm_bytes);
    let outs: Vec<PathBuf> = (1..=n).map(|k| part_path(o.output, k, n)).collect();
    if !o.force {
        if let Some(p) = outs.iter().find(|p| fs::symlink_metadata(p).is_ok()) {
            return Err(UpdateError::Exists {
                path: p.display().to_string(),
            });
        }
    }
    let mut files = Vec::new();
    for k in 1..=n {
        let tmp_part = tmp.join(format!("part{k}.tar"));
        let mut t = TarOut::create(&tmp_part, mtime)?;
        for (name, b) in head_entries(o, &pm_bytes, &sigs) {
            t.add(&name, b.len() as u64, &mut &b[..])?;
        }
        let marker = PartMarker::new(&pm, &pack_sha, k).to_toml();
        t.add(PART_MARKER, marker.len() as u64, &mut marker.as_bytes())?;
        let mut pieces = 0;
        for (p, s) in pm.payloads.iter().zip(staged) {
            for (j, c) in p.pieces.iter().enumerate().filter(|(_, c)| c.part == k) {
                let mut f = File::open(&s.file).map_err(io_err("open", &s.file))?;
                f.seek(io::SeekFrom::Start(c.offset))
                    .map_err(io_err("read", &s.file))?;
                t.add(&p.piece_entry(j), c.size, &mut f.take(c.size))?;
                pieces += 1;
            }
        }
        let size = t.finish()?;
        if size > limit {
            return Err(UpdateError::usage(format!(
                "internal error: part {k} is {size} bytes, more than the {limit} allowed"
            )));
        }
        files.push((tmp_part, size, pieces));
    }
    let mut placed: Vec<PartFile> = Vec::new();
    for ((k, (tmp_part, size, pieces)), out) in (1..=n).zip(files).zip(&outs) {
        if let Err(e) = place(&tmp_part, out, o.force) {
            for p in &placed {
                let _ = fs::remove_file(&p.path);
            }
            return Err(e);
        }
        placed.push(PartFile {
            part: k,
            path: out.display().to_string(),
            size,
            pieces,
        });
    }
    Ok((pm, pm_bytes, placed))
}
