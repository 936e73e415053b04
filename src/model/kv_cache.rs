//! KV-cache arithmetic, once for the engines and the page's cache calculator: bytes =
//! 2 (K and V) · layers · G · ⌈head_dim / block⌉ · block bytes · tokens · batch. An element
//! type is a block of values and its bytes (one f32 is a block of 1 and 4 bytes; llama.cpp's
//! Q4_0 32 values in 18 bytes), so every figure is an exact integer.
//!
//! Also the presets of the calculator: real models' published hyper-parameters, with their
//! parameter counts computed from them (each equals the published total; tested), and the GPU
//! memory sizes the page checks a cache and its weights against. GQA's arithmetic is that of
//! Ainslie et al. 2023 (arXiv:2305.13245), §1: the cache shrinks by H / G.

use super::ModelConfig;

/// How the values of a cache (or of weights) are stored: `block_bytes` per `block_len` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementType {
    pub name: &'static str,
    pub block_len: u64,
    pub block_bytes: u64,
}

impl ElementType {
    pub const FP32: ElementType = ElementType::float("fp32", 4);
    pub const FP16: ElementType = ElementType::float("fp16", 2);
    /// GGML's Q8_0: 32 eight-bit values and one f16 scale, 34 bytes (8.5 bits a value); the
    /// engines' `q8_0` cache (`kv_type.rs`).
    pub const Q8_0: ElementType = ElementType {
        name: "q8_0",
        block_len: 32,
        block_bytes: 34,
    };
    pub const FP8: ElementType = ElementType::float("fp8", 1);
    /// llama.cpp's Q4_0: 32 four-bit values and one f16 scale, 18 bytes (4.5 bits a value).
    pub const Q4: ElementType = ElementType {
        name: "q4",
        block_len: 32,
        block_bytes: 18,
    };
    /// The types the calculator offers: the engines' three cache types (`KvType`), then two
    /// that other engines offer.
    pub const ALL: [ElementType; 5] = [Self::FP32, Self::FP16, Self::Q8_0, Self::FP8, Self::Q4];

    /// One value in `bytes` bytes.
    pub const fn float(name: &'static str, bytes: u64) -> Self {
        ElementType {
            name,
            block_len: 1,
            block_bytes: bytes,
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name == name)
    }

    /// Bytes per value (fractional for a block type: q8_0's 34 / 32).
    pub fn bytes_per_value(self) -> f64 {
        self.block_bytes as f64 / self.block_len as f64
    }

    /// Bytes of a row of `n` values (whole blocks).
    pub fn row_bytes(self, n: u64) -> u64 {
        n.div_ceil(self.block_len) * self.block_bytes
    }
}

/// What the KV cache's size depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheShape {
    pub layers: u64,
    /// KV heads G.
    pub groups: u64,
    pub head_dim: u64,
    /// Layers with a sliding window, which hold at most `ring` positions each (0: none).
    pub windowed: u64,
    pub ring: u64,
}

impl CacheShape {
    /// Bytes of K and V for `tokens` positions of each of `batch` sequences.
    pub fn bytes(self, tokens: u64, batch: u64, t: ElementType) -> u64 {
        let held = (self.layers - self.windowed.min(self.layers)) * tokens
            + self.windowed.min(self.layers) * tokens.min(self.ring);
        let rows = 2 * held * self.groups * batch; // one row per head and position
        rows * t.row_bytes(self.head_dim)
    }
}

/// Positions a sliding-window layer's cache holds beyond its window: the engines write a
/// prefill chunk of up to this many tokens before its attention reads, so the ring must not
/// overwrite a position an earlier token of the chunk still sees (the GPU's PREFILL_CHUNK,
/// asserted there; the CPU engines cut their prefills to it when the model has windows).
pub const WINDOW_SLACK: usize = 128;

/// Positions layer `l`'s cache holds for a sequence of `tokens`: all of them, or for a
/// sliding-window layer at most its window and [`WINDOW_SLACK`] (a ring: position p in row
/// p mod that).
pub fn layer_cache_rows(cfg: &ModelConfig, l: usize, tokens: usize) -> usize {
    match cfg.is_local(l) {
        true => tokens.min(cfg.arch.sliding_window + WINDOW_SLACK),
        false => tokens,
    }
}

