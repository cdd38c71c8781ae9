//! The bundle manifest: the TOML document that names every file of a release with its
//! size, sha256 and chunk hashes, and that the signatures cover byte for byte.
//!
//! [`Manifest::parse`] bounds the input (size, file count, chunk count) before building
//! anything and validates every field: paths (see [`crate::paths`]), hex digests, chunk
//! lists consistent with the size, no duplicate or case-colliding paths. [`Manifest::to_toml`]
//! writes the canonical form that `pack-usb` signs. SPEC.md §3 is the normative schema;
//! `formats/manifest.example.toml` a worked example.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::paths::{self, PathError};
use crate::platform::Platform;
use crate::version::Version;

/// The value of the `format` field this code writes for a manifest that uses nothing
/// newer than format 1 (so an older offgrid still reads it).
pub const FORMAT: &str = "offgrid-bundle/1";
/// The value written when the manifest uses a format-2 feature (SPEC.md §18): a kind
/// `program`, `library` or `document`, a platform on a non-binary, `dirs`, `commands`, or a
/// model that is not GGUF. Readers accept both.
pub const FORMAT_2: &str = "offgrid-bundle/2";
/// The value written when the manifest stores a file in parts or spreads the release
/// over several volumes (SPEC.md §16.6, §16.7). Readers accept all three.
pub const FORMAT_3: &str = "offgrid-bundle/3";
/// Most volumes one release may span.
pub const MAX_VOLUMES: u32 = 9999;
/// Most folders one manifest may list.
pub const MAX_DIRS: usize = 100_000;
/// Most commands one manifest may declare.
pub const MAX_COMMANDS: usize = 1_000;
/// The manifest's file name at the root of a USB tree.
pub const MANIFEST_FILE: &str = "manifest.toml";
/// The folder holding one `KEYID.minisig` per signer, at the root of a USB tree.
pub const SIGNATURES_DIR: &str = "signatures";
/// Largest manifest accepted (bytes), checked before parsing.
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;
/// Most files one manifest may list.
pub const MAX_FILES: usize = 100_000;
/// Default chunk size for chunk hashes (bytes).
pub const DEFAULT_CHUNK_SIZE: u64 = 4 << 20;
/// Smallest and largest chunk sizes accepted.
pub const MIN_CHUNK_SIZE: u64 = 64 << 10;
pub const MAX_CHUNK_SIZE: u64 = 256 << 20;

/// What a file in the bundle is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum FileKind {
    /// A GGUF model, stored plain so llama.cpp can mmap it from the stick.
    Model,
    /// An offgrid executable for one platform.
    Binary,
    /// A launcher or install script rendered from `templates/`.
    Script,
    /// Documentation for the field operator (README.txt).
    Doc,
    /// The release's changelog.
    Changelog,
    /// Anything else the release carries.
    Data,
    /// A program the site runs, optionally for one platform (format 2).
    Program,
    /// A shared library, optionally for one platform (format 2).
    Library,
    /// A document for the people at the site (format 2).
    Document,
}

impl FileKind {
    /// Kinds that may name a platform and are installed only on that platform.
    pub fn is_per_platform(self) -> bool {
        matches!(self, FileKind::Program | FileKind::Library)
    }

    /// Kinds a medium may store in parts (SPEC.md §16.7): not models (split into shards
    /// llama.cpp loads), binaries or scripts (run from the stick).
    pub fn can_be_parted(self) -> bool {
        !matches!(self, FileKind::Model | FileKind::Binary | FileKind::Script)
    }

    /// The kinds format 2 added.
    fn is_format_2(self) -> bool {
        matches!(
            self,
            FileKind::Program | FileKind::Library | FileKind::Document
        )
    }
}

/// What a model file holds (SPEC.md §18.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    /// A GGUF file (`offgrid run` starts it with llama.cpp). The default when absent.
    #[default]
    Gguf,
    /// A folder in a Hugging Face repository's layout: `*.safetensors` weights,
    /// `config.json`, tokenizer files. Every file of the folder is a model file.
    Safetensors,
    /// One ONNX file.
    Onnx,
}

impl ModelFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelFormat::Gguf => "gguf",
            ModelFormat::Safetensors => "safetensors",
            ModelFormat::Onnx => "onnx",
        }
    }

    fn is_gguf(f: &Option<ModelFormat>) -> bool {
        f.is_none_or(|f| f == ModelFormat::Gguf)
    }
}

