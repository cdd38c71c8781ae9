//! Helpers shared by the xtask tasks: paths, running commands, timing, peak memory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command to completion, failing with its stderr when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// One timed run of a command: wall time and the peak RSS of the child (KiB).
pub struct Timed {
    pub wall: Duration,
    pub max_rss_kib: u64,
}

/// Runs `sh -c SCRIPT` and measures wall time and peak memory with GNU time.
pub fn time_sh(script: &str) -> Result<Timed> {
    let tmp = std::env::temp_dir().join(format!("xtask-time-{}", std::process::id()));
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&tmp)
        .args(["sh", "-c", script])
        .output()
        .context("running /usr/bin/time (apt-get install time)")?;
    let wall = start.elapsed();
    if !out.status.success() {
        bail!(
            "`{script}` failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss = std::fs::read_to_string(&tmp)?
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    let _ = std::fs::remove_file(&tmp);
    Ok(Timed {
        wall,
        max_rss_kib: rss,
    })
}

/// Best (minimum wall time) of `n` runs of `script`, with `prep` run before each
/// (untimed), e.g. to remove an output.
pub fn best_of(n: usize, prep: &str, script: &str) -> Result<Timed> {
    let mut best: Option<Timed> = None;
    for _ in 0..n {
        if !prep.is_empty() {
            run(Command::new("sh").args(["-c", prep]))?;
        }
        let t = time_sh(script)?;
        if best.as_ref().is_none_or(|b| t.wall < b.wall) {
            best = Some(t);
        }
    }
    best.context("no runs")
}

/// Builds the release `offgrid` (core only unless `llama`) and returns its path.
pub fn build_offgrid(llama: bool) -> Result<PathBuf> {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(root())
        .args(["build", "--release", "--bin", "offgrid"]);
    if !llama {
        cmd.arg("--no-default-features");
    }
    run(&mut cmd)?;
    Ok(root().join("target/release/offgrid"))
}

/// `dist`: the release binary with every feature.
pub fn dist() -> Result<PathBuf> {
    build_offgrid(true)
}

/// `ci`: fixtures (including the real test model), formatting, lints, then every test
/// (what `.ci/run` calls, and the README's test command).
pub fn ci() -> Result<()> {
    let cargo = env!("CARGO");
    crate::fixtures::run(&["--model"])?;
    run(Command::new(cargo)
        .current_dir(root())
        .args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new(cargo).current_dir(root()).args([
        "clippy",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let status = Command::new(cargo)
        .current_dir(root())
        .args(["test", "--workspace"])
        .status()?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}

/// Writes `size` bytes of incompressible (random-looking) data, like quantized weights.
pub fn write_incompressible(path: &Path, size: u64, seed: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    // xorshift64*: fast, deterministic, and zstd cannot shrink it.
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for c in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            c.copy_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Number of CPU cores, for the report.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Prints one comparison line: `name: ours X s, theirs Y s, ratio R (goal G)`.
pub fn report(name: &str, ours: Duration, theirs_name: &str, theirs: Duration, goal: &str) {
    let r = ours.as_secs_f64() / theirs.as_secs_f64().max(1e-9);
    println!(
        "{name}: offgrid {:.3} s, {theirs_name} {:.3} s, ratio {r:.3} (goal {goal})",
        ours.as_secs_f64(),
        theirs.as_secs_f64()
    );
}

/// Writes `path`: a GGUF v3 header naming one tensor, then `size` incompressible bytes —
/// model-like data (quantized weights do not compress) that offgrid reads as a model.
pub fn write_model_like(path: &Path, size: u64, seed: u64) -> Result<()> {
    use std::io::Write;
    let tail = path.with_extension("tail");
    write_incompressible(&tail, size, seed)?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    offgrid::gguf::write_synthetic(
        &mut out,
        &[
            (
                "general.architecture",
                offgrid::gguf::MetaValue::Str("llama".into()),
            ),
            ("general.file_type", offgrid::gguf::MetaValue::U32(15)),
            ("llama.context_length", offgrid::gguf::MetaValue::U32(8192)),
        ],
        &[("token_embd.weight", vec![8], &[0u8; 32])],
    )?;
    std::io::copy(&mut std::fs::File::open(&tail)?, &mut out)?;
    out.flush()?;
    std::fs::remove_file(&tail)?;
    Ok(())
}

/// `path` quoted for `sh -c`.
pub fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}
