//! The HQ release history: every release HQ ships (by `pack-usb` or
//! `create-update-pack`) is recorded with its signed manifest, and every released file's
//! bytes go into a content-addressed store, so a later update pack can be diffed against
//! exactly what a site has.
//!
//! Layout under the history dir (`--history`, `OFFGRID_HQ`, default `~/.offgrid-hq`):
//! `releases/BUNDLE_ID/VERSION/manifest.toml`, `releases/BUNDLE_ID/VERSION/signatures/*.minisig`,
//! `objects/AA/SHA256` (AA = first two hex digits). Objects are hard-linked from the
//! source when the file system allows, else copied; either way their bytes are hashed
//! against the manifest on the way in, and again before they are used as a delta base.
//! Known gap: no garbage collection of objects of forgotten releases.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::hash::{copy_checked, sha256_file};
use crate::manifest::Manifest;
use crate::update::{io_err, UpdateError};
use crate::version::Version;

/// The environment variable naming the history dir.
pub const ENV: &str = "OFFGRID_HQ";

/// One recorded release.
#[derive(Debug, Clone)]
pub struct Release {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    /// `(file name, .minisig text)` of the release's signatures.
    pub sigs: Vec<(String, String)>,
}

/// What [`record`] did.
#[derive(Debug, Clone, Default)]
pub struct RecordReport {
    /// Files newly stored (not already in the store).
    pub stored: usize,
    /// Bytes newly stored.
    pub stored_bytes: u64,
    /// Files stored as hard links (no extra space).
    pub linked: usize,
    /// True when this exact release was already recorded.
    pub already: bool,
    /// sha256 of an earlier, different manifest of the same version, now superseded.
    pub superseded: Option<String>,
}

/// The history dir: `flag`, else `OFFGRID_HQ`, else `~/.offgrid-hq`.
pub fn resolve_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    home_dir().join(".offgrid-hq")
}

pub(crate) fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn herr(dir: &Path, reason: impl Into<String>, help: impl Into<String>) -> UpdateError {
    UpdateError::History {
        dir: dir.display().to_string(),
        reason: reason.into(),
        help: help.into(),
    }
}

/// Where the store keeps the object with this sha256.
pub fn object_path(hq: &Path, sha256: &str) -> PathBuf {
    hq.join("objects").join(&sha256[..2]).join(sha256)
}

fn release_dir(hq: &Path, bundle_id: &str, version: &Version) -> PathBuf {
    hq.join("releases").join(bundle_id).join(version.as_str())
}

/// Records a release: stores every file (`(bundle path, source file)`) in the
/// content-addressed store, checking each against the manifest, then writes the
/// manifest and signatures under `releases/` (atomically, by renaming a finished
/// folder into place). Recording the same release twice is a no-op; recording a
/// different manifest under an existing version is refused.
pub fn record(
    hq: &Path,
    manifest_bytes: &[u8],
    sigs: &[(String, String)],
    files: &[(String, PathBuf)],
) -> Result<RecordReport, UpdateError> {
    let manifest = Manifest::parse(manifest_bytes).map_err(|e| {
        herr(
            hq,
            format!("the manifest to record is invalid: {e}"),
            "this is a bug in the caller",
        )
    })?;
    let mut report = RecordReport::default();
    let dir = release_dir(hq, &manifest.bundle_id, &manifest.release);
    if let Ok(existing) = fs::read(dir.join(crate::manifest::MANIFEST_FILE)) {
        if existing == manifest_bytes {
            report.already = true;
            return Ok(report);
        }
        // The same version packed again (pack-usb re-run): the newest recording wins;
        // the earlier one is kept aside. Sites that installed the earlier bytes are
        // protected by apply's check of the base manifest's sha256.
        report.superseded = Some(crate::hash::sha256_hex(&existing));
    }
    for f in &manifest.files {
        let src = files
            .iter()
            .find(|(p, _)| *p == f.path)
            .map(|(_, s)| s)
            .ok_or_else(|| {
                herr(
                    hq,
                    format!("no source file given for '{}'", f.path),
                    "this is a bug in the caller",
                )
            })?;
        store_object(hq, src, f.size, &f.sha256, &mut report)?;
    }
    let parent = dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| hq.to_path_buf());
    fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".recording-")
        .tempdir_in(&parent)
        .map_err(io_err("create a folder in", &parent))?;
    let tp = tmp.path();
    crate::fsutil::atomic_write(&tp.join(crate::manifest::MANIFEST_FILE), manifest_bytes)
        .map_err(io_err("write", tp))?;
    let sd = tp.join(crate::manifest::SIGNATURES_DIR);
    fs::create_dir(&sd).map_err(io_err("create", &sd))?;
    for (name, text) in sigs {
        check_sig_name(name).map_err(|r| herr(hq, r, "this is a bug in the caller"))?;
        crate::fsutil::atomic_write(&sd.join(name), text.as_bytes())
            .map_err(io_err("write", &sd))?;
    }
    crate::fsutil::fsync_dir(tp).map_err(io_err("sync", tp))?;
    let tmp_path = tmp.keep();
    let mut attempt = 0;
    loop {
        match fs::rename(&tmp_path, &dir) {
            Ok(()) => break,
            Err(e) if dir.exists() && attempt < 5 => {
                // Move the earlier recording aside (another recorder may race us).
                let _ = e;
                attempt += 1;
                let mut b = [0u8; 4];
                let _ = getrandom::getrandom(&mut b);
                let aside = parent.join(format!(
                    ".superseded-{}-{}",
                    manifest.release,
                    hex::encode(b)
                ));
                let _ = fs::rename(&dir, aside);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp_path);
                return Err(io_err("create", &dir)(e));
            }
        }
    }
    crate::fsutil::fsync_dir(&parent).map_err(io_err("sync", &parent))?;
    Ok(report)
}

