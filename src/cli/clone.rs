//! `offgrid clone SRC DEST...`: writes a verified tree to several sticks at once and reads
//! each one back from its medium (SPEC.md §16.5). Exit 0 every destination good, 1 a
//! refusal (source untrusted or damaged, a destination busy) or a destination whose
//! read-back failed, 2 usage, I/O (a destination that could not be written) or medium.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use offgrid::clone::{self, CloneOptions, ClonePlan, DestStatus};
use offgrid::media;
use offgrid::usb::templates::human_size;

use super::trust_args::TrustArgs;
use super::Ctx;

/// The version of the JSON records `clone --json` prints (SPEC.md §16.5).
pub const JSON_SCHEMA: u32 = 1;

/// Arguments of `offgrid clone`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The tree to copy (a stick made by pack-usb, or any folder holding a signed tree)
    #[arg(value_name = "SRC")]
    pub source: PathBuf,
    /// Where to write it: one or more sticks or folders (created when missing)
    #[arg(value_name = "DEST", required = true)]
    pub dests: Vec<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// Replace a tree of another bundle or release at a destination
    #[arg(long)]
    pub force: bool,
    /// Largest file a destination may hold, e.g. 4G or bytes [default: each destination's
    /// file system's limit: 4 GiB - 1 on FAT]
    #[arg(long, value_name = "SIZE")]
    pub max_file_size: Option<String>,
    /// Check everything and print the plan; write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON records (SPEC.md §9) on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let policy = args.trust.policy()?;
    let max_file_size = match &args.max_file_size {
        Some(s) => Some(media::parse_size_arg("--max-file-size", s)?),
        None => None,
    };
    let opts = CloneOptions {
        force: args.force,
        max_file_size,
    };
    let plan = clone::plan(&args.source, &args.dests, &policy, &opts)
        .with_context(|| format!("cloning '{}'", args.source.display()))?;
    if args.dry_run {
        print_plan(&plan, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let bar = ctx.bar("cloning", args.json);
    bar.set_length(plan.bytes());
    let report = clone::clone(&plan, &policy, &super::progress_fn(&bar))
        .with_context(|| format!("cloning '{}'", args.source.display()))?;
    bar.finish_and_clear();
    let bad: Vec<_> = report.bad().collect();
    let code = if bad.is_empty() {
        ExitCode::SUCCESS
    } else if bad
        .iter()
        .any(|d| matches!(d.status, DestStatus::WriteFailed { .. }))
    {
        ExitCode::from(offgrid::exit::ERROR)
    } else {
        ExitCode::from(offgrid::exit::REFUSED)
    };
    if args.json {
        for d in &report.dests {
            super::json_line("dest", serde_json::to_value(d)?)?;
        }
        super::json_line(
            "summary",
            json!({
                "schema": JSON_SCHEMA,
                "source": args.source.display().to_string(),
                "bundle_id": report.bundle_id,
                "release": report.release,
                "files": report.files,
                "bytes": report.bytes,
                "dests": report.dests.len(),
                "ok": report.dests.len() - bad.len(),
                "bad": bad.iter().map(|d| d.dest.display().to_string()).collect::<Vec<_>>(),
            }),
        )?;
        return Ok(code);
    }
    let mut s = format!(
        "cloned release {} of {} ({} files, {}) to {} destinations\n",
        report.release,
        report.bundle_id,
        report.files,
        human_size(report.bytes),
        report.dests.len()
    );
    for d in &report.dests {
        let replaced = d
            .replaced
            .as_ref()
            .map(|r| format!(" (replaced {r})"))
            .unwrap_or_default();
        match &d.status {
            DestStatus::Ok => s.push_str(&format!(
                "  ok      '{}': read back from the medium, every file matches{replaced}\n",
                d.dest.display()
            )),
            DestStatus::WriteFailed { error } => s.push_str(&format!(
                "  FAILED  '{}': writing failed: {error}\n",
                d.dest.display()
            )),
            DestStatus::ReadBackFailed { problems } => {
                s.push_str(&format!(
                    "  BAD     '{}': read back differs from the signed manifest\n",
                    d.dest.display()
                ));
                for p in problems {
                    s.push_str(&format!("            {p}\n"));
                }
            }
        }
    }
    super::out(&s)?;
    if !bad.is_empty() {
        let names: Vec<String> = bad
            .iter()
            .map(|d| format!("'{}'", d.dest.display()))
            .collect();
        ctx.warn(&format!(
            "{} of {} destinations are bad: {}; do not hand them out (clone to them again, or replace the medium)",
            bad.len(),
            report.dests.len(),
            names.join(", ")
        ));
    }
    Ok(code)
}

fn print_plan(plan: &ClonePlan, json: bool) -> anyhow::Result<()> {
    let m = &plan.manifest;
    if json {
        super::json_line(
            "plan",
            json!({
                "schema": JSON_SCHEMA,
                "source": plan.source.display().to_string(),
                "bundle_id": m.bundle_id,
                "release": m.release.to_string(),
                "files": plan.files(),
                "bytes": plan.bytes(),
                "signers": plan.signers,
                "dests": plan.dests.iter().map(|d| json!({
                    "dest": d.dest.display().to_string(),
                    "file_system": d.limit.fs.name,
                    "max_file_size": d.limit.max,
                    "need": d.need,
                    "free": d.free,
                    "replaces": d.replaces.as_ref().map(|(b, r)| json!({"bundle_id": b, "release": r})),
                })).collect::<Vec<_>>(),
            }),
        )?;
        return Ok(());
    }
    let mut s = format!(
        "plan: clone release {} of {} from '{}' (nothing written)\n  files:   {} ({} bytes), signed by {}\n",
        m.release,
        m.bundle_id,
        plan.source.display(),
        plan.files(),
        plan.bytes(),
        plan.signers.join(", ")
    );
    for d in &plan.dests {
        let free = d
            .free
            .map(|f| format!("{f} free"))
            .unwrap_or_else(|| "free space unknown".into());
        let replaces = d
            .replaces
            .as_ref()
            .map(|(b, r)| format!(", replaces release {r} of {b}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "  dest:    '{}' ({}): {} bytes needed, {free}{replaces}\n",
            d.dest.display(),
            d.limit.fs.name,
            d.need
        ));
    }
    super::out(&s)?;
    Ok(())
}
