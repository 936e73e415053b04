//! What a regrouping's maps cost in memory, beside the KV cache they shrink or grow.
//!
//! The engines hold a [`Regrouping`]'s maps as f32 for as long as it runs: the CPU engines
//! the `LayerMaps` themselves, the GPU engine one buffer per kind of map with every layer's
//! (`gpu/engine/resources.rs`: the K maps always, even the native model's pooling scalars; the
//! pool weights or, if any layer has one, a dense V map for every layer; q and O maps if any
//! layer has them). [`maps_bytes`] counts the GPU's buffers, which hold every layer in the
//! widest form any layer has; the CPU engines hold exactly that much for every regrouping the
//! code builds (mean-pooling: every layer pooled; a calibrated merge: every layer dense with q
//! and O maps) and never more. The GPU's group starts and its 16-byte placeholder for an
//! absent map are not counted.
//!
//! A calibrated merge of SmolLM2-135M (H = 9, G0 = 3, head_dim 64, 30 layers) holds 6.03 MB at
//! G = 1 and 7.53 MB at G = 2, most of it the O maps (`[H][hd][hd]` a layer) and the dense V
//! map; its f32 cache saves 30,720 and 15,360 bytes a token. So the merged model holds more
//! than the native one (whose own pooling maps are 70 kB) up to 193 and 485 tokens and less
//! from 194 and 486 on ([`break_even`]).

use super::{Grouping, LayerMaps, Method, Regrouping, VMap};
use crate::model::{kv_cache_bytes_layers, ElementType, ModelConfig};

/// Bytes of one map value as the engines hold it (f32).
pub const MAP_VALUE_BYTES: u64 = 4;

/// Values of one layer's maps at `grouping`: K (complex), V, q (complex), O, and with the q
/// map the table of the pair each slot carries (`[H + G][hd/2]` u32, as the GPU holds it:
/// `LayerMaps::slot_rows`); `None` where absent.
fn layer_values(m: &LayerMaps, grouping: Grouping, hd: usize) -> [Option<usize>; 5] {
    let slot_rows = (grouping.n_heads() + grouping.groups()) * hd / 2;
    [
        Some(m.k.len() * 2),
        Some(match &m.v {
            VMap::Pool(w) | VMap::Dense(w) => w.len(),
        }),
        m.q.as_ref().map(|q| q.len() * 2),
        m.o.as_ref().map(Vec::len),
        (m.q.is_some() || m.slots.is_some()).then_some(slot_rows),
    ]
}

/// Bytes the engines hold for `r`'s maps (see the module doc): each kind of map in the widest
/// form any layer has it, for every layer.
pub fn maps_bytes(r: &Regrouping) -> u64 {
    // Which kinds any layer has, and whether any layer's V is dense: every layer then holds
    // them, each at its own grouping (the GPU lays the maps out layer by layer).
    let dense = r.layers.iter().any(|m| matches!(m.v, VMap::Dense(_)));
    let (q, o) = (
        r.layers.iter().any(|m| m.q.is_some() || m.slots.is_some()),
        r.layers.iter().any(|m| m.o.is_some()),
    );
    let values: usize = (0..r.layers.len())
        .map(|l| {
            let grouping = r.layer_grouping(l);
            let mut m = LayerMaps::pooled(grouping, r.head_dim);
            if dense {
                m.v = VMap::Dense(m.v_dense(grouping, r.head_dim));
            }
            let h = grouping.n_heads();
            m.q = q.then(|| m.q_or_identity(h, r.head_dim));
            m.o = o.then(|| m.o_or_identity(h, r.head_dim));
            layer_values(&m, grouping, r.head_dim)
                .iter()
                .flatten()
                .sum::<usize>()
        })
        .sum();
    values as u64 * MAP_VALUE_BYTES
}

/// Bytes the engines hold for each layer as it is (the CPU engines' count): at most
/// [`maps_bytes`], equal to it when every layer's maps have one form.
pub fn maps_bytes_per_layer(r: &Regrouping) -> u64 {
    let values: usize = (0..r.layers.len())
        .flat_map(|l| layer_values(&r.layers[l], r.layer_grouping(l), r.head_dim))
        .flatten()
        .sum();
    values as u64 * MAP_VALUE_BYTES
}

