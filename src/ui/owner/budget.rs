//! A KV budget on the page (`budget=B`): B KV heads per layer on average, each layer's G chosen
//! by its measured sensitivity, as the CLI's `--kv-budget` does (`regroup::budget`). The
//! sensitivities (the loss with one layer alone merged to each G below G0) are scored here
//! through the page's engine on a few tokens of the built-in calibration text
//! ([`budget_tokens`]: few on a software adapter or the CPU, more on a hardware GPU), with the
//! status line counting the layers, and kept in Cache Storage per model, method and token
//! count. The heads are then spent greedily (`regroup::budget::spend`) and each layer's maps
//! taken from the uniform regrouping at its G with the settings' method (a calibrated one not
//! fitted yet is fitted first, as a change of G fits it).

use super::regroup::{self, read_cached, regrouping_for, store};
use super::session::Session;
use crate::engine::EngineError;
use crate::model::ModelError;
use crate::regroup::budget::{budget_heads, spend, Sensitivity};
use crate::regroup::{FitSettings, MapsKey, Method, Regrouping};
use crate::ui::state::run::Status;
use crate::ui::state::Page;
use leptos::prelude::*;
use std::sync::Arc;

/// Calibration tokens each sensitivity is scored on where the CPU's cores run the model (a
/// software adapter or the CPU engine): `layers · (G0 − 1) + 1` scorings (61 on SmolLM2).
pub const SOFTWARE_TOKENS: usize = 64;
/// The same on a hardware GPU.
pub const HARDWARE_TOKENS: usize = 256;

/// Tokens the page scores each sensitivity on, for this engine.
pub fn budget_tokens(s: &Session) -> usize {
    let n = match s.engine.is_software() {
        true => SOFTWARE_TOKENS,
        false => HARDWARE_TOKENS,
    };
    n.min(s.engine.capacity())
}

fn bad(why: String) -> EngineError {
    EngineError::Model(ModelError::BadConfig(why))
}

/// What the budget's maps come from: `mean`, or the calibrated merge's key at the page's
/// calibration tokens (its maps at each G; the sensitivities depend on them).
fn maps_name(page: Page, s: &Session, method: Method) -> String {
    match method {
        Method::Mean => "mean".into(),
        Method::Calibrated => {
            let tokens = regroup::calibration_tokens(page, s);
            let key = MapsKey::new(&s.sha256, 1, tokens, FitSettings::default());
            key.file_name().trim_end_matches(".bin").to_string()
        }
    }
}

/// Brings the engine to a budget of `budget` heads per layer with the settings' method, where
/// it is not there; returns whether its cache was rebuilt.
pub async fn follow(page: Page, s: &mut Session, budget: f64) -> Result<bool, EngineError> {
    let cfg = s.engine.config().clone();
    let total = budget_heads(&cfg, budget).map_err(|e| bad(e.to_string()))?;
    let method = page.settings.with_untracked(|st| st.regroup);
    let key = (total, maps_name(page, s, method));
    if let Some(r) = s.budgets.get(&key) {
        if Arc::ptr_eq(r, &s.engine.regrouping()) {
            return Ok(false);
        }
        let r = r.clone();
        return s.engine.regroup_with(r).await.map(|()| true);
    }
    let merged = uniform_merges(page, s, method).await?;
    let refs: Vec<&Regrouping> = merged.iter().map(|r| r.as_ref()).collect();
    let sens = sensitivities(page, s, &key.1, &refs).await?;
    let r = Arc::new(spend(&sens, &cfg, &refs, total)?);
    s.budgets.insert(key, r.clone());
    s.engine.regroup_with(r).await.map(|()| true)
}

/// The uniform regroupings at G = 1 .. G0 − 1 with `method` (calibrated ones fitted where
/// missing).
async fn uniform_merges(
    page: Page,
    s: &mut Session,
    method: Method,
) -> Result<Vec<Arc<Regrouping>>, EngineError> {
    let mut merged = Vec::new();
    for g in 1..s.engine.config().n_kv_heads {
        merged.push(regrouping_for(page, s, g, method).await?);
    }
    Ok(merged)
}

/// Each layer's sensitivity: from this session, from Cache Storage, or scored now (and kept).
async fn sensitivities(
    page: Page,
    s: &mut Session,
    maps: &str,
    merged: &[&Regrouping],
) -> Result<Arc<Sensitivity>, EngineError> {
    let cfg = s.engine.config().clone();
    let tokens = budget_tokens(s);
    let name = format!("{}-{maps}-{tokens}", &s.sha256[..16.min(s.sha256.len())]);
    if let Some(sens) = s.sensitivities.get(&name) {
        return Ok(sens.clone());
    }
    let path = format!("/sensitivity/{name}.json");
    let cached = read_cached(&path)
        .await
        .and_then(|b| serde_json::from_slice::<Sensitivity>(&b).ok())
        .filter(|c| c.rise.len() == cfg.n_layers);
    let sens = match cached {
        Some(c) => c,
        None => {
            let c = score(page, s, merged, tokens).await?;
            store(&path, serde_json::to_vec(&c).unwrap_or_default()).await;
            c
        }
    };
    let sens = Arc::new(sens);
    s.sensitivities.insert(name, sens.clone());
    Ok(sens)
}

/// Scores each layer alone merged to each G below G0 (`crate::engine::budget::sensitivity`,
/// here through the page's engine, wherever it runs) on the first `tokens` of the calibration
/// text. The engine is left regrouped as the last scoring had it.
async fn score(
    page: Page,
    s: &mut Session,
    merged: &[&Regrouping],
    tokens: usize,
) -> Result<Sensitivity, EngineError> {
    let cfg = s.engine.config().clone();
    let ids = s
        .tok
        .encode(crate::regroup::texts::TEXT, false)
        .map_err(|e| bad(format!("tokenizing the calibration text: {e}")))?;
    let ids = &ids[..tokens.clamp(2, ids.len().max(2)).min(ids.len())];
    let layers = cfg.n_layers;
    let status = |layer| {
        page.run.status.set(Status::Scoring {
            layer,
            layers,
            tokens: ids.len(),
        })
    };
    status(0);
    let native = Regrouping::native(&cfg);
    s.engine.regroup_with(Arc::new(native.clone())).await?;
    let native_nll = s.engine.perplexity(ids).await?.ln();
    let mut rise = Vec::with_capacity(layers);
    for l in 0..layers {
        let mut row = Vec::with_capacity(merged.len());
        for &m in merged {
            let mut sources = vec![&native; layers];
            sources[l] = m;
            let r = Regrouping::pick_layers(&cfg, &sources)?;
            s.engine.regroup_with(Arc::new(r)).await?;
            row.push(s.engine.perplexity(ids).await?.ln() - native_nll);
        }
        rise.push(row);
        status(l + 1);
    }
    Ok(Sensitivity {
        rise,
        native_nll,
        tokens: ids.len(),
    })
}
