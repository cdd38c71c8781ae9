//! Encoding one window: try the encodings that apply and keep the smallest payload.
//!
//! - `copy` when the new bytes equal the old bytes at the planned position (no payload,
//!   and no suffix sort: unchanged model tensors cost 33 bytes and a memcmp);
//! - `bidiff`: a bsdiff-style patch from the `bidiff` crate (suffix array over the old
//!   range), in the block stream of `blocks.rs`, compressed with zstd (a window under
//!   8 MiB with two zero-run thresholds, the smaller kept);
//! - `zstd-ref`: zstd with the old range as reference prefix (`zstd --patch-from`), tried
//!   when both ranges fit in [`REF_MAX`];
//! - `zstd`: plain zstd, when there is no old range;
//! - `x86-streams` (`streams.rs`): in zstd-ref's place when the window holds x86-64 code
//!   of an ELF pair and is small ([`encode_code`]).
//!
//! - `aligned add`: when the window has an aligned old position and the bytes that differ
//!   there appear nowhere else in the old range (a rewritten or retrained tensor, fresh
//!   random data: sampled with 32-byte seeds, [`moved_elsewhere`]), the window is one
//!   bsdiff add control against the aligned old bytes, written as a `bidiff` payload
//!   without the suffix sort or the scan (which cost about a minute per 64 MiB of such
//!   data and find nothing); unchanged stretches become zero-add controls, and the
//!   zstd level drops to 3 when a sample of the stream does not compress (level 19 runs
//!   at 2 MB/s on incompressible bytes and saves nothing).
//!
//! With two threads or more, the bidiff candidate's scan runs on both (`scan.rs`), its zstd
//! stream is compressed on a third while the scan runs, and the first `zstd-ref` attempt
//! runs beside it (`DeltaOptions::threads` left over once windows are spread over the
//! threads, see `delta.rs`); the bytes written do not depend on it. On a window of 1 MiB
//! or more, `zstd-ref` is tried at level 12 first and at the full level only when that
//! already beats bidiff: at level 19 it took 41 s on ruff's 29 MiB x86-64 program (old')
//! where everything else took 26 s, and on the compiled files over 4 MiB measured
//! (zstandard, numpy, ruff) it lost to bidiff or won by under 1 % (it wins on small ones:
//! orjson's 0.25 MiB `.so` by 15 %). The SmolLM2 template edit's 1.7 MiB metadata window
//! (a 250-byte bidiff payload) spent 367 ms of the delta's 0.80 s on level 19's reference
//! before the probe reached it, 33 ms at level 12 (0.62 s in all).
//!
//! Known gaps: the level-12 probe decides, so a large window where level 19 would beat
//! bidiff but level 12 does not keeps bidiff (ruff for aarch64: 0.7 % larger than with
//! level 19).

use std::io::{self, Write};
use std::sync::mpsc;

use zstd::zstd_safe::{self, CParameter};

use super::blocks::{BlockWriter, ZERO_RUN_SHORT};
use super::format::{Method, REF_MAX, WINDOW_LOG_MAX};
use super::scan;
use super::seeds::{Seeds, SEEDS_MIN};
use super::streams;

/// The chosen encoding of a window.
pub struct Encoded {
    pub method: Method,
    /// Offset and length within the old range given to [`encode`] that the method uses.
    pub old_sub: (usize, usize),
    pub payload: Vec<u8>,
}

impl Encoded {
    /// `payload` of `method` against the whole old range `old`.
    fn whole(method: Method, old: &[u8], payload: Vec<u8>) -> Encoded {
        Encoded {
            method,
            old_sub: (0, old.len()),
            payload,
        }
    }
}

/// How a window is encoded.
#[derive(Debug, Clone, Copy)]
pub struct Effort {
    /// zstd level of the payloads.
    pub level: i32,
    /// Threads this window may use (the bytes do not depend on it).
    pub threads: usize,
    /// The window is of an ELF pair: an old range of at least [`SEEDS_MIN`] bytes is
    /// looked up in hashed seeds instead of a suffix array (`seeds.rs`).
    pub seeds: bool,
    /// Where x86-64 code is in the old range and the new bytes: the `x86-streams`
    /// candidate is tried (`streams.rs`).
    pub code: Option<streams::Spans>,
}

