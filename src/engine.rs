//! What every backend offers ([`Engine`]) and what is built on it once for all backends:
//! step-wise generation that survives a change of G mid-sequence ([`Generator`]) and
//! perplexity ([`perplexity`]). The CLI, the benchmarks, the tests and the browser all use these.

use crate::model::{kv_cache_bytes, Grouping, Method, ModelConfig, ModelError, Regrouping};
use crate::sampling::{sample, SamplingParams};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("nothing to run: the input has no tokens")]
    EmptyInput,
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("the sequence needs {needed} positions but the KV cache holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },
    #[error("a KV cache of {capacity} positions is not possible: the model's context is 1..={context_length}")]
    BadCapacity {
        capacity: usize,
        context_length: usize,
    },
    #[error("invalid sampling parameters: {0}")]
    BadSampling(String),
    #[error("the prompt has {prompt} tokens and {max_tokens} more were asked for, past the context of {capacity}")]
    PromptTooLong {
        prompt: usize,
        max_tokens: usize,
        capacity: usize,
    },
    #[error("GPU: {0}")]
    Gpu(String),
    #[error("the GPU device was lost ({0}); reload the engine")]
    DeviceLost(String),
    /// NaN or infinity where the model should have produced numbers: damaged weights, or
    /// values past f32's range. Says where it was seen first.
    #[error(
        "the model produced non-finite values (NaN or infinity) {0}: its weights may be damaged"
    )]
    NonFinite(String),
    /// An error the engine's Web Worker met, as its text (`crate::protocol`).
    #[error("{0}")]
    Relayed(String),
    /// The engine's Web Worker stopped (a crash, memory exhausted): the engine is gone.
    #[error("the engine's worker stopped ({0}); reload the engine")]
    WorkerLost(String),
}

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
pub trait Engine {
    fn name(&self) -> &'static str;
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
    /// Positions filled so far.
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
    fn kv_bytes_per_element(&self) -> usize;
    /// Feeds `ids` at the next positions; returns logits `[vocab]` of the last one, or
    /// `[ids.len()][vocab]` with `all_logits`.
    fn forward(&mut self, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, EngineError>;
    /// Feeds `ids` at the next positions and returns nothing (a chunk of a long prefill).
    fn feed(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        self.forward(ids, false).map(drop)
    }
    /// Feeds `ids` and samples the next token (the GPU engine samples on the device).
    fn forward_sample(
        &mut self,
        ids: &[u32],
        p: &SamplingParams,
        step: u32,
    ) -> Result<u32, EngineError> {
        Ok(sample(&self.forward(ids, false)?, p, step))
    }
    /// The next token of `gen` (its bookkeeping updated), or `None` once done. By default
    /// each step is fed and waited for; the GPU engine submits the step after it before
    /// reading the token (`gpu/engine/ahead.rs`), with the same tokens.
    fn next_token(&mut self, gen: &mut Generator) -> Result<Option<u32>, EngineError> {
        gen.step_waiting(self)
    }
    /// Watches layer `layer`'s attention (or nothing): each forward from now on keeps its last
    /// token's weights for [`Engine::attention_weights`]. Off, a forward does nothing extra.
    fn set_attention_probe(&mut self, layer: Option<usize>) -> Result<(), EngineError>;
    /// The watched layer, if any.
    fn attention_probe(&self) -> Option<usize>;
    /// The watched layer's weights for the last token fed, if a forward ran since the probe
    /// was set (and the cache was not emptied since).
    fn attention_weights(&mut self) -> Result<Option<AttentionWeights>, EngineError>;
    /// KV-cache bytes of the live sequence.
    fn kv_cache_bytes(&self) -> u64 {
        kv_cache_bytes(
            self.config(),
            self.grouping().groups(),
            self.len(),
            self.kv_bytes_per_element(),
        )
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

/// Settings of one generation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GenerateParams {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop after this token (usually EOS); `None` never stops early.
    pub stop_token: Option<u32>,
}

/// Step-wise generation: one token per [`Generator::step`], so a UI can yield between tokens
/// and change G in the middle ([`Generator::regroup`]): the text so far is prefilled again
/// under the new grouping and generation goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generator {
    prompt: Vec<u32>,
    generated: Vec<u32>,
    params: GenerateParams,
    /// Tokens known but not yet in the engine's cache.
    pending: Vec<u32>,
    done: bool,
}

impl Generator {
    /// Checks the prompt and parameters against the engine, and empties its cache.
    pub fn new(
        engine: &mut dyn Engine,
        prompt: Vec<u32>,
        params: GenerateParams,
    ) -> Result<Self, EngineError> {
        let gen = Self::with_limits(
            prompt,
            params,
            engine.config().vocab_size,
            engine.capacity(),
        )?;
        engine.reset();
        Ok(gen)
    }

