//! Binary deltas between two versions of a file, bounded in memory for multi-GiB models.
//!
//! [`create`] cuts the new file into windows of at most [`window_size`] bytes, pairs each
//! with a bounded range of the old file (GGUF tensors matched by name, or content-defined
//! anchors for other files; see `delta/plan.rs`), and encodes each window with the
//! smallest of `copy`, bidiff+zstd and zstd-with-reference-prefix (`delta/encode.rs`).
//! [`apply`] streams the windows back (`delta/decode.rs`). ELF programs and libraries are
//! first preprocessed (`delta/exe.rs`): the windows diff new against the old file with its
//! code and data references relocated to the new layout, calls to imported functions
//! following their PLT stubs by name (`delta/symbols.rs`). The format is SPEC.md §11.
//!
//! Parallel windows: the main thread plans and reads windows in order and hashes the new
//! file; one worker a thread (`DeltaOptions::threads`) encodes them, as many at once as
//! the memory budget holds ([`windows_in_flight`]); records are written in window order,
//! so the delta is the same bytes whatever the thread count. Threads with no window of
//! their own (a file of one window, such as any ELF file that is preprocessed) split a
//! window's bsdiff scan and run its zstd compression and its `zstd-ref` candidate beside
//! it (`delta/scan.rs`, `delta/encode.rs`). Old' is relocated on every thread, each a run
//! of its 64 KiB blocks (numpy 0.18 to 0.14 s, zstandard 2.5 to 1.9 s).
//!
//! Memory: creation peaks near [`memory_bound`]`(window, in_flight)`; [`window_size`]
//! sizes windows so that [`PLANNED_IN_FLIGHT`] of them fit `DeltaOptions::max_memory`
//! (the size does not depend on the cores, so neither does the output). Application needs
//! at most about 200 MiB whatever the file size.
//!
//! Known gaps: windows are planned, read and hashed on one thread, which on a 4 GiB model
//! pair with 5 % of its tensors changed used more CPU than either encoder (measured before
//! the buffers were reused; not measured since); a window waits for the earlier ones to be
//! written, so one slow window can idle the other cores until it is done; data that moved
//! farther than the margin without anchors is diffed against the wrong old range (correct,
//! but larger). Creation is CPU-bound: the candidate's suffix sort over old' (1.2 to
//! 1.3 s on one thread for ruff's 29 MiB x86-64 program), the alignment pass's index of
//! old and two bsdiff scans; xdelta3 does neither (a sort alone, 0.19 s for numpy's 7 MiB
//! library, is as long as all of `xdelta3 -9` on that pair). Two libsais sorts run on two
//! cores as fast as one does on one, but libsais's own OpenMP sort barely gains (numpy 184
//! to 177 ms, ruff 1.02 to 0.94 s): it waits on memory. So the alignment pass sorted the
//! old file's two halves apart, at once (`scan::Index::split`; numpy 0.29 to 0.19 s, ruff
//! aarch64 6.9 to 6.4 s, the deltas within 0.2 %), and now, for an old file of at least
//! [`seeds::SEEDS_MIN`], hashes its 16-byte strings instead (`delta/seeds.rs`), as the
//! bidiff candidate of an ELF pair does for its old range. The alignment pass's scan is
//! sparse (`scan::Pace::Sparse`: 3.6 s to 1.1 s on ruff, delta 0.9 % larger; the whole
//! delta 11.6 to 11.7 s before, 8.7 to 9.3 s after, `xdelta3 -9` 10.6 s; zstandard's
//! 11 MiB: 2.77 to 2.15 s, delta 742,103 to 752,403 bytes, `xdelta3 -9` 2.3 s). Once, on a
//! small library of 1,500 near-identical functions, it lost the unwind tables' alignment
//! (2,708 bytes instead of 1,338 at level 3); since FDEs are paired by function it costs
//! that library 694 to 750 bytes (stripped) and 1,240 to 1,452 (with DWARF). Scanning the
//! old file's index against old' instead of sorting old' was tried: 19 to 28 % larger
//! deltas on libarrow and duckdb, even with the alignment's offsets tried at every lookup.
//! A sparse candidate scan was tried too: faster again and 2 % smaller on ruff, but 11 %
//! larger on duckdb, so the candidate's scan stays bsdiff's. An ELF pair of at most
//! [`BOTH_WAYS_MAX`] is made twice: the plain way is predicted at zstd level 3 from the
//! alignment pass's recorded sparse matches (`scan::Recorded`), and made in full only when
//! that comes close to the preprocessed delta. A pair that the alignment leaves nearly
//! identical keeps the delta that replays the sparse matches against old' when it is tiny
//! ([`NEARLY_SAME`]; numpy: 0.52 to 0.29 s, `xdelta3 -9` 0.20 s, of which the one suffix
//! sort left is 0.19 s). An alignment that moves nothing, or too little to pay for its
//! record ([`SAVED_PER_BYTE_MAX`]), makes the plain way alone, from bsdiff's scan of the
//! alignment pass's index.

