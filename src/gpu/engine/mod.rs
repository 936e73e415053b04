//! [`GpuEngine`]: the model on the GPU at one grouping, with a KV cache of fixed capacity.
//!
//! - `resources.rs`: weights, activations, the KV cache;
//! - `graph.rs`: the forward as a list of ops, top to bottom (read it beside `CpuEngine::block`
//!   in `cpu/mod.rs`); `graph/program.rs`: the op lists it builds;
//! - `submit.rs`: recording and submitting forwards, reading results back;
//! - `ahead.rs`: decoding one step ahead;
//! - `probe.rs`: the attention view's weights, read back only while it is open;
//! - `timing.rs`: kernel timings for the benchmark;
//! - `walk.rs`: calibration of a merge on the GPU, one layer at a time.
//!
//! The API is the [`Engine`] contract, implemented here directly (its async methods await the
//! GPU's readbacks); what is the GPU's alone (loading on a device, the memory budget, the
//! benchmark's timings) is inherent.

mod ahead;
mod graph;
mod probe;
mod resources;
mod submit;
mod timing;
mod walk;

use super::context::Gpu;
use super::kernels::{ATTENTION_CHUNK, ATTENTION_MAX_HEAD_DIM, ATTENTION_MAX_REP};
use super::ops::{window_tokens, MATVEC_MAX_IN, UNIFORM_ALIGN};
use super::GpuError;
use crate::engine::{check_capacity, check_kv_type, check_len, AttentionWeights, Backend};
use crate::engine::{Engine, EngineError, Generator};
use crate::gguf::Gguf;
use crate::model::{KvType, ModelConfig, ModelTensors};
use crate::regroup::Regrouping;
use crate::sampling::SamplingParams;
use async_trait::async_trait;
use graph::Program;
use resources::{Activations, KvCache, ModelWeights};
use std::sync::Arc;
use submit::AllLogits;

/// Tokens per prefill submit; longer inputs run in several.
pub const PREFILL_CHUNK: usize = 128;
// A prefill chunk writes all its K and V before its attention reads: a sliding-window layer's
// ring must hold the window and a whole chunk (model::layer_cache_rows).
const _: () = assert!(PREFILL_CHUNK <= crate::model::WINDOW_SLACK);

/// The model on the GPU at one grouping, with a KV cache of fixed capacity.
pub struct GpuEngine {
    gpu: Gpu,
    cfg: ModelConfig,
    capacity: usize,
    model: ModelWeights,
    act: Activations,
    /// The cache and the ops bound to it: `None` after a regroup that failed and could not
    /// put the previous grouping back (every call then says so, until a regroup succeeds).
    state: Option<(KvCache, Program)>,
    /// The regrouping of `state` (or of the last one that worked, when `state` is `None`).
    regrouping: Arc<Regrouping>,
    /// How the cache keeps K and V (a calibration walk's own cache is f32 whatever this is).
    kv_type: KvType,
    /// The all-logits tail (perplexity), made on first use.
    all_logits: Option<AllLogits>,
    /// Positions submitted to the GPU: where the next forward writes. Steps submitted ahead
    /// and not yet read are counted here, not in [`GpuEngine::len`].
    pos: usize,
    /// Decoding ahead (`ahead.rs`): submitted steps whose sampled token is not read yet,
    /// oldest first, and 4-byte readback buffers free for reuse.
    in_flight: std::collections::VecDeque<ahead::InFlight>,
    readbacks: Vec<super::Buf>,
    decode_ahead: bool,
    /// The layer whose attention weights each forward keeps (`probe.rs`), and the positions
    /// the last kept weights cover.
    probe: Option<usize>,
    probe_seen: Option<usize>,
}

impl GpuEngine {
    /// Opens the GPU, uploads the model and allocates a KV cache for `capacity` tokens at the
    /// native grouping.
    pub async fn load(g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        let gpu = Gpu::new().await?;
        Self::load_on(gpu, g, capacity)
    }

    /// As [`GpuEngine::load`], on an opened device.
    pub fn load_on(gpu: Gpu, g: &Gguf<'_>, capacity: usize) -> Result<Self, EngineError> {
        let cfg = ModelConfig::from_gguf(g)?;
        let capacity = check_capacity(&cfg, capacity)?;
        check_shapes(&cfg)?;
        let t = ModelTensors::locate(g, &cfg)?;
        resources::check_fits(&gpu, &t)?;
        let model = ModelWeights::upload(&gpu, g, &t)?;
        let act = Activations::new(&gpu, &cfg, capacity, capacity.div_ceil(ATTENTION_CHUNK))?;
        let regrouping = Arc::new(Regrouping::native(&cfg));
        let kv = (regrouping.clone(), KvType::F32);
        let state = Self::build_state(&gpu, &cfg, &model, &act, kv, capacity)?;
        gpu.check()?;
        let decode_ahead = !gpu.is_software();
        Ok(GpuEngine {
            gpu,
            cfg,
            capacity,
            model,
            act,
            state: Some(state),
            regrouping,
            kv_type: KvType::F32,
            all_logits: None,
            pos: 0,
            in_flight: Default::default(),
            readbacks: Vec::new(),
            decode_ahead,
            probe: None,
            probe_seen: None,
        })
    }

