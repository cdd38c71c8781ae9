//! `offgrid peers`: lists the `offgrid serve` peers that answer an mDNS browse for
//! `_offgrid._tcp` within a timeout, with the trees they say they serve (unverified:
//! pulling checks the signatures). SPEC.md §12.5. Exit 0 peers found, 1 none answered,
//! 2 mDNS could not start.

use std::process::ExitCode;
use std::time::Duration;

use super::Ctx;

/// Arguments of `offgrid peers`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to listen for answers, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub timeout: u64,
    /// Print one JSON line per peer
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let peers = offgrid::discover::browse(Duration::from_secs(args.timeout))?;
    if peers.is_empty() {
        ctx.warn(&format!(
            "no offgrid peer answered within {} s (is 'offgrid serve --listen 0.0.0.0:8470' running on the LAN, and multicast allowed?)",
            args.timeout
        ));
        return Ok(ExitCode::from(offgrid::exit::REFUSED));
    }
    let mut s = String::new();
    for p in &peers {
        if args.json {
            super::json_line("peer", serde_json::to_value(p)?)?;
            continue;
        }
        let trees: Vec<String> = p
            .trees
            .iter()
            .map(|t| format!("{} {}", t.bundle_id, t.release))
            .collect();
        s.push_str(&format!(
            "{}  {}  serves: {}\n",
            p.id,
            p.urls.join(" "),
            if trees.is_empty() {
                "nothing announced".to_owned()
            } else {
                trees.join(", ")
            }
        ));
    }
    super::out(&s)?;
    Ok(ExitCode::SUCCESS)
}
