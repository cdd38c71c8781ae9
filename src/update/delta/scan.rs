//! bsdiff's scan (Percival, "Naive differences of executable code", 2003) over a suffix
//! array of the old range, producing the matches that `bidiff::Translator` turns into
//! add, copy and seek controls.
//!
//! The scan walks the new bytes and, wherever the current old offset stops explaining
//! them, looks up the longest prefix of what follows in the old range. On compiled code
//! that lookup runs at almost every byte (a changed call displacement every few dozen
//! bytes breaks every exact match), so it is the whole cost. `bidiff::diff` binary-searches
//! the whole suffix array and compares the whole needle at every step; here:
//! - the search starts in the bucket of the needle's first two bytes (a table of 65,537
//!   suffix-array offsets), which removes about half the steps;
//! - each step skips the prefix already known to match at both ends of the interval
//!   (Manber and Myers' bound: every suffix between two others shares at least the smaller
//!   of their common prefixes with the needle), and compares eight bytes at a time;
//! - each step prefetches what the next step may read (the two candidate middles' text
//!   and the suffix-array slots of the step after): the search waits on memory, not on
//!   compares (ruff x86-64: 25.4 s to 19.6 s for the whole delta, same bytes);
//! - the new range is cut into [`CHUNKS`] pieces of equal length, each scanned from a
//!   fresh state against the whole old range, so a second thread can scan the odd pieces
//!   while the caller's thread scans and emits the even ones. The pieces do not depend on
//!   the thread count, so neither do the matches.
//! - a [`Pace::Sparse`] scan (the ELF alignment pass's) moves on several bytes after a
//!   short match instead of one.
//!
//! Memory: the suffix array (4 bytes per old byte, as bidiff's) and the table (256 KiB).
//! A piece scanned ahead by the helper thread is held as 16-byte records, at most one per
//! [`HELD_PER_MATCH`] bytes of the piece (with two pieces held at most, 1/8 of the new
//! range; ruff's pieces need one per 130 to 200 bytes); a piece that would need more is
//! dropped and scanned again by the caller, which streams it.
//!
//! The suffix array is built by libsais (induced sorting; about half of divsufsort's time
//! on ruff, and the same array: a text has one suffix array). [`Index::split`] sorts the
//! two halves of the old range apart, on two threads: the ELF alignment pass's index
//! (numpy's 7 MiB library: the sort 190 to about 100 ms; a match then ends at the cut).
//!
//! Known gaps: the sort of a whole range runs on one thread (libsais's OpenMP sort was
//! measured: 184 to 177 ms on numpy with two threads, as it waits on memory); the search
//! is still over half of a program delta's CPU time.

use std::io;
use std::sync::mpsc;

use bidiff::Match;

/// Pieces the new range is scanned in, when it is at least [`CHUNK_MIN`] bytes long.
pub const CHUNKS: usize = 4;

/// Shortest new range cut into pieces: below it, the scan is one piece.
pub const CHUNK_MIN: usize = 1 << 20;

/// The helper thread holds at most one match record per this many bytes of a piece.
pub const HELD_PER_MATCH: usize = 64;

/// Extra matching bytes a new old offset must explain, over the current one, to be taken
/// (bsdiff's constant).
const BETTER_BY: isize = 8;

/// How closely [`diff`] looks for matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// bsdiff's scan: a lookup at every byte until one finds a better match than the
    /// current offset (or the same one).
    Exact,
    /// After a lookup that finds fewer than [`SPARSE_SHORT`] bytes, the next is
    /// [`SPARSE_STRIDE`] bytes on. Changed code (a new displacement every few bytes)
    /// costs most of bsdiff's lookups and finds only short matches there; where code and
    /// data moved, which the ELF alignment pass wants, shows in the long ones. On ruff's
    /// 29 MiB x86-64 program the alignment pass's scan took 1.1 s instead of 3.6 s (two
    /// threads), and the delta grew 0.9 % (aarch64: 2.2 %; libarrow and duckdb under 0.3 %).
    /// It is a heuristic: on a small library of 1,500 near-identical functions it finds
    /// less of the debug sections' shifts than bsdiff's scan (that library's delta with
    /// DWARF 1,452 bytes instead of 1,240); `delta.rs` uses it for the alignment pass and
    /// bsdiff's scan for the deltas themselves.
    Sparse,
}