/// KV-cache bytes for one sequence of `tokens` of a model at `groups` KV heads, its values kept
/// as `t` (what the engines report and allocate): 2 · G · (a row of head_dim values' bytes) ·
/// Σ over layers of the positions each holds (sliding-window layers only their ring).
pub fn kv_cache_bytes(cfg: &ModelConfig, groups: usize, tokens: usize, t: ElementType) -> u64 {
    let rows: u64 = (0..cfg.n_layers)
        .map(|l| layer_cache_rows(cfg, l, tokens) as u64)
        .sum();
    let shape = CacheShape {
        layers: 1,
        groups: groups as u64,
        head_dim: cfg.head_dim as u64,
        windowed: 0,
        ring: 0,
    };
    shape.bytes(rows, 1, t)
}

/// [`kv_cache_bytes`] of a cache whose layer l holds `groups[l]` KV heads (`[layers]`, a
/// per-layer grouping): the sum over layers of each layer's bytes.
pub fn kv_cache_bytes_layers(
    cfg: &ModelConfig,
    groups: &[usize],
    tokens: usize,
    t: ElementType,
) -> u64 {
    let row = t.row_bytes(cfg.head_dim as u64);
    (0..cfg.n_layers)
        .map(|l| {
            let g = groups.get(l).copied().unwrap_or(0) as u64;
            2 * g * layer_cache_rows(cfg, l, tokens) as u64 * row
        })
        .sum()
}

/// A llama-style model's hyper-parameters, as the calculator takes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hyper {
    pub name: String,
    pub layers: u64,
    /// Query heads H.
    pub heads: u64,
    /// KV heads as trained.
    pub kv_heads: u64,
    pub head_dim: u64,
    /// Parameters, for the weights' bytes.
    pub params: u64,
    /// Layers with a sliding window, and the positions each keeps (0: none).
    pub windowed: u64,
    pub ring: u64,
}

impl Hyper {
    pub fn cache(&self, groups: u64) -> CacheShape {
        CacheShape {
            layers: self.layers,
            groups,
            head_dim: self.head_dim,
            windowed: self.windowed,
            ring: self.ring,
        }
    }

    /// The loaded model's, with its parameter count.
    pub fn of(name: &str, cfg: &ModelConfig, params: u64) -> Self {
        Hyper {
            name: name.to_string(),
            layers: cfg.n_layers as u64,
            heads: cfg.n_heads as u64,
            kv_heads: cfg.n_kv_heads as u64,
            head_dim: cfg.head_dim as u64,
            params,
            windowed: (0..cfg.n_layers).filter(|&l| cfg.is_local(l)).count() as u64,
            ring: (cfg.arch.sliding_window + WINDOW_SLACK) as u64,
        }
    }
}

/// The architecture that fixes a llama-style model's parameter count.
struct Arch {
    vocab: u64,
    dim: u64,
    ffn: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    head_dim: u64,
    tied_embeddings: bool,
    qkv_bias: bool,
}

impl Arch {
    /// Embedding (and head unless tied), per layer Q, K, V, O, gate, up, down and two norms
    /// (Q, K, V biases where the model has them), and the final norm.
    fn params(&self) -> u64 {
        let (q, kv) = (self.heads * self.head_dim, self.kv_heads * self.head_dim);
        let attn = self.dim * q + 2 * self.dim * kv + q * self.dim;
        let bias = if self.qkv_bias { q + 2 * kv } else { 0 };
        let layer = attn + bias + 3 * self.dim * self.ffn + 2 * self.dim;
        let embed = self.vocab * self.dim * if self.tied_embeddings { 1 } else { 2 };
        embed + self.layers * layer + self.dim
    }

    fn hyper(&self, name: &str) -> Hyper {
        Hyper {
            name: name.to_string(),
            layers: self.layers,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            params: self.params(),
            windowed: 0,
            ring: 0,
        }
    }
}

