//! The page's state: signals the components read, the loaded session, what the engine is
//! doing ([`Activity`]), and the requests (stop, regroup, a model to load next) that a run
//! picks up between its steps.

use super::compare::Comparison;
use super::format;
use super::loader::Progress;
use super::session::{ModelInfo, Session};
use super::url_state::Settings;
use crate::engine::{AttentionWeights, Backend};
use crate::model::{Grouping, Method};
use crate::tokenizer::Tokenizer;
use leptos::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// What the status line says: `ready`, `prefilling …`, `generating`, `done`, `error: …`. Only
/// words for people: whether the engine is busy is [`Activity`]'s.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    Starting,
    Loading(String),
    Ready,
    /// Feeding the prompt (or, after a change of G, the text so far): tokens in the cache of
    /// those to feed.
    Prefilling {
        fed: usize,
        total: usize,
    },
    /// Fitting the calibrated merge to G: layers fitted of all.
    Calibrating {
        groups: usize,
        layer: usize,
        layers: usize,
    },
    /// Scoring the built-in passage for "What each G buys": runs done of all.
    Measuring {
        done: usize,
        of: usize,
    },
    /// Generating side by side: columns done of all.
    Comparing {
        done: usize,
        of: usize,
    },
    Generating,
    Done(String),
    Error(String),
}

impl Status {
    pub fn text(&self) -> String {
        match self {
            Status::Starting => "starting".into(),
            Status::Loading(what) => format!("loading: {what}"),
            Status::Ready => "ready".into(),
            Status::Prefilling { fed, total } => {
                format!("prefilling {fed} / {}", format::count(*total, "token"))
            }
            Status::Calibrating {
                groups,
                layer,
                layers,
            } => format!("calibrating G = {groups}: {layer} / {layers} layers"),
            Status::Measuring { done, of } => format!("measuring quality: {done} / {of}"),
            Status::Comparing { done, of } => format!("comparing: {done} / {of} columns"),
            Status::Generating => "generating".into(),
            Status::Done(how) if how.is_empty() => "done".into(),
            Status::Done(how) => format!("done ({how})"),
            Status::Error(e) => format!("error: {e}"),
        }
    }
}

/// What holds the engine: a fact of the session, set by the actions that start and end each
/// piece of work, never read from the status text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Nothing: a generation may start, a model load, a change of G apply at once.
    Idle,
    /// A model is being loaded (or the page is starting).
    Loading,
    /// A generation holds the engine.
    Generating,
    /// A regroup (maybe a calibration) or a quality measurement holds the engine.
    Working,
}

/// Where the loaded model came from, to load it again after a lost device.
#[derive(Clone)]
pub enum Source {
    Default,
    File(web_sys::File),
}

/// A model to load: a new one, or the current one again on a fresh GPU device.
#[derive(Clone)]
pub struct LoadRequest {
    pub source: Source,
    /// Drop the current engine first (its device is lost or failed).
    pub fresh_device: bool,
}

pub type Slot<T> = Rc<RefCell<Option<T>>>;

/// Decoded tokens and the milliseconds they took (each a forward of one token and its
/// sampling, as the page runs them).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    pub tokens: usize,
    pub ms: f64,
}

impl Measured {
    pub fn add(&mut self, ms: f64) {
        self.tokens += 1;
        self.ms += ms;
    }

    pub fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 * 1e3 / self.ms.max(1e-3)
    }
}

/// One read of the attention view: a layer's weights for the last token fed, the grouping
/// they were computed at, and the token at each position (the view decodes those it draws).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionShown {
    pub weights: AttentionWeights,
    pub grouping: Grouping,
    pub ids: Vec<u32>,
}

