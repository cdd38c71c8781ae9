//! The llama.cpp side of `offgrid run`: loading a GGUF model, applying the chat template
//! stored in the model (llama.cpp's `llama_chat_apply_template`), and generating an
//! answer token by token into a caller's sink.
//!
//! A [`Chat`] keeps the conversation and the tokens already in the KV cache: each turn
//! re-renders the whole conversation through the template, keeps the cached prefix that
//! still matches and decodes only the rest (llama.cpp server's prefix reuse). When the
//! conversation outgrows the context, the oldest turns are dropped.
//! Known gaps: llama.cpp's built-in template engine recognises the common template
//! families only (ChatML, Llama 2/3, Mistral, Gemma, Phi, …); a model with an unknown
//! template falls back to ChatML, flagged by [`Model::template_fallback`]. CPU only.

use std::io;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::utf8::Utf8Stream;
use super::LauncherError;

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Let llama.cpp log to stderr (otherwise its logs are discarded).
    pub verbose: bool,
}

/// How to run a conversation.
#[derive(Debug, Clone)]
pub struct ChatOptions {
    /// Context size in tokens (prompt, history and answer together).
    pub ctx: u32,
    /// Threads for generation and prompt processing.
    pub threads: u32,
    /// Sampling temperature; 0 is greedy decoding (the same output every run).
    pub temp: f32,
    /// Seed of the sampler's random numbers (ignored when greedy).
    pub seed: u32,
    /// An optional system message opening the conversation.
    pub system: Option<String>,
}

/// A loaded model. Holds the llama.cpp backend, so only one exists per process.
pub struct Model {
    // Field order is drop order: the model goes before the backend.
    model: LlamaModel,
    template: LlamaChatTemplate,
    template_fallback: bool,
    backend: LlamaBackend,
    /// Time spent loading (mmap and tensor setup).
    pub load_time: Duration,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("n_params", &self.model.n_params())
            .finish_non_exhaustive()
    }
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model ended its turn (an end-of-generation token).
    EndOfTurn,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The caller's stop flag was raised (Ctrl-C).
    Interrupted,
}

/// Timing of one answer, as llama.cpp's perf counters report it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Prompt tokens decoded for this turn (the cached prefix is not decoded again).
    pub prompt_tokens: u32,
    pub prompt_time: Duration,
    /// Tokens generated.
    pub gen_tokens: u32,
    /// Time from the first generated token to the last.
    pub gen_time: Duration,
    /// Time from the start of the turn to the first token of the answer.
    pub first_token: Duration,
}

impl Stats {
    /// Prompt processing speed, tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        per_second(self.prompt_tokens, self.prompt_time)
    }
    /// Generation speed, tokens per second.
    pub fn gen_tps(&self) -> f64 {
        per_second(self.gen_tokens, self.gen_time)
    }
}

