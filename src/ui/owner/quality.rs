//! "What each G buys", measured here: the perplexity of the built-in passage
//! (`regroup::texts::EVALUATION`) at the native G — every G above it gives the same model — and,
//! for each G below it, with mean-pooling and with the calibrated merge (fitted first if this
//! page has not yet), with the KV cache in the type in use, or in each of the three types
//! (three times the runs: asked for apart, as it costs minutes on a software adapter). The
//! engine then goes back to the settings' G, method and type. The figures are kept in the
//! browser's local storage per model and setting, and shown again on the next visit. Stop ends
//! a measurement between two of its runs; the runs scored so far stay.

use super::regroup;
use super::session::Session;
use crate::engine::EngineError;
use crate::model::{KvType, ModelError};
use crate::regroup::texts::EVALUATION;
use crate::regroup::Method;
use crate::ui::state::measurements::{BudgetScore, Kv, Passage, QualityKey};
use crate::ui::state::run::Status;
use crate::ui::state::Page;
use leptos::prelude::*;
use std::collections::BTreeMap;

/// The runs to score for a model of `g0` KV heads with the cache in each of `types`: the
/// native G once, then each G below it with both methods; at each, every type in turn (the
/// engine regroups once per G and method).
pub fn runs(g0: usize, types: &[KvType]) -> Vec<(usize, Method, KvType)> {
    let below = (1..g0).flat_map(|g| [(g, Method::Mean), (g, Method::Calibrated)]);
    std::iter::once((g0, Method::Mean))
        .chain(below)
        .flat_map(|(g, m)| types.iter().map(move |&t| (g, m, t)))
        .collect()
}

/// How a measurement ended: every run scored, or stopped between two of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    All,
    Stopped { done: usize, of: usize },
}

impl Measured {
    /// How the status line says it ended.
    pub fn describe(self) -> String {
        match self {
            Measured::All => "quality measured".into(),
            Measured::Stopped { done, of } => {
                format!("quality measurement stopped: {done} of {of} runs measured")
            }
        }
    }
}

/// The passage's ids the figures score: its first `quality_tokens` (at least 2, at most the
/// whole passage); the count used is written into the measurements.
fn passage_ids(page: Page, s: &Session) -> Result<Vec<u32>, EngineError> {
    let tokens = page.settings.with_untracked(|st| st.quality_tokens);
    let mut ids = s.tok.encode(EVALUATION, false).map_err(|e| {
        EngineError::Model(ModelError::BadConfig(format!(
            "tokenizing the passage: {e}"
        )))
    })?;
    let total = ids.len();
    ids.truncate(tokens.clamp(2, total.max(2)).min(total));
    page.measured.passage.set(Some(Passage {
        used: ids.len(),
        total,
    }));
    Ok(ids)
}

/// Scores every run of [`runs`] on the first `quality_tokens` of the passage into the
/// measurements — with the cache type in use, or with `every_type` in each of the three —
/// until Stop: the runs scored so far stay (and are kept).
pub async fn measure(
    page: Page,
    s: &mut Session,
    every_type: bool,
) -> Result<Measured, EngineError> {
    page.run.clear_stop();
    let ids = passage_ids(page, s)?;
    let types = match every_type {
        true => KvType::ALL.to_vec(),
        false => vec![regroup::wanted_kv_type(page, s)],
    };
    let all = runs(s.engine.config().n_kv_heads, &types);
    let result = score_all(page, s, &ids, &all).await;
    let restored = regroup::follow_settings(page, s).await;
    let budget = page
        .settings
        .with_untracked(|st| st.budget_on(s.engine.config()));
    let restored = match (budget, &result, restored) {
        (Some(b), Ok(Measured::All), Ok(_)) => score_budget(page, s, &ids, b).await,
        (_, _, restored) => restored.map(drop),
    };
    if result.is_ok() {
        save(
            &storage_key(page, s, ids.len()),
            &page.measured.quality.get_untracked(),
        );
    }
    let measured = result?;
    restored.map(|_| measured)
}

