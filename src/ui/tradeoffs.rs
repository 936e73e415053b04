//! What each G buys: KV bytes per token (in the cache type in use) against what happens to
//! quality and speed, all measured here. Quality is the perplexity of the built-in passage
//! (`quality.rs`) for the GQA paper's mean-pooling and for the calibrated merge — every G at or
//! above the native one is the same model, scored once (a model with one KV head has no G
//! below it, and one column); speed is the decode rate measured on this engine as the person
//! generates at each G. Beside the cache, the bytes of the regrouping maps each G holds under
//! the method in use and from how many tokens a merge holds less than the native model
//! (`maps_cost.rs`). Below it, the same perplexities for each cache type (`quality_types.rs`).

use super::format;
use super::maps_cost::{maps_bytes, PaysOff};
use super::owner::EngineHandle;
use super::quality_types::TypeTable;
use super::state::measurements::{quality_key, Measurements};
use super::state::model::LoadedModel;
use super::state::run::RunState;
use super::state::{CacheType, Groups};
use super::url_state::Settings;
use crate::engine::Backend;
use crate::model::kv_cache_bytes;
use crate::regroup::texts::EVALUATION_SOURCE;
use crate::regroup::{Grouping, Method};
use leptos::prelude::*;

/// One quality cell: the perplexity measured for (G, method) with the cache type in use, or –
/// until measured.
fn quality_cell(g: usize, g0: usize, method: Method) -> impl IntoView {
    let quality = expect_context::<Measurements>().quality;
    let settings = expect_context::<RwSignal<Settings>>();
    let groups = expect_context::<Groups>();
    let cache = expect_context::<CacheType>();
    let ppl = move || {
        let key = quality_key(g, g0, method, cache.get());
        quality.with(|q| q.get(&key).copied())
    };
    let text = move || match (ppl(), g > g0) {
        (Some(p), true) => format!("{} (exact)", format::ppl(p)),
        (Some(p), false) => format::ppl(p),
        (None, _) => "–".into(),
    };
    let current = move || (g0 == 1 || settings.with(|s| s.regroup) == method) && groups.get() == g;
    view! {
        <td
            class="num"
            class:current-method=current
            data-testid=format!("quality-g{g}-{}", method.name())
            data-ppl=move || ppl().map(|p| format!("{p:.4}")).unwrap_or_default()
        >
            {text}
        </td>
    }
}