fn per_second(n: u32, t: Duration) -> f64 {
    if t.is_zero() {
        0.0
    } else {
        n as f64 / t.as_secs_f64()
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub text: String,
    pub stop: StopReason,
    pub stats: Stats,
}

impl Model {
    /// Starts llama.cpp and loads (mmaps) the GGUF model at `path`.
    pub fn load(path: &Path, opts: &LoadOptions) -> Result<Model, LauncherError> {
        let mut backend =
            LlamaBackend::init().map_err(|e| LauncherError::Backend(e.to_string()))?;
        if !opts.verbose {
            backend.void_logs();
        }
        let start = Instant::now();
        let params = LlamaModelParams::default();
        let model = LlamaModel::load_from_file(&backend, path, &params).map_err(|e| {
            LauncherError::Load {
                path: path.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let load_time = start.elapsed();
        // Use the model's own template when llama.cpp's template engine knows it.
        let probe = LlamaChatMessage::new("user".to_owned(), "hi".to_owned())
            .map_err(|e| LauncherError::Template(e.to_string()))?;
        let (template, template_fallback) = match model.chat_template(None) {
            Ok(t) if model.apply_chat_template(&t, &[probe], true).is_ok() => (t, false),
            _ => (chatml(), true),
        };
        Ok(Model {
            model,
            template,
            template_fallback,
            backend,
            load_time,
        })
    }

    /// True when the model carries no chat template (or one llama.cpp does not know) and
    /// ChatML is used instead.
    pub fn template_fallback(&self) -> bool {
        self.template_fallback
    }

    /// The context length the model was trained with.
    pub fn n_ctx_train(&self) -> u32 {
        self.model.n_ctx_train()
    }

    /// Opens a conversation with its own context (KV cache) and sampler.
    pub fn chat(&self, opts: &ChatOptions) -> Result<Chat<'_>, LauncherError> {
        let ctx_size = opts.ctx.max(16);
        let threads = opts.threads.clamp(1, 1024) as i32;
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(ctx_size))
            .with_n_batch(ctx_size.min(2048))
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let ctx = self
            .model
            .new_context(&self.backend, params)
            .map_err(|_| LauncherError::Context { ctx: ctx_size })?;
        let sampler = if opts.temp <= 0.0 {
            LlamaSampler::greedy()
        } else {
            // llama.cpp's default chain (top-k 40, top-p 0.95, min-p 0.05), then temperature.
            LlamaSampler::chain_simple([
                LlamaSampler::top_k(40),
                LlamaSampler::top_p(0.95, 1),
                LlamaSampler::min_p(0.05, 1),
                LlamaSampler::temp(opts.temp),
                LlamaSampler::dist(opts.seed),
            ])
        };
        let mut messages = Vec::new();
        if let Some(s) = &opts.system {
            messages.push(("system".to_owned(), s.clone()));
        }
        Ok(Chat {
            model: self,
            ctx,
            sampler,
            messages,
            cached: Vec::new(),
            n_ctx: ctx_size,
        })
    }
}

fn chatml() -> LlamaChatTemplate {
    // "chatml" has no NUL byte; the constructor cannot fail on it.
    LlamaChatTemplate::new("chatml").unwrap_or_else(|_| unreachable!())
}

/// A conversation: its messages, the llama.cpp context and the sampler.
pub struct Chat<'m> {
    model: &'m Model,
    ctx: LlamaContext<'m>,
    sampler: LlamaSampler,
    /// `(role, content)`, oldest first.
    messages: Vec<(String, String)>,
    /// The tokens whose keys and values are in the KV cache, in order.
    cached: Vec<LlamaToken>,
    n_ctx: u32,
}

impl std::fmt::Debug for Chat<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chat")
            .field("messages", &self.messages.len())
            .field("cached", &self.cached.len())
            .finish_non_exhaustive()
    }
}

