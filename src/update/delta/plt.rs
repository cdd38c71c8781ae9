//! Import stubs: which PLT stub of an ELF file jumps to which imported function, so that
//! the writer can pair the stubs of two releases by name (SPEC.md §11.6).
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
//! Only the writer reads this; the alignment record carries the result. It reads the
//! files the writer was given, bounded like `exe.rs`: every offset is checked against the
//! file, a symbol name is at most [`NAME_MAX`] bytes, and a name that binds more than one
//! stub is left out. A stub this misreads only costs size.

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
            b".dynsym" => &mut self.dynsym,
            b".dynstr" => &mut self.dynstr,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some((off, size, addr, entsize));
        }
    }
}

/// A file's stubs: the name of the symbol each binds, its address and its length.
fn stubs<'a>(b: &'a [u8], s: &Sections, arch: Machine) -> Vec<(&'a [u8], u64, u64)> {
    let bytes = |(off, size, _, _): (u64, u64, u64, u64)| {
        let at = usize::try_from(off).ok()?;
        b.get(at..at.checked_add(usize::try_from(size).ok()?)?)
    };
    let (Some(rela), Some(sym), Some(str)) = (
        s.rela_plt.and_then(bytes),
        s.dynsym.and_then(bytes),
        s.dynstr.and_then(bytes),
    ) else {
        return Vec::new();
    };
    let le = |b: &[u8], at: usize, n: usize| -> Option<u64> {
        let x = b.get(at..at.checked_add(n)?)?;
        Some(x.iter().rev().fold(0u64, |v, &c| (v << 8) | c as u64))
    };
    let name = |k: u64| -> Option<&'a [u8]> {
        let at = usize::try_from(k.checked_mul(24)?).ok()?;
        let rest = str.get(usize::try_from(le(sym, at, 4)?).ok()?..)?;
        let end = rest.iter().take(NAME_MAX).position(|&c| c == 0)?;
        (end > 0).then(|| &rest[..end])
    };
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
        let Some(code) = bytes(*sec) else { continue };
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

/// Stubs by name, a name that binds more than one stub mapped to `None`.
fn unique(v: Vec<(&[u8], u64, u64)>) -> HashMap<&[u8], Option<(u64, u64)>> {
    let mut m: HashMap<&[u8], Option<(u64, u64)>> = HashMap::new();
    for (n, va, len) in v {
        m.entry(n)
            .and_modify(|e| *e = None)
            .or_insert(Some((va, len)));
    }
    m
}

/// The stubs of `old` and `new` paired by the symbol they bind, as alignment segments,
/// with the address ranges of `old`'s stub sections (where these segments, and not the
/// alignment pass's matches, say where old bytes go).
pub fn pair(
    old: &[u8],
    so: &Sections,
    new: &[u8],
    sn: &Sections,
    arch: Machine,
) -> (Vec<Segment>, Vec<(u64, u64)>) {
    let (o, n) = (unique(stubs(old, so, arch)), unique(stubs(new, sn, arch)));
    let mut segs: Vec<Segment> = o
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
    segs.sort_by_key(|s| s.old_va);
    let ranges = match segs.is_empty() {
        true => Vec::new(),
        false => so
            .plt
            .iter()
            .flatten()
            .map(|&(_, size, addr, _)| (addr, addr.saturating_add(size)))
            .collect(),
    };
    (segs, ranges)
}
