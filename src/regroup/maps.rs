//! Regrouping a checkpoint's KV heads as small linear maps around attention, applied to the
//! projected heads, so that no weight changes (the quantized ones stay as they are):
//!
//! - **K**: KV head g's rotation pair f is `k'_f = Σ_j c[g][j][f] · k_{j,f}` over the native
//!   heads j (complex numbers `x[2f] + i·x[2f+1]`; a complex scalar per pair is the only
//!   linear map that commutes with RoPE, which turns pair f of every head by the same angle);
//! - **V**: the pooled `Σ_j w[g][j] · v_j`, or a dense map of the stacked native values;
//! - **q**: query head h's pair f times a complex scalar (so that `Re(q·conj(k))`, a pair's
//!   share of the score, survives the merge of K);
//! - **O**: query head h's attention output through a `head_dim × head_dim` map before `W_o`.
//!
//! The GQA paper's conversion (Ainslie et al. 2023, §2.1: mean-pool the K and V heads of each
//! group) is the case `c = w = 1/r`, no q and O maps ([`Regrouping::mean`]); a split native
//! group (G ≥ G0) copies its head (`c = w = 1`), exactly. The calibrated merge
//! (`fit.rs`, `orefit.rs`) fits all four maps per layer. These functions are the CPU engines'
//! arithmetic and the twins of kv_store.wgsl and attention_reduce.wgsl.

use super::{pooling_matrix, Grouping};
use crate::model::{ModelConfig, ModelError};
use serde::{Deserialize, Serialize};

/// How merged KV heads (G < G0) are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The GQA paper's conversion: the mean of the heads a group replaces.
    Mean,
    /// The RoPE-aware merge fitted on calibration activations (`fit.rs`).
    Calibrated,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Mean => "mean",
            Method::Calibrated => "calibrated",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mean" | "mean-pool" => Some(Method::Mean),
            "calibrated" => Some(Method::Calibrated),
            _ => None,
        }
    }
}

/// The value map of one layer.
#[derive(Debug, Clone, PartialEq)]
pub enum VMap {
    /// `v'_g = Σ_j w[g][j] · v_j`: `[G][G0]`.
    Pool(Vec<f32>),
    /// `v'_g[d] = Σ_{j,e} m[g][d][j·hd + e] · v_j[e]`: `[G][hd][G0·hd]`.
    Dense(Vec<f32>),
}

/// One layer's maps (see the module doc).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMaps {
    /// `[G][G0][hd/2]` complex (re, im).
    pub k: Vec<[f32; 2]>,
    pub v: VMap,
    /// `[H][hd/2]` complex multipliers of the query pairs; `None` is the identity.
    pub q: Option<Vec<[f32; 2]>>,
    /// `[H][hd][hd]`: `att'_h[d] = Σ_e o[h][d][e] · att_h[e]`; `None` is the identity.
    pub o: Option<Vec<f32>>,
    /// `[G][hd/2]`: the native rotation pair (RoPE frequency) slot s of KV head g carries, and
    /// with it slot s of every query head that reads g; `None`: slot f carries pair f. K's
    /// slot s is `Σ_j k[g][j][s] · k0_{j, slots[g][s]}`, q's is `q[h][s] · q_{h, slots[g][s]}`,
    /// and both turn at that pair's angle (`fit.rs`: slots spent where the keys' energy is).
    pub slots: Option<Vec<u32>>,
}

/// A model's regrouping: the grouping, how it was made, and every layer's maps.
#[derive(Debug, Clone, PartialEq)]
pub struct Regrouping {
    /// The grouping of every layer, or for a per-layer one the grouping of its widest layer
    /// (most KV heads); each layer's own is [`Regrouping::layer_grouping`].
    pub grouping: Grouping,
    pub method: Method,
    pub head_dim: usize,
    pub layers: Vec<LayerMaps>,
    /// Each layer's grouping, `[layers]`, when they differ (`layered.rs`); `None`: all are
    /// `grouping`.
    pub per_layer: Option<Vec<Grouping>>,
}

impl Regrouping {
    /// The GQA paper's conversion at `grouping` (exact for G ≥ G0): mean-pooled K and V.
    pub fn mean(cfg: &ModelConfig, grouping: Grouping) -> Self {
        let layer = LayerMaps::pooled(grouping, cfg.head_dim);
        Regrouping {
            grouping,
            method: Method::Mean,
            head_dim: cfg.head_dim,
            layers: vec![layer; cfg.n_layers],
            per_layer: None,
        }
    }

    /// The checkpoint as it is.
    pub fn native(cfg: &ModelConfig) -> Self {
        Self::mean(cfg, Grouping::native(cfg))
    }