    /// A KV cache of type `kv` and maps for `regrouping`, and the ops bound to them.
    fn build_state(
        gpu: &Gpu,
        cfg: &ModelConfig,
        model: &ModelWeights,
        act: &Activations,
        (regrouping, kv): (Arc<Regrouping>, KvType),
        capacity: usize,
    ) -> Result<(KvCache, Program), GpuError> {
        let cache = KvCache::new(gpu, cfg, regrouping, capacity, kv)?;
        let program = Program::build(gpu, cfg, model, act, &cache, capacity)?;
        gpu.check()?;
        Ok((cache, program))
    }

    /// A new, empty cache of type `kv` for the regrouping `r`, with its maps and ops. The old
    /// cache is freed first (peak memory is the larger of the two, not their sum). If the new
    /// one cannot be made, the previous regrouping and type are put back, with an empty
    /// cache, and the error returned; if even that fails, every call fails with that error
    /// until a regroup succeeds.
    fn rebuild(&mut self, r: Arc<Regrouping>, kv: KvType) -> Result<(), EngineError> {
        r.check(&self.cfg)?;
        let max_rep = r.max_rep();
        if max_rep > ATTENTION_MAX_REP {
            return Err(GpuError::Unsupported(format!(
                "{max_rep} query heads per KV head (the attention kernel holds up to {ATTENTION_MAX_REP})"
            ))
            .into());
        }
        self.drop_ahead();
        let previous = (
            self.regrouping.clone(),
            self.state.as_ref().map(|s| s.0.kv_type),
        );
        self.state = None;
        self.pos = 0;
        self.probe_seen = None;
        let (cfg, model, act) = (&self.cfg, &self.model, &self.act);
        match Self::build_state(&self.gpu, cfg, model, act, (r.clone(), kv), self.capacity) {
            Ok(state) => {
                (self.state, self.regrouping) = (Some(state), r);
                Ok(())
            }
            Err(e) => {
                let back = (previous.0, previous.1.unwrap_or(self.kv_type));
                let back = Self::build_state(&self.gpu, cfg, model, act, back, self.capacity);
                self.state = back.ok();
                Err(e.into())
            }
        }
    }

    /// The cache and ops, or why there are none.
    fn state(&self) -> Result<&(KvCache, Program), EngineError> {
        self.state.as_ref().ok_or_else(|| {
            GpuError::Internal(
                "the engine has no KV cache: a regroup failed and the previous grouping could \
                 not be restored; choose G again"
                    .into(),
            )
            .into()
        })
    }

