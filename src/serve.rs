//! `offgrid serve`: a read-only HTTP/1.1 server for the signed trees and update packs a
//! machine holds, so peers on the LAN and BitTorrent clients (as a BEP 19 web seed) can
//! fetch them (SPEC.md §12).
//!
//! A [`Catalog`] is built once at start from USB trees, a site home's kept versions and
//! folders of packs; only what it lists is served: a tree's `manifest.toml`, its
//! `signatures/*.minisig` and the files its manifest names, by path (`/tree/NAME/PATH`)
//! and by sha256 (`/sha256/HEX`), and each pack (`/pack/NAME`). Every open re-checks
//! that the real path stays inside the served root (no symlink escape) and is a regular
//! file. `GET` and `HEAD`, one `Range` per request (206/416), `ETag` with
//! `If-None-Match`/`If-Range`, a global rate cap shared by all responses. The HTTP
//! parsing is tiny_http's (blocking, a thread per connection); a fixed pool of workers
//! answers requests and stops when the stop flag is raised.
//!
//! A tree whose files are stored as parts (a volume of a release spread over volumes,
//! or a single tree holding parts: it carries `volume.toml`, SPEC.md §16.6–16.7) is
//! served as the release it is: each file the manifest names, at its path, with its
//! bytes read from its parts in order, a range served from the parts it covers. Several
//! volumes of one release (the same signed manifest) given as several `--stick`s are
//! one tree; a file with a piece on a volume not given is not served, and the index
//! lists it as `missing`.
//!
//! Known gaps: no TLS (the trust is in the signatures, not the transport); the sha256
//! index comes from the manifests, whose bytes are not re-hashed here (a damaged file is
//! served as it is, and the client's verification refuses it); multi-range requests get
//! the whole file (allowed by RFC 9110); packs are not reachable by sha256.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tiny_http::{Header, Method, Request, Response, StatusCode};

use crate::manifest::{self, Manifest};
use crate::torrent;
use crate::update::home::Home;
use crate::volume;

/// Version of the `GET /` index document.
pub const INDEX_FORMAT: &str = "offgrid-serve/1";
/// Requests answered at the same time (more wait in tiny_http's queue).
pub const WORKERS: usize = 16;

/// Errors of this area.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on '{addr}': {reason}")]
    Bind { addr: String, reason: String },
    #[error("'{path}' cannot be served: {reason}")]
    Source {
        path: String,
        reason: String,
        help: &'static str,
    },
    #[error("nothing to serve")]
    Nothing,
    #[error(transparent)]
    Torrent(#[from] torrent::TorrentError),
}

impl ServeError {
    /// Serving errors are never a clean "no" (SPEC.md §8).
    pub fn is_refusal(&self) -> bool {
        false
    }
}

/// One served tree.
#[derive(Debug, Clone)]
pub struct Tree {
    /// `BUNDLE_ID-RELEASE`, the torrent name of the tree (SPEC.md §13).
    pub name: String,
    pub bundle_id: String,
    pub release: String,
    pub manifest_sha256: String,
    /// Canonical root folder (of the first volume given, for a release in volumes).
    pub root: PathBuf,
    /// Served paths inside the tree, and where their bytes are.
    pub paths: BTreeMap<String, Served>,
    /// For a tree stored as volumes (it carries `volume.toml`): the volume count and the
    /// canonical root of each volume served.
    pub volumes: Option<(u32, BTreeMap<u32, PathBuf>)>,
    /// Files of the manifest not served: a piece of each is on a volume not given.
    pub missing: Vec<String>,
    manifest: Manifest,
}

/// `(canonical root, path under it, length)` of one stored piece of a served file.
pub type StoredPiece = (PathBuf, String, u64);

/// Where a served file's bytes are: one stored file, or its parts in order.
#[derive(Debug, Clone)]
pub struct Served {
    /// The file's length (as the manifest says, or as found at start for the head).
    pub size: u64,
    /// `(canonical root, path under it, length)` of each stored piece, in file order;
    /// one piece whose length is taken from the disk when it is the whole file.
    pub pieces: Vec<StoredPiece>,
}

impl Served {
    fn whole(root: &Path, rel: &str, size: u64) -> Served {
        Served {
            size,
            pieces: vec![(root.to_path_buf(), rel.to_owned(), size)],
        }
    }
}

