//! Signed trust roots: key rotation and revocation without a network (SPEC.md §19).
//!
//! A **root** (`offgrid-root/1`, TOML) names the keys HQ signs releases with, how many
//! must sign (threshold), the expiry policy (`warn` or `refuse`, SPEC.md §17.5) and the
//! key ids revoked so far, under a version number. Root N+1 is valid only when signed by
//! the threshold of root N *and* by its own threshold; a site holding root N applies
//! N+1, N+2, … in order from a `roots/` folder (a stick, beside a pack) or the same files
//! held in memory ([`Source::Files`]: the head of an update pack, a peer's `/roots/`), so a
//! site many rotations behind catches up in one step. A home with pinned keys and no
//! root is at the implicit root 0: its pinned keys and threshold, policy `refuse`.
//!
//! Trust before parse: each root's bytes are checked against the *current* root's keys
//! before the TOML is parsed ([`TrustPolicy::check_bytes`]); only then is it parsed and
//! checked against its own keys. Every signature's trusted comment binds the version
//! and the file's sha256 (`offgrid-root version=N root_sha256=HEX`).
//!
//! Files: `roots/N.root.toml` and `roots/N.KEYID.minisig` (one per signer). The home
//! keeps the roots it applied in `HOME/roots/` (so it can hand them on) and its current
//! version, sha256, expiry policy and revoked ids in `state.json` (`site.root`); the
//! pinned keys (`trust`) are replaced by the root's keys in the same atomic write.
//!
//! Known gaps: a root offered at the site's own version but with other bytes is ignored,
//! not reported; a revoked key id cannot come back in a later root, but nothing stops
//! HQ from generating a fresh key (new id) for the same person.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey};
use crate::sign;
use crate::trust::{TrustError, TrustPolicy};
use crate::update::home::{Home, PinnedTrust, State};

/// `format` of a root file.
pub const FORMAT: &str = "offgrid-root/1";
/// The folder roots travel in (on a stick, beside a pack, in a home, at HQ).
pub const ROOTS_DIR: &str = "roots";
/// The first word of a root signature's trusted comment.
pub const COMMENT_TAG: &str = "offgrid-root";
/// Largest root file read.
pub const MAX_ROOT_BYTES: u64 = 256 << 10;
/// Most root files considered in one folder (a chain longer than this is refused).
pub const MAX_ROOTS: usize = 4096;
/// Most directory entries looked at in one `roots/` folder.
const MAX_ENTRIES: usize = 64 * 1024;

/// What a site does with a release past its `expires` (SPEC.md §17.5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiryPolicy {
    /// Install it, with a warning.
    Warn,
    /// Refuse it (exit 1).
    #[default]
    Refuse,
}

impl std::fmt::Display for ExpiryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ExpiryPolicy::Warn => "warn",
            ExpiryPolicy::Refuse => "refuse",
        })
    }
}

impl std::str::FromStr for ExpiryPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "warn" => Ok(ExpiryPolicy::Warn),
            "refuse" => Ok(ExpiryPolicy::Refuse),
            _ => Err(format!(
                "expiry policy '{}' is neither 'warn' nor 'refuse'",
                crate::excerpt::excerpt(s)
            )),
        }
    }
}

/// Why a root or a chain of roots was refused, or could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot {op} '{path}': {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("trust root '{path}' is refused: {reason}")]
    Refused {
        path: String,
        reason: String,
        help: &'static str,
    },
    #[error("'{dir}' holds roots up to version {newest}, but this site is at root version {current}: an older root is never applied (rollback)")]
    Rollback {
        dir: String,
        newest: u64,
        current: u64,
    },
    #[error("'{dir}' skips root version {missing} (this site is at version {current})")]
    Gap {
        dir: String,
        missing: u64,
        current: u64,
    },
    #[error("'{path}' already exists")]
    Exists { path: String },
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Home(#[from] Box<crate::update::UpdateError>),
}

impl RootError {
    /// True for a clean "no" (exit 1): a root or chain refused.
    pub fn is_refusal(&self) -> bool {
        match self {
            RootError::Refused { .. } | RootError::Rollback { .. } | RootError::Gap { .. } => true,
            RootError::Home(e) => e.is_refusal(),
            RootError::Io { .. } | RootError::Usage(_) | RootError::Exists { .. } => false,
        }
    }
}

