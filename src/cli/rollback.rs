//! `offgrid rollback [--to VERSION]`: returns the site to the release before the current
//! one (or to any kept release) in one atomic switch, after checking every file of that
//! release against its signed manifest (refused, exit 1, when one is damaged).

use std::process::ExitCode;

use anyhow::Context;
use offgrid::update::{self, Home};

use super::Ctx;

/// Arguments of `offgrid rollback`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub home: super::args::HomeArg,
    #[command(flatten)]
    pub bundle: super::args::BundleArg,
    /// Switch to this kept release instead of the one before the current release
    /// ('offgrid status' lists the kept releases)
    #[arg(long, value_name = "VERSION")]
    pub to: Option<offgrid::version::Version>,
    #[command(flatten)]
    pub out: super::args::JsonArg,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // One bundle's switch: with several bundles, --bundle says which (SPEC.md §7.16).
    let home = args
        .bundle
        .one(&Home::resolve(args.home.dir()), "rollback")?;
    let cache = offgrid::models::VerifyCache::user();
    let bar = ctx.bar("checking", args.out.json);
    let r = update::rollback::rollback(
        &home,
        args.to.as_ref(),
        cache.as_ref(),
        &super::progress_fn(&bar),
    )
    .with_context(|| format!("rolling back '{}'", home.root.display()))
    .map_err(|e| super::site::note_failure(&home, "rollback", e))?;
    bar.finish_and_clear();
    super::install::print_recovery(ctx, r.recovered.as_ref(), args.out.json)?;
    if args.out.json {
        super::json_line("rolled-back", serde_json::to_value(&r)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    super::out(&format!(
        "rolled back '{}' from release {} to {}\n  every file of {} checked against its signed manifest ({} hashed, {} unchanged since an earlier check)\n  release {} is kept; 'offgrid rollback --to {}' returns to it\n",
        r.home, r.from, r.to, r.to, r.hashed, r.cached, r.from, r.from
    ))?;
    Ok(ExitCode::SUCCESS)
}
