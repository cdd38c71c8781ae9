//! Binary deltas between two versions of a file, bounded in memory for multi-GiB models.
//!
//! [`create`] cuts the new file into windows of at most [`window_size`] bytes, pairs each
//! with a bounded range of the old file (GGUF tensors matched by name, or content-defined
//! anchors for other files; see `delta/plan.rs`), and encodes each window with the
//! smallest of `copy`, bidiff+zstd and zstd-with-reference-prefix (`delta/encode.rs`).
//! [`apply`] streams the windows back (`delta/decode.rs`). ELF programs and libraries are
//! first preprocessed (`delta/exe.rs`): the windows diff new against the old file with its
//! code and data references relocated to the new layout. The format is SPEC.md §11.
//!
//! Memory: creation peaks near [`memory_bound`]`(window)`, which [`window_size`] keeps
//! under `DeltaOptions::max_memory`; application needs at most about 200 MiB whatever the
//! file size. A window's two candidate encodings run at once on two threads
//! (`DeltaOptions::threads`). Known gaps: one window is encoded at a time; data that moved
//! farther than the margin without anchors is diffed against the wrong old range (correct,
//! but larger).

mod blocks;
mod decode;
mod encode;
mod exe;
mod format;
mod plan;

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

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
    /// Threads a window's encoders may use (0: the cores available). With two or more,
    /// the bidiff and zstd-ref candidates of a window are computed at once; the delta is
    /// the same bytes whatever the count.
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
    /// Window size used.
    pub window_size: u64,
    /// Windows written, and how many of them were each method (copy, zstd, bidiff,
    /// zstd-ref).
    pub windows: u64,
    pub copy_windows: u64,
    pub zstd_windows: u64,
    pub bidiff_windows: u64,
    pub zstd_ref_windows: u64,
    /// True when the windows were planned from the GGUF tensor layout.
    pub gguf_aware: bool,
    /// Alignment segments of the ELF preprocessing (0: the old file was used as it is).
    pub elf_segments: u64,
    /// Bytes of the alignment record (0 without ELF preprocessing).
    pub elf_record: u64,
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

/// Memory reserved beside the windows: zstd level-19 contexts, the anchor index, buffers.
pub const FIXED_OVERHEAD: u64 = 320 << 20;

/// Peak memory of [`create`] with windows of `window` bytes: the old range (window plus
/// two margins of window/8), the new window, the suffix array (4 bytes per old byte), the
/// bidiff add buffer and the compressed candidates (one window each), plus
/// [`FIXED_OVERHEAD`]: `37 * window / 4 + FIXED_OVERHEAD`.
pub fn memory_bound(window: u64) -> u64 {
    window.saturating_mul(37) / 4 + FIXED_OVERHEAD
}

