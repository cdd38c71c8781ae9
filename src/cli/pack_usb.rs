//! `offgrid pack-usb`: STUB, to be written.

use std::process::ExitCode;

use super::Ctx;

/// Arguments of `offgrid pack-usb`.
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let _ = (args, ctx);
    anyhow::bail!("'offgrid pack-usb' is not implemented yet")
}
