//! Pulling a release from peers on the LAN (`install --from http://HOST:PORT`,
//! `offgrid sync`): peers are `offgrid serve` instances and are not trusted; only HQ's
//! signatures are. SPEC.md §12.4 is normative.
//!
//! Order: each peer's index (`GET /index.json`) says which trees it serves; the chosen
//! tree's `manifest.toml` and the signatures of the keys the site trusts
//! (`signatures/KEYID.minisig`) are fetched, bounded, into a pull folder and checked
//! against the trust policy ([`crate::signed::read_trusted`]) before a payload byte is
//! asked for. Then every chunk of every file (the manifest's own chunking) is fetched
//! with one `Range` request, from all peers that serve the same signed manifest in
//! parallel, and written into `PATH.part` at its offset only after its sha256 matches the
//! signed chunk digest. A peer that sends a wrong chunk is named and dropped, one that
//! fails or stalls is dropped after a retry, and its chunks go to the others. Bytes the
//! site already has (a file of its current release with the same sha256) are copied
//! locally, checked the same way. An interrupted pull resumes: the chunks of a `.part`
//! that hash right are kept, only the others are fetched again. The complete pull folder
//! is a tree that `install` then verifies and switches to with its usual transaction.
//!
//! A peer serving volumes of a release (SPEC.md §12.1) lists in its index the files it
//! cannot serve whole (`missing`): no chunk of those is asked of it, and a file no peer
//! serves refuses the pull before any byte is fetched, naming the file and the volumes
//! that hold it.
//!
//! Known gaps: one request per chunk (no pipelining); a peer is not re-tried once dropped
//! in a pull; the pull folder of an abandoned release stays until the next pull of the
//! bundle removes it.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::hash;
use crate::manifest::{FileEntry, Manifest, MANIFEST_FILE, SIGNATURES_DIR};
use crate::paths;
use crate::signed::{self, HeadError, SignedManifest};
use crate::trust::TrustPolicy;
use crate::version::Version;
use crate::Progress;

/// Largest index document read from a peer.
pub const MAX_INDEX_BYTES: u64 = 4 << 20;
/// Requests in flight per peer.
pub const WORKERS_PER_PEER: usize = 4;
/// Tries of one chunk at one peer before the peer is dropped (errors other than a
/// wrong hash, which drops it at once).
pub const TRIES_PER_PEER: u32 = 2;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("'{peer}' is not a peer address")]
    BadPeer { peer: String },
    #[error("peer {peer}: {reason}")]
    Peer { peer: String, reason: String },
    #[error("no peer offers a release of {bundle_id}{}", .newer_than.as_ref().map(|v| format!(" newer than {v}")).unwrap_or_default())]
    NothingNewer {
        bundle_id: String,
        newer_than: Option<String>,
    },
    #[error("no release the peers offer can be used: {}", .skipped.join("; "))]
    NoneUsable { skipped: Vec<String> },
    #[error("the peers serve several bundles ({names}) and none is installed here")]
    Ambiguous { names: String },
    #[error("release {name} from {peer} is not trusted")]
    Untrusted {
        name: String,
        peer: String,
        #[source]
        source: Box<HeadError>,
    },
    #[error("no peer serves all of release {release}: {} {} not served by any peer (stored on volume(s) {})", .files.len(), if .files.len() == 1 { "file is" } else { "files are" }, .volumes.iter().map(u32::to_string).collect::<Vec<_>>().join(", "))]
    Incomplete {
        /// `R of BUNDLE`.
        release: String,
        /// The files no peer serves (their first few are named in the help).
        files: Vec<String>,
        /// The volumes holding their pieces.
        volumes: Vec<u32>,
    },
    #[error("every peer failed before the release was complete: {}", .failures.join("; "))]
    AllPeersFailed { dir: String, failures: Vec<String> },
    #[error("cannot {action} '{path}': {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl PullError {
    /// A clean "no" (exit 1): nothing newer, or a release that is not trusted.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            PullError::NothingNewer { .. }
                | PullError::Untrusted { .. }
                | PullError::NoneUsable { .. }
                | PullError::Incomplete { .. }
        )
    }
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PullError {
    let path = path.display().to_string();
    move |source| PullError::Io {
        action,
        path,
        source,
    }
}

