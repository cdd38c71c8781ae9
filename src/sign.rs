//! Signing a manifest and checking one signature over it: standard minisign signatures
//! (prehashed ed25519), whose trusted comment names the bundle id, release and manifest
//! sha256 so a signature cannot be moved to another manifest or replayed.
//!
//! STUB: API fixed, body to be written (owner: keys/sign/trust helper).

use crate::keys::{PublicKey, SecretKey};
use crate::manifest::Manifest;

/// Why a signature does not hold.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signature is not in minisign format: {0}")]
    Format(String),
    #[error("signature by key {key_id} does not match the manifest bytes")]
    BadSignature { key_id: String },
    #[error(
        "trusted comment of the signature by key {key_id} does not match the manifest: {reason}"
    )]
    TrustedComment { key_id: String, reason: String },
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The trusted comment `pack-usb` signs: `offgrid bundle=ID release=V manifest_sha256=HEX`.
pub fn trusted_comment(manifest: &Manifest, manifest_bytes: &[u8]) -> String {
    let _ = (manifest, manifest_bytes);
    todo!()
}

/// Signs `manifest_bytes` (which must be `manifest`'s text); returns the `.minisig` text.
pub fn sign_manifest(
    sk: &SecretKey,
    manifest: &Manifest,
    manifest_bytes: &[u8],
) -> Result<String, SignError> {
    let _ = (sk, manifest, manifest_bytes);
    todo!()
}

/// The key id (16 uppercase hex) a `.minisig` text says it was made with.
pub fn signature_key_id(sig_text: &str) -> Result<String, SignError> {
    let _ = sig_text;
    todo!()
}

/// Checks one `.minisig` text against `manifest_bytes` with `pk`, including the trusted
/// comment's bundle id, release and manifest hash.
pub fn check(
    pk: &PublicKey,
    sig_text: &str,
    manifest: &Manifest,
    manifest_bytes: &[u8],
) -> Result<(), SignError> {
    let _ = (pk, sig_text, manifest, manifest_bytes);
    todo!()
}
