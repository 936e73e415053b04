//! The attention watch: whether the attention view is open, the layer it watches, what it
//! last showed, and how many times weights were read back from the engine (never while it is
//! closed). The view writes the first two; a generation reads them between its steps and
//! writes the rest.

use crate::engine::AttentionWeights;
use crate::regroup::Grouping;
use leptos::prelude::*;

/// One read of the attention view: a layer's weights for the last token fed, the grouping
/// they were computed at, and the token at each position (the view decodes those it draws).
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionShown {
    pub weights: AttentionWeights,
    pub grouping: Grouping,
    pub ids: Vec<u32>,
}

/// The attention watch, as `Copy` handles.
#[derive(Clone, Copy)]
pub struct AttentionWatch {
    pub open: RwSignal<bool>,
    pub layer: RwSignal<usize>,
    pub shown: RwSignal<Option<AttentionShown>>,
    pub reads: RwSignal<u64>,
}

impl AttentionWatch {
    pub fn new() -> Self {
        AttentionWatch {
            open: RwSignal::new(false),
            layer: RwSignal::new(0),
            shown: RwSignal::new(None),
            reads: RwSignal::new(0),
        }
    }

    /// The layer the engine should watch: the view's layer while it is open (not tracked).
    pub fn wanted(&self) -> Option<usize> {
        self.open
            .get_untracked()
            .then(|| self.layer.get_untracked())
    }
}
