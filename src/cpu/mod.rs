//! The CPU reference engine: a plain f32 llama forward pass (llama2.c's `forward`, with
//! batched prefill), used as the oracle for the GPU engine and as a backend of its own.
//!
//! Weights are dequantized once to f32. Regrouping applies a [`Regrouping`]'s maps to the
//! projected native heads (`model/regroup.rs`): K and V of the G heads from the native ones,
//! the query and output maps of a calibrated merge — for the GQA paper's mean-pooling the same
//! as pooling the K/V weights, since the projection and RoPE are linear.
//!
//! The same forward also runs as the `cpu-q8` backend ([`CpuEngine::load_quantized`]): weight
//! matrices stay in their GGUF blocks and multiply int8-quantized activations
//! ([`qmatrix`]). It is faster and approximate (the activations' rounding); the oracle is the
//! f32 one.
//!
//! Both keep K and V as f32 unless told otherwise ([`Engine::set_kv_type`]: f16 or q8_0,
//! rounded as written and decoded exactly as attention reads them, `model::kv_type`).

mod contract;
mod kv;
pub mod qmatrix;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;
mod walk;

use crate::engine::{check_capacity, check_input, first_non_finite_row};
use crate::engine::{AttentionWeights, Engine, EngineError};
use crate::gguf::Gguf;
use crate::model::{KvType, ModelConfig, ModelError, ModelTensors, Tensor, WINDOW_SLACK};
use crate::ops::{self, add_in_place, geglu, matmul, rmsnorm, swiglu};
use crate::regroup::{Grouping, LayerMaps, Regrouping};
use kv::{attention, attention_weights, AttendAt, KvCache};
use qmatrix::{Activations, Q8KRows, Q8Rows, QMatrix};
use std::cell::OnceCell;
use std::sync::Arc;

/// An activation `[t][n_in]` as the matrix products read it: f32, and its int8 forms (per 32
/// values for the legacy types, per 256 as Q8_K for the K-quants), each made by the first
/// quantized product that reads it and kept for the others (Q, K, V read one).
struct Act<'a> {
    x: &'a [f32],
    n_in: usize,
    q8: OnceCell<Q8Rows>,
    q8k: OnceCell<Q8KRows>,
}

impl<'a> Act<'a> {
    fn new(x: &'a [f32], n_in: usize) -> Self {
        Act {
            x,
            n_in,
            q8: OnceCell::new(),
            q8k: OnceCell::new(),
        }
    }

    fn q8(&self) -> &Q8Rows {
        self.q8.get_or_init(|| Q8Rows::quantize(self.x, self.n_in))
    }

    fn q8k(&self) -> &Q8KRows {
        self.q8k
            .get_or_init(|| Q8KRows::quantize(self.x, self.n_in))
    }
}

/// A weight matrix, row-major `[out][in]`: f32 (the oracle), or its GGUF blocks multiplied
/// with int8-quantized activations (`cpu-q8`).
enum Matrix {
    F32(Vec<f32>),
    Quant(QMatrix),
}

impl Matrix {
    /// `[t][out]` = x `[t][n_in]` · Wᵀ.
    fn matmul(&self, x: &Act<'_>) -> Vec<f32> {
        match self {
            Matrix::F32(w) => matmul(x.x, w, x.n_in),
            Matrix::Quant(m) => match m.activations() {
                Activations::Q8 => m.matmul(x.q8()),
                Activations::Q8K => m.matmul_k(x.q8k()),
            },
        }
    }

    /// Row `o` as f32 (an embedding lookup).
    fn row(&self, o: usize, n_in: usize) -> Option<Vec<f32>> {
        match self {
            Matrix::F32(w) => w.get(o * n_in..(o + 1) * n_in).map(<[f32]>::to_vec),
            Matrix::Quant(m) => m.row(o),
        }
    }
}

/// One transformer block's weights.
struct Layer {
    attn_norm: Vec<f32>,              // [dim]
    wq: Matrix,                       // [n_heads·head_dim][dim]
    wk: Matrix,                       // [n_kv_heads·head_dim][dim], the native KV heads
    wv: Matrix,                       // [n_kv_heads·head_dim][dim]
    bq: Option<Vec<f32>>,             // [n_heads·head_dim] (Qwen2)
    bk: Option<Vec<f32>>,             // [n_kv_heads·head_dim] (Qwen2)
    bv: Option<Vec<f32>>,             // [n_kv_heads·head_dim] (Qwen2)
    q_norm: Option<Vec<f32>>,         // [head_dim], per query head (Gemma)
    k_norm: Option<Vec<f32>>,         // [head_dim], per key head (Gemma)
    wo: Matrix,                       // [dim][n_heads·head_dim]
    post_attn_norm: Option<Vec<f32>>, // [dim] (Gemma)
    ffn_norm: Vec<f32>,               // [dim]
    w_gate: Matrix,                   // [ffn_dim][dim]
    w_up: Matrix,                     // [ffn_dim][dim]
    w_down: Matrix,                   // [dim][ffn_dim]
    post_ffn_norm: Option<Vec<f32>>,  // [dim] (Gemma)
}

