//! `offgrid install --from USBROOT`: verifies a USB tree (signatures against the given
//! or pinned trust policy, then every file's size and sha256 as it is copied) into a new
//! version folder of the site home and switches to it atomically. The first install pins
//! the trusted keys in the home; later installs and applies use the pinned policy.
//! Installing over an existing release works like an update (newer releases only) and
//! keeps the previous one for rollback.
//!
//! Known gap: files are copied one after the other (the stick is usually the bottleneck).

use std::fs;
use std::path::Path;

use serde::Serialize;

use crate::hash::copy_checked;
use crate::manifest::Manifest;
use crate::trust::{SignatureReport, TrustPolicy};
use crate::update::home::{Home, Installed, PinnedTrust, Recovery, State, STATE_FORMAT};
use crate::update::journal::recover_locked;
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
    /// Warnings (an expired release installed under the `warn` expiry policy).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

fn bad(root: &Path, reason: impl Into<String>) -> UpdateError {
    UpdateError::BadTree {
        root: root.display().to_string(),
        reason: reason.into(),
    }
}

/// A tree's manifest, its exact bytes, and its signatures `(file name, text)`.
pub type TreeHead = (Manifest, Vec<u8>, Vec<(String, String)>);

/// Reads a tree's manifest and signatures with the one head reader's bounds
/// ([`crate::signed`]) and parses the manifest without checking a signature: for HQ
/// recording its own trees in its history, which keeps the signatures to check later.
pub fn read_tree_head(root: &Path) -> Result<TreeHead, UpdateError> {
    let raw = crate::signed::read_raw(root)?;
    let m = Manifest::parse(&raw.bytes).map_err(|e| bad(root, format!("manifest.toml: {e}")))?;
    Ok((m, raw.bytes, raw.sigs))
}

/// Refuses, before anything else (no home is created), a `--from` that is not a folder:
/// missing, a file, a FIFO (whose read would block). A usage error (exit 2), like
/// `verify` of the same path.
pub(crate) fn check_root(root: &Path) -> Result<(), UpdateError> {
    let not_a_tree = |reason: &str| UpdateError::NotATree {
        path: root.display().to_string(),
        reason: reason.into(),
    };
    match fs::metadata(root) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(not_a_tree("it does not exist")),
        Err(e) => Err(io_err("read", root)(e)),
        Ok(m) if !m.is_dir() => Err(not_a_tree(&format!(
            "it is {}",
            crate::fsutil::kind_name(&m)
        ))),
        Ok(_) => Ok(()),
    }
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
    check_root(root)?;
    let lock = home.lock(true, "install")?;
    let recovered = recover_locked(home, &lock)?;
    install_locked(home, &lock, recovered, root, given, progress)
}

/// The policy an install checks a release with: `given` at the first install, else the
/// pinned one (`given`, when present, must be the pinned keys).
pub(crate) fn policy_for(
    home: &Home,
    state: Option<&State>,
    given: Option<&TrustPolicy>,
) -> Result<TrustPolicy, UpdateError> {
    Ok(match (state, given) {
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
    })
}

/// [`install`] with the home's lock held and recovery done (`recovered` its outcome).
pub(crate) fn install_locked(
    home: &Home,
    lock: &crate::update::home::Lock,
    recovered: Option<Recovery>,
    root: &Path,
    given: Option<&TrustPolicy>,
    progress: crate::Progress,
) -> Result<InstallReport, UpdateError> {
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
    // Signatures over the exact bytes first, then the parse (SPEC.md §4.6). Only names
    // the release folder can keep (SPEC.md §7) take part.
    let (signed, sigs) = trusted_head(root, &policy)?;
    let (m, bytes, reports) = (signed.manifest, signed.bytes, signed.signatures);
    check_offer(state.as_ref(), &m)?;
    let seen = state.as_ref().and_then(|s| s.site.newest_signed.clone());
    let expiry = state
        .as_ref()
        .map(crate::trustroot::expiry_policy)
        .unwrap_or_default();
    let warnings: Vec<String> = crate::site::fresh::check_policy(seen.as_deref(), &m, expiry)?
        .into_iter()
        .collect();
    // Only this computer's programs and libraries are installed (SPEC.md §18.2).
    let host = crate::platform::Platform::host().to_string();
    // Every file must be there and a regular file before anything is staged.
    for f in m.files_on(&host) {
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
    crate::site::ensure_key(home).map_err(|e| UpdateError::SiteKey {
        home: home.root.display().to_string(),
        reason: e.to_string(),
    })?;
    let txn = Txn::begin(home, lock, "install", from.clone(), &m.release)?;
    let total = m.files_on(&host).map(|f| f.size).sum::<u64>().max(1);
    let mut done = 0;
    let staged = (|| -> Result<(), UpdateError> {
        for f in m.files_on(&host) {
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
        txn.make_dirs(&m, &host)?;
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
            site: Default::default(),
            also_kept: Vec::new(),
            layout: crate::update::store::LAYOUT,
        },
        Some(s) => {
            let mut s = s.clone();
            s.advance(to.clone(), crate::update::home::DEFAULT_KEEP);
            s
        }
    };
    new_state.push_event("install", &m.release, from.as_ref().map(|f| &f.release));
    new_state.site.newest_signed = crate::site::fresh::newest(seen.as_deref(), &m.created).or(seen);
    txn.commit(&new_state)?;
    Ok(InstallReport {
        home: home.root.display().to_string(),
        bundle_id: m.bundle_id.clone(),
        release: m.release.to_string(),
        previous: from.map(|f| f.release.to_string()),
        files: m.files_on(&host).count(),
        bytes: m.files_on(&host).map(|f| f.size).sum(),
        signatures: reports,
        pinned_keys: new_state.trust.keys.len(),
        threshold: new_state.trust.threshold,
        recovered,
        warnings,
    })
}

/// The head of the tree at `root` trusted by `policy` (signatures over the exact bytes
/// first, then the parse, SPEC.md §4.6), with the signatures a release folder keeps: only
/// names it can hold (SPEC.md §7) take part.
pub(crate) fn trusted_head(
    root: &Path,
    policy: &TrustPolicy,
) -> Result<(crate::signed::SignedManifest, Vec<(String, String)>), UpdateError> {
    let mut raw = crate::signed::read_raw(root)?;
    raw.sigs
        .retain(|(n, _)| crate::update::history::check_sig_name(n).is_ok());
    let sigs = raw.sigs.clone();
    Ok((crate::signed::trust_raw(raw, policy)?, sigs))
}

/// Refuses a release for the installed home `state`: another bundle, or not newer than
/// the current release.
pub(crate) fn check_offer(state: Option<&State>, m: &Manifest) -> Result<(), UpdateError> {
    if let Some(s) = state {
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
    Ok(())
}
