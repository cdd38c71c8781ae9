//! Finding models (on the stick, in a models dir, in the installed home), choosing the
//! best quantization that fits this machine's RAM, and describing them for `offgrid models`.
//! Builds without llama.cpp.
//!
//! STUB: to be written (owner: launcher helper).

/// Why a model could not be found or used.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model '{0}' not found")]
    NotFound(String),
}

impl ModelError {
    /// True for a clean "no" (exit 1) rather than an error.
    pub fn is_refusal(&self) -> bool {
        false
    }
}
