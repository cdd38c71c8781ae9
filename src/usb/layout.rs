//! Where each file of a release goes in a USB tree, and the plan of the tree: for every
//! file its bundle path, where its bytes come from, its kind, platform and mode.
//!
//! [`plan`] reads every model's GGUF header (a file that is not GGUF is refused here,
//! naming it, before anything is written), renders the scripts and README, and checks
//! every path against the FAT32/exFAT/NTFS rules and for case collisions. `pack-usb`
//! writes a plan; `create-update-pack` diffs one against an older manifest.
//! SPEC.md §2 is normative for the layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::gguf::{self, split, GgufInfo};
use crate::hash::Digests;
use crate::manifest::{self, Command, DirEntry, FileEntry, FileKind, Manifest, ModelInfo};
use crate::paths;

use super::inputs::{AddInput, ReleaseInputs};
use super::templates::{human_size, ScriptVars};
use super::PackError;

/// Folder of the models.
pub const MODELS_DIR: &str = "models";
/// Folder of the binaries, one sub-folder per platform.
pub const BIN_DIR: &str = "bin";
/// Staging folder inside the destination, removed when the pack ends.
pub const STAGING_DIR: &str = ".offgrid-staging";
pub const RUN_SH: &str = "run.sh";
pub const RUN_BAT: &str = "run.bat";
pub const INSTALL_SH: &str = "install.sh";
pub const INSTALL_BAT: &str = "install.bat";
pub const README_TXT: &str = "README.txt";
pub const CHANGELOG_TXT: &str = "CHANGELOG.txt";
/// The environment variable the launchers set to the stick's root (portable mode).
pub const PORTABLE_ENV: &str = "OFFGRID_PORTABLE";

/// Mode of executables (binaries, `.sh` scripts).
pub const MODE_EXEC: u32 = 0o755;
/// Mode of every other file.
pub const MODE_DATA: u32 = 0o644;

/// Where a planned file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Copied from this file.
    File(PathBuf),
    /// Generated (scripts, README).
    Bytes(Vec<u8>),
    /// Shard `index` (0-based) of the GGUF `src`, cut as `plan` says (SPEC.md §16.2).
    Shard {
        src: PathBuf,
        plan: Arc<split::SplitPlan>,
        index: usize,
    },
}

impl Source {
    /// The input file the bytes are read from, if any.
    pub fn input(&self) -> Option<&Path> {
        match self {
            Source::File(p) | Source::Shard { src: p, .. } => Some(p),
            Source::Bytes(_) => None,
        }
    }

    /// Writes a shard's bytes to `dst` (created new, synced); `None` for other sources.
    pub fn write_shard(&self, dst: &Path) -> Option<std::io::Result<u64>> {
        let Source::Shard { src, plan, index } = self else {
            return None;
        };
        Some(write_shard_file(src, plan, *index, dst))
    }
}

fn write_shard_file(
    src: &Path,
    plan: &split::SplitPlan,
    index: usize,
    dst: &Path,
) -> std::io::Result<u64> {
    let f = crate::fsutil::create_new(dst)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let n = plan.write_shard(src, index, &mut w)?;
    let f = w.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(n)
}

/// One file of a planned tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFile {
    /// The bundle path (checked).
    pub path: String,
    pub source: Source,
    pub kind: FileKind,
    pub platform: Option<String>,
    pub mode: Option<u32>,
    /// Model metadata from the GGUF header (models only).
    pub model: Option<ModelInfo>,
    /// Size when planned (the manifest records the size actually copied).
    pub size: u64,
}

impl PlannedFile {
    /// The manifest entry of this file, once its digests are known.
    pub fn entry(&self, d: Digests) -> FileEntry {
        FileEntry {
            path: self.path.clone(),
            size: d.size,
            sha256: d.sha256,
            kind: self.kind,
            platform: self.platform.clone(),
            mode: self.mode,
            chunk_size: d.chunk_size,
            chunks: d.chunks,
            model: self.model.clone(),
            volume: None,
            parts: Vec::new(),
        }
    }
}

/// A planned tree: the manifest's header fields and every file, sorted by path.
#[derive(Debug, Clone)]
pub struct TreePlan {
    pub bundle_id: String,
    pub release: crate::version::Version,
    pub created: String,
    pub platforms: Vec<String>,
    pub default_model: Option<String>,
    /// The manifest's `expires` (SPEC.md §17.5), set by `--expires`.
    pub expires: Option<String>,
    pub files: Vec<PlannedFile>,
    /// Folders of the payload (`--add` folders and their sub-folders), sorted by path.
    pub dirs: Vec<DirEntry>,
    /// Commands the release declares (SPEC.md §18.5).
    pub commands: Vec<Command>,
}

