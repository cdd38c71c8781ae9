//! Will a model fit this machine? The memory a model needs at a given context size, and
//! what this machine has (RAM read with `sysinfo`, cgroup limits on Linux, physical cores).
//!
//! The estimate (SPEC.md §10) is `weights + kv_cache + overhead`:
//! - `weights`: the GGUF file size (llama.cpp maps the whole file);
//! - `kv_cache`: `ctx × Σ_layers (k_width + v_width) × 2` bytes — llama.cpp's default F16
//!   cache, the widths read from each layer's `attn_k`/`attn_v` weight shapes in the header
//!   (so grouped-query attention is counted right);
//! - `overhead`: 64 MiB (runtime, thread stacks, libraries) plus llama.cpp's compute and
//!   output buffers, `512 × (n_vocab + 8 × n_embd) × 4` bytes (one 512-token micro-batch
//!   of F32 activations and logits).
//!
//! `OFFGRID_ASSUME_RAM_MIB` replaces the available memory (a documented test hook, also
//! useful to keep headroom on a shared machine). Known gaps: recurrent models (no
//! `attn_k`) get no KV estimate; page cache is counted as available, as the kernel
//! counts it.

use crate::gguf::GgufInfo;

/// Environment variable overriding the available memory, in MiB.
pub const ASSUME_RAM_ENV: &str = "OFFGRID_ASSUME_RAM_MIB";

/// Fixed overhead of a running llama.cpp process, bytes.
pub const BASE_OVERHEAD: u64 = 64 << 20;
/// Micro-batch size llama.cpp sizes its compute buffer for.
pub const UBATCH: u64 = 512;
/// Default context size when `--ctx` is not given (capped at the model's own).
pub const DEFAULT_CTX: u64 = 4096;

/// The memory a model needs, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct MemoryEstimate {
    pub weights: u64,
    pub kv_cache: u64,
    pub overhead: u64,
    /// The context size the estimate is for.
    pub ctx: u64,
}

impl MemoryEstimate {
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.overhead
    }
}

/// The shape numbers the estimate needs, read from the tensor list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    pub n_layer: u64,
    /// Σ over layers of the K and V projection widths.
    pub kv_width: u64,
    pub n_vocab: u64,
    pub n_embd: u64,
}

/// Reads layer count, KV widths, vocabulary and embedding sizes from the tensor shapes.
pub fn shape(info: &GgufInfo) -> Shape {
    let mut s = Shape::default();
    for t in &info.tensors {
        let Some(rest) = t.name.strip_prefix("blk.") else {
            if t.name == "token_embd.weight" && t.dims.len() >= 2 {
                s.n_embd = t.dims[0];
                s.n_vocab = t.dims[1];
            }
            continue;
        };
        let Some((_, leaf)) = rest.split_once('.') else {
            continue;
        };
        if leaf == "attn_k.weight" || leaf == "attn_v.weight" {
            // GGUF dims: ne0 = input width (n_embd), ne1 = output width (heads × head dim).
            if let Some(w) = t.dims.get(1) {
                s.kv_width = s.kv_width.saturating_add(*w);
            }
            if leaf == "attn_k.weight" {
                s.n_layer += 1;
            }
        }
    }
    s
}

/// The context size used when none is asked for: the model's own, at most [`DEFAULT_CTX`].
pub fn default_ctx(info_ctx: Option<u64>) -> u64 {
    info_ctx.unwrap_or(DEFAULT_CTX).clamp(16, DEFAULT_CTX)
}

/// Estimates the memory a model of `file_size` bytes with header `info` needs at `ctx`.
pub fn estimate(info: &GgufInfo, file_size: u64, ctx: u64) -> MemoryEstimate {
    let s = shape(info);
    MemoryEstimate {
        weights: file_size,
        kv_cache: ctx.saturating_mul(s.kv_width).saturating_mul(2),
        overhead: BASE_OVERHEAD
            + UBATCH
                .saturating_mul(s.n_vocab.saturating_add(s.n_embd.saturating_mul(8)))
                .saturating_mul(4),
        ctx,
    }
}

/// What this machine offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Machine {
    /// Memory available to a new process, bytes.
    pub available_ram: u64,
    pub total_ram: u64,
    pub physical_cores: usize,
    pub logical_cores: usize,
    /// True when `available_ram` comes from `OFFGRID_ASSUME_RAM_MIB`.
    pub assumed: bool,
}

impl Machine {
    /// Reads RAM and CPUs now.
    pub fn probe() -> Machine {
        let logical = std::thread::available_parallelism().map_or(1, |n| n.get());
        let physical = sysinfo::System::physical_core_count()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(logical)
            .min(logical);
        let (mut available, mut total) = (0, 0);
        if let Ok(mut sys) = sysinfo::System::new() {
            sys.refresh_memory();
            available = sys.available_memory();
            total = sys.total_memory();
            if let Some(cg) = sys.cgroup_limits() {
                if cg.total_memory > 0 && cg.total_memory < total {
                    total = cg.total_memory;
                    available = available.min(cg.free_memory);
                }
            }
        }
        let assumed = std::env::var(ASSUME_RAM_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok());
        Machine {
            available_ram: assumed.map_or(available, |m| m << 20),
            total_ram: total,
            physical_cores: physical,
            logical_cores: logical,
            assumed: assumed.is_some(),
        }
    }

    /// True when a model needing `need` fits in the available memory.
    pub fn fits(&self, need: &MemoryEstimate) -> bool {
        need.total() <= self.available_ram
    }
}

/// Bytes as MiB with one decimal, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::TensorInfo;

    fn t(name: &str, dims: &[u64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dims: dims.to_vec(),
            ggml_type: 0,
            offset: 0,
        }
    }

    #[test]
    fn counts_gqa_kv_widths() {
        // Two layers, n_embd 576, 3 KV heads of 64 (SmolLM2-135M's shape).
        let info = GgufInfo {
            tensors: vec![
                t("token_embd.weight", &[576, 49152]),
                t("blk.0.attn_k.weight", &[576, 192]),
                t("blk.0.attn_v.weight", &[576, 192]),
                t("blk.0.attn_q.weight", &[576, 576]),
                t("blk.1.attn_k.weight", &[576, 192]),
                t("blk.1.attn_v.weight", &[576, 192]),
            ],
            ..Default::default()
        };
        let s = shape(&info);
        assert_eq!(s.n_layer, 2);
        assert_eq!(s.kv_width, 4 * 192);
        assert_eq!((s.n_vocab, s.n_embd), (49152, 576));
        let e = estimate(&info, 1000, 2048);
        assert_eq!(e.kv_cache, 2048 * 4 * 192 * 2);
        assert_eq!(e.overhead, BASE_OVERHEAD + 512 * (49152 + 8 * 576) * 4);
        assert_eq!(e.total(), 1000 + e.kv_cache + e.overhead);
    }

    #[test]
    fn default_ctx_is_capped() {
        assert_eq!(default_ctx(Some(8192)), 4096);
        assert_eq!(default_ctx(Some(2048)), 2048);
        assert_eq!(default_ctx(None), 4096);
    }
}
