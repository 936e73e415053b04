//! Measuring each layer's sensitivity for a KV budget (`regroup::budget`): the calibration
//! loss (mean next-token NLL over the tokens given) with one layer alone merged to G, every
//! other layer native, for every layer and every G below G0 — `layers · (G0 − 1) + 1` scorings
//! (61 on SmolLM2-135M), so the tokens are few (the CLI's default is 512).

use super::{perplexity, Engine, EngineError};
use crate::model::ModelError;
use crate::regroup::budget::{spend, Sensitivity};
use crate::regroup::{calibration_sequences, Regrouping};
use std::sync::Arc;

/// Mean NLL of `ids` under the engine's current regrouping, cut into sequences its cache holds.
async fn loss<E: Engine + ?Sized>(engine: &mut E, ids: &[u32]) -> Result<f64, EngineError> {
    let (mut total, mut count) = (0.0, 0usize);
    for seq in calibration_sequences(ids.len(), engine.capacity()) {
        let p = perplexity(engine, &ids[seq]).await?;
        total += p.nll * p.tokens as f64;
        count += p.tokens;
    }
    Ok(total / count.max(1) as f64)
}

/// Each layer's loss rise on `ids` at each G below G0, its maps from `merged[G − 1]` (uniform
/// regroupings at G = 1 .. G0 − 1, mean-pooled or calibrated); `on_layer(l)` after layer l.
/// The engine is left at its native grouping.
pub async fn sensitivity<E: Engine + ?Sized>(
    engine: &mut E,
    merged: &[&Regrouping],
    ids: &[u32],
    on_layer: &mut dyn FnMut(usize),
) -> Result<Sensitivity, EngineError> {
    let cfg = engine.config().clone();
    let native = Regrouping::native(&cfg);
    if merged.len() + 1 < cfg.n_kv_heads {
        return Err(ModelError::BadConfig(format!(
            "sensitivities need maps for every G below {}",
            cfg.n_kv_heads
        ))
        .into());
    }
    engine.regroup_with(Arc::new(native.clone()))?;
    let native_nll = loss(engine, ids).await?;
    let mut rise = Vec::with_capacity(cfg.n_layers);
    for l in 0..cfg.n_layers {
        let mut row = Vec::with_capacity(cfg.n_kv_heads - 1);
        for m in &merged[..cfg.n_kv_heads - 1] {
            let mut sources = vec![&native; cfg.n_layers];
            sources[l] = m;
            engine.regroup_with(Arc::new(Regrouping::pick_layers(&cfg, &sources)?))?;
            row.push(loss(engine, ids).await? - native_nll);
        }
        rise.push(row);
        on_layer(l);
    }
    engine.regroup_with(Arc::new(native))?;
    Ok(Sensitivity {
        rise,
        native_nll,
        tokens: ids.len(),
    })
}

/// The regrouping for a budget of `total` heads in all: [`sensitivity`] measured, then spent.
pub async fn budget_regrouping<E: Engine + ?Sized>(
    engine: &mut E,
    merged: &[&Regrouping],
    ids: &[u32],
    total: usize,
) -> Result<(Regrouping, Sensitivity), EngineError> {
    let s = sensitivity(engine, merged, ids, &mut |_| {}).await?;
    let r = spend(&s, engine.config(), merged, total)?;
    Ok((r, s))
}
