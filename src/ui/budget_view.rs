//! The KV budget mode beside the uniform G: the mode switch and the budget slider
//! ([`BudgetControls`]: B KV heads per layer on average, 1 to H in steps of 1/layers, mirrored
//! in the URL as `budget=B`) and the budget's perplexity beside the uniform G of the same
//! bytes ([`BudgetQuality`], once "What each G buys" is measured in budget mode). The engine's
//! owner measures the sensitivities and spends the budget (`owner/budget.rs`).

use super::format;
use super::owner::EngineHandle;
use super::state::measurements::{quality_key, Measurements};
use super::state::model::LoadedModel;
use super::state::Groups;
use super::url_state::Settings;
use crate::model::ModelConfig;
use crate::regroup::budget::budget_heads;
use leptos::ev;
use leptos::prelude::*;

/// Calibration tokens the page scores each layer's sensitivity on (as `owner/budget.rs`).
fn scored_tokens(model: LoadedModel) -> usize {
    use super::owner::{BUDGET_HARDWARE_TOKENS, BUDGET_SOFTWARE_TOKENS};
    model
        .info
        .with(|i| match i.as_ref().map(|i| i.facts.is_software) {
            Some(false) => BUDGET_HARDWARE_TOKENS,
            _ => BUDGET_SOFTWARE_TOKENS,
        })
}

/// `b` on the budget's grid for `cfg` (steps of 1/layers, 1 to H).
fn snap(cfg: &ModelConfig, b: f64) -> f64 {
    let l = cfg.n_layers.max(1) as f64;
    ((b * l).round() / l).clamp(1.0, cfg.n_heads as f64)
}

/// The mode (uniform G, or a KV budget) and, in budget mode, the budget slider.
#[component]
pub fn BudgetControls() -> impl IntoView {
    let settings = expect_context::<RwSignal<Settings>>();
    let model = expect_context::<LoadedModel>();
    let groups = expect_context::<Groups>();
    let engine = expect_context::<EngineHandle>();
    let budget = move || settings.with(|s| s.budget);
    let on_mode = move |e: ev::Event| {
        let want = event_target_value(&e) == "budget";
        if want != settings.with_untracked(|s| s.budget.is_some()) {
            let g = groups.get_untracked().max(1) as f64;
            settings.update(|s| s.budget = want.then_some(g));
            engine.follow_settings();
        }
    };
    let on_budget = move |e: ev::Event| {
        let Ok(v) = event_target_value(&e).trim().parse::<f64>() else {
            return;
        };
        let Some(b) = model
            .info
            .with_untracked(|i| i.as_ref().map(|i| snap(&i.cfg, v)))
        else {
            return;
        };
        if Some(b) != settings.with_untracked(|s| s.budget) {
            settings.update(|s| s.budget = Some(b));
            engine.follow_settings();
        }
    };
    let layers = move || model.cfg_or(1, |c| c.n_layers);
    let heads = move || model.cfg_or(1, |c| c.n_heads);
    let total = move || {
        let b = budget()?;
        model.cfg_or(None, |c| {
            Some(budget_heads(c, b).map_err(|e| e.to_string()))
        })
    };
    let label = move || {
        let b = budget().unwrap_or(1.0);
        match total() {
            Some(Ok(t)) => format!(
                "KV budget B = {b:.2} KV heads per layer on average · {t} KV heads over {}",
                format::count(layers(), "layer")
            ),
            Some(Err(e)) => e,
            None => "KV budget (available once a model is loaded)".into(),
        }
    };
    view! {
        <div class="method budget">
            <label for="kv-mode" class="field-label">"KV heads: "</label>
            <select
                id="kv-mode"
                data-testid="kv-mode"
                prop:value=move || if budget().is_some() { "budget" } else { "uniform" }
                on:change=on_mode
            >
                <option value="uniform">"uniform G (every layer the same)"</option>
                <option value="budget">"KV budget (G per layer, by sensitivity)"</option>
            </select>
            <Show when=move || budget().is_some()>
                <div class="slider">
                    <label
                        for="budget"
                        class="field-label"
                        data-testid="budget-label"
                        class:error=move || matches!(total(), Some(Err(_)))
                    >
                        {label}
                    </label>
                    <input
                        type="range"
                        id="budget"
                        data-testid="budget-slider"
                        min="1"
                        max=move || heads().to_string()
                        step=move || format!("{}", 1.0 / layers() as f64)
                        prop:value=move || {
                            heads();
                            budget().unwrap_or(1.0).to_string()
                        }
                        prop:disabled=move || !model.is_loaded()
                        on:change=on_budget
                    />
                    <p class="muted small" data-testid="budget-note">
                        "Each layer gets its own G: the page first measures how much the loss rises with each layer alone merged to each G below the model's own ("
                        {move || format::count(scored_tokens(model), "token")}
                        " of the calibration text per scoring, kept for the next visit), then spends the heads where they lower it most, with the method below."
                    </p>
                </div>
            </Show>
        </div>
    }
}

/// The budget's perplexity beside the uniform G of the same bytes (B whole) or the two around
/// it, as "What each G buys" measured them in budget mode.
#[component]
pub fn BudgetQuality() -> impl IntoView {
    let measured = expect_context::<Measurements>();
    let model = expect_context::<LoadedModel>();
    let line = move || {
        let b = measured.budget.get()?;
        let g0 = model.cfg_or(1, |c| c.n_kv_heads);
        let uniform = |g: usize| {
            let key = quality_key(g, g0, b.method, b.kv);
            let p = measured.quality.with(|q| q.get(&key).copied());
            p.map_or("–".into(), format::ppl)
        };
        let (lo, hi) = (b.budget.floor() as usize, b.budget.ceil() as usize);
        let against = match lo == hi {
            true => format!("uniform G = {lo}, the same cache bytes: {}", uniform(lo)),
            false => format!(
                "uniform G = {lo} (fewer bytes): {}; uniform G = {hi} (more bytes): {}",
                uniform(lo),
                uniform(hi)
            ),
        };
        Some(view! {
            <p data-testid="budget-quality" data-ppl=format!("{:.4}", b.perplexity)>
                <b>{format!("KV budget B = {:.2}", b.budget)}</b>
                {format!(
                    " ({}, {} cache): perplexity {} · {against}",
                    b.method.name(),
                    b.kv.name(),
                    format::ppl(b.perplexity)
                )}
            </p>
        })
    };
    view! { {line} }
}
