//! `offgrid repair --from SOURCE…`: puts back the damaged and missing files of every kept
//! version of a site home, with bytes from any source whose signed manifest names the
//! same sha256, without changing which release is current. SPEC.md §7.15 is normative.
//!
//! Under the home's lock, after recovery: every kept version is checked
//! ([`crate::update::damage`]); each damaged or missing file is wanted by its sha256 (a
//! file shared by hard link between versions is wanted once, at every path). Sources, in
//! this order: intact files of the home itself (another path or version with the same
//! bytes, or the store's object), then each `--from`: a USB tree (its signed head checked against the pinned
//! policy), an update pack (read by the one pack reader, signatures first; zstd
//! payloads decoded, delta payloads applied to an intact base of the home), or a folder
//! holding trees and packs (one level). Whatever the source, bytes are copied into a
//! staging folder `versions/.repair-RAND/objects/` and kept only when their size and
//! sha256 equal the home's own signed manifest entry.
//!
//! Then, crash-safe like install and apply (verify, stage, flip): the staging folder
//! with its `plan.json` is made durable, `journal.json` (op `repair`) is written — from
//! here a crash completes the repair — and each damaged path is replaced by a new hard
//! link (or copy) of its staged object renamed over it, and so is the home's store object
//! `objects/AA/SHA256.MODE` ([`crate::update::store`]). A damaged inode shared by several
//! versions is never written in place: every path that linked it and the store get the
//! new file, and the shared versions share the new one (repaired once). Then one `syncfs`, the staging folder is
//! removed, a `repair` event is added to `state.json`'s history, and the journal is
//! removed. A crash before the journal leaves the home as it was (recovery removes the
//! unreferenced staging folder); after it, recovery ([`finish`]) replays the plan.
//!
//! First, a kept version whose `manifest.toml` or signatures do not verify gets its
//! signed head back from a `--from` tree of the same release ([`repair_heads`]).
//!
//! Known gaps: an update pack is not a source of heads; the HQ history's store is not a
//! source.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fsutil::{create_parents, remove_tree, set_mode, sync_tree};
use crate::hash::{copy_checked, HashWriter};
use crate::models::vcache::VerifyCache;
use crate::trust::TrustPolicy;
use crate::update::damage::{self, HomeCheck};
use crate::update::home::{Home, PinnedTrust, Recovery};
use crate::update::journal::{self, recover_locked, Journal};
use crate::update::pack::{Encoding, Payload};
use crate::update::{fault, io_err, store, UpdateError};

/// `format` of `plan.json`.
pub const PLAN_FORMAT: &str = "offgrid-repair/1";
/// Prefix of the staging folder under `versions/`.
pub const STAGING_PREFIX: &str = ".repair-";
/// Most entries of a `--from` folder looked at.
const MAX_FOLDER_ENTRIES: usize = 1000;

/// One file put back.
#[derive(Debug, Clone, Serialize)]
pub struct Repaired {
    pub release: String,
    pub path: String,
    pub sha256: String,
    /// Where the bytes came from (`home`, or a `--from` path and what it is).
    pub source: String,
}

/// One file no source held.
#[derive(Debug, Clone, Serialize)]
pub struct NotFound {
    pub release: String,
    pub path: String,
    pub sha256: String,
    pub size: u64,
    /// What is wrong with the installed copy.
    pub detail: String,
}

/// One source looked at.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub path: String,
    /// `tree` or `pack`.
    pub kind: &'static str,
    /// The release it holds, once its signatures held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// Files taken from it.
    pub used: usize,
    /// Why it could not be used (untrusted, unreadable, a damaged file in it…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What repair did.
#[derive(Debug, Clone, Serialize)]
pub struct RepairReport {
    pub home: String,
    /// The current release, unchanged by repair.
    pub release: String,
    /// Files found damaged or missing before the repair (a shared file once per path).
    pub damaged: usize,
    pub repaired: Vec<Repaired>,
    pub not_found: Vec<NotFound>,
    /// Kept releases whose manifest or signatures do not verify: `RELEASE: reason`.
    pub damaged_manifests: Vec<String>,
    /// Kept releases whose manifest and signatures were put back from a `--from` tree
    /// of the same bundle and release (before their files were checked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repaired_manifests: Vec<Repaired>,
    pub sources: Vec<SourceReport>,
    pub hashed_files: usize,
    pub hashed_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovery>,
}