/// A table of every valid G: cache per token, share of MHA's, perplexity with each method,
/// decode speed measured on this page; and what the numbers mean.
#[component]
pub fn Tradeoffs() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let measured = expect_context::<Measurements>();
    let settings = expect_context::<RwSignal<Settings>>();
    let groups = expect_context::<Groups>();
    let run = expect_context::<RunState>();
    let engine = expect_context::<EngineHandle>();
    let cache = expect_context::<CacheType>();
    let rows = move || {
        let info = model.info.get()?;
        let c = info.cfg.clone();
        let t = cache.get();
        let mha = kv_cache_bytes(&c, c.n_heads, 1, t.element()) as f64;
        let cur = groups.get();
        let backend = info.backend();
        let speeds = measured.speeds_on(|b| b == backend, t);
        let g0 = c.n_kv_heads;
        let (method, cap) = (settings.with(|s| s.regroup), info.facts.capacity);
        let rows = c.valid_groups().into_iter().map(|g| {
            let gr = Grouping::of(&c, g).ok();
            let per_tok = kv_cache_bytes(&c, g, 1, t.element());
            let maps = maps_bytes(&c, g, method);
            let pays = PaysOff::of(&c, g, method, t.element(), cap);
            let pays_text = match pays {
                PaysOff::NoMerge => String::new(),
                PaysOff::From(0) => "less from the start".into(),
                PaysOff::From(n) => format!("less from {n} tokens"),
                PaysOff::Never { .. } => "never less here".into(),
            };
            let speed = speeds.get(&g).map_or("–".to_string(), |m| {
                format!("{:.1} tok/s", m.tokens_per_s())
            });
            view! {
                <tr class:current=g == cur data-groups=g>
                    <td>{gr.map(|gr| gr.label())}</td>
                    <td class="num">{g}</td>
                    <td class="num" data-testid=format!("kv-per-token-g{g}") data-bytes=per_tok.to_string()>{format::bytes(per_tok)}</td>
                    <td class="num">{format!("{:.0}%", per_tok as f64 * 100.0 / mha)}</td>
                    <td class="num" data-testid=format!("maps-g{g}") data-bytes=maps.to_string() data-break-even=pays.attr()>
                        {format::bytes(maps)}<br/><span class="muted small">{pays_text}</span>
                    </td>
                    {quality_cell(g, g0, Method::Mean)}
                    {(g0 > 1).then(|| quality_cell(g, g0, Method::Calibrated))}
                    <td class="num" data-testid=format!("speed-g{g}")>{speed}</td>
                </tr>
            }
        });
        Some(rows.collect_view())
    };
    let native = move || model.cfg_or(0, |c| c.n_kv_heads);
    let on = move || match model.backend().is_some_and(Backend::is_cpu) {
        true => "CPU",
        false => "GPU",
    };
    let heads = move || model.cfg_or(0, |c| c.n_heads);
    // One KV head (multi-query attention): no G below the native one, nothing to merge.
    let single = move || native() == 1;
    let loaded = move || model.is_loaded();
    // The tokens scored: the setting's count, clamped to the passage on the loaded model.
    let scored = move || match measured.passage.get() {
        Some(p) if p.used == p.total => format!("all {} tokens", format::int(p.used as u64)),
        Some(p) => format!("the first {} tokens", format::int(p.used as u64)),
        None => format!(
            "the first {} tokens",
            format::int(settings.with(|s| s.quality_tokens) as u64)
        ),
    };
    let idle = move || run.is_idle();
    let fit_cost = move || {
        let s = measured.calibration_s.get();
        (!s.is_empty()).then(|| {
            let each: Vec<String> = s.iter().map(|(g, t)| format!("G = {g} {t:.0} s")).collect();
            format!("Calibration here took {}.", each.join(", "))
        })
    };
    view! {
        <Show when=loaded fallback=|| view! { <p class="muted">"Once a model is loaded: the KV cache each G needs, and what it costs in quality and speed."</p> }>
        <div class="table-scroll">
        <table class="tradeoffs">
            <thead><tr>
                <th>"Grouping"</th><th class="num">"G"</th><th class="num">"KV / token ("{move || cache.get().name()}")"</th><th class="num">"vs MHA"</th>
                <th class="num" title="bytes of the regrouping maps the engine holds at this G (f32), whatever the length; and from how many tokens (within this page's KV capacity) a merge holds less than the native model, maps and cache together">
                    "Maps ("{move || settings.with(|s| s.regroup.name())}")"
                </th>
                {move || match single() {
                    true => view! {
                        <th class="num" title="perplexity of the built-in passage (every G is the trained model)">"Perplexity"</th>
                    }.into_any(),
                    false => view! {
                        <th class="num" title="perplexity of the built-in passage, K/V heads mean-pooled (GQA paper §2.1)">"Mean-pool"</th>
                        <th class="num" title="perplexity of the built-in passage, calibrated RoPE-aware merge">"Calibrated"</th>
                    }.into_any(),
                }}
                <th class="num">"Decode here ("{on}", "{move || cache.get().name()}")"</th>
            </tr></thead>
            <tbody>{rows}</tbody>
        </table>
        </div>
        <OtherBackend />
        <p class="measure">
            <button data-testid="measure-quality" prop:disabled=move || !idle() on:click=move |_| engine.measure_quality(false)>
                "Measure quality"
            </button>
            " perplexity of "<span data-testid="quality-tokens">{scored}</span>" of "<em>{EVALUATION_SOURCE}</em>
            {move || match single() {
                true => " (lower is better; every G here is the trained model, scored once), ",
                false => ", for each method (lower is better; the merges not calibrated yet are fitted first), ",
            }}
            "with the cache in "{move || cache.get().name()}", the type in use. "
            {fit_cost}
        </p>
        <TypeTable />
        <Show when=single fallback=|| view! { <MergeExplained /> }>
        <p class="explain" data-testid="tradeoffs-single">
            "The model was trained with one KV head for its "{heads}" query heads: multi-query attention, G = 1, the least cache any G needs. "
            "A larger G splits that head: each new KV head is a copy of the one every query head reads, "
            "so the model stays exactly the same and only the cache grows. "
            "The GQA paper's mean-pooling and this page's calibrated merge make a G below the trained one by merging KV heads; "
            "this model has none to merge, so neither applies."
        </p>
        </Show>
        <p class="explain">
            "Decode here is measured on this engine (the GPU, or the CPU backend) as you generate: tokens per second at each G over this page's runs on it "
            "(– until you generate at that G); switch the engine above and the other one's figures stay below the table. Each decoded token reads every weight once and the whole KV cache so far; "
            "G shrinks the second part, so the gap between the Gs grows with the length of the text."
        </p>
        </Show>
    }
}

/// What a G below the trained one does, for a model with KV heads to merge.
#[component]
fn MergeExplained() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let native = move || model.cfg_or(0, |c| c.n_kv_heads);
    let heads = move || model.cfg_or(0, |c| c.n_heads);
    view! {
        <p class="explain">
            "The model was trained with G = "{native}" KV heads for its "{heads}" query heads. "
            "A larger G splits its groups: each new KV head is a copy of the one its query heads already read, "
            "so the model stays exactly the same and only the cache grows. A smaller G merges KV heads that were "
            "trained apart. The GQA paper mean-pools them and then uptrains (about 5% of the original compute); "
            "this page does not train. "<b>"Calibrated"</b>" fits small maps per layer on a built-in text instead — "
            "a complex scalar per rotation pair for K (the only linear map that commutes with RoPE), an "
            "output-weighted projection for V, and matching maps for the queries and each head's output — "
            "so the merged model stays close to the trained one. "<b>"Mean-pool"</b>" shows what the paper's "
            "conversion costs before any training. The maps are memory too (the "<b>"Maps"</b>" column): "
            "a calibrated merge holds megabytes of them whatever the length, so it holds less than the native model only "
            "once the cache it saves has outgrown them — the meter above says from which token on."
        </p>
    }
}

/// The decode speeds measured earlier on the other backend (kept across a switch of backend),
/// so that the two engines can be compared at each G.
#[component]
fn OtherBackend() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let measured = expect_context::<Measurements>();
    let cache = expect_context::<CacheType>();
    let line = move || {
        let here = model.backend()?;
        let name = match here.is_cpu() {
            true => "the GPU",
            false => "the CPU backend",
        };
        let speeds = measured.speeds_on(|b| b.is_cpu() != here.is_cpu(), cache.get());
        let each: Vec<String> = speeds
            .iter()
            .map(|(g, m)| format!("G = {g} {:.1} tok/s", m.tokens_per_s()))
            .collect();
        (!each.is_empty()).then(|| format!("Measured earlier on {name}: {}.", each.join(", ")))
    };
    view! { <p class="muted small" data-testid="speed-other">{line}</p> }
}