/// Bytes the maps of a regrouping of `cfg` to `groups` made by `method` hold, from their
/// shapes alone (before any fit): a calibrated merge (G < G0) holds the maps calibration
/// fills (`LayerMaps::expanded`'s shapes), everything else mean-pooling's. `None` for a G the
/// model cannot take.
pub fn planned_maps_bytes(cfg: &ModelConfig, groups: usize, method: Method) -> Option<u64> {
    let grouping = Grouping::of(cfg, groups).ok()?;
    let layer = match method == Method::Calibrated && grouping.merges() {
        true => LayerMaps::expanded(grouping, cfg.head_dim),
        false => LayerMaps::pooled(grouping, cfg.head_dim),
    };
    let r = Regrouping {
        grouping,
        method,
        head_dim: cfg.head_dim,
        layers: vec![layer],
        per_layer: None,
    };
    Some(maps_bytes(&r) * cfg.n_layers as u64)
}

/// A model's memory at one regrouping: its maps and its cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// KV heads of each layer: `[layers]`.
    pub groups: Vec<usize>,
    /// Bytes of its maps ([`maps_bytes`]).
    pub maps_bytes: u64,
}

impl Footprint {
    /// What the engines hold for `r`.
    pub fn of(r: &Regrouping) -> Self {
        Footprint {
            groups: r.layer_groups(),
            maps_bytes: maps_bytes(r),
        }
    }

    /// `groups` KV heads in every layer of `cfg`, and maps of `maps_bytes`.
    pub fn uniform(cfg: &ModelConfig, groups: usize, maps_bytes: u64) -> Self {
        Footprint {
            groups: vec![groups; cfg.n_layers],
            maps_bytes,
        }
    }

    /// The model as trained: G0 KV heads and its pooling maps (`Regrouping::native`).
    pub fn native(cfg: &ModelConfig) -> Self {
        let g0 = cfg.n_kv_heads;
        let maps = planned_maps_bytes(cfg, g0, Method::Mean).unwrap_or(0);
        Footprint::uniform(cfg, g0, maps)
    }

    /// Maps and cache for one sequence of `tokens` kept as `t`.
    pub fn bytes(&self, cfg: &ModelConfig, tokens: usize, t: ElementType) -> u64 {
        self.maps_bytes + kv_cache_bytes_layers(cfg, &self.groups, tokens, t)
    }

    /// KV heads summed over layers.
    fn heads(&self) -> usize {
        self.groups.iter().sum()
    }
}