impl RepairReport {
    /// True when nothing is left damaged.
    pub fn complete(&self) -> bool {
        self.not_found.is_empty() && self.damaged_manifests.is_empty()
    }
}

/// `plan.json`: what to put where. Written into the staging folder before the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub format: String,
    pub objects: Vec<PlanObject>,
}

/// One staged object and the paths it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanObject {
    /// File name under the staging folder's `objects/`: `SHA256` or `SHA256.MODE`.
    pub object: String,
    pub sha256: String,
    /// `DIR/BUNDLE_PATH`, DIR a kept version's folder under `versions/`.
    pub targets: Vec<String>,
}

/// A source as found on disk.
enum Source {
    Tree(PathBuf),
    Pack(PathBuf),
}

/// One wanted path.
struct Location {
    release: String,
    dir: String,
    path: String,
    mode: u32,
    detail: String,
}

/// Bytes wanted by sha256.
struct Want {
    size: u64,
    at: Vec<Location>,
    /// Staged under `objects/SHA256` and where from.
    staged: Option<String>,
}

fn no_source(path: &Path, reason: impl Into<String>) -> UpdateError {
    UpdateError::NoRepairSource {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The trees and packs `--from` paths name: a folder holding `manifest.toml` is a tree,
/// a regular file a pack, any other folder is searched one level deep for both.
fn sources(paths: &[PathBuf]) -> Result<Vec<Source>, UpdateError> {
    let mut out = Vec::new();
    for p in paths {
        let md = match fs::metadata(p) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(no_source(p, "it does not exist"))
            }
            Err(e) => return Err(io_err("read", p)(e)),
            Ok(m) => m,
        };
        if md.is_file() {
            out.push(Source::Pack(p.clone()));
        } else if !md.is_dir() {
            return Err(no_source(
                p,
                format!("it is {}", crate::fsutil::kind_name(&md)),
            ));
        } else if p.join(crate::manifest::MANIFEST_FILE).exists() {
            out.push(Source::Tree(p.clone()));
        } else {
            let mut found: Vec<Source> = Vec::new();
            let rd = fs::read_dir(p).map_err(io_err("read", p))?;
            let mut names: Vec<PathBuf> = rd
                .take(MAX_FOLDER_ENTRIES)
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            names.sort();
            for c in names {
                let Ok(m) = fs::metadata(&c) else { continue };
                if m.is_dir() && c.join(crate::manifest::MANIFEST_FILE).is_file() {
                    found.push(Source::Tree(c));
                } else if m.is_file() && c.extension().is_some_and(|x| x == "ogpack") {
                    found.push(Source::Pack(c));
                }
            }
            if found.is_empty() {
                return Err(no_source(
                    p,
                    "it holds no manifest.toml, no USB tree folder and no .ogpack file",
                ));
            }
            out.extend(found);
        }
    }
    Ok(out)
}

/// True when `root` is a USB tree of the release `home` runs now (same bundle and
/// release, read without a key: repair checks the signatures). `install --from` such a
/// stick repairs instead of refusing.
pub fn is_installed_release(home: &Home, root: &Path) -> bool {
    let Ok(Some(s)) = home.read_state() else {
        return false;
    };
    match crate::signed::read_unverified(root) {
        Ok((m, _)) => m.bundle_id == s.bundle_id && m.release == s.current.release,
        Err(_) => false,
    }
}

