//! A loaded model: the engine (GPU or CPU, in a Web Worker or on the page's thread:
//! `ui/engine/`) and the tokenizer, built from GGUF bytes, plus what the page shows about it
//! ([`ModelInfo`]). Only the engine's owner holds a [`Session`]. Anything wrong with the file
//! becomes a readable message.

use crate::gguf::Gguf;
use crate::gguf::GgufError;
use crate::model::ModelConfig;
use crate::models::{BuiltinModel, BUILTIN};
use crate::regroup::budget::Sensitivity;
use crate::regroup::Regrouping;
use crate::tokenizer::Tokenizer;
use crate::ui::engine::{BackendChoice, PageEngine, WorkerStart};
use crate::ui::state::model::ModelInfo;
use futures_util::future::join;
use js_sys::Uint8Array;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

/// The engine and tokenizer of the loaded model and the calibrated regroupings fitted or
/// loaded so far.
pub struct Session {
    pub engine: PageEngine,
    pub tok: Rc<Tokenizer>,
    pub sha256: String,
    /// Calibrated maps by (G, calibration tokens).
    pub maps: HashMap<(usize, usize), Arc<Regrouping>>,
    /// Each layer's sensitivity for a KV budget, by the name of what it was scored with
    /// (`owner/budget.rs`), and the per-layer regroupings spent from them, by (KV heads in
    /// all, what they were spent with).
    pub sensitivities: HashMap<String, Arc<Sensitivity>>,
    pub budgets: HashMap<(usize, String), Arc<Regrouping>>,
    /// The tokens in the engine's cache after the last generation, position by position
    /// (empty once anything else may have used the cache): what the attention view reads
    /// when it is opened after a run.
    pub fed: Vec<u32>,
}

/// How the page wants its engine.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    pub choice: BackendChoice,
    /// Overrides the GPU's default for decoding one step ahead.
    pub ahead: Option<bool>,
    /// Run it in a Web Worker where the browser can.
    pub worker: bool,
}

/// Parses the head of `bytes`, and loads the engine `wanted` asks for (in `worker`, if one
/// started) while the tokenizer is built here. `builtin`: the built-in model the bytes are
/// (named by its display name), else a file called `file_name`.
pub async fn open(
    bytes: Uint8Array,
    builtin: Option<&'static BuiltinModel>,
    file_name: &str,
    sha256: &str,
    wanted: Wanted,
    worker: Option<WorkerStart>,
) -> Result<(Session, ModelInfo), String> {
    let head = head_of(&bytes)?;
    let g = Gguf::parse_head(&head, bytes.length() as u64)
        .map_err(|e| format!("this is not a GGUF model file we can read: {e}"))?;
    let cfg = ModelConfig::from_gguf(&g).map_err(|e| e.to_string())?;
    let (choice, ahead) = (wanted.choice, wanted.ahead);
    // The engine's load posts the bytes to the worker first; the tokenizer is built meanwhile.
    let load = PageEngine::load(&bytes, cfg.clone(), choice, ahead, worker);
    let tokenizer = async { Tokenizer::from_gguf(&g).map_err(|e| format!("tokenizer: {e}")) };
    let (engine, tok) = join(load, tokenizer).await;
    let (engine, tok) = (engine?, tok?);
    // A file that is a built-in model goes by its file name; another by its own name too.
    let known = BUILTIN.iter().any(|m| m.sha256 == sha256);
    let name = match (builtin, g.get("general.name").and_then(|v| v.to_str().ok())) {
        (Some(m), _) => m.display_name.to_string(),
        (None, Some(n)) if !known => format!("{n} ({file_name})"),
        (None, _) => file_name.to_string(),
    };
    let params = g.tensors.iter().map(|t| t.n_elements()).sum();
    drop(g);
    let info = ModelInfo {
        name,
        builtin,
        cfg,
        params,
        sha256: sha256.to_string(),
        has_chat: tok.chat_template.is_some(),
        facts: engine.facts().clone(),
        thread: engine.thread.clone(),
    };
    let session = Session {
        engine,
        tok: Rc::new(tok),
        sha256: sha256.to_string(),
        maps: HashMap::new(),
        sensitivities: HashMap::new(),
        budgets: HashMap::new(),
        fed: Vec::new(),
    };
    Ok((session, info))
}

/// The first bytes of the file that hold its header, metadata and tensor infos (a few MB for
/// the default model: its vocabulary), copied into the page's memory.
fn head_of(bytes: &Uint8Array) -> Result<Vec<u8>, String> {
    let len = bytes.length();
    let mut n = len.min(4 << 20);
    loop {
        let head = bytes.subarray(0, n).to_vec();
        match Gguf::parse_head(&head, len as u64) {
            Err(GgufError::Truncated { .. }) if n < len => n = n.saturating_mul(2).min(len),
            _ => return Ok(head),
        }
    }
}
