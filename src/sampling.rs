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

/// The `k` most likely tokens and their probabilities (softmax of all the logits), most likely
/// first; the lower id first on a tie, as in [`argmax`].
pub fn top_probabilities(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    let k = k.min(ids.len());
    if k > 0 && k < ids.len() {
        ids.select_nth_unstable_by(k - 1, |a, b| by_logit(a, b).then(a.cmp(b)));
    }
    ids.truncate(k);
    ids.sort_by(|a, b| by_logit(a, b).then(a.cmp(b)));
    ids.into_iter()
        .map(|id| {
            let p = f64::from(logits[id as usize] - max).exp() / sum;
            (id, p as f32)
        })
        .collect()
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

/// A u32 whose order is the order of the f32 `x` (for threshold searches over keys).
pub fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 0 {
        b | 0x8000_0000
    } else {
        !b
    }
}

/// The largest key `k` for which `measure(k)` (non-increasing in `k`) is still ≥ `target`,
/// found bit by bit from the top: 32 evaluations, the same search the GPU kernel runs.
fn largest_key(target: f32, measure: impl Fn(u32) -> f32) -> u32 {
    let mut k = 0u32;
    for bit in (0..32).rev() {
        let cand = k | (1 << bit);
        if measure(cand) >= target {
            k = cand;
        }
    }
    k
}

/// Samples a token at generation step `step` (sample.wgsl is its GPU twin).
///
/// Greedy when the temperature is 0. Otherwise, with `w_i = exp((l_i − max) / T)`:
/// top-k keeps the tokens whose logit is at least the k-th largest (ties kept); top-p then
/// keeps those whose logit is at least the largest threshold whose kept mass still reaches
/// `top_p` of the total; the token is the first, in id order, where the running sum of kept
/// weights passes `uniform(seed, step) · Σ kept`. Thresholds rather than a sort, so the GPU
/// can compute the same thing with reductions.
pub fn sample(logits: &[f32], p: &SamplingParams, step: u32) -> u32 {
    if p.is_greedy() || logits.is_empty() {
        return argmax(logits);
    }
    let keys: Vec<u32> = logits.iter().map(|&l| order_key(l)).collect();
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let k_min = if p.top_k > 0 && p.top_k < logits.len() {
        largest_key(p.top_k as f32, |c| {
            keys.iter().filter(|&&k| k >= c).count() as f32
        })
    } else {
        0
    };
    let w: Vec<f32> = logits
        .iter()
        .zip(&keys)
        .map(|(&l, &k)| {
            if k >= k_min {
                ((l - max) / p.temperature).exp()
            } else {
                0.0
            }
        })
        .collect();
    let mass = |c: u32| -> f32 {
        w.iter()
            .zip(&keys)
            .filter(|(_, &k)| k >= c)
            .map(|(x, _)| x)
            .sum()
    };
    let cut = if p.top_p < 1.0 {
        largest_key(p.top_p * mass(0), mass)
    } else {
        k_min
    };
    let kept = |i: usize| keys[i] >= cut && w[i] > 0.0;
    let total: f32 = (0..w.len()).filter(|&i| kept(i)).map(|i| w[i]).sum();
    let r = uniform(p.seed, step) * total;
    let mut cum = 0.0;
    let mut last = argmax(logits);
    for i in (0..w.len()).filter(|&i| kept(i)) {
        cum += w[i];
        last = i as u32;
        if r < cum {
            return i as u32;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_probabilities_are_the_softmax_of_the_largest_logits() {
        let logits = [0.0f32, 2.0, 1.0, 2.0, -1.0];
        let top = top_probabilities(&logits, 3);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 2], "ties: the lower id first, as argmax");
        assert_eq!(top[0].0, argmax(&logits));
        let z: f32 = logits.iter().map(|l| l.exp()).sum();
        for (id, p) in top {
            assert!((p - logits[id as usize].exp() / z).abs() < 1e-6);
        }
        assert_eq!(top_probabilities(&logits, 9).len(), 5);
        assert!(top_probabilities(&logits, 0).is_empty());
    }

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
    fn order_key_keeps_the_order_of_floats() {
        let xs = [-3.5f32, -0.0, 0.0, 1e-30, 2.0, 7.25];
        for w in xs.windows(2) {
            assert!(order_key(w[0]) <= order_key(w[1]), "{w:?}");
        }
    }

    #[test]
    fn top_k_keeps_ties_at_the_threshold() {
        let logits = [1.0, 3.0, 3.0, 0.0];
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 3,
        };
        let seen: std::collections::BTreeSet<u32> =
            (0..200).map(|s| sample(&logits, &p, s)).collect();
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
