//! Models for the launcher and models tests: the real test model, the committed
//! synthetic fixtures, and a stick-like tree (manifest with real chunk hashes) around
//! model files.

use std::fs;
use std::path::{Path, PathBuf};

use super::sha;
use offgrid::manifest::{FileEntry, FileKind, Manifest, ModelInfo, DEFAULT_CHUNK_SIZE, FORMAT};

/// The committed synthetic fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models")
}

/// The real test model (SmolLM2-135M-Instruct Q4_1). Fails the test, never skips it.
pub fn real_model() -> PathBuf {
    let dir = std::env::var_os("OFFGRID_FIXTURES")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/offgrid/fixtures")
        });
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        fs::metadata(&p).is_ok_and(|m| m.len() == 98_362_432),
        "the real test model '{}' is missing: run cargo xtask fixtures --model",
        p.display()
    );
    p
}

/// A manifest entry for a model file with real digests.
pub fn model_entry(root: &Path, rel: &str, name: &str) -> FileEntry {
    let bytes = fs::read(root.join(rel)).unwrap();
    let info = offgrid::gguf::read_info(&root.join(rel)).unwrap();
    let chunks = bytes.chunks(DEFAULT_CHUNK_SIZE as usize).map(sha).collect();
    FileEntry {
        path: rel.to_owned(),
        size: bytes.len() as u64,
        sha256: sha(&bytes),
        kind: FileKind::Model,
        platform: None,
        mode: None,
        chunk_size: DEFAULT_CHUNK_SIZE,
        chunks,
        volume: None,
        parts: Vec::new(),
        model: Some(ModelInfo {
            format: None,
            name: name.to_owned(),
            architecture: info.architecture,
            quantization: info.quantization,
            parameters: Some(info.parameters),
            context_length: info.context_length,
            shard: None,
            shards: None,
        }),
    }
}

/// Writes `root/manifest.toml` listing `models` (path under root, model name), with
/// `default_model`. Returns the manifest.
pub fn write_tree(root: &Path, models: &[(&str, &str)], default_model: Option<&str>) -> Manifest {
    let m = Manifest {
        dirs: Vec::new(),
        commands: Vec::new(),
        format: FORMAT.into(),
        bundle_id: "org.example.test".into(),
        release: "1.0.0".parse().unwrap(),
        created: "2026-11-21T12:00:00Z".into(),
        platforms: vec!["linux-x86_64".into()],
        default_model: default_model.map(str::to_owned),
        expires: None,
        volumes: None,
        files: models
            .iter()
            .map(|(rel, name)| model_entry(root, rel, name))
            .collect(),
    };
    fs::write(root.join("manifest.toml"), m.to_toml()).unwrap();
    m
}

/// Copies (or hard-links) `src` to `root/rel`, creating folders.
pub fn place(src: &Path, root: &Path, rel: &str) -> PathBuf {
    let dst = root.join(rel);
    fs::create_dir_all(dst.parent().unwrap()).unwrap();
    if fs::hard_link(src, &dst).is_err() {
        fs::copy(src, &dst).unwrap();
    }
    dst
}
