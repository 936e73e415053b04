//! A score-level refit of a calibrated merge's q maps: one temperature per query head.
//!
//! The merged keys keep most, not all, of what the native keys carried (`fit.rs` keeps the
//! strongest hd/2 components), so a merged head's scores `q'·k'` are the native scores
//! `q·k` shrunk and blurred, and its softmax is flatter than it was. Per query head h the
//! temperature `τ_h` that best brings the merged scores back to the native ones, where the
//! native attention looks, is the weighted least-squares slope
//!
//! ```text
//! τ_h = Σ p s̃ s̃' / Σ p s̃'²,   s̃ = s − Σ p s,  s̃' = s' − Σ p s'
//! ```
//!
//! over query positions and the keys each sees, p the native attention weights, s and s' the
//! native and merged scores (centred per query: a softmax does not see a shift). It scales the
//! head's q map, so it costs nothing at run time. The statistics are gathered on every
//! [`STRIDE`]-th query position of each calibration sequence.

use super::layer::Projections;
use super::{Grouping, LayerMaps};
use crate::model::{rope_turns, ModelConfig};
use crate::ops;

/// Every how many query positions the scores are compared.
pub const STRIDE: usize = 8;

/// The temperatures a head may take: past them the fit is not a temperature but a failure.
const RANGE: std::ops::RangeInclusive<f64> = 0.25..=4.0;

/// The slope statistics of every query head: `Σ p s̃ s̃'` and `Σ p s̃'²`.
pub struct ScoreStats {
    num: Vec<f64>,
    den: Vec<f64>,
}

impl ScoreStats {
    pub fn new(n_heads: usize) -> Self {
        ScoreStats {
            num: vec![0.0; n_heads],
            den: vec![0.0; n_heads],
        }
    }

    /// Adds one sequence: its native projections (before RoPE), scored natively and through
    /// `maps` at `grouping`.
    pub fn add(
        &mut self,
        cfg: &ModelConfig,
        (grouping, maps): (Grouping, &LayerMaps),
        [q, k0, _]: &Projections,
    ) {
        let (hd, n_heads) = (cfg.head_dim, cfg.n_heads);
        let native = Grouping::native(cfg);
        let (mut qn, mut kn) = (q.clone(), k0.clone());
        let mut qm = q.clone();
        maps.map_q(&mut qm, grouping, hd);
        let mut km = maps.map_k(k0, grouping, hd);
        let plain = LayerMaps::pooled(native, hd);
        let t = q.len() / (n_heads * hd);
        let (g0, groups) = (native.groups(), grouping.groups());
        let (q_native, q_merged) = (native.kv_heads(), grouping.kv_heads());
        let (k_native, k_merged): (Vec<usize>, Vec<usize>) =
            ((0..g0).collect(), (0..groups).collect());
        for i in 0..t {
            let turns = rope_turns(i, hd, cfg.rope_base);
            let rows = |heads: usize| i * heads * hd..(i + 1) * heads * hd;
            plain.rotate(&mut qn[rows(n_heads)], &turns, &q_native);
            maps.rotate(&mut qm[rows(n_heads)], &turns, &q_merged);
            plain.rotate(&mut kn[rows(g0)], &turns, &k_native);
            maps.rotate(&mut km[rows(groups)], &turns, &k_merged);
        }
        let scale = 1.0 / (hd as f32).sqrt();
        for h in 0..n_heads {
            let (j, g) = (native.kv_head(h), grouping.kv_head(h));
            for i in (0..t).step_by(STRIDE) {
                let (qni, qmi) = (head(&qn, n_heads, h, i, hd), head(&qm, n_heads, h, i, hd));
                let s: Vec<f32> = (0..=i)
                    .map(|p| ops::dot(qni, head(&kn, g0, j, p, hd)) * scale)
                    .collect();
                let sm: Vec<f32> = (0..=i)
                    .map(|p| ops::dot(qmi, head(&km, groups, g, p, hd)) * scale)
                    .collect();
                let (num, den) = slope_terms(&s, &sm);
                self.num[h] += num;
                self.den[h] += den;
            }
        }
    }

    /// Each query head's temperature, within [`RANGE`] (1 where nothing was seen).
    pub fn temperatures(&self) -> Vec<f32> {
        self.num
            .iter()
            .zip(&self.den)
            .map(|(&n, &d)| match d > 0.0 {
                true => (n / d).clamp(*RANGE.start(), *RANGE.end()) as f32,
                false => 1.0,
            })
            .collect()
    }
}

/// Head `head` of position `p` in rows of `heads` heads of `hd` values.
fn head(x: &[f32], heads: usize, head: usize, p: usize, hd: usize) -> &[f32] {
    &x[(p * heads + head) * hd..][..hd]
}

/// One query's `Σ p s̃ s̃'` and `Σ p s̃'²`, p the softmax of the native scores `s`.
fn slope_terms(s: &[f32], sm: &[f32]) -> (f64, f64) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = s.iter().map(|&x| f64::from(x - max).exp()).collect();
    let z: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|x| x / z).collect();
    let mean = |x: &[f32]| -> f64 { p.iter().zip(x).map(|(p, &v)| p * f64::from(v)).sum() };
    let (ms, mm) = (mean(s), mean(sm));
    let mut out = (0.0, 0.0);
    for ((p, &a), &b) in p.iter().zip(s).zip(sm) {
        let (a, b) = (f64::from(a) - ms, f64::from(b) - mm);
        out.0 += p * a * b;
        out.1 += p * b * b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::slope_terms;

    /// Merged scores that are the native ones shrunk by 2 and shifted: the slope is 2.
    #[test]
    fn the_slope_undoes_a_shrink_and_ignores_a_shift() {
        let s = [0.5f32, -1.0, 2.0, 0.25, 1.5];
        let sm: Vec<f32> = s.iter().map(|x| x / 2.0 + 3.0).collect();
        let (num, den) = slope_terms(&s, &sm);
        assert!((num / den - 2.0).abs() < 1e-6, "{}", num / den);
    }
}