/// Encodes `new` against `old`; `aligned` is where in `old` the new bytes would sit if
/// they did not change; `known`, bsdiff's matches of `new` against `old` when they were
/// already found (the bidiff candidate then neither sorts nor scans).
pub fn encode(
    old: &[u8],
    new: &[u8],
    aligned: Option<usize>,
    effort: Effort,
    known: Option<&scan::Recorded>,
) -> io::Result<Encoded> {
    let Effort {
        level,
        threads,
        seeds,
        code,
    } = effort;
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
    if let Some(payload) = aligned_add(old, new, aligned, level)? {
        let a = aligned.unwrap_or(0);
        return Ok(Encoded {
            method: Method::Bidiff,
            old_sub: (a, new.len()),
            payload,
        });
    }
    let fits = new.len() as u64 <= streams::NEW_MAX && old.len() as u64 <= streams::OLD_MAX;
    if let Some(spans) = code.filter(|_| fits && level >= STREAMS_LEVEL) {
        return encode_code(old, new, spans, effort, known);
    }
    // zstd-ref is tried at the full level on small windows; on large ones (where level 19
    // costs more than everything else) only when the fast probe level already beats
    // bidiff. With two threads the first zstd-ref attempt runs beside bidiff; the same
    // candidate comes out either way.
    let try_ref = old.len() as u64 <= REF_MAX && new.len() as u64 <= REF_MAX;
    let first_level = match new.len() < REF_PROBE_MIN {
        true => level,
        false => PROBE_LEVEL.min(level),
    };
    // With known matches bidiff comes first (it neither sorts nor scans); a zstd-ref
    // candidate could save no more than a bidiff payload of at most 1/`TINY` of the new
    // bytes, and is not tried (numpy's nearly identical pair: 0.11 s of its 0.12).
    let (b, first) = if try_ref && threads > 1 && known.is_none() {
        let (b, r) = beside(
            "zstd-ref",
            || zstd_ref(old, new, first_level, None),
            || bidiff_zstd(old, new, level, threads, seeds, known),
        );
        (b, Some(r))
    } else {
        let b = bidiff_zstd(old, new, level, threads, seeds, known)?;
        let limit = b.len().saturating_sub(1);
        let worth = known.is_none() || (b.len() as u64).saturating_mul(TINY) > new.len() as u64;
        let r =
            (try_ref && worth && limit > 0).then(|| zstd_ref(old, new, first_level, Some(limit)));
        (Ok(b), r)
    };
    let b = b?;
    // Only a candidate smaller than bidiff's counts.
    let first = first.transpose()?.flatten().filter(|r| r.len() < b.len());
    let zref = match first {
        Some(p) if first_level < level => {
            let full = zstd_ref(old, new, level, Some(p.len().saturating_sub(1)))?;
            Some(full.unwrap_or(p))
        }
        r => r,
    };
    // `zref` is smaller than bidiff's payload whenever it is there.
    Ok(match zref {
        Some(r) => Encoded::whole(Method::ZstdRef, old, r),
        None => Encoded::whole(Method::Bidiff, old, b),
    })
}

/// The candidates of a window with x86-64 code: bidiff and `x86-streams`, the smaller
/// kept. zstd-ref is not tried: `x86-streams` codes the same bytes against the same old
/// range with LZMA, whose literals are coded against the byte a match predicts (orjson's
/// window: 32,623 bytes against zstd-ref's 37,898), and it takes zstd-ref's place in the
/// time.
/// With two threads or more, `x86-streams` runs beside bidiff.
fn encode_code(
    old: &[u8],
    new: &[u8],
    spans: streams::Spans,
    effort: Effort,
    known: Option<&scan::Recorded>,
) -> io::Result<Encoded> {
    let Effort {
        level,
        threads,
        seeds,
        ..
    } = effort;
    let (b, s) = if threads > 1 && known.is_none() {
        let (b, s) = beside(
            "x86-streams",
            || streams::encode(old, new, spans, threads - 1),
            || bidiff_zstd(old, new, level, threads, seeds, known),
        );
        (b, Some(s))
    } else {
        let b = bidiff_zstd(old, new, level, threads, seeds, known)?;
        let worth = known.is_none() || (b.len() as u64).saturating_mul(TINY) > new.len() as u64;
        (
            Ok(b),
            worth.then(|| streams::encode(old, new, spans, threads)),
        )
    };
    let b = b?;
    Ok(match s.transpose()?.filter(|s| s.len() < b.len()) {
        Some(s) => Encoded::whole(Method::X86Streams, old, s),
        None => Encoded::whole(Method::Bidiff, old, b),
    })
}

