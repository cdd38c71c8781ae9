//! `offgrid keygen`: makes a minisign-format signing key pair, password-protected unless
//! `--unencrypted`, and prints its key id and spoken fingerprint.
//!
//! Also holds the CLI's password source for secret keys ([`password_source`],
//! [`load_secret_key`]), which other commands that sign use: `OFFGRID_PASSWORD` if set,
//! else a prompt on the terminal, else a clear error. Known gap: the prompt needs stdin to
//! be a terminal; a password cannot be piped in (use `OFFGRID_PASSWORD`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use offgrid::keys::{self, KeyError, SecretKey};

use super::Ctx;

/// The environment variable scripts give the secret key's password in.
pub const PASSWORD_ENV: &str = "OFFGRID_PASSWORD";

/// Arguments of `offgrid keygen`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to write the secret key (keep it off the stick, back it up)
    #[arg(long, short = 's', value_name = "FILE")]
    secret: PathBuf,
    /// Where to write the public key (give it to every site)
    #[arg(long, short = 'p', value_name = "FILE")]
    public: PathBuf,
    /// Write the secret key without a password (tests, automation on a trusted host)
    #[arg(long)]
    unencrypted: bool,
    /// Replace existing key files
    #[arg(long)]
    force: bool,
    /// Print the result as a JSON Lines record
    #[arg(long)]
    json: bool,
}

const NO_TTY_HELP: &str = "help: set OFFGRID_PASSWORD for scripts, run in a terminal to be asked, or pass --unencrypted for a key without a password";

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let password = if args.unencrypted {
        None
    } else if let Some(pw) = env_password()? {
        Some(pw)
    } else if std::io::stdin().is_terminal() {
        Some(prompt_new_password()?)
    } else {
        anyhow::bail!(
            "no password for the new secret key '{}': {PASSWORD_ENV} is not set and there is no terminal to ask on\n{NO_TTY_HELP}",
            args.secret.display()
        );
    };
    let encrypted = password.is_some();
    if encrypted {
        ctx.note(&format!(
            "encrypting the new secret key '{}' (scrypt, a few seconds)...",
            args.secret.display()
        ));
    }
    let pk = keys::generate(&args.secret, &args.public, password, args.force)
        .context("making the key pair")?;
    if args.json {
        super::json_line(
            "key",
            serde_json::json!({
                "key_id": pk.key_id(),
                "fingerprint": pk.fingerprint(),
                "public_key": pk.to_base64(),
                "secret_file": args.secret.display().to_string(),
                "public_file": args.public.display().to_string(),
                "encrypted": encrypted,
            }),
        )?;
    } else {
        super::out(&format!(
            "key id:      {}\nfingerprint: {}\nsecret key:  {} ({})\npublic key:  {}\n",
            pk.key_id(),
            pk.fingerprint(),
            args.secret.display(),
            if encrypted {
                "encrypted"
            } else {
                "NOT encrypted"
            },
            args.public.display(),
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `OFFGRID_PASSWORD`, if set (an empty value counts as set).
fn env_password() -> anyhow::Result<Option<String>> {
    match std::env::var(PASSWORD_ENV) {
        Ok(pw) => Ok(Some(pw)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            anyhow::bail!("{PASSWORD_ENV} is not valid UTF-8")
        }
    }
}

/// Reads one password from the terminal, prompting on stderr.
fn prompt(text: &str) -> std::io::Result<String> {
    let config = rpassword::ConfigBuilder::new()
        .output_writer(std::io::stderr())
        .build();
    rpassword::prompt_password_with_config(text, config)
}

/// Asks for a new password twice on the terminal.
fn prompt_new_password() -> anyhow::Result<String> {
    let first = prompt("Password for the new secret key: ").context("reading the password")?;
    if first.is_empty() {
        anyhow::bail!("the password is empty\nhelp: type a password, or pass --unencrypted for a key without one");
    }
    let second = prompt("Password again: ").context("reading the password")?;
    if first != second {
        anyhow::bail!("the two passwords differ\nhelp: run 'offgrid keygen' again");
    }
    Ok(first)
}

/// The password source for loading a secret key: `OFFGRID_PASSWORD` if set, else a
/// prompt on the terminal (stderr), else an error whose `help:` line says what to do.
#[allow(dead_code)] // for the commands that sign (pack-usb, create-update-pack)
pub fn password_source(path: &Path) -> impl FnMut() -> Result<String, String> + '_ {
    move || {
        match std::env::var(PASSWORD_ENV) {
            Ok(pw) => return Ok(pw),
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(format!("{PASSWORD_ENV} is not valid UTF-8"))
            }
            Err(std::env::VarError::NotPresent) => {}
        }
        if !std::io::stdin().is_terminal() {
            return Err(format!(
                "the key is encrypted, {PASSWORD_ENV} is not set and there is no terminal to ask on\nhelp: set {PASSWORD_ENV}, or run in a terminal"
            ));
        }
        prompt(&format!("Password for secret key '{}': ", path.display()))
            .map_err(|e| e.to_string())
    }
}

/// Loads a secret key, asking for its password as [`password_source`] does.
#[allow(dead_code)] // for the commands that sign (pack-usb, create-update-pack)
pub fn load_secret_key(path: &Path) -> Result<SecretKey, KeyError> {
    SecretKey::load(path, &mut password_source(path))
}
