//! `offgrid apply-update PACK`: verifies an update pack against the keys pinned at
//! install and applies it atomically, keeping the previous release for rollback.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use offgrid::update::{self, Home};
use offgrid::usb::templates::human_size;

use super::Ctx;

/// Arguments of `offgrid apply-update`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The update pack file (from `offgrid create-update-pack`), or every part of a pack
    /// in parts (`PACK.part001-of-003` and on, any order)
    #[arg(required = true, value_name = "PACK")]
    pub pack: Vec<PathBuf>,
    #[command(flatten)]
    pub home: super::args::HomeArg,
    /// Check the pack's signatures against the pinned keys and print the plan (files,
    /// bytes, space needed); write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Releases to keep after the switch: the new one, the one it replaces (where
    /// 'rollback' goes), then the newest others; older kept releases are removed
    #[arg(long, value_name = "N", default_value_t = update::home::DEFAULT_KEEP)]
    pub keep: usize,
    #[command(flatten)]
    pub out: super::args::JsonArg,
    #[command(flatten)]
    pub receipt: super::site::ReceiptOpt,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    // The home of the bundle the pack is for (SPEC.md §7.5): refused, naming the
    // bundles held, when the home does not hold it.
    let home = Home::resolve(args.home.dir()).route_pack(&args.pack[0])?;
    if args.dry_run {
        return dry_run(&args, &home);
    }
    // Newer trust roots beside the pack first (SPEC.md §19).
    super::trust::apply_for_pack(ctx, &home, &args.pack[0], args.out.json)?;
    let bar = ctx.bar("applying", args.out.json);
    let r = update::apply::apply_update_keeping(
        &home,
        &args.pack,
        args.keep.max(1),
        &super::progress_fn(&bar),
    )
    .with_context(|| {
        format!(
            "applying {} to '{}'",
            packs_label(&args.pack),
            home.root.display()
        )
    })
    .map_err(|e| super::site::note_failure(&home, "apply-update", e))?;
    bar.finish_and_clear();
    for w in &r.warnings {
        ctx.warn(w);
    }
    super::install::print_recovery(ctx, r.recovered.as_ref(), args.out.json)?;
    // The shims resolve through `current`; refreshing them adds the new release's
    // commands (SPEC.md §18.5), in the folder the install chose.
    let shims = update::shims::recorded_dir(&home)
        .and_then(|dir| super::install::write_shims(ctx, &home, &dir));
    let pack_dir = offgrid::fsutil::parent_dir(&args.pack[0]);
    super::site::auto_receipt(ctx, &home, &pack_dir, &args.receipt, args.out.json);
    if args.out.json {
        super::json_line("applied", serde_json::to_value(&r)?)?;
        if let Some(s) = &shims {
            super::json_line("commands", serde_json::to_value(s)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = format!(
        "updated {} from release {} to {} in '{}'\n  files: {} ({} from deltas, {} whole, {} unchanged)\n  previous release {} kept; 'offgrid rollback' returns to it\n",
        r.bundle_id, r.from, r.to, r.home, r.files, r.from_deltas, r.from_zstd, r.unchanged, r.from
    );
    for p in &r.removed {
        s.push_str(&format!("  removed: {p}\n"));
    }
    if let Some(sh) = &shims {
        s.push_str(&super::install::shim_summary(sh));
    }
    if let Some(c) = &r.changelog {
        s.push_str("changelog:\n");
        for l in c.lines() {
            s.push_str(&format!("  {l}\n"));
        }
    }
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}

/// `apply-update --dry-run`: reads the pack's signed head only (signatures checked
/// against the pinned keys), prints the plan and checks the space; writes nothing.
fn dry_run(args: &Args, home: &Home) -> anyhow::Result<ExitCode> {
    let state = home.state()?;
    // The roots the pack carries (at its head or beside it) are applied in memory only.
    let mut sources = Vec::new();
    let first = &args.pack[0];
    if let Some(src) = update::reader::read_roots(first)
        .with_context(|| format!("reading the trust roots of '{}'", first.display()))?
    {
        sources.push(src);
    }
    if let Some(d) = offgrid::trustroot::find_dir(&offgrid::fsutil::parent_dir(first)) {
        sources.push(offgrid::trustroot::Source::Dir(d));
    }
    let start = offgrid::trustroot::TrustState::of_home(home, &state)?;
    let (policy, roots) = super::trust::dry_policy(start, &sources)?;
    let mut plan = None;
    const STOP: &str = "dry run: head read";
    let res = update::parts::read_any(
        &args.pack,
        &policy,
        &offgrid::no_progress,
        &mut |h| {
            plan = Some((
                h.pack.bundle_id.clone(),
                h.pack.to.to_string(),
                h.manifest.files.len(),
                h.manifest.total_size(),
                // What the pack writes; unchanged files are hard links to the current
                // release's (at most the payloads of every base the pack serves).
                h.pack
                    .payloads
                    .iter()
                    .map(|pl| pl.target_size)
                    .sum::<u64>()
                    .saturating_add(h.manifest_bytes.len() as u64)
                    .saturating_add(1 << 20),
                h.pack.parts,
            ));
            Err(update::UpdateError::usage(STOP))
        },
        &mut |_, _| Ok(()),
    );
    let Some((bundle, to, files, bytes, need, parts)) = plan else {
        res.with_context(|| format!("reading {}", packs_label(&args.pack)))?;
        anyhow::bail!("{} has no signed head", packs_label(&args.pack));
    };
    let free = offgrid::media::free_bytes(&home.root);
    if args.out.json {
        super::json_line(
            "plan",
            serde_json::json!({
                "home": home.root.display().to_string(),
                "bundle_id": bundle,
                "from": state.current.release.to_string(),
                "to": to,
                "files": files,
                "bytes": bytes,
                "need": need,
                "free": free,
                "roots": roots,
                "parts": parts,
            }),
        )?;
    } else {
        let mut s = format!(
            "plan: update {bundle} from release {} to {to} in '{}' (nothing written)\n  files:     {files} ({bytes} bytes)\n",
            state.current.release,
            home.root.display()
        );
        if let Some(n) = parts {
            s.push_str(&format!(
                "  parts:     all {n} given and their heads verified; payloads are read from them in place\n"
            ));
        }
        if !roots.is_empty() {
            s.push_str(&format!(
                "  trust:     would apply root(s) {} first (checked; nothing recorded)\n",
                versions(&roots)
            ));
        }
        s.push_str(&match free {
            Some(f) => format!("  space:     {need} bytes needed, {f} free\n"),
            None => format!("  space:     {need} bytes needed\n"),
        });
        super::out(&s)?;
    }
    offgrid::media::check_space(
        &home.root,
        "the new release",
        need,
        offgrid::media::HOME_SPACE_HELP,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `offgrid verify PACK`: checks an update pack in one streaming pass (called by
/// `cli::verify` when PATH is a file). Exit 0 verified, 1 refused.
pub fn verify_pack_cmd(
    path: &std::path::Path,
    policy: &offgrid::trust::TrustPolicy,
    json: bool,
    ctx: &Ctx,
) -> anyhow::Result<ExitCode> {
    let bar = ctx.bar("verifying", json);
    let result = update::verify_pack(path, policy, &super::progress_fn(&bar));
    bar.finish_and_clear();
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            // The same per-signature report as a tree's (SPEC.md §9.1), then the error.
            // A pack refused by its signatures already lists each one in its message.
            use offgrid::trust::TrustError::ThresholdNotMet;
            match &e {
                update::UpdateError::Trust(ThresholdNotMet { reports, .. }) => {
                    if json {
                        super::verify::signature_records(reports, &[])?;
                    } else {
                        super::verify::warn_uncounted(ctx, reports);
                    }
                }
                update::UpdateError::PackUntrusted {
                    source: ThresholdNotMet { reports, .. },
                    ..
                } if json => super::verify::signature_records(reports, &[])?,
                _ => {}
            }
            return Err(anyhow::Error::new(e)
                .context(format!("verifying update pack '{}'", path.display())));
        }
    };
    if json {
        let signers = offgrid::verify::signers_of(policy, &r.signatures);
        super::verify::signature_records(&r.signatures, &signers)?;
        super::json_line("pack-verified", serde_json::to_value(&r)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    super::verify::warn_uncounted(ctx, &r.signatures);
    super::verify::warn_uncounted(ctx, &r.release_signatures);
    let signers: Vec<String> = r
        .signatures
        .iter()
        .filter(|s| matches!(s.status, offgrid::trust::SignatureStatus::Valid))
        .filter_map(|s| s.key_id.clone())
        .collect();
    let from = r
        .from
        .iter()
        .map(|f| f.release.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let (what, size) = match &r.part {
        Some(part) => (
            format!("part {} of {} of update pack", part.part, part.parts),
            format!("{} piece(s), {}", part.pieces, human_size(part.bytes)),
        ),
        None => (
            format!("update pack '{}':", r.pack),
            format!("{}, {} payloads", human_size(r.size), r.payloads.len()),
        ),
    };
    let mut s = match &r.part {
        Some(_) => format!(
            "verified {what} {} {from} -> {}: {size}, signed by {}\n",
            r.bundle_id,
            r.to,
            signers.join(", ")
        ),
        None => format!(
            "verified {what} {} {from} -> {} ({size}), signed by {}\n",
            r.bundle_id,
            r.to,
            signers.join(", ")
        ),
    };
    if let Some(part) = &r.part {
        for e in &part.elsewhere {
            s.push_str(&format!(
                "  on part {}: {}\n",
                e.part,
                offgrid::excerpt::message(&e.payloads.join(", "))
            ));
        }
        super::out(&s)?;
        return Ok(ExitCode::SUCCESS);
    }
    for p in &r.payloads {
        let how = match p.encoding {
            update::pack::Encoding::Delta => format!(
                "delta from {} (checked against the base at apply)",
                p.base_release.as_deref().unwrap_or("?")
            ),
            update::pack::Encoding::Zstd => "zstd (decoded and checked)".into(),
        };
        s.push_str(&format!(
            "  {}  {}  {how}\n",
            p.target,
            offgrid::usb::templates::human_size(p.target_size)
        ));
    }
    for f in &r.from {
        s.push_str(&format!(
            "  from {}: {} unchanged file(s) taken from the site, {} removed\n",
            f.release,
            f.unchanged,
            f.removed.len()
        ));
    }
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}

/// `'u.ogpack'`, or `3 parts ('u.ogpack.part001-of-003', …)`, for messages.
fn packs_label(packs: &[PathBuf]) -> String {
    match packs {
        [one] => format!("'{}'", one.display()),
        many => format!(
            "{} parts ({})",
            many.len(),
            many.iter()
                .map(|p| format!("'{}'", p.display()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `2, 3, 4` for the versions of roots a dry run would apply.
pub fn versions(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}
