//! `cargo xtask bench clone [--size-mib N]`: times `offgrid clone STICK D1 D2 D3` (one
//! read of the source, three writes in parallel, fsync, then each copy read back from the
//! medium with its page cache dropped and verified) against the standard way, `cp -r` to
//! each destination in turn followed by `sha256sum -c` on each, best of 3 each, in one
//! run, and prints the ratio (goal ≤ 0.5 on this 2-core machine).
//!
//! Two standard lines: `cp -r && sha256sum -c` (sha256sum re-reads each fresh copy from
//! the page cache, so it checks memory, not the medium), and the like-for-like `cp -r &&
//! sync && sha256sum -c` (clone fsyncs every copy). Both run on disk (under `target/`)
//! and in `/dev/shm` (tmpfs: CPU work per byte; there the "medium" is memory).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::Opts;
use crate::util;

pub fn bench(opts: &Opts) -> Result<()> {
    let bin = util::build_offgrid(false)?;
    println!(
        "bench clone: one stick of {} MiB model-like data to 3 destinations, {} cores, best of 3",
        opts.size_mib,
        util::cores()
    );
    compare(&bin, &util::root().join("target/bench-clone"), opts, "disk")?;
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        compare(&bin, &shm.join("offgrid-bench-clone"), opts, "tmpfs")?;
    }
    Ok(())
}

fn compare(bin: &Path, work: &Path, opts: &Opts, place: &str) -> Result<()> {
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work)?;
    let model = work.join("model.gguf");
    util::write_model_like(&model, opts.size_mib << 20, 0xc10e)?;
    util::minisign_keypair(work)?;
    let stick = work.join("stick");
    util::run(
        Command::new(bin)
            .arg("pack-usb")
            .arg(&stick)
            .args(["--release", "1.0", "--no-host-binary", "--model"])
            .arg(&model)
            .arg("--sign-with")
            .arg(work.join("hq.key")),
    )?;
    std::fs::remove_file(&model)?;
    // The checksum list `sha256sum -c` checks each copy against (made once, not timed).
    util::run(Command::new("sh").args([
        "-c",
        &format!(
            "cd {} && find . -type f -print0 | sort -z | xargs -0 sha256sum > ../SHA256SUMS",
            util::shell_quote(&stick)
        ),
    ]))?;
    let q = |name: &str| util::shell_quote(&work.join(name));
    let prep = format!("rm -rf {} {} {} && sync", q("d1"), q("d2"), q("d3"));
    let ours = util::best_of(
        3,
        &prep,
        &format!(
            "{} clone {} {} {} {} --pubkey {} >/dev/null",
            util::shell_quote(bin),
            q("stick"),
            q("d1"),
            q("d2"),
            q("d3"),
            q("hq.pub")
        ),
    )?;
    let standard = |sync: &str| {
        let each: Vec<String> = ["d1", "d2", "d3"]
            .iter()
            .map(|d| {
                format!(
                    "cp -r {} {d}{sync} && (cd {d} && sha256sum --quiet -c ../SHA256SUMS)",
                    q("stick"),
                    d = q(d)
                )
            })
            .collect();
        each.join(" && ")
    };
    let theirs = util::best_of(3, &prep, &standard(""))?;
    let theirs_sync = util::best_of(3, &prep, &standard(" && sync"))?;
    // The copies must be right, not just fast.
    for d in ["d1", "d2", "d3"] {
        util::run(
            Command::new(bin)
                .arg("verify")
                .arg(work.join(d))
                .arg("--pubkey")
                .arg(work.join("hq.pub")),
        )
        .context("a benchmarked copy does not verify")?;
    }
    println!("{place} ({}):", work.display());
    util::report(
        "  clone to 3 vs (cp -r && sha256sum -c) x3",
        ours.wall,
        "cp+sha256sum",
        theirs.wall,
        "<= 0.5",
    );
    util::report(
        "  clone to 3 vs (cp -r && sync && sha256sum -c) x3",
        ours.wall,
        "cp+sync+sha256sum",
        theirs_sync.wall,
        "<= 0.5",
    );
    println!(
        "  peak RSS: offgrid {} MiB, cp+sha256sum {} MiB",
        ours.max_rss_kib >> 10,
        theirs.max_rss_kib >> 10
    );
    let _ = std::fs::remove_dir_all(work);
    Ok(())
}
