//! The errors of the engine boundary: everything an engine, or a driver of one, can fail with.

use crate::model::ModelError;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum EngineError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("nothing to run: the input has no tokens")]
    EmptyInput,
    #[error("token id {id} is outside the vocabulary (size {vocab})")]
    TokenOutOfRange { id: u32, vocab: usize },
    #[error("the sequence needs {needed} positions but the KV cache holds {capacity}")]
    ContextFull { needed: usize, capacity: usize },
    #[error("a KV cache of {capacity} positions is not possible: the model's context is 1..={context_length}")]
    BadCapacity {
        capacity: usize,
        context_length: usize,
    },
    #[error("invalid sampling parameters: {0}")]
    BadSampling(String),
    #[error("the prompt has {prompt} tokens and {max_tokens} more were asked for, past the context of {capacity}")]
    PromptTooLong {
        prompt: usize,
        max_tokens: usize,
        capacity: usize,
    },
    #[error("GPU: {0}")]
    Gpu(String),
    #[error("the GPU device was lost ({0}); reload the engine")]
    DeviceLost(String),
    /// NaN or infinity where the model should have produced numbers: damaged weights, or
    /// values past f32's range. Says where it was seen first.
    #[error(
        "the model produced non-finite values (NaN or infinity) {0}: its weights may be damaged"
    )]
    NonFinite(String),
    /// A calibrated merge could not be fitted (too few tokens, a singular system).
    #[error("calibration: {0}")]
    Calibration(String),
    /// An error the engine's Web Worker met, as its text (`crate::protocol`).
    #[error("{0}")]
    Relayed(String),
    /// The engine's Web Worker stopped (a crash, memory exhausted): the engine is gone.
    #[error("the engine's worker stopped ({0}); reload the engine")]
    WorkerLost(String),
}
