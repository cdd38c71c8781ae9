//! `offgrid pack-usb DEST`: writes a runnable, signed USB tree of a release, from a
//! recipe (`--recipe`) and/or flags. Order: validate the inputs, check the destination,
//! load every signing key (password from OFFGRID_PASSWORD or a prompt), read the GGUF
//! headers and plan the tree, then copy; so every refusal costs nothing.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use offgrid::media;
use offgrid::usb::{self, PackOptions, ReleaseInputs};

use super::Ctx;

/// Arguments of `offgrid pack-usb`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Folder to write the tree into: the mounted stick, or a folder on it; with
    /// --volume-size one folder per volume, in volume order (fewer: on a terminal, the
    /// next medium is asked for once each volume is written)
    #[arg(value_name = "DEST", required = true)]
    pub dests: Vec<PathBuf>,
    #[command(flatten)]
    pub inputs: super::args::ReleaseArgs,
    /// Product line id, the same for every release [default: org.offgrid.release]
    #[arg(long, value_name = "ID")]
    pub bundle_id: Option<String>,
    /// A minisign secret key to sign the manifest with, one signature per key
    /// (repeatable, at least one); password from OFFGRID_PASSWORD or a prompt
    #[arg(long = "sign-with", value_name = "KEYFILE")]
    pub sign_with: Vec<PathBuf>,
    /// Replace a tree of another release (or bundle) already at DEST
    #[arg(long)]
    pub force: bool,
    /// Largest file the destination may hold, e.g. 4G, 4GiB, 100K or bytes [default: the
    /// destination's file system's limit: 4 GiB - 1 on FAT]; larger models are split
    #[arg(long, value_name = "SIZE")]
    pub max_file_size: Option<String>,
    /// Lay the release out as volumes of this size (e.g. 4.7GB, 700M, or cd, dvd, dvd-dl,
    /// bd25, bd50), one DEST per volume; each volume verifies on its own and `install
    /// --from` takes them in any order (SPEC.md §16.6)
    #[arg(long, value_name = "SIZE")]
    pub volume_size: Option<String>,
    /// Print the plan (files, bytes, space needed, splits) and write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// After writing, read every file back from the medium (page cache dropped) and
    /// verify it against the signing keys; a mismatch exits 1 (SPEC.md §16.5)
    #[arg(long)]
    pub read_back: bool,
    #[command(flatten)]
    pub out: super::args::JsonArg,
    /// HQ release history to record the release in [env: OFFGRID_HQ] [default: ~/.offgrid-hq]
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    #[command(flatten)]
    pub expiry: super::site::ExpiresOpt,
    /// The catalog the recipe's `catalog = "NAME@VERSION"` entries come from (SPEC.md §14.7)
    #[command(flatten)]
    pub catalog: super::fetch::CatalogSource,
    #[command(flatten)]
    pub roots: super::trust::RootsOpt,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut flags = args
        .inputs
        .flags(args.bundle_id.clone(), args.sign_with.clone());
    flags.catalog_objects = super::fetch::recipe_objects(
        args.inputs.recipe.as_deref(),
        &args.catalog,
        args.history.as_deref(),
        ctx,
    )?;
    let max_flag = match &args.max_file_size {
        Some(s) => Some(media::parse_size_arg("--max-file-size", s)?),
        None => None,
    };
    let volume_size = match &args.volume_size {
        Some(s) => Some(media::parse_volume_size_arg("--volume-size", s)?),
        None => None,
    };
    if args.dests.len() > 1 && volume_size.is_none() {
        anyhow::bail!(
            "{} destinations given, but without --volume-size pack-usb writes one tree\nhelp: pass --volume-size SIZE to lay the release out as volumes, or use 'offgrid clone SRC DEST...' to copy one tree to many sticks",
            args.dests.len()
        );
    }
    let inputs = ReleaseInputs::from_flags(&flags)?;
    args.roots.check()?;
    let dest = args.dests[0].clone();
    for d in &args.dests {
        usb::pack::check_dest(d, &inputs.bundle_id, &inputs.release, args.force)?;
    }
    let limit = media::FileLimit::for_dest(&dest, max_flag);
    if volume_size.is_some() || args.dests.len() > 1 {
        return run_volumes(&args, ctx, &inputs, &limit, volume_size);
    }
    if args.dry_run {
        // No keys are loaded (no password asked): README.txt names none, a few bytes less.
        let plan = usb::plan_for(&inputs, &[], limit.max)?;
        usb::pack::check_fits(&plan, &limit, &dest)?;
        let layout = usb::volumes::plan_layout(&plan, limit.max, None, 0)?;
        if layout.is_needed() {
            print_volume_plan(&plan, &layout, &limit, &args.dests, args.out.json)?;
            return Ok(ExitCode::SUCCESS);
        }
        print_plan(&plan, &limit, &dest, args.out.json)?;
        if let Some(free) = media::free_bytes(&dest) {
            if free < plan.total_size() {
                return Err(usb::PackError::NoSpace {
                    dest: dest.display().to_string(),
                    need: plan.total_size(),
                    free,
                }
                .into());
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let keys = usb::pack::load_signers(&inputs.signers, &mut super::password_for)?;
    let key_ids: Vec<String> = keys.iter().map(|k| k.public.key_id()).collect();
    let plan = args
        .expiry
        .apply(usb::plan_for(&inputs, &key_ids, limit.max)?)?;
    usb::pack::check_fits(&plan, &limit, &dest)?;
    let layout = usb::volumes::plan_layout(&plan, limit.max, None, keys.len())?;
    if layout.is_needed() {
        return write_volumes(&args, ctx, &inputs, &plan, &layout, &keys, &limit);
    }

    let bar = ctx.bar("packing", args.out.json);
    bar.set_length(plan.total_size());
    let report = usb::pack(
        &plan,
        &keys,
        &dest,
        &PackOptions { force: args.force },
        &super::progress_fn(&bar),
    )
    .with_context(|| {
        format!(
            "packing release {} into '{}'",
            inputs.release,
            dest.display()
        )
    })?;
    bar.finish_and_clear();
    args.roots.copy_into(ctx, &dest)?;
    if args.read_back {
        read_back(&report, &keys, ctx, args.out.json)?;
    }
    // After the pack, so that a refusal prints its error alone.
    super::warn_debug_binaries(ctx, &inputs);
    super::warn_chat_templates(ctx, &inputs);
    let hq = offgrid::update::history::record_pack_usb(
        args.history.as_deref(),
        &report.manifest_bytes,
        &report.signatures,
        &report.dest,
    )
    .context("recording the release in the HQ history (SPEC.md §7)")?;

    let m = &report.manifest;
    if args.out.json {
        super::json_line(
            "packed",
            serde_json::json!({
                "dest": report.dest.display().to_string(),
                "bundle_id": m.bundle_id,
                "release": m.release.to_string(),
                "files": report.files,
                "bytes": report.bytes,
                "platforms": m.platforms,
                "default_model": m.default_model,
                "models": m.logical_models().map(|f| serde_json::json!({
                    "name": f.model.as_ref().map(|i| i.name.clone()),
                    "path": f.path,
                    "size": m.shards_of(f).iter().map(|s| s.size).sum::<u64>(),
                    "sha256": f.sha256,
                    "shards": m.shards_of(f).iter().map(|s| s.path.clone()).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "file_system": limit.fs.name,
                "max_file_size": limit.max,
                "key_ids": key_ids,
                "history": hq.display().to_string(),
                "replaced": report.replaced.as_ref().map(|(b, r)| serde_json::json!({"bundle_id": b, "release": r})),
            }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = format!(
        "packed release {} of {} into '{}'\n",
        m.release,
        m.bundle_id,
        report.dest.display()
    );
    if let Some((b, r)) = &report.replaced {
        s.push_str(&format!("  replaced: release {r} of {b}\n"));
    }
    s.push_str(&format!(
        "  files:     {} ({})\n",
        report.files,
        usb::templates::human_size(report.bytes)
    ));
    for f in m.logical_models() {
        let info = f.model.as_ref();
        let def = if m.default_model.as_deref() == info.map(|i| i.name.as_str()) {
            " (default)"
        } else {
            ""
        };
        let shards = m.shards_of(f);
        let split = if shards.len() > 1 {
            format!("  in {} shards", shards.len())
        } else {
            String::new()
        };
        s.push_str(&format!(
            "  model:     {}{def}  {}  {}{split}\n",
            info.map(|i| i.name.as_str()).unwrap_or("?"),
            info.and_then(|i| i.quantization.as_deref()).unwrap_or("?"),
            usb::templates::human_size(shards.iter().map(|s| s.size).sum())
        ));
    }
    s.push_str(&format!("  medium:    {}\n", describe_limit(&limit)));
    s.push_str(&format!("  platforms: {}\n", m.platforms.join(" ")));
    s.push_str(&format!(
        "  recorded:  in the HQ history '{}'\n",
        hq.display()
    ));
    for (id, _) in &report.signatures {
        s.push_str(&format!("  signed by: {id} (signatures/{id}.minisig)\n"));
    }
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}

/// `--volume-size`: the release laid out as volumes, one destination each (SPEC.md
/// §16.6). Too few destinations: a terminal is asked for the next medium once each
/// volume is written, else refused before anything is written.
fn run_volumes(
    args: &Args,
    ctx: &Ctx,
    inputs: &ReleaseInputs,
    limit: &media::FileLimit,
    volume_size: Option<u64>,
) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let Some(vs) = volume_size else {
        anyhow::bail!("several destinations need --volume-size");
    };
    let keys = if args.dry_run {
        Vec::new()
    } else {
        usb::pack::load_signers(&inputs.signers, &mut super::password_for)?
    };
    let key_ids: Vec<String> = keys.iter().map(|k| k.public.key_id()).collect();
    let signers = inputs.signers.len().max(1);
    let first = usb::plan_for(inputs, &key_ids, Some(limit.max.unwrap_or(vs).min(vs)))?;
    let ml = usb::volumes::model_limit(&first, limit.max, vs, signers);
    let plan = args
        .expiry
        .apply(usb::plan_for(inputs, &key_ids, Some(ml))?)?;
    usb::pack::check_fits(&plan, limit, &args.dests[0])?;
    let layout = usb::volumes::plan_layout(&plan, limit.max, Some(vs), signers)?;
    if args.dry_run {
        print_volume_plan(&plan, &layout, limit, &args.dests, args.out.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let n = layout.count() as usize;
    if args.dests.len() < n && !std::io::stdin().is_terminal() {
        return Err(offgrid::volume::VolumeError::TooFewDests {
            needed: n as u32,
            given: args.dests.len(),
        }
        .into());
    }
    write_volumes(args, ctx, inputs, &plan, &layout, &keys, limit)
}

/// Asks the terminal for the folder of volume `k` of `n`, once volume `k - 1` is
/// written: the operator swaps the medium and answers; an empty answer gives up.
fn ask_next_medium(
    k: u32,
    n: u32,
    bytes: u64,
    refused: Option<&offgrid::usb::PackError>,
) -> Option<PathBuf> {
    if let Some(e) = refused {
        let help = offgrid::diagnostic::Diagnostic::help(e)
            .map(|h| format!("\nhelp: {h}"))
            .unwrap_or_default();
        eprintln!("error: {e}{help}");
    }
    eprint!(
        "volume {k} of {n} ({}): insert the next medium and give its folder (the mounted medium): ",
        usb::templates::human_size(bytes)
    );
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(PathBuf::from(line.trim())).filter(|d| !d.as_os_str().is_empty()),
    }
}

/// Writes the volumes (or the one tree holding parts), records the release, prints.
#[allow(clippy::too_many_arguments)]
fn write_volumes(
    args: &Args,
    ctx: &Ctx,
    inputs: &ReleaseInputs,
    plan: &usb::TreePlan,
    layout: &usb::volumes::VolumePlan,
    keys: &[offgrid::keys::SecretKey],
    limit: &media::FileLimit,
) -> anyhow::Result<ExitCode> {
    let hq = offgrid::update::history::resolve_dir(args.history.as_deref());
    std::fs::create_dir_all(&hq)
        .with_context(|| format!("creating the HQ history '{}'", hq.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix(".packing-")
        .tempdir_in(&hq)
        .with_context(|| format!("creating a scratch folder in '{}'", hq.display()))?;
    let bar = ctx.bar("packing", args.out.json);
    bar.set_length(2 * plan.total_size());
    let progress = super::progress_fn(&bar);
    let mut ask = |k: u32, n: u32, bytes: u64, refused: Option<&usb::PackError>| {
        bar.suspend(|| ask_next_medium(k, n, bytes, refused))
    };
    let r = usb::volumes::pack_set(
        plan,
        layout,
        keys,
        usb::volumes::SetTargets {
            dests: &args.dests,
            ask: &mut ask,
            scratch: scratch.path(),
        },
        &PackOptions { force: args.force },
        &progress,
    )
    .with_context(|| {
        format!(
            "packing release {} as {} volume(s)",
            plan.release,
            layout.count()
        )
    })?;
    bar.finish_and_clear();
    let policy =
        offgrid::trust::TrustPolicy::from_keys(keys.iter().map(|k| k.public.clone()).collect())?;
    for (d, _, bytes) in &r.volumes {
        args.roots.copy_into(ctx, d)?;
        if args.read_back {
            let bar = ctx.bar("reading back", args.out.json);
            bar.set_length(*bytes);
            let rb = offgrid::clone::read_back(d, &policy, &super::progress_fn(&bar));
            bar.finish_and_clear();
            rb.with_context(|| {
                format!(
                    "reading '{}' back from its medium: it is not what was written; do not hand it out",
                    d.display()
                )
            })?;
        }
    }
    super::warn_debug_binaries(ctx, inputs);
    super::warn_chat_templates(ctx, inputs);
    let sigs: Vec<(String, String)> = r
        .signatures
        .iter()
        .map(|(id, t)| (format!("{id}.minisig"), t.clone()))
        .collect();
    offgrid::update::history::record(&hq, &r.manifest_bytes, &sigs, &r.sources)
        .context("recording the release in the HQ history (SPEC.md §7)")?;
    let m = &r.manifest;
    let parted: Vec<(String, usize)> = m
        .files
        .iter()
        .filter(|f| !f.parts.is_empty())
        .map(|f| (f.path.clone(), f.parts.len()))
        .collect();
    let key_ids: Vec<String> = r.signatures.iter().map(|(id, _)| id.clone()).collect();
    if args.out.json {
        super::json_line(
            "packed-volumes",
            serde_json::json!({
                "bundle_id": m.bundle_id,
                "release": m.release.to_string(),
                "files": m.files.len(),
                "bytes": m.total_size(),
                "volumes": r.volumes.iter().enumerate().map(|(k, (d, files, bytes))| serde_json::json!({
                    "volume": k + 1,
                    "dest": d.display().to_string(),
                    "files": files,
                    "bytes": bytes,
                })).collect::<Vec<_>>(),
                "volume_size": layout.volumes.and(args.volume_size.as_deref().and_then(|s| offgrid::units::parse_volume_size(s).ok())),
                "parts": parted.iter().map(|(p, n)| serde_json::json!({"path": p, "parts": n})).collect::<Vec<_>>(),
                "file_system": limit.fs.name,
                "max_file_size": limit.max,
                "key_ids": key_ids,
                "history": hq.display().to_string(),
            }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = match m.volumes {
        Some(n) => format!(
            "packed release {} of {} as {n} volume(s)\n",
            m.release, m.bundle_id
        ),
        None => format!(
            "packed release {} of {} into '{}'\n",
            m.release,
            m.bundle_id,
            r.volumes[0].0.display()
        ),
    };
    s.push_str(&format!(
        "  files:     {} ({})\n",
        m.files.len(),
        usb::templates::human_size(m.total_size())
    ));
    if m.volumes.is_some() {
        for (k, (d, files, bytes)) in r.volumes.iter().enumerate() {
            s.push_str(&format!(
                "  volume {}:  '{}'  {files} file(s) ({})\n",
                k + 1,
                d.display(),
                usb::templates::human_size(*bytes)
            ));
        }
    }
    for (p, n) in &parted {
        s.push_str(&format!("  parts:     {p} in {n} parts\n"));
    }
    s.push_str(&format!("  medium:    {}\n", describe_limit(limit)));
    s.push_str(&format!(
        "  recorded:  in the HQ history '{}'\n",
        hq.display()
    ));
    for id in &key_ids {
        s.push_str(&format!("  signed by: {id} (signatures/{id}.minisig)\n"));
    }
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}

/// `--dry-run` of a layout with volumes or parts: each volume's files and bytes.
fn print_volume_plan(
    plan: &usb::TreePlan,
    layout: &usb::volumes::VolumePlan,
    limit: &media::FileLimit,
    dests: &[PathBuf],
    json: bool,
) -> anyhow::Result<()> {
    let n = layout.count();
    if json {
        super::json_line(
            "volume-plan",
            serde_json::json!({
                "release": plan.release.to_string(),
                "bundle_id": plan.bundle_id,
                "file_system": limit.fs.name,
                "max_file_size": limit.max,
                "volumes": (1..=n).map(|k| serde_json::json!({
                    "volume": k,
                    "dest": dests.get(k as usize - 1).map(|d| d.display().to_string()),
                    "files": layout.pieces_on(plan, k).iter().map(|p| serde_json::json!({"path": p.0, "size": p.3})).collect::<Vec<_>>(),
                    "bytes": layout.bytes_on(plan, k),
                })).collect::<Vec<_>>(),
                "bytes": plan.total_size(),
            }),
        )?;
        return Ok(());
    }
    let mut s = format!(
        "plan: release {} of {} as {n} volume(s) (nothing written)\n  medium:    {}\n",
        plan.release,
        plan.bundle_id,
        describe_limit(limit)
    );
    for k in 1..=n {
        let dest = dests
            .get(k as usize - 1)
            .map(|d| format!("'{}'", d.display()))
            .unwrap_or_else(|| "(no destination given)".into());
        s.push_str(&format!(
            "  volume {k}:  {dest}  {}\n",
            usb::templates::human_size(layout.bytes_on(plan, k))
        ));
        for (p, _, _, size) in layout.pieces_on(plan, k) {
            s.push_str(&format!(
                "    {:>10}  {p}\n",
                usb::templates::human_size(size)
            ));
        }
    }
    s.push_str(&format!(
        "  files:     {} ({} bytes)\n",
        plan.files.len(),
        plan.total_size()
    ));
    if dests.len() < n as usize {
        s.push_str(&format!(
            "  needs:     {n} destinations, {} given\n",
            dests.len()
        ));
    }
    super::out(&s)?;
    Ok(())
}

/// `--read-back`: the tree just written, read back from its medium and verified against
/// the keys that signed it; a mismatch is a refusal naming the files (exit 1).
fn read_back(
    report: &usb::PackReport,
    keys: &[offgrid::keys::SecretKey],
    ctx: &Ctx,
    json: bool,
) -> anyhow::Result<()> {
    let policy =
        offgrid::trust::TrustPolicy::from_keys(keys.iter().map(|k| k.public.clone()).collect())?;
    let bar = ctx.bar("reading back", json);
    bar.set_length(report.bytes);
    let r = offgrid::clone::read_back(&report.dest, &policy, &super::progress_fn(&bar));
    bar.finish_and_clear();
    r.with_context(|| {
        format!(
            "reading '{}' back from its medium: it is not what was written; do not hand it out",
            report.dest.display()
        )
    })?;
    if !json {
        ctx.note(&format!(
            "read back '{}' from the medium: every file matches",
            report.dest.display()
        ));
    }
    Ok(())
}

/// `FAT, files up to 4.0 GiB` / `ext2/3/4, no file size limit`.
fn describe_limit(limit: &media::FileLimit) -> String {
    match limit.max {
        Some(m) if limit.overridden => format!(
            "{}, files up to {} (--max-file-size)",
            limit.fs,
            usb::templates::human_size(m)
        ),
        Some(m) => format!(
            "{}, files up to {}",
            limit.fs,
            usb::templates::human_size(m)
        ),
        None => format!("{}, no file size limit", limit.fs),
    }
}

/// `--dry-run`: what would be written, and whether it fits.
fn print_plan(
    plan: &usb::TreePlan,
    limit: &media::FileLimit,
    dest: &Path,
    json: bool,
) -> anyhow::Result<()> {
    let need = plan.total_size();
    let free = media::free_bytes(dest);
    let split = |f: &usb::PlannedFile| f.model.as_ref().and_then(|m| Some((m.shard?, m.shards?)));
    if json {
        super::json_line(
            "plan",
            serde_json::json!({
                "dest": dest.display().to_string(),
                "release": plan.release.to_string(),
                "bundle_id": plan.bundle_id,
                "file_system": limit.fs.name,
                "max_file_size": limit.max,
                "files": plan.files.iter().map(|f| serde_json::json!({
                    "path": f.path,
                    "size": f.size,
                    "shard": split(f).map(|s| s.0),
                    "shards": split(f).map(|s| s.1),
                })).collect::<Vec<_>>(),
                "bytes": need,
                "free": free,
            }),
        )?;
        return Ok(());
    }
    let mut s = format!(
        "plan: release {} of {} into '{}' (nothing written)\n",
        plan.release,
        plan.bundle_id,
        dest.display()
    );
    s.push_str(&format!("  medium:    {}\n", describe_limit(limit)));
    for f in &plan.files {
        let note = match split(f) {
            Some((k, n)) => format!("  (shard {k} of {n})"),
            None => String::new(),
        };
        s.push_str(&format!(
            "  {:>10}  {}{note}\n",
            usb::templates::human_size(f.size),
            f.path
        ));
    }
    s.push_str(&format!(
        "  files:     {} ({need} bytes)\n",
        plan.files.len()
    ));
    match free {
        Some(free) if free < need => s.push_str(&format!(
            "  space:     {need} bytes needed, {free} free: does not fit\n"
        )),
        Some(free) => s.push_str(&format!("  space:     {need} bytes needed, {free} free\n")),
        None => s.push_str(&format!("  space:     {need} bytes needed\n")),
    }
    super::out(&s)?;
    Ok(())
}
