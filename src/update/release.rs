//! HQ: turns release inputs (pack-usb's recipe or flags, planned by
//! [`crate::usb::plan`]) into a signed manifest recorded in the history, without writing a
//! USB tree — what `create-update-pack` does when given the new release's inputs. The
//! manifest is made exactly as pack-usb makes it (same plan, same hashing, same
//! signatures), so a site updated by a pack and a site installed from a stick of the same
//! release hold the same manifest bytes' contents.
//!
//! Known gap: the inputs are read twice (hashed, then stored); the store re-checks the
//! bytes, so a file changing in between is refused, not recorded wrongly.

use std::path::{Path, PathBuf};

use crate::hash;
use crate::keys::SecretKey;
use crate::manifest::DEFAULT_CHUNK_SIZE;
use crate::update::history::{self, Release};
use crate::update::{io_err, UpdateError};
use crate::usb::layout::{Source, TreePlan};

/// Hashes every planned file, signs the manifest with every key, records the release in
/// the history at `hq` and returns it as recorded.
pub fn record_plan(
    hq: &Path,
    plan: &TreePlan,
    keys: &[SecretKey],
    progress: crate::Progress,
) -> Result<Release, UpdateError> {
    std::fs::create_dir_all(hq).map_err(io_err("create", hq))?;
    let tmp = tempfile::Builder::new()
        .prefix(".inputs-")
        .tempdir_in(hq)
        .map_err(io_err("create a folder in", hq))?;
    let total = plan.total_size().max(1);
    let mut done = 0u64;
    let mut entries = Vec::new();
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for (i, f) in plan.files.iter().enumerate() {
        let (d, src) = match &f.source {
            Source::File(p) => {
                let base = done;
                let d = hash::hash_file(p, DEFAULT_CHUNK_SIZE, &|n, _| progress(base + n, total))
                    .map_err(|e| UpdateError::usage(e.to_string()))?;
                (d, p.clone())
            }
            Source::Shard { .. } => {
                let p = tmp.path().join(format!("shard-{i}"));
                if let Some(r) = f.source.write_shard(&p) {
                    r.map_err(io_err("write", &p))?;
                }
                let base = done;
                let d = hash::hash_file(&p, DEFAULT_CHUNK_SIZE, &|n, _| progress(base + n, total))
                    .map_err(|e| UpdateError::usage(e.to_string()))?;
                (d, p)
            }
            Source::Bytes(b) => {
                let p = tmp.path().join(format!("generated-{i}"));
                std::fs::write(&p, b).map_err(io_err("write", &p))?;
                (hash::hash_bytes(b, DEFAULT_CHUNK_SIZE), p)
            }
        };
        done += d.size;
        progress(done, total);
        files.push((f.path.clone(), src));
        entries.push(f.entry(d));
    }
    let manifest = plan.manifest(entries);
    manifest
        .validate()
        .map_err(|e| UpdateError::usage(format!("the planned manifest is invalid: {e}")))?;
    let bytes = manifest.to_toml().into_bytes();
    let mut sigs = Vec::new();
    for k in keys {
        let text = crate::sign::sign_manifest(k, &manifest, &bytes)
            .map_err(|e| UpdateError::usage(format!("signing the manifest failed: {e}")))?;
        sigs.push((format!("{}.minisig", k.public.key_id()), text));
    }
    history::record(hq, &bytes, &sigs, &files)?;
    history::load(hq, &manifest.bundle_id, &manifest.release)
}
