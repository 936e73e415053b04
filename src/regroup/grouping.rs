//! KV-head grouping (Ainslie et al. 2023, "GQA", arXiv:2305.13245): H query heads share G KV
//! heads, and query head `h` reads KV head `kv_head(h)`; with equal groups that is `h / n_rep`,
//! `n_rep = H / G`.
//!
//! A checkpoint trained with G0 KV heads can be regrouped to any G from 1 to H. Groups are
//! contiguous runs of query heads and need not be equal, but they never cut across the
//! checkpoint's own groups in a way that would mix heads needlessly:
//! - **G ≥ G0** splits native groups only (native group j into `s_j` runs, the `s_j` as even as
//!   possible, larger first): every new KV head is a copy of one native head, so the logits
//!   are exactly the native model's and only the cache grows;
//! - **G < G0** merges whole native groups (the G0 native heads into G contiguous runs, as
//!   even as possible, larger first). How the merged heads are made is `maps.rs`'s
//!   business: the paper's mean-pooling, or a calibrated merge.
//!
//! On SmolLM2-135M (H = 9, G0 = 3): G = 2 is {Q0–Q5 → KV0, Q6–Q8 → KV1}; G = 4 is
//! {Q0 Q1 | Q2 | Q3–Q5 | Q6–Q8}.

use crate::model::{ModelConfig, ModelError};
use std::ops::Range;

/// Which of `parts` contiguous runs item `i` of `n` falls in, the runs as even as possible,
/// the longer ones first (`1 ≤ parts ≤ n`).
fn run_of(n: usize, parts: usize, i: usize) -> usize {
    let (base, extra) = (n / parts, n % parts);
    let long = extra * (base + 1);
    if i < long {
        i / (base + 1)
    } else {
        extra + (i - long) / base
    }
}

/// How H query heads share G KV heads, given the checkpoint's G0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    n_heads: usize,
    native: usize,
    groups: usize,
}

impl Grouping {
    /// `groups` KV heads for `n_heads` query heads of a checkpoint with `native` KV heads
    /// (which must divide `n_heads`).
    pub fn new(n_heads: usize, native: usize, groups: usize) -> Result<Self, ModelError> {
        if native == 0 || !n_heads.is_multiple_of(native) {
            return Err(ModelError::BadConfig(format!(
                "{native} KV heads do not divide {n_heads} query heads"
            )));
        }
        if groups == 0 || groups > n_heads {
            return Err(ModelError::BadGroups { groups, n_heads });
        }
        Ok(Grouping {
            n_heads,
            native,
            groups,
        })
    }

    /// The checkpoint's own grouping.
    pub fn native(cfg: &ModelConfig) -> Self {
        Grouping {
            n_heads: cfg.n_heads,
            native: cfg.n_kv_heads,
            groups: cfg.n_kv_heads,
        }
    }

    /// `groups` KV heads for the model of `cfg`.
    pub fn of(cfg: &ModelConfig, groups: usize) -> Result<Self, ModelError> {
        Grouping::new(cfg.n_heads, cfg.n_kv_heads, groups)
    }

    pub fn groups(&self) -> usize {
        self.groups
    }

    pub fn n_heads(&self) -> usize {
        self.n_heads
    }

    /// The checkpoint's KV heads (G0).
    pub fn native_groups(&self) -> usize {
        self.native
    }

    /// Query heads per native KV head.
    fn native_rep(&self) -> usize {
        self.n_heads / self.native
    }

    /// The KV head each query head reads: `[H]`.
    pub fn kv_heads(&self) -> Vec<usize> {
        (0..self.n_heads()).map(|h| self.kv_head(h)).collect()
    }

    /// The KV head that query head `h` reads.
    pub fn kv_head(&self, h: usize) -> usize {
        let (r0, g0, g) = (self.native_rep(), self.native, self.groups);
        let j = h / r0; // the native KV head h reads
        if g < g0 {
            return run_of(g0, g, j);
        }
        let (per, extra) = (g / g0, g % g0);
        let splits = per + usize::from(j < extra);
        let first = j * per + j.min(extra);
        first + run_of(r0, splits, h % r0)
    }

    /// The query heads that KV head `g` serves (a contiguous run).
    pub fn members(&self, g: usize) -> Range<usize> {
        let start = (0..self.n_heads).find(|&h| self.kv_head(h) == g);
        let end = (0..self.n_heads).rev().find(|&h| self.kv_head(h) == g);
        match (start, end) {
            (Some(s), Some(e)) => s..e + 1,
            _ => self.n_heads..self.n_heads,
        }
    }

    /// The native KV heads that KV head `g` is made from: one for G ≥ G0 (a copy), the run
    /// of native heads whose groups it merges for G < G0.
    pub fn sources(&self, g: usize) -> Range<usize> {
        let m = self.members(g);
        let r0 = self.native_rep();
        if m.is_empty() {
            return 0..0;
        }
        m.start / r0..(m.end - 1) / r0 + 1
    }

    /// Query heads in the largest group.
    pub fn max_rep(&self) -> usize {
        (0..self.groups)
            .map(|g| self.members(g).len())
            .max()
            .unwrap_or(0)
    }

    /// Whether every group has the same number of query heads (then `kv_head(h)` is
    /// `h / (H / G)`).
    pub fn is_even(&self) -> bool {
        self.n_heads.is_multiple_of(self.groups)
            && (0..self.n_heads).all(|h| self.kv_head(h) == h / (self.n_heads / self.groups))
    }

