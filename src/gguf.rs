//! GGUF header reading: the metadata offgrid records in a manifest (architecture,
//! quantization, parameter count, context length) and that the launcher and the delta
//! engine need (chat template, tensor layout), read without touching tensor data.
//! Also a small writer for synthetic GGUF files (fixtures, benchmarks).
//!
//! Everything read is bounded before allocation (string and array lengths, counts), so a
//! hostile header cannot exhaust memory. Known gaps: GGUF v1 (32-bit counts) is refused;
//! big-endian GGUF files are refused.

pub mod split;

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// What offgrid reads from a GGUF header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GgufInfo {
    pub version: u32,
    pub architecture: Option<String>,
    pub name: Option<String>,
    /// `general.file_type` mapped to its llama.cpp name (`Q4_1`, `F16`, …).
    pub quantization: Option<String>,
    /// Sum over tensors of the product of their dimensions.
    pub parameters: u64,
    pub context_length: Option<u64>,
    pub chat_template: Option<String>,
    pub tensors: Vec<TensorInfo>,
    /// Offset of the tensor data section (aligned) from the start of the file.
    pub data_offset: u64,
    /// Alignment of tensor data.
    pub alignment: u64,
    /// `split.no`: this file's place (0-based) in a model split by llama.cpp's gguf-split.
    pub split_no: Option<u16>,
    /// `split.count`: how many files the split model has.
    pub split_count: Option<u16>,
    /// `split.tensors.count`: the tensors of the whole split model.
    pub split_tensors: Option<i64>,
}

/// One tensor's place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset relative to [`GgufInfo::data_offset`].
    pub offset: u64,
}

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read '{path}': {source}")]
    Io { path: String, source: io::Error },
    #[error("'{path}' is not a GGUF model: {reason}")]
    Format { path: String, reason: String },
}

const MAGIC: &[u8; 4] = b"GGUF";
const MAX_STRING: u64 = 64 << 20;
const MAX_ARRAY: u64 = 1 << 27;
const MAX_COUNT: u64 = 1 << 24;
const MAX_DIMS: u32 = 8;

/// llama.cpp's names for `general.file_type` values (`enum llama_ftype`).
pub fn file_type_name(ft: u32) -> Option<&'static str> {
    Some(match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        _ => return None,
    })
}

/// A metadata value as far as offgrid keeps it.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Uint(u64),
    Int(i64),
    Str(String),
    Other,
}

struct Reader<R> {
    r: R,
    pos: u64,
}

impl<R: Read + Seek> Reader<R> {
    fn bytes(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b)?;
        self.pos += n as u64;
        Ok(b)
    }
    fn u32(&mut self) -> io::Result<u32> {
        let mut b = [0u8; 4];
        self.r.read_exact(&mut b)?;
        self.pos += 4;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> io::Result<u64> {
        let mut b = [0u8; 8];
        self.r.read_exact(&mut b)?;
        self.pos += 8;
        Ok(u64::from_le_bytes(b))
    }
    fn skip(&mut self, n: u64) -> io::Result<()> {
        self.r.seek(SeekFrom::Current(n as i64))?;
        self.pos += n;
        Ok(())
    }
}

/// Reads the header of the GGUF file at `path`.
pub fn read_info(path: &Path) -> Result<GgufInfo, GgufError> {
    let p = path.display().to_string();
    let f = crate::hash::open_regular(path).map_err(|source| GgufError::Io {
        path: p.clone(),
        source,
    })?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let mut r = Reader {
        r: BufReader::with_capacity(1 << 16, f),
        pos: 0,
    };
    read_from(&mut r, len).map_err(|e| match e {
        ReadErr::Io(source) if source.kind() == io::ErrorKind::UnexpectedEof => GgufError::Format {
            path: p.clone(),
            reason: "the header is truncated".into(),
        },
        ReadErr::Io(source) => GgufError::Io {
            path: p.clone(),
            source,
        },
        ReadErr::Format(reason) => GgufError::Format {
            path: p.clone(),
            reason,
        },
    })
}