    /// Checks the prompt and parameters against a vocabulary and a cache of `capacity`
    /// positions, for a driver that owns its engine (the browser's async loop). The caller
    /// empties the engine's cache before the first step.
    pub fn with_limits(
        prompt: Vec<u32>,
        params: GenerateParams,
        vocab: usize,
        capacity: usize,
    ) -> Result<Self, EngineError> {
        params
            .sampling
            .validate()
            .map_err(EngineError::BadSampling)?;
        if prompt.is_empty() {
            return Err(EngineError::EmptyInput);
        }
        if let Some(&id) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange { id, vocab });
        }
        // The last generated token is sampled but never fed, hence the −1.
        if prompt.len() + params.max_tokens.saturating_sub(1) > capacity {
            return Err(EngineError::PromptTooLong {
                prompt: prompt.len(),
                max_tokens: params.max_tokens,
                capacity,
            });
        }
        Ok(Generator {
            pending: prompt.clone(),
            prompt,
            generated: Vec::new(),
            params,
            done: params.max_tokens == 0,
        })
    }

    pub fn prompt(&self) -> &[u32] {
        &self.prompt
    }

    pub fn generated(&self) -> &[u32] {
        &self.generated
    }

    pub fn sampling(&self) -> &SamplingParams {
        &self.params.sampling
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// True when the next step will run a prefill (the first step, or after a regroup).
    pub fn is_prefill_next(&self) -> bool {
        self.pending.len() > 1 || self.generated.is_empty()
    }

    /// What to feed the engine next and the sampling step, or `None` once done.
    pub fn next_input(&self) -> Option<(&[u32], u32)> {
        (!self.done).then_some((&self.pending, self.generated.len() as u32))
    }

    /// The first `max` tokens still to feed, when more than `max` are: a driver that must
    /// stay responsive (the browser) feeds them alone ([`Engine::feed`]), reports
    /// [`Generator::fed`], and can stop or regroup before the rest.
    pub fn prefill_chunk(&self, max: usize) -> Option<&[u32]> {
        (!self.done && self.pending.len() > max).then(|| &self.pending[..max])
    }

    /// Records that the first `n` tokens of [`Generator::prefill_chunk`] are in the cache.
    pub fn fed(&mut self, n: usize) {
        self.pending
            .drain(..n.min(self.pending.len().saturating_sub(1)));
    }

    /// Tokens known but not yet in the engine's cache.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Records the token sampled after feeding [`Generator::next_input`].
    pub fn accept(&mut self, id: u32) {
        self.pending.clear();
        self.pending.push(id);
        self.generated.push(id);
        self.done =
            self.generated.len() >= self.params.max_tokens || Some(id) == self.params.stop_token;
    }

    /// Whether a token after the one sampled at `step` may be wanted (it is, unless that one
    /// is the stop token): a backend may start on it early ([`Engine::next_token`]).
    pub fn may_want_after(&self, step: u32) -> bool {
        (step as usize) + 1 < self.params.max_tokens
    }

    /// Produces the next token, or `None` once done, as the engine chooses to
    /// ([`Engine::next_token`]: the GPU decodes one step ahead).
    pub fn step(&mut self, engine: &mut dyn Engine) -> Result<Option<u32>, EngineError> {
        engine.next_token(self)
    }

    /// Produces the next token, or `None` once done: the input fed and the token waited for.
    pub fn step_waiting<E: Engine + ?Sized>(
        &mut self,
        engine: &mut E,
    ) -> Result<Option<u32>, EngineError> {
        let sampling = self.params.sampling;
        let Some((ids, step)) = self.next_input() else {
            return Ok(None);
        };
        let id = engine.forward_sample(ids, &sampling, step)?;
        self.accept(id);
        Ok(Some(id))
    }

    /// Regroups the engine mid-generation: the cache is rebuilt at the new G and the whole
    /// sequence so far is prefilled again at the next step.
    pub fn regroup(&mut self, engine: &mut dyn Engine, groups: usize) -> Result<(), EngineError> {
        engine.regroup(groups)?;
        self.restart();
        Ok(())
    }

    /// After the engine's cache was rebuilt by its owner: feed the whole sequence again.
    pub fn restart(&mut self) {
        self.pending = self.prompt.iter().chain(&self.generated).copied().collect();
    }
}

/// Perplexity of a token sequence: every token after the first, given its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Perplexity {
    /// Tokens predicted (`ids.len() − 1`).
    pub tokens: usize,
    /// Mean negative log-likelihood, natural log.
    pub nll: f64,
    pub perplexity: f64,
    pub groups: usize,
    /// How the grouping was made (mean-pooling, or the calibrated merge).
    pub method: Method,
}

/// Runs `ids` through the engine from an empty cache and scores each next token.
pub fn perplexity(engine: &mut dyn Engine, ids: &[u32]) -> Result<Perplexity, EngineError> {
    if ids.len() < 2 {
        return Err(EngineError::EmptyInput);
    }
    engine.reset();
    let logits = engine.forward(&ids[..ids.len() - 1], true)?; // [t-1][vocab]
    let vocab = engine.config().vocab_size;
    if let Some(p) = first_non_finite_row(&logits, vocab) {
        return Err(EngineError::NonFinite(format!(
            "in the logits at position {p}"
        )));
    }
    let total: f64 = logits
        .chunks_exact(vocab)
        .zip(&ids[1..])
        .map(|(row, &next)| -log_softmax_at(row, next as usize))
        .sum();
    let tokens = ids.len() - 1;
    let nll = total / tokens as f64;
    Ok(Perplexity {
        tokens,
        nll,
        perplexity: nll.exp(),
        groups: engine.grouping().groups(),
        method: engine.regrouping().method,
    })
}

/// The first row of `x` (rows of `width` values) that holds a NaN or an infinity.
pub fn first_non_finite_row(x: &[f32], width: usize) -> Option<usize> {
    x.chunks(width.max(1))
        .position(|row| !row.iter().all(|v| v.is_finite()))
}

/// `log softmax(row)[i]`, in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row[i] as f64 - lse
}
