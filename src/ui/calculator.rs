//! The cache calculator: what GQA saves on the models people run. A preset (real models'
//! published shapes, or the loaded model) or free inputs, a context length, a batch and an
//! element type give the KV-cache bytes at every G — computed by `model::kv_cache`, the
//! arithmetic the engines report with — the saving against multi-head attention, and which
//! common GPU memory sizes hold the cache and the weights together.

use super::format;
use super::state::model::LoadedModel;
use crate::model::kv_cache::{calculator_groups, fits, presets, GPU_MEMORY_GIB};
use crate::model::{ElementType, Hyper};
use leptos::prelude::*;

/// What the calculator computes from.
#[derive(Debug, Clone, PartialEq)]
struct Inputs {
    model: Hyper,
    /// Whether the model is the loaded one (every G runs here, not only divisors of H).
    loaded: bool,
    context: u64,
    batch: u64,
    cache_type: ElementType,
    weight_type: ElementType,
}

const LOADED: &str = "loaded";
const CUSTOM: &str = "custom";

/// The preset named `key`, or the loaded model's shape.
fn preset(model: LoadedModel, key: &str) -> Option<(Hyper, bool)> {
    if key == LOADED {
        return model.info.with_untracked(|i| {
            i.as_ref()
                .map(|i| (Hyper::of(&i.name, &i.cfg, i.params), true))
        });
    }
    presets()
        .into_iter()
        .find(|p| p.name == key)
        .map(|p| (p, false))
}

/// A numeric input bound to one field of the inputs; editing it makes the model custom.
fn number(
    label: &'static str,
    testid: &'static str,
    value: impl Fn() -> u64 + Send + Sync + 'static,
    set: impl Fn(u64) + Send + Sync + 'static,
) -> impl IntoView {
    let change = move |ev: leptos::ev::Event| match event_target_value(&ev).trim().parse::<u64>() {
        Ok(n) if n > 0 => set(n),
        _ => {}
    };
    view! {
        <label class="calc-field">
            <span>{label}</span>
            <input type="number" min="1" data-testid=testid prop:value=move || value().to_string() on:change=change />
        </label>
    }
}

/// An element-type select.
fn type_select(
    label: &'static str,
    testid: &'static str,
    value: impl Fn() -> ElementType + Send + Sync + 'static + Copy,
    set: impl Fn(ElementType) + Send + Sync + 'static,
) -> impl IntoView {
    let options = ElementType::ALL
        .into_iter()
        .map(|t| view! { <option value=t.name selected=move || value() == t>{t.name}</option> })
        .collect_view();
    let change = move |ev: leptos::ev::Event| {
        if let Some(t) = ElementType::parse(&event_target_value(&ev)) {
            set(t)
        }
    };
    view! {
        <label class="calc-field">
            <span>{label}</span>
            <select data-testid=testid prop:value=move || value().name.to_string() on:change=change>
                {options}
            </select>
        </label>
    }
}

/// One G's row: the bar, the exact bytes, the saving against MHA and the GPUs it fits.
fn bar(inp: &Inputs, g: u64, max: u64) -> impl IntoView {
    let m = &inp.model;
    let bytes = m.cache(g).bytes(inp.context, inp.batch, inp.cache_type);
    let weights = inp.weight_type.row_bytes(m.params);
    let width = format!("{:.2}%", bytes as f64 * 100.0 / max.max(1) as f64);
    let saving = 100.0 * (1.0 - g as f64 / m.heads as f64);
    let fit = GPU_MEMORY_GIB
        .iter()
        .map(|&gib| {
            let ok = fits(bytes, weights, gib);
            view! { <span class="fit" class:ok=ok data-testid="calc-fit" data-gib=gib data-fits=ok.to_string()>{format!("{gib} GB")}</span> }
        })
        .collect_view();
    let name = match g {
        1 => "MQA".to_string(),
        g if g == m.heads => "MHA".to_string(),
        g => format!("GQA-{g}"),
    };
    let trained = (g == m.kv_heads).then_some(" (as trained)");
    view! {
        <tr data-testid="calc-bytes" data-groups=g data-bytes=bytes.to_string() class:trained=g == m.kv_heads>
            <td>{name}{trained}</td>
            <td class="num">{g}</td>
            <td class="calc-bar"><span style:width=width></span></td>
            <td class="num" title=format!("{} bytes", format::int(bytes))>{format::bytes(bytes)}</td>
            <td class="num">{format!("{saving:.0}%")}</td>
            <td class="fits">{fit}</td>
        </tr>
    }
}