/// Repairs `home` from `from` (see the module doc). `given` is a policy from
/// `--pubkey`/`--trust`, which must equal the pinned one (or be absent).
pub fn repair(
    home: &Home,
    from: &[PathBuf],
    given: Option<&TrustPolicy>,
    cache: Option<&VerifyCache>,
    progress: crate::Progress,
) -> Result<RepairReport, UpdateError> {
    let srcs = sources(from)?;
    let lock = home.lock(false, "repair")?;
    let recovered = recover_locked(home, &lock)?;
    let state = home.state()?;
    if let Some(g) = given {
        if PinnedTrust::from_policy(g) != state.trust {
            return Err(UpdateError::KeysDiffer {
                home: home.root.display().to_string(),
            });
        }
    }
    let policy = home.policy(&state)?;
    let repaired_manifests = repair_heads(home, &state, &policy, &srcs)?;
    let check = damage::check_home(home, &state, &policy, cache, progress);
    let mut report = RepairReport {
        home: home.root.display().to_string(),
        release: state.current.release.to_string(),
        damaged: check.damaged,
        repaired: Vec::new(),
        not_found: Vec::new(),
        damaged_manifests: check
            .versions
            .iter()
            .filter_map(|v| {
                v.manifest_problem
                    .as_ref()
                    .map(|p| format!("{}: {p}", v.release))
            })
            .collect(),
        repaired_manifests,
        sources: Vec::new(),
        hashed_files: check.hashed_files,
        hashed_bytes: check.hashed_bytes,
        recovered,
    };
    let mut wants = wanted(&check);
    if wants.is_empty() {
        report.sources = srcs.iter().map(|s| describe_source(s, None)).collect();
        return Ok(report);
    }
    let need: u64 = wants.values().map(|w| w.size).sum();
    crate::media::check_space(
        &home.root,
        "the repaired files",
        need.saturating_add(1 << 20),
        crate::media::HOME_SPACE_HELP,
    )?;
    let vd = home.versions();
    let name = format!(
        "{STAGING_PREFIX}{}",
        Home::new_dir_name(&state.current.release)
    );
    let staging = vd.join(&name);
    let objects = staging.join("objects");
    fs::create_dir_all(&objects).map_err(io_err("create", &objects))?;
    // Dropped on every early return: an unfinished staging folder goes.
    let mut guard = StagingGuard(Some(staging.clone()));

    // The home's own intact copies first.
    for (sha, w) in wants.iter_mut() {
        if let Some(src) = check.intact.get(sha) {
            if stage_copy(src, &objects, sha, w.size)? {
                w.staged = Some("home".into());
            }
        }
    }
    // Then the home's store: an object whose release files were deleted.
    for (sha, w) in wants.iter_mut().filter(|(_, w)| w.staged.is_none()) {
        let modes: Vec<u32> = w.at.iter().map(|l| l.mode).collect();
        for mode in modes {
            let p = store::object_path(home, &store::object_name(sha, mode));
            if p.is_file() && stage_object(&p, &objects, sha, w.size)? {
                w.staged = Some("home".into());
                break;
            }
        }
    }
    for s in &srcs {
        if wants.values().all(|w| w.staged.is_some()) {
            report.sources.push(describe_source(s, None));
            continue;
        }
        let r = match s {
            Source::Tree(root) => from_tree(root, &policy, &objects, &mut wants),
            Source::Pack(p) => from_pack(p, &policy, &objects, &check, &mut wants, progress),
        };
        report.sources.push(r);
    }

    // The plan: one object per (sha256, mode).
    let mut plan = Plan {
        format: PLAN_FORMAT.into(),
        objects: Vec::new(),
    };
    for (sha, w) in &wants {
        let Some(src) = &w.staged else {
            for l in &w.at {
                report.not_found.push(NotFound {
                    release: l.release.clone(),
                    path: l.path.clone(),
                    sha256: sha.clone(),
                    size: w.size,
                    detail: l.detail.clone(),
                });
            }
            continue;
        };
        let mut by_mode: BTreeMap<u32, Vec<&Location>> = BTreeMap::new();
        for l in &w.at {
            by_mode.entry(l.mode).or_default().push(l);
        }
        let raw = objects.join(sha);
        let last = by_mode.len() - 1;
        for (i, (mode, locs)) in by_mode.into_iter().enumerate() {
            let object = format!("{sha}.{mode:o}");
            let p = objects.join(&object);
            if i == last {
                fs::rename(&raw, &p).map_err(io_err("rename", &raw))?;
                set_mode(&fs::File::open(&p).map_err(io_err("open", &p))?, Some(mode))
                    .map_err(io_err("set the mode of", &p))?;
            } else {
                copy_mode(&raw, &p, mode).map_err(io_err("copy", &p))?;
            }
            plan.objects.push(PlanObject {
                object,
                sha256: sha.clone(),
                targets: locs
                    .iter()
                    .map(|l| format!("{}/{}", l.dir, l.path))
                    .collect(),
            });
            for l in locs {
                report.repaired.push(Repaired {
                    release: l.release.clone(),
                    path: l.path.clone(),
                    sha256: sha.clone(),
                    source: src.clone(),
                });
            }
        }
    }
    if plan.objects.is_empty() {
        return Ok(report);
    }
    let pp = staging.join("plan.json");
    let text = serde_json::to_string_pretty(&plan).unwrap_or_default();
    fs::write(&pp, text).map_err(io_err("write", &pp))?;
    sync_tree(&staging).map_err(io_err("sync", &staging))?;
    crate::fsutil::fsync_dir(&vd).map_err(io_err("sync", &vd))?;
    fault::point("repair-staged");
    journal::write(
        home,
        &Journal {
            format: journal::FORMAT.into(),
            op: "repair".into(),
            from: Some(state.current.clone()),
            to: state.current.clone(),
            staging: name,
            started: crate::manifest::now_rfc3339(),
        },
    )?;
    // From here the repair completes, now or in recovery: the staging folder is the
    // journal's to keep.
    guard.0 = None;
    fault::point("repair-journaled");
    apply_plan(home, &staging, &plan, false)?;
    let mut s = state.clone();
    s.push_event("repair", &state.current.release, None);
    home.write_state(&s)?;
    fault::point("repair-recorded");
    journal::remove(home)?;
    drop(lock);
    Ok(report)
}