    fn program(&self) -> Result<&Program, EngineError> {
        Ok(&self.state()?.1)
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// Caps the GPU memory the engine may hold ([`Gpu::set_budget`]): a regroup whose cache
    /// would not fit then fails cleanly and leaves the engine at its previous grouping.
    pub fn set_memory_budget(&mut self, bytes: Option<u64>) {
        self.gpu.set_budget(bytes);
    }

    /// A description of the adapter, for reports.
    fn adapter(&self) -> String {
        let info = &self.gpu.info;
        let name = if info.name.is_empty() {
            "WebGPU adapter"
        } else {
            &info.name
        };
        format!("{name} ({:?}, {:?})", info.device_type, info.backend)
    }

    /// Kernel dispatches per decode step (one token; all in one submit).
    pub fn dispatches_per_token(&self) -> usize {
        self.program()
            .map_or(0, |p| p.decode.ops.len() + p.tail_token.len())
    }

    /// Bytes of weights on the GPU (all read once per decode step).
    pub fn weight_bytes(&self) -> u64 {
        self.model.bytes()
    }
}

/// Shapes the kernels assume.
fn check_shapes(cfg: &ModelConfig) -> Result<(), GpuError> {
    let bad = |m: String| Err(GpuError::Unsupported(m));
    // Llama (with or without Llama 3's RoPE frequency factors, in the RoPE table), Qwen2
    // (Q/K/V biases) and Gemma 3 (head norms, post norms, GeGLU, embedding scale, sliding
    // windows): graph.rs. Biases are added before the head norms, as no architecture has both.
    if cfg.arch.qkv_bias && cfg.arch.qk_norm {
        return bad("Q/K/V biases together with Q/K norms".into());
    }
    if !cfg.dim.is_multiple_of(32)
        || !cfg.ffn_dim.is_multiple_of(32)
        || !(cfg.n_heads * cfg.head_dim).is_multiple_of(32)
    {
        return bad("dimensions must be multiples of 32".into());
    }
    let widest = cfg.dim.max(cfg.ffn_dim).max(cfg.n_heads * cfg.head_dim);
    if widest > MATVEC_MAX_IN {
        return bad(format!(
            "a matrix {widest} wide (matvec.wgsl takes up to {MATVEC_MAX_IN})"
        ));
    }
    let inputs = [cfg.dim, cfg.ffn_dim, cfg.n_heads * cfg.head_dim];
    if let Some(n) = inputs
        .into_iter()
        .find(|&n| window_tokens(n, UNIFORM_ALIGN).is_none())
    {
        return bad(format!(
            "a matrix {n} wide (matmul.wgsl reads rows through 64 KiB uniform windows at 256-byte-aligned offsets, and none holds a row of it)"
        ));
    }
    if cfg.head_dim > ATTENTION_MAX_HEAD_DIM || !cfg.head_dim.is_multiple_of(4) {
        return bad(format!(
            "head_dim {} (the attention kernels take multiples of 4 up to {ATTENTION_MAX_HEAD_DIM})",
            cfg.head_dim
        ));
    }
    if cfg.native_n_rep() > ATTENTION_MAX_REP {
        return bad(format!("{} query heads per KV head", cfg.native_n_rep()));
    }
    Ok(())
}

#[async_trait(?Send)]
impl Engine for GpuEngine {
    fn backend(&self) -> Backend {
        Backend::Gpu
    }
    fn device(&self) -> String {
        self.adapter()
    }
    fn is_software(&self) -> bool {
        self.gpu.is_software()
    }
    fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    fn regrouping(&self) -> Arc<Regrouping> {
        self.regrouping.clone()
    }
    /// Regroups as `r` says: a new, empty cache at its size and its maps on the GPU; the
    /// weights stay as they are ([`GpuEngine::rebuild`]).
    fn regroup_with(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError> {
        self.rebuild(r, self.kv_type)
    }
    fn kv_type(&self) -> KvType {
        self.kv_type
    }
    fn set_kv_type(&mut self, t: KvType) -> Result<(), EngineError> {
        check_kv_type(&self.cfg, t)?;
        self.rebuild(self.regrouping.clone(), t)?;
        self.kv_type = t;
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    /// Positions of the sequence in the cache. A step submitted ahead (`ahead.rs`) is not
    /// counted until its token is read: the cache holds the text the caller has seen.
    fn len(&self) -> usize {
        self.pos - self.in_flight.iter().map(|f| f.fed).sum::<usize>()
    }
    /// Empties the cache (a step submitted ahead is dropped).
    fn reset(&mut self) {
        self.drop_ahead();
        self.pos = 0;
        self.probe_seen = None;
    }
    fn skip_to(&mut self, len: usize) -> Result<(), EngineError> {
        self.drop_ahead();
        check_len(len, self.capacity)?;
        self.pos = len;
        self.probe_seen = None;
        Ok(())
    }
    async fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, EngineError> {
        self.run_forward(ids, all_logits).await
    }
    async fn feed(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        self.run_feed(ids).await
    }
    async fn forward_sample(
        &mut self,
        ids: &[u32],
        p: &SamplingParams,
        step: u32,
    ) -> Result<u32, EngineError> {
        self.run_forward_sample(ids, p, step).await
    }
    async fn next_token(&mut self, gen: &mut Generator) -> Result<Option<u32>, EngineError> {
        self.next_token_ahead(gen).await
    }
    /// On by default on a hardware GPU; off on a software one (lavapipe, SwiftShader), where
    /// the "GPU" is the CPU's cores: on lavapipe a step submitted ahead waits for the one
    /// before it, so nothing overlaps, and encoding the next step only competes with the cores
    /// running this one (benches/README.md measures it).
    fn decode_ahead(&self) -> bool {
        self.decode_ahead
    }
    fn set_decode_ahead(&mut self, on: bool) {
        self.decode_ahead = on;
    }
    /// Drops the submitted steps whose tokens were not read, giving back their positions.
    fn drop_ahead(&mut self) {
        for f in self.in_flight.drain(..) {
            self.pos = self.pos.saturating_sub(f.fed);
        }
    }
    fn set_attention_probe(&mut self, layer: Option<usize>) -> Result<(), EngineError> {
        self.watch_layer(layer)
    }
    fn attention_probe(&self) -> Option<usize> {
        self.probe
    }
    async fn attention_weights(&mut self) -> Result<Option<AttentionWeights>, EngineError> {
        self.read_attention_weights().await
    }
    fn lose_device(&mut self) {
        self.gpu.lose_device()
    }
}
