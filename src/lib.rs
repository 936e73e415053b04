//! gqa-lab: a real grouped-query-attention language model, run on the CPU (the oracle) or on
//! the GPU through WGSL compute shaders, with its KV-head grouping G changeable at run time.
//!
//! Data flows one way (see ARCHITECTURE.md): GGUF bytes → [`gguf`] (parse, no copies) →
//! [`model`] (config, tensors, regrouping, cache arithmetic) → [`cpu`] or the GPU engine →
//! [`engine`] (generation, perplexity) → tokens → the UI. [`tokenizer`] turns text into ids
//! and back; [`calibration`] fits a calibrated regrouping by walking an engine through the
//! layers. A module never reaches back up this line.

pub mod calibration;
pub mod cpu;
pub mod engine;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod protocol;
pub mod sampling;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod ui;

/// Where the set-up puts the default model, relative to the repository root.
pub const DEFAULT_MODEL_PATH: &str = "static/models/SmolLM2-135M-Instruct.Q4_1.gguf";
