//! `cargo xtask bench store [--size-mib N]`: the disk a site home uses for 3 kept releases
//! of one model-like file of N MiB (a GGUF header with a chat template, then
//! incompressible tensor bytes) whose releases differ only by an edit of the template, as
//! an operator ships them: `pack-usb` 1.0, `create-update-pack` 1.1 and 1.2, then
//! `install` and two `apply-update --keep 3`. Prints the home's usage (each inode once,
//! the way `du` counts, and `du -s --apparent-size` itself) and its ratio to one
//! release's size. Disk, not time, is measured, so it runs the dev build of the core.
//!
//! The store (SPEC.md §7.5) shares whole files, so a template edit costs a whole new
//! model file: expect a ratio near 3.0 (the goal, ≤ 1.05, needs the tensor data
//! stored apart from the GGUF metadata; SPEC.md §7.17 names the gap).

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
    let og = |args: &[&str]| -> Result<()> {
        util::run(
            Command::new(&bin)
                .args(args)
                .current_dir(&work)
                .env("OFFGRID_HQ", work.join("hq"))
                .env("OFFGRID_BIN_DIR", work.join("bin"))
                .env_remove("OFFGRID_HOME"),
        )
    };
    for (i, v) in ["1.0", "1.1", "1.2"].iter().enumerate() {
        let dir = work.join(format!("v{v}"));
        std::fs::create_dir_all(&dir)?;
        let template = format!(
            "{{% for m in messages %}}<|{}|>{{{{ m.role }}}}: {{{{ m.content }}}}\n{{% endfor %}}",
            ["im_start", "start", "turn"][i]
        );
        model(&dir.join("model.gguf"), &tail, &template)?;
        let m = format!("v{v}/model.gguf");
        if i == 0 {
            og(&[
                "pack-usb",
                "stick",
                "--release",
                v,
                "--model",
                &m,
                "--no-host-binary",
                "--sign-with",
                "hq.key",
            ])?;
        } else {
            let out = format!("u{v}.ogpack");
            og(&[
                "create-update-pack",
                "--since",
                ["1.0", "1.1"][i - 1],
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
    }
    std::fs::remove_file(&tail)?;
    let home = work.join("home");
    let h = home.to_string_lossy().into_owned();
    og(&[
        "install", "--from", "stick", "--pubkey", "hq.pub", "--home", &h,
    ])?;
    og(&["apply-update", "u1.1.ogpack", "--keep", "3", "--home", &h])?;
    og(&["apply-update", "u1.2.ogpack", "--keep", "3", "--home", &h])?;
    let used = offgrid::update::store::usage(&[home.join("versions"), home.join("objects")]);
    let one = offgrid::update::store::usage(&[home.join("current/")]);
    let du = Command::new("du")
        .args(["-s", "--apparent-size", "--block-size=1"])
        .arg(&home)
        .output()?;
    let du = String::from_utf8_lossy(&du.stdout);
    let du_bytes: u64 = du
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    println!(
        "bench store: 3 kept releases of a {} MiB model differing by a chat-template edit",
        opts.size_mib
    );
    println!(
        "  one release: {one} bytes ({:.1} MiB); home (versions + objects, each inode once): {used} bytes ({:.1} MiB); du -s --apparent-size of the home: {du_bytes} bytes",
        util::mib(one),
        util::mib(used)
    );
    println!(
        "  ratio home / one release: {:.3} (goal <= 1.05; whole-file objects: a template edit stores a whole new model file)",
        used as f64 / one.max(1) as f64
    );
    Ok(())
}
