//! x86-64 code split into streams of like fields, for the `x86-streams` method (SPEC.md
//! §11.7).
//!
//! An instruction is a head (prefixes, opcode, ModRM and SIB bytes) and then up to three
//! fields: a displacement, an immediate, a branch displacement. Two builds of one program
//! by different compilers differ in registers and in scheduling more than in opcodes, and
//! each kind of field has its own statistics: the heads' bytes are a small vocabulary, a
//! `rel32` is close to the previous one, an immediate is often 0 or 1. Laid out as one
//! stream per kind, each coded against the same kind of stream of old', a general coder
//! finds longer matches and sharper literal statistics (the idea of Fabian Giesen's
//! disfilter and of Zucchini's reference streams). orjson 3.10.6 and 3.10.7 (rustc
//! 1.81 and 1.82 nightlies, LLD 18 and 19): `.text` against old''s with `xz` and old''s
//! `.text` as dictionary, 29,456 bytes as one stream, 27,286 as streams like these
//! (split by the iced-x86 disassembler for the measurement).
//!
//! [`shape`] reads an instruction's head and says how long its fields are. It is not a
//! disassembler: it only has to be deterministic and to read nothing but head bytes,
//! which is what makes [`join`] the exact inverse of [`split`] for any input, code or
//! not. A byte sequence that is no instruction still gets a shape (a worse split, never a
//! wrong one); 15 head bytes end an instruction; at the end of the code, an instruction
//! whose fields would run past it is left whole in the head stream.
//!
//! Hostile input: [`join`] reads each stream through a cursor that fails on overrun,
//! consumes at least one head byte per instruction, and refuses streams with bytes left
//! over.

/// The streams, in the order the `x86-streams` payload carries them.
pub const STREAMS: usize = 7;
/// Heads: prefixes, opcode bytes (with VEX/EVEX bytes), ModRM and SIB bytes. (ModRM and
/// SIB in a stream of their own made orjson's two streams 18 % larger: an opcode
/// predicts its ModRM byte.)
pub const HEAD: usize = 0;
/// 8-bit memory displacements.
pub const DISP8: usize = 1;
/// 32-bit memory displacements but RIP-relative ones.
pub const DISP32: usize = 2;
/// Immediates (and 64-bit absolute addresses of `mov` to and from `rax`).
pub const IMM: usize = 3;
/// 8-bit branch displacements.
pub const REL8: usize = 4;
/// 32-bit branch displacements (`call`, `jmp`, `jcc`).
pub const REL32: usize = 5;
/// RIP-relative displacements (their own stream: orjson's delta 33,766 bytes against
/// 33,986 with them among the other 32-bit displacements, LZMA nice length 273).
pub const RIP: usize = 6;

/// Longest instruction x86-64 decodes.
const LONGEST: usize = 15;

/// One instruction's layout, from its head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Shape {
    /// Head bytes: prefixes, opcode bytes, ModRM and SIB.
    head: usize,
    rip: bool,
    disp: usize,
    imm: usize,
    rel: usize,
}

impl Shape {
    fn len(&self) -> usize {
        self.head + self.disp + self.imm + self.rel
    }

    /// The instruction's parts in order: (stream, length).
    fn parts(&self) -> [(usize, usize); 4] {
        let disp = match (self.disp, self.rip) {
            (1, _) => DISP8,
            (_, true) => RIP,
            _ => DISP32,
        };
        let rel = if self.rel == 1 { REL8 } else { REL32 };
        [
            (HEAD, self.head),
            (disp, self.disp),
            (IMM, self.imm),
            (rel, self.rel),
        ]
    }
}

