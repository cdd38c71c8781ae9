//! `offgrid torrent STICK|PACK -o FILE.torrent`: writes a BitTorrent v1 metainfo for a
//! signed USB tree or an update pack (SPEC.md §13), prints its info-hash and magnet link,
//! and lists it beside the release in the HQ history when the release is recorded there.
//! With `--pubkey`/`--trust` the tree or pack is verified first (exit 1 if it fails);
//! without, a warning says it was not.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use offgrid::torrent::{self, HistoryEntry, Options, Recorded};
use offgrid::update::history;
use offgrid::verify::{self, VerifyOptions};

use super::{out, progress_fn, Ctx};

/// Arguments of `offgrid torrent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A USB tree (the folder holding manifest.toml) or an update pack file
    #[arg(value_name = "STICK|PACK")]
    pub path: PathBuf,
    /// The .torrent file to write
    #[arg(short, long, value_name = "FILE.torrent")]
    pub output: PathBuf,
    /// Replace the output file if it exists
    #[arg(long)]
    pub force: bool,
    /// Piece size, a power of two from 16K to 64M (default: chosen by total size)
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub piece_size: Option<u64>,
    /// A BEP 19 web seed URL (e.g. an 'offgrid serve' at http://HOST:PORT/tree/); repeat for several
    #[arg(long = "web-seed", value_name = "URL")]
    pub web_seeds: Vec<String>,
    /// A tracker announce URL; repeat for backups (one tier each)
    #[arg(long = "tracker", value_name = "URL")]
    pub trackers: Vec<String>,
    /// Mark the torrent private (BEP 27: peers only from the trackers)
    #[arg(long)]
    pub private: bool,
    /// Torrent name (default: BUNDLE_ID-RELEASE for a tree, the file name for a pack)
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// A trusted minisign public key: verify the tree or pack before hashing it; repeat for several
    #[arg(long = "pubkey", value_name = "FILE", conflicts_with = "trust")]
    pub pubkeys: Vec<PathBuf>,
    /// A trust policy file: verify the tree or pack before hashing it
    #[arg(long, value_name = "FILE")]
    pub trust: Option<PathBuf>,
    /// HQ history dir where the torrent is recorded (default: $OFFGRID_HQ, else ~/.offgrid-hq)
    #[arg(long, value_name = "DIR")]
    pub history: Option<PathBuf>,
}

fn size(s: &str) -> Result<u64, String> {
    offgrid::units::parse_size(s)
        .map_err(|_| format!("'{s}' is not a size; give a power of two like 256K or 4M"))
}

pub fn run(args: Args, ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let policy = super::install::given_policy(&args.pubkeys, args.trust.as_ref())?;
    let is_pack = args.path.is_file();
    if !is_pack && !args.path.is_dir() {
        anyhow::bail!(
            "'{}' does not exist\nhelp: pass a USB tree folder or an update pack file",
            args.path.display()
        );
    }
    if let (Ok(a), Ok(b)) = (args.output.canonicalize(), args.path.canonicalize()) {
        if a == b || a.starts_with(&b) {
            anyhow::bail!(
                "the output '{}' is inside the input '{}'\nhelp: write the .torrent elsewhere",
                args.output.display(),
                args.path.display()
            );
        }
    }
    // Verify first when keys are given; remember the release for the history.
    let mut release: Option<(String, String)> = None;
    match (&policy, is_pack) {
        (Some(p), false) => {
            let pb = ctx.bar("verifying", false);
            let r = verify::verify_tree(&args.path, p, &VerifyOptions { skip_extras: true }, &progress_fn(&pb));
            pb.finish_and_clear();
            let r = r.with_context(|| format!("verifying '{}'", args.path.display()))?;
            ctx.note(&format!("verified release {} of {}", r.release, r.bundle_id));
        }
        (Some(p), true) => {
            let pb = ctx.bar("verifying", false);
            let r = offgrid::update::verify_pack::verify_pack(&args.path, p, &progress_fn(&pb));
            pb.finish_and_clear();
            let r = r.with_context(|| format!("verifying '{}'", args.path.display()))?;
            ctx.note(&format!("verified pack of {} to release {}", r.bundle_id, r.to));
            release = Some((r.bundle_id, r.to));
        }
        (None, _) => ctx.warn(&format!(
            "'{}' was not verified (no --pubkey or --trust); the torrent only describes the bytes as they are",
            args.path.display()
        )),
    }
    let input = if is_pack {
        torrent::file_input(&args.path, args.name.as_deref())?
    } else {
        torrent::tree_input(&args.path, args.name.as_deref())?
    };
    let opts = Options {
        piece_size: args.piece_size,
        web_seeds: args.web_seeds.clone(),
        trackers: args.trackers.clone(),
        private: args.private,
    };
    let pb = ctx.bar("hashing", false);
    let t = torrent::build(&input, &opts, &progress_fn(&pb));
    pb.finish_and_clear();
    let t = t?;
    let written = if args.force {
        offgrid::fsutil::atomic_write(&args.output, &t.bytes)
    } else {
        offgrid::fsutil::atomic_write_new(&args.output, &t.bytes)
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "'{}' already exists\nhelp: choose another output, or pass --force to replace it",
            args.output.display()
        ),
        r => r.with_context(|| format!("writing '{}'", args.output.display()))?,
    }
    out(&format!(
        "wrote {}: {} ({} files, {} bytes, {} pieces of {})\ninfo-hash: {}\n{}\n",
        args.output.display(),
        t.name,
        t.files,
        t.total_size,
        t.pieces,
        offgrid::usb::templates::human_size(t.piece_size),
        t.info_hash_hex(),
        t.magnet
    ))
    .context("writing to stdout")?;

    // Record beside the release in the HQ history.
    let hq = history::resolve_dir(args.history.as_deref());
    let (bundle, rel, mbytes) = match (&input.manifest_bytes, release) {
        (Some(b), _) => match offgrid::manifest::Manifest::parse(b) {
            Ok(m) => (m.bundle_id, m.release.to_string(), Some(b.as_slice())),
            Err(_) => return Ok(ExitCode::SUCCESS),
        },
        (None, Some((b, r))) => (b, r, None),
        (None, None) => {
            ctx.note("not recorded in the HQ history: pass --pubkey or --trust to verify the pack and record it");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let entry = HistoryEntry {
        info_hash: t.info_hash_hex(),
        kind: if is_pack { "pack" } else { "tree" }.into(),
        name: t.name.clone(),
        bytes: t.total_size,
        piece_length: t.piece_size,
        created: offgrid::manifest::now_rfc3339(),
        magnet: t.magnet.clone(),
    };
    match torrent::record_in_history(&hq, &bundle, &rel, mbytes, &entry)? {
        Recorded::Added(p) => ctx.note(&format!("recorded in the HQ history: '{}'", p.display())),
        Recorded::Already(p) => ctx.note(&format!("already recorded in '{}'", p.display())),
        Recorded::NotInHistory => ctx.note(&format!(
            "release {rel} of {bundle} is not in the HQ history '{}'; not recorded",
            hq.display()
        )),
    }
    Ok(ExitCode::SUCCESS)
}
