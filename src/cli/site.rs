//! The site reporting back (SPEC.md §17): `offgrid site-key` (the site's public key for
//! HQ), `offgrid receipt --to DIR`, the receipt `install` and `apply-update` write by
//! default beside their source, and HQ's `offgrid receipts import|enrol` and
//! `offgrid fleet`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use offgrid::site::{self, fleet, receipt};
use offgrid::update::{history, Home};

use super::Ctx;

/// `--no-receipt`, shared by install and apply-update.
#[derive(clap::Args, Debug, Clone)]
pub struct ReceiptOpt {
    /// Do not write this site's receipt into the source's folder (receipts/SITEID.toml)
    #[arg(long)]
    pub no_receipt: bool,
}

/// `--expires`, shared by pack-usb and create-update-pack.
#[derive(clap::Args, Debug, Clone)]
pub struct ExpiresOpt {
    /// The new release expires at TIME (RFC 3339, or YYYY-MM-DD meaning the end of that
    /// UTC day): sites that have seen a newer signed release refuse it (SPEC.md §17.5)
    #[arg(long, value_name = "TIME")]
    pub expires: Option<String>,
}

impl ExpiresOpt {
    /// Sets the plan's `expires`, refusing a time that does not parse or is not after
    /// the release's `created`.
    pub fn apply(
        &self,
        mut plan: offgrid::usb::TreePlan,
    ) -> anyhow::Result<offgrid::usb::TreePlan> {
        let Some(text) = &self.expires else {
            return Ok(plan);
        };
        let t = if text.len() == 10 {
            format!("{text}T23:59:59Z")
        } else {
            text.clone()
        };
        let (Some(exp), Some(created)) =
            (site::fresh::parse(&t), site::fresh::parse(&plan.created))
        else {
            anyhow::bail!("--expires '{text}' is not a time\nhelp: give an RFC 3339 time (2027-06-30T00:00:00Z) or a date (2027-06-30)");
        };
        if exp <= created {
            anyhow::bail!("--expires '{text}' is not after the release's creation time {}\nhelp: give a time in the future", plan.created);
        }
        plan.expires = Some(t);
        Ok(plan)
    }
}

/// Arguments of `offgrid site-key`.
#[derive(clap::Args, Debug)]
pub struct SiteKeyArgs {
    #[command(flatten)]
    pub home: super::args::HomeArg,
    #[command(flatten)]
    pub out: super::args::JsonArg,
}

/// Arguments of `offgrid receipt`.
#[derive(clap::Args, Debug)]
pub struct ReceiptArgs {
    /// The stick (or folder) to write the receipt into, as receipts/SITEID.toml
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    #[command(flatten)]
    pub home: super::args::HomeArg,
    /// Hash every file of the current release first and report damaged files
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub out: super::args::JsonArg,
}

/// Arguments of `offgrid receipts`.
#[derive(clap::Args, Debug)]
pub struct ReceiptsArgs {
    #[command(subcommand)]
    pub command: ReceiptsCommand,
}

/// `offgrid receipts` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum ReceiptsCommand {
    /// Verify the receipts in a folder (a stick's root or its receipts/) and record them
    Import(ImportArgs),
    /// Enrol a site's public key (from `offgrid site-key`) before its first receipt
    Enrol(EnrolArgs),
}

/// HQ history flag.
#[derive(clap::Args, Debug)]
pub struct HistoryOpt {
    /// HQ release history [env: OFFGRID_HQ] [default: ~/.offgrid-hq]
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    #[command(flatten)]
    pub out: super::args::JsonArg,
}

/// Arguments of `offgrid receipts import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The folder holding receipts/ (a stick's root), or the receipts folder itself
    pub dir: PathBuf,
    /// Refuse receipts of sites whose key was not enrolled (no trust on first use)
    #[arg(long)]
    pub enrolled_only: bool,
    #[command(flatten)]
    pub hq: HistoryOpt,
}

/// Arguments of `offgrid receipts enrol`.
#[derive(clap::Args, Debug)]
pub struct EnrolArgs {
    /// The site's public key file (`offgrid site-key > SITE.pub`)
    pub pubkey: PathBuf,
    #[command(flatten)]
    pub hq: HistoryOpt,
}

/// Arguments of `offgrid fleet`.
#[derive(clap::Args, Debug)]
pub struct FleetArgs {
    #[command(flatten)]
    pub hq: HistoryOpt,
}