impl crate::diagnostic::Diagnostic for RootError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            RootError::Refused { help, .. } => Some(help.to_string()),
            RootError::Rollback { .. } => Some("bring the current chain of roots from HQ".into()),
            RootError::Gap { .. } => Some(
                "copy the whole 'roots' folder from HQ; each root is checked by the one before it"
                    .into(),
            ),
            RootError::Home(e) => crate::diagnostic::Diagnostic::help(e.as_ref()),
            RootError::Exists { .. } => {
                Some("each version is made once; 'offgrid trust rotate' makes the next".into())
            }
            RootError::Io { .. } | RootError::Usage(_) => None,
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootError + 'a {
    move |source| RootError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

const HELP_CHAIN: &str = "copy the 'roots' folder again from HQ; a root must be signed by the threshold of the root before it and by its own (SPEC.md §19)";
const HELP_FORMAT: &str = "see formats/root.example.toml (SPEC.md §19)";

/// One key of a root file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootKey {
    /// The key id (16 uppercase hex digits), equal to the key's.
    pub id: String,
    /// The minisign public key line (`RW…`).
    pub pubkey: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A root file as written (field order is the file's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Root {
    pub format: String,
    pub version: u64,
    /// When HQ made it (RFC 3339); a signed time (SPEC.md §17.5).
    pub created: String,
    pub threshold: u64,
    pub expiry_policy: ExpiryPolicy,
    /// Key ids revoked by this root or an earlier one; they never count again.
    #[serde(default)]
    pub revoked: Vec<String>,
    pub keys: Vec<RootKey>,
}

impl Root {
    /// Parses and checks a root's text (never called before its signatures held, except
    /// at HQ on its own files).
    pub fn parse(bytes: &[u8]) -> Result<(Root, TrustPolicy), String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())?;
        let r: Root =
            toml::from_str(text).map_err(|e| crate::excerpt::message(e.to_string().trim_end()))?;
        let policy = r.check()?;
        Ok((r, policy))
    }

    /// Checks the fields; returns the policy the root names.
    pub fn check(&self) -> Result<TrustPolicy, String> {
        if self.format != FORMAT {
            return Err(format!(
                "format is '{}', expected '{FORMAT}'",
                crate::excerpt::excerpt(&self.format)
            ));
        }
        if self.version == 0 {
            return Err("version is 0; roots start at version 1".into());
        }
        if crate::site::fresh::parse(&self.created).is_none() {
            return Err(format!(
                "created '{}' is not an RFC 3339 time",
                crate::excerpt::excerpt(&self.created)
            ));
        }
        let mut keys: Vec<PublicKey> = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let pk = crate::update::home::parse_key_line(&k.pubkey)
                .ok_or_else(|| format!("key {} is not a minisign public key line (RW…)", i + 1))?;
            if pk.key_id() != k.id {
                return Err(format!(
                    "key {} says id '{}' but its public key's id is {}",
                    i + 1,
                    crate::excerpt::excerpt(&k.id),
                    pk.key_id()
                ));
            }
            if keys.iter().any(|o| o.keynum == pk.keynum) {
                return Err(format!("key {} ({}) is listed twice", i + 1, k.id));
            }
            if self.revoked.contains(&k.id) {
                return Err(format!("key {} is listed and revoked", k.id));
            }
            keys.push(pk);
        }
        if keys.is_empty() {
            return Err("it lists no keys".into());
        }
        if self.threshold < 1 || self.threshold > keys.len() as u64 {
            return Err(format!(
                "threshold is {} but it must be between 1 and the number of keys ({})",
                self.threshold,
                keys.len()
            ));
        }
        Ok(TrustPolicy {
            keys,
            threshold: self.threshold as usize,
        })
    }

    /// The root's text (TOML, deterministic).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

/// The trusted comment of every signature over root `version` with bytes `bytes`.
pub fn trusted_comment(version: u64, bytes: &[u8]) -> String {
    format!(
        "{COMMENT_TAG} version={version} root_sha256={}",
        sign::sha256_hex(bytes)
    )
}

