//! Regrouping a checkpoint's KV heads, all in one place: which query heads share which KV
//! head ([`Grouping`]: every G from 1 to H, uneven groups included), the maps around attention
//! that make the G heads from the native ones ([`Regrouping`]: the GQA paper's mean-pooling,
//! or the calibrated, RoPE-aware merge), the calibrated fit of one layer ([`fit`], [`orefit`],
//! [`layer`]), the built-in texts it is fitted and scored on ([`texts`]), and the file format
//! and cache key of fitted maps ([`store`]: one key for the CLI's files and the page's Cache
//! Storage).
//!
//! Pure: no engine, no GPU, no DOM. The loop that walks an engine through the layers to fit
//! every layer on the activations of the model already merged below it is
//! `crate::engine::calibrate`, beside the other drivers of the engine contract.
//!
//! GQA: Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from
//! Multi-Head Checkpoints" (arXiv:2305.13245), §2.1 (mean-pooling, then uptraining).

pub mod budget;
mod cost;
pub mod fit;
mod grouping;
pub mod layer;
mod layered;
mod maps;
pub mod orefit;
pub mod qscale;
pub mod store;
pub mod texts;

pub use cost::{
    break_even, maps_bytes, maps_bytes_per_layer, planned_maps_bytes, Footprint, MAP_VALUE_BYTES,
};
pub use fit::{FitError, LayerStats};
pub use grouping::{pooling_matrix, pooling_plan, Grouping};
pub use maps::{cmul, LayerMaps, Method, Regrouping, VMap};
pub use orefit::{OutputFit, OutputStats};
pub use store::MapsKey;

/// Calibration tokens by default (the CLI's, and the page's on a hardware GPU), and the
/// length of each sequence they are cut into.
pub const DEFAULT_TOKENS: usize = 8192;
pub const SEQUENCE: usize = 1024;

/// The length of each calibration sequence for a model: [`SEQUENCE`], or its trained context
/// if that is shorter (a fit never asks for more positions than the model has).
pub fn sequence_len(cfg: &crate::model::ModelConfig) -> usize {
    SEQUENCE.min(cfg.context_length)
}

/// Fewest calibration tokens a fit takes (a smoke test's worth; the fit wants thousands).
pub const MIN_TOKENS: usize = 64;

/// How `n` calibration tokens are cut into sequences of at most `longest` positions: as few
/// as hold them all, of lengths differing by at most one (1,000 tokens in sequences of 512:
/// 500 and 500). Every token is used, so the count a fit reports and is keyed by is the count
/// it was fitted on; each sequence holds at least half of `longest` (or all `n`).
pub fn calibration_sequences(n: usize, longest: usize) -> Vec<std::ops::Range<usize>> {
    let count = n.div_ceil(longest.max(1));
    (0..count)
        .map(|i| i * n / count..(i + 1) * n / count)
        .collect()
}

/// The O refit's ridge by default (ARCHITECTURE.md has the measurements behind it).
pub const DEFAULT_O_RIDGE: f64 = 1.0;

/// The O refit's ridges the fit takes: past them the system is either not regularised at all
/// or its λ overflows (ρ multiplies the trace of the outputs' covariance).
pub const O_RIDGE_RANGE: std::ops::RangeInclusive<f64> = 1e-12..=1e12;

/// Why `ridge` is not a ridge the O refit takes, if it is not.
pub fn check_o_ridge(ridge: f64) -> Result<(), String> {
    if O_RIDGE_RANGE.contains(&ridge) {
        return Ok(());
    }
    let (lo, hi) = (O_RIDGE_RANGE.start(), O_RIDGE_RANGE.end());
    Err(format!(
        "the O refit's ridge must be between {lo:e} and {hi:e}, got {ridge}"
    ))
}

