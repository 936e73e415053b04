//! The engine contract and what is built on it once for all backends.
//!
//! [`Engine`] is the one thing a backend implements (the CPU engines in `cpu/`, the GPU engine
//! in `gpu/`): a model at one grouping with a KV cache of fixed capacity. Its methods that may
//! wait on a device are async; the CPU engines' futures are ready at once, the GPU's await
//! their readbacks (in the browser there is no other way to wait). Natively, callers at the
//! edges (the CLI, the tests, the benchmarks) drive them with `pollster`. [`LayerWalk`] is the
//! part of the contract calibration uses. A new capability is one trait method here and one
//! implementation per backend; the page reaches it through `crate::protocol` and
//! `ui/engine/local.rs`'s one `execute`.
//!
//! Built on the contract, for every backend: step-wise generation that survives a change of G
//! mid-sequence ([`Generator`]), [`perplexity`], and the calibration walk ([`calibrate`]).

pub mod budget;
pub mod calibrate;
mod error;
mod generate;
mod perplexity;

pub use error::EngineError;
pub use generate::{GenerateParams, Generator};
pub use perplexity::{first_non_finite_row, log_softmax_at, perplexity, Perplexity};

use crate::model::{kv_cache_bytes_layers, KvType, ModelConfig, ModelError};
use crate::regroup::{Grouping, LayerMaps, Regrouping};
use crate::sampling::{sample, SamplingParams};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Backend {
    /// WGSL compute shaders through wgpu (WebGPU in the browser, Vulkan natively).
    Gpu,
    /// The f32 CPU oracle (`cpu::CpuEngine::load`).
    Cpu,
    /// The CPU forward with GGUF-block × int8 products (`cpu::CpuEngine::load_quantized`).
    CpuQ8,
}

impl Backend {
    /// The CLI's and the reports' name: `gpu`, `cpu`, `cpu-q8`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gpu => "gpu",
            Backend::Cpu => "cpu",
            Backend::CpuQ8 => "cpu-q8",
        }
    }

    /// Whether the CPU runs it (either CPU engine).
    pub fn is_cpu(self) -> bool {
        self != Backend::Gpu
    }
}

/// What the attention view shows: one layer's attention weights for the last token fed,
/// every query head over the positions it sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionWeights {
    pub layer: usize,
    /// Positions seen by the last token (its own included): `0..positions`.
    pub positions: usize,
    /// `[H][positions]`: row h is softmax_p(q_h · k_p / √hd) over KV head `kv_head(h)`.
    pub weights: Vec<f32>,
}

impl AttentionWeights {
    /// Query head `h`'s row.
    pub fn row(&self, h: usize) -> &[f32] {
        &self.weights[h * self.positions..(h + 1) * self.positions]
    }
}

/// The layer an attention probe may watch: one the model has.
pub fn check_probe_layer(cfg: &ModelConfig, layer: Option<usize>) -> Result<(), EngineError> {
    match layer {
        Some(l) if l >= cfg.n_layers => Err(EngineError::Model(ModelError::BadConfig(format!(
            "layer {l} is not in the model (it has {})",
            cfg.n_layers
        )))),
        _ => Ok(()),
    }
}

