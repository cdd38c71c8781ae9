//! `cargo xtask bench run`: tokens per second of `offgrid run` against llama.cpp itself on
//! the real test model with the same thread count, in one run. The crate's vendored
//! llama.cpp has no `tools/` (no llama-bench), so `llama_mini_bench.cpp` — llama-bench's
//! pp/tg loop over the C API — is compiled against the very static libraries
//! `llama-cpp-sys-2` built for offgrid (same objects, same flags, read from its
//! CMakeCache.txt). Also the time from start to
//! the first answer token of a stick model verified before (the verification cache), next
//! to the first, hashing, start.
//!
//! Prompt processing: `pp512` (one 512-token batch) against `offgrid run` on a
//! prompt of about 500 tokens. Generation: `tg128` against the generation speed
//! `offgrid run --stats` reports for a long greedy answer (which also pays sampling and
//! detokenisation, and starts after the prompt rather than at an empty context).
//! `OFFGRID_BENCH_NATIVE=1` also builds llama.cpp with `GGML_NATIVE=ON`, to show what this CPU's
//! vector units would add over the portable build. Best of 3 everywhere.
//! Known gap: the offgrid binary is the dev-profile build (its llama.cpp is compiled
//! RelWithDebInfo, -O2); the reference links the same libraries, so the ratio is fair.

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
    let llama_bench = build_mini_bench(&cache, false)?;

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
        "prompt processing: offgrid {our_pp:.1} tokens/s ({pp_tokens} tokens), llama.cpp pp512 {ref_pp:.1} tokens/s, ratio {:.3} (goal >= 0.95)",
        our_pp / ref_pp
    );
    println!(
        "generation: offgrid {our_tg:.1} tokens/s ({tg_tokens} tokens), llama.cpp tg128 {ref_tg:.1} tokens/s, ratio {:.3} (goal >= 0.95)",
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
        let nb = build_mini_bench(&cache, true)?;
        let (npp, ntg) = llama_bench_tps(&nb, &model, threads)?;
        println!(
            "this CPU's vector units (llama.cpp GGML_NATIVE=ON): pp512 {npp:.1} tokens/s ({:.2}x the portable build), tg128 {ntg:.1} tokens/s ({:.2}x)",
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

const MINI_BENCH: &str = include_str!("llama_mini_bench.cpp");

/// Compiles `llama_mini_bench.cpp` against the static llama.cpp libraries of the
/// llama-cpp-sys-2 build whose CMakeCache.txt is `cache` (the same objects offgrid links),
/// or, with `native`, against a fresh `GGML_NATIVE=ON` CMake build of the same source and
/// flags. Returns the executable.
fn build_mini_bench(cache: &Path, native: bool) -> Result<PathBuf> {
    let build = cache.parent().context("CMakeCache.txt has no folder")?;
    let out = build.parent().context("no out folder")?;
    let text = fs::read_to_string(cache)?;
    let get = |key: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(key)?
                .split_once('=')
                .map(|(_, v)| v.to_owned())
        })
    };
    let src = PathBuf::from(get("CMAKE_HOME_DIRECTORY:").context("no source directory")?);
    let cxx_flags = get("CMAKE_CXX_FLAGS:").unwrap_or_default();
    let mut libdir = out.join("lib");
    let dir = fixtures::cache_dir()
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        .join(if native {
            "llama-mini-bench-native"
        } else {
            "llama-mini-bench"
        });
    fs::create_dir_all(&dir)?;
    if native {
        // The same CMake options, but GGML_NATIVE=ON: what this CPU could do.
        let nb = dir.join("build");
        let mut cfg = Command::new("cmake");
        cfg.arg("-S").arg(&src).arg("-B").arg(&nb);
        for l in text.lines() {
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            let Some((name, ty)) = k.split_once(':') else {
                continue;
            };
            if (name.starts_with("GGML_")
                || name.starts_with("LLAMA_")
                || name == "CMAKE_BUILD_TYPE"
                || name == "CMAKE_C_FLAGS"
                || name == "CMAKE_CXX_FLAGS")
                && matches!(ty, "BOOL" | "STRING")
                && name != "GGML_BACKEND_DIR"
            {
                cfg.arg(format!("-D{name}={v}"));
            }
        }
        cfg.args([
            "-DGGML_NATIVE=ON",
            "-DLLAMA_BUILD_COMMON=OFF",
            "-DLLAMA_BUILD_TOOLS=OFF",
        ]);
        if !nb.join("src/libllama.a").is_file() {
            eprintln!(
                "building llama.cpp with GGML_NATIVE=ON into '{}'",
                nb.display()
            );
            util::run(&mut cfg).context("configuring llama.cpp")?;
            util::run(
                Command::new("cmake")
                    .arg("--build")
                    .arg(&nb)
                    .args(["--target", "llama", "-j"])
                    .arg(util::cores().to_string()),
            )
            .context("building llama.cpp")?;
        }
        libdir = nb.clone();
    }
    let exe = dir.join("llama-mini-bench");
    let cpp = dir.join("llama_mini_bench.cpp");
    fs::write(&cpp, MINI_BENCH)?;
    let find = |name: &str| -> Result<PathBuf> {
        walkdir(&libdir)
            .into_iter()
            .find(|p| p.file_name().is_some_and(|f| f == name))
            .with_context(|| format!("no {name} under '{}'", libdir.display()))
    };
    let mut cc = Command::new("c++");
    cc.args(cxx_flags.split_whitespace())
        .args(["-O2", "-std=c++17"])
        .arg(format!("-I{}", src.join("include").display()))
        .arg(format!("-I{}", src.join("ggml/include").display()))
        .arg(&cpp)
        .arg("-o")
        .arg(&exe);
    for lib in ["libllama.a", "libggml.a", "libggml-cpu.a", "libggml-base.a"] {
        cc.arg(find(lib)?);
    }
    cc.args(["-lpthread", "-ldl", "-lm"]);
    util::run(&mut cc).context("compiling llama-mini-bench")?;
    Ok(exe)
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// llama.cpp's own prompt (512) and generation (128) tokens per second, best of [`RUNS`].
fn llama_bench_tps(bin: &Path, model: &Path, threads: usize) -> Result<(f64, f64)> {
    let out = Command::new(bin)
        .arg(model)
        .arg(threads.to_string())
        .args(["512", "128"])
        .arg(RUNS.to_string())
        .output()
        .context("running llama-mini-bench")?;
    if !out.status.success() {
        bail!(
            "llama-mini-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let val = |k: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.trim().parse().ok())
            .with_context(|| format!("llama-mini-bench printed no '{k}'"))
    };
    Ok((val("pp ")?, val("tg ")?))
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
        dirs: Vec::new(),
        commands: Vec::new(),
        format: FORMAT.into(),
        bundle_id: "org.example.bench".into(),
        release: "1".parse()?,
        created: "2026-11-21T12:00:00Z".into(),
        platforms: vec![],
        default_model: Some(name.into()),
        expires: None,
        volumes: None,
        files: vec![FileEntry {
            path: rel.into(),
            size,
            sha256: hex::encode(whole.finalize()),
            kind: FileKind::Model,
            platform: None,
            mode: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            chunks,
            volume: None,
            parts: Vec::new(),
            model: Some(ModelInfo {
                format: None,
                name: name.into(),
                architecture: info.architecture,
                quantization: info.quantization,
                parameters: Some(info.parameters),
                context_length: info.context_length,
                shard: None,
                shards: None,
            }),
        }],
    };
    fs::write(root.join("manifest.toml"), m.to_toml())?;
    Ok(())
}
