//! The `x86-streams` method (SPEC.md §11.7): a window of an x86-64 ELF pair as LZMA
//! streams, each with the same part of the old range as its preset dictionary.
//!
//! The window's new bytes are cut into the code span (the executable sections, as the
//! writer found them) and the rest; the code is split into its field streams (`x86.rs`),
//! and the old range is cut and split the same way. Each of the eight parts is one raw
//! LZMA stream whose dictionary starts out holding the old part: where zstd-ref codes a
//! changed byte inside a match as a literal, LZMA codes it against the byte the match
//! predicts, which is what a recompiled function's register changes are.
//!
//! The writer tries it in zstd-ref's place, beside bidiff, on windows of at most
//! [`NEW_MAX`] new bytes (`encode.rs`). The parts are coded on the window's threads; the
//! bytes do not depend on how many.
//!
//! Hostile input: every length is checked against the window's before anything is
//! allocated, each LZMA stream must make exactly its declared length (its dictionary is
//! at most the old range plus that), and the field streams must join to exactly the code
//! span (`x86::join`).

use std::io::{self, Read, Write};

use lzma_rust2::{LzmaOptions, LzmaReader, LzmaWriter};

use super::blocks::{need_varint, put_varint};
use super::x86::{self, STREAMS};

/// Largest new window the writer tries this method on, and largest old range: LZMA's
/// optimal parse is the slow part. orjson's 0.25 MiB window takes 60 ms on two threads;
/// PyYAML's 2.4 MiB `_yaml` library (2 MiB of it DWARF) took 1.8 s where `xdelta3 -9`
/// takes 0.68 s for the whole file, and zstandard's 11 MiB one 10 s (0.65 MB against
/// 0.72 MB). Below 1 MiB is also where zstd-ref, whose place it takes, runs at level 19.
pub const NEW_MAX: u64 = 1 << 20;
pub const OLD_MAX: u64 = 2 * NEW_MAX;
/// Largest new window a reader decodes with this method, and largest old range (held in
/// memory, with the LZMA dictionaries: at most about 160 MiB in all).
pub const READ_NEW_MAX: u64 = 16 << 20;
pub const READ_OLD_MAX: u64 = 32 << 20;

/// Parts of a payload: the bytes outside the code span, then the code's field streams.
const PARTS: usize = 1 + STREAMS;

/// Literal context, literal position and position bits of each part's LZMA stream, as
/// `(lc, lp, pb)`, each the smallest of 13 settings tried on orjson 3.10.6 to 3.10.7
/// (LZMA nice length 273: a delta of 33,766 bytes against 34,247 with xz's default
/// (3, 0, 2) for the rest and (3, 0, 0) for the heads), and no worse on orjson 3.10.5 to
/// 3.10.6 and PyYAML 6.0.1 to 6.0.2: the 4-byte fields gain from position bits, every
/// part from little or no literal context (the match byte predicts better).
const PROPS: [(u32, u32, u32); PARTS] = [
    (1, 0, 0), // rest
    (0, 0, 0), // heads
    (0, 0, 0), // disp8
    (0, 2, 2), // disp32
    (0, 0, 0), // immediates
    (0, 0, 0), // rel8
    (0, 1, 1), // rel32
    (0, 2, 2), // RIP-relative
];

/// Where the code span is, in the window's old range and new bytes: `(start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spans {
    pub old: (usize, usize),
    pub new: (usize, usize),
}

/// Where the x86-64 code is in the two files (file offsets, `(start, end)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub old: (u64, u64),
    pub new: (u64, u64),
}

impl Code {
    /// The spans within a window whose old range starts at `old.0` and holds `old.1`
    /// bytes, and whose new bytes start at `new.0` and hold `new.1`; `None` when either
    /// holds no code.
    pub fn within(&self, old: (u64, usize), new: (u64, usize)) -> Option<Spans> {
        let cut = |(a, b): (u64, u64), (start, len): (u64, usize)| {
            let end = start.checked_add(len as u64)?;
            let (x, y) = (a.max(start), b.min(end));
            (x < y).then(|| ((x - start) as usize, (y - start) as usize))
        };
        Some(Spans {
            old: cut(self.old, old)?,
            new: cut(self.new, new)?,
        })
    }
}