impl TreePlan {
    /// Total bytes of all files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The manifest of this plan given each file's entry (in the plan's order).
    pub fn manifest(&self, files: Vec<FileEntry>) -> Manifest {
        let mut m = Manifest {
            format: manifest::FORMAT.to_owned(),
            bundle_id: self.bundle_id.clone(),
            release: self.release.clone(),
            created: self.created.clone(),
            platforms: self.platforms.clone(),
            default_model: self.default_model.clone(),
            expires: self.expires.clone(),
            files,
            dirs: self.dirs.clone(),
            commands: self.commands.clone(),
            volumes: None,
        };
        m.format = m.needed_format().to_owned();
        m
    }
}

fn file_size(what: &str, path: &std::path::Path) -> Result<u64, PackError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| PackError::InputRead {
            what: what.to_owned(),
            path: path.display().to_string(),
            source,
        })
}

/// Plans the tree of `inputs`. `key_ids` are the signers' key ids (named in README.txt).
/// Models are split only at `inputs.split_models_over` (see [`plan_for`]).
pub fn plan(inputs: &ReleaseInputs, key_ids: &[String]) -> Result<TreePlan, PackError> {
    plan_for(inputs, key_ids, None)
}

fn model_info(name: &str, info: &GgufInfo, shard: Option<(u32, u32)>) -> ModelInfo {
    ModelInfo {
        name: name.to_owned(),
        architecture: info.architecture.clone(),
        quantization: info.quantization.clone(),
        parameters: Some(info.parameters),
        context_length: info.context_length,
        shard: shard.map(|s| s.0),
        shards: shard.map(|s| s.1),
        format: None,
    }
}

/// The files of a model split by llama.cpp whose first shard is `first`: each shard's
/// path, header and size, checked to be the shards of one model (SPEC.md §16.2).
pub fn existing_shards(
    what: &str,
    first: &Path,
    info: &GgufInfo,
) -> Result<Vec<(PathBuf, GgufInfo, u64)>, PackError> {
    let n = info.split_count.unwrap_or(1) as u32;
    let bad = |reason: String| PackError::BadSplit {
        path: first.display().to_string(),
        reason,
    };
    if info.split_no != Some(0) {
        return Err(bad(format!(
            "it is shard {} of {n}, not the first",
            info.split_no.map_or(0, |k| k as u32 + 1)
        )));
    }
    let name = first
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some((prefix, 1, count)) = split::parse_shard_name(&name) else {
        return Err(bad(format!(
            "its name does not end in -00001-of-{n:05}.gguf, so llama.cpp cannot find its other shards"
        )));
    };
    if count != n {
        return Err(bad(format!("its name says {count} shards, its header {n}")));
    }
    let dir = first.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    let mut tensors = 0i64;
    for k in 1..=n {
        let p = dir.join(split::shard_name(prefix, k, n));
        let size = file_size(&format!("{what} shard {k} of {n}"), &p)?;
        let i = gguf::read_info(&p)?;
        if i.split_no != Some((k - 1) as u16) || i.split_count != Some(n as u16) {
            return Err(bad(format!(
                "'{}' does not say it is shard {k} of {n}",
                p.display()
            )));
        }
        tensors += i.tensors.len() as i64;
        out.push((p, i, size));
    }
    if info.split_tensors.is_some_and(|t| t != tensors) {
        return Err(bad(format!(
            "the shards hold {tensors} tensors, the first shard says {}",
            info.split_tensors.unwrap_or(0)
        )));
    }
    Ok(out)
}

