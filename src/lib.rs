//! gqa-lab: a real grouped-query-attention language model, run on the CPU (the oracle) or on
//! the GPU through WGSL compute shaders, with its KV-head grouping G changeable at run time.
//!
//! Modules in layers, each using only those above it (see ARCHITECTURE.md): [`gguf`] (parse,
//! no copies) → [`model`] (config, tensors, cache arithmetic) → [`ops`] (f32 arithmetic, the
//! kernels' CPU twins) → [`regroup`] (grouping, maps, their fit and storage) → [`sampling`] →
//! [`engine`] (the contract every backend implements, and generation, perplexity and
//! calibration on it) → [`cpu`] and [`gpu`] (the backends) → [`protocol`] (the page's messages
//! to its engine worker) → the CLI and the UI. [`tokenizer`] turns text into ids and back.

pub mod cpu;
pub mod engine;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod protocol;
pub mod regroup;
pub mod sampling;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod ui;

/// Where the set-up puts the default model, relative to the repository root.
pub const DEFAULT_MODEL_PATH: &str = "static/models/SmolLM2-135M-Instruct.Q4_1.gguf";

/// Where the set-up puts the second built-in model (Gemma 3 270M, Q4_K_M; Gemma terms),
/// relative to the repository root.
pub const GEMMA_MODEL_PATH: &str = "static/models/gemma-3-270m-q4_k_m.gguf";
