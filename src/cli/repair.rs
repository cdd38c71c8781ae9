//! `offgrid repair --from SOURCE…`: finds the damaged and missing files of every kept
//! release in the site home and puts them back from sticks, update packs or folders
//! holding them, verified against the home's signed manifests (SPEC.md §7.15). Exit 1
//! when something could not be repaired. Also what `install --from` a stick of the
//! release already installed runs.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use offgrid::update::repair::RepairReport;
use offgrid::update::{self, Home};

use super::Ctx;

/// Arguments of `offgrid repair`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where good copies are: a USB tree of any release, an update pack, or a folder
    /// holding trees and packs (repeatable)
    #[arg(long = "from", value_name = "SOURCE", required = true)]
    pub from: Vec<PathBuf>,
    #[command(flatten)]
    pub home: super::args::HomeArg,
    #[command(flatten)]
    pub bundle: super::args::BundleArg,
    #[command(flatten)]
    pub out: super::args::JsonArg,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let base = Home::resolve(args.home.dir());
    let mut homes = args.bundle.homes(&base)?;
    // The bundles a source is of first: their repair puts good bytes into the shared
    // store, where the other bundles' repair then finds a damaged shared file (SPEC.md
    // §7.15).
    let ids: Vec<String> = args
        .from
        .iter()
        .filter_map(|p| base.signed_source_bundle(p, None))
        .collect();
    homes.sort_by_key(|h| {
        !h.read_state()
            .ok()
            .flatten()
            .is_some_and(|s| ids.contains(&s.bundle_id))
    });
    let mut complete = true;
    for home in &homes {
        complete &= repair_one(home, &args.from, None, args.out.json, ctx)?;
    }
    Ok(exit_of(complete))
}

fn exit_of(complete: bool) -> ExitCode {
    if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(offgrid::exit::REFUSED)
    }
}

/// Repairs `home` from `from` and prints the report; `given` is a policy the operator
/// passed (it must equal the pinned one).
pub fn run_on(
    home: &Home,
    from: &[PathBuf],
    given: Option<&offgrid::trust::TrustPolicy>,
    json: bool,
    ctx: &Ctx,
) -> anyhow::Result<ExitCode> {
    repair_one(home, from, given, json, ctx).map(exit_of)
}

/// [`run_on`]: false when something could not be repaired (the reason is on stderr).
fn repair_one(
    home: &Home,
    from: &[PathBuf],
    given: Option<&offgrid::trust::TrustPolicy>,
    json: bool,
    ctx: &Ctx,
) -> anyhow::Result<bool> {
    let cache = offgrid::models::VerifyCache::user();
    let bar = ctx.bar("repairing", json);
    let r = update::repair::repair(home, from, given, cache.as_ref(), &super::progress_fn(&bar))
        .with_context(|| format!("repairing '{}'", home.root.display()))?;
    bar.finish_and_clear();
    super::install::print_recovery(ctx, r.recovered.as_ref(), json)?;
    if json {
        super::json_line("repaired", serde_json::to_value(&r)?)?;
    } else {
        super::out(&text(&r))?;
    }
    if r.complete() {
        return Ok(true);
    }
    let label = if ctx.color {
        "\x1b[31merror\x1b[0m"
    } else {
        "error"
    };
    let mut msg = String::new();
    if !r.not_found.is_empty() {
        msg.push_str(&format!(
            "{label}: {} damaged or missing file(s) of '{}' could not be repaired: no source given holds their signed bytes\n",
            r.not_found.len(),
            r.home
        ));
    }
    if !r.damaged_manifests.is_empty() {
        msg.push_str(&format!(
            "{label}: {} kept release(s) of '{}' have a manifest that does not verify, and no --from stick holds that release's signed manifest\n",
            r.damaged_manifests.len(),
            r.home
        ));
    }
    msg.push_str("help: pass a stick or update pack of the release(s) named above with --from (any verified copy holding the same bytes works)");
    ctx.note(&msg);
    Ok(false)
}

fn text(r: &RepairReport) -> String {
    let mut s = String::new();
    for x in &r.repaired_manifests {
        s.push_str(&format!(
            "repaired the signed manifest of {} from {}\n",
            x.release, x.source
        ));
    }
    if r.damaged == 0 && r.damaged_manifests.is_empty() {
        s.push_str(&format!(
            "nothing to repair in '{}': every file of the kept releases matches its signed manifest ({} file(s), {} hashed)\n",
            r.home,
            r.hashed_files,
            offgrid::usb::templates::human_size(r.hashed_bytes)
        ));
        return s;
    }
    s.push_str(&format!(
        "repaired {} of {} damaged or missing file(s) in '{}'; release {} is still current\n",
        r.repaired.len(),
        r.damaged,
        r.home,
        r.release
    ));
    for x in &r.repaired {
        s.push_str(&format!(
            "  repaired  {} '{}' from {}\n",
            x.release, x.path, x.source
        ));
    }
    for x in &r.not_found {
        s.push_str(&format!(
            "  not found {} '{}' ({}; sha256 {})\n",
            x.release, x.path, x.detail, x.sha256
        ));
    }
    for m in &r.damaged_manifests {
        s.push_str(&format!("  manifest  {m}\n"));
    }
    for src in &r.sources {
        if let Some(p) = &src.problem {
            s.push_str(&format!(
                "  source    {} '{}' not usable: {p}\n",
                src.kind, src.path
            ));
        }
    }
    s
}
