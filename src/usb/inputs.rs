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

use crate::manifest::{self, FileKind, ModelFormat};
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
    /// Where it is read from (a folder for a safetensors model).
    pub source: PathBuf,
    /// GGUF, a safetensors folder or an ONNX file (SPEC.md §18.4).
    pub format: ModelFormat,
}

impl ModelInput {
    /// The model's bundle path: `models/NAME.gguf`, `models/NAME.onnx`, or the folder
    /// `models/NAME` of a safetensors model.
    pub fn bundle_path(&self) -> String {
        match self.format {
            ModelFormat::Gguf => format!("{MODELS_DIR}/{}.gguf", self.name),
            ModelFormat::Onnx => format!("{MODELS_DIR}/{}.onnx", self.name),
            ModelFormat::Safetensors => format!("{MODELS_DIR}/{}", self.name),
        }
    }
}

/// One file or folder of any payload (`--add`, `[[files]]`; SPEC.md §18.1), validated
/// except for its content (walked by [`super::layout::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddInput {
    /// Its bundle path (checked by the path rules).
    pub dest: String,
    /// A file or a folder.
    pub src: PathBuf,
    pub kind: FileKind,
    pub platform: Option<Platform>,
    /// Permission bits of a file (a folder keeps its files' own).
    pub mode: Option<u32>,
    /// For a program: its command name.
    pub command: Option<String>,
}

/// The kinds `--add` and `[[files]]` take, as written.
pub const ADD_KINDS: &str = "program, library, data, document, model";

/// The raw form of one payload entry, from a flag or the recipe.
#[derive(Debug, Clone, Default)]
struct RawAdd {
    dest: String,
    src: PathBuf,
    kind: Option<String>,
    platform: Option<String>,
    mode: Option<String>,
    command: Option<String>,
    /// How the entry was given, for messages (`--add …` or `recipe [[files]] n`).
    origin: String,
}

/// Parses `--add DEST=SRC[,kind=K][,platform=P][,mode=OCTAL][,command=NAME]`: trailing
/// comma-separated `key=value` options with a known key are options, the rest is SRC.
fn parse_add_flag(arg: &str) -> Result<RawAdd, PackError> {
    let bad = |reason: &str| {
        PackError::BadArg {
        what: "--add",
        value: crate::excerpt::excerpt(arg),
        reason: reason.into(),
        help: "write it as --add DEST=SRC[,kind=program|library|data|document|model][,platform=OS-CPU][,mode=755][,command=NAME]",
    }
    };
    let (dest, rest) = arg
        .split_once('=')
        .ok_or_else(|| bad("it is not DEST=SRC"))?;
    let mut raw = RawAdd {
        dest: dest.to_owned(),
        origin: format!("--add {}", crate::excerpt::excerpt(arg)),
        ..RawAdd::default()
    };
    let mut src = rest;
    while let Some((head, opt)) = src.rsplit_once(',') {
        let Some((k, v)) = opt.split_once('=') else {
            break;
        };
        let slot = match k {
            "kind" => &mut raw.kind,
            "platform" => &mut raw.platform,
            "mode" => &mut raw.mode,
            "command" => &mut raw.command,
            _ => break,
        };
        if slot.is_some() {
            return Err(bad(&format!("option '{k}' is given twice")));
        }
        *slot = Some(v.to_owned());
        src = head;
    }
    if dest.is_empty() || src.is_empty() {
        return Err(bad("DEST and SRC must not be empty"));
    }
    raw.src = PathBuf::from(src);
    Ok(raw)
}

/// Reads permission bits written in octal (`755`, `0755`, `0o755`).
fn parse_mode(text: &str) -> Option<u32> {
    let t = text.strip_prefix("0o").unwrap_or(text);
    u32::from_str_radix(t, 8).ok().filter(|m| *m <= 0o777)
}

fn parse_kind(text: &str) -> Option<FileKind> {
    Some(match text {
        "program" => FileKind::Program,
        "library" => FileKind::Library,
        "data" => FileKind::Data,
        "document" => FileKind::Document,
        "model" => FileKind::Model,
        _ => return None,
    })
}