/// Records a USB tree whose files sit at their bundle paths under `root` (what
/// `pack-usb` wrote).
pub fn record_tree(
    hq: &Path,
    manifest_bytes: &[u8],
    sigs: &[(String, String)],
    root: &Path,
) -> Result<RecordReport, UpdateError> {
    let manifest = Manifest::parse(manifest_bytes).map_err(|e| {
        herr(
            hq,
            format!("the manifest to record is invalid: {e}"),
            "this is a bug in the caller",
        )
    })?;
    let files: Vec<(String, PathBuf)> = manifest
        .files
        .iter()
        .map(|f| (f.path.clone(), crate::paths::join(root, &f.path)))
        .collect();
    record(hq, manifest_bytes, sigs, &files)
}

/// Records what `pack-usb` just wrote: the tree at `root`, its manifest bytes and its
/// signatures as `(key id, .minisig text)`; `hq_flag` is `--history` (else `OFFGRID_HQ`,
/// else `~/.offgrid-hq`). Returns the history dir used.
pub fn record_pack_usb(
    hq_flag: Option<&Path>,
    manifest_bytes: &[u8],
    key_sigs: &[(String, String)],
    root: &Path,
) -> Result<PathBuf, UpdateError> {
    let hq = resolve_dir(hq_flag);
    let sigs: Vec<(String, String)> = key_sigs
        .iter()
        .map(|(id, t)| (format!("{id}.minisig"), t.clone()))
        .collect();
    record_tree(&hq, manifest_bytes, &sigs, root)?;
    Ok(hq)
}

/// A signature file name: `NAME.minisig` (pack-usb writes `KEYID.minisig`), at most 80
/// bytes of `[A-Za-z0-9._-]`, not starting with a dot.
pub(crate) fn check_sig_name(name: &str) -> Result<(), String> {
    let ok = name.len() <= 80
        && !name.starts_with('.')
        && name.strip_suffix(".minisig").is_some_and(|s| !s.is_empty())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "signature file name '{name}' is not NAME.minisig (letters, digits, '.', '_', '-')"
        ))
    }
}

fn store_object(
    hq: &Path,
    src: &Path,
    size: u64,
    sha256: &str,
    report: &mut RecordReport,
) -> Result<(), UpdateError> {
    let obj = object_path(hq, sha256);
    if fs::metadata(&obj).is_ok_and(|m| m.len() == size) {
        return Ok(());
    }
    let dir = crate::fsutil::parent_dir(&obj);
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let tmp = dir.join(format!(".in-{}-{}", std::process::id(), &sha256[..16]));
    let _ = fs::remove_file(&tmp);
    let mismatch = |actual: String| {
        herr(
            hq,
            format!(
                "'{}' does not match its manifest entry (got {actual}, expected sha256 {sha256}, {size} bytes)",
                src.display()
            ),
            "the file changed after it was packed; pack the release again",
        )
    };
    if fs::hard_link(src, &tmp).is_ok() {
        let (n, h) = sha256_file(&tmp).map_err(io_err("read", src))?;
        if n != size || h != sha256 {
            let _ = fs::remove_file(&tmp);
            return Err(mismatch(h));
        }
        report.linked += 1;
    } else {
        match copy_checked(src, &tmp, size, sha256, Some(0o444), true)
            .map_err(io_err("copy", src))?
        {
            Ok(()) => {}
            Err(actual) => return Err(mismatch(actual)),
        }
        report.stored_bytes += size;
    }
    fs::rename(&tmp, &obj).map_err(io_err("store", &obj))?;
    crate::fsutil::fsync_dir(&dir).map_err(io_err("sync", &dir))?;
    report.stored += 1;
    Ok(())
}

