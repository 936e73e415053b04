//! The CPU reference engine: a plain f32 llama forward pass (llama2.c's `forward`, with
//! batched prefill), used as the oracle for the GPU engine and as a backend of its own.
//!
//! Weights are dequantized once to f32. Regrouping follows the GQA paper literally: the K and V
//! projection weights of each new KV head are the mean of the native heads it replaces
//! ([`crate::model::pooling_plan`]); the GPU engine instead pools projected K/V, so agreement
//! between the two also checks that the two are the same.

pub mod ops;

use crate::engine::{Engine, EngineError};
use crate::gguf::Gguf;
use crate::model::{pooling_plan, Grouping, ModelConfig, ModelError, ModelTensors};
use ops::{add_in_place, matmul, rmsnorm, rope, softmax, swiglu};

/// One transformer block's weights, f32, row-major `[out][in]`.
struct Layer {
    attn_norm: Vec<f32>, // [dim]
    wq: Vec<f32>,        // [n_heads·head_dim][dim]
    wk_native: Vec<f32>, // [n_kv_heads·head_dim][dim]
    wv_native: Vec<f32>, // [n_kv_heads·head_dim][dim]
    wk: Vec<f32>,        // [G·head_dim][dim], regrouped
    wv: Vec<f32>,        // [G·head_dim][dim], regrouped
    wo: Vec<f32>,        // [dim][n_heads·head_dim]
    ffn_norm: Vec<f32>,  // [dim]
    w_gate: Vec<f32>,    // [ffn_dim][dim]
    w_up: Vec<f32>,      // [ffn_dim][dim]
    w_down: Vec<f32>,    // [dim][ffn_dim]
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

/// The CPU engine: f32 weights, current grouping, KV cache and the sequence length so far.
pub struct CpuEngine {
    cfg: ModelConfig,
    token_embd: Vec<f32>,     // [vocab][dim]
    output: Option<Vec<f32>>, // [vocab][dim]; None when tied to token_embd
    output_norm: Vec<f32>,    // [dim]
    layers: Vec<Layer>,
    grouping: Grouping,
    cache: KvCache,
    len: usize,
}

impl CpuEngine {
    /// Dequantizes the model's weights and allocates a KV cache for `capacity` tokens at the
    /// native grouping.
    pub fn load(g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        let cfg = ModelConfig::from_gguf(g)?;
        let t = ModelTensors::locate(g, &cfg)?;
        let deq = |ti| g.dequantize(ti).map_err(ModelError::from);
        let layers = t
            .layers
            .iter()
            .map(|lt| {
                let (wk, wv) = (deq(lt.wk)?, deq(lt.wv)?);
                Ok(Layer {
                    attn_norm: deq(lt.attn_norm)?,
                    wq: deq(lt.wq)?,
                    wk: wk.clone(),
                    wv: wv.clone(),
                    wk_native: wk,
                    wv_native: wv,
                    wo: deq(lt.wo)?,
                    ffn_norm: deq(lt.ffn_norm)?,
                    w_gate: deq(lt.w_gate)?,
                    w_up: deq(lt.w_up)?,
                    w_down: deq(lt.w_down)?,
                })
            })
            .collect::<Result<Vec<_>, ModelError>>()?;
        let capacity = check_capacity(&cfg, capacity)?;
        let grouping = Grouping::native(&cfg);
        Ok(CpuEngine {
            token_embd: deq(t.token_embd)?,
            output: if t.tied_output {
                None
            } else {
                Some(deq(t.output)?)
            },
            output_norm: deq(t.output_norm)?,
            layers,
            cache: KvCache::new(cfg.n_layers, grouping.groups(), capacity, cfg.head_dim),
            grouping,
            len: 0,
            cfg,
        })
    }

    /// One block on `t` tokens at positions `len..len+t`; x: `[t][dim]`, updated in place.
    fn block(&mut self, l: usize, x: &mut [f32]) {
        let Self {
            cfg,
            layers,
            cache,
            grouping,
            len,
            ..
        } = self;
        let (dim, hd, n_heads, groups) = (cfg.dim, cfg.head_dim, cfg.n_heads, grouping.groups());
        let t = x.len() / dim;
        let layer = &layers[l];
        let xb = rmsnorm(x, &layer.attn_norm, cfg.rms_eps); // [t][dim]
        let mut q = matmul(&xb, &layer.wq, dim); // [t][n_heads·hd]
        let mut k = matmul(&xb, &layer.wk, dim); // [t][G·hd]
        let v = matmul(&xb, &layer.wv, dim); // [t][G·hd]
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
        add_in_place(x, &matmul(&att, &layer.wo, n_heads * hd));
        let xb = rmsnorm(x, &layer.ffn_norm, cfg.rms_eps); // [t][dim]
        let gate = matmul(&xb, &layer.w_gate, dim); // [t][ffn_dim]
        let up = matmul(&xb, &layer.w_up, dim); // [t][ffn_dim]
        add_in_place(x, &matmul(&swiglu(&gate, &up), &layer.w_down, cfg.ffn_dim));
    }

