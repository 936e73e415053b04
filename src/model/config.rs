//! Llama hyper-parameters from GGUF metadata (keys as written by llama.cpp's converter).

use super::ModelError;
use crate::gguf::Gguf;
use serde::Serialize;

/// Hyper-parameters of a llama model, checked for consistency.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelConfig {
    pub n_layers: usize,
    /// Residual stream width (`llama.embedding_length`).
    pub dim: usize,
    /// SwiGLU hidden width (`llama.feed_forward_length`).
    pub ffn_dim: usize,
    /// Query heads H.
    pub n_heads: usize,
    /// KV heads of the checkpoint as trained (the native G).
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Longest sequence the model was trained for (`llama.context_length`).
    pub context_length: usize,
    pub rope_base: f32,
    pub rms_eps: f32,
}

/// Upper bounds that keep arithmetic on the hyper-parameters far from overflow.
const MAX_DIM: usize = 1 << 16;
const MAX_LAYERS: usize = 1 << 10;
const MAX_CONTEXT: usize = 1 << 24;

impl ModelConfig {
    pub fn from_gguf(g: &Gguf<'_>) -> Result<Self, ModelError> {
        let arch = g.str("general.architecture")?;
        if arch != "llama" {
            return Err(ModelError::NotLlama(arch.to_string()));
        }
        let n_heads = g.usize("llama.attention.head_count")?;
        let n_kv_heads = match g.get("llama.attention.head_count_kv") {
            Some(_) => g.usize("llama.attention.head_count_kv")?,
            None => n_heads,
        };
        let dim = g.usize("llama.embedding_length")?;
        let vocab_size = match g.get("llama.vocab_size") {
            Some(_) => g.usize("llama.vocab_size")?,
            None => g.require("tokenizer.ggml.tokens")?.to_array()?.len(),
        };
        let cfg = ModelConfig {
            n_layers: g.usize("llama.block_count")?,
            dim,
            ffn_dim: g.usize("llama.feed_forward_length")?,
            n_heads,
            n_kv_heads,
            head_dim: dim.checked_div(n_heads).unwrap_or(0),
            vocab_size,
            context_length: g.usize("llama.context_length")?,
            rope_base: match g.get("llama.rope.freq_base") {
                Some(_) => g.f32("llama.rope.freq_base")?,
                None => 10_000.0,
            },
            rms_eps: g.f32("llama.attention.layer_norm_rms_epsilon")?,
        };
        cfg.validate()?;
        if let Some(v) = g.get("llama.rope.dimension_count") {
            let rope_dims = v
                .to_u64()
                .map_err(|e| ModelError::BadConfig(e.to_string()))?;
            if rope_dims != cfg.head_dim as u64 {
                return Err(ModelError::BadConfig(format!(
                    "partial RoPE (rope.dimension_count {rope_dims} ≠ head_dim {}) is not supported",
                    cfg.head_dim
                )));
            }
        }
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::BadConfig(m));
        let sizes = [
            self.dim,
            self.ffn_dim,
            self.n_heads,
            self.n_kv_heads,
            self.vocab_size,
        ];
        if sizes.iter().any(|&s| s == 0 || s > MAX_DIM * 4) || self.dim > MAX_DIM {
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
        if !self.dim.is_multiple_of(self.n_heads) || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "embedding_length {} does not split into {} heads of even size",
                self.dim, self.n_heads
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
        Ok(())
    }

    /// Query heads per native KV head.
    pub fn native_n_rep(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Every G the model can be regrouped to: 1 to the query-head count.
    pub fn valid_groups(&self) -> Vec<usize> {
        (1..=self.n_heads).collect()
    }
}