/// A folder of the tree (format 2): kept even when empty, with its mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirEntry {
    /// Relative `/`-separated path (the rules of files).
    pub path: String,
    /// Unix permission bits (≤ 0o777).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Made only on this platform (a folder of per-platform programs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// A command the release puts on the site's PATH (format 2): `name` runs the program at
/// `path`; several entries share a name, one per platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// The command's name: 1-64 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
    pub name: String,
    /// The program it runs: a file of kind `program` in this manifest.
    pub path: String,
}

/// Checks a command name (SPEC.md §18.5).
pub fn check_command_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{}' must be 1-64 characters of letters, digits, '.', '_' or '-', not starting with '.' or '-'",
            crate::excerpt::excerpt(name)
        ))
    }
}

/// Model metadata read from the GGUF header at pack time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ModelInfo {
    /// The model's name in this bundle (`offgrid run NAME`).
    pub name: String,
    /// `general.architecture`, e.g. `llama`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Quantization read from `general.file_type`, e.g. `Q4_1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Total number of weights, summed over the tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// `<arch>.context_length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// For a model split into several files (llama.cpp's split GGUF, SPEC.md §16.2): this
    /// file's place, 1-based, as in its name `NAME-0000k-of-0000N.gguf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<u32>,
    /// For a split model: how many files it has (every shard says the same).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<u32>,
    /// What the model file holds; absent means GGUF (format 2 writes it for the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ModelFormat>,
}

impl ModelInfo {
    /// True for every shard of a split model but the first (the one llama.cpp is given).
    pub fn is_later_shard(&self) -> bool {
        self.shard.is_some_and(|s| s > 1)
    }

    /// The model's format (GGUF when not said).
    pub fn format(&self) -> ModelFormat {
        self.format.unwrap_or_default()
    }
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative `/`-separated path inside the tree.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex sha256 of the whole file.
    pub sha256: String,
    pub kind: FileKind,
    /// The platform a binary is for (binaries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Unix permission bits to restore (`0o755` for executables); advisory on FAT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Chunk size of `chunks`, bytes.
    pub chunk_size: u64,
    /// Lowercase hex sha256 of each `chunk_size` slice, the last one possibly shorter.
    pub chunks: Vec<String>,
    /// Model metadata (models only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,
    /// The volume holding this file whole, in a release spread over volumes (format 3,
    /// SPEC.md §16.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u32>,
    /// The parts a medium stores this file as (format 3, SPEC.md §16.7): consecutive
    /// byte ranges of the file, each starting at a multiple of `chunk_size`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Part>,
}

/// One stored part of a file split to fit its medium (SPEC.md §16.7): bytes
/// `[offset, offset + size)` of the file, stored at `path` (on `volume`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    /// Where the part is stored, a bundle path like the file's.
    pub path: String,
    /// Its first byte's offset in the file: a multiple of the file's `chunk_size`.
    pub offset: u64,
    /// Its length in bytes (more than 0).
    pub size: u64,
    /// The volume holding it, in a release spread over volumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<u32>,
}

/// Where the bytes of (a piece of) a file are stored on a medium: the whole file, or
/// one of its parts (SPEC.md §16.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Index of the file in the manifest.
    pub file: usize,
    /// The stored path.
    pub path: String,
    /// Offset of its first byte in the file.
    pub offset: u64,
    pub size: u64,
    pub volume: Option<u32>,
}

/// The manifest of one release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// A stable identifier of the product line, e.g. `org.example.clinic`.
    pub bundle_id: String,
    /// The release version (see [`crate::version`]).
    pub release: Version,
    /// RFC 3339 UTC creation time.
    pub created: String,
    /// Platforms the bundle carries binaries for.
    pub platforms: Vec<String>,
    /// Model `offgrid run` starts with no argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// RFC 3339 time after which sites that have seen a newer signed time refuse this
    /// release (SPEC.md §17.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Every file of the tree except the manifest and its signatures.
    #[serde(default)]
    pub files: Vec<FileEntry>,
    /// Folders of the tree that carry a mode or may be empty (format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirEntry>,
    /// Commands the release puts on the site's PATH (format 2).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commands: Vec<Command>,
    /// How many volumes the release is spread over (format 3, SPEC.md §16.6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<u32>,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {size} bytes, more than the {max} allowed")]
    TooLarge { size: u64, max: u64 },
    #[error("manifest is not valid UTF-8 TOML: {0}")]
    Syntax(String),
    #[error("manifest format '{found}' is not supported (this offgrid reads '{FORMAT}', '{FORMAT_2}' and '{FORMAT_3}')")]
    Format { found: String },
    #[error("manifest field {field}: {reason}")]
    Field { field: String, reason: String },
    #[error(transparent)]
    Path(#[from] PathError),
}

