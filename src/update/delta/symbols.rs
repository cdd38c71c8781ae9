//! What the writer pairs between two releases of an ELF file by symbol name: PLT stubs,
//! dynamic symbol table entries and GOT slots (SPEC.md §11.6).
//!
//! A program calls an imported function through its PLT stub, and the stubs sit in the
//! order of `.rela.plt`. When a release imports one more function, or the linker orders
//! the imports differently, stubs change places without changing their bytes, and every
//! call to a stub that moved changes its displacement. numpy 1.26.3 to 1.26.4 has no other
//! change of layout: 7,000 calls in 5 MiB of code, each one or two changed bytes, most of
//! that pair's delta. The alignment pass cannot see it (a stub is 16 bytes, and the
//! stubs at one place are byte for byte alike in both files), so the writer pairs the
//! stubs of the two files by the symbol they bind and makes each pair a segment of the
//! alignment: old' then calls the stub of the same function, as the new file does.
//!
//! Likewise a symbol added to `.dynsym` moves every later entry, and each relocation that
//! names a later symbol changes its index (record kind 4 rewrites the index through the
//! list of `.dynsym`). Entries differ in their name offsets too, so matches place them
//! poorly; the writer pairs them by name instead. And code loads the address of an
//! imported variable from its `.got` slot: when the slots change order (their values all
//! change, so matches miss them), every load of a moved slot changes; the writer pairs
//! the slots by the symbol their relocation binds (and hands `exe.rs` those that a
//! relative relocation fills, which it pairs by the address they hold).
//!
//! Only the writer reads this; the alignment record carries the result. It reads the
//! files the writer was given, bounded like `exe.rs`: every offset is checked against the
//! file, a symbol name is at most [`NAME_MAX`] bytes, and a name that more than one stub or
//! entry of a file has is left out. What this misreads only costs size.

use std::collections::HashMap;

use super::exe::{Machine, Segment};

/// Longest symbol name read.
const NAME_MAX: usize = 4096;

/// Where a file keeps what this reads: file offset, size, address, entry size.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sections {
    /// `.plt`, and `.plt.sec` (the stubs that calls reach when the file has one).
    plt: [Option<(u64, u64, u64, u64)>; 2],
    rela_plt: Option<(u64, u64, u64, u64)>,
    rela_dyn: Option<(u64, u64, u64, u64)>,
    got: Option<(u64, u64, u64, u64)>,
    dynsym: Option<(u64, u64, u64, u64)>,
    dynstr: Option<(u64, u64, u64, u64)>,
}

impl Sections {
    /// Notes the section called `name` if it is one of them.
    pub fn note(&mut self, name: &[u8], off: u64, size: u64, addr: u64, entsize: u64) {
        let slot = match name {
            b".plt" => &mut self.plt[0],
            b".plt.sec" => &mut self.plt[1],
            b".rela.plt" => &mut self.rela_plt,
            b".rela.dyn" => &mut self.rela_dyn,
            b".got" => &mut self.got,
            b".dynsym" => &mut self.dynsym,
            b".dynstr" => &mut self.dynstr,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some((off, size, addr, entsize));
        }
    }
}

/// The bytes of section `sec` (file offset, size, ...) of `b`, when they are in it.
fn bytes(b: &[u8], (off, size, _, _): (u64, u64, u64, u64)) -> Option<&[u8]> {
    let at = usize::try_from(off).ok()?;
    b.get(at..at.checked_add(usize::try_from(size).ok()?)?)
}

fn le(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let x = b.get(at..at.checked_add(n)?)?;
    Some(x.iter().rev().fold(0u64, |v, &c| (v << 8) | c as u64))
}

/// The name of each `.dynsym` entry (`None` for no name or one this cannot read).
fn names<'a>(b: &'a [u8], s: &Sections) -> Vec<Option<&'a [u8]>> {
    let (Some(sym), Some(str)) = (
        s.dynsym.and_then(|x| bytes(b, x)),
        s.dynstr.and_then(|x| bytes(b, x)),
    ) else {
        return Vec::new();
    };
    sym.chunks_exact(24)
        .map(|e| {
            let rest = str.get(usize::try_from(le(e, 0, 4)?).ok()?..)?;
            let end = rest.iter().take(NAME_MAX).position(|&c| c == 0)?;
            (end > 0).then(|| &rest[..end])
        })
        .collect()
}

