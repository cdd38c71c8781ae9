//! The signed pack manifest (`offgrid-pack.toml`, format `offgrid-pack/1`): what an
//! update pack serves (bundle, from-releases and the base files each needs, to-release),
//! the embedded new bundle manifest's hash, and every payload with its encoding, size,
//! sha256 and target. The signatures cover these bytes, so payloads from another pack
//! fail their signed hashes.
//!
//! [`PackManifest::parse`] bounds the input and checks every invariant of SPEC.md §7.2,
//! including that each from-release gets every file of the new release exactly one way
//! (delta payload, unchanged copy, or whole-file zstd payload).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::manifest::{check_bundle_id, is_sha256_hex, Manifest};
use crate::paths::check_bundle_path;
use crate::version::Version;

/// The value of `format`.
pub const FORMAT: &str = "offgrid-pack/1";
/// The value of `format` of a pack cut into parts (`parts`, `[[payloads.pieces]]`;
/// SPEC.md §7.18). A pack in one file stays [`FORMAT`], byte for byte.
pub const FORMAT_PARTS: &str = "offgrid-pack/2";
/// Most parts a pack is cut into.
pub const MAX_PARTS: u32 = 9999;
/// The first tar entry: the signed pack manifest.
pub const PACK_MANIFEST: &str = "offgrid-pack.toml";
/// Folder of the optional chain of trust roots at the head of a pack (`roots/NAME`,
/// before [`PACK_MANIFEST`]; SPEC.md §7.2, §19).
pub const PACK_ROOTS: &str = "roots";
/// Folder of the pack signatures (`signatures/KEYID.minisig`).
pub const PACK_SIGS: &str = "signatures";
/// The embedded new bundle manifest.
pub const BUNDLE_MANIFEST: &str = "manifest.toml";
/// Folder of the new release's own signatures over `manifest.toml`.
pub const RELEASE_SIGS: &str = "release-signatures";
/// Folder of the payloads (`payloads/NNNNNN.zst|.delta`).
pub const PAYLOADS: &str = "payloads";
/// Largest pack manifest accepted (the one head reader's limit, [`crate::signed`]).
pub const MAX_PACK_MANIFEST: u64 = crate::signed::MAX_MANIFEST_BYTES;
/// Largest signature file accepted.
pub const MAX_SIG: u64 = crate::signed::MAX_SIGNATURE_BYTES;
/// Most signatures of one kind accepted.
pub const MAX_SIGS: usize = crate::signed::MAX_SIGNATURES;
/// Most payloads accepted.
pub const MAX_PAYLOADS: usize = crate::manifest::MAX_FILES * 4;
/// Largest changelog text carried in the pack manifest.
pub const MAX_CHANGELOG: usize = 64 << 10;

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// A whole file as one standard zstd frame.
    Zstd,
    /// A binary delta against a base file (SPEC.md §11).
    Delta,
}

/// One payload entry of the pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// The tar entry name, `payloads/NNNNNN.zst` or `payloads/NNNNNN.delta`.
    pub entry: String,
    pub encoding: Encoding,
    /// Bytes of the payload as stored in the tar.
    pub size: u64,
    /// sha256 of the payload bytes as stored.
    pub sha256: String,
    /// The bundle path this payload produces.
    pub target: String,
    pub target_size: u64,
    pub target_sha256: String,
    /// Delta only: the from-release whose file is the base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_release: Option<Version>,
    /// Delta only: the base file's path in that release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    /// Delta only: the base file's sha256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_sha256: Option<String>,
    /// A pack in parts only: where the payload's bytes are, in order (SPEC.md §7.18).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<Piece>,
}

/// One consecutive byte range of a payload, stored in one part of a pack in parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Piece {
    /// The part holding it, 1-based.
    pub part: u32,
    /// Its first byte in the payload.
    pub offset: u64,
    pub size: u64,
    /// sha256 of its bytes.
    pub sha256: String,
}

impl Payload {
    /// The tar entry name of piece `index` (0-based) of this payload in its part: the
    /// payload's own name when it is in one piece, else `ENTRY.partKKK-of-NNN`.
    pub fn piece_entry(&self, index: usize) -> String {
        match self.pieces.len() {
            0 | 1 => self.entry.clone(),
            n => crate::volume::part_name(&self.entry, index + 1, n),
        }
    }
}

