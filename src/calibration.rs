//! Calibrating a merge of KV heads: the layer-by-layer loop that fits a calibrated
//! [`Regrouping`] (`model/calibrate.rs` has the arithmetic) on the built-in calibration text,
//! and the file format fitted maps are cached in.
//!
//! Layer l is fitted on the activations of the model already merged below l: every
//! calibration sequence is carried through the layers one layer at a time, layer l's native
//! projections feed its statistics, its maps are fitted and set, and then the layer runs
//! with them to give the next layer's input. (On SmolLM2-135M at G = 1 this gives a
//! perplexity of ~95 where fitting every layer on the native model's activations gives ~116:
//! the NumPy reference.)
//!
//! Between the fit and the run, the layer's O maps are refitted by least squares
//! (`model/orefit.rs`, on by default: [`FitSettings`]). Its statistics need the layer's
//! attention outputs, natively and through the fitted K, q and V maps; both are computed here
//! on the CPU from the native projections the walk already gave ([`LayerWalk::native_qkv`]:
//! RoPE, then causal attention within each sequence from position 0, with `cpu::ops`), so
//! every engine that walks (the CPU oracle, the GPU engine) gets the refit without a method
//! of its own. Cost on 2 cores: at 8192 tokens ~45% more than the base fit (123 s per G
//! instead of 85 s), mostly the statistics (two attentions and three `[H·hd]²` products per
//! sequence); at 2048 tokens about twice (35–41 s instead of ~20 s: with fewer tokens the
//! system is worse conditioned and the conjugate gradients take more steps).

use crate::cpu::ops;
use crate::engine::EngineError;
use crate::gguf::Gguf;
use crate::model::{
    FitError, Grouping, LayerMaps, LayerStats, Method, ModelConfig, ModelError, ModelTensors,
    OutputStats, Regrouping, VMap,
};
use std::sync::Arc;

/// The built-in calibration text: Jules Verne, *Around the World in Eighty Days* (1873
/// English translation), chapters I–V, public domain; from Project Gutenberg eBook #103 as
/// the `esaxx-rs` 0.1.10 crate ships it in its test data, the Gutenberg header removed. It is
/// not the evaluation passage (Austen, `../shared/fixtures/perplexity.json`) nor any fixture.
pub const TEXT: &str = include_str!("../static/calibration/around-the-world-in-80-days.txt");

/// A passage the page scores each regrouping on: Wilkie Collins, *The Moonstone* (1868), the
/// prologue's opening, public domain, from Project Gutenberg eBook #155 as the `htmlescape`
/// 0.3.1 crate ships it. Another book than the calibration text, and not the fixtures'
/// evaluation passage (which the CLI and the tests score).
pub const EVALUATION: &str = include_str!("../static/calibration/evaluation.txt");

/// Where [`EVALUATION`] comes from, for reports.
pub const EVALUATION_SOURCE: &str =
    "Wilkie Collins, The Moonstone (1868), prologue, public domain (Project Gutenberg #155)";

/// Where [`TEXT`] comes from, for reports.
pub const TEXT_SOURCE: &str = "Jules Verne, Around the World in Eighty Days (1873), ch. I–V, public domain (Project Gutenberg #103)";

/// Calibration tokens by default, and the length of each sequence they are cut into.
pub const DEFAULT_TOKENS: usize = 8192;
pub const SEQUENCE: usize = 512;

