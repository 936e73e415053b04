//! One layer's calibrated maps from its native projections over the calibration sequences:
//! the base fit ([`super::fit`]: K and q per rotation pair, V and O by an output-aware PCA),
//! then, if the settings ask, the joint least-squares refit of the O maps ([`super::orefit`]).
//!
//! The refit needs the layer's attention outputs, natively and through the fitted K, q and V
//! maps; both are computed here on the CPU from the native projections the walk gave (RoPE,
//! then causal attention within each sequence from position 0, [`ops::causal_attention`]), so
//! every engine that walks (the CPU oracle, the GPU engine) gets the refit without a method of
//! its own. Cost on 2 cores: at 8192 tokens ~45% more than the base fit, mostly the statistics
//! (two attentions and three `[H·hd]²` products per sequence); at 2048 tokens about twice
//! (with fewer tokens the system is worse conditioned and the conjugate gradients take more
//! steps). ARCHITECTURE.md's regrouping section has the figures.

use super::{FitError, FitSettings, Grouping, LayerMaps, LayerStats, OutputStats};
use crate::model::ModelConfig;
use crate::ops;

/// Fits one layer's maps to `grouping` from its native projections, one `[q, k0, v0]` per
/// calibration sequence (`[t][H·hd]`, `[t][G0·hd]`, `[t][G0·hd]`, before RoPE), and its output
/// projection `wo` (`[dim][H·hd]`). Errors say why the fit is impossible (no tokens, a
/// ridge out of range, non-finite projections or weights, a singular system).
pub fn fit_layer(
    cfg: &ModelConfig,
    grouping: Grouping,
    native: &[[Vec<f32>; 3]],
    wo: &[f32],
    settings: FitSettings,
) -> Result<(LayerMaps, FitError), String> {
    if let Some(ridge) = settings.o_ridge {
        super::check_o_ridge(ridge)?;
    }
    let finite = |x: &[f32]| x.iter().all(|v| v.is_finite());
    if !native.iter().flatten().all(|x| finite(x)) {
        return Err("the layer's Q, K or V of the calibration text hold NaN or infinity (non-finite statistics): the model's weights may be damaged".into());
    }
    if !finite(wo) {
        return Err("the layer's attn_output weights hold NaN or infinity: the model's weights may be damaged".into());
    }
    let mut stats = LayerStats::new(grouping, cfg.head_dim);
    for [q, k0, v0] in native {
        stats.add(q, k0, v0);
    }
    let (mut maps, mut error) = stats.fit(wo)?;
    if let Some(ridge) = settings.o_ridge {
        let base = maps.o_or_identity(cfg.n_heads, cfg.head_dim);
        let stats = output_stats(cfg, grouping, native, &maps);
        let (o, fit) = stats.refit(wo, &base, ridge)?;
        maps.o = Some(o);
        error.o = Some(fit);
    }
    if !maps.is_finite() {
        return Err("the fit gave non-finite maps (its statistics overflow f32: values past its range in the layer's activations)".into());
    }
    Ok((maps, error))
}

/// The O refit's statistics: per sequence, the native attention outputs o and the merged ones
/// a (through `maps`' K, q and V), and their products `Σ a aᵀ`, `Σ o aᵀ`, `Σ o oᵀ` summed in
/// f32 over the sequence by `ops::matmul` (SIMD dot products on all cores; 512 terms, each
/// sum's rounding ~1e-6 relative, far inside the ridge), then added in f64 across sequences:
/// an f64 sum per token would be ~4× the time of these products, which are already most of
/// the refit's cost.
fn output_stats(
    cfg: &ModelConfig,
    g: Grouping,
    native: &[[Vec<f32>; 3]],
    maps: &LayerMaps,
) -> OutputStats {
    let (hd, n_heads) = (cfg.head_dim, cfg.n_heads);
    let width = n_heads * hd;
    let attend = |q, k, v, grouping| attention_outputs(q, k, v, grouping, hd, cfg.rope_base);
    let mut stats = OutputStats::new(n_heads, hd);
    for [q, k0, v0] in native {
        let o = attend(q.clone(), k0.clone(), v0.clone(), Grouping::native(cfg));
        let mut qm = q.clone();
        maps.map_q(&mut qm, n_heads, hd);
        let a = attend(qm, maps.map_k(k0, g, hd), maps.map_v(v0, g, hd), g);
        let (ot, at, t) = (transpose(&o, width), transpose(&a, width), o.len() / width);
        let aa = ops::matmul(&at, &at, t);
        let oa = ops::matmul(&ot, &at, t);
        stats.add_products(&aa, &oa, &ops::matmul(&ot, &ot, t), t);
    }
    stats
}

/// Causal attention over one calibration sequence (positions from 0), as the engines compute
/// it: q `[t][H·hd]` and K, V `[t][G·hd]` of `grouping`'s heads, before RoPE (turned here).
/// Returns each query head's output, before any O map: `[t][H·hd]`.
fn attention_outputs(
    mut q: Vec<f32>,
    mut k: Vec<f32>,
    v: Vec<f32>,
    grouping: Grouping,
    hd: usize,
    rope_base: f32,
) -> Vec<f32> {
    let (n_heads, groups) = (grouping.n_heads(), grouping.groups());
    let t = k.len() / (groups * hd);
    for (i, (qi, ki)) in q
        .chunks_exact_mut(n_heads * hd)
        .zip(k.chunks_exact_mut(groups * hd))
        .enumerate()
    {
        ops::rope(qi, hd, i, rope_base);
        ops::rope(ki, hd, i, rope_base);
    }
    // K and V head by head: `[G][t][hd]`, the layout causal attention reads.
    let (k, v) = (by_head(&k, groups, hd), by_head(&v, groups, hd));
    ops::causal_attention(&q, &k, &v, &grouping.kv_heads(), t, 0, hd, 0)
}

/// `[t][heads·hd]` as `[heads][t][hd]`.
fn by_head(x: &[f32], heads: usize, hd: usize) -> Vec<f32> {
    let t = x.len() / (heads * hd);
    let mut out = Vec::with_capacity(x.len());
    for h in 0..heads {
        for i in 0..t {
            out.extend_from_slice(&x[(i * heads + h) * hd..][..hd]);
        }
    }
    out
}

/// `[rows][cols]` as `[cols][rows]`.
fn transpose(x: &[f32], cols: usize) -> Vec<f32> {
    let rows = x.len() / cols;
    let mut out = vec![0.0f32; x.len()];
    for (r, row) in x.chunks_exact(cols).enumerate() {
        for (c, &value) in row.iter().enumerate() {
            out[c * rows + r] = value;
        }
    }
    out
}