/// Plans the tree of `inputs` for a medium whose files hold at most `max_file` bytes: a
/// model larger than that, or at least `inputs.split_models_over`, is split the way
/// llama.cpp loads it (SPEC.md §16.2); a model already split is carried as its shards. Other files are not split here: the caller
/// checks them against the limit ([`super::pack::check_fits`]).
pub fn plan_for(
    inputs: &ReleaseInputs,
    key_ids: &[String],
    max_file: Option<u64>,
) -> Result<TreePlan, PackError> {
    let mut files = Vec::new();
    let mut dirs: Vec<DirEntry> = Vec::new();
    for m in &inputs.models {
        if m.format != manifest::ModelFormat::Gguf {
            plan_other_model(m, &mut files, &mut dirs)?;
            continue;
        }
        let info = gguf::read_info(&m.source)?;
        let what = format!("model '{}'", m.name);
        let size = file_size(&what, &m.source)?;
        if info.split_count.is_some_and(|n| n > 1) {
            let shards = existing_shards(&what, &m.source, &info)?;
            let n = shards.len() as u32;
            let mut whole = info.clone();
            whole.parameters = shards.iter().map(|s| s.1.parameters).sum();
            for (k, (p, _, size)) in shards.into_iter().enumerate() {
                let k = k as u32 + 1;
                files.push(PlannedFile {
                    path: format!("{MODELS_DIR}/{}", split::shard_name(&m.name, k, n)),
                    source: Source::File(p),
                    kind: FileKind::Model,
                    platform: None,
                    mode: Some(MODE_DATA),
                    model: Some(model_info(&m.name, &whole, Some((k, n)))),
                    size,
                });
            }
            continue;
        }
        // Over the file limit: shards of at most the limit. Over the split threshold:
        // the metadata alone in shard 1, the tensors in as few shards as the limit
        // allows (SPEC.md §16.2).
        let over_limit = max_file.filter(|l| size > *l);
        let over_threshold = inputs.split_models_over.is_some_and(|t| size >= t);
        if over_limit.is_some() || over_threshold {
            let limit = over_limit.or(max_file).unwrap_or(u64::MAX);
            let sp = Arc::new(split::plan(&m.source, &info, limit)?);
            let n = sp.count() as u32;
            for i in 0..sp.count() {
                let k = i as u32 + 1;
                files.push(PlannedFile {
                    path: format!("{MODELS_DIR}/{}", split::shard_name(&m.name, k, n)),
                    source: Source::Shard {
                        src: m.source.clone(),
                        plan: sp.clone(),
                        index: i,
                    },
                    kind: FileKind::Model,
                    platform: None,
                    mode: Some(MODE_DATA),
                    model: Some(model_info(&m.name, &info, Some((k, n)))),
                    size: sp.sizes[i],
                });
            }
            continue;
        }
        files.push(PlannedFile {
            path: m.bundle_path(),
            source: Source::File(m.source.clone()),
            kind: FileKind::Model,
            platform: None,
            mode: Some(MODE_DATA),
            model: Some(model_info(&m.name, &info, None)),
            size,
        });
    }
    for (platform, src) in &inputs.binaries {
        let size = file_size(&format!("binary for {platform}"), src)?;
        files.push(PlannedFile {
            path: format!("{BIN_DIR}/{platform}/{}", platform.exe_name()),
            source: Source::File(src.clone()),
            kind: FileKind::Binary,
            platform: Some(platform.to_string()),
            mode: Some(MODE_EXEC),
            model: None,
            size,
        });
    }
    if let Some(c) = &inputs.changelog {
        let size = file_size("changelog", c)?;
        files.push(PlannedFile {
            path: CHANGELOG_TXT.to_owned(),
            source: Source::File(c.clone()),
            kind: FileKind::Changelog,
            platform: None,
            mode: Some(MODE_DATA),
            model: None,
            size,
        });
    }

    let mut commands: Vec<Command> = Vec::new();
    for a in &inputs.adds {
        add_payload(a, &mut files, &mut dirs)?;
        if let Some(c) = &a.command {
            commands.push(Command {
                name: c.clone(),
                path: a.dest.clone(),
            });
        }
    }

    let created = manifest::now_rfc3339();
    let platforms: Vec<String> = inputs.binaries.keys().map(|p| p.to_string()).collect();
    let payload: u64 = files.iter().map(|f| f.size).sum();
    let mut seen_models = std::collections::BTreeSet::new();
    let models = files
        .iter()
        .filter_map(|f| f.model.as_ref().map(|m| (f, m)))
        .filter(|(_, m)| !m.is_later_shard() && seen_models.insert(m.name.clone()))
        .map(|(f, m)| {
            let (size, shards) = match m.shards {
                Some(n) => (
                    files
                        .iter()
                        .filter(|g| {
                            g.model
                                .as_ref()
                                .is_some_and(|x| x.name == m.name && x.shards == Some(n))
                        })
                        .map(|g| g.size)
                        .sum(),
                    format!(" (+{} more shards)", n - 1),
                ),
                None => (f.size, String::new()),
            };
            format!(
                "  {:<20} {:>10}  {} {}  {}{shards}\n",
                m.name,
                human_size(size),
                m.architecture.as_deref().unwrap_or("?"),
                m.quantization.as_deref().unwrap_or("?"),
                f.path
            )
        })
        .collect::<String>();
    let vars = ScriptVars {
        bundle_id: inputs.bundle_id.clone(),
        release: inputs.release.to_string(),
        created: created.clone(),
        platforms: if platforms.is_empty() {
            "none".into()
        } else {
            platforms.join(" ")
        },
        default_model: inputs
            .default_model
            .clone()
            .unwrap_or_else(|| "none".into()),
        models: if models.is_empty() {
            "  (none)\n".into()
        } else {
            models
        },
        total_size: human_size(payload),
        key_ids: key_ids.join(", "),
        minisign_commands: key_ids
            .iter()
            .map(|k| {
                format!("  minisign -V -p hq.pub -m manifest.toml -x signatures/{k}.minisig\n")
            })
            .collect(),
        changelog_line: if inputs.changelog.is_some() {
            format!("  {CHANGELOG_TXT:<22} what changed in this release\n")
        } else {
            String::new()
        },
    };
    let generated = [
        (RUN_SH, vars.run_sh()?, FileKind::Script, MODE_EXEC),
        (RUN_BAT, vars.run_bat()?, FileKind::Script, MODE_DATA),
        (INSTALL_SH, vars.install_sh()?, FileKind::Script, MODE_EXEC),
        (
            INSTALL_BAT,
            vars.install_bat()?,
            FileKind::Script,
            MODE_DATA,
        ),
        (README_TXT, vars.readme()?, FileKind::Doc, MODE_DATA),
    ];
    for (path, text, kind, mode) in generated {
        files.push(PlannedFile {
            path: path.to_owned(),
            size: text.len() as u64,
            source: Source::Bytes(text.into_bytes()),
            kind,
            platform: None,
            mode: Some(mode),
            model: None,
        });
    }

    files.sort_by(|a, b| a.path.cmp(&b.path));
    for f in &files {
        paths::check_bundle_path(&f.path)?;
    }
    for w in files.windows(2) {
        if w[0].path == w[1].path {
            return Err(PackError::DuplicateName {
                what: "files",
                name: w[0].path.clone(),
                a: source_name(&w[0].source),
                b: source_name(&w[1].source),
            });
        }
    }
    dirs.sort_by(|a, b| a.path.cmp(&b.path));
    for w in dirs.windows(2) {
        if w[0].path == w[1].path {
            return Err(PackError::DuplicateName {
                what: "folders",
                name: w[0].path.clone(),
                a: "--add".into(),
                b: "--add".into(),
            });
        }
    }
    let file_paths: std::collections::BTreeSet<&str> =
        files.iter().map(|f| f.path.as_str()).collect();
    for d in &dirs {
        if file_paths.contains(d.path.as_str()) {
            return Err(PackError::DuplicateName {
                what: "files and folders",
                name: d.path.clone(),
                a: "a file".into(),
                b: "a folder".into(),
            });
        }
    }
    // A file may not also be the folder of another file.
    for f in &files {
        let mut prefix = String::new();
        for c in f.path.split('/') {
            if !prefix.is_empty() && file_paths.contains(prefix.as_str()) {
                return Err(PackError::DuplicateName {
                    what: "files and folders",
                    name: prefix,
                    a: "a file".into(),
                    b: format!("the folder of '{}'", f.path),
                });
            }
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
        }
    }
    paths::check_no_case_collisions(
        files
            .iter()
            .map(|f| f.path.as_str())
            .chain(dirs.iter().map(|d| d.path.as_str())),
    )?;
    Ok(TreePlan {
        bundle_id: inputs.bundle_id.clone(),
        release: inputs.release.clone(),
        created,
        platforms,
        default_model: inputs.default_model.clone(),
        expires: None,
        files,
        dirs,
        commands,
    })
}

