//! The journal (`journal.json`) and recovery. Before an install or apply stages anything
//! it writes the journal atomically, naming the operation, the version it starts from,
//! and the staging and final folders. The switch is the atomic replacement of
//! `state.json`. So after a crash, [`recover`] (run at the start of every command that
//! touches the home) decides by one comparison:
//!
//! - `state.json` names the journal's new version: the switch happened; finish (point
//!   the `current` link, remove versions no longer kept, remove the journal) —
//!   outcome `completed`;
//! - otherwise it did not; undo (remove the staging and new folders, remove the journal) —
//!   outcome `rolled-back`. The old version was never touched.
//!
//! A `repair` journal ([`crate::update::repair`]) is written only once everything it
//! needs is staged and durable, so recovery always finishes it (outcome `completed`).
//!
//! Every step is idempotent, so a crash during recovery is recovered by the next run.
//! Recovery also removes the temporary files a killed atomic write left in the home's
//! root ([`remove_leftovers`]: its own naming patterns only).
//! Recovery takes the home's lock; if another process holds it, that process is not
//! interrupted and nothing is done.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::fsutil::remove_tree;
use crate::hash::read_bounded;
use crate::update::home::{Home, Installed, Lock, Recovery, State};
use crate::update::{io_err, UpdateError};

/// `format` of journal.json.
pub const FORMAT: &str = "offgrid-journal/1";

/// journal.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: String,
    /// `install`, `apply` or `repair`.
    pub op: String,
    /// The version current when the operation started (none for a first install).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Installed>,
    /// The version being made; `to.dir` is its final folder under `versions/`.
    pub to: Installed,
    /// The staging folder under `versions/`.
    pub staging: String,
    pub started: String,
}

/// Writes the journal atomically.
pub fn write(home: &Home, j: &Journal) -> Result<(), UpdateError> {
    let p = home.journal_path();
    let text = serde_json::to_string_pretty(j).unwrap_or_default();
    crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))
}

/// Removes the journal (durably).
pub fn remove(home: &Home) -> Result<(), UpdateError> {
    let p = home.journal_path();
    crate::fsutil::remove_if_exists(&p).map_err(io_err("remove", &p))?;
    crate::fsutil::fsync_dir(&home.root).map_err(io_err("sync", &home.root))
}

/// Reads the journal, if any.
pub fn read(home: &Home) -> Result<Option<Journal>, UpdateError> {
    let p = home.journal_path();
    let f = match fs::File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &p)(e)),
    };
    let bad = |reason: String| UpdateError::BadHome {
        home: home.root.display().to_string(),
        reason,
        help:
            "remove journal.json only if no offgrid command is running, then run 'offgrid status'",
    };
    let b = read_bounded(&mut &f, 1 << 20)
        .map_err(io_err("read", &p))?
        .ok_or_else(|| bad("journal.json is larger than 1 MiB".into()))?;
    let j: Journal =
        serde_json::from_slice(&b).map_err(|e| bad(format!("journal.json is not valid: {e}")))?;
    if j.format != FORMAT || !safe_name(&j.staging) || !safe_name(&j.to.dir) {
        return Err(bad(
            "journal.json names an unexpected format or folder".into()
        ));
    }
    Ok(Some(j))
}

fn safe_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains(['/', '\\'])
}

/// Removes every folder under `versions/` that the state does not keep.
pub fn collect_garbage(home: &Home, s: &State) -> Result<Vec<String>, UpdateError> {
    let vd = home.versions();
    let rd = match fs::read_dir(&vd) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &vd)(e)),
    };
    let mut removed = Vec::new();
    for e in rd {
        let e = e.map_err(io_err("read", &vd))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let keep = s.kept().iter().any(|k| k.dir == name);
        if !keep {
            remove_tree(&e.path()).map_err(io_err("remove", &e.path()))?;
            removed.push(name);
        }
    }
    // Not fsynced: a removed folder that reappears after a power cut is removed again.
    crate::update::store::sweep(home, s)?;
    Ok(removed)
}

/// Prefix of the temporary link [`Home::sync_current_link`] renames over `current`.
pub const LINK_TMP_PREFIX: &str = ".current-";