/// Runs `other` on a thread of its own while `bidiff` runs on this one; `what` names
/// `other` in the error when it panics.
fn beside<T: Send>(
    what: &str,
    other: impl FnOnce() -> io::Result<T> + Send,
    bidiff: impl FnOnce() -> io::Result<Vec<u8>>,
) -> (io::Result<Vec<u8>>, io::Result<T>) {
    std::thread::scope(|s| {
        let o = s.spawn(other);
        let b = bidiff();
        let o = o
            .join()
            .unwrap_or_else(|_| Err(io::Error::other(format!("the {what} encoder panicked"))));
        (b, o)
    })
}

/// `x86-streams` is tried at zstd levels of at least this (a fast level is what
/// `delta::create`'s prediction of the plain way uses; LZMA has no fast setting here).
const STREAMS_LEVEL: i32 = 10;

/// A bidiff payload of at most 1/`TINY` of the new bytes, from known matches, is kept
/// without trying zstd-ref or `x86-streams` ([`encode`], [`encode_code`]).
const TINY: u64 = 1000;

fn zerr(code: usize) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code))
}

fn zstd_plain(new: &[u8], level: i32) -> io::Result<Vec<u8>> {
    zstd_with_window(new, level, window_log(new.len() as u64))
}

/// One zstd frame of `data` at `level` with a window of 2^`wlog` bytes.
fn zstd_with_window(data: &[u8], level: i32, wlog: u32) -> io::Result<Vec<u8>> {
    let mut c = zstd_safe::CCtx::create();
    c.set_parameter(CParameter::CompressionLevel(level))
        .map_err(zerr)?;
    c.set_parameter(CParameter::WindowLog(wlog)).map_err(zerr)?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
    c.compress2(&mut out, data).map_err(zerr)?;
    Ok(out)
}

/// log2 of the zstd window that covers `n` bytes, within what decoders accept.
fn window_log(n: u64) -> u32 {
    (64 - n.max(1).saturating_sub(1).leading_zeros()).clamp(10, WINDOW_LOG_MAX)
}

/// The bidiff candidate: bsdiff's matches ([`scan`], or `known` ones) in the block
/// stream, compressed. With two threads or more, zstd runs on a thread of its own, fed
/// through a channel, so it overlaps the scan (the compressed bytes are the same: one
/// zstd stream either way). A window under [`SHORT_RUNS_MAX`] is written twice, with
/// zero-add controls from runs of [`ZERO_RUN_MIN`](super::blocks::ZERO_RUN_MIN) and of
/// [`ZERO_RUN_SHORT`](super::blocks::ZERO_RUN_SHORT) zero bytes, and the smaller kept.
fn bidiff_zstd(
    old: &[u8],
    new: &[u8],
    level: i32,
    threads: usize,
    seeds: bool,
    known: Option<&scan::Recorded>,
) -> io::Result<Vec<u8>> {
    let matches = match known {
        Some(k) => Matches::Known(k),
        None if seeds && old.len() >= SEEDS_MIN => Matches::Seeds(Seeds::new(old)?),
        None => Matches::Scan(scan::Index::new(old)?),
    };
    let wlog = window_log(new.len() as u64);
    if new.len() < SHORT_RUNS_MAX {
        let mut long = BlockWriter::new(Vec::new());
        let mut short = BlockWriter::with_zero_run(Vec::new(), ZERO_RUN_SHORT);
        feed(old, new, &matches, threads, |c| {
            long.control(c)?;
            short.control(c)
        })?;
        let long = zstd_with_window(&long.finish()?, level, wlog)?;
        let short = zstd_with_window(&short.finish()?, level, wlog)?;
        return Ok(if short.len() < long.len() {
            short
        } else {
            long
        });
    }
    let write_blocks = |sink: &mut dyn Write| -> io::Result<()> {
        let mut w = BlockWriter::new(sink);
        feed(old, new, &matches, threads, |c| w.control(c))?;
        w.finish().map(drop)
    };
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level)?;
    enc.set_parameter(CParameter::WindowLog(wlog))?;
    if threads < 2 {
        write_blocks(&mut enc)?;
        return enc.finish();
    }
    std::thread::scope(|s| {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let z = s.spawn(move || {
            for chunk in rx {
                enc.write_all(&chunk)?;
            }
            enc.finish()
        });
        let mut sender = ChunkSender {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let sent = write_blocks(&mut sender).and_then(|_| sender.flush());
        drop(sender);
        let packed = z
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the zstd encoder panicked")));
        // The compressor's own error explains a failed send; otherwise the scan's.
        let packed = packed?;
        sent.map(|_| packed)
    })
}

