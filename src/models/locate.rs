//! Where models are: the stick (portable mode), a models folder, the installed home; and
//! reading one signed tree (manifest plus signature files) through the one head reader
//! ([`crate::signed`]): the model list needs the manifest before any key is known, so it
//! is read with [`crate::signed::read_unverified`]; [`super::Catalog::verify`] checks the
//! signatures over the same bytes before a model is loaded.
//!
//! Portable mode is on when `--stick ROOT` / `OFFGRID_PORTABLE=ROOT` names the stick, or
//! when the running binary sits at `<root>/bin/<platform>/offgrid` with
//! `<root>/manifest.toml` beside (`--portable` requires one or the other). In portable
//! mode the home is not searched for models: the stick is self-contained. The home is
//! `--home` / `OFFGRID_HOME`, default `~/.offgrid`; its current release is read through
//! [`Locations::home_tree`] and its pinned keys through [`pinned_policy`].
//! Known gap: the home is the update area's (SPEC.md §7, [`crate::update::Home`]); it is
//! read without taking its lock (an update flips `state.json` atomically, so a reader
//! sees the old or the new release).

use std::fs;
use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, MANIFEST_FILE};
use crate::platform::Platform;
use crate::signed::{self, HeadError};
use crate::trust::TrustPolicy;
use crate::update::{Home, UpdateError};

use super::ModelError;

/// Where a model was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Stick,
    ModelsDir,
    Home,
    Path,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Stick => "stick",
            Origin::ModelsDir => "models-dir",
            Origin::Home => "home",
            Origin::Path => "path",
        })
    }
}

/// How portable mode was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Portable {
    /// Not asked: on only when the binary sits on a stick.
    Auto,
    /// `--portable` without `--stick`: the binary must sit on a stick.
    Required,
    /// `--stick ROOT` or `OFFGRID_PORTABLE=ROOT`.
    Root(PathBuf),
}

/// The places models are looked for, in resolution order.
#[derive(Debug, Clone, Default)]
pub struct Locations {
    /// The stick's root (portable mode).
    pub stick: Option<PathBuf>,
    /// `--models-dir` / `OFFGRID_MODELS_DIR`.
    pub models_dir: Option<PathBuf>,
    /// The home, when it is searched (not in portable mode).
    pub home: Option<PathBuf>,
    /// The home whose pinned keys are trusted (also in portable mode).
    pub trust_home: Option<PathBuf>,
}

/// The default home: `~/.offgrid` (`%USERPROFILE%\.offgrid` on Windows).
pub fn default_home() -> Option<PathBuf> {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(|h| PathBuf::from(h).join(".offgrid"))
}

/// The stick root the running binary sits on, if it does: `<root>/bin/<platform>/offgrid`
/// with `<root>/manifest.toml`.
pub fn stick_of_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let exe = fs::canonicalize(&exe).unwrap_or(exe);
    stick_of(&exe)
}

/// The stick root of an executable path (see [`stick_of_exe`]).
pub fn stick_of(exe: &Path) -> Option<PathBuf> {
    let plat_dir = exe.parent()?;
    plat_dir.file_name()?.to_str()?.parse::<Platform>().ok()?;
    let bin = plat_dir.parent()?;
    if bin.file_name()? != "bin" {
        return None;
    }
    let root = bin.parent()?;
    root.join(MANIFEST_FILE)
        .is_file()
        .then(|| root.to_path_buf())
}

impl Locations {
    /// Works out the locations from the flags and environment already merged by the CLI.
    pub fn find(
        portable: Portable,
        models_dir: Option<PathBuf>,
        home: Option<PathBuf>,
    ) -> Result<Locations, ModelError> {
        let stick = match portable {
            Portable::Root(r) => {
                if !r.join(MANIFEST_FILE).is_file() {
                    return Err(ModelError::NotATree {
                        path: r.display().to_string(),
                    });
                }
                Some(r)
            }
            Portable::Required => Some(stick_of_exe().ok_or(ModelError::NoStick)?),
            Portable::Auto => stick_of_exe(),
        };
        let home = home.or_else(default_home);
        Ok(Locations {
            home: if stick.is_some() { None } else { home.clone() },
            trust_home: home,
            stick,
            models_dir,
        })
    }

    /// The root of the home's current release, when something is installed there.
    pub fn home_tree(&self) -> Option<PathBuf> {
        self.home_trees().into_iter().next()
    }

