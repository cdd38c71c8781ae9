//! Applying a delta: stream the windows, each reading only its own range of the old file,
//! and write the new file in order, hashing it as it goes.
//!
//! Hostile input: every length is checked against the header and the old file's size
//! before use, payloads are read through `Take` (never allocated from a length field),
//! zstd decoders are capped at a 2^27-byte window, and a `zstd-ref` window's old range
//! (the only thing held in memory) is capped at 64 MiB. Memory does not grow with the
//! file size. Known gaps: a corrupt delta is only known corrupt when the error shows, at
//! the latest at the final SHA-256; what was written to `out` by then is garbage, so
//! callers stage the output and keep it only on success.

use std::cell::RefCell;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

use super::blocks::BlockReader;
use super::exe::{Alignment, Relocated};
use super::format::{self, Header, Method, Window, HEADER_LEN, REF_MAX, WINDOW_LEN};
use super::streams;
use super::DeltaError;

const OUT: &str = "output";
const OLD: &str = "old file";

fn corrupt(s: impl Into<String>) -> DeltaError {
    DeltaError::Corrupt(s.into())
}

/// Reading the delta itself: a short read is a truncated delta.
fn delta_err(what: &str) -> impl Fn(io::Error) -> DeltaError + '_ {
    move |e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt(format!("it is truncated in {what}"))
        } else {
            DeltaError::Io {
                path: "delta".into(),
                source: e,
            }
        }
    }
}

/// The new file as it is written: counts, hashes, and maps write errors.
struct Sink<'a> {
    out: &'a mut dyn Write,
    hasher: Sha256,
    written: u64,
}

impl Sink<'_> {
    fn put(&mut self, b: &[u8]) -> Result<(), DeltaError> {
        self.out.write_all(b).map_err(|source| DeltaError::Io {
            path: OUT.into(),
            source,
        })?;
        self.hasher.update(b);
        self.written += b.len() as u64;
        Ok(())
    }
}

/// A range of the old file as its own seekable stream. Reads or seeks outside it fail
/// (a delta that points outside its window is corrupt); real I/O errors on the old file
/// are remembered so they are not reported as corruption.
struct OldRange<'a, O> {
    inner: &'a mut O,
    start: u64,
    len: u64,
    pos: u64,
    inner_pos: Option<u64>,
    io_error: &'a RefCell<Option<io::Error>>,
}

impl<O: Read + Seek> OldRange<'_, O> {
    fn fail(&self, e: io::Error) -> io::Error {
        let kind = e.kind();
        *self.io_error.borrow_mut() = Some(e);
        io::Error::new(kind, "old file")
    }
}

impl<O: Read + Seek> Read for OldRange<'_, O> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let at = self.start + self.pos;
        if self.inner_pos != Some(at) {
            self.inner_pos = None;
            if let Err(e) = self.inner.seek(SeekFrom::Start(at)) {
                return Err(self.fail(e));
            }
            self.inner_pos = Some(at);
        }
        match self.inner.read(&mut buf[..n]) {
            Ok(0) => Err(self.fail(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the old file is shorter than it was",
            ))),
            Ok(k) => {
                self.pos += k as u64;
                self.inner_pos = Some(at + k as u64);
                Ok(k)
            }
            Err(e) => Err(self.fail(e)),
        }
    }
}

impl<O: Read + Seek> Seek for OldRange<'_, O> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match seek_target(to, self.pos, self.len) {
            Some(t) => {
                self.pos = t;
                Ok(self.pos)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "seek outside the window's old range",
            )),
        }
    }
}

/// Where a seek from `pos` in a stream of `len` bytes lands, when it stays within 0..=len.
pub(super) fn seek_target(to: SeekFrom, pos: u64, len: u64) -> Option<u64> {
    let t = match to {
        SeekFrom::Start(x) => x as i128,
        SeekFrom::Current(d) => pos as i128 + d as i128,
        SeekFrom::End(d) => len as i128 + d as i128,
    };
    (0..=len as i128).contains(&t).then_some(t as u64)
}

