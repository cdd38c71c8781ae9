//! `offgrid status`: shows the installed release, the previous one, the site's history
//! and whether a recovery happened (text, or JSON Lines with `--json`). Like every
//! command that touches the home, it first finishes or undoes an interrupted operation.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use offgrid::update::{self, Home};

use super::Ctx;

/// Arguments of `offgrid status`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Site home [env: OFFGRID_HOME] [default: ~/.offgrid]
    #[arg(long, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Print the result as JSON Lines
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.as_deref());
    let r = update::status::status(&home)
        .with_context(|| format!("reading the site home '{}'", home.root.display()))?;
    super::install::print_recovery(ctx, r.recovered_now.as_ref(), args.json)?;
    if args.json {
        super::json_line("status", serde_json::to_value(&r)?)?;
        return Ok(ExitCode::SUCCESS);
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
    s.push_str(&format!(
        "files:     {} ({})",
        r.files,
        offgrid::usb::templates::human_size(r.bytes)
    ));
    if r.problems.is_empty() {
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
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}
