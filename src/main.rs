//! `gqa-lab`: the native command-line front end of the engine (see `gqa-lab --help`); on
//! wasm32, the entry point of the browser app ([`gqa_lab::ui`]).

#[cfg(not(target_arch = "wasm32"))]
mod cli;

#[cfg(not(target_arch = "wasm32"))]
fn main() -> std::process::ExitCode {
    cli::main()
}

#[cfg(target_arch = "wasm32")]
fn main() {
    gqa_lab::ui::mount();
}

/// The engine's Web Worker's entry point (`static/worker.js` calls it after instantiating this
/// module there); exported from the binary itself so that wasm-bindgen keeps it.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn engine_worker(warm_gpu: bool) {
    gqa_lab::ui::engine_worker(warm_gpu);
}
