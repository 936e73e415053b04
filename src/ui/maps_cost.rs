//! The regrouping maps' bytes on the page, beside the KV cache's: what the engine holds for the
//! maps of each G under the method in use (`regroup::cost`: a calibrated merge's K, V, q and O
//! maps, mean-pooling's K scalars and pool weights, in f32, the same on both engines), and from
//! how many tokens a merge holds less than the model as trained. The meter ([`MapsLine`]), the
//! table and the plot read them here.

use super::format;
use super::state::model::LoadedModel;
use super::state::{CacheType, Groups};
use super::url_state::Settings;
use crate::model::{ElementType, ModelConfig};
use crate::regroup::{break_even, planned_maps_bytes, Footprint, Grouping, Method};
use leptos::prelude::*;

/// Bytes of the maps the engine holds at G with `method` (every G ≥ the native one is the
/// exact split, whatever the method).
pub fn maps_bytes(cfg: &ModelConfig, g: usize, method: Method) -> u64 {
    planned_maps_bytes(cfg, g, method).unwrap_or(0)
}

/// Whether G merges the model's KV heads.
fn merges(cfg: &ModelConfig, g: usize) -> bool {
    Grouping::of(cfg, g).is_ok_and(|gr| gr.merges())
}

/// What a break-even says: from which token on a merge holds less than the native model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaysOff {
    /// Not a merge (the native model or a split).
    NoMerge,
    /// Less from this many tokens on (0: from the start).
    From(usize),
    /// Not within `limit` tokens.
    Never { limit: usize },
}

impl PaysOff {
    pub fn of(cfg: &ModelConfig, g: usize, method: Method, t: ElementType, limit: usize) -> Self {
        if !merges(cfg, g) {
            return PaysOff::NoMerge;
        }
        let merged = Footprint::uniform(cfg, g, maps_bytes(cfg, g, method));
        match break_even(cfg, merged, t, limit) {
            Some(n) => PaysOff::From(n),
            None => PaysOff::Never { limit },
        }
    }

    /// The tokens, for a data attribute: empty where it is not a merge, `never` past `limit`.
    pub fn attr(self) -> String {
        match self {
            PaysOff::NoMerge => String::new(),
            PaysOff::From(n) => n.to_string(),
            PaysOff::Never { .. } => "never".into(),
        }
    }
}

/// The method whose maps G holds: the settings' below the native G.
fn method_in_use(settings: RwSignal<Settings>) -> Method {
    settings.with(|s| s.regroup)
}

/// The meter's lines on the maps: their bytes beside the cache's `cache_bytes`, the sum, and
/// from how many tokens the merge in use holds less than the native model (within the page's
/// KV capacity, and at the model's full context).
#[component]
pub fn MapsLine(#[prop(into)] cache_bytes: Signal<Option<u64>>) -> impl IntoView {
    let model = expect_context::<LoadedModel>();
    let groups = expect_context::<Groups>();
    let cache = expect_context::<CacheType>();
    let settings = expect_context::<RwSignal<Settings>>();
    let maps = move || {
        let (g, m) = (groups.get(), method_in_use(settings));
        model.cfg_or(0, |c| maps_bytes(c, g, m))
    };
    let total = move || cache_bytes.get().unwrap_or(0) + maps();
    let what = move || {
        let (g, m) = (groups.get(), method_in_use(settings));
        match model.cfg_or(false, |c| merges(c, g)) && m == Method::Calibrated {
            true => "the calibrated merge's K, V, q and output maps",
            false => "the K scalars and pool weights that make each KV head",
        }
    };
    let pays = move || {
        let (g, m, t) = (groups.get(), method_in_use(settings), cache.get());
        let cap = model
            .info
            .with(|i| i.as_ref().map_or(0, |i| i.facts.capacity));
        let here = model.cfg_or(PaysOff::NoMerge, |c| PaysOff::of(c, g, m, t.element(), cap));
        let full = model.cfg_or(PaysOff::NoMerge, |c| {
            PaysOff::of(c, g, m, t.element(), c.context_length)
        });
        (here, full, t.name())
    };
    let sentence = move || {
        let (here, full, t) = pays();
        let ctx = model.cfg_or(0, |c| c.context_length);
        match (here, full) {
            (PaysOff::NoMerge, _) => String::new(),
            (PaysOff::From(0), _) => format!(
                "Merged this way the model holds less than the native one from the first token on: its maps are smaller than the native model's own, and its {t} cache too."
            ),
            (PaysOff::From(n), _) => format!(
                "The merged model holds less than the native one from {} on (maps and {t} cache together); below that its maps outweigh the cache they save.",
                format::count(n, "token")
            ),
            (PaysOff::Never { limit }, PaysOff::From(n)) => format!(
                "Within this page's {} the merged model never holds less than the native one: its maps outweigh the {t} cache they save. It would from {} on (the model's context is {}).",
                format::count(limit, "position"),
                format::count(n, "token"),
                format::int(ctx as u64)
            ),
            (PaysOff::Never { .. }, _) => format!(
                "At no length up to the model's context ({} tokens) does the merged model hold less than the native one: its maps outweigh the {t} cache they save.",
                format::int(ctx as u64)
            ),
        }
    };
    view! {
        <p class="formula" data-testid="kv-maps" data-bytes=move || maps().to_string()>
            "+ "<span data-testid="maps-bytes">{maps}</span>" bytes of regrouping maps ("
            {move || format::bytes(maps())}", "{what}", f32), held beside the cache: "
            <b data-testid="kv-total-bytes">{total}</b>" bytes in all ("{move || format::bytes(total())}")."
        </p>
        <p class="muted small" data-testid="break-even" data-tokens=move || pays().0.attr()
            data-full-context=move || pays().1.attr()>
            {sentence}
        </p>
    }
}
