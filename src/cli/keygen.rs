//! `offgrid keygen`: STUB, to be written.

use std::process::ExitCode;

use super::Ctx;

/// Arguments of `offgrid keygen`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let _ = (args, ctx);
    anyhow::bail!("'offgrid keygen' is not implemented yet")
}
