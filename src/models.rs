//! Finding models (on the stick, in a models folder, in the installed home), checking a
//! model file against its signed manifest entry, choosing the best quantization that fits
//! this machine's RAM, and describing models for `offgrid models`. Builds without
//! llama.cpp; `offgrid run` uses it before handing the chosen file to [`crate::launcher`].
//!
//! Code map: [`locate`] (where the stick, the models folder and the home are; reading a
//! signed tree), [`fit`] (memory estimate and this machine), [`vcache`] (the verification
//! cache), [`template`] (which chat-template family llama.cpp would see). SPEC.md §10 is
//! normative for the resolution order, the estimate, the cache and the exit codes.
//! Known gaps: a models folder is not signed, so its files are never verified; a `NAME:TAG`
//! tag matches the quantization only.

pub mod fit;
pub mod formats;
pub mod locate;
pub mod template;
pub mod vcache;

use std::path::{Path, PathBuf};

use crate::gguf::{self, GgufError, GgufInfo};
use crate::hash::{self, FileCheck, HashError};
use crate::manifest::{FileEntry, ManifestError, ModelFormat};
use crate::trust::{TrustError, TrustPolicy};
use crate::Progress;

pub use fit::{Machine, MemoryEstimate};
pub use locate::{Locations, Origin, Portable, Tree};
pub use vcache::VerifyCache;

/// Why a model could not be found or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model '{name}' not found (searched: {searched})")]
    NotFound {
        name: String,
        searched: String,
        available: String,
    },
    #[error("no model named and no default model (searched: {searched})")]
    NoModelGiven { searched: String, available: String },
    #[error("model '{name}' has no quantization '{tag}' (available: {available})")]
    UnknownTag {
        name: String,
        tag: String,
        available: String,
    },
    #[error("'{path}' is not a stick or release tree: it has no manifest.toml")]
    NotATree { path: String },
    #[error("--portable was given but this offgrid does not run from a stick (expected '<root>/bin/<platform>/offgrid' with '<root>/manifest.toml')")]
    NoStick,
    #[error("cannot read '{path}': {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("manifest '{path}' is not valid")]
    Manifest {
        path: String,
        #[source]
        source: ManifestError,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Head(#[from] crate::signed::HeadError),
    #[error("model file '{path}' does not match the signed manifest: {detail}")]
    Damaged { path: String, detail: String },
    #[error("{0}")]
    DoesNotFit(Box<NoFit>),
    #[error("model '{name}' is a {format} model, which offgrid run cannot start (it runs GGUF models with llama.cpp): {purpose}\n  its files: '{path}'")]
    NotRunnable {
        name: String,
        format: &'static str,
        path: String,
        purpose: String,
    },
    #[error("this offgrid's llama.cpp needs CPU instructions this computer lacks: {missing}")]
    CpuUnsupported { missing: String },
}

impl ModelError {
    /// True for a clean "no" (exit 1) rather than an error: the model does not fit, its
    /// file does not match the signed manifest, or the signatures are not trusted.
    pub fn is_refusal(&self) -> bool {
        match self {
            ModelError::DoesNotFit(_)
            | ModelError::NotRunnable { .. }
            | ModelError::Damaged { .. }
            | ModelError::CpuUnsupported { .. } => true,
            ModelError::Trust(t) => t.is_refusal(),
            ModelError::Head(h) => h.is_refusal(),
            _ => false,
        }
    }
}

/// A refusal to run a model that does not fit (see [`ModelError::DoesNotFit`]).
#[derive(Debug, Clone)]
pub struct NoFit {
    pub name: String,
    pub quantization: Option<String>,
    /// The estimate for the smallest candidate.
    pub need: MemoryEstimate,
    /// Available memory, bytes.
    pub available: u64,
    /// True when `available` comes from `OFFGRID_ASSUME_RAM_MIB`.
    pub assumed: bool,
    /// How many quantizations of the model were considered.
    pub candidates: usize,
}

impl std::fmt::Display for NoFit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = &self.need;
        write!(
            f,
            "model '{}' ({}) does not fit this machine: it needs {} at --ctx {} (weights {} + KV cache {} + overhead {}) but only {} of memory is available",
            self.name,
            self.quantization.as_deref().unwrap_or("unknown quantization"),
            fit::mib(n.total()),
            n.ctx,
            fit::mib(n.weights),
            fit::mib(n.kv_cache),
            fit::mib(n.overhead),
            fit::mib(self.available),
        )?;
        if self.assumed {
            write!(f, " (assumed by {})", fit::ASSUME_RAM_ENV)?;
        }
        if self.candidates > 1 {
            write!(
                f,
                "; this is the smallest of its {} quantizations",
                self.candidates
            )?;
        }
        Ok(())
    }
}

