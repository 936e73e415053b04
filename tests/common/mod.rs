//! Shared helpers for the integration tests: the real model's bytes, the reference fixtures,
//! and a GGUF writer for synthetic and mutated files.
#![allow(dead_code)]

pub mod gguf_writer;

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
