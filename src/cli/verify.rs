//! `offgrid verify PATH`: checks a USB tree against trusted keys and prints the outcome
//! as text (a summary line on stdout, extras as warnings on stderr, failures as the
//! error) or as JSON Lines (SPEC.md §9). Exit 0 verified, 1 verification failed,
//! 2 usage or I/O error (SPEC.md §5).
//!
//! PATH a file: an update pack, verified by `offgrid::update::verify_pack` (SPEC.md §7).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};

use offgrid::trust::SignatureStatus;
use offgrid::verify::{self, Signer, TreeReport, VerifyError, VerifyOptions};

use super::{json_line, out, progress_fn, Ctx};

/// The version of the JSON Lines records `verify --json` prints (SPEC.md §9).
pub const JSON_SCHEMA: u32 = 1;

/// Arguments of `offgrid verify`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The USB tree to verify (the folder holding manifest.toml and signatures/), or an
    /// update pack file
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub trust: super::trust_args::TrustArgs,
    /// Print JSON Lines records (SPEC.md §9) on stdout instead of text
    #[arg(long)]
    pub json: bool,
    /// Do not look for files the manifest does not name
    #[arg(long)]
    pub no_extras: bool,
}

fn signers_text(signers: &[Signer]) -> String {
    signers
        .iter()
        .map(|s| format!("{} (fingerprint {})", s.key_id, s.fingerprint))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    if args.path.is_file() {
        let policy = following(&args, ctx)?;
        return super::apply_update::verify_pack_cmd(&args.path, &policy, args.json, ctx);
    }
    let result = verify(&args, ctx);
    if args.json {
        print_json(&args, &result)?;
    } else if let Some(r) = match &result {
        Ok(r) => Some(r),
        Err(e) => e
            .downcast_ref::<VerifyError>()
            .and_then(VerifyError::report),
    } {
        print_text(r, ctx, result.is_ok())?;
    }
    result.map(|_| ExitCode::SUCCESS)
}

/// The trust policy for `args.path`, after the chain of roots it carries (SPEC.md §19.3),
/// saying on stderr which roots were followed.
fn following(args: &Args, ctx: &Ctx) -> anyhow::Result<offgrid::trust::TrustPolicy> {
    let (policy, roots) = args.trust.policy_following(&args.path)?;
    if !roots.is_empty() {
        ctx.note(&format!(
            "trust: following root(s) {} carried by '{}' (checked; nothing recorded)",
            super::apply_update::versions(&roots),
            args.path.display()
        ));
    }
    Ok(policy)
}

fn verify(args: &Args, ctx: &Ctx) -> anyhow::Result<TreeReport> {
    let policy = following(args, ctx)?;
    let pb = ctx.bar("verifying", args.json);
    let opts = VerifyOptions {
        skip_extras: args.no_extras,
    };
    let r = verify::verify_tree(&args.path, &policy, &opts, &progress_fn(&pb));
    pb.finish_and_clear();
    Ok(r?)
}

/// Warns about each signature that did not count, and why (tree and pack verify alike).
pub fn warn_uncounted(ctx: &Ctx, signatures: &[offgrid::trust::SignatureReport]) {
    for s in signatures {
        let key = s.key_id.as_deref().unwrap_or("?");
        match &s.status {
            SignatureStatus::Valid => {}
            SignatureStatus::UnknownKey => ctx.warn(&format!(
                "signature '{}' (key {key}) is by a key you did not trust; it was not counted",
                s.file
            )),
            SignatureStatus::Invalid { reason } => ctx.warn(&format!(
                "signature '{}' (key {key}) is invalid and was not counted: {reason}",
                s.file
            )),
        }
    }
}