pub fn apply<O: Read + Seek>(
    old: &mut O,
    delta: &mut dyn Read,
    out: &mut dyn Write,
    cap: u64,
) -> Result<u64, DeltaError> {
    let mut hb = [0u8; HEADER_LEN];
    delta.read_exact(&mut hb).map_err(delta_err("its header"))?;
    let h = Header::parse(&hb).map_err(corrupt)?;
    let old_size = old
        .seek(SeekFrom::End(0))
        .map_err(|source| DeltaError::Io {
            path: OLD.into(),
            source,
        })?;
    if old_size != h.old_size {
        return Err(DeltaError::OldMismatch {
            expected: h.old_size,
            actual: old_size,
        });
    }
    if h.new_size > cap {
        return Err(DeltaError::TooLarge { declared: cap });
    }
    if h.version == format::VERSION {
        return windows(old, delta, out, &h);
    }
    let mut rec = [0u8; format::PREPROCESS_LEN];
    delta
        .read_exact(&mut rec)
        .map_err(delta_err("its alignment record"))?;
    let (unwind, debug, names) = match rec[0] {
        format::PREPROCESS_ELF => (false, false, false),
        format::PREPROCESS_ELF_UNWIND => (true, false, false),
        format::PREPROCESS_ELF_DEBUG => (true, true, false),
        format::PREPROCESS_ELF_NAMES => (true, true, true),
        k => {
            return Err(corrupt(format!(
                "its old file is preprocessed by unknown kind {k} (a newer offgrid made it)"
            )))
        }
    };
    let mut len = [0u8; 8];
    len.copy_from_slice(&rec[1..]);
    let al =
        Alignment::read(delta, u64::from_le_bytes(len), unwind, debug, names).map_err(|e| {
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
            ) {
                corrupt(format!("its alignment record is malformed: {e}"))
            } else {
                DeltaError::Io {
                    path: "delta".into(),
                    source: e,
                }
            }
        })?;
    let old_err = |source| DeltaError::Io {
        path: OLD.into(),
        source,
    };
    let mut rel = Relocated::new(old, h.old_size, al)
        .map_err(old_err)?
        .ok_or_else(|| {
            corrupt("it was made for an ELF file and the old file is not one it can read")
        })?;
    // bsdiff's controls read old' in an order that jumps all over it; relocating it once,
    // in order, into a temporary file costs one pass (relocating block by block as the
    // reads came took 17 to 42 s on ruff's 29 MiB program).
    let staged_err = |source| DeltaError::Io {
        path: "temporary old' file".into(),
        source,
    };
    let mut staged = tempfile::tempfile().map_err(staged_err)?;
    // A read error is the old file's, a write error (a full disk) the temporary file's.
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match rel.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(old_err(e)),
        };
        staged.write_all(&buf[..n]).map_err(staged_err)?;
    }
    staged.seek(SeekFrom::Start(0)).map_err(staged_err)?;
    windows(&mut staged, delta, out, &h)
}

/// Streams the windows and the end record, reading old ranges from `old`.
fn windows<O: Read + Seek>(
    old: &mut O,
    delta: &mut dyn Read,
    out: &mut dyn Write,
    h: &Header,
) -> Result<u64, DeltaError> {
    let mut sink = Sink {
        out,
        hasher: Sha256::new(),
        written: 0,
    };
    let io_error = RefCell::new(None);
    let mut buf = vec![0u8; 1 << 16];
    for index in 0u64.. {
        let mut m = [0u8; 1];
        delta
            .read_exact(&mut m)
            .map_err(delta_err("a window record"))?;
        let method = Method::from_byte(m[0])
            .ok_or_else(|| corrupt(format!("window {index} has unknown method {}", m[0])))?;
        if method == Method::End {
            break;
        }
        let mut wb = [0u8; WINDOW_LEN - 1];
        delta
            .read_exact(&mut wb)
            .map_err(delta_err("a window record"))?;
        let w = Window::parse(method, &wb);
        check_window(&w, index, h, sink.written)?;
        let mut range = OldRange {
            inner: old,
            start: w.old_offset,
            len: w.old_len,
            pos: 0,
            inner_pos: None,
            io_error: &io_error,
        };
        let mut payload = BufReader::with_capacity(1 << 16, Read::take(&mut *delta, w.payload_len));
        // zstd-ref and x86-streams hold their whole old range (bounded by `check_window`).
        let mut prefix = Vec::new();
        if matches!(w.method, Method::ZstdRef | Method::X86Streams) {
            (&mut range)
                .take(w.old_len)
                .read_to_end(&mut prefix)
                .map_err(|e| window_err(e, index))?;
        }
        let res = match w.method {
            Method::Copy => pump(&mut range, &mut sink, w.new_len, &mut buf),
            Method::Zstd => zstd_window(&mut payload, None, &mut sink, &w, &mut buf),
            Method::ZstdRef => zstd_window(&mut payload, Some(&prefix), &mut sink, &w, &mut buf),
            Method::X86Streams => streams::decode(&prefix, &mut payload, w.new_len)
                .map_err(WinErr::Read)
                .and_then(|b| sink.put(&b).map_err(WinErr::Sink)),
            Method::Bidiff => bidiff_window(&mut payload, &mut range, &mut sink, &w, &mut buf),
            Method::End => Ok(()),
        };
        if let Some(source) = io_error.borrow_mut().take() {
            return Err(DeltaError::Io {
                path: OLD.into(),
                source,
            });
        }
        res.map_err(|e| match e {
            WinErr::Sink(e) => e,
            WinErr::Read(e) => window_err(e, index),
            WinErr::Length(s) => corrupt(format!("window {index} {s}")),
        })?;
        // The payload must be used up exactly.
        let extra = io::copy(&mut payload, &mut io::sink()).map_err(delta_err("a payload"))?;
        if extra > 0 {
            return Err(corrupt(format!(
                "window {index} has {extra} unused payload bytes"
            )));
        }
        if payload.into_inner().limit() > 0 {
            return Err(corrupt("it is truncated in a payload"));
        }
    }
    let mut digest = [0u8; 32];
    delta
        .read_exact(&mut digest)
        .map_err(delta_err("its end record"))?;
    if sink.written != h.new_size {
        return Err(corrupt(format!(
            "its windows make {} bytes, its header declares {}",
            sink.written, h.new_size
        )));
    }
    if sink.hasher.finalize().as_slice() != digest {
        return Err(corrupt(
            "the result does not match the delta's SHA-256 (was the delta made from this old file?)",
        ));
    }
    let mut extra = [0u8; 1];
    if format::read_full_or_end(delta, &mut extra).map_err(delta_err("its end"))? {
        return Err(corrupt("it has bytes after its end record"));
    }
    Ok(sink.written)
}