/// Puts back the signed head (`manifest.toml`, `signatures/`) of each kept release whose
/// head does not verify, from the first `--from` tree holding that bundle's release with
/// a head that holds against the pinned `policy`. Each file is replaced atomically (temp
/// file, fsync, rename): a crash leaves each file old or new, and a head still damaged
/// is found and repaired again by the next run.
fn repair_heads(
    home: &Home,
    state: &crate::update::home::State,
    policy: &TrustPolicy,
    srcs: &[Source],
) -> Result<Vec<Repaired>, UpdateError> {
    let mut out = Vec::new();
    for k in state.kept() {
        let dir = home.version_dir(&k.dir);
        let good = crate::signed::read_trusted(&dir, policy).is_ok_and(|s| {
            s.manifest.release == k.release && s.manifest.bundle_id == state.bundle_id
        });
        if good || !dir.is_dir() {
            continue;
        }
        for src in srcs {
            let Source::Tree(root) = src else { continue };
            let Ok(mut raw) = crate::signed::read_raw(root) else {
                continue;
            };
            raw.sigs
                .retain(|(n, _)| crate::update::history::check_sig_name(n).is_ok());
            let sigs = raw.sigs.clone();
            let Ok(signed) = crate::signed::trust_raw(raw, policy) else {
                continue;
            };
            if signed.manifest.release != k.release || signed.manifest.bundle_id != state.bundle_id
            {
                continue;
            }
            let sd = dir.join(crate::manifest::SIGNATURES_DIR);
            if fs::symlink_metadata(&sd).is_ok_and(|m| !m.is_dir()) {
                fs::remove_file(&sd).map_err(io_err("remove", &sd))?;
            }
            fs::create_dir_all(&sd).map_err(io_err("create", &sd))?;
            for (name, text) in &sigs {
                let p = sd.join(name);
                crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))?;
            }
            let mp = dir.join(crate::manifest::MANIFEST_FILE);
            crate::fsutil::atomic_write(&mp, &signed.bytes).map_err(io_err("write", &mp))?;
            fault::point("repair-head");
            out.push(Repaired {
                release: k.release.to_string(),
                path: crate::manifest::MANIFEST_FILE.into(),
                sha256: crate::hash::sha256_hex(&signed.bytes),
                source: format!("tree {}", root.display()),
            });
            break;
        }
    }
    Ok(out)
}

/// Removes the staging folder when dropped, unless disarmed.
struct StagingGuard(Option<PathBuf>);

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = remove_tree(&p);
        }
    }
}

/// Each damaged path of every version, grouped by the sha256 it should have.
fn wanted(check: &HomeCheck) -> BTreeMap<String, Want> {
    let mut wants: BTreeMap<String, Want> = BTreeMap::new();
    for v in &check.versions {
        for d in &v.damaged {
            let w = wants.entry(d.sha256.clone()).or_insert(Want {
                size: d.size,
                at: Vec::new(),
                staged: None,
            });
            w.at.push(Location {
                release: v.release.clone(),
                dir: v.dir.clone(),
                path: d.path.clone(),
                mode: d.mode.unwrap_or(0o644) & 0o777,
                detail: d.detail.clone(),
            });
        }
    }
    wants
}