/// The CPU engine: weights, current grouping, KV cache and the sequence length so far.
pub struct CpuEngine {
    cfg: ModelConfig,
    token_embd: Matrix,     // [vocab][dim]
    output: Option<Matrix>, // [vocab][dim]; None when tied to token_embd
    output_norm: Vec<f32>,  // [dim]
    layers: Vec<Layer>,
    /// The grouping and each layer's maps from the native heads to it.
    regrouping: Arc<Regrouping>,
    cache: KvCache,
    /// How the cache keeps K and V (a calibration walk's own cache is f32 whatever this is).
    kv_type: KvType,
    len: usize,
    quantized: bool,
    /// The layer the attention view watches, and its weights for the last token fed.
    probe: Option<usize>,
    probe_weights: Option<AttentionWeights>,
}

impl CpuEngine {
    /// The oracle: dequantizes the model's weights to f32 and allocates a KV cache for
    /// `capacity` tokens at the native grouping.
    pub fn load(g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        Self::load_as(g, capacity, false)
    }

    /// The `cpu-q8` backend: quantized matrices stay in their blocks (K-quants in the file's
    /// super-blocks, the legacy types repacked at load into integer layouts that give the
    /// dequantized weights to the bit; float ones are converted to f32), products run on
    /// int8-quantized activations ([`qmatrix`]).
    pub fn load_quantized(g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        Self::load_as(g, capacity, true)
    }

