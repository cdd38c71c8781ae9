//! The one reader of a signed head: a tree's `manifest.toml` and its
//! `signatures/*.minisig`, read with one set of bounds, and the signatures checked over
//! the exact manifest bytes against the trust policy *before* the TOML is parsed
//! (SPEC.md §4.6). Only when enough trusted signatures hold is the manifest parsed, and
//! then each trusted comment's bundle id, release and manifest hash are checked against
//! the parsed manifest. An unsigned or wrongly signed manifest costs one bounded read and
//! one hash, whatever its contents.
//!
//! `verify`, `install`, `create-update-pack --record/--tree` and the launcher read trees
//! through here; the pack reader (`update/reader.rs`) reads its tar entries itself but
//! uses the same limits and the same two-step evaluation ([`TrustPolicy::check_bytes`],
//! then [`crate::trust::Pending::bind`]). [`read_unverified`] is for callers that
//! legitimately look at a manifest without a key (the launcher's model list, `inspect`):
//! same bounds, and its name says what it is.
//!
//! Known gap: the files are opened by path; a tree swapped between this read and a
//! later read of its payload is caught by the payload's hash, not here.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::hash;
use crate::manifest::{self, Manifest, ManifestError};
use crate::sign;
use crate::trust::{SignatureReport, SignatureStatus, TrustError, TrustPolicy};

/// Largest signature file read (a minisign signature is about 350 bytes).
pub const MAX_SIGNATURE_BYTES: u64 = 16 << 10;
/// Most signature files read from one `signatures/` folder or one pack.
pub const MAX_SIGNATURES: usize = 64;
/// Largest manifest read (a tree's or a pack's).
pub const MAX_MANIFEST_BYTES: u64 = manifest::MAX_MANIFEST_BYTES;

/// Why a signed head could not be read or is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    #[error("'{path}' does not exist")]
    NoSuchRoot { path: String },
    #[error("'{path}' is not a folder")]
    RootNotADirectory { path: String },
    #[error("not a complete offgrid tree: '{path}' is missing")]
    Incomplete { path: String },
    #[error("'{path}' is not a regular file")]
    ManifestNotAFile { path: String },
    #[error("manifest '{path}' is {size} bytes, more than the {max} allowed")]
    ManifestTooLarge { path: String, size: u64, max: u64 },
    #[error("cannot read '{path}': {source}")]
    Read { path: String, source: io::Error },
    #[error("manifest '{path}' is refused")]
    Manifest {
        path: String,
        #[source]
        source: ManifestError,
    },
    #[error("'{dir}' holds no .minisig signature")]
    Unsigned { dir: String },
    #[error("signature '{path}' is {size} bytes, more than the {max} a minisign signature takes")]
    SignatureTooLarge { path: String, size: u64, max: u64 },
    #[error("'{dir}' holds more than {max} signature files")]
    TooManySignatures { dir: String, max: usize },
    #[error("{}", untrusted(manifest, source))]
    Untrusted {
        manifest: String,
        #[source]
        source: TrustError,
    },
}

fn untrusted(manifest: &str, e: &TrustError) -> String {
    match e {
        TrustError::ThresholdNotMet { reports, .. } => {
            crate::trust::untrusted_message(&format!("'{manifest}'"), reports)
        }
        _ => format!("the signatures over '{manifest}' do not hold; no file was checked"),
    }
}

impl HeadError {
    /// True for a clean "no" (exit 1): the tree is incomplete, damaged or not trusted.
    /// A path that does not exist or cannot be read is an error (exit 2).
    pub fn is_refusal(&self) -> bool {
        match self {
            HeadError::NoSuchRoot { .. }
            | HeadError::RootNotADirectory { .. }
            | HeadError::Read { .. } => false,
            HeadError::Manifest { source, .. } => !matches!(source, ManifestError::Format { .. }),
            HeadError::Untrusted { source, .. } => source.is_refusal(),
            HeadError::Incomplete { .. }
            | HeadError::ManifestNotAFile { .. }
            | HeadError::ManifestTooLarge { .. }
            | HeadError::Unsigned { .. }
            | HeadError::SignatureTooLarge { .. }
            | HeadError::TooManySignatures { .. } => true,
        }
    }

    /// The signature reports, when the trust policy was evaluated.
    pub fn signatures(&self) -> &[SignatureReport] {
        match self {
            HeadError::Untrusted {
                source: TrustError::ThresholdNotMet { reports, .. },
                ..
            } => reports,
            _ => &[],
        }
    }
}