/// Real models (their published configs: vocabulary, width, feed-forward width, layers, heads,
/// KV heads, head size).
pub fn presets() -> Vec<Hyper> {
    let llama = |vocab, dim, ffn, layers, heads| Arch {
        vocab,
        dim,
        ffn,
        layers,
        heads,
        kv_heads: 8,
        head_dim: 128,
        tied_embeddings: false,
        qkv_bias: false,
    };
    let qwen = Arch {
        vocab: 151_936,
        dim: 896,
        ffn: 4864,
        layers: 24,
        heads: 14,
        kv_heads: 2,
        head_dim: 64,
        tied_embeddings: true,
        qkv_bias: true,
    };
    vec![
        llama(32_000, 8192, 28_672, 80, 64).hyper("Llama-2-70B"),
        llama(128_256, 4096, 14_336, 32, 32).hyper("Llama-3-8B"),
        llama(128_256, 16_384, 53_248, 126, 128).hyper("Llama-3.1-405B"),
        llama(32_000, 4096, 14_336, 32, 32).hyper("Mistral-7B"),
        qwen.hyper("Qwen2.5-0.5B"),
    ]
}

/// The G a calculator shows for `heads` query heads: every divisor (equal groups, as GQA
/// checkpoints are trained), or with `uneven` every G from 1 to H (what this engine runs).
pub fn calculator_groups(heads: u64, uneven: bool) -> Vec<u64> {
    (1..=heads)
        .filter(|g| uneven || heads.is_multiple_of(*g))
        .collect()
}

/// Common GPU memory sizes, GiB.
pub const GPU_MEMORY_GIB: [u64; 4] = [8, 16, 24, 80];

