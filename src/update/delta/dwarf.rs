//! The addresses in an ELF file's DWARF debug sections, for the ELF preprocessing
//! (`exe.rs`, SPEC.md §11.6, record kind 3): where they are, and how old' rewrites them.
//!
//! A library built with `-g` carries more debug bytes than code (zstandard's 11 MiB
//! library: 9 MiB of DWARF), and they are full of absolute code addresses: every function's
//! and inlined call's `DW_AT_low_pc`, every range list (`.debug_ranges`), every location
//! list (`.debug_loc`), every line-number sequence's start. When a patch moves code, all of
//! them change; stock bsdiff spends 1.4 MB of its 1.57 MB on zstandard's debug sections.
//! They are rewritten as the code's pointers are: to the address the alignment predicts.
//!
//! Read (DWARF 2 to 5, 32-bit format, 8-byte addresses):
//! - `.debug_info`: each unit's debugging entries, through its abbreviations
//!   (`.debug_abbrev`): every `DW_FORM_addr` value, and a location expression that starts
//!   with `DW_OP_addr` (a global variable's);
//! - the range lists (`.debug_ranges`) and location lists (`.debug_loc`) that the entries'
//!   `DW_AT_ranges`, `DW_AT_location` and `DW_AT_frame_base` point to: absolute addresses
//!   while the list's base address is 0 (a base-address entry's address is one too), else
//!   offsets from it (clang's single-section units), rewritten to the offset the new
//!   layout gives;
//! - `.debug_line`: each line program's `DW_LNE_set_address`;
//! - offsets from one debug section into another, or within `.debug_info`: references
//!   between entries (`DW_FORM_ref4`, `DW_FORM_ref_addr`), strings (`DW_FORM_strp`), and
//!   the line program, range and location lists an entry names. When a patch adds one
//!   entry, every reference past it changes; these map through alignments of the debug
//!   sections (offset to offset) that record kind 3 carries (`exe.rs`);
//! - DWARF 5: every address of `.debug_addr`; the absolute entries of `.debug_rnglists`
//!   and `.debug_loclists` (base address, start-end, start-length), read in order past
//!   each contribution's offset table; every offset of `.debug_str_offsets`.
//!
//! A range's end (one past its last byte) is mapped through its last byte. Not rewritten:
//! DWARF 5's offset pairs (LEB128 offsets from a base that an index into `.debug_addr`
//! gives: clang's lists of a unit whose code is one section), and offsets into
//! `.debug_line_str`, `.debug_rnglists` and `.debug_loclists`.
//!
//! Hostile input: sections are read only up to [`SECTION_MAX`]; at most [`FIELDS_MAX`]
//! fields, [`SPECS_MAX`] abbreviations and attribute specifications and [`LISTS_MAX`] lists
//! are kept, and at most [`STEPS_MAX`] attribute values and list entries read; every read
//! is checked against its unit and its section; a unit, list or contribution stops at the
//! first thing it cannot read (what came before is kept: the reader and the writer parse the same
//! old file, so they agree).

use std::collections::HashMap;
use std::io;

use super::unwind::{uleb, ReadAt};

/// Largest debug section read; a larger one is not rewritten.
pub const SECTION_MAX: u64 = 16 << 20;
/// Most fields kept, of all three sorts together (8 or 16 bytes each).
pub const FIELDS_MAX: usize = 1 << 21;
/// Most abbreviations (16 bytes each) and attribute specifications (4 bytes each) kept
/// from `.debug_abbrev`, together.
pub const SPECS_MAX: usize = 1 << 20;
/// Most range and location lists followed (16 bytes each).
pub const LISTS_MAX: usize = 1 << 19;
/// Most attribute values and list entries read, over all units and lists (a hostile file
/// could otherwise make one byte of `.debug_info` cost a whole abbreviation).
pub const STEPS_MAX: usize = 1 << 26;

const DW_AT_LOCATION: u16 = 0x02;
const DW_AT_LOW_PC: u16 = 0x11;
const DW_AT_HIGH_PC: u16 = 0x12;
const DW_AT_FRAME_BASE: u16 = 0x40;
const DW_AT_RANGES: u16 = 0x55;
const DW_AT_STMT_LIST: u16 = 0x10;
const DW_AT_GNU_LOCVIEWS: u16 = 0x2137;
const DW_FORM_ADDR: u16 = 0x01;
const DW_FORM_STRP: u16 = 0x0e;
const DW_FORM_REF_ADDR: u16 = 0x10;
const DW_FORM_REF4: u16 = 0x13;
const DW_FORM_DATA4: u16 = 0x06;
const DW_FORM_SEC_OFFSET: u16 = 0x17;
const DW_FORM_EXPRLOC: u16 = 0x18;
const DW_FORM_INDIRECT: u16 = 0x16;
const DW_FORM_IMPLICIT_CONST: u16 = 0x21;
const DW_OP_ADDR: u8 = 0x03;
const DW_LNE_SET_ADDRESS: u8 = 0x02;
const DW_LNS_FIXED_ADVANCE_PC: u8 = 0x09;

/// How many debug sections offsets point into: `.debug_info`, `.debug_str`,
/// `.debug_line`, `.debug_loc`, `.debug_ranges`, in this order ([`Sections::targets`]).
pub const TARGETS: usize = 5;
const INFO: u8 = 0;
const STR: u8 = 1;
const LINE: u8 = 2;
const LOC: u8 = 3;
const RANGES: u8 = 4;

