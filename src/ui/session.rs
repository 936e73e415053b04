//! A loaded model: the engine (GPU or CPU, `engine.rs`) and the tokenizer, built from GGUF bytes, plus what the page
//! shows about it ([`ModelInfo`]). Anything wrong with the file becomes a readable message.

use super::engine::{BackendChoice, PageEngine};
use super::loader::DEFAULT_MODEL_SHA256;
use crate::cpu::CpuEngine;
use crate::engine::EngineError;
use crate::gguf::Gguf;
use crate::gpu::{Gpu, GpuEngine};
use crate::model::{ModelConfig, Regrouping};
use crate::tokenizer::Tokenizer;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// KV-cache positions the page asks for on a software GPU (SwiftShader, lavapipe; bounded by
/// the model's context): modest, so that every G fits and a long text does not crawl.
pub const CAPACITY_SOFTWARE: usize = 512;
/// KV-cache positions on a hardware GPU: room for long texts, where the cache's cost per G
/// shows in bytes and in speed (the default model at G = 9: 566 MB for 4096 tokens in f32; at
/// its native G = 3, 189 MB).
pub const CAPACITY_HARDWARE: usize = 4096;

/// The engine and tokenizer of the loaded model, its bytes (calibration reads the output
/// projections from them) and the calibrated regroupings fitted or loaded so far.
pub struct Session {
    pub engine: PageEngine,
    pub tok: Rc<Tokenizer>,
    pub bytes: Rc<Vec<u8>>,
    pub sha256: String,
    /// Calibrated maps by (G, calibration tokens).
    pub maps: HashMap<(usize, usize), Arc<Regrouping>>,
}

/// What the page shows about the loaded model (plain data, for signals).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub cfg: ModelConfig,
    /// Parameters (elements of every tensor in the file).
    pub params: u64,
    pub capacity: usize,
    /// What runs the model: the GPU adapter, or the CPU backend.
    pub adapter: String,
    /// `gpu` or `cpu`, and why that one.
    pub backend: &'static str,
    pub backend_why: String,
    pub sha256: String,
    pub eos_id: Option<u32>,
    pub has_chat: bool,
    /// The default model, for which the fixtures' reference measurements hold.
    pub is_reference: bool,
    /// Whether decode submits each step before the token that feeds it is read back.
    pub decode_ahead: bool,
}

/// KV-cache positions on the CPU backend: f32 K and V in wasm memory (141 MB at G = 9).
pub const CAPACITY_CPU: usize = 1024;

/// Parses `bytes`, builds the tokenizer and loads the engine `choice` asks for — the GPU on
/// WebGPU, or the `cpu-q8` engine (`auto`: when `webgpu` says why there is none, or the
/// adapter is software) — with `ahead` overriding the GPU's default for decoding one step
/// ahead.
pub async fn open(
    bytes: Vec<u8>,
    fallback_name: &str,
    sha256: &str,
    ahead: Option<bool>,
    choice: BackendChoice,
    webgpu: Result<(), String>,
) -> Result<(Session, ModelInfo), String> {
    let g = Gguf::parse(&bytes)
        .map_err(|e| format!("this is not a GGUF model file we can read: {e}"))?;
    let cfg = ModelConfig::from_gguf(&g).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(&g).map_err(|e| format!("tokenizer: {e}"))?;
    let (mut engine, why) = engine_for(&g, &cfg, choice, webgpu).await?;
    if let (Some(on), PageEngine::Gpu(e)) = (ahead, &mut engine) {
        e.set_decode_ahead(on);
    }
    let name = match g.get("general.name").and_then(|v| v.to_str().ok()) {
        Some(n) if sha256 != DEFAULT_MODEL_SHA256 => format!("{n} ({fallback_name})"),
        _ => fallback_name.to_string(),
    };
    let info = ModelInfo {
        name,
        params: g.tensors.iter().map(|t| t.n_elements()).sum(),
        capacity: engine.capacity(),
        adapter: engine.device(),
        backend: if engine.is_cpu() { "cpu" } else { "gpu" },
        backend_why: why,
        sha256: sha256.to_string(),
        eos_id: tok.eos_id,
        has_chat: tok.chat_template.is_some(),
        is_reference: sha256 == DEFAULT_MODEL_SHA256,
        decode_ahead: engine.decode_ahead(),
        cfg,
    };
    drop(g);
    let session = Session {
        engine,
        tok: Rc::new(tok),
        bytes: Rc::new(bytes),
        sha256: sha256.to_string(),
        maps: HashMap::new(),
    };
    Ok((session, info))
}

/// The engine for `choice`, and why it was chosen (for the header).
async fn engine_for(
    g: &Gguf<'_>,
    cfg: &ModelConfig,
    choice: BackendChoice,
    webgpu: Result<(), String>,
) -> Result<(PageEngine, String), String> {
    let cpu = |why: String| -> Result<(PageEngine, String), String> {
        let e = CpuEngine::load_quantized(g, CAPACITY_CPU.min(cfg.context_length))
            .map_err(|e| e.to_string())?;
        Ok((PageEngine::Cpu(Box::new(e)), why))
    };
    let gpu = match (choice, webgpu) {
        (BackendChoice::Cpu, _) => return cpu("chosen (backend=cpu)".into()),
        (BackendChoice::Auto, Err(why)) => return cpu(format!("no WebGPU here: {why}")),
        (BackendChoice::Gpu, Err(why)) => return Err(format!("WebGPU is not available: {why}")),
        _ => Gpu::new()
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
    Ok((PageEngine::Gpu(Box::new(engine)), why))
}