/// One model file offgrid can see.
#[derive(Debug, Clone)]
pub struct ModelFile {
    /// The name `offgrid run NAME` uses: the manifest's `model.name`, or a file's stem.
    pub name: String,
    pub path: PathBuf,
    pub origin: Origin,
    /// Size on disk (the manifest's size if the file is missing).
    pub size: u64,
    /// The GGUF header, when the file could be read.
    pub info: Option<GgufInfo>,
    /// The signed manifest entry, for files of a stick or home tree.
    pub entry: Option<FileEntry>,
    /// Index of the tree in [`Catalog::trees`] the entry belongs to.
    pub tree: Option<usize>,
    /// Why the header could not be read (missing, not GGUF).
    pub problem: Option<String>,
    /// The later shards of a split model (SPEC.md §16.2), with their signed entries;
    /// `path` is the first shard, the one llama.cpp is given.
    pub shards: Vec<(PathBuf, FileEntry)>,
    /// GGUF, or a model `run` cannot start (SPEC.md §18.4): then `path` is the
    /// safetensors folder or the ONNX file, and `size` the sum of its files.
    pub format: ModelFormat,
}

impl ModelFile {
    /// Describes the file at `path` by its header (name = file stem).
    pub fn from_path(path: &Path, origin: Origin) -> Result<ModelFile, ModelError> {
        let meta = std::fs::metadata(path).map_err(|source| ModelError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let info = gguf::read_info(path)?;
        Ok(ModelFile {
            name: name_of_file(path, info.quantization.as_deref()),
            path: path.to_path_buf(),
            origin,
            size: meta.len(),
            info: Some(info),
            entry: None,
            tree: None,
            problem: None,
            shards: Vec::new(),
            format: ModelFormat::Gguf,
        })
    }

    /// True when `offgrid run` can start this model: a GGUF model whose files are there.
    pub fn runnable(&self) -> bool {
        self.format == ModelFormat::Gguf && self.problem.is_none()
    }

    /// Refuses a model `run` cannot start because of its format, saying what it is for.
    pub fn check_runnable(&self) -> Result<(), ModelError> {
        if self.format == ModelFormat::Gguf {
            return Ok(());
        }
        let arch = self.architecture();
        Err(ModelError::NotRunnable {
            name: self.name.clone(),
            format: self.format.as_str(),
            path: self.path.display().to_string(),
            purpose: formats::purpose(self.format, arch.as_deref()),
        })
    }

    /// Quantization from the header, else the manifest.
    pub fn quantization(&self) -> Option<String> {
        self.info
            .as_ref()
            .and_then(|i| i.quantization.clone())
            .or_else(|| {
                self.entry
                    .as_ref()
                    .and_then(|e| e.model.as_ref()?.quantization.clone())
            })
    }

    /// Parameter count from the header, else the manifest.
    pub fn parameters(&self) -> Option<u64> {
        self.info.as_ref().map(|i| i.parameters).or_else(|| {
            self.entry
                .as_ref()
                .and_then(|e| e.model.as_ref()?.parameters)
        })
    }

    /// Training context length from the header, else the manifest.
    pub fn context_length(&self) -> Option<u64> {
        self.info
            .as_ref()
            .and_then(|i| i.context_length)
            .or_else(|| {
                self.entry
                    .as_ref()
                    .and_then(|e| e.model.as_ref()?.context_length)
            })
    }

    /// Architecture from the header, else the manifest.
    pub fn architecture(&self) -> Option<String> {
        self.info
            .as_ref()
            .and_then(|i| i.architecture.clone())
            .or_else(|| {
                self.entry
                    .as_ref()
                    .and_then(|e| e.model.as_ref()?.architecture.clone())
            })
    }

    /// The context size `--ctx` defaults to for this model.
    pub fn default_ctx(&self) -> u64 {
        fit::default_ctx(self.context_length())
    }

    /// The memory this model needs at `ctx` tokens (the default when `None`).
    pub fn estimate(&self, ctx: Option<u64>) -> MemoryEstimate {
        let ctx = ctx.unwrap_or_else(|| self.default_ctx());
        match &self.info {
            Some(i) => fit::estimate(i, self.size, ctx),
            None => fit::estimate(&GgufInfo::default(), self.size, ctx),
        }
    }
}

/// A file's model name: its stem without a trailing `.QUANT` or `-QUANT` naming the
/// header's quantization (`SmolLM2-135M-Instruct.Q4_1.gguf` → `SmolLM2-135M-Instruct`).
fn name_of_file(path: &Path, quant: Option<&str>) -> String {
    let s = stem(path);
    if let Some(q) = quant {
        let lower = s.to_ascii_lowercase();
        let q = q.to_ascii_lowercase();
        for sep in ['.', '-', '_'] {
            let suffix = format!("{sep}{q}");
            if lower.ends_with(&suffix) && lower.len() > suffix.len() {
                return s[..s.len() - suffix.len()].to_owned();
            }
        }
    }
    s
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A model of a signed tree that is not GGUF: its folder (safetensors) or file (ONNX),
/// the size of all its files, and a problem when one of them is missing.
fn other_model(
    tree: &Tree,
    ti: usize,
    e: &FileEntry,
    format: ModelFormat,
    origin: Origin,
) -> ModelFile {
    let name = e.model.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    let rel = match format {
        ModelFormat::Safetensors => format!("{}/{name}", crate::usb::MODELS_DIR),
        _ => e.path.clone(),
    };
    let mut size = 0;
    let mut problem = None;
    for f in tree.manifest.model_files(&name) {
        let p = crate::paths::join(&tree.root, &f.path);
        size += f.size;
        if problem.is_none() && !p.is_file() {
            problem = Some(format!("'{}' is missing", f.path));
        }
    }
    ModelFile {
        name: name.clone(),
        path: crate::paths::join(&tree.root, &rel),
        origin,
        size,
        info: None,
        entry: Some(e.clone()),
        tree: Some(ti),
        problem,
        shards: Vec::new(),
        format,
    }
}

/// Every model offgrid can see, source by source in resolution order.
#[derive(Debug)]
pub struct Catalog {
    pub locations: Locations,
    /// The signed trees (stick, home), in resolution order.
    pub trees: Vec<Tree>,
    /// All models, in resolution order (stick, models folder, home).
    pub models: Vec<ModelFile>,
}

impl Catalog {
    /// Reads the manifests of the stick and the home and lists the models folder.
    pub fn open(locations: Locations) -> Result<Catalog, ModelError> {
        let mut trees = Vec::new();
        let mut models = Vec::new();
        let add_tree = |root: &Path,
                        origin: Origin,
                        trees: &mut Vec<Tree>,
                        models: &mut Vec<ModelFile>|
         -> Result<(), ModelError> {
            let tree = Tree::open(root, origin)?;
            let ti = trees.len();
            for e in tree.manifest.logical_models() {
                let fmt = e.model.as_ref().map_or(ModelFormat::Gguf, |m| m.format());
                if fmt != ModelFormat::Gguf {
                    models.push(other_model(&tree, ti, e, fmt, origin));
                    continue;
                }
                let path = crate::paths::join(&tree.root, &e.path);
                let name = e
                    .model
                    .as_ref()
                    .map(|m| m.name.clone())
                    .unwrap_or_else(|| stem(&path));
                let (mut info, mut problem, mut size) = match std::fs::metadata(&path) {
                    Ok(m) => match gguf::read_info(&path) {
                        Ok(i) => (Some(i), None, m.len()),
                        Err(err) => (None, Some(err.to_string()), m.len()),
                    },
                    Err(err) => (None, Some(format!("missing: {err}")), e.size),
                };
                // A split model is one model: its size, tensors and parameters are the
                // sum over its shards.
                let mut shards = Vec::new();
                for s in tree.manifest.shards_of(e).into_iter().skip(1) {
                    let sp = crate::paths::join(&tree.root, &s.path);
                    match (std::fs::metadata(&sp), gguf::read_info(&sp)) {
                        (Ok(m), Ok(si)) => {
                            size += m.len();
                            if let Some(i) = info.as_mut() {
                                i.tensors.extend(si.tensors);
                                i.parameters += si.parameters;
                            }
                        }
                        (m, r) => {
                            size += m.map_or(s.size, |m| m.len());
                            if problem.is_none() {
                                problem = Some(match r {
                                    Err(err) => format!("shard '{}': {err}", s.path),
                                    Ok(_) => format!("shard '{}' is missing", s.path),
                                });
                            }
                            info = None;
                        }
                    }
                    shards.push((sp, s.clone()));
                }
                models.push(ModelFile {
                    name,
                    path,
                    origin,
                    size,
                    info,
                    entry: Some(e.clone()),
                    tree: Some(ti),
                    problem,
                    shards,
                    format: ModelFormat::Gguf,
                });
            }
            trees.push(tree);
            Ok(())
        };
        if let Some(stick) = &locations.stick {
            add_tree(stick, Origin::Stick, &mut trees, &mut models)?;
        }
        if let Some(dir) = &locations.models_dir {
            let rd = std::fs::read_dir(dir).map_err(|source| ModelError::Read {
                path: dir.display().to_string(),
                source,
            })?;
            let mut files: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension()
                        .is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
                        && p.is_file()
                        // A split model is listed by its first shard.
                        && p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .and_then(gguf::split::parse_shard_name)
                            .is_none_or(|(_, k, _)| k <= 1)
                })
                .collect();
            files.sort();
            for p in files {
                match ModelFile::from_path(&p, Origin::ModelsDir) {
                    Ok(m) => models.push(m),
                    Err(e) => models.push(ModelFile {
                        name: name_of_file(&p, None),
                        size: std::fs::metadata(&p).map_or(0, |m| m.len()),
                        path: p,
                        origin: Origin::ModelsDir,
                        info: None,
                        entry: None,
                        tree: None,
                        problem: Some(e.to_string()),
                        shards: Vec::new(),
                        format: ModelFormat::Gguf,
                    }),
                }
            }
        }
        // Every bundle's current release (SPEC.md §7.5), the home root's first.
        for home_tree in locations.home_trees() {
            add_tree(&home_tree, Origin::Home, &mut trees, &mut models)?;
        }
        Ok(Catalog {
            locations,
            trees,
            models,
        })
    }

