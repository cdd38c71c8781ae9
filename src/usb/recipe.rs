//! The release recipe (`offgrid.toml`): a TOML file naming everything a release carries,
//! so that HQ can pack the same release onto many sticks, and make update packs, from
//! one reviewed file. SPEC.md §6 is normative; `formats/offgrid.toml` a full example.
//!
//! This file only reads the TOML (bounded, unknown fields refused) and resolves relative
//! paths against the recipe's folder; [`super::inputs`] validates the values. A model or
//! file may name a catalog entry (`catalog = "NAME@VERSION"`, SPEC.md §6, §14.7) instead
//! of a local path: the caller fetches those into the HQ store first
//! ([`Recipe::catalog_refs`]) and hands their object paths to the inputs.
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
    /// The GGUF file, relative to the recipe's folder (or `catalog`).
    pub file: Option<PathBuf>,
    /// A catalog entry `NAME@VERSION` fetched into the HQ store (or `file`).
    pub catalog: Option<String>,
}

/// One `[[files]]` entry: a file or a folder carried at `dest` (SPEC.md §18.1).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    /// Its bundle path (a file's path, or the folder the source folder becomes).
    pub dest: String,
    /// The file or folder, relative to the recipe's folder (or `catalog`).
    pub src: Option<PathBuf>,
    /// A catalog entry `NAME@VERSION` fetched into the HQ store (or `src`).
    pub catalog: Option<String>,
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
    /// GGUF models of at least this size (`"256M"`) are written with their metadata in
    /// a shard of its own, or `"never"` (SPEC.md §16.2).
    pub split_models_over: Option<String>,
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
        let r: Recipe = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())?;
        for (i, m) in r.models.iter().enumerate() {
            let at = format!("[[models]] {}", i + 1);
            one_source(&at, "file", m.file.is_some(), m.catalog.as_deref())?;
        }
        for (i, f) in r.files.iter().enumerate() {
            let at = format!("[[files]] {} (dest '{}')", i + 1, excerpt(&f.dest));
            one_source(&at, "src", f.src.is_some(), f.catalog.as_deref())?;
        }
        Ok(r)
    }

    /// The catalog entries (`NAME@VERSION`) the recipe names, each once, in order.
    pub fn catalog_refs(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let refs = self.models.iter().filter_map(|m| m.catalog.as_ref());
        for r in refs.chain(self.files.iter().filter_map(|f| f.catalog.as_ref())) {
            if !out.contains(r) {
                out.push(r.clone());
            }
        }
        out
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
        self.models
            .iter_mut()
            .filter_map(|m| m.file.as_mut())
            .for_each(fix);
        self.binaries.values_mut().for_each(fix);
        self.files
            .iter_mut()
            .filter_map(|f| f.src.as_mut())
            .for_each(fix);
    }
}

/// An entry has exactly one of a local path (`field`) and `catalog`, and a catalog
/// reference pins a version: `NAME@VERSION`.
fn one_source(at: &str, field: &str, has_path: bool, catalog: Option<&str>) -> Result<(), String> {
    match (has_path, catalog) {
        (true, Some(_)) => Err(format!("{at}: give `{field}` or `catalog`, not both")),
        (false, None) => Err(format!(
            "{at}: missing `{field}` (or `catalog = \"NAME@VERSION\"`)"
        )),
        (false, Some(c)) => match c.split_once('@') {
            Some((n, v)) if !n.is_empty() && v.parse::<crate::version::Version>().is_ok() => Ok(()),
            _ => Err(format!(
                "{at}: catalog = '{}' is not NAME@VERSION (a recipe pins the version)",
                excerpt(c)
            )),
        },
        (true, None) => Ok(()),
    }
}

fn excerpt(s: &str) -> String {
    crate::excerpt::excerpt(s)
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
        assert_eq!(r.models[0].file.as_deref(), Some(Path::new("/r/m/a.gguf")));
    }

    #[test]
    fn example_catalog_entry_parses_when_uncommented() {
        let text = include_str!("../../formats/offgrid.toml")
            .replace("# [[models]]\n# catalog", "[[models]]\ncatalog");
        let r = Recipe::parse(text.as_bytes()).unwrap();
        assert_eq!(r.catalog_refs(), vec!["smollm2-135m-instruct@1.0.0"]);
    }

    #[test]
    fn catalog_entries_instead_of_files() {
        let r = Recipe::parse(
            b"[[models]]\ncatalog = \"tiny@1.0\"\n[[files]]\ndest = \"docs/a.pdf\"\ncatalog = \"guide@2\"\n[[files]]\ndest = \"docs/b.pdf\"\ncatalog = \"tiny@1.0\"\n",
        )
        .unwrap();
        assert_eq!(r.catalog_refs(), vec!["tiny@1.0", "guide@2"]);
        let e = |t: &str| Recipe::parse(t.as_bytes()).unwrap_err();
        assert!(e("[[models]]\nfile = \"a.gguf\"\ncatalog = \"a@1\"\n").contains("not both"));
        assert!(e("[[models]]\nname = \"a\"\n").contains("missing `file`"));
        assert!(e("[[models]]\ncatalog = \"tiny\"\n").contains("NAME@VERSION"));
        assert!(e("[[files]]\ndest = \"x\"\n").contains("missing `src`"));
    }
}
