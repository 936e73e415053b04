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

use super::qscale::ScoreStats;
use super::{FitError, FitSettings, Grouping, LayerMaps, LayerStats, OutputStats};
use crate::model::{rope_turns, ModelConfig};
use crate::ops;

/// One sequence's native projections at a layer: `[q, k0, v0]`, `[t][H·hd]`, `[t][G0·hd]`,
/// `[t][G0·hd]`, before RoPE.
pub type Projections = [Vec<f32>; 3];

/// One layer's fit, fed a sequence at a time so that no more than one sequence's activations
/// are held: [`LayerFit::add`] every sequence, [`LayerFit::fit_base`], then if it asks for the
/// outputs, [`LayerFit::add_outputs`] every sequence again, then [`LayerFit::finish`].
pub struct LayerFit<'a> {
    cfg: &'a ModelConfig,
    grouping: Grouping,
    wo: &'a [f32],
    settings: FitSettings,
    stats: LayerStats,
    base: Option<(LayerMaps, FitError)>,
    scores: Option<ScoreStats>,
    outputs: Option<OutputStats>,
}

impl<'a> LayerFit<'a> {
    /// The fit of one layer to `grouping`, its output projection `wo` (`[dim][H·hd]`).
    pub fn new(
        cfg: &'a ModelConfig,
        grouping: Grouping,
        wo: &'a [f32],
        settings: FitSettings,
    ) -> Result<Self, String> {
        if let Some(ridge) = settings.o_ridge {
            super::check_o_ridge(ridge)?;
        }
        if !finite(wo) {
            return Err("the layer's attn_output weights hold NaN or infinity: the model's weights may be damaged".into());
        }
        Ok(LayerFit {
            cfg,
            grouping,
            wo,
            settings,
            stats: LayerStats::new(grouping, cfg.head_dim),
            base: None,
            scores: None,
            outputs: None,
        })
    }

    /// Adds one sequence's native projections to the statistics of K, q and V.
    pub fn add(&mut self, [q, k0, v0]: &Projections) -> Result<(), String> {
        check_finite([q, k0, v0])?;
        self.stats.add(q, k0, v0);
        Ok(())
    }

    /// Fits K, q, V and the base O maps; returns whether the temperatures want the
    /// sequences again ([`LayerFit::add_scores`], then [`LayerFit::fit_scores`]).
    pub fn fit_base(&mut self) -> Result<bool, String> {
        self.base = Some(self.stats.fit(self.wo, self.settings.k_slots)?);
        let (h, hd) = (self.cfg.n_heads, self.cfg.head_dim);
        self.scores = self.settings.q_scale.then(|| ScoreStats::new(h));
        self.outputs = self.settings.o_ridge.map(|_| OutputStats::new(h, hd));
        Ok(self.scores.is_some())
    }

    /// Adds one sequence's scores, native and merged, to the temperatures' statistics.
    pub fn add_scores(&mut self, native: &Projections) -> Result<(), String> {
        let (Some((maps, _)), Some(stats)) = (&self.base, &mut self.scores) else {
            return Err("the scores were added before the base fit".into());
        };
        stats.add(self.cfg, (self.grouping, maps), native);
        Ok(())
    }

    /// Scales each query head's q map by its temperature; returns whether the O refit wants
    /// the sequences again ([`LayerFit::add_outputs`]).
    pub fn fit_scores(&mut self) -> bool {
        if let (Some((maps, _)), Some(stats)) = (&mut self.base, &self.scores) {
            let pairs = self.cfg.head_dim / 2;
            let tau = stats.temperatures();
            let q = maps
                .q
                .get_or_insert_with(|| vec![[1.0, 0.0]; tau.len() * pairs]);
            for (m, &t) in q.chunks_exact_mut(pairs).zip(&tau) {
                m.iter_mut().for_each(|c| *c = [c[0] * t, c[1] * t]);
            }
        }
        self.outputs.is_some()
    }

    /// Adds one sequence's attention outputs to the O refit's statistics: the merged ones
    /// from `merged` (the projections the fit saw), the target from `target` (the native
    /// model's projections at the same tokens, or `merged` again).
    /// `drift`, when given, is the native stream's input to the layer less the merged one's
    /// (`[t][dim]`), which the target then includes.
    pub fn add_outputs(
        &mut self,
        merged: &Projections,
        target: &Projections,
        drift: Option<&[f32]>,
    ) -> Result<(), String> {
        check_finite(target.each_ref().map(|x| &x[..]))?;
        let (Some((maps, _)), Some(stats)) = (&self.base, &mut self.outputs) else {
            return Err("the O refit's outputs were added before the base fit".into());
        };
        add_outputs(
            stats,
            self.cfg,
            (self.grouping, maps),
            [merged, target],
            drift,
        );
        Ok(())
    }

