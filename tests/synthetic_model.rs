//! A small random llama model written as GGUF with every supported tensor type: loading,
//! regrouping identities (G = H equals native; G = 1 equals a model whose K/V weights were
//! mean-pooled by hand), independent of the real checkpoint.

mod common;

use common::gguf_writer::{file, TensorSpec};
use common::Rng;
use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::Engine;
use gqa_lab::gguf::{Gguf, Value};
use half::{bf16, f16};

const DIM: u64 = 64;
const HEADS: u32 = 4;
const KV_HEADS: u32 = 2;
const FFN: u64 = 96;
const VOCAB: u64 = 64;
const LAYERS: usize = 2;

fn tensor(name: &str, dims: &[u64], type_id: u32, rng: &mut Rng) -> TensorSpec {
    let n = dims.iter().product::<u64>() as usize;
    let mut data = Vec::new();
    match type_id {
        0 => (0..n).for_each(|_| data.extend((rng.f() * 0.2).to_le_bytes())),
        1 => (0..n).for_each(|_| data.extend(f16::from_f32(rng.f() * 0.2).to_le_bytes())),
        30 => (0..n).for_each(|_| data.extend(bf16::from_f32(rng.f() * 0.2).to_le_bytes())),
        2 => (0..n / 32).for_each(|_| {
            data.extend(f16::from_f32(0.03).to_le_bytes());
            (0..16).for_each(|_| data.push(rng.next() as u8));
        }),
        3 => (0..n / 32).for_each(|_| {
            data.extend(f16::from_f32(0.02).to_le_bytes());
            data.extend(f16::from_f32(-0.15).to_le_bytes());
            (0..16).for_each(|_| data.push(rng.next() as u8));
        }),
        8 => (0..n / 32).for_each(|_| {
            data.extend(f16::from_f32(0.002).to_le_bytes());
            (0..32).for_each(|_| data.push(rng.next() as u8));
        }),
        _ => unreachable!(),
    }
    TensorSpec {
        name: name.into(),
        dims: dims.to_vec(),
        type_id,
        data,
    }
}

fn metadata(kv_heads: u32) -> Vec<(&'static str, Value<'static>)> {
    vec![
        ("general.architecture", Value::String("llama")),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.context_length", Value::U32(64)),
        ("llama.embedding_length", Value::U32(DIM as u32)),
        ("llama.feed_forward_length", Value::U32(FFN as u32)),
        ("llama.attention.head_count", Value::U32(HEADS)),
        ("llama.attention.head_count_kv", Value::U32(kv_heads)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.vocab_size", Value::U32(VOCAB as u32)),
    ]
}

/// A random model with one tensor type per role, plus an untied output head.
fn model() -> Vec<TensorSpec> {
    let mut rng = Rng(2024);
    let hd = DIM / HEADS as u64;
    let kv = hd * KV_HEADS as u64;
    let mut t = vec![
        tensor("token_embd.weight", &[DIM, VOCAB], 8, &mut rng),
        tensor("output_norm.weight", &[DIM], 0, &mut rng),
        tensor("output.weight", &[DIM, VOCAB], 1, &mut rng),
    ];
    for l in 0..LAYERS {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        t.push(tensor(&n("attn_norm"), &[DIM], 0, &mut rng));
        t.push(tensor(&n("attn_q"), &[DIM, DIM], 2, &mut rng));
        t.push(tensor(&n("attn_k"), &[DIM, kv], 0, &mut rng));
        t.push(tensor(&n("attn_v"), &[DIM, kv], 0, &mut rng));
        t.push(tensor(&n("attn_output"), &[DIM, DIM], 8, &mut rng));
        t.push(tensor(&n("ffn_norm"), &[DIM], 0, &mut rng));
        t.push(tensor(&n("ffn_gate"), &[DIM, FFN], 1, &mut rng));
        t.push(tensor(&n("ffn_up"), &[DIM, FFN], 30, &mut rng));
        t.push(tensor(&n("ffn_down"), &[FFN, DIM], 3, &mut rng));
    }
    t
}

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
    e.forward(ids, true).unwrap()
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
    let batch = e.forward(&IDS, false).unwrap();
    e.reset();
    let mut last = Vec::new();
    for id in IDS {
        last = e.forward(&[id], false).unwrap();
    }
    assert!(max_diff(&batch, &last) <= 1e-5);
}
