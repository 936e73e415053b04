//! KV-head grouping and checkpoint regrouping (GQA paper, §2.1 "Uptraining": a multi-head
//! checkpoint becomes a grouped one by mean-pooling the K and V heads of each group).
//!
//! H query heads share G KV heads, `n_rep = H / G` query heads per KV head, and query head
//! `h` reads KV head `h / n_rep`. Regrouping a checkpoint whose native grouping is `G0` to any
//! `G` dividing H: the new KV head `g` serves query heads `g·n_rep .. (g+1)·n_rep`, and its K
//! (and V) projection is the mean, over those query heads, of the native KV head each used.
//! The same plan applies to projected K/V, since the projection and RoPE are linear.

use super::{ModelConfig, ModelError};
use std::ops::Range;

/// Every G that divides `n_heads`, ascending.
pub fn valid_groups(n_heads: usize) -> Vec<usize> {
    (1..=n_heads)
        .filter(|g| n_heads.is_multiple_of(*g))
        .collect()
}

/// How H query heads share G KV heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    n_heads: usize,
    groups: usize,
}

impl Grouping {
    pub fn new(n_heads: usize, groups: usize) -> Result<Self, ModelError> {
        if groups == 0 || !n_heads.is_multiple_of(groups) {
            return Err(ModelError::BadGroups {
                groups,
                n_heads,
                valid: valid_groups(n_heads),
            });
        }
        Ok(Grouping { n_heads, groups })
    }

    /// The checkpoint's own grouping.
    pub fn native(cfg: &ModelConfig) -> Self {
        Grouping {
            n_heads: cfg.n_heads,
            groups: cfg.n_kv_heads,
        }
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// Query heads per KV head.
    pub fn n_rep(&self) -> usize {
        self.n_heads / self.groups
    }

    /// The KV head that query head `h` reads.
    pub fn kv_head(&self, h: usize) -> usize {
        h / self.n_rep()
    }

    /// The query heads that KV head `g` serves.
    pub fn members(&self, g: usize) -> Range<usize> {
        g * self.n_rep()..(g + 1) * self.n_rep()
    }

    /// Short label: MQA (G = 1), MHA (G = H), GQA-G otherwise.
    pub fn label(&self) -> String {
        match self.groups {
            1 => "MQA".to_string(),
            g if g == self.n_heads => "MHA".to_string(),
            g => format!("GQA-{g}"),
        }
    }
}

/// For each KV head `g` of `target`, the native KV heads it pools and their weights:
/// `new_g = Σ weight · native_k`, weights summing to 1. Pure arithmetic on head indices.
pub fn pooling_plan(native: Grouping, target: Grouping) -> Vec<Vec<(usize, f32)>> {
    (0..target.groups())
        .map(|g| {
            let members = target.members(g);
            let n = members.len() as f32;
            let mut plan: Vec<(usize, f32)> = Vec::new();
            for h in members {
                let k = native.kv_head(h);
                match plan.iter_mut().find(|(j, _)| *j == k) {
                    Some((_, w)) => *w += 1.0 / n,
                    None => plan.push((k, 1.0 / n)),
                }
            }
            plan
        })
        .collect()
}

/// [`pooling_plan`] as a dense `[G][G0]` matrix (what kv_store.wgsl reads).
pub fn pooling_matrix(native: Grouping, target: Grouping) -> Vec<f32> {
    let g0 = native.groups();
    let mut pool = vec![0.0f32; target.groups() * g0];
    for (g, sources) in pooling_plan(native, target).iter().enumerate() {
        for &(j, w) in sources {
            pool[g * g0 + j] = w;
        }
    }
    pool
}

/// KV-cache bytes for one sequence: `2 · layers · G · head_dim · tokens · bytes_per_element`
/// (the 2 is K and V).
pub fn kv_cache_bytes(
    cfg: &ModelConfig,
    groups: usize,
    tokens: usize,
    bytes_per_element: usize,
) -> u64 {
    2 * cfg.n_layers as u64
        * groups as u64
        * cfg.head_dim as u64
        * tokens as u64
        * bytes_per_element as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(h: usize, g: usize) -> Grouping {
        Grouping::new(h, g).unwrap()
    }

    #[test]
    fn divisors_are_the_valid_groups() {
        assert_eq!(valid_groups(9), [1, 3, 9]);
        assert_eq!(valid_groups(12), [1, 2, 3, 4, 6, 12]);
        let e = Grouping::new(9, 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "G = 2 does not divide the 9 query heads; valid G: [1, 3, 9]"
        );
    }

    #[test]
    fn query_head_reads_h_over_n_rep() {
        let gq = g(9, 3);
        assert_eq!(
            (0..9).map(|h| gq.kv_head(h)).collect::<Vec<_>>(),
            [0, 0, 0, 1, 1, 1, 2, 2, 2]
        );
        assert_eq!(g(9, 1).kv_head(8), 0);
        assert_eq!(g(9, 9).kv_head(8), 8);
        assert_eq!(g(9, 3).label(), "GQA-3");
        assert_eq!(g(9, 1).label(), "MQA");
        assert_eq!(g(9, 9).label(), "MHA");
    }

    #[test]
    fn pooling_plans() {
        let native = g(9, 3);
        // Native: identity.
        assert_eq!(
            pooling_plan(native, native),
            vec![vec![(0, 1.0)], vec![(1, 1.0)], vec![(2, 1.0)]]
        );
        // MHA: each query head's own copy of its native head.
        let mha = pooling_plan(native, g(9, 9));
        assert_eq!(mha[4], vec![(1, 1.0)]);
        // MQA: the plain mean of the three native heads.
        let mqa = pooling_plan(native, g(9, 1));
        assert_eq!(mqa.len(), 1);
        assert_eq!(mqa[0].iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(mqa[0].iter().all(|p| (p.1 - 1.0 / 3.0).abs() < 1e-6));
        // Uneven overlap: 15 heads, native 5 (n_rep 3), target 3 (n_rep 5): head 0 pools 3:2.
        let odd = pooling_plan(g(15, 5), g(15, 3));
        assert_eq!(odd[0].iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1]);
        assert!((odd[0][0].1 - 0.6).abs() < 1e-6 && (odd[0][1].1 - 0.4).abs() < 1e-6);
        for plan in odd {
            assert!((plan.iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }
}
