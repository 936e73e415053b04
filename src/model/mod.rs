//! The model as the engines see it: hyper-parameters read from GGUF metadata ([`ModelConfig`]),
//! where each weight lives ([`ModelTensors`]), KV-head grouping and checkpoint regrouping
//! ([`Grouping`]: every G from 1 to H), regrouping as maps around attention ([`Regrouping`]:
//! the GQA paper's mean-pooling, or the calibrated merge fitted in [`calibrate`]), KV-cache
//! arithmetic ([`kv_cache`]: the engines' figures and the page's calculator) and the RoPE angles ([`rope_turns`]).
//!
//! Pure: no GPU, no DOM. The architecture is llama (Touvron et al. 2023, "LLaMA"), with
//! grouped-query attention as in Ainslie et al. 2023, "GQA: Training Generalized Multi-Query
//! Transformer Models from Multi-Head Checkpoints" (arXiv:2305.13245).

pub mod calibrate;
mod config;
mod grouping;
pub mod kv_cache;
pub mod orefit;
pub mod regroup;
mod rope;
mod tensors;

pub use calibrate::{FitError, LayerStats};
pub use config::ModelConfig;
pub use grouping::{pooling_matrix, pooling_plan, valid_groups, Grouping};
pub use kv_cache::{kv_cache_bytes, CacheShape, ElementType, Hyper, KV_BYTES_PER_ELEMENT};
pub use orefit::{OutputFit, OutputStats};
pub use regroup::{LayerMaps, Method, Regrouping, VMap};
pub use rope::{rope_table, rope_turns};
pub use tensors::{LayerTensors, ModelTensors};

use crate::gguf::GgufError;
use thiserror::Error;

/// Errors of the model boundary: a file that parses as GGUF but is not a model we can run.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("unsupported architecture {0:?}: gqa-lab runs llama-architecture models")]
    NotLlama(String),
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

/// Deterministic pseudo-random numbers in [-1, 1), for the unit tests of the fits.
#[cfg(test)]
fn test_rng(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}