/// `HOST:PORT`, `http://HOST:PORT` or `http://HOST:PORT/…` as the peer's base URL
/// (`http://HOST:PORT`), and the tree name when the URL names one (`/tree/NAME/`).
pub fn parse_peer(s: &str) -> Result<(String, Option<String>), PullError> {
    let bad = || PullError::BadPeer { peer: s.to_owned() };
    let rest = s.strip_prefix("http://").unwrap_or(s);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty()
        || !host.contains(':')
        || host.contains(['@', '?', '#', ' '])
        || s.starts_with("https://")
    {
        return Err(bad());
    }
    let name = match path.trim_matches('/') {
        "" => None,
        p => match p.strip_prefix("tree/") {
            Some(n) if !n.is_empty() && !n.contains('/') => Some(n.to_owned()),
            _ => return Err(bad()),
        },
    };
    Ok((format!("http://{host}"), name))
}

/// One tree a peer serves, as its index says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub peer: String,
    pub name: String,
    pub bundle_id: String,
    pub release: Version,
    pub manifest_sha256: String,
    /// Files of the tree the peer cannot serve (a volume holding a piece is not there).
    pub missing: Vec<String>,
    /// The volumes it serves, for a tree served from volumes.
    pub volumes: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct Index {
    trees: Vec<IndexTree>,
    /// The chain of trust roots the peer serves at `/roots/NAME` (absent from peers
    /// older than roots over the LAN).
    #[serde(default)]
    roots: Vec<String>,
}

#[derive(serde::Deserialize)]
struct IndexTree {
    name: String,
    bundle_id: String,
    release: String,
    manifest_sha256: String,
    /// Absent from peers older than serving volumes.
    #[serde(default)]
    missing: Vec<String>,
    #[serde(default)]
    volumes: Option<IndexVolumes>,
}

#[derive(serde::Deserialize)]
struct IndexVolumes {
    served: Vec<u32>,
}

/// The HTTP client pulls use (no proxies: peers are on the LAN).
pub fn agent(stall: Duration) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(crate::fetch::client::USER_AGENT)
        .proxy(None)
        .timeout_connect(Some(stall))
        .timeout_per_read(Some(stall))
        .timeout_per_write(Some(stall))
        .max_redirects(0)
        .max_idle_connections_per_host(WORKERS_PER_PEER * 2)
        .build();
    config.into()
}

/// GETs `url` whole, at most `max` bytes; a status other than 200 is an error.
fn get_bounded(agent: &ureq::Agent, url: &str, max: u64) -> Result<Vec<u8>, String> {
    let resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("GET {url}: HTTP {status}"));
    }
    let mut buf = Vec::new();
    resp.into_body()
        .into_reader()
        .take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|e| format!("GET {url}: {e}"))?;
    if buf.len() as u64 > max {
        return Err(format!("GET {url}: larger than {max} bytes"));
    }
    Ok(buf)
}

/// The trees `peer` serves.
pub fn offers(agent: &ureq::Agent, peer: &str) -> Result<Vec<Offer>, PullError> {
    let perr = |reason: String| PullError::Peer {
        peer: peer.to_owned(),
        reason,
    };
    let body = get_bounded(agent, &format!("{peer}/index.json"), MAX_INDEX_BYTES).map_err(perr)?;
    let index: Index = serde_json::from_slice(&body)
        .map_err(|e| perr(format!("its index is not an offgrid serve index: {e}")))?;
    let mut out = Vec::new();
    for t in index.trees {
        let Ok(release) = t.release.parse::<Version>() else {
            continue;
        };
        if !crate::fetch::is_sha256(&t.manifest_sha256)
            || t.name.contains(['/', '\\'])
            || t.name.starts_with('.')
        {
            continue;
        }
        out.push(Offer {
            peer: peer.to_owned(),
            name: t.name,
            bundle_id: t.bundle_id,
            release,
            manifest_sha256: t.manifest_sha256,
            missing: t.missing,
            volumes: t.volumes.map(|v| v.served).unwrap_or_default(),
        });
    }
    Ok(out)
}

