//! Encoding one window: try the encodings that apply and keep the smallest payload.
//!
//! - `copy` when the new bytes equal the old bytes at the planned position (no payload,
//!   and no suffix sort: unchanged model tensors cost 33 bytes and a memcmp);
//! - `bidiff`: a bsdiff-style patch from the `bidiff` crate (suffix array over the old
//!   range), in the block stream of `blocks.rs`, compressed with zstd;
//! - `zstd-ref`: zstd with the old range as reference prefix (`zstd --patch-from`), tried
//!   when both ranges fit in [`REF_MAX`];
//! - `zstd`: plain zstd, when there is no old range.
//!
//! The two candidates are computed at once on two threads when the caller allows two
//! (`DeltaOptions::threads` left over once windows are spread over the threads, see
//! `delta.rs`); the bytes written do not depend on it.
//!
//! Known gaps: a window whose bidiff patch is already tiny still pays for the `zstd-ref`
//! attempt, and `zstd-ref` is the slow one: on ruff's 29 MiB x86-64 program (against
//! old') it took 45 s where the whole bidiff candidate took 19 s, and lost by 1 %; it
//! is still tried because it wins on other programs (orjson's `.so` by 15 %, ruff for
//! aarch64 by 1.3 %).

use std::io;

use zstd::zstd_safe::{self, CParameter};

use super::blocks::BlockWriter;
use super::format::{Method, REF_MAX, WINDOW_LOG_MAX};

/// The chosen encoding of a window.
pub struct Encoded {
    pub method: Method,
    /// Offset and length within the old range given to [`encode`] that the method uses.
    pub old_sub: (usize, usize),
    pub payload: Vec<u8>,
}

/// How a window is encoded.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    /// zstd level of the payloads.
    pub level: i32,
    /// Threads this window may use (the bytes do not depend on it).
    pub threads: usize,
}

/// Encodes `new` against `old`; `aligned` is where in `old` the new bytes would sit if
/// they did not change.
pub fn encode(
    old: &[u8],
    new: &[u8],
    aligned: Option<usize>,
    effort: Effort,
) -> io::Result<Encoded> {
    let Effort { level, threads } = effort;
    if let Some(a) = aligned {
        if a.checked_add(new.len()).is_some_and(|e| e <= old.len()) && old[a..a + new.len()] == *new
        {
            return Ok(Encoded {
                method: Method::Copy,
                old_sub: (a, new.len()),
                payload: Vec::new(),
            });
        }
    }
    if old.is_empty() || new.is_empty() {
        return Ok(Encoded {
            method: Method::Zstd,
            old_sub: (0, 0),
            payload: zstd_plain(new, level)?,
        });
    }
    // The two candidates are independent: on a machine with two cores or more they run
    // at once (the same bytes come out; both were already counted in the memory bound).
    let try_ref = old.len() as u64 <= REF_MAX && new.len() as u64 <= REF_MAX;
    let (bidiff, zref) = if try_ref && threads > 1 {
        std::thread::scope(|s| {
            let r = s.spawn(|| zstd_ref(old, new, level, None));
            let b = bidiff_zstd(old, new, level);
            let r = r
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the zstd-ref encoder panicked")));
            (b, Some(r))
        })
    } else {
        // One thread: bidiff first, then zstd-ref only as far as it could still win (it is
        // kept only when strictly smaller, so the outcome is the one above).
        let b = bidiff_zstd(old, new, level)?;
        let limit = b.len().saturating_sub(1);
        let r = match try_ref && limit > 0 {
            true => Some(zstd_ref(old, new, level, Some(limit))),
            false => None,
        };
        (Ok(b), r)
    };
    let mut best = Encoded {
        method: Method::Bidiff,
        old_sub: (0, old.len()),
        payload: bidiff?,
    };
    if let Some(Some(r)) = zref.transpose()? {
        if r.len() < best.payload.len() {
            best = Encoded {
                method: Method::ZstdRef,
                old_sub: (0, old.len()),
                payload: r,
            };
        }
    }
    Ok(best)
}

fn zerr(code: usize) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code))
}

fn zstd_plain(new: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut c = zstd_safe::CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zerr)?;
    c.set_parameter(CParameter::WindowLog(window_log(new.len() as u64)))
        .map_err(zerr)?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(new.len()));
    c.compress2(&mut out, new).map_err(zerr)?;
    Ok(out)
}

/// log2 of the zstd window that covers `n` bytes, within what decoders accept.
fn window_log(n: u64) -> u32 {
    (64 - n.max(1).saturating_sub(1).leading_zeros()).clamp(10, WINDOW_LOG_MAX)
}

fn bidiff_zstd(old: &[u8], new: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level)?;
    enc.set_parameter(CParameter::WindowLog(window_log(new.len() as u64)))?;
    let mut w = BlockWriter::new(enc);
    {
        let mut t = bidiff::Translator::new(old, new, |c| w.control(c));
        bidiff::diff(old, new, &bidiff::DiffParams::default(), |m| t.translate(m))?;
        t.close()?;
    }
    let enc = w.finish()?;
    enc.finish()
}

/// zstd with `old` as reference prefix; with a `limit`, `None` as soon as the output
/// would exceed `limit` bytes (zstd stops at the block that does not fit).
fn zstd_ref(
    old: &[u8],
    new: &[u8],
    level: i32,
    limit: Option<usize>,
) -> io::Result<Option<Vec<u8>>> {
    let mut c = zstd_safe::CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zerr)?;
    c.set_parameter(CParameter::WindowLog(window_log(
        old.len() as u64 + new.len() as u64,
    )))
    .map_err(zerr)?;
    c.set_parameter(CParameter::EnableLongDistanceMatching(true))
        .map_err(zerr)?;
    c.set_pledged_src_size(Some(new.len() as u64))
        .map_err(zerr)?;
    c.ref_prefix(old).map_err(zerr)?;
    let bound = zstd_safe::compress_bound(new.len());
    let mut out = Vec::with_capacity(limit.map_or(bound, |l| l.min(bound)));
    match c.compress2(&mut out, new) {
        Ok(_) => Ok(Some(out)),
        Err(code) if limit.is_some() && code == DST_TOO_SMALL => Ok(None),
        Err(code) => Err(zerr(code)),
    }
}

/// zstd's "destination buffer is too small" error code.
const DST_TOO_SMALL: usize =
    (zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_dstSize_tooSmall as usize).wrapping_neg();
