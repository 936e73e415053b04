//! What an architecture adds to the llama graph (`ModelConfig::arch`; ARCHITECTURE.md,
//! "Architectures"): Qwen2's biases, Gemma's head norms and post norms, sliding windows and
//! the rows of a layer's ring cache.

use super::{BodySpec, Graph, Qkv};
use crate::gpu::context::Buf;
use crate::gpu::engine::resources::LayerWeights;
use crate::gpu::ops::{self, OpSpec};

impl<'a> Graph<'a> {
    /// Whether decode splits each RMSNorm over the products around it ([`Link`]): not when a
    /// norm comes between the product and the residual add (Gemma's post norms).
    pub(super) fn fused_norms(&self) -> bool {
        !self.cfg.arch.post_norms
    }

    /// x += rmsnorm(xb) ⊙ γ: a sublayer's output, normalised, into the residual stream.
    pub(super) fn add_normed(&self, gamma: &'a Buf) -> OpSpec<'a> {
        let p = ops::RmsNormParams {
            dim: self.cfg.dim as u32,
            eps: self.cfg.rms_eps,
            last_row_only: 0,
            add: 1,
        };
        ops::rmsnorm(p, &self.a.xb, gamma, &self.a.x)
    }

    /// Each query head of q and key head of k0 normalised in place, when the layer has the
    /// norms.
    pub(super) fn head_norms(&mut self, b: &mut BodySpec, w: &'a LayerWeights, qkv: &Qkv<'a>) {
        let (Some(qn), Some(kn)) = (&w.q_norm, &w.k_norm) else {
            return;
        };
        let cfg = self.cfg;
        for (heads, x, gamma) in [
            (cfg.n_heads, qkv.q.clone(), qn),
            (cfg.n_kv_heads, qkv.k0.clone(), kn),
        ] {
            let p = ops::HeadNormParams {
                heads: heads as u32,
                head_dim: cfg.head_dim as u32,
                eps: cfg.rms_eps,
                _pad: 0,
            };
            self.push(b, ops::head_norm(p, x, gamma));
        }
    }

    /// The Q, K and V biases added to their products, when the layer has them.
    pub(super) fn biases(&mut self, b: &mut BodySpec, w: &'a LayerWeights, qkv: &Qkv<'a>) {
        let Some([bq, bk, bv]) = &w.bias else {
            return;
        };
        let (cfg, hd) = (self.cfg, self.cfg.head_dim);
        for (n, x, bias) in [
            (cfg.n_heads * hd, qkv.q.clone(), bq),
            (cfg.n_kv_heads * hd, qkv.k0.clone(), bk),
            (cfg.n_kv_heads * hd, qkv.v0.clone(), bv),
        ] {
            self.push(b, ops::add_bias(n as u32, x, bias));
        }
    }

    /// Rows per KV head of layer `l`'s cache: the capacity, or a sliding-window layer's ring
    /// (position p in row p mod rows).
    pub(super) fn rows(&self, l: usize) -> u32 {
        crate::model::layer_cache_rows(self.cfg, l, self.capacity) as u32
    }

    /// Layer `l`'s sliding window (0: none).
    pub(super) fn window(&self, l: usize) -> u32 {
        match self.cfg.is_local(l) {
            true => self.cfg.arch.sliding_window as u32,
            false => 0,
        }
    }
}