/// An engine that calibration can carry through the layers one at a time. Async, so that
/// the browser's GPU engine can await its readbacks (natively: `pollster::block_on`).
#[allow(async_fn_in_trait)]
pub trait LayerWalk {
    /// Regroups to `r` (every layer's maps in the full form of a calibrated merge: dense V,
    /// q and output maps) with an empty cache of at least [`SEQUENCE`] positions.
    fn start(&mut self, r: Arc<Regrouping>) -> Result<(), EngineError>;
    /// Embedding rows of `ids`: `[t][dim]`.
    async fn embed_rows(&mut self, ids: &[u32]) -> Result<Vec<f32>, EngineError>;
    /// Layer `l`'s native q, k0, v0 (before any map and RoPE) for its input `x` (`[t][dim]`):
    /// `[t][H·hd]`, `[t][G0·hd]`, `[t][G0·hd]`.
    async fn native_qkv(&mut self, l: usize, x: &[f32]) -> Result<[Vec<f32>; 3], EngineError>;
    /// Runs layer `l` on one sequence `x` (positions from 0) with its current maps, in place.
    async fn run_layer(&mut self, l: usize, x: &mut [f32]) -> Result<(), EngineError>;
    /// Sets layer `l`'s maps (full form, of the grouping [`LayerWalk::start`] was given).
    fn set_layer_maps(&mut self, l: usize, maps: &LayerMaps) -> Result<(), EngineError>;
}

/// One layer done.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Progress {
    pub layer: usize,
    pub layers: usize,
    pub error: FitError,
}

/// Fits the calibrated merge to `grouping` on `ids` with the default [`FitSettings`]: see
/// [`calibrate_with`].
pub async fn calibrate<W: LayerWalk>(
    walk: &mut W,
    gguf: &Gguf<'_>,
    grouping: Grouping,
    ids: &[u32],
    on_layer: &mut dyn FnMut(Progress),
) -> Result<Regrouping, EngineError> {
    let settings = FitSettings::default();
    calibrate_with(walk, gguf, grouping, ids, settings, on_layer).await
}

/// Fits the calibrated merge to `grouping` on `ids` (cut into sequences of [`SEQUENCE`]
/// tokens, or fewer than that if there are fewer: at least 64), reporting each layer. The
/// walk is left regrouped as fitted, its cache empty; give the result to the engine that
/// will run it. For G ≥ G0 there is nothing to fit: the result is the exact copy of the
/// native heads.
pub async fn calibrate_with<W: LayerWalk>(
    walk: &mut W,
    gguf: &Gguf<'_>,
    grouping: Grouping,
    ids: &[u32],
    settings: FitSettings,
    on_layer: &mut dyn FnMut(Progress),
) -> Result<Regrouping, EngineError> {
    let cfg = ModelConfig::from_gguf(gguf)?;
    let mut r = Regrouping::mean(&cfg, grouping);
    if !grouping.merges() {
        return Ok(r);
    }
    let seq = SEQUENCE.min(ids.len());
    if seq < MIN_TOKENS {
        let why = format!("it needs at least {MIN_TOKENS} tokens, got {}", ids.len());
        return Err(calibration_error(why));
    }
    let expanded = LayerMaps::expanded(grouping, cfg.head_dim);
    let mut start = r.clone();
    start.layers = vec![expanded; cfg.n_layers];
    walk.start(Arc::new(start))?;
    let tensors = ModelTensors::locate(gguf, &cfg)?;
    let mut xs = Vec::new();
    for s in ids.chunks_exact(seq) {
        xs.push(walk.embed_rows(s).await?);
    }
    for l in 0..cfg.n_layers {
        let mut native = Vec::with_capacity(xs.len());
        for x in &xs {
            native.push(walk.native_qkv(l, x).await?);
        }
        let wo = gguf
            .dequantize(tensors.layers[l].wo)
            .map_err(ModelError::from)?;
        let layer = Layer {
            cfg: &cfg,
            grouping,
            native: &native,
        };
        let (maps, error) = layer.fit(&wo, settings)?;
        walk.set_layer_maps(l, &maps)?;
        r.layers[l] = maps;
        for x in &mut xs {
            walk.run_layer(l, x).await?;
        }
        let layers = cfg.n_layers;
        on_layer(Progress {
            layer: l,
            layers,
            error,
        });
    }
    r.method = Method::Calibrated;
    Ok(r)
}

/// How a calibrated merge is fitted, besides its tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitSettings {
    /// The ridge ρ of the O refit (`model/orefit.rs`: λ = ρ · tr(C) / (H·hd), towards the
    /// base O maps); `None` keeps the base O maps.
    pub o_ridge: Option<f64>,
}

/// The O refit's ridge by default (ARCHITECTURE.md has the measurements behind it).
pub const DEFAULT_O_RIDGE: f64 = 1.0;

