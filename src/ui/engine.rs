//! The page's engine: the GPU engine on WebGPU, or the `cpu-q8` engine compiled to
//! WebAssembly (GGUF blocks × int8 activations, SIMD128 where the build enables it; one
//! thread) for a browser without WebGPU or with only a software adapter. One enum, with the
//! GPU engine's async methods under the same names, so that generation, regrouping,
//! calibration, the quality measurement and the views drive either.

use crate::calibration::LayerWalk;
use crate::cpu::CpuEngine;
use crate::engine::{AttentionWeights, Engine, EngineError, Generator};
use crate::gpu::GpuEngine;
use crate::model::{Grouping, LayerMaps, ModelConfig, Regrouping};
use std::sync::Arc;

/// Which backend the page asks for (`?backend=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// WebGPU on a hardware adapter; the CPU without WebGPU or on a software adapter.
    #[default]
    Auto,
    Gpu,
    Cpu,
}

impl BackendChoice {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "gpu" => Some(Self::Gpu),
            "cpu" => Some(Self::Cpu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Gpu => "gpu",
            Self::Cpu => "cpu",
        }
    }
}

/// One engine per loaded model (boxed: the two differ much in size).
pub enum PageEngine {
    Gpu(Box<GpuEngine>),
    Cpu(Box<CpuEngine>),
}

use PageEngine::{Cpu, Gpu};

impl PageEngine {
    pub fn is_cpu(&self) -> bool {
        matches!(self, Cpu(_))
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

    pub fn grouping(&self) -> Grouping {
        self.regrouping().grouping
    }

    pub fn regrouping(&self) -> Arc<Regrouping> {
        match self {
            Gpu(e) => e.regrouping(),
            Cpu(e) => Engine::regrouping(&**e),
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

    pub fn set_attention_probe(&mut self, layer: Option<usize>) -> Result<(), EngineError> {
        match self {
            Gpu(e) => e.set_attention_probe(layer),
            Cpu(e) => Engine::set_attention_probe(&mut **e, layer),
        }
    }

    pub fn attention_probe(&self) -> Option<usize> {
        match self {
            Gpu(e) => e.attention_probe(),
            Cpu(e) => Engine::attention_probe(&**e),
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
impl LayerWalk for PageEngine {
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