/// Whether a cache of `cache` bytes and weights of `weights` bytes fit in `gib` GiB.
pub fn fits(cache: u64, weights: u64, gib: u64) -> bool {
    cache.saturating_add(weights) <= gib << 30
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset(name: &str) -> Hyper {
        presets().into_iter().find(|p| p.name == name).unwrap()
    }

    #[test]
    fn llama_3_8b_at_8192_tokens_in_fp16_is_one_gibibyte() {
        // 2 · 32 layers · 8 heads · 128 · 8192 tokens · 2 bytes, by hand:
        let by_hand: u64 = 2 * 32 * 8 * 128 * 8192 * 2;
        assert_eq!(by_hand, 1_073_741_824);
        let l3 = preset("Llama-3-8B");
        assert_eq!(l3.cache(8).bytes(8192, 1, ElementType::FP16), by_hand);
        // MHA (G = 32) is 4×; MQA a quarter; a batch of 4 is 4×.
        assert_eq!(l3.cache(32).bytes(8192, 1, ElementType::FP16), 4 * by_hand);
        assert_eq!(l3.cache(1).bytes(8192, 1, ElementType::FP16), by_hand / 8);
        assert_eq!(l3.cache(8).bytes(8192, 4, ElementType::FP16), 4 * by_hand);
    }

    #[test]
    fn element_types_count_whole_blocks() {
        let s = CacheShape {
            layers: 80,
            groups: 8,
            head_dim: 128,
            windowed: 0,
            ring: 0,
        };
        // Llama-2-70B, 4096 tokens: fp32 / fp16 / fp8, and Q4_0 at 18 bytes per 32 values.
        let values: u64 = 2 * 80 * 8 * 128 * 4096;
        assert_eq!(s.bytes(4096, 1, ElementType::FP32), values * 4);
        assert_eq!(s.bytes(4096, 1, ElementType::FP16), values * 2);
        assert_eq!(s.bytes(4096, 1, ElementType::FP8), values);
        assert_eq!(s.bytes(4096, 1, ElementType::Q4), values / 32 * 18);
        // A head of 40 values takes two Q4_0 blocks.
        assert_eq!(ElementType::Q4.row_bytes(40), 36);
        assert_eq!(ElementType::parse("fp8"), Some(ElementType::FP8));
        assert_eq!(ElementType::parse("q8_0"), Some(ElementType::Q8_0));
        assert_eq!(ElementType::Q8_0.bytes_per_value(), 1.0625);
        assert_eq!(ElementType::parse("int3"), None);
    }

    #[test]
    fn the_engines_figure_is_the_calculators() {
        let cfg = ModelConfig::smollm2_135m();
        // SmolLM2-135M at its native G = 3, 100 tokens, f32: 2 · 30 · 3 · 64 · 100 · 4.
        assert_eq!(kv_cache_bytes(&cfg, 3, 100, ElementType::FP32), 4_608_000);
        // f16 halves it; q8_0 keeps 34 bytes per 32 values (two blocks a head of 64).
        assert_eq!(kv_cache_bytes(&cfg, 3, 100, ElementType::FP16), 2_304_000);
        assert_eq!(
            kv_cache_bytes(&cfg, 3, 100, ElementType::Q8_0),
            2 * 30 * 3 * 100 * 68
        );
        // Gemma 3's shape: 15 of 18 layers hold at most 512 + 128 positions.
        let mut gemma = cfg.clone();
        (gemma.n_layers, gemma.head_dim) = (18, 256);
        (gemma.arch.sliding_window, gemma.arch.swa_pattern) = (512, 6);
        let per_row = 2 * 256 * 4;
        assert_eq!(
            kv_cache_bytes(&gemma, 1, 100, ElementType::FP32),
            18 * 100 * per_row
        );
        let rows = 3 * 4096 + 15 * (512 + WINDOW_SLACK as u64);
        assert_eq!(
            kv_cache_bytes(&gemma, 1, 4096, ElementType::FP32),
            rows * per_row
        );
        // The calculator's figure for the loaded model is the same.
        let h = Hyper::of("Gemma", &gemma, 0);
        assert_eq!(h.cache(1).bytes(4096, 1, ElementType::FP32), rows * per_row);
        let h = Hyper::of("SmolLM2", &cfg, 134_515_008);
        assert_eq!(h.cache(3).bytes(100, 1, ElementType::FP32), 4_608_000);
        // Per layer: uniform G the same figure; a mix the sum of its layers'.
        for (g, t) in [(3, ElementType::FP32), (1, ElementType::Q8_0)] {
            let each = vec![g; 30];
            let want = kv_cache_bytes(&cfg, g, 100, t);
            assert_eq!(kv_cache_bytes_layers(&cfg, &each, 100, t), want);
        }
        let mix: Vec<usize> = (0..30).map(|l| 1 + l % 2).collect(); // 1, 2, 1, 2, …
        let (one, two) = (
            kv_cache_bytes(&cfg, 1, 100, ElementType::FP16),
            kv_cache_bytes(&cfg, 2, 100, ElementType::FP16),
        );
        assert_eq!(
            kv_cache_bytes_layers(&cfg, &mix, 100, ElementType::FP16),
            (one + two) / 2
        );
        let h = [1, 3, 1, 2, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1];
        let by_layer: u64 = (0..18)
            .map(|l| 2 * h[l] * layer_cache_rows(&gemma, l, 4096) as u64 * 1024)
            .sum();
        assert_eq!(
            kv_cache_bytes_layers(&gemma, &h.map(|g| g as usize), 4096, ElementType::FP32),
            by_layer
        );
    }

    #[test]
    fn preset_parameter_counts_are_the_published_ones() {
        for (name, params) in [
            ("Llama-2-70B", 68_976_648_192u64),
            ("Llama-3-8B", 8_030_261_248),
            ("Llama-3.1-405B", 405_853_388_800),
            ("Mistral-7B", 7_241_732_096),
            ("Qwen2.5-0.5B", 494_032_768),
        ] {
            assert_eq!(preset(name).params, params, "{name}");
        }
        let heads: Vec<(u64, u64, u64, u64)> = presets()
            .iter()
            .map(|p| (p.layers, p.heads, p.kv_heads, p.head_dim))
            .collect();
        assert_eq!(
            heads,
            [
                (80, 64, 8, 128),
                (32, 32, 8, 128),
                (126, 128, 8, 128),
                (32, 32, 8, 128),
                (24, 14, 2, 64)
            ]
        );
    }

    #[test]
    fn groups_and_memory_sizes() {
        assert_eq!(calculator_groups(14, false), [1, 2, 7, 14]);
        assert_eq!(calculator_groups(4, true), [1, 2, 3, 4]);
        // Llama-3-8B in fp16: 16.06 GB of weights and, at 8192 tokens, a 1 GiB cache at G = 8
        // fit 16 GiB (17.18 GB); multi-head attention's 4 GiB cache does not.
        let w = preset("Llama-3-8B").params * 2;
        assert!(fits(1 << 30, w, 16) && !fits(4 << 30, w, 16) && fits(4 << 30, w, 24));
        assert!(fits(8 << 30, 0, 8) && !fits((8 << 30) + 1, 0, 8));
    }
}