    /// The layer's maps and how well they fit.
    pub fn finish(self) -> Result<(LayerMaps, FitError), String> {
        let (mut maps, mut error) = self.base.ok_or("the layer's fit was not made")?;
        if let (Some(ridge), Some(stats)) = (self.settings.o_ridge, &self.outputs) {
            let base = maps.o_or_identity(self.cfg.n_heads, self.cfg.head_dim);
            let (o, fit) = stats.refit(self.wo, &base, ridge)?;
            maps.o = Some(o);
            error.o = Some(fit);
        }
        if !maps.is_finite() {
            return Err("the fit gave non-finite maps (its statistics overflow f32: values past its range in the layer's activations)".into());
        }
        Ok((maps, error))
    }
}

/// Fits one layer's maps to `grouping` from its native projections, one [`Projections`] per
/// calibration sequence, and its output projection `wo` (`[dim][H·hd]`), the O refit's target
/// being the same projections. Errors say why the fit is impossible (no tokens, a ridge out
/// of range, non-finite projections or weights, a singular system).
pub fn fit_layer(
    cfg: &ModelConfig,
    grouping: Grouping,
    native: &[Projections],
    wo: &[f32],
    settings: FitSettings,
) -> Result<(LayerMaps, FitError), String> {
    let mut fit = LayerFit::new(cfg, grouping, wo, settings)?;
    for p in native {
        fit.add(p)?;
    }
    if fit.fit_base()? {
        for p in native {
            fit.add_scores(p)?;
        }
    }
    if fit.fit_scores() {
        for p in native {
            fit.add_outputs(p, p, None)?;
        }
    }
    fit.finish()
}

fn finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

fn check_finite(x: [&[f32]; 3]) -> Result<(), String> {
    match x.iter().all(|x| finite(x)) {
        true => Ok(()),
        false => Err("the layer's Q, K or V of the calibration text hold NaN or infinity (non-finite statistics): the model's weights may be damaged".into()),
    }
}

/// Adds one sequence to the O refit's statistics: the target attention outputs o (native
/// grouping, from `target`) and the merged ones a (through `maps`' K, q and V, from `merged`),
/// and their products `Σ a aᵀ`, `Σ o aᵀ`, `Σ o oᵀ` summed in f32 over the sequence by
/// `ops::matmul` (SIMD dot products on all cores; each sum's rounding ~1e-6 relative, far
/// inside the ridge), then added in f64 across sequences: an f64 sum per token would be ~4×
/// the time of these products, which are already most of the refit's cost.
fn add_outputs(
    stats: &mut OutputStats,
    cfg: &ModelConfig,
    (g, maps): (Grouping, &LayerMaps),
    [[q, k0, v0], [tq, tk, tv]]: [&Projections; 2],
    drift: Option<&[f32]>,
) {
    let (hd, n_heads) = (cfg.head_dim, cfg.n_heads);
    let width = n_heads * hd;
    let native_maps = LayerMaps::pooled(Grouping::native(cfg), hd);
    let attend = |q, k, v, grouping, m: &LayerMaps| {
        attention_outputs(q, k, v, (grouping, m), hd, cfg.rope_base)
    };
    let native = Grouping::native(cfg);
    let o = attend(tq.clone(), tk.clone(), tv.clone(), native, &native_maps);
    let mut qm = q.clone();
    maps.map_q(&mut qm, g, hd);
    let a = attend(qm, maps.map_k(k0, g, hd), maps.map_v(v0, g, hd), g, maps);
    let (ot, at, t) = (transpose(&o, width), transpose(&a, width), o.len() / width);
    let aa = ops::matmul(&at, &at, t);
    let oa = ops::matmul(&ot, &at, t);
    stats.add_products(&aa, &oa, &ops::matmul(&ot, &ot, t), t);
    if let Some(d) = drift {
        let dt = transpose(d, cfg.dim); // [dim][t]
        let dd = d.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        stats.add_drift(&ops::matmul(&dt, &at, t), &ops::matmul(&dt, &ot, t), dd);
    }
}

/// Causal attention over one calibration sequence (positions from 0), as the engines compute
/// it: q `[t][H·hd]` and K, V `[t][G·hd]` of `grouping`'s heads after its maps, before RoPE
/// (turned here, each slot at the angle of the pair its maps put there).
/// Returns each query head's output, before any O map: `[t][H·hd]`.
fn attention_outputs(
    mut q: Vec<f32>,
    mut k: Vec<f32>,
    v: Vec<f32>,
    (grouping, maps): (Grouping, &LayerMaps),
    hd: usize,
    rope_base: f32,
) -> Vec<f32> {
    let (n_heads, groups) = (grouping.n_heads(), grouping.groups());
    let t = k.len() / (groups * hd);
    let (q_kv, k_kv): (Vec<usize>, Vec<usize>) = (grouping.kv_heads(), (0..groups).collect());
    for (i, (qi, ki)) in q
        .chunks_exact_mut(n_heads * hd)
        .zip(k.chunks_exact_mut(groups * hd))
        .enumerate()
    {
        let turns = rope_turns(i, hd, rope_base);
        maps.rotate(qi, &turns, &q_kv);
        maps.rotate(ki, &turns, &k_kv);
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