    fn load_as(g: &Gguf<'_>, capacity: usize, quantized: bool) -> Result<Self, EngineError> {
        let cfg = ModelConfig::from_gguf(g)?;
        let t = ModelTensors::locate(g, &cfg)?;
        let deq = |t: Tensor<'_, '_>| t.f32(g);
        let opt = |t: Option<Tensor<'_, '_>>| t.map(deq).transpose();
        let blocks = |t: Tensor<'_, '_>| {
            QMatrix::new(t.ggml_type, &t.bytes(g), t.rows()).filter(|_| quantized)
        };
        let matrix = |t| -> Result<Matrix, ModelError> {
            Ok(match blocks(t) {
                Some(m) => Matrix::Quant(m),
                None => Matrix::F32(deq(t)?),
            })
        };
        let layers = t
            .layers
            .iter()
            .map(|lt| {
                Ok(Layer {
                    attn_norm: deq(lt.attn_norm)?,
                    wq: matrix(lt.wq)?,
                    wk: matrix(lt.wk)?,
                    wv: matrix(lt.wv)?,
                    bq: opt(lt.bq)?,
                    bk: opt(lt.bk)?,
                    bv: opt(lt.bv)?,
                    q_norm: opt(lt.q_norm)?,
                    k_norm: opt(lt.k_norm)?,
                    wo: matrix(lt.wo)?,
                    post_attn_norm: opt(lt.post_attn_norm)?,
                    ffn_norm: deq(lt.ffn_norm)?,
                    w_gate: matrix(lt.w_gate)?,
                    w_up: matrix(lt.w_up)?,
                    w_down: matrix(lt.w_down)?,
                    post_ffn_norm: opt(lt.post_ffn_norm)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let capacity = check_capacity(&cfg, capacity)?;
        let grouping = Grouping::native(&cfg);
        Ok(CpuEngine {
            token_embd: matrix(t.token_embd)?,
            output: if t.tied_output {
                None
            } else {
                Some(matrix(t.output)?)
            },
            output_norm: deq(t.output_norm)?,
            layers,
            regrouping: Arc::new(Regrouping::native(&cfg)),
            cache: KvCache::new(
                &cfg,
                &vec![grouping.groups(); cfg.n_layers],
                capacity,
                KvType::F32,
            ),
            kv_type: KvType::F32,
            len: 0,
            cfg,
            quantized,
            probe: None,
            probe_weights: None,
        })
    }

    /// One block on `t` tokens at positions `len..len+t`; x: `[t][dim]`, updated in place.
    fn block(&mut self, l: usize, x: &mut [f32]) {
        let Self {
            cfg,
            layers,
            cache,
            regrouping,
            len,
            probe,
            probe_weights,
            ..
        } = self;
        let (dim, hd, n_heads) = (cfg.dim, cfg.head_dim, cfg.n_heads);
        let grouping = regrouping.layer_grouping(l);
        let groups = grouping.groups();
        let (layer, maps) = (&layers[l], &regrouping.layers[l]);
        let t = x.len() / dim;
        let xb = rmsnorm(x, &layer.attn_norm, cfg.rms_eps); // [t][dim]
        let (mut q, mut k, v) = project_qkv(layer, maps, &Act::new(&xb, dim), grouping, hd);
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            q = rmsnorm(&q, qn, cfg.rms_eps); // each [hd] head of [t][H·hd]
            k = rmsnorm(&k, kn, cfg.rms_eps); // each [hd] head of [t][G·hd]
        }
        let (q_kv, k_kv): (Vec<usize>, Vec<usize>) = (grouping.kv_heads(), (0..groups).collect());
        for i in 0..t {
            let pos = *len + i;
            let turns = cfg.rope_turns(l, pos); // [hd/2], the layer's base and factors
            maps.rotate(
                &mut q[i * n_heads * hd..(i + 1) * n_heads * hd],
                &turns,
                &q_kv,
            );
            let (k_i, v_i) = (
                &mut k[i * groups * hd..(i + 1) * groups * hd],
                &v[i * groups * hd..(i + 1) * groups * hd],
            );
            maps.rotate(k_i, &turns, &k_kv);
            for g in 0..groups {
                let head = g * hd..(g + 1) * hd;
                cache.write(l, g, pos, &k_i[head.clone()], &v_i[head]);
            }
        }
        let window = if cfg.is_local(l) {
            cfg.arch.sliding_window
        } else {
            0
        };
        if *probe == Some(l) {
            let last = &q[(t - 1) * n_heads * hd..]; // [n_heads·hd]
            let at = AttendAt { l, window, hd };
            *probe_weights = Some(attention_weights(cache, grouping, at, *len + t, last));
        }
        let mut att = attention(cache, grouping, AttendAt { l, window, hd }, *len, &q); // [t][H·hd]
        maps.map_o(&mut att, n_heads, hd);
        let out = layer.wo.matmul(&Act::new(&att, n_heads * hd)); // [t][dim]
        add_in_place(x, &post_norm(out, &layer.post_attn_norm, cfg.rms_eps));
        let xb = rmsnorm(x, &layer.ffn_norm, cfg.rms_eps); // [t][dim]
        let xb = Act::new(&xb, dim);
        let gate = layer.w_gate.matmul(&xb); // [t][ffn_dim]
        let up = layer.w_up.matmul(&xb); // [t][ffn_dim]
        let ffn = match cfg.arch.gelu {
            true => geglu(&gate, &up),
            false => swiglu(&gate, &up),
        }; // [t][ffn_dim]
        let out = layer.w_down.matmul(&Act::new(&ffn, cfg.ffn_dim)); // [t][dim]
        add_in_place(x, &post_norm(out, &layer.post_ffn_norm, cfg.rms_eps));
    }

    /// Logits `[rows][vocab]` of final hidden states `[rows][dim]`.
    fn head(&self, x: &[f32]) -> Vec<f32> {
        let xf = rmsnorm(x, &self.output_norm, self.cfg.rms_eps);
        let head = self.output.as_ref().unwrap_or(&self.token_embd);
        head.matmul(&Act::new(&xf, self.cfg.dim))
    }

    /// The residual stream after every block for `ids` fed from an empty cache:
    /// `[n_layers][t][dim]`. For tests that compare engines layer by layer.
    pub fn hidden_states(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, EngineError> {
        ops::on_worker(|| self.hidden_states_here(ids))
    }

    /// [`Self::hidden_states`] on the calling thread.
    fn hidden_states_here(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.reset();
        self.check_room(ids)?;
        let mut states = vec![Vec::new(); self.cfg.n_layers];
        for piece in ids.chunks(self.chunk_len(ids)) {
            self.blocks(piece, Some(&mut states))?;
        }
        Ok(states)
    }

    /// Tokens fed through the blocks at once: all of them, or for a model with sliding
    /// windows at most [`WINDOW_SLACK`], so that a chunk never overwrites a ring row that one
    /// of its own queries still sees.
    fn chunk_len(&self, ids: &[u32]) -> usize {
        match self.cfg.arch.sliding_window {
            0 => ids.len().max(1),
            _ => WINDOW_SLACK,
        }
    }

    /// [`Engine::forward`] on the calling thread. NaN or infinity in the residual stream after
    /// a block, or in the logits, is an error that says where it appeared first; the sequence
    /// is then as it was.
    fn forward_here(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, EngineError> {
        self.check_room(ids)?;
        let (dim, len0) = (self.cfg.dim, self.len);
        let mut x = Vec::with_capacity(ids.len() * dim); // [t][dim] after the last block
        for piece in ids.chunks(self.chunk_len(ids)) {
            match self.blocks(piece, None) {
                Ok(xp) => x.extend(xp),
                Err(e) => {
                    self.len = len0;
                    return Err(e);
                }
            }
        }
        let first = if all_logits { 0 } else { ids.len() - 1 };
        let logits = self.head(&x[first * dim..]); // [rows][vocab]
        if let Some(i) = first_non_finite_row(&logits, self.cfg.vocab_size) {
            self.len = len0;
            let pos = len0 + first + i;
            return Err(EngineError::NonFinite(format!(
                "in the logits at position {pos}"
            )));
        }
        Ok(logits)
    }

    /// `ids` through every block at positions `len..`, advancing `len`: the residual stream
    /// after the last one, `[t][dim]` (and after each, appended to `states`, if asked).
    fn blocks(
        &mut self,
        ids: &[u32],
        mut states: Option<&mut Vec<Vec<f32>>>,
    ) -> Result<Vec<f32>, EngineError> {
        let dim = self.cfg.dim;
        let mut x = self.embed(ids)?; // [t][dim]
        for l in 0..self.cfg.n_layers {
            self.block(l, &mut x);
            if let Some(i) = first_non_finite_row(&x, dim) {
                let pos = self.len + i;
                return Err(EngineError::NonFinite(format!(
                    "at layer {l}, position {pos}"
                )));
            }
            if let Some(s) = states.as_deref_mut() {
                s[l].extend_from_slice(&x);
            }
        }
        self.len += ids.len();
        Ok(x)
    }

    /// Embedding rows of `ids`: `[t][dim]`.
    fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, EngineError> {
        let dim = self.cfg.dim;
        let mut x = Vec::with_capacity(ids.len() * dim);
        for &id in ids {
            let row = (id as usize)
                .lt(&self.cfg.vocab_size)
                .then(|| self.token_embd.row(id as usize, dim))
                .flatten()
                .ok_or(EngineError::TokenOutOfRange {
                    id,
                    vocab: self.cfg.vocab_size,
                })?;
            x.extend(row.iter().map(|v| v * self.cfg.arch.embed_scale));
        }
        Ok(x)
    }

    fn check_room(&self, ids: &[u32]) -> Result<(), EngineError> {
        check_input(ids, self.cfg.vocab_size, self.len, self.cache.capacity)
    }
}

/// Layer `layer`'s q, K and V at the current grouping for its normalised input `xb`: the
/// native projections (plus their biases, Qwen2) through the layer's maps. q `[t][H·hd]`, K
/// and V `[t][G·hd]`, before RoPE.
fn project_qkv(
    layer: &Layer,
    maps: &LayerMaps,
    xb: &Act<'_>,
    grouping: Grouping,
    hd: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut q = layer.wq.matmul(xb); // [t][H·hd]
    let mut k0 = layer.wk.matmul(xb); // [t][G0·hd]
    let mut v0 = layer.wv.matmul(xb); // [t][G0·hd]
    for (x, b) in [
        (&mut q, &layer.bq),
        (&mut k0, &layer.bk),
        (&mut v0, &layer.bv),
    ] {
        if let Some(b) = b {
            x.chunks_exact_mut(b.len())
                .for_each(|row| add_in_place(row, b));
        }
    }
    maps.map_q(&mut q, grouping, hd);
    let k = maps.map_k(&k0, grouping, hd); // [t][G·hd]
    let v = maps.map_v(&v0, grouping, hd); // [t][G·hd]
    (q, k, v)
}

/// `x`, or its RMSNorm when the architecture normalises a sublayer's output (Gemma).
fn post_norm(x: Vec<f32>, norm: &Option<Vec<f32>>, eps: f32) -> Vec<f32> {
    match norm {
        Some(w) => rmsnorm(&x, w, eps),
        None => x,
    }
}
