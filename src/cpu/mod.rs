//! The CPU reference engine: a plain f32 llama forward pass (llama2.c's `forward`, with
//! batched prefill), used as the oracle for the GPU engine and as a backend of its own.
//!
//! Weights are dequantized once to f32. Regrouping follows the GQA paper literally: the K and V
//! projection weights of each new KV head are the mean of the native heads it replaces
//! ([`crate::model::pooling_plan`]); the GPU engine instead pools projected K/V, so agreement
//! between the two also checks that the two are the same.
//!
//! The same forward also runs as the `cpu-q8` backend ([`CpuEngine::load_quantized`]): weight
//! matrices stay in their GGUF blocks and multiply int8-quantized activations
//! ([`qmatrix`]), and K/V are regrouped by pooling the projected native heads (as the GPU
//! does). It is faster and approximate (the activations' rounding); the oracle is the f32 one.

pub mod ops;
pub mod qmatrix;

use crate::engine::{check_capacity, check_input, check_len, first_non_finite_row};
use crate::engine::{Engine, EngineError};
use crate::gguf::Gguf;
use crate::model::{pooling_plan, Grouping, ModelConfig, ModelError, ModelTensors};
use ops::{add_in_place, matmul, rmsnorm, rope, softmax, swiglu};
use qmatrix::{Q8Rows, QMatrix};
use std::cell::OnceCell;

/// An activation `[t][n_in]` as the matrix products read it: f32, and its int8 form, made
/// by the first quantized product that reads it and kept for the others (Q, K, V read one).
struct Act<'a> {
    x: &'a [f32],
    n_in: usize,
    q8: OnceCell<Q8Rows>,
}

impl<'a> Act<'a> {
    fn new(x: &'a [f32], n_in: usize) -> Self {
        Act {
            x,
            n_in,
            q8: OnceCell::new(),
        }
    }

    fn q8(&self) -> &Q8Rows {
        self.q8.get_or_init(|| Q8Rows::quantize(self.x, self.n_in))
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
            Matrix::Quant(m) => m.matmul(x.q8()),
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

/// The K (or V) projection at the current grouping.
enum KvWeights {
    /// The oracle: the native heads' f32 rows `[n_kv_heads·head_dim][dim]` and, pooled from
    /// them, the rows of the current KV heads `[G·head_dim][dim]`.
    Pooled { native: Vec<f32>, pooled: Vec<f32> },
    /// `cpu-q8`: the native blocks; the projected native heads are pooled instead.
    Native(QMatrix),
}

/// One transformer block's weights.
struct Layer {
    attn_norm: Vec<f32>, // [dim]
    wq: Matrix,          // [n_heads·head_dim][dim]
    wk: KvWeights,       // K for G KV heads from the native [n_kv_heads·head_dim][dim]
    wv: KvWeights,       // V likewise
    wo: Matrix,          // [dim][n_heads·head_dim]
    ffn_norm: Vec<f32>,  // [dim]
    w_gate: Matrix,      // [ffn_dim][dim]
    w_up: Matrix,        // [ffn_dim][dim]
    w_down: Matrix,      // [dim][ffn_dim]
}

/// The KV cache: K and V each `[layers][G][capacity][head_dim]`, f32.
struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    groups: usize,
    capacity: usize,
    head_dim: usize,
}

impl KvCache {
    fn new(layers: usize, groups: usize, capacity: usize, head_dim: usize) -> Self {
        let n = layers * groups * capacity * head_dim;
        KvCache {
            k: vec![0.0; n],
            v: vec![0.0; n],
            groups,
            capacity,
            head_dim,
        }
    }