/// Reads a head of at most `budget` bytes from the start of `b`. `Some` of a head of
/// [`LONGEST`] bytes and no fields when a budget of 15 runs out; `None` when a smaller one
/// does, or `b` ends.
fn shape(b: &[u8], budget: usize) -> Option<Shape> {
    let mut read = 0usize;
    // A byte of the head, or the end of the instruction: `Err(Some(..))` ends it as a head
    // of 15 bytes, `Err(None)` runs out.
    let mut next = || -> Result<u8, Option<Shape>> {
        if read == budget {
            return Err((budget == LONGEST).then(|| Shape {
                head: LONGEST,
                ..Shape::default()
            }));
        }
        let c = *b.get(read).ok_or(None)?;
        read += 1;
        Ok(c)
    };
    let mut run = || -> Result<Shape, Option<Shape>> {
        let (mut opsize, mut addr32, mut wide) = (false, false, false);
        let mut op = next()?;
        loop {
            match op {
                0x66 => opsize = true,
                0x67 => addr32 = true,
                0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 | 0xf2 | 0xf3 => {}
                0x40..=0x4f => wide = op & 8 != 0,
                _ => break,
            }
            op = next()?;
        }
        let immz = if opsize { 2 } else { 4 };
        let mut s = Shape::default();
        let vex = matches!(op, 0xc4 | 0xc5 | 0x62);
        // (map, opcode): map 1 is the one-byte map, 2 is 0F, 3 is 0F 38, 4 is 0F 3A.
        let (map, op) = match op {
            0x0f => match next()? {
                0x38 => (3, next()?),
                0x3a => (4, next()?),
                c => (2, c),
            },
            0xc5 => {
                next()?;
                (2, next()?)
            }
            0xc4 => {
                let m = next()? & 0x1f;
                next()?;
                (vex_map(m), next()?)
            }
            0x62 => {
                let m = next()? & 0x07;
                next()?;
                next()?;
                (vex_map(m), next()?)
            }
            c => (1, c),
        };
        let has_modrm = match map {
            1 => one_byte_modrm(op),
            2 => two_byte_modrm(op),
            _ => true,
        };
        if has_modrm {
            let m = next()?;
            let (md, rm) = (m >> 6, m & 7);
            if md != 3 && rm == 4 {
                let sib = next()?;
                if md == 0 && sib & 7 == 5 {
                    s.disp = 4;
                }
            }
            match md {
                0 if rm == 5 => {
                    s.disp = 4;
                    s.rip = true;
                }
                1 => s.disp = 1,
                2 => s.disp = 4,
                _ => {}
            }
            // `test` in group 3 has an immediate; its other members do not.
            if map == 1 && matches!(op, 0xf6 | 0xf7) && (m >> 3) & 7 < 2 {
                s.imm = if op == 0xf6 { 1 } else { immz };
            }
        }
        match map {
            1 => match op {
                0x70..=0x7f | 0xe0..=0xe3 | 0xeb => s.rel = 1,
                0xe8 | 0xe9 => s.rel = 4,
                0xb8..=0xbf => s.imm = if wide { 8 } else { immz },
                0xa0..=0xa3 => s.imm = if addr32 { 4 } else { 8 },
                0xc2 | 0xca => s.imm = 2,
                0xc8 => s.imm = 3,
                _ if one_byte_imm8(op) => s.imm = 1,
                _ if one_byte_immz(op) => s.imm = immz,
                _ => {}
            },
            2 => match op {
                0x80..=0x8f if !vex => s.rel = 4,
                0x70..=0x73 | 0xa4 | 0xac | 0xba | 0xc2 | 0xc4..=0xc6 | 0x0f => s.imm = 1,
                _ => {}
            },
            4 => s.imm = 1,
            _ => {}
        }
        Ok(s)
    };
    let r = run();
    match r {
        // Every byte read is a head byte.
        Ok(s) => Some(Shape { head: read, ..s }),
        Err(s) => s,
    }
}

/// The map a VEX or EVEX map field selects (4 for 0F 3A; others as 0F).
fn vex_map(m: u8) -> u8 {
    match m {
        2 => 3,
        3 => 4,
        _ => 2,
    }
}

fn one_byte_modrm(op: u8) -> bool {
    match op {
        0x00..=0x3f => op & 7 < 4,
        0x62 | 0x63 | 0x69 | 0x6b | 0x80..=0x8f | 0xc0 | 0xc1 | 0xc6 | 0xc7 => true,
        0xd0..=0xd3 | 0xd8..=0xdf | 0xf6 | 0xf7 | 0xfe | 0xff => true,
        _ => false,
    }
}

fn one_byte_imm8(op: u8) -> bool {
    match op {
        0x00..=0x3f => op & 7 == 4,
        0x6a | 0x6b | 0x80 | 0x82 | 0x83 | 0xa8 | 0xb0..=0xb7 | 0xc0 | 0xc1 | 0xc6 => true,
        0xcd | 0xd4 | 0xd5 | 0xe4..=0xe7 => true,
        _ => false,
    }
}

fn one_byte_immz(op: u8) -> bool {
    match op {
        0x00..=0x3f => op & 7 == 5,
        0x68 | 0x69 | 0x81 | 0xa9 | 0xc7 => true,
        _ => false,
    }
}

fn two_byte_modrm(op: u8) -> bool {
    !matches!(
        op,
        0x05..=0x09 | 0x0b | 0x0e | 0x30..=0x37 | 0x77 | 0x80..=0x8f | 0xa0..=0xa2 | 0xa8..=0xaa | 0xc8..=0xcf
    )
}

/// Splits `code` into its [`STREAMS`] streams, and says how many bytes at its end are
/// no whole instruction (they are the head stream's last bytes).
pub fn split(code: &[u8]) -> ([Vec<u8>; STREAMS], usize) {
    let mut out: [Vec<u8>; STREAMS] = Default::default();
    let mut p = 0;
    while p < code.len() {
        let left = code.len() - p;
        let s = match shape(&code[p..], left.min(LONGEST)) {
            Some(s) if s.len() <= left => s,
            _ => {
                out[HEAD].extend_from_slice(&code[p..]);
                return (out, left);
            }
        };
        for (k, n) in s.parts() {
            out[k].extend_from_slice(&code[p..p + n]);
            p += n;
        }
    }
    (out, 0)
}