/// Signs a root's exact bytes; returns the `.minisig` text.
pub fn sign_root(sk: &SecretKey, version: u64, bytes: &[u8]) -> Result<String, RootError> {
    sign::sign_bytes(
        sk,
        bytes,
        &trusted_comment(version, bytes),
        &format!(
            "offgrid trust root {version} signed by key {}",
            sk.public.key_id()
        ),
    )
    .map_err(|e| RootError::Usage(format!("signing root {version}: {e}")))
}

/// The file name of root `version`.
pub fn root_file(version: u64) -> String {
    format!("{version}.root.toml")
}

/// The file name of `key_id`'s signature over root `version`.
pub fn sig_file(version: u64, key_id: &str) -> String {
    format!("{version}.{key_id}.minisig")
}

/// What a site trusts now: the version of its root, the policy, the expiry policy and
/// every key id revoked so far.
#[derive(Debug, Clone)]
pub struct TrustState {
    pub version: u64,
    pub policy: TrustPolicy,
    pub expiry_policy: ExpiryPolicy,
    pub revoked: BTreeSet<String>,
    /// The newest root's `created`, when any root was applied.
    pub created: Option<String>,
}

impl TrustState {
    /// The implicit root 0 of keys pinned without a root.
    pub fn implicit(policy: TrustPolicy) -> TrustState {
        TrustState {
            version: 0,
            policy,
            expiry_policy: ExpiryPolicy::Refuse,
            revoked: BTreeSet::new(),
            created: None,
        }
    }

    /// The state of an installed home.
    pub fn of_home(home: &Home, s: &State) -> Result<TrustState, RootError> {
        let policy = home.policy(s).map_err(|e| RootError::Home(Box::new(e)))?;
        Ok(match &s.site.root {
            None => TrustState::implicit(policy),
            Some(r) => TrustState {
                version: r.version,
                policy,
                expiry_policy: r.expiry_policy,
                revoked: r.revoked.iter().cloned().collect(),
                created: r.created.clone(),
            },
        })
    }
}

/// The root record in `state.json` (`site.root`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootRecord {
    pub version: u64,
    pub sha256: String,
    pub expiry_policy: ExpiryPolicy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
}

/// The expiry policy of a home (refuse when it has no root).
pub fn expiry_policy(s: &State) -> ExpiryPolicy {
    s.site
        .root
        .as_ref()
        .map(|r| r.expiry_policy)
        .unwrap_or_default()
}

/// One root of a folder, read (bounded) but not yet trusted.
#[derive(Debug, Clone)]
pub struct RawRoot {
    pub version: u64,
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    /// `(file name, text)` of each `N.*.minisig`, sorted by name.
    pub sigs: Vec<(String, String)>,
}

/// A root that was verified and applied.
#[derive(Debug, Clone)]
pub struct Applied {
    pub raw: RawRoot,
    pub root: Root,
}

/// `DIR/roots` when it is a folder, else `DIR` when it holds `*.root.toml` files, else
/// `None` (a stick, a trust folder at HQ, or the roots folder itself).
pub fn find_dir(dir: &Path) -> Option<PathBuf> {
    let sub = dir.join(ROOTS_DIR);
    if sub.is_dir() {
        return Some(sub);
    }
    let holds = std::fs::read_dir(dir).ok()?.take(MAX_ENTRIES).any(|e| {
        e.ok()
            .is_some_and(|e| e.file_name().to_string_lossy().ends_with(".root.toml"))
    });
    holds.then(|| dir.to_path_buf())
}

/// The version in a root file name `N.root.toml` (N decimal, no leading zero).
fn version_of(name: &str) -> Option<u64> {
    let n = name.strip_suffix(".root.toml")?;
    if n.is_empty() || (n.len() > 1 && n.starts_with('0')) || !n.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    n.parse().ok()
}

/// Most bytes of a chain held in memory ([`Source::Files`]: a pack's or a peer's).
pub const MAX_CHAIN_BYTES: u64 = 16 << 20;

/// Where a chain of roots is read from: a folder (a stick's `roots/`, HQ's), or files
/// already read into memory (the `roots/` entries of an update pack, a peer's
/// `/roots/`), shown as `label` in messages.
#[derive(Debug, Clone)]
pub enum Source {
    Dir(PathBuf),
    Files {
        label: PathBuf,
        files: BTreeMap<String, Vec<u8>>,
    },
}

impl Source {
    /// What messages name: the folder, or the label.
    pub fn label(&self) -> &Path {
        match self {
            Source::Dir(d) => d,
            Source::Files { label, .. } => label,
        }
    }

