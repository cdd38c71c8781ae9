//! `offgrid models`: lists the models on the stick, in the models folder and in the home,
//! with size, quantization, parameters, context length, the memory each needs and whether
//! it fits this machine. Also holds the location flags `offgrid run` shares.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use offgrid::models::fit::{self, mib};
use offgrid::models::template::TemplateSummary;
use offgrid::models::{Catalog, Locations, Machine, ModelFile, Portable};

use super::Ctx;

/// Where to look for models (shared by `run` and `models`).
#[derive(clap::Args, Debug, Clone)]
pub struct Where {
    /// Portable mode: use the stick this binary runs from (or --stick) and leave the
    /// home alone
    #[arg(long)]
    pub portable: bool,
    /// Portable mode on the stick whose root (the folder holding manifest.toml) is ROOT
    #[arg(long, value_name = "ROOT", env = "OFFGRID_PORTABLE")]
    pub stick: Option<PathBuf>,
    /// A folder of .gguf files to search too (not signed, so never verified)
    #[arg(long, value_name = "DIR", env = "OFFGRID_MODELS_DIR")]
    pub models_dir: Option<PathBuf>,
    /// The installed home [default: ~/.offgrid]
    #[arg(long, value_name = "DIR", env = "OFFGRID_HOME")]
    pub home: Option<PathBuf>,
}

impl Where {
    /// Resolves the flags into the places to search. Like every command that reads the
    /// installed home, it first finishes or undoes an interrupted install or apply there
    /// (SPEC §7), so a model is never read from a half-switched home.
    pub fn locations(&self, ctx: &super::Ctx) -> anyhow::Result<Locations> {
        let home_root = offgrid::update::Home::resolve(self.home.as_deref());
        // A home that cannot be recovered must not stop a model on a stick from running:
        // say so and go on (the home's own commands will report it as an error).
        match offgrid::update::recover(&home_root) {
            Ok(recovered) => super::install::print_recovery(ctx, recovered.as_ref(), false)?,
            Err(e) => ctx.warn(&format!(
                "could not finish an interrupted update in '{}': {e}",
                home_root.root.display()
            )),
        }
        let portable = match (&self.stick, self.portable) {
            (Some(p), _) if !p.as_os_str().is_empty() => Portable::Root(p.clone()),
            (_, true) => Portable::Required,
            _ => Portable::Auto,
        };
        let home = self.home.clone().filter(|h| !h.as_os_str().is_empty());
        let dir = self
            .models_dir
            .clone()
            .filter(|h| !h.as_os_str().is_empty());
        Ok(Locations::find(portable, dir, home)?)
    }
}

/// Arguments of `offgrid models`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub place: Where,
    /// Estimate memory for this context size instead of each model's default
    #[arg(long, value_name = "TOKENS")]
    pub ctx: Option<u64>,
    /// Print JSON Lines (SPEC.md §10) instead of a table
    #[arg(long)]
    pub json: bool,
}

fn json_of(m: &ModelFile, machine: &Machine, ctx: Option<u64>, default: bool) -> serde_json::Value {
    let need = m.estimate(ctx);
    serde_json::json!({
        "name": m.name,
        "path": m.path.display().to_string(),
        "origin": m.origin,
        "default": default,
        "size": m.size,
        "architecture": m.architecture(),
        "quantization": m.quantization(),
        "parameters": m.parameters(),
        "context_length": m.context_length(),
        "ctx": need.ctx,
        "chat_template": template_of(m),
        "signed": m.entry.is_some(),
        "memory": {
            "ctx": need.ctx,
            "weights": need.weights,
            "kv_cache": need.kv_cache,
            "overhead": need.overhead,
            "total": need.total(),
        },
        "fits": m.runnable() && machine.fits(&need),
        "problem": m.problem,
        "format": m.format.as_str(),
        "runnable": m.runnable(),
    })
}

/// The model's chat template as shown (SPEC.md §10.7): null when the header is unread or
/// carries none.
fn template_of(m: &ModelFile) -> Option<TemplateSummary> {
    m.info
        .as_ref()?
        .chat_template
        .as_deref()
        .map(TemplateSummary::of)
}

