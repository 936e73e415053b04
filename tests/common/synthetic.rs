//! A small random llama model written as GGUF, independent of the real checkpoint: every
//! supported tensor type, an untied output head, and (for the CLI) a tiny byte-level
//! vocabulary.

use super::gguf_writer::{strings, TensorSpec};
use super::Rng;
use gqa_lab::gguf::{Array, Value, ValueType};
use half::{bf16, f16};

pub const DIM: u64 = 64;
pub const HEADS: u32 = 4;
pub const KV_HEADS: u32 = 2;
pub const FFN: u64 = 96;
pub const VOCAB: u64 = 64;
pub const LAYERS: usize = 2;

/// A tensor of ggml type `type_id` with small random weights.
pub fn tensor(name: &str, dims: &[u64], type_id: u32, rng: &mut Rng) -> TensorSpec {
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

/// The llama hyper-parameters, with `kv_heads` KV heads.
pub fn metadata(kv_heads: u32) -> Vec<(&'static str, Value<'static>)> {
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
pub fn model() -> Vec<TensorSpec> {
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

/// The vocabulary's tokens: 64 printable ASCII characters (byte-level BPE keeps them as they are).
const TOKENS: &str = "!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`";

/// [`metadata`] with a tokenizer over [`VOCAB`] one-character tokens, no merges, EOS = 2,
/// so that the CLI can load the model.
pub fn metadata_with_tokenizer(kv_heads: u32) -> Vec<(&'static str, Value<'static>)> {
    let tokens: Vec<Value<'static>> = (0..VOCAB as usize)
        .map(|i| Value::String(&TOKENS[i..i + 1]))
        .collect();
    let mut m = metadata(kv_heads);
    m.extend([
        ("tokenizer.ggml.model", Value::String("gpt2")),
        (
            "tokenizer.ggml.tokens",
            Value::Array(Array::new(ValueType::String, tokens)),
        ),
        ("tokenizer.ggml.merges", strings(&[])),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ]);
    m
}

/// Overwrites bytes of tensor `name`'s data from byte `at` (e.g. with a NaN).
pub fn poke(tensors: &mut [TensorSpec], name: &str, at: usize, bytes: &[u8]) {
    let t = tensors
        .iter_mut()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no tensor {name}"));
    t.data[at..at + bytes.len()].copy_from_slice(bytes);
}

/// [`model`] with the token embedding's row `id` made NaN (the scales of its Q8_0 blocks).
pub fn model_with_nan_embedding(id: usize) -> Vec<TensorSpec> {
    let mut t = model();
    let blocks = DIM as usize / 32; // Q8_0: 32 weights in 34 bytes, an f16 scale first
    for b in 0..blocks {
        let nan = f16::NAN.to_le_bytes();
        poke(&mut t, "token_embd.weight", (id * blocks + b) * 34, &nan);
    }
    t
}

/// [`model`] with the final norm's first weight (F32) NaN: the hidden states stay finite,
/// the logits do not.
pub fn model_with_nan_output_norm() -> Vec<TensorSpec> {
    let mut t = model();
    poke(&mut t, "output_norm.weight", 0, &f32::NAN.to_le_bytes());
    t
}
