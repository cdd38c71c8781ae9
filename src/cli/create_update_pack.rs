//! `offgrid create-update-pack`: STUB, to be written.

use std::process::ExitCode;

use super::Ctx;

/// Arguments of `offgrid create-update-pack`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let _ = (args, ctx);
    anyhow::bail!("'offgrid create-update-pack' is not implemented yet")
}