    /// The default model: the stick's `default_model`, else the home's.
    pub fn default_model(&self) -> Option<&str> {
        self.trees
            .iter()
            .find_map(|t| t.manifest.default_model.as_deref())
    }

    fn available_names(&self) -> String {
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.dedup();
        let mut seen = Vec::new();
        for n in names {
            if !seen.contains(&n) {
                seen.push(n);
            }
        }
        if seen.is_empty() {
            String::new()
        } else {
            format!("; available: {}", seen.join(", "))
        }
    }

    /// The files `spec` may mean, all of one name from the first source holding it.
    ///
    /// `spec` is a path (it contains a path separator or ends in `.gguf`), `NAME`, or
    /// `NAME:TAG` with TAG a quantization; names and tags match ignoring ASCII case. `None`
    /// means the default
    /// model.
    pub fn resolve(&self, spec: Option<&str>) -> Result<Vec<ModelFile>, ModelError> {
        let spec = match spec {
            Some(s) => s.to_owned(),
            None => match self.default_model() {
                Some(d) => d.to_owned(),
                None => {
                    let mut names: Vec<&str> =
                        self.models.iter().map(|m| m.name.as_str()).collect();
                    names.sort();
                    names.dedup();
                    if names.len() == 1 {
                        names[0].to_owned()
                    } else {
                        return Err(ModelError::NoModelGiven {
                            searched: self.locations.describe(),
                            available: self.available_names(),
                        });
                    }
                }
            },
        };
        if is_path_like(&spec) {
            return self.resolve_path(Path::new(&spec)).map(|m| vec![m]);
        }
        let (name, tag) = match spec.rsplit_once(':') {
            Some((n, t)) if !n.is_empty() && !t.is_empty() => (n, Some(t)),
            _ => (spec.as_str(), None),
        };
        let first_origin = self
            .models
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
            .map(|m| (m.origin, m.tree));
        let Some((origin, tree)) = first_origin else {
            return Err(ModelError::NotFound {
                name: spec.clone(),
                searched: self.locations.describe(),
                available: self.available_names(),
            });
        };
        let all: Vec<ModelFile> = self
            .models
            .iter()
            .filter(|m| m.name.eq_ignore_ascii_case(name) && m.origin == origin && m.tree == tree)
            .cloned()
            .collect();
        let Some(tag) = tag else { return Ok(all) };
        let picked: Vec<ModelFile> = all
            .iter()
            .filter(|m| {
                m.quantization()
                    .is_some_and(|q| q.eq_ignore_ascii_case(tag))
            })
            .cloned()
            .collect();
        if picked.is_empty() {
            let mut q: Vec<String> = all
                .iter()
                .map(|m| m.quantization().unwrap_or_else(|| "unknown".into()))
                .collect();
            q.dedup();
            return Err(ModelError::UnknownTag {
                name: name.to_owned(),
                tag: tag.to_owned(),
                available: q.join(", "),
            });
        }
        Ok(picked)
    }

