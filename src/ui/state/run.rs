//! The engine's work as the page shows it: what the engine's owner is doing ([`Activity`]),
//! the status line ([`Status`]), and the current run — its text, ids, cache positions and
//! speed — with the prompt's length before any run, and the flag that ends a run between two
//! of its steps. The owner (`owner/`) writes all of it but the prompt's length and the flag.

use crate::ui::format;
use leptos::prelude::*;

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
    /// Scoring each layer's sensitivity for a KV budget: layers scored of all, on `tokens`
    /// tokens of the calibration text.
    Scoring {
        layer: usize,
        layers: usize,
        tokens: usize,
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
    /// Feeding the last token again to read the attention weights of a finished run (the
    /// attention view opened after it).
    ReadingAttention,
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
            } => format!(
                "calibrating G = {groups}: {layer} / {}",
                format::count(*layers, "layer")
            ),
            Status::Scoring {
                layer,
                layers,
                tokens,
            } => format!(
                "scoring each layer's sensitivity on {}: {layer} / {}",
                format::count(*tokens, "token"),
                format::count(*layers, "layer")
            ),
            Status::Measuring { done, of } => format!("measuring quality: {done} / {of}"),
            Status::Comparing { done, of } => format!("comparing: {done} / {of} columns"),
            Status::Generating => "generating".into(),
            Status::ReadingAttention => "reading the attention weights".into(),
            Status::Done(how) if how.is_empty() => "done".into(),
            Status::Done(how) => format!("done ({how})"),
            Status::Error(e) => format!("error: {e}"),
        }
    }
}

/// What the engine's owner is doing: set as it starts and ends each command, never read from
/// the status text. The controls offer what the engine can do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// Nothing: a generation may start.
    Idle,
    /// A model is being loaded (or the page is starting).
    Loading,
    /// A generation runs.
    Generating,
    /// A quality measurement runs: Stop ends it between two of its (G, method) runs.
    Measuring,
    /// A regroup (maybe a calibration) or a comparison runs.
    Working,
}

/// The run state, as `Copy` handles.
#[derive(Clone, Copy)]
pub struct RunState {
    pub status: RwSignal<Status>,
    pub activity: RwSignal<Activity>,
    /// The text generated so far.
    pub output: RwSignal<String>,
    pub ids: RwSignal<Vec<u32>>,
    /// Positions in the KV cache after the last run; `None` before a run (then the prompt
    /// counts).
    pub positions: RwSignal<Option<usize>>,
    /// The prompt's tokens as the model will see them (counted by the page, for the meter).
    pub prompt_tokens: RwSignal<usize>,
    /// The run's decode speed, and the time its prefill took.
    pub tokens_per_s: RwSignal<Option<f64>>,
    pub prefill_ms: RwSignal<Option<f64>>,
    /// Asked to stop: a generation, a comparison or a quality measurement ends after its
    /// current step. A flag the
    /// running command reads between its steps, not a signal anything redraws on.
    stop: StoredValue<bool>,
}

impl RunState {
    pub fn new() -> Self {
        RunState {
            status: RwSignal::new(Status::Starting),
            activity: RwSignal::new(Activity::Loading),
            output: RwSignal::new(String::new()),
            ids: RwSignal::new(Vec::new()),
            positions: RwSignal::new(None),
            prompt_tokens: RwSignal::new(0),
            tokens_per_s: RwSignal::new(None),
            prefill_ms: RwSignal::new(None),
            stop: StoredValue::new(false),
        }
    }

    /// Tokens the KV meter counts: the live sequence, or the prompt before any run (tracked).
    pub fn seq_tokens(&self) -> usize {
        self.positions
            .get()
            .unwrap_or_else(|| self.prompt_tokens.get())
    }

    /// Whether a generation runs (tracked: for the controls).
    pub fn is_generating(&self) -> bool {
        self.activity.get() == Activity::Generating
    }

    /// Whether what runs now ends on Stop: a generation or a quality measurement (tracked: for
    /// the Stop button; a comparison has its own).
    pub fn can_stop(&self) -> bool {
        matches!(
            self.activity.get(),
            Activity::Generating | Activity::Measuring
        )
    }

    /// Whether the engine's owner is doing nothing (tracked: for the controls).
    pub fn is_idle(&self) -> bool {
        self.activity.get() == Activity::Idle
    }

    /// Asks the running generation, comparison or quality measurement to end after its current
    /// step.
    pub fn ask_stop(&self) {
        self.stop.set_value(true);
    }

    pub fn stop_asked(&self) -> bool {
        self.stop.get_value()
    }

    /// A new run starts: an earlier request to stop is forgotten.
    pub fn clear_stop(&self) {
        self.stop.set_value(false);
    }
}