/// The debug sections a file's [`Debug`] is read from: file offset and size of each.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sections {
    pub info: Option<(u64, u64)>,
    pub abbrev: Option<(u64, u64)>,
    pub str: Option<(u64, u64)>,
    pub ranges: Option<(u64, u64)>,
    pub loc: Option<(u64, u64)>,
    pub line: Option<(u64, u64)>,
    pub addr: Option<(u64, u64)>,
    pub rnglists: Option<(u64, u64)>,
    pub loclists: Option<(u64, u64)>,
    pub str_offsets: Option<(u64, u64)>,
}

impl Sections {
    /// Notes the section called `name` (file offset `off`, `size` bytes) if it is one of them.
    pub fn note(&mut self, name: &[u8], off: u64, size: u64) {
        let slot = match name {
            b".debug_info" => &mut self.info,
            b".debug_abbrev" => &mut self.abbrev,
            b".debug_str" => &mut self.str,
            b".debug_ranges" => &mut self.ranges,
            b".debug_loc" => &mut self.loc,
            b".debug_line" => &mut self.line,
            b".debug_addr" => &mut self.addr,
            b".debug_rnglists" => &mut self.rnglists,
            b".debug_loclists" => &mut self.loclists,
            b".debug_str_offsets" => &mut self.str_offsets,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some((off, size));
        }
    }

    /// The sections offsets point into, in the order of [`TARGETS`].
    pub fn targets(&self) -> [Option<(u64, u64)>; TARGETS] {
        [self.info, self.str, self.line, self.loc, self.ranges]
    }
}

/// Where a file's debug sections keep absolute addresses.
#[derive(Debug, Clone, Default)]
pub struct Debug {
    /// File offsets of 8-byte address fields, sorted, times two, plus 1 for a range's end
    /// (one past its last byte).
    fields: Vec<u64>,
    /// Fields that hold an offset from a base address (a list entry of a unit whose base
    /// is not 0), as `fields` holds them, with the base; sorted.
    rel: Vec<(u64, u64)>,
    /// 4-byte fields that hold an offset into a debug section: file offset times 8 plus
    /// the section ([`TARGETS`]), and the base the offset counts from (the unit's start
    /// for a reference within a unit, else 0: the section's start); sorted.
    offs: Vec<(u64, u64)>,
}

/// Which list a debugging entry points to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum List {
    Ranges,
    Loc,
}

/// Bytes of a section at a file offset, with bounded little-endian reads.
struct Sec {
    b: Vec<u8>,
    off: u64,
}

impl Sec {
    fn read(read_at: ReadAt<'_>, size: u64, s: Option<(u64, u64)>) -> io::Result<Option<Sec>> {
        let Some((off, len)) =
            s.filter(|&(o, l)| l <= SECTION_MAX && o.checked_add(l).is_some_and(|e| e <= size))
        else {
            return Ok(None);
        };
        let mut b = vec![0u8; len as usize];
        read_at(off, &mut b)?;
        Ok(Some(Sec { b, off }))
    }
}

fn le(b: &[u8], at: usize, n: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(n)?)?;
    Some(s.iter().rev().fold(0u64, |x, &y| (x << 8) | y as u64))
}

/// Rewrites, in `buf` (the old file's bytes from offset `start`), each of `fields` (sorted
/// by the file offset `at` gives) whose `width` bytes lie wholly inside it, to what `new`
/// makes of its value (`None`: left as it is).
fn rewrite<T>(
    fields: &[T],
    at: impl Fn(&T) -> u64,
    start: u64,
    buf: &mut [u8],
    width: usize,
    new: impl Fn(&T, Option<u64>) -> Option<u64>,
) {
    let end = start + buf.len() as u64;
    let from = fields.partition_point(|f| at(f) < start);
    for f in &fields[from..] {
        let a = at(f);
        if a + width as u64 > end {
            break;
        }
        let i = (a - start) as usize;
        if let Some(nv) = new(f, le(buf, i, width)) {
            buf[i..i + width].copy_from_slice(&nv.to_le_bytes()[..width]);
        }
    }
}

/// What the parse has found so far, and the work it may still do.
struct Found {
    /// As [`Debug::fields`], [`Debug::rel`] and [`Debug::offs`], unsorted, at most
    /// [`FIELDS_MAX`] together.
    fields: Vec<u64>,
    rel: Vec<(u64, u64)>,
    offs: Vec<(u64, u64)>,
    /// The lists to read, with their base address, at most [`LISTS_MAX`].
    lists: Vec<(List, u64, u64)>,
    /// Attribute values and list entries that may still be read ([`STEPS_MAX`]).
    steps: usize,
}

impl Found {
    /// Records the field at file offset `at` (`end`: a range's end) that holds an address
    /// (`base` 0) or an offset from `base`; `None` once full.
    fn push(&mut self, at: u64, end: bool, base: u64) -> Option<()> {
        self.room()?;
        match base {
            0 => self.fields.push(at << 1 | end as u64),
            b => self.rel.push((at << 1 | end as u64, b)),
        }
        Some(())
    }

    /// Records the 4-byte offset at file offset `at` into section `target` from `base`;
    /// `None` once full.
    fn push_offset(&mut self, at: u64, target: u8, base: u64) -> Option<()> {
        self.room()?;
        self.offs.push((at << 3 | target as u64, base));
        Some(())
    }

    fn room(&self) -> Option<()> {
        (self.fields.len() + self.rel.len() + self.offs.len() < FIELDS_MAX).then_some(())
    }

    /// Counts one step of work; `None` once there is none left.
    fn step(&mut self) -> Option<()> {
        self.steps = self.steps.checked_sub(1)?;
        Some(())
    }
}

/// One abbreviation: its code, and its attributes' (name, form) as a range of the spec
/// list.
type Abbrev = (u64, u32, u32);

