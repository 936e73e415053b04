//! A small random llama model written as GGUF with every supported tensor type: loading,
//! regrouping identities (G = H equals native; G = 1 equals a model whose K/V weights were
//! mean-pooled by hand), independent of the real checkpoint.

mod common;

use common::gguf_writer::{file, TensorSpec};
use common::synthetic::{
    metadata, model, model_with_nan_embedding, model_with_nan_output_norm, poke, DIM, HEADS,
    KV_HEADS, VOCAB,
};
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::{perplexity, Engine, EngineError, GenerateParams, Generator};
use gqa_lab::gguf::Gguf;
use gqa_lab::sampling::SamplingParams;
use pollster::FutureExt as _;

/// The same model with K and V mean-pooled to one head by hand (F32 rows).
fn mqa_by_hand(tensors: &[TensorSpec]) -> Vec<TensorSpec> {
    let head = (DIM / HEADS as u64 * DIM) as usize; // floats per head's rows
    tensors
        .iter()
        .map(|t| {
            if !(t.name.ends_with("attn_k.weight") || t.name.ends_with("attn_v.weight")) {
                return TensorSpec {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    type_id: t.type_id,
                    data: t.data.clone(),
                };
            }
            let w: Vec<f32> = t
                .data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let mean: Vec<f32> = (0..head).map(|i| (w[i] + w[head + i]) / 2.0).collect();
            TensorSpec {
                name: t.name.clone(),
                dims: vec![DIM, DIM / HEADS as u64],
                type_id: 0,
                data: mean.iter().flat_map(|v| v.to_le_bytes()).collect(),
            }
        })
        .collect()
}

