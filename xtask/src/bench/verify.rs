//! `cargo xtask bench verify`: STUB, to be written.

use anyhow::{bail, Result};

use super::Opts;

pub fn bench(_opts: &Opts) -> Result<()> {
    bail!("bench verify is not written yet")
}
