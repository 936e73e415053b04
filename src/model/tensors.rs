//! Where each weight of a model's GGUF lives, with shapes checked against the config.
//! Names follow llama.cpp's GGUF convention (`blk.N.attn_q.weight`, …).

use super::{ModelConfig, ModelError};
use crate::gguf::{Gguf, TensorInfo};
use std::borrow::Cow;

/// A weight as the engines read it: where it is in the file, and whether its rows must be
/// reordered for RoPE ([`rope_rows`]): the query and key projections (and their norms and
/// biases) of a NEOX-RoPE architecture.
#[derive(Debug, Clone, Copy)]
pub struct Tensor<'g, 'a> {
    pub info: &'g TensorInfo<'a>,
    /// head_dim when the rows of each head are read in interleaved-pair order, else 0.
    rope_head_dim: usize,
}

impl<'a> Tensor<'_, 'a> {
    /// The tensor's bytes in the order the engines read (still quantized).
    pub fn bytes(&self, g: &Gguf<'a>) -> Cow<'a, [u8]> {
        let raw = g.tensor_bytes(self.info);
        match self.rope_head_dim {
            0 => Cow::Borrowed(raw),
            hd => Cow::Owned(rope_rows(raw, self.units(), hd)),
        }
    }

    /// The tensor dequantized to f32, in the order the engines read.
    pub fn f32(&self, g: &Gguf<'a>) -> Result<Vec<f32>, ModelError> {
        let v = g.dequantize(self.info)?;
        Ok(match self.rope_head_dim {
            0 => v,
            hd => rope_rows(&v, self.units(), hd),
        })
    }

    /// What [`rope_rows`] reorders: the rows of a matrix, the elements of a vector.
    fn units(&self) -> usize {
        match self.info.dims.len() {
            1 => self.info.n_elements() as usize,
            _ => self.info.rows(),
        }
    }
}

impl<'a> std::ops::Deref for Tensor<'_, 'a> {
    type Target = TensorInfo<'a>;
    fn deref(&self) -> &TensorInfo<'a> {
        self.info
    }
}

/// Reorders `units` equal runs of `bytes` (rows of a projection, or elements of a vector),
/// head by head, from NEOX-RoPE order — pairs `(i, i + hd/2)` — to interleaved order — pairs
/// `(2i, 2i + 1)`. Applied to the query and the key projections alike it leaves every
/// attention score unchanged (the same permutation on both sides of a dot product), and lets
/// one RoPE kernel serve both conventions (llama.cpp's HF converter permutes llama's weights
/// the same way).
pub fn rope_rows<T: Copy>(bytes: &[T], units: usize, head_dim: usize) -> Vec<T> {
    let unit = bytes.len() / units.max(1);
    let half = head_dim / 2;
    let mut out = Vec::with_capacity(bytes.len());
    for head in 0..units / head_dim.max(1) {
        for i in 0..half {
            for old in [head * head_dim + i, head * head_dim + half + i] {
                out.extend_from_slice(&bytes[old * unit..(old + 1) * unit]);
            }
        }
    }
    out
}

/// The tensors of one transformer block. Shapes in ggml order `[in, out]`
/// (a row of `in` values per output feature).
#[derive(Debug, Clone, Copy)]
pub struct LayerTensors<'g, 'a> {
    /// `[dim]`
    pub attn_norm: Tensor<'g, 'a>,
    /// `[dim, n_heads·head_dim]`
    pub wq: Tensor<'g, 'a>,
    /// `[dim, n_kv_heads·head_dim]` (native grouping)
    pub wk: Tensor<'g, 'a>,
    /// `[dim, n_kv_heads·head_dim]` (native grouping)
    pub wv: Tensor<'g, 'a>,
    /// `[n_heads·head_dim]`, `[n_kv_heads·head_dim]` twice: the projections' biases, when the
    /// architecture has them (Qwen2). Q's and K's are reordered for RoPE like their rows.
    pub bq: Option<Tensor<'g, 'a>>,
    pub bk: Option<Tensor<'g, 'a>>,
    pub bv: Option<Tensor<'g, 'a>>,
    /// `[head_dim]` each, when the architecture normalises query and key heads.
    pub q_norm: Option<Tensor<'g, 'a>>,
    pub k_norm: Option<Tensor<'g, 'a>>,
    /// `[n_heads·head_dim, dim]`
    pub wo: Tensor<'g, 'a>,
    /// `[dim]`, when the architecture normalises the attention output.
    pub post_attn_norm: Option<Tensor<'g, 'a>>,
    /// `[dim]`
    pub ffn_norm: Tensor<'g, 'a>,
    /// `[dim, ffn_dim]`
    pub w_gate: Tensor<'g, 'a>,
    /// `[dim, ffn_dim]`
    pub w_up: Tensor<'g, 'a>,
    /// `[ffn_dim, dim]`
    pub w_down: Tensor<'g, 'a>,
    /// `[dim]`, when the architecture normalises the FFN output.
    pub post_ffn_norm: Option<Tensor<'g, 'a>>,
}

/// All weights of the model, located and shape-checked.
#[derive(Debug, Clone)]
pub struct ModelTensors<'g, 'a> {
    /// `[dim, vocab]`
    pub token_embd: Tensor<'g, 'a>,
    pub layers: Vec<LayerTensors<'g, 'a>>,
    /// `[dim]`
    pub output_norm: Tensor<'g, 'a>,
    /// `[dim, vocab]`: `output.weight`, or `token_embd.weight` when the head is tied.
    pub output: Tensor<'g, 'a>,
    pub tied_output: bool,
}

