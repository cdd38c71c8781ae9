//! `cargo xtask`: project tasks (fixtures, bench, dist, ci). STUB.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("usage: cargo xtask fixtures|bench|dist|ci")
}