/// The calculator.
#[component]
pub fn Calculator() -> impl IntoView {
    let loaded_model = expect_context::<LoadedModel>();
    let first = presets().into_iter().nth(1).map(|p| (p, false));
    let Some((model, loaded)) = first else {
        return ().into_any();
    };
    let key = RwSignal::new(model.name.clone());
    let inputs = RwSignal::new(Inputs {
        model,
        loaded,
        context: 8192,
        batch: 1,
        cache_type: ElementType::FP16,
        weight_type: ElementType::FP16,
    });
    // The loaded-model preset follows the model: another one loaded shows its shape.
    Effect::new(move |_| {
        loaded_model.info.track();
        if key.get_untracked() == LOADED {
            if let Some((model, loaded)) = preset(loaded_model, LOADED) {
                inputs.update(|i| (i.model, i.loaded) = (model, loaded));
            }
        }
    });
    let choose = move |ev: leptos::ev::Event| {
        let k = event_target_value(&ev);
        if let Some((model, loaded)) = preset(loaded_model, &k) {
            inputs.update(|i| (i.model, i.loaded) = (model, loaded));
        }
        key.set(k);
    };
    let edit = move |f: fn(&mut Hyper, u64)| {
        move |n: u64| {
            inputs.update(|i| {
                f(&mut i.model, n);
                i.model.kv_heads = i.model.kv_heads.min(i.model.heads);
                (i.model.name, i.loaded) = (CUSTOM.into(), false);
            });
            key.set(CUSTOM.into());
        }
    };
    let options = move || {
        let loaded = loaded_model
            .info
            .with(|i| i.as_ref().map(|i| i.name.clone()));
        let names: Vec<(String, String)> = presets()
            .into_iter()
            .map(|p| (p.name.clone(), p.name))
            .chain(loaded.map(|n| (LOADED.to_string(), format!("{n} (loaded)"))))
            .chain([(CUSTOM.to_string(), "custom".to_string())])
            .collect();
        names
            .into_iter()
            .map(|(k, label)| {
                let sel = k.clone();
                view! { <option value=k selected=move || key.get() == sel>{label}</option> }
            })
            .collect_view()
    };
    let rows = move || {
        let inp = inputs.get();
        let gs = calculator_groups(inp.model.heads, inp.loaded);
        let max = inp
            .model
            .cache(inp.model.heads)
            .bytes(inp.context, inp.batch, inp.cache_type);
        gs.into_iter().map(|g| bar(&inp, g, max)).collect_view()
    };
    let weights = move || {
        let inp = inputs.get();
        let b = inp.weight_type.row_bytes(inp.model.params);
        format!(
            "Weights: {} parameters in {} = {}.",
            format::int(inp.model.params),
            inp.weight_type.name,
            format::bytes(b)
        )
    };
    let get = move |f: fn(&Inputs) -> u64| move || inputs.with(f);
    view! {
        <section class="card wide" data-testid="calculator">
            <h2>"Cache calculator"</h2>
            <div class="calc-inputs">
                <label class="calc-field">
                    <span>"Model"</span>
                    <select data-testid="calc-preset" prop:value=move || key.get() on:change=choose>{options}</select>
                </label>
                {number("Layers", "calc-layers", get(|i| i.model.layers), edit(|m, n| m.layers = n))}
                {number("Query heads", "calc-heads", get(|i| i.model.heads), edit(|m, n| m.heads = n))}
                {number("KV heads (trained)", "calc-kv-heads", get(|i| i.model.kv_heads), edit(|m, n| m.kv_heads = n))}
                {number("Head dim", "calc-head-dim", get(|i| i.model.head_dim), edit(|m, n| m.head_dim = n))}
                {number("Parameters", "calc-params", get(|i| i.model.params), edit(|m, n| m.params = n))}
                {number("Context (tokens)", "calc-context", get(|i| i.context), move |n| inputs.update(|i| i.context = n))}
                {number("Batch", "calc-batch", get(|i| i.batch), move |n| inputs.update(|i| i.batch = n))}
                {type_select("Cache", "calc-dtype", move || inputs.with(|i| i.cache_type), move |t| inputs.update(|i| i.cache_type = t))}
                {type_select("Weights", "calc-weights", move || inputs.with(|i| i.weight_type), move |t| inputs.update(|i| i.weight_type = t))}
            </div>
            <table class="calc-table">
                <thead><tr><th>"Attention"</th><th class="num">"G"</th><th>"KV cache"</th><th class="num">"bytes"</th><th class="num">"saved vs MHA"</th><th>"cache + weights fit in"</th></tr></thead>
                <tbody>{rows}</tbody>
            </table>
            <p class="muted small">{weights}" q4 is llama.cpp's Q4_0: 32 values in 18 bytes. GB here are GiB (2³⁰ bytes), as GPU memory is sized."</p>
            {move || inputs.with(|i| (i.model.windowed > 0).then(|| {
                let m = &i.model;
                view! {
                    <p class="muted small" data-testid="calc-window">
                        {format!(
                            "{} of these {} layers have a sliding window: each keeps at most {} positions (its window and a prefill chunk), so for them tokens is at most that.",
                            m.windowed.min(m.layers), m.layers, m.ring
                        )}
                    </p>
                }
            }))}
            <p class="explain">
                "KV cache = 2 (K and V) · layers · G · head_dim · tokens · batch · bytes per value: linear in G. "
                "While a model decodes, each new token reads every weight once and the whole cache so far: at long contexts and large batches the cache is most of the bytes moved, "
                "and decoding is bound by memory bandwidth, not arithmetic. "
                "That is why most open models since Llama 2 70B are trained with 8 KV heads: 4× less cache than multi-head attention for Llama-3-8B, 8× for Llama-2-70B, 16× for Llama-3.1-405B, at nearly the same quality ("
                <a href="https://arxiv.org/abs/2305.13245" target="_blank" rel="noopener">"GQA paper"</a>", Table 1)."
            </p>
        </section>
    }
    .into_any()
}