impl Chat<'_> {
    /// Renders the conversation through the model's chat template and tokenizes it.
    fn render(&self) -> Result<Vec<LlamaToken>, LauncherError> {
        let msgs = self
            .messages
            .iter()
            .map(|(r, c)| LlamaChatMessage::new(r.clone(), c.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LauncherError::Template(e.to_string()))?;
        let text = self
            .model
            .model
            .apply_chat_template(&self.model.template, &msgs, true)
            .map_err(|e| LauncherError::Template(e.to_string()))?;
        Ok(self
            .model
            .model
            .vocab()
            .tokenize(text.as_bytes(), true, true))
    }

    /// Adds the user's message, then generates the answer, handing each piece of text to
    /// `on_text` as it is produced. Stops at the end of the model's turn, after
    /// `max_tokens`, when the context is full, or when `stop` is raised.
    pub fn ask(
        &mut self,
        user: &str,
        max_tokens: Option<u32>,
        stop: &AtomicBool,
        on_text: &mut dyn FnMut(&str) -> io::Result<()>,
    ) -> Result<Answer, LauncherError> {
        let turn_start = Instant::now();
        self.messages.push(("user".to_owned(), user.to_owned()));
        // Leave room for at least a short answer; drop the oldest turns if needed.
        let room = (self.n_ctx / 8).clamp(4, 256) as usize;
        let tokens = loop {
            let t = self.render()?;
            if t.len() + room <= self.n_ctx as usize {
                break t;
            }
            let first = usize::from(self.messages.first().is_some_and(|m| m.0 == "system"));
            if self.messages.len() - first <= 1 {
                self.messages.pop();
                return Err(LauncherError::PromptTooLong {
                    tokens: t.len(),
                    ctx: self.n_ctx,
                });
            }
            // Drop the oldest user message and the answer that followed it.
            self.messages.remove(first);
            if self.messages.get(first).is_some_and(|m| m.0 == "assistant") {
                self.messages.remove(first);
            }
        };

        if tokens.is_empty() {
            self.messages.pop();
            return Err(LauncherError::Template(
                "the template rendered an empty prompt".into(),
            ));
        }
        // Reuse the cached prefix; always decode at least one token to get logits.
        let mut keep = self
            .cached
            .iter()
            .zip(&tokens)
            .take_while(|(a, b)| a == b)
            .count();
        if keep == tokens.len() {
            keep -= 1;
        }
        self.ctx
            .clear_kv_cache_seq(Some(0), Some(keep as u32), None)
            .map_err(|e| LauncherError::Decode(e.to_string()))?;
        self.cached.truncate(keep);

        let prompt_start = Instant::now();
        let n_batch = self.ctx.n_batch().max(1) as usize;
        let mut batch = LlamaBatch::new(n_batch, 1);
        let rest = &tokens[keep..];
        for (ci, chunk) in rest.chunks(n_batch).enumerate() {
            batch.clear();
            let last_chunk = (ci + 1) * n_batch >= rest.len();
            for (i, t) in chunk.iter().enumerate() {
                let pos = keep + ci * n_batch + i;
                let logits = last_chunk && i + 1 == chunk.len();
                batch
                    .add(*t, pos as i32, &[0], logits)
                    .map_err(|e| LauncherError::Decode(e.to_string()))?;
            }
            if let Err(e) = self.ctx.decode(&mut batch) {
                // The cache may hold part of this batch: forget it all.
                self.ctx.clear_kv_cache();
                self.cached.clear();
                return Err(LauncherError::Decode(e.to_string()));
            }
            self.cached.extend_from_slice(chunk);
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let prompt_time = prompt_start.elapsed();

        let mut stats = Stats {
            prompt_tokens: (self.cached.len() - keep) as u32,
            prompt_time,
            ..Stats::default()
        };
        let vocab = self.model.model.vocab();
        let mut text = String::new();
        let mut utf8 = Utf8Stream::default();
        let mut emit = |s: &str, text: &mut String| -> Result<(), LauncherError> {
            if !s.is_empty() {
                text.push_str(s);
                on_text(s).map_err(LauncherError::Output)?;
            }
            Ok(())
        };
        let mut gen_start = None;
        let reason;
        let mut idx = batch.n_tokens() - 1;
        let mut produced = 0u32;
        loop {
            if stop.load(Ordering::Relaxed) {
                reason = StopReason::Interrupted;
                break;
            }
            if max_tokens.is_some_and(|m| produced >= m) {
                reason = StopReason::MaxTokens;
                break;
            }
            let token = self.sampler.sample(&self.ctx, idx);
            if produced == 0 {
                stats.first_token = turn_start.elapsed();
                gen_start = Some(Instant::now());
            }
            produced += 1;
            if vocab.is_eog(token) {
                reason = StopReason::EndOfTurn;
                break;
            }
            let piece = vocab.token_to_piece(token, false, None);
            let s = utf8.push(&piece);
            emit(&s, &mut text)?;
            if self.cached.len() + 1 >= self.n_ctx as usize {
                reason = StopReason::ContextFull;
                break;
            }
            batch.clear();
            batch
                .add(token, self.cached.len() as i32, &[0], true)
                .map_err(|e| LauncherError::Decode(e.to_string()))?;
            if let Err(e) = self.ctx.decode(&mut batch) {
                self.ctx.clear_kv_cache();
                self.cached.clear();
                return Err(LauncherError::Decode(e.to_string()));
            }
            self.cached.push(token);
            idx = 0;
        }
        let tail = utf8.finish();
        emit(&tail, &mut text)?;
        stats.gen_tokens = produced;
        stats.gen_time = gen_start.map(|s| s.elapsed()).unwrap_or_default();
        self.messages.push(("assistant".to_owned(), text.clone()));
        Ok(Answer {
            text,
            stop: reason,
            stats,
        })
    }

    /// Forgets the conversation (keeps the system message).
    pub fn reset(&mut self) {
        self.messages.retain(|m| m.0 == "system");
        self.ctx.clear_kv_cache();
        self.cached.clear();
    }
}
