//! The `bidiff` window's patch stream: bsdiff controls (add, copy, seek) grouped in blocks
//! of at most 4 MiB of output, each block storing its controls, then all its add bytes,
//! then all its copy bytes (SPEC.md §11.1). Zero runs in the add bytes (unchanged bytes, or
//! the gaps between relocated addresses in compiled code) are controls of their own and
//! store no add bytes.
//!
//! bsdiff compresses its three streams apart because add bytes (new minus old, mostly
//! zeros) and copy bytes (new literal data) compress far better alone than interleaved
//! (bipatch's one stream is about 1.5 times larger on compiled code). Whole-file streams
//! would make the reader buffer a whole window; blocks keep the gain with a bounded,
//! streaming reader (about 9 MiB). Known gaps: none known.

use std::io::{self, BufReader, Read, Seek, Write};

/// Most output bytes (adds plus copies) one block produces.
pub const BLOCK_MAX: usize = 4 << 20;
/// Most controls in one block.
pub const CONTROLS_MAX: usize = 1 << 16;

/// Zero runs of add bytes at least this long become `zero-add` controls (no add bytes):
/// zstd spends a few bytes on every 128 KiB block even of zeros, which adds up over the
/// long unchanged stretches of a window.
pub const ZERO_RUN_MIN: usize = 8;
/// The shorter zero-run threshold the encoder also tries on small windows (`encode.rs`):
/// more controls and fewer stored zeros, which wins on some programs and loses on others
/// (numpy's aarch64 library: a delta of 9,703 bytes against 10,096; zstandard's, mostly
/// DWARF: 3.8 % larger).
pub const ZERO_RUN_SHORT: usize = 2;

/// One control as stored: add length, whether its add bytes are all zero (and omitted),
/// copy length, seek.
type Ctrl = (u64, bool, u64, i64);

/// Collects bidiff controls and writes them as blocks to `w`.
pub struct BlockWriter<W: Write> {
    w: W,
    /// Zero runs of add bytes at least this long become zero-add controls.
    zero_run: usize,
    ctrls: Vec<Ctrl>,
    adds: Vec<u8>,
    copies: Vec<u8>,
    out: usize,
}

impl<W: Write> BlockWriter<W> {
    pub fn new(w: W) -> Self {
        Self::with_zero_run(w, ZERO_RUN_MIN)
    }

    /// A writer whose zero-add controls are runs of at least `zero_run` (≥ 1) zero bytes.
    pub fn with_zero_run(w: W, zero_run: usize) -> Self {
        BlockWriter {
            w,
            zero_run: zero_run.max(1),
            ctrls: Vec::new(),
            adds: Vec::new(),
            copies: Vec::new(),
            out: 0,
        }
    }

    fn push(&mut self, add: &[u8], zero: bool, copy: &[u8], seek: i64) -> io::Result<()> {
        self.ctrls
            .push((add.len() as u64, zero, copy.len() as u64, seek));
        if !zero {
            self.adds.extend_from_slice(add);
        }
        self.copies.extend_from_slice(copy);
        self.out += add.len() + copy.len();
        if self.out >= BLOCK_MAX || self.ctrls.len() >= CONTROLS_MAX {
            self.flush_block()?;
        }
        Ok(())
    }

    /// Emits one piece of a control, splitting it across blocks when it does not fit.
    fn piece(&mut self, mut add: &[u8], zero: bool, mut copy: &[u8], seek: i64) -> io::Result<()> {
        loop {
            let room = BLOCK_MAX - self.out;
            if add.len() + copy.len() <= room {
                return self.push(add, zero, copy, seek);
            }
            if add.len() >= room {
                self.push(&add[..room], zero, &[], 0)?;
                add = &add[room..];
            } else {
                let k = room - add.len();
                self.push(add, zero, &copy[..k], 0)?;
                add = &[];
                copy = &copy[k..];
            }
        }
    }