/// Why streams do not join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// A stream ended before the code did, or a head did not fit in the code.
    Short(usize),
    /// A stream has bytes left after the code ended.
    Long(usize),
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JoinError::Short(k) => write!(f, "x86 stream {k} ends before the code does"),
            JoinError::Long(k) => write!(f, "x86 stream {k} has bytes past the end of the code"),
        }
    }
}

/// The inverse of [`split`]: `len` bytes of code, of which the last `tail` are no whole
/// instruction, from its streams.
pub fn join(streams: &[&[u8]; STREAMS], len: usize, tail: usize) -> Result<Vec<u8>, JoinError> {
    let body = len.checked_sub(tail).ok_or(JoinError::Short(HEAD))?;
    let mut at = [0usize; STREAMS];
    let mut out = Vec::with_capacity(len);
    while out.len() < body {
        let left = len - out.len();
        let head = streams[HEAD].get(at[HEAD]..).unwrap_or_default();
        // The writer found a whole instruction here (else it would be in the tail).
        let s = shape(head, left.min(LONGEST))
            .filter(|s| s.len() <= body - out.len())
            .ok_or(JoinError::Short(HEAD))?;
        for (k, n) in s.parts() {
            let b = streams[k]
                .get(at[k]..at[k] + n)
                .ok_or(JoinError::Short(k))?;
            out.extend_from_slice(b);
            at[k] += n;
        }
    }
    let t = streams[HEAD]
        .get(at[HEAD]..at[HEAD] + tail)
        .ok_or(JoinError::Short(HEAD))?;
    out.extend_from_slice(t);
    at[HEAD] += tail;
    match (0..STREAMS).find(|&k| at[k] != streams[k].len()) {
        Some(k) => Err(JoinError::Long(k)),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(code: &[u8]) -> [Vec<u8>; STREAMS] {
        split(code).0
    }

    fn joins(code: &[u8]) {
        let (s, tail) = split(code);
        let r: [&[u8]; STREAMS] = std::array::from_fn(|k| s[k].as_slice());
        assert_eq!(join(&r, code.len(), tail).unwrap(), code);
    }

    #[test]
    fn fields_go_to_their_streams() {
        // call rel32; mov eax, [rip+0x11223344]; mov eax, [rbx+0x100]; add rsp, 0x18;
        // jne +5; mov rax, imm64; lea rcx, [rsp+rax*8+0x10]
        let code = [
            0xe8, 1, 2, 3, 4, //
            0x8b, 0x05, 0x44, 0x33, 0x22, 0x11, //
            0x8b, 0x83, 0x00, 0x01, 0x00, 0x00, //
            0x48, 0x83, 0xc4, 0x18, //
            0x75, 0x05, //
            0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, //
            0x48, 0x8d, 0x4c, 0xc4, 0x10,
        ];
        let s = parts(&code);
        assert_eq!(
            s[HEAD],
            [
                0xe8, 0x8b, 0x05, 0x8b, 0x83, 0x48, 0x83, 0xc4, 0x75, 0x48, 0xb8, 0x48, 0x8d, 0x4c,
                0xc4
            ]
        );
        assert_eq!(s[RIP], [0x44, 0x33, 0x22, 0x11]);
        assert_eq!(s[DISP32], [0x00, 0x01, 0x00, 0x00]);
        assert_eq!(s[DISP8], [0x10]);
        assert_eq!(s[IMM], [0x18, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(s[REL8], [0x05]);
        assert_eq!(s[REL32], [1, 2, 3, 4]);
        joins(&code);
    }

    #[test]
    fn vex_evex_and_group_3_heads() {
        // vpshufd ymm0, ymm1, 0x1b (VEX C4, map 0F); vzeroupper (no ModRM);
        // test byte [rax], 7 (F6 /0 ib); not dword [rax] (F7 /2, no immediate);
        // vpternlogd zmm0, zmm1, zmm2, 0x96 (EVEX, map 0F 3A)
        let code = [
            0xc4, 0xe1, 0x7d, 0x70, 0xc1, 0x1b, //
            0xc5, 0xf8, 0x77, //
            0xf6, 0x00, 0x07, //
            0xf7, 0x10, //
            0x62, 0xf3, 0x75, 0x48, 0x25, 0xc2, 0x96,
        ];
        let s = parts(&code);
        assert_eq!(s[IMM], [0x1b, 0x07, 0x96]);
        assert_eq!(
            s[HEAD],
            [
                0xc4, 0xe1, 0x7d, 0x70, 0xc1, 0xc5, 0xf8, 0x77, 0xf6, 0x00, 0xf7, 0x10, 0x62, 0xf3,
                0x75, 0x48, 0x25, 0xc2
            ]
        );
        joins(&code);
    }

    /// `shape` against GNU objdump's disassembly of clang's code (`-O2` and AVX-512, so
    /// VEX and EVEX forms are there too): every instruction's length agrees, and its
    /// fields go where `split` puts them.
    #[test]
    fn lengths_agree_with_objdump_on_compiled_code() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("k.c");
        let mut c = String::from("#include <string.h>\nlong g[64]; double h[64];\n");
        for k in 0..40 {
            c += &format!(
                "long f{k}(long *a, int n, double *d) {{ long s = {k}; \
                 for (int i = 0; i < n; i++) {{ s += a[i] * {m} + g[(i + {k}) & 63]; \
                 d[i] = d[i] * 1.5 + h[i & 63]; if (s > {big}) s ^= a[i] >> 3; }} \
                 switch (n & 7) {{ case 0: s += 11; break; case 1: s -= 7; break; \
                 case 2: s *= 3; break; default: s += n; }} \
                 memset(a, 0, (size_t)n); return s + (short)n + (char)s; }}\n",
                m = k * 13 + 3,
                big = 1i64 << (k % 40 + 8),
            );
        }
        std::fs::write(&src, c).unwrap();
        let obj = dir.path().join("k.o");
        let run = |cmd: &str, args: &[&std::ffi::OsStr]| {
            let out = std::process::Command::new(cmd)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("{cmd} (apt-get install clang binutils): {e}"));
            assert!(
                out.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        run(
            "clang",
            &[
                "-O2".as_ref(),
                "-mavx512f".as_ref(),
                "-c".as_ref(),
                src.as_os_str(),
                "-o".as_ref(),
                obj.as_os_str(),
            ],
        );
        let text = dir.path().join("k.text");
        run(
            "objcopy",
            &[
                "-O".as_ref(),
                "binary".as_ref(),
                "--only-section=.text".as_ref(),
                obj.as_os_str(),
                text.as_os_str(),
            ],
        );
        let code = std::fs::read(&text).unwrap();
        let listing = run(
            "objdump",
            &[
                "-d".as_ref(),
                "--no-show-raw-insn".as_ref(),
                obj.as_os_str(),
            ],
        );
        // Instruction starts, from the addresses objdump prints ("  1f:\tmov ...").
        let mut starts: Vec<usize> = String::from_utf8_lossy(&listing)
            .lines()
            .filter_map(|l| {
                let (a, rest) = l.trim_start().split_once(":\t")?;
                (!rest.is_empty()).then(|| usize::from_str_radix(a, 16).ok())?
            })
            .collect();
        starts.push(code.len());
        assert!(starts.len() > 2000, "{} instructions", starts.len());
        let mut vex = 0;
        for w in starts.windows(2) {
            let s = shape(&code[w[0]..], (code.len() - w[0]).min(LONGEST)).unwrap();
            assert_eq!(s.len(), w[1] - w[0], "the instruction at {:#x}", w[0]);
            vex += matches!(code[w[0]], 0xc4 | 0xc5 | 0x62) as usize;
        }
        assert!(vex > 10, "{vex} VEX or EVEX instructions");
        joins(&code);
    }

    #[test]
    fn any_bytes_join_back() {
        for len in [0, 1, 2, 14, 15, 16, 17, 100, 4096] {
            for seed in 0..50 {
                joins(&super::super::plan::tests::noise(len, seed));
            }
        }
        // Prefixes only: heads of 15 bytes, and a tail.
        joins(&[0x66; 40]);
        joins(&[0x0f; 3]);
    }

    #[test]
    fn damaged_streams_are_refused() {
        let code = [0xe8, 1, 2, 3, 4, 0x75, 0x05, 0xc3];
        let (s, tail) = split(&code);
        assert_eq!(tail, 0);
        let mut r: [&[u8]; STREAMS] = std::array::from_fn(|k| s[k].as_slice());
        r[REL32] = &s[REL32][..3];
        assert_eq!(join(&r, code.len(), 0), Err(JoinError::Short(REL32)));
        let long = [s[REL8].clone(), vec![9]].concat();
        let mut r: [&[u8]; STREAMS] = std::array::from_fn(|k| s[k].as_slice());
        r[REL8] = &long;
        assert_eq!(join(&r, code.len(), 0), Err(JoinError::Long(REL8)));
        let r: [&[u8]; STREAMS] = std::array::from_fn(|k| s[k].as_slice());
        assert!(join(&r, code.len() + 3, 0).is_err());
        // A tail that cuts an instruction in two.
        assert!(join(&r, code.len(), 2).is_err());
        assert!(join(&r, code.len(), code.len() + 1).is_err());
    }
}