mod blocks;
mod decode;
mod dwarf;
mod encode;
mod exe;
mod format;
mod plan;
mod scan;
mod seeds;
mod streams;
mod symbols;
mod unwind;
mod x86;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{mpsc, Mutex};

use sha2::{Digest, Sha256};

pub use format::{Method, REF_MAX};

/// Limits and effort for delta creation.
#[derive(Debug, Clone)]
pub struct DeltaOptions {
    /// Peak memory the creator may use, bytes (documented bound; default 2 GiB).
    pub max_memory: u64,
    /// zstd level for the delta's compressed stream.
    pub zstd_level: i32,
    /// Window size in bytes; 0 derives it from `max_memory` ([`window_size`]).
    pub window_size: u64,
    /// Threads the encoders may use (0: the cores available): one window each, as many
    /// windows at once as `max_memory` holds ([`windows_in_flight`]); threads left over
    /// compute a window's bidiff and zstd-ref candidates at once. The delta is the same
    /// bytes whatever the count.
    pub threads: usize,
    /// Preprocess ELF programs and libraries (x86-64, aarch64) that fit in one window:
    /// the old file's references are relocated to the new layout before the windows are
    /// diffed (`delta/exe.rs`, SPEC.md §11.6). Off: the delta is format version 1.
    pub exe: bool,
}

impl Default for DeltaOptions {
    fn default() -> Self {
        DeltaOptions {
            max_memory: 2 << 30,
            zstd_level: 19,
            window_size: 0,
            threads: 0,
            exe: true,
        }
    }
}

/// What a delta creation produced.
#[derive(Debug, Clone, Default)]
pub struct DeltaStats {
    pub old_size: u64,
    pub new_size: u64,
    pub delta_size: u64,
    /// Window size used, and how many windows were encoded at once.
    pub window_size: u64,
    pub windows_in_flight: u64,
    /// Windows written, and how many of them were each method (copy, zstd, bidiff,
    /// zstd-ref, x86-streams).
    pub windows: u64,
    pub copy_windows: u64,
    pub zstd_windows: u64,
    pub bidiff_windows: u64,
    pub zstd_ref_windows: u64,
    pub x86_streams_windows: u64,
    /// True when the windows were planned from the GGUF tensor layout.
    pub gguf_aware: bool,
    /// Alignment segments of the ELF preprocessing (0: the old file was used as it is).
    pub elf_segments: u64,
    /// Bytes of the alignment record (0 without ELF preprocessing).
    pub elf_record: u64,
    /// Whole deltas encoded to choose this one from: 1, or for a small ELF pair made with
    /// and without preprocessing 2 (the plain way at a fast zstd level) or 3 (and again
    /// at the full level, when that came close).
    pub encodings: u64,
}

/// Why a delta could not be made or applied.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("delta I/O error on '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("delta is corrupt: {0}")]
    Corrupt(String),
    #[error("delta output would exceed its declared size of {declared} bytes")]
    TooLarge { declared: u64 },
    #[error("delta was made for an old file of {expected} bytes, this one has {actual}")]
    OldMismatch { expected: u64, actual: u64 },
}

impl DeltaError {
    /// True for a clean "no" (the delta or its base is wrong) rather than an I/O error.
    pub fn is_refusal(&self) -> bool {
        !matches!(self, DeltaError::Io { .. })
    }
}

/// Memory reserved once, whatever the windows: the anchor index (at most
/// [`plan::ANCHORS_MAX`] anchors of about 40 bytes) and read buffers.
pub const BASE_OVERHEAD: u64 = 96 << 20;

/// Memory reserved for each window in flight beside its buffers: its zstd level-19
/// contexts.
pub const WINDOW_OVERHEAD: u64 = 224 << 20;

/// Windows in flight that [`window_size`] budgets for: with two cores or more, two
/// windows are encoded at once at the default `max_memory`. The window size, and so the
/// delta, does not depend on the thread count.
pub const PLANNED_IN_FLIGHT: u64 = 2;

/// Memory one window in flight holds with windows of `window` bytes: the old range
/// (window plus two margins of window/8), the new window, the suffix array (4 bytes per
/// old byte), the bidiff add buffer and the compressed candidates (one window each), the
/// matches the scan's second thread holds (window/8, `delta/scan.rs`), plus
/// [`WINDOW_OVERHEAD`]: `75 * window / 8 + WINDOW_OVERHEAD`.
fn window_memory(window: u64) -> u64 {
    window.saturating_mul(75) / 8 + WINDOW_OVERHEAD
}