/// The chain of trust roots `peer` serves (SPEC.md §12.2): each file named in its index
/// fetched bounded, collected for [`crate::trustroot::advance_from`]; `None` when it
/// serves none. The roots are trusted only through their own signatures (SPEC.md §19.3).
pub fn peer_roots(
    agent: &ureq::Agent,
    peer: &str,
) -> Result<Option<crate::trustroot::Source>, PullError> {
    let perr = |reason: String| PullError::Peer {
        peer: peer.to_owned(),
        reason,
    };
    let body = get_bounded(agent, &format!("{peer}/index.json"), MAX_INDEX_BYTES).map_err(perr)?;
    let index: Index = serde_json::from_slice(&body)
        .map_err(|e| perr(format!("its index is not an offgrid serve index: {e}")))?;
    if index.roots.is_empty() {
        return Ok(None);
    }
    let mut files = Vec::new();
    let mut total = 0u64;
    for name in index.roots {
        if !crate::trustroot::Source::check_name(&name) {
            return Err(perr(format!(
                "its index names '{name}' as a trust root file"
            )));
        }
        let max = if name.ends_with(".minisig") {
            crate::signed::MAX_SIGNATURE_BYTES
        } else {
            crate::trustroot::MAX_ROOT_BYTES
        };
        let b = get_bounded(agent, &format!("{peer}/roots/{name}"), max).map_err(perr)?;
        total += b.len() as u64;
        if total > crate::trustroot::MAX_CHAIN_BYTES {
            return Err(perr(format!(
                "its trust roots are larger than {} bytes",
                crate::trustroot::MAX_CHAIN_BYTES
            )));
        }
        files.push((name, b));
    }
    crate::trustroot::source_from(PathBuf::from(format!("{peer}/roots")), files)
        .map(Some)
        .map_err(perr)
}

/// Fetches the head of tree `name` from `peer` into `dir` (`manifest.toml` and the
/// signature of every key `policy` trusts that the peer has) and trusts it.
pub fn fetch_head(
    agent: &ureq::Agent,
    peer: &str,
    name: &str,
    policy: &TrustPolicy,
    dir: &Path,
) -> Result<SignedManifest, PullError> {
    let perr = |reason: String| PullError::Peer {
        peer: peer.to_owned(),
        reason,
    };
    fs::create_dir_all(dir.join(SIGNATURES_DIR)).map_err(io_err("create", dir))?;
    let base = format!("{peer}/tree/{name}");
    let bytes = get_bounded(
        agent,
        &format!("{base}/{MANIFEST_FILE}"),
        signed::MAX_MANIFEST_BYTES,
    )
    .map_err(perr)?;
    let mpath = dir.join(MANIFEST_FILE);
    crate::fsutil::atomic_write(&mpath, &bytes).map_err(io_err("write", &mpath))?;
    // Signatures of keys the site does not trust would not count: only these are asked.
    let sigdir = dir.join(SIGNATURES_DIR);
    if let Ok(rd) = fs::read_dir(&sigdir) {
        for e in rd.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    for k in &policy.keys {
        let id = k.key_id();
        let url = format!("{base}/{SIGNATURES_DIR}/{id}.minisig");
        if let Ok(text) = get_bounded(agent, &url, signed::MAX_SIGNATURE_BYTES) {
            let p = sigdir.join(format!("{id}.minisig"));
            crate::fsutil::atomic_write(&p, &text).map_err(io_err("write", &p))?;
        }
    }
    signed::read_trusted(dir, policy).map_err(|source| PullError::Untrusted {
        name: name.to_owned(),
        peer: peer.to_owned(),
        source: Box::new(source),
    })
}

/// What a pull moved.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PullReport {
    /// Payload bytes fetched from peers.
    pub fetched: u64,
    /// Bytes copied from the site's own files (same sha256).
    pub reused: u64,
    /// Bytes kept from an interrupted pull (chunks that hashed right).
    pub resumed: u64,
    /// `(peer, why it was dropped)`.
    pub dropped: Vec<(String, String)>,
}

/// A release pulled into a pull folder, ready for `install`.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The pull folder: a complete tree (manifest, signatures, files).
    pub dir: PathBuf,
    pub name: String,
    pub bundle_id: String,
    pub release: Version,
    /// The peers that served it.
    pub peers: Vec<String>,
    pub report: PullReport,
    /// Peers or offers passed over, and why (unreachable, untrusted).
    pub skipped: Vec<String>,
}

