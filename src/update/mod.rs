//! Updates: the HQ release history, update packs (create, read, verify), and the site
//! side: install, apply-update, status, rollback, with a journal that makes every change
//! crash-safe. SPEC.md §7 is normative.
//!
//! Code map: [`history`] (HQ: releases and the content-addressed store), [`release`]
//! (HQ: pack-usb inputs to a recorded release), [`pack`] (the signed pack manifest),
//! [`pack_sign`] (minisign signatures over it), [`create`] (HQ: write a pack), [`reader`]
//! (stream a pack: signatures first, then payloads), [`parts`] (packs cut into parts that
//! verify alone, read in place), [`verify_pack`], [`home`] (site home
//! layout, state, lock), [`damage`] (hashing every kept version: status --verify,
//! repair), [`journal`] (journal and [`recover`]), [`txn`] (stage, then
//! switch), [`install`], [`apply`], [`rollback`], [`status`], [`repair`] (damaged files put
//! back from sticks and packs), [`fault`] (the crash test
//! hook), [`gc`] (removing kept versions beyond `--keep`), [`io`] (hashing readers/writers, durable copies, syncfs). `delta` is the delta
//! engineer's (SPEC.md §11).
//! Known gaps: one pack is read from a seekable file only (no stdin); an install or apply
//! keeps the new current and the previous version, older ones are removed.

pub mod apply;
pub mod create;
pub mod damage;
pub mod delta;
pub mod fault;
pub mod gc;
pub mod history;
pub mod home;
pub mod install;
pub mod journal;
pub mod pack;
pub mod pack_sign;
pub mod parts;
pub mod reader;
pub mod release;
pub mod repair;
pub mod rollback;
pub mod shims;
pub mod status;
pub mod store;
pub mod txn;
pub mod verify_pack;
pub mod volumes;

pub use apply::apply_update;
pub use home::Home;
pub use journal::recover;
pub use verify_pack::verify_pack;

use crate::trust::TrustError;