    /// True when it holds a root file.
    pub fn holds_roots(&self) -> bool {
        match self {
            Source::Dir(d) => find_dir(d).is_some(),
            Source::Files { files, .. } => files.keys().any(|n| version_of(n).is_some()),
        }
    }

    /// Checks the name of one file of a chain taken from a pack or a peer: `N.root.toml`
    /// or `N.KEYID.minisig`, nothing else (no folder, no other file).
    pub fn check_name(name: &str) -> bool {
        if version_of(name).is_some() {
            return true;
        }
        name.strip_suffix(".minisig")
            .and_then(|r| r.split_once('.'))
            .is_some_and(|(v, id)| {
                version_of(&format!("{v}.root.toml")).is_some()
                    && id.len() == 16
                    && id.bytes().all(|b| b.is_ascii_hexdigit())
            })
    }

    fn names(&self) -> Result<Vec<String>, RootError> {
        let too_many = |path: &Path| RootError::Refused {
            path: path.display().to_string(),
            reason: format!("the folder holds more than {MAX_ENTRIES} entries"),
            help: HELP_CHAIN,
        };
        match self {
            Source::Dir(dir) => {
                let mut out = Vec::new();
                for (i, e) in std::fs::read_dir(dir)
                    .map_err(io_err("read", dir))?
                    .enumerate()
                {
                    if i >= MAX_ENTRIES {
                        return Err(too_many(dir));
                    }
                    let e = e.map_err(io_err("read", dir))?;
                    out.push(e.file_name().to_string_lossy().into_owned());
                }
                Ok(out)
            }
            Source::Files { label, files } => {
                if files.len() > MAX_ENTRIES {
                    return Err(too_many(label));
                }
                Ok(files.keys().cloned().collect())
            }
        }
    }

    /// One file, bounded: `Ok(None)` when it is larger than `max`.
    fn read(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>, RootError> {
        match self {
            Source::Dir(dir) => {
                let p = dir.join(name);
                match crate::hash::read_regular_bounded(&p, max, false) {
                    Ok(Ok(b)) => Ok(Some(b)),
                    Ok(Err(_)) => Ok(None),
                    Err(e) => Err(io_err("read", &p)(e)),
                }
            }
            Source::Files { label, files } => match files.get(name) {
                Some(b) if b.len() as u64 <= max => Ok(Some(b.clone())),
                Some(_) => Ok(None),
                None => Err(RootError::Io {
                    op: "read",
                    path: label.join(name).display().to_string(),
                    source: io::Error::from(io::ErrorKind::NotFound),
                }),
            },
        }
    }
}

/// Every root of `src` with its signatures, as `(file name, bytes)` in version order
/// (what a pack or a peer carries), each read bounded; at most [`MAX_CHAIN_BYTES`].
pub fn files_of(src: &Source) -> Result<Vec<(String, Vec<u8>)>, RootError> {
    let mut out = Vec::new();
    let mut total = 0u64;
    for (v, sigs) in list(src)? {
        let raw = read_raw(src, v, &sigs)?;
        for (name, text) in raw.sigs {
            total += text.len() as u64;
            out.push((name, text.into_bytes()));
        }
        total += raw.bytes.len() as u64;
        out.push((root_file(v), raw.bytes));
        if total > MAX_CHAIN_BYTES {
            return Err(RootError::Refused {
                path: src.label().display().to_string(),
                reason: format!("the chain is larger than {MAX_CHAIN_BYTES} bytes"),
                help: HELP_CHAIN,
            });
        }
    }
    Ok(out)
}

/// `"A-B"` (or `"A"`): the versions of the root files among `files`, for messages;
/// `None` when there is none.
pub fn chain_versions(files: &[(String, Vec<u8>)]) -> Option<String> {
    let vs: Vec<u64> = files.iter().filter_map(|(n, _)| version_of(n)).collect();
    let (lo, hi) = (vs.iter().min()?, vs.iter().max()?);
    Some(if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    })
}

