//! Loading a model: its bytes (a built-in model, or a file the person chose), then a
//! [`Session`] — the engine the settings ask for, in its worker where it can — brought to the
//! settings' G, method and KV cache type (every engine loads with an f32 cache; the page's
//! default is f16). The page keeps the model it had until the new one works.

use super::session::{self, Session};
use super::{quality, regroup};
use crate::models::BuiltinModel;
use crate::ui::engine::{page_webgpu, BackendChoice, PageEngine};
use crate::ui::js::yield_now;
use crate::ui::loader;
use crate::ui::state::run::Status;
use crate::ui::state::Page;
use futures_util::future::join;
use leptos::prelude::*;

/// Where a model comes from (kept, to load it again after a lost device).
#[derive(Clone)]
pub enum Source {
    Builtin(&'static BuiltinModel),
    File(web_sys::File),
}

/// Loads the model from `source` into `session` (replacing the one there, and `from`, only
/// once the new one works) and says in the status line how it went. Returns whether it loaded
/// and runs the settings' G.
pub async fn load(
    page: Page,
    source: Source,
    session: &mut Option<Session>,
    from: &mut Option<Source>,
) -> bool {
    let progress_before = page.model.progress.get_untracked();
    // The model menu shows what is being loaded; a file that fails to load is not kept there
    // (a built-in model that fails is: the person may load it again on another engine).
    let file_before = page.model.file.get_untracked();
    let file = match &source {
        Source::File(f) => Some(f.name()),
        Source::Builtin(_) => None,
    };
    let is_file = file.is_some();
    page.model.file.set(file);
    match try_load(page, source, session, from).await {
        Ok(()) => {
            page.run.status.set(Status::Ready);
            true
        }
        Err(e) => {
            // The bar goes back to the model that is still loaded, if any.
            if page.model.info.with_untracked(Option::is_some) {
                page.model.progress.set(progress_before);
            }
            if is_file {
                page.model.file.set(file_before);
            }
            page.run.status.set(Status::Error(e));
            false
        }
    }
}

async fn try_load(
    page: Page,
    source: Source,
    session: &mut Option<Session>,
    from: &mut Option<Source>,
) -> Result<(), String> {
    let model = page.model;
    page.run
        .status
        .set(Status::Loading("reading the model".into()));
    let progress = move |p| model.progress.set(Some(p));
    let wanted = page.settings.with_untracked(|s| session::Wanted {
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
            Source::Builtin(m) => Ok::<_, String>((
                loader::load_builtin(m, &progress).await?,
                Some(*m),
                m.file_name.to_string(),
            )),
            Source::File(f) => Ok((loader::load_file(f, &progress).await?, None, f.name())),
        }
    };
    let (worker, read) = join(worker, read).await;
    let (loaded, builtin, file_name) = read?;
    page.run.status.set(Status::Loading(
        "building the tokenizer and loading the weights into the engine".into(),
    ));
    yield_now().await;
    let (bytes, sha256) = (loaded.bytes, loaded.sha256);
    let opened = session::open(bytes, builtin, &file_name, &sha256, wanted, worker).await;
    let (mut s, info) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            // backend=gpu where the page has no WebGPU: the notice, and the CPU on offer.
            if let (BackendChoice::Gpu, Err(why)) = (choice, page_webgpu(choice).await) {
                model.no_webgpu.set(Some(why));
            }
            return Err(e);
        }
    };
    model.no_webgpu.set(None);
    page.measured.quality.set(Default::default());
    quality::restore(page, &s);
    page.measured.calibration_s.set(Default::default());
    regroup::follow_settings(page, &mut s)
        .await
        .map_err(|e| e.to_string())?;
    model.tokenizer.set_value(Some(s.tok.clone()));
    let same_model = model
        .info
        .with_untracked(|i| i.as_ref().map(|i| i.sha256 == info.sha256));
    if same_model != Some(true) {
        // Speeds are kept per backend across reloads of the same model only; what the views
        // showed of another model goes.
        page.measured.decode.set(Default::default());
        page.measured.comparison.set(None);
        page.attention.shown.set(None);
    }
    let layers = info.cfg.n_layers;
    if page.attention.layer.get_untracked() >= layers {
        page.attention.layer.set(layers.saturating_sub(1));
    }
    *session = Some(s);
    *from = Some(source);
    let problem = groups_problem(page, &info.cfg)
        .or_else(|| budget_problem(page, &info.cfg))
        .or_else(|| kv_type_problem(page, &info.cfg));
    model.info.set(Some(info));
    page.run.positions.set(None);
    model.failed.set(false);
    problem.map_or(Ok(()), Err)
}

/// Why the settings' G cannot run on a model of `cfg`, if they ask for one it does not have
/// (it runs its own G instead).
fn groups_problem(page: Page, cfg: &crate::model::ModelConfig) -> Option<String> {
    let asked = page.settings.with_untracked(|s| s.groups)?;
    let valid = cfg.valid_groups();
    (!valid.contains(&asked)).then(|| {
        format!(
            "groups={asked} is not a number of KV groups for this model: G is 1..={}",
            valid.len()
        )
    })
}

/// Why the settings' KV budget cannot be spent on a model of `cfg`, if it cannot (the uniform
/// G runs instead).
fn budget_problem(page: Page, cfg: &crate::model::ModelConfig) -> Option<String> {
    let asked = page.settings.with_untracked(|s| s.budget)?;
    crate::regroup::budget::budget_heads(cfg, asked)
        .err()
        .map(|e| format!("budget={asked}: {e} for this model: the uniform G is used"))
}

/// Why the settings' KV cache type cannot run on a model of `cfg`, if it cannot (it runs the
/// default type instead).
fn kv_type_problem(page: Page, cfg: &crate::model::ModelConfig) -> Option<String> {
    let (asked, used) = page
        .settings
        .with_untracked(|s| (s.kv_type, s.kv_type_on(cfg)));
    (asked != used).then(|| {
        format!(
            "kv={} keeps blocks of 32 values and this model's heads have {}: {} is used",
            asked.name(),
            cfg.head_dim,
            used.name()
        )
    })
}
