//! Volumes and parts on a medium (SPEC.md §16.6, §16.7): the marker `volume.toml` that
//! says which volume of which release a tree is, reading and checking it against the
//! signed manifest, and what each volume holds.
//!
//! A release spread over volumes carries the same signed `manifest.toml` on every volume;
//! each file (or part) names its volume there. `volume.toml` is not signed: it is a
//! claim checked by its consequence — the marker must name the signed manifest's bundle,
//! release, sha256 and volume count, and every piece the signed manifest puts on the
//! claimed volume must be present and verify, so a false volume number only makes the
//! volume fail. Known gap: the marker is at most 4 KiB and read before any key is
//! needed only to pick the volume; nothing in it is trusted beyond that.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::manifest::Manifest;

/// The marker file at the root of a volume (or of a tree holding parts).
pub const MARKER_FILE: &str = "volume.toml";
/// The marker's format.
pub const MARKER_FORMAT: &str = "offgrid-volume/1";
/// Largest marker read.
const MAX_MARKER_BYTES: u64 = 4096;

/// The content of `volume.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub format: String,
    pub bundle_id: String,
    pub release: String,
    /// sha256 of the `manifest.toml` beside it.
    pub manifest_sha256: String,
    /// This volume's number, 1-based.
    pub volume: u32,
    /// How many volumes the release has.
    pub volumes: u32,
}

/// Why a volume (or a set of them) was refused.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("'{path}' is not a valid volume marker: {reason}")]
    BadMarker { path: String, reason: String },
    #[error("'{root}' is volume {volume} of {volumes} of {release}; staged so far: volume(s) {}; still missing: volume(s) {}", join(.staged), join(.missing))]
    Missing {
        root: String,
        /// `release R of BUNDLE`.
        release: String,
        volume: u32,
        volumes: u32,
        staged: Vec<u32>,
        missing: Vec<u32>,
    },
    #[error("'{root}' holds {this}, but '{dir}' is staging {staged}")]
    OtherSet {
        root: String,
        this: String,
        staged: String,
        dir: String,
        missing: Vec<u32>,
    },
    #[error("'{path}' on volume {volume}: bytes {start}..{end} differ from the signed manifest (chunk {chunk})")]
    Damaged {
        path: String,
        volume: u32,
        start: u64,
        end: u64,
        chunk: u64,
    },
    #[error(
        "'{path}' on volume {volume} is missing or not a regular file of {size} bytes: {reason}"
    )]
    BadPiece {
        path: String,
        volume: u32,
        size: u64,
        reason: String,
    },
    #[error("the release needs {needed} volumes, but {given} destination(s) were given and there is no terminal to ask for the others")]
    TooFewDests { needed: u32, given: usize },
    #[error("{0}")]
    Plan(String),
}

fn join(v: &[u32]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

impl VolumeError {
    /// A clean "no" (exit 1): a missing or damaged volume, another release staged.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            VolumeError::BadMarker { .. }
                | VolumeError::Missing { .. }
                | VolumeError::OtherSet { .. }
                | VolumeError::Damaged { .. }
                | VolumeError::BadPiece { .. }
        )
    }
}

impl crate::diagnostic::Diagnostic for VolumeError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        Some(match self {
            VolumeError::BadMarker { .. } => "copy the volume again from HQ".into(),
            VolumeError::Missing { missing, .. } => format!(
                "insert the volume(s) still missing and run 'offgrid install --from VOLUME' for each: volume(s) {}; what is verified is kept",
                join(missing)
            ),
            VolumeError::OtherSet { dir, missing, .. } => format!(
                "finish the staged release first (volume(s) {} missing), or remove '{dir}' to start over with this one",
                join(missing)
            ),
            VolumeError::Damaged { .. } | VolumeError::BadPiece { .. } => {
                "the volume was damaged or tampered with; copy it again from HQ (the volumes already verified are kept)".into()
            }
            VolumeError::TooFewDests { needed, .. } => format!(
                "give one destination per volume: offgrid pack-usb --volume-size SIZE DEST1 … DEST{needed}"
            ),
            VolumeError::Plan(_) => "use a larger --volume-size or --max-file-size".into(),
        })
    }
}