/// A file's stubs: the name of the symbol each binds, its address and its length.
fn stubs<'a>(
    b: &'a [u8],
    s: &Sections,
    names: &[Option<&'a [u8]>],
    arch: Machine,
) -> Vec<(&'a [u8], u64, u64)> {
    let Some(rela) = s.rela_plt.and_then(|x| bytes(b, x)) else {
        return Vec::new();
    };
    let name = |k: u64| names.get(usize::try_from(k).ok()?).copied().flatten();
    // The GOT slot each import's stub jumps through, and the import's name.
    let mut slot_name = HashMap::new();
    for e in rela.chunks_exact(24) {
        let (Some(off), Some(info)) = (le(e, 0, 8), le(e, 8, 8)) else {
            continue;
        };
        if let Some(n) = name(info >> 32).filter(|_| info >> 32 != 0) {
            slot_name.insert(off, n);
        }
    }
    let mut out = Vec::new();
    for sec in s.plt.iter().flatten() {
        let (_, size, addr, entsize) = *sec;
        let Some(code) = bytes(b, *sec) else { continue };
        let ent = if (8..=64).contains(&entsize) {
            entsize
        } else {
            16
        };
        let mut i = 0usize;
        while i + 8 <= code.len() {
            let pc = addr.wrapping_add(i as u64);
            // The GOT slot this instruction loads its jump target from, and its length.
            let got = match arch {
                // jmp *disp32(%rip)
                Machine::X86_64 if code[i] == 0xFF && code[i + 1] == 0x25 => le(code, i + 2, 4)
                    .map(|d| (pc.wrapping_add(6).wrapping_add(d as u32 as i32 as u64), 6)),
                // adrp x16, page; ldr x17, [x16, #lo12]
                Machine::Aarch64 if i.is_multiple_of(4) => {
                    let (a, l) = (le(code, i, 4).unwrap_or(0), le(code, i + 4, 4).unwrap_or(0));
                    (a & 0x9F00_001F == 0x9000_0010 && l & 0xFFC0_03FF == 0xF940_0211).then(|| {
                        let imm = (((a >> 5) & 0x7FFFF) << 2) | ((a >> 29) & 3);
                        let page = ((imm << 43) as i64 >> 31) as u64;
                        let lo = ((l >> 10) & 0xFFF) * 8;
                        ((pc & !0xFFF).wrapping_add(page).wrapping_add(lo), 8)
                    })
                }
                _ => None,
            };
            match got.and_then(|(g, len)| Some((*slot_name.get(&g)?, len))) {
                Some((n, len)) => {
                    let start = i as u64 / ent * ent;
                    if start + ent <= size {
                        out.push((n, addr.wrapping_add(start), ent));
                    }
                    i = (start + ent).max(i as u64 + len) as usize;
                }
                None => i += 1,
            }
        }
    }
    out
}

/// The named entries of a symbol table (name, index).
fn entries<'a>(v: &[Option<&'a [u8]>]) -> Vec<(&'a [u8], u64)> {
    v.iter()
        .enumerate()
        .filter_map(|(k, n)| Some(((*n)?, k as u64)))
        .collect()
}

/// Items by name, a name that more than one item has mapped to `None`.
fn unique<'a, T>(v: impl IntoIterator<Item = (&'a [u8], T)>) -> HashMap<&'a [u8], Option<T>> {
    let mut m = HashMap::new();
    for (n, x) in v {
        m.entry(n)
            .and_modify(|e: &mut Option<T>| *e = None)
            .or_insert(Some(x));
    }
    m
}

/// What [`pair`] found.
#[derive(Debug, Default)]
pub struct Paired {
    /// The `.got` slots that a relocation binds to a symbol, paired by the symbol's name,
    /// as alignment segments.
    pub got: Vec<Segment>,
    /// The `.got` slots that a relative relocation fills, of each file: the slot's address
    /// and the address it holds (the writer pairs them where the alignment maps one to
    /// the other).
    pub got_relative: [Vec<(u64, u64)>; 2],
    /// The stubs of the old file and the new paired, as alignment segments.
    pub stubs: Vec<Segment>,
    /// The address ranges of the old file's stub sections: there these segments, and not
    /// the alignment pass's matches, say where old bytes go.
    pub stub_ranges: Vec<(u64, u64)>,
    /// The `.dynsym` entries paired, as segments in offsets from each file's section.
    pub dynsym: Vec<Segment>,
}

