//! The site home (`--home`, `OFFGRID_HOME`, default `~/.offgrid`): installed versions side
//! by side, `state.json` naming the current and previous one (the single source of
//! truth, replaced atomically: writing it *is* the switch), the pinned trust policy, the
//! lock, and the `current` symlink derived from the state.
//!
//! Layout 2 (SPEC.md §7.5): `state.json`, `journal.json` (only while an operation runs,
//! see [`crate::update::journal`]), `.lock`, `current -> versions/DIR`, `versions/DIR/`
//! (a full verified tree: `manifest.toml`, `signatures/`, files hard-linked from the
//! store), `versions/.staging-*`, `objects/AA/SHA256.MODE` (the store,
//! [`crate::update::store`]).
//! Known gap: on non-Unix systems there is no `current` symlink; use `state.json`.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use ct_codecs::{Base64, Decoder, Encoder};
use serde::{Deserialize, Serialize};

use crate::keys::PublicKey;
use crate::trust::TrustPolicy;
use crate::update::{io_err, UpdateError};
use crate::version::Version;

/// The environment variable naming the home.
pub const ENV: &str = "OFFGRID_HOME";
/// On Windows, where `current` cannot be a symlink, the file naming the current
/// version's folder (derived from state.json like the link; SPEC.md §18.5).
pub const CURRENT_TXT: &str = "current.txt";
/// `format` of state.json.
pub const STATE_FORMAT: &str = "offgrid-home/1";
/// Largest state.json accepted.
const MAX_STATE: u64 = 16 << 20;
/// Versions an install or apply keeps: the new current one and the one before it.
pub const DEFAULT_KEEP: usize = 2;
/// Events kept in the history.
const MAX_EVENTS: usize = 200;

/// A site home: the home of one bundle. The home root (`--home`) is the home of the
/// first bundle installed into it; every other bundle has a sub-home
/// `ROOT/bundles/BUNDLE_ID/` of the same layout (SPEC.md §7.5) that shares the root's
/// store (`objects/`), lock (`.lock`), site key and bin folder: `base` is that root.
#[derive(Debug, Clone)]
pub struct Home {
    /// This bundle's folder: `state.json`, `versions/`, `current`, the journal.
    pub root: PathBuf,
    /// The home root, whose store, lock and site record every bundle shares (`root`
    /// itself for the first bundle).
    pub base: PathBuf,
}

/// The folder of the sub-homes under a home root.
pub const BUNDLES_DIR: &str = "bundles";

/// One installed version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    pub release: Version,
    /// Folder name under `versions/`.
    pub dir: String,
}

/// The pinned trust policy: minisign public key lines and the threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedTrust {
    pub threshold: usize,
    pub keys: Vec<String>,
}

/// One entry of the site's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub time: String,
    /// `install`, `apply`, `rollback`.
    pub event: String,
    pub release: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
}

/// A recovery from an interrupted operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovery {
    pub time: String,
    /// The interrupted operation (`install`, `apply`).
    pub op: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub to: String,
    /// `completed` (the switch had happened) or `rolled-back` (it had not).
    pub outcome: String,
}

/// state.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub format: String,
    pub bundle_id: String,
    pub current: Installed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Installed>,
    pub trust: PinnedTrust,
    #[serde(default)]
    pub history: Vec<Event>,
    #[serde(default)]
    pub recoveries: Vec<Recovery>,
    /// The site's record (SPEC.md §17): newest signed time seen, receipts written.
    #[serde(default)]
    pub site: crate::site::SiteState,
    /// Versions kept besides `current` and `previous` (e.g. the newer release after a
    /// rollback), newest release first. Absent in homes written before issue 10.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_kept: Vec<Installed>,
    /// The home's layout (SPEC.md §7.5): 2, release folders linking the content-addressed
    /// store ([`crate::update::store`]); absent (1) in homes written before it, which
    /// the next command migrates.
    #[serde(default = "layout_1")]
    pub layout: u32,
}

fn layout_1() -> u32 {
    1
}

