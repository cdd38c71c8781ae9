//! The delta file's byte layout (SPEC.md §11): header, window records, end record.
//!
//! Everything is little-endian and fixed-width, so a reader bounds each field before it
//! acts on it. This file only encodes and decodes records; what a window means is
//! `encode.rs` and `decode.rs`. Known gaps: no per-window checksum (the end record's
//! SHA-256 over the whole output catches corruption, after the fact).

use std::io::{self, Read, Write};

/// First 8 bytes of every delta.
pub const MAGIC: &[u8; 8] = b"OGDELTA\0";
/// Format version of a delta whose windows read the old file as it is.
pub const VERSION: u32 = 1;
/// Format version of a delta whose windows read the old file preprocessed (an alignment
/// record follows the header; `exe.rs`).
pub const VERSION_PREPROCESSED: u32 = 2;
/// Alignment record kind: ELF references relocated to the new layout.
pub const PREPROCESS_ELF: u8 = 1;
/// Alignment record kind: as [`PREPROCESS_ELF`], and the unwind tables too (`unwind.rs`).
pub const PREPROCESS_ELF_UNWIND: u8 = 2;
/// Alignment record kind: as [`PREPROCESS_ELF_UNWIND`], and the DWARF debug sections'
/// addresses too (`dwarf.rs`).
pub const PREPROCESS_ELF_DEBUG: u8 = 3;
/// Alignment record kind: as [`PREPROCESS_ELF_DEBUG`], and symbols' names and
/// relocations' symbol indices too (`exe.rs`).
pub const PREPROCESS_ELF_NAMES: u8 = 4;
/// Alignment record head: kind byte, then the payload length.
pub const PREPROCESS_LEN: usize = 9;
/// Header flag: windows were planned from the GGUF tensor layout (informational).
pub const FLAG_GGUF: u32 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 32;
/// Window record length in bytes, method byte included.
pub const WINDOW_LEN: usize = 33;

/// Largest old range a `ZstdRef` window may name: the decoder holds it in memory.
pub const REF_MAX: u64 = 64 << 20;
/// Largest zstd window (log2) a decoder accepts, bounding its memory.
pub const WINDOW_LOG_MAX: u32 = 27;

/// How one window's new bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// End of windows; 32 bytes of SHA-256 follow.
    End = 0,
    /// The new bytes equal the old range; no payload.
    Copy = 1,
    /// The payload is one zstd frame of the new bytes.
    Zstd = 2,
    /// The payload is one zstd frame of a block stream of bsdiff controls (`blocks.rs`).
    Bidiff = 3,
    /// The payload is one zstd frame compressed with the old range as reference prefix.
    ZstdRef = 4,
    /// The payload is LZMA streams of x86-64 code's fields and of the rest, each with the
    /// same part of the old range as preset dictionary (`streams.rs`).
    X86Streams = 5,
}

impl Method {
    pub fn from_byte(b: u8) -> Option<Method> {
        Some(match b {
            0 => Method::End,
            1 => Method::Copy,
            2 => Method::Zstd,
            3 => Method::Bidiff,
            4 => Method::ZstdRef,
            5 => Method::X86Streams,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Method::End => "end",
            Method::Copy => "copy",
            Method::Zstd => "zstd",
            Method::Bidiff => "bidiff",
            Method::ZstdRef => "zstd-ref",
            Method::X86Streams => "x86-streams",
        }
    }
}

/// The fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// [`VERSION`] or [`VERSION_PREPROCESSED`].
    pub version: u32,
    pub flags: u32,
    pub old_size: u64,
    pub new_size: u64,
}

impl Header {
    pub fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.version.to_le_bytes());
        b[12..16].copy_from_slice(&self.flags.to_le_bytes());
        b[16..24].copy_from_slice(&self.old_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.new_size.to_le_bytes());
        w.write_all(&b)
    }

    /// Parses a header; `Err` carries why it is not one.
    pub fn parse(b: &[u8; HEADER_LEN]) -> Result<Header, String> {
        if &b[..8] != MAGIC {
            return Err("it does not start with the offgrid delta magic bytes".into());
        }
        let version = u32_at(b, 8);
        if version != VERSION && version != VERSION_PREPROCESSED {
            return Err(format!(
                "delta format version {version} is not supported (versions {VERSION} and {VERSION_PREPROCESSED} are)"
            ));
        }
        Ok(Header {
            version,
            flags: u32_at(b, 12),
            old_size: u64_at(b, 16),
            new_size: u64_at(b, 24),
        })
    }
}

/// One window record (everything but the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub method: Method,
    pub old_offset: u64,
    pub old_len: u64,
    pub new_len: u64,
    pub payload_len: u64,
}

impl Window {
    pub fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let mut b = [0u8; WINDOW_LEN];
        b[0] = self.method as u8;
        b[1..9].copy_from_slice(&self.old_offset.to_le_bytes());
        b[9..17].copy_from_slice(&self.old_len.to_le_bytes());
        b[17..25].copy_from_slice(&self.new_len.to_le_bytes());
        b[25..33].copy_from_slice(&self.payload_len.to_le_bytes());
        w.write_all(&b)
    }

    /// Parses the 32 bytes after a non-end method byte.
    pub fn parse(method: Method, b: &[u8; WINDOW_LEN - 1]) -> Window {
        Window {
            method,
            old_offset: u64_at(b, 0),
            old_len: u64_at(b, 8),
            new_len: u64_at(b, 16),
            payload_len: u64_at(b, 24),
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Reads exactly `buf.len()` bytes, telling a clean end (`Ok(false)` with nothing read)
/// from a truncation (`UnexpectedEof`).
pub fn read_full_or_end(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_window_round_trip() {
        let h = Header {
            version: VERSION_PREPROCESSED,
            flags: FLAG_GGUF,
            old_size: 5,
            new_size: 1 << 40,
        };
        let mut b = Vec::new();
        h.write(&mut b).unwrap();
        let arr: [u8; HEADER_LEN] = b.as_slice().try_into().unwrap();
        assert_eq!(Header::parse(&arr).unwrap(), h);
        let w = Window {
            method: Method::Bidiff,
            old_offset: 1,
            old_len: 2,
            new_len: 3,
            payload_len: 4,
        };
        let mut b = Vec::new();
        w.write(&mut b).unwrap();
        assert_eq!(b.len(), WINDOW_LEN);
        let rest: [u8; WINDOW_LEN - 1] = b[1..].try_into().unwrap();
        assert_eq!(Window::parse(Method::Bidiff, &rest), w);
    }

    #[test]
    fn refuses_wrong_magic_and_version() {
        let mut b = [0u8; HEADER_LEN];
        assert!(Header::parse(&b).is_err());
        b[..8].copy_from_slice(MAGIC);
        b[8] = 9;
        assert!(Header::parse(&b).unwrap_err().contains("version 9"));
    }
}
