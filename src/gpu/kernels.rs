//! Every WGSL kernel of the engine, embedded from `shaders/`, and their parameter structs.
//! A kernel's module is `common.wgsl` + (for kernels that read weights) `quant.wgsl` + its
//! own file. Parameter structs mirror the WGSL `Params` of each file, padded to 16 bytes.

use bytemuck::{Pod, Zeroable};

pub const COMMON: &str = include_str!("../../shaders/common.wgsl");
pub const QUANT: &str = include_str!("../../shaders/quant.wgsl");

/// One compute kernel: its file and whether it dequantizes weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    Embed,
    Matvec,
    Matmul,
    RmsNorm,
    SwiGlu,
    KvStore,
    Attention,
    AttentionDecode,
    AttentionReduce,
    Argmax,
    Sample,
}

impl Kernel {
    pub const ALL: [Kernel; 11] = [
        Kernel::Embed,
        Kernel::Matvec,
        Kernel::Matmul,
        Kernel::RmsNorm,
        Kernel::SwiGlu,
        Kernel::KvStore,
        Kernel::Attention,
        Kernel::AttentionDecode,
        Kernel::AttentionReduce,
        Kernel::Argmax,
        Kernel::Sample,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Embed => "embed",
            Kernel::Matvec => "matvec",
            Kernel::Matmul => "matmul",
            Kernel::RmsNorm => "rmsnorm",
            Kernel::SwiGlu => "swiglu",
            Kernel::KvStore => "kv_store",
            Kernel::Attention => "attention",
            Kernel::AttentionDecode => "attention_decode",
            Kernel::AttentionReduce => "attention_reduce",
            Kernel::Argmax => "argmax",
            Kernel::Sample => "sample",
        }
    }

    fn file(self) -> &'static str {
        match self {
            Kernel::Embed => include_str!("../../shaders/embed.wgsl"),
            Kernel::Matvec => include_str!("../../shaders/matvec.wgsl"),
            Kernel::Matmul => include_str!("../../shaders/matmul.wgsl"),
            Kernel::RmsNorm => include_str!("../../shaders/rmsnorm.wgsl"),
            Kernel::SwiGlu => include_str!("../../shaders/swiglu.wgsl"),
            Kernel::KvStore => include_str!("../../shaders/kv_store.wgsl"),
            Kernel::Attention => include_str!("../../shaders/attention.wgsl"),
            Kernel::AttentionDecode => include_str!("../../shaders/attention_decode.wgsl"),
            Kernel::AttentionReduce => include_str!("../../shaders/attention_reduce.wgsl"),
            Kernel::Argmax => include_str!("../../shaders/argmax.wgsl"),
            Kernel::Sample => include_str!("../../shaders/sample.wgsl"),
        }
    }

    /// Whether the kernel reads quantized weights (and so takes the WTYPE constant).
    pub fn reads_weights(self) -> bool {
        matches!(self, Kernel::Embed | Kernel::Matvec | Kernel::Matmul)
    }

    /// The pipeline-overridable constants of the kernel and their values for `variant`
    /// (a weight type id for kernels that read weights; [`attention_variant`] for
    /// attention_decode; nothing for the others).
    pub fn constants(self, variant: u32) -> Vec<(&'static str, f64)> {
        match self {
            _ if self.reads_weights() => vec![("WTYPE", variant as f64)],
            Kernel::AttentionDecode => vec![
                ("N_REP", (variant & 0xFF) as f64),
                ("HD4", (variant >> 8) as f64),
            ],
            _ => Vec::new(),
        }
    }

    /// The complete WGSL module.
    pub fn source(self) -> String {
        let quant = if self.reads_weights() { QUANT } else { "" };
        format!("{COMMON}\n{quant}\n{}", self.file())
    }
}

/// Attention chunk length (positions per workgroup); `CHUNK` in attention*.wgsl.
pub const ATTENTION_CHUNK: usize = 64;
/// Most query heads per KV head the attention kernel holds; `MAX_REP` in attention.wgsl.
pub const ATTENTION_MAX_REP: usize = 16;
/// Largest head dimension the attention kernel holds; `MAX_HD` in attention.wgsl.
pub const ATTENTION_MAX_HEAD_DIM: usize = 128;
/// The pipeline variant of attention_decode.wgsl for `n_rep` query heads per KV head and
/// `head_dim` (≤ ATTENTION_MAX_REP and ATTENTION_MAX_HEAD_DIM, a multiple of 4).
pub fn attention_variant(n_rep: usize, head_dim: usize) -> u32 {
    (n_rep as u32) | ((head_dim as u32 / 4) << 8)
}

/// Tokens per invocation in matmul.wgsl (`TT`).
pub const MATMUL_TOKENS: usize = 8;

/// `Step` in common.wgsl: what changes per forward.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct Step {
    pub pos0: u32,
    pub n_tokens: u32,
    pub n_chunks: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct EmbedParams {
    pub dim: u32,
    pub vocab: u32,
    pub _pad: [u32; 2],
}

