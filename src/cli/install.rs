//! `offgrid install --from USBROOT`: verifies a USB tree and installs it into the site
//! home, pinning the trusted keys (`--pubkey`/`--trust`) for every later command.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use offgrid::keys::PublicKey;
use offgrid::trust::TrustPolicy;
use offgrid::update::{self, Home};

use super::Ctx;

/// Arguments of `offgrid install`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Root of the verified USB tree (the folder holding manifest.toml), or a peer
    /// running `offgrid serve`: http://HOST:PORT (its newest release of the bundle) or
    /// http://HOST:PORT/tree/NAME/
    #[arg(long = "from", value_name = "USBROOT|URL")]
    pub from: PathBuf,
    #[command(flatten)]
    pub home: super::args::HomeArg,
    /// Trusted HQ public key (repeatable); pinned in the home at the first install
    #[arg(long = "pubkey", value_name = "FILE")]
    pub pubkeys: Vec<PathBuf>,
    /// Trust policy file (keys and m-of-n threshold), instead of --pubkey
    #[arg(long, value_name = "FILE", conflicts_with = "pubkeys")]
    pub trust: Option<PathBuf>,
    /// Folder for the command shims (offgrid and the release's commands) [env:
    /// OFFGRID_BIN_DIR] [default: ~/.local/bin, or HOME/bin when --home or OFFGRID_HOME
    /// names the home]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
    /// Check the tree's signatures and print the plan (files, bytes, space needed);
    /// write nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub out: super::args::JsonArg,
    #[command(flatten)]
    pub receipt: super::site::ReceiptOpt,
}

/// The trust policy from `--pubkey`/`--trust`, or `None` when neither was given.
pub fn given_policy(
    pubkeys: &[PathBuf],
    trust: Option<&PathBuf>,
) -> anyhow::Result<Option<TrustPolicy>> {
    if let Some(t) = trust {
        return Ok(Some(TrustPolicy::load(t)?));
    }
    if pubkeys.is_empty() {
        return Ok(None);
    }
    let mut keys = Vec::new();
    for p in pubkeys {
        keys.push(PublicKey::load(p)?);
    }
    Ok(Some(TrustPolicy::from_keys(keys)?))
}

/// Prints what a recovery at the start of a command did (stderr, or a JSON line).
pub fn print_recovery(
    ctx: &Ctx,
    rec: Option<&update::home::Recovery>,
    json: bool,
) -> anyhow::Result<()> {
    if let Some(r) = rec {
        if json {
            super::json_line("recovery", serde_json::to_value(r)?)?;
        } else {
            let from = r.from.as_deref().unwrap_or("nothing");
            let what = if r.outcome == "completed" {
                format!("it was completed: release {} is current", r.to)
            } else {
                format!("it was undone: release {from} is current, unchanged")
            };
            ctx.warn(&format!(
                "recovered from an interrupted {} ({from} -> {}): {what}",
                r.op, r.to
            ));
        }
    }
    Ok(())
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.dir());
    let policy = given_policy(&args.pubkeys, args.trust.as_ref())?;
    if let Some(peer) = super::sync::peer_url(&args.from) {
        if args.dry_run {
            anyhow::bail!("--dry-run reads a tree on this machine; pulling from a peer ('{peer}') has no dry run\nhelp: run 'offgrid install --from {peer}' without --dry-run (nothing is switched before every byte is verified)");
        }
        let bin = update::shims::bin_dir(&home, args.bin_dir.as_deref(), args.home.dir().is_some());
        return super::sync::install_from_peer(ctx, &home, &peer, policy, &bin, args.out.json);
    }
    // A stick of another bundle than the home's goes to its own sub-home, sharing the
    // store (SPEC.md §7.5).
    let home = home.route_tree(&args.from, policy.as_ref())?;
    if args.dry_run {
        return dry_run(&args, &home, policy);
    }
    // Newer trust roots on the stick first, so a release signed by a rotated key
    // installs (SPEC.md §19).
    let first = home.read_state().ok().flatten().is_none();
    let chain = super::trust::apply_found(ctx, &home, &args.from, policy.as_ref(), args.out.json)?;
    let policy = match &chain {
        Some(c) if first => Some(c.state.policy.clone()),
        _ => policy,
    };
    // Issue 10 (site): a stick of the release already installed repairs the home.
    if update::repair::is_installed_release(&home, &args.from) {
        ctx.note(&format!(
            "'{}' holds the release already installed: checking the installed files and repairing any damage from it",
            args.from.display()
        ));
        return super::repair::run_on(
            &home,
            std::slice::from_ref(&args.from),
            policy.as_ref(),
            args.out.json,
            ctx,
        );
    }
    if update::volumes::is_volume(&args.from) {
        return install_volume(
            &args,
            ctx,
            &home,
            policy.as_ref(),
            chain.as_ref().filter(|_| first),
        );
    }
    let bar = ctx.bar("installing", args.out.json);
    let r = update::install::install(
        &home,
        &args.from,
        policy.as_ref(),
        &super::progress_fn(&bar),
    )
    .with_context(|| {
        format!(
            "installing '{}' into '{}'",
            args.from.display(),
            home.root.display()
        )
    })
    .map_err(|e| super::site::note_failure(&home, "install", e))?;
    bar.finish_and_clear();
    for w in &r.warnings {
        ctx.warn(w);
    }
    if let Some(c) = chain.as_ref().filter(|_| first) {
        super::trust::record_after_install(&home, c)?;
    }
    let dir = update::shims::bin_dir(&home, args.bin_dir.as_deref(), args.home.dir().is_some());
    let shims = write_shims(ctx, &home, &dir);
    super::site::auto_receipt(ctx, &home, &args.from, &args.receipt, args.out.json);
    print_installed(ctx, &r, args.out.json, None, shims.as_ref())
}