/// Why an update operation failed or was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// A generic refusal (kept for callers that only have a message).
    #[error("update refused: {0}")]
    Refused(String),
    #[error("cannot {action} '{path}': {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("pack '{pack}' is damaged or not an offgrid update pack: {reason}")]
    PackDamaged { pack: String, reason: String },
    #[error("'{path}' is not an offgrid update pack ({reason})")]
    NotAPack { path: String, reason: String },
    #[error(
        "payload '{entry}' of pack '{pack}' does not match the signed pack manifest: {reason}"
    )]
    PayloadMismatch {
        pack: String,
        entry: String,
        reason: String,
    },
    #[error("payload '{entry}' would decompress beyond its declared size of {declared} bytes")]
    TooLarge { entry: String, declared: u64 },
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A tree's signed head could not be read or is not trusted ([`crate::signed`]).
    #[error(transparent)]
    Head(#[from] crate::signed::HeadError),
    #[error("{}", crate::trust::untrusted_message(&format!("{what} '{pack}'"), trust_reports(source)))]
    PackUntrusted {
        /// `pack` or `the release manifest in pack`.
        what: &'static str,
        pack: String,
        #[source]
        source: TrustError,
    },
    #[error("nothing is installed in '{home}'")]
    NotInstalled { home: String },
    #[error("pack is for bundle '{pack}' but this site runs '{installed}'")]
    WrongBundle { installed: String, pack: String },
    #[error("the site home '{home}' holds no bundle '{bundle}' (it holds {})", held.join(", "))]
    UnknownBundle {
        home: String,
        bundle: String,
        held: Vec<String>,
    },
    #[error(
        "pack goes to release {to}, which is not newer than the installed release {installed}"
    )]
    Downgrade { installed: String, to: String },
    #[error("pack updates from release(s) {serves} but this site runs release {installed}")]
    WrongBase { installed: String, serves: String },
    #[error("installed file '{path}' does not match the release it belongs to (sha256 {actual}, expected {expected})")]
    BaseMismatch {
        path: String,
        expected: String,
        actual: String,
    },
    #[error("another offgrid operation holds the lock on '{home}': {}", crate::lockfile::describe(.holder.as_ref()))]
    Locked {
        home: String,
        holder: Option<crate::lockfile::Holder>,
    },
    #[error("site home '{home}' is busy: {} holds its lock and nothing is installed yet", crate::lockfile::describe(.holder.as_ref()))]
    Busy {
        home: String,
        holder: Option<crate::lockfile::Holder>,
    },
    #[error("there is no previous release to return to in '{home}': nothing that was current before release {current} is kept")]
    NoPrevious {
        home: String,
        current: String,
        /// The other kept releases.
        kept: Vec<String>,
    },
    #[error("release {release} is not kept in '{home}'")]
    NotKept {
        home: String,
        release: String,
        kept: Vec<String>,
    },
    #[error("release {release} is already the current release of '{home}'")]
    AlreadyCurrent { home: String, release: String },
    #[error("the keys given do not match the keys pinned in '{home}' at install")]
    KeysDiffer { home: String },
    #[error("USB tree '{root}' is not valid: {reason}")]
    BadTree { root: String, reason: String },
    #[error("site home '{home}' is damaged: {reason}")]
    BadHome {
        home: String,
        reason: String,
        help: &'static str,
    },
    #[error("HQ history '{dir}': {reason}")]
    History {
        dir: String,
        reason: String,
        help: String,
    },
    #[error("delta for '{path}': {source}")]
    Delta {
        path: String,
        source: delta::DeltaError,
    },
    #[error("'{path}' already exists")]
    Exists { path: String },
    /// A request the library cannot carry out as given (an option, a missing input).
    #[error("{message}")]
    Usage {
        message: String,
        help: Option<String>,
    },
    #[error("rollback refused: release {release} kept in '{home}' is damaged ({} file(s) do not match its signed manifest){}", .damaged.len(), list(.damaged))]
    RollbackDamaged {
        home: String,
        release: String,
        current: String,
        /// Each damaged file, quoted, with what is wrong.
        damaged: Vec<String>,
    },
    #[error("'{path}' is not a USB tree folder: {reason}")]
    NotATree { path: String, reason: String },
    #[error(transparent)]
    Media(#[from] crate::media::MediaError),
    #[error(transparent)]
    Volume(Box<crate::volume::VolumeError>),
    #[error("cannot make the site key in '{home}': {reason}")]
    SiteKey { home: String, reason: String },
    #[error("release {release} expired at {expires}, and this site has seen a release signed at {newest}")]
    Expired {
        release: String,
        expires: String,
        newest: String,
    },
    #[error("'{path}' is not a USB tree, an update pack or a folder holding them: {reason}")]
    NoRepairSource { path: String, reason: String },
    /// A pack in parts given without all of them (SPEC.md §7.18).
    #[error("{pack} is in {parts} parts; given: part(s) {}; missing: part(s) {}", nums(.given), nums(.missing))]
    PartsMissing {
        /// `pack BUNDLE FROM -> TO (pack sha256 …)`.
        pack: String,
        parts: u32,
        given: Vec<u32>,
        missing: Vec<u32>,
    },
    /// Parts of two packs given together.
    #[error("'{path}' is {this}, but '{first}' is {other}")]
    OtherPackPart {
        path: String,
        this: String,
        first: String,
        other: String,
    },
    /// One part's bytes differ from the signed pack manifest.
    #[error("part {part} of {parts} '{path}' is damaged: {reason}")]
    PartDamaged {
        path: String,
        part: u32,
        parts: u32,
        reason: String,
    },
}

