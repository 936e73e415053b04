//! The calibration walk: carries an engine ([`LayerWalk`]) through the layers one at a time
//! and fits each layer's calibrated maps (`crate::regroup::layer`) on the activations of the
//! model already merged below it. Every calibration sequence is carried through the layers
//! together: layer l's native projections feed its fit, its maps are set, and then the layer
//! runs with them to give the next layer's input, so each layer's fit also sees the drift of
//! the merged layers below it (what each fit gives: benches/README.md, "Calibration").

use super::{EngineError, LayerWalk};
use crate::gguf::Gguf;
use crate::model::ModelConfig;
use crate::model::ModelTensors;
use crate::regroup::layer::fit_layer;
use crate::regroup::{calibration_sequences, sequence_len, MIN_TOKENS};
use crate::regroup::{FitError, FitSettings, Grouping, LayerMaps, Method, Regrouping};
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
    let mut start = r.clone();
    start.layers = (0..cfg.n_layers)
        .map(|l| LayerMaps::expanded(r.layer_grouping(l), cfg.head_dim))
        .collect();
    walk.start(Arc::new(start))?;
    let tensors = ModelTensors::locate(gguf, &cfg)?;
    let mut xs = Vec::new(); // per sequence: [seq][dim]
    for s in calibration_sequences(ids.len(), seq) {
        xs.push(walk.embed_rows(&ids[s]).await?);
    }
    for l in 0..cfg.n_layers {
        let grouping = r.layer_grouping(l);
        if !grouping.merges() {
            // The exact split (started as such): nothing to fit.
            for x in &mut xs {
                walk.run_layer(l, x).await?;
            }
            let (layer, layers) = (l, cfg.n_layers);
            let error = FitError::default();
            on_layer(Progress {
                layer,
                layers,
                error,
            });
            continue;
        }
        let mut native = Vec::with_capacity(xs.len());
        for x in &xs {
            native.push(walk.native_qkv(l, x).await?);
        }
        let wo = tensors.layers[l].wo.f32(gguf)?; // [dim][H·hd]
        let (maps, error) = fit_layer(&cfg, grouping, &native, &wo, settings)
            .map_err(|why| EngineError::Calibration(format!("layer {l}: {why}")))?;
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
