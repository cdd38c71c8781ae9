//! `offgrid fetch` (download a catalog entry, a URL or an `hf://` file into the HQ
//! store, resumable and verified) and `offgrid check-updates` (which catalog entries are
//! newer than the ones the latest recorded releases use). SPEC.md §14.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use offgrid::fetch::{self, catalog, Event, FetchError, Request};
use offgrid::update::history;

use super::Ctx;

/// Where a catalog comes from and the keys it is checked with: `fetch`,
/// `check-updates`, and the catalog entries a recipe names (`pack-usb`,
/// `create-update-pack`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct CatalogSource {
    /// The catalog: a file or an http(s) URL (SPEC.md §14.1)
    #[arg(long, value_name = "FILE|URL")]
    pub catalog: Option<String>,
    /// A trusted public key the catalog must be signed with (CATALOG.minisig); repeatable
    #[arg(long = "pubkey", value_name = "FILE", conflicts_with = "trust")]
    pub pubkeys: Vec<PathBuf>,
    /// A trust policy file the catalog's signatures must meet
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// Extra CA certificates (PEM) for an internal HTTPS mirror, trusted beside the built-in web roots
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
}

/// Flags shared by `fetch` and `check-updates`: the catalog, the HQ folder, JSON.
#[derive(clap::Args, Debug)]
pub struct CatalogArgs {
    #[command(flatten)]
    pub source: CatalogSource,
    /// HQ release history and store [env: OFFGRID_HQ] [default: ~/.offgrid-hq]
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
    /// Print JSON Lines (SPEC.md §9, §14.5)
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `offgrid fetch`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// NAME[@VERSION] from --catalog, an http(s) URL, or hf://OWNER/REPO/FILE[@REVISION]
    pub what: String,
    #[command(flatten)]
    pub common: CatalogArgs,
    /// The sha256 the file must have (URL and hf:// sources)
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,
    /// No sha256 is known: accept what arrives and record it as trusted on first use
    #[arg(long)]
    pub trust_on_first_use: bool,
    /// Parallel ranged connections [default: start on 1, add while they help, up to 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=32))]
    pub connections: Option<u16>,
    /// Most bytes per second over all connections, e.g. 500K, 2M, 1G
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    pub limit_rate: Option<u64>,
    /// Seconds without a byte before a connection is dropped and retried
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_timeout: u64,
    /// Attempts per part on one source before the next source is tried
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub retries: u32,
}

/// Arguments of `offgrid check-updates`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub common: CatalogArgs,
    /// Only this product line (default: every bundle in the history)
    #[arg(long, value_name = "ID")]
    pub bundle_id: Option<String>,
}

fn parse_rate(s: &str) -> Result<u64, String> {
    offgrid::units::parse_rate(s)
}

/// A library error for the error printer, which asks it for its `help:` line.
fn with_help(e: FetchError) -> anyhow::Error {
    anyhow::Error::new(e)
}

fn load_catalog(
    agent: &ureq::Agent,
    a: &CatalogSource,
    json: bool,
    ctx: &Ctx,
) -> anyhow::Result<catalog::Loaded> {
    let Some(src) = &a.catalog else {
        anyhow::bail!(
            "no catalog given\nhelp: pass --catalog FILE|URL (see formats/catalog.example.toml)"
        );
    };
    let policy = super::install::given_policy(&a.pubkeys, a.trust.as_ref())?;
    let loaded = catalog::load(agent, src, policy.as_ref()).map_err(with_help)?;
    if !loaded.signed && !json {
        ctx.warn(&format!(
            "catalog '{src}' was not signature-checked (no --pubkey/--trust); its sha256s are taken as given"
        ));
    }
    Ok(loaded)
}

