//! Executable-aware preprocessing for deltas of ELF programs and libraries (SPEC.md §11.6).
//!
//! When a patch grows one function, every call, jump and RIP-relative load that crosses it
//! changes its displacement, and every absolute pointer past it changes its value: a few
//! changed bytes every few dozen, which byte-level diffs pay for. Here the writer aligns the
//! old image with the new one (matched segments in virtual-address space, taken from a
//! first bsdiff pass over the whole files, PLT stubs paired by the function they bind,
//! `symbols.rs`, and FDEs paired by the function they describe), sends that alignment in the delta, and both
//! sides compute **old'**: the old file with each reference whose source and target lie in
//! matched segments rewritten to the value it would have in the new layout. The windows
//! then encode new against old', where moved code matches byte for byte.
//!
//! Which positions are rewritten is decided from the old file and the alignment alone, so
//! the reader computes the same old' ([`Relocated`] does it block by block, holding one
//! 64 KiB block). Candidates: x86-64 `call`/`jmp`/`jcc` rel32, `call`/`jmp [rip+d]` and
//! common RIP-relative loads, stores and `lea` (found by pattern, as Zucchini's rel32
//! finder does, without a full decoder); aarch64 `b`/`bl`, `b.cond`, `cbz`/`cbnz`, and
//! `adrp` followed by `add`/`ldr` on the same register; 8-byte pointers in writable data
//! (`.data.rel.ro`, `.got`, init arrays), `r_offset`/`r_addend` of RELA entries and
//! `st_value` of symbols; with record kind 2, the unwind tables' offsets (`unwind.rs`);
//! with kind 3, the DWARF debug sections' addresses too (`dwarf.rs`); with kind 4,
//! symbols' name offsets and relocations' symbol indices too (through alignments of the
//! string tables and of `.dynsym`, which `symbols.rs` pairs by name), and more x86-64
//! forms: rip-relative operands followed by an immediate, more ALU and SSE operations,
//! VEX-encoded ones (`cmp qword [rip+d], imm8` alone was 20,000 changed bytes of
//! libarrow's code), and on aarch64 an `adrp` paired with the `add`, load or store that
//! completes its address within the next 16 words (compilers schedule them apart). A
//! false candidate
//! only costs size: the windows still make the exact new file, checked by the end
//! record's SHA-256.
//!
//! Hostile input: the ELF header is read with every offset and count checked against the
//! file size and fixed caps; arithmetic never overflows; the alignment read from a delta is
//! capped at [`SEGMENTS_MAX`] segments and must be sorted and non-overlapping. Known gaps:
//! ELF64 little-endian only (no PE or Mach-O, no 32-bit); only files that fit in one
//! window are preprocessed; RELR relocations and DWARF 5's offset pairs are not rewritten; debug
//! sections still cost most of a library's delta when they are there (zstandard's 11 MiB
//! library: 752 KB, where the same pair stripped makes 90 KB).

use std::io::{self, Read, Seek, SeekFrom, Write};

use super::dwarf::{self, Debug};
use super::symbols;
use super::unwind::{self, Tables};

/// Old' is computed in blocks of this many bytes at fixed file offsets; a reference that
/// straddles a block boundary is left as it is.
pub const BLOCK: u64 = 64 << 10;
/// Most alignment segments a delta may carry (24 bytes each in memory).
pub const SEGMENTS_MAX: usize = 1 << 20;
/// Largest alignment record payload a reader accepts.
pub const PAYLOAD_MAX: u64 = 16 << 20;
/// Matched stretches shorter than this do not become alignment segments.
const MATCH_MIN: usize = 128;
/// A gap of at most this many bytes between two segments at the same shift is bridged.
const GAP_MAX: u64 = 256;
/// A target at most this many bytes before a segment moves with it.
const NEAR: u64 = 32;
/// Pointer-sized values below this are never treated as addresses.
const ADDR_MIN: u64 = 4096;

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    X86_64,
    Aarch64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Executable instructions.
    Code,
    /// Writable data that holds 8-byte pointers.
    Pointers,
    /// RELA entries (24 bytes).
    Rela,
    /// Symbol table entries (24 bytes).
    Symbols,
}

#[derive(Debug, Clone, Copy)]
struct Section {
    kind: Kind,
    off: u64,
    size: u64,
    addr: u64,
    /// With record kind 4: the list ([`NAME_LISTS`]) that maps what its entries name: the
    /// string table of a symbol table's `st_name`, the dynamic symbol table of a RELA
    /// section's symbol index.
    names: Option<usize>,
}

/// With record kind 4, the lists after the debug sections' ([`dwarf::TARGETS`]): the
/// alignments of `.strtab`, `.dynstr` and `.dynsym`, in offsets from each one's start.
pub const NAME_LISTS: usize = 3;
const STRTAB: usize = dwarf::TARGETS;
const DYNSTR: usize = dwarf::TARGETS + 1;
const DYNSYM: usize = dwarf::TARGETS + 2;

#[derive(Debug, Clone, Copy)]
struct Load {
    off: u64,
    filesz: u64,
    vaddr: u64,
}

/// What the preprocessing needs from an ELF file's headers.
#[derive(Debug, Clone)]
pub struct Layout {
    pub machine: Machine,
    sections: Vec<Section>,
    loads: Vec<Load>,
    /// The largest allocated, writable, non-TLS `NOBITS` section (`.bss`): address, size.
    bss: Option<(u64, u64)>,
    /// The unwind tables, when `PT_GNU_EH_FRAME` leads to a header this reads.
    unwind: Option<Tables>,
    /// The DWARF debug sections' address fields, when it has some (`dwarf.rs`).
    debug: Option<Debug>,
    /// Where its debug sections are.
    debug_sections: dwarf::Sections,
    /// Where its PLT stubs and dynamic symbols are (`symbols.rs`).
    pub plt: symbols::Sections,
    /// Where its `.strtab`, `.dynstr` and `.dynsym` are (file offset, size), for the
    /// writer's [`NAME_LISTS`].
    named: [Option<(u64, u64)>; NAME_LISTS],
}

/// One matched stretch: `len` bytes at `old_va` in the old image sit at `new_va` in the new.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub old_va: u64,
    pub new_va: u64,
    pub len: u64,
}

fn le(b: &[u8], at: usize, n: usize) -> u64 {
    b[at..at + n]
        .iter()
        .rev()
        .fold(0u64, |x, &y| (x << 8) | y as u64)
}

