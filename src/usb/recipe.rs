//! The release recipe (`offgrid.toml`): a TOML file naming everything a release carries,
//! so that HQ can pack the same release onto many sticks, and make update packs, from
//! one reviewed file. SPEC.md §6 is normative; `formats/offgrid.toml` a full example.
//!
//! This file only reads the TOML (bounded, unknown fields refused) and resolves relative
//! paths against the recipe's folder; [`super::inputs`] validates the values.
//! Known gap: no `include` of other recipes, no variables.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::PackError;

/// Largest recipe accepted (bytes).
pub const MAX_RECIPE_BYTES: u64 = 1 << 20;

/// One `[[models]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecipeModel {
    /// The model's name on the stick (`offgrid run NAME`); default: the file name
    /// without its extension.
    pub name: Option<String>,
    /// The GGUF file, relative to the recipe's folder.
    pub file: PathBuf,
}

/// One `[[files]]` entry: a file or a folder carried at `dest` (SPEC.md §18.1).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    /// Its bundle path (a file's path, or the folder the source folder becomes).
    pub dest: String,
    /// The file or folder, relative to the recipe's folder.
    pub src: PathBuf,
    /// `program`, `library`, `data`, `document` or `model` (default `data`).
    pub kind: Option<String>,
    /// The platform tag of a program or library.
    pub platform: Option<String>,
    /// Permission bits of a file (default: the source's).
    pub mode: Option<u32>,
    /// For a program: the command name the site's PATH gets.
    pub command: Option<String>,
}

/// A parsed recipe, with every path made relative to the current directory.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    pub bundle_id: Option<String>,
    pub release: Option<String>,
    pub default_model: Option<String>,
    pub changelog: Option<PathBuf>,
    #[serde(default)]
    pub signers: Vec<PathBuf>,
    #[serde(default)]
    pub models: Vec<RecipeModel>,
    /// Platform tag → executable.
    #[serde(default)]
    pub binaries: BTreeMap<String, PathBuf>,
    /// Include the running offgrid for the host platform when `binaries` has none for
    /// it (default true).
    pub host_binary: Option<bool>,
    /// Any other payload: files and folders (SPEC.md §18.1).
    #[serde(default)]
    pub files: Vec<RecipeFile>,
}

impl Recipe {
    /// Reads and parses the recipe at `path`, resolving relative paths against its folder.
    pub fn load(path: &Path) -> Result<Recipe, PackError> {
        let shown = path.display().to_string();
        let f = crate::hash::open_regular(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                PackError::InputMissing {
                    what: "recipe".into(),
                    path: shown.clone(),
                    hint: "",
                }
            } else {
                PackError::InputRead {
                    what: "recipe".into(),
                    path: shown.clone(),
                    source: e,
                }
            }
        })?;
        let mut bytes = Vec::new();
        f.take(MAX_RECIPE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| PackError::InputRead {
                what: "recipe".into(),
                path: shown.clone(),
                source,
            })?;
        if bytes.len() as u64 > MAX_RECIPE_BYTES {
            return Err(PackError::Recipe {
                path: shown,
                reason: format!("it is larger than {MAX_RECIPE_BYTES} bytes"),
            });
        }
        let mut r = Recipe::parse(&bytes).map_err(|reason| PackError::Recipe {
            path: shown,
            reason,
        })?;
        let base = crate::fsutil::parent_dir(path);
        r.resolve(&base);
        Ok(r)
    }

    /// Parses recipe text (paths left as written).
    pub fn parse(bytes: &[u8]) -> Result<Recipe, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    fn resolve(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(c) = &mut self.changelog {
            fix(c);
        }
        self.signers.iter_mut().for_each(fix);
        self.models.iter_mut().for_each(|m| fix(&mut m.file));
        self.binaries.values_mut().for_each(fix);
        self.files.iter_mut().for_each(|f| fix(&mut f.src));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_recipe_parses() {
        let text = include_str!("../../formats/offgrid.toml");
        let r = Recipe::parse(text.as_bytes()).unwrap();
        assert_eq!(r.bundle_id.as_deref(), Some("org.example.clinic"));
        assert!(!r.models.is_empty());
        assert!(!r.binaries.is_empty());
        assert!(!r.signers.is_empty());
    }

    #[test]
    fn refuses_unknown_fields() {
        let e = Recipe::parse(b"release = \"1\"\nmodel = []\n").unwrap_err();
        assert!(e.contains("model"), "{e}");
    }

    #[test]
    fn resolves_relative_paths_against_the_recipe() {
        let mut r = Recipe::parse(
            b"changelog = \"c.md\"\nsigners = [\"/abs/k\"]\n[[models]]\nfile = \"m/a.gguf\"\n",
        )
        .unwrap();
        r.resolve(Path::new("/r"));
        assert_eq!(r.changelog.as_deref(), Some(Path::new("/r/c.md")));
        assert_eq!(r.signers[0], Path::new("/abs/k"));
        assert_eq!(r.models[0].file, Path::new("/r/m/a.gguf"));
    }
}