fn params(n: Option<u64>) -> String {
    match n {
        None => "-".into(),
        Some(n) if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        Some(n) if n >= 1_000_000 => format!("{:.0}M", n as f64 / 1e6),
        Some(n) => n.to_string(),
    }
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let locations = args.place.locations(ctx)?;
    let catalog = Catalog::open(locations).context("finding models")?;
    let machine = Machine::probe();
    let default = catalog.default_model().map(str::to_owned);
    if args.json {
        super::json_line(
            "machine",
            serde_json::json!({
                "available_ram": machine.available_ram,
                "total_ram": machine.total_ram,
                "physical_cores": machine.physical_cores,
                "logical_cores": machine.logical_cores,
                "assumed": machine.assumed,
                "searched": catalog.locations.describe(),
            }),
        )?;
        for m in &catalog.models {
            let is_default = default.as_deref() == Some(m.name.as_str()) && m.tree.is_some();
            super::json_line("model", json_of(m, &machine, args.ctx, is_default))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if catalog.models.is_empty() {
        ctx.note(&format!(
            "no models found (searched: {})",
            catalog.locations.describe()
        ));
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = format!(
        "{:<28} {:<8} {:>10} {:>7} {:>11} {:>10}  {:<4} {}\n",
        "NAME", "QUANT", "SIZE", "PARAMS", "CTX/MAX", "NEEDS", "FITS", "WHERE"
    );
    for m in &catalog.models {
        if m.format != offgrid::manifest::ModelFormat::Gguf {
            let mut name = m.name.clone();
            name.truncate(28);
            out.push_str(&format!(
                "{:<28} {:<8} {:>10} {:>7} {:>11} {:>10}  {:<4} {}\n",
                name,
                m.format.as_str(),
                mib(m.size),
                params(m.parameters()),
                "-",
                "-",
                "n/a",
                m.origin,
            ));
            let what = m
                .check_runnable()
                .err()
                .map(|_| offgrid::models::formats::purpose(m.format, m.architecture().as_deref()))
                .unwrap_or_default();
            out.push_str(&format!(
                "    {} model{}, run cannot start it: {what}\n",
                m.format.as_str(),
                m.architecture()
                    .map(|a| format!(" ({a})"))
                    .unwrap_or_default(),
            ));
            if let Some(p) = &m.problem {
                out.push_str(&format!("    problem: {p}\n"));
            }
            continue;
        }
        let need = m.estimate(args.ctx);
        let fits = match &m.problem {
            Some(_) => "bad",
            None if machine.fits(&need) => "yes",
            None => "no",
        };
        let mut name = m.name.clone();
        if default.as_deref() == Some(m.name.as_str()) && m.tree.is_some() {
            name.push_str(" *");
        }
        out.push_str(&format!(
            "{:<28} {:<8} {:>10} {:>7} {:>11} {:>10}  {:<4} {}\n",
            name,
            m.quantization().unwrap_or_else(|| "-".into()),
            mib(m.size),
            params(m.parameters()),
            format!(
                "{}/{}",
                need.ctx,
                m.context_length()
                    .map_or_else(|| "-".into(), |c| c.to_string())
            ),
            mib(need.total()),
            fits,
            m.origin,
        ));
        if let Some(p) = &m.problem {
            out.push_str(&format!("    problem: {p}\n"));
        } else {
            let t = template_of(m).map_or_else(
                || "none: run uses ChatML".to_owned(),
                |t| match t.family {
                    Some(_) => t.describe(),
                    None => format!("{}: run uses ChatML", t.describe()),
                },
            );
            out.push_str(&format!("    chat template: {t}\n"));
        }
    }
    super::out(&out)?;
    let star = if default.is_some() {
        "* the default model; "
    } else {
        ""
    };
    ctx.note(&format!(
        "{star}CTX is the context run uses (of the model's MAX); NEEDS is the memory at {}; {} available{}, {} physical cores",
        args.ctx.map_or_else(
            || "each model's default context (--ctx to change)".to_owned(),
            |c| format!("--ctx {c}")
        ),
        mib(machine.available_ram),
        if machine.assumed {
            format!(" (assumed by {})", fit::ASSUME_RAM_ENV)
        } else {
            String::new()
        },
        machine.physical_cores
    ));
    Ok(ExitCode::SUCCESS)
}
