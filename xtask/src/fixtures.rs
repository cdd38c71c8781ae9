//! `cargo xtask fixtures`: STUB, to be written (owner: launcher helper).

use std::path::PathBuf;

use anyhow::{bail, Result};

pub fn run(_args: &[&str]) -> Result<()> {
    bail!("fixtures is not written yet")
}

/// The path of the real test model, fetched if needed.
pub fn real_model() -> Result<PathBuf> {
    bail!("fixtures is not written yet")
}