/// The parts of `b` with its code span `span`, and the code's tail (`x86::split`).
fn parts(b: &[u8], span: (usize, usize)) -> ([Vec<u8>; PARTS], usize) {
    let ([h, d8, d32, i, r8, r32, rip], tail) = x86::split(&b[span.0..span.1]);
    let rest = [&b[..span.0], &b[span.1..]].concat();
    ([rest, h, d8, d32, i, r8, r32, rip], tail)
}

/// A dictionary size for LZMA that holds `dict` and `data` together.
fn dict_size(dict: usize, data: usize) -> u32 {
    ((dict + data).max(4096) as u64)
        .next_power_of_two()
        .min(u32::MAX as u64 / 2 + 1) as u32
}

/// LZMA's "nice length" (a match this long is taken without looking for a longer one):
/// on orjson, 273 (the most) made 33,766 bytes in 0.11 s, 128 33,805 in 0.09 s, 64 33,929
/// in 0.08 s; `xdelta3 -9` takes 0.11 s there.
const NICE_LEN: u32 = 128;

/// A part as raw LZMA with `dict` as preset dictionary; nothing for an empty part.
fn lzma(dict: &[u8], data: &[u8], (lc, lp, pb): (u32, u32, u32)) -> io::Result<Vec<u8>> {
    if data.is_empty() {
        return Ok(Vec::new());
    }
    let mut o = LzmaOptions::with_preset(9);
    o.dict_size = dict_size(dict.len(), data.len());
    (o.lc, o.lp, o.pb) = (lc, lp, pb);
    o.nice_len = NICE_LEN;
    o.preset_dict = Some(dict.to_vec());
    let mut w = LzmaWriter::new_no_header(Vec::new(), &o, false)?;
    w.write_all(data)?;
    w.finish()
}