/// The held lock; released when dropped (or when the process dies). The lock file
/// names its holder while held ([`crate::lockfile`]).
#[derive(Debug)]
pub struct Lock {
    _lock: crate::lockfile::FileLock,
}

/// A minisign public key line (`RW…`) for `pk`.
pub fn key_line(pk: &PublicKey) -> String {
    let mut raw = Vec::with_capacity(42);
    raw.extend_from_slice(b"Ed");
    raw.extend_from_slice(&pk.keynum);
    raw.extend_from_slice(&pk.key);
    Base64::encode_to_string(&raw).unwrap_or_default()
}

/// Parses a key line made by [`key_line`].
pub fn parse_key_line(s: &str) -> Option<PublicKey> {
    let raw = Base64::decode_to_vec(s.trim(), None).ok()?;
    if raw.len() != 42 || &raw[..2] != b"Ed" {
        return None;
    }
    let mut keynum = [0u8; 8];
    keynum.copy_from_slice(&raw[2..10]);
    let mut key = [0u8; 32];
    key.copy_from_slice(&raw[10..]);
    Some(PublicKey { keynum, key })
}

impl PinnedTrust {
    pub fn from_policy(p: &TrustPolicy) -> PinnedTrust {
        let mut keys: Vec<String> = p.keys.iter().map(key_line).collect();
        keys.sort();
        keys.dedup();
        PinnedTrust {
            threshold: p.threshold.max(1),
            keys,
        }
    }
}

impl State {
    /// Every kept version: the current one, the previous one, then the others.
    pub fn kept(&self) -> Vec<&Installed> {
        let mut v = vec![&self.current];
        for k in self.previous.iter().chain(&self.also_kept) {
            if v.iter().all(|x| x.dir != k.dir) {
                v.push(k);
            }
        }
        v
    }

    /// The kept version that was current before `release` became current for the first
    /// time: the `from` of the newest `install`/`apply` event that made `release`
    /// (rollbacks do not count), else (history trimmed) the newest kept release older
    /// than `release`. `None` when that release is not kept.
    pub fn predecessor(&self, release: &Version) -> Option<&Installed> {
        let kept = self.kept();
        let made = self.history.iter().rev().find(|e| {
            (e.event == "install" || e.event == "apply") && e.release == release.to_string()
        });
        match made {
            Some(e) => {
                let from = e.from.as_deref()?;
                kept.into_iter()
                    .find(|k| k.release.to_string() == from && k.release != *release)
            }
            None => kept
                .into_iter()
                .filter(|k| k.release < *release)
                .max_by(|a, b| a.release.cmp(&b.release)),
        }
    }

    /// Makes `to` current after an install or apply: the old current becomes the
    /// previous version, and versions beyond the newest `keep` (at least 1: the new
    /// current, the one it replaced, then the newest others) are no longer kept (the
    /// switch's cleanup removes them). Install keeps [`DEFAULT_KEEP`]; apply-update
    /// takes `--keep`.
    pub fn advance(&mut self, to: Installed, keep: usize) {
        let old = std::mem::replace(&mut self.current, to);
        let mut others: Vec<Installed> = self
            .previous
            .take()
            .into_iter()
            .chain(std::mem::take(&mut self.also_kept))
            .filter(|k| k.release != self.current.release && k.release != old.release)
            .collect();
        others.sort_by(|a, b| b.release.cmp(&a.release));
        let keep = keep.max(1);
        others.truncate(keep.saturating_sub(2));
        self.previous = (keep >= 2 && old.release != self.current.release).then_some(old);
        self.also_kept = others;
    }

    /// Keeps the newest `keep` (at least 1) kept versions: the current one, then
    /// `previous`, then `also_kept` newest first (gc).
    pub fn retain(&mut self, keep: usize) {
        let mut room = keep.max(1) - 1;
        if room == 0 {
            self.previous = None;
        } else if self.previous.is_some() {
            room -= 1;
        }
        self.also_kept.sort_by(|a, b| b.release.cmp(&a.release));
        self.also_kept.truncate(room);
    }