/// The fewest tokens from which on, up to `limit` (the context), `merged` holds less than
/// the native model with its cache kept as `t`: `Some(0)` if it always does, `None` if it
/// never does by `limit` (the model as trained, a split, a merge whose maps outweigh the
/// cache it saves at this context). The difference is monotone in the tokens (the cache
/// grows with them, a sliding-window layer's up to its ring), so this is a bisection.
pub fn break_even(
    cfg: &ModelConfig,
    merged: Footprint,
    t: ElementType,
    limit: usize,
) -> Option<usize> {
    let native = Footprint::native(cfg);
    let less = |n: usize| merged.bytes(cfg, n, t) < native.bytes(cfg, n, t);
    if !less(limit) {
        return None;
    }
    if merged.heads() >= native.heads() {
        // A split's cache grows faster than the native one: less at `limit`, less before.
        return Some(0);
    }
    let (mut lo, mut hi) = (0, limit); // less(hi) holds; find the first n with less(n)
    if less(lo) {
        return Some(0);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match less(mid) {
            true => hi = mid,
            false => lo = mid,
        }
    }
    Some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KvType;

    /// SmolLM2-135M's shape (`gqa-lab info`).
    fn smollm2() -> ModelConfig {
        ModelConfig::smollm2_135m()
    }

    /// A calibrated merge's maps as calibration builds them (every layer expanded, then
    /// filled in place).
    fn calibrated(cfg: &ModelConfig, groups: usize) -> Regrouping {
        let grouping = Grouping::of(cfg, groups).unwrap();
        Regrouping {
            grouping,
            method: Method::Calibrated,
            head_dim: cfg.head_dim,
            layers: vec![LayerMaps::expanded(grouping, cfg.head_dim); cfg.n_layers],
            per_layer: None,
        }
    }

    #[test]
    fn a_calibrated_merge_holds_megabytes() {
        let cfg = smollm2();
        let (g1, g2) = (calibrated(&cfg, 1), calibrated(&cfg, 2));
        g1.check(&cfg).unwrap();
        g2.check(&cfg).unwrap();
        // K [G][3][32] complex + V [G][64][192] + q [9][32] complex + O [9][64][64] + the
        // slot table [9 + G][32], 4 bytes each.
        let layer =
            |g: u64| (g * 3 * 32 * 2 + g * 64 * 192 + 9 * 32 * 2 + 9 * 64 * 64 + (9 + g) * 32) * 4;
        assert_eq!(maps_bytes(&g1), 30 * layer(1));
        assert_eq!(maps_bytes(&g1), 6_028_800, "≈ 6.03 MB");
        assert_eq!(maps_bytes(&g2), 7_530_240, "≈ 7.53 MB");
        for r in [&g1, &g2] {
            assert_eq!(maps_bytes_per_layer(r), maps_bytes(r));
            let planned = planned_maps_bytes(&cfg, r.groups(), Method::Calibrated);
            assert_eq!(planned, Some(maps_bytes(r)));
        }
    }

    #[test]
    fn mean_pooling_and_splits_hold_their_pooling_maps() {
        let cfg = smollm2();
        for g in 1..=9 {
            let mean = Regrouping::mean(&cfg, Grouping::of(&cfg, g).unwrap());
            // K scalars [G][3][32] complex and pool weights [G][3], every layer.
            let want = 30 * (g as u64 * 3 * 32 * 2 + g as u64 * 3) * 4;
            assert_eq!(maps_bytes(&mean), want, "G = {g}");
            assert_eq!(planned_maps_bytes(&cfg, g, Method::Mean), Some(want));
            // Calibrated at G ≥ G0 is the exact split: the same maps.
            if g >= 3 {
                let planned = planned_maps_bytes(&cfg, g, Method::Calibrated);
                assert_eq!(planned, Some(want));
            }
        }
        assert_eq!(Footprint::native(&cfg).maps_bytes, 70_200);
        assert_eq!(planned_maps_bytes(&cfg, 10, Method::Mean), None);
    }

    /// The GPU holds every layer in the widest form: one dense layer makes every V dense.
    #[test]
    fn mixed_layers_count_the_widest_form() {
        let cfg = smollm2();
        let mut r = calibrated(&cfg, 1);
        let pooled = LayerMaps::pooled(r.grouping, 64);
        r.layers[1..].fill(pooled);
        assert_eq!(maps_bytes(&r), maps_bytes(&calibrated(&cfg, 1)));
        assert!(maps_bytes_per_layer(&r) < maps_bytes(&r));
    }

    #[test]
    fn the_merge_pays_off_from_a_few_hundred_tokens() {
        let cfg = smollm2();
        let f32 = KvType::F32.element();
        let at = |g, t| break_even(&cfg, Footprint::of(&calibrated(&cfg, g)), t, 8192);
        // (6,028,800 − 70,200) / 30,720 = 193.96; (7,530,240 − 70,200) / 15,360 = 485.7.
        assert_eq!(at(1, f32), Some(194));
        assert_eq!(at(2, f32), Some(486));
        for (g, n) in [(1, 194), (2, 486)] {
            let merged = Footprint::of(&calibrated(&cfg, g));
            let native = Footprint::native(&cfg);
            assert!(merged.bytes(&cfg, n, f32) < native.bytes(&cfg, n, f32));
            assert!(merged.bytes(&cfg, n - 1, f32) >= native.bytes(&cfg, n - 1, f32));
        }
        // A smaller cache type saves fewer bytes a token: later.
        assert_eq!(at(1, KvType::F16.element()), Some(388));
        // Not at a context shorter than that.
        let merged = Footprint::of(&calibrated(&cfg, 2));
        assert_eq!(break_even(&cfg, merged, f32, 485), None);
        // Mean-pooling's maps are smaller than the native ones: less from the start.
        let mean = Regrouping::mean(&cfg, Grouping::of(&cfg, 1).unwrap());
        assert_eq!(break_even(&cfg, Footprint::of(&mean), f32, 8192), Some(0));
        // The model as trained and its splits never hold less.
        for g in 3..=9 {
            let split = Regrouping::mean(&cfg, Grouping::of(&cfg, g).unwrap());
            assert_eq!(break_even(&cfg, Footprint::of(&split), f32, 8192), None);
        }
    }

    /// With sliding-window layers the saving stops growing past the ring; still monotone.
    #[test]
    fn break_even_with_windows() {
        let mut cfg = smollm2();
        (cfg.arch.sliding_window, cfg.arch.swa_pattern) = (64, 6);
        let f32 = KvType::F32.element();
        let merged = Footprint::of(&calibrated(&cfg, 1));
        let n = break_even(&cfg, merged.clone(), f32, 8192).unwrap();
        let native = Footprint::native(&cfg);
        assert!(merged.bytes(&cfg, n, f32) < native.bytes(&cfg, n, f32));
        assert!(merged.bytes(&cfg, n - 1, f32) >= native.bytes(&cfg, n - 1, f32));
        assert!(n > 193, "fewer layers grow with the tokens: {n}");
    }
}