    pub fn groups(&self) -> usize {
        self.grouping.groups()
    }

    /// Whether the maps fit the model of `cfg`: one per layer, each array the size its
    /// grouping and head size make it (maps may come from a cache file).
    pub fn check(&self, cfg: &ModelConfig) -> Result<(), ModelError> {
        let (hd, h) = (cfg.head_dim, cfg.n_heads);
        let bad = |what: String| Err(ModelError::BadConfig(format!("regrouping maps: {what}")));
        let each = self.per_layer.as_deref().unwrap_or_default();
        for g in std::iter::once(&self.grouping).chain(each) {
            if g.n_heads() != h || g.native_groups() != cfg.n_kv_heads || self.head_dim != hd {
                return bad("made for another model".into());
            }
        }
        if self.layers.len() != cfg.n_layers
            || self
                .per_layer
                .as_ref()
                .is_some_and(|p| p.len() != cfg.n_layers)
        {
            return bad(format!("{} layers for {}", self.layers.len(), cfg.n_layers));
        }
        let widest = (0..cfg.n_layers)
            .map(|l| self.layer_grouping(l).groups())
            .max();
        if widest.is_some_and(|w| w != self.grouping.groups()) {
            return bad("its grouping is not its widest layer's".into());
        }
        for (l, m) in self.layers.iter().enumerate() {
            let g = self.layer_grouping(l);
            let (groups, g0) = (g.groups(), g.native_groups());
            let v_len = match &m.v {
                VMap::Pool(w) => (w.len(), groups * g0),
                VMap::Dense(w) => (w.len(), groups * hd * g0 * hd),
            };
            let sizes = [
                (m.k.len(), groups * g0 * hd / 2),
                v_len,
                (m.q.as_ref().map_or(h * hd / 2, Vec::len), h * hd / 2),
                (m.o.as_ref().map_or(h * hd * hd, Vec::len), h * hd * hd),
            ];
            let slots_ok = m.slots.as_ref().is_none_or(|s| {
                s.len() == groups * hd / 2 && s.iter().all(|&f| (f as usize) < hd / 2)
            });
            if sizes.iter().any(|(a, b)| a != b) || !m.is_finite() || !slots_ok {
                return bad(format!(
                    "layer {l} has maps of the wrong size or non-finite values"
                ));
            }
        }
        Ok(())
    }
}

impl LayerMaps {
    /// Whether every value of every map is finite.
    pub fn is_finite(&self) -> bool {
        let v = match &self.v {
            VMap::Pool(w) | VMap::Dense(w) => w,
        };
        self.k.iter().flatten().all(|x| x.is_finite())
            && v.iter().all(|x| x.is_finite())
            && self.q.iter().flatten().flatten().all(|x| x.is_finite())
            && self.o.iter().flatten().all(|x| x.is_finite())
    }

    /// Mean-pooling ([`pooling_matrix`]) as maps: the pool weights as real K scalars.
    pub fn pooled(grouping: Grouping, hd: usize) -> Self {
        let pool = pooling_matrix(grouping);
        let k = pool
            .iter()
            .flat_map(|&w| std::iter::repeat_n([w, 0.0], hd / 2))
            .collect();
        LayerMaps {
            k,
            v: VMap::Pool(pool),
            q: None,
            o: None,
            slots: None,
        }
    }

    /// [`LayerMaps::pooled`] in the full form of a calibrated merge: the same maps with a
    /// dense V, identity q and output maps (what calibration starts every layer from).
    pub fn expanded(grouping: Grouping, hd: usize) -> Self {
        let pooled = Self::pooled(grouping, hd);
        let n_heads = grouping.n_heads();
        LayerMaps {
            v: VMap::Dense(pooled.v_dense(grouping, hd)),
            q: Some(pooled.q_or_identity(n_heads, hd)),
            o: Some(pooled.o_or_identity(n_heads, hd)),
            k: pooled.k,
            slots: None,
        }
    }

    /// The V map as a dense `[G][hd][G0·hd]` matrix (pooling weights on the diagonals).
    pub fn v_dense(&self, grouping: Grouping, hd: usize) -> Vec<f32> {
        let (g0, groups) = (grouping.native_groups(), grouping.groups());
        match &self.v {
            VMap::Dense(m) => m.clone(),
            VMap::Pool(w) => {
                let mut m = vec![0.0f32; groups * hd * g0 * hd];
                for g in 0..groups {
                    for j in 0..g0 {
                        for d in 0..hd {
                            m[((g * hd + d) * g0 + j) * hd + d] = w[g * g0 + j];
                        }
                    }
                }
                m
            }
        }
    }