/// A tree's head as read from disk, bounded; nothing in it is trusted yet.
#[derive(Debug, Clone)]
pub struct RawHead {
    /// `ROOT/manifest.toml`.
    pub manifest_path: PathBuf,
    /// The manifest's exact bytes.
    pub bytes: Vec<u8>,
    /// `(file name, text)` of each `signatures/*.minisig`, sorted by name.
    pub sigs: Vec<(String, String)>,
}

/// One signer whose valid signature counted towards the threshold.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Signer {
    pub key_id: String,
    pub fingerprint: String,
}

/// A trusted manifest: parsed only after its signatures held.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub bytes: Vec<u8>,
    /// Every signature file (`signatures/NAME`) and its fate.
    pub signatures: Vec<SignatureReport>,
    pub signers: Vec<Signer>,
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// Reads `ROOT/manifest.toml` (bounded, a regular file, no link) and its signatures
/// ([`read_signatures`]); parses nothing.
pub fn read_raw(root: &Path) -> Result<RawHead, HeadError> {
    let manifest_path = root.join(manifest::MANIFEST_FILE);
    let bytes = read_manifest_bytes(root)?;
    let sigs = read_signatures(root)?;
    Ok(RawHead {
        manifest_path,
        bytes,
        sigs,
    })
}

/// Reads a tree's head and establishes trust in it: signatures over the exact bytes
/// against `policy` first, then the parse, then the trusted comments against the parsed
/// manifest. Nothing else in the tree is read.
pub fn read_trusted(root: &Path, policy: &TrustPolicy) -> Result<SignedManifest, HeadError> {
    let mpath = root.join(manifest::MANIFEST_FILE);
    if policy.keys.is_empty() {
        return Err(HeadError::Untrusted {
            manifest: shown(&mpath),
            source: TrustError::NoKeys,
        });
    }
    let raw = read_raw(root)?;
    trust_raw(raw, policy)
}

/// [`read_trusted`] over a head already read.
pub fn trust_raw(raw: RawHead, policy: &TrustPolicy) -> Result<SignedManifest, HeadError> {
    let shown_m = shown(&raw.manifest_path);
    let untrusted = |source| HeadError::Untrusted {
        manifest: shown_m.clone(),
        source,
    };
    let sigs: Vec<(String, String)> = raw
        .sigs
        .iter()
        .map(|(n, t)| (format!("{}/{n}", manifest::SIGNATURES_DIR), t.clone()))
        .collect();
    let pending = policy.check_bytes(&raw.bytes, &sigs).map_err(untrusted)?;
    let manifest = Manifest::parse(&raw.bytes).map_err(|source| HeadError::Manifest {
        path: shown_m.clone(),
        source,
    })?;
    let sha = sign::sha256_hex(&raw.bytes);
    let signatures = pending
        .bind(|c| sign::check_manifest_comment(c, &manifest, &sha))
        .map_err(untrusted)?;
    let signers = signers_of(policy, &signatures);
    Ok(SignedManifest {
        manifest,
        bytes: raw.bytes,
        signatures,
        signers,
    })
}

/// The distinct trusted keys with a valid signature, in report order.
pub fn signers_of(policy: &TrustPolicy, reports: &[SignatureReport]) -> Vec<Signer> {
    let mut signers: Vec<Signer> = Vec::new();
    for r in reports {
        if r.status != SignatureStatus::Valid {
            continue;
        }
        let Some(id) = &r.key_id else { continue };
        if signers.iter().any(|s| &s.key_id == id) {
            continue;
        }
        if let Some(k) = policy.keys.iter().find(|k| &k.key_id() == id) {
            signers.push(Signer {
                key_id: id.clone(),
                fingerprint: k.fingerprint(),
            });
        }
    }
    signers
}

/// Reads and parses `ROOT/manifest.toml` with the same bounds as [`read_trusted`] but
/// checks no signature: for listing what a tree holds, never for deciding to trust it.
pub fn read_unverified(root: &Path) -> Result<(Manifest, Vec<u8>), HeadError> {
    let bytes = read_manifest_bytes(root)?;
    let path = root.join(manifest::MANIFEST_FILE);
    let m = Manifest::parse(&bytes).map_err(|source| HeadError::Manifest {
        path: shown(&path),
        source,
    })?;
    Ok((m, bytes))
}