impl Layout {
    /// Parses the headers of an ELF64 little-endian x86-64 or aarch64 file of `size`
    /// bytes through `read_at`; `Ok(None)` when it is not one or a header is malformed.
    pub fn parse(
        read_at: &mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>,
        size: u64,
    ) -> io::Result<Option<Layout>> {
        if size < 64 {
            return Ok(None);
        }
        let mut h = [0u8; 64];
        read_at(0, &mut h)?;
        if &h[..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
            return Ok(None);
        }
        let machine = match le(&h, 18, 2) as u16 {
            EM_X86_64 => Machine::X86_64,
            EM_AARCH64 => Machine::Aarch64,
            _ => return Ok(None),
        };
        let (phoff, shoff) = (le(&h, 32, 8), le(&h, 40, 8));
        let (phentsize, phnum) = (le(&h, 54, 2), le(&h, 56, 2));
        let (shentsize, shnum) = (le(&h, 58, 2), le(&h, 60, 2));
        let table = |off: u64, ent: u64, num: u64, want: u64| -> Option<(u64, usize)> {
            let len = ent.checked_mul(num)?;
            (ent == want && num > 0 && off.checked_add(len)? <= size).then_some((off, len as usize))
        };
        // Both tables are at most 65 535 entries of 56 or 64 bytes: 4 MiB at most.
        let Some((soff, slen)) = table(shoff, shentsize, shnum, 64) else {
            return Ok(None);
        };
        let mut sh = vec![0u8; slen];
        read_at(soff, &mut sh)?;
        let mut loads = Vec::new();
        let mut eh = None;
        if let Some((poff, plen)) = table(phoff, phentsize, phnum, 56) {
            let mut ph = vec![0u8; plen];
            read_at(poff, &mut ph)?;
            for p in ph.chunks_exact(56) {
                let (off, vaddr, filesz) = (le(p, 8, 8), le(p, 16, 8), le(p, 32, 8));
                let fits = off.checked_add(filesz).is_some_and(|e| e <= size)
                    && vaddr.checked_add(filesz).is_some();
                match le(p, 0, 4) as u32 {
                    1 if filesz > 0 && fits => loads.push(Load { off, filesz, vaddr }),
                    unwind::PT_GNU_EH_FRAME if fits && eh.is_none() => {
                        eh = Some((off, vaddr, filesz))
                    }
                    _ => {}
                }
            }
        }
        let mut sections = Vec::new();
        let mut bss: Option<(u64, u64)> = None;
        let names = section_names(read_at, size, &h, &sh)?;
        let mut debug_sections = dwarf::Sections::default();
        let mut plt = symbols::Sections::default();
        let mut named: [Option<(u64, u64)>; NAME_LISTS] = [None; NAME_LISTS];
        // The type of each section header, for what a RELA section's `sh_link` names.
        let types: Vec<u64> = sh.chunks_exact(64).map(|s| le(s, 4, 4)).collect();
        // Allocated sections with bytes in the file (`.eh_frame` is found among them by
        // address): address, offset, size.
        let mut placed = Vec::new();
        for s in sh.chunks_exact(64) {
            let (ty, flags) = (le(s, 4, 4), le(s, 8, 8));
            let (addr, off, sz) = (le(s, 16, 8), le(s, 24, 8), le(s, 32, 8));
            if ty != 8 && flags & 2 != 0 {
                placed.push((addr, off, sz));
            }
            let name = names.as_deref().and_then(|n| {
                let at = usize::try_from(le(s, 0, 4)).ok()?;
                let rest = n.get(at..)?;
                Some(&rest[..rest.iter().position(|&c| c == 0)?])
            });
            if let Some(name) = name {
                let list = match name {
                    b".strtab" => Some(0),
                    b".dynstr" => Some(1),
                    b".dynsym" => Some(2),
                    _ => None,
                };
                if let Some(k) = list.filter(|&k| named[k].is_none()) {
                    named[k] = off
                        .checked_add(sz)
                        .filter(|&e| e <= size)
                        .map(|_| (off, sz));
                }
                if ty == 1 && flags & 2 == 0 {
                    debug_sections.note(name, off, sz);
                } else if ty != 8 && flags & 2 != 0 {
                    plt.note(name, off, sz, addr, le(s, 56, 8));
                }
            }
            let (alloc, write, exec, tls) = (
                flags & 2 != 0,
                flags & 1 != 0,
                flags & 4 != 0,
                flags & 0x400 != 0,
            );
            if ty == 8 {
                if alloc
                    && write
                    && !tls
                    && addr.checked_add(sz).is_some()
                    && sz > bss.map_or(0, |b| b.1)
                {
                    bss = Some((addr, sz));
                }
                continue;
            }
            let kind = match ty {
                1 if alloc && exec => Kind::Code,
                1 | 14 | 15 | 16 if alloc && write && !exec && !tls => Kind::Pointers,
                4 => Kind::Rela,
                2 | 11 => Kind::Symbols,
                _ => continue,
            };
            let fits = off.checked_add(sz).is_some_and(|e| e <= size)
                && addr.checked_add(sz).is_some()
                && sz > 0;
            let names = match (kind, ty) {
                (Kind::Symbols, 2) => Some(STRTAB),
                (Kind::Symbols, _) => Some(DYNSTR),
                (Kind::Rela, _) if alloc => {
                    let link = usize::try_from(le(s, 40, 4)).unwrap_or(usize::MAX);
                    (types.get(link) == Some(&11)).then_some(DYNSYM)
                }
                _ => None,
            };
            if fits {
                sections.push(Section {
                    kind,
                    off,
                    size: sz,
                    addr,
                    names,
                });
            }
        }
        if !sections.iter().any(|s| s.kind == Kind::Code) {
            return Ok(None);
        }
        let section_at = |va: u64| {
            placed
                .iter()
                .find(|&&(a, _, _)| a == va)
                .map(|&(_, o, s)| (o, s))
        };
        let unwind = match eh {
            Some(eh) => Tables::parse(read_at, size, eh, &section_at)?,
            None => None,
        };
        let debug = Debug::parse(read_at, size, &debug_sections)?;
        Ok(Some(Layout {
            machine,
            sections,
            loads,
            bss,
            unwind,
            debug,
            debug_sections,
            plt,
            named,
        }))
    }

    /// The file offsets from the first executable section's start to the last one's end,
    /// on x86-64 (the `x86-streams` method's code span).
    pub fn x86_code(&self) -> Option<(u64, u64)> {
        let code = self.sections.iter().filter(|s| s.kind == Kind::Code);
        let start = code.clone().map(|s| s.off).min()?;
        let end = code.map(|s| s.off + s.size).max()?;
        (self.machine == Machine::X86_64).then_some((start, end))
    }

    /// Whether old' would rewrite debug sections' addresses (record kind 3).
    pub fn has_debug(&self) -> bool {
        self.debug.is_some()
    }

    /// Whether old' would rewrite names and symbol indices (record kind 4): it has a
    /// symbol table or a RELA section that names one.
    pub fn has_names(&self) -> bool {
        self.sections.iter().any(|s| s.names.is_some())
    }

    /// [`Layout::parse`] of a file held in memory.
    pub fn of_bytes(b: &[u8]) -> Option<Layout> {
        let mut read = |at: u64, buf: &mut [u8]| -> io::Result<()> {
            let s = usize::try_from(at)
                .ok()
                .and_then(|a| b.get(a..a.checked_add(buf.len())?))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(s);
            Ok(())
        };
        Layout::parse(&mut read, b.len() as u64).ok().flatten()
    }

    /// The virtual address of file offset `off`, through the first load segment holding it.
    fn va_of(&self, off: u64) -> Option<(u64, u64)> {
        let l = self
            .loads
            .iter()
            .find(|l| off >= l.off && off - l.off < l.filesz)?;
        Some((l.vaddr + (off - l.off), l.filesz - (off - l.off)))
    }
}

impl Layout {
    /// How many bytes from file offset `off` to the next byte a load segment holds: 0 when
    /// one holds `off`, `u64::MAX` when none holds a later byte.
    fn unloaded(&self, off: u64) -> u64 {
        if self.va_of(off).is_some() {
            return 0;
        }
        self.loads
            .iter()
            .filter(|l| l.off > off)
            .map(|l| l.off - off)
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// The alignment: segments sorted by `old_va`, not overlapping.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alignment {
    segs: Vec<Segment>,
    /// Whether old' rewrites the unwind tables too (`unwind.rs`; record kinds 2 to 4;
    /// kind 1 does not).
    pub unwind: bool,
    /// Whether old' rewrites the debug sections' addresses too (`dwarf.rs`; record kinds 3
    /// and 4).
    pub debug: bool,
    /// Whether old' rewrites symbols' names and relocations' symbol indices too, and
    /// finds more x86-64 forms ([`x86_candidate_wide`]) (record kind 4; `debug` is then
    /// set too).
    pub names: bool,
    /// With `debug`: the alignments of the debug sections that offsets point into, each in
    /// offsets from its section's start, in the order of [`dwarf::TARGETS`], then with
    /// `names` those of [`NAME_LISTS`] (those the writer did not align are empty).
    sections: Vec<Alignment>,
}

impl Alignment {
    pub fn len(&self) -> usize {
        self.segs.len()
    }

