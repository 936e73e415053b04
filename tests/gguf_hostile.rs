//! Hostile GGUF input: every failure is a specific error, never a panic, and nothing the file
//! merely claims is allocated. Works on the real model's header (mutated and truncated) and
//! on crafted files.

mod common;

use common::gguf_writer::{compact_real_header, file, header, strings, TensorSpec};
use gqa_lab::gguf::{Array, Gguf, GgufError, Value, ValueType};
use gqa_lab::model::{ModelConfig, ModelError, ModelTensors};
use gqa_lab::tokenizer::Tokenizer;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::cell::RefCell;

/// Everything a loader does with untrusted bytes: parse, read the config, find the tensors,
/// build the tokenizer. Errors are fine; a panic fails the test.
fn load_all(bytes: &[u8]) {
    let Ok(g) = Gguf::parse(bytes) else { return };
    if let Ok(cfg) = ModelConfig::from_gguf(&g) {
        let _ = ModelTensors::locate(&g, &cfg);
    }
    let _ = Tokenizer::from_gguf(&g);
}

fn real() -> Gguf<'static> {
    Gguf::parse(common::model_bytes()).expect("the real model parses")
}

#[test]
fn the_real_model_parses() {
    let g = real();
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
    assert_eq!(g.str("general.architecture").unwrap(), "llama");
    assert_eq!(g.usize("llama.attention.head_count").unwrap(), 9);
    assert_eq!(g.usize("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(g.f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert_eq!(g.data_offset % g.alignment, 0);
    // Typed getters refuse the wrong type, naming the key.
    let e = g.str("llama.block_count").unwrap_err();
    assert_eq!(
        e.to_string(),
        "metadata key \"llama.block_count\" is a U32, expected a string"
    );
    assert_eq!(
        g.u64("no.such.key").unwrap_err(),
        GgufError::MissingKey("no.such.key".into())
    );
}

/// The page parses only the head of the file (the engine's worker gets the whole of it): the
/// same metadata and tensor infos as the whole file, the ranges checked against the file's
/// length; a head cut before the tensor infos end is `Truncated`, a claimed length too short
/// for the tensors is refused.
#[test]
fn the_head_alone_gives_the_metadata_and_tensor_infos() {
    let bytes = common::model_bytes();
    let whole = real();
    let end = whole.data_offset as usize;
    let head = Gguf::parse_head(&bytes[..end], bytes.len() as u64).expect("the head parses");
    assert_eq!(head.tensors.len(), whole.tensors.len());
    assert_eq!(head.data_offset, whole.data_offset);
    let cfg = ModelConfig::from_gguf(&head).expect("config from the head");
    assert_eq!(cfg, ModelConfig::from_gguf(&whole).unwrap());
    let (a, b) = (
        Tokenizer::from_gguf(&head).unwrap(),
        Tokenizer::from_gguf(&whole).unwrap(),
    );
    let text = "The capital of France is";
    assert_eq!(
        a.encode(text, false).unwrap(),
        b.encode(text, false).unwrap()
    );
    let embd = head.tensor("token_embd.weight").expect("listed");
    assert!(head.tensor_bytes(embd).is_empty(), "no data in the head");
    for n in [0, 1, 4096, end / 2, end - 40] {
        assert!(matches!(
            Gguf::parse_head(&bytes[..n], bytes.len() as u64),
            Err(GgufError::Truncated { .. })
        ));
    }
    assert!(matches!(
        Gguf::parse_head(&bytes[..end], end as u64 + 10),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
}

/// Every truncation point of a header carrying all the real keys and tensor infos (arrays cut
/// to 64 items), followed by the real data section.
#[test]
fn every_truncation_of_the_compact_real_header() {
    let g = real();
    let mut bytes = compact_real_header(&g, 64);
    let header_len = bytes.len();
    bytes.resize(bytes.len().div_ceil(32) * 32, 0);
    bytes.extend_from_slice(&common::model_bytes()[g.data_offset as usize..]);
    Gguf::parse(&bytes).expect("the compact header with the real data parses");
    for n in 0..=header_len {
        let err = Gguf::parse(&bytes[..n]).expect_err("a truncated header must not parse");
        assert!(
            matches!(
                err,
                GgufError::Truncated { .. } | GgufError::TensorOutOfBounds { .. }
            ),
            "at {n}: {err}"
        );
    }
}

/// Truncations of the full real header (every byte of its last 4 KiB, and every 509th byte
/// before), and every 1 MiB of the data section.
#[test]
fn truncations_of_the_full_real_file() {
    let bytes = common::model_bytes();
    let data_offset = real().data_offset as usize;
    let points = (0..data_offset - 4096)
        .step_by(509)
        .chain(data_offset - 4096..data_offset)
        .chain((data_offset..bytes.len()).step_by(1 << 20));
    for n in points {
        assert!(Gguf::parse(&bytes[..n]).is_err(), "truncated at {n} parsed");
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(usize, u8),
    SetByte(usize, u8),
    /// Overwrite 8 bytes with an extreme little-endian u64 (counts, lengths, offsets).
    SetU64(usize, u64),
}

impl Mutation {
    /// The first byte it changes.
    fn at(&self) -> usize {
        match *self {
            Mutation::FlipBit(p, _) | Mutation::SetByte(p, _) | Mutation::SetU64(p, _) => p,
        }
    }

    fn apply(&self, b: &mut [u8]) {
        match *self {
            Mutation::FlipBit(p, bit) => b[p] ^= 1 << bit,
            Mutation::SetByte(p, v) => b[p] = v,
            Mutation::SetU64(p, v) => b[p..p + 8].copy_from_slice(&v.to_le_bytes()),
        }
    }
}

fn mutation(len: usize) -> impl Strategy<Value = Mutation> {
    let extreme = prop_oneof![
        Just(u64::MAX),
        Just(1u64 << 63),
        Just(1u64 << 60),
        Just(u32::MAX as u64),
        Just(0u64),
        any::<u64>(),
        0u64..300,
    ];
    prop_oneof![
        (0..len, 0u8..8).prop_map(|(p, b)| Mutation::FlipBit(p, b)),
        (0..len, any::<u8>()).prop_map(|(p, v)| Mutation::SetByte(p, v)),
        (0..len.saturating_sub(8), extreme).prop_map(|(p, v)| Mutation::SetU64(p, v)),
    ]
}

fn runner(cases: u32, seed: u8) -> TestRunner {
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]),
    )
}

/// 100,000 seeded mutations (bit flips, byte sets, extreme u64s) of the real header's bytes,
/// applied in place on header + real data and undone after each parse.
#[test]
fn hundred_thousand_mutations_of_the_real_header() {
    let g = real();
    let mut bytes = compact_real_header(&g, 64);
    let header_len = bytes.len();
    bytes.resize(bytes.len().div_ceil(32) * 32, 0);
    bytes.extend_from_slice(&common::model_bytes()[g.data_offset as usize..]);
    let buf = RefCell::new(bytes);
    let strategy = prop::collection::vec(mutation(header_len), 1..6);
    runner(100_000, 7)
        .run(&strategy, |muts| {
            let mut b = buf.borrow_mut();
            let saved: Vec<(usize, [u8; 8])> = muts
                .iter()
                .map(|m| {
                    let mut s = [0u8; 8];
                    s.copy_from_slice(&b[m.at()..m.at() + 8]);
                    (m.at(), s)
                })
                .collect();
            muts.iter().for_each(|m| m.apply(&mut b));
            load_all(&b);
            for (p, s) in saved.iter().rev() {
                b[*p..*p + 8].copy_from_slice(s);
            }
            Ok(())
        })
        .expect("no mutation may panic");
}

/// Splices: a random range of the header replaced by random bytes (changes lengths), plus
/// mutations of the full real header.
#[test]
fn splices_and_full_header_mutations() {
    let g = real();
    let compact = compact_real_header(&g, 64);
    let len = compact.len();
    let splice = (
        0..len,
        0..64usize,
        prop::collection::vec(any::<u8>(), 0..64),
    );
    runner(20_000, 11)
        .run(&splice, |(at, cut, insert)| {
            let mut b = compact.clone();
            let end = (at + cut).min(len);
            b.splice(at..end, insert);
            load_all(&b);
            Ok(())
        })
        .expect("no splice may panic");
    let full = common::model_bytes();
    let head = g.data_offset as usize;
    let buf = RefCell::new(full[..head].to_vec());
    runner(300, 13)
        .run(&prop::collection::vec(mutation(head), 1..4), |muts| {
            let mut b = buf.borrow_mut();
            let orig = b.clone();
            muts.iter().for_each(|m| m.apply(&mut b));
            load_all(&b);
            *b = orig;
            Ok(())
        })
        .expect("no mutation may panic");
}

fn parse_err(bytes: &[u8]) -> GgufError {
    Gguf::parse(bytes).expect_err("must be rejected")
}

#[test]
fn wrong_magic_and_versions() {
    assert!(matches!(
        parse_err(b"GGML\x03\0\0\0"),
        GgufError::BadMagic { .. }
    ));
    let mut h = header(&[], &[]);
    h[4..8].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(parse_err(&h), GgufError::UnsupportedVersion(1));
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(parse_err(&h), GgufError::BigEndian);
    assert!(matches!(parse_err(b""), GgufError::Truncated { .. }));
}

#[test]
fn version_2_files_parse_like_version_3() {
    let mut h = header(&[("general.architecture", Value::String("llama"))], &[]);
    h[4..8].copy_from_slice(&2u32.to_le_bytes());
    let g = Gguf::parse(&h).unwrap();
    assert_eq!(
        (g.version, g.str("general.architecture").unwrap()),
        (2, "llama")
    );
}

#[test]
fn absurd_counts_are_rejected_without_allocating() {
    // 2^63 tensors claimed, none present.
    let mut h = header(&[], &[]);
    h[8..16].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(matches!(parse_err(&h), GgufError::Truncated { .. }));
    // 2^63 metadata pairs.
    let mut h = header(&[], &[]);
    h[16..24].copy_from_slice(&(1u64 << 63).to_le_bytes());
    assert!(matches!(parse_err(&h), GgufError::Truncated { .. }));
    // A 2^60-byte string.
    let mut h = header(&[("general.name", Value::String("x"))], &[]);
    let at = 24 + 8 + "general.name".len() + 4;
    h[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = parse_err(&h);
    assert!(
        matches!(&e, GgufError::Truncated { needed, .. } if *needed == 1 << 60),
        "{e}"
    );
    // An array claiming 2^62 elements.
    let mut h = header(
        &[("a", Value::Array(Array::new(ValueType::U8, vec![])))],
        &[],
    );
    let at = h.len() - 8;
    h[at..].copy_from_slice(&(1u64 << 62).to_le_bytes());
    assert!(matches!(parse_err(&h), GgufError::Truncated { .. }));
}

/// A header of `n` distinct one-byte-valued keys `k0000000`, `k0000001`, …, then `tail`.
fn many_keys(n: usize, tail: &str) -> Vec<u8> {
    let keys: Vec<String> = (0..n).map(|i| format!("k{i:07}")).collect();
    let mut kvs: Vec<(&str, Value<'_>)> = keys.iter().map(|k| (k.as_str(), Value::U8(1))).collect();
    kvs.push((tail, Value::U8(2)));
    header(&kvs, &[])
}

/// The duplicate-key check and `Gguf::get` are linear in the key count. A check that compares
/// each key with every earlier one would make 5·10¹¹ string comparisons on this file (many
/// minutes, so this test would not finish: it has no clock of its own); a hash set makes 10⁶
/// lookups. The last key, a duplicate of the first, still gets its own error.
#[test]
fn a_million_keys_parse_in_linear_time() {
    const N: usize = 1_000_000;
    let bytes = many_keys(N, "last");
    let g = Gguf::parse(&bytes).expect("a million distinct keys parse");
    assert_eq!(g.metadata.len(), N + 1);
    assert_eq!(g.get("last"), Some(&Value::U8(2)));
    assert_eq!(g.get("k0999999"), Some(&Value::U8(1)));
    assert_eq!(g.get("k1000000"), None);
    assert_eq!(
        parse_err(&many_keys(N, "k0000000")),
        GgufError::DuplicateKey("k0000000".into())
    );
}

#[test]
fn nesting_is_bounded() {
    let mut v = Value::Array(Array::new(ValueType::U8, vec![]));
    for _ in 0..20 {
        v = Value::Array(Array::new(ValueType::Array, vec![v]));
    }
    let e = parse_err(&header(&[("deep", v)], &[]));
    assert!(matches!(e, GgufError::TooDeep { .. }), "{e}");
}

#[test]
fn bad_metadata() {
    let e = parse_err(&header(&[("k", Value::U8(1)), ("k", Value::U8(2))], &[]));
    assert_eq!(e, GgufError::DuplicateKey("k".into()));
    let e = parse_err(&header(&[("general.alignment", Value::U32(3))], &[]));
    assert_eq!(e, GgufError::BadAlignment(3));
    let mut h = header(&[("k", Value::U8(1))], &[]);
    let at = h.len() - 5;
    h[at..at + 4].copy_from_slice(&99u32.to_le_bytes());
    assert!(matches!(
        parse_err(&h),
        GgufError::BadValueType { type_id: 99, .. }
    ));
    let mut h = header(&[("k", Value::String("ab"))], &[]);
    let n = h.len();
    h[n - 1] = 0xFF;
    assert!(matches!(parse_err(&h), GgufError::BadUtf8 { .. }));
}

fn f32_tensor(name: &str, dims: &[u64]) -> TensorSpec {
    let n: u64 = dims.iter().product();
    TensorSpec {
        name: name.into(),
        dims: dims.to_vec(),
        type_id: 0,
        data: vec![0; n as usize * 4],
    }
}

#[test]
fn bad_tensors() {
    let ok = file(&[], &[f32_tensor("a", &[8]), f32_tensor("b", &[8])]);
    let g = Gguf::parse(&ok).unwrap();
    assert_eq!(g.tensors.len(), 2);
    let data_start = ok.len() - 64; // two 32-byte tensors
                                    // Tensor info offsets: the last 8 bytes of each info, right before the padding.
    let infos_end = header(&[], &[("a", &[8], 0, 0), ("b", &[8], 0, 32)]).len();
    let off_b = infos_end - 8;
    let off_a = off_b - (8 + 1 + 4 + 8 + 4 + 8);
    let set = |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());

    let mut b = ok.clone();
    set(&mut b, off_b, 64); // past the end
    assert!(matches!(parse_err(&b), GgufError::TensorOutOfBounds { .. }));
    let mut b = ok.clone();
    set(&mut b, off_b, 0); // on top of "a"
    assert!(matches!(parse_err(&b), GgufError::Overlap { .. }));
    let mut b = ok.clone();
    set(&mut b, off_a, 4); // misaligned
    assert!(matches!(
        parse_err(&b),
        GgufError::Misaligned { offset: 4, .. }
    ));
    let mut b = ok.clone();
    set(&mut b, off_b, u64::MAX - 31); // offset + size overflows
    assert!(matches!(parse_err(&b), GgufError::TensorOutOfBounds { .. }));
    assert!(data_start > 0);

    let dup = file(&[], &[f32_tensor("a", &[8]), f32_tensor("a", &[8])]);
    assert_eq!(parse_err(&dup), GgufError::DuplicateTensor("a".into()));
    let huge = header(&[], &[("h", &[1 << 32, 1 << 32, 1 << 2], 0, 0)]);
    assert!(matches!(parse_err(&huge), GgufError::BadDims { .. }));
    let five_dims = header(&[], &[("h", &[1, 1, 1, 1, 1], 0, 0)]);
    assert!(matches!(parse_err(&five_dims), GgufError::BadDims { .. }));
    let zero = header(&[], &[("z", &[0, 4], 0, 0)]);
    assert!(matches!(parse_err(&zero), GgufError::BadDims { .. }));
    let unknown = header(&[], &[("u", &[32], 99, 0)]);
    assert!(matches!(
        parse_err(&unknown),
        GgufError::UnknownTensorType { type_id: 99, .. }
    ));
    let partial_block = header(&[], &[("q", &[31], 8, 0)]); // Q8_0 rows must be multiples of 32
    assert!(matches!(
        parse_err(&partial_block),
        GgufError::BadDims { .. }
    ));
}

/// The real metadata with some keys replaced or removed.
fn real_with(changes: &[(&str, Option<Value<'static>>)]) -> Vec<u8> {
    let g = real();
    let mut kvs: Vec<(&str, Value<'_>)> = g.metadata.clone();
    for (key, value) in changes {
        kvs.retain(|(k, _)| k != key);
        if let Some(v) = value {
            kvs.push((key, v.clone()));
        }
    }
    header(&kvs, &[])
}

fn config_err(bytes: &[u8]) -> ModelError {
    ModelConfig::from_gguf(&Gguf::parse(bytes).unwrap()).expect_err("config must be rejected")
}

#[test]
fn bad_model_configs() {
    let e = config_err(&real_with(&[(
        "general.architecture",
        Some(Value::String("gpt2")),
    )]));
    assert_eq!(e, ModelError::UnsupportedArch("gpt2".into()));
    let e = config_err(&real_with(&[(
        "llama.attention.head_count_kv",
        Some(Value::U32(2)),
    )]));
    assert!(
        e.to_string()
            .contains("head_count 9 is not divisible by head_count_kv 2"),
        "{e}"
    );
    let e = config_err(&real_with(&[("llama.block_count", None)]));
    assert_eq!(
        e,
        ModelError::Gguf(GgufError::MissingKey("llama.block_count".into()))
    );
    let e = config_err(&real_with(&[(
        "llama.embedding_length",
        Some(Value::String("576")),
    )]));
    assert!(
        matches!(e, ModelError::Gguf(GgufError::WrongType { .. })),
        "{e}"
    );
    let e = config_err(&real_with(&[("llama.block_count", Some(Value::I32(-1)))]));
    assert!(
        matches!(e, ModelError::Gguf(GgufError::OutOfRange { .. })),
        "{e}"
    );
    let e = config_err(&real_with(&[(
        "llama.attention.head_count",
        Some(Value::U64(0)),
    )]));
    assert!(matches!(e, ModelError::BadConfig(_)), "{e}");
}

#[test]
fn unsupported_tensor_type_is_named() {
    // An IQ4_NL tensor where the model expects ffn_up of layer 0 (real metadata, 1 layer).
    let g = real();
    let mut kvs = g.metadata.clone();
    kvs.retain(|(k, _)| *k != "llama.block_count");
    kvs.push(("llama.block_count", Value::U32(1)));
    let iq4_nl = TensorSpec {
        name: "blk.0.ffn_up.weight".into(),
        dims: vec![576, 1536],
        type_id: 20,
        data: vec![0; 576 * 1536 / 32 * 18],
    };
    let mut tensors: Vec<TensorSpec> = Vec::new();
    for t in &g.tensors {
        if t.name.starts_with("blk.") && !t.name.starts_with("blk.0.") {
            continue;
        }
        if t.name == "blk.0.ffn_up.weight" {
            continue;
        }
        tensors.push(TensorSpec {
            name: t.name.into(),
            dims: t.dims.clone(),
            type_id: 0,
            data: vec![0; t.n_elements() as usize * 4],
        });
    }
    tensors.push(iq4_nl);
    let bytes = file(&kvs, &tensors);
    let g2 = Gguf::parse(&bytes).unwrap();
    let cfg = ModelConfig::from_gguf(&g2).unwrap();
    let e = ModelTensors::locate(&g2, &cfg).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unsupported tensor type IQ4_NL in blk.0.ffn_up.weight (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)"
    );
    let _ = strings(&[]);
}

/// A metadata value of the wrong type is refused naming its key, wherever
/// it is read (the model's configuration or the tokenizer).
#[test]
fn every_metadata_type_error_names_its_key() {
    let list = |v: Value<'static>| Value::Array(Array::new(v.value_type(), vec![v; 3]));
    let cases: Vec<(&str, Value<'static>)> = vec![
        ("llama.rope.dimension_count", Value::String("64")),
        ("llama.context_length", Value::F32(2048.0)),
        ("tokenizer.ggml.add_bos_token", Value::String("yes")),
        ("tokenizer.ggml.eos_token_id", Value::String("2")),
        ("tokenizer.ggml.bos_token_id", Value::I32(-1)),
        ("tokenizer.chat_template", Value::U32(1)),
        ("tokenizer.ggml.tokens", Value::U32(1)),
        ("tokenizer.ggml.tokens", list(Value::U32(1))),
        ("tokenizer.ggml.token_type", Value::String("normal")),
        ("tokenizer.ggml.token_type", list(Value::String("normal"))),
        ("tokenizer.ggml.merges", Value::Bool(true)),
        ("tokenizer.ggml.pre", Value::U8(1)),
        ("tokenizer.ggml.model", Value::U8(1)),
    ];
    for (key, value) in cases {
        let bytes = real_with(&[(key, Some(value.clone()))]);
        let g = Gguf::parse(&bytes).unwrap();
        let message = match ModelConfig::from_gguf(&g) {
            Err(e) => e.to_string(),
            Ok(_) => match Tokenizer::from_gguf(&g) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{key} = {value:?} was accepted"),
            },
        };
        assert!(
            message.contains(key) && !message.contains("\"\""),
            "{key} = {value:?}: {message}"
        );
    }
}

/// `block_count` = 1 in a file that holds 30 blocks is refused naming the
/// first tensor past it (one layer ran without a word).
#[test]
fn blocks_past_block_count_are_refused() {
    let g = real();
    let mut kvs = g.metadata.clone();
    kvs.retain(|(k, _)| *k != "llama.block_count");
    kvs.push(("llama.block_count", Value::U32(1)));
    // Block 0, the tensors outside blocks, and one tensor of block 1, as F32 zeros.
    let kept = |name: &str| {
        !name.starts_with("blk.") || name.starts_with("blk.0.") || name == "blk.1.attn_norm.weight"
    };
    let tensors: Vec<TensorSpec> = (g.tensors.iter().filter(|t| kept(t.name)))
        .map(|t| TensorSpec {
            name: t.name.into(),
            dims: t.dims.clone(),
            type_id: 0,
            data: vec![0; t.n_elements() as usize * 4],
        })
        .collect();
    let bytes = file(&kvs, &tensors);
    let g2 = Gguf::parse(&bytes).unwrap();
    let cfg = ModelConfig::from_gguf(&g2).unwrap();
    let e = ModelTensors::locate(&g2, &cfg).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid hyper-parameters: llama.block_count is 1 but the file holds tensor blk.1.attn_norm.weight of block 1"
    );
}