impl<'g, 'a> ModelTensors<'g, 'a> {
    /// Finds every tensor the forward pass needs and checks its shape and type.
    pub fn locate(g: &'g Gguf<'a>, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let (d, v) = (cfg.dim as u64, cfg.vocab_size as u64);
        check_no_extra_blocks(g, cfg)?;
        let layers = (0..cfg.n_layers)
            .map(|i| layer(g, cfg, i))
            .collect::<Result<Vec<_>, ModelError>>()?;
        let get = |name: &str, shape: &[u64]| find(g, name, shape, 0);
        let token_embd = get("token_embd.weight", &[d, v])?;
        let (output, tied_output) = match g.tensor("output.weight") {
            Some(_) => (get("output.weight", &[d, v])?, false),
            None => (token_embd, true),
        };
        Ok(ModelTensors {
            token_embd,
            layers,
            output_norm: get("output_norm.weight", &[d])?,
            output,
            tied_output,
        })
    }
}

/// A file whose tensors hold blocks past `block_count` is refused: running only the first
/// blocks would give another model's output without a word.
fn check_no_extra_blocks(g: &Gguf<'_>, cfg: &ModelConfig) -> Result<(), ModelError> {
    let block = |name: &str| {
        let rest = name.strip_prefix("blk.")?;
        rest.split('.').next()?.parse::<usize>().ok()
    };
    let past = g
        .tensors
        .iter()
        .find(|t| block(t.name).is_some_and(|b| b >= cfg.n_layers));
    match past {
        Some(t) => Err(ModelError::BadConfig(format!(
            "{}.block_count is {} but the file holds tensor {} of block {}",
            cfg.arch.name,
            cfg.n_layers,
            t.name,
            block(t.name).unwrap_or(0)
        ))),
        None => Ok(()),
    }
}

/// Block `i`'s tensors: the llama ones, and those the architecture adds.
fn layer<'g, 'a>(
    g: &'g Gguf<'a>,
    cfg: &ModelConfig,
    i: usize,
) -> Result<LayerTensors<'g, 'a>, ModelError> {
    let (d, f, hd) = (cfg.dim as u64, cfg.ffn_dim as u64, cfg.head_dim as u64);
    let q = cfg.q_dim() as u64;
    let kv = (cfg.n_kv_heads * cfg.head_dim) as u64;
    // Query and key rows reordered for NEOX RoPE (see `rope_rows`).
    let rope = if cfg.arch.rope_neox { cfg.head_dim } else { 0 };
    let n = |s: &str| format!("blk.{i}.{s}.weight");
    let get = |s: &str, shape: &[u64]| find(g, &n(s), shape, 0);
    let when = |on: bool, s: &str, shape: &[u64], rope: usize| {
        on.then(|| find(g, &n(s), shape, rope)).transpose()
    };
    let bias = |s: &str, shape: &[u64], rope: usize| {
        let name = format!("blk.{i}.{s}.bias");
        cfg.arch
            .qkv_bias
            .then(|| find(g, &name, shape, rope))
            .transpose()
    };
    let a = &cfg.arch;
    Ok(LayerTensors {
        attn_norm: get("attn_norm", &[d])?,
        wq: find(g, &n("attn_q"), &[d, q], rope)?,
        wk: find(g, &n("attn_k"), &[d, kv], rope)?,
        wv: get("attn_v", &[d, kv])?,
        bq: bias("attn_q", &[q], rope)?,
        bk: bias("attn_k", &[kv], rope)?,
        bv: bias("attn_v", &[kv], 0)?,
        q_norm: when(a.qk_norm, "attn_q_norm", &[hd], rope)?,
        k_norm: when(a.qk_norm, "attn_k_norm", &[hd], rope)?,
        wo: get("attn_output", &[q, d])?,
        post_attn_norm: when(a.post_norms, "post_attention_norm", &[d], 0)?,
        ffn_norm: get("ffn_norm", &[d])?,
        w_gate: get("ffn_gate", &[d, f])?,
        w_up: get("ffn_up", &[d, f])?,
        w_down: get("ffn_down", &[f, d])?,
        post_ffn_norm: when(a.post_norms, "post_ffw_norm", &[d], 0)?,
    })
}

fn find<'g, 'a>(
    g: &'g Gguf<'a>,
    name: &str,
    shape: &[u64],
    rope_head_dim: usize,
) -> Result<Tensor<'g, 'a>, ModelError> {
    let t = g
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    if t.dims != shape {
        return Err(ModelError::TensorShape {
            name: name.to_string(),
            found: t.dims.clone(),
            expected: shape.to_vec(),
        });
    }
    if !t.ggml_type.is_supported() {
        return Err(t.ggml_type.unsupported(name).into());
    }
    if rope_head_dim > 0 && t.dims.len() == 1 && t.ggml_type.block().0 != 1 {
        return Err(ModelError::BadConfig(format!(
            "{name}: a {} vector cannot be reordered for RoPE",
            t.ggml_type.name()
        )));
    }
    Ok(Tensor {
        info: t,
        rope_head_dim,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_rows_pairs_each_half_with_its_partner() {
        // Two heads of 4: NEOX pairs (0, 2), (1, 3) become adjacent.
        let rows: Vec<u8> = (0..8).collect();
        assert_eq!(rope_rows(&rows, 8, 4), [0, 2, 1, 3, 4, 6, 5, 7]);
        // Rows of two bytes move whole.
        let rows: Vec<u8> = (0..8).collect();
        assert_eq!(rope_rows(&rows, 4, 4), [0, 1, 4, 5, 2, 3, 6, 7]);
    }
}
