//! llama.cpp's split GGUF layout: a model stored as `PREFIX-00001-of-0000N.gguf` …
//! `PREFIX-0000N-of-0000N.gguf`, each file a GGUF of its own carrying `split.no` (u16,
//! 0-based), `split.count` (u16) and `split.tensors.count` (i32, the whole model's
//! tensors), as llama.cpp's `gguf-split` writes them; llama.cpp given the first file
//! loads the rest from the same folder.
//!
//! offgrid writes the first shard with the model's metadata and no tensors (gguf-split's
//! `--no-tensor-in-metadata` shape), and the tensors, whole and aligned, into shards 2…N,
//! filled in file order up to the size limit. A shard after the first then depends only
//! on the tensors and the limit: a metadata edit (a chat template) changes shard 1 alone,
//! so an update pack costs that shard's delta, not the model. [`plan`] refuses a tensor
//! that alone exceeds the limit, before anything is written.
//! Known gaps: a split input is re-split only by re-joining it first (offgrid copies
//! existing shards as they are); tensor data is copied with the padding that followed it
//! in the source (harmless: loaders read each tensor's own size).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::{read_string, read_value, GgufError, GgufInfo, ReadErr, Reader, MAGIC};

/// The metadata keys of the split layout.
pub const KEY_NO: &str = "split.no";
pub const KEY_COUNT: &str = "split.count";
pub const KEY_TENSORS: &str = "split.tensors.count";

/// The file name of shard `no` (1-based) of `count`: `PREFIX-0000no-of-0000count.gguf`,
/// llama.cpp's `llama_split_path`.
pub fn shard_name(prefix: &str, no: u32, count: u32) -> String {
    format!("{prefix}-{no:05}-of-{count:05}.gguf")
}

/// Splits a shard's file name into `(prefix, no, count)` (1-based), when it has the form
/// [`shard_name`] writes.
pub fn parse_shard_name(name: &str) -> Option<(&str, u32, u32)> {
    let stem = name.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |s: &str| s.len() == 5 && s.bytes().all(|b| b.is_ascii_digit());
    if prefix.is_empty() || !digits(no) || !digits(count) {
        return None;
    }
    let (no, count) = (no.parse().ok()?, count.parse().ok()?);
    (1..=count).contains(&no).then_some((prefix, no, count))
}

/// Why a model cannot be split.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    #[error("model '{path}' cannot be split to files of at most {limit} bytes: tensor '{tensor}' alone is {size} bytes")]
    TensorTooLarge {
        path: String,
        tensor: String,
        size: u64,
        limit: u64,
    },
    #[error("model '{path}' cannot be split to files of at most {limit} bytes: its metadata alone is {size} bytes")]
    HeaderTooLarge { path: String, size: u64, limit: u64 },
    #[error(
        "model '{path}' needs {count} files, more than the 65535 llama.cpp's split format allows"
    )]
    TooManyShards { path: String, count: usize },
    #[error("'{path}' is not a GGUF model: {reason}")]
    Layout { path: String, reason: String },
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

/// How one GGUF is cut into shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    /// The source's metadata entries as raw bytes (key, type, value), `split.*` left out.
    kvs: Vec<Vec<u8>>,
    /// Per tensor: (info bytes without the offset, source offset from the file start,
    /// bytes to copy).
    tensors: Vec<(Vec<u8>, u64, u64)>,
    alignment: u64,
    /// Tensor indices of each shard; the first shard has none.
    pub shards: Vec<Vec<usize>>,
    /// The exact size of each shard file.
    pub sizes: Vec<u64>,
}

fn align(n: u64, a: u64) -> u64 {
    n.div_ceil(a) * a
}

fn kv_bytes(key: &str, t: u32, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(key.len() + 12 + value.len());
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key.as_bytes());
    b.extend_from_slice(&t.to_le_bytes());
    b.extend_from_slice(value);
    b
}

impl SplitPlan {
    /// Number of shards.
    pub fn count(&self) -> usize {
        self.shards.len()
    }

    /// The split keys of shard `i` (0-based), plus the alignment on shards after the first
    /// when it is not the default (the first carries the source's own).
    fn split_kvs(&self, i: usize) -> Vec<Vec<u8>> {
        let mut v = vec![
            kv_bytes(KEY_NO, 2, &(i as u16).to_le_bytes()),
            kv_bytes(KEY_COUNT, 2, &(self.count() as u16).to_le_bytes()),
            kv_bytes(KEY_TENSORS, 5, &(self.tensors.len() as i32).to_le_bytes()),
        ];
        if i > 0 && self.alignment != 32 {
            v.push(kv_bytes(
                "general.alignment",
                4,
                &(self.alignment as u32).to_le_bytes(),
            ));
        }
        v
    }

