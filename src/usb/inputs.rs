//! What a release is made of, validated: bundle id, version, named models, one binary per
//! platform, changelog, default model and signing keys. Built from a recipe
//! ([`ReleaseInputs::from_recipe`]), from command-line flags ([`ReleaseInputs::from_flags`]),
//! or both (flags override the recipe's single values and add to its lists).
//!
//! `pack-usb` and `create-update-pack` take the same inputs through this type. Every
//! check that needs no file content runs here, before any work: files exist and are
//! regular files, names fit FAT32/exFAT/NTFS, no two models or binaries collide, the
//! version and platforms parse, the default model exists, at least one signer.
//! GGUF headers are read later, by [`super::layout::plan`].
//! Known gap: a model's name is limited by FAT rules only (spaces are allowed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::manifest;
use crate::paths;
use crate::platform::Platform;
use crate::version::Version;

use super::recipe::Recipe;
use super::{PackError, MODELS_DIR};

/// The bundle id used when neither the recipe nor `--bundle-id` names one.
pub const DEFAULT_BUNDLE_ID: &str = "org.offgrid.release";

/// One model of the release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInput {
    /// Its name on the stick (`offgrid run NAME`); the file is `models/NAME.gguf`.
    pub name: String,
    /// Where it is read from.
    pub source: PathBuf,
}

impl ModelInput {
    /// The model's bundle path, `models/NAME.gguf`.
    pub fn bundle_path(&self) -> String {
        format!("{MODELS_DIR}/{}.gguf", self.name)
    }
}

/// A release's validated inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInputs {
    pub bundle_id: String,
    pub release: Version,
    /// In the order given; names unique ignoring ASCII case.
    pub models: Vec<ModelInput>,
    /// One executable per platform.
    pub binaries: BTreeMap<Platform, PathBuf>,
    pub changelog: Option<PathBuf>,
    /// Always one of `models` when there are models (default: the first one).
    pub default_model: Option<String>,
    /// Secret key files, at least one, each once.
    pub signers: Vec<PathBuf>,
}

/// Raw command-line inputs, before validation (`--recipe` is optional).
#[derive(Debug, Clone, Default)]
pub struct Flags {
    pub recipe: Option<PathBuf>,
    /// `FILE` or `NAME=FILE`.
    pub models: Vec<String>,
    /// `PLATFORM=FILE`.
    pub binaries: Vec<String>,
    pub release: Option<String>,
    pub bundle_id: Option<String>,
    pub changelog: Option<PathBuf>,
    pub default_model: Option<String>,
    pub signers: Vec<PathBuf>,
    /// Do not add the running offgrid for the host platform.
    pub no_host_binary: bool,
}

/// Splits `NAME=FILE`; a bare `FILE` (or one whose part before `=` looks like a path)
/// has no name.
pub fn split_model_arg(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((name, file)) if !name.is_empty() && !name.contains(['/', '\\']) => (Some(name), file),
        _ => (None, arg),
    }
}

/// The default model name of a file: its file name without the last extension, and
/// without `-0000k-of-0000N` for a shard of a split model (`smol-00001-of-00003.gguf` is
/// `smol`).
pub fn default_model_name(file: &Path) -> String {
    let name = file
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some((prefix, _, _)) = crate::gguf::split::parse_shard_name(&name) {
        return prefix.to_owned();
    }
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A model given as a folder: the first shard of the one split model it holds.
fn first_shard_in(dir: &Path) -> Result<PathBuf, PackError> {
    let bad = |reason: String| PackError::ModelFolder {
        path: dir.display().to_string(),
        reason,
    };
    let rd = std::fs::read_dir(dir).map_err(|source| PackError::InputRead {
        what: "model folder".into(),
        path: dir.display().to_string(),
        source,
    })?;
    let mut firsts: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(crate::gguf::split::parse_shard_name)
                .is_some_and(|(_, k, _)| k == 1)
        })
        .collect();
    firsts.sort();
    match firsts.len() {
        1 => Ok(firsts.remove(0)),
        0 => Err(bad("it holds no file named NAME-00001-of-0000N.gguf".into())),
        _ => Err(bad(format!(
            "it holds {} split models; give one first shard",
            firsts.len()
        ))),
    }
}

fn check_input_file(what: String, path: &Path, hint: &'static str) -> Result<(), PackError> {
    let shown = path.display().to_string();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(PackError::InputNotFile { what, path: shown }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(PackError::InputMissing {
            what,
            path: shown,
            hint,
        }),
        Err(source) => Err(PackError::InputRead {
            what,
            path: shown,
            source,
        }),
    }
}

