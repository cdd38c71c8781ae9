//! `offgrid apply-update PACK`: verify, stage, switch. In one pass over the pack: the
//! pack's signatures are checked against the home's pinned policy, then the pack is
//! refused unless it is for this bundle, newer than the installed release, and made for
//! it (the installed manifest and every base file it needs must match their signed
//! hashes); only then is the journal written and each payload streamed into a new version
//! folder beside the current one (deltas applied against the installed files, zstd
//! frames decoded, both bounded by the declared size and hashed as they are written, the
//! payload and the output each on a thread of its own, write-back started as they go).
//! Unchanged files are hard-linked (or copied) from the installed version. Then
//! [`Txn::commit`] switches atomically and keeps the previous version for rollback.

use std::fs::File;
use std::io::{self, BufReader};

use serde::Serialize;

use crate::fsutil::{link_or_copy, set_mode};
use crate::hash::{sha256_file, sha256_hex, HashWriter};
use crate::update::delta::{self, DeltaError};
use crate::update::home::{Home, Installed, Recovery};
use crate::update::journal::recover_locked;
use crate::update::pack::{Encoding, Payload, Source};
use crate::update::parts::read_any;
use crate::update::txn::Txn;
use crate::update::verify_pack::{check_target, decode_failure, decode_zstd};
use crate::update::{fault, io_err, UpdateError};

/// What apply did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    pub home: String,
    pub bundle_id: String,
    pub from: String,
    pub to: String,
    pub files: usize,
    pub from_deltas: usize,
    pub from_zstd: usize,
    pub unchanged: usize,
    pub removed: Vec<String>,
    pub bytes_written: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovery>,
    /// Warnings (an expired release applied under the `warn` expiry policy).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Refuses, before the home is touched, a pack path that is missing or not a regular
/// file (a folder, or a FIFO whose read would block): a usage error (exit 2).
fn check_pack_path(pack_path: &std::path::Path) -> Result<(), UpdateError> {
    let not_a_pack = |reason: String| UpdateError::NotAPack {
        path: pack_path.display().to_string(),
        reason,
    };
    match std::fs::metadata(pack_path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(not_a_pack("it does not exist".into()))
        }
        Err(e) => Err(io_err("read", pack_path)(e)),
        Ok(m) if !m.is_file() => Err(not_a_pack(format!(
            "it is {}",
            crate::fsutil::kind_name(&m)
        ))),
        Ok(_) => Ok(()),
    }
}

/// Applies the pack at `pack_path` to `home` (see the module doc), keeping two versions.
pub fn apply_update(
    home: &Home,
    pack_path: &std::path::Path,
    progress: crate::Progress,
) -> Result<ApplyReport, UpdateError> {
    apply_update_keeping(
        home,
        &[pack_path.to_owned()],
        crate::update::home::DEFAULT_KEEP,
        progress,
    )
}