    /// Adds one control: its add bytes cut into zero runs and the rest, then its copy
    /// bytes and seek.
    pub fn control(&mut self, c: &bidiff::Control) -> io::Result<()> {
        let add = c.add;
        let mut start = 0;
        let mut i = 0;
        while i < add.len() {
            if add[i] != 0 {
                i += 1;
                continue;
            }
            let run_end = add[i..]
                .iter()
                .position(|b| *b != 0)
                .map_or(add.len(), |k| i + k);
            if run_end - i >= self.zero_run && run_end < add.len() {
                if start < i {
                    self.piece(&add[start..i], false, &[], 0)?;
                }
                self.piece(&add[i..run_end], true, &[], 0)?;
                start = run_end;
            } else if run_end - i >= self.zero_run {
                // A zero run ends the add: it carries the copy and seek.
                if start < i {
                    self.piece(&add[start..i], false, &[], 0)?;
                }
                return self.piece(&add[i..], true, c.copy, c.seek);
            }
            i = run_end;
        }
        self.piece(&add[start..], false, c.copy, c.seek)
    }

    fn flush_block(&mut self) -> io::Result<()> {
        if self.ctrls.is_empty() {
            return Ok(());
        }
        let mut head = Vec::with_capacity(10 + self.ctrls.len() * 12);
        put_varint(&mut head, self.ctrls.len() as u64);
        // Column by column: each field compresses best next to its own kind, and the
        // lengths of stored adds and of zero runs are two different kinds.
        head.extend(self.ctrls.iter().map(|c| c.1 as u8));
        for zero in [false, true] {
            for &(a, _, _, _) in self.ctrls.iter().filter(|c| c.1 == zero) {
                put_varint(&mut head, a);
            }
        }
        for &(_, _, c, _) in &self.ctrls {
            put_varint(&mut head, c);
        }
        for &(_, _, _, s) in &self.ctrls {
            put_varint(&mut head, ((s << 1) ^ (s >> 63)) as u64);
        }
        self.w.write_all(&head)?;
        self.w.write_all(&self.adds)?;
        self.w.write_all(&self.copies)?;
        self.ctrls.clear();
        self.adds.clear();
        self.copies.clear();
        self.out = 0;
        Ok(())
    }

    pub fn finish(mut self) -> io::Result<W> {
        self.flush_block()?;
        Ok(self.w)
    }
}

pub(super) fn put_varint(v: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        v.push(x as u8 | 0x80);
        x >>= 7;
    }
    v.push(x as u8);
}

fn bad(s: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, s.to_owned())
}

/// Reads a LEB128 u64; `Ok(None)` on a clean end before its first byte.
fn get_varint(r: &mut dyn Read) -> io::Result<Option<u64>> {
    let mut x = 0u64;
    for i in 0..10 {
        let mut b = [0u8; 1];
        if r.read(&mut b)? == 0 {
            return if i == 0 {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        let part = (b[0] & 0x7f) as u64;
        if i == 9 && part > 1 {
            return Err(bad("a varint overflows 64 bits"));
        }
        x |= part << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(x));
        }
    }
    Err(bad("a varint overflows 64 bits"))
}

pub(super) fn need_varint(r: &mut dyn Read) -> io::Result<u64> {
    get_varint(r)?.ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
}

/// Reads a length, refusing one larger than a block.
fn need_len(r: &mut dyn Read) -> io::Result<usize> {
    let x = need_varint(r)?;
    if x > BLOCK_MAX as u64 {
        return Err(bad("a block is larger than 4 MiB"));
    }
    Ok(x as usize)
}

/// Streams the new bytes of a block stream read from `src` against the old range `old`
/// (a cursor that starts at 0; reads or seeks outside it fail).
pub struct BlockReader<'a, O> {
    src: &'a mut dyn Read,
    old: BufReader<&'a mut O>,
    out: Vec<u8>,
    at: usize,
    ctrls: Vec<(usize, bool, usize, i64)>,
    adds: Vec<u8>,
}

impl<'a, O: Read + Seek> BlockReader<'a, O> {
    pub fn new(src: &'a mut dyn Read, old: &'a mut O) -> Self {
        BlockReader {
            src,
            old: BufReader::with_capacity(1 << 16, old),
            out: Vec::new(),
            at: 0,
            ctrls: Vec::new(),
            adds: Vec::new(),
        }
    }