    /// The roots of the current releases of every bundle installed in the home (SPEC.md
    /// §7.5), the home root's first.
    pub fn home_trees(&self) -> Vec<PathBuf> {
        let Some(home) = self.home.as_ref() else {
            return Vec::new();
        };
        Home::resolve(Some(home))
            .members()
            .iter()
            .filter_map(|m| home_release(&m.root))
            .collect()
    }

    /// The searched places, for messages.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if let Some(s) = &self.stick {
            v.push(format!("stick '{}'", s.display()));
        }
        if let Some(d) = &self.models_dir {
            v.push(format!("models folder '{}'", d.display()));
        }
        if let Some(h) = &self.home {
            match self.home_tree() {
                Some(_) => v.push(format!("home '{}'", h.display())),
                None => v.push(format!("home '{}' (nothing installed)", h.display())),
            }
        }
        if v.is_empty() {
            "nowhere: no stick, models folder or home".into()
        } else {
            v.join(", ")
        }
    }
}

/// The current release tree of an installed home: `HOME/versions/DIR`, DIR being the
/// state's current version (SPEC.md §7, read through [`crate::update::Home`]), else the
/// `HOME/current` link; `None` when nothing is installed or the state is unreadable.
pub fn home_release(home: &Path) -> Option<PathBuf> {
    let h = Home::resolve(Some(home));
    if let Ok(Some(s)) = h.read_state() {
        let root = h.version_dir(&s.current.dir);
        if root.join(MANIFEST_FILE).is_file() {
            return Some(root);
        }
    }
    let cur = home.join("current");
    cur.join(MANIFEST_FILE).is_file().then_some(cur)
}

/// The trust policy pinned in a home at install (SPEC.md §7), if something is installed.
pub fn pinned_policy(home: &Path) -> Result<Option<TrustPolicy>, UpdateError> {
    pinned_policy_of(&Home::resolve(Some(home)))
}

/// The trust policy pinned for the bundle whose release folder holds `tree` in the home
/// `home` (each bundle of a home pins its own keys, SPEC.md §7.5); the home root's for a
/// tree elsewhere (a stick, a models folder).
pub fn pinned_policy_for(home: &Path, tree: &Path) -> Result<Option<TrustPolicy>, UpdateError> {
    let root = Home::resolve(Some(home));
    let h = root
        .members()
        .into_iter()
        .find(|m| tree.starts_with(m.versions()))
        .unwrap_or(root);
    pinned_policy_of(&h)
}

fn pinned_policy_of(h: &Home) -> Result<Option<TrustPolicy>, UpdateError> {
    match h.read_state()? {
        Some(s) => Ok(Some(h.policy(&s)?)),
        None => Ok(None),
    }
}

/// A signed tree: its root, manifest and the manifest's exact bytes.
#[derive(Debug, Clone)]
pub struct Tree {
    pub root: PathBuf,
    pub origin: Origin,
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
}

impl Tree {
    /// Reads and validates `<root>/manifest.toml`, bounded, without checking a signature
    /// (the model list needs it before any key is known).
    pub fn open(root: &Path, origin: Origin) -> Result<Tree, ModelError> {
        let mp = root.join(MANIFEST_FILE);
        if !mp.is_file() {
            return Err(ModelError::NotATree {
                path: root.display().to_string(),
            });
        }
        let (manifest, bytes) = signed::read_unverified(root).map_err(|e| match e {
            HeadError::Manifest { path, source } => ModelError::Manifest { path, source },
            e => ModelError::Head(e),
        })?;
        Ok(Tree {
            root: root.to_path_buf(),
            origin,
            manifest,
            manifest_bytes: bytes,
        })
    }

    /// The `signatures/*.minisig` files as (file name, text), sorted by name, read with
    /// the head reader's bounds; none at all is an empty list (the trust check refuses).
    pub fn signatures(&self) -> Result<Vec<(String, String)>, ModelError> {
        match signed::read_signatures(&self.root) {
            Ok(s) => Ok(s),
            Err(HeadError::Unsigned { .. }) => Ok(Vec::new()),
            Err(e) => Err(ModelError::Head(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_stick_from_the_binary_path() {
        let d = tempfile::tempdir().unwrap();
        let exe = d.path().join("bin/linux-x86_64/offgrid");
        fs::create_dir_all(exe.parent().unwrap()).unwrap();
        fs::write(&exe, b"").unwrap();
        assert_eq!(stick_of(&exe), None);
        fs::write(d.path().join(MANIFEST_FILE), b"").unwrap();
        assert_eq!(stick_of(&exe).as_deref(), Some(d.path()));
        let other = d.path().join("bin/not-a-platform/offgrid");
        assert_eq!(stick_of(&other), None);
    }
}