enum ReadErr {
    Io(io::Error),
    Format(String),
}

impl From<io::Error> for ReadErr {
    fn from(e: io::Error) -> Self {
        ReadErr::Io(e)
    }
}

fn bad(s: impl Into<String>) -> ReadErr {
    ReadErr::Format(s.into())
}

fn read_string<R: Read + Seek>(r: &mut Reader<R>, file_len: u64) -> Result<String, ReadErr> {
    let n = r.u64()?;
    if n > MAX_STRING || r.pos + n > file_len {
        return Err(bad(format!("a string of {n} bytes at offset {}", r.pos)));
    }
    String::from_utf8(r.bytes(n as usize)?).map_err(|_| bad("a string is not UTF-8"))
}

fn scalar_size(t: u32) -> Option<u64> {
    Some(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10..=12 => 8,
        _ => return None,
    })
}

fn read_value<R: Read + Seek>(
    r: &mut Reader<R>,
    t: u32,
    file_len: u64,
    keep: bool,
) -> Result<Value, ReadErr> {
    Ok(match t {
        0 => Value::Uint(r.bytes(1)?[0] as u64),
        1 => Value::Int(r.bytes(1)?[0] as i8 as i64),
        2 => Value::Uint(u16::from_le_bytes([r.bytes(1)?[0], r.bytes(1)?[0]]) as u64),
        3 => Value::Int(i16::from_le_bytes([r.bytes(1)?[0], r.bytes(1)?[0]]) as i64),
        4 => Value::Uint(r.u32()? as u64),
        5 => Value::Int(r.u32()? as i32 as i64),
        6 => {
            r.u32()?;
            Value::Other
        }
        7 => Value::Uint(r.bytes(1)?[0] as u64),
        8 => {
            if keep {
                Value::Str(read_string(r, file_len)?)
            } else {
                let n = r.u64()?;
                if n > MAX_STRING || r.pos + n > file_len {
                    return Err(bad("a string runs past the end of the file"));
                }
                r.skip(n)?;
                Value::Other
            }
        }
        9 => {
            let et = r.u32()?;
            let n = r.u64()?;
            if n > MAX_ARRAY {
                return Err(bad(format!("an array of {n} elements")));
            }
            match scalar_size(et) {
                Some(sz) => {
                    if r.pos + n * sz > file_len {
                        return Err(bad("an array runs past the end of the file"));
                    }
                    r.skip(n * sz)?
                }
                None if et == 8 => {
                    for _ in 0..n {
                        read_value(r, 8, file_len, false)?;
                    }
                }
                None => return Err(bad(format!("an array of unsupported type {et}"))),
            }
            Value::Other
        }
        10 => Value::Uint(r.u64()?),
        11 => Value::Int(r.u64()? as i64),
        12 => {
            r.u64()?;
            Value::Other
        }
        other => return Err(bad(format!("unknown metadata type {other}"))),
    })
}

