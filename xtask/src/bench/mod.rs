//! `cargo xtask bench NAME`: benchmarks that run offgrid and the standard tool on the
//! same data in one process and print ratios. One file per benchmark.

mod apply;
mod clone;
mod delta;
mod fetch;
mod lan;
mod pack;
mod run;
mod store;
mod verify;

use anyhow::{bail, Result};

/// Options shared by the benchmarks.
pub struct Opts {
    /// Data size in MiB for the data-sized benchmarks (verify, pack, apply).
    pub size_mib: u64,
}

pub fn run(args: &[&str]) -> Result<()> {
    let mut size_mib = 1024;
    let mut names = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--size-mib" => {
                size_mib = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| anyhow::anyhow!("--size-mib takes a number"))?
            }
            n => names.push(n),
        }
    }
    let opts = Opts { size_mib };
    if names.is_empty() {
        bail!(
            "usage: cargo xtask bench <verify|pack|delta|apply|run|fetch|clone|lan|store|all> [--size-mib N]"
        );
    }
    for n in names {
        match n {
            "verify" => verify::bench(&opts)?,
            "pack" => pack::bench(&opts)?,
            "delta" => delta::bench(&opts)?,
            "apply" => apply::bench(&opts)?,
            "run" => run::bench(&opts)?,
            "fetch" => fetch::bench(&opts)?,
            "clone" => clone::bench(&opts)?,
            "lan" => lan::bench(&opts)?,
            "store" => store::bench(&opts)?,
            "all" => {
                verify::bench(&opts)?;
                pack::bench(&opts)?;
                delta::bench(&opts)?;
                apply::bench(&opts)?;
                run::bench(&opts)?;
            }
            other => bail!("unknown benchmark '{other}'"),
        }
    }
    Ok(())
}