/// How the K slots of a merged head are spent (`fit.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KSlots {
    /// One slot per rotation pair: the best rank-1 merge at every frequency (the first
    /// calibrated fit).
    PerPair,
    /// The hd/2 slots go to the strongest components over all (pair, direction), by their
    /// query-weighted energy: a pair whose keys carry more may take several slots, a weak one
    /// none.
    #[default]
    ByEnergy,
}

/// What the O refit fits each layer's attention contribution to (`orefit.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OTarget {
    /// The native layer at the merged model's own input: each layer undoes its own merge.
    #[default]
    Layer,
    /// The native model's contribution at the same tokens, its stream walked beside the
    /// merged one: each layer also makes up for the drift of the merged layers below it.
    Stream,
    /// The native model's residual stream after the layer's attention: its contribution
    /// and the drift of the merged stream from it so far (native input less merged input).
    Residual,
}

/// How a calibrated merge is fitted, besides its tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FitSettings {
    /// The ridge ρ of the O refit ([`orefit`]: λ = ρ · tr(C) / (H·hd), towards the base O
    /// maps); `None` keeps the base O maps.
    pub o_ridge: Option<f64>,
    /// How K's slots are spent.
    pub k_slots: KSlots,
    /// What the O refit aims at.
    pub o_target: OTarget,
    /// Whether each query head's q map is scaled by a fitted temperature ([`qscale`]).
    pub q_scale: bool,
}

impl Default for FitSettings {
    fn default() -> Self {
        FitSettings {
            o_ridge: Some(DEFAULT_O_RIDGE),
            k_slots: KSlots::default(),
            o_target: OTarget::default(),
            q_scale: false,
        }
    }
}

impl FitSettings {
    /// A short name, for cache keys and reports: `o-ridge=1e0` (then `/o=stream` when the
    /// refit aims at the native stream), or `base`; then `/k=energy` when K's slots follow
    /// the energy.
    pub fn label(&self) -> String {
        let o = match (self.o_ridge, self.o_target) {
            (Some(r), OTarget::Layer) => format!("o-ridge={r:e}"),
            (Some(r), OTarget::Stream) => format!("o-ridge={r:e}/o=stream"),
            (Some(r), OTarget::Residual) => format!("o-ridge={r:e}/o=residual"),
            (None, _) => "base".into(),
        };
        let k = match self.k_slots {
            KSlots::PerPair => o,
            KSlots::ByEnergy => format!("{o}/k=energy"),
        };
        match self.q_scale {
            true => format!("{k}/q=scaled"),
            false => k,
        }
    }

    /// Whether the walk carries the native model's stream beside the merged one.
    pub fn walks_native_stream(&self) -> bool {
        self.o_ridge.is_some() && self.o_target != OTarget::Layer
    }
}

/// Deterministic pseudo-random numbers in [-1, 1), for the unit tests of the fits.
#[cfg(test)]
fn test_rng(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::calibration_sequences;

    /// Every token in one sequence or another, in order, none longer than asked, the lengths
    /// within one of each other; a count that is a multiple of the length is cut as before.
    #[test]
    fn calibration_uses_every_token() {
        assert_eq!(calibration_sequences(1000, 512), [0..500, 500..1000]);
        assert_eq!(calibration_sequences(2048, 512).len(), 4);
        let one = calibration_sequences(300, 512);
        assert_eq!((one.len(), one[0].clone()), (1, 0..300));
        for n in [64, 511, 512, 513, 530, 1000, 8191, 8192] {
            let s = calibration_sequences(n, 512);
            assert_eq!(s.first().map(|r| r.start), Some(0));
            assert_eq!(s.last().map(|r| r.end), Some(n));
            assert!(s.windows(2).all(|w| w[0].end == w[1].start));
            let lens: Vec<usize> = s.iter().map(|r| r.len()).collect();
            let (lo, hi) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
            assert!(*hi <= 512 && hi - lo <= 1, "{n}: {s:?}");
            assert!(*lo >= 256 || s.len() == 1, "{n}: {s:?}");
        }
    }
}
