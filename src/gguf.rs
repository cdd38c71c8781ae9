//! GGUF header reading: the metadata offgrid records in a manifest (architecture,
//! quantization, parameter count, context length) and that the launcher needs (chat
//! template), read without loading tensor data.
//!
//! STUB: API fixed, body to be written (owner: coordinator).

use std::path::Path;

/// What offgrid reads from a GGUF header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GgufInfo {
    pub version: u32,
    pub architecture: Option<String>,
    pub name: Option<String>,
    /// `general.file_type` mapped to its llama.cpp name (`Q4_1`, `F16`, …).
    pub quantization: Option<String>,
    pub parameters: u64,
    pub context_length: Option<u64>,
    pub chat_template: Option<String>,
    pub tensor_count: u64,
    /// Offset of the tensor data section (aligned).
    pub data_offset: u64,
    /// Alignment of tensor data.
    pub alignment: u64,
}

/// Why a GGUF header could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read '{path}': {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("'{path}' is not a GGUF model: {reason}\nhelp: offgrid carries llama.cpp GGUF models; convert the model with llama.cpp's convert_hf_to_gguf.py")]
    Format { path: String, reason: String },
}

/// Reads the header of the GGUF file at `path`.
pub fn read_info(path: &Path) -> Result<GgufInfo, GgufError> {
    let _ = path;
    todo!("gguf::read_info")
}
