//! `offgrid run`: loading a GGUF model with llama.cpp (crate `llama-cpp-2`) and chatting
//! with it. Built only with the `llama` feature.
//!
//! Code map: [`engine`] (model loading, chat template, token generation and timing),
//! [`cpu`] (does this CPU have the instructions llama.cpp was compiled with),
//! [`utf8`] (streaming text output whole characters only). Finding, verifying and fitting
//! the model happen before, in [`crate::models`]; the CLI (`src/cli/run.rs`) owns the
//! interactive prompt and Ctrl-C. SPEC.md §10 is normative.
//! Known gaps: CPU only (no GPU offload); one conversation per process.

pub mod cpu;
pub mod engine;
pub mod utf8;

pub use engine::{Answer, Chat, ChatOptions, LoadOptions, Model, Stats, StopReason};

/// Why llama.cpp could not run the model.
#[derive(Debug, thiserror::Error)]
pub enum LauncherError {
    #[error("cannot start llama.cpp: {0}")]
    Backend(String),
    #[error("llama.cpp cannot load '{path}': {reason}")]
    Load { path: String, reason: String },
    #[error("llama.cpp cannot create a context of {ctx} tokens")]
    Context { ctx: u32 },
    #[error("cannot apply the model's chat template: {0}")]
    Template(String),
    #[error("the prompt is {tokens} tokens but the context holds {ctx}")]
    PromptTooLong { tokens: usize, ctx: u32 },
    #[error("llama.cpp failed to evaluate the model: {0}")]
    Decode(String),
    #[error("cannot write the answer")]
    Output(#[source] std::io::Error),
}

impl crate::diagnostic::Diagnostic for LauncherError {
    fn help(&self) -> Option<String> {
        match self {
            LauncherError::Load { .. } => Some("run with --verbose to see llama.cpp's own log; the file may be damaged or a model architecture this llama.cpp does not support".into()),
            LauncherError::Context { .. } => Some("lower --ctx".into()),
            LauncherError::PromptTooLong { .. } => Some("shorten the prompt or raise --ctx".into()),
            _ => None,
        }
    }
}
