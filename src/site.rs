//! The site's own identity and what it reports back (SPEC.md §17): a site key (ed25519,
//! minisign format, unencrypted, `HOME/site/site.key` mode 0600, `site.pub` beside it)
//! made at the first install, the site id (the key's minisign key id), the home's
//! site record in `state.json` (newest signed time seen, receipt counter), the failed
//! operations (`HOME/site/failures.json`), and, in the submodules, receipts ([`receipt`]), the HQ fleet view
//! ([`fleet`]) and clock-free expiry ([`fresh`]).
//!
//! Known gaps: the site key is not encrypted (a site runs unattended; whoever can read
//! the home can sign its receipts, which only ever describe that home); a lost home
//! means a new site key, so HQ sees a new site.

pub mod fleet;
pub mod fresh;
pub mod receipt;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, PublicKey, SecretKey};
use crate::update::{Home, UpdateError};

/// The folder of the site key in a home.
pub const SITE_DIR: &str = "site";
/// Failed operations kept in `state.json`.
const MAX_FAILURES: usize = 50;

/// Why a site operation failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error(transparent)]
    Update(#[from] UpdateError),
    #[error("site key of '{home}': {source}")]
    Key { home: String, source: KeyError },
    #[error("cannot {action} '{path}': {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("receipt '{path}' is refused: {reason}")]
    Receipt {
        path: String,
        reason: String,
        help: &'static str,
    },
    #[error("receipt '{path}' is from site {site}, which is not enrolled")]
    Unknown { path: String, site: String },
    #[error("'{path}' exists and is not this site's receipt (it is signed by key {other})")]
    NotOurs { path: String, other: String },
    #[error("'{path}' is not a folder to write receipts into: {reason}")]
    BadTarget { path: String, reason: String },
    #[error("HQ history '{hq}': {reason}")]
    Fleet {
        hq: String,
        reason: String,
        help: &'static str,
    },
}

impl SiteError {
    /// True for a clean "no" (exit 1) rather than an error.
    pub fn is_refusal(&self) -> bool {
        match self {
            SiteError::Update(u) => u.is_refusal(),
            SiteError::Receipt { .. } | SiteError::Unknown { .. } | SiteError::NotOurs { .. } => {
                true
            }
            _ => false,
        }
    }
}

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> SiteError {
    let path = path.display().to_string();
    move |source| SiteError::Io {
        action,
        path,
        source,
    }
}

/// One failed operation, as the site remembers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub time: String,
    /// `install`, `apply-update`, `rollback`.
    pub op: String,
    /// The error's first line (with its context), cut to 200 characters.
    pub reason: String,
}

/// The site's record in `state.json` (`site`): all optional, so older homes read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteState {
    /// The newest signed time (a manifest's or pack's `created`) this home accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_signed: Option<String>,
    /// Receipts written so far (the last receipt's `sequence`).
    #[serde(default)]
    pub receipts: u64,
    /// The signed trust root this home is at (SPEC.md §19); absent: the implicit root 0
    /// of the pinned keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<crate::trustroot::RootRecord>,
}

/// `HOME/site/failures.json`: the newest failed operations. Kept apart from
/// `state.json`, so a refused operation leaves the release state byte for byte as it was.
pub fn failures_path(home: &Home) -> PathBuf {
    home.root.join(SITE_DIR).join("failures.json")
}

/// The recorded failures (none when the file is missing or unreadable).
pub fn failures(home: &Home) -> Vec<Failure> {
    match crate::hash::read_regular_bounded(&failures_path(home), 1 << 20, false) {
        Ok(Ok(b)) => serde_json::from_slice(&b).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// The site key's paths in `home`: `(secret, public)`. One key per home root: every
/// bundle installed in it (SPEC.md §7.5) is the same site.
pub fn key_paths(home: &Home) -> (PathBuf, PathBuf) {
    let d = home.base.join(SITE_DIR);
    (d.join("site.key"), d.join("site.pub"))
}

/// The site id of a site key: its minisign key id, 16 uppercase hex digits. Random (the
/// key number minisign draws), so two sites never share a receipt file name.
pub fn site_id(pk: &PublicKey) -> String {
    pk.key_id()
}

fn key_err(home: &Home) -> impl FnOnce(KeyError) -> SiteError {
    let home = home.root.display().to_string();
    move |source| SiteError::Key { home, source }
}

/// The site's public key, if it has one yet.
pub fn public_key(home: &Home) -> Result<Option<PublicKey>, SiteError> {
    let (sk, pk) = key_paths(home);
    if pk.exists() {
        return PublicKey::load(&pk).map(Some).map_err(key_err(home));
    }
    if sk.exists() {
        return Ok(Some(secret_key(home)?.public));
    }
    Ok(None)
}

/// Loads the site's secret key.
pub fn secret_key(home: &Home) -> Result<SecretKey, SiteError> {
    let (sk, _) = key_paths(home);
    SecretKey::load(&sk, &mut || {
        Err("the site key must not be encrypted; make a new home".into())
    })
    .map_err(key_err(home))
}

/// Makes the site key unless the home has one; returns its public half. A secret key
/// whose public file was lost (a power cut between the two renames) gets it back.
pub fn ensure_key(home: &Home) -> Result<PublicKey, SiteError> {
    let (sk, pk) = key_paths(home);
    if sk.exists() {
        let key = secret_key(home)?;
        if !pk.exists() {
            crate::fsutil::atomic_write(&pk, key.public.to_file_text().as_bytes())
                .map_err(io_err("write", &pk))?;
        }
        return Ok(key.public);
    }
    let dir = sk.parent().unwrap_or(&home.base).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err("set the mode of", &dir))?;
    }
    crate::keys::generate(&sk, &pk, None, true).map_err(key_err(home))
}

/// Records a failed operation in the home's state (for the next receipt). Does nothing
/// when nothing is installed or another command holds the lock: a failure record is
/// best effort and never hides the failure itself.
pub fn record_failure(home: &Home, op: &str, reason: &str) -> Result<(), SiteError> {
    if !home.state_path().exists() {
        return Ok(());
    }
    let lock = match home.lock(false, "record-failure") {
        Ok(l) => l,
        Err(UpdateError::Locked { .. } | UpdateError::NotInstalled { .. }) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if home.read_state()?.is_none() {
        return Ok(());
    }
    let mut all = failures(home);
    let first = reason.lines().next().unwrap_or_default();
    all.push(Failure {
        time: crate::manifest::now_rfc3339(),
        op: op.into(),
        reason: crate::excerpt::message(first),
    });
    if all.len() > MAX_FAILURES {
        let n = all.len() - MAX_FAILURES;
        all.drain(..n);
    }
    let dir = home.root.join(SITE_DIR);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let p = failures_path(home);
    let mut text = serde_json::to_string_pretty(&all).unwrap_or_default();
    text.push('\n');
    crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))?;
    drop(lock);
    Ok(())
}

impl crate::diagnostic::Diagnostic for SiteError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            SiteError::Update(e) => crate::diagnostic::Diagnostic::help(e),
            SiteError::Receipt { help, .. } => Some(help.to_string()),
            SiteError::Unknown { .. } => Some("enrol its key first (offgrid receipts enrol SITE.pub), or import without --enrolled-only to trust it on first use".into()),
            SiteError::NotOurs { .. } => Some("another site wrote there; nothing was changed. Remove the stray file or use another folder".into()),
            SiteError::BadTarget { .. } => Some("pass the stick's root folder (or any writable folder) with --to".into()),
            SiteError::Fleet { help, .. } => Some(help.to_string()),
            _ => None,
        }
    }
}
