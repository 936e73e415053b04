//! Per-layer groupings on the CPU engines (the f32 oracle and `cpu-q8`), on the real model:
//!
//! - every layer at a G ≥ G0 (splits only, different per layer) gives the native logits;
//! - a mixed grouping of mean-pooled layers is the model built layer by layer, each layer run
//!   alone at its own uniform grouping (`LayerWalk`), to the last bit;
//! - the cache holds each layer's heads: its bytes are the sum over layers.

mod common;

use common::{fixture, ids};
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::{Engine, LayerWalk};
use gqa_lab::gguf::Gguf;
use gqa_lab::model::{kv_cache_bytes, kv_cache_bytes_layers, ModelConfig};
use gqa_lab::regroup::{Grouping, Regrouping};
use pollster::FutureExt as _;
use std::sync::Arc;

fn engines() -> [CpuEngine; 2] {
    let g = Gguf::parse(common::model_bytes()).unwrap();
    [
        CpuEngine::load(&g, 64).unwrap(),
        CpuEngine::load_quantized(&g, 64).unwrap(),
    ]
}

fn passage(n: usize) -> Vec<u32> {
    ids(&fixture("perplexity.json")["ids"])[..n].to_vec()
}

/// Layer l at `counts[l % counts.len()]` KV heads, mean-pooled.
fn mixed(cfg: &ModelConfig, counts: &[usize]) -> Regrouping {
    let each: Vec<usize> = (0..cfg.n_layers)
        .map(|l| counts[l % counts.len()])
        .collect();
    Regrouping::mean_counts(cfg, &each).unwrap()
}

#[test]
fn splits_per_layer_give_the_native_logits() {
    let seq = passage(24);
    for mut e in engines() {
        let native = e.forward(&seq, true).block_on().unwrap();
        let cfg = e.config().clone();
        // The native grouping, spelled per layer; then splits that differ per layer.
        let mut spelled = Regrouping::native(&cfg);
        spelled.per_layer = Some(vec![Grouping::native(&cfg); cfg.n_layers]);
        for r in [spelled, mixed(&cfg, &[3, 4, 9, 5])] {
            e.regroup_with(Arc::new(r.clone())).unwrap();
            let got = e.forward(&seq, true).block_on().unwrap();
            assert_eq!(got, native, "{}", r.label());
        }
    }
}

#[test]
fn a_mixed_grouping_is_the_model_built_layer_by_layer() {
    let seq = passage(24);
    for mut e in engines() {
        let cfg = e.config().clone();
        let r = mixed(&cfg, &[1, 2, 3, 1, 9, 2]);
        assert!(!r.is_uniform());
        e.regroup_with(Arc::new(r.clone())).unwrap();
        let states = e.hidden_states(&seq).unwrap();
        // The cache holds G_l heads in layer l.
        e.reset();
        e.forward(&seq, false).block_on().unwrap();
        let t = e.kv_type().element();
        let groups = r.layer_groups();
        let sum: u64 = (0..cfg.n_layers)
            .map(|l| kv_cache_bytes(&cfg, groups[l], seq.len(), t) / cfg.n_layers as u64)
            .sum();
        assert_eq!(e.kv_cache_bytes(), sum);
        assert_eq!(
            kv_cache_bytes_layers(&cfg, &groups, seq.len(), t),
            sum,
            "the budget's bytes are the sum over layers"
        );
        // Each layer alone at its own uniform grouping.
        let mut x = e.embed_rows(&seq).block_on().unwrap();
        for (l, state) in states.iter().enumerate() {
            let uniform = Regrouping::mean(&cfg, r.layer_grouping(l));
            e.start(Arc::new(uniform)).unwrap();
            e.run_layer(l, &mut x).block_on().unwrap();
            assert_eq!(&x, state, "layer {l} at G={}", groups[l]);
        }
    }
}

/// The calibrated fit of a per-layer grouping fits each merging layer at its own G on the
/// model merged below it: with layer 0 alone merged to G = 1, its maps are the uniform G = 1
/// fit's layer 0 (both fitted on the native embeddings), every other layer the exact split.
#[test]
fn a_per_layer_fit_fits_each_layer_at_its_own_g() {
    use gqa_lab::engine::calibrate::calibrate_layers;
    use gqa_lab::regroup::{texts, FitSettings, LayerMaps, Method, SEQUENCE};
    let g = Gguf::parse(common::model_bytes()).unwrap();
    let uniform = common::calibrated(1);
    let mut walk = CpuEngine::load(&g, SEQUENCE).unwrap();
    let cfg = walk.config().clone();
    let mut groupings = vec![Grouping::native(&cfg); cfg.n_layers];
    groupings[0] = Grouping::of(&cfg, 1).unwrap();
    let tok = gqa_lab::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let calibration = tok.encode(texts::TEXT, false).unwrap();
    let ids = &calibration[..common::CALIBRATION_TOKENS];
    let settings = FitSettings::default();
    let mut quiet = |_| {};
    let fit = calibrate_layers(&mut walk, &g, &groupings, ids, settings, &mut quiet);
    // As a cache entry gives it back (f16 values), as the uniform fit is kept.
    let r = gqa_lab::regroup::store::stored(&fit.block_on().unwrap());
    assert_eq!(r.method, Method::Calibrated);
    assert_eq!(r.layer_groups()[..3], [1, 3, 3]);
    assert_eq!(r.layers[0], uniform.layers[0]);
    let split = LayerMaps::pooled(Grouping::native(&cfg), cfg.head_dim);
    assert!(r.layers[1..].iter().all(|m| *m == split));
}
