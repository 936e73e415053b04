//! The `cpu-q8` backend inside WebAssembly, in node (`wasm-bindgen-test-runner`), on the real
//! model: what the browser's CPU backend will run, single-threaded. Run by hand through
//! `benches/wasm-cpu.sh`, which also runs the native CLI on the same prompts and compares the
//! greedy ids; both tests are `#[ignore]`d (a minute each, and they print figures rather than
//! assert them):
//!
//!   cargo test --release --target wasm32-unknown-unknown --test wasm_cpu -- --include-ignored --nocapture
//!
//! Each prints one line `BENCH {json}`.
#![cfg(target_arch = "wasm32")]

use gqa_lab::cpu::CpuEngine;
use gqa_lab::engine::{Engine, GenerateParams, Generator};
use gqa_lab::gguf::Gguf;
use gqa_lab::model::KvType;
use gqa_lab::sampling::SamplingParams;
use gqa_lab::tokenizer::Tokenizer;
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::{console_log, wasm_bindgen_test};
use web_time::Instant;

/// The CPU engine's futures are ready at once (`engine` module doc): their value.
fn ready<T>(f: impl std::future::Future<Output = T>) -> T {
    futures_util::FutureExt::now_or_never(f).expect("the CPU engine never waits")
}

#[wasm_bindgen(module = "fs")]
extern "C" {
    /// node's `fs.readFileSync`: the file's bytes, or the error it throws.
    #[wasm_bindgen(catch, js_name = readFileSync)]
    fn read_file(path: &str) -> Result<Vec<u8>, JsValue>;
}

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// The prompt wllama is measured with (benches/wllama.mjs).
const PROMPT: &str = "The history of the printing press began";
const PREFILL_TOKENS: usize = 128;
const DECODE_TOKENS: usize = 128;

fn read(path: &str) -> Vec<u8> {
    read_file(path).unwrap_or_else(|e| panic!("{path}: {e:?} (run scripts/setup.sh model)"))
}

fn model_bytes() -> Vec<u8> {
    read(&format!("{ROOT}/{}", gqa_lab::DEFAULT_MODEL_PATH))
}

/// `max_tokens` greedy ids after `prompt` (EOS does not stop them, as `--ignore-eos`), and the
/// seconds from the first token to the last.
fn greedy(engine: &mut CpuEngine, prompt: Vec<u32>, max_tokens: usize) -> (Vec<u32>, f64) {
    engine.reset();
    let params = GenerateParams {
        max_tokens,
        sampling: SamplingParams::greedy(),
        stop_token: None,
    };
    let mut gen = Generator::new(engine, prompt, params).expect("a valid prompt");
    let mut first = None;
    while ready(gen.step(engine)).expect("a step").is_some() {
        first.get_or_insert_with(Instant::now);
    }
    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    (gen.generated().to_vec(), secs)
}

fn report(value: Value) {
    console_log!("BENCH {value}");
}

/// For each KV cache type (f32, f16 — the page's default —, q8_0): a 128-token prefill (the
/// start of the built-in calibration text), then [`PROMPT`] and 128 greedy tokens decoded one
/// at a time after the first: tokens/s of each, and the ids.
#[wasm_bindgen_test]
#[ignore]
fn cpu_q8_speed() {
    let bytes = model_bytes();
    let g = Gguf::parse(&bytes).expect("the model parses");
    let tok = Tokenizer::from_gguf(&g).expect("its tokenizer");
    let t0 = Instant::now();
    let mut engine = CpuEngine::load_quantized(&g, 512).expect("cpu-q8 loads");
    let load_s = t0.elapsed().as_secs_f64();

    let text = tok
        .encode(gqa_lab::regroup::texts::TEXT, false)
        .expect("tokenizes");
    let ids = &text[..PREFILL_TOKENS];
    for kv in KvType::ALL {
        engine.set_kv_type(kv).expect("the type holds the heads");
        ready(engine.forward(&ids[..8], false)).expect("a warm-up");
        engine.reset();
        let t0 = Instant::now();
        ready(engine.forward(ids, false)).expect("the prefill");
        let prefill_s = t0.elapsed().as_secs_f64();

        let prompt = tok.encode_prompt(PROMPT).expect("tokenizes");
        let (out, decode_s) = greedy(&mut engine, prompt.clone(), DECODE_TOKENS + 1);
        report(json!({
            "test": "speed",
            "simd128": cfg!(target_feature = "simd128"),
            "kv_type": kv.name(),
            "load_seconds": load_s,
            "prefill_tokens": PREFILL_TOKENS,
            "prefill_tokens_per_second": PREFILL_TOKENS as f64 / prefill_s,
            "decode_tokens": DECODE_TOKENS,
            "decode_tokens_per_second": DECODE_TOKENS as f64 / decode_s,
            "prompt": PROMPT,
            "prompt_ids": prompt,
            "ids": out,
        }));
    }
}

/// The greedy ids of every prompt of the shared generation fixture (`../shared/fixtures`).
#[wasm_bindgen_test]
#[ignore]
fn cpu_q8_fixture_ids() {
    let bytes = model_bytes();
    let g = Gguf::parse(&bytes).expect("the model parses");
    let fixture: Value =
        serde_json::from_slice(&read(&format!("{ROOT}/../shared/fixtures/generate.json")))
            .expect("the fixture is JSON");
    let mut engine = CpuEngine::load_quantized(&g, 512).expect("cpu-q8 loads");
    let prompts = fixture["prompts"].as_array().expect("a list of prompts");
    let mut out = serde_json::Map::new();
    for p in prompts {
        let ids: Vec<u32> = serde_json::from_value(p["prompt_ids"].clone()).expect("ids");
        let n = p["n_generate"].as_u64().expect("a count") as usize;
        let (generated, _) = greedy(&mut engine, ids, n);
        out.insert(p["name"].as_str().expect("a name").into(), json!(generated));
    }
    report(
        json!({ "test": "fixture_ids", "simd128": cfg!(target_feature = "simd128"), "ids": out }),
    );
}
