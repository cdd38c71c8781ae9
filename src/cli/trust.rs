//! `offgrid trust init|rotate|show|update`: HQ makes and signs trust roots (key
//! rotation and revocation, SPEC.md §19); a site applies a chain of them by hand. The
//! automatic paths (install, apply-update) call [`apply_found`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use offgrid::keys::{PublicKey, SecretKey};
use offgrid::trustroot::{self, ExpiryPolicy, Root, RootError, RootKey, TrustState};
use offgrid::update::Home;

use super::Ctx;

/// Arguments of `offgrid trust`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// `offgrid trust` subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// HQ: make root version 1 (the keys sites trust, the threshold) in DIR/roots
    Init(InitArgs),
    /// HQ: make the next root (keys added, removed or revoked, a new threshold), signed
    /// by the threshold of the current root and of the new one
    Rotate(RotateArgs),
    /// Show the newest root of an HQ folder, or the root a site home is at
    Show(ShowArgs),
    /// Apply a chain of roots (a stick, a folder) to a site home
    Update(UpdateArgs),
}

/// Arguments of `offgrid trust init`.
#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// A public key sites will trust (repeatable)
    #[arg(long = "key", value_name = "FILE", required = true)]
    keys: Vec<PathBuf>,
    /// Signatures required on every release and every next root
    #[arg(long, default_value_t = 1)]
    threshold: u64,
    /// What a site does with an expired release (SPEC.md §17.5)
    #[arg(long, value_name = "warn|refuse", default_value = "refuse")]
    expiry_policy: ExpiryPolicy,
    /// A secret key to sign the root with (repeatable; at least the threshold of the
    /// keys); password from OFFGRID_PASSWORD or a prompt
    #[arg(long = "sign", value_name = "KEYFILE", required = true)]
    sign: Vec<PathBuf>,
    /// HQ's trust folder; the root goes to DIR/roots/1.root.toml
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print the result as JSON Lines
    #[arg(long)]
    json: bool,
}

/// Arguments of `offgrid trust rotate`.
#[derive(clap::Args, Debug)]
pub struct RotateArgs {
    /// HQ's trust folder (made by `trust init`)
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// A public key to add (repeatable)
    #[arg(long = "add-key", value_name = "FILE")]
    add: Vec<PathBuf>,
    /// A key to remove: its .pub file or key id (repeatable)
    #[arg(long = "remove-key", value_name = "FILE|KEYID")]
    remove: Vec<String>,
    /// A key to remove and revoke for good: its .pub file or key id (repeatable)
    #[arg(long = "revoke-key", value_name = "FILE|KEYID")]
    revoke: Vec<String>,
    /// The new threshold [default: the current one]
    #[arg(long)]
    threshold: Option<u64>,
    /// The new expiry policy [default: the current one]
    #[arg(long, value_name = "warn|refuse")]
    expiry_policy: Option<ExpiryPolicy>,
    /// A secret key of the current root to sign with (repeatable)
    #[arg(long = "sign-old", value_name = "KEYFILE")]
    sign_old: Vec<PathBuf>,
    /// A secret key of the new root to sign with (repeatable)
    #[arg(long = "sign-new", value_name = "KEYFILE")]
    sign_new: Vec<PathBuf>,
    /// Print the result as JSON Lines
    #[arg(long)]
    json: bool,
}

/// Arguments of `offgrid trust show`.
#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// An HQ trust folder, a stick or a roots folder: its newest root
    #[arg(long, value_name = "DIR", conflicts_with = "home")]
    root: Option<PathBuf>,
    /// Site home [env: OFFGRID_HOME] [default: ~/.offgrid]
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print the result as JSON Lines
    #[arg(long)]
    json: bool,
}

/// Arguments of `offgrid trust update`.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// A stick, a folder beside a pack, an HQ trust folder, or a roots folder
    #[arg(long = "from", value_name = "DIR")]
    from: PathBuf,
    /// Site home [env: OFFGRID_HOME] [default: ~/.offgrid]
    #[arg(long, value_name = "DIR")]
    home: Option<PathBuf>,
    /// Print the result as JSON Lines
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Init(a) => init(a, ctx),
        Command::Rotate(a) => rotate(a, ctx),
        Command::Show(a) => show(a),
        Command::Update(a) => update(a, ctx),
    }
}

fn root_key(pk: &PublicKey) -> RootKey {
    RootKey {
        id: pk.key_id(),
        pubkey: pk.to_base64(),
        name: None,
    }
}

fn load_secrets(paths: &[PathBuf]) -> anyhow::Result<Vec<SecretKey>> {
    paths
        .iter()
        .map(|p| {
            super::keygen::load_secret_key(p)
                .with_context(|| format!("loading secret key '{}'", p.display()))
        })
        .collect()
}

