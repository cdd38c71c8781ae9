//! `cargo xtask fixtures`: STUB, to be written.

use anyhow::{bail, Result};

pub fn run(_args: &[&str]) -> Result<()> {
    bail!("fixtures is not written yet")
}