/// Windows of fewer new bytes than this try both zero-run thresholds ([`bidiff_zstd`]):
/// there the second stream costs little (numpy's 7 MiB library: 1.5 s in all, within
/// the spread of the runs before).
const SHORT_RUNS_MAX: usize = 8 << 20;

/// Where the bidiff candidate's matches come from.
enum Matches<'a> {
    /// Scanned now.
    Scan(scan::Index<'a>),
    /// Looked up in hashed seeds now.
    Seeds(Seeds<'a>),
    /// Recorded earlier.
    Known(&'a scan::Recorded),
}

/// Turns the matches of `new` against `old` into bsdiff controls, in order.
fn feed(
    old: &[u8],
    new: &[u8],
    matches: &Matches<'_>,
    threads: usize,
    mut on_control: impl FnMut(&bidiff::Control) -> io::Result<()>,
) -> io::Result<()> {
    let mut t = bidiff::Translator::new(old, new, |c| on_control(c));
    match matches {
        Matches::Scan(idx) => scan::diff(idx, new, scan::Pace::Exact, threads, |m| t.translate(m))?,
        Matches::Seeds(seeds) => {
            scan::diff(seeds, new, scan::Pace::Exact, threads, |m| t.translate(m))?
        }
        Matches::Known(k) => k.matches().try_for_each(|m| t.translate(m))?,
    }
    t.close()
}

/// Bytes handed to the compressing thread at a time.
const CHUNK: usize = 1 << 20;

/// A writer that sends what it is given, in [`CHUNK`]s, to another thread.
struct ChunkSender {
    tx: mpsc::SyncSender<Vec<u8>>,
    buf: Vec<u8>,
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .send(chunk)
            .map_err(|_| io::Error::other("the zstd encoder stopped"))
    }
}

/// Windows of this many new bytes or more try `zstd-ref` at [`PROBE_LEVEL`] first, and
/// at the full level only when the probe already beats the bidiff candidate.
const REF_PROBE_MIN: usize = 1 << 20;
/// The fast zstd level that predicts whether `zstd-ref` can win on a large window.
const PROBE_LEVEL: i32 = 12;

/// Windows smaller than this always go through the full candidates.
const ALIGNED_MIN: usize = 1 << 20;
/// Bytes compared at a time when looking for what differs at the aligned position.
const CMP_BLOCK: usize = 64 << 10;
/// Length of the seeds that look for differing bytes elsewhere in the old range.
const SEED: usize = 32;
/// Old seeds are indexed every this many bytes (so any match of `SEED + SEED_STRIDE`
/// bytes or more is found).
const SEED_STRIDE: usize = 32;

/// The `aligned add` encoding of the module doc, or `None` when it does not apply: no
/// aligned position, a small window, or differing bytes that occur elsewhere in `old`
/// (moved data, which bidiff's scan finds and this encoding would not).
fn aligned_add(
    old: &[u8],
    new: &[u8],
    aligned: Option<usize>,
    level: i32,
) -> io::Result<Option<Vec<u8>>> {
    let Some(a) = aligned.filter(|a| a.checked_add(new.len()).is_some_and(|e| e <= old.len()))
    else {
        return Ok(None);
    };
    if new.len() < ALIGNED_MIN {
        return Ok(None);
    }
    let base = &old[a..a + new.len()];
    let differing: Vec<usize> = new
        .chunks(CMP_BLOCK)
        .zip(base.chunks(CMP_BLOCK))
        .enumerate()
        .filter(|(_, (n, o))| n != o)
        .map(|(i, _)| i * CMP_BLOCK)
        .collect();
    if moved_elsewhere(old, new, a, &differing) {
        return Ok(None);
    }
    let mut raw = BlockWriter::new(Vec::new());
    {
        let mut t = bidiff::Translator::new(base, new, |c| raw.control(c));
        t.translate(bidiff::Match {
            add_old_start: 0,
            add_new_start: 0,
            add_length: new.len(),
            copy_end: new.len(),
        })?;
        t.close()?;
    }
    let raw = raw.finish()?;
    let level = if compresses(&raw) {
        level
    } else {
        level.min(3)
    };
    zstd_plain(&raw, level).map(Some)
}

/// Whether the differing blocks of `new` (offsets of [`CMP_BLOCK`]-byte blocks) hold
/// bytes found in `old` away from their aligned position `a`: from each of up to 4096
/// sampled blocks, four probes of [`SEED`] + [`SEED_STRIDE`] bytes are looked up among
/// `old`'s seeds; more than 1 % of probes found elsewhere means moved data. (Bytes
/// found at their own aligned position are a block changed in place, which the aligned
/// add encodes as well as bidiff would.)
fn moved_elsewhere(old: &[u8], new: &[u8], a: usize, differing: &[usize]) -> bool {
    if differing.is_empty() || old.len() < SEED {
        return false;
    }
    let mut seeds: Vec<(u64, usize)> = (0..=old.len() - SEED)
        .step_by(SEED_STRIDE)
        .map(|i| (seed_hash(&old[i..i + SEED]), i))
        .collect();
    seeds.sort_unstable();
    let elsewhere = |i: usize| {
        let h = seed_hash(&new[i..i + SEED]);
        let first = seeds.partition_point(|s| s.0 < h);
        seeds[first..]
            .iter()
            .take_while(|s| s.0 == h)
            .any(|s| s.1 != a + i)
    };
    let step = differing.len().div_ceil(4096);
    let (mut probes, mut found) = (0usize, 0usize);
    for &off in differing.iter().step_by(step) {
        let end = (off + CMP_BLOCK).min(new.len());
        for k in 0..4 {
            let start = off + k * (CMP_BLOCK / 4);
            if start + SEED + SEED_STRIDE > end {
                break;
            }
            probes += 1;
            let hit = (start..start + SEED_STRIDE).any(elsewhere);
            found += usize::from(hit);
        }
    }
    found * 100 > probes
}

/// A 64-bit hash of one seed (four little-endian words, multiplied and mixed).
fn seed_hash(b: &[u8]) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    for w in b.chunks_exact(8) {
        let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        h = (h ^ v).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29);
    }
    h ^ (h >> 32)
}

