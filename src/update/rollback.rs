//! `offgrid rollback [--to VERSION]`: switches to another kept version. Without `--to`,
//! to the release that was current before the current one (its predecessor in the
//! history, [`crate::update::home::State::predecessor`]), so a second rollback goes
//! further back or is refused, never silently forward; `--to` picks any kept release
//! (SPEC.md §7.16). The switch is one atomic replacement of `state.json` (nothing kept is
//! removed: the release left stays kept); the `current` link follows, and recovery
//! repairs it if the process dies in between.
//!
//! Rollback never lands on damage: before the switch, the previous version's signed
//! manifest is checked against the pinned keys and every one of its files against that
//! manifest (size, then chunk hashes), by the path inside the previous version's own
//! folder (kept versions share unchanged files by hard link, so a change made through
//! either version shows in both). A file the verification cache
//! ([`crate::models::vcache`]) says was checked unchanged against the same entry is not
//! re-hashed; files hashed here are recorded there. Any damage refuses the rollback
//! ([`UpdateError::RollbackDamaged`], naming every damaged file); nothing is switched.
//!
//! Known gap: the check costs one full read of the previous version when the cache does
//! not know its files (e.g. files hard-linked into the newer version since they were
//! recorded: linking changes their status-change time, so their entries no longer
//! apply).

use std::path::PathBuf;

use serde::Serialize;

use crate::hash;
use crate::manifest::FileEntry;
use crate::models::vcache::VerifyCache;
use crate::update::home::{Home, Recovery};
use crate::update::journal::recover_locked;
use crate::update::{fault, UpdateError};
use crate::version::Version;

/// Files smaller than this are re-hashed every time rather than cached.
const CACHE_MIN_SIZE: u64 = 1 << 20;

/// What rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub home: String,
    pub from: String,
    pub to: String,
    /// Files of the release rolled back to that were hashed now.
    pub hashed: usize,
    /// Files the verification cache vouched for (unchanged since an earlier check).
    pub cached: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovery>,
}

/// Switches `home` to `to` (a kept release), or to the release before the current one,
/// after checking it (see the module doc).
/// `cache` is the verification cache to consult and update (usually
/// [`VerifyCache::user`]); `progress` counts the bytes hashed.
pub fn rollback(
    home: &Home,
    to: Option<&Version>,
    cache: Option<&VerifyCache>,
    progress: crate::Progress,
) -> Result<RollbackReport, UpdateError> {
    let lock = home.lock(false, "rollback")?;
    let recovered = recover_locked(home, &lock)?;
    let state = home.state()?;
    let kept_list = || -> Vec<String> {
        state
            .kept()
            .iter()
            .filter(|k| k.dir != state.current.dir)
            .map(|k| k.release.to_string())
            .collect()
    };
    let prev = match to {
        Some(v) if *v == state.current.release => {
            return Err(UpdateError::AlreadyCurrent {
                home: home.root.display().to_string(),
                release: v.to_string(),
            })
        }
        Some(v) => state
            .kept()
            .into_iter()
            .find(|k| k.release == *v)
            .cloned()
            .ok_or_else(|| UpdateError::NotKept {
                home: home.root.display().to_string(),
                release: v.to_string(),
                kept: kept_list(),
            })?,
        None => state
            .predecessor(&state.current.release)
            .cloned()
            .ok_or_else(|| UpdateError::NoPrevious {
                home: home.root.display().to_string(),
                current: state.current.release.to_string(),
                kept: kept_list(),
            })?,
    };
    let dir = home.version_dir(&prev.dir);
    let policy = home.policy(&state)?;
    let refuse = |damaged: Vec<String>| UpdateError::RollbackDamaged {
        home: home.root.display().to_string(),
        release: prev.release.to_string(),
        current: state.current.release.to_string(),
        damaged,
    };
    // The manifest and its signatures first: a changed manifest would vouch for anything.
    let signed = crate::verify::read_signed_manifest(&dir, &policy).map_err(|e| {
        let first = e.to_string().lines().next().unwrap_or_default().to_owned();
        refuse(vec![format!(
            "'{}' or its signatures: {}",
            crate::manifest::MANIFEST_FILE,
            crate::update::short(&first)
        )])
    })?;
    let m = &signed.manifest;
    if m.release != prev.release || m.bundle_id != state.bundle_id {
        return Err(refuse(vec![format!(
            "'{}' is release {} of '{}', state.json says release {} of '{}'",
            crate::manifest::MANIFEST_FILE,
            m.release,
            m.bundle_id,
            prev.release,
            state.bundle_id
        )]));
    }
    let total = m.total_size().max(1);
    let mut base = 0u64;
    let mut damaged = Vec::new();
    let mut hashed: Vec<(PathBuf, &FileEntry)> = Vec::new();
    let mut cached = 0;
    // A site holds only its own platform's programs and libraries (SPEC.md §18.2).
    let host = crate::platform::Platform::host().to_string();
    for f in m.files_on(&host) {
        let p = crate::paths::join(&dir, &f.path);
        if cache.is_some_and(|c| c.is_verified(&p, f)) {
            cached += 1;
        } else {
            let on = |d: u64, _: u64| progress(base + d, total);
            let problem = crate::update::damage::describe(
                &hash::check_file(&p, f, &on).map_err(|e| e.to_string()),
            )
            .map(|(_, text)| text);
            match problem {
                Some(p) => damaged.push(format!("'{}' {p}", f.path)),
                None => hashed.push((p, f)),
            }
        }
        base += f.size;
        progress(base, total);
    }
    if !damaged.is_empty() {
        return Err(refuse(damaged));
    }
    if let Some(c) = cache {
        // Only files worth skipping (the cache is small and shared with the launcher);
        // best effort: a cache that cannot be written only costs a re-hash next time.
        let big: Vec<_> = hashed
            .iter()
            .filter(|(_, f)| f.size >= CACHE_MIN_SIZE)
            .cloned()
            .collect();
        let _ = c.record_all(&big);
    }
    let mut s = state.clone();
    s.switch_to(&prev);
    s.push_event("rollback", &prev.release, Some(&state.current.release));
    home.write_state(&s)?;
    fault::point("flipped");
    home.sync_current_link(&s)?;
    drop(lock);
    Ok(RollbackReport {
        home: home.root.display().to_string(),
        from: state.current.release.to_string(),
        to: prev.release.to_string(),
        hashed: hashed.len(),
        cached,
        recovered,
    })
}
