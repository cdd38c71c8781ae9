//! Window planning: which range of the old file each window of the new file is diffed
//! against, so that no suffix array ever covers more than one bounded window.
//!
//! Two planners:
//! - GGUF-aware: when both files parse as GGUF, the header is one piece and each new
//!   tensor's bytes (with their alignment padding) are matched to the old tensor of the
//!   same name. Runs of tensors that moved by the same shift merge into one piece, so an
//!   edited chat template (every tensor shifted by a few bytes) is a handful of windows,
//!   nearly all byte-identical `copy` windows.
//! - Generic: content-defined anchors (a gear rolling hash, as in FastCDC) are indexed
//!   over the old file; each new window votes with its own anchors for the shift to the
//!   old file and is diffed against the old range at that shift, widened by a margin.
//!
//! Known gaps: data that moved farther than the margin and has no anchors in the window
//! (e.g. long runs of one byte) is diffed against the wrong old range and costs its
//! compressed size; a tensor renamed between versions is matched by position only.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use crate::gguf;

/// One window: new range, old range to diff against, and where in the old file the new
/// bytes would sit if unchanged (for the cheap `copy` check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub new_start: u64,
    pub new_len: u64,
    pub old_start: u64,
    pub old_len: u64,
    pub aligned: Option<u64>,
}

/// A contiguous new range mapped onto an old range.
#[derive(Debug, Clone, Copy)]
struct Piece {
    ns: u64,
    ne: u64,
    os: u64,
    oe: u64,
}

/// Plans GGUF windows, or `None` when either file is not a usable GGUF.
pub fn gguf_spans(
    old: &Path,
    new: &Path,
    old_size: u64,
    new_size: u64,
    window: u64,
    margin: u64,
) -> Option<Vec<Span>> {
    let oi = gguf::read_info(old).ok()?;
    let ni = gguf::read_info(new).ok()?;
    let olayout = layout(&oi, old_size)?;
    let nlayout = layout(&ni, new_size)?;
    let by_name: HashMap<&str, (u64, u64)> = olayout
        .tensors
        .iter()
        .rev()
        .map(|(n, s, e)| (n.as_str(), (*s, *e)))
        .collect();
    let shift = olayout.head_end as i128 - nlayout.head_end as i128;
    let mut pieces = vec![Piece {
        ns: 0,
        ne: nlayout.head_end,
        os: 0,
        oe: olayout.head_end,
    }];
    for (name, ns, ne) in &nlayout.tensors {
        let (os, oe) = match by_name.get(name.as_str()) {
            Some(r) => *r,
            None => {
                let s = (*ns as i128 + shift).clamp(0, old_size as i128) as u64;
                let e = (*ne as i128 + shift).clamp(0, old_size as i128) as u64;
                (s, e)
            }
        };
        let p = Piece {
            ns: *ns,
            ne: *ne,
            os,
            oe,
        };
        // Merge runs that moved together: same length, old contiguous. The header never
        // merges (its length changes when metadata is edited).
        if pieces.len() > 1 {
            if let Some(last) = pieces.last_mut() {
                let same_len = |q: &Piece| q.ne - q.ns == q.oe - q.os;
                if same_len(last) && same_len(&p) && last.oe == p.os && last.ne == p.ns {
                    last.ne = p.ne;
                    last.oe = p.oe;
                    continue;
                }
            }
        }
        pieces.push(p);
    }
    let mut spans = Vec::new();
    for p in pieces {
        split_piece(&p, old_size, window, margin, &mut spans);
    }
    Some(spans)
}

/// Header end and tensor byte ranges (sorted by offset, each up to the next tensor).
struct Layout {
    head_end: u64,
    tensors: Vec<(String, u64, u64)>,
}

fn layout(info: &gguf::GgufInfo, size: u64) -> Option<Layout> {
    if info.tensors.is_empty() || info.data_offset > size {
        return None;
    }
    let mut t: Vec<(String, u64)> = info
        .tensors
        .iter()
        .map(|t| Some((t.name.clone(), info.data_offset.checked_add(t.offset)?)))
        .collect::<Option<_>>()?;
    t.sort_by_key(|x| x.1);
    if t.iter().any(|x| x.1 > size) {
        return None;
    }
    let head_end = t[0].1;
    let mut tensors = Vec::with_capacity(t.len());
    for i in 0..t.len() {
        let end = t.get(i + 1).map_or(size, |x| x.1);
        tensors.push((std::mem::take(&mut t[i].0), t[i].1, end));
    }
    Some(Layout { head_end, tensors })
}

fn split_piece(p: &Piece, old_size: u64, window: u64, margin: u64, out: &mut Vec<Span>) {
    let nlen = p.ne - p.ns;
    let olen = p.oe.saturating_sub(p.os);
    if nlen == 0 {
        return;
    }
    if nlen <= window && olen <= window + 2 * margin {
        out.push(Span {
            new_start: p.ns,
            new_len: nlen,
            old_start: p.os,
            old_len: olen,
            aligned: (olen == nlen).then_some(p.os),
        });
        return;
    }
    let mut rel = 0;
    while rel < nlen {
        let len = window.min(nlen - rel);
        let center = p.os + rel.min(olen);
        let os = center.saturating_sub(margin).min(old_size);
        let oe = center.saturating_add(len + margin).min(old_size);
        out.push(Span {
            new_start: p.ns + rel,
            new_len: len,
            old_start: os,
            old_len: oe - os,
            aligned: (rel + len <= olen).then_some(p.os + rel),
        });
        rel += len;
    }
}