/// The stubs and dynamic symbols of `old` and `new` paired by name.
pub fn pair(old: &[u8], so: &Sections, new: &[u8], sn: &Sections, arch: Machine) -> Paired {
    let (no, nn) = (names(old, so), names(new, sn));
    let o = unique(
        stubs(old, so, &no, arch)
            .into_iter()
            .map(|(n, va, len)| (n, (va, len))),
    );
    let n = unique(
        stubs(new, sn, &nn, arch)
            .into_iter()
            .map(|(n, va, len)| (n, (va, len))),
    );
    let mut stubs: Vec<Segment> = o
        .iter()
        .filter_map(|(name, &a)| {
            let (ova, olen) = a?;
            let (nva, nlen) = (*n.get(name)?)?;
            (olen == nlen).then_some(Segment {
                old_va: ova,
                new_va: nva,
                len: olen,
            })
        })
        .collect();
    stubs.sort_by_key(|s| s.old_va);
    // Only the sections that hold a paired stub (with `.plt.sec`, calls reach no stub of
    // `.plt`, whose matches then stand).
    let stub_ranges = so
        .plt
        .iter()
        .flatten()
        .map(|&(_, size, addr, _)| (addr, addr.saturating_add(size)))
        .filter(|&(lo, hi)| stubs.iter().any(|s| (lo..hi).contains(&s.old_va)))
        .collect();
    let ne = unique(entries(&nn));
    let mut dynsym: Vec<Segment> = unique(entries(&no))
        .into_iter()
        .filter_map(|(name, k)| Some((k?, (*ne.get(name)?)?)))
        .chain((!no.is_empty() && !nn.is_empty()).then_some((0, 0)))
        .map(|(k, j)| Segment {
            old_va: k * 24,
            new_va: j * 24,
            len: 24,
        })
        .collect();
    dynsym.sort_by_key(|s| s.old_va);
    let (go, gn) = (got_slots(old, so, &no, arch), got_slots(new, sn, &nn, arch));
    let by_name = unique(gn.0);
    let mut got: Vec<Segment> = unique(go.0)
        .into_iter()
        .filter_map(|(name, o)| {
            Some(Segment {
                old_va: o?,
                new_va: (*by_name.get(name)?)?,
                len: 8,
            })
        })
        .collect();
    got.sort_by_key(|s| s.old_va);
    Paired {
        stubs,
        stub_ranges,
        dynsym,
        got,
        got_relative: [go.1, gn.1],
    }
}

/// A file's `.got` slots from `.rela.dyn`: those bound to a named symbol (`GLOB_DAT` or a
/// 64-bit absolute relocation: name, slot), and those a relative relocation fills (slot,
/// addend).
#[allow(clippy::type_complexity)]
fn got_slots<'a>(
    b: &'a [u8],
    s: &Sections,
    names: &[Option<&'a [u8]>],
    arch: Machine,
) -> (Vec<(&'a [u8], u64)>, Vec<(u64, u64)>) {
    let (Some(rela), Some((_, size, addr, _))) = (s.rela_dyn.and_then(|x| bytes(b, x)), s.got)
    else {
        return Default::default();
    };
    let (glob, abs, relative) = match arch {
        Machine::X86_64 => (6, 1, 8),
        Machine::Aarch64 => (1025, 257, 1027),
    };
    let (mut named, mut rel) = (Vec::new(), Vec::new());
    for e in rela.chunks_exact(24) {
        let (Some(off), Some(info), Some(addend)) = (le(e, 0, 8), le(e, 8, 8), le(e, 16, 8)) else {
            continue;
        };
        if off < addr || off - addr >= size {
            continue;
        }
        let (sym, ty) = (info >> 32, info & 0xFFFF_FFFF);
        if ty == relative {
            rel.push((off, addend));
        } else if ty == glob || ty == abs {
            let name = names
                .get(usize::try_from(sym).unwrap_or(usize::MAX))
                .copied();
            if let Some(n) = name.flatten() {
                named.push((n, off));
            }
        }
    }
    (named, rel)
}
