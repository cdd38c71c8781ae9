//! `offgrid inspect`: what a USB tree or an update pack *claims* to hold, read without any
//! key and **without verifying anything** — no signature is checked, no hash compared.
//! For HQ and field staff who want to know which stick or pack is in their hand before
//! verifying it (SPEC.md §15.1).
//!
//! Reads are bounded like the verifying readers (manifest 64 MiB, 64 signatures of
//! 64 KiB); the manifest is parsed although it is unsigned, which is the point of the
//! command. Signature files only yield the key id they name. A tree's model files are
//! opened to read their GGUF header (chat template); a pack's models are inside payloads
//! and are not decoded. Known gap: a pack's tar is read up to the first payload only.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::excerpt::excerpt;
use crate::hash::read_bounded;
use crate::manifest::Manifest;
use crate::models::template::TemplateSummary;
use crate::toml_guard::{self, TooCostly, MAX_UNVERIFIED_BYTES};
use crate::update::pack::{
    Encoding, PackManifest, BUNDLE_MANIFEST, MAX_PACK_MANIFEST, MAX_SIG, MAX_SIGS, PACK_MANIFEST,
    PACK_ROOTS, PACK_SIGS, PAYLOADS, RELEASE_SIGS,
};

/// Why a path could not be inspected (all usage or I/O errors, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("cannot read '{path}': {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("'{path}' is neither an offgrid USB tree nor an update pack: {reason}")]
    Unknown { path: String, reason: String },
    #[error("'{path}' cannot be read as {what}: {reason}")]
    Malformed {
        path: String,
        what: &'static str,
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> InspectError + '_ {
    move |source| InspectError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn malformed(path: &Path, what: &'static str, reason: impl ToString) -> InspectError {
    InspectError::Malformed {
        path: path.display().to_string(),
        what,
        reason: crate::excerpt::message(&reason.to_string()),
    }
}

/// One signature file, unchecked: the key id it names (`None` when it does not parse).
#[derive(Debug, Clone, Serialize)]
pub struct SignatureFile {
    pub file: String,
    pub key_id: Option<String>,
}

/// A model file's header as found on a tree (not checked against the manifest).
#[derive(Debug, Clone, Serialize)]
pub struct ModelHeader {
    pub path: String,
    /// `None`: the file is missing or not GGUF (`problem` says which).
    pub chat_template: Option<TemplateSummary>,
    pub problem: Option<String>,
}

/// What a tree claims.
#[derive(Debug, Clone)]
pub struct TreeView {
    pub root: PathBuf,
    pub manifest: Manifest,
    pub manifest_sha256: String,
    pub signatures: Vec<SignatureFile>,
    pub models: Vec<ModelHeader>,
}

/// What a pack claims.
#[derive(Debug, Clone)]
pub struct PackView {
    pub path: PathBuf,
    pub size: u64,
    pub pack: PackManifest,
    pub manifest: Manifest,
    pub signatures: Vec<SignatureFile>,
    pub release_signatures: Vec<SignatureFile>,
    /// File names of the trust roots leading the pack (`N.root.toml`, `N.KEYID.minisig`),
    /// not verified.
    pub roots: Vec<String>,
    /// A part of a pack in parts: its marker (SPEC.md §7.18), not verified.
    pub part: Option<crate::update::parts::PartMarker>,
}

/// What one from-release of a pack would get: the changes it names.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub from: String,
    pub deltas: usize,
    pub whole: usize,
    pub unchanged: usize,
    pub removed: Vec<String>,
}

impl PackView {
    /// Per from-release: how many files come from deltas, whole payloads, unchanged
    /// copies, and which files go away.
    pub fn changes(&self) -> Vec<Change> {
        self.pack
            .from
            .iter()
            .map(|f| {
                let deltas = self
                    .pack
                    .payloads
                    .iter()
                    .filter(|p| {
                        p.encoding == Encoding::Delta && p.base_release.as_ref() == Some(&f.release)
                    })
                    .count();
                let whole = self
                    .pack
                    .payloads
                    .iter()
                    .filter(|p| p.encoding == Encoding::Zstd)
                    .count();
                Change {
                    from: f.release.to_string(),
                    deltas,
                    whole,
                    unchanged: f.copy.len(),
                    removed: f.removed.clone(),
                }
            })
            .collect()
    }
}

/// A tree or a pack.
#[derive(Debug, Clone)]
pub enum View {
    Tree(Box<TreeView>),
    Pack(Box<PackView>),
}

/// Reads what `path` claims: a folder is a tree, a file a pack.
pub fn inspect(path: &Path) -> Result<View, InspectError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.is_dir() {
        inspect_tree(path).map(|t| View::Tree(Box::new(t)))
    } else if meta.is_file() {
        inspect_pack(path).map(|p| View::Pack(Box::new(p)))
    } else {
        Err(InspectError::Unknown {
            path: path.display().to_string(),
            reason: "it is not a folder or a regular file".into(),
        })
    }
}

fn key_id(text: &str) -> Option<String> {
    crate::sign::signature_key_id(text).ok()
}