/// One served pack.
#[derive(Debug, Clone)]
pub struct Pack {
    pub name: String,
    /// Canonical folder holding it.
    pub dir: PathBuf,
    pub size: u64,
}

/// The chain of trust roots served at `/roots/NAME` (SPEC.md §12.2, §19): the newest
/// chain among the served trees' `roots/` folders and the home's.
#[derive(Debug, Clone)]
pub struct Roots {
    /// Canonical folder holding them.
    pub dir: PathBuf,
    /// File names (`N.root.toml`, `N.KEYID.minisig`), each read bounded at start.
    pub files: Vec<String>,
    /// The newest root version.
    pub newest: u64,
}

/// Everything a server offers, fixed at start.
#[derive(Debug, Default)]
pub struct Catalog {
    pub trees: Vec<Tree>,
    pub packs: Vec<Pack>,
    pub roots: Option<Roots>,
    by_sha: HashMap<String, (usize, String)>,
}

fn src_err(path: &Path, reason: impl Into<String>, help: &'static str) -> ServeError {
    ServeError::Source {
        path: path.display().to_string(),
        reason: reason.into(),
        help,
    }
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h)?;
    Ok(hex::encode(h.finalize()))
}

impl Catalog {
    /// Adds the USB tree at `root`. A further volume of a release already served (the
    /// same signed manifest, another volume number) joins that tree. Ok(false): a tree of
    /// that name is already served and this one adds nothing to it (the first one wins).
    pub fn add_tree(&mut self, root: &Path) -> Result<bool, ServeError> {
        let canon = fs::canonicalize(root)
            .map_err(|e| src_err(root, e.to_string(), "pass an existing USB tree folder"))?;
        let (m, bytes): (Manifest, Vec<u8>) = torrent::read_manifest(&canon)?;
        let name = torrent::tree_name(&m);
        let manifest_sha256 = hex::encode(Sha256::digest(&bytes));
        let marker = volume::read_marker(&canon)
            .map_err(|e| src_err(root, e.to_string(), "copy the volume again from HQ"))?;
        if let Some(mk) = &marker {
            mk.check(&canon, &m, &manifest_sha256)
                .map_err(|e| src_err(root, e.to_string(), "copy the volume again from HQ"))?;
        }
        if let Some(idx) = self.trees.iter().position(|t| t.name == name) {
            let t = &mut self.trees[idx];
            let Some(((_, roots), mk)) = t.volumes.as_mut().zip(marker) else {
                return Ok(false);
            };
            if t.manifest_sha256 != manifest_sha256 || roots.contains_key(&mk.volume) {
                return Ok(false);
            }
            roots.insert(mk.volume, canon.clone());
            self.add_roots(&canon.join(crate::trustroot::ROOTS_DIR));
            self.complete(idx);
            return Ok(true);
        }
        let idx = self.trees.len();
        let mut paths = BTreeMap::new();
        paths.insert(
            manifest::MANIFEST_FILE.to_owned(),
            Served::whole(&canon, manifest::MANIFEST_FILE, bytes.len() as u64),
        );
        self.by_sha
            .entry(manifest_sha256.clone())
            .or_insert((idx, manifest::MANIFEST_FILE.to_owned()));
        for s in torrent::signature_files(&canon)? {
            let p = canon.join(&s);
            let sha = sha256_file(&p)
                .map_err(|e| src_err(&p, e.to_string(), "check the tree's permissions"))?;
            let size = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            self.by_sha.entry(sha).or_insert((idx, s.clone()));
            paths.insert(s.clone(), Served::whole(&canon, &s, size));
        }
        self.add_roots(&canon.join(crate::trustroot::ROOTS_DIR));
        self.trees.push(Tree {
            name,
            bundle_id: m.bundle_id.clone(),
            release: m.release.to_string(),
            manifest_sha256,
            volumes: marker.map(|mk| (mk.volumes, BTreeMap::from([(mk.volume, canon.clone())]))),
            root: canon,
            paths,
            missing: m.files.iter().map(|f| f.path.clone()).collect(),
            manifest: m,
        });
        self.complete(idx);
        Ok(true)
    }

