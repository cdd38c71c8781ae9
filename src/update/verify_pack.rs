//! `offgrid verify PACK`: checks an update pack in one streaming pass, without a site:
//! signatures over the pack manifest against the trust policy, the embedded manifest's
//! hash and its own signatures, every payload's size and sha256, and for whole-file zstd
//! payloads the decompressed size and sha256 of the file they produce (bounded by the
//! declared size). Delta payloads can only be checked against their bases at apply time.
//! A part of a pack in parts (SPEC.md §7.18) is checked alone: its head, then every piece
//! it holds against its signed sha256 ([`crate::update::parts::check_part`]).

use std::io::{self, BufRead, Write};
use std::path::Path;

use serde::Serialize;

use crate::hash::{is_over_limit, HashWriter};
use crate::trust::{SignatureReport, TrustPolicy};
use crate::update::pack::{Encoding, Payload};
use crate::update::reader::read_pack;
use crate::update::UpdateError;

/// One payload as checked.
#[derive(Debug, Clone, Serialize)]
pub struct PayloadReport {
    pub entry: String,
    pub encoding: Encoding,
    pub size: u64,
    pub target: String,
    pub target_size: u64,
    /// `payload` (hash of the stored bytes) or `payload+target` (also decoded and hashed).
    pub checked: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub base_release: Option<String>,
}

/// One from-release the pack serves.
#[derive(Debug, Clone, Serialize)]
pub struct FromReport {
    pub release: String,
    pub removed: Vec<String>,
    pub unchanged: usize,
    pub base_files_needed: usize,
}

/// What `verify_pack` found (it only returns a report when everything held).
#[derive(Debug, Clone, Serialize)]
pub struct PackReport {
    pub pack: String,
    pub size: u64,
    pub bundle_id: String,
    pub to: String,
    pub created: String,
    pub from: Vec<FromReport>,
    pub signatures: Vec<SignatureReport>,
    pub release_signatures: Vec<SignatureReport>,
    pub payloads: Vec<PayloadReport>,
    pub files: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changelog: Option<String>,
    /// A part of a pack in parts, checked alone (SPEC.md §7.18).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part: Option<crate::update::parts::PartReport>,
}

/// Why a zstd payload could not be decoded.
pub enum DecodeError {
    /// The stored bytes are not a valid zstd stream (or the pack read failed).
    Corrupt(String),
    /// The output would pass the declared size.
    TooLarge,
    /// Writing the output failed.
    Write(io::Error),
}

/// Decodes a zstd payload into `out`, never writing more than `out.limit` bytes. The
/// decoder reads `input`'s buffer in place and decodes into blocks `out` hands to its
/// hashing thread whole ([`HashWriter::write_block`]): no copy besides zstd's own.
pub fn decode_zstd<W: Write>(
    input: &mut dyn BufRead,
    out: &mut HashWriter<W>,
) -> Result<(), DecodeError> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(input)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    dec.window_log_max(27)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    loop {
        let mut block = out.block();
        let n = crate::hash::read_full(&mut dec, &mut block[..])
            .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        if let Err(e) = out.write_block(block, n) {
            return Err(if is_over_limit(&e) {
                DecodeError::TooLarge
            } else {
                DecodeError::Write(e)
            });
        }
    }
}

/// Checks a decoded payload's size and hash against the payload entry.
pub fn check_target(pack: &Path, p: &Payload, got: (u64, String)) -> Result<(), UpdateError> {
    if got.0 != p.target_size || got.1 != p.target_sha256 {
        return Err(UpdateError::PayloadMismatch {
            pack: pack.display().to_string(),
            entry: p.entry.clone(),
            reason: format!(
                "it produces {} bytes with sha256 {}, the manifest says {} bytes with sha256 {} for '{}'",
                got.0, got.1, p.target_size, p.target_sha256, p.target
            ),
        });
    }
    Ok(())
}

/// Maps a decode failure of payload `p` to the update error.
pub fn decode_failure(pack: &Path, p: &Payload, e: DecodeError) -> UpdateError {
    match e {
        DecodeError::Corrupt(r) => UpdateError::PackDamaged {
            pack: pack.display().to_string(),
            reason: format!("payload '{}' is not a valid zstd stream: {r}", p.entry),
        },
        DecodeError::TooLarge => UpdateError::TooLarge {
            entry: p.entry.clone(),
            declared: p.target_size,
        },
        DecodeError::Write(source) => UpdateError::Io {
            action: "write",
            path: p.target.clone(),
            source,
        },
    }
}

/// Verifies the pack at `path` against `policy` (see the module doc).
pub fn verify_pack(
    path: &Path,
    policy: &TrustPolicy,
    progress: crate::Progress,
) -> Result<PackReport, UpdateError> {
    let mut payloads = Vec::new();
    let mut check = |p: &Payload, r: &mut dyn BufRead| {
        let checked = if p.encoding == Encoding::Zstd {
            let mut w = HashWriter::new(io::sink(), p.target_size);
            decode_zstd(r, &mut w).map_err(|e| decode_failure(path, p, e))?;
            let (_, n, sha) = w.finish();
            check_target(path, p, (n, sha))?;
            "payload+target"
        } else {
            "payload"
        };
        payloads.push(PayloadReport {
            entry: p.entry.clone(),
            encoding: p.encoding,
            size: p.size,
            target: p.target.clone(),
            target_size: p.target_size,
            checked,
            base_release: p.base_release.as_ref().map(|v| v.to_string()),
        });
        Ok(())
    };
    // A part alone: its head, then the pieces it holds (a payload whole in it is decoded
    // as in a whole pack).
    let (head, part) = if crate::update::parts::is_part(path) {
        let (head, part) = crate::update::parts::check_part(path, policy, progress, &mut check)?;
        (head, Some(part))
    } else {
        (
            read_pack(path, policy, progress, &mut |_| Ok(()), &mut check)?,
            None,
        )
    };
    let from = head
        .pack
        .from
        .iter()
        .map(|f| FromReport {
            release: f.release.to_string(),
            removed: f.removed.clone(),
            unchanged: f.copy.len(),
            base_files_needed: head.pack.needs(f).len(),
        })
        .collect();
    Ok(PackReport {
        pack: path.display().to_string(),
        size: head.pack_size,
        bundle_id: head.pack.bundle_id.clone(),
        to: head.pack.to.to_string(),
        created: head.pack.created.clone(),
        from,
        signatures: head.pack_reports.clone(),
        release_signatures: head.release_reports.clone(),
        payloads,
        files: head.manifest.files.len(),
        changelog: head.pack.changelog.clone(),
        part,
    })
}