    /// Whether old' is the old file: every segment, of the image and of the debug
    /// sections, keeps its place (an empty alignment too).
    pub fn is_identity(&self) -> bool {
        let same = |a: &Alignment| a.segs.iter().all(|s| s.old_va == s.new_va);
        same(self) && self.sections.iter().all(same)
    }

    /// Where old address `va` sits in the new image, when it lies in a matched segment.
    fn map(&self, va: u64) -> Option<u64> {
        let i = self
            .segs
            .partition_point(|s| s.old_va <= va)
            .checked_sub(1)?;
        let s = self.segs[i];
        (va - s.old_va < s.len).then(|| s.new_va.wrapping_add(va - s.old_va))
    }

    /// [`Alignment::map`] for a reference's target: an address in the few bytes before a
    /// segment (an insertion's match usually starts a little after the function the
    /// references point to) moves with that segment.
    fn map_target(&self, va: u64) -> Option<u64> {
        self.map(va).or_else(|| {
            let s = self
                .segs
                .get(self.segs.partition_point(|s| s.old_va <= va))?;
            let back = s.old_va - va;
            (back <= NEAR).then(|| s.new_va.wrapping_sub(back))
        })
    }

    /// Whether its name tables' lists ([`NAME_LISTS`]) move anything: when they do not,
    /// record kind 4 would rewrite nothing that kinds 2 and 3 leave.
    pub fn moves_names(&self) -> bool {
        self.sections
            .iter()
            .skip(dwarf::TARGETS)
            .any(|a| a.segs.iter().any(|s| s.old_va != s.new_va))
    }

    /// Builds an alignment from matched stretches in virtual-address space: sorted, the
    /// overlapping ones dropped, neighbours at the same shift merged (across a gap of at
    /// most 256 bytes), and at most [`SEGMENTS_MAX`] kept (the longest).
    pub fn from_segments(mut v: Vec<Segment>) -> Alignment {
        v.retain(|s| {
            s.len > 0
                && s.old_va.checked_add(s.len).is_some()
                && s.new_va.checked_add(s.len).is_some()
        });
        v.sort_by_key(|s| (s.old_va, std::cmp::Reverse(s.len)));
        let mut out: Vec<Segment> = Vec::with_capacity(v.len());
        for mut s in v {
            if let Some(p) = out.last_mut() {
                let p_end = p.old_va + p.len;
                if s.old_va + s.len <= p_end {
                    continue;
                }
                if s.old_va < p_end {
                    // Keep the part past the previous segment.
                    let cut = p_end - s.old_va;
                    s = Segment {
                        old_va: p_end,
                        new_va: s.new_va.wrapping_add(cut),
                        len: s.len - cut,
                    };
                }
                let gap = s.old_va - p_end;
                if gap <= GAP_MAX
                    && s.new_va.wrapping_sub(s.old_va) == p.new_va.wrapping_sub(p.old_va)
                {
                    p.len = s.old_va + s.len - p.old_va;
                    continue;
                }
            }
            out.push(s);
        }
        if out.len() > SEGMENTS_MAX {
            out.sort_by_key(|s| std::cmp::Reverse(s.len));
            out.truncate(SEGMENTS_MAX);
            out.sort_by_key(|s| s.old_va);
        }
        Alignment {
            segs: out,
            unwind: true,
            debug: true,
            names: true,
            sections: Vec::new(),
        }
    }

    /// The alignment record's payload: a zstd frame of LEB128 varints: the count, then per
    /// segment the gap from the previous segment's old end, the change of shift
    /// (`new_va - old_va`, two's complement, zig-zag), and the length; with `debug`
    /// (kinds 3 and 4), then one such list per debug section of [`dwarf::TARGETS`]; with
    /// `names` (kind 4), then one per table of [`NAME_LISTS`].
    pub fn encode(&self) -> io::Result<Vec<u8>> {
        let mut raw = Vec::with_capacity(self.segs.len() * 8 + 8);
        put_list(&mut raw, &self.segs);
        let none = Alignment::default();
        for k in 0..self.lists() {
            put_list(&mut raw, &self.sections.get(k).unwrap_or(&none).segs);
        }
        zstd::bulk::compress(&raw, 19)
    }

    /// How many section lists its record carries after the image's segments.
    fn lists(&self) -> usize {
        match (self.debug, self.names) {
            (_, true) => dwarf::TARGETS + NAME_LISTS,
            (true, false) => dwarf::TARGETS,
            (false, false) => 0,
        }
    }

    /// Sets the debug sections' alignments (in the order of [`dwarf::TARGETS`]).
    pub fn set_sections(&mut self, sections: Vec<Alignment>) {
        self.sections = sections;
    }

    /// Where offset `off` of debug section `k` ([`dwarf::TARGETS`]) sits in the new file's
    /// section: exactly ([`Alignment::map`]) or as a reference's target
    /// ([`Alignment::map_target`]).
    fn map_section(&self, k: usize, off: u64, target: bool) -> Option<u64> {
        let a = self.sections.get(k)?;
        match target {
            true => a.map_target(off),
            false => a.map(off),
        }
    }

