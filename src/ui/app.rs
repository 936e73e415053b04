//! The page: header with status, the model strip, the prompt and output on the left, the G
//! slider, grouping diagram, KV-cache meter and trade-offs on the right.

use super::actions;
use super::attention_view::AttentionView;
use super::calculator::Calculator;
use super::compare::CompareView;
use super::controls::{GroupSlider, MethodSwitch, PromptControls};
use super::diagram::GroupingDiagram;
use super::engine::BackendChoice;
use super::kv_meter::KvMeter;
use super::model_panel::{guard_window_drops, ModelPanel};
use super::output::Output;
use super::session::ModelInfo;
use super::state::{Activity, Status, Ui};
use super::tradeoff_plot::TradeoffPlot;
use super::tradeoffs::Tradeoffs;
use super::url_state::Settings;
use leptos::prelude::*;

/// Which engine runs the model and why, and a control to choose (`backend=auto|gpu|cpu`).
#[component]
fn BackendLine(
    /// Page state.
    ui: Ui,
) -> impl IntoView {
    let backend = move || {
        ui.info
            .with(|i| i.as_ref().map_or("", ModelInfo::engine_name))
    };
    let line = move || {
        ui.info.with(|i| {
            i.as_ref().map(|i| {
                let on = if i.backend().is_cpu() { "CPU" } else { "GPU" };
                format!("{on}: {}", i.facts.why)
            })
        })
    };
    let worker = move || {
        ui.info
            .with(|i| i.as_ref().map(|i| i.thread.worker.to_string()))
    };
    let thread = move || {
        ui.info.with(|i| {
            i.as_ref().map(|i| match i.thread.worker {
                true => "It runs in a Web Worker: the page stays responsive.".to_string(),
                false => format!("It runs {}.", i.thread.why),
            })
        })
    };
    let choice = move || ui.settings.with(|s| s.backend.name());
    let choose = move |ev: leptos::ev::Event| {
        if let Some(b) = BackendChoice::parse(&event_target_value(&ev)) {
            actions::set_backend(ui, b);
        }
    };
    let options = ["auto", "gpu", "cpu"].map(|b| {
        let label = match b {
            "auto" => "auto (GPU if a hardware one, else CPU)",
            "gpu" => "GPU (WebGPU)",
            _ => "CPU (WebAssembly)",
        };
        view! { <option value=b selected=move || choice() == b>{label}</option> }
    });
    view! {
        <div class="backend" data-testid="backend" data-backend=backend>
            <span data-testid="backend-why">{line}</span>
            " "
            <span data-testid="engine-thread" data-worker=worker>{thread}</span>
            <label>
                " Engine "
                <select data-testid="backend-select" prop:value=choice on:change=choose prop:disabled=move || ui.activity.get() != Activity::Idle>{options}</select>
            </label>
        </div>
    }
}

