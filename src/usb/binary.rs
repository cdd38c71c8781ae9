//! What a platform binary bound for a stick carries: the bytes of its debug sections.
//!
//! `pack-usb` copies the running offgrid (or `--binary` files) onto every stick; a build
//! with debug info is ten times the size of the stripped `cargo xtask dist` binary. This
//! reads an ELF file's section headers (64- and 32-bit, either byte order) and adds up
//! the sections named `.debug_*` / `.zdebug_*`, so the CLI can warn. Known gaps: Mach-O
//! and PE files are not looked into (`None`), nor is a `.gnu_debugdata` mini-debuginfo.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::path::Path;

/// At most this many section headers are read (real binaries have a few dozen).
const MAX_SECTIONS: u64 = 4096;
/// At most this much of the section-name table is read.
const MAX_NAMES: u64 = 1 << 20;

/// The total size of the debug sections of the ELF file at `path`: `Some(0)` for a
/// stripped ELF file, `None` for a file that is not ELF or whose headers do not hold.
pub fn debug_info_bytes(path: &Path) -> io::Result<Option<u64>> {
    let mut f = File::open(path)?;
    let mut ident = [0u8; 64];
    let n = read_full(&mut f, &mut ident)?;
    if n < 52 || &ident[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return Ok(None),
    };
    let le = match ident[5] {
        1 => true,
        2 => false,
        _ => return Ok(None),
    };
    let rd = Reader { le };
    let (shoff, shentsize, shnum, shstrndx) = if wide {
        if n < 64 {
            return Ok(None);
        }
        (
            rd.u64(&ident[0x28..]),
            rd.u16(&ident[0x3a..]),
            rd.u16(&ident[0x3c..]),
            rd.u16(&ident[0x3e..]),
        )
    } else {
        (
            u64::from(rd.u32(&ident[0x20..])),
            rd.u16(&ident[0x2e..]),
            rd.u16(&ident[0x30..]),
            rd.u16(&ident[0x32..]),
        )
    };
    let need = if wide { 64 } else { 40 };
    let (shnum, shentsize) = (u64::from(shnum), u64::from(shentsize));
    if shoff == 0 || shnum == 0 || shnum > MAX_SECTIONS || shentsize < need {
        return Ok(None);
    }
    if u64::from(shstrndx) >= shnum {
        return Ok(None);
    }
    let mut table = vec![0u8; (shnum * shentsize) as usize];
    f.seek(SeekFrom::Start(shoff))?;
    if read_full(&mut f, &mut table)? < table.len() {
        return Ok(None);
    }
    // (name offset, file offset, size) of each section.
    let sections: Vec<(u64, u64, u64)> = table
        .chunks_exact(shentsize as usize)
        .map(|h| {
            if wide {
                (u64::from(rd.u32(h)), rd.u64(&h[0x18..]), rd.u64(&h[0x20..]))
            } else {
                (
                    u64::from(rd.u32(h)),
                    u64::from(rd.u32(&h[0x10..])),
                    u64::from(rd.u32(&h[0x14..])),
                )
            }
        })
        .collect();
    let (_, names_off, names_len) = sections[usize::from(shstrndx)];
    let mut names = vec![0u8; names_len.min(MAX_NAMES) as usize];
    f.seek(SeekFrom::Start(names_off))?;
    let got = read_full(&mut f, &mut names)?;
    names.truncate(got);
    let total = sections
        .iter()
        .filter(|(name, _, _)| {
            let rest = names.get(*name as usize..).unwrap_or_default();
            // `.debug_gdb_scripts` is a few loaded bytes naming gdb's pretty printers
            // (rustc emits it; strip keeps it): not debug info.
            (rest.starts_with(b".debug_") && !rest.starts_with(b".debug_gdb_scripts"))
                || rest.starts_with(b".zdebug_")
        })
        .map(|(_, _, size)| size)
        .sum();
    Ok(Some(total))
}

use crate::hash::read_full;

struct Reader {
    le: bool,
}

impl Reader {
    fn u16(&self, b: &[u8]) -> u16 {
        let a = [b[0], b[1]];
        if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        }
    }
    fn u32(&self, b: &[u8]) -> u32 {
        let a = [b[0], b[1], b[2], b[3]];
        if self.le {
            u32::from_le_bytes(a)
        } else {
            u32::from_be_bytes(a)
        }
    }
    fn u64(&self, b: &[u8]) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        if self.le {
            u64::from_le_bytes(a)
        } else {
            u64::from_be_bytes(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::debug_info_bytes;

    #[test]
    fn not_elf_is_none() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        std::fs::write(&p, b"#!/bin/sh\necho hi\n").unwrap();
        assert_eq!(debug_info_bytes(&p).unwrap(), None);
        std::fs::write(&p, b"\x7fELF\x02\x01").unwrap();
        assert_eq!(debug_info_bytes(&p).unwrap(), None);
    }

    #[test]
    fn this_test_binary_has_debug_info() {
        // Test builds carry debug info (the dev profile's default).
        let exe = std::env::current_exe().unwrap();
        if cfg!(target_os = "linux") {
            assert!(debug_info_bytes(&exe).unwrap().unwrap() > 0);
        }
    }
}