/// The abbreviation tables read so far, by offset in `.debug_abbrev`.
struct Abbrevs<'a> {
    b: &'a [u8],
    /// Every table's (name, form) pairs.
    specs: Vec<(u16, u16)>,
    /// Each table's abbreviations, sorted by code, by the table's offset.
    tables: HashMap<u64, Vec<Abbrev>>,
    /// Abbreviations and specs that may still be read, over all tables ([`SPECS_MAX`]).
    budget: usize,
}

impl Abbrevs<'_> {
    /// Reads the table at `off` unless it was read (a table cut short keeps what came
    /// before).
    fn load(&mut self, off: u64) {
        if !self.tables.contains_key(&off) {
            let t = self.parse(off);
            self.tables.insert(off, t);
        }
    }

    fn parse(&mut self, off: u64) -> Vec<Abbrev> {
        let mut t = Vec::new();
        self.read(off, &mut t);
        // The first declaration of a code is kept.
        t.sort_by_key(|a| a.0);
        t.dedup_by_key(|a| a.0);
        t
    }

    fn read(&mut self, off: u64, t: &mut Vec<Abbrev>) {
        let Ok(mut p) = usize::try_from(off) else {
            return;
        };
        loop {
            let Some(code) = uleb(self.b, &mut p).filter(|&c| c != 0) else {
                return;
            };
            // The tag, then whether entries have children.
            if self.budget == 0 || uleb(self.b, &mut p).is_none() || self.b.get(p).is_none() {
                return;
            }
            self.budget -= 1;
            p += 1;
            let from = self.specs.len();
            loop {
                let (Some(name), Some(form)) = (uleb(self.b, &mut p), uleb(self.b, &mut p)) else {
                    return;
                };
                if name == 0 && form == 0 {
                    break;
                }
                if form == DW_FORM_IMPLICIT_CONST as u64 && sleb(self.b, &mut p).is_none() {
                    return;
                }
                if self.budget == 0 {
                    return;
                }
                self.budget -= 1;
                // Names and forms past 16 bits are none DWARF defines: such an entry
                // cannot be read.
                let clip = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
                self.specs.push((clip(name), clip(form)));
            }
            // Both fit: the budget keeps the list under 2^20 entries.
            t.push((code, from as u32, self.specs.len() as u32));
        }
    }
}

/// A signed LEB128 number's bytes skipped (its value is not needed).
fn sleb(b: &[u8], at: &mut usize) -> Option<()> {
    uleb(b, at).map(drop)
}

impl Debug {
    /// Finds the address fields of a file of `size` bytes whose debug sections are `s`.
    /// `Ok(None)` when it has none.
    pub fn parse(read_at: ReadAt<'_>, size: u64, s: &Sections) -> io::Result<Option<Debug>> {
        let mut f = Found {
            fields: Vec::new(),
            rel: Vec::new(),
            offs: Vec::new(),
            lists: Vec::new(),
            steps: STEPS_MAX,
        };
        if let (Some(info), Some(abbrev)) = (
            Sec::read(read_at, size, s.info)?,
            Sec::read(read_at, size, s.abbrev)?,
        ) {
            let mut ab = Abbrevs {
                b: &abbrev.b,
                specs: Vec::new(),
                tables: HashMap::new(),
                budget: SPECS_MAX,
            };
            units(&info, &mut ab, &mut f);
        }
        // Each list is read once, in order of kind and offset (with the lowest base named).
        let mut lists = std::mem::take(&mut f.lists);
        lists.sort_unstable();
        lists.dedup_by_key(|l| (l.0, l.1));
        for (kind, sec) in [(List::Ranges, s.ranges), (List::Loc, s.loc)] {
            if !lists.iter().any(|l| l.0 == kind) {
                continue;
            }
            if let Some(sec) = Sec::read(read_at, size, sec)? {
                for &(k, at, base) in lists.iter().filter(|l| l.0 == kind) {
                    let _ = list(&sec, k, at, base, &mut f);
                }
            }
        }
        if let Some(line) = Sec::read(read_at, size, s.line)? {
            contributions(&line.b, |b, p| program(b, p, line.off, &mut f));
        }
        if let Some(addr) = Sec::read(read_at, size, s.addr)? {
            contributions(&addr.b, |b, p| addresses(b, p, addr.off, &mut f));
        }
        if let Some(so) = Sec::read(read_at, size, s.str_offsets)? {
            contributions(&so.b, |b, p| str_offsets(b, p, so.off, &mut f));
        }
        for (sec, loc) in [(s.rnglists, false), (s.loclists, true)] {
            if let Some(l) = Sec::read(read_at, size, sec)? {
                contributions(&l.b, |b, p| lists5(b, p, l.off, loc, &mut f));
            }
        }
        let (mut fields, mut rel, mut offs) = (f.fields, f.rel, f.offs);
        fields.sort_unstable();
        fields.dedup_by_key(|f| *f >> 1);
        rel.sort_unstable();
        rel.dedup_by_key(|f| f.0 >> 1);
        offs.sort_unstable();
        offs.dedup_by_key(|f| f.0 >> 3);
        let none = fields.is_empty() && rel.is_empty() && offs.is_empty();
        Ok((!none).then_some(Debug { fields, rel, offs }))
    }