fn describe_source(s: &Source, problem: Option<String>) -> SourceReport {
    let (path, kind) = match s {
        Source::Tree(p) => (p, "tree"),
        Source::Pack(p) => (p, "pack"),
    };
    SourceReport {
        path: path.display().to_string(),
        kind,
        release: None,
        used: 0,
        problem,
    }
}

/// Copies `src` to `objects/SHA`, checked against `size` and `sha`. `Ok(false)` when the
/// bytes differ (nothing is left behind).
fn stage_copy(src: &Path, objects: &Path, sha: &str, size: u64) -> Result<bool, UpdateError> {
    let dst = objects.join(sha);
    let _ = fs::remove_file(&dst);
    match copy_checked(src, &dst, size, sha, None, false) {
        Ok(Ok(())) => Ok(true),
        Ok(Err(_)) => Ok(false),
        // A source file that cannot be read is a source that does not hold the bytes.
        Err(e) if !is_local_write_error(&e) => Ok(false),
        Err(e) => Err(io_err("write", &dst)(e)),
    }
}

/// Stages the store object `obj` as `objects/SHA` when its bytes are intact: a hard
/// link, so the repaired paths share the object's inode (and a bundle that repaired the
/// object already keeps sharing it with the others, SPEC.md §7.5); a checked copy where
/// links cannot be made.
fn stage_object(obj: &Path, objects: &Path, sha: &str, size: u64) -> Result<bool, UpdateError> {
    match crate::hash::sha256_file(obj) {
        Ok((n, h)) if n == size && h == sha => {}
        _ => return Ok(false),
    }
    let dst = objects.join(sha);
    let _ = fs::remove_file(&dst);
    if fs::hard_link(obj, &dst).is_ok() {
        return Ok(true);
    }
    stage_copy(obj, objects, sha, size)
}

/// Errors that come from writing into the home (disk full, permissions), not from the
/// source.
fn is_local_write_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EROFS)
    )
}

