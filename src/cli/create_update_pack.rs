//! `offgrid create-update-pack`: HQ writes one signed file that takes a site from an
//! older release (`--since VERSION|DATE`, repeatable) to a new one, and records the new
//! release in the HQ history. The new release comes from the same inputs as pack-usb
//! (`--recipe` and/or `--model`/`--binary`/`--release`/… flags), or is a recorded one
//! (`--to`), or a signed USB tree (`--tree`, recorded first).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use offgrid::update::{self, history};
use offgrid::usb;
use offgrid::usb::templates::human_size;

use super::Ctx;

/// Arguments of `offgrid create-update-pack`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The release the sites run now: a version (1.0.0), or a date (2026-11-21, the newest
    /// release made at or before it); repeatable, one pack can serve several
    #[arg(
        long,
        value_name = "VERSION|DATE",
        required_unless_present = "for_fleet"
    )]
    pub since: Vec<String>,
    /// Serve every release the fleet runs, from the receipts imported into the history
    /// (`offgrid receipts import`), besides any --since (SPEC.md §17.4)
    #[arg(long)]
    pub for_fleet: bool,
    #[command(flatten)]
    pub expiry: super::site::ExpiresOpt,
    /// The pack file to write
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output: PathBuf,
    /// A minisign secret key to sign the pack (and the new release's manifest) with
    /// (repeatable, at least one); password from OFFGRID_PASSWORD or a prompt
    #[arg(long = "sign-with", value_name = "KEYFILE")]
    pub sign_with: Vec<PathBuf>,
    #[command(flatten)]
    pub inputs: super::args::ReleaseArgs,
    /// The new release: a release already recorded in the history
    #[arg(
        long,
        value_name = "VERSION",
        conflicts_with = "tree",
        conflicts_with_all = super::args::ReleaseArgs::IDS
    )]
    pub to: Option<String>,
    /// The new release: a signed USB tree (from pack-usb), recorded in the history first
    #[arg(long, value_name = "DIR", conflicts_with_all = super::args::ReleaseArgs::IDS)]
    pub tree: Option<PathBuf>,
    /// Also record this signed USB tree in the history first (repeatable): for releases
    /// packed before the history was kept
    #[arg(long, value_name = "DIR")]
    pub record: Vec<PathBuf>,
    /// Product line id (with flags: as for pack-usb; with --to: needed when the history
    /// holds several)
    #[arg(long, value_name = "ID")]
    pub bundle_id: Option<String>,
    /// HQ release history [env: OFFGRID_HQ] [default: ~/.offgrid-hq]
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    /// zstd level of whole-file payloads (1-19)
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: i32,
    /// Memory the delta encoder may use, such as 1G (default 2G, at least 576M): windows
    /// shrink to fit, so less memory makes larger deltas of large files
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
    /// Ship changed files whole (zstd) instead of trying binary deltas
    #[arg(long)]
    pub no_delta: bool,
    /// Replace FILE if it exists
    #[arg(long)]
    pub force: bool,
    /// With release inputs: split models larger than SIZE as pack-usb --max-file-size
    /// does [default: split as the --since release was (its largest later shard)]
    #[arg(long, value_name = "SIZE")]
    pub max_file_size: Option<String>,
    /// Cut the pack into parts of at most SIZE each (OUT.part001-of-00N and on), each verifiable
    /// on its own: bytes, a unit (700M, 4.7GB) or a preset (cd, dvd, dvd-dl, bd25, bd50);
    /// a pack that fits stays one file (SPEC.md §7.18)
    #[arg(long, value_name = "SIZE")]
    pub volume_size: Option<String>,
    #[command(flatten)]
    pub out: super::args::JsonArg,
    /// The catalog the recipe's `catalog = "NAME@VERSION"` entries come from (SPEC.md §14.7)
    #[command(flatten)]
    pub catalog: super::fetch::CatalogSource,
    #[command(flatten)]
    pub roots: super::trust::RootsOpt,
}

