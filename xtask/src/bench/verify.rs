//! `cargo xtask bench verify [--size-mib N]`: `offgrid verify` of a signed USB tree
//! against `sha256sum` over the same files (the standard way to check a copy).
//!
//! The tree holds one model-like file of N MiB of incompressible data (default 1024) plus
//! a few small files; its manifest is written here (4 MiB chunks, as pack-usb writes)
//! and signed with the stock `minisign` tool, so the benchmark needs neither pack-usb nor
//! keygen. Both sides run with a warm page cache (the data was just written and nothing
//! is dropped): this measures hashing and scheduling, not the USB stick. Best of 3.
//! Besides wall time it prints CPU time (user + sys, from GNU time) and the load average:
//! on a shared machine the wall ratio depends on how many cores offgrid actually gets,
//! the CPU ratio does not.

use std::fmt::Write as _;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::Opts;
use crate::util;

const CHUNK: usize = 4 << 20;

/// Whole-file and per-chunk sha256 of a file.
fn digests(path: &Path) -> Result<(u64, String, Vec<String>)> {
    let mut f = fs::File::open(path)?;
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let mut n = 0;
        while n < CHUNK {
            let k = f.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        chunks.push(hex::encode(Sha256::digest(&buf[..n])));
        size += n as u64;
        if n < CHUNK {
            break;
        }
    }
    Ok((size, hex::encode(whole.finalize()), chunks))
}

/// Wall time, CPU time (user + sys) and peak RSS of one run, from GNU time.
struct Run {
    wall: Duration,
    cpu: Duration,
    max_rss_kib: u64,
}

/// Runs `sh -c script` three times; the run with the least wall time, and the least CPU
/// time seen.
fn best_of_3(script: &str) -> Result<Run> {
    let out = std::env::temp_dir().join(format!("xtask-verify-time-{}", std::process::id()));
    let mut best: Option<Run> = None;
    for _ in 0..3 {
        let st = Command::new("/usr/bin/time")
            .args(["-f", "%e %U %S %M", "-o"])
            .arg(&out)
            .args(["sh", "-c", script])
            .status()
            .context("running /usr/bin/time (apt-get install time)")?;
        if !st.success() {
            bail!("`{script}` failed ({st})");
        }
        let text = fs::read_to_string(&out)?;
        let v: Vec<f64> = text
            .lines()
            .last()
            .unwrap_or("")
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        if v.len() != 4 {
            bail!("unexpected GNU time output: {text}");
        }
        let r = Run {
            wall: Duration::from_secs_f64(v[0]),
            cpu: Duration::from_secs_f64(v[1] + v[2]),
            max_rss_kib: v[3] as u64,
        };
        best = Some(match best {
            None => r,
            Some(b) => Run {
                wall: b.wall.min(r.wall),
                cpu: b.cpu.min(r.cpu),
                max_rss_kib: b.max_rss_kib.max(r.max_rss_kib),
            },
        });
    }
    let _ = fs::remove_file(&out);
    best.context("no runs")
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

pub fn bench(opts: &Opts) -> Result<()> {
    let dir = util::root().join("target/xtask-bench/verify");
    let _ = fs::remove_dir_all(&dir);
    let tree = dir.join("usb");
    fs::create_dir_all(tree.join("models"))?;
    fs::create_dir_all(tree.join("signatures"))?;
    let size = opts.size_mib << 20;
    eprintln!(
        "bench verify: writing {} MiB of model-like data…",
        opts.size_mib
    );
    // (path, kind, model name)
    let files = [
        ("models/bench.gguf", "model", Some("bench")),
        ("README.txt", "doc", None),
        ("CHANGELOG.txt", "changelog", None),
    ];
    util::write_incompressible(&tree.join(files[0].0), size, 42)?;
    fs::write(tree.join(files[1].0), "Plug in, run ./run.sh\n")?;
    util::write_incompressible(&tree.join(files[2].0), 10_000, 7)?;

    let mut m = String::from(
        "format = \"offgrid-bundle/1\"\nbundle_id = \"org.example.bench\"\nrelease = \"1.0.0\"\ncreated = \"2026-11-21T12:00:00Z\"\nplatforms = []\n",
    );
    for (path, kind, model) in files {
        let (sz, sha, chunks) = digests(&tree.join(path))?;
        let chunks: Vec<String> = chunks.iter().map(|c| format!("\"{c}\"")).collect();
        write!(
            m,
            "\n[[files]]\npath = \"{path}\"\nsize = {sz}\nsha256 = \"{sha}\"\nkind = \"{kind}\"\nchunk_size = {CHUNK}\nchunks = [{}]\n",
            chunks.join(", ")
        )?;
        if let Some(name) = model {
            write!(m, "\n[files.model]\nname = \"{name}\"\n")?;
        }
    }
    let manifest = tree.join("manifest.toml");
    fs::write(&manifest, &m)?;
    let comment = format!(
        "offgrid bundle=org.example.bench release=1.0.0 manifest_sha256={}",
        hex::encode(Sha256::digest(m.as_bytes()))
    );
    let (pubk, seck) = (dir.join("hq.pub"), dir.join("hq.key"));
    util::run(
        Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&pubk)
            .arg("-s")
            .arg(&seck),
    )
    .context("making a key with the stock minisign (apt-get install minisign)")?;
    util::run(
        Command::new("minisign")
            .arg("-S")
            .arg("-s")
            .arg(&seck)
            .arg("-m")
            .arg(&manifest)
            .arg("-x")
            .arg(tree.join("signatures/hq.minisig"))
            .args(["-t", &comment]),
    )?;

    let offgrid = util::build_offgrid(false)?;
    let ours = format!(
        "{} verify {} --pubkey {} >/dev/null",
        shell_quote(&offgrid),
        shell_quote(&tree),
        shell_quote(&pubk)
    );
    // Check once that it verifies (and warm the cache), then time.
    util::run(Command::new("sh").args(["-c", &ours]))?;
    let theirs = format!(
        "cd {} && sha256sum {} >/dev/null",
        shell_quote(&tree),
        files.map(|f| f.0).join(" ")
    );
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let o = best_of_3(&ours)?;
    let t = best_of_3(&theirs)?;
    let total = size + 10_000 + 22;
    println!(
        "bench verify: {:.0} MiB in 3 files (1 model of {} MiB, 4 MiB chunks), {} cores, warm page cache (nothing dropped), best of 3",
        total as f64 / (1 << 20) as f64,
        opts.size_mib,
        util::cores()
    );
    println!(
        "load average before timing: {} (other processes share these cores: wall times are noisy; CPU times are not)",
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    util::report("verify", o.wall, "sha256sum", t.wall, "<= 0.2");
    util::report("verify CPU time (user+sys)", o.cpu, "sha256sum", t.cpu, "-");
    println!(
        "verify: offgrid {:.0} MB/s, sha256sum {:.0} MB/s; offgrid used {:.2} cores on average; peak RSS offgrid {} MiB, sha256sum {} MiB",
        total as f64 / o.wall.as_secs_f64() / 1e6,
        total as f64 / t.wall.as_secs_f64() / 1e6,
        o.cpu.as_secs_f64() / o.wall.as_secs_f64().max(1e-9),
        o.max_rss_kib / 1024,
        t.max_rss_kib / 1024
    );
    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept {}", dir.display());
    } else {
        let _ = fs::remove_dir_all(&dir);
    }
    Ok(())
}