/// Largest window (whole MiB, at least 1 MiB, at most 1 GiB) whose [`memory_bound`] fits
/// `max_memory`; or `opts.window_size` when set.
pub fn window_size(opts: &DeltaOptions) -> u64 {
    if opts.window_size > 0 {
        return opts.window_size;
    }
    let w = opts.max_memory.saturating_sub(FIXED_OVERHEAD) / 37 * 4;
    (w >> 20 << 20).clamp(1 << 20, 1 << 30)
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DeltaError + '_ {
    move |source| DeltaError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a delta that turns `old` into `new` to `out`.
pub fn create(
    old: &Path,
    new: &Path,
    out: &mut dyn Write,
    opts: &DeltaOptions,
) -> Result<DeltaStats, DeltaError> {
    let of = File::open(old).map_err(io_err(old))?;
    let nf = File::open(new).map_err(io_err(new))?;
    let old_size = of.metadata().map_err(io_err(old))?.len();
    let new_size = nf.metadata().map_err(io_err(new))?.len();
    let window = window_size(opts);
    let margin = window / 8;
    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let out_path = Path::new("delta output");
    // An ELF pair that fits in one window is diffed against old' (the old file with its
    // references relocated to the new layout), kept in a temporary file.
    let fits = old_size <= window && new_size <= window && old_size > 0 && new_size > 0;
    let elf = match opts.exe && fits {
        true => elf_prepare(old, new)?,
        false => None,
    };
    let (of, old) = match &elf {
        Some((tmp, _, _)) => (tmp.reopen().map_err(io_err(old))?, tmp.path()),
        None => (of, old),
    };
    let mut stats = DeltaStats {
        old_size,
        new_size,
        window_size: window,
        ..Default::default()
    };
    let spans = plan::gguf_spans(old, new, old_size, new_size, window, margin);
    stats.gguf_aware = spans.is_some();
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
    if let Some((_, payload, segments)) = &elf {
        let mut rec = [0u8; format::PREPROCESS_LEN];
        rec[0] = format::PREPROCESS_ELF;
        rec[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        counted
            .write_all(&rec)
            .and_then(|_| counted.write_all(payload))
            .map_err(io_err(out_path))?;
        stats.elf_segments = *segments as u64;
        stats.elf_record = (rec.len() + payload.len()) as u64;
    }

    let mut hasher = Sha256::new();
    let mut next = 0u64;
    let mut idx = 0usize;
    let mut shift = 0i64;
    let mut new_buf = Vec::new();
    let mut old_buf = Vec::new();
    while next < new_size {
        let span = match &spans {
            Some(s) => match s.get(idx) {
                Some(sp) => *sp,
                None => break,
            },
            None => plan::generic_span(next, window.min(new_size - next), shift, old_size, margin),
        };
        idx += 1;
        if span.new_start != next {
            return Err(DeltaError::Corrupt(format!(
                "internal error: window planned at {} instead of {next}",
                span.new_start
            )));
        }
        read_at(&nf, new, span.new_start, span.new_len, &mut new_buf)?;
        hasher.update(&new_buf);
        let span = match &anchors {
            Some(a) => {
                shift = a.shift_for(&new_buf, span.new_start, shift);
                plan::generic_span(span.new_start, span.new_len, shift, old_size, margin)
            }
            None => span,
        };
        read_at(&of, old, span.old_start, span.old_len, &mut old_buf)?;
        let aligned = span
            .aligned
            .and_then(|a| a.checked_sub(span.old_start))
            .map(|a| a as usize);
        encode_window(
            &mut counted,
            &old_buf,
            span.old_start,
            &new_buf,
            aligned,
            (opts.zstd_level, threads),
            &mut stats,
        )
        .map_err(io_err(out_path))?;
        next += span.new_len;
    }
    if next != new_size {
        return Err(DeltaError::Corrupt(format!(
            "internal error: windows cover {next} of {new_size} bytes"
        )));
    }
    counted
        .write_all(&[Method::End as u8])
        .and_then(|_| counted.write_all(&hasher.finalize()))
        .and_then(|_| counted.flush())
        .map_err(io_err(out_path))?;
    stats.delta_size = counted.n;
    Ok(stats)
}

/// When both files are ELF programs or libraries of the same machine that this
/// preprocessing reads, and the alignment found is not empty: old' in a temporary file,
/// the alignment record's payload, and its segment count.
fn elf_prepare(
    old: &Path,
    new: &Path,
) -> Result<Option<(tempfile::NamedTempFile, Vec<u8>, usize)>, DeltaError> {
    let o = std::fs::read(old).map_err(io_err(old))?;
    let Some(lo) = exe::Layout::of_bytes(&o) else {
        return Ok(None);
    };
    let n = std::fs::read(new).map_err(io_err(new))?;
    let Some(ln) = exe::Layout::of_bytes(&n).filter(|l| l.machine == lo.machine) else {
        return Ok(None);
    };
    let al = exe::align(&o, &n, &lo, &ln).map_err(io_err(new))?;
    drop(n);
    if al.is_empty() {
        return Ok(None);
    }
    let tmp_path = Path::new("temporary old' file");
    let mut tmp = tempfile::NamedTempFile::new().map_err(io_err(tmp_path))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
    exe::write_relocated(&o, &lo, &al, &mut w)
        .and_then(|_| w.flush())
        .map_err(io_err(tmp_path))?;
    drop(w);
    let payload = al.encode().map_err(io_err(tmp_path))?;
    Ok(Some((tmp, payload, al.len())))
}

/// Shortest unchanged prefix or suffix worth a `copy` window of its own.
const TRIM_MIN: usize = 4096;

/// Encodes one planned window. When the new bytes sit at `aligned` in `old` with only
/// their middle changed, the unchanged prefix and suffix become `copy` windows and only
/// the middle is diffed (against the whole old range): bsdiff cannot see a match that
/// ends at the end of its input once a changed stretch longer than it lies before it.
fn encode_window(
    out: &mut dyn Write,
    old: &[u8],
    old_start: u64,
    new: &[u8],
    aligned: Option<usize>,
    (level, threads): (i32, usize),
    stats: &mut DeltaStats,
) -> std::io::Result<()> {
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
            emit(out, copy(old_start + a as u64, p), &[], stats)?;
        }
        if p == new.len() {
            return Ok(());
        }
    }
    let mid = &new[p..new.len() - q];
    let mid_aligned = aligned.map(|a| a + p);
    let enc = encode::encode(old, mid, mid_aligned, level, threads)?;
    let w = format::Window {
        method: enc.method,
        old_offset: old_start + enc.old_sub.0 as u64,
        old_len: enc.old_sub.1 as u64,
        new_len: mid.len() as u64,
        payload_len: enc.payload.len() as u64,
    };
    emit(out, w, &enc.payload, stats)?;
    if let (Some(a), true) = (aligned, q > 0) {
        let at = old_start + (a + new.len() - q) as u64;
        emit(out, copy(at, q), &[], stats)?;
    }
    Ok(())
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

fn read_at(f: &File, path: &Path, at: u64, len: u64, buf: &mut Vec<u8>) -> Result<(), DeltaError> {
    buf.clear();
    buf.resize(len as usize, 0);
    f.read_exact_at(buf, at).map_err(io_err(path))
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