/// The whole app. Reads its settings from the URL, keeps the URL up to date, and loads the
/// default model on start.
#[component]
pub fn App() -> impl IntoView {
    let (settings, url_problems) = Settings::read();
    let ui = Ui::new(settings);
    guard_window_drops();
    Effect::new(move |_| ui.settings.with(Settings::write));
    // Recount the prompt when its text, the chat toggle or the model changes.
    let prompt_key = Memo::new(move |_| ui.settings.with(|s| (s.prompt.clone(), s.chat)));
    Effect::new(move |_| {
        prompt_key.track();
        ui.info.track();
        actions::count_prompt(ui);
        if ui.activity.get_untracked() != Activity::Generating {
            ui.positions.set(None);
        }
    });
    actions::boot(ui);
    let state = move || match ui.status.get() {
        Status::Ready => "ready",
        Status::Generating | Status::Prefilling { .. } | Status::Comparing { .. } => "generating",
        Status::Done(_) => "done",
        Status::Error(_) => "error",
        _ => "loading",
    };
    view! {
        <header class="top">
            <div class="brand">
                <h1>"gqa-lab"</h1>
                <p class="tagline">"Grouped-query attention, live: change how many KV heads a real language model uses while it writes."</p>
            </div>
            <div class="top-right">
                <div class="status" data-testid="status" data-state=state role="status">{move || ui.status.get().text()}</div>
                <BackendLine ui />
            </div>
        </header>
        {(!url_problems.is_empty()).then(|| view! {
            <p class="notice" data-testid="url-notice">{format!("Ignored in the URL: {}", url_problems.join("; "))}</p>
        })}
        <Show when=move || ui.no_webgpu.with(Option::is_some)>
            <section class="notice error" data-testid="no-webgpu">
                <h2>"WebGPU is not available in this browser"</h2>
                <p>{move || ui.no_webgpu.get()}</p>
                <p>
                    "gqa-lab runs the model in WebGPU compute shaders. Use a current desktop "
                    <b>"Chrome or Edge (113 or newer)"</b>
                    ", Safari 26, or Firefox 141+ on Windows. On Linux, Chrome needs "
                    <code>"chrome://flags/#enable-unsafe-webgpu"</code>
                    " (or the command-line flag "<code>"--enable-unsafe-webgpu"</code>"); "
                    "check that "<code>"chrome://gpu"</code>" lists WebGPU as hardware accelerated or enabled."
                </p>
                <p>
                    "Or run the model on this computer's CPU (WebAssembly): "
                    <button class="primary" data-testid="use-cpu" on:click=move |_| actions::set_backend(ui, BackendChoice::Cpu)>"Run it on the CPU"</button>
                </p>
            </section>
        </Show>
        <Show when=move || ui.gpu_failed.get()>
            <section class="notice error" data-testid="device-lost">
                <h2>"The engine stopped working"</h2>
                <p>"The GPU device was lost or failed (a driver reset, the tab in the background too long, or too little memory), or the engine's worker stopped (a crash, or its memory ran out): the status line says which. Your settings and text are kept."</p>
                <button class="primary" data-testid="reload-engine" on:click=move |_| actions::reload_engine(ui)>"Reload the engine"</button>
            </section>
        </Show>
        <ModelPanel ui />
        <main class="grid">
            <section class="card">
                <h2>"Generate"</h2>
                <PromptControls ui />
                <Output ui />
            </section>
            <div class="side">
                <section class="card">
                    <h2>"KV groups"</h2>
                    <GroupSlider ui />
                    <MethodSwitch ui />
                    <GroupingDiagram ui />
                </section>
                <section class="card">
                    <h2>"KV cache"</h2>
                    <KvMeter ui />
                </section>
                <section class="card">
                    <h2>"What each G buys"</h2>
                    <Tradeoffs ui />
                </section>
                <Show when=move || ui.settings.with(|s| s.debug)>
                    <section class="card">
                        <h2>"Developer"</h2>
                        <button data-testid="lose-device" on:click=move |_| actions::lose_device(ui)>"Simulate a lost GPU device"</button>
                        " "
                        <button data-testid="fail-gpu" on:click=move |_| actions::fail_gpu(ui)>"Simulate a failed GPU call"</button>
                        " "
                        <button data-testid="crash-worker" on:click=move |_| actions::crash_worker(ui, false)>"Crash the engine's worker"</button>
                        " "
                        <button data-testid="exhaust-worker" on:click=move |_| actions::crash_worker(ui, true)>"Exhaust the worker's memory"</button>
                    </section>
                </Show>
            </div>
        </main>
        <div class="wide-stack">
            <AttentionView ui />
            <CompareView ui />
            <TradeoffPlot ui />
            <Calculator ui />
        </div>
        <footer>
            "gqa-lab · SmolLM2-135M-Instruct (Apache-2.0) in WGSL compute shaders through wgpu · "
            "GQA: Ainslie et al. 2023, arXiv:2305.13245"
        </footer>
    }
}
