//! A KV budget between the integer G's: B KV heads per layer on average (1 to H, in steps of
//! 1/layers), spent where it matters most. Each layer's sensitivity is measured first (the
//! rise of the calibration loss when that layer alone is merged to G, every other layer
//! native: `crate::engine::budget`), then [`allocate`] spends the heads greedily: every layer
//! starts at G = 1 and the next heads go where the loss drops most per head, until the layers
//! hold `round(B · layers)` heads in all.
//!
//! The loss rises are taken as additive over layers (each is measured with the other layers
//! native); a G ≥ G0 splits native groups and is exact, so its rise is 0 and heads past G0 in
//! a layer buy nothing but bytes (they are spent last, spread evenly).

use super::Regrouping;
use crate::model::{ModelConfig, ModelError};

/// Why a budget cannot be spent.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    #[error("a KV budget of {budget} heads per layer is outside 1 to {n_heads}")]
    OutOfRange { budget: f64, n_heads: usize },
    #[error("the sensitivities cover {got} layers of {layers}, or lack a G below {native}")]
    BadTable {
        got: usize,
        layers: usize,
        native: usize,
    },
}

/// Each layer's measured sensitivity: `rise[l][g - 1]` is the calibration loss (mean NLL,
/// nats) with layer l alone at g KV heads minus the native model's, for g = 1 .. G0 − 1.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sensitivity {
    /// `[layers][G0 − 1]`.
    pub rise: Vec<Vec<f64>>,
    /// The native model's loss on the same tokens.
    pub native_nll: f64,
    /// Calibration tokens scored per configuration.
    pub tokens: usize,
}

impl Sensitivity {
    /// The rise of layer `l` at `g` heads (0 from G0 on: a split is exact).
    pub fn at(&self, l: usize, g: usize) -> f64 {
        match g.checked_sub(1).and_then(|i| self.rise.get(l)?.get(i)) {
            Some(&r) if r.is_finite() => r,
            Some(_) => f64::MAX / 4.0,
            None => 0.0,
        }
    }

    /// The summed rise of an allocation (`[layers]` G's): the loss it is predicted to add.
    pub fn predicted(&self, groups: &[usize]) -> f64 {
        groups.iter().enumerate().map(|(l, &g)| self.at(l, g)).sum()
    }
}

/// KV heads in all layers for a budget of `budget` heads per layer on average: `round(B ·
/// layers)`, which must lie between `layers` (G = 1 everywhere) and `H · layers`.
pub fn budget_heads(cfg: &ModelConfig, budget: f64) -> Result<usize, BudgetError> {
    let out = BudgetError::OutOfRange {
        budget,
        n_heads: cfg.n_heads,
    };
    if !budget.is_finite() {
        return Err(out);
    }
    let total = (budget * cfg.n_layers as f64).round();
    let (lo, hi) = (cfg.n_layers as f64, (cfg.n_heads * cfg.n_layers) as f64);
    match (lo..=hi).contains(&total) {
        true => Ok(total as usize),
        false => Err(out),
    }
}

/// Each layer's G (`[layers]`) for `total` heads in all: greedy from G = 1 everywhere; each
/// step raises one layer to whichever higher G (within what is left) drops the loss most per
/// head added, so that a layer whose first head buys little but whose second buys much is
/// still seen. Ties go to the layer with fewer heads, then the earlier layer.
pub fn allocate(
    s: &Sensitivity,
    cfg: &ModelConfig,
    total: usize,
) -> Result<Vec<usize>, BudgetError> {
    let (layers, h, g0) = (cfg.n_layers, cfg.n_heads, cfg.n_kv_heads);
    if s.rise.len() != layers || s.rise.iter().any(|r| r.len() + 1 < g0) {
        return Err(BudgetError::BadTable {
            got: s.rise.len(),
            layers,
            native: g0,
        });
    }
    if total < layers || total > h * layers {
        return Err(BudgetError::OutOfRange {
            budget: total as f64 / layers as f64,
            n_heads: h,
        });
    }
    let mut groups = vec![1usize; layers];
    let mut left = total - layers;
    while left > 0 {
        // (gain per head, step, current G, layer): the best raise.
        let mut best: Option<(f64, usize, usize, usize)> = None;
        for (l, &g) in groups.iter().enumerate() {
            for to in g + 1..=(g + left).min(h) {
                let step = to - g;
                let gain = (s.at(l, g) - s.at(l, to)) / step as f64;
                let better = match best {
                    None => true,
                    Some((bg, bs, bcur, _)) => gain > bg || (gain == bg && (step, g) < (bs, bcur)),
                };
                if better {
                    best = Some((gain, step, g, l));
                }
            }
        }
        let Some((_, step, _, l)) = best else { break };
        groups[l] += step;
        left -= step;
    }
    Ok(groups)
}