/// A [`Pace::Sparse`] lookup that finds fewer bytes than this moves on [`SPARSE_STRIDE`].
const SPARSE_SHORT: usize = 16;
/// How far a [`Pace::Sparse`] scan moves on after a short match.
const SPARSE_STRIDE: usize = 8;

/// The suffix arrays of an old range: of the whole range, or of its parts sorted apart
/// ([`Index::split`]).
pub struct Index<'a> {
    old: &'a [u8],
    parts: Vec<Part<'a>>,
}

/// The suffix array of `text`, which starts at `start` in the old range, with its
/// two-byte bucket table.
struct Part<'a> {
    start: usize,
    text: &'a [u8],
    sa: Vec<i32>,
    /// `bucket[k]`: the first suffix-array slot whose [`key`] is `k` or more;
    /// `bucket[KEYS]` is the length.
    bucket: Vec<u32>,
}

/// Bits of the bucket key: the first bits of a suffix's first three bytes (bytes past the
/// end taken as 0, which keeps the keys in suffix order). 16 (the first two bytes) was
/// measured faster than 22 on ruff: the larger table misses the cache itself.
const KEY_BITS: u32 = 16;
const KEYS: usize = 1 << KEY_BITS;

fn key(b: &[u8], p: usize) -> usize {
    let at = |i: usize| b.get(p + i).copied().unwrap_or(0) as usize;
    (at(0) << 16 | at(1) << 8 | at(2)) >> (24 - KEY_BITS)
}