fn field(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Field {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Checks that `s` is 64 lowercase hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Checks a bundle id: 1–128 characters of `[A-Za-z0-9._-]`.
pub fn check_bundle_id(id: &str) -> Result<(), ManifestError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(field(
            "bundle_id",
            format!("'{id}' must be 1-128 characters of letters, digits, '.', '_' or '-'"),
        ));
    }
    Ok(())
}

impl FileEntry {
    /// Number of chunks a file of `size` bytes has with `chunk_size` chunks
    /// (an empty file has none).
    pub fn chunk_count(size: u64, chunk_size: u64) -> u64 {
        size.div_ceil(chunk_size)
    }

    fn validate(&self, i: usize) -> Result<(), ManifestError> {
        let f = |name: &str| format!("files[{i}].{name} ('{}')", self.path);
        paths::check_bundle_path(&self.path)?;
        if !is_sha256_hex(&self.sha256) {
            return Err(field(f("sha256"), "must be 64 lowercase hex characters"));
        }
        if !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size) {
            return Err(field(
                f("chunk_size"),
                format!("must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}"),
            ));
        }
        let want = Self::chunk_count(self.size, self.chunk_size);
        if self.chunks.len() as u64 != want {
            return Err(field(
                f("chunks"),
                format!(
                    "has {} hashes but a {}-byte file has {want} chunks of {}",
                    self.chunks.len(),
                    self.size,
                    self.chunk_size
                ),
            ));
        }
        if let Some(bad) = self.chunks.iter().position(|c| !is_sha256_hex(c)) {
            return Err(field(
                f(&format!("chunks[{bad}]")),
                "must be 64 lowercase hex characters",
            ));
        }
        match (self.kind, &self.platform) {
            (FileKind::Binary, None) => {
                return Err(field(f("platform"), "a binary must name its platform"))
            }
            (k, Some(p)) if k == FileKind::Binary || k.is_per_platform() => {
                p.parse::<Platform>()
                    .map_err(|e| field(f("platform"), e.to_string()))?;
            }
            (_, Some(_)) => {
                return Err(field(
                    f("platform"),
                    "only binaries, programs and libraries have a platform",
                ))
            }
            _ => {}
        }
        match (self.kind, &self.model) {
            (FileKind::Model, None) => {
                return Err(field(f("model"), "a model must carry model metadata"))
            }
            (FileKind::Model, Some(m)) if m.name.is_empty() => {
                return Err(field(f("model.name"), "must not be empty"))
            }
            (FileKind::Model, Some(_)) | (_, None) => {}
            (_, Some(_)) => return Err(field(f("model"), "only models have model metadata")),
        }
        if let Some(mode) = self.mode {
            if mode > 0o777 {
                return Err(field(f("mode"), "must be permission bits (at most 0o777)"));
            }
        }
        Ok(())
    }
}

impl FileEntry {
    /// True when a site on `host` installs this file: everything but a program or library
    /// for another platform (SPEC.md §18.2; the stick keeps them all).
    pub fn installs_on(&self, host: &str) -> bool {
        !(self.kind.is_per_platform() && self.platform.as_deref().is_some_and(|p| p != host))
    }
}

impl DirEntry {
    /// True when a site on `host` makes this folder.
    pub fn installs_on(&self, host: &str) -> bool {
        self.platform.as_deref().is_none_or(|p| p == host)
    }
}

