//! A grouping per layer on the GPU (lavapipe in CI) against the CPU oracle: each layer's
//! cache holds its own heads, its maps are read from where its layer's start (`group0`), its
//! attention kernel is chosen for its own groups. Perplexity of the fixture text's first 48
//! tokens within 0.5% (prefill: attention.wgsl), and one decoded step's logits within 1e-2
//! (attention_decode.wgsl), for a mean-pooled mix and for one of calibrated layers (dense V,
//! q and output maps) beside mean-pooled and split ones; and the cache's bytes are the sum
//! over layers on both.

mod common;

use common::{calibrated, fixture, ids};
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::{perplexity, Engine};
use gqa_lab::gguf::Gguf;
use gqa_lab::gpu::GpuEngine;
use gqa_lab::model::ModelConfig;
use gqa_lab::regroup::{Grouping, Regrouping};
use pollster::FutureExt as _;
use std::sync::Arc;

/// Layer l from `pattern[l % len]`.
fn mixed(cfg: &ModelConfig, pattern: &[&Regrouping]) -> Regrouping {
    let sources: Vec<&Regrouping> = (0..cfg.n_layers)
        .map(|l| pattern[l % pattern.len()])
        .collect();
    Regrouping::pick_layers(cfg, &sources).unwrap()
}

#[test]
fn a_per_layer_grouping_on_the_gpu_is_the_cpus() {
    let g = Gguf::parse(common::model_bytes()).unwrap();
    let mut gpu = GpuEngine::load(&g, 64)
        .block_on()
        .expect("GPU (CI: lavapipe)");
    let mut cpu = CpuEngine::load(&g, 64).unwrap();
    let cfg = cpu.config().clone();
    let text = &ids(&fixture("perplexity.json")["ids"])[..48];
    let mean = |groups| Regrouping::mean(&cfg, Grouping::of(&cfg, groups).unwrap());
    let (m1, m2, m3, m5, m9) = (mean(1), mean(2), mean(3), mean(5), mean(9));
    let (c1, c2) = (calibrated(1), calibrated(2));
    let cases = [
        mixed(&cfg, &[&m1, &m2, &m3, &m1, &m9, &m2]),
        mixed(&cfg, &[&c1, &m3, &c2, &m5, &m1, &c2, &c1]),
    ];
    for r in cases {
        assert!(!r.is_uniform());
        let label = r.label();
        let r = Arc::new(r);
        gpu.regroup_with(r.clone()).unwrap();
        cpu.regroup_with(r).unwrap();
        let (pg, pc) = (
            perplexity(&mut gpu, text).block_on().unwrap(),
            perplexity(&mut cpu, text).block_on().unwrap(),
        );
        let (pg, pc) = (pg.perplexity, pc.perplexity);
        eprintln!("{label}: GPU perplexity {pg:.4}, CPU {pc:.4}");
        assert!((pg - pc).abs() / pc < 0.005, "{label}: {pg} vs {pc}");
        // Bytes: the sum over layers, the same on both.
        assert_eq!(gpu.kv_cache_bytes(), cpu.kv_cache_bytes(), "{label}");
        // One decoded step after the prefill.
        let next = [text[47]];
        let (lg, lc) = (
            gpu.forward(&next, false).block_on().unwrap(),
            cpu.forward(&next, false).block_on().unwrap(),
        );
        let worst = lg
            .iter()
            .zip(&lc)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-2, "{label}: decode logits differ by {worst}");
    }
}

/// The calibration walk on the GPU with a grouping per layer (each layer's maps written where
/// its layer's start) fits what the CPU oracle fits: the two score the passage's first 64
/// tokens within 1% of each other (on the CPU; 128 calibration tokens, a smoke test's worth).
#[test]
fn a_per_layer_calibration_on_the_gpu_fits_what_the_cpu_fits() {
    use gqa_lab::engine::calibrate::calibrate_layers;
    use gqa_lab::regroup::{texts::TEXT, FitSettings, SEQUENCE};
    let g = Gguf::parse(common::model_bytes()).unwrap();
    let mut gpu = GpuEngine::load(&g, SEQUENCE)
        .block_on()
        .expect("GPU (CI: lavapipe)");
    let mut cpu = CpuEngine::load(&g, SEQUENCE).unwrap();
    let cfg = cpu.config().clone();
    let tok = gqa_lab::tokenizer::Tokenizer::from_gguf(&g).unwrap();
    let calib = &tok.encode(TEXT, false).unwrap()[..128];
    let passage = &ids(&fixture("perplexity.json")["ids"])[..64];
    let groupings: Vec<Grouping> = (0..cfg.n_layers)
        .map(|l| Grouping::of(&cfg, [1, 3, 2, 5][l % 4]).unwrap())
        .collect();
    let settings = FitSettings::default();
    let mut quiet = |_| {};
    let on_gpu = calibrate_layers(&mut gpu, &g, &groupings, calib, settings, &mut quiet);
    let on_gpu = on_gpu.block_on().unwrap();
    let on_cpu = calibrate_layers(&mut cpu, &g, &groupings, calib, settings, &mut quiet);
    let on_cpu = on_cpu.block_on().unwrap();
    assert_eq!(on_gpu.layer_groups(), on_cpu.layer_groups());
    let mut score = |r: Regrouping| {
        cpu.regroup_with(Arc::new(r)).unwrap();
        perplexity(&mut cpu, passage).block_on().unwrap().perplexity
    };
    let (pg, pc) = (score(on_gpu), score(on_cpu));
    eprintln!("per-layer fit: GPU-fitted {pg:.4}, CPU-fitted {pc:.4}");
    assert!(
        (pg - pc).abs() / pc < 0.01,
        "GPU-fitted {pg} vs CPU-fitted {pc}"
    );
}