/// The regrouping that spends `total` heads as [`allocate`] says: layer l at its G, its maps
/// from `merged[G − 1]` (uniform regroupings at G = 1 .. G0 − 1, mean-pooled or calibrated;
/// a G ≥ G0 is the exact split).
pub fn spend(
    s: &Sensitivity,
    cfg: &ModelConfig,
    merged: &[&Regrouping],
    total: usize,
) -> Result<Regrouping, ModelError> {
    let bad = |e: BudgetError| ModelError::BadConfig(e.to_string());
    let groups = allocate(s, cfg, total).map_err(bad)?;
    let splits: Vec<Regrouping> = (cfg.n_kv_heads..=cfg.n_heads)
        .map(|g| super::Grouping::of(cfg, g).map(|gr| Regrouping::mean(cfg, gr)))
        .collect::<Result<_, _>>()?;
    let sources = groups
        .iter()
        .map(|&g| match g < cfg.n_kv_heads {
            true => merged.get(g - 1).copied(),
            false => splits.get(g - cfg.n_kv_heads),
        })
        .collect::<Option<Vec<&Regrouping>>>();
    let sources = sources.ok_or_else(|| {
        bad(BudgetError::BadTable {
            got: merged.len(),
            layers: cfg.n_layers,
            native: cfg.n_kv_heads,
        })
    })?;
    Regrouping::pick_layers(cfg, &sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(layers: usize) -> ModelConfig {
        ModelConfig {
            n_layers: layers,
            ..ModelConfig::smollm2_135m()
        }
    }

    fn table(rise: &[[f64; 2]]) -> Sensitivity {
        Sensitivity {
            rise: rise.iter().map(|r| r.to_vec()).collect(),
            native_nll: 2.0,
            tokens: 512,
        }
    }

    #[test]
    fn budgets_are_whole_heads_in_steps_of_one_per_layer() {
        let c = cfg(30);
        assert_eq!(budget_heads(&c, 1.5), Ok(45));
        assert_eq!(budget_heads(&c, 2.0), Ok(60));
        assert_eq!(budget_heads(&c, 1.0 + 1.0 / 30.0), Ok(31));
        assert_eq!(budget_heads(&c, 9.0), Ok(270));
        for bad in [0.9, 9.1, f64::NAN] {
            assert!(budget_heads(&c, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn heads_go_where_the_loss_drops_most() {
        let c = cfg(4);
        // Layer 0 cares a lot, layer 3 not at all.
        let s = table(&[[2.0, 1.0], [0.5, 0.1], [0.2, 0.15], [0.0, 0.0]]);
        assert_eq!(allocate(&s, &c, 4).unwrap(), [1, 1, 1, 1]);
        assert_eq!(allocate(&s, &c, 5).unwrap(), [2, 1, 1, 1], "drop 1.0");
        assert_eq!(allocate(&s, &c, 6).unwrap(), [3, 1, 1, 1], "then 1.0 again");
        assert_eq!(allocate(&s, &c, 7).unwrap(), [3, 2, 1, 1], "then 0.4");
        assert_eq!(allocate(&s, &c, 8).unwrap(), [3, 3, 1, 1], "then 0.1");
        // Past the drops: the heads spread, fewest first, without loss.
        let full = allocate(&s, &c, 12).unwrap();
        assert_eq!(full, [3, 3, 3, 3]);
        assert_eq!(allocate(&s, &c, 14).unwrap(), [4, 4, 3, 3]);
        assert_eq!(allocate(&s, &c, 36).unwrap(), [9; 4]);
        for total in 4..=36 {
            let a = allocate(&s, &c, total).unwrap();
            assert_eq!(a.iter().sum::<usize>(), total);
            assert!(a.iter().all(|&g| (1..=9).contains(&g)));
        }
        assert!(allocate(&s, &c, 3).is_err() && allocate(&s, &c, 37).is_err());
        // Spent: each layer's maps from the uniform regrouping at its G.
        let merged: Vec<Regrouping> = (1..3)
            .map(|g| Regrouping::mean(&c, crate::regroup::Grouping::of(&c, g).unwrap()))
            .collect();
        let r = spend(&s, &c, &[&merged[0], &merged[1]], 7).unwrap();
        assert_eq!(r.layer_groups(), [3, 2, 1, 1]);
        assert_eq!(r, Regrouping::mean_counts(&c, &[3, 2, 1, 1]).unwrap());
        assert!(
            spend(&s, &c, &[&merged[0]], 7).is_err(),
            "no maps for G = 2"
        );
    }

    #[test]
    fn a_layer_whose_second_head_matters_is_seen() {
        let c = cfg(2);
        // Layer 0: G = 2 barely helps but G = 3 removes the whole rise (0.9 per head over two).
        // Layer 1: one head drops 0.5. One head at a time would pick layer 1 first.
        let s = table(&[[1.8, 1.79], [0.5, 0.0]]);
        assert_eq!(allocate(&s, &c, 4).unwrap(), [3, 1]);
        assert!(s.predicted(&[3, 1]) < s.predicted(&[2, 2]));
    }

    /// At the budget of a uniform G, the greedy allocation is never predicted worse than it.
    #[test]
    fn never_worse_than_uniform_by_its_own_measure() {
        let c = cfg(6);
        let mut next = crate::regroup::test_rng(7);
        for _ in 0..50 {
            let rise: Vec<[f64; 2]> = (0..6)
                .map(|_| {
                    let (a, b) = (next().abs() as f64, next().abs() as f64);
                    [a.max(b), a.min(b)]
                })
                .collect();
            let s = table(&rise);
            for g in 1..=3 {
                let a = allocate(&s, &c, 6 * g).unwrap();
                assert!(s.predicted(&a) <= s.predicted(&[g; 6]) + 1e-12, "{a:?}");
            }
        }
    }
}