    /// Reads an alignment payload of `len` bytes from `r` (held in memory: at most
    /// [`PAYLOAD_MAX`]), refusing anything malformed: one zstd frame using exactly `len`
    /// bytes, segments sorted, not empty, not overlapping, at most [`SEGMENTS_MAX`].
    /// `unwind`, `debug`, `names`: whether the record's kind rewrites the unwind tables,
    /// the debug sections, and names and symbol indices too.
    pub fn read(
        r: &mut dyn Read,
        len: u64,
        unwind: bool,
        debug: bool,
        names: bool,
    ) -> io::Result<Alignment> {
        if len > PAYLOAD_MAX {
            return Err(bad("its alignment record is larger than 16 MiB"));
        }
        let mut frame = Vec::new();
        r.take(len).read_to_end(&mut frame)?;
        if frame.len() as u64 != len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if zstd::zstd_safe::find_frame_compressed_size(&frame) != Ok(frame.len()) {
            return Err(bad("its alignment record is not one zstd frame"));
        }
        let mut d = zstd::stream::read::Decoder::with_buffer(frame.as_slice())?.single_frame();
        d.window_log_max(super::format::WINDOW_LOG_MAX)?;
        let mut d = io::BufReader::new(d);
        let mut left = SEGMENTS_MAX as u64;
        let segs = read_list(&mut d, &mut left)?;
        let mut al = Alignment {
            segs,
            unwind,
            debug: debug || names,
            names,
            sections: Vec::new(),
        };
        for _ in 0..al.lists() {
            let segs = read_list(&mut d, &mut left)?;
            al.sections.push(Alignment {
                segs,
                ..Alignment::default()
            });
        }
        let mut rest = [0u8; 1];
        if d.read(&mut rest)? != 0 {
            return Err(bad("its alignment record has bytes after its segments"));
        }
        Ok(al)
    }
}

/// Writes a segment list: the count, then each segment as [`Alignment::encode`] says.
fn put_list(raw: &mut Vec<u8>, segs: &[Segment]) {
    put_varint(raw, segs.len() as u64);
    let (mut end, mut shift) = (0u64, 0i64);
    for s in segs {
        let sh = s.new_va.wrapping_sub(s.old_va) as i64;
        put_varint(raw, s.old_va - end);
        put_varint(raw, zigzag(sh.wrapping_sub(shift)));
        put_varint(raw, s.len);
        end = s.old_va + s.len;
        shift = sh;
    }
}

/// Reads a segment list written by [`put_list`]: sorted, not empty, not overlapping, at
/// most `left` segments (which it counts down).
fn read_list(d: &mut dyn Read, left: &mut u64) -> io::Result<Vec<Segment>> {
    let n = need_varint(d)?;
    *left = left
        .checked_sub(n)
        .ok_or_else(|| bad("its alignment has too many segments"))?;
    let mut segs = Vec::with_capacity(n as usize);
    let (mut end, mut shift) = (0u64, 0i64);
    for _ in 0..n {
        let gap = need_varint(d)?;
        let dsh = unzigzag(need_varint(d)?);
        let len = need_varint(d)?;
        let old_va = end
            .checked_add(gap)
            .ok_or_else(|| bad("an alignment segment overflows"))?;
        end = old_va
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or_else(|| bad("an alignment segment is empty or overflows"))?;
        shift = shift.wrapping_add(dsh);
        segs.push(Segment {
            old_va,
            new_va: old_va.wrapping_add(shift as u64),
            len,
        });
    }
    Ok(segs)
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(x: u64) -> i64 {
    ((x >> 1) as i64) ^ -((x & 1) as i64)
}

fn bad(s: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, s.to_owned())
}

fn put_varint(v: &mut Vec<u8>, x: u64) {
    super::blocks::put_varint(v, x)
}

fn need_varint(r: &mut dyn Read) -> io::Result<u64> {
    super::blocks::need_varint(r)
}

/// The alignment between two ELF files from bsdiff's matches of the new file against the
/// old (exact seeds extended while more than half the bytes agree, `scan.rs`): those of at
/// least [`MATCH_MIN`] bytes, carried into virtual addresses through each file's load
/// segments, plus `.bss` to `.bss`.
/// `paired`: the PLT stubs and `.dynsym` entries paired by name ([`symbols::pair`]),
/// which take the place of the matches over the old stubs and for `.dynsym`'s list.
pub fn align(
    matches: impl IntoIterator<Item = bidiff::Match>,
    (lo, old): (&Layout, &[u8]),
    (ln, new): (&Layout, &[u8]),
    paired: symbols::Paired,
) -> Alignment {
    let mut v = Vec::new();
    let targets = |l: &Layout| {
        let mut t = l.debug_sections.targets().to_vec();
        t.extend(l.named);
        t
    };
    let (to, tn) = (targets(lo), targets(ln));
    let mut secs: Vec<Vec<Segment>> = vec![Vec::new(); to.len()];
    for m in matches {
        if m.add_length >= MATCH_MIN {
            // The part of the match inside each debug section of both files, in offsets
            // from the sections' starts.
            let (o, n, len) = (
                m.add_old_start as u64,
                m.add_new_start as u64,
                m.add_length as u64,
            );
            for (k, seg) in secs.iter_mut().enumerate() {
                let (Some((so, sl)), Some((sn, snl))) = (to[k], tn[k]) else {
                    continue;
                };
                let i0 = so.saturating_sub(o).max(sn.saturating_sub(n));
                let i1 = (so + sl)
                    .saturating_sub(o)
                    .min((sn + snl).saturating_sub(n))
                    .min(len);
                if i0 < i1 {
                    seg.push(Segment {
                        old_va: o + i0 - so,
                        new_va: n + i0 - sn,
                        len: i1 - i0,
                    });
                }
            }
            let (mut o, mut n, mut left) = (
                m.add_old_start as u64,
                m.add_new_start as u64,
                m.add_length as u64,
            );
            while left > 0 {
                let (Some((ova, orun)), Some((nva, nrun))) = (lo.va_of(o), ln.va_of(n)) else {
                    // Bytes no load segment holds (the padding before the next one): the
                    // match goes on past them.
                    let skip = lo.unloaded(o).max(ln.unloaded(n));
                    if skip >= left {
                        break;
                    }
                    (o, n, left) = (o + skip, n + skip, left - skip);
                    continue;
                };
                let len = left.min(orun).min(nrun);
                v.push(Segment {
                    old_va: ova,
                    new_va: nva,
                    len,
                });
                (o, n, left) = (o + len, n + len, left - len);
            }
        }
    }
    if !paired.stub_ranges.is_empty() {
        v = cut(v, &paired.stub_ranges);
        v.extend(paired.stubs);
    }
    // Each FDE of the old file pairs with the new file's FDE of the same function (where
    // the matches so far put it) when both are as long.
    if let (Some(to), Some(tn)) = (&lo.unwind, &ln.unwind) {
        let so_far = Alignment::from_segments(v.clone());
        let by_function: std::collections::HashMap<u64, (u64, u64)> = tn
            .fdes(new)
            .into_iter()
            .map(|(va, len, f)| (f, (va, len)))
            .collect();
        let fdes: Vec<Segment> = to
            .fdes(old)
            .into_iter()
            .filter_map(|(va, len, f)| {
                let (nva, nlen) = *by_function.get(&so_far.map_target(f)?)?;
                (nlen == len).then_some(Segment {
                    old_va: va,
                    new_va: nva,
                    len,
                })
            })
            .collect();
        v = replace(v, fdes);
    }
    // The GOT's slots: those bound to a symbol paired by its name, those a relative
    // relocation fills where the matches so far map what one holds to what the other does.
    // A value that several slots hold on either side pairs none of them: which slot is
    // which cannot be told (an unchanged library has such slots; pairing them moved them).
    let so_far = Alignment::from_segments(v.clone());
    let [ro, rn] = &paired.got_relative;
    let mut by_value: std::collections::HashMap<u64, (u64, u32)> = Default::default();
    for &(s, a) in rn {
        by_value.entry(a).or_insert((s, 0)).1 += 1;
    }
    let mapped: Vec<(u64, Option<u64>)> = ro
        .iter()
        .map(|&(slot, a)| (slot, so_far.map_target(a)))
        .collect();
    let mut old_holding: std::collections::HashMap<u64, u32> = Default::default();
    for &(_, m) in &mapped {
        if let Some(m) = m {
            *old_holding.entry(m).or_default() += 1;
        }
    }
    let mut got = paired.got;
    got.extend(mapped.iter().filter_map(|&(slot, m)| {
        let m = m?;
        let (new_va, n) = *by_value.get(&m)?;
        (n == 1 && old_holding.get(&m) == Some(&1)).then_some(Segment {
            old_va: slot,
            new_va,
            len: 8,
        })
    }));
    v = replace(v, got);
    if !paired.dynsym.is_empty() {
        secs[DYNSYM] = paired.dynsym;
    }
    // The unwind table's base (the entries are relative to it), which no match may cover:
    // its entries all change.
    let hdr = |l: &Layout| l.unwind.as_ref().and_then(Tables::hdr_va);
    if let (Some(oa), Some(na)) = (hdr(lo), hdr(ln)) {
        v.push(Segment {
            old_va: oa,
            new_va: na,
            len: 12,
        });
    }
    if let (Some((oa, os)), Some((na, ns))) = (lo.bss, ln.bss) {
        v.push(Segment {
            old_va: oa,
            new_va: na,
            len: os.min(ns),
        });
    }
    let mut al = Alignment::from_segments(v);
    let sections: Vec<Alignment> = secs.into_iter().map(Alignment::from_segments).collect();
    let total = al.len() + sections.iter().map(Alignment::len).sum::<usize>();
    if total <= SEGMENTS_MAX {
        al.set_sections(sections);
    }
    al
}

/// `v` with `pairs` in place of what it says about their old addresses (`pairs` do not
/// overlap one another).
fn replace(v: Vec<Segment>, pairs: Vec<Segment>) -> Vec<Segment> {
    if pairs.is_empty() {
        return v;
    }
    let ranges: Vec<(u64, u64)> = pairs.iter().map(|s| (s.old_va, s.old_va + s.len)).collect();
    let mut v = cut(v, &ranges);
    v.extend(pairs);
    v
}

/// `v` without the parts of its segments whose old addresses lie in one of `ranges`.
fn cut(v: Vec<Segment>, ranges: &[(u64, u64)]) -> Vec<Segment> {
    let mut ranges = ranges.to_vec();
    ranges.sort_unstable();
    let mut out = Vec::with_capacity(v.len());
    for s in v {
        let end = s.old_va + s.len;
        let mut at = s.old_va;
        let first = ranges.partition_point(|r| r.1 <= at);
        for &(lo, hi) in &ranges[first..] {
            if lo >= end {
                break;
            }
            if lo > at {
                out.push(Segment {
                    old_va: at,
                    new_va: s.new_va.wrapping_add(at - s.old_va),
                    len: lo - at,
                });
            }
            at = at.max(hi);
        }
        if at < end {
            out.push(Segment {
                old_va: at,
                new_va: s.new_va.wrapping_add(at - s.old_va),
                len: end - at,
            });
        }
    }
    out
}

/// Rewrites, in `buf` (the old file's bytes from offset `start`, at most one [`BLOCK`]),
/// the references the alignment maps: `buf` becomes that part of old'.
pub fn relocate(layout: &Layout, al: &Alignment, start: u64, buf: &mut [u8]) {
    let end = start + buf.len() as u64;
    for s in &layout.sections {
        let (lo, hi) = (s.off.max(start), (s.off + s.size).min(end));
        if lo >= hi {
            continue;
        }
        let b = &mut buf[(lo - start) as usize..(hi - start) as usize];
        let va = s.addr.wrapping_add(lo - s.off);
        match (s.kind, layout.machine) {
            (Kind::Code, Machine::X86_64) => x86(b, va, al),
            (Kind::Code, Machine::Aarch64) => arm(b, va, (lo - s.off) % 4, al),
            (Kind::Pointers, _) => pointers(b, va, al),
            (Kind::Rela, _) | (Kind::Symbols, _) => {
                let skip = ((24 - (lo - s.off) % 24) % 24) as usize;
                let fields: &[usize] = if s.kind == Kind::Rela { &[0, 16] } else { &[8] };
                let names = s.names.filter(|_| al.names);
                for e in b.get_mut(skip..).unwrap_or_default().chunks_exact_mut(24) {
                    if let Some(k) = names {
                        name(e, s.kind, k, al);
                    }
                    if s.kind == Kind::Symbols && le(e, 6, 2) == 0 {
                        continue;
                    }
                    for &f in fields {
                        map_u64(&mut e[f..f + 8], al);
                    }
                }
            }
        }
    }
    if let (true, Some(t)) = (al.unwind, &layout.unwind) {
        t.relocate(start, buf, &|a| al.map(a), &|a| al.map_target(a));
    }
    if let (true, Some(d)) = (al.debug, &layout.debug) {
        d.relocate(
            start,
            buf,
            ADDR_MIN,
            &|a| al.map_target(a),
            &|k, off, target| al.map_section(k, off, target),
        );
    }
}

/// Most bytes of section names read (`.shstrtab`).
const NAMES_MAX: u64 = 1 << 20;

/// The section-name string table of a file whose ELF header is `h` and section headers
/// `sh`, when it has one of at most [`NAMES_MAX`] bytes.
fn section_names(
    read_at: unwind::ReadAt<'_>,
    size: u64,
    h: &[u8],
    sh: &[u8],
) -> io::Result<Option<Vec<u8>>> {
    let idx = le(h, 62, 2) as usize;
    let Some(s) = sh.chunks_exact(64).nth(idx) else {
        return Ok(None);
    };
    let (off, sz) = (le(s, 24, 8), le(s, 32, 8));
    if le(s, 4, 4) != 3 || sz > NAMES_MAX || off.checked_add(sz).is_none_or(|e| e > size) {
        return Ok(None);
    }
    let mut b = vec![0u8; sz as usize];
    read_at(off, &mut b)?;
    Ok(Some(b))
}

/// With record kind 4, in a 24-byte entry of a section of `kind`: a symbol's `st_name`
/// follows its string table's list `k` (as a target), a relocation's symbol index (the
/// high 32 bits of `r_info`) the dynamic symbol table's list `k` (exactly, in entries of
/// 24 bytes); 0 stays.
fn name(e: &mut [u8], kind: Kind, k: usize, al: &Alignment) {
    let at = if kind == Kind::Symbols { 0 } else { 12 };
    let v = le(e, at, 4);
    let mapped = match kind {
        Kind::Symbols => al.map_section(k, v, true),
        _ => al
            .map_section(k, v * 24, false)
            .filter(|n| n % 24 == 0)
            .map(|n| n / 24),
    };
    if let Some(n) = mapped.filter(|&n| v != 0 && n <= u32::MAX as u64) {
        e[at..at + 4].copy_from_slice(&(n as u32).to_le_bytes());
    }
}

fn map_u64(b: &mut [u8], al: &Alignment) {
    let v = le(b, 0, 8);
    if v >= ADDR_MIN {
        if let Some(n) = al.map_target(v) {
            b.copy_from_slice(&n.to_le_bytes());
        }
    }
}

fn pointers(b: &mut [u8], va: u64, al: &Alignment) {
    let skip = ((8 - va % 8) % 8) as usize;
    for w in b.get_mut(skip..).unwrap_or_default().chunks_exact_mut(8) {
        map_u64(w, al);
    }
}

/// Where an x86-64 instruction starting at `b[i]` keeps a rel32 displacement: its offset
/// and the instruction's end.
fn x86_candidate(b: &[u8], i: usize) -> Option<(usize, usize)> {
    let at = |k: usize| b.get(i + k).copied();
    let rip = |m: Option<u8>| m.is_some_and(|m| m & 0xC7 == 0x05);
    const ALU: [u8; 12] = [
        0x8B, 0x89, 0x8D, 0x3B, 0x39, 0x03, 0x2B, 0x33, 0x0B, 0x23, 0x85, 0x63,
    ];
    const SSE: [u8; 16] = [
        0x10, 0x11, 0x28, 0x29, 0x2E, 0x2F, 0x54, 0x57, 0x58, 0x59, 0x5C, 0x5E, 0x6F, 0x7F, 0xB6,
        0xB7,
    ];
    let c = at(0)?;
    let (disp, end) = match c {
        0xE8 | 0xE9 => (1, 5),
        0x0F if at(1).is_some_and(|x| (0x80..=0x8F).contains(&x)) => (2, 6),
        0x0F if at(1).is_some_and(|x| SSE.contains(&x)) && rip(at(2)) => (3, 7),
        0xFF if matches!(at(1), Some(0x15 | 0x25)) => (2, 6),
        0x40..=0x4F if at(1).is_some_and(|x| ALU.contains(&x)) && rip(at(2)) => (3, 7),
        0x8B | 0x89 | 0x8D if rip(at(1)) => (2, 6),
        _ => return None,
    };
    (i + end <= b.len()).then_some((i + disp, i + end))
}

/// With record kind 4, more forms than [`x86_candidate`]'s: a rip-relative operand with
/// an immediate after it (`80`, `81`, `83`, `C6`, `C7`, `F6`, `F7`, `69`, `6B`), `FE`/`FF`
/// with any rip-relative operand, more ALU and SSE operations, and VEX-encoded ones.
fn x86_candidate_wide(b: &[u8], i: usize) -> Option<(usize, usize)> {
    if let Some(c) = x86_candidate(b, i) {
        return Some(c);
    }
    let at = |k: usize| b.get(i + k).copied();
    let rip = |m: Option<u8>| m.is_some_and(|m| m & 0xC7 == 0x05);
    // Opcode (after an optional REX prefix) and the immediate's size after the operand.
    let rex = at(0).is_some_and(|c| (0x40..=0x4F).contains(&c)) as usize;
    let op = at(rex)?;
    let imm = match op {
        0x80 | 0x83 | 0xC6 | 0x6B => Some(1),
        0x81 | 0xC7 | 0x69 => Some(4),
        0xF6 => (at(rex + 1)? & 0x38 == 0).then_some(1).or(Some(0)),
        0xF7 => (at(rex + 1)? & 0x38 == 0).then_some(4).or(Some(0)),
        0xFE | 0xFF | 0x01 | 0x09 | 0x11 | 0x19 | 0x21 | 0x29 | 0x31 | 0x13 | 0x1B | 0x87
        | 0x38 | 0x3A | 0x84 | 0x88 | 0x8A => Some(0),
        _ => None,
    };
    if let Some(imm) = imm {
        if rip(at(rex + 1)) {
            let d = i + rex + 2;
            return (d + 4 + imm <= b.len()).then_some((d, d + 4 + imm));
        }
    }
    // Two-byte opcodes 0F xx with a rip-relative operand and no immediate (after optional
    // 66/F2/F3 and REX prefixes, which the scan meets first as bytes of their own).
    if op == 0x0F {
        let x = at(rex + 1)?;
        const MORE: [u8; 36] = [
            0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x2A, 0x2C, 0x2D, 0x51, 0x55, 0x56, 0x5A, 0x5B,
            0x5D, 0x5F, 0x60, 0x61, 0x62, 0x66, 0x6C, 0x6D, 0x6E, 0x74, 0x75, 0x76, 0x7E, 0xAF,
            0xBE, 0xBF, 0xD4, 0xD6, 0xDB, 0xEB, 0xEF, 0xFE,
        ];
        if MORE.contains(&x) && rip(at(rex + 2)) {
            let d = i + rex + 3;
            return (d + 4 <= b.len()).then_some((d, d + 4));
        }
    }
    // VEX: C5 (map 0F) and C4 (maps 0F, 0F38; 0F3A has an immediate).
    let (d, imm) = match at(0)? {
        0xC5 => {
            let op = at(2)?;
            let imm = matches!(op, 0x70..=0x73 | 0xC2 | 0xC4..=0xC6) as usize;
            (rip(at(3)).then_some(4)?, imm)
        }
        0xC4 => {
            let map = at(1)? & 0x1F;
            let imm = match map {
                1 => matches!(at(3)?, 0x70..=0x73 | 0xC2 | 0xC4..=0xC6) as usize,
                2 => 0,
                3 => 1,
                _ => return None,
            };
            (rip(at(4)).then_some(5)?, imm)
        }
        _ => return None,
    };
    let d = i + d;
    (d + 4 + imm <= b.len()).then_some((d, d + 4 + imm))
}

/// The bytes that can start an instruction [`x86_candidate_wide`] finds.
const WIDE_FIRST: [bool; 256] = {
    let mut t = [false; 256];
    let mut k = 0x40;
    while k <= 0x4F {
        t[k] = true;
        k += 1;
    }
    let ops = [
        0xE8, 0xE9, 0x0F, 0xFF, 0x8B, 0x89, 0x8D, 0x80, 0x81, 0x83, 0xC6, 0xC7, 0xF6, 0xF7, 0x69,
        0x6B, 0xFE, 0x01, 0x09, 0x11, 0x19, 0x21, 0x29, 0x31, 0x13, 0x1B, 0x87, 0x38, 0x3A, 0x84,
        0x88, 0x8A, 0x03, 0x0B, 0x23, 0x2B, 0x33, 0x39, 0x3B, 0x63, 0x85, 0xC4, 0xC5,
    ];
    let mut i = 0;
    while i < ops.len() {
        t[ops[i]] = true;
        i += 1;
    }
    t
};

fn x86(b: &mut [u8], va: u64, al: &Alignment) {
    let mut i = 0;
    let wide = al.names;
    while i + 5 <= b.len() {
        if wide && !WIDE_FIRST[b[i] as usize] {
            i += 1;
            continue;
        }
        let found = match wide {
            true => x86_candidate_wide(b, i),
            false => x86_candidate(b, i),
        };
        if let Some((d, end)) = found {
            let src = va.wrapping_add(i as u64);
            let disp = le(b, d, 4) as u32 as i32 as i64;
            let target = src.wrapping_add((end - i) as u64).wrapping_add(disp as u64);
            if let (Some(ns), Some(nt)) = (al.map(src), al.map_target(target)) {
                let nd = nt.wrapping_sub(ns.wrapping_add((end - i) as u64)) as i64;
                if let Ok(nd) = i32::try_from(nd) {
                    b[d..d + 4].copy_from_slice(&nd.to_le_bytes());
                    i = end;
                    continue;
                }
            }
        }
        i += 1;
    }
}

fn sext(x: u64, bits: u32) -> i64 {
    ((x << (64 - bits)) as i64) >> (64 - bits)
}

/// `Some(v)` when `v` fits a signed field of `bits` bits.
fn fits(v: i64, bits: u32) -> Option<u64> {
    let lim = 1i64 << (bits - 1);
    (-lim..lim)
        .contains(&v)
        .then_some(v as u64 & ((1u64 << bits) - 1))
}

fn arm(b: &mut [u8], va: u64, phase: u64, al: &Alignment) {
    let mut i = ((4 - phase % 4) % 4) as usize;
    let word = |b: &[u8], i: usize| le(b, i, 4) as u32;
    while i + 4 <= b.len() {
        let ins = word(b, i);
        let pc = va.wrapping_add(i as u64);
        let moved = |t: u64| -> Option<i64> {
            let (np, nt) = (al.map(pc)?, al.map_target(t)?);
            Some(nt.wrapping_sub(np) as i64)
        };
        let put = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        if ins & 0x7C00_0000 == 0x1400_0000 {
            // b, bl: imm26 words.
            let t = pc.wrapping_add((sext(ins as u64 & 0x3FF_FFFF, 26) * 4) as u64);
            if let Some(f) = moved(t)
                .filter(|d| d % 4 == 0)
                .and_then(|d| fits(d / 4, 26))
            {
                put(b, i, ins & 0xFC00_0000 | f as u32);
            }
        } else if ins & 0xFF00_0010 == 0x5400_0000 || ins & 0x7E00_0000 == 0x3400_0000 {
            // b.cond, cbz, cbnz: imm19 words at bit 5.
            let t = pc.wrapping_add((sext((ins as u64 >> 5) & 0x7FFFF, 19) * 4) as u64);
            if let Some(f) = moved(t)
                .filter(|d| d % 4 == 0)
                .and_then(|d| fits(d / 4, 19))
            {
                put(b, i, ins & !(0x7FFFF << 5) | (f as u32) << 5);
            }
        } else if ins & 0x9F00_0000 == 0x9000_0000 && i + 8 <= b.len() {
            // adrp xd, page; then add xd, xd, #lo12 or ldr xt/wt, [xd, #lo12] (with kind
            // 4: the first of the next ADRP_REACH words that adds to or loads or stores
            // through xd).
            let rd = ins & 31;
            let (at, next, scale) = match al.names {
                false => {
                    let next = word(b, i + 4);
                    let scale = match next & 0xFFC0_0000 {
                        0x9100_0000 => 1,
                        0xF940_0000 => 8,
                        0xB940_0000 => 4,
                        _ => 0,
                    };
                    (i + 4, next, scale)
                }
                true => (1..=ADRP_REACH)
                    .map(|k| i + 4 * k)
                    .take_while(|&at| at + 4 <= b.len())
                    .map(|at| (at, word(b, at)))
                    .find(|&(_, w)| (w >> 5) & 31 == rd && lo12_scale(w) > 0)
                    .map_or((i, 0, 0), |(at, w)| (at, w, lo12_scale(w))),
            };
            if scale > 0 && (next >> 5) & 31 == rd {
                let imm = sext(
                    (((ins as u64 >> 5) & 0x7FFFF) << 2) | ((ins as u64 >> 29) & 3),
                    21,
                );
                let lo12 = ((next as u64 >> 10) & 0xFFF) * scale;
                let t = (pc & !0xFFF)
                    .wrapping_add((imm << 12) as u64)
                    .wrapping_add(lo12);
                if let (Some(np), Some(nt)) = (al.map(pc), al.map_target(t)) {
                    let pages = ((nt >> 12) as i64).wrapping_sub((np >> 12) as i64);
                    let nlo = nt & 0xFFF;
                    if let (Some(f), true) = (fits(pages, 21), nlo % scale == 0) {
                        let f = f as u32;
                        put(b, i, ins & 0x9F00_001F | (f & 3) << 29 | (f >> 2) << 5);
                        let n2 = next & !(0xFFF << 10) | ((nlo / scale) as u32) << 10;
                        put(b, at, n2);
                        i += if at == i + 4 { 8 } else { 4 };
                        continue;
                    }
                }
            }
        }
        i += 4;
    }
}

/// With record kind 4, how many words after an `adrp` are searched for the `add`, load or
/// store that completes its address (compilers schedule other work between them).
const ADRP_REACH: usize = 16;

/// With record kind 4, the scale of the 12-bit offset of an instruction that can complete
/// an `adrp`'s address: 1 for `add` (64-bit, immediate, unshifted), the access size for a
/// load or store with an unsigned offset (16 for a 128-bit one), 0 for anything else.
fn lo12_scale(w: u32) -> u64 {
    if w & 0xFFC0_0000 == 0x9100_0000 {
        return 1;
    }
    if w & 0x3B00_0000 != 0x3900_0000 {
        return 0;
    }
    let (size, vector, opc) = (w >> 30, (w >> 26) & 1, (w >> 22) & 3);
    match (vector, size, opc) {
        (1, 0, 2 | 3) => 16,
        _ => 1 << size,
    }
}

/// Writes old' (the whole old file, relocated block by block) to `out` and returns how
/// many of its bytes differ from the old file's. The blocks are relocated on `threads`
/// threads, each a run of them (the bytes do not depend on the count).
pub fn write_relocated(
    old: &[u8],
    layout: &Layout,
    al: &Alignment,
    threads: usize,
    out: &mut dyn Write,
) -> io::Result<u64> {
    let block = BLOCK as usize;
    let mut prime = old.to_vec();
    let per = old.len().div_ceil(block).div_ceil(threads.max(1)).max(1) * block;
    let relocate_run = |at: usize, run: &mut [u8]| -> u64 {
        let mut differing = 0;
        for (k, b) in run.chunks_mut(block).enumerate() {
            let start = at + k * block;
            relocate(layout, al, start as u64, b);
            differing += b.iter().zip(&old[start..]).filter(|(x, y)| x != y).count() as u64;
        }
        differing
    };
    let differing = std::thread::scope(|s| {
        let mut runs = prime.chunks_mut(per).enumerate();
        let first = runs.next();
        let rest: Vec<_> = runs
            .map(|(i, run)| s.spawn(move || relocate_run(i * per, run)))
            .collect();
        let mut differing = first.map_or(0, |(_, run)| relocate_run(0, run));
        for h in rest {
            differing += h
                .join()
                .map_err(|_| io::Error::other("relocating old' panicked"))?;
        }
        Ok::<u64, io::Error>(differing)
    })?;
    out.write_all(&prime)?;
    Ok(differing)
}

/// Old' as a seekable stream over the old file: each read relocates the 64 KiB block it
/// falls in (one block is kept).
pub struct Relocated<'a, O> {
    inner: &'a mut O,
    size: u64,
    pos: u64,
    layout: Layout,
    al: Alignment,
    block: Vec<u8>,
    block_at: Option<u64>,
}

