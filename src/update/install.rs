//! `offgrid install --from USBROOT`: verifies a USB tree (signatures against the given
//! or pinned trust policy, then every file's size and sha256 as it is copied) into a new
//! version folder of the site home and switches to it atomically. The first install pins
//! the trusted keys in the home; later installs and applies use the pinned policy.
//! Installing over an existing release works like an update (newer releases only) and
//! keeps the previous one for rollback.
//!
//! Known gap: files are copied one after the other (the stick is usually the bottleneck).

use std::fs::{self, File};
use std::path::Path;

use serde::Serialize;

use crate::manifest::{Manifest, MANIFEST_FILE, MAX_MANIFEST_BYTES, SIGNATURES_DIR};
use crate::trust::{SignatureReport, TrustPolicy};
use crate::update::home::{Home, Installed, PinnedTrust, Recovery, State, STATE_FORMAT};
use crate::update::io::{copy_checked, read_bounded};
use crate::update::journal::recover_locked;
use crate::update::pack::{MAX_SIG, MAX_SIGS};
use crate::update::txn::Txn;
use crate::update::{io_err, UpdateError};

/// What install did.
#[derive(Debug, Clone, Serialize)]
pub struct InstallReport {
    pub home: String,
    pub bundle_id: String,
    pub release: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub files: usize,
    pub bytes: u64,
    pub signatures: Vec<SignatureReport>,
    pub pinned_keys: usize,
    pub threshold: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovery>,
}

fn bad(root: &Path, reason: impl Into<String>) -> UpdateError {
    UpdateError::BadTree {
        root: root.display().to_string(),
        reason: reason.into(),
    }
}

/// A tree's manifest, its exact bytes, and its signatures `(file name, text)`.
pub type TreeHead = (Manifest, Vec<u8>, Vec<(String, String)>);

/// Reads a tree's manifest and signatures, bounded.
pub fn read_tree_head(root: &Path) -> Result<TreeHead, UpdateError> {
    let mp = root.join(MANIFEST_FILE);
    let f =
        File::open(&mp).map_err(|e| bad(root, format!("cannot open '{}': {e}", mp.display())))?;
    let bytes = read_bounded(&mut &f, MAX_MANIFEST_BYTES)
        .map_err(io_err("read", &mp))?
        .ok_or_else(|| bad(root, "manifest.toml is larger than 64 MiB"))?;
    let m = Manifest::parse(&bytes).map_err(|e| bad(root, format!("manifest.toml: {e}")))?;
    let sd = root.join(SIGNATURES_DIR);
    let mut sigs = Vec::new();
    if let Ok(rd) = fs::read_dir(&sd) {
        for e in rd {
            let e = e.map_err(io_err("read", &sd))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".minisig") || crate::update::history::check_sig_name(&name).is_err()
            {
                continue;
            }
            if sigs.len() >= MAX_SIGS {
                return Err(bad(root, "too many signatures"));
            }
            let f = File::open(e.path()).map_err(io_err("open", &e.path()))?;
            let b = read_bounded(&mut &f, MAX_SIG)
                .map_err(io_err("read", &e.path()))?
                .ok_or_else(|| bad(root, format!("signature '{name}' is too large")))?;
            let text = String::from_utf8(b)
                .map_err(|_| bad(root, format!("signature '{name}' is not UTF-8")))?;
            sigs.push((name, text));
        }
    }
    sigs.sort();
    Ok((m, bytes, sigs))
}