    /// The q map, or the identity: `[H][hd/2]` complex.
    pub fn q_or_identity(&self, n_heads: usize, hd: usize) -> Vec<[f32; 2]> {
        self.q
            .clone()
            .unwrap_or_else(|| vec![[1.0, 0.0]; n_heads * hd / 2])
    }

    /// The O map, or the identity: `[H][hd][hd]`.
    pub fn o_or_identity(&self, n_heads: usize, hd: usize) -> Vec<f32> {
        self.o.clone().unwrap_or_else(|| {
            (0..n_heads * hd * hd)
                .map(|i| f32::from((i % (hd * hd)).is_multiple_of(hd + 1)))
                .collect()
        })
    }

    /// K of the G heads from the native heads' `k0` (`[t][G0·hd]`): `[t][G·hd]`.
    pub fn map_k(&self, k0: &[f32], grouping: Grouping, hd: usize) -> Vec<f32> {
        let (g0, groups, pairs) = (grouping.native_groups(), grouping.groups(), hd / 2);
        let mut out = Vec::with_capacity(k0.len() / g0 * groups);
        for row in k0.chunks_exact(g0 * hd) {
            for g in 0..groups {
                for s in 0..pairs {
                    let f = self.slot_pair(g, s, pairs);
                    let mut acc = [0.0f32; 2];
                    for j in 0..g0 {
                        let c = self.k[(g * g0 + j) * pairs + s];
                        let x = [row[j * hd + 2 * f], row[j * hd + 2 * f + 1]];
                        let p = cmul(c, x);
                        acc = [acc[0] + p[0], acc[1] + p[1]];
                    }
                    out.extend(acc);
                }
            }
        }
        out
    }

    /// V of the G heads from the native heads' `v0` (`[t][G0·hd]`): `[t][G·hd]`.
    pub fn map_v(&self, v0: &[f32], grouping: Grouping, hd: usize) -> Vec<f32> {
        let (g0, groups) = (grouping.native_groups(), grouping.groups());
        let mut out = vec![0.0f32; v0.len() / g0 * groups];
        for (row, o) in v0
            .chunks_exact(g0 * hd)
            .zip(out.chunks_exact_mut(groups * hd))
        {
            for (g, og) in o.chunks_exact_mut(hd).enumerate() {
                match &self.v {
                    VMap::Pool(w) => {
                        for (j, vj) in row.chunks_exact(hd).enumerate() {
                            let wj = w[g * g0 + j];
                            og.iter_mut().zip(vj).for_each(|(a, b)| *a += wj * b);
                        }
                    }
                    VMap::Dense(m) => {
                        for (d, a) in og.iter_mut().enumerate() {
                            let mrow = &m[(g * hd + d) * g0 * hd..][..g0 * hd];
                            *a = mrow.iter().zip(row).map(|(x, y)| x * y).sum();
                        }
                    }
                }
            }
        }
        out
    }

    /// The pair every slot carries, as kv_store.wgsl reads it: the H query heads' rows (each
    /// its KV head's), then the G KV heads': `[H + G][hd/2]`.
    pub fn slot_rows(&self, grouping: Grouping, pairs: usize) -> Vec<u32> {
        let heads = grouping.kv_heads().into_iter().chain(0..grouping.groups());
        heads
            .flat_map(|g| (0..pairs).map(move |s| (g, s)))
            .map(|(g, s)| self.slot_pair(g, s, pairs) as u32)
            .collect()
    }

    /// The native pair that slot `s` of KV head `g` carries (`pairs` = hd/2).
    pub fn slot_pair(&self, g: usize, s: usize, pairs: usize) -> usize {
        self.slots.as_ref().map_or(s, |t| t[g * pairs + s] as usize)
    }

    /// Each query head's slots (`q`: `[t][H·hd]`, in place): slot s of head h is its pair
    /// `slots[g][s]` (g the KV head h reads) times its scalar.
    pub fn map_q(&self, q: &mut [f32], grouping: Grouping, hd: usize) {
        if self.q.is_none() && self.slots.is_none() {
            return;
        }
        let (n_heads, pairs) = (grouping.n_heads(), hd / 2);
        let kv = grouping.kv_heads();
        let m = self.q.as_deref();
        for row in q.chunks_exact_mut(n_heads * hd) {
            let native = row.to_vec();
            for (i, pair) in row.chunks_exact_mut(2).enumerate() {
                let (h, s) = (i / pairs, i % pairs);
                let f = self.slot_pair(kv[h], s, pairs);
                let x = [native[h * hd + 2 * f], native[h * hd + 2 * f + 1]];
                let p = m.map_or(x, |m| cmul(m[i], x));
                (pair[0], pair[1]) = (p[0], p[1]);
            }
        }
    }