/// A backend that runs the model: a KV cache of fixed capacity at the current grouping.
#[async_trait(?Send)]
pub trait Engine: LayerWalk {
    /// Which engine this is.
    fn backend(&self) -> Backend;
    /// What runs the model, for reports: the GPU adapter, or the CPU engine.
    fn device(&self) -> String;
    /// Whether the CPU's cores run it: a CPU engine, or a software GPU adapter (lavapipe,
    /// SwiftShader). Smaller defaults (calibration tokens, KV capacity) apply there.
    fn is_software(&self) -> bool {
        self.backend().is_cpu()
    }
    fn config(&self) -> &ModelConfig;
    /// The current regrouping: the grouping, how it was made, each layer's maps.
    fn regrouping(&self) -> Arc<Regrouping>;
    fn grouping(&self) -> Grouping {
        self.regrouping().grouping
    }
    /// Regroups the model as `r` says and rebuilds the KV cache at its new size, empty. On
    /// an error the engine keeps its grouping (with an empty cache).
    fn regroup_with(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError>;
    /// Regroups to `groups` KV heads the GQA paper's way: mean-pooled K and V (exact copies
    /// of native heads for G ≥ G0).
    fn regroup(&mut self, groups: usize) -> Result<(), EngineError> {
        let grouping = Grouping::of(self.config(), groups)?;
        self.regroup_with(Arc::new(Regrouping::mean(self.config(), grouping)))
    }
    /// Positions the KV cache holds.
    fn capacity(&self) -> usize;
    /// Positions filled so far (a step decoded ahead and not yet read is not counted).
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Forgets the sequence (the cache is overwritten from position 0).
    fn reset(&mut self);
    /// Treats positions `0..len` as filled with whatever the cache holds: for benchmarks, so
    /// decode speed at a long context can be measured without computing its prefill; and to
    /// take back positions fed after `len` (the browser worker's step computed ahead).
    fn skip_to(&mut self, len: usize) -> Result<(), EngineError>;
    /// How the KV cache keeps K and V (`model::kv_type`).
    fn kv_type(&self) -> KvType;
    /// Keeps K and V as `t` from now on: the cache is rebuilt at its new size, empty, as a
    /// regrouping rebuilds it. On an error the engine keeps its type (with an empty cache).
    fn set_kv_type(&mut self, t: KvType) -> Result<(), EngineError>;
    /// KV-cache bytes of the live sequence.
    fn kv_cache_bytes(&self) -> u64 {
        let (cfg, g) = (self.config(), self.regrouping().layer_groups());
        kv_cache_bytes_layers(cfg, &g, self.len(), self.kv_type().element())
    }
    /// Feeds `ids` at the next positions; returns logits `[vocab]` of the last one, or
    /// `[ids.len()][vocab]` with `all_logits`.
    async fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, EngineError>;
    /// Feeds `ids` at the next positions and returns nothing (a chunk of a long prefill).
    async fn feed(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        self.forward(ids, false).await.map(drop)
    }
    /// Feeds `ids` and samples the next token (the GPU engine samples on the device).
    async fn forward_sample(
        &mut self,
        ids: &[u32],
        p: &SamplingParams,
        step: u32,
    ) -> Result<u32, EngineError> {
        Ok(sample(&self.forward(ids, false).await?, p, step))
    }
    /// The next token of `gen` (its bookkeeping updated), or `None` once done. By default
    /// each step is fed and waited for; the GPU engine submits the step after it before
    /// reading the token (`gpu/engine/ahead.rs`), with the same tokens.
    async fn next_token(&mut self, gen: &mut Generator) -> Result<Option<u32>, EngineError> {
        gen.step_waiting(self).await
    }
    /// Whether [`Engine::next_token`] submits the step after the one it reads.
    fn decode_ahead(&self) -> bool {
        false
    }
    /// Turns decoding ahead on or off where the engine can (the GPU's default is on for a
    /// hardware adapter).
    fn set_decode_ahead(&mut self, _on: bool) {}
    /// Forgets a step decoded ahead, if one is in flight.
    fn drop_ahead(&mut self) {}
    /// Watches layer `layer`'s attention (or nothing): each forward from now on keeps its last
    /// token's weights for [`Engine::attention_weights`]. Off, a forward does nothing extra.
    fn set_attention_probe(&mut self, layer: Option<usize>) -> Result<(), EngineError>;
    /// The watched layer, if any.
    fn attention_probe(&self) -> Option<usize>;
    /// The watched layer's weights for the last token fed, if a forward ran since the probe
    /// was set (and the cache was not emptied since).
    async fn attention_weights(&mut self) -> Result<Option<AttentionWeights>, EngineError>;
    /// Developer tools: loses the device as a driver reset would, so "Reload the engine" can
    /// be tested; the CPU has none to lose.
    fn lose_device(&mut self) {}
}

/// What calibration needs of an engine: to be carried through the layers one at a time
/// ([`calibrate`]). Every [`Engine`] is one.
#[async_trait(?Send)]
pub trait LayerWalk {
    /// Regroups to `r` (every layer's maps in the full form of a calibrated merge: dense V,
    /// q and output maps) with an empty cache of at least `regroup::SEQUENCE` positions.
    fn start(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError>;
    /// Embedding rows of `ids`: `[t][dim]`.
    async fn embed_rows(&mut self, ids: &[u32]) -> Result<Vec<f32>, EngineError>;
    /// Layer `l`'s native q, k0, v0 (before any map and RoPE) for its input `x` (`[t][dim]`):
    /// `[t][H·hd]`, `[t][G0·hd]`, `[t][G0·hd]`.
    async fn native_qkv(&mut self, l: usize, x: &[f32]) -> Result<[Vec<f32>; 3], EngineError>;
    /// Runs layer `l` on one sequence `x` (positions from 0) with its current maps, in place.
    async fn run_layer(&mut self, l: usize, x: &mut [f32]) -> Result<(), EngineError>;
    /// Sets layer `l`'s maps (full form, of the grouping [`LayerWalk::start`] was given).
    fn set_layer_maps(&mut self, l: usize, maps: &LayerMaps) -> Result<(), EngineError>;
}

/// A cache type must hold the model's head rows (q8_0: whole blocks of 32).
pub fn check_kv_type(cfg: &ModelConfig, t: KvType) -> Result<KvType, EngineError> {
    match t.holds(cfg.head_dim) {
        true => Ok(t),
        false => Err(EngineError::Model(ModelError::BadConfig(format!(
            "a {} KV cache keeps blocks of 32 values; this model's heads have {}",
            t.name(),
            cfg.head_dim
        )))),
    }
}

/// A cache capacity must be positive and within the model's trained context.
pub fn check_capacity(cfg: &ModelConfig, capacity: usize) -> Result<usize, EngineError> {
    if capacity == 0 || capacity > cfg.context_length {
        return Err(EngineError::BadCapacity {
            capacity,
            context_length: cfg.context_length,
        });
    }
    Ok(capacity)
}

/// A sequence of `len` positions must fit a cache of `capacity`.
pub fn check_len(len: usize, capacity: usize) -> Result<(), EngineError> {
    if len > capacity {
        return Err(EngineError::ContextFull {
            needed: len,
            capacity,
        });
    }
    Ok(())
}

/// `ids` fed after `len` positions of a cache of `capacity`: some tokens, each in the
/// vocabulary, and room for all of them.
pub fn check_input(
    ids: &[u32],
    vocab: usize,
    len: usize,
    capacity: usize,
) -> Result<(), EngineError> {
    if ids.is_empty() {
        return Err(EngineError::EmptyInput);
    }
    if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
        return Err(EngineError::TokenOutOfRange { id, vocab });
    }
    check_len(len + ids.len(), capacity)
}
