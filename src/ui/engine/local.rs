//! The engine itself, wherever it runs (the Web Worker, or the page's thread): the GPU engine
//! on WebGPU, or the `cpu-q8` engine compiled to WebAssembly (GGUF blocks × int8 activations,
//! SIMD128 where the build enables it; one thread) for a browser without WebGPU or with only
//! a software adapter, behind the one [`Engine`] contract; and [`execute`], which answers a
//! [`Request`] with it: the worker's loop and the page's own fallback run the same code.

use crate::cpu::CpuEngine;
use crate::engine::calibrate::{calibrate, Progress};
use crate::engine::{perplexity, Engine, EngineError};
use crate::gguf::Gguf;
use crate::gpu::GpuEngine;
use crate::model::{ModelConfig, ModelError};
use crate::protocol::{Answer, BackendChoice, Facts, Request};
use crate::regroup::{store, Grouping, Method, Regrouping};
use std::sync::Arc;

/// The loaded engine: the GPU engine or the `cpu-q8` engine, behind the one contract.
pub type LocalEngine = Box<dyn Engine>;

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
/// engine (`auto`: when `webgpu` says why there is none, the adapter is software, or the GPU
/// engine cannot load the model) — with
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
    if let Some(on) = ahead {
        engine.set_decode_ahead(on);
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
        Ok((Box::new(e) as LocalEngine, why))
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
    match GpuEngine::load_on(gpu, g, wanted.min(cfg.context_length)) {
        Ok(engine) => Ok((Box::new(engine), why)),
        // `auto` runs what can run the model: the CPU where the GPU engine cannot (an
        // architecture its graph does not have yet, too little GPU memory).
        Err(e) if choice == BackendChoice::Auto => {
            cpu(format!("the GPU engine cannot run this model ({e})"))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Answers `req` with the engine; `bytes` is the GGUF it was built from (calibration reads
/// the output projections there) and `progress` hears each calibrated layer. Loading is
/// [`open`]'s, and the developer tools' crashes are the worker's own.
pub async fn execute(
    e: &mut dyn Engine,
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
        Request::SetKvType(t) => e.set_kv_type(t)?,
        Request::DropAhead => e.drop_ahead(),
        Request::SkipTo(len) => e.skip_to(len)?,
        Request::Feed(ids) => e.feed(&ids).await?,
        Request::Forward { ids, all } => return Ok(Answer::Logits(e.forward(&ids, all).await?)),
        Request::Perplexity(ids) => {
            let p = perplexity(e, &ids).await;
            e.reset();
            return Ok(Answer::Perplexity(p?.perplexity));
        }
        Request::NextToken(mut gen) => {
            let id = e.next_token(&mut gen).await?;
            return Ok(Answer::Token(id, gen));
        }
        Request::Probe(layer) => e.set_attention_probe(layer)?,
        Request::AttentionWeights => return Ok(Answer::Weights(e.attention_weights().await?)),
        Request::Calibrate { groups, ids } => {
            let g = Gguf::parse(bytes).map_err(ModelError::from)?;
            let grouping = Grouping::of(e.config(), groups)?;
            let r = calibrate(e, &g, grouping, &ids, progress).await?;
            return Ok(Answer::Calibrated(store::to_bytes(&r)));
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
    method: Method,
    maps: Option<Vec<u8>>,
) -> Result<Regrouping, EngineError> {
    match maps {
        Some(bytes) => Ok(store::from_bytes(&bytes, cfg)?),
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