impl Marker {
    /// The marker of volume `volume` of the release whose manifest is `m` (bytes hashing
    /// to `manifest_sha256`).
    pub fn new(m: &Manifest, manifest_sha256: &str, volume: u32) -> Marker {
        Marker {
            format: MARKER_FORMAT.into(),
            bundle_id: m.bundle_id.clone(),
            release: m.release.to_string(),
            manifest_sha256: manifest_sha256.into(),
            volume,
            volumes: m.volumes.unwrap_or(1),
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Refuses a marker that does not name the signed manifest `m` (bytes hashing to
    /// `sha`), its volume count, or a volume in 1..=N.
    pub fn check(&self, root: &Path, m: &Manifest, sha: &str) -> Result<(), VolumeError> {
        let bad = |reason: String| VolumeError::BadMarker {
            path: root.join(MARKER_FILE).display().to_string(),
            reason,
        };
        if self.format != MARKER_FORMAT {
            return Err(bad(format!(
                "format '{}' is not '{MARKER_FORMAT}'",
                crate::excerpt::excerpt(&self.format)
            )));
        }
        if self.bundle_id != m.bundle_id
            || self.release != m.release.as_str()
            || self.manifest_sha256 != sha
        {
            return Err(bad("it does not name the signed manifest beside it".into()));
        }
        let n = m.volumes.unwrap_or(1);
        if self.volumes != n || !(1..=n).contains(&self.volume) {
            return Err(bad(format!(
                "it says volume {} of {}, the signed manifest has {n} volume(s)",
                self.volume, self.volumes
            )));
        }
        Ok(())
    }
}

/// Reads `ROOT/volume.toml` when present (a regular file of at most 4 KiB).
pub fn read_marker(root: &Path) -> Result<Option<Marker>, VolumeError> {
    let p = root.join(MARKER_FILE);
    if std::fs::symlink_metadata(&p).is_err() {
        return Ok(None);
    }
    let bad = |reason: String| VolumeError::BadMarker {
        path: p.display().to_string(),
        reason,
    };
    let bytes = crate::hash::read_regular_bounded(&p, MAX_MARKER_BYTES, false)
        .map_err(|e| bad(e.to_string()))?
        .map_err(|_| bad(format!("it is larger than {MAX_MARKER_BYTES} bytes")))?;
    let text = std::str::from_utf8(&bytes).map_err(|_| bad("it is not UTF-8".into()))?;
    let m: Marker =
        toml::from_str(text).map_err(|e| bad(crate::excerpt::message(&e.to_string())))?;
    Ok(Some(m))
}

/// The stored paths each volume holds, by volume number.
pub fn contents(m: &Manifest) -> BTreeMap<u32, Vec<String>> {
    let mut out: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for p in m.pieces(None) {
        out.entry(p.volume.unwrap_or(1)).or_default().push(p.path);
    }
    out
}

/// `m` as the tree at `root` stores it: its stored view of the volume `root`'s marker
/// names, or of every piece when there is no readable marker (what a tree being
/// replaced may hold there).
pub fn as_stored_at(root: &Path, m: Manifest) -> Manifest {
    match read_marker(root).ok().flatten() {
        Some(mk) => m.stored_view(Some(mk.volume)),
        None if m.files.iter().any(|f| !f.parts.is_empty()) => m.stored_view(None),
        None => m,
    }
}

/// The name of part `k` of `n` of the file at `path`: `PATH.partKKK-of-NNN`, at least
/// three digits (SPEC.md §16.7).
pub fn part_name(path: &str, k: usize, n: usize) -> String {
    let w = n.to_string().len().max(3);
    format!("{path}.part{k:0w$}-of-{n:0w$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names() {
        assert_eq!(
            part_name("data/big.bin", 1, 3),
            "data/big.bin.part001-of-003"
        );
        assert_eq!(part_name("a", 12, 1200), "a.part0012-of-1200");
    }
}
