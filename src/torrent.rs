//! BitTorrent v1 metainfo (BEP 3) for a signed USB tree or an update pack, so stock
//! clients can move the bytes while offgrid keeps the trust (SPEC.md §13).
//!
//! A tree becomes a multi-file torrent named `BUNDLE_ID-RELEASE` holding `manifest.toml`,
//! every `signatures/*.minisig` and every file the manifest names, sorted by path as raw
//! bytes (the order mktorrent uses, so both give the same info-hash); files the manifest
//! does not name are left out. A volume (or a tree holding parts) becomes a torrent of
//! what it stores: its `volume.toml` and the pieces the manifest puts on it, named
//! `BUNDLE_ID-RELEASE-volK-of-N`. A pack becomes a single-file torrent named after the file.
//! Pieces are hashed in parallel with positional reads. Web seeds (BEP 19 `url-list`),
//! trackers (`announce`, BEP 12 `announce-list`) and the private flag (BEP 27) are
//! supported; the info-hash and a magnet link (BEP 9) are returned.
//!
//! Known gaps: v1 only (no BEP 52 v2/hybrid: v2 needs per-file 16 KiB merkle trees and
//! pad files, which would change the v1 layout stock v1 tools produce); the file sizes are
//! taken from the disk and must equal the manifest's, but the bytes are not checked
//! against it here (callers verify first when they have keys).

pub mod bencode;

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::manifest::{self, Manifest};
use bencode::{dict, Value};

/// Smallest piece size offgrid accepts (BEP 52's block size; clients handle less poorly).
pub const MIN_PIECE: u64 = 16 << 10;
/// Largest piece size offgrid accepts.
pub const MAX_PIECE: u64 = 64 << 20;
/// Pieces the default piece size aims to stay under.
pub const TARGET_PIECES: u64 = 2000;
/// Smallest default piece size.
pub const DEFAULT_MIN_PIECE: u64 = 32 << 10;
/// Largest default piece size.
pub const DEFAULT_MAX_PIECE: u64 = 16 << 20;
/// The file beside a release in the HQ history that lists its torrents.
pub const HISTORY_FILE: &str = "torrents.toml";

/// Errors of this area.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    #[error("'{path}' is not a USB tree: it has no manifest.toml")]
    NotATree { path: String },
    #[error("manifest '{path}' cannot be used: {reason}")]
    BadManifest {
        path: String,
        root: String,
        reason: String,
    },
    #[error("'{path}' does not match the manifest: {reason}")]
    TreeMismatch {
        path: String,
        root: String,
        reason: String,
    },
    #[error("piece size {size} is not a power of two between 16 KiB and 64 MiB")]
    BadPieceSize { size: u64 },
    #[error("torrent name '{name}' is not usable: {reason}")]
    BadName { name: String, reason: String },
    #[error("'{url}' is not a usable {what} URL")]
    BadUrl { url: String, what: &'static str },
    #[error("there is nothing to share in '{path}' (0 bytes)")]
    Empty { path: String },
    #[error("cannot {op} '{path}': {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("HQ history '{dir}': {reason}")]
    History {
        dir: String,
        path: String,
        reason: String,
    },
}

impl TorrentError {
    /// True for a clean "no" (SPEC.md §8): a tree that does not match its manifest.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            TorrentError::BadManifest { .. } | TorrentError::TreeMismatch { .. }
        )
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TorrentError + 'a {
    move |source| TorrentError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// One file of a torrent.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Path inside the torrent, `/`-separated (a tree), or the file name (a pack).
    pub path: String,
    /// Where the bytes are.
    pub source: PathBuf,
    pub size: u64,
}

/// What a torrent describes.
#[derive(Debug, Clone)]
pub struct Input {
    /// The torrent name (`info.name`).
    pub name: String,
    /// Multi-file (a tree) or single-file (a pack).
    pub multi: bool,
    pub files: Vec<InputFile>,
    /// The tree's manifest bytes (None for a pack).
    pub manifest_bytes: Option<Vec<u8>>,
}

