//! `offgrid sync` and `offgrid install --from http://HOST:PORT`: pull a release from
//! peers on the LAN (`offgrid serve`), verified chunk by chunk against the site's trusted
//! keys, then install it with the usual transaction (SPEC.md §12.4). Exit 0 installed or
//! already up to date (sync), 1 a refusal (nothing trusted, not newer, wrong bundle),
//! 2 usage, a peer that cannot be reached, or I/O.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use offgrid::pull::{self, PullError, Pulled, Want};
use offgrid::trust::TrustPolicy;
use offgrid::update::{self, Home};
use offgrid::usb::templates::human_size;

use super::Ctx;

/// How long a peer may send nothing before it is dropped.
const STALL: Duration = Duration::from_secs(20);

/// Arguments of `offgrid sync`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub home: super::args::HomeArg,
    /// A peer running `offgrid serve` (HOST:PORT or http://HOST:PORT); repeat for several:
    /// chunks are fetched from all that serve the release, in parallel [default: the
    /// peers found on the LAN by mDNS]
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// Without --peer: how long to look for peers on the LAN, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub discover_timeout: u64,
    #[command(flatten)]
    pub out: super::args::JsonArg,
}

/// `--from` as a peer URL when it is one (`http://…`).
pub fn peer_url(from: &Path) -> Option<String> {
    let s = from.to_str()?;
    (s.starts_with("http://") || s.starts_with("https://")).then(|| s.to_owned())
}

/// The files of the current release, by sha256, to copy instead of fetching.
fn local_lookup(home: &Home) -> impl Fn(&offgrid::manifest::FileEntry) -> Option<PathBuf> {
    let files = home
        .read_state()
        .ok()
        .flatten()
        .map(|s| pull::local_files(&home.version_dir(&s.current.dir)))
        .unwrap_or_default();
    move |f| {
        files
            .iter()
            .find(|(sha, _)| sha == &f.sha256)
            .map(|(_, p)| p.clone())
    }
}