/// Asks the CPU to bring `v[i]` into the cache (a hint: nothing when `i` is out of range
/// or the target has no such instruction).
#[inline(always)]
pub(super) fn prefetch<T>(v: &[T], i: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(x) = v.get(i) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of every x86-64 CPU, and a prefetch reads nothing: it only
        // hints at an address (here one inside `v`).
        unsafe { _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (v, i);
}

/// Length of the common prefix of `a` and `b`, eight bytes at a time.
pub(super) fn common(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().unwrap_or([0; 8]));
        let y = u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        if x != y {
            return i + ((x ^ y).trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < n && a[i] == b[i] {
        i += 1;
    }
    i
}

/// What bsdiff's scan asks of an index of the old range: a suffix array ([`Index`]), or
/// for an ELF pair of at least `seeds::SEEDS_MIN` bytes (the alignment pass's sparse
/// scan and the bidiff candidate's) a hash of its 16-byte strings (`seeds::Seeds`).
pub trait Lookup: Sync {
    /// The old range.
    fn old(&self) -> &[u8];
    /// An old position and the length of a longest prefix of `needle` found there
    /// (position 0 and length 0 when none is found). `near`: where the scan's current
    /// offset puts the needle in the old range, which an index may prefer among equally
    /// long matches.
    fn longest(&self, needle: &[u8], near: usize) -> (usize, usize);
}

impl Lookup for Index<'_> {
    fn old(&self) -> &[u8] {
        self.old
    }

    fn longest(&self, needle: &[u8], _near: usize) -> (usize, usize) {
        Index::longest(self, needle)
    }
}

impl<'a> Index<'a> {
    /// Sorts the suffixes of `old`. An old range of 2 GiB or more is refused (libsais
    /// would panic on it; windows are at most 1 GiB plus margins).
    pub fn new(old: &'a [u8]) -> io::Result<Index<'a>> {
        Ok(Index {
            old,
            parts: vec![Part::sort(0, old)?],
        })
    }

    /// Sorts the suffixes of `old` in [`SPLIT_PARTS`] parts of equal length (one when it
    /// is under [`CHUNK_MIN`]), each on its own thread when `threads` allows: the sorts
    /// wait on memory, and two run on two cores as fast as one on one, where libsais's
    /// own parallel sort barely gains. A match found in it ends where its part ends (the
    /// parts, so the matches, do not depend on `threads`); each lookup searches every part.
    pub fn split(old: &'a [u8], threads: usize) -> io::Result<Index<'a>> {
        let n = match old.len() < CHUNK_MIN {
            true => 1,
            false => SPLIT_PARTS,
        };
        let step = old.len().div_ceil(n).max(1);
        let ranges: Vec<(usize, usize)> = (0..old.len())
            .step_by(step)
            .map(|s| (s, (s + step).min(old.len())))
            .collect();
        let sort = |&(s, e): &(usize, usize)| Part::sort(s, &old[s..e]);
        let parts = match threads > 1 && ranges.len() > 1 {
            true => std::thread::scope(|sc| {
                let rest: Vec<_> = ranges[1..]
                    .iter()
                    .map(|r| sc.spawn(move || sort(r)))
                    .collect();
                let mut parts = vec![sort(&ranges[0])];
                for h in rest {
                    parts.push(
                        h.join()
                            .unwrap_or_else(|_| Err(io::Error::other("a suffix sort panicked"))),
                    );
                }
                parts.into_iter().collect::<io::Result<Vec<_>>>()
            })?,
            false => ranges.iter().map(sort).collect::<io::Result<Vec<_>>>()?,
        };
        Ok(Index { old, parts })
    }

    /// The old position and length of the longest prefix of `needle` that occurs in one
    /// part of the old range (position 0 and length 0 when not even its first byte does);
    /// of equally long ones, the first part's.
    pub fn longest(&self, needle: &[u8]) -> (usize, usize) {
        let mut best = (0, 0);
        for part in &self.parts {
            let (p, l) = part.longest(needle);
            if l > best.1 {
                best = (part.start + p, l);
            }
        }
        best
    }
}

/// Parts that [`Index::split`] sorts apart.
pub const SPLIT_PARTS: usize = 2;

impl<'a> Part<'a> {
    fn sort(start: usize, old: &'a [u8]) -> io::Result<Part<'a>> {
        if i32::try_from(old.len()).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an old range of 2 GiB or more cannot be suffix-sorted",
            ));
        }
        let mut sa = vec![0i32; old.len()];
        if !old.is_empty() {
            libsais::SuffixArrayConstruction::for_text(old)
                .in_borrowed_buffer(&mut sa[..])
                .single_threaded()
                .run()
                .map_err(|e| io::Error::other(format!("suffix sort failed: {e:?}")))?;
        }
        let mut bucket = vec![0u32; KEYS + 1];
        for p in 0..old.len() {
            bucket[key(old, p) + 1] += 1;
        }
        for k in 0..KEYS {
            bucket[k + 1] += bucket[k];
        }
        Ok(Part {
            start,
            text: old,
            sa,
            bucket,
        })
    }

    fn suffix(&self, slot: usize) -> (usize, &'a [u8]) {
        let p = self.sa[slot] as usize;
        (p, &self.text[p..])
    }

    /// The position in `text` and length of the longest prefix of `needle` that occurs
    /// in it (position 0 and length 0 when not even its first byte does).
    fn longest(&self, needle: &[u8]) -> (usize, usize) {
        let Some(&first) = needle.first() else {
            return (0, 0);
        };
        let lo_of = |k: usize| self.bucket[k] as usize;
        // All suffixes that start with byte `f`.
        let first_range = |f: u8| {
            let k = (f as usize) << (KEY_BITS - 8);
            (lo_of(k), lo_of(k + (1 << (KEY_BITS - 8))))
        };
        if needle.len() * 8 >= KEY_BITS as usize {
            let k = key(needle, 0);
            let (lo, hi) = (lo_of(k), lo_of(k + 1));
            if lo < hi {
                let (p, l) = self.search(needle, lo, hi);
                // Under the key's whole bytes, a suffix of another bucket may share as many.
                if l * 8 >= KEY_BITS as usize {
                    return (p, l);
                }
            }
        }
        let (lo, hi) = first_range(first);
        if lo == hi {
            return (0, 0);
        }
        self.search(needle, lo, hi)
    }

    /// The longest common prefix of `needle` with the suffixes in slots `lo..hi` (not
    /// empty): a binary search keeping the common prefix with each end.
    fn search(&self, needle: &[u8], mut lo: usize, mut hi: usize) -> (usize, usize) {
        hi -= 1;
        let (pl, sl) = self.suffix(lo);
        let (ph, sh) = self.suffix(hi);
        let (mut cl, mut ch) = (common(needle, sl), common(needle, sh));
        let (mut best_l, mut best_h) = (pl, ph);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let skip = cl.min(ch);
            // The next step compares one of the two halves' middles: fetch their suffix
            // offsets and the text they point to now, while this step compares.
            let (m1, m2) = (lo + (mid - lo) / 2, mid + (hi - mid) / 2);
            prefetch(self.text, self.sa[m1] as usize + skip);
            prefetch(self.text, self.sa[m2] as usize + skip);
            prefetch(&self.sa, lo + (m1 - lo) / 2);
            prefetch(&self.sa, m1 + (mid - m1) / 2);
            prefetch(&self.sa, mid + (m2 - mid) / 2);
            prefetch(&self.sa, m2 + (hi - m2) / 2);
            let (pm, sm) = self.suffix(mid);
            let c = skip + common(&needle[skip..], &sm[skip..]);
            if c == needle.len() {
                return (pm, c);
            }
            if c == sm.len() || sm[c] < needle[c] {
                (lo, cl, best_l) = (mid, c, pm);
            } else {
                (hi, ch, best_h) = (mid, c, pm);
            }
        }
        // On a tie, the smaller suffix: measured 0.7 % smaller than the greater one on
        // ruff's x86-64 delta.
        if cl >= ch {
            (best_l, cl)
        } else {
            (best_h, ch)
        }
    }
}