/// Whether `data` compresses: 16 samples of 64 KiB at zstd level 1 come to under 97 %.
fn compresses(data: &[u8]) -> bool {
    const PIECE: usize = 64 << 10;
    let step = (data.len() / 16).max(PIECE);
    let (mut total, mut packed) = (0usize, 0usize);
    for start in (0..data.len()).step_by(step) {
        let piece = &data[start..(start + PIECE).min(data.len())];
        match zstd::bulk::compress(piece, 1) {
            Ok(c) => {
                total += piece.len();
                packed += c.len();
            }
            Err(_) => return true,
        }
    }
    packed * 100 < total * 97
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

#[cfg(test)]
mod tests {
    use super::super::plan::tests::noise;
    use super::*;
    use std::io::{Cursor, Read};

    fn decode(old: &[u8], e: &Encoded) -> Vec<u8> {
        let stream = zstd::decode_all(e.payload.as_slice()).unwrap();
        let (o, n) = e.old_sub;
        let mut base = Cursor::new(old[o..o + n].to_vec());
        let mut out = Vec::new();
        super::super::blocks::BlockReader::new(&mut Cursor::new(stream), &mut base)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    const EFFORT: Effort = Effort {
        level: 19,
        threads: 1,
        seeds: false,
        code: None,
    };

    #[test]
    fn rewritten_bytes_are_one_aligned_add() {
        let old = noise(4 << 20, 1);
        let mut new = old.clone();
        new[(1 << 20)..(2 << 20)].copy_from_slice(&noise(1 << 20, 2));
        new[3 << 20] ^= 0x40;
        let raw = aligned_add(&old, &new, Some(0), 19).unwrap();
        assert!(raw.is_some(), "fresh bytes take the aligned add");
        let e = encode(&old, &new, Some(0), EFFORT, None).unwrap();
        assert_eq!(e.method, Method::Bidiff);
        assert_eq!(e.old_sub, (0, new.len()));
        // The fresh MiB is stored once; the rest costs next to nothing.
        assert!(e.payload.len() < (1 << 20) + 4096, "{}", e.payload.len());
        assert_eq!(decode(&old, &e), new);
    }

    #[test]
    fn moved_bytes_go_to_the_full_candidates() {
        let old = noise(4 << 20, 3);
        let mut new = old.clone();
        // A MiB of the old file moved to another place: bidiff finds it, the aligned
        // add would store it again.
        new.copy_within(0..(1 << 20), 2 << 20);
        assert!(aligned_add(&old, &new, Some(0), 19).unwrap().is_none());
        // With the old range in a suffix array, and in hashed seeds (4 MiB, over
        // SEEDS_MIN).
        for seeds in [false, true] {
            let e = encode(
                &old,
                &new,
                Some(0),
                Effort {
                    level: 3,
                    threads: 2,
                    seeds,
                    code: None,
                },
                None,
            )
            .unwrap();
            assert!(
                e.payload.len() < 64 << 10,
                "seeds {seeds}: {}",
                e.payload.len()
            );
            assert_eq!(decode(&old, &e), new, "seeds {seeds}");
        }
    }

    #[test]
    fn a_small_window_keeps_the_smaller_zero_run_stream() {
        // A changed byte every 3 to 9 bytes: zero runs around the zero-run thresholds.
        let old = noise(1 << 20, 7);
        let mut new = old.clone();
        let steps = noise(1 << 18, 8);
        let mut at = 0;
        for &r in &steps {
            at += 3 + (r % 7) as usize;
            if at >= new.len() {
                break;
            }
            new[at] = new[at].wrapping_add(1 + r % 3);
        }
        let got = bidiff_zstd(&old, &new, 19, 1, false, None).unwrap();
        let idx = Matches::Scan(scan::Index::new(&old).unwrap());
        let stream = |zero_run| {
            let mut w = BlockWriter::with_zero_run(Vec::new(), zero_run);
            feed(&old, &new, &idx, 1, |c| w.control(c)).unwrap();
            let wlog = window_log(new.len() as u64);
            zstd_with_window(&w.finish().unwrap(), 19, wlog).unwrap()
        };
        let (long, short) = (
            stream(super::super::blocks::ZERO_RUN_MIN),
            stream(ZERO_RUN_SHORT),
        );
        assert_ne!(long.len(), short.len());
        assert_eq!(
            got,
            if short.len() < long.len() {
                short
            } else {
                long
            }
        );
        let e = Encoded {
            method: Method::Bidiff,
            old_sub: (0, old.len()),
            payload: got,
        };
        assert_eq!(decode(&old, &e), new);
    }

    #[test]
    fn incompressible_samples_are_told_apart() {
        assert!(!compresses(&noise(1 << 20, 5)));
        assert!(compresses(&vec![7u8; 1 << 20]));
    }
}