/// Peak memory of [`create`] with `in_flight` windows of `window` bytes encoded at once:
/// `in_flight * (75 * window / 8 + WINDOW_OVERHEAD) + BASE_OVERHEAD`.
pub fn memory_bound(window: u64, in_flight: u64) -> u64 {
    window_memory(window)
        .saturating_mul(in_flight.max(1))
        .saturating_add(BASE_OVERHEAD)
}

/// Largest window (whole MiB, at least 1 MiB, at most 1 GiB) such that
/// [`PLANNED_IN_FLIGHT`] windows fit `max_memory` ([`memory_bound`]); or
/// `opts.window_size` when set.
pub fn window_size(opts: &DeltaOptions) -> u64 {
    if opts.window_size > 0 {
        return opts.window_size;
    }
    let per = opts.max_memory.saturating_sub(BASE_OVERHEAD) / PLANNED_IN_FLIGHT;
    let w = per.saturating_sub(WINDOW_OVERHEAD) / 75 * 8;
    (w >> 20 << 20).clamp(1 << 20, 1 << 30)
}

/// The smallest `max_memory` accepted from a user: two windows of 1 MiB in flight.
pub const MAX_MEMORY_MIN: u64 = 576 << 20;

/// A `--max-memory` value (`what` names the flag in the error): a size as
/// [`crate::units::parse_size`] reads it, at least [`MAX_MEMORY_MIN`].
pub fn parse_max_memory(what: &'static str, text: &str) -> Result<u64, crate::media::MediaError> {
    let n = crate::media::parse_size_arg(what, text)?;
    if n < MAX_MEMORY_MIN {
        return Err(crate::media::MediaError::BadSize {
            what,
            value: text.chars().take(40).collect(),
            reason: "the delta encoder needs at least 576M (two 1 MiB windows); give 576M or more"
                .into(),
        });
    }
    Ok(n)
}

/// How many windows of `window` bytes [`create`] encodes at once: one per thread
/// (`opts.threads`, 0 for the cores available), as many as `max_memory` holds, at least
/// one.
pub fn windows_in_flight(opts: &DeltaOptions, window: u64) -> u64 {
    let fit = opts.max_memory.saturating_sub(BASE_OVERHEAD) / window_memory(window).max(1);
    (threads(opts) as u64).min(fit).max(1)
}

fn threads(opts: &DeltaOptions) -> usize {
    match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DeltaError + '_ {
    move |source| DeltaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// One planned window, read and waiting for an encoder.
struct Job {
    idx: usize,
    old: Vec<u8>,
    old_start: u64,
    new: Vec<u8>,
    new_start: u64,
    aligned: Option<usize>,
}

/// A window's records (one, or up to three when an unchanged prefix or suffix is cut off
/// as `copy`) with their payloads, in order.
type Records = Vec<(format::Window, Vec<u8>)>;

/// An encoded window from a worker: its index, its records, and its two buffers back.
type Done = (usize, std::io::Result<Records>, [Vec<u8>; 2]);

/// Writes a delta that turns `old` into `new` to `out`.
///
/// ELF files of at most [`BOTH_WAYS_MAX`] bytes are made with and without preprocessing
/// and the smaller delta is written (both held in memory, at most about twice the new
/// file). The main thread plans and reads the windows in order (the generic planner's shift
/// carries from one window to the next) and hashes the new file; [`windows_in_flight`]
/// workers encode them; the records are written in window order, so the bytes do not
/// depend on the thread count. A window's slot is freed only once its records are
/// written, so at most that many windows (buffers and payloads) exist at once.
pub fn create(
    old: &Path,
    new: &Path,
    out: &mut dyn Write,
    opts: &DeltaOptions,
) -> Result<DeltaStats, DeltaError> {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).map_err(io_err(p));
    let (old_size, new_size) = (size(old)?, size(new)?);
    // An ELF pair that fits in one window is diffed against old' (the old file with its
    // references relocated to the new layout), kept in a temporary file.
    let window = window_size(opts);
    let fits = old_size <= window && new_size <= window && old_size > 0 && new_size > 0;
    let elf = match opts.exe && fits {
        true => elf_prepare(old, new, threads(opts))?,
        false => Prepared::NotElf,
    };
    let elf = match elf {
        Prepared::NotElf => return create_one(old, new, out, opts, Way::Plain(None)),
        // old' would be (nearly) the old file: the plain way, with bsdiff's scan of the
        // alignment pass's index (used only where it `fits`).
        Prepared::Unmoved(scan, code) => {
            return create_one(old, new, out, opts, Way::PlainElf(Some(&scan), code))
        }
        Prepared::Moved(e) => e,
    };
    // A pair that the alignment leaves nearly identical (every new byte but a few in
    // the sparse matches) first replays those matches against old': when that delta is
    // at most 1/`NEARLY_SAME` of the new file, old' is not sorted and scanned, which could
    // save no more than that.
    let unmatched: u64 = elf
        .sparse
        .matches()
        .map(|m| (m.copy_end - m.add_new_start - m.add_length) as u64)
        .sum();
    if unmatched * NEARLY_SAME <= new_size {
        let mut replayed = Vec::new();
        let s_rep = create_one(
            old,
            new,
            &mut replayed,
            opts,
            Way::Elf(&elf, Some(&elf.sparse)),
        )?;
        if s_rep.delta_size * NEARLY_SAME <= new_size {
            out.write_all(&replayed)
                .map_err(io_err(Path::new("delta output")))?;
            return Ok(s_rep);
        }
    }
    if old_size > BOTH_WAYS_MAX || new_size > BOTH_WAYS_MAX {
        return create_one(old, new, out, opts, Way::Elf(&elf, None));
    }
    // A small file is made both ways and the smaller kept: on a library whose layout
    // hardly moved, the alignment record costs more than the preprocessing saves. The
    // plain way is first predicted: made at a fast zstd level from the alignment pass's
    // sparse matches. When that is far larger than the preprocessed delta, the plain way
    // cannot close the gap and is not made; otherwise it is made in full (its own suffix
    // sort and bsdiff's scan, the full level).
    let mut with = Vec::new();
    let s_with = create_one(old, new, &mut with, opts, Way::Elf(&elf, None))?;
    let mut without = Vec::new();
    let fast = DeltaOptions {
        zstd_level: opts.zstd_level.min(PREDICT_LEVEL),
        ..opts.clone()
    };
    let predicted = create_one(
        old,
        new,
        &mut without,
        &fast,
        Way::PlainElf(Some(&elf.sparse), elf.code),
    )?;
    if predicted.delta_size * PREDICT_GAIN.1 > s_with.delta_size * PREDICT_GAIN.0 {
        out.write_all(&with)
            .map_err(io_err(Path::new("delta output")))?;
        return Ok(DeltaStats {
            encodings: 2,
            ..s_with
        });
    }
    without.clear();
    let s_without = create_one(old, new, &mut without, opts, Way::PlainElf(None, elf.code))?;
    let encodings = 3;
    let (bytes, stats) = if s_without.delta_size < s_with.delta_size {
        (without, s_without)
    } else {
        (with, s_with)
    };
    let stats = DeltaStats { encodings, ..stats };
    out.write_all(&bytes)
        .map_err(io_err(Path::new("delta output")))?;
    Ok(stats)
}

