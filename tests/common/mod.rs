//! Shared helpers for the integration tests: the real model's bytes, the reference fixtures,
//! and a GGUF writer for synthetic and mutated files.
#![allow(dead_code)]

pub mod gguf_writer;
pub mod reference;
pub mod synthetic;

use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The default model's bytes, read once per test binary.
pub fn model_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = root().join(gqa_lab::DEFAULT_MODEL_PATH);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\nfetch the model first: scripts/setup.sh model (make test does it)",
                path.display()
            )
        })
    })
}

/// The second built-in model's bytes (Gemma 3 270M, Q4_K_M), read once per test binary.
pub fn gemma_bytes() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = root().join(gqa_lab::GEMMA_MODEL_PATH);
        std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}\nfetch the model first: scripts/setup.sh model (make test does it)",
                path.display()
            )
        })
    })
}

/// A fixture of llama.cpp's outputs from `tests/fixtures/llama-cpp/` (made once by
/// `scripts/fixtures/generate.mjs`; that folder's README says what each holds).
pub fn llama_cpp_fixture(name: &str) -> Value {
    let path = root().join("tests/fixtures/llama-cpp").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/fixtures/generate.mjs makes the llama.cpp fixtures)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A reference fixture from `../shared/fixtures` (or `$GQA_FIXTURES`).
pub fn fixture(name: &str) -> Value {
    let dir = std::env::var_os("GQA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/fixtures"));
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the fixtures live in ../shared/fixtures)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A JSON array of integers as token ids.
pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| x.as_u64().expect("an id") as u32)
        .collect()
}

/// A JSON array of numbers as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("an array of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// splitmix64: the tests' own seeded generator.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f()).collect()
    }
}

/// Calibration tokens the tests fit on (the CLI's default is more; ARCHITECTURE.md's
/// regrouping section has what each gives).
pub const CALIBRATION_TOKENS: usize = 2048;

/// The calibrated merge of the default model at `groups`, fitted on the f32 oracle over the
/// first [`CALIBRATION_TOKENS`] of the built-in text. Fitted once per test run: the maps are
/// kept in `target/test-maps/` under their `MapsKey` (the CLI's and the page's key: model,
/// G, tokens, fit settings, calibration text, format version), written whole, then renamed,
/// so later test binaries read them.
pub fn calibrated(groups: usize) -> std::sync::Arc<gqa_lab::regroup::Regrouping> {
    use gqa_lab::cpu::CpuEngine;
    use gqa_lab::engine::calibrate::calibrate;
    use gqa_lab::engine::Engine;
    use gqa_lab::gguf::Gguf;
    use gqa_lab::regroup::{self, store, texts, FitSettings, Grouping, MapsKey};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    static FITTED: OnceLock<Mutex<HashMap<usize, Arc<gqa_lab::regroup::Regrouping>>>> =
        OnceLock::new();
    let fitted = FITTED.get_or_init(Default::default);
    let mut fitted = fitted.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = fitted.get(&groups) {
        return r.clone();
    }
    let g = Gguf::parse(model_bytes()).unwrap();
    let dir = root().join("target/test-maps");
    let key = MapsKey::for_model(
        g.bytes(),
        groups,
        CALIBRATION_TOKENS,
        FitSettings::default(),
    );
    let path = dir.join(key.file_name());
    let cfg = gqa_lab::model::ModelConfig::from_gguf(&g).unwrap();
    let cached = std::fs::read(&path)
        .ok()
        .and_then(|b| store::from_cache_bytes(&b, &cfg, &key).ok());
    let r = cached.unwrap_or_else(|| {
        let tok = gqa_lab::tokenizer::Tokenizer::from_gguf(&g).unwrap();
        let ids = tok.encode(texts::TEXT, false).unwrap();
        let mut walk = CpuEngine::load(&g, regroup::SEQUENCE).unwrap();
        let grouping = Grouping::of(walk.config(), groups).unwrap();
        let ids = &ids[..CALIBRATION_TOKENS];
        let mut quiet = |_| {};
        let fit = calibrate(&mut walk, &g, grouping, ids, &mut quiet);
        let r = pollster::block_on(fit).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        let tmp = path.with_extension(format!("{}.part", std::process::id()));
        std::fs::write(&tmp, store::to_cache_bytes(&r, &key)).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        store::stored(&r) // as the file gives it back next time (f16 values)
    });
    let r = Arc::new(r);
    fitted.insert(groups, r.clone());
    r
}
