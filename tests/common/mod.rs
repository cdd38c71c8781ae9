//! Helpers shared by the launcher and models tests: the real test model, and building a
//! stick-like tree (manifest with real chunk hashes) around model files.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use offgrid::manifest::{FileEntry, FileKind, Manifest, ModelInfo, DEFAULT_CHUNK_SIZE, FORMAT};
use sha2::{Digest, Sha256};

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
    let chunks = bytes
        .chunks(DEFAULT_CHUNK_SIZE as usize)
        .map(|c| hex::encode(Sha256::digest(c)))
        .collect();
    FileEntry {
        path: rel.to_owned(),
        size: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
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

/// Waits (up to 120 s) until `child`, run with `OFFGRID_FAULT_AT=STEP:stop`, has stopped
/// itself at `step` (state `T` in `/proc/PID/stat`) and gives it back; panics with its
/// output if it ends first or never gets there.
pub fn wait_stopped(mut child: std::process::Child, step: &str) -> std::process::Child {
    let stat = format!("/proc/{}/stat", child.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let s = fs::read_to_string(&stat).unwrap_or_default();
        let state = s.rsplit(')').next().unwrap_or("").trim_start().to_owned();
        if state.starts_with('T') {
            return child;
        }
        if state.starts_with('Z') || std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the process never reached {step}: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
