//! A hash index of the old range's [`SEED`]-byte strings, for bsdiff's scans of an ELF
//! pair of at least [`SEEDS_MIN`] (`scan.rs`): the alignment pass's sparse scan
//! ([`scan::Pace::Sparse`]) and the bidiff candidate's. It finds long matches without a
//! suffix sort.
//!
//! The alignment pass only has to find where code and data moved, which shows in long
//! matches; a sparse scan moves on past any match shorter than 16 bytes. A suffix array
//! finds the longest match of any length, but sorting one is most of the cost of a pair
//! that hardly changed (numpy's 7 MiB library: about 190 ms of CPU, where all of
//! `xdelta3 -9` takes 0.20 s). Here every position of the old range is hashed by its
//! first [`SEED`] bytes into a chained table (as zstd's and xdelta's matchers do). A
//! lookup compares the position where the scan's current match would continue, then
//! follows the needle's chain for at most [`CHAIN_MAX`] positions, most recent first, and
//! returns the longest, of equally long ones the nearest to where the current match would
//! continue (measured with the seeds in the alignment pass alone: without that rule,
//! zstandard's 11 MiB library made 758,957 bytes instead of 746,721; with 24 positions
//! instead of 64, 766,186; with 128, 744,116 and slower on duckdb; with the bidiff
//! candidate's too, 128 positions made zstandard 0.6 % and libarrow aarch64 1.1 % smaller,
//! 8 % slower). It is an approximation of the suffix array's answer:
//! a match shorter than [`SEED`] bytes is not found, and a seed that occurs more than
//! [`CHAIN_MAX`] times may hide an older, longer match (the scan finds it again at a
//! later lookup whose seed is rarer).
//!
//! Memory: 4 bytes per old byte for the chains and at most as much for the table's
//! heads. The table is built on one thread in one pass, so the index, and so the
//! matches, do not depend on the thread count.

use super::scan::{self, Lookup};

/// Smallest old range of an ELF pair that is looked up in hashed seeds rather than a
/// suffix array, by the alignment pass and by the bidiff candidate (`delta.rs`,
/// `encode.rs`). Measured on the bench's programs and libraries, against their suffix
/// arrays:
/// - the alignment pass: numpy's 7 MiB library 0.22 to 0.18 s for the whole delta
///   (`xdelta3 -9` 0.20 s), ruff x86-64 8.5 to 7.4 s, duckdb 10.2 to 7.7 s; deltas from
///   1.2 % smaller (ruff aarch64) to 0.4 % larger (libarrow);
/// - the bidiff candidate too: deltas 2.4 % (ruff aarch64) to 8.2 % (libarrow x86-64)
///   smaller, as the nearest of equally long matches keeps the diff's offsets steady, and
///   faster (libarrow x86-64 8.2 to 5.7 s, duckdb 7.5 to 6.3 s).
///
/// A small range sorts in a few milliseconds, and its suffix array also finds the short
/// and often repeated matches that a seed's chain misses: on a library of 1,500
/// near-identical functions with DWARF (550 KiB) the seeds made 1,760 bytes instead of
/// 1,452 at level 3 (alignment pass) and 1,482 instead of 1,379 at level 19 (bidiff). On
/// other data (a GGUF model's template edit) the suffix array's delta was smaller too
/// (308 bytes against 318), so other files keep it.
pub const SEEDS_MIN: usize = 1 << 20;

/// Bytes a match must share with the old range to be found: the hashed prefix.
pub const SEED: usize = 16;

/// Positions a lookup compares at most, following its seed's chain.
pub const CHAIN_MAX: usize = 64;

/// Hashed seeds of an old range.
pub struct Seeds<'a> {
    old: &'a [u8],
    /// Bits of the hash: the table has `1 << bits` heads.
    bits: u32,
    /// `head[h]`: one more than the last position whose seed hashes to `h`; 0 for none.
    head: Vec<u32>,
    /// `prev[p]`: one more than the position before `p` whose seed hashes as `p`'s; 0
    /// for none.
    prev: Vec<u32>,
}

