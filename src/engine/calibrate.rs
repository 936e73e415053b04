//! The calibration walk: carries an engine ([`LayerWalk`]) through the layers one at a time
//! and fits each layer's calibrated maps (`crate::regroup::layer`) on the activations of the
//! model already merged below it. Every calibration sequence is carried through the layers
//! together: layer l's native projections feed its fit, its maps are set, and then the layer
//! runs with them to give the next layer's input, so each layer's fit also sees the drift of
//! the merged layers below it (what each fit gives: benches/README.md, "Calibration").
//!
//! Each layer's statistics are gathered a sequence at a time (`LayerFit`): the walk holds the
//! hidden states of every sequence, `[tokens][dim]`, but no more than one sequence's
//! projections. When the O refit aims at the native model's stream
//! ([`crate::regroup::OTarget::Stream`]), the walk also carries that stream, the native
//! layers run on it, so that each merged layer's attention is fitted to what the native model
//! puts there at the same tokens.

use super::{EngineError, LayerWalk};
use crate::gguf::Gguf;
use crate::model::ModelConfig;
use crate::model::ModelTensors;
use crate::regroup::layer::LayerFit;
use crate::regroup::{calibration_sequences, sequence_len, MIN_TOKENS};
use crate::regroup::{FitError, FitSettings, Grouping, LayerMaps, Method, OTarget, Regrouping};
use std::sync::Arc;

/// One layer done.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Progress {
    pub layer: usize,
    pub layers: usize,
    pub error: FitError,
}

/// What of an architecture the calibrated fit does not model yet (its statistics recompute
/// attention from the native projections with llama's RoPE and no window), if anything.
fn unfitted_variation(cfg: &ModelConfig) -> Option<&'static str> {
    let a = &cfg.arch;
    [
        (a.qkv_bias, "Q/K/V biases"),
        (a.rope_freqs.is_some(), "RoPE frequency factors"),
        (a.qk_norm, "query/key norms"),
        (a.sliding_window > 0, "sliding-window layers"),
    ]
    .into_iter()
    .find_map(|(on, what)| on.then_some(what))
}

/// Fits the calibrated merge to `grouping` on `ids` with the default [`FitSettings`]: see
/// [`calibrate_with`].
pub async fn calibrate<W: LayerWalk + ?Sized>(
    walk: &mut W,
    gguf: &Gguf<'_>,
    grouping: Grouping,
    ids: &[u32],
    on_layer: &mut dyn FnMut(Progress),
) -> Result<Regrouping, EngineError> {
    let settings = FitSettings::default();
    calibrate_with(walk, gguf, grouping, ids, settings, on_layer).await
}

/// Fits the calibrated merge to `grouping` on every token of `ids` (cut into as few sequences
/// as hold them, of at most [`crate::regroup::SEQUENCE`] tokens or the model's context if
/// shorter, their lengths within one of each other: [`calibration_sequences`]; at least
/// [`MIN_TOKENS`]), reporting each
/// layer. The walk is left regrouped as fitted, its cache empty; give the result to the engine
/// that will run it. For G ≥ G0 there is nothing to fit: the result is the exact copy of the
/// native heads.
pub async fn calibrate_with<W: LayerWalk + ?Sized>(
    walk: &mut W,
    gguf: &Gguf<'_>,
    grouping: Grouping,
    ids: &[u32],
    settings: FitSettings,
    on_layer: &mut dyn FnMut(Progress),
) -> Result<Regrouping, EngineError> {
    let layers = ModelConfig::from_gguf(gguf)?.n_layers;
    calibrate_layers(walk, gguf, &vec![grouping; layers], ids, settings, on_layer).await
}

