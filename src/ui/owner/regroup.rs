//! Regrouping on the page: the GQA paper's mean-pooling, or the calibrated merge, whose maps
//! come from this session, from Cache Storage (per model sha256, calibration setting and G),
//! or are fitted here by the engine — calibration walks it through the layers over the
//! built-in text (`crate::engine::calibrate`), with its progress in the status line — and kept for
//! the next visit. The cache's element type is the settings' other knob of KV memory: the
//! engine follows it here too ([`follow_settings`]), its cache rebuilt empty as a regrouping
//! rebuilds it.

use super::session::Session;
use crate::engine::EngineError;
use crate::model::{KvType, ModelError};
use crate::regroup::{FitSettings, Grouping, MapsKey, Method, Regrouping};
use crate::ui::js::{describe, now_ms};
use crate::ui::state::run::Status;
use crate::ui::state::Page;
use leptos::prelude::*;
use std::sync::Arc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, Response};

/// The Cache Storage cache of fitted maps, each under `/maps/` + its [`MapsKey`] file name
/// (the CLI's key: model, G, tokens, fit settings, calibration text, format version).
const MAPS_CACHE: &str = "gqa-lab-maps";

/// Calibration tokens on a software adapter (SwiftShader), where the fit runs on the CPU's
/// cores under emulation: enough for a merge that works, far from the hardware default.
pub const SOFTWARE_TOKENS: usize = 512;

/// Tokens the page fits a calibrated merge on: `?calib_tokens`, else the CLI's default on a
/// hardware GPU (the same maps) and [`SOFTWARE_TOKENS`] on a software one.
pub fn calibration_tokens(page: Page, s: &Session) -> usize {
    let asked = page.settings.with_untracked(|st| st.calib_tokens);
    let default = match s.engine.is_software() {
        true => SOFTWARE_TOKENS,
        false => crate::regroup::DEFAULT_TOKENS,
    };
    asked.unwrap_or(default)
}

/// The regrouping to G with `method` (mean-pooling for G ≥ G0, where every method is the
/// exact split of native groups).
pub(super) async fn regrouping_for(
    page: Page,
    s: &mut Session,
    groups: usize,
    method: Method,
) -> Result<Arc<Regrouping>, EngineError> {
    let cfg = s.engine.config().clone();
    let grouping = Grouping::of(&cfg, groups)?;
    if method == Method::Mean || !grouping.merges() {
        return Ok(Arc::new(Regrouping::mean(&cfg, grouping)));
    }
    let tokens = calibration_tokens(page, s);
    if let Some(r) = s.maps.get(&(groups, tokens)) {
        return Ok(r.clone());
    }
    let settings = FitSettings::default(); // what the walk fits with (`engine::calibrate`)
    let maps_key = MapsKey::new(&s.sha256, groups, tokens, settings);
    let key = format!("/maps/{}", maps_key.file_name());
    // An entry that is not what the key names (damaged, another G, method or fit) is said in
    // the console and fitted again, as the CLI does with its files.
    let cached = match read_cached(&key).await {
        Some(bytes) => crate::regroup::store::from_cache_bytes(&bytes, &cfg, &maps_key)
            .map_err(|e| leptos::logging::warn!("ignoring {key} in Cache Storage: {e}"))
            .ok(),
        None => None,
    };
    let r = match cached {
        Some(r) => Arc::new(r),
        None => {
            let r = calibrate(page, s, grouping, tokens).await?;
            store(&key, crate::regroup::store::to_cache_bytes(&r, &maps_key)).await;
            // As the entry gives it back on the next visit: its values in f16.
            Arc::new(crate::regroup::store::stored(&r))
        }
    };
    s.maps.insert((groups, tokens), r.clone());
    Ok(r)
}

/// Regroups the session's engine to G with `method`; its cache restarts empty. The status
/// line says when a merge is being calibrated.
pub async fn apply(
    page: Page,
    s: &mut Session,
    groups: usize,
    method: Method,
) -> Result<(), EngineError> {
    let r = regrouping_for(page, s, groups, method).await?;
    s.engine.regroup_with(r).await
}

/// Whether the engine already runs G with `method` in every layer (for G ≥ G0 every method is
/// the same).
pub fn is_current(s: &Session, groups: usize, method: Method) -> bool {
    let r = s.engine.regrouping();
    r.is_uniform() && r.groups() == groups && (!r.grouping.merges() || r.method == method)
}