    /// The header of shard `i`, padded to the alignment, and its tensors' new offsets.
    fn header(&self, i: usize) -> Vec<u8> {
        let mut kvs: Vec<Vec<u8>> = if i == 0 { self.kvs.clone() } else { Vec::new() };
        kvs.extend(self.split_kvs(i));
        let mut h = Vec::new();
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&3u32.to_le_bytes());
        h.extend_from_slice(&(self.shards[i].len() as u64).to_le_bytes());
        h.extend_from_slice(&(kvs.len() as u64).to_le_bytes());
        for kv in &kvs {
            h.extend_from_slice(kv);
        }
        let mut off = 0u64;
        for &t in &self.shards[i] {
            let (info, _, len) = &self.tensors[t];
            h.extend_from_slice(info);
            h.extend_from_slice(&off.to_le_bytes());
            off = align(off + len, self.alignment);
        }
        let padded = align(h.len() as u64, self.alignment);
        h.resize(padded as usize, 0);
        h
    }

    /// Writes shard `i` (0-based) of the source file `src` to `out`; returns its size.
    pub fn write_shard(&self, src: &Path, i: usize, out: &mut dyn Write) -> io::Result<u64> {
        let head = self.header(i);
        out.write_all(&head)?;
        let mut written = head.len() as u64;
        let mut f = File::open(src)?;
        let mut off = 0u64;
        for &t in &self.shards[i] {
            let (_, from, len) = self.tensors[t];
            f.seek(SeekFrom::Start(from))?;
            let copied = io::copy(&mut (&mut f).take(len), out)?;
            if copied != len {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the model file is shorter than its header says",
                ));
            }
            let end = align(off + len, self.alignment);
            out.write_all(&vec![0u8; (end - off - len) as usize])?;
            off = end;
        }
        written += off;
        Ok(written)
    }
}