    /// Decodes the next block into `out`; false at the end of the stream.
    fn next_block(&mut self) -> io::Result<bool> {
        let Some(n) = get_varint(self.src)? else {
            return Ok(false);
        };
        if n == 0 || n > CONTROLS_MAX as u64 {
            return Err(bad("a block has an implausible number of controls"));
        }
        self.ctrls.clear();
        // Output bytes, stored add bytes, copy bytes.
        let (mut out_total, mut add_total) = (0usize, 0usize);
        let mut flags = vec![0u8; n as usize];
        self.src.read_exact(&mut flags)?;
        for f in flags {
            if f > 1 {
                return Err(bad("a control has an unknown kind"));
            }
            self.ctrls.push((0, f == 1, 0, 0));
        }
        for zero in [false, true] {
            for ctrl in self.ctrls.iter_mut().filter(|c| c.1 == zero) {
                ctrl.0 = need_len(self.src)?;
            }
        }
        for ctrl in self.ctrls.iter_mut() {
            ctrl.2 = need_len(self.src)?;
        }
        for ctrl in self.ctrls.iter_mut() {
            let z = need_varint(self.src)?;
            ctrl.3 = ((z >> 1) as i64) ^ -((z & 1) as i64);
        }
        for &(a, zero, c, _) in &self.ctrls {
            out_total += a + c;
            if !zero {
                add_total += a;
            }
            if out_total > BLOCK_MAX {
                return Err(bad("a block is larger than 4 MiB"));
            }
        }
        self.adds.resize(add_total, 0);
        self.src.read_exact(&mut self.adds)?;
        self.out.resize(out_total, 0);
        let mut add_at = 0;
        let mut o = 0;
        // Copy bytes come after all add bytes: read them straight into place afterwards.
        let mut copy_slots = Vec::with_capacity(self.ctrls.len());
        for &(a, zero, c, s) in &self.ctrls {
            let dst = &mut self.out[o..o + a];
            self.old.read_exact(dst)?;
            if !zero {
                for (d, x) in dst.iter_mut().zip(&self.adds[add_at..add_at + a]) {
                    *d = d.wrapping_add(*x);
                }
                add_at += a;
            }
            o += a;
            copy_slots.push((o, c));
            o += c;
            if s == i64::MIN {
                return Err(bad("a seek is out of range"));
            }
            if s != 0 {
                self.old.seek_relative(s)?;
            }
        }
        for (at, c) in copy_slots {
            self.src.read_exact(&mut self.out[at..at + c])?;
        }
        self.at = 0;
        Ok(true)
    }
}

impl<O: Read + Seek> Read for BlockReader<'_, O> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.out.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn varints_round_trip_and_refuse_overflow() {
        for x in [0u64, 1, 127, 128, 300, u64::MAX] {
            let mut v = Vec::new();
            put_varint(&mut v, x);
            assert_eq!(get_varint(&mut Cursor::new(&v)).unwrap(), Some(x));
        }
        assert!(get_varint(&mut Cursor::new(&[0xff; 11])).is_err());
        assert_eq!(get_varint(&mut Cursor::new(&[])).unwrap(), None);
    }

    #[test]
    fn a_split_control_still_decodes() {
        let old = vec![1u8; BLOCK_MAX + 10];
        let add = vec![2u8; BLOCK_MAX + 10];
        let copy = vec![7u8; 300];
        let mut w = BlockWriter::new(Vec::new());
        w.control(&bidiff::Control {
            add: &add,
            copy: &copy,
            seek: -5,
        })
        .unwrap();
        let stream = w.finish().unwrap();
        let mut src = Cursor::new(stream);
        let mut o = Cursor::new(old);
        let mut out = Vec::new();
        BlockReader::new(&mut src, &mut o)
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out.len(), BLOCK_MAX + 310);
        assert!(out[..BLOCK_MAX + 10].iter().all(|b| *b == 3));
        assert!(out[BLOCK_MAX + 10..].iter().all(|b| *b == 7));
    }

    #[test]
    fn zero_runs_are_stored_without_add_bytes() {
        let old: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut add = vec![0u8; 9_000];
        add[10] = 1;
        add[5000] = 2;
        let mut w = BlockWriter::new(Vec::new());
        w.control(&bidiff::Control {
            add: &add,
            copy: b"xyz",
            seek: 3,
        })
        .unwrap();
        let stream = w.finish().unwrap();
        // Only the short non-zero pieces' add bytes are stored.
        assert!(stream.len() < 300, "{} bytes", stream.len());
        let mut out = Vec::new();
        let mut o = Cursor::new(old.clone());
        BlockReader::new(&mut Cursor::new(stream), &mut o)
            .read_to_end(&mut out)
            .unwrap();
        let mut want = old[..9_000].to_vec();
        want[10] = want[10].wrapping_add(1);
        want[5000] = want[5000].wrapping_add(2);
        want.extend_from_slice(b"xyz");
        assert_eq!(out, want);
    }
}
