//! Perplexity on any engine, written once: every token after the first, given its prefix.

use super::{Engine, EngineError};
use crate::regroup::Method;
use serde::Serialize;

/// Perplexity of a token sequence: every token after the first, given its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Perplexity {
    /// Tokens predicted (`ids.len() − 1`).
    pub tokens: usize,
    /// Mean negative log-likelihood, natural log.
    pub nll: f64,
    /// The standard error of `nll`: the per-token NLLs' standard deviation over √tokens (the
    /// tokens taken as independent draws; neighbours are not, so it is a lower bound).
    pub nll_std_error: f64,
    pub perplexity: f64,
    pub groups: usize,
    /// How the grouping was made (mean-pooling, or the calibrated merge).
    pub method: Method,
}

/// Runs `ids` through the engine from an empty cache and scores each next token.
pub async fn perplexity<E: Engine + ?Sized>(
    engine: &mut E,
    ids: &[u32],
) -> Result<Perplexity, EngineError> {
    if ids.len() < 2 {
        return Err(EngineError::EmptyInput);
    }
    engine.reset();
    let logits = engine.forward(&ids[..ids.len() - 1], true).await?; // [t-1][vocab]
    let vocab = engine.config().vocab_size;
    if let Some(p) = first_non_finite_row(&logits, vocab) {
        return Err(EngineError::NonFinite(format!(
            "in the logits at position {p}"
        )));
    }
    let nlls: Vec<f64> = logits
        .chunks_exact(vocab)
        .zip(&ids[1..])
        .map(|(row, &next)| -log_softmax_at(row, next as usize))
        .collect();
    let tokens = nlls.len();
    let nll = nlls.iter().sum::<f64>() / tokens as f64;
    Ok(Perplexity {
        tokens,
        nll,
        nll_std_error: std_error(&nlls, nll),
        perplexity: nll.exp(),
        groups: engine.grouping().groups(),
        method: engine.regrouping().method,
    })
}

/// The standard error of the mean `mean` of `x`: the sample standard deviation over √n (0 for
/// fewer than two values).
pub fn std_error(x: &[f64], mean: f64) -> f64 {
    let n = x.len() as f64;
    if x.len() < 2 {
        return 0.0;
    }
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (var / n).sqrt()
}

/// The first row of `x` (rows of `width` values) that holds a NaN or an infinity.
pub fn first_non_finite_row(x: &[f32], width: usize) -> Option<usize> {
    x.chunks(width.max(1))
        .position(|row| !row.iter().all(|v| v.is_finite()))
}

/// `log softmax(row)[i]`, in f64.
pub fn log_softmax_at(row: &[f32], i: usize) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row[i] as f64 - lse
}