/// `install --from VOLUME` (SPEC.md §16.6): the volume verified into the home's staging
/// area; exit 1 naming the volumes still missing, or the release installed once every
/// volume is in.
fn install_volume(
    args: &Args,
    ctx: &Ctx,
    home: &Home,
    policy: Option<&TrustPolicy>,
    chain: Option<&offgrid::trustroot::Chain>,
) -> anyhow::Result<ExitCode> {
    let bar = ctx.bar("installing", args.out.json);
    let r = update::volumes::install_volume(home, &args.from, policy, &super::progress_fn(&bar))
        .with_context(|| {
            format!(
                "installing '{}' into '{}'",
                args.from.display(),
                home.root.display()
            )
        })
        .map_err(|e| super::site::note_failure(home, "install", e))?;
    bar.finish_and_clear();
    let staged = match &r {
        update::volumes::VolumeInstall::Staged(s) => s,
        update::volumes::VolumeInstall::Installed(s, _) => s,
    };
    let list = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
    if args.out.json {
        super::json_line("volume-staged", serde_json::to_value(staged)?)?;
    } else if staged.already {
        ctx.note(&format!(
            "volume {} of {} of release {} was verified before; it was not read again",
            staged.volume, staged.volumes, staged.release
        ));
    } else {
        ctx.note(&format!(
            "volume {} of {} of release {} of {}: {} file(s), {} verified into '{}'",
            staged.volume,
            staged.volumes,
            staged.release,
            staged.bundle_id,
            staged.files,
            offgrid::usb::templates::human_size(staged.bytes),
            staged.home
        ));
    }
    let installed = match r {
        update::volumes::VolumeInstall::Staged(s) => {
            if !args.out.json {
                super::out(&format!(
                    "staged volume(s) {} of {} of release {} of {}; still missing: volume(s) {}\n",
                    list(&s.staged),
                    s.volumes,
                    s.release,
                    s.bundle_id,
                    list(&s.missing)
                ))?;
            }
            return Err(offgrid::volume::VolumeError::Missing {
                root: args.from.display().to_string(),
                release: format!("release {} of {}", s.release, s.bundle_id),
                volume: s.volume,
                volumes: s.volumes,
                staged: s.staged,
                missing: s.missing,
            }
            .into());
        }
        update::volumes::VolumeInstall::Installed(_, r) => r,
    };
    for w in &installed.warnings {
        ctx.warn(w);
    }
    if let Some(c) = chain {
        super::trust::record_after_install(home, c)?;
    }
    let dir = update::shims::bin_dir(home, args.bin_dir.as_deref(), args.home.dir().is_some());
    let shims = write_shims(ctx, home, &dir);
    super::site::auto_receipt(ctx, home, &args.from, &args.receipt, args.out.json);
    print_installed(ctx, &installed, args.out.json, None, shims.as_ref())
}

