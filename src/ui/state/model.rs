//! The loaded model as the page knows it: what the file and the engine say of it
//! ([`ModelInfo`]), its tokenizer (the page counts the prompt and labels tokens with it), the
//! load's progress, and the engine's health — no WebGPU here, or a GPU or worker that failed.
//! The engine's owner writes them as it loads; the debug tools may mark the engine failed.

use crate::engine::Backend;
use crate::model::ModelConfig;
use crate::models::BuiltinModel;
use crate::protocol::Facts;
use crate::tokenizer::Tokenizer;
use crate::ui::engine::Thread;
use crate::ui::loader::Progress;
use leptos::prelude::*;
use std::rc::Rc;

/// What the page shows about the loaded model (plain data, for signals): what the file says,
/// and what the engine says of itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    /// The built-in model it is; `None` for a file the person dropped or picked.
    pub builtin: Option<&'static BuiltinModel>,
    pub cfg: ModelConfig,
    /// Parameters (elements of every tensor in the file).
    pub params: u64,
    pub sha256: String,
    pub has_chat: bool,
    /// The engine's facts: its backend and why, the device, the KV capacity, decoding ahead.
    pub facts: Facts,
    /// Whether the engine runs in a Web Worker, and why where it does not.
    pub thread: Thread,
}

impl ModelInfo {
    pub fn backend(&self) -> Backend {
        self.facts.backend
    }

    /// The page's name for what runs the model, as `backend=` names it: `gpu`, or `cpu` for
    /// either CPU engine.
    pub fn engine_name(&self) -> &'static str {
        match self.backend().is_cpu() {
            true => "cpu",
            false => "gpu",
        }
    }
}

/// How many of the model's layers attend to a sliding window (Gemma 3's local layers; none for
/// llama).
pub fn local_layers(cfg: &ModelConfig) -> usize {
    (0..cfg.n_layers).filter(|&l| cfg.is_local(l)).count()
}

/// The loaded model, as `Copy` handles.
#[derive(Clone, Copy)]
pub struct LoadedModel {
    /// `None` until a model has loaded; a failed load keeps the model before it.
    pub info: RwSignal<Option<ModelInfo>>,
    pub tokenizer: StoredValue<Option<Rc<Tokenizer>>, LocalStorage>,
    pub progress: RwSignal<Option<Progress>>,
    /// The file the model menu is on (its name) instead of a built-in model: set as a file's
    /// load starts, and back to what it was if that load fails; `None` as a built-in model's
    /// load starts.
    pub file: RwSignal<Option<String>>,
    /// Why WebGPU cannot be used, when the GPU was asked for and it cannot.
    pub no_webgpu: RwSignal<Option<String>>,
    /// The GPU or the engine's worker failed (e.g. device lost): offer to load the engine again.
    pub failed: RwSignal<bool>,
    /// Each layer's G in the engine (`[layers]`), as the engine's owner last brought it to the
    /// settings: what the diagram and the meter show in KV budget mode.
    pub layer_groups: RwSignal<Vec<usize>>,
}

impl LoadedModel {
    pub fn new() -> Self {
        LoadedModel {
            info: RwSignal::new(None),
            tokenizer: StoredValue::new_local(None),
            progress: RwSignal::new(None),
            file: RwSignal::new(None),
            no_webgpu: RwSignal::new(None),
            failed: RwSignal::new(false),
            layer_groups: RwSignal::new(Vec::new()),
        }
    }

    /// Whether a model is loaded (tracked).
    pub fn is_loaded(&self) -> bool {
        self.info.with(Option::is_some)
    }

    /// A figure of the loaded model's config, or `none` before one loads (tracked).
    pub fn cfg_or<T>(&self, none: T, f: impl FnOnce(&ModelConfig) -> T) -> T {
        self.info.with(|i| i.as_ref().map_or(none, |i| f(&i.cfg)))
    }

    /// The backend the loaded model runs on (`None` before one loads; tracked).
    pub fn backend(&self) -> Option<Backend> {
        self.info.with(|i| i.as_ref().map(ModelInfo::backend))
    }

    /// The loaded tokenizer's text of `id` (special tokens as their text; empty before a model
    /// loads).
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.with_value(|t| {
            t.as_ref()
                .map(|t| String::from_utf8_lossy(&t.token_bytes(id, true)).into_owned())
                .unwrap_or_default()
        })
    }
}
