//! Side by side, the task: one prompt generated greedily at several G, or with the KV cache in
//! each of its types at one G, one after another on the engine (regrouped with the settings'
//! method, a calibrated merge fitted first where needed), each column with its five most
//! likely tokens at every step; then the engine goes back to the settings' G and type. The
//! view is `compare_view.rs`.

use super::regroup;
use super::session::Session;
use crate::engine::EngineError;
use crate::model::KvType;
use crate::sampling::{argmax, top_probabilities};
use crate::ui::js::yield_now;
use crate::ui::state::measurements::{Across, Column, Comparison};
use crate::ui::state::run::Status;
use crate::ui::state::Page;
use leptos::prelude::*;

/// Most likely tokens kept at each step (the view shows them where a column departs).
const TOP: usize = 5;

/// The columns to generate: each a G and a cache type, the reference (the native G, or f32)
/// first.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub across: Across,
    pub columns: Vec<(usize, KvType)>,
}

/// Generates `tokens` greedy tokens from `prompt` for each column of `plan` into the
/// measurements' comparison, column by column; Stop ends it after the current step.
pub async fn run(
    page: Page,
    s: &mut Session,
    prompt: Vec<u32>,
    plan: Plan,
    tokens: usize,
) -> Result<(), EngineError> {
    s.engine.set_attention_probe(None).await?;
    let method = page.settings.with_untracked(|st| st.regroup);
    let native = s.engine.config().n_kv_heads;
    let mut result = Comparison {
        native,
        method,
        backend: s.engine.facts().backend,
        across: plan.across,
        reference: plan
            .columns
            .first()
            .copied()
            .unwrap_or((native, KvType::F32)),
        columns: Vec::new(),
    };
    page.measured.comparison.set(Some(result.clone()));
    let mut outcome = Ok(());
    let of = plan.columns.len();
    for (i, &(g, t)) in plan.columns.iter().enumerate() {
        if page.run.stop_asked() {
            break;
        }
        page.run.status.set(Status::Comparing { done: i, of });
        outcome = match regroup::is_current(s, g, method) {
            true => Ok(()),
            false => regroup::apply(page, s, g, method).await,
        };
        if outcome.is_ok() {
            outcome = regroup::set_kv_type(s, t).await.map(drop);
        }
        page.run.status.set(Status::Comparing { done: i, of });
        if outcome.is_ok() {
            outcome = column(page, s, &prompt, tokens, (g, t)).await.map(|c| {
                result.columns.push(c);
                page.measured.comparison.set(Some(result.clone()));
            });
        }
        if outcome.is_err() {
            break;
        }
    }
    let restored = regroup::follow_settings(page, s).await;
    outcome.and(restored.map(drop))
}

/// The greedy continuation at the engine's current G and cache type, `at` (argmax of the
/// logits read back, the same rule as argmax.wgsl and the CLI).
async fn column(
    page: Page,
    s: &mut Session,
    prompt: &[u32],
    tokens: usize,
    at: (usize, KvType),
) -> Result<Column, EngineError> {
    s.engine.reset().await?;
    let mut c = Column {
        groups: at.0,
        kv: at.1,
        ids: Vec::new(),
        pieces: Vec::new(),
        top: Vec::new(),
    };
    let mut feed = prompt.to_vec();
    while c.ids.len() < tokens && !page.run.stop_asked() {
        let logits = s.engine.forward(&feed, false).await?;
        let id = argmax(&logits);
        c.top.push(top_probabilities(&logits, TOP));
        c.ids.push(id);
        c.pieces
            .push(String::from_utf8_lossy(&s.tok.token_bytes(id, true)).into_owned());
        if Some(id) == s.tok.eos_id {
            break;
        }
        feed = vec![id];
        yield_now().await;
    }
    s.engine.reset().await?;
    Ok(c)
}