/// The G and method the settings ask of the session's model.
pub fn wanted(page: Page, s: &Session) -> (usize, Method) {
    let cfg = s.engine.config();
    page.settings
        .with_untracked(|st| (st.groups_on(cfg), st.regroup))
}

/// The KV cache type the settings ask of the session's model.
pub fn wanted_kv_type(page: Page, s: &Session) -> KvType {
    let cfg = s.engine.config();
    page.settings.with_untracked(|st| st.kv_type_on(cfg))
}

/// Keeps the engine's K and V as `t` (nothing if they are already): its cache restarts empty.
/// Returns whether it changed.
pub async fn set_kv_type(s: &mut Session, t: KvType) -> Result<bool, EngineError> {
    if s.engine.kv_type() == t {
        return Ok(false);
    }
    s.engine.set_kv_type(t).await.map(|()| true)
}

/// Brings the engine to the G (or KV budget), method and KV cache type of the settings, where
/// it is not there; returns whether its cache was rebuilt (then a running generation prefills
/// its text so far again). The page's state then shows each layer's G.
pub async fn follow_settings(page: Page, s: &mut Session) -> Result<bool, EngineError> {
    let typed = set_kv_type(s, wanted_kv_type(page, s)).await;
    let regrouped = match typed {
        Err(e) => Err(e),
        Ok(typed) => match page
            .settings
            .with_untracked(|st| st.budget_on(s.engine.config()))
        {
            Some(b) => super::budget::follow(page, s, b).await.map(|r| r || typed),
            None => {
                let (groups, method) = wanted(page, s);
                match is_current(s, groups, method) {
                    true => Ok(typed),
                    false => apply(page, s, groups, method).await.map(|()| true),
                }
            }
        },
    };
    page.model
        .layer_groups
        .set(s.engine.regrouping().layer_groups());
    regrouped
}

/// Fits the calibrated merge to `grouping` where the engine runs, over the first `tokens` of
/// the built-in text.
async fn calibrate(
    page: Page,
    s: &mut Session,
    grouping: Grouping,
    tokens: usize,
) -> Result<Arc<Regrouping>, EngineError> {
    let ids = s
        .tok
        .encode(crate::regroup::texts::TEXT, false)
        .map_err(|e| {
            EngineError::Model(ModelError::BadConfig(format!(
                "tokenizing the calibration text: {e}"
            )))
        })?;
    let ids = ids[..tokens.min(ids.len())].to_vec();
    let groups = grouping.groups();
    let mut on_layer = |layer: usize, layers: usize| {
        page.run.status.set(Status::Calibrating {
            groups,
            layer: layer + 1,
            layers,
        })
    };
    page.run.status.set(Status::Calibrating {
        groups,
        layer: 0,
        layers: s.engine.config().n_layers,
    });
    let t0 = now_ms();
    let r = s.engine.calibrate(groups, ids, &mut on_layer).await;
    let seconds = (now_ms() - t0) / 1e3;
    page.measured.calibration_s.update(|m| {
        m.insert(groups, seconds);
    });
    r
}

async fn open_cache() -> Option<Cache> {
    crate::ui::loader::open_named_cache(MAPS_CACHE).await
}

pub(super) async fn read_cached(key: &str) -> Option<Vec<u8>> {
    let cache = open_cache().await?;
    let hit: Response = JsFuture::from(cache.match_with_str(key))
        .await
        .ok()?
        .dyn_into()
        .ok()?;
    let buf = JsFuture::from(hit.array_buffer().ok()?).await.ok()?;
    Some(js_sys::Uint8Array::new(&buf).to_vec())
}

/// Keeps fitted maps for the next visit; a full quota only costs that visit a new fit.
pub(super) async fn store(key: &str, mut bytes: Vec<u8>) {
    let Some(cache) = open_cache().await else {
        return;
    };
    let Ok(resp) = Response::new_with_opt_u8_array(Some(&mut bytes)) else {
        return;
    };
    if let Err(e) = JsFuture::from(cache.put_with_str(key, &resp)).await {
        let why = format!("could not keep the calibrated maps: {}", describe(&e));
        web_sys::console::warn_1(&why.into());
    }
}
