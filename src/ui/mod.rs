//! The browser app (wasm32 only): a Leptos client-side UI over either engine, the GPU one
//! (WebGPU) or the CPU one (WebAssembly), in a Web Worker or on the page's thread. The only
//! module that touches leptos, web-sys and js-sys.
//!
//! Three layers, each importing only the ones below it:
//! - the views ([`app`] lays them out: [`model_panel`], [`controls`], [`output`],
//!   [`diagram`] (in KV budget mode each layer's G; [`budget_view`] the mode's controls and
//!   its perplexity beside the uniform G of the same bytes),
//!   [`kv_meter`], [`tradeoffs`] with [`quality_types`] (both with [`maps_cost`]: the
//!   regrouping maps' bytes beside the cache's), and the views that explain GQA: attention by KV
//!   group ([`attention_view`]), G side by side ([`compare_view`]), quality against memory and
//!   speed ([`tradeoff_plot`]), the cache calculator ([`calculator`])). Each reads the state it
//!   shows from a context, and asks for work through the engine's owner.
//! - the engine's owner ([`owner`]): one task holds the loaded model and runs commands in
//!   order — load, generate, regroup, measure, compare.
//! - the page's state by concern ([`state`], the settings in [`url_state`], mirrored in the
//!   URL), and below it the engine wherever it runs ([`engine`]), the model's bytes
//!   ([`loader`]) and small helpers ([`js`], [`format`]).

mod app;
mod attention_view;
mod budget_view;
mod calculator;
mod compare_view;
mod controls;
mod diagram;
mod engine;
mod format;
mod js;
mod kv_meter;
mod loader;
mod maps_cost;
mod model_panel;
mod output;
mod owner;
mod quality_types;
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