/// The current release's own version of a file (same path), for its unchanged chunks.
fn older_lookup(home: &Home) -> impl Fn(&offgrid::manifest::FileEntry) -> Option<PathBuf> {
    let dir = home
        .read_state()
        .ok()
        .flatten()
        .map(|s| home.version_dir(&s.current.dir));
    move |f| {
        let p = offgrid::paths::join(dir.as_ref()?, &f.path);
        p.is_file().then_some(p)
    }
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.dir());
    let state = home.read_state()?.ok_or_else(|| {
        anyhow::anyhow!(
            "nothing is installed in '{}'\nhelp: the first release comes from a stick or a peer: offgrid install --from USBROOT|http://HOST:PORT --pubkey HQ.pub",
            home.root.display()
        )
    })?;
    let mut peers = Vec::new();
    for p in &args.peers {
        peers.push(pull::parse_peer(p)?.0);
    }
    if peers.is_empty() {
        let found = offgrid::discover::browse(Duration::from_secs(args.discover_timeout))?;
        peers = found
            .iter()
            .filter_map(|p| p.urls.first().cloned())
            .collect();
        if peers.is_empty() {
            anyhow::bail!(
                "no offgrid peer answered on the LAN within {} s\nhelp: start 'offgrid serve --listen 0.0.0.0:8470' on a machine that has the release, or name it with --peer HOST:PORT",
                args.discover_timeout
            );
        }
        if !args.out.json {
            ctx.note(&format!("found on the LAN: {}", peers.join(", ")));
        }
    }
    // Newer trust roots the peers serve first, so a release signed by a rotated key
    // is trusted (SPEC.md §12.4, §19.3); then the keys as they are now.
    let agent = pull::agent(STALL);
    for p in &peers {
        roots_from_peer(ctx, &home, &agent, p, None, args.out.json);
    }
    let policy = home.policy(&home.state()?)?;
    let want = Want {
        name: None,
        bundle_id: Some(state.bundle_id.clone()),
        newer_than: Some(state.current.release.clone()),
    };
    let pulled = pull_with_bar(ctx, &home, &peers, &want, &policy, args.out.json)?;
    let Some(pulled) = pulled else {
        if args.out.json {
            super::json_line(
                "up_to_date",
                serde_json::json!({
                    "home": home.root.display().to_string(),
                    "bundle_id": state.bundle_id,
                    "release": state.current.release.to_string(),
                    "peers": peers,
                }),
            )?;
        } else {
            super::out(&format!(
                "up to date: release {} of {}; no peer offers a newer one\n",
                state.current.release, state.bundle_id
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    finish(ctx, &home, pulled, None, None, args.out.json)
}

/// `install --from http://HOST:PORT[/tree/NAME/]`.
pub fn install_from_peer(
    ctx: &Ctx,
    home: &Home,
    from: &str,
    given: Option<TrustPolicy>,
    bin_dir: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (peer, name) = pull::parse_peer(from)?;
    let state = home.read_state()?;
    if given.is_none() && state.is_none() {
        return Err(offgrid::trust::TrustError::NoKeys.into());
    }
    // The peer's trust roots first (on a first install: in memory from the given keys,
    // recorded once the install is done).
    let chain = roots_from_peer(ctx, home, &pull::agent(STALL), &peer, given.as_ref(), json);
    let first = state.is_none();
    let given = match &chain {
        Some(c) if first => Some(c.state.policy.clone()),
        _ => given,
    };
    let state = home.read_state()?;
    let policy = match (&given, &state) {
        (Some(p), _) => p.clone(),
        (None, Some(s)) => home.policy(s)?,
        (None, None) => return Err(offgrid::trust::TrustError::NoKeys.into()),
    };
    let want = Want {
        bundle_id: state.as_ref().map(|s| s.bundle_id.clone()),
        newer_than: match (&name, &state) {
            (None, Some(s)) => Some(s.current.release.clone()),
            _ => None,
        },
        name,
    };
    let pulled = pull_with_bar(ctx, home, &[peer], &want, &policy, json)?;
    let Some(pulled) = pulled else {
        return Err(PullError::NothingNewer {
            bundle_id: want.bundle_id.unwrap_or_default(),
            newer_than: want.newer_than.map(|v| v.to_string()),
        }
        .into());
    };
    let code = finish(ctx, home, pulled, given.as_ref(), Some(bin_dir), json)?;
    if let Some(c) = chain.as_ref().filter(|_| first) {
        super::trust::record_after_install(home, c)?;
    }
    Ok(code)
}

/// Applies the chain of trust roots `peer` serves (SPEC.md §12.2, §19.3) before its
/// offers are trusted. A peer is not trusted: a chain that does not hold is named in a
/// warning and ignored, and the site keeps its root (an offer signed only by a key it
/// does not know is then refused as untrusted).
fn roots_from_peer(
    ctx: &Ctx,
    home: &Home,
    agent: &ureq::Agent,
    peer: &str,
    given: Option<&TrustPolicy>,
    json: bool,
) -> Option<offgrid::trustroot::Chain> {
    let res = pull::peer_roots(agent, peer)
        .map_err(anyhow::Error::new)
        .and_then(|src| match src {
            Some(src) => super::trust::apply_source(ctx, home, &src, given, json),
            None => Ok(None),
        });
    match res {
        Ok(c) => c,
        Err(e) => {
            ctx.warn(&format!(
                "the trust roots of peer {peer} were not applied: {e:#}"
            ));
            None
        }
    }
}

fn pull_with_bar(
    ctx: &Ctx,
    home: &Home,
    peers: &[String],
    want: &Want,
    policy: &TrustPolicy,
    json: bool,
) -> anyhow::Result<Option<Pulled>> {
    let agent = pull::agent(STALL);
    let bar = ctx.bar("pulling", json);
    let local = local_lookup(home);
    let older = older_lookup(home);
    let r = pull::pull_release(
        &agent,
        &home.root,
        peers,
        want,
        policy,
        &pull::Local {
            same_sha256: &local,
            same_path: &older,
        },
        &super::progress_fn(&bar),
    )
    .with_context(|| format!("pulling from {}", peers.join(", ")));
    bar.finish_and_clear();
    let r = r?;
    if let Some(p) = &r {
        for s in &p.skipped {
            ctx.warn(s);
        }
        for (peer, why) in &p.report.dropped {
            ctx.warn(&format!("peer {peer} {why}"));
        }
    }
    Ok(r)
}

/// Installs a complete pull and removes its folder.
fn finish(
    ctx: &Ctx,
    home: &Home,
    pulled: Pulled,
    given: Option<&TrustPolicy>,
    bin_dir: Option<&Path>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let bar = ctx.bar("installing", json);
    let r = update::install::install(home, &pulled.dir, given, &super::progress_fn(&bar))
        .with_context(|| {
            format!(
                "installing {} pulled from {} into '{}'",
                pulled.name,
                pulled.peers.join(", "),
                home.root.display()
            )
        })?;
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&pulled.dir);
    let rep = &pulled.report;
    let line = format!(
        "  pulled from: {} (fetched {}, reused {} already here, resumed {})\n",
        pulled.peers.join(", "),
        human_size(rep.fetched),
        human_size(rep.reused),
        human_size(rep.resumed)
    );
    let value = serde_json::json!({
        "name": pulled.name,
        "peers": pulled.peers,
        "fetched": rep.fetched,
        "reused": rep.reused,
        "resumed": rep.resumed,
        "dropped": rep.dropped.iter().map(|(p, w)| serde_json::json!({"peer": p, "reason": w})).collect::<Vec<_>>(),
    });
    // Commands on the PATH: where install puts them, or (sync) where they already are.
    let dir = bin_dir
        .map(Path::to_path_buf)
        .or_else(|| update::shims::recorded_dir(home));
    let shims = dir.and_then(|d| super::install::write_shims(ctx, home, &d));
    super::install::print_installed(ctx, &r, json, Some((line, value)), shims.as_ref())
}
