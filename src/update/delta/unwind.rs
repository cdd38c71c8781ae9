//! The unwind tables of an ELF file, for the ELF preprocessing (`exe.rs`, SPEC.md §11.6,
//! record kind 2): where `.eh_frame` and `.eh_frame_hdr` keep 4-byte offsets, and how
//! old' rewrites them.
//!
//! Every function has a frame description entry (FDE) in `.eh_frame` whose `pc_begin` is
//! the function's address relative to the field itself, whose CIE pointer is the distance
//! back to its common entry, and whose LSDA pointer (C++ and Rust code that unwinds) is
//! relative to itself too; `.eh_frame_hdr` holds a sorted table of (function, FDE) pairs
//! relative to the header. When a patch moves code, every one of these changes: on ruff's
//! 30 MiB program, bsdiff alone spends 163 KB on the 232 KB header table and 200 KB on
//! `.eh_frame`. They are rewritten like the code's rel32 references: to the value the
//! alignment predicts in the new layout.
//!
//! Found as the runtime finds them: the header through `PT_GNU_EH_FRAME` (version 1 with
//! the encodings every toolchain writes: `eh_frame_ptr` pc-relative sdata4, the count
//! udata4, the table data-relative sdata4), `.eh_frame` at the address its pointer gives
//! (the section of that address). Only pc-relative sdata4 pointers (encoding `0x1b`) are
//! rewritten. Hostile input: every length is checked against the record and the section,
//! `.eh_frame` is read only up to [`FRAME_MAX`], at most [`FIELDS_MAX`] fields and
//! [`CIES_MAX`] CIEs are kept; parsing stops at the first record it cannot read (what came
//! before is kept: the reader and the writer parse the same old file, so they agree).

use std::collections::HashMap;
use std::io;

/// Largest `.eh_frame` section parsed; a larger one is not rewritten.
pub const FRAME_MAX: u64 = 16 << 20;
/// Most `.eh_frame` fields kept (8 bytes each).
pub const FIELDS_MAX: usize = 1 << 21;
/// Most CIEs kept.
pub const CIES_MAX: usize = 1 << 16;

/// `PT_GNU_EH_FRAME`.
pub const PT_GNU_EH_FRAME: u32 = 0x6474_e550;
/// The pointer encoding rewritten: pc-relative, signed 4 bytes.
const PCREL_SDATA4: u8 = 0x1b;

/// Where the unwind tables of a file keep their 4-byte offsets.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    /// `.eh_frame_hdr`'s table: its file offset, its entry count, and the header's address
    /// (the entries' base).
    hdr: Option<(u64, u64, u64)>,
    /// `.eh_frame`'s file offset and address.
    frame: (u64, u64),
    /// File offsets of `.eh_frame` fields, sorted, times two, plus 1 for a CIE pointer
    /// (the field's address minus the target's) and 0 for a pc-relative pointer (the
    /// target's address minus the field's).
    fields: Vec<u64>,
}

/// A read of the file at an offset, as `Layout::parse` gives it.
pub type ReadAt<'a> = &'a mut dyn FnMut(u64, &mut [u8]) -> io::Result<()>;

