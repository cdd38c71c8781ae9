//! `cargo xtask bench run`: tokens per second of `offgrid run` against llama.cpp's own
//! `llama-bench`, built from the very llama.cpp source the `llama-cpp-sys-2` crate vendors
//! with the very CMake flags its build script used (read back from its CMakeCache.txt), on
//! the real test model with the same thread count, in one run. Also the time from start to
//! the first answer token of a stick model verified before (the verification cache), next
//! to the first, hashing, start.
//!
//! Prompt processing: llama-bench `pp512` (one 512-token batch) against `offgrid run` on a
//! prompt of about 500 tokens. Generation: llama-bench `tg128` against the generation speed
//! `offgrid run --stats` reports for a long greedy answer (which also pays sampling and
//! detokenisation, and starts after the prompt rather than at an empty context).
//! `OFFGRID_BENCH_NATIVE=1` also builds llama-bench with `GGML_NATIVE=ON`, to show what this CPU's
//! vector units would add over the portable build. Best of 3 everywhere.
//! Known gap: the offgrid binary is the dev-profile build (its llama.cpp is compiled
//! RelWithDebInfo, -O2), and llama-bench is built the same way for a fair ratio.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use super::Opts;
use crate::{fixtures, util};

const RUNS: usize = 3;

pub fn bench(opts: &Opts) -> Result<()> {
    let _ = opts;
    let native = std::env::var_os("OFFGRID_BENCH_NATIVE").is_some_and(|v| v == "1");
    let model = fixtures::model_path();
    if !model.is_file() {
        bail!(
            "the real test model '{}' is missing: run cargo xtask fixtures --model",
            model.display()
        );
    }
    let threads = physical_cores();
    let target = target_dir();
    eprintln!(
        "building offgrid (dev profile, llama feature) in '{}'",
        target.display()
    );
    util::run(
        Command::new(env!("CARGO"))
            .current_dir(util::root())
            .args(["build", "--bin", "offgrid"]),
    )?;
    let offgrid = target.join("debug/offgrid");
    let cache = find_cmake_cache(&target.join("debug/build"))?;
    let llama_bench = build_llama_bench(&cache, &[])?;

    println!(
        "bench run: model {} ({} bytes), {} threads, {} cores",
        model.display(),
        fs::metadata(&model)?.len(),
        threads,
        util::cores()
    );

    let (ref_pp, ref_tg) = llama_bench_tps(&llama_bench, &model, threads)?;
    let (our_pp, our_tg, pp_tokens, tg_tokens) = offgrid_tps(&offgrid, &model, threads)?;
    println!(
        "prompt processing: offgrid {our_pp:.1} tokens/s ({pp_tokens} tokens), llama-bench pp512 {ref_pp:.1} tokens/s, ratio {:.3} (goal >= 0.95)",
        our_pp / ref_pp
    );
    println!(
        "generation: offgrid {our_tg:.1} tokens/s ({tg_tokens} tokens), llama-bench tg128 {ref_tg:.1} tokens/s, ratio {:.3} (goal >= 0.95)",
        our_tg / ref_tg
    );

    let (cold, warm, unverified) = first_token_times(&offgrid, &model, threads)?;
    println!(
        "time to first token (stick model, 'Hi', best of {RUNS}): verified before {:.0} ms, first start (hashing {} MB) {:.0} ms, --no-verify {:.0} ms",
        warm.as_secs_f64() * 1e3,
        fs::metadata(&model)?.len() / 1_000_000,
        cold.as_secs_f64() * 1e3,
        unverified.as_secs_f64() * 1e3
    );

    if native {
        let nb = build_llama_bench(&cache, &[("GGML_NATIVE", "ON")])?;
        let (npp, ntg) = llama_bench_tps(&nb, &model, threads)?;
        println!(
            "this CPU's vector units (llama-bench GGML_NATIVE=ON): pp512 {npp:.1} tokens/s ({:.2}x the portable build), tg128 {ntg:.1} tokens/s ({:.2}x)",
            npp / ref_pp,
            ntg / ref_tg
        );
    }
    Ok(())
}