/// Validates one raw payload entry (everything but its content).
fn check_add(raw: RawAdd) -> Result<AddInput, PackError> {
    let bad = |reason: String, help: &'static str| PackError::BadAdd {
        origin: raw.origin.clone(),
        reason,
        help,
    };
    let kind = match raw.kind.as_deref() {
        None => FileKind::Data,
        Some(k) => parse_kind(k).ok_or_else(|| {
            bad(
                format!(
                    "kind '{}' is not one of {ADD_KINDS}",
                    crate::excerpt::excerpt(k)
                ),
                "pick the kind that says what the file is for",
            )
        })?,
    };
    let platform = match raw.platform.as_deref() {
        None => None,
        Some(_) if !kind.is_per_platform() => {
            return Err(bad(
                "only a program or a library names a platform".into(),
                "drop the platform, or give kind program or library",
            ))
        }
        Some(p) => Some(p.parse::<Platform>()?),
    };
    let mode = match raw.mode.as_deref() {
        None => None,
        Some(m) => Some(parse_mode(m).ok_or_else(|| {
            bad(
                format!(
                    "mode '{}' is not permission bits in octal (at most 777)",
                    crate::excerpt::excerpt(m)
                ),
                "write the mode in octal: 755 on the command line, 0o755 in the recipe",
            )
        })?),
    };
    if let Some(c) = &raw.command {
        if kind != FileKind::Program {
            return Err(bad(
                "only a program declares a command".into(),
                "give kind program, or drop the command",
            ));
        }
        manifest::check_command_name(c).map_err(|r| {
            bad(
                format!("command {r}"),
                "name the command like a file, e.g. triage-cli",
            )
        })?;
    }
    paths::check_bundle_path(&raw.dest)?;
    if raw.dest == manifest::MANIFEST_FILE
        || raw.dest == manifest::SIGNATURES_DIR
        || raw.dest.starts_with("signatures/")
    {
        return Err(bad(
            format!(
                "'{}' is reserved for the manifest and its signatures",
                raw.dest
            ),
            "carry it at another path",
        ));
    }
    let meta = std::fs::symlink_metadata(&raw.src).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            PackError::InputMissing {
                what: raw.origin.clone(),
                path: raw.src.display().to_string(),
                hint: "",
            }
        } else {
            PackError::InputRead {
                what: raw.origin.clone(),
                path: raw.src.display().to_string(),
                source: e,
            }
        }
    })?;
    if meta.file_type().is_symlink() {
        return Err(PackError::Symlink {
            path: raw.src.display().to_string(),
        });
    }
    if meta.is_dir() {
        if raw.mode.is_some() {
            return Err(bad(
                "a folder keeps its files' own modes; mode is for a file".into(),
                "set the modes on the files in the folder, or add the file on its own",
            ));
        }
        if raw.command.is_some() {
            return Err(bad(
                "a command names one program file, not a folder".into(),
                "add the program file on its own with command=NAME",
            ));
        }
    } else if !meta.is_file() {
        return Err(PackError::InputNotFile {
            what: raw.origin.clone(),
            path: raw.src.display().to_string(),
        });
    }
    Ok(AddInput {
        dest: raw.dest,
        src: raw.src,
        kind,
        platform,
        mode,
        command: raw.command,
    })
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
    /// Any other payload (`--add`, `[[files]]`), in the order given.
    pub adds: Vec<AddInput>,
    /// A GGUF model of at least this many bytes is written in llama.cpp's split layout
    /// with its metadata alone in shard 1 (SPEC.md §16.2), so that a metadata edit
    /// leaves its tensor shards byte-identical; `None`: never (only the file limit
    /// splits).
    pub split_models_over: Option<u64>,
}

/// The default of `--split-models-over`: 256 MiB. A smaller model gains little from
/// sharing its tensors, and stays one file any tool opens.
pub const DEFAULT_SPLIT_MODELS_OVER: u64 = 256 << 20;

