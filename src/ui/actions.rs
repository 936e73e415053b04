//! What the page does in answer to a person or to the URL: load a model, generate, change G,
//! stop. Each action reads and writes the [`Ui`] state; errors end up in `status`, never in a
//! panic. One thing at a time holds the engine ([`Activity`]): a model asked for while a
//! generation runs stops the run and loads when it has ended; one asked for during a load
//! loads after it.

use super::engine::{page_webgpu, BackendChoice, PageEngine};
use super::generation::{self, Job, Outcome};
use super::js::yield_now;
use super::loader::{self, DEFAULT_MODEL_NAME};
use super::session;
use super::state::{Activity, LoadRequest, Source, Status, Ui};
use super::{compare, quality, regrouping};
use crate::engine::EngineError;
use crate::regroup::Method;
use futures_util::future::join;
use leptos::prelude::*;
use wasm_bindgen_futures::spawn_local;

/// Loads the default model on the backend the URL asks for (and starts generating if the URL
/// asks).
pub fn boot(ui: Ui) {
    spawn_local(async move {
        let loaded = load(ui, Source::Default).await;
        become_idle(ui);
        if loaded && ui.settings.get_untracked().autorun {
            generate(ui);
        }
    });
}

/// Loads a model and replaces the current one only once the new one works; on failure the
/// page keeps the model it had. Returns whether it loaded.
pub async fn load(ui: Ui, source: Source) -> bool {
    let progress_before = ui.progress.get_untracked();
    match try_load(ui, source).await {
        Ok(()) => {
            ui.status.set(Status::Ready);
            true
        }
        Err(e) => {
            // The bar goes back to the model that is still loaded, if any.
            if ui.info.with_untracked(Option::is_some) {
                ui.progress.set(progress_before);
            }
            ui.status.set(Status::Error(e));
            false
        }
    }
}

async fn try_load(ui: Ui, source: Source) -> Result<(), String> {
    ui.status.set(Status::Loading("reading the model".into()));
    let progress = move |p| ui.progress.set(Some(p));
    let wanted = ui.settings.with_untracked(|s| session::Wanted {
        choice: s.backend,
        ahead: s.ahead,
        worker: s.worker,
    });
    // The engine's worker starts while the model is read. WebGPU is looked for by the worker,
    // or by the page only where the worker has none or is not used (its first adapter request
    // can hold the thread for seconds: after the read, so that the page shows its progress).
    let choice = wanted.choice;
    let worker = async move {
        match wanted.worker {
            true => Some(PageEngine::start_worker(choice).await),
            false => None,
        }
    };
    let read = async {
        match &source {
            Source::Default => Ok::<_, String>((
                loader::load_default(&progress).await?,
                DEFAULT_MODEL_NAME.to_string(),
            )),
            Source::File(f) => Ok((loader::load_file(f, &progress).await?, f.name())),
        }
    };
    let (worker, read) = join(worker, read).await;
    let (loaded, name): (_, String) = read?;
    ui.status.set(Status::Loading(
        "building the tokenizer and loading the weights into the engine".into(),
    ));
    yield_now().await;
    let (bytes, sha256) = (loaded.bytes, loaded.sha256);
    let opened = session::open(bytes, &name, &sha256, wanted, worker).await;
    let (mut s, info) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // backend=gpu where the page has no WebGPU: the notice, and the CPU on offer.
            if let (BackendChoice::Gpu, Err(why)) = (choice, page_webgpu(choice).await) {
                ui.no_webgpu.set(Some(why));
            }
            return Err(e);
        }
    };
    ui.no_webgpu.set(None);
    let valid = info.cfg.valid_groups();
    let wanted = ui.groups.get_untracked();
    let g = if valid.contains(&wanted) {
        wanted
    } else {
        info.cfg.n_kv_heads
    };
    ui.groups.set(g);
    ui.quality.set(Default::default());
    quality::restore(ui, &s);
    ui.calibration_s.set(Default::default());
    let method = ui.method.get_untracked();
    if !regrouping::is_current(&s, g, method) {
        let applied = regrouping::apply(ui, &mut s, g, method).await;
        applied.map_err(|e| e.to_string())?;
    }
    ui.tokenizer.set_value(Some(s.tok.clone()));
    let same_model = ui
        .info
        .with_untracked(|i| i.as_ref().map(|i| i.sha256.clone()))
        == Some(info.sha256.clone());
    if !same_model {
        // Speeds are kept per backend across reloads of the same model only.
        ui.decode_by_groups.set(Default::default());
    }
    ui.session.get_value().replace(Some(s));
    ui.info.set(Some(info));
    ui.source.set_value(Some(source));
    ui.positions.set(None);
    ui.gpu_failed.set(false);
    if wanted != 0 && wanted != g {
        return Err(format!(
            "groups={wanted} is not a number of KV groups for this model: G is 1..={}",
            valid.len()
        ));
    }
    Ok(())
}

