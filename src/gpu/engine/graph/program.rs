//! A [`Program`]: every op of the forward at one grouping, bound to the engine's buffers,
//! built once per grouping from the graph (`graph.rs`) — the decode and prefill bodies, the
//! greedy and the sampling tails — with one uniform buffer for all their parameters.
//! `submit.rs` records its ops per forward.

use super::Graph;
use crate::gpu::context::{Gpu, Uniforms};
use crate::gpu::engine::resources::{Activations, KvCache, ModelWeights};
use crate::gpu::ops::{Op, Pass};
use crate::gpu::GpuError;
use crate::model::ModelConfig;
use std::ops::Range;

/// Every op of a forward at one grouping, bound to the engine's buffers.
pub(in crate::gpu::engine) struct Program {
    /// The embedding lookup and the layers, for one token and for a prefill chunk.
    pub decode: Body,
    pub prefill: Body,
    /// Final norm (last row), head, argmax: the greedy token (and the last row's logits).
    pub tail_token: Vec<Op>,
    /// Final norm (last row), head, temperature / top-k / top-p sampling.
    pub tail_sample: Vec<Op>,
    /// The ops' parameter uniforms (kept alive with them).
    _uniforms: Uniforms,
}

/// The embedding and the layers' ops, and where each layer and attention are among them.
pub(in crate::gpu::engine) struct Body {
    pub ops: Vec<Op>,
    pub layers: Vec<Range<usize>>,
    /// Attention and its chunk reduction, in every layer.
    pub attention: Vec<usize>,
    /// Each layer's kv_store op: the layer's ops before it compute the native q, k0, v0.
    pub kv_store: Vec<usize>,
    /// Each layer's last op that writes its cache: kv_store, or kv_quant after it (q8_0).
    pub cache_written: Vec<usize>,
    /// Per layer, attention_probe.wgsl on the layer's q and K (not in `ops`: `submit.rs`
    /// records the one of the layer the attention view shows, after that layer's cache is
    /// written, and only while the view is open).
    pub probe: Vec<Op>,
}

/// Where a [`Body`]'s ops are in the graph's op list while it is built.
#[derive(Default)]
pub(super) struct BodySpec {
    pub ops: Vec<usize>,
    pub layers: Vec<Range<usize>>,
    pub attention: Vec<usize>,
    pub kv_store: Vec<usize>,
    pub cache_written: Vec<usize>,
    pub probe: Vec<usize>,
}

impl Program {
    /// Builds every op of the forward for `cache`'s grouping.
    pub fn build(
        gpu: &Gpu,
        cfg: &ModelConfig,
        m: &ModelWeights,
        a: &Activations,
        cache: &KvCache,
        capacity: usize,
    ) -> Result<Program, GpuError> {
        let mut g = Graph::new(gpu, cfg, m, a, cache, capacity);
        let decode = g.body(Pass::Decode);
        let prefill = g.body(Pass::Prefill);
        let tail_token = g.tail(false);
        let tail_sample = g.tail(true);
        let (uniforms, ops) = g.list.finish(gpu, &a.step)?;
        let mut ops = Ops(ops.into_iter().map(Some).collect());
        Ok(Program {
            decode: ops.body(decode)?,
            prefill: ops.body(prefill)?,
            tail_token: ops.take_all(tail_token)?,
            tail_sample: ops.take_all(tail_sample)?,
            _uniforms: uniforms,
        })
    }

    /// The embedding and the layers' ops for a forward of `t` tokens.
    pub fn body(&self, t: usize) -> &Body {
        match Pass::of(t) {
            Pass::Decode => &self.decode,
            Pass::Prefill => &self.prefill,
        }
    }
}

/// The finished ops, each taken out once by its index.
struct Ops(Vec<Option<Op>>);

impl Ops {
    fn take_all(&mut self, ids: Vec<usize>) -> Result<Vec<Op>, GpuError> {
        ids.into_iter().map(|i| self.take(i)).collect()
    }

    fn take(&mut self, i: usize) -> Result<Op, GpuError> {
        self.0[i]
            .take()
            .ok_or_else(|| GpuError::Internal("an op was used twice".into()))
    }

    fn body(&mut self, spec: BodySpec) -> Result<Body, GpuError> {
        Ok(Body {
            ops: self.take_all(spec.ops)?,
            probe: self.take_all(spec.probe)?,
            layers: spec.layers,
            attention: spec.attention,
            kv_store: spec.kv_store,
            cache_written: spec.cache_written,
        })
    }
}