/// A file a from-release keeps unchanged (possibly under another path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    pub target: String,
    pub base_path: String,
    pub sha256: String,
}

/// One release the pack updates from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct From {
    pub release: Version,
    /// sha256 of that release's manifest.toml.
    pub manifest_sha256: String,
    /// Files of that release that the new one no longer has.
    #[serde(default)]
    pub removed: Vec<String>,
    /// Files taken unchanged from the installed release.
    #[serde(default)]
    pub copy: Vec<Copy>,
}

/// The pack manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackManifest {
    pub format: String,
    pub bundle_id: String,
    /// The release the pack produces.
    pub to: Version,
    pub created: String,
    /// sha256 and size of the embedded `manifest.toml`.
    pub manifest_sha256: String,
    pub manifest_size: u64,
    /// The new release's changelog text (at most 64 KiB), for display.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
    /// A pack in parts only (format [`FORMAT_PARTS`]): how many (SPEC.md §7.18).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<u32>,
    pub from: Vec<From>,
    #[serde(default)]
    pub payloads: Vec<Payload>,
}

/// How one from-release gets one new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source<'a> {
    Delta(&'a Payload),
    Copy(&'a Copy),
    Zstd(&'a Payload),
}

fn bad(reason: impl Into<String>) -> String {
    reason.into()
}

impl PackManifest {
    /// Parses and validates pack manifest bytes (bounded by [`MAX_PACK_MANIFEST`]).
    /// The error is a reason for [`crate::update::UpdateError::PackDamaged`].
    pub fn parse(bytes: &[u8]) -> Result<PackManifest, String> {
        if bytes.len() as u64 > MAX_PACK_MANIFEST {
            return Err(bad("pack manifest is larger than 64 MiB"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("pack manifest is not UTF-8"))?;
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
        }
        let head: Head = toml::from_str(text).map_err(|e| {
            format!(
                "pack manifest is not valid TOML: {}",
                crate::excerpt::message(&e.to_string())
            )
        })?;
        match head.format.as_deref() {
            Some(FORMAT) | Some(FORMAT_PARTS) => {}
            Some(other) => {
                return Err(format!(
                    "pack format '{other}' is not supported (this offgrid reads '{FORMAT}')"
                ))
            }
            None => return Err(bad("pack manifest has no format field")),
        }
        let m: PackManifest = toml::from_str(text).map_err(|e| {
            format!(
                "pack manifest is invalid: {}",
                crate::excerpt::message(&e.to_string())
            )
        })?;
        m.validate()?;
        Ok(m)
    }

    /// The canonical TOML text (what is signed).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The from-release versions, comma-separated, for messages.
    pub fn serves(&self) -> String {
        self.from
            .iter()
            .map(|f| f.release.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The from-release entry for `release`.
    pub fn from_release(&self, release: &Version) -> Option<&From> {
        self.from.iter().find(|f| &f.release == release)
    }

    /// How `from` gets the new file `path`.
    pub fn source<'a>(&'a self, from: &'a From, path: &str) -> Option<Source<'a>> {
        if let Some(p) = self.payloads.iter().find(|p| {
            p.encoding == Encoding::Delta
                && p.target == path
                && p.base_release.as_ref() == Some(&from.release)
        }) {
            return Some(Source::Delta(p));
        }
        if let Some(c) = from.copy.iter().find(|c| c.target == path) {
            return Some(Source::Copy(c));
        }
        self.payloads
            .iter()
            .find(|p| p.encoding == Encoding::Zstd && p.target == path)
            .map(Source::Zstd)
    }

    /// Every base file `(path, sha256)` the from-release needs on the site.
    pub fn needs(&self, from: &From) -> BTreeMap<String, String> {
        self.needs_for(from, |_| true)
    }

    /// [`PackManifest::needs`] for the targets `wanted` says the site makes (a site
    /// installs only its own platform's programs and libraries, SPEC.md §18.2).
    pub fn needs_for(
        &self,
        from: &From,
        wanted: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for c in from.copy.iter().filter(|c| wanted(&c.target)) {
            out.insert(c.base_path.clone(), c.sha256.clone());
        }
        for p in self.payloads.iter().filter(|p| wanted(&p.target)) {
            if p.encoding == Encoding::Delta && p.base_release.as_ref() == Some(&from.release) {
                if let (Some(bp), Some(bs)) = (&p.base_path, &p.base_sha256) {
                    out.insert(bp.clone(), bs.clone());
                }
            }
        }
        out
    }

    /// Checks the invariants of SPEC.md §7.2 that do not need the bundle manifest.
    pub fn validate(&self) -> Result<(), String> {
        match (self.format.as_str(), self.parts) {
            (FORMAT, None) => {}
            (FORMAT_PARTS, Some(n)) if (2..=MAX_PARTS).contains(&n) => {}
            (FORMAT_PARTS, Some(n)) => {
                return Err(format!("parts = {n} is not between 2 and {MAX_PARTS}"))
            }
            (FORMAT, Some(_)) | (FORMAT_PARTS, None) => {
                return Err(format!(
                    "format '{}' and parts disagree (parts go with '{FORMAT_PARTS}' only)",
                    self.format
                ))
            }
            (other, _) => return Err(format!("pack format '{other}' is not supported")),
        }
        check_bundle_id(&self.bundle_id).map_err(|e| crate::diagnostic::with_help(&e))?;
        time::OffsetDateTime::parse(
            &self.created,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| format!("created '{}' is not an RFC 3339 time", self.created))?;
        if !is_sha256_hex(&self.manifest_sha256) {
            return Err(bad("manifest_sha256 is not 64 lowercase hex digits"));
        }
        if self.manifest_size > crate::manifest::MAX_MANIFEST_BYTES {
            return Err(bad("manifest_size is larger than 64 MiB"));
        }
        if self
            .changelog
            .as_ref()
            .is_some_and(|c| c.len() > MAX_CHANGELOG)
        {
            return Err(bad("changelog is longer than 64 KiB"));
        }
        if self.from.is_empty() {
            return Err(bad("pack serves no from-release"));
        }
        let mut seen = BTreeSet::new();
        for f in &self.from {
            if f.release >= self.to {
                return Err(format!(
                    "from-release {} is not older than to-release {}",
                    f.release, self.to
                ));
            }
            if !seen.insert(f.release.parts().to_vec()) {
                return Err(format!("from-release {} is listed twice", f.release));
            }
            if !is_sha256_hex(&f.manifest_sha256) {
                return Err(format!("from {}: manifest_sha256 is not hex", f.release));
            }
            for c in &f.copy {
                check_bundle_path(&c.target).map_err(|e| crate::diagnostic::with_help(&e))?;
                check_bundle_path(&c.base_path).map_err(|e| crate::diagnostic::with_help(&e))?;
                if !is_sha256_hex(&c.sha256) {
                    return Err(format!("copy of '{}': sha256 is not hex", c.target));
                }
            }
            for r in &f.removed {
                check_bundle_path(r).map_err(|e| crate::diagnostic::with_help(&e))?;
            }
        }
        if self.payloads.len() > MAX_PAYLOADS {
            return Err(bad("too many payloads"));
        }
        let mut entries = BTreeSet::new();
        let mut last_part = 1u32;
        for (i, p) in self.payloads.iter().enumerate() {
            let ext = match p.encoding {
                Encoding::Zstd => "zst",
                Encoding::Delta => "delta",
            };
            if p.entry != payload_entry(i, p.encoding) {
                return Err(format!(
                    "payload {i} is named '{}', expected '{PAYLOADS}/{:06}.{ext}'",
                    p.entry,
                    i + 1
                ));
            }
            entries.insert(p.entry.as_str());
            check_bundle_path(&p.target).map_err(|e| crate::diagnostic::with_help(&e))?;
            if !is_sha256_hex(&p.sha256) || !is_sha256_hex(&p.target_sha256) {
                return Err(format!("payload '{}': a sha256 is not hex", p.entry));
            }
            let delta_fields = (&p.base_release, &p.base_path, &p.base_sha256);
            match (p.encoding, delta_fields) {
                (Encoding::Delta, (Some(r), Some(bp), Some(bs))) => {
                    check_bundle_path(bp).map_err(|e| crate::diagnostic::with_help(&e))?;
                    if !is_sha256_hex(bs) {
                        return Err(format!("payload '{}': base_sha256 is not hex", p.entry));
                    }
                    if self.from_release(r).is_none() {
                        return Err(format!(
                            "payload '{}' is a delta from {r}, which the pack does not serve",
                            p.entry
                        ));
                    }
                }
                (Encoding::Delta, _) => {
                    return Err(format!(
                        "delta payload '{}' lacks base_release/base_path/base_sha256",
                        p.entry
                    ))
                }
                (Encoding::Zstd, (None, None, None)) => {}
                (Encoding::Zstd, _) => {
                    return Err(format!("zstd payload '{}' names a base", p.entry))
                }
            }
            self.check_pieces(p, &mut last_part)?;
        }
        Ok(())
    }

    /// A pack in parts: the payload's pieces follow each other from byte 0 to its size,
    /// each non-empty (unless the payload is) and in a part of 1..=N, parts never going
    /// back; a pack in one file has none.
    fn check_pieces(&self, p: &Payload, last_part: &mut u32) -> Result<(), String> {
        let Some(n) = self.parts else {
            return match p.pieces.is_empty() {
                true => Ok(()),
                false => Err(format!(
                    "payload '{}' has pieces, but the pack is not in parts",
                    p.entry
                )),
            };
        };
        if p.pieces.is_empty() || p.pieces.len() > n as usize {
            return Err(format!(
                "payload '{}' has {} pieces in a pack of {n} parts",
                p.entry,
                p.pieces.len()
            ));
        }
        let mut offset = 0u64;
        for (i, c) in p.pieces.iter().enumerate() {
            let bad = |why: &str| format!("payload '{}' piece {}: {why}", p.entry, i + 1);
            if !(1..=n).contains(&c.part) || c.part < *last_part {
                return Err(bad("its part is out of order or outside the pack"));
            }
            if i > 0 && c.part == *last_part {
                return Err(bad("two pieces of one payload are in the same part"));
            }
            if c.offset != offset || (c.size == 0 && p.size != 0) {
                return Err(bad("pieces do not follow each other"));
            }
            if !is_sha256_hex(&c.sha256) {
                return Err(bad("sha256 is not hex"));
            }
            *last_part = c.part;
            offset = offset.saturating_add(c.size);
        }
        if offset != p.size {
            return Err(format!(
                "payload '{}': its pieces hold {offset} bytes, not {}",
                p.entry, p.size
            ));
        }
        Ok(())
    }

    /// Checks the pack against the new bundle manifest it embeds: every file of the new
    /// release is produced exactly one way for every from-release, with the same size and
    /// hash, and every payload targets a file of the new release.
    pub fn check_against(&self, m: &Manifest) -> Result<(), String> {
        if m.bundle_id != self.bundle_id || m.release != self.to {
            return Err(format!(
                "embedded manifest is {} {}, the pack says {} {}",
                m.bundle_id, m.release, self.bundle_id, self.to
            ));
        }
        for p in &self.payloads {
            let f = m.file(&p.target).ok_or_else(|| {
                format!(
                    "payload '{}' targets '{}', not in the release",
                    p.entry, p.target
                )
            })?;
            if f.size != p.target_size || f.sha256 != p.target_sha256 {
                return Err(format!(
                    "payload '{}' disagrees with the manifest about '{}'",
                    p.entry, p.target
                ));
            }
        }
        for from in &self.from {
            for c in &from.copy {
                let f = m
                    .file(&c.target)
                    .ok_or_else(|| format!("copy targets '{}', not in the release", c.target))?;
                if f.sha256 != c.sha256 {
                    return Err(format!(
                        "copy of '{}' disagrees with the manifest",
                        c.target
                    ));
                }
            }
            for f in &m.files {
                if self.source(from, &f.path).is_none() {
                    return Err(format!(
                        "the pack gives release {} no way to get '{}'",
                        from.release, f.path
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The tar entry name of payload `index` (0-based).
pub fn payload_entry(index: usize, enc: Encoding) -> String {
    let ext = match enc {
        Encoding::Zstd => "zst",
        Encoding::Delta => "delta",
    };
    format!("{PAYLOADS}/{:06}.{ext}", index + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn sample() -> (PackManifest, Manifest) {
        let m: Manifest = Manifest {
            dirs: Vec::new(),
            commands: Vec::new(),
            format: crate::manifest::FORMAT.into(),
            bundle_id: "org.example".into(),
            release: "2".parse().unwrap(),
            created: "2026-11-21T12:00:00Z".into(),
            platforms: vec![],
            default_model: None,
            expires: None,
            volumes: None,
            files: ["a.txt", "b.txt"]
                .iter()
                .map(|p| crate::manifest::FileEntry {
                    path: (*p).into(),
                    size: 0,
                    sha256: h('a'),
                    kind: crate::manifest::FileKind::Data,
                    platform: None,
                    mode: None,
                    chunk_size: crate::manifest::DEFAULT_CHUNK_SIZE,
                    chunks: vec![],
                    model: None,
                    volume: None,
                    parts: Vec::new(),
                })
                .collect(),
        };
        let pm = PackManifest {
            format: FORMAT.into(),
            bundle_id: "org.example".into(),
            to: "2".parse().unwrap(),
            created: "2026-11-21T12:00:00Z".into(),
            manifest_sha256: h('b'),
            manifest_size: 10,
            changelog: None,
            parts: None,
            from: vec![From {
                release: "1".parse().unwrap(),
                manifest_sha256: h('c'),
                removed: vec![],
                copy: vec![Copy {
                    target: "a.txt".into(),
                    base_path: "a.txt".into(),
                    sha256: h('a'),
                }],
            }],
            payloads: vec![Payload {
                entry: payload_entry(0, Encoding::Zstd),
                encoding: Encoding::Zstd,
                size: 9,
                sha256: h('d'),
                target: "b.txt".into(),
                target_size: 0,
                target_sha256: h('a'),
                base_release: None,
                base_path: None,
                base_sha256: None,
                pieces: Vec::new(),
            }],
        };
        (pm, m)
    }

    #[test]
    fn round_trips_and_checks_coverage() {
        let (pm, m) = sample();
        let back = PackManifest::parse(pm.to_toml().as_bytes()).unwrap();
        assert_eq!(back, pm);
        back.check_against(&m).unwrap();
        assert_eq!(back.needs(&back.from[0]).len(), 1);
        // A file no from-release can get is refused.
        let mut p = pm.clone();
        p.payloads.clear();
        assert!(p
            .check_against(&m)
            .unwrap_err()
            .contains("no way to get 'b.txt'"));
    }

    #[test]
    fn refuses_inconsistent_packs() {
        let (pm, _) = sample();
        let mut p = pm.clone();
        p.from[0].release = "2".parse().unwrap();
        assert!(p.validate().is_err(), "from not older than to");
        let mut p = pm.clone();
        p.payloads[0].entry = "../../etc/passwd".into();
        assert!(p.validate().is_err());
        let mut p = pm.clone();
        p.payloads[0].encoding = Encoding::Delta;
        p.payloads[0].entry = payload_entry(0, Encoding::Delta);
        assert!(p.validate().unwrap_err().contains("lacks base_release"));
        let mut p = pm.clone();
        p.payloads[0].target = "/abs".into();
        assert!(p.validate().is_err());
        let mut p = pm.clone();
        p.format = "offgrid-pack/9".into();
        assert!(PackManifest::parse(p.to_toml().as_bytes())
            .unwrap_err()
            .contains("not supported"));
    }

    #[test]
    fn pieces_must_cover_each_payload_in_order() {
        let (mut pm, m) = sample();
        pm.format = FORMAT_PARTS.into();
        pm.parts = Some(2);
        let piece = |part, offset, size| Piece {
            part,
            offset,
            size,
            sha256: h('e'),
        };
        pm.payloads[0].pieces = vec![piece(1, 0, 4), piece(2, 4, 5)];
        let back = PackManifest::parse(pm.to_toml().as_bytes()).unwrap();
        assert_eq!(back, pm);
        back.check_against(&m).unwrap();
        assert_eq!(
            pm.payloads[0].piece_entry(1),
            "payloads/000001.zst.part002-of-002"
        );
        let refused = |f: &dyn Fn(&mut PackManifest), why: &str| {
            let mut p = pm.clone();
            f(&mut p);
            let e = PackManifest::parse(p.to_toml().as_bytes()).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        refused(&|p| p.payloads[0].pieces[1].offset = 5, "do not follow");
        refused(&|p| p.payloads[0].pieces[1].size = 4, "hold 8 bytes");
        refused(&|p| p.payloads[0].pieces[1].part = 1, "same part");
        refused(&|p| p.payloads[0].pieces[1].part = 3, "outside");
        refused(&|p| p.payloads[0].pieces.clear(), "0 pieces");
        refused(&|p| p.parts = None, "disagree");
        refused(&|p| p.format = FORMAT.into(), "disagree");
        refused(&|p| p.parts = Some(1), "not between 2");
    }
}