/// Encodes `new` against `old` with the code spans `spans`, the parts on up to
/// `threads` threads.
pub fn encode(old: &[u8], new: &[u8], spans: Spans, threads: usize) -> io::Result<Vec<u8>> {
    let ((o, _), (n, tail)) = (parts(old, spans.old), parts(new, spans.new));
    let mut packed: Vec<io::Result<Vec<u8>>> = (0..PARTS).map(|_| Ok(Vec::new())).collect();
    // The largest parts first, dealt round the threads.
    let mut order: Vec<usize> = (0..PARTS).collect();
    order.sort_by_key(|&k| std::cmp::Reverse(n[k].len()));
    let threads = threads.clamp(1, PARTS);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<usize> = order.iter().copied().skip(t).step_by(threads).collect();
                let (o, n) = (&o, &n);
                s.spawn(move || {
                    mine.into_iter()
                        .map(|k| (k, lzma(&o[k], &n[k], PROPS[k])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(done) => done.into_iter().for_each(|(k, r)| packed[k] = r),
                Err(_) => packed[0] = Err(io::Error::other("an LZMA encoder panicked")),
            }
        }
    });
    let mut out = Vec::new();
    for x in [spans.old.0, spans.old.1, spans.new.0, spans.new.1, tail] {
        put_varint(&mut out, x as u64);
    }
    for (k, p) in packed.into_iter().enumerate() {
        let p = p?;
        put_varint(&mut out, n[k].len() as u64);
        put_varint(&mut out, p.len() as u64);
        out.extend_from_slice(&p);
    }
    Ok(out)
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Decodes a payload of `new_len` bytes against the window's old range `old`.
pub fn decode(old: &[u8], payload: &mut dyn Read, new_len: u64) -> io::Result<Vec<u8>> {
    if new_len > READ_NEW_MAX || old.len() as u64 > READ_OLD_MAX {
        return Err(bad(format!(
            "an x86-streams window of {new_len} new bytes against {} old bytes is larger than a reader accepts",
            old.len()
        )));
    }
    let new_len = new_len as usize;
    let mut span = [0usize; 5];
    for x in span.iter_mut() {
        *x = need_varint(payload)?.try_into().unwrap_or(usize::MAX);
    }
    let ok = |(a, b): (usize, usize), len: usize| a <= b && b <= len;
    let spans = Spans {
        old: (span[0], span[1]),
        new: (span[2], span[3]),
    };
    if !ok(spans.old, old.len()) || !ok(spans.new, new_len) {
        return Err(bad(
            "an x86-streams window names a code span outside it".into()
        ));
    }
    let (o, _) = parts(old, spans.old);
    let code_len = spans.new.1 - spans.new.0;
    let mut n: Vec<Vec<u8>> = Vec::with_capacity(PARTS);
    let mut total = 0usize;
    for (k, dict) in o.iter().enumerate() {
        let raw = need_varint(payload)?;
        let packed = need_varint(payload)?;
        total = total.saturating_add(usize::try_from(raw).unwrap_or(usize::MAX));
        // Every part of the code is at most the code; the rest is the rest.
        let room = if k == 0 { new_len - code_len } else { code_len };
        // The parts together are the window's bytes.
        if raw > room as u64 || total > new_len {
            return Err(bad(format!(
                "x86-streams part {k} declares {raw} bytes, more than its window holds"
            )));
        }
        if raw == 0 {
            if packed != 0 {
                return Err(bad(format!(
                    "x86-streams part {k} is empty but has packed bytes"
                )));
            }
            n.push(Vec::new());
            continue;
        }
        let (lc, lp, pb) = PROPS[k];
        let dict_size = dict_size(dict.len(), raw as usize);
        let mut r = LzmaReader::new(payload.take(packed), raw, lc, lp, pb, dict_size, Some(dict))?;
        let mut part = Vec::with_capacity(raw as usize);
        (&mut r).take(raw).read_to_end(&mut part)?;
        if part.len() as u64 != raw {
            return Err(bad(format!("x86-streams part {k} ends early")));
        }
        // The LZMA stream must use exactly its declared bytes.
        let mut left = r.into_inner();
        if io::copy(&mut left, &mut io::sink())? > 0 || left.limit() > 0 {
            return Err(bad(format!(
                "x86-streams part {k} does not fill its declared packed length"
            )));
        }
        n.push(part);
    }
    let streams: [&[u8]; STREAMS] = std::array::from_fn(|k| n[1 + k].as_slice());
    let code = x86::join(&streams, code_len, span[4]).map_err(|e| bad(e.to_string()))?;
    let rest = &n[0];
    if rest.len() != new_len - code_len {
        return Err(bad(format!(
            "x86-streams rest is {} bytes, its window leaves {}",
            rest.len(),
            new_len - code_len
        )));
    }
    let (a, _) = spans.new;
    let mut out = Vec::with_capacity(new_len);
    out.extend_from_slice(&rest[..a]);
    out.extend_from_slice(&code);
    out.extend_from_slice(&rest[a..]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::noise;
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let old = noise(20_000, 7);
        let mut new = old.clone();
        new[5_000..5_010].copy_from_slice(&[0x90; 10]);
        new.extend_from_slice(&noise(300, 9));
        let spans = Spans {
            old: (1_000, 15_000),
            new: (1_100, 15_300),
        };
        let p = encode(&old, &new, spans, 2).unwrap();
        assert!(p.len() < 2_000, "{}", p.len());
        assert_eq!(decode(&old, &mut &p[..], new.len() as u64).unwrap(), new);
        assert_eq!(encode(&old, &new, spans, 1).unwrap(), p);
        for cut in [0, 3, p.len() / 2, p.len() - 1] {
            assert!(decode(&old, &mut &p[..cut], new.len() as u64).is_err());
        }
        for at in 0..p.len() {
            let mut d = p.clone();
            d[at] ^= 0x41;
            // Damage is refused or makes other bytes (the end record's hash catches those).
            if let Ok(out) = decode(&old, &mut &d[..], new.len() as u64) {
                assert_eq!(out.len(), new.len());
            }
        }
        assert!(decode(&old, &mut &p[..], new.len() as u64 + 1).is_err());
    }

    /// `formats/delta.x86-streams.example.txt` is what the writer makes of its inputs,
    /// and decodes to its new bytes.
    #[test]
    fn the_worked_example_is_what_the_writer_makes() {
        let text = include_str!("../../../formats/delta.x86-streams.example.txt");
        let example: Vec<u8> = text
            .lines()
            .flat_map(|l| l.split('#').next().unwrap_or("").split_whitespace())
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        let rest = b"ELF header etc. ";
        let code = |call: u8, rip: u8| {
            [
                0xe8, call, 0, 0, 0, 0x8b, 0x05, rip, 0x33, 0x22, 0x11, 0x48, 0x83, 0xc4, 0x18,
                0xc3,
            ]
        };
        let old = [&rest[..], &code(0x10, 0x44)].concat();
        let new = [&rest[..], &code(0x14, 0x48)].concat();
        let spans = Spans {
            old: (16, 32),
            new: (16, 32),
        };
        assert_eq!(encode(&old, &new, spans, 2).unwrap(), example);
        assert_eq!(decode(&old, &mut &example[..], 32).unwrap(), new);
    }
}
