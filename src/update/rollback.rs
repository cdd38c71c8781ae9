//! `offgrid rollback`: switches back to the previous installed version, which apply and
//! install keep on disk. The switch is one atomic replacement of `state.json` (current and
//! previous swap, so a second rollback returns to the newer release); the `current` link
//! follows, and recovery repairs it if the process dies in between.
//!
//! Known gap: the previous version's files are checked for presence and size, not
//! re-hashed (`offgrid verify HOME/current` does that).

use serde::Serialize;

use crate::manifest::Manifest;
use crate::update::home::{Home, Recovery};
use crate::update::journal::recover_locked;
use crate::update::{fault, io_err, UpdateError};

/// What rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub home: String,
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovery>,
}

/// Returns `home` to its previous version.
pub fn rollback(home: &Home) -> Result<RollbackReport, UpdateError> {
    let lock = home.lock(false)?;
    let recovered = recover_locked(home, &lock)?;
    let state = home.state()?;
    let prev = state
        .previous
        .clone()
        .ok_or_else(|| UpdateError::NoPrevious {
            home: home.root.display().to_string(),
        })?;
    let dir = home.version_dir(&prev.dir);
    let bad = |reason: String| UpdateError::BadHome {
        home: home.root.display().to_string(),
        reason,
        help: "the previous version cannot be used; reinstall it from a verified USB stick",
    };
    let mp = dir.join(crate::manifest::MANIFEST_FILE);
    let bytes = std::fs::read(&mp).map_err(io_err("read", &mp))?;
    let m = Manifest::parse(&bytes).map_err(|e| bad(format!("'{}': {e}", mp.display())))?;
    for f in &m.files {
        let p = crate::paths::join(&dir, &f.path);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_file() && md.len() == f.size => {}
            _ => {
                return Err(bad(format!(
                    "'{}' of release {} is missing or has the wrong size",
                    f.path, prev.release
                )))
            }
        }
    }
    let mut s = state.clone();
    s.previous = Some(state.current.clone());
    s.current = prev.clone();
    s.push_event("rollback", &prev.release, Some(&state.current.release));
    home.write_state(&s)?;
    fault::point("flipped");
    home.sync_current_link(&s)?;
    drop(lock);
    Ok(RollbackReport {
        home: home.root.display().to_string(),
        from: state.current.release.to_string(),
        to: prev.release.to_string(),
        recovered,
    })
}
