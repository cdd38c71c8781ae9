//! Models that are not GGUF (SPEC.md §18.4): a safetensors folder in a Hugging Face
//! repository's layout (`*.safetensors` weights, `config.json`, tokenizer files) or one
//! ONNX file. offgrid carries, verifies and lists them; `run` starts only GGUF models and
//! says what such a model is for instead.
//!
//! Reading is bounded and shallow: a safetensors header (8-byte little-endian length,
//! at most 100 MiB of JSON) gives the parameter count; `config.json` (at most 1 MiB) the
//! architecture; an ONNX file is only checked to start like a protobuf `ModelProto`
//! (field 1, `ir_version`). Known gap: weights sharded over several safetensors files are
//! summed, but their index file is not cross-checked.

use std::io::Read;
use std::path::Path;

use crate::manifest::ModelFormat;

/// Largest safetensors header read (bytes).
pub const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;
/// Largest `config.json` read (bytes).
pub const MAX_CONFIG: u64 = 1 << 20;

/// What a safetensors folder holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderInfo {
    /// `config.json`'s `model_type`, e.g. `bert`.
    pub model_type: Option<String>,
    /// `config.json`'s first `architectures` entry, e.g. `BertModel`.
    pub class: Option<String>,
    /// Sum over the tensors of every `*.safetensors` file of the product of their shapes.
    pub parameters: u64,
    /// The folder has sentence-transformers files (`modules.json`).
    pub sentence_transformers: bool,
}

impl FolderInfo {
    /// The architecture recorded in the manifest: `model_type (Class)`.
    pub fn architecture(&self) -> Option<String> {
        match (&self.model_type, &self.class) {
            (Some(t), Some(c)) => Some(format!("{t} ({c})")),
            (Some(t), None) => Some(t.clone()),
            (None, Some(c)) => Some(c.clone()),
            (None, None) => None,
        }
    }
}

/// Parameters in one safetensors file, from its header.
pub fn safetensors_parameters(path: &Path) -> Result<u64, String> {
    let mut f = crate::hash::open_regular(path).map_err(|e| e.to_string())?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| "it is too short for a safetensors header".to_owned())?;
    let n = u64::from_le_bytes(len);
    if n == 0 || n > MAX_SAFETENSORS_HEADER {
        return Err(format!("its header length {n} is not a safetensors header"));
    }
    let mut head = Vec::new();
    f.take(n)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    if head.len() as u64 != n {
        return Err("its header is truncated".into());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&head).map_err(|_| "its header is not JSON".to_owned())?;
    let obj = v
        .as_object()
        .ok_or_else(|| "its header is not a JSON object".to_owned())?;
    let mut total: u64 = 0;
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let shape = t
            .get("shape")
            .and_then(|s| s.as_array())
            .ok_or_else(|| format!("tensor '{}' has no shape", crate::excerpt::excerpt(name)))?;
        let mut p: u64 = 1;
        for d in shape {
            p = p.saturating_mul(d.as_u64().ok_or("a shape is not a number")?);
        }
        total = total.saturating_add(p);
    }
    Ok(total)
}

/// True when `dir` looks like a safetensors model folder (it has a `*.safetensors` file).
pub fn is_safetensors_folder(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
    })
}

/// Reads a safetensors folder: `config.json` and every top-level `*.safetensors` header.
pub fn read_folder(dir: &Path) -> Result<FolderInfo, String> {
    let mut info = FolderInfo::default();
    let cfg = dir.join("config.json");
    let f = crate::hash::open_regular(&cfg)
        .map_err(|_| "it has no config.json (a Hugging Face model folder has one)".to_owned())?;
    let mut text = Vec::new();
    f.take(MAX_CONFIG + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("config.json: {e}"))?;
    if text.len() as u64 > MAX_CONFIG {
        return Err(format!("config.json is larger than {MAX_CONFIG} bytes"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|_| "config.json is not JSON".to_owned())?;
    let short = |s: &str| crate::excerpt::excerpt(s);
    info.model_type = v.get("model_type").and_then(|t| t.as_str()).map(short);
    info.class = v
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|t| t.as_str())
        .map(short);
    info.sentence_transformers = dir.join("modules.json").is_file();
    let mut weights: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    weights.sort();
    if weights.is_empty() {
        return Err("it holds no *.safetensors file".into());
    }
    for w in weights {
        let n = safetensors_parameters(&w).map_err(|e| {
            format!(
                "'{}': {e}",
                w.file_name().unwrap_or_default().to_string_lossy()
            )
        })?;
        info.parameters = info.parameters.saturating_add(n);
    }
    Ok(info)
}

/// Checks that `path` starts like an ONNX `ModelProto` (protobuf field 1, a varint).
pub fn check_onnx(path: &Path) -> Result<(), String> {
    let mut f = crate::hash::open_regular(path).map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b).map_err(|_| "it is empty".to_owned())?;
    if b[0] != 0x08 {
        return Err("it does not start like an ONNX model (protobuf field 1, ir_version)".into());
    }
    Ok(())
}

/// What a model of `format` with `architecture` is for, said to the operator when `run`
/// cannot start it.
pub fn purpose(format: ModelFormat, architecture: Option<&str>) -> String {
    let a = architecture.unwrap_or("").to_ascii_lowercase();
    let encoder = [
        "bert", "roberta", "mpnet", "e5", "minilm", "xlm", "electra", "nomic",
    ]
    .iter()
    .any(|k| a.contains(k));
    let kind = if encoder || a.contains("sentence") {
        "a text-embedding (encoder) model: it turns text into vectors for search and similarity, it does not chat"
    } else {
        "a model for another program to load"
    };
    match format {
        ModelFormat::Gguf => "a GGUF model offgrid run starts".into(),
        ModelFormat::Safetensors => format!(
            "{kind}; its folder (weights, config.json, tokenizer) is for a program that reads Hugging Face safetensors, e.g. sentence-transformers or transformers"
        ),
        ModelFormat::Onnx => format!("{kind}; the file is for an ONNX runtime (onnxruntime)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_synthetic_safetensors_folder() {
        let d = tempfile::tempdir().unwrap();
        let head = br#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"x":"y"}}"#;
        let mut b = (head.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(head);
        b.extend_from_slice(&[0u8; 24]);
        std::fs::write(d.path().join("model.safetensors"), b).unwrap();
        std::fs::write(
            d.path().join("config.json"),
            br#"{"model_type":"bert","architectures":["BertModel"]}"#,
        )
        .unwrap();
        let i = read_folder(d.path()).unwrap();
        assert_eq!(i.parameters, 6);
        assert_eq!(i.architecture().as_deref(), Some("bert (BertModel)"));
        std::fs::write(
            d.path().join("model.safetensors"),
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
        )
        .unwrap();
        assert!(read_folder(d.path()).is_err());
        std::fs::remove_file(d.path().join("config.json")).unwrap();
        assert!(read_folder(d.path()).unwrap_err().contains("config.json"));
    }
}