/// Collects the files of a chain read from a pack or a peer into a [`Source`]: each
/// name checked ([`Source::check_name`]), no name twice, every file and the whole
/// bounded. `Err` says what is wrong, for the caller to name the pack or peer.
pub fn source_from(
    label: PathBuf,
    entries: impl IntoIterator<Item = (String, Vec<u8>)>,
) -> Result<Source, String> {
    let mut files = BTreeMap::new();
    let mut total = 0u64;
    for (name, bytes) in entries {
        if !Source::check_name(&name) {
            return Err(format!(
                "'{name}' is not a root file name (N.root.toml or N.KEYID.minisig)"
            ));
        }
        let max = if name.ends_with(".minisig") {
            crate::signed::MAX_SIGNATURE_BYTES
        } else {
            MAX_ROOT_BYTES
        };
        if bytes.len() as u64 > max {
            return Err(format!("root file '{name}' is larger than {max} bytes"));
        }
        total += bytes.len() as u64;
        if total > MAX_CHAIN_BYTES || files.len() >= MAX_ENTRIES {
            return Err(format!(
                "the chain of roots is larger than {MAX_CHAIN_BYTES} bytes or {MAX_ENTRIES} files"
            ));
        }
        if files.insert(name.clone(), bytes).is_some() {
            return Err(format!("root file '{name}' appears twice"));
        }
    }
    Ok(Source::Files { label, files })
}

/// Lists the roots of `src` by version, with their signature file names: nothing read.
fn list(src: &Source) -> Result<BTreeMap<u64, Vec<String>>, RootError> {
    let mut roots: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut sigs: Vec<(u64, String)> = Vec::new();
    for name in src.names()? {
        if let Some(v) = version_of(&name) {
            roots.entry(v).or_default();
            if roots.len() > MAX_ROOTS {
                return Err(RootError::Refused {
                    path: src.label().display().to_string(),
                    reason: format!("the folder holds more than {MAX_ROOTS} roots"),
                    help: HELP_CHAIN,
                });
            }
        } else if let Some(rest) = name.strip_suffix(".minisig") {
            if let Some((v, _)) = rest.split_once('.') {
                if let Ok(v) = v.parse::<u64>() {
                    sigs.push((v, name));
                }
            }
        }
    }
    for (v, name) in sigs {
        if let Some(list) = roots.get_mut(&v) {
            list.push(name);
        }
    }
    for list in roots.values_mut() {
        list.sort();
    }
    Ok(roots)
}

/// Reads root `version` of `src` and its signatures (regular files, bounded).
fn read_raw(src: &Source, version: u64, sig_names: &[String]) -> Result<RawRoot, RootError> {
    let path = src.label().join(root_file(version));
    let too_large = |name: &str, max: u64| RootError::Refused {
        path: src.label().join(name).display().to_string(),
        reason: format!("it is larger than {max} bytes"),
        help: HELP_CHAIN,
    };
    let name = root_file(version);
    let bytes = src
        .read(&name, MAX_ROOT_BYTES)?
        .ok_or_else(|| too_large(&name, MAX_ROOT_BYTES))?;
    if sig_names.len() > crate::signed::MAX_SIGNATURES {
        return Err(RootError::Refused {
            path: path.display().to_string(),
            reason: format!(
                "it has more than {} signature files",
                crate::signed::MAX_SIGNATURES
            ),
            help: HELP_CHAIN,
        });
    }
    let mut sigs = Vec::new();
    for n in sig_names {
        let b = src
            .read(n, crate::signed::MAX_SIGNATURE_BYTES)?
            .ok_or_else(|| too_large(n, crate::signed::MAX_SIGNATURE_BYTES))?;
        sigs.push((n.clone(), String::from_utf8_lossy(&b).into_owned()));
    }
    Ok(RawRoot {
        version,
        path,
        bytes,
        sigs,
    })
}

