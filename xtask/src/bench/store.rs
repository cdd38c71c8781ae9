//! `cargo xtask bench store [--size-mib N]`: the disk a site home uses for 3 kept releases
//! of one model-like file of N MiB (a GGUF header with a chat template, then
//! incompressible tensor bytes) whose releases differ only by an edit of the template, as
//! an operator ships them: `pack-usb` 1.0, `create-update-pack` 1.1 and 1.2, then
//! `install` and two `apply-update --keep 3`. Prints the home's usage (each inode once,
//! the way `du` counts, and `du -s --apparent-size` itself) and its ratio to one
//! release's size. Disk, not time, is measured, so it runs the dev build of the core.
//!
//! Two layouts in one run: the default, where a model of at least 256 MiB travels with
//! its metadata in a shard of its own (SPEC.md §16.2) so the store (§7.5) keeps the
//! tensor shard once (goal ≤ 1.05), and `--split-models-over never`, one model file per
//! release, which the store cannot share (expect about 3.0).

use std::process::Command;

use anyhow::{Context, Result};

use super::Opts;
use crate::util;

/// Writes a GGUF header carrying `template`, then the bytes of `tail`.
fn model(path: &std::path::Path, tail: &std::path::Path, template: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    offgrid::gguf::write_synthetic(
        &mut out,
        &[
            (
                "general.architecture",
                offgrid::gguf::MetaValue::Str("llama".into()),
            ),
            ("general.file_type", offgrid::gguf::MetaValue::U32(15)),
            (
                "tokenizer.chat_template",
                offgrid::gguf::MetaValue::Str(template.into()),
            ),
        ],
        &[("token_embd.weight", vec![8], &[0u8; 32])],
    )?;
    std::io::copy(&mut std::fs::File::open(tail)?, &mut out)?;
    out.flush()?;
    Ok(())
}

pub fn bench(opts: &Opts) -> Result<()> {
    // Disk, not time, is measured: the dev build of the core serves.
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(util::root())
        .args(["build", "--no-default-features", "--bin", "offgrid"]);
    util::run(&mut build)?;
    let bin = util::target_dir().join("debug/offgrid");
    let work = util::root().join("target/bench-store");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    util::run(
        Command::new("minisign")
            .args(["-G", "-W", "-f", "-p"])
            .arg(work.join("hq.pub"))
            .arg("-s")
            .arg(work.join("hq.key")),
    )
    .context("making a key with minisign -G -W (apt-get install minisign)")?;
    let tail = work.join("tensors.bin");
    util::write_incompressible(&tail, opts.size_mib << 20, 7)?;
    for v in ["1.0", "1.1", "1.2"] {
        let dir = work.join(format!("v{v}"));
        std::fs::create_dir_all(&dir)?;
        let template = format!(
            "{{% for m in messages %}}<|{}|>{{{{ m.role }}}}: {{{{ m.content }}}}\n{{% endfor %}}",
            v
        );
        model(&dir.join("model.gguf"), &tail, &template)?;
    }
    std::fs::remove_file(&tail)?;
    println!(
        "bench store: 3 kept releases of a {} MiB model differing by a chat-template edit",
        opts.size_mib
    );
    let mut ratios = Vec::new();
    for (label, split) in [
        ("default (metadata in a shard of its own)", None),
        ("--split-models-over never (one model file)", Some("never")),
    ] {
        let r = one_layout(&bin, &work, split)?;
        println!("  {label}:");
        println!(
            "    one release: {} bytes ({:.1} MiB; files: {}); home (versions + objects, each inode once): {} bytes ({:.1} MiB); du -s --apparent-size of the home: {} bytes",
            r.one,
            util::mib(r.one),
            r.files.join(", "),
            r.used,
            util::mib(r.used),
            r.du
        );
        let ratio = r.used as f64 / r.one.max(1) as f64;
        println!("    ratio home / one release: {ratio:.3}");
        ratios.push(ratio);
    }
    println!(
        "  goal: default ratio <= 1.05: {:.3} ({}); whole files for comparison: {:.3}",
        ratios[0],
        if ratios[0] <= 1.05 { "met" } else { "NOT met" },
        ratios[1]
    );
    Ok(())
}

/// What one layout's home used.
struct Usage {
    one: u64,
    used: u64,
    du: u64,
    files: Vec<String>,
}

/// Packs 1.0, makes the 1.1 and 1.2 packs, installs and applies them into a new home
/// with `--split-models-over split` when given; returns the home's usage.
fn one_layout(bin: &std::path::Path, work: &std::path::Path, split: Option<&str>) -> Result<Usage> {
    let tag = split.unwrap_or("default");
    let hq = work.join(format!("hq-{tag}"));
    let og = |args: &[&str]| -> Result<()> {
        let mut c = Command::new(bin);
        c.args(args)
            .current_dir(work)
            .env("OFFGRID_HQ", &hq)
            .env("OFFGRID_BIN_DIR", work.join("bin"))
            .env_remove("OFFGRID_HOME");
        if let Some(s) = split {
            c.args(["--split-models-over", s]);
        }
        util::run(&mut c)
    };
    let stick = format!("stick-{tag}");
    og(&[
        "pack-usb",
        &stick,
        "--release",
        "1.0",
        "--model",
        "v1.0/model.gguf",
        "--no-host-binary",
        "--sign-with",
        "hq.key",
    ])?;
    for (since, v) in [("1.0", "1.1"), ("1.1", "1.2")] {
        let m = format!("v{v}/model.gguf");
        let out = format!("u{v}-{tag}.ogpack");
        og(&[
            "create-update-pack",
            "--since",
            since,
            "--release",
            v,
            "--model",
            &m,
            "--no-host-binary",
            "--no-delta",
            "--level",
            "1",
            "--sign-with",
            "hq.key",
            "-o",
            &out,
        ])?;
    }
    let home = work.join(format!("home-{tag}"));
    let h = home.to_string_lossy().into_owned();
    let site = |args: &[&str]| -> Result<()> {
        util::run(
            Command::new(bin)
                .args(args)
                .current_dir(work)
                .env_remove("OFFGRID_HOME"),
        )
    };
    site(&[
        "install", "--from", &stick, "--pubkey", "hq.pub", "--home", &h,
    ])?;
    for v in ["1.1", "1.2"] {
        let pack = format!("u{v}-{tag}.ogpack");
        site(&["apply-update", &pack, "--keep", "3", "--home", &h])?;
    }
    let used = offgrid::update::store::usage(&[home.join("versions"), home.join("objects")]);
    let one = offgrid::update::store::usage(&[home.join("current/")]);
    let du = Command::new("du")
        .args(["-s", "--apparent-size", "--block-size=1"])
        .arg(&home)
        .output()?;
    let du = String::from_utf8_lossy(&du.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    let mut files: Vec<String> = std::fs::read_dir(home.join("current/models"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    Ok(Usage {
        one,
        used,
        du,
        files,
    })
}
