//! `cargo xtask demo`: the whole field journey on built-in defaults, run as a user would
//! type it, printing each command before running it:
//! keygen → pack-usb of a sample release → verify → install from the stick →
//! create an update pack for a newer release (the model's chat template edited) →
//! verify it → apply it → status → rollback → status → run the model from the stick.
//!
//! Everything happens under `target/demo/` (made anew each run). Needs the real test model
//! (`cargo xtask fixtures --model`, fetched automatically) and a release build with
//! llama.cpp.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

const PASSWORD: &str = "demo password, not a secret";
const BUNDLE: &str = "org.example.clinic-assistant";
const MODEL_NAME: &str = "smollm2-135m-instruct";

fn step(title: &str) {
    println!("\n=== {title}");
}

fn offgrid(bin: &Path, dir: &Path, args: &[&str]) -> Result<()> {
    println!("$ offgrid {}", args.join(" "));
    let status = Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("OFFGRID_PASSWORD", PASSWORD)
        .env("OFFGRID_HOME", dir.join("site"))
        .env("OFFGRID_HQ", dir.join("hq"))
        .status()
        .with_context(|| format!("starting {}", bin.display()))?;
    if !status.success() {
        bail!("`offgrid {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

pub fn run(_args: &[&str]) -> Result<()> {
    let model = crate::fixtures::real_model()?;
    let bin = util::build_offgrid(true)?;
    let dir: PathBuf = util::root().join("target/demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing '{}'", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("inputs"))?;
    println!("demo directory: {}", dir.display());

    // Release 1.0.0 inputs: the model under its product name, and a changelog.
    let m1 = dir.join(format!("inputs/{MODEL_NAME}.gguf"));
    if std::fs::hard_link(&model, &m1).is_err() {
        std::fs::copy(&model, &m1)?;
    }
    std::fs::write(
        dir.join("inputs/CHANGELOG-1.0.0.md"),
        "# 1.0.0\n\nFirst release for the clinics.\n",
    )?;
    // Release 1.1.0: the same weights with an edited chat template (shifts every tensor).
    std::fs::create_dir_all(dir.join("inputs/1.1.0"))?;
    let m2 = dir.join(format!("inputs/1.1.0/{MODEL_NAME}.gguf"));
    let info = offgrid::gguf::read_info(&m1)?;
    let template =
        info.chat_template.unwrap_or_default() + "{# offgrid 1.1.0: clinic assistant template #}";
    offgrid::gguf::rewrite_string(&m1, &m2, "tokenizer.chat_template", &template)?;
    std::fs::write(
        dir.join("inputs/CHANGELOG-1.1.0.md"),
        "# 1.1.0\n\nChat template tuned for the clinics.\n",
    )?;

    step("1. HQ makes a signing key (password from OFFGRID_PASSWORD)");
    offgrid(
        &bin,
        &dir,
        &["keygen", "--secret", "hq.key", "--public", "hq.pub"],
    )?;

    step("2. HQ packs release 1.0.0 onto a USB stick");
    let m1s = m1.strip_prefix(&dir)?.display().to_string();
    offgrid(
        &bin,
        &dir,
        &[
            "pack-usb",
            "stick",
            "--bundle-id",
            BUNDLE,
            "--release",
            "1.0.0",
            "--model",
            &m1s,
            "--changelog",
            "inputs/CHANGELOG-1.0.0.md",
            "--sign-with",
            "hq.key",
        ],
    )?;

    step("3. The field verifies the stick with HQ's public key");
    offgrid(&bin, &dir, &["verify", "stick", "--pubkey", "hq.pub"])?;

    step("4. The site installs from the stick, pinning HQ's key");
    offgrid(
        &bin,
        &dir,
        &["install", "--from", "stick", "--pubkey", "hq.pub"],
    )?;

    step("5. HQ makes an update pack 1.0.0 -> 1.1.0 (delta of an edited model)");
    let m2s = m2.strip_prefix(&dir)?.display().to_string();
    offgrid(
        &bin,
        &dir,
        &[
            "create-update-pack",
            "--since",
            "1.0.0",
            "--output",
            "update-1.1.0.ogpack",
            "--bundle-id",
            BUNDLE,
            "--release",
            "1.1.0",
            "--model",
            &m2s,
            "--changelog",
            "inputs/CHANGELOG-1.1.0.md",
            "--sign-with",
            "hq.key",
        ],
    )?;

    step("6. The site verifies and applies the update");
    offgrid(
        &bin,
        &dir,
        &["verify", "update-1.1.0.ogpack", "--pubkey", "hq.pub"],
    )?;
    offgrid(&bin, &dir, &["apply-update", "update-1.1.0.ogpack"])?;
    offgrid(&bin, &dir, &["status"])?;

    step("7. Roll back to 1.0.0, then look again");
    offgrid(&bin, &dir, &["rollback"])?;
    offgrid(&bin, &dir, &["status"])?;

    step("8. Run the model straight from the stick");
    let q = "What is the capital of France? Answer in one word.";
    println!(
        "$ stick/run.sh run {MODEL_NAME} --pubkey hq.pub --prompt '{q}' --temp 0 --max-tokens 24"
    );
    let status = Command::new("sh")
        .arg(dir.join("stick/run.sh"))
        .args([
            "run",
            MODEL_NAME,
            "--prompt",
            q,
            "--temp",
            "0",
            "--max-tokens",
            "24",
        ])
        .current_dir(&dir)
        .status()?;
    if !status.success() {
        bail!("running the model from the stick failed ({status})");
    }
    println!(
        "\ndemo finished: everything above ran for real under {}",
        dir.display()
    );
    Ok(())
}