fn read_from<R: Read + Seek>(r: &mut Reader<R>, file_len: u64) -> Result<GgufInfo, ReadErr> {
    let magic = r.bytes(4)?;
    if magic != MAGIC {
        return Err(bad("it does not start with the GGUF magic bytes"));
    }
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(bad(format!(
            "GGUF version {version} is not supported (2 and 3 are)"
        )));
    }
    let tensor_count = r.u64()?;
    let kv_count = r.u64()?;
    if tensor_count > MAX_COUNT || kv_count > MAX_COUNT {
        return Err(bad("implausible tensor or metadata count"));
    }
    let mut info = GgufInfo {
        version,
        alignment: 32,
        ..Default::default()
    };
    let mut file_type = None;
    let mut ctx: Vec<(String, u64)> = Vec::new();
    for _ in 0..kv_count {
        let key = read_string(r, file_len)?;
        let t = r.u32()?;
        let keep = matches!(
            key.as_str(),
            "general.architecture" | "general.name" | "tokenizer.chat_template"
        );
        let v = read_value(r, t, file_len, keep)?;
        match (key.as_str(), v) {
            ("general.architecture", Value::Str(s)) => info.architecture = Some(s),
            ("general.name", Value::Str(s)) => info.name = Some(s),
            ("tokenizer.chat_template", Value::Str(s)) => info.chat_template = Some(s),
            ("general.file_type", Value::Uint(n)) => file_type = Some(n as u32),
            ("split.no", Value::Uint(n)) => info.split_no = u16::try_from(n).ok(),
            ("split.count", Value::Uint(n)) => info.split_count = u16::try_from(n).ok(),
            ("split.tensors.count", Value::Int(n)) => info.split_tensors = Some(n),
            ("split.tensors.count", Value::Uint(n)) => info.split_tensors = i64::try_from(n).ok(),
            ("general.alignment", Value::Uint(n)) => {
                if n == 0 || !n.is_power_of_two() || n > 1 << 20 {
                    return Err(bad(format!("general.alignment {n} is not a power of two")));
                }
                info.alignment = n
            }
            (k, Value::Uint(n)) if k.ends_with(".context_length") => ctx.push((k.to_owned(), n)),
            _ => {}
        }
    }
    info.quantization = file_type.map(|ft| {
        file_type_name(ft)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("type-{ft}"))
    });
    if let Some(arch) = &info.architecture {
        let want = format!("{arch}.context_length");
        info.context_length = ctx.iter().find(|(k, _)| *k == want).map(|(_, n)| *n);
    }
    for _ in 0..tensor_count {
        let name = read_string(r, file_len)?;
        let n_dims = r.u32()?;
        if n_dims > MAX_DIMS {
            return Err(bad(format!("tensor '{name}' has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut count: u64 = 1;
        for _ in 0..n_dims {
            let d = r.u64()?;
            count = count
                .checked_mul(d)
                .ok_or_else(|| bad(format!("tensor '{name}' is implausibly large")))?;
            dims.push(d);
        }
        let ggml_type = r.u32()?;
        let offset = r.u64()?;
        info.parameters = info.parameters.saturating_add(count);
        info.tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    info.data_offset = r.pos.div_ceil(info.alignment) * info.alignment;
    Ok(info)
}

/// Writes a copy of the GGUF file `src` to `dst` (created new) with the string metadata
/// `key` set to `value` (added when absent), tensor data copied through unchanged. This is
/// the realistic model update (a chat template edited) that shifts every tensor's offset
/// in the file; the result is a GGUF that llama.cpp loads like the original.
pub fn rewrite_string(src: &Path, dst: &Path, key: &str, value: &str) -> Result<u64, GgufError> {
    let sp = src.display().to_string();
    let io_err = |path: &str| {
        let path = path.to_owned();
        move |source| GgufError::Io {
            path: path.clone(),
            source,
        }
    };
    let info = read_info(src)?;
    let mut f = File::open(src).map_err(io_err(&sp))?;
    let mut header = vec![0u8; info.data_offset as usize];
    f.read_exact(&mut header).map_err(io_err(&sp))?;
    let len = header.len() as u64;
    let mut r = Reader {
        r: io::Cursor::new(&header[..]),
        pos: 0,
    };
    let fmt = |e: ReadErr| match e {
        ReadErr::Io(source) => GgufError::Io {
            path: sp.clone(),
            source,
        },
        ReadErr::Format(reason) => GgufError::Format {
            path: sp.clone(),
            reason,
        },
    };
    r.bytes(8).map_err(|e| fmt(e.into()))?;
    let _tensors = r.u64().map_err(|e| fmt(e.into()))?;
    let kv_count = r.u64().map_err(|e| fmt(e.into()))?;
    let mut out = Vec::with_capacity(header.len() + value.len());
    out.extend_from_slice(&header[..24]);
    let mut new_count = kv_count;
    let mut found = false;
    let put_kv = |out: &mut Vec<u8>| {
        out.extend_from_slice(&(key.len() as u64).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&8u32.to_le_bytes());
        out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    };
    let mut kvs = Vec::new();
    for _ in 0..kv_count {
        let start = r.pos as usize;
        let k = read_string(&mut r, len).map_err(fmt)?;
        let t = r.u32().map_err(|e| fmt(e.into()))?;
        read_value(&mut r, t, len, false).map_err(fmt)?;
        if k == key {
            put_kv(&mut kvs);
            found = true;
        } else {
            kvs.extend_from_slice(&header[start..r.pos as usize]);
        }
    }
    if !found {
        put_kv(&mut kvs);
        new_count += 1;
    }
    out[16..24].copy_from_slice(&new_count.to_le_bytes());
    out.extend_from_slice(&kvs);
    // Tensor infos: copied verbatim (their offsets are relative to the data section).
    let tensors_start = r.pos as usize;
    for _ in 0..info.tensors.len() {
        read_string(&mut r, len).map_err(fmt)?;
        let n = r.u32().map_err(|e| fmt(e.into()))?;
        r.skip(8 * n as u64 + 4 + 8).map_err(|e| fmt(e.into()))?;
    }
    out.extend_from_slice(&header[tensors_start..r.pos as usize]);
    let padded = (out.len() as u64).div_ceil(info.alignment) * info.alignment;
    out.resize(padded as usize, 0);
    let dp = dst.display().to_string();
    let mut o = crate::fsutil::create_new(dst).map_err(io_err(&dp))?;
    o.write_all(&out).map_err(io_err(&dp))?;
    f.seek(SeekFrom::Start(info.data_offset))
        .map_err(io_err(&sp))?;
    let copied = io::copy(&mut f, &mut o).map_err(io_err(&dp))?;
    o.sync_all().map_err(io_err(&dp))?;
    Ok(padded + copied)
}

/// A metadata value for [`write_synthetic`].
#[derive(Debug, Clone)]
pub enum MetaValue {
    U32(u32),
    U64(u64),
    Str(String),
}

/// Writes a GGUF v3 file with the given metadata and F32 tensors (`name`, `dims`,
/// `data` as little-endian f32 bytes). For fixtures and benchmarks: the file is a valid
/// GGUF container, though not a model llama.cpp can run.
pub fn write_synthetic(
    out: &mut dyn Write,
    meta: &[(&str, MetaValue)],
    tensors: &[(&str, Vec<u64>, &[u8])],
) -> io::Result<()> {
    let align = 32u64;
    let mut head = Vec::new();
    head.extend_from_slice(MAGIC);
    head.extend_from_slice(&3u32.to_le_bytes());
    head.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    head.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    let put_str = |h: &mut Vec<u8>, s: &str| {
        h.extend_from_slice(&(s.len() as u64).to_le_bytes());
        h.extend_from_slice(s.as_bytes());
    };
    for (k, v) in meta {
        put_str(&mut head, k);
        match v {
            MetaValue::U32(n) => {
                head.extend_from_slice(&4u32.to_le_bytes());
                head.extend_from_slice(&n.to_le_bytes());
            }
            MetaValue::U64(n) => {
                head.extend_from_slice(&10u32.to_le_bytes());
                head.extend_from_slice(&n.to_le_bytes());
            }
            MetaValue::Str(s) => {
                head.extend_from_slice(&8u32.to_le_bytes());
                put_str(&mut head, s);
            }
        }
    }
    let mut offset = 0u64;
    let mut offsets = Vec::new();
    for (name, dims, data) in tensors {
        put_str(&mut head, name);
        head.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            head.extend_from_slice(&d.to_le_bytes());
        }
        head.extend_from_slice(&0u32.to_le_bytes()); // GGML_TYPE_F32
        head.extend_from_slice(&offset.to_le_bytes());
        offsets.push(offset);
        offset = (offset + data.len() as u64).div_ceil(align) * align;
    }
    let pad = (head.len() as u64).div_ceil(align) * align - head.len() as u64;
    head.resize(head.len() + pad as usize, 0);
    out.write_all(&head)?;
    let mut written = 0u64;
    for ((_, _, data), off) in tensors.iter().zip(offsets) {
        out.write_all(&vec![0u8; (off - written) as usize])?;
        out.write_all(data)?;
        written = off + data.len() as u64;
    }
    let tail = offset - written;
    out.write_all(&vec![0u8; tail as usize])?;
    Ok(())
}

impl crate::diagnostic::Diagnostic for GgufError {
    fn help(&self) -> Option<String> {
        match self {
            GgufError::Format { .. } => Some("offgrid carries llama.cpp GGUF models; convert the model with llama.cpp's convert_hf_to_gguf.py".into()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes() {
        let data = vec![7u8; 4 * 6];
        let mut buf = Vec::new();
        write_synthetic(
            &mut buf,
            &[
                ("general.architecture", MetaValue::Str("llama".into())),
                ("general.file_type", MetaValue::U32(3)),
                ("llama.context_length", MetaValue::U32(2048)),
                ("tokenizer.chat_template", MetaValue::Str("{{x}}".into())),
            ],
            &[("a", vec![2, 3], &data), ("b", vec![6], &data)],
        )
        .unwrap();
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.gguf");
        std::fs::write(&p, &buf).unwrap();
        let i = read_info(&p).unwrap();
        assert_eq!(i.architecture.as_deref(), Some("llama"));
        assert_eq!(i.quantization.as_deref(), Some("Q4_1"));
        assert_eq!(i.context_length, Some(2048));
        assert_eq!(i.chat_template.as_deref(), Some("{{x}}"));
        assert_eq!(i.parameters, 12);
        assert_eq!(i.tensors.len(), 2);
        assert_eq!(i.data_offset % 32, 0);
        assert_eq!(
            &buf[(i.data_offset + i.tensors[1].offset) as usize..][..24],
            &data[..]
        );
    }

    #[test]
    fn rewrites_a_string_and_keeps_tensors() {
        let data: Vec<u8> = (0..4096u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut buf = Vec::new();
        write_synthetic(
            &mut buf,
            &[
                ("general.architecture", MetaValue::Str("llama".into())),
                ("tokenizer.chat_template", MetaValue::Str("short".into())),
            ],
            &[("t", vec![4096], &data)],
        )
        .unwrap();
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.gguf"), d.path().join("b.gguf"));
        std::fs::write(&a, &buf).unwrap();
        let template = "a much longer template ".repeat(10);
        rewrite_string(&a, &b, "tokenizer.chat_template", &template).unwrap();
        let (ia, ib) = (read_info(&a).unwrap(), read_info(&b).unwrap());
        assert_eq!(ib.chat_template.as_deref(), Some(template.as_str()));
        assert_eq!(ib.architecture, ia.architecture);
        assert!(ib.data_offset > ia.data_offset);
        let nb = std::fs::read(&b).unwrap();
        assert_eq!(
            &nb[ib.data_offset as usize..],
            &buf[ia.data_offset as usize..]
        );
        // A new key is added.
        let c = d.path().join("c.gguf");
        rewrite_string(&a, &c, "general.name", "renamed").unwrap();
        assert_eq!(read_info(&c).unwrap().name.as_deref(), Some("renamed"));
    }

    #[test]
    fn refuses_non_gguf_and_truncation() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gguf");
        std::fs::write(&p, b"not a model").unwrap();
        assert!(matches!(read_info(&p), Err(GgufError::Format { .. })));
        std::fs::write(&p, b"GGUF\x03\0\0\0\x01\0\0\0\0\0\0\0").unwrap();
        assert!(matches!(read_info(&p), Err(GgufError::Format { .. })));
    }
}