/// Removes the temporaries a killed offgrid left in the home's root: only files named
/// by its own patterns (`.offgrid-tmp-*` regular files, `.current-*` symbolic links),
/// only there, and only under the lock (no live writer can own them).
pub fn remove_leftovers(home: &Home) -> Result<Vec<String>, UpdateError> {
    let rd = match fs::read_dir(&home.root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", &home.root)(e)),
    };
    let mut removed = Vec::new();
    for e in rd {
        let e = e.map_err(io_err("read", &home.root))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(t) = e.file_type() else { continue };
        let ours = (name.starts_with(crate::fsutil::TMP_PREFIX) && t.is_file())
            || (name.starts_with(LINK_TMP_PREFIX) && t.is_symlink());
        if ours {
            crate::fsutil::remove_if_exists(&e.path()).map_err(io_err("remove", &e.path()))?;
            removed.push(name);
        }
    }
    Ok(removed)
}

/// Finishes or undoes an interrupted operation (see the module doc). Returns what it
/// did, or `None` when there was nothing to do (or another process holds the lock).
pub fn recover(home: &Home) -> Result<Option<Recovery>, UpdateError> {
    if !home.root.is_dir() {
        return Ok(None);
    }
    let lock = match home.lock(false, "recovery") {
        Ok(l) => l,
        Err(UpdateError::Locked { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    recover_locked(home, &lock)
}

/// [`recover`] for a caller that already holds the lock: the one home opener of every
/// command that changes or reads a home. After finishing or undoing an interrupted
/// operation it migrates a layout-1 home to the store ([`crate::update::store::migrate`]).
/// Every bundle of the home root is recovered (they share the store the cleanup
/// sweeps); the outcome returned is `home`'s.
pub fn recover_locked(home: &Home, lock: &Lock) -> Result<Option<Recovery>, UpdateError> {
    let mut mine = None;
    let mut members = home.members();
    if !members.iter().any(|m| m.root == home.root) {
        // A sub-home being made by its first install.
        members.push(home.clone());
    }
    for m in &members {
        let rec = recover_journal(m, lock)?;
        crate::update::store::migrate(m)?;
        if m.root == home.root {
            mine = rec;
        }
    }
    Ok(mine)
}

fn recover_journal(home: &Home, _lock: &Lock) -> Result<Option<Recovery>, UpdateError> {
    remove_leftovers(home)?;
    let journal = read(home)?;
    let state = home.read_state()?;
    let Some(j) = journal else {
        if let Some(s) = &state {
            home.sync_current_link(s)?;
            collect_garbage(home, s)?;
        }
        return Ok(None);
    };
    if j.op == "repair" {
        // A repair journal is written once its staged files are durable: roll forward.
        let rec = crate::update::repair::finish(home, &j)?;
        if let Some(mut s) = state {
            home.sync_current_link(&s)?;
            collect_garbage(home, &s)?;
            s.recoveries.push(rec.clone());
            if s.recoveries.len() > 50 {
                s.recoveries.remove(0);
            }
            home.write_state(&s)?;
        }
        remove(home)?;
        return Ok(Some(rec));
    }
    let flipped = state.as_ref().is_some_and(|s| s.current.dir == j.to.dir);
    let rec = Recovery {
        time: crate::manifest::now_rfc3339(),
        op: j.op.clone(),
        from: j.from.as_ref().map(|f| f.release.to_string()),
        to: j.to.release.to_string(),
        outcome: if flipped { "completed" } else { "rolled-back" }.into(),
    };
    match state {
        Some(mut s) => {
            if !flipped {
                // Undo: the new folders are not referenced by the state.
                for d in [&j.staging, &j.to.dir] {
                    let referenced = s.kept().iter().any(|k| k.dir == *d);
                    if !referenced {
                        let p = home.version_dir(d);
                        remove_tree(&p).map_err(io_err("remove", &p))?;
                    }
                }
                let vd = home.versions();
                if vd.is_dir() {
                    crate::fsutil::fsync_dir(&vd).map_err(io_err("sync", &vd))?;
                }
            }
            home.sync_current_link(&s)?;
            collect_garbage(home, &s)?;
            if s.recoveries
                .last()
                .is_none_or(|r| r.to != rec.to || r.outcome != rec.outcome || r.from != rec.from)
            {
                s.recoveries.push(rec.clone());
                if s.recoveries.len() > 50 {
                    s.recoveries.remove(0);
                }
                home.write_state(&s)?;
            }
        }
        None => {
            // An interrupted first install: nothing was ever installed.
            for d in [&j.staging, &j.to.dir] {
                let p = home.version_dir(d);
                remove_tree(&p).map_err(io_err("remove", &p))?;
            }
        }
    }
    remove(home)?;
    Ok(Some(rec))
}
