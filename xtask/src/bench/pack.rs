//! `cargo xtask bench pack [--size-mib N]`: times `offgrid pack-usb` of one model-like
//! file (a GGUF header followed by incompressible bytes, like quantized weights) against
//! the standard way to copy and hash the same data, `cp -r SRC DST && sha256sum DST/*`,
//! best of 3 each, in one run, and prints the data size, core count and ratio (goal ≤ 0.8).
//!
//! Page cache: the source is written just before, so with enough RAM both sides read it
//! from memory, and `sha256sum` re-reads the fresh copy from memory too; only the writes
//! differ. `pack-usb` fsyncs every file (it must, for a stick that is pulled out), `cp`
//! does not, so a second line times `cp -r SRC DST && sync && sha256sum DST/*` for the
//! like-for-like comparison. Both run twice: under `target/` (disk: when the disk's
//! write-back is the bottleneck, both sides wait for it and the ratio tends to 1) and in
//! `/dev/shm` (tmpfs: the CPU work per byte is compared). On a real USB stick the write
//! speed of the stick dominates everything.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::Opts;
use crate::util;

pub fn bench(opts: &Opts) -> Result<()> {
    let bin = util::build_offgrid(false)?;
    println!(
        "bench pack: {} MiB model-like data (one GGUF), {} cores, best of 3; source in page cache",
        opts.size_mib,
        util::cores()
    );
    // On disk, both sides wait for the disk's write-back (pack-usb fsyncs, so the like-for-
    // like line is the one with `sync`); in memory (tmpfs) the comparison is of the work
    // each does per byte: one pass copy+hash against copy, then re-read and hash.
    compare(&bin, &util::root().join("target/bench-pack"), opts, "disk")?;
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        compare(&bin, &shm.join("offgrid-bench-pack"), opts, "tmpfs")?;
    }
    Ok(())
}

fn compare(bin: &Path, work: &Path, opts: &Opts, place: &str) -> Result<()> {
    let _ = std::fs::remove_dir_all(work);
    let src = work.join("src");
    std::fs::create_dir_all(&src)?;
    let size = opts.size_mib << 20;
    let model = src.join("model.gguf");
    util::write_model_like(&model, size, 0x5eed)?;
    util::minisign_keypair(work)?;

    let stick = work.join("stick");
    let copy = work.join("copy");
    let ours = util::best_of(
        3,
        &format!("rm -rf {} && sync", util::shell_quote(&stick)),
        &format!(
            "{} pack-usb {} --release 1.0 --model {} --no-host-binary --sign-with {} >/dev/null",
            util::shell_quote(bin),
            util::shell_quote(&stick),
            util::shell_quote(&model),
            util::shell_quote(&work.join("hq.key"))
        ),
    )?;
    let prep = format!("rm -rf {} && sync", util::shell_quote(&copy));
    let theirs = util::best_of(
        3,
        &prep,
        &format!(
            "cp -r {} {} && sha256sum {}/* >/dev/null",
            util::shell_quote(&src),
            util::shell_quote(&copy),
            util::shell_quote(&copy)
        ),
    )?;
    let theirs_sync = util::best_of(
        3,
        &prep,
        &format!(
            "cp -r {} {} && sync && sha256sum {}/* >/dev/null",
            util::shell_quote(&src),
            util::shell_quote(&copy),
            util::shell_quote(&copy)
        ),
    )?;
    // The tree must be right, not just fast.
    util::run(
        Command::new(bin)
            .arg("verify")
            .arg(&stick)
            .arg("--pubkey")
            .arg(work.join("hq.pub")),
    )
    .context("the benchmarked tree does not verify")?;

    println!("{place} ({}):", work.display());
    util::report(
        "  pack-usb vs cp -r && sha256sum",
        ours.wall,
        "cp+sha256sum",
        theirs.wall,
        "<= 0.8",
    );
    util::report(
        "  pack-usb vs cp -r && sync && sha256sum",
        ours.wall,
        "cp+sync+sha256sum",
        theirs_sync.wall,
        "<= 0.8",
    );
    println!(
        "  peak RSS: offgrid {} MiB, cp+sha256sum {} MiB",
        ours.max_rss_kib >> 10,
        theirs.max_rss_kib >> 10
    );
    let _ = std::fs::remove_dir_all(work);
    Ok(())
}