    /// Serves every file of tree `idx` still missing whose pieces are now all on the
    /// volumes given: a tree of whole files has each at its path; a volume's files are
    /// read from their pieces (SPEC.md §12.1).
    fn complete(&mut self, idx: usize) {
        let t = &mut self.trees[idx];
        let mut pieces: BTreeMap<usize, Vec<manifest::Piece>> = BTreeMap::new();
        if t.volumes.is_some() {
            for p in t.manifest.pieces(None) {
                pieces.entry(p.file).or_default().push(p);
            }
        }
        let mut still = Vec::new();
        for (i, f) in t.manifest.files.iter().enumerate() {
            if !t.missing.contains(&f.path) {
                continue;
            }
            let served = match &t.volumes {
                None => Some(Served::whole(&t.root, &f.path, f.size)),
                Some((_, roots)) => pieces
                    .remove(&i)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|p| {
                        let root = roots.get(&p.volume.unwrap_or(1))?;
                        Some((root.clone(), p.path, p.size))
                    })
                    .collect::<Option<Vec<_>>>()
                    .map(|pieces| Served {
                        size: f.size,
                        pieces,
                    }),
            };
            match served {
                Some(s) => {
                    self.by_sha
                        .entry(f.sha256.clone())
                        .or_insert((idx, f.path.clone()));
                    t.paths.insert(f.path.clone(), s);
                }
                None => still.push(f.path.clone()),
            }
        }
        t.missing = still;
    }

    /// Adds the current and the previous version of the site home at `home`.
    pub fn add_home(&mut self, home: &Path) -> Result<usize, ServeError> {
        let h = Home::resolve(Some(home));
        let state = h
            .read_state()
            .map_err(|e| {
                src_err(
                    home,
                    e.to_string(),
                    "pass the home given to 'offgrid install'",
                )
            })?
            .ok_or_else(|| {
                src_err(
                    home,
                    "nothing is installed there",
                    "pass the home given to 'offgrid install --home H'",
                )
            })?;
        self.add_roots(&h.root.join(crate::trustroot::ROOTS_DIR));
        let mut n = 0;
        for v in state.kept() {
            if self.add_tree(&h.version_dir(&v.dir))? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Adds every regular, non-hidden file directly in `dir` as a pack.
    pub fn add_pack_dir(&mut self, dir: &Path) -> Result<usize, ServeError> {
        let canon = fs::canonicalize(dir).map_err(|e| {
            src_err(
                dir,
                e.to_string(),
                "pass an existing folder of update packs",
            )
        })?;
        let rd = fs::read_dir(&canon).map_err(|e| {
            src_err(
                dir,
                e.to_string(),
                "pass an existing folder of update packs",
            )
        })?;
        let mut found = Vec::new();
        for e in rd {
            let e = e.map_err(|e| src_err(dir, e.to_string(), "check the folder's permissions"))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            if name.starts_with('.') || !meta.is_file() {
                continue;
            }
            found.push((name, meta.len()));
        }
        found.sort();
        let mut n = 0;
        for (name, size) in found {
            if self.packs.iter().any(|p| p.name == name) {
                continue;
            }
            self.packs.push(Pack {
                name,
                dir: canon.clone(),
                size,
            });
            n += 1;
        }
        Ok(n)
    }

    /// Serves the chain of roots in `dir` when it is newer than the one served so far.
    /// A folder that is missing or does not read as a chain is skipped (peers check
    /// every root against their own keys anyway).
    fn add_roots(&mut self, dir: &Path) {
        let Ok(canon) = fs::canonicalize(dir) else {
            return;
        };
        let Ok(files) = crate::trustroot::files_of(&crate::trustroot::Source::Dir(canon.clone()))
        else {
            return;
        };
        let newest = files
            .iter()
            .filter_map(|(n, _)| n.strip_suffix(".root.toml")?.parse::<u64>().ok())
            .max();
        let Some(newest) = newest else { return };
        if self.roots.as_ref().is_some_and(|r| r.newest >= newest) {
            return;
        }
        self.roots = Some(Roots {
            dir: canon,
            files: files.into_iter().map(|(n, _)| n).collect(),
            newest,
        });
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.trees.is_empty() && self.packs.is_empty()
    }

    /// The `GET /` document (SPEC.md §12.2).
    pub fn index_json(&self) -> serde_json::Value {
        serde_json::json!({
            "format": INDEX_FORMAT,
            "trees": self.trees.iter().map(|t| {
                let mut e = serde_json::json!({
                    "name": t.name,
                    "bundle_id": t.bundle_id,
                    "release": t.release,
                    "manifest_sha256": t.manifest_sha256,
                    "files": t.paths.len(),
                    "url": format!("/tree/{}/", t.name),
                    "missing": t.missing,
                });
                if let Some((count, roots)) = &t.volumes {
                    e["volumes"] = serde_json::json!({
                        "count": count,
                        "served": roots.keys().collect::<Vec<_>>(),
                    });
                }
                e
            }).collect::<Vec<_>>(),
            "packs": self.packs.iter().map(|p| serde_json::json!({
                "name": p.name,
                "size": p.size,
                "url": format!("/pack/{}", p.name),
            })).collect::<Vec<_>>(),
            "roots": self.roots.as_ref().map(|r| r.files.clone()).unwrap_or_default(),
        })
    }

    /// The file a request path names, before any disk access: its name and where its
    /// bytes are (`(root, relative path, length)` of each piece; the length of a single
    /// piece is the one found on disk).
    fn resolve(&self, segs: &[String]) -> Option<(String, Vec<StoredPiece>)> {
        let served = |t: &Tree, rel: String| {
            let s = t.paths.get(&rel)?;
            Some((rel, s.pieces.clone()))
        };
        let one = |dir: &Path, name: &str| {
            Some((
                name.to_owned(),
                vec![(dir.to_path_buf(), name.to_owned(), 0)],
            ))
        };
        match segs {
            [kind, name, rest @ ..] if kind == "tree" && !rest.is_empty() => {
                let t = self.trees.iter().find(|t| &t.name == name)?;
                served(t, rest.join("/"))
            }
            [kind, name] if kind == "pack" => {
                let p = self.packs.iter().find(|p| &p.name == name)?;
                one(&p.dir, &p.name)
            }
            [kind, name] if kind == "roots" => {
                let r = self.roots.as_ref()?;
                r.files.contains(name).then_some(())?;
                one(&r.dir, name)
            }
            [kind, hex] if kind == "sha256" => {
                let (i, rel) = self.by_sha.get(&hex.to_ascii_lowercase())?;
                served(&self.trees[*i], rel.clone())
            }
            _ => None,
        }
    }
}

/// A byte range requested with `Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeReq {
    /// No usable range: send the whole file.
    Whole,
    /// Inclusive `[first, last]`.
    Part(u64, u64),
    /// Syntactically valid but outside the file: 416.
    Unsatisfiable,
}

