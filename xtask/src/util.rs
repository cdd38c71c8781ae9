//! Helpers shared by the xtask tasks: paths, running commands, timing, peak memory,
//! hashing a file, a stock-minisign key pair.

use std::fs;
use std::io::Read;
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

/// The cargo target directory (`CARGO_TARGET_DIR`, else `target/` of the workspace).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        Some(d) => root().join(d),
        None => root().join("target"),
    }
}

/// What `cargo xtask dist` made: the stripped binary that goes on the sticks and the
/// debug info split off it, kept at HQ.
pub struct Dist {
    pub binary: PathBuf,
    pub debug: PathBuf,
}

/// `dist`: builds the `dist` profile (release + thin LTO, every feature), then splits the
/// debug info off with objcopy: `target/dist/ship/offgrid.debug` (DWARF and symbols, for
/// gdb and addr2line at HQ) and `target/dist/ship/offgrid` (stripped, with a
/// `.gnu_debuglink` naming the debug file, what `pack-usb` puts on a stick).
pub fn dist() -> Result<Dist> {
    let start = Instant::now();
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--profile",
        "dist",
        "--bin",
        "offgrid",
    ]))?;
    let built = target_dir().join("dist/offgrid");
    let out = target_dir().join("dist/ship");
    std::fs::create_dir_all(&out).with_context(|| format!("creating '{}'", out.display()))?;
    let binary = out.join("offgrid");
    let debug = out.join("offgrid.debug");
    for p in [&binary, &debug] {
        if p.exists() {
            std::fs::remove_file(p).with_context(|| format!("removing '{}'", p.display()))?;
        }
    }
    let objcopy = std::env::var("OBJCOPY").unwrap_or_else(|_| "objcopy".into());
    run(Command::new(&objcopy)
        .arg("--only-keep-debug")
        .arg(&built)
        .arg(&debug))
    .context("splitting the debug info (apt-get install binutils)")?;
    // The debug link is resolved relative to the binary: run in `out`.
    run(Command::new(&objcopy)
        .current_dir(&out)
        .arg("--strip-all")
        // rustc's few loaded bytes naming gdb's pretty printers: gdb finds them in the
        // debug file anyway.
        .arg("--remove-section=.debug_gdb_scripts")
        .arg("--add-gnu-debuglink=offgrid.debug")
        .arg(&built)
        .arg("offgrid"))?;
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "dist: built in {:.0} s; {} is {:.1} MiB (unsplit {:.1} MiB), debug info {:.1} MiB",
        start.elapsed().as_secs_f64(),
        binary.display(),
        mib(size(&binary)),
        mib(size(&built)),
        mib(size(&debug)),
    );
    Ok(Dist { binary, debug })
}

/// Bytes as MiB.
pub fn mib(n: u64) -> f64 {
    n as f64 / (1u64 << 20) as f64
}

/// The largest stick binary CI accepts (issue 7: about a tenth of the 113 MiB it was).
pub const STICK_BINARY_LIMIT: u64 = 16 << 20;

/// Runs one CI phase, printing how long it took.
fn phase<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    eprintln!("ci: {name} ...");
    let start = Instant::now();
    let r = f();
    eprintln!(
        "ci: {name} {} in {:.0} s",
        if r.is_ok() { "done" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    r
}

/// `ci`: fixtures (including the real test model), formatting, lints, the dist build,
/// then every test (what `.ci/run` calls, and the README's test command). The dist
/// binary's path goes to the tests in `OFFGRID_DIST_BINARY`; the size test that needs it
/// is `#[ignore]`d in a plain `cargo test` and run here with `--ignored`.
///
/// Everything here — xtask itself (the `cargo xtask` alias), clippy, the stick binary and
/// the tests — builds in the one `dist` profile, so the dependencies and llama.cpp (its
/// build script runs once per profile, shared by check and build) are compiled once per
/// CI run instead of once per profile: the run stays well inside its time budget on a
/// 2-core machine. The tests therefore drive the binary that ships.
pub fn ci() -> Result<()> {
    let cargo = env!("CARGO");
    let all = Instant::now();
    phase("fixtures", || crate::fixtures::run(&["--model"]))?;
    phase("fmt", || {
        run(Command::new(cargo)
            .current_dir(root())
            .args(["fmt", "--all", "--", "--check"]))
    })?;
    phase("clippy", || {
        run(Command::new(cargo).current_dir(root()).args([
            "clippy",
            "--profile",
            "dist",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    })?;
    let d = phase("dist", dist)?;
    let size = std::fs::metadata(&d.binary)?.len();
    println!(
        "stick binary: {} is {size} bytes ({:.1} MiB, limit {:.0} MiB); debug info at HQ: {}",
        d.binary.display(),
        mib(size),
        mib(STICK_BINARY_LIMIT),
        d.debug.display()
    );
    let tests = Instant::now();
    phase("tests", || {
        let status = Command::new(cargo)
            .current_dir(root())
            .env("OFFGRID_DIST_BINARY", &d.binary)
            .args(["test", "--profile", "dist", "--workspace"])
            .status()?;
        if !status.success() {
            bail!("tests failed");
        }
        let status = Command::new(cargo)
            .current_dir(root())
            .env("OFFGRID_DIST_BINARY", &d.binary)
            .args([
                "test",
                "--profile",
                "dist",
                "--test",
                "tests",
                "--",
                "--ignored",
                "conventions::",
            ])
            .status()?;
        if !status.success() {
            bail!("the dist-binary tests failed");
        }
        Ok(())
    })?;
    println!(
        "test suite wall time: {:.0} s; ci total: {:.0} s",
        tests.elapsed().as_secs_f64(),
        all.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes `size` bytes of incompressible (random-looking) data, like quantized weights.
pub fn write_incompressible(path: &Path, size: u64, seed: u64) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    fill_incompressible(&mut f, size, seed)?;
    f.flush()?;
    Ok(())
}

/// Writes `size` incompressible bytes (the same for the same `seed`) to `w`.
pub fn fill_incompressible(w: &mut dyn std::io::Write, size: u64, seed: u64) -> Result<()> {
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
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
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

/// Lowercase hex SHA-256 of a file, read in 1 MiB blocks.
pub fn sha256_file(p: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(p).with_context(|| format!("opening '{}'", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// An unencrypted key pair `dir/hq.key`, `dir/hq.pub` made by stock `minisign -G -W`.
pub fn minisign_keypair(dir: &Path) -> Result<()> {
    run(Command::new("minisign")
        .args(["-G", "-W", "-f", "-p"])
        .arg(dir.join("hq.pub"))
        .arg("-s")
        .arg(dir.join("hq.key")))
    .context("making a key with minisign -G -W (apt-get install minisign)")
}