/// How [`create_one`] makes a delta.
enum Way<'a> {
    /// Against the old file as it is. With the bsdiff matches of the whole new file
    /// against the whole old file when they are known: a window that is exactly those two
    /// ranges uses them instead of sorting and scanning again. Sparse matches make only
    /// [`create`]'s prediction of the plain way's size.
    Plain(Option<&'a scan::Recorded>),
    /// An ELF pair against the old file as it is: as `Plain`, with the bidiff candidate's
    /// matches looked up as [`Way::Elf`]'s are (`encode::Effort::seeds`).
    PlainElf(Option<&'a scan::Recorded>, Option<streams::Code>),
    /// Against old', with the alignment record; with matches of the new file against
    /// the old file to replay against old' instead of sorting and scanning it.
    Elf(&'a ElfPrep, Option<&'a scan::Recorded>),
}

/// Files of at most this many bytes with ELF preprocessing are made both with and
/// without it, and the smaller delta kept ([`create`]).
pub const BOTH_WAYS_MAX: u64 = 16 << 20;

/// A small ELF pair whose alignment leaves at most 1/`NEARLY_SAME` of the new file out of
/// the alignment pass's matches, and whose delta replaying those matches against old' is
/// at most 1/`NEARLY_SAME` of the new file, keeps that delta ([`create`]): numpy 1.26.3
/// to 1.26.4, 8 of 7,426,817 bytes unmatched, 1,564 bytes against 1,548 with old' sorted
/// and scanned, in 0.12 s instead of 0.23 s (aarch64: 0 unmatched, 930 against 927
/// bytes). orjson leaves 17 % unmatched, zstandard 9 %.
const NEARLY_SAME: u64 = 1000;

/// The zstd level at which [`create`] first makes the plain way of a small ELF pair.
const PREDICT_LEVEL: i32 = 3;
/// The plain way is made at the full level only when its fast delta is at most
/// `PREDICT_GAIN.0 / PREDICT_GAIN.1` times the preprocessed delta, that is when level 19
/// would need to make it less than 4/5 of its level-3 size to win. Measured level-3 over
/// level-19 sizes of the plain way: orjson 1.22 (zstd-ref; 51,828 and 42,366 bytes),
/// zstandard 1.22 (bidiff), numpy 1.10 (x86-64) and 1.05 (aarch64). At 10/7, orjson's
/// plain way was made again at level 19 (70 to 90 ms, over a third of the delta's time)
/// and lost to the preprocessed one (39,140 bytes) as predicted.
const PREDICT_GAIN: (u64, u64) = (5, 4);

/// [`create`] one way.
fn create_one(
    old: &Path,
    new: &Path,
    out: &mut dyn Write,
    opts: &DeltaOptions,
    way: Way<'_>,
) -> Result<DeltaStats, DeltaError> {
    let of = File::open(old).map_err(io_err(old))?;
    let nf = File::open(new).map_err(io_err(new))?;
    let old_size = of.metadata().map_err(io_err(old))?.len();
    let new_size = nf.metadata().map_err(io_err(new))?.len();
    let window = window_size(opts);
    let margin = window / 8;
    let in_flight = windows_in_flight(opts, window) as usize;
    let out_path = Path::new("delta output");
    let (elf, known, program, code) = match way {
        Way::Plain(known) => (None, known, false, None),
        Way::PlainElf(known, code) => (None, known, true, code),
        Way::Elf(e, known) => (Some(e), known, true, e.code),
    };
    let (of, old) = match elf {
        Some(e) => (e.tmp.reopen().map_err(io_err(old))?, e.tmp.path()),
        None => (of, old),
    };
    let mut stats = DeltaStats {
        old_size,
        new_size,
        window_size: window,
        windows_in_flight: in_flight as u64,
        encodings: 1,
        ..Default::default()
    };
    let spans = plan::gguf_spans(old, new, old_size, new_size, window, margin);
    stats.gguf_aware = spans.is_some();
    // Threads left for a window's two candidates when fewer windows than
    // threads are encoded at once: fewer fit in memory, or the file has fewer windows.
    let windows = match &spans {
        Some(s) => s.len() as u64,
        None => new_size.div_ceil(window),
    };
    let busy = (in_flight as u64).min(windows).max(1) as usize;
    let effort = encode::Effort {
        level: opts.zstd_level,
        threads: (threads(opts) / busy).max(1),
        seeds: program,
        code: None,
    };
    let anchors = match spans {
        Some(_) => None,
        None if old_size > 0 => {
            Some(plan::Anchors::index(old, old_size, window).map_err(io_err(old))?)
        }
        None => None,
    };
    let mut counted = Counting { w: out, n: 0 };
    format::Header {
        version: match elf {
            Some(_) => format::VERSION_PREPROCESSED,
            None => format::VERSION,
        },
        flags: if stats.gguf_aware {
            format::FLAG_GGUF
        } else {
            0
        },
        old_size,
        new_size,
    }
    .write(&mut counted)
    .map_err(io_err(out_path))?;
    if let Some(e) = elf {
        let mut rec = [0u8; format::PREPROCESS_LEN];
        rec[0] = e.kind;
        rec[1..].copy_from_slice(&(e.payload.len() as u64).to_le_bytes());
        counted
            .write_all(&rec)
            .and_then(|_| counted.write_all(&e.payload))
            .map_err(io_err(out_path))?;
        stats.elf_segments = e.segments as u64;
        stats.elf_record = (rec.len() + e.payload.len()) as u64;
    }

    let (job_tx, job_rx) = mpsc::sync_channel::<Job>(in_flight);
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = mpsc::channel::<Done>();
    let hash = std::thread::scope(|s| {
        for _ in 0..in_flight {
            let res_tx = res_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(job) = job else { return };
                // The known scan is of the whole new file against the whole old file.
                let whole = job.new_start == 0 && job.old_start == 0;
                let known = known.filter(|_| whole);
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    encode_window(&job, effort, code, known)
                }))
                .unwrap_or_else(|_| Err(std::io::Error::other("a window encoder panicked")));
                // The buffers go back to be read into again (fresh ones would be paged in
                // anew for every window).
                if res_tx.send((job.idx, r, [job.old, job.new])).is_err() {
                    return;
                }
            });
        }
        drop(res_tx);
        let mut w = Writer {
            out: &mut counted as &mut dyn Write,
            res_rx,
            pending: BTreeMap::new(),
            free: Vec::new(),
            next: 0,
            in_flight: 0,
            stats: &mut stats,
        };
        let r = plan_and_read(PlanCtx {
            old: (&of, old, old_size),
            new: (&nf, new, new_size),
            spans: spans.as_deref(),
            anchors: anchors.as_ref(),
            window,
            margin,
            in_flight,
            jobs: &job_tx,
            writer: &mut w,
        });
        // Closing the queue ends the workers once it is drained (or at once on error).
        drop(job_tx);
        let hash = r?;
        while w.in_flight > 0 {
            w.receive_one()?;
        }
        Ok::<_, DeltaError>(hash)
    })?;
    counted
        .write_all(&[Method::End as u8])
        .and_then(|_| counted.write_all(&hash))
        .and_then(|_| counted.flush())
        .map_err(io_err(out_path))?;
    stats.delta_size = counted.n;
    Ok(stats)
}

