//! The model strip: the model menu (the built-in models, or one's own GGUF file) with the
//! chosen model's licence, load progress (bytes, total, MB/s), what is loaded, and a drop zone
//! / file picker for one's own GGUF.

use super::format;
use super::loader::Phase;
use super::owner::EngineHandle;
use super::state::model::{local_layers, LoadedModel};
use super::state::run::{Activity, RunState};
use super::url_state::Settings;
use crate::gguf::SUPPORTED;
use crate::model::ARCHITECTURES;
use crate::models::{self, BUILTIN};
use leptos::ev;
use leptos::html;
use leptos::prelude::*;
use wasm_bindgen::JsCast;

/// The model menu's value for one's own file.
const FILE: &str = "file";

/// The model menu: each built-in model (`model=` in the URL), or a file the person drops or
/// picks; beside it, the chosen built-in model's licence. Choosing a built-in model loads it
/// (at its own G); choosing "a file" opens the file picker.
#[component]
fn ModelMenu(
    /// The drop zone's file input, opened by the menu's file entry.
    picker: NodeRef<html::Input>,
) -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let settings = expect_context::<RwSignal<Settings>>();
    let run = expect_context::<RunState>();
    let engine = expect_context::<EngineHandle>();
    let value = move || match model.file.with(Option::is_some) {
        true => FILE,
        false => settings.with(|s| s.model.name),
    };
    let choose = move |e: ev::Event| {
        let v = event_target_value(&e);
        let select: web_sys::HtmlSelectElement = event_target(&e);
        match models::by_name(&v) {
            Some(m) => {
                let loaded = model
                    .info
                    .with_untracked(|i| i.as_ref().and_then(|i| i.builtin));
                let on_file = model.file.with_untracked(Option::is_some);
                if loaded != Some(m) || on_file || settings.with_untracked(|s| s.model != m) {
                    // A G of one model is not the same thing on another: start at its own.
                    settings.update(|s| {
                        s.model = m;
                        s.groups = None;
                    });
                    engine.open_builtin(m);
                }
            }
            None => {
                // The menu stays where it was until a file is chosen.
                let was = match model.file.with_untracked(Option::is_some) {
                    true => FILE,
                    false => settings.with_untracked(|s| s.model.name),
                };
                select.set_value(was);
                if let Some(input) = picker.get_untracked() {
                    input.click();
                }
            }
        }
    };
    let file_label = move || {
        model.file.with(|f| match f {
            Some(name) => format!("your file: {name}"),
            None => "your own GGUF file…".to_string(),
        })
    };
    let options = BUILTIN
        .iter()
        .map(|m| view! { <option value=m.name selected=move || value() == m.name>{m.display_name}</option> })
        .collect_view();
    let licence = move || {
        if model.file.with(Option::is_some) {
            return None;
        }
        let m = settings.with(|s| s.model);
        Some(view! {
            <span class="muted small" data-testid="model-licence" data-model=m.name>
                {format!("{}: ", m.display_name)}
                <a href=m.licence_url target="_blank" rel="noopener">{m.licence}</a>
                " — its terms apply to its use here."
            </span>
        })
    };
    let loading = move || run.activity.get() == Activity::Loading;
    view! {
        <div class="row model-menu">
            <label class="field-label" for="model-select">"Model "</label>
            <select
                id="model-select"
                data-testid="model-select"
                prop:value=value
                prop:disabled=loading
                on:change=choose
            >
                {options}
                <option value=FILE selected=move || value() == FILE>{file_label}</option>
            </select>
            " "
            {licence}
        </div>
    }
}

/// Progress bar while loading, model facts once loaded, and the file drop zone.
#[component]
pub fn ModelPanel() -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let engine = expect_context::<EngineHandle>();
    let picker = NodeRef::<html::Input>::new();
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
                let window = match local_layers(c) {
                    0 => String::new(),
                    n => format!(
                        " · sliding window {} on {n} of {}",
                        c.arch.sliding_window, format::count(c.n_layers, "layer")
                    ),
                };
                format!(
                    "{} · {} · {} · {} · {} (native) · head_dim {}{window} · vocab {} · KV capacity {} · {} · {decode}",
                    i.name, c.arch.name, format::count(c.n_layers, "layer"), format::count(c.n_heads, "query head"), format::count(c.n_kv_heads, "KV head"), c.head_dim, format::int(c.vocab_size as u64), i.facts.capacity, i.facts.device
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
            <ModelMenu picker=picker />
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
                <input type="file" accept=".gguf" data-testid="model-file" node_ref=picker on:change=on_pick />
                <span>"Drop a GGUF model here, or "<u>"choose a file"</u>{format!(" ({} architecture; {} weights). It stays on this computer.", ARCHITECTURES.join(" or "), SUPPORTED.map(|t| t.name()).join(", "))}</span>
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