    /// A model given by path; when the file belongs to a signed tree, its entry comes too.
    fn resolve_path(&self, path: &Path) -> Result<ModelFile, ModelError> {
        let mut m = ModelFile::from_path(path, Origin::Path)?;
        if let Ok(canon) = std::fs::canonicalize(path) {
            for known in &self.models {
                if known.entry.is_some()
                    && std::fs::canonicalize(&known.path).is_ok_and(|k| k == canon)
                {
                    m.name = known.name.clone();
                    m.shards = known.shards.clone();
                    m.size = known.size;
                    m.info = known.info.clone().or(m.info);
                    m.entry = known.entry.clone();
                    m.tree = known.tree;
                    m.origin = known.origin;
                }
            }
        }
        Ok(m)
    }

    /// Verifies `model` before it is loaded: the manifest's signatures against `policy`
    /// (when there is one), then the file's size and chunk hashes, unless `cache` says
    /// this unchanged file was already checked against the same entry.
    pub fn verify(
        &self,
        model: &ModelFile,
        policy: Option<&TrustPolicy>,
        cache: Option<&VerifyCache>,
        progress: Progress,
    ) -> Result<Verification, ModelError> {
        let (Some(entry), Some(ti)) = (&model.entry, model.tree) else {
            return Ok(Verification {
                signature: SignatureCheck::NoManifest,
                file: FileCheckKind::NotChecked,
            });
        };
        let tree = &self.trees[ti];
        let signature = match policy {
            Some(p) => {
                let sigs = tree.signatures()?;
                let reports = p.evaluate(&tree.manifest, &tree.manifest_bytes, &sigs)?;
                let valid = reports
                    .iter()
                    .filter(|r| r.status == crate::trust::SignatureStatus::Valid)
                    .count();
                SignatureCheck::Trusted { valid }
            }
            None => SignatureCheck::NoTrustedKey,
        };
        // Every file of the model before any is loaded: llama.cpp, given the first
        // shard, opens the others itself.
        let files: Vec<(&Path, &FileEntry)> = std::iter::once((model.path.as_path(), entry))
            .chain(model.shards.iter().map(|(p, e)| (p.as_path(), e)))
            .collect();
        if files
            .iter()
            .all(|(p, e)| cache.is_some_and(|c| c.is_verified(p, e)))
        {
            return Ok(Verification {
                signature,
                file: FileCheckKind::Cached,
            });
        }
        let mut recorded = true;
        for (p, e) in &files {
            if cache.is_some_and(|c| c.is_verified(p, e)) {
                continue;
            }
            check_one(p, e, progress)?;
            if let Some(c) = cache {
                recorded &= c.record(p, e).is_ok();
            }
        }
        let file = FileCheckKind::Hashed {
            cached: cache.is_some() && recorded,
        };
        Ok(Verification { signature, file })
    }
}

