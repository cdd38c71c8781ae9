//! `offgrid gc [--keep N]`: removes the kept releases of the site home beyond the newest
//! N (the current one always stays) and says how many bytes that freed (SPEC.md §7.17).

use std::process::ExitCode;

use anyhow::Context;
use offgrid::update::{self, Home};

use super::Ctx;

/// Arguments of `offgrid gc`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Releases to keep, the current one included (then the one 'rollback' returns to,
    /// then the newest others)
    #[arg(long, value_name = "N", default_value_t = update::home::DEFAULT_KEEP)]
    pub keep: usize,
    #[command(flatten)]
    pub home: super::args::HomeArg,
    #[command(flatten)]
    pub bundle: super::args::BundleArg,
    #[command(flatten)]
    pub out: super::args::JsonArg,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // Each bundle of the home (or the one given) in turn; the store is swept against
    // the kept releases of every bundle (SPEC.md §7.17).
    for home in args.bundle.homes(&Home::resolve(args.home.dir()))? {
        one(&args, ctx, &home)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn one(args: &Args, ctx: &Ctx, home: &Home) -> anyhow::Result<()> {
    let r = update::gc::gc(home, args.keep)
        .with_context(|| format!("collecting garbage in '{}'", home.root.display()))?;
    super::install::print_recovery(ctx, r.recovered.as_ref(), args.out.json)?;
    if args.out.json {
        super::json_line("gc", serde_json::to_value(&r)?)?;
        return Ok(());
    }
    let s = if r.removed.is_empty() {
        format!(
            "nothing to remove in '{}': {} release(s) kept ({}), --keep {}\n",
            r.home,
            r.kept.len(),
            r.kept.join(", "),
            r.keep
        )
    } else {
        format!(
            "removed release(s) {} from '{}', freed {} ({} bytes)\n  kept: {}\n",
            r.removed.join(", "),
            r.home,
            offgrid::usb::templates::human_size(r.freed_bytes),
            r.freed_bytes,
            r.kept.join(", ")
        )
    };
    super::out(&s)?;
    Ok(())
}
