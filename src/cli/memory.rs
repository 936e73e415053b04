//! The memory a run holds, as the JSON reports it: the KV cache, the regrouping's maps
//! (`regroup::cost`: what the engines hold for them, f32) and their sum, and for a merge
//! (G below the native count) the tokens from which the merged model holds less than the
//! native one with the same cache type (`null`: not within the model's context).

use gqa_lab::model::{kv_cache_bytes_layers, KvType, ModelConfig};
use gqa_lab::regroup::{break_even, maps_bytes, planned_maps_bytes, Footprint, Method};
use gqa_lab::regroup::{Grouping, Regrouping, MAP_VALUE_BYTES};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// `kv_cache_bytes`, `maps_bytes`, `maps_bytes_per_value`, `kv_cache_and_maps_bytes` and,
/// for a merge, `break_even_tokens`, of a run at `r` whose cache holds `cache_bytes` as `kv`.
pub fn held(cfg: &ModelConfig, r: &Regrouping, cache_bytes: u64, kv: KvType) -> Map<String, Value> {
    let maps = maps_bytes(r);
    let mut m = Map::new();
    m.insert("kv_cache_bytes".into(), json!(cache_bytes));
    m.insert("maps_bytes".into(), json!(maps));
    m.insert("maps_bytes_per_value".into(), json!(MAP_VALUE_BYTES));
    m.insert("kv_cache_and_maps_bytes".into(), json!(cache_bytes + maps));
    if r.merges() {
        let n = break_even(cfg, Footprint::of(r), kv.element(), cfg.context_length);
        m.insert("break_even_tokens".into(), json!(n));
    }
    m
}

/// [`held`] for `tokens` positions of a cache at `r`.
pub fn held_at(cfg: &ModelConfig, r: &Regrouping, tokens: usize, kv: KvType) -> Map<String, Value> {
    let cache = kv_cache_bytes_layers(cfg, &r.layer_groups(), tokens, kv.element());
    held(cfg, r, cache, kv)
}

/// For `info`: the maps' bytes of each method at each valid G (`maps_bytes`), and for each
/// cache type, method and merged G the break-even tokens (`break_even_tokens`), from the
/// maps' shapes (a calibrated merge's as calibration fills them).
pub fn planned(cfg: &ModelConfig) -> Map<String, Value> {
    let methods = [Method::Mean, Method::Calibrated];
    let by_g = |f: &dyn Fn(usize) -> Option<Value>| -> BTreeMap<String, Value> {
        cfg.valid_groups()
            .into_iter()
            .filter_map(|g| Some((g.to_string(), f(g)?)))
            .collect()
    };
    let maps: BTreeMap<&str, _> = methods
        .iter()
        .map(|&m| {
            (
                m.name(),
                by_g(&|g| planned_maps_bytes(cfg, g, m).map(Value::from)),
            )
        })
        .collect();
    let merges = |g| Grouping::of(cfg, g).is_ok_and(|gr| gr.merges());
    let even = |t: KvType, m: Method| {
        by_g(&|g| {
            let bytes = planned_maps_bytes(cfg, g, m).filter(|_| merges(g))?;
            let merged = Footprint::uniform(cfg, g, bytes);
            Some(json!(break_even(
                cfg,
                merged,
                t.element(),
                cfg.context_length
            )))
        })
    };
    let breaks: BTreeMap<&str, BTreeMap<&str, _>> = KvType::ALL
        .iter()
        .map(|&t| {
            (
                t.name(),
                methods.iter().map(|&m| (m.name(), even(t, m))).collect(),
            )
        })
        .collect();
    let mut out = Map::new();
    out.insert("maps_bytes".into(), json!(maps));
    out.insert("maps_bytes_per_value".into(), json!(MAP_VALUE_BYTES));
    out.insert("break_even_tokens".into(), json!(breaks));
    out
}