    /// Start of the row for layer `l`, KV head `g`, position `p`.
    fn at(&self, l: usize, g: usize, p: usize) -> usize {
        ((l * self.groups + g) * self.capacity + p) * self.head_dim
    }
}

/// The CPU engine: weights, current grouping, KV cache and the sequence length so far.
pub struct CpuEngine {
    cfg: ModelConfig,
    token_embd: Matrix,     // [vocab][dim]
    output: Option<Matrix>, // [vocab][dim]; None when tied to token_embd
    output_norm: Vec<f32>,  // [dim]
    layers: Vec<Layer>,
    grouping: Grouping,
    /// For `KvWeights::Native`: native KV heads → current ones.
    plan: Vec<Vec<(usize, f32)>>,
    cache: KvCache,
    len: usize,
    quantized: bool,
}

impl CpuEngine {
    /// The oracle: dequantizes the model's weights to f32 and allocates a KV cache for
    /// `capacity` tokens at the native grouping.
    pub fn load(g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        Self::load_as(g, capacity, false)
    }

    /// The `cpu-q8` backend: matrices of Q4_0, Q4_1 and Q8_0 stay in their blocks (others
    /// are dequantized), products run on int8-quantized activations ([`qmatrix`]).
    pub fn load_quantized(g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        Self::load_as(g, capacity, true)
    }

    fn load_as(g: &Gguf<'_>, capacity: usize, quantized: bool) -> Result<Self, EngineError> {
        let cfg = ModelConfig::from_gguf(g)?;
        let t = ModelTensors::locate(g, &cfg)?;
        let deq = |ti| g.dequantize(ti).map_err(ModelError::from);
        let blocks = |ti: &crate::gguf::TensorInfo<'_>| {
            QMatrix::new(ti.ggml_type, g.tensor_bytes(ti), ti.rows()).filter(|_| quantized)
        };
        let matrix = |ti| -> Result<Matrix, ModelError> {
            Ok(match blocks(ti) {
                Some(m) => Matrix::Quant(m),
                None => Matrix::F32(deq(ti)?),
            })
        };
        let kv = |ti| -> Result<KvWeights, ModelError> {
            Ok(match blocks(ti) {
                Some(m) => KvWeights::Native(m),
                None => {
                    let native = deq(ti)?;
                    KvWeights::Pooled {
                        pooled: native.clone(),
                        native,
                    }
                }
            })
        };
        let layers = t
            .layers
            .iter()
            .map(|lt| {
                Ok(Layer {
                    attn_norm: deq(lt.attn_norm)?,
                    wq: matrix(lt.wq)?,
                    wk: kv(lt.wk)?,
                    wv: kv(lt.wv)?,
                    wo: matrix(lt.wo)?,
                    ffn_norm: deq(lt.ffn_norm)?,
                    w_gate: matrix(lt.w_gate)?,
                    w_up: matrix(lt.w_up)?,
                    w_down: matrix(lt.w_down)?,
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
            plan: pooling_plan(grouping, grouping),
            cache: KvCache::new(cfg.n_layers, grouping.groups(), capacity, cfg.head_dim),
            grouping,
            len: 0,
            cfg,
            quantized,
        })
    }

    /// One block on `t` tokens at positions `len..len+t`; x: `[t][dim]`, updated in place.
    fn block(&mut self, l: usize, x: &mut [f32]) {
        let Self {
            cfg,
            layers,
            cache,
            grouping,
            plan,
            len,
            ..
        } = self;
        let (dim, hd, n_heads, groups) = (cfg.dim, cfg.head_dim, cfg.n_heads, grouping.groups());
        let t = x.len() / dim;
        let layer = &layers[l];
        let xb = rmsnorm(x, &layer.attn_norm, cfg.rms_eps); // [t][dim]
        let xb = Act::new(&xb, dim);
        let mut q = layer.wq.matmul(&xb); // [t][n_heads·hd]
        let mut k = layer.wk.project(&xb, plan, hd); // [t][G·hd]
        let v = layer.wv.project(&xb, plan, hd); // [t][G·hd]
        for i in 0..t {
            let pos = *len + i;
            rope(
                &mut q[i * n_heads * hd..(i + 1) * n_heads * hd],
                hd,
                pos,
                cfg.rope_base,
            );
            rope(
                &mut k[i * groups * hd..(i + 1) * groups * hd],
                hd,
                pos,
                cfg.rope_base,
            );
            for g in 0..groups {
                let at = cache.at(l, g, pos);
                let src = (i * groups + g) * hd..(i * groups + g + 1) * hd;
                cache.k[at..at + hd].copy_from_slice(&k[src.clone()]);
                cache.v[at..at + hd].copy_from_slice(&v[src]);
            }
        }
        let att = attention(cache, *grouping, l, *len, &q, hd); // [t][n_heads·hd]
        add_in_place(x, &layer.wo.matmul(&Act::new(&att, n_heads * hd)));
        let xb = rmsnorm(x, &layer.ffn_norm, cfg.rms_eps); // [t][dim]
        let xb = Act::new(&xb, dim);
        let gate = layer.w_gate.matmul(&xb); // [t][ffn_dim]
        let up = layer.w_up.matmul(&xb); // [t][ffn_dim]
        let ffn = swiglu(&gate, &up); // [t][ffn_dim]
        add_in_place(x, &layer.w_down.matmul(&Act::new(&ffn, cfg.ffn_dim)));
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
        let mut x = self.embed(ids)?;
        let mut states = Vec::with_capacity(self.cfg.n_layers);
        self.check_room(ids)?;
        for l in 0..self.cfg.n_layers {
            self.block(l, &mut x);
            states.push(x.clone());
        }
        self.len += ids.len();
        Ok(states)
    }

    /// [`Engine::forward`] on the calling thread. NaN or infinity in the residual stream after
    /// a block, or in the logits, is an error that says where it appeared first.
    fn forward_here(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, EngineError> {
        self.check_room(ids)?;
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
        }
        let first = if all_logits { 0 } else { ids.len() - 1 };
        let logits = self.head(&x[first * dim..]); // [rows][vocab]
        if let Some(i) = first_non_finite_row(&logits, self.cfg.vocab_size) {
            let pos = self.len + first + i;
            return Err(EngineError::NonFinite(format!(
                "in the logits at position {pos}"
            )));
        }
        self.len += ids.len();
        Ok(logits)
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
            x.extend_from_slice(&row);
        }
        Ok(x)
    }