/// Every recorded release of `bundle_id`, oldest first.
pub fn releases(hq: &Path, bundle_id: &str) -> Result<Vec<Release>, UpdateError> {
    let dir = hq.join("releases").join(bundle_id);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &dir)(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err("read", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Ok(v) = name.parse::<Version>() {
            out.push(load(hq, bundle_id, &v)?);
        }
    }
    out.sort_by(|a, b| a.manifest.release.cmp(&b.manifest.release));
    Ok(out)
}

/// Every bundle id with at least one recorded release.
pub fn bundle_ids(hq: &Path) -> Result<Vec<String>, UpdateError> {
    let dir = hq.join("releases");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &dir)(e)),
    };
    let mut ids: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Loads one recorded release.
pub fn load(hq: &Path, bundle_id: &str, version: &Version) -> Result<Release, UpdateError> {
    let dir = release_dir(hq, bundle_id, version);
    let mp = dir.join(crate::manifest::MANIFEST_FILE);
    let manifest_bytes = match fs::read(&mp) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(herr(
                hq,
                format!("release {version} of '{bundle_id}' is not recorded"),
                known_help(hq, bundle_id),
            ))
        }
        Err(e) => return Err(io_err("read", &mp)(e)),
    };
    let manifest = Manifest::parse(&manifest_bytes).map_err(|e| {
        herr(
            hq,
            format!("'{}': {e}", mp.display()),
            "the history was damaged; restore it from a backup",
        )
    })?;
    let mut sigs = Vec::new();
    let sd = dir.join(crate::manifest::SIGNATURES_DIR);
    if let Ok(rd) = fs::read_dir(&sd) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if check_sig_name(&name).is_ok() {
                let text = fs::read_to_string(e.path()).map_err(io_err("read", &e.path()))?;
                sigs.push((name, text));
            }
        }
    }
    sigs.sort();
    Ok(Release {
        manifest,
        manifest_bytes,
        sigs,
    })
}

fn known_help(hq: &Path, bundle_id: &str) -> String {
    let known: Vec<String> = releases(hq, bundle_id)
        .unwrap_or_default()
        .iter()
        .map(|r| format!("{} ({})", r.manifest.release, r.manifest.created))
        .collect();
    if known.is_empty() {
        format!(
            "no release of '{bundle_id}' is recorded in '{}'; pack-usb and create-update-pack record every release they write (check --history / OFFGRID_HQ)",
            hq.display()
        )
    } else {
        format!("recorded releases: {}", known.join(", "))
    }
}

/// Resolves `--since`: a release version, or a date (`YYYY-MM-DD`, meaning the end of
/// that UTC day, or an RFC 3339 time) naming the newest release created at or before it
/// and older than `below` (the release the pack goes to, when known).
pub fn resolve_since(
    hq: &Path,
    bundle_id: &str,
    since: &str,
    below: Option<&Version>,
) -> Result<Release, UpdateError> {
    if let Ok(v) = since.parse::<Version>() {
        return load(hq, bundle_id, &v);
    }
    let limit = parse_date(since).ok_or_else(|| {
        UpdateError::usage_help(
            format!("--since '{since}' is neither a release version (1.4.0) nor a date (2026-11-21 or 2026-11-21T12:00:00Z)"),
            known_help(hq, bundle_id),
        )
    })?;
    let rfc = time::format_description::well_known::Rfc3339;
    let mut best: Option<Release> = None;
    for r in releases(hq, bundle_id)? {
        let Ok(t) = time::OffsetDateTime::parse(&r.manifest.created, &rfc) else {
            continue;
        };
        if t <= limit
            && below.is_none_or(|b| r.manifest.release < *b)
            && best
                .as_ref()
                .is_none_or(|b| r.manifest.release > b.manifest.release)
        {
            best = Some(r);
        }
    }
    best.ok_or_else(|| {
        herr(
            hq,
            format!("no release of '{bundle_id}' was created at or before {since}"),
            known_help(hq, bundle_id),
        )
    })
}

fn parse_date(s: &str) -> Option<time::OffsetDateTime> {
    let rfc = time::format_description::well_known::Rfc3339;
    if let Ok(t) = time::OffsetDateTime::parse(s, &rfc) {
        return Some(t);
    }
    let d = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()?;
    Some(d.with_time(time::macros::time!(23:59:59)).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse() {
        assert!(parse_date("2026-11-21").is_some());
        assert!(parse_date("2026-11-21T12:00:00Z").is_some());
        assert!(parse_date("yesterday").is_none());
    }

    #[test]
    fn sig_names() {
        assert!(check_sig_name("0123456789ABCDEF.minisig").is_ok());
        assert!(check_sig_name("../x.minisig").is_err());
        assert!(check_sig_name(".minisig").is_err());
        assert!(check_sig_name("hq.minisig").is_ok());
    }
}
