//! `offgrid rollback`: returns the site to the previous installed release (kept on disk
//! by install and apply-update) in one atomic switch.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use offgrid::update::{self, Home};

use super::Ctx;

/// Arguments of `offgrid rollback`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Site home [env: OFFGRID_HOME] [default: ~/.offgrid]
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print the result as JSON Lines
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.as_deref());
    let r = update::rollback::rollback(&home)
        .with_context(|| format!("rolling back '{}'", home.root.display()))?;
    super::install::print_recovery(ctx, r.recovered.as_ref(), args.json)?;
    if args.json {
        super::json_line("rolled-back", serde_json::to_value(&r)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    super::out(&format!(
        "rolled back '{}' from release {} to {}\n  release {} is kept; 'offgrid rollback' again returns to it\n",
        r.home, r.from, r.to, r.from
    ))?;
    Ok(ExitCode::SUCCESS)
}