    fn check_room(&self, ids: &[u32]) -> Result<(), EngineError> {
        check_input(ids, self.cfg.vocab_size, self.len, self.cache.capacity)
    }

    /// Recomputes each layer's K/V projection for the current grouping:
    /// row block g of the new W_k = Σ weight · row block (native head) of the native W_k.
    fn regroup_weights(&mut self) {
        self.plan = pooling_plan(Grouping::native(&self.cfg), self.grouping);
        let block = self.cfg.head_dim * self.cfg.dim; // one head's rows
        for layer in &mut self.layers {
            for kv in [&mut layer.wk, &mut layer.wv] {
                if let KvWeights::Pooled { native, pooled } = kv {
                    *pooled = pool_rows(native, &self.plan, block);
                }
            }
        }
    }
}

/// `[G][block]` from `[G0][block]`: row block g = Σ weight · native block (the plan's sources).
fn pool_rows(native: &[f32], plan: &[Vec<(usize, f32)>], block: usize) -> Vec<f32> {
    let mut pooled = vec![0.0; plan.len() * block];
    for (g, sources) in plan.iter().enumerate() {
        let dst = &mut pooled[g * block..(g + 1) * block];
        for &(src, w) in sources {
            let src = &native[src * block..(src + 1) * block];
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += w * s);
        }
    }
    pooled
}

