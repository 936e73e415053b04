//! A loaded model: the GPU engine and the tokenizer, built from GGUF bytes, plus what the page
//! shows about it ([`ModelInfo`]). Anything wrong with the file becomes a readable message.

use super::loader::DEFAULT_MODEL_SHA256;
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
    pub engine: GpuEngine,
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
    pub adapter: String,
    pub sha256: String,
    pub eos_id: Option<u32>,
    pub has_chat: bool,
    /// The default model, for which the fixtures' reference measurements hold.
    pub is_reference: bool,
    /// Whether decode submits each step before the token that feeds it is read back.
    pub decode_ahead: bool,
}

/// Parses `bytes`, builds the tokenizer and uploads the weights to a new GPU device; `ahead`
/// overrides the adapter's default for decoding one step ahead.
pub async fn open(
    bytes: Vec<u8>,
    fallback_name: &str,
    sha256: &str,
    ahead: Option<bool>,
) -> Result<(Session, ModelInfo), String> {
    let g = Gguf::parse(&bytes)
        .map_err(|e| format!("this is not a GGUF model file we can read: {e}"))?;
    let cfg = ModelConfig::from_gguf(&g).map_err(|e| e.to_string())?;
    let tok = Tokenizer::from_gguf(&g).map_err(|e| format!("tokenizer: {e}"))?;
    let gpu = Gpu::new()
        .await
        .map_err(|e| EngineError::from(e).to_string())?;
    let wanted = if gpu.is_software() {
        CAPACITY_SOFTWARE
    } else {
        CAPACITY_HARDWARE
    };
    let mut engine =
        GpuEngine::load_on(gpu, &g, wanted.min(cfg.context_length)).map_err(|e| e.to_string())?;
    if let Some(on) = ahead {
        engine.set_decode_ahead(on);
    }
    let name = match g.get("general.name").and_then(|v| v.to_str().ok()) {
        Some(n) if sha256 != DEFAULT_MODEL_SHA256 => format!("{n} ({fallback_name})"),
        _ => fallback_name.to_string(),
    };
    let adapter = engine.adapter();
    let info = ModelInfo {
        name,
        params: g.tensors.iter().map(|t| t.n_elements()).sum(),
        capacity: engine.capacity(),
        adapter,
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