/// A match as held between threads (the window is under 2 GiB, so offsets fit in 32 bits).
#[derive(Clone, Copy)]
struct Held {
    old: u32,
    new: u32,
    add: u32,
    copy_end: u32,
}

impl From<&Match> for Held {
    fn from(m: &Match) -> Held {
        Held {
            old: m.add_old_start as u32,
            new: m.add_new_start as u32,
            add: m.add_length as u32,
            copy_end: m.copy_end as u32,
        }
    }
}

impl From<&Held> for Match {
    fn from(h: &Held) -> Match {
        Match {
            add_old_start: h.old as usize,
            add_new_start: h.new as usize,
            add_length: h.add as usize,
            copy_end: h.copy_end as usize,
        }
    }
}

/// Scans all of `new` against `idx`'s old range and calls `on_match` with bsdiff's
/// matches in order (at `pace`), covering `new` from 0 to its end. With `threads` > 1 a
/// second thread scans the odd pieces; the matches are the same either way.
pub fn diff<E>(
    idx: &impl Lookup,
    new: &[u8],
    pace: Pace,
    threads: usize,
    mut on_match: impl FnMut(Match) -> Result<(), E>,
) -> Result<(), E> {
    let pieces = pieces(new.len());
    if threads < 2 || pieces.len() < 2 {
        for &(s, e) in &pieces {
            scan_piece(idx, new, (s, e), pace, usize::MAX, &mut on_match)?;
        }
        return Ok(());
    }
    std::thread::scope(|sc| {
        // One piece waits in the channel while the helper scans the next: two held at most.
        let (tx, rx) = mpsc::sync_channel::<Option<Vec<Held>>>(1);
        let odd: Vec<(usize, usize)> = pieces.iter().copied().skip(1).step_by(2).collect();
        sc.spawn(move || {
            for (s, e) in odd {
                let cap = (e - s) / HELD_PER_MATCH + 1;
                let mut held = Vec::new();
                let full = scan_piece(idx, new, (s, e), pace, cap, &mut |m: Match| {
                    held.push(Held::from(&m));
                    Ok::<(), std::convert::Infallible>(())
                });
                let sent = matches!(full, Ok(true)).then_some(held);
                if tx.send(sent).is_err() {
                    return;
                }
            }
        });
        for (i, &(s, e)) in pieces.iter().enumerate() {
            if i % 2 == 1 {
                if let Ok(Some(held)) = rx.recv() {
                    for h in &held {
                        on_match(h.into())?;
                    }
                    continue;
                }
            }
            scan_piece(idx, new, (s, e), pace, usize::MAX, &mut on_match)?;
        }
        Ok(())
    })
}

