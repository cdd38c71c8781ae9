//! The verification cache: remembers that a model file was checked against its manifest
//! entry, so that starting the same unchanged model again does not re-hash gigabytes.
//!
//! An entry's key is the SHA-256 of the file's canonical path, size, modification time,
//! status-change time (ctime, which no user can set back), device and inode, and the
//! manifest entry's `sha256` and chunk size. Any change to the file or to the manifest
//! entry gives another key, so a stale entry is never trusted, only unused. The cache is a
//! JSON file in the user's cache directory (never on the stick), written atomically,
//! holding at most [`MAX_ENTRIES`] keys (oldest dropped). A missing or unreadable cache
//! is an empty one.
//! Known gap: on non-Unix systems there is no inode or ctime, so the key is path, size,
//! mtime and the entry only.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::FileEntry;

/// Environment variable naming the cache directory (tests, unusual setups).
pub const CACHE_DIR_ENV: &str = "OFFGRID_CACHE_DIR";
/// Most entries kept.
pub const MAX_ENTRIES: usize = 256;
const FILE: &str = "verified-models.json";
const MAX_CACHE_BYTES: u64 = 1 << 20;

/// The user's cache directory for offgrid: `$OFFGRID_CACHE_DIR`, else the platform's
/// (`$XDG_CACHE_HOME/offgrid` or `~/.cache/offgrid`, `~/Library/Caches/offgrid`,
/// `%LOCALAPPDATA%\offgrid`).
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env(CACHE_DIR_ENV) {
        return Some(d);
    }
    if cfg!(windows) {
        return env("LOCALAPPDATA").map(|d| d.join("offgrid"));
    }
    if cfg!(target_os = "macos") {
        return env("HOME").map(|h| h.join("Library/Caches/offgrid"));
    }
    env("XDG_CACHE_HOME")
        .map(|d| d.join("offgrid"))
        .or_else(|| env("HOME").map(|h| h.join(".cache/offgrid")))
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct CacheFile {
    version: u32,
    /// key → (unix seconds when verified, path for humans)
    entries: BTreeMap<String, (u64, String)>,
}

/// The cache in one directory.
#[derive(Debug, Clone)]
pub struct VerifyCache {
    dir: PathBuf,
}

impl VerifyCache {
    /// The cache in the user's cache directory, if there is one.
    pub fn user() -> Option<VerifyCache> {
        cache_dir().map(|dir| VerifyCache { dir })
    }

    /// The cache in `dir`.
    pub fn in_dir(dir: &Path) -> VerifyCache {
        VerifyCache {
            dir: dir.to_path_buf(),
        }
    }

    /// The cache file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    fn load(&self) -> CacheFile {
        let p = self.path();
        match fs::metadata(&p) {
            Ok(m) if m.len() <= MAX_CACHE_BYTES => {}
            _ => return CacheFile::default(),
        }
        fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<CacheFile>(&b).ok())
            .filter(|c| c.version == 1)
            .unwrap_or_default()
    }

    /// True when `path`, exactly as it is now, was verified against `entry`.
    pub fn is_verified(&self, path: &Path, entry: &FileEntry) -> bool {
        match key(path, entry) {
            Some(k) => self.load().entries.contains_key(&k),
            None => false,
        }
    }

    /// Records that `path`, as it is now, matches `entry`.
    pub fn record(&self, path: &Path, entry: &FileEntry) -> std::io::Result<()> {
        self.record_all(&[(path.to_path_buf(), entry)])
    }

    /// Records several checked files at once (one write of the cache).
    pub fn record_all(&self, files: &[(PathBuf, &FileEntry)]) -> std::io::Result<()> {
        let keys: Vec<(String, &PathBuf)> = files
            .iter()
            .filter_map(|(p, e)| key(p, e).map(|k| (k, p)))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = self.load();
        c.version = 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (k, path) in keys {
            c.entries.insert(k, (now, path.display().to_string()));
        }
        while c.entries.len() > MAX_ENTRIES {
            let oldest = c
                .entries
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(o) => c.entries.remove(&o),
                None => break,
            };
        }
        fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec_pretty(&c).map_err(std::io::Error::other)?;
        crate::fsutil::atomic_write(&self.path(), &bytes)
    }
}

/// The cache key of `path` as it is now, checked against `entry`.
fn key(path: &Path, entry: &FileEntry) -> Option<String> {
    let canon = fs::canonicalize(path).ok()?;
    let m = fs::metadata(&canon).ok()?;
    let mtime = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    #[cfg(unix)]
    let extra = {
        use std::os::unix::fs::MetadataExt;
        format!("{}.{}\0{}\0{}", m.ctime(), m.ctime_nsec(), m.dev(), m.ino())
    };
    #[cfg(not(unix))]
    let extra = String::new();
    let mut h = Sha256::new();
    h.update(b"offgrid-verified/1\0");
    h.update(canon.to_string_lossy().as_bytes());
    h.update(format!(
        "\0{}\0{mtime}\0{extra}\0{}\0{}",
        m.len(),
        entry.sha256,
        entry.chunk_size
    ));
    Some(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileKind;

    fn entry(size: u64) -> FileEntry {
        FileEntry {
            path: "models/m.gguf".into(),
            size,
            sha256: "ab".repeat(32),
            kind: FileKind::Data,
            platform: None,
            mode: None,
            chunk_size: crate::manifest::DEFAULT_CHUNK_SIZE,
            chunks: vec!["ab".repeat(32)],
            model: None,
            volume: None,
            parts: Vec::new(),
        }
    }

    #[test]
    fn remembers_until_the_file_or_entry_changes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("m.gguf");
        fs::write(&f, b"model").unwrap();
        let c = VerifyCache::in_dir(&d.path().join("cache"));
        let e = entry(5);
        assert!(!c.is_verified(&f, &e));
        c.record(&f, &e).unwrap();
        assert!(c.is_verified(&f, &e));
        let mut other = e.clone();
        other.sha256 = "cd".repeat(32);
        assert!(!c.is_verified(&f, &other));
        // Same size, rewritten: ctime (and mtime) change.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&f, b"MODEL").unwrap();
        assert!(!c.is_verified(&f, &e));
        // A damaged cache file is an empty cache.
        fs::write(c.path(), b"{not json").unwrap();
        assert!(!c.is_verified(&f, &e));
    }
}
