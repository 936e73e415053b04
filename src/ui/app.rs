//! The page: header with status, the model strip, the prompt and output on the left, the G
//! slider, grouping diagram, KV-cache meter and trade-offs on the right, the views that
//! explain GQA below. The app makes the page's state (`state/`), starts the engine's owner
//! (`owner/`) and provides both to the components as contexts.

use super::attention_view::AttentionView;
use super::budget_view::{BudgetControls, BudgetQuality};
use super::calculator::Calculator;
use super::compare_view::CompareView;
use super::controls::{GroupSlider, KvTypeSwitch, MethodSwitch, PromptControls};
use super::diagram::GroupingDiagram;
use super::engine::BackendChoice;
use super::kv_meter::KvMeter;
use super::model_panel::{guard_window_drops, ModelPanel};
use super::output::Output;
use super::owner::EngineHandle;
use super::state::model::{LoadedModel, ModelInfo};
use super::state::run::{Activity, RunState, Status};
use super::state::Page;
use super::tradeoff_plot::TradeoffPlot;
use super::tradeoffs::Tradeoffs;
use super::url_state::Settings;
use leptos::prelude::*;

/// Runs the model on the engine `choice` names, from now on (the model is loaded again).
fn use_backend(settings: RwSignal<Settings>, engine: EngineHandle, choice: BackendChoice) {
    settings.update(|s| s.backend = choice);
    engine.reload();
}

