//! Binary deltas between two versions of a file, bounded in memory for multi-GiB models.
//!
//! STUB: API fixed, body to be written (owner: delta helper).

use std::io::{Read, Seek, Write};
use std::path::Path;

/// Limits and effort for delta creation.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// Peak memory the creator may use, bytes (documented bound; default 2 GiB).
    pub max_memory: u64,
    /// zstd level for the delta's compressed stream.
    pub zstd_level: i32,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        DeltaOptions {
            max_memory: 2 << 30,
            zstd_level: 19,
        }
    }
}

/// What a delta creation produced.
#[derive(Debug, Clone, Default)]
pub struct DeltaStats {
    pub old_size: u64,
    pub new_size: u64,
    pub delta_size: u64,
}

/// Why a delta could not be made or applied.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("delta I/O error on '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("delta is corrupt: {0}")]
    Corrupt(String),
    #[error("delta output would exceed its declared size of {declared} bytes")]
    TooLarge { declared: u64 },
}

/// Writes a delta that turns `old` into `new` to `out`.
pub fn create(
    old: &Path,
    new: &Path,
    out: &mut dyn Write,
    opts: &DeltaOptions,
) -> Result<DeltaStats, DeltaError> {
    let _ = (old, new, out, opts);
    todo!("delta::create")
}

/// Applies a delta read from `delta` to `old` (random access), streaming the result to
/// `out`. Refuses to write more than `new_size` bytes. Memory does not grow with the
/// file size.
pub fn apply<O: Read + Seek>(
    old: &mut O,
    delta: &mut dyn Read,
    out: &mut dyn Write,
    new_size: u64,
) -> Result<u64, DeltaError> {
    let _ = (old, delta, out, new_size);
    todo!("delta::apply")
}