/// Installs the USB tree at `root` into `home`. `given` is the policy from
/// `--pubkey`/`--trust` (required for a first install; when the home already pins keys
/// it must be the same keys, or absent).
pub fn install(
    home: &Home,
    root: &Path,
    given: Option<&TrustPolicy>,
    progress: crate::Progress,
) -> Result<InstallReport, UpdateError> {
    let lock = home.lock(true)?;
    let recovered = recover_locked(home, &lock)?;
    let state = home.read_state()?;
    let policy = match (&state, given) {
        (None, None) => return Err(crate::trust::TrustError::NoKeys.into()),
        (None, Some(p)) => p.clone(),
        (Some(s), g) => {
            if let Some(g) = g {
                if PinnedTrust::from_policy(g) != s.trust {
                    return Err(UpdateError::KeysDiffer {
                        home: home.root.display().to_string(),
                    });
                }
            }
            home.policy(s)?
        }
    };
    let (m, bytes, sigs) = read_tree_head(root)?;
    let reports = policy.evaluate(&m, &bytes, &sigs)?;
    if let Some(s) = &state {
        if s.bundle_id != m.bundle_id {
            return Err(UpdateError::WrongBundle {
                installed: s.bundle_id.clone(),
                pack: m.bundle_id.clone(),
            });
        }
        if m.release <= s.current.release {
            return Err(UpdateError::Downgrade {
                installed: s.current.release.to_string(),
                to: m.release.to_string(),
            });
        }
    }
    // Every file must be there and a regular file before anything is staged.
    for f in &m.files {
        let p = crate::paths::join(root, &f.path);
        match fs::symlink_metadata(&p) {
            Ok(md) if md.is_file() && md.len() == f.size => {}
            Ok(md) if md.is_file() => {
                return Err(bad(
                    root,
                    format!(
                        "'{}' is {} bytes, the manifest says {}",
                        f.path,
                        md.len(),
                        f.size
                    ),
                ))
            }
            Ok(_) => return Err(bad(root, format!("'{}' is not a regular file", f.path))),
            Err(_) => return Err(bad(root, format!("'{}' is missing", f.path))),
        }
    }
    crate::media::check_space(
        &home.root,
        "the release",
        crate::media::install_need(&m, bytes.len()),
        crate::media::HOME_SPACE_HELP,
    )?;
    let from = state.as_ref().map(|s| s.current.clone());
    let txn = Txn::begin(home, &lock, "install", from.clone(), &m.release)?;
    let total = m.total_size().max(1);
    let mut done = 0;
    let staged = (|| -> Result<(), UpdateError> {
        for f in &m.files {
            let src = crate::paths::join(root, &f.path);
            let dst = txn.target(&f.path)?;
            match copy_checked(&src, &dst, f.size, &f.sha256, f.mode, false)
                .map_err(io_err("copy", &src))?
            {
                Ok(()) => {}
                Err(actual) => {
                    return Err(bad(
                        root,
                        format!(
                            "'{}' does not match the manifest (got {actual}, expected sha256 {})",
                            f.path, f.sha256
                        ),
                    ))
                }
            }
            done += f.size;
            progress(done, total);
            crate::update::fault::point("payload-written");
        }
        txn.write_release_meta(&bytes, &sigs)
    })();
    if let Err(e) = staged {
        txn.abort();
        return Err(e);
    }
    let to = Installed {
        release: m.release.clone(),
        dir: txn.journal.to.dir.clone(),
    };
    let mut new_state = match &state {
        None => State {
            format: STATE_FORMAT.into(),
            bundle_id: m.bundle_id.clone(),
            current: to.clone(),
            previous: None,
            trust: PinnedTrust::from_policy(&policy),
            history: Vec::new(),
            recoveries: Vec::new(),
        },
        Some(s) => {
            let mut s = s.clone();
            s.previous = Some(s.current.clone());
            s.current = to.clone();
            s
        }
    };
    new_state.push_event("install", &m.release, from.as_ref().map(|f| &f.release));
    txn.commit(&new_state)?;
    Ok(InstallReport {
        home: home.root.display().to_string(),
        bundle_id: m.bundle_id.clone(),
        release: m.release.to_string(),
        previous: from.map(|f| f.release.to_string()),
        files: m.files.len(),
        bytes: m.total_size(),
        signatures: reports,
        pinned_keys: new_state.trust.keys.len(),
        threshold: new_state.trust.threshold,
        recovered,
    })
}