/// The manifest's bytes: the root a folder, the manifest a regular file (no link) of at
/// most [`MAX_MANIFEST_BYTES`].
fn read_manifest_bytes(root: &Path) -> Result<Vec<u8>, HeadError> {
    let mpath = root.join(manifest::MANIFEST_FILE);
    match fs::metadata(root) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(HeadError::NoSuchRoot { path: shown(root) })
        }
        Err(source) => {
            return Err(HeadError::Read {
                path: shown(root),
                source,
            })
        }
        Ok(m) if !m.is_dir() => return Err(HeadError::RootNotADirectory { path: shown(root) }),
        Ok(_) => {}
    }
    match hash::read_regular_bounded(&mpath, MAX_MANIFEST_BYTES, false) {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(size)) => Err(HeadError::ManifestTooLarge {
            path: shown(&mpath),
            size,
            max: MAX_MANIFEST_BYTES,
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(HeadError::Incomplete {
            path: shown(&mpath),
        }),
        Err(e) if hash::is_not_regular(&e) || is_link_refusal(&e) => {
            Err(HeadError::ManifestNotAFile {
                path: shown(&mpath),
            })
        }
        Err(source) => Err(HeadError::Read {
            path: shown(&mpath),
            source,
        }),
    }
}

/// `O_NOFOLLOW` on a link fails with ELOOP.
fn is_link_refusal(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ELOOP)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Reads every `ROOT/signatures/*.minisig` that is a regular file (links and OS junk
/// skipped), at most [`MAX_SIGNATURES`] of at most [`MAX_SIGNATURE_BYTES`] each, sorted
/// by name, as `(file name, text)`. None at all is [`HeadError::Unsigned`].
pub fn read_signatures(root: &Path) -> Result<Vec<(String, String)>, HeadError> {
    let dir = root.join(manifest::SIGNATURES_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.kind() == io::ErrorKind::NotADirectory =>
        {
            return Err(HeadError::Unsigned { dir: shown(&dir) })
        }
        Err(source) => {
            return Err(HeadError::Read {
                path: shown(&dir),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|source| HeadError::Read {
            path: shown(&dir),
            source,
        })?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".minisig") || crate::verify::is_ignored_name(&name) {
            continue;
        }
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        names.push(name);
        if names.len() > MAX_SIGNATURES {
            return Err(HeadError::TooManySignatures {
                dir: shown(&dir),
                max: MAX_SIGNATURES,
            });
        }
    }
    if names.is_empty() {
        return Err(HeadError::Unsigned { dir: shown(&dir) });
    }
    names.sort();
    let mut sigs = Vec::new();
    for name in names {
        let p = dir.join(&name);
        let bytes = match hash::read_regular_bounded(&p, MAX_SIGNATURE_BYTES, false) {
            Ok(Ok(b)) => b,
            Ok(Err(size)) => {
                return Err(HeadError::SignatureTooLarge {
                    path: shown(&p),
                    size,
                    max: MAX_SIGNATURE_BYTES,
                })
            }
            Err(source) => {
                return Err(HeadError::Read {
                    path: shown(&p),
                    source,
                })
            }
        };
        // Invalid UTF-8 cannot be a minisign signature; the trust check says so.
        sigs.push((name, String::from_utf8_lossy(&bytes).into_owned()));
    }
    Ok(sigs)
}

impl crate::diagnostic::Diagnostic for HeadError {
    fn help(&self) -> Option<String> {
        match self {
            HeadError::NoSuchRoot { .. } => Some("pass the folder of the USB tree (the one holding manifest.toml)".into()),
            HeadError::RootNotADirectory { .. } => Some("pass the folder of the USB tree (the one holding manifest.toml)".into()),
            HeadError::Incomplete { .. } => Some("a tree whose copy was interrupted never verifies; copy it again from HQ or a verified stick".into()),
            HeadError::ManifestNotAFile { .. } => Some("the tree was damaged or tampered with; copy it again from HQ".into()),
            HeadError::ManifestTooLarge { .. } => Some("this is not an offgrid manifest, or it was damaged; copy the tree again from HQ".into()),
            HeadError::Unsigned { .. } => Some("an unsigned tree never verifies; sign it at HQ (offgrid pack-usb signs) or copy it again".into()),
            HeadError::SignatureTooLarge { .. } => Some("the tree was damaged or tampered with; copy it again from HQ".into()),
            HeadError::TooManySignatures { .. } => Some("the tree was damaged or tampered with; copy it again from HQ".into()),
            HeadError::Untrusted { source: TrustError::ThresholdNotMet { reports, .. }, .. } => Some(crate::trust::untrusted_help(reports, "copy the tree again from HQ or from a verified stick")),
            _ => None,
        }
    }
}