    /// Rewrites, in `buf` (the old file's bytes from offset `start`), the fields that lie
    /// wholly inside it: an address *v* of at least `min` to `map_target(v)`, a range's
    /// end to `map_target(v - 1) + 1`; an offset *v* from base *b* to the same of address
    /// *b + v*, minus `map_target(b)`. An offset *v* into debug section *k* from base *b*
    /// to `section(k, b + v, true) - section(k, b, false)` (`section` maps an offset of
    /// section *k* to the new file's, as a reference's target when its last argument is
    /// true; a base of 0 is the section's start and stays 0).
    pub fn relocate(
        &self,
        start: u64,
        buf: &mut [u8],
        min: u64,
        map_target: &dyn Fn(u64) -> Option<u64>,
        section: &dyn Fn(usize, u64, bool) -> Option<u64>,
    ) {
        // Where address `a` (a range's end when `f & 1`) sits in the new layout.
        let new_of = |a: u64, f: u64| match f & 1 {
            0 => map_target(a),
            _ => map_target(a.checked_sub(1)?)?.checked_add(1),
        };
        rewrite(
            &self.fields,
            |&f| f >> 1,
            start,
            buf,
            8,
            |&f, v| new_of(v.filter(|&v| v >= min)?, f),
        );
        rewrite(
            &self.rel,
            |f| f.0 >> 1,
            start,
            buf,
            8,
            |&(f, base), v| {
                let t = new_of(base.checked_add(v?)?, f)?;
                t.checked_sub(map_target(base)?)
            },
        );
        rewrite(
            &self.offs,
            |f| f.0 >> 3,
            start,
            buf,
            4,
            |&(f, base), v| {
                let k = (f & 7) as usize;
                let t = section(k, base.checked_add(v?)?, true)?;
                let nb = match base {
                    0 => 0,
                    b => section(k, b, false)?,
                };
                t.checked_sub(nb).filter(|&n| u32::try_from(n).is_ok())
            },
        );
    }

    /// The address fields' offsets (and whether each is a range's end).
    #[cfg(test)]
    fn offsets(&self) -> Vec<(u64, bool)> {
        self.fields.iter().map(|f| (f >> 1, f & 1 == 1)).collect()
    }

    /// The offset fields' offsets, ends and bases.
    #[cfg(test)]
    fn relative(&self) -> Vec<(u64, bool, u64)> {
        self.rel
            .iter()
            .map(|&(f, b)| (f >> 1, f & 1 == 1, b))
            .collect()
    }
}

/// Walks the units of `.debug_info`, recording `DW_FORM_addr` fields and an expression's
/// leading `DW_OP_addr`, and noting the lists each unit names, with its base address.
fn units(info: &Sec, ab: &mut Abbrevs<'_>, f: &mut Found) {
    contributions(&info.b, |b, p| {
        let unit = Unit {
            b,
            foff: info.off,
            start: p as u64 - 4,
        };
        // The unit's lists get its base once its first entry is read (the lists of a unit
        // whose first entry cannot be read are not).
        let before = f.lists.len();
        let mut base = None;
        let r = unit.walk(p, ab, f, &mut base);
        match base {
            Some(b) => f.lists[before..].iter_mut().for_each(|l| l.2 = b),
            None => f.lists.truncate(before),
        }
        r
    });
}

/// One unit of `.debug_info`: the section's bytes up to the unit's end.
struct Unit<'a> {
    b: &'a [u8],
    /// The section's file offset.
    foff: u64,
    /// Where the unit starts (its length) in the section: the base of its references.
    start: u64,
}

impl Unit<'_> {
    /// Reads the unit whose header starts at `p` (after its length): records its address
    /// fields and the lists it points to, and sets `base` once its first entry is read
    /// (that entry's `DW_AT_low_pc`, else 0). `None` where it stops early.
    fn walk(
        &self,
        mut p: usize,
        ab: &mut Abbrevs<'_>,
        f: &mut Found,
        base: &mut Option<u64>,
    ) -> Option<()> {
        let b = self.b;
        let version = le(b, p, 2)? as u16;
        p += 2;
        let (abbrev_off, addr_size) = match version {
            2..=4 => {
                let a = le(b, p, 4)?;
                let addr_size = *b.get(p + 4)?;
                p += 5;
                (a, addr_size)
            }
            5 => {
                let unit_type = *b.get(p)?;
                let addr_size = *b.get(p + 1)?;
                let a = le(b, p + 2, 4)?;
                p += 6;
                p += match unit_type {
                    1 | 3 => 0,
                    2 | 6 => 12,
                    4 | 5 => 8,
                    _ => return None,
                };
                (a, addr_size)
            }
            _ => return None,
        };
        if addr_size != 8 {
            return None;
        }
        ab.load(abbrev_off);
        let (table, specs) = (&ab.tables[&abbrev_off], &ab.specs);
        let abbrev = |code: u64| {
            let i = table.binary_search_by_key(&code, |a| a.0).ok()?;
            Some((table[i].1 as usize, table[i].2 as usize))
        };
        while p < b.len() {
            let code = uleb(b, &mut p)?;
            if code == 0 {
                continue;
            }
            let (from, to) = abbrev(code)?;
            let first = base.is_none();
            let mut low = 0;
            for &(name, form) in &specs[from..to] {
                f.step()?;
                let form = match form {
                    DW_FORM_INDIRECT => u16::try_from(uleb(b, &mut p)?).ok()?,
                    f => f,
                };
                let field_at = p;
                p = skip(b, p, form, version)?;
                match form {
                    DW_FORM_ADDR => {
                        if name == DW_AT_LOW_PC {
                            low = le(b, field_at, 8)?;
                        }
                        f.push(self.foff + field_at as u64, name == DW_AT_HIGH_PC, 0)?;
                    }
                    // An offset into another section (`DW_FORM_data4` is a constant from
                    // DWARF 4 on; DWARF 5's lists are in `.debug_rnglists` and
                    // `.debug_loclists`, not read).
                    DW_FORM_SEC_OFFSET | DW_FORM_DATA4
                        if form == DW_FORM_SEC_OFFSET || version < 4 =>
                    {
                        let (target, kind) = match (name, version < 5) {
                            (DW_AT_STMT_LIST, _) => (LINE, None),
                            (DW_AT_RANGES, true) => (RANGES, Some(List::Ranges)),
                            (DW_AT_LOCATION | DW_AT_FRAME_BASE, true) => (LOC, Some(List::Loc)),
                            (DW_AT_GNU_LOCVIEWS, true) => (LOC, None),
                            _ => continue,
                        };
                        f.push_offset(self.foff + field_at as u64, target, 0)?;
                        if let (Some(kind), true) = (kind, f.lists.len() < LISTS_MAX) {
                            f.lists.push((kind, le(b, field_at, 4)?, 0));
                        }
                    }
                    DW_FORM_REF4 => f.push_offset(self.foff + field_at as u64, INFO, self.start)?,
                    DW_FORM_REF_ADDR if version >= 3 => {
                        f.push_offset(self.foff + field_at as u64, INFO, 0)?
                    }
                    DW_FORM_STRP => f.push_offset(self.foff + field_at as u64, STR, 0)?,
                    DW_FORM_EXPRLOC if name == DW_AT_LOCATION => {
                        // The expression follows its length.
                        let mut q = field_at;
                        let n = uleb(b, &mut q)?;
                        if n >= 9 && b.get(q) == Some(&DW_OP_ADDR) {
                            f.push(self.foff + q as u64 + 1, false, 0)?;
                        }
                    }
                    _ => {}
                }
            }
            if first {
                *base = Some(low);
            }
        }
        Some(())
    }
}