fn logits(bytes: &[u8], groups: Option<usize>, ids: &[u32]) -> Vec<f32> {
    let g = Gguf::parse(bytes).unwrap();
    let mut e = CpuEngine::load(&g, 32).unwrap();
    if let Some(groups) = groups {
        e.regroup(groups).unwrap();
    }
    e.forward(ids, true).block_on().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

const IDS: [u32; 7] = [3, 17, 42, 5, 63, 0, 9];

#[test]
fn mha_regrouping_gives_the_native_logits() {
    let bytes = file(&metadata(KV_HEADS), &model());
    let native = logits(&bytes, None, &IDS);
    assert_eq!(native.len(), IDS.len() * VOCAB as usize);
    assert!(native.iter().all(|v| v.is_finite()));
    let mha = logits(&bytes, Some(HEADS as usize), &IDS);
    assert!(
        max_diff(&native, &mha) <= 1e-6,
        "{}",
        max_diff(&native, &mha)
    );
    let mqa = logits(&bytes, Some(1), &IDS);
    assert!(max_diff(&native, &mqa) > 1e-3, "MQA must change this model");
}

#[test]
fn mqa_regrouping_equals_weights_pooled_by_hand() {
    let tensors = model();
    let regrouped = logits(&file(&metadata(KV_HEADS), &tensors), Some(1), &IDS);
    let by_hand = logits(&file(&metadata(1), &mqa_by_hand(&tensors)), None, &IDS);
    let d = max_diff(&regrouped, &by_hand);
    assert!(d <= 1e-5, "max |Δlogit| {d}");
}

#[test]
fn prefill_equals_token_by_token_decode() {
    let bytes = file(&metadata(KV_HEADS), &model());
    let g = Gguf::parse(&bytes).unwrap();
    let mut e = CpuEngine::load(&g, 32).unwrap();
    let batch = e.forward(&IDS, false).block_on().unwrap();
    e.reset();
    let mut last = Vec::new();
    for id in IDS {
        last = e.forward(&[id], false).block_on().unwrap();
    }
    assert!(max_diff(&batch, &last) <= 1e-5);
}

/// Both CPU backends of a synthetic model's bytes.
fn cpu_engines(bytes: &[u8]) -> Vec<CpuEngine> {
    let g = Gguf::parse(bytes).unwrap();
    vec![
        CpuEngine::load(&g, 32).unwrap(),
        CpuEngine::load_quantized(&g, 32).unwrap(),
    ]
}

/// NaN weights give an error that says where the first non-finite value appeared, from a
/// forward, from generation and from perplexity — never a token or a number. Token 63's
/// embedding is NaN: position 4 of `IDS` (positions 0–3 stay finite: attention is causal).
#[test]
fn nan_weights_are_reported_where_they_surface() {
    let at = EngineError::NonFinite("at layer 0, position 4".into());
    assert_eq!(IDS[4], 63);
    for mut e in cpu_engines(&file(&metadata(KV_HEADS), &model_with_nan_embedding(63))) {
        assert_eq!(
            e.forward(&IDS[..4], false).block_on().map(|l| l.len()),
            Ok(VOCAB as usize)
        );
        e.reset();
        assert_eq!(
            e.forward(&IDS, false).block_on(),
            Err(at.clone()),
            "{}",
            e.backend().name()
        );
        assert_eq!(
            perplexity(&mut e, &IDS).block_on(),
            Err(at.clone()),
            "{}",
            e.backend().name()
        );
        let params = GenerateParams {
            max_tokens: 4,
            sampling: SamplingParams::greedy(),
            stop_token: None,
        };
        let mut gen = Generator::new(&mut e, IDS.to_vec(), params).unwrap();
        assert_eq!(
            gen.step(&mut e).block_on(),
            Err(at.clone()),
            "{}",
            e.backend().name()
        );
    }
}

/// A NaN after the last layer (the final norm) shows in the logits: perplexity reports the
/// first position it scores, a forward the position whose logits it returns.
#[test]
fn nan_in_the_logits_is_reported() {
    for mut e in cpu_engines(&file(&metadata(KV_HEADS), &model_with_nan_output_norm())) {
        let last = EngineError::NonFinite(format!("in the logits at position {}", IDS.len() - 1));
        assert_eq!(
            e.forward(&IDS, false).block_on(),
            Err(last),
            "{}",
            e.backend().name()
        );
        let first = EngineError::NonFinite("in the logits at position 0".into());
        assert_eq!(
            perplexity(&mut e, &IDS).block_on(),
            Err(first),
            "{}",
            e.backend().name()
        );
    }
}

/// A NaN in a quantized weight's block scale (`blk.0.attn_q`, Q4_0) is reported by `cpu-q8` as
/// by the f32 oracle: the int8 activations once turned the NaN it made into zeros, and the
/// model generated text.
#[test]
fn nan_in_a_quantized_weight_is_reported_by_every_cpu_engine() {
    let mut t = model();
    poke(
        &mut t,
        "blk.0.attn_q.weight",
        0,
        &half::f16::NAN.to_le_bytes(),
    );
    for mut e in cpu_engines(&file(&metadata(KV_HEADS), &t)) {
        let r = e.forward(&IDS, false).block_on();
        let name = e.backend().name();
        assert!(matches!(r, Err(EngineError::NonFinite(_))), "{name}: {r:?}");
    }
}

/// A calibration on NaN weights says that the layer's statistics are not
/// finite, and a ridge out of range says so (both were "invalid hyper-parameters").
#[test]
fn calibration_says_what_is_wrong_with_its_input() {
    use gqa_lab::engine::calibrate::calibrate_with;
    use gqa_lab::model::ModelConfig;
    use gqa_lab::regroup::{FitSettings, Grouping};
    let ids: Vec<u32> = (0..64).map(|i| (i * 7 + 3) % VOCAB as u32).collect();
    let fit = |tensors: &[TensorSpec], settings: FitSettings| {
        let bytes = file(&metadata(KV_HEADS), tensors);
        let g = Gguf::parse(&bytes).unwrap();
        let grouping = Grouping::of(&ModelConfig::from_gguf(&g).unwrap(), 1).unwrap();
        let mut e = CpuEngine::load(&g, 64).unwrap();
        let mut on_layer = |_| {};
        let run = calibrate_with(&mut e, &g, grouping, &ids, settings, &mut on_layer);
        run.block_on().map(|_| ()).map_err(|e| e.to_string())
    };
    fit(&model(), FitSettings::default()).expect("the clean model fits");
    let e = fit(&model_with_nan_embedding(3), FitSettings::default()).unwrap_err();
    assert!(
        e.contains("layer 0") && e.contains("non-finite statistics"),
        "{e}"
    );
    for ridge in [1e308, 0.0, f64::NAN, -1.0] {
        let e = fit(
            &model(),
            FitSettings {
                o_ridge: Some(ridge),
                ..FitSettings::default()
            },
        )
        .unwrap_err();
        assert!(
            e.contains("the O refit's ridge must be between"),
            "{ridge}: {e}"
        );
    }
}

/// A model whose context (64 here) is shorter than the calibration's
/// sequences (`regroup::SEQUENCE`, 512) is fitted on sequences of its context, by a walk of
/// that capacity, on the CPU and the GPU alike (it asked for 512 positions the cache could not
/// hold).
#[test]
fn calibration_fits_a_model_of_a_short_context() {
    use gqa_lab::engine::calibrate::calibrate_with;
    use gqa_lab::gpu::GpuEngine;
    use gqa_lab::model::ModelConfig;
    use gqa_lab::regroup::{sequence_len, FitSettings, Grouping, Method};
    let ids: Vec<u32> = (0..192).map(|i| (i * 7 + 3) % VOCAB as u32).collect();
    let bytes = file(&metadata(KV_HEADS), &model());
    let g = Gguf::parse(&bytes).unwrap();
    let cfg = ModelConfig::from_gguf(&g).unwrap();
    assert_eq!(sequence_len(&cfg), 64);
    let grouping = Grouping::of(&cfg, 1).unwrap();
    let mut on_layer = |_| {};
    let mut cpu = CpuEngine::load(&g, sequence_len(&cfg)).unwrap();
    let fit = calibrate_with(
        &mut cpu,
        &g,
        grouping,
        &ids,
        FitSettings::default(),
        &mut on_layer,
    );
    let r = fit.block_on().expect("fits on three sequences of 64");
    assert_eq!((r.method, r.groups()), (Method::Calibrated, 1));
    let mut gpu = GpuEngine::load(&g, sequence_len(&cfg)).block_on().unwrap();
    let fit = calibrate_with(
        &mut gpu,
        &g,
        grouping,
        &ids,
        FitSettings::default(),
        &mut on_layer,
    );
    fit.block_on().expect("the GPU walk fits it too");
}
