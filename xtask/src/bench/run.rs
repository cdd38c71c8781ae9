//! `cargo xtask bench run`: STUB, to be written.

use anyhow::{bail, Result};

use super::Opts;

pub fn bench(_opts: &Opts) -> Result<()> {
    bail!("bench run is not written yet")
}