fn print_text(r: &TreeReport, ctx: &Ctx, ok: bool) -> anyhow::Result<()> {
    // The threshold was met; say which other signatures did not count, and why.
    warn_uncounted(ctx, &r.signatures);
    for e in &r.extras {
        let what = if e.kind == "file" {
            String::new()
        } else {
            format!(" ({})", e.kind)
        };
        ctx.warn(&format!(
            "'{}'{what} is not in the signed manifest; it was not verified and install ignores it",
            e.path
        ));
    }
    if r.extras_total > r.extras.len() {
        ctx.warn(&format!(
            "and {} more entries not in the signed manifest",
            r.extras_total - r.extras.len()
        ));
    }
    if ok {
        let what = match &r.volume {
            Some(v) if v.volumes > 1 => format!("volume {} of {} of release", v.volume, v.volumes),
            _ => "release".into(),
        };
        let mut s = format!(
            "verified {what} {} of {}: {} files, {}, signed by {}\n",
            r.release,
            r.bundle_id,
            r.files.len(),
            offgrid::usb::templates::human_size(r.total_bytes),
            signers_text(&r.signers)
        );
        for (k, paths) in r.volume.iter().flat_map(|v| &v.elsewhere) {
            let shown: Vec<&str> = paths.iter().take(5).map(String::as_str).collect();
            let more = if paths.len() > 5 {
                format!(" and {} more", paths.len() - 5)
            } else {
                String::new()
            };
            s.push_str(&format!(
                "  on volume {k}: {} file(s): {}{more}\n",
                paths.len(),
                shown.join(", ")
            ));
        }
        out(&s).context("writing to stdout")?;
    }
    Ok(())
}

/// One `signature` record per signature (SPEC.md §9.1), with the fingerprint of each
/// trusted signer that counted.
pub fn signature_records(
    sigs: &[offgrid::trust::SignatureReport],
    signers: &[Signer],
) -> anyhow::Result<()> {
    for s in sigs {
        let mut v = serde_json::to_value(s)?;
        if let (Some(id), Value::Object(o)) = (&s.key_id, &mut v) {
            if let Some(k) = signers.iter().find(|k| &k.key_id == id) {
                o.insert("fingerprint".into(), json!(k.fingerprint));
            }
        }
        json_line("signature", v)?;
    }
    Ok(())
}

fn print_json(args: &Args, result: &anyhow::Result<TreeReport>) -> anyhow::Result<()> {
    let verr = result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<VerifyError>());
    let report = match result {
        Ok(r) => Some(r),
        Err(_) => verr.and_then(VerifyError::report),
    };
    let signers: &[Signer] = report.map_or(&[], |r| &r.signers);
    let sigs = match (report, verr) {
        (Some(r), _) => &r.signatures[..],
        (None, Some(e)) => e.signatures(),
        _ => &[],
    };
    signature_records(sigs, signers)?;
    if let Some(r) = report {
        for f in &r.files {
            json_line("file", serde_json::to_value(f)?)?;
        }
        for e in &r.extras {
            json_line("extra", serde_json::to_value(e)?)?;
        }
        if let Some(v) = &r.volume {
            json_line(
                "volume",
                json!({
                    "volume": v.volume,
                    "volumes": v.volumes,
                    "elsewhere": v.elsewhere.iter().map(|(k, p)| json!({"volume": k, "files": p})).collect::<Vec<_>>(),
                }),
            )?;
        }
    }
    let error = result.as_ref().err().map(|e| {
        // The first line of the message, without the `help:` lines.
        e.to_string().lines().next().unwrap_or_default().to_owned()
    });
    json_line(
        "summary",
        json!({
            "schema": JSON_SCHEMA,
            "verified": result.is_ok(),
            "root": args.path.display().to_string(),
            "bundle_id": report.map(|r| &r.bundle_id),
            "release": report.map(|r| &r.release),
            "manifest_sha256": report.map(|r| &r.manifest_sha256),
            "files": report.map(|r| r.files.len()),
            "failed": report.map(|r| r.failures().count()),
            "bytes": report.map(|r| r.total_bytes),
            "extras": report.map(|r| r.extras_total),
            "signers": signers,
            "error": error,
        }),
    )?;
    Ok(())
}