/// `Params` of matmul.wgsl and matvec.wgsl: `y (+)= W[row0..row0 + n_out]·x`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ProductParams {
    pub n_in: u32,
    pub n_out: u32,
    /// A [`ProductMode`] as u32.
    pub mode: u32,
    /// First weight row (a part of a stacked tensor).
    pub row0: u32,
    /// matmul.wgsl: the tokens `t_base..t_base + t_count` whose rows of x are in the bound
    /// uniform window (which starts at row `t_base`). matvec.wgsl ignores them.
    pub t_base: u32,
    pub t_count: u32,
    /// matvec.wgsl: x is γ ⊙ h and the sums are scaled by 1 / rms(h), from this many
    /// partial sums of h² that a [`ProductMode::AccumulateForNorm`] product wrote (0: x is
    /// used as it is).
    pub norm_parts: u32,
    /// The RMSNorm's ε, with `norm_parts`.
    pub eps: f32,
}

/// WebGPU's largest `minUniformBufferOffsetAlignment` (a power of two): offsets that are
/// multiples of it are aligned on every device.
pub const UNIFORM_ALIGN: usize = 256;

/// Token rows of an `n_in`-wide activation that one uniform window holds, from an offset
/// that is a multiple of `align` bytes (rows `t_base`, `t_base + this`, … start windows):
/// the most rows that fit, rounded down to a multiple that keeps every window aligned.
/// `None` if not even one aligned step fits.
pub fn window_tokens(n_in: usize, align: usize) -> Option<usize> {
    let row = n_in * 4;
    let step = align / gcd(row, align); // rows per aligned step
    let fit = super::UNIFORM_WINDOW as usize / row;
    let w = fit / step * step;
    (w > 0).then_some(w)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl ProductParams {
    /// `y (+)= W[row0..row0 + n_out]·x` for one token (matvec.wgsl); matmul.wgsl's callers set
    /// the window's `t_base`, `t_count`.
    pub fn new(n_in: u32, n_out: u32, mode: ProductMode, row0: u32) -> Self {
        ProductParams {
            n_in,
            n_out,
            mode: mode as u32,
            row0,
            t_base: 0,
            t_count: 1,
            norm_parts: 0,
            eps: 0.0,
        }
    }
}

/// What a matrix product does with its result (`mode` in matvec.wgsl / matmul.wgsl).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProductMode {
    /// y = W·x
    Store = 0,
    /// y += W·x (residual connections)
    Accumulate = 1,
    /// y = silu(W_gate·x) · W_up·x, W_gate and W_up stacked (`n_out` rows each); matvec only.
    SwiGlu = 2,
    /// y += W·x, then the first half of the RMSNorm that follows: xn = γ ⊙ y, and each
    /// workgroup's Σ y² into `parts` (the second half is `norm_parts` of the next product);
    /// matvec only.
    AccumulateForNorm = 3,
}

/// Weight rows one matvec.wgsl or matmul.wgsl invocation computes (`ROWS`).
pub const PRODUCT_ROWS: u32 = 4;
/// matvec.wgsl's workgroup size.
pub const MATVEC_WORKGROUP: u32 = 32;
/// matmul.wgsl's workgroup size.
pub const MATMUL_WORKGROUP: u32 = 64;

/// Invocations (per group of tokens) that matvec.wgsl and matmul.wgsl need for `n_out`
/// outputs (`row_stride` in quant.wgsl): a multiple of [`LANES`](super::layout::LANES), each
/// computing [`PRODUCT_ROWS`] rows, in matvec's SwiGLU mode half as many outputs (a gate and
/// an up row each).
pub fn product_invocations(n_out: u32, swiglu: bool) -> u32 {
    let per = if swiglu {
        PRODUCT_ROWS / 2
    } else {
        PRODUCT_ROWS
    };
    let lanes = super::layout::LANES as u32;
    n_out.div_ceil(per).div_ceil(lanes) * lanes
}

/// Most inputs matvec.wgsl takes: its uniform `x` (4096 vec4s) fills the uniform window.
pub const MATVEC_MAX_IN: usize = (super::UNIFORM_WINDOW / 4) as usize;

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct RmsNormParams {
    pub dim: u32,
    pub eps: f32,
    pub last_row_only: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct SwiGluParams {
    pub ffn_dim: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct KvStoreParams {
    pub groups: u32,
    pub native_groups: u32,
    pub head_dim: u32,
    pub capacity: u32,
    pub n_heads: u32,
    pub _pad: [u32; 3],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct AttentionParams {
    pub n_heads: u32,
    pub groups: u32,
    pub head_dim: u32,
    pub capacity: u32,
    pub max_chunks: u32,
    pub scale: f32,
    pub _pad: [u32; 2],
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ReduceParams {
    pub n_heads: u32,
    pub head_dim: u32,
    pub max_chunks: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct ArgmaxParams {
    pub vocab: u32,
    pub _pad: [u32; 3],
}

/// `Sampling` in sample.wgsl: written before each sampled forward.
#[repr(C)]
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
pub struct SamplingUniform {
    pub vocab: u32,
    pub top_k: u32,
    pub top_p: f32,
    pub temperature: f32,
    pub seed: u32,
    pub step: u32,
    pub _pad: [u32; 2],
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_hold_whole_aligned_rows() {
        // SmolLM2: 576-wide rows are 2304 = 9·256 bytes, so any row starts aligned.
        assert_eq!(window_tokens(576, 256), Some(28));
        assert_eq!(window_tokens(1536, 256), Some(10));
        // 128-byte rows start aligned every second row.
        assert_eq!(window_tokens(32, 256), Some(512));
        assert_eq!(window_tokens(96, 256), Some(170));
        // A whole window per row.
        assert_eq!(window_tokens(16384, 256), Some(1));
        // 65408-byte rows: every second row is aligned, and two do not fit.
        assert_eq!(window_tokens(16352, 256), None);
    }
}