/// Where the value of form `form` that starts at `p` ends (32-bit DWARF, 8-byte
/// addresses), when it lies in `b`.
fn skip(b: &[u8], mut p: usize, form: u16, version: u16) -> Option<usize> {
    let fixed = |p: usize, n: usize| p.checked_add(n).filter(|&e| e <= b.len());
    match form {
        0x01 => fixed(p, 8),
        0x0b | 0x11 | 0x0c | 0x25 | 0x29 => fixed(p, 1),
        0x05 | 0x12 | 0x26 | 0x2a => fixed(p, 2),
        0x27 | 0x2b => fixed(p, 3),
        0x06 | 0x13 | 0x0e | 0x17 | 0x1f | 0x1d | 0x1c | 0x28 | 0x2c | 0x1f20 | 0x1f21 => {
            fixed(p, 4)
        }
        // DW_FORM_ref_addr is address-sized in DWARF 2.
        0x10 => fixed(p, if version == 2 { 8 } else { 4 }),
        0x07 | 0x14 | 0x20 => fixed(p, 8),
        0x1e => fixed(p, 16),
        0x19 | DW_FORM_IMPLICIT_CONST => Some(p),
        0x0d | 0x0f | 0x15 | 0x1a | 0x1b | 0x22 | 0x23 | 0x1f01 | 0x1f02 => {
            uleb(b, &mut p).map(|_| p)
        }
        0x08 => {
            let n = b.get(p..)?.iter().position(|&c| c == 0)?;
            fixed(p, n + 1)
        }
        0x0a => fixed(p + 1, *b.get(p)? as usize),
        0x03 => fixed(p + 2, le(b, p, 2)? as usize),
        0x04 => fixed(p + 4, le(b, p, 4)? as usize),
        0x09 | 0x18 => {
            let n = uleb(b, &mut p)?;
            fixed(p, usize::try_from(n).ok()?)
        }
        _ => None,
    }
}

/// Records the fields of the range or location list at `at` in `sec`, whose base address
/// starts as `base`: both ends of each entry (addresses while the base is 0, else offsets
/// from it), and each base-address entry's address (the new base).
fn list(sec: &Sec, kind: List, at: u64, mut base: u64, f: &mut Found) -> Option<()> {
    let b = sec.b.as_slice();
    let mut p = usize::try_from(at).ok()?;
    while let (Some(lo), Some(hi)) = (le(b, p, 8), le(b, p.saturating_add(8), 8)) {
        if lo == 0 && hi == 0 {
            return Some(());
        }
        f.step()?;
        let at = sec.off + p as u64;
        if lo == u64::MAX {
            base = hi;
            f.push(at + 8, false, 0)?;
        } else {
            f.push(at, false, base)?;
            f.push(at + 8, true, base)?;
        }
        p += 16;
        if kind == List::Loc && lo != u64::MAX {
            p += 2 + le(b, p, 2)? as usize;
        }
    }
    Some(())
}

/// Calls `each(unit, p)` for each contribution (unit) of a section in the 32-bit format,
/// from its start while a length under 0xFFFFFFF0 fits: `unit` is the section up to the
/// contribution's end, `p` where its header goes on after the length. Stops once `each`
/// returns `None` with no room left for fields, or with its work budget spent.
fn contributions(b: &[u8], mut each: impl FnMut(&[u8], usize) -> Option<()>) {
    let mut p = 0usize;
    while let Some(len) = le(b, p, 4) {
        if len >= 0xffff_fff0 {
            return;
        }
        let Some(end) = (p + 4).checked_add(len as usize).filter(|&e| e <= b.len()) else {
            return;
        };
        let _ = each(&b[..end], p + 4);
        p = end;
    }
}

/// The header of a DWARF 5 `.debug_addr`, `.debug_rnglists` or `.debug_loclists`
/// contribution at `p` (after its length): version 5, address size 8, no segment
/// selector; `p` past those 4 bytes.
fn header5(b: &[u8], p: usize) -> Option<usize> {
    (le(b, p, 2)? == 5 && *b.get(p + 2)? == 8 && *b.get(p + 3)? == 0).then_some(p + 4)
}

/// One `.debug_addr` contribution (DWARF 5, at file offset `foff`): every address.
fn addresses(b: &[u8], p: usize, foff: u64, f: &mut Found) -> Option<()> {
    let mut q = header5(b, p)?;
    while q + 8 <= b.len() {
        f.step()?;
        f.push(foff + q as u64, false, 0)?;
        q += 8;
    }
    Some(())
}

