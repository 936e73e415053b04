//! The page's state, by concern. Each concern is a small `Copy` bundle of signals, provided
//! once by the app as a context; a component takes (`expect_context`) only the ones it reads.
//!
//! | concern | type | who writes it |
//! |---|---|---|
//! | the settings: prompt, sampling, G, method, engine… (shared as the URL) | `RwSignal<`[`Settings`]`>` | the controls |
//! | the G in use, derived from the settings and the model | [`Groups`] | — |
//! | the KV cache's element type in use, derived likewise | [`CacheType`] | — |
//! | the loaded model, its tokenizer, the load's progress, the engine's health | [`model::LoadedModel`] | the engine's owner |
//! | what the engine is doing, the status line, the current run | [`run::RunState`] | the engine's owner |
//! | speeds, quality, calibration times, the side-by-side comparison | [`measurements::Measurements`] | the engine's owner |
//! | the attention view's layer and what it shows | [`attention::AttentionWatch`] | the view and a generation |
//!
//! The engine itself is no one's state here: one task owns it (`owner/`), and the views send it
//! commands. A new control that belongs in a shared link keeps its value in [`Settings`]; one
//! that only shapes a view keeps a signal in that view; what the engine produces goes into the
//! concern above that it belongs to.

pub mod attention;
pub mod measurements;
pub mod model;
pub mod run;

use crate::model::KvType;
use crate::ui::url_state::Settings;
use attention::AttentionWatch;
use leptos::prelude::*;
use measurements::Measurements;
use model::LoadedModel;
use run::RunState;

/// The G the page shows and runs: the settings' G where the loaded model has it, else the
/// model's own ([`Settings::groups_on`]); derived, never kept apart from the settings.
#[derive(Clone, Copy)]
pub struct Groups(Memo<usize>);

impl Groups {
    fn new(settings: RwSignal<Settings>, model: LoadedModel) -> Self {
        Groups(Memo::new(move |_| {
            model.info.with(|info| {
                settings.with(|s| match info {
                    Some(i) => s.groups_on(&i.cfg),
                    None => s.groups.unwrap_or(0),
                })
            })
        }))
    }

    /// Tracked.
    pub fn get(&self) -> usize {
        self.0.get()
    }

    pub fn get_untracked(&self) -> usize {
        self.0.get_untracked()
    }
}

/// The KV cache type the page shows and runs: the settings' where the loaded model's heads
/// hold it ([`Settings::kv_type_on`]); derived, never kept apart from the settings.
#[derive(Clone, Copy)]
pub struct CacheType(Memo<KvType>);

impl CacheType {
    fn new(settings: RwSignal<Settings>, model: LoadedModel) -> Self {
        CacheType(Memo::new(move |_| {
            model.info.with(|info| {
                settings.with(|s| match info {
                    Some(i) => s.kv_type_on(&i.cfg),
                    None => s.kv_type,
                })
            })
        }))
    }

    /// Tracked.
    pub fn get(&self) -> KvType {
        self.0.get()
    }

    pub fn get_untracked(&self) -> KvType {
        self.0.get_untracked()
    }
}

/// Every concern together: what the engine's owner writes to. Components never take it.
#[derive(Clone, Copy)]
pub struct Page {
    pub settings: RwSignal<Settings>,
    pub model: LoadedModel,
    pub run: RunState,
    pub measured: Measurements,
    pub attention: AttentionWatch,
}

impl Page {
    /// Makes each concern's signals and provides each as a context to the components below.
    pub fn provide(settings: Settings) -> Self {
        let page = Page {
            settings: RwSignal::new(settings),
            model: LoadedModel::new(),
            run: RunState::new(),
            measured: Measurements::new(),
            attention: AttentionWatch::new(),
        };
        provide_context(page.settings);
        provide_context(Groups::new(page.settings, page.model));
        provide_context(CacheType::new(page.settings, page.model));
        provide_context(page.model);
        provide_context(page.run);
        provide_context(page.measured);
        provide_context(page.attention);
        page
    }
}