/// Plans a model that is not GGUF (SPEC.md §18.4): an ONNX file at `models/NAME.onnx`,
/// or a safetensors folder at `models/NAME/` (walked like an `--add` folder), every file
/// of it a model file carrying the model's name, format, architecture and parameters.
fn plan_other_model(
    m: &super::inputs::ModelInput,
    files: &mut Vec<PlannedFile>,
    dirs: &mut Vec<DirEntry>,
) -> Result<(), PackError> {
    use crate::models::formats;
    let bad = |reason: String| PackError::ModelFolder {
        path: m.source.display().to_string(),
        reason,
    };
    let mut info = ModelInfo {
        name: m.name.clone(),
        format: Some(m.format),
        ..ModelInfo::default()
    };
    if m.format == manifest::ModelFormat::Onnx {
        formats::check_onnx(&m.source).map_err(|r| PackError::BadAdd {
            origin: format!("model '{}' ('{}')", m.name, m.source.display()),
            reason: r,
            help: "give an .onnx model file, a GGUF file, or a safetensors folder",
        })?;
    } else {
        let fi = formats::read_folder(&m.source).map_err(bad)?;
        info.architecture = fi.architecture();
        info.parameters = Some(fi.parameters);
    }
    let start = files.len();
    let add = AddInput {
        dest: m.bundle_path(),
        src: m.source.clone(),
        kind: FileKind::Model,
        platform: None,
        mode: Some(MODE_DATA),
        command: None,
    };
    add_payload(&add, files, dirs)?;
    for f in &mut files[start..] {
        f.model = Some(info.clone());
        f.mode = Some(MODE_DATA);
    }
    Ok(())
}