/// Prints what an install did; `pulled` is the line saying where the bytes came from
/// (a pull from peers), `shims` where the commands went.
pub fn print_installed(
    ctx: &Ctx,
    r: &update::install::InstallReport,
    json: bool,
    pulled: Option<(String, serde_json::Value)>,
    shims: Option<&update::shims::ShimReport>,
) -> anyhow::Result<ExitCode> {
    print_recovery(ctx, r.recovered.as_ref(), json)?;
    if json {
        let mut v = serde_json::to_value(r)?;
        if let (Some((_, p)), Some(o)) = (&pulled, v.as_object_mut()) {
            o.insert("pulled".into(), p.clone());
        }
        super::json_line("installed", v)?;
        if let Some(s) = shims {
            super::json_line("commands", serde_json::to_value(s)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut s = format!(
        "installed release {} of {} into '{}'\n  files: {} ({}), every one checked against the signed manifest\n",
        r.release,
        r.bundle_id,
        r.home,
        r.files,
        offgrid::usb::templates::human_size(r.bytes)
    );
    if let Some(p) = &r.previous {
        s.push_str(&format!(
            "  previous: {p} (kept; 'offgrid rollback' returns to it)\n"
        ));
    }
    for sig in &r.signatures {
        if let Some(id) = &sig.key_id {
            s.push_str(&format!("  signed by: {id} ({})\n", sig.file));
        }
    }
    s.push_str(&format!(
        "  trust: {} key(s) pinned, {} signature(s) required\n",
        r.pinned_keys, r.threshold
    ));
    if let Some((line, _)) = pulled {
        s.push_str(&line);
    }
    if let Some(sh) = shims {
        s.push_str(&shim_summary(sh));
    }
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes the command shims of the current release into `dir` (SPEC.md §18.5). A
/// failure is a warning: the release itself is installed.
pub fn write_shims(
    ctx: &Ctx,
    home: &Home,
    dir: &std::path::Path,
) -> Option<update::shims::ShimReport> {
    let mp = home
        .root
        .join("current")
        .join(offgrid::manifest::MANIFEST_FILE);
    let res = std::fs::read(&mp)
        .map_err(|e| e.to_string())
        .and_then(|b| offgrid::manifest::Manifest::parse(&b).map_err(|e| e.to_string()))
        .and_then(|m| {
            let host = offgrid::platform::Platform::host().to_string();
            update::shims::write(home, dir, &m, &host).map_err(|e| e.to_string())
        });
    match res {
        Ok(r) => {
            for (name, why) in &r.skipped {
                ctx.warn(&format!("command '{name}' not put on the PATH: {why}"));
            }
            Some(r)
        }
        Err(e) => {
            ctx.warn(&format!(
                "could not write the command shims into '{}': {e} (the release itself is installed)",
                dir.display()
            ));
            None
        }
    }
}

/// The summary lines saying where the commands are, with a hint when that folder is not
/// on the PATH.
pub fn shim_summary(sh: &update::shims::ShimReport) -> String {
    if sh.commands.is_empty() {
        return String::new();
    }
    let mut s = format!("  commands: {} in '{}'\n", sh.commands.join(", "), sh.dir);
    if !sh.on_path && cfg!(windows) {
        s.push_str(&format!(
            "  hint: '{}' is not on your PATH; add it under Settings > System > About > Advanced system settings > Environment Variables (this window only: set \"PATH={};%PATH%\")\n",
            sh.dir, sh.dir
        ));
    } else if !sh.on_path {
        s.push_str(&format!(
            "  hint: '{}' is not on your PATH; add it, e.g. in ~/.profile: export PATH=\"{}:$PATH\"\n",
            sh.dir, sh.dir
        ));
    }
    s
}

/// `install --dry-run`: signatures checked (given or pinned keys), then the plan and the
/// space check; nothing is written, not even the home folder.
fn dry_run(args: &Args, home: &Home, given: Option<TrustPolicy>) -> anyhow::Result<ExitCode> {
    let (m, bytes, sigs) = update::install::read_tree_head(&args.from)?;
    let start = match (given, home.read_state()?) {
        (Some(p), _) => offgrid::trustroot::TrustState::implicit(p),
        (None, Some(s)) => offgrid::trustroot::TrustState::of_home(home, &s)?,
        (None, None) => return Err(offgrid::trust::TrustError::NoKeys.into()),
    };
    // The stick's roots are applied in memory only (SPEC.md §19.3).
    let sources: Vec<_> = offgrid::trustroot::find_dir(&args.from)
        .map(offgrid::trustroot::Source::Dir)
        .into_iter()
        .collect();
    let (policy, roots) = super::trust::dry_policy(start, &sources)?;
    policy.evaluate(&m, &bytes, &sigs)?;
    let need = offgrid::media::install_need(&m, bytes.len());
    let free = offgrid::media::free_bytes(&home.root);
    if args.out.json {
        super::json_line(
            "plan",
            serde_json::json!({
                "home": home.root.display().to_string(),
                "bundle_id": m.bundle_id,
                "release": m.release.to_string(),
                "files": m.files.len(),
                "bytes": m.total_size(),
                "need": need,
                "free": free,
                "roots": roots,
            }),
        )?;
    } else {
        let mut s = format!(
            "plan: install release {} of {} into '{}' (nothing written)\n  files:     {} ({} bytes)\n",
            m.release,
            m.bundle_id,
            home.root.display(),
            m.files.len(),
            m.total_size()
        );
        if !roots.is_empty() {
            s.push_str(&format!(
                "  trust:     would apply root(s) {} first (checked; nothing recorded)\n",
                super::apply_update::versions(&roots)
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
        "the release",
        need,
        offgrid::media::HOME_SPACE_HELP,
    )?;
    Ok(ExitCode::SUCCESS)
}