/// Plans the split of the GGUF at `path` (header `info`) into files of at most `limit`
/// bytes (see the module doc).
pub fn plan(path: &Path, info: &GgufInfo, limit: u64) -> Result<SplitPlan, SplitError> {
    let p = path.display().to_string();
    let layout = |reason: String| SplitError::Layout {
        path: p.clone(),
        reason,
    };
    let io = |source: io::Error| {
        SplitError::Gguf(GgufError::Io {
            path: p.clone(),
            source,
        })
    };
    let mut f = File::open(path).map_err(io)?;
    let file_len = f.metadata().map_err(io)?.len();
    if info.data_offset > file_len {
        return Err(layout("the header runs past the end of the file".into()));
    }
    let mut header = vec![0u8; info.data_offset as usize];
    f.read_exact(&mut header).map_err(io)?;
    let len = header.len() as u64;
    let mut r = Reader {
        r: io::Cursor::new(&header[..]),
        pos: 0,
    };
    let fmt = |e: ReadErr| match e {
        ReadErr::Io(e) => layout(e.to_string()),
        ReadErr::Format(reason) => layout(reason),
    };
    r.bytes(8).map_err(|e| fmt(e.into()))?;
    let n_tensors = r.u64().map_err(|e| fmt(e.into()))?;
    let n_kv = r.u64().map_err(|e| fmt(e.into()))?;
    let mut kvs = Vec::new();
    for _ in 0..n_kv {
        let start = r.pos as usize;
        let k = read_string(&mut r, len).map_err(fmt)?;
        let t = r.u32().map_err(|e| fmt(e.into()))?;
        read_value(&mut r, t, len, false).map_err(fmt)?;
        if !k.starts_with("split.") {
            kvs.push(header[start..r.pos as usize].to_vec());
        }
    }
    let data = file_len - info.data_offset;
    let mut order: Vec<usize> = (0..info.tensors.len()).collect();
    order.sort_by_key(|&i| info.tensors[i].offset);
    let mut extent = vec![0u64; info.tensors.len()];
    for (j, &i) in order.iter().enumerate() {
        let start = info.tensors[i].offset;
        let end = order
            .get(j + 1)
            .map_or(data, |&n| info.tensors[n].offset)
            .min(data);
        if start > end || !start.is_multiple_of(info.alignment) {
            return Err(layout(format!(
                "tensor '{}' lies outside the data or is misaligned",
                info.tensors[i].name
            )));
        }
        extent[i] = end - start;
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for _ in 0..n_tensors {
        let start = r.pos as usize;
        read_string(&mut r, len).map_err(fmt)?;
        let n = r.u32().map_err(|e| fmt(e.into()))?;
        r.skip(8 * n as u64 + 4).map_err(|e| fmt(e.into()))?;
        let info_bytes = header[start..r.pos as usize].to_vec();
        r.skip(8).map_err(|e| fmt(e.into()))?;
        let i = tensors.len();
        tensors.push((
            info_bytes,
            info.data_offset + info.tensors[i].offset,
            extent[i],
        ));
    }

    let mut plan = SplitPlan {
        kvs,
        tensors,
        alignment: info.alignment,
        shards: vec![Vec::new()],
        sizes: Vec::new(),
    };
    let first = plan.header(0).len() as u64;
    if first > limit {
        return Err(SplitError::HeaderTooLarge {
            path: p,
            size: first,
            limit,
        });
    }
    // Fixed part of a later shard's header: 24 bytes, the split keys, the alignment key.
    let base = 24
        + plan
            .split_kvs(1)
            .iter()
            .map(|k| k.len() as u64)
            .sum::<u64>();
    let (mut head, mut body) = (base, 0u64);
    let mut cur: Vec<usize> = Vec::new();
    let each: Vec<(u64, u64)> = plan
        .tensors
        .iter()
        .map(|t| (t.0.len() as u64 + 8, t.2))
        .collect();
    for (i, &(ilen, n)) in each.iter().enumerate() {
        let h = head + ilen;
        let b = body + align(n, plan.alignment);
        if align(h, plan.alignment) + b <= limit {
            cur.push(i);
            (head, body) = (h, b);
            continue;
        }
        let alone = align(base + ilen, plan.alignment) + align(n, plan.alignment);
        if alone > limit {
            return Err(SplitError::TensorTooLarge {
                path: p,
                tensor: info.tensors[i].name.chars().take(80).collect(),
                size: n,
                limit,
            });
        }
        if !cur.is_empty() {
            plan.shards.push(std::mem::take(&mut cur));
        }
        cur.push(i);
        head = base + ilen;
        body = align(n, plan.alignment);
    }
    if !cur.is_empty() {
        plan.shards.push(cur);
    }
    if plan.count() > u16::MAX as usize {
        return Err(SplitError::TooManyShards {
            path: p,
            count: plan.count(),
        });
    }
    plan.sizes = (0..plan.count())
        .map(|i| {
            plan.header(i).len() as u64
                + plan.shards[i]
                    .iter()
                    .map(|&t| align(plan.tensors[t].2, plan.alignment))
                    .sum::<u64>()
        })
        .collect();
    Ok(plan)
}

impl crate::diagnostic::Diagnostic for SplitError {
    fn help(&self) -> Option<String> {
        match self {
            SplitError::TensorTooLarge { .. } => Some("use a medium without a per-file limit (exFAT, NTFS, ext4), or a smaller quantization".into()),
            SplitError::HeaderTooLarge { .. } => Some("use a medium without a per-file limit (exFAT, NTFS, ext4)".into()),
            SplitError::TooManyShards { .. } => Some("use a larger --max-file-size".into()),
            SplitError::Gguf(e) => crate::diagnostic::Diagnostic::help(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{read_info, write_synthetic, MetaValue};
    use super::*;

    #[test]
    fn names_shards_as_llama_cpp_does() {
        assert_eq!(shard_name("m", 2, 3), "m-00002-of-00003.gguf");
        assert_eq!(parse_shard_name("m-00002-of-00003.gguf"), Some(("m", 2, 3)));
        assert_eq!(
            parse_shard_name("a-b-00001-of-00010.gguf"),
            Some(("a-b", 1, 10))
        );
        assert_eq!(parse_shard_name("m-00004-of-00003.gguf"), None);
        assert_eq!(parse_shard_name("m-0001-of-00003.gguf"), None);
        assert_eq!(parse_shard_name("m.gguf"), None);
    }

    #[test]
    fn splits_into_loadable_shards() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("m.gguf");
        let tensors: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| (format!("t{i}"), vec![i as u8 + 1; 1000 + 100 * i]))
            .collect();
        let mut buf = Vec::new();
        write_synthetic(
            &mut buf,
            &[
                ("general.architecture", MetaValue::Str("llama".into())),
                ("tokenizer.chat_template", MetaValue::Str("{{x}}".into())),
            ],
            &tensors
                .iter()
                .map(|(n, b)| (n.as_str(), vec![b.len() as u64 / 4], b.as_slice()))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        std::fs::write(&src, &buf).unwrap();
        let info = read_info(&src).unwrap();
        let plan = plan(&src, &info, 3000).unwrap();
        assert!(plan.count() >= 3, "{:?}", plan.shards);
        assert!(plan.shards[0].is_empty());
        let mut seen = 0;
        for i in 0..plan.count() {
            let p = d
                .path()
                .join(shard_name("s", i as u32 + 1, plan.count() as u32));
            let mut out = Vec::new();
            let n = plan.write_shard(&src, i, &mut out).unwrap();
            assert_eq!(n, out.len() as u64);
            assert_eq!(n, plan.sizes[i]);
            assert!(n <= 3000);
            std::fs::write(&p, &out).unwrap();
            let si = read_info(&p).unwrap();
            assert_eq!(si.split_no, Some(i as u16));
            assert_eq!(si.split_count, Some(plan.count() as u16));
            assert_eq!(si.split_tensors, Some(6));
            assert_eq!(si.chat_template.is_some(), i == 0);
            for t in &si.tensors {
                let k: usize = t.name[1..].parse().unwrap();
                let at = (si.data_offset + t.offset) as usize;
                assert_eq!(&out[at..at + tensors[k].1.len()], &tensors[k].1[..]);
                assert_eq!(t.offset % 32, 0);
                seen += 1;
            }
        }
        assert_eq!(seen, 6);
        assert!(matches!(
            super::plan(&src, &info, 1200),
            Err(SplitError::TensorTooLarge { .. })
        ));
    }
}