impl Input {
    /// Sum of the file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The default torrent name of a release: `BUNDLE_ID-RELEASE`.
pub fn tree_name(m: &Manifest) -> String {
    format!("{}-{}", m.bundle_id, m.release)
}

/// Reads `root/manifest.toml` (bounded, parsed) without evaluating signatures.
pub fn read_manifest(root: &Path) -> Result<(Manifest, Vec<u8>), TorrentError> {
    let mpath = root.join(manifest::MANIFEST_FILE);
    let f = match File::open(&mpath) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TorrentError::NotATree {
                path: root.display().to_string(),
            })
        }
        Err(e) => return Err(io_err("read", &mpath)(e)),
    };
    let bad = |reason: String| TorrentError::BadManifest {
        path: mpath.display().to_string(),
        root: root.display().to_string(),
        reason,
    };
    let meta = f.metadata().map_err(io_err("read", &mpath))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    f.take(manifest::MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", &mpath))?;
    if bytes.len() as u64 > manifest::MAX_MANIFEST_BYTES {
        return Err(bad(format!(
            "larger than {} bytes",
            manifest::MAX_MANIFEST_BYTES
        )));
    }
    let m = Manifest::parse(&bytes).map_err(|e| bad(crate::diagnostic::with_help(&e)))?;
    Ok((m, bytes))
}

/// The signature files of a tree, `signatures/NAME.minisig`, sorted by name.
pub fn signature_files(root: &Path) -> Result<Vec<String>, TorrentError> {
    let dir = root.join(manifest::SIGNATURES_DIR);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &dir)(e)),
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.map_err(io_err("read", &dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && name.ends_with(".minisig") && !name.starts_with('.') {
            names.push(format!("{}/{name}", manifest::SIGNATURES_DIR));
        }
    }
    names.sort();
    Ok(names)
}

/// The files of the tree at `root` (SPEC.md §13.1): manifest, signatures, every file the
/// manifest names, sorted by path as bytes; each must be a regular file of the size the
/// manifest says.
pub fn tree_input(root: &Path, name: Option<&str>) -> Result<Input, TorrentError> {
    let (m, bytes) = read_manifest(root)?;
    // A volume, or a tree holding parts, travels as stored: its marker and the pieces
    // the manifest puts on it (SPEC.md §13.1, §16.6), so what a client downloads
    // verifies as that volume.
    let marker = crate::volume::read_marker(root)
        .ok()
        .flatten()
        .filter(|mk| mk.bundle_id == m.bundle_id && mk.release == m.release.to_string());
    let default_name = match &marker {
        Some(mk) if mk.volumes > 1 => {
            format!("{}-vol{}-of-{}", tree_name(&m), mk.volume, mk.volumes)
        }
        _ => tree_name(&m),
    };
    let stored = crate::volume::as_stored_at(root, m);
    let mut paths: Vec<(String, Option<u64>)> = vec![(manifest::MANIFEST_FILE.into(), None)];
    paths.extend(signature_files(root)?.into_iter().map(|p| (p, None)));
    if marker.is_some() {
        paths.push((crate::volume::MARKER_FILE.into(), None));
    }
    paths.extend(stored.files.iter().map(|f| (f.path.clone(), Some(f.size))));
    paths.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut files = Vec::with_capacity(paths.len());
    for (p, want) in paths {
        let source = root.join(&p);
        let mismatch = |reason: String| TorrentError::TreeMismatch {
            path: source.display().to_string(),
            root: root.display().to_string(),
            reason,
        };
        let meta = match fs::symlink_metadata(&source) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(mismatch("the file is missing".into()))
            }
            Err(e) => return Err(io_err("read", &source)(e)),
        };
        if !meta.is_file() {
            return Err(mismatch("not a regular file".into()));
        }
        if let Some(w) = want {
            if meta.len() != w {
                return Err(mismatch(format!(
                    "{} bytes on disk, {w} in the manifest",
                    meta.len()
                )));
            }
        }
        files.push(InputFile {
            path: p,
            source,
            size: meta.len(),
        });
    }
    let name = name.map_or_else(|| default_name, str::to_owned);
    check_name(&name)?;
    Ok(Input {
        name,
        multi: true,
        files,
        manifest_bytes: Some(bytes),
    })
}