/// One `.debug_str_offsets` contribution (DWARF 5): every offset into `.debug_str`.
fn str_offsets(b: &[u8], p: usize, foff: u64, f: &mut Found) -> Option<()> {
    if le(b, p, 2)? != 5 {
        return None;
    }
    // Version, then 2 bytes of padding.
    let mut q = p + 4;
    while q + 4 <= b.len() {
        f.step()?;
        f.push_offset(foff + q as u64, STR, 0)?;
        q += 4;
    }
    Some(())
}

/// One `.debug_rnglists` or (`loc`) `.debug_loclists` contribution (DWARF 5): its entries
/// in order, past the offset table. The addresses of `DW_RLE_base_address`,
/// `DW_RLE_start_end`, `DW_RLE_start_length` and their `DW_LLE_` counterparts are fields
/// (a start-end entry's second one a range's end); index and offset-pair entries hold
/// nothing rewritten; a location entry's expression is skipped by its length.
fn lists5(b: &[u8], p: usize, foff: u64, loc: bool, f: &mut Found) -> Option<()> {
    let q = header5(b, p)?;
    let count = le(b, q, 4)? as usize;
    let mut q = (q + 4).checked_add(count.checked_mul(4)?)?;
    let at = |q: usize| (q + 8 <= b.len()).then_some(foff + q as u64);
    while q < b.len() {
        f.step()?;
        let kind = b[q];
        q += 1;
        // Whether an expression follows the entry's operands.
        let mut expr = loc;
        match (kind, loc) {
            (0, _) => expr = false,
            (1, _) => {
                uleb(b, &mut q)?;
                expr = false;
            }
            (2..=4, _) => {
                uleb(b, &mut q)?;
                uleb(b, &mut q)?;
            }
            (5, false) | (6, true) => {
                f.push(at(q)?, false, 0)?;
                q += 8;
                expr = false;
            }
            (6, false) | (7, true) => {
                f.push(at(q)?, false, 0)?;
                f.push(at(q + 8)?, true, 0)?;
                q += 16;
            }
            (7, false) | (8, true) => {
                f.push(at(q)?, false, 0)?;
                q += 8;
                uleb(b, &mut q)?;
            }
            // DW_LLE_default_location: the expression alone.
            (5, true) => {}
            // GNU's view pair.
            (9, true) => {
                uleb(b, &mut q)?;
                uleb(b, &mut q)?;
                expr = false;
            }
            _ => return None,
        }
        if expr {
            let n = usize::try_from(uleb(b, &mut q)?).ok()?;
            q = q.checked_add(n)?;
        }
    }
    Some(())
}