/// What the planning loop of [`create`] reads from and sends to.
struct PlanCtx<'a, 'w> {
    old: (&'a File, &'a Path, u64),
    new: (&'a File, &'a Path, u64),
    spans: Option<&'a [plan::Span]>,
    anchors: Option<&'a plan::Anchors>,
    window: u64,
    margin: u64,
    in_flight: usize,
    jobs: &'a mpsc::SyncSender<Job>,
    writer: &'a mut Writer<'w>,
}

/// Plans and reads every window in order, hands each to the encoders once a slot is
/// free, and returns the SHA-256 of the new file.
fn plan_and_read(c: PlanCtx<'_, '_>) -> Result<[u8; 32], DeltaError> {
    let (of, old, old_size) = c.old;
    let (nf, new, new_size) = c.new;
    let mut hasher = Sha256::new();
    let mut next = 0u64;
    let mut idx = 0usize;
    let mut shift = 0i64;
    while next < new_size {
        let span = match c.spans {
            Some(s) => match s.get(idx) {
                Some(sp) => *sp,
                None => break,
            },
            None => plan::generic_span(
                next,
                c.window.min(new_size - next),
                shift,
                old_size,
                c.margin,
            ),
        };
        if span.new_start != next {
            return Err(DeltaError::Corrupt(format!(
                "internal error: window planned at {} instead of {next}",
                span.new_start
            )));
        }
        while c.writer.in_flight >= c.in_flight {
            c.writer.receive_one()?;
        }
        let new_buf = read_at(nf, new, span.new_start, span.new_len, c.writer.free.pop())?;
        hasher.update(&new_buf);
        let span = match c.anchors {
            Some(a) => {
                shift = a.shift_for(&new_buf, span.new_start, shift);
                plan::generic_span(span.new_start, span.new_len, shift, old_size, c.margin)
            }
            None => span,
        };
        let old_buf = read_at(of, old, span.old_start, span.old_len, c.writer.free.pop())?;
        let aligned = span
            .aligned
            .and_then(|a| a.checked_sub(span.old_start))
            .map(|a| a as usize);
        c.writer.in_flight += 1;
        let job = Job {
            idx,
            old: old_buf,
            old_start: span.old_start,
            new: new_buf,
            new_start: span.new_start,
            aligned,
        };
        if c.jobs.send(job).is_err() {
            return Err(worker_gone());
        }
        idx += 1;
        next += span.new_len;
    }
    if next != new_size {
        return Err(DeltaError::Corrupt(format!(
            "internal error: windows cover {next} of {new_size} bytes"
        )));
    }
    Ok(hasher.finalize().into())
}

