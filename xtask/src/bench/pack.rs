//! `cargo xtask bench pack`: STUB, to be written.

use anyhow::{bail, Result};

use super::Opts;

pub fn bench(_opts: &Opts) -> Result<()> {
    bail!("bench pack is not written yet")
}