/// [`calibrate_with`] for a grouping per layer (`[layers]`): each layer that merges is fitted
/// at its own G, on the activations of the model merged below it; a layer at G ≥ G0 is the
/// exact split.
pub async fn calibrate_layers<W: LayerWalk + ?Sized>(
    walk: &mut W,
    gguf: &Gguf<'_>,
    groupings: &[Grouping],
    ids: &[u32],
    settings: FitSettings,
    on_layer: &mut dyn FnMut(Progress),
) -> Result<Regrouping, EngineError> {
    let cfg = ModelConfig::from_gguf(gguf)?;
    let mut r = Regrouping::mean_layers(&cfg, groupings)?;
    if !r.merges() {
        return Ok(r);
    }
    if let Some(what) = unfitted_variation(&cfg) {
        let why = format!(
            "the fit takes llama's attention as it is, and this {} model has {what}: use mean-pooling (--regroup mean)",
            cfg.arch.name
        );
        return Err(EngineError::Calibration(why));
    }
    if let Some(ridge) = settings.o_ridge {
        crate::regroup::check_o_ridge(ridge).map_err(EngineError::Calibration)?;
    }
    let seq = sequence_len(&cfg).min(ids.len());
    if seq < MIN_TOKENS {
        let why = match ids.len() < MIN_TOKENS {
            true => format!("it needs at least {MIN_TOKENS} tokens, got {}", ids.len()),
            false => format!(
                "it needs sequences of at least {MIN_TOKENS} positions, and this model's context is {}: use mean-pooling (--regroup mean)",
                cfg.context_length
            ),
        };
        return Err(EngineError::Calibration(why));
    }
    // The merged model so far: fitted below the current layer, pooled (in the full form) above.
    let mut merged = r.clone();
    merged.layers = (0..cfg.n_layers)
        .map(|l| LayerMaps::expanded(r.layer_grouping(l), cfg.head_dim))
        .collect();
    walk.start(Arc::new(merged.clone()))?;
    let tensors = ModelTensors::locate(gguf, &cfg)?;
    let mut xs = Vec::new(); // per sequence: [seq][dim]
    for s in calibration_sequences(ids.len(), seq) {
        xs.push(walk.embed_rows(&ids[s]).await?);
    }
    // The native model's stream at the same tokens, when the O refit aims at it.
    let mut natives = settings.walks_native_stream().then(|| xs.clone());
    let native = Arc::new(Regrouping::native(&cfg));
    for l in 0..cfg.n_layers {
        let grouping = r.layer_grouping(l);
        // A layer at G ≥ G0 is the exact split (started as such): nothing to fit.
        let mut error = FitError::default();
        if grouping.merges() {
            let wo = tensors.layers[l].wo.f32(gguf)?; // [dim][H·hd]
            let on = Sequences {
                xs: &xs,
                natives: natives.as_deref(),
            };
            let (maps, e) = fit_one(walk, (&cfg, l, grouping), &wo, settings, on).await?;
            merged.layers[l] = maps.clone();
            if natives.is_none() {
                walk.set_layer_maps(l, &maps)?;
            }
            r.layers[l] = maps;
            error = e;
        }
        if let Some(n) = &mut natives {
            walk.start(native.clone())?;
            for x in n.iter_mut() {
                walk.run_layer(l, x).await?;
            }
            walk.start(Arc::new(merged.clone()))?;
        }
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

/// The calibration sequences at a layer's input (`[seq][dim]` each): the merged model's, and
/// the native model's when the walk carries its stream.
struct Sequences<'a> {
    xs: &'a [Vec<f32>],
    natives: Option<&'a [Vec<f32>]>,
}

/// Fits layer `l` to `grouping` on the sequences, a sequence at a time (`LayerFit`): its
/// statistics, then the temperatures' and the O refit's passes if the settings ask.
async fn fit_one<W: LayerWalk + ?Sized>(
    walk: &mut W,
    (cfg, l, grouping): (&ModelConfig, usize, Grouping),
    wo: &[f32],
    settings: FitSettings,
    on: Sequences<'_>,
) -> Result<(LayerMaps, FitError), EngineError> {
    let at = |why: String| EngineError::Calibration(format!("layer {l}: {why}"));
    let mut fit = LayerFit::new(cfg, grouping, wo, settings).map_err(at)?;
    for x in on.xs {
        fit.add(&walk.native_qkv(l, x).await?).map_err(at)?;
    }
    if fit.fit_base().map_err(at)? {
        for x in on.xs {
            fit.add_scores(&walk.native_qkv(l, x).await?).map_err(at)?;
        }
    }
    if fit.fit_scores() {
        for (i, x) in on.xs.iter().enumerate() {
            let here = walk.native_qkv(l, x).await?;
            let (target, drift) = match on.natives {
                Some(n) => {
                    let drift = (settings.o_target == OTarget::Residual)
                        .then(|| n[i].iter().zip(x).map(|(a, b)| a - b).collect::<Vec<f32>>());
                    (Some(walk.native_qkv(l, &n[i]).await?), drift)
                }
                None => (None, None),
            };
            let target = target.as_ref().unwrap_or(&here);
            fit.add_outputs(&here, target, drift.as_deref())
                .map_err(at)?;
        }
    }
    fit.finish().map_err(at)
}