impl Default for FitSettings {
    fn default() -> Self {
        FitSettings {
            o_ridge: Some(DEFAULT_O_RIDGE),
        }
    }
}

impl FitSettings {
    /// A short name, for cache keys and reports: `o-ridge=0.1`, or `base`.
    pub fn label(&self) -> String {
        match self.o_ridge {
            Some(r) => format!("o-ridge={r:e}"),
            None => "base".into(),
        }
    }
}

/// One layer's native projections over the calibration sequences, as
/// [`LayerWalk::native_qkv`] gives them (one `[q, k0, v0]` per sequence).
struct Layer<'a> {
    cfg: &'a ModelConfig,
    grouping: Grouping,
    native: &'a [[Vec<f32>; 3]],
}

impl Layer<'_> {
    /// The layer's maps from its output projection `wo` (`[dim][H·hd]`): the base fit
    /// (`model/calibrate.rs`), then the O refit if `settings` ask for one.
    fn fit(&self, wo: &[f32], settings: FitSettings) -> Result<(LayerMaps, FitError), EngineError> {
        let mut stats = LayerStats::new(self.grouping, self.cfg.head_dim);
        for [q, k0, v0] in self.native {
            stats.add(q, k0, v0);
        }
        let (mut maps, mut error) = stats.fit(wo).map_err(calibration_error)?;
        if let Some(ridge) = settings.o_ridge {
            let base = maps.o_or_identity(self.cfg.n_heads, self.cfg.head_dim);
            let stats = self.output_stats(&maps);
            let (o, fit) = stats.refit(wo, &base, ridge).map_err(calibration_error)?;
            maps.o = Some(o);
            error.o = Some(fit);
        }
        Ok((maps, error))
    }

    /// The O refit's statistics: per sequence, the native attention outputs o and the merged
    /// ones a (through `maps`' K, q and V), and their products `Σ a aᵀ`, `Σ o aᵀ`, `Σ o oᵀ`
    /// summed in f32 over the sequence by `ops::matmul` (SIMD dot products on all cores; 512
    /// terms, each sum's rounding ~1e-6 relative, far inside the ridge), then added in f64
    /// across sequences: an f64 sum per token would be ~4× the time of these products, which
    /// are already most of the refit's cost.
    fn output_stats(&self, maps: &LayerMaps) -> OutputStats {
        let (g, hd, n_heads) = (self.grouping, self.cfg.head_dim, self.cfg.n_heads);
        let native = Grouping::native(self.cfg);
        let width = n_heads * hd;
        let attend =
            |q, k, v, grouping| attention_outputs(q, k, v, grouping, hd, self.cfg.rope_base);
        let mut stats = OutputStats::new(n_heads, hd);
        for [q, k0, v0] in self.native {
            let o = attend(q.clone(), k0.clone(), v0.clone(), native);
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
    // K and V head by head: `[G][t][hd]`, so a query's visible rows are contiguous.
    let (k, v) = (by_head(&k, groups, hd), by_head(&v, groups, hd));
    let scale = 1.0 / (hd as f32).sqrt();
    let mut out = vec![0.0f32; q.len()];
    ops::for_each_chunk(&mut out, hd, |ih, o| {
        let (i, h) = (ih / n_heads, ih % n_heads);
        let rows = grouping.kv_head(h) * t * hd..(grouping.kv_head(h) * t + i + 1) * hd;
        ops::attend(
            &q[ih * hd..(ih + 1) * hd],
            &k[rows.clone()],
            &v[rows],
            scale,
            o,
        );
    });
    out
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

/// Fewest calibration tokens [`calibrate`] takes (a smoke test's worth; the fit wants
/// thousands).
pub const MIN_TOKENS: usize = 64;

fn calibration_error(why: String) -> EngineError {
    EngineError::Model(ModelError::BadConfig(format!("calibration: {why}")))
}

/// File format of fitted maps: `GQAMAPS1`, a little-endian u32 header length, a JSON header
/// (the grouping, the method, and per layer the kind and length of each map), then every
/// map's f32 values, little-endian, in the header's order.
const MAGIC: &[u8; 8] = b"GQAMAPS1";

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    n_heads: usize,
    native_groups: usize,
    groups: usize,
    head_dim: usize,
    method: String,
    /// Per layer: [k, v, q, o] lengths in f32 values; v negative for pooling weights.
    layers: Vec<[i64; 4]>,
}

impl Header {
    fn of(r: &Regrouping) -> Self {
        let layers = r
            .layers
            .iter()
            .map(|m| {
                let v = match &m.v {
                    VMap::Pool(w) => -(w.len() as i64),
                    VMap::Dense(w) => w.len() as i64,
                };
                let q = m.q.as_ref().map_or(0, |q| 2 * q.len() as i64);
                [
                    2 * m.k.len() as i64,
                    v,
                    q,
                    m.o.as_ref().map_or(0, |o| o.len() as i64),
                ]
            })
            .collect();
        Header {
            n_heads: r.grouping.n_heads(),
            native_groups: r.grouping.native_groups(),
            groups: r.groups(),
            head_dim: r.head_dim,
            method: r.method.name().into(),
            layers,
        }
    }
}

/// `r` as bytes ([`MAGIC`] format).
pub fn to_bytes(r: &Regrouping) -> Vec<u8> {
    let header = serde_json::to_vec(&Header::of(r)).unwrap_or_default();
    let mut out = MAGIC.to_vec();
    out.extend((header.len() as u32).to_le_bytes());
    out.extend(header);
    for m in &r.layers {
        let v = match &m.v {
            VMap::Pool(w) | VMap::Dense(w) => w,
        };
        let values =
            m.k.iter()
                .flatten()
                .chain(v)
                .chain(m.q.iter().flatten().flatten());
        for x in values.chain(m.o.iter().flatten()) {
            out.extend(x.to_le_bytes());
        }
    }
    out
}

/// Maps read back from bytes of [`to_bytes`], checked against the model of `cfg`; any
/// damage is an error (a cache file is outside data).
pub fn from_bytes(bytes: &[u8], cfg: &ModelConfig) -> Result<Regrouping, ModelError> {
    let bad = |why: &str| ModelError::BadConfig(format!("cached maps: {why}"));
    let rest = bytes
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("not a maps file"))?;
    let (len, rest) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| bad("truncated"))?;
    let len = u32::from_le_bytes(*len) as usize;
    let (head, mut data) = (rest.get(..len), rest.get(len..).unwrap_or_default());
    let h: Header = head
        .and_then(|b| serde_json::from_slice(b).ok())
        .ok_or_else(|| bad("unreadable header"))?;
    let grouping = Grouping::new(h.n_heads, h.native_groups, h.groups)?;
    let method = Method::parse(&h.method).ok_or_else(|| bad("unknown method"))?;
    let mut take = |n: i64| -> Result<Vec<f32>, ModelError> {
        let n = usize::try_from(n.unsigned_abs()).map_err(|_| bad("bad length"))?;
        let bytes = data.get(..n.checked_mul(4).ok_or_else(|| bad("bad length"))?);
        let bytes = bytes.ok_or_else(|| bad("truncated"))?;
        data = &data[n * 4..];
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let pairs = |v: Vec<f32>| v.chunks_exact(2).map(|c| [c[0], c[1]]).collect::<Vec<_>>();
    let mut layers = Vec::with_capacity(h.layers.len().min(1024));
    for [k, v, q, o] in h.layers {
        let k = pairs(take(k)?);
        let v = match v < 0 {
            true => VMap::Pool(take(v)?),
            false => VMap::Dense(take(v)?),
        };
        let q = (q > 0).then(|| take(q).map(pairs)).transpose()?;
        let o = (o > 0).then(|| take(o)).transpose()?;
        layers.push(LayerMaps { k, v, q, o });
    }
    if !data.is_empty() {
        return Err(bad("trailing bytes"));
    }
    let r = Regrouping {
        grouping,
        method,
        head_dim: h.head_dim,
        layers,
    };
    r.check(cfg)?;
    Ok(r)
}