impl<'a> Seeds<'a> {
    /// Hashes every seed of `old`. An old range of 4 GiB or more is refused (positions
    /// are held in 32 bits; windows are at most 1 GiB plus margins).
    pub fn new(old: &'a [u8]) -> std::io::Result<Seeds<'a>> {
        if u32::try_from(old.len()).is_err() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "an old range of 4 GiB or more cannot be hashed",
            ));
        }
        let seeds = old.len().saturating_sub(SEED - 1);
        // At most one head per position: a table no larger than the chains.
        let bits = (usize::BITS - seeds.max(1 << 10).leading_zeros() - 1).min(30);
        let mut head = vec![0u32; 1 << bits];
        let mut prev = vec![0u32; seeds];
        // The heads are read at random: fetch the one a few positions ahead while this
        // one is linked.
        const AHEAD: usize = 64;
        for (p, link) in prev.iter_mut().enumerate() {
            if p + AHEAD < seeds {
                scan::prefetch(&head, hash(old, p + AHEAD, bits));
            }
            let h = hash(old, p, bits);
            *link = head[h];
            head[h] = p as u32 + 1;
        }
        Ok(Seeds {
            old,
            bits,
            head,
            prev,
        })
    }
}

/// The hash of `b[p..p + SEED]` (which must be in range), `bits` wide.
fn hash(b: &[u8], p: usize, bits: u32) -> usize {
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let x = word(p) ^ word(p + 8).rotate_left(29);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
}

impl Lookup for Seeds<'_> {
    fn old(&self) -> &[u8] {
        self.old
    }

    /// The longest prefix of `needle` that starts at `near` or at one of the first
    /// [`CHAIN_MAX`] positions of its seed's chain, when it is at least [`SEED`] bytes long
    /// (of equally long ones, the nearest to `near`); position 0 and length 0 otherwise.
    fn longest(&self, needle: &[u8], near: usize) -> (usize, usize) {
        if needle.len() < SEED {
            return (0, 0);
        }
        let mut best = (0usize, 0usize);
        if let Some(o) = self.old.get(near..) {
            let l = scan::common(o, needle);
            if l >= SEED {
                best = (near, l);
            }
        }
        let mut next = self.head[hash(needle, 0, self.bits)];
        for _ in 0..CHAIN_MAX {
            let Some(p) = (next as usize).checked_sub(1) else {
                break;
            };
            let l = scan::common(&self.old[p..], needle);
            let closer = || p.abs_diff(near) < best.0.abs_diff(near);
            if l >= SEED && (l > best.1 || l == best.1 && closer()) {
                best = (p, l);
                if l == needle.len() {
                    break;
                }
            }
            next = self.prev[p];
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        super::super::plan::tests::noise(n, seed)
    }

    #[test]
    fn finds_long_matches_and_nothing_shorter_than_a_seed() {
        let old = noise(200_000, 3);
        let seeds = Seeds::new(&old).unwrap();
        for k in 0..300usize {
            let at = (k * 661) % (old.len() - 100);
            let len = SEED + k % 60;
            let mut needle = old[at..at + len].to_vec();
            needle.push(old[at + len] ^ 1);
            needle.extend_from_slice(&noise(20, k as u64));
            assert_eq!(seeds.longest(&needle, 0), (at, len), "needle {k}");
            // Shorter than a seed: not found, though it occurs.
            assert_eq!(seeds.longest(&old[at..at + SEED - 1], 0), (0, 0));
        }
        // A needle that occurs nowhere, and an empty old range.
        assert_eq!(seeds.longest(&noise(40, 99), 0), (0, 0));
        assert_eq!(Seeds::new(b"").unwrap().longest(&[0; 40], 0), (0, 0));
        let short = Seeds::new(&old[..SEED]).unwrap();
        let mut needle = old[..SEED].to_vec();
        needle.extend_from_slice(&[1, 2, 3]);
        assert_eq!(short.longest(&needle, 0), (0, SEED));
    }

    #[test]
    fn a_repeated_seed_yields_the_longest_of_its_latest_positions() {
        // The same 32 bytes at 10 places, followed by different lengths of agreement.
        let unit = noise(32, 7);
        let mut old = Vec::new();
        let mut places = Vec::new();
        for i in 0..10usize {
            old.extend_from_slice(&noise(100, 100 + i as u64));
            places.push(old.len());
            old.extend_from_slice(&unit);
            old.extend_from_slice(&vec![b'a'; i]);
            old.push(b'z');
        }
        let seeds = Seeds::new(&old).unwrap();
        let mut needle = unit.clone();
        needle.extend_from_slice(&[b'a'; 20]);
        assert_eq!(seeds.longest(&needle, 0), (places[9], 32 + 9));
    }
}