/// Loads a model now if the engine is free, else as soon as it is: a running generation is
/// asked to stop first, a load in progress ends first (the latest request wins).
fn request_load(ui: Ui, req: LoadRequest) {
    match ui.activity.get_untracked() {
        Activity::Idle => start_load(ui, req),
        busy => {
            ui.queued_load.set_value(Some(req));
            if busy == Activity::Generating {
                ui.stop.set(true);
            }
        }
    }
}

fn start_load(ui: Ui, req: LoadRequest) {
    ui.activity.set(Activity::Loading);
    if req.fresh_device {
        ui.session.get_value().replace(None);
    }
    spawn_local(async move {
        load(ui, req.source).await;
        become_idle(ui);
    });
}

/// The engine is free again: a model asked for meanwhile loads now.
fn become_idle(ui: Ui) {
    ui.activity.set(Activity::Idle);
    if let Some(req) = ui.queued_load.try_update_value(Option::take).flatten() {
        start_load(ui, req);
    }
}

/// Loads the current model again on a fresh GPU device (after a device loss); a running
/// generation is stopped first.
pub fn reload_engine(ui: Ui) {
    let source = ui.source.get_value().unwrap_or(Source::Default);
    request_load(
        ui,
        LoadRequest {
            source,
            fresh_device: true,
        },
    );
}

/// Loads the current model again on the backend `choice` (`auto`, `gpu`, `cpu`).
pub fn set_backend(ui: Ui, choice: BackendChoice) {
    ui.settings.update(|s| s.backend = choice);
    reload_engine(ui);
}

/// Loads a model file the person dropped or picked; a running generation is stopped first.
pub fn open_file(ui: Ui, file: web_sys::File) {
    request_load(
        ui,
        LoadRequest {
            source: Source::File(file),
            fresh_device: false,
        },
    );
}

/// Starts generating from the current settings, unless something else is running.
pub fn generate(ui: Ui) {
    if ui.is_busy() {
        return;
    }
    let slot = ui.session.get_value();
    let Some(mut s) = slot.borrow_mut().take() else {
        ui.status.set(Status::Error("no model is loaded".into()));
        return;
    };
    let st = ui.settings.get_untracked();
    let prompt = match prompt_ids(ui, &s) {
        Ok(ids) => ids,
        Err(e) => {
            slot.replace(Some(s));
            ui.status.set(Status::Error(e));
            return;
        }
    };
    let job = Job {
        prompt,
        sampling: st.sampling(),
        max_tokens: st.max_tokens,
        stop_token: if st.ignore_eos { None } else { s.tok.eos_id },
    };
    ui.stop.set(false);
    ui.output.set(String::new());
    ui.ids.set(Vec::new());
    ui.tokens_per_s.set(None);
    ui.prefill_ms.set(None);
    ui.positions.set(Some(0));
    ui.activity.set(Activity::Generating);
    ui.status.set(Status::Generating);
    spawn_local(async move {
        let result = generation::run(ui, &mut s, job).await;
        slot.replace(Some(s));
        finish(ui, result);
        become_idle(ui);
        // A G or method chosen after the last token is applied now.
        reconcile(ui);
    });
}

/// The prompt's ids as the model sees them (in the chat template when chat is on).
fn prompt_ids(ui: Ui, s: &session::Session) -> Result<Vec<u32>, String> {
    let st = ui.settings.get_untracked();
    let text = if st.chat {
        s.tok.chat_prompt(&st.prompt, None)
    } else {
        Ok(st.prompt.clone())
    };
    text.and_then(|t| s.tok.encode_prompt(&t))
        .map_err(|e| e.to_string())
}

/// Generates the prompt greedily at each G of `gs` side by side (`compare.rs`), when the
/// engine is free.
pub fn compare(ui: Ui, gs: Vec<usize>, tokens: usize) {
    ui.stop.set(false);
    work(ui, move |mut s| async move {
        let prompt = match prompt_ids(ui, &s) {
            Ok(p) => p,
            Err(e) => {
                ui.status.set(Status::Error(e));
                return (s, Ok(None));
            }
        };
        let result = compare::run(ui, &mut s, prompt, gs, tokens).await;
        (s, result.map(|()| Some("compared")))
    });
}

fn finish(ui: Ui, result: Result<Outcome, EngineError>) {
    match result {
        Ok(o) => ui.status.set(Status::Done(
            match o {
                Outcome::MaxTokens => "",
                Outcome::Eos => "end of sequence",
                Outcome::Stopped => "stopped",
            }
            .into(),
        )),
        Err(e) => {
            ui.gpu_failed.set(matches!(
                e,
                EngineError::Gpu(_) | EngineError::DeviceLost(_) | EngineError::WorkerLost(_)
            ));
            ui.status.set(Status::Error(e.to_string()));
        }
    }
}

