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
    /// Folder to write the tree into: the mounted stick, or a folder on it
    pub dest: PathBuf,
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
    let inputs = ReleaseInputs::from_flags(&flags)?;
    args.roots.check()?;
    usb::pack::check_dest(&args.dest, &inputs.bundle_id, &inputs.release, args.force)?;
    let limit = media::FileLimit::for_dest(&args.dest, max_flag);
    if args.dry_run {
        // No keys are loaded (no password asked): README.txt names none, a few bytes less.
        let plan = usb::plan_for(&inputs, &[], limit.max)?;
        usb::pack::check_fits(&plan, &limit, &args.dest)?;
        print_plan(&plan, &limit, &args.dest, args.out.json)?;
        if let Some(free) = media::free_bytes(&args.dest) {
            if free < plan.total_size() {
                return Err(usb::PackError::NoSpace {
                    dest: args.dest.display().to_string(),
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
    usb::pack::check_fits(&plan, &limit, &args.dest)?;

    let bar = ctx.bar("packing", args.out.json);
    bar.set_length(plan.total_size());
    let report = usb::pack(
        &plan,
        &keys,
        &args.dest,
        &PackOptions { force: args.force },
        &super::progress_fn(&bar),
    )
    .with_context(|| {
        format!(
            "packing release {} into '{}'",
            inputs.release,
            args.dest.display()
        )
    })?;
    bar.finish_and_clear();
    args.roots.copy_into(ctx, &args.dest)?;
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