/// Every piece of state, as `Copy` handles.
#[derive(Clone, Copy)]
pub struct Ui {
    pub settings: RwSignal<Settings>,
    /// What holds the engine now.
    pub activity: RwSignal<Activity>,
    /// The grouping shown and used (1 ..= the query heads once a model is loaded).
    pub groups: RwSignal<usize>,
    pub status: RwSignal<Status>,
    pub progress: RwSignal<Option<Progress>>,
    pub info: RwSignal<Option<ModelInfo>>,
    /// Why WebGPU cannot be used, when it cannot.
    pub no_webgpu: RwSignal<Option<String>>,
    /// The GPU failed (e.g. device lost): offer to load the engine again.
    pub gpu_failed: RwSignal<bool>,
    pub output: RwSignal<String>,
    pub ids: RwSignal<Vec<u32>>,
    pub tokens_per_s: RwSignal<Option<f64>>,
    pub prefill_ms: RwSignal<Option<f64>>,
    /// Decode speed measured on the loaded model by (backend, G), over this page's runs: kept
    /// when the person switches backend, so both can be compared.
    pub decode_by_groups: RwSignal<BTreeMap<(Backend, usize), Measured>>,
    /// Positions in the KV cache after the last run; `None` before a run (then the prompt counts).
    pub positions: RwSignal<Option<usize>>,
    pub prompt_tokens: RwSignal<usize>,
    pub stop: RwSignal<bool>,
    /// How a G below the model's own is made; a change is applied as a change of G is.
    pub method: RwSignal<Method>,
    /// Perplexity of the built-in passage measured here, by (G, method); G ≥ G0 is measured
    /// once, at the native G, with [`Method::Mean`] (every such G gives the same model).
    pub quality: RwSignal<BTreeMap<(usize, Method), f64>>,
    /// Seconds each calibrated G took to fit on this page (absent: loaded from the cache).
    pub calibration_s: RwSignal<BTreeMap<usize, f64>>,
    /// The attention view: open or not, the layer it shows, what it shows, and how many times
    /// weights were read back from the engine (never while it is closed).
    pub attention_open: RwSignal<bool>,
    pub attention_layer: RwSignal<usize>,
    pub attention: RwSignal<Option<AttentionShown>>,
    pub attention_reads: RwSignal<u64>,
    /// The side-by-side generation at several G: its last result.
    pub comparison: RwSignal<Option<Comparison>>,
    pub session: StoredValue<Slot<Session>, LocalStorage>,
    /// A model asked for while the engine was busy, loaded as soon as it is free.
    pub queued_load: StoredValue<Option<LoadRequest>, LocalStorage>,
    pub tokenizer: StoredValue<Option<Rc<Tokenizer>>, LocalStorage>,
    pub source: StoredValue<Option<Source>, LocalStorage>,
}

impl Ui {
    /// The decode speeds measured at each G on the backends `on` accepts.
    pub fn speeds_on(&self, on: impl Fn(Backend) -> bool) -> BTreeMap<usize, Measured> {
        self.decode_by_groups.with(|m| {
            m.iter()
                .filter(|((b, _), _)| on(*b))
                .map(|(&(_, g), &v)| (g, v))
                .collect()
        })
    }

    /// The backend the loaded model runs on (`None` before one loads).
    pub fn backend(&self) -> Option<Backend> {
        self.info.with(|i| i.as_ref().map(ModelInfo::backend))
    }

    pub fn new(settings: Settings) -> Self {
        let settings_method = settings.regroup;
        Ui {
            groups: RwSignal::new(settings.groups.unwrap_or(0)),
            settings: RwSignal::new(settings),
            activity: RwSignal::new(Activity::Loading),
            status: RwSignal::new(Status::Starting),
            progress: RwSignal::new(None),
            info: RwSignal::new(None),
            no_webgpu: RwSignal::new(None),
            gpu_failed: RwSignal::new(false),
            output: RwSignal::new(String::new()),
            ids: RwSignal::new(Vec::new()),
            tokens_per_s: RwSignal::new(None),
            prefill_ms: RwSignal::new(None),
            decode_by_groups: RwSignal::new(BTreeMap::new()),
            positions: RwSignal::new(None),
            prompt_tokens: RwSignal::new(0),
            stop: RwSignal::new(false),
            method: RwSignal::new(settings_method),
            quality: RwSignal::new(BTreeMap::new()),
            calibration_s: RwSignal::new(BTreeMap::new()),
            attention_open: RwSignal::new(false),
            attention_layer: RwSignal::new(0),
            attention: RwSignal::new(None),
            attention_reads: RwSignal::new(0),
            comparison: RwSignal::new(None),
            session: StoredValue::new_local(Rc::new(RefCell::new(None))),
            queued_load: StoredValue::new_local(None),
            tokenizer: StoredValue::new_local(None),
            source: StoredValue::new_local(None),
        }
    }

    /// Tokens the KV meter counts: the live sequence, or the prompt before any run.
    pub fn seq_tokens(&self) -> usize {
        self.positions
            .get()
            .unwrap_or_else(|| self.prompt_tokens.get())
    }

    /// Whether a load or a generation holds the engine (not tracked).
    pub fn is_busy(&self) -> bool {
        self.activity.get_untracked() != Activity::Idle
    }

    /// The layer the engine should watch for the attention view: its layer while it is open.
    pub fn probe_wanted(&self) -> Option<usize> {
        self.attention_open
            .get_untracked()
            .then(|| self.attention_layer.get_untracked())
    }

    /// Whether a generation runs (tracked: for the controls).
    pub fn is_generating(&self) -> bool {
        self.activity.get() == Activity::Generating
    }
}
