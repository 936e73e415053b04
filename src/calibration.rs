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

use crate::engine::EngineError;
use crate::gguf::Gguf;
use crate::model::{
    FitError, Grouping, LayerMaps, LayerStats, Method, ModelConfig, ModelError, ModelTensors,
    Regrouping, VMap,
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

/// Fits the calibrated merge to `grouping` on `ids` (cut into sequences of [`SEQUENCE`]
/// tokens, or fewer than that if there are fewer: at least 64), reporting each layer. The
/// walk is left regrouped as fitted, its cache empty; give the result to the engine that
/// will run it. For G ≥ G0 there is nothing to fit: the result is the exact copy of the
/// native heads.
pub async fn calibrate<W: LayerWalk>(
    walk: &mut W,
    gguf: &Gguf<'_>,
    grouping: Grouping,
    ids: &[u32],
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
        let mut stats = LayerStats::new(grouping, cfg.head_dim);
        for x in &xs {
            let [q, k0, v0] = walk.native_qkv(l, x).await?;
            stats.add(&q, &k0, &v0);
        }
        let wo = gguf
            .dequantize(tensors.layers[l].wo)
            .map_err(ModelError::from)?;
        let (maps, error) = stats.fit(&wo).map_err(calibration_error)?;
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