/// Parses one `Range` header value against a file of `len` bytes (RFC 9110 §14).
/// Anything but a single `bytes=` range is ignored (the whole file is sent).
pub fn parse_range(value: &str, len: u64) -> RangeReq {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeReq::Whole;
    };
    if spec.contains(',') {
        return RangeReq::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    if a.is_empty() {
        // Suffix: the last N bytes.
        return match num(b) {
            None => RangeReq::Whole,
            Some(0) => RangeReq::Unsatisfiable,
            Some(_) if len == 0 => RangeReq::Unsatisfiable,
            Some(n) => RangeReq::Part(len.saturating_sub(n), len - 1),
        };
    }
    let Some(first) = num(a) else {
        return RangeReq::Whole;
    };
    let last = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(l) if l >= first => l,
            _ => return RangeReq::Whole,
        }
    };
    if first >= len {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(first, last.min(len - 1))
}

/// A bandwidth cap shared by every response.
#[derive(Debug)]
pub struct Limiter {
    rate: u64,
    next: Mutex<Instant>,
}

impl Limiter {
    pub fn new(bytes_per_sec: u64) -> Limiter {
        Limiter {
            rate: bytes_per_sec.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    /// Waits until `n` more bytes may be sent.
    fn take(&self, n: u64) {
        let wait = {
            let Ok(mut next) = self.next.lock() else {
                return;
            };
            let now = Instant::now();
            // At most 100 ms of unused time is banked, so an idle server cannot burst.
            let floor = now.checked_sub(Duration::from_millis(100)).unwrap_or(now);
            let start = (*next).max(floor);
            *next = start + Duration::from_secs_f64(n as f64 / self.rate as f64);
            next.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Largest read that keeps the pacing smooth (about 1/20 s of traffic).
    fn chunk(&self) -> usize {
        (self.rate / 20).clamp(1024, 256 << 10) as usize
    }
}

/// The bytes of a range of a file stored as pieces, read from each piece in turn.
struct Chain {
    pieces: std::collections::VecDeque<io::Take<File>>,
}

impl Chain {
    /// Bytes `[first, first + count)` of the file whose pieces are `files` (each with
    /// its length), in order.
    fn new(files: Vec<(File, u64)>, first: u64, count: u64) -> io::Result<Chain> {
        let mut pieces = std::collections::VecDeque::new();
        let (mut skip, mut left) = (first, count);
        for (mut f, len) in files {
            if left == 0 {
                break;
            }
            if skip >= len {
                skip -= len;
                continue;
            }
            if skip > 0 {
                f.seek(SeekFrom::Start(skip))?;
            }
            let take = (len - skip).min(left);
            pieces.push_back(f.take(take));
            left -= take;
            skip = 0;
        }
        Ok(Chain { pieces })
    }
}

impl Read for Chain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(p) = self.pieces.front_mut() {
            let n = p.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.pieces.pop_front();
        }
        Ok(0)
    }
}

/// A body reader that obeys the limiter and stops when the server stops.
struct Body<'a> {
    inner: Chain,
    limiter: Option<&'a Limiter>,
    stop: &'a AtomicBool,
}

impl Read for Body<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(io::Error::other("server stopping"));
        }
        let max = self.limiter.map_or(buf.len(), |l| l.chunk().min(buf.len()));
        let n = self.inner.read(&mut buf[..max])?;
        if let Some(l) = self.limiter {
            l.take(n as u64);
        }
        Ok(n)
    }
}

