//! Quality per KV cache type, under "What each G buys": the perplexity of the built-in passage
//! at each G and method with K and V kept in f32, f16 and q8_0 — the same model, only the
//! cache's rounding differs — each beside f32's, and the bytes per token each type costs at the
//! G in use. "Measure quality" scores the type in use; "Measure every cache type" all three
//! (three times the runs). Only figures measured here are shown.

use super::format;
use super::owner::EngineHandle;
use super::state::measurements::{quality_key, Measurements};
use super::state::model::LoadedModel;
use super::state::run::RunState;
use super::state::{CacheType, Groups};
use crate::model::{kv_cache_bytes, KvType};
use crate::regroup::Method;
use leptos::prelude::*;

/// The distinct models a model of `g0` KV heads has: the native one (every G at or above it),
/// then each G below it, largest first, with each method; with their labels.
fn models(g0: usize) -> Vec<(usize, Method, String)> {
    let native = match g0 {
        1 => "every G (the trained model)".to_string(),
        g0 => format!("G ≥ {g0} (native; larger G are exact)"),
    };
    let below = (1..g0).rev().flat_map(|g| {
        [
            (g, Method::Mean, format!("G = {g}, mean-pooled")),
            (g, Method::Calibrated, format!("G = {g}, calibrated")),
        ]
    });
    std::iter::once((g0, Method::Mean, native))
        .chain(below)
        .collect()
}

/// One cell: the perplexity with type `t`, and its change against f32's where both are
/// measured.
fn cell(g: usize, g0: usize, method: Method, t: KvType) -> impl IntoView {
    let quality = expect_context::<Measurements>().quality;
    let cache = expect_context::<CacheType>();
    let ppl = move |t: KvType| quality.with(|q| q.get(&quality_key(g, g0, method, t)).copied());
    let text = move || match (ppl(t), ppl(KvType::F32)) {
        (Some(p), Some(base)) if t != KvType::F32 => {
            format!("{} ({:+.2}%)", format::ppl(p), (p / base - 1.0) * 100.0)
        }
        (Some(p), _) => format::ppl(p),
        (None, _) => "–".into(),
    };
    view! {
        <td
            class="num"
            class:current-method=move || cache.get() == t
            data-testid=format!("quality-g{g}-{}-{}", method.name(), t.name())
            data-ppl=move || ppl(t).map(|p| format!("{p:.4}")).unwrap_or_default()
        >
            {text}
        </td>
    }
}

/// The table of perplexity per (G, method) and cache type, its button and what it shows.
#[component]
pub fn TypeTable() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let groups = expect_context::<Groups>();
    let run = expect_context::<RunState>();
    let engine = expect_context::<EngineHandle>();
    let g0 = move || model.cfg_or(0, |c| c.n_kv_heads);
    let rows = move || {
        let g0 = g0();
        let rows = models(g0).into_iter().map(|(g, method, label)| {
            let cells = KvType::ALL.map(|t| cell(g, g0, method, t));
            view! { <tr data-groups=g data-method=method.name()><td>{label}</td>{cells}</tr> }
        });
        rows.collect_view()
    };
    // What each type costs at the G in use.
    let bytes = move || {
        let g = groups.get();
        let cells = KvType::ALL.map(|t| {
            let b = model.cfg_or(0, |c| kv_cache_bytes(c, g, 1, t.element()));
            view! { <td class="num" data-testid=format!("type-bytes-{}", t.name()) data-bytes=b.to_string()>{format::bytes(b)}</td> }
        });
        view! { <tr class="current"><td>{format!("KV / token at G = {g}")}</td>{cells}</tr> }
    };
    let heads = KvType::ALL.map(|t| {
        let e = t.element();
        view! {
            <th class="num" title=format::value_bytes(e)>
                {t.name()}<br/><span class="muted small" style:white-space="nowrap">{format!("{} B a value", format::per_value(e))}</span>
            </th>
        }
    });
    // Runs per type: the native model, and each G below it with both methods.
    let runs = move || models(g0()).len();
    let idle = move || run.is_idle();
    view! {
        // The wrapper carries the G table's look (`.tradeoffs th`, `td`), the table a class
        // of its own.
        <div class="table-scroll tradeoffs">
        <table class="type-table" style:width="100%" style:border-collapse="collapse" data-testid="quality-types">
            <thead><tr><th>"Perplexity by cache type"</th>{heads}</tr></thead>
            <tbody>{rows}{bytes}</tbody>
        </table>
        </div>
        <p class="measure-types">
            <button data-testid="measure-quality-types" prop:disabled=move || !idle() on:click=move |_| engine.measure_quality(true)>
                "Measure every cache type"
            </button>
            " scores f32, f16 and q8_0 in turn: "{move || format::count(3 * runs(), "run")}", three times "
            <b>"Measure quality"</b>", which scores only the type in use ("{move || format::count(runs(), "run")}
            "; on a software adapter each run takes seconds to minutes)."
        </p>
        <p class="explain">
            "The second knob of the cache's memory. Each type is the same model with its keys and values rounded as they are stored: "
            "f16 keeps 11 significant bits of each, q8_0 an 8-bit integer each and one f16 scale per 32. "
            "In brackets, the change against f32 at the same G and method, measured here; attention (and the attention view) reads the rounded values."
        </p>
    }
}
