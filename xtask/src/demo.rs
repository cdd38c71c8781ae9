//! `cargo xtask demo`: the whole field journey on built-in defaults, run as a user would
//! type it, printing each command before running it:
//! keygen → pack-usb of a sample release → verify → install from the stick →
//! create an update pack for a newer release (the model's chat template edited) →
//! verify it → apply it → status → rollback → status → run the model from the stick.
//!
//! Everything happens under `target/demo/` (made anew each run). Needs the real test model
//! (`cargo xtask fixtures --model`, fetched automatically) and builds the stick binary
//! with llama.cpp (`cargo xtask dist`), which is what it runs: pack-usb copies it onto
//! the stick. What is printed before each command is exactly what runs.

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

/// The environment every command of the demo runs with (printed once, at the start).
fn env(dir: &Path) -> [(&'static str, String); 3] {
    [
        ("OFFGRID_PASSWORD", PASSWORD.to_owned()),
        ("OFFGRID_HOME", dir.join("site").display().to_string()),
        ("OFFGRID_HQ", dir.join("hq").display().to_string()),
    ]
}

/// `arg` as a shell would need it typed.
fn shell_word(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@".contains(c))
    {
        arg.to_owned()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// Prints `$ SHOWN ARGS…` (exactly the arguments given), then runs `program ARGS…` in
/// `dir` with [`env`].
fn run_shown(program: &[&str], shown: &str, dir: &Path, args: &[&str]) -> Result<()> {
    let words: Vec<String> = args.iter().map(|a| shell_word(a)).collect();
    println!("$ {shown} {}", words.join(" "));
    let (first, rest) = program.split_first().context("no program")?;
    let status = Command::new(first)
        .args(rest)
        .args(args)
        .current_dir(dir)
        .envs(env(dir))
        .status()
        .with_context(|| format!("starting {first}"))?;
    if !status.success() {
        bail!("`{shown} {}` failed ({status})", words.join(" "));
    }
    Ok(())
}

fn offgrid(bin: &Path, dir: &Path, args: &[&str]) -> Result<()> {
    let bin = bin.to_str().context("the offgrid path is not UTF-8")?;
    run_shown(&[bin], "offgrid", dir, args)
}

pub fn run(_args: &[&str]) -> Result<()> {
    let model = crate::fixtures::real_model()?;
    // The binary the sticks get (`cargo xtask dist`): pack-usb copies the running one.
    let bin = util::dist()?.binary;
    let dir: PathBuf = util::target_dir().join("demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing '{}'", dir.display()))?;
    }
    std::fs::create_dir_all(dir.join("inputs"))?;
    println!("demo directory: {}", dir.display());
    println!("offgrid is {} (cargo xtask dist)", bin.display());
    println!("every command runs in the demo directory with:");
    for (k, v) in env(&dir) {
        println!("  {k}={}", shell_word(&v));
    }

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
    run_shown(
        &["sh", "stick/run.sh"],
        "sh stick/run.sh",
        &dir,
        &[
            "run",
            MODEL_NAME,
            "--pubkey",
            "hq.pub",
            "--prompt",
            q,
            "--temp",
            "0",
            "--max-tokens",
            "24",
        ],
    )
    .context("running the model from the stick")?;
    println!(
        "\ndemo finished: everything above ran for real under {}",
        dir.display()
    );
    Ok(())
}