    /// Whether the KV heads merge native ones (G < G0), which only a conversion can
    /// approximate; otherwise every KV head is a copy of a native one and the model is exact.
    pub fn merges(&self) -> bool {
        self.groups < self.native
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

/// For each KV head `g` of `target`, the native KV heads it pools and their weights in the
/// GQA paper's conversion: `new_g = Σ weight · native_j`, the weight of native head j the share
/// of g's query heads that read j natively (weights sum to 1). For G ≥ G0 each KV head is one
/// native head with weight 1.
pub fn pooling_plan(target: Grouping) -> Vec<Vec<(usize, f32)>> {
    let r0 = target.native_rep();
    (0..target.groups())
        .map(|g| {
            let members = target.members(g);
            let n = members.len() as f32;
            target
                .sources(g)
                .map(|j| {
                    let overlap = members.clone().filter(|h| h / r0 == j).count();
                    (j, overlap as f32 / n)
                })
                .collect()
        })
        .collect()
}

/// [`pooling_plan`] as a dense `[G][G0]` matrix.
pub fn pooling_matrix(target: Grouping) -> Vec<f32> {
    let g0 = target.native_groups();
    let mut pool = vec![0.0f32; target.groups() * g0];
    for (g, sources) in pooling_plan(target).iter().enumerate() {
        for &(j, w) in sources {
            pool[g * g0 + j] = w;
        }
    }
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(h: usize, g0: usize, g: usize) -> Grouping {
        Grouping::new(h, g0, g).unwrap()
    }

    fn heads(gr: Grouping) -> Vec<usize> {
        gr.kv_heads()
    }

    #[test]
    fn every_g_from_one_to_h_is_valid() {
        for g in 1..=9 {
            assert_eq!(Grouping::new(9, 3, g).unwrap().groups(), g);
        }
        let e = Grouping::new(9, 3, 10).unwrap_err();
        assert!(e.to_string().contains("G = 10"), "{e}");
        assert!(Grouping::new(9, 3, 0).is_err());
        assert!(Grouping::new(9, 2, 3).is_err(), "G0 must divide H");
    }

    #[test]
    fn equal_groups_read_h_over_n_rep() {
        for (h, g0) in [(9, 3), (12, 4), (32, 8), (14, 2)] {
            for groups in (1..=h).filter(|d| h % d == 0 && (d % g0 == 0 || g0 % d == 0)) {
                let gr = g(h, g0, groups);
                let n_rep = h / groups;
                assert_eq!(heads(gr), (0..h).map(|i| i / n_rep).collect::<Vec<_>>());
                assert!(gr.is_even());
            }
        }
        assert_eq!(g(9, 3, 3).label(), "GQA-3");
        assert_eq!(g(9, 3, 1).label(), "MQA");
        assert_eq!(g(9, 3, 9).label(), "MHA");
    }

    #[test]
    fn uneven_groups_split_or_merge_native_groups() {
        // SmolLM2: G = 2 merges native groups {0, 1} and keeps 2.
        let g2 = g(9, 3, 2);
        assert_eq!(heads(g2), [0, 0, 0, 0, 0, 0, 1, 1, 1]);
        assert_eq!((g2.members(0), g2.members(1)), (0..6, 6..9));
        assert_eq!((g2.sources(0), g2.sources(1)), (0..2, 2..3));
        assert!(g2.merges() && !g2.is_even());
        // G = 4..8 split native groups, the first ones first.
        assert_eq!(heads(g(9, 3, 4)), [0, 0, 1, 2, 2, 2, 3, 3, 3]);
        assert_eq!(heads(g(9, 3, 5)), [0, 0, 1, 2, 2, 3, 4, 4, 4]);
        assert_eq!(heads(g(9, 3, 7)), [0, 1, 2, 3, 3, 4, 5, 5, 6]);
        assert_eq!(heads(g(9, 3, 8)), [0, 1, 2, 3, 4, 5, 6, 6, 7]);
        for groups in 1..=9 {
            let gr = g(9, 3, groups);
            let mut seen: Vec<usize> = heads(gr);
            seen.dedup();
            assert_eq!(
                seen,
                (0..groups).collect::<Vec<_>>(),
                "G={groups}: 0..G in order"
            );
            for k in 0..groups {
                // A split group reads one native head; a merged one whole native groups.
                let m = gr.members(k);
                let s = gr.sources(k);
                assert_eq!(s, m.start / 3..(m.end - 1) / 3 + 1);
                assert!(groups < 3 || s.len() == 1);
                assert!(groups >= 3 || m.len() == 3 * s.len());
            }
            assert!(gr.max_rep() <= 9);
        }
    }

    #[test]
    fn pooling_plans() {
        // Native: identity.
        assert_eq!(
            pooling_plan(g(9, 3, 3)),
            vec![vec![(0, 1.0)], vec![(1, 1.0)], vec![(2, 1.0)]]
        );
        // MHA: each query head's own copy of its native head.
        assert_eq!(pooling_plan(g(9, 3, 9))[4], vec![(1, 1.0)]);
        // MQA: the plain mean of the three native heads.
        let mqa = pooling_plan(g(9, 3, 1));
        assert_eq!(mqa[0].iter().map(|p| p.0).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(mqa[0].iter().all(|p| (p.1 - 1.0 / 3.0).abs() < 1e-6));
        // G = 2: the mean of native 0 and 1, then native 2 alone.
        assert_eq!(
            pooling_plan(g(9, 3, 2)),
            vec![vec![(0, 0.5), (1, 0.5)], vec![(2, 1.0)]]
        );
        for groups in 1..=9 {
            for plan in pooling_plan(g(9, 3, groups)) {
                assert!((plan.iter().map(|p| p.1).sum::<f32>() - 1.0).abs() < 1e-6);
            }
        }
        assert_eq!(pooling_matrix(g(9, 3, 2)), [0.5, 0.5, 0.0, 0.0, 0.0, 1.0]);
    }
}
