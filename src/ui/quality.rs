//! "What each G buys", measured here: the perplexity of the built-in passage
//! (`regroup::texts::EVALUATION`) at the native G — every G above it gives the same model — and,
//! for each G below it, with mean-pooling and with the calibrated merge (fitted first if this
//! page has not yet). The engine then goes back to the person's G and method. The figures are
//! kept in the browser's local storage per model and setting, and shown again on the next
//! visit.

use super::regrouping;
use super::session::Session;
use super::state::{Status, Ui};
use crate::engine::EngineError;
use crate::model::ModelError;
use crate::regroup::texts::EVALUATION;
use crate::regroup::Method;
use leptos::prelude::*;
use std::collections::BTreeMap;

/// The (G, method) pairs to score for a model of `g0` KV heads: the native G once, then each
/// G below it with both methods.
pub fn runs(g0: usize) -> Vec<(usize, Method)> {
    let below = (1..g0).flat_map(|g| [(g, Method::Mean), (g, Method::Calibrated)]);
    std::iter::once((g0, Method::Mean)).chain(below).collect()
}

/// Scores every run of [`runs`] on the first `tokens` of the passage into `ui.quality`.
pub async fn measure(ui: Ui, s: &mut Session, tokens: usize) -> Result<(), EngineError> {
    let ids = s.tok.encode(EVALUATION, false).map_err(|e| {
        EngineError::Model(ModelError::BadConfig(format!(
            "tokenizing the passage: {e}"
        )))
    })?;
    let ids = &ids[..tokens.clamp(2, ids.len().max(2)).min(ids.len())];
    let back = (ui.groups.get_untracked(), ui.method.get_untracked());
    let all = runs(s.engine.config().n_kv_heads);
    let result = score_all(ui, s, ids, &all).await;
    let restored = regrouping::apply(ui, s, back.0, back.1).await;
    if result.is_ok() {
        save(&storage_key(ui, s), &ui.quality.get_untracked());
    }
    result.and(restored)
}

/// Where the figures for this model and setting are kept.
fn storage_key(ui: Ui, s: &Session) -> String {
    let tokens = ui.settings.with_untracked(|st| st.quality_tokens);
    let calib = regrouping::calibration_tokens(ui, s);
    format!("gqa-lab-quality/{}/{calib}/{tokens}", s.sha256)
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

fn save(key: &str, q: &BTreeMap<(usize, Method), f64>) {
    let rows: Vec<(usize, &str, f64)> = q.iter().map(|(&(g, m), &p)| (g, m.name(), p)).collect();
    if let (Some(st), Ok(json)) = (local_storage(), serde_json::to_string(&rows)) {
        let _ = st.set_item(key, &json);
    }
}

/// The figures kept from an earlier visit, if any (anything unreadable is ignored).
pub fn restore(ui: Ui, s: &Session) {
    let Some(json) = local_storage().and_then(|st| st.get_item(&storage_key(ui, s)).ok()?) else {
        return;
    };
    let Ok(rows) = serde_json::from_str::<Vec<(usize, String, f64)>>(&json) else {
        return;
    };
    let q = rows
        .into_iter()
        .filter_map(|(g, m, p)| Some(((g, Method::parse(&m)?), p)))
        .filter(|(_, p)| p.is_finite())
        .collect();
    ui.quality.set(q);
}

async fn score_all(
    ui: Ui,
    s: &mut Session,
    ids: &[u32],
    all: &[(usize, Method)],
) -> Result<(), EngineError> {
    for (i, &(g, method)) in all.iter().enumerate() {
        ui.status.set(Status::Measuring {
            done: i,
            of: all.len(),
        });
        regrouping::apply(ui, s, g, method).await?;
        ui.status.set(Status::Measuring {
            done: i,
            of: all.len(),
        });
        let ppl = s.engine.perplexity(ids).await?;
        ui.quality.update(|q| {
            q.insert((g, method), ppl);
        });
    }
    Ok(())
}