/// bsdiff's matches of a whole new range against an old range, recorded to be given again
/// without the suffix sort or the scan: the ELF alignment pass's sparse matches predict
/// the unpreprocessed way's size, and an alignment that moves nothing hands bsdiff's scan
/// of its index to the unpreprocessed way (`delta.rs`). 16 bytes a match (about one per
/// 130 to 200 bytes of a program).
pub struct Recorded {
    held: Vec<Held>,
    old_len: usize,
    new_len: usize,
}

impl Recorded {
    /// Scans all of `new` against `idx`'s old range, as [`diff`] does, keeping the
    /// matches. A new range of 4 GiB or more is refused (offsets are held in 32 bits).
    pub fn scan(idx: &impl Lookup, new: &[u8], pace: Pace, threads: usize) -> io::Result<Recorded> {
        if u32::try_from(new.len()).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a new range of 4 GiB or more cannot be recorded",
            ));
        }
        let mut held = Vec::new();
        diff(idx, new, pace, threads, |m| {
            held.push(Held::from(&m));
            Ok::<(), io::Error>(())
        })?;
        Ok(Recorded {
            held,
            old_len: idx.old().len(),
            new_len: new.len(),
        })
    }

    /// Whether these were scanned from a range of `new_len` bytes against one of
    /// `old_len` (the caller knows whether they are the same bytes). A [`Pace::Sparse`]
    /// scan's matches serve an alignment or a prediction, not a delta that is kept.
    pub fn fits(&self, old_len: usize, new_len: usize) -> bool {
        (self.old_len, self.new_len) == (old_len, new_len)
    }

    /// The matches, in the order [`diff`] gave them.
    pub fn matches(&self) -> impl Iterator<Item = Match> + '_ {
        self.held.iter().map(Match::from)
    }
}

fn pieces(n: usize) -> Vec<(usize, usize)> {
    if n < CHUNK_MIN {
        return vec![(0, n)];
    }
    let step = n.div_ceil(CHUNKS);
    (0..n)
        .step_by(step)
        .map(|s| (s, (s + step).min(n)))
        .collect()
}

/// Score of extending a match by `len` bytes of which `same` agree: bsdiff keeps the
/// length where twice the agreeing bytes minus the length is highest.
fn score(same: usize, len: usize) -> isize {
    2 * same as isize - len as isize
}