/// Which engine runs the model and why, and a control to choose (`backend=auto|gpu|cpu`).
#[component]
fn BackendLine() -> impl IntoView {
    let info = expect_context::<LoadedModel>().info;
    let settings = expect_context::<RwSignal<Settings>>();
    let run = expect_context::<RunState>();
    let engine = expect_context::<EngineHandle>();
    let backend = move || info.with(|i| i.as_ref().map_or("", ModelInfo::engine_name));
    let line = move || {
        info.with(|i| {
            i.as_ref().map(|i| {
                let on = if i.backend().is_cpu() { "CPU" } else { "GPU" };
                format!("{on}: {}", i.facts.why)
            })
        })
    };
    let worker = move || info.with(|i| i.as_ref().map(|i| i.thread.worker.to_string()));
    let thread = move || {
        info.with(|i| {
            i.as_ref().map(|i| match i.thread.worker {
                true => "It runs in a Web Worker: the page stays responsive.".to_string(),
                false => format!("It runs {}.", i.thread.why),
            })
        })
    };
    let choice = move || settings.with(|s| s.backend.name());
    let choose = move |ev: leptos::ev::Event| {
        if let Some(b) = BackendChoice::parse(&event_target_value(&ev)) {
            use_backend(settings, engine, b);
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
                <select data-testid="backend-select" prop:value=choice on:change=choose prop:disabled=move || !run.is_idle()>{options}</select>
            </label>
        </div>
    }
}

/// Counts the prompt's tokens (as the model will see them) for the KV meter, whenever its
/// text, the chat toggle or the model changes; before a run, the meter counts them.
fn count_prompt(page: Page) {
    let (settings, model, run) = (page.settings, page.model, page.run);
    let prompt_key = Memo::new(move |_| settings.with(|s| (s.prompt.clone(), s.chat)));
    Effect::new(move |_| {
        prompt_key.track();
        model.info.track();
        let ids = model.tokenizer.with_value(|tok| {
            let tok = tok.as_ref()?;
            settings.with_untracked(|s| s.prompt_ids(tok)).ok()
        });
        if let Some(ids) = ids {
            run.prompt_tokens.set(ids.len());
        }
        if run.activity.get_untracked() != Activity::Generating {
            run.positions.set(None);
        }
    });
}

/// The whole app. Reads its settings from the URL, keeps the URL up to date, and loads the
/// default model on start.
#[component]
pub fn App() -> impl IntoView {
    let (settings, url_problems) = Settings::read();
    let page = Page::provide(settings);
    let engine = EngineHandle::spawn(page);
    provide_context(engine);
    guard_window_drops();
    Effect::new(move |_| page.settings.with(Settings::write));
    count_prompt(page);
    engine.boot();
    let (settings, model, run) = (page.settings, page.model, page.run);
    // The loaded model (the settings' built-in one until it loads), and its licence.
    let footer_model = move || {
        let (name, builtin) = model.info.with(|i| match i {
            Some(i) => (i.name.clone(), i.builtin),
            None => settings.with(|s| (s.model.display_name.to_string(), Some(s.model))),
        });
        match builtin {
            Some(m) => format!("{name} ({})", m.licence),
            None => name,
        }
    };
    let state = move || match run.status.get() {
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
                <div class="status" data-testid="status" data-state=state role="status">{move || run.status.get().text()}</div>
                <BackendLine />
            </div>
        </header>
        {(!url_problems.is_empty()).then(|| view! {
            <p class="notice" data-testid="url-notice">{format!("Ignored in the URL: {}", url_problems.join("; "))}</p>
        })}
        <Show when=move || model.no_webgpu.with(Option::is_some)>
            <section class="notice error" data-testid="no-webgpu">
                <h2>"WebGPU is not available in this browser"</h2>
                <p>{move || model.no_webgpu.get()}</p>
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
                    <button class="primary" data-testid="use-cpu" on:click=move |_| use_backend(settings, engine, BackendChoice::Cpu)>"Run it on the CPU"</button>
                </p>
            </section>
        </Show>
        <Show when=move || model.failed.get()>
            <section class="notice error" data-testid="device-lost">
                <h2>"The engine stopped working"</h2>
                <p>"The GPU device was lost or failed (a driver reset, the tab in the background too long, or too little memory), or the engine's worker stopped (a crash, or its memory ran out): the status line says which. Your settings and text are kept."</p>
                <button class="primary" data-testid="reload-engine" on:click=move |_| engine.reload()>"Reload the engine"</button>
            </section>
        </Show>
        <ModelPanel />
        <main class="grid">
            <section class="card">
                <h2>"Generate"</h2>
                <PromptControls />
                <Output />
            </section>
            <div class="side">
                <section class="card">
                    <h2>"KV groups"</h2>
                    <BudgetControls />
                    <Show when=move || settings.with(|s| s.budget.is_none())>
                        <GroupSlider />
                    </Show>
                    <MethodSwitch />
                    <KvTypeSwitch />
                    <GroupingDiagram />
                </section>
                <section class="card">
                    <h2>"KV cache"</h2>
                    <KvMeter />
                </section>
                <section class="card">
                    <h2>"What each G buys"</h2>
                    <Tradeoffs />
                    <BudgetQuality />
                </section>
                <Show when=move || settings.with(|s| s.debug)>
                    <section class="card">
                        <h2>"Developer"</h2>
                        <button data-testid="lose-device" on:click=move |_| engine.lose_device()>"Simulate a lost GPU device"</button>
                        " "
                        <button data-testid="fail-gpu" on:click=move |_| model.failed.set(true)>"Simulate a failed GPU call"</button>
                        " "
                        <button data-testid="crash-worker" on:click=move |_| engine.crash_worker(false)>"Crash the engine's worker"</button>
                        " "
                        <button data-testid="exhaust-worker" on:click=move |_| engine.crash_worker(true)>"Exhaust the worker's memory"</button>
                    </section>
                </Show>
            </div>
        </main>
        <div class="wide-stack">
            <AttentionView />
            <CompareView />
            <TradeoffPlot />
            <Calculator />
        </div>
        <footer>
            "gqa-lab · "{footer_model}" in WGSL compute shaders through wgpu, or in WebAssembly on the CPU · "
            "GQA: Ainslie et al. 2023, arXiv:2305.13245"
        </footer>
    }
}