/// `1, 2, 3` for part numbers.
fn nums(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

impl From<crate::volume::VolumeError> for UpdateError {
    fn from(e: crate::volume::VolumeError) -> Self {
        UpdateError::Volume(Box::new(e))
    }
}

/// The `help:` line of a rollback that has nowhere to go: the other kept releases.
fn kept_help(kept: &[String]) -> String {
    if kept.is_empty() {
        "rollback needs an earlier release kept by apply-update or install".into()
    } else {
        format!(
            "also kept: {}; 'offgrid rollback --to VERSION' switches to one of them",
            kept.join(", ")
        )
    }
}

/// Indented lines, one per item, at most 20 (then a count of the rest).
fn list(items: &[String]) -> String {
    let mut s = String::new();
    for i in items.iter().take(20) {
        s.push_str("\n  ");
        s.push_str(i);
    }
    if items.len() > 20 {
        s.push_str(&format!("\n  … and {} more", items.len() - 20));
    }
    s
}

/// `s` cut to a short, printable excerpt (control characters dropped).
pub(crate) fn short(s: &str) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

impl UpdateError {
    /// True for a clean "no" (exit 1) rather than an error.
    pub fn is_refusal(&self) -> bool {
        match self {
            UpdateError::Refused(_)
            | UpdateError::PackDamaged { .. }
            | UpdateError::PayloadMismatch { .. }
            | UpdateError::TooLarge { .. }
            | UpdateError::NotInstalled { .. }
            | UpdateError::WrongBundle { .. }
            | UpdateError::UnknownBundle { .. }
            | UpdateError::Downgrade { .. }
            | UpdateError::WrongBase { .. }
            | UpdateError::BaseMismatch { .. }
            | UpdateError::Locked { .. }
            | UpdateError::Busy { .. }
            | UpdateError::RollbackDamaged { .. }
            | UpdateError::NoPrevious { .. }
            | UpdateError::NotKept { .. }
            | UpdateError::AlreadyCurrent { .. }
            | UpdateError::KeysDiffer { .. }
            | UpdateError::BadTree { .. }
            | UpdateError::Expired { .. }
            | UpdateError::PartsMissing { .. }
            | UpdateError::OtherPackPart { .. }
            | UpdateError::PartDamaged { .. } => true,
            UpdateError::Trust(t) => t.is_refusal(),
            UpdateError::Head(h) => h.is_refusal(),
            UpdateError::Volume(v) => v.is_refusal(),
            UpdateError::PackUntrusted { source, .. } => source.is_refusal(),
            // A delta that does not apply inside a signed pack is a damaged pack.
            UpdateError::Delta { source, .. } => !matches!(source, delta::DeltaError::Io { .. }),
            _ => false,
        }
    }
}

fn trust_reports(e: &TrustError) -> &[crate::trust::SignatureReport] {
    match e {
        TrustError::ThresholdNotMet { reports, .. } => reports,
        _ => &[],
    }
}

/// Shorthand for an I/O error with its path.
pub(crate) fn io_err(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> UpdateError {
    let path = path.display().to_string();
    move |source| UpdateError::Io {
        action,
        path,
        source,
    }
}

impl UpdateError {
    /// A usage error without a fix to suggest.
    pub fn usage(message: impl Into<String>) -> Self {
        UpdateError::Usage {
            message: message.into(),
            help: None,
        }
    }

    /// A usage error and its fix (the `help:` line).
    pub fn usage_help(message: impl Into<String>, help: impl Into<String>) -> Self {
        UpdateError::Usage {
            message: message.into(),
            help: Some(help.into()),
        }
    }
}

impl crate::diagnostic::Diagnostic for UpdateError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            UpdateError::NoPrevious { kept, .. } | UpdateError::NotKept { kept, .. } => {
                Some(kept_help(kept))
            }
            UpdateError::PackDamaged { .. } => Some("copy the pack again from HQ; a pack is never usable in part".into()),
            UpdateError::NotAPack { .. } => Some("pass a pack made by 'offgrid create-update-pack', or a USB tree folder".into()),
            UpdateError::PayloadMismatch { .. } => Some("the pack was tampered with or assembled from two packs; get a fresh copy from HQ".into()),
            UpdateError::TooLarge { .. } => Some("the pack is damaged or hostile; get a fresh copy from HQ".into()),
            UpdateError::PackUntrusted { source, .. } => Some(crate::trust::untrusted_help(trust_reports(source), "copy the pack again from HQ")),
            UpdateError::Trust(e) => crate::diagnostic::Diagnostic::help(e),
            UpdateError::Head(e) => crate::diagnostic::Diagnostic::help(e),
            UpdateError::NotInstalled { .. } => Some("install a verified USB stick first: offgrid install --from USBROOT --pubkey HQ.pub".into()),
            UpdateError::WrongBundle { installed, .. } => Some(format!("use a pack made for '{installed}'")),
            UpdateError::UnknownBundle { held, .. } => Some(format!("pass --bundle with one of: {}; a stick of a new bundle is installed with 'offgrid install --from USBROOT --pubkey HQ.pub'", held.join(", "))),
            UpdateError::Downgrade { .. } => Some("a downgrade or replay is refused; use 'offgrid rollback' to return to the previous release".into()),
            UpdateError::WrongBase { installed, .. } => Some(format!("ask HQ for a pack made with 'offgrid create-update-pack --since {installed}'")),
            UpdateError::BaseMismatch { .. } => Some("the installed copy is damaged; reinstall from a verified USB stick (offgrid install --from USBROOT)".into()),
            UpdateError::Locked { .. } => Some("wait for it to finish, then try again".into()),
            UpdateError::Busy { .. } => Some("wait for it to finish, then run 'offgrid status' again".into()),
            UpdateError::AlreadyCurrent { .. } => Some("'offgrid status' lists the kept releases; 'offgrid repair --from USBROOT' puts back damaged files".into()),
            UpdateError::KeysDiffer { .. } => Some("omit --pubkey/--trust to use the pinned keys, or install into a new --home".into()),
            UpdateError::BadTree { root, .. } => Some(format!("verify the stick with 'offgrid verify {root} --pubkey HQ.pub' and copy it again from HQ")),
            UpdateError::BadHome { help, .. } => Some(help.to_string()),
            UpdateError::History { help, .. } => Some(help.to_string()),
            UpdateError::Usage { help, .. } => help.clone(),
            UpdateError::Exists { .. } => Some("choose another output, or pass --force to replace it".into()),
            UpdateError::RollbackDamaged { current, release, .. } => Some(format!("release {current} stays in use; to get release {release} back, repair it from a verified stick or update pack holding it: offgrid repair --from USBROOT")),
            UpdateError::NotATree { .. } => Some("pass the folder of the USB tree (the one holding manifest.toml), e.g. offgrid install --from /media/USB".into()),
            UpdateError::Media(e) => crate::diagnostic::Diagnostic::help(e),
            UpdateError::Volume(e) => crate::diagnostic::Diagnostic::help(e.as_ref()),
            UpdateError::Expired { .. } => Some("an old release is being offered (a freeze or replay); ask HQ for the current release (SPEC.md §17.5)".into()),
            UpdateError::NoRepairSource { .. } => Some("pass a stick's folder (the one holding manifest.toml), an .ogpack file, or a folder holding them, e.g. offgrid repair --from /media/USB".into()),
            UpdateError::PartsMissing { parts, missing, .. } => Some(format!("give every part, in any order: offgrid apply-update PART1 … PART{parts}; part(s) {} are still needed", nums(missing))),
            UpdateError::OtherPackPart { .. } => Some("give the parts of one pack only; 'offgrid inspect PART' says which pack a part belongs to".into()),
            UpdateError::PartDamaged { part, .. } => Some(format!("copy part {part} again from HQ; 'offgrid verify PART --pubkey HQ.pub' checks each part alone")),
            _ => None,
        }
    }
}
