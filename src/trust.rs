//! Trust policy: which public keys are trusted and how many of them must have signed
//! (m-of-n threshold), and the evaluation of a manifest's signatures against it.
//! A key found on the stick itself is never trusted: keys come from `--pubkey`, a
//! `--trust` file, or the keys pinned at install.
//!
//! STUB: API fixed, body to be written (owner: keys/sign/trust helper).

use std::path::Path;

use crate::keys::{KeyError, PublicKey};
use crate::manifest::Manifest;

/// Trusted keys and the number of distinct valid signatures required.
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    pub keys: Vec<PublicKey>,
    pub threshold: usize,
}

/// What happened to one signature file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum SignatureStatus {
    Valid,
    UnknownKey,
    Invalid { reason: String },
}

/// One signature file and its fate.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SignatureReport {
    pub file: String,
    pub key_id: Option<String>,
    #[serde(flatten)]
    pub status: SignatureStatus,
}

/// Why trust could not be established.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("no trusted key given\nhelp: pass --pubkey HQ.pub or --trust FILE; a key on the stick itself proves nothing")]
    NoKeys,
    #[error("cannot read trust policy '{path}': {reason}")]
    Policy { path: String, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("signature threshold not met: {valid} valid signature(s) by trusted keys, {threshold} required")]
    ThresholdNotMet {
        valid: usize,
        threshold: usize,
        reports: Vec<SignatureReport>,
    },
}

impl TrustError {
    /// True for a clean "no" (exit 1) rather than an error.
    pub fn is_refusal(&self) -> bool {
        matches!(self, TrustError::ThresholdNotMet { .. })
    }
}

impl TrustPolicy {
    /// Every key given is trusted; one signature suffices.
    pub fn from_keys(keys: Vec<PublicKey>) -> Result<TrustPolicy, TrustError> {
        let _ = keys;
        todo!()
    }
    /// Loads a trust file (see `formats/trust.example.toml`).
    pub fn load(path: &Path) -> Result<TrustPolicy, TrustError> {
        let _ = path;
        todo!()
    }
    /// Checks `sigs` (file name, `.minisig` text) over the manifest. Ok with the reports
    /// when the threshold is met; `ThresholdNotMet` with them otherwise.
    pub fn evaluate(
        &self,
        manifest: &Manifest,
        manifest_bytes: &[u8],
        sigs: &[(String, String)],
    ) -> Result<Vec<SignatureReport>, TrustError> {
        let _ = (manifest, manifest_bytes, sigs);
        todo!()
    }
}