/// Takes wanted files from the USB tree at `root`.
fn from_tree(
    root: &Path,
    policy: &TrustPolicy,
    objects: &Path,
    wants: &mut BTreeMap<String, Want>,
) -> SourceReport {
    let mut r = describe_source(&Source::Tree(root.to_path_buf()), None);
    let signed = match crate::signed::read_trusted(root, policy) {
        Ok(s) => s,
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            r.problem = Some(crate::update::short(&first));
            return r;
        }
    };
    r.release = Some(format!(
        "{} {}",
        signed.manifest.bundle_id, signed.manifest.release
    ));
    let mut bad = Vec::new();
    for (sha, w) in wants.iter_mut() {
        if w.staged.is_some() {
            continue;
        }
        let Some(f) = signed
            .manifest
            .files
            .iter()
            .find(|f| &f.sha256 == sha && f.size == w.size)
        else {
            continue;
        };
        let src = crate::paths::join(root, &f.path);
        match stage_copy(&src, objects, sha, w.size) {
            Ok(true) => {
                w.staged = Some(format!("tree '{}'", root.display()));
                r.used += 1;
            }
            Ok(false) => bad.push(f.path.clone()),
            Err(e) => {
                r.problem = Some(crate::update::short(&e.to_string()));
                return r;
            }
        }
    }
    if !bad.is_empty() {
        r.problem = Some(format!(
            "its {} do not match its signed manifest",
            bad.iter()
                .take(5)
                .map(|p| format!("'{p}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    r
}

/// Takes wanted files from the update pack at `path`: zstd payloads decoded, delta
/// payloads applied to a base the home holds intact (or already staged).
fn from_pack(
    path: &Path,
    policy: &TrustPolicy,
    objects: &Path,
    check: &HomeCheck,
    wants: &mut BTreeMap<String, Want>,
    progress: crate::Progress,
) -> SourceReport {
    let mut r = describe_source(&Source::Pack(path.to_path_buf()), None);
    let wants = std::cell::RefCell::new(wants);
    let used = std::cell::Cell::new(0usize);
    let res = crate::update::reader::read_pack(
        path,
        policy,
        progress,
        &mut |_| Ok(()),
        &mut |p: &Payload, rd| {
            let mut ws = wants.borrow_mut();
            let Some(w) = ws.get_mut(&p.target_sha256) else {
                return Ok(());
            };
            if w.staged.is_some() || w.size != p.target_size {
                return Ok(());
            }
            let base = match p.encoding {
                Encoding::Zstd => None,
                Encoding::Delta => {
                    let b = p.base_sha256.as_deref().unwrap_or_default();
                    let staged = objects.join(b);
                    match check.intact.get(b) {
                        Some(x) => Some(x.clone()),
                        None if staged.is_file() => Some(staged),
                        None => return Ok(()),
                    }
                }
            };
            if decode_payload(p, rd, base.as_deref(), objects)? {
                w.staged = Some(format!("pack '{}'", path.display()));
                used.set(used.get() + 1);
            }
            Ok(())
        },
    );
    r.used = used.get();
    match res {
        Ok(h) => r.release = Some(format!("{} {}", h.pack.bundle_id, h.pack.to)),
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_owned();
            r.problem = Some(crate::update::short(&first));
        }
    }
    r
}

/// Decodes one payload into `objects/SHA256` (through a `.part` file renamed only when
/// its size and sha256 are the signed ones). `Ok(false)` when the bytes are not those.
fn decode_payload(
    p: &Payload,
    rd: &mut dyn io::BufRead,
    base: Option<&Path>,
    objects: &Path,
) -> Result<bool, UpdateError> {
    let part = objects.join(format!("{}.part", p.target_sha256));
    let _ = fs::remove_file(&part);
    let out = crate::fsutil::create_new(&part).map_err(io_err("create", &part))?;
    let mut w = HashWriter::new(io::BufWriter::with_capacity(1 << 20, out), p.target_size);
    let ok = match (p.encoding, base) {
        (Encoding::Zstd, _) => crate::update::verify_pack::decode_zstd(rd, &mut w).is_ok(),
        (Encoding::Delta, Some(b)) => {
            let f = fs::File::open(b).map_err(io_err("open", b))?;
            let mut base = BufReader::with_capacity(1 << 20, f);
            crate::update::delta::apply(&mut base, rd, &mut w, p.target_size).is_ok()
        }
        (Encoding::Delta, None) => false,
    };
    let (buf, n, sha) = w.finish();
    let flushed = buf.into_inner().is_ok();
    if !ok || !flushed || n != p.target_size || sha != p.target_sha256 {
        let _ = fs::remove_file(&part);
        return Ok(false);
    }
    let dst = objects.join(&p.target_sha256);
    fs::rename(&part, &dst).map_err(io_err("rename", &part))?;
    Ok(true)
}

/// Copies a staged object to the new file `dst` with `mode`.
fn copy_mode(src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
    let mut r = fs::File::open(src)?;
    let out = crate::fsutil::create_new(dst)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, out);
    io::copy(&mut r, &mut w)?;
    let out = w.into_inner().map_err(|e| e.into_error())?;
    set_mode(&out, Some(mode))
}

/// Replaces each target of `plan` by a new link (or copy) of its staged object, renamed
/// over it; then makes it durable and removes the staging folder. Idempotent: recovery
/// calls it again after a crash. `check` re-hashes each object first (recovery).
fn apply_plan(home: &Home, staging: &Path, plan: &Plan, check: bool) -> Result<(), UpdateError> {
    let objects = staging.join("objects");
    let mut first = true;
    for o in &plan.objects {
        let obj = objects.join(&o.object);
        if check {
            match crate::hash::sha256_file(&obj) {
                Ok((_, sha)) if sha == o.sha256 => {}
                // Placed already and its staging copy gone, or not ours: skip.
                _ => continue,
            }
        }
        for t in &o.targets {
            let Some((dir, path)) = t.split_once('/') else {
                continue;
            };
            let vdir = home.version_dir(dir);
            create_parents(&vdir, path).map_err(io_err("create a folder in", &vdir))?;
            let target = crate::paths::join(&vdir, path);
            if fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
                remove_tree(&target).map_err(io_err("remove", &target))?;
            }
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = target.with_file_name(format!("{}repair-{name}", crate::fsutil::TMP_PREFIX));
            crate::fsutil::remove_if_exists(&tmp).map_err(io_err("remove", &tmp))?;
            if fs::hard_link(&obj, &tmp).is_err() {
                copy_mode(&obj, &tmp, mode_of(&o.object)).map_err(io_err("copy", &obj))?;
            }
            fs::rename(&tmp, &target).map_err(io_err("replace", &target))?;
            // Renaming a link over another link to the same file does nothing (POSIX):
            // the case when recovery replays a replacement already made.
            crate::fsutil::remove_if_exists(&tmp).map_err(io_err("remove", &tmp))?;
            if first {
                first = false;
                fault::point("repair-replaced");
            }
        }
        // The store's object too, so it and every release share the repaired bytes.
        if store::objects_dir(home).is_dir() {
            let sp = store::object_path(home, &o.object);
            let dir = sp.parent().unwrap_or(&home.root).to_path_buf();
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
            let tmp = dir.join(format!("{}repair-{}", crate::fsutil::TMP_PREFIX, o.object));
            crate::fsutil::remove_if_exists(&tmp).map_err(io_err("remove", &tmp))?;
            if fs::hard_link(&obj, &tmp).is_ok() {
                fs::rename(&tmp, &sp).map_err(io_err("replace", &sp))?;
                crate::fsutil::remove_if_exists(&tmp).map_err(io_err("remove", &tmp))?;
            }
        }
    }
    let vd = home.versions();
    sync_tree(&vd).map_err(io_err("sync", &vd))?;
    fault::point("repair-synced");
    remove_tree(staging).map_err(io_err("remove", staging))?;
    Ok(())
}

/// The mode in an object name `SHA256.MODE` (octal), else 0644.
fn mode_of(object: &str) -> u32 {
    object
        .split_once('.')
        .and_then(|(_, m)| u32::from_str_radix(m, 8).ok())
        .unwrap_or(0o644)
        & 0o777
}

/// Reads and checks `plan.json` from a staging folder.
fn read_plan(home: &Home, staging: &Path, kept: &[String]) -> Result<Option<Plan>, UpdateError> {
    let pp = staging.join("plan.json");
    let bytes = match crate::hash::read_regular_bounded(&pp, 64 << 20, false) {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(bad_plan(home, "plan.json is larger than 64 MiB")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &pp)(e)),
    };
    let plan: Plan = serde_json::from_slice(&bytes)
        .map_err(|e| bad_plan(home, &format!("plan.json is not valid: {e}")))?;
    let ok = plan.format == PLAN_FORMAT
        && plan.objects.iter().all(|o| {
            crate::manifest::is_sha256_hex(&o.sha256)
                && o.object.starts_with(&o.sha256)
                && !o.object.contains(['/', '\\'])
                && o.targets.iter().all(|t| {
                    t.split_once('/').is_some_and(|(d, p)| {
                        kept.iter().any(|k| k == d) && crate::paths::check_bundle_path(p).is_ok()
                    })
                })
        });
    if !ok {
        return Err(bad_plan(
            home,
            "plan.json names an unexpected format, object or path",
        ));
    }
    Ok(Some(plan))
}

fn bad_plan(home: &Home, reason: &str) -> UpdateError {
    UpdateError::BadHome {
        home: home.root.display().to_string(),
        reason: reason.into(),
        help: "remove journal.json and the versions/.repair-* folder only if no offgrid command is running, then run 'offgrid status --verify'",
    }
}

/// Recovery of an interrupted repair (journal op `repair`): replays the plan (each step
/// idempotent), then removes the staging folder and the journal. The caller holds the
/// lock.
pub fn finish(home: &Home, j: &Journal) -> Result<Recovery, UpdateError> {
    let staging = home.version_dir(&j.staging);
    if let Some(s) = home.read_state()? {
        let kept: Vec<String> = s.kept().iter().map(|k| k.dir.clone()).collect();
        if let Some(plan) = read_plan(home, &staging, &kept)? {
            apply_plan(home, &staging, &plan, true)?;
        }
    }
    remove_tree(&staging).map_err(io_err("remove", &staging))?;
    Ok(Recovery {
        time: crate::manifest::now_rfc3339(),
        op: j.op.clone(),
        from: j.from.as_ref().map(|f| f.release.to_string()),
        to: j.to.release.to_string(),
        outcome: "completed".into(),
    })
}