/// In budget mode, the budget's perplexity on the same passage (the engine is at the budget
/// already: `follow_settings` brought it there), beside the uniform G's just scored.
async fn score_budget(
    page: Page,
    s: &mut Session,
    ids: &[u32],
    budget: f64,
) -> Result<(), EngineError> {
    let r = s.engine.regrouping();
    let perplexity = s.engine.perplexity(ids).await?;
    page.measured.budget.set(Some(BudgetScore {
        budget,
        layer_groups: r.layer_groups(),
        method: page.settings.with_untracked(|st| st.regroup),
        kv: s.engine.kv_type(),
        perplexity,
    }));
    Ok(())
}

/// Where the figures for this model and setting are kept.
/// `tokens`: the passage's tokens scored (a larger setting scores the same).
fn storage_key(page: Page, s: &Session, tokens: usize) -> String {
    let calib = regroup::calibration_tokens(page, s);
    format!("gqa-lab-quality/{}/{calib}/{tokens}", s.sha256)
}

fn local_storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// A stored row: G, method, cache type, perplexity.
type Row = (usize, String, String, f64);

fn save(key: &str, q: &BTreeMap<QualityKey, f64>) {
    let rows: Vec<(usize, &str, &str, f64)> = q
        .iter()
        .map(|(&(g, m, t), &p)| (g, m.name(), t.0.name(), p))
        .collect();
    if let (Some(st), Ok(json)) = (local_storage(), serde_json::to_string(&rows)) {
        let _ = st.set_item(key, &json);
    }
}

/// The figures kept from an earlier visit, if any (anything unreadable is ignored).
/// The count of the passage's tokens scored is written into the measurements either way.
pub fn restore(page: Page, s: &Session) {
    let Ok(ids) = passage_ids(page, s) else {
        return;
    };
    let key = storage_key(page, s, ids.len());
    let Some(json) = local_storage().and_then(|st| st.get_item(&key).ok()?) else {
        return;
    };
    // Rows kept before the page had cache types name none: they were measured with f32.
    let rows = serde_json::from_str::<Vec<Row>>(&json).or_else(|_| {
        serde_json::from_str::<Vec<(usize, String, f64)>>(&json).map(|rows| {
            let f32 = KvType::F32.name().to_string();
            rows.into_iter()
                .map(|(g, m, p)| (g, m, f32.clone(), p))
                .collect()
        })
    });
    let Ok(rows) = rows else {
        return;
    };
    let q = rows
        .into_iter()
        .filter_map(|(g, m, t, p)| Some(((g, Method::parse(&m)?, Kv(KvType::parse(&t)?)), p)))
        .filter(|(_, p)| p.is_finite())
        .collect();
    page.measured.quality.set(q);
}

/// Scores each run in turn; Stop ends it between two runs (a calibration to fit is one step).
async fn score_all(
    page: Page,
    s: &mut Session,
    ids: &[u32],
    all: &[(usize, Method, KvType)],
) -> Result<Measured, EngineError> {
    let of = all.len();
    for (done, &(g, method, t)) in all.iter().enumerate() {
        if page.run.stop_asked() {
            return Ok(Measured::Stopped { done, of });
        }
        page.run.status.set(Status::Measuring { done, of });
        if !regroup::is_current(s, g, method) {
            regroup::apply(page, s, g, method).await?;
        }
        regroup::set_kv_type(s, t).await?;
        if page.run.stop_asked() {
            return Ok(Measured::Stopped { done, of });
        }
        page.run.status.set(Status::Measuring { done, of });
        let ppl = s.engine.perplexity(ids).await?;
        page.measured.quality.update(|q| {
            q.insert((g, method, Kv(t)), ppl);
        });
    }
    Ok(Measured::All)
}
