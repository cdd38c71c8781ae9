//! The USB tree: what a release is made of ([`inputs`], from a [`recipe`] or from flags),
//! where each file goes on the stick ([`layout`]), the launcher scripts and README
//! rendered from `templates/` ([`templates`]), and writing a signed tree ([`pack`]).
//!
//! `pack-usb` and `create-update-pack` share the first two steps: both turn a recipe or
//! flags into a validated [`inputs::ReleaseInputs`] and plan the tree with
//! [`layout::plan`]. SPEC.md §2 (tree layout) and §6 (recipe) are normative.
//! This module's one error type is [`PackError`]; none of its variants is a refusal
//! (exit 1): every one is a usage or I/O error (exit 2) with a `help:` line.

pub mod binary;
pub mod inputs;
pub mod layout;
pub mod pack;
pub mod recipe;
pub mod templates;
pub mod volumes;

use std::path::Path;

use crate::gguf::GgufError;
use crate::hash::HashError;
use crate::keys::KeyError;
use crate::manifest::ManifestError;
use crate::paths::PathError;
use crate::platform::PlatformError;
use crate::sign::SignError;
use crate::version::VersionError;

pub use inputs::{AddInput, Flags, ModelInput, ReleaseInputs};
pub use layout::{plan, plan_for, PlannedFile, Source, TreePlan, MODELS_DIR};
pub use pack::{pack, PackOptions, PackReport};

