//! What the page has measured on the loaded model: the decode speed at each (backend, G, KV
//! cache type) over this page's runs, the perplexity of the built-in passage at each (G,
//! method, cache type), the seconds each calibrated G took to fit here, and the last
//! side-by-side comparison. The engine's owner writes them; "What each G buys", the plot and
//! the side-by-side view read them.

use crate::engine::Backend;
use crate::model::KvType;
use crate::regroup::Method;
use leptos::prelude::*;
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A KV cache type as a key of the measurements, ordered as [`KvType::ALL`] (f32, f16, q8_0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kv(pub KvType);

impl Kv {
    fn rank(self) -> usize {
        KvType::ALL.iter().position(|&t| t == self.0).unwrap_or(0)
    }
}

impl Ord for Kv {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank().cmp(&other.rank())
    }
}

impl PartialOrd for Kv {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// What a perplexity was measured at: G, how a G below the native one was made, the cache type.
pub type QualityKey = (usize, Method, Kv);

/// The key a perplexity at (G, method, cache type) is kept under: every G at or above the
/// native `g0` is the native model, measured once as (g0, mean).
pub fn quality_key(g: usize, g0: usize, method: Method, t: KvType) -> QualityKey {
    match g >= g0 {
        true => (g0, Method::Mean, Kv(t)),
        false => (g, method, Kv(t)),
    }
}

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

/// One column's greedy continuation (at its G and cache type) and, at every step, its five
/// most likely tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub groups: usize,
    pub kv: KvType,
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    pub top: Vec<Vec<(u32, f32)>>,
}

/// What the columns of a comparison vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Across {
    /// One column per G, at one cache type; the native G is the reference.
    Groups,
    /// One column per KV cache type, at one G; f32 is the reference.
    Types,
}

/// The side-by-side columns so far, the reference column among them (the native G, or f32),
/// the method of the merges, and the engine that computed them (the GPU's f32 forward, or
/// `cpu-q8`: their greedy ids may part where two tokens are nearly tied).
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub native: usize,
    pub method: Method,
    pub backend: Backend,
    pub across: Across,
    /// The (G, cache type) of the column the others are held against.
    pub reference: (usize, KvType),
    pub columns: Vec<Column>,
}

impl Comparison {
    pub fn reference_column(&self) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| (c.groups, c.kv) == self.reference)
    }

    pub fn is_reference(&self, c: &Column) -> bool {
        (c.groups, c.kv) == self.reference
    }

    /// Where `c` first differs from the reference column (`None`: nowhere, or no reference
    /// yet).
    pub fn departs(&self, c: &Column) -> Option<usize> {
        let n = self.reference_column()?;
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

/// A KV budget's perplexity on the built-in passage, measured in budget mode beside the
/// uniform G's (the same passage, method and cache type).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetScore {
    /// KV heads per layer on average, and each layer's G.
    pub budget: f64,
    pub layer_groups: Vec<usize>,
    pub method: Method,
    pub kv: KvType,
    pub perplexity: f64,
}

/// The measurements, as `Copy` handles.
#[derive(Clone, Copy)]
pub struct Measurements {
    /// Decode speed by (backend, G, cache type): kept when the person switches backend (not
    /// when the model changes), so both engines can be compared.
    pub decode: RwSignal<BTreeMap<(Backend, usize, Kv), Measured>>,
    /// Perplexity of the built-in passage by (G, method, cache type); G ≥ G0 is measured once,
    /// at the native G, with [`Method::Mean`] (every such G gives the same model):
    /// [`quality_key`].
    pub quality: RwSignal<BTreeMap<QualityKey, f64>>,
    /// How much of the built-in passage the quality figures score on the loaded model: the
    /// setting's count clamped to the passage (`None` before a model is loaded).
    pub passage: RwSignal<Option<Passage>>,
    /// Seconds each calibrated G took to fit on this page (absent: loaded from the cache).
    pub calibration_s: RwSignal<BTreeMap<usize, f64>>,
    /// The side-by-side generation at several G: its last result.
    pub comparison: RwSignal<Option<Comparison>>,
    /// The KV budget's perplexity, when "What each G buys" was measured in budget mode.
    pub budget: RwSignal<Option<BudgetScore>>,
}

impl Measurements {
    pub fn new() -> Self {
        Measurements {
            decode: RwSignal::new(BTreeMap::new()),
            quality: RwSignal::new(BTreeMap::new()),
            passage: RwSignal::new(None),
            calibration_s: RwSignal::new(BTreeMap::new()),
            comparison: RwSignal::new(None),
            budget: RwSignal::new(None),
        }
    }

    /// The decode speeds measured at each G with cache type `t` on the backends `on` accepts
    /// (tracked).
    pub fn speeds_on(&self, on: impl Fn(Backend) -> bool, t: KvType) -> BTreeMap<usize, Measured> {
        self.decode.with(|m| {
            m.iter()
                .filter(|((b, _, kv), _)| on(*b) && *kv == Kv(t))
                .map(|(&(_, g, _), &v)| (g, v))
                .collect()
        })
    }
}
