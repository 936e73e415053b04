//! The CPU engines' KV cache and the attention that reads it: query head `h` reads KV head
//! `kv_head(h)` (`h / n_rep` for equal groups), indexed, never copied (no `repeat_kv`).

use crate::engine::AttentionWeights;
use crate::ops::{self, causal_attention};
use crate::regroup::Grouping;

/// The KV cache: K and V each `[layers][G][capacity][head_dim]`, f32.
pub(super) struct KvCache {
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) groups: usize,
    pub(super) capacity: usize,
    pub(super) head_dim: usize,
}

impl KvCache {
    pub(super) fn new(layers: usize, groups: usize, capacity: usize, head_dim: usize) -> Self {
        let n = layers * groups * capacity * head_dim;
        KvCache {
            k: vec![0.0; n],
            v: vec![0.0; n],
            groups,
            capacity,
            head_dim,
        }
    }

    /// Start of the row for layer `l`, KV head `g`, position `p`.
    pub(super) fn at(&self, l: usize, g: usize, p: usize) -> usize {
        ((l * self.groups + g) * self.capacity + p) * self.head_dim
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
    let layer = cache.at(at.l, 0, 0)..cache.at(at.l + 1, 0, 0); // [G][capacity][hd]
    let (k, v) = (&cache.k[layer.clone()], &cache.v[layer]);
    let kv = grouping.kv_heads();
    causal_attention(q, k, v, &kv, cache.capacity, len0, at.hd, at.window)
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
            let k = &cache.k[cache.at(l, g, first)..cache.at(l, g, positions)]; // [seen][hd]
            let w = ops::attention_weights(&q[h * hd..(h + 1) * hd], k, scale);
            std::iter::repeat_n(0.0, first).chain(w)
        })
        .collect();
    AttentionWeights {
        layer: l,
        positions,
        weights,
    }
}