/// A single-file torrent of the file at `path` (an update pack).
pub fn file_input(path: &Path, name: Option<&str>) -> Result<Input, TorrentError> {
    let meta = fs::metadata(path).map_err(io_err("read", path))?;
    let fname = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.map_or(fname, str::to_owned);
    check_name(&name)?;
    if meta.len() == 0 {
        return Err(TorrentError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok(Input {
        name: name.clone(),
        multi: false,
        files: vec![InputFile {
            path: name,
            source: path.to_path_buf(),
            size: meta.len(),
        }],
        manifest_bytes: None,
    })
}

fn check_name(name: &str) -> Result<(), TorrentError> {
    let reason = if name.is_empty() {
        Some("it is empty")
    } else if name == "." || name == ".." {
        Some("it is a relative folder name")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("it contains a control character")
    } else {
        None
    };
    match reason {
        Some(r) => Err(TorrentError::BadName {
            name: name.chars().take(80).collect(),
            reason: r.into(),
        }),
        None => Ok(()),
    }
}

/// The default piece size for `total` bytes: the smallest power of two from 32 KiB to
/// 16 MiB giving at most 2000 pieces (16 MiB beyond 31.25 GiB).
pub fn default_piece_size(total: u64) -> u64 {
    let mut p = DEFAULT_MIN_PIECE;
    while p < DEFAULT_MAX_PIECE && total.div_ceil(p) > TARGET_PIECES {
        p *= 2;
    }
    p
}

/// Checks a piece size given by the operator.
pub fn check_piece_size(size: u64) -> Result<u64, TorrentError> {
    if size.is_power_of_two() && (MIN_PIECE..=MAX_PIECE).contains(&size) {
        Ok(size)
    } else {
        Err(TorrentError::BadPieceSize { size })
    }
}

/// Options of [`build`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// None: [`default_piece_size`].
    pub piece_size: Option<u64>,
    /// BEP 19 web seeds (`url-list`).
    pub web_seeds: Vec<String>,
    /// Trackers: the first is `announce`; with more than one, `announce-list` has one
    /// tier per tracker, in order.
    pub trackers: Vec<String>,
    /// BEP 27 private flag.
    pub private: bool,
}

/// A built torrent.
#[derive(Debug, Clone)]
pub struct Torrent {
    /// The `.torrent` file bytes.
    pub bytes: Vec<u8>,
    /// SHA-1 of the bencoded info dictionary.
    pub info_hash: [u8; 20],
    pub name: String,
    pub piece_size: u64,
    pub pieces: u64,
    pub total_size: u64,
    pub files: usize,
    /// BEP 9 magnet link with `dn`, `tr` and `ws`.
    pub magnet: String,
}

impl Torrent {
    /// The info-hash as 40 lowercase hex digits.
    pub fn info_hash_hex(&self) -> String {
        hex::encode(self.info_hash)
    }
}

fn check_url(url: &str, what: &'static str) -> Result<(), TorrentError> {
    let ok =
        (url.starts_with("http://") || url.starts_with("https://") || url.starts_with("udp://"))
            && !url.chars().any(|c| c.is_whitespace() || c.is_control());
    let ok = ok && (what != "web seed" || !url.starts_with("udp://"));
    if ok {
        Ok(())
    } else {
        Err(TorrentError::BadUrl {
            url: url.chars().take(200).collect(),
            what,
        })
    }
}

/// Builds the metainfo of `input` (SPEC.md §13.1), hashing every piece.
pub fn build(
    input: &Input,
    opts: &Options,
    progress: crate::Progress,
) -> Result<Torrent, TorrentError> {
    for u in &opts.web_seeds {
        check_url(u, "web seed")?;
    }
    for u in &opts.trackers {
        check_url(u, "tracker")?;
    }
    let total = input.total_size();
    if total == 0 {
        return Err(TorrentError::Empty {
            path: input.name.clone(),
        });
    }
    let piece_size = match opts.piece_size {
        Some(p) => check_piece_size(p)?,
        None => default_piece_size(total),
    };
    let pieces = hash_pieces(&input.files, piece_size, total, progress)?;
    let npieces = (pieces.len() / 20) as u64;

    let mut info = BTreeMap::new();
    let k = |s: &str| s.as_bytes().to_vec();
    info.insert(k("name"), Value::str(&input.name));
    info.insert(k("piece length"), Value::Int(piece_size as i64));
    info.insert(k("pieces"), Value::Bytes(pieces));
    if opts.private {
        info.insert(k("private"), Value::Int(1));
    }
    if input.multi {
        let files = input
            .files
            .iter()
            .map(|f| {
                let parts: Vec<&str> = f.path.split('/').collect();
                dict([
                    ("length", Value::Int(f.size as i64)),
                    ("path", Value::str_list(&parts)),
                ])
            })
            .collect();
        info.insert(k("files"), Value::List(files));
    } else {
        info.insert(k("length"), Value::Int(total as i64));
    }
    let info = Value::Dict(info);
    let info_bytes = info.encode();
    let info_hash: [u8; 20] = Sha1::digest(&info_bytes).into();

    let mut top = BTreeMap::new();
    top.insert(k("info"), info);
    top.insert(
        k("created by"),
        Value::str(concat!("offgrid ", env!("CARGO_PKG_VERSION"))),
    );
    if let Some(first) = opts.trackers.first() {
        top.insert(k("announce"), Value::str(first));
        if opts.trackers.len() > 1 {
            top.insert(
                k("announce-list"),
                Value::List(
                    opts.trackers
                        .iter()
                        .map(|t| Value::str_list(&[t]))
                        .collect(),
                ),
            );
        }
    }
    if !opts.web_seeds.is_empty() {
        top.insert(k("url-list"), Value::str_list(&opts.web_seeds));
    }
    let bytes = Value::Dict(top).encode();
    let magnet = magnet_link(&info_hash, &input.name, &opts.trackers, &opts.web_seeds);
    Ok(Torrent {
        bytes,
        info_hash,
        name: input.name.clone(),
        piece_size,
        pieces: npieces,
        total_size: total,
        files: input.files.len(),
        magnet,
    })
}

/// SHA-1 of every piece of the files laid end to end, in parallel.
fn hash_pieces(
    files: &[InputFile],
    piece: u64,
    total: u64,
    progress: crate::Progress,
) -> Result<Vec<u8>, TorrentError> {
    let handles = files
        .iter()
        .map(|f| {
            let h = File::open(&f.source).map_err(io_err("open", &f.source))?;
            let len = h.metadata().map_err(io_err("read", &f.source))?.len();
            if len != f.size {
                return Err(io_err("read", &f.source)(io::Error::other(format!(
                    "its size changed from {} to {len} bytes while hashing",
                    f.size
                ))));
            }
            Ok(h)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Start offset of each file in the concatenated stream.
    let mut starts = Vec::with_capacity(files.len());
    let mut off = 0u64;
    for f in files {
        starts.push(off);
        off += f.size;
    }
    let n = total.div_ceil(piece);
    let done = AtomicU64::new(0);
    let digests = (0..n)
        .into_par_iter()
        .map(|i| {
            let begin = i * piece;
            let end = (begin + piece).min(total);
            let mut buf = vec![0u8; (end - begin) as usize];
            // First file whose range reaches past `begin`.
            let mut fi = starts.partition_point(|&s| s <= begin).saturating_sub(1);
            let mut pos = begin;
            while pos < end {
                let f = &files[fi];
                let fend = starts[fi] + f.size;
                if fend <= pos {
                    fi += 1;
                    continue;
                }
                let take = fend.min(end) - pos;
                let dst = &mut buf[(pos - begin) as usize..(pos - begin + take) as usize];
                handles[fi]
                    .read_exact_at(dst, pos - starts[fi])
                    .map_err(io_err("read", &f.source))?;
                pos += take;
                fi += 1;
            }
            let d: [u8; 20] = Sha1::digest(&buf).into();
            let now = done.fetch_add(end - begin, Ordering::Relaxed) + (end - begin);
            progress(now, total);
            Ok(d)
        })
        .collect::<Result<Vec<_>, TorrentError>>()?;
    Ok(digests.concat())
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `magnet:?xt=urn:btih:HEX&dn=NAME&tr=…&ws=…` (BEP 9, BEP 19 `ws`).
pub fn magnet_link(
    info_hash: &[u8; 20],
    name: &str,
    trackers: &[String],
    seeds: &[String],
) -> String {
    let mut m = format!(
        "magnet:?xt=urn:btih:{}&dn={}",
        hex::encode(info_hash),
        pct(name)
    );
    for t in trackers {
        m.push_str(&format!("&tr={}", pct(t)));
    }
    for w in seeds {
        m.push_str(&format!("&ws={}", pct(w)));
    }
    m
}

/// One torrent recorded beside a release in the HQ history (SPEC.md §13.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub info_hash: String,
    /// `tree` or `pack`.
    pub kind: String,
    pub name: String,
    pub bytes: u64,
    pub piece_length: u64,
    pub created: String,
    pub magnet: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct HistoryFile {
    #[serde(default)]
    torrents: Vec<HistoryEntry>,
}

/// What [`record_in_history`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Added to this file.
    Added(PathBuf),
    /// The same info-hash was already listed in this file.
    Already(PathBuf),
    /// The release is not in the history (or is a different manifest of that version).
    NotInHistory,
}

/// Lists `entry` in `HQ/releases/BUNDLE/VERSION/torrents.toml` when that release is
/// recorded (with exactly `manifest_bytes` when given; a verified pack gives none); the
/// file is replaced atomically.
pub fn record_in_history(
    hq: &Path,
    bundle_id: &str,
    release: &str,
    manifest_bytes: Option<&[u8]>,
    entry: &HistoryEntry,
) -> Result<Recorded, TorrentError> {
    let dir = hq.join("releases").join(bundle_id).join(release);
    match fs::read(dir.join(manifest::MANIFEST_FILE)) {
        Ok(b) if manifest_bytes.is_none_or(|m| m == b) => {}
        Ok(_) => return Ok(Recorded::NotInHistory),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Recorded::NotInHistory),
        Err(e) => return Err(io_err("read", &dir)(e)),
    }
    let path = dir.join(HISTORY_FILE);
    let mut file: HistoryFile = match fs::read_to_string(&path) {
        Ok(s) => toml::from_str(&s).map_err(|e| TorrentError::History {
            dir: hq.display().to_string(),
            path: path.display().to_string(),
            reason: format!("'{}' is not valid: {}", path.display(), e.message()),
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => HistoryFile::default(),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    if file.torrents.iter().any(|t| t.info_hash == entry.info_hash) {
        return Ok(Recorded::Already(path));
    }
    file.torrents.push(entry.clone());
    let text = toml::to_string(&file).map_err(|e| TorrentError::History {
        dir: hq.display().to_string(),
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    crate::fsutil::atomic_write(&path, text.as_bytes()).map_err(io_err("write", &path))?;
    Ok(Recorded::Added(path))
}

impl crate::diagnostic::Diagnostic for TorrentError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            TorrentError::NotATree { .. } => Some("pass the folder holding manifest.toml and signatures/, or an update pack file".into()),
            TorrentError::BadManifest { root, .. } => Some(format!("verify the tree with 'offgrid verify {root} --pubkey HQ.pub' and copy it again from HQ")),
            TorrentError::TreeMismatch { root, .. } => Some(format!("verify the tree with 'offgrid verify {root} --pubkey HQ.pub' and copy it again from HQ")),
            TorrentError::BadPieceSize { .. } => Some("pass e.g. --piece-size 256K or --piece-size 4M, or omit it for the default".into()),
            TorrentError::BadName { .. } => Some("pass --name with a plain file name (no '/', not '.' or '..')".into()),
            TorrentError::BadUrl { .. } => Some("give an absolute http:// or https:// URL".into()),
            TorrentError::Empty { .. } => Some("BitTorrent cannot describe an empty torrent".into()),
            TorrentError::History { path, .. } => Some(format!("repair or restore {path}")),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dir: &Path, files: &[(&str, &[u8])]) -> Input {
        let mut v = Vec::new();
        for (p, data) in files {
            let src = dir.join(p.replace('/', "_"));
            fs::write(&src, data).unwrap();
            v.push(InputFile {
                path: (*p).into(),
                source: src,
                size: data.len() as u64,
            });
        }
        Input {
            name: "t".into(),
            multi: true,
            files: v,
            manifest_bytes: None,
        }
    }

    #[test]
    fn default_piece_sizes() {
        assert_eq!(default_piece_size(1), 32 << 10);
        assert_eq!(default_piece_size(2000 * (32 << 10)), 32 << 10);
        assert_eq!(default_piece_size(2000 * (32 << 10) + 1), 64 << 10);
        assert_eq!(default_piece_size(1 << 30), 1 << 20);
        assert_eq!(default_piece_size(1 << 40), 16 << 20);
        assert!(check_piece_size(3 << 20).is_err());
        assert!(check_piece_size(8 << 10).is_err());
        assert_eq!(check_piece_size(256 << 10).unwrap(), 256 << 10);
    }

    #[test]
    fn pieces_span_files_and_match_a_straight_hash() {
        let d = tempfile::tempdir().unwrap();
        let a = vec![1u8; 40_000];
        let b = vec![2u8; 3];
        let c = vec![3u8; 70_000];
        let inp = input(d.path(), &[("a", &a), ("b/x", &b), ("c", &c)]);
        let t = build(
            &inp,
            &Options {
                piece_size: Some(16 << 10),
                ..Default::default()
            },
            &crate::no_progress,
        )
        .unwrap();
        let all: Vec<u8> = [a, b, c].concat();
        let want: Vec<u8> = all
            .chunks(16 << 10)
            .flat_map(|c| <[u8; 20]>::from(Sha1::digest(c)))
            .collect();
        assert_eq!(t.pieces, all.len().div_ceil(16 << 10) as u64);
        let needle = [b"6:pieces", format!("{}:", want.len()).as_bytes()].concat();
        let at = t
            .bytes
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap()
            + needle.len();
        assert_eq!(&t.bytes[at..at + want.len()], &want[..]);
    }

    #[test]
    fn metainfo_layout_is_exact() {
        let d = tempfile::tempdir().unwrap();
        let mut inp = input(d.path(), &[("f", b"hello")]);
        inp.multi = false;
        inp.name = "f".into();
        let t = build(
            &inp,
            &Options {
                piece_size: Some(16 << 10),
                web_seeds: vec!["http://h/p/".into()],
                trackers: vec!["http://t/a".into(), "udp://u:1".into()],
                private: true,
            },
            &crate::no_progress,
        )
        .unwrap();
        let sha: [u8; 20] = Sha1::digest(b"hello").into();
        let info = [
            b"d6:lengthi5e4:name1:f12:piece lengthi16384e6:pieces20:".to_vec(),
            sha.to_vec(),
            b"7:privatei1ee".to_vec(),
        ]
        .concat();
        let want = [
            b"d8:announce10:http://t/a13:announce-listll10:http://t/ael9:udp://u:1ee10:created by"
                .to_vec(),
            format!(
                "{}:offgrid {}",
                8 + env!("CARGO_PKG_VERSION").len(),
                env!("CARGO_PKG_VERSION")
            )
            .into_bytes(),
            b"4:info".to_vec(),
            info.clone(),
            b"8:url-listl11:http://h/p/ee".to_vec(),
        ]
        .concat();
        assert_eq!(t.bytes, want);
        let ih: [u8; 20] = Sha1::digest(&info).into();
        assert_eq!(t.info_hash, ih);
        assert_eq!(
            t.magnet,
            format!(
                "magnet:?xt=urn:btih:{}&dn=f&tr=http%3A%2F%2Ft%2Fa&tr=udp%3A%2F%2Fu%3A1&ws=http%3A%2F%2Fh%2Fp%2F",
                hex::encode(ih)
            )
        );
    }

    #[test]
    fn the_history_example_parses() {
        let f: HistoryFile =
            toml::from_str(include_str!("../formats/torrents.example.toml")).unwrap();
        assert_eq!(f.torrents.len(), 2);
        assert!(f.torrents.iter().all(|t| t.info_hash.len() == 40));
    }

    #[test]
    fn names_and_urls_are_checked() {
        assert!(check_name("a/b").is_err());
        assert!(check_name("..").is_err());
        assert!(check_name("org.x-1.0").is_ok());
        assert!(check_url("ftp://x", "tracker").is_err());
        assert!(check_url("udp://x:1", "web seed").is_err());
        assert!(check_url("http://x y", "web seed").is_err());
    }
}
