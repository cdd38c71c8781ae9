//! `offgrid status`: the installed release, the previous one kept for rollback, the
//! site's history and recoveries, and a quick presence/size check of the current
//! version's files. Runs recovery first, like every command that touches the home.
//! While another command holds the home's lock, status does not recover and says who
//! holds it; with nothing installed yet (a first install in flight) that is the
//! [`UpdateError::Busy`] refusal, not "nothing is installed".
//!
//! Files are checked by size only here (the report says so: `hashed` is false);
//! `status --verify` hashes every file of every kept version ([`crate::update::damage`]).

use serde::Serialize;

use crate::lockfile::Holder;
use crate::manifest::Manifest;
use crate::update::home::{Event, Home, Recovery};
use crate::update::{io_err, journal, UpdateError};

/// What status found.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub home: String,
    pub bundle_id: String,
    pub release: String,
    /// The current version's folder.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub files: usize,
    pub bytes: u64,
    /// Files missing or of the wrong size in the current version.
    pub problems: Vec<String>,
    pub pinned_keys: Vec<String>,
    pub threshold: usize,
    pub history: Vec<Event>,
    pub recoveries: Vec<Recovery>,
    /// The recovery this very run performed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered_now: Option<Recovery>,
    /// True when another offgrid operation held the lock (recovery was not attempted).
    pub busy: bool,
    /// Who held it (command, pid, since), when its record could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy_by: Option<Holder>,
    /// The site's identity and clock record (SPEC.md §17).
    pub site: SiteSummary,
    // Issue 10 (site): whether the files were hashed.
    /// False: `problems` comes from a size check only (`status --verify` hashes, SPEC.md
    /// §7.14).
    pub hashed: bool,
    /// Every kept version: `current`, `previous` (where `rollback` goes) and any other
    /// (`rollback --to` reaches every one).
    pub kept: Vec<KeptRelease>,
}

/// The site id, its key's spoken fingerprint, and the newest signed time seen.
#[derive(Debug, Clone, Serialize)]
pub struct SiteSummary {
    pub site_id: Option<String>,
    pub fingerprint: Option<String>,
    pub newest_signed: Option<String>,
    pub receipts: u64,
    pub failures: usize,
}

fn site_summary(home: &Home, s: &crate::update::home::State) -> SiteSummary {
    let pk = crate::site::public_key(home).ok().flatten();
    SiteSummary {
        site_id: pk.as_ref().map(crate::site::site_id),
        fingerprint: pk.as_ref().map(|k| k.fingerprint()),
        newest_signed: s.site.newest_signed.clone(),
        receipts: s.site.receipts,
        failures: crate::site::failures(home).len(),
    }
}

/// One kept version, in `status`.
#[derive(Debug, Clone, Serialize)]
pub struct KeptRelease {
    pub release: String,
    pub dir: String,
    /// `current`, `previous` or `kept`.
    pub role: &'static str,
}

/// Recovers if needed, then describes the home.
pub fn status(home: &Home) -> Result<StatusReport, UpdateError> {
    let mut busy = false;
    let mut busy_by = None;
    let mut recovered_now = None;
    if home.root.is_dir() {
        match home.lock(false, "status") {
            // Recover, then let go: status only reads from here on.
            Ok(lock) => recovered_now = journal::recover_locked(home, &lock)?,
            Err(UpdateError::Locked { holder, .. }) => {
                busy = true;
                busy_by = holder;
            }
            Err(e) => return Err(e),
        }
    }
    let s = match home.read_state()? {
        Some(s) => s,
        // A first install in flight: busy, not absent.
        None if busy => {
            return Err(UpdateError::Busy {
                home: home.root.display().to_string(),
                holder: busy_by,
            })
        }
        None => {
            return Err(UpdateError::NotInstalled {
                home: home.root.display().to_string(),
            })
        }
    };
    let dir = home.version_dir(&s.current.dir);
    let mp = dir.join(crate::manifest::MANIFEST_FILE);
    let bytes = std::fs::read(&mp).map_err(io_err("read", &mp))?;
    let m = Manifest::parse(&bytes).map_err(|e| UpdateError::BadHome {
        home: home.root.display().to_string(),
        reason: format!("'{}': {e}", mp.display()),
        help: "reinstall from a verified USB stick",
    })?;
    let mut problems = Vec::new();
    let host = crate::platform::Platform::host().to_string();
    for f in m.files_on(&host) {
        let p = crate::paths::join(&dir, &f.path);
        match std::fs::symlink_metadata(&p) {
            Ok(md) if md.is_file() && md.len() == f.size => {}
            Ok(md) if md.is_file() => problems.push(format!(
                "'{}' is {} bytes, expected {}",
                f.path,
                md.len(),
                f.size
            )),
            _ => problems.push(format!("'{}' is missing", f.path)),
        }
    }
    let key_ids = home.policy(&s)?.keys.iter().map(|k| k.key_id()).collect();
    Ok(StatusReport {
        home: home.root.display().to_string(),
        bundle_id: s.bundle_id.clone(),
        release: s.current.release.to_string(),
        path: dir.display().to_string(),
        previous: s.previous.as_ref().map(|p| p.release.to_string()),
        files: m.files.len(),
        bytes: m.total_size(),
        problems,
        pinned_keys: key_ids,
        threshold: s.trust.threshold,
        history: s.history.clone(),
        recoveries: s.recoveries.clone(),
        recovered_now,
        busy,
        busy_by,
        site: site_summary(home, &s),
        hashed: false,
        kept: s
            .kept()
            .into_iter()
            .map(|k| KeptRelease {
                release: k.release.to_string(),
                dir: k.dir.clone(),
                role: if k.dir == s.current.dir {
                    "current"
                } else if s.previous.as_ref().is_some_and(|p| p.dir == k.dir) {
                    "previous"
                } else {
                    "kept"
                },
            })
            .collect(),
    })
}