/// Runs `offgrid fetch`.
pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let hq = history::resolve_dir(args.common.history.as_deref());
    let mut opts = fetch::Options::new(hq.clone());
    if let Some(n) = args.connections {
        opts.connections = n as usize;
        opts.climb = false;
    }
    opts.limit_rate = args.limit_rate;
    opts.stall = Duration::from_secs(args.stall_timeout);
    opts.retries = args.retries;
    opts.ca_file = args.common.source.ca_file.clone();
    opts.hf_token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    if let Some(e) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        opts.hf_endpoint = e.trim_end_matches('/').to_owned();
    }
    if let Some(s) = &args.sha256 {
        if !fetch::is_sha256(&s.to_ascii_lowercase()) {
            anyhow::bail!("--sha256 '{}' is not 64 hex digits\nhelp: copy the sha256 from the publisher's page", s.chars().take(80).collect::<String>());
        }
    }
    if args.sha256.is_some() && args.trust_on_first_use {
        anyhow::bail!("--sha256 and --trust-on-first-use contradict each other\nhelp: give the hash when you know it");
    }
    let agent = fetch::client::agent(opts.ca_file.as_deref(), opts.stall).map_err(with_help)?;
    let sha_flag = args.sha256.as_ref().map(|s| s.to_ascii_lowercase());
    let what = args.what.as_str();
    let req = if what.starts_with("http://") || what.starts_with("https://") {
        if args.common.source.catalog.is_some() {
            anyhow::bail!("--catalog is for NAME[@VERSION]; '{what}' is a URL\nhelp: drop --catalog, or fetch a catalog entry by name");
        }
        Request {
            label: what.to_owned(),
            urls: vec![what.to_owned()],
            sha256: sha_flag,
            size: None,
            tofu: args.trust_on_first_use,
            origin: serde_json::json!({"url": what}),
        }
    } else if what.starts_with("hf://") {
        let name = fetch::hf::parse(what).map_err(with_help)?;
        let r = fetch::hf::resolve(&agent, &name, &opts.hf_endpoint, opts.hf_token.as_deref())
            .map_err(with_help)?;
        if let (Some(f), Some(h)) = (&sha_flag, &r.sha256) {
            if f != h {
                anyhow::bail!("'{what}' has sha256 {h} at commit {}, not the --sha256 given ({f})\nhelp: check the revision, or the hash you were given", r.commit);
            }
        }
        Request {
            label: what.to_owned(),
            urls: vec![r.url.clone()],
            sha256: sha_flag.or(r.sha256.clone()),
            size: r.size,
            tofu: args.trust_on_first_use,
            origin: serde_json::json!({"hf": what, "repo": name.repo, "file": name.file,
                "revision": name.revision, "commit": r.commit, "lfs_sha256": r.sha256}),
        }
    } else {
        let loaded = load_catalog(&agent, &args.common.source, args.common.json, ctx)?;
        emit_json(
            args.common.json,
            &Event::Catalog {
                source: loaded.source.clone(),
                signed: loaded.signed,
            },
        );
        if args.sha256.is_some() || args.trust_on_first_use {
            anyhow::bail!("a catalog entry carries its own sha256\nhelp: drop --sha256 / --trust-on-first-use");
        }
        let e = loaded.catalog.find(what).ok_or_else(|| {
            with_help(FetchError::NotInCatalog {
                source_name: loaded.source.clone(),
                wanted: what.to_owned(),
                known: loaded.catalog.names(),
            })
        })?;
        entry_request(&loaded, e)
    };
    let f = fetch_shown(&agent, &req, &opts, ctx, args.common.json)
        .with_context(|| format!("fetching into '{}'", hq.display()))?;
    if args.common.json {
        let mut data = serde_json::to_value(&f)?;
        data["schema"] = 1.into();
        super::json_line("fetched", data)?;
    } else {
        let how = if f.already {
            "already in the store".to_owned()
        } else if f.trusted_on_first_use {
            "trusted on first use: no hash was given; compare it with the publisher's".to_owned()
        } else {
            "verified".to_owned()
        };
        super::out(&format!(
            "{}\n  sha256: {}\n  size:   {} bytes\n  object: {}\n  ({how})\n",
            f.label,
            f.sha256,
            f.size,
            f.object.display()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The request for a catalog entry: its mirrors, sha256 and size; the catalog recorded
/// as the origin.
fn entry_request(loaded: &catalog::Loaded, e: &catalog::Entry) -> Request {
    Request {
        label: format!("{}@{}", e.name, e.version),
        urls: e.mirrors.clone(),
        sha256: Some(e.sha256.clone()),
        size: Some(e.size),
        tofu: false,
        origin: serde_json::json!({"catalog": loaded.source, "catalog_id": loaded.catalog.catalog_id,
            "catalog_version": loaded.catalog.version.as_str(), "signed": loaded.signed, "entry": e}),
    }
}

/// One fetch with the progress bar, diagnostics on stderr (text mode) or JSON events.
fn fetch_shown(
    agent: &ureq::Agent,
    req: &Request,
    opts: &fetch::Options,
    ctx: &Ctx,
    json: bool,
) -> anyhow::Result<fetch::Fetched> {
    let pb = ctx.bar("fetch", json);
    let last_json = Mutex::new(Instant::now() - Duration::from_secs(10));
    // Diagnostics above the bar (printed also when the bar is hidden).
    let say = |line: String| pb.suspend(|| eprintln!("{line}"));
    let on_event = |ev: Event| {
        match &ev {
            Event::Progress { done, total } => {
                if pb.length() != Some(*total) {
                    pb.set_length(*total);
                }
                pb.set_position(*done);
                if json {
                    if let Ok(mut t) = last_json.lock() {
                        if t.elapsed() < Duration::from_secs(1) && done < total {
                            return;
                        }
                        *t = Instant::now();
                    }
                }
            }
            Event::Source {
                url, resumed_bytes, ..
            } if !json => {
                if *resumed_bytes > 0 {
                    say(format!(
                        "resuming from {url} ({resumed_bytes} bytes already here)"
                    ));
                } else {
                    say(format!("downloading from {url}"));
                }
            }
            Event::Retry {
                url,
                attempt,
                reason,
            } if !json => {
                say(format!("retry {attempt} of {url}: {reason}"));
            }
            Event::Restart { url, reason } if !json => {
                say(format!("restarting a part of {url}: {reason}"));
            }
            Event::MirrorFailed { url, reason } if !json => {
                say(format!("warning: giving up on {url}: {reason}"));
            }
            Event::BadBytes {
                url,
                expected,
                actual,
            } if !json => {
                say(format!("warning: {url} served wrong bytes (sha256 {actual}, expected {expected}); nothing was stored"));
            }
            _ => {}
        }
        emit_json(json, &ev);
    };
    let result = fetch::fetch(agent, req, opts, &on_event);
    pb.finish_and_clear();
    result.map_err(with_help)
}

/// Fetches the catalog entries the recipe at `recipe` names (`catalog = "NAME@VERSION"`,
/// SPEC.md §14.7) into the HQ store (`history`, else `OFFGRID_HQ`) — an entry already
/// there is not downloaded again — and returns each reference's store object, for
/// [`offgrid::usb::Flags::catalog_objects`]. No reference: nothing is read.
pub fn recipe_objects(
    recipe: Option<&std::path::Path>,
    source: &CatalogSource,
    history: Option<&std::path::Path>,
    ctx: &Ctx,
) -> anyhow::Result<std::collections::BTreeMap<String, PathBuf>> {
    let mut out = std::collections::BTreeMap::new();
    let Some(path) = recipe else {
        return Ok(out);
    };
    let refs = offgrid::usb::recipe::Recipe::load(path)?.catalog_refs();
    if refs.is_empty() {
        return Ok(out);
    }
    if source.catalog.is_none() {
        anyhow::bail!(
            "recipe '{}' names catalog entries ({}) and no catalog was given\nhelp: pass --catalog FILE|URL (with --pubkey or --trust for a signed catalog)",
            path.display(),
            refs.join(", ")
        );
    }
    let hq = history::resolve_dir(history);
    let mut opts = fetch::Options::new(hq.clone());
    opts.ca_file = source.ca_file.clone();
    opts.hf_token = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty());
    if let Some(e) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        opts.hf_endpoint = e.trim_end_matches('/').to_owned();
    }
    let agent = fetch::client::agent(opts.ca_file.as_deref(), opts.stall).map_err(with_help)?;
    let loaded = load_catalog(&agent, source, false, ctx)?;
    for r in refs {
        let e = loaded.catalog.find(&r).ok_or_else(|| {
            with_help(FetchError::NotInCatalog {
                source_name: loaded.source.clone(),
                wanted: r.clone(),
                known: loaded.catalog.names(),
            })
        })?;
        let f = fetch_shown(&agent, &entry_request(&loaded, e), &opts, ctx, false)
            .with_context(|| format!("fetching recipe entry '{r}' into '{}'", hq.display()))?;
        out.insert(r, f.object);
    }
    Ok(out)
}

fn emit_json(json: bool, ev: &Event) {
    if !json {
        return;
    }
    if let Ok(mut v) = serde_json::to_value(ev) {
        let ty = v["event"].as_str().unwrap_or("event").to_owned();
        if let Some(o) = v.as_object_mut() {
            o.remove("event");
        }
        let _ = super::json_line(&ty, v);
    }
}

/// Runs `offgrid check-updates`.
pub fn check_updates(args: CheckArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let hq = history::resolve_dir(args.common.history.as_deref());
    let agent = fetch::client::agent(
        args.common.source.ca_file.as_deref(),
        Duration::from_secs(30),
    )
    .map_err(with_help)?;
    let loaded = load_catalog(&agent, &args.common.source, args.common.json, ctx)?;
    let ids = match &args.bundle_id {
        Some(id) => vec![id.clone()],
        None => history::bundle_ids(&hq)?,
    };
    let mut lines = Vec::new();
    let mut newer = 0usize;
    for id in &ids {
        let Some(rel) = history::releases(&hq, id)?.pop() else {
            anyhow::bail!("no release of '{id}' is recorded in '{}'\nhelp: pack-usb and create-update-pack record releases; check --history / OFFGRID_HQ", hq.display());
        };
        for f in &rel.manifest.files {
            let Some(used) = loaded.catalog.entries.iter().find(|e| e.sha256 == f.sha256) else {
                continue;
            };
            let Some(best) = loaded.catalog.newest(&used.name) else {
                continue;
            };
            let is_newer = best.version > used.version;
            newer += usize::from(is_newer);
            if args.common.json {
                super::json_line(
                    "entry",
                    serde_json::json!({"bundle_id": id, "release": rel.manifest.release.as_str(),
                        "path": f.path, "name": used.name, "uses": used.version.as_str(),
                        "newest": best.version.as_str(), "newer": is_newer}),
                )?;
            } else if is_newer {
                lines.push(format!(
                    "{id} {}: {} uses {}@{}; the catalog has {}",
                    rel.manifest.release, f.path, used.name, used.version, best.version
                ));
            } else {
                lines.push(format!(
                    "{id} {}: {} uses {}@{} (newest)",
                    rel.manifest.release, f.path, used.name, used.version
                ));
            }
        }
    }
    if args.common.json {
        super::json_line("summary", serde_json::json!({"newer": newer, "schema": 1}))?;
    } else {
        for l in &lines {
            super::out(&format!("{l}\n"))?;
        }
        super::out(&format!(
            "{newer} newer catalog entr{} found\n",
            if newer == 1 { "y" } else { "ies" }
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_rate;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("500K"), Ok(500 << 10));
        assert_eq!(parse_rate("2m"), Ok(2 << 20));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("0").is_err());
    }
}
