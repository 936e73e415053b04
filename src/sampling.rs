//! Token sampling: greedy, temperature, top-k (Fan et al. 2018), top-p (Holtzman et al. 2019),
//! with a counter-based RNG so a given seed always gives the same tokens, on any backend.
//!
//! The RNG is written here rather than taken from `rand` because the GPU engine samples in a
//! WGSL kernel and must draw the very same numbers: `uniform(seed, step)` is a PCG hash of
//! 32-bit integers (Jarzynski & Olano 2020, "Hash Functions for GPU Rendering"), which WGSL
//! can compute bit for bit.

use serde::{Deserialize, Serialize};

/// How to pick the next token from logits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Keep only the k most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches p; 1 keeps all.
    pub top_p: f32,
    pub seed: u32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
        }
    }

    /// Checks the ranges; the message names the offending parameter.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(format!("temperature must be ≥ 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// The id of the largest logit; the lowest id wins a tie.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// PCG-RXS-M-XS 32-bit hash.
pub fn pcg_hash(x: u32) -> u32 {
    let state = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// A uniform number in [0, 1) for sampling step `step` under `seed` (24 random bits).
pub fn uniform(seed: u32, step: u32) -> f32 {
    let h = pcg_hash(seed ^ pcg_hash(step));
    (h >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Samples a token at generation step `step`.
///
/// Candidates are sorted by logit (descending, lower id first on ties), cut to top-k,
/// turned into probabilities `softmax(logit / T)`, cut to the top-p nucleus, and one is
/// chosen where the running sum first exceeds `uniform(seed, step) · total`.
pub fn sample(logits: &[f32], p: &SamplingParams, step: u32) -> u32 {
    if p.is_greedy() || logits.is_empty() {
        return argmax(logits);
    }
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    ids.sort_by(|&a, &b| {
        logits[b as usize]
            .total_cmp(&logits[a as usize])
            .then(a.cmp(&b))
    });
    if p.top_k > 0 {
        ids.truncate(p.top_k);
    }
    let max = logits[ids[0] as usize];
    let mut probs: Vec<f32> = ids
        .iter()
        .map(|&i| ((logits[i as usize] - max) / p.temperature).exp())
        .collect();
    let total: f32 = probs.iter().sum();
    probs.iter_mut().for_each(|q| *q /= total);
    let mut keep = probs.len();
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        keep = probs
            .iter()
            .position(|&q| {
                cum += q;
                cum >= p.top_p
            })
            .map_or(probs.len(), |i| i + 1);
    }
    let total: f32 = probs[..keep].iter().sum();
    let r = uniform(p.seed, step) * total;
    let mut cum = 0.0;
    for (i, &q) in probs[..keep].iter().enumerate() {
        cum += q;
        if r < cum {
            return ids[i];
        }
    }
    ids[keep - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(sample(&[0.0, 2.0, 1.0], &SamplingParams::greedy(), 7), 1);
    }

    #[test]
    fn uniform_is_deterministic_and_spread() {
        assert_eq!(uniform(42, 3), uniform(42, 3));
        assert_ne!(uniform(42, 3), uniform(43, 3));
        let xs: Vec<f32> = (0..10_000).map(|s| uniform(7, s)).collect();
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f32>() / xs.len() as f32;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_cuts_the_tail() {
        let logits = [0.0, 5.0, 4.9, -3.0];
        let k1 = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 1,
        };
        assert!((0..100).all(|s| sample(&logits, &k1, s) == 1));
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.9,
            seed: 1,
        };
        let seen: std::collections::BTreeSet<u32> =
            (0..500).map(|s| sample(&logits, &p, s)).collect();
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        // p = softmax([ln 1, ln 3]) = [0.25, 0.75].
        let logits = [0.0, 3f32.ln()];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 9,
        };
        let ones = (0..20_000).filter(|&s| sample(&logits, &p, s) == 1).count();
        let frac = ones as f32 / 20_000.0;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
    }
}