pub fn site_key(args: SiteKeyArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.dir());
    let pk = site::public_key(&home)?.ok_or_else(|| {
        anyhow::anyhow!(
            "site home '{}' has no site key yet\nhelp: install a stick first (offgrid install --from USBROOT), which makes it",
            home.root.display()
        )
    })?;
    if args.out.json {
        super::json_line(
            "site-key",
            serde_json::json!({
                "site_id": site::site_id(&pk),
                "fingerprint": pk.fingerprint(),
                "pubkey": pk.to_base64(),
                "schema": 1,
            }),
        )?;
    } else {
        super::out(&pk.to_file_text())?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn receipt(args: ReceiptArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.dir());
    let bar = ctx.bar("verifying", args.out.json);
    let w = receipt::write(&home, &args.to, args.verify, &super::progress_fn(&bar))
        .with_context(|| format!("writing the receipt of '{}'", home.root.display()))?;
    bar.finish_and_clear();
    print_written(&w, args.out.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_written(w: &receipt::Written, json: bool) -> anyhow::Result<()> {
    if json {
        super::json_line("receipt", serde_json::to_value(w)?)?;
    } else {
        super::out(&format!(
            "wrote receipt {} of site {} (release {}, {} damaged file(s)) to '{}'\n",
            w.sequence, w.site_id, w.release, w.damage, w.path
        ))?;
    }
    Ok(())
}

/// After a successful install or apply-update: the receipt into `dir` unless opted out.
/// A folder that cannot take it (read-only stick) gets a warning, never a failure.
pub fn auto_receipt(ctx: &Ctx, home: &Home, dir: &Path, opt: &ReceiptOpt, json: bool) {
    if opt.no_receipt {
        return;
    }
    match receipt::write(home, dir, false, &offgrid::no_progress) {
        Ok(w) if json => {
            let _ = super::json_line("receipt", serde_json::to_value(&w).unwrap_or_default());
        }
        Ok(w) => ctx.note(&format!(
            "receipt {} of site {} written to '{}' (--no-receipt to skip)",
            w.sequence, w.site_id, w.path
        )),
        Err(e) => ctx.warn(&format!(
            "no receipt written into '{}': {}",
            dir.display(),
            e.to_string().lines().next().unwrap_or_default()
        )),
    }
}

/// Records a failed install/apply-update/rollback in the home (for the next receipt),
/// then hands the error back.
pub fn note_failure(home: &Home, op: &str, err: anyhow::Error) -> anyhow::Error {
    let first = format!("{err:#}");
    let _ = site::record_failure(home, op, &first);
    err
}

pub fn receipts(args: ReceiptsArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match args.command {
        ReceiptsCommand::Import(a) => import(a, ctx),
        ReceiptsCommand::Enrol(a) => enrol(a),
    }
}

fn import(args: ImportArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let hq = history::resolve_dir(args.hq.history.as_deref());
    let r = fleet::import(&hq, &args.dir, args.enrolled_only).with_context(|| {
        format!(
            "importing receipts from '{}' into '{}'",
            args.dir.display(),
            hq.display()
        )
    })?;
    if args.hq.out.json {
        for i in &r.imported {
            super::json_line("imported", serde_json::to_value(i)?)?;
        }
        for (file, reason) in &r.refused {
            super::json_line(
                "refused",
                serde_json::json!({ "file": file, "reason": reason }),
            )?;
        }
        super::json_line(
            "summary",
            serde_json::json!({
                "imported": r.imported.len(),
                "refused": r.refused.len(),
                "schema": 1,
            }),
        )?;
    } else {
        let mut s = String::new();
        for i in &r.imported {
            s.push_str(&format!(
                "{}  {:9}  release {} (receipt {}){}\n",
                i.site_id,
                i.outcome,
                i.release,
                i.sequence,
                if i.trust == "first-use" {
                    "  key trusted on first use"
                } else {
                    ""
                }
            ));
        }
        s.push_str(&format!(
            "imported {} receipt(s) into '{}', refused {}\n",
            r.imported.len(),
            hq.display(),
            r.refused.len()
        ));
        super::out(&s)?;
        for (file, reason) in &r.refused {
            ctx.warn(&format!("refused '{file}': {reason}"));
        }
        if r.imported
            .iter()
            .any(|i| i.trust == "first-use" && i.outcome == "new")
        {
            ctx.note("help: check each new site's key fingerprint with the site ('offgrid status' there), then confirm it: offgrid receipts enrol SITE.pub");
        }
    }
    Ok(if r.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(offgrid::exit::REFUSED)
    })
}

fn enrol(args: EnrolArgs) -> anyhow::Result<ExitCode> {
    let hq = history::resolve_dir(args.hq.history.as_deref());
    let r = fleet::enrol(&hq, &args.pubkey)
        .with_context(|| format!("enrolling '{}'", args.pubkey.display()))?;
    if args.hq.out.json {
        let mut v = serde_json::to_value(&r)?;
        v["schema"] = 1.into();
        super::json_line("enrolled", v)?;
    } else {
        super::out(&format!(
            "enrolled site {} in '{}'\n",
            r.site_id,
            hq.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn fleet(args: FleetArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let hq = history::resolve_dir(args.hq.history.as_deref());
    let rows =
        fleet::fleet(&hq).with_context(|| format!("reading the fleet in '{}'", hq.display()))?;
    if args.hq.out.json {
        for r in &rows {
            super::json_line("site", serde_json::to_value(r)?)?;
        }
        super::json_line(
            "summary",
            serde_json::json!({ "sites": rows.len(), "schema": 1 }),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let dash = || "-".to_owned();
    let mut s = format!(
        "{:16}  {:9}  {:20}  {:9}  {:20}  {:8}  {}\n",
        "SITE", "TRUST", "BUNDLE", "RELEASE", "LAST SEEN", "FAILURES", "DAMAGE"
    );
    for r in &rows {
        let damage = if r.damage.is_empty() {
            if r.verified {
                "none (verified)"
            } else {
                "none"
            }
            .to_owned()
        } else {
            format!("{} file(s): {}", r.damage.len(), r.damage.join("; "))
        };
        s.push_str(&format!(
            "{:16}  {:9}  {:20}  {:9}  {:20}  {:8}  {}\n",
            r.site_id,
            r.trust,
            r.bundle_id.clone().unwrap_or_else(dash),
            r.release.clone().unwrap_or_else(dash),
            r.last_seen.clone().unwrap_or_else(dash),
            r.failures,
            damage
        ));
    }
    s.push_str(&format!("{} site(s) in '{}'\n", rows.len(), hq.display()));
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}