fn le32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// An unsigned LEB128 number at `*at` in `b` (at most 10 bytes), moving `*at` past it.
pub(super) fn uleb(b: &[u8], at: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for k in 0..10 {
        let byte = *b.get(*at)?;
        *at += 1;
        v |= ((byte & 0x7f) as u64) << (7 * k);
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// What an FDE needs from its CIE.
#[derive(Debug, Clone, Copy)]
struct Cie {
    /// Augmentation data present (`z`).
    z: bool,
    fde_enc: u8,
    lsda_enc: Option<u8>,
}

/// Size of a pointer of encoding `enc` (low nibble), when known.
fn enc_size(enc: u8) -> Option<usize> {
    match enc & 0x0f {
        0x00 | 0x04 | 0x0c => Some(8),
        0x02 | 0x0a => Some(2),
        0x03 | 0x0b => Some(4),
        _ => None,
    }
}

/// Parses a CIE whose content (after its id) is `b`.
fn cie(b: &[u8]) -> Option<Cie> {
    let version = *b.first()?;
    let nul = b.get(1..)?.iter().position(|&c| c == 0)?;
    let aug = &b[1..1 + nul];
    let mut at = 1 + nul + 1;
    if version >= 4 {
        // Address size and segment selector size.
        at += 2;
    }
    uleb(b, &mut at)?; // code alignment
    uleb(b, &mut at)?; // data alignment (its sign does not matter here)
    match version {
        1 => at += 1,
        _ => {
            uleb(b, &mut at)?;
        }
    }
    let mut c = Cie {
        z: false,
        fde_enc: 0,
        lsda_enc: None,
    };
    let Some((&b'z', rest)) = aug.split_first() else {
        return Some(c);
    };
    c.z = true;
    uleb(b, &mut at)?;
    for &ch in rest {
        match ch {
            b'R' => {
                c.fde_enc = *b.get(at)?;
                at += 1;
            }
            b'L' => {
                c.lsda_enc = Some(*b.get(at)?);
                at += 1;
            }
            b'P' => {
                let enc = *b.get(at)?;
                at += 1 + enc_size(enc)?;
            }
            b'S' | b'B' | b'G' => {}
            _ => return None,
        }
    }
    (at <= b.len()).then_some(c)
}

impl Tables {
    /// Finds the unwind tables of a file of `size` bytes: `eh` is its `PT_GNU_EH_FRAME`
    /// header (file offset, address, file size), `section_at` gives the file offset and
    /// size of the section at an address. `Ok(None)` when there is no header this reads.
    pub fn parse(
        read_at: ReadAt<'_>,
        size: u64,
        eh: (u64, u64, u64),
        section_at: &dyn Fn(u64) -> Option<(u64, u64)>,
    ) -> io::Result<Option<Tables>> {
        let (off, va, len) = eh;
        if len < 12 || off.checked_add(len).is_none_or(|e| e > size) {
            return Ok(None);
        }
        let mut h = [0u8; 12];
        read_at(off, &mut h)?;
        if h[..4] != [1, PCREL_SDATA4, 0x03, 0x3b] {
            return Ok(None);
        }
        let count = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as u64;
        let hdr = (count * 8 <= len - 12).then_some((off + 12, count, va));
        let ptr = i32::from_le_bytes([h[4], h[5], h[6], h[7]]) as i64;
        let frame_va = va.wrapping_add(4).wrapping_add(ptr as u64);
        let mut t = Tables {
            hdr,
            ..Tables::default()
        };
        if let Some((foff, fsize)) = section_at(frame_va)
            .filter(|&(o, s)| s <= FRAME_MAX && o.checked_add(s).is_some_and(|e| e <= size))
        {
            let mut b = vec![0u8; fsize as usize];
            read_at(foff, &mut b)?;
            t.frame = (foff, frame_va);
            t.fields = frame_fields(&b, foff);
        }
        Ok(Some(t))
    }

    /// The address of `.eh_frame_hdr` (the table's base), when it has a table.
    pub fn hdr_va(&self) -> Option<u64> {
        self.hdr.map(|h| h.2)
    }

    /// Rewrites, in `buf` (the old file's bytes from offset `start`), the fields that lie
    /// wholly inside it: each to the value the new layout gives, when `map` (where an old
    /// address sits in the new image) and `map_target` (the same for a reference's
    /// target) know both ends and the value fits.
    pub fn relocate(
        &self,
        start: u64,
        buf: &mut [u8],
        map: &dyn Fn(u64) -> Option<u64>,
        map_target: &dyn Fn(u64) -> Option<u64>,
    ) {
        let end = start + buf.len() as u64;
        let get = |buf: &[u8], at: u64| le32(buf, (at - start) as usize);
        let put = |buf: &mut [u8], at: u64, v: u32| {
            let i = (at - start) as usize;
            buf[i..i + 4].copy_from_slice(&v.to_le_bytes());
        };
        if let Some((toff, count, hva)) = self.hdr {
            // 2 * count fields of 4 bytes from toff; the ones wholly in the block.
            let first = start.saturating_sub(toff).div_ceil(4);
            let last = (end.saturating_sub(toff) / 4).min(2 * count);
            let base = map(hva);
            for k in first..last {
                let at = toff + 4 * k;
                if at < start || at + 4 > end {
                    continue;
                }
                let (Some(v), Some(nb)) = (get(buf, at), base) else {
                    continue;
                };
                let t = hva.wrapping_add(v as i32 as i64 as u64);
                let nv = map_target(t).map(|nt| nt.wrapping_sub(nb) as i64);
                if let Some(nv) = nv.and_then(|d| i32::try_from(d).ok()) {
                    put(buf, at, nv as u32);
                }
            }
        }
        let (foff, fva) = self.frame;
        let from = self.fields.partition_point(|&f| f >> 1 < start);
        for &f in &self.fields[from..] {
            let at = f >> 1;
            if at + 4 > end {
                break;
            }
            let Some(v) = get(buf, at) else { continue };
            let src = fva.wrapping_add(at - foff);
            let Some(ns) = map(src) else { continue };
            if f & 1 == 0 {
                let t = src.wrapping_add(v as i32 as i64 as u64);
                let nv = map_target(t).map(|nt| nt.wrapping_sub(ns) as i64);
                if let Some(nv) = nv.and_then(|d| i32::try_from(d).ok()) {
                    put(buf, at, nv as u32);
                }
            } else {
                let t = src.wrapping_sub(v as u64);
                let nv = map_target(t).map(|nt| ns.wrapping_sub(nt));
                if let Some(nv) = nv.and_then(|d| u32::try_from(d).ok()).filter(|&d| d > 0) {
                    put(buf, at, nv);
                }
            }
        }
    }
}

impl Tables {
    /// The FDEs whose `pc_begin` is rewritten, from the file's bytes `b`: each one's
    /// address, its length (with its length field) and its function's address.
    pub fn fdes(&self, b: &[u8]) -> Vec<(u64, u64, u64)> {
        let (foff, fva) = self.frame;
        let mut out = Vec::new();
        for w in self.fields.windows(2) {
            // A CIE pointer at p + 4, then the pc_begin at p + 8.
            let (cie_ptr, pc) = (w[0] >> 1, w[1] >> 1);
            if w[0] & 1 == 0 || w[1] & 1 != 0 || pc != cie_ptr + 4 {
                continue;
            }
            let at = |o: u64| usize::try_from(o).ok();
            let (Some(len), Some(v)) = (
                at(cie_ptr - 4).and_then(|p| le32(b, p)),
                at(pc).and_then(|p| le32(b, p)),
            ) else {
                continue;
            };
            let va = fva.wrapping_add(cie_ptr - 4 - foff);
            let pc_va = fva.wrapping_add(pc - foff);
            out.push((
                va,
                len as u64 + 4,
                pc_va.wrapping_add(v as i32 as i64 as u64),
            ));
        }
        out
    }
}

/// The fields of `.eh_frame` (bytes `b`, at file offset `foff`), as [`Tables::fields`]
/// keeps them: per FDE whose CIE was read, its CIE pointer, and its `pc_begin` and LSDA
/// pointer when they are pc-relative sdata4.
fn frame_fields(b: &[u8], foff: u64) -> Vec<u64> {
    let mut cies: HashMap<usize, Option<Cie>> = HashMap::new();
    let mut fields = Vec::new();
    let mut p = 0usize;
    while fields.len() + 3 <= FIELDS_MAX {
        let Some(len) = le32(b, p) else { break };
        // 0 ends the section; 0xffffffff is the 64-bit format, not read here.
        if len == 0 || len == u32::MAX || len < 4 {
            break;
        }
        let Some(end) = (p + 4).checked_add(len as usize).filter(|&e| e <= b.len()) else {
            break;
        };
        let id = le32(b, p + 4).unwrap_or(0) as usize;
        let body = &b[p + 8..end];
        if id == 0 {
            if cies.len() < CIES_MAX {
                cies.insert(p, cie(body));
            }
        } else if let Some(Some(c)) = (p + 4).checked_sub(id).and_then(|at| cies.get(&at)) {
            let field = |at: usize, cie_ptr: bool| (foff + at as u64) << 1 | cie_ptr as u64;
            fields.push(field(p + 4, true));
            if c.fde_enc == PCREL_SDATA4 && body.len() >= 8 {
                fields.push(field(p + 8, false));
                if let (true, Some(PCREL_SDATA4)) = (c.z, c.lsda_enc) {
                    let mut at = 8;
                    if uleb(body, &mut at).is_some_and(|n| n >= 4) && at + 4 <= body.len() {
                        fields.push(field(p + 8 + at, false));
                    }
                }
            }
        }
        p = end;
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CIE ("zLR", LSDA and FDE pointers pc-relative sdata4) and two FDEs.
    fn frame() -> Vec<u8> {
        let mut b = Vec::new();
        // CIE at 0: length, id 0, version 1, "zLR\0", code 1, data -8 (0x78), ra 16,
        // augmentation length 2, L encoding, R encoding, padding.
        let cie = [
            1,
            b'z',
            b'L',
            b'R',
            0,
            1,
            0x78,
            16,
            2,
            PCREL_SDATA4,
            PCREL_SDATA4,
            0,
            0,
        ];
        b.extend_from_slice(&((4 + cie.len()) as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&cie);
        for k in 0..2u32 {
            let at = b.len() as u32;
            // length, CIE pointer, pc_begin, pc_range, augmentation length 4, LSDA.
            b.extend_from_slice(&20u32.to_le_bytes());
            b.extend_from_slice(&(at + 4).to_le_bytes());
            b.extend_from_slice(&(0x1000 + k).to_le_bytes());
            b.extend_from_slice(&0x40u32.to_le_bytes());
            b.push(4);
            b.extend_from_slice(&0x2000u32.to_le_bytes());
            b.extend_from_slice(&[0, 0, 0]);
        }
        b.extend_from_slice(&0u32.to_le_bytes());
        b
    }

    #[test]
    fn frame_fields_are_found() {
        let b = frame();
        let f: Vec<(u64, u64)> = frame_fields(&b, 100)
            .iter()
            .map(|f| (f >> 1, f & 1))
            .collect();
        // A CIE of 21 bytes, then FDEs of 24 at 21 and 45: CIE pointer at +4, pc_begin at
        // +8, LSDA at +17.
        assert_eq!(
            f,
            [(125, 1), (129, 0), (138, 0), (149, 1), (153, 0), (162, 0)]
        );
    }

    #[test]
    fn fdes_give_their_functions() {
        // `.eh_frame` at file offset 100, address 0x5000.
        let b = frame();
        let mut file = vec![0u8; 100];
        file.extend_from_slice(&b);
        let t = Tables {
            hdr: None,
            frame: (100, 0x5000),
            fields: frame_fields(&b, 100),
        };
        // FDEs of 24 bytes at 21 and 45; pc_begin at +8 holds 0x1000 + k.
        assert_eq!(
            t.fdes(&file),
            [
                (0x5000 + 21, 24, 0x5000 + 29 + 0x1000),
                (0x5000 + 45, 24, 0x5000 + 53 + 0x1001)
            ]
        );
        // Bytes cut short give what they still hold.
        assert_eq!(t.fdes(&file[..140]).len(), 1);
    }

    #[test]
    fn hostile_frames_stop_without_panicking() {
        let good = frame();
        for cut in 0..good.len() {
            frame_fields(&good[..cut], 0);
            let mut bad = good.clone();
            bad[cut] ^= 0xff;
            frame_fields(&bad, 0);
            let mut big = good.clone();
            big[cut] = 0xff;
            frame_fields(&big, u64::MAX / 4);
        }
        assert!(frame_fields(&[0xff; 64], 0).is_empty());
    }

    #[test]
    fn relocated_fields_follow_the_map() {
        let b = frame();
        let t = Tables {
            hdr: None,
            frame: (0, 0x10_000),
            fields: frame_fields(&b, 0),
        };
        let mut buf = b.clone();
        // Code (targets at 0x10_000 + 29 + 0x1000 ...) moves by 0x100; the frame stays.
        let map = |a: u64| Some(a);
        let map_target = |a: u64| Some(if a >= 0x11_000 { a + 0x100 } else { a });
        t.relocate(0, &mut buf, &map, &map_target);
        let pc = |buf: &[u8], at| le32(buf, at).unwrap();
        assert_eq!(
            pc(&buf, 29),
            pc(&b, 29) + 0x100,
            "pc_begin moves with the code"
        );
        assert_eq!(pc(&buf, 38), pc(&b, 38) + 0x100, "so does the LSDA pointer");
        assert_eq!(pc(&buf, 25), pc(&b, 25), "the CIE did not move");
        // A block that cuts a field leaves it alone.
        let mut part = b[..31].to_vec();
        t.relocate(0, &mut part, &map, &map_target);
        assert_eq!(part[29..31], b[29..31]);
    }
}
