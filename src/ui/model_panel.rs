//! The model strip: load progress (bytes, total, MB/s), what is loaded, and a drop zone / file
//! picker for one's own GGUF.

use super::format;
use super::loader::Phase;
use super::owner::EngineHandle;
use super::state::model::LoadedModel;
use leptos::ev;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

/// Progress bar while loading, model facts once loaded, and the file drop zone.
#[component]
pub fn ModelPanel() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let engine = expect_context::<EngineHandle>();
    let percent = move || {
        model
            .progress
            .with(|p| p.as_ref().and_then(|p| p.percent()).unwrap_or(0.0))
    };
    let progress_text = move || {
        model.progress.with(|p| {
            p.as_ref().map(|p| {
                let verb = match p.phase {
                    Phase::Download => "Downloaded",
                    Phase::Cache => "Read from the browser cache",
                    Phase::File => "Read",
                };
                let total = p
                    .total
                    .map_or("?".into(), |t| format!("{:.1}", t as f64 / 1e6));
                format!(
                    "{verb} {:.1} / {total} MB · {:.1} MB/s · {:.0}%",
                    p.loaded as f64 / 1e6,
                    p.mb_per_s(),
                    percent()
                )
            })
        })
    };
    let facts = move || {
        model.info.with(|i| {
            i.as_ref().map(|i| {
                let c = &i.cfg;
                let decode = if i.facts.decode_ahead {
                    "decodes one step ahead"
                } else {
                    "decodes step by step"
                };
                format!(
                    "{} · {} layers · {} query heads · {} KV heads (native) · head_dim {} · vocab {} · KV capacity {} · {} · {decode}",
                    i.name, c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, format::int(c.vocab_size as u64), i.facts.capacity, i.facts.device
                )
            })
        })
    };
    let on_pick = move |e: ev::Event| {
        let input: web_sys::HtmlInputElement = event_target(&e);
        if let Some(f) = input.files().and_then(|fs| fs.get(0)) {
            engine.open_file(f);
        }
        input.set_value("");
    };
    let dragging = RwSignal::new(false);
    let on_drop = move |e: ev::DragEvent| {
        e.prevent_default();
        dragging.set(false);
        let file = e
            .data_transfer()
            .and_then(|d| d.files())
            .and_then(|fs| fs.get(0));
        if let Some(f) = file {
            engine.open_file(f);
        }
    };
    view! {
        <section class="card model-panel">
            <div
                class="progress"
                data-testid="load-progress"
                data-percent=move || format!("{:.0}", percent())
                role="progressbar"
                aria-valuemin="0"
                aria-valuemax="100"
                aria-valuenow=move || format!("{:.0}", percent())
                class:hidden=move || model.progress.with(Option::is_none)
            >
                <div class="bar"><div class="fill" style:width=move || format!("{:.1}%", percent())></div></div>
                <div class="progress-text">{progress_text}</div>
            </div>
            <p class="facts" data-testid="model-facts">{facts}</p>
            <label
                class="drop"
                class:dragging=move || dragging.get()
                on:dragover=move |e: ev::DragEvent| { e.prevent_default(); dragging.set(true); }
                on:dragleave=move |_| dragging.set(false)
                on:drop=on_drop
            >
                <input type="file" accept=".gguf" data-testid="model-file" on:change=on_pick />
                <span>"Drop a GGUF model here, or "<u>"choose a file"</u>" (llama architecture; F32, F16, BF16, Q4_0, Q4_1 or Q8_0 weights). It stays on this computer."</span>
            </label>
        </section>
    }
}

/// Keeps the browser from opening a file dropped outside the drop zone.
pub fn guard_window_drops() {
    let Some(w) = web_sys::window() else { return };
    for name in ["dragover", "drop"] {
        let cb =
            wasm_bindgen::closure::Closure::<dyn Fn(web_sys::Event)>::new(|e: web_sys::Event| {
                e.prevent_default()
            });
        let _ = w.add_event_listener_with_callback(name, cb.as_ref().unchecked_ref());
        cb.forget();
    }
}