/// Options of [`Server::run`].
#[derive(Debug, Default)]
pub struct ServeOptions {
    /// Bytes per second for all responses together.
    pub limit_rate: Option<u64>,
}

/// One answered request, for the request log.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub remote: Option<SocketAddr>,
    pub method: String,
    pub url: String,
    pub status: u16,
    pub bytes: u64,
}

impl std::fmt::Display for LogLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let remote = self
            .remote
            .map_or_else(|| "-".to_owned(), |r| r.to_string());
        let url: String = self
            .url
            .chars()
            .take(200)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        write!(
            f,
            "{remote} \"{} {url}\" {} {}",
            self.method, self.status, self.bytes
        )
    }
}

/// A bound listener.
pub struct Server {
    http: tiny_http::Server,
}

impl Server {
    /// Listens on `addr` (`HOST:PORT`; port 0 picks a free one).
    pub fn bind(addr: &str) -> Result<Server, ServeError> {
        let http = tiny_http::Server::http(addr).map_err(|e| ServeError::Bind {
            addr: addr.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Server { http })
    }

    /// The address actually listened on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.http.server_addr().to_ip()
    }

    /// Answers requests until `stop` is raised; responses in flight end at once then.
    pub fn run(
        &self,
        catalog: &Catalog,
        opts: &ServeOptions,
        stop: &AtomicBool,
        log: &(dyn Fn(&LogLine) + Sync),
    ) {
        let limiter = opts.limit_rate.map(Limiter::new);
        std::thread::scope(|s| {
            for _ in 0..WORKERS {
                s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        match self.http.recv_timeout(Duration::from_millis(200)) {
                            Ok(Some(req)) => {
                                let line = answer(req, catalog, limiter.as_ref(), stop);
                                log(&line);
                            }
                            Ok(None) => {}
                            Err(_) => std::thread::sleep(Duration::from_millis(50)),
                        }
                    }
                });
            }
        });
    }
}

fn header(name: &str, value: &str) -> Header {
    // Names and values here are ASCII built by this module.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap_or_else(|_| {
        Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).expect("static header")
    })
}

fn req_header<'r>(req: &'r Request, name: &str) -> Option<&'r str> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// Splits and percent-decodes a request path; None for anything unsafe (`..`, `.`,
/// empty segments, backslashes, NUL, invalid UTF-8).
pub fn decode_path(url: &str) -> Option<Vec<String>> {
    let path = url.split(['?', '#']).next().unwrap_or("");
    let path = path.strip_prefix('/')?;
    if path.is_empty() {
        return Some(Vec::new());
    }
    let mut segs = Vec::new();
    for raw in path.split('/') {
        let mut bytes = Vec::with_capacity(raw.len());
        let b = raw.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = raw.get(i + 1..i + 3)?;
                bytes.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            } else {
                bytes.push(b[i]);
                i += 1;
            }
        }
        let s = String::from_utf8(bytes).ok()?;
        if s.is_empty() || s == "." || s == ".." || s.contains(['\\', '/', '\0']) {
            return None;
        }
        segs.push(s);
    }
    Some(segs)
}

