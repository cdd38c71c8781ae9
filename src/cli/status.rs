//! `offgrid status`: shows the installed release, the previous one, the site's history
//! and whether a recovery happened (text, or JSON Lines with `--json`). Like every
//! command that touches the home, it first finishes or undoes an interrupted operation.

use std::process::ExitCode;

use anyhow::Context;
use offgrid::update::{self, Home};

use super::Ctx;

/// Arguments of `offgrid status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub home: super::args::HomeArg,
    #[command(flatten)]
    pub bundle: super::args::BundleArg,
    #[command(flatten)]
    pub out: super::args::JsonArg,
    /// Hash every file of the current and kept releases against their signed manifests
    /// and name damaged and missing files (exit 1 when there are any)
    #[arg(long)]
    pub verify: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let homes = args.bundle.homes(&Home::resolve(args.home.dir()))?;
    // One block (one `status` record) per bundle, the home root's first (SPEC.md §7.5).
    let mut clean = true;
    for (i, home) in homes.iter().enumerate() {
        if i > 0 && !args.out.json {
            super::out("\n")?;
        }
        clean &= one(&args, ctx, home)?;
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(offgrid::exit::REFUSED)
    })
}

/// The status of one bundle's home; false when `--verify` found damage.
fn one(args: &Args, ctx: &Ctx, home: &Home) -> anyhow::Result<bool> {
    let r = update::status::status(home)
        .with_context(|| format!("reading the site home '{}'", home.root.display()))?;
    super::install::print_recovery(ctx, r.recovered_now.as_ref(), args.out.json)?;
    let mut r = r;
    let check = if args.verify {
        let bar = ctx.bar("hashing", args.out.json);
        let cache = offgrid::models::VerifyCache::user();
        let c = update::damage::verify_home(home, cache.as_ref(), &super::progress_fn(&bar))
            .with_context(|| format!("verifying the site home '{}'", home.root.display()))?;
        bar.finish_and_clear();
        // Receipts carry the last full verification (SPEC.md §17.2).
        if let Err(e) = offgrid::site::receipt::record_check(home, &c) {
            ctx.warn(&format!("the result was not recorded for receipts: {e}"));
        }
        r.hashed = true;
        Some(c)
    } else {
        None
    };
    if args.out.json {
        super::json_line("status", serde_json::to_value(&r)?)?;
        if let Some(c) = &check {
            super::json_line("verified", serde_json::to_value(c)?)?;
        }
        return Ok(verified_clean(ctx, check.as_ref()));
    }
    let mut s = format!(
        "home:      {}\nbundle:    {}\nrelease:   {}  ({})\n",
        r.home, r.bundle_id, r.release, r.path
    );
    s.push_str(&format!(
        "previous:  {}\n",
        r.previous
            .as_deref()
            .map(|p| format!("{p} (kept; 'offgrid rollback' returns to it)"))
            .unwrap_or_else(|| "none".into())
    ));
    s.push_str(&kept_text(&r));
    s.push_str(&format!(
        "files:     {} ({})",
        r.files,
        offgrid::usb::templates::human_size(r.bytes)
    ));
    if r.problems.is_empty() && !r.hashed {
        s.push_str(", all present (sizes checked, not hashed; 'offgrid status --verify' hashes every file)\n");
    } else if r.problems.is_empty() {
        s.push_str(", all present\n");
    } else {
        s.push_str(&format!(", {} problem(s):\n", r.problems.len()));
        for p in &r.problems {
            s.push_str(&format!("  {p}\n"));
        }
    }
    s.push_str(&format!(
        "trust:     {} ({} signature(s) required)\n",
        r.pinned_keys.join(", "),
        r.threshold
    ));
    match &r.site.site_id {
        Some(id) => s.push_str(&format!(
            "site:      {id} (key fingerprint {}; 'offgrid site-key' prints the key for HQ)\n",
            r.site.fingerprint.as_deref().unwrap_or("?")
        )),
        None => s.push_str("site:      no site key yet (made by the next install or receipt)\n"),
    }
    if let Some(t) = &r.site.newest_signed {
        s.push_str(&format!("signed:    newest signed time seen {t}\n"));
    }
    if r.busy {
        s.push_str(&format!(
            "busy:      {} is running now (it holds the lock)\n",
            offgrid::lockfile::describe(r.busy_by.as_ref())
        ));
    }
    s.push_str("history:\n");
    for e in &r.history {
        match &e.from {
            Some(f) => s.push_str(&format!(
                "  {}  {:8}  {f} -> {}\n",
                e.time, e.event, e.release
            )),
            None => s.push_str(&format!("  {}  {:8}  {}\n", e.time, e.event, e.release)),
        }
    }
    if r.recoveries.is_empty() {
        s.push_str("recoveries: none\n");
    } else {
        s.push_str("recoveries:\n");
        for rc in &r.recoveries {
            s.push_str(&format!(
                "  {}  interrupted {} {} -> {}: {}\n",
                rc.time,
                rc.op,
                rc.from.as_deref().unwrap_or("nothing"),
                rc.to,
                rc.outcome
            ));
        }
    }
    if let Some(c) = &check {
        s.push_str(&verified_text(c));
    }
    super::out(&s)?;
    Ok(verified_clean(ctx, check.as_ref()))
}

// Issue 10 (site): kept releases (SPEC.md §7.16) and `status --verify` (§7.14).

/// The `kept:` line: every kept release and how `rollback` reaches it.
fn kept_text(r: &update::status::StatusReport) -> String {
    let parts: Vec<String> = r
        .kept
        .iter()
        .map(|k| match k.role {
            "current" => format!("{} (current)", k.release),
            "previous" => format!("{} ('offgrid rollback' returns to it)", k.release),
            _ => format!("{} ('offgrid rollback --to {}')", k.release, k.release),
        })
        .collect();
    format!("kept:      {}\n", parts.join(", "))
}

/// The `verified:` block of `status --verify`.
fn verified_text(c: &update::damage::HomeCheck) -> String {
    let mut s = format!(
        "verified:  every file of {} kept release(s) hashed against its signed manifest ({} file(s), {})\n",
        c.versions.len(),
        c.hashed_files,
        offgrid::usb::templates::human_size(c.hashed_bytes)
    );
    for v in &c.versions {
        let role = if v.current { "current" } else { "kept" };
        if let Some(p) = &v.manifest_problem {
            s.push_str(&format!(
                "  {} ({role}): 'manifest.toml' or its signatures do not verify: {p}\n",
                v.release
            ));
        } else if v.damaged.is_empty() {
            s.push_str(&format!(
                "  {} ({role}): {} file(s) intact\n",
                v.release, v.files
            ));
        } else {
            s.push_str(&format!(
                "  {} ({role}): {} of {} file(s) damaged or missing\n",
                v.release,
                v.damaged.len(),
                v.files
            ));
            for d in &v.damaged {
                s.push_str(&format!("    '{}' {}\n", d.path, d.detail));
            }
        }
    }
    s
}

/// True unless `status --verify` found damage (then exit 1, with the fix on stderr).
fn verified_clean(ctx: &Ctx, check: Option<&update::damage::HomeCheck>) -> bool {
    match check {
        Some(c) if !c.is_clean() => {
            let label = if ctx.color {
                "\x1b[31merror\x1b[0m"
            } else {
                "error"
            };
            ctx.note(&format!(
                "{label}: {} file(s) and {} manifest(s) of the kept releases in '{}' are damaged or missing\nhelp: put them back from a verified stick or update pack holding them: offgrid repair --from USBROOT",
                c.damaged, c.damaged_manifests, c.home
            ));
            false
        }
        _ => true,
    }
}
