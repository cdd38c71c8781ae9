//! `cargo xtask`: project tasks that are not part of the product.
//!
//! - `demo`: the whole field journey on built-in defaults (README's first command).
//! - `fixtures`: generate the small test fixtures and fetch the real test model.
//! - `bench verify|pack|delta|apply|run|fetch|all`: compare offgrid against the standard tools
//!   in one run and print ratios.
//! - `dist`: build the stick binary (profile `dist`, debug info split off); prints the
//!   debug file's path, then the binary's path on the last line.
//! - `ci`: what `.ci/run` runs after installing system packages.

mod bench;
mod demo;
mod fixtures;
mod nginx;
mod util;

use anyhow::{bail, Result};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    match args.first().map(String::as_str) {
        Some("demo") => demo::run(&rest),
        Some("fixtures") => fixtures::run(&rest),
        Some("bench") => bench::run(&rest),
        Some("dist") => util::dist().map(|d| {
            println!("debug info (keep at HQ): {}", d.debug.display());
            println!("{}", d.binary.display());
        }),
        Some("ci") => util::ci(),
        _ => bail!(
            "usage: cargo xtask <task>\n  demo                 run the whole journey on built-in defaults\n  fixtures [--model] [--old-home]  generate test fixtures; --model also fetches the real test models (GGUF, safetensors); --old-home the layout-1 home (once)\n  bench <verify|pack|delta|apply|run|fetch|store|all> [--size-mib N]\n  dist                 build the stick binary (stripped; debug info split off, kept at HQ)\n  ci                   fmt, clippy and the whole test suite"
        ),
    }
}
