//! HQ's view of its sites (SPEC.md §17.3): importing receipts into the HQ history
//! (`sites/SITEID/`), enrolling site keys, the fleet table, and the set of releases the
//! fleet runs (for `create-update-pack --for-fleet`).
//!
//! Unknown site keys are trusted on first use: the first receipt of a site brings its
//! key (`SITEID.pub` beside it), which is recorded as `first-use` and shown as such by
//! `fleet` until HQ confirms it (`receipts enrol`). `--enrolled-only` refuses them.
//! Once a site's key is recorded, only that key's receipts count for it.
//!
//! Known gap: only the newest receipt of a site is kept (older ones are history the
//! newest already carries).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;
use crate::site::receipt::{check_file, Receipt, RECEIPTS_DIR};
use crate::site::{io_err, SiteError};
use crate::version::Version;

/// The folder of the sites in the HQ history.
pub const SITES_DIR: &str = "sites";

/// `sites/SITEID/site.json`: a site HQ knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    pub site_id: String,
    /// The site key line (`RW…`).
    pub key: String,
    /// `enrolled` (HQ confirmed the key) or `first-use` (taken from the first receipt).
    pub trust: String,
    /// When HQ recorded the key (HQ's clock).
    pub since: String,
    /// When HQ last imported a receipt of this site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<String>,
}

/// What happened to one receipt file on import.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub file: String,
    pub site_id: String,
    pub release: String,
    pub sequence: u64,
    /// `new` (the site's first receipt), `updated`, `unchanged` (already imported) or
    /// `older` (HQ holds a newer receipt of this site; kept as it was).
    pub outcome: &'static str,
    /// `enrolled` or `first-use`.
    pub trust: String,
}

/// The result of an import: receipts taken and receipts refused `(file, reason)`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ImportReport {
    pub imported: Vec<Imported>,
    pub refused: Vec<(String, String)>,
}

fn site_dir(hq: &Path, id: &str) -> PathBuf {
    hq.join(SITES_DIR).join(id)
}

fn is_site_id(s: &str) -> bool {
    s.len() == 16
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

fn read_record(hq: &Path, id: &str) -> Result<Option<SiteRecord>, SiteError> {
    let p = site_dir(hq, id).join("site.json");
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &p)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| SiteError::Fleet {
            hq: hq.display().to_string(),
            reason: format!("'{}' is not valid: {e}", p.display()),
            help: "restore the HQ history from a backup, or remove that site's folder and import again",
        })
}

fn write_record(hq: &Path, r: &SiteRecord) -> Result<(), SiteError> {
    let d = site_dir(hq, &r.site_id);
    std::fs::create_dir_all(&d).map_err(io_err("create", &d))?;
    let p = d.join("site.json");
    let mut text = serde_json::to_string_pretty(r).unwrap_or_default();
    text.push('\n');
    crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))
}

fn record_key(r: &SiteRecord, hq: &Path) -> Result<PublicKey, SiteError> {
    PublicKey::from_base64(&r.key).map_err(|_| SiteError::Fleet {
        hq: hq.display().to_string(),
        reason: format!("the recorded key of site {} is not a key", r.site_id),
        help: "enrol the site's key again: offgrid receipts enrol SITE.pub",
    })
}

/// Enrols a site key (HQ confirms it, e.g. read aloud by its fingerprint). Returns the
/// record; a site recorded on first use with the same key becomes `enrolled`.
pub fn enrol(hq: &Path, pubkey: &Path) -> Result<SiteRecord, SiteError> {
    let pk = PublicKey::load(pubkey).map_err(|source| SiteError::Key {
        home: pubkey.display().to_string(),
        source,
    })?;
    let id = crate::site::site_id(&pk);
    let rec = match read_record(hq, &id)? {
        Some(r) if r.key != pk.to_base64() => {
            return Err(SiteError::Fleet {
                hq: hq.display().to_string(),
                reason: format!("site {id} is recorded with another key of the same key id"),
                help: "check the key with the site; remove 'sites/SITEID' to forget the old one",
            })
        }
        Some(mut r) => {
            r.trust = "enrolled".into();
            r
        }
        None => SiteRecord {
            site_id: id,
            key: pk.to_base64(),
            trust: "enrolled".into(),
            since: crate::manifest::now_rfc3339(),
            imported: None,
        },
    };
    write_record(hq, &rec)?;
    Ok(rec)
}

/// Imports every receipt in `dir` (a stick's root holding `receipts/`, or that folder).
pub fn import(hq: &Path, dir: &Path, enrolled_only: bool) -> Result<ImportReport, SiteError> {
    let folder = if dir.join(RECEIPTS_DIR).is_dir() {
        dir.join(RECEIPTS_DIR)
    } else {
        dir.to_path_buf()
    };
    let rd = std::fs::read_dir(&folder).map_err(|e| SiteError::BadTarget {
        path: folder.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_stem()
                    .is_some_and(|s| is_site_id(&s.to_string_lossy()))
        })
        .collect();
    files.sort();
    let mut report = ImportReport::default();
    for f in files {
        match import_one(hq, &f, enrolled_only) {
            Ok(i) => report.imported.push(i),
            Err(e) => report
                .refused
                .push((f.display().to_string(), e.to_string())),
        }
    }
    Ok(report)
}