/// What to pull: a named tree, or the newest release of a bundle (newer than a release).
#[derive(Debug, Clone, Default)]
pub struct Want {
    pub name: Option<String>,
    pub bundle_id: Option<String>,
    pub newer_than: Option<Version>,
}

/// Folder of the pulls in a home.
pub const PULL_DIR: &str = "pull";

/// Finds what `want` names among `peers`' offers, trusts its head (trying the next offer
/// when one is not trusted) and pulls its files into `HOME/pull/NAME/`. `local` names
/// bytes this machine already has (see [`pull_files`]). `Ok(None)`: nothing newer.
pub fn pull_release(
    agent: &ureq::Agent,
    home_root: &Path,
    peers: &[String],
    want: &Want,
    policy: &TrustPolicy,
    local: &Local<'_>,
    progress: Progress,
) -> Result<Option<Pulled>, PullError> {
    let mut skipped = Vec::new();
    let mut all = Vec::new();
    let mut first_err = None;
    for p in peers {
        match offers(agent, p) {
            Ok(o) => all.extend(o),
            Err(e) => {
                skipped.push(e.to_string().lines().next().unwrap_or("").to_owned());
                first_err.get_or_insert(e);
            }
        }
    }
    if all.is_empty() {
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    let mut cands: Vec<&Offer> = all
        .iter()
        .filter(|o| want.name.as_ref().is_none_or(|n| &o.name == n))
        .filter(|o| want.bundle_id.as_ref().is_none_or(|b| &o.bundle_id == b))
        .filter(|o| want.newer_than.as_ref().is_none_or(|v| &o.release > v))
        .collect();
    if want.name.is_none() && want.bundle_id.is_none() {
        let mut bundles: Vec<&str> = cands.iter().map(|o| o.bundle_id.as_str()).collect();
        bundles.sort_unstable();
        bundles.dedup();
        if bundles.len() > 1 {
            return Err(PullError::Ambiguous {
                names: bundles.join(", "),
            });
        }
    }
    cands.sort_by(|a, b| b.release.cmp(&a.release));
    let pulls = home_root.join(PULL_DIR);
    for o in &cands {
        let dir = pulls.join(&o.name);
        let signed = match fetch_head(agent, &o.peer, &o.name, policy, &dir) {
            Ok(s) => s,
            Err(PullError::Untrusted { .. }) => {
                skipped.push(format!(
                    "{} from {}: not signed by the keys this site trusts; ignored",
                    o.name, o.peer
                ));
                continue;
            }
            Err(e) => {
                skipped.push(e.to_string().lines().next().unwrap_or("").to_owned());
                continue;
            }
        };
        let sha = crate::sign::sha256_hex(&signed.bytes);
        // The same signed bytes at every peer used; others serve another build of it.
        let mut serving: Vec<&Offer> = cands
            .iter()
            .copied()
            .filter(|c| c.name == o.name && c.manifest_sha256 == sha)
            .collect();
        if !serving.iter().any(|c| c.peer == o.peer) {
            serving.insert(0, *o);
        }
        serving.dedup_by(|a, b| a.peer == b.peer);
        // Pulls of other releases of this site are abandoned now.
        if let Ok(rd) = fs::read_dir(&pulls) {
            for e in rd.flatten() {
                if e.file_name() != o.name.as_str() {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let report = pull_files(
            agent,
            &serving,
            &o.name,
            &signed.manifest,
            &dir,
            local,
            progress,
        )?;
        return Ok(Some(Pulled {
            dir,
            name: o.name.clone(),
            bundle_id: signed.manifest.bundle_id.clone(),
            release: signed.manifest.release.clone(),
            peers: serving.into_iter().map(|c| c.peer.clone()).collect(),
            report,
            skipped,
        }));
    }
    if want.name.is_some() && cands.is_empty() {
        return Err(PullError::Peer {
            peer: peers.join(", "),
            reason: format!(
                "no peer serves '{}'",
                want.name.as_deref().unwrap_or_default()
            ),
        });
    }
    if !cands.is_empty() {
        // Offers there were, but none could be trusted or reached.
        return Err(PullError::NoneUsable { skipped });
    }
    Ok(None)
}

/// Files of the tree at `root` by sha256 (its manifest read unverified: the bytes are
/// checked against the new, trusted manifest when copied).
pub fn local_files(root: &Path) -> Vec<(String, PathBuf)> {
    match signed::read_unverified(root) {
        Ok((m, _)) => m
            .files
            .iter()
            .map(|f| (f.sha256.clone(), paths::join(root, &f.path)))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Where this machine may already have a file's bytes.
pub struct Local<'a> {
    /// A file with the same sha256 (copied whole, checked).
    pub same_sha256: &'a dyn Fn(&FileEntry) -> Option<PathBuf>,
    /// The site's own older version of the file (same path): its chunks that still hash
    /// to the new signed digests are copied instead of fetched.
    pub same_path: &'a dyn Fn(&FileEntry) -> Option<PathBuf>,
}

/// One chunk to fetch.
#[derive(Debug, Clone, Copy)]
struct Job {
    file: usize,
    chunk: u64,
}

struct PeerState {
    base: String,
    dropped: AtomicBool,
    /// Indexes of the files this peer does not serve.
    lacks: Vec<usize>,
}

/// Pulls every file of `m` (already trusted) into `dir` from `peers` (offers of the
/// tree `name` with this manifest, each but for the files it lists as missing); bytes this
/// machine has ([`Local`]) are copied instead of fetched. A file to fetch that no peer
/// serves refuses the pull before any byte is asked for. On success every file is in
/// place under `dir`.
pub fn pull_files(
    agent: &ureq::Agent,
    peers: &[&Offer],
    name: &str,
    m: &Manifest,
    dir: &Path,
    local: &Local<'_>,
    progress: Progress,
) -> Result<PullReport, PullError> {
    let mut report = PullReport::default();
    let total = m.total_size();
    let done = AtomicU64::new(0);
    let mut jobs = VecDeque::new();
    let mut parts: Vec<Option<File>> = Vec::with_capacity(m.files.len());
    for (i, f) in m.files.iter().enumerate() {
        let fin = paths::join(dir, &f.path);
        let part = part_path(&fin);
        if let Some(parent) = fin.parent() {
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
        }
        // A file finished by an earlier pull still has to hash right.
        if fs::metadata(&fin).is_ok_and(|md| md.is_file() && md.len() == f.size) {
            if let Ok(file) = File::open(&fin) {
                if bad_chunks(&file, f).is_empty() {
                    report.resumed += f.size;
                    done.fetch_add(f.size, Ordering::Relaxed);
                    parts.push(None);
                    continue;
                }
            }
            let _ = fs::remove_file(&fin);
        }
        if let Some(src) = (local.same_sha256)(f) {
            if copy_local(&src, &part, f).is_ok() {
                fs::rename(&part, &fin).map_err(io_err("rename", &part))?;
                report.reused += f.size;
                done.fetch_add(f.size, Ordering::Relaxed);
                parts.push(None);
                continue;
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&part)
            .map_err(io_err("open", &part))?;
        let missing = if file.metadata().map(|md| md.len()).unwrap_or(0) == f.size {
            bad_chunks(&file, f)
        } else {
            file.set_len(0)
                .and_then(|_| file.set_len(f.size))
                .map_err(io_err("size", &part))?;
            (0..f.chunks.len() as u64).collect()
        };
        let kept: u64 = (0..f.chunks.len() as u64)
            .filter(|c| !missing.contains(c))
            .map(|c| {
                let (a, b) = hash::chunk_range(f, c);
                b - a
            })
            .sum();
        report.resumed += kept;
        done.fetch_add(kept, Ordering::Relaxed);
        // Chunks the site's older version of this file already has, at the same place.
        let mut missing = missing;
        if let Some(old) = (local.same_path)(f) {
            let reused = reuse_chunks(&old, &file, f, &mut missing);
            report.reused += reused;
            done.fetch_add(reused, Ordering::Relaxed);
        }
        for c in missing {
            jobs.push_back(Job { file: i, chunk: c });
        }
        parts.push(Some(file));
    }
    progress(done.load(Ordering::Relaxed), total);
    let states: Vec<PeerState> = peers
        .iter()
        .map(|o| PeerState {
            base: o.peer.clone(),
            dropped: AtomicBool::new(false),
            lacks: m
                .files
                .iter()
                .enumerate()
                .filter(|(_, f)| o.missing.contains(&f.path))
                .map(|(i, _)| i)
                .collect(),
        })
        .collect();
    let served: Vec<u32> = peers
        .iter()
        .flat_map(|o| o.volumes.iter().copied())
        .collect();
    unserved(m, &jobs, &states, &served)?;
    let left = AtomicUsize::new(jobs.len());
    let in_flight = AtomicUsize::new(0);
    let queue = Mutex::new(jobs);
    let dropped: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let fetched = AtomicU64::new(0);
    let local_error: Mutex<Option<PullError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for peer in &states {
            for _ in 0..WORKERS_PER_PEER {
                s.spawn(|| {
                    worker(
                        agent,
                        peer,
                        name,
                        m,
                        &parts,
                        &states,
                        &queue,
                        &in_flight,
                        &left,
                        &done,
                        &fetched,
                        &dropped,
                        &local_error,
                        total,
                        progress,
                    )
                });
            }
        }
    });
    if let Some(e) = local_error.into_inner().unwrap_or(None) {
        return Err(e);
    }
    report.fetched = fetched.load(Ordering::Relaxed);
    report.dropped = dropped.into_inner().unwrap_or_default();
    if left.load(Ordering::SeqCst) > 0 {
        let mut failures: Vec<String> = report
            .dropped
            .iter()
            .map(|(p, why)| format!("{p}: {why}"))
            .collect();
        if failures.is_empty() {
            failures.push("no peer to fetch from".into());
        }
        return Err(PullError::AllPeersFailed {
            dir: dir.display().to_string(),
            failures,
        });
    }
    // Every chunk verified: the parts become the files.
    for (f, part) in m.files.iter().zip(parts) {
        if let Some(file) = part {
            let fin = paths::join(dir, &f.path);
            let p = part_path(&fin);
            file.sync_all().map_err(io_err("sync", &p))?;
            fs::rename(&p, &fin).map_err(io_err("rename", &p))?;
        }
    }
    Ok(report)
}

/// Refuses a pull when a file with chunks to fetch is served by no peer: named, with
/// the volumes that hold its pieces and that no peer serves (`served`), or all of them
/// when the peers say nothing of volumes (SPEC.md §12.4).
fn unserved(
    m: &Manifest,
    jobs: &VecDeque<Job>,
    peers: &[PeerState],
    served: &[u32],
) -> Result<(), PullError> {
    let mut files: Vec<usize> = jobs
        .iter()
        .map(|j| j.file)
        .filter(|i| peers.iter().all(|p| p.lacks.contains(i)))
        .collect();
    files.dedup();
    if files.is_empty() || peers.is_empty() {
        return Ok(());
    }
    let mut volumes: Vec<u32> = files
        .iter()
        .flat_map(|&i| {
            let f = &m.files[i];
            f.volume
                .into_iter()
                .chain(f.parts.iter().filter_map(|p| p.volume))
        })
        .collect();
    volumes.sort_unstable();
    volumes.dedup();
    if volumes.iter().any(|v| !served.contains(v)) {
        volumes.retain(|v| !served.contains(v));
    }
    Err(PullError::Incomplete {
        release: format!("{} of {}", m.release, m.bundle_id),
        files: files.iter().map(|&i| m.files[i].path.clone()).collect(),
        volumes,
    })
}

fn part_path(fin: &Path) -> PathBuf {
    let mut s = fin.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

/// The chunks of `file` whose bytes do not hash to `f`'s signed digests.
fn bad_chunks(file: &File, f: &FileEntry) -> Vec<u64> {
    let mut buf = hash::range_buffer();
    (0..f.chunks.len() as u64)
        .filter(|&c| {
            let (a, b) = hash::chunk_range(f, c);
            match hash::hash_range(file, a, b, &mut buf) {
                Ok(d) => hash::to_hex(&d) != f.chunks[c as usize],
                Err(_) => true,
            }
        })
        .collect()
}

/// Copies into `part` every chunk in `missing` whose bytes at the same range of the older
/// file `old` hash to the new signed digest; removes them from `missing` and returns the
/// bytes copied.
fn reuse_chunks(old: &Path, part: &File, f: &FileEntry, missing: &mut Vec<u64>) -> u64 {
    let Ok(src) = File::open(old) else { return 0 };
    let len = src.metadata().map(|m| m.len()).unwrap_or(0);
    let mut copied = 0;
    missing.retain(|&c| {
        let (a, b) = hash::chunk_range(f, c);
        if b > len {
            return true;
        }
        let mut data = vec![0u8; (b - a) as usize];
        let same = src.read_exact_at(&mut data, a).is_ok()
            && hash::to_hex(&Sha256::digest(&data)) == f.chunks[c as usize];
        if same && part.write_all_at(&data, a).is_ok() {
            copied += b - a;
            return false;
        }
        true
    });
    copied
}

/// Copies a local file with the same sha256 into `part`, checking its chunks.
fn copy_local(src: &Path, part: &Path, f: &FileEntry) -> Result<(), ()> {
    let _ = fs::remove_file(part);
    match hash::copy_and_hash(src, part, f.chunk_size, &|_, _| {}) {
        Ok(d) if d.size == f.size && d.chunks == f.chunks && d.sha256 == f.sha256 => Ok(()),
        _ => {
            let _ = fs::remove_file(part);
            Err(())
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn worker(
    agent: &ureq::Agent,
    peer: &PeerState,
    name: &str,
    m: &Manifest,
    parts: &[Option<File>],
    peers: &[PeerState],
    queue: &Mutex<VecDeque<Job>>,
    in_flight: &AtomicUsize,
    left: &AtomicUsize,
    done: &AtomicU64,
    fetched: &AtomicU64,
    dropped: &Mutex<Vec<(String, String)>>,
    local_error: &Mutex<Option<PullError>>,
    total: u64,
    progress: Progress,
) {
    let drop_peer = |why: String| {
        if !peer.dropped.swap(true, Ordering::SeqCst) {
            if let Ok(mut d) = dropped.lock() {
                d.push((peer.base.clone(), why));
            }
        }
    };
    let mut buf = Vec::new();
    loop {
        if peer.dropped.load(Ordering::SeqCst) || left.load(Ordering::SeqCst) == 0 {
            return;
        }
        if local_error.lock().map(|e| e.is_some()).unwrap_or(true) {
            return;
        }
        let job = match queue.lock() {
            Ok(mut q) => match q.iter().position(|j| !peer.lacks.contains(&j.file)) {
                Some(i) => {
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    q.remove(i)
                }
                // Nothing left that a live peer can serve, and nothing in flight that
                // could come back: the pull cannot finish.
                None if in_flight.load(Ordering::SeqCst) == 0
                    && !q.iter().any(|j| {
                        peers.iter().any(|p| {
                            !p.dropped.load(Ordering::SeqCst) && !p.lacks.contains(&j.file)
                        })
                    }) =>
                {
                    return
                }
                None => None,
            },
            Err(_) => return,
        };
        let Some(job) = job else {
            // Others hold the last chunks; one may come back if its peer fails.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _flight = InFlight(in_flight);
        let f = &m.files[job.file];
        let (start, end) = hash::chunk_range(f, job.chunk);
        let url = format!("{}/tree/{name}/{}", peer.base, url_path(&f.path));
        let mut outcome = Err(String::new());
        for _ in 0..TRIES_PER_PEER {
            outcome = get_range(agent, &url, start, end, f.size, &mut buf);
            if outcome.is_ok() {
                break;
            }
        }
        let requeue = |job| {
            if let Ok(mut q) = queue.lock() {
                q.push_back(job);
            }
        };
        match outcome {
            Err(why) => {
                requeue(job);
                drop_peer(why);
                return;
            }
            Ok(()) => {
                let digest = hash::to_hex(&Sha256::digest(&buf));
                if digest != f.chunks[job.chunk as usize] {
                    requeue(job);
                    drop_peer(format!(
                        "sent bytes {start}..{end} of '{}' that do not match the signed manifest (chunk {}); dropped",
                        f.path, job.chunk
                    ));
                    return;
                }
                let Some(Some(file)) = parts.get(job.file) else {
                    return;
                };
                if let Err(e) = file.write_all_at(&buf, start) {
                    if let Ok(mut le) = local_error.lock() {
                        le.get_or_insert(PullError::Io {
                            action: "write",
                            path: f.path.clone(),
                            source: e,
                        });
                    }
                    return;
                }
                fetched.fetch_add(buf.len() as u64, Ordering::Relaxed);
                let d = done.fetch_add(buf.len() as u64, Ordering::Relaxed) + buf.len() as u64;
                progress(d, total);
                left.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

/// Counts a job in flight until dropped (requeued or done).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A manifest path as a URL path (each segment percent-encoded where needed).
fn url_path(p: &str) -> String {
    p.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// GETs bytes `start..end` of a file of `size` bytes into `buf`: `206` with the matching
/// `Content-Range`, or `200` when the range is the whole file.
fn get_range(
    agent: &ureq::Agent,
    url: &str,
    start: u64,
    end: u64,
    size: u64,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    buf.clear();
    if end == start {
        return Ok(());
    }
    let resp = agent
        .get(url)
        .header("Range", format!("bytes={start}-{}", end - 1))
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status().as_u16();
    match status {
        206 => {
            let want = format!("bytes {start}-{}/{size}", end - 1);
            let got = crate::fetch::client::header(&resp, "content-range").unwrap_or_default();
            if got != want {
                return Err(format!(
                    "GET {url}: asked for '{want}', got Content-Range '{}'",
                    crate::excerpt::excerpt(&got)
                ));
            }
        }
        200 if start == 0 && end == size => {}
        s => return Err(format!("GET {url} (bytes {start}..{end}): HTTP {s}")),
    }
    let len = end - start;
    resp.into_body()
        .into_reader()
        .take(len)
        .read_to_end(buf)
        .map_err(|e| format!("GET {url}: {e}"))?;
    if buf.len() as u64 != len {
        return Err(format!(
            "GET {url}: the connection ended after {} of {len} bytes",
            buf.len()
        ));
    }
    Ok(())
}

impl crate::diagnostic::Diagnostic for PullError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            PullError::BadPeer { .. } => Some("give HOST:PORT or http://HOST:PORT, as 'offgrid serve' prints it".into()),
            PullError::Peer { .. } => Some("is 'offgrid serve' running there, and reachable from here? ('offgrid serve --listen 0.0.0.0:8470' serves the network)".into()),
            PullError::NothingNewer { .. } => Some("check the peers with 'offgrid peers' or name one with --peer HOST:PORT".into()),
            PullError::NoneUsable { .. } => Some("the peers must serve releases signed by the keys this site trusts (see 'offgrid status')".into()),
            PullError::Ambiguous { .. } => Some("name one tree: --from http://HOST:PORT/tree/NAME/".into()),
            PullError::Incomplete { files, volumes, .. } => Some(format!(
                "serve the missing volume(s) {} at a peer ('offgrid serve --stick VOLUME' for each, several at once), or install from the media ('offgrid install --from VOLUME'); not served: {}; the chunks already here are kept",
                volumes.iter().map(u32::to_string).collect::<Vec<_>>().join(", "),
                files.iter().take(5).map(|f| format!("'{f}'")).collect::<Vec<_>>().join(", ")
            )),
            PullError::AllPeersFailed { dir, .. } => Some(format!("the verified chunks are kept in '{dir}'; run the same command again when a peer is back")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_host_port_or_http_urls() {
        assert_eq!(
            parse_peer("10.0.0.2:8470").unwrap(),
            ("http://10.0.0.2:8470".into(), None)
        );
        assert_eq!(
            parse_peer("http://pc:8470/tree/org.x-1.0/").unwrap(),
            ("http://pc:8470".into(), Some("org.x-1.0".into()))
        );
        for bad in [
            "pc",
            "https://pc:1",
            "http://pc:1/other",
            "http://u@pc:1",
            "",
        ] {
            assert!(parse_peer(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn url_paths_are_encoded_per_segment() {
        assert_eq!(url_path("models/a b.gguf"), "models/a%20b.gguf");
    }
}
