//! The CPU engines' KV cache and the attention that reads it: query head `h` reads KV head
//! `kv_head(h)` (`h / n_rep` for equal groups), indexed, never copied (no `repeat_kv`).

use crate::engine::AttentionWeights;
use crate::model::{layer_cache_rows, ModelConfig};
use crate::ops::{self, causal_attention, ring_rows};
use crate::regroup::Grouping;

/// The KV cache: K and V each, per layer, `[G][rows][head_dim]` f32, where rows is the
/// capacity, or for a sliding-window layer its ring (`model::layer_cache_rows`: position p in
/// row p mod rows).
pub(super) struct KvCache {
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) groups: usize,
    /// Positions a sequence may reach.
    pub(super) capacity: usize,
    pub(super) head_dim: usize,
    /// Per layer: rows per KV head, and where the layer starts in `k` and `v`.
    rows: Vec<usize>,
    starts: Vec<usize>,
}

impl KvCache {
    pub(super) fn new(cfg: &ModelConfig, groups: usize, capacity: usize) -> Self {
        let hd = cfg.head_dim;
        let rows: Vec<usize> = (0..cfg.n_layers)
            .map(|l| layer_cache_rows(cfg, l, capacity))
            .collect();
        let starts: Vec<usize> = rows
            .iter()
            .scan(0, |at, r| {
                let start = *at;
                *at += groups * r * hd;
                Some(start)
            })
            .collect();
        let n = groups * hd * rows.iter().sum::<usize>();
        KvCache {
            k: vec![0.0; n],
            v: vec![0.0; n],
            groups,
            capacity,
            head_dim: hd,
            rows,
            starts,
        }
    }

    /// No cache (what a regrouping holds while it frees the old one).
    pub(super) fn empty(capacity: usize) -> Self {
        KvCache {
            k: Vec::new(),
            v: Vec::new(),
            groups: 0,
            capacity,
            head_dim: 0,
            rows: Vec::new(),
            starts: Vec::new(),
        }
    }

    /// Start of the row for layer `l`, KV head `g`, position `p`.
    pub(super) fn at(&self, l: usize, g: usize, p: usize) -> usize {
        let rows = self.rows[l];
        self.starts[l] + (g * rows + p % rows) * self.head_dim
    }

    /// Layer `l`'s K or V elements, `[G][rows][head_dim]`.
    fn layer(&self, l: usize) -> std::ops::Range<usize> {
        self.starts[l]..self.starts[l] + self.groups * self.rows[l] * self.head_dim
    }
}

/// Which layer's cache an attention reads, its sliding window (0: none) and head_dim.
#[derive(Clone, Copy)]
pub(super) struct AttendAt {
    pub(super) l: usize,
    pub(super) window: usize,
    pub(super) hd: usize,
}

/// Causal attention of new queries at positions `len0..` over layer `at.l`'s cache; q:
/// `[t][n_heads·hd]` after RoPE, result `[t][n_heads·hd]`. Query head `h` reads KV head
/// `kv_head(h)` (`h / n_rep` for equal groups): the shared head is indexed, never copied.
pub(super) fn attention(
    cache: &KvCache,
    grouping: Grouping,
    at: AttendAt,
    len0: usize,
    q: &[f32],
) -> Vec<f32> {
    let layer = cache.layer(at.l); // [G][rows][hd]
    let (k, v) = (&cache.k[layer.clone()], &cache.v[layer]);
    let kv = grouping.kv_heads();
    let rows = cache.rows[at.l];
    causal_attention(q, k, v, &kv, rows, len0, at.hd, at.window)
}

/// Layer `at.l`'s attention weights for one query `q` (`[n_heads·hd]`, after RoPE) at position
/// `positions - 1`: `[n_heads][positions]`, head h over KV head `kv_head(h)`'s rows (0 outside
/// a sliding window).
pub(super) fn attention_weights(
    cache: &KvCache,
    grouping: Grouping,
    at: AttendAt,
    positions: usize,
    q: &[f32],
) -> AttentionWeights {
    let (l, hd) = (at.l, at.hd);
    let scale = 1.0 / (hd as f32).sqrt();
    let first = ops::window_start(positions - 1, at.window);
    let weights = (0..grouping.n_heads())
        .flat_map(|h| {
            let g = grouping.kv_head(h);
            let head = cache.at(l, g, 0);
            let k: Vec<f32> = ring_rows(first, positions - 1, cache.rows[l])
                .into_iter()
                .flat_map(|r| &cache.k[head + r.start * hd..head + r.end * hd])
                .copied()
                .collect(); // [seen][hd], in position order
            let w = ops::attention_weights(&q[h * hd..(h + 1) * hd], &k, scale);
            std::iter::repeat_n(0.0, first).chain(w)
        })
        .collect();
    AttentionWeights {
        layer: l,
        positions,
        weights,
    }
}