/// Scans `new[start..end]` as if it were the whole new file (matches never reach past
/// `end`), giving matches with offsets in `new`. Returns `Ok(false)` without giving the
/// rest once `cap` matches were given and another is due, and the first error of
/// `on_match`.
fn scan_piece<E>(
    idx: &impl Lookup,
    new: &[u8],
    (start, end): (usize, usize),
    pace: Pace,
    cap: usize,
    on_match: &mut impl FnMut(Match) -> Result<(), E>,
) -> Result<bool, E> {
    let old = idx.old();
    let nb = &new[start..end];
    let n = nb.len();
    // Whether old[i + off] equals nb[i], for an offset that may point outside old.
    let agrees = |i: usize, off: isize| -> bool {
        let o = i as isize + off;
        o >= 0 && (o as usize) < old.len() && old[o as usize] == nb[i]
    };
    let (mut scan, mut len, mut pos) = (0usize, 0usize, 0usize);
    let (mut last_scan, mut last_pos, mut last_off) = (0usize, 0usize, 0isize);
    let mut given = 0usize;
    while scan < n {
        let mut old_score = 0isize;
        scan += len;
        let mut counted = scan;
        while scan < n {
            let near = (scan as isize + last_off).max(0) as usize;
            (pos, len) = idx.longest(&nb[scan..], near);
            while counted < scan + len {
                old_score += agrees(counted, last_off) as isize;
                counted += 1;
            }
            if (len as isize == old_score && len != 0) || len as isize > old_score + BETTER_BY {
                break;
            }
            // Move on one byte (a sparse scan: several after a short match), taking the
            // bytes passed out of the current offset's count.
            let step = match pace {
                Pace::Sparse if len < SPARSE_SHORT => SPARSE_STRIDE.min(n - scan),
                _ => 1,
            };
            for s in scan..(scan + step).min(counted) {
                old_score -= agrees(s, last_off) as isize;
            }
            scan += step;
            counted = counted.max(scan);
        }
        if len as isize == old_score && scan != n {
            continue;
        }
        // Extend the previous match forward from last_scan, and this one backward from
        // scan, keeping the lengths of best score.
        let mut fwd = {
            let (mut same, mut best, mut at) = (0, 0isize, 0);
            for i in 0..(scan - last_scan).min(old.len() - last_pos) {
                same += (old[last_pos + i] == nb[last_scan + i]) as usize;
                if score(same, i + 1) > best {
                    (best, at) = (score(same, i + 1), i + 1);
                }
            }
            at
        };
        let mut back = if scan >= n {
            0
        } else {
            let (mut same, mut best, mut at) = (0, 0isize, 0);
            for i in 1..=(scan - last_scan).min(pos) {
                same += (old[pos - i] == nb[scan - i]) as usize;
                if score(same, i) > best {
                    (best, at) = (score(same, i), i);
                }
            }
            at
        };
        if last_scan + fwd > scan - back {
            // The two extensions overlap: split the overlap where the previous match
            // explains the most bytes over this one.
            let overlap = last_scan + fwd - (scan - back);
            let (mut s, mut best, mut cut) = (0isize, 0isize, 0);
            for i in 0..overlap {
                let a = last_scan + fwd - overlap + i;
                s += (nb[a] == old[last_pos + fwd - overlap + i]) as isize;
                s -= (nb[scan - back + i] == old[pos - back + i]) as isize;
                if s > best {
                    (best, cut) = (s, i + 1);
                }
            }
            fwd = fwd + cut - overlap;
            back -= cut;
        }
        if given == cap {
            return Ok(false);
        }
        given += 1;
        on_match(Match {
            add_old_start: last_pos,
            add_new_start: start + last_scan,
            add_length: fwd,
            copy_end: start + scan - back,
        })?;
        last_scan = scan - back;
        last_pos = pos - back;
        last_off = pos as isize - scan as isize;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_longest(old: &[u8], needle: &[u8]) -> usize {
        (0..old.len())
            .map(|p| common(&old[p..], needle))
            .max()
            .unwrap_or(0)
    }

    /// `plan.rs`'s test bytes over an alphabet of `alphabet` symbols (a small one makes
    /// long repeats, and many suffixes share their first bytes).
    fn noise(n: usize, seed: u64, alphabet: u8) -> Vec<u8> {
        let mut v = super::super::plan::tests::noise(n, seed);
        v.iter_mut().for_each(|b| *b %= alphabet);
        v
    }

    #[test]
    fn longest_finds_the_longest_prefix_anywhere() {
        for (seed, alphabet) in [(1, 2), (2, 3), (3, 4), (4, 255)] {
            let old = noise(3000, seed, alphabet);
            let idx = Index::new(&old).unwrap();
            for k in 0..300u64 {
                let mut needle = noise(1 + (k as usize % 40), seed * 1000 + k, alphabet);
                if k % 3 == 0 {
                    // A needle that starts with old bytes, then differs.
                    let at = (k as usize * 7) % 2900;
                    needle = old[at..at + 20].to_vec();
                    needle.push(alphabet.wrapping_add(1));
                }
                let (p, l) = idx.longest(&needle);
                assert_eq!(l, naive_longest(&old, &needle), "seed {seed} needle {k}");
                assert_eq!(common(&old[p..], &needle), l, "position agrees with length");
            }
        }
        assert_eq!(Index::new(b"").unwrap().longest(b"abc"), (0, 0));
        assert_eq!(Index::new(b"zzz").unwrap().longest(b"abc"), (0, 0));
        assert_eq!(Index::new(b"xa").unwrap().longest(b"ab").1, 1);
        assert_eq!(Index::new(b"b").unwrap().longest(b"b").1, 1);
    }

    #[test]
    fn a_split_index_finds_the_longest_prefix_within_a_part() {
        let old = noise(3 << 20, 5, 4);
        let split = Index::split(&old, 2).unwrap();
        assert_eq!(split.parts.len(), SPLIT_PARTS);
        let one_thread = Index::split(&old, 1).unwrap();
        let half = old.len().div_ceil(2);
        let whole = Index::new(&old).unwrap();
        for k in 0..200u64 {
            let at = (k as usize * 15_733) % (old.len() - 64);
            let mut needle = old[at..at + 40].to_vec();
            needle.push(9);
            let (p, l) = split.longest(&needle);
            assert_eq!((p, l), one_thread.longest(&needle), "needle {k}");
            match at + 40 <= half || at >= half {
                true => assert_eq!(l, 40, "needle {k} at {at}"),
                false => assert!(l >= half - at, "needle {k} at {at}: {l}"),
            }
            assert_eq!(common(&old[p..], &needle[..l]), l, "needle {k}");
            // Within one part: never past the end of the first.
            assert!(p >= half || p + l <= half, "needle {k}: {p} + {l}");
            assert!(l <= whole.longest(&needle).1, "needle {k}");
        }
        // A needle that only occurs across the cut is found up to it.
        let across = old[half - 20..half + 20].to_vec();
        assert_eq!(whole.longest(&across), (half - 20, 40));
        let (_, l) = split.longest(&across);
        assert!((20..40).contains(&l), "{l}");
        // Under CHUNK_MIN, one part: the same as the whole index.
        let small = noise(4000, 6, 3);
        let (s, w) = (
            Index::split(&small, 2).unwrap(),
            Index::new(&small).unwrap(),
        );
        assert_eq!(s.parts.len(), 1);
        assert_eq!(s.longest(&small[100..150]), w.longest(&small[100..150]));
    }

    /// Applies matches the way `bidiff::Translator` and bspatch do.
    fn patch(old: &[u8], new: &[u8], ms: &[Match]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in ms {
            assert_eq!(m.add_new_start, out.len(), "matches cover new in order");
            for i in 0..m.add_length {
                let d = new[m.add_new_start + i].wrapping_sub(old[m.add_old_start + i]);
                out.push(old[m.add_old_start + i].wrapping_add(d));
            }
            out.extend_from_slice(&new[m.copy_start()..m.copy_end]);
        }
        out
    }

    #[test]
    fn matches_cover_the_new_file_and_do_not_depend_on_threads() {
        let old = noise(3 << 20, 9, 16);
        let mut new = old.clone();
        // Insert, rewrite with small changes every 30 bytes, move a block.
        new.splice(1000..1000, noise(5000, 10, 16));
        for i in (1 << 20..2 << 20).step_by(30) {
            new[i] ^= 0x5a;
        }
        new.extend_from_slice(&old[100..70_000]);
        let idx = Index::new(&old).unwrap();
        let mut runs = Vec::new();
        for (pace, threads) in [
            (Pace::Exact, 1),
            (Pace::Exact, 2),
            (Pace::Sparse, 1),
            (Pace::Sparse, 2),
        ] {
            let mut ms = Vec::new();
            diff(&idx, &new, pace, threads, |m| {
                ms.push(m);
                Ok::<(), ()>(())
            })
            .unwrap();
            assert_eq!(patch(&old, &new, &ms), new);
            let added: usize = ms.iter().map(|m| m.add_length).sum();
            assert!(
                added > new.len() * 9 / 10,
                "most bytes come from old: {added}"
            );
            runs.push(
                ms.iter()
                    .map(|m| (m.add_old_start, m.add_new_start, m.add_length, m.copy_end))
                    .collect::<Vec<_>>(),
            );
        }
        assert_eq!(runs[0], runs[1]);
        assert_eq!(runs[2], runs[3]);
        // The sparse scan lands on the same long matches: the moved block at the end.
        let tail = |r: &[(usize, usize, usize, usize)]| *r.last().unwrap();
        assert_eq!(tail(&runs[2]).0, tail(&runs[0]).0);
    }
}