fn physical_cores() -> usize {
    // The same default `offgrid run` uses: physical cores, at most the usable CPUs.
    let logical = util::cores();
    let phys = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .map(|s| {
            let mut ids = std::collections::BTreeSet::new();
            let mut phys_id = String::new();
            for l in s.lines() {
                if let Some(v) = l.strip_prefix("physical id") {
                    phys_id = v.trim_start_matches([' ', '\t', ':']).to_owned();
                } else if let Some(v) = l.strip_prefix("core id") {
                    let core_id = v.trim_start_matches([' ', '\t', ':']).to_owned();
                    ids.insert((phys_id.clone(), core_id));
                }
            }
            ids.len()
        })
        .filter(|n| *n > 0)
        .unwrap_or(logical);
    phys.min(logical)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
}

/// The CMakeCache.txt of the newest llama-cpp-sys-2 build under `build_dir`.
fn find_cmake_cache(build_dir: &Path) -> Result<PathBuf> {
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for e in fs::read_dir(build_dir)
        .with_context(|| format!("reading '{}'", build_dir.display()))?
        .flatten()
    {
        if !e
            .file_name()
            .to_string_lossy()
            .starts_with("llama-cpp-sys-2-")
        {
            continue;
        }
        let c = e.path().join("out/build/CMakeCache.txt");
        if let Ok(m) = fs::metadata(&c).and_then(|m| m.modified()) {
            if best.as_ref().is_none_or(|(t, _)| m > *t) {
                best = Some((m, c));
            }
        }
    }
    best.map(|(_, p)| p).context(
        "no llama-cpp-sys-2 CMake build found (build offgrid with the llama feature first)",
    )
}

/// Builds `llama-bench` from the crate's llama.cpp with the crate's CMake flags (plus
/// `extra` overrides) into the fixtures cache, once.
fn build_llama_bench(cache: &Path, extra: &[(&str, &str)]) -> Result<PathBuf> {
    let text = fs::read_to_string(cache)?;
    let mut src = None;
    let mut defs = BTreeMap::new();
    for l in text.lines() {
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let Some((name, ty)) = k.split_once(':') else {
            continue;
        };
        if name == "CMAKE_HOME_DIRECTORY" {
            src = Some(PathBuf::from(v));
        }
        let wanted = (name.starts_with("GGML_") || name.starts_with("LLAMA_"))
            && matches!(ty, "BOOL" | "STRING")
            || matches!(
                name,
                "CMAKE_BUILD_TYPE" | "CMAKE_C_FLAGS" | "CMAKE_CXX_FLAGS" | "BUILD_SHARED_LIBS"
            );
        if wanted && name != "GGML_BACKEND_DIR" {
            defs.insert(name.to_owned(), v.to_owned());
        }
    }
    let src = src.context("CMakeCache.txt names no source directory")?;
    // llama-bench is a tool: build the tools, not the tests, examples or server.
    for (k, v) in [
        ("LLAMA_BUILD_TOOLS", "ON"),
        ("LLAMA_BUILD_COMMON", "ON"),
        ("LLAMA_BUILD_EXAMPLES", "OFF"),
        ("LLAMA_BUILD_TESTS", "OFF"),
        ("LLAMA_BUILD_SERVER", "OFF"),
        ("LLAMA_CURL", "OFF"),
    ] {
        defs.insert(k.into(), v.into());
    }
    for (k, v) in extra {
        defs.insert((*k).into(), (*v).into());
    }
    let mut h = Sha256::new();
    h.update(src.to_string_lossy().as_bytes());
    for (k, v) in &defs {
        h.update(format!("{k}={v}\n"));
    }
    let dir = fixtures::cache_dir()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        .join(format!("llama-bench-{}", &hex::encode(h.finalize())[..12]));
    let bin = dir.join("bin/llama-bench");
    if bin.is_file() {
        return Ok(bin);
    }
    eprintln!(
        "building llama-bench from '{}' into '{}' ({})",
        src.display(),
        dir.display(),
        defs.iter()
            .filter(|(k, _)| k.starts_with("GGML_N")
                || k.starts_with("GGML_O")
                || *k == "CMAKE_BUILD_TYPE")
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut cfg = Command::new("cmake");
    cfg.arg("-S").arg(&src).arg("-B").arg(&dir);
    for (k, v) in &defs {
        cfg.arg(format!("-D{k}={v}"));
    }
    util::run(&mut cfg).context("configuring llama.cpp with cmake")?;
    util::run(
        Command::new("cmake")
            .arg("--build")
            .arg(&dir)
            .args(["--target", "llama-bench", "-j"])
            .arg(util::cores().to_string()),
    )
    .context("building llama-bench")?;
    if !bin.is_file() {
        bail!("cmake built no '{}'", bin.display());
    }
    Ok(bin)
}

/// llama-bench's pp512 and tg128 tokens per second (best of [`RUNS`] repetitions).
fn llama_bench_tps(bin: &Path, model: &Path, threads: usize) -> Result<(f64, f64)> {
    let out = Command::new(bin)
        .arg("-m")
        .arg(model)
        .args(["-p", "512", "-n", "128", "-o", "json", "-r"])
        .arg(RUNS.to_string())
        .arg("-t")
        .arg(threads.to_string())
        .output()
        .context("running llama-bench")?;
    if !out.status.success() {
        bail!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut pp, mut tg) = (None, None);
    // Each record holds n_prompt, n_gen and samples_ts; take the best sample.
    let v: serde_json::Value =
        serde_json::from_str(&text).context("llama-bench printed no JSON")?;
    for rec in v.as_array().context("llama-bench JSON is not an array")? {
        let n_prompt = rec["n_prompt"].as_f64().unwrap_or(0.0);
        let n_gen = rec["n_gen"].as_f64().unwrap_or(0.0);
        let best = rec["samples_ts"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s.as_f64()).fold(0.0, f64::max))
            .unwrap_or(0.0);
        if n_prompt > 0.0 && n_gen == 0.0 {
            pp = Some(best);
        } else if n_gen > 0.0 && n_prompt == 0.0 {
            tg = Some(best);
        }
    }
    Ok((
        pp.context("no pp record from llama-bench")?,
        tg.context("no tg record from llama-bench")?,
    ))
}

