//! The engine itself, wherever it runs (the Web Worker, or the page's thread): the GPU engine
//! on WebGPU, or the `cpu-q8` engine compiled to WebAssembly (GGUF blocks × int8 activations,
//! SIMD128 where the build enables it; one thread) for a browser without WebGPU or with only
//! a software adapter. One enum, with the GPU engine's async methods under the same names, and
//! [`execute`], which answers a [`Request`] with it: the worker's loop and the page's own
//! fallback run the same code.

use crate::calibration::{self, LayerWalk, Progress};
use crate::cpu::CpuEngine;
use crate::engine::{log_softmax_at, AttentionWeights, Backend, Engine, EngineError, Generator};
use crate::gguf::Gguf;
use crate::gpu::GpuEngine;
use crate::model::{Grouping, LayerMaps, ModelConfig, ModelError, Regrouping};
use crate::protocol::{Answer, BackendChoice, Facts, Request};
use std::sync::Arc;

/// One engine per loaded model (boxed: the two differ much in size).
pub enum LocalEngine {
    Gpu(Box<GpuEngine>),
    Cpu(Box<CpuEngine>),
}

use LocalEngine::{Cpu, Gpu};

impl LocalEngine {
    pub fn is_cpu(&self) -> bool {
        matches!(self, Cpu(_))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Gpu(_) => Backend::Gpu,
            Cpu(_) => Backend::CpuQ8,
        }
    }

    /// Whether the device is the CPU's cores: the CPU backend, or a software GPU adapter
    /// (SwiftShader). Smaller defaults (calibration tokens, KV capacity) apply there.
    pub fn is_software(&self) -> bool {
        match self {
            Gpu(e) => e.gpu().is_software(),
            Cpu(_) => true,
        }
    }

    /// What runs the model, for the header and the model strip.
    pub fn device(&self) -> String {
        match self {
            Gpu(e) => e.adapter(),
            Cpu(_) if cfg!(target_feature = "simd128") => {
                "CPU (WebAssembly SIMD128, 1 thread, cpu-q8)".into()
            }
            Cpu(_) => "CPU (WebAssembly, 1 thread, cpu-q8)".into(),
        }
    }

    pub fn config(&self) -> &ModelConfig {
        match self {
            Gpu(e) => e.config(),
            Cpu(e) => Engine::config(&**e),
        }
    }

    pub fn capacity(&self) -> usize {
        match self {
            Gpu(e) => e.capacity(),
            Cpu(e) => Engine::capacity(&**e),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Gpu(e) => e.len(),
            Cpu(e) => Engine::len(&**e),
        }
    }

    pub fn reset(&mut self) {
        match self {
            Gpu(e) => e.reset(),
            Cpu(e) => Engine::reset(&mut **e),
        }
    }

    pub fn regroup_with(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError> {
        match self {
            Gpu(e) => e.regroup_with(r),
            Cpu(e) => Engine::regroup_with(&mut **e, r),
        }
    }

    /// Drops a step decoded ahead (the GPU's; the CPU never runs ahead).
    pub fn drop_ahead(&mut self) {
        if let Gpu(e) = self {
            e.drop_ahead()
        }
    }

    /// Takes the CPU engine's cache back to `len` positions, those before it untouched: a step
    /// the worker computed ahead and the page did not take (`worker.rs`).
    pub fn rewind(&mut self, len: usize) -> Result<(), EngineError> {
        match self {
            Gpu(_) => Ok(()),
            Cpu(e) => Engine::skip_to(&mut **e, len),
        }
    }

    pub fn decode_ahead(&self) -> bool {
        match self {
            Gpu(e) => e.decode_ahead(),
            Cpu(_) => false,
        }
    }

    pub async fn feed(&mut self, ids: &[u32]) -> Result<(), EngineError> {
        match self {
            Gpu(e) => e.feed(ids).await,
            Cpu(e) => Engine::feed(&mut **e, ids),
        }
    }

    pub async fn forward(&mut self, ids: &[u32], all: bool) -> Result<Vec<f32>, EngineError> {
        match self {
            Gpu(e) => e.forward(ids, all).await,
            Cpu(e) => Engine::forward(&mut **e, ids, all),
        }
    }

    pub async fn next_token(&mut self, gen: &mut Generator) -> Result<Option<u32>, EngineError> {
        match self {
            Gpu(e) => e.next_token(gen).await,
            Cpu(e) => Engine::next_token(&mut **e, gen),
        }
    }

    pub fn attention_probe(&self) -> Option<usize> {
        match self {
            Gpu(e) => e.attention_probe(),
            Cpu(e) => Engine::attention_probe(&**e),
        }
    }

    pub fn set_attention_probe(&mut self, layer: Option<usize>) -> Result<(), EngineError> {
        match self {
            Gpu(e) => e.set_attention_probe(layer),
            Cpu(e) => Engine::set_attention_probe(&mut **e, layer),
        }
    }

    pub async fn attention_weights(&mut self) -> Result<Option<AttentionWeights>, EngineError> {
        match self {
            Gpu(e) => e.attention_weights().await,
            Cpu(e) => Engine::attention_weights(&mut **e),
        }
    }

    /// Destroys the GPU device, as a driver reset would (the developer tools' test of
    /// "Reload the engine"); nothing on the CPU.
    pub fn lose_device(&self) {
        if let Gpu(e) = self {
            e.gpu().device.destroy()
        }
    }
}