/// Checks root `raw` (version `cur.version + 1`) against the current state: the
/// current threshold over the bytes first, then the parse, then its own threshold and
/// every trusted comment. Returns the parsed root and the state it leads to.
pub fn verify_next(cur: &TrustState, raw: &RawRoot) -> Result<(Root, TrustState), RootError> {
    let shown = raw.path.display().to_string();
    let refused = |reason: String| RootError::Refused {
        path: shown.clone(),
        reason,
        help: HELP_CHAIN,
    };
    let why = |e: TrustError| match e {
        TrustError::ThresholdNotMet {
            valid, threshold, ..
        } => format!("{valid} valid signature(s), {threshold} required"),
        other => other.to_string(),
    };
    // 1. The current root's threshold over the exact bytes, before any parse.
    let by_old = cur.policy.check_bytes(&raw.bytes, &raw.sigs).map_err(|e| {
        refused(format!(
            "it is not signed by the threshold of root {} ({})",
            cur.version,
            why(e)
        ))
    })?;
    // 2. The parse.
    let (root, policy) = Root::parse(&raw.bytes).map_err(|e| RootError::Refused {
        path: shown.clone(),
        reason: e.to_string(),
        help: HELP_FORMAT,
    })?;
    if root.version != raw.version {
        return Err(refused(format!(
            "the file is named for version {} but holds version {}",
            raw.version, root.version
        )));
    }
    if let Some(k) = root.keys.iter().find(|k| cur.revoked.contains(&k.id)) {
        return Err(refused(format!(
            "it lists key {}, which an earlier root revoked",
            k.id
        )));
    }
    // 3. Trusted comments bind version and bytes.
    let want = trusted_comment(root.version, &raw.bytes);
    let comment = |c: &str| {
        if c == want {
            Ok(())
        } else {
            Err(format!(
                "it reads '{}', expected '{want}'",
                crate::excerpt::excerpt(c)
            ))
        }
    };
    by_old.bind(comment).map_err(|e| {
        refused(format!(
            "it is not signed by the threshold of root {} ({})",
            cur.version,
            why(e)
        ))
    })?;
    // 4. Its own threshold.
    policy
        .check_bytes(&raw.bytes, &raw.sigs)
        .and_then(|p| p.bind(comment))
        .map_err(|e| {
            refused(format!(
                "it is not signed by the threshold of its own keys ({})",
                why(e)
            ))
        })?;
    let mut revoked = cur.revoked.clone();
    revoked.extend(root.revoked.iter().cloned());
    let created = crate::site::fresh::newest(cur.created.as_deref(), &root.created);
    let next = TrustState {
        version: root.version,
        policy,
        expiry_policy: root.expiry_policy,
        revoked,
        created,
    };
    Ok((root, next))
}

/// What applying a folder of roots did.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The folder read.
    pub dir: PathBuf,
    /// The roots applied, in order.
    pub applied: Vec<Applied>,
    /// The newest version the folder holds.
    pub newest_offered: Option<u64>,
    /// The state after them.
    pub state: TrustState,
}

/// Applies, in memory, every root of `dir` newer than `cur`, in order; roots at or
/// below `cur.version` are skipped (a stick carries the whole chain). A missing version
/// or any refused root refuses the whole chain. From the implicit root 0, the chain
/// starts at the first root the pinned keys sign (roots before it are skipped); when
/// they sign none, the first refusal is the answer.
pub fn advance(cur: &TrustState, dir: &Path) -> Result<Chain, RootError> {
    advance_from(cur, &Source::Dir(dir.to_path_buf()))
}

