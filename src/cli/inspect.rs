//! `offgrid inspect STICK|PACK`: prints what a USB tree or an update pack claims to hold
//! (bundle, release, files, sizes, signer key ids, bases and what a pack would change)
//! without any key and without verifying anything; the first line of the text and a
//! `verified: false` in every JSON summary say so (SPEC.md §15.1). Exit 0 read, 2 not a
//! tree or pack, unreadable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;

use offgrid::inspect::{self, PackView, SignatureFile, TreeView, View};

use super::{json_line, out, Ctx};
use offgrid::usb::templates::human_size as human_bytes;

/// The version of the JSON Lines records `inspect --json` prints (SPEC.md §15.2).
pub const JSON_SCHEMA: u32 = 1;

/// The first line of the text output, and the `notice` of the JSON summary.
pub const NOTICE: &str = "NOTHING IS VERIFIED: this is what the files claim; no signature or hash was checked (run `offgrid verify` before trusting it)";

/// Arguments of `offgrid inspect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A USB tree (the folder holding manifest.toml) or an update pack file
    #[arg(value_name = "STICK|PACK")]
    pub path: PathBuf,
    /// Print JSON Lines records (SPEC.md §15.2) on stdout instead of text
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args, _ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let view = inspect::inspect(&args.path)
        .with_context(|| format!("inspecting '{}'", args.path.display()))?;
    match (&view, args.json) {
        (View::Tree(t), false) => out(&tree_text(t))?,
        (View::Pack(p), false) => out(&pack_text(p))?,
        (View::Tree(t), true) => tree_json(t)?,
        (View::Pack(p), true) => pack_json(p)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn key_ids(sigs: &[SignatureFile]) -> String {
    if sigs.is_empty() {
        return "none (unsigned)".into();
    }
    sigs.iter()
        .map(|s| {
            s.key_id
                .clone()
                .unwrap_or_else(|| format!("? ({})", s.file))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn tree_text(t: &TreeView) -> String {
    let m = &t.manifest;
    let mut s = format!("{NOTICE}\n");
    s.push_str(&format!(
        "USB tree '{}': release {} of {}, created {}\n",
        t.root.display(),
        m.release,
        m.bundle_id,
        m.created
    ));
    s.push_str(&format!(
        "  files:      {} ({})\n",
        m.files.len(),
        human_bytes(m.total_size())
    ));
    s.push_str(&format!("  platforms:  {}\n", m.platforms.join(" ")));
    if let Some(d) = &m.default_model {
        s.push_str(&format!("  default:    {d}\n"));
    }
    s.push_str(&format!(
        "  signed by:  {} (claimed)\n",
        key_ids(&t.signatures)
    ));
    for f in &m.files {
        s.push_str(&format!(
            "  {:8} {:>10}  {}\n",
            serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            human_bytes(f.size),
            f.path
        ));
        if let Some(h) = t.models.iter().find(|h| h.path == f.path) {
            let what = match (&h.chat_template, &h.problem) {
                (Some(c), _) => c.describe(),
                (None, Some(p)) => format!("unreadable: {p}"),
                (None, None) => "none (run uses ChatML)".into(),
            };
            s.push_str(&format!("           chat template: {what}\n"));
        }
    }
    s
}

fn pack_text(p: &PackView) -> String {
    let k = &p.pack;
    let mut s = format!("{NOTICE}\n");
    s.push_str(&format!(
        "update pack '{}' ({}): {} {} -> {}, created {}\n",
        p.path.display(),
        human_bytes(p.size),
        k.bundle_id,
        k.serves(),
        k.to,
        k.created
    ));
    s.push_str(&format!(
        "  release {}: {} files ({})\n",
        p.manifest.release,
        p.manifest.files.len(),
        human_bytes(p.manifest.total_size())
    ));
    s.push_str(&format!(
        "  pack signed by:    {} (claimed)\n",
        key_ids(&p.signatures)
    ));
    s.push_str(&format!(
        "  release signed by: {} (claimed)\n",
        key_ids(&p.release_signatures)
    ));
    if !p.roots.is_empty() {
        s.push_str(&format!(
            "  trust roots:       {} (carried at the head; checked when applied)\n",
            p.roots.join(", ")
        ));
    }
    if let Some(m) = &p.part {
        s.push_str(&format!(
            "  part {} of {} of this pack (pack sha256 {}); apply-update needs every part\n",
            m.part,
            m.parts,
            offgrid::excerpt::excerpt(&m.pack_sha256)
        ));
        for (n, what) in offgrid::update::parts::holds(k) {
            let here = if n == m.part { " (this part)" } else { "" };
            s.push_str(&format!(
                "    part {n}{here}: {}\n",
                offgrid::excerpt::message(&what.join(", "))
            ));
        }
    }
    for c in p.changes() {
        s.push_str(&format!(
            "  from {}: {} from deltas, {} whole, {} unchanged, {} removed\n",
            c.from,
            c.deltas,
            c.whole,
            c.unchanged,
            c.removed.len()
        ));
        for r in &c.removed {
            s.push_str(&format!("    removes {r}\n"));
        }
    }
    for pl in &k.payloads {
        let how = match &pl.base_release {
            Some(b) => format!("delta from {b}"),
            None => "whole (zstd)".into(),
        };
        s.push_str(&format!(
            "  {:>10} -> {:>10}  {}  {how}\n",
            human_bytes(pl.size),
            human_bytes(pl.target_size),
            pl.target
        ));
    }
    if let Some(c) = &k.changelog {
        s.push_str("changelog:\n");
        for l in c.lines().take(20) {
            s.push_str(&format!("  {}\n", offgrid::excerpt::message(l)));
        }
    }
    s
}

fn sig_records(set: &str, sigs: &[SignatureFile]) -> anyhow::Result<()> {
    for sg in sigs {
        json_line(
            "signature",
            json!({"set": set, "file": sg.file, "key_id": sg.key_id, "verified": false}),
        )?;
    }
    Ok(())
}

fn tree_json(t: &TreeView) -> anyhow::Result<()> {
    let m = &t.manifest;
    sig_records("release", &t.signatures)?;
    for f in &m.files {
        let template = t
            .models
            .iter()
            .find(|h| h.path == f.path)
            .and_then(|h| h.chat_template.clone());
        json_line(
            "file",
            json!({
                "path": f.path,
                "kind": f.kind,
                "size": f.size,
                "platform": f.platform,
                "model": f.model,
                "chat_template": template,
            }),
        )?;
    }
    json_line(
        "summary",
        json!({
            "schema": JSON_SCHEMA,
            "verified": false,
            "notice": NOTICE,
            "kind": "tree",
            "path": t.root.display().to_string(),
            "bundle_id": m.bundle_id,
            "release": m.release.to_string(),
            "created": m.created,
            "manifest_sha256": t.manifest_sha256,
            "platforms": m.platforms,
            "default_model": m.default_model,
            "files": m.files.len(),
            "bytes": m.total_size(),
            "key_ids": t.signatures.iter().filter_map(|s| s.key_id.clone()).collect::<Vec<_>>(),
        }),
    )?;
    Ok(())
}

fn pack_json(p: &PackView) -> anyhow::Result<()> {
    let k = &p.pack;
    sig_records("pack", &p.signatures)?;
    sig_records("release", &p.release_signatures)?;
    for pl in &k.payloads {
        json_line(
            "payload",
            json!({
                "target": pl.target,
                "encoding": pl.encoding,
                "size": pl.size,
                "target_size": pl.target_size,
                "base_release": pl.base_release.as_ref().map(ToString::to_string),
                "base_path": pl.base_path,
            }),
        )?;
    }
    for c in p.changes() {
        json_line("change", serde_json::to_value(&c)?)?;
    }
    let mut summary = json!({
            "schema": JSON_SCHEMA,
            "verified": false,
            "notice": NOTICE,
            "kind": "pack",
            "path": p.path.display().to_string(),
            "size": p.size,
            "bundle_id": k.bundle_id,
            "release": k.to.to_string(),
            "from": k.from.iter().map(|f| f.release.to_string()).collect::<Vec<_>>(),
            "created": k.created,
            "manifest_sha256": k.manifest_sha256,
            "files": p.manifest.files.len(),
            "bytes": p.manifest.total_size(),
            "key_ids": p.signatures.iter().filter_map(|s| s.key_id.clone()).collect::<Vec<_>>(),
            "release_key_ids": p.release_signatures.iter().filter_map(|s| s.key_id.clone()).collect::<Vec<_>>(),
            "changelog": k.changelog,
            "roots": p.roots,
    });
    // A part of a pack in parts says which (SPEC.md §7.18); other packs have no `part`.
    if let Some(m) = &p.part {
        summary["part"] = json!({
            "part": m.part,
            "parts": m.parts,
            "pack_sha256": m.pack_sha256,
            "holds": offgrid::update::parts::holds(k)
                .into_iter()
                .map(|(part, payloads)| json!({"part": part, "payloads": payloads}))
                .collect::<Vec<_>>(),
        });
    }
    json_line("summary", summary)?;
    Ok(())
}