/// The permission bits of a source file or folder (0o644 / 0o755 where there are none).
fn source_mode(m: &std::fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    }
    #[cfg(not(unix))]
    {
        if m.is_dir() {
            MODE_EXEC
        } else {
            MODE_DATA
        }
    }
}

/// Plans one `--add`/`[[files]]` entry: a file at its destination, or a folder walked
/// in name order with its sub-folders (kept even when empty) and every file's mode. A
/// symbolic link or a special file anywhere inside is refused, naming it.
fn add_payload(
    a: &AddInput,
    files: &mut Vec<PlannedFile>,
    dirs: &mut Vec<DirEntry>,
) -> Result<(), PackError> {
    let what = format!("payload '{}'", a.dest);
    let meta = std::fs::symlink_metadata(&a.src).map_err(|source| PackError::InputRead {
        what: what.clone(),
        path: a.src.display().to_string(),
        source,
    })?;
    let platform = a.platform.as_ref().map(|p| p.to_string());
    if !meta.is_dir() {
        files.push(PlannedFile {
            path: a.dest.clone(),
            source: Source::File(a.src.clone()),
            kind: a.kind,
            platform,
            mode: Some(a.mode.unwrap_or_else(|| source_mode(&meta))),
            model: None,
            size: meta.len(),
        });
        return Ok(());
    }
    dirs.push(DirEntry {
        path: a.dest.clone(),
        mode: Some(source_mode(&meta)),
        platform: platform.clone(),
    });
    let mut stack = vec![(a.src.clone(), a.dest.clone())];
    while let Some((dir, dest)) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|source| PackError::InputRead {
            what: what.clone(),
            path: dir.display().to_string(),
            source,
        })?;
        let mut entries = Vec::new();
        for e in rd {
            let e = e.map_err(|source| PackError::InputRead {
                what: what.clone(),
                path: dir.display().to_string(),
                source,
            })?;
            entries.push(e.path());
        }
        entries.sort();
        for p in entries {
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| PackError::BadAdd {
                    origin: what.clone(),
                    reason: format!("the name of '{}' is not UTF-8", p.display()),
                    help: "rename the file; a release carries UTF-8 names only",
                })?;
            let bundle = format!("{dest}/{name}");
            paths::check_bundle_path(&bundle).map_err(|e| PackError::BadAdd {
                origin: format!("'{}'", p.display()),
                reason: format!("its name cannot be stored on a USB stick: {e}"),
                help: "rename it (FAT/exFAT/NTFS rules: SPEC.md §3)",
            })?;
            let m = std::fs::symlink_metadata(&p).map_err(|source| PackError::InputRead {
                what: what.clone(),
                path: p.display().to_string(),
                source,
            })?;
            let t = m.file_type();
            if t.is_symlink() {
                return Err(PackError::Symlink {
                    path: p.display().to_string(),
                });
            }
            if t.is_dir() {
                dirs.push(DirEntry {
                    path: bundle.clone(),
                    mode: Some(source_mode(&m)),
                    platform: platform.clone(),
                });
                stack.push((p, bundle));
            } else if t.is_file() {
                if files.len() >= manifest::MAX_FILES {
                    return Err(PackError::BadAdd {
                        origin: what.clone(),
                        reason: format!("a release holds at most {} files", manifest::MAX_FILES),
                        help: "carry the folder as an archive file instead",
                    });
                }
                files.push(PlannedFile {
                    path: bundle,
                    source: Source::File(p.clone()),
                    kind: a.kind,
                    platform: platform.clone(),
                    mode: Some(source_mode(&m)),
                    model: None,
                    size: m.len(),
                });
            } else {
                return Err(PackError::Special {
                    path: p.display().to_string(),
                    what: crate::fsutil::kind_name(&m).to_owned(),
                });
            }
        }
    }
    Ok(())
}

fn source_name(s: &Source) -> String {
    match s {
        Source::File(p) => p.display().to_string(),
        Source::Bytes(_) => "generated".into(),
        Source::Shard { src, index, .. } => format!("{} (shard {})", src.display(), index + 1),
    }
}