const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut i = 0;
    while i < 256 {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}

static GEAR: [u64; 256] = gear_table();

/// Most anchors the old-file index holds (bounds its memory, about 40 bytes each).
pub const ANCHORS_MAX: u64 = 2 << 20;

/// Rolling anchor finder: a position is an anchor when the gear hash of the 64 bytes
/// before it has its top `bits` bits zero, and it is at least `gap` past the last one.
struct Scanner {
    h: u64,
    mask_shift: u32,
    gap: u64,
    last: Option<u64>,
}

impl Scanner {
    fn new(bits: u32, gap: u64) -> Scanner {
        Scanner {
            h: 0,
            mask_shift: 64 - bits,
            gap,
            last: None,
        }
    }

    /// Feeds `data` that starts at absolute position `base`.
    fn feed(&mut self, data: &[u8], base: u64, mut f: impl FnMut(u64, u64)) {
        for (i, &b) in data.iter().enumerate() {
            self.h = (self.h << 1).wrapping_add(GEAR[b as usize]);
            let pos = base + i as u64;
            if self.h >> self.mask_shift == 0 && self.last.is_none_or(|l| pos >= l + self.gap) {
                self.last = Some(pos);
                f(pos, self.h);
            }
        }
    }
}

const AMBIGUOUS: u64 = u64::MAX;

/// Anchors of the old file: hash to position (or ambiguous).
pub struct Anchors {
    map: HashMap<u64, u64>,
    bits: u32,
    gap: u64,
}

impl Anchors {
    /// Indexes the old file, reading it once in 1 MiB pieces.
    pub fn index(old: &Path, old_size: u64, window: u64) -> io::Result<Anchors> {
        // About 16 anchors a window, at most one per 256 bytes, at most ANCHORS_MAX.
        let mut spacing = (window / 16).clamp(256, 4096).next_power_of_two();
        while old_size / spacing > ANCHORS_MAX {
            spacing *= 2;
        }
        let bits = spacing.trailing_zeros();
        let gap = spacing / 4;
        let mut map: HashMap<u64, u64> = HashMap::new();
        let mut sc = Scanner::new(bits, gap);
        let mut f = File::open(old)?;
        let mut buf = vec![0u8; 1 << 20];
        let mut base = 0u64;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sc.feed(&buf[..n], base, |pos, h| {
                if map.len() as u64 >= ANCHORS_MAX {
                    return;
                }
                map.entry(h).and_modify(|v| *v = AMBIGUOUS).or_insert(pos);
            });
            base += n as u64;
        }
        Ok(Anchors { map, bits, gap })
    }

    /// The shift (old position minus new position) most anchors of `new` (which starts at
    /// `new_start`) vote for, or `prev` when none match.
    pub fn shift_for(&self, new: &[u8], new_start: u64, prev: i64) -> i64 {
        let mut votes: HashMap<i64, u32> = HashMap::new();
        let mut sc = Scanner::new(self.bits, self.gap);
        sc.feed(new, new_start, |pos, h| {
            if let Some(&q) = self.map.get(&h) {
                if q != AMBIGUOUS {
                    *votes.entry(q as i64 - pos as i64).or_default() += 1;
                }
            }
        });
        votes
            .into_iter()
            .max_by_key(|(s, n)| (*n, std::cmp::Reverse(s.abs_diff(prev))))
            .map_or(prev, |(s, _)| s)
    }
}

/// The generic span for the new window at `new_start` of `new_len` bytes under `shift`.
pub fn generic_span(new_start: u64, new_len: u64, shift: i64, old_size: u64, margin: u64) -> Span {
    let center = new_start as i128 + shift as i128;
    let clamp = |x: i128| x.clamp(0, old_size as i128) as u64;
    let os = clamp(center - margin as i128);
    let oe = clamp(center + new_len as i128 + margin as i128);
    let aligned =
        (center >= 0 && center + new_len as i128 <= old_size as i128).then_some(center as u64);
    Span {
        new_start,
        new_len,
        old_start: os,
        old_len: oe - os,
        aligned,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Pseudo-random test bytes (xorshift64), also used by `encode.rs`'s and `scan.rs`'s
    /// tests.
    pub(in crate::update::delta) fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn anchors_find_an_insertion_shift() {
        let old = noise(1 << 20, 3);
        let mut new = old[..300_000].to_vec();
        new.extend_from_slice(&[9u8; 777]);
        new.extend_from_slice(&old[300_000..]);
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("old");
        std::fs::write(&p, &old).unwrap();
        let a = Anchors::index(&p, old.len() as u64, 64 << 10).unwrap();
        assert_eq!(a.shift_for(&new[..200_000], 0, 5), 0);
        assert_eq!(a.shift_for(&new[400_000..500_000], 400_000, 0), -777);
    }

    #[test]
    fn split_keeps_relative_offsets() {
        let mut out = Vec::new();
        let p = Piece {
            ns: 100,
            ne: 100 + 10_000,
            os: 50,
            oe: 50 + 10_000,
        };
        split_piece(&p, 20_000, 4096, 512, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1].new_start, 4196);
        assert_eq!(out[1].aligned, Some(4146));
        assert_eq!(out[1].old_start, 4146 - 512);
        assert_eq!(out.iter().map(|s| s.new_len).sum::<u64>(), 10_000);
    }
}