impl Manifest {
    /// The format a manifest with these contents is written in: [`FORMAT`] unless it
    /// uses a format-2 feature.
    pub fn needed_format(&self) -> &'static str {
        if self.volumes.is_some()
            || self
                .files
                .iter()
                .any(|f| f.volume.is_some() || !f.parts.is_empty())
        {
            return FORMAT_3;
        }
        let two = !self.dirs.is_empty()
            || !self.commands.is_empty()
            || self.files.iter().any(|f| {
                f.kind.is_format_2()
                    || (f.kind != FileKind::Binary && f.platform.is_some())
                    || f.model
                        .as_ref()
                        .is_some_and(|m| !ModelFormat::is_gguf(&m.format))
            });
        if two {
            FORMAT_2
        } else {
            FORMAT
        }
    }

    /// The files a site on `host` installs ([`FileEntry::installs_on`]).
    pub fn files_on<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a FileEntry> + 'a {
        self.files.iter().filter(move |f| f.installs_on(host))
    }

    /// The program `name` runs on `host`, if the release declares it.
    pub fn command_on(&self, name: &str, host: &str) -> Option<&FileEntry> {
        self.commands
            .iter()
            .filter(|c| c.name == name)
            .filter_map(|c| self.file(&c.path))
            .find(|f| f.installs_on(host))
    }

    /// The names of the commands a site on `host` gets, sorted, each once.
    pub fn command_names_on(&self, host: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .commands
            .iter()
            .filter(|c| self.file(&c.path).is_some_and(|f| f.installs_on(host)))
            .map(|c| c.name.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Parses and validates manifest bytes, bounding the work by the input size first.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: bytes.len() as u64,
                max: MAX_MANIFEST_BYTES,
            });
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| ManifestError::Syntax(format!("not UTF-8: {e}")))?;
        // Check the format before the full schema, so a future format gets a clear message.
        #[derive(Deserialize)]
        struct Head {
            format: Option<String>,
        }
        let head: Head = toml::from_str(text)
            .map_err(|e| ManifestError::Syntax(crate::excerpt::message(&e.to_string())))?;
        match head.format.as_deref() {
            Some(FORMAT) | Some(FORMAT_2) | Some(FORMAT_3) => {}
            Some(other) => {
                return Err(ManifestError::Format {
                    found: crate::excerpt::excerpt(other),
                })
            }
            None => return Err(field("format", "is missing")),
        }
        let m: Manifest = toml::from_str(text)
            .map_err(|e| ManifestError::Syntax(crate::excerpt::message(&e.to_string())))?;
        m.validate()?;
        Ok(m)
    }

    /// Checks every invariant SPEC.md states for a manifest.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format != FORMAT && self.format != FORMAT_2 && self.format != FORMAT_3 {
            return Err(ManifestError::Format {
                found: self.format.clone(),
            });
        }
        if self.format == FORMAT && self.needed_format() == FORMAT_2 {
            return Err(field(
                "format",
                format!("is '{FORMAT}' but the manifest uses '{FORMAT_2}' features (kinds program, library, document; dirs; commands; non-GGUF models)"),
            ));
        }
        if self.format != FORMAT_3 && self.needed_format() == FORMAT_3 {
            return Err(field(
                "format",
                format!(
                    "is '{}' but the manifest uses '{FORMAT_3}' features (parts, volumes)",
                    self.format
                ),
            ));
        }
        check_bundle_id(&self.bundle_id)?;
        time::OffsetDateTime::parse(
            &self.created,
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|_| {
            field(
                "created",
                format!("'{}' is not an RFC 3339 time", self.created),
            )
        })?;
        if let Some(e) = &self.expires {
            let rfc = time::format_description::well_known::Rfc3339;
            let exp = time::OffsetDateTime::parse(e, &rfc).map_err(|_| {
                field(
                    "expires",
                    format!("'{}' is not an RFC 3339 time", crate::excerpt::excerpt(e)),
                )
            })?;
            if time::OffsetDateTime::parse(&self.created, &rfc).is_ok_and(|c| exp <= c) {
                return Err(field("expires", "it is not after 'created'"));
            }
        }
        for p in &self.platforms {
            p.parse::<Platform>()
                .map_err(|e| field("platforms", e.to_string()))?;
        }
        if self.files.len() > MAX_FILES {
            return Err(field("files", format!("lists more than {MAX_FILES} files")));
        }
        let mut seen = BTreeSet::new();
        for (i, f) in self.files.iter().enumerate() {
            f.validate(i)?;
            if !seen.insert(f.path.as_str()) {
                return Err(field(
                    format!("files[{i}].path"),
                    format!("'{}' is listed twice", f.path),
                ));
            }
            if f.path == MANIFEST_FILE
                || f.path == SIGNATURES_DIR
                || f.path.starts_with("signatures/")
            {
                return Err(field(
                    format!("files[{i}].path"),
                    format!(
                        "'{}' is reserved for the manifest and its signatures",
                        f.path
                    ),
                ));
            }
        }
        // A file may not also be a folder of another file ("a" and "a/b").
        for f in &self.files {
            let mut prefix = String::new();
            for c in f.path.split('/') {
                if !prefix.is_empty() && seen.contains(prefix.as_str()) {
                    return Err(field(
                        "files",
                        format!("'{prefix}' is both a file and the folder of '{}'", f.path),
                    ));
                }
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(c);
            }
        }
        self.validate_dirs(&seen)?;
        paths::check_no_case_collisions(
            self.files
                .iter()
                .map(|f| f.path.as_str())
                .chain(self.dirs.iter().map(|d| d.path.as_str())),
        )?;
        self.validate_shards()?;
        self.validate_pieces()?;
        self.validate_models()?;
        self.validate_commands()?;
        let models: Vec<&str> = self
            .files
            .iter()
            .filter_map(|f| f.model.as_ref().map(|m| m.name.as_str()))
            .collect();
        if let Some(d) = &self.default_model {
            if !models.contains(&d.as_str()) {
                return Err(field(
                    "default_model",
                    format!("'{d}' is not the name of a model in this manifest"),
                ));
            }
        }
        Ok(())
    }

    /// Folders: path rules, at most [`MAX_DIRS`], each once, never a file's path nor inside
    /// one, modes are permission bits, platforms parse.
    fn validate_dirs(&self, files: &BTreeSet<&str>) -> Result<(), ManifestError> {
        if self.dirs.len() > MAX_DIRS {
            return Err(field("dirs", format!("lists more than {MAX_DIRS} folders")));
        }
        let mut seen = BTreeSet::new();
        for (i, d) in self.dirs.iter().enumerate() {
            let f = |name: &str| format!("dirs[{i}].{name} ('{}')", d.path);
            paths::check_bundle_path(&d.path)?;
            if !seen.insert(d.path.as_str()) {
                return Err(field(f("path"), "is listed twice"));
            }
            let mut prefix = String::new();
            for c in d.path.split('/') {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(c);
                if files.contains(prefix.as_str()) {
                    return Err(field(f("path"), format!("'{prefix}' is also a file")));
                }
            }
            if d.path == SIGNATURES_DIR || d.path.starts_with("signatures/") {
                return Err(field(f("path"), "is reserved for the signatures"));
            }
            if d.mode.is_some_and(|m| m > 0o777) {
                return Err(field(f("mode"), "must be permission bits (at most 0o777)"));
            }
            if let Some(p) = &d.platform {
                p.parse::<Platform>()
                    .map_err(|e| field(f("platform"), e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Models: a non-GGUF model is never split; the default model is a GGUF one (the
    /// only kind `run` starts); one model name has one format.
    fn validate_models(&self) -> Result<(), ManifestError> {
        use std::collections::BTreeMap;
        let mut formats: BTreeMap<&str, ModelFormat> = BTreeMap::new();
        for (i, f) in self.files.iter().enumerate() {
            let Some(m) = &f.model else { continue };
            let fmt = m.format();
            if fmt != ModelFormat::Gguf && m.shards.is_some() {
                return Err(field(
                    format!("files[{i}].model ('{}')", f.path),
                    "only GGUF models are split into shards",
                ));
            }
            if *formats.entry(m.name.as_str()).or_insert(fmt) != fmt {
                return Err(field(
                    format!("files[{i}].model.format ('{}')", f.path),
                    format!("model '{}' has files of two formats", m.name),
                ));
            }
            if fmt == ModelFormat::Onnx {
                let n = self
                    .models()
                    .filter(|g| g.model.as_ref().is_some_and(|x| x.name == m.name))
                    .count();
                if n > 1 {
                    return Err(field(
                        format!("files[{i}].model ('{}')", f.path),
                        format!("ONNX model '{}' is one file, not {n}", m.name),
                    ));
                }
            }
        }
        if let Some(d) = &self.default_model {
            if let Some(fmt) = formats.get(d.as_str()).filter(|f| **f != ModelFormat::Gguf) {
                return Err(field(
                    "default_model",
                    format!(
                        "'{d}' is a {} model; only a GGUF model can be the default (run starts it)",
                        fmt.as_str()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Commands: at most [`MAX_COMMANDS`], names valid, each path a program of this
    /// manifest, no two entries of one name for the same platform.
    fn validate_commands(&self) -> Result<(), ManifestError> {
        if self.commands.len() > MAX_COMMANDS {
            return Err(field(
                "commands",
                format!("lists more than {MAX_COMMANDS} commands"),
            ));
        }
        let mut seen: BTreeSet<(&str, Option<&str>)> = BTreeSet::new();
        for (i, c) in self.commands.iter().enumerate() {
            check_command_name(&c.name).map_err(|r| field(format!("commands[{i}].name"), r))?;
            if c.name.eq_ignore_ascii_case("offgrid") {
                return Err(field(
                    format!("commands[{i}].name"),
                    "'offgrid' is the name of offgrid itself",
                ));
            }
            let Some(f) = self.file(&c.path).filter(|f| f.kind == FileKind::Program) else {
                return Err(field(
                    format!("commands[{i}].path ('{}')", c.path),
                    "must be the path of a file of kind program",
                ));
            };
            if !seen.insert((c.name.as_str(), f.platform.as_deref())) {
                return Err(field(
                    format!("commands[{i}].name ('{}')", c.name),
                    "is declared twice for the same platform",
                ));
            }
        }
        Ok(())
    }

    /// A split model's files: `model.shard` and `model.shards` both or neither,
    /// `1 <= shard <= shards`, the path `PREFIX-0000k-of-0000N.gguf`, and every shard of
    /// a prefix present once, all with the same model name.
    fn validate_shards(&self) -> Result<(), ManifestError> {
        use std::collections::BTreeMap;
        let mut groups: BTreeMap<&str, (u32, &str, BTreeSet<u32>)> = BTreeMap::new();
        for (i, f) in self.files.iter().enumerate() {
            let Some(m) = &f.model else { continue };
            let (shard, shards) = match (m.shard, m.shards) {
                (None, None) => continue,
                (Some(a), Some(b)) => (a, b),
                _ => {
                    return Err(field(
                        format!("files[{i}].model ('{}')", f.path),
                        "shard and shards go together",
                    ))
                }
            };
            let bad =
                |reason: String| field(format!("files[{i}].model.shard ('{}')", f.path), reason);
            if !(1..=shards).contains(&shard) || shards > u16::MAX as u32 {
                return Err(bad(format!("shard {shard} of {shards} is out of range")));
            }
            let prefix = match crate::gguf::split::parse_shard_name(&f.path) {
                Some((p, k, n)) if k == shard && n == shards => p,
                _ => {
                    return Err(bad(format!(
                        "the path of shard {shard} of {shards} must end in -{shard:05}-of-{shards:05}.gguf"
                    )))
                }
            };
            let g = groups
                .entry(prefix)
                .or_insert((shards, m.name.as_str(), BTreeSet::new()));
            if g.0 != shards || g.1 != m.name {
                return Err(bad(format!(
                    "the shards of '{prefix}' disagree on their count or model name"
                )));
            }
            if !g.2.insert(shard) {
                return Err(bad(format!("shard {shard} of '{prefix}' is listed twice")));
            }
        }
        for (prefix, (n, _, seen)) in &groups {
            if seen.len() as u32 != *n {
                let missing: Vec<String> = (1..=*n)
                    .filter(|k| !seen.contains(k))
                    .map(|k| k.to_string())
                    .collect();
                return Err(field(
                    "files",
                    format!(
                        "split model '{prefix}' lacks shard(s) {} of {n}",
                        missing.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Parts and volumes (SPEC.md §16.6, §16.7): parts only of files that are not
    /// models, at least two, consecutive from offset 0 to the file's size, each starting
    /// at a multiple of the file's chunk size; stored paths follow the path rules and
    /// collide with no file, folder or other part; with `volumes` = N every file whole
    /// names a volume 1..=N and every part does, without it none does.
    fn validate_pieces(&self) -> Result<(), ManifestError> {
        let n = self.volumes;
        if let Some(n) = n {
            if !(1..=MAX_VOLUMES).contains(&n) {
                return Err(field("volumes", format!("must be 1 to {MAX_VOLUMES}")));
            }
        }
        let check_volume = |what: String, v: Option<u32>| -> Result<(), ManifestError> {
            match (n, v) {
                (Some(n), Some(v)) if (1..=n).contains(&v) => Ok(()),
                (Some(n), Some(v)) => Err(field(what, format!("volume {v} is not one of 1..{n}"))),
                (Some(_), None) => Err(field(
                    what,
                    "names no volume, but the release spans volumes",
                )),
                (None, Some(_)) => Err(field(
                    what,
                    "names a volume, but the manifest has no 'volumes'",
                )),
                (None, None) => Ok(()),
            }
        };
        let mut stored: Vec<&str> = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            let at = |name: &str| format!("files[{i}].{name} ('{}')", f.path);
            if f.parts.is_empty() {
                check_volume(at("volume"), f.volume)?;
                stored.push(&f.path);
                continue;
            }
            if f.volume.is_some() {
                return Err(field(
                    at("volume"),
                    "a file stored in parts names a volume per part",
                ));
            }
            if !f.kind.can_be_parted() {
                return Err(field(
                    at("parts"),
                    "models, binaries and scripts are never stored in parts",
                ));
            }
            if f.parts.len() < 2 || f.parts.len() as u64 > f.chunks.len() as u64 {
                return Err(field(
                    at("parts"),
                    "a file in parts has at least 2 and at most one per chunk",
                ));
            }
            let mut next = 0u64;
            for (j, p) in f.parts.iter().enumerate() {
                let pat = at(&format!("parts[{j}]"));
                paths::check_bundle_path(&p.path)?;
                if p.offset != next || p.size == 0 || p.offset % f.chunk_size != 0 {
                    return Err(field(pat, "parts must follow each other from offset 0, each non-empty and starting at a multiple of chunk_size"));
                }
                next = p.offset.saturating_add(p.size);
                check_volume(pat, p.volume)?;
                stored.push(&p.path);
            }
            if next != f.size {
                return Err(field(
                    at("parts"),
                    format!("the parts hold {next} bytes, the file {}", f.size),
                ));
            }
        }
        if self.files.iter().any(|f| !f.parts.is_empty()) {
            let mut seen = BTreeSet::new();
            for p in &stored {
                if !seen.insert(*p)
                    || *p == MANIFEST_FILE
                    || p.starts_with("signatures/")
                    || *p == crate::volume::MARKER_FILE
                {
                    return Err(field(
                        "files",
                        format!("stored path '{p}' is listed twice or reserved"),
                    ));
                }
            }
            paths::check_no_case_collisions(
                stored
                    .iter()
                    .copied()
                    .chain(
                        self.files
                            .iter()
                            .map(|f| f.path.as_str())
                            .filter(|p| !seen.contains(p)),
                    )
                    .chain(self.dirs.iter().map(|d| d.path.as_str())),
            )?;
        }
        Ok(())
    }

    /// Where every byte of the release is stored on a medium: one [`Piece`] per file
    /// kept whole and per part, in manifest order; `volume` keeps those of one volume.
    pub fn pieces(&self, volume: Option<u32>) -> Vec<Piece> {
        let mut out = Vec::new();
        for (i, f) in self.files.iter().enumerate() {
            if f.parts.is_empty() {
                out.push(Piece {
                    file: i,
                    path: f.path.clone(),
                    offset: 0,
                    size: f.size,
                    volume: f.volume,
                });
            } else {
                for p in &f.parts {
                    out.push(Piece {
                        file: i,
                        path: p.path.clone(),
                        offset: p.offset,
                        size: p.size,
                        volume: p.volume,
                    });
                }
            }
        }
        if let Some(v) = volume {
            out.retain(|p| p.volume.is_none_or(|x| x == v));
        }
        out
    }

    /// The stored view of this manifest: one entry per [`Piece`] (of `volume`, or all),
    /// each with its slice of the file's chunk digests, so a medium holding parts is
    /// checked as files are. The whole-file `sha256` of a part is not known (empty).
    pub fn stored_view(&self, volume: Option<u32>) -> Manifest {
        let mut m = self.clone();
        m.files = self
            .pieces(volume)
            .into_iter()
            .map(|p| {
                let f = &self.files[p.file];
                if f.parts.is_empty() {
                    return f.clone();
                }
                let first = (p.offset / f.chunk_size) as usize;
                let n = p.size.div_ceil(f.chunk_size) as usize;
                FileEntry {
                    path: p.path,
                    size: p.size,
                    sha256: String::new(),
                    chunks: f.chunks.get(first..first + n).unwrap_or_default().to_vec(),
                    parts: Vec::new(),
                    volume: p.volume,
                    ..f.clone()
                }
            })
            .collect();
        m
    }

    /// The files of the split model whose first shard is `first` (in shard order), or
    /// `first` alone for a model in one file.
    pub fn shards_of<'a>(&'a self, first: &'a FileEntry) -> Vec<&'a FileEntry> {
        let Some((prefix, 1, n)) = first
            .model
            .as_ref()
            .filter(|m| m.shards.is_some())
            .and_then(|_| crate::gguf::split::parse_shard_name(&first.path))
        else {
            return vec![first];
        };
        (1..=n)
            .filter_map(|k| self.file(&crate::gguf::split::shard_name(prefix, k, n)))
            .collect()
    }

    /// The canonical TOML text of this manifest (what is written and signed).
    pub fn to_toml(&self) -> String {
        // Serialising plain data structures to TOML cannot fail.
        toml::to_string(self).unwrap_or_default()
    }

    /// Looks a file up by its bundle path.
    pub fn file(&self, path: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == path)
    }

    /// The model files (every shard of a split model).
    pub fn models(&self) -> impl Iterator<Item = &FileEntry> {
        self.files.iter().filter(|f| f.kind == FileKind::Model)
    }

    /// The logical models: one entry per model, the first shard of a split one, the
    /// first file of a safetensors folder.
    pub fn logical_models(&self) -> impl Iterator<Item = &FileEntry> {
        let mut seen = BTreeSet::new();
        self.models().filter(move |f| match &f.model {
            Some(m) if m.format() != ModelFormat::Gguf => seen.insert(m.name.as_str()),
            Some(m) => !m.is_later_shard(),
            None => true,
        })
    }

    /// Every file of the model named `name`, and their total size.
    pub fn model_files<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a FileEntry> + 'a {
        self.models()
            .filter(move |f| f.model.as_ref().is_some_and(|m| m.name == name))
    }

    /// Total payload size in bytes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// The current UTC time in RFC 3339 (seconds precision), for `created`.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

impl crate::diagnostic::Diagnostic for ManifestError {
    fn help(&self) -> Option<String> {
        match self {
            ManifestError::TooLarge { .. } => {
                Some("this is not an offgrid manifest, or it was damaged".into())
            }
            ManifestError::Syntax { .. } => {
                Some("the manifest was damaged or truncated; get a fresh copy from HQ".into())
            }
            ManifestError::Format { .. } => {
                Some("use the offgrid version that made this bundle, or a newer one".into())
            }
            ManifestError::Path(e) => crate::diagnostic::Diagnostic::help(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let h = "ab".repeat(32);
        Manifest {
            dirs: Vec::new(),
            commands: Vec::new(),
            format: FORMAT.into(),
            bundle_id: "org.example.clinic".into(),
            release: "1.2.0".parse().unwrap(),
            created: "2026-11-21T12:00:00Z".into(),
            platforms: vec!["linux-x86_64".into()],
            default_model: Some("tiny".into()),
            expires: None,
            volumes: None,
            files: vec![
                FileEntry {
                    path: "models/tiny.gguf".into(),
                    size: 5 << 20,
                    sha256: h.clone(),
                    kind: FileKind::Model,
                    platform: None,
                    mode: None,
                    chunk_size: DEFAULT_CHUNK_SIZE,
                    chunks: vec![h.clone(), h.clone()],
                    volume: None,
                    parts: Vec::new(),
                    model: Some(ModelInfo {
                        format: None,
                        name: "tiny".into(),
                        architecture: Some("llama".into()),
                        quantization: Some("Q4_1".into()),
                        parameters: Some(1000),
                        context_length: Some(2048),
                        shard: None,
                        shards: None,
                    }),
                },
                FileEntry {
                    path: "bin/linux-x86_64/offgrid".into(),
                    size: 0,
                    sha256: h.clone(),
                    kind: FileKind::Binary,
                    platform: Some("linux-x86_64".into()),
                    mode: Some(0o755),
                    chunk_size: DEFAULT_CHUNK_SIZE,
                    chunks: vec![],
                    model: None,
                    volume: None,
                    parts: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn round_trips() {
        let m = sample();
        let text = m.to_toml();
        assert_eq!(Manifest::parse(text.as_bytes()).unwrap(), m);
    }

    #[test]
    fn refuses_inconsistent_manifests() {
        let mut m = sample();
        m.files[0].chunks.pop();
        assert!(Manifest::parse(m.to_toml().as_bytes()).is_err());
        let mut m = sample();
        m.files[1].path = "models/tiny.gguf".into();
        assert!(Manifest::parse(m.to_toml().as_bytes()).is_err());
        let mut m = sample();
        m.files[0].path = "../escape".into();
        assert!(Manifest::parse(m.to_toml().as_bytes()).is_err());
        let mut m = sample();
        m.default_model = Some("other".into());
        assert!(Manifest::parse(m.to_toml().as_bytes()).is_err());
        let mut m = sample();
        m.format = "offgrid-bundle/9".into();
        assert!(matches!(
            Manifest::parse(m.to_toml().as_bytes()),
            Err(ManifestError::Format { .. })
        ));
        assert!(Manifest::parse(b"format = \"offgrid-bundle/1\"\nbundle_id = ").is_err());
    }
}
