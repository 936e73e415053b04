//! Hyper-parameters from GGUF metadata (keys as written by llama.cpp's converter,
//! `{arch}.embedding_length` …), and what differs between the architectures run here.
//!
//! The architectures are variations of one forward (llama.cpp's `src/models/llama.cpp`,
//! `qwen2.cpp`, `qwen3.cpp`, `gemma3.cpp`; Gemma Team 2025, "Gemma 3 Technical Report", arXiv:2503.19786).
//! Each difference is named once in [`Arch`]; the engines read these fields, never the name.

use super::rope::{rope_table_scaled, rope_turns_scaled};
use super::ModelError;
use crate::gguf::Gguf;
use serde::Serialize;

/// The architectures gqa-lab runs (`general.architecture`).
pub const ARCHITECTURES: [&str; 4] = ["llama", "qwen2", "qwen3", "gemma3"];

/// What an architecture changes in the llama forward.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Arch {
    /// `general.architecture`.
    pub name: String,
    /// RoPE rotates the halves `(x[i], x[i + hd/2])` of each head (llama.cpp's NEOX mode)
    /// instead of adjacent pairs. The engines read Q and K with their rows reordered at load
    /// ([`super::rope_rows`]), so every kernel rotates adjacent pairs.
    pub rope_neox: bool,
    /// Biases added to the query, key and value projections (`attn_q.bias`, `attn_k.bias`,
    /// `attn_v.bias`; Qwen2).
    pub qkv_bias: bool,
    /// Llama 3's `rope_freqs.weight` (`[head_dim / 2]`, a tensor, not metadata): pair i's RoPE
    /// angle is divided by factor i ([`super::rope::rope_turns_scaled`]). Read from the file
    /// whatever the architecture; None when absent.
    pub rope_freqs: Option<Vec<f32>>,
    /// RMSNorm of each query and key head (over head_dim) before RoPE (`attn_q_norm`,
    /// `attn_k_norm`; Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// RMSNorm of the attention output and of the FFN output before each is added to the
    /// residual stream (`post_attention_norm`, `post_ffw_norm`).
    pub post_norms: bool,
    /// The FFN's gate activation: GELU (tanh approximation; GeGLU) instead of SiLU (SwiGLU).
    pub gelu: bool,
    /// The embedding row is multiplied by this (√dim for Gemma, else 1).
    pub embed_scale: f32,
    /// Sliding-window attention: local layers attend to the last `sliding_window` positions
    /// (0: none); every `swa_pattern`-th layer (1-based) is global.
    pub sliding_window: usize,
    pub swa_pattern: usize,
    /// RoPE base of the local (sliding-window) layers.
    pub rope_base_local: f32,
}

impl Arch {
    /// Llama as published: no variation.
    pub fn llama() -> Self {
        Arch {
            name: "llama".into(),
            rope_neox: false,
            qkv_bias: false,
            rope_freqs: None,
            qk_norm: false,
            post_norms: false,
            gelu: false,
            embed_scale: 1.0,
            sliding_window: 0,
            swa_pattern: 0,
            rope_base_local: 0.0,
        }
    }

    /// Qwen2 as llama.cpp runs it (`LLM_ARCH_QWEN2`): llama with NEOX RoPE and Q/K/V biases.
    fn qwen2() -> Self {
        Arch {
            name: "qwen2".into(),
            rope_neox: true,
            qkv_bias: true,
            ..Arch::llama()
        }
    }

    /// Qwen3 as llama.cpp runs it (`LLM_ARCH_QWEN3`): llama with NEOX RoPE and an RMSNorm of
    /// each query and key head before RoPE (with the model's `rms_eps`); no biases.
    fn qwen3() -> Self {
        Arch {
            name: "qwen3".into(),
            rope_neox: true,
            qk_norm: true,
            ..Arch::llama()
        }
    }

    /// Gemma 3 as llama.cpp runs it (`LLM_ARCH_GEMMA3`): NEOX RoPE, QK norm, post norms,
    /// GeGLU, √dim embedding scale, sliding window on 5 of every 6 layers with RoPE base
    /// 10,000 there (the global layers take `rope.freq_base`).
    fn gemma3(g: &Gguf<'_>, dim: usize) -> Result<Self, ModelError> {
        Ok(Arch {
            name: "gemma3".into(),
            rope_neox: true,
            qkv_bias: false,
            rope_freqs: None,
            qk_norm: true,
            post_norms: true,
            gelu: true,
            embed_scale: (dim as f32).sqrt(),
            sliding_window: g.usize("gemma3.attention.sliding_window")?,
            swa_pattern: 6,
            rope_base_local: 10_000.0,
        })
    }
}