/// A prompt of about 500 tokens asking for a long answer.
fn long_prompt() -> String {
    let mut p = String::new();
    let s = "The harbour master logged every ship that entered the bay, noting its name, its cargo, the weather and the hour. ";
    while p.len() < 2000 {
        p.push_str(s);
    }
    p.push_str("Now count from 1 to 300, one number per line.");
    p
}

/// offgrid's prompt and generation tokens/s (best of [`RUNS`]) and the token counts.
fn offgrid_tps(bin: &Path, model: &Path, threads: usize) -> Result<(f64, f64, u64, u64)> {
    let prompt = long_prompt();
    let (mut pp, mut tg, mut np, mut ng) = (0.0f64, 0.0f64, 0, 0);
    for _ in 0..RUNS {
        let out = Command::new(bin)
            .arg("run")
            .arg(model)
            .args([
                "--prompt",
                &prompt,
                "--temp",
                "0",
                "--max-tokens",
                "128",
                "--stats",
            ])
            .args(["--ctx", "2048", "--threads", &threads.to_string()])
            .output()
            .context("running offgrid run")?;
        if !out.status.success() {
            bail!(
                "offgrid run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("stats:"))
            .context("offgrid printed no stats line")?;
        let (p_tok, p_tps) = stat(line, "prompt ")?;
        let (g_tok, g_tps) = stat(line, "generation ")?;
        if p_tps > pp {
            pp = p_tps;
            np = p_tok;
        }
        if g_tps > tg {
            tg = g_tps;
            ng = g_tok;
        }
    }
    Ok((pp, tg, np, ng))
}

/// Parses "`key`N tokens in … (X tokens/s)" out of a stats line.
fn stat(line: &str, key: &str) -> Result<(u64, f64)> {
    let rest = &line[line.find(key).context("stats line lacks a field")? + key.len()..];
    let n: u64 = rest
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("stats token count")?;
    let open = rest.find('(').context("stats rate")?;
    let tps: f64 = rest[open + 1..]
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .context("stats rate")?;
    Ok((n, tps))
}

/// Time from spawning `offgrid run` on a stick model to its first stdout byte: first start
/// (verifies and fills the cache), verified before (cache hit), and `--no-verify`.
fn first_token_times(
    bin: &Path,
    model: &Path,
    threads: usize,
) -> Result<(Duration, Duration, Duration)> {
    let tmp = std::env::temp_dir().join(format!("offgrid-bench-run-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let stick = tmp.join("stick");
    fs::create_dir_all(stick.join("models"))?;
    let rel = "models/smollm2.gguf";
    if fs::hard_link(model, stick.join(rel)).is_err() {
        fs::copy(model, stick.join(rel))?;
    }
    write_manifest(&stick, rel, "smollm2")?;
    let cache = tmp.join("cache");
    let once = |extra: &[&str]| -> Result<Duration> {
        let start = Instant::now();
        let mut child = Command::new(bin)
            .args(["run", "--stick"])
            .arg(&stick)
            .args(["--prompt", "Hi", "--temp", "0", "--max-tokens", "4"])
            .args(["--threads", &threads.to_string()])
            .args(extra)
            .env("OFFGRID_CACHE_DIR", &cache)
            .env("OFFGRID_HOME", tmp.join("home"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut b = [0u8; 1];
        let mut out = child.stdout.take().context("stdout")?;
        out.read_exact(&mut b)
            .context("offgrid run printed nothing")?;
        let t = start.elapsed();
        let mut rest = Vec::new();
        let _ = out.read_to_end(&mut rest);
        if !child.wait()?.success() {
            bail!("offgrid run on the bench stick failed");
        }
        Ok(t)
    };
    let mut cold = Duration::MAX;
    for _ in 0..RUNS {
        let _ = fs::remove_dir_all(&cache);
        cold = cold.min(once(&[])?);
    }
    let mut warm = Duration::MAX;
    for _ in 0..RUNS {
        warm = warm.min(once(&[])?);
    }
    let mut unverified = Duration::MAX;
    for _ in 0..RUNS {
        unverified = unverified.min(once(&["--no-verify"])?);
    }
    let _ = fs::remove_dir_all(&tmp);
    Ok((cold, warm, unverified))
}

/// Writes a minimal manifest for one model file (real digests, no signature).
fn write_manifest(root: &Path, rel: &str, name: &str) -> Result<()> {
    use offgrid::manifest::{FileEntry, FileKind, Manifest, ModelInfo, DEFAULT_CHUNK_SIZE, FORMAT};
    let path = root.join(rel);
    let mut f = fs::File::open(&path)?;
    let mut whole = Sha256::new();
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; DEFAULT_CHUNK_SIZE as usize];
    let mut size = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let r = f.read(&mut buf[n..])?;
            if r == 0 {
                break;
            }
            n += r;
        }
        if n == 0 {
            break;
        }
        whole.update(&buf[..n]);
        chunks.push(hex::encode(Sha256::digest(&buf[..n])));
        size += n as u64;
    }
    let info = offgrid::gguf::read_info(&path)?;
    let m = Manifest {
        format: FORMAT.into(),
        bundle_id: "org.example.bench".into(),
        release: "1".parse()?,
        created: "2026-11-21T12:00:00Z".into(),
        platforms: vec![],
        default_model: Some(name.into()),
        files: vec![FileEntry {
            path: rel.into(),
            size,
            sha256: hex::encode(whole.finalize()),
            kind: FileKind::Model,
            platform: None,
            mode: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            chunks,
            model: Some(ModelInfo {
                name: name.into(),
                architecture: info.architecture,
                quantization: info.quantization,
                parameters: Some(info.parameters),
                context_length: info.context_length,
            }),
        }],
    };
    fs::write(root.join("manifest.toml"), m.to_toml())?;
    Ok(())
}