    /// Logits `[rows][vocab]` of final hidden states `[rows][dim]`.
    fn head(&self, x: &[f32]) -> Vec<f32> {
        let xf = rmsnorm(x, &self.output_norm, self.cfg.rms_eps);
        matmul(
            &xf,
            self.output.as_ref().unwrap_or(&self.token_embd),
            self.cfg.dim,
        )
    }

    /// The residual stream after every block for `ids` fed from an empty cache:
    /// `[n_layers][t][dim]`. For tests that compare engines layer by layer.
    pub fn hidden_states(&mut self, ids: &[u32]) -> Result<Vec<Vec<f32>>, EngineError> {
        self.reset();
        let mut x = self.embed(ids)?;
        let mut states = Vec::with_capacity(self.cfg.n_layers);
        self.check_room(ids.len())?;
        for l in 0..self.cfg.n_layers {
            self.block(l, &mut x);
            states.push(x.clone());
        }
        self.len += ids.len();
        Ok(states)
    }

    /// Embedding rows of `ids`: `[t][dim]`.
    fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, EngineError> {
        let dim = self.cfg.dim;
        let mut x = Vec::with_capacity(ids.len() * dim);
        for &id in ids {
            let row = self
                .token_embd
                .get(id as usize * dim..(id as usize + 1) * dim)
                .ok_or(EngineError::TokenOutOfRange {
                    id,
                    vocab: self.cfg.vocab_size,
                })?;
            x.extend_from_slice(row);
        }
        Ok(x)
    }

    fn check_room(&self, t: usize) -> Result<(), EngineError> {
        if t == 0 {
            return Err(EngineError::EmptyInput);
        }
        if self.len + t > self.cache.capacity {
            return Err(EngineError::ContextFull {
                needed: self.len + t,
                capacity: self.cache.capacity,
            });
        }
        Ok(())
    }

    /// Recomputes each layer's K/V projection for the current grouping:
    /// row block g of the new W_k = Σ weight · row block (native head) of the native W_k.
    fn regroup_weights(&mut self) {
        let plan = pooling_plan(Grouping::native(&self.cfg), self.grouping);
        let block = self.cfg.head_dim * self.cfg.dim; // one head's rows
        for layer in &mut self.layers {
            for (native, pooled) in [
                (&layer.wk_native, &mut layer.wk),
                (&layer.wv_native, &mut layer.wv),
            ] {
                *pooled = vec![0.0; plan.len() * block];
                for (g, sources) in plan.iter().enumerate() {
                    let dst = &mut pooled[g * block..(g + 1) * block];
                    for &(src, w) in sources {
                        let src = &native[src * block..(src + 1) * block];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += w * s);
                    }
                }
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
    ops::for_each_chunk(&mut out, n_heads * hd, |i, out_i| {
        let mut scores = vec![0.0f32; len0 + i + 1]; // positions 0..=len0+i are visible
        for h in 0..n_heads {
            let g = grouping.kv_head(h);
            let q_h = &q[(i * n_heads + h) * hd..(i * n_heads + h + 1) * hd];
            for (p, s) in scores.iter_mut().enumerate() {
                let at = cache.at(l, g, p);
                *s = ops::dot(q_h, &cache.k[at..at + hd]) * scale;
            }
            softmax(&mut scores);
            let o = &mut out_i[h * hd..(h + 1) * hd];
            for (p, &a) in scores.iter().enumerate() {
                let at = cache.at(l, g, p);
                o.iter_mut()
                    .zip(&cache.v[at..at + hd])
                    .for_each(|(o, v)| *o += a * v);
            }
        }
    });
    out
}

/// A sequence length must fit the cache.
pub(crate) fn check_len(len: usize, capacity: usize) -> Result<(), EngineError> {
    if len > capacity {
        return Err(EngineError::ContextFull {
            needed: len,
            capacity,
        });
    }
    Ok(())
}

/// A cache capacity must be positive and within the model's trained context.
pub(crate) fn check_capacity(cfg: &ModelConfig, capacity: usize) -> Result<usize, EngineError> {
    if capacity == 0 || capacity > cfg.context_length {
        return Err(EngineError::BadCapacity {
            capacity,
            context_length: cfg.context_length,
        });
    }
    Ok(capacity)
}

impl Engine for CpuEngine {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn grouping(&self) -> Grouping {
        self.grouping
    }

    fn set_groups(&mut self, groups: usize) -> Result<(), EngineError> {
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
        self.check_room(ids.len())?;
        let mut x = self.embed(ids)?; // [t][dim]
        for l in 0..self.cfg.n_layers {
            self.block(l, &mut x);
        }
        self.len += ids.len();
        let dim = self.cfg.dim;
        let rows = if all_logits {
            &x[..]
        } else {
            &x[x.len() - dim..]
        };
        Ok(self.head(rows))
    }
}