fn worker_gone() -> DeltaError {
    DeltaError::Io {
        path: "delta output".into(),
        source: std::io::Error::other("the window encoders stopped"),
    }
}

/// Writes encoded windows in window order as they come back from the encoders.
struct Writer<'w> {
    out: &'w mut dyn Write,
    res_rx: mpsc::Receiver<Done>,
    /// Buffers of written windows, to read the next ones into.
    free: Vec<Vec<u8>>,
    /// Encoded windows waiting for an earlier one.
    pending: BTreeMap<usize, Records>,
    /// Index of the next window to write.
    next: usize,
    /// Windows read and not yet written.
    in_flight: usize,
    stats: &'w mut DeltaStats,
}

impl Writer<'_> {
    /// Waits for one encoded window, then writes every window that is now next in order.
    fn receive_one(&mut self) -> Result<(), DeltaError> {
        let (idx, r, bufs) = self.res_rx.recv().map_err(|_| worker_gone())?;
        self.free.extend(bufs);
        let out_err = io_err(Path::new("delta output"));
        self.pending.insert(idx, r.map_err(&out_err)?);
        while let Some(records) = self.pending.remove(&self.next) {
            for (w, payload) in records {
                emit(self.out, w, &payload, self.stats).map_err(&out_err)?;
            }
            self.next += 1;
            self.in_flight -= 1;
        }
        Ok(())
    }
}

/// The ELF preprocessing of a pair, made before its windows.
struct ElfPrep {
    /// old', in a temporary file.
    tmp: tempfile::NamedTempFile,
    /// The alignment record's payload, and its segment count.
    payload: Vec<u8>,
    segments: usize,
    /// The alignment record's kind: 3 when old' rewrites debug sections' addresses (the
    /// old file has some), else 2 (which readers before kind 3 also read).
    kind: u8,
    /// The alignment pass's sparse scan of the new file against the old file
    /// ([`scan::Pace::Sparse`]), which predicts the plain way's size.
    sparse: scan::Recorded,
    /// Where the code of an x86-64 pair is.
    code: Option<streams::Code>,
}