/// [`apply_update`] keeping the newest `keep` versions after the switch (the new one,
/// the one it replaced, then the newest others; SPEC.md §7.16). `packs` is one pack
/// file, or every part of a pack in parts in any order (SPEC.md §7.18), read from the
/// parts as they are.
pub fn apply_update_keeping(
    home: &Home,
    packs: &[std::path::PathBuf],
    keep: usize,
    progress: crate::Progress,
) -> Result<ApplyReport, UpdateError> {
    let Some(pack_path) = packs.first().map(|p| p.as_path()) else {
        return Err(UpdateError::usage("no update pack given"));
    };
    for p in packs {
        check_pack_path(p)?;
    }
    let lock = home.lock(false, "apply-update")?;
    let recovered = recover_locked(home, &lock)?;
    let state = home.state()?;
    let policy = home.policy(&state)?;
    let cur_dir = home.version_dir(&state.current.dir);
    let txn: std::cell::RefCell<Option<Txn>> = Default::default();
    let (mut deltas, mut zstds, mut written) = (0usize, 0usize, 0u64);
    let mut first_payload = true;
    // Payload entries this site uses, with the mode of the file each produces.
    let used: std::cell::RefCell<std::collections::BTreeMap<String, Option<u32>>> =
        Default::default();
    let pack_name = pack_path.display().to_string();
    let warnings: std::cell::RefCell<Vec<String>> = Default::default();
    let host = crate::platform::Platform::host().to_string();

    let res = read_any(
        packs,
        &policy,
        progress,
        &mut |h| {
            let p = &h.pack;
            if p.bundle_id != state.bundle_id {
                return Err(UpdateError::WrongBundle {
                    installed: state.bundle_id.clone(),
                    pack: p.bundle_id.clone(),
                });
            }
            if p.to <= state.current.release {
                return Err(UpdateError::Downgrade {
                    installed: state.current.release.to_string(),
                    to: p.to.to_string(),
                });
            }
            if let Some(w) = crate::site::fresh::check_policy(
                state.site.newest_signed.as_deref(),
                &h.manifest,
                crate::trustroot::expiry_policy(&state),
            )? {
                warnings.borrow_mut().push(w);
            }
            let from =
                p.from_release(&state.current.release)
                    .ok_or_else(|| UpdateError::WrongBase {
                        installed: state.current.release.to_string(),
                        serves: p.serves(),
                    })?;
            // The installed release must be the one HQ recorded, file for file.
            let mp = cur_dir.join(crate::manifest::MANIFEST_FILE);
            let installed = std::fs::read(&mp).map_err(io_err("read", &mp))?;
            let actual = sha256_hex(&installed);
            if actual != from.manifest_sha256 {
                return Err(UpdateError::BaseMismatch {
                    path: crate::manifest::MANIFEST_FILE.into(),
                    expected: from.manifest_sha256.clone(),
                    actual,
                });
            }
            let wanted = |t: &str| h.manifest.file(t).is_some_and(|f| f.installs_on(&host));
            for (path, sha) in p.needs_for(from, wanted) {
                let fp = crate::paths::join(&cur_dir, &path);
                let actual = match sha256_file(&fp) {
                    Ok((_, h)) => h,
                    Err(e) => format!("unreadable: {e}"),
                };
                if actual != sha {
                    return Err(UpdateError::BaseMismatch {
                        path,
                        expected: sha,
                        actual,
                    });
                }
            }
            // Only what the pack writes takes new space: unchanged files are hard links
            // to the current release's.
            let mut written: u64 = 0;
            for pl in &p.payloads {
                let mine = match p.source(from, &pl.target) {
                    Some(Source::Delta(x)) | Some(Source::Zstd(x)) => x.entry == pl.entry,
                    _ => false,
                };
                if mine && wanted(&pl.target) {
                    let mode = h.manifest.file(&pl.target).and_then(|f| f.mode);
                    used.borrow_mut().insert(pl.entry.clone(), mode);
                    written = written.saturating_add(pl.target_size);
                }
            }
            crate::media::check_space(
                &home.root,
                "the new release",
                written
                    .saturating_add(h.manifest_bytes.len() as u64)
                    .saturating_add(1 << 20),
                crate::media::HOME_SPACE_HELP,
            )?;
            *txn.borrow_mut() = Some(Txn::begin(
                home,
                &lock,
                "apply",
                Some(state.current.clone()),
                &p.to,
            )?);
            Ok(())
        },
        &mut |p: &Payload, r| {
            let guard = txn.borrow();
            let Some(t) = guard.as_ref() else {
                return Ok(());
            };
            let Some(mode) = used.borrow().get(&p.entry).copied() else {
                return Ok(());
            };
            let dst = t.target(&p.target)?;
            let out = crate::fsutil::create_new(&dst).map_err(io_err("create", &dst))?;
            // Write-back starts as the file is written, so the commit's syncfs finds
            // little left to write.
            let out = crate::fsutil::Writeback::new(out);
            let mut w = HashWriter::new(io::BufWriter::with_capacity(1 << 20, out), p.target_size);
            match p.encoding {
                Encoding::Zstd => {
                    decode_zstd(r, &mut w).map_err(|e| decode_failure(pack_path, p, e))?;
                    zstds += 1;
                }
                Encoding::Delta => {
                    let bp =
                        crate::paths::join(&cur_dir, p.base_path.as_deref().unwrap_or_default());
                    let mut base = BufReader::with_capacity(
                        1 << 20,
                        File::open(&bp).map_err(io_err("open", &bp))?,
                    );
                    delta::apply(&mut base, r, &mut w, p.target_size).map_err(|e| match e {
                        DeltaError::TooLarge { .. } => UpdateError::TooLarge {
                            entry: p.entry.clone(),
                            declared: p.target_size,
                        },
                        DeltaError::Io { source, .. } if crate::hash::is_over_limit(&source) => {
                            UpdateError::TooLarge {
                                entry: p.entry.clone(),
                                declared: p.target_size,
                            }
                        }
                        source => UpdateError::Delta {
                            path: p.target.clone(),
                            source,
                        },
                    })?;
                    deltas += 1;
                }
            }
            let (buf, n, sha) = w.finish();
            let out = buf
                .into_inner()
                .map_err(|e| io_err("write", &dst)(e.into_error()))?
                .into_inner();
            check_target(pack_path, p, (n, sha))?;
            set_mode(&out, mode).map_err(io_err("set the mode of", &dst))?;
            drop(out); // made durable with the whole staging tree (Txn::commit)
            written += p.target_size;
            if first_payload {
                first_payload = false;
                fault::point("payload-written");
            }
            Ok(())
        },
    );
    let head = match res {
        Ok(h) => h,
        Err(e) => {
            if let Some(t) = txn.into_inner() {
                t.abort();
            }
            return Err(e);
        }
    };
    let Some(txn) = txn.into_inner() else {
        return Err(UpdateError::PackDamaged {
            pack: pack_name,
            reason: "the pack was read but never staged".into(),
        });
    };
    let from = head
        .pack
        .from_release(&state.current.release)
        .cloned()
        .ok_or_else(|| UpdateError::WrongBase {
            installed: state.current.release.to_string(),
            serves: head.pack.serves(),
        });
    let finish = (|| -> Result<usize, UpdateError> {
        let from = from?;
        let mut unchanged = 0;
        for f in head.manifest.files_on(&host) {
            let dst = crate::paths::join(&txn.staging, &f.path);
            match head.pack.source(&from, &f.path) {
                Some(Source::Copy(c)) => {
                    let src = crate::paths::join(&cur_dir, &c.base_path);
                    let dst = txn.target(&f.path)?;
                    link_or_copy(&src, &dst).map_err(io_err("copy", &src))?;
                    unchanged += 1;
                }
                Some(_) => {
                    if !dst.is_file() {
                        return Err(UpdateError::PackDamaged {
                            pack: pack_name.clone(),
                            reason: format!("no payload produced '{}'", f.path),
                        });
                    }
                }
                None => {
                    return Err(UpdateError::PackDamaged {
                        pack: pack_name.clone(),
                        reason: format!("the pack gives no way to get '{}'", f.path),
                    })
                }
            }
        }
        txn.make_dirs(&head.manifest, &host)?;
        txn.write_release_meta(&head.manifest_bytes, &head.release_sigs)?;
        Ok(unchanged)
    })();
    let unchanged = match finish {
        Ok(n) => n,
        Err(e) => {
            txn.abort();
            return Err(e);
        }
    };
    let to = Installed {
        release: head.pack.to.clone(),
        dir: txn.journal.to.dir.clone(),
    };
    let mut new_state = state.clone();
    new_state.advance(to, keep);
    new_state.push_event("apply", &head.pack.to, Some(&state.current.release));
    let seen = crate::site::fresh::newest(state.site.newest_signed.as_deref(), &head.pack.created);
    new_state.site.newest_signed =
        crate::site::fresh::newest(seen.as_deref(), &head.manifest.created).or(seen);
    txn.commit(&new_state)?;
    let removed = head
        .pack
        .from_release(&state.current.release)
        .map(|f| f.removed.clone())
        .unwrap_or_default();
    Ok(ApplyReport {
        home: home.root.display().to_string(),
        bundle_id: state.bundle_id.clone(),
        from: state.current.release.to_string(),
        to: head.pack.to.to_string(),
        files: head.manifest.files_on(&host).count(),
        from_deltas: deltas,
        from_zstd: zstds,
        unchanged,
        removed,
        bytes_written: written,
        changelog: head.pack.changelog.clone(),
        recovered,
        warnings: warnings.take(),
    })
}
