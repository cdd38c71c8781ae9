//! `cargo xtask bench delta`: STUB, to be written.

use anyhow::{bail, Result};

use super::Opts;

pub fn bench(_opts: &Opts) -> Result<()> {
    bail!("bench delta is not written yet")
}