/// Prints the paths written and the root.
fn print_made(root: &Root, written: &[PathBuf], json: bool) -> anyhow::Result<()> {
    if json {
        super::json_line(
            "root",
            serde_json::json!({
                "version": root.version,
                "threshold": root.threshold,
                "expiry_policy": root.expiry_policy.to_string(),
                "keys": root.keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
                "revoked": root.revoked,
                "files": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "schema": 1,
            }),
        )?;
    } else {
        let mut s = format!(
            "root {}: {} key(s), {} signature(s) required, expiry policy {}\n",
            root.version,
            root.keys.len(),
            root.threshold,
            root.expiry_policy
        );
        for p in written {
            s.push_str(&format!("  wrote '{}'\n", p.display()));
        }
        super::out(&s)?;
    }
    Ok(())
}

/// The message of a root HQ was about to write that sites would refuse.
fn would_refuse(e: RootError) -> anyhow::Error {
    anyhow::Error::new(e).context("sites would refuse this root, so nothing was written")
}

fn init(a: InitArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let dir = a.out.join(trustroot::ROOTS_DIR);
    let mut keys = Vec::new();
    for p in &a.keys {
        let pk = PublicKey::load(p)?;
        if keys.iter().all(|k: &RootKey| k.id != pk.key_id()) {
            keys.push(root_key(&pk));
        }
    }
    let root = Root {
        format: trustroot::FORMAT.into(),
        version: 1,
        created: offgrid::manifest::now_rfc3339(),
        threshold: a.threshold,
        expiry_policy: a.expiry_policy,
        revoked: Vec::new(),
        keys,
    };
    let state = trustroot::state_of(&root)?;
    let signers = load_secrets(&a.sign)?;
    let raw = trustroot::prepare(&dir, &root, &signers)?;
    // Root 1 is checked as a site at the implicit root 0 of the same keys checks it.
    let implicit = TrustState::implicit(state.policy.clone());
    trustroot::verify_next(&implicit, &raw).map_err(would_refuse)?;
    let written = trustroot::write_new(&raw)?;
    print_made(&root, &written, a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// A key named by its .pub file or its key id.
fn key_id_arg(s: &str) -> anyhow::Result<String> {
    let p = Path::new(s);
    if !p.exists() && s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(s.to_ascii_uppercase());
    }
    Ok(PublicKey::load(p)?.key_id())
}

fn rotate(a: RotateArgs, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let dir = trustroot::find_dir(&a.root).unwrap_or_else(|| a.root.join(trustroot::ROOTS_DIR));
    let (old, _) = trustroot::newest_in(&dir)?.ok_or_else(|| {
        super::fail(
            format!("'{}' holds no root", dir.display()),
            format!(
                "make root 1 first with 'offgrid trust init --out {}'",
                a.root.display()
            ),
        )
    })?;
    let mut keys = old.keys.clone();
    let mut revoked = old.revoked.clone();
    for s in a.remove.iter().chain(&a.revoke) {
        let id = key_id_arg(s)?;
        if !keys.iter().any(|k| k.id == id) && !a.revoke.contains(s) {
            return Err(super::fail(
                format!("key {id} is not in root {}", old.version),
                format!(
                    "'offgrid trust show --root {}' lists its keys",
                    a.root.display()
                ),
            ));
        }
        keys.retain(|k| k.id != id);
    }
    for s in &a.revoke {
        let id = key_id_arg(s)?;
        if !revoked.contains(&id) {
            revoked.push(id);
        }
    }
    for p in &a.add {
        let pk = PublicKey::load(p)?;
        if revoked.contains(&pk.key_id()) {
            return Err(super::fail(
                format!(
                    "key {} ('{}') is revoked; a revoked key never comes back",
                    pk.key_id(),
                    p.display()
                ),
                "make a new key with 'offgrid keygen'",
            ));
        }
        if keys.iter().all(|k| k.id != pk.key_id()) {
            keys.push(root_key(&pk));
        }
    }
    let root = Root {
        format: trustroot::FORMAT.into(),
        version: old.version + 1,
        created: offgrid::manifest::now_rfc3339(),
        threshold: a.threshold.unwrap_or(old.threshold),
        expiry_policy: a.expiry_policy.unwrap_or(old.expiry_policy),
        revoked,
        keys,
    };
    root.check()
        .map_err(|e| anyhow::anyhow!("the new root is not valid: {e}"))?;
    let mut signers = load_secrets(&a.sign_old)?;
    signers.extend(load_secrets(&a.sign_new)?);
    let raw = trustroot::prepare(&dir, &root, &signers)?;
    trustroot::verify_next(&trustroot::state_of(&old)?, &raw).map_err(would_refuse)?;
    let written = trustroot::write_new(&raw)?;
    print_made(&root, &written, a.json)?;
    Ok(ExitCode::SUCCESS)
}

fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let (version, keys, threshold, policy, revoked, source) = match &a.root {
        Some(d) => {
            let dir = trustroot::find_dir(d).unwrap_or_else(|| d.clone());
            let (r, _) = trustroot::newest_in(&dir)?
                .ok_or_else(|| anyhow::anyhow!("'{}' holds no root", dir.display()))?;
            let policy = r.check().map_err(anyhow::Error::msg)?;
            (
                r.version,
                policy.keys,
                r.threshold as usize,
                r.expiry_policy,
                r.revoked,
                dir.display().to_string(),
            )
        }
        None => {
            let home = Home::resolve(a.home.as_deref());
            let s = home.state()?;
            let t = TrustState::of_home(&home, &s)?;
            (
                t.version,
                t.policy.keys,
                t.policy.threshold,
                t.expiry_policy,
                t.revoked.into_iter().collect(),
                home.root.display().to_string(),
            )
        }
    };
    if a.json {
        super::json_line(
            "trust",
            serde_json::json!({
                "source": source,
                "version": version,
                "threshold": threshold,
                "expiry_policy": policy.to_string(),
                "keys": keys.iter().map(|k| serde_json::json!({
                    "key_id": k.key_id(), "fingerprint": k.fingerprint(),
                })).collect::<Vec<_>>(),
                "revoked": revoked,
                "schema": 1,
            }),
        )?;
    } else {
        let mut s = format!(
            "root version {version} ({source}): {threshold} of {} key(s), expiry policy {policy}\n",
            keys.len()
        );
        for k in &keys {
            s.push_str(&format!("  key {}  {}\n", k.key_id(), k.fingerprint()));
        }
        for r in &revoked {
            s.push_str(&format!("  revoked {r}\n"));
        }
        super::out(&s)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn update(a: UpdateArgs, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(a.home.as_deref());
    if !a.from.is_dir() {
        return Err(super::fail(
            format!("'{}' is not a folder", a.from.display()),
            "pass a stick, HQ's trust folder or a roots folder",
        ));
    }
    let dir = trustroot::find_dir(&a.from).ok_or_else(|| {
        super::fail(
            format!(
                "'{}' holds no trust roots (no 'roots' folder, no N.root.toml)",
                a.from.display()
            ),
            "pass a stick or folder carrying HQ's roots (pack-usb --roots)",
        )
    })?;
    let chain = trustroot::update_home(&home, &dir, true)
        .with_context(|| format!("applying the trust roots of '{}'", dir.display()))?;
    print_chain(ctx, &chain, a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints what applying a chain did (a JSON record, or a line on stderr).
pub fn print_chain(ctx: &Ctx, chain: &trustroot::Chain, json: bool) -> anyhow::Result<()> {
    let applied: Vec<u64> = chain.applied.iter().map(|a| a.root.version).collect();
    if json {
        super::json_line(
            "trust-update",
            serde_json::json!({
                "from": chain.dir.display().to_string(),
                "applied": applied,
                "version": chain.state.version,
                "keys": chain.state.policy.keys.iter().map(|k| k.key_id()).collect::<Vec<_>>(),
                "threshold": chain.state.policy.threshold,
                "expiry_policy": chain.state.expiry_policy.to_string(),
                "schema": 1,
            }),
        )?;
    } else if applied.is_empty() {
        ctx.note(&format!(
            "trust: root version {} is current; '{}' holds nothing newer",
            chain.state.version,
            chain.dir.display()
        ));
    } else {
        ctx.note(&format!(
            "trust: applied {} root(s) from '{}': now at root version {} ({} of {} key(s): {})",
            applied.len(),
            chain.dir.display(),
            chain.state.version,
            chain.state.policy.threshold,
            chain.state.policy.keys.len(),
            chain
                .state
                .policy
                .keys
                .iter()
                .map(|k| k.key_id())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(())
}

/// The automatic path of install (a stick) and apply-update (beside a pack): applies
/// the newer roots found in `dir` (a stick root, a pack's folder) to the home, or, for
/// a first install, in memory from the `given` policy (recorded after the install by
/// [`record_after_install`]). Prints what it applied. `None` when `dir` holds no roots.
pub fn apply_found(
    ctx: &Ctx,
    home: &Home,
    dir: &Path,
    given: Option<&offgrid::trust::TrustPolicy>,
    json: bool,
) -> anyhow::Result<Option<trustroot::Chain>> {
    let Some(roots) = trustroot::find_dir(dir) else {
        return Ok(None);
    };
    apply_source(ctx, home, &trustroot::Source::Dir(roots), given, json)
}

/// [`apply_found`] for any source of roots (a pack's head, a peer's `/roots/`).
pub fn apply_source(
    ctx: &Ctx,
    home: &Home,
    src: &trustroot::Source,
    given: Option<&offgrid::trust::TrustPolicy>,
    json: bool,
) -> anyhow::Result<Option<trustroot::Chain>> {
    let installed = home.read_state().ok().flatten().is_some();
    let chain = if installed {
        trustroot::update_home_from(home, src, false)
    } else if let Some(p) = given {
        trustroot::advance_from(&TrustState::implicit(p.clone()), src)
    } else {
        return Ok(None);
    }
    .with_context(|| format!("applying the trust roots of '{}'", src.label().display()))?;
    if !chain.applied.is_empty() {
        print_chain(ctx, &chain, json)?;
    }
    Ok(Some(chain))
}

/// `apply-update`: the roots at the head of the pack (SPEC.md §7.2), then those in a
/// `roots/` folder beside it (packs made before roots travelled inside), applied to the
/// installed home before the pack's signatures are checked.
pub fn apply_for_pack(ctx: &Ctx, home: &Home, pack: &Path, json: bool) -> anyhow::Result<()> {
    if let Some(src) = offgrid::update::reader::read_roots(pack)
        .with_context(|| format!("reading the trust roots of '{}'", pack.display()))?
    {
        apply_source(ctx, home, &src, None, json)?;
    }
    apply_found(ctx, home, &offgrid::fsutil::parent_dir(pack), None, json)?;
    Ok(())
}

/// Dry runs: the trust policy the site would check with after applying the chains of
/// `sources` in memory (nothing recorded), starting from `start` (the home's root, or
/// the given keys as root 0 for a first install). Returns the policy and the versions
/// that would be applied.
pub fn dry_policy(
    start: trustroot::TrustState,
    sources: &[trustroot::Source],
) -> anyhow::Result<(offgrid::trust::TrustPolicy, Vec<u64>)> {
    let mut state = start;
    let mut applied = Vec::new();
    for src in sources {
        let chain = trustroot::advance_from(&state, src).with_context(|| {
            format!(
                "applying the trust roots of '{}' (dry run)",
                src.label().display()
            )
        })?;
        applied.extend(chain.applied.iter().map(|a| a.root.version));
        state = chain.state;
    }
    Ok((state.policy, applied))
}

/// Records in a freshly installed home the chain [`apply_found`] advanced in memory.
pub fn record_after_install(home: &Home, chain: &trustroot::Chain) -> anyhow::Result<()> {
    trustroot::record(home, chain).context("recording the trust roots in the new home")
}

/// `--roots DIR` of pack-usb and create-update-pack: HQ's trust folder (or its
/// `roots/`), whose chain travels with the release (SPEC.md §19.4).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RootsOpt {
    /// HQ's trust folder (from `offgrid trust init`) or its roots folder: the chain of
    /// trust roots is copied beside the release (DEST/roots, or roots/ beside the pack)
    #[arg(long = "roots", value_name = "DIR")]
    pub roots: Option<PathBuf>,
}

impl RootsOpt {
    /// The roots folder named, checked before any work: it holds a root that parses.
    pub fn check(&self) -> anyhow::Result<Option<PathBuf>> {
        let Some(d) = &self.roots else {
            return Ok(None);
        };
        let dir = trustroot::find_dir(d).ok_or_else(|| {
            super::fail(
                format!("--roots '{}' holds no trust roots", d.display()),
                "pass HQ's trust folder, made by 'offgrid trust init --out DIR'",
            )
        })?;
        trustroot::newest_in(&dir)?;
        Ok(Some(dir))
    }

    /// The chain's files, read and bounded, to carry inside an update pack (none
    /// without `--roots`).
    pub fn files(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let Some(dir) = self.check()? else {
            return Ok(Vec::new());
        };
        trustroot::files_of(&trustroot::Source::Dir(dir.clone()))
            .with_context(|| format!("reading the trust roots of '{}'", dir.display()))
    }

    /// Copies the chain into `dest/roots`; says so on stderr.
    pub fn copy_into(&self, ctx: &Ctx, dest: &Path) -> anyhow::Result<()> {
        let Some(dir) = self.check()? else {
            return Ok(());
        };
        let to = dest.join(trustroot::ROOTS_DIR);
        let n = trustroot::copy_dir(&dir, &to)
            .with_context(|| format!("copying the trust roots to '{}'", to.display()))?;
        ctx.note(&format!("trust: {n} root(s) copied to '{}'", to.display()));
        Ok(())
    }
}