/// Hyper-parameters of a model, checked for consistency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub arch: Arch,
    pub n_layers: usize,
    /// Residual stream width (`{arch}.embedding_length`).
    pub dim: usize,
    /// FFN hidden width (`{arch}.feed_forward_length`).
    pub ffn_dim: usize,
    /// Query heads H.
    pub n_heads: usize,
    /// KV heads of the checkpoint as trained (the native G).
    pub n_kv_heads: usize,
    /// `{arch}.attention.key_length` (= value_length), else dim / H.
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Longest sequence the model was trained for (`{arch}.context_length`).
    pub context_length: usize,
    /// RoPE base of the global layers (all layers but a sliding-window model's local ones).
    pub rope_base: f32,
    pub rms_eps: f32,
}

/// Upper bounds that keep arithmetic on the hyper-parameters far from overflow.
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 1 << 10;
const MAX_CONTEXT: usize = 1 << 24;

impl ModelConfig {
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, ModelError> {
        let name = g.str("general.architecture")?;
        if !ARCHITECTURES.contains(&name) {
            return Err(ModelError::UnsupportedArch(name.to_string()));
        }
        let key = |k: &str| format!("{name}.{k}");
        let opt = |k: &str| g.optional(&key(k), Gguf::usize);
        let n_heads = g.usize(&key("attention.head_count"))?;
        let n_kv_heads = opt("attention.head_count_kv")?.unwrap_or(n_heads);
        let dim = g.usize(&key("embedding_length"))?;
        let vocab_size = match opt("vocab_size")? {
            Some(v) => v,
            None => g.array("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = match opt("attention.key_length")? {
            Some(k) => k,
            None => dim.checked_div(n_heads).unwrap_or(0),
        };
        let mut arch = match name {
            "gemma3" => Arch::gemma3(g, dim)?,
            "qwen2" => Arch::qwen2(),
            "qwen3" => Arch::qwen3(),
            _ => Arch::llama(),
        };
        arch.rope_freqs = rope_freqs(g, head_dim)?;
        let cfg = ModelConfig {
            arch,
            n_layers: g.usize(&key("block_count"))?,
            dim,
            ffn_dim: g.usize(&key("feed_forward_length"))?,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            context_length: g.usize(&key("context_length"))?,
            rope_base: g
                .optional(&key("rope.freq_base"), Gguf::f32)?
                .unwrap_or(10_000.0),
            rms_eps: g.f32(&key("attention.layer_norm_rms_epsilon"))?,
        };
        cfg.validate()?;
        cfg.check_dims(opt("attention.value_length")?, opt("rope.dimension_count")?)?;
        Ok(cfg)
    }

    /// Value heads as wide as key heads, RoPE over the whole head.
    fn check_dims(&self, value: Option<usize>, rope: Option<usize>) -> Result<(), ModelError> {
        if let Some(v) = value.filter(|&v| v != self.head_dim) {
            return Err(ModelError::BadConfig(format!(
                "attention.value_length {v} ≠ key_length {} is not supported",
                self.head_dim
            )));
        }
        if let Some(r) = rope.filter(|&r| r != self.head_dim) {
            return Err(ModelError::BadConfig(format!(
                "partial RoPE (rope.dimension_count {r} ≠ head_dim {}) is not supported",
                self.head_dim
            )));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::BadConfig(m));
        let sizes = [
            self.dim,
            self.ffn_dim,
            self.n_heads,
            self.n_kv_heads,
            self.vocab_size,
            self.head_dim,
        ];
        if sizes.iter().any(|&s| s == 0 || s > MAX_DIM * 4)
            || self.dim > MAX_DIM
            || self.head_dim > 1024
        {
            return bad(format!("sizes out of range: {self:?}"));
        }
        if self.n_layers == 0 || self.n_layers > MAX_LAYERS {
            return bad(format!("block_count {} out of range", self.n_layers));
        }
        if self.context_length == 0 || self.context_length > MAX_CONTEXT {
            return bad(format!(
                "context_length {} out of range",
                self.context_length
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "head_count {} is not divisible by head_count_kv {}",
                self.n_heads, self.n_kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.n_heads * self.head_dim > MAX_DIM * 4 {
            return bad(format!(
                "{} heads of size {} (head_dim must be even)",
                self.n_heads, self.head_dim
            ));
        }
        if !self.rms_eps.is_finite()
            || self.rms_eps <= 0.0
            || !self.rope_base.is_finite()
            || self.rope_base <= 1.0
        {
            return bad(format!(
                "rms eps {} / rope base {} out of range",
                self.rms_eps, self.rope_base
            ));
        }
        if self.arch.sliding_window > MAX_CONTEXT {
            return bad(format!(
                "sliding_window {} out of range",
                self.arch.sliding_window
            ));
        }
        Ok(())
    }

    /// `(cos, sin)` of each RoPE pair's angle at position `pos` in layer `l` (its base, and the
    /// model's frequency factors if any): `[head_dim / 2]`.
    pub fn rope_turns(&self, l: usize, pos: usize) -> Vec<(f32, f32)> {
        let factors = self.arch.rope_freqs.as_deref();
        rope_turns_scaled(pos, self.head_dim, self.layer_rope_base(l), factors)
    }

    /// The RoPE table of the global layers for `positions` positions: `[positions][head_dim /
    /// 2]` (cos, sin), flattened, with the model's frequency factors (the GPU's table).
    pub fn rope_table(&self, positions: usize) -> Vec<f32> {
        let factors = self.arch.rope_freqs.as_deref();
        rope_table_scaled(positions, self.head_dim, self.rope_base, factors)
    }

    /// The RoPE table of the sliding-window layers (their own base), if the model has any.
    pub fn local_rope_table(&self, positions: usize) -> Option<Vec<f32>> {
        let factors = self.arch.rope_freqs.as_deref();
        let base = self.arch.rope_base_local;
        (0..self.n_layers)
            .any(|l| self.is_local(l))
            .then(|| rope_table_scaled(positions, self.head_dim, base, factors))
    }

    /// Query heads per native KV head.
    pub fn native_n_rep(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Every G the model can be regrouped to: 1 to the query-head count.
    pub fn valid_groups(&self) -> Vec<usize> {
        (1..=self.n_heads).collect()
    }

    /// Width of all query heads together (H · head_dim; dim for llama, not for Gemma).
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Whether layer `l` attends to a sliding window (Gemma 3's local layers).
    pub fn is_local(&self, l: usize) -> bool {
        let a = &self.arch;
        a.sliding_window > 0 && a.swa_pattern > 0 && !(l + 1).is_multiple_of(a.swa_pattern)
    }

    /// The first position layer `l` attends to from position `pos`.
    pub fn window_start(&self, l: usize, pos: usize) -> usize {
        match self.is_local(l) {
            true => (pos + 1).saturating_sub(self.arch.sliding_window),
            false => 0,
        }
    }

    /// RoPE base of layer `l`.
    pub fn layer_rope_base(&self, l: usize) -> f32 {
        match self.is_local(l) {
            true => self.arch.rope_base_local,
            false => self.rope_base,
        }
    }
}

/// `rope_freqs.weight` if the file has it: `[head_dim / 2]` factors, each finite and positive.
fn rope_freqs(g: &Gguf<'_>, head_dim: usize) -> Result<Option<Vec<f32>>, ModelError> {
    const NAME: &str = "rope_freqs.weight";
    let Some(t) = g.tensor(NAME) else {
        return Ok(None);
    };
    let expected = [(head_dim / 2) as u64];
    if t.dims != expected {
        return Err(ModelError::TensorShape {
            name: NAME.into(),
            found: t.dims.clone(),
            expected: expected.to_vec(),
        });
    }
    let f = g.dequantize(t)?;
    if let Some(bad) = f.iter().find(|x| !x.is_finite() || **x <= 0.0) {
        return Err(ModelError::BadConfig(format!(
            "{NAME}: factor {bad} (must be finite and positive)"
        )));
    }
    Ok(Some(f))
}

/// SmolLM2-135M's shape (`gqa-lab info`), for the unit tests of what depends on shapes alone.
#[cfg(test)]
impl ModelConfig {
    pub(crate) fn smollm2_135m() -> Self {
        ModelConfig {
            arch: super::Arch::llama(),
            n_layers: 30,
            dim: 576,
            ffn_dim: 1536,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            vocab_size: 49152,
            context_length: 8192,
            rope_base: 1e5,
            rms_eps: 1e-5,
        }
    }
}
