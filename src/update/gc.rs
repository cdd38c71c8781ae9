//! `offgrid gc [--keep N]`: keeps the newest N kept versions of a site home (the current
//! one always, then `previous`, then the others newest first) and removes the rest,
//! reporting exactly the bytes freed: a file's bytes count only when every hard link to
//! it is inside the removed folders (kept versions share unchanged files by hard link,
//! and those bytes stay). SPEC.md §7.17 is normative.
//!
//! Crash-safe by order: `state.json` is replaced first (that is the decision), then the
//! folders it no longer names are removed by the same cleanup every recovery runs
//! ([`crate::update::journal::collect_garbage`]); a crash in between is finished by the
//! next command.
//! Known gap: on non-Unix systems there are no link counts, so freed bytes count every
//! file of the removed folders.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::update::home::{Home, Recovery};
use crate::update::journal::{collect_garbage, recover_locked};
use crate::update::{fault, UpdateError};

/// What gc did.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub home: String,
    pub keep: usize,
    /// Releases kept, the current one first.
    pub kept: Vec<String>,
    /// Releases removed.
    pub removed: Vec<String>,
    /// Bytes no kept version references any more, now free.
    pub freed_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovery>,
}

/// Keeps the newest `keep` (at least 1) kept versions of `home` and removes the rest.
pub fn gc(home: &Home, keep: usize) -> Result<GcReport, UpdateError> {
    if keep == 0 {
        return Err(UpdateError::usage_help(
            "--keep must be at least 1 (the current release is always kept)",
            "pass --keep 1 to keep only the current release",
        ));
    }
    let lock = home.lock(false, "gc")?;
    let recovered = recover_locked(home, &lock)?;
    let state = home.state()?;
    let mut s = state.clone();
    s.retain(keep);
    let kept_dirs: Vec<String> = s.kept().iter().map(|k| k.dir.clone()).collect();
    let gone: Vec<_> = state
        .kept()
        .into_iter()
        .filter(|k| !kept_dirs.contains(&k.dir))
        .cloned()
        .collect();
    let freed = unreferenced_bytes(
        &gone
            .iter()
            .map(|k| home.version_dir(&k.dir))
            .collect::<Vec<_>>(),
    );
    if !gone.is_empty() {
        home.write_state(&s)?;
        fault::point("gc-flipped");
        collect_garbage(home, &s)?;
        let vd = home.versions();
        crate::fsutil::fsync_dir(&vd).map_err(crate::update::io_err("sync", &vd))?;
    }
    drop(lock);
    Ok(GcReport {
        home: home.root.display().to_string(),
        keep,
        kept: s.kept().iter().map(|k| k.release.to_string()).collect(),
        removed: gone.iter().map(|k| k.release.to_string()).collect(),
        freed_bytes: freed,
        recovered,
    })
}

/// Bytes of the regular files under `dirs` whose every hard link is under `dirs`
/// (each file counted once).
fn unreferenced_bytes(dirs: &[std::path::PathBuf]) -> u64 {
    // (dev, ino) -> (links seen, st_nlink, size)
    let mut seen: BTreeMap<(u64, u64), (u64, u64, u64)> = BTreeMap::new();
    let mut n = 0u64;
    for d in dirs {
        for e in walkdir::WalkDir::new(d).into_iter().flatten() {
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            match identity(e.path(), &m) {
                Some((id, nlink)) => {
                    let x = seen.entry(id).or_insert((0, nlink, m.len()));
                    x.0 += 1;
                }
                None => n += m.len(),
            }
        }
    }
    n + seen
        .values()
        .filter(|(found, nlink, _)| found >= nlink)
        .map(|(_, _, size)| size)
        .sum::<u64>()
}

/// `((device, inode), link count)` of a file (Unix).
fn identity(_p: &Path, m: &std::fs::Metadata) -> Option<((u64, u64), u64)> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        Some(((m.dev(), m.ino()), m.nlink()))
    }
    #[cfg(not(unix))]
    {
        let _ = m;
        None
    }
}