fn window_err(e: io::Error, index: u64) -> DeltaError {
    corrupt(format!("window {index} does not decode: {e}"))
}

fn check_window(w: &Window, index: u64, h: &Header, written: u64) -> Result<(), DeltaError> {
    if w.new_len > h.new_size - written {
        return Err(DeltaError::TooLarge {
            declared: h.new_size,
        });
    }
    if w.old_offset
        .checked_add(w.old_len)
        .is_none_or(|e| e > h.old_size)
    {
        return Err(corrupt(format!(
            "window {index} names old bytes {}+{} beyond the old file's {} bytes",
            w.old_offset, w.old_len, h.old_size
        )));
    }
    let ok = match w.method {
        Method::Copy => w.payload_len == 0 && w.old_len == w.new_len,
        Method::Zstd => w.old_len == 0,
        Method::ZstdRef => w.old_len <= REF_MAX,
        Method::X86Streams => {
            w.old_len <= streams::READ_OLD_MAX && w.new_len <= streams::READ_NEW_MAX
        }
        Method::Bidiff | Method::End => true,
    };
    if !ok {
        return Err(corrupt(format!(
            "window {index} has lengths a {} window cannot have",
            w.method.name()
        )));
    }
    Ok(())
}

enum WinErr {
    /// Writing the output failed.
    Sink(DeltaError),
    /// Decoding failed (bad payload or old range).
    Read(io::Error),
    /// The window made more or fewer bytes than declared.
    Length(String),
}

/// Moves exactly `len` bytes from `src` to the sink, refusing more or fewer.
fn pump(src: &mut dyn Read, sink: &mut Sink, len: u64, buf: &mut [u8]) -> Result<(), WinErr> {
    let mut left = len;
    loop {
        let want = (left + 1).min(buf.len() as u64) as usize;
        let n = match src.read(&mut buf[..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WinErr::Read(e)),
        };
        if n == 0 {
            break;
        }
        if n as u64 > left {
            return Err(WinErr::Length(format!(
                "makes more than its declared {len} bytes"
            )));
        }
        sink.put(&buf[..n]).map_err(WinErr::Sink)?;
        left -= n as u64;
    }
    if left > 0 {
        return Err(WinErr::Length(format!(
            "makes {} bytes, it declares {len}",
            len - left
        )));
    }
    Ok(())
}

fn zstd_window<R: BufRead>(
    payload: &mut R,
    prefix: Option<&[u8]>,
    sink: &mut Sink,
    w: &Window,
    buf: &mut [u8],
) -> Result<(), WinErr> {
    let d = match prefix {
        Some(p) => zstd::stream::read::Decoder::with_ref_prefix(payload, p),
        None => zstd::stream::read::Decoder::with_buffer(payload),
    };
    let mut d = d.map_err(WinErr::Read)?.single_frame();
    d.window_log_max(format::WINDOW_LOG_MAX)
        .map_err(WinErr::Read)?;
    pump(&mut d, sink, w.new_len, buf)
}

fn bidiff_window<R: BufRead, O: Read + Seek>(
    payload: &mut R,
    range: &mut OldRange<'_, O>,
    sink: &mut Sink,
    w: &Window,
    buf: &mut [u8],
) -> Result<(), WinErr> {
    let mut d = zstd::stream::read::Decoder::with_buffer(payload)
        .map_err(WinErr::Read)?
        .single_frame();
    d.window_log_max(format::WINDOW_LOG_MAX)
        .map_err(WinErr::Read)?;
    let mut src = BufReader::with_capacity(1 << 16, &mut d);
    let mut p = BlockReader::new(&mut src, range);
    pump(&mut p, sink, w.new_len, buf)?;
    drop(p);
    if !src.buffer().is_empty() {
        return Err(WinErr::Length("has patch bytes after its end".into()));
    }
    drop(src);
    // The zstd frame must end where the patch ends.
    let mut one = [0u8; 1];
    match d.read(&mut one) {
        Ok(0) => Ok(()),
        Ok(_) => Err(WinErr::Length("has patch bytes after its end".into())),
        Err(e) => Err(WinErr::Read(e)),
    }
}
