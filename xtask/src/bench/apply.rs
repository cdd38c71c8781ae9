//! `cargo xtask bench apply`: STUB, to be written.

use anyhow::{bail, Result};

use super::Opts;

pub fn bench(_opts: &Opts) -> Result<()> {
    bail!("bench apply is not written yet")
}