    /// RoPE on one token's heads (`v`: `[heads][hd]`, the KV heads of `group_of` when
    /// `group_of[i]` is head i's KV head): slot s of head i turns by `turns[slots[g][s]]`, the
    /// angle of the native pair it carries (`turns`: `[hd/2]` (cos, sin)).
    pub fn rotate(&self, v: &mut [f32], turns: &[(f32, f32)], group_of: &[usize]) {
        let pairs = turns.len();
        for (head, &g) in v.chunks_exact_mut(2 * pairs).zip(group_of) {
            for (s, pair) in head.chunks_exact_mut(2).enumerate() {
                let (cos, sin) = turns[self.slot_pair(g, s, pairs)];
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * cos - b * sin;
                pair[1] = a * sin + b * cos;
            }
        }
    }

    /// Maps each query head's attention output (`att`: `[t][H·hd]`), in place.
    pub fn map_o(&self, att: &mut [f32], n_heads: usize, hd: usize) {
        let Some(o) = &self.o else { return };
        for row in att.chunks_exact_mut(n_heads * hd) {
            for (h, a) in row.chunks_exact_mut(hd).enumerate() {
                let m = &o[h * hd * hd..][..hd * hd];
                let mapped: Vec<f32> = m
                    .chunks_exact(hd)
                    .map(|mr| mr.iter().zip(a.iter()).map(|(x, y)| x * y).sum())
                    .collect();
                a.copy_from_slice(&mapped);
            }
        }
    }
}

/// `a · b` for complex numbers as (re, im).
pub fn cmul(a: [f32; 2], b: [f32; 2]) -> [f32; 2] {
    [a[0] * b[0] - a[1] * b[1], a[0] * b[1] + a[1] * b[0]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::rope_turns;

    fn grouping(g: usize) -> Grouping {
        Grouping::new(9, 3, g).unwrap()
    }

    #[test]
    fn pooled_maps_are_the_pooling_plan() {
        let hd = 4;
        let maps = LayerMaps::pooled(grouping(1), hd);
        let k0: Vec<f32> = (0..12).map(|i| i as f32).collect(); // one token, 3 heads
        let want: Vec<f32> = (0..4).map(|d| (d + d + 4 + d + 8) as f32 / 3.0).collect();
        for got in [
            maps.map_k(&k0, grouping(1), hd),
            maps.map_v(&k0, grouping(1), hd),
        ] {
            got.iter()
                .zip(&want)
                .for_each(|(a, b)| assert!((a - b).abs() < 1e-6));
        }
        // G = 9 copies the native heads.
        let maps = LayerMaps::pooled(grouping(9), hd);
        let k = maps.map_k(&k0, grouping(9), hd);
        assert_eq!(&k[4 * 4..5 * 4], &k0[4..8], "KV head 4 is native head 1");
    }

    /// A complex scalar per pair commutes with RoPE: merge then rotate = rotate then merge.
    #[test]
    fn the_k_map_commutes_with_rope() {
        let hd = 8;
        let g = grouping(1);
        let mut maps = LayerMaps::pooled(g, hd);
        for (i, c) in maps.k.iter_mut().enumerate() {
            *c = [0.3 + 0.1 * i as f32, -0.2 + 0.05 * i as f32];
        }
        let k0: Vec<f32> = (0..3 * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let turns = rope_turns(7, hd, 10_000.0);
        let rotate = |v: &mut [f32]| {
            for (i, pair) in v.chunks_exact_mut(2).enumerate() {
                let (c, s) = turns[i % (hd / 2)];
                let p = cmul([c, s], [pair[0], pair[1]]);
                (pair[0], pair[1]) = (p[0], p[1]);
            }
        };
        let mut merged_then_rotated = maps.map_k(&k0, g, hd);
        rotate(&mut merged_then_rotated);
        let mut r = k0.clone();
        rotate(&mut r);
        let rotated_then_merged = maps.map_k(&r, g, hd);
        for (a, b) in merged_then_rotated.iter().zip(&rotated_then_merged) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn q_and_o_maps_apply_per_head() {
        let hd = 2;
        let mut maps = LayerMaps::pooled(grouping(1), hd);
        maps.q = Some((0..9).map(|h| [0.0, h as f32]).collect()); // × i·h
        maps.o = Some((0..9).flat_map(|h| [h as f32, 0.0, 0.0, 1.0]).collect());
        let mut q: Vec<f32> = (0..18).map(|_| 1.0).collect();
        maps.map_q(&mut q, grouping(1), hd);
        assert_eq!(&q[4..6], &[-2.0, 2.0], "(1 + i) · 2i");
        let mut att = vec![1.0f32; 18];
        maps.map_o(&mut att, 9, hd);
        assert_eq!(&att[6..8], &[3.0, 1.0]);
    }
}
