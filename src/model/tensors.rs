//! Where each weight of a llama GGUF lives, with shapes checked against the config.
//! Names follow llama.cpp's GGUF convention (`blk.N.attn_q.weight`, …).

use super::{ModelConfig, ModelError};
use crate::gguf::{Gguf, TensorInfo};

/// The tensors of one transformer block. Shapes in ggml order `[in, out]`
/// (a row of `in` values per output feature).
#[derive(Debug, Clone, Copy)]
pub struct LayerTensors<'g, 'a> {
    /// `[dim]`
    pub attn_norm: &'g TensorInfo<'a>,
    /// `[dim, n_heads·head_dim]`
    pub wq: &'g TensorInfo<'a>,
    /// `[dim, n_kv_heads·head_dim]` (native grouping)
    pub wk: &'g TensorInfo<'a>,
    /// `[dim, n_kv_heads·head_dim]` (native grouping)
    pub wv: &'g TensorInfo<'a>,
    /// `[n_heads·head_dim, dim]`
    pub wo: &'g TensorInfo<'a>,
    /// `[dim]`
    pub ffn_norm: &'g TensorInfo<'a>,
    /// `[dim, ffn_dim]`
    pub w_gate: &'g TensorInfo<'a>,
    /// `[dim, ffn_dim]`
    pub w_up: &'g TensorInfo<'a>,
    /// `[ffn_dim, dim]`
    pub w_down: &'g TensorInfo<'a>,
}

/// All weights of the model, located and shape-checked.
#[derive(Debug, Clone)]
pub struct ModelTensors<'g, 'a> {
    /// `[dim, vocab]`
    pub token_embd: &'g TensorInfo<'a>,
    pub layers: Vec<LayerTensors<'g, 'a>>,
    /// `[dim]`
    pub output_norm: &'g TensorInfo<'a>,
    /// `[dim, vocab]`: `output.weight`, or `token_embd.weight` when the head is tied.
    pub output: &'g TensorInfo<'a>,
    pub tied_output: bool,
}

impl<'g, 'a> ModelTensors<'g, 'a> {
    /// Finds every tensor the forward pass needs and checks its shape and type.
    pub fn locate(g: &'g Gguf<'a>, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let (d, f, v) = (cfg.dim as u64, cfg.ffn_dim as u64, cfg.vocab_size as u64);
        let q = (cfg.n_heads * cfg.head_dim) as u64;
        let kv = (cfg.n_kv_heads * cfg.head_dim) as u64;
        let get = |name: &str, shape: &[u64]| find(g, name, shape);
        let layers = (0..cfg.n_layers)
            .map(|i| {
                let n = |s: &str| format!("blk.{i}.{s}.weight");
                Ok(LayerTensors {
                    attn_norm: get(&n("attn_norm"), &[d])?,
                    wq: get(&n("attn_q"), &[d, q])?,
                    wk: get(&n("attn_k"), &[d, kv])?,
                    wv: get(&n("attn_v"), &[d, kv])?,
                    wo: get(&n("attn_output"), &[q, d])?,
                    ffn_norm: get(&n("ffn_norm"), &[d])?,
                    w_gate: get(&n("ffn_gate"), &[d, f])?,
                    w_up: get(&n("ffn_up"), &[d, f])?,
                    w_down: get(&n("ffn_down"), &[f, d])?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
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

fn find<'g, 'a>(
    g: &'g Gguf<'a>,
    name: &str,
    shape: &[u64],
) -> Result<&'g TensorInfo<'a>, ModelError> {
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
    Ok(t)
}