impl<'a, O: Read + Seek> Relocated<'a, O> {
    /// `Ok(None)` when the old file is not an ELF file this preprocessing reads.
    pub fn new(inner: &'a mut O, size: u64, al: Alignment) -> io::Result<Option<Self>> {
        let mut read = |at: u64, buf: &mut [u8]| -> io::Result<()> {
            inner.seek(SeekFrom::Start(at))?;
            inner.read_exact(buf)
        };
        let Some(layout) = Layout::parse(&mut read, size)? else {
            return Ok(None);
        };
        Ok(Some(Relocated {
            inner,
            size,
            pos: 0,
            layout,
            al,
            block: Vec::new(),
            block_at: None,
        }))
    }
}

impl<O: Read + Seek> Read for Relocated<'_, O> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let at = self.pos / BLOCK * BLOCK;
        if self.block_at != Some(at) {
            self.block_at = None;
            let len = BLOCK.min(self.size - at) as usize;
            self.block.resize(len, 0);
            self.inner.seek(SeekFrom::Start(at))?;
            self.inner.read_exact(&mut self.block)?;
            relocate(&self.layout, &self.al, at, &mut self.block);
            self.block_at = Some(at);
        }
        let from = (self.pos - at) as usize;
        let n = buf.len().min(self.block.len() - from);
        buf[..n].copy_from_slice(&self.block[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl<O: Read + Seek> Seek for Relocated<'_, O> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = super::decode::seek_target(to, self.pos, self.size)
            .ok_or_else(|| bad("seek outside the old file"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn al(v: &[(u64, u64, u64)]) -> Alignment {
        Alignment::from_segments(
            v.iter()
                .map(|&(old_va, new_va, len)| Segment {
                    old_va,
                    new_va,
                    len,
                })
                .collect(),
        )
    }

    #[test]
    fn alignment_round_trips_and_merges() {
        let a = al(&[
            (0x1000, 0x1000, 64),
            (0x1040, 0x1040, 64),
            (0x2000, 0x2010, 100),
            (0x1900, 0x1000, 10),
        ]);
        assert_eq!(a.len(), 3);
        assert_eq!(a.map(0x107F), Some(0x107F));
        assert_eq!(a.map(0x2001), Some(0x2011));
        assert_eq!(a.map(0x3000), None);
        // Kind 4 carries one list per debug section and per name table after the segments
        // (empty ones too); kind 3 the debug sections' only.
        let mut a = a;
        let mut sections = vec![Alignment::default(); dwarf::TARGETS + NAME_LISTS];
        sections[1] = al(&[(0, 0, 40), (40, 52, 300)]);
        sections[DYNSTR] = al(&[(0, 0, 500), (500, 509, 900)]);
        a.set_sections(sections);
        assert_eq!(a.map_section(1, 41, false), Some(53));
        assert_eq!(a.map_section(DYNSTR, 600, true), Some(609));
        let read = |b: &[u8], len: usize, debug: bool, names: bool| {
            Alignment::read(&mut &b[..len.min(b.len())], len as u64, true, debug, names)
        };
        let segs = |x: &Alignment| {
            x.sections
                .iter()
                .map(|s| s.segs.clone())
                .collect::<Vec<_>>()
        };
        let kind4 = a.encode().unwrap();
        let b = read(&kind4, kind4.len(), true, true).unwrap();
        assert_eq!(a.segs, b.segs);
        assert_eq!(segs(&a), segs(&b));
        assert_eq!(b.sections.len(), dwarf::TARGETS + NAME_LISTS);
        a.names = false;
        let kind3 = a.encode().unwrap();
        let b = read(&kind3, kind3.len(), true, false).unwrap();
        assert_eq!(segs(&b), segs(&a)[..dwarf::TARGETS].to_vec());
        // Read as another kind, a record has bytes left over or too few.
        assert!(read(&kind4, kind4.len(), true, false).is_err());
        assert!(read(&kind3, kind3.len(), true, true).is_err());
        assert!(read(&kind3, kind3.len(), false, false).is_err());
        assert!(read(&kind4, kind4.len() - 1, true, true).is_err());
        assert!(read(&kind4, kind4.len() + 1, true, true).is_err());
    }

    #[test]
    fn x86_call_follows_its_target() {
        // A call at 0x1000 to 0x2000; the target moved by 0x10, the caller did not.
        let a = al(&[(0x1000, 0x1000, 0x100), (0x2000, 0x2010, 0x100)]);
        let mut b = vec![0x90, 0xE8];
        b.extend_from_slice(&(0x2000i32 - 0x1006).to_le_bytes());
        x86(&mut b, 0x1000, &a);
        assert_eq!(le(&b, 2, 4) as i32, 0x2010 - 0x1006);
    }

    #[test]
    fn x86_wide_forms_follow_their_targets_with_kind_4_only() {
        // At 0x1000: cmp qword [rip+d], 0 (48 83 3D d 00; the target is relative to the
        // end, after the immediate); at 0x1008: vmovdqu ymm0, [rip+d] (C5 FE 6F 05 d).
        let a = al(&[(0x1000, 0x1000, 0x100), (0x2000, 0x2010, 0x100)]);
        let mut b = vec![0x48, 0x83, 0x3D];
        b.extend_from_slice(&(0x2000i32 - 0x1008).to_le_bytes());
        b.push(0);
        b.extend_from_slice(&[0xC5, 0xFE, 0x6F, 0x05]);
        b.extend_from_slice(&(0x2040i32 - 0x1010).to_le_bytes());
        let before = b.clone();
        let mut narrow = a.clone();
        narrow.names = false;
        x86(&mut b, 0x1000, &narrow);
        assert_eq!(b, before);
        x86(&mut b, 0x1000, &a);
        assert_eq!(le(&b, 3, 4) as i32, 0x2010 - 0x1008);
        assert_eq!(b[7], 0);
        assert_eq!(le(&b, 12, 4) as i32, 0x2050 - 0x1010);
    }

    #[test]
    fn aarch64_bl_and_adrp_add_follow_their_targets() {
        let a = al(&[(0x10000, 0x10000, 0x100), (0x40000, 0x41008, 0x100)]);
        let bl = 0x9400_0000u32 | ((0x40000 - 0x10000) / 4);
        // adrp x1, page of 0x40010; add x1, x1, #0x10
        let pages = (0x40000u32 - 0x10000) >> 12;
        let adrp = 0x9000_0001u32 | (pages & 3) << 29 | (pages >> 2) << 5;
        let add = 0x9100_0021u32 | (0x10 << 10);
        let mut b = Vec::new();
        for w in [bl, adrp, add] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        arm(&mut b, 0x10000, 0, &a);
        let w = |i: usize| le(&b, i * 4, 4) as u32;
        assert_eq!(w(0) & 0x3FF_FFFF, (0x41008 - 0x10000) / 4);
        let imm = ((w(1) >> 5) & 0x7FFFF) << 2 | (w(1) >> 29) & 3;
        assert_eq!(0x10000 + (imm << 12) + ((w(2) >> 10) & 0xFFF), 0x41018);
    }

    /// A match that runs from one load segment over the file's padding into the next
    /// aligns both parts (it used to end at the padding: numpy's whole code, after its
    /// first match ran from the headers into it, had no segment).
    #[test]
    fn a_match_across_the_padding_between_load_segments_aligns_both_parts() {
        let layout = |second: u64| Layout {
            machine: Machine::X86_64,
            sections: Vec::new(),
            loads: vec![
                Load {
                    off: 0,
                    filesz: 0x1800,
                    vaddr: 0,
                },
                Load {
                    off: 0x2000,
                    filesz: 0x4000,
                    vaddr: second,
                },
            ],
            bss: None,
            unwind: None,
            debug: None,
            debug_sections: dwarf::Sections::default(),
            plt: symbols::Sections::default(),
            named: [None; NAME_LISTS],
        };
        let m = bidiff::Match {
            add_old_start: 0x100,
            add_new_start: 0x100,
            add_length: 0x5000,
            copy_end: 0x5100,
        };
        let a = align(
            [m],
            (&layout(0x10000), &[]),
            (&layout(0x11000), &[]),
            symbols::Paired::default(),
        );
        assert_eq!(a.map(0x100), Some(0x100));
        assert_eq!(a.map(0x17FF), Some(0x17FF));
        assert_eq!(a.map(0x10000), Some(0x11000));
        assert_eq!(a.map(0x130FF), Some(0x140FF));
        assert_eq!(a.map(0x13100), None);
    }

    #[test]
    fn aarch64_adrp_pairs_with_a_later_load_with_kind_4_only() {
        // adrp x3, page of 0x40010; mov x1, x2; ldr q0, [x3, #0x10] (scale 16).
        let a = al(&[(0x10000, 0x10000, 0x100), (0x40000, 0x41020, 0x100)]);
        let pages = (0x40000u32 - 0x10000) >> 12;
        let adrp = 0x9000_0003u32 | (pages & 3) << 29 | (pages >> 2) << 5;
        let mov = 0xAA02_03E1u32;
        let ldr_q = 0x3DC0_0060u32 | 1 << 10;
        let mut b = Vec::new();
        for w in [adrp, mov, ldr_q] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let before = b.clone();
        let mut narrow = a.clone();
        narrow.names = false;
        arm(&mut b, 0x10000, 0, &narrow);
        assert_eq!(b, before);
        arm(&mut b, 0x10000, 0, &a);
        let w = |i: usize| le(&b, i * 4, 4) as u32;
        let imm = ((w(0) >> 5) & 0x7FFFF) << 2 | (w(0) >> 29) & 3;
        assert_eq!(w(1), mov);
        assert_eq!(0x10000 + (imm << 12) + ((w(2) >> 10) & 0xFFF) * 16, 0x41030);
    }

    #[test]
    fn hostile_headers_are_refused_not_panicked_on() {
        let mut h = vec![0u8; 128];
        h[..6].copy_from_slice(b"\x7fELF\x02\x01");
        h[18] = 62;
        for (at, v) in [(40usize, u64::MAX - 10), (40, 64), (32, u64::MAX)] {
            let mut x = h.clone();
            x[at..at + 8].copy_from_slice(&v.to_le_bytes());
            x[58] = 64;
            x[60] = 0xFF;
            x[61] = 0xFF;
            assert!(Layout::of_bytes(&x).is_none());
        }
    }
}