/// Checks one file against its signed entry.
fn check_one(path: &Path, entry: &FileEntry, progress: Progress) -> Result<(), ModelError> {
    let shown = path.display().to_string();
    let detail = match hash::check_file(path, entry, progress)? {
        FileCheck::Ok => None,
        FileCheck::Missing => Some("the file is missing".to_owned()),
        FileCheck::NotAFile => Some("it is not a regular file".to_owned()),
        FileCheck::SizeMismatch { expected, actual } => Some(format!(
            "size is {actual} bytes, the manifest says {expected}"
        )),
        FileCheck::Damaged { ranges } => Some(format!(
            "bytes {} do not match their chunk hashes",
            ranges
                .iter()
                .map(|(a, b)| format!("{a}..{b}"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    };
    match detail {
        Some(detail) => Err(ModelError::Damaged {
            path: shown,
            detail,
        }),
        None => Ok(()),
    }
}

/// True when a model argument names a file rather than a model.
pub fn is_path_like(spec: &str) -> bool {
    spec.contains('/')
        || spec.contains(std::path::MAIN_SEPARATOR)
        || spec.to_ascii_lowercase().ends_with(".gguf")
}

/// What was checked about the manifest's signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureCheck {
    /// The threshold of trusted signatures was met (`valid` of them).
    Trusted { valid: usize },
    /// No trusted key was available: the file was checked against the manifest only,
    /// which catches damage but proves nothing about who made it.
    NoTrustedKey,
    /// The model is not in a signed tree (a path or a models folder).
    NoManifest,
}

/// What was checked about the file's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileCheckKind {
    /// Hashed now; `cached` says the result was remembered.
    Hashed {
        cached: bool,
    },
    /// The same unchanged file was verified before (the verification cache).
    Cached,
    NotChecked,
}

/// The outcome of [`Catalog::verify`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub signature: SignatureCheck,
    pub file: FileCheckKind,
}

/// The model `offgrid run` will load, chosen among the candidates of one name.
#[derive(Debug, Clone)]
pub struct Choice {
    pub model: ModelFile,
    pub need: MemoryEstimate,
    /// Larger quantizations passed over because they do not fit: (quantization, need).
    pub passed_over: Vec<(String, MemoryEstimate)>,
}

/// Picks the largest (best) candidate that fits `machine` at `ctx` tokens (each model's
/// default when `None`); refuses with [`ModelError::DoesNotFit`] when none does.
pub fn choose(
    candidates: &[ModelFile],
    machine: &Machine,
    ctx: Option<u64>,
) -> Result<Choice, ModelError> {
    let mut sorted: Vec<&ModelFile> = candidates.iter().collect();
    sorted.sort_by_key(|m| std::cmp::Reverse(m.size));
    let mut passed_over = Vec::new();
    for m in &sorted {
        let need = m.estimate(ctx);
        if machine.fits(&need) {
            return Ok(Choice {
                model: (*m).clone(),
                need,
                passed_over,
            });
        }
        passed_over.push((m.quantization().unwrap_or_else(|| "unknown".into()), need));
    }
    let Some(smallest) = sorted.last() else {
        return Err(ModelError::NotFound {
            name: "?".into(),
            searched: String::new(),
            available: String::new(),
        });
    };
    Err(ModelError::DoesNotFit(Box::new(NoFit {
        name: smallest.name.clone(),
        quantization: smallest.quantization(),
        need: smallest.estimate(ctx),
        available: machine.available_ram,
        assumed: machine.assumed,
        candidates: sorted.len(),
    })))
}

impl crate::diagnostic::Diagnostic for ModelError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            ModelError::NotFound { available, .. } => Some(format!("'offgrid models' lists the models offgrid can see{available}")),
            ModelError::NoModelGiven { available, .. } => Some(format!("name a model, e.g. 'offgrid run NAME'{available}")),
            ModelError::UnknownTag { .. } => Some("use one of the available quantizations, or the bare name to pick the best that fits".into()),
            ModelError::NotATree { .. } => Some("point --stick (or OFFGRID_PORTABLE) at the folder holding manifest.toml".into()),
            ModelError::NoStick => Some("name the stick's root: --stick /media/stick".into()),
            ModelError::Gguf(e) => crate::diagnostic::Diagnostic::help(e),
            ModelError::Trust(e) => crate::diagnostic::Diagnostic::help(e),
            ModelError::Head(e) => crate::diagnostic::Diagnostic::help(e),
            ModelError::DoesNotFit(_) => Some(
                "close other programs, lower --ctx, or use a smaller quantization of the model".into(),
            ),
            ModelError::Damaged { .. } => Some("the copy is damaged or was changed; copy the stick again from HQ (or run with --no-verify at your own risk)".into()),
            ModelError::NotRunnable { .. } => Some("'offgrid models' marks the models run can start; to chat, name a GGUF model".into()),
            ModelError::CpuUnsupported { .. } => Some("run the model on a newer computer, or use an offgrid built for this CPU (SPEC.md §10.8)".into()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{FileKind, Manifest, ModelInfo, DEFAULT_CHUNK_SIZE, FORMAT};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/models")
            .join(name)
    }

    /// A signed-less tree at `root` with the two tiny-chat quantizations named `tiny`.
    fn tree(root: &Path) -> Manifest {
        let mut files = Vec::new();
        for q in ["Q4_1", "Q8_0"] {
            let rel = format!("models/tiny.{q}.gguf");
            let dst = crate::paths::join(root, &rel);
            std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
            std::fs::copy(fixture(&format!("tiny-chat.{q}.gguf")), &dst).unwrap();
            let d = hash::hash_file(&dst, DEFAULT_CHUNK_SIZE, &crate::no_progress).unwrap();
            files.push(FileEntry {
                path: rel,
                size: d.size,
                sha256: d.sha256,
                kind: FileKind::Model,
                platform: None,
                mode: None,
                chunk_size: d.chunk_size,
                chunks: d.chunks,
                volume: None,
                parts: Vec::new(),
                model: Some(ModelInfo {
                    format: None,
                    name: "tiny".into(),
                    quantization: Some(q.into()),
                    ..Default::default()
                }),
            });
        }
        let m = Manifest {
            dirs: Vec::new(),
            commands: Vec::new(),
            format: FORMAT.into(),
            bundle_id: "org.example.t".into(),
            release: "1".parse().unwrap(),
            created: "2026-11-21T12:00:00Z".into(),
            platforms: vec![],
            default_model: Some("tiny".into()),
            expires: None,
            volumes: None,
            files,
        };
        std::fs::write(root.join("manifest.toml"), m.to_toml()).unwrap();
        m
    }

    fn catalog(root: &Path) -> Catalog {
        Catalog::open(Locations {
            stick: Some(root.to_path_buf()),
            ..Default::default()
        })
        .unwrap()
    }

    fn machine(ram: u64) -> Machine {
        Machine {
            available_ram: ram,
            total_ram: ram,
            physical_cores: 1,
            logical_cores: 1,
            assumed: true,
        }
    }

    #[test]
    fn resolves_names_tags_defaults_and_paths() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let c = catalog(d.path());
        assert_eq!(c.resolve(None).unwrap().len(), 2);
        assert_eq!(c.resolve(Some("TINY")).unwrap().len(), 2);
        let q8 = c.resolve(Some("tiny:q8_0")).unwrap();
        assert_eq!(q8.len(), 1);
        assert_eq!(q8[0].quantization().as_deref(), Some("Q8_0"));
        assert!(matches!(
            c.resolve(Some("tiny:Q2_K")),
            Err(ModelError::UnknownTag { .. })
        ));
        assert!(matches!(
            c.resolve(Some("other")),
            Err(ModelError::NotFound { .. })
        ));
        // A path into the tree brings its signed entry along.
        let p = d.path().join("models/tiny.Q4_1.gguf");
        let by_path = c.resolve(Some(p.to_str().unwrap())).unwrap();
        assert_eq!(by_path[0].name, "tiny");
        assert!(by_path[0].entry.is_some());
        assert_eq!(by_path[0].origin, Origin::Stick);
    }

    #[test]
    fn chooses_the_largest_that_fits_or_refuses() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let c = catalog(d.path());
        let all = c.resolve(Some("tiny")).unwrap();
        let q4 = all.iter().find(|m| m.size < 1500).unwrap();
        let q8 = all.iter().find(|m| m.size > 1500).unwrap();
        let need4 = q4.estimate(None).total();
        let need8 = q8.estimate(None).total();
        assert!(need8 > need4);
        let big = choose(&all, &machine(need8), None).unwrap();
        assert_eq!(big.model.quantization().as_deref(), Some("Q8_0"));
        assert!(big.passed_over.is_empty());
        let small = choose(&all, &machine(need8 - 1), None).unwrap();
        assert_eq!(small.model.quantization().as_deref(), Some("Q4_1"));
        assert_eq!(small.passed_over.len(), 1);
        let err = choose(&all, &machine(need4 - 1), None).unwrap_err();
        assert!(err.is_refusal());
        let text = err.to_string();
        assert!(text.contains("(Q4_1) does not fit"), "{text}");
        assert!(text.contains("smallest of its 2 quantizations"), "{text}");
    }

    #[test]
    fn verifies_remembers_and_refuses_damage() {
        let d = tempfile::tempdir().unwrap();
        tree(d.path());
        let c = catalog(d.path());
        let cache = VerifyCache::in_dir(&d.path().join("cache"));
        let m = &c.resolve(Some("tiny:Q4_1")).unwrap()[0];
        let v = c
            .verify(m, None, Some(&cache), &crate::no_progress)
            .unwrap();
        assert_eq!(v.signature, SignatureCheck::NoTrustedKey);
        assert_eq!(v.file, FileCheckKind::Hashed { cached: true });
        let v = c
            .verify(m, None, Some(&cache), &crate::no_progress)
            .unwrap();
        assert_eq!(v.file, FileCheckKind::Cached);
        // Damage a byte (same size): the cache no longer applies and the check fails.
        let mut bytes = std::fs::read(&m.path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&m.path, &bytes).unwrap();
        let err = c
            .verify(m, None, Some(&cache), &crate::no_progress)
            .unwrap_err();
        assert!(err.is_refusal());
        assert!(err.to_string().contains("do not match their chunk hashes"));
        // A model outside any manifest is not checked.
        let loose = ModelFile::from_path(&fixture("tiny-chat.Q4_1.gguf"), Origin::Path).unwrap();
        let v = c.verify(&loose, None, None, &crate::no_progress).unwrap();
        assert_eq!(v.signature, SignatureCheck::NoManifest);
        assert_eq!(v.file, FileCheckKind::NotChecked);
    }

    #[test]
    fn signatures_are_checked_against_the_policy() {
        let d = tempfile::tempdir().unwrap();
        let m = tree(d.path());
        let keys = d.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let pk =
            crate::keys::generate(&keys.join("a.key"), &keys.join("a.pub"), None, false).unwrap();
        let other =
            crate::keys::generate(&keys.join("b.key"), &keys.join("b.pub"), None, false).unwrap();
        let sk =
            crate::keys::SecretKey::load(&keys.join("a.key"), &mut || Ok(String::new())).unwrap();
        let bytes = std::fs::read(d.path().join("manifest.toml")).unwrap();
        let sig = crate::sign::sign_manifest(&sk, &m, &bytes).unwrap();
        std::fs::create_dir_all(d.path().join("signatures")).unwrap();
        std::fs::write(
            d.path().join(format!("signatures/{}.minisig", pk.key_id())),
            sig,
        )
        .unwrap();
        let c = catalog(d.path());
        let model = &c.resolve(Some("tiny:Q4_1")).unwrap()[0];
        let good = TrustPolicy::from_keys(vec![pk]).unwrap();
        let v = c
            .verify(model, Some(&good), None, &crate::no_progress)
            .unwrap();
        assert_eq!(v.signature, SignatureCheck::Trusted { valid: 1 });
        let bad = TrustPolicy::from_keys(vec![other]).unwrap();
        let err = c
            .verify(model, Some(&bad), None, &crate::no_progress)
            .unwrap_err();
        assert!(err.is_refusal(), "{err}");
    }

    #[test]
    fn file_names_lose_their_quantization_suffix() {
        let q = Some("Q4_1");
        assert_eq!(
            name_of_file(Path::new("a/SmolLM2-135M-Instruct.Q4_1.gguf"), q),
            "SmolLM2-135M-Instruct"
        );
        assert_eq!(name_of_file(Path::new("m-q4_1.gguf"), q), "m");
        assert_eq!(name_of_file(Path::new("q4_1.gguf"), q), "q4_1");
        assert_eq!(name_of_file(Path::new("model.gguf"), q), "model");
    }
}
