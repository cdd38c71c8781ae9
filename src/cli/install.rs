//! `offgrid install`: STUB, to be written.

use std::process::ExitCode;

use super::Ctx;

/// Arguments of `offgrid install`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let _ = (args, ctx);
    anyhow::bail!("'offgrid install' is not implemented yet")
}