/// Reads a tree's manifest, its signature files' key ids and its models' GGUF headers.
pub fn inspect_tree(root: &Path) -> Result<TreeView, InspectError> {
    let mp = root.join(crate::manifest::MANIFEST_FILE);
    if !mp.is_file() {
        return Err(InspectError::Unknown {
            path: root.display().to_string(),
            reason: "it has no manifest.toml".into(),
        });
    }
    let f = File::open(&mp).map_err(io_err(&mp))?;
    let bytes = read_bounded(&mut &f, MAX_UNVERIFIED_BYTES)
        .map_err(io_err(&mp))?
        .ok_or_else(|| {
            malformed(
                &mp,
                "a manifest",
                TooCostly::Bytes(f.metadata().map_or(0, |m| m.len())),
            )
        })?;
    toml_guard::check(&bytes).map_err(|e| malformed(&mp, "a manifest", e))?;
    let manifest = Manifest::parse(&bytes).map_err(|e| malformed(&mp, "a manifest", e))?;
    let sd = root.join(crate::manifest::SIGNATURES_DIR);
    let mut signatures = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&sd) {
        let mut names: Vec<_> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".minisig"))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names.into_iter().take(MAX_SIGS) {
            let p = sd.join(&name);
            let text = File::open(&p)
                .and_then(|f| read_bounded(&mut &f, MAX_SIG))
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok());
            signatures.push(SignatureFile {
                file: format!("signatures/{name}"),
                key_id: text.as_deref().and_then(key_id),
            });
        }
    }
    let models = manifest
        .models()
        .map(|e| {
            let (chat_template, problem) = match crate::gguf::read_info(&root.join(&e.path)) {
                Ok(i) => (i.chat_template.as_deref().map(TemplateSummary::of), None),
                Err(err) => (None, Some(crate::excerpt::message(&err.to_string()))),
            };
            ModelHeader {
                path: e.path.clone(),
                chat_template,
                problem,
            }
        })
        .collect();
    Ok(TreeView {
        root: root.to_owned(),
        manifest_sha256: crate::sign::sha256_hex(&bytes),
        manifest,
        signatures,
        models,
    })
}

/// Reads a pack's head: the pack manifest, its signature files, the embedded release
/// manifest and the release's signature files; stops at the first payload.
pub fn inspect_pack(path: &Path) -> Result<PackView, InspectError> {
    let f = File::open(path).map_err(io_err(path))?;
    let size = f.metadata().map_err(io_err(path))?.len();
    let mut ar = tar::Archive::new(BufReader::new(f));
    let not_a_pack = |reason: String| InspectError::Unknown {
        path: path.display().to_string(),
        reason,
    };
    let entries = ar
        .entries()
        .map_err(|e| not_a_pack(format!("not a tar file: {e}")))?;
    let (mut pack, mut manifest) = (None, None);
    let (mut signatures, mut release_signatures) = (Vec::new(), Vec::new());
    let mut roots = Vec::new();
    let mut part = None;
    let mut skipped = 0usize;
    for (j, e) in entries.enumerate() {
        let i = j - skipped;
        let mut e = match e {
            Ok(e) => e,
            Err(err) if i == 0 => return Err(not_a_pack(format!("not a tar file: {err}"))),
            Err(err) => return Err(malformed(path, "an update pack", err)),
        };
        let name = e
            .path()
            .map_err(|e| malformed(path, "an update pack", e))?
            .to_string_lossy()
            .into_owned();
        // A chain of trust roots may lead the pack (SPEC.md §7.2); listed, not read.
        if let Some(file) = name.strip_prefix(&format!("{PACK_ROOTS}/")) {
            if i == 0 && roots.len() < crate::trustroot::MAX_ROOTS * (1 + MAX_SIGS) {
                roots.push(excerpt(file));
                skipped += 1;
                continue;
            }
        }
        if i == 0 && name != PACK_MANIFEST {
            return Err(not_a_pack(format!(
                "its first entry is '{}', not '{PACK_MANIFEST}'",
                excerpt(&name)
            )));
        }
        if name.starts_with(&format!("{PAYLOADS}/")) || i > 2 * MAX_SIGS + 2 {
            break;
        }
        let max = if name == PACK_MANIFEST || name == BUNDLE_MANIFEST {
            MAX_PACK_MANIFEST.min(MAX_UNVERIFIED_BYTES)
        } else {
            MAX_SIG
        };
        let bytes = read_bounded(&mut e, max)
            .map_err(io_err(path))?
            .ok_or_else(|| malformed(path, "an update pack", format!("'{name}' is too large")))?;
        if name == crate::update::parts::PART_MARKER {
            part = Some(
                crate::update::parts::PartMarker::parse(&bytes)
                    .map_err(|r| malformed(path, "an update pack", r))?,
            );
            continue;
        }
        if name == PACK_MANIFEST || name == BUNDLE_MANIFEST {
            toml_guard::check(&bytes).map_err(|r| malformed(path, "an update pack", r))?;
        }
        if name == PACK_MANIFEST {
            pack = Some(
                PackManifest::parse(&bytes).map_err(|r| malformed(path, "an update pack", r))?,
            );
        } else if name == BUNDLE_MANIFEST {
            manifest =
                Some(Manifest::parse(&bytes).map_err(|r| malformed(path, "an update pack", r))?);
        } else {
            let text = String::from_utf8(bytes).ok();
            let sig = |file: &str| SignatureFile {
                file: file.to_owned(),
                key_id: text.as_deref().and_then(key_id),
            };
            if name.starts_with(&format!("{RELEASE_SIGS}/")) {
                release_signatures.push(sig(&name));
            } else if name.starts_with(&format!("{PACK_SIGS}/")) {
                signatures.push(sig(&name));
            }
        }
    }
    let pack = pack.ok_or_else(|| not_a_pack("it has no pack manifest".into()))?;
    let manifest = manifest
        .ok_or_else(|| malformed(path, "an update pack", "it has no embedded manifest.toml"))?;
    Ok(PackView {
        path: path.to_owned(),
        size,
        pack,
        manifest,
        signatures,
        release_signatures,
        roots,
        part,
    })
}

impl crate::diagnostic::Diagnostic for InspectError {
    fn help(&self) -> Option<String> {
        match self {
            InspectError::Unknown { .. } => {
                Some("give the folder holding manifest.toml, or a .ogpack file".into())
            }
            _ => None,
        }
    }
}