fn import_one(hq: &Path, file: &Path, enrolled_only: bool) -> Result<Imported, SiteError> {
    let id = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let known = read_record(hq, &id)?;
    let (pk, mut rec) = match known {
        Some(r) => (record_key(&r, hq)?, r),
        None if enrolled_only => {
            return Err(SiteError::Unknown {
                path: file.display().to_string(),
                site: id,
            })
        }
        None => {
            let kp = file.with_file_name(format!("{id}.pub"));
            let pk = PublicKey::load(&kp).map_err(|e| SiteError::Receipt {
                path: file.display().to_string(),
                reason: format!("site {id} is new and its key cannot be read: {e}"),
                help: "copy the site's SITEID.pub beside its receipt, or enrol it: offgrid receipts enrol SITE.pub",
            })?;
            if crate::site::site_id(&pk) != id {
                return Err(SiteError::Receipt {
                    path: file.display().to_string(),
                    reason: format!(
                        "'{}' is the key of site {}, not of {id}",
                        kp.display(),
                        pk.key_id()
                    ),
                    help: "the receipts folder was mixed up; have the site write a fresh receipt",
                });
            }
            let rec = SiteRecord {
                site_id: id.clone(),
                key: pk.to_base64(),
                trust: "first-use".into(),
                since: crate::manifest::now_rfc3339(),
                imported: None,
            };
            (pk, rec)
        }
    };
    let (r, bytes) = check_file(file, &pk)?;
    let held = newest_receipt(hq, &rec)?;
    let outcome = match &held {
        None => "new",
        Some((old, old_bytes)) if old.sequence == r.sequence && *old_bytes == bytes => "unchanged",
        Some((old, _)) if old.sequence >= r.sequence => "older",
        Some(_) => "updated",
    };
    if outcome == "new" || outcome == "updated" {
        let d = site_dir(hq, &id);
        std::fs::create_dir_all(&d).map_err(io_err("create", &d))?;
        let sig = std::fs::read(PathBuf::from(format!("{}.minisig", file.display())))
            .map_err(io_err("read", file))?;
        let (tp, sp) = (d.join("receipt.toml"), d.join("receipt.toml.minisig"));
        crate::fsutil::atomic_write(&tp, &bytes).map_err(io_err("write", &tp))?;
        crate::fsutil::atomic_write(&sp, &sig).map_err(io_err("write", &sp))?;
        rec.imported = Some(crate::manifest::now_rfc3339());
        write_record(hq, &rec)?;
    }
    Ok(Imported {
        file: file.display().to_string(),
        site_id: id,
        release: r.release,
        sequence: r.sequence,
        outcome,
        trust: rec.trust,
    })
}

/// The receipt HQ holds for a site, checked again against its recorded key.
fn newest_receipt(hq: &Path, rec: &SiteRecord) -> Result<Option<(Receipt, Vec<u8>)>, SiteError> {
    let p = site_dir(hq, &rec.site_id).join("receipt.toml");
    if !p.exists() {
        return Ok(None);
    }
    check_file(&p, &record_key(rec, hq)?).map(Some)
}

/// One row of the fleet table.
#[derive(Debug, Clone, Serialize)]
pub struct SiteRow {
    pub site_id: String,
    pub trust: String,
    pub fingerprint: String,
    pub bundle_id: Option<String>,
    pub release: Option<String>,
    pub previous: Option<String>,
    /// The site's clock when it wrote its newest receipt.
    pub last_seen: Option<String>,
    /// HQ's clock when that receipt was imported.
    pub imported: Option<String>,
    pub sequence: Option<u64>,
    pub newest_signed: Option<String>,
    pub platform: Option<String>,
    pub offgrid_version: Option<String>,
    pub free_bytes: Option<u64>,
    pub failures: usize,
    pub recoveries: usize,
    /// Damaged or missing files the site reported.
    pub damage: Vec<String>,
    /// True when the site reported a full verification.
    pub verified: bool,
}

/// Every site the HQ history knows, by site id.
pub fn fleet(hq: &Path) -> Result<Vec<SiteRow>, SiteError> {
    let dir = hq.join(SITES_DIR);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &dir)(e)),
    };
    let mut ids: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_site_id(n))
        .collect();
    ids.sort();
    let mut rows = Vec::new();
    for id in ids {
        let Some(rec) = read_record(hq, &id)? else {
            continue;
        };
        let fingerprint = record_key(&rec, hq)?.fingerprint();
        let r = newest_receipt(hq, &rec)?.map(|(r, _)| r);
        rows.push(SiteRow {
            site_id: id,
            trust: rec.trust.clone(),
            fingerprint,
            bundle_id: r.as_ref().map(|r| r.bundle_id.clone()),
            release: r.as_ref().map(|r| r.release.clone()),
            previous: r.as_ref().and_then(|r| r.previous.clone()),
            last_seen: r.as_ref().map(|r| r.written.clone()),
            imported: rec.imported.clone(),
            sequence: r.as_ref().map(|r| r.sequence),
            newest_signed: r.as_ref().and_then(|r| r.newest_signed.clone()),
            platform: r.as_ref().map(|r| r.platform.clone()),
            offgrid_version: r.as_ref().map(|r| r.offgrid_version.clone()),
            free_bytes: r.as_ref().and_then(|r| r.free_bytes),
            failures: r.as_ref().map_or(0, |r| r.failures.len()),
            recoveries: r.as_ref().map_or(0, |r| r.recoveries.len()),
            damage: r.as_ref().map(Receipt::damage).unwrap_or_default(),
            verified: r.as_ref().is_some_and(|r| r.verification.is_some()),
        });
    }
    Ok(rows)
}

/// The distinct releases the sites of `bundle_id` run, oldest first.
pub fn fleet_releases(hq: &Path, bundle_id: &str) -> Result<Vec<Version>, SiteError> {
    let mut out: Vec<Version> = Vec::new();
    for row in fleet(hq)? {
        if row.bundle_id.as_deref() != Some(bundle_id) {
            continue;
        }
        if let Some(v) = row.release.and_then(|r| r.parse::<Version>().ok()) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out.sort();
    Ok(out)
}