/// Why a release could not be read, planned or packed.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{what}: '{path}' does not exist")]
    InputMissing {
        what: String,
        path: String,
        hint: &'static str,
    },
    #[error("{what}: '{path}' is not a regular file")]
    InputNotFile { what: String, path: String },
    #[error("cannot read {what} '{path}': {source}")]
    InputRead {
        what: String,
        path: String,
        source: std::io::Error,
    },
    #[error("cannot read recipe '{path}': {reason}")]
    Recipe { path: String, reason: String },
    #[error("{what} '{value}' is malformed: {reason}")]
    BadArg {
        what: &'static str,
        value: String,
        reason: String,
        help: &'static str,
    },
    #[error("two {what} are named '{name}' ('{a}' and '{b}')")]
    DuplicateName {
        what: &'static str,
        name: String,
        a: String,
        b: String,
    },
    #[error("two binaries for platform '{platform}' ('{a}' and '{b}')")]
    DuplicatePlatform {
        platform: String,
        a: String,
        b: String,
    },
    #[error("model name '{name}' cannot be stored on a USB stick: {source}")]
    BadModelName { name: String, source: PathError },
    #[error("no release version given")]
    NoRelease,
    #[error("no signing key given: a tree must be signed, and `verify` refuses unsigned trees")]
    NoSigner,
    #[error("secret keys '{a}' and '{b}' are the same key {key_id}")]
    DuplicateSigner {
        key_id: String,
        a: String,
        b: String,
    },
    #[error("default model '{name}' is not one of the models packed ({available})")]
    UnknownDefaultModel { name: String, available: String },
    #[error("destination '{path}' is a file, not a folder")]
    DestIsFile { path: String },
    #[error("destination '{dest}' already holds release {old_release} of '{old_bundle}' (this pack is {new_release} of '{new_bundle}')")]
    DestHoldsOther {
        dest: String,
        old_bundle: String,
        old_release: String,
        new_bundle: String,
        new_release: String,
    },
    #[error("destination '{dest}' holds an unreadable manifest: {reason}")]
    DestBadManifest { dest: String, reason: String },
    #[error("destination '{dest}' has no manifest.toml but already holds '{path}' (an interrupted pack, or files that are not an offgrid tree)")]
    DestNotATree { dest: String, path: String },
    #[error("input '{path}' is inside the destination '{dest}'")]
    InputInsideDest { path: String, dest: String },
    #[error("'{dest}' has {free} bytes free, but the tree needs {need}")]
    NoSpace { dest: String, need: u64, free: u64 },
    #[error("'{dest}' still holds volume {held} of this release, written a moment ago: the medium was not swapped for volume {volume}")]
    NotSwapped {
        dest: String,
        held: u32,
        volume: u32,
    },
    #[error("release {release} of {bundle_id}: volume(s) 1..{written} of {volumes} were written, volume {} was not; the set is incomplete", .written + 1)]
    SetIncomplete {
        bundle_id: String,
        release: String,
        written: u32,
        volumes: u32,
    },
    #[error("model '{path}' is not a usable split model: {reason}")]
    BadSplit { path: String, reason: String },
    #[error("model folder '{path}': {reason}")]
    ModelFolder { path: String, reason: String },
    #[error("{origin}: {reason}")]
    BadAdd {
        origin: String,
        reason: String,
        help: &'static str,
    },
    #[error("'{path}' is a symbolic link; offgrid does not carry links (a FAT or NTFS stick cannot hold them, and a link could point outside the tree)")]
    Symlink { path: String },
    #[error("'{path}' is {what}, which a release cannot carry")]
    Special { path: String, what: String },
    #[error(transparent)]
    Split(#[from] crate::gguf::split::SplitError),
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    #[error(transparent)]
    Volume(Box<crate::volume::VolumeError>),
    #[error("cannot {action} '{path}': {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("destination '{dest}' is being written by {}", crate::lockfile::describe(.holder.as_ref()))]
    Busy {
        dest: String,
        holder: Option<crate::lockfile::Holder>,
    },
    #[error("template {template} uses unknown placeholder '{{{{{name}}}}}'")]
    Template { template: String, name: String },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Sign(#[from] SignError),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

impl PackError {
    /// Packing gives one clean "no" (exit 1): the destination is busy with another
    /// writer. Every other error is usage or I/O (exit 2).
    pub fn is_refusal(&self) -> bool {
        matches!(self, PackError::Busy { .. })
    }
}

impl From<crate::volume::VolumeError> for PackError {
    fn from(e: crate::volume::VolumeError) -> Self {
        PackError::Volume(Box::new(e))
    }
}

/// Shorthand for an I/O error with the action and path it concerned.
pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> PackError {
    let path = path.display().to_string();
    move |source| PackError::Io {
        action,
        path,
        source,
    }
}

impl crate::diagnostic::Diagnostic for PackError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            PackError::InputMissing { hint, .. } => Some(format!("check the path{hint}")),
            PackError::InputNotFile { .. } => Some("name a file, not a folder".into()),
            PackError::Recipe { .. } => Some("see formats/offgrid.toml for a complete recipe".into()),
            PackError::BadArg { help, .. } => Some(help.to_string()),
            PackError::DuplicateName { .. } => Some("give one of them another name with NAME=FILE (or `name` in the recipe)".into()),
            PackError::DuplicatePlatform { .. } => Some("pass one --binary per platform".into()),
            PackError::NoRelease => Some("pass --release VERSION (for example --release 1.4.0) or set `release` in the recipe".into()),
            PackError::NoSigner => Some("pass --sign-with HQ.key (make one with `offgrid keygen`), or list `signers` in the recipe".into()),
            PackError::DuplicateSigner { .. } => Some("give each signer once".into()),
            PackError::UnknownDefaultModel { .. } => Some("pass --default-model with one of those names".into()),
            PackError::DestIsFile { .. } => Some("name the folder where the USB stick is mounted".into()),
            PackError::DestHoldsOther { .. } => Some("pass --force to replace it, or pack onto another stick".into()),
            PackError::DestBadManifest { .. } => Some("pass --force to replace it".into()),
            PackError::DestNotATree { .. } => Some("pass --force to replace them, or pack onto an empty folder".into()),
            PackError::InputInsideDest { .. } => Some("keep the release inputs outside the tree being written".into()),
            PackError::NoSpace { .. } => Some("use a bigger stick, or remove files from it first".into()),
            PackError::NotSwapped { volume, .. } => Some(format!("insert an empty medium for volume {volume} and give its folder (the volume already written stays as it is)")),
            PackError::SetIncomplete { volumes, .. } => Some(format!("pack the release again onto {volumes} media (a set cannot be resumed); the volumes written verify on their own and 'offgrid install --from' names the missing ones")),
            PackError::BadSplit { .. } => Some("give the first shard (NAME-00001-of-0000N.gguf) with all its shards beside it, as llama.cpp's gguf-split writes them".into()),
            PackError::ModelFolder { .. } => Some("a model folder holds the shards of one split GGUF model (NAME-00001-of-0000N.gguf …) or a safetensors model (*.safetensors, config.json, tokenizer files); otherwise name the .gguf or .onnx file".into()),
            PackError::BadAdd { help, .. } => Some(help.to_string()),
            PackError::Symlink { .. } => Some("replace the link by the file or folder it points to, or leave it out".into()),
            PackError::Special { .. } => Some("leave it out of the folder".into()),
            PackError::Split(e) => crate::diagnostic::Diagnostic::help(e),
            PackError::Media(e) => crate::diagnostic::Diagnostic::help(e),
            PackError::Volume(e) => crate::diagnostic::Diagnostic::help(e.as_ref()),
            PackError::Busy { .. } => Some("wait for it to finish (or stop it), then run this again; two writers into one folder would leave it without a manifest".into()),
            PackError::Gguf(e) => crate::diagnostic::Diagnostic::help(e),
            PackError::Key(e) => crate::diagnostic::Diagnostic::help(e),
            PackError::Path(e) => crate::diagnostic::Diagnostic::help(e),
            PackError::Manifest(e) => crate::diagnostic::Diagnostic::help(e),
            PackError::Version(e) => crate::diagnostic::Diagnostic::help(e),
            PackError::Platform(e) => crate::diagnostic::Diagnostic::help(e),
            _ => None,
        }
    }
}
