//! The browser app (wasm32 only): a Leptos client-side UI over either engine, the GPU one
//! (WebGPU) or the CPU one (WebAssembly), in a Web Worker or on the page's thread. The only module
//! that touches leptos, web-sys and js-sys. Data flows one way: the model bytes ([`loader`]) →
//! an engine and tokenizer ([`session`]) → tokens ([`generation`]) → signals ([`state`]) →
//! DOM and SVG ([`app`], [`controls`], [`diagram`], [`kv_meter`], [`tradeoffs`]), and the
//! views that explain GQA: attention by KV group ([`attention_view`]), G side by side
//! ([`compare`]), quality against memory and speed ([`tradeoff_plot`]), the cache calculator
//! ([`calculator`]).
//! Settings live in the URL ([`url_state`]).

mod actions;
mod app;
mod attention_view;
mod calculator;
mod compare;
mod controls;
mod diagram;
mod engine;
mod format;
mod generation;
mod js;
mod kv_meter;
mod loader;
mod model_panel;
mod output;
mod quality;
mod regrouping;
mod session;
mod state;
mod tradeoff_plot;
mod tradeoffs;
mod url_state;

pub use engine::worker::engine_worker;

/// Mounts the app on `<body>`; called by the wasm `main`. In the engine's worker (no
/// window) it does nothing: [`engine_worker`] runs there.
pub fn mount() {
    if web_sys::window().is_none() {
        return;
    }
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(app::App);
}
