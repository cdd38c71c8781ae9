//! Fuzz target: a version-2 (ELF-preprocessed) delta applied to a hostile old file. The
//! input is the old file; the delta is fixed: record kind 3 (the unwind tables and the
//! DWARF debug sections are rewritten too) with one alignment segment shifting every
//! address by 0x40 and one per debug section shifting its offsets by 0x40, then one `copy`
//! window of the whole old file. Parsing the old file's ELF headers, unwind tables and
//! debug sections and relocating its blocks must end in an error or in output of the old
//! size — never a panic, an unbounded allocation or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// zstd frame of six segment lists, each the varints 1, 0, 0x80 (zig-zag of +0x40), 2^40:
/// one segment.
const ALIGNMENT: [u8; 25] = [
    0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x3c, 0x85, 0x00, 0x00, 0x50, 0x01, 0x00, 0x80, 0x01, 0x80,
    0x80, 0x80, 0x80, 0x80, 0x20, 0x01, 0x00, 0x37, 0x2a, 0x48,
];

fuzz_target!(|data: &[u8]| {
    let n = data.len() as u64;
    let mut d = Vec::new();
    d.extend_from_slice(b"OGDELTA\0");
    d.extend_from_slice(&2u32.to_le_bytes());
    d.extend_from_slice(&0u32.to_le_bytes());
    d.extend_from_slice(&n.to_le_bytes());
    d.extend_from_slice(&n.to_le_bytes());
    d.push(3);
    d.extend_from_slice(&(ALIGNMENT.len() as u64).to_le_bytes());
    d.extend_from_slice(&ALIGNMENT);
    d.push(1);
    for v in [0, n, n, 0] {
        d.extend_from_slice(&v.to_le_bytes());
    }
    d.push(0);
    d.extend_from_slice(&[0u8; 32]);
    let mut old = std::io::Cursor::new(data);
    let mut out = Vec::new();
    let r = offgrid::update::delta::apply(&mut old, &mut d.as_slice(), &mut out, n);
    assert!(r.is_err() && out.len() as u64 <= n);
});
