//! `offgrid gc [--keep N]`: keeps the newest N kept versions of a site home (the current
//! one always, then `previous`, then the others newest first), removes the rest, then
//! every object of the store ([`crate::update::store`]) no kept release needs, and reports
//! exactly the bytes freed: the home's usage (each file once, however many links) before
//! minus after. SPEC.md §7.17 is normative.
//!
//! Crash-safe by order: `state.json` is replaced first (that is the decision), then the
//! folders it no longer names and the objects nothing links are removed by the same
//! cleanup every recovery runs ([`crate::update::journal::collect_garbage`]); a crash in
//! between is finished by the next command.
//! Known gap: on non-Unix systems there are no link counts, so the store is not swept.

use serde::Serialize;

use crate::update::home::{Home, Recovery};
use crate::update::journal::{collect_garbage, recover_locked};
use crate::update::{fault, store, UpdateError};

/// What gc did.
#[derive(Debug, Clone, Serialize)]
pub struct GcReport {
    pub home: String,
    /// The bundle whose releases these are (SPEC.md §7.5: a home may hold several).
    pub bundle_id: String,
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
    // Exact: the bytes of every file (each inode once) gone afterwards, including what
    // this command's recovery removes (objects left by a crash, a half-done cleanup).
    let before = store::home_usage(home);
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
    if !gone.is_empty() {
        home.write_state(&s)?;
        fault::point("gc-flipped");
    }
    // Release folders no longer kept, then every object no kept release needs.
    collect_garbage(home, &s)?;
    let vd = home.versions();
    crate::fsutil::fsync_dir(&vd).map_err(crate::update::io_err("sync", &vd))?;
    let freed = before.saturating_sub(store::home_usage(home));
    drop(lock);
    Ok(GcReport {
        home: home.root.display().to_string(),
        bundle_id: s.bundle_id.clone(),
        keep,
        kept: s.kept().iter().map(|k| k.release.to_string()).collect(),
        removed: gone.iter().map(|k| k.release.to_string()).collect(),
        freed_bytes: freed,
        recovered,
    })
}