impl ReleaseInputs {
    /// Inputs from a recipe alone (the running offgrid is added for the host platform
    /// unless the recipe says `host_binary = false`).
    pub fn from_recipe(path: &Path) -> Result<ReleaseInputs, PackError> {
        ReleaseInputs::from_flags(&Flags {
            recipe: Some(path.to_path_buf()),
            ..Flags::default()
        })
    }

    /// Inputs from flags, on top of `flags.recipe` when given.
    pub fn from_flags(flags: &Flags) -> Result<ReleaseInputs, PackError> {
        let recipe = match &flags.recipe {
            Some(p) => Some(Recipe::load(p)?),
            None => None,
        };
        let r = recipe.as_ref();

        let release_text = flags
            .release
            .clone()
            .or_else(|| r.and_then(|r| r.release.clone()))
            .ok_or(PackError::NoRelease)?;
        let release: Version = release_text.parse()?;

        let bundle_id = flags
            .bundle_id
            .clone()
            .or_else(|| r.and_then(|r| r.bundle_id.clone()))
            .unwrap_or_else(|| DEFAULT_BUNDLE_ID.to_owned());
        manifest::check_bundle_id(&bundle_id).map_err(|_| PackError::BadArg {
            what: "bundle id",
            value: bundle_id.clone(),
            reason: "it must be 1-128 characters of letters, digits, '.', '_' or '-'".into(),
            help: "use a reverse domain name such as org.example.clinic",
        })?;

        // Models: the recipe's, then the flags'.
        let mut raw: Vec<(Option<String>, PathBuf)> = Vec::new();
        if let Some(r) = r {
            raw.extend(r.models.iter().map(|m| (m.name.clone(), m.file.clone())));
        }
        for m in &flags.models {
            let (name, file) = split_model_arg(m);
            raw.push((name.map(str::to_owned), PathBuf::from(file)));
        }
        let mut models: Vec<ModelInput> = Vec::new();
        for (name, source) in raw {
            let source = if source.is_dir() {
                first_shard_in(&source)?
            } else {
                source
            };
            let name = name.unwrap_or_else(|| default_model_name(&source));
            if name.is_empty() {
                return Err(PackError::BadModelName {
                    name,
                    source: paths::PathError::Illegal {
                        path: source.display().to_string(),
                        reason: "gives an empty model name".into(),
                        help: "name the model with NAME=FILE",
                    },
                });
            }
            let m = ModelInput { name, source };
            paths::check_component(&m.name, &m.name)
                .and_then(|_| paths::check_bundle_path(&m.bundle_path()))
                .map_err(|source| PackError::BadModelName {
                    name: m.name.clone(),
                    source,
                })?;
            if let Some(prev) = models.iter().find(|p| p.name.eq_ignore_ascii_case(&m.name)) {
                return Err(PackError::DuplicateName {
                    what: "models",
                    name: m.name.clone(),
                    a: prev.source.display().to_string(),
                    b: m.source.display().to_string(),
                });
            }
            check_input_file(
                format!("model '{}'", m.name),
                &m.source,
                " (a model is given as FILE or NAME=FILE)",
            )?;
            models.push(m);
        }

        // Binaries: the recipe's, then the flags'.
        let mut raw_bins: Vec<(String, PathBuf)> = Vec::new();
        if let Some(r) = r {
            raw_bins.extend(r.binaries.iter().map(|(p, f)| (p.clone(), f.clone())));
        }
        for b in &flags.binaries {
            let (p, f) = b.split_once('=').ok_or_else(|| PackError::BadArg {
                what: "--binary",
                value: b.clone(),
                reason: "it is not PLATFORM=FILE".into(),
                help: "write it as --binary linux-x86_64=path/to/offgrid",
            })?;
            raw_bins.push((p.to_owned(), PathBuf::from(f)));
        }
        let mut binaries: BTreeMap<Platform, PathBuf> = BTreeMap::new();
        for (p, file) in raw_bins {
            let platform: Platform = p.parse()?;
            if let Some(prev) = binaries.get(&platform) {
                return Err(PackError::DuplicatePlatform {
                    platform: platform.to_string(),
                    a: prev.display().to_string(),
                    b: file.display().to_string(),
                });
            }
            check_input_file(format!("binary for {platform}"), &file, "")?;
            binaries.insert(platform, file);
        }
        let host_binary = !flags.no_host_binary && r.and_then(|r| r.host_binary).unwrap_or(true);
        if host_binary {
            let host = Platform::host();
            if host.to_string().parse::<Platform>().is_ok() && !binaries.contains_key(&host) {
                let exe = std::env::current_exe().map_err(|source| PackError::InputRead {
                    what: "the running offgrid".into(),
                    path: "current_exe".into(),
                    source,
                })?;
                binaries.insert(host, exe);
            }
        }

        let changelog = flags
            .changelog
            .clone()
            .or_else(|| r.and_then(|r| r.changelog.clone()));
        if let Some(c) = &changelog {
            check_input_file("changelog".into(), c, "")?;
        }

        let default_model = match flags
            .default_model
            .clone()
            .or_else(|| r.and_then(|r| r.default_model.clone()))
        {
            Some(d) => match models.iter().find(|m| m.name == d) {
                Some(m) => Some(m.name.clone()),
                None => {
                    let available = if models.is_empty() {
                        "no models".to_owned()
                    } else {
                        models
                            .iter()
                            .map(|m| m.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    return Err(PackError::UnknownDefaultModel { name: d, available });
                }
            },
            None => models.first().map(|m| m.name.clone()),
        };

        let mut signers: Vec<PathBuf> = r.map(|r| r.signers.clone()).unwrap_or_default();
        signers.extend(flags.signers.iter().cloned());
        if signers.is_empty() {
            return Err(PackError::NoSigner);
        }
        for s in &signers {
            check_input_file(
                "secret key".into(),
                s,
                " (make a key pair with `offgrid keygen`)",
            )?;
        }

        Ok(ReleaseInputs {
            bundle_id,
            release,
            models,
            binaries,
            changelog,
            default_model,
            signers,
        })
    }

    /// Every input file (models, binaries, changelog), for the output == input check.
    pub fn source_files(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.models.iter().map(|m| m.source.as_path()).collect();
        v.extend(self.binaries.values().map(PathBuf::as_path));
        v.extend(self.changelog.as_deref());
        v.extend(self.signers.iter().map(PathBuf::as_path));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_model_args() {
        assert_eq!(split_model_arg("a.gguf"), (None, "a.gguf"));
        assert_eq!(split_model_arg("tiny=a.gguf"), (Some("tiny"), "a.gguf"));
        assert_eq!(split_model_arg("dir/x=y.gguf"), (None, "dir/x=y.gguf"));
        assert_eq!(split_model_arg("=y.gguf"), (None, "=y.gguf"));
        assert_eq!(default_model_name(Path::new("m/q4.v2.gguf")), "q4.v2");
    }

    fn touch(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, b"x").unwrap();
        p
    }

    #[test]
    fn flags_are_validated() {
        let d = tempfile::tempdir().unwrap();
        let a = touch(d.path(), "a.gguf");
        let key = touch(d.path(), "k.key");
        let base = Flags {
            models: vec![a.display().to_string()],
            release: Some("1.2".into()),
            signers: vec![key.clone()],
            ..Flags::default()
        };
        let i = ReleaseInputs::from_flags(&base).unwrap();
        assert_eq!(i.models[0].name, "a");
        assert_eq!(i.default_model.as_deref(), Some("a"));
        assert_eq!(i.bundle_id, DEFAULT_BUNDLE_ID);
        assert!(i.binaries.contains_key(&Platform::host()));

        let mut f = base.clone();
        f.models.push(format!("A={}", a.display()));
        assert!(matches!(
            ReleaseInputs::from_flags(&f),
            Err(PackError::DuplicateName { .. })
        ));
        let mut f = base.clone();
        f.models = vec![format!("aux={}", a.display())];
        assert!(matches!(
            ReleaseInputs::from_flags(&f),
            Err(PackError::BadModelName { .. })
        ));
        let mut f = base.clone();
        f.signers.clear();
        assert!(matches!(
            ReleaseInputs::from_flags(&f),
            Err(PackError::NoSigner)
        ));
        let mut f = base.clone();
        f.release = Some("1.x".into());
        assert!(matches!(
            ReleaseInputs::from_flags(&f),
            Err(PackError::Version(_))
        ));
        let mut f = base.clone();
        f.binaries = vec![format!("linux-amd64={}", a.display())];
        assert!(matches!(
            ReleaseInputs::from_flags(&f),
            Err(PackError::Platform(_))
        ));
        let mut f = base;
        f.default_model = Some("b".into());
        assert!(matches!(
            ReleaseInputs::from_flags(&f),
            Err(PackError::UnknownDefaultModel { .. })
        ));
    }
}