/// Calibration walks whichever engine the page runs.
impl LayerWalk for LocalEngine {
    fn start(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError> {
        match self {
            Gpu(e) => e.start(r),
            Cpu(e) => e.as_mut().start(r),
        }
    }

    async fn embed_rows(&mut self, ids: &[u32]) -> Result<Vec<f32>, EngineError> {
        match self {
            Gpu(e) => e.embed_rows(ids).await,
            Cpu(e) => e.embed_rows(ids).await,
        }
    }

    async fn native_qkv(&mut self, l: usize, x: &[f32]) -> Result<[Vec<f32>; 3], EngineError> {
        match self {
            Gpu(e) => e.native_qkv(l, x).await,
            Cpu(e) => e.native_qkv(l, x).await,
        }
    }

    async fn run_layer(&mut self, l: usize, x: &mut [f32]) -> Result<(), EngineError> {
        match self {
            Gpu(e) => e.run_layer(l, x).await,
            Cpu(e) => e.run_layer(l, x).await,
        }
    }

    fn set_layer_maps(&mut self, l: usize, maps: &LayerMaps) -> Result<(), EngineError> {
        match self {
            Gpu(e) => e.set_layer_maps(l, maps),
            Cpu(e) => e.set_layer_maps(l, maps),
        }
    }
}

/// KV-cache positions on a software GPU (SwiftShader, lavapipe; bounded by the model's
/// context): modest, so that every G fits and a long text does not crawl.
pub const CAPACITY_SOFTWARE: usize = 512;
/// KV-cache positions on a hardware GPU: room for long texts, where the cache's cost per G
/// shows in bytes and in speed (the default model at G = 9: 566 MB for 4096 tokens in f32; at
/// its native G = 3, 189 MB).
pub const CAPACITY_HARDWARE: usize = 4096;
/// KV-cache positions on the CPU backend: f32 K and V in wasm memory (141 MB at G = 9).
pub const CAPACITY_CPU: usize = 1024;

/// Builds the engine `choice` asks for from GGUF bytes — the GPU on WebGPU, or the `cpu-q8`
/// engine (`auto`: when `webgpu` says why there is none, or the adapter is software) — with
/// `ahead` overriding the GPU's default for decoding one step ahead; and what the page shows
/// of it.
pub async fn open(
    bytes: &[u8],
    choice: BackendChoice,
    ahead: Option<bool>,
    webgpu: Result<(), String>,
) -> Result<(LocalEngine, Facts), String> {
    let g = Gguf::parse(bytes)
        .map_err(|e| format!("this is not a GGUF model file we can read: {e}"))?;
    let cfg = ModelConfig::from_gguf(&g).map_err(|e| e.to_string())?;
    let (mut engine, why) = engine_for(&g, &cfg, choice, webgpu).await?;
    if let (Some(on), LocalEngine::Gpu(e)) = (ahead, &mut engine) {
        e.set_decode_ahead(on);
    }
    let facts = Facts {
        capacity: engine.capacity(),
        device: engine.device(),
        backend: engine.backend(),
        is_software: engine.is_software(),
        decode_ahead: engine.decode_ahead(),
        why,
    };
    Ok((engine, facts))
}

/// The engine for `choice`, and why it was chosen (for the header).
async fn engine_for(
    g: &Gguf<'_>,
    cfg: &ModelConfig,
    choice: BackendChoice,
    webgpu: Result<(), String>,
) -> Result<(LocalEngine, String), String> {
    let cpu = |why: String| -> Result<(LocalEngine, String), String> {
        let e = CpuEngine::load_quantized(g, CAPACITY_CPU.min(cfg.context_length))
            .map_err(|e| e.to_string())?;
        Ok((LocalEngine::Cpu(Box::new(e)), why))
    };
    let gpu = match (choice, webgpu) {
        (BackendChoice::Cpu, _) => return cpu("chosen (backend=cpu)".into()),
        (BackendChoice::Auto, Err(why)) => return cpu(format!("no WebGPU here: {why}")),
        (BackendChoice::Gpu, Err(why)) => return Err(format!("WebGPU is not available: {why}")),
        _ => crate::gpu::Gpu::new()
            .await
            .map_err(|e| EngineError::from(e).to_string())?,
    };
    if choice == BackendChoice::Auto && gpu.is_software() {
        return cpu("the WebGPU adapter is a software one (the CPU emulating a GPU); the CPU backend runs the model faster".into());
    }
    let wanted = if gpu.is_software() {
        CAPACITY_SOFTWARE
    } else {
        CAPACITY_HARDWARE
    };
    let why = match choice {
        BackendChoice::Gpu => "chosen (backend=gpu)".to_string(),
        _ => "a hardware WebGPU adapter".to_string(),
    };
    let engine =
        GpuEngine::load_on(gpu, g, wanted.min(cfg.context_length)).map_err(|e| e.to_string())?;
    Ok((LocalEngine::Gpu(Box::new(engine)), why))
}

/// Answers `req` with the engine; `bytes` is the GGUF it was built from (calibration reads
/// the output projections there) and `progress` hears each calibrated layer. Loading is
/// [`open`]'s, and the developer tools' crashes are the worker's own.
pub async fn execute(
    e: &mut LocalEngine,
    bytes: &[u8],
    req: Request,
    progress: &mut dyn FnMut(Progress),
) -> Result<Answer, EngineError> {
    let done = Ok(Answer::Done);
    match req {
        Request::Reset => e.reset(),
        Request::Regroup {
            groups,
            method,
            maps,
        } => {
            let r = regrouping(e.config(), groups, method, maps)?;
            e.regroup_with(Arc::new(r))?
        }
        Request::DropAhead => e.drop_ahead(),
        Request::Feed(ids) => e.feed(&ids).await?,
        Request::Forward { ids, all } => return Ok(Answer::Logits(e.forward(&ids, all).await?)),
        Request::Perplexity(ids) => return Ok(Answer::Perplexity(perplexity(e, &ids).await?)),
        Request::NextToken(mut gen) => {
            let id = e.next_token(&mut gen).await?;
            return Ok(Answer::Token(id, gen));
        }
        Request::Probe(layer) => e.set_attention_probe(layer)?,
        Request::AttentionWeights => return Ok(Answer::Weights(e.attention_weights().await?)),
        Request::Calibrate { groups, ids } => {
            let g = Gguf::parse(bytes).map_err(ModelError::from)?;
            let grouping = Grouping::of(e.config(), groups)?;
            let r = calibration::calibrate(e, &g, grouping, &ids, progress).await?;
            return Ok(Answer::Calibrated(calibration::to_bytes(&r)));
        }
        Request::LoseDevice => e.lose_device(),
        Request::Load { .. } | Request::Crash | Request::ExhaustMemory => {
            return Err(EngineError::Relayed(format!(
                "{req:?} is not for a loaded engine on this thread"
            )))
        }
    }
    done
}

/// The regrouping a [`Request::Regroup`] describes.
fn regrouping(
    cfg: &ModelConfig,
    groups: usize,
    method: crate::model::Method,
    maps: Option<Vec<u8>>,
) -> Result<Regrouping, EngineError> {
    match maps {
        Some(bytes) => Ok(calibration::from_bytes(&bytes, cfg)?),
        None => Ok(Regrouping::mean(cfg, Grouping::of(cfg, groups)?)),
    }
    .and_then(
        |r| match r.groups() == groups && (r.method == method || !r.grouping.merges()) {
            true => Ok(r),
            false => Err(EngineError::Relayed(format!(
                "maps for G = {} ({}) where G = {groups} ({}) was asked",
                r.groups(),
                r.method.name(),
                method.name()
            ))),
        },
    )
}

/// Perplexity of `ids` (every token after the first, given its prefix) from an empty cache,
/// which is left empty.
async fn perplexity(e: &mut LocalEngine, ids: &[u32]) -> Result<f64, EngineError> {
    if ids.len() < 2 {
        return Err(EngineError::EmptyInput);
    }
    e.reset();
    let logits = e.forward(&ids[..ids.len() - 1], true).await?; // [t-1][vocab]
    let vocab = e.config().vocab_size;
    let nll: f64 = logits
        .chunks_exact(vocab)
        .zip(&ids[1..])
        .map(|(row, &next)| -log_softmax_at(row, next as usize))
        .sum();
    e.reset();
    Ok((nll / (ids.len() - 1) as f64).exp())
}