    /// Makes the kept version `to` current (rollback): nothing is removed; `previous`
    /// becomes `to`'s predecessor when it is kept, and every other kept version stays.
    pub fn switch_to(&mut self, to: &Installed) {
        let mut all: Vec<Installed> = self.kept().into_iter().cloned().collect();
        all.retain(|k| k.dir != to.dir);
        self.current = to.clone();
        self.previous = None;
        self.also_kept = all;
        let prev = self.predecessor(&to.release).cloned();
        if let Some(p) = &prev {
            self.also_kept.retain(|k| k.dir != p.dir);
        }
        self.also_kept.sort_by(|a, b| b.release.cmp(&a.release));
        self.previous = prev;
    }

    /// Appends an event, keeping the newest [`MAX_EVENTS`].
    pub fn push_event(&mut self, event: &str, release: &Version, from: Option<&Version>) {
        self.history.push(Event {
            time: crate::manifest::now_rfc3339(),
            event: event.into(),
            release: release.to_string(),
            from: from.map(|v| v.to_string()),
        });
        if self.history.len() > MAX_EVENTS {
            let n = self.history.len() - MAX_EVENTS;
            self.history.drain(..n);
        }
    }
}

impl Home {
    /// The home: `flag`, else `OFFGRID_HOME`, else `~/.offgrid`.
    pub fn resolve(flag: Option<&Path>) -> Home {
        let root = match flag {
            Some(p) => p.to_path_buf(),
            None => match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
                Some(p) => PathBuf::from(p),
                None => crate::update::history::home_dir().join(".offgrid"),
            },
        };
        Home::at(root)
    }

    /// The home rooted at `root` (the first bundle's).
    pub fn at(root: PathBuf) -> Home {
        Home {
            base: root.clone(),
            root,
        }
    }

    /// True for the sub-home of a bundle other than the first one.
    pub fn is_sub(&self) -> bool {
        self.root != self.base
    }

    /// The home root: the first bundle's home.
    pub fn root_home(&self) -> Home {
        Home::at(self.base.clone())
    }

    /// The sub-home of bundle `id` (which must be a checked bundle id,
    /// [`crate::manifest::check_bundle_id`]: it names a folder).
    pub fn sub(&self, id: &str) -> Home {
        Home {
            root: self.base.join(BUNDLES_DIR).join(id),
            base: self.base.clone(),
        }
    }

    /// Every bundle's home in this home root: the root first, then each sub-home holding
    /// a `state.json`, by bundle id. Only the root when nothing else is installed.
    pub fn members(&self) -> Vec<Home> {
        let root = self.root_home();
        let mut subs: Vec<String> = fs::read_dir(root.root.join(BUNDLES_DIR))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| crate::manifest::check_bundle_id(n).is_ok())
            .filter(|n| {
                let h = root.sub(n);
                h.state_path().is_file() || h.journal_path().is_file()
            })
            .collect();
        subs.sort();
        std::iter::once(root.clone())
            .chain(subs.iter().map(|n| root.sub(n)))
            .collect()
    }

    /// The bundle ids this home root holds, the root's first.
    pub fn held(&self) -> Vec<String> {
        self.members()
            .iter()
            .filter_map(|h| h.read_state().ok().flatten().map(|s| s.bundle_id))
            .collect()
    }

    /// Where a release of bundle `id` goes: the root when it is empty or holds that
    /// bundle, else that bundle's sub-home (made by its first install).
    pub fn route(&self, id: &str) -> Result<Home, UpdateError> {
        let root = self.root_home();
        match root.read_state()? {
            None => Ok(root),
            Some(s) if s.bundle_id == id => Ok(root),
            Some(_) => {
                crate::manifest::check_bundle_id(id).map_err(|e| root.bad(e.to_string()))?;
                Ok(root.sub(id))
            }
        }
    }

    /// Where the USB tree or volume at `tree` installs: [`Home::route`] by the bundle id
    /// it states ([`Home::signed_source_bundle`]); the root when no held bundle's keys nor
    /// `given` signed it (the root's own checks then name what is wrong).
    pub fn route_tree(
        &self,
        tree: &Path,
        given: Option<&TrustPolicy>,
    ) -> Result<Home, UpdateError> {
        match self.signed_source_bundle(tree, given) {
            Some(id) => self.route(&id),
            None => Ok(self.root_home()),
        }
    }

    /// The home the update pack (or pack part) at `pack` applies to: the home of the
    /// bundle it states ([`Home::signed_source_bundle`]); refused, naming the bundles
    /// held, when this home root does not hold it. The root when the file does not read
    /// as a pack, no held bundle's keys signed it, or nothing is installed (apply names
    /// what is wrong).
    pub fn route_pack(&self, pack: &Path) -> Result<Home, UpdateError> {
        let root = self.root_home();
        match (self.signed_source_bundle(pack, None), root.read_state()?) {
            (Some(id), Some(_)) => Ok(self.select(Some(&id))?.remove(0)),
            _ => Ok(root),
        }
    }

    /// The bundle id the stick, volume or folder (its manifest) or the pack or pack part
    /// (its pack manifest) at `path` states, read only once its signatures verify under
    /// the pinned keys of a bundle this home holds, or `given`. `None` when none does or
    /// `path` is neither. Used to choose a bundle's home (SPEC.md §7.5) and to order a
    /// repair's bundles (§7.15).
    pub fn signed_source_bundle(&self, path: &Path, given: Option<&TrustPolicy>) -> Option<String> {
        if path.is_dir() {
            let raw = crate::signed::read_raw(path).ok()?;
            let parse = |b: &[u8]| {
                crate::manifest::Manifest::parse(b)
                    .ok()
                    .map(|m| m.bundle_id)
            };
            self.signed_bundle_id(&raw.bytes, &raw.sigs, given, parse)
        } else {
            let (bytes, sigs) = crate::update::reader::peek_signed_head(path)?;
            let parse = |b: &[u8]| {
                crate::update::pack::PackManifest::parse(b)
                    .ok()
                    .map(|p| p.bundle_id)
            };
            self.signed_bundle_id(&bytes, &sigs, given, parse)
        }
    }

    /// The bundle id a signed head states (`bytes` with its signatures `sigs`), parsed by
    /// `parse` only after the pinned keys of a bundle this home holds, or `given`, verify
    /// the signatures over the exact bytes: nothing unsigned is parsed (SPEC.md §4.6),
    /// not even to choose a home. `None` when no such key verifies them.
    fn signed_bundle_id(
        &self,
        bytes: &[u8],
        sigs: &[(String, String)],
        given: Option<&TrustPolicy>,
        parse: impl Fn(&[u8]) -> Option<String>,
    ) -> Option<String> {
        let pinned: Vec<TrustPolicy> = self
            .members()
            .iter()
            .filter_map(|h| {
                let s = h.read_state().ok()??;
                h.policy(&s).ok()
            })
            .collect();
        let trusted = given
            .into_iter()
            .chain(pinned.iter())
            .any(|p| p.check_bytes(bytes, sigs).is_ok());
        if !trusted {
            return None;
        }
        parse(bytes).filter(|id| crate::manifest::check_bundle_id(id).is_ok())
    }

    /// The homes a command works on: bundle `id`'s (refused, naming the bundles held,
    /// when this home root does not hold it), or every bundle's when `id` is `None`.
    pub fn select(&self, id: Option<&str>) -> Result<Vec<Home>, UpdateError> {
        let Some(id) = id else {
            return Ok(self.members());
        };
        let h = self.route(id)?;
        if h.read_state()?.is_some_and(|s| s.bundle_id == id) {
            return Ok(vec![h]);
        }
        Err(UpdateError::UnknownBundle {
            home: self.base.display().to_string(),
            bundle: id.to_owned(),
            held: self.held(),
        })
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }
    pub fn journal_path(&self) -> PathBuf {
        self.root.join("journal.json")
    }
    pub fn versions(&self) -> PathBuf {
        self.root.join("versions")
    }
    pub fn version_dir(&self, dir: &str) -> PathBuf {
        self.versions().join(dir)
    }
    pub fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The lock file: the home root's, one for every bundle (they share the store).
    pub fn lock_path(&self) -> PathBuf {
        self.base.join(".lock")
    }

    /// Takes the home root's lock without waiting, recording `command` as its holder; a
    /// second operation is refused, naming the holder. `create` makes the home folder
    /// first (install; a sub-home's parents too).
    pub fn lock(&self, create: bool, command: &str) -> Result<Lock, UpdateError> {
        if create {
            fs::create_dir_all(&self.root).map_err(io_err("create", &self.root))?;
            if self.is_sub() {
                // The sub-home's name must survive a power cut once its state is written.
                for d in [self.base.join(BUNDLES_DIR), self.base.clone()] {
                    crate::fsutil::fsync_dir(&d).map_err(io_err("sync", &d))?;
                }
            }
        } else if !self.root.is_dir() {
            return Err(UpdateError::NotInstalled {
                home: self.root.display().to_string(),
            });
        }
        let p = self.lock_path();
        match crate::lockfile::try_lock(&p, command).map_err(io_err("lock", &p))? {
            crate::lockfile::TryLock::Acquired(l) => Ok(Lock { _lock: l }),
            crate::lockfile::TryLock::Busy(h) => Err(UpdateError::Locked {
                home: self.root.display().to_string(),
                holder: h,
            }),
        }
    }

    /// Reads state.json; `None` when nothing is installed.
    pub fn read_state(&self) -> Result<Option<State>, UpdateError> {
        let p = self.state_path();
        let f = match File::open(&p) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", &p)(e)),
        };
        let bytes = crate::hash::read_bounded(&mut &f, MAX_STATE)
            .map_err(io_err("read", &p))?
            .ok_or_else(|| self.bad("state.json is larger than 16 MiB"))?;
        let s: State = serde_json::from_slice(&bytes)
            .map_err(|e| self.bad(format!("state.json is not valid: {e}")))?;
        if s.format != STATE_FORMAT {
            return Err(self.bad(format!(
                "state.json has format '{}', expected '{STATE_FORMAT}'",
                s.format
            )));
        }
        Ok(Some(s))
    }

    /// The state, or `NotInstalled`.
    pub fn state(&self) -> Result<State, UpdateError> {
        self.read_state()?.ok_or_else(|| UpdateError::NotInstalled {
            home: self.root.display().to_string(),
        })
    }

    fn bad(&self, reason: impl Into<String>) -> UpdateError {
        UpdateError::BadHome {
            home: self.root.display().to_string(),
            reason: reason.into(),
            help: "reinstall from a verified USB stick into a new --home",
        }
    }

    /// Writes state.json atomically (temp file, fsync, rename, fsync dir): the switch.
    pub fn write_state(&self, s: &State) -> Result<(), UpdateError> {
        let p = self.state_path();
        let mut text = serde_json::to_string_pretty(s).unwrap_or_default();
        text.push('\n');
        crate::fsutil::atomic_write(&p, text.as_bytes()).map_err(io_err("write", &p))
    }

    /// The pinned trust policy.
    pub fn policy(&self, s: &State) -> Result<TrustPolicy, UpdateError> {
        self.pinned_policy(&s.trust)
    }

    /// The trust policy of pinned keys `t` (a home's, or a set of volumes' being staged).
    pub fn pinned_policy(&self, t: &PinnedTrust) -> Result<TrustPolicy, UpdateError> {
        let mut keys = Vec::new();
        for k in &t.keys {
            keys.push(parse_key_line(k).ok_or_else(|| {
                self.bad(format!("pinned key '{k}' is not a minisign public key"))
            })?);
        }
        if keys.is_empty() {
            return Err(self.bad("no key is pinned"));
        }
        Ok(TrustPolicy {
            keys,
            threshold: t.threshold.max(1),
        })
    }

    /// Points the `current` symlink at the state's current version, atomically (a new
    /// link renamed over the old one), when it does not already.
    pub fn sync_current_link(&self, s: &State) -> Result<(), UpdateError> {
        #[cfg(unix)]
        {
            let link = self.current_link();
            let target = Path::new("versions").join(&s.current.dir);
            if fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
                return Ok(());
            }
            let tmp = self.root.join(format!(".current-{}", std::process::id()));
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(&target, &tmp).map_err(io_err("create", &tmp))?;
            // Not fsynced: the state is the truth and recovery re-points the link.
            fs::rename(&tmp, &link).map_err(io_err("replace", &link))?;
        }
        // No symlink without privileges on Windows: the current version's folder name
        // is a file the `.cmd` shims read (SPEC.md §18.5).
        #[cfg(not(unix))]
        {
            let p = self.root.join(CURRENT_TXT);
            if fs::read_to_string(&p).ok().as_deref() != Some(s.current.dir.as_str()) {
                crate::fsutil::atomic_write(&p, s.current.dir.as_bytes())
                    .map_err(io_err("replace", &p))?;
            }
        }
        Ok(())
    }

    /// A fresh version folder name for `release` (unique, so an old copy of the same
    /// release never collides).
    pub fn new_dir_name(release: &Version) -> String {
        let mut b = [0u8; 4];
        let _ = getrandom::getrandom(&mut b);
        format!("{release}-{}", hex::encode(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(v: &str) -> Installed {
        Installed {
            release: v.parse().unwrap(),
            dir: format!("{v}-00000000"),
        }
    }

    fn releases(s: &State) -> Vec<String> {
        s.kept().iter().map(|k| k.release.to_string()).collect()
    }

    /// install 1.0.0, apply 1.1.0 and 1.2.0 (keep 3), then rollbacks and gc.
    #[test]
    fn kept_versions_follow_the_history() {
        let mut s = State {
            format: STATE_FORMAT.into(),
            bundle_id: "org.example.x".into(),
            current: inst("1.0.0"),
            previous: None,
            trust: PinnedTrust {
                threshold: 1,
                keys: Vec::new(),
            },
            history: Vec::new(),
            site: Default::default(),
            recoveries: Vec::new(),
            also_kept: Vec::new(),
            layout: crate::update::store::LAYOUT,
        };
        s.push_event("install", &"1.0.0".parse().unwrap(), None);
        for (to, from) in [("1.1.0", "1.0.0"), ("1.2.0", "1.1.0")] {
            s.advance(inst(to), 3);
            s.push_event("apply", &to.parse().unwrap(), Some(&from.parse().unwrap()));
        }
        assert_eq!(releases(&s), ["1.2.0", "1.1.0", "1.0.0"]);
        // Rollback: to the predecessor, twice; the third has nowhere to go.
        let p = s.predecessor(&s.current.release).cloned().unwrap();
        assert_eq!(p.release.to_string(), "1.1.0");
        s.switch_to(&p);
        s.push_event("rollback", &p.release, Some(&"1.2.0".parse().unwrap()));
        assert_eq!(releases(&s), ["1.1.0", "1.0.0", "1.2.0"]);
        let p = s.predecessor(&s.current.release).cloned().unwrap();
        s.switch_to(&p);
        assert_eq!(releases(&s), ["1.0.0", "1.2.0", "1.1.0"]);
        assert!(s.previous.is_none());
        assert!(s.predecessor(&s.current.release).is_none());
        // A release reached by rollback keeps its predecessor from the apply.
        s.switch_to(&inst("1.2.0"));
        assert_eq!(s.previous.as_ref().unwrap().release.to_string(), "1.1.0");
        // Keep 2 on the next apply; gc keeps 1.
        s.advance(inst("1.3.0"), DEFAULT_KEEP);
        assert_eq!(releases(&s), ["1.3.0", "1.2.0"]);
        s.retain(1);
        assert_eq!(releases(&s), ["1.3.0"]);
    }
}
