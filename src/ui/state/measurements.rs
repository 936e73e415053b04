//! What the page has measured on the loaded model: the decode speed at each (backend, G) over
//! this page's runs, the perplexity of the built-in passage at each (G, method), the seconds
//! each calibrated G took to fit here, and the last side-by-side comparison. The engine's
//! owner writes them; "What each G buys", the plot and the side-by-side view read them.

use crate::engine::Backend;
use crate::regroup::Method;
use leptos::prelude::*;
use std::collections::BTreeMap;

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

/// One G's greedy continuation and, at every step, its five most likely tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub groups: usize,
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    pub top: Vec<Vec<(u32, f32)>>,
}

/// The side-by-side columns so far, the native G among them, the method of the merges, and
/// the engine that computed them (the GPU's f32 forward, or `cpu-q8`: their greedy ids may part
/// where two tokens are nearly tied).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub native: usize,
    pub method: Method,
    pub backend: Backend,
    pub columns: Vec<Column>,
}

impl Comparison {
    pub fn native_column(&self) -> Option<&Column> {
        self.columns.iter().find(|c| c.groups == self.native)
    }

    /// Where `c` first differs from the native column (`None`: nowhere, or no native yet).
    pub fn departs(&self, c: &Column) -> Option<usize> {
        let n = self.native_column()?;
        let same = c.ids.iter().zip(&n.ids).take_while(|(a, b)| a == b).count();
        (same < c.ids.len().max(n.ids.len())).then_some(same)
    }
}

/// The tokens of the built-in passage the quality figures score, of all it has on the loaded
/// model's tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Passage {
    pub used: usize,
    pub total: usize,
}

/// The measurements, as `Copy` handles.
#[derive(Clone, Copy)]
pub struct Measurements {
    /// Decode speed by (backend, G): kept when the person switches backend (not when the
    /// model changes), so both engines can be compared.
    pub decode: RwSignal<BTreeMap<(Backend, usize), Measured>>,
    /// Perplexity of the built-in passage by (G, method); G ≥ G0 is measured once, at the
    /// native G, with [`Method::Mean`] (every such G gives the same model).
    pub quality: RwSignal<BTreeMap<(usize, Method), f64>>,
    /// How much of the built-in passage the quality figures score on the loaded model: the
    /// setting's count clamped to the passage (`None` before a model is loaded).
    pub passage: RwSignal<Option<Passage>>,
    /// Seconds each calibrated G took to fit on this page (absent: loaded from the cache).
    pub calibration_s: RwSignal<BTreeMap<usize, f64>>,
    /// The side-by-side generation at several G: its last result.
    pub comparison: RwSignal<Option<Comparison>>,
}

impl Measurements {
    pub fn new() -> Self {
        Measurements {
            decode: RwSignal::new(BTreeMap::new()),
            quality: RwSignal::new(BTreeMap::new()),
            passage: RwSignal::new(None),
            calibration_s: RwSignal::new(BTreeMap::new()),
            comparison: RwSignal::new(None),
        }
    }

    /// The decode speeds measured at each G on the backends `on` accepts (tracked).
    pub fn speeds_on(&self, on: impl Fn(Backend) -> bool) -> BTreeMap<usize, Measured> {
        self.decode.with(|m| {
            m.iter()
                .filter(|((b, _), _)| on(*b))
                .map(|(&(_, g), &v)| (g, v))
                .collect()
        })
    }
}
