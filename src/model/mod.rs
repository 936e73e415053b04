//! The model as the engines see it: hyper-parameters read from GGUF metadata ([`ModelConfig`]),
//! where each weight lives ([`ModelTensors`]), KV-cache arithmetic ([`kv_cache`]: the engines'
//! figures and the page's calculator), the cache's element types ([`KvType`]) and the RoPE angles ([`rope_turns`]). How its KV heads
//! are regrouped is `crate::regroup`'s.
//!
//! Pure: no GPU, no DOM. The architecture is llama (Touvron et al. 2023, "LLaMA") and its
//! variations ([`Arch`]: Gemma 3), with grouped-query attention as in Ainslie et al. 2023,
//! "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints"
//! (arXiv:2305.13245).

mod config;
pub mod kv_cache;
pub mod kv_type;
mod rope;
mod tensors;

pub use config::{Arch, ModelConfig, ARCHITECTURES};
pub use kv_cache::{
    kv_cache_bytes, kv_cache_bytes_layers, layer_cache_rows, CacheShape, ElementType, Hyper,
    WINDOW_SLACK,
};
pub use kv_type::{KvRows, KvType};
pub use rope::{rope_table, rope_turns};
pub use tensors::{rope_rows, LayerTensors, ModelTensors, Tensor};

use crate::gguf::GgufError;
use thiserror::Error;

/// Errors of the model boundary: a file that parses as GGUF but is not a model we can run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture {0:?} (supported: {archs})", archs = config::ARCHITECTURES.join(", "))]
    UnsupportedArch(String),
    #[error("invalid hyper-parameters: {0}")]
    BadConfig(String),
    #[error(
        "G = {groups} is not a number of KV heads for {n_heads} query heads: G is 1..={n_heads}"
    )]
    BadGroups { groups: usize, n_heads: usize },
    #[error("tensor {0:?} is missing")]
    MissingTensor(String),
    #[error("tensor {name:?} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        name: String,
        found: Vec<u64>,
        expected: Vec<u64>,
    },
}