/// Asks a running generation to stop after its current step (a token, or a chunk of its
/// prefill).
pub fn stop(ui: Ui) {
    ui.stop.set(true);
}

/// Changes G: at once when the engine is free (the KV cache is rebuilt; a calibrated merge
/// not fitted yet is fitted first), or between two steps of a running generation (which then
/// prefills its text so far under the new G and goes on).
pub fn set_groups(ui: Ui, g: usize) {
    let Some(info) = ui.info.get_untracked() else {
        return;
    };
    if !info.cfg.valid_groups().contains(&g) || g == ui.groups.get_untracked() {
        return;
    }
    ui.groups.set(g);
    ui.settings.update(|s| s.groups = Some(g));
    reconcile(ui);
}

/// Changes how a G below the model's own is made, as [`set_groups`] changes G.
pub fn set_method(ui: Ui, method: Method) {
    if method == ui.method.get_untracked() {
        return;
    }
    ui.method.set(method);
    ui.settings.update(|s| s.regroup = method);
    reconcile(ui);
}

/// Brings the engine to the G and method the page shows. A running generation does it
/// between two steps; a load, when it ends; otherwise a task holds the engine meanwhile (a
/// calibration takes a while) and checks again when done, in case they changed.
fn reconcile(ui: Ui) {
    work(ui, move |mut s| async move {
        loop {
            let (g, method) = (ui.groups.get_untracked(), ui.method.get_untracked());
            if regrouping::is_current(&s, g, method) {
                return (s, Ok(None));
            }
            if let Err(e) = regrouping::apply(ui, &mut s, g, method).await {
                return (s, Err(e));
            }
            ui.status.set(Status::Ready);
        }
    });
}

/// Measures "What each G buys" on the built-in passage (fitting any calibrated merge not
/// fitted yet), when the engine is free.
pub fn measure_quality(ui: Ui) {
    let tokens = ui.settings.with_untracked(|st| st.quality_tokens);
    work(ui, move |mut s| async move {
        let result = quality::measure(ui, &mut s, tokens).await;
        (s, result.map(|()| Some("quality measured")))
    });
}

/// Runs `task` on the session when the engine is free (nothing happens otherwise), holding
/// it meanwhile ([`Activity::Working`]); the task's error, or the outcome it names, goes to
/// the status line.
fn work<F, Fut>(ui: Ui, task: F)
where
    F: FnOnce(session::Session) -> Fut + 'static,
    Fut:
        std::future::Future<Output = (session::Session, Result<Option<&'static str>, EngineError>)>,
{
    if ui.activity.get_untracked() != Activity::Idle {
        return;
    }
    let slot = ui.session.get_value();
    let Some(s) = slot.borrow_mut().take() else {
        return;
    };
    ui.activity.set(Activity::Working);
    spawn_local(async move {
        let (s, result) = task(s).await;
        slot.replace(Some(s));
        match result {
            Ok(Some(done)) => ui.status.set(Status::Done(done.into())),
            Ok(None) => {}
            Err(e) => finish(ui, Err(e)),
        }
        become_idle(ui);
    });
}

/// Counts the prompt's tokens (as the model will see them) for the KV meter.
pub fn count_prompt(ui: Ui) {
    let st = ui.settings.get_untracked();
    let Some(tok) = ui.tokenizer.get_value() else {
        return;
    };
    let text = if st.chat {
        tok.chat_prompt(&st.prompt, None)
    } else {
        Ok(st.prompt)
    };
    if let Ok(ids) = text.and_then(|t| tok.encode_prompt(&t)) {
        ui.prompt_tokens.set(ids.len());
    }
}

/// Developer tool (`?debug=1`): destroys the GPU device, as a driver reset would.
pub fn lose_device(ui: Ui) {
    work(ui, move |mut s| async move {
        let result = s.engine.lose_device().await;
        (s, result.map(|()| None))
    });
}

/// Developer tool (`?debug=1`): makes the engine's worker panic (`memory`: run out of memory),
/// as a bug or a too-large model would.
pub fn crash_worker(ui: Ui, memory: bool) {
    work(ui, move |mut s| async move {
        let result = s.engine.crash_worker(memory).await;
        (s, result.map(|()| None))
    });
}

/// Developer tool (`?debug=1`): offers "Reload the engine" as a failed GPU call would (a
/// regroup out of memory, say), while the device goes on working.
pub fn fail_gpu(ui: Ui) {
    ui.gpu_failed.set(true);
}