impl KvWeights {
    /// K (or V) of the current KV heads for `xb` (`[t][dim]`): `[t][G·hd]`. The oracle
    /// multiplies by the pooled weights; `cpu-q8` pools the projected native heads, token by
    /// token — the same thing, since the projection is linear.
    fn project(&self, xb: &Act<'_>, plan: &[Vec<(usize, f32)>], hd: usize) -> Vec<f32> {
        match self {
            KvWeights::Pooled { pooled, .. } => matmul(xb.x, pooled, xb.n_in),
            KvWeights::Native(m) => {
                let native = m.matmul(xb.q8()); // [t][G0·hd]
                let g0_hd = m.rows();
                native
                    .chunks_exact(g0_hd)
                    .flat_map(|row| pool_rows(row, plan, hd))
                    .collect()
            }
        }
    }
}

/// Causal attention of new queries at positions `len0..` over the cache; q: `[t][n_heads·hd]`
/// after RoPE, result `[t][n_heads·hd]`. Query head `h` reads KV head `h / n_rep`: the shared
/// head is indexed, never copied (no `repeat_kv`).
fn attention(
    cache: &KvCache,
    grouping: Grouping,
    l: usize,
    len0: usize,
    q: &[f32],
    hd: usize,
) -> Vec<f32> {
    let n_heads = grouping.n_heads();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0f32; q.len()];
    // One task per (token i, query head h): out[i][h] is `hd` long.
    ops::for_each_chunk(&mut out, hd, |ih, o| {
        let (i, h) = (ih / n_heads, ih % n_heads);
        let g = grouping.kv_head(h);
        let visible = cache.at(l, g, 0)..cache.at(l, g, len0 + i + 1); // positions 0..=len0+i
        let (k, v) = (&cache.k[visible.clone()], &cache.v[visible]);
        attend(&q[ih * hd..(ih + 1) * hd], k, v, scale, o);
    });
    out
}

/// One query head's attention: `o` (`[hd]`) = Σ_p softmax_p(scale · q·k_p) · v_p over the
/// rows of k and v (`[positions][hd]`). Compiled twice, plainly and for AVX2 + FMA, and the
/// second chosen at run time where the CPU has them (the `multiversion` crate): the same
/// arithmetic in the same order, 8 lanes wide instead of 4 (Rust fuses no multiply-add by
/// itself, so the results are identical).
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn attend(q_h: &[f32], k: &[f32], v: &[f32], scale: f32, o: &mut [f32]) {
    let hd = q_h.len();
    let mut scores: Vec<f32> = k
        .chunks_exact(hd)
        .map(|k_p| ops::dot(q_h, k_p) * scale)
        .collect();
    softmax(&mut scores);
    for (&a, v_p) in scores.iter().zip(v.chunks_exact(hd)) {
        o.iter_mut().zip(v_p).for_each(|(o, v)| *o += a * v);
    }
}

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        if self.quantized {
            "cpu-q8"
        } else {
            "cpu"
        }
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn grouping(&self) -> Grouping {
        self.grouping
    }

    fn regroup(&mut self, groups: usize) -> Result<(), EngineError> {
        let grouping = Grouping::new(self.cfg.n_heads, groups)?;
        if grouping != self.grouping {
            self.grouping = grouping;
            self.regroup_weights();
        }
        // The cache is rebuilt at its new size even when G is unchanged: the sequence restarts.
        let capacity = self.cache.capacity;
        self.cache = KvCache::new(0, 0, 0, 0);
        self.cache = KvCache::new(self.cfg.n_layers, groups, capacity, self.cfg.head_dim);
        self.len = 0;
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.cache.capacity
    }

    fn len(&self) -> usize {
        self.len
    }

    fn reset(&mut self) {
        self.len = 0;
    }

    fn kv_bytes_per_element(&self) -> usize {
        std::mem::size_of::<f32>()
    }

    fn skip_to(&mut self, len: usize) -> Result<(), EngineError> {
        check_len(len, self.cache.capacity)?;
        self.len = len;
        Ok(())
    }

    fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, EngineError> {
        ops::on_worker(|| self.forward_here(ids, all_logits))
    }
}