/// Reads a `--split-models-over` / recipe `split_models_over` value: a size (`256M`,
/// `1G`, bytes) or `never`.
pub fn parse_split_models_over(what: &'static str, text: &str) -> Result<Option<u64>, PackError> {
    if text.trim().eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    match crate::units::parse_size(text) {
        Ok(0) => Err(PackError::BadArg {
            what,
            value: text.chars().take(40).collect(),
            reason: "it is zero".into(),
            help: "give a size such as 256M or 1G, or 'never' to keep every model that fits the medium one file",
        }),
        Ok(n) => Ok(Some(n)),
        Err(reason) => Err(PackError::BadArg {
            what,
            value: text.chars().take(40).collect(),
            reason,
            help: "give a size such as 256M or 1G, or 'never' to keep every model that fits the medium one file",
        }),
    }
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
    /// `DEST=SRC[,kind=K][,platform=P][,mode=OCTAL][,command=NAME]`.
    pub adds: Vec<String>,
    /// The recipe's catalog entries (`NAME@VERSION`) already fetched: their HQ store
    /// objects (`objects/AA/SHA256`, verified), used in place of a local path.
    pub catalog_objects: BTreeMap<String, PathBuf>,
    /// `--split-models-over SIZE|never`.
    pub split_models_over: Option<String>,
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

/// The model name a `kind=model` payload's destination gives: `models/NAME.gguf`,
/// `models/NAME.onnx`, or `models/NAME` for a safetensors folder.
fn model_name_of_dest(a: &AddInput) -> Result<String, PackError> {
    let rest = a.dest.strip_prefix(&format!("{MODELS_DIR}/"));
    let name = if a.src.is_dir() {
        rest
    } else {
        rest.and_then(|n| n.strip_suffix(".gguf").or_else(|| n.strip_suffix(".onnx")))
    };
    name.filter(|n| !n.is_empty() && !n.contains('/'))
        .map(str::to_owned)
        .ok_or_else(|| PackError::BadAdd {
            origin: format!("model at '{}'", a.dest),
            reason: "a model goes to models/NAME.gguf, models/NAME.onnx or (a safetensors folder) models/NAME".into(),
            help: "give such a destination, or use --model NAME=FILE",
        })
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
        let fetched = |reference: &str| {
            flags
                .catalog_objects
                .get(reference)
                .cloned()
                .ok_or_else(|| PackError::BadArg {
                    what: "recipe catalog entry",
                    value: reference.to_owned(),
                    reason: "the recipe names a catalog entry and no catalog was given".into(),
                    help: "pass --catalog FILE|URL (with --pubkey or --trust for a signed catalog), or give `file`/`src`",
                })
        };
        if let Some(r) = r {
            for m in &r.models {
                match (&m.catalog, &m.file) {
                    (Some(c), _) => {
                        // Named after the entry: the object's file name is its sha256.
                        let entry = c.split_once('@').map_or(c.as_str(), |(n, _)| n);
                        raw.push((
                            m.name.clone().or_else(|| Some(entry.to_owned())),
                            fetched(c)?,
                        ));
                    }
                    (None, Some(f)) => raw.push((m.name.clone(), f.clone())),
                    (None, None) => {}
                }
            }
        }
        for m in &flags.models {
            let (name, file) = split_model_arg(m);
            raw.push((name.map(str::to_owned), PathBuf::from(file)));
        }
        // Any payload: the recipe's, then the flags'. A model given this way joins the
        // models under the name its destination gives.
        let mut raw_adds: Vec<RawAdd> = Vec::new();
        if let Some(r) = r {
            for (i, f) in r.files.iter().enumerate() {
                let src = match (&f.catalog, &f.src) {
                    (Some(c), _) => fetched(c)?,
                    (None, Some(p)) => p.clone(),
                    (None, None) => continue,
                };
                raw_adds.push(RawAdd {
                    dest: f.dest.clone(),
                    src,
                    kind: f.kind.clone(),
                    platform: f.platform.clone(),
                    mode: f.mode.map(|m| format!("{m:o}")),
                    command: f.command.clone(),
                    origin: format!("recipe [[files]] {} (dest '{}')", i + 1, f.dest),
                });
                if f.mode.is_some_and(|m| m > 0o777) {
                    return Err(PackError::BadAdd {
                        origin: format!("recipe [[files]] {} (dest '{}')", i + 1, f.dest),
                        reason: format!("mode {} is more than 0o777", f.mode.unwrap_or(0)),
                        help: "write the mode as a TOML octal number: mode = 0o755",
                    });
                }
            }
        }
        for a in &flags.adds {
            raw_adds.push(parse_add_flag(a)?);
        }
        let mut adds: Vec<AddInput> = Vec::new();
        for ra in raw_adds {
            let a = check_add(ra)?;
            if a.kind == FileKind::Model {
                raw.push((Some(model_name_of_dest(&a)?), a.src));
                continue;
            }
            adds.push(a);
        }

        let mut models: Vec<ModelInput> = Vec::new();
        for (name, source) in raw {
            let (source, format) = if source.is_dir() {
                if crate::models::formats::is_safetensors_folder(&source) {
                    (source, ModelFormat::Safetensors)
                } else {
                    (first_shard_in(&source)?, ModelFormat::Gguf)
                }
            } else if source
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("onnx"))
            {
                (source, ModelFormat::Onnx)
            } else {
                (source, ModelFormat::Gguf)
            };
            let name = name.unwrap_or_else(|| match format {
                ModelFormat::Safetensors => source
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                _ => default_model_name(&source),
            });
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
            let m = ModelInput {
                name,
                source,
                format,
            };
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
            if m.format != ModelFormat::Safetensors {
                check_input_file(
                    format!("model '{}'", m.name),
                    &m.source,
                    " (a model is given as FILE or NAME=FILE)",
                )?;
            }
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
                Some(m) if m.format != ModelFormat::Gguf => {
                    return Err(PackError::BadArg {
                        what: "default model",
                        value: d,
                        reason: format!(
                            "it is a {} model, and run starts GGUF models only",
                            m.format.as_str()
                        ),
                        help: "name a GGUF model as the default, or none",
                    })
                }
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
            None => models
                .iter()
                .find(|m| m.format == ModelFormat::Gguf)
                .map(|m| m.name.clone()),
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

        let split_models_over = match (
            &flags.split_models_over,
            r.and_then(|r| r.split_models_over.as_ref()),
        ) {
            (Some(f), _) => parse_split_models_over("--split-models-over", f)?,
            (None, Some(v)) => parse_split_models_over("recipe split_models_over", v)?,
            (None, None) => Some(DEFAULT_SPLIT_MODELS_OVER),
        };
        Ok(ReleaseInputs {
            bundle_id,
            release,
            models,
            binaries,
            changelog,
            default_model,
            signers,
            adds,
            split_models_over,
        })
    }

    /// Every input file (models, binaries, changelog), for the output == input check.
    pub fn source_files(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.models.iter().map(|m| m.source.as_path()).collect();
        v.extend(self.binaries.values().map(PathBuf::as_path));
        v.extend(self.changelog.as_deref());
        v.extend(self.signers.iter().map(PathBuf::as_path));
        v.extend(self.adds.iter().map(|a| a.src.as_path()));
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
    fn split_threshold_defaults_and_parses() {
        assert_eq!(
            parse_split_models_over("--split-models-over", "1G").unwrap(),
            Some(1 << 30)
        );
        assert_eq!(
            parse_split_models_over("--split-models-over", "Never").unwrap(),
            None
        );
        for bad in ["0", "x", "12Q"] {
            assert!(parse_split_models_over("--split-models-over", bad).is_err());
        }
        let d = tempfile::tempdir().unwrap();
        let a = touch(d.path(), "a.gguf");
        let key = touch(d.path(), "k.key");
        let mut f = Flags {
            models: vec![a.display().to_string()],
            release: Some("1.2".into()),
            signers: vec![key],
            ..Flags::default()
        };
        let i = ReleaseInputs::from_flags(&f).unwrap();
        assert_eq!(i.split_models_over, Some(DEFAULT_SPLIT_MODELS_OVER));
        let recipe = d.path().join("r.toml");
        std::fs::write(&recipe, "split_models_over = \"never\"\n").unwrap();
        f.recipe = Some(recipe);
        assert_eq!(
            ReleaseInputs::from_flags(&f).unwrap().split_models_over,
            None
        );
        f.split_models_over = Some("64M".into());
        assert_eq!(
            ReleaseInputs::from_flags(&f).unwrap().split_models_over,
            Some(64 << 20)
        );
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
