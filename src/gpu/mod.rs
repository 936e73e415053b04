//! The GPU engine: the model in WGSL compute shaders through wgpu (WebGPU in the browser,
//! Vulkan natively — lavapipe on machines without a GPU). The only module that touches wgpu.
//!
//! Weights stay quantized on the GPU (GGUF blocks as they are, in textures, dequantized in
//! the kernels), activations and the KV cache are f32 (no `shader-f16` needed). Decode uses
//! matrix-vector kernels that read the activation vector as a uniform; prefill uses a tiled
//! matrix product. One forward is one submit; a greedy decode step reads back only the
//! sampled token id. Regrouping maps the projected K/V of the native heads to the G heads
//! (and, for a calibrated merge, q and each head's output: kv_store.wgsl,
//! attention_reduce.wgsl), so changing G re-uploads no weights: it replaces the KV cache and
//! the regrouping maps.

mod context;
mod engine;
pub mod kernels;
pub mod layout;
pub mod ops;
mod weight;

pub use context::{Buf, Gpu, Tex, UNIFORM_WINDOW};
pub use engine::{GpuEngine, PREFILL_CHUNK};
pub use weight::{Stack, Weight};

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum GpuError {
    #[error("no GPU adapter: {0} (in a browser: WebGPU needs Chrome/Edge 113+ or another browser with WebGPU enabled; natively: a Vulkan driver, e.g. mesa-vulkan-drivers)")]
    NoAdapter(String),
    #[error("the GPU refused a device: {0}")]
    NoDevice(String),
    #[error("{what} needs {bytes} bytes, past this GPU's limit of {limit}")]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error("the GPU ran out of memory: {0}")]
    OutOfMemory(String),
    #[error("the GPU device was lost ({0}); reload the engine")]
    DeviceLost(String),
    #[error("unsupported by the GPU engine: {0}")]
    Unsupported(String),
    #[error("GPU error: {0}")]
    Internal(String),
}

impl From<GpuError> for crate::engine::EngineError {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::DeviceLost(why) => crate::engine::EngineError::DeviceLost(why),
            other => crate::engine::EngineError::Gpu(other.to_string()),
        }
    }
}