/// One line program whose header starts at `p` (after its length) in `b` (the section up
/// to the unit's end).
fn program(b: &[u8], mut p: usize, foff: u64, f: &mut Found) -> Option<()> {
    let version = le(b, p, 2)?;
    p += 2;
    match version {
        2..=4 => {}
        5 => {
            // address_size, segment_selector_size
            if *b.get(p)? != 8 {
                return None;
            }
            p += 2;
        }
        _ => return None,
    }
    let header_len = le(b, p, 4)? as usize;
    p += 4;
    let prog = p.checked_add(header_len)?;
    // minimum_instruction_length, [maximum_operations_per_instruction,] default_is_stmt,
    // line_base, line_range, opcode_base, standard_opcode_lengths.
    p += if version >= 4 { 5 } else { 4 };
    let opcode_base = *b.get(p)?;
    let lengths = b.get(p + 1..p + opcode_base.max(1) as usize)?;
    p = prog;
    while p < b.len() {
        let op = b[p];
        p += 1;
        if op == 0 {
            let n = usize::try_from(uleb(b, &mut p)?).ok()?;
            let sub = p;
            p = p.checked_add(n).filter(|&e| e <= b.len())?;
            if n == 9 && b[sub] == DW_LNE_SET_ADDRESS {
                f.push(foff + sub as u64 + 1, false, 0)?;
            }
        } else if op == DW_LNS_FIXED_ADVANCE_PC && op < opcode_base {
            p += 2;
        } else if op < opcode_base {
            for _ in 0..*lengths.get(op as usize - 1)? {
                uleb(b, &mut p)?;
            }
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DWARF 4 unit with one abbreviation table, a range list, a location list and a
    /// line program, laid out as one buffer: (bytes, sections).
    pub(super) fn image() -> (Vec<u8>, Sections) {
        let mut f = vec![0u8; 16];
        // .debug_abbrev: 1 = compile_unit, children: ranges sec_offset, low_pc addr,
        // name string; 2 = subprogram, no children: low_pc addr, high_pc data8,
        // frame_base sec_offset; 3 = variable: location exprloc; 0.
        let abbrev_at = f.len();
        f.extend_from_slice(&[1, 0x11, 1, 0x55, 0x17, 0x11, 0x01, 0x03, 0x08, 0, 0]);
        f.extend_from_slice(&[2, 0x2e, 0, 0x11, 0x01, 0x12, 0x07, 0x40, 0x17, 0, 0]);
        f.extend_from_slice(&[3, 0x34, 0, 0x02, 0x18, 0, 0, 0]);
        let abbrev = (abbrev_at as u64, (f.len() - abbrev_at) as u64);
        // .debug_ranges: one list at 0 with two ranges.
        let ranges_at = f.len();
        for v in [0x1000u64, 0x1040, 0x2000, 0x2010, 0, 0] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        let ranges = (ranges_at as u64, (f.len() - ranges_at) as u64);
        // .debug_loc: a list at 0: one entry with a 1-byte expression, then a base entry,
        // then an entry relative to it (not an address), then the end.
        let loc_at = f.len();
        for v in [0x1000u64, 0x1008] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&[1, 0, 0x50]);
        for v in [u64::MAX, 0x3000, 4, 8] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(&[1, 0, 0x51]);
        f.extend_from_slice(&[0; 16]);
        let loc = (loc_at as u64, (f.len() - loc_at) as u64);
        // .debug_info: version 4, abbrev 0, address size 8.
        let info_at = f.len();
        let mut u = vec![4, 0, 0, 0, 0, 0, 8];
        u.push(1);
        u.extend_from_slice(&0u32.to_le_bytes());
        u.extend_from_slice(&0u64.to_le_bytes());
        u.extend_from_slice(b"a.c\0");
        u.push(2);
        u.extend_from_slice(&0x1000u64.to_le_bytes());
        u.extend_from_slice(&0x40u64.to_le_bytes());
        u.extend_from_slice(&0u32.to_le_bytes());
        u.push(3);
        u.push(9);
        u.push(DW_OP_ADDR);
        u.extend_from_slice(&0x4000u64.to_le_bytes());
        u.push(0);
        f.extend_from_slice(&(u.len() as u32).to_le_bytes());
        f.extend_from_slice(&u);
        let info = (info_at as u64, (f.len() - info_at) as u64);
        // .debug_line: version 3, opcode_base 13, then set_address, copy, advance_pc.
        let line_at = f.len();
        let mut l = vec![3, 0];
        let hdr = [
            1u8, 1, 0xfb, 14, 13, 0, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 1, 0, 0,
        ];
        l.extend_from_slice(&(hdr.len() as u32).to_le_bytes());
        l.extend_from_slice(&hdr);
        l.extend_from_slice(&[0, 9, DW_LNE_SET_ADDRESS]);
        l.extend_from_slice(&0x1000u64.to_le_bytes());
        l.extend_from_slice(&[1, 2, 0x40, 0, 1, 1]);
        f.extend_from_slice(&(l.len() as u32).to_le_bytes());
        f.extend_from_slice(&l);
        let line = (line_at as u64, (f.len() - line_at) as u64);
        let s = Sections {
            info: Some(info),
            abbrev: Some(abbrev),
            str: None,
            ranges: Some(ranges),
            loc: Some(loc),
            line: Some(line),
            ..Sections::default()
        };
        (f, s)
    }

    fn parse(b: &[u8], s: &Sections) -> Option<Debug> {
        let mut read = |at: u64, buf: &mut [u8]| -> io::Result<()> {
            let s = usize::try_from(at)
                .ok()
                .and_then(|a| b.get(a..a.checked_add(buf.len())?))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(s);
            Ok(())
        };
        Debug::parse(&mut read, b.len() as u64, s).unwrap()
    }

    #[test]
    fn address_fields_are_found() {
        let (b, s) = image();
        let d = parse(&b, &s).unwrap();
        let at = |sec: Option<(u64, u64)>, k: u64| sec.unwrap().0 + k;
        // After the unit's length.
        let info = |k: u64| at(s.info, 4 + k);
        let want = vec![
            // The unit's low_pc (its base, 0), the subprogram's low_pc, the variable's
            // DW_OP_addr operand.
            (info(12), false),
            (info(25), false),
            (info(48), false),
            // Two ranges of the unit's list.
            (at(s.ranges, 0), false),
            (at(s.ranges, 8), true),
            (at(s.ranges, 16), false),
            (at(s.ranges, 24), true),
            // The location list's absolute entry and its base entry's address.
            (at(s.loc, 0), false),
            (at(s.loc, 8), true),
            (at(s.loc, 27), false),
            // The line program's set_address.
            (at(s.line, 10 + 19 + 3), false),
        ];
        let mut want = want;
        want.sort();
        assert_eq!(d.offsets(), want);
    }

    /// DWARF 5's address table and lists: `(bytes, sections)`.
    fn image5() -> (Vec<u8>, Sections) {
        let mut f = vec![0u8; 8];
        let unit = |f: &mut Vec<u8>, body: &[u8]| {
            let at = f.len() as u64;
            f.extend_from_slice(&(body.len() as u32).to_le_bytes());
            f.extend_from_slice(body);
            Some((at, 4 + body.len() as u64))
        };
        // .debug_addr: two addresses.
        let mut b = vec![5, 0, 8, 0];
        b.extend_from_slice(&0x1000u64.to_le_bytes());
        b.extend_from_slice(&0x2000u64.to_le_bytes());
        let addr = unit(&mut f, &b);
        // .debug_rnglists: no offset table; base_addressx 0, offset_pair 0..16,
        // start_end, start_length, end.
        let mut b = vec![5, 0, 8, 0, 0, 0, 0, 0, 1, 0, 4, 0, 16, 6];
        b.extend_from_slice(&0x3000u64.to_le_bytes());
        b.extend_from_slice(&0x3010u64.to_le_bytes());
        b.push(7);
        b.extend_from_slice(&0x4000u64.to_le_bytes());
        b.extend_from_slice(&[0x20, 0]);
        let rnglists = unit(&mut f, &b);
        // .debug_loclists: a view pair, start_length with a 1-byte expression, base_address,
        // offset_pair with a 2-byte expression, end.
        let mut b = vec![5, 0, 8, 0, 0, 0, 0, 0, 9, 0, 1, 8];
        b.extend_from_slice(&0x5000u64.to_le_bytes());
        b.extend_from_slice(&[4, 1, 0x50, 6]);
        b.extend_from_slice(&0x6000u64.to_le_bytes());
        b.extend_from_slice(&[4, 0, 4, 2, 0x91, 0x10, 0]);
        let loclists = unit(&mut f, &b);
        let s = Sections {
            addr,
            rnglists,
            loclists,
            ..Sections::default()
        };
        (f, s)
    }

    #[test]
    fn dwarf5_addresses_and_lists_are_found() {
        let (b, s) = image5();
        let d = parse(&b, &s).unwrap();
        let at = |sec: Option<(u64, u64)>, k: u64| sec.unwrap().0 + 4 + k;
        let mut want = vec![
            (at(s.addr, 4), false),
            (at(s.addr, 12), false),
            (at(s.rnglists, 14), false),
            (at(s.rnglists, 22), true),
            (at(s.rnglists, 31), false),
            (at(s.loclists, 12), false),
            (at(s.loclists, 24), false),
        ];
        want.sort();
        assert_eq!(d.offsets(), want);
        for cut in 0..b.len() {
            parse(&b[..cut], &s);
            let mut bad = b.clone();
            bad[cut] ^= 0xff;
            parse(&bad, &s);
        }
    }

    #[test]
    fn offsets_into_other_sections_follow_their_maps() {
        let (b, s) = image();
        let d = parse(&b, &s).unwrap();
        let info = s.info.unwrap().0 + 4;
        // The unit's DW_AT_ranges and the subprogram's DW_AT_frame_base.
        let want = [
            ((info + 8) << 3 | RANGES as u64, 0),
            ((info + 41) << 3 | LOC as u64, 0),
        ];
        assert_eq!(d.offs, want);
        // `.debug_loc` grew by 16 bytes before the list; `.debug_ranges` did not move.
        let section = |k: usize, o: u64, _| Some(if k == LOC as usize { o + 16 } else { o });
        let mut buf = b.clone();
        d.relocate(0, &mut buf, 0x1000, &|a| Some(a), &section);
        let at = (info + 41) as usize;
        assert_eq!(le(&buf, at, 4), Some(16));
        assert_eq!(buf[..at], b[..at]);
        assert_eq!(buf[at + 4..], b[at + 4..]);
    }

    #[test]
    fn lists_of_a_unit_with_a_base_hold_offsets_from_it() {
        let (mut b, s) = image();
        // The unit's low_pc (its base) becomes 0x1000: its lists hold offsets from it.
        let low = (s.info.unwrap().0 + 4 + 12) as usize;
        b[low..low + 8].copy_from_slice(&0x1000u64.to_le_bytes());
        // Its first range becomes 0x0 ..= 0x40 from the base (0x1000 to 0x1040).
        let r0 = s.ranges.unwrap().0 as usize;
        b[r0..r0 + 8].copy_from_slice(&0u64.to_le_bytes());
        b[r0 + 8..r0 + 16].copy_from_slice(&0x40u64.to_le_bytes());
        let d = parse(&b, &s).unwrap();
        let rel = d.relative();
        assert!(rel.contains(&(r0 as u64, false, 0x1000)), "{rel:?}");
        assert!(rel.contains(&(r0 as u64 + 8, true, 0x1000)));
        // The location list's base entry gives an address and a base of its own.
        let l0 = s.loc.unwrap().0;
        assert!(d.offsets().contains(&(l0 + 27, false)));
        assert!(rel.contains(&(l0 + 35, false, 0x3000)));
        assert!(
            d.offsets().contains(&(low as u64, false)),
            "low_pc is an address"
        );
        // Code from 0x1020 on moves up by 0x10: the range's end follows, its start (the
        // base) does not.
        let map = |a: u64| Some(if a >= 0x1020 { a + 0x10 } else { a });
        let mut buf = b.clone();
        d.relocate(0, &mut buf, 0x1000, &map, &|_, o, _| Some(o));
        assert_eq!(le(&buf, r0, 8), Some(0));
        assert_eq!(le(&buf, r0 + 8, 8), Some(0x50));
    }

    #[test]
    fn hostile_sections_stop_without_panicking() {
        let (good, s) = image();
        for cut in 0..good.len() {
            parse(&good[..cut], &s);
            let mut bad = good.clone();
            bad[cut] ^= 0xff;
            parse(&bad, &s);
            bad[cut] = 0x80;
            parse(&bad, &s);
        }
        let wild = Sections {
            info: Some((u64::MAX - 4, 8)),
            abbrev: Some((0, u64::MAX)),
            ..Sections::default()
        };
        assert!(parse(&good, &wild).is_none());
    }

    #[test]
    fn relocated_fields_follow_the_map() {
        let (b, s) = image();
        let d = parse(&b, &s).unwrap();
        let mut buf = b.clone();
        // Code from 0x1800 on moves up by 0x100.
        let map = |a: u64| Some(if a >= 0x1800 { a + 0x100 } else { a });
        d.relocate(0, &mut buf, 0x1000, &map, &|_, o, _| Some(o));
        let r = |buf: &[u8], sec: Option<(u64, u64)>, k| le(buf, (sec.unwrap().0 + k) as usize, 8);
        assert_eq!(
            r(&buf, s.ranges, 16),
            Some(0x2100),
            "a moved range starts later"
        );
        assert_eq!(r(&buf, s.ranges, 24), Some(0x2110), "and ends later");
        assert_eq!(
            r(&buf, s.ranges, 8),
            Some(0x1040),
            "a range that stayed ends there"
        );
        assert_eq!(r(&buf, s.loc, 27), Some(0x3100), "a base address follows");
        assert_eq!(r(&buf, s.loc, 35), Some(4), "an offset from it does not");
        // A block that cuts a field leaves it alone.
        let at = (s.ranges.unwrap().0 + 16) as usize;
        let mut part = b[..at + 4].to_vec();
        d.relocate(0, &mut part, 0x1000, &map, &|_, o, _| Some(o));
        assert_eq!(part[at..], b[at..at + 4]);
    }
}