pub fn run(mut args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let hq = history::resolve_dir(args.history.as_deref());
    let max_memory = match &args.max_memory {
        Some(s) => offgrid::update::delta::parse_max_memory("--max-memory", s)?,
        None => offgrid::update::delta::DeltaOptions::default().max_memory,
    };
    let volume_size = match &args.volume_size {
        Some(s) => Some(offgrid::media::parse_volume_size_arg("--volume-size", s)?),
        None => None,
    };
    if args.output.exists() && !args.force {
        bail!(update::UpdateError::Exists {
            path: args.output.display().to_string()
        });
    }
    let roots = args.roots.files()?;
    for tree in &args.record {
        let (_, bytes, sigs) = update::install::read_tree_head(tree)?;
        history::record_tree(&hq, &bytes, &sigs, tree).with_context(|| {
            format!(
                "recording '{}' in the history '{}'",
                tree.display(),
                hq.display()
            )
        })?;
    }
    let from_inputs = args.to.is_none() && args.tree.is_none();
    let (new, keys) = if from_inputs {
        // The same inputs and plan as pack-usb; signers from --sign-with and the recipe.
        let mut flags = args
            .inputs
            .flags(args.bundle_id.clone(), args.sign_with.clone());
        flags.catalog_objects = super::fetch::recipe_objects(
            args.inputs.recipe.as_deref(),
            &args.catalog,
            Some(&hq),
            ctx,
        )?;
        let inputs = usb::ReleaseInputs::from_flags(&flags)?;
        // Refuse a --since the history cannot serve before recording anything.
        let mut split_limit = match &args.max_file_size {
            Some(s) => Some(offgrid::media::parse_size_arg("--max-file-size", s)?),
            None => None,
        };
        let mut since_all = args.since.clone();
        if args.for_fleet {
            for v in offgrid::site::fleet::fleet_releases(&hq, &inputs.bundle_id)? {
                if v < inputs.release {
                    since_all.push(v.to_string());
                }
            }
        }
        for since in &since_all {
            let base =
                history::resolve_since(&hq, &inputs.bundle_id, since, Some(&inputs.release))?;
            // The sites hold the base's shards: split the new release the same way, so
            // unchanged tensors stay unchanged files (SPEC.md §16.2).
            if args.max_file_size.is_none() {
                let later = base
                    .manifest
                    .models()
                    .filter(|f| f.model.as_ref().is_some_and(|m| m.is_later_shard()))
                    .map(|f| f.size)
                    .max();
                split_limit = split_limit.max(later);
            }
        }
        let keys = usb::pack::load_signers(&inputs.signers, &mut super::password_for)?;
        let key_ids: Vec<String> = keys.iter().map(|k| k.public.key_id()).collect();
        let plan = args
            .expiry
            .apply(usb::plan_for(&inputs, &key_ids, split_limit)?)?;
        let bar = ctx.bar("hashing", args.out.json);
        let new = update::release::record_plan(&hq, &plan, &keys, &super::progress_fn(&bar))
            .with_context(|| {
                format!(
                    "recording release {} in the history '{}'",
                    inputs.release,
                    hq.display()
                )
            })?;
        bar.finish_and_clear();
        super::warn_debug_binaries(ctx, &inputs);
        (new, keys)
    } else {
        if args.sign_with.is_empty() {
            bail!("no signing key given\nhelp: pass --sign-with HQ.key");
        }
        let keys = usb::pack::load_signers(&args.sign_with, &mut super::password_for)?;
        let new = if let Some(tree) = &args.tree {
            let (m, bytes, sigs) = update::install::read_tree_head(tree)?;
            history::record_tree(&hq, &bytes, &sigs, tree).with_context(|| {
                format!(
                    "recording '{}' in the history '{}'",
                    tree.display(),
                    hq.display()
                )
            })?;
            history::load(&hq, &m.bundle_id, &m.release)?
        } else {
            let v: offgrid::version::Version = args.to.as_deref().unwrap_or_default().parse()?;
            let id = match &args.bundle_id {
                Some(id) => id.clone(),
                None => {
                    let ids = history::bundle_ids(&hq)?;
                    match ids.as_slice() {
                        [one] => one.clone(),
                        [] => bail!("the history '{}' records no release\nhelp: pack-usb records every release it writes; pass --history DIR or set OFFGRID_HQ", hq.display()),
                        _ => bail!("the history '{}' holds several bundles ({})\nhelp: pass --bundle-id", hq.display(), ids.join(", ")),
                    }
                }
            };
            history::load(&hq, &id, &v)?
        };
        (new, keys)
    };
    if args.for_fleet {
        fleet_since(&hq, &new.manifest, &mut args.since)?;
    }
    let mut bases = Vec::new();
    for s in &args.since {
        let b =
            history::resolve_since(&hq, &new.manifest.bundle_id, s, Some(&new.manifest.release))?;
        if !bases
            .iter()
            .any(|x: &history::Release| x.manifest.release == b.manifest.release)
        {
            bases.push(b);
        }
    }
    let bar = ctx.bar("diffing", args.out.json);
    let r = update::create::create(&update::create::CreateOptions {
        hq: &hq,
        to: &new,
        bases: &bases,
        output: &args.output,
        force: args.force,
        keys: &keys,
        zstd_level: args.level,
        deltas: !args.no_delta,
        delta: offgrid::update::delta::DeltaOptions {
            max_memory,
            ..Default::default()
        },
        roots: &roots,
        volume_size,
        progress: &super::progress_fn(&bar),
    })
    .with_context(|| format!("writing update pack '{}'", args.output.display()))?;
    bar.finish_and_clear();
    if let Some(n) = offgrid::trustroot::chain_versions(&roots) {
        ctx.note(&format!("trust: the pack carries root(s) {n} at its head"));
    }
    if args.out.json {
        super::json_line("update-pack", serde_json::to_value(&r)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = match r.pack_parts.len() {
        0 => format!(
            "wrote '{}': {} {} -> {} ({})\n",
            r.output,
            r.bundle_id,
            r.from.join(", "),
            r.to,
            human_size(r.size)
        ),
        n => {
            let mut s = format!(
                "wrote {} {} -> {} in {n} parts of at most {} ({} in all; each verifies alone, apply-update takes them all):\n",
                r.bundle_id,
                r.from.join(", "),
                r.to,
                human_size(volume_size.unwrap_or_default()),
                human_size(r.size)
            );
            for p in &r.pack_parts {
                s.push_str(&format!(
                    "  part {} of {n}  '{}'  {}, {} piece(s)\n",
                    p.part,
                    p.path,
                    human_size(p.size),
                    p.pieces
                ));
            }
            s
        }
    };
    for p in &r.parts {
        let base = p
            .base_release
            .as_deref()
            .map(|b| format!(" from {b}"))
            .unwrap_or_default();
        match p.how {
            "unchanged" => s.push_str(&format!(
                "  unchanged  {}{base} ({}, not shipped)\n",
                p.target,
                human_size(p.file_size)
            )),
            how => s.push_str(&format!(
                "  {how:9}  {}{base}: {} -> {} ({})\n",
                p.target,
                human_size(p.file_size),
                human_size(p.payload_size),
                if p.saved >= 0 {
                    format!("saves {}", human_size(p.saved as u64))
                } else {
                    format!("adds {}", human_size(p.saved.unsigned_abs()))
                }
            )),
        }
    }
    for (from, path) in &r.removed {
        s.push_str(&format!("  removed    {path} (since {from})\n"));
    }
    let saved = r.release_bytes.saturating_sub(r.size);
    s.push_str(&format!(
        "  total: {} for a {} release (saves {})\n  recorded release {} in '{}'\n",
        human_size(r.size),
        human_size(r.release_bytes),
        human_size(saved),
        r.to,
        hq.display()
    ));
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}

/// `--for-fleet`: adds to `since` every release the sites of the new release's bundle
/// run (from their newest imported receipts) that is older than the new release.
/// Refuses when no site needs the pack.
fn fleet_since(
    hq: &std::path::Path,
    new: &offgrid::manifest::Manifest,
    since: &mut Vec<String>,
) -> anyhow::Result<()> {
    let runs = offgrid::site::fleet::fleet_releases(hq, &new.bundle_id)?;
    let older: Vec<String> = runs
        .iter()
        .filter(|v| **v < new.release)
        .map(|v| v.to_string())
        .collect();
    if older.is_empty() && since.is_empty() {
        let seen: Vec<String> = runs.iter().map(|v| v.to_string()).collect();
        bail!(
            "no site of '{}' in the history '{}' runs a release older than {} (sites run: {})\nhelp: import the sites' receipts first (offgrid receipts import STICK), or pass --since VERSION",
            new.bundle_id,
            hq.display(),
            new.release,
            if seen.is_empty() { "none known".to_owned() } else { seen.join(", ") }
        );
    }
    for v in older {
        if !since.contains(&v) {
            since.push(v);
        }
    }
    Ok(())
}
