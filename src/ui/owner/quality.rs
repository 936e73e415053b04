//! "What each G buys", measured here: the perplexity of the built-in passage
//! (`regroup::texts::EVALUATION`) at the native G — every G above it gives the same model — and,
//! for each G below it, with mean-pooling and with the calibrated merge (fitted first if this
//! page has not yet). The engine then goes back to the settings' G and method. The figures are
//! kept in the browser's local storage per model and setting, and shown again on the next
//! visit.

use super::regroup;
use super::session::Session;
use crate::engine::EngineError;
use crate::model::ModelError;
use crate::regroup::texts::EVALUATION;
use crate::regroup::Method;
use crate::ui::state::run::Status;
use crate::ui::state::Page;
use leptos::prelude::*;
use std::collections::BTreeMap;

/// The (G, method) pairs to score for a model of `g0` KV heads: the native G once, then each
/// G below it with both methods.
pub fn runs(g0: usize) -> Vec<(usize, Method)> {
    let below = (1..g0).flat_map(|g| [(g, Method::Mean), (g, Method::Calibrated)]);
    std::iter::once((g0, Method::Mean)).chain(below).collect()
}

/// Scores every run of [`runs`] on the first `quality_tokens` of the passage into the
/// measurements.
pub async fn measure(page: Page, s: &mut Session) -> Result<(), EngineError> {
    let tokens = page.settings.with_untracked(|st| st.quality_tokens);
    let ids = s.tok.encode(EVALUATION, false).map_err(|e| {
        EngineError::Model(ModelError::BadConfig(format!(
            "tokenizing the passage: {e}"
        )))
    })?;
    let ids = &ids[..tokens.clamp(2, ids.len().max(2)).min(ids.len())];
    let all = runs(s.engine.config().n_kv_heads);
    let result = score_all(page, s, ids, &all).await;
    let restored = regroup::follow_settings(page, s).await;
    if result.is_ok() {
        save(
            &storage_key(page, s),
            &page.measured.quality.get_untracked(),
        );
    }
    result.and(restored.map(drop))
}

/// Where the figures for this model and setting are kept.
fn storage_key(page: Page, s: &Session) -> String {
    let tokens = page.settings.with_untracked(|st| st.quality_tokens);
    let calib = regroup::calibration_tokens(page, s);
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
pub fn restore(page: Page, s: &Session) {
    let key = storage_key(page, s);
    let Some(json) = local_storage().and_then(|st| st.get_item(&key).ok()?) else {
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
    page.measured.quality.set(q);
}

async fn score_all(
    page: Page,
    s: &mut Session,
    ids: &[u32],
    all: &[(usize, Method)],
) -> Result<(), EngineError> {
    for (i, &(g, method)) in all.iter().enumerate() {
        page.run.status.set(Status::Measuring {
            done: i,
            of: all.len(),
        });
        regroup::apply(page, s, g, method).await?;
        page.run.status.set(Status::Measuring {
            done: i,
            of: all.len(),
        });
        let ppl = s.engine.perplexity(ids).await?;
        page.measured.quality.update(|q| {
            q.insert((g, method), ppl);
        });
    }
    Ok(())
}