/// [`advance`] over any [`Source`] (a pack's or a peer's roots in memory).
pub fn advance_from(cur: &TrustState, src: &Source) -> Result<Chain, RootError> {
    let dir = src.label();
    let roots = list(src)?;
    let newest_offered = roots.keys().next_back().copied();
    let mut state = cur.clone();
    let mut applied = Vec::new();
    // At the implicit root 0 the pinned keys may be those of any root (a site given a
    // newer key directly): the chain starts at the first root they sign.
    let mut first_refusal = None;
    for (v, sigs) in roots.range(cur.version + 1..) {
        if state.version == 0 {
            let raw = read_raw(src, *v, sigs)?;
            match verify_next(&state, &raw) {
                Ok((root, next)) => {
                    applied.push(Applied { raw, root });
                    state = next;
                }
                Err(e @ RootError::Refused { .. }) => {
                    first_refusal.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        if *v != state.version + 1 {
            return Err(RootError::Gap {
                dir: dir.display().to_string(),
                missing: state.version + 1,
                current: cur.version,
            });
        }
        let raw = read_raw(src, *v, sigs)?;
        let (root, next) = verify_next(&state, &raw)?;
        applied.push(Applied { raw, root });
        state = next;
    }
    if let (0, Some(e)) = (state.version, first_refusal) {
        return Err(e);
    }
    Ok(Chain {
        dir: dir.to_path_buf(),
        applied,
        newest_offered,
        state,
    })
}

/// Records `chain` in `home` (under its lock): the applied roots copied into
/// `HOME/roots/`, then one atomic state write making the last root's keys the pinned
/// keys, with `site.root` and the newest signed time. Nothing when nothing was applied.
pub fn record(home: &Home, chain: &Chain) -> Result<(), RootError> {
    let Some(last) = chain.applied.last() else {
        return Ok(());
    };
    let _lock = home
        .lock(false, "trust update")
        .map_err(|e| RootError::Home(Box::new(e)))?;
    let mut state = home.state().map_err(|e| RootError::Home(Box::new(e)))?;
    let have = TrustState::of_home(home, &state)?.version;
    if have >= last.root.version {
        return Ok(());
    }
    let dir = home.root.join(ROOTS_DIR);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    for a in &chain.applied {
        for (name, text) in &a.raw.sigs {
            let p = dir.join(name);
            crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))?;
        }
        let p = dir.join(root_file(a.root.version));
        crate::fsutil::atomic_write(&p, &a.raw.bytes).map_err(io_err("write", &p))?;
    }
    let st = &chain.state;
    state.trust = PinnedTrust::from_policy(&st.policy);
    state.site.root = Some(RootRecord {
        version: st.version,
        sha256: sign::sha256_hex(&last.raw.bytes),
        expiry_policy: st.expiry_policy,
        revoked: st.revoked.iter().cloned().collect(),
        created: st.created.clone(),
    });
    if let Some(c) = &st.created {
        state.site.newest_signed =
            crate::site::fresh::newest(state.site.newest_signed.as_deref(), c)
                .or(state.site.newest_signed.take());
    }
    home.write_state(&state)
        .map_err(|e| RootError::Home(Box::new(e)))
}

/// Applies the roots of `dir` newer than the home's to an installed home. With
/// `strict`, a folder whose newest root is older than the home's is refused
/// ([`RootError::Rollback`]); otherwise it is ignored (an old stick).
pub fn update_home(home: &Home, dir: &Path, strict: bool) -> Result<Chain, RootError> {
    update_home_from(home, &Source::Dir(dir.to_path_buf()), strict)
}

/// [`update_home`] over any [`Source`].
pub fn update_home_from(home: &Home, src: &Source, strict: bool) -> Result<Chain, RootError> {
    let dir = src.label();
    let state = home.state().map_err(|e| RootError::Home(Box::new(e)))?;
    let cur = TrustState::of_home(home, &state)?;
    let chain = advance_from(&cur, src)?;
    if strict {
        if let Some(n) = chain.newest_offered {
            if n < cur.version {
                return Err(RootError::Rollback {
                    dir: dir.display().to_string(),
                    newest: n,
                    current: cur.version,
                });
            }
        }
    }
    record(home, &chain)?;
    Ok(chain)
}

/// The newest root of an HQ folder, parsed (HQ trusts its own files): `(root, bytes)`.
pub fn newest_in(dir: &Path) -> Result<Option<(Root, Vec<u8>)>, RootError> {
    let src = Source::Dir(dir.to_path_buf());
    let roots = list(&src)?;
    let Some((v, sigs)) = roots.iter().next_back() else {
        return Ok(None);
    };
    let raw = read_raw(&src, *v, sigs)?;
    let (root, _) = Root::parse(&raw.bytes).map_err(|reason| RootError::Refused {
        path: raw.path.display().to_string(),
        reason,
        help: HELP_FORMAT,
    })?;
    Ok(Some((root, raw.bytes)))
}

/// Signs `root` with each distinct key of `signers`, in memory: the root as it would be
/// read back from `dir`.
pub fn prepare(dir: &Path, root: &Root, signers: &[SecretKey]) -> Result<RawRoot, RootError> {
    let bytes = root.to_toml().into_bytes();
    let mut sigs = Vec::new();
    let mut seen = BTreeSet::new();
    for sk in signers {
        let id = sk.public.key_id();
        if seen.insert(id.clone()) {
            sigs.push((
                sig_file(root.version, &id),
                sign_root(sk, root.version, &bytes)?,
            ));
        }
    }
    sigs.sort();
    Ok(RawRoot {
        version: root.version,
        path: dir.join(root_file(root.version)),
        bytes,
        sigs,
    })
}

/// Writes a prepared root into its folder, each file new (a version is never replaced);
/// the signatures first, the root last, so a folder never holds a root without its
/// signatures. Returns the paths written.
pub fn write_new(raw: &RawRoot) -> Result<Vec<PathBuf>, RootError> {
    let dir = crate::fsutil::parent_dir(&raw.path);
    std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    if raw.path.exists() {
        return Err(RootError::Exists {
            path: raw.path.display().to_string(),
        });
    }
    let mut written = vec![raw.path.clone()];
    for (name, text) in &raw.sigs {
        let p = dir.join(name);
        crate::fsutil::atomic_write_new(&p, text.as_bytes()).map_err(io_err("write", &p))?;
        written.push(p);
    }
    crate::fsutil::atomic_write_new(&raw.path, &raw.bytes).map_err(io_err("write", &raw.path))?;
    Ok(written)
}

/// The state a site reaches by root `root` (HQ's view of its own newest root).
pub fn state_of(root: &Root) -> Result<TrustState, RootError> {
    let policy = root.check().map_err(RootError::Usage)?;
    Ok(TrustState {
        version: root.version,
        policy,
        expiry_policy: root.expiry_policy,
        revoked: root.revoked.iter().cloned().collect(),
        created: Some(root.created.clone()),
    })
}

/// Copies every root and signature of `from` into `to` (a stick's or a pack folder's
/// `roots/`), replacing files of the same name.
pub fn copy_dir(from: &Path, to: &Path) -> Result<usize, RootError> {
    let src = Source::Dir(from.to_path_buf());
    let roots = list(&src)?;
    std::fs::create_dir_all(to).map_err(io_err("create", to))?;
    let mut n = 0;
    for (v, sigs) in &roots {
        let raw = read_raw(&src, *v, sigs)?;
        for (name, text) in &raw.sigs {
            let p = to.join(name);
            crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))?;
        }
        let p = to.join(root_file(*v));
        crate::fsutil::atomic_write(&p, &raw.bytes).map_err(io_err("write", &p))?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names() {
        assert_eq!(version_of("1.root.toml"), Some(1));
        assert_eq!(version_of("40.root.toml"), Some(40));
        assert_eq!(version_of("01.root.toml"), None);
        assert_eq!(version_of(".root.toml"), None);
        assert_eq!(version_of("1a.root.toml"), None);
        assert_eq!(version_of("1.root.toml.minisig"), None);
    }

    const ROOT2: &str = include_str!("../formats/roots.example/2.root.toml");

    #[test]
    fn the_example_parses_and_round_trips() {
        let (r, p) = Root::parse(ROOT2.as_bytes()).unwrap();
        assert_eq!(r.version, 2);
        assert_eq!(p.threshold, 1);
        assert_eq!(r.to_toml(), ROOT2);
    }

    #[test]
    fn bad_roots_are_refused() {
        let id = ROOT2
            .lines()
            .find_map(|l| l.strip_prefix("id = \""))
            .unwrap()
            .trim_end_matches('"')
            .to_owned();
        for (from, to, why) in [
            ("version = 2", "version = 0", "version is 0"),
            ("threshold = 1", "threshold = 2", "threshold is 2"),
            ("threshold = 1", "threshold = 0", "threshold is 0"),
            ("offgrid-root/1", "offgrid-root/9", "format is"),
            (
                "expiry_policy = \"refuse\"",
                "expiry_policy = \"maybe\"",
                "unknown variant",
            ),
            (
                "revoked = [",
                &format!("revoked = [\"{id}\", "),
                "listed and revoked",
            ),
            (
                &format!("id = \"{id}\""),
                "id = \"0000000000000000\"",
                "its public key's id",
            ),
            ("threshold = 1", "threshold = 1\nextra = 1", "unknown field"),
        ] {
            let text = ROOT2.replacen(from, to, 1);
            assert_ne!(text, ROOT2, "{from}");
            let e = Root::parse(text.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn policy_parses() {
        assert_eq!("warn".parse::<ExpiryPolicy>(), Ok(ExpiryPolicy::Warn));
        assert!("WARN".parse::<ExpiryPolicy>().is_err());
        assert_eq!(ExpiryPolicy::default(), ExpiryPolicy::Refuse);
    }
}
