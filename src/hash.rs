//! Hashing: whole-file sha256 plus per-chunk sha256, computed in one pass while copying
//! (pack) and checked chunk by chunk in parallel (verify), so a damaged file's bad byte
//! ranges can be named.
//!
//! STUB: API fixed, body to be written (owner: verify/hash helper).

use std::path::Path;

use crate::manifest::FileEntry;
use crate::Progress;

/// The digests of one file as the manifest records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub size: u64,
    pub sha256: String,
    pub chunk_size: u64,
    pub chunks: Vec<String>,
}

/// Why hashing failed (I/O only: a mismatch is a [`FileCheck`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("cannot read '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write '{path}': {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// The result of checking one file against its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    Ok,
    Missing,
    /// Not a regular file (a folder, a link, a device).
    NotAFile,
    SizeMismatch {
        expected: u64,
        actual: u64,
    },
    /// Byte ranges `[start, end)` whose chunk hashes do not match, merged when adjacent.
    Damaged {
        ranges: Vec<(u64, u64)>,
    },
}

/// Copies `src` to `dst` (which must not exist; created with `create_new`), computing the
/// digests from the bytes as they are written, in one pass over the data; `dst` is fsynced.
pub fn copy_and_hash(
    src: &Path,
    dst: &Path,
    chunk_size: u64,
    progress: Progress,
) -> Result<Digests, HashError> {
    let _ = (src, dst, chunk_size, progress);
    todo!("hash::copy_and_hash")
}

/// Computes the digests of a file.
pub fn hash_file(path: &Path, chunk_size: u64, progress: Progress) -> Result<Digests, HashError> {
    let _ = (path, chunk_size, progress);
    todo!("hash::hash_file")
}

/// Computes the digests of bytes in memory (small files, tests).
pub fn hash_bytes(bytes: &[u8], chunk_size: u64) -> Digests {
    let _ = (bytes, chunk_size);
    todo!("hash::hash_bytes")
}

/// Checks `path` against `entry`: size first, then every chunk hash, chunks hashed in
/// parallel. Does not read past `entry.size`.
pub fn check_file(
    path: &Path,
    entry: &FileEntry,
    progress: Progress,
) -> Result<FileCheck, HashError> {
    let _ = (path, entry, progress);
    todo!("hash::check_file")
}
