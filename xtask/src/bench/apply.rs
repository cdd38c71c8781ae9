//! `cargo xtask bench apply [--size-mib N]`: times `offgrid apply-update` of a pack whose
//! payload is one model-like file of N MiB (a GGUF header, then incompressible bytes)
//! shipped whole as a zstd frame, against the standard way to unpack the same content,
//! `zstd -d -c X.tar.zst | tar -xf - -C DIR`, best of 3 each, and prints the data size,
//! core count and ratio (goal ≤ 1.2 including fsync).
//!
//! apply-update does more than unpack: it checks the pack's signature, hashes every
//! payload and every produced file, fsyncs each file and folder, and switches
//! atomically. So the baseline is timed twice: as is, and followed by `sync -f DIR`
//! (durable, like apply). Each apply starts from a fresh home with release 1.0
//! installed (untimed).

use std::process::Command;

use anyhow::Result;

use super::Opts;
use crate::util;

pub fn bench(opts: &Opts) -> Result<()> {
    let bin = util::build_offgrid(false)?;
    let work = util::root().join("target/bench-apply");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("v1"))?;
    std::fs::create_dir_all(work.join("v2/models"))?;
    util::minisign_keypair(&work)?;
    util::write_model_like(&work.join("v1/model.gguf"), 1 << 20, 1)?;
    // The new release's content, laid out as it lands on the site.
    let model2 = work.join("v2/models/model.gguf");
    util::write_model_like(&model2, opts.size_mib << 20, 2)?;
    let data = std::fs::metadata(&model2)?.len();

    let og = |args: &[&str]| -> Result<()> {
        util::run(
            Command::new(&bin)
                .args(args)
                .current_dir(&work)
                .env("OFFGRID_HQ", work.join("hq"))
                .env_remove("OFFGRID_HOME"),
        )
    };
    og(&[
        "pack-usb",
        "stick",
        "--release",
        "1.0",
        "--model",
        "v1/model.gguf",
        "--no-host-binary",
        "--sign-with",
        "hq.key",
    ])?;
    og(&[
        "create-update-pack",
        "--since",
        "1.0",
        "--release",
        "1.1",
        "--model",
        "v2/models/model.gguf",
        "--no-host-binary",
        "--no-delta",
        "--level",
        "3",
        "--sign-with",
        "hq.key",
        "-o",
        "u.ogpack",
    ])?;
    // The same content as a standard .tar.zst (same zstd level).
    util::run(Command::new("sh").arg("-c").arg(format!(
        "tar -cf - -C {} . | zstd -q -3 -o {}",
        util::shell_quote(&work.join("v2")),
        util::shell_quote(&work.join("base.tar.zst"))
    )))?;

    let home = work.join("home");
    let out = work.join("out");
    let ours = util::best_of(
        3,
        &format!(
            "rm -rf {h} && {b} install --from {s} --pubkey {k} --home {h} >/dev/null && sync",
            h = util::shell_quote(&home),
            b = util::shell_quote(&bin),
            s = util::shell_quote(&work.join("stick")),
            k = util::shell_quote(&work.join("hq.pub"))
        ),
        &format!(
            "{} apply-update {} --home {} >/dev/null",
            util::shell_quote(&bin),
            util::shell_quote(&work.join("u.ogpack")),
            util::shell_quote(&home)
        ),
    )?;
    let prep = format!(
        "rm -rf {o} && mkdir {o} && sync",
        o = util::shell_quote(&out)
    );
    let unpack = format!(
        "zstd -d -c {} | tar -xf - -C {}",
        util::shell_quote(&work.join("base.tar.zst")),
        util::shell_quote(&out)
    );
    let theirs = util::best_of(3, &prep, &unpack)?;
    let theirs_sync = util::best_of(
        3,
        &prep,
        &format!("{unpack} && sync -f {}", util::shell_quote(&out)),
    )?;

    println!(
        "bench apply: {} MiB model-like data (pack {} MiB), {} cores",
        data >> 20,
        std::fs::metadata(work.join("u.ogpack"))?.len() >> 20,
        util::cores()
    );
    util::report(
        "apply (durable)",
        ours.wall,
        "zstd -d | tar -x && sync -f",
        theirs_sync.wall,
        "<= 1.2",
    );
    util::report(
        "apply (durable)",
        ours.wall,
        "zstd -d | tar -x (no fsync)",
        theirs.wall,
        "<= 1.2 incl. fsync",
    );
    println!(
        "peak RSS: offgrid {} MiB, zstd|tar {} MiB",
        ours.max_rss_kib >> 10,
        theirs.max_rss_kib >> 10
    );
    Ok(())
}