fn answer(
    req: Request,
    catalog: &Catalog,
    limiter: Option<&Limiter>,
    stop: &AtomicBool,
) -> LogLine {
    let mut line = LogLine {
        remote: req.remote_addr().copied(),
        method: req.method().to_string(),
        url: req.url().to_owned(),
        status: 0,
        bytes: 0,
    };
    let simple = |req: Request, code: u16, text: &str, extra: Vec<Header>, line: &mut LogLine| {
        let mut r = Response::from_string(format!("{text}\n"))
            .with_status_code(StatusCode(code))
            .with_header(header("Content-Type", "text/plain; charset=utf-8"));
        for h in extra {
            r.add_header(h);
        }
        line.status = code;
        let _ = req.respond(r);
    };
    let head = match req.method() {
        Method::Get => false,
        Method::Head => true,
        _ => {
            simple(
                req,
                405,
                "405 method not allowed: this server only reads",
                vec![header("Allow", "GET, HEAD")],
                &mut line,
            );
            return line;
        }
    };
    let Some(segs) = decode_path(req.url()) else {
        simple(req, 400, "400 bad request: path refused", vec![], &mut line);
        return line;
    };
    if segs.is_empty() || segs == ["index.json"] {
        let body = catalog.index_json().to_string();
        line.status = 200;
        line.bytes = if head { 0 } else { body.len() as u64 };
        let r = Response::from_string(body).with_header(header("Content-Type", "application/json"));
        let _ = req.respond(r);
        return line;
    }
    let Some((rel, pieces)) = catalog.resolve(&segs) else {
        simple(req, 404, "404 not found", vec![], &mut line);
        return line;
    };
    let single = pieces.len() == 1;
    let mut files = Vec::with_capacity(pieces.len());
    let mut validators = Vec::with_capacity(pieces.len());
    for (root, piece, size) in &pieces {
        let (file, meta) = match open_confined(root, piece) {
            Ok(r) => r,
            Err((code, text)) => {
                simple(req, code, text, vec![], &mut line);
                return line;
            }
        };
        // A part must be as long as the manifest says, or the file would shift.
        if !single && meta.len() != *size {
            simple(
                req,
                404,
                "404 not found: a part of the file on this machine is not the size its manifest says",
                vec![],
                &mut line,
            );
            return line;
        }
        let mtime = meta.mtime() as u64 * 1_000_000_000 + meta.mtime_nsec() as u64;
        validators.push((meta.ino(), meta.len(), mtime));
        files.push((file, meta.len()));
    }
    let len: u64 = files.iter().map(|f| f.1).sum();
    let etag = match validators.as_slice() {
        [(ino, len, mtime)] => format!("\"{ino:x}-{len:x}-{mtime:x}\""),
        many => {
            let mut h = Sha256::new();
            for (ino, len, mtime) in many {
                h.update(format!("{ino:x}-{len:x}-{mtime:x};"));
            }
            format!("\"p-{}\"", &hex::encode(h.finalize())[..24])
        }
    };
    let ctype = if rel.ends_with(".toml") {
        "application/toml"
    } else {
        "application/octet-stream"
    };
    let common = vec![
        header("ETag", &etag),
        header("Accept-Ranges", "bytes"),
        header("Content-Type", ctype),
    ];
    if req_header(&req, "If-None-Match")
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        line.status = 304;
        let mut r = Response::empty(StatusCode(304));
        for h in common {
            r.add_header(h);
        }
        let _ = req.respond(r);
        return line;
    }
    let if_range_ok = req_header(&req, "If-Range").is_none_or(|v| v.trim() == etag);
    let range = match req_header(&req, "Range") {
        Some(v) if if_range_ok => parse_range(v, len),
        _ => RangeReq::Whole,
    };
    let (status, first, count, mut headers) = match range {
        RangeReq::Whole => (200, 0, len, common),
        RangeReq::Part(a, b) => {
            let mut h = common;
            h.push(header("Content-Range", &format!("bytes {a}-{b}/{len}")));
            (206, a, b - a + 1, h)
        }
        RangeReq::Unsatisfiable => {
            let mut extra = common;
            extra.retain(|h| !h.field.equiv("Content-Type"));
            extra.push(header("Content-Range", &format!("bytes */{len}")));
            simple(req, 416, "416 range not satisfiable", extra, &mut line);
            return line;
        }
    };
    let Ok(chain) = Chain::new(files, first, count) else {
        simple(req, 500, "500 cannot read the file", vec![], &mut line);
        return line;
    };
    let body = Body {
        inner: chain,
        limiter,
        stop,
    };
    let mut r = Response::new(
        StatusCode(status),
        Vec::new(),
        body,
        Some(count as usize),
        None,
    )
    // Always Content-Length (tiny_http would switch to chunked above 32 KiB).
    .with_chunked_threshold(usize::MAX);
    for h in headers.drain(..) {
        r.add_header(h);
    }
    line.status = status;
    line.bytes = if head { 0 } else { count };
    if req.respond(r).is_err() {
        line.bytes = 0;
    }
    line
}

