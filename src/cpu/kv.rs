//! The CPU engines' KV cache and the attention that reads it: query head `h` reads KV head
//! `kv_head(h)` (`h / n_rep` for equal groups), indexed, never copied (no `repeat_kv`).

use crate::engine::AttentionWeights;
use crate::model::{layer_cache_rows, KvRows, KvType, ModelConfig};
use crate::ops::{self, causal_attention, ring_rows, Rows};
use crate::regroup::Grouping;

/// The KV cache: K and V each, per layer, `[G_l][rows][head_dim]` (G_l the layer's KV heads,
/// the same for every layer unless the grouping is per layer) in the cache's element type
/// (`model::KvRows`: f32, f16 or q8_0, rounded as they are written), where rows is the
/// capacity, or for a sliding-window layer its ring (`model::layer_cache_rows`: position p in
/// row p mod rows).
pub(super) struct KvCache {
    k: Vec<KvRows>,
    v: Vec<KvRows>,
    /// Positions a sequence may reach.
    pub(super) capacity: usize,
    /// Per layer: rows per KV head.
    rows: Vec<usize>,
}

impl KvCache {
    /// A cache of `capacity` positions whose layer l holds `groups[l]` KV heads.
    pub(super) fn new(cfg: &ModelConfig, groups: &[usize], capacity: usize, t: KvType) -> Self {
        let rows: Vec<usize> = (0..cfg.n_layers)
            .map(|l| layer_cache_rows(cfg, l, capacity))
            .collect();
        let each = || {
            rows.iter()
                .zip(groups)
                .map(|(r, g)| KvRows::new(t, g * r, cfg.head_dim))
                .collect()
        };
        KvCache {
            k: each(),
            v: each(),
            capacity,
            rows,
        }
    }

    /// No cache (what a regrouping holds while it frees the old one).
    pub(super) fn empty(capacity: usize) -> Self {
        KvCache {
            k: Vec::new(),
            v: Vec::new(),
            capacity,
            rows: Vec::new(),
        }
    }

    /// Writes K and V (`[hd]` each) of layer `l`, KV head `g`, position `p`, rounded to the
    /// cache's type.
    pub(super) fn write(&mut self, l: usize, g: usize, p: usize, k: &[f32], v: &[f32]) {
        let rows = self.rows[l];
        let r = g * rows + p % rows;
        self.k[l].write(r, k);
        self.v[l].write(r, v);
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
    let (k, v) = (&cache.k[at.l], &cache.v[at.l]); // [G][rows][hd]
    let kv = grouping.kv_heads();
    let rows = cache.rows[at.l];
    causal_attention(q, k, v, &kv, rows, len0, at.hd, at.window)
}

/// Layer `at.l`'s attention weights for one query `q` (`[n_heads·hd]`, after RoPE) at position
/// `positions - 1`: `[n_heads][positions]`, head h over KV head `kv_head(h)`'s rows (0 outside
/// a sliding window), the keys as the cache holds them (the ones attention read).
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
    let rows = cache.rows[l];
    let mut buf = vec![0.0f32; hd];
    let weights = (0..grouping.n_heads())
        .flat_map(|h| {
            let head = grouping.kv_head(h) * rows;
            let mut k = Vec::with_capacity((positions - first) * hd); // [seen][hd], in order
            for r in ring_rows(first, positions - 1, rows)
                .into_iter()
                .flat_map(|r| r.start + head..r.end + head)
            {
                k.extend_from_slice(cache.k[l].row(r, &mut buf));
            }
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

impl super::CpuEngine {
    /// Milliseconds per token of every layer's attention for one query at the last position
    /// filled (the query's values do not change the work), the best of `iters` runs: what
    /// reading the cache costs a decode step, for the benchmark (native only: wasm32 has no
    /// clock in std).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn time_attention(&self, iters: usize) -> Result<f64, crate::engine::EngineError> {
        let (cfg, len) = (&self.cfg, self.len);
        if len == 0 {
            return Err(crate::engine::EngineError::EmptyInput);
        }
        let q = vec![0.0f32; cfg.n_heads * cfg.head_dim]; // [1][H·hd]
        let mut best = f64::INFINITY;
        for _ in 0..iters.max(1) {
            let t = std::time::Instant::now();
            ops::on_worker(|| {
                for l in 0..cfg.n_layers {
                    let window = if cfg.is_local(l) {
                        cfg.arch.sliding_window
                    } else {
                        0
                    };
                    let at = AttendAt {
                        l,
                        window,
                        hd: cfg.head_dim,
                    };
                    let grouping = self.regrouping.layer_grouping(l);
                    std::hint::black_box(attention(&self.cache, grouping, at, len - 1, &q));
                }
            });
            best = best.min(t.elapsed().as_secs_f64() * 1e3);
        }
        Ok(best)
    }
}