/// What [`elf_prepare`] found.
enum Prepared {
    /// The files are not both ELF files of one machine that the preprocessing reads.
    NotElf,
    /// The alignment moves nothing (old' would be the old file), or too little to pay
    /// for its record ([`SAVED_PER_BYTE_MAX`]): bsdiff's matches of the new file against
    /// the old file, scanned with the alignment pass's index.
    Unmoved(scan::Recorded, Option<streams::Code>),
    /// The preprocessing.
    Moved(ElfPrep),
}

/// The most a byte of old' that differs from the old file can save the delta: a byte
/// that bsdiff's diff stream no longer holds among zeros is a literal and a sequence to
/// zstd, about 3 bytes. When old' differs in so few bytes that they cannot pay for the
/// alignment record, the preprocessed way cannot be the smaller and is not made (the
/// test's program with one flipped byte: 0 bytes differ; numpy's 7 MiB x86-64 library,
/// before its PLT stubs were paired, 2 bytes against a 77-byte record, made both ways in
/// 0.76 to 0.88 s and the plain one kept).
const SAVED_PER_BYTE_MAX: u64 = 3;

/// When both files are ELF programs or libraries of the same machine that this
/// preprocessing reads: their [`ElfPrep`], or the alignment pass's scan when the alignment
/// moves nothing or too little ([`SAVED_PER_BYTE_MAX`]).
fn elf_prepare(old: &Path, new: &Path, threads: usize) -> Result<Prepared, DeltaError> {
    let o = std::fs::read(old).map_err(io_err(old))?;
    let Some(lo) = exe::Layout::of_bytes(&o) else {
        return Ok(Prepared::NotElf);
    };
    let n = std::fs::read(new).map_err(io_err(new))?;
    let Some(ln) = exe::Layout::of_bytes(&n).filter(|l| l.machine == lo.machine) else {
        return Ok(Prepared::NotElf);
    };
    // The alignment pass's scan is sparse: it only has to find where code and data moved.
    // When the plain way is the delta, it gets bsdiff's own scan of the same index.
    // Its index: a suffix array of a small old file (sorted in a few milliseconds), the
    // hashed seeds of a larger one ([`seeds::SEEDS_MIN`]).
    let sorted = match o.len() < seeds::SEEDS_MIN {
        true => Some(scan::Index::split(&o, threads).map_err(io_err(old))?),
        false => None,
    };
    let sparse = match &sorted {
        Some(idx) => scan::Recorded::scan(idx, &n, scan::Pace::Sparse, threads),
        None => {
            let seeds = seeds::Seeds::new(&o).map_err(io_err(old))?;
            scan::Recorded::scan(&seeds, &n, scan::Pace::Sparse, threads)
        }
    }
    .map_err(io_err(new))?;
    let exact = || {
        let idx = match sorted {
            Some(idx) => idx,
            None => scan::Index::split(&o, threads).map_err(io_err(old))?,
        };
        scan::Recorded::scan(&idx, &n, scan::Pace::Exact, threads).map_err(io_err(new))
    };
    let code = lo
        .x86_code()
        .zip(ln.x86_code())
        .map(|(old, new)| streams::Code { old, new });
    let paired = symbols::pair(&o, &lo.plt, &n, &ln.plt, lo.machine);
    let mut al = exe::align(sparse.matches(), (&lo, &o), (&ln, &n), paired);
    // Kind 4 only when names moved: readers made before it read kinds 2 and 3.
    al.names = lo.has_names() && al.moves_names();
    al.debug = lo.has_debug() || al.names;
    if al.is_identity() {
        return Ok(Prepared::Unmoved(exact()?, code));
    }
    let tmp_path = Path::new("temporary old' file");
    let mut tmp = tempfile::NamedTempFile::new().map_err(io_err(tmp_path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
    let differing = exe::write_relocated(&o, &lo, &al, threads, &mut w)
        .and_then(|d| w.flush().map(|_| d))
        .map_err(io_err(tmp_path))?;
    drop(w);
    let payload = al.encode().map_err(io_err(tmp_path))?;
    if differing * SAVED_PER_BYTE_MAX < (format::PREPROCESS_LEN + payload.len()) as u64 {
        return Ok(Prepared::Unmoved(exact()?, code));
    }
    Ok(Prepared::Moved(ElfPrep {
        tmp,
        payload,
        segments: al.len(),
        kind: match (al.names, al.debug) {
            (true, _) => format::PREPROCESS_ELF_NAMES,
            (false, true) => format::PREPROCESS_ELF_DEBUG,
            (false, false) => format::PREPROCESS_ELF_UNWIND,
        },
        sparse,
        code,
    }))
}

/// Shortest unchanged prefix or suffix worth a `copy` window of its own.
const TRIM_MIN: usize = 4096;

/// Encodes one planned window. When the new bytes sit at `aligned` in `old` with only
/// their middle changed, the unchanged prefix and suffix become `copy` windows and only
/// the middle is diffed (against the whole old range): bsdiff cannot see a match that
/// ends at the end of its input once a changed stretch longer than it lies before it.
/// `known`: the bsdiff matches of this window's new bytes against its old range, when
/// they were recorded (used only if no prefix is cut off).
fn encode_window(
    job: &Job,
    effort: encode::Effort,
    code: Option<streams::Code>,
    known: Option<&scan::Recorded>,
) -> std::io::Result<Records> {
    let (old, old_start, new, aligned) = (&job.old[..], job.old_start, &job.new[..], job.aligned);
    let mut records = Records::new();
    let (mut p, mut q) = (0, 0);
    if let Some(a) = aligned.filter(|a| a.checked_add(new.len()).is_some_and(|e| e <= old.len())) {
        let o = &old[a..a + new.len()];
        p = new.iter().zip(o).take_while(|(x, y)| x == y).count();
        if p < new.len() {
            q = new[p..]
                .iter()
                .rev()
                .zip(o[p..].iter().rev())
                .take_while(|(x, y)| x == y)
                .count();
        }
        if p < TRIM_MIN && p < new.len() {
            p = 0;
        }
        if q < TRIM_MIN {
            q = 0;
        }
        if p > 0 {
            records.push((copy(old_start + a as u64, p), Vec::new()));
        }
        if p == new.len() {
            return Ok(records);
        }
    }
    let mid = &new[p..new.len() - q];
    let mid_aligned = aligned.map(|a| a + p);
    let known = known.filter(|k| p == 0 && k.fits(old.len(), mid.len()));
    let effort = encode::Effort {
        code: code.and_then(|c| {
            c.within(
                (old_start, old.len()),
                (job.new_start + p as u64, mid.len()),
            )
        }),
        ..effort
    };
    let enc = encode::encode(old, mid, mid_aligned, effort, known)?;
    let w = format::Window {
        method: enc.method,
        old_offset: old_start + enc.old_sub.0 as u64,
        old_len: enc.old_sub.1 as u64,
        new_len: mid.len() as u64,
        payload_len: enc.payload.len() as u64,
    };
    records.push((w, enc.payload));
    if let (Some(a), true) = (aligned, q > 0) {
        let at = old_start + (a + new.len() - q) as u64;
        records.push((copy(at, q), Vec::new()));
    }
    Ok(records)
}

/// Writes one window record and its payload, and counts it.
fn emit(
    out: &mut dyn Write,
    w: format::Window,
    payload: &[u8],
    stats: &mut DeltaStats,
) -> std::io::Result<()> {
    w.write(out)?;
    out.write_all(payload)?;
    stats.windows += 1;
    match w.method {
        Method::Copy => stats.copy_windows += 1,
        Method::Zstd => stats.zstd_windows += 1,
        Method::Bidiff => stats.bidiff_windows += 1,
        Method::ZstdRef => stats.zstd_ref_windows += 1,
        Method::X86Streams => stats.x86_streams_windows += 1,
        Method::End => {}
    }
    Ok(())
}

/// A `copy` window record.
fn copy(old_offset: u64, len: usize) -> format::Window {
    format::Window {
        method: Method::Copy,
        old_offset,
        old_len: len as u64,
        new_len: len as u64,
        payload_len: 0,
    }
}

fn read_at(
    f: &File,
    path: &Path,
    at: u64,
    len: u64,
    reuse: Option<Vec<u8>>,
) -> Result<Vec<u8>, DeltaError> {
    let mut buf = reuse.unwrap_or_default();
    buf.clear();
    buf.resize(len as usize, 0);
    f.read_exact_at(&mut buf, at).map_err(io_err(path))?;
    Ok(buf)
}

struct Counting<'a> {
    w: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.w.write(b)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.w.flush()
    }
}

/// Applies a delta read from `delta` to `old` (random access), streaming the result to
/// `out`. Refuses to write more than `new_size` bytes. Memory does not grow with the
/// file size.
pub fn apply<O: Read + Seek>(
    old: &mut O,
    delta: &mut dyn Read,
    out: &mut dyn Write,
    new_size: u64,
) -> Result<u64, DeltaError> {
    decode::apply(old, delta, out, new_size)
}

impl crate::diagnostic::Diagnostic for DeltaError {
    fn exit_code(&self) -> u8 {
        crate::diagnostic::refusal_code(self.is_refusal())
    }

    fn help(&self) -> Option<String> {
        match self {
            DeltaError::OldMismatch { .. } => {
                Some("apply the delta to the exact version it was made from".into())
            }
            _ => None,
        }
    }
}