/// Opens `rel` under `root` when its real path (symlinks resolved now) stays inside
/// `root` and it is a regular file; else the status and text to answer.
fn open_confined(root: &Path, rel: &str) -> Result<(File, fs::Metadata), (u16, &'static str)> {
    let real = match fs::canonicalize(root.join(rel)) {
        Ok(p) if p.starts_with(root) => p,
        Ok(_) => return Err((403, "403 forbidden: the file leaves the served folder")),
        Err(_) => return Err((404, "404 not found: the file is not on this machine")),
    };
    let file = File::open(&real).map_err(|_| (404, "404 not found"))?;
    match file.metadata() {
        Ok(m) if m.is_file() => Ok((file, m)),
        _ => Err((403, "403 forbidden: not a regular file")),
    }
}

impl crate::diagnostic::Diagnostic for ServeError {
    fn help(&self) -> Option<String> {
        match self {
            ServeError::Bind { .. } => {
                Some("choose a free port with --listen ADDR:PORT (port 0 picks one)".into())
            }
            ServeError::Source { help, .. } => Some(help.to_string()),
            ServeError::Nothing => Some("pass --stick ROOT, --home H or --packs DIR".into()),
            ServeError::Torrent(e) => crate::diagnostic::Diagnostic::help(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeReq::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range("bytes=90-200", 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeReq::Part(90, 99));
        assert_eq!(parse_range("bytes=-200", 100), RangeReq::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeReq::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeReq::Whole);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeReq::Whole);
        assert_eq!(parse_range("items=0-1", 100), RangeReq::Whole);
        assert_eq!(parse_range("bytes=x-1", 100), RangeReq::Whole);
    }

    #[test]
    fn a_range_is_read_across_the_pieces_it_covers() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..30u8).collect();
        let mut files = Vec::new();
        for (k, piece) in bytes.chunks(10).enumerate() {
            let p = dir.path().join(format!("p{k}"));
            fs::write(&p, piece).unwrap();
            files.push(p);
        }
        let open = || files.iter().map(|p| (File::open(p).unwrap(), 10)).collect();
        for (first, count) in [(0, 30), (5, 10), (9, 2), (10, 10), (25, 5), (29, 1), (0, 0)] {
            let mut out = Vec::new();
            Chain::new(open(), first, count)
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(
                out,
                &bytes[first as usize..(first + count) as usize],
                "{first}+{count}"
            );
        }
    }

    #[test]
    fn paths() {
        assert_eq!(decode_path("/").unwrap(), Vec::<String>::new());
        assert_eq!(
            decode_path("/tree/a%20b/c?x=1").unwrap(),
            vec!["tree", "a b", "c"]
        );
        assert!(decode_path("/tree/x/../y").is_none());
        assert!(decode_path("/tree/x/%2e%2e/y").is_none());
        assert!(decode_path("/tree/x/a%2fb").is_none());
        assert!(decode_path("/tree//y").is_none());
        assert!(decode_path("/tree/%zz").is_none());
        assert!(decode_path("/tree/%00").is_none());
        assert!(decode_path("relative").is_none());
    }

    #[test]
    fn the_index_example_matches_what_is_served() {
        let ex: serde_json::Value =
            serde_json::from_str(include_str!("../formats/serve-index.example.json")).unwrap();
        assert_eq!(ex["format"], INDEX_FORMAT);
        let mine = Catalog::default().index_json();
        let keys =
            |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&ex), keys(&mine));
    }
}
