//! `offgrid serve`: serves the trees and packs this machine holds over read-only HTTP
//! (SPEC.md §12) until Ctrl-C or SIGTERM. Prints the address and each tree's web-seed
//! URL on stdout at start; `-v` logs every request on stderr.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;

use offgrid::serve::{Catalog, ServeError, ServeOptions, Server};

use super::{out, Ctx};

/// The default listen address: loopback only; serving the LAN is an explicit choice.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

/// Arguments of `offgrid serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A USB tree to serve (the folder holding manifest.toml); repeat for several
    #[arg(long = "stick", value_name = "ROOT")]
    pub sticks: Vec<PathBuf>,
    /// A site home: its current and previous releases are served
    #[arg(long, value_name = "H")]
    pub home: Option<PathBuf>,
    /// A folder of update packs: every regular file in it is served; repeat for several
    #[arg(long = "packs", value_name = "DIR")]
    pub packs: Vec<PathBuf>,
    /// Address to listen on; 0.0.0.0:PORT serves the whole network, port 0 picks a free one
    #[arg(long, value_name = "ADDR:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Cap on the bytes per second sent to all clients together (e.g. 500K, 10M)
    #[arg(long, value_name = "RATE", value_parser = rate)]
    pub limit_rate: Option<u64>,
    /// Log every request on stderr
    #[arg(short, long)]
    pub verbose: bool,
    /// Do not announce this server on the LAN with mDNS (it is announced, as
    /// _offgrid._tcp, whenever it listens on an address other than loopback)
    #[arg(long)]
    pub no_announce: bool,
}

fn rate(s: &str) -> Result<u64, String> {
    offgrid::units::parse_rate(s)
        .map_err(|_| format!("'{s}' is not a rate; give bytes per second like 500K, 10M or 1G"))
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mut catalog = Catalog::default();
    for s in &args.sticks {
        let added = catalog
            .add_tree(s)
            .with_context(|| format!("reading USB tree '{}'", s.display()))?;
        if !added {
            ctx.warn(&format!(
                "'{}' holds a release already served; it is skipped",
                s.display()
            ));
        }
    }
    if let Some(h) = &args.home {
        catalog
            .add_home(h)
            .with_context(|| format!("reading site home '{}'", h.display()))?;
    }
    for d in &args.packs {
        catalog
            .add_pack_dir(d)
            .with_context(|| format!("reading pack folder '{}'", d.display()))?;
    }
    if catalog.is_empty() {
        return Err(ServeError::Nothing.into());
    }
    let server = Server::bind(&args.listen)?;
    let addr = server
        .local_addr()
        .map_or_else(|| args.listen.clone(), |a| a.to_string());
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    ctrlc::set_handler(move || s2.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C/SIGTERM handler")?;
    let mut text = format!("serving on http://{addr}/\n");
    for t in &catalog.trees {
        text.push_str(&format!(
            "  tree {} (release {} of {}): http://{addr}/tree/{}/  (web seed: http://{addr}/tree/)\n",
            t.name, t.release, t.bundle_id, t.name
        ));
        if let Some((count, roots)) = &t.volumes {
            let served: Vec<String> = roots.keys().map(u32::to_string).collect();
            let missing = match t.missing.len() {
                0 => "every file served".to_owned(),
                n => format!("{n} file(s) not served (a piece is on a volume not given)"),
            };
            text.push_str(&format!(
                "    from volume(s) {} of {count}; {missing}\n",
                served.join(", ")
            ));
        }
    }
    for p in &catalog.packs {
        text.push_str(&format!(
            "  pack {}: http://{addr}/pack/{}  (web seed: http://{addr}/pack/)\n",
            p.name, p.name
        ));
    }
    // Peers find a server on the LAN by mDNS; one listening on loopback only is not
    // reachable from them, so it stays quiet.
    let local = server.local_addr();
    let _announcer = match local {
        Some(a) if !args.no_announce && !a.ip().is_loopback() => {
            let id = offgrid::discover::new_peer_id();
            let trees: Vec<offgrid::discover::Announced> = catalog
                .trees
                .iter()
                .map(|t| offgrid::discover::Announced {
                    bundle_id: t.bundle_id.clone(),
                    release: t.release.clone(),
                })
                .collect();
            match offgrid::discover::announce(&id, a.ip(), a.port(), &trees) {
                Ok(an) => {
                    text.push_str(&format!("  announced on the LAN as {id} (_offgrid._tcp)\n"));
                    Some(an)
                }
                Err(e) => {
                    ctx.warn(&format!("not announced on the LAN: {e}"));
                    None
                }
            }
        }
        _ => None,
    };
    out(&text).context("writing to stdout")?;
    let opts = ServeOptions {
        limit_rate: args.limit_rate,
    };
    let verbose = args.verbose;
    server.run(&catalog, &opts, &stop, &|line| {
        if verbose {
            ctx.note(&line.to_string());
        }
    });
    ctx.note("stopped");
    Ok(ExitCode::SUCCESS)
}
